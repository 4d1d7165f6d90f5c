//! Concurrency stress through the C ABI (the `extern "C"` functions, called
//! the way a C caller does):
//!
//! - many threads mutate and read one cache at once, each on its own
//!   slots, with calls large enough to run on the thread pool, and end
//!   with exactly the state and outputs of a serial replay of the same
//!   per-thread sequences;
//! - many threads acquire and release slots of one cache: a slot is never
//!   handed out twice, it always arrives zeroed, and the count adds up.
//!
//! The C test ctests/stress_disjoint_slots.c does the first at a size
//! valgrind can run; see RELIABILITY.md.

use m2c::*;
use m2c_testkit::Rng;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

/// A handle that may cross threads (the library serialises access).
#[derive(Clone, Copy)]
struct Handle(*mut m2c_cache);
// SAFETY: every m2c function may be called from any thread on one handle.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

fn config(num_slots: u32, heads: u32, head_dim: u32, state: u32) -> m2c_config {
    let mut c = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage for one config.
    unsafe { m2c_config_init(c.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut c = unsafe { c.assume_init() };
    c.num_layers = 2;
    c.num_slots = num_slots;
    c.num_heads = heads;
    c.head_dim = head_dim;
    c.intermediate_size = heads * head_dim;
    c.state_size = state;
    c.n_groups = 1;
    c.conv_kernel_size = 4;
    c.conv_width = 4;
    c.conv_dtype = M2C_DTYPE_BF16;
    c.ssm_dtype = M2C_DTYPE_F32;
    c
}

fn create(cfg: &m2c_config) -> Handle {
    let mut h = ptr::null_mut();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_create(cfg, &mut h) }, M2C_STATUS_OK);
    Handle(h)
}

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(m2c_last_error()) }.to_string_lossy().into_owned()
}

fn ok(st: m2c_status, what: &str) {
    assert_eq!(st, M2C_STATUS_OK, "{what}: {}", last_error());
}

fn values(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * scale).collect()
}

/// Every byte of storage (through the views) and every position.
fn image(h: Handle, cfg: &m2c_config) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = Vec::new();
    for l in 0..cfg.num_layers {
        for conv in [true, false] {
            let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
            // SAFETY: live handle, valid out pointer; no call runs now.
            unsafe {
                let st =
                    if conv { m2c_conv_view(h.0, l, t.as_mut_ptr()) } else { m2c_ssm_view(h.0, l, t.as_mut_ptr()) };
                ok(st, "view");
                let t = t.assume_init();
                let n: u64 = t.shape[..t.ndim as usize].iter().product();
                let es = if t.dtype == M2C_DTYPE_F32 { 4 } else { 2 };
                bytes.extend_from_slice(std::slice::from_raw_parts(t.data.cast::<u8>(), n as usize * es));
            }
        }
    }
    let pos = (0..cfg.num_slots as i32)
        .map(|s| {
            let mut p = 0;
            // SAFETY: live handle.
            ok(unsafe { m2c_position(h.0, s, &mut p) }, "position");
            p
        })
        .collect();
    (bytes, pos)
}

struct Params {
    weight: Vec<f32>,
    bias: Vec<f32>,
    a: Vec<f32>,
    d: Vec<f32>,
    dt_bias: Vec<f32>,
}

/// One thread's operation sequence on its slots `2t` and `2t+1`: a pure
/// function of `t`. Returns a hash of every output it saw and the number
/// of calls it made.
fn run_ops(h: Handle, cfg: &m2c_config, p: &Params, t: usize, iters: usize) -> (u64, u64) {
    let mut rng = Rng::new(1000 + t as u64);
    let dim = (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize;
    let cper = dim * cfg.conv_width as usize;
    let (nh, hd, gn) = (cfg.num_heads as usize, cfg.head_dim as usize, (cfg.n_groups * cfg.state_size) as usize);
    let sper = nh * hd * cfg.state_size as usize;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |b: &[u8]| {
        for &x in b {
            hash = (hash ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
    };
    let as_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (a, b) = (2 * t as i32, 2 * t as i32 + 1);
    let mut calls = 0u64;
    let mut snap = vec![
        0u8;
        {
            let mut n = 0;
            // SAFETY: live handle.
            ok(unsafe { m2c_slot_snapshot_size(h.0, &mut n) }, "snapshot size");
            n
        }
    ];
    let mut ca = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
    let mut sa = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
    // SAFETY: valid storage.
    let (mut ca, mut sa) = unsafe {
        m2c_conv_args_init(ca.as_mut_ptr());
        m2c_ssm_args_init(sa.as_mut_ptr());
        (ca.assume_init(), sa.assume_init())
    };
    (ca.weight, ca.weight_len, ca.bias, ca.bias_len) =
        (p.weight.as_ptr(), p.weight.len(), p.bias.as_ptr(), p.bias.len());
    (sa.A, sa.A_len, sa.D, sa.D_len) = (p.a.as_ptr(), p.a.len(), p.d.as_ptr(), p.d.len());
    (sa.dt_bias, sa.dt_bias_len) = (p.dt_bias.as_ptr(), p.dt_bias.len());
    for _ in 0..iters {
        let rows: Vec<i32> = match rng.below(5) {
            0 => vec![a],
            1 => vec![b],
            2 => vec![b, a],
            3 => vec![a, -1, b],
            _ => vec![-1, b],
        };
        let n = rows.len();
        let layer = rng.below(cfg.num_layers as usize) as u32;
        let sl = rows.as_ptr();
        calls += 1;
        // SAFETY: live handle; every buffer has the length passed with it.
        unsafe {
            match rng.below(10) {
                0 => {
                    let x = values(&mut rng, n * dim, 2.0);
                    ok(m2c_update_conv(h.0, layer, sl, n, x.as_ptr().cast(), M2C_DTYPE_F32, x.len()), "update_conv");
                }
                1 => {
                    let s = values(&mut rng, n * sper, 1.0);
                    ok(m2c_update_ssm(h.0, layer, sl, n, s.as_ptr().cast(), M2C_DTYPE_F32, s.len()), "update_ssm");
                }
                2 | 3 => {
                    let x = values(&mut rng, n * dim, 2.0);
                    let mut out = vec![0f32; n * dim];
                    ok(
                        m2c_conv_step(
                            h.0,
                            layer,
                            sl,
                            n,
                            x.as_ptr().cast(),
                            x.len(),
                            out.as_mut_ptr().cast(),
                            out.len(),
                            &ca,
                        ),
                        "conv_step",
                    );
                    feed(&as_bytes(&out));
                }
                4 | 5 => {
                    let x = values(&mut rng, n * nh * hd, 1.0);
                    let dt = values(&mut rng, n * nh, 0.5);
                    let bm = values(&mut rng, n * gn, 1.0);
                    let cm = values(&mut rng, n * gn, 1.0);
                    let mut y = vec![0f32; n * nh * hd];
                    let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
                    m2c_ssm_io_init(io.as_mut_ptr());
                    let mut io = io.assume_init();
                    (io.x, io.x_len, io.dt, io.dt_len) = (x.as_ptr().cast(), x.len(), dt.as_ptr().cast(), dt.len());
                    (io.B, io.B_len, io.C, io.C_len) = (bm.as_ptr().cast(), bm.len(), cm.as_ptr().cast(), cm.len());
                    (io.y, io.y_len) = (y.as_mut_ptr().cast(), y.len());
                    ok(m2c_ssm_step(h.0, layer, sl, n, &io, &sa), "ssm_step");
                    feed(&as_bytes(&y));
                }
                6 => {
                    ok(m2c_advance(h.0, sl, n, rng.below(4) as u32), "advance");
                    if rng.coin(0.05) {
                        ok(m2c_reset(h.0, sl, n), "reset");
                    }
                }
                7 => {
                    let (from, to) = if rng.coin(0.5) { (a, b) } else { (b, a) };
                    let mut w = 0;
                    ok(m2c_slot_save(h.0, from, snap.as_mut_ptr().cast(), snap.len(), &mut w), "slot_save");
                    feed(&snap);
                    ok(m2c_slot_load(h.0, to, snap.as_ptr().cast(), snap.len()), "slot_load");
                    let (src, dst) = ([to, from], [from, to]);
                    ok(m2c_copy_slots(h.0, src.as_ptr(), dst.as_ptr(), 2), "copy_slots (swap)");
                }
                8 => {
                    let mut out = vec![0f32; n * sper];
                    ok(m2c_read_ssm(h.0, layer, sl, n, out.as_mut_ptr().cast(), M2C_DTYPE_F32, out.len()), "read_ssm");
                    feed(&as_bytes(&out));
                    let mut out = vec![0f32; n * cper];
                    ok(
                        m2c_read_conv(h.0, layer, sl, n, out.as_mut_ptr().cast(), M2C_DTYPE_F32, out.len()),
                        "read_conv",
                    );
                    feed(&as_bytes(&out));
                }
                _ => {
                    // Refused calls, which change nothing.
                    let dup = [a, a];
                    let x = vec![0f32; 2 * dim];
                    assert_eq!(
                        m2c_update_conv(h.0, layer, dup.as_ptr(), 2, x.as_ptr().cast(), M2C_DTYPE_F32, x.len()),
                        M2C_STATUS_INVALID_ARG
                    );
                    let far = [b, cfg.num_slots as i32];
                    assert_eq!(m2c_advance(h.0, far.as_ptr(), 2, 1), M2C_STATUS_OUT_OF_RANGE);
                    let mut bad = snap.clone();
                    let mid = bad.len() / 2;
                    bad[mid] ^= 1;
                    assert_eq!(m2c_slot_load(h.0, a, bad.as_ptr().cast(), bad.len()), M2C_STATUS_CORRUPT);
                }
            }
        }
    }
    (hash, calls)
}

#[test]
fn threads_on_disjoint_slots_end_as_a_serial_replay() {
    const THREADS: usize = 8;
    const ITERS: usize = 500;
    // 8 heads of 64 x 128 f32: 256 KiB of SSM state per slot, so a call on
    // two slots crosses the thread-pool threshold (512 KiB) while the other
    // threads' calls are running.
    let cfg = config(2 * THREADS as u32, 8, 64, 128);
    let dim = (cfg.intermediate_size + 2 * cfg.state_size) as usize;
    let mut rng = Rng::new(5);
    let p = Arc::new(Params {
        weight: values(&mut rng, dim * 4, 0.5),
        bias: values(&mut rng, dim, 0.1),
        a: (0..8).map(|h| -0.2 - 0.1 * h as f32).collect(),
        d: values(&mut rng, 8, 0.5),
        dt_bias: values(&mut rng, 8, 0.1),
    });
    let conc = create(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let reader = {
        let (stop, reads, start) = (stop.clone(), reads.clone(), start.clone());
        std::thread::spawn(move || {
            let h = conc;
            let n = cfg.num_slots as usize;
            let sper = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
            let mut buf = vec![0f32; n * sper];
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                for l in 0..cfg.num_layers {
                    // SAFETY: live handle, buffer of the stated length.
                    ok(
                        unsafe {
                            m2c_read_ssm(h.0, l, ptr::null(), n, buf.as_mut_ptr().cast(), M2C_DTYPE_F32, buf.len())
                        },
                        "reader",
                    );
                }
                let mut nf = 0;
                // SAFETY: as above.
                ok(unsafe { m2c_check_finite(h.0, 0, &mut nf) }, "check_finite");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, start) = (p.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                run_ops(conc, &cfg, &p, t, ITERS)
            })
        })
        .collect();
    let results: Vec<(u64, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();

    let serial = create(&cfg);
    for (t, &(hash, _)) in results.iter().enumerate() {
        let (h, _) = run_ops(serial, &cfg, &p, t, ITERS);
        assert_eq!(h, hash, "thread {t} saw other outputs concurrently than in the serial replay");
    }
    let (a, b) = (image(conc, &cfg), image(serial, &cfg));
    assert!(a.0 == b.0, "the concurrent run's state differs from the serial replay");
    assert_eq!(a.1, b.1, "positions differ from the serial replay");
    let calls: u64 = results.iter().map(|r| r.1).sum();
    println!(
        "stress: {THREADS} threads, {calls} calls on disjoint slots, {} full reads beside them: state equals the serial replay",
        reads.load(Ordering::Relaxed)
    );
    // SAFETY: handles from m2c_create, no other user left.
    unsafe {
        m2c_destroy(conc.0);
        m2c_destroy(serial.0);
    }
}

#[test]
fn acquire_and_release_from_many_threads_never_hand_out_a_slot_twice() {
    const THREADS: usize = 16;
    const ITERS: usize = 3000;
    const SLOTS: u32 = 6;
    let cfg = config(SLOTS, 2, 4, 8);
    let h = create(&cfg);
    let sper = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    // owner[s]: 0 when free, otherwise 1 + the thread that holds slot s.
    let owner: Arc<Vec<AtomicU32>> = Arc::new((0..SLOTS).map(|_| AtomicU32::new(0)).collect());
    let acquired = Arc::new(AtomicU64::new(0));
    let full = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (owner, acquired, full, start) = (owner.clone(), acquired.clone(), full.clone(), start.clone());
            std::thread::spawn(move || {
                let h = h; // the whole handle, not its raw pointer field
                let mut rng = Rng::new(t as u64);
                let mut back = vec![0f32; sper];
                start.wait();
                for i in 0..ITERS {
                    let mut s = -1;
                    // SAFETY: live handle, valid out pointer.
                    let st = unsafe { m2c_slot_acquire(h.0, &mut s) };
                    if st == M2C_STATUS_NO_FREE_SLOT {
                        full.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                        continue;
                    }
                    ok(st, "slot_acquire");
                    assert!((0..SLOTS as i32).contains(&s), "slot {s} out of range");
                    let prev = owner[s as usize].swap(t as u32 + 1, Ordering::SeqCst);
                    assert_eq!(prev, 0, "slot {s} handed to thread {t} while thread {} holds it", prev.wrapping_sub(1));
                    acquired.fetch_add(1, Ordering::Relaxed);
                    let sl = [s];
                    // SAFETY: live handle, buffers of the stated lengths.
                    unsafe {
                        // It arrives zeroed, at position 0.
                        ok(m2c_read_ssm(h.0, 0, sl.as_ptr(), 1, back.as_mut_ptr().cast(), M2C_DTYPE_F32, sper), "read");
                        assert!(back.iter().all(|&v| v == 0.0), "slot {s} was not zeroed on acquire");
                        let mut pos = 1;
                        ok(m2c_position(h.0, s, &mut pos), "position");
                        assert_eq!(pos, 0);
                        // Only its holder writes it: the value stays.
                        let mark = vec![(t * ITERS + i) as f32; sper];
                        ok(m2c_update_ssm(h.0, 0, sl.as_ptr(), 1, mark.as_ptr().cast(), M2C_DTYPE_F32, sper), "mark");
                        ok(m2c_advance(h.0, sl.as_ptr(), 1, 1 + rng.below(3) as u32), "advance");
                        if rng.coin(0.5) {
                            std::thread::yield_now();
                        }
                        ok(m2c_read_ssm(h.0, 0, sl.as_ptr(), 1, back.as_mut_ptr().cast(), M2C_DTYPE_F32, sper), "read");
                        assert!(back == mark, "slot {s} was written by someone else while thread {t} held it");
                        owner[s as usize].store(0, Ordering::SeqCst);
                        ok(m2c_slot_release(h.0, s), "slot_release");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut n = 99;
    // SAFETY: live handle.
    ok(unsafe { m2c_slots_in_use(h.0, &mut n) }, "slots_in_use");
    assert_eq!(n, 0, "every slot was released");
    let got = acquired.load(Ordering::Relaxed);
    assert!(got > (THREADS * ITERS / 4) as u64, "only {got} acquisitions succeeded");
    println!(
        "stress: {THREADS} threads, {got} acquisitions of {SLOTS} slots ({} NO_FREE_SLOT), no slot handed out twice",
        full.load(Ordering::Relaxed)
    );
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h.0) };
}

/// A store handle that may cross threads (the store is thread-safe).
#[derive(Clone, Copy)]
struct StoreHandle(*mut m2c_store);
// SAFETY: every m2c_store function may be called from any thread.
unsafe impl Send for StoreHandle {}
unsafe impl Sync for StoreHandle {}

/// Thread `t`'s store traffic on its own slot and keys: fill the slot,
/// insert, look up its chain, restore an earlier key, pin/unpin, evict.
/// Returns every status and answer, and a hash of the restored states.
fn store_ops(cache: Handle, store: StoreHandle, cfg: &m2c_config, t: usize, iters: usize) -> Vec<u64> {
    let mut rng = Rng::new(0x570 + t as u64);
    let slot = t as i32;
    let per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let key = |i: usize| {
        let mut k = m2c_key::default();
        let toks = [t as i32, i as i32];
        // SAFETY: valid pointers.
        ok(unsafe { m2c_key_chain(ptr::null(), toks.as_ptr(), 2, &mut k) }, "m2c_key_chain");
        k
    };
    let mut out = Vec::new();
    for i in 0..iters {
        let st = rng.vec(per, 1.0);
        // SAFETY: valid pointers and lengths.
        unsafe {
            ok(m2c_set_ssm(cache.0, (i % 2) as u32, &slot, 1, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()), "set_ssm");
            let k = key(i);
            let mut miss = -1;
            out.push(m2c_store_insert(store.0, cache.0, slot, &k, &mut miss) as u64);
            out.push(miss as u64);
            let chain: Vec<m2c_key> = (0..=i).map(key).collect();
            let mut l = std::mem::MaybeUninit::<m2c_lookup>::zeroed();
            m2c_lookup_init(l.as_mut_ptr());
            out.push(m2c_store_lookup(store.0, cache.0, chain.as_ptr(), chain.len(), l.as_mut_ptr()) as u64);
            let l = l.assume_init();
            out.extend([l.blocks, l.miss as u64]);
            let back = key(rng.below(i + 1));
            out.push(m2c_store_restore(store.0, &back, cache.0, slot) as u64);
            let mut got = vec![0f32; per];
            ok(m2c_read_ssm(cache.0, 0, &slot, 1, got.as_mut_ptr().cast(), M2C_DTYPE_F32, per), "read_ssm");
            out.push(got.iter().fold(0u64, |h, v| h.rotate_left(5) ^ u64::from(v.to_bits())));
            let pinned = key(rng.below(i + 1));
            out.push(m2c_store_pin(store.0, &pinned) as u64);
            out.push(m2c_store_evict(store.0, &pinned) as u64); // refused: pinned (or already gone)
            out.push(m2c_store_unpin(store.0, &pinned) as u64);
            if rng.below(3) == 0 {
                out.push(m2c_store_evict(store.0, &key(rng.below(i + 1))) as u64);
            }
        }
    }
    out
}

#[test]
fn threads_sharing_a_store_end_as_a_serial_replay() {
    const THREADS: usize = 4;
    const ITERS: usize = 40;
    let cfg = config(THREADS as u32, 4, 16, 16);
    let make_store = || {
        let mut sc = std::mem::MaybeUninit::<m2c_store_config>::zeroed();
        // SAFETY: valid storage and pointers.
        unsafe {
            m2c_store_config_init(sc.as_mut_ptr());
            let mut st = ptr::null_mut();
            ok(m2c_store_create(sc.as_ptr(), &mut st), "m2c_store_create");
            StoreHandle(st)
        }
    };
    let (conc, cstore) = (create(&cfg), make_store());
    let barrier = Arc::new(Barrier::new(THREADS));
    let outs: Vec<Vec<u64>> = (0..THREADS)
        .map(|t| {
            let b = Arc::clone(&barrier);
            std::thread::spawn(move || {
                b.wait();
                store_ops(conc, cstore, &cfg, t, ITERS)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let (serial, sstore) = (create(&cfg), make_store());
    for (t, out) in outs.iter().enumerate() {
        assert_eq!(
            &store_ops(serial, sstore, &cfg, t, ITERS),
            out,
            "thread {t}: other answers than in the serial replay"
        );
    }
    let stats = |s: StoreHandle| {
        let mut st = std::mem::MaybeUninit::<m2c_store_stats>::zeroed();
        // SAFETY: valid storage and handle.
        unsafe {
            m2c_store_stats_init(st.as_mut_ptr());
            ok(m2c_store_get_stats(s.0, st.as_mut_ptr()), "m2c_store_get_stats");
            let st = st.assume_init();
            (
                st.entries,
                st.bytes_held,
                st.inserts,
                st.hits,
                st.misses_never_stored,
                st.misses_evicted,
                st.evictions,
                st.restores,
            )
        }
    };
    assert_eq!(stats(cstore), stats(sstore), "the store's counters differ from the serial replay");
    let (a, b) = (image(conc, &cfg), image(serial, &cfg));
    assert!(a.0 == b.0 && a.1 == b.1, "the cache differs from the serial replay");
    // SAFETY: handles from their create calls, destroyed once.
    unsafe {
        m2c_store_destroy(cstore.0);
        m2c_store_destroy(sstore.0);
        m2c_destroy(conc.0);
        m2c_destroy(serial.0);
    }
}
