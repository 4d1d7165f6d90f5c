//! The slot lifecycle (acquire, release), fork and reorder (copy_slots),
//! and the health of a slot's state.

use super::cache::{check_out, check_outside};
use super::*;

/// Hands out the lowest free slot: its state is zeroed in every layer, its
/// position set to 0, and it counts as in use until `m2c_slot_release`.
/// Engines that manage slots themselves can ignore acquire/release: every
/// index-based call works on any slot in range.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out_slot),
/// `M2C_STATUS_NO_FREE_SLOT`, `M2C_STATUS_INVALID_ARG` (`out_slot` inside
/// the cache's storage), `M2C_STATUS_POISONED`. `*out_slot` is written
/// only on success.
/// Thread-safe: two threads never get the same slot.
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_acquire(cache: *mut m2c_cache, out_slot: *mut i32) -> m2c_status {
    ffi_status("m2c_slot_acquire", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out_slot, "out_slot")?;
        let mut c = cache.write()?;
        check_out(&c, out, "out_slot")?;
        let slot = c.slot_acquire()?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(slot) };
        Ok(())
    })
}

/// Returns `slot` to the free list; its state is left as it is until the
/// next acquire zeroes it. Releasing a slot that is not in use is
/// `M2C_STATUS_INVALID_ARG` (a double release is an engine bug worth
/// reporting).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_OUT_OF_RANGE`
/// (slot), `M2C_STATUS_INVALID_ARG` (a slot not in use),
/// `M2C_STATUS_POISONED`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_slot_release(cache: *mut m2c_cache, slot: i32) -> m2c_status {
    ffi_status("m2c_slot_release", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        Ok(cache.write()?.slot_release(slot)?)
    })
}

/// Writes the number of acquired slots to `*out`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_INVALID_ARG`
/// (`out` inside the cache's storage). `*out` is written only on success.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_slots_in_use(cache: *const m2c_cache, out: *mut u32) -> m2c_status {
    ffi_status("m2c_slots_in_use", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read();
        check_out(&c, out, "out")?;
        let n = c.slots_in_use();
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(n) };
        Ok(())
    })
}

/// Forks and reorders states: for each `i < n`, slot `dst[i]` receives the
/// conv and SSM state of slot `src[i]` in every layer, and its position.
/// The result is as if all reads happen before any write, so a permutation
/// (a beam-search reorder) and overlapping source and destination sets are
/// correct; one source may feed many destinations (parallel sampling).
/// A row with `dst[i] < 0` is padding: nothing is written and its source
/// is ignored. Whether a slot is acquired does not move with its state.
///
/// Errors: `M2C_STATUS_NULL_ARG` (`src`/`dst` NULL with `n > 0`),
/// `M2C_STATUS_INVALID_ARG` (a destination listed twice),
/// `M2C_STATUS_OUT_OF_RANGE` (a destination past the slot count, or a
/// source past the slot count or negative in a non-padding row),
/// `M2C_STATUS_POISONED`. On failure
/// nothing changes. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_copy_slots(
    cache: *mut m2c_cache,
    src: *const i32,
    dst: *const i32,
    n: usize,
) -> m2c_status {
    ffi_status("m2c_copy_slots", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let list = |p: *const i32, what: &str| -> Result<&[i32], Error> {
            if n == 0 {
                return Ok(&[]);
            }
            if p.is_null() {
                return Err(Error::NullArg(format!("{what} is NULL but n = {n}")));
            }
            // SAFETY: non-NULL; validity of n entries from the caller.
            match unsafe { slots_arg(p, n) }? {
                Slots::List(l) => Ok(l),
                Slots::Dense(_) => Err(Error::NullArg(format!("{what} is NULL"))),
            }
        };
        let (s, d) = (list(src, "src")?, list(dst, "dst")?);
        let mut c = cache.write()?;
        check_outside(&c, src.cast(), s.len() * 4, "src")?;
        check_outside(&c, dst.cast(), d.len() * 4, "dst")?;
        Ok(c.copy_slots(s, d)?)
    })
}

/// Counts the NaN and infinite elements in the state of `slot` (its conv
/// windows and SSM states in every layer) and writes the count to
/// `*out_nonfinite`: 0 means the sequence is numerically healthy.
///
/// Non-finite values entering through one slot's inputs (`m2c_update_*`,
/// `m2c_conv_step`, `m2c_ssm_step`, prefill) never reach another slot, but
/// the recurrence carries them forward in that slot on every later token,
/// so its outputs stay NaN until the slot is reset (`m2c_reset`,
/// `m2c_slot_acquire`) or reloaded from a snapshot. Call this after a step
/// that produced NaN outputs to decide whether to drop the sequence.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out_nonfinite),
/// `M2C_STATUS_OUT_OF_RANGE` (slot), `M2C_STATUS_INVALID_ARG`
/// (`out_nonfinite` inside the cache's storage). `*out_nonfinite` is
/// written only on success. Thread-safe (a read; works on a poisoned
/// handle).
#[no_mangle]
pub unsafe extern "C" fn m2c_count_nonfinite(
    cache: *const m2c_cache,
    slot: i32,
    out_nonfinite: *mut u64,
) -> m2c_status {
    // SAFETY: forwarded.
    unsafe { count_nonfinite("m2c_count_nonfinite", cache, slot, out_nonfinite) }
}

/// The first name of `m2c_count_nonfinite`, kept because an ABI never
/// loses a function: it does exactly the same (it returns a count, not a
/// yes/no answer). Prefer `m2c_count_nonfinite`.
#[no_mangle]
pub unsafe extern "C" fn m2c_check_finite(cache: *const m2c_cache, slot: i32, out_nonfinite: *mut u64) -> m2c_status {
    // SAFETY: forwarded.
    unsafe { count_nonfinite("m2c_check_finite", cache, slot, out_nonfinite) }
}

/// The body of `m2c_count_nonfinite` and its alias, reporting errors as
/// `name`.
///
/// # Safety
/// The pointer contracts of `m2c_count_nonfinite`.
unsafe fn count_nonfinite(name: &str, cache: *const m2c_cache, slot: i32, out_nonfinite: *mut u64) -> m2c_status {
    ffi_status(name, || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out_nonfinite, "out_nonfinite")?;
        let c = cache.read();
        check_out(&c, out, "out_nonfinite")?;
        let n = c.count_nonfinite(slot)?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(n) };
        Ok(())
    })
}
