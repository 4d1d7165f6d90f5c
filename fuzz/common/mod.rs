//! Shared by the fuzz targets and the corpus generator: typed C buffers,
//! the whole-state image of a cache taken through the C ABI, and
//! validators of the snapshot and cache-file formats written from
//! docs/FORMATS.md (not from the library's code), with an independent
//! XXH64. `gen` is the api_sequence target's input (`arbitrary`), `model`
//! the reference model it runs against.

#![allow(dead_code)]

pub mod gen;
pub mod model;

use m2c::*;
use std::ptr;

/// The shared test PRNG (SplitMix64), to expand one input byte into many
/// element values.
pub use m2c_testkit::Rng;

/// An f32 test value from a seed: mostly small multiples of 1/8, sometimes
/// a special value (NaN, infinities, -0, subnormals, values past f16's
/// range), when `specials` is set.
pub fn value(rng: &mut Rng, specials: bool) -> f32 {
    let r = rng.next_u64();
    if specials && r.is_multiple_of(16) {
        const SPECIAL: [f32; 8] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40, 65504.0, 1e30, 7e-6];
        return SPECIAL[((r >> 8) % 8) as usize];
    }
    ((r >> 16) % 255) as f32 / 8.0 - 15.875
}

// ------------------------------------------------------------------
// Dtypes
// ------------------------------------------------------------------

/// The shared test element type of a C dtype code (codes past f16 are
/// treated as f16, as the fuzz model sizes them).
pub fn elem(d: u32) -> m2c_testkit::Elem {
    match d {
        M2C_DTYPE_F32 => m2c_testkit::Elem::F32,
        M2C_DTYPE_BF16 => m2c_testkit::Elem::BF16,
        _ => m2c_testkit::Elem::F16,
    }
}

pub fn dtype_size(d: u32) -> usize {
    elem(d).size()
}

/// Element `i` of `bytes` (dtype `d`) as f32.
pub fn load(d: u32, bytes: &[u8], i: usize) -> f32 {
    elem(d).load(bytes, i)
}

/// Stores `v` as element `i` of `bytes` (dtype `d`), rounding to nearest
/// even (the `half` crate's conversions).
pub fn store(d: u32, bytes: &mut [u8], i: usize, v: f32) {
    elem(d).store(bytes, i, v)
}

/// Converts element `i` of `src` (dtype `sd`) into element `j` of `dst`
/// (dtype `dd`): the bits are copied when the dtypes agree, otherwise the
/// value goes through f32.
pub fn convert_elem(sd: u32, src: &[u8], i: usize, dd: u32, dst: &mut [u8], j: usize) {
    if sd == dd {
        let n = dtype_size(sd);
        dst[j * n..(j + 1) * n].copy_from_slice(&src[i * n..(i + 1) * n]);
    } else {
        store(dd, dst, j, load(sd, src, i));
    }
}

fn is_nan(d: u32, bytes: &[u8], i: usize) -> bool {
    load(d, bytes, i).is_nan()
}

/// Element-wise equality of two buffers of dtype `d`: equal bits, or both
/// NaN (NaN payloads are not part of the contract when converting).
pub fn same_values(d: u32, a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    if a.len() != b.len() {
        return Some(0);
    }
    let n = dtype_size(d);
    (0..a.len() / n).find(|&i| a[i * n..(i + 1) * n] != b[i * n..(i + 1) * n] && !(is_nan(d, a, i) && is_nan(d, b, i)))
}

// ------------------------------------------------------------------
// C buffers
// ------------------------------------------------------------------

/// Caller memory for one C buffer argument: 8-byte aligned storage, plus
/// an optional byte offset (to pass a misaligned pointer).
pub struct CBuf {
    mem: Vec<u64>,
    pub off: usize,
    pub bytes: usize,
}

impl CBuf {
    /// `bytes` usable bytes (at least 8 allocated so a pointer exists),
    /// filled with 0xA5 (a pattern to see whether an output was written).
    pub fn new(bytes: usize, off: usize) -> CBuf {
        let words = (bytes + off).div_ceil(8).max(1);
        let mut b = CBuf { mem: vec![0; words], off, bytes };
        b.all_mut().fill(0xA5);
        b
    }
    fn all_mut(&mut self) -> &mut [u8] {
        // SAFETY: the Vec<u64> owns mem.len() * 8 initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr().cast::<u8>(), self.mem.len() * 8) }
    }
    pub fn slice(&self) -> &[u8] {
        // SAFETY: off + bytes <= mem.len() * 8 by construction.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().cast::<u8>().add(self.off), self.bytes) }
    }
    pub fn slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr().cast::<u8>().add(self.off), self.bytes) }
    }
    pub fn ptr(&self) -> *const std::ffi::c_void {
        // SAFETY: inside the allocation.
        unsafe { self.mem.as_ptr().cast::<u8>().add(self.off).cast() }
    }
    pub fn mut_ptr(&mut self) -> *mut std::ffi::c_void {
        // SAFETY: inside the allocation.
        unsafe { self.mem.as_mut_ptr().cast::<u8>().add(self.off).cast() }
    }
    /// Fills `n` elements of dtype `d` with values from `seed`.
    pub fn fill(&mut self, d: u32, n: usize, seed: u64, specials: bool) {
        let mut rng = Rng::new(seed);
        let d = if d <= M2C_DTYPE_F16 { d } else { M2C_DTYPE_F32 };
        let cap = self.bytes / dtype_size(d);
        let s = self.slice_mut();
        for i in 0..n.min(cap) {
            let v = value(&mut rng, specials);
            store(d, s, i, v);
        }
    }
}

// ------------------------------------------------------------------
// Caches through the C ABI
// ------------------------------------------------------------------

/// The small shapes the targets use.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub layers: usize,
    pub slots: usize,
    pub inter: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub state: usize,
    pub groups: usize,
    pub k: usize,
    pub w: usize,
    pub cdt: u32,
    pub sdt: u32,
}

impl Shape {
    pub fn dim(&self) -> usize {
        self.inter + 2 * self.groups * self.state
    }
    pub fn cper(&self) -> usize {
        self.dim() * self.w
    }
    pub fn sper(&self) -> usize {
        self.heads * self.head_dim * self.state
    }
    pub fn cbytes(&self) -> usize {
        self.cper() * dtype_size(self.cdt)
    }
    pub fn sbytes(&self) -> usize {
        self.sper() * dtype_size(self.sdt)
    }
    pub fn payload(&self) -> usize {
        self.layers * (self.cbytes() + self.sbytes())
    }
    pub fn snapshot_size(&self) -> usize {
        72 + self.payload() + 8
    }
    pub fn file_size(&self) -> usize {
        64 + 16 * self.slots + self.slots * self.payload() + 8
    }
    pub fn config(&self) -> m2c_config {
        let mut c = std::mem::MaybeUninit::<m2c_config>::zeroed();
        // SAFETY: valid storage for one config.
        unsafe { m2c_config_init(c.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut c = unsafe { c.assume_init() };
        c.num_layers = self.layers as u32;
        c.num_slots = self.slots as u32;
        c.intermediate_size = self.inter as u32;
        c.num_heads = self.heads as u32;
        c.head_dim = self.head_dim as u32;
        c.state_size = self.state as u32;
        c.n_groups = self.groups as u32;
        c.conv_kernel_size = self.k as u32;
        c.conv_width = self.w as u32;
        c.conv_dtype = self.cdt;
        c.ssm_dtype = self.sdt;
        c
    }
    /// The shape of a config whose dtypes are valid (None otherwise).
    pub fn from_config(c: &m2c_config) -> Option<Shape> {
        if c.conv_dtype > M2C_DTYPE_F16 || c.ssm_dtype > M2C_DTYPE_F16 {
            return None;
        }
        Some(Shape {
            layers: c.num_layers as usize,
            slots: c.num_slots as usize,
            inter: c.intermediate_size as usize,
            heads: c.num_heads as usize,
            head_dim: c.head_dim as usize,
            state: c.state_size as usize,
            groups: c.n_groups as usize,
            k: c.conv_kernel_size as usize,
            w: c.conv_width as usize,
            cdt: c.conv_dtype,
            sdt: c.ssm_dtype,
        })
    }
    pub fn fingerprint(&self) -> [u8; 40] {
        let f = [self.layers, self.inter, self.heads, self.head_dim, self.state, self.groups, self.k, self.w]
            .map(|v| v as u32);
        let mut out = [0u8; 40];
        for (i, v) in f.iter().chain([self.cdt, self.sdt].iter()).enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

pub fn create(shape: &Shape) -> *mut m2c_cache {
    let cfg = shape.config();
    let mut h = ptr::null_mut();
    // SAFETY: valid pointers.
    let s = unsafe { m2c_create(&cfg, &mut h) };
    assert_eq!(s, M2C_STATUS_OK, "m2c_create failed: {}", last_error());
    h
}

pub fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(m2c_last_error()) }.to_string_lossy().into_owned()
}

/// Every byte of state (per layer: conv of all slots, ssm of all slots),
/// every position, and the number of acquired slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub conv: Vec<Vec<u8>>,
    pub ssm: Vec<Vec<u8>>,
    pub pos: Vec<u64>,
    pub in_use: u32,
}

fn view_bytes(t: &m2c_tensor) -> &'static [u8] {
    let n: u64 = t.shape[..t.ndim as usize].iter().product();
    let bytes = n as usize * dtype_size(t.dtype);
    // SAFETY: the view describes this many live bytes of the cache, and
    // no other thread uses the cache while a target runs.
    unsafe { std::slice::from_raw_parts(t.data.cast::<u8>(), bytes) }
}

/// The storage of `layer` as (conv, ssm) byte slices, through the views.
pub fn views(cache: *mut m2c_cache, layer: usize) -> (&'static [u8], &'static [u8]) {
    let mut cv = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    let mut sv = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    // SAFETY: live handle, valid out pointers.
    unsafe {
        assert_eq!(m2c_conv_view(cache, layer as u32, cv.as_mut_ptr()), M2C_STATUS_OK, "{}", last_error());
        assert_eq!(m2c_ssm_view(cache, layer as u32, sv.as_mut_ptr()), M2C_STATUS_OK, "{}", last_error());
        (view_bytes(&cv.assume_init()), view_bytes(&sv.assume_init()))
    }
}

/// Layer `l`'s ring windows (`raw`, the view's bytes: per slot `[W][dim]`)
/// rearranged oldest first (`[dim][W]` per slot), as the model keeps them,
/// from the heads m2c_conv_heads reports.
fn oldest_first(cache: *mut m2c_cache, shape: &Shape, l: usize, raw: &[u8]) -> Vec<u8> {
    let mut heads = vec![0u32; shape.slots];
    // SAFETY: live handle, `heads` holds num_slots entries.
    assert_eq!(unsafe { m2c_conv_heads(cache, l as u32, heads.as_mut_ptr(), heads.len()) }, M2C_STATUS_OK);
    let (dim, w, es) = (shape.dim(), shape.w, dtype_size(shape.cdt));
    let mut out = vec![0u8; raw.len()];
    for (s, &h) in heads.iter().enumerate() {
        assert!((h as usize) < w, "head {h} of slot {s} is past the window");
        let base = s * shape.cbytes();
        for c in 0..dim {
            for k in 0..w {
                let j = (h as usize + k) % w;
                let (from, to) = (base + (j * dim + c) * es, base + (c * w + k) * es);
                out[to..to + es].copy_from_slice(&raw[from..from + es]);
            }
        }
    }
    out
}

pub fn image(cache: *mut m2c_cache, shape: &Shape) -> Image {
    let mut im = Image { conv: vec![], ssm: vec![], pos: vec![], in_use: 0 };
    let mut layout = 99;
    // SAFETY: live handle, valid out pointer.
    assert_eq!(unsafe { m2c_get_conv_layout(cache, &mut layout) }, M2C_STATUS_OK);
    for l in 0..shape.layers {
        let (c, s) = views(cache, l);
        im.conv.push(if layout == M2C_CONV_LAYOUT_RING { oldest_first(cache, shape, l, c) } else { c.to_vec() });
        im.ssm.push(s.to_vec());
    }
    for s in 0..shape.slots {
        let mut p = 0u64;
        // SAFETY: live handle, valid out pointer.
        assert_eq!(unsafe { m2c_position(cache, s as i32, &mut p) }, M2C_STATUS_OK);
        im.pos.push(p);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { m2c_slots_in_use(cache, &mut im.in_use) }, M2C_STATUS_OK);
    im
}

/// Fills every slot of every layer with values from `seed` (exact in every
/// dtype) and gives slot s the position `seed * 100 + s`.
pub fn fill(cache: *mut m2c_cache, shape: &Shape, seed: u64) {
    let n = shape.slots;
    for l in 0..shape.layers {
        let mut c = CBuf::new(n * shape.cper() * 4, 0);
        c.fill(M2C_DTYPE_F32, n * shape.cper(), seed * 31 + l as u64, false);
        let mut s = CBuf::new(n * shape.sper() * 4, 0);
        s.fill(M2C_DTYPE_F32, n * shape.sper(), seed * 37 + l as u64, false);
        // SAFETY: live handle, buffers of the stated lengths.
        unsafe {
            assert_eq!(
                m2c_set_conv(cache, l as u32, ptr::null(), n, c.ptr(), M2C_DTYPE_F32, n * shape.cper()),
                M2C_STATUS_OK
            );
            assert_eq!(
                m2c_update_ssm(cache, l as u32, ptr::null(), n, s.ptr(), M2C_DTYPE_F32, n * shape.sper()),
                M2C_STATUS_OK
            );
        }
    }
    for s in 0..n as i32 {
        // SAFETY: live handle.
        assert_eq!(unsafe { m2c_advance(cache, &s, 1, (seed * 100) as u32 + s as u32) }, M2C_STATUS_OK);
    }
}

// ------------------------------------------------------------------
// The formats (docs/FORMATS.md), written independently of the library
// ------------------------------------------------------------------

/// XXH64 with seed 0, from the algorithm's specification.
pub fn xxh64(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
    }
    fn merge(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    let rd64 = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap());
    let rd32 = |b: &[u8]| u64::from(u32::from_le_bytes(b[..4].try_into().unwrap()));
    let len = data.len() as u64;
    let mut p = data;
    let mut h;
    if p.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        while p.len() >= 32 {
            for (i, vi) in v.iter_mut().enumerate() {
                *vi = round(*vi, rd64(&p[i * 8..]));
            }
            p = &p[32..];
        }
        h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for vi in v {
            h = merge(h, vi);
        }
    } else {
        h = P5;
    }
    h = h.wrapping_add(len);
    while p.len() >= 8 {
        h = (h ^ round(0, rd64(p))).rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        p = &p[8..];
    }
    if p.len() >= 4 {
        h = (h ^ rd32(p).wrapping_mul(P1)).rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        p = &p[4..];
    }
    for &b in p {
        h = (h ^ u64::from(b).wrapping_mul(P5)).rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// XXH64x8 from its definition in docs/FORMATS.md: the eight lanes
/// de-interleaved and hashed one by one, then the tail and the length.
pub fn xxh64x8(d: &[u8]) -> u64 {
    let stripes = d.len() / 64;
    let mut out = Vec::with_capacity(80);
    for l in 0..8 {
        let lane: Vec<u8> = (0..stripes).flat_map(|s| d[64 * s + 8 * l..64 * s + 8 * l + 8].to_vec()).collect();
        out.extend_from_slice(&xxh64(&lane).to_le_bytes());
    }
    out.extend_from_slice(&xxh64(&d[stripes * 64..]).to_le_bytes());
    out.extend_from_slice(&(d.len() as u64).to_le_bytes());
    xxh64(&out)
}

/// The checksum a slot snapshot of format 2 ends with (docs/FORMATS.md):
/// XXH64 of the 72-byte header and the XXH64x8 digests of the payload's
/// 1 MiB chunks. `body` is everything before the checksum.
fn v2_checksum(body: &[u8]) -> u64 {
    let mut list = body[..72].to_vec();
    for c in body[72..].chunks(1 << 20) {
        list.extend_from_slice(&xxh64x8(c).to_le_bytes());
    }
    xxh64(&list)
}

/// Whether `b` (at least 80 bytes) is a slot snapshot of format 2 by its
/// magic and version: its checksum is format 2's.
fn is_v2_snapshot(b: &[u8]) -> bool {
    b.len() >= 80 && b[0..8] == *b"M2CSLOT\0" && u32_at(b, 8) == 2
}

/// Rewrites the last 8 bytes as the checksum of the rest (XXH64 for cache
/// files and format-1 snapshots, format 2's for format-2 snapshots), so
/// mutated headers get past the checksum.
pub fn fix_checksum(b: &mut [u8]) {
    if b.len() >= 8 {
        let body = b.len() - 8;
        let h = if is_v2_snapshot(b) { v2_checksum(&b[..body]) } else { xxh64(&b[..body]) };
        b[body..].copy_from_slice(&h.to_le_bytes());
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn checksum_ok(b: &[u8]) -> bool {
    let body = b.len() - 8;
    xxh64(&b[..body]) == u64_at(b, body)
}

/// Whether `b` is a slot snapshot this shape must accept (format 1 or 2).
pub fn valid_snapshot(b: &[u8], sh: &Shape) -> bool {
    let sum_ok = || {
        let body = b.len() - 8;
        if is_v2_snapshot(b) { v2_checksum(&b[..body]) == u64_at(b, body) } else { checksum_ok(b) }
    };
    b.len() == sh.snapshot_size()
        && b[0..8] == *b"M2CSLOT\0"
        && sum_ok()
        && (u32_at(b, 8) == 1 || u32_at(b, 8) == 2)
        && u32_at(b, 12) == 72
        && b[16..56] == sh.fingerprint()
        && u64_at(b, 64) == sh.payload() as u64
}

/// Whether `b` is a cache file a cache of this shape must accept; the
/// reserved field at offset 60 must be 0 (FORMATS.md).
pub fn valid_file(b: &[u8], sh: &Shape) -> bool {
    b.len() == sh.file_size()
        && b[0..8] == *b"M2CCACHE"
        && checksum_ok(b)
        && u32_at(b, 8) == 1
        && u32_at(b, 12) == 64
        && b[16..56] == sh.fingerprint()
        && u32_at(b, 56) as usize == sh.slots
        && u32_at(b, 60) == 0
        && (0..sh.slots).all(|s| u64_at(b, 64 + 16 * s + 8) <= 1)
}

/// A slot snapshot of one slot: `slot_conv[l]` / `slot_ssm[l]` are its
/// bytes in layer l.
pub fn make_snapshot(sh: &Shape, pos: u64, slot_conv: &[&[u8]], slot_ssm: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::with_capacity(sh.snapshot_size());
    b.extend_from_slice(b"M2CSLOT\0");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&72u32.to_le_bytes());
    b.extend_from_slice(&sh.fingerprint());
    b.extend_from_slice(&pos.to_le_bytes());
    b.extend_from_slice(&(sh.payload() as u64).to_le_bytes());
    for l in 0..sh.layers {
        b.extend_from_slice(slot_conv[l]);
        b.extend_from_slice(slot_ssm[l]);
    }
    b.extend_from_slice(&[0; 8]);
    fix_checksum(&mut b);
    b
}

/// A cache file of a whole image (`acquired[s]`: slot s acquired).
pub fn make_file(sh: &Shape, im: &Image, acquired: &[bool]) -> Vec<u8> {
    let mut b = Vec::with_capacity(sh.file_size());
    b.extend_from_slice(b"M2CCACHE");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&64u32.to_le_bytes());
    b.extend_from_slice(&sh.fingerprint());
    b.extend_from_slice(&(sh.slots as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for (pos, &acq) in im.pos.iter().zip(acquired) {
        b.extend_from_slice(&pos.to_le_bytes());
        b.extend_from_slice(&u64::from(acq).to_le_bytes());
    }
    for l in 0..sh.layers {
        b.extend_from_slice(&im.conv[l]);
        b.extend_from_slice(&im.ssm[l]);
    }
    b.extend_from_slice(&[0; 8]);
    fix_checksum(&mut b);
    b
}

/// The shape of the snapshot_load target's cache (and its seed corpus).
pub const SNAPSHOT_SHAPE: Shape = Shape {
    layers: 2,
    slots: 3,
    inter: 4,
    heads: 2,
    head_dim: 2,
    state: 2,
    groups: 1,
    k: 4,
    w: 4,
    cdt: M2C_DTYPE_BF16,
    sdt: M2C_DTYPE_F32,
};

#[cfg(test)]
mod tests {
    #[test]
    fn xxh64_known_answers() {
        assert_eq!(super::xxh64(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(super::xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
    }
}
