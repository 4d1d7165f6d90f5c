//! Element types the cache stores and exchanges, and conversion between
//! them. Narrowing conversions round to nearest, ties to even (the `half`
//! crate's conversions); widening is exact.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// A supported element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The lower-case name used in messages and bench output.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }

    /// The dtype's code in snapshot and file headers (docs/FORMATS.md):
    /// part of the formats, never renumbered.
    pub const fn format_code(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::BF16 => 1,
            DType::F16 => 2,
        }
    }
}

/// A scalar type that can be stored in the cache.
pub trait Elem: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const DTYPE: DType;
    const ZERO: Self;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// The typed slice inside `s`, if `s` holds this type.
    fn of(s: Slice<'_>) -> Option<&[Self]>;
    /// The typed slice inside `s`, if `s` holds this type.
    fn of_mut(s: SliceMut<'_>) -> Option<&mut [Self]>;
    /// Wraps a typed slice into the dtype-tagged `Slice`.
    fn wrap(s: &[Self]) -> Slice<'_>;
    /// Wraps a typed slice into the dtype-tagged `SliceMut`.
    fn wrap_mut(s: &mut [Self]) -> SliceMut<'_>;
    /// Converts to another element type; a plain copy of the bits when
    /// `D == Self` (so NaN payloads survive and no rounding code runs).
    #[inline(always)]
    fn cast<D: Elem>(self) -> D {
        if std::any::TypeId::of::<Self>() == std::any::TypeId::of::<D>() {
            // SAFETY: Self and D are the same type.
            unsafe { std::mem::transmute_copy::<Self, D>(&self) }
        } else {
            D::from_f32(self.to_f32())
        }
    }
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    fn of(s: Slice<'_>) -> Option<&[Self]> {
        match s {
            Slice::F32(s) => Some(s),
            _ => None,
        }
    }
    fn of_mut(s: SliceMut<'_>) -> Option<&mut [Self]> {
        match s {
            SliceMut::F32(s) => Some(s),
            _ => None,
        }
    }
    fn wrap(s: &[Self]) -> Slice<'_> {
        Slice::F32(s)
    }
    fn wrap_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::F32(s)
    }
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for bf16 {
    const DTYPE: DType = DType::BF16;
    fn of(s: Slice<'_>) -> Option<&[Self]> {
        match s {
            Slice::BF16(s) => Some(s),
            _ => None,
        }
    }
    fn of_mut(s: SliceMut<'_>) -> Option<&mut [Self]> {
        match s {
            SliceMut::BF16(s) => Some(s),
            _ => None,
        }
    }
    fn wrap(s: &[Self]) -> Slice<'_> {
        Slice::BF16(s)
    }
    fn wrap_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::BF16(s)
    }
    const ZERO: Self = bf16::ZERO;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl Elem for f16 {
    const DTYPE: DType = DType::F16;
    fn of(s: Slice<'_>) -> Option<&[Self]> {
        match s {
            Slice::F16(s) => Some(s),
            _ => None,
        }
    }
    fn of_mut(s: SliceMut<'_>) -> Option<&mut [Self]> {
        match s {
            SliceMut::F16(s) => Some(s),
            _ => None,
        }
    }
    fn wrap(s: &[Self]) -> Slice<'_> {
        Slice::F16(s)
    }
    fn wrap_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::F16(s)
    }
    const ZERO: Self = f16::ZERO;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// A borrowed, typed, read-only run of elements.
#[derive(Clone, Copy, Debug)]
pub enum Slice<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

/// A borrowed, typed, writable run of elements.
#[derive(Debug)]
pub enum SliceMut<'a> {
    F32(&'a mut [f32]),
    BF16(&'a mut [bf16]),
    F16(&'a mut [f16]),
}

impl<'a> Slice<'a> {
    pub fn dtype(&self) -> DType {
        match self {
            Slice::F32(_) => DType::F32,
            Slice::BF16(_) => DType::BF16,
            Slice::F16(_) => DType::F16,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Slice::F32(s) => s.len(),
            Slice::BF16(s) => s.len(),
            Slice::F16(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The sub-run `range`.
    pub fn sub(&self, range: std::ops::Range<usize>) -> Slice<'a> {
        match *self {
            Slice::F32(s) => Slice::F32(&s[range]),
            Slice::BF16(s) => Slice::BF16(&s[range]),
            Slice::F16(s) => Slice::F16(&s[range]),
        }
    }
}

impl<'a> SliceMut<'a> {
    pub fn dtype(&self) -> DType {
        match self {
            SliceMut::F32(_) => DType::F32,
            SliceMut::BF16(_) => DType::BF16,
            SliceMut::F16(_) => DType::F16,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            SliceMut::F32(s) => s.len(),
            SliceMut::BF16(s) => s.len(),
            SliceMut::F16(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reborrows the sub-run `range`.
    pub fn sub(&mut self, range: std::ops::Range<usize>) -> SliceMut<'_> {
        match self {
            SliceMut::F32(s) => SliceMut::F32(&mut s[range]),
            SliceMut::BF16(s) => SliceMut::BF16(&mut s[range]),
            SliceMut::F16(s) => SliceMut::F16(&mut s[range]),
        }
    }
    /// Sets every element to zero.
    pub fn fill_zero(&mut self) {
        match self {
            SliceMut::F32(s) => s.fill(0.0),
            SliceMut::BF16(s) => s.fill(bf16::ZERO),
            SliceMut::F16(s) => s.fill(f16::ZERO),
        }
    }
}

/// Copies `src` into `dst` element by element, converting the dtype.
/// Same-dtype copies are plain memory copies. Panics if the lengths differ
/// (callers validate lengths first).
pub fn convert(src: Slice<'_>, dst: SliceMut<'_>) {
    assert_eq!(src.len(), dst.len(), "convert: length mismatch");
    match (src, dst) {
        (Slice::F32(s), SliceMut::F32(d)) => d.copy_from_slice(s),
        (Slice::BF16(s), SliceMut::BF16(d)) => d.copy_from_slice(s),
        (Slice::F16(s), SliceMut::F16(d)) => d.copy_from_slice(s),
        (Slice::F32(s), SliceMut::BF16(d)) => d.convert_from_f32_slice(s),
        (Slice::F32(s), SliceMut::F16(d)) => d.convert_from_f32_slice(s),
        (Slice::BF16(s), SliceMut::F32(d)) => s.convert_to_f32_slice(d),
        (Slice::F16(s), SliceMut::F32(d)) => s.convert_to_f32_slice(d),
        (Slice::BF16(s), SliceMut::F16(d)) => cast_each(s, d),
        (Slice::F16(s), SliceMut::BF16(d)) => cast_each(s, d),
    }
}

fn cast_each<S: Elem, D: Elem>(src: &[S], dst: &mut [D]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.cast();
    }
}

/// Calls `$body` with `$s` bound to the typed slice inside a `Slice` /
/// `SliceMut` value, whatever its dtype: one generic body, three
/// monomorphised copies. Crate-private (`pub(crate) use` below).
macro_rules! with_slice {
    ($kind:ident, $v:expr, $s:ident => $body:expr) => {
        match $v {
            $crate::dtype::$kind::F32($s) => $body,
            $crate::dtype::$kind::BF16($s) => $body,
            $crate::dtype::$kind::F16($s) => $body,
        }
    };
}
pub(crate) use with_slice;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_codes_are_pinned() {
        // Written into every snapshot and file header: never renumbered.
        assert_eq!(DType::ALL.map(DType::format_code), [0, 1, 2]);
    }

    #[test]
    fn narrowing_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between two bf16 values (1 and 1 + 2^-7):
        // ties go to the even mantissa, 1.0.
        let halfway = 1.0f32 + 2f32.powi(-8);
        let mut out = [bf16::ZERO; 1];
        convert(Slice::F32(&[halfway]), SliceMut::BF16(&mut out));
        assert_eq!(out[0].to_f32(), 1.0);
        // Just above halfway rounds up.
        let above = f32::from_bits(halfway.to_bits() + 1);
        convert(Slice::F32(&[above]), SliceMut::BF16(&mut out));
        assert_eq!(out[0].to_f32(), 1.0 + 2f32.powi(-7));
        let mut h = [f16::ZERO; 1];
        convert(Slice::F32(&[1.0 + 2f32.powi(-11)]), SliceMut::F16(&mut h));
        assert_eq!(h[0].to_f32(), 1.0);
    }

    #[test]
    fn widening_is_exact_for_every_bf16_and_f16_bit_pattern() {
        let b: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let mut f = vec![0f32; b.len()];
        convert(Slice::BF16(&b), SliceMut::F32(&mut f));
        for (x, y) in b.iter().zip(&f) {
            assert!(x.is_nan() && y.is_nan() || f64::from(x.to_f32()) == f64::from(*y));
        }
        let h: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        convert(Slice::F16(&h), SliceMut::F32(&mut f));
        for (x, y) in h.iter().zip(&f) {
            assert!(x.is_nan() && y.is_nan() || x.to_f64() == f64::from(*y));
        }
    }
}
