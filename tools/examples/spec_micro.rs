//! Profiling aid: the speculative verify of Mamba2-2.7B shapes (8 slots,
//! runs of 5 tokens, LAYERS layers, default 16) through the core, without
//! the C ABI; `ssm` or `conv` as the argument times one kernel alone.
//!
//!   RAYON_NUM_THREADS=1 cargo run --release -p m2c-tools --example spec_micro ssm
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::{Cache, Config, Slice, SliceMut, Slots};
fn main() {
    let layers: u32 = std::env::var("LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let t: usize = 5;
    let n = 8usize;
    let cfg = Config { num_layers: layers, num_slots: n as u32, ..Config::mamba2_2_7b() };
    let mut c = Cache::new(cfg).unwrap();
    let (h, p, st, g) = (80usize, 64usize, 128usize, 1usize);
    let dim = c.shape().conv_dim;
    let rows = n * t;
    let x = vec![0.01f32; rows * dim];
    let mut o = vec![0f32; rows * dim];
    let sx = vec![0.01f32; rows * h * p];
    let dt = vec![0.01f32; rows * h];
    let bc = vec![0.01f32; rows * g * st];
    let mut y = vec![0f32; rows * h * p];
    let w = vec![0.1f32; dim * 4];
    let a = vec![-0.5f32; h];
    c.spec_reserve(t as u32).unwrap();
    let cu: Vec<u64> = (0..=n as u64).map(|i| i * t as u64).collect();
    let mode = std::env::args().nth(1).unwrap_or_default();
    let iters = 5;
    let start = std::time::Instant::now();
    for _ in 0..iters {
        c.spec_begin(Slots::Dense(n), &cu, None).unwrap();
        for l in 0..layers {
            if mode != "ssm" {
                c.spec_conv(
                    l,
                    Slice::F32(&x),
                    SliceMut::F32(&mut o),
                    &ConvParams { weight: &w, bias: None, silu: true },
                )
                .unwrap();
            }
            if mode != "conv" {
                let inp = SsmInputs {
                    x: Slice::F32(&sx),
                    dt: Slice::F32(&dt),
                    b: Slice::F32(&bc),
                    c: Slice::F32(&bc),
                    z: None,
                };
                c.spec_ssm(
                    l,
                    &inp,
                    SliceMut::F32(&mut y),
                    &SsmParams { a: &a, d: None, dt_bias: None, dt_softplus: true, dt_limit: None },
                )
                .unwrap();
            }
        }
    }
    let el = start.elapsed().as_secs_f64() / iters as f64;
    let elems = (n * layers as usize * h * p * st) as f64;
    println!(
        "verify {t} tokens x {layers} layers: {:.1} ms; {:.2} G state-element-tokens/s",
        el * 1e3,
        elems * t as f64 / el / 1e9
    );
}
