//! Helpers shared by the integration tests: a small deterministic PRNG
//! (no external crates) and dtype rounding written independently of the
//! library.

#![allow(dead_code)]

use half::{bf16, f16};
use m2c::DType;

/// SplitMix64: deterministic, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn coin(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// Rounds an f32 to bf16 precision, nearest even, by bit manipulation
/// (independent of the `half` crate the library uses). Finite inputs only.
pub fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    let bias = 0x7FFF + ((b >> 16) & 1);
    f32::from_bits(b.wrapping_add(bias) & 0xFFFF_0000)
}

/// Rounds to f16 precision, nearest even. Values stay within f16's normal
/// range in these tests; computed in f64 by scaling so the rounding is
/// done by the FPU, not by the library's code path.
pub fn round_f16(x: f32) -> f32 {
    if x == 0.0 {
        return x;
    }
    let e = (x.abs() as f64).log2().floor() as i32;
    let e = e.max(-14); // subnormal spacing below 2^-14
    let ulp = 2f64.powi(e - 10);
    let q = x as f64 / ulp;
    // round half to even
    let r = q.round();
    let r = if (q - q.trunc()).abs() == 0.5 { 2.0 * (q / 2.0).round() } else { r };
    (r * ulp) as f32
}

/// What storing `x` in `dtype` keeps.
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::BF16 => round_bf16(x),
        DType::F16 => round_f16(x),
    }
}

/// A typed owned buffer, for feeding the core's `Slice` inputs.
#[derive(Clone, Debug)]
pub enum Buf {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Buf {
    pub fn from_f32(dtype: DType, v: &[f32]) -> Buf {
        match dtype {
            DType::F32 => Buf::F32(v.to_vec()),
            DType::BF16 => Buf::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::F16 => Buf::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        }
    }
    pub fn zeros(dtype: DType, n: usize) -> Buf {
        Buf::from_f32(dtype, &vec![0.0; n])
    }
    pub fn slice(&self) -> m2c::Slice<'_> {
        match self {
            Buf::F32(v) => m2c::Slice::F32(v),
            Buf::BF16(v) => m2c::Slice::BF16(v),
            Buf::F16(v) => m2c::Slice::F16(v),
        }
    }
    pub fn slice_mut(&mut self) -> m2c::SliceMut<'_> {
        match self {
            Buf::F32(v) => m2c::SliceMut::F32(v),
            Buf::BF16(v) => m2c::SliceMut::BF16(v),
            Buf::F16(v) => m2c::SliceMut::F16(v),
        }
    }
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Buf::F32(v) => v.clone(),
            Buf::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Buf::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}
