//! The selective-state update (one decode token) and its sequential form
//! over many tokens (prefill), in place on the cache's SSM state.
//!
//! Per slot and head `h` (group `g = h / (num_heads / n_groups)`):
//! `dt = dt[h] + dt_bias[h]`, then softplus and clamp if asked;
//! `dA = exp(dt * A[h])`; for every channel `p` and state index `n`:
//! `state[p][n] = state[p][n] * dA + dt * x[p] * B[g][n]`;
//! `y[p] = sum_n state[p][n] * C[g][n] + D[h] * x[p]`, then
//! `y[p] *= z[p] * sigmoid(z[p])` if `z` is given. Math in f32 whatever the
//! storage dtype; each state element is read once and written once per
//! token, and `y` is computed from the f32 state before it is rounded to
//! the storage dtype.

use super::convert::Lane;
use super::math;
use crate::multiversion;

/// Everything about one call but the state itself.
pub(crate) struct SsmJob<'a, I> {
    pub x: &'a [I],
    pub dt: &'a [I],
    pub b: &'a [I],
    pub c: &'a [I],
    pub z: Option<&'a [I]>,
    pub a: &'a [f32],
    pub d: Option<&'a [f32]>,
    pub dt_bias: Option<&'a [f32]>,
    pub dt_softplus: bool,
    pub dt_limit: Option<(f32, f32)>,
    pub heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub groups: usize,
}

impl<I: Lane> SsmJob<'_, I> {
    /// The processed time step of head `h` at token row `t`.
    #[inline(always)]
    fn dt(&self, t: usize, h: usize) -> f32 {
        let mut dt = self.dt[t * self.heads + h].load() + self.dt_bias.map_or(0.0, |b| b[h]);
        if self.dt_softplus {
            dt = math::softplus(dt);
        }
        if let Some((lo, hi)) = self.dt_limit {
            dt = dt.clamp(lo, hi);
        }
        dt
    }
}

/// Largest state size converted on the stack; larger ones use the heap.
const STACK_N: usize = 256;

/// One head, one token: updates `st` (`[head_dim][state_size]`) and writes
/// `y` (`[head_dim]`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_token<S: Lane, I: Lane>(
    st: &mut [S],
    n: usize,
    x: &[I],
    z: Option<&[I]>,
    y: &mut [I],
    b: &[f32],
    c: &[f32],
    dt: f32,
    da: f32,
    d: f32,
) {
    let (bc, br) = b.as_chunks::<16>();
    let (cc, cr) = c.as_chunks::<16>();
    // Rows in blocks of 16: the state pass fills `sums`; the epilogue (D
    // skip, z gate, store) then runs 16 lanes wide instead of once per row.
    for (blk, rows) in st.chunks_mut(16 * n).enumerate() {
        let p0 = blk * 16;
        let mut sums = [0f32; 16];
        let mut xs = [0f32; 16];
        for (k, row) in rows.chunks_exact_mut(n).enumerate() {
            let xp = x[p0 + k].load();
            xs[k] = xp;
            let dtx = dt * xp;
            let (rc, rr) = row.as_chunks_mut::<16>();
            let mut acc = [0f32; 16];
            for ((s, b16), c16) in rc.iter_mut().zip(bc).zip(cc) {
                for l in 0..16 {
                    let v = s[l].load() * da + dtx * b16[l];
                    s[l] = S::store(v);
                    acc[l] += v * c16[l];
                }
            }
            let mut sum = hsum16(&acc);
            for ((s, &bv), &cv) in rr.iter_mut().zip(br).zip(cr) {
                let v = s.load() * da + dtx * bv;
                *s = S::store(v);
                sum += v * cv;
            }
            sums[k] = sum;
        }
        let m = rows.len() / n;
        let mut out = [0f32; 16];
        for k in 0..16 {
            out[k] = sums[k] + d * xs[k];
        }
        if let Some(z) = z {
            let mut zs = [0f32; 16];
            for k in 0..m {
                zs[k] = z[p0 + k].load();
            }
            for k in 0..16 {
                out[k] *= math::silu(zs[k]);
            }
        }
        for k in 0..m {
            y[p0 + k] = I::store(out[k]);
        }
    }
}

/// The sum of 16 lanes in a fixed order with four independent chains
/// (instead of one chain of 16 dependent adds), the same on every
/// instruction set. Kept out of line: inlined, it led the compiler to
/// re-vectorise the whole row loop 2 lanes wide (2x slower for f32).
#[inline(never)]
fn hsum16(a: &[f32; 16]) -> f32 {
    let p0 = (a[0] + a[4]) + (a[8] + a[12]);
    let p1 = (a[1] + a[5]) + (a[9] + a[13]);
    let p2 = (a[2] + a[6]) + (a[10] + a[14]);
    let p3 = (a[3] + a[7]) + (a[11] + a[15]);
    (p0 + p1) + (p2 + p3)
}

/// Converts a run of io elements to f32 in `buf` (stack) or `heap`.
#[inline(always)]
fn to_f32<'b, I: Lane>(src: &[I], buf: &'b mut [f32; STACK_N], heap: &'b mut Vec<f32>) -> &'b [f32] {
    if src.len() <= STACK_N {
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.load();
        }
        &buf[..src.len()]
    } else {
        heap.clear();
        heap.extend(src.iter().map(|s| s.load()));
        heap
    }
}

/// Scratch space for one task's B/C rows in f32.
struct Scratch {
    b: [f32; STACK_N],
    c: [f32; STACK_N],
    bheap: Vec<f32>,
    cheap: Vec<f32>,
}

impl Scratch {
    #[inline(always)]
    fn new() -> Self {
        Scratch { b: [0f32; STACK_N], c: [0f32; STACK_N], bheap: Vec::new(), cheap: Vec::new() }
    }
}

/// Head `h` at token row `t`: updates `st` and writes `yh`.
#[inline(always)]
fn head_at<S: Lane, I: Lane>(job: &SsmJob<'_, I>, t: usize, h: usize, st: &mut [S], yh: &mut [I], sc: &mut Scratch) {
    let (p, n) = (job.head_dim, job.state_size);
    let g = h / (job.heads / job.groups);
    let dt = job.dt(t, h);
    let da = math::exp(dt * job.a[h]);
    let d = job.d.map_or(0.0, |d| d[h]);
    let off = (t * job.groups + g) * n;
    let bf = to_f32(&job.b[off..off + n], &mut sc.b, &mut sc.bheap);
    let cf = to_f32(&job.c[off..off + n], &mut sc.c, &mut sc.cheap);
    let xo = (t * job.heads + h) * p;
    let z = job.z.map(|z| &z[xo..xo + p]);
    head_token(st, n, &job.x[xo..xo + p], z, yh, bf, cf, dt, da, d);
}

multiversion! {
    /// Heads `h0..h0 + k` of one slot for token row `t`: `state` holds
    /// those heads' states, `y` their outputs.
    fn ssm_heads<S: Lane, I: Lane>(job: &SsmJob<'_, I>, t: usize, h0: usize, state: &mut [S], y: &mut [I]) {
        let (p, n) = (job.head_dim, job.state_size);
        let mut sc = Scratch::new();
        for (k, (st, yh)) in state.chunks_exact_mut(p * n).zip(y.chunks_exact_mut(p)).enumerate() {
            head_at(job, t, h0 + k, st, yh, &mut sc);
        }
    }
}

multiversion! {
    /// Token rows `t0..t1` of one sequence through heads `h0..h0 + k` of
    /// its slot, head by head so each head's state stays in cache across
    /// the tokens. Exactly the computation of `t1 - t0` calls of
    /// `ssm_heads`, in the same order per head.
    fn ssm_prefill_heads<S: Lane, I: Lane>(job: &SsmJob<'_, I>, t0: usize, t1: usize, h0: usize, state: &mut [S], y: &super::RowWriter<'_, I>) {
        let (p, n) = (job.head_dim, job.state_size);
        let mut sc = Scratch::new();
        for (k, st) in state.chunks_exact_mut(p * n).enumerate() {
            let h = h0 + k;
            for t in t0..t1 {
                // SAFETY: rows (t, h) of this sequence and head range belong
                // to this task alone.
                let yh = unsafe { y.row((t * job.heads + h) * p, p) };
                head_at(job, t, h, st, yh, &mut sc);
            }
        }
    }
}
