//! Exported decode (and prefill) kernels: argument structs and functions.

use super::cache::{check_outside, overlap, slots_bytes};
use super::*;
use m2c_core::AnyCache;
use m2c_core::any_cache::{ConvIo, Memory, SsmIo};
use m2c_core::device::{DevArray, DeviceConvArgs, DeviceSsmIo, DeviceSsmParams};
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};

/// A conv activation code for `m2c_conv_args.activation`.
pub type m2c_activation = u32;
/// No activation: the conv output as computed.
pub const M2C_ACTIVATION_NONE: m2c_activation = 0;
/// SiLU, `v * sigmoid(v)` (what Mamba2 uses).
pub const M2C_ACTIVATION_SILU: m2c_activation = 1;

/// Parameters of the causal conv of one layer. Start from
/// `m2c_conv_args_init()`. Weights are f32 and stay owned by the caller;
/// m2c reads them during the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_conv_args {
    /// `sizeof(m2c_conv_args)`; set by `m2c_conv_args_init()`.
    pub struct_size: u32,
    /// dtype of the per-token inputs and outputs (`M2C_DTYPE_*`); default
    /// f32.
    pub io_dtype: m2c_dtype,
    /// `M2C_ACTIVATION_*`; default `M2C_ACTIVATION_SILU`.
    pub activation: m2c_activation,
    /// Must be 0.
    pub reserved: u32,
    /// `[conv_dim, conv_kernel_size]` f32, oldest tap first (the layout of
    /// a PyTorch `Conv1d` weight `[conv_dim, 1, K]` with the 1 dropped).
    pub weight: *const f32,
    /// Elements at `weight`: `conv_dim * conv_kernel_size`.
    pub weight_len: usize,
    /// `[conv_dim]` f32 bias, or NULL for none.
    pub bias: *const f32,
    /// Elements at `bias`: `conv_dim`, or 0 when `bias` is NULL.
    pub bias_len: usize,
}

/// Parameters of the selective-state update of one layer. Start from
/// `m2c_ssm_args_init()`. Arrays are f32, owned by the caller, read during
/// the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_ssm_args {
    /// `sizeof(m2c_ssm_args)`; set by `m2c_ssm_args_init()`.
    pub struct_size: u32,
    /// dtype of x, dt, B, C, z and y (`M2C_DTYPE_*`); default f32.
    pub io_dtype: m2c_dtype,
    /// Non-zero: `dt = softplus(dt + dt_bias)` (identity above 20), as
    /// Mamba2 does; default 1.
    pub dt_softplus: u32,
    /// Non-zero: clamp dt to `[dt_min, dt_max]` after softplus; default 0.
    pub dt_clamp: u32,
    /// Lower clamp bound; default 0.
    pub dt_min: f32,
    /// Upper clamp bound; default +infinity.
    pub dt_max: f32,
    /// `[num_heads]` f32, already `-exp(A_log)`. Required.
    pub A: *const f32,
    /// Elements at `A`: `num_heads`.
    pub A_len: usize,
    /// `[num_heads]` f32 skip weights, or NULL for none.
    pub D: *const f32,
    /// Elements at `D`: `num_heads`, or 0.
    pub D_len: usize,
    /// `[num_heads]` f32 added to dt before softplus, or NULL for none.
    pub dt_bias: *const f32,
    /// Elements at `dt_bias`: `num_heads`, or 0.
    pub dt_bias_len: usize,
}

/// The per-token buffers of an SSM call, all of `m2c_ssm_args.io_dtype`.
/// `T` is the number of token rows: `n` for `m2c_ssm_step`, the total
/// token count for `m2c_ssm_prefill`. Start from `m2c_ssm_io_init()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_ssm_io {
    /// `sizeof(m2c_ssm_io)`; set by `m2c_ssm_io_init()`.
    pub struct_size: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Input `[T, num_heads, head_dim]`.
    pub x: *const c_void,
    pub x_len: usize,
    /// Time steps `[T, num_heads]` (before bias and softplus).
    pub dt: *const c_void,
    pub dt_len: usize,
    /// `[T, n_groups, state_size]`.
    pub B: *const c_void,
    pub B_len: usize,
    /// `[T, n_groups, state_size]`.
    pub C: *const c_void,
    pub C_len: usize,
    /// Gate `[T, num_heads, head_dim]`, or NULL for none.
    pub z: *const c_void,
    pub z_len: usize,
    /// Output `[T, num_heads, head_dim]`; written only on success.
    pub y: *mut c_void,
    pub y_len: usize,
}

fn reserved_zero(v: u32, what: &str) -> Result<(), Error> {
    if v != 0 {
        return Err(CoreError::InvalidArg(format!("{what}->reserved must be 0")).into());
    }
    Ok(())
}

/// An optional f32 parameter array: NULL means none (its length must be 0).
///
/// # Safety
/// If non-NULL, `p` must be valid for reads of `len` floats.
unsafe fn opt_f32<'a>(p: *const f32, len: usize, what: &str) -> Result<Option<&'a [f32]>, Error> {
    if p.is_null() {
        if len != 0 {
            return Err(Error::NullArg(format!("{what} is NULL but {what}_len = {len}")));
        }
        return Ok(None);
    }
    // SAFETY: forwarded.
    let s = unsafe { slice_arg(p.cast(), M2C_DTYPE_F32, len, what) }?;
    match s {
        Slice::F32(s) => Ok(Some(s)),
        _ => unreachable!("requested f32"),
    }
}

/// An optional activation buffer.
///
/// # Safety
/// If non-NULL, `p` must be valid for reads of `len` elements of `dtype`.
unsafe fn opt_slice<'a>(
    p: *const c_void,
    dtype: m2c_dtype,
    len: usize,
    what: &str,
) -> Result<Option<Slice<'a>>, Error> {
    if p.is_null() {
        if len != 0 {
            return Err(Error::NullArg(format!("{what} is NULL but {what}_len = {len}")));
        }
        return Ok(None);
    }
    // SAFETY: forwarded.
    unsafe { slice_arg(p, dtype, len, what) }.map(Some)
}

/// A pointer of a device cache's kernel call, taken as a device address
/// (never dereferenced on the host).
fn device_array(p: *const c_void, len: usize, what: &str) -> Result<DevArray, Error> {
    if p.is_null() && len != 0 {
        return Err(Error::NullArg(format!("{what} is NULL but {what}_len = {len}")));
    }
    Ok(DevArray::new(p as usize as u64, len))
}

/// The conv arguments of a call on a device cache: the checks of the
/// argument struct; the device cache checks the arrays as the host does
/// without reading them (NULL and lengths, alignment, allocation ranges).
fn device_conv(
    a: &m2c_conv_args,
    x: *const c_void,
    x_len: usize,
    out: *mut c_void,
    out_len: usize,
) -> Result<DeviceConvArgs, Error> {
    let (dtype, silu) = conv_header(a)?;
    Ok(DeviceConvArgs {
        dtype,
        x: device_array(x, x_len, "x")?,
        out: device_array(out, out_len, "out")?,
        weight: device_array(a.weight.cast(), a.weight_len, "weight")?,
        bias: device_array(a.bias.cast(), a.bias_len, "bias")?,
        silu,
    })
}

/// The SSM arguments of a call on a device cache (checks as for
/// `device_conv`).
fn device_ssm(io: &m2c_ssm_io, a: &m2c_ssm_args) -> Result<(DeviceSsmIo, DeviceSsmParams), Error> {
    let dtype = ssm_header(a)?;
    io_header(io)?;
    let dio = DeviceSsmIo {
        dtype,
        x: device_array(io.x, io.x_len, "x")?,
        dt: device_array(io.dt, io.dt_len, "dt")?,
        b: device_array(io.B, io.B_len, "B")?,
        c: device_array(io.C, io.C_len, "C")?,
        z: device_array(io.z, io.z_len, "z")?,
        y: device_array(io.y.cast_const(), io.y_len, "y")?,
    };
    let p = DeviceSsmParams {
        a: device_array(a.A.cast(), a.A_len, "A")?,
        d: device_array(a.D.cast(), a.D_len, "D")?,
        dt_bias: device_array(a.dt_bias.cast(), a.dt_bias_len, "dt_bias")?,
        dt_softplus: a.dt_softplus != 0,
        dt_limit: (a.dt_clamp != 0).then_some((a.dt_min, a.dt_max)),
    };
    Ok((dio, p))
}

/// One buffer of a call, for the aliasing checks.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub(crate) ptr: *const c_void,
    pub(crate) bytes: usize,
    pub(crate) name: &'static str,
    output: bool,
}

/// Every buffer must lie outside the cache, and every output apart from
/// every other buffer.
fn check_regions(c: &AnyCache, regions: &[Region]) -> Result<(), Error> {
    for r in regions {
        check_outside(c, r.ptr, r.bytes, r.name)?;
    }
    for (i, o) in regions.iter().enumerate().filter(|(_, r)| r.output) {
        for (j, other) in regions.iter().enumerate() {
            // The message is formatted only for a refusal: this runs on
            // every kernel call.
            if i != j && overlap(o.ptr, o.bytes, other.ptr, other.bytes) {
                return Err(CoreError::InvalidArg(format!("{} overlaps {}", o.name, other.name)).into());
            }
        }
    }
    Ok(())
}

/// The checks of an `m2c_conv_args` that read no array, for host and
/// device caches alike: its activations' dtype and whether SiLU applies.
fn conv_header(a: &m2c_conv_args) -> Result<(DType, bool), Error> {
    check_struct_size::<m2c_conv_args>(a.struct_size, "args", "m2c_conv_args_init")?;
    reserved_zero(a.reserved, "args")?;
    let io = dtype_arg(a.io_dtype, "args->io_dtype")?;
    let silu = match a.activation {
        M2C_ACTIVATION_NONE => false,
        M2C_ACTIVATION_SILU => true,
        other => {
            return Err(
                CoreError::InvalidArg(format!("args->activation = {other} is not an M2C_ACTIVATION_* value")).into()
            );
        }
    };
    if a.weight.is_null() {
        return Err(Error::NullArg("args->weight is NULL".into()));
    }
    Ok((io, silu))
}

/// The checks of an `m2c_ssm_args` that read no array: its activations'
/// dtype.
fn ssm_header(a: &m2c_ssm_args) -> Result<DType, Error> {
    check_struct_size::<m2c_ssm_args>(a.struct_size, "args", "m2c_ssm_args_init")?;
    let io = dtype_arg(a.io_dtype, "args->io_dtype")?;
    if a.A.is_null() {
        return Err(Error::NullArg("args->A is NULL".into()));
    }
    Ok(io)
}

/// The checks of an `m2c_ssm_io` that read no array.
fn io_header(io: &m2c_ssm_io) -> Result<(), Error> {
    check_struct_size::<m2c_ssm_io>(io.struct_size, "io", "m2c_ssm_io_init")?;
    reserved_zero(io.reserved, "io")
}

fn conv_params<'a>(a: &'a m2c_conv_args) -> Result<(DType, ConvParams<'a>), Error> {
    let (io, silu) = conv_header(a)?;
    // SAFETY: pointer contracts of m2c_conv_args.
    let weight = unsafe { opt_f32(a.weight, a.weight_len, "weight") }?.unwrap_or(&[]);
    // SAFETY: as above.
    let bias = unsafe { opt_f32(a.bias, a.bias_len, "bias") }?;
    Ok((io, ConvParams { weight, bias, silu }))
}

fn ssm_params<'a>(a: &'a m2c_ssm_args) -> Result<(DType, SsmParams<'a>), Error> {
    let io = ssm_header(a)?;
    // SAFETY: pointer contracts of m2c_ssm_args.
    let (aa, d, dt_bias) = unsafe {
        (
            opt_f32(a.A, a.A_len, "A")?.unwrap_or(&[]),
            opt_f32(a.D, a.D_len, "D")?,
            opt_f32(a.dt_bias, a.dt_bias_len, "dt_bias")?,
        )
    };
    let p = SsmParams {
        a: aa,
        d,
        dt_bias,
        dt_softplus: a.dt_softplus != 0,
        dt_limit: (a.dt_clamp != 0).then_some((a.dt_min, a.dt_max)),
    };
    Ok((io, p))
}

/// The regions of a conv call: its inputs (slots, x, weight, bias, the
/// args struct itself) and its output.
fn conv_regions(
    x: *const c_void,
    x_len: usize,
    out: *mut c_void,
    out_len: usize,
    io: DType,
    args: &m2c_conv_args,
) -> Vec<Region> {
    let sz = io.size();
    vec![
        Region { ptr: x, bytes: x_len * sz, name: "x", output: false },
        Region { ptr: args.weight.cast(), bytes: args.weight_len * 4, name: "weight", output: false },
        Region { ptr: args.bias.cast(), bytes: args.bias_len * 4, name: "bias", output: false },
        Region {
            ptr: (args as *const m2c_conv_args).cast(),
            bytes: std::mem::size_of::<m2c_conv_args>(),
            name: "args",
            output: false,
        },
        Region { ptr: out.cast_const(), bytes: out_len * sz, name: "out", output: true },
    ]
}

fn param_regions(a: &m2c_ssm_args, out: &mut Vec<Region>) {
    out.push(Region {
        ptr: (a as *const m2c_ssm_args).cast(),
        bytes: std::mem::size_of::<m2c_ssm_args>(),
        name: "args",
        output: false,
    });
    for (p, len, name) in [(a.A, a.A_len, "A"), (a.D, a.D_len, "D"), (a.dt_bias, a.dt_bias_len, "dt_bias")] {
        out.push(Region { ptr: p.cast(), bytes: len * 4, name, output: false });
    }
}

fn io_regions(io: &m2c_ssm_io, size: usize, out: &mut Vec<Region>) {
    out.push(Region {
        ptr: (io as *const m2c_ssm_io).cast(),
        bytes: std::mem::size_of::<m2c_ssm_io>(),
        name: "io",
        output: false,
    });
    for (p, len, name) in [
        (io.x, io.x_len, "x"),
        (io.dt, io.dt_len, "dt"),
        (io.B, io.B_len, "B"),
        (io.C, io.C_len, "C"),
        (io.z, io.z_len, "z"),
    ] {
        out.push(Region { ptr: p, bytes: len * size, name, output: false });
    }
    out.push(Region { ptr: io.y.cast_const(), bytes: io.y_len * size, name: "y", output: true });
}

/// The region of a slot list (none for NULL, the dense rows).
pub(crate) fn slots_region(slots: *const i32, n: usize) -> Region {
    Region { ptr: slots.cast(), bytes: slots_bytes(slots, n), name: "slots", output: false }
}

/// The region of a `cu_seqlens` array.
pub(crate) fn cu_region(cu: *const u64, len: usize) -> Region {
    Region { ptr: cu.cast(), bytes: len * 8, name: "cu_seqlens", output: false }
}

/// The arrays of a conv call, as the cache's memory needs them: host
/// slices (checked against the storage and each other, with the host
/// `tables` of the call) or device arrays.
///
/// # Safety
/// The pointer contracts of `m2c_conv_step` / `m2c_conv_prefill`.
pub(crate) unsafe fn conv_io<'a>(
    c: &AnyCache,
    args: &'a m2c_conv_args,
    x: *const c_void,
    x_len: usize,
    out: *mut c_void,
    out_len: usize,
    tables: &[Region],
) -> Result<ConvIo<'a>, Error> {
    if c.memory() == Memory::Device {
        return Ok(ConvIo::Device(device_conv(args, x, x_len, out, out_len)?));
    }
    let (io, params) = conv_params(args)?;
    // SAFETY: forwarded.
    let (xs, os) =
        unsafe { (slice_arg(x, dtype_to_c(io), x_len, "x")?, slice_mut_arg(out, dtype_to_c(io), out_len, "out")?) };
    let mut regions = conv_regions(x, x_len, out, out_len, io, args);
    regions.extend(tables.iter().copied());
    check_regions(c, &regions)?;
    Ok(ConvIo::Host { x: xs, out: os, params })
}

/// The arrays of an SSM call, as `conv_io`.
///
/// # Safety
/// The pointer contracts of `m2c_ssm_step` / `m2c_ssm_prefill`.
pub(crate) unsafe fn ssm_io<'a>(
    c: &AnyCache,
    io: &'a m2c_ssm_io,
    args: &'a m2c_ssm_args,
    tables: &[Region],
) -> Result<SsmIo<'a>, Error> {
    if c.memory() == Memory::Device {
        let (io, params) = device_ssm(io, args)?;
        return Ok(SsmIo::Device { io, params });
    }
    let (dtype, params) = ssm_params(args)?;
    let (inputs, y) = ssm_buffers(io, dtype)?;
    let mut regions = tables.to_vec();
    param_regions(args, &mut regions);
    io_regions(io, dtype.size(), &mut regions);
    check_regions(c, &regions)?;
    Ok(SsmIo::Host { inputs, y, params })
}

/// Fills `*args` with `struct_size` and the defaults: f32 activations,
/// SiLU, no weights (set `weight` before use). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_conv_args_init(args: *mut m2c_conv_args) {
    init_struct("m2c_conv_args_init", args, || m2c_conv_args {
        struct_size: std::mem::size_of::<m2c_conv_args>() as u32,
        io_dtype: M2C_DTYPE_F32,
        activation: M2C_ACTIVATION_SILU,
        reserved: 0,
        weight: std::ptr::null(),
        weight_len: 0,
        bias: std::ptr::null(),
        bias_len: 0,
    })
}

/// Fills `*args` with `struct_size` and the Mamba2 defaults: f32
/// activations, softplus on, no clamp (`[0, +inf]`), no A/D/dt_bias (set
/// `A` before use). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_ssm_args_init(args: *mut m2c_ssm_args) {
    init_struct("m2c_ssm_args_init", args, || m2c_ssm_args {
        struct_size: std::mem::size_of::<m2c_ssm_args>() as u32,
        io_dtype: M2C_DTYPE_F32,
        dt_softplus: 1,
        dt_clamp: 0,
        dt_min: 0.0,
        dt_max: f32::INFINITY,
        A: std::ptr::null(),
        A_len: 0,
        D: std::ptr::null(),
        D_len: 0,
        dt_bias: std::ptr::null(),
        dt_bias_len: 0,
    })
}

/// Fills `*io` with `struct_size` and NULL buffers. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_ssm_io_init(io: *mut m2c_ssm_io) {
    init_struct("m2c_ssm_io_init", io, || m2c_ssm_io {
        struct_size: std::mem::size_of::<m2c_ssm_io>() as u32,
        reserved: 0,
        x: std::ptr::null(),
        x_len: 0,
        dt: std::ptr::null(),
        dt_len: 0,
        B: std::ptr::null(),
        B_len: 0,
        C: std::ptr::null(),
        C_len: 0,
        z: std::ptr::null(),
        z_len: 0,
        y: std::ptr::null_mut(),
        y_len: 0,
    })
}

/// One decode token through the depthwise causal conv of `layer`
/// (causal_conv1d_update), in place on the cache: for each row, the new
/// input `x[row]` (`[n, conv_dim]`) is pushed into the slot's conv window
/// and `out[row]` (`[n, conv_dim]`) receives
/// `act(sum_k inputs[k] * weight[c][k] + bias[c])` over the
/// `conv_kernel_size` newest inputs, oldest first. Works with both window
/// layouts (`conv_width` K or K-1). `x` and `out` use `args->io_dtype`;
/// math is f32.
///
/// Slots as for `m2c_update_conv`: `slots == NULL` means rows `0..n-1`;
/// a negative entry is a padding row whose window is untouched and whose
/// output row is written as zeros. The slot's position is not advanced
/// (call `m2c_advance` once per token).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, args, `args->weight`, or a NULL
/// buffer with a non-zero length), `M2C_STATUS_INVALID_ARG` (struct_size,
/// activation, reserved field, a slot listed twice, misaligned buffers,
/// buffers that overlap the cache's storage or, for `out`, another
/// argument), `M2C_STATUS_OUT_OF_RANGE` (layer or slot),
/// `M2C_STATUS_SHAPE_MISMATCH` (any length), `M2C_STATUS_UNSUPPORTED_DTYPE`
/// (`args->io_dtype`), `M2C_STATUS_POISONED`. On failure neither the cache
/// nor `out` is written. Thread-safe: mutations of one handle are
/// serialised.
#[no_mangle]
pub unsafe extern "C" fn m2c_conv_step(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    x: *const c_void,
    x_len: usize,
    out: *mut c_void,
    out_len: usize,
    args: *const m2c_conv_args,
) -> m2c_status {
    ffi_status("m2c_conv_step", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, args) = unsafe { (arg_ref(cache, "cache")?, arg_ref(args, "args")?) };
        // SAFETY: pointer contract of slots (host memory for every cache).
        let sl = unsafe { slots_arg(slots, n) }?;
        let mut c = cache.write()?;
        // SAFETY: pointer contracts as documented above.
        let io = unsafe { conv_io(&c, args, x, x_len, out, out_len, &[slots_region(slots, n)]) }?;
        Ok(c.conv_step(layer, sl, io)?)
    })
}

/// One decode token through the selective-state update of `layer`
/// (selective_state_update of Mamba2), in place on the cache. Per slot and
/// head `h` (group `g = h / (num_heads / n_groups)`):
/// `dt = softplus(dt[h] + dt_bias[h])` (as configured, then clamped if
/// asked), `dA = exp(dt * A[h])`,
/// `state = state * dA + (dt * x) outer B[g]`,
/// `y = state . C[g] + D[h] * x`, and `y *= z * sigmoid(z)` when `z` is
/// given. Buffers (`io`, with T = n rows) use `args->io_dtype`; math is f32
/// whatever the storage dtype; each state element is read and written
/// once; `y` comes from the f32 state before it is rounded for storage.
///
/// Slots as for `m2c_update_conv`; padding rows keep their state and get
/// zero `y` rows. Positions are not advanced.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, io, args, `args->A`, or a NULL
/// buffer with a non-zero length; `(NULL, 0)` is an empty buffer, valid
/// when `n == 0`), `M2C_STATUS_INVALID_ARG` (struct_size, reserved field, a
/// slot listed twice, misaligned buffers, buffers that overlap the cache's
/// storage or, for `y`, another argument, `dt_min > dt_max` or NaN),
/// `M2C_STATUS_OUT_OF_RANGE` (layer or slot), `M2C_STATUS_SHAPE_MISMATCH`
/// (any length), `M2C_STATUS_UNSUPPORTED_DTYPE` (`args->io_dtype`),
/// `M2C_STATUS_POISONED`. On failure neither the cache nor `y` is written.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_ssm_step(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    io: *const m2c_ssm_io,
    args: *const m2c_ssm_args,
) -> m2c_status {
    ffi_status("m2c_ssm_step", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, iob, args) = unsafe { (arg_ref(cache, "cache")?, arg_ref(io, "io")?, arg_ref(args, "args")?) };
        // SAFETY: pointer contract of slots.
        let sl = unsafe { slots_arg(slots, n) }?;
        let mut c = cache.write()?;
        // SAFETY: pointer contracts as documented above.
        let io = unsafe { ssm_io(&c, iob, args, &[slots_region(slots, n)]) }?;
        Ok(c.ssm_step(layer, sl, io)?)
    })
}

/// Builds the typed views of an `m2c_ssm_io`.
fn ssm_buffers<'a>(io: &'a m2c_ssm_io, dtype: DType) -> Result<(SsmInputs<'a>, SliceMut<'a>), Error> {
    io_header(io)?;
    let d = dtype_to_c(dtype);
    // SAFETY: pointer contracts of m2c_ssm_io.
    unsafe {
        let inp = SsmInputs {
            x: slice_arg(io.x, d, io.x_len, "x")?,
            dt: slice_arg(io.dt, d, io.dt_len, "dt")?,
            b: slice_arg(io.B, d, io.B_len, "B")?,
            c: slice_arg(io.C, d, io.C_len, "C")?,
            z: opt_slice(io.z, d, io.z_len, "z")?,
        };
        Ok((inp, slice_mut_arg(io.y, d, io.y_len, "y")?))
    }
}

/// Reads a `cu_seqlens` argument: `n + 1` offsets.
///
/// # Safety
/// If non-NULL, `p` must be valid for reads of `len` `uint64_t`.
pub(crate) unsafe fn cu_arg<'a>(p: *const u64, len: usize) -> Result<&'a [u64], Error> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::NullArg(format!("cu_seqlens is NULL but cu_len = {len}")));
    }
    if len > isize::MAX as usize / 8 {
        return Err(CoreError::InvalidArg(format!("cu_len = {len} is too large")).into());
    }
    if !p.is_aligned() {
        return Err(CoreError::InvalidArg("cu_seqlens is not aligned to uint64_t".into()).into());
    }
    // SAFETY: non-NULL, aligned, size checked, validity from the caller.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Prefill (or one chunk of a chunked prefill) through the causal conv of
/// `layer`. Sequence `i` of the batch is slot `slots[i]` (`slots == NULL`:
/// slot `i`; negative: a padding sequence) and owns token rows
/// `cu_seqlens[i] .. cu_seqlens[i+1]` of `x` and `out` (each
/// `[T, conv_dim]` in `args->io_dtype`, `T = cu_seqlens[n]`). `cu_seqlens`
/// has `cu_len = n + 1` entries, starts at 0 and never decreases; a
/// sequence may be empty. Each sequence's tokens run in order with the
/// slot's current window as left context (zeros for a fresh slot), and the
/// window ends holding the last inputs: the result is bit-identical to
/// `T` calls of `m2c_conv_step`, so a prompt gives the same outputs and
/// state whether it arrives in one call or in chunks of any size. Padding
/// sequences get zero output rows. Positions are not advanced.
///
/// Errors: those of `m2c_conv_step`, and `M2C_STATUS_NULL_ARG`
/// (`cu_seqlens` NULL with `cu_len > 0`), `M2C_STATUS_SHAPE_MISMATCH`
/// (`cu_len != n + 1`, or lengths that do not match `T`),
/// `M2C_STATUS_INVALID_ARG` (`cu_seqlens[0] != 0`, or decreasing). On
/// failure neither the cache nor `out` is written. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_conv_prefill(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    cu_seqlens: *const u64,
    cu_len: usize,
    x: *const c_void,
    x_len: usize,
    out: *mut c_void,
    out_len: usize,
    args: *const m2c_conv_args,
) -> m2c_status {
    ffi_status("m2c_conv_prefill", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, args) = unsafe { (arg_ref(cache, "cache")?, arg_ref(args, "args")?) };
        // SAFETY: pointer contracts of slots and cu_seqlens (host memory).
        let (sl, cu) = unsafe { (slots_arg(slots, n)?, cu_arg(cu_seqlens, cu_len)?) };
        let mut c = cache.write()?;
        let tables = [slots_region(slots, n), cu_region(cu_seqlens, cu_len)];
        // SAFETY: pointer contracts as documented above.
        let io = unsafe { conv_io(&c, args, x, x_len, out, out_len, &tables) }?;
        Ok(c.conv_prefill(layer, sl, cu, io)?)
    })
}

/// Prefill (or one chunk of a chunked prefill) through the
/// selective-state update of `layer`: the exact sequential recurrence of
/// `m2c_ssm_step` over many tokens. Sequences and `cu_seqlens` as for
/// `m2c_conv_prefill`; the buffers of `io` hold `T = cu_seqlens[n]` token
/// rows (`x`, `z`, `y`: `[T, num_heads, head_dim]`; `dt`:
/// `[T, num_heads]`; `B`, `C`: `[T, n_groups, state_size]`). Each sequence
/// starts from its slot's cached state and leaves the state after its last
/// token there; `y` receives every token's output. Bit-identical to `T`
/// calls of `m2c_ssm_step` (so chunking never changes results), but
/// computed head by head over the tokens, so each head's state stays in
/// cache for the whole chunk. Padding sequences get zero `y` rows.
/// Positions are not advanced.
///
/// Errors: those of `m2c_ssm_step`, and those of `cu_seqlens` listed for
/// `m2c_conv_prefill`. On failure neither the cache nor `y` is written.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_ssm_prefill(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    cu_seqlens: *const u64,
    cu_len: usize,
    io: *const m2c_ssm_io,
    args: *const m2c_ssm_args,
) -> m2c_status {
    ffi_status("m2c_ssm_prefill", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, iob, args) = unsafe { (arg_ref(cache, "cache")?, arg_ref(io, "io")?, arg_ref(args, "args")?) };
        // SAFETY: pointer contracts of slots and cu_seqlens.
        let (sl, cu) = unsafe { (slots_arg(slots, n)?, cu_arg(cu_seqlens, cu_len)?) };
        let mut c = cache.write()?;
        let tables = [slots_region(slots, n), cu_region(cu_seqlens, cu_len)];
        // SAFETY: pointer contracts as documented above.
        let io = unsafe { ssm_io(&c, iob, args, &tables) }?;
        Ok(c.ssm_prefill(layer, sl, cu, io)?)
    })
}
