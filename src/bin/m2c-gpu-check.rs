//! m2c-gpu-check: runs the CUDA kernels on a GPU against the CPU kernels of
//! the same library (every storage/activation dtype pair, 1 and several
//! groups, vector and scalar state rows, both conv widths, padding rows,
//! outputs poisoned beforehand to catch unwritten elements), then times
//! ssm_step and conv_step at Mamba2-2.7B shapes with 8..256 slots beside a
//! device-to-device copy of the same bytes. Built with `--features cuda`;
//! exits 0 only if every check passed. Prints a report (markdown).

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
    println!("\n## Speed: one layer of Mamba2-2.7B (80 heads x 64 x 128), f32 activations, median of 20 (CUDA events)\n");
    println!("| state | slots | state MB | ssm_step ms | ssm GB/s | D2D copy ms | copy GB/s | ssm vs copy | conv_step us (bf16 window) |\n|---|---|---|---|---|---|---|---|---|");
    for st in [DType::F32, DType::BF16] {
        for slots in [8, 32, 64, 128, 256] {
            println!("{}", bench(&gpu, st, slots));
        }
    }
    println!("\nGB/s = state bytes / time (each byte read once and written once, like the copy); 'ssm vs copy' = copy time / ssm time.");
    println!("\nresult: {}", if all_ok { "all checks passed" } else { "SOME CHECKS FAILED" });
    std::process::exit(if all_ok { 0 } else { 1 });
}
