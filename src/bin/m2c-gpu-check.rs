//! m2c-gpu-check: runs the CUDA kernels on a GPU against the CPU kernels of
//! the same library (every storage/activation dtype pair, 1 and several
//! groups, vector and scalar state rows, both conv widths, padding rows,
//! outputs poisoned beforehand to catch unwritten elements), then times
//! ssm_step and conv_step at Mamba2-2.7B shapes with 8..256 slots beside a
//! device-to-device copy of the same bytes; and the C API on a
//! device-resident cache (`M2C_DEVICE_CUDA`) against a CPU cache: every
//! copy-style call, views, snapshots, files, and the kernel calls on
//! device buffers, prefill with cu_seqlens (against the CPU and, bit for
//! bit, against device steps) and a caller's stream. Built with `--features cuda`; exits 0 only if every
//! check passed. Prints a report (markdown).

use cudarc::driver::{CudaSlice, CudaStream};
use half::{bf16, f16};
use m2c::cuda::{Gpu, SsmDeviceIo, SsmDeviceParams, SsmShape};
use m2c::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c::{Cache, Config, DType, Slice, SliceMut, Slots};
use std::sync::Arc;

struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * s).collect()
    }
}

fn to_bytes(d: DType, v: &[f32]) -> Vec<u8> {
    match d {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BF16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
        DType::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
    }
}

fn from_bytes(d: DType, b: &[u8]) -> Vec<f32> {
    match d {
        DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
        DType::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
    }
}

/// Allowed max |gpu - cpu| / max |cpu| for results stored in `d`: the two
/// sides sum in different orders, so a value near a rounding boundary may
/// round one ulp apart.
fn tol(d: DType) -> f64 {
    match d {
        DType::F32 => 1e-5,
        DType::BF16 => 2.0 * 2f64.powi(-8),
        DType::F16 => 2.0 * 2f64.powi(-11),
    }
}

fn rel(gpu: &[f32], cpu: &[f32]) -> f64 {
    let scale = cpu.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    gpu.iter().zip(cpu).fold(0f64, |m, (g, c)| m.max((*g as f64 - *c as f64).abs())) / scale
}

fn up(s: &Arc<CudaStream>, b: &[u8]) -> CudaSlice<u8> {
    s.clone_htod(b).expect("htod")
}

fn upf(s: &Arc<CudaStream>, b: &[f32]) -> CudaSlice<f32> {
    s.clone_htod(b).expect("htod")
}

fn down(s: &Arc<CudaStream>, d: &CudaSlice<u8>) -> Vec<u8> {
    s.clone_dtoh(d).expect("dtoh")
}

/// Storage bytes of layer 0 (conv or ssm) of a CPU cache.
fn storage(c: &Cache, conv: bool) -> Vec<u8> {
    let l = c.layer(0).unwrap();
    let b = if conv { &l.conv } else { &l.ssm };
    let n = if conv { c.shape().conv_slot_elems } else { c.shape().ssm_slot_elems } * c.num_slots();
    b.bytes()[..n * b.dtype().size()].to_vec()
}

fn check_ssm(gpu: &Gpu, st: DType, io: DType, groups: u32, n: u32, seed: u64) -> (bool, String) {
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
    let mut rng = Rng(seed);
    let mut cpu = Cache::new(cfg).unwrap();
    let init = rng.vec(4 * h * p * nn, 1.0);
    cpu.update_ssm(0, Slots::Dense(4), Slice::F32(&init)).unwrap();
    let slots = [3i32, -1, 0];
    let rows = slots.len();
    let (x, dt, b, c, z) = (rng.vec(rows * h * p, 1.0), rng.vec(rows * h, 2.0), rng.vec(rows * g * nn, 1.0), rng.vec(rows * g * nn, 1.0), rng.vec(rows * h * p, 2.0));
    let a: Vec<f32> = (0..h).map(|i| -0.2 - 0.1 * i as f32).collect();
    let d = rng.vec(h, 1.0);
    let s = &gpu.stream;
    let mut dstate = up(s, &storage(&cpu, false));
    let bx = |v: &[f32]| to_bytes(io, v);
    let (xb, dtb, bb, cb, zb) = (bx(&x), bx(&dt), bx(&b), bx(&c), bx(&z));
    // CPU reference (inputs already rounded to io by the byte conversion).
    let back = |v: &[u8]| from_bytes(io, v);
    let (xr, dtr, br, cr, zr) = (back(&xb), back(&dtb), back(&bb), back(&cb), back(&zb));
    let params = SsmParams { a: &a, d: Some(&d), dt_bias: Some(&d), dt_softplus: true, dt_limit: Some((0.001, 5.0)) };
    let mut y_cpu = vec![0f32; rows * h * p];
    let inp = SsmInputs { x: Slice::F32(&xr), dt: Slice::F32(&dtr), b: Slice::F32(&br), c: Slice::F32(&cr), z: Some(Slice::F32(&zr)) };
    // The CPU takes f32 activations here; rounding y to io afterwards
    // matches a kernel writing io-dtype outputs.
    cpu.ssm_step(0, Slots::List(&slots), &inp, SliceMut::F32(&mut y_cpu), &params).unwrap();
    let y_cpu: Vec<f32> = from_bytes(io, &to_bytes(io, &y_cpu));
    // GPU.
    let (dx, ddt, db, dc, dz) = (up(s, &xb), up(s, &dtb), up(s, &bb), up(s, &cb), up(s, &zb));
    let mut dy = up(s, &vec![0xFFu8; rows * h * p * io.size()]); // NaN poison
    let dslots: CudaSlice<i32> = s.clone_htod(&slots).unwrap();
    let (da, dd) = (upf(s, &a), upf(s, &d));
    let dp = SsmDeviceParams { a: &da, d: Some(&dd), dt_bias: Some(&dd), dt_softplus: true, dt_limit: Some((0.001, 5.0)) };
    let io_dev = SsmDeviceIo { x: &dx, dt: &ddt, b: &db, c: &dc, z: Some(&dz), y: &mut dy };
    gpu.ssm_step(st, io, SsmShape { heads: h, head_dim: p, state_size: nn, groups: g }, &mut dstate, &dslots, rows, io_dev, &dp).unwrap();
    let y_gpu = from_bytes(io, &down(s, &dy));
    let st_gpu = from_bytes(st, &down(s, &dstate));
    let st_cpu = from_bytes(st, &storage(&cpu, false));
    let unwritten = y_gpu.iter().filter(|v| v.is_nan()).count();
    let (es, ey) = (rel(&st_gpu, &st_cpu), rel(&y_gpu, &y_cpu));
    let pad_zero = y_gpu[h * p..2 * h * p].iter().all(|&v| v == 0.0);
    let ok = es <= tol(st) && ey <= tol(io) && unwritten == 0 && pad_zero;
    (ok, format!("| ssm_step | {} | {} | {groups} | {n} | {es:.2e} | {ey:.2e} | {unwritten} | {} |", st.name(), io.name(), if ok { "ok" } else { "FAIL" }))
}

fn check_conv(gpu: &Gpu, st: DType, io: DType, width: u32, seed: u64) -> (bool, String) {
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
    let mut rng = Rng(seed);
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
    let mut dwin = up(s, &storage(&cpu, true));
    let xb = to_bytes(io, &x);
    let xr = from_bytes(io, &xb);
    let mut out_cpu = vec![0f32; rows * dim];
    cpu.conv_step(0, Slots::List(&slots), Slice::F32(&xr), SliceMut::F32(&mut out_cpu), &ConvParams { weight: &weight, bias: Some(&bias), silu: true }).unwrap();
    let out_cpu = from_bytes(io, &to_bytes(io, &out_cpu));
    let dx = up(s, &xb);
    let mut dout = up(s, &vec![0xFFu8; rows * dim * io.size()]);
    let dslots: CudaSlice<i32> = s.clone_htod(&slots).unwrap();
    let (dw, db) = (upf(s, &weight), upf(s, &bias));
    gpu.conv_step(st, io, dim, 4, w, &mut dwin, &dslots, rows, &dx, &mut dout, &dw, Some(&db), true).unwrap();
    let out_gpu = from_bytes(io, &down(s, &dout));
    let win_gpu = down(s, &dwin);
    let win_cpu = storage(&cpu, true);
    let unwritten = out_gpu.iter().filter(|v| v.is_nan()).count();
    let eo = rel(&out_gpu, &out_cpu);
    // The window only moves stored values and rounds x: exact.
    let ok = eo <= tol(io) && win_gpu == win_cpu && unwritten == 0;
    (ok, format!("| conv_step | {} | {} | width {width} | - | {} | {eo:.2e} | {unwritten} | {} |", st.name(), io.name(), if win_gpu == win_cpu { "exact" } else { "DIFFERS" }, if ok { "ok" } else { "FAIL" }))
}

/// Median milliseconds of `f` over `iters` runs timed with CUDA events.
fn time_ms(gpu: &Gpu, iters: usize, mut f: impl FnMut()) -> f64 {
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

fn bench(gpu: &Gpu, st: DType, slots: usize) -> String {
    // One layer of Mamba2-2.7B; f32 activations.
    let (h, p, n, g) = (80usize, 64usize, 128usize, 1usize);
    let s = &gpu.stream;
    let bytes = slots * h * p * n * st.size();
    let mut state: CudaSlice<u8> = s.alloc_zeros(bytes).unwrap();
    let mut copy_dst: CudaSlice<u8> = s.alloc_zeros(bytes).unwrap();
    let sl: Vec<i32> = (0..slots as i32).collect();
    let dslots: CudaSlice<i32> = s.clone_htod(&sl).unwrap();
    let z4 = |len: usize| -> CudaSlice<u8> { s.clone_htod(&to_bytes(DType::F32, &vec![0.01; len])).unwrap() };
    let (dx, ddt, db, dc) = (z4(slots * h * p), z4(slots * h), z4(slots * g * n), z4(slots * g * n));
    let mut dy = z4(slots * h * p);
    let da = upf(s, &vec![-0.5; h]);
    let dp = SsmDeviceParams { a: &da, d: Some(&da), dt_bias: None, dt_softplus: true, dt_limit: None };
    let shape = SsmShape { heads: h, head_dim: p, state_size: n, groups: g };
    let iters = 20;
    let t_ssm = time_ms(gpu, iters, || {
        let io = SsmDeviceIo { x: &dx, dt: &ddt, b: &db, c: &dc, z: None, y: &mut dy };
        gpu.ssm_step(st, DType::F32, shape, &mut state, &dslots, slots, io, &dp).unwrap();
    });
    let t_copy = time_ms(gpu, iters, || {
        s.memcpy_dtod(&state, &mut copy_dst).unwrap();
    });
    // conv at 2.7B: dim 5376, K 4, bf16 window.
    let dim = 5376usize;
    let mut win: CudaSlice<u8> = s.alloc_zeros(slots * dim * 4 * 2).unwrap();
    let cx = z4(slots * dim);
    let mut cout = z4(slots * dim);
    let w = upf(s, &vec![0.1; dim * 4]);
    let t_conv = time_ms(gpu, iters, || {
        gpu.conv_step(DType::BF16, DType::F32, dim, 4, 4, &mut win, &dslots, slots, &cx, &mut cout, &w, None, true).unwrap();
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
fn bench_prefill(gpu: &Gpu, st: DType, seqs: usize, len: usize) -> String {
    let (h, p, n, g) = (80usize, 64usize, 128usize, 1usize);
    let s = &gpu.stream;
    let t = seqs * len;
    let mut state: CudaSlice<u8> = s.alloc_zeros(seqs * h * p * n * st.size()).unwrap();
    let sl: Vec<i32> = (0..seqs as i32).collect();
    let cu: Vec<u64> = (0..=seqs as u64).map(|i| i * len as u64).collect();
    let (dslots, dcu): (CudaSlice<i32>, CudaSlice<u64>) = (s.clone_htod(&sl).unwrap(), s.clone_htod(&cu).unwrap());
    let z4 = |len: usize| -> CudaSlice<u8> { s.clone_htod(&to_bytes(DType::F32, &vec![0.01; len])).unwrap() };
    let (dx, ddt, db, dc) = (z4(t * h * p), z4(t * h), z4(t * g * n), z4(t * g * n));
    let mut dy = z4(t * h * p);
    let da = upf(s, &vec![-0.5; h]);
    let dp = SsmDeviceParams { a: &da, d: Some(&da), dt_bias: None, dt_softplus: true, dt_limit: None };
    let shape = SsmShape { heads: h, head_dim: p, state_size: n, groups: g };
    let t_pre = time_ms(gpu, 5, || {
        let io = SsmDeviceIo { x: &dx, dt: &ddt, b: &db, c: &dc, z: None, y: &mut dy };
        gpu.ssm_prefill(st, DType::F32, shape, &mut state, &dslots, &dcu, seqs, io, &dp).unwrap();
    });
    // The steps reuse the first rows of the buffers: the timing does not
    // depend on the values.
    let t_steps = time_ms(gpu, 5, || {
        for _ in 0..len {
            let io = SsmDeviceIo { x: &dx, dt: &ddt, b: &db, c: &dc, z: None, y: &mut dy };
            gpu.ssm_step(st, DType::F32, shape, &mut state, &dslots, seqs, io, &dp).unwrap();
        }
    });
    format!("| {} | {seqs} x {len} | {:.3} | {:.3} | {:.2} |", st.name(), t_pre, t_steps, t_steps / t_pre)
}

/// One decode token of Mamba2-2.7B (64 layers) through the C API on a
/// device-resident cache: m2c_conv_step and m2c_ssm_step per layer, host
/// wall time per token (median of 10, after a warm-up token), beside a
/// device-to-device copy of every layer's state. The gap to the kernel
/// times above is the per-call overhead (checks, slot upload, launch).
fn bench_api(gpu: &Gpu, st: DType, slots: usize) -> String {
    use m2c::ffi::*;
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
    let (sx, dt, b, c, y, a) = (z(slots * h * p), z(slots * h), z(slots * g * n), z(slots * g * n), z(slots * h * p), upf(s, &vec![-0.5; h]));
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

/// One C API check: its name and whether it passed (with a detail).
type Check = (String, bool, String);

fn status_ok(s: m2c::ffi::m2c_status) -> Result<(), String> {
    if s == m2c::ffi::M2C_STATUS_OK {
        Ok(())
    } else {
        // SAFETY: never NULL, NUL-terminated.
        Err(unsafe { std::ffi::CStr::from_ptr(m2c::ffi::m2c_last_error()) }.to_string_lossy().into_owned())
    }
}

/// The library's default argument structs (`m2c_*_init`), buffers unset.
fn init_structs() -> (m2c::ffi::m2c_conv_args, m2c::ffi::m2c_ssm_args, m2c::ffi::m2c_ssm_io) {
    use m2c::ffi::*;
    let mut ca = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
    let mut sa = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
    let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
    // SAFETY: valid storage, initialised by the calls.
    unsafe {
        m2c_conv_args_init(ca.as_mut_ptr());
        m2c_ssm_args_init(sa.as_mut_ptr());
        m2c_ssm_io_init(io.as_mut_ptr());
        (ca.assume_init(), sa.assume_init(), io.assume_init())
    }
}

/// Device address of a buffer, as the C API takes it.
fn addr<T>(s: &Arc<CudaStream>, b: &CudaSlice<T>) -> usize {
    use cudarc::driver::DevicePtr;
    let (p, _g) = b.device_ptr(s);
    p as usize
}

/// A config for the C API checks: 2 layers, 6 slots, 8 heads of 64 x 128.
fn api_config(st: DType) -> m2c::ffi::m2c_config {
    use m2c::ffi::*;
    let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage, initialised by the call.
    let mut cfg = unsafe {
        m2c_config_init(cfg.as_mut_ptr());
        cfg.assume_init()
    };
    cfg.num_layers = 2;
    cfg.num_slots = 6;
    cfg.intermediate_size = 512;
    cfg.num_heads = 8;
    cfg.head_dim = 64;
    cfg.state_size = 128;
    cfg.n_groups = 2;
    cfg.ssm_dtype = st.code();
    cfg.conv_dtype = DType::BF16.code();
    cfg
}

/// The prefill calls with cu_seqlens on a device cache: one launch per
/// layer against the CPU cache's prefill (within the kernel tolerances)
/// and bit for bit against the same tokens as single steps on a second
/// device cache; then the same step queued on a stream of the caller's
/// (`m2c_set_stream`).
fn check_prefill_api(gpu: &Gpu, st: DType) -> Vec<Check> {
    use m2c::ffi::*;
    let mut out: Vec<Check> = Vec::new();
    let cfg = api_config(st);
    let mut hs = [std::ptr::null_mut(); 3];
    for (i, d) in [M2C_DEVICE_CPU, M2C_DEVICE_CUDA, M2C_DEVICE_CUDA].into_iter().enumerate() {
        let mut c = cfg;
        c.device = d;
        // SAFETY: valid pointers.
        if let Err(e) = status_ok(unsafe { m2c_create(&c, &mut hs[i]) }) {
            out.push((format!("m2c_create (device {d})"), false, e));
            return out;
        }
    }
    let [cpu, dev, steps] = hs;
    let (h, p, n, g) = (8usize, 64usize, 128usize, 2usize);
    let dim = 512 + 2 * g * n;
    let s = &gpu.stream;
    let mut rng = Rng(0x5EED + st.code() as u64);
    // Sequences: slot 3 (5 tokens), padding (2), slot 0 (none), slot 5 (7).
    let slots = [3i32, -1, 0, 5];
    let cu: [u64; 5] = [0, 5, 7, 7, 14];
    let t = cu[4] as usize;
    let state = rng.vec(6 * h * p * n, 0.5);
    let win = rng.vec(6 * dim * 4, 1.0);
    let mut push = |name: &str, r: Result<(), String>| out.push((name.to_string(), r.is_ok(), r.err().unwrap_or_default()));
    let mut init = Ok(());
    for c in hs {
        // SAFETY: valid pointers and lengths (slots NULL: every slot).
        init = init.and_then(|_| unsafe {
            status_ok(m2c_update_ssm(c, 0, std::ptr::null(), 6, state.as_ptr().cast(), M2C_DTYPE_F32, state.len()))
                .and_then(|_| status_ok(m2c_set_conv(c, 0, std::ptr::null(), 6, win.as_ptr().cast(), M2C_DTYPE_F32, win.len())))
        });
    }
    push("same starting state in all three caches", init);
    let x = rng.vec(t * dim, 1.0);
    let w = rng.vec(dim * 4, 0.5);
    let bias = rng.vec(dim, 0.1);
    let (xs, dts, bs, cs, zs) = (rng.vec(t * h * p, 1.0), rng.vec(t * h, 1.0), rng.vec(t * g * n, 1.0), rng.vec(t * g * n, 1.0), rng.vec(t * h * p, 2.0));
    let a_log: Vec<f32> = (0..h).map(|i| -0.25 - 0.25 * i as f32).collect();
    let (dx, dw, db) = (upf(s, &x), upf(s, &w), upf(s, &bias));
    let (dxs, ddt, dbs, dcs, dzs, da) = (upf(s, &xs), upf(s, &dts), upf(s, &bs), upf(s, &cs), upf(s, &zs), upf(s, &a_log));
    // Outputs poisoned, to catch unwritten elements.
    let (mut co, mut y) = (vec![f32::NAN; t * dim], vec![f32::NAN; t * h * p]);
    let (dco, dy) = (upf(s, &co), upf(s, &y));
    let (dco2, dy2) = (upf(s, &co), upf(s, &y));
    let conv_args = |weight: *const f32, bias_p: *const f32| {
        let mut a = init_structs().0;
        a.weight = weight;
        a.weight_len = dim * 4;
        a.bias = bias_p;
        a.bias_len = dim;
        a
    };
    let ssm_args = |a_p: *const f32| {
        let mut a = init_structs().1;
        a.A = a_p;
        a.A_len = h;
        a.D = a_p;
        a.D_len = h;
        a
    };
    // io for token rows t0..t0+rows, f32, at base addresses (host or device).
    let ssm_io = |base: [usize; 6], t0: usize, rows: usize| {
        let mut io = init_structs().2;
        let at = |b: usize, per: usize| (b + 4 * t0 * per) as *const std::ffi::c_void;
        io.x = at(base[0], h * p);
        io.x_len = rows * h * p;
        io.dt = at(base[1], h);
        io.dt_len = rows * h;
        io.B = at(base[2], g * n);
        io.B_len = rows * g * n;
        io.C = at(base[3], g * n);
        io.C_len = rows * g * n;
        io.z = at(base[4], h * p);
        io.z_len = rows * h * p;
        io.y = at(base[5], h * p) as *mut _;
        io.y_len = rows * h * p;
        io
    };
    let host_io = [xs.as_ptr() as usize, dts.as_ptr() as usize, bs.as_ptr() as usize, cs.as_ptr() as usize, zs.as_ptr() as usize, y.as_mut_ptr() as usize];
    let dev_io = |yb: &CudaSlice<f32>| [addr(s, &dxs), addr(s, &ddt), addr(s, &dbs), addr(s, &dcs), addr(s, &dzs), addr(s, yb)];
    let (hw, hb) = (w.as_ptr(), bias.as_ptr());
    let (dwp, dbp, dap) = (addr(s, &dw) as *const f32, addr(s, &db) as *const f32, addr(s, &da) as *const f32);
    // SAFETY (all calls below): valid pointers and lengths, host buffers
    // for the CPU cache and device buffers for the device caches.
    let run = unsafe {
        let ca = conv_args(hw, hb);
        status_ok(m2c_conv_prefill(cpu, 0, slots.as_ptr(), 4, cu.as_ptr(), 5, x.as_ptr().cast(), x.len(), co.as_mut_ptr().cast(), co.len(), &ca))
            .and_then(|_| status_ok(m2c_ssm_prefill(cpu, 0, slots.as_ptr(), 4, cu.as_ptr(), 5, &ssm_io(host_io, 0, t), &ssm_args(a_log.as_ptr()))))
            .and_then(|_| {
                let ca = conv_args(dwp, dbp);
                status_ok(m2c_conv_prefill(dev, 0, slots.as_ptr(), 4, cu.as_ptr(), 5, addr(s, &dx) as *const _, x.len(), addr(s, &dco) as *mut _, co.len(), &ca))
            })
            .and_then(|_| status_ok(m2c_ssm_prefill(dev, 0, slots.as_ptr(), 4, cu.as_ptr(), 5, &ssm_io(dev_io(&dy), 0, t), &ssm_args(dap))))
            .and_then(|_| {
                // The same tokens one step at a time, sequence by sequence.
                let ca = conv_args(dwp, dbp);
                let sa = ssm_args(dap);
                let mut r = Ok(());
                for (i, slot) in slots.iter().enumerate() {
                    for tok in cu[i] as usize..cu[i + 1] as usize {
                        r = r
                            .and_then(|_| {
                                status_ok(m2c_conv_step(steps, 0, slot, 1, (addr(s, &dx) + 4 * tok * dim) as *const _, dim, (addr(s, &dco2) + 4 * tok * dim) as *mut _, dim, &ca))
                            })
                            .and_then(|_| status_ok(m2c_ssm_step(steps, 0, slot, 1, &ssm_io(dev_io(&dy2), tok, 1), &sa)));
                    }
                }
                r
            })
    };
    let read = |c: *mut m2c_cache| -> (Vec<f32>, Vec<f32>) {
        let mut ss = vec![0f32; 6 * h * p * n];
        let mut cw = vec![0f32; 6 * dim * 4];
        // SAFETY: valid pointers and lengths.
        unsafe {
            m2c_read_ssm(c, 0, std::ptr::null(), 6, ss.as_mut_ptr().cast(), M2C_DTYPE_F32, ss.len());
            m2c_read_conv(c, 0, std::ptr::null(), 6, cw.as_mut_ptr().cast(), M2C_DTYPE_F32, cw.len());
        }
        (ss, cw)
    };
    let checked = run.and_then(|_| {
        let (gco, gy) = (s.clone_dtoh(&dco).unwrap(), s.clone_dtoh(&dy).unwrap());
        let ((cs_, cw), (ds, dw_)) = (read(cpu), read(dev));
        let errs = [rel(&gco, &co), rel(&gy, &y), rel(&ds, &cs_), rel(&dw_, &cw)];
        let lim = [tol(DType::F32), tol(st).max(tol(DType::F32)), tol(st), tol(DType::BF16)];
        let padding_zero = gco[5 * dim..7 * dim].iter().chain(&gy[5 * h * p..7 * h * p]).all(|v| *v == 0.0);
        if gco.iter().chain(&gy).any(|v| v.is_nan()) {
            Err("an output element was left unwritten (NaN poison)".into())
        } else if !padding_zero {
            Err("padding rows are not zero".into())
        } else if errs.iter().zip(lim).any(|(e, l)| e.is_nan() || *e > l) {
            Err(format!("rel err conv out {:.2e}, y {:.2e}, state {:.2e}, window {:.2e}", errs[0], errs[1], errs[2], errs[3]))
        } else {
            Ok(())
        }
    });
    push("m2c_conv_prefill + m2c_ssm_prefill (one launch each) vs CPU prefill", checked);
    let same = (|| {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&s.clone_dtoh(&dco).unwrap()) != bits(&s.clone_dtoh(&dco2).unwrap()) || bits(&s.clone_dtoh(&dy).unwrap()) != bits(&s.clone_dtoh(&dy2).unwrap()) {
            return Err("outputs differ".to_string());
        }
        let ((a1, b1), (a2, b2)) = (read(dev), read(steps));
        if bits(&a1) != bits(&a2) || bits(&b1) != bits(&b2) {
            return Err("states differ".to_string());
        }
        Ok(())
    })();
    push("device prefill bit-identical to the same tokens as device steps", same);
    // A stream of the caller's: the step is queued there, reads wait for it.
    let streamed = (|| {
        let stream = gpu.ctx.new_stream().map_err(|e| e.to_string())?;
        let before = read(dev).0;
        let ca = conv_args(dwp, dbp);
        // SAFETY: a live stream of this device's primary context, kept
        // alive until the cache is back on the default stream.
        unsafe {
            status_ok(m2c_set_stream(dev, stream.cu_stream().cast()))?;
            status_ok(m2c_set_stream(steps, stream.cu_stream().cast()))?;
            let sa = ssm_args(dap);
            for c in [dev, steps] {
                status_ok(m2c_ssm_step(c, 0, slots.as_ptr(), 4, &ssm_io(dev_io(if c == dev { &dy } else { &dy2 }), 0, 4), &sa))?;
                status_ok(m2c_conv_step(c, 0, slots.as_ptr(), 4, addr(s, &dx) as *const _, 4 * dim, addr(s, &dco) as *mut _, 4 * dim, &ca))?;
            }
        }
        let (after, other) = (read(dev).0, read(steps).0);
        // SAFETY: NULL selects the default stream again.
        unsafe {
            status_ok(m2c_set_stream(dev, std::ptr::null_mut()))?;
            status_ok(m2c_set_stream(steps, std::ptr::null_mut()))?;
        }
        if after == before {
            Err("the state did not change".into())
        } else if after.iter().zip(&other).any(|(a, b)| a.to_bits() != b.to_bits()) {
            Err("two caches given the same step on the stream differ".into())
        } else {
            Ok(())
        }
    })();
    push("m2c_set_stream: steps queued on a caller's stream, reads see them", streamed);
    // A CUDA graph: one step of each kernel captured on a caller's stream
    // (global capture mode, as PyTorch uses), replayed twice, against two
    // direct steps on the other cache (the two caches hold the same state
    // after the checks above).
    let graphed = (|| {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        s.synchronize().map_err(|e| e.to_string())?;
        let stream = gpu.ctx.new_stream().map_err(|e| e.to_string())?;
        let ca = conv_args(dwp, dbp);
        let sa = ssm_args(dap);
        let step = |c: *mut m2c_cache, y: &CudaSlice<f32>, co: &CudaSlice<f32>| -> Result<(), String> {
            // SAFETY: device buffers of the declared lengths.
            unsafe {
                status_ok(m2c_ssm_step(c, 0, slots.as_ptr(), 4, &ssm_io(dev_io(y), 0, 4), &sa))?;
                status_ok(m2c_conv_step(c, 0, slots.as_ptr(), 4, addr(s, &dx) as *const _, 4 * dim, addr(s, co) as *mut _, 4 * dim, &ca))
            }
        };
        // SAFETY: a live stream of this context, kept alive until both
        // caches are back on the default stream.
        unsafe {
            status_ok(m2c_set_stream(dev, stream.cu_stream().cast()))?;
            status_ok(m2c_set_stream(steps, stream.cu_stream().cast()))?;
        }
        let run = (|| -> Result<(), String> {
            step(steps, &dy2, &dco2)?;
            step(steps, &dy2, &dco2)?;
            stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL).map_err(|e| e.to_string())?;
            let captured = step(dev, &dy, &dco);
            let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| e.to_string())?;
            captured.map_err(|e| format!("during capture: {e}"))?;
            let graph = graph.ok_or("empty graph")?;
            graph.launch().map_err(|e| e.to_string())?;
            graph.launch().map_err(|e| e.to_string())?;
            stream.synchronize().map_err(|e| e.to_string())
        })();
        // SAFETY: NULL selects the default stream again.
        unsafe {
            m2c_set_stream(dev, std::ptr::null_mut());
            m2c_set_stream(steps, std::ptr::null_mut());
        }
        run?;
        let ((a1, b1), (a2, b2)) = (read(dev), read(steps));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&a1) != bits(&a2) || bits(&b1) != bits(&b2) {
            return Err("the replayed graph's states differ from two direct steps".into());
        }
        Ok(())
    })();
    push("CUDA graph capture of conv_step + ssm_step (global mode), replayed twice", graphed);
    // SAFETY: live handles, destroyed once.
    unsafe {
        for c in hs {
            m2c_destroy(c);
        }
    }
    out
}

/// A batch past the launch parameters' inline slot table (300 rows and
/// 300 sequences, so the slots and offsets are uploaded): the device cache
/// against the CPU cache, a step and a prefill, all outputs poisoned first.
fn check_large_batch(gpu: &Gpu) -> Vec<Check> {
    use m2c::ffi::*;
    let rows = 300usize;
    let mut cfg = api_config(DType::F32);
    (cfg.num_layers, cfg.num_slots, cfg.intermediate_size) = (1, rows as u32, 64);
    (cfg.num_heads, cfg.head_dim, cfg.state_size, cfg.n_groups) = (4, 16, 32, 1);
    cfg.conv_dtype = DType::F32.code();
    let (h, p, n, g, dim) = (4usize, 16usize, 32usize, 1usize, 64 + 2 * 32);
    let mut hs = [std::ptr::null_mut(); 2];
    for (i, d) in [M2C_DEVICE_CPU, M2C_DEVICE_CUDA].into_iter().enumerate() {
        let mut c = cfg;
        c.device = d;
        // SAFETY: valid pointers.
        if let Err(e) = status_ok(unsafe { m2c_create(&c, &mut hs[i]) }) {
            return vec![(format!("m2c_create (device {d}, {rows} slots)"), false, e)];
        }
    }
    let [cpu, dev] = hs;
    let s = &gpu.stream;
    let mut rng = Rng(0xB16);
    let state = rng.vec(rows * h * p * n, 0.5);
    // Rows in reverse slot order, one padding row.
    let mut slots: Vec<i32> = (0..rows as i32).rev().collect();
    slots[7] = -1;
    let cu: Vec<u64> = (0..=rows as u64).map(|i| i + i / 2).collect();
    let w = rng.vec(dim * 4, 0.5);
    let a_log: Vec<f32> = (0..h).map(|i| -0.5 - 0.25 * i as f32).collect();
    let (dw, da) = (upf(s, &w), upf(s, &a_log));
    let mut out: Vec<Check> = Vec::new();
    for (what, t, cu) in [("step", rows, None), ("prefill", cu[rows] as usize, Some(&cu))] {
        let x = rng.vec(t * dim, 1.0);
        let (sx, dt, b, c) = (rng.vec(t * h * p, 1.0), rng.vec(t * h, 1.0), rng.vec(t * g * n, 1.0), rng.vec(t * g * n, 1.0));
        let (dx, dsx, ddt, db, dc) = (upf(s, &x), upf(s, &sx), upf(s, &dt), upf(s, &b), upf(s, &c));
        let (mut co, mut y) = (vec![f32::NAN; t * dim], vec![f32::NAN; t * h * p]);
        let (dco, dy) = (upf(s, &co), upf(s, &y));
        let mut run = |c_: *mut m2c_cache, on_dev: bool| -> Result<(), String> {
            let ad = |host: *const f32, d: &CudaSlice<f32>| if on_dev { addr(s, d) as *const f32 } else { host };
            let (mut ca, mut sa, mut io) = init_structs();
            // SAFETY: valid pointers of the declared lengths (host buffers
            // for the CPU cache, device buffers for the GPU's).
            unsafe {
                (ca.weight, ca.weight_len) = (ad(w.as_ptr(), &dw), w.len());
                (sa.A, sa.A_len) = (ad(a_log.as_ptr(), &da), h);
                (io.x, io.x_len, io.dt, io.dt_len) = (ad(sx.as_ptr(), &dsx).cast(), sx.len(), ad(dt.as_ptr(), &ddt).cast(), dt.len());
                (io.B, io.B_len, io.C, io.C_len) = (ad(b.as_ptr(), &db).cast(), b.len(), ad(c.as_ptr(), &dc).cast(), c.len());
                (io.y, io.y_len) = (ad(y.as_mut_ptr(), &dy) as *mut _, y.len());
                let (xp, op) = (ad(x.as_ptr(), &dx).cast(), ad(co.as_mut_ptr(), &dco) as *mut _);
                status_ok(m2c_update_ssm(c_, 0, std::ptr::null(), rows, state.as_ptr().cast(), M2C_DTYPE_F32, state.len()))?;
                match cu {
                    None => {
                        status_ok(m2c_conv_step(c_, 0, slots.as_ptr(), rows, xp, x.len(), op, co.len(), &ca))?;
                        status_ok(m2c_ssm_step(c_, 0, slots.as_ptr(), rows, &io, &sa))
                    }
                    Some(cu) => {
                        status_ok(m2c_conv_prefill(c_, 0, slots.as_ptr(), rows, cu.as_ptr(), cu.len(), xp, x.len(), op, co.len(), &ca))?;
                        status_ok(m2c_ssm_prefill(c_, 0, slots.as_ptr(), rows, cu.as_ptr(), cu.len(), &io, &sa))
                    }
                }
            }
        };
        let checked = run(cpu, false).and_then(|_| run(dev, true)).and_then(|_| {
            let (gco, gy) = (s.clone_dtoh(&dco).unwrap(), s.clone_dtoh(&dy).unwrap());
            let read = |c_: *mut m2c_cache| {
                let mut v = vec![0f32; rows * h * p * n];
                // SAFETY: valid pointers and lengths.
                unsafe { m2c_read_ssm(c_, 0, std::ptr::null(), rows, v.as_mut_ptr().cast(), M2C_DTYPE_F32, v.len()) };
                v
            };
            let errs = [rel(&gco, &co), rel(&gy, &y), rel(&read(dev), &read(cpu))];
            if gco.iter().chain(&gy).any(|v| v.is_nan()) {
                Err("an output element was left unwritten (NaN poison)".into())
            } else if errs.iter().any(|e| e.is_nan() || *e > tol(DType::F32)) {
                Err(format!("rel err conv out {:.2e}, y {:.2e}, state {:.2e}", errs[0], errs[1], errs[2]))
            } else {
                Ok(())
            }
        });
        out.push((format!("{rows}-row {what} (slot table uploaded, not inline)"), checked.is_ok(), checked.err().unwrap_or_default()));
    }
    // SAFETY: live handles, destroyed once.
    unsafe {
        m2c_destroy(cpu);
        m2c_destroy(dev);
    }
    out
}

/// The C API on a device cache, call by call against a CPU cache fed the
/// same inputs (kernel inputs uploaded to device buffers for the device
/// cache). States are compared exactly where no kernel ran on them, within
/// the kernel tolerances where one did.
fn check_api(gpu: &Gpu, st: DType) -> Vec<Check> {
    use m2c::ffi::*;
    let mut out: Vec<Check> = Vec::new();
    let cfg = api_config(st);
    let mut handles = [std::ptr::null_mut(); 2];
    for (i, dev) in [M2C_DEVICE_CPU, M2C_DEVICE_CUDA].into_iter().enumerate() {
        let mut c = cfg;
        c.device = dev;
        // SAFETY: valid pointers.
        if let Err(e) = status_ok(unsafe { m2c_create(&c, &mut handles[i]) }) {
            out.push((format!("m2c_create (device {dev})"), false, e));
            return out;
        }
    }
    let [cpu, dev] = handles;
    let (h, p, n, g) = (8usize, 64usize, 128usize, 2usize);
    let dim = 512 + 2 * g * n;
    let per_slot = h * p * n;
    let mut rng = Rng(0xC0FFEE + st.code() as u64);
    let slots = [4i32, -1, 1, 0];
    let rows = slots.len();
    let s = &gpu.stream;
    let mut push = |name: &str, r: Result<(), String>| out.push((name.to_string(), r.is_ok(), r.err().unwrap_or_default()));
    // Copy-style calls (host buffers in and out).
    let state = rng.vec(rows * per_slot, 0.5);
    let win = rng.vec(rows * dim * 4, 1.0);
    let both = |f: &dyn Fn(*mut m2c_cache) -> m2c_status| -> Result<(), String> {
        status_ok(f(cpu))?;
        status_ok(f(dev))
    };
    // SAFETY (all calls below): valid pointers and lengths.
    push("m2c_update_ssm", both(&|c| unsafe { m2c_update_ssm(c, 1, slots.as_ptr(), rows, state.as_ptr().cast(), M2C_DTYPE_F32, state.len()) }));
    push("m2c_set_conv", both(&|c| unsafe { m2c_set_conv(c, 1, slots.as_ptr(), rows, win.as_ptr().cast(), M2C_DTYPE_F32, win.len()) }));
    let read = |c: *mut m2c_cache, layer: u32| -> (Vec<f32>, Vec<f32>) {
        let mut ss = vec![0f32; 6 * per_slot];
        let mut cs = vec![0f32; 6 * dim * 4];
        unsafe {
            m2c_read_ssm(c, layer, std::ptr::null(), 6, ss.as_mut_ptr().cast(), M2C_DTYPE_F32, ss.len());
            m2c_read_conv(c, layer, std::ptr::null(), 6, cs.as_mut_ptr().cast(), M2C_DTYPE_F32, cs.len());
        }
        (ss, cs)
    };
    let exact = |what: &str| -> Result<(), String> {
        for l in 0..2 {
            if read(cpu, l) != read(dev, l) {
                return Err(format!("{what}: states differ in layer {l}"));
            }
        }
        Ok(())
    };
    push("read back after update/set (exact)", exact("update"));
    let (src, dst) = ([1i32, 4, 0], [4i32, 0, 5]);
    push("m2c_copy_slots (overlapping)", both(&|c| unsafe { m2c_copy_slots(c, src.as_ptr(), dst.as_ptr(), 3) }).and_then(|_| exact("copy_slots")));
    let mut snap_ok = Err("not run".to_string());
    unsafe {
        let mut size = 0usize;
        if status_ok(m2c_slot_snapshot_size(dev, &mut size)).is_ok() {
            let mut b = vec![0u8; size];
            let mut w = 0usize;
            snap_ok = status_ok(m2c_slot_save(dev, 4, b.as_mut_ptr().cast(), b.len(), &mut w))
                .and_then(|_| status_ok(m2c_slot_load(cpu, 2, b.as_ptr().cast(), w)))
                .and_then(|_| status_ok(m2c_slot_load(dev, 2, b.as_ptr().cast(), w)))
                .and_then(|_| exact("snapshot"));
        }
    }
    push("m2c_slot_save (device) -> m2c_slot_load (both)", snap_ok);
    let path = std::env::temp_dir().join(format!("m2c-gpu-check-{}.m2c", std::process::id()));
    let cpath = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    push(
        "m2c_save_file (device) -> m2c_load_file (both)",
        unsafe { status_ok(m2c_save_file(dev, cpath.as_ptr())) }
            .and_then(|_| both(&|c| unsafe { m2c_load_file(c, cpath.as_ptr()) }))
            .and_then(|_| exact("files")),
    );
    let _ = std::fs::remove_file(&path);
    let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    push(
        "m2c_ssm_view returns a device pointer",
        unsafe { status_ok(m2c_ssm_view(dev, 1, t.as_mut_ptr())) }.and_then(|_| {
            let t = unsafe { t.assume_init() };
            if t.device == M2C_DEVICE_CUDA && !t.data.is_null() { Ok(()) } else { Err(format!("device {} data {:?}", t.device, t.data)) }
        }),
    );
    // Kernel calls: host buffers for the CPU cache, device buffers for the GPU one.
    let x = rng.vec(rows * dim, 1.0);
    let w = rng.vec(dim * 4, 0.5);
    let bias = rng.vec(dim, 0.1);
    let (dx, dw, db) = (upf(s, &x), upf(s, &w), upf(s, &bias));
    let mut dout = upf(s, &vec![f32::NAN; rows * dim]);
    let mut co = vec![f32::NAN; rows * dim];
    let mut conv_ok = unsafe {
        let mut a = init_structs().0;
        a.weight = w.as_ptr();
        a.weight_len = w.len();
        a.bias = bias.as_ptr();
        a.bias_len = bias.len();
        status_ok(m2c_conv_step(cpu, 1, slots.as_ptr(), rows, x.as_ptr().cast(), x.len(), co.as_mut_ptr().cast(), co.len(), &a)).and_then(|_| {
            use cudarc::driver::{DevicePtr, DevicePtrMut};
            let (xp, _g1) = dx.device_ptr(s);
            let (wp, _g2) = dw.device_ptr(s);
            let (bp, _g3) = db.device_ptr(s);
            let (op, _g4) = dout.device_ptr_mut(s);
            a.weight = wp as usize as *const f32;
            a.bias = bp as usize as *const f32;
            status_ok(m2c_conv_step(dev, 1, slots.as_ptr(), rows, xp as usize as *const _, x.len(), op as usize as *mut _, co.len(), &a))
        })
    };
    if conv_ok.is_ok() {
        let got = s.clone_dtoh(&dout).unwrap();
        let e = rel(&got, &co);
        if got.iter().any(|v| v.is_nan()) || e.is_nan() || e > tol(DType::F32) {
            conv_ok = Err(format!("conv outputs differ: rel err {e:.2e}"));
        }
    }
    push("m2c_conv_step on device buffers", conv_ok);
    let (xs, dts, bs, cs, zs) = (rng.vec(rows * h * p, 1.0), rng.vec(rows * h, 1.0), rng.vec(rows * g * n, 1.0), rng.vec(rows * g * n, 1.0), rng.vec(rows * h * p, 2.0));
    let a_log: Vec<f32> = (0..h).map(|i| -0.25 - 0.25 * i as f32).collect();
    let (dxs, ddt, dbs, dcs, dzs, da) = (upf(s, &xs), upf(s, &dts), upf(s, &bs), upf(s, &cs), upf(s, &zs), upf(s, &a_log));
    let mut dy = upf(s, &vec![f32::NAN; rows * h * p]);
    let mut y = vec![f32::NAN; rows * h * p];
    let mut ssm_ok = unsafe {
        let (_, mut a, mut io) = init_structs();
        a.A = a_log.as_ptr();
        a.A_len = h;
        a.D = a_log.as_ptr();
        a.D_len = h;
        io.x = xs.as_ptr().cast();
        io.x_len = xs.len();
        io.dt = dts.as_ptr().cast();
        io.dt_len = dts.len();
        io.B = bs.as_ptr().cast();
        io.B_len = bs.len();
        io.C = cs.as_ptr().cast();
        io.C_len = cs.len();
        io.z = zs.as_ptr().cast();
        io.z_len = zs.len();
        io.y = y.as_mut_ptr().cast();
        io.y_len = y.len();
        status_ok(m2c_ssm_step(cpu, 1, slots.as_ptr(), rows, &io, &a)).and_then(|_| {
            use cudarc::driver::{DevicePtr, DevicePtrMut};
            let addr = |b: &CudaSlice<f32>| {
                let (p, _g) = b.device_ptr(s);
                p as usize
            };
            a.A = addr(&da) as *const f32;
            a.D = a.A;
            io.x = addr(&dxs) as *const _;
            io.dt = addr(&ddt) as *const _;
            io.B = addr(&dbs) as *const _;
            io.C = addr(&dcs) as *const _;
            io.z = addr(&dzs) as *const _;
            let (yp, _g) = dy.device_ptr_mut(s);
            io.y = yp as usize as *mut _;
            status_ok(m2c_ssm_step(dev, 1, slots.as_ptr(), rows, &io, &a))
        })
    };
    if ssm_ok.is_ok() {
        let got = s.clone_dtoh(&dy).unwrap();
        let (e, (sc, sd)) = (rel(&got, &y), (read(cpu, 1).0, read(dev, 1).0));
        let es = rel(&sd, &sc);
        if got.iter().any(|v| v.is_nan()) || e.is_nan() || es.is_nan() || e > tol(st).max(tol(DType::F32)) || es > tol(st) {
            ssm_ok = Err(format!("y rel err {e:.2e}, state rel err {es:.2e}"));
        }
    }
    push("m2c_ssm_step on device buffers (y and state)", ssm_ok);
    // A host pointer, and a device buffer shorter than declared, are refused
    // before anything runs.
    let refused = unsafe {
        let mut a = init_structs().0;
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let (wp, _g1) = dw.device_ptr(s);
        let (op, _g2) = dout.device_ptr_mut(s);
        a.weight = wp as usize as *const f32;
        a.weight_len = w.len();
        let host_x = m2c_conv_step(dev, 1, slots.as_ptr(), rows, x.as_ptr().cast(), x.len(), op as usize as *mut _, co.len(), &a);
        let short = upf(s, &x[..x.len() - 16]);
        let (sp, _g3) = short.device_ptr(s);
        let short_x = m2c_conv_step(dev, 1, slots.as_ptr(), rows, sp as usize as *const _, x.len(), op as usize as *mut _, co.len(), &a);
        // A short buffer is caught only as far as CUDA reports allocation
        // ranges (a stream-ordered pool may report the pool's): recorded.
        println!("<!-- short device buffer: status {short_x} (3 = INVALID_ARG) -->");
        if host_x == M2C_STATUS_INVALID_ARG {
            Ok(())
        } else {
            Err(format!("host pointer: status {host_x}"))
        }
    };
    push("host pointer refused (INVALID_ARG)", refused);
    let mut nf = [0u64; 2];
    push(
        "m2c_reset + m2c_check_finite",
        both(&|c| unsafe { m2c_reset(c, [0i32, 4].as_ptr(), 2) })
            .and_then(|_| unsafe { status_ok(m2c_check_finite(dev, 4, &mut nf[0])) })
            .and_then(|_| {
                let (sd, _) = read(dev, 1);
                if nf[0] == 0 && sd[4 * per_slot..5 * per_slot].iter().all(|v| *v == 0.0) { Ok(()) } else { Err("slot 4 not zeroed".into()) }
            }),
    );
    // SAFETY: live handles, destroyed once.
    unsafe {
        m2c_destroy(cpu);
        m2c_destroy(dev);
    }
    out
}

fn main() {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("m2c-gpu-check: {e}");
            std::process::exit(2);
        }
    };
    let mut v = 0i32;
    // SAFETY: writes one int; the driver library is loaded (Gpu::new).
    let driver = match unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) } {
        cudarc::driver::sys::cudaError_enum::CUDA_SUCCESS => format!("{}.{}", v / 1000, (v % 1000) / 10),
        _ => "?".into(),
    };
    println!("# m2c GPU check\n\ndevice: {} (compute {}.{}), CUDA driver API {driver}, kernels compiled by NVRTC at run time\n", gpu.name, gpu.cc.0, gpu.cc.1);
    println!("## Correctness against the CPU kernels\n");
    println!("| kernel | state | io | groups/width | N | state err | out err | unwritten | result |\n|---|---|---|---|---|---|---|---|---|");
    let mut all_ok = true;
    let mut seed = 1;
    for st in DType::ALL {
        for io in DType::ALL {
            for (groups, n) in [(1, 128), (2, 20), (4, 64)] {
                let (ok, line) = check_ssm(&gpu, st, io, groups, n, seed);
                seed += 1;
                all_ok &= ok;
                println!("{line}");
            }
            for width in [4, 3] {
                let (ok, line) = check_conv(&gpu, st, io, width, seed);
                seed += 1;
                all_ok &= ok;
                println!("{line}");
            }
        }
    }
    println!("\n## The C API on a device-resident cache (M2C_DEVICE_CUDA) against a CPU cache\n");
    println!("| ssm state | call | result | detail |\n|---|---|---|---|");
    for st in [DType::F32, DType::BF16] {
        for (name, ok, detail) in check_api(&gpu, st).into_iter().chain(check_prefill_api(&gpu, st)) {
            all_ok &= ok;
            println!("| {} | {name} | {} | {detail} |", st.name(), if ok { "ok" } else { "FAILED" });
        }
    }
    for (name, ok, detail) in check_large_batch(&gpu) {
        all_ok &= ok;
        println!("| f32 | {name} | {} | {detail} |", if ok { "ok" } else { "FAILED" });
    }
    println!("\n## Speed: one layer of Mamba2-2.7B (80 heads x 64 x 128), f32 activations, median of 20 (CUDA events)\n");
    println!("| state | slots | state MB | ssm_step ms | ssm GB/s | D2D copy ms | copy GB/s | ssm vs copy | conv_step us (bf16 window) |\n|---|---|---|---|---|---|---|---|---|");
    for st in [DType::F32, DType::BF16] {
        for slots in [8, 32, 64, 128, 256] {
            println!("{}", bench(&gpu, st, slots));
        }
    }
    println!("\nGB/s = state bytes / time (each byte read once and written once, like the copy); 'ssm vs copy' = copy time / ssm time.");
    println!("\n## Prefill: one launch per call vs the same tokens as decode steps (one 2.7B layer, median of 5)\n");
    println!("| state | sequences x tokens | ssm_prefill ms | as steps ms | speedup |\n|---|---|---|---|---|");
    for st in [DType::F32, DType::BF16] {
        for (seqs, len) in [(1, 512), (8, 128), (32, 32)] {
            println!("{}", bench_prefill(&gpu, st, seqs, len));
        }
    }
    println!("\n## One decode token through the C API on a device cache (Mamba2-2.7B, 64 layers; conv_step + ssm_step per layer; host wall time, median of 10)\n");
    println!("| state | slots | state MB | ms per token | D2D copy of the state ms | copy / token |\n|---|---|---|---|---|---|");
    for st in [DType::F32, DType::BF16] {
        for slots in [8, 64] {
            println!("{}", bench_api(&gpu, st, slots));
        }
    }
    println!("\nresult: {}", if all_ok { "all checks passed" } else { "SOME CHECKS FAILED" });
    std::process::exit(if all_ok { 0 } else { 1 });
}
