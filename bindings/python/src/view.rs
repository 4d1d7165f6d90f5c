//! `m2c.View`: one layer's conv windows or SSM states, every slot, as a
//! DLPack producer (`__dlpack__` / `__dlpack_device__`).

use crate::cache::Handle;
use crate::dlpack::{self, DLDataType, DLDevice, Owned};
use crate::error::check;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use std::sync::Arc;

/// A zero-copy view of one layer's storage for every slot (`m2c_conv_view`
/// / `m2c_ssm_view`). Consume it with `numpy.from_dlpack(view)`,
/// `torch.from_dlpack(view)` or `jax.dlpack.from_dlpack(view)`: the array
/// aliases m2c's memory, and it (like the view) keeps the cache's state
/// alive after `Cache.close()`.
///
/// The aliasing is real in both directions, and nothing synchronises it:
/// m2c's later calls (steps, prefills, resets, loads, copies) change what
/// the array shows, in place; writes through the array change the state
/// m2c steps from. A JAX array made from a view is therefore not immutable
/// (do not donate it or rely on caching), and torch writes through a
/// DLPack export even when the producer marks it read-only. The storage
/// never moves: a view stays valid (and keeps showing the current state)
/// across `reset`, `load_file`, `slot_load` and `copy_slots`.
#[pyclass(module = "m2c", name = "View", frozen)]
pub struct View {
    handle: Arc<Handle>,
    tensor: m2c::m2c_tensor,
    layer: u32,
    conv: bool,
}

// SAFETY: the tensor is plain data describing storage the handle keeps
// alive; the view itself never dereferences it.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    pub fn new(py: Python<'_>, handle: Arc<Handle>, layer: u32, conv: bool) -> PyResult<View> {
        let mut t = std::mem::MaybeUninit::<m2c::m2c_tensor>::zeroed();
        // SAFETY: a live handle and an out struct.
        let status = unsafe {
            if conv {
                m2c::m2c_conv_view(handle.ptr, layer, t.as_mut_ptr())
            } else {
                m2c::m2c_ssm_view(handle.ptr, layer, t.as_mut_ptr())
            }
        };
        check(py, status)?;
        // SAFETY: written on success.
        let tensor = unsafe { t.assume_init() };
        Ok(View { handle, tensor, layer, conv })
    }

    fn dl_device(&self) -> DLDevice {
        if self.tensor.device == m2c::M2C_DEVICE_CUDA {
            DLDevice { device_type: dlpack::CUDA, device_id: self.tensor.device_index }
        } else {
            DLDevice { device_type: dlpack::CPU, device_id: 0 }
        }
    }

    fn dl_dtype(&self) -> DLDataType {
        match self.tensor.dtype {
            m2c::M2C_DTYPE_BF16 => DLDataType { code: 4, bits: 16, lanes: 1 },
            m2c::M2C_DTYPE_F16 => DLDataType { code: 2, bits: 16, lanes: 1 },
            _ => DLDataType { code: 2, bits: 32, lanes: 1 },
        }
    }
}

#[pymethods]
impl View {
    /// The DLPack export (array API standard signature). `max_version` of
    /// (1, x) or later gets a versioned capsule. `copy=True` is refused
    /// (a view is never a copy); `dl_device` must be the view's own device.
    /// For a device cache, order m2c's stream before the consumer's
    /// (`stream` is not waited on by m2c).
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = stream;
        if copy == Some(true) {
            return Err(PyBufferError::new_err("an m2c view is zero-copy; copy=True is not supported"));
        }
        let dev = self.dl_device();
        if let Some((t, i)) = dl_device {
            if t != dev.device_type || i != dev.device_id {
                return Err(PyBufferError::new_err("an m2c view lives on its cache's device only"));
            }
        }
        let n = self.tensor.ndim as usize;
        let owned = Owned {
            shape: self.tensor.shape[..n].iter().map(|&v| v as i64).collect(),
            strides: self.tensor.strides[..n].iter().map(|&v| v as i64).collect(),
            owner: self.handle.clone(),
        };
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        dlpack::export(py, self.tensor.data, dev, self.dl_dtype(), owned, versioned, false)
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        let d = self.dl_device();
        (d.device_type, d.device_id)
    }

    /// Extents: `(num_slots, conv_dim, conv_width)` or
    /// `(num_slots, num_heads, head_dim, state_size)`.
    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.tensor.shape[..self.tensor.ndim as usize].to_vec()
    }

    /// Strides in elements.
    #[getter]
    fn strides(&self) -> Vec<u64> {
        self.tensor.strides[..self.tensor.ndim as usize].to_vec()
    }

    /// "f32", "bf16" or "f16".
    #[getter]
    fn dtype(&self) -> &'static str {
        crate::config::dtype_name(self.tensor.dtype)
    }

    /// The first element's address (a device address for a device cache).
    #[getter]
    fn data_ptr(&self) -> usize {
        self.tensor.data as usize
    }

    /// "cpu" or "cuda".
    #[getter]
    fn device(&self) -> &'static str {
        crate::config::device_name(self.tensor.device)
    }

    #[getter]
    fn layer(&self) -> u32 {
        self.layer
    }

    /// "conv" or "ssm".
    #[getter]
    fn kind(&self) -> &'static str {
        if self.conv { "conv" } else { "ssm" }
    }

    fn __repr__(&self) -> String {
        format!(
            "<m2c.View {} layer {} {:?} {} on {}>",
            self.kind(),
            self.layer,
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}
