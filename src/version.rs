//! Version: the library's version and ABI version at run time.

use super::*;

/// The library version, "MAJOR.MINOR.PATCH" (the header's
/// `M2C_VERSION_STRING` when they match). Static, never NULL.
#[no_mangle]
pub extern "C" fn m2c_version() -> *const c_char {
    const V: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("version contains NUL"),
    };
    V.as_ptr()
}

/// The ABI version of the loaded library. Compare it with
/// `M2C_ABI_VERSION` from the header at start-up and refuse to run on a
/// mismatch.
#[no_mangle]
pub extern "C" fn m2c_abi_version() -> u32 {
    crate::abi::M2C_ABI_VERSION
}
