//! The C-visible types: status and dtype codes, the config struct and the
//! tensor view.

use std::ffi::c_void;

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

/// An element type code. Arrives as a plain integer: every value is
/// validated, and an unknown one is `M2C_STATUS_UNSUPPORTED_DTYPE`.
pub type m2c_dtype = u32;

/// IEEE-754 binary32.
pub const M2C_DTYPE_F32: m2c_dtype = 0;
/// bfloat16 (the upper half of a binary32); conversions into it round to
/// nearest, ties to even.
pub const M2C_DTYPE_BF16: m2c_dtype = 1;
/// IEEE-754 binary16; conversions into it round to nearest, ties to even.
pub const M2C_DTYPE_F16: m2c_dtype = 2;

/// A device code for `m2c_config.device`.
pub type m2c_device = u32;

/// Host memory.
pub const M2C_DEVICE_CPU: m2c_device = 0;
/// NVIDIA GPU memory. Not available in this build: creating a cache with it
/// returns `M2C_STATUS_UNSUPPORTED`.
pub const M2C_DEVICE_CUDA: m2c_device = 1;

/// The shape of a cache. Always start from `m2c_config_init()`, which sets
/// `struct_size` and fills in defaults, then change the fields you need.
/// Fields are only ever added at the end. A library whose `m2c_config`
/// grows also gets a new `M2C_ABI_VERSION` (and SONAME), so a program never
/// meets an `m2c_config_init()` that writes more than its own struct holds;
/// `struct_size` catches a struct that was never initialised or comes from
/// another header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct m2c_config {
    /// `sizeof(m2c_config)` as the caller was compiled; set by
    /// `m2c_config_init()`. A size the library does not know is
    /// `M2C_STATUS_INVALID_ARG`.
    pub struct_size: u32,
    /// Mamba2 layers (each holds its own conv and ssm state).
    pub num_layers: u32,
    /// Sequences the cache holds at once; at most `INT32_MAX`.
    pub num_slots: u32,
    /// Inner width of the mixer; must equal `num_heads * head_dim`.
    pub intermediate_size: u32,
    /// SSM heads per layer; a multiple of `n_groups`.
    pub num_heads: u32,
    /// Channels per head.
    pub head_dim: u32,
    /// SSM state size (`d_state`, the length of B and C).
    pub state_size: u32,
    /// B/C groups; head `h` uses group `h / (num_heads / n_groups)`.
    pub n_groups: u32,
    /// Kernel size K of the depthwise causal conv; at least 2.
    pub conv_kernel_size: u32,
    /// Columns of the stored conv window: `conv_kernel_size` (the HF
    /// transformers / JAX layout) or `conv_kernel_size - 1` (the vLLM /
    /// llama.cpp layout).
    pub conv_width: u32,
    /// Storage dtype of the conv windows (`M2C_DTYPE_*`).
    pub conv_dtype: m2c_dtype,
    /// Storage dtype of the SSM states (`M2C_DTYPE_*`).
    pub ssm_dtype: m2c_dtype,
    /// `M2C_DEVICE_CPU` or `M2C_DEVICE_CUDA`.
    pub device: m2c_device,
    /// Which device of that kind; 0 for the CPU. Must be >= 0.
    pub device_index: i32,
}

/// A zero-copy view of one layer's storage for every slot. `data` points
/// into the cache; element `[i0][i1][i2][i3]` is at
/// `data + (i0*strides[0] + i1*strides[1] + ...) * element size`. Strides
/// count elements, not bytes; unused dimensions have shape 1 and stride 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_tensor {
    /// The first element (64-byte aligned).
    pub data: *mut c_void,
    /// Element type (`M2C_DTYPE_*`).
    pub dtype: m2c_dtype,
    /// Number of dimensions used (3 for conv, 4 for ssm).
    pub ndim: u32,
    /// Extent of each dimension.
    pub shape: [u64; 4],
    /// Distance between consecutive indices of each dimension, in elements.
    pub strides: [u64; 4],
    /// Where `data` lives (`M2C_DEVICE_*`): a device pointer is not
    /// dereferenceable from the host.
    pub device: m2c_device,
    /// The device index of `data`.
    pub device_index: i32,
}
