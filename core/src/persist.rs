//! Whole-cache files: crash-safe saves (temporary file, fsync, rename) and
//! loads that validate the entire file before touching the cache, both
//! streaming in bounded memory. The format is in `docs/FORMATS.md`.

use crate::buffer::{try_vec, try_with_capacity};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::snapshot::*;
use crate::xxh64::Xxh64;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
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
}

/// A writer that hashes what it writes.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Xxh64,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(limit) = FAIL_WRITE_AFTER.with(|f| f.get()) {
            if self.written + bytes.len() as u64 > limit {
                return Err(io::Error::other("injected write failure"));
            }
        }
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
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
        let name =
            path.file_name().ok_or_else(|| Error::InvalidArg(format!("path {} names no file", path.display())))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".m2c-tmp.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let tmp = dir.join(tmp_name);
        let file =
            OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
        match self
            .write_file(file, &tmp)
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

    fn write_file(&self, file: File, tmp: &Path) -> Result<()> {
        let werr = |e| io_err("cannot write", tmp, e);
        let table = self.slot_table()?;
        let mut w = HashingWriter { inner: BufWriter::with_capacity(IO_CHUNK, file), hash: Xxh64::new(), written: 0 };
        w.put(&self.file_header()).map_err(werr)?;
        w.put(&table).map_err(werr)?;
        for l in 0..self.config().num_layers {
            for part in self.layer_bytes(l) {
                for chunk in part.chunks(IO_CHUNK) {
                    w.put(chunk).map_err(werr)?;
                }
            }
        }
        let sum = w.hash.digest().to_le_bytes();
        w.put(&sum).map_err(werr)?;
        let file = w.inner.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(|e| io_err("cannot fsync", tmp, e))
    }

    /// Loads a file written by `save_file` into this cache. The whole file
    /// is read and checked (checksum, version, shape, slot count, size)
    /// before the cache is touched; a bad file changes nothing. If the file
    /// changes while it is being loaded (so the second read no longer
    /// matches the checked bytes), every slot is reset and released and the
    /// load fails with `Corrupt`: the cache never holds a mix.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let rerr = |e| io_err("cannot read", path, e);
        let mut f = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
        let len = f.metadata().map_err(rerr)?.len();
        let min = (FILE_HEADER_BYTES + CHECKSUM_BYTES) as u64;
        if len < min {
            return Err(Error::Corrupt(format!("{}: {len} bytes is too short for an m2c file", path.display())));
        }
        let mut header = [0u8; FILE_HEADER_BYTES];
        read_full(&mut f, &mut header, path)?;
        if header[0..8] != FILE_MAGIC {
            return Err(Error::Corrupt(format!("{}: not an m2c cache file (bad magic)", path.display())));
        }
        // Pass 1: the checksum over everything.
        let mut hash = Xxh64::new();
        hash.update(&header);
        // Everything the load allocates is allocated here, before the
        // cache is touched.
        let mut buf = try_vec(IO_CHUNK, 0u8, "read buffer")?;
        let mut table = try_vec(self.num_slots() * SLOT_TABLE_ENTRY_BYTES, 0u8, "slot table")?;
        let mut entries: Vec<(u64, bool)> = try_with_capacity(self.num_slots(), "slot entries")?;
        let mut left = len - min;
        while left > 0 {
            let n = left.min(IO_CHUNK as u64) as usize;
            read_full(&mut f, &mut buf[..n], path)?;
            hash.update(&buf[..n]);
            left -= n as u64;
        }
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
        check_fingerprint(&header[16..56], self.config())?;
        let slots = u32_at(&header, 56);
        if slots != self.config().num_slots {
            return Err(Error::Incompatible(format!(
                "the file holds num_slots = {slots}, this cache has num_slots = {}",
                self.config().num_slots
            )));
        }
        if u32_at(&header, 12) as usize != FILE_HEADER_BYTES || len != self.file_size() {
            return Err(Error::Corrupt(format!(
                "{}: {len} bytes, but its header describes {} bytes",
                path.display(),
                self.file_size()
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

        #[cfg(test)]
        if let Some(n) = TRUNCATE_BETWEEN_PASSES.with(|t| t.get()) {
            OpenOptions::new().write(true).open(path).and_then(|w| w.set_len(n)).expect("test truncation");
        }
        // Pass 2: stream the payload into the cache, hashing again.
        let mut hash = Xxh64::new();
        hash.update(&header);
        hash.update(&table);
        let mut ok = true;
        'layers: for l in 0..self.config().num_layers {
            for part in self.layer_bytes_mut(l) {
                for chunk in part.chunks_mut(IO_CHUNK) {
                    if f.read_exact(chunk).is_err() {
                        ok = false;
                        break 'layers;
                    }
                    hash.update(chunk);
                }
            }
        }
        if ok {
            ok = f.read_exact(&mut sum).is_ok() && u64::from_le_bytes(sum) == checksum && hash.digest() == checksum;
        }
        if !ok {
            self.reset_everything();
            return Err(Error::Corrupt(format!(
                "{}: the file changed while it was being loaded; every slot was reset",
                path.display()
            )));
        }
        for (s, (pos, used)) in entries.into_iter().enumerate() {
            self.set_position(s, pos);
            self.set_in_use(s, used);
        }
        Ok(())
    }
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
    fn io_failures_are_reported_with_the_os_error() {
        let mut c = filled(1, 1.0);
        let e = c.load_file(Path::new("/nonexistent-m2c-dir/x.m2c")).unwrap_err();
        assert!(matches!(e, Error::Io(ref m) if m.contains("No such file")), "{e:?}");
        let e = c.save_file(Path::new("/nonexistent-m2c-dir/x.m2c")).unwrap_err();
        assert!(matches!(e, Error::Io(ref m) if m.contains("No such file")), "{e:?}");
        // A directory is not a file to load.
        let e = c.load_file(Path::new("/")).unwrap_err();
        assert!(matches!(e, Error::Io(_) | Error::Corrupt(_)), "{e:?}");
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
}
