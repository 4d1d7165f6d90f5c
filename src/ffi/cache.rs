//! The exported functions of the cache.

use super::*;
use super::store::Store;
use crate::cache::Cache;
use crate::config::{Config, Device};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A Mamba2 state cache: the conv windows and SSM states of every layer
/// for a fixed number of sequence slots, plus a position per slot. Created
/// by `m2c_create`, freed by `m2c_destroy`. Opaque.
pub struct m2c_cache {
    pub(crate) inner: RwLock<Store>,
}

impl m2c_cache {
    /// Shared access for queries. A poisoned handle can still be read.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access for mutation; refused once a mutation panicked.
    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, Store>, Error> {
        self.inner.write().map_err(|_| {
            Error::Poisoned("the cache panicked during an earlier mutation; destroy it".into())
        })
    }
}

/// `Err(InvalidArg)` if the `bytes` bytes at `ptr` overlap any of the
/// cache's storage: a caller buffer must never alias the state, or a read
/// could write the cache through a shared handle.
pub(crate) fn check_outside(c: &Store, ptr: *const c_void, bytes: usize, what: &str) -> Result<(), Error> {
    // Host buffers cannot overlap a device cache's storage.
    if c.host().is_some_and(|c| c.overlaps_storage(ptr as usize, bytes)) {
        return Err(Error::InvalidArg(format!("{what} overlaps the cache's own storage")));
    }
    Ok(())
}

/// `Err(InvalidArg)` if an output buffer overlaps an input buffer of the
/// same call.
pub(crate) fn check_apart(out: *const c_void, out_bytes: usize, inp: *const c_void, in_bytes: usize, what: &str) -> Result<(), Error> {
    let (a0, a1) = (out as usize, (out as usize).saturating_add(out_bytes));
    let (b0, b1) = (inp as usize, (inp as usize).saturating_add(in_bytes));
    if out_bytes > 0 && in_bytes > 0 && a0 < b1 && b0 < a1 {
        return Err(Error::InvalidArg(what.to_string()));
    }
    Ok(())
}

pub(crate) fn slots_bytes(slots: *const i32, n: usize) -> usize {
    if slots.is_null() {
        0
    } else {
        n * 4
    }
}

/// The storage for `cfg`: a host cache, or with `M2C_DEVICE_CUDA` (in a
/// build with the `cuda` feature and a GPU) a device cache.
fn new_store(cfg: Config) -> Result<Store, Error> {
    #[cfg(feature = "cuda")]
    if cfg.device == Device::Cuda {
        cfg.shape()?;
        let gpu = crate::cuda::Gpu::new(cfg.device_index as usize)?;
        let dev = crate::device::DeviceCache::new(cfg, gpu)?;
        return Ok(Store::Device(std::sync::Mutex::new(Box::new(dev))));
    }
    Ok(Store::Host(Cache::new(cfg)?))
}

fn config_to_c(c: &Config) -> m2c_config {
    m2c_config {
        struct_size: std::mem::size_of::<m2c_config>() as u32,
        num_layers: c.num_layers,
        num_slots: c.num_slots,
        intermediate_size: c.intermediate_size,
        num_heads: c.num_heads,
        head_dim: c.head_dim,
        state_size: c.state_size,
        n_groups: c.n_groups,
        conv_kernel_size: c.conv_kernel_size,
        conv_width: c.conv_width,
        conv_dtype: c.conv_dtype.code(),
        ssm_dtype: c.ssm_dtype.code(),
        device: match c.device {
            Device::Cpu => M2C_DEVICE_CPU,
            Device::Cuda => M2C_DEVICE_CUDA,
        },
        device_index: c.device_index,
    }
}

pub(crate) fn config_from_c(c: &m2c_config) -> Result<Config, Error> {
    check_struct_size::<m2c_config>(c.struct_size, "cfg", "m2c_config_init")?;
    let dtype = |code: m2c_dtype, field: &str| {
        DType::from_code(code).ok_or_else(|| {
            Error::UnsupportedDtype(format!("{field} = {code} is not an M2C_DTYPE_* value"))
        })
    };
    let device = match c.device {
        M2C_DEVICE_CPU => Device::Cpu,
        M2C_DEVICE_CUDA => Device::Cuda,
        other => return Err(Error::InvalidConfig(format!("device = {other} is not an M2C_DEVICE_* value"))),
    };
    let cfg = Config {
        num_layers: c.num_layers,
        num_slots: c.num_slots,
        intermediate_size: c.intermediate_size,
        num_heads: c.num_heads,
        head_dim: c.head_dim,
        state_size: c.state_size,
        n_groups: c.n_groups,
        conv_kernel_size: c.conv_kernel_size,
        conv_width: c.conv_width,
        conv_dtype: dtype(c.conv_dtype, "conv_dtype")?,
        ssm_dtype: dtype(c.ssm_dtype, "ssm_dtype")?,
        device,
        device_index: c.device_index,
    };
    cfg.shape()?;
    Ok(cfg)
}

/// Fills `*cfg` with the defaults: Mamba2-130m shapes (24 layers,
/// intermediate_size 1536, 24 heads of 64, state_size 128, 1 group,
/// kernel 4), 1 slot, `conv_width = conv_kernel_size`, conv windows in
/// bf16, SSM states in f32, CPU; and sets `struct_size`.
///
/// NULL is a no-op. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_config_init(cfg: *mut m2c_config) {
    init_struct("m2c_config_init", cfg, || config_to_c(&Config::default()))
}

/// Computes the bytes of state storage a cache with configuration `*cfg`
/// allocates: the conv and SSM buffers of every layer, each rounded up to
/// 64 bytes. Small per-slot bookkeeping is not included.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cfg or out_bytes NULL),
/// `M2C_STATUS_INVALID_ARG` (unknown `struct_size`),
/// `M2C_STATUS_INVALID_CONFIG`, `M2C_STATUS_UNSUPPORTED_DTYPE`.
/// `*out_bytes` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_config_bytes(cfg: *const m2c_config, out_bytes: *mut u64) -> m2c_status {
    ffi_status("m2c_config_bytes", || {
        // SAFETY: NULL or a valid config, per the contract.
        let cfg = unsafe { arg_ref(cfg, "cfg") }?;
        let out = out_ptr(out_bytes, "out_bytes")?;
        let shape = config_from_c(cfg)?.shape()?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(shape.total_bytes) };
        Ok(())
    })
}

/// Creates a cache with configuration `*cfg`. Every state starts at zero
/// and every position at 0. Memory comes zeroed from the OS and is not
/// touched, so a large cache costs little until it is used.
///
/// On success `*out` receives a new handle the caller owns and must free
/// with `m2c_destroy`. On failure `*out` is not written.
///
/// With `device = M2C_DEVICE_CUDA` (a build with the `cuda` feature, on a
/// machine with the CUDA driver and NVRTC) the conv windows and SSM states
/// are plain device allocations on GPU `device_index`, and every function
/// works on the handle: the copy-style calls (update, set, read, reset,
/// copy_slots, snapshots, files, check_finite) take and fill host buffers
/// and stage the slot rows they touch through host memory, except
/// `m2c_reset`, slot acquisition and `m2c_copy_slots`, which work
/// device-to-device; the views
/// return device pointers (`m2c_tensor.device`); the kernel calls
/// (`m2c_conv_step`, `m2c_ssm_step`, the prefills) take device pointers
/// for the activations, weights and parameters (`slots` and `cu_seqlens`
/// stay host arrays), check their declared lengths against the shape and
/// the pointers against CUDA's allocation ranges (a host pointer is
/// `M2C_STATUS_INVALID_ARG`),
/// and are queued on the handle's stream, returning before the kernels
/// finish; a prefill is one launch per call, whatever its sequences. The
/// stream is the legacy default stream of the device's primary context
/// (the one the CUDA runtime uses) until `m2c_set_stream` names another:
/// on the default stream, work the caller queued on blocking streams is
/// ordered before and after m2c's; a caller on a non-blocking stream
/// either synchronises it around the call or hands it to
/// `m2c_set_stream`. The copy-style calls return once their transfers are
/// done.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_INVALID_ARG` (unknown
/// `struct_size`), `M2C_STATUS_INVALID_CONFIG` (the message names the
/// field), `M2C_STATUS_UNSUPPORTED_DTYPE`, `M2C_STATUS_UNSUPPORTED`
/// (`M2C_DEVICE_CUDA` in a build without CUDA, or with no usable GPU or
/// driver), `M2C_STATUS_OUT_OF_MEMORY` (host or device memory).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_create(cfg: *const m2c_config, out: *mut *mut m2c_cache) -> m2c_status {
    ffi_status("m2c_create", || {
        // SAFETY: NULL or a valid config, per the contract.
        let cfg = unsafe { arg_ref(cfg, "cfg") }?;
        let out = out_ptr(out, "out")?;
        let handle = Box::new(m2c_cache { inner: RwLock::new(new_store(config_from_c(cfg)?)?) });
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Frees a cache and all of its storage. Views obtained from it become
/// invalid. NULL is a no-op.
///
/// Must not run concurrently with any other call on the same handle, and
/// the handle must not be used afterwards (like `free`).
#[no_mangle]
pub unsafe extern "C" fn m2c_destroy(cache: *mut m2c_cache) {
    ffi_value("m2c_destroy", (), || {
        if !cache.is_null() {
            // SAFETY: a handle from m2c_create, destroyed once.
            drop(unsafe { Box::from_raw(cache) });
        }
    })
}

/// Copies the cache's configuration into `*out`. The caller sets
/// `out->struct_size` first (`m2c_config_init(out)` does); it must be a
/// size this library knows.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_INVALID_ARG` (unknown
/// `out->struct_size`). `*out` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_get_config(cache: *const m2c_cache, out: *mut m2c_config) -> m2c_status {
    ffi_status("m2c_get_config", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and aligned; the caller provides a config.
        check_struct_size::<m2c_config>(unsafe { (*out).struct_size }, "out", "m2c_config_init")?;
        let cfg = config_to_c(&cache.read().config());
        // SAFETY: as above.
        unsafe { out.write(cfg) };
        Ok(())
    })
}

/// Pushes one new conv input per slot into the conv windows of `layer`
/// (the decode-time update of a causal conv1d): each selected slot's
/// window shifts left by one column, dropping the oldest input, and
/// `x[row]` becomes its newest column (`conv_width - 1`).
///
/// `slots`/`n`: the rows of the call. `slots == NULL` means rows
/// `0..n-1` address slots `0..n-1`; otherwise row `i` addresses slot
/// `slots[i]`, and a negative entry is a padding row whose state is not
/// touched. A slot listed twice is `M2C_STATUS_INVALID_ARG`.
/// `x`: `[n, conv_dim]` elements of `x_dtype`, `len` = their count; it may
/// differ from the storage dtype (values are converted, rounding to
/// nearest even). `(NULL, 0)` is valid when `n == 0`. Buffers must be
/// aligned to their element size and must not overlap the cache's storage.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_OUT_OF_RANGE` (layer or
/// slot), `M2C_STATUS_INVALID_ARG`, `M2C_STATUS_SHAPE_MISMATCH` (len),
/// `M2C_STATUS_UNSUPPORTED_DTYPE`, `M2C_STATUS_POISONED`. On any failure
/// the cache is unchanged.
///
/// Thread-safe: mutations of one handle are serialised.
#[no_mangle]
pub unsafe extern "C" fn m2c_update_conv(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    x: *const c_void,
    x_dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    ffi_status("m2c_update_conv", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl, xs) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_arg(x, x_dtype, len, "x")?) };
        let mut c = cache.write()?;
        check_outside(&c, x, len * xs.dtype().size(), "x")?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        c.update_conv(layer, sl, xs)
    })
}

/// Replaces whole conv windows of `layer` (for example after prefill):
/// `window` is `[n, conv_dim, conv_width]` elements of `dtype`, column
/// `conv_width - 1` the newest. Slot selection, conversion, alignment,
/// errors and threading as for `m2c_update_conv`; on failure the cache is
/// unchanged.
#[no_mangle]
pub unsafe extern "C" fn m2c_set_conv(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    window: *const c_void,
    dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    ffi_status("m2c_set_conv", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl, ws) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_arg(window, dtype, len, "window")?) };
        let mut c = cache.write()?;
        check_outside(&c, window, len * ws.dtype().size(), "window")?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        c.set_conv(layer, sl, ws)
    })
}

/// Replaces whole SSM states of `layer`: `state` is
/// `[n, num_heads, head_dim, state_size]` elements of `dtype`. Slot
/// selection, conversion, alignment, errors and threading as for
/// `m2c_update_conv`; on failure the cache is unchanged.
#[no_mangle]
pub unsafe extern "C" fn m2c_update_ssm(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    state: *const c_void,
    dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    ffi_status("m2c_update_ssm", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl, ss) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_arg(state, dtype, len, "state")?) };
        let mut c = cache.write()?;
        check_outside(&c, state, len * ss.dtype().size(), "state")?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        c.update_ssm(layer, sl, ss)
    })
}

/// Copies the conv windows of `layer` for the selected slots into `out`
/// (`[n, conv_dim, conv_width]` elements of `dtype`), converting from the
/// storage dtype. Padding rows are written as zeros. Slot selection,
/// alignment and errors as for `m2c_update_conv`; `out` is written only on
/// success.
///
/// Thread-safe: reads of one handle run concurrently with each other and
/// are serialised against mutations. Works on a poisoned handle.
#[no_mangle]
pub unsafe extern "C" fn m2c_read_conv(
    cache: *const m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    out: *mut c_void,
    dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    ffi_status("m2c_read_conv", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl, os) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_mut_arg(out, dtype, len, "out")?) };
        let out_bytes = len * os.dtype().size();
        check_apart(out, out_bytes, slots.cast(), slots_bytes(slots, n), "out overlaps slots")?;
        let c = cache.read();
        check_outside(&c, out, out_bytes, "out")?;
        c.read_conv(layer, sl, os)
    })
}

/// Copies the SSM states of `layer` for the selected slots into `out`
/// (`[n, num_heads, head_dim, state_size]` elements of `dtype`),
/// converting from the storage dtype. Padding rows are written as zeros.
/// Otherwise as `m2c_read_conv`.
#[no_mangle]
pub unsafe extern "C" fn m2c_read_ssm(
    cache: *const m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    out: *mut c_void,
    dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    ffi_status("m2c_read_ssm", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl, os) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_mut_arg(out, dtype, len, "out")?) };
        let out_bytes = len * os.dtype().size();
        check_apart(out, out_bytes, slots.cast(), slots_bytes(slots, n), "out overlaps slots")?;
        let c = cache.read();
        check_outside(&c, out, out_bytes, "out")?;
        c.read_ssm(layer, sl, os)
    })
}

/// Zeroes the conv windows and SSM states of the selected slots in every
/// layer and sets their positions to 0 (a slot starting a new sequence).
/// Slot selection as for `m2c_update_conv` (`slots == NULL`: slots
/// `0..n-1`). Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_OUT_OF_RANGE`,
/// `M2C_STATUS_INVALID_ARG`, `M2C_STATUS_POISONED`; on failure nothing
/// changes. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_reset(cache: *mut m2c_cache, slots: *const i32, n: usize) -> m2c_status {
    ffi_status("m2c_reset", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?) };
        cache.write()?.reset(sl)
    })
}

/// Adds `num_tokens` to the position of each selected slot (call it once
/// per decode step or prefill chunk). Slot selection as for
/// `m2c_update_conv`. Errors: `M2C_STATUS_NULL_ARG`,
/// `M2C_STATUS_OUT_OF_RANGE` (a slot, or a position that would overflow
/// `uint64_t`), `M2C_STATUS_INVALID_ARG`, `M2C_STATUS_POISONED`; on failure
/// no position changes. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_advance(cache: *mut m2c_cache, slots: *const i32, n: usize, num_tokens: u32) -> m2c_status {
    ffi_status("m2c_advance", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?) };
        cache.write()?.advance(sl, num_tokens)
    })
}

/// Writes the position of `slot` (tokens it has consumed) to `*out`.
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_OUT_OF_RANGE` (a negative or
/// too large slot). `*out` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_position(cache: *const m2c_cache, slot: i32, out: *mut u64) -> m2c_status {
    ffi_status("m2c_position", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let pos = cache.read().position(slot)?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(pos) };
        Ok(())
    })
}

fn view(cache: *const m2c_cache, layer: u32, out: *mut m2c_tensor, ssm: bool) -> Result<(), Error> {
    // SAFETY: NULL or a live handle, per the contract.
    let cache = unsafe { arg_ref(cache, "cache") }?;
    let out = out_ptr(out, "out")?;
    if cache.inner.is_poisoned() {
        return Err(Error::Poisoned("the cache panicked during an earlier mutation; destroy it".into()));
    }
    let c = cache.read();
    let cfg = c.config();
    let sh = c.shape();
    let (data, dtype, device) = match &*c {
        Store::Host(h) => {
            let l = h.layer(layer)?;
            let buf = if ssm { &l.ssm } else { &l.conv };
            (buf.as_ptr().cast::<c_void>(), buf.dtype(), M2C_DEVICE_CPU)
        }
        Store::Device(d) => {
            let (conv, st) = d.lock().unwrap_or_else(|e| e.into_inner()).addresses(layer)?;
            let (addr, dtype) = if ssm { (st, cfg.ssm_dtype) } else { (conv, cfg.conv_dtype) };
            (addr as usize as *mut c_void, dtype, M2C_DEVICE_CUDA)
        }
    };
    let (ndim, shape) = if ssm {
        (4, [cfg.num_slots, cfg.num_heads, cfg.head_dim, cfg.state_size].map(u64::from))
    } else {
        (3, [u64::from(cfg.num_slots), sh.conv_dim as u64, sh.conv_width as u64, 1])
    };
    let mut strides = [0u64; 4];
    let mut acc = 1u64;
    for d in (0..ndim).rev() {
        strides[d] = acc;
        acc *= shape[d];
    }
    let t = m2c_tensor { data, dtype: dtype.code(), ndim: ndim as u32, shape, strides, device, device_index: cfg.device_index };
    // SAFETY: checked non-NULL and aligned.
    unsafe { out.write(t) };
    Ok(())
}

/// Describes the conv storage of `layer` as a 3-D tensor
/// `[num_slots, conv_dim, conv_width]` in the conv storage dtype, without
/// copying: `out->data` points into the cache.
///
/// The pointer stays valid until `m2c_destroy`. Reads and writes through it
/// are not synchronised with m2c's own calls: the caller must not access
/// the view while another call on this cache writes the same layer, and
/// must not call m2c on the layer while writing through the view.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_OUT_OF_RANGE` (layer),
/// `M2C_STATUS_POISONED`. `*out` is written only on success.
#[no_mangle]
pub unsafe extern "C" fn m2c_conv_view(cache: *mut m2c_cache, layer: u32, out: *mut m2c_tensor) -> m2c_status {
    ffi_status("m2c_conv_view", || view(cache, layer, out, false))
}

/// Describes the SSM storage of `layer` as a 4-D tensor
/// `[num_slots, num_heads, head_dim, state_size]` in the SSM storage
/// dtype, without copying. Lifetime, synchronisation and errors as for
/// `m2c_conv_view`.
#[no_mangle]
pub unsafe extern "C" fn m2c_ssm_view(cache: *mut m2c_cache, layer: u32, out: *mut m2c_tensor) -> m2c_status {
    ffi_status("m2c_ssm_view", || view(cache, layer, out, true))
}

/// Chooses the CUDA stream on which a device cache (`M2C_DEVICE_CUDA`)
/// queues its work from now on. The kernel calls (`m2c_conv_step`,
/// `m2c_ssm_step`, `m2c_conv_prefill`, `m2c_ssm_prefill`) are queued on
/// it and return; the copy-style calls (update, set, read, reset,
/// copy_slots, snapshots, files, `m2c_check_finite`) run their transfers
/// on it and wait for it before they return. `stream` is a `CUstream`
/// (`cudaStream_t`) of the primary context of the cache's device (the
/// context the CUDA runtime API uses), or NULL for the legacy default
/// stream, the initial setting.
///
/// The call first waits for the work m2c queued on the previous stream, so
/// m2c's own work stays in order across the switch; ordering the caller's
/// other work against the new stream is the caller's part. The caller
/// keeps the stream alive until it sets another one or destroys the
/// cache; `m2c_destroy` waits for the current stream before it frees
/// device memory.
///
/// Only kernel calls may be captured into a CUDA graph on the stream:
/// this call and the copy-style calls wait for the stream, which a capture
/// forbids. A kernel call of at most 256 rows or sequences allocates and
/// transfers nothing (its slot table travels in the launch parameters).
///
/// A host cache takes no stream: NULL is accepted and does nothing, any
/// other value returns `M2C_STATUS_UNSUPPORTED`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_INVALID_ARG` (the
/// driver does not know `stream`, or it belongs to another context; pass
/// only live streams: the driver may not survive a destroyed or made-up
/// handle),
/// `M2C_STATUS_UNSUPPORTED`, `M2C_STATUS_POISONED`; on failure the
/// previous stream stays in use. Thread-safe: serialised with the
/// handle's other calls. The stream belongs to the handle, not to the
/// calling thread: threads that want their own streams use their own
/// handles.
#[no_mangle]
pub unsafe extern "C" fn m2c_set_stream(cache: *mut m2c_cache, stream: *mut c_void) -> m2c_status {
    ffi_status("m2c_set_stream", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        cache.write()?.set_stream(stream as u64)
    })
}

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
