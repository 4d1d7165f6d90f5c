//! Prefill and chunked prefill: a prompt run through `conv_prefill` /
//! `ssm_prefill` gives bit-identical outputs and states to the same tokens
//! run one `*_step` at a time, in one call or split into any chunks, for
//! several sequences of different lengths in one call (cu_seqlens) with
//! padding sequences. (The steps themselves are checked against an f64
//! reference in tests/kernels.rs.)

mod common;

use common::{Buf, Rng};
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::{Cache, Config, ConvLayout, DType, Error, Slots};

fn cfg(conv: DType, ssm: DType, width: u32, groups: u32) -> Config {
    Config {
        num_layers: 1,
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

struct Prompt {
    x: Vec<f32>,
    cx: Vec<f32>,
    dt: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    z: Vec<f32>,
}

fn prompt(rng: &mut Rng, t: usize, cache: &Cache) -> Prompt {
    let c = cache.config();
    let (h, p, n, g) = (c.num_heads as usize, c.head_dim as usize, c.state_size as usize, c.n_groups as usize);
    let dim = cache.shape().conv_dim;
    let mut v = |len: usize, s: f32| (0..len).map(|_| rng.unit() * s).collect::<Vec<f32>>();
    Prompt {
        x: v(t * h * p, 1.0),
        cx: v(t * dim, 1.0),
        dt: v(t * h, 2.0),
        b: v(t * g * n, 1.0),
        c: v(t * g * n, 1.0),
        z: v(t * h * p, 2.0),
    }
}

struct Params {
    w: Vec<f32>,
    bias: Vec<f32>,
    a: Vec<f32>,
    d: Vec<f32>,
}

fn params(rng: &mut Rng, cache: &Cache) -> Params {
    let h = cache.config().num_heads as usize;
    let dim = cache.shape().conv_dim;
    Params {
        w: (0..dim * 4).map(|_| rng.unit() * 0.5).collect(),
        bias: (0..dim).map(|_| rng.unit() * 0.5).collect(),
        a: (0..h).map(|_| -(rng.unit().abs() + 0.1)).collect(),
        d: (0..h).map(|_| rng.unit()).collect(),
    }
}

/// Runs rows `r0..r1` of the prompt (one sequence, slot `slot`) through
/// one prefill call of each kernel; returns (conv out, y) as f32.
fn prefill(
    cache: &mut Cache,
    slot: i32,
    pr: &Prompt,
    r0: usize,
    r1: usize,
    ps: &Params,
    io: DType,
) -> (Vec<f32>, Vec<f32>) {
    let c = *cache.config();
    let (h, p, n, g) = (c.num_heads as usize, c.head_dim as usize, c.state_size as usize, c.n_groups as usize);
    let dim = cache.shape().conv_dim;
    let t = r1 - r0;
    let cu = [0u64, t as u64];
    let cx = Buf::from_f32(io, &pr.cx[r0 * dim..r1 * dim]);
    let mut co = Buf::zeros(io, t * dim);
    let cp = ConvParams { weight: &ps.w, bias: Some(&ps.bias), silu: true };
    cache.conv_prefill(0, Slots::List(&[slot]), &cu, cx.slice(), co.slice_mut(), &cp).unwrap();
    let bufs = [
        Buf::from_f32(io, &pr.x[r0 * h * p..r1 * h * p]),
        Buf::from_f32(io, &pr.dt[r0 * h..r1 * h]),
        Buf::from_f32(io, &pr.b[r0 * g * n..r1 * g * n]),
        Buf::from_f32(io, &pr.c[r0 * g * n..r1 * g * n]),
        Buf::from_f32(io, &pr.z[r0 * h * p..r1 * h * p]),
    ];
    let inp = SsmInputs {
        x: bufs[0].slice(),
        dt: bufs[1].slice(),
        b: bufs[2].slice(),
        c: bufs[3].slice(),
        z: Some(bufs[4].slice()),
    };
    let mut y = Buf::zeros(io, t * h * p);
    let sp = SsmParams { a: &ps.a, d: Some(&ps.d), dt_bias: Some(&ps.d), dt_softplus: true, dt_limit: None };
    cache.ssm_prefill(0, Slots::List(&[slot]), &cu, &inp, y.slice_mut(), &sp).unwrap();
    (co.to_f32(), y.to_f32())
}

/// The same rows, one decode step at a time.
fn steps(
    cache: &mut Cache,
    slot: i32,
    pr: &Prompt,
    r0: usize,
    r1: usize,
    ps: &Params,
    io: DType,
) -> (Vec<f32>, Vec<f32>) {
    let c = *cache.config();
    let (h, p, n, g) = (c.num_heads as usize, c.head_dim as usize, c.state_size as usize, c.n_groups as usize);
    let dim = cache.shape().conv_dim;
    let (mut co_all, mut y_all) = (Vec::new(), Vec::new());
    for r in r0..r1 {
        let cx = Buf::from_f32(io, &pr.cx[r * dim..(r + 1) * dim]);
        let mut co = Buf::zeros(io, dim);
        let cp = ConvParams { weight: &ps.w, bias: Some(&ps.bias), silu: true };
        cache.conv_step(0, Slots::List(&[slot]), cx.slice(), co.slice_mut(), &cp).unwrap();
        co_all.extend(co.to_f32());
        let bufs = [
            Buf::from_f32(io, &pr.x[r * h * p..(r + 1) * h * p]),
            Buf::from_f32(io, &pr.dt[r * h..(r + 1) * h]),
            Buf::from_f32(io, &pr.b[r * g * n..(r + 1) * g * n]),
            Buf::from_f32(io, &pr.c[r * g * n..(r + 1) * g * n]),
            Buf::from_f32(io, &pr.z[r * h * p..(r + 1) * h * p]),
        ];
        let inp = SsmInputs {
            x: bufs[0].slice(),
            dt: bufs[1].slice(),
            b: bufs[2].slice(),
            c: bufs[3].slice(),
            z: Some(bufs[4].slice()),
        };
        let mut y = Buf::zeros(io, h * p);
        let sp = SsmParams { a: &ps.a, d: Some(&ps.d), dt_bias: Some(&ps.d), dt_softplus: true, dt_limit: None };
        cache.ssm_step(0, Slots::List(&[slot]), &inp, y.slice_mut(), &sp).unwrap();
        y_all.extend(y.to_f32());
    }
    (co_all, y_all)
}

fn state_of(cache: &Cache, slot: i32) -> (Vec<f32>, Vec<f32>) {
    let mut conv = Buf::zeros(DType::F32, cache.shape().conv_slot_elems);
    let mut ssm = Buf::zeros(DType::F32, cache.shape().ssm_slot_elems);
    cache.read_conv(0, Slots::List(&[slot]), conv.slice_mut()).unwrap();
    cache.read_ssm(0, Slots::List(&[slot]), ssm.slice_mut()).unwrap();
    (conv.to_f32(), ssm.to_f32())
}

#[test]
fn prefill_equals_token_by_token_steps_and_any_chunking() {
    let mut seed = 1;
    for (conv, ssm, io) in [
        (DType::F32, DType::F32, DType::F32),
        (DType::BF16, DType::F32, DType::BF16),
        (DType::F16, DType::BF16, DType::F16),
        (DType::BF16, DType::F16, DType::F32),
    ] {
        for width in [4, 3] {
            for groups in [1, 2] {
                let mut rng = Rng::new(seed);
                seed += 1;
                let c = cfg(conv, ssm, width, groups);
                let mut whole = Cache::new(c).unwrap();
                let ps = params(&mut rng, &whole);
                let len = 37;
                let pr = prompt(&mut rng, len, &whole);
                // The chunked prefill runs over ring windows, and so do the
                // steps for two groups: both must match the oldest-first prefill.
                let mut stepped = Cache::new(c).unwrap();
                if groups == 2 {
                    stepped.set_conv_layout(ConvLayout::Ring).unwrap();
                }
                let mut chunked = Cache::new(c).unwrap();
                chunked.set_conv_layout(ConvLayout::Ring).unwrap();
                let a = prefill(&mut whole, 1, &pr, 0, len, &ps, io);
                let b = steps(&mut stepped, 1, &pr, 0, len, &ps, io);
                let ctx = format!("{conv:?}/{ssm:?}/{io:?} width {width} groups {groups}");
                assert!(a == b, "{ctx}: prefill outputs differ from steps");
                assert!(state_of(&whole, 1) == state_of(&stepped, 1), "{ctx}: states differ");
                // Random chunk splits, including empty and one-token chunks.
                let mut got = (Vec::new(), Vec::new());
                let mut r = 0;
                while r < len {
                    let step = [0, 1, 2, 5, 9][rng.below(5)].min(len - r);
                    let (co, y) = prefill(&mut chunked, 1, &pr, r, r + step, &ps, io);
                    got.0.extend(co);
                    got.1.extend(y);
                    r += step;
                }
                assert!(got == a, "{ctx}: chunked outputs differ");
                assert!(state_of(&chunked, 1) == state_of(&whole, 1), "{ctx}: chunked state differs");
            }
        }
    }
}

#[test]
fn varlen_batch_with_padding_equals_separate_calls() {
    let mut rng = Rng::new(77);
    let c = cfg(DType::BF16, DType::F32, 4, 2);
    let mut batch = Cache::new(c).unwrap();
    let mut single = Cache::new(c).unwrap();
    let ps = params(&mut rng, &batch);
    let (h, p, n, g) = (4usize, 16usize, 24usize, 2usize);
    let dim = batch.shape().conv_dim;
    // Sequences: slot 2 (5 tokens), padding (3 tokens), slot 0 (0 tokens), slot 3 (11 tokens).
    let slots = [2, -1, 0, 3];
    let lens = [5usize, 3, 0, 11];
    let total: usize = lens.iter().sum();
    let pr = prompt(&mut rng, total, &batch);
    let cu: Vec<u64> = std::iter::once(0)
        .chain(lens.iter().scan(0u64, |s, &l| {
            *s += l as u64;
            Some(*s)
        }))
        .collect();
    let io = DType::F32;
    let cx = Buf::from_f32(io, &pr.cx);
    let mut co = Buf::from_f32(io, &vec![5.0; total * dim]);
    let cp = ConvParams { weight: &ps.w, bias: Some(&ps.bias), silu: true };
    batch.conv_prefill(0, Slots::List(&slots), &cu, cx.slice(), co.slice_mut(), &cp).unwrap();
    let bufs = [
        Buf::from_f32(io, &pr.x),
        Buf::from_f32(io, &pr.dt),
        Buf::from_f32(io, &pr.b),
        Buf::from_f32(io, &pr.c),
        Buf::from_f32(io, &pr.z),
    ];
    let inp = SsmInputs {
        x: bufs[0].slice(),
        dt: bufs[1].slice(),
        b: bufs[2].slice(),
        c: bufs[3].slice(),
        z: Some(bufs[4].slice()),
    };
    let mut y = Buf::from_f32(io, &vec![5.0; total * h * p]);
    let sp = SsmParams { a: &ps.a, d: Some(&ps.d), dt_bias: Some(&ps.d), dt_softplus: true, dt_limit: None };
    batch.ssm_prefill(0, Slots::List(&slots), &cu, &inp, y.slice_mut(), &sp).unwrap();
    let (co, y) = (co.to_f32(), y.to_f32());
    for (i, &s) in slots.iter().enumerate() {
        let (r0, r1) = (cu[i] as usize, cu[i + 1] as usize);
        if s < 0 {
            assert!(co[r0 * dim..r1 * dim].iter().all(|&v| v == 0.0), "padding conv rows are zero");
            assert!(y[r0 * h * p..r1 * h * p].iter().all(|&v| v == 0.0), "padding y rows are zero");
            continue;
        }
        let (wco, wy) = prefill(&mut single, s, &pr, r0, r1, &ps, io);
        assert_eq!(&co[r0 * dim..r1 * dim], &wco[..], "slot {s} conv");
        assert_eq!(&y[r0 * h * p..r1 * h * p], &wy[..], "slot {s} y");
        assert!(state_of(&batch, s) == state_of(&single, s), "slot {s} state");
    }
    // Slot 1 was never named: still zero.
    assert!(state_of(&batch, 1).1.iter().all(|&v| v == 0.0));
    let _ = (n, g);
}

#[test]
fn bad_cu_seqlens_are_refused_without_change() {
    let mut rng = Rng::new(3);
    let c = cfg(DType::F32, DType::F32, 4, 1);
    let mut cache = Cache::new(c).unwrap();
    let ps = params(&mut rng, &cache);
    let dim = cache.shape().conv_dim;
    let x = Buf::from_f32(DType::F32, &vec![1.0; 4 * dim]);
    let mut out = Buf::zeros(DType::F32, 4 * dim);
    let cp = ConvParams { weight: &ps.w, bias: None, silu: false };
    let before = state_of(&cache, 0);
    for (cu, want) in [
        (vec![0u64, 4], "ok"),
        (vec![0u64], "shape"),
        (vec![1u64, 4], "invalid"),
        (vec![0u64, 5], "shape"),
        (vec![0u64, 3, 2], "shape-or-invalid"),
    ] {
        let slots: Vec<i32> = (0..cu.len().saturating_sub(1) as i32).collect();
        let r = cache.conv_prefill(0, Slots::List(&slots), &cu, x.slice(), out.slice_mut(), &cp);
        match want {
            "ok" => {
                r.unwrap();
                cache.reset(Slots::Dense(4)).unwrap();
            }
            "shape" => assert!(matches!(r, Err(Error::ShapeMismatch(_))), "{cu:?}: {r:?}"),
            "invalid" => assert!(matches!(r, Err(Error::InvalidArg(_))), "{cu:?}: {r:?}"),
            _ => assert!(r.is_err(), "{cu:?}"),
        }
    }
    assert_eq!(state_of(&cache, 0), before);
}

#[test]
fn parallel_prefill_is_bit_identical_to_serial() {
    // Big enough for the thread pool: 8 heads of 64 x 128 f32.
    let c = Config {
        num_layers: 1,
        num_slots: 2,
        intermediate_size: 512,
        num_heads: 8,
        head_dim: 64,
        state_size: 128,
        n_groups: 1,
        conv_kernel_size: 4,
        conv_width: 4,
        conv_dtype: DType::F32,
        ssm_dtype: DType::F32,
        ..Config::default()
    };
    let run = |threads: usize, layout: ConvLayout| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut rng = Rng::new(9);
            let mut cache = Cache::new(c).unwrap();
            cache.set_conv_layout(layout).unwrap();
            let ps = params(&mut rng, &cache);
            let pr = prompt(&mut rng, 20, &cache);
            let out = prefill(&mut cache, 1, &pr, 0, 20, &ps, DType::F32);
            (out, state_of(&cache, 1))
        })
    };
    let serial = run(1, ConvLayout::OldestFirst);
    assert!(serial == run(2, ConvLayout::OldestFirst));
    assert!(serial == run(1, ConvLayout::Ring));
    assert!(serial == run(2, ConvLayout::Ring));
}
