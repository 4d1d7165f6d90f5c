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
/// (`[len][W]`), `xs` their new inputs, `out` their outputs.
#[inline(always)]
fn channels<S: Lane, I: Lane, const K: usize, const W: usize>(
    job: &ConvJob<'_, I>,
    c0: usize,
    win: &mut [S],
    xs: &[I],
    out: &mut [I],
) {
    let (wins, _) = win.as_chunks_mut::<W>();
    for (blk, ((wb, xb), ob)) in wins.chunks_mut(16).zip(xs.chunks(16)).zip(out.chunks_mut(16)).enumerate() {
        let mut acc = [0f32; 16];
        for (l, ((wr, xv), a)) in wb.iter_mut().zip(xb).zip(acc.iter_mut()).enumerate() {
            let c = c0 + blk * 16 + l;
            let wt = &job.weight[c * K..c * K + K];
            let xv = xv.load();
            let mut sum = 0f32;
            // Taps 0..K-1 read the stored inputs that stay in the sum.
            for k in 0..K - 1 {
                sum += wr[W - (K - 1) + k].load() * wt[k];
            }
            sum += xv * wt[K - 1];
            *a = sum + job.bias.map_or(0.0, |b| b[c]);
            let mut next = [S::ZERO; W];
            next[..W - 1].copy_from_slice(&wr[1..]);
            next[W - 1] = S::store(xv);
            *wr = next;
        }
        if job.silu {
            for a in acc.iter_mut() {
                *a = math::silu(*a);
            }
        }
        for (o, a) in ob.iter_mut().zip(acc) {
            *o = I::store(a);
        }
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
