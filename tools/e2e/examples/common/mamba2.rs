//! A Mamba2 language model whose recurrent state lives in m2c: candle
//! (candle-nn) computes the embeddings, norms, projections and lm_head from
//! a Hugging Face checkpoint (`config.json` + `model.safetensors`), and m2c
//! holds every layer's conv window and SSM state and runs the conv and the
//! SSM (`conv_prefill`/`ssm_prefill`, `conv_step`/`ssm_step`, through the
//! core crate: this is Rust code, so it calls the Rust API the C ABI wraps).
//! Shared by `tools/e2e/tests/candle_parity.rs` (which runs it against
//! candle-transformers' own `models::mamba2`) and the `m2c_generate`
//! example.

#![allow(dead_code)]

use candle::{D, DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::{Cache, Config, DType as StateDType, Slice, SliceMut, Slots};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The conv kernel width of Mamba2 checkpoints (candle's `D_CONV`).
pub const K: usize = 4;

/// The shape of a random test model, written as a Hugging Face config.
#[derive(Clone, Copy, Debug)]
pub struct Tiny {
    pub d_model: usize,
    pub n_layer: usize,
    pub vocab: usize,
    pub d_state: usize,
    pub headdim: usize,
    pub ngroups: usize,
}

impl Tiny {
    pub fn d_inner(&self) -> usize {
        2 * self.d_model
    }
    pub fn nheads(&self) -> usize {
        self.d_inner() / self.headdim
    }
    pub fn d_xbc(&self) -> usize {
        self.d_inner() + 2 * self.ngroups * self.d_state
    }
}

/// Writes `config.json` and `model.safetensors` of a random Mamba2 model
/// with the Hugging Face names candle loads (`embeddings`,
/// `layers.N.{norm, mixer.{in_proj, conv1d, A_log, D, dt_bias, norm,
/// out_proj}}`, `norm_f`; the lm_head is tied to the embeddings).
pub fn write_random_model(dir: &Path, t: &Tiny, seed: u64) -> candle::Result<()> {
    let dev = Device::Cpu;
    let mut rng = m2c_testkit::Rng::new(seed);
    let mut uni = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * (rng.unit() * 0.5 + 0.5)).collect()
    };
    let mut w: HashMap<String, Tensor> = HashMap::new();
    let (d, di, dx, h) = (t.d_model, t.d_inner(), t.d_xbc(), t.nheads());
    let s = 1.0 / (d as f32).sqrt();
    // Small embeddings, large mixer outputs: with the lm_head tied to the
    // embeddings, a residual stream dominated by the input token's own
    // embedding would make every prediction repeat the input.
    w.insert("embeddings.weight".into(), Tensor::from_vec(uni(t.vocab * d, -0.1, 0.1), (t.vocab, d), &dev)?);
    w.insert("norm_f.weight".into(), Tensor::from_vec(uni(d, 0.8, 1.2), d, &dev)?);
    for l in 0..t.n_layer {
        let p = format!("layers.{l}");
        w.insert(format!("{p}.norm.weight"), Tensor::from_vec(uni(d, 0.8, 1.2), d, &dev)?);
        let proj = di + dx + h;
        w.insert(
            format!("{p}.mixer.in_proj.weight"),
            Tensor::from_vec(uni(proj * d, -2.0 * s, 2.0 * s), (proj, d), &dev)?,
        );
        w.insert(format!("{p}.mixer.conv1d.weight"), Tensor::from_vec(uni(dx * K, -0.5, 0.5), (dx, 1, K), &dev)?);
        w.insert(format!("{p}.mixer.conv1d.bias"), Tensor::from_vec(uni(dx, -0.2, 0.2), dx, &dev)?);
        let a_log: Vec<f32> = uni(h, 0.0, 2.5);
        w.insert(format!("{p}.mixer.A_log"), Tensor::from_vec(a_log, h, &dev)?);
        w.insert(format!("{p}.mixer.D"), Tensor::from_vec(uni(h, 0.5, 1.5), h, &dev)?);
        w.insert(format!("{p}.mixer.dt_bias"), Tensor::from_vec(uni(h, -3.0, -0.5), h, &dev)?);
        w.insert(format!("{p}.mixer.norm.weight"), Tensor::from_vec(uni(di, 0.8, 1.2), di, &dev)?);
        let so = 4.0 / (di as f32).sqrt();
        w.insert(format!("{p}.mixer.out_proj.weight"), Tensor::from_vec(uni(d * di, -so, so), (d, di), &dev)?);
    }
    candle::safetensors::save(&w, dir.join("model.safetensors"))?;
    let cfg = format!(
        "{{\"model_type\": \"mamba2\", \"hidden_size\": {}, \"num_hidden_layers\": {}, \"vocab_size\": {}, \"state_size\": {}, \
         \"expand\": 2, \"head_dim\": {}, \"n_groups\": {}, \"conv_kernel\": {K}, \"pad_vocab_size_multiple\": 16}}\n",
        t.d_model, t.n_layer, t.vocab, t.d_state, t.headdim, t.ngroups
    );
    std::fs::write(dir.join("config.json"), cfg).map_err(candle::Error::wrap)
}

/// Deliberate wiring mistakes, to prove that the parity test catches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wiring {
    Correct,
    /// in_proj's output read as [xBC | z | dt] instead of [z | xBC | dt].
    SplitOrder,
    /// A = exp(A_log) instead of -exp(A_log).
    ALogNotNegated,
    /// The gate applied after the gated norm instead of before it.
    GateAfterNorm,
    /// The conv weight taps read newest first.
    ConvTapsReversed,
}

struct Layer {
    norm: candle_nn::RmsNorm,
    in_proj: candle_nn::Linear,
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    a: Vec<f32>,
    d: Vec<f32>,
    dt_bias: Vec<f32>,
    gate_norm: candle_nn::RmsNorm,
    out_proj: candle_nn::Linear,
}

/// How a pass's token rows map onto the cache.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// A decode step: row i is slot `slots[i]` (-1: padding).
    Step(&'a [i32]),
    /// A prefill: sequence i (slot `slots[i]`) owns rows `cu[i]..cu[i+1]`.
    Prefill(&'a [i32], &'a [u64]),
    /// A speculative verify of the current round's rows.
    Verify,
}

/// The model with m2c holding the state of `slots` sequences.
pub struct M2cMamba2 {
    pub cfg: candle_transformers::models::mamba2::Config,
    pub cache: Cache,
    emb: candle_nn::Embedding,
    layers: Vec<Layer>,
    norm_f: candle_nn::RmsNorm,
    lm_head: Tensor,
    d_inner: usize,
    d_xbc: usize,
    nheads: usize,
    headdim: usize,
    ngroups: usize,
    d_state: usize,
    wiring: Wiring,
    /// Time spent in m2c's calls, and in everything else, since creation.
    pub state_time: Duration,
    pub other_time: Duration,
}

/// The parsed `config.json` of a checkpoint directory.
pub fn read_config(dir: &Path) -> candle::Result<candle_transformers::models::mamba2::Config> {
    let text = std::fs::read_to_string(dir.join("config.json")).map_err(candle::Error::wrap)?;
    serde_json::from_str(&text).map_err(candle::Error::wrap)
}

/// A VarBuilder over a checkpoint's safetensors files, at `backbone.` when
/// the checkpoint nests its weights there (the published HF files do).
pub fn var_builder(dir: &Path) -> candle::Result<VarBuilder<'static>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(candle::Error::wrap)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    // SAFETY: the files are not modified while mapped (test and example
    // data written before, or a downloaded checkpoint).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu)? };
    Ok(if vb.contains_tensor("backbone.embeddings.weight") { vb.pp("backbone") } else { vb })
}

impl M2cMamba2 {
    /// Loads the weights and creates a cache of `slots` slots with conv
    /// window `conv_width` (K or K-1) and SSM storage `ssm_dtype`.
    pub fn load(
        dir: &Path,
        slots: u32,
        conv_width: u32,
        ssm_dtype: StateDType,
        wiring: Wiring,
    ) -> candle::Result<Self> {
        let cfg = read_config(dir)?;
        let vb = var_builder(dir)?;
        let (d, di) = (cfg.d_model, cfg.d_model * cfg.expand);
        let nheads = di / cfg.headdim;
        let d_xbc = di + 2 * cfg.ngroups * cfg.d_state;
        let vocab = cfg.vocab_size.div_ceil(cfg.pad_vocab_size_multiple) * cfg.pad_vocab_size_multiple;
        let emb = candle_nn::embedding(vocab, d, vb.pp("embeddings"))?;
        let lm_head = emb.embeddings().clone();
        let mut layers = Vec::new();
        for l in 0..cfg.n_layer {
            let vb = vb.pp("layers").pp(l);
            let m = vb.pp("mixer");
            let w = m.get((d_xbc, 1, K), "conv1d.weight")?.flatten_all()?.to_vec1::<f32>()?;
            let conv_w = if wiring == Wiring::ConvTapsReversed {
                w.chunks(K).flat_map(|c| c.iter().rev().copied()).collect()
            } else {
                w
            };
            let a_log = m.get(nheads, "A_log")?.to_vec1::<f32>()?;
            let a = a_log.iter().map(|v| if wiring == Wiring::ALogNotNegated { v.exp() } else { -v.exp() }).collect();
            layers.push(Layer {
                norm: candle_nn::rms_norm(d, 1e-5, vb.pp("norm"))?,
                in_proj: candle_nn::linear_no_bias(d, di + d_xbc + nheads, m.pp("in_proj"))?,
                conv_w,
                conv_b: m.get(d_xbc, "conv1d.bias")?.to_vec1::<f32>()?,
                a,
                d: m.get(nheads, "D")?.to_vec1::<f32>()?,
                dt_bias: m.get(nheads, "dt_bias")?.to_vec1::<f32>()?,
                gate_norm: candle_nn::rms_norm(di, 1e-5, m.pp("norm"))?,
                out_proj: candle_nn::linear_no_bias(di, d, m.pp("out_proj"))?,
            });
        }
        let norm_f = candle_nn::rms_norm(d, 1e-5, vb.pp("norm_f"))?;
        let mc = Config {
            num_layers: cfg.n_layer as u32,
            num_slots: slots,
            intermediate_size: di as u32,
            num_heads: nheads as u32,
            head_dim: cfg.headdim as u32,
            state_size: cfg.d_state as u32,
            n_groups: cfg.ngroups as u32,
            conv_kernel_size: K as u32,
            conv_width,
            conv_dtype: StateDType::F32,
            ssm_dtype,
            ..Config::default()
        };
        let cache = Cache::new(mc).map_err(candle::Error::wrap)?;
        Ok(M2cMamba2 {
            nheads,
            headdim: cfg.headdim,
            ngroups: cfg.ngroups,
            d_state: cfg.d_state,
            cfg,
            cache,
            emb,
            layers,
            norm_f,
            lm_head,
            d_inner: di,
            d_xbc,
            wiring,
            state_time: Duration::ZERO,
            other_time: Duration::ZERO,
        })
    }

    /// Each row through a module alone ([1, n] at a time), so a row's
    /// result never depends on the other rows of a batch.
    fn rows(xs: &Tensor, f: impl Fn(&Tensor) -> candle::Result<Tensor>) -> candle::Result<Tensor> {
        let n = xs.dim(0)?;
        let out: Vec<Tensor> = (0..n).map(|r| f(&xs.narrow(0, r, 1)?)).collect::<candle::Result<_>>()?;
        Tensor::cat(&out, 0)
    }

    /// Runs token rows through every layer and returns each row's logits.
    /// `seq` says how the rows map onto the cache: a decode step (row i is
    /// slot `slots[i]`, -1 padding) or a prefill (`cu` offsets of the
    /// sequences of `slots`).
    fn run(&mut self, tokens: &[u32], slots: &[i32], cu: Option<&[u64]>) -> candle::Result<Tensor> {
        self.run_mode(tokens, if let Some(cu) = cu { Mode::Prefill(slots, cu) } else { Mode::Step(slots) })
    }

    /// Every token of the current speculative round (`m2c_spec_begin`'s
    /// rows) through every layer with the verify calls; returns each
    /// token's logits. Nothing is committed.
    pub fn verify_rows(&mut self, tokens: &[u32]) -> candle::Result<Vec<Vec<f32>>> {
        self.run_mode(tokens, Mode::Verify)?.to_vec2::<f32>()
    }

    fn run_mode(&mut self, tokens: &[u32], mode: Mode<'_>) -> candle::Result<Tensor> {
        let t0 = Instant::now();
        let mut state = Duration::ZERO;
        let dev = Device::Cpu;
        let n = tokens.len();
        let ids = Tensor::from_vec(tokens.to_vec(), n, &dev)?;
        let mut xs = self.emb.forward(&ids)?;
        let (di, dx, h, p, g, st) = (self.d_inner, self.d_xbc, self.nheads, self.headdim, self.ngroups, self.d_state);
        for l in 0..self.layers.len() {
            let lw = &self.layers[l];
            let normed = Self::rows(&xs, |r| lw.norm.forward(r))?;
            let proj = Self::rows(&normed, |r| lw.in_proj.forward(r))?;
            let (z, xbc) = if self.wiring == Wiring::SplitOrder {
                (proj.narrow(D::Minus1, dx, di)?, proj.narrow(D::Minus1, 0, dx)?)
            } else {
                (proj.narrow(D::Minus1, 0, di)?, proj.narrow(D::Minus1, di, dx)?)
            };
            let dt = proj.narrow(D::Minus1, di + dx, h)?;
            let xbc = xbc.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let z = z.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let dt = dt.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let mut conv_out = vec![0f32; n * dx];
            let s0 = Instant::now();
            let cp = ConvParams { weight: &lw.conv_w, bias: Some(&lw.conv_b), silu: true };
            let (x_in, c_out) = (Slice::F32(&xbc), SliceMut::F32(&mut conv_out));
            match mode {
                Mode::Step(slots) => self.cache.conv_step(l as u32, Slots::List(slots), x_in, c_out, &cp),
                Mode::Prefill(slots, cu) => self.cache.conv_prefill(l as u32, Slots::List(slots), cu, x_in, c_out, &cp),
                Mode::Verify => self.cache.spec_conv(l as u32, x_in, c_out, &cp),
            }
            .map_err(candle::Error::wrap)?;
            state += s0.elapsed();
            // The conv output splits into x | B | C.
            let mut x = Vec::with_capacity(n * di);
            let mut b = Vec::with_capacity(n * g * st);
            let mut c = Vec::with_capacity(n * g * st);
            for row in conv_out.chunks(dx) {
                x.extend_from_slice(&row[..di]);
                b.extend_from_slice(&row[di..di + g * st]);
                c.extend_from_slice(&row[di + g * st..]);
            }
            let mut y = vec![0f32; n * di];
            let gate_in_ssm = self.wiring != Wiring::GateAfterNorm;
            let inp = SsmInputs {
                x: Slice::F32(&x),
                dt: Slice::F32(&dt),
                b: Slice::F32(&b),
                c: Slice::F32(&c),
                z: gate_in_ssm.then_some(Slice::F32(&z)),
            };
            let sp =
                SsmParams { a: &lw.a, d: Some(&lw.d), dt_bias: Some(&lw.dt_bias), dt_softplus: true, dt_limit: None };
            let s0 = Instant::now();
            let y_out = SliceMut::F32(&mut y);
            match mode {
                Mode::Step(slots) => self.cache.ssm_step(l as u32, Slots::List(slots), &inp, y_out, &sp),
                Mode::Prefill(slots, cu) => self.cache.ssm_prefill(l as u32, Slots::List(slots), cu, &inp, y_out, &sp),
                Mode::Verify => self.cache.spec_ssm(l as u32, &inp, y_out, &sp),
            }
            .map_err(candle::Error::wrap)?;
            state += s0.elapsed();
            let _ = (h, p);
            // Mamba2's gated RMSNorm: the gate (applied by m2c above) comes
            // before the norm.
            let y = Tensor::from_vec(y, (n, di), &dev)?;
            let y = if gate_in_ssm {
                Self::rows(&y, |r| lw.gate_norm.forward(r))?
            } else {
                let zt = Tensor::from_vec(z, (n, di), &dev)?;
                (Self::rows(&y, |r| lw.gate_norm.forward(r))? * candle_nn::ops::silu(&zt)?)?
            };
            let out = Self::rows(&y, |r| lw.out_proj.forward(r))?;
            xs = (xs + out)?;
        }
        let normed = Self::rows(&xs, |r| self.norm_f.forward(r))?;
        let logits = Self::rows(&normed, |r| r.matmul(&self.lm_head.t()?))?;
        self.state_time += state;
        self.other_time += t0.elapsed() - state;
        Ok(logits)
    }

    /// Prefills the prompts (sequence i into slot `slots[i]`, one varlen
    /// call per layer) and advances the slots; returns each prompt's
    /// last-token logits.
    pub fn prefill(&mut self, slots: &[i32], prompts: &[&[u32]]) -> candle::Result<Vec<Vec<f32>>> {
        let mut cu = vec![0u64];
        let mut tokens = Vec::new();
        for p in prompts {
            tokens.extend_from_slice(p);
            cu.push(tokens.len() as u64);
        }
        let logits = self.run(&tokens, slots, Some(&cu))?;
        for (s, p) in slots.iter().zip(prompts) {
            self.cache.advance(Slots::List(&[*s]), p.len() as u32).map_err(candle::Error::wrap)?;
        }
        (0..prompts.len()).map(|i| logits.get(cu[i + 1] as usize - 1)?.to_vec1::<f32>()).collect()
    }

    /// One decode step: row i feeds `tokens[i]` to slot `slots[i]` (-1:
    /// padding); returns each row's logits (padding rows' are meaningless).
    pub fn step(&mut self, slots: &[i32], tokens: &[u32]) -> candle::Result<Vec<Vec<f32>>> {
        let logits = self.run(tokens, slots, None)?;
        self.cache.advance(Slots::List(slots), 1).map_err(candle::Error::wrap)?;
        logits.to_vec2::<f32>()
    }
}

/// The index of the largest logit (the first of equal ones).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// max |a - b| / max |b|.
pub fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(f64::from(v.abs())));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max(f64::from((x - y).abs()))) / scale
}
