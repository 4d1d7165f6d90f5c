//! Checkpoints captured inside prefills: the state of a slot after any
//! token of its prompt, taken in the same pass as the prefill.
//!
//! [`AnyCache::capture_begin`] declares points (slot, tokens, key): "the
//! state after `tokens` more prompt tokens of this slot". Every conv and
//! SSM prefill call that follows counts the tokens it brings per slot and
//! layer; a call in which a point falls runs that slot's sequence in
//! segments cut at the point (a prefill equals its steps bit for bit, so
//! segments change nothing) and copies the layer's row of the slot after
//! the segment that ends there. [`AnyCache::capture_end`] puts every point
//! that every layer reached into a [`Store`], with position `position at
//! begin + tokens`.

use crate::any_cache::AnyCache;
use crate::buffer::try_vec;
use crate::error::{Error, Result};
use crate::selection::Slots;
use crate::store::{Key, Miss, Store};

/// Runs a prefill call's kernel on the whole call (`None`) or on token
/// rows `a..b` of it (`Some((a, b))`), with the slots and offsets given.
pub(crate) type RunSegment<'r> =
    &'r mut dyn FnMut(&mut AnyCache, Slots<'_>, &[u64], Option<(usize, usize)>) -> Result<()>;

/// One declared point.
#[derive(Debug)]
struct Point {
    slot: usize,
    tokens: u64,
    key: Key,
    position: u64,
    /// The checkpoint's bytes (the layout of `slot_export`).
    data: Vec<u8>,
    /// Per layer: captured through the conv, through the SSM.
    done: Vec<[bool; 2]>,
}

/// The points of the current capture, and the prompt tokens each slot has
/// brought per layer and part since it began.
#[derive(Debug, Default)]
pub struct Plan {
    points: Vec<Point>,
    /// (slot, per layer: conv tokens, SSM tokens).
    seen: Vec<(usize, Vec<[u64; 2]>)>,
    /// The store the points go to (its address, to check `capture_end`).
    store: usize,
}

/// Which half of a layer a prefill call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Conv = 0,
    Ssm = 1,
}

impl Plan {
    fn seen_mut(&mut self, slot: usize) -> Option<&mut Vec<[u64; 2]>> {
        self.seen.iter_mut().find(|(s, _)| *s == slot).map(|(_, v)| v)
    }

    /// Per row of a call: the cut offsets (within the row's tokens, each
    /// ending a segment after which points are captured) and the points
    /// each cut captures. Empty when no point falls in the call.
    fn cuts(&self, layer: usize, part: Part, rows: &[Option<usize>], cu: &[u64]) -> Vec<Vec<(u64, Vec<usize>)>> {
        let mut out = Vec::with_capacity(rows.len());
        let mut any = false;
        for (r, slot) in rows.iter().enumerate() {
            let mut cuts: Vec<(u64, Vec<usize>)> = Vec::new();
            if let Some(s) = *slot {
                let before = self.seen.iter().find(|(x, _)| *x == s).map_or(0, |(_, v)| v[layer][part as usize]);
                let len = cu[r + 1] - cu[r];
                for (i, p) in self.points.iter().enumerate() {
                    if p.slot == s && p.tokens > before && p.tokens <= before + len {
                        let at = p.tokens - before;
                        match cuts.iter_mut().find(|(c, _)| *c == at) {
                            Some((_, v)) => v.push(i),
                            None => cuts.push((at, vec![i])),
                        }
                    }
                }
                cuts.sort_by_key(|(c, _)| *c);
            }
            any |= !cuts.is_empty();
            out.push(cuts);
        }
        if any { out } else { Vec::new() }
    }
}

impl AnyCache {
    /// Declares the checkpoints to capture during the prefill calls that
    /// follow (replacing any earlier declaration): `(slot, tokens, key)`,
    /// the state of `slot` after `tokens >= 1` more prompt tokens, kept
    /// under `key` in `store`. Each point's bytes (one slot's state) are
    /// taken now: buffers `store` kept from evicted checkpoints (evicting
    /// for room when it is full, as the inserts would), else fresh ones.
    pub fn capture_begin(&mut self, store: &Store, points: &[(i32, u64, Key)]) -> Result<()> {
        let cfg = self.config();
        let layers = cfg.num_layers as usize;
        let bytes = Store::entry_bytes(&cfg)? as usize;
        // Every point is validated before any buffer is taken.
        let mut positions = Vec::with_capacity(points.len());
        for (i, &(slot, tokens, _)) in points.iter().enumerate() {
            self.check_slot(slot)?;
            if tokens == 0 {
                return Err(Error::InvalidArg(format!("points[{i}].tokens is 0: a point follows at least one token")));
            }
            if points[..i].iter().any(|&(s, t, _)| s == slot && t == tokens) {
                return Err(Error::InvalidArg(format!(
                    "points[{i}]: slot {slot} after {tokens} tokens is listed twice"
                )));
            }
            positions.push(self.position(slot)?.checked_add(tokens).ok_or_else(|| {
                Error::OutOfRange(format!("points[{i}]: slot {slot}'s position plus {tokens} tokens overflows"))
            })?);
        }
        let mut plan = Plan { store: store as *const Store as usize, ..Plan::default() };
        for (&(slot, tokens, key), position) in points.iter().zip(positions) {
            let s = slot as usize;
            // A full-precision store lends the buffers it kept; a reduced
            // one keeps smaller ones, so the capture allocates its own.
            let lent = if store.tier() == crate::tier::Tier::Full { store.take_buffer(bytes) } else { None };
            let data = match lent {
                Some(b) => b,
                None => try_vec(bytes, 0u8, "captured checkpoint")?,
            };
            plan.points.push(Point { slot: s, tokens, key, position, data, done: vec![[false; 2]; layers] });
            if plan.seen_mut(s).is_none() {
                plan.seen.push((s, vec![[0; 2]; layers]));
            }
        }
        self.set_plan(if points.is_empty() { None } else { Some(Box::new(plan)) });
        Ok(())
    }

    /// Puts every declared point into `store` (the one given to
    /// `capture_begin`) and ends the capture: one
    /// answer per point, in order (`None`: stored; `Some(TooLarge)`: the
    /// store could not hold it). `InvalidArg` naming the first point some
    /// layer's conv or SSM prefill has not reached yet, changing nothing;
    /// with no capture declared, an empty answer.
    pub fn capture_end(&mut self, store: &Store) -> Result<Vec<Option<Miss>>> {
        let Some(plan) = self.take_plan() else { return Ok(Vec::new()) };
        if plan.store != store as *const Store as usize {
            self.set_plan(Some(plan));
            return Err(Error::InvalidArg("the store is not the one given to m2c_capture_begin".into()));
        }
        for (i, p) in plan.points.iter().enumerate() {
            if let Some(l) = p.done.iter().position(|d| !(d[0] && d[1])) {
                let part = if p.done[l][0] { "SSM" } else { "conv" };
                let msg = format!(
                    "points[{i}] (slot {} after {} tokens) was not reached by layer {l}'s {part} prefill",
                    p.slot, p.tokens
                );
                self.set_plan(Some(plan));
                return Err(Error::InvalidArg(msg));
            }
        }
        let cfg = self.config();
        let mut out = Vec::with_capacity(plan.points.len());
        for p in plan.points {
            out.push(store.put_full(&cfg, p.key, p.position, p.data)?);
        }
        Ok(out)
    }

    /// Points declared and not yet ended.
    pub fn capture_pending(&self) -> usize {
        self.with_plan(|p| p.map_or(0, |p| p.points.len()))
    }

    /// Runs a prefill call, already validated whole, through `run`: on
    /// the whole call when no declared point falls in it, else row by row
    /// in segments cut at the points (`run(cache, slots, cu, Some(rows))`
    /// for token rows `rows` of the call), copying the layer's row of each
    /// point's slot where its segment ends. Counts the tokens each slot
    /// brought either way.
    pub(crate) fn prefill_capturing(
        &mut self,
        layer: u32,
        part: Part,
        slots: Slots<'_>,
        cu: &[u64],
        run: RunSegment<'_>,
    ) -> Result<()> {
        let Some(mut plan) = self.take_plan() else {
            return run(self, slots, cu, None);
        };
        let result = self.prefill_planned(&mut plan, layer, part, slots, cu, run);
        self.set_plan(Some(plan));
        result
    }

    fn prefill_planned(
        &mut self,
        plan: &mut Plan,
        layer: u32,
        part: Part,
        slots: Slots<'_>,
        cu: &[u64],
        run: RunSegment<'_>,
    ) -> Result<()> {
        let sel = slots.validate(self.num_slots())?;
        let rows: Vec<Option<usize>> = (0..sel.rows()).map(|r| sel.slot(r)).collect();
        let l = layer as usize;
        let cuts = plan.cuts(l, part, &rows, cu);
        if cuts.is_empty() {
            run(self, slots, cu, None)?;
        } else {
            for (r, slot) in rows.iter().enumerate() {
                let s = slot.map_or(-1, |s| s as i32);
                let (start, len) = (cu[r] as usize, (cu[r + 1] - cu[r]) as usize);
                let mut at = 0usize;
                let ends = cuts[r].iter().map(|(c, p)| (*c as usize, &p[..])).chain([(len, &[][..])]);
                for (cut, points) in ends {
                    if cut > at {
                        run(self, Slots::List(&[s]), &[0, (cut - at) as u64], Some((start + at, start + cut)))?;
                    }
                    at = cut;
                    for &i in points {
                        let p = &mut plan.points[i];
                        self.export_layer_row(layer, part == Part::Conv, p.slot, &mut p.data)?;
                        p.done[l][part as usize] = true;
                    }
                }
            }
        }
        for (r, slot) in rows.iter().enumerate() {
            if let Some(v) = slot.and_then(|s| plan.seen_mut(s)) {
                v[l][part as usize] += cu[r + 1] - cu[r];
            }
        }
        Ok(())
    }
}
