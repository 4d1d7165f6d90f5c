//! Writes the seed corpus of the fuzz targets:
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --example make_corpus
//!
//! fuzz/corpus/snapshot_load/: valid slot snapshots and a valid cache file
//! of the target's shape (made by the library through the C ABI), one of
//! another shape, and a damaged one. fuzz/corpus/api_sequence/: inputs
//! that decode (common/gen.rs) to programs of 40 calls touching every kind
//! of call, each run against the model once here.
//!
//! Also checks the harness's own XXH64 against the library's.

#[path = "../common/mod.rs"]
mod common;

use arbitrary::{Arbitrary, Unstructured};
use common::gen::{Call, Program};
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
    assert_eq!(unsafe { m2c_slot_save(cache, 2, buf.as_mut_ptr().cast(), buf.len(), &mut written) }, M2C_STATUS_OK);
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
        assert_eq!(m2c_slot_acquire(cache, &mut s), M2C_STATUS_OK);
        assert_eq!(m2c_save_file(cache, cpath.as_ptr()), M2C_STATUS_OK);
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
    assert_eq!(unsafe { m2c_slot_save(cache, 0, buf.as_mut_ptr().cast(), buf.len(), &mut written) }, M2C_STATUS_OK);
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

/// The name of a call's variant (`Call`'s Debug output up to the first
/// argument).
fn variant(c: &Call) -> String {
    format!("{c:?}").split(['(', ' ', '{']).next().unwrap().to_string()
}

/// Appends to `bytes` the encoding of one random call of kind `kind`:
/// random bytes are decoded as a `Call` until one is of that kind, and the
/// bytes it consumed are kept.
fn push_call(bytes: &mut Vec<u8>, rng: &mut Rng, kind: &str) -> Call {
    loop {
        let chunk: Vec<u8> = (0..160).map(|_| rng.next_u64() as u8).collect();
        let mut u = Unstructured::new(&chunk);
        let Ok(call) = Call::arbitrary(&mut u) else { continue };
        if variant(&call) == kind {
            let used = chunk.len() - u.len();
            // `Vec<Call>` reads an odd byte ("one more") before each call.
            bytes.push(1);
            bytes.extend_from_slice(&chunk[..used]);
            return call;
        }
    }
}

/// Programs that touch every kind of call, in a random order, with random
/// arguments (mostly valid ones, by the weights of gen.rs), then more
/// random calls. `arbitrary` decodes any bytes but a `Vec` of random bytes
/// stops after a call or two, so the calls are encoded one at a time.
/// Each program is decoded back, compared and run against the model here
/// (without ASan) as a smoke test.
fn api_seeds(dir: &Path) {
    const KINDS: [&str; 27] = [
        "UpdateConv",
        "SetConv",
        "UpdateSsm",
        "ReadConv",
        "ReadSsm",
        "Reset",
        "Advance",
        "CopySlots",
        "Acquire",
        "Release",
        "SaveLoad",
        "ConvStep",
        "ConvPrefill",
        "SsmStep",
        "SsmPrefill",
        "Queries",
        "NullCall",
        "AliasedOutput",
        "SpecReserve",
        "SpecBegin",
        "ConvVerify",
        "SsmVerify",
        "SpecCommit",
        "StoreInsert",
        "StoreLookup",
        "StoreRestore",
        "StoreKey",
    ];
    // Speculative rounds: reserve, begin, verify (random layers, so some
    // rounds cover every layer), commit, with other calls between.
    const ROUND: [&str; 9] = [
        "SpecReserve",
        "SpecBegin",
        "ConvVerify",
        "SsmVerify",
        "ConvVerify",
        "SsmVerify",
        "ConvVerify",
        "SsmVerify",
        "SpecCommit",
    ];
    use std::sync::atomic::Ordering::Relaxed;
    let mut rng = Rng::new(0x5eed_a915);
    let mut file = 6;
    while file < 9 {
        // Shape bytes for one or two layers, so rounds can verify them all.
        let mut bytes = vec![rng.next_u64() as u8, (rng.next_u64() % 10) as u8];
        let mut order: Vec<&str> = vec!["Acquire", "Acquire"];
        for _ in 0..4 {
            order.extend_from_slice(&ROUND);
            order.push(KINDS[(rng.next_u64() % KINDS.len() as u64) as usize]);
        }
        let calls: Vec<Call> = order.iter().map(|k| push_call(&mut bytes, &mut rng, k)).collect();
        assert!(calls.len() <= model::MAX_CALLS);
        bytes.push(0);
        let prog = Program::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(format!("{:?}", prog.calls), format!("{calls:?}"), "program-{file} decodes to other calls");
        let before = model::COMMITTED_PATHS.load(Relaxed);
        model::run(prog.clone());
        if model::COMMITTED_PATHS.load(Relaxed) == before {
            continue; // no round reached a commit of tokens: draw another
        }
        println!(
            "api_sequence/program-{file}: {} bytes, {} calls, shape {:?} (commits tokens)",
            bytes.len(),
            calls.len(),
            prog.shape
        );
        write(dir, &format!("program-{file}"), &bytes);
        file += 1;
    }
    // Prefix-store traffic: inserts, lookups, restores, pins and
    // evictions among writes and kernels, kept when a restore succeeds.
    const STORE: [&str; 8] = [
        "StoreInsert",
        "StoreInsert",
        "StoreLookup",
        "StoreRestore",
        "StoreKey",
        "StoreInsert",
        "StoreRestore",
        "StoreKey",
    ];
    while file < 11 {
        let mut bytes = vec![rng.next_u64() as u8, rng.next_u64() as u8];
        let mut order: Vec<&str> = vec!["Acquire"];
        for _ in 0..5 {
            order.extend_from_slice(&STORE);
            order.push(KINDS[(rng.next_u64() % KINDS.len() as u64) as usize]);
        }
        let calls: Vec<Call> = order.iter().map(|k| push_call(&mut bytes, &mut rng, k)).collect();
        assert!(calls.len() <= model::MAX_CALLS);
        bytes.push(0);
        let prog = Program::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(format!("{:?}", prog.calls), format!("{calls:?}"), "program-{file} decodes to other calls");
        let before = model::RESTORED.load(Relaxed);
        model::run(prog.clone());
        if model::RESTORED.load(Relaxed) == before {
            continue;
        }
        println!("api_sequence/program-{file}: {} bytes, {} calls (restores checkpoints)", bytes.len(), calls.len());
        write(dir, &format!("program-{file}"), &bytes);
        file += 1;
    }
    for file in 0..6 {
        let mut bytes = vec![rng.next_u64() as u8, rng.next_u64() as u8];
        let mut order: Vec<&str> = KINDS.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        // A few acquires first, so that slot bookkeeping starts non-trivial.
        order.splice(0..0, ["Acquire", "Acquire"]);
        for _ in 0..(model::MAX_CALLS - 2 - KINDS.len()) {
            order.push(KINDS[(rng.next_u64() % KINDS.len() as u64) as usize]);
        }
        let calls: Vec<Call> = order.iter().map(|k| push_call(&mut bytes, &mut rng, k)).collect();
        assert!(calls.len() <= model::MAX_CALLS);
        bytes.push(0);
        let prog = Program::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(format!("{:?}", prog.calls), format!("{calls:?}"), "program-{file} decodes to other calls");
        println!("api_sequence/program-{file}: {} bytes, {} calls, shape {:?}", bytes.len(), calls.len(), prog.shape);
        model::run(prog);
        write(dir, &format!("program-{file}"), &bytes);
    }
}

/// reshard seeds: shapes with split and replicated groups, both widths,
/// every storage dtype pair, real sources (intact and damaged) and raw ones,
/// layouts that divide and ones that do not (see fuzz_targets/reshard.rs
/// for the byte layout).
fn reshard_seeds(dir: &Path) {
    // layers, heads-1, head_dim-1, state-1, groups-1, kernel-2 | width bit,
    // dtypes, tp_src, tp_dst, rank, mode, at (2 bytes), state seed.
    let seeds: [[u8; 14]; 8] = [
        [1, 7, 3, 3, 1, 2, 0, 2, 1, 1, 1, 9, 0, 5],
        [2, 7, 3, 3, 0, 0x82, 0b0101, 1, 4, 3, 1, 0, 0, 6],
        [0, 15, 1, 1, 3, 2, 0b1001, 4, 2, 0, 1, 0, 0, 7],
        [3, 7, 3, 3, 7, 1, 0b0110, 8, 2, 5, 1, 0, 0, 8],
        [1, 7, 3, 3, 1, 2, 0, 2, 4, 1, 3, 77, 1, 9],
        [1, 7, 3, 3, 1, 2, 0, 2, 1, 0, 0, 0, 0, 1],
        [1, 5, 3, 3, 1, 2, 0, 4, 2, 1, 1, 0, 0, 2],
        [1, 11, 3, 3, 2, 2, 0b1010, 3, 2, 2, 1, 0, 0, 3],
    ];
    for (i, s) in seeds.iter().enumerate() {
        write(dir, &format!("seed-{i}"), s);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let s = root.join("snapshot_load");
    let a = root.join("api_sequence");
    let r = root.join("reshard");
    std::fs::create_dir_all(&r).unwrap();
    reshard_seeds(&r);
    std::fs::create_dir_all(&s).unwrap();
    // The api_sequence seeds are regenerated as a whole.
    let _ = std::fs::remove_dir_all(&a);
    std::fs::create_dir_all(&a).unwrap();
    snapshot_seeds(&s);
    api_seeds(&a);
    println!("wrote the seed corpus under {}", root.display());
}
