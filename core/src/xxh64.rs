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

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline(always)]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
}

/// XXH64x8 (docs/FORMATS.md, snapshot format 2): the XXH64 (seed 0) of
/// eight interleaved lanes, combined. Lane `l` is the 8-byte word `l` of
/// every whole 64-byte stripe of `data`, in order; the bytes after the last
/// whole stripe are the tail. The digest is the XXH64 of the eight lanes'
/// XXH64s, the tail's XXH64 and `data.len()`, each as 8 little-endian
/// bytes. It runs eight XXH64 streams side by side (four accumulators
/// each, 32 in all), so a vector unit computes it several times faster
/// than one XXH64 stream; every lane is plain XXH64, so any XXH64 library
/// can check it.
pub fn xxh64x8(data: &[u8]) -> u64 {
    let whole = data.len() / 256 * 256;
    let mut h = Xxh64x8::new();
    h.update_blocks(&data[..whole]);
    h.finish(&data[whole..])
}

/// Streaming [`xxh64x8`]: whole 256-byte blocks in any number of pieces,
/// then the rest.
#[derive(Clone, Debug)]
pub struct Xxh64x8 {
    /// acc[a][l]: accumulator a of lane l.
    acc: [[u64; 8]; 4],
    /// Bytes absorbed (whole blocks).
    len: usize,
}

impl Default for Xxh64x8 {
    fn default() -> Self {
        Xxh64x8::new()
    }
}

impl Xxh64x8 {
    pub fn new() -> Self {
        // As XXH64 starts its accumulators (seed 0), in every lane.
        Xxh64x8 { acc: [[P1.wrapping_add(P2); 8], [P2; 8], [0; 8], [0u64.wrapping_sub(P1); 8]], len: 0 }
    }

    /// Absorbs `data`, whole 256-byte blocks (four stripes: one 32-byte
    /// XXH64 stripe per lane). Panics on a partial block.
    pub fn update_blocks(&mut self, data: &[u8]) {
        assert!(data.len().is_multiple_of(256), "update_blocks takes whole 256-byte blocks");
        blocks_of(data, &mut self.acc);
        self.len += data.len();
    }

    /// Copies `src` into `dst` and absorbs `src` (whole 256-byte blocks),
    /// in one pass: each block is hashed from the registers it is copied
    /// through, so the hashing overlaps the memory traffic of the copy.
    /// `stream` writes `dst` with streaming stores (its lines are not
    /// read first), as [`crate::buffer::copy_streaming`] does. The same
    /// bytes and digest as a copy followed by [`Xxh64x8::update_blocks`].
    pub fn copy_blocks(&mut self, dst: &mut [u8], src: &[u8], stream: bool) {
        assert!(src.len().is_multiple_of(256), "copy_blocks takes whole 256-byte blocks");
        assert_eq!(dst.len(), src.len(), "copy_blocks: lengths differ");
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::isa::isa() == crate::kernels::isa::Isa::Avx512 && avx512dq() {
            // SAFETY: AVX-512F and DQ detected; equal lengths, whole blocks.
            unsafe { avx512::copy_blocks(dst, src, &mut self.acc, stream) };
            self.len += src.len();
            return;
        }
        crate::buffer::copy_state(dst, src, stream);
        self.update_blocks(src);
    }

    /// The digest of everything absorbed followed by `rest` (any length).
    pub fn finish(&self, rest: &[u8]) -> u64 {
        let whole = rest.len() / 256 * 256;
        let mut me = self.clone();
        if whole > 0 {
            me.update_blocks(&rest[..whole]);
        }
        let rest = &rest[whole..];
        let n = me.len + rest.len();
        let lane_len = (n / 64 * 8) as u64;
        let mut out = [0u8; 80];
        for l in 0..8 {
            let mut h = if me.len > 0 {
                let v = [me.acc[0][l], me.acc[1][l], me.acc[2][l], me.acc[3][l]];
                let mut h = v[0]
                    .rotate_left(1)
                    .wrapping_add(v[1].rotate_left(7))
                    .wrapping_add(v[2].rotate_left(12))
                    .wrapping_add(v[3].rotate_left(18));
                for x in v {
                    h = (h ^ round(0, x)).wrapping_mul(P1).wrapping_add(P4);
                }
                h
            } else {
                P5
            };
            h = h.wrapping_add(lane_len);
            // The lane's words after its last whole 32-byte XXH64 stripe.
            for stripe in rest.chunks_exact(64) {
                let w = u64::from_le_bytes(stripe[8 * l..8 * l + 8].try_into().expect("8 bytes"));
                h ^= round(0, w);
                h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            }
            h ^= h >> 33;
            h = h.wrapping_mul(P2);
            h ^= h >> 29;
            h = h.wrapping_mul(P3);
            h ^= h >> 32;
            out[8 * l..8 * l + 8].copy_from_slice(&h.to_le_bytes());
        }
        out[64..72].copy_from_slice(&xxh64(&rest[rest.len() / 64 * 64..]).to_le_bytes());
        out[72..80].copy_from_slice(&(n as u64).to_le_bytes());
        xxh64(&out)
    }
}

/// [`Xxh64x8`] over a stream of any split: pieces are gathered into whole
/// blocks (a piece's own whole blocks are hashed in place).
#[derive(Clone, Debug, Default)]
pub struct Xxh64x8Stream {
    h: Xxh64x8,
    carry: Vec<u8>,
}

impl Xxh64x8Stream {
    pub fn new() -> Self {
        Xxh64x8Stream { h: Xxh64x8::new(), carry: Vec::with_capacity(256) }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let take = (256 - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < 256 {
                return;
            }
            self.h.update_blocks(&self.carry);
            self.carry.clear();
        }
        let whole = data.len() / 256 * 256;
        self.h.update_blocks(&data[..whole]);
        self.carry.extend_from_slice(&data[whole..]);
    }

    /// Copies `src` into `dst` (streaming stores when `stream`) and
    /// absorbs it: [`Xxh64x8::copy_blocks`] for its whole blocks.
    pub fn copy_update(&mut self, dst: &mut [u8], src: &[u8], stream: bool) {
        assert_eq!(dst.len(), src.len(), "copy_update: lengths differ");
        let mut at = 0;
        if !self.carry.is_empty() {
            at = (256 - self.carry.len()).min(src.len());
            dst[..at].copy_from_slice(&src[..at]);
            self.update(&src[..at]);
        }
        let whole = (src.len() - at) / 256 * 256;
        self.h.copy_blocks(&mut dst[at..at + whole], &src[at..at + whole], stream);
        at += whole;
        dst[at..].copy_from_slice(&src[at..]);
        self.update(&src[at..]);
    }

    pub fn digest(&self) -> u64 {
        self.h.finish(&self.carry)
    }
}

/// The XXH64 rounds of whole 256-byte blocks (four stripes: one 32-byte
/// XXH64 stripe per lane): word `l` of stripe `a` of a block goes to
/// accumulator `a` of lane `l`.
fn blocks_of(data: &[u8], acc: &mut [[u64; 8]; 4]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::isa::isa() == crate::kernels::isa::Isa::Avx512 && avx512dq() {
        // SAFETY: AVX-512F and DQ detected.
        unsafe { avx512::blocks(data, acc) };
        return;
    }
    for block in data.chunks_exact(256) {
        for (a, stripe) in block.chunks_exact(64).enumerate() {
            for (l, w) in stripe.chunks_exact(8).enumerate() {
                acc[a][l] = round(acc[a][l], u64::from_le_bytes(w.try_into().expect("8 bytes")));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512dq() -> bool {
    static DQ: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DQ.get_or_init(|| std::arch::is_x86_feature_detected!("avx512dq"))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::blocks_of`]: one zmm per accumulator index, eight lanes.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn blocks(data: &[u8], acc: &mut [[u64; 8]; 4]) {
        // SAFETY: `acc` rows are 8 u64; `data` holds whole 256-byte blocks.
        unsafe {
            let (p1, p2) = (_mm512_set1_epi64(super::P1 as i64), _mm512_set1_epi64(super::P2 as i64));
            let mut v = [0; 4].map(|_| _mm512_setzero_si512());
            for (a, r) in v.iter_mut().enumerate() {
                *r = _mm512_loadu_si512(acc[a].as_ptr().cast());
            }
            for block in data.chunks_exact(256) {
                let p = block.as_ptr();
                // The block a page ahead (see `copy_blocks`).
                for l in 0..4 {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l + 4096).cast());
                }
                for (a, r) in v.iter_mut().enumerate() {
                    let w = _mm512_loadu_si512(p.add(64 * a).cast());
                    *r =
                        _mm512_mullo_epi64(_mm512_rol_epi64::<31>(_mm512_add_epi64(*r, _mm512_mullo_epi64(w, p2))), p1);
                }
            }
            for (a, r) in v.iter().enumerate() {
                _mm512_storeu_si512(acc[a].as_mut_ptr().cast(), *r);
            }
        }
    }

    /// [`super::Xxh64x8::copy_blocks`]: [`blocks`] with a copy of every
    /// block. Plain copies store the registers hashed; streaming ones
    /// need 64-byte aligned stores, so when `dst` is not aligned like
    /// `src`'s blocks its aligned lines are loaded again (from L1) and
    /// streamed, and the bytes before the first and after the last
    /// aligned line are copied plainly.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn copy_blocks(dst: &mut [u8], src: &[u8], acc: &mut [[u64; 8]; 4], stream: bool) {
        let n = src.len();
        let shift = if stream { dst.as_ptr().align_offset(64).min(n) } else { 0 };
        // Whole 64-byte lines of `dst` after `shift` (all of them when
        // `dst` is aligned or the copy is plain).
        let lines = (n - shift) / 64;
        // SAFETY: `acc` rows are 8 u64; `src` and `dst` hold `n` bytes,
        // whole 256-byte blocks; block loads and stores stay below
        // `n`, line `i` spans `shift + 64 i .. shift + 64 (i + 1)`,
        // inside `n` for `i < lines`, and is 64-byte aligned in `dst`.
        unsafe {
            let (p1, p2) = (_mm512_set1_epi64(super::P1 as i64), _mm512_set1_epi64(super::P2 as i64));
            let mut v = [0; 4].map(|_| _mm512_setzero_si512());
            for (a, r) in v.iter_mut().enumerate() {
                *r = _mm512_loadu_si512(acc[a].as_ptr().cast());
            }
            let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
            for b in 0..n / 256 {
                // The block a page ahead: the hardware prefetcher stops at
                // page boundaries, and the hashing leaves the loads fewer
                // cycles to get ahead (one thread: 7.9-8.7 GB/s with this
                // against 6.5-7.4 without). A prefetch past `src` is a hint,
                // never a fault.
                for l in 0..4 {
                    _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(256 * b + 64 * l + 4096).cast());
                }
                for (a, r) in v.iter_mut().enumerate() {
                    let at = 256 * b + 64 * a;
                    let w = _mm512_loadu_si512(s.add(at).cast());
                    if !stream {
                        _mm512_storeu_si512(d.add(at).cast(), w);
                    } else if shift == 0 {
                        _mm512_stream_si512(d.add(at).cast(), w);
                    } else if 4 * b + a < lines {
                        let at = shift + at;
                        _mm512_stream_si512(d.add(at).cast(), _mm512_loadu_si512(s.add(at).cast()));
                    }
                    *r =
                        _mm512_mullo_epi64(_mm512_rol_epi64::<31>(_mm512_add_epi64(*r, _mm512_mullo_epi64(w, p2))), p1);
                }
            }
            for (a, r) in v.iter().enumerate() {
                _mm512_storeu_si512(acc[a].as_mut_ptr().cast(), *r);
            }
            if stream {
                _mm_sfence();
                if shift > 0 {
                    let done = shift + 64 * lines;
                    dst[..shift].copy_from_slice(&src[..shift]);
                    dst[done..].copy_from_slice(&src[done..]);
                }
            }
        }
    }
}

#[cfg(test)]
mod x8_tests {
    use super::*;

    /// The definition, literally: de-interleave the lanes, XXH64 each.
    fn reference(data: &[u8]) -> u64 {
        let stripes = data.len() / 64;
        let mut out = Vec::new();
        for l in 0..8 {
            let lane: Vec<u8> = (0..stripes).flat_map(|s| data[64 * s + 8 * l..64 * s + 8 * l + 8].to_vec()).collect();
            out.extend_from_slice(&xxh64(&lane).to_le_bytes());
        }
        out.extend_from_slice(&xxh64(&data[stripes * 64..]).to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        xxh64(&out)
    }

    #[test]
    fn xxh64x8_is_its_definition_on_every_length_and_instruction_set() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        let mut isas = crate::kernels::isa::available();
        isas.push(crate::kernels::isa::Isa::Generic);
        for isa in isas {
            crate::kernels::isa::FORCE.with(|f| f.set(Some(isa)));
            for len in (0..600).chain([1023, 1024, 1025, 4096, 4999, 5000]) {
                assert_eq!(xxh64x8(&data[..len]), reference(&data[..len]), "{isa:?} length {len}");
            }
        }
        crate::kernels::isa::FORCE.with(|f| f.set(None));
        // Any split through the stream gives the same digest.
        for split in [1usize, 7, 255, 257, 1000] {
            let mut st = Xxh64x8Stream::new();
            for piece in data.chunks(split) {
                st.update(piece);
            }
            assert_eq!(st.digest(), reference(&data), "pieces of {split}");
        }
        // Streaming in pieces of whole blocks gives the same digest.
        for split in [0, 256, 1024, 4096] {
            let mut h = Xxh64x8::new();
            h.update_blocks(&data[..split]);
            h.update_blocks(&data[split..4864]);
            assert_eq!(h.finish(&data[4864..]), reference(&data), "split {split}");
        }
        // Copying while hashing: the same bytes and digest at every
        // alignment of either buffer, length and piece size, streamed
        // or not, on every instruction set.
        for isa in crate::kernels::isa::available() {
            crate::kernels::isa::FORCE.with(|f| f.set(Some(isa)));
            for stream in [false, true] {
                for (doff, soff) in [(0, 0), (16, 0), (1, 3), (63, 64), (64, 7)] {
                    for len in [0, 255, 256, 1000, 4096, 4800] {
                        for piece in [300, 4096, 5000] {
                            let src = &data[soff..soff + len];
                            let mut dst = vec![0xA5u8; len + 200];
                            let mut st = Xxh64x8Stream::new();
                            for (i, p) in src.chunks(piece).enumerate() {
                                let at = doff + i * piece;
                                st.copy_update(&mut dst[at..at + p.len()], p, stream);
                            }
                            let what = format!("{isa:?}, stream {stream}, offsets {doff}/{soff}, {len} in {piece}");
                            assert_eq!(&dst[doff..doff + len], src, "{what}");
                            assert!(dst[..doff].iter().chain(&dst[doff + len..]).all(|&b| b == 0xA5), "{what}");
                            assert_eq!(st.digest(), reference(src), "{what}");
                        }
                    }
                }
            }
        }
        crate::kernels::isa::FORCE.with(|f| f.set(None));
        // Pinned: the format must not change by one byte.
        assert_eq!(xxh64x8(b""), reference(b""));
        assert_eq!(xxh64x8(&data), 0xD2EE_730F_29ED_C338);
    }
}
