//! Whole-cache files: crash-safe saves (temporary file, fsync, rename) and
//! loads that validate the entire file before touching the cache, both
//! streaming in bounded memory. The format is in `docs/FORMATS.md`.

use crate::buffer::{try_vec, try_with_capacity};
use crate::cache::Cache;
use crate::config::Config;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::snapshot::*;
use crate::xxh64::Xxh64;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes read or written per I/O call while streaming.
const IO_CHUNK: usize = 1 << 20;

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
thread_local! {
    /// Test-only fault injection: writes fail once this many bytes of the
    /// file have been written on this thread.
    pub(crate) static FAIL_WRITE_AFTER: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// Test-only: truncate the file being loaded to this length between
    /// the validating pass and the copying pass (a file that changes
    /// underneath a load).
    pub(crate) static TRUNCATE_BETWEEN_PASSES: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// Test-only: the second pass of a load reads from a directory (an OS
    /// read error that is not an end of file).
    pub(crate) static FAIL_SECOND_PASS_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Test-only: the save's write buffer cannot be allocated.
    pub(crate) static FAIL_BUFFER_ALLOC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Bytes a save writes before it asks the kernel to start writing them
/// back (`sync_file_range`), so that the disk works while the save goes on
/// and the final fsync waits only for the last of them.
const WRITEBACK_STEP: u64 = 32 << 20;

/// The file writer of a save: it hashes what it writes, gathers small
/// pieces in a buffer allocated (fallibly) before the file was created,
/// writes large ones from where they are, and starts the writeback of
/// every `WRITEBACK_STEP` bytes.
struct FileWriter {
    inner: File,
    buf: Vec<u8>,
    hash: Xxh64,
    written: u64,
    /// Bytes whose writeback was started.
    started: u64,
}

impl FileWriter {
    fn new(inner: File, buf: Vec<u8>) -> FileWriter {
        FileWriter { inner, buf, hash: Xxh64::new(), written: 0, started: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(limit) = FAIL_WRITE_AFTER.with(|f| f.get()) {
            if self.written + bytes.len() as u64 > limit {
                return Err(io::Error::other("injected write failure"));
            }
        }
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        if bytes.len() >= self.buf.capacity() {
            self.flush_buf()?;
            self.inner.write_all(bytes)?;
        } else {
            if bytes.len() > self.buf.capacity() - self.buf.len() {
                self.flush_buf()?;
            }
            self.buf.extend_from_slice(bytes);
        }
        self.start_writeback(false);
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf)?;
        self.buf.clear(); // keeps its capacity
        Ok(())
    }

    /// Starts the writeback of what reached the file since the last start,
    /// once there is `WRITEBACK_STEP` of it (or any, when `all`). Advisory:
    /// the fsync that ends the save reports any error.
    fn start_writeback(&mut self, all: bool) {
        let done = self.written - self.buf.len() as u64;
        if done - self.started < if all { 1 } else { WRITEBACK_STEP } {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (off, n) = (self.started as libc::off64_t, (done - self.started) as libc::off64_t);
            // SAFETY: a plain system call on a file descriptor we own.
            unsafe { libc::sync_file_range(self.inner.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
        }
        self.started = done;
    }
}

/// Temporary files are `.<name>.m2c-tmp.<pid>.<n>`; a name is cut so that
/// the whole stays within NAME_MAX (255 bytes).
const NAME_MAX: usize = 255;

/// Where a save must write: the file `path` names (following a symbolic
/// link to an existing file, so the link is kept), refused with
/// `InvalidArg` when the path names no file ("/", ".", "..", or a path
/// ending in "/", "/." or "/..").
fn save_target(path: &Path) -> Result<PathBuf> {
    let last = path.as_os_str().as_bytes().rsplit(|&b| b == b'/').next().unwrap_or(b"");
    if last.is_empty() || last == b"." || last == b".." {
        return Err(Error::InvalidArg(format!("path {} names no file", path.display())));
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|e| io_err("cannot resolve the symbolic link", path, e))
        }
        _ => Ok(path.to_path_buf()),
    }
}

impl Cache {
    /// Bytes of a cache file for this cache.
    pub fn file_size(&self) -> u64 {
        let mut n = (FILE_HEADER_BYTES + SLOT_TABLE_ENTRY_BYTES * self.num_slots() + CHECKSUM_BYTES) as u64;
        for l in 0..self.config().num_layers {
            for part in self.layer_bytes(l) {
                n += part.len() as u64;
            }
        }
        n
    }

    fn file_header(&self) -> [u8; FILE_HEADER_BYTES] {
        let mut h = [0u8; FILE_HEADER_BYTES];
        h[0..8].copy_from_slice(&FILE_MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(FILE_HEADER_BYTES as u32).to_le_bytes());
        h[16..56].copy_from_slice(&fingerprint(self.config()));
        h[56..60].copy_from_slice(&self.config().num_slots.to_le_bytes());
        h
    }

    fn slot_table(&self) -> Result<Vec<u8>> {
        let mut t = try_with_capacity(self.num_slots() * SLOT_TABLE_ENTRY_BYTES, "slot table")?;
        for s in 0..self.num_slots() {
            t.extend_from_slice(&self.positions[s].to_le_bytes());
            t.extend_from_slice(&u64::from(self.in_use[s]).to_le_bytes());
        }
        Ok(t)
    }

    /// Saves every slot (state, position, whether it is acquired) to
    /// `path`. The bytes go to a temporary file in the same directory,
    /// which is fsynced and then renamed over `path`, so an interrupted
    /// save never damages an existing file; on failure the temporary file
    /// is removed.
    pub fn save_file(&self, path: &Path) -> Result<()> {
        let target = save_target(path)?;
        let path = target.as_path();
        let name =
            path.file_name().ok_or_else(|| Error::InvalidArg(format!("path {} names no file", path.display())))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Everything the save allocates is allocated before the temporary
        // file exists.
        let table = self.slot_table()?;
        #[cfg(test)]
        if FAIL_BUFFER_ALLOC.with(|f| f.get()) {
            return Err(Error::OutOfMemory("cannot allocate write buffer (injected)".into()));
        }
        let buf = try_with_capacity(IO_CHUNK, "write buffer")?;
        // Ring windows are gathered oldest first, one slot's at a time.
        let mut row = Vec::new();
        if self.conv_layout() == crate::ring::ConvLayout::Ring {
            row = try_vec(self.slot_byte_sizes().0, 0u8, "one conv window")?;
        }
        // An existing target keeps its permissions (a private cache file
        // stays private).
        let mode = fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.mode() & 0o7777);
        let (tmp, file) = create_temp(&dir, name.as_bytes(), mode)?;
        match self
            .write_file(file, &tmp, &table, buf, row)
            .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err("cannot rename onto", path, e)))
        {
            Ok(()) => {
                // Make the rename itself durable; a failure here cannot undo
                // the save, so it is not reported.
                if let Ok(d) = File::open(&dir) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The bytes of this cache's file after its header and slot table, in
    /// order, handed to `f` piece by piece: every layer's conv windows
    /// (ring windows gathered oldest first, one slot's at a time, into
    /// `row`, which holds one when the layout is ring) then its SSM state.
    fn file_state(&self, row: &mut [u8], mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        for l in 0..self.config().num_layers {
            let [conv, ssm] = self.layer_bytes(l);
            if row.is_empty() {
                f(conv)?;
            } else {
                for s in 0..self.num_slots() {
                    self.conv_bytes_out(l as usize, s, 0, row);
                    f(row)?;
                }
            }
            for chunk in ssm.chunks(IO_CHUNK) {
                f(chunk)?;
            }
        }
        Ok(())
    }

    /// Writes the file, hashing the bytes as they are written, and fsyncs
    /// it. (A checksum on a second thread, beside the writes, made saves
    /// slower on this machine class: the writes and the kernel's writeback
    /// want both cores, and one thread already writes at the disk's speed.)
    fn write_file(&self, file: File, tmp: &Path, table: &[u8], buf: Vec<u8>, mut row: Vec<u8>) -> Result<()> {
        let werr = |e| io_err("cannot write", tmp, e);
        let mut w = FileWriter::new(file, buf);
        w.put(&self.file_header()).map_err(werr)?;
        w.put(table).map_err(werr)?;
        self.file_state(&mut row, |b| w.put(b)).map_err(werr)?;
        let sum = w.hash.digest().to_le_bytes();
        w.put(&sum).map_err(werr)?;
        w.flush_buf().map_err(werr)?;
        w.start_writeback(true);
        w.inner.sync_all().map_err(|e| io_err("cannot fsync", tmp, e))
    }

    /// Loads a file written by `save_file` into this cache. The whole file
    /// is read and checked (checksum, version, shape, slot count, size)
    /// before the cache is touched; a bad file changes nothing. If the file
    /// changes while it is being loaded (so the second read no longer
    /// matches the checked bytes), every slot is reset and released and the
    /// load fails with `Corrupt`: the cache never holds a mix.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let check = FileCheck::read(self.config(), self.file_size(), path)?;
        self.install_file(check)
    }

    /// The second pass of [`Cache::load_file`]: copies a file that
    /// [`FileCheck::read`] validated for this cache's shape into the cache,
    /// hashing it again (a file changed in between resets every slot).
    pub fn install_file(&mut self, check: FileCheck) -> Result<()> {
        let FileCheck { mut f, header, table, entries, checksum, path } = check;
        let path = path.as_path();
        #[cfg(test)]
        if FAIL_SECOND_PASS_READ.with(|t| t.get()) {
            f = File::open(path.parent().expect("a file in a directory")).expect("open the directory");
        }
        if header[16..56] != crate::snapshot::fingerprint(self.config())[..] || entries.len() != self.num_slots() {
            return Err(Error::InvalidArg("the file was checked for a cache of another shape".into()));
        }
        // A ring cache rewrites each window into its layout after the read.
        let mut row = Vec::new();
        if self.conv_layout() == crate::ring::ConvLayout::Ring {
            row = try_vec(self.slot_byte_sizes().0, 0u8, "one conv window")?;
        }
        // The cache's bytes in file order, in pieces read one by one.
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let n = self.num_slots();
        let count = self.layers.len() * ((n * conv_row).div_ceil(IO_CHUNK) + (n * ssm_row).div_ceil(IO_CHUNK));
        let mut pieces: Vec<&mut [u8]> = try_with_capacity(count, "file pieces")?;
        // From here on every slot's state is rewritten.
        self.spec_drop_all();
        let mut sum = [0u8; 8];
        #[cfg(test)]
        if let Some(n) = TRUNCATE_BETWEEN_PASSES.with(|t| t.get()) {
            OpenOptions::new().write(true).open(path).and_then(|w| w.set_len(n)).expect("test truncation");
        }
        // Pass 2: stream the payload into the cache, hashing again.
        let mut hash = Xxh64::new();
        hash.update(&header);
        hash.update(&table);
        // A short read means the file shrank; any other read error is the
        // OS's, reported as such. Either way the cache was partly written:
        // every slot is reset.
        let parallel = overlapped(self.file_size());
        for layer in &mut self.layers {
            pieces.extend(layer.conv.bytes_mut()[..n * conv_row].chunks_mut(IO_CHUNK));
            pieces.extend(layer.ssm.bytes_mut()[..n * ssm_row].chunks_mut(IO_CHUNK));
        }
        // Each piece is hashed while the next is read.
        let mut failure = pipelined(parallel, || -> io::Result<()> {
            if let Some(first) = pieces.first_mut() {
                f.read_exact(first)?;
            }
            for i in 0..pieces.len() {
                let (done, rest) = pieces.split_at_mut(i + 1);
                let read = || match rest.first_mut() {
                    Some(next) => f.read_exact(next),
                    None => Ok(()),
                };
                both(parallel, read, || hash.update(done[i])).0?;
            }
            Ok(())
        })
        .err();
        drop(pieces);
        if failure.is_none() {
            if let Err(e) = f.read_exact(&mut sum) {
                failure = Some(e);
            }
        }
        let changed = u64::from_le_bytes(sum) != checksum || hash.digest() != checksum;
        if failure.is_some() || changed {
            self.reset_everything();
            return Err(match failure {
                Some(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
                    Error::Io(format!("cannot read {} while loading it: {e}; every slot was reset", path.display()))
                }
                _ => Error::Corrupt(format!(
                    "{}: the file changed while it was being loaded; every slot was reset",
                    path.display()
                )),
            });
        }
        if !row.is_empty() {
            let geom = self.conv_geometry();
            for (layer, heads) in self.layers.iter_mut().zip(self.heads.iter_mut()) {
                for s in 0..heads.len() {
                    let n = row.len();
                    row.copy_from_slice(&layer.conv.bytes()[s * n..(s + 1) * n]);
                    Cache::conv_bytes_in(layer, Some(&mut *heads), s, &row, geom);
                }
            }
        }
        for (s, (pos, used)) in entries.into_iter().enumerate() {
            self.set_position(s, pos);
            self.set_in_use(s, used);
        }
        Ok(())
    }
}

/// Whether a file of `bytes` is read or written with its checksum on a
/// second thread (overlapping the I/O).
fn overlapped(bytes: u64) -> bool {
    bytes >= crate::cache::PAR_MIN_BYTES as u64 && crate::pool::threads() > 1
}

/// Runs `f` on m2c's pool when `parallel` (so that [`both`] inside it runs
/// its halves on two threads), else on the calling thread.
fn pipelined<R: Send>(parallel: bool, f: impl FnOnce() -> R + Send) -> R {
    if parallel { crate::pool::install(f) } else { f() }
}

/// Runs `a` and `b`: side by side when `parallel` (inside [`pipelined`]),
/// else one after the other.
fn both<A: Send, B: Send>(parallel: bool, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    if parallel { rayon::join(a, b) } else { (a(), b()) }
}

/// A cache file that passed every check of the first pass of a load
/// (size, magic, checksum, version, fingerprint, slot count, slot table):
/// what `Cache::install_file` needs for the second. Checking needs only the
/// cache's config, so a caller can do it holding no lock on the cache.
#[derive(Debug)]
pub struct FileCheck {
    f: File,
    header: [u8; FILE_HEADER_BYTES],
    table: Vec<u8>,
    entries: Vec<(u64, bool)>,
    checksum: u64,
    path: PathBuf,
}

impl FileCheck {
    /// The first pass over the file at `path` for a cache of `cfg`, whose
    /// files are `want` bytes long. Reads and hashes it in bounded memory;
    /// everything the load allocates is allocated here.
    pub fn read(cfg: &Config, want: u64, path: &Path) -> Result<FileCheck> {
        let rerr = |e| io_err("cannot read", path, e);
        // O_NONBLOCK: opening a FIFO must not wait for a writer; anything
        // but a regular file is refused before a byte is read.
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| io_err("cannot open", path, e))?;
        let meta = f.metadata().map_err(rerr)?;
        if !meta.is_file() {
            return Err(Error::InvalidArg(format!("{} is not a regular file", path.display())));
        }
        let len = meta.len();
        let min = (FILE_HEADER_BYTES + CHECKSUM_BYTES) as u64;
        if len < min {
            return Err(Error::Corrupt(format!("{}: {len} bytes is too short for an m2c file", path.display())));
        }
        let mut header = [0u8; FILE_HEADER_BYTES];
        read_full(&mut f, &mut header, path)?;
        if header[0..8] != FILE_MAGIC {
            return Err(Error::Corrupt(format!("{}: not an m2c cache file (bad magic)", path.display())));
        }
        // The size this cache's file must have is known: compare it before
        // hashing anything, so a huge file is refused at once. The header
        // (not yet verified) tells a file of another version or shape from
        // a truncated or padded one.
        if len != want {
            let version = u32_at(&header, 8);
            if version != FORMAT_VERSION && version != 0 {
                return Err(Error::Incompatible(format!(
                    "{}: file format version {version}; this library reads version {FORMAT_VERSION}",
                    path.display()
                )));
            }
            // A whole file of another shape: its header describes exactly
            // its size.
            if version == FORMAT_VERSION && described_file_size(&header) == Some(len) {
                check_fingerprint(&header[16..56], cfg)?;
                return Err(Error::Incompatible(format!(
                    "the file holds num_slots = {}, this cache has num_slots = {}",
                    u32_at(&header, 56),
                    cfg.num_slots
                )));
            }
            return Err(Error::Corrupt(format!(
                "{}: {len} bytes, but a file of this cache is {want} bytes (truncated, padded or damaged)",
                path.display()
            )));
        }
        // Pass 1: the checksum over everything.
        let mut hash = Xxh64::new();
        hash.update(&header);
        // Everything the load allocates is allocated here, before the
        // cache is touched.
        // Two read buffers: one is hashed while the next chunk is read
        // into the other.
        let mut bufs = [try_vec(IO_CHUNK, 0u8, "read buffer")?, try_vec(IO_CHUNK, 0u8, "read buffer")?];
        let mut table = try_vec((cfg.num_slots as usize) * SLOT_TABLE_ENTRY_BYTES, 0u8, "slot table")?;
        let mut entries: Vec<(u64, bool)> = try_with_capacity(cfg.num_slots as usize, "slot entries")?;
        let body = len - min;
        let chunks = body.div_ceil(IO_CHUNK as u64) as usize;
        let size = |i: usize| (body - (i * IO_CHUNK) as u64).min(IO_CHUNK as u64) as usize;
        let parallel = overlapped(len);
        pipelined(parallel, || -> Result<()> {
            if chunks > 0 {
                read_full(&mut f, &mut bufs[0][..size(0)], path)?;
            }
            for i in 0..chunks {
                let [a, b] = &mut bufs;
                let (cur, next) = if i % 2 == 0 { (a, b) } else { (b, a) };
                let cur = &cur[..size(i)];
                let read = || match i + 1 < chunks {
                    true => read_full(&mut f, &mut next[..size(i + 1)], path),
                    false => Ok(()),
                };
                both(parallel, read, || hash.update(cur)).0?;
            }
            Ok(())
        })?;
        let mut sum = [0u8; 8];
        read_full(&mut f, &mut sum, path)?;
        let checksum = u64::from_le_bytes(sum);
        if hash.digest() != checksum {
            return Err(Error::Corrupt(format!(
                "{}: checksum mismatch: the file is truncated or damaged",
                path.display()
            )));
        }
        let version = u32_at(&header, 8);
        if version != FORMAT_VERSION {
            return Err(Error::Incompatible(format!(
                "{}: file format version {version}; this library reads version {FORMAT_VERSION}",
                path.display()
            )));
        }
        check_fingerprint(&header[16..56], cfg)?;
        let slots = u32_at(&header, 56);
        if slots != cfg.num_slots {
            return Err(Error::Incompatible(format!(
                "the file holds num_slots = {slots}, this cache has num_slots = {}",
                cfg.num_slots
            )));
        }
        if u32_at(&header, 12) as usize != FILE_HEADER_BYTES || len != want {
            return Err(Error::Corrupt(format!(
                "{}: {len} bytes, but its header describes {} bytes",
                path.display(),
                want
            )));
        }
        if u32_at(&header, 60) != 0 {
            return Err(Error::Corrupt(format!("{}: reserved header field is not 0", path.display())));
        }
        f.seek(SeekFrom::Start(FILE_HEADER_BYTES as u64)).map_err(rerr)?;
        read_full(&mut f, &mut table, path)?;
        for e in table.chunks_exact(SLOT_TABLE_ENTRY_BYTES) {
            let flags = u64_at(e, 8);
            if flags > 1 {
                return Err(Error::Corrupt(format!("{}: slot table has unknown flags {flags:#x}", path.display())));
            }
            entries.push((u64_at(e, 0), flags == 1));
        }

        Ok(FileCheck { f, header, table, entries, checksum, path: path.to_path_buf() })
    }
}

/// The size of the file a (not yet verified) header describes, if its
/// fingerprint and slot count make a valid shape.
fn described_file_size(header: &[u8]) -> Option<u64> {
    let f = |i: usize| u32_at(header, 16 + 4 * i);
    let dtype = |code: u32| DType::ALL.into_iter().find(|d| d.format_code() == code);
    let cfg = Config {
        num_layers: f(0),
        num_slots: u32_at(header, 56),
        intermediate_size: f(1),
        num_heads: f(2),
        head_dim: f(3),
        state_size: f(4),
        n_groups: f(5),
        conv_kernel_size: f(6),
        conv_width: f(7),
        conv_dtype: dtype(f(8))?,
        ssm_dtype: dtype(f(9))?,
        ..Config::default()
    };
    let shape = cfg.shape().ok()?;
    let per_layer = (shape.conv_layer_bytes as u64).checked_add(shape.ssm_layer_bytes as u64)?;
    let slots = (SLOT_TABLE_ENTRY_BYTES as u64).checked_mul(u64::from(cfg.num_slots))?;
    per_layer
        .checked_mul(u64::from(cfg.num_layers))?
        .checked_add(slots)?
        .checked_add((FILE_HEADER_BYTES + CHECKSUM_BYTES) as u64)
}

/// Creates `.<name>.m2c-tmp.<pid>.<n>` in `dir`, with the permissions
/// `keep_mode` of the file it will replace, or else the usual 0666 less
/// the umask; tries the next `n` when a stale file of a dead process with
/// the same pid (a restarted container) holds the name.
fn create_temp(dir: &Path, name: &[u8], keep_mode: Option<u32>) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut last = None;
    for _ in 0..64 {
        let suffix = format!(".m2c-tmp.{pid}.{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let keep = name.len().min(NAME_MAX - 1 - suffix.len());
        let mut tmp_name = Vec::with_capacity(1 + keep + suffix.len());
        tmp_name.push(b'.');
        tmp_name.extend_from_slice(&name[..keep]);
        tmp_name.extend_from_slice(suffix.as_bytes());
        let tmp = dir.join(std::ffi::OsStr::from_bytes(&tmp_name));
        match OpenOptions::new().write(true).create_new(true).mode(keep_mode.unwrap_or(0o666)).open(&tmp) {
            Ok(f) => {
                if let Some(m) = keep_mode {
                    // The umask must not change a kept mode.
                    if let Err(e) = f.set_permissions(fs::Permissions::from_mode(m)) {
                        let _ = fs::remove_file(&tmp);
                        return Err(io_err("cannot set the permissions of", &tmp, e));
                    }
                }
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => return Err(io_err("cannot create", &tmp, e)),
        }
    }
    let (tmp, e) = last.expect("at least one attempt");
    Err(io_err("cannot create", &tmp, e))
}

/// Writes `parts` to `path` the way `save_file` writes a cache: into a
/// temporary file in the same directory, fsynced, then renamed over
/// `path`, so the file is either whole or absent.
pub(crate) fn write_atomic(path: &Path, parts: &[&[u8]]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| Error::InvalidArg(format!("path {} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, mut file) = create_temp(&dir, name.as_bytes(), None)?;
    let written = parts
        .iter()
        .try_for_each(|p| file.write_all(p))
        .map_err(|e| io_err("cannot write", &tmp, e))
        .and_then(|()| file.sync_all().map_err(|e| io_err("cannot fsync", &tmp, e)))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err("cannot rename onto", path, e)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The whole file at `path`.
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| io_err("cannot read", path, e))
}

fn read_full(f: &mut File, buf: &mut [u8], path: &Path) -> Result<()> {
    f.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Corrupt(format!("{}: unexpected end of file", path.display())),
        _ => io_err("cannot read", path, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dtype::{DType, Slice};
    use crate::selection::Slots;

    fn cfg(num_slots: u32) -> Config {
        Config {
            num_layers: 3,
            num_slots,
            intermediate_size: 16,
            num_heads: 4,
            head_dim: 4,
            state_size: 8,
            n_groups: 2,
            conv_dtype: DType::BF16,
            ssm_dtype: DType::F32,
            ..Config::default()
        }
    }

    /// A cache whose every element depends on `seed`.
    fn filled(num_slots: u32, seed: f32) -> Cache {
        let mut c = Cache::new(cfg(num_slots)).unwrap();
        let n = num_slots as usize;
        for l in 0..3 {
            let conv: Vec<f32> = (0..n * c.shape().conv_slot_elems).map(|i| seed + i as f32).collect();
            let ssm: Vec<f32> = (0..n * c.shape().ssm_slot_elems).map(|i| seed * 2.0 - i as f32).collect();
            c.set_conv(l, Slots::Dense(n), Slice::F32(&conv)).unwrap();
            c.set_ssm(l, Slots::Dense(n), Slice::F32(&ssm)).unwrap();
        }
        c.advance(Slots::Dense(n), seed as u32).unwrap();
        c.slot_acquire().unwrap();
        c
    }

    /// Every byte of state, every position and the acquired flags.
    fn image(c: &Cache) -> Vec<u8> {
        let mut v = Vec::new();
        for l in 0..c.config().num_layers {
            for p in c.layer_bytes(l) {
                v.extend_from_slice(p);
            }
        }
        for s in 0..c.num_slots() {
            v.extend_from_slice(&c.positions[s].to_le_bytes());
            v.push(c.in_use[s]);
        }
        v
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("m2c-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("m2c-tmp"))
            .collect()
    }

    #[test]
    fn a_saved_file_loads_back_exactly() {
        let dir = tmpdir("roundtrip");
        let path = dir.join("cache.m2c");
        let a = filled(3, 5.0);
        a.save_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), a.file_size());
        let mut b = filled(3, 9.0);
        b.load_file(&path).unwrap();
        assert_eq!(image(&a), image(&b));
        assert_eq!(b.slots_in_use(), 1);
        assert!(leftovers(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_save_interrupted_at_any_point_leaves_the_old_file_loadable() {
        let dir = tmpdir("interrupted");
        let path = dir.join("cache.m2c");
        let old = filled(2, 1.0);
        old.save_file(&path).unwrap();
        let new = filled(2, 3.0);
        let size = new.file_size();
        let mut points: Vec<u64> = vec![0, 1, 63, 64, 65, size - 9, size - 8, size - 1];
        points.extend((1..40).map(|i| size * i / 40));
        for at in points {
            FAIL_WRITE_AFTER.with(|f| f.set(Some(at)));
            let e = new.save_file(&path).unwrap_err();
            FAIL_WRITE_AFTER.with(|f| f.set(None));
            assert!(matches!(e, Error::Io(ref m) if m.contains("injected")), "{e:?}");
            assert!(leftovers(&dir).is_empty(), "temporary file left after failure at {at}");
            let mut check = filled(2, 7.0);
            check.load_file(&path).unwrap();
            assert_eq!(image(&check), image(&old), "old file damaged by a save failing at byte {at}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_truncation_and_sampled_byte_flips_of_a_file_are_rejected_without_change() {
        let dir = tmpdir("corrupt");
        let good = dir.join("good.m2c");
        let bad = dir.join("bad.m2c");
        filled(2, 1.0).save_file(&good).unwrap();
        let bytes = fs::read(&good).unwrap();
        let mut target = filled(2, 4.0);
        let before = image(&target);
        for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            fs::write(&bad, &bytes[..len]).unwrap();
            let e = target.load_file(&bad).unwrap_err();
            assert!(matches!(e, Error::Corrupt(_)), "truncated to {len}: {e:?}");
        }
        for at in (0..bytes.len()).step_by(5) {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            fs::write(&bad, &b).unwrap();
            let e = target.load_file(&bad).unwrap_err();
            assert!(matches!(e, Error::Corrupt(_)), "flip at {at}: {e:?}");
        }
        assert_eq!(image(&target), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_of_another_shape_or_slot_count_are_incompatible() {
        let dir = tmpdir("foreign");
        let path = dir.join("c.m2c");
        filled(2, 1.0).save_file(&path).unwrap();
        let mut three = filled(3, 2.0);
        let before = image(&three);
        let e = three.load_file(&path).unwrap_err();
        assert!(matches!(e, Error::Incompatible(ref m) if m.contains("num_slots")), "{e:?}");
        let mut other = Cache::new(Config { ssm_dtype: DType::BF16, ..cfg(2) }).unwrap();
        let e = other.load_file(&path).unwrap_err();
        assert!(matches!(e, Error::Incompatible(ref m) if m.contains("ssm_dtype")), "{e:?}");
        assert_eq!(image(&three), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_save_that_cannot_allocate_is_out_of_memory_and_creates_no_file() {
        let dir = tmpdir("save-oom");
        let c = filled(1, 1.0);
        FAIL_BUFFER_ALLOC.with(|f| f.set(true));
        let e = c.save_file(&dir.join("c.m2c"));
        FAIL_BUFFER_ALLOC.with(|f| f.set(false));
        assert!(matches!(e, Err(Error::OutOfMemory(_))), "{e:?}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the save created a file before it had its buffer");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn io_failures_are_reported_with_the_os_error() {
        let mut c = filled(1, 1.0);
        let e = c.load_file(Path::new("/nonexistent-m2c-dir/x.m2c")).unwrap_err();
        assert!(matches!(e, Error::Io(ref m) if m.contains("No such file")), "{e:?}");
        let e = c.save_file(Path::new("/nonexistent-m2c-dir/x.m2c")).unwrap_err();
        assert!(matches!(e, Error::Io(ref m) if m.contains("No such file")), "{e:?}");
        // A directory is not a file to load.
        let e = c.load_file(Path::new("/")).unwrap_err();
        assert!(matches!(e, Error::InvalidArg(ref m) if m.contains("not a regular file")), "{e:?}");
    }

    #[test]
    fn a_read_error_in_the_second_pass_is_io_and_resets_the_cache() {
        let dir = tmpdir("eio");
        let path = dir.join("c.m2c");
        filled(2, 1.0).save_file(&path).unwrap();
        let mut c = filled(2, 6.0);
        FAIL_SECOND_PASS_READ.with(|t| t.set(true));
        let e = c.load_file(&path).unwrap_err();
        FAIL_SECOND_PASS_READ.with(|t| t.set(false));
        assert!(matches!(e, Error::Io(ref m) if m.contains("while loading it")), "{e:?}");
        assert_eq!(image(&c), image(&Cache::new(cfg(2)).unwrap()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_changes_during_the_load_resets_the_cache_instead_of_mixing() {
        let dir = tmpdir("changing");
        let path = dir.join("c.m2c");
        filled(2, 1.0).save_file(&path).unwrap();
        let mut c = filled(2, 6.0);
        TRUNCATE_BETWEEN_PASSES.with(|t| t.set(Some(200)));
        let e = c.load_file(&path).unwrap_err();
        TRUNCATE_BETWEEN_PASSES.with(|t| t.set(None));
        assert!(matches!(e, Error::Corrupt(ref m) if m.contains("changed")), "{e:?}");
        assert_eq!(image(&c), image(&Cache::new(cfg(2)).unwrap()));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A cache whose file (about 3.2 MB) is read in four chunks.
    fn big(seed: f32, ring: bool) -> Cache {
        let cfg = Config {
            num_layers: 3,
            num_slots: 4,
            intermediate_size: 1024,
            num_heads: 16,
            head_dim: 64,
            state_size: 64,
            n_groups: 1,
            conv_dtype: DType::BF16,
            ssm_dtype: DType::F32,
            ..Config::default()
        };
        let mut c = Cache::new(cfg).unwrap();
        if ring {
            c.set_conv_layout(crate::ring::ConvLayout::Ring).unwrap();
        }
        for l in 0..3 {
            let conv: Vec<f32> = (0..4 * c.shape().conv_slot_elems).map(|i| seed + (i % 1000) as f32).collect();
            let ssm: Vec<f32> = (0..4 * c.shape().ssm_slot_elems).map(|i| seed * 2.0 - i as f32).collect();
            c.set_conv(l, Slots::Dense(4), Slice::F32(&conv)).unwrap();
            c.set_ssm(l, Slots::Dense(4), Slice::F32(&ssm)).unwrap();
            // Heads off zero in the ring layout.
            let x = vec![seed; c.shape().conv_dim * 2];
            c.update_conv(l, Slots::List(&[1, 3]), Slice::F32(&x)).unwrap();
        }
        c.advance(Slots::Dense(4), seed as u32).unwrap();
        c
    }

    /// Every slot's state (oldest first in either layout) and position.
    fn exported(c: &Cache) -> Vec<u8> {
        let mut v = Vec::new();
        for s in 0..c.num_slots() {
            let mut b = vec![0u8; c.slot_payload_bytes()];
            let pos = c.slot_export(s as i32, &mut b).unwrap();
            v.extend_from_slice(&b);
            v.extend_from_slice(&pos.to_le_bytes());
        }
        v
    }

    #[test]
    fn large_files_load_the_same_on_one_thread_and_with_the_checksum_beside_the_reads() {
        let dir = tmpdir("large");
        let path = dir.join("c.m2c");
        let bad = dir.join("bad.m2c");
        for ring in [false, true] {
            let a = big(3.0, ring);
            assert!(a.file_size() > 3 * IO_CHUNK as u64);
            a.save_file(&path).unwrap();
            let bytes = fs::read(&path).unwrap();
            // Every thread count writes the same bytes and loads them back.
            for threads in [1, 2] {
                crate::pool::with_limit(threads, || {
                    a.save_file(&path).unwrap();
                    assert!(fs::read(&path).unwrap() == bytes, "ring {ring}, {threads} threads");
                    // Into either layout.
                    for into_ring in [ring, !ring] {
                        let mut b = big(5.0, into_ring);
                        b.load_file(&path).unwrap();
                        assert!(exported(&b) == exported(&a), "ring {ring} into {into_ring}, {threads} threads");
                    }
                    // A flipped byte in any chunk is refused and changes nothing.
                    for at in [100, IO_CHUNK + 7, 3 * IO_CHUNK + 1, bytes.len() - 20] {
                        let mut v = bytes.clone();
                        v[at] ^= 0x10;
                        fs::write(&bad, &v).unwrap();
                        let mut c = big(5.0, ring);
                        let before = image(&c);
                        let e = c.load_file(&bad).unwrap_err();
                        assert!(matches!(e, Error::Corrupt(_)), "byte {at}: {e:?}");
                        assert!(image(&c) == before, "byte {at}");
                    }
                    // A file shrinking between the passes resets every slot.
                    let mut c = big(5.0, ring);
                    TRUNCATE_BETWEEN_PASSES.with(|t| t.set(Some(2 * IO_CHUNK as u64 + 5)));
                    let e = c.load_file(&path).unwrap_err();
                    TRUNCATE_BETWEEN_PASSES.with(|t| t.set(None));
                    assert!(matches!(e, Error::Corrupt(ref m) if m.contains("changed")), "{e:?}");
                    assert!((0..4).all(|s| c.position(s).unwrap() == 0));
                    a.save_file(&path).unwrap();
                });
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
