//! The core against a plain reference model: every operation of the cache
//! replayed on a Vec-of-f64 model, over random sequences of operations with
//! padding rows, permuted slot lists, every dtype combination and invalid
//! calls that must fail and change nothing.

mod common;

use common::{Buf, Rng, round_to};
use m2c_core::{Cache, Config, DType, Error, Slots};

/// The reference: what each stored element holds, as f64, plus positions.
struct Model {
    cfg: Config,
    dim: usize,
    w: usize,
    ssm_per: usize,
    conv: Vec<Vec<f64>>,
    ssm: Vec<Vec<f64>>,
    pos: Vec<u64>,
    in_use: Vec<bool>,
}

impl Model {
    fn new(cfg: Config) -> Model {
        let dim = (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize;
        let w = cfg.conv_width as usize;
        let ssm_per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
        let (l, s) = (cfg.num_layers as usize, cfg.num_slots as usize);
        Model {
            cfg,
            dim,
            w,
            ssm_per,
            conv: vec![vec![0.0; s * dim * w]; l],
            ssm: vec![vec![0.0; s * ssm_per]; l],
            pos: vec![0; s],
            in_use: vec![false; s],
        }
    }

    fn store(&self, conv: bool, x: f32, io: DType) -> f64 {
        let st = if conv { self.cfg.conv_dtype } else { self.cfg.ssm_dtype };
        f64::from(round_to(st, round_to(io, x)))
    }

    fn update_conv(&mut self, layer: usize, rows: &[Option<usize>], x: &[f32], io: DType) {
        let (dim, w) = (self.dim, self.w);
        for (r, slot) in rows.iter().enumerate() {
            if let Some(s) = slot {
                for c in 0..dim {
                    let base = (s * dim + c) * w;
                    for k in 0..w - 1 {
                        self.conv[layer][base + k] = self.conv[layer][base + k + 1];
                    }
                    self.conv[layer][base + w - 1] = self.store(true, x[r * dim + c], io);
                }
            }
        }
    }

    fn set(&mut self, conv: bool, layer: usize, rows: &[Option<usize>], v: &[f32], io: DType) {
        let per = if conv { self.dim * self.w } else { self.ssm_per };
        for (r, slot) in rows.iter().enumerate() {
            if let Some(s) = slot {
                for i in 0..per {
                    let val = self.store(conv, v[r * per + i], io);
                    let buf = if conv { &mut self.conv[layer] } else { &mut self.ssm[layer] };
                    buf[s * per + i] = val;
                }
            }
        }
    }

    fn read(&self, conv: bool, layer: usize, rows: &[Option<usize>], io: DType) -> Vec<f32> {
        let per = if conv { self.dim * self.w } else { self.ssm_per };
        let buf = if conv { &self.conv[layer] } else { &self.ssm[layer] };
        let mut out = vec![0f32; rows.len() * per];
        for (r, slot) in rows.iter().enumerate() {
            if let Some(s) = slot {
                for i in 0..per {
                    out[r * per + i] = round_to(io, buf[s * per + i] as f32);
                }
            }
        }
        out
    }

    /// dst[i] <- src[i], all reads before any writes.
    fn copy(&mut self, pairs: &[(usize, usize)]) {
        let (cper, sper) = (self.dim * self.w, self.ssm_per);
        let old_conv = self.conv.clone();
        let old_ssm = self.ssm.clone();
        let old_pos = self.pos.clone();
        for &(s, d) in pairs {
            for l in 0..self.conv.len() {
                self.conv[l][d * cper..(d + 1) * cper].copy_from_slice(&old_conv[l][s * cper..(s + 1) * cper]);
                self.ssm[l][d * sper..(d + 1) * sper].copy_from_slice(&old_ssm[l][s * sper..(s + 1) * sper]);
            }
            self.pos[d] = old_pos[s];
        }
    }

    fn reset(&mut self, rows: &[Option<usize>]) {
        let (cper, sper) = (self.dim * self.w, self.ssm_per);
        for s in rows.iter().flatten() {
            for l in 0..self.conv.len() {
                self.conv[l][s * cper..(s + 1) * cper].fill(0.0);
                self.ssm[l][s * sper..(s + 1) * sper].fill(0.0);
            }
            self.pos[*s] = 0;
        }
    }
}

/// A random slot argument: dense rows, or a permuted list with padding.
fn random_slots(rng: &mut Rng, num_slots: usize) -> (Option<Vec<i32>>, Vec<Option<usize>>) {
    if rng.coin(0.3) {
        let n = rng.below(num_slots + 1);
        return (None, (0..n).map(Some).collect());
    }
    let mut all: Vec<usize> = (0..num_slots).collect();
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i + 1));
    }
    let take = rng.below(num_slots + 1);
    let mut list: Vec<i32> = all[..take].iter().map(|&s| s as i32).collect();
    let pads = rng.below(3);
    for _ in 0..pads {
        let at = rng.below(list.len() + 1);
        list.insert(at, -1 - rng.below(5) as i32);
    }
    let rows = list.iter().map(|&s| usize::try_from(s).ok()).collect();
    (Some(list), rows)
}

fn slots_of(list: &Option<Vec<i32>>, rows: usize) -> Slots<'_> {
    match list {
        Some(l) => Slots::List(l),
        None => Slots::Dense(rows),
    }
}

fn random_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * 4.0).collect()
}

/// Reads every layer of the cache in f32 and compares with the model.
fn check_all(cache: &Cache, model: &Model, ctx: &str) {
    let rows: Vec<Option<usize>> = (0..model.pos.len()).map(Some).collect();
    for l in 0..model.conv.len() {
        for conv in [true, false] {
            let per = if conv { model.dim * model.w } else { model.ssm_per };
            let mut out = Buf::zeros(DType::F32, rows.len() * per);
            let r = if conv {
                cache.read_conv(l as u32, Slots::Dense(rows.len()), out.slice_mut())
            } else {
                cache.read_ssm(l as u32, Slots::Dense(rows.len()), out.slice_mut())
            };
            r.unwrap();
            let want = model.read(conv, l, &rows, DType::F32);
            let got = out.to_f32();
            if let Some(i) = (0..want.len()).find(|&i| want[i].to_bits() != got[i].to_bits()) {
                panic!(
                    "{ctx}: layer {l} {} element {i}: cache {} model {}",
                    if conv { "conv" } else { "ssm" },
                    got[i],
                    want[i]
                );
            }
        }
    }
    for (s, &p) in model.pos.iter().enumerate() {
        assert_eq!(cache.position(s as i32).unwrap(), p, "{ctx}: position of slot {s}");
    }
}

fn run_random_ops(cfg: Config, seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let mut cache = Cache::new(cfg).unwrap();
    let mut model = Model::new(cfg);
    let ns = cfg.num_slots as usize;
    let nl = cfg.num_layers as usize;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let layer = rng.below(nl);
        let io = DType::ALL[rng.below(3)];
        let (list, rows) = random_slots(&mut rng, ns);
        let sl = slots_of(&list, rows.len());
        match rng.below(12) {
            0 | 1 => {
                let x = random_values(&mut rng, rows.len() * model.dim);
                cache.update_conv(layer as u32, sl, Buf::from_f32(io, &x).slice()).unwrap();
                model.update_conv(layer, &rows, &x, io);
            }
            2 => {
                let v = random_values(&mut rng, rows.len() * model.dim * model.w);
                cache.set_conv(layer as u32, sl, Buf::from_f32(io, &v).slice()).unwrap();
                model.set(true, layer, &rows, &v, io);
            }
            3 => {
                let v = random_values(&mut rng, rows.len() * model.ssm_per);
                cache.set_ssm(layer as u32, sl, Buf::from_f32(io, &v).slice()).unwrap();
                model.set(false, layer, &rows, &v, io);
            }
            4 => {
                let conv = rng.coin(0.5);
                let per = if conv { model.dim * model.w } else { model.ssm_per };
                // Pre-fill with garbage: padding rows must come back zero.
                let mut out = Buf::from_f32(io, &vec![7.0; rows.len() * per]);
                if conv {
                    cache.read_conv(layer as u32, sl, out.slice_mut()).unwrap();
                } else {
                    cache.read_ssm(layer as u32, sl, out.slice_mut()).unwrap();
                }
                let want = model.read(conv, layer, &rows, io);
                let got = out.to_f32();
                assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{ctx}: read mismatch");
            }
            5 => {
                if rng.coin(0.3) {
                    cache.reset(sl).unwrap();
                    model.reset(&rows);
                }
            }
            6 => {
                let k = rng.below(100) as u32;
                cache.advance(sl, k).unwrap();
                for s in rows.iter().flatten() {
                    model.pos[*s] += u64::from(k);
                }
            }
            7 => bad_call(&mut rng, &mut cache, &model, ns, nl),
            8 => {
                // acquire or release
                if rng.coin(0.5) {
                    match model.in_use.iter().position(|&u| !u) {
                        Some(want) => {
                            assert_eq!(cache.slot_acquire().unwrap(), want as i32, "{ctx}: lowest free slot");
                            model.reset(&[Some(want)]);
                            model.in_use[want] = true;
                        }
                        None => assert!(matches!(cache.slot_acquire(), Err(Error::NoFreeSlot(_)))),
                    }
                } else {
                    let s = rng.below(ns);
                    let r = cache.slot_release(s as i32);
                    if model.in_use[s] {
                        r.unwrap();
                        model.in_use[s] = false;
                    } else {
                        assert!(matches!(r, Err(Error::InvalidArg(_))), "{ctx}: double release");
                    }
                }
                assert_eq!(cache.slots_in_use() as usize, model.in_use.iter().filter(|&&u| u).count());
            }
            9 => {
                // copy_slots: random sources (repeats allowed), distinct
                // destinations, padding rows.
                let (dlist, drows) = random_slots(&mut rng, ns);
                let dst: Vec<i32> = dlist.unwrap_or_else(|| (0..drows.len() as i32).collect());
                let src: Vec<i32> =
                    dst.iter().map(|&d| if d < 0 && rng.coin(0.5) { -1 } else { rng.below(ns) as i32 }).collect();
                cache.copy_slots(&src, &dst).unwrap();
                let pairs: Vec<(usize, usize)> =
                    src.iter().zip(&dst).filter(|(_, &d)| d >= 0).map(|(&s, &d)| (s as usize, d as usize)).collect();
                model.copy(&pairs);
            }
            10 => {
                // A snapshot of one slot loaded into another: a copy.
                let (a, b) = (rng.below(ns), rng.below(ns));
                let mut buf = vec![0u8; cache.slot_snapshot_size()];
                assert_eq!(cache.slot_save(a as i32, &mut buf).unwrap(), buf.len());
                cache.slot_load(b as i32, &buf).unwrap();
                model.copy(&[(a, b)]);
            }
            _ => {
                // A permutation of every slot (beam-search reorder).
                let mut perm: Vec<usize> = (0..ns).collect();
                for i in (1..ns).rev() {
                    perm.swap(i, rng.below(i + 1));
                }
                let src: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
                let dst: Vec<i32> = (0..ns as i32).collect();
                cache.copy_slots(&src, &dst).unwrap();
                let pairs: Vec<(usize, usize)> = perm.iter().enumerate().map(|(d, &s)| (s, d)).collect();
                model.copy(&pairs);
            }
        }
        check_all(&cache, &model, &ctx);
    }
}

/// A call that must fail with a specific error and change nothing (the
/// caller checks the whole state right after).
fn bad_call(rng: &mut Rng, cache: &mut Cache, model: &Model, ns: usize, nl: usize) {
    let dim = model.dim;
    let x = Buf::from_f32(DType::F32, &vec![1.5; 3 * dim]);
    match rng.below(5) {
        0 => {
            // A duplicated slot (needs two slots).
            if ns >= 2 {
                let l = [1, -1, 1];
                let e = cache.update_conv(0, Slots::List(&l), x.slice()).unwrap_err();
                assert!(matches!(e, Error::InvalidArg(_)), "{e:?}");
                let e = cache.reset(Slots::List(&l)).unwrap_err();
                assert!(matches!(e, Error::InvalidArg(_)), "{e:?}");
            }
        }
        1 => {
            let l = [0, ns as i32, -1];
            let e = cache.update_conv(0, Slots::List(&l), x.slice()).unwrap_err();
            assert!(matches!(e, Error::OutOfRange(_)), "{e:?}");
            let e = cache.advance(Slots::List(&l), 1).unwrap_err();
            assert!(matches!(e, Error::OutOfRange(_)), "{e:?}");
        }
        2 => {
            let e = cache.update_conv(nl as u32, Slots::Dense(1), x.sub_slice(dim)).unwrap_err();
            assert!(matches!(e, Error::OutOfRange(_)), "{e:?}");
        }
        3 => {
            // One element short of two rows.
            let short = Buf::from_f32(DType::BF16, &vec![1.0; 2 * model.ssm_per - 1]);
            if ns >= 2 {
                let e = cache.set_ssm(0, Slots::Dense(2), short.slice()).unwrap_err();
                assert!(matches!(e, Error::ShapeMismatch(_)), "{e:?}");
            }
        }
        _ => {
            let e = cache.reset(Slots::Dense(ns + 1)).unwrap_err();
            assert!(matches!(e, Error::OutOfRange(_)), "{e:?}");
        }
    }
}

trait SubSlice {
    fn sub_slice(&self, n: usize) -> m2c_core::Slice<'_>;
}
impl SubSlice for Buf {
    fn sub_slice(&self, n: usize) -> m2c_core::Slice<'_> {
        self.slice().sub(0..n)
    }
}

fn small(conv_dtype: DType, ssm_dtype: DType, conv_width: u32, num_slots: u32) -> Config {
    Config {
        num_layers: 3,
        num_slots,
        intermediate_size: 8,
        num_heads: 4,
        head_dim: 2,
        state_size: 3,
        n_groups: 2,
        conv_kernel_size: 4,
        conv_width,
        conv_dtype,
        ssm_dtype,
        ..Config::default()
    }
}

#[test]
fn random_operations_match_the_reference_for_every_storage_dtype_and_width() {
    let mut seed = 1;
    for conv_dtype in DType::ALL {
        for ssm_dtype in DType::ALL {
            for width in [4, 3] {
                run_random_ops(small(conv_dtype, ssm_dtype, width, 5), seed, 150);
                seed += 1;
            }
        }
    }
}

#[test]
fn random_operations_on_many_slots_use_the_bitmap_duplicate_check() {
    // More than 64 rows per call switches duplicate detection to a bitmap.
    run_random_ops(small(DType::BF16, DType::F32, 4, 90), 99, 60);
}

#[test]
fn random_operations_large_enough_to_run_on_the_thread_pool() {
    // 4 * 64 * 128 f32 = 128 KiB of ssm per slot: calls over 4+ slots pass
    // the parallel threshold.
    let cfg = Config {
        num_layers: 2,
        num_slots: 8,
        intermediate_size: 256,
        num_heads: 4,
        head_dim: 64,
        state_size: 128,
        n_groups: 1,
        conv_kernel_size: 4,
        conv_width: 4,
        conv_dtype: DType::F32,
        ssm_dtype: DType::F32,
        ..Config::default()
    };
    run_random_ops(cfg, 7, 25);
    run_random_ops(Config { conv_width: 3, ssm_dtype: DType::BF16, conv_kernel_size: 4, ..cfg }, 8, 25);
}

#[test]
fn kernel_widths_other_than_the_specialised_ones_shift_correctly() {
    for k in [2u32, 3, 5, 7] {
        for w in [k, k - 1] {
            run_random_ops(
                Config { conv_kernel_size: k, conv_width: w, ..small(DType::F32, DType::F32, 4, 3) },
                u64::from(k * 10 + w),
                40,
            );
        }
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
}

#[test]
fn per_slot_tables_are_not_touched_at_creation_either() {
    // 2^27 slots of a tiny shape: 2 GiB of state plus 1.1 GiB of per-slot
    // tables (positions, acquired flags), none of it touched.
    let cfg = Config {
        num_layers: 1,
        num_slots: 1 << 27,
        intermediate_size: 2,
        num_heads: 1,
        head_dim: 2,
        state_size: 1,
        n_groups: 1,
        conv_kernel_size: 2,
        conv_width: 1,
        ..Config::default()
    };
    let cache = Cache::new(cfg).unwrap();
    assert!(rss_kb() < 1_000_000, "creation touched per-slot memory: RSS {} kB", rss_kb());
    assert_eq!(cache.position((1 << 27) - 1).unwrap(), 0);
    // A duplicate check over a long list sorts the list, not the slots.
    let list: Vec<i32> = (0..100).map(|i| i * 1_000_000).collect();
    let x = vec![0f32; 100 * 4];
    let mut cache = cache;
    cache.update_conv(0, Slots::List(&list), m2c_core::Slice::F32(&x)).unwrap();
}

#[test]
fn a_cpu_cache_has_only_device_index_zero() {
    let e = Cache::new(Config { device_index: 1, ..Config::default() }).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("device_index")), "{e:?}");
}

#[test]
fn creating_a_cache_allocates_lazily_and_reports_bytes() {
    let cfg = Config { num_slots: 64, ..Config::mamba2_2_7b() };
    let shape = cfg.shape().unwrap();
    // 64 slots of Mamba2-2.7B: ~10.8 GB of ssm state in f32.
    assert!(shape.total_bytes > 10_000_000_000);
    let cache = Cache::new(cfg).unwrap();
    let rss = rss_kb();
    assert!(rss < 2_000_000, "creating the cache touched its pages: RSS {rss} kB");
    drop(cache);
}
