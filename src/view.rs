//! Zero-copy views of a layer's storage.

use super::cache::check_out;
use super::*;
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
