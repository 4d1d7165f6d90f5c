//! Configuration: dtypes, devices, the config struct and its checks.

use super::*;
use m2c_core::{AnyCache, Config, Device, Preset};

/// An element type code. Arrives as a plain integer: every value is
/// validated, and an unknown one is `M2C_STATUS_UNSUPPORTED_DTYPE`.
pub type m2c_dtype = u32;

/// IEEE-754 binary32.
pub const M2C_DTYPE_F32: m2c_dtype = 0;

/// bfloat16 (the upper half of a binary32); conversions into it round to
/// nearest, ties to even.
pub const M2C_DTYPE_BF16: m2c_dtype = 1;

/// IEEE-754 binary16; conversions into it round to nearest, ties to even.
pub const M2C_DTYPE_F16: m2c_dtype = 2;

/// A device code for `m2c_config.device`.
pub type m2c_device = u32;

/// Host memory.
pub const M2C_DEVICE_CPU: m2c_device = 0;

/// NVIDIA GPU memory: a device cache (see "Device caches" at the top of
/// this header). A build without the `cuda` feature, or a machine without
/// a usable GPU, returns `M2C_STATUS_UNSUPPORTED` from `m2c_create`.
pub const M2C_DEVICE_CUDA: m2c_device = 1;

/// A published model for `m2c_config_preset`. Arrives as a plain integer:
/// an unknown one is `M2C_STATUS_INVALID_ARG`.
pub type m2c_preset = u32;

/// state-spaces/mamba2-130m: 24 layers, intermediate 1536, 24 heads.
pub const M2C_PRESET_MAMBA2_130M: m2c_preset = 1;
/// state-spaces/mamba2-370m: 48 layers, intermediate 2048, 32 heads.
pub const M2C_PRESET_MAMBA2_370M: m2c_preset = 2;
/// state-spaces/mamba2-780m: 48 layers, intermediate 3072, 48 heads.
pub const M2C_PRESET_MAMBA2_780M: m2c_preset = 3;
/// state-spaces/mamba2-1.3b: 48 layers, intermediate 4096, 64 heads.
pub const M2C_PRESET_MAMBA2_1_3B: m2c_preset = 4;
/// state-spaces/mamba2-2.7b: 64 layers, intermediate 5120, 80 heads.
pub const M2C_PRESET_MAMBA2_2_7B: m2c_preset = 5;
/// The Mamba2 layers of nvidia/Nemotron-H-8B-Base-8K: 24 (of 52 layers),
/// intermediate 8192, 128 heads of 64, state 128, 8 groups.
pub const M2C_PRESET_NEMOTRON_H_8B: m2c_preset = 6;
/// The Mamba2 layers of nvidia/NVIDIA-Nemotron-Nano-9B-v2: 27 (of 56),
/// intermediate 10240, 128 heads of 80, state 128, 8 groups.
pub const M2C_PRESET_NEMOTRON_NANO_9B_V2: m2c_preset = 7;
/// The Mamba2 layers of ibm-ai-platform/Bamba-9B: 29 (of 32), intermediate
/// 8192, 128 heads of 64, state 128, one group.
pub const M2C_PRESET_BAMBA_9B: m2c_preset = 8;
/// The Mamba2 layers of ibm-granite/granite-4.0-h-small: 36 (of 40),
/// intermediate 8192, 128 heads of 64, state 128, one group.
pub const M2C_PRESET_GRANITE_4_0_H_SMALL: m2c_preset = 9;
/// The Mamba2 mixers of tiiuae/Falcon-H1-7B: 44 (one per layer, beside
/// attention), intermediate 3072, 24 heads of 128, state 256, one group.
pub const M2C_PRESET_FALCON_H1_7B: m2c_preset = 10;
/// The Mamba2 mixers of Zyphra/Zamba2-1.2B: 38 (one per layer),
/// intermediate 4096, 64 heads of 64, state 128, one group.
pub const M2C_PRESET_ZAMBA2_1_2B: m2c_preset = 11;

/// The shape of a cache. Always start from `m2c_config_init()`, which sets
/// `struct_size` and fills in defaults, then change the fields you need.
/// Fields are only ever added at the end. A library whose `m2c_config`
/// grows also gets a new `M2C_ABI_VERSION` (and SONAME), so a program never
/// meets an `m2c_config_init()` that writes more than its own struct holds;
/// `struct_size` catches a struct that was never initialised or comes from
/// another header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct m2c_config {
    /// `sizeof(m2c_config)` as the caller was compiled; set by
    /// `m2c_config_init()`. A size the library does not know is
    /// `M2C_STATUS_INVALID_ARG`.
    pub struct_size: u32,
    /// Mamba2 layers (each holds its own conv and ssm state).
    pub num_layers: u32,
    /// Sequences the cache holds at once; at most `INT32_MAX`.
    pub num_slots: u32,
    /// Inner width of the mixer; must equal `num_heads * head_dim`.
    pub intermediate_size: u32,
    /// SSM heads per layer; a multiple of `n_groups`.
    pub num_heads: u32,
    /// Channels per head.
    pub head_dim: u32,
    /// SSM state size (`d_state`, the length of B and C).
    pub state_size: u32,
    /// B/C groups; head `h` uses group `h / (num_heads / n_groups)`.
    pub n_groups: u32,
    /// Kernel size K of the depthwise causal conv; at least 2.
    pub conv_kernel_size: u32,
    /// Columns of the stored conv window: `conv_kernel_size` (the HF
    /// transformers / JAX layout) or `conv_kernel_size - 1` (the vLLM /
    /// llama.cpp layout).
    pub conv_width: u32,
    /// Storage dtype of the conv windows (`M2C_DTYPE_*`).
    pub conv_dtype: m2c_dtype,
    /// Storage dtype of the SSM states (`M2C_DTYPE_*`).
    pub ssm_dtype: m2c_dtype,
    /// `M2C_DEVICE_CPU` or `M2C_DEVICE_CUDA`.
    pub device: m2c_device,
    /// Which device of that kind; 0 for the CPU. Must be >= 0.
    pub device_index: i32,
}

/// The core dtype of an `M2C_DTYPE_*` value, if it names one.
pub(crate) fn dtype_from_c(code: m2c_dtype) -> Option<DType> {
    match code {
        M2C_DTYPE_F32 => Some(DType::F32),
        M2C_DTYPE_BF16 => Some(DType::BF16),
        M2C_DTYPE_F16 => Some(DType::F16),
        _ => None,
    }
}

/// The `M2C_DTYPE_*` value of a core dtype.
pub(crate) fn dtype_to_c(d: DType) -> m2c_dtype {
    match d {
        DType::F32 => M2C_DTYPE_F32,
        DType::BF16 => M2C_DTYPE_BF16,
        DType::F16 => M2C_DTYPE_F16,
    }
}

/// The storage for `cfg`: a host cache, or with `M2C_DEVICE_CUDA` (in a
/// build with the `cuda` feature and a GPU) a device cache.
pub(crate) fn config_to_c(c: &Config) -> m2c_config {
    m2c_config {
        struct_size: std::mem::size_of::<m2c_config>() as u32,
        num_layers: c.num_layers,
        num_slots: c.num_slots,
        intermediate_size: c.intermediate_size,
        num_heads: c.num_heads,
        head_dim: c.head_dim,
        state_size: c.state_size,
        n_groups: c.n_groups,
        conv_kernel_size: c.conv_kernel_size,
        conv_width: c.conv_width,
        conv_dtype: dtype_to_c(c.conv_dtype),
        ssm_dtype: dtype_to_c(c.ssm_dtype),
        device: match c.device {
            Device::Cpu => M2C_DEVICE_CPU,
            Device::Cuda => M2C_DEVICE_CUDA,
        },
        device_index: c.device_index,
    }
}

pub(crate) fn config_from_c(c: &m2c_config) -> Result<Config, Error> {
    check_struct_size::<m2c_config>(c.struct_size, "cfg", "m2c_config_init")?;
    let dtype = |code: m2c_dtype, field: &str| {
        dtype_from_c(code).ok_or_else(|| {
            Error::from(CoreError::UnsupportedDtype(format!("{field} = {code} is not an M2C_DTYPE_* value")))
        })
    };
    let device = match c.device {
        M2C_DEVICE_CPU => Device::Cpu,
        M2C_DEVICE_CUDA => Device::Cuda,
        other => return Err(CoreError::InvalidConfig(format!("device = {other} is not an M2C_DEVICE_* value")).into()),
    };
    let cfg = Config {
        num_layers: c.num_layers,
        num_slots: c.num_slots,
        intermediate_size: c.intermediate_size,
        num_heads: c.num_heads,
        head_dim: c.head_dim,
        state_size: c.state_size,
        n_groups: c.n_groups,
        conv_kernel_size: c.conv_kernel_size,
        conv_width: c.conv_width,
        conv_dtype: dtype(c.conv_dtype, "conv_dtype")?,
        ssm_dtype: dtype(c.ssm_dtype, "ssm_dtype")?,
        device,
        device_index: c.device_index,
    };
    cfg.shape()?;
    Ok(cfg)
}

/// Fills `*cfg` with the defaults: Mamba2-130m shapes (24 layers,
/// intermediate_size 1536, 24 heads of 64, state_size 128, 1 group,
/// kernel 4), 1 slot, `conv_width = conv_kernel_size`, conv windows in
/// bf16, SSM states in f32, CPU; and sets `struct_size`.
///
/// NULL is a no-op. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_config_init(cfg: *mut m2c_config) {
    init_struct("m2c_config_init", cfg, || config_to_c(&Config::default()))
}

/// Fills `*cfg` as `m2c_config_init` does, with the Mamba2 layer shapes of a
/// published model: every model of the family has head_dim 64, state_size
/// 128, one group and conv_kernel_size 4 (conv_width 4: set 3 for the
/// vLLM/llama.cpp layout), intermediate_size = 2 * d_model and num_heads =
/// intermediate_size / 64. Slots, dtypes and device are the defaults;
/// change what you need before `m2c_create`.
///
/// A Hugging Face `config.json` maps onto `m2c_config` as: num_layers = the
/// number of Mamba2 layers (`num_hidden_layers`, or in a hybrid the Mamba
/// entries of its layer pattern); intermediate_size = `num_heads *
/// head_dim` (in Mamba2 checkpoints `expand * hidden_size`); num_heads =
/// `num_heads`; head_dim = `head_dim`; state_size = `state_size`; n_groups
/// = `n_groups`; conv_kernel_size = `conv_kernel`. Hybrids prefix these
/// keys (`mamba_num_heads`, `mamba_d_state`, ...).
///
/// Errors: `M2C_STATUS_NULL_ARG` (cfg), `M2C_STATUS_INVALID_ARG` (an
/// unknown preset). `*cfg` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_config_preset(cfg: *mut m2c_config, preset: m2c_preset) -> m2c_status {
    ffi_status("m2c_config_preset", || {
        let out = out_ptr(cfg, "cfg")?;
        let p = match preset {
            M2C_PRESET_MAMBA2_130M => Preset::Mamba2_130m,
            M2C_PRESET_MAMBA2_370M => Preset::Mamba2_370m,
            M2C_PRESET_MAMBA2_780M => Preset::Mamba2_780m,
            M2C_PRESET_MAMBA2_1_3B => Preset::Mamba2_1_3b,
            M2C_PRESET_MAMBA2_2_7B => Preset::Mamba2_2_7b,
            M2C_PRESET_NEMOTRON_H_8B => Preset::NemotronH8b,
            M2C_PRESET_NEMOTRON_NANO_9B_V2 => Preset::NemotronNano9bV2,
            M2C_PRESET_BAMBA_9B => Preset::Bamba9b,
            M2C_PRESET_GRANITE_4_0_H_SMALL => Preset::Granite4HSmall,
            M2C_PRESET_FALCON_H1_7B => Preset::FalconH1_7b,
            M2C_PRESET_ZAMBA2_1_2B => Preset::Zamba2_1_2b,
            other => {
                return Err(CoreError::InvalidArg(format!("preset = {other} is not an M2C_PRESET_* value")).into());
            }
        };
        // SAFETY: checked non-NULL and aligned; the caller provides a config.
        unsafe { out.write(config_to_c(&Config::preset(p))) };
        Ok(())
    })
}

/// Computes the bytes of state storage a cache with configuration `*cfg`
/// allocates: the conv and SSM buffers of every layer, each rounded up to
/// 64 bytes. Small per-slot bookkeeping is not included.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cfg or out_bytes NULL),
/// `M2C_STATUS_INVALID_ARG` (unknown `struct_size`),
/// `M2C_STATUS_INVALID_CONFIG`, `M2C_STATUS_UNSUPPORTED_DTYPE`.
/// `*out_bytes` is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_config_bytes(cfg: *const m2c_config, out_bytes: *mut u64) -> m2c_status {
    ffi_status("m2c_config_bytes", || {
        // SAFETY: NULL or a valid config, per the contract.
        let cfg = unsafe { arg_ref(cfg, "cfg") }?;
        let out = out_ptr(out_bytes, "out_bytes")?;
        let shape = AnyCache::check_config(&config_from_c(cfg)?)?;
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(shape.total_bytes) };
        Ok(())
    })
}
