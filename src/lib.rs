//! m2c: the C API of the Mamba2 recurrent-state cache.
//!
//! This crate is glue only, and the header `include/m2c.h` is generated from
//! it alone. Each exported function checks its pointers, turns them into
//! slices (or device arrays), makes one call into `m2c_core::AnyCache`
//! inside a panic boundary, maps the error to a status code with one
//! exhaustive `match` and keeps the message as the calling thread's last
//! error. The logic lives in the `m2c-core` crate (`core/`).
//!
//! The modules come in the order of the header's sections.

// The C names (`m2c_cache`, `m2c_ssm_args.A`) are the ABI.
#![allow(non_camel_case_types, non_snake_case)]
// Each export's safety contract is its header documentation (pointer
// validity, lengths, lifetimes), not a `# Safety` section.
#![allow(clippy::missing_safety_doc)]

mod abi;
mod boundary;
pub mod version;
pub mod error;
pub mod config;
pub mod cache;
pub mod view;
pub mod kernels;
pub mod spec;
pub mod slots;
pub mod persist;
pub mod store;
pub mod regions;
pub mod tp;
pub mod stream;

#[cfg(test)]
mod tests;

pub use abi::M2C_ABI_VERSION;
pub use cache::*;
pub use config::*;
pub use error::*;
pub use kernels::*;
pub use persist::*;
pub use regions::*;
pub use slots::*;
pub use spec::*;
pub use store::*;
pub use stream::*;
pub use tp::*;
pub use version::*;
pub use view::*;

pub(crate) use boundary::*;
// The vocabulary every export module takes with `use super::*`.
use m2c_core::{DType, Slice, SliceMut, Slots};
use std::ffi::{CStr, c_char, c_void};
