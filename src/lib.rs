//! m2c: the recurrent state of Mamba2 models during inference, behind a C
//! ABI.
//!
//! The crate is two layers. The core (`config`, `dtype`, `buffer`,
//! `slots`, `cache`) is safe Rust with no FFI in it: typed slices in,
//! `Result<_, Error>` out, every argument validated before any state is
//! written. `ffi` is the thin C boundary: it checks pointers, builds slices,
//! calls the core inside a panic boundary and maps errors to status codes.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod buffer;
pub mod cache;
pub mod device;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dtype;
pub mod error;
pub mod ffi;
pub mod kernels;
mod lifecycle;
mod persist;
pub mod snapshot;
pub mod slots;
pub mod xxh64;

pub use abi::M2C_ABI_VERSION;
pub use cache::Cache;
pub use config::{Config, Device, Shape};
pub use dtype::{DType, Slice, SliceMut};
pub use error::{Error, Result};
pub use slots::Slots;
