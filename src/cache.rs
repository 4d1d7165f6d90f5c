//! Cache handles (create, destroy, config) and the copy-style calls that
//! write, read, reset and advance slots.

use super::config::{config_from_c, config_to_c};
use super::*;
use m2c_core::AnyCache;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A Mamba2 state cache: the conv windows and SSM states of every layer
/// for a fixed number of sequence slots, plus a position per slot. Created
/// by `m2c_create`, freed by `m2c_destroy`. Opaque.
///
/// The general flow is:
/// - `m2c_config_init`, set the model's shape, `m2c_create`;
/// - per request: `m2c_slot_acquire` (the slot starts zeroed), then the
///   prompt: `m2c_conv_prefill` and `m2c_ssm_prefill` per layer, and
///   `m2c_advance` by its length;
/// - per token, per layer: `m2c_conv_step`, then `m2c_ssm_step` on the
///   conv output's x, B and C; then one `m2c_advance` for the token;
/// - when the request ends: `m2c_slot_release`;
/// - forks and beam reorders: `m2c_copy_slots`; checkpoints:
///   `m2c_slot_save` / `m2c_slot_load`, `m2c_save_file` / `m2c_load_file`;
/// - `m2c_destroy`.
pub struct m2c_cache {
    pub(crate) inner: RwLock<AnyCache>,
}

impl m2c_cache {
    /// Shared access for queries. A poisoned handle can still be read.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, AnyCache> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Shared access, refused once a mutation panicked (for calls whose
    /// answers must describe a whole state).
    pub(crate) fn read_unpoisoned(&self) -> Result<RwLockReadGuard<'_, AnyCache>, Error> {
        self.inner
            .read()
            .map_err(|_| CoreError::Poisoned("the cache panicked during an earlier mutation; destroy it".into()).into())
    }

    /// Exclusive access for mutation; refused once a mutation panicked.
    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, AnyCache>, Error> {
        self.inner
            .write()
            .map_err(|_| CoreError::Poisoned("the cache panicked during an earlier mutation; destroy it".into()).into())
    }
}

/// `Err(InvalidArg)` if the `bytes` bytes at `ptr` overlap any of the
/// cache's storage: a caller buffer must never alias the state, or a read
/// could write the cache through a shared handle.
pub(crate) fn check_outside(c: &AnyCache, ptr: *const c_void, bytes: usize, what: &str) -> Result<(), Error> {
    if c.overlaps_storage(ptr as usize, bytes) {
        return Err(CoreError::InvalidArg(format!("{what} overlaps the cache's own storage")).into());
    }
    Ok(())
}

/// `Err(InvalidArg)` if an output buffer overlaps an input buffer of the
/// same call.
/// Checks a scalar output parameter: the `T` at `out` (already
/// non-NULL and aligned, see `out_ptr`) must not overlap the cache's
/// storage, so that no call, a read included, writes into the state.
/// Every export with an output parameter checks it here before it runs.
pub(crate) fn check_out<T>(c: &AnyCache, out: *mut T, what: &str) -> Result<(), Error> {
    check_outside(c, out.cast_const().cast(), std::mem::size_of::<T>(), what)
}

pub(crate) fn check_apart(
    out: *const c_void,
    out_bytes: usize,
    inp: *const c_void,
    in_bytes: usize,
    what: &str,
) -> Result<(), Error> {
    if overlap(out, out_bytes, inp, in_bytes) {
        return Err(CoreError::InvalidArg(what.to_string()).into());
    }
    Ok(())
}

/// Whether two non-empty byte ranges share a byte.
pub(crate) fn overlap(a: *const c_void, a_bytes: usize, b: *const c_void, b_bytes: usize) -> bool {
    let (a0, a1) = (a as usize, (a as usize).saturating_add(a_bytes));
    let (b0, b1) = (b as usize, (b as usize).saturating_add(b_bytes));
    a_bytes > 0 && b_bytes > 0 && a0 < b1 && b0 < a1
}

pub(crate) fn slots_bytes(slots: *const i32, n: usize) -> usize {
    if slots.is_null() { 0 } else { n * 4 }
}

/// Creates a cache with configuration `*cfg`. Every state starts at zero
/// and every position at 0. Memory comes zeroed from the OS and is not
/// touched, so a large cache costs little until it is used.
///
/// On success `*out` receives a new handle the caller owns and must free
/// with `m2c_destroy`. On failure `*out` is not written.
///
/// With `device = M2C_DEVICE_CUDA` the state lives in GPU memory: see
/// "Device caches" at the top of this header.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cfg, out), `M2C_STATUS_INVALID_ARG`
/// (unknown `struct_size`), `M2C_STATUS_INVALID_CONFIG` (the message names the
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
        let handle = Box::new(m2c_cache { inner: RwLock::new(AnyCache::new(config_from_c(cfg)?)?) });
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
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_INVALID_ARG`
/// (unknown `out->struct_size`, or `out` inside the cache's storage).
/// `*out` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_get_config(cache: *const m2c_cache, out: *mut m2c_config) -> m2c_status {
    ffi_status("m2c_get_config", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and aligned; the caller provides a config.
        check_struct_size::<m2c_config>(unsafe { (*out).struct_size }, "out", "m2c_config_init")?;
        let c = cache.read();
        check_out(&c, out, "out")?;
        let cfg = config_to_c(&c.config());
        // SAFETY: as above.
        unsafe { out.write(cfg) };
        Ok(())
    })
}

/// Sets how many threads the calls on this cache that follow may use:
/// 0 (the default) m2c's thread pool (`M2C_NUM_THREADS`, else
/// `RAYON_NUM_THREADS`, else one thread per CPU), 1 the calling thread
/// only (no other thread ever runs work of this cache: for an engine with
/// workers of its own), `n` at most `n` threads (a pool of `n`, started on
/// first use and shared by the caches that ask for `n`). Results do not
/// depend on the setting. Calls too small for several threads run on the
/// calling thread whatever it is.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_POISONED`.
/// Thread-safe: serialised with the handle's other calls.
#[no_mangle]
pub unsafe extern "C" fn m2c_set_num_threads(cache: *mut m2c_cache, num_threads: u32) -> m2c_status {
    ffi_status("m2c_set_num_threads", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        cache.write()?.set_num_threads(num_threads as usize);
        Ok(())
    })
}

/// A conv window layout for `m2c_set_conv_layout`. Arrives as a plain
/// integer: an unknown one is `M2C_STATUS_INVALID_ARG`.
pub type m2c_conv_layout = u32;

/// Each slot's window stored `[conv_dim][conv_width]`, oldest input first:
/// the layout of HF transformers, vLLM and llama.cpp, and the default.
pub const M2C_CONV_LAYOUT_OLDEST_FIRST: m2c_conv_layout = 0;

/// Each slot's window stored column by column, `[conv_width][conv_dim]`,
/// with a per-(layer, slot) head: a decode token (`m2c_update_conv`,
/// `m2c_conv_step`) writes one column instead of shifting all of them.
/// Outputs and states are bit-identical to the oldest-first layout's, and
/// everything that copies windows out or in (`m2c_read_conv`,
/// `m2c_set_conv`, snapshots, files, the store, digests) sees them oldest
/// first, so no format changes. Host caches only. `m2c_slot_regions`
/// refuses a ring cache (its bytes are not in snapshot order); views
/// describe the layout (see `m2c_conv_view`, `m2c_conv_heads`).
pub const M2C_CONV_LAYOUT_RING: m2c_conv_layout = 1;

/// Switches how the cache stores its conv windows (`M2C_CONV_LAYOUT_*`),
/// converting every slot's windows in place: one pass over the conv
/// storage (about 2% of the state), after which `m2c_read_conv` returns
/// exactly what it did before. Call it once after `m2c_create`, or at any
/// time between calls. Setting the current layout does nothing.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_INVALID_ARG` (an
/// unknown layout), `M2C_STATUS_UNSUPPORTED` (the ring layout on a device
/// cache), `M2C_STATUS_OUT_OF_MEMORY` (its small tables could not be
/// allocated), `M2C_STATUS_POISONED`. On failure nothing changes.
/// Thread-safe: serialised with the handle's other calls.
#[no_mangle]
pub unsafe extern "C" fn m2c_set_conv_layout(cache: *mut m2c_cache, layout: m2c_conv_layout) -> m2c_status {
    ffi_status("m2c_set_conv_layout", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let layout = match layout {
            M2C_CONV_LAYOUT_OLDEST_FIRST => m2c_core::ConvLayout::OldestFirst,
            M2C_CONV_LAYOUT_RING => m2c_core::ConvLayout::Ring,
            other => {
                return Err(CoreError::InvalidArg(format!("layout = {other} is not an M2C_CONV_LAYOUT_* value")).into());
            }
        };
        Ok(cache.write()?.set_conv_layout(layout)?)
    })
}

/// Writes the cache's conv window layout (`M2C_CONV_LAYOUT_*`) to `*out`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_INVALID_ARG`
/// (`out` inside the cache's storage). `*out` is written only on success.
/// Thread-safe (a read).
#[no_mangle]
pub unsafe extern "C" fn m2c_get_conv_layout(cache: *const m2c_cache, out: *mut m2c_conv_layout) -> m2c_status {
    ffi_status("m2c_get_conv_layout", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read();
        check_out(&c, out, "out")?;
        let v = match c.conv_layout() {
            m2c_core::ConvLayout::OldestFirst => M2C_CONV_LAYOUT_OLDEST_FIRST,
            m2c_core::ConvLayout::Ring => M2C_CONV_LAYOUT_RING,
        };
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(v) };
        Ok(())
    })
}

/// Writes a one-line, human-readable summary of the cache into `buf`, NUL
/// terminated: layers and slots (and how many are in use), the conv window
/// and SSM state shapes and storage dtypes, the conv layout, the bytes of
/// state and where they live. For logs and debuggers; the wording may
/// change between releases (parse `m2c_get_config` instead).
///
/// On success `*out_needed` receives the bytes the summary needs, the NUL
/// included: call with `(NULL, 0)` to learn the size, then with a buffer
/// that large (a summary is well under 512 bytes).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out_needed, or a NULL `buf` with a
/// non-zero `len`), `M2C_STATUS_SHAPE_MISMATCH` (`len` is non-zero but
/// smaller than the summary needs; the message says how much),
/// `M2C_STATUS_INVALID_ARG` (`buf` or `out_needed` inside the cache's
/// storage, or overlapping each other). Neither output is written on
/// failure. Thread-safe (a read).
#[no_mangle]
pub unsafe extern "C" fn m2c_describe(
    cache: *const m2c_cache,
    buf: *mut c_char,
    len: usize,
    out_needed: *mut usize,
) -> m2c_status {
    ffi_status("m2c_describe", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out_needed, "out_needed")?;
        if buf.is_null() && len != 0 {
            return Err(Error::NullArg(format!("buf is NULL but len = {len}")));
        }
        let c = cache.read();
        check_out(&c, out, "out_needed")?;
        check_outside(&c, buf.cast_const().cast(), len, "buf")?;
        check_apart(
            out.cast_const().cast(),
            std::mem::size_of::<usize>(),
            buf.cast_const().cast(),
            len,
            "out_needed overlaps buf",
        )?;
        let text = c.describe();
        let needed = text.len() + 1;
        if len != 0 && len < needed {
            return Err(CoreError::ShapeMismatch(format!("buf holds {len} bytes; the summary needs {needed}")).into());
        }
        if len != 0 {
            // SAFETY: buf holds at least `needed` writable bytes (checked).
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
                buf.add(text.len()).write(0);
            }
        }
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(needed) };
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
/// Errors: `M2C_STATUS_NULL_ARG` (cache, or `x` NULL with `len > 0`),
/// `M2C_STATUS_OUT_OF_RANGE` (layer or slot), `M2C_STATUS_INVALID_ARG` (a
/// slot listed twice, a misaligned `x`, or `x` or `slots` inside the
/// cache's storage), `M2C_STATUS_SHAPE_MISMATCH` (len),
/// `M2C_STATUS_UNSUPPORTED_DTYPE` (x_dtype), `M2C_STATUS_POISONED`. On any
/// failure the cache is unchanged.
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
        let (cache, sl, xs) =
            unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_arg(x, x_dtype, len, "x")?) };
        let mut c = cache.write()?;
        check_outside(&c, x, len * xs.dtype().size(), "x")?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        Ok(c.update_conv(layer, sl, xs)?)
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
        let (cache, sl, ws) =
            unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_arg(window, dtype, len, "window")?) };
        let mut c = cache.write()?;
        check_outside(&c, window, len * ws.dtype().size(), "window")?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        Ok(c.set_conv(layer, sl, ws)?)
    })
}

/// Replaces whole SSM states of `layer`: `state` is
/// `[n, num_heads, head_dim, state_size]` elements of `dtype`. Slot
/// selection, conversion, alignment, errors and threading as for
/// `m2c_update_conv`; on failure the cache is unchanged.
#[no_mangle]
pub unsafe extern "C" fn m2c_set_ssm(
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    state: *const c_void,
    dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    // SAFETY: forwarded.
    unsafe { set_ssm("m2c_set_ssm", cache, layer, slots, n, state, dtype, len) }
}

/// The first name of `m2c_set_ssm`, kept because an ABI never loses a
/// function: it does exactly what `m2c_set_ssm` does (it replaces states;
/// it does not push like `m2c_update_conv`). Prefer `m2c_set_ssm`.
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
    // SAFETY: forwarded.
    unsafe { set_ssm("m2c_update_ssm", cache, layer, slots, n, state, dtype, len) }
}

/// The body of `m2c_set_ssm` and its alias, reporting errors as `name`.
///
/// # Safety
/// The pointer contracts of `m2c_set_ssm`.
unsafe fn set_ssm(
    name: &str,
    cache: *mut m2c_cache,
    layer: u32,
    slots: *const i32,
    n: usize,
    state: *const c_void,
    dtype: m2c_dtype,
    len: usize,
) -> m2c_status {
    ffi_status(name, || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl, ss) =
            unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_arg(state, dtype, len, "state")?) };
        let mut c = cache.write()?;
        check_outside(&c, state, len * ss.dtype().size(), "state")?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        Ok(c.set_ssm(layer, sl, ss)?)
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
        let (cache, sl, os) =
            unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_mut_arg(out, dtype, len, "out")?) };
        let out_bytes = len * os.dtype().size();
        check_apart(out, out_bytes, slots.cast(), slots_bytes(slots, n), "out overlaps slots")?;
        let c = cache.read();
        check_outside(&c, out, out_bytes, "out")?;
        Ok(c.read_conv(layer, sl, os)?)
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
        let (cache, sl, os) =
            unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?, slice_mut_arg(out, dtype, len, "out")?) };
        let out_bytes = len * os.dtype().size();
        check_apart(out, out_bytes, slots.cast(), slots_bytes(slots, n), "out overlaps slots")?;
        let c = cache.read();
        check_outside(&c, out, out_bytes, "out")?;
        Ok(c.read_ssm(layer, sl, os)?)
    })
}

/// Zeroes the conv windows and SSM states of the selected slots in every
/// layer and sets their positions to 0 (a slot starting a new sequence).
/// Slot selection as for `m2c_update_conv` (`slots == NULL`: slots
/// `0..n-1`).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_OUT_OF_RANGE` (a
/// slot), `M2C_STATUS_INVALID_ARG` (a slot listed twice, or `slots` inside
/// the cache's storage), `M2C_STATUS_POISONED`. On failure nothing changes.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_reset(cache: *mut m2c_cache, slots: *const i32, n: usize) -> m2c_status {
    ffi_status("m2c_reset", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?) };
        let mut c = cache.write()?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        Ok(c.reset(sl)?)
    })
}

/// Adds `num_tokens` to the position of each selected slot (call it once
/// per decode step or prefill chunk). Slot selection as for
/// `m2c_update_conv`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_OUT_OF_RANGE` (a
/// slot, or a position that would overflow `uint64_t`),
/// `M2C_STATUS_INVALID_ARG` (a slot listed twice, or `slots` inside the
/// cache's storage), `M2C_STATUS_POISONED`. On failure no position
/// changes. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_advance(
    cache: *mut m2c_cache,
    slots: *const i32,
    n: usize,
    num_tokens: u32,
) -> m2c_status {
    ffi_status("m2c_advance", || {
        // SAFETY: pointer contracts as documented above.
        let (cache, sl) = unsafe { (arg_ref(cache, "cache")?, slots_arg(slots, n)?) };
        let mut c = cache.write()?;
        check_outside(&c, slots.cast(), slots_bytes(slots, n), "slots")?;
        Ok(c.advance(sl, num_tokens)?)
    })
}

/// Writes the position of `slot` (tokens it has consumed) to `*out`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_OUT_OF_RANGE`
/// (a negative or too large slot), `M2C_STATUS_INVALID_ARG` (`out` inside
/// the cache's storage). `*out` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_position(cache: *const m2c_cache, slot: i32, out: *mut u64) -> m2c_status {
    ffi_status("m2c_position", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read();
        check_out(&c, out, "out")?;
        let pos = c.position(slot)?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(pos) };
        Ok(())
    })
}
