//! Speculative decoding: verify runs of draft tokens without touching the
//! committed state, then commit the accepted ones, bit-identical to having
//! stepped only those tokens.
//!
//! A round is: [`Cache::spec_begin`] declares, for a batch of slots, the
//! run of tokens each one verifies (`cu_seqlens` rows, optionally a tree:
//! each token names its parent within the run); then, for every layer,
//! [`Cache::spec_conv`] and [`Cache::spec_ssm`] compute every token's
//! outputs from the slot's committed state, exactly as the decode steps
//! would along the token's path, and log what a commit needs (each token's
//! conv input, and the SSM's `x`, `B`, `dt` and `exp(dt * A)` in f32); last,
//! [`Cache::spec_commit`] folds the accepted path of each slot into its
//! state in every layer (the conv window shifted by the path's inputs, the
//! SSM state updated token by token with the step's own arithmetic) and
//! advances its position by the path's length.
//!
//! Costs: a verify reads each head's state once and works on a copy in
//! cache (one copy per branch of a tree); a commit reads and writes each
//! state once. The log holds, per slot, layer and token, `conv_dim +
//! H*P + G*N + 2*H` floats (Mamba2-2.7B, 5 tokens: 8% of the state), in
//! storage reserved once by [`Cache::spec_reserve`].
//!
//! A slot whose state or position changes after `spec_begin` (any write,
//! kernel, reset, load, copy into it, acquire or release) drops out of the
//! round: later verifies treat its rows as padding and a commit refuses it.

use crate::buffer::{ZeroedVec, try_vec};
use crate::cache::{Cache, PAR_MIN_BYTES};
use crate::dtype::{DType, Elem, Slice, SliceMut};
use crate::error::{Error, Result};
use crate::kernels::convert::Lane;
use crate::kernels::{
    CONV_PAR_MIN_BYTES, CONV_TASK_CHANNELS, ConvLens, ConvParams, RowWriter, SsmInputs, SsmParams, check,
    check_conv_lens, check_cu, conv, dispatch, math, same_dtype, ssm, ssm_job,
};
use crate::pool;
use crate::selection::Slots;
use half::{bf16, f16};
use rayon::prelude::*;
use std::sync::Mutex;

/// Where a token's state comes from before the token is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    /// A copy of the slot's committed state (the token's parent is it).
    Committed,
    /// A copy of the state in buffer `b` (the parent's, which other
    /// children still need).
    Buf(usize),
    /// The parent's buffer itself (the token is its parent's last child).
    InPlace,
}

/// How one run's tokens map onto scratch buffers during a verify.
#[derive(Clone, Debug, Default)]
struct Plan {
    /// Per token: its buffer, and what the buffer holds before it.
    steps: Vec<(usize, From)>,
    /// Buffers the run needs (1 for a chain).
    bufs: usize,
}

impl Plan {
    /// Whether every token follows the one before it (one buffer, updated
    /// in place): the runs a verify can carry through registers.
    fn is_chain(&self) -> bool {
        self.steps.iter().enumerate().all(|(t, &(_, f))| if t == 0 { f == From::Committed } else { f == From::InPlace })
    }

    /// The plan for tokens whose parents (run-local, -1: the committed
    /// state) come before them.
    fn new(parents: &[i32]) -> Plan {
        let t_len = parents.len();
        // The last child of each token, in token order.
        let mut last_child = vec![usize::MAX; t_len];
        for (t, &p) in parents.iter().enumerate() {
            if p >= 0 {
                last_child[p as usize] = t;
            }
        }
        let mut steps = Vec::with_capacity(t_len);
        let mut bufs = 0;
        let mut buf_of = vec![0usize; t_len];
        for (t, &p) in parents.iter().enumerate() {
            let step = if p < 0 {
                bufs += 1;
                (bufs - 1, From::Committed)
            } else if last_child[p as usize] == t {
                (buf_of[p as usize], From::InPlace)
            } else {
                bufs += 1;
                (bufs - 1, From::Buf(buf_of[p as usize]))
            };
            buf_of[t] = step.0;
            steps.push(step);
        }
        Plan { steps, bufs }
    }
}

/// The runs of the current round.
#[derive(Debug)]
pub(crate) struct Round {
    /// Slot of each row (None: padding).
    pub(crate) rows: Vec<Option<usize>>,
    /// Token offsets of the rows (`rows + 1`).
    pub(crate) cu: Vec<u64>,
    /// Parent of each token within its run (-1: the committed state).
    pub(crate) parents: Vec<i32>,
    /// Per row: the scratch plan of its run.
    plans: Vec<Plan>,
    /// Per row: still committable (not committed, not dropped).
    live: Vec<bool>,
    /// Per layer: verified through the conv / the SSM in this round.
    pub(crate) conv_done: Vec<bool>,
    pub(crate) ssm_done: Vec<bool>,
}

impl Round {
    fn row_of(&self, slot: usize) -> Option<usize> {
        self.rows.iter().position(|&s| s == Some(slot))
    }

    /// The slot of row `r` if it is still part of the round.
    pub(crate) fn live_slot(&self, r: usize) -> Option<usize> {
        if self.live[r] { self.rows[r] } else { None }
    }
}

/// A slot to commit: (slot, its row in the round, the run-local tokens of
/// its accepted path, in order).
pub(crate) type CommitWork = (usize, usize, Vec<usize>);

/// Speculative-decoding storage of a cache: the log and the current round.
#[derive(Default)]
pub(crate) struct Spec {
    /// Longest run a round may declare (0: `spec_reserve` not called).
    max_tokens: usize,
    /// Floats per token per slot and layer.
    per_token: usize,
    /// `[slot][layer][max_tokens][per_token]` f32, zero pages until used.
    log: Option<ZeroedVec<f32>>,
    round: Option<Round>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").field("max_tokens", &self.max_tokens).field("round", &self.round).finish_non_exhaustive()
    }
}

/// Offsets within one token's log entry.
#[derive(Clone, Copy, Debug)]
struct Layout {
    conv_dim: usize,
    heads: usize,
    head_dim: usize,
    groups: usize,
    state: usize,
}

impl Layout {
    fn per_token(&self) -> usize {
        self.conv_dim + self.heads * self.head_dim + self.groups * self.state + 2 * self.heads
    }
    fn x(&self) -> usize {
        self.conv_dim
    }
    fn b(&self) -> usize {
        self.x() + self.heads * self.head_dim
    }
    fn dt(&self) -> usize {
        self.b() + self.groups * self.state
    }
    fn da(&self) -> usize {
        self.dt() + self.heads
    }
}

impl Cache {
    fn spec_layout(&self) -> Layout {
        let c = self.config();
        Layout {
            conv_dim: self.shape().conv_dim,
            heads: c.num_heads as usize,
            head_dim: c.head_dim as usize,
            groups: c.n_groups as usize,
            state: c.state_size as usize,
        }
    }

    /// Index of token `t`'s log entry of (`slot`, `layer`).
    fn log_at(&self, slot: usize, layer: usize, t: usize) -> usize {
        ((slot * self.layers.len() + layer) * self.spec.max_tokens + t) * self.spec.per_token
    }

    /// (token row, log index in layer `l`) of every live token of `round`.
    fn live_entries(&self, round: &Round, l: usize) -> Vec<(usize, usize)> {
        let mut entries = Vec::new();
        for r in 0..round.rows.len() {
            if let Some(s) = round.live_slot(r) {
                let t0 = round.cu[r] as usize;
                for t in t0..round.cu[r + 1] as usize {
                    entries.push((t, self.log_at(s, l, t - t0)));
                }
            }
        }
        entries
    }

    /// Reserves the log for runs of up to `max_tokens` tokens in every slot
    /// (0 frees it). Discards the current round. The memory is
    /// `num_slots * num_layers * max_tokens * (conv_dim + H*P + G*N + 2*H)`
    /// floats, reserved now and touched only by verifies.
    pub fn spec_reserve(&mut self, max_tokens: u32) -> Result<()> {
        let (max, per_token) = self.spec_check_reserve(max_tokens)?;
        let total = (self.num_slots() * self.layers.len())
            .checked_mul(max)
            .and_then(|v| v.checked_mul(per_token))
            .ok_or_else(|| Error::OutOfMemory("the speculative log's size overflows".into()))?;
        let log = if total == 0 { None } else { Some(ZeroedVec::new(total)?) };
        self.spec = Spec { max_tokens: max, per_token, log, round: None };
        Ok(())
    }

    /// Checks `max_tokens` for `spec_reserve`: (max tokens, floats per
    /// token of the host log).
    pub(crate) fn spec_check_reserve(&self, max_tokens: u32) -> Result<(usize, usize)> {
        if max_tokens > 4096 {
            return Err(Error::OutOfRange(format!("max_tokens = {max_tokens} is above 4096")));
        }
        Ok((max_tokens as usize, self.spec_layout().per_token()))
    }

    /// As `spec_reserve`, for a cache whose log lives elsewhere (the device
    /// cache's host side: it keeps the rounds, the device the log).
    pub(crate) fn spec_reserve_rounds(&mut self, max_tokens: u32) -> Result<()> {
        let (max, per_token) = self.spec_check_reserve(max_tokens)?;
        self.spec = Spec { max_tokens: max, per_token, log: None, round: None };
        Ok(())
    }

    /// The longest run `spec_begin` accepts (0 before `spec_reserve`).
    pub fn spec_max_tokens(&self) -> u32 {
        self.spec.max_tokens as u32
    }

    /// Starts a round: sequence `i` (slot `slots[i]`, or padding) verifies
    /// tokens `cu_seqlens[i]..cu_seqlens[i + 1]` of every later verify's
    /// buffers. `parents` (one per token, run-local: -1 for the committed
    /// state, else an earlier token of the same run) makes the runs trees;
    /// `None` makes each a chain. Replaces the previous round.
    pub fn spec_begin(&mut self, slots: Slots<'_>, cu_seqlens: &[u64], parents: Option<&[i32]>) -> Result<()> {
        if self.spec.max_tokens == 0 {
            return Err(Error::InvalidArg(
                "no speculative log: reserve one first (m2c_spec_reserve) with the longest run you verify".into(),
            ));
        }
        let sel = slots.validate(self.num_slots())?;
        let total = check_cu(cu_seqlens, sel.rows())?;
        for r in 0..sel.rows() {
            let len = (cu_seqlens[r + 1] - cu_seqlens[r]) as usize;
            if sel.slot(r).is_some() && len == 0 {
                return Err(Error::InvalidArg(format!("sequence {r} has no tokens: a run needs at least one")));
            }
            if len > self.spec.max_tokens {
                return Err(Error::OutOfRange(format!(
                    "sequence {r} has {len} tokens, more than the {} reserved (m2c_spec_reserve)",
                    self.spec.max_tokens
                )));
            }
        }
        let mut all = try_vec(total, -1i32, "parents")?;
        for r in 0..sel.rows() {
            let (a, b) = (cu_seqlens[r] as usize, cu_seqlens[r + 1] as usize);
            for t in a..b {
                let local = (t - a) as i64;
                let p = match parents {
                    None => local as i32 - 1,
                    Some(ps) => {
                        check("parents", ps.len(), total)?;
                        ps[t]
                    }
                };
                if i64::from(p) < -1 || i64::from(p) >= local {
                    return Err(Error::InvalidArg(format!(
                        "parents[{t}] = {p}: token {local} of sequence {r} must name an earlier token of its run (0..{local}) or -1"
                    )));
                }
                all[t] = p;
            }
        }
        if total == 0 && parents.is_some_and(|p| !p.is_empty()) {
            check("parents", parents.map_or(0, <[i32]>::len), 0)?;
        }
        let plans = (0..sel.rows())
            .map(|r| Plan::new(&all[cu_seqlens[r] as usize..cu_seqlens[r + 1] as usize]))
            .collect::<Vec<_>>();
        let rows: Vec<Option<usize>> = (0..sel.rows()).map(|r| sel.slot(r)).collect();
        let live = rows.iter().map(Option::is_some).collect();
        let layers = self.layers.len();
        self.spec.round = Some(Round {
            rows,
            cu: cu_seqlens.to_vec(),
            parents: all,
            plans,
            live,
            conv_done: vec![false; layers],
            ssm_done: vec![false; layers],
        });
        Ok(())
    }

    /// Drops `slot` from the current round (its state or position changed).
    pub(crate) fn spec_drop(&mut self, slot: usize) {
        if let Some(round) = &mut self.spec.round {
            if let Some(r) = round.row_of(slot) {
                round.live[r] = false;
            }
        }
    }

    /// Drops the selected slots from the current round.
    pub(crate) fn spec_drop_sel(&mut self, sel: &crate::selection::Selection<'_>) {
        if self.spec.round.is_some() {
            for (_, s) in sel.pairs() {
                self.spec_drop(s);
            }
        }
    }

    /// Records whether `layer`'s conv (or SSM) is verified in the current
    /// round (for a device cache, whose verifies run on the device).
    pub(crate) fn spec_mark(&mut self, layer: usize, conv: bool, done: bool) {
        if let Some(round) = &mut self.spec.round {
            let v = if conv { &mut round.conv_done } else { &mut round.ssm_done };
            v[layer] = done;
        }
    }

    /// Drops every slot from the current round.
    pub(crate) fn spec_drop_all(&mut self) {
        self.spec.round = None;
    }

    /// The current round (`InvalidArg` when there is none).
    pub(crate) fn round(&self) -> Result<&Round> {
        self.spec
            .round
            .as_ref()
            .ok_or_else(|| Error::InvalidArg("no speculative round: start one with m2c_spec_begin".into()))
    }

    /// The verify of `layer`'s causal conv for the current round: every
    /// token's output (`out`, `[T, conv_dim]`, the dtype of `x`) from its
    /// slot's committed window along the token's path; the windows stay as
    /// they are. Rows of padding or dropped sequences get zero outputs.
    pub fn spec_conv(&mut self, layer: u32, x: Slice<'_>, out: SliceMut<'_>, p: &ConvParams<'_>) -> Result<()> {
        self.layer(layer)?;
        let round = self.round()?;
        let cfg = *self.config();
        let (dim, w, k) = (self.shape().conv_dim, self.shape().conv_width, cfg.conv_kernel_size as usize);
        let total = *round.cu.last().expect("cu has rows + 1 entries") as usize;
        check_conv_lens(&cfg, dim, total, &ConvLens::of(&x, &out, p))?;
        same_dtype("out", out.dtype(), x.dtype())?;
        let rows = round.rows.len();
        // Scratch windows: one set of the largest plan per task.
        let max_bufs = round.plans.iter().map(|p| p.bufs).max().unwrap_or(0);
        let tokens_active: usize =
            (0..rows).filter(|&r| round.live_slot(r).is_some()).map(|r| (round.cu[r + 1] - round.cu[r]) as usize).sum();
        let per_channel = w * cfg.conv_dtype.size() + k * 4 + 2 * x.dtype().size();
        let par = tokens_active.saturating_mul(dim * per_channel) >= CONV_PAR_MIN_BYTES && pool::threads() > 1;
        let chunk = if par { CONV_TASK_CHANNELS } else { dim };
        let scratch_len = max_bufs * chunk * w;
        let l = layer as usize;
        let lay = self.spec_layout();
        // Log every live token's conv input (f32).
        let entries = self.live_entries(round, l);
        let round = self.spec.round.take().expect("checked above");
        let result = {
            let log = self.spec.log.as_mut().expect("reserved");
            for &(t, at) in &entries {
                load_f32(x, t * dim, &mut log[at..at + lay.conv_dim]);
            }
            let buf = self.layers[l].conv.slice_mut();
            let heads = self.heads.get(l).map(|h| &h[..]);
            dispatch!(buf, st: S, x.dtype(), I => {
                let job = conv::ConvJob { x: I::of(x).expect("dtype checked"), weight: p.weight, bias: p.bias, silu: p.silu, dim, kernel: k, width: w };
                let out = I::of_mut(out).expect("dtype checked");
                conv_verify_rows::<S, I>(&job, st, heads, out, &round, chunk, scratch_len, par)
            })
        };
        // A failed verify (its scratch could not be allocated) may have
        // logged some inputs: the layer counts as unverified until verified
        // again.
        let mut round = round;
        round.conv_done[l] = result.is_ok();
        self.spec.round = Some(round);
        result
    }

    /// The verify of `layer`'s selective-state update for the current
    /// round: every token's `y` from its slot's committed state along the
    /// token's path (inputs as for `ssm_prefill`, `T` rows); the states stay
    /// as they are.
    pub fn spec_ssm(&mut self, layer: u32, inp: &SsmInputs<'_>, y: SliceMut<'_>, p: &SsmParams<'_>) -> Result<()> {
        self.layer(layer)?;
        let round = self.round()?;
        let cfg = *self.config();
        let total = *round.cu.last().expect("cu has rows + 1 entries") as usize;
        let (h, hd, n, g) =
            (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
        self.check_ssm_args(inp, &y, p, total)?;
        let io = inp.x.dtype();
        let rows = round.rows.len();
        // Scratch states only for the runs that need them: trees, and any
        // run when the state rows do not fit the chain path's stack rows.
        let max_bufs = (0..rows)
            .filter(|&r| round.live_slot(r).is_some() && (n > ssm::STACK_N || !round.plans[r].is_chain()))
            .map(|r| round.plans[r].bufs)
            .max()
            .unwrap_or(0);
        let tokens_active: usize =
            (0..rows).filter(|&r| round.live_slot(r).is_some()).map(|r| (round.cu[r + 1] - round.cu[r]) as usize).sum();
        let head_bytes = hd * n * cfg.ssm_dtype.size();
        let par = tokens_active.saturating_mul(h * head_bytes) >= PAR_MIN_BYTES && pool::threads() > 1;
        // f32 copies of C, z and y for the whole call, allocated before
        // anything is written.
        let mut c32 = try_vec(total * g * n, 0f32, "C in f32")?;
        let mut z32 = if inp.z.is_some() { try_vec(total * h * hd, 0f32, "z in f32")? } else { Vec::new() };
        let mut y32 = try_vec(total * h * hd, 0f32, "y in f32")?;
        let lay = self.spec_layout();
        let l = layer as usize;
        let entries = self.live_entries(round, l);
        let round = self.spec.round.take().expect("checked above");
        let log = self.spec.log.as_mut().expect("reserved");
        // The log: x, B, dt and exp(dt * A) of every live token, in f32,
        // computed exactly as the step computes them.
        load_f32(inp.c, 0, &mut c32);
        if let Some(z) = inp.z {
            load_f32(z, 0, &mut z32);
        }
        match io {
            DType::F32 => log_ssm::<f32>(log, &entries, lay, inp, p),
            DType::BF16 => log_ssm::<bf16>(log, &entries, lay, inp, p),
            DType::F16 => log_ssm::<f16>(log, &entries, lay, inp, p),
        }
        let log: &[f32] = log;
        let verify = SsmVerify {
            log,
            lay,
            c: &c32,
            z: if inp.z.is_some() { Some(&z32) } else { None },
            d: p.d,
            round: &round,
            layer: l,
            layers: self.layers.len(),
            max_tokens: self.spec.max_tokens,
        };
        let buf = self.layers[l].ssm.slice_mut();
        let result = match buf {
            SliceMut::F32(st) => ssm_verify_rows::<f32>(&verify, st, &mut y32, max_bufs, par, head_bytes),
            SliceMut::BF16(st) => ssm_verify_rows::<bf16>(&verify, st, &mut y32, max_bufs, par, head_bytes),
            SliceMut::F16(st) => ssm_verify_rows::<f16>(&verify, st, &mut y32, max_bufs, par, head_bytes),
        };
        if result.is_ok() {
            // Outputs in the activations' dtype; padding and dropped rows zero.
            match y {
                SliceMut::F32(ys) => store_rows(ys, &y32, &round, h * hd),
                SliceMut::BF16(ys) => store_rows(ys, &y32, &round, h * hd),
                SliceMut::F16(ys) => store_rows(ys, &y32, &round, h * hd),
            }
        }
        let mut round = round;
        round.ssm_done[l] = result.is_ok();
        self.spec.round = Some(round);
        result
    }

    /// Validates a commit: per listed slot, (slot, row, run-local tokens
    /// of the accepted path). Changes nothing.
    pub(crate) fn spec_commit_plan(&self, slots: Slots<'_>, accepted: &[u32]) -> Result<Vec<CommitWork>> {
        let sel = slots.validate(self.num_slots())?;
        check("accepted", accepted.len(), sel.rows())?;
        let round = self.round()?;
        let mut work = Vec::new(); // (slot, row, path of run-local tokens)
        for (i, s) in sel.pairs() {
            let r = round.row_of(s).filter(|&r| round.live[r]).ok_or_else(|| {
                Error::InvalidArg(format!(
                    "slot {s} has no verified run in this round (not in m2c_spec_begin's list, already committed, or changed since)"
                ))
            })?;
            let len = (round.cu[r + 1] - round.cu[r]) as usize;
            let k = accepted[i] as usize;
            if k > len {
                return Err(Error::OutOfRange(format!("accepted[{i}] = {k}, but slot {s}'s run has {len} tokens")));
            }
            if k > 0 {
                if let Some(l) = round.conv_done.iter().position(|d| !d) {
                    return Err(Error::InvalidArg(format!("layer {l}'s conv was not verified in this round")));
                }
                if let Some(l) = round.ssm_done.iter().position(|d| !d) {
                    return Err(Error::InvalidArg(format!("layer {l}'s SSM was not verified in this round")));
                }
            }
            let base = round.cu[r] as usize;
            let mut path = Vec::new();
            let mut t = k as i32 - 1;
            while t >= 0 {
                path.push(t as usize);
                t = round.parents[base + t as usize];
            }
            path.reverse();
            if self.positions[s].checked_add(path.len() as u64).is_none() {
                return Err(Error::OutOfRange(format!("slot {s}: position overflows uint64_t")));
            }
            work.push((s, r, path));
        }
        Ok(work)
    }

    /// Ends a commit: the positions advance by the paths' lengths and the
    /// committed slots leave the round.
    pub(crate) fn spec_commit_finish(&mut self, work: &[CommitWork]) {
        for (s, _, path) in work {
            self.positions[*s] += path.len() as u64;
        }
        let round = self.spec.round.as_mut().expect("a commit plan implies a round");
        for (_, r, _) in work {
            round.live[*r] = false;
        }
    }

    /// Commits, for each listed slot (-1: skipped), the first `accepted[i]`
    /// tokens of its run: for a chain, those tokens; for a tree, the path
    /// from the committed state to token `accepted[i] - 1`. Every layer's
    /// conv window and SSM state become those after that path (bit-identical
    /// to stepping it), the position advances by the path's length, and the
    /// slot leaves the round. 0 keeps the state and just ends the slot's
    /// run. Every listed slot must be live in the round, with every layer
    /// verified when its count is above 0.
    pub fn spec_commit(&mut self, slots: Slots<'_>, accepted: &[u32]) -> Result<()> {
        let work = self.spec_commit_plan(slots, accepted)?;
        let lay = self.spec_layout();
        let layers = self.layers.len();
        let (w, max_tokens) = (self.shape().conv_width, self.spec.max_tokens);
        let bytes: usize = work.iter().filter(|(_, _, p)| !p.is_empty()).count()
            * layers
            * (self.shape().ssm_slot_elems * self.config().ssm_dtype.size());
        let par = bytes >= PAR_MIN_BYTES && pool::threads() > 1;
        // Scratch for the discarded y of the replayed tokens, one per thread
        // (only the general path, for state rows above the stack rows, has one).
        let y_len = if lay.state > ssm::STACK_N { lay.head_dim } else { 0 };
        let threads = if par { pool::install(rayon::current_num_threads) } else { 0 };
        let ys = Mutex::new((0..=threads).map(|_| try_vec(y_len, 0f32, "y scratch")).collect::<Result<Vec<_>>>()?);
        let log: &[f32] = self.spec.log.as_ref().expect("a round implies a log");
        let c = Commit { log, lay, work: &work, layers, max_tokens, width: w, par, ys: &ys };
        let mut heads = self.heads.iter_mut();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let h = heads.next();
            match layer.conv.slice_mut() {
                SliceMut::F32(st) => c.conv(l, st, h),
                SliceMut::BF16(st) => c.conv(l, st, h),
                SliceMut::F16(st) => c.conv(l, st, h),
            }
            match layer.ssm.slice_mut() {
                SliceMut::F32(st) => c.ssm(l, st),
                SliceMut::BF16(st) => c.ssm(l, st),
                SliceMut::F16(st) => c.ssm(l, st),
            }
        }
        self.spec_commit_finish(&work);
        Ok(())
    }
}

/// The window of one slot (`[dim][w]`) after the inputs of `path`
/// (`input(t, c)`: token `t`'s input to channel `c`, in f32): the last `w`
/// of (window, inputs), each input rounded to the storage dtype as the
/// step stores it.
fn commit_windows<S: Lane>(win: &mut [S], w: usize, dim: usize, path: &[usize], input: impl Fn(usize, usize) -> f32) {
    let k = path.len();
    for c in 0..dim {
        let row = &mut win[c * w..(c + 1) * w];
        if k < w {
            row.copy_within(k.., 0);
        }
        let first = k.saturating_sub(w);
        for (j, &t) in path[first..].iter().enumerate() {
            row[w - (k - first) + j] = S::store(input(t, c));
        }
    }
}

/// What the SSM verify of one layer reads.
struct SsmVerify<'a> {
    log: &'a [f32],
    lay: Layout,
    c: &'a [f32],
    z: Option<&'a [f32]>,
    d: Option<&'a [f32]>,
    round: &'a Round,
    layer: usize,
    layers: usize,
    max_tokens: usize,
}

fn ssm_verify_rows<S: Lane>(
    v: &SsmVerify<'_>,
    st: &mut [S],
    y32: &mut [f32],
    max_bufs: usize,
    par: bool,
    head_bytes: usize,
) -> Result<()> {
    let lay = v.lay;
    let (h, p, n, g) = (lay.heads, lay.head_dim, lay.state, lay.groups);
    let per_slot = h * p * n;
    let threads = if par { pool::install(rayon::current_num_threads) } else { 0 };
    // One set of scratch states per thread (and the calling thread).
    let mut sets = Vec::new();
    for _ in 0..=threads {
        sets.push(try_vec(max_bufs * p * n, S::store(0.0), "speculative scratch states")?);
    }
    let sets = Mutex::new(sets);
    let heads_per_task = if par { (128 * 1024 / head_bytes.max(1)).clamp(1, h) } else { h };
    let per_row = h.div_ceil(heads_per_task);
    let round = v.round;
    let states: &[S] = st;
    let ys = RowWriter::new(y32);
    let run = |i: usize| {
        let (r, h0) = (i / per_row, i % per_row * heads_per_task);
        let Some(s) = round.live_slot(r) else { return };
        let k = heads_per_task.min(h - h0);
        let plan = &round.plans[r];
        let t0 = round.cu[r] as usize;
        let base = ((s * v.layers + v.layer) * v.max_tokens) * lay.per_token();
        if plan.is_chain() && n <= ssm::STACK_N {
            let chain = ssm::ChainHead {
                log: v.log,
                base,
                per_token: lay.per_token(),
                x_off: lay.x(),
                b_off: lay.b(),
                dt_off: lay.dt(),
                da_off: lay.da(),
                c: v.c,
                z: v.z,
                row0: t0,
                tokens: plan.steps.len(),
                heads: h,
                head_dim: p,
                groups: g,
                state: n,
                d: 0.0,
            };
            for hh in h0..h0 + k {
                let committed = &states[s * per_slot + hh * p * n..s * per_slot + (hh + 1) * p * n];
                let chain = ssm::ChainHead { d: v.d.map_or(0.0, |d| d[hh]), ..chain };
                ssm::spec_chain_head::<S>(committed, &chain, hh, &ys);
            }
            return;
        }
        let mut set = sets.lock().unwrap_or_else(|e| e.into_inner()).pop().expect("one scratch set per thread");
        for hh in h0..h0 + k {
            let gg = hh / (h / g);
            let committed = &states[s * per_slot + hh * p * n..s * per_slot + (hh + 1) * p * n];
            for (t, &(b, from)) in plan.steps.iter().enumerate() {
                match from {
                    From::Committed => set[b * p * n..(b + 1) * p * n].copy_from_slice(committed),
                    From::Buf(src) => set.copy_within(src * p * n..(src + 1) * p * n, b * p * n),
                    From::InPlace => {}
                }
                let e = &v.log[base + t * lay.per_token()..base + (t + 1) * lay.per_token()];
                let row = t0 + t;
                let x = &e[lay.x() + hh * p..lay.x() + (hh + 1) * p];
                let bb = &e[lay.b() + gg * n..lay.b() + (gg + 1) * n];
                let c = &v.c[(row * g + gg) * n..(row * g + gg + 1) * n];
                let z = v.z.map(|z| &z[(row * h + hh) * p..(row * h + hh + 1) * p]);
                // SAFETY: row `row`, head `hh` of y belongs to this task alone.
                let y = unsafe { ys.row((row * h + hh) * p, p) };
                let d = v.d.map_or(0.0, |d| d[hh]);
                ssm::spec_head::<S>(
                    &mut set[b * p * n..(b + 1) * p * n],
                    x,
                    z,
                    y,
                    bb,
                    c,
                    e[lay.dt() + hh],
                    e[lay.da() + hh],
                    d,
                );
            }
        }
        sets.lock().unwrap_or_else(|e| e.into_inner()).push(set);
    };
    let tasks = round.rows.len() * per_row;
    if par {
        pool::install(|| (0..tasks).into_par_iter().for_each(run));
    } else {
        (0..tasks).for_each(run);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn conv_verify_rows<S: Lane, I: Lane>(
    job: &conv::ConvJob<'_, I>,
    st: &mut [S],
    heads: Option<&[u32]>,
    out: &mut [I],
    round: &Round,
    chunk: usize,
    scratch_len: usize,
    par: bool,
) -> Result<()> {
    let (dim, w) = (job.dim, job.width);
    let threads = if par { pool::install(rayon::current_num_threads) } else { 0 };
    let mut sets = Vec::new();
    for _ in 0..=threads {
        sets.push(try_vec(scratch_len, S::store(0.0), "speculative scratch windows")?);
    }
    let sets = Mutex::new(sets);
    // Zero the rows of padding and dropped sequences.
    for r in 0..round.rows.len() {
        if round.live_slot(r).is_none() {
            out[round.cu[r] as usize * dim..round.cu[r + 1] as usize * dim].fill(I::store(0.0));
        }
    }
    let windows: &[S] = st;
    let writer = RowWriter::new(out);
    let per_row = dim.div_ceil(chunk);
    let run = |i: usize| {
        let (r, c0) = (i / per_row, i % per_row * chunk);
        let Some(s) = round.live_slot(r) else { return };
        let len = chunk.min(dim - c0);
        let plan = &round.plans[r];
        // The committed window's channels, oldest first (ring windows are
        // gathered from their columns).
        let committed = match heads {
            None => &windows[(s * dim + c0) * w..(s * dim + c0 + len) * w],
            Some(_) => &windows[s * dim * w..(s + 1) * dim * w],
        };
        let mut set = sets.lock().unwrap_or_else(|e| e.into_inner()).pop().expect("one scratch set per thread");
        let t0 = round.cu[r] as usize;
        for (t, &(b, from)) in plan.steps.iter().enumerate() {
            let one = len * w;
            match from {
                From::Committed => match heads {
                    None => set[b * one..(b + 1) * one].copy_from_slice(committed),
                    Some(h) => crate::ring::gather(
                        committed,
                        dim,
                        w,
                        h[s] as usize,
                        c0,
                        &mut set[b * one..(b + 1) * one],
                        |v| v,
                    ),
                },
                From::Buf(src) => set.copy_within(src * one..(src + 1) * one, b * one),
                From::InPlace => {}
            }
            let row = t0 + t;
            let xs = &job.x[row * dim + c0..row * dim + c0 + len];
            // SAFETY: token `row`'s channels c0..c0+len belong to this task.
            let o = unsafe { writer.row(row * dim + c0, len) };
            conv::conv_token(job, c0, &mut set[b * one..(b + 1) * one], xs, o);
        }
        sets.lock().unwrap_or_else(|e| e.into_inner()).push(set);
    };
    let tasks = round.rows.len() * per_row;
    if par {
        pool::install(|| (0..tasks).into_par_iter().for_each(run));
    } else {
        (0..tasks).for_each(run);
    }
    Ok(())
}

/// `dst[i] = src[from + i]` in f32.
fn load_f32(src: Slice<'_>, from: usize, dst: &mut [f32]) {
    fn go<I: Lane>(src: &[I], from: usize, dst: &mut [f32]) {
        for (d, v) in dst.iter_mut().zip(&src[from..]) {
            *d = v.load();
        }
    }
    match src {
        Slice::F32(v) => go(v, from, dst),
        Slice::BF16(v) => go(v, from, dst),
        Slice::F16(v) => go(v, from, dst),
    }
}

/// Logs `x`, `B`, `dt` and `exp(dt * A)` of the tokens `entries` (token row,
/// log index) in f32, computed as the step computes them.
fn log_ssm<I: Lane>(log: &mut [f32], entries: &[(usize, usize)], lay: Layout, inp: &SsmInputs<'_>, p: &SsmParams<'_>) {
    let (h, hd, n, g) = (lay.heads, lay.head_dim, lay.state, lay.groups);
    let job = ssm_job::<I>(inp, p, h, hd, n, g);
    for &(t, at) in entries {
        let e = &mut log[at..at + lay.per_token()];
        for (d, v) in e[lay.x()..lay.b()].iter_mut().zip(&job.x[t * h * hd..(t + 1) * h * hd]) {
            *d = v.load();
        }
        for (d, v) in e[lay.b()..lay.dt()].iter_mut().zip(&job.b[t * g * n..(t + 1) * g * n]) {
            *d = v.load();
        }
        for hh in 0..h {
            let dt = job.dt(t, hh);
            e[lay.dt() + hh] = dt;
            e[lay.da() + hh] = math::exp(dt * p.a[hh]);
        }
    }
}

/// The verify's outputs in the activations' dtype, zero for padding and
/// dropped rows (`per` elements per token).
fn store_rows<I: Lane>(ys: &mut [I], y32: &[f32], round: &Round, per: usize) {
    for r in 0..round.rows.len() {
        let (a, b) = (round.cu[r] as usize * per, round.cu[r + 1] as usize * per);
        if round.live_slot(r).is_some() {
            for (d, v) in ys[a..b].iter_mut().zip(&y32[a..b]) {
                *d = I::store(*v);
            }
        } else {
            ys[a..b].fill(I::store(0.0));
        }
    }
}

/// What a commit folds into each layer.
struct Commit<'a> {
    log: &'a [f32],
    lay: Layout,
    /// (slot, row, run-local tokens of the accepted path in order)
    work: &'a [(usize, usize, Vec<usize>)],
    layers: usize,
    max_tokens: usize,
    width: usize,
    par: bool,
    ys: &'a Mutex<Vec<Vec<f32>>>,
}

impl Commit<'_> {
    fn base(&self, s: usize, l: usize) -> usize {
        ((s * self.layers + l) * self.max_tokens) * self.lay.per_token()
    }

    /// Layer `l`'s windows: the last `width` of (window, the path's inputs).
    /// (A ring window takes the path's inputs as new columns, its head
    /// moving on by the path's length.)
    fn conv<S: Lane>(&self, l: usize, st: &mut [S], mut heads: Option<&mut crate::buffer::ZeroedVec<u32>>) {
        let (dim, w, per) = (self.lay.conv_dim, self.width, self.lay.per_token());
        for (s, _, path) in self.work {
            if path.is_empty() {
                continue;
            }
            let base = self.base(*s, l);
            let win = &mut st[s * dim * w..(s + 1) * dim * w];
            match heads.as_deref_mut() {
                None => commit_windows(win, w, dim, path, |t, c| self.log[base + t * per + c]),
                Some(h) => {
                    // Only the last `w` tokens' columns survive (they
                    // rewrite every column, so where they start is free).
                    let first = path.len().saturating_sub(w);
                    for &t in &path[first..] {
                        let head = h[*s] as usize;
                        for (c, v) in win[head * dim..(head + 1) * dim].iter_mut().enumerate() {
                            *v = S::store(self.log[base + t * per + c]);
                        }
                        h[*s] = ((head + 1) % w) as u32;
                    }
                }
            }
        }
    }

    /// Layer `l`'s states: the path's tokens replayed head by head with the
    /// step's arithmetic.
    fn ssm<S: Lane>(&self, l: usize, st: &mut [S]) {
        let lay = self.lay;
        let (h, hd, n, per) = (lay.heads, lay.head_dim, lay.state, lay.per_token());
        let per_slot = h * hd * n;
        let heads_per_task =
            if self.par { (128 * 1024 / (hd * n * std::mem::size_of::<S>()).max(1)).clamp(1, h) } else { h };
        let per_row = h.div_ceil(heads_per_task);
        let writer = RowWriter::new(st);
        let tasks: Vec<(usize, usize, &[usize])> = self
            .work
            .iter()
            .filter(|(_, _, p)| !p.is_empty())
            .flat_map(|(s, _, p)| (0..per_row).map(move |i| (*s, i * heads_per_task, p.as_slice())))
            .collect();
        let run = |&(s, h0, path): &(usize, usize, &[usize])| {
            let k = heads_per_task.min(h - h0);
            // SAFETY: heads h0..h0+k of slot s belong to this task alone.
            let sc = unsafe { writer.row(s * per_slot + h0 * hd * n, k * hd * n) };
            let base = self.base(s, l);
            if n <= ssm::STACK_N {
                let ch = ssm::CommitHead {
                    log: self.log,
                    base,
                    per_token: per,
                    x_off: lay.x(),
                    b_off: lay.b(),
                    dt_off: lay.dt(),
                    da_off: lay.da(),
                    path,
                    heads: h,
                    head_dim: hd,
                    groups: lay.groups,
                    state: n,
                };
                for (j, head) in sc.chunks_exact_mut(hd * n).enumerate() {
                    ssm::spec_commit_head::<S>(head, &ch, h0 + j);
                }
                return;
            }
            let mut y = self.ys.lock().unwrap_or_else(|e| e.into_inner()).pop().expect("one y scratch per thread");
            for (j, head) in sc.chunks_exact_mut(hd * n).enumerate() {
                let hh = h0 + j;
                let gg = hh / (h / lay.groups);
                for &t in path {
                    let e = &self.log[base + t * per..base + (t + 1) * per];
                    let x = &e[lay.x() + hh * hd..lay.x() + (hh + 1) * hd];
                    let b = &e[lay.b() + gg * n..lay.b() + (gg + 1) * n];
                    // C only feeds the discarded y: B stands in for it.
                    ssm::spec_head::<S>(head, x, None, &mut y, b, b, e[lay.dt() + hh], e[lay.da() + hh], 0.0);
                }
            }
            self.ys.lock().unwrap_or_else(|e| e.into_inner()).push(y);
        };
        if self.par {
            pool::install(|| tasks.par_iter().for_each(run));
        } else {
            tasks.iter().for_each(run);
        }
    }
}
