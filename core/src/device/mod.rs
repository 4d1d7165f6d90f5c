//! The cache resident in accelerator memory, written against two small
//! traits rather than any one GPU API: [`DeviceMem`] (zeroed allocations,
//! uploads, downloads and clears of byte ranges) and [`DeviceKernels`]
//! (the decode kernels on device addresses). The `cuda` feature implements
//! them with cudarc; the tests implement them with host memory, so every
//! line of this module runs on machines without a GPU.
//!
//! The device holds the conv windows and SSM states. A host [`Cache`] of the
//! same shape (its pages untouched until used, since its storage comes
//! zeroed from the OS) holds the slot table and positions, and serves as
//! staging for the copy-style calls: each one downloads the slot rows it
//! reads, runs the host code (which validates every argument before it
//! writes anything), then uploads the rows it wrote. So those calls keep
//! the host cache's exact semantics, formats and error behaviour, and an
//! invalid call leaves the device untouched. Zeroing (reset, acquire) and
//! `copy_slots` (planned and validated by the host code) move no state
//! through the host: they clear and copy rows on the device. The kernel
//! calls (`conv_step`, `ssm_step` and their prefill forms) run on the
//! device, on device addresses the caller provides.
//!
//! A failure of the device itself (a transfer or launch the driver
//! refuses) is reported as such; the state of the rows that call was
//! writing is then unspecified, as after any CUDA error.

use crate::buffer::try_with_capacity;
use crate::cache::Cache;
use crate::config::{Config, Device, Shape};
use crate::dtype::{DType, Slice, SliceMut};
use crate::error::{Error, Result};
use crate::kernels::{ConvLens, SsmLens, check_conv_lens, check_ssm_lens};
use crate::persist::FileCheck;
use crate::selection::Slots;
use std::any::Any;
use std::path::Path;

/// One allocation in device memory, as the device that made it represents
/// it (the CUDA device: a `CudaSlice<u8>`; the emulated one: a host
/// vector). Only that device can use it: [`DeviceMem`]'s methods take it
/// back and recover their own type with [`buf_ref`] / [`buf_mut`]. Dropping
/// it frees the memory.
pub type DevBuf = Box<dyn Any + Send + Sync>;

/// `buf` as the device type `T` that made it.
pub fn buf_ref<T: 'static>(buf: &DevBuf) -> Result<&T> {
    buf.downcast_ref::<T>().ok_or_else(foreign_buffer)
}

/// `buf` as the device type `T` that made it, writable.
pub fn buf_mut<T: 'static>(buf: &mut DevBuf) -> Result<&mut T> {
    buf.downcast_mut::<T>().ok_or_else(foreign_buffer)
}

fn foreign_buffer() -> Error {
    Error::InvalidArg("a device buffer was passed to a device that did not allocate it".into())
}

/// Byte buffers in device memory. Object-safe: a [`DeviceCache`] holds its
/// device as a `Box<dyn Backend>`.
pub trait DeviceMem {
    /// A zero-filled allocation of `bytes` bytes.
    fn alloc_zeroed(&self, bytes: usize) -> Result<DevBuf>;
    /// Copies `src` to `dst` at byte `offset`.
    fn upload(&self, dst: &mut DevBuf, offset: usize, src: &[u8]) -> Result<()>;
    /// Copies `dst.len()` bytes at byte `offset` of `src` to `dst`.
    fn download(&self, src: &DevBuf, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Zeroes `bytes` bytes at byte `offset`.
    fn zero(&self, dst: &mut DevBuf, offset: usize, bytes: usize) -> Result<()>;
    /// The device address of the allocation's first byte.
    fn address(&self, buf: &DevBuf) -> u64;
    /// Copies `bytes` bytes at byte `src_off` of `src` to byte `dst_off`
    /// of `dst` on the device (in range; queued, see `synchronize`).
    fn copy(&self, src: &DevBuf, src_off: usize, dst: &mut DevBuf, dst_off: usize, bytes: usize) -> Result<()>;
    /// As `copy` within one allocation; the two ranges do not overlap.
    fn copy_within(&self, buf: &mut DevBuf, src_off: usize, dst_off: usize, bytes: usize) -> Result<()>;
    /// Waits until every operation queued so far has finished.
    fn synchronize(&self) -> Result<()>;
    /// Copies `bytes` bytes from device address `src` to `dst` (queued).
    ///
    /// # Safety
    /// Both ranges must lie inside live allocations of this device (the
    /// caller's arrays once checked with `check_array`, or this device's
    /// buffers) and must not overlap.
    unsafe fn copy_addr(&self, dst: u64, src: u64, bytes: usize) -> Result<()>;
    /// Zeroes `bytes` bytes at device address `dst` (queued).
    ///
    /// # Safety
    /// As for `copy_addr`.
    unsafe fn zero_addr(&self, dst: u64, bytes: usize) -> Result<()>;
}

/// A device array: its address and its length in elements, which the
/// caller declares (m2c checks it against the shape; it cannot check the
/// allocation behind the address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevArray {
    /// 0 for none.
    pub addr: u64,
    pub len: usize,
}

impl DevArray {
    pub fn new(addr: u64, len: usize) -> Self {
        DevArray { addr, len }
    }
}

/// Activations of an SSM step or prefill, as device arrays in `dtype`
/// (shapes as in [`crate::kernels::SsmInputs`]).
#[derive(Clone, Copy, Debug)]
pub struct DeviceSsmIo {
    pub dtype: DType,
    pub x: DevArray,
    pub dt: DevArray,
    pub b: DevArray,
    pub c: DevArray,
    /// Optional (address 0).
    pub z: DevArray,
    pub y: DevArray,
}

/// SSM parameters as device f32 arrays `[num_heads]`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceSsmParams {
    pub a: DevArray,
    /// Optional (address 0).
    pub d: DevArray,
    /// Optional (address 0).
    pub dt_bias: DevArray,
    pub dt_softplus: bool,
    pub dt_limit: Option<(f32, f32)>,
}

/// Conv activations and parameters as device arrays: `x` and `out` in
/// `dtype`, `weight` (`[conv_dim, K]`) and `bias` (`[conv_dim]`) in f32.
#[derive(Clone, Copy, Debug)]
pub struct DeviceConvArgs {
    pub dtype: DType,
    pub x: DevArray,
    pub out: DevArray,
    pub weight: DevArray,
    /// Optional (address 0).
    pub bias: DevArray,
    pub silu: bool,
}

/// A device the cache can live on: memory and kernels.
pub trait Backend: DeviceMem + DeviceKernels + Send + Sync {
    /// The device as `Any`, so a test can reach the emulated device behind
    /// a cache.
    fn as_any(&self) -> &dyn Any;
}

impl<T: DeviceMem + DeviceKernels + Send + Sync + 'static> Backend for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The decode kernels on device memory. `slots` has one entry per row
/// (negative: padding, output zeroed, state untouched); row `r`'s
/// activations start `r` rows into each array.
pub trait DeviceKernels: DeviceMem {
    /// `Err(InvalidArg)` unless the `bytes` bytes at `addr` lie inside one
    /// allocation the device knows (`what` names the array), as far as the
    /// device can tell (CUDA reports the range of a stream-ordered pool
    /// allocation as the pool's). Called for every array of a kernel call
    /// before anything runs, so a host pointer is refused instead of
    /// faulting on the device.
    fn check_array(&self, what: &str, addr: u64, bytes: usize) -> Result<()>;
    /// One SSM step on `state` (one layer, `[num_slots][H][P][N]`).
    fn ssm_step(
        &self,
        cfg: &Config,
        state: &mut DevBuf,
        slots: &[i32],
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()>;
    /// One conv step on `win` (one layer, `[num_slots][conv_dim][W]`).
    fn conv_step(&self, cfg: &Config, win: &mut DevBuf, slots: &[i32], a: &DeviceConvArgs) -> Result<()>;
    /// A prefill of `slots.len()` sequences in one launch: sequence `i`
    /// (slot `slots[i]`, distinct, or negative for padding) owns token rows
    /// `cu[i] .. cu[i+1]` (validated: `slots.len() + 1` offsets from 0,
    /// never decreasing), run in order; bit-identical to its steps.
    fn ssm_prefill(
        &self,
        cfg: &Config,
        state: &mut DevBuf,
        slots: &[i32],
        cu: &[u64],
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()>;
    /// The conv prefill, as `ssm_prefill`.
    fn conv_prefill(&self, cfg: &Config, win: &mut DevBuf, slots: &[i32], cu: &[u64], a: &DeviceConvArgs)
    -> Result<()>;
    /// Queues everything after this call on `stream` (a device stream
    /// handle; 0 for the device's default stream), after waiting for the
    /// work queued so far. Validates the handle as far as the device can.
    fn set_stream(&mut self, stream: u64) -> Result<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Conv = 0,
    Ssm = 1,
}

/// A cache whose state lives in device memory.
pub struct DeviceCache {
    cfg: Config,
    dev: Box<dyn Backend>,
    host: Cache,
    conv: Vec<DevBuf>,
    ssm: Vec<DevBuf>,
    /// The speculative log (the rounds are the host side's).
    spec: Box<spec::DevSpec>,
}

impl Drop for DeviceCache {
    fn drop(&mut self) {
        // Kernels the caller queued on its own stream may still use the
        // buffers freed next; nothing can report an error from here.
        let _ = self.dev.synchronize();
    }
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCache").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl DeviceCache {
    /// A zeroed cache for `cfg` (whose `device` fields name the device
    /// `dev` drives) on `dev`.
    pub fn new(cfg: Config, dev: Box<dyn Backend>) -> Result<Self> {
        let host = Cache::new(Config { device: Device::Cpu, device_index: 0, ..cfg })?;
        let shape = *host.shape();
        let n = cfg.num_layers as usize;
        let (mut conv, mut ssm) = (try_with_capacity(n, "layer table")?, try_with_capacity(n, "layer table")?);
        for _ in 0..n {
            conv.push(dev.alloc_zeroed(shape.conv_layer_bytes)?);
            ssm.push(dev.alloc_zeroed(shape.ssm_layer_bytes)?);
        }
        // The zeroing is queued: the cache is ready (for views read on any
        // stream too) once it is done.
        dev.synchronize()?;
        Ok(DeviceCache { cfg, dev, host, conv, ssm, spec: Box::default() })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// As [`Cache::num_threads`] (for the host work of copy-style calls).
    pub fn num_threads(&self) -> usize {
        self.host.num_threads()
    }

    /// As [`Cache::set_num_threads`].
    pub fn set_num_threads(&mut self, n: usize) {
        self.host.set_num_threads(n);
    }

    pub fn shape(&self) -> &Shape {
        self.host.shape()
    }

    pub fn num_slots(&self) -> usize {
        self.host.num_slots()
    }

    /// The device.
    pub fn device(&self) -> &dyn Backend {
        &*self.dev
    }

    /// Device address of `layer`'s conv windows and SSM states.
    pub fn addresses(&self, layer: u32) -> Result<(u64, u64)> {
        self.host.layer(layer)?;
        Ok((self.dev.address(&self.conv[layer as usize]), self.dev.address(&self.ssm[layer as usize])))
    }

    fn row_bytes(&self, part: Part) -> usize {
        let s = self.host.shape();
        match part {
            Part::Conv => s.conv_slot_elems * self.cfg.conv_dtype.size(),
            Part::Ssm => s.ssm_slot_elems * self.cfg.ssm_dtype.size(),
        }
    }

    /// Copies the rows of `slots` in `layers` from the device to the host
    /// staging cache.
    fn pull(&mut self, part: Part, layers: std::ops::Range<usize>, slots: &[usize]) -> Result<()> {
        let rb = self.row_bytes(part);
        for l in layers {
            let (dev, host) = match part {
                Part::Conv => (&self.conv[l], self.host.layers[l].conv.bytes_mut()),
                Part::Ssm => (&self.ssm[l], self.host.layers[l].ssm.bytes_mut()),
            };
            for &s in slots {
                self.dev.download(dev, s * rb, &mut host[s * rb..(s + 1) * rb])?;
            }
        }
        Ok(())
    }

    /// Copies the rows of `slots` in `layers` from the host staging cache
    /// to the device.
    fn push(&mut self, part: Part, layers: std::ops::Range<usize>, slots: &[usize]) -> Result<()> {
        let rb = self.row_bytes(part);
        for l in layers {
            let (dev, host) = match part {
                Part::Conv => (&mut self.conv[l], self.host.layers[l].conv.bytes()),
                Part::Ssm => (&mut self.ssm[l], self.host.layers[l].ssm.bytes()),
            };
            for &s in slots {
                self.dev.upload(dev, s * rb, &host[s * rb..(s + 1) * rb])?;
            }
        }
        Ok(())
    }

    /// Returns the staging copy's pages to the OS after a call that
    /// touched many rows, so that the host does not keep a resident copy of
    /// the device state (its contents are scratch: the device holds the
    /// state, the host cache only the slot table and positions).
    fn release_staging(&mut self) {
        for l in &mut self.host.layers {
            l.conv.discard();
            l.ssm.discard();
        }
    }

    /// `pull` of both the conv windows and the SSM states.
    fn pull_both(&mut self, layers: std::ops::Range<usize>, slots: &[usize]) -> Result<()> {
        self.pull(Part::Conv, layers.clone(), slots)?;
        self.pull(Part::Ssm, layers, slots)
    }

    /// `push` of both the conv windows and the SSM states.
    fn push_both(&mut self, layers: std::ops::Range<usize>, slots: &[usize]) -> Result<()> {
        self.push(Part::Conv, layers.clone(), slots)?;
        self.push(Part::Ssm, layers, slots)
    }

    fn all_layers(&self) -> std::ops::Range<usize> {
        0..self.cfg.num_layers as usize
    }

    fn one_layer(&self, layer: u32) -> Result<std::ops::Range<usize>> {
        self.host.layer(layer)?;
        Ok(layer as usize..layer as usize + 1)
    }

    /// The slots `slots` addresses (padding left out), validated.
    fn selected(&self, slots: Slots<'_>) -> Result<Vec<usize>> {
        let sel = slots.validate(self.num_slots())?;
        let mut v = try_with_capacity(sel.rows(), "slot list")?;
        v.extend(sel.pairs().map(|(_, s)| s));
        Ok(v)
    }

    /// As [`Cache::update_conv`].
    pub fn update_conv(&mut self, layer: u32, slots: Slots<'_>, x: Slice<'_>) -> Result<()> {
        let (layers, touched) = (self.one_layer(layer)?, self.selected(slots)?);
        self.pull(Part::Conv, layers.clone(), &touched)?;
        self.host.update_conv(layer, slots, x)?;
        self.push(Part::Conv, layers, &touched)
    }

    /// As [`Cache::set_conv`].
    pub fn set_conv(&mut self, layer: u32, slots: Slots<'_>, window: Slice<'_>) -> Result<()> {
        let (layers, touched) = (self.one_layer(layer)?, self.selected(slots)?);
        self.host.set_conv(layer, slots, window)?;
        self.push(Part::Conv, layers, &touched)
    }

    /// As [`Cache::set_ssm`].
    pub fn set_ssm(&mut self, layer: u32, slots: Slots<'_>, state: Slice<'_>) -> Result<()> {
        let (layers, touched) = (self.one_layer(layer)?, self.selected(slots)?);
        self.host.set_ssm(layer, slots, state)?;
        self.push(Part::Ssm, layers, &touched)
    }

    /// As [`Cache::read_conv`].
    pub fn read_conv(&mut self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        let (layers, touched) = (self.one_layer(layer)?, self.selected(slots)?);
        self.pull(Part::Conv, layers, &touched)?;
        self.host.read_conv(layer, slots, out)
    }

    /// As [`Cache::read_ssm`].
    pub fn read_ssm(&mut self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        let (layers, touched) = (self.one_layer(layer)?, self.selected(slots)?);
        self.pull(Part::Ssm, layers, &touched)?;
        self.host.read_ssm(layer, slots, out)
    }

    /// As [`Cache::reset`]: zeroes the slots' state on the device.
    pub fn reset(&mut self, slots: Slots<'_>) -> Result<()> {
        let touched = self.selected(slots)?;
        self.host.reset(slots)?;
        self.zero_rows(&touched)
    }

    /// Zeroes the state of `slots` on the device, in every layer.
    fn zero_rows(&mut self, slots: &[usize]) -> Result<()> {
        let (conv_row, ssm_row) = (self.row_bytes(Part::Conv), self.row_bytes(Part::Ssm));
        for (rb, bufs) in [(conv_row, &mut self.conv), (ssm_row, &mut self.ssm)] {
            for b in bufs.iter_mut() {
                for &s in slots {
                    self.dev.zero(b, s * rb, rb)?;
                }
            }
        }
        // Copy-style calls return once their device work is done.
        self.dev.synchronize()
    }

    /// As [`Cache::advance`].
    pub fn advance(&mut self, slots: Slots<'_>, num_tokens: u32) -> Result<()> {
        self.host.advance(slots, num_tokens)
    }

    /// As [`Cache::position`].
    pub fn position(&self, slot: i32) -> Result<u64> {
        self.host.position(slot)
    }

    /// As [`Cache::slot_acquire`]: the slot's state is zeroed on the
    /// device (if that fails, the slot is released again).
    pub fn slot_acquire(&mut self) -> Result<i32> {
        let s = self.host.slot_acquire()?;
        if let Err(e) = self.zero_rows(&[s as usize]) {
            self.host.slot_release(s)?;
            return Err(e);
        }
        Ok(s)
    }

    /// As [`Cache::slot_release`].
    pub fn slot_release(&mut self, slot: i32) -> Result<()> {
        self.host.slot_release(slot)
    }

    /// As [`Cache::slots_in_use`].
    pub fn slots_in_use(&self) -> u32 {
        self.host.slots_in_use()
    }

    /// As [`Cache::copy_slots`] (sources read before any destination is
    /// written, whatever the overlap).
    pub fn copy_slots(&mut self, src: &[i32], dst: &[i32]) -> Result<()> {
        // The host plans (and validates) the call; the rows move device to
        // device, sources that are also destinations through a scratch
        // allocation first, as the host does. Positions follow once every
        // copy is done.
        let Some(plan) = self.host.copy_plan(src, dst)? else {
            return Ok(());
        };
        let (conv_row, ssm_row) = (self.row_bytes(Part::Conv), self.row_bytes(Part::Ssm));
        let mut scratch = match plan.staged.len() {
            0 => None,
            k => Some(self.dev.alloc_zeroed(k * conv_row.max(ssm_row))?),
        };
        let dev = &*self.dev;
        for (conv, ssm) in self.conv.iter_mut().zip(self.ssm.iter_mut()) {
            for (buf, per) in [(conv, conv_row), (ssm, ssm_row)] {
                if let Some(sc) = scratch.as_mut() {
                    for (k, &s) in plan.staged.iter().enumerate() {
                        dev.copy(buf, s * per, sc, k * per, per)?;
                    }
                }
                for &(s, d) in &plan.moves {
                    match (plan.staged.binary_search(&s), scratch.as_ref()) {
                        (Ok(k), Some(sc)) => dev.copy(sc, k * per, buf, d * per, per)?,
                        _ => dev.copy_within(buf, s * per, d * per, per)?,
                    }
                }
            }
        }
        dev.synchronize()?;
        self.host.copy_positions(&plan);
        Ok(())
    }

    /// As [`Cache::count_nonfinite`].
    pub fn count_nonfinite(&mut self, slot: i32) -> Result<u64> {
        let s = self.host.check_slot(slot)?;
        let layers = self.all_layers();
        self.pull_both(layers, &[s])?;
        self.host.count_nonfinite(slot)
    }

    /// As [`Cache::slot_snapshot_size`].
    pub fn slot_snapshot_size(&self) -> usize {
        self.host.slot_snapshot_size()
    }

    /// As [`Cache::slot_save`].
    pub fn slot_save(&mut self, slot: i32, buf: &mut [u8]) -> Result<usize> {
        let s = self.host.check_slot(slot)?;
        let layers = self.all_layers();
        self.pull_both(layers, &[s])?;
        self.host.slot_save(slot, buf)
    }

    /// As [`Cache::slot_digest`] (the slot's rows come from the device).
    pub fn slot_digest(&mut self, slot: i32) -> Result<u64> {
        let s = self.host.check_slot(slot)?;
        let layers = self.all_layers();
        self.pull_both(layers, &[s])?;
        self.host.slot_digest(slot)
    }

    /// As [`Cache::slot_load`].
    pub fn slot_load(&mut self, slot: i32, buf: &[u8]) -> Result<()> {
        let s = self.host.check_slot(slot)?;
        self.host.slot_load(slot, buf)?;
        let layers = self.all_layers();
        self.push_both(layers, &[s])
    }

    /// As [`Cache::slot_export`] (the slot's rows come from the device).
    pub fn slot_export(&mut self, slot: i32, out: &mut [u8]) -> Result<u64> {
        let s = self.host.check_slot(slot)?;
        let layers = self.all_layers();
        self.pull_both(layers, &[s])?;
        self.host.slot_export(slot, out)
    }

    /// As [`Cache::slot_import`] (the slot's rows go to the device).
    pub fn slot_import(&mut self, slot: i32, data: &[u8], position: u64) -> Result<()> {
        let s = self.host.check_slot(slot)?;
        self.host.slot_import(slot, data, position)?;
        let layers = self.all_layers();
        self.push_both(layers, &[s])
    }

    /// The host side: slot table, positions, rounds and capture plan.
    pub(crate) fn host_side(&mut self) -> &mut Cache {
        &mut self.host
    }

    /// Copies `layer`'s conv window (or SSM state) of slot `s` into its
    /// place in `data` (the layout of `slot_export`).
    pub(crate) fn export_layer_row(&mut self, layer: u32, conv: bool, s: usize, data: &mut [u8]) -> Result<()> {
        let part = if conv { Part::Conv } else { Part::Ssm };
        let l = self.one_layer(layer)?;
        self.pull(part, l, &[s])?;
        self.host.export_layer_row(layer, conv, s, data);
        Ok(())
    }

    /// The checks of [`DeviceCache::conv_prefill`].
    pub(crate) fn check_conv_prefill(
        &self,
        layer: u32,
        slots: Slots<'_>,
        cu: &[u64],
        a: &DeviceConvArgs,
    ) -> Result<()> {
        self.one_layer(layer)?;
        let rs = row_slots(slots, self.num_slots())?;
        let total = crate::kernels::check_cu(cu, rs.len())?;
        self.check_conv(a, total)
    }

    /// The checks of [`DeviceCache::ssm_prefill`].
    pub(crate) fn check_ssm_prefill(
        &self,
        layer: u32,
        slots: Slots<'_>,
        cu: &[u64],
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()> {
        self.one_layer(layer)?;
        let rs = row_slots(slots, self.num_slots())?;
        let total = crate::kernels::check_cu(cu, rs.len())?;
        self.check_ssm(io, p, total)
    }

    /// As [`Cache::file_size`].
    pub fn file_size(&self) -> u64 {
        self.host.file_size()
    }

    /// As [`Cache::save_file`].
    pub fn save_file(&mut self, path: &Path) -> Result<()> {
        let all: Vec<usize> = (0..self.num_slots()).collect();
        let layers = self.all_layers();
        self.pull_both(layers, &all)?;
        let saved = self.host.save_file(path);
        self.release_staging();
        saved
    }

    /// As [`Cache::load_file`]. The host load either changes nothing or,
    /// when the file changes under it, resets every slot; the staging copy
    /// is made whole first so that both outcomes reach the device.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let check = FileCheck::read(&self.cfg, self.file_size(), path)?;
        self.install_file(check)
    }

    /// As [`Cache::install_file`].
    pub fn install_file(&mut self, check: FileCheck) -> Result<()> {
        let all: Vec<usize> = (0..self.num_slots()).collect();
        let layers = self.all_layers();
        self.pull_both(layers.clone(), &all)?;
        let loaded = self.host.install_file(check);
        self.push_both(layers, &all)?;
        self.release_staging();
        loaded
    }
}

/// The slot of each row of `slots` (-1 for padding), validated.
fn row_slots(slots: Slots<'_>, num_slots: usize) -> Result<Vec<i32>> {
    let sel = slots.validate(num_slots)?;
    let mut v = try_with_capacity(sel.rows(), "slot list")?;
    v.extend((0..sel.rows()).map(|r| sel.slot(r).map_or(-1, |s| s as i32)));
    Ok(v)
}

/// As on the host: `(NULL, 0)` is an empty (or, for an optional array,
/// absent) buffer; a null address with a length is refused (the C API
/// reports it as a NULL argument before it gets here).
fn null_len(what: &str, a: DevArray) -> Result<()> {
    if a.addr == 0 && a.len != 0 {
        return Err(Error::InvalidArg(format!("{what} is a null device address but len = {}", a.len)));
    }
    Ok(())
}

fn require_address(what: &str, addr: u64) -> Result<()> {
    if addr == 0 {
        return Err(Error::InvalidArg(format!("{what} is a null device address")));
    }
    Ok(())
}

impl DeviceCache {
    /// As [`Cache::ssm_step`], on device arrays whose declared lengths are
    /// checked against the shape (`[rows, ...]` as for the host call).
    pub fn ssm_step(&mut self, layer: u32, slots: Slots<'_>, io: &DeviceSsmIo, p: &DeviceSsmParams) -> Result<()> {
        self.one_layer(layer)?;
        let rs = row_slots(slots, self.num_slots())?;
        self.check_ssm(io, p, rs.len())?;
        self.spec_drop_rows(&rs);
        if rs.is_empty() {
            return Ok(());
        }
        self.dev.ssm_step(&self.cfg, &mut self.ssm[layer as usize], &rs, io, p)
    }

    /// As [`Cache::conv_step`], on device arrays.
    pub fn conv_step(&mut self, layer: u32, slots: Slots<'_>, a: &DeviceConvArgs) -> Result<()> {
        self.one_layer(layer)?;
        let rs = row_slots(slots, self.num_slots())?;
        self.check_conv(a, rs.len())?;
        self.spec_drop_rows(&rs);
        if rs.is_empty() {
            return Ok(());
        }
        self.dev.conv_step(&self.cfg, &mut self.conv[layer as usize], &rs, a)
    }

    /// As [`Cache::ssm_prefill`], on device arrays, all sequences in one
    /// launch (bit-identical to the device's token-by-token steps).
    pub fn ssm_prefill(
        &mut self,
        layer: u32,
        slots: Slots<'_>,
        cu_seqlens: &[u64],
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()> {
        self.one_layer(layer)?;
        let rs = row_slots(slots, self.num_slots())?;
        let total = crate::kernels::check_cu(cu_seqlens, rs.len())?;
        self.check_ssm(io, p, total)?;
        self.spec_drop_rows(&rs);
        if total == 0 {
            return Ok(());
        }
        self.dev.ssm_prefill(&self.cfg, &mut self.ssm[layer as usize], &rs, cu_seqlens, io, p)
    }

    /// As [`Cache::conv_prefill`], on device arrays, in one launch.
    pub fn conv_prefill(&mut self, layer: u32, slots: Slots<'_>, cu_seqlens: &[u64], a: &DeviceConvArgs) -> Result<()> {
        self.one_layer(layer)?;
        let rs = row_slots(slots, self.num_slots())?;
        let total = crate::kernels::check_cu(cu_seqlens, rs.len())?;
        self.check_conv(a, total)?;
        self.spec_drop_rows(&rs);
        if total == 0 {
            return Ok(());
        }
        self.dev.conv_prefill(&self.cfg, &mut self.conv[layer as usize], &rs, cu_seqlens, a)
    }

    /// Drops the slots a kernel call is about to change from the
    /// speculative round, as the host kernels do.
    fn spec_drop_rows(&mut self, rows: &[i32]) {
        for &s in rows.iter().filter(|&&s| s >= 0) {
            self.host.spec_drop(s as usize);
        }
    }

    /// Queues the kernel calls and transfers that follow on `stream` (see
    /// [`DeviceKernels::set_stream`]).
    pub fn set_stream(&mut self, stream: u64) -> Result<()> {
        self.dev.set_stream(stream)
    }

    /// The checks of the host `ssm_step` that do not read the arrays.
    fn check_ssm(&self, io: &DeviceSsmIo, p: &DeviceSsmParams, rows: usize) -> Result<()> {
        require_address("A", p.a.addr)?;
        let all = [
            ("x", io.x),
            ("dt", io.dt),
            ("B", io.b),
            ("C", io.c),
            ("z", io.z),
            ("y", io.y),
            ("D", p.d),
            ("dt_bias", p.dt_bias),
        ];
        for (what, a) in all {
            null_len(what, a)?;
        }
        let present = |a: DevArray| (a.addr != 0).then_some(a.len);
        let lens = SsmLens {
            x: io.x.len,
            dt: io.dt.len,
            b: io.b.len,
            c: io.c.len,
            z: present(io.z),
            y: io.y.len,
            a: p.a.len,
            d: present(p.d),
            dt_bias: present(p.dt_bias),
        };
        check_ssm_lens(&self.cfg, rows, &lens, p.dt_limit)?;
        let es = io.dtype.size();
        let arrays =
            [("x", io.x, es), ("dt", io.dt, es), ("B", io.b, es), ("C", io.c, es), ("z", io.z, es), ("y", io.y, es)];
        for (what, a, size) in arrays.into_iter().chain([("A", p.a, 4), ("D", p.d, 4), ("dt_bias", p.dt_bias, 4)]) {
            self.check_place(what, a, size)?;
        }
        Ok(())
    }

    /// A non-empty array must be aligned to its `size`-byte elements (as on
    /// the host) and lie in memory the device knows.
    fn check_place(&self, what: &str, a: DevArray, size: usize) -> Result<()> {
        if a.addr == 0 || a.len == 0 {
            return Ok(());
        }
        if !a.addr.is_multiple_of(size as u64) {
            return Err(Error::InvalidArg(format!(
                "{what} ({:#x}) is not aligned to its {size}-byte elements",
                a.addr
            )));
        }
        self.dev.check_array(what, a.addr, a.len * size)
    }

    /// The checks of the host `conv_step` that do not read the arrays.
    fn check_conv(&self, a: &DeviceConvArgs, rows: usize) -> Result<()> {
        let dim = self.shape().conv_dim;
        require_address("weight", a.weight.addr)?;
        for (what, v) in [("x", a.x), ("out", a.out), ("bias", a.bias)] {
            null_len(what, v)?;
        }
        let lens = ConvLens {
            x: a.x.len,
            out: a.out.len,
            weight: a.weight.len,
            bias: (a.bias.addr != 0).then_some(a.bias.len),
        };
        check_conv_lens(&self.cfg, dim, rows, &lens)?;
        let es = a.dtype.size();
        for (what, v, size) in [("x", a.x, es), ("out", a.out, es), ("weight", a.weight, 4), ("bias", a.bias, 4)] {
            self.check_place(what, v, size)?;
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod emulated;
mod spec;
