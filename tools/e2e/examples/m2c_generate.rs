//! m2c under a Mamba2 language model: generates greedily for a few prompts
//! in one continuous batch and prints where the time of a decode step goes
//! (m2c's state work vs everything else: embeddings, norms, projections,
//! lm_head, done by candle).
//!
//!   cargo run --release --example m2c_generate [CHECKPOINT_DIR] [TOKENS]
//!
//! (from the repository root; without `-p`, cargo resolves features as the
//! test command's `cargo build --all-targets` did and reuses its build).
//!
//! CHECKPOINT_DIR holds a Hugging Face Mamba2 checkpoint (`config.json` and
//! `*.safetensors`, e.g. a download of `AntonV/mamba2-130m-hf`); without
//! it, a small random model is written to a temporary directory, so the
//! example runs offline. Token ids are printed as numbers (no tokenizer).

#[path = "common/mamba2.rs"]
mod mamba2;

use m2c_core::DType;
use mamba2::{M2cMamba2, Tiny, Wiring, argmax};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> candle::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut scratch = None;
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => {
            let dir = std::env::temp_dir().join(format!("m2c-generate-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(candle::Error::wrap)?;
            let t = Tiny { d_model: 256, n_layer: 8, vocab: 512, d_state: 64, headdim: 64, ngroups: 1 };
            mamba2::write_random_model(&dir, &t, 7)?;
            println!("no checkpoint given: wrote a random model ({t:?}) to {}", dir.display());
            scratch = Some(dir.clone());
            dir
        }
    };
    let gen: usize = args.next().map_or(Ok(32), |s| s.parse()).map_err(candle::Error::wrap)?;
    let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5, 6, 7, 8], &[42, 17], &[9, 8, 7, 6]];
    let mut m = M2cMamba2::load(&dir, prompts.len() as u32, mamba2::K as u32 - 1, DType::F32, Wiring::Correct)?;
    println!("{}", describe(&m));
    let slots: Vec<i32> = (0..prompts.len())
        .map(|_| m.cache.slot_acquire().map_err(candle::Error::wrap))
        .collect::<candle::Result<_>>()?;
    let start = Instant::now();
    let logits = m.prefill(&slots, &prompts)?;
    let prefill_time = start.elapsed();
    let mut next: Vec<u32> = logits.iter().map(|l| argmax(l)).collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let (state0, other0) = (m.state_time, m.other_time);
    let start = Instant::now();
    for _ in 0..gen {
        for (o, &t) in out.iter_mut().zip(&next) {
            o.push(t);
        }
        let logits = m.step(&slots, &next)?;
        next = logits.iter().map(|l| argmax(l)).collect();
    }
    let decode = start.elapsed().as_secs_f64();
    let (state, other) = ((m.state_time - state0).as_secs_f64(), (m.other_time - other0).as_secs_f64());
    for (i, o) in out.iter().enumerate() {
        println!("prompt {i} {:?} -> {:?}", prompts[i], o);
    }
    let tokens = (gen * prompts.len()) as f64;
    println!(
        "prefill of {} tokens: {:.1} ms",
        prompts.iter().map(|p| p.len()).sum::<usize>(),
        prefill_time.as_secs_f64() * 1e3
    );
    println!(
        "decode: {gen} steps x {} sequences in {:.1} ms = {:.1} tokens/s; per step {:.3} ms in m2c (conv + SSM state work, {:.0}%) and {:.3} ms elsewhere (embeddings, norms, projections, lm_head)",
        prompts.len(),
        decode * 1e3,
        tokens / decode,
        state / gen as f64 * 1e3,
        100.0 * state / (state + other),
        other / gen as f64 * 1e3
    );
    println!(
        "(the projections run one row at a time here, so that batching never changes a row's result; an engine batches them)"
    );
    if let Some(d) = scratch {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

fn describe(m: &M2cMamba2) -> String {
    let c = m.cache.config();
    format!(
        "model: {} layers, d_model {}, {} heads of {}, state {}, {} group(s); m2c cache: {} slots, conv width {}, ssm {:?}",
        c.num_layers,
        m.cfg.d_model,
        c.num_heads,
        c.head_dim,
        c.state_size,
        c.n_groups,
        c.num_slots,
        c.conv_width,
        c.ssm_dtype
    )
}
