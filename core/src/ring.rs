//! Ring conv windows: an opt-in layout of the conv windows
//! ([`ConvLayout::Ring`]) in which a decode token writes one column
//! instead of shifting the whole window.
//!
//! In the default layout ([`ConvLayout::OldestFirst`]) one slot's window in
//! one layer is `[conv_dim][W]`, each channel's `W` inputs oldest first, and
//! every token shifts every column. In the ring layout the same elements
//! are stored column by column, `[W][conv_dim]`: physical column `j` holds
//! `conv_dim` channels side by side, and a per-(layer, slot) head says
//! which physical column holds the oldest input: logical column `k` (0 the
//! oldest) is physical column `(head + k) % W`. A token overwrites the
//! oldest column (physical `head`) with its inputs and advances the head;
//! the kernels read the taps from their physical columns. Outputs and
//! stored values are bit-identical to the oldest-first layout's (the same
//! products summed in the same order).
//!
//! Everything outside the hot paths sees oldest-first windows: `read_conv`,
//! `set_conv`, snapshots, files, exports, checkpoints and digests convert on
//! the fly (the conv windows are ~2% of a slot's bytes), so no format
//! changes with the layout. Raw regions for transfer engines
//! (`slot_regions`) describe storage bytes, which a ring cache does not
//! keep in snapshot order: they are refused for ring caches.

use crate::cache::Cache;
use crate::dtype::Elem;
use crate::error::{Error, Result};

/// How a cache stores its conv windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvLayout {
    /// `[conv_dim][W]` per slot, oldest input first (the default; what
    /// HF transformers, vLLM and llama.cpp keep).
    #[default]
    OldestFirst,
    /// `[W][conv_dim]` per slot with a per-(layer, slot) head (see the
    /// module documentation).
    Ring,
}

/// The physical column of logical column `k` (0 the oldest) of a ring
/// window of width `w` whose oldest column is `head`.
#[inline(always)]
pub(crate) fn phys(head: usize, k: usize, w: usize) -> usize {
    let j = head + k;
    if j >= w { j - w } else { j }
}

/// Channels `c0..c0 + dst.len() / w` of ring window `win` (`[w][dim]`,
/// oldest column `head`) into `dst` oldest first (`[len][w]`), through `f`.
#[inline]
pub(crate) fn gather<S: Copy, D>(
    win: &[S],
    dim: usize,
    w: usize,
    head: usize,
    c0: usize,
    dst: &mut [D],
    f: impl Fn(S) -> D,
) {
    let len = dst.len() / w;
    for k in 0..w {
        let col = &win[phys(head, k, w) * dim + c0..][..len];
        for (c, v) in col.iter().enumerate() {
            dst[c * w + k] = f(*v);
        }
    }
}

/// The inverse of [`gather`]: `src` (`[len][w]`, oldest first) into
/// channels `c0..c0 + len` of ring window `win` with oldest column `head`.
#[inline]
pub(crate) fn scatter<S: Copy, D>(
    src: &[S],
    win: &mut [D],
    dim: usize,
    w: usize,
    head: usize,
    c0: usize,
    f: impl Fn(S) -> D,
) {
    let len = src.len() / w;
    for k in 0..w {
        let col = &mut win[phys(head, k, w) * dim + c0..][..len];
        for (c, v) in col.iter_mut().enumerate() {
            *v = f(src[c * w + k]);
        }
    }
}

/// [`gather`] over raw bytes of elements `e` bytes wide (2 or 4).
pub(crate) fn gather_bytes(e: usize, win: &[u8], dim: usize, w: usize, head: usize, c0: usize, dst: &mut [u8]) {
    fn go<const E: usize>(win: &[u8], dim: usize, w: usize, head: usize, c0: usize, dst: &mut [u8]) {
        let (win, _) = win.as_chunks::<E>();
        let (dst, _) = dst.as_chunks_mut::<E>();
        gather(win, dim, w, head, c0, dst, |v| v);
    }
    match e {
        2 => go::<2>(win, dim, w, head, c0, dst),
        4 => go::<4>(win, dim, w, head, c0, dst),
        _ => unreachable!("element sizes are 2 or 4"),
    }
}

/// [`scatter`] over raw bytes of elements `e` bytes wide (2 or 4), whole
/// windows (`c0 = 0`).
pub(crate) fn scatter_bytes(e: usize, src: &[u8], win: &mut [u8], dim: usize, w: usize, head: usize) {
    fn go<const E: usize>(src: &[u8], win: &mut [u8], dim: usize, w: usize, head: usize) {
        let (src, _) = src.as_chunks::<E>();
        let (win, _) = win.as_chunks_mut::<E>();
        scatter(src, win, dim, w, head, 0, |v| v);
    }
    match e {
        2 => go::<2>(src, win, dim, w, head),
        4 => go::<4>(src, win, dim, w, head),
        _ => unreachable!("element sizes are 2 or 4"),
    }
}

/// Typed [`gather`] converting to `D`.
pub(crate) fn gather_cast<S: Elem, D: Elem>(win: &[S], dim: usize, w: usize, head: usize, dst: &mut [D]) {
    gather(win, dim, w, head, 0, dst, |v: S| v.cast());
}

/// Typed [`scatter`] of a whole window converting from `S`, oldest column
/// at physical column 0.
pub(crate) fn scatter_cast<S: Elem, D: Elem>(src: &[S], win: &mut [D], dim: usize, w: usize) {
    scatter(src, win, dim, w, 0, 0, |v: S| v.cast());
}

impl Cache {
    /// How this cache stores its conv windows.
    pub fn conv_layout(&self) -> ConvLayout {
        self.conv_layout
    }

    /// Switches the conv window layout, converting every slot's windows in
    /// place (one pass over the conv storage; the logical windows, what
    /// `read_conv` returns, do not change). Switching to the layout the
    /// cache already has does nothing. Fails with `OutOfMemory`, changing
    /// nothing, if the heads table or one window's scratch cannot be
    /// allocated.
    pub fn set_conv_layout(&mut self, layout: ConvLayout) -> Result<()> {
        if layout == self.conv_layout {
            return Ok(());
        }
        let (conv_row, _) = self.slot_byte_sizes();
        let (dim, w, e) = (self.shape().conv_dim, self.shape().conv_width, self.config().conv_dtype.size());
        let n = self.num_slots();
        let mut scratch = crate::buffer::try_vec(conv_row, 0u8, "one conv window")?;
        match layout {
            ConvLayout::Ring => {
                let mut heads = Vec::new();
                heads.try_reserve_exact(self.layers.len()).map_err(|_| Error::OutOfMemory("heads table".into()))?;
                for _ in 0..self.layers.len() {
                    heads.push(crate::buffer::ZeroedVec::<u32>::new(n)?);
                }
                for layer in &mut self.layers {
                    let bytes = layer.conv.bytes_mut();
                    for s in 0..n {
                        let row = &mut bytes[s * conv_row..(s + 1) * conv_row];
                        scratch.copy_from_slice(row);
                        scatter_bytes(e, &scratch, row, dim, w, 0);
                    }
                }
                self.heads = heads;
            }
            ConvLayout::OldestFirst => {
                for (layer, heads) in self.layers.iter_mut().zip(&self.heads) {
                    let bytes = layer.conv.bytes_mut();
                    for s in 0..n {
                        let row = &mut bytes[s * conv_row..(s + 1) * conv_row];
                        scratch.copy_from_slice(row);
                        gather_bytes(e, &scratch, dim, w, heads[s] as usize, 0, row);
                    }
                }
                self.heads = Vec::new();
            }
        }
        self.conv_layout = layout;
        Ok(())
    }

    /// Per slot of `layer`, the physical column of its window's oldest
    /// input: all zero in the oldest-first layout.
    pub fn conv_heads(&self, layer: u32, out: &mut [u32]) -> Result<()> {
        self.layer(layer)?;
        if out.len() != self.num_slots() {
            return Err(Error::ShapeMismatch(format!(
                "out: len = {} elements, but the cache has {} slots",
                out.len(),
                self.num_slots()
            )));
        }
        match self.heads.get(layer as usize) {
            Some(h) => out.copy_from_slice(h),
            None => out.fill(0),
        }
        Ok(())
    }

    /// Sets slot `s`'s head to 0 in every layer (after its windows were
    /// zeroed).
    pub(crate) fn reset_heads(&mut self, s: usize) {
        for h in &mut self.heads {
            h[s] = 0;
        }
    }

    /// Bytes of channels `c0..` of slot `s`'s window in layer `l`, oldest
    /// first (the snapshot layout), into `dst` (whole channels).
    pub(crate) fn conv_bytes_out(&self, l: usize, s: usize, c0: usize, dst: &mut [u8]) {
        let (conv_row, _) = self.slot_byte_sizes();
        let row = &self.layers[l].conv.bytes()[s * conv_row..(s + 1) * conv_row];
        match self.heads.get(l) {
            None => {
                let w = self.shape().conv_width * self.config().conv_dtype.size();
                dst.copy_from_slice(&row[c0 * w..c0 * w + dst.len()]);
            }
            Some(h) => {
                let (dim, w, e) = (self.shape().conv_dim, self.shape().conv_width, self.config().conv_dtype.size());
                gather_bytes(e, row, dim, w, h[s] as usize, c0, dst);
            }
        }
    }

    /// Replaces slot `s`'s window in `layer` with `src` (oldest first, the
    /// snapshot layout); a ring window gets head 0. `heads` is the layer's
    /// heads table (`None` when oldest-first).
    pub(crate) fn conv_bytes_in(
        layer: &mut crate::cache::Layer,
        heads: Option<&mut crate::buffer::ZeroedVec<u32>>,
        s: usize,
        src: &[u8],
        (dim, w, e): (usize, usize, usize),
    ) {
        let n = src.len();
        let row = &mut layer.conv.bytes_mut()[s * n..(s + 1) * n];
        match heads {
            None => row.copy_from_slice(src),
            Some(h) => {
                scatter_bytes(e, src, row, dim, w, 0);
                h[s] = 0;
            }
        }
    }

    /// `(conv_dim, W, element bytes)` of the conv windows.
    pub(crate) fn conv_geometry(&self) -> (usize, usize, usize) {
        (self.shape().conv_dim, self.shape().conv_width, self.config().conv_dtype.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_inverts_scatter_for_every_head() {
        let (dim, w) = (5, 4);
        let src: Vec<u32> = (0..(dim * w) as u32).collect();
        for head in 0..w {
            let mut win = vec![0u32; dim * w];
            scatter(&src, &mut win, dim, w, head, 0, |v| v);
            // Logical column k of channel c is src[c * w + k].
            for c in 0..dim {
                for k in 0..w {
                    assert_eq!(win[phys(head, k, w) * dim + c], src[c * w + k]);
                }
            }
            let mut back = vec![0u32; dim * w];
            gather(&win, dim, w, head, 0, &mut back, |v| v);
            assert_eq!(back, src);
            // A channel range.
            let mut part = vec![0u32; 2 * w];
            gather(&win, dim, w, head, 2, &mut part, |v| v);
            assert_eq!(part, src[2 * w..4 * w]);
        }
    }
}
