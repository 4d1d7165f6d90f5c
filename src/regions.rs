//! Exported state-transfer descriptors: the cache's arenas and the byte
//! runs of slots, for transfer engines that move registered memory.

use super::cache::check_outside;
use super::config::m2c_device;
use super::*;

/// One allocation of a cache's state, to register with a transfer engine
/// once: arena `2*l` holds layer `l`'s conv windows (every slot), arena
/// `2*l + 1` its SSM states.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct m2c_arena {
    /// Host address, or device address for a device cache.
    pub base: u64,
    /// Bytes (at least the slots' state; alignment padding may follow).
    pub len: u64,
    /// Where it lives (`M2C_DEVICE_*`) and which device.
    pub device: m2c_device,
    pub device_index: i32,
}

/// A run of one slot's state: `len` bytes at `offset` into arena `arena`,
/// which are bytes `image_offset .. image_offset + len` of the slot's
/// snapshot (`m2c_slot_save`'s layout, docs/FORMATS.md).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct m2c_region {
    pub slot: i32,
    pub arena: u32,
    pub offset: u64,
    pub len: u64,
    pub image_offset: u64,
}

/// Writes `items` to `out` (`cap` entries) and their count to `*out_n`:
/// `(NULL, 0)` asks for the count only; a shorter array is refused.
///
/// # Safety
/// `out` is NULL or valid for `cap` writes of `T`; `out_n` for one.
unsafe fn write_list<T: Copy>(
    c: &m2c_core::AnyCache,
    items: &[T],
    out: *mut T,
    cap: usize,
    out_n: *mut usize,
) -> Result<(), Error> {
    let out_n = out_ptr(out_n, "out_n")?;
    check_outside(c, out_n.cast_const().cast(), std::mem::size_of::<usize>(), "out_n")?;
    if !out.is_null() || cap != 0 {
        let out = out_ptr(out, "out")?;
        check_outside(c, out.cast_const().cast(), cap.saturating_mul(std::mem::size_of::<T>()), "out")?;
        if cap < items.len() {
            return Err(
                CoreError::ShapeMismatch(format!("out holds {cap} entries, but {} are needed", items.len())).into()
            );
        }
        // SAFETY: `cap >= items.len()` entries, per the contract.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), out, items.len()) };
    }
    // SAFETY: non-NULL and aligned.
    unsafe { out_n.write(items.len()) };
    Ok(())
}

/// Lists the arenas of the cache's state into `out` (`cap` entries), two
/// per layer, and their count into `*out_n`; `(NULL, 0)` asks for the
/// count only. Register them with a transfer engine once: they stay put
/// for the cache's life.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out_n; out NULL with `cap > 0`),
/// `M2C_STATUS_SHAPE_MISMATCH` (`cap` too small; the message says how
/// many are needed), `M2C_STATUS_INVALID_ARG` (an output inside the cache's
/// storage), `M2C_STATUS_POISONED`. Outputs are written only on success.
/// Thread-safe (a read).
#[no_mangle]
pub unsafe extern "C" fn m2c_arenas(
    cache: *const m2c_cache,
    out: *mut m2c_arena,
    cap: usize,
    out_n: *mut usize,
) -> m2c_status {
    ffi_status("m2c_arenas", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let c = cache.read_unpoisoned()?;
        let cfg = super::config::config_to_c(&c.config());
        let list: Vec<m2c_arena> = c
            .arenas()?
            .iter()
            .map(|a| m2c_arena { base: a.base, len: a.len, device: cfg.device, device_index: cfg.device_index })
            .collect();
        // SAFETY: pointer contracts as documented.
        unsafe { write_list(&c, &list, out, cap, out_n) }
    })
}

/// Lists the byte runs of the state of `slots[0..n]` (in range, distinct;
/// negative entries, padding, are refused) into `out` (`cap` entries) and
/// their count into `*out_n`; `(NULL, 0)` asks for the count only. Per
/// slot, in order, and per layer: its conv window's run, then its SSM
/// state's run (`2 * num_layers` per slot). Each says where its bytes take
/// place in the slot's snapshot, so the runs of a slot cover the snapshot's
/// payload exactly once: a receiver can rebuild the snapshot (header from
/// `m2c_slot_save`'s layout) or write the runs into the same runs of its
/// own slot. Positions are not in the arenas: send `m2c_position`. For a
/// subset of layers (a pipeline stage), keep the runs of arenas `2*l` and
/// `2*l + 1` of its layers `l`: they are the layers' only runs.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out_n; slots NULL with `n > 0`;
/// out NULL with `cap > 0`), `M2C_STATUS_OUT_OF_RANGE` (a slot out of range
/// or negative), `M2C_STATUS_INVALID_ARG` (a slot listed twice; an output
/// inside the cache's storage), `M2C_STATUS_SHAPE_MISMATCH` (`cap` too
/// small), `M2C_STATUS_POISONED`. Outputs are written only on success.
/// Thread-safe (a read).
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_regions(
    cache: *const m2c_cache,
    slots: *const i32,
    n: usize,
    out: *mut m2c_region,
    cap: usize,
    out_n: *mut usize,
) -> m2c_status {
    ffi_status("m2c_slot_regions", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        // SAFETY: NULL or `n` slots, per the contract.
        let slots = unsafe { super::spec::array_arg(slots, n, "slots") }?;
        let c = cache.read_unpoisoned()?;
        let list: Vec<m2c_region> = c
            .slot_regions(slots)?
            .iter()
            .map(|r| m2c_region {
                slot: r.slot,
                arena: r.arena,
                offset: r.offset,
                len: r.len,
                image_offset: r.image_offset,
            })
            .collect();
        // SAFETY: pointer contracts as documented.
        unsafe { write_list(&c, &list, out, cap, out_n) }
    })
}

/// A digest of `slot`'s state and position into `*out`: the checksum
/// `m2c_slot_save` would write as the last 8 bytes of its snapshot, in the
/// cache's snapshot format (`m2c_set_snapshot_format`: format 1's XXH64,
/// or format 2's chunked checksum, computed on every thread of the pool),
/// over the header and every layer's conv window and SSM state. Compare it
/// at both ends of a transfer (both set to the same format): a run missing
/// or damaged on the way changes it. Reads the slot once and allocates
/// nothing of its size (format 2 hashes through one 1 MiB buffer per
/// thread; a device cache stages the slot's rows through host memory).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_OUT_OF_RANGE`
/// (slot), `M2C_STATUS_INVALID_ARG` (`out` inside the cache's storage),
/// `M2C_STATUS_POISONED`. `*out` is written only on success. Thread-safe
/// (a read).
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_digest(cache: *const m2c_cache, slot: i32, out: *mut u64) -> m2c_status {
    ffi_status("m2c_slot_digest", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read_unpoisoned()?;
        super::cache::check_out(&c, out, "out")?;
        let d = c.slot_digest(slot)?;
        // SAFETY: non-NULL, aligned, outside the cache's storage.
        unsafe { out.write(d) };
        Ok(())
    })
}
