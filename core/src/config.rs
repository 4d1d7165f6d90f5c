//! Model and cache shape, its validation, and the byte counts derived from it.

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Buffer alignment of every layer's conv and ssm storage, in bytes.
pub(crate) const ALIGN: usize = 64;

/// Where the state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Published Mamba2 models whose shapes [`Config::preset`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Mamba2_130m,
    Mamba2_370m,
    Mamba2_780m,
    Mamba2_1_3b,
    Mamba2_2_7b,
}

impl Preset {
    pub const ALL: [Preset; 5] =
        [Preset::Mamba2_130m, Preset::Mamba2_370m, Preset::Mamba2_780m, Preset::Mamba2_1_3b, Preset::Mamba2_2_7b];
}

/// The shape of a cache: model dimensions, slot count, layout and dtypes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub num_layers: u32,
    pub num_slots: u32,
    pub intermediate_size: u32,
    pub num_heads: u32,
    pub head_dim: u32,
    pub state_size: u32,
    pub n_groups: u32,
    pub conv_kernel_size: u32,
    /// `conv_kernel_size` (HF/JAX layout) or `conv_kernel_size - 1`
    /// (vLLM/llama.cpp layout).
    pub conv_width: u32,
    pub conv_dtype: DType,
    pub ssm_dtype: DType,
    pub device: Device,
    pub device_index: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config::mamba2_130m()
    }
}

impl Config {
    /// Mamba2-130m: 24 layers, d_model 768, expand 2, head_dim 64, state
    /// 128, one group, kernel 4; one slot; conv bf16, ssm f32; width K.
    pub const fn mamba2_130m() -> Self {
        Config {
            num_layers: 24,
            num_slots: 1,
            intermediate_size: 1536,
            num_heads: 24,
            head_dim: 64,
            state_size: 128,
            n_groups: 1,
            conv_kernel_size: 4,
            conv_width: 4,
            conv_dtype: DType::BF16,
            ssm_dtype: DType::F32,
            device: Device::Cpu,
            device_index: 0,
        }
    }

    /// Mamba2-2.7B: 64 layers, intermediate 5120, 80 heads of 64, state
    /// 128, one group, kernel 4; otherwise as `mamba2_130m`.
    pub const fn mamba2_2_7b() -> Self {
        Config { num_layers: 64, intermediate_size: 5120, num_heads: 80, ..Config::mamba2_130m() }
    }

    /// The Mamba2 layers of a published model (`Preset`), with the defaults
    /// of [`Config::mamba2_130m`] for everything else (one slot, conv bf16,
    /// ssm f32, width K).
    pub const fn preset(p: Preset) -> Self {
        // state-spaces/mamba2-*: expand 2, head_dim 64, d_state 128, one
        // group, d_conv 4; intermediate = 2 * d_model, heads = that / 64.
        let (layers, d_model) = match p {
            Preset::Mamba2_130m => (24, 768),
            Preset::Mamba2_370m => (48, 1024),
            Preset::Mamba2_780m => (48, 1536),
            Preset::Mamba2_1_3b => (48, 2048),
            Preset::Mamba2_2_7b => (64, 2560),
        };
        Config {
            num_layers: layers,
            intermediate_size: 2 * d_model,
            num_heads: 2 * d_model / 64,
            ..Config::mamba2_130m()
        }
    }

    /// Checks every invariant and derives the byte counts. The message of
    /// an `InvalidConfig` error names the offending field.
    pub fn shape(&self) -> Result<Shape> {
        let fields = [
            ("num_layers", self.num_layers),
            ("num_slots", self.num_slots),
            ("intermediate_size", self.intermediate_size),
            ("num_heads", self.num_heads),
            ("head_dim", self.head_dim),
            ("state_size", self.state_size),
            ("n_groups", self.n_groups),
            ("conv_kernel_size", self.conv_kernel_size),
            ("conv_width", self.conv_width),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(invalid(format!("{name} must be > 0")));
            }
        }
        if self.num_slots > i32::MAX as u32 {
            return Err(invalid(format!("num_slots = {} exceeds INT32_MAX: slot indices are int32_t", self.num_slots)));
        }
        if u64::from(self.intermediate_size) != u64::from(self.num_heads) * u64::from(self.head_dim) {
            return Err(invalid(format!(
                "intermediate_size ({}) must equal num_heads * head_dim ({} * {})",
                self.intermediate_size, self.num_heads, self.head_dim
            )));
        }
        if !self.num_heads.is_multiple_of(self.n_groups) {
            return Err(invalid(format!("n_groups ({}) must divide num_heads ({})", self.n_groups, self.num_heads)));
        }
        if self.conv_kernel_size < 2 {
            return Err(invalid(format!("conv_kernel_size must be >= 2, got {}", self.conv_kernel_size)));
        }
        if self.conv_width != self.conv_kernel_size && self.conv_width != self.conv_kernel_size - 1 {
            return Err(invalid(format!(
                "conv_width ({}) must be conv_kernel_size ({}) or conv_kernel_size - 1",
                self.conv_width, self.conv_kernel_size
            )));
        }
        if self.device_index < 0 {
            return Err(invalid(format!("device_index must be >= 0, got {}", self.device_index)));
        }

        let overflow = |what: &str| invalid(format!("{what}: byte count overflows"));
        let conv_dim = u64::from(self.n_groups)
            .checked_mul(2 * u64::from(self.state_size))
            .and_then(|g| g.checked_add(u64::from(self.intermediate_size)))
            .ok_or_else(|| overflow("conv_dim"))?;
        let conv_slot_elems = conv_dim.checked_mul(u64::from(self.conv_width)).ok_or_else(|| overflow("conv state"))?;
        let ssm_slot_elems = u64::from(self.num_heads)
            .checked_mul(u64::from(self.head_dim))
            .and_then(|v| v.checked_mul(u64::from(self.state_size)))
            .ok_or_else(|| overflow("ssm state"))?;
        let slots = u64::from(self.num_slots);
        let conv_layer_bytes = conv_slot_elems
            .checked_mul(slots)
            .and_then(|v| v.checked_mul(self.conv_dtype.size() as u64))
            .and_then(round_up_align)
            .ok_or_else(|| overflow("conv layer"))?;
        let ssm_layer_bytes = ssm_slot_elems
            .checked_mul(slots)
            .and_then(|v| v.checked_mul(self.ssm_dtype.size() as u64))
            .and_then(round_up_align)
            .ok_or_else(|| overflow("ssm layer"))?;
        let total_bytes = conv_layer_bytes
            .checked_add(ssm_layer_bytes)
            .and_then(|v| v.checked_mul(u64::from(self.num_layers)))
            .ok_or_else(|| overflow("cache"))?;
        // Every buffer must be addressable as one Rust slice.
        let max = isize::MAX as u64;
        if conv_layer_bytes > max || ssm_layer_bytes > max || total_bytes > max {
            return Err(invalid(format!("cache of {total_bytes} bytes exceeds the address space")));
        }
        Ok(Shape {
            conv_dim: conv_dim as usize,
            conv_width: self.conv_width as usize,
            conv_slot_elems: conv_slot_elems as usize,
            ssm_slot_elems: ssm_slot_elems as usize,
            conv_layer_bytes: conv_layer_bytes as usize,
            ssm_layer_bytes: ssm_layer_bytes as usize,
            total_bytes,
        })
    }
}

fn round_up_align(v: u64) -> Option<u64> {
    v.checked_add(ALIGN as u64 - 1).map(|v| v / ALIGN as u64 * ALIGN as u64)
}

fn invalid(msg: String) -> Error {
    Error::InvalidConfig(msg)
}

/// Sizes derived from a valid `Config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// `intermediate_size + 2 * n_groups * state_size`.
    pub conv_dim: usize,
    pub conv_width: usize,
    /// Elements of one slot's conv window: `conv_dim * conv_width`.
    pub conv_slot_elems: usize,
    /// Elements of one slot's ssm state: `num_heads * head_dim * state_size`.
    pub ssm_slot_elems: usize,
    /// Bytes of one layer's conv buffer (all slots), rounded up to `ALIGN`.
    pub conv_layer_bytes: usize,
    /// Bytes of one layer's ssm buffer (all slots), rounded up to `ALIGN`.
    pub ssm_layer_bytes: usize,
    /// Bytes of all layers' conv and ssm buffers.
    pub total_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_mamba2_130m_and_valid() {
        let s = Config::default().shape().unwrap();
        assert_eq!(s.conv_dim, 1536 + 2 * 128);
        assert_eq!(s.ssm_slot_elems, 24 * 64 * 128);
        assert_eq!(s.total_bytes, 24 * ((1792 * 4 * 2) as u64 + 24 * 64 * 128 * 4));
    }

    #[test]
    fn each_invariant_is_checked_and_named() {
        let ok = Config::mamba2_2_7b();
        let cases: Vec<(Config, &str)> = vec![
            (Config { num_layers: 0, ..ok }, "num_layers"),
            (Config { state_size: 0, ..ok }, "state_size"),
            (Config { intermediate_size: 5000, ..ok }, "intermediate_size"),
            (Config { n_groups: 3, ..ok }, "n_groups"),
            (Config { conv_kernel_size: 1, conv_width: 1, ..ok }, "conv_kernel_size"),
            (Config { conv_width: 2, ..ok }, "conv_width"),
            (Config { conv_width: 5, ..ok }, "conv_width"),
            (Config { num_slots: 1 << 31, ..ok }, "num_slots"),
            (Config { device_index: -1, ..ok }, "device_index"),
        ];
        for (cfg, field) in cases {
            match cfg.shape() {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(field), "{m} should name {field}"),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
        assert!(Config { conv_width: 3, ..ok }.shape().is_ok());
    }

    #[test]
    fn byte_counts_that_overflow_are_rejected_not_wrapped() {
        let cfg = Config {
            num_layers: u32::MAX,
            num_slots: i32::MAX as u32,
            intermediate_size: u32::MAX,
            num_heads: u32::MAX,
            head_dim: 1,
            state_size: u32::MAX,
            n_groups: 1,
            ..Config::default()
        };
        assert!(matches!(cfg.shape(), Err(Error::InvalidConfig(_))));
    }
}
