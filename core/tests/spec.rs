//! Speculative decoding: a verify's outputs equal the decode steps' along
//! each token's path, and a commit of any accepted prefix (chains) or node
//! (trees) leaves every layer's window and state, and the position,
//! bit-identical to having stepped only the accepted tokens; for every
//! storage and activation dtype, both window layouts, one and several
//! groups, with padding rows and several slots per round, over
//! oldest-first and ring windows. Bad input and
//! slots changed after the round began are refused, changing nothing.
//! (The steps themselves are checked against an f64 reference in
//! tests/kernels.rs.)

mod common;

use common::{Buf, Rng};
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::{Cache, Config, ConvLayout, DType, Error, SliceMut, Slots};

const LAYERS: usize = 2;

fn cfg(conv: DType, ssm: DType, width: u32, groups: u32) -> Config {
    Config {
        num_layers: LAYERS as u32,
        num_slots: 4,
        intermediate_size: 4 * 16,
        num_heads: 4,
        head_dim: 16,
        state_size: 24,
        n_groups: groups,
        conv_kernel_size: 4,
        conv_width: width,
        conv_dtype: conv,
        ssm_dtype: ssm,
        ..Config::default()
    }
}

/// One token's inputs to one layer, in f32.
#[derive(Clone)]
struct Tok {
    cx: Vec<f32>,
    x: Vec<f32>,
    dt: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    z: Vec<f32>,
}

fn tok(rng: &mut Rng, cache: &Cache) -> Tok {
    let c = cache.config();
    let (h, p, n, g) = (c.num_heads as usize, c.head_dim as usize, c.state_size as usize, c.n_groups as usize);
    let dim = cache.shape().conv_dim;
    let mut v = |len: usize, s: f32| (0..len).map(|_| rng.unit() * s).collect::<Vec<f32>>();
    Tok { cx: v(dim, 1.0), x: v(h * p, 1.0), dt: v(h, 2.0), b: v(g * n, 1.0), c: v(g * n, 1.0), z: v(h * p, 2.0) }
}

/// A token for every layer.
fn toks(rng: &mut Rng, cache: &Cache) -> Vec<Tok> {
    (0..LAYERS).map(|_| tok(rng, cache)).collect()
}

struct Params {
    w: Vec<f32>,
    bias: Vec<f32>,
    a: Vec<f32>,
    d: Vec<f32>,
    dt_bias: Vec<f32>,
}

fn params(rng: &mut Rng, cache: &Cache) -> Vec<Params> {
    let h = cache.config().num_heads as usize;
    let dim = cache.shape().conv_dim;
    (0..LAYERS)
        .map(|_| Params {
            w: (0..dim * 4).map(|_| rng.unit() * 0.5).collect(),
            bias: (0..dim).map(|_| rng.unit() * 0.5).collect(),
            a: (0..h).map(|_| -(rng.unit().abs() + 0.1)).collect(),
            d: (0..h).map(|_| rng.unit()).collect(),
            dt_bias: (0..h).map(|_| rng.unit() * 0.5).collect(),
        })
        .collect()
}

fn conv_p(ps: &Params) -> ConvParams<'_> {
    ConvParams { weight: &ps.w, bias: Some(&ps.bias), silu: true }
}

fn ssm_p(ps: &Params) -> SsmParams<'_> {
    SsmParams { a: &ps.a, d: Some(&ps.d), dt_bias: Some(&ps.dt_bias), dt_softplus: true, dt_limit: None }
}

/// One decode step of `slot` through every layer; returns per layer
/// (conv out, y) as f32.
fn step(cache: &mut Cache, slot: i32, t: &[Tok], ps: &[Params], io: DType) -> Vec<(Vec<f32>, Vec<f32>)> {
    let outs = (0..LAYERS)
        .map(|l| {
            let tk = &t[l];
            let cx = Buf::from_f32(io, &tk.cx);
            let mut co = Buf::zeros(io, tk.cx.len());
            cache.conv_step(l as u32, Slots::List(&[slot]), cx.slice(), co.slice_mut(), &conv_p(&ps[l])).unwrap();
            let bufs = [&tk.x, &tk.dt, &tk.b, &tk.c, &tk.z].map(|v| Buf::from_f32(io, v));
            let inp = SsmInputs {
                x: bufs[0].slice(),
                dt: bufs[1].slice(),
                b: bufs[2].slice(),
                c: bufs[3].slice(),
                z: Some(bufs[4].slice()),
            };
            let mut y = Buf::zeros(io, tk.x.len());
            cache.ssm_step(l as u32, Slots::List(&[slot]), &inp, y.slice_mut(), &ssm_p(&ps[l])).unwrap();
            (co.to_f32(), y.to_f32())
        })
        .collect();
    cache.advance(Slots::List(&[slot]), 1).unwrap();
    outs
}

/// The rows of a round: per sequence, its tokens (each a token per layer).
type Rows = Vec<Vec<Vec<Tok>>>;

/// Verifies every layer of the current round, the rows' tokens laid out in
/// order; returns per layer (conv out, y) for all token rows, as f32.
fn verify(cache: &mut Cache, rows: &Rows, ps: &[Params], io: DType) -> Vec<(Vec<f32>, Vec<f32>)> {
    (0..LAYERS)
        .map(|l| {
            let all: Vec<&Tok> = rows.iter().flatten().map(|t| &t[l]).collect();
            let cat = |f: fn(&Tok) -> &Vec<f32>| {
                Buf::from_f32(io, &all.iter().flat_map(|t| f(t).clone()).collect::<Vec<_>>())
            };
            let cx = cat(|t| &t.cx);
            let mut co = Buf::zeros(io, cx.to_f32().len());
            cache.spec_conv(l as u32, cx.slice(), co.slice_mut(), &conv_p(&ps[l])).unwrap();
            let bufs = [cat(|t| &t.x), cat(|t| &t.dt), cat(|t| &t.b), cat(|t| &t.c), cat(|t| &t.z)];
            let inp = SsmInputs {
                x: bufs[0].slice(),
                dt: bufs[1].slice(),
                b: bufs[2].slice(),
                c: bufs[3].slice(),
                z: Some(bufs[4].slice()),
            };
            let mut y = Buf::zeros(io, bufs[0].to_f32().len());
            cache.spec_ssm(l as u32, &inp, y.slice_mut(), &ssm_p(&ps[l])).unwrap();
            (co.to_f32(), y.to_f32())
        })
        .collect()
}

/// Every slot's snapshot (state of every layer and position).
fn snapshots(cache: &Cache) -> Vec<Vec<u8>> {
    (0..cache.num_slots() as i32)
        .map(|s| {
            let mut b = vec![0u8; cache.slot_snapshot_size()];
            cache.slot_save(s, &mut b).unwrap();
            b
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A cache with a few tokens of history in every slot (the same for the
/// same seed), its parameters, and the rng to continue with.
fn base(c: Config, io: DType, seed: u64) -> (Cache, Vec<Params>, Rng) {
    base_in(c, io, seed, ConvLayout::OldestFirst)
}

/// [`base`] with the conv windows in `layout` from the start (the same
/// logical state, so the same snapshots, in either layout).
fn base_in(c: Config, io: DType, seed: u64, layout: ConvLayout) -> (Cache, Vec<Params>, Rng) {
    let mut rng = Rng::new(seed);
    let mut cache = Cache::new(c).unwrap();
    cache.set_conv_layout(layout).unwrap();
    let ps = params(&mut rng, &cache);
    for s in 0..4 {
        for _ in 0..3 {
            let t = toks(&mut rng, &cache);
            step(&mut cache, s, &t, &ps, io);
        }
    }
    (cache, ps, rng)
}

fn cu_of(rows: &Rows) -> Vec<u64> {
    let mut cu = vec![0u64];
    for r in rows {
        cu.push(cu.last().unwrap() + r.len() as u64);
    }
    cu
}

#[test]
fn chains_verify_like_steps_and_commit_any_prefix_exactly() {
    let mut combos = Vec::new();
    for conv in [DType::F32, DType::BF16] {
        for ssm in [DType::F32, DType::BF16, DType::F16] {
            for io in [DType::F32, DType::BF16] {
                for (width, groups) in [(4, 1), (3, 2)] {
                    combos.push((conv, ssm, io, width, groups));
                }
            }
        }
    }
    for (ci, &(conv, ssm, io, width, groups)) in combos.iter().enumerate() {
        let c = cfg(conv, ssm, width, groups);
        let what = format!("conv {conv:?} ssm {ssm:?} io {io:?} width {width} groups {groups}");
        // Runs: slot 1 five tokens, a padding sequence of two, slot 3 three.
        let (probe, _, mut rng) = base(c, io, 7 + ci as u64);
        let rows: Rows = vec![
            (0..5).map(|_| toks(&mut rng, &probe)).collect(),
            (0..2).map(|_| toks(&mut rng, &probe)).collect(),
            (0..3).map(|_| toks(&mut rng, &probe)).collect(),
        ];
        let slots = [1, -1, 3];
        // The reference: each run stepped token by token, snapshots after each.
        let (mut r, ps, _) = base(c, io, 7 + ci as u64);
        let before = snapshots(&r);
        let mut want_out = Vec::new(); // per row, per token, per layer
        let mut want_snap = Vec::new(); // per row, per accepted count
        for (row, &s) in rows.iter().zip(&slots) {
            if s < 0 {
                want_out.push(Vec::new());
                want_snap.push(Vec::new());
                continue;
            }
            let mut outs = Vec::new();
            let mut snaps = vec![before[s as usize].clone()];
            for t in row {
                outs.push(step(&mut r, s, t, &ps, io));
                snaps.push(snapshots(&r)[s as usize].clone());
            }
            want_out.push(outs);
            want_snap.push(snaps);
        }
        for k1 in 0..=5u32 {
            let k3 = (k1 * 2) % 4;
            // Odd prefixes verify and commit over ring windows.
            let layout = if k1 % 2 == 1 { ConvLayout::Ring } else { ConvLayout::OldestFirst };
            let (mut cache, ps, _) = base_in(c, io, 7 + ci as u64, layout);
            cache.spec_reserve(5).unwrap();
            cache.spec_begin(Slots::List(&slots), &cu_of(&rows), None).unwrap();
            let got = verify(&mut cache, &rows, &ps, io);
            // Verifying changes no state.
            assert_eq!(snapshots(&cache), before, "{what}: verify changed the cache");
            // Outputs, token by token, against the steps; padding rows zero.
            let cu = cu_of(&rows);
            let dim = cache.shape().conv_dim;
            let hp = 4 * 16;
            for (ri, &s) in slots.iter().enumerate() {
                for (t, row) in (cu[ri] as usize..cu[ri + 1] as usize).enumerate() {
                    for (l, (co, y)) in got.iter().enumerate() {
                        let (co, y) = (&co[row * dim..(row + 1) * dim], &y[row * hp..(row + 1) * hp]);
                        if s < 0 {
                            assert!(co.iter().chain(y).all(|&v| v == 0.0), "{what}: padding row {row}");
                        } else {
                            assert_eq!(
                                bits(co),
                                bits(&want_out[ri][t][l].0),
                                "{what}: conv out, row {ri} token {t} layer {l}"
                            );
                            assert_eq!(bits(y), bits(&want_out[ri][t][l].1), "{what}: y, row {ri} token {t} layer {l}");
                        }
                    }
                }
            }
            cache.spec_commit(Slots::List(&[1, 3]), &[k1, k3]).unwrap();
            let after = snapshots(&cache);
            assert_eq!(after[1], want_snap[0][k1 as usize], "{what}: slot 1 after committing {k1}");
            assert_eq!(after[3], want_snap[2][k3 as usize], "{what}: slot 3 after committing {k3}");
            assert_eq!((after[0].clone(), after[2].clone()), (before[0].clone(), before[2].clone()), "{what}: others");
            assert_eq!(cache.position(1).unwrap(), 3 + u64::from(k1));
            // Committed slots left the round.
            assert!(matches!(cache.spec_commit(Slots::List(&[1]), &[0]), Err(Error::InvalidArg(_))));
        }
    }
}

/// A change to a cache, for the tests of what drops a slot from a round.
type Change = Box<dyn Fn(&mut Cache)>;

/// A random tree of `t` tokens: each token's parent is -1 or earlier.
fn tree(rng: &mut Rng, t: usize) -> Vec<i32> {
    (0..t).map(|i| rng.below(i + 1) as i32 - 1).collect()
}

/// Run-local tokens from the root to `node`.
fn path(parents: &[i32], node: usize) -> Vec<usize> {
    let mut p = vec![node];
    while parents[*p.last().unwrap()] >= 0 {
        p.push(parents[*p.last().unwrap()] as usize);
    }
    p.reverse();
    p
}

#[test]
fn trees_verify_every_path_and_commit_any_node_exactly() {
    for (ci, (conv, ssm, io, width)) in [
        (DType::F32, DType::F32, DType::F32, 4),
        (DType::BF16, DType::BF16, DType::BF16, 3),
        (DType::F32, DType::F16, DType::F32, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let c = cfg(conv, ssm, width, 2);
        let what = format!("conv {conv:?} ssm {ssm:?} io {io:?} width {width}");
        let (probe, _, mut rng) = base(c, io, 100 + ci as u64);
        let t = 8;
        let mut parents = tree(&mut rng, t);
        parents[1] = 0; // at least one edge
        parents[2] = 0; // and one branch point
        let run: Vec<Vec<Tok>> = (0..t).map(|_| toks(&mut rng, &probe)).collect();
        let rows: Rows = vec![run.clone()];
        for node in 0..=t {
            let layout = if node % 2 == 1 { ConvLayout::Ring } else { ConvLayout::OldestFirst };
            let (mut cache, ps, _) = base_in(c, io, 100 + ci as u64, layout);
            let before = snapshots(&cache);
            cache.spec_reserve(t as u32).unwrap();
            cache.spec_begin(Slots::List(&[2]), &[0, t as u64], Some(&parents)).unwrap();
            let got = verify(&mut cache, &rows, &ps, io);
            // Every token's outputs: the steps along its path.
            if node == 0 {
                for j in 0..t {
                    let (mut r, ps, _) = base(c, io, 100 + ci as u64);
                    let mut last = Vec::new();
                    for &k in &path(&parents, j) {
                        last = step(&mut r, 2, &run[k], &ps, io);
                    }
                    let dim = cache.shape().conv_dim;
                    for (l, (co, y)) in got.iter().enumerate() {
                        assert_eq!(
                            bits(&co[j * dim..(j + 1) * dim]),
                            bits(&last[l].0),
                            "{what}: conv out of token {j}"
                        );
                        assert_eq!(bits(&y[j * 64..(j + 1) * 64]), bits(&last[l].1), "{what}: y of token {j}");
                    }
                }
            }
            // Commit `node` tokens' worth: the path to token node - 1.
            cache.spec_commit(Slots::List(&[2]), &[node as u32]).unwrap();
            let (mut r, ps, _) = base(c, io, 100 + ci as u64);
            if node > 0 {
                for &k in &path(&parents, node - 1) {
                    step(&mut r, 2, &run[k], &ps, io);
                }
            }
            let (got, want) = (snapshots(&cache), snapshots(&r));
            assert_eq!(got, want, "{what}: committing node {node}");
            if node == 0 {
                assert_eq!(got, before);
            }
        }
    }
}

#[test]
fn bad_input_and_changed_slots_are_refused_changing_nothing() {
    let c = cfg(DType::BF16, DType::F32, 4, 1);
    let io = DType::F32;
    let (mut cache, ps, mut rng) = base(c, io, 5);
    let rows: Rows =
        vec![(0..3).map(|_| toks(&mut rng, &cache)).collect(), (0..2).map(|_| toks(&mut rng, &cache)).collect()];
    let cu = cu_of(&rows);
    let before = snapshots(&cache);
    let unchanged = |cache: &Cache, what: &str| assert_eq!(snapshots(cache), before, "{what} changed the cache");

    // No log yet.
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 1]), &cu, None), Err(Error::InvalidArg(_))));
    cache.spec_reserve(3).unwrap();
    assert_eq!(cache.spec_max_tokens(), 3);
    // No round yet.
    let x = Buf::zeros(io, 5 * cache.shape().conv_dim);
    let mut o = Buf::zeros(io, 5 * cache.shape().conv_dim);
    assert!(matches!(cache.spec_conv(0, x.slice(), o.slice_mut(), &conv_p(&ps[0])), Err(Error::InvalidArg(_))));
    assert!(matches!(cache.spec_commit(Slots::List(&[0]), &[0]), Err(Error::InvalidArg(_))));
    // Bad rounds.
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 1]), &[0, 4, 6], None), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 1]), &[0, 0, 2], None), Err(Error::InvalidArg(_))));
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 0]), &cu, None), Err(Error::InvalidArg(_))));
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 9]), &cu, None), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 1]), &[0, 3], None), Err(Error::ShapeMismatch(_))));
    for bad in [[-1, 1, 0, -1, 0], [-1, 0, 0, -1, 1], [-2, 0, 1, -1, 0], [-1, 0, 1, 0, 0]] {
        // Forward, self or out-of-run parents (token 4 is the second run's 2nd).
        let r = cache.spec_begin(Slots::List(&[0, 1]), &cu, Some(&bad));
        assert!(matches!(r, Err(Error::InvalidArg(_))), "{bad:?}: {r:?}");
    }
    assert!(matches!(cache.spec_begin(Slots::List(&[0, 1]), &cu, Some(&[-1, 0])), Err(Error::ShapeMismatch(_))));
    unchanged(&cache, "refused begins");

    // A good round, verified in layer 0 only.
    cache.spec_begin(Slots::List(&[0, 1]), &cu, Some(&[-1, 0, 0, -1, 0])).unwrap();
    let mut o_short = Buf::zeros(io, 4 * cache.shape().conv_dim);
    assert!(matches!(
        cache.spec_conv(0, x.slice(), o_short.slice_mut(), &conv_p(&ps[0])),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(matches!(cache.spec_conv(5, x.slice(), o.slice_mut(), &conv_p(&ps[0])), Err(Error::OutOfRange(_))));
    cache.spec_conv(0, x.slice(), o.slice_mut(), &conv_p(&ps[0])).unwrap();
    assert!(matches!(cache.spec_commit(Slots::List(&[0]), &[1]), Err(Error::InvalidArg(_))), "unverified layers");
    // 0 needs no verify; it only ends the run.
    unchanged(&cache, "a partial verify");
    verify(&mut cache, &rows, &ps, io);
    assert!(matches!(cache.spec_commit(Slots::List(&[0]), &[4]), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.spec_commit(Slots::List(&[0, 1]), &[1]), Err(Error::ShapeMismatch(_))));
    assert!(matches!(cache.spec_commit(Slots::List(&[0, 0]), &[1, 1]), Err(Error::InvalidArg(_))));
    assert!(
        matches!(cache.spec_commit(Slots::List(&[2]), &[1]), Err(Error::InvalidArg(_))),
        "slot 2 is not in the round"
    );
    assert!(matches!(cache.spec_commit(Slots::List(&[0, 2]), &[1, 1]), Err(Error::InvalidArg(_))), "all or nothing");
    unchanged(&cache, "refused commits");

    // Every kind of change to slot 1 drops it from the round.
    let dim = cache.shape().conv_dim;
    let per_ssm = cache.shape().ssm_slot_elems;
    let changes: Vec<(&str, Change)> = vec![
        (
            "update_conv",
            Box::new(move |c: &mut Cache| c.update_conv(0, Slots::List(&[1]), Buf::zeros(io, dim).slice()).unwrap()),
        ),
        (
            "set_ssm",
            Box::new(move |c: &mut Cache| c.set_ssm(1, Slots::List(&[1]), Buf::zeros(io, per_ssm).slice()).unwrap()),
        ),
        ("reset", Box::new(|c: &mut Cache| c.reset(Slots::List(&[1])).unwrap())),
        ("advance", Box::new(|c: &mut Cache| c.advance(Slots::List(&[1]), 1).unwrap())),
        ("copy_slots into it", Box::new(|c: &mut Cache| c.copy_slots(&[3], &[1]).unwrap())),
        ("release", Box::new(|c: &mut Cache| c.slot_release(1).unwrap())),
        (
            "slot_load",
            Box::new(|c: &mut Cache| {
                let mut b = vec![0u8; c.slot_snapshot_size()];
                c.slot_save(2, &mut b).unwrap();
                c.slot_load(1, &b).unwrap()
            }),
        ),
    ];
    for (name, change) in changes {
        let (mut cache, ps, _) = base(c, io, 5);
        // Slots 0 and 1 in use (acquired before the round: acquiring zeroes).
        assert_eq!((cache.slot_acquire().unwrap(), cache.slot_acquire().unwrap()), (0, 1));
        cache.spec_reserve(3).unwrap();
        cache.spec_begin(Slots::List(&[0, 1]), &cu, None).unwrap();
        verify(&mut cache, &rows, &ps, io);
        change(&mut cache);
        let snap = snapshots(&cache);
        assert!(matches!(cache.spec_commit(Slots::List(&[1]), &[1]), Err(Error::InvalidArg(_))), "after {name}");
        assert_eq!(snapshots(&cache), snap, "a refused commit after {name}");
        // Slot 0 is still committable, and verifies now treat slot 1 as padding.
        let got = verify(&mut cache, &rows, &ps, io);
        assert!(got[0].0[3 * dim..].iter().all(|&v| v == 0.0), "after {name}: dropped rows read as padding");
        cache.spec_commit(Slots::List(&[0]), &[2]).unwrap();
    }
    // A new round replaces the old one; a reserve ends it.
    let (mut cache, ps, _) = base(c, io, 5);
    cache.spec_reserve(3).unwrap();
    cache.spec_begin(Slots::List(&[0, 1]), &cu, None).unwrap();
    verify(&mut cache, &rows, &ps, io);
    cache.spec_begin(Slots::List(&[2]), &[0, 1], None).unwrap();
    assert!(matches!(cache.spec_commit(Slots::List(&[0]), &[1]), Err(Error::InvalidArg(_))));
    cache.spec_reserve(3).unwrap();
    assert!(matches!(cache.spec_commit(Slots::List(&[2]), &[0]), Err(Error::InvalidArg(_))));
    assert!(matches!(cache.spec_reserve(5000), Err(Error::OutOfRange(_))));
}

#[test]
fn large_batches_take_the_thread_pool_and_stay_exact() {
    // Enough state per call to split over the pool (when it has threads).
    let c = Config {
        num_slots: 8,
        intermediate_size: 64 * 32,
        num_heads: 32,
        head_dim: 64,
        state_size: 64,
        ..cfg(DType::BF16, DType::F32, 4, 2)
    };
    let io = DType::F32;
    let (probe, _, mut rng) = base(c, io, 77);
    let rows: Rows = (0..8).map(|_| (0..4).map(|_| toks(&mut rng, &probe)).collect()).collect();
    let slots: Vec<i32> = (0..8).collect();
    let (mut r, ps, _) = base(c, io, 77);
    for (s, row) in rows.iter().enumerate() {
        for t in &row[..s % 5] {
            step(&mut r, s as i32, t, &ps, io);
        }
    }
    let (mut cache, ps, _) = base(c, io, 77);
    cache.spec_reserve(4).unwrap();
    cache.spec_begin(Slots::List(&slots), &cu_of(&rows), None).unwrap();
    verify(&mut cache, &rows, &ps, io);
    let accepted: Vec<u32> = (0..8).map(|s| (s % 5) as u32).collect();
    cache.spec_commit(Slots::List(&slots), &accepted).unwrap();
    assert_eq!(snapshots(&cache), snapshots(&r));
}

#[test]
fn state_sizes_above_the_stack_rows_and_trees_take_the_general_path_exactly() {
    // State 300 (> 256): the verify and commit run head_token on copies.
    let c = Config { state_size: 300, ..cfg(DType::F32, DType::BF16, 4, 1) };
    let io = DType::F32;
    let (probe, _, mut rng) = base(c, io, 91);
    let rows: Rows = vec![(0..3).map(|_| toks(&mut rng, &probe)).collect()];
    let (mut r, ps, _) = base(c, io, 91);
    let mut want = Vec::new();
    for t in &rows[0][..2] {
        want.push(step(&mut r, 0, t, &ps, io));
    }
    let (mut cache, ps, _) = base(c, io, 91);
    cache.spec_reserve(3).unwrap();
    cache.spec_begin(Slots::List(&[0]), &[0, 3], None).unwrap();
    let got = verify(&mut cache, &rows, &ps, io);
    let hp = 64;
    for (t, w) in want.iter().enumerate() {
        for l in 0..LAYERS {
            assert_eq!(bits(&got[l].1[t * hp..(t + 1) * hp]), bits(&w[l].1), "y of token {t}, layer {l}");
        }
    }
    cache.spec_commit(Slots::List(&[0]), &[2]).unwrap();
    assert_eq!(snapshots(&cache), snapshots(&r));
}

#[test]
fn tree_outputs_match_the_f64_oracle_along_each_path() {
    use m2c_testkit::oracle;
    let c = cfg(DType::F32, DType::F32, 4, 2);
    let io = DType::F32;
    let (mut cache, ps, mut rng) = base(c, io, 31);
    let t = 7;
    let mut parents = tree(&mut rng, t);
    parents[3] = 1;
    let run: Vec<Vec<Tok>> = (0..t).map(|_| toks(&mut rng, &cache)).collect();
    let (h, p, n, g) = (4usize, 16usize, 24usize, 2usize);
    // The committed SSM state of slot 1, layer 0, in f64.
    let mut st = vec![0f32; h * p * n];
    cache.read_ssm(0, Slots::List(&[1]), SliceMut::F32(&mut st)).unwrap();
    cache.spec_reserve(t as u32).unwrap();
    cache.spec_begin(Slots::List(&[1]), &[0, t as u64], Some(&parents)).unwrap();
    let got = verify(&mut cache, &[run.clone()].to_vec(), &ps, io);
    let mut worst = 0f64;
    for j in 0..t {
        let mut state: Vec<f64> = st.iter().map(|&v| f64::from(v)).collect();
        let mut y = Vec::new();
        for &k in &path(&parents, j) {
            let tk = &run[k][0];
            y.clear();
            for hh in 0..h {
                let gg = hh / (h / g);
                let dt = oracle::dt(f64::from(tk.dt[hh]), Some(f64::from(ps[0].dt_bias[hh])), true, None);
                let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
                let yh = oracle::ssm_head(
                    &mut state[hh * p * n..(hh + 1) * p * n],
                    &f(&tk.x[hh * p..(hh + 1) * p]),
                    dt,
                    f64::from(ps[0].a[hh]),
                    &f(&tk.b[gg * n..(gg + 1) * n]),
                    &f(&tk.c[gg * n..(gg + 1) * n]),
                    Some(f64::from(ps[0].d[hh])),
                    Some(&f(&tk.z[hh * p..(hh + 1) * p])),
                );
                y.extend(yh);
            }
        }
        let scale = y.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, want) in y.iter().enumerate() {
            let e = (f64::from(got[0].1[j * h * p + i]) - want).abs() / scale;
            worst = worst.max(e);
        }
    }
    assert!(worst < 1e-5, "verify y vs the f64 oracle: relative error {worst:e}");
}

#[test]
fn rounds_interleave_with_steps_prefills_copies_snapshots_and_resets() {
    let c = cfg(DType::BF16, DType::F32, 3, 2);
    let io = DType::F32;
    let (probe, _, mut rng) = base(c, io, 55);
    let (mut a, ps, _) = base(c, io, 55);
    let (mut b, _, _) = base(c, io, 55);
    a.spec_reserve(4).unwrap();
    for round in 0..6 {
        // A round for slots 0 and 2, committing some tokens.
        let rows: Rows =
            vec![(0..4).map(|_| toks(&mut rng, &probe)).collect(), (0..3).map(|_| toks(&mut rng, &probe)).collect()];
        a.spec_begin(Slots::List(&[0, 2]), &cu_of(&rows), None).unwrap();
        verify(&mut a, &rows, &ps, io);
        let (k0, k2) = ((round % 5) as u32, ((round + 2) % 4) as u32);
        a.spec_commit(Slots::List(&[0, 2]), &[k0, k2]).unwrap();
        for t in &rows[0][..k0 as usize] {
            step(&mut b, 0, t, &ps, io);
        }
        for t in &rows[1][..k2 as usize] {
            step(&mut b, 2, t, &ps, io);
        }
        // Then something else on both caches.
        let t = toks(&mut rng, &probe);
        match round % 4 {
            0 => {
                step(&mut a, 0, &t, &ps, io);
                step(&mut b, 0, &t, &ps, io);
            }
            1 => {
                a.copy_slots(&[2], &[1]).unwrap();
                b.copy_slots(&[2], &[1]).unwrap();
            }
            2 => {
                let mut snap = vec![0u8; a.slot_snapshot_size()];
                a.slot_save(0, &mut snap).unwrap();
                a.slot_load(3, &snap).unwrap();
                b.slot_save(0, &mut snap).unwrap();
                b.slot_load(3, &snap).unwrap();
            }
            _ => {
                a.reset(Slots::List(&[2])).unwrap();
                b.reset(Slots::List(&[2])).unwrap();
            }
        }
        assert_eq!(snapshots(&a), snapshots(&b), "after round {round}");
    }
}
