//! DLPack, both ways, written against the DLPack 1.x C header's layout.
//!
//! Export: a view of m2c storage becomes a `dltensor` (legacy) or
//! `dltensor_versioned` capsule whose manager context holds the cache's
//! handle, so the storage outlives every consumer. Import: any object with
//! `__dlpack__` (torch, JAX, numpy, CuPy) lends its memory for the length
//! of one call; the capsule is never renamed to `used_*`, so its own
//! destructor returns the tensor to the producer when the call is done.

use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::ffi::{CStr, c_void};

pub const CPU: i32 = 1;
pub const CUDA: i32 = 2;
pub const CUDA_HOST: i32 = 3;
pub const CUDA_MANAGED: i32 = 13;

const FLAG_READ_ONLY: u64 = 1;

const LEGACY: &CStr = c"dltensor";
const VERSIONED: &CStr = c"dltensor_versioned";

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

#[repr(C)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// What an exported tensor owns: its shape and strides, and whatever keeps
/// the memory alive (the cache's handle).
pub struct Owned<T> {
    pub shape: Vec<i64>,
    pub strides: Vec<i64>,
    /// Held, never read: its drop is the point.
    #[allow(dead_code)]
    pub owner: T,
}

#[repr(C)]
struct LegacyBox<T> {
    managed: DLManagedTensor,
    owned: Owned<T>,
}

#[repr(C)]
struct VersionedBox<T> {
    managed: DLManagedTensorVersioned,
    owned: Owned<T>,
}

unsafe extern "C" fn delete_legacy<T>(p: *mut DLManagedTensor) {
    // SAFETY: `p` is the first field of a LegacyBox<T> made by `export`
    // (repr(C)), and DLPack calls the deleter once.
    drop(unsafe { Box::from_raw(p.cast::<LegacyBox<T>>()) });
}

unsafe extern "C" fn delete_versioned<T>(p: *mut DLManagedTensorVersioned) {
    // SAFETY: as for delete_legacy.
    drop(unsafe { Box::from_raw(p.cast::<VersionedBox<T>>()) });
}

/// The capsule destructors: a capsule still named `dltensor*` was never
/// consumed, so it still owns its tensor.
unsafe extern "C" fn legacy_capsule_destructor(cap: *mut ffi::PyObject) {
    // SAFETY: CPython calls this with the capsule; IsValid checks the name
    // (without raising) before the pointer is taken.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, LEGACY.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(cap, LEGACY.as_ptr()).cast::<DLManagedTensor>();
            if let Some(deleter) = (*p).deleter {
                deleter(p);
            }
        }
    }
}

unsafe extern "C" fn versioned_capsule_destructor(cap: *mut ffi::PyObject) {
    // SAFETY: as for legacy_capsule_destructor.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, VERSIONED.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(cap, VERSIONED.as_ptr()).cast::<DLManagedTensorVersioned>();
            if let Some(deleter) = (*p).deleter {
                deleter(p);
            }
        }
    }
}

/// A capsule over `data` (shape and strides in elements), owning `owned`
/// until the consumer (or the capsule, if never consumed) lets go.
/// `versioned` picks the DLPack 1.0 capsule; `read_only` sets its flag.
pub fn export<'py, T: Send + 'static>(
    py: Python<'py>,
    data: *mut c_void,
    device: DLDevice,
    dtype: DLDataType,
    owned: Owned<T>,
    versioned: bool,
    read_only: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let ndim = owned.shape.len() as i32;
    let tensor = |owned: &mut Owned<T>| DLTensor {
        data,
        device,
        ndim,
        dtype,
        shape: owned.shape.as_mut_ptr(),
        strides: owned.strides.as_mut_ptr(),
        byte_offset: 0,
    };
    // The Vec buffers do not move when the Owned moves into the box, so
    // the pointers taken before stay valid.
    let mut owned = owned;
    let (ptr, name, destructor): (*mut c_void, &CStr, unsafe extern "C" fn(*mut ffi::PyObject)) = if versioned {
        let dl_tensor = tensor(&mut owned);
        let boxed = Box::new(VersionedBox {
            managed: DLManagedTensorVersioned {
                version: DLPackVersion { major: 1, minor: 0 },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_versioned::<T>),
                flags: if read_only { FLAG_READ_ONLY } else { 0 },
                dl_tensor,
            },
            owned,
        });
        (Box::into_raw(boxed).cast(), VERSIONED, versioned_capsule_destructor)
    } else {
        let dl_tensor = tensor(&mut owned);
        let boxed = Box::new(LegacyBox {
            managed: DLManagedTensor {
                dl_tensor,
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_legacy::<T>),
            },
            owned,
        });
        (Box::into_raw(boxed).cast(), LEGACY, legacy_capsule_destructor)
    };
    // SAFETY: `ptr` is a live box of the kind `name` says; on failure the
    // capsule was not made and the box is freed here.
    unsafe {
        let cap = ffi::PyCapsule_New(ptr, name.as_ptr(), Some(destructor));
        if cap.is_null() {
            if versioned {
                delete_versioned::<T>(ptr.cast());
            } else {
                delete_legacy::<T>(ptr.cast());
            }
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, cap))
    }
}

/// An imported tensor, valid while `capsule` lives.
pub struct Imported<'py> {
    /// Held, never read: it owns the tensor until the call is done.
    #[allow(dead_code)]
    capsule: Bound<'py, PyAny>,
    tensor: *const DLTensor,
    pub read_only: bool,
}

impl Imported<'_> {
    pub fn tensor(&self) -> &DLTensor {
        // SAFETY: the capsule (held by self) owns the managed tensor.
        unsafe { &*self.tensor }
    }

    /// The first element's address.
    pub fn data(&self) -> *mut c_void {
        let t = self.tensor();
        t.data.cast::<u8>().wrapping_add(t.byte_offset as usize).cast()
    }

    pub fn shape(&self) -> &[i64] {
        let t = self.tensor();
        if t.ndim <= 0 || t.shape.is_null() {
            return &[];
        }
        // SAFETY: DLPack's shape holds ndim entries.
        unsafe { std::slice::from_raw_parts(t.shape, t.ndim as usize) }
    }

    /// Row-major contiguous (strides NULL, or the row-major ones; extents
    /// of 1 may carry any stride).
    pub fn contiguous(&self) -> bool {
        let t = self.tensor();
        if t.strides.is_null() {
            return true;
        }
        let shape = self.shape();
        // SAFETY: non-NULL strides hold ndim entries.
        let strides = unsafe { std::slice::from_raw_parts(t.strides, shape.len()) };
        let mut expect = 1i64;
        for (&n, &s) in shape.iter().zip(strides).rev() {
            if n != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(n);
        }
        true
    }
}

/// `obj.__dlpack__(...)` as a capsule: versioned where the producer takes
/// `max_version`, legacy otherwise. `stream` is passed for CUDA producers
/// (the stream m2c will use, so the producer orders its work before it).
pub fn import<'py>(obj: &Bound<'py, PyAny>, stream: Option<isize>) -> PyResult<Imported<'py>> {
    let py = obj.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("max_version", PyTuple::new(py, [1u32, 0])?)?;
    if let Some(s) = stream {
        kwargs.set_item("stream", s)?;
    }
    let capsule = match obj.call_method("__dlpack__", (), Some(&kwargs)) {
        Ok(c) => c,
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            kwargs.del_item("max_version")?;
            obj.call_method("__dlpack__", (), Some(&kwargs))?
        }
        Err(e) => return Err(e),
    };
    // SAFETY: IsValid checks the type and name without raising; the pointer
    // is read only from a capsule of the matching name.
    unsafe {
        let cap = capsule.as_ptr();
        if ffi::PyCapsule_IsValid(cap, VERSIONED.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(cap, VERSIONED.as_ptr()).cast::<DLManagedTensorVersioned>();
            if (*p).version.major != 1 {
                return Err(PyBufferError::new_err(format!(
                    "__dlpack__ returned DLPack {}.{}; m2c reads 1.x",
                    (*p).version.major,
                    (*p).version.minor
                )));
            }
            let read_only = (*p).flags & FLAG_READ_ONLY != 0;
            Ok(Imported { tensor: &raw const (*p).dl_tensor, capsule, read_only })
        } else if ffi::PyCapsule_IsValid(cap, LEGACY.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(cap, LEGACY.as_ptr()).cast::<DLManagedTensor>();
            Ok(Imported { tensor: &raw const (*p).dl_tensor, capsule, read_only: false })
        } else {
            Err(PyTypeError::new_err("__dlpack__ did not return a DLPack capsule"))
        }
    }
}
