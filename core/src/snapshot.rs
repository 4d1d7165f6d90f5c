//! The snapshot format of one slot and the file format of a whole cache.
//! Both are specified in `docs/FORMATS.md`; this module is the one place
//! that encodes and decodes them. All integers are little-endian; element
//! payloads are the storage dtype's little-endian bytes.

#[cfg(target_endian = "big")]
compile_error!("m2c's snapshot and file formats are little-endian; big-endian hosts are not supported");

use crate::cache::Cache;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::xxh64::xxh64;

/// First 8 bytes of a slot snapshot.
pub(crate) const SLOT_MAGIC: [u8; 8] = *b"M2CSLOT\0";
/// First 8 bytes of a cache file.
pub(crate) const FILE_MAGIC: [u8; 8] = *b"M2CCACHE";
/// The format version both kinds carry; readers refuse other versions.
/// Slot snapshots may also be version 2 ([`SNAPSHOT_V2`]).
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Slot snapshot format 2: format 1's layout, with a checksum computed in
/// parallel pieces (docs/FORMATS.md): the XXH64 of the header and of the
/// [`crate::xxh64::xxh64x8`] digests of the payload's 1 MiB chunks.
pub(crate) const SNAPSHOT_V2: u32 = 2;
/// Payload bytes per chunk of a format-2 checksum.
pub(crate) const V2_CHUNK: usize = 1 << 20;
/// Bytes of the shape fingerprint: ten u32.
pub(crate) const FINGERPRINT_BYTES: usize = 40;
/// Bytes before a slot snapshot's payload.
pub(crate) const SLOT_HEADER_BYTES: usize = 72;
/// Bytes before a cache file's slot table.
pub(crate) const FILE_HEADER_BYTES: usize = 64;
/// Bytes per slot in a cache file's slot table (position, flags).
pub(crate) const SLOT_TABLE_ENTRY_BYTES: usize = 16;
/// Bytes of the trailing checksum.
pub(crate) const CHECKSUM_BYTES: usize = 8;

/// The shape fingerprint: every dimension but the slot count, the conv
/// width and both storage dtypes.
pub fn fingerprint(cfg: &Config) -> [u8; FINGERPRINT_BYTES] {
    let fields = [
        cfg.num_layers,
        cfg.intermediate_size,
        cfg.num_heads,
        cfg.head_dim,
        cfg.state_size,
        cfg.n_groups,
        cfg.conv_kernel_size,
        cfg.conv_width,
        cfg.conv_dtype.format_code(),
        cfg.ssm_dtype.format_code(),
    ];
    let mut out = [0u8; FINGERPRINT_BYTES];
    for (i, f) in fields.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&f.to_le_bytes());
    }
    out
}

const FIELD_NAMES: [&str; 10] = [
    "num_layers",
    "intermediate_size",
    "num_heads",
    "head_dim",
    "state_size",
    "n_groups",
    "conv_kernel_size",
    "conv_width",
    "conv_dtype",
    "ssm_dtype",
];

/// `Err(Incompatible)` naming the first field that differs.
pub fn check_fingerprint(found: &[u8], cfg: &Config) -> Result<()> {
    let want = fingerprint(cfg);
    for (i, name) in FIELD_NAMES.iter().enumerate() {
        let f = u32_at(found, i * 4);
        let w = u32_at(&want, i * 4);
        if f != w {
            return Err(Error::Incompatible(format!(
                "the snapshot was made for {name} = {f}, this cache has {name} = {w}"
            )));
        }
    }
    Ok(())
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes copied and then hashed at a time by `slot_save`: small enough to
/// be hashed from the core's own cache.
const HASH_PIECE: usize = 64 * 1024;

/// Slots at least this large are copied with streaming stores (they do not
/// fit the caches anyway); smaller ones with plain stores, so that a slot
/// restored and then stepped is still in cache.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// The checksum a save feeds ([`Cache::save_range`]): state bytes are
/// copied and absorbed (in one pass where the hash can), gathered ring
/// windows absorbed.
pub(crate) trait SaveHash {
    fn absorb(&mut self, bytes: &[u8]);

    /// Copies `src` into `dst` (streaming when `stream`) and absorbs it.
    fn copy_absorb(&mut self, dst: &mut [u8], src: &[u8], stream: bool) {
        crate::buffer::copy_state(dst, src, stream);
        self.absorb(src);
    }
}

impl SaveHash for crate::xxh64::Xxh64 {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl SaveHash for crate::xxh64::Xxh64x8Stream {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }

    fn copy_absorb(&mut self, dst: &mut [u8], src: &[u8], stream: bool) {
        self.copy_update(dst, src, stream);
    }
}

impl Cache {
    /// Payload bytes of one slot: every layer's conv window then ssm state.
    pub(crate) fn slot_payload_bytes(&self) -> usize {
        payload_bytes(self.config())
    }

    /// Bytes of a snapshot of one slot of this cache.
    pub fn slot_snapshot_size(&self) -> usize {
        SLOT_HEADER_BYTES + self.slot_payload_bytes() + CHECKSUM_BYTES
    }

    /// Writes a snapshot of `slot` into the start of `buf` and returns the
    /// bytes written. `buf` must hold at least `slot_snapshot_size()`.
    pub fn slot_save(&self, slot: i32, buf: &mut [u8]) -> Result<usize> {
        let s = self.check_slot(slot)?;
        let size = self.slot_snapshot_size();
        if buf.len() < size {
            return Err(Error::ShapeMismatch(format!(
                "buffer of {} bytes is smaller than the snapshot ({size} bytes)",
                buf.len()
            )));
        }
        let buf = &mut buf[..size];
        if self.snapshot_format == SNAPSHOT_V2 {
            return self.slot_save_v2(s, buf);
        }
        let payload = self.slot_payload_bytes();
        let (head, rest) = buf.split_at_mut(SLOT_HEADER_BYTES);
        head.copy_from_slice(&snapshot_header(self.config(), FORMAT_VERSION, self.position(slot)?, payload));
        // One pass: the checksum is the same XXH64 stream as over the
        // whole buffer, fed piece by piece as the pieces are copied.
        let mut h = crate::xxh64::Xxh64::new();
        h.update(head);
        self.save_range(s, 0, &mut rest[..payload], &mut h);
        rest[payload..].copy_from_slice(&h.digest().to_le_bytes());
        Ok(size)
    }

    /// Copies bytes `from..from + dst.len()` of slot `s`'s payload into
    /// `dst`, feeding them to `hash` in order. State is copied and hashed
    /// by [`SaveHash::copy_absorb`] (format 2 in one pass, each block
    /// hashed from the registers it is copied through; format 1 from cache
    /// right after each 64 KiB copy) and, for slots of `STREAM_MIN_BYTES`
    /// or more, written with streaming stores (no line of `dst` is read);
    /// ring conv windows are gathered into `dst` and hashed from there.
    fn save_range(&self, s: usize, from: usize, dst: &mut [u8], hash: &mut impl SaveHash) {
        let stream = self.slot_payload_bytes() >= STREAM_MIN_BYTES;
        self.payload_segments(s, from, dst, |out, src| match src {
            Some(src) => hash.copy_absorb(out, src, stream),
            None => hash.absorb(out),
        });
    }

    /// The snapshot format `slot_save` writes and `slot_digest` reports
    /// (1, the default, or 2; both always load).
    pub fn snapshot_format(&self) -> u32 {
        self.snapshot_format
    }

    /// Sets [`Cache::snapshot_format`]: 1 or 2, else `InvalidArg`.
    pub fn set_snapshot_format(&mut self, format: u32) -> Result<()> {
        if format != FORMAT_VERSION && format != SNAPSHOT_V2 {
            return Err(Error::InvalidArg(format!("format = {format}: snapshot formats are 1 and 2")));
        }
        self.snapshot_format = format;
        Ok(())
    }

    /// Format 2: every 1 MiB chunk of the payload is copied and hashed by
    /// one task ([`Cache::save_range`]), chunks in parallel; the checksum
    /// hashes the header and the chunk digests.
    fn slot_save_v2(&self, s: usize, buf: &mut [u8]) -> Result<usize> {
        let size = buf.len();
        let (head, payload) = buf.split_at_mut(SLOT_HEADER_BYTES);
        let payload = &mut payload[..size - SLOT_HEADER_BYTES - CHECKSUM_BYTES];
        let mut digests = crate::buffer::try_vec(payload.len().div_ceil(V2_CHUNK), 0u64, "chunk digests")?;
        let run = |(c, (dst, d)): (usize, (&mut [u8], &mut u64))| {
            let mut h = crate::xxh64::Xxh64x8Stream::new();
            self.save_range(s, c * V2_CHUNK, dst, &mut h);
            *d = h.digest();
        };
        if payload.len() >= crate::cache::PAR_MIN_BYTES && crate::pool::threads() > 1 {
            use rayon::prelude::*;
            crate::pool::install(|| {
                payload.par_chunks_mut(V2_CHUNK).zip(digests.par_iter_mut()).enumerate().for_each(run)
            });
        } else {
            payload.chunks_mut(V2_CHUNK).zip(digests.iter_mut()).enumerate().for_each(run);
        }
        head.copy_from_slice(&snapshot_header(self.config(), SNAPSHOT_V2, self.position(s as i32)?, payload.len()));
        let sum = v2_sum(head, &digests);
        buf[size - CHECKSUM_BYTES..].copy_from_slice(&sum.to_le_bytes());
        Ok(size)
    }

    /// Walks bytes `from..from + dst.len()` of slot `s`'s payload in
    /// segments of at most 64 KiB, in order, calling `f(out, src)` with
    /// each segment's part of `dst`: `src` is the segment's bytes in the
    /// cache, for `f` to copy, or, for ring conv windows, `None`, their
    /// bytes having been gathered into `out` here (oldest first).
    fn payload_segments(&self, s: usize, from: usize, dst: &mut [u8], mut f: impl FnMut(&mut [u8], Option<&[u8]>)) {
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let per = conv_row + ssm_row;
        let mut at = 0;
        while at < dst.len() {
            let off = from + at;
            let (l, within) = (off / per, off % per);
            let out = &mut dst[at..];
            let n = if within < conv_row {
                let n = out.len().min(conv_row - within).min(HASH_PIECE);
                if self.heads.get(l).is_none() {
                    f(&mut out[..n], Some(&self.slot_bytes(l as u32, s)[0][within..within + n]));
                } else {
                    self.conv_range_out(l, s, within, &mut out[..n]);
                    f(&mut out[..n], None);
                }
                n
            } else {
                let w = within - conv_row;
                let n = out.len().min(ssm_row - w).min(HASH_PIECE);
                f(&mut out[..n], Some(&self.slot_bytes(l as u32, s)[1][w..w + n]));
                n
            };
            at += n;
        }
    }

    /// Bytes `from..from + dst.len()` of slot `s`'s ring conv window in
    /// layer `l`, oldest first (any byte range: partial channels included).
    fn conv_range_out(&self, l: usize, s: usize, from: usize, dst: &mut [u8]) {
        let chan = self.slot_byte_sizes().0 / self.shape().conv_dim;
        let mut at = 0;
        while at < dst.len() {
            let (c, skip) = ((from + at) / chan, (from + at) % chan);
            if skip == 0 && dst.len() - at >= chan {
                let whole = (dst.len() - at) / chan * chan;
                self.conv_bytes_out(l, s, c, &mut dst[at..at + whole]);
                at += whole;
            } else {
                // A partial channel: at most one at each end of a range.
                let mut one = vec![0u8; chan];
                self.conv_bytes_out(l, s, c, &mut one);
                let n = (chan - skip).min(dst.len() - at);
                dst[at..at + n].copy_from_slice(&one[skip..skip + n]);
                at += n;
            }
        }
    }

    /// Copies the storage bytes of `slot` (every layer's conv window then
    /// SSM state, as in a snapshot's payload) into `out`, which must hold
    /// exactly that many, and returns its position. Layers are copied in
    /// parallel when the slot is large.
    pub fn slot_export(&self, slot: i32, out: &mut [u8]) -> Result<u64> {
        let s = self.check_slot(slot)?;
        let per = self.slot_payload_bytes() / self.layers.len();
        self.check_payload(out.len())?;
        let (conv_row, _) = self.slot_byte_sizes();
        let copy = |(l, dst): (usize, &mut [u8])| {
            let (conv, ssm) = dst.split_at_mut(conv_row);
            self.conv_bytes_out(l, s, 0, conv);
            ssm.copy_from_slice(self.slot_bytes(l as u32, s)[1]);
        };
        if out.len() >= crate::cache::PAR_MIN_BYTES && self.layers.len() >= 2 && crate::pool::threads() > 1 {
            use rayon::prelude::*;
            crate::pool::install(|| out.par_chunks_mut(per).enumerate().for_each(copy));
        } else {
            out.chunks_mut(per).enumerate().for_each(copy);
        }
        self.position(slot)
    }

    /// Replaces the state of `slot` with bytes from [`Cache::slot_export`]
    /// of a cache of the same shape, and its position with `position`.
    pub fn slot_import(&mut self, slot: i32, data: &[u8], position: u64) -> Result<()> {
        let s = self.check_slot(slot)?;
        self.check_payload(data.len())?;
        let per = self.slot_payload_bytes() / self.layers.len();
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let geom = self.conv_geometry();
        let stream = data.len() >= STREAM_MIN_BYTES;
        let copy =
            |((layer, heads), src): ((&mut crate::cache::Layer, Option<&mut crate::buffer::ZeroedVec<u32>>), &[u8])| {
                Cache::conv_bytes_in(layer, heads, s, &src[..conv_row], geom);
                crate::buffer::copy_state(
                    &mut layer.ssm.bytes_mut()[s * ssm_row..(s + 1) * ssm_row],
                    &src[conv_row..],
                    stream,
                );
            };
        // Each layer with its ring heads (none in the oldest-first layout).
        let mut heads = self.heads.iter_mut();
        let layers: Vec<_> = self.layers.iter_mut().map(|l| (l, heads.next())).collect();
        if data.len() >= crate::cache::PAR_MIN_BYTES && layers.len() >= 2 && crate::pool::threads() > 1 {
            use rayon::prelude::*;
            crate::pool::install(|| layers.into_par_iter().zip(data.par_chunks(per)).for_each(copy));
        } else {
            layers.into_iter().zip(data.chunks(per)).for_each(copy);
        }
        self.set_position(s, position);
        self.spec_drop(s);
        Ok(())
    }

    /// The checksum `slot_save` would write for `slot` (XXH64 of the
    /// snapshot's header and payload): a digest of its state and position
    /// for both ends of a transfer. Reads the state once; allocates
    /// nothing state-sized.
    pub fn slot_digest(&self, slot: i32) -> Result<u64> {
        let s = self.check_slot(slot)?;
        if self.snapshot_format == SNAPSHOT_V2 {
            return self.slot_digest_v2(s);
        }
        let payload = self.slot_payload_bytes();
        let mut h = crate::xxh64::Xxh64::new();
        h.update(&snapshot_header(self.config(), FORMAT_VERSION, self.position(slot)?, payload));
        let mut scratch = crate::buffer::try_vec(HASH_PIECE, 0u8, "a digest piece")?;
        self.hash_payload_range(s, 0, payload, &mut scratch, |b| h.update(b));
        Ok(h.digest())
    }

    /// Feeds bytes `from..from + len` of slot `s`'s payload to `f` in
    /// order, straight from the cache; only ring conv windows are gathered
    /// (oldest first) into `scratch` (`HASH_PIECE` bytes) on the way.
    fn hash_payload_range(&self, s: usize, from: usize, len: usize, scratch: &mut [u8], mut f: impl FnMut(&[u8])) {
        let mut at = 0;
        while at < len {
            let n = HASH_PIECE.min(len - at);
            self.payload_segments(s, from + at, &mut scratch[..n], |out, src| f(src.unwrap_or(out)));
            at += n;
        }
    }

    /// [`Cache::slot_digest`] in format 2: chunks in parallel, hashed
    /// straight from the cache (one 64 KiB scratch per thread for ring
    /// windows).
    fn slot_digest_v2(&self, s: usize) -> Result<u64> {
        let payload = self.slot_payload_bytes();
        let chunks = payload.div_ceil(V2_CHUNK);
        let par = payload >= crate::cache::PAR_MIN_BYTES && crate::pool::threads() > 1;
        let threads = if par { crate::pool::install(rayon::current_num_threads) } else { 1 };
        let mut scratch = Vec::new();
        for _ in 0..threads.min(chunks) {
            scratch.push(crate::buffer::try_vec(HASH_PIECE, 0u8, "a digest piece")?);
        }
        let scratch = std::sync::Mutex::new(scratch);
        let mut digests = crate::buffer::try_vec(chunks, 0u64, "chunk digests")?;
        let run = |(c, d): (usize, &mut u64)| {
            let spare = scratch.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut buf = spare.unwrap_or_else(|| vec![0u8; HASH_PIECE]);
            let mut h = crate::xxh64::Xxh64x8Stream::new();
            let n = V2_CHUNK.min(payload - c * V2_CHUNK);
            self.hash_payload_range(s, c * V2_CHUNK, n, &mut buf, |b| h.update(b));
            *d = h.digest();
            scratch.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        };
        if par {
            use rayon::prelude::*;
            crate::pool::install(|| digests.par_iter_mut().enumerate().for_each(run));
        } else {
            digests.iter_mut().enumerate().for_each(run);
        }
        let head = snapshot_header(self.config(), SNAPSHOT_V2, self.position(s as i32)?, payload);
        Ok(v2_sum(&head, &digests))
    }

    /// Copies `layer`'s conv window (or SSM state) of slot `s` into its
    /// place in `data`, laid out as [`Cache::slot_export`] lays out a slot.
    pub(crate) fn export_layer_row(&self, layer: u32, conv: bool, s: usize, data: &mut [u8]) {
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let at = layer as usize * (conv_row + ssm_row) + if conv { 0 } else { conv_row };
        if conv {
            self.conv_bytes_out(layer as usize, s, 0, &mut data[at..at + conv_row]);
        } else {
            data[at..at + ssm_row].copy_from_slice(self.slot_bytes(layer, s)[1]);
        }
    }

    fn check_payload(&self, len: usize) -> Result<()> {
        if len != self.slot_payload_bytes() {
            return Err(Error::ShapeMismatch(format!(
                "{len} bytes, but a slot of this cache holds {}",
                self.slot_payload_bytes()
            )));
        }
        Ok(())
    }

    /// Validates a whole snapshot, then replaces `slot`'s state and position
    /// with it. Nothing changes unless every check passes.
    /// The checksum pass runs first (nothing is written unless it
    /// matches); the copy then runs over layers in parallel, as
    /// [`Cache::slot_import`].
    pub fn slot_load(&mut self, slot: i32, buf: &[u8]) -> Result<()> {
        self.check_slot(slot)?;
        check_snapshot(self.config(), buf)?;
        let position = u64_at(buf, 56);
        let payload = &buf[SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + self.slot_payload_bytes()];
        self.slot_import(slot, payload, position)
    }
}

/// Bytes of the payload of a slot snapshot of a cache of `cfg`.
pub(crate) fn payload_bytes(cfg: &Config) -> usize {
    let s = cfg.shape().expect("a valid config");
    cfg.num_layers as usize * (s.conv_slot_elems * cfg.conv_dtype.size() + s.ssm_slot_elems * cfg.ssm_dtype.size())
}

/// Bytes of a slot snapshot of a cache of `cfg`.
pub(crate) fn snapshot_size(cfg: &Config) -> usize {
    SLOT_HEADER_BYTES + payload_bytes(cfg) + CHECKSUM_BYTES
}

/// The header of a slot snapshot of a cache of `cfg` with `position` and a
/// payload of `payload_len` bytes.
fn snapshot_header(cfg: &Config, version: u32, position: u64, payload_len: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(SLOT_HEADER_BYTES);
    head.extend_from_slice(&SLOT_MAGIC);
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&(SLOT_HEADER_BYTES as u32).to_le_bytes());
    head.extend_from_slice(&fingerprint(cfg));
    head.extend_from_slice(&position.to_le_bytes());
    head.extend_from_slice(&(payload_len as u64).to_le_bytes());
    head
}

/// The header and the checksum of a slot snapshot of a cache of `cfg`
/// holding `payload` and `position`: the snapshot is `header, payload,
/// checksum`.
pub(crate) fn snapshot_parts(cfg: &Config, position: u64, payload: &[u8]) -> (Vec<u8>, [u8; CHECKSUM_BYTES]) {
    let head = snapshot_header(cfg, FORMAT_VERSION, position, payload.len());
    let mut h = crate::xxh64::Xxh64::new();
    h.update(&head);
    h.update(payload);
    (head, h.digest().to_le_bytes())
}

/// The format-2 checksum from the header and the chunk digests.
fn v2_sum(head: &[u8], digests: &[u64]) -> u64 {
    let mut h = crate::xxh64::Xxh64::new();
    h.update(head);
    for d in digests {
        h.update(&d.to_le_bytes());
    }
    h.digest()
}

/// The checksum of snapshot `body` (header and payload) in format
/// `version`: format 2's for 2, format 1's (XXH64) for anything else. The
/// chunks of format 2 are hashed in parallel.
fn checksum_of(version: u32, body: &[u8]) -> Result<u64> {
    if version != SNAPSHOT_V2 {
        return Ok(xxh64(body));
    }
    let (head, payload) = body.split_at(SLOT_HEADER_BYTES);
    let mut digests = crate::buffer::try_vec(payload.len().div_ceil(V2_CHUNK), 0u64, "chunk digests")?;
    if payload.len() >= crate::cache::PAR_MIN_BYTES && crate::pool::threads() > 1 {
        use rayon::prelude::*;
        crate::pool::install(|| {
            payload.par_chunks(V2_CHUNK).zip(digests.par_iter_mut()).for_each(|(c, d)| *d = crate::xxh64::xxh64x8(c))
        });
    } else {
        for (c, d) in payload.chunks(V2_CHUNK).zip(digests.iter_mut()) {
            *d = crate::xxh64::xxh64x8(c);
        }
    }
    Ok(v2_sum(head, &digests))
}

fn known_version(v: u32) -> bool {
    v == FORMAT_VERSION || v == SNAPSHOT_V2
}

/// Checks a whole slot snapshot for a cache of `cfg` (size, magic,
/// checksum, version, shape, layout); its position on success. The
/// payload is `buf[SLOT_HEADER_BYTES..buf.len() - CHECKSUM_BYTES]`.
pub(crate) fn check_snapshot(cfg: &Config, buf: &[u8]) -> Result<u64> {
    let size = snapshot_size(cfg);
    if buf.len() < SLOT_HEADER_BYTES + CHECKSUM_BYTES {
        return Err(Error::Corrupt(format!("{} bytes is too short for a snapshot", buf.len())));
    }
    if buf[0..8] != SLOT_MAGIC {
        return Err(Error::Corrupt("not an m2c slot snapshot (bad magic)".into()));
    }
    // The size a snapshot of this cache has is known: a buffer of
    // another size is refused before it is hashed. Its (unverified)
    // header tells a snapshot of another version or shape from a
    // truncated or padded one.
    if buf.len() != size {
        let version = u32_at(buf, 8);
        if !known_version(version) && version != 0 {
            return Err(Error::Incompatible(format!(
                "snapshot format version {version}; this library reads versions 1 and 2"
            )));
        }
        let described = (SLOT_HEADER_BYTES as u64 + CHECKSUM_BYTES as u64).checked_add(u64_at(buf, 64));
        if known_version(version) && described == Some(buf.len() as u64) {
            check_fingerprint(&buf[16..56], cfg)?;
        }
        return Err(Error::Corrupt(format!(
            "snapshot of {} bytes, but a snapshot of this cache is {size} bytes (truncated, padded or damaged)",
            buf.len()
        )));
    }
    let body = buf.len() - CHECKSUM_BYTES;
    let version = u32_at(buf, 8);
    if checksum_of(version, &buf[..body])? != u64_at(buf, body) {
        return Err(Error::Corrupt("checksum mismatch: the snapshot is truncated or damaged".into()));
    }
    if !known_version(version) {
        return Err(Error::Incompatible(format!(
            "snapshot format version {version}; this library reads versions 1 and 2"
        )));
    }
    check_fingerprint(&buf[16..56], cfg)?;
    if u32_at(buf, 12) as usize != SLOT_HEADER_BYTES
        || u64_at(buf, 64) != payload_bytes(cfg) as u64
        || buf.len() != size
    {
        return Err(Error::Corrupt(format!(
            "snapshot of {} bytes does not have the layout its header declares ({size} expected)",
            buf.len()
        )));
    }
    Ok(u64_at(buf, 56))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::{DType, Slice};
    use crate::selection::Slots;

    fn cache(cfg: Config) -> Cache {
        let mut c = Cache::new(cfg).unwrap();
        let n = cfg.num_slots as usize;
        for l in 0..cfg.num_layers {
            let conv: Vec<f32> = (0..n * c.shape().conv_slot_elems).map(|i| 0.5 + i as f32).collect();
            let ssm: Vec<f32> = (0..n * c.shape().ssm_slot_elems).map(|i| -(i as f32) * 0.25).collect();
            c.set_conv(l, Slots::Dense(n), Slice::F32(&conv)).unwrap();
            c.set_ssm(l, Slots::Dense(n), Slice::F32(&ssm)).unwrap();
        }
        c.advance(Slots::List(&[0]), 17).unwrap();
        c
    }

    fn small() -> Config {
        Config {
            num_layers: 2,
            num_slots: 2,
            intermediate_size: 4,
            num_heads: 2,
            head_dim: 2,
            state_size: 4,
            n_groups: 1,
            conv_dtype: DType::F16,
            ..Config::default()
        }
    }

    fn snap(c: &Cache, slot: i32) -> Vec<u8> {
        let mut b = vec![0u8; c.slot_snapshot_size()];
        c.slot_save(slot, &mut b).unwrap();
        b
    }

    /// A shape whose payload (about 2.1 MB) spans three format-2 chunks.
    fn chunky() -> Config {
        Config {
            num_layers: 14,
            num_slots: 3,
            intermediate_size: 512,
            num_heads: 8,
            head_dim: 64,
            state_size: 72,
            n_groups: 1,
            conv_kernel_size: 4,
            conv_width: 3,
            conv_dtype: DType::BF16,
            ssm_dtype: DType::F32,
            ..Config::default()
        }
    }

    #[test]
    fn format_2_is_format_1_with_the_chunked_checksum_and_both_load() {
        for ring in [false, true] {
            let mut c = cache(chunky());
            if ring {
                c.set_conv_layout(crate::ring::ConvLayout::Ring).unwrap();
                // Move the heads off zero.
                let x = vec![1.5f32; c.shape().conv_dim];
                c.update_conv(2, Slots::List(&[0]), Slice::F32(&x)).unwrap();
            }
            let v1 = snap(&c, 0);
            assert!(c.set_snapshot_format(3).is_err() && c.snapshot_format() == 1);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    c.set_snapshot_format(2).unwrap();
                    let v2 = snap(&c, 0);
                    // The same layout and payload; version 2; the checksum
                    // as docs/FORMATS.md defines it.
                    let body = v2.len() - CHECKSUM_BYTES;
                    assert_eq!(u32_at(&v2, 8), 2);
                    assert_eq!(v2[12..body], v1[12..body], "ring {ring}");
                    let mut h = crate::xxh64::Xxh64::new();
                    h.update(&v2[..SLOT_HEADER_BYTES]);
                    let chunks: Vec<&[u8]> = v2[SLOT_HEADER_BYTES..body].chunks(1 << 20).collect();
                    assert_eq!(chunks.len(), 3);
                    for ch in chunks {
                        h.update(&crate::xxh64::xxh64x8(ch).to_le_bytes());
                    }
                    assert_eq!(u64_at(&v2, body), h.digest());
                    assert_eq!(c.slot_digest(0).unwrap(), h.digest());
                    // Both formats load, whatever this cache writes.
                    let mut d = cache(chunky());
                    d.reset(Slots::Dense(3)).unwrap();
                    d.slot_load(2, &v2).unwrap();
                    d.slot_load(1, &v1).unwrap();
                    assert_eq!(snap(&d, 2)[12..body], v1[12..body]);
                    assert_eq!(snap(&d, 1), v1);
                    // A flipped bit in any chunk, or in the header, is caught.
                    for at in [10, SLOT_HEADER_BYTES + 5, SLOT_HEADER_BYTES + (1 << 20) + 3, body - 1, body + 2] {
                        let mut bad = v2.clone();
                        bad[at] ^= 0x10;
                        assert!(d.slot_load(0, &bad).is_err(), "flip at {at}");
                    }
                    c.set_snapshot_format(1).unwrap();
                    assert_eq!(snap(&c, 0), v1);
                });
            }
        }
    }

    #[test]
    fn slots_past_the_streaming_size_round_trip_in_both_formats() {
        // 7 layers of 80 x 64 x 128 f32: 18.4 MB a slot, so saves and loads
        // take the streaming stores.
        let cfg = Config { num_layers: 7, num_slots: 2, conv_dtype: DType::F32, ..Config::mamba2_2_7b() };
        let mut c = cache(cfg);
        assert!(c.slot_payload_bytes() >= STREAM_MIN_BYTES);
        let mut want = vec![0u8; c.slot_payload_bytes()];
        c.slot_export(0, &mut want).unwrap();
        for format in [1, 2] {
            c.set_snapshot_format(format).unwrap();
            let b = snap(&c, 0);
            assert_eq!(b[SLOT_HEADER_BYTES..b.len() - CHECKSUM_BYTES], want[..], "format {format}");
            c.reset(Slots::List(&[1])).unwrap();
            c.slot_load(1, &b).unwrap();
            let mut got = vec![0u8; want.len()];
            c.slot_export(1, &mut got).unwrap();
            assert!(got == want, "format {format}: the loaded slot differs");
        }
    }

    /// Collects what a save hashes.
    impl SaveHash for Vec<u8> {
        fn absorb(&mut self, bytes: &[u8]) {
            self.extend_from_slice(bytes);
        }
    }

    #[test]
    fn any_payload_range_saves_and_hashes_the_exported_bytes_in_either_layout() {
        for ring in [false, true] {
            let mut c = cache(small());
            if ring {
                c.set_conv_layout(crate::ring::ConvLayout::Ring).unwrap();
                let x = vec![2.5f32; c.shape().conv_dim];
                c.update_conv(1, Slots::List(&[1]), Slice::F32(&x)).unwrap();
            }
            let mut all = vec![0u8; c.slot_payload_bytes()];
            c.slot_export(1, &mut all).unwrap();
            for from in 0..all.len() {
                for len in [0, 1, 3, 7, 16, 33, all.len() - from] {
                    let len = len.min(all.len() - from);
                    // Copied, and fed to the hash in order.
                    let (mut got, mut hashed) = (vec![0u8; len], Vec::new());
                    c.save_range(1, from, &mut got, &mut hashed);
                    assert_eq!(got, all[from..from + len], "ring {ring}, {from} + {len}");
                    assert_eq!(hashed, got, "ring {ring}, {from} + {len}");
                    let mut scratch = vec![0u8; HASH_PIECE];
                    hashed.clear();
                    c.hash_payload_range(1, from, len, &mut scratch, |b| hashed.extend_from_slice(b));
                    assert_eq!(hashed, got, "ring {ring}, {from} + {len}: hashed in place");
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_every_byte_flip_is_rejected_and_the_slot_kept() {
        let mut c = cache(small());
        let good = snap(&c, 0);
        let before = snap(&c, 1);
        for len in 0..good.len() {
            let e = c.slot_load(1, &good[..len]).unwrap_err();
            assert!(matches!(e, Error::Corrupt(_)), "truncated to {len}: {e:?}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(c.slot_load(1, &longer).is_err());
        for at in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = good.clone();
                b[at] ^= bit;
                let e = c.slot_load(1, &b).unwrap_err();
                assert!(matches!(e, Error::Corrupt(_)), "flip at {at}: {e:?}");
            }
        }
        assert_eq!(snap(&c, 1), before);
        c.slot_load(1, &good).unwrap();
        assert_eq!(c.position(1).unwrap(), 17);
        assert_eq!(snap(&c, 1)[16..], good[16..]);
    }

    #[test]
    fn a_snapshot_for_another_shape_or_version_is_incompatible() {
        let c = cache(small());
        let good = snap(&c, 0);
        let mut other = cache(Config { conv_width: 3, ..small() });
        let e = other.slot_load(0, &good).unwrap_err();
        assert!(matches!(e, Error::Incompatible(ref m) if m.contains("conv_width")), "{e:?}");
        // A future version with a valid (format 1) checksum.
        let mut v3 = good.clone();
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        let body = v3.len() - 8;
        let sum = xxh64(&v3[..body]);
        v3[body..].copy_from_slice(&sum.to_le_bytes());
        let mut same = cache(small());
        let e = same.slot_load(0, &v3).unwrap_err();
        assert!(matches!(e, Error::Incompatible(ref m) if m.contains("version 3")), "{e:?}");
        // Version 2 with a format-1 checksum is damage.
        let mut v2 = v3.clone();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let sum = xxh64(&v2[..body]);
        v2[body..].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(same.slot_load(0, &v2), Err(Error::Corrupt(_))));
    }

    #[test]
    fn save_refuses_a_small_buffer_and_a_bad_slot() {
        let c = cache(small());
        let mut b = vec![0u8; c.slot_snapshot_size() - 1];
        assert!(matches!(c.slot_save(0, &mut b), Err(Error::ShapeMismatch(_))));
        assert!(b.iter().all(|&x| x == 0));
        let mut b = vec![0u8; c.slot_snapshot_size()];
        assert!(matches!(c.slot_save(2, &mut b), Err(Error::OutOfRange(_))));
        assert!(matches!(c.slot_save(-1, &mut b), Err(Error::OutOfRange(_))));
    }
}
