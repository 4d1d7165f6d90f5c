//! The panic boundary, the thread's last error, the error-to-status
//! mapping and the pointer checks every export uses.

use crate::config::{dtype_from_c, m2c_dtype};
use crate::error::*;
use m2c_core::pool::with_default_fp;
use m2c_core::{DType, Slice, SliceMut, Slots};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

pub(crate) use m2c_core::Error as CoreError;

/// Why an exported function failed: a NULL pointer (found here, before
/// the core is called), or what the core said.
#[derive(Debug)]
pub(crate) enum Error {
    /// A required pointer was NULL.
    NullArg(String),
    /// The core's error.
    Core(CoreError),
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        Error::Core(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NullArg(m) => f.write_str(m),
            Error::Core(e) => e.fmt(f),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error.
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // try_with: during thread teardown the slot may be gone; then the
    // message is dropped rather than panicking.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// A pointer to this thread's last error message ("" if none).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// The status code of a core error.
pub(crate) fn status_of(e: &Error) -> m2c_status {
    let e = match e {
        Error::NullArg(_) => return M2C_STATUS_NULL_ARG,
        Error::Core(e) => e,
    };
    match e {
        CoreError::InvalidArg(_) => M2C_STATUS_INVALID_ARG,
        CoreError::InvalidConfig(_) => M2C_STATUS_INVALID_CONFIG,
        CoreError::OutOfRange(_) => M2C_STATUS_OUT_OF_RANGE,
        CoreError::ShapeMismatch(_) => M2C_STATUS_SHAPE_MISMATCH,
        CoreError::UnsupportedDtype(_) => M2C_STATUS_UNSUPPORTED_DTYPE,
        CoreError::OutOfMemory(_) => M2C_STATUS_OUT_OF_MEMORY,
        CoreError::Poisoned(_) => M2C_STATUS_POISONED,
        CoreError::Unsupported(_) => M2C_STATUS_UNSUPPORTED,
        CoreError::NoFreeSlot(_) => M2C_STATUS_NO_FREE_SLOT,
        CoreError::Corrupt(_) => M2C_STATUS_CORRUPT,
        CoreError::Incompatible(_) => M2C_STATUS_INCOMPATIBLE,
        CoreError::Io(_) => M2C_STATUS_IO,
        CoreError::NotFound(_) => M2C_STATUS_NOT_FOUND,
    }
}

thread_local! {
    /// How many m2c exports are running on this thread (nested: a Rust
    /// caller of the C API inside an m2c callback).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks the calling thread as inside an export until dropped.
struct Inside;

impl Inside {
    fn enter() -> Inside {
        quiet_panics();
        let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Installs, once, a panic hook that says nothing for panics inside m2c
/// (an export on this thread, or one of m2c's pool threads): their message
/// goes to `m2c_last_error()` only, never to the host's stderr. Every
/// other panic goes to the hook that was installed before (the host's, or
/// Rust's default).
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = DEPTH.try_with(|d| d.get() > 0).unwrap_or(false) || m2c_core::pool::on_pool_thread();
            if !ours {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// The panic boundary of a function that returns a status: runs `f`,
/// turns its error into a status code and this thread's last error
/// (prefixed by the function name), and turns a panic into
/// `M2C_STATUS_PANIC`. No unwind ever crosses into C.
pub(crate) fn ffi_status(name: &str, f: impl FnOnce() -> Result<(), Error>) -> m2c_status {
    let _inside = Inside::enter();
    match catch_unwind(AssertUnwindSafe(|| with_default_fp(f))) {
        Ok(Ok(())) => M2C_STATUS_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {e}"));
            status_of(&e)
        }
        Err(payload) => {
            set_last_error(&format!("{name}: internal panic: {}", panic_message(&*payload)));
            M2C_STATUS_PANIC
        }
    }
}

/// The panic boundary of a function that returns a value: a panic yields
/// `fallback` and sets the last error.
pub(crate) fn ffi_value<T>(name: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    let _inside = Inside::enter();
    match catch_unwind(AssertUnwindSafe(|| with_default_fp(f))) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(&format!("{name}: internal panic: {}", panic_message(&*payload)));
            fallback
        }
    }
}

/// Checks the `struct_size` of a versioned struct `T` passed as `what`:
/// only sizes this library knows are accepted (today: its own).
pub(crate) fn check_struct_size<T>(got: u32, what: &str, init: &str) -> Result<(), Error> {
    let want = std::mem::size_of::<T>();
    if got as usize != want {
        return Err(CoreError::InvalidArg(format!(
            "{what}->struct_size = {got}, but this library knows only {want}: initialise it with {init}()"
        ))
        .into());
    }
    Ok(())
}

/// The body of every `*_init` function: writes `value()` to `*p` inside
/// the panic boundary; NULL (or a misaligned pointer) is a no-op.
pub(crate) fn init_struct<T>(name: &str, p: *mut T, value: impl FnOnce() -> T) {
    ffi_value(name, (), || {
        if let Ok(p) = out_ptr(p, "argument") {
            // SAFETY: non-NULL and aligned; the caller provides the storage.
            unsafe { p.write(value()) }
        }
    })
}

/// A reference to `*p`, or `NullArg` naming the parameter.
///
/// # Safety
/// `p` must be NULL or valid for reads of `T` for the returned lifetime.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    if !p.is_null() && !p.is_aligned() {
        return Err(CoreError::InvalidArg(format!("{what} is not aligned for its type")).into());
    }
    // SAFETY: aligned (checked); validity forwarded from the caller.
    unsafe { p.as_ref() }.ok_or_else(|| Error::NullArg(format!("{what} is NULL")))
}

/// Checks that an output pointer is non-NULL; the write happens later,
/// only on success.
pub(crate) fn out_ptr<T>(p: *mut T, what: &str) -> Result<*mut T, Error> {
    if p.is_null() {
        return Err(Error::NullArg(format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(CoreError::InvalidArg(format!("{what} is not aligned for its type")).into());
    }
    Ok(p)
}

/// The dtype of buffer `what`'s code, or `UnsupportedDtype` naming
/// `{what}_dtype` (the name is built only on failure: this runs on every
/// kernel call).
fn buf_dtype(code: m2c_dtype, what: &str) -> Result<DType, Error> {
    dtype_from_c(code)
        .ok_or_else(|| CoreError::UnsupportedDtype(format!("{what}_dtype = {code} is not an M2C_DTYPE_* value")).into())
}

/// The dtype of a code, or `UnsupportedDtype` naming the parameter.
pub(crate) fn dtype_arg(code: m2c_dtype, what: &str) -> Result<DType, Error> {
    dtype_from_c(code)
        .ok_or_else(|| CoreError::UnsupportedDtype(format!("{what} = {code} is not an M2C_DTYPE_* value")).into())
}

/// Checks a `(ptr, len)` buffer of `dtype` elements and returns its byte
/// length. `(NULL, 0)` is the empty buffer.
fn check_buf(ptr: *const c_void, dtype: DType, len: usize, what: &str) -> Result<usize, Error> {
    let bytes = len
        .checked_mul(dtype.size())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| Error::from(CoreError::InvalidArg(format!("{what}: len = {len} elements is too large"))))?;
    if ptr.is_null() {
        if len == 0 {
            return Ok(0);
        }
        return Err(Error::NullArg(format!("{what} is NULL but len = {len}")));
    }
    if !(ptr as usize).is_multiple_of(dtype.size()) {
        return Err(
            CoreError::InvalidArg(format!("{what} is not aligned to its {}-byte elements", dtype.size())).into()
        );
    }
    Ok(bytes)
}

/// Builds a typed read-only slice from a C buffer.
///
/// # Safety
/// If non-NULL, `ptr` must be valid for reads of `len` elements of `dtype`
/// for `'a`, and not written by anyone during that time.
pub(crate) unsafe fn slice_arg<'a>(
    ptr: *const c_void,
    dtype: m2c_dtype,
    len: usize,
    what: &str,
) -> Result<Slice<'a>, Error> {
    let dtype = buf_dtype(dtype, what)?;
    check_buf(ptr, dtype, len, what)?;
    if len == 0 {
        return Ok(match dtype {
            DType::F32 => Slice::F32(&[]),
            DType::BF16 => Slice::BF16(&[]),
            DType::F16 => Slice::F16(&[]),
        });
    }
    // SAFETY: non-NULL, aligned, size checked, validity from the caller.
    unsafe {
        Ok(match dtype {
            DType::F32 => Slice::F32(std::slice::from_raw_parts(ptr.cast(), len)),
            DType::BF16 => Slice::BF16(std::slice::from_raw_parts(ptr.cast(), len)),
            DType::F16 => Slice::F16(std::slice::from_raw_parts(ptr.cast(), len)),
        })
    }
}

/// Builds a typed writable slice from a C buffer.
///
/// # Safety
/// If non-NULL, `ptr` must be valid for reads and writes of `len` elements
/// of `dtype` for `'a`, and not accessed by anyone else during that time.
pub(crate) unsafe fn slice_mut_arg<'a>(
    ptr: *mut c_void,
    dtype: m2c_dtype,
    len: usize,
    what: &str,
) -> Result<SliceMut<'a>, Error> {
    let dtype = buf_dtype(dtype, what)?;
    check_buf(ptr, dtype, len, what)?;
    if len == 0 {
        return Ok(match dtype {
            DType::F32 => SliceMut::F32(&mut []),
            DType::BF16 => SliceMut::BF16(&mut []),
            DType::F16 => SliceMut::F16(&mut []),
        });
    }
    // SAFETY: non-NULL, aligned, size checked, validity from the caller.
    unsafe {
        Ok(match dtype {
            DType::F32 => SliceMut::F32(std::slice::from_raw_parts_mut(ptr.cast(), len)),
            DType::BF16 => SliceMut::BF16(std::slice::from_raw_parts_mut(ptr.cast(), len)),
            DType::F16 => SliceMut::F16(std::slice::from_raw_parts_mut(ptr.cast(), len)),
        })
    }
}

/// Builds the slot selection of a batched call: NULL means the dense rows
/// `0..n`.
///
/// # Safety
/// If non-NULL, `slots` must be valid for reads of `n` `int32_t` for `'a`.
pub(crate) unsafe fn slots_arg<'a>(slots: *const i32, n: usize) -> Result<Slots<'a>, Error> {
    if slots.is_null() {
        return Ok(Slots::Dense(n));
    }
    if n > isize::MAX as usize / 4 {
        return Err(CoreError::InvalidArg(format!("n = {n} is too large")).into());
    }
    if !slots.is_aligned() {
        return Err(CoreError::InvalidArg("slots is not aligned to int32_t".into()).into());
    }
    // SAFETY: non-NULL, aligned, size checked, validity from the caller.
    Ok(Slots::List(unsafe { std::slice::from_raw_parts(slots, n) }))
}

/// `M2C_STATUS_*` as static text.
pub(crate) fn status_text(s: m2c_status) -> &'static CStr {
    match s {
        M2C_STATUS_OK => c"ok",
        M2C_STATUS_NULL_ARG => c"a required pointer argument was NULL",
        M2C_STATUS_INVALID_ARG => c"invalid argument",
        M2C_STATUS_INVALID_CONFIG => c"invalid configuration",
        M2C_STATUS_OUT_OF_RANGE => c"index out of range",
        M2C_STATUS_SHAPE_MISMATCH => c"buffer length does not match the shape",
        M2C_STATUS_UNSUPPORTED_DTYPE => c"unsupported dtype",
        M2C_STATUS_OUT_OF_MEMORY => c"out of memory",
        M2C_STATUS_POISONED => c"the handle is poisoned by an earlier panic",
        M2C_STATUS_PANIC => c"internal panic caught at the API boundary",
        M2C_STATUS_UNSUPPORTED => c"unsupported in this build or on this machine",
        M2C_STATUS_NO_FREE_SLOT => c"no free slot",
        M2C_STATUS_CORRUPT => c"corrupt snapshot or file",
        M2C_STATUS_INCOMPATIBLE => c"snapshot or file made for another shape or format version",
        M2C_STATUS_IO => c"I/O error",
        M2C_STATUS_NOT_FOUND => c"no entry under that key",
        _ => c"unknown status code",
    }
}
