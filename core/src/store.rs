//! The prefix store: checkpoints of slots (every layer's conv window and
//! SSM state, and the position) kept under caller-chosen 128-bit keys, so
//! that a request whose prompt starts like an earlier one restores the
//! state at the longest cached prefix instead of prefilling it again.
//!
//! A store is its own object, shared by any number of caches of one shape
//! (a checkpoint restores into any cache whose shape fingerprint matches
//! the one it came from). It holds at most its budget of bytes (entries,
//! and the buffers of evicted ones it keeps for the next inserts), evicts
//! the least recently used unpinned entry when an insert needs room, and
//! answers every lookup: a hit, or a miss with its reason (never stored,
//! evicted, larger than the budget allows, made for another shape).
//!
//! Thread safety: every method takes `&self`; one mutex guards the index,
//! and the bytes of an entry are shared (`Arc`), so copies into and out of
//! caches run outside the lock and an entry evicted during a restore stays
//! alive until that restore is done. Concurrent calls behave as some
//! serial order of them.

use crate::any_cache::AnyCache;
use crate::buffer::try_vec;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::snapshot::{FINGERPRINT_BYTES, fingerprint};
use crate::tier::Tier;
use crate::xxh64::xxh64_seeded;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// A store key: 128 bits the engine chooses (for example a hash of the
/// prompt's token blocks, see [`chain_key`]).
pub type Key = u128;

/// Why a key has no usable entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Miss {
    /// No entry was ever stored under the key (or the store no longer
    /// remembers it: it keeps the reasons of its most recent misses only).
    NeverStored,
    /// The entry was evicted: to make room for another, or on request.
    Evicted,
    /// An insert under the key was refused: the entry alone is larger than
    /// the budget, or the pinned entries leave no room for it.
    TooLarge,
    /// The entry was made by a cache of another shape or dtype.
    Incompatible,
    /// The entry's bytes were found damaged (a spill file that failed its
    /// checksum).
    Corrupt,
}

impl Miss {
    /// Every reason, in the order of [`Stats::misses`].
    pub const ALL: [Miss; 5] = [Miss::NeverStored, Miss::Evicted, Miss::TooLarge, Miss::Incompatible, Miss::Corrupt];

    fn index(self) -> usize {
        Miss::ALL.iter().position(|&m| m == self).expect("listed")
    }

    /// A short description.
    pub fn text(self) -> &'static str {
        match self {
            Miss::NeverStored => "never stored",
            Miss::Evicted => "evicted",
            Miss::TooLarge => "too large for the budget",
            Miss::Incompatible => "made for another shape or dtype",
            Miss::Corrupt => "damaged",
        }
    }
}

/// The store's counters and occupancy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries held, and their bytes.
    pub entries: u64,
    pub bytes_held: u64,
    pub budget_bytes: u64,
    /// Entries pinned at least once.
    pub pinned: u64,
    /// Inserts that stored an entry.
    pub inserts: u64,
    /// Lookups that found at least one block.
    pub hits: u64,
    /// Lookups that did not cover every block, by the reason of the first
    /// block not covered (the order of [`Miss::ALL`]).
    pub misses: [u64; 5],
    /// Entries evicted (for room or on request).
    pub evictions: u64,
    /// Restores into a slot.
    pub restores: u64,
    /// Checkpoints on disk now, and the evictions that wrote one there.
    pub spilled: u64,
    pub spills: u64,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Leading blocks covered: the deepest key with a usable entry is
    /// `keys[blocks - 1]` (0: none).
    pub blocks: usize,
    /// Why `keys[blocks]` has no usable entry (`None` when every block is
    /// covered).
    pub miss: Option<Miss>,
}

/// One checkpoint.
struct Entry {
    /// The config of the cache it came from (its shape and dtypes).
    cfg: Config,
    fp: [u8; FINGERPRINT_BYTES],
    position: u64,
    /// Every layer's conv window then SSM state, in storage bytes.
    data: Arc<Vec<u8>>,
    pins: u32,
    /// Last use, on the store's clock (the key of `lru`).
    tick: u64,
}

struct Inner {
    budget: u64,
    held: u64,
    entries: HashMap<Key, Entry>,
    /// Entries by last use, oldest first.
    lru: BTreeMap<u64, Key>,
    clock: u64,
    /// Reasons of keys that have no entry, most recent last, at most
    /// `remember` of them.
    gone: HashMap<Key, Miss>,
    gone_order: VecDeque<Key>,
    remember: usize,
    stats: Stats,
    /// Buffers of evicted or replaced entries, kept for the next inserts
    /// (so that a full store inserts without faulting in fresh pages), as
    /// long as they fit the budget beside the entries.
    free: Vec<Vec<u8>>,
    /// The precision of the entries' SSM states.
    tier: Tier,
    /// Where entries evicted for room go, if anywhere.
    spill: Option<SpillDir>,
    /// Entries on disk.
    spilled: HashMap<Key, Spilled>,
}

/// The disk tier: a directory, and the prefix of this store's files in it.
struct SpillDir {
    dir: std::path::PathBuf,
    prefix: String,
}

/// A checkpoint on disk: a slot snapshot (docs/FORMATS.md) at `path`.
struct Spilled {
    fp: [u8; FINGERPRINT_BYTES],
    path: std::path::PathBuf,
}

impl Inner {
    fn free_bytes(&self) -> u64 {
        self.free.iter().map(|b| b.len() as u64).sum()
    }

    /// Keeps the buffer of a dropped entry for reuse if nothing else holds
    /// it and the budget has room beside the entries.
    fn recycle(&mut self, data: Arc<Vec<u8>>) {
        if let Ok(buf) = Arc::try_unwrap(data) {
            if self.held + self.free_bytes() + buf.len() as u64 <= self.budget {
                self.free.push(buf);
            }
        }
    }

    /// A recycled buffer of `bytes` bytes, if one is kept.
    fn take_free(&mut self, bytes: usize) -> Option<Vec<u8>> {
        let i = self.free.iter().position(|b| b.len() == bytes)?;
        Some(self.free.swap_remove(i))
    }

    /// Drops recycled buffers until `bytes` more entry bytes fit the budget.
    fn trim_free(&mut self, bytes: u64) {
        while !self.free.is_empty() && self.held + self.free_bytes() + bytes > self.budget {
            self.free.pop();
        }
    }

    fn touch(&mut self, key: Key) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.entries.get_mut(&key) {
            self.lru.remove(&e.tick);
            e.tick = clock;
            self.lru.insert(clock, key);
        }
    }

    fn forget(&mut self, key: Key, why: Miss) {
        if self.remember == 0 {
            return;
        }
        if self.gone.insert(key, why).is_none() {
            self.gone_order.push_back(key);
            if self.gone_order.len() > self.remember {
                if let Some(old) = self.gone_order.pop_front() {
                    self.gone.remove(&old);
                }
            }
        }
    }

    /// Removes `key`'s entry, remembering why, and recycles its buffer.
    fn remove(&mut self, key: Key, why: Miss) {
        let Some(e) = self.entries.remove(&key) else { return };
        self.lru.remove(&e.tick);
        self.held -= e.data.len() as u64;
        if why == Miss::Evicted {
            self.stats.evictions += 1;
        }
        self.forget(key, why);
        self.recycle(e.data);
    }

    /// Why `key` has no entry usable by a cache with fingerprint `fp` (an
    /// entry on disk counts as usable).
    fn why(&self, key: Key, fp: &[u8; FINGERPRINT_BYTES]) -> Option<Miss> {
        let found = self.entries.get(&key).map(|e| e.fp).or_else(|| self.spilled.get(&key).map(|s| s.fp));
        match found {
            Some(f) if f == *fp => None,
            Some(_) => Some(Miss::Incompatible),
            None => Some(self.gone.get(&key).copied().unwrap_or(Miss::NeverStored)),
        }
    }

    /// Writes `key`'s entry to the disk tier as a slot snapshot; false if
    /// there is none or the write failed (the entry is then just evicted).
    fn spill_out(&mut self, key: Key) -> bool {
        let (Some(sp), Some(e)) = (&self.spill, self.entries.get(&key)) else { return false };
        let path = sp.dir.join(format!("{}-{key:032x}.m2cslot", sp.prefix));
        let full = match self.tier {
            Tier::Full => None,
            tier => {
                let Ok(n) = Store::entry_bytes(&e.cfg) else { return false };
                let mut full = vec![0u8; n as usize];
                if tier.decode(&e.cfg, &e.data, &mut full).is_err() {
                    return false;
                }
                Some(full)
            }
        };
        let payload: &[u8] = full.as_deref().unwrap_or(&e.data);
        let (head, sum) = crate::snapshot::snapshot_parts(&e.cfg, e.position, payload);
        if crate::persist::write_atomic(&path, &[&head, payload, &sum]).is_err() {
            return false;
        }
        let s = Spilled { fp: e.fp, path };
        self.spilled.insert(key, s);
        true
    }

    /// Forgets `key`'s copy on disk, deleting its file.
    fn unspill(&mut self, key: Key) -> bool {
        match self.spilled.remove(&key) {
            Some(s) => {
                let _ = std::fs::remove_file(&s.path);
                true
            }
            None => false,
        }
    }

    /// Makes way for a `bytes`-byte entry under `key`: refuses a pinned
    /// entry under it (`InvalidArg`); answers `TooLarge` (remembered when
    /// the key has no entry) when the pinned entries leave no room; else
    /// drops the entry it replaces and evicts for room.
    fn admit(&mut self, key: Key, bytes: u64) -> Result<Option<Miss>> {
        if self.entries.get(&key).is_some_and(|e| e.pins > 0) {
            return Err(Error::InvalidArg(format!("key {key:#034x} has a pinned entry: unpin it before replacing it")));
        }
        let pinned: u64 =
            self.entries.iter().filter(|(k, e)| **k != key && e.pins > 0).map(|(_, e)| e.data.len() as u64).sum();
        if pinned + bytes > self.budget {
            if !self.entries.contains_key(&key) {
                self.forget(key, Miss::TooLarge);
            }
            return Ok(Some(Miss::TooLarge));
        }
        if let Some(old) = self.entries.remove(&key) {
            self.lru.remove(&old.tick);
            self.held -= old.data.len() as u64;
            self.recycle(old.data);
        }
        if !self.make_room(bytes, key) {
            self.forget(key, Miss::TooLarge);
            return Ok(Some(Miss::TooLarge));
        }
        Ok(None)
    }

    /// Evicts least recently used unpinned entries (never `keep`) until
    /// `bytes` more fit; false if the pinned ones leave no room.
    fn make_room(&mut self, bytes: u64, keep: Key) -> bool {
        while self.held + bytes > self.budget {
            let victim = self.lru.values().copied().find(|k| *k != keep && self.entries[k].pins == 0);
            match victim {
                Some(k) => {
                    // To the disk tier if there is one (the key stays
                    // usable), else gone.
                    let spilled = self.spill_out(k);
                    self.remove(k, Miss::Evicted);
                    if spilled {
                        self.gone.remove(&k);
                        self.stats.spills += 1;
                    }
                }
                None => return false,
            }
        }
        true
    }
}

/// A checkpoint store (see the module documentation).
pub struct Store {
    inner: Mutex<Inner>,
    /// The precision its checkpoints' SSM states are kept in.
    tier: Tier,
    /// A full-precision checkpoint, the staging of a reduced-precision
    /// store's inserts and restores (reused; a call that finds it busy
    /// allocates its own).
    scratch: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("stats", &self.stats()).finish()
    }
}

/// How many missed keys a store remembers the reason of, by default.
pub const DEFAULT_REMEMBER: usize = 65_536;

impl Store {
    /// A store holding at most `budget_bytes` of checkpoints, remembering
    /// the miss reasons of the last `remember` keys that lost (or never
    /// got) their entry.
    pub fn new(budget_bytes: u64, remember: usize) -> Result<Store> {
        Store::with_tier(budget_bytes, remember, Tier::Full)
    }

    /// As [`Store::new`], keeping the checkpoints' SSM states at `tier`.
    pub fn with_tier(budget_bytes: u64, remember: usize, tier: Tier) -> Result<Store> {
        Store::with_spill(budget_bytes, remember, tier, None)
    }

    /// As [`Store::with_tier`], writing the checkpoints it evicts for room
    /// into `spill_dir` (an existing directory) as slot snapshots, from
    /// where a restore reads them back (and the store takes them in again).
    /// A damaged file is a miss (`Corrupt`). The store deletes its files
    /// when it is dropped.
    pub fn with_spill(
        budget_bytes: u64,
        remember: usize,
        tier: Tier,
        spill_dir: Option<&std::path::Path>,
    ) -> Result<Store> {
        static STORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let spill = match spill_dir {
            None => None,
            Some(d) => {
                let m = std::fs::metadata(d).map_err(|e| Error::Io(format!("spill directory {}: {e}", d.display())))?;
                if !m.is_dir() {
                    return Err(Error::Io(format!("spill directory {}: not a directory", d.display())));
                }
                let n = STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(SpillDir { dir: d.to_path_buf(), prefix: format!("m2c-store-{}-{n}", std::process::id()) })
            }
        };
        if budget_bytes == 0 {
            return Err(Error::InvalidArg("budget_bytes is 0: a store needs room for at least one checkpoint".into()));
        }
        Ok(Store {
            inner: Mutex::new(Inner {
                budget: budget_bytes,
                held: 0,
                entries: HashMap::new(),
                lru: BTreeMap::new(),
                clock: 0,
                gone: HashMap::new(),
                gone_order: VecDeque::new(),
                remember,
                stats: Stats { budget_bytes, ..Stats::default() },
                free: Vec::new(),
                tier,
                spill,
                spilled: HashMap::new(),
            }),
            tier,
            scratch: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The index is consistent at every unlock; a panic elsewhere while
        // holding it cannot leave it half-updated in a way that matters.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The precision this store keeps SSM states in.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Bytes one checkpoint of a cache of `cfg` takes in this store.
    pub fn checkpoint_bytes(&self, cfg: &Config) -> Result<u64> {
        self.tier.checkpoint_bytes(cfg)
    }

    /// Runs `f` on a full-precision staging buffer of `bytes` bytes.
    fn with_scratch<T>(&self, bytes: usize, f: impl FnOnce(&mut [u8]) -> Result<T>) -> Result<T> {
        match self.scratch.try_lock() {
            Ok(mut s) => {
                if s.len() != bytes {
                    *s = try_vec(bytes, 0u8, "checkpoint staging")?;
                }
                f(&mut s)
            }
            Err(_) => f(&mut try_vec(bytes, 0u8, "checkpoint staging")?),
        }
    }

    /// Bytes one full-precision checkpoint of a cache of `cfg` takes.
    pub fn entry_bytes(cfg: &Config) -> Result<u64> {
        cfg.shape()?;
        Ok(crate::snapshot::payload_bytes(cfg) as u64)
    }

    /// Stores the state of `slot` of `cache` (every layer, and its
    /// position) under `key`, replacing an unpinned entry of the same key.
    /// `Ok(None)` when stored; `Ok(Some(Miss::TooLarge))` when the entry
    /// does not fit the budget even after evicting every unpinned entry
    /// (nothing is evicted then, and a lookup of `key` answers that
    /// reason). A pinned entry under `key` is refused (`InvalidArg`).
    pub fn insert(&self, cache: &AnyCache, slot: i32, key: Key) -> Result<Option<Miss>> {
        let cfg = cache.config();
        let bytes = self.checkpoint_bytes(&cfg)?;
        cache.check_slot(slot)?;
        let recycled = {
            let mut g = self.lock();
            // The replaced entry and room first (the eviction is this
            // insert's anyway), so that a full store copies into the
            // buffer of a checkpoint it drops instead of faulting in fresh
            // pages.
            if let Some(miss) = g.admit(key, bytes)? {
                return Ok(Some(miss));
            }
            g.take_free(bytes as usize)
        };
        // The copy runs outside the lock.
        let mut data = match recycled {
            Some(b) => b,
            None => try_vec(bytes as usize, 0u8, "checkpoint")?,
        };
        let position = match self.tier {
            Tier::Full => cache.slot_export(slot, &mut data)?,
            tier => self.with_scratch(Store::entry_bytes(&cfg)? as usize, |full| {
                let position = cache.slot_export(slot, full)?;
                tier.encode(&cfg, full, &mut data)?;
                Ok(position)
            })?,
        };
        self.put(&cfg, key, position, data)
    }

    /// Stores a full-precision checkpoint (a capture's), at this store's
    /// tier.
    pub(crate) fn put_full(&self, cfg: &Config, key: Key, position: u64, full: Vec<u8>) -> Result<Option<Miss>> {
        if self.tier == Tier::Full {
            return self.put(cfg, key, position, full);
        }
        let bytes = self.checkpoint_bytes(cfg)? as usize;
        let mut data = match self.take_buffer(bytes) {
            Some(b) => b,
            None => try_vec(bytes, 0u8, "checkpoint")?,
        };
        self.tier.encode(cfg, &full, &mut data)?;
        self.put(cfg, key, position, data)
    }

    /// A buffer for a checkpoint of `bytes` bytes that is about to be
    /// filled and `put`: one the store kept, or one it frees by evicting
    /// the least recently used unpinned checkpoints when it is full (as
    /// the `put` would), else `None`.
    pub(crate) fn take_buffer(&self, bytes: usize) -> Option<Vec<u8>> {
        let mut g = self.lock();
        if let Some(b) = g.take_free(bytes) {
            return Some(b);
        }
        if g.held + bytes as u64 > g.budget {
            g.make_room(bytes as u64, Key::MAX);
        }
        g.take_free(bytes)
    }

    /// Stores a filled checkpoint (the bytes of [`AnyCache::slot_export`]
    /// of a cache with fingerprint `fp`) under `key`, making room.
    pub(crate) fn put(&self, cfg: &Config, key: Key, position: u64, data: Vec<u8>) -> Result<Option<Miss>> {
        let fp = fingerprint(cfg);
        let bytes = data.len() as u64;
        let mut g = self.lock();
        // Again: other threads may have pinned or inserted meanwhile.
        if let Some(miss) = g.admit(key, bytes)? {
            return Ok(Some(miss));
        }
        g.trim_free(bytes);
        g.clock += 1;
        let tick = g.clock;
        g.entries.insert(key, Entry { cfg: *cfg, fp, position, data: Arc::new(data), pins: 0, tick });
        g.unspill(key);
        g.lru.insert(tick, key);
        g.held += bytes;
        g.gone.remove(&key);
        g.stats.inserts += 1;
        Ok(None)
    }

    /// The longest prefix of `keys` (the keys of a prompt's blocks, in
    /// order; entry `i` holds the state after blocks `0..=i`) that has a
    /// checkpoint usable by a cache of `cfg`: the deepest such key, and why
    /// the block after it missed. Counts a hit when a block is covered and
    /// a miss (by that reason) when not every block is; refreshes the
    /// found entry's place in the eviction order.
    pub fn lookup(&self, cfg: &Config, keys: &[Key]) -> Lookup {
        let fp = fingerprint(cfg);
        let mut g = self.lock();
        let blocks = keys.iter().rposition(|k| g.why(*k, &fp).is_none()).map_or(0, |i| i + 1);
        let miss = keys.get(blocks).map(|k| g.why(*k, &fp).expect("no usable entry past the deepest one"));
        if blocks > 0 {
            g.stats.hits += 1;
            g.touch(keys[blocks - 1]);
        }
        if let Some(m) = miss {
            g.stats.misses[m.index()] += 1;
        }
        Lookup { blocks, miss }
    }

    /// Restores the checkpoint under `key` into `slot` of `cache`: the
    /// slot's state in every layer and its position become the
    /// checkpoint's. A key with no entry is `NotFound` naming the reason,
    /// an entry of another shape `Incompatible`; the slot is then
    /// unchanged.
    pub fn restore(&self, key: Key, cache: &mut AnyCache, slot: i32) -> Result<()> {
        let cfg = cache.config();
        let fp = fingerprint(&cfg);
        cache.check_slot(slot)?;
        let (data, position) = {
            let mut g = self.lock();
            match g.why(key, &fp) {
                None => {}
                Some(Miss::Incompatible) => {
                    return Err(Error::Incompatible(format!(
                        "the checkpoint under key {key:#034x} was made by a cache of another shape or dtype"
                    )));
                }
                Some(m) => {
                    return Err(Error::NotFound(format!("no checkpoint under key {key:#034x}: {}", m.text())));
                }
            }
            let Some(e) = g.entries.get(&key) else {
                let path = g.spilled[&key].path.clone();
                drop(g);
                return self.restore_spilled(key, &path, cache, slot);
            };
            let found = (Arc::clone(&e.data), e.position);
            g.touch(key);
            g.stats.restores += 1;
            found
        };
        match self.tier {
            Tier::Full => cache.slot_import(slot, &data, position),
            tier => self.with_scratch(Store::entry_bytes(&cfg)? as usize, |full| {
                tier.decode(&cfg, &data, full)?;
                cache.slot_import(slot, full, position)
            }),
        }
    }

    /// A restore from the disk tier: the file is read and checked whole; a
    /// damaged one is a miss (`NotFound`, reason `Corrupt`) and is deleted;
    /// a good one goes into the slot and back into memory.
    fn restore_spilled(&self, key: Key, path: &std::path::Path, cache: &mut AnyCache, slot: i32) -> Result<()> {
        let cfg = cache.config();
        let checked = crate::persist::read_all(path)
            .and_then(|bytes| crate::snapshot::check_snapshot(&cfg, &bytes).map(|pos| (bytes, pos)));
        let (bytes, position) = match checked {
            Ok(v) => v,
            Err(e) => {
                let mut g = self.lock();
                if g.spilled.get(&key).is_some_and(|s| s.path == path) {
                    g.unspill(key);
                    g.forget(key, Miss::Corrupt);
                }
                return Err(Error::NotFound(format!(
                    "no checkpoint under key {key:#034x}: {} (its spilled file: {e})",
                    Miss::Corrupt.text()
                )));
            }
        };
        let payload = &bytes[crate::snapshot::SLOT_HEADER_BYTES..bytes.len() - crate::snapshot::CHECKSUM_BYTES];
        cache.slot_import(slot, payload, position)?;
        self.lock().stats.restores += 1;
        // Back into memory; if it does not fit, it stays on disk.
        let _ = self.put_full(&cfg, key, position, payload.to_vec());
        Ok(())
    }

    /// Pins `key`'s entry (counted: each pin needs an unpin): it is not
    /// evicted for room, nor replaced, until unpinned.
    pub fn pin(&self, key: Key) -> Result<()> {
        let mut g = self.lock();
        let e = g.entries.get_mut(&key).ok_or_else(|| not_found(key))?;
        e.pins = e.pins.checked_add(1).ok_or_else(|| Error::OutOfRange("pin count overflows".into()))?;
        if e.pins == 1 {
            g.stats.pinned += 1;
        }
        Ok(())
    }

    /// Drops one pin of `key`'s entry (`InvalidArg` if it has none).
    pub fn unpin(&self, key: Key) -> Result<()> {
        let mut g = self.lock();
        let e = g.entries.get_mut(&key).ok_or_else(|| not_found(key))?;
        if e.pins == 0 {
            return Err(Error::InvalidArg(format!("key {key:#034x} is not pinned")));
        }
        e.pins -= 1;
        if e.pins == 0 {
            g.stats.pinned -= 1;
        }
        Ok(())
    }

    /// Evicts `key`'s entry now (a pinned one is refused with
    /// `InvalidArg`); a later lookup answers `Evicted`.
    pub fn evict(&self, key: Key) -> Result<()> {
        let mut g = self.lock();
        if !g.entries.contains_key(&key) && g.unspill(key) {
            g.stats.evictions += 1;
            g.forget(key, Miss::Evicted);
            return Ok(());
        }
        let e = g.entries.get(&key).ok_or_else(|| not_found(key))?;
        if e.pins > 0 {
            return Err(Error::InvalidArg(format!("key {key:#034x} is pinned: unpin it before evicting it")));
        }
        g.remove(key, Miss::Evicted);
        Ok(())
    }

    /// The counters and occupancy.
    pub fn stats(&self) -> Stats {
        let g = self.lock();
        Stats { entries: g.entries.len() as u64, bytes_held: g.held, spilled: g.spilled.len() as u64, ..g.stats }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        for s in g.spilled.values() {
            let _ = std::fs::remove_file(&s.path);
        }
    }
}

fn not_found(key: Key) -> Error {
    Error::NotFound(format!("no checkpoint under key {key:#034x}"))
}

/// The key of a block of `tokens` that follows the block keyed `prev`
/// (`None`: the first block of a prompt), so that a prompt's block keys
/// chain: equal keys mean equal prefixes, up to 128-bit hash collisions.
/// Two seeded XXH64 hashes of the previous key and the tokens'
/// little-endian bytes.
pub fn chain_key(prev: Option<Key>, tokens: &[i32]) -> Key {
    let mut bytes = Vec::with_capacity(17 + tokens.len() * 4);
    match prev {
        None => bytes.push(0u8),
        Some(k) => {
            bytes.push(1u8);
            bytes.extend_from_slice(&k.to_le_bytes());
        }
    }
    for t in tokens {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    let lo = xxh64_seeded(&bytes, 0x6d32_635f_6b65_795f);
    let hi = xxh64_seeded(&bytes, 0x9e37_79b9_7f4a_7c15);
    (u128::from(hi) << 64) | u128::from(lo)
}
