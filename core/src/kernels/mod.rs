//! The decode-step kernels of Mamba2, run in place on the cache: the
//! causal conv1d update (`conv_step`) and the selective-state update
//! (`ssm_step`). Validation happens here, in full, before any state is
//! touched; the arithmetic lives in `conv` and `ssm`.

pub(crate) mod conv;
pub(crate) mod convert;
pub mod isa;
pub(crate) mod math;
pub(crate) mod ssm;

use crate::cache::{Cache, PAR_MIN_BYTES};
use crate::config::Config;
use crate::dtype::{DType, Elem, Slice, SliceMut};
use crate::error::{Error, Result};
use crate::pool;
use crate::selection::{Selection, Slots};
use convert::Lane;
use half::{bf16, f16};
use rayon::prelude::*;

/// Parameters of the causal conv (per layer, f32).
#[derive(Clone, Copy, Debug)]
pub struct ConvParams<'a> {
    /// `[conv_dim, conv_kernel_size]`, oldest tap first.
    pub weight: &'a [f32],
    /// `[conv_dim]`, or none.
    pub bias: Option<&'a [f32]>,
    /// Apply SiLU to the output.
    pub silu: bool,
}

/// Parameters of the selective-state update (per layer, f32).
#[derive(Clone, Copy, Debug)]
pub struct SsmParams<'a> {
    /// `[num_heads]`, already `-exp(A_log)`.
    pub a: &'a [f32],
    /// `[num_heads]` skip connection, or none.
    pub d: Option<&'a [f32]>,
    /// `[num_heads]` added to dt, or none.
    pub dt_bias: Option<&'a [f32]>,
    /// Apply softplus to dt (after the bias); identity above 20.
    pub dt_softplus: bool,
    /// Clamp dt to `[min, max]` after softplus.
    pub dt_limit: Option<(f32, f32)>,
}

/// Per-token activations of the selective-state update, one dtype for all.
#[derive(Clone, Copy, Debug)]
pub struct SsmInputs<'a> {
    /// `[rows, num_heads, head_dim]`.
    pub x: Slice<'a>,
    /// `[rows, num_heads]`.
    pub dt: Slice<'a>,
    /// `[rows, n_groups, state_size]`.
    pub b: Slice<'a>,
    /// `[rows, n_groups, state_size]`.
    pub c: Slice<'a>,
    /// `[rows, num_heads, head_dim]` gate, or none.
    pub z: Option<Slice<'a>>,
}

/// Shared write access to disjoint rows of one output buffer from several
/// tasks, for outputs whose rows interleave between tasks (`[token][head]`
/// rows written head by head).
pub(crate) struct RowWriter<'a, T> {
    ptr: *mut T,
    len: usize,
    _buf: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a RowWriter is a `&mut [T]` split between tasks that write
// disjoint rows (the contract of `row`).
unsafe impl<T: Send> Send for RowWriter<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for RowWriter<'_, T> {}

impl<'a, T> RowWriter<'a, T> {
    pub(crate) fn new(buf: &'a mut [T]) -> Self {
        RowWriter { ptr: buf.as_mut_ptr(), len: buf.len(), _buf: std::marker::PhantomData }
    }

    /// Elements `off..off + len`.
    ///
    /// # Safety
    /// No two live results may overlap.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row(&self, off: usize, len: usize) -> &mut [T] {
        assert!(off <= self.len && len <= self.len - off, "row out of bounds");
        // SAFETY: in bounds (checked); disjointness is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }

    /// A raw pointer to element `off`, for kernels that split a buffer
    /// between tasks in a pattern `row` cannot express (ring windows:
    /// a slot's channels across its columns). Not dereferenced here.
    #[inline(always)]
    pub(crate) fn raw(&self, off: usize) -> *mut T {
        self.ptr.wrapping_add(off)
    }

    /// The address of element `off`, for prefetching only (never
    /// dereferenced, so it need not be in bounds).
    #[inline(always)]
    pub(crate) fn addr(&self, off: usize) -> *const T {
        self.ptr.wrapping_add(off).cast_const()
    }
}

/// Checks `cu_seqlens` (`rows + 1` non-decreasing offsets from 0) and
/// returns the token count.
pub(crate) fn check_cu(cu: &[u64], rows: usize) -> Result<usize> {
    if cu.len() != rows + 1 {
        return Err(Error::ShapeMismatch(format!(
            "cu_seqlens has {} entries, but {rows} sequences need {}",
            cu.len(),
            rows + 1
        )));
    }
    if cu[0] != 0 {
        return Err(Error::InvalidArg(format!("cu_seqlens[0] = {}, must be 0", cu[0])));
    }
    if let Some(i) = (1..cu.len()).find(|&i| cu[i] < cu[i - 1]) {
        return Err(Error::InvalidArg(format!("cu_seqlens decreases at [{i}]: {} < {}", cu[i], cu[i - 1])));
    }
    usize::try_from(cu[rows]).map_err(|_| Error::InvalidArg("cu_seqlens total does not fit in memory".into()))
}

pub(crate) fn check(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        let need = if want == usize::MAX { "more than fits in memory".to_string() } else { want.to_string() };
        return Err(Error::ShapeMismatch(format!("{what}: len = {got} elements, but the shape needs {need}")));
    }
    Ok(())
}

impl ConvLens {
    pub(crate) fn of(x: &Slice<'_>, out: &SliceMut<'_>, p: &ConvParams<'_>) -> ConvLens {
        ConvLens { x: x.len(), out: out.len(), weight: p.weight.len(), bias: p.bias.map(<[f32]>::len) }
    }
}

/// The element counts of a conv call's arrays as the caller declared them
/// (`None`: an optional array left out). Host slices and device arrays are
/// checked against the shape by the same [`check_conv_lens`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvLens {
    pub x: usize,
    pub out: usize,
    pub weight: usize,
    pub bias: Option<usize>,
}

/// Checks a conv call over `rows` token rows: `x` and `out`
/// `[rows, conv_dim]`, `weight` `[conv_dim, K]`, `bias` `[conv_dim]`.
pub(crate) fn check_conv_lens(cfg: &Config, conv_dim: usize, rows: usize, l: &ConvLens) -> Result<()> {
    let want = rows.saturating_mul(conv_dim);
    check("x", l.x, want)?;
    check("out", l.out, want)?;
    check("weight", l.weight, conv_dim * cfg.conv_kernel_size as usize)?;
    if let Some(b) = l.bias {
        check("bias", b, conv_dim)?;
    }
    Ok(())
}

/// The element counts of an SSM call's arrays (`None`: an optional array
/// left out), for [`check_ssm_lens`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct SsmLens {
    pub x: usize,
    pub dt: usize,
    pub b: usize,
    pub c: usize,
    pub z: Option<usize>,
    pub y: usize,
    pub a: usize,
    pub d: Option<usize>,
    pub dt_bias: Option<usize>,
}

/// Checks an SSM call over `rows` token rows against the shape (x, z and y
/// `[rows, H, P]`, dt `[rows, H]`, B and C `[rows, G, N]`, A, D and dt_bias
/// `[H]`) and its dt clamp interval: the one table of argument shapes the
/// host and the device validators share.
pub(crate) fn check_ssm_lens(cfg: &Config, rows: usize, l: &SsmLens, dt_limit: Option<(f32, f32)>) -> Result<()> {
    let (h, hd, n, g) = (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
    let per = |k: usize| rows.saturating_mul(k);
    check("x", l.x, per(h * hd))?;
    check("dt", l.dt, per(h))?;
    check("B", l.b, per(g * n))?;
    check("C", l.c, per(g * n))?;
    if let Some(z) = l.z {
        check("z", z, per(h * hd))?;
    }
    check("y", l.y, per(h * hd))?;
    check("A", l.a, h)?;
    for (what, len) in [("D", l.d), ("dt_bias", l.dt_bias)] {
        if let Some(len) = len {
            check(what, len, h)?;
        }
    }
    if let Some((lo, hi)) = dt_limit {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::InvalidArg(format!("dt_min = {lo}, dt_max = {hi} are not an interval")));
        }
    }
    Ok(())
}

pub(crate) fn same_dtype(what: &str, got: DType, want: DType) -> Result<()> {
    if got != want {
        return Err(Error::InvalidArg(format!(
            "{what} is {} but the call's activations are {}",
            got.name(),
            want.name()
        )));
    }
    Ok(())
}

/// Zeroes the output rows of padding entries.
fn zero_padding<I: Elem>(out: &mut [I], per: usize, sel: &Selection<'_>) {
    for r in 0..sel.rows() {
        if sel.slot(r).is_none() {
            out[r * per..(r + 1) * per].fill(I::ZERO);
        }
    }
}

/// Runs `$body` with `$S` bound to the storage type of `$buf` (a
/// `SliceMut`) as `$s`, and `$I` to the element type named by `$io`.
macro_rules! dispatch {
    ($buf:expr, $s:ident: $S:ident, $io:expr, $I:ident => $body:expr) => {
        match $buf {
            SliceMut::F32($s) => dispatch!(@io f32, $s, $S, $io, $I => $body),
            SliceMut::BF16($s) => dispatch!(@io bf16, $s, $S, $io, $I => $body),
            SliceMut::F16($s) => dispatch!(@io f16, $s, $S, $io, $I => $body),
        }
    };
    (@io $st:ty, $s:ident, $S:ident, $io:expr, $I:ident => $body:expr) => {{
        type $S = $st;
        match $io {
            DType::F32 => {
                type $I = f32;
                $body
            }
            DType::BF16 => {
                type $I = bf16;
                $body
            }
            DType::F16 => {
                type $I = f16;
                $body
            }
        }
    }};
}
pub(crate) use dispatch;

impl Cache {
    /// One decode token through the causal conv of `layer` for each
    /// selected slot: pushes `x[row]` (`[rows, conv_dim]`) into the slot's
    /// window and writes `out[row]` (`[rows, conv_dim]`, the dtype of `x`).
    /// Padding rows leave their window alone and get zero outputs.
    pub fn conv_step(
        &mut self,
        layer: u32,
        slots: Slots<'_>,
        x: Slice<'_>,
        out: SliceMut<'_>,
        p: &ConvParams<'_>,
    ) -> Result<()> {
        self.layer(layer)?;
        let sel = slots.validate(self.num_slots())?;
        let cfg = *self.config();
        let (dim, w, k) = (self.shape().conv_dim, self.shape().conv_width, cfg.conv_kernel_size as usize);
        let rows = sel.rows();
        check_conv_lens(&cfg, dim, rows, &ConvLens::of(&x, &out, p))?;
        same_dtype("out", out.dtype(), x.dtype())?;
        // Bytes a channel touches: window, weights, input and output.
        let per_channel = w * cfg.conv_dtype.size() + k * 4 + 2 * x.dtype().size();
        let par = sel.active() * dim * per_channel >= CONV_PAR_MIN_BYTES && pool::threads() > 1;
        let io = x.dtype();
        let buf = self.layers[layer as usize].conv.slice_mut();
        let heads = self.heads.get(layer as usize).map(|h| &h[..]);
        dispatch!(buf, st: S, io, I => {
            let xs = I::of(x).expect("dtype checked");
            let out = I::of_mut(out).expect("dtype checked");
            let job = conv::ConvJob { x: xs, weight: p.weight, bias: p.bias, silu: p.silu, dim, kernel: k, width: w };
            match heads {
                Some(h) => conv_rows_ring::<S, I>(&job, st, out, &sel, par, h),
                None => conv_rows::<S, I>(&job, st, out, &sel, par),
            }
        });
        self.advance_heads(layer as usize, &sel, 1);
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// One decode token through the selective-state update of `layer` for
    /// each selected slot, in place on the slot's SSM state; writes
    /// `y[row]` (`[rows, num_heads, head_dim]`, the activations' dtype).
    /// Padding rows leave their state alone and get zero outputs.
    pub fn ssm_step(
        &mut self,
        layer: u32,
        slots: Slots<'_>,
        inp: &SsmInputs<'_>,
        y: SliceMut<'_>,
        p: &SsmParams<'_>,
    ) -> Result<()> {
        self.layer(layer)?;
        let sel = slots.validate(self.num_slots())?;
        let (cfg, row_bytes) = self.check_ssm_args(inp, &y, p, sel.rows())?;
        let (h, hd, n, g) =
            (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
        let head_bytes = hd * n * cfg.ssm_dtype.size();
        // State rows longer than the stack buffers convert B and C through
        // a spill allocated here, before anything is written; such calls
        // run on the calling thread.
        let mut spill = ssm::Spill::for_state(n)?;
        let par = spill.is_empty() && sel.active() * row_bytes >= PAR_MIN_BYTES && pool::threads() > 1;
        let io = inp.x.dtype();
        let buf = self.layers[layer as usize].ssm.slice_mut();
        dispatch!(buf, st: S, io, I => {
            let job = ssm_job::<I>(inp, p, h, hd, n, g);
            ssm_rows::<S, I>(&job, st, I::of_mut(y).expect("dtype checked"), &sel, par, head_bytes, &mut spill);
        });
        self.spec_drop_sel(&sel);
        Ok(())
    }
}

impl Cache {
    /// Prefill through the causal conv of `layer`: sequence `i` (slot
    /// `slots[i]`) brings tokens `cu_seqlens[i]..cu_seqlens[i + 1]` of `x`
    /// (`[T, conv_dim]`), processed in order with the slot's window as left
    /// context; `out` (`[T, conv_dim]`) receives every token's output and
    /// the window ends holding the last inputs. Exactly `T` calls of
    /// `conv_step`, so any split of a prompt into chunks gives bit-identical
    /// outputs and windows. Padding sequences get zero outputs.
    pub fn conv_prefill(
        &mut self,
        layer: u32,
        slots: Slots<'_>,
        cu_seqlens: &[u64],
        x: Slice<'_>,
        out: SliceMut<'_>,
        p: &ConvParams<'_>,
    ) -> Result<()> {
        let sel = self.check_conv_prefill(layer, slots, cu_seqlens, x, &out, p)?;
        let cfg = *self.config();
        let (dim, w, k) = (self.shape().conv_dim, self.shape().conv_width, cfg.conv_kernel_size as usize);
        let per_channel = w * cfg.conv_dtype.size() + k * 4 + 2 * x.dtype().size();
        let tokens_active: usize = sel.pairs().map(|(r, _)| (cu_seqlens[r + 1] - cu_seqlens[r]) as usize).sum();
        let par = tokens_active.saturating_mul(dim * per_channel) >= CONV_PAR_MIN_BYTES && pool::threads() > 1;
        let io = x.dtype();
        let buf = self.layers[layer as usize].conv.slice_mut();
        let heads = self.heads.get(layer as usize).map(|h| &h[..]);
        dispatch!(buf, st: S, io, I => {
            let job = conv::ConvJob { x: I::of(x).expect("dtype checked"), weight: p.weight, bias: p.bias, silu: p.silu, dim, kernel: k, width: w };
            let out = I::of_mut(out).expect("dtype checked");
            conv_prefill_rows::<S, I>(&job, st, out, &sel, cu_seqlens, par, heads);
        });
        if let Some(h) = self.heads.get_mut(layer as usize) {
            for (r, s) in sel.pairs() {
                h[s] = ((h[s] as u64 + (cu_seqlens[r + 1] - cu_seqlens[r])) % w as u64) as u32;
            }
        }
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// Prefill through the selective-state update of `layer`: sequence `i`
    /// (slot `slots[i]`) brings token rows `cu_seqlens[i]..cu_seqlens[i+1]`
    /// of the inputs (`x`, `z`, `y`: `[T, num_heads, head_dim]`; `dt`:
    /// `[T, num_heads]`; `B`, `C`: `[T, n_groups, state_size]`), run in
    /// order from the slot's cached state, which ends as the state after
    /// the last token. Exactly `T` calls of `ssm_step` (bit-identical, so
    /// any chunking gives the same results), computed head by head so each
    /// head's state stays in cache. Padding sequences get zero outputs.
    pub fn ssm_prefill(
        &mut self,
        layer: u32,
        slots: Slots<'_>,
        cu_seqlens: &[u64],
        inp: &SsmInputs<'_>,
        y: SliceMut<'_>,
        p: &SsmParams<'_>,
    ) -> Result<()> {
        let (sel, cfg, par_bytes) = self.check_ssm_prefill(layer, slots, cu_seqlens, inp, &y, p)?;
        let (h, hd, n, g) =
            (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
        let io = inp.x.dtype();
        let head_bytes = hd * n * cfg.ssm_dtype.size();
        let tokens_active: usize = sel.pairs().map(|(r, _)| (cu_seqlens[r + 1] - cu_seqlens[r]) as usize).sum();
        let mut spill = ssm::Spill::for_state(n)?;
        let par = spill.is_empty() && tokens_active.saturating_mul(par_bytes) >= PAR_MIN_BYTES && pool::threads() > 1;
        let buf = self.layers[layer as usize].ssm.slice_mut();
        dispatch!(buf, st: S, io, I => {
            let job = ssm_job::<I>(inp, p, h, hd, n, g);
            let y = I::of_mut(y).expect("dtype checked");
            ssm_prefill_rows::<S, I>(&job, st, y, &sel, cu_seqlens, par, head_bytes, &mut spill);
        });
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// The checks of `conv_prefill`, which writes nothing before they pass.
    pub(crate) fn check_conv_prefill<'s>(
        &self,
        layer: u32,
        slots: Slots<'s>,
        cu_seqlens: &[u64],
        x: Slice<'_>,
        out: &SliceMut<'_>,
        p: &ConvParams<'_>,
    ) -> Result<crate::selection::Selection<'s>> {
        self.layer(layer)?;
        let sel = slots.validate(self.num_slots())?;
        let total = check_cu(cu_seqlens, sel.rows())?;
        check_conv_lens(self.config(), self.shape().conv_dim, total, &ConvLens::of(&x, out, p))?;
        same_dtype("out", out.dtype(), x.dtype())?;
        Ok(sel)
    }

    /// The checks of `ssm_prefill`: the selection, the config and the
    /// state bytes one token row touches.
    pub(crate) fn check_ssm_prefill<'s>(
        &self,
        layer: u32,
        slots: Slots<'s>,
        cu_seqlens: &[u64],
        inp: &SsmInputs<'_>,
        y: &SliceMut<'_>,
        p: &SsmParams<'_>,
    ) -> Result<(crate::selection::Selection<'s>, Config, usize)> {
        self.layer(layer)?;
        let sel = slots.validate(self.num_slots())?;
        let total = check_cu(cu_seqlens, sel.rows())?;
        let (cfg, par_bytes) = self.check_ssm_args(inp, y, p, total)?;
        Ok((sel, cfg, par_bytes))
    }

    /// Validates the SSM inputs for `rows` token rows; returns the config
    /// and the state bytes one token row touches.
    pub(crate) fn check_ssm_args(
        &self,
        inp: &SsmInputs<'_>,
        y: &SliceMut<'_>,
        p: &SsmParams<'_>,
        rows: usize,
    ) -> Result<(Config, usize)> {
        let cfg = *self.config();
        let (h, hd, n) = (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize);
        let lens = SsmLens {
            x: inp.x.len(),
            dt: inp.dt.len(),
            b: inp.b.len(),
            c: inp.c.len(),
            z: inp.z.map(|z| z.len()),
            y: y.len(),
            a: p.a.len(),
            d: p.d.map(<[f32]>::len),
            dt_bias: p.dt_bias.map(<[f32]>::len),
        };
        check_ssm_lens(&cfg, rows, &lens, p.dt_limit)?;
        let io = inp.x.dtype();
        for (what, d) in [("dt", inp.dt.dtype()), ("B", inp.b.dtype()), ("C", inp.c.dtype()), ("y", y.dtype())] {
            same_dtype(what, d, io)?;
        }
        if let Some(z) = inp.z {
            same_dtype("z", z.dtype(), io)?;
        }
        Ok((cfg, h * hd * n * cfg.ssm_dtype.size()))
    }
}

pub(crate) fn ssm_job<'a, I: Lane>(
    inp: &SsmInputs<'a>,
    p: &SsmParams<'a>,
    h: usize,
    hd: usize,
    n: usize,
    g: usize,
) -> ssm::SsmJob<'a, I> {
    ssm::SsmJob::<I> {
        x: I::of(inp.x).expect("dtype checked"),
        dt: I::of(inp.dt).expect("dtype checked"),
        b: I::of(inp.b).expect("dtype checked"),
        c: I::of(inp.c).expect("dtype checked"),
        z: inp.z.map(|z| I::of(z).expect("dtype checked")),
        a: p.a,
        d: p.d,
        dt_bias: p.dt_bias,
        dt_softplus: p.dt_softplus,
        dt_limit: p.dt_limit,
        heads: h,
        head_dim: hd,
        state_size: n,
        groups: g,
    }
}

/// Zeroes the output rows of padding sequences.
fn zero_padding_seqs<I: Elem>(out: &mut [I], per_token: usize, sel: &Selection<'_>, cu: &[u64]) {
    for r in 0..sel.rows() {
        if sel.slot(r).is_none() {
            out[cu[r] as usize * per_token..cu[r + 1] as usize * per_token].fill(I::ZERO);
        }
    }
}

fn conv_prefill_rows<S: Lane, I: Lane>(
    job: &conv::ConvJob<'_, I>,
    st: &mut [S],
    out: &mut [I],
    sel: &Selection<'_>,
    cu: &[u64],
    par: bool,
    heads: Option<&[u32]>,
) {
    let (dim, w) = (job.dim, job.width);
    zero_padding_seqs(out, dim, sel, cu);
    let writer = RowWriter::new(out);
    let windows = RowWriter::new(st);
    // Tasks of (sequence, channel range); no allocation, so nothing can
    // fail once the first window is written.
    let chunk = if par { CONV_TASK_CHANNELS } else { dim };
    let per_row = dim.div_ceil(chunk);
    let task = |i: usize| {
        let (r, c0) = (i / per_row, i % per_row * chunk);
        let Some(slot) = sel.slot(r) else { return };
        let len = chunk.min(dim - c0);
        if let Some(h) = heads {
            // SAFETY: slot `slot`'s window is inside the buffer, and its
            // channels c0..c0+len in every column belong to this task alone.
            let win = unsafe { conv::RingWin::new(windows.raw(slot * dim * w), dim, w, h[slot] as usize) };
            for (i, t) in (cu[r] as usize..cu[r + 1] as usize).enumerate() {
                let xs = &job.x[t * dim + c0..t * dim + c0 + len];
                // SAFETY: token t's channels c0..c0+len belong to this task.
                let o = unsafe { writer.row(t * dim + c0, len) };
                conv::conv_token_ring(job, c0, &win.advanced(i), xs, o);
            }
            return;
        }
        // SAFETY: slot `slot`'s windows of channels c0..c0+len belong to
        // this task alone (a selection never repeats a slot; tasks split a
        // slot's channels without overlap).
        let win = unsafe { windows.row((slot * dim + c0) * w, len * w) };
        for t in cu[r] as usize..cu[r + 1] as usize {
            let xs = &job.x[t * dim + c0..t * dim + c0 + len];
            // SAFETY: token t's channels c0..c0+len belong to this task.
            let o = unsafe { writer.row(t * dim + c0, len) };
            conv::conv_token(job, c0, win, xs, o);
        }
    };
    let tasks = sel.rows() * per_row;
    if par {
        pool::install(|| (0..tasks).into_par_iter().for_each(task));
    } else {
        (0..tasks).for_each(task);
    }
}

fn ssm_prefill_rows<S: Lane, I: Lane>(
    job: &ssm::SsmJob<'_, I>,
    st: &mut [S],
    y: &mut [I],
    sel: &Selection<'_>,
    cu: &[u64],
    par: bool,
    head_bytes: usize,
    spill: &mut ssm::Spill,
) {
    let (h, p, n) = (job.heads, job.head_dim, job.state_size);
    zero_padding_seqs(y, h * p, sel, cu);
    let writer = RowWriter::new(y);
    let states = RowWriter::new(st);
    let heads_per_task = if par { (128 * 1024 / head_bytes.max(1)).clamp(1, h) } else { h };
    let per_row = h.div_ceil(heads_per_task);
    let states_of = |i: usize| {
        let (r, h0) = (i / per_row, i % per_row * heads_per_task);
        let slot = sel.slot(r)?;
        let k = heads_per_task.min(h - h0);
        // SAFETY: heads h0..h0+k of slot `slot` belong to this task alone.
        Some((r, h0, unsafe { states.row((slot * h + h0) * p * n, k * p * n) }))
    };
    let tasks = sel.rows() * per_row;
    if par {
        pool::install(|| {
            (0..tasks).into_par_iter().filter_map(states_of).for_each(|(r, h0, sc)| {
                ssm::ssm_prefill_heads(
                    job,
                    cu[r] as usize,
                    cu[r + 1] as usize,
                    h0,
                    sc,
                    &writer,
                    &mut ssm::Spill::none(),
                )
            })
        });
    } else {
        for (r, h0, sc) in (0..tasks).filter_map(states_of) {
            ssm::ssm_prefill_heads(job, cu[r] as usize, cu[r + 1] as usize, h0, sc, &writer, spill);
        }
    }
}

/// A conv call touching at least this many bytes (windows, weights,
/// activations) is split over the thread pool in channel ranges. Below it
/// (one slot of Mamba2-2.7B is ~170 KiB), waking the pool costs more than
/// a second core saves.
pub(crate) const CONV_PAR_MIN_BYTES: usize = 512 * 1024;

/// Channels per parallel conv task (a multiple of 16).
pub(crate) const CONV_TASK_CHANNELS: usize = 1024;

fn conv_rows<S: Lane, I: Lane>(
    job: &conv::ConvJob<'_, I>,
    st: &mut [S],
    out: &mut [I],
    sel: &Selection<'_>,
    par: bool,
) {
    let (dim, w) = (job.dim, job.width);
    zero_padding(out, dim, sel);
    if par {
        let (windows, outs) = (RowWriter::new(st), RowWriter::new(out));
        let per_row = dim.div_ceil(CONV_TASK_CHANNELS);
        pool::install(|| {
            (0..sel.rows() * per_row).into_par_iter().for_each(|i| {
                let (r, c0) = (i / per_row, i % per_row * CONV_TASK_CHANNELS);
                let Some(slot) = sel.slot(r) else { return };
                let len = CONV_TASK_CHANNELS.min(dim - c0);
                // SAFETY: slot `slot`'s windows and row r's outputs of
                // channels c0..c0+len belong to this task alone.
                let (wc, oc) = unsafe { (windows.row((slot * dim + c0) * w, len * w), outs.row(r * dim + c0, len)) };
                conv::conv_token(job, c0, wc, &job.x[r * dim + c0..r * dim + c0 + len], oc)
            })
        });
    } else {
        for (r, s) in sel.pairs() {
            let win = &mut st[s * dim * w..(s + 1) * dim * w];
            conv::conv_token(job, 0, win, &job.x[r * dim..(r + 1) * dim], &mut out[r * dim..(r + 1) * dim]);
        }
    }
}

/// [`conv_rows`] over ring windows (`heads`: the layer's heads, which the
/// caller advances afterwards).
fn conv_rows_ring<S: Lane, I: Lane>(
    job: &conv::ConvJob<'_, I>,
    st: &mut [S],
    out: &mut [I],
    sel: &Selection<'_>,
    par: bool,
    heads: &[u32],
) {
    let (dim, w) = (job.dim, job.width);
    zero_padding(out, dim, sel);
    let (windows, outs) = (RowWriter::new(st), RowWriter::new(out));
    let run = |r: usize, c0: usize, len: usize| {
        let Some(slot) = sel.slot(r) else { return };
        // SAFETY: slot `slot`'s window is inside the buffer; its channels
        // c0..c0+len in every column, and row r's outputs of them, belong
        // to this call alone (a selection never repeats a slot; tasks
        // split a slot's channels without overlap).
        let (win, o) = unsafe {
            (conv::RingWin::new(windows.raw(slot * dim * w), dim, w, heads[slot] as usize), outs.row(r * dim + c0, len))
        };
        conv::conv_token_ring(job, c0, &win, &job.x[r * dim + c0..r * dim + c0 + len], o)
    };
    if par {
        let per_row = dim.div_ceil(CONV_TASK_CHANNELS);
        pool::install(|| {
            (0..sel.rows() * per_row).into_par_iter().for_each(|i| {
                let (r, c0) = (i / per_row, i % per_row * CONV_TASK_CHANNELS);
                run(r, c0, CONV_TASK_CHANNELS.min(dim - c0))
            })
        });
    } else {
        (0..sel.rows()).for_each(|r| run(r, 0, dim));
    }
}

fn ssm_rows<S: Lane, I: Lane>(
    job: &ssm::SsmJob<'_, I>,
    st: &mut [S],
    y: &mut [I],
    sel: &Selection<'_>,
    par: bool,
    head_bytes: usize,
    spill: &mut ssm::Spill,
) {
    let (h, p, n) = (job.heads, job.head_dim, job.state_size);
    let per_slot = h * p * n;
    zero_padding(y, h * p, sel);
    if par {
        // Tasks of whole heads, at least ~256 KiB of state each.
        let heads_per_task = (128 * 1024 / head_bytes.max(1)).clamp(1, h);
        let per_row = h.div_ceil(heads_per_task);
        let (states, ys) = (RowWriter::new(st), RowWriter::new(y));
        pool::install(|| {
            (0..sel.rows() * per_row).into_par_iter().for_each(|i| {
                let (r, h0) = (i / per_row, i % per_row * heads_per_task);
                let Some(slot) = sel.slot(r) else { return };
                let k = heads_per_task.min(h - h0);
                // SAFETY: heads h0..h0+k of slot `slot` and of row r's
                // outputs belong to this task alone.
                let (sc, yc) =
                    unsafe { (states.row(slot * per_slot + h0 * p * n, k * p * n), ys.row((r * h + h0) * p, k * p)) };
                ssm::ssm_heads(job, r, h0, sc, yc, &mut ssm::Spill::none())
            })
        });
    } else {
        for (r, s) in sel.pairs() {
            let (sc, yc) = (&mut st[s * per_slot..(s + 1) * per_slot], &mut y[r * h * p..(r + 1) * h * p]);
            ssm::ssm_heads(job, r, 0, sc, yc, spill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ring::ConvLayout;

    fn run(cache: &mut Cache, ssm_io: DType, seed: u32) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
        let cfg = *cache.config();
        let (h, p, n) = (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize);
        let dim = cache.shape().conv_dim;
        let val = |i: usize, s: f32| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 * s - s / 2.0
        };
        let rows = 3;
        let slots = [2, -1, 0];
        let to = |v: Vec<f32>| -> Vec<half::bf16> { v.into_iter().map(half::bf16::from_f32).collect() };
        let x: Vec<f32> = (0..rows * h * p).map(|i| val(i, 2.0)).collect();
        let dt: Vec<f32> = (0..rows * h).map(|i| val(i + 7, 1.0)).collect();
        let b: Vec<f32> = (0..rows * n).map(|i| val(i + 11, 1.0)).collect();
        let c: Vec<f32> = (0..rows * n).map(|i| val(i + 13, 1.0)).collect();
        let z: Vec<f32> = (0..rows * h * p).map(|i| val(i + 17, 3.0)).collect();
        let a: Vec<f32> = (0..h).map(|i| -0.5 - i as f32 * 0.1).collect();
        let params = SsmParams { a: &a, d: Some(&a), dt_bias: Some(&a), dt_softplus: true, dt_limit: None };
        let mut y = vec![0f32; rows * h * p];
        if ssm_io == DType::F32 {
            let inp = SsmInputs {
                x: Slice::F32(&x),
                dt: Slice::F32(&dt),
                b: Slice::F32(&b),
                c: Slice::F32(&c),
                z: Some(Slice::F32(&z)),
            };
            cache.ssm_step(0, Slots::List(&slots), &inp, SliceMut::F32(&mut y), &params).unwrap();
        } else {
            let (x, dt, b, c, z) = (to(x), to(dt), to(b), to(c), to(z));
            let mut yb = vec![half::bf16::ZERO; y.len()];
            let inp = SsmInputs {
                x: Slice::BF16(&x),
                dt: Slice::BF16(&dt),
                b: Slice::BF16(&b),
                c: Slice::BF16(&c),
                z: Some(Slice::BF16(&z)),
            };
            cache.ssm_step(0, Slots::List(&slots), &inp, SliceMut::BF16(&mut yb), &params).unwrap();
            y = yb.iter().map(|v| v.to_f32()).collect();
        }
        let cx: Vec<f32> = (0..rows * dim).map(|i| val(i + 19, 2.0)).collect();
        let w: Vec<f32> = (0..dim * 4).map(|i| val(i + 23, 1.0)).collect();
        let mut co = vec![0f32; rows * dim];
        let cp = ConvParams { weight: &w, bias: Some(&w[..dim]), silu: true };
        cache.conv_step(0, Slots::List(&slots), Slice::F32(&cx), SliceMut::F32(&mut co), &cp).unwrap();
        // Again with no bias and no activation, NaN and subnormal inputs.
        let mut cx2 = cx.clone();
        cx2[5] = f32::NAN;
        cx2[dim + 9] = 1.0e-39;
        let mut co2 = vec![0f32; rows * dim];
        let cp = ConvParams { weight: &w, bias: None, silu: false };
        cache.conv_step(0, Slots::List(&slots), Slice::F32(&cx2), SliceMut::F32(&mut co2), &cp).unwrap();
        co.extend_from_slice(&co2);
        // NaN != NaN: compare NaNs (the window carries one into the next
        // call) by position.
        co.iter_mut().filter(|v| v.is_nan()).for_each(|v| *v = 12345.0);
        // Every slot's state in snapshot order (the same in both layouts).
        let mut state = vec![0u8; cache.slot_payload_bytes() * cache.num_slots()];
        for (s, out) in state.chunks_mut(cache.slot_payload_bytes()).enumerate() {
            cache.slot_export(s as i32, out).unwrap();
        }
        (y, co, state)
    }

    #[test]
    fn every_instruction_set_and_the_thread_pool_give_bit_identical_results() {
        // 8 heads of 64 x 128: 256 KiB of f32 state per slot, so two slots
        // take the parallel path on a multi-threaded pool.
        // State size 124: rows and a conv dimension (760) that are not
        // whole vectors.
        // Conv widths 4 and 3 (the two window layouts).
        // Head dims 20 and 13: rows that are not whole groups of eight
        // (the AVX-512 paths' remainder rows).
        for (state, io, n, width, p) in [
            (DType::F32, DType::F32, 128, 4, 64),
            (DType::BF16, DType::BF16, 128, 4, 64),
            (DType::F16, DType::F32, 128, 4, 64),
            (DType::BF16, DType::F32, 124, 4, 64),
            (DType::F32, DType::F32, 124, 3, 64),
            (DType::BF16, DType::F32, 128, 3, 64),
            (DType::F16, DType::F32, 124, 3, 64),
            (DType::F32, DType::F32, 124, 4, 20),
            (DType::F32, DType::BF16, 128, 3, 13),
            (DType::BF16, DType::F32, 124, 4, 20),
            (DType::F16, DType::F32, 128, 3, 13),
        ] {
            let cfg = Config {
                num_layers: 1,
                num_slots: 3,
                intermediate_size: 8 * p,
                num_heads: 8,
                head_dim: p,
                state_size: n,
                conv_width: width,
                n_groups: 1,
                ssm_dtype: state,
                conv_dtype: state,
                ..Config::default()
            };
            let mut results = Vec::new();
            // Each instruction set, and AVX-512 with and without its BF16
            // conversions (the latter only where the CPU has them).
            let mut choices: Vec<(isa::Isa, Option<bool>)> = isa::available().into_iter().map(|i| (i, None)).collect();
            if choices[0].0 == isa::Isa::Avx512 {
                choices.push((isa::Isa::Avx512, Some(false)));
            }
            // Both conv window layouts, each on every instruction set.
            for layout in [ConvLayout::OldestFirst, ConvLayout::Ring] {
                for &(isa_choice, bf16) in &choices {
                    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                    let r = one.install(|| {
                        isa::FORCE.with(|f| f.set(Some(isa_choice)));
                        isa::FORCE_BF16.with(|f| f.set(bf16));
                        let mut c = Cache::new(cfg).unwrap();
                        c.set_conv_layout(layout).unwrap();
                        let a = run(&mut c, io, 1);
                        let b = run(&mut c, io, 2);
                        (a, b)
                    });
                    results.push(((layout, isa_choice, bf16), r));
                }
                let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
                let par = two.install(|| {
                    let mut c = Cache::new(cfg).unwrap();
                    c.set_conv_layout(layout).unwrap();
                    let a = run(&mut c, io, 1);
                    let b = run(&mut c, io, 2);
                    (a, b)
                });
                results.push(((layout, isa::isa(), None), par));
            }
            let (_, first) = &results[0];
            for (which, r) in &results[1..] {
                assert!(r == first, "{state:?}/{io:?}/n {n}/width {width}: {which:?} differs from {:?}", results[0].0);
            }
        }
    }
}
