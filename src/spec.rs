//! Exported speculative decoding: reserve, begin a round, verify each
//! layer, commit the accepted tokens.

use super::cache::check_outside;
use super::kernels::{conv_io, cu_arg, cu_region, slots_region, ssm_io};
use super::*;

/// Reads an array argument of `len` elements of `T` (`(NULL, 0)`: empty).
///
/// # Safety
/// If non-NULL, `p` must be valid for reads of `len` `T` for `'a`.
pub(crate) unsafe fn array_arg<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T], Error> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::NullArg(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>() {
        return Err(CoreError::InvalidArg(format!("{what}: length {len} is too large")).into());
    }
    if !p.is_aligned() {
        return Err(CoreError::InvalidArg(format!("{what} is not aligned for its type")).into());
    }
    // SAFETY: non-NULL, aligned, size checked, validity from the caller.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Reserves the speculative-decoding log of the cache for runs of up to
/// `max_tokens` tokens per slot (the last sampled token plus its drafts, or
/// the nodes of a draft tree), in every slot and layer; 0 frees it. The
/// log holds what a commit needs to reproduce any accepted prefix exactly:
/// per slot, layer and token `conv_dim + num_heads*head_dim +
/// n_groups*state_size + 2*num_heads` floats (Mamba2-2.7B with 5 tokens:
/// 8% of the state). Its pages are reserved now and touched by the first
/// verifies. Ends the current round, if any.
///
/// A device cache (`M2C_DEVICE_CUDA`) keeps its log in device memory,
/// allocated now: per slot, layer and token `conv_dim +
/// num_heads*head_dim + num_heads + n_groups*state_size` elements of 4
/// bytes (the conv and SSM inputs as the verifies pass them), plus
/// `2*num_heads` floats per layer. Its verifies and commits run the
/// device's own prefill kernels, so a commit there is bit-identical to the
/// device's steps (see `m2c_ssm_verify` and `m2c_spec_commit`).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache), `M2C_STATUS_OUT_OF_RANGE`
/// (`max_tokens` above 4096), `M2C_STATUS_OUT_OF_MEMORY` (host or device
/// memory). On failure the previous log is kept. Thread-safe (takes the cache's write lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_spec_reserve(cache: *mut m2c_cache, max_tokens: u32) -> m2c_status {
    ffi_status("m2c_spec_reserve", || {
        // SAFETY: NULL or a valid handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache")? };
        Ok(cache.write()?.spec_reserve(max_tokens)?)
    })
}

/// Starts a speculative round. Sequence `i` of the batch is slot
/// `slots[i]` (`slots == NULL`: slot `i`; negative: a padding sequence)
/// and verifies the tokens of rows `cu_seqlens[i] .. cu_seqlens[i+1]` of
/// every later `m2c_conv_verify` / `m2c_ssm_verify` call's buffers (as for
/// `m2c_conv_prefill`: `cu_len = n + 1` offsets from 0, never decreasing):
/// typically the last sampled token followed by its drafts. A slot's run
/// has 1 to `max_tokens` (of `m2c_spec_reserve`) tokens; a padding
/// sequence has any number up to that.
///
/// `parents` (`(NULL, 0)`: every run is a chain) makes the runs trees: one
/// entry per token row (`parents_len = cu_seqlens[n]`), the run-local
/// index of the token's parent, which must come earlier in the same run,
/// or -1 for a token that follows the slot's committed state. A token's
/// outputs are then those of decode steps along its path from the
/// committed state.
///
/// The round replaces any earlier one (whose uncommitted runs are
/// discarded). A slot whose state or position changes before it is
/// committed (any write, decode or prefill kernel, reset, advance, load,
/// `m2c_copy_slots` into it, acquire or release) leaves the round: later
/// verifies treat its rows as padding and `m2c_spec_commit` refuses it.
/// Writes through views are not tracked. Nothing else about the cache
/// changes: reads, views, snapshots, files and copies see the committed
/// state only.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache; `cu_seqlens` or `parents` NULL
/// with a non-zero length), `M2C_STATUS_INVALID_ARG` (no log reserved; a
/// slot listed twice; a slot's run of 0 tokens; `cu_seqlens` not starting
/// at 0 or decreasing; a parent that is not an earlier token of its run
/// or -1), `M2C_STATUS_OUT_OF_RANGE` (a slot out of range, a run longer
/// than the reserved maximum), `M2C_STATUS_SHAPE_MISMATCH` (`cu_len != n +
/// 1`, `parents_len` not the token count), `M2C_STATUS_OUT_OF_MEMORY`. On
/// failure the previous round stays. Thread-safe (takes the cache's write lock); the arrays are read
/// during the call only.
#[no_mangle]
pub unsafe extern "C" fn m2c_spec_begin(
    cache: *mut m2c_cache,
    slots: *const i32,
    n: usize,
    cu_seqlens: *const u64,
    cu_len: usize,
    parents: *const i32,
    parents_len: usize,
) -> m2c_status {
    ffi_status("m2c_spec_begin", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let cache = unsafe { arg_ref(cache, "cache")? };
        // SAFETY: pointer contracts of slots, cu_seqlens and parents.
        let (sl, cu, ps) =
            unsafe { (slots_arg(slots, n)?, cu_arg(cu_seqlens, cu_len)?, array_arg(parents, parents_len, "parents")?) };
        let mut c = cache.write()?;
        for r in [slots_region(slots, n), cu_region(cu_seqlens, cu_len)] {
            check_outside(&c, r.ptr, r.bytes, r.name)?;
        }
        check_outside(&c, parents.cast(), parents_len * 4, "parents")?;
        let tree = if parents.is_null() { None } else { Some(ps) };
        Ok(c.spec_begin(sl, cu, tree)?)
    })
}

/// Verifies the current round's runs through the causal conv of `layer`:
/// `x` and `out` hold one row per token of the round (`[T, conv_dim]` in
/// `args->io_dtype`, `T = cu_seqlens[n]` of `m2c_spec_begin`), and each
/// token's output is bit-identical to what `m2c_conv_step` would give
/// along the token's path from the slot's committed window. The windows
/// are not changed; the inputs are logged for the commit. Rows of padding
/// sequences, and of slots that left the round, get zero outputs. Call it
/// (and `m2c_ssm_verify`) for every layer before committing a slot with
/// accepted tokens; verifying a layer again replaces its earlier verify.
///
/// On a device cache `x` and `out` are device buffers, and the work is
/// queued on the cache's stream as for `m2c_conv_step`.
///
/// Errors: those of `m2c_conv_step` for `T` rows, and
/// `M2C_STATUS_INVALID_ARG` (no round: call `m2c_spec_begin`). On failure
/// neither the cache nor `out` is written (a device cache: unless the
/// device itself failed). Thread-safe (takes the cache's write lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_conv_verify(
    cache: *mut m2c_cache,
    layer: u32,
    x: *const c_void,
    x_len: usize,
    out: *mut c_void,
    out_len: usize,
    args: *const m2c_conv_args,
) -> m2c_status {
    ffi_status("m2c_conv_verify", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, args) = unsafe { (arg_ref(cache, "cache")?, arg_ref(args, "args")?) };
        let mut c = cache.write()?;
        // SAFETY: pointer contracts as documented above.
        let io = unsafe { conv_io(&c, args, x, x_len, out, out_len, &[]) }?;
        Ok(c.conv_verify(layer, io)?)
    })
}

/// Verifies the current round's runs through the selective-state update
/// of `layer`: the buffers of `io` hold one row per token of the round
/// (`x`, `z`, `y`: `[T, num_heads, head_dim]`; `dt`: `[T, num_heads]`;
/// `B`, `C`: `[T, n_groups, state_size]`), and each token's `y` is
/// bit-identical to what `m2c_ssm_step` would give along the token's path
/// from the slot's committed state. The states are not changed: each
/// head's state is read once and the tokens run on a copy in cache (one
/// copy per branch of a tree). `x`, `B`, the processed `dt` and
/// `exp(dt * A)` are logged for the commit. Padding and dropped rows get
/// zero `y`.
///
/// On a device cache the buffers are device buffers and the work is queued
/// on the cache's stream: the committed states of the round's slots are
/// copied to scratch rows in device memory (one per run, or one per
/// root-to-leaf path of a tree, whose tokens are gathered into contiguous
/// rows first) and the device's prefill kernel runs there; `x`, `dt`, `B`
/// (as passed), `A` and `dt_bias` are logged.
///
/// Errors: those of `m2c_ssm_step` for `T` rows, and
/// `M2C_STATUS_INVALID_ARG` (no round), `M2C_STATUS_OUT_OF_MEMORY` (the
/// call's scratch). On failure neither the cache nor `y` is written (a
/// device cache: unless the device itself failed). Thread-safe (takes the cache's
/// write lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_ssm_verify(
    cache: *mut m2c_cache,
    layer: u32,
    io: *const m2c_ssm_io,
    args: *const m2c_ssm_args,
) -> m2c_status {
    ffi_status("m2c_ssm_verify", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, iob, args) = unsafe { (arg_ref(cache, "cache")?, arg_ref(io, "io")?, arg_ref(args, "args")?) };
        let mut c = cache.write()?;
        // SAFETY: pointer contracts as documented above.
        let io = unsafe { ssm_io(&c, iob, args, &[]) }?;
        Ok(c.ssm_verify(layer, io)?)
    })
}

/// Commits the current round for the listed slots (`slots == NULL`: slots
/// `0..n`; negative entries are skipped): `accepted[i]` (`n` entries) of
/// slot `slots[i]`'s run become part of its state. For a chain, the first
/// `accepted[i]` tokens; for a tree, the path from the committed state to
/// token `accepted[i] - 1` of the run. In every layer the conv window and
/// the SSM state become bit-identical to having run that path with
/// `m2c_conv_step` / `m2c_ssm_step` (each state read once and written
/// once), and the position advances by the path's length. `accepted[i] =
/// 0` keeps the state and position and just ends the slot's run. Each
/// listed slot leaves the round; the others stay committable.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache; accepted NULL with `n > 0`),
/// `M2C_STATUS_INVALID_ARG` (no round; a slot listed twice; a slot with no
/// live run in this round: not in `m2c_spec_begin`'s list, committed
/// already, or changed since; a layer whose conv or SSM was not verified,
/// when `accepted[i] > 0`), `M2C_STATUS_OUT_OF_RANGE` (a slot out of range;
/// `accepted[i]` above the run's length; a position that would overflow),
/// `M2C_STATUS_OUT_OF_MEMORY`. All or nothing: on failure no slot is
/// committed and nothing changes.
///
/// On a device cache the commit runs the device's prefill kernels over the
/// logged inputs of each accepted path, on the slots' committed rows (one
/// launch per layer for chain prefixes, one more for tree paths), queued
/// on the cache's stream; the call returns once they are done. If the
/// device itself fails meanwhile, the listed slots' rows are unspecified,
/// as after any device error.
/// Thread-safe (takes the cache's write lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_spec_commit(
    cache: *mut m2c_cache,
    slots: *const i32,
    n: usize,
    accepted: *const u32,
) -> m2c_status {
    ffi_status("m2c_spec_commit", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let cache = unsafe { arg_ref(cache, "cache")? };
        // SAFETY: pointer contracts of slots and accepted.
        let (sl, acc) = unsafe { (slots_arg(slots, n)?, array_arg(accepted, n, "accepted")?) };
        let mut c = cache.write()?;
        let r = slots_region(slots, n);
        check_outside(&c, r.ptr, r.bytes, r.name)?;
        check_outside(&c, accepted.cast(), n * 4, "accepted")?;
        Ok(c.spec_commit(sl, acc)?)
    })
}
