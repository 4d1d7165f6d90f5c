//! `m2c.Store`: a prefix store (`m2c_store`), keys as Python ints.

use crate::array::ints;
use crate::cache::{Cache, released};
use crate::error::check;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::ffi::CString;
use std::ptr::{null, null_mut};
use std::sync::{Arc, Mutex};

pub struct StoreHandle {
    pub ptr: *mut m2c::m2c_store,
}

// SAFETY: every call on a store is thread-safe (header: m2c_store); destroy
// runs in Drop with no other owner left.
unsafe impl Send for StoreHandle {}
unsafe impl Sync for StoreHandle {}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        // SAFETY: the last owner of a pointer from m2c_store_create.
        unsafe { m2c::m2c_store_destroy(self.ptr) }
    }
}

/// A 128-bit key from a Python int in `0 .. 2**128`.
pub fn key(k: u128) -> m2c::m2c_key {
    m2c::m2c_key { lo: k as u64, hi: (k >> 64) as u64 }
}

fn key_int(k: m2c::m2c_key) -> u128 {
    (u128::from(k.hi) << 64) | u128::from(k.lo)
}

fn tier_code(name: &str) -> PyResult<u32> {
    match name {
        "full" => Ok(m2c::M2C_TIER_FULL),
        "bf16" => Ok(m2c::M2C_TIER_BF16),
        "int8" => Ok(m2c::M2C_TIER_INT8),
        _ => Err(PyValueError::new_err(format!("unknown tier {name:?}: use \"full\", \"bf16\" or \"int8\""))),
    }
}

/// A prefix store: checkpoints of slots under 128-bit keys (Python ints)
/// within a byte budget, shared by any caches of one shape. Evicts the
/// least recently used unpinned checkpoint first; `tier` keeps SSM states
/// at full precision, bf16 or int8; `spill_dir` adds a disk tier.
#[pyclass(module = "m2c", name = "Store", frozen, weakref)]
pub struct Store {
    handle: Mutex<Option<Arc<StoreHandle>>>,
}

impl Store {
    pub fn handle(&self) -> PyResult<Arc<StoreHandle>> {
        self.handle
            .lock()
            .map_err(|_| PyValueError::new_err("m2c.Store: lock poisoned"))?
            .clone()
            .ok_or_else(|| PyValueError::new_err("the m2c.Store is closed"))
    }
}

#[pymethods]
impl Store {
    /// `m2c_store_create`; unset arguments keep the library's defaults
    /// (`m2c_store_config_init`: 1 GiB, 65536 remembered misses, full tier).
    #[new]
    #[pyo3(signature = (*, budget_bytes=None, remember_misses=None, tier="full", spill_dir=None))]
    fn new(
        py: Python<'_>,
        budget_bytes: Option<u64>,
        remember_misses: Option<u64>,
        tier: &str,
        spill_dir: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut cfg = std::mem::MaybeUninit::<m2c::m2c_store_config>::zeroed();
        // SAFETY: init fills every field.
        let mut cfg = unsafe {
            m2c::m2c_store_config_init(cfg.as_mut_ptr());
            cfg.assume_init()
        };
        if let Some(b) = budget_bytes {
            cfg.budget_bytes = b;
        }
        if let Some(r) = remember_misses {
            cfg.remember_misses = r;
        }
        cfg.tier = tier_code(tier)?;
        let dir: Option<CString> = match spill_dir {
            None => None,
            Some(d) => {
                let b: Vec<u8> = py.import("os")?.call_method1("fsencode", (d,))?.extract()?;
                Some(CString::new(b).map_err(|_| PyValueError::new_err("spill_dir contains a NUL byte"))?)
            }
        };
        cfg.spill_dir = dir.as_ref().map_or(null(), |d| d.as_ptr());
        let mut ptr = null_mut();
        let p = &mut ptr as *mut *mut m2c::m2c_store;
        // SAFETY: `cfg` (and the string it points to) and `ptr` live across the call.
        check(py, released(py, || unsafe { m2c::m2c_store_create(&cfg, p) }))?;
        Ok(Store { handle: Mutex::new(Some(Arc::new(StoreHandle { ptr }))) })
    }

    /// Lets go of the store (its checkpoints and spill files go when no
    /// call is using it). Calling it twice is harmless.
    fn close(&self) -> PyResult<()> {
        let taken = self.handle.lock().map_err(|_| PyValueError::new_err("lock poisoned"))?.take();
        drop(taken);
        Ok(())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.handle.lock().map(|h| h.is_none()).unwrap_or(true)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    /// Checkpoints `cache`'s `slot` under `key` (`m2c_store_insert`);
    /// returns `m2c.MISS_NONE`, or `m2c.MISS_TOO_LARGE` when it cannot fit.
    fn insert(&self, py: Python<'_>, cache: &Cache, slot: i32, key: u128) -> PyResult<i32> {
        let s = self.handle()?;
        let c = cache.handle()?;
        let k = self::key(key);
        let mut miss = 0i32;
        let mp = &mut miss as *mut i32;
        // SAFETY: every pointer lives across the call.
        check(py, released(py, || unsafe { m2c::m2c_store_insert(s.ptr, c.ptr, slot, &k, mp) }))?;
        Ok(miss)
    }

    /// How many leading `keys` have a usable checkpoint for `cache`, and why
    /// the next one has none (`m2c_store_lookup`): `(blocks, miss)`.
    fn lookup(&self, py: Python<'_>, cache: &Cache, keys: &Bound<'_, PyAny>) -> PyResult<(u64, i32)> {
        let s = self.handle()?;
        let c = cache.handle()?;
        let ks: Vec<m2c::m2c_key> = keys
            .extract::<Vec<u128>>()
            .map_err(|_| PyTypeError::new_err("keys: must be a sequence of ints in 0 .. 2**128"))?
            .into_iter()
            .map(key)
            .collect();
        let mut out = std::mem::MaybeUninit::<m2c::m2c_lookup>::zeroed();
        // SAFETY: init fills the struct; `ks` holds `len` keys.
        let mut out = unsafe {
            m2c::m2c_lookup_init(out.as_mut_ptr());
            out.assume_init()
        };
        let op = &mut out as *mut m2c::m2c_lookup;
        check(py, released(py, || unsafe { m2c::m2c_store_lookup(s.ptr, c.ptr, ks.as_ptr(), ks.len(), op) }))?;
        Ok((out.blocks, out.miss))
    }

    /// Restores the checkpoint under `key` into `cache`'s `slot`, bit-exact
    /// (`m2c_store_restore`); `m2c.NotFound` (the reason in its message) if none.
    fn restore(&self, py: Python<'_>, key: u128, cache: &Cache, slot: i32) -> PyResult<()> {
        let s = self.handle()?;
        let c = cache.handle()?;
        let k = self::key(key);
        // SAFETY: every pointer lives across the call.
        check(py, released(py, || unsafe { m2c::m2c_store_restore(s.ptr, &k, c.ptr, slot) }))
    }

    /// Pins a checkpoint against eviction (counted; `m2c_store_pin`).
    fn pin(&self, py: Python<'_>, key: u128) -> PyResult<()> {
        let s = self.handle()?;
        let k = self::key(key);
        // SAFETY: live store and key.
        check(py, unsafe { m2c::m2c_store_pin(s.ptr, &k) })
    }

    /// Undoes one `pin` (`m2c_store_unpin`).
    fn unpin(&self, py: Python<'_>, key: u128) -> PyResult<()> {
        let s = self.handle()?;
        let k = self::key(key);
        // SAFETY: live store and key.
        check(py, unsafe { m2c::m2c_store_unpin(s.ptr, &k) })
    }

    /// Drops the checkpoint under `key` (`m2c_store_evict`).
    fn evict(&self, py: Python<'_>, key: u128) -> PyResult<()> {
        let s = self.handle()?;
        let k = self::key(key);
        // SAFETY: live store and key.
        check(py, released(py, || unsafe { m2c::m2c_store_evict(s.ptr, &k) }))
    }

    /// Counters and occupancy (`m2c_store_get_stats`), as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.handle()?;
        let mut st = std::mem::MaybeUninit::<m2c::m2c_store_stats>::zeroed();
        // SAFETY: init fills the struct.
        let mut st = unsafe {
            m2c::m2c_store_stats_init(st.as_mut_ptr());
            st.assume_init()
        };
        // SAFETY: live store and out struct.
        check(py, unsafe { m2c::m2c_store_get_stats(s.ptr, &mut st) })?;
        let d = PyDict::new(py);
        for (k, v) in [
            ("entries", st.entries),
            ("bytes_held", st.bytes_held),
            ("budget_bytes", st.budget_bytes),
            ("pinned", st.pinned),
            ("inserts", st.inserts),
            ("hits", st.hits),
            ("misses_never_stored", st.misses_never_stored),
            ("misses_evicted", st.misses_evicted),
            ("misses_too_large", st.misses_too_large),
            ("misses_incompatible", st.misses_incompatible),
            ("misses_corrupt", st.misses_corrupt),
            ("evictions", st.evictions),
            ("restores", st.restores),
            ("spilled", st.spilled),
            ("spills", st.spills),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

/// The key of the block of `tokens` that follows the block keyed `prev`
/// (None: the first block) (`m2c_key_chain`): two seeded XXH64, stable
/// across releases and platforms.
#[pyfunction]
#[pyo3(signature = (tokens, prev=None))]
pub fn key_chain(py: Python<'_>, tokens: &Bound<'_, PyAny>, prev: Option<u128>) -> PyResult<u128> {
    let t: Vec<i32> = ints(tokens, "tokens")?;
    let p = prev.map(key);
    let pp = p.as_ref().map_or(null(), |k| k as *const m2c::m2c_key);
    let mut out = m2c::m2c_key::default();
    // SAFETY: every pointer lives across the call.
    check(py, unsafe { m2c::m2c_key_chain(pp, t.as_ptr(), t.len(), &mut out) })?;
    Ok(key_int(out))
}
