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

/// Published models whose Mamba2 layer shapes [`Config::preset`] knows: the
/// pure Mamba2 models, and the Mamba2 layers of hybrids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Mamba2_130m,
    Mamba2_370m,
    Mamba2_780m,
    Mamba2_1_3b,
    Mamba2_2_7b,
    NemotronH8b,
    NemotronNano9bV2,
    Bamba9b,
    Granite4HSmall,
    FalconH1_7b,
    Zamba2_1_2b,
}

impl Preset {
    pub const ALL: [Preset; 11] = [
        Preset::Mamba2_130m,
        Preset::Mamba2_370m,
        Preset::Mamba2_780m,
        Preset::Mamba2_1_3b,
        Preset::Mamba2_2_7b,
        Preset::NemotronH8b,
        Preset::NemotronNano9bV2,
        Preset::Bamba9b,
        Preset::Granite4HSmall,
        Preset::FalconH1_7b,
        Preset::Zamba2_1_2b,
    ];
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
    ///
    /// Sources (num_layers counts the Mamba2 layers only):
    /// - state-spaces/mamba2-*: expand 2, head_dim 64, d_state 128, one
    ///   group, d_conv 4; intermediate = 2 * d_model, heads = that / 64.
    /// - Nemotron-H-8B-Base-8K and Nemotron-Nano-9B-v2: NVIDIA Megatron-LM's
    ///   conf/nvidia/*.sh (hybrid pattern: 24 of 52 and 27 of 56 layers are
    ///   `M`; mamba heads x head dim 128 x 64 and 128 x 80, 8 groups, state
    ///   128); the intermediate size is heads x head dim, not expand x hidden.
    /// - Bamba-9B: IBM's fms-fsdp config and the Bamba release notes (29
    ///   Mamba2 layers of 32; d_model 4096, expand 2, head dim 64, state 128).
    /// - Granite-4.0-H-Small: its config.json (36 Mamba2 layers of 40;
    ///   128 heads of 64, state 128, one group).
    /// - Falcon-H1-7B: its config.json (44 layers, each with a Mamba2 mixer
    ///   beside attention; mamba_d_ssm 3072 = 24 heads of 128, state 256).
    /// - Zamba2-1.2B: its config.json (38 layers, each with a Mamba2 mixer;
    ///   64 heads of 64, state 128).
    ///
    /// Every one has conv kernel 4.
    pub const fn preset(p: Preset) -> Self {
        // (Mamba2 layers, intermediate size, heads, head dim, state, groups)
        let (layers, inter, heads, head_dim, state, groups) = match p {
            Preset::Mamba2_130m => (24, 1536, 24, 64, 128, 1),
            Preset::Mamba2_370m => (48, 2048, 32, 64, 128, 1),
            Preset::Mamba2_780m => (48, 3072, 48, 64, 128, 1),
            Preset::Mamba2_1_3b => (48, 4096, 64, 64, 128, 1),
            Preset::Mamba2_2_7b => (64, 5120, 80, 64, 128, 1),
            Preset::NemotronH8b => (24, 8192, 128, 64, 128, 8),
            Preset::NemotronNano9bV2 => (27, 10240, 128, 80, 128, 8),
            Preset::Bamba9b => (29, 8192, 128, 64, 128, 1),
            Preset::Granite4HSmall => (36, 8192, 128, 64, 128, 1),
            Preset::FalconH1_7b => (44, 3072, 24, 128, 256, 1),
            Preset::Zamba2_1_2b => (38, 4096, 64, 64, 128, 1),
        };
        Config {
            num_layers: layers,
            intermediate_size: inter,
            num_heads: heads,
            head_dim,
            state_size: state,
            n_groups: groups,
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

    #[test]
    fn every_preset_is_a_valid_mamba2_shape() {
        for p in Preset::ALL {
            let c = Config::preset(p);
            c.shape().unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert_eq!(c.num_heads * c.head_dim, c.intermediate_size, "{p:?}");
            assert_eq!(c.num_heads % c.n_groups, 0, "{p:?}");
            assert_eq!((c.conv_kernel_size, c.conv_width, c.num_slots), (4, 4, 1), "{p:?}");
        }
        // The pure Mamba2 models are expand 2 over their d_model, 64-wide heads.
        assert_eq!(Config::preset(Preset::Mamba2_2_7b), Config::mamba2_2_7b());
        assert_eq!(Config::preset(Preset::Mamba2_130m), Config::mamba2_130m());
        // Presets are distinct.
        for (i, a) in Preset::ALL.iter().enumerate() {
            for b in &Preset::ALL[i + 1..] {
                assert_ne!(Config::preset(*a), Config::preset(*b), "{a:?} = {b:?}");
            }
        }
    }
}
