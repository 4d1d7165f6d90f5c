//! Zero-copy views of a layer's storage.

use super::cache::{check_out, check_outside};
use super::*;
use m2c_core::ConvLayout;
use m2c_core::any_cache::Memory;

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

fn view(cache: *const m2c_cache, layer: u32, out: *mut m2c_tensor, ssm: bool) -> Result<(), Error> {
    // SAFETY: NULL or a live handle, per the contract.
    let cache = unsafe { arg_ref(cache, "cache") }?;
    let out = out_ptr(out, "out")?;
    if cache.inner.is_poisoned() {
        return Err(CoreError::Poisoned("the cache panicked during an earlier mutation; destroy it".into()).into());
    }
    let c = cache.read();
    check_out(&c, out, "out")?;
    let cfg = c.config();
    let sh = c.shape();
    let (conv, state) = c.layer_storage(layer)?;
    let (data, dtype) = if ssm { (state.0, cfg.ssm_dtype) } else { (conv.0, cfg.conv_dtype) };
    let data = data as usize as *mut c_void;
    let device = match c.memory() {
        Memory::Host => M2C_DEVICE_CPU,
        Memory::Device => M2C_DEVICE_CUDA,
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
    if !ssm && c.conv_layout() == ConvLayout::Ring {
        // Ring windows are stored column by column: [slot][column][channel].
        strides = [sh.conv_slot_elems as u64, 1, sh.conv_dim as u64, 0];
    }
    let t = m2c_tensor {
        data,
        dtype: dtype_to_c(dtype),
        ndim: ndim as u32,
        shape,
        strides,
        device,
        device_index: cfg.device_index,
    };
    // SAFETY: checked non-NULL and aligned.
    unsafe { out.write(t) };
    Ok(())
}

/// Describes the conv storage of `layer` as a 3-D tensor
/// `[num_slots, conv_dim, conv_width]` in the conv storage dtype, without
/// copying: `out->data` points into the cache.
///
/// In the oldest-first layout (the default) index `[s][c][k]` is input `k`
/// of channel `c`, oldest first, with strides `[conv_dim * conv_width,
/// conv_width, 1]`. In the ring layout (`m2c_set_conv_layout`) the strides
/// are `[conv_dim * conv_width, 1, conv_dim]` (each column's channels side
/// by side) and `[s][c][j]` is physical column `j`: slot `s`'s input `k`
/// (0 the oldest) is at `j = (heads[s] + k) % conv_width`, with `heads`
/// from `m2c_conv_heads`. Read ring windows that way; a ring window must
/// not be rewritten through the view (its head would no longer match):
/// use `m2c_set_conv`, or switch to the oldest-first layout first.
///
/// The pointer stays valid until `m2c_destroy`. Reads and writes through it
/// are not synchronised with m2c's own calls: the caller must not access
/// the view while another call on this cache writes the same layer, and
/// must not call m2c on the layer while writing through the view.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_OUT_OF_RANGE`
/// (layer), `M2C_STATUS_INVALID_ARG` (`out` inside the cache's storage),
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

/// Writes, for every slot of `layer`, the physical column of its conv
/// window that holds the oldest input, into `out[0..num_slots]`: with
/// `m2c_conv_view`, this is how an engine's own kernel reads ring windows.
/// All zero in the oldest-first layout. `cap` is the number of entries
/// `out` holds and must be at least `num_slots`.
///
/// The heads change with every call that moves a window (updates, steps,
/// prefills, commits, writes, copies, loads, resets): read them after the
/// last such call, under the same synchronisation as the view.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, out), `M2C_STATUS_OUT_OF_RANGE`
/// (layer), `M2C_STATUS_SHAPE_MISMATCH` (`cap < num_slots`),
/// `M2C_STATUS_INVALID_ARG` (`out` inside the cache's storage),
/// `M2C_STATUS_POISONED`. `out` is written only on success. Thread-safe (a
/// read).
#[no_mangle]
pub unsafe extern "C" fn m2c_conv_heads(cache: *const m2c_cache, layer: u32, out: *mut u32, cap: usize) -> m2c_status {
    ffi_status("m2c_conv_heads", || {
        // SAFETY: NULL or a live handle, per the contract.
        let cache = unsafe { arg_ref(cache, "cache") }?;
        let out = out_ptr(out, "out")?;
        let c = cache.read_unpoisoned()?;
        let n = c.config().num_slots as usize;
        check_outside(&c, out.cast_const().cast(), cap.saturating_mul(4), "out")?;
        if cap < n {
            return Err(
                CoreError::ShapeMismatch(format!("out holds {cap} entries, but the cache has {n} slots")).into()
            );
        }
        // SAFETY: `cap >= n` writable, aligned entries, per the contract
        // (checked non-NULL, aligned and outside the cache); the core
        // writes them only once the layer is known good.
        let out = unsafe { std::slice::from_raw_parts_mut(out, n) };
        Ok(c.conv_heads(layer, out)?)
    })
}
