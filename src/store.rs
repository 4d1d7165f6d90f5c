//! Exported prefix store: checkpoints of slots under 128-bit keys, lookups
//! that say why they missed, restores into slots.

use super::*;
use m2c_core::store::{Key, Miss, Stats, Store, chain_key};
use m2c_core::tier::Tier;

/// A prefix store: checkpoints of slots (every layer's conv window and SSM
/// state, and the position) under 128-bit keys the engine chooses, within
/// a memory budget. Created by `m2c_store_create`, freed by
/// `m2c_store_destroy`. Opaque.
///
/// A store is its own handle, not part of a cache: one store serves any
/// number of caches, and a checkpoint restores into any cache of the shape
/// (and storage dtypes) of the cache it came from. Its memory is host
/// memory, whatever the caches' device. Every call on a store is
/// thread-safe (one lock guards its index; the bytes are copied outside
/// it), and concurrent calls behave as some serial order of them.
///
/// The flow for prefix reuse: hash the prompt's token blocks into a chain
/// of keys (`m2c_key_chain`, or your own hashes); `m2c_store_lookup` says
/// how many leading blocks have a checkpoint (and why the next one does
/// not); `m2c_store_restore` the deepest one into the request's slot;
/// prefill the rest, inserting (`m2c_store_insert`) at the block
/// boundaries you want to reuse later.
pub struct m2c_store {
    pub(crate) inner: Store,
}

/// A 128-bit store key: `lo` and `hi` halves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct m2c_key {
    pub lo: u64,
    pub hi: u64,
}

impl m2c_key {
    fn get(&self) -> Key {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
    fn of(k: Key) -> m2c_key {
        m2c_key { lo: k as u64, hi: (k >> 64) as u64 }
    }
}

/// Why a store key has no usable checkpoint (`M2C_MISS_*`). Values are
/// part of the ABI.
pub type m2c_miss = i32;

/// Not a miss: every block was covered.
pub const M2C_MISS_NONE: m2c_miss = 0;
/// Nothing was stored under the key (or its reason is older than the
/// store remembers: `remember_misses`).
pub const M2C_MISS_NEVER_STORED: m2c_miss = 1;
/// The checkpoint was evicted: for room (least recently used first), or
/// by `m2c_store_evict`.
pub const M2C_MISS_EVICTED: m2c_miss = 2;
/// An insert under the key was refused: the checkpoint is larger than the
/// budget, or the pinned checkpoints leave it no room.
pub const M2C_MISS_TOO_LARGE: m2c_miss = 3;
/// The checkpoint was made by a cache of another shape or storage dtype.
pub const M2C_MISS_INCOMPATIBLE: m2c_miss = 4;
/// The checkpoint's bytes were found damaged (reserved for spilled
/// checkpoints).
pub const M2C_MISS_CORRUPT: m2c_miss = 5;

fn miss_code(m: Option<Miss>) -> m2c_miss {
    match m {
        None => M2C_MISS_NONE,
        Some(Miss::NeverStored) => M2C_MISS_NEVER_STORED,
        Some(Miss::Evicted) => M2C_MISS_EVICTED,
        Some(Miss::TooLarge) => M2C_MISS_TOO_LARGE,
        Some(Miss::Incompatible) => M2C_MISS_INCOMPATIBLE,
        Some(Miss::Corrupt) => M2C_MISS_CORRUPT,
    }
}

/// The precision a store keeps its checkpoints' SSM states in
/// (`M2C_TIER_*`). Values are part of the ABI.
pub type m2c_tier = u32;

/// As stored: a restore is bit-exact (the default).
pub const M2C_TIER_FULL: m2c_tier = 0;
/// bf16, rounded to nearest even (states already stored in 2 bytes are
/// kept as they are): half the bytes of an f32 state.
pub const M2C_TIER_BF16: m2c_tier = 1;
/// int8 with an f32 scale per (head, state channel): `scale = max over
/// head_dim of |s| / 127`; about a quarter of an f32 state. A restore is
/// within half a scale step (then the storage rounding) of the state.
pub const M2C_TIER_INT8: m2c_tier = 2;

/// Options of `m2c_store_create`. Start from `m2c_store_config_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_store_config {
    /// `sizeof(struct m2c_store_config)`, set by `m2c_store_config_init`.
    pub struct_size: u32,
    /// Most bytes of checkpoints held at once (> 0; default 1 GiB). One
    /// checkpoint takes `m2c_config_bytes` of a one-slot cache of the
    /// shape.
    pub budget_bytes: u64,
    /// How many keys that lost (or never got) their checkpoint the store
    /// remembers the reason of (default 65536; 0: none, so every miss of
    /// a key without a checkpoint reads `M2C_MISS_NEVER_STORED`).
    pub remember_misses: u64,
    /// The precision of the checkpoints' SSM states (`M2C_TIER_*`, default
    /// `M2C_TIER_FULL`); conv windows are always kept as stored. A reduced
    /// tier holds 2-4x more prefixes in the same budget; its inserts and
    /// restores convert through a full-precision staging copy. The
    /// fidelity of each tier over 1,000 decode steps is in
    /// docs/BENCHMARKS.md (`m2c-bench --fidelity`).
    pub tier: m2c_tier,
    /// The disk tier (NULL: none, the default): an existing directory where
    /// checkpoints evicted for room are written, each as a slot snapshot
    /// (docs/FORMATS.md, crash-safe: temporary file, fsync, rename), so
    /// their keys stay covered. A restore reads the file whole, checks it
    /// and takes the checkpoint back into memory; a damaged file is a miss
    /// (`M2C_MISS_CORRUPT`) and is deleted. The store deletes its files when
    /// it is destroyed. The string is read during `m2c_store_create` only.
    pub spill_dir: *const c_char,
}

/// What `m2c_store_lookup` found.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_lookup {
    /// `sizeof(struct m2c_lookup)`, set by the caller (`m2c_lookup_init`).
    pub struct_size: u32,
    /// Leading blocks covered: `keys[blocks - 1]` is the deepest key with
    /// a usable checkpoint, the one to restore (0: none).
    pub blocks: u64,
    /// Why `keys[blocks]` has none (`M2C_MISS_NONE` when `blocks == n`).
    pub miss: m2c_miss,
}

/// A store's counters and occupancy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_store_stats {
    /// `sizeof(struct m2c_store_stats)`, set by the caller
    /// (`m2c_store_stats_init`).
    pub struct_size: u32,
    /// Checkpoints held, and their bytes.
    pub entries: u64,
    pub bytes_held: u64,
    pub budget_bytes: u64,
    /// Checkpoints pinned at least once.
    pub pinned: u64,
    /// Inserts that stored a checkpoint.
    pub inserts: u64,
    /// Lookups that covered at least one block.
    pub hits: u64,
    /// Lookups that did not cover every block, by the reason of the first
    /// block not covered.
    pub misses_never_stored: u64,
    pub misses_evicted: u64,
    pub misses_too_large: u64,
    pub misses_incompatible: u64,
    pub misses_corrupt: u64,
    /// Checkpoints evicted (for room or by `m2c_store_evict`).
    pub evictions: u64,
    /// Restores into a slot.
    pub restores: u64,
    /// Checkpoints on disk now (`spill_dir`), and evictions that wrote one.
    pub spilled: u64,
    pub spills: u64,
}

fn stats_to_c(s: &Stats) -> m2c_store_stats {
    m2c_store_stats {
        struct_size: std::mem::size_of::<m2c_store_stats>() as u32,
        entries: s.entries,
        bytes_held: s.bytes_held,
        budget_bytes: s.budget_bytes,
        pinned: s.pinned,
        inserts: s.inserts,
        hits: s.hits,
        misses_never_stored: s.misses[0],
        misses_evicted: s.misses[1],
        misses_too_large: s.misses[2],
        misses_incompatible: s.misses[3],
        misses_corrupt: s.misses[4],
        evictions: s.evictions,
        restores: s.restores,
        spilled: s.spilled,
        spills: s.spills,
    }
}

/// Fills `*cfg` with the defaults (1 GiB budget, 65536 remembered misses,
/// `M2C_TIER_FULL`) and sets `struct_size`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_config_init(cfg: *mut m2c_store_config) {
    init_struct("m2c_store_config_init", cfg, || m2c_store_config {
        struct_size: std::mem::size_of::<m2c_store_config>() as u32,
        budget_bytes: 1 << 30,
        remember_misses: m2c_core::store::DEFAULT_REMEMBER as u64,
        tier: M2C_TIER_FULL,
        spill_dir: std::ptr::null(),
    })
}

/// Sets `out->struct_size` for `m2c_store_lookup` (the other fields are
/// zeroed). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_lookup_init(out: *mut m2c_lookup) {
    init_struct("m2c_lookup_init", out, || m2c_lookup {
        struct_size: std::mem::size_of::<m2c_lookup>() as u32,
        blocks: 0,
        miss: M2C_MISS_NONE,
    })
}

/// Sets `out->struct_size` for `m2c_store_get_stats` (the other fields are
/// zeroed). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_stats_init(out: *mut m2c_store_stats) {
    init_struct("m2c_store_stats_init", out, || stats_to_c(&Stats::default()))
}

/// Creates an empty store. On success `*out` receives a new handle the
/// caller owns and frees with `m2c_store_destroy`; on failure `*out` is
/// not written.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cfg, out), `M2C_STATUS_INVALID_ARG`
/// (unknown `struct_size`; `budget_bytes` of 0; an unknown `tier`),
/// `M2C_STATUS_IO` (`spill_dir` is not an existing directory),
/// `M2C_STATUS_OUT_OF_MEMORY`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_create(cfg: *const m2c_store_config, out: *mut *mut m2c_store) -> m2c_status {
    ffi_status("m2c_store_create", || {
        // SAFETY: NULL or a valid config, per the contract.
        let cfg = unsafe { arg_ref(cfg, "cfg") }?;
        check_struct_size::<m2c_store_config>(cfg.struct_size, "cfg", "m2c_store_config_init")?;
        let out = out_ptr(out, "out")?;
        let remember = usize::try_from(cfg.remember_misses).unwrap_or(usize::MAX);
        let tier = match cfg.tier {
            M2C_TIER_FULL => Tier::Full,
            M2C_TIER_BF16 => Tier::Bf16,
            M2C_TIER_INT8 => Tier::Int8,
            t => return Err(CoreError::InvalidArg(format!("cfg->tier = {t} is not an M2C_TIER_* value")).into()),
        };
        let dir = if cfg.spill_dir.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string, per the contract.
            let bytes = unsafe { CStr::from_ptr(cfg.spill_dir) }.to_bytes();
            Some(std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes)))
        };
        let store = Box::new(m2c_store { inner: Store::with_spill(cfg.budget_bytes, remember, tier, dir.as_deref())? });
        // SAFETY: checked non-NULL and aligned.
        unsafe { out.write(Box::into_raw(store)) };
        Ok(())
    })
}

/// Frees a store and every checkpoint in it. NULL is a no-op. Must not
/// run concurrently with any other call on the same store, and the handle
/// must not be used afterwards. Caches are not affected.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_destroy(store: *mut m2c_store) {
    ffi_value("m2c_store_destroy", (), || {
        if !store.is_null() {
            // SAFETY: a handle from m2c_store_create, destroyed once.
            drop(unsafe { Box::from_raw(store) });
        }
    })
}

/// Copies the state of `slot` of `cache` (every layer's conv window and
/// SSM state, in the storage dtypes, and its position) into the store
/// under `*key`, replacing the checkpoint already there unless it is
/// pinned. To make room it evicts the least recently used unpinned
/// checkpoints. A device cache's rows are copied to host memory.
///
/// A checkpoint that cannot fit (larger than the budget, or the pinned
/// checkpoints leave no room) is not an error: nothing is stored or
/// evicted, `*out_miss` (if not NULL) receives `M2C_MISS_TOO_LARGE`, and a
/// later lookup of the key answers that reason. Otherwise `*out_miss`
/// receives `M2C_MISS_NONE`.
///
/// Cost: one copy of the slot's bytes, in parallel over layers (see
/// `m2c_set_num_threads`); a full store copies into the buffer of the
/// checkpoint it evicts, so inserting faults in no fresh memory.
///
/// Errors: `M2C_STATUS_NULL_ARG` (store, cache, key),
/// `M2C_STATUS_OUT_OF_RANGE` (slot), `M2C_STATUS_INVALID_ARG` (a pinned
/// checkpoint under `key`), `M2C_STATUS_OUT_OF_MEMORY`. On failure nothing
/// is stored, and nothing is evicted except, on `M2C_STATUS_OUT_OF_MEMORY`,
/// the checkpoints evicted to make room. Thread-safe (takes the cache's
/// read lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_store_insert(
    store: *mut m2c_store,
    cache: *const m2c_cache,
    slot: i32,
    key: *const m2c_key,
    out_miss: *mut m2c_miss,
) -> m2c_status {
    ffi_status("m2c_store_insert", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (store, cache, key) = unsafe { (arg_ref(store, "store")?, arg_ref(cache, "cache")?, arg_ref(key, "key")?) };
        let out = if out_miss.is_null() { None } else { Some(out_ptr(out_miss, "out_miss")?) };
        let c = cache.read();
        if let Some(o) = out {
            super::cache::check_out(&c, o, "out_miss")?;
        }
        let miss = store.inner.insert(&c, slot, key.get())?;
        if let Some(o) = out {
            // SAFETY: non-NULL, aligned, outside the cache's storage.
            unsafe { o.write(miss_code(miss)) };
        }
        Ok(())
    })
}

/// Finds the longest cached prefix of a prompt: `keys` (`n` entries, the
/// keys of its blocks in order; entry `i` names the state after blocks
/// `0..=i`) against the checkpoints usable by `cache` (same shape and
/// dtypes). `out->blocks` receives the number of leading blocks covered
/// (`keys[blocks - 1]` is the checkpoint to restore; 0: none) and
/// `out->miss` why `keys[blocks]` has no checkpoint (`M2C_MISS_NONE` when
/// all `n` are covered). Only the deepest checkpoint matters: earlier ones
/// may have been evicted. Counts a hit when a block is covered and a miss
/// by reason when not every block is, and makes the found checkpoint the
/// most recently used. `n = 0` covers nothing and counts nothing. A chain
/// of 128 keys takes microseconds.
///
/// Errors: `M2C_STATUS_NULL_ARG` (store, cache, out; keys NULL with
/// `n > 0`), `M2C_STATUS_INVALID_ARG` (unknown `out->struct_size`). `*out`
/// is written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_lookup(
    store: *mut m2c_store,
    cache: *const m2c_cache,
    keys: *const m2c_key,
    n: usize,
    out: *mut m2c_lookup,
) -> m2c_status {
    ffi_status("m2c_store_lookup", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (store, cache) = unsafe { (arg_ref(store, "store")?, arg_ref(cache, "cache")?) };
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and aligned; the caller provides the struct.
        check_struct_size::<m2c_lookup>(unsafe { (*out).struct_size }, "out", "m2c_lookup_init")?;
        // SAFETY: NULL or `n` keys, per the contract.
        let keys = unsafe { super::spec::array_arg(keys, n, "keys") }?;
        let cfg = cache.read().config();
        let ks: Vec<Key> = keys.iter().map(m2c_key::get).collect();
        let found = store.inner.lookup(&cfg, &ks);
        let r = m2c_lookup {
            struct_size: std::mem::size_of::<m2c_lookup>() as u32,
            blocks: found.blocks as u64,
            miss: miss_code(found.miss),
        };
        // SAFETY: as above.
        unsafe { out.write(r) };
        Ok(())
    })
}

/// Restores the checkpoint under `*key` into `slot` of `cache`: the slot's
/// conv window and SSM state in every layer, and its position, become the
/// checkpoint's (bit for bit the state of the slot it was inserted from).
/// The slot leaves a speculative round, as after any write. The slot need
/// not be acquired; acquire it first if you use `m2c_slot_acquire`.
///
/// Errors: `M2C_STATUS_NULL_ARG` (store, cache, key),
/// `M2C_STATUS_OUT_OF_RANGE` (slot), `M2C_STATUS_NOT_FOUND` (no checkpoint
/// under the key; the message gives the reason, as a lookup would),
/// `M2C_STATUS_INCOMPATIBLE` (a checkpoint of another shape or dtype). On
/// failure the slot is unchanged. Thread-safe (takes the cache's write
/// lock; a concurrent eviction of the checkpoint does not disturb it).
#[no_mangle]
pub unsafe extern "C" fn m2c_store_restore(
    store: *mut m2c_store,
    key: *const m2c_key,
    cache: *mut m2c_cache,
    slot: i32,
) -> m2c_status {
    ffi_status("m2c_store_restore", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (store, key, cache) = unsafe { (arg_ref(store, "store")?, arg_ref(key, "key")?, arg_ref(cache, "cache")?) };
        let mut c = cache.write()?;
        Ok(store.inner.restore(key.get(), &mut c, slot)?)
    })
}

/// Pins the checkpoint under `*key`: it is neither evicted for room nor
/// replaced until unpinned (pins count: each needs an unpin). Pin what a
/// running request will restore again.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_NOT_FOUND`,
/// `M2C_STATUS_OUT_OF_RANGE` (2^32 - 1 pins). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_pin(store: *mut m2c_store, key: *const m2c_key) -> m2c_status {
    ffi_status("m2c_store_pin", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (store, key) = unsafe { (arg_ref(store, "store")?, arg_ref(key, "key")?) };
        Ok(store.inner.pin(key.get())?)
    })
}

/// Drops one pin of the checkpoint under `*key`.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_NOT_FOUND`,
/// `M2C_STATUS_INVALID_ARG` (not pinned). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_unpin(store: *mut m2c_store, key: *const m2c_key) -> m2c_status {
    ffi_status("m2c_store_unpin", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (store, key) = unsafe { (arg_ref(store, "store")?, arg_ref(key, "key")?) };
        Ok(store.inner.unpin(key.get())?)
    })
}

/// Evicts the checkpoint under `*key` now; a later lookup of the key
/// answers `M2C_MISS_EVICTED`.
///
/// Errors: `M2C_STATUS_NULL_ARG`, `M2C_STATUS_NOT_FOUND`,
/// `M2C_STATUS_INVALID_ARG` (pinned: unpin it first). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_evict(store: *mut m2c_store, key: *const m2c_key) -> m2c_status {
    ffi_status("m2c_store_evict", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (store, key) = unsafe { (arg_ref(store, "store")?, arg_ref(key, "key")?) };
        Ok(store.inner.evict(key.get())?)
    })
}

/// Copies the store's counters and occupancy into `*out` (the caller sets
/// `out->struct_size` first: `m2c_store_stats_init`).
///
/// Errors: `M2C_STATUS_NULL_ARG` (store, out), `M2C_STATUS_INVALID_ARG`
/// (unknown `out->struct_size`). `*out` is written only on success.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_store_get_stats(store: *const m2c_store, out: *mut m2c_store_stats) -> m2c_status {
    ffi_status("m2c_store_get_stats", || {
        // SAFETY: NULL or a valid handle, per the contract.
        let store = unsafe { arg_ref(store, "store") }?;
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and aligned; the caller provides the struct.
        check_struct_size::<m2c_store_stats>(unsafe { (*out).struct_size }, "out", "m2c_store_stats_init")?;
        let s = stats_to_c(&store.inner.stats());
        // SAFETY: as above.
        unsafe { out.write(s) };
        Ok(())
    })
}

/// The key of a block of `n` token ids that follows the block keyed
/// `*prev` (`prev == NULL`: the prompt's first block), into `*out`: chain
/// it over a prompt's blocks to get the keys `m2c_store_lookup` takes.
/// Equal keys mean equal token prefixes (up to 128-bit hash collisions);
/// the same tokens split into other blocks give other keys. The hash is
/// two seeded XXH64 of the previous key and the ids' little-endian bytes,
/// and stays the same across releases. Engines with their own block
/// hashes can use those instead.
///
/// Errors: `M2C_STATUS_NULL_ARG` (out; tokens NULL with `n > 0`).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_key_chain(
    prev: *const m2c_key,
    tokens: *const i32,
    n: usize,
    out: *mut m2c_key,
) -> m2c_status {
    ffi_status("m2c_key_chain", || {
        // SAFETY: NULL or a valid key, per the contract.
        let prev = if prev.is_null() { None } else { Some(unsafe { arg_ref(prev, "prev") }?.get()) };
        // SAFETY: NULL or `n` ids, per the contract.
        let toks = unsafe { super::spec::array_arg(tokens, n, "tokens") }?;
        let out = out_ptr(out, "out")?;
        let k = m2c_key::of(chain_key(prev, toks));
        // SAFETY: non-NULL and aligned.
        unsafe { out.write(k) };
        Ok(())
    })
}

/// A static description of an `M2C_MISS_*` value ("unknown miss reason"
/// for others). Never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn m2c_miss_str(miss: m2c_miss) -> *const c_char {
    ffi_value("m2c_miss_str", c"unknown miss reason".as_ptr(), || {
        match miss {
            M2C_MISS_NONE => c"not a miss",
            M2C_MISS_NEVER_STORED => c"never stored",
            M2C_MISS_EVICTED => c"evicted",
            M2C_MISS_TOO_LARGE => c"too large for the store's budget",
            M2C_MISS_INCOMPATIBLE => c"made by a cache of another shape or dtype",
            M2C_MISS_CORRUPT => c"damaged",
            _ => c"unknown miss reason",
        }
        .as_ptr()
    })
}

/// A checkpoint to capture during prefills: the state of `slot` after
/// `tokens` more prompt tokens, to be kept under `key`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m2c_capture_point {
    pub slot: i32,
    /// At least 1: tokens the slot's prefill calls bring after
    /// `m2c_capture_begin`, counted per layer across calls (chunked
    /// prefills count).
    pub tokens: u64,
    pub key: m2c_key,
}

/// Declares checkpoints to capture inside the prefill calls that follow,
/// for `store`, replacing any earlier declaration (`n = 0` cancels it):
/// for each point,
/// the state of every layer of `slot` after `tokens` more prompt tokens,
/// with position (the slot's position now) + `tokens`. Each
/// `m2c_conv_prefill` / `m2c_ssm_prefill` call counts the tokens it brings
/// per slot and layer; where a point falls inside a call, that slot's
/// sequence runs in segments cut at the point (bit-identical: a prefill
/// equals its steps) and the layer's row is copied after the segment, in
/// the same pass over the tokens, at any token (no block alignment).
/// `m2c_capture_end` then puts the points into a store.
///
/// Write only prompt tokens of these slots through prefills meanwhile:
/// steps, writes and resets of a slot are not counted. Each point holds
/// one slot's bytes (host memory) from now until `m2c_capture_end`: a
/// buffer the store kept from an evicted checkpoint when it has one
/// (evicting its least recently used unpinned checkpoints for room when it
/// is full, as the inserts would), else a fresh one.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, store; points NULL with `n > 0`),
/// `M2C_STATUS_OUT_OF_RANGE` (a slot; a position that would overflow),
/// `M2C_STATUS_INVALID_ARG` (`tokens` of 0; the same slot and `tokens`
/// twice), `M2C_STATUS_OUT_OF_MEMORY`. On failure the earlier declaration
/// stays. Thread-safe (takes the cache's write lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_capture_begin(
    cache: *mut m2c_cache,
    store: *mut m2c_store,
    points: *const m2c_capture_point,
    n: usize,
) -> m2c_status {
    ffi_status("m2c_capture_begin", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, store) = unsafe { (arg_ref(cache, "cache")?, arg_ref(store, "store")?) };
        // SAFETY: NULL or `n` points, per the contract.
        let ps = unsafe { super::spec::array_arg(points, n, "points") }?;
        let pts: Vec<(i32, u64, Key)> = ps.iter().map(|p| (p.slot, p.tokens, p.key.get())).collect();
        Ok(cache.write()?.capture_begin(&store.inner, &pts)?)
    })
}

/// Ends the capture declared by `m2c_capture_begin`: every point goes into
/// `store` (the one given there; as `m2c_store_insert` would put it,
/// evicting for room), and
/// `out_misses[i]` (if not NULL; `n` must then be the number of points)
/// receives `M2C_MISS_NONE` or `M2C_MISS_TOO_LARGE` for point `i`. With no
/// capture declared it does nothing.
///
/// Errors: `M2C_STATUS_NULL_ARG` (cache, store), `M2C_STATUS_SHAPE_MISMATCH`
/// (`n` is not the number of points), `M2C_STATUS_INVALID_ARG` (another
/// store than `m2c_capture_begin`'s; a point
/// some layer's conv or SSM prefill has not reached: the message names it
/// and the layer; the capture stays declared, so more prefill calls can
/// reach it), `M2C_STATUS_INVALID_ARG` (a pinned checkpoint under a
/// point's key: the points before it are stored, and the capture ends).
/// Thread-safe (takes the cache's write lock).
#[no_mangle]
pub unsafe extern "C" fn m2c_capture_end(
    cache: *mut m2c_cache,
    store: *mut m2c_store,
    out_misses: *mut m2c_miss,
    n: usize,
) -> m2c_status {
    ffi_status("m2c_capture_end", || {
        // SAFETY: NULL or valid pointers, per the contract.
        let (cache, store) = unsafe { (arg_ref(cache, "cache")?, arg_ref(store, "store")?) };
        let mut c = cache.write()?;
        let out = if out_misses.is_null() {
            None
        } else {
            let pending = c.capture_pending();
            if n != pending {
                return Err(CoreError::ShapeMismatch(format!("n = {n}, but {pending} points are declared")).into());
            }
            let o = out_ptr(out_misses, "out_misses")?;
            super::cache::check_outside(&c, o.cast_const().cast(), n * std::mem::size_of::<m2c_miss>(), "out_misses")?;
            Some(o)
        };
        let misses = c.capture_end(&store.inner)?;
        if let Some(o) = out {
            for (i, m) in misses.iter().enumerate() {
                // SAFETY: `n` entries, checked above.
                unsafe { o.add(i).write(miss_code(*m)) };
            }
        }
        Ok(())
    })
}
