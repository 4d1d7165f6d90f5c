//! The decode kernels against a plain f64 reference of the formulas (as in
//! causal-conv1d's `causal_conv1d_update_ref` and mamba's
//! `selective_state_update_ref`), for every storage/activation dtype pair,
//! one and several groups, both conv widths, padding rows and the optional
//! inputs. Tolerances live in `tolerance()`.

mod common;

use common::{Buf, Rng, round_to};
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::{Cache, Config, DType, Slots};
use m2c_testkit::oracle;

/// Allowed error, relative to the largest magnitude of the reference
/// tensor, for a result that ends up stored or returned in `dtype` after a
/// single step computed in f32: a few f32 roundings for f32, half an ulp of
/// the format (plus the f32 part) for bf16/f16.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::BF16 => 2f64.powi(-8) + 1e-5,
        DType::F16 => 2f64.powi(-11) + 1e-5,
    }
}

/// max |got - want| / max |want|.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter().zip(want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs())) / scale
}

fn cfg(conv_dtype: DType, ssm_dtype: DType, groups: u32, width: u32) -> Config {
    Config {
        num_layers: 2,
        num_slots: 4,
        intermediate_size: 4 * 8,
        num_heads: 4,
        head_dim: 8,
        state_size: 20, // not a multiple of 16: exercises the tail loop
        n_groups: groups,
        conv_kernel_size: 4,
        conv_width: width,
        conv_dtype,
        ssm_dtype,
        ..Config::default()
    }
}

fn values(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * scale).collect()
}

/// Values as the kernel sees them: rounded to the activation dtype.
fn rounded(dtype: DType, v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| round_to(dtype, x) as f64).collect()
}

fn read_all(cache: &Cache, layer: u32, conv: bool) -> Vec<f32> {
    let n = cache.num_slots();
    let per = if conv { cache.shape().conv_slot_elems } else { cache.shape().ssm_slot_elems };
    let mut out = Buf::zeros(DType::F32, n * per);
    if conv {
        cache.read_conv(layer, Slots::Dense(n), out.slice_mut()).unwrap();
    } else {
        cache.read_ssm(layer, Slots::Dense(n), out.slice_mut()).unwrap();
    }
    out.to_f32()
}

#[test]
fn conv_step_matches_the_f64_reference() {
    let mut rng = Rng::new(11);
    for conv_dtype in DType::ALL {
        for io in DType::ALL {
            for width in [4, 3] {
                for (use_bias, act) in [(true, true), (false, false)] {
                    let cfg = cfg(conv_dtype, DType::F32, 2, width);
                    let mut cache = Cache::new(cfg).unwrap();
                    let dim = cache.shape().conv_dim;
                    let (k, w) = (4usize, width as usize);
                    let weight = values(&mut rng, dim * k, 0.5);
                    let bias = values(&mut rng, dim, 0.5);
                    let params = ConvParams { weight: &weight, bias: use_bias.then_some(&bias[..]), silu: act };
                    let slots = [2, -1, 0];
                    for step in 0..6 {
                        let before = read_all(&cache, 1, true);
                        let x = values(&mut rng, slots.len() * dim, 2.0);
                        let xb = Buf::from_f32(io, &x);
                        let xr = rounded(io, &x);
                        let mut out = Buf::from_f32(io, &vec![9.0; slots.len() * dim]);
                        cache.conv_step(1, Slots::List(&slots), xb.slice(), out.slice_mut(), &params).unwrap();
                        let after = read_all(&cache, 1, true);
                        // Reference, from the stored window before the step.
                        let mut want_out = vec![0f64; slots.len() * dim];
                        let mut want_win: Vec<f64> = before.iter().map(|&v| v as f64).collect();
                        for (r, &s) in slots.iter().enumerate() {
                            if s < 0 {
                                continue;
                            }
                            let s = s as usize;
                            for c in 0..dim {
                                let win = &mut want_win[(s * dim + c) * w..(s * dim + c + 1) * w];
                                let xv = xr[r * dim + c];
                                let b = use_bias.then_some(bias[c]);
                                want_out[r * dim + c] =
                                    oracle::conv_channel(win, xv, &weight[c * k..(c + 1) * k], b, act);
                                win.rotate_left(1);
                                win[w - 1] = round_to(conv_dtype, xv as f32) as f64;
                            }
                        }
                        let ctx = format!("conv {conv_dtype:?} io {io:?} width {width} bias {use_bias} step {step}");
                        let eo = rel_err(&out.to_f32(), &want_out);
                        assert!(eo <= tolerance(io), "{ctx}: out error {eo:e}");
                        // The window only moves stored values: exact.
                        assert_eq!(after, want_win.iter().map(|&v| v as f32).collect::<Vec<_>>(), "{ctx}: window");
                        // Padding row output is zero.
                        assert!(out.to_f32()[dim..2 * dim].iter().all(|&v| v == 0.0), "{ctx}: padding output");
                    }
                }
            }
        }
    }
}

#[test]
fn both_conv_layouts_give_bit_identical_outputs() {
    let mut rng = Rng::new(5);
    let mut a = Cache::new(cfg(DType::F32, DType::F32, 1, 4)).unwrap();
    let mut b = Cache::new(cfg(DType::F32, DType::F32, 1, 3)).unwrap();
    let dim = a.shape().conv_dim;
    let weight = values(&mut rng, dim * 4, 0.5);
    let p = ConvParams { weight: &weight, bias: None, silu: true };
    for _ in 0..10 {
        let x = Buf::from_f32(DType::F32, &values(&mut rng, dim, 1.0));
        let (mut oa, mut ob) = (Buf::zeros(DType::F32, dim), Buf::zeros(DType::F32, dim));
        a.conv_step(0, Slots::Dense(1), x.slice(), oa.slice_mut(), &p).unwrap();
        b.conv_step(0, Slots::Dense(1), x.slice(), ob.slice_mut(), &p).unwrap();
        assert_eq!(oa.to_f32(), ob.to_f32());
    }
}

struct SsmCase {
    ssm_dtype: DType,
    io: DType,
    groups: u32,
    z: bool,
    d: bool,
    dt_bias: bool,
    softplus: bool,
    limit: Option<(f32, f32)>,
}

fn run_ssm_case(case: &SsmCase, seed: u64) {
    let mut rng = Rng::new(seed);
    let cfg = cfg(DType::BF16, case.ssm_dtype, case.groups, 4);
    let mut cache = Cache::new(cfg).unwrap();
    let (h, p, n, g) = (4usize, 8usize, 20usize, case.groups as usize);
    let a: Vec<f32> = (0..h).map(|_| -(rng.unit().abs() * 2.0 + 0.1)).collect();
    let d = values(&mut rng, h, 1.0);
    let dt_bias = values(&mut rng, h, 0.5);
    let params = SsmParams {
        a: &a,
        d: case.d.then_some(&d[..]),
        dt_bias: case.dt_bias.then_some(&dt_bias[..]),
        dt_softplus: case.softplus,
        dt_limit: case.limit,
    };
    let slots = [3, -1, 1];
    let rows = slots.len();
    for step in 0..5 {
        let before = read_all(&cache, 0, false);
        let x = values(&mut rng, rows * h * p, 1.0);
        let dt: Vec<f32> =
            (0..rows * h).map(|_| if case.softplus { rng.unit() * 3.0 } else { rng.unit().abs() * 0.5 }).collect();
        let b = values(&mut rng, rows * g * n, 1.0);
        let c = values(&mut rng, rows * g * n, 1.0);
        let z = values(&mut rng, rows * h * p, 2.0);
        let (xb, dtb, bb, cb, zb) = (
            Buf::from_f32(case.io, &x),
            Buf::from_f32(case.io, &dt),
            Buf::from_f32(case.io, &b),
            Buf::from_f32(case.io, &c),
            Buf::from_f32(case.io, &z),
        );
        let inp =
            SsmInputs { x: xb.slice(), dt: dtb.slice(), b: bb.slice(), c: cb.slice(), z: case.z.then(|| zb.slice()) };
        let mut y = Buf::from_f32(case.io, &vec![7.0; rows * h * p]);
        cache.ssm_step(0, Slots::List(&slots), &inp, y.slice_mut(), &params).unwrap();
        let after = read_all(&cache, 0, false);

        let (xr, dtr, br, cr, zr) = (
            rounded(case.io, &x),
            rounded(case.io, &dt),
            rounded(case.io, &b),
            rounded(case.io, &c),
            rounded(case.io, &z),
        );
        let mut want_state: Vec<f64> = before.iter().map(|&v| v as f64).collect();
        let mut want_y = vec![0f64; rows * h * p];
        for (r, &s) in slots.iter().enumerate() {
            if s < 0 {
                continue;
            }
            let s = s as usize;
            for hh in 0..h {
                let gg = hh / (h / g);
                let bias = case.dt_bias.then_some(f64::from(dt_bias[hh]));
                let limit = case.limit.map(|(lo, hi)| (f64::from(lo), f64::from(hi)));
                let dtv = oracle::dt(dtr[r * h + hh], bias, case.softplus, limit);
                let head = (s * h + hh) * p * n..(s * h + hh + 1) * p * n;
                let xs = &xr[(r * h + hh) * p..(r * h + hh + 1) * p];
                let bc = (r * g + gg) * n..(r * g + gg + 1) * n;
                let z = case.z.then(|| &zr[(r * h + hh) * p..(r * h + hh + 1) * p]);
                let dv = case.d.then_some(f64::from(d[hh]));
                let y =
                    oracle::ssm_head(&mut want_state[head], xs, dtv, f64::from(a[hh]), &br[bc.clone()], &cr[bc], dv, z);
                want_y[(r * h + hh) * p..(r * h + hh + 1) * p].copy_from_slice(&y);
            }
        }
        let ctx = format!(
            "ssm {:?} io {:?} groups {} z {} d {} bias {} softplus {} limit {:?} step {step}",
            case.ssm_dtype, case.io, case.groups, case.z, case.d, case.dt_bias, case.softplus, case.limit
        );
        let es = rel_err(&after, &want_state);
        assert!(es <= tolerance(case.ssm_dtype), "{ctx}: state error {es:e}");
        let ey = rel_err(&y.to_f32(), &want_y);
        assert!(ey <= tolerance(case.io), "{ctx}: y error {ey:e}");
        assert!(y.to_f32()[h * p..2 * h * p].iter().all(|&v| v == 0.0), "{ctx}: padding y");
        // Untouched slots keep their state exactly.
        let per = h * p * n;
        for s in [0usize, 2] {
            assert_eq!(&after[s * per..(s + 1) * per], &before[s * per..(s + 1) * per], "{ctx}: slot {s} touched");
        }
    }
}

#[test]
fn ssm_step_matches_the_f64_reference_for_every_dtype_pair() {
    let mut seed = 100;
    for ssm_dtype in DType::ALL {
        for io in DType::ALL {
            for groups in [1, 2] {
                let case =
                    SsmCase { ssm_dtype, io, groups, z: true, d: true, dt_bias: true, softplus: true, limit: None };
                run_ssm_case(&case, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn ssm_step_optional_inputs_and_dt_limits() {
    for (seed, (z, d, dt_bias, softplus, limit)) in [
        (false, false, false, false, None),
        (true, false, true, false, Some((0.01, 0.2))),
        (false, true, false, true, Some((0.0, f32::INFINITY))),
        (true, true, true, true, Some((0.05, 0.1))),
    ]
    .into_iter()
    .enumerate()
    {
        let case = SsmCase { ssm_dtype: DType::F32, io: DType::F32, groups: 4, z, d, dt_bias, softplus, limit };
        run_ssm_case(&case, 500 + seed as u64);
    }
}

#[test]
fn kernel_shape_errors_change_nothing() {
    let mut cache = Cache::new(cfg(DType::F32, DType::F32, 2, 4)).unwrap();
    let dim = cache.shape().conv_dim;
    let weight = vec![0.1f32; dim * 4];
    let x = Buf::from_f32(DType::F32, &vec![1.0; dim]);
    let mut out = Buf::zeros(DType::F32, dim);
    let before = read_all(&cache, 0, true);
    let short_w = vec![0.1f32; dim * 4 - 1];
    let bad = ConvParams { weight: &short_w, bias: None, silu: false };
    assert!(matches!(
        cache.conv_step(0, Slots::Dense(1), x.slice(), out.slice_mut(), &bad),
        Err(m2c_core::Error::ShapeMismatch(_))
    ));
    let good = ConvParams { weight: &weight, bias: None, silu: false };
    let mut out_bf = Buf::zeros(DType::BF16, dim);
    assert!(matches!(
        cache.conv_step(0, Slots::Dense(1), x.slice(), out_bf.slice_mut(), &good),
        Err(m2c_core::Error::InvalidArg(_))
    ));
    assert!(matches!(
        cache.conv_step(2, Slots::Dense(1), x.slice(), out.slice_mut(), &good),
        Err(m2c_core::Error::OutOfRange(_))
    ));
    assert_eq!(read_all(&cache, 0, true), before);
    assert!(out.to_f32().iter().all(|&v| v == 0.0));
}

#[test]
fn nonfinite_inputs_stay_in_their_slot_and_are_detected() {
    let mut cache = Cache::new(cfg(DType::BF16, DType::F32, 2, 4)).unwrap();
    let (h, p, n, g) = (4usize, 8usize, 20usize, 2usize);
    let a = vec![-0.5f32; h];
    let params = SsmParams { a: &a, d: None, dt_bias: None, dt_softplus: true, dt_limit: None };
    let mut x = vec![0.5f32; 2 * h * p];
    x[3] = f32::NAN; // row 0 (slot 1) only
    let dt = vec![0.1f32; 2 * h];
    let bc = vec![0.3f32; 2 * g * n];
    let inp = SsmInputs {
        x: m2c_core::Slice::F32(&x),
        dt: m2c_core::Slice::F32(&dt),
        b: m2c_core::Slice::F32(&bc),
        c: m2c_core::Slice::F32(&bc),
        z: None,
    };
    let mut y = vec![0f32; 2 * h * p];
    cache.ssm_step(0, Slots::List(&[1, 2]), &inp, m2c_core::SliceMut::F32(&mut y), &params).unwrap();
    assert_eq!(cache.count_nonfinite(1).unwrap(), n as u64, "one channel's state row is NaN");
    assert_eq!(cache.count_nonfinite(2).unwrap(), 0);
    assert!(y[h * p..].iter().all(|v| v.is_finite()), "the other slot's outputs are finite");
    // It persists through later clean steps, and reset clears it.
    let mut x2 = x.clone();
    x2[3] = 0.5;
    let inp = SsmInputs { x: m2c_core::Slice::F32(&x2), ..inp };
    cache.ssm_step(0, Slots::List(&[1, 2]), &inp, m2c_core::SliceMut::F32(&mut y), &params).unwrap();
    assert_eq!(cache.count_nonfinite(1).unwrap(), n as u64);
    cache.reset(Slots::List(&[1])).unwrap();
    assert_eq!(cache.count_nonfinite(1).unwrap(), 0);
    let inf = vec![f32::INFINITY; cache.shape().conv_slot_elems];
    cache.set_conv(1, Slots::List(&[3]), m2c_core::Slice::F32(&inf)).unwrap();
    assert_eq!(cache.count_nonfinite(3).unwrap(), inf.len() as u64);
    assert!(matches!(cache.count_nonfinite(4), Err(m2c_core::Error::OutOfRange(_))));
}
