//! Test support (the core's tests, and other crates' tests through the
//! `testing` feature): a "device" in host memory, so the device cache runs end to
//! end on machines without a GPU. Its kernels copy the layer into a
//! one-layer host cache and run the host kernels there on the activations
//! the device addresses point to (host addresses here). Transfers can be
//! made to fail after a given number, to test error paths.

use super::{
    DevArray, DevBuf, DeviceCache, DeviceConvArgs, DeviceKernels, DeviceMem, DeviceSsmIo, DeviceSsmParams, buf_mut,
    buf_ref,
};
use crate::cache::Cache;
use crate::config::{Config, Device};
use crate::dtype::{DType, Slice, SliceMut};
use crate::error::{Error, Result};
use crate::kernels::{ConvParams, SsmInputs, SsmParams};
use crate::selection::Slots;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// The emulated device.
pub struct Emu {
    /// Transfers left before every transfer fails (negative: never).
    pub fail_after: AtomicI64,
    /// Transfers done.
    pub transfers: AtomicUsize,
    /// The stream `set_stream` last chose (0: default).
    pub stream: u64,
    /// `synchronize` calls.
    pub syncs: Arc<AtomicUsize>,
}

impl Default for Emu {
    fn default() -> Self {
        Emu { fail_after: AtomicI64::new(-1), transfers: AtomicUsize::new(0), stream: 0, syncs: Arc::default() }
    }
}

/// One emulated allocation.
struct EmuBuf(Vec<u8>);

impl Emu {
    /// The emulated device behind `cache` (`None` if it runs on another).
    pub fn of(cache: &DeviceCache) -> Option<&Emu> {
        cache.device().as_any().downcast_ref::<Emu>()
    }
}

impl Emu {
    fn transfer(&self) -> Result<()> {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        match self.fail_after.load(Ordering::Relaxed) {
            0 => Err(Error::Unsupported("emulated device: transfer failed".into())),
            n if n > 0 => {
                self.fail_after.store(n - 1, Ordering::Relaxed);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl DeviceMem for Emu {
    fn alloc_zeroed(&self, bytes: usize) -> Result<DevBuf> {
        Ok(Box::new(EmuBuf(crate::buffer::try_vec(bytes, 0u8, "emulated device buffer")?)))
    }
    fn upload(&self, dst: &mut DevBuf, offset: usize, src: &[u8]) -> Result<()> {
        let dst = buf_mut::<EmuBuf>(dst)?;
        self.transfer()?;
        dst.0[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &DevBuf, offset: usize, dst: &mut [u8]) -> Result<()> {
        let src = buf_ref::<EmuBuf>(src)?;
        self.transfer()?;
        dst.copy_from_slice(&src.0[offset..offset + dst.len()]);
        Ok(())
    }
    fn zero(&self, dst: &mut DevBuf, offset: usize, bytes: usize) -> Result<()> {
        let dst = buf_mut::<EmuBuf>(dst)?;
        self.transfer()?;
        dst.0[offset..offset + bytes].fill(0);
        Ok(())
    }
    fn address(&self, buf: &DevBuf) -> u64 {
        buf_ref::<EmuBuf>(buf).map_or(0, |b| b.0.as_ptr() as u64)
    }
    fn copy(&self, src: &DevBuf, src_off: usize, dst: &mut DevBuf, dst_off: usize, bytes: usize) -> Result<()> {
        let (src, dst) = (buf_ref::<EmuBuf>(src)?, buf_mut::<EmuBuf>(dst)?);
        self.transfer()?;
        dst.0[dst_off..dst_off + bytes].copy_from_slice(&src.0[src_off..src_off + bytes]);
        Ok(())
    }
    fn copy_within(&self, buf: &mut DevBuf, src_off: usize, dst_off: usize, bytes: usize) -> Result<()> {
        let buf = buf_mut::<EmuBuf>(buf)?;
        self.transfer()?;
        assert!(src_off + bytes <= dst_off || dst_off + bytes <= src_off, "overlapping device copy");
        buf.0.copy_within(src_off..src_off + bytes, dst_off);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    unsafe fn copy_addr(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.transfer()?;
        // SAFETY: the caller's promise (host addresses stand in for device
        // ones here).
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }
    unsafe fn zero_addr(&self, dst: u64, bytes: usize) -> Result<()> {
        self.transfer()?;
        // SAFETY: as for `copy_addr`.
        unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        Ok(())
    }
}

/// The slice of `len` elements of `dtype` at host address `addr`.
///
/// # Safety
/// `addr` must point to `len` valid, suitably aligned elements that live
/// as long as `'a` and are not written through another path meanwhile.
unsafe fn at<'a>(dtype: DType, addr: u64, len: usize) -> Slice<'a> {
    // SAFETY: the caller's promise.
    unsafe {
        match dtype {
            DType::F32 => Slice::F32(std::slice::from_raw_parts(addr as *const _, len)),
            DType::BF16 => Slice::BF16(std::slice::from_raw_parts(addr as *const _, len)),
            DType::F16 => Slice::F16(std::slice::from_raw_parts(addr as *const _, len)),
        }
    }
}

/// As `at`, writable.
///
/// # Safety
/// As for `at`, and no other reference to the elements may exist.
unsafe fn at_mut<'a>(dtype: DType, addr: u64, len: usize) -> SliceMut<'a> {
    // SAFETY: the caller's promise.
    unsafe {
        match dtype {
            DType::F32 => SliceMut::F32(std::slice::from_raw_parts_mut(addr as *mut _, len)),
            DType::BF16 => SliceMut::BF16(std::slice::from_raw_parts_mut(addr as *mut _, len)),
            DType::F16 => SliceMut::F16(std::slice::from_raw_parts_mut(addr as *mut _, len)),
        }
    }
}

fn f32s<'a>(a: DevArray) -> Option<&'a [f32]> {
    // SAFETY: test code passes addresses of live f32 arrays of `len`.
    (a.addr != 0).then(|| unsafe { std::slice::from_raw_parts(a.addr as *const f32, a.len) })
}

fn one_layer(cfg: &Config) -> Result<Cache> {
    Cache::new(Config { num_layers: 1, device: Device::Cpu, device_index: 0, ..*cfg })
}

impl DeviceKernels for Emu {
    fn check_array(&self, what: &str, addr: u64, bytes: usize) -> Result<()> {
        // Host memory stands in for device memory: refuse only what no
        // allocation can be (the tests pass live host arrays).
        if addr.checked_add(bytes as u64).is_none() || addr < 4096 {
            return Err(Error::InvalidArg(format!("{what} ({addr:#x}, {bytes} bytes) is not device memory")));
        }
        Ok(())
    }

    fn ssm_step(
        &self,
        cfg: &Config,
        state: &mut DevBuf,
        slots: &[i32],
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()> {
        self.ssm_run(cfg, state, slots, None, io, p)
    }

    fn ssm_prefill(
        &self,
        cfg: &Config,
        state: &mut DevBuf,
        slots: &[i32],
        cu: &[u64],
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()> {
        self.ssm_run(cfg, state, slots, Some(cu), io, p)
    }

    fn conv_step(&self, cfg: &Config, win: &mut DevBuf, slots: &[i32], a: &DeviceConvArgs) -> Result<()> {
        self.conv_run(cfg, win, slots, None, a)
    }

    fn conv_prefill(
        &self,
        cfg: &Config,
        win: &mut DevBuf,
        slots: &[i32],
        cu: &[u64],
        a: &DeviceConvArgs,
    ) -> Result<()> {
        self.conv_run(cfg, win, slots, Some(cu), a)
    }

    fn set_stream(&mut self, stream: u64) -> Result<()> {
        self.synchronize()?;
        self.stream = stream;
        Ok(())
    }
}

impl Emu {
    /// The host kernels on a one-layer host cache holding `state`: a step,
    /// or a prefill over `cu`.
    fn ssm_run(
        &self,
        cfg: &Config,
        state: &mut DevBuf,
        slots: &[i32],
        cu: Option<&[u64]>,
        io: &DeviceSsmIo,
        p: &DeviceSsmParams,
    ) -> Result<()> {
        let state = buf_mut::<EmuBuf>(state)?;
        let mut c = one_layer(cfg)?;
        c.layers[0].ssm.bytes_mut().copy_from_slice(&state.0);
        // SAFETY: the tests pass live host arrays of the declared lengths
        // (checked against the shape by the device cache).
        let (inp, y) = unsafe {
            (
                SsmInputs {
                    x: at(io.dtype, io.x.addr, io.x.len),
                    dt: at(io.dtype, io.dt.addr, io.dt.len),
                    b: at(io.dtype, io.b.addr, io.b.len),
                    c: at(io.dtype, io.c.addr, io.c.len),
                    z: (io.z.addr != 0).then(|| at(io.dtype, io.z.addr, io.z.len)),
                },
                at_mut(io.dtype, io.y.addr, io.y.len),
            )
        };
        let params = SsmParams {
            a: f32s(p.a).expect("A"),
            d: f32s(p.d),
            dt_bias: f32s(p.dt_bias),
            dt_softplus: p.dt_softplus,
            dt_limit: p.dt_limit,
        };
        match cu {
            None => c.ssm_step(0, Slots::List(slots), &inp, y, &params)?,
            Some(cu) => c.ssm_prefill(0, Slots::List(slots), cu, &inp, y, &params)?,
        }
        state.0.copy_from_slice(c.layers[0].ssm.bytes());
        Ok(())
    }

    fn conv_run(
        &self,
        cfg: &Config,
        win: &mut DevBuf,
        slots: &[i32],
        cu: Option<&[u64]>,
        a: &DeviceConvArgs,
    ) -> Result<()> {
        let win = buf_mut::<EmuBuf>(win)?;
        let mut c = one_layer(cfg)?;
        c.layers[0].conv.bytes_mut().copy_from_slice(&win.0);
        // SAFETY: as above.
        let (x, out) = unsafe { (at(a.dtype, a.x.addr, a.x.len), at_mut(a.dtype, a.out.addr, a.out.len)) };
        let p = ConvParams { weight: f32s(a.weight).expect("weight"), bias: f32s(a.bias), silu: a.silu };
        match cu {
            None => c.conv_step(0, Slots::List(slots), x, out, &p)?,
            Some(cu) => c.conv_prefill(0, Slots::List(slots), cu, x, out, &p)?,
        }
        win.0.copy_from_slice(c.layers[0].conv.bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::{DevArray, Emu};
    use crate::error::Error;
    use crate::kernels::{ConvParams, SsmInputs, SsmParams};
    use std::sync::atomic::Ordering;

    use m2c_testkit::Rng;

    /// `n` values in [-1, 1) on a 1/1000 grid.
    fn f32s(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| (rng.next_u64() % 2000) as f32 / 1000.0 - 1.0).collect()
    }

    /// A slot list of `rows` distinct slots, some rows padding.
    fn slots(rng: &mut Rng, num_slots: usize) -> Vec<i32> {
        let mut all: Vec<i32> = (0..num_slots as i32).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i + 1));
        }
        let rows = 1 + rng.below(num_slots);
        all.truncate(rows);
        if rows > 1 && rng.below(3) == 0 {
            all[0] = -1;
        }
        all
    }

    fn arr(v: &[f32]) -> DevArray {
        DevArray::new(v.as_ptr() as u64, v.len())
    }

    fn arr_mut(v: &mut [f32]) -> DevArray {
        DevArray::new(v.as_mut_ptr() as u64, v.len())
    }

    fn kind(r: &crate::error::Result<impl std::fmt::Debug>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("{:?}", std::mem::discriminant(e)),
        }
    }

    /// Activations in f32 or bf16, as host slices and device arrays.
    enum Act {
        F32(Vec<f32>),
        BF16(Vec<half::bf16>),
    }

    impl Act {
        fn new(dtype: DType, v: Vec<f32>) -> Act {
            match dtype {
                DType::BF16 => Act::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
                _ => Act::F32(v),
            }
        }
        fn slice(&self) -> Slice<'_> {
            match self {
                Act::F32(v) => Slice::F32(v),
                Act::BF16(v) => Slice::BF16(v),
            }
        }
        fn slice_mut(&mut self) -> SliceMut<'_> {
            match self {
                Act::F32(v) => SliceMut::F32(v),
                Act::BF16(v) => SliceMut::BF16(v),
            }
        }
        fn dev(&self) -> DevArray {
            match self {
                Act::F32(v) => arr(v),
                Act::BF16(v) => DevArray::new(v.as_ptr() as u64, v.len()),
            }
        }
        fn bits(&self) -> Vec<u32> {
            match self {
                Act::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
                Act::BF16(v) => v.iter().map(|x| u32::from(x.to_bits())).collect(),
            }
        }
    }

    /// Every state byte of both caches, read through their read calls.
    fn state(host: &mut Cache, dev: &mut DeviceCache) -> (Vec<f32>, Vec<f32>) {
        let cfg = *host.config();
        let (n, shape) = (cfg.num_slots as usize, *host.shape());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for l in 0..cfg.num_layers {
            let mut c1 = vec![0f32; n * shape.conv_slot_elems];
            let mut c2 = c1.clone();
            host.read_conv(l, Slots::Dense(n), SliceMut::F32(&mut c1)).unwrap();
            dev.read_conv(l, Slots::Dense(n), SliceMut::F32(&mut c2)).unwrap();
            let mut s1 = vec![0f32; n * shape.ssm_slot_elems];
            let mut s2 = s1.clone();
            host.read_ssm(l, Slots::Dense(n), SliceMut::F32(&mut s1)).unwrap();
            dev.read_ssm(l, Slots::Dense(n), SliceMut::F32(&mut s2)).unwrap();
            a.extend(c1.into_iter().chain(s1));
            b.extend(c2.into_iter().chain(s2));
        }
        (a, b)
    }

    fn same(host: &mut Cache, dev: &mut DeviceCache, ctx: &str) {
        let (a, b) = state(host, dev);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{ctx}: device state differs");
        for s in 0..host.num_slots() as i32 {
            assert_eq!(host.position(s).unwrap(), dev.position(s).unwrap(), "{ctx}: position {s}");
        }
    }

    fn run(cfg: Config, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut host = Cache::new(cfg).unwrap();
        let mut dev = DeviceCache::new(Config { device: Device::Cuda, ..cfg }, Box::new(Emu::default())).unwrap();
        let (n, shape) = (cfg.num_slots as usize, *host.shape());
        let (h, hd, ns, g) =
            (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
        let dim = shape.conv_dim;
        let k = cfg.conv_kernel_size as usize;
        let dir = std::env::temp_dir().join(format!("m2c-device-test-{}-{seed}", std::process::id()));
        host.spec_reserve(4).unwrap();
        dev.spec_reserve(4).unwrap();
        // Token rows of the last round begun (what its verifies pass).
        let mut round_tokens = 0usize;
        let mut commits = 0;
        let mut round_slots: Vec<i32> = Vec::new();
        for step in 0..400 {
            let layer = rng.below(cfg.num_layers as usize + 1) as u32; // sometimes out of range
            let sl = slots(&mut rng, n);
            let rows = sl.len();
            let ctx = format!("seed {seed} step {step}");
            match rng.below(19) {
                13 => {
                    // A round: chains or trees, padding rows, sometimes a
                    // run too long or a parent pointing forward.
                    if rng.below(8) == 0 {
                        let m = if rng.below(5) == 0 { 0 } else { 4 + rng.below(2) as u32 };
                        assert_eq!(kind(&host.spec_reserve(m)), kind(&dev.spec_reserve(m)), "{ctx} spec_reserve");
                    }
                    if let Some(t) = begin(&mut host, &mut dev, &mut rng, &sl, &ctx) {
                        (round_tokens, round_slots) = (t, sl.clone());
                    }
                }
                14 => {
                    let t = round_tokens + usize::from(rng.below(20) == 0);
                    verify_conv(&mut host, &mut dev, &mut rng, layer, t, &ctx);
                }
                15 => {
                    let t = round_tokens + usize::from(rng.below(20) == 0);
                    verify_ssm(&mut host, &mut dev, &mut rng, layer, t, &ctx);
                }
                16..=18 => {
                    if rng.below(3) > 0 {
                        // A whole round, so that commits go through.
                        if rng.below(3) > 0 {
                            if let Some(t) = begin(&mut host, &mut dev, &mut rng, &sl, &ctx) {
                                (round_tokens, round_slots) = (t, sl.clone());
                            }
                        }
                        for l in 0..cfg.num_layers {
                            verify_conv(&mut host, &mut dev, &mut rng, l, round_tokens, &ctx);
                            verify_ssm(&mut host, &mut dev, &mut rng, l, round_tokens, &ctx);
                        }
                    }
                    // Mostly the round's slots (some skipped), sometimes others.
                    let sl = if rng.below(4) == 0 {
                        sl
                    } else {
                        round_slots.iter().map(|&s| if rng.below(4) == 0 { -1 } else { s }).collect()
                    };
                    let acc: Vec<u32> =
                        sl.iter().map(|_| if rng.below(10) == 0 { 6 } else { rng.below(3) as u32 }).collect();
                    let (a, b) = (host.spec_commit(Slots::List(&sl), &acc), dev.spec_commit(Slots::List(&sl), &acc));
                    assert_eq!(kind(&a), kind(&b), "{ctx} spec_commit {sl:?} {acc:?}: {a:?} {b:?}");
                    if a.is_ok() && acc.iter().zip(&sl).any(|(&k, &s)| k > 0 && s >= 0) {
                        commits += 1;
                    }
                }
                0 => {
                    let extra = rng.below(2); // sometimes a wrong length
                    let x = f32s(&mut rng, rows * dim + extra);
                    let (a, b) = (
                        host.update_conv(layer, Slots::List(&sl), Slice::F32(&x)),
                        dev.update_conv(layer, Slots::List(&sl), Slice::F32(&x)),
                    );
                    assert_eq!(kind(&a), kind(&b), "{ctx} update_conv");
                }
                1 => {
                    let w = f32s(&mut rng, rows * shape.conv_slot_elems);
                    let (a, b) = (
                        host.set_conv(layer, Slots::List(&sl), Slice::F32(&w)),
                        dev.set_conv(layer, Slots::List(&sl), Slice::F32(&w)),
                    );
                    assert_eq!(kind(&a), kind(&b), "{ctx} set_conv");
                }
                2 => {
                    let st = f32s(&mut rng, rows * shape.ssm_slot_elems);
                    let (a, b) = (
                        host.set_ssm(layer, Slots::List(&sl), Slice::F32(&st)),
                        dev.set_ssm(layer, Slots::List(&sl), Slice::F32(&st)),
                    );
                    assert_eq!(kind(&a), kind(&b), "{ctx} set_ssm");
                }
                3 => {
                    let (a, b) = (host.reset(Slots::List(&sl)), dev.reset(Slots::List(&sl)));
                    assert_eq!(kind(&a), kind(&b), "{ctx} reset");
                    let t = rng.below(5) as u32;
                    assert_eq!(kind(&host.advance(Slots::List(&sl), t)), kind(&dev.advance(Slots::List(&sl), t)));
                }
                4 => {
                    // A permutation with overlap, or a bad pair list.
                    let src = slots(&mut rng, n);
                    let mut dst = src.clone();
                    dst.rotate_left(1);
                    if rng.below(4) == 0 {
                        dst.pop();
                    }
                    let (a, b) = (host.copy_slots(&src, &dst), dev.copy_slots(&src, &dst));
                    assert_eq!(kind(&a), kind(&b), "{ctx} copy_slots {src:?} -> {dst:?}");
                }
                5 => {
                    let s = rng.below(n + 1) as i32;
                    let mut b1 = vec![0u8; host.slot_snapshot_size()];
                    let mut b2 = b1.clone();
                    let (a, b) = (host.slot_save(s, &mut b1), dev.slot_save(s, &mut b2));
                    assert_eq!(kind(&a), kind(&b), "{ctx} slot_save");
                    assert!(b1 == b2, "{ctx}: snapshots differ");
                    if a.is_ok() {
                        let t = rng.below(n) as i32;
                        if rng.below(3) == 0 {
                            b1[40] ^= 1; // corrupt: both must refuse
                        }
                        let (a, b) = (host.slot_load(t, &b1), dev.slot_load(t, &b1));
                        assert_eq!(kind(&a), kind(&b), "{ctx} slot_load");
                    }
                }
                6 => {
                    std::fs::create_dir_all(&dir).unwrap();
                    let (p1, p2) = (dir.join("host.m2c"), dir.join("dev.m2c"));
                    host.save_file(&p1).unwrap();
                    dev.save_file(&p2).unwrap();
                    let (f1, f2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
                    let first = f1.iter().zip(&f2).position(|(a, b)| a != b);
                    assert!(f1 == f2, "{ctx}: files differ (lengths {} {}, first at {first:?})", f1.len(), f2.len());
                    let s = rng.below(n) as i32;
                    host.reset(Slots::List(&[s])).unwrap();
                    dev.reset(Slots::List(&[s])).unwrap();
                    if rng.below(3) == 0 {
                        // A damaged file: both refuse it and change nothing.
                        let mut f = f1.clone();
                        let at = rng.below(f.len());
                        f[at] ^= 0x10;
                        std::fs::write(&p1, &f).unwrap();
                        assert!(
                            host.load_file(&p1).is_err() && dev.load_file(&p1).is_err(),
                            "{ctx}: damaged file loaded"
                        );
                    } else {
                        host.load_file(&p1).unwrap();
                        dev.load_file(&p1).unwrap();
                    }
                }
                7 => {
                    let x = f32s(&mut rng, rows * dim);
                    let w = f32s(&mut rng, dim * k);
                    let bias = f32s(&mut rng, dim);
                    let silu = rng.below(2) == 0;
                    let mut o1 = vec![7f32; rows * dim];
                    let mut o2 = vec![7f32; rows * dim];
                    let p = ConvParams { weight: &w, bias: Some(&bias), silu };
                    let a = host.conv_step(layer, Slots::List(&sl), Slice::F32(&x), SliceMut::F32(&mut o1), &p);
                    let args = DeviceConvArgs {
                        dtype: DType::F32,
                        x: arr(&x),
                        out: arr_mut(&mut o2),
                        weight: arr(&w),
                        bias: arr(&bias),
                        silu,
                    };
                    let b = dev.conv_step(layer, Slots::List(&sl), &args);
                    assert_eq!(kind(&a), kind(&b), "{ctx} conv_step");
                    assert!(o1.iter().zip(&o2).all(|(p, q)| p.to_bits() == q.to_bits()), "{ctx}: conv outputs differ");
                }
                8 | 9 => {
                    let x = f32s(&mut rng, rows * h * hd);
                    let dt = f32s(&mut rng, rows * h);
                    let b = f32s(&mut rng, rows * g * ns);
                    let c = f32s(&mut rng, rows * g * ns);
                    let z = f32s(&mut rng, rows * h * hd);
                    let a: Vec<f32> = (0..h).map(|i| -0.5 - i as f32 * 0.25).collect();
                    let mut y1 = vec![7f32; rows * h * hd];
                    let mut y2 = vec![7f32; rows * h * hd];
                    let inp = SsmInputs {
                        x: Slice::F32(&x),
                        dt: Slice::F32(&dt),
                        b: Slice::F32(&b),
                        c: Slice::F32(&c),
                        z: Some(Slice::F32(&z)),
                    };
                    let p = SsmParams { a: &a, d: Some(&a), dt_bias: None, dt_softplus: true, dt_limit: None };
                    let r1 = host.ssm_step(layer, Slots::List(&sl), &inp, SliceMut::F32(&mut y1), &p);
                    let io = DeviceSsmIo {
                        dtype: DType::F32,
                        x: arr(&x),
                        dt: arr(&dt),
                        b: arr(&b),
                        c: arr(&c),
                        z: arr(&z),
                        y: arr_mut(&mut y2),
                    };
                    let dp = DeviceSsmParams {
                        a: arr(&a),
                        d: arr(&a),
                        dt_bias: DevArray::default(),
                        dt_softplus: true,
                        dt_limit: None,
                    };
                    let r2 = dev.ssm_step(layer, Slots::List(&sl), &io, &dp);
                    assert_eq!(kind(&r1), kind(&r2), "{ctx} ssm_step");
                    assert!(y1.iter().zip(&y2).all(|(p, q)| p.to_bits() == q.to_bits()), "{ctx}: ssm outputs differ");
                }
                10 => {
                    // Prefill: sequences of 0..3 tokens per row.
                    let mut cu = vec![0u64];
                    for _ in 0..rows {
                        cu.push(cu.last().unwrap() + rng.below(4) as u64);
                    }
                    let t = *cu.last().unwrap() as usize;
                    let x = f32s(&mut rng, t * dim);
                    let w = f32s(&mut rng, dim * k);
                    let mut o1 = vec![7f32; t * dim];
                    let mut o2 = vec![7f32; t * dim];
                    let p = ConvParams { weight: &w, bias: None, silu: true };
                    let a = host.conv_prefill(layer, Slots::List(&sl), &cu, Slice::F32(&x), SliceMut::F32(&mut o1), &p);
                    let args = DeviceConvArgs {
                        dtype: DType::F32,
                        x: arr(&x),
                        out: arr_mut(&mut o2),
                        weight: arr(&w),
                        bias: DevArray::default(),
                        silu: true,
                    };
                    let b = dev.conv_prefill(layer, Slots::List(&sl), &cu, &args);
                    assert_eq!(kind(&a), kind(&b), "{ctx} conv_prefill");
                    assert!(
                        o1.iter().zip(&o2).all(|(p, q)| p.to_bits() == q.to_bits()),
                        "{ctx}: conv prefill outputs differ"
                    );
                    let (xs, dts, bs, cs) = (
                        f32s(&mut rng, t * h * hd),
                        f32s(&mut rng, t * h),
                        f32s(&mut rng, t * g * ns),
                        f32s(&mut rng, t * g * ns),
                    );
                    let a: Vec<f32> = (0..h).map(|i| -1.0 - i as f32).collect();
                    let mut y1 = vec![7f32; t * h * hd];
                    let mut y2 = vec![7f32; t * h * hd];
                    let inp = SsmInputs {
                        x: Slice::F32(&xs),
                        dt: Slice::F32(&dts),
                        b: Slice::F32(&bs),
                        c: Slice::F32(&cs),
                        z: None,
                    };
                    let p =
                        SsmParams { a: &a, d: None, dt_bias: Some(&a), dt_softplus: false, dt_limit: Some((0.0, 0.5)) };
                    let r1 = host.ssm_prefill(layer, Slots::List(&sl), &cu, &inp, SliceMut::F32(&mut y1), &p);
                    let io = DeviceSsmIo {
                        dtype: DType::F32,
                        x: arr(&xs),
                        dt: arr(&dts),
                        b: arr(&bs),
                        c: arr(&cs),
                        z: DevArray::default(),
                        y: arr_mut(&mut y2),
                    };
                    let dp = DeviceSsmParams {
                        a: arr(&a),
                        d: DevArray::default(),
                        dt_bias: arr(&a),
                        dt_softplus: false,
                        dt_limit: Some((0.0, 0.5)),
                    };
                    let r2 = dev.ssm_prefill(layer, Slots::List(&sl), &cu, &io, &dp);
                    assert_eq!(kind(&r1), kind(&r2), "{ctx} ssm_prefill");
                    assert!(
                        y1.iter().zip(&y2).all(|(p, q)| p.to_bits() == q.to_bits()),
                        "{ctx}: ssm prefill outputs differ"
                    );
                }
                11 => {
                    let s = rng.below(n + 1) as i32;
                    let (a, b) = (host.count_nonfinite(s), dev.count_nonfinite(s));
                    assert_eq!(kind(&a), kind(&b), "{ctx} nonfinite");
                    if let (Ok(a), Ok(b)) = (a, b) {
                        assert_eq!(a, b);
                    }
                }
                _ => {
                    let (a, b) = (host.slot_acquire(), dev.slot_acquire());
                    assert_eq!(kind(&a), kind(&b));
                    if let (Ok(a), Ok(b)) = (a, b) {
                        assert_eq!(a, b);
                        if rng.below(2) == 0 {
                            host.slot_release(a).unwrap();
                            dev.slot_release(b).unwrap();
                        }
                    }
                    assert_eq!(host.slots_in_use(), dev.slots_in_use());
                }
            }
            same(&mut host, &mut dev, &ctx);
        }
        same(&mut host, &mut dev, "end");
        assert!(commits >= 5, "seed {seed}: only {commits} speculative commits moved a state");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A round begun on both caches with runs for the rows `sl`: chains or
    /// trees, padding rows, sometimes a run too long or a parent pointing
    /// forward. Its token rows, if it began.
    fn begin(host: &mut Cache, dev: &mut DeviceCache, rng: &mut Rng, sl: &[i32], ctx: &str) -> Option<usize> {
        let rows = sl.len();
        let bad = rng.below(10) == 0;
        let mut cu = vec![0u64];
        for &s in sl {
            let len = if s < 0 { rng.below(3) } else { 1 + rng.below(4) } + usize::from(bad && rng.below(2) == 0);
            cu.push(cu.last().unwrap() + len as u64);
        }
        let t = *cu.last().unwrap() as usize;
        let parents: Option<Vec<i32>> = (rng.below(2) == 0).then(|| {
            let mut p = Vec::with_capacity(t);
            for r in 0..rows {
                for i in 0..(cu[r + 1] - cu[r]) as i32 {
                    p.push(if bad && rng.below(4) == 0 { i } else { rng.below(i as usize + 1) as i32 - 1 });
                }
            }
            p
        });
        let (a, b) = (
            host.spec_begin(Slots::List(sl), &cu, parents.as_deref()),
            dev.spec_begin(Slots::List(sl), &cu, parents.as_deref()),
        );
        assert_eq!(kind(&a), kind(&b), "{ctx} spec_begin");
        a.ok().map(|_| t)
    }

    /// A conv verify of `layer` over `t` token rows on both caches: the
    /// same outcome and the same outputs, bit for bit.
    fn verify_conv(host: &mut Cache, dev: &mut DeviceCache, rng: &mut Rng, layer: u32, t: usize, ctx: &str) {
        let (dim, k) = (host.shape().conv_dim, host.config().conv_kernel_size as usize);
        let io = if rng.below(2) == 0 { DType::F32 } else { DType::BF16 };
        let x = Act::new(io, f32s(rng, t * dim));
        let w = f32s(rng, dim * k);
        let bias = f32s(rng, dim);
        let (mut o1, o2) = (Act::new(io, vec![7.0; t * dim]), Act::new(io, vec![7.0; t * dim]));
        let p = ConvParams { weight: &w, bias: Some(&bias), silu: true };
        let a = host.spec_conv(layer, x.slice(), o1.slice_mut(), &p);
        let args =
            DeviceConvArgs { dtype: io, x: x.dev(), out: o2.dev(), weight: arr(&w), bias: arr(&bias), silu: true };
        let b = dev.conv_verify(layer, &args);
        assert_eq!(kind(&a), kind(&b), "{ctx} conv_verify: {a:?} {b:?}");
        if a.is_ok() {
            assert_eq!(o1.bits(), o2.bits(), "{ctx}: conv verify outputs differ");
        }
    }

    /// As `verify_conv`, for the SSM.
    fn verify_ssm(host: &mut Cache, dev: &mut DeviceCache, rng: &mut Rng, layer: u32, t: usize, ctx: &str) {
        let cfg = *host.config();
        let (h, hd, ns, g) =
            (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
        let io = if rng.below(2) == 0 { DType::F32 } else { DType::BF16 };
        let x = Act::new(io, f32s(rng, t * h * hd));
        let dt = Act::new(io, f32s(rng, t * h));
        let b = Act::new(io, f32s(rng, t * g * ns));
        let c = Act::new(io, f32s(rng, t * g * ns));
        let z = Act::new(io, f32s(rng, t * h * hd));
        let a: Vec<f32> = (0..h).map(|i| -0.5 - i as f32 * 0.25).collect();
        let bias: Vec<f32> = (0..h).map(|i| 0.1 * i as f32).collect();
        let with_z = rng.below(2) == 0;
        let (mut y1, y2) = (Act::new(io, vec![7.0; t * h * hd]), Act::new(io, vec![7.0; t * h * hd]));
        let inp = SsmInputs { x: x.slice(), dt: dt.slice(), b: b.slice(), c: c.slice(), z: with_z.then(|| z.slice()) };
        let limit = (rng.below(2) == 0).then_some((0.0, 0.7));
        let p = SsmParams { a: &a, d: Some(&a), dt_bias: Some(&bias), dt_softplus: true, dt_limit: limit };
        let r1 = host.spec_ssm(layer, &inp, y1.slice_mut(), &p);
        let io_dev = DeviceSsmIo {
            dtype: io,
            x: x.dev(),
            dt: dt.dev(),
            b: b.dev(),
            c: c.dev(),
            z: if with_z { z.dev() } else { DevArray::default() },
            y: y2.dev(),
        };
        let dp = DeviceSsmParams { a: arr(&a), d: arr(&a), dt_bias: arr(&bias), dt_softplus: true, dt_limit: limit };
        let r2 = dev.ssm_verify(layer, &io_dev, &dp);
        assert_eq!(kind(&r1), kind(&r2), "{ctx} ssm_verify: {r1:?} {r2:?}");
        if r1.is_ok() {
            assert_eq!(y1.bits(), y2.bits(), "{ctx}: ssm verify outputs differ");
        }
    }

    fn cfg(conv: DType, ssm: DType, width: u32) -> Config {
        Config {
            num_layers: 2,
            num_slots: 4,
            intermediate_size: 64,
            num_heads: 4,
            head_dim: 16,
            state_size: 16,
            n_groups: 2,
            conv_width: width,
            conv_dtype: conv,
            ssm_dtype: ssm,
            ..Config::default()
        }
    }

    #[test]
    fn the_device_cache_behaves_exactly_like_the_host_cache() {
        run(cfg(DType::BF16, DType::F32, 4), 0x1234_5678);
        run(cfg(DType::F32, DType::BF16, 3), 0x9E37_79B9);
        run(cfg(DType::F16, DType::F16, 4), 0xDEAD_BEEF);
    }

    #[test]
    fn store_checkpoints_move_between_device_and_host_caches_exactly() {
        use crate::store::{Store, chain_key};
        let c = cfg(DType::BF16, DType::F32, 4);
        let mut rng = Rng::new(11);
        let mut host = crate::AnyCache::Host(Cache::new(c).unwrap());
        let dev = DeviceCache::new(Config { device: Device::Cuda, ..c }, Box::new(Emu::default())).unwrap();
        let mut dev = crate::AnyCache::Device(std::sync::Mutex::new(dev));
        let shape = host.shape();
        for l in 0..c.num_layers {
            let st = f32s(&mut rng, shape.ssm_slot_elems);
            let w = f32s(&mut rng, shape.conv_slot_elems);
            dev.set_ssm(l, Slots::List(&[3]), Slice::F32(&st)).unwrap();
            dev.set_conv(l, Slots::List(&[3]), Slice::F32(&w)).unwrap();
        }
        dev.advance(Slots::List(&[3]), 9).unwrap();
        let store = Store::new(1 << 24, 8).unwrap();
        let k = chain_key(None, &[42]);
        store.insert(&dev, 3, k).unwrap();
        store.restore(k, &mut host, 1).unwrap();
        store.restore(k, &mut dev, 0).unwrap();
        let (mut a, mut b, mut d) = (vec![0u8; 0], vec![0u8; 0], vec![0u8; 0]);
        for (cache, slot, out) in [(&host, 1, &mut a), (&dev, 3, &mut b), (&dev, 0, &mut d)] {
            out.resize(cache.slot_snapshot_size(), 0);
            cache.slot_save(slot, out).unwrap();
            assert_eq!(cache.position(slot).unwrap(), 9);
        }
        // Snapshots carry the same header and payload: equal bytes.
        assert!(a == b && b == d, "a checkpoint restored elsewhere differs from its slot");
    }

    #[test]
    fn checkpoints_captured_in_a_device_prefill_equal_the_host_ones() {
        use crate::any_cache::{ConvIo, SsmIo};
        use crate::store::{Store, chain_key};
        let c = cfg(DType::F32, DType::BF16, 3);
        let mut rng = Rng::new(17);
        let mut host = crate::AnyCache::Host(Cache::new(c).unwrap());
        let dev = DeviceCache::new(Config { device: Device::Cuda, ..c }, Box::new(Emu::default())).unwrap();
        let mut dev = crate::AnyCache::Device(std::sync::Mutex::new(dev));
        let shape = host.shape();
        let (h, hd, ns, g) = (4usize, 16usize, 16usize, 2usize);
        let (dim, k) = (shape.conv_dim, c.conv_kernel_size as usize);
        for l in 0..c.num_layers {
            let st = f32s(&mut rng, 4 * shape.ssm_slot_elems);
            for cache in [&mut host, &mut dev] {
                cache.set_ssm(l, Slots::Dense(4), Slice::F32(&st)).unwrap();
            }
        }
        let keys = [chain_key(None, &[1]), chain_key(None, &[2])];
        let points = [(2, 3u64, keys[0]), (0, 5, keys[1])];
        let (slots, cu) = ([2i32, -1, 0], [0u64, 4, 6, 11]);
        let t = 11;
        let (s1, s2) = (Store::new(1 << 24, 4).unwrap(), Store::new(1 << 24, 4).unwrap());
        host.capture_begin(&s1, &points).unwrap();
        dev.capture_begin(&s2, &points).unwrap();
        for l in 0..c.num_layers {
            let (x, w) = (f32s(&mut rng, t * dim), f32s(&mut rng, dim * k));
            let (xs, dt, b, cc) = (
                f32s(&mut rng, t * h * hd),
                f32s(&mut rng, t * h),
                f32s(&mut rng, t * g * ns),
                f32s(&mut rng, t * g * ns),
            );
            let a: Vec<f32> = (0..h).map(|i| -0.5 - i as f32).collect();
            let (mut o1, mut o2) = (vec![7f32; t * dim], vec![7f32; t * dim]);
            let (mut y1, mut y2) = (vec![7f32; t * h * hd], vec![7f32; t * h * hd]);
            let params = ConvParams { weight: &w, bias: None, silu: true };
            let io = ConvIo::Host { x: Slice::F32(&x), out: SliceMut::F32(&mut o1), params };
            host.conv_prefill(l, Slots::List(&slots), &cu, io).unwrap();
            let args = DeviceConvArgs {
                dtype: DType::F32,
                x: arr(&x),
                out: arr_mut(&mut o2),
                weight: arr(&w),
                bias: DevArray::default(),
                silu: true,
            };
            dev.conv_prefill(l, Slots::List(&slots), &cu, ConvIo::Device(args)).unwrap();
            let inputs =
                SsmInputs { x: Slice::F32(&xs), dt: Slice::F32(&dt), b: Slice::F32(&b), c: Slice::F32(&cc), z: None };
            let sp = SsmParams { a: &a, d: None, dt_bias: None, dt_softplus: true, dt_limit: None };
            host.ssm_prefill(
                l,
                Slots::List(&slots),
                &cu,
                SsmIo::Host { inputs, y: SliceMut::F32(&mut y1), params: sp },
            )
            .unwrap();
            let io = DeviceSsmIo {
                dtype: DType::F32,
                x: arr(&xs),
                dt: arr(&dt),
                b: arr(&b),
                c: arr(&cc),
                z: DevArray::default(),
                y: arr_mut(&mut y2),
            };
            let dp = DeviceSsmParams {
                a: arr(&a),
                d: DevArray::default(),
                dt_bias: DevArray::default(),
                dt_softplus: true,
                dt_limit: None,
            };
            dev.ssm_prefill(l, Slots::List(&slots), &cu, SsmIo::Device { io, params: dp }).unwrap();
            assert!(o1 == o2 && y1 == y2, "layer {l}: outputs differ");
        }
        assert_eq!(host.capture_end(&s1).unwrap(), vec![None, None]);
        assert_eq!(dev.capture_end(&s2).unwrap(), vec![None, None]);
        let bytes = Store::entry_bytes(&c).unwrap() as usize;
        for key in keys {
            let (mut a, mut b) = (vec![0u8; bytes], vec![0u8; bytes]);
            s1.restore(key, &mut host, 1).unwrap();
            host.slot_export(1, &mut a).unwrap();
            s2.restore(key, &mut host, 1).unwrap();
            host.slot_export(1, &mut b).unwrap();
            assert!(a == b, "a checkpoint captured on the device differs from the host's");
        }
    }

    #[test]
    fn a_device_caches_regions_rebuild_its_snapshots() {
        let c = cfg(DType::BF16, DType::F32, 3);
        let mut rng = Rng::new(5);
        let dev = DeviceCache::new(Config { device: Device::Cuda, ..c }, Box::new(Emu::default())).unwrap();
        let mut dev = crate::AnyCache::Device(std::sync::Mutex::new(dev));
        let shape = dev.shape();
        for l in 0..c.num_layers {
            let st = f32s(&mut rng, 4 * shape.ssm_slot_elems);
            let w = f32s(&mut rng, 4 * shape.conv_slot_elems);
            dev.set_ssm(l, Slots::Dense(4), Slice::F32(&st)).unwrap();
            dev.set_conv(l, Slots::Dense(4), Slice::F32(&w)).unwrap();
        }
        let arenas = dev.arenas().unwrap();
        assert_eq!(arenas.len(), 2 * c.num_layers as usize);
        let regions = dev.slot_regions(&[3, 0]).unwrap();
        for slot in [3, 0] {
            let mut snap = vec![0u8; dev.slot_snapshot_size()];
            dev.slot_save(slot, &mut snap).unwrap();
            let mut image = vec![0u8; snap.len()];
            for r in regions.iter().filter(|r| r.slot == slot) {
                let a = arenas[r.arena as usize];
                assert!(r.offset + r.len <= a.len);
                // SAFETY: the emulated device's addresses are host
                // addresses of live buffers, `a.len` bytes long.
                let src = unsafe { std::slice::from_raw_parts(a.base as *const u8, a.len as usize) };
                let at = r.image_offset as usize;
                image[at..at + r.len as usize].copy_from_slice(&src[r.offset as usize..(r.offset + r.len) as usize]);
            }
            let n = snap.len();
            assert!(image[72..n - 8] == snap[72..n - 8], "slot {slot}: the regions do not rebuild its snapshot");
            let sum = u64::from_le_bytes(snap[n - 8..].try_into().unwrap());
            assert_eq!(dev.slot_digest(slot).unwrap(), sum, "slot {slot}: the digest is not the checksum");
        }
        assert!(matches!(dev.slot_regions(&[1, -1]), Err(Error::OutOfRange(_))));
        assert!(matches!(dev.slot_regions(&[4]), Err(Error::OutOfRange(_))));
        assert!(matches!(dev.slot_regions(&[2, 2]), Err(Error::InvalidArg(_))));
    }

    #[test]
    fn a_failed_transfer_is_an_error_not_a_panic() {
        let c = cfg(DType::F32, DType::F32, 4);
        let mut dev = DeviceCache::new(Config { device: Device::Cuda, ..c }, Box::new(Emu::default())).unwrap();
        let shape = *dev.shape();
        Emu::of(&dev).unwrap().fail_after.store(0, Ordering::Relaxed);
        let st = vec![1f32; shape.ssm_slot_elems];
        assert!(matches!(dev.set_ssm(0, Slots::List(&[1]), Slice::F32(&st)), Err(Error::Unsupported(_))));
        let mut out = vec![0f32; shape.ssm_slot_elems];
        assert!(dev.read_ssm(0, Slots::List(&[1]), SliceMut::F32(&mut out)).is_err());
        Emu::of(&dev).unwrap().fail_after.store(-1, Ordering::Relaxed);
        dev.set_ssm(0, Slots::List(&[1]), Slice::F32(&st)).unwrap();
        dev.read_ssm(0, Slots::List(&[1]), SliceMut::F32(&mut out)).unwrap();
        assert_eq!(out, st);
    }

    #[test]
    fn invalid_calls_touch_no_device_memory() {
        let c = cfg(DType::F32, DType::F32, 4);
        let mut dev = DeviceCache::new(Config { device: Device::Cuda, ..c }, Box::new(Emu::default())).unwrap();
        let before = Emu::of(&dev).unwrap().transfers.load(Ordering::Relaxed);
        let st = vec![1f32; 3];
        assert!(dev.set_ssm(0, Slots::List(&[1]), Slice::F32(&st)).is_err()); // wrong length
        assert!(dev.set_ssm(9, Slots::List(&[1]), Slice::F32(&st)).is_err()); // bad layer
        assert!(dev.reset(Slots::List(&[1, 1])).is_err()); // duplicate
        assert!(dev.copy_slots(&[0, 1], &[2]).is_err());
        assert!(dev.slot_load(0, &[0u8; 16]).is_err());
        let one = DevArray::new(1, 1);
        // NULL rules as on the host: a null address with a length is refused
        // (the C API reports NULL_ARG before it gets here), (NULL, 0) an
        // empty buffer (a shape mismatch for one row, fine for none), and A
        // is required.
        let io = DeviceSsmIo {
            dtype: DType::F32,
            x: DevArray::new(0, 5),
            dt: one,
            b: one,
            c: one,
            z: DevArray::default(),
            y: one,
        };
        let p = DeviceSsmParams {
            a: one,
            d: DevArray::default(),
            dt_bias: DevArray::default(),
            dt_softplus: false,
            dt_limit: None,
        };
        assert!(matches!(dev.ssm_step(0, Slots::List(&[0]), &io, &p), Err(Error::InvalidArg(_))));
        let io = DeviceSsmIo { x: DevArray::default(), ..io };
        assert!(matches!(dev.ssm_step(0, Slots::List(&[0]), &io, &p), Err(Error::ShapeMismatch(_))));
        let p0 = DeviceSsmParams { a: DevArray::default(), ..p };
        assert!(matches!(dev.ssm_step(0, Slots::List(&[0]), &io, &p0), Err(Error::InvalidArg(_))));
        let none = DeviceSsmIo {
            dtype: DType::F32,
            x: DevArray::default(),
            dt: DevArray::default(),
            b: DevArray::default(),
            c: DevArray::default(),
            z: DevArray::default(),
            y: DevArray::default(),
        };
        let p4 = DeviceSsmParams { a: DevArray::new(1 << 20, 4), ..p };
        dev.ssm_step(0, Slots::List(&[]), &none, &p4).unwrap();
        let pz = DeviceSsmParams { d: DevArray::new(0, 4), ..p4 };
        assert!(matches!(dev.ssm_step(0, Slots::List(&[]), &none, &pz), Err(Error::InvalidArg(_))));
        // Right lengths, but an address no allocation can have.
        let (h, hd, n, g) = (4usize, 16usize, 16usize, 2usize);
        let ok = |len: usize| DevArray::new(1 << 20, len);
        let io = DeviceSsmIo {
            dtype: DType::F32,
            x: DevArray::new(8, h * hd),
            dt: ok(h),
            b: ok(g * n),
            c: ok(g * n),
            z: DevArray::default(),
            y: ok(h * hd),
        };
        let p = DeviceSsmParams {
            a: ok(h),
            d: DevArray::default(),
            dt_bias: DevArray::default(),
            dt_softplus: false,
            dt_limit: None,
        };
        assert!(matches!(dev.ssm_step(0, Slots::List(&[0]), &io, &p), Err(Error::InvalidArg(_))));
        // A misaligned array, whatever memory it is in.
        let io = DeviceSsmIo { x: DevArray::new((1 << 20) + 2, h * hd), ..io };
        let e = dev.ssm_step(0, Slots::List(&[0]), &io, &p);
        assert!(matches!(&e, Err(Error::InvalidArg(m)) if m.contains("aligned")), "{e:?}");
        // Speculative calls: no log, no round, bad runs, bad arrays, bad
        // accepted counts.
        assert!(matches!(dev.spec_reserve(5000), Err(Error::OutOfRange(_))));
        assert!(dev.spec_begin(Slots::List(&[0]), &[0, 1], None).is_err()); // nothing reserved
        assert!(dev.spec_commit(Slots::List(&[0]), &[0]).is_err()); // no round
        assert!(dev.ssm_verify(0, &io, &p).is_err()); // no round
        assert_eq!(Emu::of(&dev).unwrap().transfers.load(Ordering::Relaxed), before);
        dev.spec_reserve(3).unwrap();
        let before = Emu::of(&dev).unwrap().transfers.load(Ordering::Relaxed);
        assert!(matches!(dev.spec_begin(Slots::List(&[0]), &[0, 4], None), Err(Error::OutOfRange(_))));
        assert!(dev.spec_begin(Slots::List(&[0]), &[0, 2], Some(&[-1, 1])).is_err()); // forward parent
        dev.spec_begin(Slots::List(&[0, 1]), &[0, 2, 3], None).unwrap();
        assert!(dev.ssm_verify(0, &io, &p).is_err()); // 1 row, the round has 3
        let wide = DeviceSsmIo {
            x: DevArray::new(8, 3 * h * hd),
            dt: ok(3 * h),
            b: ok(3 * g * n),
            c: ok(3 * g * n),
            y: ok(3 * h * hd),
            ..io
        };
        assert!(dev.ssm_verify(0, &wide, &p).is_err()); // memory no allocation can have
        assert!(dev.ssm_verify(2, &wide, &p).is_err()); // no such layer
        assert!(matches!(dev.spec_commit(Slots::List(&[0]), &[3]), Err(Error::OutOfRange(_))));
        assert!(dev.spec_commit(Slots::List(&[0]), &[1]).is_err()); // layers not verified
        assert!(dev.spec_commit(Slots::List(&[2]), &[0]).is_err()); // not in the round
        assert!(dev.spec_commit(Slots::List(&[0, 1]), &[0]).is_err()); // one count for two slots
        assert_eq!(Emu::of(&dev).unwrap().transfers.load(Ordering::Relaxed), before);
        dev.spec_commit(Slots::List(&[0, 1]), &[0, 0]).unwrap(); // ends the runs, moves nothing
        assert_eq!(Emu::of(&dev).unwrap().transfers.load(Ordering::Relaxed), before);
        assert_eq!((dev.position(0).unwrap(), dev.position(1).unwrap()), (0, 0));
    }

    #[test]
    fn switching_streams_and_dropping_the_cache_wait_for_queued_work() {
        let c = cfg(DType::F32, DType::F32, 4);
        let emu = Emu::default();
        let syncs = emu.syncs.clone();
        let mut dev = DeviceCache::new(Config { device: Device::Cuda, ..c }, Box::new(emu)).unwrap();
        assert_eq!(syncs.load(Ordering::Relaxed), 1, "creation waits for the zeroing");
        dev.set_stream(0xabc0).unwrap();
        assert_eq!(Emu::of(&dev).unwrap().stream, 0xabc0);
        assert_eq!(syncs.load(Ordering::Relaxed), 2, "the previous stream is drained first");
        dev.reset(Slots::List(&[1])).unwrap();
        assert_eq!(syncs.load(Ordering::Relaxed), 3, "reset returns once the rows are zero");
        dev.slot_acquire().unwrap();
        assert_eq!(syncs.load(Ordering::Relaxed), 4, "so does acquire");
        drop(dev);
        assert_eq!(syncs.load(Ordering::Relaxed), 5, "dropping the cache drains its stream before freeing");
    }
}
