//! m2c's status codes as Python exceptions.
//!
//! Every failing C call becomes an instance of `m2c.Error` (or of the
//! subclass named after its status) whose `status` is the `m2c_status` and
//! whose `message` is the library's own message (`m2c_last_error`, read on
//! the thread that made the call). Problems the binding finds before it
//! calls m2c (an array that is not an array, a dtype m2c has no code for)
//! are ordinary `TypeError` / `ValueError`s.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyTypeInfo, create_exception};
use std::ffi::CStr;

create_exception!(
    m2c,
    Error,
    PyException,
    "A failed m2c call. `status` is the m2c_status code (never renumbered), `message` the library's message."
);
create_exception!(m2c, NullArg, Error, "M2C_STATUS_NULL_ARG (1).");
create_exception!(m2c, InvalidArg, Error, "M2C_STATUS_INVALID_ARG (2).");
create_exception!(m2c, InvalidConfig, Error, "M2C_STATUS_INVALID_CONFIG (3).");
create_exception!(m2c, OutOfRange, Error, "M2C_STATUS_OUT_OF_RANGE (4).");
create_exception!(m2c, ShapeMismatch, Error, "M2C_STATUS_SHAPE_MISMATCH (5).");
create_exception!(m2c, UnsupportedDtype, Error, "M2C_STATUS_UNSUPPORTED_DTYPE (6).");
create_exception!(m2c, OutOfMemory, Error, "M2C_STATUS_OUT_OF_MEMORY (7).");
create_exception!(m2c, Poisoned, Error, "M2C_STATUS_POISONED (8): a mutation of this handle panicked.");
create_exception!(m2c, Panic, Error, "M2C_STATUS_PANIC (9).");
create_exception!(m2c, Unsupported, Error, "M2C_STATUS_UNSUPPORTED (10).");
create_exception!(m2c, NoFreeSlot, Error, "M2C_STATUS_NO_FREE_SLOT (11).");
create_exception!(m2c, Corrupt, Error, "M2C_STATUS_CORRUPT (12).");
create_exception!(m2c, Incompatible, Error, "M2C_STATUS_INCOMPATIBLE (13).");
create_exception!(m2c, Io, Error, "M2C_STATUS_IO (14).");
create_exception!(m2c, NotFound, Error, "M2C_STATUS_NOT_FOUND (15).");

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    for (name, ty) in classes(py) {
        m.add(name, ty)?;
    }
    Ok(())
}

fn classes(py: Python<'_>) -> [(&'static str, Bound<'_, pyo3::types::PyType>); 15] {
    [
        ("NullArg", NullArg::type_object(py)),
        ("InvalidArg", InvalidArg::type_object(py)),
        ("InvalidConfig", InvalidConfig::type_object(py)),
        ("OutOfRange", OutOfRange::type_object(py)),
        ("ShapeMismatch", ShapeMismatch::type_object(py)),
        ("UnsupportedDtype", UnsupportedDtype::type_object(py)),
        ("OutOfMemory", OutOfMemory::type_object(py)),
        ("Poisoned", Poisoned::type_object(py)),
        ("Panic", Panic::type_object(py)),
        ("Unsupported", Unsupported::type_object(py)),
        ("NoFreeSlot", NoFreeSlot::type_object(py)),
        ("Corrupt", Corrupt::type_object(py)),
        ("Incompatible", Incompatible::type_object(py)),
        ("Io", Io::type_object(py)),
        ("NotFound", NotFound::type_object(py)),
    ]
}

/// The exception for a failed call: its status's class (plain `Error` for
/// a status this binding does not know), `status` and `message` set. Reads
/// the calling thread's last error, so call it on the thread that made the
/// call (the GIL-released closures run on the calling thread).
pub fn failure(py: Python<'_>, status: i32) -> PyErr {
    // SAFETY: m2c_last_error returns a NUL-terminated string that stays
    // valid until the next m2c call on this thread; it is copied at once.
    let message = unsafe { CStr::from_ptr(m2c::m2c_last_error()) }.to_string_lossy().into_owned();
    let ty = usize::try_from(status)
        .ok()
        .and_then(|s| s.checked_sub(1))
        .and_then(|i| classes(py).into_iter().nth(i))
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| Error::type_object(py));
    let err = PyErr::from_type(ty, message.clone());
    let value = err.value(py);
    if value.setattr("status", status).is_err() || value.setattr("message", message).is_err() {
        return PyErr::fetch(py);
    }
    err
}

/// `Ok(())` for `M2C_STATUS_OK`, else the status's exception.
pub fn check(py: Python<'_>, status: i32) -> PyResult<()> {
    if status == m2c::M2C_STATUS_OK { Ok(()) } else { Err(failure(py, status)) }
}
