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

use super::convert::{Lane, same, same_ref};
use super::isa::multiversion;
use super::math;

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

/// The hand-written AVX-512 path for kernel size 4 (what every Mamba2
/// checkpoint uses), both window layouts (W = 4, HF/JAX; W = 3,
/// vLLM/llama.cpp), f32 activations, f32 or bf16 windows; 16 channels per
/// step. The generic block code lets the compiler gather the windows lane
/// by lane (~77 cycles per 16 channels); here each group of 4 channels'
/// inputs (stored taps, then x) is assembled channel-major in a register
/// by permutes, multiplied by the weights as they are stored, and the
/// products are transposed (8 permutes) so the tap sums are added in the
/// generic order (0, tap 0..3, bias): results are bit-identical.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::math;
    use half::bf16;
    use std::arch::x86_64::*;

    /// `[[e; 16]; n]` with `e` evaluated for every `i < n` and lane `l`.
    macro_rules! table {
        ($n:expr, |$i:ident, $l:ident| $e:expr) => {{
            let mut t = [[0i32; 16]; $n];
            let mut $i = 0usize;
            while $i < $n {
                let mut $l = 0usize;
                while $l < 16 {
                    t[$i][$l] = $e;
                    $l += 1;
                }
                $i += 1;
            }
            t
        }};
    }

    /// Lane `4c + t` of the inputs of channels `4i..4i + 4` with W = 4:
    /// stored tap `t + 1` of the window (lane `4c + t + 1`), or
    /// `x[4i + c]` (lane `16 + 4i + c` of the second operand) for `t = 3`.
    const SHIFT4: [[i32; 16]; 4] =
        table!(4, |i, l| if l % 4 == 3 { 16 + 4 * i as i32 + l as i32 / 4 } else { l as i32 + 1 });

    /// With W = 3 the 16 windows are 48 values in 3 vectors; inputs of
    /// channels `4i..4i + 4` come from vectors `W3_SRC[i]` and the next:
    /// lane `4c + t` (`t < 3`) is stored value `12i + 3c + t`.
    const W3_SRC: [usize; 4] = [0, 0, 1, 2];
    const GATHER3: [[i32; 16]; 4] =
        table!(4, |i, l| if l % 4 == 3 { 0 } else { (12 * i + 3 * (l / 4) + l % 4) as i32 - 16 * W3_SRC[i] as i32 });
    /// Lane `4c + 3` of the inputs of channels `4i..4i + 4`: `x[4i + c]`.
    const INSERT_X: [[i32; 16]; 4] = table!(4, |i, l| 4 * i as i32 + l as i32 / 4);
    /// The new W = 3 windows, packed: value `q = 16j + m` of the 48 is tap
    /// `q % 3 + 1` of the inputs of channel `q / 3`, which are in vector
    /// `j` or `j + 1` of the inputs.
    const PACK3: [[i32; 16]; 3] = table!(3, |j, m| {
        let q = 16 * j + m;
        let (c, u) = (q / 3, q % 3);
        let lane = (4 * (c % 4) + u + 1) as i32;
        if c / 4 == j { lane } else { 16 + lane }
    });

    /// Taps 0 (lanes 0..8) and 1 (lanes 8..16) of channels 0..8 from the
    /// products of channels 0..4 and 4..8; `TRANSPOSE[1]` the same for
    /// taps 2 and 3.
    const TRANSPOSE: [[i32; 16]; 2] =
        table!(2, |h, l| (l % 8 / 4) as i32 * 16 + (l % 4) as i32 * 4 + (l / 8) as i32 + 2 * h as i32);

    #[inline(always)]
    fn idx(t: [i32; 16]) -> __m512i {
        // SAFETY: plain-data transmute.
        unsafe { std::mem::transmute::<[i32; 16], __m512i>(t) }
    }

    /// f32 -> bf16 bits of 16 lanes, exactly as `f32_to_bf16_bits`
    /// (nearest even, NaN kept quiet).
    #[inline(always)]
    unsafe fn round_bf16(x: __m512) -> __m256i {
        // SAFETY: the callers enable AVX-512F/BW.
        unsafe {
            let bits = _mm512_castps_si512(x);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let rounded =
                _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))));
            let nan = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
            let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, is_nan, nan))
        }
    }

    /// Four vectors of four channels x four taps each (channel-major, as
    /// the weights are stored) as four vectors of one tap x 16 channels:
    /// 4 two-source permutes and 4 lane shuffles (`lo`, `hi`: `TRANSPOSE`).
    #[inline(always)]
    unsafe fn tap_major(q: [__m512; 4], lo: __m512i, hi: __m512i) -> [__m512; 4] {
        // SAFETY: the callers enable AVX-512F.
        unsafe {
            let a = _mm512_permutex2var_ps(q[0], lo, q[1]);
            let c = _mm512_permutex2var_ps(q[2], lo, q[3]);
            let bb = _mm512_permutex2var_ps(q[0], hi, q[1]);
            let d = _mm512_permutex2var_ps(q[2], hi, q[3]);
            [
                _mm512_shuffle_f32x4::<0x44>(a, c),
                _mm512_shuffle_f32x4::<0xEE>(a, c),
                _mm512_shuffle_f32x4::<0x44>(bb, d),
                _mm512_shuffle_f32x4::<0xEE>(bb, d),
            ]
        }
    }

    /// Before block `b` (16 channels) of a kernel's loop: the activation
    /// of the previous 64 channels, once they are done, so that their long
    /// dependency chains overlap with this block's loads.
    #[inline(always)]
    fn silu_behind(out: &mut [f32], b: usize) {
        if b.is_multiple_of(4) && b >= 4 {
            for e in &mut out[16 * (b - 4)..16 * b] {
                *e = math::silu(*e);
            }
        }
    }

    /// After the loop over `n` blocks: the activation of the channels
    /// [`silu_behind`] has not reached.
    #[inline(always)]
    fn silu_rest(out: &mut [f32], n: usize) {
        for e in &mut out[16 * (n.saturating_sub(1) / 4 * 4)..16 * n] {
            *e = math::silu(*e);
        }
    }

    /// `0 + t[0] + t[1] + t[2] + t[3] (+ bias)`, in the generic path's order.
    #[inline(always)]
    unsafe fn sum_taps(t: [__m512; 4], bias: Option<*const f32>) -> __m512 {
        // SAFETY: the callers enable AVX-512F; `bias` holds 16 values.
        unsafe {
            let mut acc = _mm512_add_ps(_mm512_setzero_ps(), t[0]);
            acc = _mm512_add_ps(acc, t[1]);
            acc = _mm512_add_ps(acc, t[2]);
            acc = _mm512_add_ps(acc, t[3]);
            if let Some(b) = bias {
                acc = _mm512_add_ps(acc, _mm512_loadu_ps(b));
            }
            acc
        }
    }

    /// The window element types this path handles: loads and stores of
    /// 16 consecutive values as f32 (stored values are exact in f32).
    pub(super) trait Win: Copy {
        unsafe fn load16(p: *const Self) -> __m512;
        unsafe fn store16(p: *mut Self, v: __m512);
    }

    impl Win for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const f32) -> __m512 {
            // SAFETY: 16 readable values at `p` (the caller's promise).
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store16(p: *mut f32, v: __m512) {
            // SAFETY: 16 writable values at `p` (the caller's promise).
            unsafe { _mm512_storeu_ps(p, v) }
        }
    }

    impl Win for bf16 {
        #[inline(always)]
        unsafe fn load16(p: *const bf16) -> __m512 {
            // SAFETY: 16 readable values at `p` (the caller's promise).
            unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())))) }
        }
        #[inline(always)]
        unsafe fn store16(p: *mut bf16, v: __m512) {
            // SAFETY: 16 writable values at `p` (the caller's promise).
            unsafe { _mm256_storeu_si256(p.cast(), round_bf16(v)) }
        }
    }

    /// Channels in blocks of 16 with kernel size 4 and window width `W`
    /// (3 or 4): `win` their windows (`[len][W]`), `x` their inputs, `w`
    /// their weights, `bias` their biases, `out` their outputs (`len` a
    /// multiple of 16).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn k4<S: Win, const W: usize>(
        win: &mut [S],
        x: &[f32],
        w: &[[f32; 4]],
        bias: Option<&[f32]>,
        silu: bool,
        out: &mut [f32],
    ) {
        let (shift4, gather3, insert_x, pack3) = (SHIFT4.map(idx), GATHER3.map(idx), INSERT_X.map(idx), PACK3.map(idx));
        let (lo, hi) = (idx(TRANSPOSE[0]), idx(TRANSPOSE[1]));
        let n = x.len() / 16;
        for b in 0..n {
            if silu {
                silu_behind(out, b);
            }
            // SAFETY: every block index is below `n`, and all slices hold
            // 16 * n channels (the caller checks).
            unsafe {
                let xv = _mm512_loadu_ps(x.as_ptr().add(16 * b));
                let wp = win.as_mut_ptr().add(16 * W * b);
                let mut new = [_mm512_setzero_ps(); 4];
                if W == 4 {
                    for (i, v) in new.iter_mut().enumerate() {
                        *v = _mm512_permutex2var_ps(S::load16(wp.add(16 * i)), shift4[i], xv);
                    }
                    for (i, v) in new.iter().enumerate() {
                        S::store16(wp.add(16 * i), *v);
                    }
                } else {
                    let old = [S::load16(wp), S::load16(wp.add(16)), S::load16(wp.add(32))];
                    for (i, v) in new.iter_mut().enumerate() {
                        let s = W3_SRC[i];
                        let g = _mm512_permutex2var_ps(old[s], gather3[i], old[(s + 1).min(2)]);
                        *v = _mm512_mask_permutexvar_ps(g, 0x8888, insert_x[i], xv);
                    }
                    for (j, t) in pack3.iter().enumerate() {
                        S::store16(wp.add(16 * j), _mm512_permutex2var_ps(new[j], *t, new[j + 1]));
                    }
                }
                let wt = w.as_ptr().add(16 * b).cast::<f32>();
                let p = [0, 1, 2, 3].map(|i| _mm512_mul_ps(new[i], _mm512_loadu_ps(wt.add(16 * i))));
                let acc = sum_taps(tap_major(p, lo, hi), bias.map(|v| v.as_ptr().add(16 * b)));
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * b), acc);
            }
        }
        if silu {
            silu_rest(out, n);
        }
    }

    /// Ring windows with kernel size 4, channels in blocks of 16 (`x.len()`
    /// a multiple of 16): `taps[t]` points at the column of tap `t` (the
    /// newest three stored inputs, oldest first) and `dst` at the oldest
    /// column, both at the first channel. The columns are plain vector
    /// loads; the weights, stored channel-major, are transposed tap-major
    /// with the permutes `k4` applies to its products, so each lane sums
    /// the same products in the same order (0, taps 0..3, bias):
    /// bit-identical to `k4`. The new inputs go to `dst`, one vector store.
    ///
    /// # Safety
    /// AVX-512F/BW/VL; `taps[t]` readable and `dst` writable for `x.len()`
    /// elements, touched by nothing else meanwhile (`dst` may equal
    /// `taps[0]`: each block is read before it is written).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn ring4<S: Win>(
        taps: [*const S; 3],
        dst: *mut S,
        x: &[f32],
        w: &[[f32; 4]],
        bias: Option<&[f32]>,
        silu: bool,
        out: &mut [f32],
    ) {
        let (lo, hi) = (idx(TRANSPOSE[0]), idx(TRANSPOSE[1]));
        let n = x.len() / 16;
        for b in 0..n {
            if silu {
                silu_behind(out, b);
            }
            // SAFETY: every block index is below `n`; the caller's promise
            // covers the columns, and the slices hold 16 * n channels.
            unsafe {
                let wt = w.as_ptr().add(16 * b).cast::<f32>();
                let wv = tap_major([0, 1, 2, 3].map(|i| _mm512_loadu_ps(wt.add(16 * i))), lo, hi);
                let xv = _mm512_loadu_ps(x.as_ptr().add(16 * b));
                let t = [
                    _mm512_mul_ps(S::load16(taps[0].add(16 * b)), wv[0]),
                    _mm512_mul_ps(S::load16(taps[1].add(16 * b)), wv[1]),
                    _mm512_mul_ps(S::load16(taps[2].add(16 * b)), wv[2]),
                    _mm512_mul_ps(xv, wv[3]),
                ];
                let acc = sum_taps(t, bias.map(|v| v.as_ptr().add(16 * b)));
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * b), acc);
                S::store16(dst.add(16 * b), xv);
            }
        }
        if silu {
            silu_rest(out, n);
        }
    }
}

/// Ring windows: runs the AVX-512 path on the channels it covers and
/// returns how many (a multiple of 16), or 0 where it does not apply.
#[inline(always)]
fn fast_ring<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &RingWin<S>, xs: &[I], out: &mut [I]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if job.kernel == 4 && super::isa::isa() == super::isa::Isa::Avx512 {
        let len = xs.len() / 16 * 16;
        let (Some(x), Some(o)) = (same_ref::<I, f32>(&xs[..len]), same::<I, f32>(&mut out[..len])) else {
            return 0;
        };
        let (w, _) = job.weight[c0 * 4..(c0 + len) * 4].as_chunks::<4>();
        let bias = job.bias.map(|b| &b[c0..c0 + len]);
        let ww = win.w;
        let taps = |k: usize| win.at(ww - 3 + k, c0).cast_const();
        // SAFETY (both calls): `isa()` detected AVX-512; channels
        // c0..c0 + len of every column belong to this call (`RingWin`).
        if std::any::TypeId::of::<S>() == std::any::TypeId::of::<f32>() {
            let t = [taps(0), taps(1), taps(2)].map(|p| p.cast::<f32>());
            unsafe { avx512::ring4::<f32>(t, win.at(0, c0).cast(), x, w, bias, job.silu, o) };
            return len;
        }
        if std::any::TypeId::of::<S>() == std::any::TypeId::of::<half::bf16>() {
            let t = [taps(0), taps(1), taps(2)].map(|p| p.cast::<half::bf16>());
            unsafe { avx512::ring4::<half::bf16>(t, win.at(0, c0).cast(), x, w, bias, job.silu, o) };
            return len;
        }
    }
    0
}

/// Runs the AVX-512 path on the channels it covers and returns how many
/// (a multiple of 16), or 0 where it does not apply.
#[inline(always)]
fn fast_channels<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &mut [S], xs: &[I], out: &mut [I]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if job.kernel == 4 && (job.width == 4 || job.width == 3) && super::isa::isa() == super::isa::Isa::Avx512 {
        let len = xs.len() / 16 * 16;
        let (Some(x), Some(o)) = (same_ref::<I, f32>(&xs[..len]), same::<I, f32>(&mut out[..len])) else {
            return 0;
        };
        let (w, _) = job.weight[c0 * 4..(c0 + len) * 4].as_chunks::<4>();
        let bias = job.bias.map(|b| &b[c0..c0 + len]);
        let wins = &mut win[..len * job.width];
        // SAFETY (all four calls): `isa()` detected AVX-512; the slices
        // hold `len` channels.
        if let Some(wf) = same::<S, f32>(&mut *wins) {
            match job.width {
                4 => unsafe { avx512::k4::<f32, 4>(wf, x, w, bias, job.silu, o) },
                _ => unsafe { avx512::k4::<f32, 3>(wf, x, w, bias, job.silu, o) },
            }
            return len;
        }
        if let Some(wb) = same::<S, half::bf16>(wins) {
            match job.width {
                4 => unsafe { avx512::k4::<half::bf16, 4>(wb, x, w, bias, job.silu, o) },
                _ => unsafe { avx512::k4::<half::bf16, 3>(wb, x, w, bias, job.silu, o) },
            }
            return len;
        }
    }
    0
}

multiversion! {
    /// One token through channels `c0..` of one slot: `win` is their
    /// windows, `xs` their inputs, `out` their outputs.
    fn conv_token<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &mut [S], xs: &[I], out: &mut [I]) {
        let done = fast_channels(job, c0, win, xs, out);
        if done == xs.len() {
            return;
        }
        let (c0, win, xs, out) = (c0 + done, &mut win[done * job.width..], &xs[done..], &mut out[done..]);
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

/// One slot's ring window (`ring.rs`): `[W][conv_dim]`, channel `c` of
/// physical column `j` at `base + j * dim + c`, logical column `k` (0 the
/// oldest) at physical column `(head + k) % W`.
pub(crate) struct RingWin<S> {
    base: *mut S,
    dim: usize,
    w: usize,
    head: usize,
}

impl<S> RingWin<S> {
    /// # Safety
    /// `base` must be valid for reads and writes of `dim * w` elements
    /// while the value is used, and the channels a kernel call is given
    /// must be accessed by nothing else meanwhile.
    pub(crate) unsafe fn new(base: *mut S, dim: usize, w: usize, head: usize) -> Self {
        RingWin { base, dim, w, head }
    }

    /// The same window after `n` more tokens.
    pub(crate) fn advanced(&self, n: usize) -> Self {
        RingWin { head: (self.head + n) % self.w, ..*self }
    }

    /// Channel `c` of logical column `k`.
    #[inline(always)]
    fn at(&self, k: usize, c: usize) -> *mut S {
        self.base.wrapping_add(crate::ring::phys(self.head, k, self.w) * self.dim + c)
    }
}

impl<S> Clone for RingWin<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for RingWin<S> {}

/// Ring windows, kernel size `K`: channels `c0..c0 + xs.len()` of one
/// token. The taps come from their physical columns (contiguous over
/// channels, so blocks of 64 channels are plain vector loads), the sum runs
/// in the order of [`channels`] (0, taps oldest first, x, bias), and the
/// new inputs overwrite the oldest column: one column written instead of W.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `k` picks a column and a weight
fn ring_channels<S: Lane, I: Lane, const K: usize>(
    job: &ConvJob<'_, I>,
    c0: usize,
    win: &RingWin<S>,
    xs: &[I],
    out: &mut [I],
) {
    const BLK: usize = 64;
    let (w, len) = (win.w, xs.len());
    let full = len / BLK * BLK;
    let (wts, _) = job.weight[c0 * K..(c0 + full) * K].as_chunks::<K>();
    let (wts, _) = wts.as_chunks::<BLK>();
    let (x64, _) = xs[..full].as_chunks::<BLK>();
    let (o64, _) = out[..full].as_chunks_mut::<BLK>();
    for (bi, ((tb, xb), ob)) in wts.iter().zip(x64).zip(o64.iter_mut()).enumerate() {
        let c = c0 + bi * BLK;
        let mut acc = [0f32; BLK];
        for k in 0..K - 1 {
            // SAFETY: channels c..c + BLK of every column are this call's
            // (the contract of `RingWin::new`); this borrow ends before
            // the oldest column is written below.
            let t = unsafe { &*win.at(w - (K - 1) + k, c).cast::<[S; BLK]>() };
            for l in 0..BLK {
                acc[l] += t[l].load() * tb[l][k];
            }
        }
        let mut xv = [0f32; BLK];
        for l in 0..BLK {
            xv[l] = xb[l].load();
            acc[l] += xv[l] * tb[l][K - 1];
        }
        if let Some(b) = job.bias {
            let b = &b[c..c + BLK];
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
        // SAFETY: as above; no other reference into the window is live.
        let d = unsafe { &mut *win.at(0, c).cast::<[S; BLK]>() };
        for l in 0..BLK {
            d[l] = S::store(xv[l]);
        }
    }
    if full < len {
        ring_any(job, c0 + full, win, &xs[full..], &mut out[full..]);
    }
}

/// Ring windows, any kernel size (slower path).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `k` picks a column and a weight
fn ring_any<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &RingWin<S>, xs: &[I], out: &mut [I]) {
    let (k_, w) = (job.kernel, win.w);
    for (i, (xv, o)) in xs.iter().zip(out.iter_mut()).enumerate() {
        let c = c0 + i;
        let wt = &job.weight[c * k_..(c + 1) * k_];
        let xv = xv.load();
        let mut sum = 0f32;
        for k in 0..k_ - 1 {
            // SAFETY: channel c of every column is this call's.
            sum += unsafe { *win.at(w - (k_ - 1) + k, c) }.load() * wt[k];
        }
        sum += xv * wt[k_ - 1];
        let mut a = sum + job.bias.map_or(0.0, |b| b[c]);
        if job.silu {
            a = math::silu(a);
        }
        *o = I::store(a);
        // SAFETY: as above.
        unsafe { *win.at(0, c) = S::store(xv) };
    }
}

multiversion! {
    /// One token through channels `c0..` of one slot's ring window `win`
    /// (whose head the caller then advances): `xs` their inputs, `out`
    /// their outputs. Bit-identical to [`conv_token`] on the same logical
    /// window.
    fn conv_token_ring<S: Lane, I: Lane>(job: &ConvJob<'_, I>, c0: usize, win: &RingWin<S>, xs: &[I], out: &mut [I]) {
        let done = fast_ring(job, c0, win, xs, out);
        if done == xs.len() {
            return;
        }
        let (c0, xs, out) = (c0 + done, &xs[done..], &mut out[done..]);
        match job.kernel {
            4 => ring_channels::<S, I, 4>(job, c0, win, xs, out),
            3 => ring_channels::<S, I, 3>(job, c0, win, xs, out),
            2 => ring_channels::<S, I, 2>(job, c0, win, xs, out),
            _ => ring_any(job, c0, win, xs, out),
        }
    }
}

multiversion! {
    /// Stores `x` into `dst` (a ring window's new column), converted as
    /// `Elem::cast` converts (a bit copy for the same type), in vector
    /// code: `half`'s per-element conversions are not vectorised.
    fn store_column<S: Lane, I: Lane>(dst: &mut [S], x: &[I]) {
        if let Some(d) = same::<S, I>(&mut *dst) {
            d.copy_from_slice(x);
            return;
        }
        for (d, v) in dst.iter_mut().zip(x) {
            *d = conv_in(*v);
        }
    }
}

/// `x[c]` in the window's dtype, as `Elem::cast` converts it (a bit copy
/// for the same type), in code the compiler vectorises.
#[inline(always)]
fn conv_in<S: Lane, I: Lane>(v: I) -> S {
    if std::any::TypeId::of::<S>() == std::any::TypeId::of::<I>() { v.cast() } else { S::store(v.load()) }
}

multiversion! {
    /// Shifts every `w`-wide row of `win` left by one and appends `x[c]`
    /// to row `c` (`update_conv` on oldest-first windows). Common widths
    /// get a const-width loop that keeps a row in a register; other widths
    /// shift the whole slot window by one element in one memmove (row
    /// `c+1`'s oldest element lands in row `c`'s newest column, which the
    /// strided store of `x` then overwrites).
    fn shift_push<S: Lane, I: Lane>(win: &mut [S], x: &[I], w: usize) {
        debug_assert_eq!(win.len(), x.len() * w);
        match w {
            2 => shift_push_n::<S, I, 2>(win, x),
            3 => shift_push_n::<S, I, 3>(win, x),
            4 => shift_push_n::<S, I, 4>(win, x),
            _ => {
                if w > 1 {
                    win.copy_within(1.., 0);
                }
                for (d, s) in win.iter_mut().skip(w - 1).step_by(w).zip(x) {
                    *d = conv_in(*s);
                }
            }
        }
    }
}

#[inline(always)]
fn shift_push_n<S: Lane, I: Lane, const W: usize>(win: &mut [S], x: &[I]) {
    let (rows, _) = win.as_chunks_mut::<W>();
    for (row, xv) in rows.iter_mut().zip(x) {
        let mut next = [S::ZERO; W];
        next[..W - 1].copy_from_slice(&row[1..]);
        next[W - 1] = conv_in(*xv);
        *row = next;
    }
}
