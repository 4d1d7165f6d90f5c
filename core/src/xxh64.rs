//! XXH64 with seed 0: the checksum of the snapshot and file formats
//! (docs/FORMATS.md), from the `xxhash-rust` crate. The tests pin it to
//! published vectors and to the C library's value, because the formats must
//! not change by one byte.

/// XXH64 (seed 0) of `data`.
pub fn xxh64(data: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(data, 0)
}

/// XXH64 of `data` with `seed` (the prefix store's key chaining).
pub fn xxh64_seeded(data: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(data, seed)
}

/// Streaming XXH64 (seed 0): `update` in any split gives the same digest
/// as [`xxh64`] of the whole.
#[derive(Clone)]
pub struct Xxh64(xxhash_rust::xxh64::Xxh64);

impl Default for Xxh64 {
    fn default() -> Self {
        Xxh64::new()
    }
}

impl std::fmt::Debug for Xxh64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xxh64").finish_non_exhaustive()
    }
}

impl Xxh64 {
    pub fn new() -> Self {
        Xxh64(xxhash_rust::xxh64::Xxh64::new(0))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn digest(&self) -> u64 {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_vectors() {
        assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc"), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn streaming_in_any_split_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let whole = xxh64(&data);
        // Reference value from the `xxhash` Python package (the C library).
        assert_eq!(whole, 0xB260_5217_30B6_D8D9);
        for split in [0, 1, 7, 31, 32, 33, 64, 100, 999, 1000] {
            let mut h = Xxh64::new();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(h.digest(), whole, "split {split}");
        }
        let mut h = Xxh64::new();
        for b in data.chunks(3) {
            h.update(b);
        }
        assert_eq!(h.digest(), whole);
    }
}
