//! m2c-gpu-check: runs the CUDA kernels on a GPU against the CPU kernels of
//! the same library (every storage/activation dtype pair, 1 and several
//! groups, vector and scalar state rows, both conv widths, padding rows,
//! outputs poisoned beforehand to catch unwritten elements), then times
//! ssm_step and conv_step at Mamba2-2.7B shapes with 8..256 slots beside a
//! device-to-device copy of the same bytes; and the C API on a
//! device-resident cache (`M2C_DEVICE_CUDA`) against a CPU cache: every
//! copy-style call, views, snapshots, files, and the kernel calls on
//! device buffers, prefill with cu_seqlens (against the CPU and, bit for
//! bit, against device steps), a caller's stream, and speculative rounds
//! (chains and trees: verify outputs and commits bit for bit against
//! device steps), and the prefix store (insert/restore of device slots,
//! checkpoints captured in a device prefill). Built with `--features cuda`; exits 0 only if every
//! check passed. Prints a report (markdown).

mod api;
mod bench;
mod kernels;
mod spec;
mod store;
mod util;

use api::*;
use bench::*;
use kernels::*;
use m2c_core::DType;
use m2c_core::cuda::Gpu;
use spec::check_spec_api;
use store::check_store_api;

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
    println!(
        "# m2c GPU check\n\ndevice: {} (compute {}.{}), CUDA driver API {driver}, kernels compiled by NVRTC at run time\n",
        gpu.name, gpu.cc.0, gpu.cc.1
    );
    println!("## Correctness against the CPU kernels\n");
    println!(
        "| kernel | state | io | groups/width | N | state err | out err | unwritten | result |\n|---|---|---|---|---|---|---|---|---|"
    );
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
        let checks = check_api(&gpu, st)
            .into_iter()
            .chain(check_prefill_api(&gpu, st))
            .chain(check_spec_api(&gpu, st))
            .chain(check_store_api(&gpu, st));
        for (name, ok, detail) in checks {
            all_ok &= ok;
            println!("| {} | {name} | {} | {detail} |", st.name(), if ok { "ok" } else { "FAILED" });
        }
    }
    for (name, ok, detail) in check_large_batch(&gpu) {
        all_ok &= ok;
        println!("| f32 | {name} | {} | {detail} |", if ok { "ok" } else { "FAILED" });
    }
    println!(
        "\n## Speed: one layer of Mamba2-2.7B (80 heads x 64 x 128), f32 activations, median of 20 (CUDA events)\n"
    );
    println!(
        "| state | slots | state MB | ssm_step ms | ssm GB/s | D2D copy ms | copy GB/s | ssm vs copy | conv_step us (bf16 window) |\n|---|---|---|---|---|---|---|---|---|"
    );
    for st in [DType::F32, DType::BF16] {
        for slots in [8, 32, 64, 128, 256] {
            println!("{}", bench(&gpu, st, slots));
        }
    }
    println!(
        "\nGB/s = state bytes / time (each byte read once and written once, like the copy); 'ssm vs copy' = copy time / ssm time."
    );
    println!("\n## Prefill: one launch per call vs the same tokens as decode steps (one 2.7B layer, median of 5)\n");
    println!("| state | sequences x tokens | ssm_prefill ms | as steps ms | speedup |\n|---|---|---|---|---|");
    for st in [DType::F32, DType::BF16] {
        for (seqs, len) in [(1, 512), (8, 128), (32, 32)] {
            println!("{}", bench_prefill(&gpu, st, seqs, len));
        }
    }
    println!(
        "\n## One decode token through the C API on a device cache (Mamba2-2.7B, 64 layers; conv_step + ssm_step per layer; host wall time, median of 10)\n"
    );
    println!(
        "| state | slots | state MB | ms per token | D2D copy of the state ms | copy / token |\n|---|---|---|---|---|---|"
    );
    for st in [DType::F32, DType::BF16] {
        for slots in [8, 64] {
            println!("{}", bench_api(&gpu, st, slots));
        }
    }
    println!("\nresult: {}", if all_ok { "all checks passed" } else { "SOME CHECKS FAILED" });
    std::process::exit(if all_ok { 0 } else { 1 });
}
