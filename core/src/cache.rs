//! The state cache: per-layer conv windows and SSM states for every slot,
//! plus a position per slot. Every method validates all of its arguments
//! before it writes anything, so an `Err` leaves the cache unchanged.

use crate::buffer::{AlignedBuf, ZeroedVec};
use crate::config::{Config, Device, Shape};
use crate::dtype::with_slice;
use crate::dtype::{Elem, Slice, SliceMut, convert};
use crate::error::{Error, Result};
use crate::kernels::RowWriter;
use crate::pool;
use crate::selection::{Selection, Slots};
use rayon::prelude::*;

/// Calls touching fewer state bytes than this run on the calling thread:
/// below it, waking the thread pool costs more than it saves.
pub(crate) const PAR_MIN_BYTES: usize = 512 * 1024;

/// One layer's storage for all slots.
pub struct Layer {
    /// `[num_slots][conv_dim][conv_width]`.
    pub conv: AlignedBuf,
    /// `[num_slots][num_heads][head_dim][state_size]`.
    pub ssm: AlignedBuf,
}

/// The cache.
pub struct Cache {
    cfg: Config,
    shape: Shape,
    pub(crate) layers: Vec<Layer>,
    pub(crate) positions: ZeroedVec<u64>,
    /// 1 where a slot is acquired (`slot_acquire` / `slot_release`).
    pub(crate) in_use: ZeroedVec<u8>,
    /// The lowest and one-past-highest address of any layer's storage.
    span: (usize, usize),
    pub(crate) in_use_count: usize,
    /// Threads a call may use: 0 m2c's pool, 1 the calling thread only,
    /// `n` a pool of `n` (see `pool::with_limit`).
    num_threads: usize,
    /// Speculative decoding: the log and the current round (`spec.rs`).
    pub(crate) spec: crate::spec::Spec,
    /// Checkpoints to capture during prefills (`capture.rs`).
    pub(crate) capture: Option<Box<crate::capture::Plan>>,
    /// How the conv windows are stored (`ring.rs`).
    pub(crate) conv_layout: crate::ring::ConvLayout,
    /// Ring layout only: per layer, per slot, the physical column of the
    /// window's oldest input (empty in the oldest-first layout).
    pub(crate) heads: Vec<crate::buffer::ZeroedVec<u32>>,
    /// The snapshot format `slot_save` writes (1 or 2; `snapshot.rs`).
    pub(crate) snapshot_format: u32,
    /// Test-only fault injection: the next `update_conv` panics inside
    /// its per-slot work (on a pool thread when the call is parallel).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub inject_panic: bool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Cache {
    /// Allocates a zeroed cache. Fails with `InvalidConfig` for a bad
    /// shape, `Unsupported` for a device this build cannot drive, and
    /// `OutOfMemory` when the allocator refuses.
    pub fn new(cfg: Config) -> Result<Cache> {
        let shape = cfg.shape()?;
        Cache::check_device(&cfg)?;
        let oom = |what: &str| Error::OutOfMemory(format!("cannot allocate {what}"));
        let mut layers = Vec::new();
        layers.try_reserve_exact(cfg.num_layers as usize).map_err(|_| oom("layer table"))?;
        for _ in 0..cfg.num_layers {
            layers.push(Layer {
                conv: AlignedBuf::zeroed(shape.conv_layer_bytes, cfg.conv_dtype)?,
                ssm: AlignedBuf::zeroed(shape.ssm_layer_bytes, cfg.ssm_dtype)?,
            });
        }
        // Per-slot tables come zeroed from the OS too: creating a cache
        // with very many slots touches no per-slot memory.
        let positions = ZeroedVec::new(cfg.num_slots as usize)?;
        let in_use = ZeroedVec::new(cfg.num_slots as usize)?;
        let span = layers.iter().flat_map(|l| [&l.conv, &l.ssm]).fold((usize::MAX, 0), |(lo, hi), b| {
            (lo.min(b.as_ptr() as usize), hi.max(b.as_ptr() as usize + b.len_bytes()))
        });
        Ok(Cache {
            cfg,
            shape,
            layers,
            positions,
            in_use,
            in_use_count: 0,
            num_threads: 0,
            spec: crate::spec::Spec::default(),
            capture: None,
            conv_layout: crate::ring::ConvLayout::OldestFirst,
            heads: Vec::new(),
            snapshot_format: 1,
            span,
            #[cfg(any(test, feature = "testing"))]
            inject_panic: false,
        })
    }

    /// The device checks of [`Cache::new`]: a host cache lives on the CPU,
    /// device index 0 (a device cache is [`crate::device::DeviceCache`]).
    pub fn check_device(cfg: &Config) -> Result<()> {
        match cfg.device {
            Device::Cpu if cfg.device_index != 0 => Err(Error::InvalidConfig(format!(
                "device_index = {} but the CPU device has only index 0",
                cfg.device_index
            ))),
            Device::Cpu => Ok(()),
            Device::Cuda if cfg!(feature = "cuda") => {
                Err(Error::Unsupported("device CUDA: a host cache cannot live on a GPU; create a device cache".into()))
            }
            Device::Cuda => Err(Error::Unsupported("device CUDA: this build of m2c has no CUDA support".into())),
        }
    }

    /// Threads a call on this cache may use: 0 (the default) m2c's pool, 1
    /// the calling thread only, `n` at most `n` threads.
    pub fn num_threads(&self) -> usize {
        self.num_threads
    }

    /// Sets [`Cache::num_threads`] for the calls that follow.
    pub fn set_num_threads(&mut self, n: usize) {
        self.num_threads = n;
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn num_slots(&self) -> usize {
        self.cfg.num_slots as usize
    }

    /// True if the `bytes` bytes at address `addr` overlap any layer's
    /// storage. Callers' buffers must never alias the cache.
    pub fn overlaps_storage(&self, addr: usize, bytes: usize) -> bool {
        let end = addr.saturating_add(bytes);
        if bytes == 0 || end <= self.span.0 || addr >= self.span.1 {
            return false;
        }
        self.layers.iter().flat_map(|l| [&l.conv, &l.ssm]).any(|b| {
            let (b0, b1) = (b.as_ptr() as usize, b.as_ptr() as usize + b.len_bytes());
            addr < b1 && b0 < end
        })
    }

    /// The storage of `layer`.
    pub fn layer(&self, layer: u32) -> Result<&Layer> {
        self.check_layer(layer)?;
        Ok(&self.layers[layer as usize])
    }

    fn check_layer(&self, layer: u32) -> Result<()> {
        if layer >= self.cfg.num_layers {
            return Err(Error::OutOfRange(format!(
                "layer {layer} is out of range (num_layers = {})",
                self.cfg.num_layers
            )));
        }
        Ok(())
    }

    fn check_len(what: &str, got: usize, rows: usize, per_row: usize) -> Result<()> {
        // rows <= num_slots and per_row * num_slots fits in memory, so the
        // product cannot overflow; checked anyway.
        let want = rows.checked_mul(per_row);
        if want != Some(got) {
            return Err(Error::ShapeMismatch(format!(
                "{what}: len = {got} elements, but {rows} rows need {}",
                want.map_or_else(|| "more than usize::MAX".to_string(), |w| w.to_string())
            )));
        }
        Ok(())
    }

    /// Ring layout: the selected slots' windows of layer `l` took `n` new
    /// columns, so their heads move on by `n` (no-op when oldest-first).
    pub(crate) fn advance_heads(&mut self, l: usize, sel: &Selection<'_>, n: usize) {
        let w = self.shape.conv_width;
        if let Some(h) = self.heads.get_mut(l) {
            for (_, s) in sel.pairs() {
                h[s] = ((h[s] as usize + n) % w) as u32;
            }
        }
    }

    fn parallel(sel: &Selection<'_>, bytes_per_slot: usize) -> bool {
        sel.active() >= 2 && sel.active().saturating_mul(bytes_per_slot) >= PAR_MIN_BYTES && pool::threads() > 1
    }

    /// Pushes one new input column per selected slot into its conv window
    /// of `layer`: the window shifts left by one column (the oldest input
    /// drops out) and `x[row]` becomes the newest column.
    /// `x` is `[rows, conv_dim]`.
    pub fn update_conv(&mut self, layer: u32, slots: Slots<'_>, x: Slice<'_>) -> Result<()> {
        self.check_layer(layer)?;
        let sel = slots.validate(self.num_slots())?;
        let (dim, w) = (self.shape.conv_dim, self.shape.conv_width);
        Self::check_len("x", x.len(), sel.rows(), dim)?;
        let par = Self::parallel(&sel, self.shape.conv_slot_elems * self.cfg.conv_dtype.size());
        #[cfg(any(test, feature = "testing"))]
        let inject = self.inject_panic;
        let buf = self.layers[layer as usize].conv.slice_mut();
        let heads = self.heads.get(layer as usize).map(|h| &h[..]);
        with_slice!(SliceMut, buf, s => with_slice!(Slice, x, i => {
            for_rows(s, dim * w, &sel, par, |row, win| {
                #[cfg(any(test, feature = "testing"))]
                if inject {
                    panic!("injected fault in update_conv");
                }
                let x = &i[row * dim..][..dim];
                match (heads, sel.slot(row)) {
                    // Ring: the new inputs overwrite the oldest column.
                    (Some(h), Some(slot)) => {
                        let head = h[slot] as usize;
                        crate::kernels::conv::store_column(&mut win[head * dim..(head + 1) * dim], x);
                    }
                    _ => crate::kernels::conv::shift_push(win, x, w),
                }
            })
        }));
        self.advance_heads(layer as usize, &sel, 1);
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// Replaces whole conv windows of `layer`: `window` is
    /// `[rows, conv_dim, conv_width]`.
    pub fn set_conv(&mut self, layer: u32, slots: Slots<'_>, window: Slice<'_>) -> Result<()> {
        self.check_layer(layer)?;
        let per = self.shape.conv_slot_elems;
        let sel = slots.validate(self.num_slots())?;
        Self::check_len("window", window.len(), sel.rows(), per)?;
        let par = Self::parallel(&sel, per * self.cfg.conv_dtype.size());
        let buf = self.layers[layer as usize].conv.slice_mut();
        if self.conv_layout == crate::ring::ConvLayout::Ring {
            let (dim, w) = (self.shape.conv_dim, self.shape.conv_width);
            with_slice!(SliceMut, buf, d => with_slice!(Slice, window, src => {
                for_rows(d, per, &sel, par, |row, win| crate::ring::scatter_cast(&src[row * per..(row + 1) * per], win, dim, w))
            }));
            let h = &mut self.heads[layer as usize];
            for (_, s) in sel.pairs() {
                h[s] = 0;
            }
        } else {
            write_rows(buf, per, &sel, par, window);
        }
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// Replaces whole SSM states of `layer`: `state` is
    /// `[rows, num_heads, head_dim, state_size]`.
    pub fn set_ssm(&mut self, layer: u32, slots: Slots<'_>, state: Slice<'_>) -> Result<()> {
        self.check_layer(layer)?;
        let per = self.shape.ssm_slot_elems;
        let sel = slots.validate(self.num_slots())?;
        Self::check_len("state", state.len(), sel.rows(), per)?;
        let par = Self::parallel(&sel, per * self.cfg.ssm_dtype.size());
        write_rows(self.layers[layer as usize].ssm.slice_mut(), per, &sel, par, state);
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// Copies conv windows of `layer` out, converted to `out`'s dtype;
    /// padding rows are written as zeros. `out` is
    /// `[rows, conv_dim, conv_width]`.
    pub fn read_conv(&self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        self.check_layer(layer)?;
        let per = self.shape.conv_slot_elems;
        let sel = slots.validate(self.num_slots())?;
        Self::check_len("out", out.len(), sel.rows(), per)?;
        let par = Self::parallel(&sel, per * self.cfg.conv_dtype.size());
        let buf = self.layers[layer as usize].conv.slice();
        match self.heads.get(layer as usize) {
            // Ring windows come out oldest first, as a snapshot holds them.
            Some(h) => {
                let (dim, w) = (self.shape.conv_dim, self.shape.conv_width);
                with_slice!(Slice, buf, b => with_slice!(SliceMut, out, o => {
                    for row in 0..sel.rows() {
                        let dst = &mut o[row * per..(row + 1) * per];
                        match sel.slot(row) {
                            Some(s) => crate::ring::gather_cast(&b[s * per..(s + 1) * per], dim, w, h[s] as usize, dst),
                            None => dst.fill(Elem::ZERO),
                        }
                    }
                }));
            }
            None => read_rows(buf, per, &sel, par, out),
        }
        Ok(())
    }

    /// Copies SSM states of `layer` out, converted to `out`'s dtype;
    /// padding rows are written as zeros. `out` is
    /// `[rows, num_heads, head_dim, state_size]`.
    pub fn read_ssm(&self, layer: u32, slots: Slots<'_>, out: SliceMut<'_>) -> Result<()> {
        self.check_layer(layer)?;
        let per = self.shape.ssm_slot_elems;
        let sel = slots.validate(self.num_slots())?;
        Self::check_len("out", out.len(), sel.rows(), per)?;
        let par = Self::parallel(&sel, per * self.cfg.ssm_dtype.size());
        read_rows(self.layers[layer as usize].ssm.slice(), per, &sel, par, out);
        Ok(())
    }

    /// Zeroes the conv and SSM state of the selected slots in every layer
    /// and sets their positions to 0.
    pub fn reset(&mut self, slots: Slots<'_>) -> Result<()> {
        let sel = slots.validate(self.num_slots())?;
        let (cper, sper) = (self.shape.conv_slot_elems, self.shape.ssm_slot_elems);
        let bytes_per_slot = cper * self.cfg.conv_dtype.size() + sper * self.cfg.ssm_dtype.size();
        let total = sel.active().saturating_mul(bytes_per_slot).saturating_mul(self.layers.len());
        let zero_layer = |l: &mut Layer| {
            zero_rows(l.conv.slice_mut(), cper, &sel);
            zero_rows(l.ssm.slice_mut(), sper, &sel);
        };
        if total >= PAR_MIN_BYTES && self.layers.len() >= 2 && pool::threads() > 1 {
            pool::install(|| self.layers.par_iter_mut().for_each(zero_layer));
        } else {
            self.layers.iter_mut().for_each(zero_layer);
        }
        for (_, s) in sel.pairs() {
            self.positions[s] = 0;
        }
        for h in &mut self.heads {
            for (_, s) in sel.pairs() {
                h[s] = 0;
            }
        }
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// Adds `num_tokens` to the position of each selected slot. Fails with
    /// `OutOfRange`, changing nothing, if any position would overflow.
    pub fn advance(&mut self, slots: Slots<'_>, num_tokens: u32) -> Result<()> {
        let sel = slots.validate(self.num_slots())?;
        for (_, s) in sel.pairs() {
            if self.positions[s].checked_add(u64::from(num_tokens)).is_none() {
                return Err(Error::OutOfRange(format!(
                    "slot {s}: position {} + {num_tokens} overflows uint64_t",
                    self.positions[s]
                )));
            }
        }
        for (_, s) in sel.pairs() {
            self.positions[s] += u64::from(num_tokens);
        }
        self.spec_drop_sel(&sel);
        Ok(())
    }

    /// Tokens consumed by `slot` so far.
    pub fn position(&self, slot: i32) -> Result<u64> {
        Ok(self.positions[self.check_slot(slot)?])
    }
}

/// Runs `f(row, chunk)` for every selected slot's chunk of `per` elements,
/// on the thread pool when `par`.
fn for_rows<T: Send>(buf: &mut [T], per: usize, sel: &Selection<'_>, par: bool, f: impl Fn(usize, &mut [T]) + Sync) {
    if par {
        let rows = RowWriter::new(buf);
        pool::install(|| {
            (0..sel.rows()).into_par_iter().for_each(|row| {
                if let Some(slot) = sel.slot(row) {
                    // SAFETY: a selection never repeats a slot, so each
                    // slot's chunk goes to one task.
                    f(row, unsafe { rows.row(slot * per, per) })
                }
            })
        });
    } else {
        for (row, slot) in sel.pairs() {
            f(row, &mut buf[slot * per..][..per]);
        }
    }
}

/// Copies row `r` of `src` (`per` elements a row) into each selected
/// slot's chunk of `dst`, converting dtypes.
fn write_rows(dst: SliceMut<'_>, per: usize, sel: &Selection<'_>, par: bool, src: Slice<'_>) {
    with_slice!(SliceMut, dst, d => {
        for_rows(d, per, sel, par, |row, chunk| {
            convert(src.sub(row * per..(row + 1) * per), Elem::wrap_mut(chunk))
        })
    })
}

/// Copies each selected slot's chunk of `src` into row `r` of `dst`,
/// converting dtypes; padding rows of `dst` become zeros.
fn read_rows(src: Slice<'_>, per: usize, sel: &Selection<'_>, par: bool, dst: SliceMut<'_>) {
    let copy_row = |row: usize, out: SliceMut<'_>| {
        let mut out = out;
        match sel.slot(row) {
            Some(slot) => convert(src.sub(slot * per..(slot + 1) * per), out),
            None => out.fill_zero(),
        }
    };
    if par {
        with_slice!(SliceMut, dst, d => {
            let rows = RowWriter::new(d);
            pool::install(|| {
                (0..sel.rows()).into_par_iter().for_each(|row| {
                    // SAFETY: each row of `dst` goes to one task.
                    copy_row(row, Elem::wrap_mut(unsafe { rows.row(row * per, per) }))
                })
            })
        })
    } else {
        let mut dst = dst;
        for row in 0..sel.rows() {
            copy_row(row, dst.sub(row * per..(row + 1) * per));
        }
    }
}

fn zero_rows(buf: SliceMut<'_>, per: usize, sel: &Selection<'_>) {
    with_slice!(SliceMut, buf, b => {
        for (_, slot) in sel.pairs() {
            b[slot * per..(slot + 1) * per].fill(Elem::ZERO);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config {
            num_layers: 2,
            num_slots: 3,
            intermediate_size: 4,
            num_heads: 2,
            head_dim: 2,
            state_size: 2,
            n_groups: 1,
            ..Config::default()
        }
    }

    #[test]
    fn advance_that_would_overflow_changes_no_position() {
        let mut c = Cache::new(tiny()).unwrap();
        c.positions[1] = u64::MAX - 3;
        c.advance(Slots::List(&[0, 1]), 3).unwrap();
        assert_eq!((c.position(0).unwrap(), c.position(1).unwrap()), (3, u64::MAX));
        let e = c.advance(Slots::List(&[0, 1]), 1).unwrap_err();
        assert!(matches!(e, Error::OutOfRange(ref m) if m.contains("overflows")), "{e:?}");
        assert_eq!((c.position(0).unwrap(), c.position(1).unwrap()), (3, u64::MAX));
    }

    #[test]
    fn cuda_device_is_unsupported_in_this_build() {
        let e = Cache::new(Config { device: Device::Cuda, ..tiny() }).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
    }

    #[test]
    fn position_rejects_negative_and_too_large_slots() {
        let c = Cache::new(tiny()).unwrap();
        for s in [-1, 3, i32::MAX, i32::MIN] {
            assert!(matches!(c.position(s), Err(Error::OutOfRange(_))));
        }
    }
}
