//! Checkpoints captured inside prefills: every captured state equals, bit
//! for bit, the slot's state had its prompt stopped at that token (checked
//! against a cache that prefilled only the prefix), with position; the
//! prefill's outputs and final states are those of the same calls without
//! a capture; points across chunk boundaries and several per slot work;
//! bad declarations and unreached points are refused.

mod common;

use common::Rng;
use m2c_core::any_cache::{ConvIo, SsmIo};
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::store::{Miss, Store, chain_key};
use m2c_core::{AnyCache, Config, DType, Error, Slice, SliceMut, Slots};

fn cfg(conv: DType, ssm: DType, width: u32) -> Config {
    Config {
        num_layers: 2,
        num_slots: 4,
        intermediate_size: 32,
        num_heads: 2,
        head_dim: 16,
        state_size: 8,
        n_groups: 1,
        conv_width: width,
        conv_dtype: conv,
        ssm_dtype: ssm,
        ..Config::default()
    }
}

/// A prompt's inputs to one layer, per token (f32).
struct Prompt {
    x: Vec<f32>,
    sx: Vec<f32>,
    dt: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn prompt(rng: &mut Rng, c: &Config, tokens: usize) -> Prompt {
    let s = c.shape().unwrap();
    let (hp, h, gn) = ((c.num_heads * c.head_dim) as usize, c.num_heads as usize, (c.n_groups * c.state_size) as usize);
    Prompt {
        x: rng.vec(tokens * s.conv_dim, 1.0),
        sx: rng.vec(tokens * hp, 1.0),
        dt: rng.vec(tokens * h, 1.0),
        b: rng.vec(tokens * gn, 1.0),
        c: rng.vec(tokens * gn, 1.0),
    }
}

/// One prefill call on `layer`: rows `slots`, sequence `i` bringing tokens
/// `ranges[i]` of `prompts[i]`. Returns the outputs' bits.
fn prefill(
    cache: &mut AnyCache,
    layer: u32,
    slots: &[i32],
    prompts: &[&Prompt],
    ranges: &[(usize, usize)],
) -> Result<Vec<u32>, Error> {
    let c = cache.config();
    let s = c.shape().unwrap();
    let (dim, hp, h, gn) =
        (s.conv_dim, (c.num_heads * c.head_dim) as usize, c.num_heads as usize, (c.n_groups * c.state_size) as usize);
    let mut cu = vec![0u64];
    let (mut x, mut sx, mut dt, mut b, mut cc) = (vec![], vec![], vec![], vec![], vec![]);
    for (p, &(a, e)) in prompts.iter().zip(ranges) {
        cu.push(cu.last().unwrap() + (e - a) as u64);
        x.extend_from_slice(&p.x[a * dim..e * dim]);
        sx.extend_from_slice(&p.sx[a * hp..e * hp]);
        dt.extend_from_slice(&p.dt[a * h..e * h]);
        b.extend_from_slice(&p.b[a * gn..e * gn]);
        cc.extend_from_slice(&p.c[a * gn..e * gn]);
    }
    let t = *cu.last().unwrap() as usize;
    let w: Vec<f32> = (0..dim * c.conv_kernel_size as usize).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let mut out = vec![7f32; t * dim];
    let io = ConvIo::Host {
        x: Slice::F32(&x),
        out: SliceMut::F32(&mut out),
        params: ConvParams { weight: &w, bias: None, silu: true },
    };
    cache.conv_prefill(layer, Slots::List(slots), &cu, io)?;
    let a: Vec<f32> = (0..h).map(|i| -0.3 - 0.2 * i as f32).collect();
    let mut y = vec![7f32; t * hp];
    let io = SsmIo::Host {
        inputs: SsmInputs { x: Slice::F32(&sx), dt: Slice::F32(&dt), b: Slice::F32(&b), c: Slice::F32(&cc), z: None },
        y: SliceMut::F32(&mut y),
        params: SsmParams { a: &a, d: Some(&a), dt_bias: None, dt_softplus: true, dt_limit: None },
    };
    cache.ssm_prefill(layer, Slots::List(slots), &cu, io)?;
    Ok(out.iter().chain(&y).map(|v| v.to_bits()).collect())
}

fn seeded(c: Config, seed: u64) -> AnyCache {
    let mut cache = AnyCache::new(c).unwrap();
    let mut rng = Rng::new(seed);
    let s = cache.shape();
    for l in 0..c.num_layers {
        let w = rng.vec(c.num_slots as usize * s.conv_slot_elems, 1.0);
        let st = rng.vec(c.num_slots as usize * s.ssm_slot_elems, 1.0);
        cache.set_conv(l, Slots::Dense(c.num_slots as usize), Slice::F32(&w)).unwrap();
        cache.set_ssm(l, Slots::Dense(c.num_slots as usize), Slice::F32(&st)).unwrap();
    }
    cache.advance(Slots::List(&[1]), 100).unwrap();
    cache
}

fn exported(cache: &AnyCache, slot: i32) -> (Vec<u8>, u64) {
    let bytes = Store::entry_bytes(&cache.config()).unwrap() as usize;
    let mut out = vec![0u8; bytes];
    let pos = cache.slot_export(slot, &mut out).unwrap();
    (out, pos)
}

#[test]
fn captured_states_are_the_prefix_states_and_outputs_do_not_change() {
    for (conv, ssm, width) in [(DType::F32, DType::F32, 4), (DType::BF16, DType::BF16, 3)] {
        let c = cfg(conv, ssm, width);
        let mut rng = Rng::new(21);
        // Two prompts of 18 and 11 tokens per layer, in two chunks each
        // (10 + 8 and 6 + 5), beside a padding row.
        let p1: Vec<Prompt> = (0..2).map(|_| prompt(&mut rng, &c, 18)).collect();
        let p2: Vec<Prompt> = (0..2).map(|_| prompt(&mut rng, &c, 11)).collect();
        let pad: Vec<Prompt> = (0..2).map(|_| prompt(&mut rng, &c, 3)).collect();
        let chunks = [[(0, 10), (0, 6), (0, 3)], [(10, 18), (6, 11), (0, 2)]];
        let points = [(1, 5u64), (1, 10), (1, 13), (2, 11), (2, 1)];
        let keys: Vec<u128> = points.iter().map(|&(s, t)| chain_key(None, &[s, t as i32])).collect();

        let mut a = seeded(c, 5);
        let mut plain = seeded(c, 5);
        let decl: Vec<(i32, u64, u128)> = points.iter().zip(&keys).map(|(&(s, t), &k)| (s, t, k)).collect();
        let store = Store::new(1 << 24, 16).unwrap();
        a.capture_begin(&store, &decl).unwrap();
        assert_eq!(a.capture_pending(), points.len());
        for (ci, ch) in chunks.iter().enumerate() {
            for l in 0..2u32 {
                let ps = [&p1[l as usize], &p2[l as usize], &pad[l as usize]];
                let got = prefill(&mut a, l, &[1, 2, -1], &ps, ch).unwrap();
                let want = prefill(&mut plain, l, &[1, 2, -1], &ps, ch).unwrap();
                assert_eq!(got, want, "{conv:?}/{ssm:?} chunk {ci} layer {l}: outputs differ under a capture");
            }
            if ci == 0 {
                // Points past the first chunk are not reached yet.
                let e = a.capture_end(&store).unwrap_err();
                assert!(matches!(&e, Error::InvalidArg(m) if m.contains("points[2]")), "{e:?}");
            }
        }
        assert_eq!(exported(&a, 1), exported(&plain, 1), "final states differ");
        assert_eq!(exported(&a, 2), exported(&plain, 2), "final states differ");
        let misses = a.capture_end(&store).unwrap();
        assert_eq!(misses, vec![None; points.len()]);
        assert_eq!(a.capture_pending(), 0);
        // Each point against a cache that prefilled only the prefix.
        for (&(slot, t), &key) in points.iter().zip(&keys) {
            let mut r = seeded(c, 5);
            for l in 0..2usize {
                let p = if slot == 1 { &p1[l] } else { &p2[l] };
                prefill(&mut r, l as u32, &[slot], &[p], &[(0, t as usize)]).unwrap();
            }
            let (want, pos) = exported(&r, slot);
            let mut back = AnyCache::new(c).unwrap();
            store.restore(key, &mut back, 3).unwrap();
            let (got, got_pos) = exported(&back, 3);
            assert!(got == want, "{conv:?}/{ssm:?}: slot {slot} after {t} tokens differs from its prefix state");
            assert_eq!(got_pos, pos + t, "position of slot {slot} after {t} tokens");
        }
    }
}

#[test]
fn bad_declarations_are_refused_and_a_full_store_says_so() {
    let c = cfg(DType::F32, DType::F32, 4);
    let mut a = seeded(c, 1);
    let k = chain_key(None, &[1]);
    let tiny = Store::new(1, 4).unwrap();
    assert!(matches!(a.capture_begin(&tiny, &[(4, 3, k)]), Err(Error::OutOfRange(_))));
    assert!(matches!(a.capture_begin(&tiny, &[(0, 0, k)]), Err(Error::InvalidArg(_))));
    assert!(matches!(a.capture_begin(&tiny, &[(0, 3, k), (0, 3, k)]), Err(Error::InvalidArg(_))));
    assert_eq!(a.capture_pending(), 0);
    assert_eq!(a.capture_end(&tiny).unwrap(), vec![]);
    a.capture_begin(&tiny, &[(0, 2, k)]).unwrap();
    let mut rng = Rng::new(2);
    let p = prompt(&mut rng, &c, 2);
    for l in 0..2 {
        prefill(&mut a, l, &[0], &[&p], &[(0, 2)]).unwrap();
    }
    let other = Store::new(1 << 20, 4).unwrap();
    assert!(matches!(a.capture_end(&other), Err(Error::InvalidArg(_))), "another store");
    assert_eq!(a.capture_end(&tiny).unwrap(), vec![Some(Miss::TooLarge)]);
    // A declaration of nothing cancels.
    a.capture_begin(&tiny, &[(0, 2, k)]).unwrap();
    a.capture_begin(&tiny, &[]).unwrap();
    assert_eq!(a.capture_pending(), 0);
    // A bad prefill call under a capture changes nothing.
    a.capture_begin(&tiny, &[(0, 1, k)]).unwrap();
    let before = exported(&a, 0);
    assert!(prefill(&mut a, 5, &[0], &[&p], &[(0, 2)]).is_err());
    assert!(prefill(&mut a, 0, &[0, 0], &[&p, &p], &[(0, 1), (0, 1)]).is_err());
    assert_eq!(exported(&a, 0), before);
}
