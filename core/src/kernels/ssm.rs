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
use super::isa::multiversion;
use super::math;

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
    pub(crate) fn dt(&self, t: usize, h: usize) -> f32 {
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
pub(crate) const STACK_N: usize = 256;

/// One head, one token: updates `st` (`[head_dim][state_size]`) and writes
/// `y` (`[head_dim]`).
#[inline(always)]
fn head_token<S: Lane, I: Lane>(
    fast: Fast,
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
        // Groups of eight rows on AVX-512 (see `rows_by_eight`); the loop
        // below takes the rest, one row at a time.
        let done = rows_by_eight(fast, rows, n, &x[p0..], b, c, dt, da, &mut xs, &mut sums);
        for (k, row) in rows.chunks_exact_mut(n).enumerate().skip(done) {
            if fast.prefetch {
                prefetch_ahead(row);
            }
            let xp = x[p0 + k].load();
            xs[k] = xp;
            let dtx = dt * xp;
            let (rc, rr) = row.as_chunks_mut::<16>();
            #[cfg(target_arch = "x86_64")]
            let hand = match rows_as::<S, half::bf16>(fast.bf16, rc) {
                // SAFETY: `fast.bf16` is true only when `avx512_bf16()` is.
                Some(r) => Some(unsafe { avx512::rows_bf16(r, bc, cc, da, dtx) }),
                None => match rows_as::<S, half::f16>(fast.avx512 || fast.avx2, rc) {
                    // SAFETY: `fast.avx512` is true only when `isa()` is AVX-512.
                    Some(r) if fast.avx512 => Some(unsafe { avx512::rows_f16(r, bc, cc, da, dtx) }),
                    // SAFETY: `fast.avx2` is true only when `isa()` is AVX2 (with F16C).
                    Some(r) => Some(unsafe { avx2f16::rows16(r, bc, cc, da, dtx) }),
                    None => None,
                },
            };
            #[cfg(not(target_arch = "x86_64"))]
            let hand: Option<[f32; 16]> = None;
            let acc = match hand {
                Some(acc) => acc,
                None => {
                    let mut acc = [0f32; 16];
                    for ((s, b16), c16) in rc.iter_mut().zip(bc).zip(cc) {
                        for l in 0..16 {
                            let v = s[l].load() * da + dtx * b16[l];
                            s[l] = S::store(v);
                            acc[l] += v * c16[l];
                        }
                    }
                    acc
                }
            };
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

/// The first rows of a state block (`rows.len() / n` of them, at most 16)
/// in groups of eight, where there is a path for the state type (f32 with
/// AVX-512 or AVX2; in prefills also bf16 with AVX-512 BF16 and f16 with
/// AVX-512): updates them, writes each row's `x` to
/// `xs` and its sum of `state * C` to `sums`, and returns how many rows it
/// did (a multiple of eight; 0 without a path). Eight rows at once make
/// eight independent chains of sums (one row's chain of adds is otherwise
/// the bound) and load each B and C chunk once for eight rows. Every row's
/// arithmetic, rounding and order of sums is the one-row loop's, so the
/// results are bit-identical to it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_by_eight<S: Lane, I: Lane>(
    fast: Fast,
    rows: &mut [S],
    n: usize,
    x: &[I],
    b: &[f32],
    c: &[f32],
    dt: f32,
    da: f32,
    xs: &mut [f32; 16],
    sums: &mut [f32; 16],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::TypeId;
        let t = TypeId::of::<S>();
        // 16-bit states only in prefills: in decode steps (memory bound)
        // their groups of eight measured slower than one row at a time on
        // 2 threads (Mamba2-2.7B, bf16: 17-18 ms vs 13-13.5 ms per 16 layers).
        let half = !fast.prefetch && (t == TypeId::of::<half::f16>() || (fast.bf16 && t == TypeId::of::<half::bf16>()));
        let on = (fast.avx512 && (t == TypeId::of::<f32>() || half)) || (fast.avx2 && t == TypeId::of::<f32>());
        if !on {
            return 0;
        }
        let (bc, br) = b.as_chunks::<16>();
        let (cc, cr) = c.as_chunks::<16>();
        let full = bc.len() * 16;
        let mut k = 0;
        for eight in rows.chunks_exact_mut(8 * n) {
            if fast.prefetch {
                // The next eight rows, whole: these eight are read at once.
                prefetch_lines(eight.as_ptr().wrapping_add(8 * n), 8 * n * std::mem::size_of::<S>());
            }
            let mut dtx = [0f32; 8];
            for (i, d) in dtx.iter_mut().enumerate() {
                xs[k + i] = x[k + i].load();
                *d = dt * xs[k + i];
            }
            // SAFETY: `fast.avx512` is true only when `isa()` is AVX-512,
            // `fast.avx2` only when it is AVX2, and `fast.bf16` only when
            // `avx512_bf16()` is (checked above for the type at hand);
            // `eight` holds 8 rows of `n >= 16 * bc.len()` lanes.
            let acc = unsafe {
                if let Some(r) = super::convert::same::<S, f32>(eight) {
                    if fast.avx512 {
                        avx512::rows8_f32(r, n, bc, cc, da, &dtx)
                    } else {
                        avx2f32::rows8(r, n, bc, cc, da, &dtx)
                    }
                } else if let Some(r) = super::convert::same::<S, half::bf16>(eight) {
                    avx512::rows8_bf16(r, n, bc, cc, da, &dtx)
                } else if let Some(r) = super::convert::same::<S, half::f16>(eight) {
                    avx512::rows8_f16(r, n, bc, cc, da, &dtx)
                } else {
                    unreachable!("checked above")
                }
            };
            for (i, row) in eight.chunks_exact_mut(n).enumerate() {
                let mut sum = hsum16(&acc[i]);
                for ((s, &bv), &cv) in row[full..].iter_mut().zip(br).zip(cr) {
                    let v = s.load() * da + dtx[i] * bv;
                    *s = S::store(v);
                    sum += v * cv;
                }
                sums[k + i] = sum;
            }
            k += 8;
        }
        k
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (fast, rows, n, x, b, c, dt, da, xs, sums);
        0
    }
}

/// How far ahead of the row being updated the state is prefetched. The
/// hardware prefetchers stop at 4 KiB page boundaries; asking for the
/// lines 2 KiB ahead keeps the stream going across them (measured on
/// Mamba2-2.7B x 8 slots, f32 state, 2 threads: 75 -> 61 ms per token;
/// 4 KiB ahead was no better).
const PREFETCH_BYTES: usize = 2048;

/// Prefetches the cache lines `PREFETCH_BYTES` after those of `row`.
/// Prefetches never fault, so running past the end of the state is
/// harmless; they change no result.
#[inline(always)]
fn prefetch_ahead<S>(row: &[S]) {
    prefetch_lines(row.as_ptr().cast::<u8>().wrapping_add(PREFETCH_BYTES), std::mem::size_of_val(row));
}

/// Prefetches the cache lines of the `bytes` bytes at `p` (a hint that
/// never faults and changes no result).
#[inline(always)]
fn prefetch_lines<T>(p: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = p.cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults; SSE is baseline x86-64.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.wrapping_add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// The instruction-set paths a task may take, read once per task.
#[derive(Clone, Copy)]
struct Fast {
    /// AVX-512 BF16 (bf16 state rows).
    bf16: bool,
    /// AVX-512F (f16 state rows).
    avx512: bool,
    /// AVX2 + F16C and not AVX-512 (f16 state rows).
    avx2: bool,
    /// Prefetch the state ahead of the rows: on for decode steps, which
    /// stream the state from memory; off for prefills, whose head state
    /// stays in cache across the tokens.
    prefetch: bool,
}

impl Fast {
    /// The paths of this machine, with prefetching as asked.
    #[inline(always)]
    fn detect(prefetch: bool) -> Fast {
        Fast {
            bf16: super::isa::avx512_bf16(),
            avx512: super::isa::isa() == super::isa::Isa::Avx512,
            avx2: super::isa::isa() == super::isa::Isa::Avx2,
            prefetch,
        }
    }
}

/// `rows` as rows of `T` lanes when `on` is set and the state is `T`: the
/// state rows that a hand-written path takes.
#[inline(always)]
fn rows_as<S: Lane, T: 'static>(on: bool, rows: &mut [[S; 16]]) -> Option<&mut [[T; 16]]> {
    if on { super::convert::same::<[S; 16], [T; 16]>(rows) } else { None }
}

/// The bf16 and f16 state rows with AVX-512: one loop, 16 lanes per step,
/// with the storage conversions of each type.
/// - bf16 (AVX-512 BF16): one `vcvtneps2bf16` rounds 16 lanes to nearest
///   even where the portable path needs eight integer operations. It
///   flushes subnormal inputs to zero, so a vector holding one is rounded
///   again the portable way.
/// - f16 (AVX-512F): `vcvtph2ps` widens exactly and `vcvtps2ph` rounds to
///   nearest even with IEEE subnormals and overflow, as the portable
///   conversions do; only NaNs differ (the instruction keeps the payload,
///   the portable path writes the canonical quiet NaN), so a vector holding
///   a NaN is rounded the portable way.
///
/// Either way results stay bit-identical to every other path.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// A 16-bit state type: 16 lanes widened to f32 and rounded back.
    pub(super) trait Half16: Copy {
        /// Widens the 16 lanes at `p`.
        unsafe fn load(p: *const __m256i) -> __m512;
        /// Rounds 16 lanes as the portable `Lane::store` does.
        unsafe fn store(v: __m512) -> __m256i;
    }

    impl Half16 for bf16 {
        #[inline(always)]
        unsafe fn load(p: *const __m256i) -> __m512 {
            // SAFETY: 32 readable bytes at `p` (the caller's promise).
            unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p)))) }
        }
        #[inline(always)]
        unsafe fn store(v: __m512) -> __m256i {
            // SAFETY: the caller enables AVX-512 BF16 and DQ.
            unsafe {
                if _mm512_fpclass_ps_mask::<0x20>(v) != 0 {
                    return portable(v, super::super::convert::f32_to_bf16_bits);
                }
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v))
            }
        }
    }

    impl Half16 for f16 {
        #[inline(always)]
        unsafe fn load(p: *const __m256i) -> __m512 {
            // SAFETY: 32 readable bytes at `p` (the caller's promise).
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p)) }
        }
        #[inline(always)]
        unsafe fn store(v: __m512) -> __m256i {
            // SAFETY: the caller enables AVX-512F.
            unsafe {
                if _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) != 0 {
                    return portable(v, super::super::convert::f32_to_f16_bits);
                }
                _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
            }
        }
    }

    /// The 16-lane body of one state row (see `head_token`): updates
    /// `rows` in place and returns the 16 lane sums of `state * C`.
    #[inline(always)]
    unsafe fn rows<S: Half16>(rows: &mut [[S; 16]], b: &[[f32; 16]], c: &[[f32; 16]], da: f32, dtx: f32) -> [f32; 16] {
        // SAFETY: the callers enable AVX-512F; `p`, `b16` and `c16` point
        // to 16 valid lanes each and the unaligned forms are used.
        unsafe {
            let vda = _mm512_set1_ps(da);
            let vdtx = _mm512_set1_ps(dtx);
            let mut acc = _mm512_setzero_ps();
            for ((s, b16), c16) in rows.iter_mut().zip(b).zip(c) {
                let p = s.as_mut_ptr().cast::<__m256i>();
                let v =
                    _mm512_add_ps(_mm512_mul_ps(S::load(p), vda), _mm512_mul_ps(vdtx, _mm512_loadu_ps(b16.as_ptr())));
                _mm256_storeu_si256(p, S::store(v));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(v, _mm512_loadu_ps(c16.as_ptr())));
            }
            std::mem::transmute::<__m512, [f32; 16]>(acc)
        }
    }

    /// A state type as 16 f32 lanes: f32 itself, or a 16-bit type widened
    /// and rounded back as [`Half16`] does.
    pub(super) trait Lanes16: Copy {
        /// The 16 lanes at `p`, as f32.
        unsafe fn get(p: *const Self) -> __m512;
        /// Stores 16 lanes at `p`, rounded as the portable path rounds.
        unsafe fn put(p: *mut Self, v: __m512);
    }

    impl Lanes16 for f32 {
        #[inline(always)]
        unsafe fn get(p: *const f32) -> __m512 {
            // SAFETY: 16 readable lanes at `p` (the caller's promise).
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn put(p: *mut f32, v: __m512) {
            // SAFETY: 16 writable lanes at `p` (the caller's promise).
            unsafe { _mm512_storeu_ps(p, v) }
        }
    }

    impl<S: Half16> Lanes16 for S {
        #[inline(always)]
        unsafe fn get(p: *const S) -> __m512 {
            // SAFETY: 16 readable lanes (32 bytes) at `p`.
            unsafe { S::load(p.cast()) }
        }
        #[inline(always)]
        unsafe fn put(p: *mut S, v: __m512) {
            // SAFETY: 16 writable lanes (32 bytes) at `p`.
            unsafe { _mm256_storeu_si256(p.cast(), S::store(v)) }
        }
    }

    /// Eight state rows of `n` lanes at once (see `rows_by_eight`): the
    /// first `16 * b.len()` lanes of each row updated in place with row
    /// `i`'s `dtx[i]`, and the 16 lane sums of `state * C` per row, each
    /// row's lanes computed and summed as in the one-row loop.
    ///
    /// # Safety
    /// AVX-512F (and what `S`'s conversions need) must be available;
    /// `rows` holds 8 rows of `n` lanes, `n >= 16 * b.len()`,
    /// `c.len() == b.len()`.
    #[inline(always)]
    unsafe fn rows8<S: Lanes16>(
        rows: &mut [S],
        n: usize,
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: &[f32; 8],
    ) -> [[f32; 16]; 8] {
        debug_assert!(rows.len() >= 8 * n && n >= 16 * b.len() && c.len() == b.len());
        // SAFETY: the features are the caller's promise; every pointer
        // below is inside `rows`, `b` or `c` (lanes `16 * j..16 * j + 16`
        // of each of the 8 rows, the caller's promise on `n`).
        unsafe {
            let vda = _mm512_set1_ps(da);
            let d = dtx.map(|v| _mm512_set1_ps(v));
            let mut acc = [_mm512_setzero_ps(); 8];
            let base = rows.as_mut_ptr();
            for (j, (b16, c16)) in b.iter().zip(c).enumerate() {
                let vb = _mm512_loadu_ps(b16.as_ptr());
                let vc = _mm512_loadu_ps(c16.as_ptr());
                for (r, a) in acc.iter_mut().enumerate() {
                    let p = base.add(r * n + 16 * j);
                    let v = _mm512_add_ps(_mm512_mul_ps(S::get(p), vda), _mm512_mul_ps(d[r], vb));
                    S::put(p, v);
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(v, vc));
                }
            }
            std::mem::transmute::<[__m512; 8], [[f32; 16]; 8]>(acc)
        }
    }

    /// `rows8` for f32 state.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows8_f32(
        r: &mut [f32],
        n: usize,
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: &[f32; 8],
    ) -> [[f32; 16]; 8] {
        // SAFETY: the features `rows8` needs are enabled here.
        unsafe { rows8(r, n, b, c, da, dtx) }
    }

    /// `rows8` for bf16 state.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    pub(super) unsafe fn rows8_bf16(
        r: &mut [bf16],
        n: usize,
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: &[f32; 8],
    ) -> [[f32; 16]; 8] {
        // SAFETY: as above.
        unsafe { rows8(r, n, b, c, da, dtx) }
    }

    /// `rows8` for f16 state.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn rows8_f16(
        r: &mut [f16],
        n: usize,
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: &[f32; 8],
    ) -> [[f32; 16]; 8] {
        // SAFETY: as above.
        unsafe { rows8(r, n, b, c, da, dtx) }
    }

    /// `rows` for bf16 state.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    pub(super) unsafe fn rows_bf16(
        r: &mut [[bf16; 16]],
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: f32,
    ) -> [f32; 16] {
        // SAFETY: the features `rows` needs are enabled here.
        unsafe { rows(r, b, c, da, dtx) }
    }

    /// `rows` for f16 state.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn rows_f16(
        r: &mut [[f16; 16]],
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: f32,
    ) -> [f32; 16] {
        // SAFETY: as above.
        unsafe { rows(r, b, c, da, dtx) }
    }

    /// The portable rounding of 16 lanes (the rare vectors the
    /// instructions would round differently).
    #[cold]
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn portable(v: __m512, round: fn(f32) -> u16) -> __m256i {
        // SAFETY: same-size plain-data transmutes.
        let lanes = unsafe { std::mem::transmute::<__m512, [f32; 16]>(v) };
        unsafe { std::mem::transmute::<[u16; 16], __m256i>(lanes.map(round)) }
    }
}

/// The f16 state rows with AVX2 + F16C: as `avx512::rows_f16`, 8 lanes at a time
/// (two halves per 16-lane chunk, each lane summed in the same order).
#[cfg(target_arch = "x86_64")]
mod avx2f16 {
    use half::f16;
    use std::arch::x86_64::*;

    /// As `avx512::rows_f16`.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn rows16(
        rows: &mut [[f16; 16]],
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: f32,
    ) -> [f32; 16] {
        let vda = _mm256_set1_ps(da);
        let vdtx = _mm256_set1_ps(dtx);
        let mut acc = [_mm256_setzero_ps(); 2];
        for ((s, b16), c16) in rows.iter_mut().zip(b).zip(c) {
            for (h, a) in acc.iter_mut().enumerate() {
                // SAFETY: lanes 8h..8h + 8 of `s`, `b16` and `c16` are
                // valid; the unaligned forms are used.
                unsafe {
                    let p = s.as_mut_ptr().add(8 * h).cast::<__m128i>();
                    let old = _mm256_cvtph_ps(_mm_loadu_si128(p));
                    let v = _mm256_add_ps(
                        _mm256_mul_ps(old, vda),
                        _mm256_mul_ps(vdtx, _mm256_loadu_ps(b16.as_ptr().add(8 * h))),
                    );
                    let mut out = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                    if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0 {
                        out = portable(v);
                    }
                    _mm_storeu_si128(p, out);
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(v, _mm256_loadu_ps(c16.as_ptr().add(8 * h))));
                }
            }
        }
        // SAFETY: two __m256 are 16 f32 lanes; any bits are valid.
        unsafe { std::mem::transmute::<[__m256; 2], [f32; 16]>(acc) }
    }

    /// The portable rounding of 8 lanes (the rare vectors with a NaN).
    #[cold]
    #[inline(never)]
    #[target_feature(enable = "avx2")]
    fn portable(v: __m256) -> __m128i {
        // SAFETY: same-size plain-data transmutes.
        let lanes = unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) };
        let bits = lanes.map(super::super::convert::f32_to_f16_bits);
        unsafe { std::mem::transmute::<[u16; 8], __m128i>(bits) }
    }
}

/// The f32 state rows with AVX2: `avx512::rows8_f32` 8 lanes at a time,
/// four rows at once (eight accumulators of two halves: what the 16
/// vector registers hold), each lane summed in the same order.
#[cfg(target_arch = "x86_64")]
mod avx2f32 {
    use std::arch::x86_64::*;

    /// As `avx512::rows8_f32`.
    ///
    /// # Safety
    /// AVX2 must be available; as `avx512::rows8_f32` otherwise.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows8(
        rows: &mut [f32],
        n: usize,
        b: &[[f32; 16]],
        c: &[[f32; 16]],
        da: f32,
        dtx: &[f32; 8],
    ) -> [[f32; 16]; 8] {
        debug_assert!(rows.len() >= 8 * n && n >= 16 * b.len() && c.len() == b.len());
        let vda = _mm256_set1_ps(da);
        let mut out = [[0f32; 16]; 8];
        let base = rows.as_mut_ptr();
        for q in 0..2 {
            let d = [0, 1, 2, 3].map(|r| _mm256_set1_ps(dtx[4 * q + r]));
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for (j, (b16, c16)) in b.iter().zip(c).enumerate() {
                for h in 0..2 {
                    // SAFETY: lanes `16 j + 8 h..+ 8` of rows `4 q..4 q + 4`
                    // lie inside `rows` (the caller's promise), and of `b16`,
                    // `c16`; the unaligned forms are used.
                    unsafe {
                        let vb = _mm256_loadu_ps(b16.as_ptr().add(8 * h));
                        let vc = _mm256_loadu_ps(c16.as_ptr().add(8 * h));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let p = base.add((4 * q + r) * n + 16 * j + 8 * h);
                            let v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p), vda), _mm256_mul_ps(d[r], vb));
                            _mm256_storeu_ps(p, v);
                            a[h] = _mm256_add_ps(a[h], _mm256_mul_ps(v, vc));
                        }
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: two __m256 are 16 f32 lanes.
                out[4 * q + r] = unsafe { std::mem::transmute::<[__m256; 2], [f32; 16]>(*a) };
            }
        }
        out
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

/// Where B and C rows longer than the stack buffers are converted to f32:
/// allocated (fallibly) before a call writes anything, and only for state
/// sizes above `STACK_N`; such calls run on the calling thread.
pub(crate) struct Spill {
    b_spill: Vec<f32>,
    c_spill: Vec<f32>,
}

impl Spill {
    /// Room for two rows of `state_size` when they do not fit the stack.
    pub(crate) fn for_state(state_size: usize) -> crate::error::Result<Spill> {
        if state_size <= STACK_N {
            return Ok(Spill::none());
        }
        let b_spill = crate::buffer::try_with_capacity(state_size, "B row")?;
        let c_spill = crate::buffer::try_with_capacity(state_size, "C row")?;
        Ok(Spill { b_spill, c_spill })
    }

    /// No spill (state rows fit the stack buffers).
    pub(crate) fn none() -> Spill {
        Spill { b_spill: Vec::new(), c_spill: Vec::new() }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.b_spill.capacity() == 0
    }
}

/// Converts a run of io elements to f32 in `buf` (stack) or `spill` (its
/// capacity reserved by `Spill::for_state`: nothing is allocated here).
#[inline(always)]
fn to_f32<'b, I: Lane>(src: &[I], buf: &'b mut [f32; STACK_N], spill: &'b mut Vec<f32>) -> &'b [f32] {
    if src.len() <= STACK_N {
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.load();
        }
        &buf[..src.len()]
    } else {
        assert!(spill.capacity() >= src.len(), "state row spill not reserved");
        spill.clear();
        spill.extend(src.iter().map(|s| s.load()));
        spill
    }
}

/// Scratch space for one task's B/C rows in f32.
struct Scratch<'s> {
    b: [f32; STACK_N],
    c: [f32; STACK_N],
    spill: &'s mut Spill,
    /// The hand-written paths this task may take.
    fast: Fast,
}

impl<'s> Scratch<'s> {
    #[inline(always)]
    fn new(spill: &'s mut Spill, prefetch: bool) -> Self {
        Scratch { b: [0f32; STACK_N], c: [0f32; STACK_N], spill, fast: Fast::detect(prefetch) }
    }
}

/// Head `h` at token row `t`: updates `st` and writes `yh`.
#[inline(always)]
fn head_at<S: Lane, I: Lane>(
    job: &SsmJob<'_, I>,
    t: usize,
    h: usize,
    st: &mut [S],
    yh: &mut [I],
    sc: &mut Scratch<'_>,
) {
    let (p, n) = (job.head_dim, job.state_size);
    let g = h / (job.heads / job.groups);
    let dt = job.dt(t, h);
    let da = math::exp(dt * job.a[h]);
    let d = job.d.map_or(0.0, |d| d[h]);
    let off = (t * job.groups + g) * n;
    let bf = to_f32(&job.b[off..off + n], &mut sc.b, &mut sc.spill.b_spill);
    let cf = to_f32(&job.c[off..off + n], &mut sc.c, &mut sc.spill.c_spill);
    let xo = (t * job.heads + h) * p;
    let z = job.z.map(|z| &z[xo..xo + p]);
    head_token(sc.fast, st, n, &job.x[xo..xo + p], z, yh, bf, cf, dt, da, d);
}

multiversion! {
    /// Heads `h0..h0 + k` of one slot for token row `t`: `state` holds
    /// those heads' states, `y` their outputs.
    fn ssm_heads<S: Lane, I: Lane>(job: &SsmJob<'_, I>, t: usize, h0: usize, state: &mut [S], y: &mut [I], spill: &mut Spill) {
        let (p, n) = (job.head_dim, job.state_size);
        let mut sc = Scratch::new(spill, true);
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
    fn ssm_prefill_heads<S: Lane, I: Lane>(job: &SsmJob<'_, I>, t0: usize, t1: usize, h0: usize, state: &mut [S], y: &super::RowWriter<'_, I>, spill: &mut Spill) {
        let (p, n) = (job.head_dim, job.state_size);
        let mut sc = Scratch::new(spill, false);
        for (k, st) in state.chunks_exact_mut(p * n).enumerate() {
            let h = h0 + k;
            for t in t0..t1 {
                // The next token's x row is 20 KiB away at Mamba2-2.7B: a
                // miss each token that the hardware prefetchers do not
                // foresee.
                if t + 1 < t1 {
                    let xo = ((t + 1) * job.heads + h) * p;
                    prefetch_lines(job.x[xo..].as_ptr(), p * std::mem::size_of::<I>());
                    prefetch_lines(y.addr(xo), p * std::mem::size_of::<I>());
                }
                // SAFETY: rows (t, h) of this sequence and head range belong
                // to this task alone.
                let yh = unsafe { y.row((t * job.heads + h) * p, p) };
                head_at(job, t, h, st, yh, &mut sc);
            }
        }
    }
}

multiversion! {
    /// One head, one token of a speculative run, on inputs already in f32
    /// (`x`, `z`, `y`: `[head_dim]`; `b`, `c`: `[state_size]`) with the
    /// processed `dt` and `da = exp(dt * A)`: exactly the arithmetic of a
    /// decode step on the same values (the step loads its inputs to f32
    /// first, and rounds `y` to the activations' dtype last). Updates `st`
    /// (`[head_dim][state_size]`) and writes `y` in f32.
    fn spec_head<S: Lane>(st: &mut [S], x: &[f32], z: Option<&[f32]>, y: &mut [f32], b: &[f32], c: &[f32], dt: f32, da: f32, d: f32) {
        head_token(Fast::detect(true), st, b.len(), x, z, y, b, c, dt, da, d);
    }
}

/// One head of a speculative chain run, for [`spec_chain_head`]: token
/// `t`'s logged `x` (`[heads * head_dim]`), `B` (`[groups * state]`), `dt`
/// and `da` (`[heads]`) sit in `log` at `base + t * per_token` plus the
/// offsets; its `C` and `z` (f32) at row `row0 + t` of `c` and `z`; its
/// `y` goes to row `row0 + t` of the writer.
pub(crate) struct ChainHead<'a> {
    pub log: &'a [f32],
    pub base: usize,
    pub per_token: usize,
    pub x_off: usize,
    pub b_off: usize,
    pub dt_off: usize,
    pub da_off: usize,
    pub c: &'a [f32],
    pub z: Option<&'a [f32]>,
    pub row0: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub groups: usize,
    pub state: usize,
    pub d: f32,
}

/// Tokens a chain verify carries per pass over a state row.
const CHAIN_GROUP: usize = 8;

multiversion! {
    /// The verify of head `h` over a chain of tokens, from the committed
    /// state `st` (`[head_dim][state]`, read once, never written): each
    /// row is loaded once and carried through up to 8 tokens at a time, so
    /// the tokens' sums run as independent chains instead of one chain per
    /// token. Per token and row it does the arithmetic of [`head_token`] in
    /// the same order (the state element `v = s * da + dtx * b`, rounded to
    /// the storage dtype before the next token; lanes of 16 summed by
    /// [`hsum16`], then the tail in order; then `D` and the gate), so `y`
    /// is bit-identical to decode steps. State sizes above 256 are not
    /// taken here.
    fn spec_chain_head<S: Lane>(st: &[S], hd: &ChainHead<'_>, h: usize, y: &super::RowWriter<'_, f32>) {
        let (p, n) = (hd.head_dim, hd.state);
        let g = h / (hd.heads / hd.groups);
        let full = n / 16 * 16;
        let mut cur = [0f32; STACK_N];
        for (row_i, row) in st.chunks_exact(n).enumerate() {
            prefetch_ahead(row);
            for (cv, s) in cur.iter_mut().zip(row) {
                *cv = s.load();
            }
            let mut t0 = 0;
            while t0 < hd.tokens {
                let k = CHAIN_GROUP.min(hd.tokens - t0);
                let mut da = [0f32; CHAIN_GROUP];
                let mut dtx = [0f32; CHAIN_GROUP];
                let mut xs = [0f32; CHAIN_GROUP];
                let mut bs: [&[f32]; CHAIN_GROUP] = [&[]; CHAIN_GROUP];
                let mut cs: [&[f32]; CHAIN_GROUP] = [&[]; CHAIN_GROUP];
                for j in 0..k {
                    let t = t0 + j;
                    let e = &hd.log[hd.base + t * hd.per_token..hd.base + (t + 1) * hd.per_token];
                    let x = e[hd.x_off + h * p + row_i];
                    xs[j] = x;
                    dtx[j] = e[hd.dt_off + h] * x;
                    da[j] = e[hd.da_off + h];
                    bs[j] = &e[hd.b_off + g * n..hd.b_off + (g + 1) * n];
                    let r = hd.row0 + t;
                    cs[j] = &hd.c[(r * hd.groups + g) * n..(r * hd.groups + g + 1) * n];
                }
                let mut acc = [[0f32; 16]; CHAIN_GROUP];
                for c0 in (0..full).step_by(16) {
                    let mut sv = [0f32; 16];
                    sv.copy_from_slice(&cur[c0..c0 + 16]);
                    for j in 0..k {
                        let (b16, c16) = (&bs[j][c0..c0 + 16], &cs[j][c0..c0 + 16]);
                        for l in 0..16 {
                            let v = sv[l] * da[j] + dtx[j] * b16[l];
                            sv[l] = S::store(v).load();
                            acc[j][l] += v * c16[l];
                        }
                    }
                    cur[c0..c0 + 16].copy_from_slice(&sv);
                }
                for j in 0..k {
                    let mut sum = hsum16(&acc[j]);
                    for e in full..n {
                        let v = cur[e] * da[j] + dtx[j] * bs[j][e];
                        cur[e] = S::store(v).load();
                        sum += v * cs[j][e];
                    }
                    let t = t0 + j;
                    let r = hd.row0 + t;
                    let mut out = sum + hd.d * xs[j];
                    if let Some(z) = hd.z {
                        out *= math::silu(z[(r * hd.heads + h) * p + row_i]);
                    }
                    // SAFETY: row r, head h of y belongs to this task alone.
                    unsafe { y.row((r * hd.heads + h) * p + row_i, 1)[0] = out };
                }
                t0 += k;
            }
        }
    }
}

/// The accepted path of one slot, for [`spec_commit_head`]: token `t`'s
/// logged `x`, `B`, `dt` and `da` sit in `log` at `base + t * per_token`
/// plus the offsets (as in [`ChainHead`]).
pub(crate) struct CommitHead<'a> {
    pub log: &'a [f32],
    pub base: usize,
    pub per_token: usize,
    pub x_off: usize,
    pub b_off: usize,
    pub dt_off: usize,
    pub da_off: usize,
    pub path: &'a [usize],
    pub heads: usize,
    pub head_dim: usize,
    pub groups: usize,
    pub state: usize,
}

multiversion! {
    /// Folds the tokens of `path` into head `h`'s state `st` (`[head_dim][state]`,
    /// state sizes up to 256): each row is loaded once, updated token by
    /// token with the step's arithmetic (`v = s * da + dtx * b`, rounded to
    /// the storage dtype after each token) and stored once. No `y` is
    /// computed. Bit-identical to the states decode steps leave.
    fn spec_commit_head<S: Lane>(st: &mut [S], ch: &CommitHead<'_>, h: usize) {
        let (p, n) = (ch.head_dim, ch.state);
        let g = h / (ch.heads / ch.groups);
        let mut cur = [0f32; STACK_N];
        for (row_i, row) in st.chunks_exact_mut(n).enumerate() {
            prefetch_ahead(row);
            for (cv, s) in cur.iter_mut().zip(row.iter()) {
                *cv = s.load();
            }
            for &t in ch.path {
                let e = &ch.log[ch.base + t * ch.per_token..ch.base + (t + 1) * ch.per_token];
                let dtx = e[ch.dt_off + h] * e[ch.x_off + h * p + row_i];
                let da = e[ch.da_off + h];
                let b = &e[ch.b_off + g * n..ch.b_off + (g + 1) * n];
                for (cv, &bv) in cur[..n].iter_mut().zip(b) {
                    *cv = S::store(*cv * da + dtx * bv).load();
                }
            }
            for (s, &cv) in row.iter_mut().zip(cur.iter()) {
                *s = S::store(cv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// Rows of `S` whose update lands on every rounding class (subnormal
    /// results, ties, overflow to infinity, infinities, NaNs), through the
    /// hand-written path `hand` and the portable loop: bit-identical state
    /// (NaN payloads included) and lane sums.
    /// A hand-written row path (`avx512::rows_bf16` and the like).
    type RowsFn<S> = unsafe fn(&mut [[S; 16]], &[[f32; 16]], &[[f32; 16]], f32, f32) -> [f32; 16];

    fn hand_matches_portable<S: Lane>(hand: RowsFn<S>, bits: fn(S) -> u16, raw: fn(u16) -> S) {
        let specials = [
            0.0f32,
            -0.0,
            1.0e-39,
            -1.0e-39,
            1.1754942e-38,
            1.0e-45,
            1.0,
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            3.389e38,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -2.5,
            65504.0,
            65520.0,
            6.0e-8,
            2.9e-8,
            1.0e-30,
        ];
        let mut rng = m2c_testkit::Rng::new(0x9E37_79B9);
        let mut next = || rng.next_u64() as u32;
        for round in 0..200 {
            let n = 128;
            let row: Vec<S> = (0..n)
                .map(|i| {
                    let r = next();
                    if r % 8 == 1 {
                        // Any bit pattern: NaNs with payloads, subnormals.
                        return raw((r >> 8) as u16);
                    }
                    let v = if r % 4 == 0 { specials[(r as usize / 4) % specials.len()] } else { f32::from_bits(r) };
                    S::store(if i % 3 == 0 { v } else { v.clamp(-1.0e3, 1.0e3) })
                })
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| if (i + round) % 5 == 0 { 1.0e-39 } else { (next() % 1000) as f32 / 250.0 - 2.0 })
                .collect();
            let c: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32 / 500.0 - 1.0).collect();
            let (da, dtx) = match round % 3 {
                0 => (0.999, 1.0e-38),
                1 => (0.5, (next() % 100) as f32 / 10.0),
                _ => (1.0, 7.0e4),
            };
            let (bc, _) = b.as_chunks::<16>();
            let (cc, _) = c.as_chunks::<16>();
            let mut want = row.clone();
            let (wc, _) = want.as_chunks_mut::<16>();
            let mut acc_want = [0f32; 16];
            for ((s, b16), c16) in wc.iter_mut().zip(bc).zip(cc) {
                for l in 0..16 {
                    let v = s[l].load() * da + dtx * b16[l];
                    s[l] = S::store(v);
                    acc_want[l] += v * c16[l];
                }
            }
            let mut got = row.clone();
            let (gc, _) = got.as_chunks_mut::<16>();
            // SAFETY: the callers check the CPU first.
            let acc_got = unsafe { hand(gc, bc, cc, da, dtx) };
            let all = |v: &[S]| v.iter().map(|x| bits(*x)).collect::<Vec<_>>();
            assert_eq!(all(&got), all(&want), "round {round}");
            for l in 0..16 {
                assert!(
                    acc_got[l].to_bits() == acc_want[l].to_bits() || acc_got[l].is_nan() && acc_want[l].is_nan(),
                    "round {round} lane {l}"
                );
            }
        }
    }

    #[test]
    fn the_avx512_bf16_rows_round_exactly_like_the_portable_path() {
        if !super::super::isa::avx512_bf16() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        hand_matches_portable::<bf16>(avx512::rows_bf16, |x| x.to_bits(), bf16::from_bits);
    }

    #[test]
    fn the_avx2_f16_rows_round_exactly_like_the_portable_path() {
        if !super::super::isa::available().contains(&super::super::isa::Isa::Avx2) {
            eprintln!("skipped: this CPU has no AVX2/F16C");
            return;
        }
        hand_matches_portable::<half::f16>(avx2f16::rows16, |x| x.to_bits(), half::f16::from_bits);
    }

    #[test]
    fn the_avx512_f16_rows_round_exactly_like_the_portable_path() {
        if super::super::isa::isa() != super::super::isa::Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        hand_matches_portable::<half::f16>(avx512::rows_f16, |x| x.to_bits(), half::f16::from_bits);
    }
}
