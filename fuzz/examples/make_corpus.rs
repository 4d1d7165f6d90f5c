//! Writes the seed corpus of the fuzz targets:
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --example make_corpus
//!
//! fuzz/corpus/snapshot_load/: valid slot snapshots and a valid cache file
//! of the target's shape (made by the library through the C ABI), one of
//! another shape, and a damaged one. fuzz/corpus/api_sequence/: call
//! sequences written with the target's encoding, mostly valid calls so the
//! fuzzer starts deep in the state space.
//!
//! Also checks the harness's own XXH64 against the library's.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use m2c::*;
use std::ffi::CString;
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn snapshot_seeds(dir: &Path) {
    let sh = SNAPSHOT_SHAPE;
    let cache = create(&sh);
    fill(cache, &sh, 3);
    let mut buf = vec![0u8; sh.snapshot_size()];
    let mut written = 0;
    // SAFETY: live handle, buffer of the snapshot size.
    assert_eq!(unsafe { m2c_slot_save(cache, 2, buf.as_mut_ptr().cast(), buf.len(), &mut written) }, 0);
    assert!(valid_snapshot(&buf, &sh), "the library's snapshot fails the harness's validator");
    assert_eq!(xxh64(&buf), m2c_core::xxh64::xxh64(&buf));
    for (name, mode) in
        [("slot-snapshot-into-slot0", 0u8), ("slot-snapshot-into-slot1-fixsum", 3), ("slot-snapshot-into-slot3", 6)]
    {
        let mut b = vec![mode];
        b.extend_from_slice(&buf);
        write(dir, name, &b);
    }
    let mut damaged = vec![1u8];
    damaged.extend_from_slice(&buf);
    damaged[1 + 16] = 9; // num_layers = 9, checksum fixed by mode bit 0
    write(dir, "slot-snapshot-other-layers-fixsum", &damaged);

    let path = std::env::temp_dir().join(format!("m2c-make-corpus-{}.m2c", std::process::id()));
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let mut s = 0;
    // SAFETY: live handle, valid pointers.
    unsafe {
        assert_eq!(m2c_slot_acquire(cache, &mut s), 0);
        assert_eq!(m2c_save_file(cache, cpath.as_ptr()), 0);
    }
    let file = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(valid_file(&file, &sh), "the library's file fails the harness's validator");
    assert_eq!(xxh64(&file), m2c_core::xxh64::xxh64(&file));
    let mut b = vec![0u8];
    b.extend_from_slice(&file);
    write(dir, "cache-file", &b);
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(cache) };

    // Another shape (conv width K-1): incompatible.
    let other = Shape { w: 3, ..sh };
    let cache = create(&other);
    fill(cache, &other, 5);
    let mut buf = vec![0u8; other.snapshot_size()];
    // SAFETY: as above.
    assert_eq!(unsafe { m2c_slot_save(cache, 0, buf.as_mut_ptr().cast(), buf.len(), &mut written) }, 0);
    let mut b = vec![0u8];
    b.extend_from_slice(&buf);
    write(dir, "slot-snapshot-width3", &b);
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(cache) };
    for n in [0usize, 1, 7, 31, 32, 33, 100] {
        let v: Vec<u8> = (0..n as u8).collect();
        assert_eq!(xxh64(&v), m2c_core::xxh64::xxh64(&v), "xxh64 of {n} bytes");
    }
}

/// Emits calls in the api_sequence encoding (see that target's decoders).
struct Prog(Vec<u8>);

impl Prog {
    /// b0: conv dtype, ssm dtype, width; b1: slots, layers, K, groups.
    fn new(cdt: u8, sdt: u8, width_k_minus_1: bool, slots: u8, layers: u8, k: u8, groups: u8) -> Prog {
        let b0 = cdt + 3 * sdt + 9 * u8::from(width_k_minus_1);
        // b1 % 5 = slots - 1, (b1 / 5) % 3 = layers - 1,
        // (b1 / 30) % 3 = k - 2, (b1 / 90) % 2 = groups - 1.
        let b1 = (0..=255u8)
            .find(|&b| {
                b % 5 == slots - 1 && (b / 5) % 3 == layers - 1 && (b / 30) % 3 == k - 2 && (b / 90) % 2 == groups - 1
            })
            .expect("encodable shape");
        Prog(vec![b0, b1])
    }
    fn dense(&mut self, n: u8) {
        self.0.push(8 * n);
    }
    fn list(&mut self, slots: &[i8]) {
        self.0.push(3);
        self.0.push(slots.len() as u8);
        for &s in slots {
            self.0.push((s + 2) as u8);
        }
    }
    /// update_conv / set_conv / update_ssm on a slot list.
    fn update(&mut self, which: u8, layer: u8, slots: &[i8], dtype: u8, seed: u8) {
        self.0.extend([which, layer]);
        self.list(slots);
        self.0.extend([dtype, 0, 0, seed]);
    }
    fn read(&mut self, conv: bool, layer: u8, n: u8, dtype: u8) {
        self.0.extend([if conv { 3 } else { 4 }, layer]);
        self.dense(n);
        self.0.extend([dtype, 0, 0]);
    }
    fn advance(&mut self, slots: &[i8], k: u8) {
        self.0.push(6);
        self.list(slots);
        self.0.push(k);
    }
    fn copy(&mut self, src: &[i8], dst: &[i8]) {
        self.0.extend([7, src.len() as u8]);
        self.0.extend(src.iter().map(|&s| (s + 2) as u8));
        self.0.extend(dst.iter().map(|&s| (s + 2) as u8));
        self.0.extend([1, 5]);
    }
    fn acquire(&mut self) {
        self.0.extend([8, 1]);
    }
    fn release(&mut self, s: i8) {
        self.0.extend([9, (s + 2) as u8]);
    }
    fn reset(&mut self, slots: &[i8]) {
        self.0.push(5);
        self.list(slots);
    }
    /// Save slot a, load into slot b, with mutation byte m.
    fn save_load(&mut self, a: i8, b: i8, m: u8) {
        self.0.extend([10, (a + 2) as u8, 0, 5, (b + 2) as u8, m, 3, 1]);
    }
    fn conv_step(&mut self, layer: u8, slots: &[i8], io: u8, seed: u8) {
        self.0.extend([11, layer]);
        self.list(slots);
        self.0.extend([io, 1, 0, 100, seed, 100, seed ^ 1, 0, 0, seed, 0, 0]);
    }
    fn conv_prefill(&mut self, layer: u8, slots: &[i8], lens: &[u8], io: u8, seed: u8) {
        self.0.extend([13, layer]);
        self.list(slots);
        self.0.push(io);
        self.0.extend(lens);
        self.0.push(0);
        self.0.extend([1, 0, 100, seed, 100, seed ^ 1, 0, 0, seed, 0, 0]);
    }
    fn ssm(&mut self, prefill: bool, layer: u8, slots: &[i8], lens: &[u8], io: u8, seed: u8) {
        self.0.extend([if prefill { 14 } else { 12 }, layer]);
        self.list(slots);
        self.0.push(io);
        if prefill {
            self.0.extend(lens);
            self.0.push(0);
        }
        // args: softplus on, no clamp, A, D valid, no dt_bias; then the
        // seed; then x dt B C (len, mode), z (present, len, mode), y.
        self.0.extend([1, 0, 100, seed, 100, seed, 0, 0, seed]);
        self.0.extend([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    }
    fn queries(&mut self, s: i8) {
        self.0.extend([15, (s + 2) as u8, 0]);
    }
}

fn api_seeds(dir: &Path) {
    // A decode loop: acquire two slots, prefill them, step, fork, reorder.
    let mut p = Prog::new(1, 0, false, 4, 2, 4, 1);
    p.acquire();
    p.acquire();
    p.conv_prefill(0, &[0, 1], &[3, 2], 0, 7);
    p.ssm(true, 0, &[0, 1], &[3, 2], 0, 9);
    p.conv_prefill(1, &[1, -1, 0], &[1, 2, 3], 1, 8);
    p.ssm(true, 1, &[1, -1, 0], &[1, 2, 3], 2, 10);
    p.advance(&[0, 1], 3);
    p.conv_step(0, &[0, -1, 1], 0, 11);
    p.ssm(false, 0, &[1, 0], &[], 0, 12);
    p.advance(&[0, 1], 1);
    p.copy(&[0, 0], &[2, 3]);
    p.copy(&[3, 2, 1, 0], &[0, 1, 2, 3]);
    p.read(true, 0, 4, 0);
    p.read(false, 1, 4, 1);
    p.queries(2);
    p.release(1);
    p.release(1);
    p.acquire();
    write(dir, "decode-loop", &p.0);

    // Data movement in every dtype, with padding rows and a reset.
    let mut p = Prog::new(2, 1, true, 5, 3, 3, 2);
    p.update(0, 0, &[4, -1, 0], 0, 1);
    p.update(0, 0, &[0, 4], 2, 2);
    p.update(1, 1, &[1, 2, -2], 1, 3);
    p.update(2, 2, &[3, -1], 0, 4);
    p.update(2, 2, &[2], 2, 5);
    p.advance(&[0, 1, 2, 3, 4], 9);
    p.read(true, 0, 5, 1);
    p.read(false, 2, 5, 2);
    p.reset(&[2, -1]);
    p.read(false, 2, 5, 0);
    p.queries(4);
    write(dir, "data-movement", &p.0);

    // Snapshots: save and load between slots, then damaged loads.
    let mut p = Prog::new(0, 2, false, 3, 1, 2, 1);
    p.update(1, 0, &[0, 1, 2], 0, 21);
    p.update(2, 0, &[0, 1, 2], 0, 22);
    p.advance(&[0, 1, 2], 4);
    p.save_load(0, 2, 0);
    p.save_load(1, 0, 0);
    p.save_load(1, 0, 160); // a flipped byte
    p.save_load(2, 1, 163); // a position near u64::MAX, checksum fixed
    p.advance(&[1], 200);
    p.save_load(2, 1, 164); // version 2
    p.save_load(2, 1, 165); // another shape
    p.save_load(0, 3, 0); // slot out of range
    write(dir, "snapshots", &p.0);

    // Invalid calls: duplicates, out-of-range slots and layers, bad dtypes.
    let mut p = Prog::new(1, 1, false, 2, 2, 4, 1);
    p.update(0, 0, &[1, -1, 1], 0, 1);
    p.update(0, 0, &[0, 2], 0, 1);
    p.0.extend([0, 250, 0, 0, 0, 0, 0]); // layer out of range
    p.0.extend([1, 0, 0, 255, 0, 0, 0]); // dtype 0x100
    p.0.extend([2, 0, 2, 0, 0, 0, 0]); // slots NULL, n > num_slots
    p.0.extend([0, 0, 8, 0, 225, 0, 0]); // len one short
    p.0.extend([0, 0, 8, 0, 0, 235, 0]); // NULL buffer
    p.0.extend([0, 0, 8, 0, 0, 245, 0]); // misaligned buffer
    p.0.extend([3, 0, 8, 0, 0, 250]); // read into the cache's own storage
    p.copy(&[0, 1], &[1, 1]);
    p.copy(&[5, 0], &[0, -1]);
    p.release(0);
    p.0.extend([16, 0, 16, 3, 16, 5, 16, 6]);
    write(dir, "invalid-calls", &p.0);
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let s = root.join("snapshot_load");
    let a = root.join("api_sequence");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::create_dir_all(&a).unwrap();
    snapshot_seeds(&s);
    api_seeds(&a);
    println!("wrote the seed corpus under {}", root.display());
}
