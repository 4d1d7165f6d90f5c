//! Zeroed, 64-byte-aligned storage that does not touch its pages when
//! allocated: `calloc` hands large requests to `mmap`, whose pages are
//! zero and not yet resident, so creating a big cache is cheap until used.

use crate::config::ALIGN;
use crate::dtype::{DType, Slice, SliceMut};
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::ptr::NonNull;

/// An owned, zero-initialised, `ALIGN`-aligned allocation from `calloc`.
struct RawZeroed {
    /// The pointer `calloc` returned (what `free` takes).
    raw: NonNull<u8>,
    /// `raw` rounded up to `ALIGN`.
    data: NonNull<u8>,
    len_bytes: usize,
}

// SAFETY: uniquely owned heap memory; access goes through the owners'
// `&self` / `&mut self`, so the usual borrow rules make sharing sound.
unsafe impl Send for RawZeroed {}
unsafe impl Sync for RawZeroed {}

impl RawZeroed {
    fn new(len_bytes: usize) -> Result<Self> {
        let oom = || Error::OutOfMemory(format!("cannot allocate {len_bytes} bytes"));
        let total = len_bytes.checked_add(ALIGN).ok_or_else(oom)?;
        if total > isize::MAX as usize {
            return Err(oom());
        }
        // SAFETY: calloc is safe to call with any size; NULL means failure.
        let raw = NonNull::new(unsafe { libc::calloc(1, total) } as *mut u8).ok_or_else(oom)?;
        let offset = raw.as_ptr().align_offset(ALIGN);
        // SAFETY: offset < ALIGN, so data stays inside the allocation of
        // len_bytes + ALIGN bytes, with len_bytes bytes after it.
        let data = unsafe { NonNull::new_unchecked(raw.as_ptr().add(offset)) };
        Ok(RawZeroed { raw, data, len_bytes })
    }
}

impl Drop for RawZeroed {
    fn drop(&mut self) {
        // SAFETY: raw came from calloc and is freed exactly once.
        unsafe { libc::free(self.raw.as_ptr() as *mut libc::c_void) }
    }
}

/// One owned, zero-initialised, `ALIGN`-aligned byte buffer holding
/// elements of one dtype.
pub struct AlignedBuf {
    mem: RawZeroed,
    dtype: DType,
}

impl AlignedBuf {
    /// Allocates `len_bytes` zero bytes (a multiple of the dtype size).
    pub fn zeroed(len_bytes: usize, dtype: DType) -> Result<Self> {
        debug_assert_eq!(len_bytes % dtype.size(), 0);
        Ok(AlignedBuf { mem: RawZeroed::new(len_bytes)?, dtype })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len_bytes(&self) -> usize {
        self.mem.len_bytes
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.mem.len_bytes / self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.mem.len_bytes == 0
    }

    /// The start of the storage, for zero-copy views handed to C.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.data.as_ptr()
    }

    /// The elements, typed.
    pub fn slice(&self) -> Slice<'_> {
        let n = self.len();
        let p = self.mem.data.as_ptr();
        // SAFETY: `data` is ALIGN-aligned (enough for every dtype), valid
        // for len_bytes initialised bytes, and every bit pattern is a valid
        // f32/bf16/f16.
        unsafe {
            match self.dtype {
                DType::F32 => Slice::F32(std::slice::from_raw_parts(p as *const f32, n)),
                DType::BF16 => Slice::BF16(std::slice::from_raw_parts(p as *const bf16, n)),
                DType::F16 => Slice::F16(std::slice::from_raw_parts(p as *const f16, n)),
            }
        }
    }

    /// The elements, typed and writable.
    pub fn slice_mut(&mut self) -> SliceMut<'_> {
        let n = self.len();
        let p = self.mem.data.as_ptr();
        // SAFETY: as in `slice`, and `&mut self` makes the borrow unique.
        unsafe {
            match self.dtype {
                DType::F32 => SliceMut::F32(std::slice::from_raw_parts_mut(p as *mut f32, n)),
                DType::BF16 => SliceMut::BF16(std::slice::from_raw_parts_mut(p as *mut bf16, n)),
                DType::F16 => SliceMut::F16(std::slice::from_raw_parts_mut(p as *mut f16, n)),
            }
        }
    }

    /// Hands the whole pages of the storage back to the OS (the contents
    /// become unspecified: zero on Linux): for scratch copies that should
    /// not stay resident. A hint: where the OS declines, nothing changes.
    pub fn discard(&mut self) {
        #[cfg(unix)]
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let page = if page > 0 { page as usize } else { return };
            let start = self.mem.data.as_ptr() as usize;
            let first = start.div_ceil(page) * page;
            let end = (start + self.mem.len_bytes) / page * page;
            if end > first {
                // SAFETY: [first, end) lies inside this allocation, which
                // `&mut self` owns exclusively; MADV_DONTNEED on private
                // anonymous memory only drops its contents, which no
                // reference observes during the call.
                unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
            }
        }
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: valid for len_bytes initialised bytes.
        unsafe { std::slice::from_raw_parts(self.mem.data.as_ptr(), self.mem.len_bytes) }
    }

    /// The raw bytes, writable. Any bit pattern is a valid element.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: valid for len_bytes initialised bytes; `&mut self` makes
        // the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.mem.data.as_ptr(), self.mem.len_bytes) }
    }
}

/// Plain integers whose all-zero bit pattern is zero and every bit pattern
/// is valid.
pub trait Zeroable: Copy + Send + Sync + 'static {}
impl Zeroable for u8 {}
impl Zeroable for u32 {}
impl Zeroable for u64 {}
impl Zeroable for f32 {}

/// A fixed-length vector of zeroed integers whose pages are not touched
/// until used (per-slot tables of a cache with very many slots).
pub struct ZeroedVec<T: Zeroable> {
    mem: RawZeroed,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Zeroable> ZeroedVec<T> {
    pub fn new(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::OutOfMemory(format!("cannot allocate {len} table entries")))?;
        Ok(ZeroedVec { mem: RawZeroed::new(bytes)?, len, _t: std::marker::PhantomData })
    }
}

impl<T: Zeroable> std::ops::Deref for ZeroedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: ALIGN-aligned, len elements of zero-initialised memory,
        // and every bit pattern is a valid T.
        unsafe { std::slice::from_raw_parts(self.mem.data.as_ptr() as *const T, self.len) }
    }
}

impl<T: Zeroable> std::ops::DerefMut for ZeroedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.mem.data.as_ptr() as *mut T, self.len) }
    }
}

/// A vector of `n` copies of `v`, or `OutOfMemory` (never an abort) when
/// the allocator refuses. For scratch space sized by caller input.
pub fn try_vec<T: Clone>(n: usize, v: T, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("cannot allocate {what} ({n} elements)")))?;
    out.resize(n, v);
    Ok(out)
}

/// An empty vector with room for `n` elements, or `OutOfMemory`.
pub fn try_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("cannot allocate {what} ({n} elements)")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_and_sized() {
        for dtype in DType::ALL {
            let b = AlignedBuf::zeroed(4096, dtype).unwrap();
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), 4096 / dtype.size());
            assert!(b.bytes().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn impossible_sizes_are_out_of_memory_not_an_abort() {
        assert!(matches!(AlignedBuf::zeroed(usize::MAX & !63, DType::BF16), Err(Error::OutOfMemory(_))));
        // Larger than this machine's memory and swap: calloc refuses.
        assert!(matches!(AlignedBuf::zeroed(1 << 46, DType::F32), Err(Error::OutOfMemory(_))));
    }

    #[test]
    fn discard_keeps_the_buffer_usable() {
        let mut b = AlignedBuf::zeroed(1 << 20, DType::F32).unwrap();
        b.bytes_mut().fill(0xAB);
        b.discard();
        // Whatever the OS did with the pages, the buffer can be written
        // and read again, and bytes outside whole pages are kept.
        assert!(b.bytes()[0] == 0xAB || b.bytes()[0] == 0);
        b.bytes_mut().fill(7);
        assert!(b.bytes().iter().all(|&x| x == 7));
        #[cfg(target_os = "linux")]
        {
            b.discard();
            // On Linux the discarded whole pages read as zero: the memory
            // really went back.
            let page = 4096;
            let mid = (b.as_ptr() as usize).div_ceil(page) * page - b.as_ptr() as usize;
            assert_eq!(b.bytes()[mid], 0);
        }
    }
}

/// Copies `src` into `dst` (same length) with non-temporal stores where the
/// CPU has them (every x86-64: SSE2), so a large copy does not first read
/// the destination's lines into the cache (a plain copy of a buffer larger
/// than the cache moves its bytes three times, this one twice). For
/// destinations no one reads soon: snapshots, and slots being restored.
/// The bytes are visible to other threads once the caller synchronises
/// with them (a fence is issued before returning).
///
/// Whole 16 KiB groups are copied four pages at a time, line by line from
/// each page in turn, with the same lines of the next group prefetched:
/// four streams in flight keep more of the memory system busy than one
/// (measured here: 8.6-9.0 GB/s on one thread against 5.7-6.1 for one
/// stream of SSE2 lines, 7.5-7.8 for one of zmm lines).
pub fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= 4096 {
        // A head up to the next 64-byte boundary of `dst`, then whole
        // 64-byte lines streamed, then the tail.
        let head = dst.as_ptr().align_offset(64).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let lines = (dst.len() - head) / 64;
        let wide = crate::kernels::isa::isa() == crate::kernels::isa::Isa::Avx512;
        // SAFETY: every pointer stays inside the slices (`lines` whole
        // lines after `head`; prefetches may point past them, which is
        // harmless); `dst + head` is 64-byte aligned, as the aligned
        // stores need; AVX-512F is used only where detected.
        unsafe {
            let (d, s) = (dst.as_mut_ptr().add(head), src.as_ptr().add(head));
            if wide {
                stream::lines_avx512(d, s, lines);
            } else {
                stream::lines_sse2(d, s, lines);
            }
        }
        let done = head + 64 * lines;
        dst[done..].copy_from_slice(&src[done..]);
        return;
    }
    dst.copy_from_slice(src);
}

/// Copies state bytes: [`copy_streaming`] when `stream`, else a plain copy.
#[inline]
pub(crate) fn copy_state(dst: &mut [u8], src: &[u8], stream: bool) {
    if stream { copy_streaming(dst, src) } else { dst.copy_from_slice(src) }
}

#[cfg(target_arch = "x86_64")]
mod stream {
    use std::arch::x86_64::*;

    /// Lines per page and pages per group of [`super::copy_streaming`].
    const PAGE_LINES: usize = 64;
    const PAGES: usize = 4;

    /// The order lines are copied in: whole groups page by page, line by
    /// line, then the lines after the last whole group in order. Calls
    /// `line(i, prefetch)` for every line index `i < lines`, with the
    /// index of the line to prefetch (the same line of the next group).
    #[inline(always)]
    fn each_line(lines: usize, mut line: impl FnMut(usize, usize)) {
        let group = PAGE_LINES * PAGES;
        let groups = lines / group;
        for g in 0..groups {
            for l in 0..PAGE_LINES {
                for p in 0..PAGES {
                    let i = g * group + p * PAGE_LINES + l;
                    line(i, i + group);
                }
            }
        }
        for i in groups * group..lines {
            line(i, i + 4);
        }
    }

    /// Streams `lines` 64-byte lines from `s` to `d` (64-byte aligned).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lines_avx512(d: *mut u8, s: *const u8, lines: usize) {
        // SAFETY: the caller's promise: `lines` lines at `s` and `d`.
        unsafe {
            each_line(lines, |i, ahead| {
                _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(64 * ahead).cast());
                _mm512_stream_si512(d.add(64 * i).cast(), _mm512_loadu_si512(s.add(64 * i).cast()));
            });
            _mm_sfence();
        }
    }

    /// [`lines_avx512`] with SSE2 (part of x86-64).
    pub(super) unsafe fn lines_sse2(d: *mut u8, s: *const u8, lines: usize) {
        // SAFETY: the caller's promise: `lines` lines at `s` and `d`.
        unsafe {
            each_line(lines, |i, ahead| {
                _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(64 * ahead).cast());
                let (d, s) = (d.add(64 * i).cast::<__m128i>(), s.add(64 * i).cast::<__m128i>());
                let v = [
                    _mm_loadu_si128(s),
                    _mm_loadu_si128(s.add(1)),
                    _mm_loadu_si128(s.add(2)),
                    _mm_loadu_si128(s.add(3)),
                ];
                for (j, v) in v.into_iter().enumerate() {
                    _mm_stream_si128(d.add(j), v);
                }
            });
            _mm_sfence();
        }
    }
}

#[cfg(test)]
mod streaming_tests {
    #[test]
    fn copy_streaming_copies_every_byte_at_any_alignment_and_length() {
        let src: Vec<u8> = (0..60_000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
        // Whole 16 KiB groups (one, three) and the lines after them too,
        // with both line loops.
        for isa in crate::kernels::isa::available() {
            crate::kernels::isa::FORCE.with(|f| f.set(Some(isa)));
            for off in [0, 1, 7, 63, 64, 65] {
                for len in [0, 1, 63, 4095, 4096, 4097, 5000, 12_345, 16_384 + 64, 16_384 + 130, 49_152 + 4_000] {
                    let mut dst = vec![0xA5u8; len + 200];
                    super::copy_streaming(&mut dst[off..off + len], &src[3..3 + len]);
                    let what = format!("{isa:?}, offset {off}, length {len}");
                    assert!(dst[off..off + len] == src[3..3 + len], "{what}");
                    assert!(dst[..off].iter().chain(&dst[off + len..]).all(|&b| b == 0xA5), "{what}");
                }
            }
        }
        crate::kernels::isa::FORCE.with(|f| f.set(None));
    }
}
