//! `m2c.Cache`: one `m2c_cache` handle, every C call a method.
//!
//! Arguments: `slots` is a sequence of slot indices (or an integer array)
//! naming the rows of a call, `None` meaning rows `0..n-1` (for the calls
//! with per-row data, `n` comes from the data; for `reset`, `advance` and
//! the reads, every slot). Float inputs are f32, bf16 or f16 arrays (one
//! dtype per call: it is the call's io dtype); weights and SSM parameters
//! are f32. Outputs go into `out=` / `y=` when given (written in place,
//! which must be writable and C-contiguous), else into new numpy arrays.
//!
//! The GIL is released during every call into m2c; the handle is
//! thread-safe (mutations serialised, reads shared), so Python threads may
//! call one cache at once.

use crate::array::{self, Array, Kind, Want, f32_input, float_input, ints, output};
use crate::config::{Config, dtype_code};
use crate::error::check;
use crate::view::View;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::ffi::{CString, c_void};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};

/// An m2c handle, destroyed when the last owner (the `Cache`, a view, an
/// exported tensor, a call in flight) lets go: `m2c_destroy` then cannot
/// race another call.
pub struct Handle {
    pub ptr: *mut m2c::m2c_cache,
    /// The CUDA stream DLPack producers are asked to order their work
    /// before (1: the legacy default stream, m2c's until `set_stream`).
    stream: AtomicIsize,
}

// SAFETY: m2c handles may be used from any thread (header: Threads), and
// destroy runs only in Drop, with no other owner left.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the last owner; the pointer came from m2c_create.
        unsafe { m2c::m2c_destroy(self.ptr) }
    }
}

/// Runs `f` with the GIL released.
pub fn released<T, F: FnOnce() -> T>(py: Python<'_>, f: F) -> T {
    struct AssertSend<F>(F);
    // SAFETY: the closures passed here capture raw pointers into buffers
    // that the calling frame keeps alive (and Python cannot free: a buffer
    // export or a DLPack capsule holds them) until the call returns; m2c's
    // functions are thread-safe.
    unsafe impl<F> Send for AssertSend<F> {}
    struct AssertSendOut<T>(T);
    unsafe impl<T> Send for AssertSendOut<T> {}
    let call = AssertSend(f);
    let out = py.detach(move || {
        let call = call;
        AssertSendOut((call.0)())
    });
    out.0
}

/// The rows of a call.
pub struct Rows {
    slots: Option<Vec<i32>>,
    pub n: usize,
}

impl Rows {
    pub fn ptr(&self) -> *const i32 {
        self.slots.as_ref().map_or(null(), |v| v.as_ptr())
    }

    pub fn new(slots: Option<&Bound<'_, PyAny>>, n_default: usize) -> PyResult<Rows> {
        match slots {
            None => Ok(Rows { slots: None, n: n_default }),
            Some(s) => {
                let v: Vec<i32> = ints(s, "slots")?;
                Ok(Rows { n: v.len(), slots: Some(v) })
            }
        }
    }
}

fn same_kind(a: &Array<'_>, kind: Kind, what: &str) -> PyResult<()> {
    if a.kind == kind {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "{what}: is {}, but this call's io dtype (from x) is {}",
            a.kind.name(),
            kind.name()
        )))
    }
}

fn activation_code(name: &str) -> PyResult<u32> {
    match name {
        "silu" => Ok(m2c::M2C_ACTIVATION_SILU),
        "none" => Ok(m2c::M2C_ACTIVATION_NONE),
        _ => Err(PyValueError::new_err(format!("unknown activation {name:?}: use \"silu\" or \"none\""))),
    }
}

fn cstring_path(path: &Bound<'_, PyAny>) -> PyResult<CString> {
    let os = path.py().import("os")?;
    let p = os.call_method1("fsencode", (path,))?;
    let bytes: Vec<u8> = p.extract()?;
    CString::new(bytes).map_err(|_| PyValueError::new_err("path contains a NUL byte"))
}

/// The per-token inputs of an SSM call, lent for the call.
struct SsmInputs<'py> {
    x: Array<'py>,
    dt: Array<'py>,
    b: Array<'py>,
    c: Array<'py>,
    z: Option<Array<'py>>,
    a: Array<'py>,
    d: Option<Array<'py>>,
    dt_bias: Option<Array<'py>>,
}

/// Which kernel entry point a call uses, with its row arguments.
enum Mode<'a, 'py> {
    /// A decode step: `slots` (None: rows 0..n-1, n from the data).
    Step(Option<&'a Bound<'py, PyAny>>),
    /// A prefill: `cu_seqlens` and `slots` (None: slot i for sequence i).
    Prefill(&'a Bound<'py, PyAny>, Option<&'a Bound<'py, PyAny>>),
    /// A verify of the current speculative round (its rows are the round's).
    Verify,
}

impl Mode<'_, '_> {
    /// The rows of the call and its `cu_seqlens` (empty unless a prefill);
    /// `rows_in_data` is the token rows the data holds.
    fn rows(&self, rows_in_data: usize) -> PyResult<(Rows, Vec<u64>)> {
        match self {
            Mode::Step(slots) => Ok((Rows::new(*slots, rows_in_data)?, Vec::new())),
            Mode::Prefill(cu, slots) => {
                let cu: Vec<u64> = ints(cu, "cu_seqlens")?;
                Ok((Rows::new(*slots, cu.len().saturating_sub(1))?, cu))
            }
            Mode::Verify => Ok((Rows::new(None, 0)?, Vec::new())),
        }
    }
}

/// The arrays and options of an SSM call, as the methods take them.
struct SsmArgs<'a, 'py> {
    x: &'a Bound<'py, PyAny>,
    dt: &'a Bound<'py, PyAny>,
    b: &'a Bound<'py, PyAny>,
    c: &'a Bound<'py, PyAny>,
    a: &'a Bound<'py, PyAny>,
    d: Option<&'a Bound<'py, PyAny>>,
    dt_bias: Option<&'a Bound<'py, PyAny>>,
    z: Option<&'a Bound<'py, PyAny>>,
    y: Option<&'a Bound<'py, PyAny>>,
    dt_softplus: bool,
    dt_limit: Option<(f32, f32)>,
}

/// A Mamba2 state cache: the conv windows and SSM states of every layer for
/// `config.num_slots` sequences, plus a position per slot. See the
/// package documentation for the argument conventions.
#[pyclass(module = "m2c", name = "Cache", frozen, weakref)]
pub struct Cache {
    handle: Mutex<Option<Arc<Handle>>>,
    raw: m2c::m2c_config,
    /// Points of the capture `capture_begin` declared (for `capture_end`).
    capture_points: Mutex<usize>,
}

impl Cache {
    pub fn handle(&self) -> PyResult<Arc<Handle>> {
        self.handle
            .lock()
            .map_err(|_| PyValueError::new_err("m2c.Cache: lock poisoned"))?
            .clone()
            .ok_or_else(|| PyValueError::new_err("the m2c.Cache is closed"))
    }

    fn device(&self) -> bool {
        self.raw.device == m2c::M2C_DEVICE_CUDA
    }

    /// How kernel calls take their per-token arrays and parameters.
    fn kernel_want(&self, h: &Handle) -> Want {
        Want { device: self.device(), stream: Some(h.stream.load(Ordering::Relaxed)) }
    }

    fn conv_dim(&self) -> usize {
        Config::conv_dim_of(&self.raw)
    }

    fn inner(&self) -> usize {
        self.raw.num_heads as usize * self.raw.head_dim as usize
    }

    fn ssm_row(&self) -> usize {
        self.inner() * self.raw.state_size as usize
    }

    fn conv_row(&self) -> usize {
        self.conv_dim() * self.raw.conv_width as usize
    }

    /// A new numpy array for an output.
    fn new_array<'py>(&self, py: Python<'py>, shape: &[usize], kind: Kind, what: &str) -> PyResult<Bound<'py, PyAny>> {
        if self.device() {
            return Err(PyValueError::new_err(format!("{what}: pass a device array for a device cache's output")));
        }
        if kind == Kind::Bf16 {
            return Err(PyTypeError::new_err(format!("{what}: numpy has no bfloat16; pass an output array")));
        }
        let np = py.import("numpy")?;
        np.call_method1("empty", (PyTuple::new(py, shape)?, kind.name()))
    }

    fn out_or_new<'py>(
        &self,
        py: Python<'py>,
        out: Option<&Bound<'py, PyAny>>,
        shape: &[usize],
        kind: Kind,
        what: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        match out {
            Some(o) => Ok(o.clone()),
            None => self.new_array(py, shape, kind, what),
        }
    }

    fn conv_args(
        &self,
        kind: Kind,
        activation: &str,
        w: &Array<'_>,
        b: Option<&Array<'_>>,
    ) -> PyResult<m2c::m2c_conv_args> {
        let mut args = std::mem::MaybeUninit::<m2c::m2c_conv_args>::zeroed();
        // SAFETY: init fills every field.
        let mut args = unsafe {
            m2c::m2c_conv_args_init(args.as_mut_ptr());
            args.assume_init()
        };
        args.io_dtype = kind.m2c_dtype().unwrap_or(u32::MAX);
        args.activation = activation_code(activation)?;
        args.weight = w.ptr as *const f32;
        args.weight_len = w.len;
        if let Some(b) = b {
            args.bias = b.ptr as *const f32;
            args.bias_len = b.len;
        }
        Ok(args)
    }

    fn ssm_inputs<'py>(
        &self,
        want: Want,
        x: &Bound<'py, PyAny>,
        dt: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
        c: &Bound<'py, PyAny>,
        a: &Bound<'py, PyAny>,
        d: Option<&Bound<'py, PyAny>>,
        dt_bias: Option<&Bound<'py, PyAny>>,
        z: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<SsmInputs<'py>> {
        let x = float_input(x, "x", want)?;
        let kind = x.kind;
        let io = |o: &Bound<'py, PyAny>, what: &str| -> PyResult<Array<'py>> {
            let arr = float_input(o, what, want)?;
            same_kind(&arr, kind, what)?;
            Ok(arr)
        };
        Ok(SsmInputs {
            dt: io(dt, "dt")?,
            b: io(b, "B")?,
            c: io(c, "C")?,
            z: z.map(|z| io(z, "z")).transpose()?,
            a: f32_input(a, "A", want)?,
            d: d.map(|d| f32_input(d, "D", want)).transpose()?,
            dt_bias: dt_bias.map(|d| f32_input(d, "dt_bias", want)).transpose()?,
            x,
        })
    }

    fn ssm_structs(
        &self,
        i: &SsmInputs<'_>,
        y: &Array<'_>,
        dt_softplus: bool,
        dt_limit: Option<(f32, f32)>,
    ) -> (m2c::m2c_ssm_io, m2c::m2c_ssm_args) {
        let mut io = std::mem::MaybeUninit::<m2c::m2c_ssm_io>::zeroed();
        let mut args = std::mem::MaybeUninit::<m2c::m2c_ssm_args>::zeroed();
        // SAFETY: the inits fill every field.
        let (mut io, mut args) = unsafe {
            m2c::m2c_ssm_io_init(io.as_mut_ptr());
            m2c::m2c_ssm_args_init(args.as_mut_ptr());
            (io.assume_init(), args.assume_init())
        };
        io.x = i.x.ptr;
        io.x_len = i.x.len;
        io.dt = i.dt.ptr;
        io.dt_len = i.dt.len;
        io.B = i.b.ptr;
        io.B_len = i.b.len;
        io.C = i.c.ptr;
        io.C_len = i.c.len;
        if let Some(z) = &i.z {
            io.z = z.ptr;
            io.z_len = z.len;
        }
        io.y = y.ptr;
        io.y_len = y.len;
        args.io_dtype = i.x.kind.m2c_dtype().unwrap_or(u32::MAX);
        args.dt_softplus = dt_softplus as u32;
        if let Some((lo, hi)) = dt_limit {
            args.dt_clamp = 1;
            args.dt_min = lo;
            args.dt_max = hi;
        }
        args.A = i.a.ptr as *const f32;
        args.A_len = i.a.len;
        if let Some(d) = &i.d {
            args.D = d.ptr as *const f32;
            args.D_len = d.len;
        }
        if let Some(d) = &i.dt_bias {
            args.dt_bias = d.ptr as *const f32;
            args.dt_bias_len = d.len;
        }
        (io, args)
    }

    /// A conv kernel call (`step`, `prefill` or `verify`): marshals the
    /// arrays, makes `out` (or takes the caller's), and runs the C call with
    /// the GIL released.
    fn conv_call<'py>(
        &self,
        py: Python<'py>,
        mode: Mode<'_, 'py>,
        layer: u32,
        x: &Bound<'py, PyAny>,
        weight: &Bound<'py, PyAny>,
        bias: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        activation: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        let want = self.kernel_want(&h);
        let cd = self.conv_dim();
        let xa = float_input(x, "x", want)?;
        let (rows, cu) = mode.rows(xa.len / cd)?;
        let w = f32_input(weight, "weight", want)?;
        let b = bias.map(|b| f32_input(b, "bias", want)).transpose()?;
        let args = self.conv_args(xa.kind, activation, &w, b.as_ref())?;
        let obj = self.out_or_new(py, out, &[xa.len / cd, cd], xa.kind, "out")?;
        let o = output(&obj, "out", want)?;
        same_kind(&o, xa.kind, "out")?;
        let (sp, n) = (rows.ptr(), rows.n);
        // SAFETY: every pointer describes a live buffer of its length.
        let status = released(py, || unsafe {
            match &mode {
                Mode::Step(_) => m2c::m2c_conv_step(h.ptr, layer, sp, n, xa.ptr, xa.len, o.ptr, o.len, &args),
                Mode::Prefill(..) => m2c::m2c_conv_prefill(
                    h.ptr,
                    layer,
                    sp,
                    n,
                    cu.as_ptr(),
                    cu.len(),
                    xa.ptr,
                    xa.len,
                    o.ptr,
                    o.len,
                    &args,
                ),
                Mode::Verify => m2c::m2c_conv_verify(h.ptr, layer, xa.ptr, xa.len, o.ptr, o.len, &args),
            }
        });
        check(py, status)?;
        Ok(obj)
    }

    /// An SSM kernel call (`step`, `prefill` or `verify`), as `conv_call`.
    fn ssm_call<'py>(
        &self,
        py: Python<'py>,
        mode: Mode<'_, 'py>,
        layer: u32,
        t: SsmArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        let want = self.kernel_want(&h);
        let i = self.ssm_inputs(want, t.x, t.dt, t.b, t.c, t.a, t.d, t.dt_bias, t.z)?;
        let tokens = i.x.len / self.inner().max(1);
        let (rows, cu) = mode.rows(tokens)?;
        let obj = self.out_or_new(py, t.y, &[tokens, self.inner()], i.x.kind, "y")?;
        let ya = output(&obj, "y", want)?;
        same_kind(&ya, i.x.kind, "y")?;
        let (io, args) = self.ssm_structs(&i, &ya, t.dt_softplus, t.dt_limit);
        let (sp, n) = (rows.ptr(), rows.n);
        // SAFETY: every pointer describes a live buffer of its length.
        let status = released(py, || unsafe {
            match &mode {
                Mode::Step(_) => m2c::m2c_ssm_step(h.ptr, layer, sp, n, &io, &args),
                Mode::Prefill(..) => m2c::m2c_ssm_prefill(h.ptr, layer, sp, n, cu.as_ptr(), cu.len(), &io, &args),
                Mode::Verify => m2c::m2c_ssm_verify(h.ptr, layer, &io, &args),
            }
        });
        check(py, status)?;
        Ok(obj)
    }

    fn write_state(
        &self,
        py: Python<'_>,
        layer: u32,
        data: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
        row: usize,
        what: &str,
        f: unsafe extern "C" fn(*mut m2c::m2c_cache, u32, *const i32, usize, *const c_void, u32, usize) -> i32,
    ) -> PyResult<()> {
        let h = self.handle()?;
        let a = float_input(data, what, Want::HOST)?;
        let rows = Rows::new(slots, a.len / row.max(1))?;
        let dtype = a.kind.m2c_dtype().unwrap_or(u32::MAX);
        // SAFETY: pointers and lengths describe live buffers.
        check(py, released(py, || unsafe { f(h.ptr, layer, rows.ptr(), rows.n, a.ptr, dtype, a.len) }))
    }

    #[allow(clippy::type_complexity)]
    fn read_state<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        slots: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        dtype: &str,
        shape: &[usize],
        f: unsafe extern "C" fn(*const m2c::m2c_cache, u32, *const i32, usize, *mut c_void, u32, usize) -> i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        let rows = Rows::new(slots, self.raw.num_slots as usize)?;
        let mut full = vec![rows.n];
        full.extend_from_slice(shape);
        let kind = match dtype_code(dtype)? {
            m2c::M2C_DTYPE_F32 => Kind::F32,
            m2c::M2C_DTYPE_BF16 => Kind::Bf16,
            _ => Kind::F16,
        };
        let obj = match out {
            Some(o) => o.clone(),
            None => {
                if kind == Kind::Bf16 {
                    return Err(PyTypeError::new_err("numpy has no bfloat16; pass out="));
                }
                py.import("numpy")?.call_method1("empty", (PyTuple::new(py, &full)?, kind.name()))?
            }
        };
        let o = output(&obj, "out", Want::HOST)?;
        let code = o.kind.m2c_dtype().ok_or_else(|| {
            PyTypeError::new_err(format!("out: m2c writes float32, bfloat16 or float16, not {}", o.kind.name()))
        })?;
        // SAFETY: pointers and lengths describe live buffers.
        check(py, released(py, || unsafe { f(h.ptr, layer, rows.ptr(), rows.n, o.ptr, code, o.len) }))?;
        Ok(obj)
    }

    fn slot_u64(
        &self,
        py: Python<'_>,
        slot: i32,
        f: unsafe extern "C" fn(*const m2c::m2c_cache, i32, *mut u64) -> i32,
    ) -> PyResult<u64> {
        let h = self.handle()?;
        let mut out = 0u64;
        let p = &mut out as *mut u64;
        // SAFETY: `out` lives across the call.
        check(py, released(py, || unsafe { f(h.ptr, slot, p) }))?;
        Ok(out)
    }
}

#[pymethods]
impl Cache {
    /// Creates a cache (`m2c_create`): from a `Config`, or from a preset
    /// name and/or fields (`Cache(preset="mamba2-130m", num_slots=8)`).
    #[new]
    #[pyo3(signature = (config=None, *, preset=None, **fields))]
    fn new(
        py: Python<'_>,
        config: Option<Config>,
        preset: Option<&str>,
        fields: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let cfg_type = py.get_type::<Config>();
        let base: Config = match (config, preset) {
            (Some(_), Some(_)) => return Err(PyValueError::new_err("pass a config or a preset, not both")),
            (Some(c), None) => c,
            (None, Some(p)) => cfg_type.call_method1("preset", (p,))?.extract()?,
            (None, None) => cfg_type.call0()?.extract()?,
        };
        let cfg: Config = match fields {
            Some(f) if !f.is_empty() => Bound::new(py, base)?.call_method("replace", (), Some(f))?.extract()?,
            _ => base,
        };
        let raw = cfg.to_raw()?;
        let mut ptr = null_mut();
        let p = &mut ptr as *mut *mut m2c::m2c_cache;
        // SAFETY: `raw` and `ptr` live across the call.
        check(py, released(py, || unsafe { m2c::m2c_create(&raw, p) }))?;
        let handle = Arc::new(Handle { ptr, stream: AtomicIsize::new(1) });
        // The stored config is the library's view of it (m2c_get_config).
        let mut got = raw;
        // SAFETY: a live handle and a valid out struct.
        check(py, unsafe { m2c::m2c_get_config(handle.ptr, &mut got) })?;
        Ok(Cache { handle: Mutex::new(Some(handle)), raw: got, capture_points: Mutex::new(0) })
    }

    /// The cache's config (`m2c_get_config`), a copy.
    #[getter]
    fn config(&self) -> Config {
        Config::from_raw(&self.raw)
    }

    /// Lets go of the handle. The state is freed once no view or exported
    /// tensor refers to it; every later call raises `ValueError`. Calling
    /// it twice is harmless.
    fn close(&self) -> PyResult<()> {
        let taken = self.handle.lock().map_err(|_| PyValueError::new_err("m2c.Cache: lock poisoned"))?.take();
        drop(taken);
        Ok(())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.handle.lock().map(|h| h.is_none()).unwrap_or(true)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let c = Config::from_raw(&self.raw);
        format!(
            "<m2c.Cache {} layers x {} slots, conv {} / ssm {} on {}{}>",
            c.num_layers,
            c.num_slots,
            c.conv_dtype,
            c.ssm_dtype,
            c.device,
            if self.closed() { ", closed" } else { "" }
        )
    }

    /// A human-readable summary (`m2c_describe`).
    fn describe(&self, py: Python<'_>) -> PyResult<String> {
        let h = self.handle()?;
        let mut need = 0usize;
        // SAFETY: (NULL, 0) asks for the size.
        check(py, unsafe { m2c::m2c_describe(h.ptr, null_mut(), 0, &mut need) })?;
        let mut buf = vec![0u8; need];
        // SAFETY: `buf` holds `need` bytes.
        check(py, unsafe { m2c::m2c_describe(h.ptr, buf.as_mut_ptr().cast(), buf.len(), &mut need) })?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Limits m2c's worker threads for this cache (`m2c_set_num_threads`).
    fn set_num_threads(&self, py: Python<'_>, num_threads: u32) -> PyResult<()> {
        let h = self.handle()?;
        // SAFETY: a live handle.
        check(py, unsafe { m2c::m2c_set_num_threads(h.ptr, num_threads) })
    }

    /// Sets the snapshot format `slot_save` writes and `slot_digest`
    /// reports (`m2c_set_snapshot_format`): 1 (the default; every release
    /// reads it) or 2 (the same layout, checksummed in parallel 1 MiB
    /// chunks). `slot_load` reads both.
    fn set_snapshot_format(&self, py: Python<'_>, format: u32) -> PyResult<()> {
        let h = self.handle()?;
        // SAFETY: a live handle.
        check(py, unsafe { m2c::m2c_set_snapshot_format(h.ptr, format) })
    }

    /// The snapshot format `slot_save` writes (`m2c_get_snapshot_format`).
    fn snapshot_format(&self, py: Python<'_>) -> PyResult<u32> {
        let h = self.handle()?;
        let mut out = 0u32;
        // SAFETY: a live handle; `out` lives across the call.
        check(py, unsafe { m2c::m2c_get_snapshot_format(h.ptr, &mut out) })?;
        Ok(out)
    }

    /// Switches how the cache stores its conv windows (`m2c_set_conv_layout`):
    /// `"oldest_first"` (the default) or `"ring"` (a decode token writes one
    /// column instead of shifting the window). What `read_conv`, snapshots
    /// and files see does not change.
    fn set_conv_layout(&self, py: Python<'_>, layout: &str) -> PyResult<()> {
        let code = match layout {
            "oldest_first" => m2c::M2C_CONV_LAYOUT_OLDEST_FIRST,
            "ring" => m2c::M2C_CONV_LAYOUT_RING,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown conv layout {layout:?}: use \"oldest_first\" or \"ring\""
                )));
            }
        };
        let h = self.handle()?;
        // SAFETY: a live handle.
        check(py, released(py, || unsafe { m2c::m2c_set_conv_layout(h.ptr, code) }))
    }

    /// How the cache stores its conv windows (`m2c_get_conv_layout`):
    /// `"oldest_first"` or `"ring"`.
    fn conv_layout(&self, py: Python<'_>) -> PyResult<&'static str> {
        let h = self.handle()?;
        let mut out = 0u32;
        // SAFETY: a live handle; `out` lives across the call.
        check(py, unsafe { m2c::m2c_get_conv_layout(h.ptr, &mut out) })?;
        Ok(if out == m2c::M2C_CONV_LAYOUT_RING { "ring" } else { "oldest_first" })
    }

    /// Per slot of `layer`, the physical column of its conv window holding
    /// the oldest input (`m2c_conv_heads`): in the ring layout input `k`
    /// of slot `s` is column `(heads[s] + k) % conv_width` of
    /// `conv_view(layer)[s]`; all zero in the oldest-first layout.
    fn conv_heads(&self, py: Python<'_>, layer: u32) -> PyResult<Vec<u32>> {
        let h = self.handle()?;
        let mut out = vec![0u32; self.raw.num_slots as usize];
        let (p, n) = (out.as_mut_ptr() as usize, out.len());
        // SAFETY: a live handle; `out` holds `n` entries across the call.
        check(py, released(py, || unsafe { m2c::m2c_conv_heads(h.ptr, layer, p as *mut u32, n) }))?;
        Ok(out)
    }

    /// Pushes one input column per row into the conv windows (`m2c_update_conv`):
    /// `x` is `[n, conv_dim]`.
    #[pyo3(signature = (layer, x, *, slots=None))]
    fn update_conv(
        &self,
        py: Python<'_>,
        layer: u32,
        x: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write_state(py, layer, x, slots, self.conv_dim(), "x", m2c::m2c_update_conv)
    }

    /// Replaces whole conv windows (`m2c_set_conv`): `[n, conv_dim, conv_width]`.
    #[pyo3(signature = (layer, window, *, slots=None))]
    fn set_conv(
        &self,
        py: Python<'_>,
        layer: u32,
        window: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write_state(py, layer, window, slots, self.conv_row(), "window", m2c::m2c_set_conv)
    }

    /// Replaces whole SSM states (`m2c_set_ssm`): `[n, num_heads, head_dim, state_size]`.
    #[pyo3(signature = (layer, state, *, slots=None))]
    fn set_ssm(
        &self,
        py: Python<'_>,
        layer: u32,
        state: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write_state(py, layer, state, slots, self.ssm_row(), "state", m2c::m2c_set_ssm)
    }

    /// `m2c_update_ssm`, the first name of `set_ssm` (kept by the ABI): the same call.
    #[pyo3(signature = (layer, state, *, slots=None))]
    fn update_ssm(
        &self,
        py: Python<'_>,
        layer: u32,
        state: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write_state(py, layer, state, slots, self.ssm_row(), "state", m2c::m2c_update_ssm)
    }

    /// Copies conv windows out (`m2c_read_conv`): `[n, conv_dim, conv_width]`
    /// in `dtype` (default f32), into `out` or a new numpy array.
    #[pyo3(signature = (layer, *, slots=None, out=None, dtype="f32"))]
    fn read_conv<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        slots: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        dtype: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shape = [self.conv_dim(), self.raw.conv_width as usize];
        self.read_state(py, layer, slots, out, dtype, &shape, m2c::m2c_read_conv)
    }

    /// Copies SSM states out (`m2c_read_ssm`): `[n, num_heads, head_dim, state_size]`.
    #[pyo3(signature = (layer, *, slots=None, out=None, dtype="f32"))]
    fn read_ssm<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        slots: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        dtype: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = &self.raw;
        let shape = [r.num_heads as usize, r.head_dim as usize, r.state_size as usize];
        self.read_state(py, layer, slots, out, dtype, &shape, m2c::m2c_read_ssm)
    }

    /// Zeroes the state and position of the slots (`m2c_reset`; `None`: every slot).
    #[pyo3(signature = (slots=None))]
    fn reset(&self, py: Python<'_>, slots: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let h = self.handle()?;
        let rows = Rows::new(slots, self.raw.num_slots as usize)?;
        // SAFETY: live handle and slot list.
        check(py, released(py, || unsafe { m2c::m2c_reset(h.ptr, rows.ptr(), rows.n) }))
    }

    /// Adds `num_tokens` to the slots' positions (`m2c_advance`; `None`: every slot).
    #[pyo3(signature = (slots, num_tokens))]
    fn advance(&self, py: Python<'_>, slots: Option<&Bound<'_, PyAny>>, num_tokens: u32) -> PyResult<()> {
        let h = self.handle()?;
        let rows = Rows::new(slots, self.raw.num_slots as usize)?;
        // SAFETY: live handle and slot list.
        check(py, released(py, || unsafe { m2c::m2c_advance(h.ptr, rows.ptr(), rows.n, num_tokens) }))
    }

    /// The slot's position (`m2c_position`).
    fn position(&self, py: Python<'_>, slot: i32) -> PyResult<u64> {
        self.slot_u64(py, slot, m2c::m2c_position)
    }

    /// A zero-copy view of layer `layer`'s conv windows, every slot
    /// (`m2c_conv_view`): `[num_slots, conv_dim, conv_width]`.
    fn conv_view(&self, py: Python<'_>, layer: u32) -> PyResult<View> {
        View::new(py, self.handle()?, layer, true)
    }

    /// A zero-copy view of layer `layer`'s SSM states, every slot
    /// (`m2c_ssm_view`): `[num_slots, num_heads, head_dim, state_size]`.
    fn ssm_view(&self, py: Python<'_>, layer: u32) -> PyResult<View> {
        View::new(py, self.handle()?, layer, false)
    }

    /// One decode step of the causal conv (`m2c_conv_step`): `x`
    /// `[n, conv_dim]` (f32/bf16/f16, the io dtype), `weight`
    /// `[conv_dim, conv_kernel_size]` f32, `bias` `[conv_dim]` f32 or None.
    /// Returns `out` (`[n, conv_dim]`, x's dtype).
    #[pyo3(signature = (layer, x, weight, bias=None, *, slots=None, out=None, activation="silu"))]
    fn conv_step<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        x: &Bound<'py, PyAny>,
        weight: &Bound<'py, PyAny>,
        bias: Option<&Bound<'py, PyAny>>,
        slots: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        activation: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.conv_call(py, Mode::Step(slots), layer, x, weight, bias, out, activation)
    }

    /// One decode step of the SSM (`m2c_ssm_step`): `x` `[n, num_heads,
    /// head_dim]`, `dt` `[n, num_heads]`, `B`/`C` `[n, n_groups,
    /// state_size]`, `z` like x or None (all the io dtype); `A` (already
    /// `-exp(A_log)`), `D`, `dt_bias` `[num_heads]` f32. `dt_limit=(lo, hi)`
    /// clamps dt after the softplus. Returns `y` (`[n, num_heads*head_dim]`).
    #[pyo3(signature = (layer, x, dt, B, C, A, *, D=None, dt_bias=None, z=None, slots=None, y=None, dt_softplus=true, dt_limit=None))]
    fn ssm_step<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        x: &Bound<'py, PyAny>,
        dt: &Bound<'py, PyAny>,
        B: &Bound<'py, PyAny>,
        C: &Bound<'py, PyAny>,
        A: &Bound<'py, PyAny>,
        D: Option<&Bound<'py, PyAny>>,
        dt_bias: Option<&Bound<'py, PyAny>>,
        z: Option<&Bound<'py, PyAny>>,
        slots: Option<&Bound<'py, PyAny>>,
        y: Option<&Bound<'py, PyAny>>,
        dt_softplus: bool,
        dt_limit: Option<(f32, f32)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.ssm_call(
            py,
            Mode::Step(slots),
            layer,
            SsmArgs { x, dt, b: B, c: C, a: A, d: D, dt_bias, z, y, dt_softplus, dt_limit },
        )
    }

    /// A prompt through the causal conv (`m2c_conv_prefill`): sequence `i`
    /// is rows `cu_seqlens[i]..cu_seqlens[i+1]` of `x` (`[T, conv_dim]`)
    /// and continues slot `slots[i]` (None: slot `i`). Returns `out` (`[T, conv_dim]`).
    #[pyo3(signature = (layer, cu_seqlens, x, weight, bias=None, *, slots=None, out=None, activation="silu"))]
    fn conv_prefill<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        cu_seqlens: &Bound<'py, PyAny>,
        x: &Bound<'py, PyAny>,
        weight: &Bound<'py, PyAny>,
        bias: Option<&Bound<'py, PyAny>>,
        slots: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        activation: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.conv_call(py, Mode::Prefill(cu_seqlens, slots), layer, x, weight, bias, out, activation)
    }

    /// A prompt through the SSM (`m2c_ssm_prefill`), bit-identical to its
    /// steps: arguments as `ssm_step` with `T` token rows split by
    /// `cu_seqlens`. Returns `y` (`[T, num_heads*head_dim]`).
    #[pyo3(signature = (layer, cu_seqlens, x, dt, B, C, A, *, D=None, dt_bias=None, z=None, slots=None, y=None, dt_softplus=true, dt_limit=None))]
    fn ssm_prefill<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        cu_seqlens: &Bound<'py, PyAny>,
        x: &Bound<'py, PyAny>,
        dt: &Bound<'py, PyAny>,
        B: &Bound<'py, PyAny>,
        C: &Bound<'py, PyAny>,
        A: &Bound<'py, PyAny>,
        D: Option<&Bound<'py, PyAny>>,
        dt_bias: Option<&Bound<'py, PyAny>>,
        z: Option<&Bound<'py, PyAny>>,
        slots: Option<&Bound<'py, PyAny>>,
        y: Option<&Bound<'py, PyAny>>,
        dt_softplus: bool,
        dt_limit: Option<(f32, f32)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.ssm_call(
            py,
            Mode::Prefill(cu_seqlens, slots),
            layer,
            SsmArgs { x, dt, b: B, c: C, a: A, d: D, dt_bias, z, y, dt_softplus, dt_limit },
        )
    }

    /// Reserves the speculative log for runs of up to `max_tokens` tokens (`m2c_spec_reserve`).
    fn spec_reserve(&self, py: Python<'_>, max_tokens: u32) -> PyResult<()> {
        let h = self.handle()?;
        // SAFETY: a live handle.
        check(py, released(py, || unsafe { m2c::m2c_spec_reserve(h.ptr, max_tokens) }))
    }

    /// Starts a speculative round (`m2c_spec_begin`): sequence `i` verifies
    /// rows `cu_seqlens[i]..cu_seqlens[i+1]` for slot `slots[i]` (None: slot
    /// `i`); `parents` (one per token row, run-local, -1 for the committed
    /// state) makes the runs trees.
    #[pyo3(signature = (cu_seqlens, *, slots=None, parents=None))]
    fn spec_begin(
        &self,
        py: Python<'_>,
        cu_seqlens: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
        parents: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let h = self.handle()?;
        let cu: Vec<u64> = ints(cu_seqlens, "cu_seqlens")?;
        let rows = Rows::new(slots, cu.len().saturating_sub(1))?;
        let parents: Option<Vec<i32>> = parents.map(|p| ints(p, "parents")).transpose()?;
        let (pp, pl) = parents.as_ref().map_or((null(), 0), |p| (p.as_ptr(), p.len()));
        // SAFETY: every pointer describes a live buffer of its length.
        check(
            py,
            released(py, || unsafe { m2c::m2c_spec_begin(h.ptr, rows.ptr(), rows.n, cu.as_ptr(), cu.len(), pp, pl) }),
        )
    }

    /// The round's runs through the causal conv of `layer`
    /// (`m2c_conv_verify`): `x` `[T, conv_dim]`; the committed state is not
    /// changed. Returns `out`.
    #[pyo3(signature = (layer, x, weight, bias=None, *, out=None, activation="silu"))]
    fn conv_verify<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        x: &Bound<'py, PyAny>,
        weight: &Bound<'py, PyAny>,
        bias: Option<&Bound<'py, PyAny>>,
        out: Option<&Bound<'py, PyAny>>,
        activation: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.conv_call(py, Mode::Verify, layer, x, weight, bias, out, activation)
    }

    /// The round's runs through the SSM of `layer` (`m2c_ssm_verify`),
    /// arguments as `ssm_step`; the committed state is not changed. Returns `y`.
    #[pyo3(signature = (layer, x, dt, B, C, A, *, D=None, dt_bias=None, z=None, y=None, dt_softplus=true, dt_limit=None))]
    fn ssm_verify<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        x: &Bound<'py, PyAny>,
        dt: &Bound<'py, PyAny>,
        B: &Bound<'py, PyAny>,
        C: &Bound<'py, PyAny>,
        A: &Bound<'py, PyAny>,
        D: Option<&Bound<'py, PyAny>>,
        dt_bias: Option<&Bound<'py, PyAny>>,
        z: Option<&Bound<'py, PyAny>>,
        y: Option<&Bound<'py, PyAny>>,
        dt_softplus: bool,
        dt_limit: Option<(f32, f32)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.ssm_call(
            py,
            Mode::Verify,
            layer,
            SsmArgs { x, dt, b: B, c: C, a: A, d: D, dt_bias, z, y, dt_softplus, dt_limit },
        )
    }

    /// Commits the first `accepted[i]` tokens (or, for trees, the node
    /// `accepted[i]` names) of each slot's run (`m2c_spec_commit`).
    #[pyo3(signature = (accepted, *, slots=None))]
    fn spec_commit(
        &self,
        py: Python<'_>,
        accepted: &Bound<'_, PyAny>,
        slots: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let h = self.handle()?;
        let acc: Vec<u32> = ints(accepted, "accepted")?;
        let rows = Rows::new(slots, acc.len())?;
        if rows.n != acc.len() {
            return Err(PyValueError::new_err(format!("accepted has {} entries for {} slots", acc.len(), rows.n)));
        }
        // SAFETY: every pointer describes a live buffer of its length.
        check(py, released(py, || unsafe { m2c::m2c_spec_commit(h.ptr, rows.ptr(), rows.n, acc.as_ptr()) }))
    }

    /// A free slot, zeroed (`m2c_slot_acquire`); `m2c.NoFreeSlot` when none is left.
    fn slot_acquire(&self, py: Python<'_>) -> PyResult<i32> {
        let h = self.handle()?;
        let mut slot = -1i32;
        let p = &mut slot as *mut i32;
        // SAFETY: `slot` lives across the call.
        check(py, released(py, || unsafe { m2c::m2c_slot_acquire(h.ptr, p) }))?;
        Ok(slot)
    }

    /// Returns a slot to the free list (`m2c_slot_release`).
    fn slot_release(&self, py: Python<'_>, slot: i32) -> PyResult<()> {
        let h = self.handle()?;
        // SAFETY: a live handle.
        check(py, released(py, || unsafe { m2c::m2c_slot_release(h.ptr, slot) }))
    }

    /// Slots acquired and not released (`m2c_slots_in_use`).
    fn slots_in_use(&self, py: Python<'_>) -> PyResult<u32> {
        let h = self.handle()?;
        let mut n = 0u32;
        // SAFETY: `n` lives across the call.
        check(py, unsafe { m2c::m2c_slots_in_use(h.ptr, &mut n) })?;
        Ok(n)
    }

    /// Copies whole slots, every layer and the position (`m2c_copy_slots`):
    /// `dst[i]` becomes what `src[i]` was before the call (forks, beam reorders).
    fn copy_slots(&self, py: Python<'_>, src: &Bound<'_, PyAny>, dst: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = self.handle()?;
        let s: Vec<i32> = ints(src, "src")?;
        let d: Vec<i32> = ints(dst, "dst")?;
        if s.len() != d.len() {
            return Err(PyValueError::new_err(format!("src has {} slots and dst {}", s.len(), d.len())));
        }
        // SAFETY: both lists hold `n` entries.
        check(py, released(py, || unsafe { m2c::m2c_copy_slots(h.ptr, s.as_ptr(), d.as_ptr(), s.len()) }))
    }

    /// Non-finite values in the slot's state, every layer (`m2c_count_nonfinite`).
    fn count_nonfinite(&self, py: Python<'_>, slot: i32) -> PyResult<u64> {
        self.slot_u64(py, slot, m2c::m2c_count_nonfinite)
    }

    /// `m2c_check_finite`, the first name of `count_nonfinite` (kept by the ABI).
    fn check_finite(&self, py: Python<'_>, slot: i32) -> PyResult<u64> {
        self.slot_u64(py, slot, m2c::m2c_check_finite)
    }

    /// Bytes of one slot's snapshot (`m2c_slot_snapshot_size`).
    fn slot_snapshot_size(&self, py: Python<'_>) -> PyResult<usize> {
        let h = self.handle()?;
        let mut n = 0usize;
        // SAFETY: `n` lives across the call.
        check(py, unsafe { m2c::m2c_slot_snapshot_size(h.ptr, &mut n) })?;
        Ok(n)
    }

    /// A snapshot of one slot (`m2c_slot_save`, docs/FORMATS.md): new
    /// `bytes`, or written into `out` (a writable buffer), returning the
    /// bytes written.
    #[pyo3(signature = (slot, out=None))]
    fn slot_save<'py>(
        &self,
        py: Python<'py>,
        slot: i32,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        let mut written = 0usize;
        let wp = &mut written as *mut usize;
        if let Some(o) = out {
            let a = output(o, "out", Want::HOST)?;
            let bytes = a.len * a.kind_size();
            // SAFETY: `a` is a writable buffer of `bytes` bytes.
            check(py, released(py, || unsafe { m2c::m2c_slot_save(h.ptr, slot, a.ptr, bytes, wp) }))?;
            return Ok(written.into_pyobject(py)?.into_any());
        }
        let size = self.slot_snapshot_size(py)?;
        let mut buf = vec![0u8; size];
        let bp = buf.as_mut_ptr();
        // SAFETY: `buf` holds `size` bytes.
        check(py, released(py, || unsafe { m2c::m2c_slot_save(h.ptr, slot, bp.cast(), size, wp) }))?;
        Ok(PyBytes::new(py, &buf[..written]).into_any())
    }

    /// Loads a snapshot into a slot (`m2c_slot_load`); a damaged or
    /// foreign one raises `m2c.Corrupt` / `m2c.Incompatible` and changes nothing.
    fn slot_load(&self, py: Python<'_>, slot: i32, snapshot: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = self.handle()?;
        let a = array::input(snapshot, "snapshot", "uint8", Want::HOST)?;
        let bytes = a.len * a.kind_size();
        // SAFETY: `a` holds `bytes` bytes.
        check(py, released(py, || unsafe { m2c::m2c_slot_load(h.ptr, slot, a.ptr, bytes) }))
    }

    /// Writes every slot to a file, crash-safe (`m2c_save_file`).
    fn save_file(&self, py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = self.handle()?;
        let p = cstring_path(path)?;
        // SAFETY: a live handle and a NUL-terminated path.
        check(py, released(py, || unsafe { m2c::m2c_save_file(h.ptr, p.as_ptr()) }))
    }

    /// Loads a file written by `save_file` (`m2c_load_file`).
    fn load_file(&self, py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = self.handle()?;
        let p = cstring_path(path)?;
        // SAFETY: a live handle and a NUL-terminated path.
        check(py, released(py, || unsafe { m2c::m2c_load_file(h.ptr, p.as_ptr()) }))
    }

    /// Declares checkpoints to capture during the coming prefills
    /// (`m2c_capture_begin`): `points` are `(slot, tokens, key)` tuples.
    fn capture_begin(&self, py: Python<'_>, store: &crate::store::Store, points: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = self.handle()?;
        let s = store.handle()?;
        let mut pts = Vec::new();
        for p in points.try_iter()? {
            let (slot, tokens, key): (i32, u64, u128) = p?.extract()?;
            pts.push(m2c::m2c_capture_point { slot, tokens, key: crate::store::key(key) });
        }
        // SAFETY: `pts` holds `len` points.
        check(py, released(py, || unsafe { m2c::m2c_capture_begin(h.ptr, s.ptr, pts.as_ptr(), pts.len()) }))?;
        *self.capture_points.lock().map_err(|_| PyValueError::new_err("lock poisoned"))? = pts.len();
        Ok(())
    }

    /// Ends the capture (`m2c_capture_end`): the points go into `store`;
    /// returns each point's miss code (`m2c.MISS_NONE` or `m2c.MISS_TOO_LARGE`),
    /// in the order `capture_begin` named them.
    fn capture_end(&self, py: Python<'_>, store: &crate::store::Store) -> PyResult<Vec<i32>> {
        let h = self.handle()?;
        let s = store.handle()?;
        let mut count = self.capture_points.lock().map_err(|_| PyValueError::new_err("lock poisoned"))?;
        let n_points = *count;
        let mut misses = vec![0i32; n_points];
        let (mp, n) = if n_points == 0 { (null_mut(), 0) } else { (misses.as_mut_ptr(), n_points) };
        // SAFETY: `misses` holds `n` entries.
        check(py, released(py, || unsafe { m2c::m2c_capture_end(h.ptr, s.ptr, mp, n) }))?;
        *count = 0;
        Ok(misses)
    }

    /// The cache's arenas (`m2c_arenas`), to register with a transfer engine:
    /// `(base, len, device, device_index)` tuples, arena `2*l` layer `l`'s
    /// conv windows and `2*l + 1` its SSM states.
    fn arenas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let h = self.handle()?;
        let mut n = 0usize;
        // SAFETY: (NULL, 0) asks for the count.
        check(py, unsafe { m2c::m2c_arenas(h.ptr, null_mut(), 0, &mut n) })?;
        let mut v = vec![m2c::m2c_arena::default(); n];
        // SAFETY: `v` holds `n` entries.
        check(py, unsafe { m2c::m2c_arenas(h.ptr, v.as_mut_ptr(), v.len(), &mut n) })?;
        let items: Vec<(u64, u64, &str, i32)> =
            v[..n].iter().map(|a| (a.base, a.len, crate::config::device_name(a.device), a.device_index)).collect();
        PyList::new(py, items)
    }

    /// The byte runs of the slots' state (`m2c_slot_regions`):
    /// `(slot, arena, offset, len, image_offset)` tuples.
    fn slot_regions<'py>(&self, py: Python<'py>, slots: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let h = self.handle()?;
        let s: Vec<i32> = ints(slots, "slots")?;
        let mut n = 0usize;
        // SAFETY: (NULL, 0) asks for the count.
        check(py, unsafe { m2c::m2c_slot_regions(h.ptr, s.as_ptr(), s.len(), null_mut(), 0, &mut n) })?;
        let mut v = vec![m2c::m2c_region::default(); n];
        // SAFETY: `v` holds `n` entries.
        check(py, unsafe { m2c::m2c_slot_regions(h.ptr, s.as_ptr(), s.len(), v.as_mut_ptr(), v.len(), &mut n) })?;
        let items: Vec<(i32, u32, u64, u64, u64)> =
            v[..n].iter().map(|r| (r.slot, r.arena, r.offset, r.len, r.image_offset)).collect();
        PyList::new(py, items)
    }

    /// The slot's snapshot checksum (`m2c_slot_digest`), equal on both ends
    /// of a faithful transfer.
    fn slot_digest(&self, py: Python<'_>, slot: i32) -> PyResult<u64> {
        self.slot_u64(py, slot, m2c::m2c_slot_digest)
    }

    /// For the overhead benchmark (bench/overhead.py): runs `m2c_conv_step`
    /// and `m2c_ssm_step` `iters` times each straight from Rust on arrays
    /// marshalled once, and returns the seconds per call of each. What the
    /// same calls cost through the methods, minus this, is the binding's
    /// per-call overhead.
    #[pyo3(signature = (layer, xc, weight, bias, out, x, dt, B, C, A, y, iters, slots=None))]
    fn _time_c_calls<'py>(
        &self,
        py: Python<'py>,
        layer: u32,
        xc: &Bound<'py, PyAny>,
        weight: &Bound<'py, PyAny>,
        bias: &Bound<'py, PyAny>,
        out: &Bound<'py, PyAny>,
        x: &Bound<'py, PyAny>,
        dt: &Bound<'py, PyAny>,
        B: &Bound<'py, PyAny>,
        C: &Bound<'py, PyAny>,
        A: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        iters: u32,
        slots: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(f64, f64)> {
        let h = self.handle()?;
        let want = self.kernel_want(&h);
        let xa = float_input(xc, "xc", want)?;
        let rows = Rows::new(slots, xa.len / self.conv_dim())?;
        let w = f32_input(weight, "weight", want)?;
        let b = f32_input(bias, "bias", want)?;
        let o = output(out, "out", want)?;
        let args = self.conv_args(xa.kind, "silu", &w, Some(&b))?;
        let i = self.ssm_inputs(want, x, dt, B, C, A, None, None, None)?;
        let ya = output(y, "y", want)?;
        let (io, sargs) = self.ssm_structs(&i, &ya, true, None);
        let (status, (conv_s, ssm_s)) = released(py, || {
            let t0 = std::time::Instant::now();
            let mut st = 0;
            for _ in 0..iters {
                // SAFETY: as in conv_step.
                st |= unsafe {
                    m2c::m2c_conv_step(h.ptr, layer, rows.ptr(), rows.n, xa.ptr, xa.len, o.ptr, o.len, &args)
                };
            }
            let t1 = std::time::Instant::now();
            for _ in 0..iters {
                // SAFETY: as in ssm_step.
                st |= unsafe { m2c::m2c_ssm_step(h.ptr, layer, rows.ptr(), rows.n, &io, &sargs) };
            }
            let t2 = std::time::Instant::now();
            (st, ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64()))
        });
        check(py, status)?;
        let n = f64::from(iters.max(1));
        Ok((conv_s / n, ssm_s / n))
    }

    /// Queues a device cache's work on `stream` (a `CUstream` as an int, 0:
    /// the default stream) (`m2c_set_stream`). DLPack producers are asked
    /// to order their work before that stream.
    fn set_stream(&self, py: Python<'_>, stream: usize) -> PyResult<()> {
        let h = self.handle()?;
        // SAFETY: a live handle; m2c checks the stream.
        check(py, unsafe { m2c::m2c_set_stream(h.ptr, stream as *mut c_void) })?;
        h.stream.store(if stream == 0 { 1 } else { stream as isize }, Ordering::Relaxed);
        Ok(())
    }
}
