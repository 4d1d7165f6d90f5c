//! What a handle holds: a host cache, or a device cache behind the
//! object-safe [`DeviceApi`]. The methods the exported functions call
//! dispatch on it. A device cache sits behind a mutex as well, because
//! its reading calls stage rows through host memory (so they need
//! exclusive access); a host cache's readers run concurrently.

use crate::cache::Cache;
use crate::config::{Config, Shape};
use crate::device::DeviceApi;
use crate::dtype::{Slice, SliceMut};
use crate::error::Result;
use crate::slots::Slots;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub(crate) enum Store {
    Host(Cache),
    #[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
    Device(Mutex<Box<dyn DeviceApi>>),
}

/// Calls `$e` with `$c` bound to the cache, whichever kind it is (a
/// device cache locked for the call).
macro_rules! both {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            Store::Host($c) => $e,
            Store::Device(m) => {
                let mut g = Store::lock(m);
                let $c = &mut **g;
                $e
            }
        }
    };
}

impl Store {
    fn lock(m: &Mutex<Box<dyn DeviceApi>>) -> MutexGuard<'_, Box<dyn DeviceApi>> {
        // A panic inside a device call is caught by the FFI boundary and
        // poisons the outer lock for mutations; the mutex itself holds no
        // invariant of its own.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn config(&self) -> Config {
        both!(self, c => *c.config())
    }

    pub(crate) fn shape(&self) -> Shape {
        both!(self, c => *c.shape())
    }

    /// The host cache, if this is one.
    pub(crate) fn host(&self) -> Option<&Cache> {
        match self {
            Store::Host(c) => Some(c),
            Store::Device(_) => None,
        }
    }

    /// `OutOfRange` unless `slot` names a slot.
    pub(crate) fn check_slot(&self, slot: i32) -> Result<()> {
        match self {
            Store::Host(c) => c.check_slot(slot).map(|_| ()),
            // Position lookups check the slot the same way.
            Store::Device(m) => Store::lock(m).position(slot).map(|_| ()),
        }
    }

    pub(crate) fn update_conv(&mut self, layer: u32, slots: Slots<'_>, x: Slice<'_>) -> Result<()> {
        both!(self, c => c.update_conv(layer, slots, x))
    }

    pub(crate) fn set_conv(&mut self, layer: u32, slots: Slots<'_>, w: Slice<'_>) -> Result<()> {
        both!(self, c => c.set_conv(layer, slots, w))
    }

    pub(crate) fn update_ssm(&mut self, layer: u32, slots: Slots<'_>, s: Slice<'_>) -> Result<()> {
        both!(self, c => c.update_ssm(layer, slots, s))
    }

    pub(crate) fn read_conv(&self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        both!(self, c => c.read_conv(layer, slots, out))
    }

    pub(crate) fn read_ssm(&self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        both!(self, c => c.read_ssm(layer, slots, out))
    }

    pub(crate) fn reset(&mut self, slots: Slots<'_>) -> Result<()> {
        both!(self, c => c.reset(slots))
    }

    pub(crate) fn advance(&mut self, slots: Slots<'_>, n: u32) -> Result<()> {
        both!(self, c => c.advance(slots, n))
    }

    pub(crate) fn position(&self, slot: i32) -> Result<u64> {
        both!(self, c => c.position(slot))
    }

    pub(crate) fn slot_acquire(&mut self) -> Result<i32> {
        both!(self, c => c.slot_acquire())
    }

    pub(crate) fn slot_release(&mut self, slot: i32) -> Result<()> {
        both!(self, c => c.slot_release(slot))
    }

    pub(crate) fn slots_in_use(&self) -> u32 {
        both!(self, c => c.slots_in_use())
    }

    pub(crate) fn copy_slots(&mut self, src: &[i32], dst: &[i32]) -> Result<()> {
        both!(self, c => c.copy_slots(src, dst))
    }

    pub(crate) fn nonfinite(&self, slot: i32) -> Result<u64> {
        both!(self, c => c.nonfinite(slot))
    }

    pub(crate) fn slot_snapshot_size(&self) -> usize {
        both!(self, c => c.slot_snapshot_size())
    }

    pub(crate) fn slot_save(&self, slot: i32, buf: &mut [u8]) -> Result<usize> {
        both!(self, c => c.slot_save(slot, buf))
    }

    pub(crate) fn slot_load(&mut self, slot: i32, buf: &[u8]) -> Result<()> {
        both!(self, c => c.slot_load(slot, buf))
    }

    pub(crate) fn save_file(&self, path: &Path) -> Result<()> {
        both!(self, c => c.save_file(path))
    }

    pub(crate) fn load_file(&mut self, path: &Path) -> Result<()> {
        both!(self, c => c.load_file(path))
    }

    /// A device cache queues its work on `stream` from now on; a host
    /// cache accepts only "no stream" (0).
    pub(crate) fn set_stream(&mut self, stream: u64) -> Result<()> {
        match self {
            Store::Host(_) if stream == 0 => Ok(()),
            Store::Host(_) => Err(crate::Error::Unsupported(
                "this cache lives in host memory: it runs its kernels on the calling thread and takes no stream".into(),
            )),
            Store::Device(m) => Store::lock(m).set_stream(stream),
        }
    }
}
