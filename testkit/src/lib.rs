//! Test support shared by m2c's tests, fuzz targets and tools: one seeded
//! PRNG, and dtype rounding written independently of the library (so a test
//! that compares the library with these helpers compares two
//! implementations). It depends on no m2c crate, so the core's own tests can
//! use it without a dependency cycle.

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
    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
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
