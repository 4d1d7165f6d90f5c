//! Where a cache's state lives, for transfer engines (NIXL, UCX, Mooncake)
//! that move bytes between registered memory: the cache's arenas (one per
//! layer and part: register them once), and for a set of slots the runs of
//! bytes covering their state, each with the place it takes in the slot's
//! snapshot (docs/FORMATS.md), so a receiver can rebuild a snapshot or
//! write the runs straight into its own slots.

use crate::any_cache::AnyCache;
use crate::error::{Error, Result};
use crate::selection::Slots;
use crate::snapshot::SLOT_HEADER_BYTES;

/// One allocation of a cache's state: arena `2 * l` holds layer `l`'s conv
/// windows (every slot), arena `2 * l + 1` its SSM states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arena {
    /// Host address, or device address for a device cache.
    pub base: u64,
    pub len: u64,
}

/// A run of one slot's state: `len` bytes at `offset` in arena `arena`,
/// which are bytes `image_offset..image_offset + len` of that slot's
/// snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub slot: i32,
    pub arena: u32,
    pub offset: u64,
    pub len: u64,
    pub image_offset: u64,
}

impl AnyCache {
    /// The arenas holding the state, two per layer (conv, then SSM).
    pub fn arenas(&self) -> Result<Vec<Arena>> {
        let layers = self.config().num_layers;
        let mut out = Vec::with_capacity(2 * layers as usize);
        for l in 0..layers {
            let ((cb, cl), (sb, sl)) = self.layer_storage(l)?;
            out.push(Arena { base: cb, len: cl as u64 });
            out.push(Arena { base: sb, len: sl as u64 });
        }
        Ok(out)
    }

    /// For each listed slot (in range, distinct; no padding), in order, and
    /// each layer: its conv window's run, then its SSM state's run. The
    /// runs of one slot cover its snapshot's payload exactly once.
    pub fn slot_regions(&self, slots: &[i32]) -> Result<Vec<Region>> {
        let cfg = self.config();
        let shape = cfg.shape()?;
        if self.conv_layout() == crate::ring::ConvLayout::Ring {
            return Err(Error::Unsupported(
                "the conv windows are in the ring layout, whose bytes are not in snapshot order: switch the cache \
                 to the oldest-first layout for a raw transfer, or move snapshots"
                    .into(),
            ));
        }
        for (i, &s) in slots.iter().enumerate() {
            if s < 0 {
                return Err(Error::OutOfRange(format!("slots[{i}] = {s}: a region needs a slot, not padding")));
            }
        }
        Slots::List(slots).validate(cfg.num_slots as usize)?;
        let (conv_row, ssm_row) =
            (shape.conv_slot_elems * cfg.conv_dtype.size(), shape.ssm_slot_elems * cfg.ssm_dtype.size());
        let mut out = Vec::with_capacity(slots.len() * 2 * cfg.num_layers as usize);
        for &s in slots {
            let su = s as u64;
            for l in 0..cfg.num_layers {
                let image = SLOT_HEADER_BYTES as u64 + u64::from(l) * (conv_row + ssm_row) as u64;
                out.push(Region {
                    slot: s,
                    arena: 2 * l,
                    offset: su * conv_row as u64,
                    len: conv_row as u64,
                    image_offset: image,
                });
                out.push(Region {
                    slot: s,
                    arena: 2 * l + 1,
                    offset: su * ssm_row as u64,
                    len: ssm_row as u64,
                    image_offset: image + conv_row as u64,
                });
            }
        }
        Ok(out)
    }
}
