//! Reduced-precision checkpoints: a store may keep the SSM states of its
//! checkpoints in bf16 or in int8 with a scale per (head, state channel),
//! to hold 2-4x more prefixes. Conv windows are kept as stored (they are
//! about 2% of a checkpoint). The layout of a checkpoint, per layer: the
//! conv window's storage bytes, then the SSM state:
//!
//! - [`Tier::Full`]: its storage bytes (a restore is bit-exact);
//! - [`Tier::Bf16`]: `[H][P][N]` bf16 (rounded to nearest even), or the
//!   storage bytes when the state is already stored in 2 bytes;
//! - [`Tier::Int8`]: `[H][N]` f32 scales, `scale = max over p of |s| / 127`,
//!   then `[H][P][N]` int8 `round(s / scale)`; a restore gives
//!   `q * scale` rounded to the storage dtype (non-finite values do not
//!   survive).
//!
//! All integers and floats little-endian.

use crate::config::Config;
use crate::dtype::DType;
use crate::error::Result;
use half::{bf16, f16};

/// The precision a store keeps its checkpoints' SSM states in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tier {
    #[default]
    Full,
    Bf16,
    Int8,
}

/// Sizes of one layer's parts.
struct Parts {
    conv: usize,
    ssm: usize,
    h: usize,
    p: usize,
    n: usize,
    ssm_dtype: DType,
}

fn parts(cfg: &Config) -> Result<Parts> {
    let s = cfg.shape()?;
    Ok(Parts {
        conv: s.conv_slot_elems * cfg.conv_dtype.size(),
        ssm: s.ssm_slot_elems * cfg.ssm_dtype.size(),
        h: cfg.num_heads as usize,
        p: cfg.head_dim as usize,
        n: cfg.state_size as usize,
        ssm_dtype: cfg.ssm_dtype,
    })
}

impl Tier {
    /// Bytes of one layer's SSM state at this tier.
    fn ssm_bytes(self, x: &Parts) -> usize {
        match self {
            Tier::Full => x.ssm,
            Tier::Bf16 => x.h * x.p * x.n * 2,
            Tier::Int8 => x.h * x.n * 4 + x.h * x.p * x.n,
        }
    }

    /// Bytes of one checkpoint of a cache of `cfg` at this tier.
    pub fn checkpoint_bytes(self, cfg: &Config) -> Result<u64> {
        let x = parts(cfg)?;
        Ok((x.conv + self.ssm_bytes(&x)) as u64 * u64::from(cfg.num_layers))
    }

    /// A full checkpoint's bytes (the layout of `slot_export`) at this tier,
    /// into `out` (`checkpoint_bytes` long).
    pub fn encode(self, cfg: &Config, full: &[u8], out: &mut [u8]) -> Result<()> {
        let x = parts(cfg)?;
        let (fl, tl) = (x.conv + x.ssm, x.conv + self.ssm_bytes(&x));
        let mut vals = vec![0f32; x.h * x.p * x.n];
        for (src, dst) in full.chunks_exact(fl).zip(out.chunks_exact_mut(tl)) {
            dst[..x.conv].copy_from_slice(&src[..x.conv]);
            let (state, to) = (&src[x.conv..], &mut dst[x.conv..]);
            match self {
                Tier::Full => to.copy_from_slice(state),
                Tier::Bf16 if x.ssm_dtype.size() == 2 => to.copy_from_slice(state),
                Tier::Bf16 => {
                    read_f32(x.ssm_dtype, state, &mut vals);
                    for (v, b) in vals.iter().zip(to.chunks_exact_mut(2)) {
                        b.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
                    }
                }
                Tier::Int8 => {
                    read_f32(x.ssm_dtype, state, &mut vals);
                    let (scales, q) = to.split_at_mut(x.h * x.n * 4);
                    for hh in 0..x.h {
                        let head = &vals[hh * x.p * x.n..(hh + 1) * x.p * x.n];
                        for nn in 0..x.n {
                            let m = (0..x.p).fold(0f32, |m, pp| m.max(head[pp * x.n + nn].abs()));
                            let scale = if m.is_finite() { m / 127.0 } else { 0.0 };
                            let at = (hh * x.n + nn) * 4;
                            scales[at..at + 4].copy_from_slice(&scale.to_le_bytes());
                            for pp in 0..x.p {
                                let v = head[pp * x.n + nn];
                                let qv = if scale > 0.0 { (v / scale).round().clamp(-127.0, 127.0) } else { 0.0 };
                                q[(hh * x.p + pp) * x.n + nn] = qv as i8 as u8;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The inverse of `encode`: a full checkpoint's bytes into `full`.
    pub fn decode(self, cfg: &Config, data: &[u8], full: &mut [u8]) -> Result<()> {
        let x = parts(cfg)?;
        let (fl, tl) = (x.conv + x.ssm, x.conv + self.ssm_bytes(&x));
        let mut vals = vec![0f32; x.h * x.p * x.n];
        for (src, dst) in data.chunks_exact(tl).zip(full.chunks_exact_mut(fl)) {
            dst[..x.conv].copy_from_slice(&src[..x.conv]);
            let (from, state) = (&src[x.conv..], &mut dst[x.conv..]);
            match self {
                Tier::Full => state.copy_from_slice(from),
                Tier::Bf16 if x.ssm_dtype.size() == 2 => state.copy_from_slice(from),
                Tier::Bf16 => {
                    for (v, b) in vals.iter_mut().zip(from.chunks_exact(2)) {
                        *v = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                    }
                    write_f32(x.ssm_dtype, &vals, state);
                }
                Tier::Int8 => {
                    let (scales, q) = from.split_at(x.h * x.n * 4);
                    for hh in 0..x.h {
                        for pp in 0..x.p {
                            for nn in 0..x.n {
                                let at = (hh * x.n + nn) * 4;
                                let scale = f32::from_le_bytes(scales[at..at + 4].try_into().expect("4 bytes"));
                                let i = (hh * x.p + pp) * x.n + nn;
                                vals[i] = f32::from(q[i] as i8) * scale;
                            }
                        }
                    }
                    write_f32(x.ssm_dtype, &vals, state);
                }
            }
        }
        Ok(())
    }
}

/// Storage bytes of `dtype` as f32.
fn read_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::BF16 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        DType::F16 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
    }
}

/// f32 values as storage bytes of `dtype` (rounded to nearest even).
fn write_f32(dtype: DType, vals: &[f32], bytes: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (v, b) in vals.iter().zip(bytes.chunks_exact_mut(4)) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::BF16 => {
            for (v, b) in vals.iter().zip(bytes.chunks_exact_mut(2)) {
                b.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        DType::F16 => {
            for (v, b) in vals.iter().zip(bytes.chunks_exact_mut(2)) {
                b.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
    }
}
