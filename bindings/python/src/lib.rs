//! `m2c._m2c`: the Python extension module of m2c (the `m2c` package
//! re-exports it). It links the C API crate as an rlib and calls the very
//! functions of `include/m2c.h`, so Python sees the same validation, status
//! codes, messages and panic boundary as C, Go and Zig; this crate only
//! marshals (arrays in and out, DLPack both ways, exceptions).

// The Mamba2 tensor names (A, B, C, D) are the API.
#![allow(non_snake_case)]
#![allow(clippy::too_many_arguments)]

mod array;
mod cache;
mod config;
mod dlpack;
mod error;
mod store;
mod tp;
mod view;

use pyo3::prelude::*;
use std::ffi::CStr;

fn c_str(p: *const std::ffi::c_char) -> String {
    // SAFETY: m2c's string functions return static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The library's version string (`m2c_version`).
#[pyfunction]
fn version() -> String {
    c_str(m2c::m2c_version())
}

/// The ABI version the library was built with (`m2c_abi_version`).
#[pyfunction]
fn abi_version() -> u32 {
    m2c::m2c_abi_version()
}

/// The name of a status code (`m2c_status_str`).
#[pyfunction]
fn status_str(status: i32) -> String {
    c_str(m2c::m2c_status_str(status))
}

/// The name of a miss code (`m2c_miss_str`).
#[pyfunction]
fn miss_str(miss: i32) -> String {
    c_str(m2c::m2c_miss_str(miss))
}

/// The last error message of the calling thread (`m2c_last_error`); the
/// exceptions carry it already.
#[pyfunction]
fn last_error() -> String {
    c_str(m2c::m2c_last_error())
}

#[pymodule]
fn _m2c(m: &Bound<'_, PyModule>) -> PyResult<()> {
    error::register(m)?;
    m.add_class::<config::Config>()?;
    m.add_class::<cache::Cache>()?;
    m.add_class::<view::View>()?;
    m.add_class::<store::Store>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(abi_version, m)?)?;
    m.add_function(wrap_pyfunction!(status_str, m)?)?;
    m.add_function(wrap_pyfunction!(miss_str, m)?)?;
    m.add_function(wrap_pyfunction!(last_error, m)?)?;
    m.add_function(wrap_pyfunction!(store::key_chain, m)?)?;
    m.add_function(wrap_pyfunction!(tp::shard_config, m)?)?;
    m.add_function(wrap_pyfunction!(tp::reshard_plan, m)?)?;
    m.add_function(wrap_pyfunction!(tp::reshard_snapshots, m)?)?;
    m.add("PRESETS", config::PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>())?;
    m.add("ABI_VERSION", m2c::M2C_ABI_VERSION)?;
    for (name, v) in [
        ("STATUS_OK", m2c::M2C_STATUS_OK),
        ("STATUS_NULL_ARG", m2c::M2C_STATUS_NULL_ARG),
        ("STATUS_INVALID_ARG", m2c::M2C_STATUS_INVALID_ARG),
        ("STATUS_INVALID_CONFIG", m2c::M2C_STATUS_INVALID_CONFIG),
        ("STATUS_OUT_OF_RANGE", m2c::M2C_STATUS_OUT_OF_RANGE),
        ("STATUS_SHAPE_MISMATCH", m2c::M2C_STATUS_SHAPE_MISMATCH),
        ("STATUS_UNSUPPORTED_DTYPE", m2c::M2C_STATUS_UNSUPPORTED_DTYPE),
        ("STATUS_OUT_OF_MEMORY", m2c::M2C_STATUS_OUT_OF_MEMORY),
        ("STATUS_POISONED", m2c::M2C_STATUS_POISONED),
        ("STATUS_PANIC", m2c::M2C_STATUS_PANIC),
        ("STATUS_UNSUPPORTED", m2c::M2C_STATUS_UNSUPPORTED),
        ("STATUS_NO_FREE_SLOT", m2c::M2C_STATUS_NO_FREE_SLOT),
        ("STATUS_CORRUPT", m2c::M2C_STATUS_CORRUPT),
        ("STATUS_INCOMPATIBLE", m2c::M2C_STATUS_INCOMPATIBLE),
        ("STATUS_IO", m2c::M2C_STATUS_IO),
        ("STATUS_NOT_FOUND", m2c::M2C_STATUS_NOT_FOUND),
        ("MISS_NONE", m2c::M2C_MISS_NONE),
        ("MISS_NEVER_STORED", m2c::M2C_MISS_NEVER_STORED),
        ("MISS_EVICTED", m2c::M2C_MISS_EVICTED),
        ("MISS_TOO_LARGE", m2c::M2C_MISS_TOO_LARGE),
        ("MISS_INCOMPATIBLE", m2c::M2C_MISS_INCOMPATIBLE),
        ("MISS_CORRUPT", m2c::M2C_MISS_CORRUPT),
    ] {
        m.add(name, v)?;
    }
    Ok(())
}
