//! Ring conv windows (`ConvLayout::Ring`): a ring cache and an oldest-first
//! cache driven by the same random calls stay logically identical through
//! every operation that touches conv windows — updates, steps, prefills,
//! whole-window writes, resets, slot copies and permutations, snapshots,
//! exports, digests, files and layout switches — with bit-identical
//! outputs, identical snapshot bytes, for kernel sizes 2 to 5 (the
//! const-width and the general ring paths), both window widths and every
//! storage dtype. Bad input is refused by both, changing neither.

mod common;

use common::{Buf, Rng};
use m2c_core::kernels::ConvParams;
use m2c_core::{Cache, Config, ConvLayout, DType, Error, Slots};

fn cfg(k: u32, w: u32, dtype: DType) -> Config {
    Config {
        num_layers: 2,
        num_slots: 5,
        // conv_dim = 64 + 2 * 24 = 112: one block of 64 channels and a
        // remainder of 48.
        intermediate_size: 64,
        num_heads: 4,
        head_dim: 16,
        state_size: 24,
        n_groups: 1,
        conv_kernel_size: k,
        conv_width: w,
        conv_dtype: dtype,
        ..Config::default()
    }
}

/// Every slot's snapshot: the logical state, in a form both layouts share.
fn snapshots(c: &Cache) -> Vec<Vec<u8>> {
    (0..c.num_slots() as i32)
        .map(|s| {
            let mut b = vec![0u8; c.slot_snapshot_size()];
            c.slot_save(s, &mut b).unwrap();
            b
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A selection of distinct slots with some padding rows.
fn selection(rng: &mut Rng, n: usize) -> Vec<i32> {
    let mut slots: Vec<i32> = (0..n as i32).filter(|_| rng.coin(0.6)).collect();
    if rng.coin(0.3) {
        slots.insert(rng.below(slots.len() + 1), -1);
    }
    // Shuffle.
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i + 1));
    }
    slots
}

#[test]
fn a_ring_cache_stays_identical_to_an_oldest_first_one_through_every_operation() {
    let dir = std::env::temp_dir().join(format!("m2c-ring-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut seed = 1;
    for (k, w, dtype) in [
        (4, 4, DType::F32),
        (4, 3, DType::BF16),
        (4, 4, DType::F16),
        (3, 3, DType::F32),
        (5, 5, DType::BF16),
        (5, 4, DType::F32),
        (2, 1, DType::F16),
    ] {
        let c = cfg(k, w, dtype);
        let what = format!("K {k} W {w} {dtype:?}");
        let mut rng = Rng::new(seed);
        seed += 1;
        let mut a = Cache::new(c).unwrap();
        let mut b = Cache::new(c).unwrap();
        b.set_conv_layout(ConvLayout::Ring).unwrap();
        assert_eq!(b.conv_layout(), ConvLayout::Ring);
        let n = c.num_slots as usize;
        let dim = a.shape().conv_dim;
        let per = a.shape().conv_slot_elems;
        let weight = rng.vec(dim * k as usize, 1.0);
        let bias = rng.vec(dim, 0.5);
        let file = dir.join(format!("cache-{seed}.m2c"));
        let mut moved = false;
        for op in 0..400 {
            let ctx = format!("{what}, op {op}");
            let layer = rng.below(2) as u32;
            match rng.below(11) {
                0 => {
                    let sel = selection(&mut rng, n);
                    // Any input dtype; now and then a NaN, an infinity or a
                    // value that rounds (stored as cast stores it).
                    let io = [DType::F32, DType::BF16, DType::F16][rng.below(3)];
                    let mut v = rng.vec(sel.len() * dim, 2.0);
                    if !v.is_empty() && rng.coin(0.3) {
                        let i = rng.below(v.len());
                        v[i] = [f32::NAN, f32::INFINITY, 1.0 + 2f32.powi(-9)][rng.below(3)];
                    }
                    let x = Buf::from_f32(io, &v);
                    a.update_conv(layer, Slots::List(&sel), x.slice()).unwrap();
                    b.update_conv(layer, Slots::List(&sel), x.slice()).unwrap();
                }
                1 | 2 => {
                    let sel = selection(&mut rng, n);
                    let io = [DType::F32, DType::BF16][rng.below(2)];
                    let x = Buf::from_f32(io, &rng.vec(sel.len() * dim, 2.0));
                    let p =
                        ConvParams { weight: &weight, bias: rng.coin(0.5).then_some(&bias[..]), silu: rng.coin(0.5) };
                    let (mut oa, mut ob) = (Buf::zeros(io, sel.len() * dim), Buf::zeros(io, sel.len() * dim));
                    a.conv_step(layer, Slots::List(&sel), x.slice(), oa.slice_mut(), &p).unwrap();
                    b.conv_step(layer, Slots::List(&sel), x.slice(), ob.slice_mut(), &p).unwrap();
                    assert_eq!(bits(&oa.to_f32()), bits(&ob.to_f32()), "{ctx}: conv_step outputs");
                }
                3 => {
                    let sel = selection(&mut rng, n);
                    let mut cu = vec![0u64];
                    for _ in &sel {
                        cu.push(cu.last().unwrap() + rng.below(7) as u64);
                    }
                    let t = *cu.last().unwrap() as usize;
                    let x = Buf::from_f32(DType::F32, &rng.vec(t * dim, 2.0));
                    let p = ConvParams { weight: &weight, bias: Some(&bias), silu: true };
                    let (mut oa, mut ob) = (Buf::zeros(DType::F32, t * dim), Buf::zeros(DType::F32, t * dim));
                    a.conv_prefill(layer, Slots::List(&sel), &cu, x.slice(), oa.slice_mut(), &p).unwrap();
                    b.conv_prefill(layer, Slots::List(&sel), &cu, x.slice(), ob.slice_mut(), &p).unwrap();
                    assert_eq!(bits(&oa.to_f32()), bits(&ob.to_f32()), "{ctx}: conv_prefill outputs");
                }
                4 => {
                    let sel = selection(&mut rng, n);
                    let win = Buf::from_f32(DType::F32, &rng.vec(sel.len() * per, 1.0));
                    a.set_conv(layer, Slots::List(&sel), win.slice()).unwrap();
                    b.set_conv(layer, Slots::List(&sel), win.slice()).unwrap();
                }
                5 => {
                    let sel = selection(&mut rng, n);
                    a.reset(Slots::List(&sel)).unwrap();
                    b.reset(Slots::List(&sel)).unwrap();
                }
                6 => {
                    // A random permutation of some slots (cycles: swaps),
                    // or a few copies.
                    let mut src: Vec<i32> = (0..n as i32).collect();
                    for i in (1..n).rev() {
                        src.swap(i, rng.below(i + 1));
                    }
                    let dst: Vec<i32> = (0..n as i32).collect();
                    let m = 1 + rng.below(n);
                    a.copy_slots(&src[..m], &dst[..m]).unwrap();
                    b.copy_slots(&src[..m], &dst[..m]).unwrap();
                }
                7 => {
                    // Snapshots cross layouts: a's into b and b's into a.
                    let (from, to) = (rng.below(n) as i32, rng.below(n) as i32);
                    let mut buf = vec![0u8; a.slot_snapshot_size()];
                    b.slot_save(from, &mut buf).unwrap();
                    a.slot_load(to, &buf).unwrap();
                    b.slot_load(to, &buf).unwrap();
                    let mut ex = vec![0u8; a.slot_snapshot_size() - 80];
                    let mut ex2 = ex.clone();
                    let pa = a.slot_export(from, &mut ex).unwrap();
                    let pb = b.slot_export(from, &mut ex2).unwrap();
                    assert_eq!((pa, &ex), (pb, &ex2), "{ctx}: exports");
                    b.slot_import(to, &ex, pa).unwrap();
                    a.slot_import(to, &ex, pa).unwrap();
                }
                8 => {
                    // A round trip through the other layout changes nothing.
                    b.set_conv_layout(ConvLayout::OldestFirst).unwrap();
                    assert_eq!(snapshots(&a), snapshots(&b), "{ctx}: after switching to oldest-first");
                    b.set_conv_layout(ConvLayout::Ring).unwrap();
                }
                9 => {
                    b.save_file(&file).unwrap();
                    a.load_file(&file).unwrap();
                    let bytes = std::fs::read(&file).unwrap();
                    a.save_file(&file).unwrap();
                    assert_eq!(bytes, std::fs::read(&file).unwrap(), "{ctx}: files");
                    b.load_file(&file).unwrap();
                }
                _ => {
                    // Bad input: a short x, a bad layer, a bad slot.
                    let before = snapshots(&b);
                    let x = Buf::from_f32(DType::F32, &rng.vec(dim - 1, 2.0));
                    assert!(matches!(b.update_conv(0, Slots::List(&[0]), x.slice()), Err(Error::ShapeMismatch(_))));
                    let x = Buf::from_f32(DType::F32, &rng.vec(dim, 2.0));
                    assert!(matches!(b.update_conv(2, Slots::List(&[0]), x.slice()), Err(Error::OutOfRange(_))));
                    let mut o = Buf::zeros(DType::F32, dim);
                    let p = ConvParams { weight: &weight, bias: None, silu: false };
                    assert!(b.conv_step(0, Slots::List(&[n as i32]), x.slice(), o.slice_mut(), &p).is_err());
                    assert_eq!(snapshots(&b), before, "{ctx}: bad input changed the cache");
                }
            }
            assert_eq!(snapshots(&a), snapshots(&b), "{ctx}: snapshots differ");
            for l in 0..2 {
                let mut heads = vec![0u32; n];
                b.conv_heads(l, &mut heads).unwrap();
                assert!(heads.iter().all(|&h| h < w), "{ctx}: heads {heads:?}");
                moved |= heads.iter().any(|&h| h != 0);
            }
            for s in 0..n as i32 {
                assert_eq!(a.slot_digest(s).unwrap(), b.slot_digest(s).unwrap(), "{ctx}: digest of slot {s}");
            }
            for l in 0..2 {
                let (mut ra, mut rb) = (Buf::zeros(dtype, n * per), Buf::zeros(dtype, n * per));
                let all: Vec<i32> = (0..n as i32).collect();
                a.read_conv(l, Slots::List(&all), ra.slice_mut()).unwrap();
                b.read_conv(l, Slots::List(&all), rb.slice_mut()).unwrap();
                assert_eq!(bits(&ra.to_f32()), bits(&rb.to_f32()), "{ctx}: read_conv of layer {l}");
            }
        }
        // The heads moved (the ring was used).
        assert!(moved || w == 1, "{what}: no head ever moved");
        let mut heads = vec![0u32; n];
        a.conv_heads(0, &mut heads).unwrap();
        assert!(heads.iter().all(|&h| h == 0), "{what}: an oldest-first cache has heads");
        assert!(matches!(b.conv_heads(0, &mut heads[..n - 1]), Err(Error::ShapeMismatch(_))));
        assert!(matches!(b.conv_heads(2, &mut heads), Err(Error::OutOfRange(_))));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ring_windows_hold_the_newest_input_in_the_head_before_column() {
    // The physical layout the view describes: [W][conv_dim] per slot, the
    // oldest input at column `head`.
    let c = cfg(4, 4, DType::F32);
    let mut cache = Cache::new(c).unwrap();
    cache.set_conv_layout(ConvLayout::Ring).unwrap();
    let dim = cache.shape().conv_dim;
    for t in 0..6 {
        let x = Buf::from_f32(DType::F32, &vec![t as f32 + 1.0; dim]);
        cache.update_conv(1, Slots::List(&[3]), x.slice()).unwrap();
    }
    let mut heads = vec![0u32; 5];
    cache.conv_heads(1, &mut heads).unwrap();
    assert_eq!(heads, [0, 0, 0, 6 % 4, 0]);
    let bytes = cache.layer(1).unwrap().conv.bytes();
    let slot = &bytes[3 * dim * 4 * 4..4 * dim * 4 * 4];
    let at = |col: usize, ch: usize| f32::from_le_bytes(slot[(col * dim + ch) * 4..][..4].try_into().unwrap());
    // Inputs 3, 4, 5, 6 oldest first, starting at physical column 2.
    for k in 0..4 {
        for ch in [0, dim - 1] {
            assert_eq!(at((2 + k) % 4, ch), 3.0 + k as f32);
        }
    }
}
