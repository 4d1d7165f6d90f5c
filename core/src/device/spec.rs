//! Speculative decoding on the device cache, through the device's own
//! prefill kernels, so a commit is bit-identical to the device's steps.
//!
//! The host side (the staging cache) keeps the round exactly as a host
//! cache does: its runs, which slots are still live, which layers were
//! verified, and it validates every call. The device keeps the log and
//! does the work:
//!
//! - **Verify** copies the committed rows of the round's slots into
//!   scratch rows (one per run for chains, one per root-to-leaf path for
//!   trees) and runs the prefill kernel over the run's tokens there, so
//!   every token's outputs are those of steps along its path and the
//!   committed state is untouched. Tree paths gather their tokens' inputs
//!   into contiguous rows first and scatter the outputs back. The inputs a
//!   commit needs are copied into the log: the conv's `x`, and the SSM's
//!   `x`, `dt`, `B` (in the activations' dtype) with the layer's `A` and
//!   `dt_bias`.
//! - **Commit** runs the prefill kernels once more, on the committed rows,
//!   over the logged inputs of each slot's accepted path (a prefix of a
//!   chain is used where it lies; a tree path is gathered), with the
//!   outputs sent to scratch. The conv window and the SSM state depend on
//!   nothing else (`C`, `D`, `z` and the conv weights only shape outputs),
//!   so the state is the state the steps would have left.
//!
//! The log holds, per slot, layer and token, `conv_dim + H*P + H + G*N`
//! elements of at most 4 bytes (Mamba2-2.7B, 5 tokens: 8% of an f32
//! state). Work is queued on the cache's stream like the kernel calls.

use super::{DevArray, DevBuf, DeviceCache, DeviceConvArgs, DeviceSsmIo, DeviceSsmParams, Part};
use crate::config::Config;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::selection::Slots;

/// What the SSM verify of a layer recorded for its commit.
#[derive(Clone, Copy, Debug)]
struct SsmMeta {
    dtype: DType,
    softplus: bool,
    limit: Option<(f32, f32)>,
    dt_bias: bool,
}

/// Device storage of the speculative log.
#[derive(Default)]
pub(super) struct DevSpec {
    /// Token rows of the log in each layer: `num_slots * max_tokens`
    /// (token `i` of slot `s`'s run is row `s * max_tokens + i`).
    rows: usize,
    max_tokens: usize,
    /// Per layer, the log (layout: [`Fields`]).
    log: Vec<DevBuf>,
    /// Per layer, the dtype of the logged conv inputs.
    conv_meta: Vec<Option<DType>>,
    /// Per layer, what the SSM verify logged.
    ssm_meta: Vec<Option<SsmMeta>>,
    /// Zero conv weights (`[conv_dim, K]` f32) for the commit's conv.
    zero_weight: Option<DevBuf>,
    /// Scratch rows of the conv and the SSM verifies (bytes, buffer),
    /// kept for the next verify of the same size.
    scratch: [Option<(usize, DevBuf)>; 2],
}

/// Byte offsets and widths (in elements) of a layer's log.
#[derive(Clone, Copy, Debug)]
struct Fields {
    rows: usize,
    conv_dim: usize,
    hp: usize,
    heads: usize,
    gn: usize,
}

impl Fields {
    fn new(cfg: &Config, conv_dim: usize, rows: usize) -> Fields {
        Fields {
            rows,
            conv_dim,
            hp: (cfg.num_heads * cfg.head_dim) as usize,
            heads: cfg.num_heads as usize,
            gn: (cfg.n_groups * cfg.state_size) as usize,
        }
    }
    /// Elements are reserved at 4 bytes, whatever the activations' dtype.
    fn conv_x(&self) -> usize {
        0
    }
    fn x(&self) -> usize {
        self.conv_x() + self.rows * self.conv_dim * 4
    }
    fn dt(&self) -> usize {
        self.x() + self.rows * self.hp * 4
    }
    fn b(&self) -> usize {
        self.dt() + self.rows * self.heads * 4
    }
    fn a(&self) -> usize {
        self.b() + self.rows * self.gn * 4
    }
    fn dt_bias(&self) -> usize {
        self.a() + self.heads * 4
    }
    fn bytes(&self) -> Option<usize> {
        let per_row = self.conv_dim + self.hp + self.heads + self.gn;
        self.rows.checked_mul(per_row)?.checked_add(2 * self.heads)?.checked_mul(4)
    }
}

/// Sequences for one prefill launch: slot (or scratch row, -1: padding)
/// and token offsets.
#[derive(Debug, Default)]
struct Seqs {
    slots: Vec<i32>,
    cu: Vec<u64>,
}

impl Seqs {
    fn new() -> Seqs {
        Seqs { slots: Vec::new(), cu: vec![0] }
    }
    fn push(&mut self, slot: i32, tokens: usize) {
        self.slots.push(slot);
        let end = self.cu.last().copied().unwrap_or(0) + tokens as u64;
        self.cu.push(end);
    }
    fn tokens(&self) -> usize {
        self.cu.last().copied().unwrap_or(0) as usize
    }
}

/// How a verify maps the round's runs onto scratch rows.
#[derive(Debug)]
struct Layout {
    /// (scratch row, committed slot) to copy before the launch.
    init: Vec<(usize, usize)>,
    /// The launch's sequences over the scratch rows.
    seqs: Seqs,
    /// `None`: the launch reads the caller's rows in place (every live run
    /// is a chain).
    gather: Option<Paths>,
}

/// Tree paths laid out for one launch.
#[derive(Debug)]
struct Paths {
    /// The caller's token rows, gathered in launch order.
    order: Vec<usize>,
    /// For each live token (row), the gathered row whose outputs it takes.
    takes: Vec<(usize, usize)>,
}

/// The round as the device needs it (owned, so the cache can be written).
struct RoundInfo {
    /// Per row: the live slot, if any.
    live: Vec<Option<usize>>,
    cu: Vec<u64>,
    parents: Vec<i32>,
}

impl RoundInfo {
    fn total(&self) -> usize {
        self.cu.last().copied().unwrap_or(0) as usize
    }
    fn run(&self, r: usize) -> std::ops::Range<usize> {
        self.cu[r] as usize..self.cu[r + 1] as usize
    }

    fn layout(&self) -> Layout {
        let is_chain = |r: usize| self.run(r).enumerate().all(|(i, t)| self.parents[t] == i as i32 - 1);
        let chains = (0..self.live.len()).all(|r| self.live[r].is_none() || is_chain(r));
        let mut init = Vec::new();
        if chains {
            let mut seqs = Seqs::new();
            for (r, s) in self.live.iter().enumerate() {
                let row = s.map_or(-1, |s| {
                    init.push((init.len(), s));
                    init.len() as i32 - 1
                });
                seqs.push(row, self.run(r).len());
            }
            return Layout { init, seqs, gather: None };
        }
        // Trees: one scratch row per root-to-leaf path.
        let (mut seqs, mut order, mut takes) = (Seqs::new(), Vec::new(), Vec::new());
        for (r, s) in self.live.iter().enumerate() {
            let Some(s) = *s else { continue };
            let run = self.run(r);
            let mut has_child = vec![false; run.len()];
            for t in run.clone() {
                if self.parents[t] >= 0 {
                    has_child[self.parents[t] as usize] = true;
                }
            }
            let mut taken = vec![false; run.len()];
            for leaf in (0..run.len()).filter(|&i| !has_child[i]) {
                let mut path = Vec::new();
                let mut i = leaf as i32;
                while i >= 0 {
                    path.push(i as usize);
                    i = self.parents[run.start + i as usize];
                }
                path.reverse();
                for &i in &path {
                    if !taken[i] {
                        taken[i] = true;
                        takes.push((run.start + i, order.len()));
                    }
                    order.push(run.start + i);
                }
                seqs.push(init.len() as i32, path.len());
                init.push((init.len(), s));
            }
        }
        Layout { init, seqs, gather: Some(Paths { order, takes }) }
    }
}

impl DeviceCache {
    /// As [`crate::Cache::spec_reserve`]: the log in device memory (on
    /// failure the previous one is kept).
    pub fn spec_reserve(&mut self, max_tokens: u32) -> Result<()> {
        self.host.spec_check_reserve(max_tokens)?;
        let max = max_tokens as usize;
        let rows = self.num_slots() * max;
        let fields = Fields::new(&self.cfg, self.shape().conv_dim, rows);
        let mut next = DevSpec { rows, max_tokens: max, ..DevSpec::default() };
        if max > 0 {
            let bytes =
                fields.bytes().ok_or_else(|| Error::OutOfMemory("the speculative log's size overflows".into()))?;
            for _ in 0..self.cfg.num_layers {
                next.log.push(self.dev.alloc_zeroed(bytes)?);
            }
            let k = self.cfg.conv_kernel_size as usize;
            next.zero_weight = Some(self.dev.alloc_zeroed(self.shape().conv_dim * k * 4)?);
            next.conv_meta = vec![None; self.cfg.num_layers as usize];
            next.ssm_meta = vec![None; self.cfg.num_layers as usize];
        }
        self.dev.synchronize()?;
        self.host.spec_reserve_rounds(max_tokens)?;
        *self.spec = next;
        Ok(())
    }

    /// As [`crate::Cache::spec_max_tokens`].
    pub fn spec_max_tokens(&self) -> u32 {
        self.host.spec_max_tokens()
    }

    /// As [`crate::Cache::spec_begin`].
    pub fn spec_begin(&mut self, slots: Slots<'_>, cu_seqlens: &[u64], parents: Option<&[i32]>) -> Result<()> {
        self.host.spec_begin(slots, cu_seqlens, parents)
    }

    fn round_info(&self) -> Result<RoundInfo> {
        let round = self.host.round()?;
        Ok(RoundInfo {
            live: (0..round.rows.len()).map(|r| round.live_slot(r)).collect(),
            cu: round.cu.clone(),
            parents: round.parents.clone(),
        })
    }

    /// Scratch rows (`rows` rows of `part`) holding the committed state of
    /// the slots `init` names; the buffer is kept for the next verify of the
    /// same size.
    fn spec_scratch(&mut self, part: Part, layer: usize, init: &[(usize, usize)]) -> Result<DevBuf> {
        let rb = self.row_bytes(part);
        let bytes = init.len() * rb;
        let mut buf = match self.spec.scratch[part as usize].take() {
            Some((b, buf)) if b == bytes => buf,
            Some(old) => {
                // Launches queued on it may still run.
                self.dev.synchronize()?;
                drop(old);
                self.dev.alloc_zeroed(bytes)?
            }
            None => self.dev.alloc_zeroed(bytes)?,
        };
        let src = match part {
            Part::Conv => &self.conv[layer],
            Part::Ssm => &self.ssm[layer],
        };
        for &(row, s) in init {
            self.dev.copy(src, s * rb, &mut buf, row * rb, rb)?;
        }
        Ok(buf)
    }

    /// Copies the rows of every live run (`width` elements of `es` bytes
    /// per token, from the caller's array at `src`) into the log field at
    /// byte `field` of `layer`.
    fn spec_log(&self, info: &RoundInfo, layer: usize, field: usize, src: u64, width: usize, es: usize) -> Result<()> {
        let base = self.dev.address(&self.spec.log[layer]) + field as u64;
        let row = (width * es) as u64;
        for (r, s) in info.live.iter().enumerate() {
            if let Some(s) = *s {
                let run = info.run(r);
                let dst = base + (s * self.spec.max_tokens) as u64 * row;
                // SAFETY: the source rows lie in the caller's array (its
                // length was checked against the round's tokens and its
                // range against the device's allocations); the log holds
                // `max_tokens` rows per slot and the run is no longer.
                unsafe { self.dev.copy_addr(dst, src + run.start as u64 * row, run.len() * row as usize)? };
            }
        }
        Ok(())
    }

    /// Marks `layer` unverified for `part` until the verify below succeeds.
    fn spec_verified(&mut self, part: Part, layer: usize, done: bool) {
        self.host.spec_mark(layer, part == Part::Conv, done);
    }

    /// As [`crate::Cache::spec_conv`], on device arrays.
    pub fn conv_verify(&mut self, layer: u32, a: &DeviceConvArgs) -> Result<()> {
        self.one_layer(layer)?;
        let info = self.round_info()?;
        let total = info.total();
        self.check_conv(a, total)?;
        let l = layer as usize;
        self.spec_verified(Part::Conv, l, false);
        let lay = info.layout();
        let dim = self.shape().conv_dim;
        let es = a.dtype.size();
        let run = |c: &mut DeviceCache| -> Result<()> {
            c.spec_log(&info, l, Fields::new(&c.cfg, dim, c.spec.rows).conv_x(), a.x.addr, dim, es)?;
            if lay.init.is_empty() {
                // SAFETY: `out` was checked to hold `total` rows on the device.
                return unsafe { c.dev.zero_addr(a.out.addr, total * dim * es) };
            }
            let mut buf = c.spec_scratch(Part::Conv, l, &lay.init)?;
            let cfg = Config { num_slots: lay.init.len() as u32, ..c.cfg };
            let result = match &lay.gather {
                None => c.dev.conv_prefill(&cfg, &mut buf, &lay.seqs.slots, &lay.seqs.cu, a),
                Some(Paths { order, takes }) => {
                    let g = Gathered::new(c, order.len(), &[dim, dim])?;
                    let args = DeviceConvArgs { x: g.get(0), out: g.get(1), ..*a };
                    gather(c, order, args.x.addr, a.x.addr, dim * es)?;
                    c.dev.conv_prefill(&cfg, &mut buf, &lay.seqs.slots, &lay.seqs.cu, &args)?;
                    scatter(c, takes, args.out.addr, a.out.addr, total, dim * es)?;
                    c.dev.synchronize()
                }
            };
            c.spec.scratch[Part::Conv as usize] = Some((lay.init.len() * c.row_bytes(Part::Conv), buf));
            result
        };
        run(self)?;
        self.spec.conv_meta[l] = Some(a.dtype);
        self.spec_verified(Part::Conv, l, true);
        Ok(())
    }

    /// As [`crate::Cache::spec_ssm`], on device arrays.
    pub fn ssm_verify(&mut self, layer: u32, io: &DeviceSsmIo, p: &DeviceSsmParams) -> Result<()> {
        self.one_layer(layer)?;
        let info = self.round_info()?;
        let total = info.total();
        self.check_ssm(io, p, total)?;
        let l = layer as usize;
        self.spec_verified(Part::Ssm, l, false);
        let lay = info.layout();
        let f = Fields::new(&self.cfg, self.shape().conv_dim, self.spec.rows);
        let es = io.dtype.size();
        let run = |c: &mut DeviceCache| -> Result<()> {
            c.spec_log(&info, l, f.x(), io.x.addr, f.hp, es)?;
            c.spec_log(&info, l, f.dt(), io.dt.addr, f.heads, es)?;
            c.spec_log(&info, l, f.b(), io.b.addr, f.gn, es)?;
            let log = c.dev.address(&c.spec.log[l]);
            // SAFETY: A (and dt_bias when present) hold `num_heads` f32 on
            // the device (checked); the log reserves room for both.
            unsafe {
                c.dev.copy_addr(log + f.a() as u64, p.a.addr, f.heads * 4)?;
                if p.dt_bias.addr != 0 {
                    c.dev.copy_addr(log + f.dt_bias() as u64, p.dt_bias.addr, f.heads * 4)?;
                }
            }
            if lay.init.is_empty() {
                // SAFETY: `y` was checked to hold `total` rows on the device.
                return unsafe { c.dev.zero_addr(io.y.addr, total * f.hp * es) };
            }
            let mut buf = c.spec_scratch(Part::Ssm, l, &lay.init)?;
            let cfg = Config { num_slots: lay.init.len() as u32, ..c.cfg };
            let result = match &lay.gather {
                None => c.dev.ssm_prefill(&cfg, &mut buf, &lay.seqs.slots, &lay.seqs.cu, io, p),
                Some(Paths { order, takes }) => {
                    let g = Gathered::new(c, order.len(), &[f.hp, f.heads, f.gn, f.gn, f.hp, f.hp])?;
                    let z = if io.z.addr != 0 { g.get(4) } else { DevArray::default() };
                    let gio =
                        DeviceSsmIo { x: g.get(0), dt: g.get(1), b: g.get(2), c: g.get(3), z, y: g.get(5), ..*io };
                    let inputs =
                        [(gio.x, io.x, f.hp), (gio.dt, io.dt, f.heads), (gio.b, io.b, f.gn), (gio.c, io.c, f.gn)];
                    for (dst, src, w) in inputs.into_iter().chain([(gio.z, io.z, f.hp)]) {
                        if src.addr != 0 {
                            gather(c, order, dst.addr, src.addr, w * es)?;
                        }
                    }
                    c.dev.ssm_prefill(&cfg, &mut buf, &lay.seqs.slots, &lay.seqs.cu, &gio, p)?;
                    scatter(c, takes, gio.y.addr, io.y.addr, total, f.hp * es)?;
                    c.dev.synchronize()
                }
            };
            c.spec.scratch[Part::Ssm as usize] = Some((lay.init.len() * c.row_bytes(Part::Ssm), buf));
            result
        };
        run(self)?;
        self.spec.ssm_meta[l] =
            Some(SsmMeta { dtype: io.dtype, softplus: p.dt_softplus, limit: p.dt_limit, dt_bias: p.dt_bias.addr != 0 });
        self.spec_verified(Part::Ssm, l, true);
        Ok(())
    }

    /// As [`crate::Cache::spec_commit`]: the device replays each slot's
    /// accepted path from the log into its committed rows.
    pub fn spec_commit(&mut self, slots: Slots<'_>, accepted: &[u32]) -> Result<()> {
        let work = self.host.spec_commit_plan(slots, accepted)?;
        let mt = self.spec.max_tokens;
        // Prefixes of a run replay where they lie in the log; other tree
        // paths are gathered, one launch for each kind.
        let mut direct: Vec<(usize, usize)> = Vec::new(); // (slot, tokens)
        let mut gathered: Vec<(usize, &[usize])> = Vec::new();
        for (s, _, path) in &work {
            if path.is_empty() {
                continue;
            }
            if path.iter().enumerate().all(|(i, &t)| i == t) {
                direct.push((*s, path.len()));
            } else {
                gathered.push((*s, path));
            }
        }
        direct.sort_unstable();
        let mut seqs = Seqs::new();
        for &(s, k) in &direct {
            let gap = s * mt - seqs.tokens();
            if gap > 0 {
                seqs.push(-1, gap);
            }
            seqs.push(s as i32, k);
        }
        let mut tree = Seqs::new();
        let mut order = Vec::new();
        for &(s, path) in &gathered {
            tree.push(s as i32, path.len());
            order.extend(path.iter().map(|&t| s * mt + t));
        }
        if !direct.is_empty() || !gathered.is_empty() {
            self.spec_replay(&seqs, &tree, &order)?;
        }
        self.host.spec_commit_finish(&work);
        Ok(())
    }

    /// The commit's launches, every layer: `seqs` over the log's rows in
    /// place, `tree` over the log rows `order` gathered.
    fn spec_replay(&mut self, seqs: &Seqs, tree: &Seqs, order: &[usize]) -> Result<()> {
        let f = Fields::new(&self.cfg, self.shape().conv_dim, self.spec.rows);
        let widest = f.conv_dim.max(f.hp);
        let out_rows = seqs.tokens().max(tree.tokens());
        let out = self.dev.alloc_zeroed(out_rows * widest * 4)?;
        let out_addr = self.dev.address(&out);
        let gathered = if order.is_empty() {
            None
        } else {
            Some(Gathered::new(self, order.len(), &[f.conv_dim, f.hp, f.heads, f.gn])?)
        };
        let weight = self.dev.address(self.spec.zero_weight.as_ref().expect("a round implies a log"));
        let k = self.cfg.conv_kernel_size as usize;
        for l in 0..self.cfg.num_layers as usize {
            let (Some(conv_dtype), Some(meta)) = (self.spec.conv_meta[l], self.spec.ssm_meta[l]) else {
                return Err(Error::InvalidArg(format!("layer {l} was not verified in this round")));
            };
            let log = self.dev.address(&self.spec.log[l]);
            for (s, is_tree) in [(seqs, false), (tree, true)] {
                let n = s.tokens();
                if n == 0 {
                    continue;
                }
                let (ces, ses) = (conv_dtype.size(), meta.dtype.size());
                // Inputs: the log in place, or gathered from it.
                let fields =
                    [(f.conv_x(), f.conv_dim, ces), (f.x(), f.hp, ses), (f.dt(), f.heads, ses), (f.b(), f.gn, ses)];
                let mut arrays = [DevArray::default(); 4];
                for (i, (off, w, es)) in fields.into_iter().enumerate() {
                    arrays[i] = match (&gathered, is_tree) {
                        (Some(g), true) => {
                            gather(self, order, g.get(i).addr, log + off as u64, w * es)?;
                            g.get(i)
                        }
                        // The log's rows in place (their count: the launch's).
                        _ => DevArray::new(log + off as u64, n * w),
                    };
                }
                let [cx, x, dt, b] = arrays;
                let conv = DeviceConvArgs {
                    dtype: conv_dtype,
                    x: cx,
                    out: DevArray::new(out_addr, n * f.conv_dim),
                    weight: DevArray::new(weight, f.conv_dim * k),
                    bias: DevArray::default(),
                    silu: false,
                };
                self.dev.conv_prefill(&self.cfg, &mut self.conv[l], &s.slots, &s.cu, &conv)?;
                let io = DeviceSsmIo {
                    dtype: meta.dtype,
                    x,
                    dt,
                    b,
                    c: b,
                    z: DevArray::default(),
                    y: DevArray::new(out_addr, n * f.hp),
                };
                let params = DeviceSsmParams {
                    a: DevArray::new(log + f.a() as u64, f.heads),
                    d: DevArray::default(),
                    dt_bias: if meta.dt_bias {
                        DevArray::new(log + f.dt_bias() as u64, f.heads)
                    } else {
                        DevArray::default()
                    },
                    dt_softplus: meta.softplus,
                    dt_limit: meta.limit,
                };
                self.dev.ssm_prefill(&self.cfg, &mut self.ssm[l], &s.slots, &s.cu, &io, &params)?;
            }
        }
        // The scratch is freed once the queued launches are done.
        self.dev.synchronize()?;
        drop((out, gathered));
        Ok(())
    }
}

/// Contiguous device arrays a tree's tokens are gathered into, one per
/// field: `rows` rows of the field's width, at up to 4 bytes an element.
struct Gathered {
    /// Owns the arrays; freed after a synchronize.
    _buf: DevBuf,
    arrays: Vec<DevArray>,
}

impl Gathered {
    fn new(c: &DeviceCache, rows: usize, widths: &[usize]) -> Result<Gathered> {
        let bytes = widths.iter().map(|w| rows * w * 4).sum();
        let buf = c.dev.alloc_zeroed(bytes)?;
        let mut at = c.dev.address(&buf);
        let mut arrays = Vec::with_capacity(widths.len());
        for &w in widths {
            arrays.push(DevArray::new(at, rows * w));
            at += (rows * w * 4) as u64;
        }
        Ok(Gathered { _buf: buf, arrays })
    }

    fn get(&self, i: usize) -> DevArray {
        self.arrays[i]
    }
}

/// Copies rows `order` of `row`-byte rows at `src` into consecutive rows
/// at `dst`.
fn gather(c: &DeviceCache, order: &[usize], dst: u64, src: u64, row: usize) -> Result<()> {
    for (i, &t) in order.iter().enumerate() {
        // SAFETY: `src` holds every row `order` names (the caller's checked
        // array, or the log); `dst` was allocated for `order.len()` rows.
        unsafe { c.dev.copy_addr(dst + (i * row) as u64, src + (t * row) as u64, row)? };
    }
    Ok(())
}

/// The outputs of gathered rows back into the caller's array `dst`
/// (`total` rows of `row` bytes, zero for tokens outside live runs): token
/// `t` takes gathered row `g` for each `(t, g)` of `takes`.
fn scatter(c: &DeviceCache, takes: &[(usize, usize)], src: u64, dst: u64, total: usize, row: usize) -> Result<()> {
    // SAFETY: `dst` was checked to hold `total` rows on the device; `src`
    // holds the gathered rows.
    unsafe {
        c.dev.zero_addr(dst, total * row)?;
        for &(t, g) in takes {
            c.dev.copy_addr(dst + (t * row) as u64, src + (g * row) as u64, row)?;
        }
    }
    Ok(())
}
