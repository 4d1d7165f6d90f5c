//! Branch-free f32 math for the kernels' vector loops.

/// e^x in f32 with a relative error below 2e-7 over the whole range (Cephes
/// `expf` polynomial). Saturates: below -87.3 it returns ~1e-38 instead of
/// a subnormal; above 88.3, ~2e38 instead of infinity. NaN propagates.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n without a float-to-int conversion (which does not vectorise):
    // adding 2^23 puts the integer n + 127 (in 1..=254) in the low
    // mantissa bits.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0xFF;
    y * f32::from_bits(biased << 23)
}

/// x * sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// log(1 + e^x) as the references compute it: the identity above 20.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    if x <= 20.0 { x.exp().ln_1p() } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_2e7_relative_of_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.3 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn silu_matches_f64() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let want = x as f64 / (1.0 + (-(x as f64)).exp());
            assert!((silu(x) as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3), "{x}");
        }
    }
}
