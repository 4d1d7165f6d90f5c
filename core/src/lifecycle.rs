//! Slot lifecycle (acquire, release), fork and reorder (`copy_slots`), and
//! the byte-level accessors snapshots and files use.

use crate::buffer::{try_vec, try_with_capacity};
use crate::cache::{Cache, PAR_MIN_BYTES};
use crate::error::{Error, Result};
use crate::pool;
use rayon::prelude::*;

impl Cache {
    /// `slot` as an index, or `OutOfRange`.
    pub fn check_slot(&self, slot: i32) -> Result<usize> {
        match usize::try_from(slot) {
            Ok(s) if s < self.num_slots() => Ok(s),
            _ => Err(Error::OutOfRange(format!("slot {slot} is out of range (num_slots = {})", self.num_slots()))),
        }
    }

    /// Hands out the lowest free slot, with zeroed state in every layer and
    /// position 0. `NoFreeSlot` when every slot is taken.
    pub fn slot_acquire(&mut self) -> Result<i32> {
        let s = self
            .in_use
            .iter()
            .position(|&u| u == 0)
            .ok_or_else(|| Error::NoFreeSlot(format!("all {} slots are in use", self.num_slots())))?;
        self.zero_slot(s);
        self.positions[s] = 0;
        self.set_in_use(s, true);
        self.spec_drop(s);
        Ok(s as i32)
    }

    /// Returns `slot` to the free list. Releasing a free slot is an
    /// `InvalidArg` (a double release is an engine bug worth reporting).
    pub fn slot_release(&mut self, slot: i32) -> Result<()> {
        let s = self.check_slot(slot)?;
        if self.in_use[s] == 0 {
            return Err(Error::InvalidArg(format!("slot {slot} is not in use (double release?)")));
        }
        self.set_in_use(s, false);
        self.spec_drop(s);
        Ok(())
    }

    /// Slots currently acquired.
    pub fn slots_in_use(&self) -> u32 {
        self.in_use_count as u32
    }

    pub(crate) fn set_in_use(&mut self, s: usize, used: bool) {
        if (self.in_use[s] == 1) != used {
            self.in_use[s] = u8::from(used);
            if used {
                self.in_use_count += 1;
            } else {
                self.in_use_count -= 1;
            }
        }
    }

    pub(crate) fn set_position(&mut self, s: usize, pos: u64) {
        self.positions[s] = pos;
    }

    fn zero_slot(&mut self, s: usize) {
        let (conv_elems, ssm_elems) = (self.shape().conv_slot_elems, self.shape().ssm_slot_elems);
        for l in &mut self.layers {
            l.conv.slice_mut().sub(s * conv_elems..(s + 1) * conv_elems).fill_zero();
            l.ssm.slice_mut().sub(s * ssm_elems..(s + 1) * ssm_elems).fill_zero();
        }
        self.reset_heads(s);
    }

    /// Zeroes every slot, resets every position and releases every slot.
    pub(crate) fn reset_everything(&mut self) {
        for l in &mut self.layers {
            l.conv.slice_mut().fill_zero();
            l.ssm.slice_mut().fill_zero();
        }
        for h in &mut self.heads {
            h.fill(0);
        }
        self.positions.fill(0);
        self.in_use.fill(0);
        self.in_use_count = 0;
        self.spec_drop_all();
    }

    /// The storage bytes of slot `s` in layer `l`: conv window, ssm state.
    pub(crate) fn slot_bytes(&self, l: u32, s: usize) -> [&[u8]; 2] {
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let layer = &self.layers[l as usize];
        [&layer.conv.bytes()[s * conv_row..(s + 1) * conv_row], &layer.ssm.bytes()[s * ssm_row..(s + 1) * ssm_row]]
    }

    /// Every slot's storage bytes of layer `l` (without alignment padding).
    pub(crate) fn layer_bytes(&self, l: u32) -> [&[u8]; 2] {
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let n = self.num_slots();
        let layer = &self.layers[l as usize];
        [&layer.conv.bytes()[..n * conv_row], &layer.ssm.bytes()[..n * ssm_row]]
    }

    pub(crate) fn slot_byte_sizes(&self) -> (usize, usize) {
        let cfg = self.config();
        (self.shape().conv_slot_elems * cfg.conv_dtype.size(), self.shape().ssm_slot_elems * cfg.ssm_dtype.size())
    }

    /// For each `i`, slot `dst[i]` receives slot `src[i]`'s conv and ssm
    /// state in every layer and its position, as if every read happened
    /// before any write: permutations (beam-search reorders) and
    /// overlapping sets are correct. A row with `dst[i] < 0` is padding
    /// and its source is ignored.
    /// A destination listed twice is `InvalidArg`; a negative source with a
    /// real destination, or any index past the slot count, `OutOfRange`.
    /// Whether a slot is acquired does not move with its state.
    pub fn copy_slots(&mut self, src: &[i32], dst: &[i32]) -> Result<()> {
        let Some(plan) = self.copy_plan(src, dst)? else {
            return Ok(());
        };
        let ops = &plan.ops;
        let (conv_row, ssm_row) = self.slot_byte_sizes();
        let bytes = plan.moves.len() * (conv_row + ssm_row) * self.layers.len();
        let parallel = bytes >= PAR_MIN_BYTES && self.layers.len() >= 2 && pool::threads() > 1;
        // No scratch: plain copies first, cycles by swaps (see `CopyOp`).
        let copy_layer = |layer: &mut crate::cache::Layer| {
            for (buf, per) in [(&mut layer.conv, conv_row), (&mut layer.ssm, ssm_row)] {
                let bytes = buf.bytes_mut();
                for &op in ops {
                    match op {
                        CopyOp::Copy { src, dst } => bytes.copy_within(src * per..(src + 1) * per, dst * per),
                        CopyOp::Swap { a, b } => {
                            let (lo, hi) = (a.min(b), a.max(b));
                            let (head, tail) = bytes.split_at_mut(hi * per);
                            head[lo * per..(lo + 1) * per].swap_with_slice(&mut tail[..per]);
                        }
                    }
                }
            }
        };
        if parallel {
            let workers = pool::threads().clamp(1, self.layers.len());
            let per_worker = self.layers.len().div_ceil(workers);
            let layers = &mut self.layers;
            pool::install(|| {
                layers.par_chunks_mut(per_worker).for_each(|layers| layers.iter_mut().for_each(copy_layer))
            });
        } else {
            self.layers.iter_mut().for_each(copy_layer);
        }
        // Ring windows move with their heads.
        for h in &mut self.heads {
            for &op in ops {
                match op {
                    CopyOp::Copy { src, dst } => h[dst] = h[src],
                    CopyOp::Swap { a, b } => h.swap(a, b),
                }
            }
        }
        self.copy_positions(&plan);
        Ok(())
    }
}

/// What `copy_slots` does, worked out (and validated, and allocated)
/// before anything is written: the `(src, dst)` moves with `src != dst`,
/// the sources that are also destinations (a device cache reads them into
/// scratch first), sorted and distinct, each move's source position, and
/// the host's order of row operations.
pub(crate) struct CopyPlan {
    pub moves: Vec<(usize, usize)>,
    pub staged: Vec<usize>,
    pub old_pos: Vec<u64>,
    /// The host's order of row operations: every move once, each row read
    /// and written once (a cycle of k slots: k - 1 swaps).
    pub ops: Vec<CopyOp>,
}

/// One row operation of a host `copy_slots`, applied to every layer's conv
/// and SSM rows in plan order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyOp {
    /// Row `dst` gets row `src` (no later operation reads `dst`'s old row).
    Copy { src: usize, dst: usize },
    /// Rows `a` and `b` trade places.
    Swap { a: usize, b: usize },
}

/// Orders `moves` (distinct destinations, `src != dst`) so that no row is
/// overwritten before every move reading it has run, without scratch:
/// a move whose destination no pending move still reads runs as a copy,
/// which may free its source's own move; what remains are cycles
/// `a1 -> a2 -> ... -> ak -> a1`, each done as the swaps `(a1, a2)`,
/// `(a1, a3)`, ..., `(a1, ak)`: after swap `j`, `aj` holds the old
/// `a(j-1)` and `a1` the old `aj`.
fn copy_order(num_slots: usize, moves: &[(usize, usize)]) -> Result<Vec<CopyOp>> {
    const NONE: usize = usize::MAX;
    let mut readers = try_vec(num_slots, 0u32, "reader counts")?;
    let mut source = try_vec(num_slots, NONE, "move sources")?;
    let mut done = try_vec(num_slots, false, "moved rows")?;
    let mut ready: Vec<usize> = try_with_capacity(moves.len(), "ready rows")?;
    let mut ops: Vec<CopyOp> = try_with_capacity(moves.len(), "copy order")?;
    for &(s, d) in moves {
        readers[s] += 1;
        source[d] = s;
    }
    ready.extend(moves.iter().map(|&(_, d)| d).filter(|&d| readers[d] == 0));
    while let Some(d) = ready.pop() {
        let s = source[d];
        ops.push(CopyOp::Copy { src: s, dst: d });
        done[d] = true;
        readers[s] -= 1;
        if readers[s] == 0 && source[s] != NONE && !done[s] {
            ready.push(s);
        }
    }
    // Every pending destination is now read by exactly one pending move
    // and is the destination of one: disjoint cycles. Walking sources back
    // from a1 visits ak, a(k-1), ..., a2.
    let mut back = ready; // empty, with room for every move
    for &(_, a1) in moves {
        if done[a1] {
            continue;
        }
        back.clear();
        done[a1] = true;
        let mut x = source[a1];
        while x != a1 {
            back.push(x);
            done[x] = true;
            x = source[x];
        }
        ops.extend(back.iter().rev().map(|&aj| CopyOp::Swap { a: a1, b: aj }));
    }
    Ok(ops)
}

impl Cache {
    /// Validates a `copy_slots` call and plans it; `None` when it moves
    /// nothing. Changes nothing.
    pub(crate) fn copy_plan(&self, src: &[i32], dst: &[i32]) -> Result<Option<CopyPlan>> {
        if src.len() != dst.len() {
            return Err(Error::ShapeMismatch(format!("src has {} rows, dst {}", src.len(), dst.len())));
        }
        // Destinations: in range, distinct (as a slot selection).
        crate::selection::Slots::List(dst).validate_named(self.num_slots(), "dst")?;
        // Everything this call allocates is allocated here, before the
        // first write: an allocation failure changes nothing.
        let mut moves: Vec<(usize, usize)> = try_with_capacity(src.len(), "copy list")?;
        for (i, (&s, &d)) in src.iter().zip(dst).enumerate() {
            if d < 0 {
                continue;
            }
            let s = usize::try_from(s).ok().filter(|&s| s < self.num_slots()).ok_or_else(|| {
                Error::OutOfRange(format!("src[{i}] = {s} is out of range (num_slots = {})", self.num_slots()))
            })?;
            if s != d as usize {
                moves.push((s, d as usize));
            }
        }
        if moves.is_empty() {
            return Ok(None);
        }
        // Sources that are also destinations must be read before anything
        // is written: stage those (once each) in scratch space.
        let mut is_dst = try_vec(self.num_slots(), false, "destination table")?;
        for &(_, d) in &moves {
            is_dst[d] = true;
        }
        let mut staged: Vec<usize> = try_with_capacity(moves.len(), "staging list")?;
        staged.extend(moves.iter().map(|&(s, _)| s).filter(|&s| is_dst[s]));
        staged.sort_unstable();
        staged.dedup();
        let mut old_pos: Vec<u64> = try_with_capacity(moves.len(), "positions")?;
        old_pos.extend(moves.iter().map(|&(s, _)| self.positions[s]));
        let ops = copy_order(self.num_slots(), &moves)?;
        Ok(Some(CopyPlan { moves, staged, old_pos, ops }))
    }

    /// Gives the destinations of an applied plan their sources' positions
    /// (and drops them from a speculative round).
    pub(crate) fn copy_positions(&mut self, plan: &CopyPlan) {
        for (&(_, d), &p) in plan.moves.iter().zip(&plan.old_pos) {
            self.positions[d] = p;
            self.spec_drop(d);
        }
    }
}

/// Non-finite (NaN or infinite) elements in a run of stored elements,
/// counted on the bit patterns: an all-ones exponent.
fn count_nonfinite(s: crate::dtype::Slice<'_>) -> u64 {
    use crate::dtype::Slice;
    match s {
        Slice::F32(v) => v.iter().filter(|x| x.to_bits() & 0x7F80_0000 == 0x7F80_0000).count() as u64,
        Slice::BF16(v) => v.iter().filter(|x| x.to_bits() & 0x7F80 == 0x7F80).count() as u64,
        Slice::F16(v) => v.iter().filter(|x| x.to_bits() & 0x7C00 == 0x7C00).count() as u64,
    }
}

impl Cache {
    /// The number of NaN or infinite elements in `slot`'s conv windows and
    /// SSM states over every layer: 0 for a healthy sequence. Non-finite
    /// inputs reach only the slot they are fed to, but the recurrence
    /// carries them forward in that slot until it is reset or reloaded.
    pub fn count_nonfinite(&self, slot: i32) -> Result<u64> {
        let s = self.check_slot(slot)?;
        let (conv_elems, ssm_elems) = (self.shape().conv_slot_elems, self.shape().ssm_slot_elems);
        Ok(self
            .layers
            .iter()
            .map(|l| {
                count_nonfinite(l.conv.slice().sub(s * conv_elems..(s + 1) * conv_elems))
                    + count_nonfinite(l.ssm.slice().sub(s * ssm_elems..(s + 1) * ssm_elems))
            })
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::{CopyOp, copy_order};
    use m2c_testkit::Rng;

    /// Applies `ops` to rows labelled by their slot and checks the result
    /// against every read happening before any write, and that no row is
    /// written more often than once per move.
    fn check(n: usize, moves: &[(usize, usize)]) {
        let ops = copy_order(n, moves).unwrap();
        assert!(ops.len() <= moves.len(), "{moves:?}: {ops:?}");
        let mut rows: Vec<usize> = (0..n).collect();
        for op in &ops {
            match *op {
                CopyOp::Copy { src, dst } => rows[dst] = rows[src],
                CopyOp::Swap { a, b } => rows.swap(a, b),
            }
        }
        let mut want: Vec<usize> = (0..n).collect();
        for &(s, d) in moves {
            want[d] = s;
        }
        assert_eq!(rows, want, "{moves:?}: {ops:?}");
    }

    #[test]
    fn copy_order_equals_reading_everything_first() {
        check(2, &[(0, 1), (1, 0)]);
        check(8, &[(0, 7), (1, 6), (2, 5), (3, 4), (4, 3), (5, 2), (6, 1), (7, 0)]);
        check(4, &[(0, 1), (1, 2), (2, 3), (3, 0)]);
        check(5, &[(0, 1), (0, 2), (1, 3), (3, 0), (2, 4)]);
        let mut rng = Rng::new(0x5eed);
        for _ in 0..2000 {
            let n = 1 + rng.below(12);
            let mut moves = Vec::new();
            for d in 0..n {
                let s = rng.below(n);
                if s != d && rng.coin(0.7) {
                    moves.push((s, d));
                }
            }
            // Any order of the moves.
            for i in (1..moves.len()).rev() {
                let j = rng.below(i + 1);
                moves.swap(i, j);
            }
            check(n, &moves);
        }
    }
}
