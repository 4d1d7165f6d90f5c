//! The depthwise causal conv1d update (one decode token) and its prefill
//! form, in place on the cache's conv windows.
//!
//! Per slot and channel `c`, with the window holding the last `W` inputs
//! (oldest first) and weights `w[c][0..K]` (oldest tap first):
//! `out[c] = act(sum_k inputs[k] * w[c][k] + bias[c])` over the `K` newest
//! inputs including the new `x[c]`, then the window drops its oldest
//! column and appends `x[c]`. With `W = K` the oldest stored input falls
//! out of the sum; with `W = K - 1` every stored input is used. Both
//! layouts sum the same products in the same order (oldest first), so they
//! give bit-identical outputs. `x` enters the sum as given (in f32), before
//! it is rounded to the storage dtype.

use super::convert::Lane;
use super::math;
use crate::multiversion;

/// Everything about one call but the windows.
pub(crate) struct ConvJob<'a, I> {
    pub x: &'a [I],
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub silu: bool,
    pub dim: usize,
    pub kernel: usize,
    pub width: usize,
}

/// Channels `c0..c0 + len` of one token: `win` holds their windows
/// (`[len][W]`), `xs` their new inputs, `out` their outputs. Full blocks
/// of 64 channels are processed with fixed-size loops, which the compiler
/// turns into shuffles and vector arithmetic; 64 (rather than one vector
/// of 16) gives the SiLU's long dependency chain four independent vectors
/// to overlap (measured: 1.5x faster than 16). The remaining channels take
/// the general path.
#[inline(always)]
fn channels<S: Lane, I: Lane, const K: usize, const W: usize>(
    job: &ConvJob<'_, I>,
    c0: usize,
    win: &mut [S],
    xs: &[I],
    out: &mut [I],
) {
    const BLK: usize = 64;
    let len = xs.len();
    let full = len / BLK * BLK;
    let (wins, _) = win[..full * W].as_chunks_mut::<W>();
    let (wins, _) = wins.as_chunks_mut::<BLK>();
    let (wts, _) = job.weight[c0 * K..(c0 + full) * K].as_chunks::<K>();
    let (wts, _) = wts.as_chunks::<BLK>();
    let (x16, _) = xs[..full].as_chunks::<BLK>();
    let (o16, _) = out[..full].as_chunks_mut::<BLK>();
    for (bi, (((wb, tb), xb), ob)) in wins.iter_mut().zip(wts).zip(x16).zip(o16.iter_mut()).enumerate() {
        let mut xv = [0f32; BLK];
        for l in 0..BLK {
            xv[l] = xb[l].load();
        }
        let mut acc = [0f32; BLK];
        for k in 0..K - 1 {
            for l in 0..BLK {
                acc[l] += wb[l][W - (K - 1) + k].load() * tb[l][k];
            }
        }
        for l in 0..BLK {
            acc[l] += xv[l] * tb[l][K - 1];
        }
        if let Some(b) = job.bias {
            let b = &b[c0 + bi * BLK..c0 + bi * BLK + BLK];
            for l in 0..BLK {
                acc[l] += b[l];
            }
        }
        if job.silu {
            for a in acc.iter_mut() {
                *a = math::silu(*a);
            }
        }
        for l in 0..BLK {
            ob[l] = I::store(acc[l]);
        }
        for l in 0..BLK {
            let mut next = [S::ZERO; W];
            next[..W - 1].copy_from_slice(&wb[l][1..]);
            next[W - 1] = S::store(xv[l]);
            wb[l] = next;
        }
    }
    if full < len {
        channels_any(job, c0 + full, &mut win[full * W..], &xs[full..], &mut out[full..]);
    }
}

/// Any kernel size and width (slower path).
#[inline(always)]
fn channels_any<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &mut [S], xs: &[I], out: &mut [I]) {
    let (k_, w) = (job.kernel, job.width);
    for (i, ((wr, xv), o)) in win.chunks_exact_mut(w).zip(xs).zip(out.iter_mut()).enumerate() {
        let c = c0 + i;
        let wt = &job.weight[c * k_..(c + 1) * k_];
        let xv = xv.load();
        let mut sum = 0f32;
        for k in 0..k_ - 1 {
            sum += wr[w - (k_ - 1) + k].load() * wt[k];
        }
        sum += xv * wt[k_ - 1];
        let mut a = sum + job.bias.map_or(0.0, |b| b[c]);
        if job.silu {
            a = math::silu(a);
        }
        *o = I::store(a);
        wr.copy_within(1.., 0);
        wr[w - 1] = S::store(xv);
    }
}

multiversion! {
    /// One token through channels `c0..` of one slot: `win` is their
    /// windows, `xs` their inputs, `out` their outputs.
    fn conv_token<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &mut [S], xs: &[I], out: &mut [I]) {
        match (job.kernel, job.width) {
            (4, 4) => channels::<S, I, 4, 4>(job, c0, win, xs, out),
            (4, 3) => channels::<S, I, 4, 3>(job, c0, win, xs, out),
            (3, 3) => channels::<S, I, 3, 3>(job, c0, win, xs, out),
            (3, 2) => channels::<S, I, 3, 2>(job, c0, win, xs, out),
            (2, 2) => channels::<S, I, 2, 2>(job, c0, win, xs, out),
            (2, 1) => channels::<S, I, 2, 1>(job, c0, win, xs, out),
            _ => channels_any(job, c0, win, xs, out),
        }
    }
}
