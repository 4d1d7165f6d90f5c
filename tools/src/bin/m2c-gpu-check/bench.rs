//! Timings at Mamba2-2.7B shapes: kernels beside a device-to-device copy,
//! prefill against steps, one decode token through the C API.

use crate::util::*;
use cudarc::driver::CudaSlice;
use m2c_core::cuda::Gpu;
use m2c_core::device::{DevBuf, DeviceConvArgs, DeviceKernels, DeviceSsmIo, DeviceSsmParams};
use m2c_core::{Config, DType};

/// Median milliseconds of `f` over `iters` runs timed with CUDA events.
pub(crate) fn time_ms(gpu: &Gpu, iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    gpu.stream.synchronize().unwrap();
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let a = gpu.ctx.new_event(flags).unwrap();
            let b = gpu.ctx.new_event(flags).unwrap();
            a.record(&gpu.stream).unwrap();
            f();
            b.record(&gpu.stream).unwrap();
            a.elapsed_ms(&b).unwrap() as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

pub(crate) fn bench(gpu: &Gpu, st: DType, slots: usize) -> String {
    // One layer of Mamba2-2.7B; f32 activations.
    let (h, p, n, g) = (80usize, 64usize, 128usize, 1usize);
    let s = &gpu.stream;
    let cfg = Config {
        num_layers: 1,
        num_slots: slots as u32,
        ssm_dtype: st,
        conv_dtype: DType::BF16,
        ..Config::mamba2_2_7b()
    };
    let bytes = slots * h * p * n * st.size();
    let mut state: DevBuf = Box::new(s.alloc_zeros::<u8>(bytes).unwrap());
    let mut copy_dst: CudaSlice<u8> = s.alloc_zeros(bytes).unwrap();
    let sl: Vec<i32> = (0..slots as i32).collect();
    let z4 = |len: usize| -> CudaSlice<f32> { s.clone_htod(&vec![0.01f32; len]).unwrap() };
    let (dx, ddt, db, dc) = (z4(slots * h * p), z4(slots * h), z4(slots * g * n), z4(slots * g * n));
    let dy = z4(slots * h * p);
    let da = upf(s, &vec![-0.5; h]);
    let dp = DeviceSsmParams { a: arr(s, &da), d: arr(s, &da), dt_bias: none(), dt_softplus: true, dt_limit: None };
    let io = DeviceSsmIo {
        dtype: DType::F32,
        x: arr(s, &dx),
        dt: arr(s, &ddt),
        b: arr(s, &db),
        c: arr(s, &dc),
        z: none(),
        y: arr(s, &dy),
    };
    let iters = 20;
    let t_ssm = time_ms(gpu, iters, || {
        gpu.ssm_step(&cfg, &mut state, &sl, &io, &dp).unwrap();
    });
    let state_slice = state.downcast_ref::<CudaSlice<u8>>().expect("a CUDA buffer");
    let t_copy = time_ms(gpu, iters, || {
        s.memcpy_dtod(state_slice, &mut copy_dst).unwrap();
    });
    // conv at 2.7B: dim 5376, K 4, bf16 window.
    let dim = 5376usize;
    let mut win: DevBuf = Box::new(s.alloc_zeros::<u8>(slots * dim * 4 * 2).unwrap());
    let (cx, cout) = (z4(slots * dim), z4(slots * dim));
    let w = upf(s, &vec![0.1; dim * 4]);
    let a = DeviceConvArgs {
        dtype: DType::F32,
        x: arr(s, &cx),
        out: arr(s, &cout),
        weight: arr(s, &w),
        bias: none(),
        silu: true,
    };
    let t_conv = time_ms(gpu, iters, || {
        gpu.conv_step(&cfg, &mut win, &sl, &a).unwrap();
    });
    let gbs = |ms: f64| bytes as f64 / (ms * 1e-3) / 1e9;
    format!(
        "| {} | {slots} | {:.1} | {:.3} | {:.0} | {:.3} | {:.0} | {:.2} | {:.1} |",
        st.name(),
        bytes as f64 / 1e6,
        t_ssm,
        gbs(t_ssm),
        t_copy,
        gbs(t_copy),
        t_copy / t_ssm,
        t_conv * 1e3
    )
}

/// Prefill at Mamba2-2.7B shapes (one layer, f32 activations): `seqs`
/// sequences of `len` tokens in one launch, against the same tokens as
/// `len` decode steps of `seqs` rows (what an engine does without a
/// prefill kernel).
pub(crate) fn bench_prefill(gpu: &Gpu, st: DType, seqs: usize, len: usize) -> String {
    let (h, p, n, g) = (80usize, 64usize, 128usize, 1usize);
    let s = &gpu.stream;
    let t = seqs * len;
    let cfg = Config { num_layers: 1, num_slots: seqs as u32, ssm_dtype: st, ..Config::mamba2_2_7b() };
    let mut state: DevBuf = Box::new(s.alloc_zeros::<u8>(seqs * h * p * n * st.size()).unwrap());
    let sl: Vec<i32> = (0..seqs as i32).collect();
    let cu: Vec<u64> = (0..=seqs as u64).map(|i| i * len as u64).collect();
    let z4 = |len: usize| -> CudaSlice<f32> { s.clone_htod(&vec![0.01f32; len]).unwrap() };
    let (dx, ddt, db, dc) = (z4(t * h * p), z4(t * h), z4(t * g * n), z4(t * g * n));
    let dy = z4(t * h * p);
    let da = upf(s, &vec![-0.5; h]);
    let dp = DeviceSsmParams { a: arr(s, &da), d: arr(s, &da), dt_bias: none(), dt_softplus: true, dt_limit: None };
    let io = DeviceSsmIo {
        dtype: DType::F32,
        x: arr(s, &dx),
        dt: arr(s, &ddt),
        b: arr(s, &db),
        c: arr(s, &dc),
        z: none(),
        y: arr(s, &dy),
    };
    let t_pre = time_ms(gpu, 5, || {
        gpu.ssm_prefill(&cfg, &mut state, &sl, &cu, &io, &dp).unwrap();
    });
    // The steps reuse the first rows of the buffers: the timing does not
    // depend on the values.
    let t_steps = time_ms(gpu, 5, || {
        for _ in 0..len {
            gpu.ssm_step(&cfg, &mut state, &sl, &io, &dp).unwrap();
        }
    });
    format!("| {} | {seqs} x {len} | {:.3} | {:.3} | {:.2} |", st.name(), t_pre, t_steps, t_steps / t_pre)
}

/// One decode token of Mamba2-2.7B (64 layers) through the C API on a
/// device-resident cache: m2c_conv_step and m2c_ssm_step per layer, host
/// wall time per token (median of 10, after a warm-up token), beside a
/// device-to-device copy of every layer's state. The gap to the kernel
/// times above is the per-call overhead (checks, slot upload, launch).
pub(crate) fn bench_api(gpu: &Gpu, st: DType, slots: usize) -> String {
    use m2c::*;
    let (layers, h, p, n, g, dim) = (64usize, 80usize, 64usize, 128usize, 1usize, 5376usize);
    let mut cfg = api_config(st);
    cfg.num_layers = layers as u32;
    cfg.num_slots = slots as u32;
    cfg.intermediate_size = 5120;
    cfg.num_heads = h as u32;
    cfg.n_groups = g as u32;
    cfg.device = M2C_DEVICE_CUDA;
    let mut dev = std::ptr::null_mut();
    // SAFETY: valid pointers.
    if let Err(e) = status_ok(unsafe { m2c_create(&cfg, &mut dev) }) {
        return format!("| {} | {slots} | m2c_create failed: {e} | | | |", st.name());
    }
    let s = &gpu.stream;
    let z = |len: usize| upf(s, &vec![0.01; len]);
    let (x, out, w) = (z(slots * dim), z(slots * dim), z(dim * 4));
    let (sx, dt, b, c, y, a) =
        (z(slots * h * p), z(slots * h), z(slots * g * n), z(slots * g * n), z(slots * h * p), upf(s, &vec![-0.5; h]));
    let (mut ca, mut sa, mut io) = init_structs();
    (ca.weight, ca.weight_len) = (addr(s, &w) as *const f32, dim * 4);
    (sa.A, sa.A_len) = (addr(s, &a) as *const f32, h);
    (io.x, io.x_len, io.dt, io.dt_len) = (addr(s, &sx) as *const _, slots * h * p, addr(s, &dt) as *const _, slots * h);
    (io.B, io.B_len, io.C, io.C_len) = (addr(s, &b) as *const _, slots * g * n, addr(s, &c) as *const _, slots * g * n);
    (io.y, io.y_len) = (addr(s, &y) as *mut _, slots * h * p);
    let (xp, op) = (addr(s, &x) as *const std::ffi::c_void, addr(s, &out) as *mut std::ffi::c_void);
    let token = || -> Result<(), String> {
        for l in 0..layers as u32 {
            // SAFETY: device buffers of the declared lengths; slots NULL:
            // rows 0..slots-1.
            unsafe {
                status_ok(m2c_conv_step(dev, l, std::ptr::null(), slots, xp, slots * dim, op, slots * dim, &ca))?;
                status_ok(m2c_ssm_step(dev, l, std::ptr::null(), slots, &io, &sa))?;
            }
        }
        gpu.ctx.synchronize().map_err(|e| e.to_string())
    };
    let mut times = Vec::new();
    let mut err = token().err();
    for _ in 0..10 {
        let t0 = std::time::Instant::now();
        if let Err(e) = token() {
            err = Some(e);
            break;
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    // SAFETY: live handle, destroyed once.
    unsafe { m2c_destroy(dev) };
    if let Some(e) = err {
        return format!("| {} | {slots} | FAILED: {e} | | | |", st.name());
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    let bytes = layers * slots * h * p * n * st.size();
    let src: CudaSlice<u8> = s.alloc_zeros(bytes / layers).unwrap();
    let mut dst: CudaSlice<u8> = s.alloc_zeros(bytes / layers).unwrap();
    let t_copy = layers as f64 * time_ms(gpu, 20, || s.memcpy_dtod(&src, &mut dst).unwrap());
    format!("| {} | {slots} | {:.0} | {t:.3} | {t_copy:.3} | {:.2} |", st.name(), bytes as f64 / 1e6, t_copy / t)
}
