//! Tensor-parallel shards of a cache's state, and resharding between two
//! tensor-parallel layouts.
//!
//! Mamba2 engines shard a layer by heads: with `tp_size` ranks, rank `r`
//! holds heads `r * H/tp .. (r+1) * H/tp` (so `tp_size` must divide
//! `num_heads`), the matching `x` channels of the conv window, and the B/C
//! groups those heads read:
//! - when `tp_size` divides `n_groups`, the groups are split evenly like the
//!   heads (rank `r` holds groups `r * G/tp .. (r+1) * G/tp`);
//! - when `n_groups` divides `tp_size` (fewer groups than ranks), every rank
//!   holds one group, the one its heads read, replicated on the
//!   `tp_size / n_groups` ranks that share it. This is vLLM's
//!   `extra_groups_for_head_shards` rule (which vLLM allows for
//!   `n_groups == 1` only; every divisor works the same way here);
//! - anything else is refused.
//!
//! A rank's cache is an ordinary cache of the rank's config (`shard`),
//! whose conv window holds its `[x | B | C]` channels in that order. A
//! resharding plan (`reshard_plan`) lists the byte runs that move one
//! slot's state from the ranks of one layout to the ranks of another, in
//! terms of each rank's slot snapshot image (the layout `slot_save` writes
//! and `slot_regions` maps onto the cache's arenas), so an engine can move
//! the runs with its own transfer engine; `reshard_snapshots` applies a plan
//! to snapshots, bit for bit.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::snapshot::{SLOT_HEADER_BYTES, check_snapshot, payload_bytes, snapshot_parts, snapshot_size};
use std::ops::Range;

/// What rank `rank` of a `tp_size`-way layout holds of each layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub tp_size: u32,
    pub rank: u32,
    /// Heads of the full layer.
    pub heads: Range<u32>,
    /// B/C groups of the full layer.
    pub groups: Range<u32>,
    /// The groups are replicated (fewer groups than ranks).
    pub replicated: bool,
    /// Channels of the full conv window, per section: `x`, `B`, `C`.
    pub x: Range<u64>,
    pub b: Range<u64>,
    pub c: Range<u64>,
}

/// The config of rank `rank` of a `tp_size`-way layout of `full`, and what
/// it holds.
pub fn shard(full: &Config, tp_size: u32, rank: u32) -> Result<(Config, Shard)> {
    full.shape()?;
    if tp_size == 0 {
        return Err(Error::InvalidArg("tp_size must be at least 1".into()));
    }
    if rank >= tp_size {
        return Err(Error::OutOfRange(format!("rank {rank} is out of range for tp_size {tp_size}")));
    }
    let (h, g) = (full.num_heads, full.n_groups);
    if !h.is_multiple_of(tp_size) {
        return Err(Error::InvalidArg(format!("tp_size {tp_size} does not divide num_heads {h}")));
    }
    let hr = h / tp_size;
    let heads = rank * hr..(rank + 1) * hr;
    let (groups, replicated) = if g.is_multiple_of(tp_size) {
        let gr = g / tp_size;
        (rank * gr..(rank + 1) * gr, false)
    } else if tp_size.is_multiple_of(g) {
        let first = heads.start / (h / g);
        (first..first + 1, true)
    } else {
        return Err(Error::InvalidArg(format!(
            "tp_size {tp_size} and n_groups {g}: one must divide the other (groups are split, or replicated across ranks)"
        )));
    };
    let (p, n) = (u64::from(full.head_dim), u64::from(full.state_size));
    let inner = u64::from(full.intermediate_size);
    let gn = u64::from(g) * n;
    let x = u64::from(heads.start) * p..u64::from(heads.end) * p;
    let b = inner + u64::from(groups.start) * n..inner + u64::from(groups.end) * n;
    let c = inner + gn + u64::from(groups.start) * n..inner + gn + u64::from(groups.end) * n;
    let cfg =
        Config { num_heads: hr, intermediate_size: hr * full.head_dim, n_groups: groups.end - groups.start, ..*full };
    cfg.shape()?;
    Ok((cfg, Shard { tp_size, rank, heads, groups, replicated, x, b, c }))
}

/// One run of a resharding plan: `len` bytes at `src_offset` of source rank
/// `src_rank`'s slot snapshot image go to `dst_offset` of destination rank
/// `dst_rank`'s. Runs never cross a layer's conv window or SSM state, so
/// each lies inside one `slot_regions` run on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    pub src_rank: u32,
    pub dst_rank: u32,
    pub src_offset: u64,
    pub dst_offset: u64,
    pub len: u64,
}

/// The local conv channels of a shard, in its `[x | B | C]` order, as
/// (local start, full range) pairs.
fn conv_sections(s: &Shard) -> [(u64, Range<u64>); 3] {
    let xl = s.x.end - s.x.start;
    let bl = s.b.end - s.b.start;
    [(0, s.x.clone()), (xl, s.b.clone()), (xl + bl, s.c.clone())]
}

/// The most ranks a layout may have: far above any tensor-parallel size in
/// use, and small enough that a plan's size stays bounded.
pub const MAX_TP: u32 = 4096;

/// The source rank holding full conv channel `ch` (the lowest one, for a
/// replicated group), given the layout's heads and groups per rank.
fn holder(full: &Config, tp: u32, ch: u64) -> u32 {
    let (h, g) = (u64::from(full.num_heads), u64::from(full.n_groups));
    let (p, n) = (u64::from(full.head_dim), u64::from(full.state_size));
    let inner = u64::from(full.intermediate_size);
    let heads_per_rank = h / u64::from(tp);
    let rank_of_head = |head: u64| (head / heads_per_rank) as u32;
    if ch < inner {
        return rank_of_head(ch / p);
    }
    let group = ((ch - inner) / n) % g;
    if g.is_multiple_of(u64::from(tp)) { (group / (g / u64::from(tp))) as u32 } else { rank_of_head(group * (h / g)) }
}

/// The runs that move one slot's state from the `tp_src` ranks of `full`
/// to its `tp_dst` ranks: every state byte of every destination rank is
/// written exactly once (a replicated group is read from the lowest source
/// rank holding it). Ordered by destination rank, layer, conv then SSM.
/// Its size is `O(layers * (tp_src + tp_dst))`, and so is its cost.
pub fn reshard_plan(full: &Config, tp_src: u32, tp_dst: u32) -> Result<Vec<Copy>> {
    for tp in [tp_src, tp_dst] {
        if tp > MAX_TP {
            return Err(Error::InvalidArg(format!("tp_size {tp} is above {MAX_TP}")));
        }
    }
    // Every rank of a layout has the same shape: rank 0 stands for all.
    let (scfg, _) = shard(full, tp_src, 0)?;
    let (dcfg, _) = shard(full, tp_dst, 0)?;
    let w = u64::from(full.conv_width) * full.conv_dtype.size() as u64;
    let head_bytes = u64::from(full.head_dim) * u64::from(full.state_size) * full.ssm_dtype.size() as u64;
    // Bytes of one layer's conv window and of its payload.
    let layer_bytes = |c: &Config| {
        let s = c.shape().expect("a valid shard config");
        let conv = (s.conv_slot_elems * c.conv_dtype.size()) as u64;
        (conv, conv + (s.ssm_slot_elems * c.ssm_dtype.size()) as u64)
    };
    let ((sconv, slayer), (dconv, dlayer)) = (layer_bytes(&scfg), layer_bytes(&dcfg));
    // Per destination rank and layer: each of its four pieces (x, B, C,
    // heads) comes from at most tp_src / tp_dst + 2 source ranks. Reserved
    // up front, so an absurd layer count is an error, not an abort.
    let per = 4 * (u64::from(tp_src) / u64::from(tp_dst) + 2);
    let bound = u64::from(full.num_layers).saturating_mul(u64::from(tp_dst)).saturating_mul(per);
    let mut out = Vec::new();
    usize::try_from(bound)
        .ok()
        .and_then(|b| out.try_reserve_exact(b).ok())
        .ok_or_else(|| Error::OutOfMemory(format!("a plan of up to {bound} runs does not fit in memory")))?;
    let src_shards = |r: u32| shard(full, tp_src, r).map(|(_, s)| s);
    for dr in 0..tp_dst {
        let (_, d) = shard(full, tp_dst, dr)?;
        for l in 0..u64::from(full.num_layers) {
            let dbase = SLOT_HEADER_BYTES as u64 + l * dlayer;
            let sbase = SLOT_HEADER_BYTES as u64 + l * slayer;
            // Conv: each destination section from the source holding it.
            let seg = out.len();
            for (dlocal, drange) in conv_sections(&d) {
                let mut at = drange.start;
                while at < drange.end {
                    let s = src_shards(holder(full, tp_src, at))?;
                    let (slocal, srange) = conv_sections(&s)
                        .into_iter()
                        .find(|(_, r)| r.contains(&at))
                        .expect("the holder holds the channel");
                    let end = drange.end.min(srange.end);
                    push(
                        &mut out,
                        seg,
                        Copy {
                            src_rank: s.rank,
                            dst_rank: d.rank,
                            src_offset: sbase + (slocal + at - srange.start) * w,
                            dst_offset: dbase + (dlocal + at - drange.start) * w,
                            len: (end - at) * w,
                        },
                    );
                    at = end;
                }
            }
            // SSM: heads.
            let seg = out.len();
            let heads_per_src = full.num_heads / tp_src.max(1);
            let mut h = d.heads.start;
            while h < d.heads.end {
                let s = src_shards(h / heads_per_src)?;
                let end = d.heads.end.min(s.heads.end);
                push(
                    &mut out,
                    seg,
                    Copy {
                        src_rank: s.rank,
                        dst_rank: d.rank,
                        src_offset: sbase + sconv + u64::from(h - s.heads.start) * head_bytes,
                        dst_offset: dbase + dconv + u64::from(h - d.heads.start) * head_bytes,
                        len: u64::from(end - h) * head_bytes,
                    },
                );
                h = end;
            }
        }
    }
    Ok(out)
}

/// Appends `c`, merged into the previous run when both sides continue it
/// and that run belongs to the same segment (one layer's conv window or
/// SSM state, which starts at `out[seg]`: runs never cross regions).
fn push(out: &mut Vec<Copy>, seg: usize, c: Copy) {
    if c.len == 0 {
        return;
    }
    if out.len() > seg {
        let last = out.last_mut().expect("non-empty");
        if last.src_rank == c.src_rank
            && last.dst_rank == c.dst_rank
            && last.src_offset + last.len == c.src_offset
            && last.dst_offset + last.len == c.dst_offset
        {
            last.len += c.len;
            return;
        }
    }
    out.push(c);
}

/// Bytes of one slot's snapshot for each rank of a `tp_size`-way layout.
pub fn shard_snapshot_sizes(full: &Config, tp_size: u32) -> Result<Vec<usize>> {
    if tp_size > MAX_TP {
        return Err(Error::InvalidArg(format!("tp_size {tp_size} is above {MAX_TP}")));
    }
    (0..tp_size.max(1)).map(|r| shard(full, tp_size, r).map(|(c, _)| snapshot_size(&c))).collect()
}

/// Bytes of one slot's snapshot of a cache of `cfg` (a rank's config).
pub fn snapshot_bytes(cfg: &Config) -> usize {
    snapshot_size(cfg)
}

/// Reshards one slot's snapshots: `src[r]` is rank `r`'s snapshot under a
/// `tp_src`-way layout of `full` (checked whole: size, checksum, shape;
/// every rank at one position), and `dst[r]` receives rank `r`'s snapshot
/// under the `tp_dst`-way layout (each exactly its snapshot's size). The
/// result is bit for bit what saving the same state from caches of the
/// destination layout gives. Nothing is written unless everything checks.
pub fn reshard_snapshots(full: &Config, tp_src: u32, src: &[&[u8]], tp_dst: u32, dst: &mut [&mut [u8]]) -> Result<()> {
    let plan = reshard_plan(full, tp_src, tp_dst)?;
    if src.len() != tp_src as usize || dst.len() != tp_dst as usize {
        return Err(Error::ShapeMismatch(format!(
            "{} source and {} destination snapshots for tp_src {tp_src} and tp_dst {tp_dst}",
            src.len(),
            dst.len()
        )));
    }
    let mut position = None;
    for (r, buf) in src.iter().enumerate() {
        let (cfg, _) = shard(full, tp_src, r as u32)?;
        let p = check_snapshot(&cfg, buf).map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!("source rank {r}: {m}")),
            Error::Incompatible(m) => Error::Incompatible(format!("source rank {r}: {m}")),
            e => e,
        })?;
        match position {
            None => position = Some(p),
            Some(q) if q != p => {
                return Err(Error::InvalidArg(format!(
                    "source ranks disagree on the slot's position ({q} and {p} at rank {r})"
                )));
            }
            _ => {}
        }
    }
    let sizes = shard_snapshot_sizes(full, tp_dst)?;
    for (r, (buf, &size)) in dst.iter().zip(&sizes).enumerate() {
        if buf.len() != size {
            return Err(Error::ShapeMismatch(format!(
                "destination rank {r}'s buffer is {} bytes; its snapshot is {size} bytes",
                buf.len()
            )));
        }
    }
    let position = position.unwrap_or(0);
    for c in &plan {
        let (s, d) = (c.src_offset as usize, c.dst_offset as usize);
        let len = c.len as usize;
        dst[c.dst_rank as usize][d..d + len].copy_from_slice(&src[c.src_rank as usize][s..s + len]);
    }
    for (r, buf) in dst.iter_mut().enumerate() {
        let (cfg, _) = shard(full, tp_dst, r as u32)?;
        let payload_end = SLOT_HEADER_BYTES + payload_bytes(&cfg);
        let (head, sum) = snapshot_parts(&cfg, position, &buf[SLOT_HEADER_BYTES..payload_end]);
        buf[..SLOT_HEADER_BYTES].copy_from_slice(&head);
        buf[payload_end..].copy_from_slice(&sum);
    }
    Ok(())
}
