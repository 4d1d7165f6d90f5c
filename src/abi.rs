// The ABI version of the C interface. It is the one number that ties the
// library, the SONAME (`libm2c.so.<abi>`), the header and every binding
// together: build.rs includes this file to set the SONAME, the library
// exports it through `m2c_abi_version()`, and cbindgen copies it into the
// header. Bump it on any change that breaks an existing C caller.

/// The ABI version this header describes. `m2c_abi_version()` returns the
/// value the loaded library was built with; a caller compares the two at
/// start-up and refuses a mismatch.
pub const M2C_ABI_VERSION: u32 = 1;
