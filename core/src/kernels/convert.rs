//! Branch-free element conversions that the compiler can vectorise inside
//! the kernels' 16-lane loops (the `half` crate's scalar conversions check
//! CPU features per element, which defeats vectorisation). Results are
//! bit-identical to `half`'s, which the tests check exhaustively.

use half::{bf16, f16};

/// An element type the kernels load and store as f32.
pub trait Lane: crate::dtype::Elem {
    fn load(self) -> f32;
    fn store(v: f32) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        v
    }
}

impl Lane for bf16 {
    #[inline(always)]
    fn load(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        bf16::from_bits(f32_to_bf16_bits(v))
    }
}

impl Lane for f16 {
    #[inline(always)]
    fn load(self) -> f32 {
        f16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        f16::from_bits(f32_to_f16_bits(v))
    }
}

/// `s` as a slice of `U` when `T` is `U`.
#[inline(always)]
pub(crate) fn same<T: 'static, U: 'static>(s: &mut [T]) -> Option<&mut [U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: T and U are the same type.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
    } else {
        None
    }
}

/// `s` as a slice of `U` when `T` is `U`.
#[inline(always)]
pub(crate) fn same_ref<T: 'static, U: 'static>(s: &[T]) -> Option<&[U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: T and U are the same type.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
    } else {
        None
    }
}

/// f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
#[inline(always)]
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let rounded = x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16;
    let nan = (x >> 16) | 0x40;
    (if v.is_nan() { nan } else { rounded }) as u16
}

/// f16 bits -> f32, exact (subnormals, infinities and NaNs included).
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7FFF;
    // Rescale exponent and mantissa as a float: subnormals normalise
    // themselves through the multiplication.
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000); // 2^112
    let special = f32::from_bits((em << 13) | 0x7F80_0000);
    let mag = if em >= 0x7C00 { special } else { scaled };
    f32::from_bits(mag.to_bits() | sign)
}

/// f32 -> f16 bits, round to nearest even, overflow to infinity, NaN to a
/// quiet NaN (F. Giesen's `float_to_half_fast3_rtne`, branch-free).
#[inline(always)]
pub fn f32_to_f16_bits(v: f32) -> u16 {
    const F32_INF: u32 = 255 << 23;
    const F16_MAX: u32 = (127 + 16) << 23;
    const DENORM_MAGIC: u32 = ((127 - 15) + (23 - 10) + 1) << 23;
    let bits = v.to_bits();
    let sign = bits & 0x8000_0000;
    let x = bits ^ sign;
    // Overflow / inf / nan.
    let big = if x > F32_INF { 0x7E00 } else { 0x7C00 };
    // Results that are subnormal (or zero) in f16: let the FPU round.
    let denorm = (f32::from_bits(x) + f32::from_bits(DENORM_MAGIC)).to_bits().wrapping_sub(DENORM_MAGIC);
    // Normal results: rebias, round to nearest even.
    let mant_odd = (x >> 13) & 1;
    let normal = x.wrapping_add((15u32.wrapping_sub(127) << 23).wrapping_add(0xFFF)).wrapping_add(mant_odd) >> 13;
    let o = if x >= F16_MAX {
        big
    } else if x < (113 << 23) {
        denorm
    } else {
        normal
    };
    (o | (sign >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<f32> {
        // Every bf16/f16-relevant region: all f16 values and midpoints,
        // random bit patterns, edge cases.
        let mut v: Vec<f32> = (0..=u16::MAX).map(|h| f16::from_bits(h).to_f32()).collect();
        v.extend((0..=u16::MAX).map(|h| f32::from_bits(((h as u32) << 16) | 0x8000)));
        v.extend((0..=u16::MAX).map(|h| f32::from_bits(((h as u32) << 13) | 0x1000)));
        let mut rng = m2c_testkit::Rng::new(0x1234_5678_9ABC_DEF0);
        for _ in 0..200_000 {
            v.push(f32::from_bits(rng.next_u64() as u32));
        }
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            65504.0,
            65520.0,
            65519.99,
            6.0e-8,
            2.9e-8,
            3.0e-8,
        ]);
        v
    }

    #[test]
    fn bf16_rounding_matches_half_on_every_sample() {
        for x in samples() {
            let want = bf16::from_f32(x);
            let got = f32_to_bf16_bits(x);
            if x.is_nan() {
                assert!(bf16::from_bits(got).is_nan());
            } else {
                assert_eq!(got, want.to_bits(), "{x:e} ({:#x})", x.to_bits());
            }
        }
        for h in 0..=u16::MAX {
            let b = bf16::from_bits(h);
            let got = b.load();
            assert!(b.is_nan() && got.is_nan() || got.to_bits() == b.to_f32().to_bits());
        }
    }

    #[test]
    fn f16_conversions_match_half_on_every_sample() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            assert!(want.is_nan() && got.is_nan() || want.to_bits() == got.to_bits(), "{h:#x}");
        }
        for x in samples() {
            let want = f16::from_f32(x);
            let got = f32_to_f16_bits(x);
            if x.is_nan() {
                assert!(f16::from_bits(got).is_nan());
            } else {
                assert_eq!(got, want.to_bits(), "{x:e} ({:#x})", x.to_bits());
            }
        }
    }
}
