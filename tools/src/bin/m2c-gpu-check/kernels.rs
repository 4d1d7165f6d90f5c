//! The CUDA kernels against the CPU kernels of the same library.

use crate::util::*;
use cudarc::driver::CudaSlice;
use m2c_core::cuda::Gpu;
use m2c_core::device::{DevArray, DevBuf, DeviceConvArgs, DeviceKernels, DeviceSsmIo, DeviceSsmParams};
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::{Cache, Config, DType, Slice, SliceMut, Slots};

pub(crate) fn check_ssm(gpu: &Gpu, st: DType, io: DType, groups: u32, n: u32, seed: u64) -> (bool, String) {
    let cfg = Config {
        num_layers: 1,
        num_slots: 4,
        intermediate_size: 8 * 16,
        num_heads: 8,
        head_dim: 16,
        state_size: n,
        n_groups: groups,
        ssm_dtype: st,
        ..Config::default()
    };
    let (h, p, nn, g) = (8usize, 16usize, n as usize, groups as usize);
    let mut rng = Rng::new(seed);
    let mut cpu = Cache::new(cfg).unwrap();
    let init = rng.vec(4 * h * p * nn, 1.0);
    cpu.set_ssm(0, Slots::Dense(4), Slice::F32(&init)).unwrap();
    let slots = [3i32, -1, 0];
    let rows = slots.len();
    let (x, dt, b, c, z) = (
        rng.vec(rows * h * p, 1.0),
        rng.vec(rows * h, 2.0),
        rng.vec(rows * g * nn, 1.0),
        rng.vec(rows * g * nn, 1.0),
        rng.vec(rows * h * p, 2.0),
    );
    let a: Vec<f32> = (0..h).map(|i| -0.2 - 0.1 * i as f32).collect();
    let d = rng.vec(h, 1.0);
    let s = &gpu.stream;
    let mut dstate: DevBuf = Box::new(up(s, &storage(&cpu, false)));
    let bx = |v: &[f32]| to_bytes(io, v);
    let (xb, dtb, bb, cb, zb) = (bx(&x), bx(&dt), bx(&b), bx(&c), bx(&z));
    // CPU reference (inputs already rounded to io by the byte conversion).
    let back = |v: &[u8]| from_bytes(io, v);
    let (xr, dtr, br, cr, zr) = (back(&xb), back(&dtb), back(&bb), back(&cb), back(&zb));
    let params = SsmParams { a: &a, d: Some(&d), dt_bias: Some(&d), dt_softplus: true, dt_limit: Some((0.001, 5.0)) };
    let mut y_cpu = vec![0f32; rows * h * p];
    let inp = SsmInputs {
        x: Slice::F32(&xr),
        dt: Slice::F32(&dtr),
        b: Slice::F32(&br),
        c: Slice::F32(&cr),
        z: Some(Slice::F32(&zr)),
    };
    // The CPU takes f32 activations here; rounding y to io afterwards
    // matches a kernel writing io-dtype outputs.
    cpu.ssm_step(0, Slots::List(&slots), &inp, SliceMut::F32(&mut y_cpu), &params).unwrap();
    let y_cpu: Vec<f32> = from_bytes(io, &to_bytes(io, &y_cpu));
    // GPU.
    let (dx, ddt, db, dc, dz) = (up(s, &xb), up(s, &dtb), up(s, &bb), up(s, &cb), up(s, &zb));
    let dy = up(s, &vec![0xFFu8; rows * h * p * io.size()]); // NaN poison
    let (da, dd) = (upf(s, &a), upf(s, &d));
    let dp = DeviceSsmParams {
        a: arr(s, &da),
        d: arr(s, &dd),
        dt_bias: arr(s, &dd),
        dt_softplus: true,
        dt_limit: Some((0.001, 5.0)),
    };
    let el = |b: &CudaSlice<u8>| DevArray::new(arr(s, b).addr, b.len() / io.size());
    let io_dev = DeviceSsmIo { dtype: io, x: el(&dx), dt: el(&ddt), b: el(&db), c: el(&dc), z: el(&dz), y: el(&dy) };
    gpu.ssm_step(&cfg, &mut dstate, &slots, &io_dev, &dp).unwrap();
    let y_gpu = from_bytes(io, &down(s, &dy));
    let st_gpu = from_bytes(st, &down_buf(s, &dstate));
    let st_cpu = from_bytes(st, &storage(&cpu, false));
    let unwritten = y_gpu.iter().filter(|v| v.is_nan()).count();
    let (es, ey) = (rel(&st_gpu, &st_cpu), rel(&y_gpu, &y_cpu));
    let pad_zero = y_gpu[h * p..2 * h * p].iter().all(|&v| v == 0.0);
    let ok = es <= tol(st) && ey <= tol(io) && unwritten == 0 && pad_zero;
    (
        ok,
        format!(
            "| ssm_step | {} | {} | {groups} | {n} | {es:.2e} | {ey:.2e} | {unwritten} | {} |",
            st.name(),
            io.name(),
            if ok { "ok" } else { "FAIL" }
        ),
    )
}

pub(crate) fn check_conv(gpu: &Gpu, st: DType, io: DType, width: u32, seed: u64) -> (bool, String) {
    let cfg = Config {
        num_layers: 1,
        num_slots: 4,
        intermediate_size: 8 * 16,
        num_heads: 8,
        head_dim: 16,
        state_size: 16,
        n_groups: 2,
        conv_width: width,
        conv_dtype: st,
        ..Config::default()
    };
    let mut rng = Rng::new(seed);
    let mut cpu = Cache::new(cfg).unwrap();
    let dim = cpu.shape().conv_dim;
    let w = width as usize;
    let init = rng.vec(4 * dim * w, 1.0);
    cpu.set_conv(0, Slots::Dense(4), Slice::F32(&init)).unwrap();
    let slots = [2i32, -1, 1];
    let rows = slots.len();
    let x = rng.vec(rows * dim, 2.0);
    let weight = rng.vec(dim * 4, 0.5);
    let bias = rng.vec(dim, 0.5);
    let s = &gpu.stream;
    let mut dwin: DevBuf = Box::new(up(s, &storage(&cpu, true)));
    let xb = to_bytes(io, &x);
    let xr = from_bytes(io, &xb);
    let mut out_cpu = vec![0f32; rows * dim];
    cpu.conv_step(
        0,
        Slots::List(&slots),
        Slice::F32(&xr),
        SliceMut::F32(&mut out_cpu),
        &ConvParams { weight: &weight, bias: Some(&bias), silu: true },
    )
    .unwrap();
    let out_cpu = from_bytes(io, &to_bytes(io, &out_cpu));
    let dx = up(s, &xb);
    let dout = up(s, &vec![0xFFu8; rows * dim * io.size()]);
    let (dw, db) = (upf(s, &weight), upf(s, &bias));
    let el = |b: &CudaSlice<u8>| DevArray::new(arr(s, b).addr, b.len() / io.size());
    let a =
        DeviceConvArgs { dtype: io, x: el(&dx), out: el(&dout), weight: arr(s, &dw), bias: arr(s, &db), silu: true };
    gpu.conv_step(&cfg, &mut dwin, &slots, &a).unwrap();
    let out_gpu = from_bytes(io, &down(s, &dout));
    let win_gpu = down_buf(s, &dwin);
    let win_cpu = storage(&cpu, true);
    let unwritten = out_gpu.iter().filter(|v| v.is_nan()).count();
    let eo = rel(&out_gpu, &out_cpu);
    // The window only moves stored values and rounds x: exact.
    let ok = eo <= tol(io) && win_gpu == win_cpu && unwritten == 0;
    (
        ok,
        format!(
            "| conv_step | {} | {} | width {width} | - | {} | {eo:.2e} | {unwritten} | {} |",
            st.name(),
            io.name(),
            if win_gpu == win_cpu { "exact" } else { "DIFFERS" },
            if ok { "ok" } else { "FAIL" }
        ),
    )
}
