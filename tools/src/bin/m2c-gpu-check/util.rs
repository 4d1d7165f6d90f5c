//! Helpers shared by the checks: test data, dtype bytes, tolerances,
//! device buffers.

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use m2c_core::device::{DevArray, DevBuf};
use m2c_core::{Cache, DType};
use std::sync::Arc;

pub(crate) use m2c_testkit::Rng;

/// The shared test element type of a dtype.
fn elem(d: DType) -> m2c_testkit::Elem {
    match d {
        DType::F32 => m2c_testkit::Elem::F32,
        DType::BF16 => m2c_testkit::Elem::BF16,
        DType::F16 => m2c_testkit::Elem::F16,
    }
}

pub(crate) fn to_bytes(d: DType, v: &[f32]) -> Vec<u8> {
    elem(d).encode(v)
}

pub(crate) fn from_bytes(d: DType, b: &[u8]) -> Vec<f32> {
    elem(d).decode(b)
}

/// Allowed max |gpu - cpu| / max |cpu| for results stored in `d`: the two
/// sides sum in different orders, so a value near a rounding boundary may
/// round one ulp apart.
pub(crate) fn tol(d: DType) -> f64 {
    match d {
        DType::F32 => 1e-5,
        DType::BF16 => 2.0 * 2f64.powi(-8),
        DType::F16 => 2.0 * 2f64.powi(-11),
    }
}

pub(crate) fn rel(gpu: &[f32], cpu: &[f32]) -> f64 {
    let scale = cpu.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    gpu.iter().zip(cpu).fold(0f64, |m, (g, c)| m.max((*g as f64 - *c as f64).abs())) / scale
}

pub(crate) fn up(s: &Arc<CudaStream>, b: &[u8]) -> CudaSlice<u8> {
    s.clone_htod(b).expect("htod")
}

pub(crate) fn upf(s: &Arc<CudaStream>, b: &[f32]) -> CudaSlice<f32> {
    s.clone_htod(b).expect("htod")
}

pub(crate) fn down(s: &Arc<CudaStream>, d: &CudaSlice<u8>) -> Vec<u8> {
    s.clone_dtoh(d).expect("dtoh")
}

/// Storage bytes of layer 0 (conv or ssm) of a CPU cache.
/// A device array over `b` (its address and element count).
pub(crate) fn arr<T>(s: &Arc<CudaStream>, b: &CudaSlice<T>) -> DevArray {
    DevArray::new(b.device_ptr(s).0, b.len())
}

/// An absent optional array.
pub(crate) fn none() -> DevArray {
    DevArray::default()
}

/// The bytes of a buffer the GPU allocated.
pub(crate) fn down_buf(s: &Arc<CudaStream>, b: &DevBuf) -> Vec<u8> {
    down(s, b.downcast_ref::<CudaSlice<u8>>().expect("a CUDA buffer"))
}

pub(crate) fn storage(c: &Cache, conv: bool) -> Vec<u8> {
    let l = c.layer(0).unwrap();
    let b = if conv { &l.conv } else { &l.ssm };
    let n = if conv { c.shape().conv_slot_elems } else { c.shape().ssm_slot_elems } * c.num_slots();
    b.bytes()[..n * b.dtype().size()].to_vec()
}

/// One C API check: its name and whether it passed (with a detail).
pub(crate) type Check = (String, bool, String);

/// The `M2C_DTYPE_*` value of a dtype.
pub(crate) fn c_dtype(d: DType) -> m2c::m2c_dtype {
    match d {
        DType::F32 => m2c::M2C_DTYPE_F32,
        DType::BF16 => m2c::M2C_DTYPE_BF16,
        DType::F16 => m2c::M2C_DTYPE_F16,
    }
}

pub(crate) fn status_ok(s: m2c::m2c_status) -> Result<(), String> {
    if s == m2c::M2C_STATUS_OK {
        Ok(())
    } else {
        // SAFETY: never NULL, NUL-terminated.
        Err(unsafe { std::ffi::CStr::from_ptr(m2c::m2c_last_error()) }.to_string_lossy().into_owned())
    }
}

/// The library's default argument structs (`m2c_*_init`), buffers unset.
pub(crate) fn init_structs() -> (m2c::m2c_conv_args, m2c::m2c_ssm_args, m2c::m2c_ssm_io) {
    use m2c::*;
    let mut ca = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
    let mut sa = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
    let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
    // SAFETY: valid storage, initialised by the calls.
    unsafe {
        m2c_conv_args_init(ca.as_mut_ptr());
        m2c_ssm_args_init(sa.as_mut_ptr());
        m2c_ssm_io_init(io.as_mut_ptr());
        (ca.assume_init(), sa.assume_init(), io.assume_init())
    }
}

/// Device address of a buffer, as the C API takes it.
pub(crate) fn addr<T>(s: &Arc<CudaStream>, b: &CudaSlice<T>) -> usize {
    use cudarc::driver::DevicePtr;
    let (p, _g) = b.device_ptr(s);
    p as usize
}

/// A config for the C API checks: 2 layers, 6 slots, 8 heads of 64 x 128.
pub(crate) fn api_config(st: DType) -> m2c::m2c_config {
    use m2c::*;
    let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage, initialised by the call.
    let mut cfg = unsafe {
        m2c_config_init(cfg.as_mut_ptr());
        cfg.assume_init()
    };
    cfg.num_layers = 2;
    cfg.num_slots = 6;
    cfg.intermediate_size = 512;
    cfg.num_heads = 8;
    cfg.head_dim = 64;
    cfg.state_size = 128;
    cfg.n_groups = 2;
    cfg.ssm_dtype = c_dtype(st);
    cfg.conv_dtype = c_dtype(DType::BF16);
    cfg
}

/// Gives every slot of every layer of `caches` (all of `cfg`'s shape) the
/// same random SSM states and conv windows.
pub(crate) fn seed_states(caches: &[*mut m2c::m2c_cache], cfg: &m2c::m2c_config, rng: &mut Rng) -> Result<(), String> {
    use m2c::*;
    let ns = cfg.num_slots as usize;
    let dim = (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize;
    let state = rng.vec(ns * (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize, 0.5);
    let win = rng.vec(ns * dim * cfg.conv_width as usize, 1.0);
    let null = std::ptr::null();
    for &c in caches {
        for l in 0..cfg.num_layers {
            // SAFETY: valid pointers and lengths (slots NULL: every slot).
            unsafe {
                status_ok(m2c_update_ssm(c, l, null, ns, state.as_ptr().cast(), M2C_DTYPE_F32, state.len()))?;
                status_ok(m2c_set_conv(c, l, null, ns, win.as_ptr().cast(), M2C_DTYPE_F32, win.len()))?;
            }
        }
    }
    Ok(())
}
