//! `m2c.Config`: `m2c_config` with names for its codes.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::check;

/// The shape of a cache (`m2c_config`). `Config(**fields)` starts from the
/// library's defaults (`m2c_config_init`); `Config.preset(name, **fields)`
/// from a published model's layer shapes. Dtypes are "f32", "bf16" or
/// "f16"; devices "cpu" or "cuda". Fields are checked when a cache is
/// created (or by `bytes()`), by the library itself.
#[pyclass(module = "m2c", name = "Config", get_all, set_all, eq, from_py_object)]
#[derive(Clone, PartialEq, Debug)]
pub struct Config {
    pub num_layers: u32,
    pub num_slots: u32,
    pub intermediate_size: u32,
    pub num_heads: u32,
    pub head_dim: u32,
    pub state_size: u32,
    pub n_groups: u32,
    pub conv_kernel_size: u32,
    pub conv_width: u32,
    pub conv_dtype: String,
    pub ssm_dtype: String,
    pub device: String,
    pub device_index: i32,
}

pub const PRESETS: [(&str, u32); 11] = [
    ("mamba2-130m", m2c::M2C_PRESET_MAMBA2_130M),
    ("mamba2-370m", m2c::M2C_PRESET_MAMBA2_370M),
    ("mamba2-780m", m2c::M2C_PRESET_MAMBA2_780M),
    ("mamba2-1.3b", m2c::M2C_PRESET_MAMBA2_1_3B),
    ("mamba2-2.7b", m2c::M2C_PRESET_MAMBA2_2_7B),
    ("nemotron-h-8b", m2c::M2C_PRESET_NEMOTRON_H_8B),
    ("nemotron-nano-9b-v2", m2c::M2C_PRESET_NEMOTRON_NANO_9B_V2),
    ("bamba-9b", m2c::M2C_PRESET_BAMBA_9B),
    ("granite-4.0-h-small", m2c::M2C_PRESET_GRANITE_4_0_H_SMALL),
    ("falcon-h1-7b", m2c::M2C_PRESET_FALCON_H1_7B),
    ("zamba2-1.2b", m2c::M2C_PRESET_ZAMBA2_1_2B),
];

pub fn dtype_code(name: &str) -> PyResult<u32> {
    match name {
        "f32" | "float32" => Ok(m2c::M2C_DTYPE_F32),
        "bf16" | "bfloat16" => Ok(m2c::M2C_DTYPE_BF16),
        "f16" | "float16" => Ok(m2c::M2C_DTYPE_F16),
        _ => Err(PyValueError::new_err(format!("unknown dtype {name:?}: use \"f32\", \"bf16\" or \"f16\""))),
    }
}

pub fn dtype_name(code: u32) -> &'static str {
    match code {
        m2c::M2C_DTYPE_F32 => "f32",
        m2c::M2C_DTYPE_BF16 => "bf16",
        m2c::M2C_DTYPE_F16 => "f16",
        _ => "unknown",
    }
}

fn device_code(name: &str) -> PyResult<u32> {
    match name {
        "cpu" => Ok(m2c::M2C_DEVICE_CPU),
        "cuda" => Ok(m2c::M2C_DEVICE_CUDA),
        _ => Err(PyValueError::new_err(format!("unknown device {name:?}: use \"cpu\" or \"cuda\""))),
    }
}

pub fn device_name(code: u32) -> &'static str {
    if code == m2c::M2C_DEVICE_CUDA { "cuda" } else { "cpu" }
}

fn raw_init() -> m2c::m2c_config {
    let mut raw = std::mem::MaybeUninit::<m2c::m2c_config>::zeroed();
    // SAFETY: m2c_config_init fills every field of a valid struct.
    unsafe {
        m2c::m2c_config_init(raw.as_mut_ptr());
        raw.assume_init()
    }
}

impl Config {
    pub fn from_raw(r: &m2c::m2c_config) -> Config {
        Config {
            num_layers: r.num_layers,
            num_slots: r.num_slots,
            intermediate_size: r.intermediate_size,
            num_heads: r.num_heads,
            head_dim: r.head_dim,
            state_size: r.state_size,
            n_groups: r.n_groups,
            conv_kernel_size: r.conv_kernel_size,
            conv_width: r.conv_width,
            conv_dtype: dtype_name(r.conv_dtype).into(),
            ssm_dtype: dtype_name(r.ssm_dtype).into(),
            device: device_name(r.device).into(),
            device_index: r.device_index,
        }
    }

    pub fn to_raw(&self) -> PyResult<m2c::m2c_config> {
        let mut r = raw_init();
        r.num_layers = self.num_layers;
        r.num_slots = self.num_slots;
        r.intermediate_size = self.intermediate_size;
        r.num_heads = self.num_heads;
        r.head_dim = self.head_dim;
        r.state_size = self.state_size;
        r.n_groups = self.n_groups;
        r.conv_kernel_size = self.conv_kernel_size;
        r.conv_width = self.conv_width;
        r.conv_dtype = dtype_code(&self.conv_dtype)?;
        r.ssm_dtype = dtype_code(&self.ssm_dtype)?;
        r.device = device_code(&self.device)?;
        r.device_index = self.device_index;
        Ok(r)
    }

    fn apply(&mut self, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(fields) = fields else { return Ok(()) };
        let me = Bound::new(fields.py(), self.clone())?;
        for (k, v) in fields.iter() {
            let name: String = k.extract()?;
            if !FIELDS.contains(&name.as_str()) {
                return Err(PyValueError::new_err(format!("m2c.Config has no field {name:?}")));
            }
            me.setattr(name.as_str(), v)?;
        }
        *self = me.borrow().clone();
        Ok(())
    }

    /// `conv_dim = intermediate_size + 2 * n_groups * state_size`.
    pub fn conv_dim_of(r: &m2c::m2c_config) -> usize {
        r.intermediate_size as usize + 2 * r.n_groups as usize * r.state_size as usize
    }
}

const FIELDS: [&str; 13] = [
    "num_layers",
    "num_slots",
    "intermediate_size",
    "num_heads",
    "head_dim",
    "state_size",
    "n_groups",
    "conv_kernel_size",
    "conv_width",
    "conv_dtype",
    "ssm_dtype",
    "device",
    "device_index",
];

#[pymethods]
impl Config {
    #[new]
    #[pyo3(signature = (**fields))]
    fn new(fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut c = Config::from_raw(&raw_init());
        c.apply(fields)?;
        Ok(c)
    }

    /// The layer shapes of a published model (`m2c_config_preset`), with
    /// the library's defaults for the rest and `fields` on top. Names:
    /// `m2c.PRESETS`.
    #[staticmethod]
    #[pyo3(signature = (name, **fields))]
    fn preset(py: Python<'_>, name: &str, fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let code = PRESETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            PyValueError::new_err(format!("unknown preset {name:?}; known: {}", names.join(", ")))
        })?;
        let mut raw = raw_init();
        // SAFETY: `raw` is an initialised m2c_config.
        check(py, unsafe { m2c::m2c_config_preset(&mut raw, code) })?;
        let mut c = Config::from_raw(&raw);
        c.apply(fields)?;
        Ok(c)
    }

    /// Bytes of state a cache of this config holds (`m2c_config_bytes`);
    /// raises `m2c.InvalidConfig` for a config `Cache` would refuse.
    fn bytes(&self, py: Python<'_>) -> PyResult<u64> {
        let raw = self.to_raw()?;
        let mut out = 0u64;
        // SAFETY: both pointers are valid for the call.
        check(py, unsafe { m2c::m2c_config_bytes(&raw, &mut out) })?;
        Ok(out)
    }

    /// `intermediate_size + 2 * n_groups * state_size`: the channels of the
    /// conv (its x, B and C sections).
    #[getter]
    fn conv_dim(&self) -> usize {
        self.intermediate_size as usize + 2 * self.n_groups as usize * self.state_size as usize
    }

    /// A copy with `fields` changed.
    #[pyo3(signature = (**fields))]
    fn replace(&self, fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut c = self.clone();
        c.apply(fields)?;
        Ok(c)
    }

    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let me = Bound::new(py, self.clone())?;
        let d = PyDict::new(py);
        for f in FIELDS {
            d.set_item(f, me.getattr(f)?)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "m2c.Config(num_layers={}, num_slots={}, intermediate_size={}, num_heads={}, head_dim={}, state_size={}, \
             n_groups={}, conv_kernel_size={}, conv_width={}, conv_dtype={:?}, ssm_dtype={:?}, device={:?}, device_index={})",
            self.num_layers,
            self.num_slots,
            self.intermediate_size,
            self.num_heads,
            self.head_dim,
            self.state_size,
            self.n_groups,
            self.conv_kernel_size,
            self.conv_width,
            self.conv_dtype,
            self.ssm_dtype,
            self.device,
            self.device_index
        )
    }
}
