//! m2c-core: the recurrent state of Mamba2 models during inference, as safe
//! Rust.
//!
//! Typed slices in, `Result<_, Error>` out, every argument validated before
//! any state is written. There is nothing of C in this crate: the C ABI is
//! the `m2c` crate at the repository root, which turns pointers into slices
//! and device arrays, makes one call into [`AnyCache`] and maps the
//! [`Error`] to a status code.
//!
//! - [`Cache`]: a cache in host memory, with the copy-style calls, slots,
//!   snapshots, files and the CPU kernels.
//! - [`device::DeviceCache`]: the same cache in device memory, over an
//!   object-safe [`device::Backend`].
//! - [`AnyCache`]: either one; every call of the C API dispatches here.

pub mod any_cache;
pub mod buffer;
pub mod cache;
pub mod capture;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;
pub mod kernels;
mod lifecycle;
pub mod persist;
pub mod regions;
pub mod ring;
pub mod pool;
pub mod selection;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod tier;
pub mod tp;
pub mod xxh64;

pub use any_cache::AnyCache;
pub use cache::Cache;
pub use config::{Config, Device, Preset, Shape};
pub use dtype::{DType, Slice, SliceMut};
pub use error::{Error, Result};
pub use ring::ConvLayout;
pub use selection::Slots;
pub use store::Store;
