//! End to end against a Mamba2 implementation nobody here wrote:
//! candle-transformers' `models::mamba2` (its `Model` and `State`) and the
//! same checkpoint run with m2c holding the state and running the conv and
//! the SSM (`tools/examples/common/mamba2.rs`, through the core crate).
//! A random-weight model is written as `config.json` + `model.safetensors`
//! and loaded by both. Greedy tokens must be identical over 64 generated
//! tokens and the logits close at every step (the peer's prefill is the
//! chunked SSD form and its conv sums in another order, so not
//! bit-identical); continuous batching, chunked prefill, both window
//! layouts, bf16 state (by a drift bound) and speculative rounds with
//! partly wrong drafts give the tokens of the plain run; and each
//! deliberate wiring mistake makes the comparison fail.

#[path = "../examples/common/mamba2.rs"]
mod mamba2;

use candle::{Device, Tensor};
use m2c_core::{DType, Slots};
use mamba2::{M2cMamba2, Tiny, Wiring, argmax, rel_diff};
use std::path::{Path, PathBuf};

const GEN: usize = 64;
/// Largest relative logit difference allowed against the peer (f32).
const LOGIT_TOL: f64 = 2e-4;

fn model_dir(groups: usize, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("m2c-candle-{}-{groups}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = Tiny { d_model: 64, n_layer: 3, vocab: 96, d_state: 16, headdim: 16, ngroups: groups };
    mamba2::write_random_model(&dir, &t, seed).unwrap();
    dir
}

/// The peer's greedy run: prefill (its chunked SSD) from a fresh state,
/// then one `forward` per token. Returns (tokens, logits per step).
fn peer_run(dir: &Path, prompt: &[u32]) -> (Vec<u32>, Vec<Vec<f32>>) {
    let cfg = mamba2::read_config(dir).unwrap();
    let vb = mamba2::var_builder(dir).unwrap();
    let model = candle_transformers::models::mamba2::Model::new(&cfg, vb).unwrap();
    let dev = Device::Cpu;
    let mut state = candle_transformers::models::mamba2::State::new(1, &cfg, candle::DType::F32, &dev).unwrap();
    let ids = Tensor::from_vec(prompt.to_vec(), (1, prompt.len()), &dev).unwrap();
    let logits = model.forward_prefill(&ids, &mut state, 8).unwrap();
    let mut last = logits.get(0).unwrap().get(prompt.len() - 1).unwrap().to_vec1::<f32>().unwrap();
    let (mut toks, mut all) = (Vec::new(), Vec::new());
    for _ in 0..GEN {
        all.push(last.clone());
        let t = argmax(&last);
        toks.push(t);
        let ids = Tensor::from_vec(vec![t], 1, &dev).unwrap();
        last = model.forward(&ids, &mut state).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
    }
    (toks, all)
}

/// m2c's greedy run of one prompt in slot 0 (prefill in `chunks`).
fn m2c_run(m: &mut M2cMamba2, prompt: &[u32], chunks: &[usize]) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut at = 0;
    let mut last = Vec::new();
    for &c in chunks.iter().chain(std::iter::once(&(prompt.len() - chunks.iter().sum::<usize>()))) {
        if c == 0 {
            continue;
        }
        last = m.prefill(&[0], &[&prompt[at..at + c]]).unwrap().remove(0);
        at += c;
    }
    let (mut toks, mut all) = (Vec::new(), Vec::new());
    for _ in 0..GEN {
        all.push(last.clone());
        let t = argmax(&last);
        toks.push(t);
        last = m.step(&[0], &[t]).unwrap().remove(0);
    }
    (toks, all)
}

const PROMPT: [u32; 7] = [3, 41, 7, 88, 19, 2, 60];

#[test]
fn m2c_under_mamba2_generates_the_peers_tokens() {
    for (groups, width) in [(1, 4), (2, 3)] {
        let dir = model_dir(groups, 11);
        let (want, want_logits) = peer_run(&dir, &PROMPT);
        let mut m = M2cMamba2::load(&dir, 1, width, DType::F32, Wiring::Correct).unwrap();
        let (got, got_logits) = m2c_run(&mut m, &PROMPT, &[]);
        assert_eq!(got, want, "groups {groups}, width {width}: tokens differ from candle-transformers'");
        let worst = got_logits.iter().zip(&want_logits).map(|(a, b)| rel_diff(a, b)).fold(0f64, f64::max);
        assert!(worst <= LOGIT_TOL, "groups {groups}, width {width}: logits differ by {worst:e} (relative)");
        println!(
            "groups {groups}, width {width}: {GEN} tokens identical; logits within {worst:.2e} of the peer; tokens {got:?}"
        );
        // Chunked prefill: the same tokens and logits, bit for bit, as one piece.
        let mut c = M2cMamba2::load(&dir, 1, width, DType::F32, Wiring::Correct).unwrap();
        let (ct, cl) = m2c_run(&mut c, &PROMPT, &[2, 3]);
        assert_eq!(ct, got);
        assert!(cl.iter().zip(&got_logits).all(|(a, b)| a == b), "chunked prefill changed the logits");
    }
}

#[test]
fn bf16_state_drifts_within_a_stated_bound() {
    let dir = model_dir(1, 13);
    let (_, want_logits) = peer_run(&dir, &PROMPT);
    let mut m = M2cMamba2::load(&dir, 1, 4, DType::BF16, Wiring::Correct).unwrap();
    // Teacher-forced along the peer's tokens so the drift is measured on
    // the same sequence.
    let mut last = m.prefill(&[0], &[&PROMPT]).unwrap().remove(0);
    let mut worst = 0f64;
    for want in &want_logits[..32] {
        worst = worst.max(rel_diff(&last, want));
        last = m.step(&[0], &[argmax(want)]).unwrap().remove(0);
    }
    println!("bf16 state: logits within {worst:.2e} (relative) of the f32 peer over 32 steps");
    assert!(worst < 5e-2, "bf16 drift {worst:e}");
}

#[test]
fn continuous_batching_gives_each_request_its_solo_tokens() {
    let dir = model_dir(2, 17);
    let prompts: [&[u32]; 3] = [&PROMPT, &[9, 9, 1], &[70, 5, 33, 12, 80]];
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut m = M2cMamba2::load(&dir, 1, 3, DType::F32, Wiring::Correct).unwrap();
            m2c_run(&mut m, p, &[]).0
        })
        .collect();
    // One cache of 4 slots, a fixed batch of 4 rows (-1: padding). Request
    // 0 and 1 start together; 2 arrives at step 10 in the slot 1 frees at
    // its token 20 or a free one; 1 stops after 20 tokens.
    let mut m = M2cMamba2::load(&dir, 4, 3, DType::F32, Wiring::Correct).unwrap();
    let mut slot_of = [-1i32; 3];
    let mut next = [0u32; 3];
    let mut out: [Vec<u32>; 3] = Default::default();
    let limit = [GEN, 20, 40];
    let admit = |m: &mut M2cMamba2, reqs: &[usize], slot_of: &mut [i32; 3], next: &mut [u32; 3]| {
        let slots: Vec<i32> = reqs.iter().map(|_| m.cache.slot_acquire().unwrap()).collect();
        let ps: Vec<&[u32]> = reqs.iter().map(|&r| prompts[r]).collect();
        let logits = m.prefill(&slots, &ps).unwrap();
        for (i, &r) in reqs.iter().enumerate() {
            slot_of[r] = slots[i];
            next[r] = argmax(&logits[i]);
        }
    };
    admit(&mut m, &[0, 1], &mut slot_of, &mut next);
    for step in 0..GEN + 20 {
        if step == 10 {
            admit(&mut m, &[2], &mut slot_of, &mut next);
        }
        let mut rows = [-1i32; 4];
        let mut toks = [0u32; 4];
        let mut who = [usize::MAX; 4];
        let mut k = 0;
        for r in 0..3 {
            if slot_of[r] >= 0 {
                (rows[k], toks[k], who[k]) = (slot_of[r], next[r], r);
                k += 1;
            }
        }
        if k == 0 {
            break;
        }
        let logits = m.step(&rows, &toks).unwrap();
        for i in 0..k {
            let r = who[i];
            out[r].push(next[r]);
            next[r] = argmax(&logits[i]);
            if out[r].len() == limit[r] {
                m.cache.slot_release(slot_of[r]).unwrap();
                slot_of[r] = -1;
            }
        }
    }
    for r in 0..3 {
        assert_eq!(out[r][..], solo[r][..limit[r]], "request {r} in the batch");
    }
}

#[test]
fn speculative_rounds_with_partly_wrong_drafts_give_the_plain_tokens() {
    let dir = model_dir(1, 19);
    let mut plain = M2cMamba2::load(&dir, 1, 4, DType::F32, Wiring::Correct).unwrap();
    let (want, _) = m2c_run(&mut plain, &PROMPT, &[]);
    // Drafts of 3: the true next tokens, with the j-th one wrong (j cycles).
    let mut m = M2cMamba2::load(&dir, 1, 4, DType::F32, Wiring::Correct).unwrap();
    m.cache.spec_reserve(4).unwrap();
    let mut last = m.prefill(&[0], &[&PROMPT]).unwrap().remove(0);
    let mut got = vec![argmax(&last)];
    let mut round = 0;
    while got.len() < GEN {
        let pos = got.len();
        let mut run = vec![got[pos - 1]];
        for j in 0..3 {
            let truth = want.get(pos + j).copied().unwrap_or(0);
            run.push(if j == round % 4 { (truth + 1) % 96 } else { truth });
        }
        let logits = spec_verify(&mut m, &run);
        // Greedy acceptance: keep drafts while they equal the model's choice.
        let mut accepted = 1;
        while accepted < run.len() && run[accepted] == argmax(&logits[accepted - 1]) {
            got.push(run[accepted]);
            accepted += 1;
        }
        got.push(argmax(&logits[accepted - 1]));
        m.cache.spec_commit(Slots::List(&[0]), &[accepted as u32]).unwrap();
        last = logits[accepted - 1].clone();
        round += 1;
    }
    let _ = last;
    assert_eq!(got[..GEN], want[..], "speculative decoding changed the tokens");
    assert_eq!(m.cache.position(0).unwrap() as usize, PROMPT.len() + GEN - 1 + (got.len() - GEN));
}

/// One speculative round over `run` (slot 0): every token's logits.
fn spec_verify(m: &mut M2cMamba2, run: &[u32]) -> Vec<Vec<f32>> {
    m.cache.spec_begin(Slots::List(&[0]), &[0, run.len() as u64], None).unwrap();
    m.verify_rows(run).unwrap()
}

#[test]
fn each_wiring_mistake_is_caught() {
    let dir = model_dir(2, 23);
    let (want, want_logits) = peer_run(&dir, &PROMPT);
    for w in [Wiring::SplitOrder, Wiring::ALogNotNegated, Wiring::GateAfterNorm, Wiring::ConvTapsReversed] {
        let mut m = M2cMamba2::load(&dir, 1, 4, DType::F32, w).unwrap();
        let (got, got_logits) = m2c_run(&mut m, &PROMPT, &[]);
        let worst = got_logits.iter().zip(&want_logits).map(|(a, b)| rel_diff(a, b)).fold(0f64, f64::max);
        assert!(got != want || worst > LOGIT_TOL, "{w:?} was not caught (logits within {worst:e})");
        println!("{w:?}: caught (logits off by {worst:.2e}, tokens {})", if got == want { "equal" } else { "differ" });
    }
}

/// A known limit of the peer, recorded: candle-transformers' prefill
/// starts its conv from zeros instead of the cached window, so its prompt
/// in two pieces gives other logits than in one (m2c's chunked prefill is
/// bit-identical to one piece: see `m2c_under_mamba2_generates_the_peers_tokens`,
/// which compares m2c's chunks with the peer's one piece).
#[test]
fn the_peers_chunked_prefill_restarts_its_conv_a_known_limit() {
    let dir = model_dir(1, 29);
    let cfg = mamba2::read_config(&dir).unwrap();
    let model = candle_transformers::models::mamba2::Model::new(&cfg, mamba2::var_builder(&dir).unwrap()).unwrap();
    let dev = Device::Cpu;
    let last = |chunks: &[&[u32]]| {
        let mut state = candle_transformers::models::mamba2::State::new(1, &cfg, candle::DType::F32, &dev).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            let ids = Tensor::from_vec(c.to_vec(), (1, c.len()), &dev).unwrap();
            let l = model.forward_prefill(&ids, &mut state, 8).unwrap();
            out = l.get(0).unwrap().get(c.len() - 1).unwrap().to_vec1::<f32>().unwrap();
        }
        out
    };
    let one = last(&[&PROMPT]);
    let two = last(&[&PROMPT[..3], &PROMPT[3..]]);
    let d = rel_diff(&two, &one);
    println!(
        "the peer's prefill in two pieces differs from one piece by {d:.2e} (relative): its conv restarts from zeros"
    );
    assert!(
        d > 1e-3,
        "the peer's chunked prefill now matches its one-piece prefill ({d:e}): drop this known-limit note"
    );
}
