//! Slot snapshots (bytes in caller memory) and whole-cache files.

use super::cache::{check_apart, check_out, check_outside};
use super::*;
use m2c_core::persist::FileCheck;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Builds a read-only byte slice from a C buffer; `(NULL, 0)` is empty.
///
/// # Safety
/// If non-NULL, `ptr` must be valid for reads of `len` bytes for `'a`.
unsafe fn bytes_arg<'a>(ptr: *const c_void, len: usize, what: &str) -> Result<&'a [u8], Error> {
    if ptr.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(Error::NullArg(format!("{what} is NULL but len = {len}"))) };
    }
    if len > isize::MAX as usize {
        return Err(CoreError::InvalidArg(format!("{what}: len = {len} is too large")).into());
    }
    // SAFETY: non-NULL, size checked, validity from the caller.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast(), len) })
}

/// A path argument: a NUL-terminated byte string (any encoding the OS
/// accepts).
///
/// # Safety
/// If non-NULL, `path` must point to a NUL-terminated string.
unsafe fn path_arg<'a>(path: *const c_char) -> Result<&'a Path, Error> {
    if path.is_null() {
        return Err(Error::NullArg("path is NULL".into()));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(CoreError::InvalidArg("path is empty".into()).into());
    }
    Ok(Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// Writes to `*out` the exact size in bytes of a snapshot of one slot of
/// this cache (header, every layer's conv and SSM state, checksum). The
/// format is specified in docs/FORMATS.md.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_INVALID_ARG`
/// (`out` inside the cache's storage). `*out` is written only on success.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_snapshot_size(cache: *const m2c_cache, out: *mut usize) -> m2c_status {
    ffi_status("m2c_slot_snapshot_size", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read();
        check_out(&c, out, "out")?;
        let n = c.slot_snapshot_size();
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(n) };
        Ok(())
    })
}

/// A slot snapshot format for `m2c_set_snapshot_format`.
pub type m2c_snapshot_format = u32;

/// Snapshot format 1: the checksum is one XXH64 over the header and
/// payload (docs/FORMATS.md). Every release reads and writes it; the
/// default.
pub const M2C_SNAPSHOT_FORMAT_1: m2c_snapshot_format = 1;

/// Snapshot format 2: format 1's layout and size, version 2, and a checksum
/// computed in parallel pieces: the XXH64 of the header and of the XXH64x8
/// digests of the payload's 1 MiB chunks (docs/FORMATS.md). Saving and
/// digests run on every thread of the pool at close to memcpy speed.
/// Libraries before this one cannot read it: write it where every reader
/// is this release or later.
pub const M2C_SNAPSHOT_FORMAT_2: m2c_snapshot_format = 2;

/// Sets the format `m2c_slot_save` writes and `m2c_slot_digest` reports
/// for this cache (`M2C_SNAPSHOT_FORMAT_*`; default 1). `m2c_slot_load`
/// reads both formats whatever this says. The store's spill files and
/// `m2c_snapshot_reshard`'s outputs stay format 1.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_INVALID_ARG` (an
/// unknown format), `M2C_STATUS_UNSUPPORTED` (format 2 on a device cache),
/// `M2C_STATUS_POISONED`. On failure nothing changes. Thread-safe:
/// serialised with the handle's other calls.
#[no_mangle]
pub unsafe extern "C" fn m2c_set_snapshot_format(cache: *mut m2c_cache, format: m2c_snapshot_format) -> m2c_status {
    ffi_status("m2c_set_snapshot_format", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        Ok(cache.write()?.set_snapshot_format(format)?)
    })
}

/// Writes the format `m2c_slot_save` writes for this cache
/// (`M2C_SNAPSHOT_FORMAT_*`) to `*out`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_INVALID_ARG`
/// (`out` inside the cache's storage). `*out` is written only on success.
/// Thread-safe (a read).
#[no_mangle]
pub unsafe extern "C" fn m2c_get_snapshot_format(cache: *const m2c_cache, out: *mut m2c_snapshot_format) -> m2c_status {
    ffi_status("m2c_get_snapshot_format", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read();
        super::cache::check_out(&c, out, "out")?;
        let v = c.snapshot_format();
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(v) };
        Ok(())
    })
}

/// Saves a self-describing snapshot of `slot` (its state in every layer and
/// its position) into `buf`, which must hold at least
/// `m2c_slot_snapshot_size()` bytes; `*out_written` receives the bytes
/// written. A snapshot can be loaded into any slot of any cache with the
/// same shape and storage dtypes, in this process or another. It is
/// written in the cache's snapshot format (`m2c_set_snapshot_format`; 1 by
/// default, 2 checksums on every thread of the pool).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out_written, or a NULL `buf` with
/// a non-zero `len`), `M2C_STATUS_OUT_OF_RANGE` (slot),
/// `M2C_STATUS_SHAPE_MISMATCH` (`len` too small, `(NULL, 0)` included),
/// `M2C_STATUS_INVALID_ARG` (`buf` or `out_written` overlaps the cache, or
/// `out_written` lies inside `buf`). On failure neither `buf` nor
/// `*out_written` is written. Thread-safe (a read of the cache).
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_save(
    cache: *const m2c_cache,
    slot: i32,
    buf: *mut c_void,
    len: usize,
    out_written: *mut usize,
) -> m2c_status {
    ffi_status("m2c_slot_save", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out_written, "out_written")?;
        if len > isize::MAX as usize {
            return Err(CoreError::InvalidArg(format!("len = {len} is too large")).into());
        }
        let c = cache.read();
        c.check_slot(slot)?;
        let size = c.slot_snapshot_size();
        if len < size {
            return Err(CoreError::ShapeMismatch(format!(
                "buffer of {len} bytes is smaller than the snapshot ({size} bytes)"
            ))
            .into());
        }
        if buf.is_null() {
            return Err(Error::NullArg(format!("buf is NULL but len = {len}")));
        }
        check_outside(&c, buf, len, "buf")?;
        check_out(&c, out, "out_written")?;
        check_apart(out.cast_const().cast(), std::mem::size_of::<usize>(), buf, len, "out_written overlaps buf")?;
        // SAFETY: non-NULL, at least `size` writable bytes per the contract.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), size) };
        let n = c.slot_save(slot, dst)?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(n) };
        Ok(())
    })
}

/// Replaces the state (every layer) and position of `slot` with a snapshot
/// made by `m2c_slot_save`. The whole buffer is validated first: size,
/// magic, checksum, format version and shape fingerprint. A truncated,
/// damaged or foreign snapshot leaves the slot exactly as it was.
/// Loading does not change whether the slot is acquired.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, or a NULL `buf` with a non-zero
/// `len`), `M2C_STATUS_OUT_OF_RANGE` (slot), `M2C_STATUS_CORRUPT` (bad magic,
/// truncated, checksum mismatch, wrong layout), `M2C_STATUS_INCOMPATIBLE`
/// (another format version or shape; the message names the field),
/// `M2C_STATUS_INVALID_ARG` (`buf` overlaps the cache),
/// `M2C_STATUS_POISONED`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_load(cache: *mut m2c_cache, slot: i32, buf: *const c_void, len: usize) -> m2c_status {
    ffi_status("m2c_slot_load", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, bytes) = unsafe { (arg_ref(cache, "cache")?, bytes_arg(buf, len, "buf")?) };
        let mut c = cache.write()?;
        check_outside(&c, buf, len, "buf")?;
        Ok(c.slot_load(slot, bytes)?)
    })
}

/// Saves the whole cache to the file `path`: every slot's state in every
/// layer, its position and whether it is acquired, with the shape
/// fingerprint and a checksum (docs/FORMATS.md). The data streams through
/// a bounded buffer to a temporary file in the same directory, which is
/// fsynced and then renamed over `path`: an interrupted save never damages
/// an existing file, and a failed save removes its temporary file.
///
/// The temporary file is `.<name>.m2c-tmp.<pid>.<n>` (the name cut to fit
/// NAME_MAX; a stale one left by a killed process is skipped). An existing
/// file keeps its permissions; a new one gets 0666 less the umask. A
/// symbolic link to an existing file is followed: the file it points to
/// is replaced and the link stays.
///
/// `path` is a NUL-terminated byte string naming a file (not a directory
/// such as "/", "." or "..").
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, path), `M2C_STATUS_INVALID_ARG`
/// (an empty path, a path that names no file, or a path string inside the
/// cache's storage), `M2C_STATUS_OUT_OF_MEMORY` (before any file is
/// created), `M2C_STATUS_IO` (with the OS error in `m2c_last_error()`).
/// Thread-safe; mutations of this cache wait until the save ends.
#[no_mangle]
pub unsafe extern "C" fn m2c_save_file(cache: *const m2c_cache, path: *const c_char) -> m2c_status {
    ffi_status("m2c_save_file", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, p) = unsafe { (arg_ref(cache, "cache")?, path_arg(path)?) };
        let c = cache.read();
        check_outside(&c, path.cast(), p.as_os_str().len() + 1, "path")?;
        Ok(c.save_file(p)?)
    })
}

/// Loads a file written by `m2c_save_file` into this cache, replacing
/// every slot's state, position and acquired flag. The whole file is read
/// and validated (checksum, format version, shape fingerprint, slot count,
/// size) before the cache is touched, streaming in bounded memory: a
/// missing, damaged or foreign file changes nothing. If the file is
/// modified by someone else while it is being loaded, the load fails with
/// `M2C_STATUS_CORRUPT` and every slot is reset and released, so the cache
/// never holds a mix of old and new states.
///
/// The file must be a regular file: a FIFO, device or directory is
/// refused without waiting on it. Its size is compared with the size this
/// cache's file must have before anything is hashed, so a huge file is
/// refused at once. A read error in the second pass is `M2C_STATUS_IO`
/// (with every slot reset, as above).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, path), `M2C_STATUS_INVALID_ARG`
/// (empty path, not a regular file, or a path string inside the cache's
/// storage), `M2C_STATUS_IO`, `M2C_STATUS_CORRUPT`,
/// `M2C_STATUS_INCOMPATIBLE`, `M2C_STATUS_POISONED`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_load_file(cache: *mut m2c_cache, path: *const c_char) -> m2c_status {
    ffi_status("m2c_load_file", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, p) = unsafe { (arg_ref(cache, "cache")?, path_arg(path)?) };
        let (cfg, want) = {
            let c = cache.read();
            check_outside(&c, path.cast(), p.as_os_str().len() + 1, "path")?;
            (c.config(), c.file_size())
        };
        // The first pass holds no lock: the cache stays usable however long
        // the file takes to read. Only the copying pass takes the write lock.
        let check = FileCheck::read(&cfg, want, p)?;
        Ok(cache.write()?.install_file(check)?)
    })
}
