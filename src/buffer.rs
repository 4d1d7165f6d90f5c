//! Zeroed, 64-byte-aligned storage that does not touch its pages when
//! allocated: `calloc` hands large requests to `mmap`, whose pages are
//! zero and not yet resident, so creating a big cache is cheap until used.

use crate::config::ALIGN;
use crate::dtype::{DType, Slice, SliceMut};
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::ptr::NonNull;

/// One owned, zero-initialised, `ALIGN`-aligned byte buffer holding
/// elements of one dtype.
pub struct AlignedBuf {
    /// The pointer `calloc` returned (what `free` takes).
    raw: NonNull<u8>,
    /// `raw` rounded up to `ALIGN`.
    data: NonNull<u8>,
    len_bytes: usize,
    dtype: DType,
}

// SAFETY: the buffer is uniquely owned heap memory; access goes through
// `&self` / `&mut self`, so the usual borrow rules make sharing sound.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len_bytes` zero bytes (a multiple of the dtype size).
    pub fn zeroed(len_bytes: usize, dtype: DType) -> Result<Self> {
        debug_assert_eq!(len_bytes % dtype.size(), 0);
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
        Ok(AlignedBuf { raw, data, len_bytes, dtype })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.len_bytes / self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// The start of the storage, for zero-copy views handed to C.
    pub fn as_ptr(&self) -> *mut u8 {
        self.data.as_ptr()
    }

    /// The elements, typed.
    pub fn slice(&self) -> Slice<'_> {
        let n = self.len();
        let p = self.data.as_ptr();
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
        let p = self.data.as_ptr();
        // SAFETY: as in `slice`, and `&mut self` makes the borrow unique.
        unsafe {
            match self.dtype {
                DType::F32 => SliceMut::F32(std::slice::from_raw_parts_mut(p as *mut f32, n)),
                DType::BF16 => SliceMut::BF16(std::slice::from_raw_parts_mut(p as *mut bf16, n)),
                DType::F16 => SliceMut::F16(std::slice::from_raw_parts_mut(p as *mut f16, n)),
            }
        }
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: valid for len_bytes initialised bytes.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len_bytes) }
    }
}

impl AlignedBuf {
    /// The raw bytes, writable. Any bit pattern is a valid element.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: valid for len_bytes initialised bytes; `&mut self` makes
        // the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len_bytes) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: raw came from calloc and is freed exactly once.
        unsafe { libc::free(self.raw.as_ptr() as *mut libc::c_void) }
    }
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
}
