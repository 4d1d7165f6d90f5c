//! Devices and streams: where a device cache queues its work.

use super::*;

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
        Ok(cache.write()?.set_stream(stream as u64)?)
    })
}
