//! Arrays in: the buffer protocol (numpy, bytes, bytearray, memoryview,
//! array.array) or DLPack (`__dlpack__`: torch, JAX, CuPy), lent without a
//! copy when C-contiguous. An input that is not contiguous (or a list) goes
//! through `numpy.ascontiguousarray` first; an output must be a writable
//! C-contiguous array, because m2c writes into the caller's memory.

use crate::dlpack::{self, Imported};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{CStr, c_void};
use std::mem::MaybeUninit;

/// Element types the binding tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    F32,
    Bf16,
    F16,
    F64,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Other,
}

impl Kind {
    /// The m2c dtype code of a float kind m2c stores or computes in.
    pub fn m2c_dtype(self) -> Option<u32> {
        match self {
            Kind::F32 => Some(m2c::M2C_DTYPE_F32),
            Kind::Bf16 => Some(m2c::M2C_DTYPE_BF16),
            Kind::F16 => Some(m2c::M2C_DTYPE_F16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::F32 => "float32",
            Kind::Bf16 => "bfloat16",
            Kind::F16 => "float16",
            Kind::F64 => "float64",
            Kind::I8 => "int8",
            Kind::U8 => "uint8",
            Kind::I16 => "int16",
            Kind::U16 => "uint16",
            Kind::I32 => "int32",
            Kind::U32 => "uint32",
            Kind::I64 => "int64",
            Kind::U64 => "uint64",
            Kind::Other => "an element type m2c does not read",
        }
    }

    fn size(self) -> usize {
        match self {
            Kind::I8 | Kind::U8 | Kind::Other => 1,
            Kind::Bf16 | Kind::F16 | Kind::I16 | Kind::U16 => 2,
            Kind::F32 | Kind::I32 | Kind::U32 => 4,
            Kind::F64 | Kind::I64 | Kind::U64 => 8,
        }
    }

    /// A buffer-protocol format (struct module syntax, one item).
    fn from_format(format: Option<&[u8]>, itemsize: usize) -> Kind {
        let f = match format {
            None => return if itemsize == 1 { Kind::U8 } else { Kind::Other },
            Some(f) => f,
        };
        let f = match f {
            [b'@' | b'=' | b'<', rest @ ..] => rest,
            [b'>' | b'!', ..] => return Kind::Other,
            f => f,
        };
        let kind = match f {
            b"f" => Kind::F32,
            b"e" => Kind::F16,
            b"d" => Kind::F64,
            b"b" => Kind::I8,
            b"B" | b"c" => Kind::U8,
            b"h" => Kind::I16,
            b"H" => Kind::U16,
            b"i" | b"l" | b"q" | b"n" if itemsize == 4 => Kind::I32,
            b"I" | b"L" | b"Q" | b"N" if itemsize == 4 => Kind::U32,
            b"i" | b"l" | b"q" | b"n" if itemsize == 8 => Kind::I64,
            b"I" | b"L" | b"Q" | b"N" if itemsize == 8 => Kind::U64,
            _ => Kind::Other,
        };
        if kind.size() == itemsize { kind } else { Kind::Other }
    }

    fn from_dlpack(t: dlpack::DLDataType) -> Kind {
        if t.lanes != 1 {
            return Kind::Other;
        }
        match (t.code, t.bits) {
            (2, 32) => Kind::F32,
            (4, 16) => Kind::Bf16,
            (2, 16) => Kind::F16,
            (2, 64) => Kind::F64,
            (0, 8) => Kind::I8,
            (1, 8) => Kind::U8,
            (0, 16) => Kind::I16,
            (1, 16) => Kind::U16,
            (0, 32) => Kind::I32,
            (1, 32) => Kind::U32,
            (0, 64) => Kind::I64,
            (1, 64) => Kind::U64,
            _ => Kind::Other,
        }
    }
}

/// A Py_buffer, released when dropped (with the GIL held: arrays live in
/// the frame of a method that holds it).
struct Buffer(Box<ffi::Py_buffer>);

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the buffer was filled by a successful PyObject_GetBuffer.
        unsafe { ffi::PyBuffer_Release(&mut *self.0) }
    }
}

enum Keep<'py> {
    Buffer(#[allow(dead_code)] Buffer),
    Dlpack(#[allow(dead_code)] Imported<'py>),
}

/// Memory lent by a Python object for the length of one call.
pub struct Array<'py> {
    pub ptr: *mut c_void,
    /// Elements.
    pub len: usize,
    pub kind: Kind,
    /// DLPack device type and id (buffers are `(CPU, 0)`).
    pub device: (i32, i32),
    _keep: Keep<'py>,
}

impl Array<'_> {
    /// Bytes per element.
    pub fn kind_size(&self) -> usize {
        self.kind.size()
    }
}

/// Where and how a call wants its arrays.
#[derive(Clone, Copy)]
pub struct Want {
    /// Take device memory (a device cache's kernel calls): the DLPack
    /// device type must then be CUDA.
    pub device: bool,
    /// The stream a CUDA producer should order its work before.
    pub stream: Option<isize>,
}

impl Want {
    pub const HOST: Want = Want { device: false, stream: None };
}

fn buffer<'py>(obj: &Bound<'py, PyAny>, writable: bool) -> PyResult<Array<'py>> {
    let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::zeroed());
    let flags = ffi::PyBUF_C_CONTIGUOUS | ffi::PyBUF_FORMAT | if writable { ffi::PyBUF_WRITABLE } else { 0 };
    // SAFETY: `view` is writable memory for one Py_buffer; on success it
    // is initialised and released by Buffer's Drop.
    let view = unsafe {
        if ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Buffer(Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()))
    };
    let b = &*view.0;
    let itemsize = b.itemsize.max(1) as usize;
    let format = (!b.format.is_null()).then(|| {
        // SAFETY: a non-NULL format is a NUL-terminated string owned by the buffer.
        unsafe { CStr::from_ptr(b.format) }.to_bytes()
    });
    let kind = Kind::from_format(format, itemsize);
    Ok(Array { ptr: b.buf, len: b.len as usize / itemsize, kind, device: (dlpack::CPU, 0), _keep: Keep::Buffer(view) })
}

fn from_dlpack<'py>(obj: &Bound<'py, PyAny>, writable: bool, want: Want) -> PyResult<Option<Array<'py>>> {
    let stream = if want.device { want.stream } else { None };
    let imported = dlpack::import(obj, stream)?;
    if !imported.contiguous() {
        return Ok(None);
    }
    if writable && imported.read_only {
        return Err(PyValueError::new_err("the output array is read-only (its DLPack export says so)"));
    }
    let t = imported.tensor();
    let kind = Kind::from_dlpack(t.dtype);
    let device = (t.device.device_type, t.device.device_id);
    let len = imported.shape().iter().map(|&n| n.max(0) as usize).product();
    let ptr = imported.data();
    Ok(Some(Array { ptr, len, kind, device, _keep: Keep::Dlpack(imported) }))
}

fn has_buffer(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a type check on a live object.
    unsafe { ffi::PyObject_CheckBuffer(obj.as_ptr()) == 1 }
}

fn check_device(a: &Array<'_>, want: Want, what: &str) -> PyResult<()> {
    let host = matches!(a.device.0, dlpack::CPU | dlpack::CUDA_HOST | dlpack::CUDA_MANAGED);
    let ok = if want.device { a.device.0 == dlpack::CUDA || a.device.0 == dlpack::CUDA_MANAGED } else { host };
    if ok {
        Ok(())
    } else {
        let need = if want.device { "CUDA device memory (this is a device cache)" } else { "host memory" };
        Err(PyValueError::new_err(format!(
            "{what}: m2c needs {need}; the array is on DLPack device {}:{}",
            a.device.0, a.device.1
        )))
    }
}

/// An input array. `default` is the numpy dtype a list or scalar becomes.
pub fn input<'py>(obj: &Bound<'py, PyAny>, what: &str, default: &str, want: Want) -> PyResult<Array<'py>> {
    // The buffer protocol first (cheapest: numpy, bytes, JAX on the CPU),
    // then DLPack (torch; bfloat16 arrays, which have no buffer format).
    let mut a = if has_buffer(obj) { buffer(obj, false).ok() } else { None };
    if a.is_none() && obj.hasattr(pyo3::intern!(obj.py(), "__dlpack__"))? {
        a = from_dlpack(obj, false, want)?;
    }
    let a = match a {
        Some(a) => a,
        None => {
            // Not contiguous, or not an array at all: one copy through numpy.
            let np = obj.py().import("numpy")?;
            let copy = if has_buffer(obj) || obj.hasattr("__array__")? {
                np.call_method1("ascontiguousarray", (obj,))?
            } else if obj.hasattr("__dlpack__")? {
                np.call_method1("ascontiguousarray", (np.call_method1("from_dlpack", (obj,))?,))?
            } else {
                np.call_method1("ascontiguousarray", (obj, default))?
            };
            buffer(&copy, false)
                .map_err(|e| PyTypeError::new_err(format!("{what}: not an array m2c can read ({e})")))?
        }
    };
    check_device(&a, want, what)?;
    Ok(a)
}

/// An output array: writable and C-contiguous, written in place.
pub fn output<'py>(obj: &Bound<'py, PyAny>, what: &str, want: Want) -> PyResult<Array<'py>> {
    let a = if has_buffer(obj) {
        buffer(obj, true)
            .map_err(|e| PyValueError::new_err(format!("{what}: must be a writable C-contiguous array ({e})")))?
    } else if obj.hasattr(pyo3::intern!(obj.py(), "__dlpack__"))? {
        from_dlpack(obj, true, want)?
            .ok_or_else(|| PyValueError::new_err(format!("{what}: must be a C-contiguous array")))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{what}: must be an array (buffer protocol or __dlpack__), not {}",
            obj.get_type().name()?
        )));
    };
    check_device(&a, want, what)?;
    Ok(a)
}

/// A float input m2c reads in `dtype` terms: f32, bf16 or f16.
pub fn float_input<'py>(obj: &Bound<'py, PyAny>, what: &str, want: Want) -> PyResult<Array<'py>> {
    let a = input(obj, what, "float32", want)?;
    if a.kind.m2c_dtype().is_none() {
        return Err(PyTypeError::new_err(format!(
            "{what}: m2c reads float32, bfloat16 or float16 arrays, not {} (convert it first)",
            a.kind.name()
        )));
    }
    Ok(a)
}

/// A parameter m2c reads as f32 only (weights, A, D, dt_bias).
pub fn f32_input<'py>(obj: &Bound<'py, PyAny>, what: &str, want: Want) -> PyResult<Array<'py>> {
    let a = input(obj, what, "float32", want)?;
    if a.kind != Kind::F32 {
        return Err(PyTypeError::new_err(format!("{what}: must be float32, not {}", a.kind.name())));
    }
    Ok(a)
}

/// Integers (slot lists, offsets, counts) copied into a Vec, from a
/// sequence of ints or an integer array; values that do not fit are an
/// `OverflowError`.
pub fn ints<T>(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<T>>
where
    T: TryFrom<i128> + Copy,
{
    let overflow = |v: i128| PyOverflowError::new_err(format!("{what}: {v} is out of range"));
    if has_buffer(obj) || obj.hasattr("__dlpack__")? {
        let a = input(obj, what, "int64", Want::HOST)?;
        let n = a.len;
        macro_rules! read {
            ($t:ty) => {{
                // SAFETY: the array holds `n` elements of this kind.
                let s = unsafe { std::slice::from_raw_parts(a.ptr as *const $t, n) };
                s.iter().map(|&v| T::try_from(v as i128).map_err(|_| overflow(v as i128))).collect()
            }};
        }
        return match a.kind {
            Kind::I8 => read!(i8),
            Kind::U8 => read!(u8),
            Kind::I16 => read!(i16),
            Kind::U16 => read!(u16),
            Kind::I32 => read!(i32),
            Kind::U32 => read!(u32),
            Kind::I64 => read!(i64),
            Kind::U64 => read!(u64),
            k => Err(PyTypeError::new_err(format!("{what}: must hold integers, not {}", k.name()))),
        };
    }
    let values: Vec<i128> = obj
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{what}: must be a sequence of ints or an integer array")))?;
    values.into_iter().map(|v| T::try_from(v).map_err(|_| overflow(v))).collect()
}
