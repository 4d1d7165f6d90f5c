//! Test support shared by m2c's tests, fuzz targets and tools: one seeded
//! PRNG, dtype rounding written independently of the library, the element
//! types as bytes (`Elem`), and the f64 oracle of the kernels (so a test
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

/// The f64 oracle of the two Mamba2 recurrences m2c runs, written from the
/// header's documentation and the public reference implementations
/// (state-spaces/mamba `selective_state_update_ref`, causal-conv1d): the
/// one reference the Rust tests, the fuzz targets and the tools compare the
/// kernels with.
pub mod oracle {
    /// `v * sigmoid(v)`.
    pub fn silu(v: f64) -> f64 {
        v / (1.0 + (-v).exp())
    }

    /// The time step a head uses: `dt + dt_bias`, then softplus (the
    /// identity above 20) when asked, then clamped to `limit`.
    pub fn dt(dt: f64, dt_bias: Option<f64>, softplus: bool, limit: Option<(f64, f64)>) -> f64 {
        let mut v = dt + dt_bias.unwrap_or(0.0);
        if softplus {
            v = if v <= 20.0 { v.exp().ln_1p() } else { v };
        }
        if let Some((lo, hi)) = limit {
            v = v.clamp(lo, hi);
        }
        v
    }

    /// One conv step of one channel: the output for input `x`, given the
    /// channel's window of the last `W` inputs, oldest first, and `K`
    /// weights (oldest tap first). The K-1 newest window entries and `x`
    /// are the taps' inputs.
    pub fn conv_channel(window: &[f64], x: f64, weight: &[f32], bias: Option<f32>, silu_out: bool) -> f64 {
        let k = weight.len();
        let w = window.len();
        let taps = window[w - (k - 1)..].iter().chain(std::iter::once(&x));
        let mut acc: f64 = taps.zip(weight).map(|(a, b)| a * f64::from(*b)).sum();
        if let Some(b) = bias {
            acc += f64::from(b);
        }
        if silu_out { silu(acc) } else { acc }
    }

    /// One SSM step of one head: `state` (`[P][N]`) becomes
    /// `state * exp(dt * a) + dt * x Bᵀ`, and the result is
    /// `y = state C + D x`, gated by `silu(z)` when `z` is given.
    pub fn ssm_head(
        state: &mut [f64],
        x: &[f64],
        dt: f64,
        a: f64,
        b: &[f64],
        c: &[f64],
        d: Option<f64>,
        z: Option<&[f64]>,
    ) -> Vec<f64> {
        let n = b.len();
        let da = (dt * a).exp();
        x.iter()
            .enumerate()
            .map(|(pp, &xv)| {
                let row = &mut state[pp * n..(pp + 1) * n];
                let mut acc = 0f64;
                for nn in 0..n {
                    row[nn] = row[nn] * da + dt * xv * b[nn];
                    acc += row[nn] * c[nn];
                }
                let y = acc + d.map_or(0.0, |d| d * xv);
                match z {
                    Some(z) => y * silu(z[pp]),
                    None => y,
                }
            })
            .collect()
    }
}

/// The element types m2c stores and exchanges, as little-endian bytes
/// (conversions round to nearest even: the `half` crate's). Keyed by this
/// crate's own enum so the tests of every m2c crate can use it; each caller
/// maps its dtype (a core `DType`, a C `M2C_DTYPE_*` code) to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    BF16,
    F16,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::BF16 | Elem::F16 => 2,
        }
    }

    /// Element `i` of `bytes` as f32.
    pub fn load(self, bytes: &[u8], i: usize) -> f32 {
        let two = |b: &[u8]| u16::from_le_bytes([b[i * 2], b[i * 2 + 1]]);
        match self {
            Elem::F32 => f32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes")),
            Elem::BF16 => half::bf16::from_bits(two(bytes)).to_f32(),
            Elem::F16 => half::f16::from_bits(two(bytes)).to_f32(),
        }
    }

    /// Stores `v` as element `i` of `bytes`.
    pub fn store(self, bytes: &mut [u8], i: usize, v: f32) {
        match self {
            Elem::F32 => bytes[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes()),
            Elem::BF16 => bytes[i * 2..i * 2 + 2].copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes()),
            Elem::F16 => bytes[i * 2..i * 2 + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
        }
    }

    /// `v` as bytes of this type.
    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; v.len() * self.size()];
        for (i, &x) in v.iter().enumerate() {
            self.store(&mut out, i, x);
        }
        out
    }

    /// Bytes of this type as f32 values.
    pub fn decode(self, b: &[u8]) -> Vec<f32> {
        (0..b.len() / self.size()).map(|i| self.load(b, i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_and_round_like_the_independent_rounding() {
        let mut rng = Rng::new(7);
        let v = rng.vec(1000, 4.0);
        assert_eq!(Elem::F32.decode(&Elem::F32.encode(&v)), v);
        for (e, round) in [(Elem::BF16, round_bf16 as fn(f32) -> f32), (Elem::F16, round_f16)] {
            let back = e.decode(&e.encode(&v));
            let want: Vec<f32> = v.iter().map(|&x| round(x)).collect();
            assert_eq!(back, want, "{e:?}");
            assert_eq!(e.encode(&back), e.encode(&v), "{e:?}: stored values are exact");
        }
    }
}
