//! Helpers shared by the core's integration tests: typed buffers over the
//! core's dtypes, on top of m2c-testkit's PRNG and rounding.

#![allow(dead_code)]

use half::{bf16, f16};
use m2c_core::DType;

pub use m2c_testkit::{Rng, round_bf16, round_f16};

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
    pub fn slice(&self) -> m2c_core::Slice<'_> {
        match self {
            Buf::F32(v) => m2c_core::Slice::F32(v),
            Buf::BF16(v) => m2c_core::Slice::BF16(v),
            Buf::F16(v) => m2c_core::Slice::F16(v),
        }
    }
    pub fn slice_mut(&mut self) -> m2c_core::SliceMut<'_> {
        match self {
            Buf::F32(v) => m2c_core::SliceMut::F32(v),
            Buf::BF16(v) => m2c_core::SliceMut::BF16(v),
            Buf::F16(v) => m2c_core::SliceMut::F16(v),
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
