//! Micro-benchmark of one conv_step call on one layer of Mamba2-2.7B
//! (1 slot, bf16 window, f32 activations), through the core API; for
//! profiling the conv kernel in isolation (`perf record`).
//! Run: RAYON_NUM_THREADS=1 cargo run --release --example conv_micro [nosilu]

use m2c::kernels::ConvParams;
use m2c::{Cache, Config, Slice, SliceMut, Slots};

fn main() {
    let cfg = Config { num_layers: 2, ..Config::mamba2_2_7b() };
    let mut c = Cache::new(cfg).expect("cache");
    let dim = c.shape().conv_dim;
    let w = vec![0.1f32; dim * 4];
    let b = vec![0.1f32; dim];
    let x = vec![0.5f32; dim];
    let mut o = vec![0f32; dim];
    let p = ConvParams { weight: &w, bias: Some(&b), silu: std::env::args().nth(1).is_none() };
    let iters = 100_000;
    let t = std::time::Instant::now();
    for _ in 0..iters {
        c.conv_step(0, Slots::Dense(1), Slice::F32(&x), SliceMut::F32(&mut o), &p).expect("conv_step");
    }
    println!("{:.2} us per layer call ({dim} channels)", t.elapsed().as_secs_f64() * 1e6 / iters as f64);
}
