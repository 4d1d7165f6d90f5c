//! Exported tensor-parallel shards and resharding plans: what each rank of
//! a tensor-parallel layout holds, the byte runs that move a slot between
//! two layouts, and resharding of slot snapshots.

use super::config::{config_from_c, config_to_c, m2c_config};
use super::*;
use m2c_core::tp::{Shard, reshard_plan, reshard_snapshots, shard};

/// What one rank of a tensor-parallel layout holds of every layer (see
/// `m2c_shard_config`). Ranges are half-open (`begin` included, `end` not)
/// and count heads, groups or channels of the full layer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct m2c_shard {
    /// `sizeof(struct m2c_shard)`, set by the caller (`m2c_shard_init`).
    pub struct_size: u32,
    /// The rank and the layout's size.
    pub rank: u32,
    pub tp_size: u32,
    /// SSM heads of the full layer.
    pub head_begin: u32,
    pub head_end: u32,
    /// B/C groups of the full layer.
    pub group_begin: u32,
    pub group_end: u32,
    /// Non-zero when groups are replicated (fewer groups than ranks).
    pub groups_replicated: u32,
    /// Channels of the full conv window (`conv_dim` of the full config) in
    /// its three sections; the rank's own window holds them as `[x | B | C]`.
    pub x_begin: u64,
    pub x_end: u64,
    pub b_begin: u64,
    pub b_end: u64,
    pub c_begin: u64,
    pub c_end: u64,
    /// Bytes of one slot's snapshot of a cache of the rank's config.
    pub snapshot_bytes: u64,
}

/// One run of a resharding plan: `len` bytes at byte `src_offset` of
/// source rank `src_rank`'s slot snapshot go to byte `dst_offset` of
/// destination rank `dst_rank`'s. Offsets are snapshot image offsets, the
/// ones `m2c_region.image_offset` uses: each run lies inside one region of
/// either side's `m2c_slot_regions`, at `region.offset + (offset -
/// region.image_offset)` of its arena.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct m2c_reshard_copy {
    pub src_rank: u32,
    pub dst_rank: u32,
    pub src_offset: u64,
    pub dst_offset: u64,
    pub len: u64,
}

/// Sets `out->struct_size` for `m2c_shard_config` (the other fields are
/// zeroed). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn m2c_shard_init(out: *mut m2c_shard) {
    init_struct("m2c_shard_init", out, || m2c_shard {
        struct_size: std::mem::size_of::<m2c_shard>() as u32,
        ..m2c_shard::default()
    })
}

fn shard_to_c(s: &Shard, snapshot_bytes: usize) -> m2c_shard {
    m2c_shard {
        struct_size: std::mem::size_of::<m2c_shard>() as u32,
        rank: s.rank,
        tp_size: s.tp_size,
        head_begin: s.heads.start,
        head_end: s.heads.end,
        group_begin: s.groups.start,
        group_end: s.groups.end,
        groups_replicated: u32::from(s.replicated),
        x_begin: s.x.start,
        x_end: s.x.end,
        b_begin: s.b.start,
        b_end: s.b.end,
        c_begin: s.c.start,
        c_end: s.c.end,
        snapshot_bytes: snapshot_bytes as u64,
    }
}

/// The config of rank `rank` of a `tp_size`-way tensor-parallel layout of
/// the full model `*full` into `*out_config`, and (if `out_shard` is not
/// NULL) what that rank holds into `*out_shard`. The rule, as Mamba2
/// engines shard a layer: heads split evenly (`tp_size` must divide
/// `num_heads`; rank `r` holds heads `r*H/tp .. (r+1)*H/tp` and their `x`
/// channels); B/C groups split evenly when `tp_size` divides `n_groups`,
/// else, when `n_groups` divides `tp_size`, each rank holds the one group
/// its heads read, replicated on the ranks that share it (vLLM's
/// `extra_groups_for_head_shards`, which vLLM allows for `n_groups == 1`).
/// A rank's cache is an ordinary cache of the rank's config: create it
/// with `m2c_create(out_config)`; its conv window holds the rank's
/// channels as `[x | B | C]`. `tp_size == 1` gives the full config. A
/// rank's digest (`m2c_slot_digest` on its cache) covers its shard.
///
/// Errors: `M2C_STATUS_NULL_ARG` (full, out_config),
/// `M2C_STATUS_INVALID_ARG` (an unknown `struct_size` of any of the three
/// structs; `tp_size` 0, not dividing `num_heads`, or neither dividing nor
/// divided by `n_groups`), `M2C_STATUS_OUT_OF_RANGE` (`rank >= tp_size`),
/// `M2C_STATUS_INVALID_CONFIG` (`*full` itself). Outputs are written only
/// on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_shard_config(
    full: *const m2c_config,
    tp_size: u32,
    rank: u32,
    out_config: *mut m2c_config,
    out_shard: *mut m2c_shard,
) -> m2c_status {
    ffi_status("m2c_shard_config", || {
        // SAFETY: NULL or a valid config, per the contract.
        let full = config_from_c(unsafe { arg_ref(full, "full") }?)?;
        let out_config = out_ptr(out_config, "out_config")?;
        // SAFETY: non-NULL and aligned; the caller provides a config.
        check_struct_size::<m2c_config>(unsafe { (*out_config).struct_size }, "out_config", "m2c_config_init")?;
        if !out_shard.is_null() {
            let p = out_ptr(out_shard, "out_shard")?;
            // SAFETY: non-NULL and aligned; the caller provides the struct.
            check_struct_size::<m2c_shard>(unsafe { (*p).struct_size }, "out_shard", "m2c_shard_init")?;
        }
        let (cfg, s) = shard(&full, tp_size, rank)?;
        let bytes = m2c_core::tp::snapshot_bytes(&cfg);
        // SAFETY: checked non-NULL and aligned above.
        unsafe {
            out_config.write(config_to_c(&cfg));
            if !out_shard.is_null() {
                out_shard.write(shard_to_c(&s, bytes));
            }
        }
        Ok(())
    })
}

/// The plan that moves one slot's state from the `tp_src` ranks of a
/// layout of `*full` to the `tp_dst` ranks of another, into `out` (`cap`
/// entries) and its length into `*out_n`; `(NULL, 0)` asks for the length
/// only. Every byte of every destination rank's slot state is written by
/// exactly one run (a replicated group is read from the lowest source rank
/// holding it); runs are ordered by destination rank, then layer, conv
/// window then SSM state, and adjacent runs are merged. The plan is the
/// same for every slot: map it through `m2c_slot_regions` of the source
/// and destination slots (or apply it to snapshots with
/// `m2c_snapshot_reshard`). Positions are not in the plan: send
/// `m2c_position`. Its size does not depend on the state's size (a few
/// runs per layer and rank).
///
/// Errors: `M2C_STATUS_NULL_ARG` (full, out_n; out NULL with `cap > 0`),
/// `M2C_STATUS_INVALID_ARG` (unknown `struct_size`; a layout
/// `m2c_shard_config` refuses; a layout of more than 4096 ranks),
/// `M2C_STATUS_INVALID_CONFIG`, `M2C_STATUS_SHAPE_MISMATCH` (`cap` too
/// small; the message says how many are needed), `M2C_STATUS_OUT_OF_MEMORY`.
/// Outputs are written only on success. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_reshard_plan(
    full: *const m2c_config,
    tp_src: u32,
    tp_dst: u32,
    out: *mut m2c_reshard_copy,
    cap: usize,
    out_n: *mut usize,
) -> m2c_status {
    ffi_status("m2c_reshard_plan", || {
        // SAFETY: NULL or a valid config, per the contract.
        let full = config_from_c(unsafe { arg_ref(full, "full") }?)?;
        let out_n = out_ptr(out_n, "out_n")?;
        let plan: Vec<m2c_reshard_copy> = reshard_plan(&full, tp_src, tp_dst)?
            .iter()
            .map(|c| m2c_reshard_copy {
                src_rank: c.src_rank,
                dst_rank: c.dst_rank,
                src_offset: c.src_offset,
                dst_offset: c.dst_offset,
                len: c.len,
            })
            .collect();
        if !out.is_null() || cap != 0 {
            let out = out_ptr(out, "out")?;
            if cap < plan.len() {
                return Err(CoreError::ShapeMismatch(format!(
                    "out holds {cap} entries, but {} are needed",
                    plan.len()
                ))
                .into());
            }
            // SAFETY: `cap >= plan.len()` writable entries, per the contract.
            unsafe { std::ptr::copy_nonoverlapping(plan.as_ptr(), out, plan.len()) };
        }
        // SAFETY: non-NULL and aligned.
        unsafe { out_n.write(plan.len()) };
        Ok(())
    })
}

/// Reshards one slot's snapshots from a `tp_src`-way layout of `*full` to
/// a `tp_dst`-way one: `src[r]` (`src_lens[r]` bytes) is rank `r`'s
/// snapshot (`m2c_slot_save` on its cache), and `dst[r]` (`dst_lens[r]`
/// bytes, exactly `m2c_shard.snapshot_bytes` of rank `r`) receives rank
/// `r`'s snapshot of the destination layout, bit for bit what saving the
/// same state from caches of that layout writes; load it with
/// `m2c_slot_load` into the rank's cache. `tp_src == 1` splits a full
/// snapshot, `tp_dst == 1` merges. Every source is checked whole first
/// (size, checksum, shape; all ranks at one position), and nothing is
/// written unless every check passes.
///
/// Errors: `M2C_STATUS_NULL_ARG` (full; src, src_lens, dst or dst_lens NULL,
/// or one of their entries NULL with a non-zero length),
/// `M2C_STATUS_INVALID_ARG` (unknown `struct_size`; a layout
/// `m2c_shard_config` refuses; source ranks at different positions),
/// `M2C_STATUS_SHAPE_MISMATCH` (a destination length that is not its
/// rank's snapshot size), `M2C_STATUS_CORRUPT` (a damaged, truncated or
/// padded source; the message names the rank), `M2C_STATUS_INCOMPATIBLE`
/// (a source of another shape or version), `M2C_STATUS_INVALID_CONFIG`,
/// `M2C_STATUS_INVALID_ARG` (a destination overlapping another
/// destination or a source). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn m2c_snapshot_reshard(
    full: *const m2c_config,
    tp_src: u32,
    src: *const *const c_void,
    src_lens: *const usize,
    tp_dst: u32,
    dst: *const *mut c_void,
    dst_lens: *const usize,
) -> m2c_status {
    ffi_status("m2c_snapshot_reshard", || {
        // SAFETY: NULL or a valid config, per the contract.
        let full = config_from_c(unsafe { arg_ref(full, "full") }?)?;
        // Validate the layouts before reading the pointer arrays' lengths.
        reshard_plan(&full, tp_src, tp_dst)?;
        // SAFETY: NULL or `tp_*` entries each, per the contract.
        let (src, src_lens, dst, dst_lens) = unsafe {
            (
                super::spec::array_arg(src, tp_src as usize, "src")?,
                super::spec::array_arg(src_lens, tp_src as usize, "src_lens")?,
                super::spec::array_arg(dst, tp_dst as usize, "dst")?,
                super::spec::array_arg(dst_lens, tp_dst as usize, "dst_lens")?,
            )
        };
        let srcs: Vec<&[u8]> = src
            .iter()
            .zip(src_lens)
            .enumerate()
            // SAFETY: each entry is NULL or `len` readable bytes.
            .map(|(r, (&p, &n))| unsafe { super::spec::array_arg(p.cast::<u8>(), n, &format!("src[{r}]")) })
            .collect::<Result<_, _>>()?;
        // A destination may overlap no other buffer (it is written while
        // the sources are read, and two destinations would alias).
        for (r, (&p, &n)) in dst.iter().zip(dst_lens).enumerate() {
            let others =
                dst.iter().zip(dst_lens).enumerate().filter(|&(q, _)| q != r).map(|(_, (&o, &m))| (o.cast_const(), m));
            let sources = src.iter().zip(src_lens).map(|(&o, &m)| (o, m));
            if others.chain(sources).any(|(o, m)| super::cache::overlap(p.cast_const(), n, o, m)) {
                return Err(
                    CoreError::InvalidArg(format!("dst[{r}] overlaps another source or destination buffer")).into()
                );
            }
        }
        let mut dsts: Vec<&mut [u8]> = Vec::with_capacity(dst.len());
        for (r, (&p, &n)) in dst.iter().zip(dst_lens).enumerate() {
            if p.is_null() {
                if n != 0 {
                    return Err(Error::NullArg(format!("dst[{r}] is NULL but its length is {n}")));
                }
                dsts.push(&mut []);
            } else if n > isize::MAX as usize {
                return Err(CoreError::InvalidArg(format!("dst[{r}]: length {n} is too large")).into());
            } else {
                // SAFETY: `n` writable bytes, per the contract, overlapping no
                // other buffer (checked above).
                dsts.push(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) });
            }
        }
        reshard_snapshots(&full, tp_src, &srcs, tp_dst, &mut dsts)?;
        Ok(())
    })
}
