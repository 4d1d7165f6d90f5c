//! m2c-bench: drives libm2c through its C ABI on a Mamba2 shape and prints
//! what each state operation costs per decode token, beside a memcpy of the
//! same bytes measured in the same run.
//!
//! Usage: m2c-bench [--model 130m|2.7b] [--slots N] [--layers N]
//!                  [--conv-dtype f32|bf16|f16] [--ssm-dtype f32|bf16|f16]
//!                  [--width k|k-1] [--iters N]
//! The thread pool size follows RAYON_NUM_THREADS (default: all cores).

use m2c::ffi::*;
use std::ffi::CStr;
use std::hint::black_box;
use std::process::ExitCode;
use std::ptr;
use std::time::Instant;

struct Args {
    model: String,
    slots: u32,
    layers: Option<u32>,
    conv_dtype: m2c_dtype,
    ssm_dtype: m2c_dtype,
    width_k: bool,
    iters: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: m2c-bench [--model 130m|2.7b] [--slots N] [--layers N] \
         [--conv-dtype f32|bf16|f16] [--ssm-dtype f32|bf16|f16] [--width k|k-1] [--iters N]"
    );
    std::process::exit(2)
}

fn dtype(s: &str) -> m2c_dtype {
    match s {
        "f32" => M2C_DTYPE_F32,
        "bf16" => M2C_DTYPE_BF16,
        "f16" => M2C_DTYPE_F16,
        _ => usage(),
    }
}

fn dtype_name(d: m2c_dtype) -> &'static str {
    ["f32", "bf16", "f16"][d as usize]
}

fn dsize(d: m2c_dtype) -> usize {
    if d == M2C_DTYPE_F32 {
        4
    } else {
        2
    }
}

fn parse() -> Args {
    let mut a = Args {
        model: "130m".into(),
        slots: 8,
        layers: None,
        conv_dtype: M2C_DTYPE_BF16,
        ssm_dtype: M2C_DTYPE_F32,
        width_k: true,
        iters: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--model" => a.model = val(),
            "--slots" => a.slots = val().parse().unwrap_or_else(|_| usage()),
            "--layers" => a.layers = Some(val().parse().unwrap_or_else(|_| usage())),
            "--conv-dtype" => a.conv_dtype = dtype(&val()),
            "--ssm-dtype" => a.ssm_dtype = dtype(&val()),
            "--width" => {
                a.width_k = match val().as_str() {
                    "k" => true,
                    "k-1" => false,
                    _ => usage(),
                }
            }
            "--iters" => a.iters = val().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    a
}

fn check(s: m2c_status, what: &str) {
    if s != M2C_STATUS_OK {
        // SAFETY: never NULL.
        let msg = unsafe { CStr::from_ptr(m2c_last_error()) }.to_string_lossy();
        eprintln!("m2c-bench: {what} failed ({s}): {msg}");
        std::process::exit(1);
    }
}

/// Median seconds of `f` over `iters` runs, after warm-up runs.
fn median_secs(iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Median time of a single-threaded memcpy of `bytes` bytes between two
/// buffers that were touched first.
fn memcpy_secs(bytes: usize, iters: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    median_secs(iters, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    })
}

fn row(name: &str, secs: f64, bytes: usize, copy_secs: f64) {
    println!(
        "{:<28} {:>10.3} {:>10.2} {:>10.2} {:>9.2}x",
        name,
        secs * 1e3,
        bytes as f64 / secs / 1e9,
        bytes as f64 / copy_secs / 1e9,
        copy_secs / secs
    );
}

fn main() -> ExitCode {
    let a = parse();
    let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage.
    unsafe { m2c_config_init(cfg.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut cfg = unsafe { cfg.assume_init() };
    match a.model.as_str() {
        "130m" => {}
        "2.7b" => {
            cfg.num_layers = 64;
            cfg.intermediate_size = 5120;
            cfg.num_heads = 80;
        }
        _ => usage(),
    }
    cfg.num_slots = a.slots;
    if let Some(l) = a.layers {
        cfg.num_layers = l;
    }
    cfg.conv_dtype = a.conv_dtype;
    cfg.ssm_dtype = a.ssm_dtype;
    cfg.conv_width = if a.width_k { cfg.conv_kernel_size } else { cfg.conv_kernel_size - 1 };

    let mut cache = ptr::null_mut();
    // SAFETY: valid pointers.
    check(unsafe { m2c_create(&cfg, &mut cache) }, "m2c_create");
    let mut total = 0u64;
    // SAFETY: valid pointers.
    check(unsafe { m2c_config_bytes(&cfg, &mut total) }, "m2c_config_bytes");

    let n = a.slots as usize;
    let layers = cfg.num_layers;
    let conv_dim = (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize;
    let w = cfg.conv_width as usize;
    let ssm_per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let conv_bytes = layers as usize * n * conv_dim * w * dsize(a.conv_dtype);
    let ssm_bytes = layers as usize * n * ssm_per * dsize(a.ssm_dtype);
    let big = ssm_bytes > (1 << 30);
    let iters = if a.iters > 0 { a.iters } else if big { 7 } else { 31 };

    let threads = rayon::current_num_threads();
    println!(
        "m2c-bench {}: Mamba2-{} shapes, {} layers, {} slots, conv {} [{}x{}], ssm {} [{}x{}x{}], {:.1} MB of state, {} threads, median of {} runs",
        // SAFETY: static string.
        unsafe { CStr::from_ptr(m2c_version()) }.to_string_lossy(),
        a.model,
        layers,
        n,
        dtype_name(a.conv_dtype),
        conv_dim,
        w,
        dtype_name(a.ssm_dtype),
        cfg.num_heads,
        cfg.head_dim,
        cfg.state_size,
        total as f64 / 1e6,
        threads,
        iters
    );

    // Inputs in the storage dtype (what an engine in that precision feeds);
    // all-zero bit patterns are valid in every dtype.
    let x = vec![0u8; n * conv_dim * dsize(a.conv_dtype)];
    let state = vec![0x3Cu8; n * ssm_per * dsize(a.ssm_dtype)];

    let t_conv = median_secs(iters, || {
        for l in 0..layers {
            // SAFETY: valid pointers and lengths.
            check(
                unsafe { m2c_update_conv(cache, l, ptr::null(), n, x.as_ptr().cast(), a.conv_dtype, n * conv_dim) },
                "m2c_update_conv",
            );
        }
    });
    let t_ssm = median_secs(iters, || {
        for l in 0..layers {
            // SAFETY: valid pointers and lengths.
            check(
                unsafe { m2c_update_ssm(cache, l, ptr::null(), n, state.as_ptr().cast(), a.ssm_dtype, n * ssm_per) },
                "m2c_update_ssm",
            );
        }
    });
    let t_reset = median_secs(iters, || {
        // SAFETY: valid pointers.
        check(unsafe { m2c_reset(cache, ptr::null(), n) }, "m2c_reset");
    });
    let c_conv = memcpy_secs(conv_bytes, iters);
    let c_ssm = memcpy_secs(ssm_bytes, iters);
    let c_all = memcpy_secs(conv_bytes + ssm_bytes, iters);

    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10}",
        "operation (all layers)", "ms/token", "GB/s", "memcpy GB/s", "vs memcpy"
    );
    row("update_conv", t_conv, conv_bytes, c_conv);
    row("update_ssm", t_ssm, ssm_bytes, c_ssm);
    row("reset (conv + ssm)", t_reset, conv_bytes + ssm_bytes, c_all);
    println!(
        "GB/s = bytes of state the operation covers / its median time; memcpy = one-thread copy of the same \
         bytes in this run; 'vs memcpy' > 1 means faster than that copy."
    );
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(cache) };
    ExitCode::SUCCESS
}
