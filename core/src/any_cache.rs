//! [`AnyCache`]: a cache in host memory or in device memory, and the one
//! place where a call chooses between the two. Every function of the C API
//! makes exactly one call here (kernel calls included), so adding a call
//! means adding its logic to [`Cache`] (and [`DeviceCache`] when the device
//! does it differently) plus one method here.
//!
//! A device cache sits behind a mutex as well as behind the caller's lock,
//! because its reading calls stage rows through host memory (so they need
//! exclusive access); a host cache's readers run concurrently.

use crate::cache::Cache;
use crate::capture::Part;
use crate::config::{Config, Device, Shape};
use crate::device::{DevArray, DeviceCache, DeviceConvArgs, DeviceSsmIo, DeviceSsmParams};
use crate::dtype::{Slice, SliceMut};
use crate::error::{Error, Result};
use crate::kernels::{ConvParams, SsmInputs, SsmParams};
use crate::persist::FileCheck;
use crate::selection::Slots;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Token rows `a..b` of a device array of `width`-element rows (an absent
/// array stays absent).
fn rows_of(v: DevArray, a: usize, b: usize, width: usize, es: usize) -> DevArray {
    if v.addr == 0 {
        return v;
    }
    DevArray::new(v.addr + (a * width * es) as u64, (b - a) * width)
}

/// A cache in host or device memory.
#[derive(Debug)]
pub enum AnyCache {
    /// State in host memory; the kernels run on the CPU.
    Host(Cache),
    /// State in device memory; the kernels run on the device.
    Device(Mutex<DeviceCache>),
}

/// Where a cache's state lives, and so which arrays its kernel calls take:
/// host slices ([`ConvIo::Host`], [`SsmIo::Host`]) or device addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    Host,
    Device,
}

/// The activations and parameters of a conv step or prefill.
#[derive(Debug)]
pub enum ConvIo<'a> {
    /// Host slices: inputs `x` and outputs `out` `[rows, conv_dim]`.
    Host { x: Slice<'a>, out: SliceMut<'a>, params: ConvParams<'a> },
    /// Device arrays.
    Device(DeviceConvArgs),
}

/// The activations and parameters of an SSM step or prefill.
#[derive(Debug)]
pub enum SsmIo<'a> {
    /// Host slices.
    Host { inputs: SsmInputs<'a>, y: SliceMut<'a>, params: SsmParams<'a> },
    /// Device arrays.
    Device { io: DeviceSsmIo, params: DeviceSsmParams },
}

/// Calls `$e` with `$c` bound to the cache, whichever kind it is (a
/// device cache locked for the call).
macro_rules! on_either {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            AnyCache::Host($c) => crate::pool::with_limit($c.num_threads(), || $e),
            AnyCache::Device(m) => {
                let mut g = AnyCache::lock(m);
                let $c = &mut *g;
                crate::pool::with_limit($c.num_threads(), || $e)
            }
        }
    };
}

fn wrong_memory(cache: Memory) -> Error {
    let (c, a) = match cache {
        Memory::Host => ("host", "device"),
        Memory::Device => ("device", "host"),
    };
    Error::InvalidArg(format!("this cache lives in {c} memory, but the call passed {a} arrays"))
}

impl AnyCache {
    /// A zeroed cache where `cfg.device` says: host memory, or (in builds
    /// with the `cuda` feature) the GPU `cfg.device_index`. Without the
    /// feature a CUDA config is `Unsupported`.
    pub fn new(cfg: Config) -> Result<AnyCache> {
        #[cfg(feature = "cuda")]
        if cfg.device == Device::Cuda {
            cfg.shape()?;
            let gpu = crate::cuda::Gpu::new(cfg.device_index as usize)?;
            return Ok(AnyCache::Device(Mutex::new(DeviceCache::new(cfg, Box::new(gpu))?)));
        }
        Ok(AnyCache::Host(Cache::new(cfg)?))
    }

    /// Validates `cfg` as [`AnyCache::new`] would, without allocating, and
    /// returns its shape: the checks every cache applies, plus those of the
    /// device it names.
    pub fn check_config(cfg: &Config) -> Result<Shape> {
        let shape = cfg.shape()?;
        match cfg.device {
            Device::Cpu => Cache::check_device(cfg)?,
            #[cfg(feature = "cuda")]
            Device::Cuda => {}
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Cache::check_device(cfg)?,
        }
        Ok(shape)
    }

    fn lock(m: &Mutex<DeviceCache>) -> MutexGuard<'_, DeviceCache> {
        // A panic inside a device call is caught by the C API's boundary
        // and poisons the caller's lock for mutations; the mutex itself
        // holds no invariant of its own.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the state lives.
    pub fn memory(&self) -> Memory {
        match self {
            AnyCache::Host(_) => Memory::Host,
            AnyCache::Device(_) => Memory::Device,
        }
    }

    pub fn config(&self) -> Config {
        on_either!(self, c => *c.config())
    }

    pub fn shape(&self) -> Shape {
        on_either!(self, c => *c.shape())
    }

    /// The host cache, if this is one.
    pub fn host(&self) -> Option<&Cache> {
        match self {
            AnyCache::Host(c) => Some(c),
            AnyCache::Device(_) => None,
        }
    }

    /// The host cache, if this is one, writable (for tests' fault hooks).
    pub fn host_mut(&mut self) -> Option<&mut Cache> {
        match self {
            AnyCache::Host(c) => Some(c),
            AnyCache::Device(_) => None,
        }
    }

    /// Runs `f` on the device cache, if this is one.
    pub fn with_device<T>(&self, f: impl FnOnce(&mut DeviceCache) -> T) -> Option<T> {
        match self {
            AnyCache::Host(_) => None,
            AnyCache::Device(m) => Some(f(&mut AnyCache::lock(m))),
        }
    }

    /// Whether `bytes` bytes at host address `addr` overlap the cache's
    /// own storage (never, for a device cache: its state is not in host
    /// memory).
    pub fn overlaps_storage(&self, addr: usize, bytes: usize) -> bool {
        self.host().is_some_and(|c| c.overlaps_storage(addr, bytes))
    }

    /// `OutOfRange` unless `slot` names a slot.
    pub fn check_slot(&self, slot: i32) -> Result<()> {
        on_either!(self, c => c.position(slot).map(|_| ()))
    }

    /// The snapshot format `slot_save` writes ([`Cache::snapshot_format`];
    /// device caches: always 1).
    pub fn snapshot_format(&self) -> u32 {
        match self {
            AnyCache::Host(c) => c.snapshot_format(),
            AnyCache::Device(_) => 1,
        }
    }

    /// Sets the snapshot format `slot_save` writes: 1 or 2
    /// ([`Cache::set_snapshot_format`]). A device cache writes format 1
    /// only: 2 is `Unsupported` there.
    pub fn set_snapshot_format(&mut self, format: u32) -> Result<()> {
        match self {
            AnyCache::Host(c) => c.set_snapshot_format(format),
            AnyCache::Device(_) if format == 1 => Ok(()),
            AnyCache::Device(_) if format == 2 => {
                Err(Error::Unsupported("a device cache writes snapshot format 1 only".into()))
            }
            AnyCache::Device(_) => Err(Error::InvalidArg(format!("format = {format}: snapshot formats are 1 and 2"))),
        }
    }

    /// How the conv windows are stored (device caches: always oldest first).
    pub fn conv_layout(&self) -> crate::ring::ConvLayout {
        match self {
            AnyCache::Host(c) => c.conv_layout(),
            AnyCache::Device(_) => crate::ring::ConvLayout::OldestFirst,
        }
    }

    /// Switches the conv window layout ([`Cache::set_conv_layout`]). A
    /// device cache keeps oldest-first windows: asking it for the ring
    /// layout is `Unsupported`.
    pub fn set_conv_layout(&mut self, layout: crate::ring::ConvLayout) -> Result<()> {
        match self {
            AnyCache::Host(c) => crate::pool::with_limit(c.num_threads(), || c.set_conv_layout(layout)),
            AnyCache::Device(_) if layout == crate::ring::ConvLayout::OldestFirst => Ok(()),
            AnyCache::Device(_) => {
                Err(Error::Unsupported("a device cache keeps its conv windows oldest first: no ring layout".into()))
            }
        }
    }

    /// Per slot of `layer`, the physical column of its conv window's oldest
    /// input ([`Cache::conv_heads`]; all zero for a device cache).
    pub fn conv_heads(&self, layer: u32, out: &mut [u32]) -> Result<()> {
        match self {
            AnyCache::Host(c) => c.conv_heads(layer, out),
            AnyCache::Device(m) => {
                let d = AnyCache::lock(m);
                d.addresses(layer)?;
                let n = d.config().num_slots as usize;
                if out.len() != n {
                    return Err(Error::ShapeMismatch(format!(
                        "out: len = {} elements, but the cache has {n} slots",
                        out.len()
                    )));
                }
                out.fill(0);
                Ok(())
            }
        }
    }

    /// The address and length in bytes of `layer`'s conv windows and SSM
    /// states: host addresses, or device addresses for a device cache.
    pub fn layer_storage(&self, layer: u32) -> Result<((u64, usize), (u64, usize))> {
        match self {
            AnyCache::Host(c) => {
                let l = c.layer(layer)?;
                Ok(((l.conv.as_ptr() as u64, l.conv.len_bytes()), (l.ssm.as_ptr() as u64, l.ssm.len_bytes())))
            }
            AnyCache::Device(m) => {
                let d = AnyCache::lock(m);
                let (conv, ssm) = d.addresses(layer)?;
                Ok(((conv, d.shape().conv_layer_bytes), (ssm, d.shape().ssm_layer_bytes)))
            }
        }
    }

    pub fn update_conv(&mut self, layer: u32, slots: Slots<'_>, x: Slice<'_>) -> Result<()> {
        on_either!(self, c => c.update_conv(layer, slots, x))
    }

    pub fn set_conv(&mut self, layer: u32, slots: Slots<'_>, w: Slice<'_>) -> Result<()> {
        on_either!(self, c => c.set_conv(layer, slots, w))
    }

    pub fn set_ssm(&mut self, layer: u32, slots: Slots<'_>, s: Slice<'_>) -> Result<()> {
        on_either!(self, c => c.set_ssm(layer, slots, s))
    }

    pub fn read_conv(&self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        on_either!(self, c => c.read_conv(layer, slots, out))
    }

    pub fn read_ssm(&self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        on_either!(self, c => c.read_ssm(layer, slots, out))
    }

    pub fn reset(&mut self, slots: Slots<'_>) -> Result<()> {
        on_either!(self, c => c.reset(slots))
    }

    pub fn advance(&mut self, slots: Slots<'_>, n: u32) -> Result<()> {
        on_either!(self, c => c.advance(slots, n))
    }

    pub fn position(&self, slot: i32) -> Result<u64> {
        on_either!(self, c => c.position(slot))
    }

    pub fn slot_acquire(&mut self) -> Result<i32> {
        on_either!(self, c => c.slot_acquire())
    }

    pub fn slot_release(&mut self, slot: i32) -> Result<()> {
        on_either!(self, c => c.slot_release(slot))
    }

    pub fn slots_in_use(&self) -> u32 {
        on_either!(self, c => c.slots_in_use())
    }

    pub fn copy_slots(&mut self, src: &[i32], dst: &[i32]) -> Result<()> {
        on_either!(self, c => c.copy_slots(src, dst))
    }

    pub fn count_nonfinite(&self, slot: i32) -> Result<u64> {
        on_either!(self, c => c.count_nonfinite(slot))
    }

    pub fn slot_snapshot_size(&self) -> usize {
        on_either!(self, c => c.slot_snapshot_size())
    }

    pub fn slot_save(&self, slot: i32, buf: &mut [u8]) -> Result<usize> {
        on_either!(self, c => c.slot_save(slot, buf))
    }

    /// The checksum `slot_save` would write for `slot` ([`Cache::slot_digest`]).
    pub fn slot_digest(&self, slot: i32) -> Result<u64> {
        on_either!(self, c => c.slot_digest(slot))
    }

    /// The storage bytes of `slot` into `out` (every layer's conv window
    /// then SSM state); returns its position ([`Cache::slot_export`]).
    pub fn slot_export(&self, slot: i32, out: &mut [u8]) -> Result<u64> {
        on_either!(self, c => c.slot_export(slot, out))
    }

    /// The state of `slot` from [`AnyCache::slot_export`]'s bytes, and its
    /// position ([`Cache::slot_import`]).
    pub fn slot_import(&mut self, slot: i32, data: &[u8], position: u64) -> Result<()> {
        on_either!(self, c => c.slot_import(slot, data, position))
    }

    pub fn slot_load(&mut self, slot: i32, buf: &[u8]) -> Result<()> {
        on_either!(self, c => c.slot_load(slot, buf))
    }

    pub fn save_file(&self, path: &Path) -> Result<()> {
        on_either!(self, c => c.save_file(path))
    }

    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        on_either!(self, c => c.load_file(path))
    }

    /// Bytes of this cache's file (what [`FileCheck::read`] expects).
    pub fn file_size(&self) -> u64 {
        on_either!(self, c => c.file_size())
    }

    /// The second pass of a load whose first pass ([`FileCheck::read`])
    /// ran without holding the cache.
    pub fn install_file(&mut self, check: FileCheck) -> Result<()> {
        on_either!(self, c => c.install_file(check))
    }

    /// A one-line human-readable summary: shapes, dtypes, layout, bytes,
    /// slots in use and where the state lives.
    pub fn describe(&self) -> String {
        let (cfg, sh, used) = (self.config(), self.shape(), self.slots_in_use());
        let place = match self.memory() {
            Memory::Host => "host memory".to_string(),
            Memory::Device => format!("cuda:{} memory", cfg.device_index),
        };
        let width = if cfg.conv_width == cfg.conv_kernel_size { "K" } else { "K-1" };
        let ring = if self.conv_layout() == crate::ring::ConvLayout::Ring { ", ring layout" } else { "" };
        format!(
            "m2c cache: {} layers x {} slots ({used} in use); conv {} [{} x {}] (width {width}, K = {}{ring}); \
             ssm {} [{} x {} x {}] ({} group{}); {:.1} MB in {place}",
            cfg.num_layers,
            cfg.num_slots,
            cfg.conv_dtype.name(),
            sh.conv_dim,
            sh.conv_width,
            cfg.conv_kernel_size,
            cfg.ssm_dtype.name(),
            cfg.num_heads,
            cfg.head_dim,
            cfg.state_size,
            cfg.n_groups,
            if cfg.n_groups == 1 { "" } else { "s" },
            sh.total_bytes as f64 / 1e6,
        )
    }

    /// Threads a call on this cache may use (see [`Cache::num_threads`]).
    pub fn num_threads(&self) -> usize {
        on_either!(self, c => c.num_threads())
    }

    /// Sets the threads the calls that follow may use: 0 m2c's pool, 1 the
    /// calling thread only, `n` at most `n` threads.
    pub fn set_num_threads(&mut self, n: usize) {
        on_either!(self, c => c.set_num_threads(n))
    }

    /// One conv step per row of `slots` on `layer`.
    pub fn conv_step(&mut self, layer: u32, slots: Slots<'_>, io: ConvIo<'_>) -> Result<()> {
        let limit = self.num_threads();
        crate::pool::with_limit(limit, move || self.conv_step_inner(layer, slots, io))
    }

    fn conv_step_inner(&mut self, layer: u32, slots: Slots<'_>, io: ConvIo<'_>) -> Result<()> {
        match (self, io) {
            (AnyCache::Host(c), ConvIo::Host { x, out, params }) => c.conv_step(layer, slots, x, out, &params),
            (AnyCache::Device(m), ConvIo::Device(a)) => AnyCache::lock(m).conv_step(layer, slots, &a),
            (c, _) => Err(wrong_memory(c.memory())),
        }
    }

    /// The conv over whole sequences: sequence `i` (slot row `i`) owns the
    /// token rows `cu_seqlens[i] .. cu_seqlens[i+1]`.
    /// Checkpoints declared by [`AnyCache::capture_begin`] are captured
    /// where they fall.
    pub fn conv_prefill(&mut self, layer: u32, slots: Slots<'_>, cu_seqlens: &[u64], io: ConvIo<'_>) -> Result<()> {
        let limit = self.num_threads();
        crate::pool::with_limit(limit, move || {
            if self.capture_pending() == 0 {
                return self.conv_prefill_inner(layer, slots, cu_seqlens, io);
            }
            let dim = self.shape().conv_dim;
            match io {
                ConvIo::Host { x, mut out, params } => {
                    let AnyCache::Host(c) = &*self else {
                        return Err(wrong_memory(self.memory()));
                    };
                    c.check_conv_prefill(layer, slots, cu_seqlens, x, &out, &params)?;
                    let mut run = |c: &mut AnyCache, sl: Slots<'_>, cu: &[u64], rows: Option<(usize, usize)>| {
                        let (a, b) = rows.unwrap_or((0, x.len() / dim));
                        let io = ConvIo::Host { x: x.sub(a * dim..b * dim), out: out.sub(a * dim..b * dim), params };
                        c.conv_prefill_inner(layer, sl, cu, io)
                    };
                    self.prefill_capturing(layer, Part::Conv, slots, cu_seqlens, &mut run)
                }
                ConvIo::Device(args) => {
                    let checked = self.with_device(|d| d.check_conv_prefill(layer, slots, cu_seqlens, &args));
                    checked.unwrap_or_else(|| Err(wrong_memory(Memory::Host)))?;
                    let es = args.dtype.size();
                    let mut run = |c: &mut AnyCache, sl: Slots<'_>, cu: &[u64], rows: Option<(usize, usize)>| {
                        let a = match rows {
                            None => args,
                            Some((a, b)) => DeviceConvArgs {
                                x: rows_of(args.x, a, b, dim, es),
                                out: rows_of(args.out, a, b, dim, es),
                                ..args
                            },
                        };
                        c.conv_prefill_inner(layer, sl, cu, ConvIo::Device(a))
                    };
                    self.prefill_capturing(layer, Part::Conv, slots, cu_seqlens, &mut run)
                }
            }
        })
    }

    fn conv_prefill_inner(&mut self, layer: u32, slots: Slots<'_>, cu_seqlens: &[u64], io: ConvIo<'_>) -> Result<()> {
        match (self, io) {
            (AnyCache::Host(c), ConvIo::Host { x, out, params }) => {
                c.conv_prefill(layer, slots, cu_seqlens, x, out, &params)
            }
            (AnyCache::Device(m), ConvIo::Device(a)) => AnyCache::lock(m).conv_prefill(layer, slots, cu_seqlens, &a),
            (c, _) => Err(wrong_memory(c.memory())),
        }
    }

    /// One SSM step per row of `slots` on `layer`.
    pub fn ssm_step(&mut self, layer: u32, slots: Slots<'_>, io: SsmIo<'_>) -> Result<()> {
        let limit = self.num_threads();
        crate::pool::with_limit(limit, move || self.ssm_step_inner(layer, slots, io))
    }

    fn ssm_step_inner(&mut self, layer: u32, slots: Slots<'_>, io: SsmIo<'_>) -> Result<()> {
        match (self, io) {
            (AnyCache::Host(c), SsmIo::Host { inputs, y, params }) => c.ssm_step(layer, slots, &inputs, y, &params),
            (AnyCache::Device(m), SsmIo::Device { io, params }) => {
                AnyCache::lock(m).ssm_step(layer, slots, &io, &params)
            }
            (c, _) => Err(wrong_memory(c.memory())),
        }
    }

    /// The SSM over whole sequences, as [`AnyCache::conv_prefill`].
    /// Checkpoints declared by [`AnyCache::capture_begin`] are captured
    /// where they fall.
    pub fn ssm_prefill(&mut self, layer: u32, slots: Slots<'_>, cu_seqlens: &[u64], io: SsmIo<'_>) -> Result<()> {
        let limit = self.num_threads();
        crate::pool::with_limit(limit, move || {
            if self.capture_pending() == 0 {
                return self.ssm_prefill_inner(layer, slots, cu_seqlens, io);
            }
            let cfg = self.config();
            let (hp, h, gn) = (
                (cfg.num_heads * cfg.head_dim) as usize,
                cfg.num_heads as usize,
                (cfg.n_groups * cfg.state_size) as usize,
            );
            match io {
                SsmIo::Host { inputs, mut y, params } => {
                    let AnyCache::Host(c) = &*self else {
                        return Err(wrong_memory(self.memory()));
                    };
                    c.check_ssm_prefill(layer, slots, cu_seqlens, &inputs, &y, &params)?;
                    let mut run = |c: &mut AnyCache, sl: Slots<'_>, cu: &[u64], rows: Option<(usize, usize)>| {
                        let (a, b) = rows.unwrap_or((0, inputs.dt.len() / h));
                        let inputs = SsmInputs {
                            x: inputs.x.sub(a * hp..b * hp),
                            dt: inputs.dt.sub(a * h..b * h),
                            b: inputs.b.sub(a * gn..b * gn),
                            c: inputs.c.sub(a * gn..b * gn),
                            z: inputs.z.map(|z| z.sub(a * hp..b * hp)),
                        };
                        c.ssm_prefill_inner(layer, sl, cu, SsmIo::Host { inputs, y: y.sub(a * hp..b * hp), params })
                    };
                    self.prefill_capturing(layer, Part::Ssm, slots, cu_seqlens, &mut run)
                }
                SsmIo::Device { io, params } => {
                    let checked = self.with_device(|d| d.check_ssm_prefill(layer, slots, cu_seqlens, &io, &params));
                    checked.unwrap_or_else(|| Err(wrong_memory(Memory::Host)))?;
                    let es = io.dtype.size();
                    let mut run = |c: &mut AnyCache, sl: Slots<'_>, cu: &[u64], rows: Option<(usize, usize)>| {
                        let io = match rows {
                            None => io,
                            Some((a, b)) => DeviceSsmIo {
                                x: rows_of(io.x, a, b, hp, es),
                                dt: rows_of(io.dt, a, b, h, es),
                                b: rows_of(io.b, a, b, gn, es),
                                c: rows_of(io.c, a, b, gn, es),
                                z: rows_of(io.z, a, b, hp, es),
                                y: rows_of(io.y, a, b, hp, es),
                                ..io
                            },
                        };
                        c.ssm_prefill_inner(layer, sl, cu, SsmIo::Device { io, params })
                    };
                    self.prefill_capturing(layer, Part::Ssm, slots, cu_seqlens, &mut run)
                }
            }
        })
    }

    fn ssm_prefill_inner(&mut self, layer: u32, slots: Slots<'_>, cu_seqlens: &[u64], io: SsmIo<'_>) -> Result<()> {
        match (self, io) {
            (AnyCache::Host(c), SsmIo::Host { inputs, y, params }) => {
                c.ssm_prefill(layer, slots, cu_seqlens, &inputs, y, &params)
            }
            (AnyCache::Device(m), SsmIo::Device { io, params }) => {
                AnyCache::lock(m).ssm_prefill(layer, slots, cu_seqlens, &io, &params)
            }
            (c, _) => Err(wrong_memory(c.memory())),
        }
    }

    /// Reserves the speculative log for runs of up to `max_tokens` (see
    /// [`Cache::spec_reserve`]; a device cache keeps it in device memory).
    pub fn spec_reserve(&mut self, max_tokens: u32) -> Result<()> {
        on_either!(self, c => c.spec_reserve(max_tokens))
    }

    /// The longest run a round accepts (0: none reserved).
    pub fn spec_max_tokens(&self) -> u32 {
        match self {
            AnyCache::Host(c) => c.spec_max_tokens(),
            AnyCache::Device(m) => AnyCache::lock(m).spec_max_tokens(),
        }
    }

    /// Starts a speculative round ([`Cache::spec_begin`]).
    pub fn spec_begin(&mut self, slots: Slots<'_>, cu_seqlens: &[u64], parents: Option<&[i32]>) -> Result<()> {
        on_either!(self, c => c.spec_begin(slots, cu_seqlens, parents))
    }

    /// Verifies the round's runs through `layer`'s conv ([`Cache::spec_conv`]).
    pub fn conv_verify(&mut self, layer: u32, io: ConvIo<'_>) -> Result<()> {
        let limit = self.num_threads();
        match (self, io) {
            (AnyCache::Host(c), ConvIo::Host { x, out, params }) => {
                crate::pool::with_limit(limit, || c.spec_conv(layer, x, out, &params))
            }
            (AnyCache::Device(m), ConvIo::Device(a)) => AnyCache::lock(m).conv_verify(layer, &a),
            (c, _) => Err(wrong_memory(c.memory())),
        }
    }

    /// Verifies the round's runs through `layer`'s SSM ([`Cache::spec_ssm`]).
    pub fn ssm_verify(&mut self, layer: u32, io: SsmIo<'_>) -> Result<()> {
        let limit = self.num_threads();
        match (self, io) {
            (AnyCache::Host(c), SsmIo::Host { inputs, y, params }) => {
                crate::pool::with_limit(limit, || c.spec_ssm(layer, &inputs, y, &params))
            }
            (AnyCache::Device(m), SsmIo::Device { io, params }) => AnyCache::lock(m).ssm_verify(layer, &io, &params),
            (c, _) => Err(wrong_memory(c.memory())),
        }
    }

    /// Commits the accepted tokens of the listed slots ([`Cache::spec_commit`]).
    pub fn spec_commit(&mut self, slots: Slots<'_>, accepted: &[u32]) -> Result<()> {
        let limit = self.num_threads();
        match self {
            AnyCache::Host(c) => crate::pool::with_limit(limit, || c.spec_commit(slots, accepted)),
            AnyCache::Device(m) => AnyCache::lock(m).spec_commit(slots, accepted),
        }
    }

    /// Runs `f` on the capture plan (`None`: none declared).
    pub(crate) fn with_plan<T>(&self, f: impl FnOnce(Option<&crate::capture::Plan>) -> T) -> T {
        match self {
            AnyCache::Host(c) => f(c.capture.as_deref()),
            AnyCache::Device(m) => f(AnyCache::lock(m).host_side().capture.as_deref()),
        }
    }

    pub(crate) fn take_plan(&mut self) -> Option<Box<crate::capture::Plan>> {
        match self {
            AnyCache::Host(c) => c.capture.take(),
            AnyCache::Device(m) => AnyCache::lock(m).host_side().capture.take(),
        }
    }

    pub(crate) fn set_plan(&mut self, plan: Option<Box<crate::capture::Plan>>) {
        match self {
            AnyCache::Host(c) => c.capture = plan,
            AnyCache::Device(m) => AnyCache::lock(m).host_side().capture = plan,
        }
    }

    /// Copies `layer`'s conv window (or SSM state) of slot `s` into its
    /// place in a checkpoint's bytes.
    pub(crate) fn export_layer_row(&mut self, layer: u32, conv: bool, s: usize, data: &mut [u8]) -> Result<()> {
        match self {
            AnyCache::Host(c) => {
                c.export_layer_row(layer, conv, s, data);
                Ok(())
            }
            AnyCache::Device(m) => AnyCache::lock(m).export_layer_row(layer, conv, s, data),
        }
    }

    pub(crate) fn num_slots(&self) -> usize {
        self.config().num_slots as usize
    }

    /// A device cache queues its work on `stream` from now on; a host
    /// cache accepts only "no stream" (0).
    pub fn set_stream(&mut self, stream: u64) -> Result<()> {
        match self {
            AnyCache::Host(_) if stream == 0 => Ok(()),
            AnyCache::Host(_) => Err(Error::Unsupported(
                "this cache lives in host memory: it runs its kernels on the calling thread and takes no stream".into(),
            )),
            AnyCache::Device(m) => AnyCache::lock(m).set_stream(stream),
        }
    }
}
