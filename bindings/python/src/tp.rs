//! Tensor-parallel shards and resharding (`m2c_shard_config`,
//! `m2c_reshard_plan`, `m2c_snapshot_reshard`) as module functions.

use crate::array::{Want, input};
use crate::cache::released;
use crate::config::Config;
use crate::error::check;
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::ffi::c_void;

fn shard_raw(
    py: Python<'_>,
    full: &m2c::m2c_config,
    tp_size: u32,
    rank: u32,
) -> PyResult<(m2c::m2c_config, m2c::m2c_shard)> {
    let mut out = std::mem::MaybeUninit::<m2c::m2c_config>::zeroed();
    let mut sh = std::mem::MaybeUninit::<m2c::m2c_shard>::zeroed();
    // SAFETY: the inits fill the structs; every pointer lives across the call.
    unsafe {
        m2c::m2c_config_init(out.as_mut_ptr());
        m2c::m2c_shard_init(sh.as_mut_ptr());
        check(py, m2c::m2c_shard_config(full, tp_size, rank, out.as_mut_ptr(), sh.as_mut_ptr()))?;
        Ok((out.assume_init(), sh.assume_init()))
    }
}

/// The config of rank `rank` of a `tp_size`-way tensor-parallel layout of
/// `full`, and what it holds (`m2c_shard_config`): `(Config, dict)` with
/// `heads`, `groups`, `x`, `b`, `c` (half-open ranges of the full layer:
/// heads, B/C groups, full conv channels), `groups_replicated` and
/// `snapshot_bytes`. Heads split evenly; groups split evenly or, with fewer
/// groups than ranks, replicated (vLLM's rule).
#[pyfunction]
pub fn shard_config<'py>(
    py: Python<'py>,
    full: &Config,
    tp_size: u32,
    rank: u32,
) -> PyResult<(Config, Bound<'py, PyDict>)> {
    let (cfg, s) = shard_raw(py, &full.to_raw()?, tp_size, rank)?;
    let d = PyDict::new(py);
    d.set_item("rank", s.rank)?;
    d.set_item("tp_size", s.tp_size)?;
    d.set_item("heads", (s.head_begin, s.head_end))?;
    d.set_item("groups", (s.group_begin, s.group_end))?;
    d.set_item("groups_replicated", s.groups_replicated != 0)?;
    d.set_item("x", (s.x_begin, s.x_end))?;
    d.set_item("b", (s.b_begin, s.b_end))?;
    d.set_item("c", (s.c_begin, s.c_end))?;
    d.set_item("snapshot_bytes", s.snapshot_bytes)?;
    Ok((Config::from_raw(&cfg), d))
}

/// One run of a plan: `(src_rank, dst_rank, src_offset, dst_offset, len)`.
type Run = (u32, u32, u64, u64, u64);

/// The runs moving one slot's state from the `tp_src` ranks of a layout of
/// `full` to its `tp_dst` ranks (`m2c_reshard_plan`): `(src_rank, dst_rank,
/// src_offset, dst_offset, len)` tuples in slot snapshot image offsets
/// (map them through `Cache.slot_regions` of each side).
#[pyfunction]
pub fn reshard_plan(py: Python<'_>, full: &Config, tp_src: u32, tp_dst: u32) -> PyResult<Vec<Run>> {
    let raw = full.to_raw()?;
    let mut n = 0usize;
    // SAFETY: (NULL, 0) asks for the length.
    check(py, unsafe { m2c::m2c_reshard_plan(&raw, tp_src, tp_dst, std::ptr::null_mut(), 0, &mut n) })?;
    let mut v = vec![m2c::m2c_reshard_copy::default(); n];
    // SAFETY: `v` holds `n` entries.
    check(py, unsafe { m2c::m2c_reshard_plan(&raw, tp_src, tp_dst, v.as_mut_ptr(), v.len(), &mut n) })?;
    Ok(v[..n].iter().map(|c| (c.src_rank, c.dst_rank, c.src_offset, c.dst_offset, c.len)).collect())
}

/// Reshards one slot's snapshots (`m2c_snapshot_reshard`): `src[r]` is rank
/// `r`'s `Cache.slot_save` under a `len(src)`-way layout of `full`; returns
/// the `tp_dst` ranks' snapshots as `bytes`, bit for bit what caches of
/// that layout save. `m2c.Corrupt` names a damaged source rank.
#[pyfunction]
pub fn reshard_snapshots<'py>(
    py: Python<'py>,
    full: &Config,
    src: Vec<Bound<'py, PyAny>>,
    tp_dst: u32,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let raw = full.to_raw()?;
    let tp_src = u32::try_from(src.len()).map_err(|_| PyValueError::new_err("too many source ranks"))?;
    let arrays = src
        .iter()
        .enumerate()
        .map(|(r, s)| input(s, &format!("src[{r}]"), "uint8", Want::HOST))
        .collect::<PyResult<Vec<_>>>()?;
    let mut dst: Vec<Vec<u8>> = Vec::with_capacity(tp_dst as usize);
    for r in 0..tp_dst {
        let (_, sh) = shard_raw(py, &raw, tp_dst, r)?;
        let mut buf = Vec::new();
        usize::try_from(sh.snapshot_bytes)
            .ok()
            .and_then(|n| buf.try_reserve_exact(n).ok())
            .ok_or_else(|| PyMemoryError::new_err(format!("rank {r}'s snapshot of {} bytes", sh.snapshot_bytes)))?;
        buf.resize(sh.snapshot_bytes as usize, 0);
        dst.push(buf);
    }
    let sp: Vec<*const c_void> = arrays.iter().map(|a| a.ptr.cast_const()).collect();
    let sl: Vec<usize> = arrays.iter().map(|a| a.len * a.kind_size()).collect();
    let dp: Vec<*mut c_void> = dst.iter_mut().map(|d| d.as_mut_ptr().cast()).collect();
    let dl: Vec<usize> = dst.iter().map(Vec::len).collect();
    // SAFETY: every pointer array holds one entry per rank, each entry a
    // live buffer of its length; the destinations overlap nothing.
    check(
        py,
        released(py, || unsafe {
            m2c::m2c_snapshot_reshard(&raw, tp_src, sp.as_ptr(), sl.as_ptr(), tp_dst, dp.as_ptr(), dl.as_ptr())
        }),
    )?;
    Ok(dst.iter().map(|d| PyBytes::new(py, d)).collect())
}
