//! The reference model of the `api_sequence` target: runs a `Program`
//! (gen.rs) against a cache through the C API, mirrored on a model of the
//! whole state.
//!
//! After every call:
//! - no call ever returns M2C_STATUS_PANIC (and a panic inside the library
//!   aborts the fuzzer through libfuzzer's panic hook anyway);
//! - the model predicts from the arguments alone whether the call must
//!   succeed, and the status must agree;
//! - a failed call leaves the state byte-identical (every layer's storage,
//!   every position, the acquired count) and writes none of its outputs;
//! - a successful data-movement call (update/set/read/reset/advance/
//!   copy_slots/acquire/release/slot save+load, and the window update of
//!   conv_step / conv_prefill) matches the model exactly (NaN payloads
//!   aside when a value is converted); ssm_step / ssm_prefill may change
//!   only the SSM state of the slots they address, in that layer, and
//!   every padding row of every output is zero.

use super::gen::*;
use super::*;
use m2c::*;
use std::ffi::c_void;
use std::ptr;

/// The calls of a program past this many are not run.
pub const MAX_CALLS: usize = 48;

/// Speculative commits that folded at least one token, over the process
/// (the corpus generator keeps seed programs that reach one).
pub static COMMITTED_PATHS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Store restores that succeeded, over the process (the corpus generator
/// keeps store seed programs that reach one).
pub static RESTORED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `prog` on a fresh cache of its shape; panics on the first call
/// whose status or effect differs from the model.
pub fn run(prog: Program) {
    let sh = prog.shape.shape();
    let cache = create(&sh);
    let (cv, _) = views(cache, 0);
    let model = image(cache, &sh);
    let mut h = Harness {
        sh,
        cache,
        model,
        acquired: vec![false; sh.slots],
        cache_mem: (cv.as_ptr() as *mut c_void, cv.len()),
        spec: SpecModel::default(),
        store: StoreModel::new(&sh),
        snap_format: 1,
    };
    for call in prog.calls.iter().take(MAX_CALLS) {
        h.call(call);
    }
    // SAFETY: handles from m2c_create / m2c_store_create, not used afterwards.
    unsafe {
        m2c_destroy(h.cache);
        m2c_store_destroy(h.store.handle);
    }
}

impl ShapeSpec {
    pub fn shape(&self) -> Shape {
        Shape {
            layers: self.layers,
            slots: self.slots,
            inter: 4,
            heads: 2,
            head_dim: 2,
            state: 2,
            groups: self.groups,
            k: self.kernel,
            w: if self.width_k_minus_1 { self.kernel - 1 } else { self.kernel },
            cdt: self.conv_dtype,
            sdt: self.ssm_dtype,
        }
    }
}

/// The statuses a refused call may return (each documented by some call
/// of the program; which one is not part of the model).
const REFUSALS: [m2c_status; 9] = [
    M2C_STATUS_NOT_FOUND,
    M2C_STATUS_NULL_ARG,
    M2C_STATUS_INVALID_ARG,
    M2C_STATUS_OUT_OF_RANGE,
    M2C_STATUS_SHAPE_MISMATCH,
    M2C_STATUS_UNSUPPORTED_DTYPE,
    M2C_STATUS_NO_FREE_SLOT,
    M2C_STATUS_CORRUPT,
    M2C_STATUS_INCOMPATIBLE,
];

fn slot_in_range(s: i32, num_slots: usize) -> bool {
    s >= 0 && (s as usize) < num_slots
}

/// A slot selection resolved for a shape: `list` None means the slots
/// pointer is NULL.
struct SlotArg {
    list: Option<Vec<i32>>,
    n: usize,
    /// Per row: the slot it addresses, or None for padding.
    rows: Vec<Option<usize>>,
    ok: bool,
}

impl SlotArg {
    fn new(sel: &Slots, num_slots: usize) -> SlotArg {
        match sel {
            Slots::Dense { n } => {
                let n = *n as usize % (num_slots + 1);
                SlotArg { list: None, n, rows: (0..n).map(Some).collect(), ok: true }
            }
            Slots::DenseTooMany { extra } => {
                SlotArg { list: None, n: num_slots + 1 + *extra as usize, rows: vec![], ok: false }
            }
            Slots::List(l) => {
                let list: Vec<i32> = l.0.iter().map(|s| s.resolve(num_slots)).collect();
                let ok = selection_ok(&list, num_slots);
                let rows = list.iter().map(|&s| usize::try_from(s).ok()).collect();
                SlotArg { n: list.len(), list: Some(list), rows, ok }
            }
        }
    }
    fn ptr(&self) -> *const i32 {
        self.list.as_ref().map_or(ptr::null(), |l| l.as_ptr())
    }
}

fn selection_ok(list: &[i32], num_slots: usize) -> bool {
    list.iter().all(|&s| s < 0 || (s as usize) < num_slots)
        && list.iter().enumerate().all(|(i, &s)| s < 0 || !list[..i].contains(&s))
}

/// A buffer argument ready to pass: its memory, pointer, length and
/// whether (pointer, length) is acceptable in itself.
struct BufArg {
    buf: CBuf,
    mode: PtrMode,
    alias: *mut c_void,
    len: usize,
    esize: usize,
}

impl BufArg {
    /// `len` elements of `dtype` (any code: bad codes are sized as f32).
    /// Lengths too large to allocate get `correct` elements of memory: the
    /// library must refuse them before touching anything.
    fn new(dtype: u32, len: usize, correct: usize, mode: PtrMode, cache_mem: (*mut c_void, usize)) -> BufArg {
        let esize = if dtype <= M2C_DTYPE_F16 { dtype_size(dtype) } else { 4 };
        let elems = if len <= 1 << 16 { len.max(correct) } else { correct };
        let off = if mode == PtrMode::Misaligned { 1 } else { 0 };
        let buf = CBuf::new(elems * esize, off);
        // Aliasing the cache only when the claimed bytes fit inside its
        // storage (otherwise it would be our own out-of-bounds pointer).
        let mode =
            if mode == PtrMode::Alias && len.saturating_mul(esize) > cache_mem.1 { PtrMode::Normal } else { mode };
        BufArg { buf, mode, alias: cache_mem.0, len, esize }
    }
    fn fill(&mut self, dtype: u32, seed: u8) {
        let n = self.buf.bytes / self.esize;
        self.buf.fill(dtype, n, u64::from(seed) * 0x1234_5677 + 1, seed & 1 == 1);
    }
    fn ptr(&self) -> *const c_void {
        match self.mode {
            PtrMode::Null => ptr::null(),
            PtrMode::Alias => self.alias,
            _ => self.buf.ptr(),
        }
    }
    fn mut_ptr(&mut self) -> *mut c_void {
        match self.mode {
            PtrMode::Null => ptr::null_mut(),
            PtrMode::Alias => self.alias,
            _ => self.buf.mut_ptr(),
        }
    }
    /// Whether the pointer is acceptable for this length, for a buffer
    /// that may be (NULL, 0).
    fn ptr_ok(&self) -> bool {
        match self.mode {
            PtrMode::Normal => true,
            PtrMode::Null => self.len == 0,
            PtrMode::Misaligned => false,
            PtrMode::Alias => self.len == 0,
        }
    }
    /// The caller-side bytes (for checking an output was not written).
    fn bytes(&self) -> &[u8] {
        self.buf.slice()
    }
}

/// An f32 parameter array (A, D, dt_bias, weight, bias) ready to pass.
struct ParamArg {
    data: Vec<f32>,
    null: bool,
    len: usize,
    ok: bool,
}

impl ParamArg {
    /// `want` elements; `required`: NULL is refused even with length 0.
    fn new(p: Param, want: usize, required: bool) -> ParamArg {
        let mut rng = Rng::new(u64::from(p.seed) + 77);
        let (null, len, ok) = match p.mode {
            ParamMode::Absent if !required => (true, 0, true),
            ParamMode::Absent | ParamMode::Present => (false, want, true),
            ParamMode::NullWithLen => (true, want, false),
            ParamMode::NullEmpty => (true, 0, !required),
            ParamMode::Longer => (false, want + 1, false),
            ParamMode::Shorter => (false, want.saturating_sub(1), want == 0),
        };
        let data = (0..len.max(want) + 1).map(|_| value(&mut rng, p.seed & 3 == 3) * 0.25).collect();
        ParamArg { data, null, len, ok }
    }
    fn ptr(&self) -> *const f32 {
        if self.null { ptr::null() } else { self.data.as_ptr() }
    }
}

/// cu_seqlens for `n` sequences, resolved: the array, whether the pointer
/// is NULL, the token count and whether it is valid.
struct CuArg {
    cu: Vec<u64>,
    null: bool,
    tokens: usize,
    ok: bool,
}

impl CuArg {
    fn new(c: &CuSeqlens, n: usize) -> CuArg {
        let mut cu = vec![0u64];
        for i in 0..n {
            let t = u64::from(c.lens.get(i).copied().unwrap_or(0) % 4);
            cu.push(cu.last().unwrap() + t);
        }
        let mut null = false;
        match c.damage {
            CuDamage::None => {}
            CuDamage::Null => null = true,
            CuDamage::DropLast => {
                cu.pop();
            }
            CuDamage::RepeatLast => cu.push(*cu.last().unwrap()),
            CuDamage::FirstNotZero => cu[0] = 1,
            CuDamage::Decreasing => {
                if n >= 1 && cu[n - 1] >= 1 {
                    cu[n] = cu[n - 1] - 1;
                }
            }
            CuDamage::HugeTotal => *cu.last_mut().unwrap() = u64::MAX,
        }
        // A well-formed cu_seqlens whose total is absurd (u64::MAX) makes
        // every buffer length wrong: for the prediction that is invalid.
        let ok = !null && cu.len() == n + 1 && cu[0] == 0 && cu.windows(2).all(|w| w[0] <= w[1]) && cu[n] <= 1024;
        let tokens = if ok { cu[n] as usize } else { cu.last().map_or(0, |&t| t.min(64) as usize) };
        CuArg { cu, null, tokens, ok }
    }
    /// The single-token rows of a step.
    fn step(rows: usize) -> CuArg {
        CuArg { cu: vec![], null: false, tokens: rows, ok: true }
    }
    fn ptr(&self) -> *const u64 {
        if self.null { ptr::null() } else { self.cu.as_ptr() }
    }
}

// ------------------------------------------------------------------
// The harness state: the cache and its model.
// ------------------------------------------------------------------

struct Harness {
    sh: Shape,
    cache: *mut m2c_cache,
    /// What the cache must hold (positions and acquired count included).
    model: Image,
    acquired: Vec<bool>,
    /// The largest storage block the views describe, for aliasing.
    cache_mem: (*mut c_void, usize),
    /// The speculative log and round, as the library must see them.
    spec: SpecModel,
    /// A prefix store beside the cache, and what it must hold.
    store: StoreModel,
    /// The snapshot format m2c_slot_save must write (1 or 2).
    snap_format: u32,
}

/// One checkpoint of the store model: a slot's bytes per layer and its
/// position.
#[derive(Clone)]
struct SEntry {
    conv: Vec<Vec<u8>>,
    ssm: Vec<Vec<u8>>,
    pos: u64,
    pins: u32,
    tick: u64,
}

/// The model of a store with room for two checkpoints (LRU eviction of
/// unpinned ones), over `KEYS` keys.
struct StoreModel {
    handle: *mut m2c_store,
    keys: Vec<m2c_key>,
    entry: u64,
    budget: u64,
    entries: Vec<Option<SEntry>>,
    /// Why a key has no entry (M2C_MISS_*), once it had or was refused one.
    gone: Vec<Option<m2c_miss>>,
    clock: u64,
    inserts: u64,
    hits: u64,
    misses: [u64; 6],
    evictions: u64,
    restores: u64,
}

impl StoreModel {
    fn new(sh: &Shape) -> StoreModel {
        let entry = (sh.layers * (sh.cbytes() + sh.sbytes())) as u64;
        let budget = 2 * entry + entry / 2;
        let mut cfg = std::mem::MaybeUninit::<m2c_store_config>::zeroed();
        // SAFETY: valid storage, initialised by the call.
        let mut cfg = unsafe {
            m2c_store_config_init(cfg.as_mut_ptr());
            cfg.assume_init()
        };
        cfg.budget_bytes = budget;
        let mut handle = ptr::null_mut();
        // SAFETY: valid pointers.
        assert_eq!(unsafe { m2c_store_create(&cfg, &mut handle) }, M2C_STATUS_OK, "m2c_store_create");
        let keys = (0..KEYS as i32)
            .map(|i| {
                let mut k = m2c_key { lo: 0, hi: 0 };
                // SAFETY: valid pointers.
                assert_eq!(unsafe { m2c_key_chain(ptr::null(), &i, 1, &mut k) }, M2C_STATUS_OK);
                k
            })
            .collect();
        StoreModel {
            handle,
            keys,
            entry,
            budget,
            entries: vec![None; KEYS],
            gone: vec![None; KEYS],
            clock: 0,
            inserts: 0,
            hits: 0,
            misses: [0; 6],
            evictions: 0,
            restores: 0,
        }
    }

    fn held(&self) -> u64 {
        self.entries.iter().flatten().count() as u64 * self.entry
    }

    fn touch(&mut self, k: usize) {
        self.clock += 1;
        if let Some(e) = &mut self.entries[k] {
            e.tick = self.clock;
        }
    }

    fn evict(&mut self, k: usize) {
        self.entries[k] = None;
        self.gone[k] = Some(M2C_MISS_EVICTED);
        self.evictions += 1;
    }

    /// Evicts least recently used unpinned entries (never `keep`) until
    /// one more fits.
    fn make_room(&mut self, keep: usize) {
        while self.held() + self.entry > self.budget {
            let victim = (0..KEYS)
                .filter(|&k| k != keep && self.entries[k].as_ref().is_some_and(|e| e.pins == 0))
                .min_by_key(|&k| self.entries[k].as_ref().unwrap().tick);
            match victim {
                Some(k) => self.evict(k),
                None => return,
            }
        }
    }

    fn reason(&self, k: usize) -> m2c_miss {
        self.gone[k].unwrap_or(M2C_MISS_NEVER_STORED)
    }

    /// The library's counters must be the model's.
    fn check_stats(&self, what: &str) {
        let mut st = std::mem::MaybeUninit::<m2c_store_stats>::zeroed();
        // SAFETY: valid storage and handle.
        let st = unsafe {
            m2c_store_stats_init(st.as_mut_ptr());
            assert_eq!(m2c_store_get_stats(self.handle, st.as_mut_ptr()), M2C_STATUS_OK);
            st.assume_init()
        };
        let n = self.entries.iter().flatten().count() as u64;
        let pinned = self.entries.iter().flatten().filter(|e| e.pins > 0).count() as u64;
        let got = (
            st.entries,
            st.bytes_held,
            st.pinned,
            st.inserts,
            st.hits,
            [st.misses_never_stored, st.misses_evicted, st.misses_too_large],
            st.evictions,
            st.restores,
        );
        let want = (
            n,
            n * self.entry,
            pinned,
            self.inserts,
            self.hits,
            [self.misses[1], self.misses[2], self.misses[3]],
            self.evictions,
            self.restores,
        );
        assert_eq!(got, want, "{what}: the store's counters differ from the model");
    }
}

/// What a call is expected to do to the model on success.
struct Expect {
    ok: bool,
    model: Image,
    acquired: Vec<bool>,
    /// SSM regions (layer, slot) the call may set to anything.
    wild_ssm: Vec<(usize, usize)>,
    /// Slots whose state or position the call changes (on success they
    /// leave the speculative round).
    drops: Vec<usize>,
}

/// The model of m2c_spec_*: the reserved run length and the round.
#[derive(Default)]
struct SpecModel {
    max: usize,
    round: Option<SpecRound>,
}

struct SpecRound {
    rows: Vec<Option<usize>>,
    cu: Vec<u64>,
    /// Run-local parent of every token (-1: the committed state).
    parents: Vec<i32>,
    live: Vec<bool>,
    /// Per layer: the x bytes (io dtype) of the last successful conv
    /// verify, None until then.
    conv_x: Vec<Option<(u32, Vec<u8>)>>,
    ssm_done: Vec<bool>,
}

impl SpecRound {
    fn live_row(&self, slot: usize) -> Option<usize> {
        (0..self.rows.len()).find(|&r| self.rows[r] == Some(slot) && self.live[r])
    }
    fn tokens(&self) -> usize {
        *self.cu.last().unwrap() as usize
    }
}

#[derive(Clone, Copy)]
enum Target {
    UpdateConv,
    SetConv,
    UpdateSsm,
}

impl Harness {
    fn call(&mut self, call: &Call) {
        match call {
            Call::UpdateConv(a) => self.update(a, Target::UpdateConv),
            Call::SetConv(a) => self.update(a, Target::SetConv),
            Call::UpdateSsm(a) => self.update(a, Target::UpdateSsm),
            Call::ReadConv(a) => self.read(a, true),
            Call::ReadSsm(a) => self.read(a, false),
            Call::Reset(s) => self.reset(s),
            Call::Advance { slots, steps } => self.advance(slots, *steps),
            Call::CopySlots(c) => self.copy_slots(c),
            Call::Acquire { null_out } => self.acquire(null_out.0),
            Call::Release(s) => self.release(*s),
            Call::SaveLoad(a) => self.save_load(a),
            Call::ConvStep(k) => self.conv_kernel(k, None),
            Call::ConvPrefill { kernel, cu } => self.conv_kernel(kernel, Some(cu)),
            Call::SsmStep(k) => self.ssm_kernel(k, None),
            Call::SsmPrefill { kernel, cu } => self.ssm_kernel(kernel, Some(cu)),
            Call::Queries { slot, layer, stream, threads } => self.queries(*slot, *layer, *stream, *threads),
            Call::ConvLayout { layout } => self.conv_layout(*layout),
            Call::SnapshotFormat { format } => self.snapshot_format(*format),
            Call::SpecReserve { max } => self.spec_reserve(*max),
            Call::SpecBegin { slots, cu, tree, damage } => self.spec_begin(slots, cu, *tree, *damage),
            Call::ConvVerify(k) => self.conv_verify(k),
            Call::SsmVerify(k) => self.ssm_verify(k),
            Call::SpecCommit { slots, accepted, null_accepted } => self.spec_commit(slots, accepted, null_accepted.0),
            Call::NullCall(c) => self.null_call(*c),
            Call::AliasedOutput { call, offset, count } => self.aliased_output(*call, *offset, *count),
            Call::StoreInsert { slot, key, null_miss } => self.store_insert(*slot, *key, null_miss.0),
            Call::StoreLookup { keys } => self.store_lookup(&keys.0),
            Call::StoreRestore { key, slot } => self.store_restore(*key, *slot),
            Call::StoreKey { key, op } => self.store_key(*key, *op),
        }
    }

    fn store_insert(&mut self, slot: Slot, key: u8, null_miss: bool) {
        let (sh, k) = (self.sh, key as usize % KEYS);
        let s = slot.resolve(sh.slots);
        let st_model = &self.store;
        let pinned_here = st_model.entries[k].as_ref().is_some_and(|e| e.pins > 0);
        let pinned_others =
            (0..KEYS).filter(|&o| o != k && st_model.entries[o].as_ref().is_some_and(|e| e.pins > 0)).count() as u64;
        let ok = slot_in_range(s, sh.slots) && !pinned_here;
        let too_large = (pinned_others + 1) * st_model.entry > st_model.budget;
        let mut miss: m2c_miss = -7;
        let mp = if null_miss { ptr::null_mut() } else { &mut miss as *mut m2c_miss };
        // SAFETY: live handles; key and out valid.
        let st = unsafe { m2c_store_insert(self.store.handle, self.cache, s, &self.store.keys[k], mp) };
        let e = self.expect(ok);
        if self.check("store_insert", st, e, &[]) {
            let want = if too_large { M2C_MISS_TOO_LARGE } else { M2C_MISS_NONE };
            if !null_miss {
                assert_eq!(miss, want, "store_insert: out_miss");
            }
            if too_large {
                if self.store.entries[k].is_none() {
                    self.store.gone[k] = Some(M2C_MISS_TOO_LARGE);
                }
            } else {
                let su = s as usize;
                let conv: Vec<Vec<u8>> =
                    (0..sh.layers).map(|l| self.model.conv[l][self.conv_range(su)].to_vec()).collect();
                let ssm: Vec<Vec<u8>> = (0..sh.layers)
                    .map(|l| self.model.ssm[l][su * sh.sbytes()..(su + 1) * sh.sbytes()].to_vec())
                    .collect();
                let pos = self.model.pos[su];
                let m = &mut self.store;
                m.entries[k] = None;
                m.make_room(k);
                m.clock += 1;
                m.entries[k] = Some(SEntry { conv, ssm, pos, pins: 0, tick: m.clock });
                m.gone[k] = None;
                m.inserts += 1;
            }
        } else {
            assert_eq!(miss, -7, "store_insert wrote out_miss on failure");
        }
        self.store.check_stats("store_insert");
    }

    fn store_lookup(&mut self, keys: &[u8]) {
        let ks: Vec<usize> = keys.iter().map(|&k| k as usize % KEYS).collect();
        let m = &self.store;
        let blocks = ks.iter().rposition(|&k| m.entries[k].is_some()).map_or(0, |i| i + 1);
        let want_miss = ks.get(blocks).map_or(M2C_MISS_NONE, |&k| m.reason(k));
        let cks: Vec<m2c_key> = ks.iter().map(|&k| m.keys[k]).collect();
        let mut out = std::mem::MaybeUninit::<m2c_lookup>::zeroed();
        // SAFETY: valid storage and handles; `cks` holds the keys.
        let out = unsafe {
            m2c_lookup_init(out.as_mut_ptr());
            let kp = if cks.is_empty() { ptr::null() } else { cks.as_ptr() };
            let st = m2c_store_lookup(self.store.handle, self.cache, kp, cks.len(), out.as_mut_ptr());
            assert_eq!(st, M2C_STATUS_OK, "store_lookup: {}", last_error());
            out.assume_init()
        };
        assert_eq!((out.blocks as usize, out.miss), (blocks, want_miss), "store_lookup of {ks:?}");
        let m = &mut self.store;
        if blocks > 0 {
            m.hits += 1;
            m.touch(ks[blocks - 1]);
        }
        if blocks < ks.len() {
            m.misses[want_miss as usize] += 1;
        }
        m.check_stats("store_lookup");
    }

    fn store_restore(&mut self, key: u8, slot: Slot) {
        let (sh, k) = (self.sh, key as usize % KEYS);
        let s = slot.resolve(sh.slots);
        let entry = self.store.entries[k].clone();
        let ok = slot_in_range(s, sh.slots) && entry.is_some();
        let mut e = self.expect(ok);
        if let (true, Some(en)) = (ok, &entry) {
            let su = s as usize;
            for l in 0..sh.layers {
                e.model.conv[l][self.conv_range(su)].copy_from_slice(&en.conv[l]);
                e.model.ssm[l][su * sh.sbytes()..(su + 1) * sh.sbytes()].copy_from_slice(&en.ssm[l]);
            }
            e.model.pos[su] = en.pos;
            e.drops.push(su);
        }
        // SAFETY: live handles; the key is valid.
        let st = unsafe { m2c_store_restore(self.store.handle, &self.store.keys[k], self.cache, s) };
        if !ok && slot_in_range(s, sh.slots) {
            assert_eq!(st, M2C_STATUS_NOT_FOUND, "store_restore of a key with no entry: {}", last_error());
        }
        if self.check("store_restore", st, e, &[]) {
            RESTORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.store.restores += 1;
            self.store.touch(k);
        }
        self.store.check_stats("store_restore");
    }

    fn store_key(&mut self, key: u8, op: u8) {
        let k = key as usize % KEYS;
        let m = &mut self.store;
        let kp = &m.keys[k] as *const m2c_key;
        let present = m.entries[k].is_some();
        let pins = m.entries[k].as_ref().map_or(0, |e| e.pins);
        // SAFETY: live handle; the key is valid.
        let (what, st, want) = unsafe {
            match op % 3 {
                0 => (
                    "store_pin",
                    m2c_store_pin(m.handle, kp),
                    if present { M2C_STATUS_OK } else { M2C_STATUS_NOT_FOUND },
                ),
                1 => (
                    "store_unpin",
                    m2c_store_unpin(m.handle, kp),
                    match (present, pins) {
                        (false, _) => M2C_STATUS_NOT_FOUND,
                        (true, 0) => M2C_STATUS_INVALID_ARG,
                        _ => M2C_STATUS_OK,
                    },
                ),
                _ => (
                    "store_evict",
                    m2c_store_evict(m.handle, kp),
                    match (present, pins) {
                        (false, _) => M2C_STATUS_NOT_FOUND,
                        (true, 0) => M2C_STATUS_OK,
                        _ => M2C_STATUS_INVALID_ARG,
                    },
                ),
            }
        };
        assert_eq!(st, want, "{what}: {}", last_error());
        if st == M2C_STATUS_OK {
            match op % 3 {
                0 => m.entries[k].as_mut().unwrap().pins += 1,
                1 => m.entries[k].as_mut().unwrap().pins -= 1,
                _ => m.evict(k),
            }
        }
        m.check_stats(what);
    }

    fn expect(&self, ok: bool) -> Expect {
        Expect { ok, model: self.model.clone(), acquired: self.acquired.clone(), wild_ssm: vec![], drops: vec![] }
    }

    /// Checks the status and the state after a call; `outputs` are the
    /// caller buffers the call may write only on success (with their
    /// content before the call).
    fn check(&mut self, what: &str, st: m2c_status, mut e: Expect, outputs: &[(&[u8], &[u8])]) -> bool {
        assert_ne!(st, M2C_STATUS_PANIC, "{what}: M2C_STATUS_PANIC: {}", last_error());
        assert_ne!(st, M2C_STATUS_POISONED, "{what}: the handle is poisoned: {}", last_error());
        let after = image(self.cache, &self.sh);
        if st == M2C_STATUS_OK {
            assert!(e.ok, "{what}: a call with an invalid argument succeeded");
            for &(l, s) in &e.wild_ssm {
                let r = s * self.sh.sbytes()..(s + 1) * self.sh.sbytes();
                e.model.ssm[l][r.clone()].copy_from_slice(&after.ssm[l][r]);
            }
            for l in 0..self.sh.layers {
                if let Some(i) = same_values(self.sh.cdt, &after.conv[l], &e.model.conv[l]) {
                    panic!("{what}: conv state of layer {l} differs from the model at element {i}");
                }
                if let Some(i) = same_values(self.sh.sdt, &after.ssm[l], &e.model.ssm[l]) {
                    panic!("{what}: ssm state of layer {l} differs from the model at element {i}");
                }
            }
            assert_eq!(after.pos, e.model.pos, "{what}: positions differ from the model");
            let count = e.acquired.iter().filter(|&&a| a).count() as u32;
            assert_eq!(after.in_use, count, "{what}: slots_in_use differs from the model");
            self.model = after;
            self.acquired = e.acquired;
            if let Some(round) = &mut self.spec.round {
                for s in e.drops {
                    for r in 0..round.rows.len() {
                        if round.rows[r] == Some(s) {
                            round.live[r] = false;
                        }
                    }
                }
            }
            true
        } else {
            assert!(!e.ok, "{what}: a valid call failed with status {st}: {}", last_error());
            assert!(REFUSALS.contains(&st), "{what}: status {st} is not one this call documents: {}", last_error());
            assert!(after == self.model, "{what}: a failed call (status {st}) changed the cache");
            for (i, (now, was)) in outputs.iter().enumerate() {
                assert!(now == was, "{what}: output {i} was written by a failed call");
            }
            false
        }
    }

    fn conv_range(&self, s: usize) -> std::ops::Range<usize> {
        s * self.sh.cbytes()..(s + 1) * self.sh.cbytes()
    }

    /// Pushes element row `row` of `x` (dtype `d`, `dim` per row) into the
    /// model window of slot `s`, layer `l`.
    fn push(model: &mut Image, sh: &Shape, l: usize, s: usize, x: &[u8], d: u32, row: usize) {
        let (dim, w, cd) = (sh.dim(), sh.w, sh.cdt);
        let es = dtype_size(cd);
        let win = &mut model.conv[l][s * sh.cbytes()..(s + 1) * sh.cbytes()];
        for c in 0..dim {
            let base = c * w * es;
            win.copy_within(base + es..base + w * es, base);
            convert_elem(d, x, row * dim + c, cd, win, c * w + w - 1);
        }
    }

    // ---- the calls

    fn update(&mut self, a: &DataArgs, which: Target) {
        let sh = self.sh;
        let (layer, lok) = a.layer.resolve(sh.layers);
        let sa = SlotArg::new(&a.slots, sh.slots);
        let (d, dok) = (a.dtype.0, a.dtype.ok());
        let per = match which {
            Target::UpdateConv => sh.dim(),
            Target::SetConv => sh.cper(),
            Target::UpdateSsm => sh.sper(),
        };
        let correct = sa.rows.len() * per;
        let len = a.len.resolve(correct, per);
        let mut b = BufArg::new(d, len, correct, a.ptr, self.cache_mem);
        b.fill(d, a.seed);
        let ok = lok && sa.ok && dok && len == correct && b.ptr_ok();
        let mut e = self.expect(ok);
        if ok {
            e.drops = sa.rows.iter().flatten().copied().collect();
            let l = layer as usize;
            for (row, s) in sa.rows.iter().enumerate() {
                let Some(s) = *s else { continue };
                match which {
                    Target::UpdateConv => Self::push(&mut e.model, &sh, l, s, b.bytes(), d, row),
                    Target::SetConv => {
                        for i in 0..per {
                            convert_elem(d, b.bytes(), row * per + i, sh.cdt, &mut e.model.conv[l], s * per + i);
                        }
                    }
                    Target::UpdateSsm => {
                        for i in 0..per {
                            convert_elem(d, b.bytes(), row * per + i, sh.sdt, &mut e.model.ssm[l], s * per + i);
                        }
                    }
                }
            }
        }
        // SAFETY: live handle; the buffer holds max(len, correct) elements
        // unless len is absurd (then the library must refuse it first).
        let st = unsafe {
            match which {
                Target::UpdateConv => m2c_update_conv(self.cache, layer, sa.ptr(), sa.n, b.ptr(), d, len),
                Target::SetConv => m2c_set_conv(self.cache, layer, sa.ptr(), sa.n, b.ptr(), d, len),
                Target::UpdateSsm => m2c_update_ssm(self.cache, layer, sa.ptr(), sa.n, b.ptr(), d, len),
            }
        };
        let what = format!(
            "{} layer={layer}({lok}) slots={:?}/n={}({}) dtype={d}({dok}) len={len} correct={correct} mode={:?}",
            ["update_conv", "set_conv", "update_ssm"][which as usize],
            sa.list,
            sa.n,
            sa.ok,
            b.mode
        );
        self.check(&what, st, e, &[]);
    }

    fn read(&mut self, a: &ReadArgs, conv: bool) {
        let sh = self.sh;
        let (layer, lok) = a.layer.resolve(sh.layers);
        let sa = SlotArg::new(&a.slots, sh.slots);
        let (d, dok) = (a.dtype.0, a.dtype.ok());
        let per = if conv { sh.cper() } else { sh.sper() };
        let correct = sa.rows.len() * per;
        let len = a.len.resolve(correct, per);
        let mut b = BufArg::new(d, len, correct, a.ptr, self.cache_mem);
        let before = b.bytes().to_vec();
        let ok = lok && sa.ok && dok && len == correct && b.ptr_ok();
        let e = self.expect(ok);
        let p = b.mut_ptr();
        // SAFETY: as in `update`.
        let st = unsafe {
            if conv {
                m2c_read_conv(self.cache, layer, sa.ptr(), sa.n, p, d, len)
            } else {
                m2c_read_ssm(self.cache, layer, sa.ptr(), sa.n, p, d, len)
            }
        };
        let what = if conv { "read_conv" } else { "read_ssm" };
        let model = self.model.clone();
        if self.check(what, st, e, &[(b.bytes(), &before)]) {
            let (src, sd) =
                if conv { (&model.conv[layer as usize], sh.cdt) } else { (&model.ssm[layer as usize], sh.sdt) };
            let mut want = vec![0u8; correct * dtype_size(d)];
            for (row, s) in sa.rows.iter().enumerate() {
                if let Some(s) = *s {
                    for i in 0..per {
                        convert_elem(sd, src, s * per + i, d, &mut want, row * per + i);
                    }
                }
            }
            let got = &b.bytes()[..want.len()];
            if let Some(i) = same_values(d, got, &want) {
                panic!("{what}: output element {i} differs from the model (padding rows must be zero)");
            }
        }
    }

    fn reset(&mut self, slots: &Slots) {
        let sa = SlotArg::new(slots, self.sh.slots);
        let mut e = self.expect(sa.ok);
        if sa.ok {
            for s in sa.rows.iter().flatten() {
                self.zero_slot(&mut e.model, *s);
            }
            e.drops = sa.rows.iter().flatten().copied().collect();
        }
        // SAFETY: live handle, slots valid for n entries when non-NULL.
        let st = unsafe { m2c_reset(self.cache, sa.ptr(), sa.n) };
        self.check("reset", st, e, &[]);
    }

    fn zero_slot(&self, m: &mut Image, s: usize) {
        let (cb, sb) = (self.sh.cbytes(), self.sh.sbytes());
        for l in 0..self.sh.layers {
            m.conv[l][s * cb..(s + 1) * cb].fill(0);
            m.ssm[l][s * sb..(s + 1) * sb].fill(0);
        }
        m.pos[s] = 0;
    }

    fn advance(&mut self, slots: &Slots, steps: Steps) {
        let sa = SlotArg::new(slots, self.sh.slots);
        let k = steps.0;
        let ok = sa.ok && sa.rows.iter().flatten().all(|&s| self.model.pos[s].checked_add(u64::from(k)).is_some());
        let mut e = self.expect(ok);
        if ok {
            for &s in sa.rows.iter().flatten() {
                e.model.pos[s] += u64::from(k);
            }
            e.drops = sa.rows.iter().flatten().copied().collect();
        }
        // SAFETY: as in `reset`.
        let st = unsafe { m2c_advance(self.cache, sa.ptr(), sa.n, k) };
        self.check("advance", st, e, &[]);
    }

    fn copy_slots(&mut self, c: &CopySlots) {
        let ns = self.sh.slots;
        let n = c.pairs.0.len();
        let src: Vec<i32> = c.pairs.0.iter().map(|p| p.0.resolve(ns)).collect();
        let mut dst: Vec<i32> = c.pairs.0.iter().map(|p| p.1.resolve(ns)).collect();
        // Often a permutation, so reorders are exercised.
        if c.reverse_dst.0 && n <= ns {
            dst = (0..n as i32).rev().collect();
        }
        let sp = if c.nulls == CopyNulls::NullSrc { ptr::null() } else { src.as_ptr() };
        let dp = if c.nulls == CopyNulls::NullDst { ptr::null() } else { dst.as_ptr() };
        let ok = n == 0
            || (c.nulls == CopyNulls::Neither
                && selection_ok(&dst, ns)
                && src.iter().zip(&dst).all(|(&s, &d)| d < 0 || slot_in_range(s, ns)));
        let mut e = self.expect(ok);
        if ok {
            let old = self.model.clone();
            let (cb, sb) = (self.sh.cbytes(), self.sh.sbytes());
            for (&s, &d) in src.iter().zip(&dst) {
                if d < 0 {
                    continue;
                }
                let (s, d) = (s as usize, d as usize);
                for l in 0..self.sh.layers {
                    e.model.conv[l][d * cb..(d + 1) * cb].copy_from_slice(&old.conv[l][s * cb..(s + 1) * cb]);
                    e.model.ssm[l][d * sb..(d + 1) * sb].copy_from_slice(&old.ssm[l][s * sb..(s + 1) * sb]);
                }
                e.model.pos[d] = old.pos[s];
                if s != d {
                    e.drops.push(d);
                }
            }
        }
        // SAFETY: live handle, src/dst valid for n entries when non-NULL.
        let st = unsafe { m2c_copy_slots(self.cache, sp, dp, n) };
        self.check("copy_slots", st, e, &[]);
    }

    fn acquire(&mut self, null_out: bool) {
        let free = self.acquired.iter().position(|&a| !a);
        let ok = !null_out && free.is_some();
        let mut e = self.expect(ok);
        if let (true, Some(s)) = (ok, free) {
            self.zero_slot(&mut e.model, s);
            e.acquired[s] = true;
            e.drops.push(s);
        }
        let mut got = -7i32;
        let out = if null_out { ptr::null_mut() } else { &mut got as *mut i32 };
        // SAFETY: live handle, out NULL or valid.
        let st = unsafe { m2c_slot_acquire(self.cache, out) };
        if !null_out && free.is_none() {
            assert_eq!(st, M2C_STATUS_NO_FREE_SLOT, "acquire with every slot taken");
        }
        if self.check("slot_acquire", st, e, &[]) {
            assert_eq!(Some(got as usize), free, "slot_acquire must hand out the lowest free slot");
        } else {
            assert_eq!(got, -7, "slot_acquire wrote its output on failure");
        }
    }

    fn release(&mut self, slot: Slot) {
        let s = slot.resolve(self.sh.slots);
        let ok = slot_in_range(s, self.sh.slots) && self.acquired[s as usize];
        let mut e = self.expect(ok);
        if ok {
            e.acquired[s as usize] = false;
            e.drops.push(s as usize);
        }
        // SAFETY: live handle.
        let st = unsafe { m2c_slot_release(self.cache, s) };
        self.check("slot_release", st, e, &[]);
    }

    /// The snapshot of slot `s` the model predicts.
    fn model_snapshot(&self, s: usize) -> Vec<u8> {
        let sh = &self.sh;
        let conv: Vec<&[u8]> = (0..sh.layers).map(|l| &self.model.conv[l][self.conv_range(s)]).collect();
        let ssm: Vec<&[u8]> =
            (0..sh.layers).map(|l| &self.model.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()]).collect();
        let mut b = make_snapshot(sh, self.model.pos[s], &conv, &ssm);
        if self.snap_format == 2 {
            b[8..12].copy_from_slice(&2u32.to_le_bytes());
            fix_checksum(&mut b);
        }
        b
    }

    fn save_load(&mut self, a: &SaveLoad) {
        let sh = self.sh;
        let size = sh.snapshot_size();
        // ---- save
        let from = a.save_slot.resolve(sh.slots);
        let len = a.save_len.resolve(size);
        let (null_buf, null_written) = (a.save_nulls == SaveNulls::NullBuf, a.save_nulls == SaveNulls::NullWritten);
        let mut buf = CBuf::new(len, 0);
        let before = buf.slice().to_vec();
        let mut written = 0xDEADusize;
        let ok = slot_in_range(from, sh.slots) && len >= size && !null_buf && !null_written;
        let e = self.expect(ok);
        let bp = if null_buf { ptr::null_mut() } else { buf.mut_ptr() };
        let wp = if null_written { ptr::null_mut() } else { &mut written as *mut usize };
        // SAFETY: live handle; buf holds len bytes.
        let st = unsafe { m2c_slot_save(self.cache, from, bp, len, wp) };
        let saved = self.check("slot_save", st, e, &[(buf.slice(), &before)]);
        if saved {
            assert_eq!(written, size, "slot_save: bytes written");
            let want = self.model_snapshot(from as usize);
            assert!(buf.slice()[..size] == want[..], "slot_save: the snapshot differs from docs/FORMATS.md");
            assert!(buf.slice()[size..].iter().all(|&x| x == 0xA5), "slot_save wrote past the snapshot");
        } else {
            assert_eq!(written, 0xDEAD, "slot_save wrote *out_written on failure");
        }
        // ---- load (the saved bytes, or the model's snapshot of some slot)
        let to = a.load_slot.resolve(sh.slots);
        let mut bytes = if saved {
            buf.slice()[..size].to_vec()
        } else {
            self.model_snapshot(from.rem_euclid(sh.slots as i32) as usize)
        };
        damage(&mut bytes, a.damage);
        let alias = a.alias.0 && self.cache_mem.1 >= 1;
        let (p, l): (*const c_void, usize) = if alias {
            (self.cache_mem.0, bytes.len().min(self.cache_mem.1))
        } else {
            (bytes.as_ptr().cast(), bytes.len())
        };
        let ok = !alias && slot_in_range(to, sh.slots) && valid_snapshot(&bytes, &sh);
        let mut e = self.expect(ok);
        if ok {
            let s = to as usize;
            let mut at = 72;
            for l in 0..sh.layers {
                e.model.conv[l][s * sh.cbytes()..(s + 1) * sh.cbytes()].copy_from_slice(&bytes[at..at + sh.cbytes()]);
                at += sh.cbytes();
                e.model.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()].copy_from_slice(&bytes[at..at + sh.sbytes()]);
                at += sh.sbytes();
            }
            e.model.pos[s] = u64_at(&bytes, 56);
            e.drops.push(s);
        }
        // SAFETY: live handle; p valid for l bytes.
        let st = unsafe { m2c_slot_load(self.cache, to, p, l) };
        self.check("slot_load", st, e, &[]);
    }

    /// The six buffers of an SSM call over `tokens` rows (x dt B C z y, z
    /// possibly absent), filled from the kernel's seed, the `m2c_ssm_io`
    /// over them (damaged as the kernel says) and whether all of it is
    /// acceptable. `y` is the sixth buffer.
    fn ssm_bufs(&self, k: &SsmKernel, io: u32, tokens: usize) -> (Vec<BufArg>, m2c_ssm_io, bool) {
        let sh = self.sh;
        let (h, hd, gn) = (sh.heads, sh.head_dim, sh.groups * sh.state);
        let per = [h * hd, h, gn, gn, h * hd, h * hd]; // x dt B C z y
        let specs = [Some(k.x), Some(k.dt), Some(k.b), Some(k.c), k.z.0, Some(k.y)];
        let mut bufs = Vec::new();
        let mut ok = true;
        for (i, (&p, spec)) in per.iter().zip(specs).enumerate() {
            let correct = tokens * p;
            // z absent: (NULL, 0), no gate.
            let (len, mode) = spec.map_or((0, PtrMode::Null), |b| (b.len.resolve(correct, p), b.ptr));
            let mut b = BufArg::new(io, len, correct, mode, self.cache_mem);
            if i < 5 {
                b.fill(io, k.seed.wrapping_add(i as u8 * 17));
            }
            ok &= match (i, b.mode) {
                // z is optional: (NULL, 0) means no gate.
                (4, PtrMode::Null) => len == 0,
                // The others: (NULL, 0) is an empty buffer, valid with
                // no token rows.
                _ => b.ptr_ok() && len == correct,
            };
            bufs.push(b);
        }
        let mut io_s = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_ssm_io_init(io_s.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut ios = unsafe { io_s.assume_init() };
        match k.io_damage {
            IoDamage::None => {}
            IoDamage::Reserved => ios.reserved = 1,
            IoDamage::Larger => ios.struct_size += 8,
        }
        ok &= matches!(k.io_damage, IoDamage::None);
        (ios.x, ios.x_len) = (bufs[0].ptr(), bufs[0].len);
        (ios.dt, ios.dt_len) = (bufs[1].ptr(), bufs[1].len);
        (ios.B, ios.B_len) = (bufs[2].ptr(), bufs[2].len);
        (ios.C, ios.C_len) = (bufs[3].ptr(), bufs[3].len);
        (ios.z, ios.z_len) = (bufs[4].ptr(), bufs[4].len);
        let yp = bufs[5].mut_ptr();
        (ios.y, ios.y_len) = (yp, bufs[5].len);
        (bufs, ios, ok)
    }

    fn conv_args(&self, c: &ConvArgs, io: u32) -> (m2c_conv_args, ParamArg, ParamArg, bool) {
        let sh = &self.sh;
        let mut a = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_conv_args_init(a.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut a = unsafe { a.assume_init() };
        let mut ok = true;
        a.io_dtype = io;
        a.activation = c.activation.0;
        ok &= c.activation.0 < 2;
        match c.damage {
            ArgsDamage::None => {}
            ArgsDamage::Reserved => a.reserved = 1,
            ArgsDamage::StructSize(s) => a.struct_size = bad_size(s, a.struct_size),
        }
        ok &= matches!(c.damage, ArgsDamage::None);
        let w = ParamArg::new(c.weight, sh.dim() * sh.k, true);
        let bias = ParamArg::new(c.bias, sh.dim(), false);
        a.weight = w.ptr();
        a.weight_len = w.len;
        a.bias = bias.ptr();
        a.bias_len = bias.len;
        ok &= w.ok && bias.ok;
        (a, w, bias, ok)
    }

    fn ssm_args(&self, s: &SsmArgs, io: u32) -> (m2c_ssm_args, [ParamArg; 3], bool) {
        let h = self.sh.heads;
        let mut a = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_ssm_args_init(a.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut a = unsafe { a.assume_init() };
        let mut ok = true;
        a.io_dtype = io;
        a.dt_softplus = u32::from(s.dt_softplus);
        if let Some(size) = s.damage.0 {
            a.struct_size = bad_size(size, a.struct_size);
            ok = false;
        }
        match s.clamp {
            Clamp::Off => {}
            Clamp::On { lo, hi } => {
                a.dt_clamp = 1;
                (a.dt_min, a.dt_max) = (lo.min(hi), lo.max(hi));
            }
            // Not an interval.
            Clamp::Inverted | Clamp::NanMin => {
                a.dt_clamp = 1;
                (a.dt_min, a.dt_max) = if matches!(s.clamp, Clamp::Inverted) { (1.0, 0.5) } else { (f32::NAN, 1.0) };
                ok = false;
            }
        }
        let mut pa = ParamArg::new(s.a, h, true);
        let pd = ParamArg::new(s.d, h, false);
        let pb = ParamArg::new(s.dt_bias, h, false);
        // A must be negative for a decaying state; keep it so.
        for v in &mut pa.data {
            *v = -v.abs() - 0.01;
        }
        a.A = pa.ptr();
        a.A_len = pa.len;
        a.D = pd.ptr();
        a.D_len = pd.len;
        a.dt_bias = pb.ptr();
        a.dt_bias_len = pb.len;
        ok &= pa.ok && pd.ok && pb.ok;
        (a, [pa, pd, pb], ok)
    }

    /// conv_step (`cu` None) or conv_prefill.
    fn conv_kernel(&mut self, k: &ConvKernel, cu: Option<&CuSeqlens>) {
        let sh = self.sh;
        let prefill = cu.is_some();
        let (layer, lok) = k.layer.resolve(sh.layers);
        let sa = SlotArg::new(&k.slots, sh.slots);
        let (io, dok) = (k.io_dtype.0, k.io_dtype.ok());
        let cu = cu.map_or_else(|| CuArg::step(sa.rows.len()), |c| CuArg::new(c, sa.n));
        let (args, _w, _bias, aok) = self.conv_args(&k.args, io);
        let correct = cu.tokens * sh.dim();
        let xl = k.x.len.resolve(correct, sh.dim());
        let mut x = BufArg::new(io, xl, correct, k.x.ptr, self.cache_mem);
        x.fill(io, k.x_seed);
        let ol = k.out.len.resolve(correct, sh.dim());
        let mut out = BufArg::new(io, ol, correct, k.out.ptr, self.cache_mem);
        let before = out.bytes().to_vec();
        let ok = lok && sa.ok && dok && cu.ok && aok && xl == correct && x.ptr_ok() && ol == correct && out.ptr_ok();
        let mut e = self.expect(ok);
        if ok {
            e.drops = sa.rows.iter().flatten().copied().collect();
            let l = layer as usize;
            for (i, s) in sa.rows.iter().enumerate() {
                let Some(s) = *s else { continue };
                let (t0, t1) = if prefill { (cu.cu[i] as usize, cu.cu[i + 1] as usize) } else { (i, i + 1) };
                for t in t0..t1 {
                    Self::push(&mut e.model, &sh, l, s, x.bytes(), io, t);
                }
            }
        }
        let op = out.mut_ptr();
        // SAFETY: live handle; every buffer holds what its length claims
        // (or an absurd length the library must refuse).
        let st = unsafe {
            if prefill {
                m2c_conv_prefill(self.cache, layer, sa.ptr(), sa.n, cu.ptr(), cu.cu.len(), x.ptr(), xl, op, ol, &args)
            } else {
                m2c_conv_step(self.cache, layer, sa.ptr(), sa.n, x.ptr(), xl, op, ol, &args)
            }
        };
        let what = format!(
            "{} layer={layer}({lok}) slots={:?}/n={}({}) io={io}({dok}) cu={:?} null={}({}) args={args:?}({aok}) x=({xl},{:?}) out=({ol},{:?}) correct={correct}",
            if prefill { "conv_prefill" } else { "conv_step" },
            sa.list,
            sa.n,
            sa.ok,
            cu.cu,
            cu.null,
            cu.ok,
            x.mode,
            out.mode
        );
        if self.check(&what, st, e, &[(out.bytes(), &before)]) {
            self.check_padding(&what, &sa, &cu.cu, prefill, out.bytes(), sh.dim() * dtype_size(io));
        }
    }

    /// Every output row of a padding row / sequence is zero.
    fn check_padding(&self, what: &str, sa: &SlotArg, cu: &[u64], prefill: bool, out: &[u8], row_bytes: usize) {
        for (i, s) in sa.rows.iter().enumerate() {
            if s.is_some() {
                continue;
            }
            let (t0, t1) = if prefill { (cu[i] as usize, cu[i + 1] as usize) } else { (i, i + 1) };
            assert!(
                out[t0 * row_bytes..t1 * row_bytes].iter().all(|&b| b == 0),
                "{what}: the output of padding row {i} is not zero"
            );
        }
    }

    /// ssm_step (`cu` None) or ssm_prefill.
    fn ssm_kernel(&mut self, k: &SsmKernel, cu: Option<&CuSeqlens>) {
        let sh = self.sh;
        let prefill = cu.is_some();
        let (layer, lok) = k.layer.resolve(sh.layers);
        let sa = SlotArg::new(&k.slots, sh.slots);
        let (io, dok) = (k.io_dtype.0, k.io_dtype.ok());
        let cu = cu.map_or_else(|| CuArg::step(sa.rows.len()), |c| CuArg::new(c, sa.n));
        let (args, _params, aok) = self.ssm_args(&k.args, io);
        let (h, hd) = (sh.heads, sh.head_dim);
        let (bufs, ios, bok) = self.ssm_bufs(k, io, cu.tokens);
        let ok = lok && sa.ok && dok && cu.ok && aok && bok;
        let before = bufs[5].bytes().to_vec();
        let mut e = self.expect(ok);
        if ok {
            e.drops = sa.rows.iter().flatten().copied().collect();
            for (i, s) in sa.rows.iter().enumerate() {
                let Some(s) = *s else { continue };
                let n_tokens = if prefill { cu.cu[i + 1] - cu.cu[i] } else { 1 };
                if n_tokens > 0 {
                    e.wild_ssm.push((layer as usize, s));
                }
            }
        }
        // SAFETY: live handle; every buffer holds what its length claims
        // (or an absurd length the library must refuse).
        let st = unsafe {
            if prefill {
                m2c_ssm_prefill(self.cache, layer, sa.ptr(), sa.n, cu.ptr(), cu.cu.len(), &ios, &args)
            } else {
                m2c_ssm_step(self.cache, layer, sa.ptr(), sa.n, &ios, &args)
            }
        };
        let what = format!(
            "{} layer={layer}({lok}) slots={:?}/n={}({}) io={io}({dok}) cu={:?} null={}({}) args={args:?}({aok}) io={ios:?} bufs={:?}",
            if prefill { "ssm_prefill" } else { "ssm_step" },
            sa.list,
            sa.n,
            sa.ok,
            cu.cu,
            cu.null,
            cu.ok,
            bufs.iter().map(|b| (b.len, b.mode)).collect::<Vec<_>>()
        );
        if self.check(&what, st, e, &[(bufs[5].bytes(), &before)]) {
            self.check_padding(&what, &sa, &cu.cu, prefill, bufs[5].bytes(), h * hd * dtype_size(io));
        }
    }

    // ---- speculative decoding

    fn spec_reserve(&mut self, max: u8) {
        // Mostly 1..8 tokens; now and then 0 (frees the log).
        let max = if max < 240 { 1 + max as usize % 8 } else { 0 };
        let e = self.expect(true);
        // SAFETY: live handle.
        let st = unsafe { m2c_spec_reserve(self.cache, max as u32) };
        if self.check("spec_reserve", st, e, &[]) {
            self.spec = SpecModel { max, round: None };
        }
    }

    fn spec_begin(&mut self, slots: &Slots, c: &CuSeqlens, tree: u8, damage: ParentDamage) {
        let sh = self.sh;
        let sa = SlotArg::new(slots, sh.slots);
        // Runs of 1..3 tokens, now and then an empty one (refused for a slot).
        let mut c = *c;
        for l in &mut c.lens {
            *l = if *l < 224 { 1 + *l % 3 } else { 0 };
        }
        let cu = CuArg::new(&c, sa.n);
        let max = self.spec.max;
        let mut ok = max > 0 && sa.ok && cu.ok;
        if ok {
            for (r, s) in sa.rows.iter().enumerate() {
                let len = (cu.cu[r + 1] - cu.cu[r]) as usize;
                ok &= len <= max && (s.is_none() || len >= 1);
            }
        }
        // Parents: a valid tree from `tree` (0: NULL, chains), then damage.
        let tokens = cu.tokens;
        let mut parents = vec![-1i32; tokens];
        let mut rng = Rng::new(u64::from(tree) + 5);
        if cu.ok {
            for r in 0..sa.n {
                let (a, b) = (cu.cu[r] as usize, cu.cu[r + 1] as usize);
                for (local, pt) in parents[a..b].iter_mut().enumerate() {
                    *pt = if tree == 0 { local as i32 - 1 } else { rng.below(local + 1) as i32 - 1 };
                }
            }
        }
        let null = tree == 0 || damage == ParentDamage::NullWithLen;
        let mut plen = if tree == 0 { 0 } else { tokens };
        match damage {
            ParentDamage::None => {}
            ParentDamage::SelfParent => {
                if tree != 0 && cu.ok && tokens > 0 {
                    let t = rng.below(tokens);
                    // Token t as its own parent: run-local index of t.
                    let r = (0..sa.n).find(|&r| (cu.cu[r] as usize..cu.cu[r + 1] as usize).contains(&t)).unwrap();
                    parents[t] = (t - cu.cu[r] as usize) as i32;
                    ok = false;
                }
            }
            ParentDamage::Short => {
                if tree != 0 && tokens > 0 {
                    plen = tokens - 1;
                    ok = false;
                }
            }
            ParentDamage::NullWithLen => {
                plen = tokens.max(1);
                ok = false;
            }
        }
        let pp = if null { ptr::null() } else { parents.as_ptr() };
        let e = self.expect(ok);
        // SAFETY: live handle; arrays valid for their lengths (or NULL).
        let st = unsafe { m2c_spec_begin(self.cache, sa.ptr(), sa.n, cu.ptr(), cu.cu.len(), pp, plen) };
        let what = format!(
            "spec_begin slots={:?}/n={} cu={:?}({}) max={max} tree={tree} damage={damage:?}",
            sa.list, sa.n, cu.cu, cu.ok
        );
        if self.check(&what, st, e, &[]) {
            let live = sa.rows.iter().map(Option::is_some).collect();
            self.spec.round = Some(SpecRound {
                rows: sa.rows.clone(),
                cu: cu.cu.clone(),
                parents,
                live,
                conv_x: vec![None; sh.layers],
                ssm_done: vec![false; sh.layers],
            });
        }
    }

    /// Every output row of a padding or dropped run is zero.
    fn check_round_padding(&self, what: &str, out: &[u8], row_bytes: usize) {
        let round = self.spec.round.as_ref().unwrap();
        for r in 0..round.rows.len() {
            if round.rows[r].is_some() && round.live[r] {
                continue;
            }
            let (t0, t1) = (round.cu[r] as usize, round.cu[r + 1] as usize);
            assert!(
                out[t0 * row_bytes..t1 * row_bytes].iter().all(|&b| b == 0),
                "{what}: run {r}'s outputs are not zero"
            );
        }
    }

    fn conv_verify(&mut self, k: &ConvKernel) {
        let sh = self.sh;
        let (layer, lok) = k.layer.resolve(sh.layers);
        let (io, dok) = (k.io_dtype.0, k.io_dtype.ok());
        let tokens = self.spec.round.as_ref().map_or(0, SpecRound::tokens);
        let (args, _w, _bias, aok) = self.conv_args(&k.args, io);
        let correct = tokens * sh.dim();
        let xl = k.x.len.resolve(correct, sh.dim());
        let mut x = BufArg::new(io, xl, correct, k.x.ptr, self.cache_mem);
        x.fill(io, k.x_seed);
        let ol = k.out.len.resolve(correct, sh.dim());
        let mut out = BufArg::new(io, ol, correct, k.out.ptr, self.cache_mem);
        let before = out.bytes().to_vec();
        let ok = self.spec.round.is_some()
            && lok
            && dok
            && aok
            && xl == correct
            && x.ptr_ok()
            && ol == correct
            && out.ptr_ok();
        let e = self.expect(ok);
        let op = out.mut_ptr();
        // SAFETY: live handle; buffers hold what their lengths claim (or
        // an absurd length the library must refuse).
        let st = unsafe { m2c_conv_verify(self.cache, layer, x.ptr(), xl, op, ol, &args) };
        let what = format!(
            "conv_verify layer={layer}({lok}) io={io}({dok}) args={args:?}({aok}) x=({xl},{:?}) out=({ol},{:?}) correct={correct}",
            x.mode, out.mode
        );
        if self.check(&what, st, e, &[(out.bytes(), &before)]) {
            self.check_round_padding(&what, out.bytes(), sh.dim() * dtype_size(io));
            let round = self.spec.round.as_mut().unwrap();
            round.conv_x[layer as usize] = Some((io, x.bytes()[..correct * dtype_size(io)].to_vec()));
        }
    }

    fn ssm_verify(&mut self, k: &SsmKernel) {
        let sh = self.sh;
        let (layer, lok) = k.layer.resolve(sh.layers);
        let (io, dok) = (k.io_dtype.0, k.io_dtype.ok());
        let tokens = self.spec.round.as_ref().map_or(0, SpecRound::tokens);
        let (args, _params, aok) = self.ssm_args(&k.args, io);
        let (h, hd) = (sh.heads, sh.head_dim);
        let (bufs, ios, bok) = self.ssm_bufs(k, io, tokens);
        let ok = self.spec.round.is_some() && lok && dok && aok && bok;
        let before = bufs[5].bytes().to_vec();
        let e = self.expect(ok);
        // SAFETY: live handle; buffers as in ssm_kernel.
        let st = unsafe { m2c_ssm_verify(self.cache, layer, &ios, &args) };
        let what = format!(
            "ssm_verify layer={layer}({lok}) io={io}({dok}) args={args:?}({aok}) io={ios:?} bufs={:?}",
            bufs.iter().map(|b| (b.len, b.mode)).collect::<Vec<_>>()
        );
        if self.check(&what, st, e, &[(bufs[5].bytes(), &before)]) {
            self.check_round_padding(&what, bufs[5].bytes(), h * hd * dtype_size(io));
            self.spec.round.as_mut().unwrap().ssm_done[layer as usize] = true;
        }
    }

    fn spec_commit(&mut self, slots: &Slots, accepted: &[u8; 8], null_accepted: bool) {
        let sh = self.sh;
        // Mostly the round's own slot list, so commits can succeed.
        let round_slots = match &self.spec.round {
            Some(r) if accepted[7] < 192 => Some(Slots::List(Short(
                r.rows.iter().map(|s| s.map_or(Slot::MinusOne, |s| Slot::Near(s as u8 + 2))).collect(),
            ))),
            _ => None,
        };
        let sa = SlotArg::new(round_slots.as_ref().unwrap_or(slots), sh.slots);
        // Mostly within the run (0..=len), sometimes past it.
        let run_len = |s: Option<usize>| {
            let r = self.spec.round.as_ref()?;
            let row = r.live_row(s?)?;
            Some((r.cu[row + 1] - r.cu[row]) as u8)
        };
        let acc: Vec<u32> = (0..sa.n.min(4096))
            .map(|i| {
                let b = accepted.get(i).copied().unwrap_or(0);
                match run_len(sa.rows.get(i).copied().flatten()) {
                    Some(len) if b < 224 => u32::from(b % (len + 1)),
                    _ => u32::from(b % 6),
                }
            })
            .collect();
        let null = null_accepted && sa.n > 0;
        let mut ok = sa.ok && !null && sa.n <= 4096;
        let mut e = self.expect(ok);
        let mut work = Vec::new(); // (slot, row, path)
        if ok {
            match &self.spec.round {
                None => ok = false,
                Some(round) => {
                    for (i, s) in sa.rows.iter().enumerate() {
                        let Some(s) = *s else { continue };
                        let Some(r) = round.live_row(s) else {
                            ok = false;
                            break;
                        };
                        let len = (round.cu[r + 1] - round.cu[r]) as usize;
                        let k = acc[i] as usize;
                        if k > len
                            || (k > 0
                                && (round.conv_x.iter().any(Option::is_none) || round.ssm_done.iter().any(|d| !d)))
                        {
                            ok = false;
                            break;
                        }
                        let base = round.cu[r] as usize;
                        let mut path = Vec::new();
                        let mut t = k as i32 - 1;
                        while t >= 0 {
                            path.push(base + t as usize);
                            t = round.parents[base + t as usize];
                        }
                        path.reverse();
                        if self.model.pos[s].checked_add(path.len() as u64).is_none() {
                            ok = false;
                            break;
                        }
                        work.push((s, r, path));
                    }
                }
            }
        }
        e.ok = ok;
        if ok {
            let round = self.spec.round.as_ref().unwrap();
            for (s, _, path) in &work {
                if path.is_empty() {
                    continue;
                }
                for l in 0..sh.layers {
                    let (d, x) = round.conv_x[l].as_ref().unwrap();
                    for &t in path {
                        Self::push(&mut e.model, &sh, l, *s, x, *d, t);
                    }
                    e.wild_ssm.push((l, *s));
                }
                e.model.pos[*s] += path.len() as u64;
            }
        }
        let ap = if null { ptr::null() } else { acc.as_ptr() };
        // SAFETY: live handle; slots and accepted valid for n entries (or NULL).
        let st = unsafe { m2c_spec_commit(self.cache, sa.ptr(), sa.n, ap) };
        let what = format!("spec_commit slots={:?}/n={} accepted={acc:?} null={null}", sa.list, sa.n);
        if self.check(&what, st, e, &[]) {
            if work.iter().any(|w| !w.2.is_empty()) {
                COMMITTED_PATHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let round = self.spec.round.as_mut().unwrap();
            for (_, r, _) in work {
                round.live[r] = false;
            }
        }
    }

    /// m2c_set_conv_layout: the logical windows (the model) never change;
    /// an unknown layout is refused.
    fn conv_layout(&mut self, layout: u8) {
        let code = [M2C_CONV_LAYOUT_OLDEST_FIRST, M2C_CONV_LAYOUT_RING, 7][usize::from(layout % 3)];
        // SAFETY: live handle.
        let st = unsafe { m2c_set_conv_layout(self.cache, code) };
        let e = self.expect(code != 7);
        self.check("m2c_set_conv_layout", st, e, &[]);
        let mut now = 99;
        // SAFETY: live handle, valid out pointer.
        assert_eq!(unsafe { m2c_get_conv_layout(self.cache, &mut now) }, M2C_STATUS_OK);
        if code != 7 {
            assert_eq!(now, code, "m2c_get_conv_layout");
        }
    }

    /// m2c_set_snapshot_format: 1, 2, or an unknown format (refused);
    /// later saves must be in the format set.
    fn snapshot_format(&mut self, format: u8) {
        let f = [1u32, 2, 9][usize::from(format % 3)];
        // SAFETY: live handle.
        let st = unsafe { m2c_set_snapshot_format(self.cache, f) };
        let e = self.expect(f != 9);
        if self.check("m2c_set_snapshot_format", st, e, &[]) {
            self.snap_format = f;
        }
        let mut now = 0;
        // SAFETY: live handle, valid out pointer.
        assert_eq!(unsafe { m2c_get_snapshot_format(self.cache, &mut now) }, M2C_STATUS_OK);
        assert_eq!(now, self.snap_format, "m2c_get_snapshot_format");
    }

    /// Queries: positions, non-finite counts, views, config, snapshot size,
    /// and m2c_set_stream; none may change anything.
    fn queries(&mut self, slot: Slot, layer: Layer, stream: bool, threads: u8) {
        let sh = self.sh;
        let s = slot.resolve(sh.slots);
        let mut out = 0xDEADu64;
        // SAFETY: live handle, valid out pointers.
        let st = unsafe { m2c_position(self.cache, s, &mut out) };
        if slot_in_range(s, sh.slots) {
            assert_eq!(st, M2C_STATUS_OK);
            assert_eq!(out, self.model.pos[s as usize], "m2c_position");
        } else {
            assert_eq!(st, M2C_STATUS_OUT_OF_RANGE);
            assert_eq!(out, 0xDEAD);
        }
        let mut nf = 0xDEADu64;
        // SAFETY: as above.
        let st = unsafe { m2c_check_finite(self.cache, s, &mut nf) };
        if slot_in_range(s, sh.slots) {
            assert_eq!(st, M2C_STATUS_OK);
            let s = s as usize;
            let mut want = 0;
            for l in 0..sh.layers {
                let c = &self.model.conv[l][self.conv_range(s)];
                want += (0..sh.cper()).filter(|&i| !load(sh.cdt, c, i).is_finite()).count();
                let m = &self.model.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()];
                want += (0..sh.sper()).filter(|&i| !load(sh.sdt, m, i).is_finite()).count();
            }
            assert_eq!(nf, want as u64, "m2c_check_finite");
        } else {
            assert_eq!(st, M2C_STATUS_OUT_OF_RANGE);
            assert_eq!(nf, 0xDEAD);
        }
        let (layer, lok) = layer.resolve(sh.layers);
        let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
        // SAFETY: as above.
        let st = unsafe { m2c_conv_view(self.cache, layer, t.as_mut_ptr()) };
        assert_eq!(st == M2C_STATUS_OK, lok, "m2c_conv_view of layer {layer}");
        let mut size = 0usize;
        // SAFETY: as above.
        assert_eq!(unsafe { m2c_slot_snapshot_size(self.cache, &mut size) }, M2C_STATUS_OK);
        assert_eq!(size, sh.snapshot_size(), "m2c_slot_snapshot_size");
        // A host cache takes no stream: NULL is a no-op, anything else
        // UNSUPPORTED (the value is never dereferenced).
        let stream = usize::from(stream) * 0x1000;
        // SAFETY: live handle; the stream value is only compared with NULL.
        let st = unsafe { m2c_set_stream(self.cache, stream as *mut c_void) };
        assert_eq!(st, if stream == 0 { M2C_STATUS_OK } else { M2C_STATUS_UNSUPPORTED }, "m2c_set_stream");
        // The summary: a size query, then the text, NUL-terminated.
        let mut needed = 0usize;
        // SAFETY: live handle; (NULL, 0) is the size query.
        assert_eq!(unsafe { m2c_describe(self.cache, std::ptr::null_mut(), 0, &mut needed) }, M2C_STATUS_OK);
        let mut text = vec![0xFFu8; needed];
        let mut again = 0usize;
        // SAFETY: a buffer of the stated length.
        let st = unsafe { m2c_describe(self.cache, text.as_mut_ptr().cast(), text.len(), &mut again) };
        assert_eq!((st, again), (M2C_STATUS_OK, needed), "m2c_describe");
        assert!(text[..needed - 1].iter().all(|&b| b != 0) && text[needed - 1] == 0, "m2c_describe text");
        // The calls that follow run on 0 (m2c's pool), 1, 2 or 3 threads:
        // the model does not change with it.
        // SAFETY: live handle.
        assert_eq!(unsafe { m2c_set_num_threads(self.cache, u32::from(threads % 4)) }, M2C_STATUS_OK);
        let e = self.expect(true);
        self.check("queries", M2C_STATUS_OK, e, &[]);
    }

    /// Output parameters and slot lists that point into the cache's own
    /// storage (and a snapshot's `out_written` inside its buffer): each call
    /// fails with INVALID_ARG and changes nothing, reads included.
    fn aliased_output(&mut self, which: AliasedCall, offset: u8, count: u8) {
        let (base, len) = self.cache_mem;
        let need = match which {
            AliasedCall::GetConfig => std::mem::size_of::<m2c_config>(),
            AliasedCall::ConvView => std::mem::size_of::<m2c_tensor>(),
            _ => 8,
        };
        if len < need + 8 {
            return;
        }
        let off = (offset as usize * 8) % (len - need) / 8 * 8;
        // SAFETY: off + need <= len: inside layer 0's conv storage.
        let p = unsafe { base.cast::<u8>().add(off) };
        let n = 1 + count as usize % ((len - off) / 4).clamp(1, 8);
        let c = self.cache;
        let mut snap = vec![0u8; self.sh.snapshot_size() + 16];
        // SAFETY: every pointer is valid for its type (inside the storage,
        // 8-aligned, with room); the library must refuse them all.
        let st = unsafe {
            match which {
                AliasedCall::Position => m2c_position(c, 0, p.cast()),
                AliasedCall::CountNonfinite => m2c_count_nonfinite(c, 0, p.cast()),
                AliasedCall::CheckFinite => m2c_check_finite(c, 0, p.cast()),
                AliasedCall::SlotsInUse => m2c_slots_in_use(c, p.cast()),
                AliasedCall::SnapshotSize => m2c_slot_snapshot_size(c, p.cast()),
                AliasedCall::GetConfig => m2c_get_config(c, p.cast()),
                AliasedCall::ConvView => m2c_conv_view(c, 0, p.cast()),
                AliasedCall::Acquire => m2c_slot_acquire(c, p.cast()),
                AliasedCall::Reset => m2c_reset(c, p.cast(), n),
                AliasedCall::Advance => m2c_advance(c, p.cast(), n, 1),
                AliasedCall::SaveWrittenInBuffer => {
                    let inside = snap.as_mut_ptr().add(8).cast::<usize>();
                    m2c_slot_save(c, 0, snap.as_mut_ptr().cast(), snap.len(), inside)
                }
            }
        };
        assert_eq!(st, M2C_STATUS_INVALID_ARG, "aliased output, call {which:?}: {}", last_error());
        let e = self.expect(false);
        self.check("aliased output", st, e, &[]);
    }

    /// Calls with a NULL handle or NULL required pointers: each fails with
    /// NULL_ARG and changes nothing.
    fn null_call(&mut self, which: NullCall) {
        let x = [0f32; 64];
        let mut slot = 0i32;
        // SAFETY: NULL handles and NULL out pointers are documented errors.
        let st = unsafe {
            match which {
                NullCall::UpdateConvNullHandle => {
                    m2c_update_conv(ptr::null_mut(), 0, ptr::null(), 0, x.as_ptr().cast(), 0, 0)
                }
                NullCall::ResetNullHandle => m2c_reset(ptr::null_mut(), ptr::null(), 0),
                NullCall::AcquireNullHandle => m2c_slot_acquire(ptr::null_mut(), &mut slot),
                NullCall::LoadNullHandle => m2c_slot_load(ptr::null_mut(), 0, x.as_ptr().cast(), 4),
                NullCall::PositionNullOut => m2c_position(self.cache, 0, ptr::null_mut()),
                NullCall::LoadNullBytes => m2c_slot_load(self.cache, 0, ptr::null(), 8),
                NullCall::CopyNullLists => m2c_copy_slots(self.cache, ptr::null(), ptr::null(), 1),
                NullCall::CheckFiniteNullOut => m2c_check_finite(self.cache, 0, ptr::null_mut()),
            }
        };
        assert_eq!(st, M2C_STATUS_NULL_ARG, "NULL argument call {which:?}: {}", last_error());
        let e = self.expect(false);
        self.check("null call", st, e, &[]);
    }
}

/// A struct_size that is not the struct's (`real`).
fn bad_size(s: StructSize, real: u32) -> u32 {
    match s {
        StructSize::Zero => 0,
        StructSize::Eight => 8,
        StructSize::Larger => real + 8,
    }
}

/// Damages a snapshot (docs/FORMATS.md offsets), fixing the checksum
/// where the damage is behind it.
fn damage(bytes: &mut Vec<u8>, d: SnapshotDamage) {
    match d {
        SnapshotDamage::None => return,
        SnapshotDamage::FlipBit { at, bit } => {
            let i = at as usize * 7 % bytes.len();
            bytes[i] ^= 1 << bit;
            return;
        }
        SnapshotDamage::Truncate { by } => {
            bytes.truncate(bytes.len() - 1 - by as usize);
            return;
        }
        SnapshotDamage::Append(b) => {
            bytes.push(b);
            return;
        }
        SnapshotDamage::PositionNearMax { minus } => {
            bytes[56..64].copy_from_slice(&(u64::MAX - u64::from(minus)).to_le_bytes())
        }
        SnapshotDamage::Version { huge } => bytes[8..12].copy_from_slice(&(2 + u32::from(huge) * 1000).to_le_bytes()),
        SnapshotDamage::Fingerprint { field, delta } => {
            let f = 16 + 4 * field as usize;
            bytes[f] = bytes[f].wrapping_add(delta);
        }
        SnapshotDamage::HeaderSize { xor } => {
            bytes[12] = bytes[12].wrapping_add(8);
            bytes[64] ^= xor;
        }
        SnapshotDamage::Position { value, shift } => {
            bytes[56..64].copy_from_slice(&(u64::from(value) << shift).to_le_bytes())
        }
    }
    fix_checksum(bytes);
}
