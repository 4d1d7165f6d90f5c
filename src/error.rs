//! Errors: status codes, their static texts and the thread's last error.

use super::*;

/// A status code. Every fallible function returns one; `M2C_STATUS_OK` is
/// 0 and every other value is a failure whose detail is in
/// `m2c_last_error()`. Values are part of the ABI: they are never
/// renumbered, and a retired value is never reused. Treat any value you do
/// not know as a failure.
pub type m2c_status = i32;

/// Success.
pub const M2C_STATUS_OK: m2c_status = 0;

/// A required pointer argument was NULL.
pub const M2C_STATUS_NULL_ARG: m2c_status = 1;

/// An argument has a value no call accepts: a slot listed twice, a buffer
/// misaligned for its dtype or overlapping the cache's own storage, an
/// unknown `struct_size`.
pub const M2C_STATUS_INVALID_ARG: m2c_status = 2;

/// The configuration breaks an invariant; the message names the field.
pub const M2C_STATUS_INVALID_CONFIG: m2c_status = 3;

/// A layer, slot or counter outside the configured range.
pub const M2C_STATUS_OUT_OF_RANGE: m2c_status = 4;

/// A buffer length differs from what the shape needs.
pub const M2C_STATUS_SHAPE_MISMATCH: m2c_status = 5;

/// A dtype value that names no supported dtype.
pub const M2C_STATUS_UNSUPPORTED_DTYPE: m2c_status = 6;

/// Memory could not be allocated. The process is otherwise unaffected.
pub const M2C_STATUS_OUT_OF_MEMORY: m2c_status = 7;

/// The handle panicked during an earlier mutation; it refuses further
/// mutation. Destroy it and create a new one.
pub const M2C_STATUS_POISONED: m2c_status = 8;

/// A bug inside m2c was caught at the boundary (a Rust panic). The call
/// had no effect unless it was a mutation, in which case the handle is now
/// poisoned.
pub const M2C_STATUS_PANIC: m2c_status = 9;

/// The operation exists but is not available in this build or on this
/// machine (for example a CUDA device without the `cuda` feature).
pub const M2C_STATUS_UNSUPPORTED: m2c_status = 10;

/// `m2c_slot_acquire` found every slot in use.
pub const M2C_STATUS_NO_FREE_SLOT: m2c_status = 11;

/// A snapshot or file is damaged: bad magic, truncated, checksum mismatch,
/// or a layout that contradicts its own header.
pub const M2C_STATUS_CORRUPT: m2c_status = 12;

/// A well-formed snapshot or file made for another shape, slot count or
/// format version.
pub const M2C_STATUS_INCOMPATIBLE: m2c_status = 13;

/// The operating system refused an I/O operation; `m2c_last_error()` has
/// its message.
pub const M2C_STATUS_IO: m2c_status = 14;

/// A prefix-store key with no entry (never stored, evicted, or refused
/// for the budget); `m2c_last_error()` says which.
pub const M2C_STATUS_NOT_FOUND: m2c_status = 15;

/// A static, human-readable description of a status code; "unknown status
/// code" for a value this library does not define. Never NULL; the string
/// lives forever. Thread-safe.
#[no_mangle]
pub extern "C" fn m2c_status_str(status: m2c_status) -> *const c_char {
    ffi_value("m2c_status_str", c"unknown status code".as_ptr(), || status_text(status).as_ptr())
}

/// The detail of the most recent failure of an m2c call on the calling
/// thread, naming the function and what was wrong; "" if no call on this
/// thread has failed. Successful calls do not clear it, so read it right
/// after the failing call. Never NULL. The string stays valid until the
/// next failing m2c call on this thread, or the thread's exit.
#[no_mangle]
pub extern "C" fn m2c_last_error() -> *const c_char {
    ffi_value("m2c_last_error", c"".as_ptr(), last_error_ptr)
}
