//! Micro-benchmark of conv_step calls on the layers of Mamba2-2.7B (1 slot,
//! bf16 window, f32 activations), through the core API; for profiling the
//! conv kernel in isolation (`perf record`). With `LAYERS=1` one layer's
//! data stays in cache; with 64 (the default) each layer has its own
//! weights, as in a model.
//! Run: RAYON_NUM_THREADS=1 cargo run --release --example conv_micro [nosilu]

use m2c_core::kernels::ConvParams;
use m2c_core::{Cache, Config, Slice, SliceMut, Slots};

fn main() {
    let layers: u32 = std::env::var("LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let cfg = Config { num_layers: layers, ..Config::mamba2_2_7b() };
    let mut c = Cache::new(cfg).expect("cache");
    let dim = c.shape().conv_dim;
    let ws: Vec<Vec<f32>> = (0..layers).map(|l| vec![0.1f32 + l as f32 * 1e-3; dim * 4]).collect();
    let b = vec![0.1f32; dim];
    let x = vec![0.5f32; dim];
    let mut o = vec![0f32; dim];
    let silu = std::env::args().nth(1).is_none();
    let iters = 100_000 / layers as usize * layers as usize;
    let t = std::time::Instant::now();
    for i in 0..iters {
        let l = i % layers as usize;
        let p = ConvParams { weight: &ws[l], bias: Some(&b), silu };
        c.conv_step(l as u32, Slots::Dense(1), Slice::F32(&x), SliceMut::F32(&mut o), &p).expect("conv_step");
    }
    println!("{:.2} us per layer call ({dim} channels)", t.elapsed().as_secs_f64() * 1e6 / iters as f64);
}
