//! Tests that call the `extern "C"` functions directly, the way a C caller
//! does: raw pointers, status codes, the last-error message, poisoning.

use super::*;
use m2c_core::device::emulated::Emu;
use std::ffi::CStr;
use std::ptr;

fn tiny_config(num_slots: u32) -> m2c_config {
    let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage for one config.
    unsafe { m2c_config_init(cfg.as_mut_ptr()) };
    // SAFETY: initialised by m2c_config_init.
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.num_layers = 2;
    cfg.num_slots = num_slots;
    cfg.intermediate_size = 256;
    cfg.num_heads = 4;
    cfg.head_dim = 64;
    cfg.state_size = 128;
    cfg.ssm_dtype = M2C_DTYPE_F32;
    cfg.conv_dtype = M2C_DTYPE_F32;
    cfg
}

fn create(cfg: &m2c_config) -> *mut m2c_cache {
    let mut h = ptr::null_mut();
    // SAFETY: valid pointers.
    let s = unsafe { m2c_create(cfg, &mut h) };
    assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
    h
}

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { CStr::from_ptr(m2c_last_error()) }.to_string_lossy().into_owned()
}

fn conv_dim(cfg: &m2c_config) -> usize {
    (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize
}

#[test]
fn last_error_is_empty_on_a_fresh_thread_and_names_the_failing_function() {
    std::thread::spawn(|| {
        assert_eq!(last_error(), "");
        // SAFETY: NULL handle is a documented error.
        let s = unsafe { m2c_reset(ptr::null_mut(), ptr::null(), 0) };
        assert_eq!(s, M2C_STATUS_NULL_ARG);
        assert!(last_error().starts_with("m2c_reset: cache is NULL"), "{}", last_error());
    })
    .join()
    .unwrap();
}

#[test]
fn every_status_has_static_text_and_unknown_codes_are_labelled() {
    for s in 0..=M2C_STATUS_NOT_FOUND {
        // SAFETY: never NULL.
        let t = unsafe { CStr::from_ptr(m2c_status_str(s)) }.to_str().unwrap();
        assert!(!t.is_empty() && t != "unknown status code", "status {s}");
    }
    for s in [-1, M2C_STATUS_NOT_FOUND + 1, i32::MAX, i32::MIN] {
        // SAFETY: never NULL.
        let t = unsafe { CStr::from_ptr(m2c_status_str(s)) }.to_str().unwrap();
        assert_eq!(t, "unknown status code");
    }
}

#[test]
fn versions_agree() {
    // SAFETY: static string.
    let v = unsafe { CStr::from_ptr(m2c_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(m2c_abi_version(), crate::abi::M2C_ABI_VERSION);
    let header = include_str!(concat!(env!("OUT_DIR"), "/m2c.h"));
    for (name, val) in [
        ("M2C_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("M2C_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("M2C_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(header.contains(&format!("#define {name} {val}\n")), "{name}");
    }
    assert!(header.contains(&format!("#define M2C_VERSION_STRING \"{v}\"\n")));
    assert!(header.contains(&format!("#define M2C_ABI_VERSION {}\n", m2c_abi_version())));
}

#[test]
fn outputs_are_not_written_on_failure() {
    let mut bad = tiny_config(1);
    bad.n_groups = 3;
    let mut bytes = 0xDEAD_u64;
    let mut h: *mut m2c_cache = 0x10 as *mut m2c_cache;
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(m2c_config_bytes(&bad, &mut bytes), M2C_STATUS_INVALID_CONFIG);
        assert!(last_error().contains("n_groups"));
        assert_eq!(m2c_create(&bad, &mut h), M2C_STATUS_INVALID_CONFIG);
    }
    assert_eq!(bytes, 0xDEAD);
    assert_eq!(h as usize, 0x10);
}

#[test]
fn struct_size_must_be_known() {
    let mut cfg = tiny_config(1);
    let mut h = ptr::null_mut();
    for size in [0, 4, 55, 57, 1024] {
        cfg.struct_size = size;
        // SAFETY: valid pointers.
        assert_eq!(unsafe { m2c_create(&cfg, &mut h) }, M2C_STATUS_INVALID_ARG);
        assert!(last_error().contains("struct_size"));
    }
    assert!(h.is_null());
}

#[test]
fn enum_inputs_are_validated() {
    let mut h = ptr::null_mut();
    let mut cfg = tiny_config(1);
    cfg.ssm_dtype = 3;
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_create(&cfg, &mut h) }, M2C_STATUS_UNSUPPORTED_DTYPE);
    assert!(last_error().contains("ssm_dtype"));
    cfg = tiny_config(1);
    cfg.device = 7;
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_create(&cfg, &mut h) }, M2C_STATUS_INVALID_CONFIG);
    cfg.device = M2C_DEVICE_CUDA;
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_create(&cfg, &mut h) }, M2C_STATUS_UNSUPPORTED);
    cfg = tiny_config(2);
    let c = create(&cfg);
    let x = vec![0f32; conv_dim(&cfg)];
    // SAFETY: valid pointers; bad dtype code.
    let s = unsafe { m2c_update_conv(c, 0, ptr::null(), 1, x.as_ptr().cast(), 99, x.len()) };
    assert_eq!(s, M2C_STATUS_UNSUPPORTED_DTYPE);
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(c) };
}

#[test]
fn absurd_configs_fail_without_aborting() {
    let mut cfg = tiny_config(1);
    cfg.num_slots = 1 << 31;
    let mut h = ptr::null_mut();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_create(&cfg, &mut h) }, M2C_STATUS_INVALID_CONFIG);
    cfg.num_slots = i32::MAX as u32;
    cfg.num_layers = 64;
    // ~ 2^31 slots * 128 KiB: far beyond memory, within u64.
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_create(&cfg, &mut h) }, M2C_STATUS_OUT_OF_MEMORY);
    assert!(h.is_null());
    // The process is healthy: a normal cache still works.
    let c = create(&tiny_config(1));
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(c) };
}

#[test]
fn caller_buffers_overlapping_the_cache_are_rejected() {
    let cfg = tiny_config(2);
    let c = create(&cfg);
    let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_conv_view(c, 0, t.as_mut_ptr()) }, M2C_STATUS_OK);
    // SAFETY: written on success.
    let t = unsafe { t.assume_init() };
    let d = conv_dim(&cfg);
    // SAFETY: the pointer is the cache's own conv storage: rejected before use.
    let s = unsafe { m2c_update_conv(c, 0, ptr::null(), 1, t.data, M2C_DTYPE_F32, d) };
    assert_eq!(s, M2C_STATUS_INVALID_ARG);
    assert!(last_error().contains("overlaps"));
    // SAFETY: as above.
    let s = unsafe { m2c_read_conv(c, 0, ptr::null(), 1, t.data, M2C_DTYPE_F32, d * 4) };
    assert_eq!(s, M2C_STATUS_INVALID_ARG);
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(c) };
}

fn poison_test(num_slots: u32, rows: usize) {
    let cfg = tiny_config(num_slots);
    let c = create(&cfg);
    let other = create(&cfg);
    let d = conv_dim(&cfg);
    let x = vec![1f32; rows * d];
    // SAFETY: a live handle; no other thread uses it.
    unsafe { (*c).inner.write().unwrap() }.host_mut().expect("a host cache").inject_panic = true;
    // SAFETY: valid pointers.
    let s = unsafe { m2c_update_conv(c, 0, ptr::null(), rows, x.as_ptr().cast(), M2C_DTYPE_F32, x.len()) };
    assert_eq!(s, M2C_STATUS_PANIC);
    assert!(last_error().contains("injected fault"), "{}", last_error());
    // Further mutation is refused; reads still work; the other handle is fine.
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(m2c_reset(c, ptr::null(), 1), M2C_STATUS_POISONED);
        assert_eq!(m2c_update_conv(c, 0, ptr::null(), 1, x.as_ptr().cast(), M2C_DTYPE_F32, d), M2C_STATUS_POISONED);
        let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
        assert_eq!(m2c_ssm_view(c, 0, t.as_mut_ptr()), M2C_STATUS_POISONED);
        let mut pos = 0;
        assert_eq!(m2c_position(c, 0, &mut pos), M2C_STATUS_OK);
        assert_eq!(m2c_update_conv(other, 0, ptr::null(), 1, x.as_ptr().cast(), M2C_DTYPE_F32, d), M2C_STATUS_OK);
        m2c_destroy(c);
        m2c_destroy(other);
    }
}

#[test]
fn a_panic_on_the_calling_thread_poisons_only_that_handle() {
    poison_test(1, 1);
}

#[test]
fn a_panic_inside_a_pool_worker_is_caught_and_poisons_the_handle() {
    // Enough rows to cross the parallel threshold? conv is small, so use
    // many slots: 512 KiB / (conv_dim 512 * 4 * 4 B) = 64 slots.
    poison_test(80, 80);
}

#[test]
fn concurrent_calls_on_one_handle_do_not_corrupt_it() {
    let cfg = tiny_config(8);
    let c = create(&cfg) as usize;
    let per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let c = c as *mut m2c_cache;
                let slot = [t];
                let mut out = vec![0f32; per];
                for i in 0..50 {
                    let v = vec![(t * 1000 + i) as f32; per];
                    // SAFETY: live handle, valid buffers.
                    unsafe {
                        assert_eq!(m2c_update_ssm(c, 1, slot.as_ptr(), 1, v.as_ptr().cast(), M2C_DTYPE_F32, per), 0);
                        assert_eq!(m2c_advance(c, slot.as_ptr(), 1, 1), 0);
                        assert_eq!(
                            m2c_read_ssm(c, 1, slot.as_ptr(), 1, out.as_mut_ptr().cast(), M2C_DTYPE_F32, per),
                            0
                        );
                    }
                    assert!(out.iter().all(|&x| x == (t * 1000 + i) as f32));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for s in 0..8 {
        let mut pos = 0;
        // SAFETY: live handle.
        assert_eq!(unsafe { m2c_position(c as *mut m2c_cache, s, &mut pos) }, 0);
        assert_eq!(pos, 50);
    }
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(c as *mut m2c_cache) };
}

#[test]
fn views_describe_the_storage() {
    let cfg = tiny_config(3);
    let c = create(&cfg);
    let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_ssm_view(c, 1, t.as_mut_ptr()) }, M2C_STATUS_OK);
    // SAFETY: written on success.
    let t = unsafe { t.assume_init() };
    assert_eq!((t.ndim, t.dtype, t.device), (4, M2C_DTYPE_F32, M2C_DEVICE_CPU));
    assert_eq!(t.shape, [3, 4, 64, 128]);
    assert_eq!(t.strides, [4 * 64 * 128, 64 * 128, 128, 1]);
    assert_eq!(t.data as usize % 64, 0);
    let mut t2 = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { m2c_conv_view(c, 2, t2.as_mut_ptr()) }, M2C_STATUS_OUT_OF_RANGE);
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(c) };
}

#[test]
fn misaligned_struct_pointers_are_refused() {
    let cfg = tiny_config(1);
    // A config copied to an odd address.
    let mut raw = vec![0u8; std::mem::size_of::<m2c_config>() + 8];
    let p = raw.as_mut_ptr().wrapping_add(1);
    // SAFETY: the buffer holds size_of::<m2c_config>() bytes after p.
    unsafe {
        std::ptr::copy_nonoverlapping((&cfg as *const m2c_config).cast::<u8>(), p, std::mem::size_of::<m2c_config>())
    };
    let mut bytes = 0u64;
    // SAFETY: a misaligned pointer is refused before it is read as a config.
    let s = unsafe { m2c_config_bytes(p.cast(), &mut bytes) };
    assert_eq!(s, M2C_STATUS_INVALID_ARG);
    assert!(last_error().contains("aligned"), "{}", last_error());
    assert_eq!(bytes, 0);
}

/// A handle on an emulated device (host memory standing in for device
/// memory, see `device::emulated`), as `m2c_create` makes for
/// `M2C_DEVICE_CUDA` in a CUDA build.
fn create_emulated(cfg: &m2c_config) -> *mut m2c_cache {
    create_emulated_on(cfg, Emu::default())
}

fn create_emulated_on(cfg: &m2c_config, emu: Emu) -> *mut m2c_cache {
    let cfg = super::config::config_from_c(cfg).unwrap();
    let dev = m2c_core::device::DeviceCache::new(cfg, Box::new(emu)).unwrap();
    let store = m2c_core::AnyCache::Device(std::sync::Mutex::new(dev));
    Box::into_raw(Box::new(m2c_cache { inner: std::sync::RwLock::new(store) }))
}

#[test]
fn the_c_api_runs_the_same_on_a_device_cache() {
    let cfg = tiny_config(3);
    let (h, d) = (create(&cfg), create_emulated(&cfg));
    let dim = conv_dim(&cfg);
    let per_slot = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let (nh, hd, n) = (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize);
    let val = |i: usize, k: usize| ((i * 7919 + k * 104729) % 1000) as f32 / 500.0 - 1.0;
    let slots = [2i32, -1, 0];
    let st: Vec<f32> = (0..3 * per_slot).map(|i| val(i, 1) * 0.1).collect();
    let w: Vec<f32> = (0..dim * 4).map(|i| val(i, 2) * 0.5).collect();
    let a: Vec<f32> = (0..nh).map(|i| -0.5 - i as f32).collect();
    for c in [h, d] {
        // SAFETY: valid pointers and lengths.
        unsafe {
            assert_eq!(
                m2c_update_ssm(c, 1, slots.as_ptr(), 3, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()),
                M2C_STATUS_OK,
                "{}",
                last_error()
            );
            let mut s = 0;
            assert_eq!(m2c_slot_acquire(c, &mut s), M2C_STATUS_OK);
        }
    }
    for step in 0..3 {
        let x: Vec<f32> = (0..3 * dim).map(|i| val(i, 3 + step)).collect();
        let mut outs = Vec::new();
        for c in [h, d] {
            let mut co = vec![9f32; 3 * dim];
            let mut y = vec![9f32; 3 * nh * hd];
            let mut args = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
            let mut sargs = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
            let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
            // SAFETY: valid pointers; the emulated device takes host addresses.
            unsafe {
                m2c_conv_args_init(args.as_mut_ptr());
                m2c_ssm_args_init(sargs.as_mut_ptr());
                m2c_ssm_io_init(io.as_mut_ptr());
                let mut args = args.assume_init();
                args.weight = w.as_ptr();
                args.weight_len = w.len();
                let s = m2c_conv_step(
                    c,
                    1,
                    slots.as_ptr(),
                    3,
                    x.as_ptr().cast(),
                    x.len(),
                    co.as_mut_ptr().cast(),
                    co.len(),
                    &args,
                );
                assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
                let mut sargs = sargs.assume_init();
                sargs.A = a.as_ptr();
                sargs.A_len = a.len();
                let mut io = io.assume_init();
                let xs = &co[..];
                let (xp, bp, cp) = (xs.as_ptr(), xs.as_ptr().add(nh * hd), xs.as_ptr().add(nh * hd + n));
                // x, B, C read from the conv output (row strides differ from
                // a real model's; both caches get the same bytes).
                io.x = xp.cast();
                io.x_len = 3 * nh * hd;
                io.dt = xp.cast();
                io.dt_len = 3 * nh;
                io.B = bp.cast();
                io.B_len = 3 * n;
                io.C = cp.cast();
                io.C_len = 3 * n;
                io.y = y.as_mut_ptr().cast();
                io.y_len = y.len();
                let s = m2c_ssm_step(c, 1, slots.as_ptr(), 3, &io, &sargs);
                assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
                // A wrong length is refused on both, before anything runs.
                io.y_len -= 1;
                assert_eq!(m2c_ssm_step(c, 1, slots.as_ptr(), 3, &io, &sargs), M2C_STATUS_SHAPE_MISMATCH);
            }
            outs.push((co, y));
        }
        assert!(outs[0] == outs[1], "step {step}: outputs differ");
    }
    // A varlen prefill (a padding and an empty sequence) and an
    // overlapping copy_slots (a swap) on both.
    let cu = [0u64, 2, 2, 5];
    let t = 5usize;
    let px: Vec<f32> = (0..t * dim).map(|i| val(i, 11)).collect();
    let (sx, sdt) = (
        (0..t * nh * hd).map(|i| val(i, 12)).collect::<Vec<f32>>(),
        (0..t * nh).map(|i| val(i, 13)).collect::<Vec<f32>>(),
    );
    let (sb, sc) =
        ((0..t * n).map(|i| val(i, 14)).collect::<Vec<f32>>(), (0..t * n).map(|i| val(i, 15)).collect::<Vec<f32>>());
    let mut results = Vec::new();
    for c in [h, d] {
        let (mut co, mut y) = (vec![9f32; t * dim], vec![9f32; t * nh * hd]);
        let mut states = vec![0f32; 3 * per_slot];
        let mut wins = vec![0f32; 3 * dim * cfg.conv_width as usize];
        // SAFETY: valid pointers and lengths; the emulated device takes
        // host addresses.
        unsafe {
            let mut args = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
            m2c_conv_args_init(args.as_mut_ptr());
            let mut args = args.assume_init();
            (args.weight, args.weight_len) = (w.as_ptr(), w.len());
            let st = m2c_conv_prefill(
                c,
                1,
                slots.as_ptr(),
                3,
                cu.as_ptr(),
                4,
                px.as_ptr().cast(),
                px.len(),
                co.as_mut_ptr().cast(),
                co.len(),
                &args,
            );
            assert_eq!(st, M2C_STATUS_OK, "{}", last_error());
            let mut sargs = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
            m2c_ssm_args_init(sargs.as_mut_ptr());
            let mut sargs = sargs.assume_init();
            (sargs.A, sargs.A_len) = (a.as_ptr(), a.len());
            let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
            m2c_ssm_io_init(io.as_mut_ptr());
            let mut io = io.assume_init();
            (io.x, io.x_len, io.dt, io.dt_len) = (sx.as_ptr().cast(), sx.len(), sdt.as_ptr().cast(), sdt.len());
            (io.B, io.B_len, io.C, io.C_len) = (sb.as_ptr().cast(), sb.len(), sc.as_ptr().cast(), sc.len());
            (io.y, io.y_len) = (y.as_mut_ptr().cast(), y.len());
            assert_eq!(
                m2c_ssm_prefill(c, 1, slots.as_ptr(), 3, cu.as_ptr(), 4, &io, &sargs),
                M2C_STATUS_OK,
                "{}",
                last_error()
            );
            assert_eq!(m2c_advance(c, [2i32].as_ptr(), 1, 2), M2C_STATUS_OK);
            assert_eq!(m2c_copy_slots(c, [0i32, 2].as_ptr(), [2i32, 0].as_ptr(), 2), M2C_STATUS_OK, "{}", last_error());
            assert_eq!(
                m2c_read_ssm(c, 1, ptr::null(), 3, states.as_mut_ptr().cast(), M2C_DTYPE_F32, states.len()),
                M2C_STATUS_OK
            );
            assert_eq!(
                m2c_read_conv(c, 1, ptr::null(), 3, wins.as_mut_ptr().cast(), M2C_DTYPE_F32, wins.len()),
                M2C_STATUS_OK
            );
        }
        let mut pos = [0u64; 3];
        for (s, p) in pos.iter_mut().enumerate() {
            // SAFETY: valid pointers.
            assert_eq!(unsafe { m2c_position(c, s as i32, p) }, M2C_STATUS_OK);
        }
        results.push((co, y, states, wins, pos));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (r0, r1) = (&results[0], &results[1]);
    assert!(bits(&r0.0) == bits(&r1.0) && bits(&r0.1) == bits(&r1.1), "prefill outputs differ");
    assert!(bits(&r0.2) == bits(&r1.2) && bits(&r0.3) == bits(&r1.3), "states after prefill and copy_slots differ");
    assert_eq!(r0.4, r1.4, "positions after copy_slots differ");
    assert_eq!(r0.4, [2, 0, 0], "the swap moved slot 2's position to slot 0");
    let mut views = Vec::new();
    let mut snaps = Vec::new();
    for c in [h, d] {
        let mut back = vec![0f32; 3 * per_slot];
        let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
        let mut size = 0usize;
        // SAFETY: valid pointers.
        unsafe {
            assert_eq!(
                m2c_read_ssm(c, 1, ptr::null(), 3, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()),
                M2C_STATUS_OK
            );
            assert_eq!(m2c_ssm_view(c, 1, t.as_mut_ptr()), M2C_STATUS_OK);
            views.push(t.assume_init().device);
            assert_eq!(m2c_slot_snapshot_size(c, &mut size), M2C_STATUS_OK);
            let mut snap = vec![0u8; size];
            let mut written = 0;
            assert_eq!(m2c_slot_save(c, 2, snap.as_mut_ptr().cast(), snap.len(), &mut written), M2C_STATUS_OK);
            assert_eq!(m2c_slot_load(c, 1, snap.as_ptr().cast(), written), M2C_STATUS_OK);
            let mut bad = 0u64;
            assert_eq!(m2c_check_finite(c, 1, &mut bad), M2C_STATUS_OK);
            snaps.push((back, snap, bad));
        }
    }
    assert!(snaps[0] == snaps[1], "states or snapshots differ");
    assert_eq!(views, [M2C_DEVICE_CPU, M2C_DEVICE_CUDA]);
    // SAFETY: live handles, destroyed once.
    unsafe {
        m2c_destroy(h);
        m2c_destroy(d);
    }
}

#[test]
fn set_stream_reaches_a_device_cache_and_a_host_cache_takes_only_null() {
    let cfg = tiny_config(2);
    let h = create(&cfg);
    let emu = Emu::default();
    let syncs = emu.syncs.clone();
    let d = create_emulated_on(&cfg, emu);
    let fake = 0x1000usize as *mut c_void;
    // SAFETY: live handles (and NULL, which is refused).
    unsafe {
        assert_eq!(m2c_set_stream(std::ptr::null_mut(), std::ptr::null_mut()), M2C_STATUS_NULL_ARG);
        assert_eq!(m2c_set_stream(h, std::ptr::null_mut()), M2C_STATUS_OK);
        assert_eq!(m2c_set_stream(h, fake), M2C_STATUS_UNSUPPORTED);
        assert!(last_error().contains("host memory"), "{}", last_error());
        let base = syncs.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(m2c_set_stream(d, fake), M2C_STATUS_OK, "{}", last_error());
        assert_eq!(syncs.load(std::sync::atomic::Ordering::Relaxed), base + 1);
        assert_eq!(m2c_set_stream(d, std::ptr::null_mut()), M2C_STATUS_OK);
        assert_eq!(syncs.load(std::sync::atomic::Ordering::Relaxed), base + 2);
        m2c_destroy(d);
        assert_eq!(syncs.load(std::sync::atomic::Ordering::Relaxed), base + 3, "destroy drains the stream");
        m2c_destroy(h);
    }
}

/// A speculative round through the C API on a host cache and on an
/// emulated device cache: the same verify outputs and, after the commit,
/// the same states and positions, bit for bit (chains, then trees with a
/// padding row; the device runs its own prefill kernels on scratch rows
/// and replays the log).
#[test]
fn a_speculative_round_is_the_same_on_a_device_cache() {
    let cfg = tiny_config(4);
    let (h, d) = (create(&cfg), create_emulated(&cfg));
    let dim = conv_dim(&cfg);
    let (nh, hd, n) = (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize);
    let per_slot = nh * hd * n;
    let val = |i: usize, k: usize| ((i * 7919 + k * 104729) % 1000) as f32 / 500.0 - 1.0;
    let st: Vec<f32> = (0..4 * per_slot).map(|i| val(i, 1) * 0.1).collect();
    let w: Vec<f32> = (0..dim * 4).map(|i| val(i, 2) * 0.5).collect();
    let a: Vec<f32> = (0..nh).map(|i| -0.5 - i as f32).collect();
    for c in [h, d] {
        for l in 0..2 {
            // SAFETY: valid pointers and lengths.
            let s = unsafe { m2c_update_ssm(c, l, ptr::null(), 4, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()) };
            assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
        }
        // SAFETY: valid handle.
        assert_eq!(unsafe { m2c_spec_reserve(c, 4) }, M2C_STATUS_OK, "{}", last_error());
    }
    let slots = [3i32, -1, 1];
    let cu = [0u64, 4, 6, 9];
    let t = 9usize;
    let tree = [-1i32, 0, 0, 2, -1, -1, -1, 0, 0];
    for (round, parents, accepted) in [(0, None, [2u32, 3]), (1, Some(&tree[..]), [4, 2])] {
        let mut results = Vec::new();
        for c in [h, d] {
            let (pp, pl) = parents.map_or((ptr::null(), 0), |p: &[i32]| (p.as_ptr(), p.len()));
            // SAFETY: valid pointers and lengths.
            let s = unsafe { m2c_spec_begin(c, slots.as_ptr(), 3, cu.as_ptr(), 4, pp, pl) };
            assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
            let mut outs = Vec::new();
            for l in 0..2u32 {
                let k = 10 * round + l as usize;
                let x: Vec<f32> = (0..t * dim).map(|i| val(i, 20 + k)).collect();
                let (xs, dt, bc) = (
                    (0..t * nh * hd).map(|i| val(i, 40 + k)).collect::<Vec<f32>>(),
                    (0..t * nh).map(|i| val(i, 60 + k)).collect::<Vec<f32>>(),
                    (0..2 * t * n).map(|i| val(i, 80 + k)).collect::<Vec<f32>>(),
                );
                let (mut co, mut y) = (vec![9f32; t * dim], vec![9f32; t * nh * hd]);
                // SAFETY: valid pointers and lengths; the emulated device
                // takes host addresses.
                unsafe {
                    let mut args = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
                    m2c_conv_args_init(args.as_mut_ptr());
                    let mut args = args.assume_init();
                    (args.weight, args.weight_len) = (w.as_ptr(), w.len());
                    let s = m2c_conv_verify(c, l, x.as_ptr().cast(), x.len(), co.as_mut_ptr().cast(), co.len(), &args);
                    assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
                    let mut sargs = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
                    m2c_ssm_args_init(sargs.as_mut_ptr());
                    let mut sargs = sargs.assume_init();
                    (sargs.A, sargs.A_len, sargs.dt_bias, sargs.dt_bias_len) = (a.as_ptr(), nh, a.as_ptr(), nh);
                    let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
                    m2c_ssm_io_init(io.as_mut_ptr());
                    let mut io = io.assume_init();
                    (io.x, io.x_len, io.dt, io.dt_len) = (xs.as_ptr().cast(), xs.len(), dt.as_ptr().cast(), dt.len());
                    (io.B, io.B_len, io.C, io.C_len) =
                        (bc.as_ptr().cast(), t * n, bc.as_ptr().add(t * n).cast(), t * n);
                    (io.y, io.y_len) = (y.as_mut_ptr().cast(), y.len());
                    let s = m2c_ssm_verify(c, l, &io, &sargs);
                    assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
                }
                outs.push((co, y));
            }
            // SAFETY: valid pointers, one count per listed slot.
            let s = unsafe { m2c_spec_commit(c, [3i32, 1].as_ptr(), 2, accepted.as_ptr()) };
            assert_eq!(s, M2C_STATUS_OK, "{}", last_error());
            let mut state = vec![0f32; 2 * 4 * per_slot];
            let mut wins = vec![0f32; 2 * 4 * dim * cfg.conv_width as usize];
            let mut pos = [0u64; 4];
            // SAFETY: valid pointers and lengths.
            unsafe {
                for l in 0..2usize {
                    let (sp, wp) = (&mut state[l * 4 * per_slot..], &mut wins[l * 4 * dim * cfg.conv_width as usize..]);
                    let len = 4 * per_slot;
                    assert_eq!(
                        m2c_read_ssm(c, l as u32, ptr::null(), 4, sp.as_mut_ptr().cast(), M2C_DTYPE_F32, len),
                        0
                    );
                    let len = 4 * dim * cfg.conv_width as usize;
                    assert_eq!(
                        m2c_read_conv(c, l as u32, ptr::null(), 4, wp.as_mut_ptr().cast(), M2C_DTYPE_F32, len),
                        0
                    );
                }
                for (s, p) in pos.iter_mut().enumerate() {
                    assert_eq!(m2c_position(c, s as i32, p), M2C_STATUS_OK);
                }
            }
            results.push((outs, state, wins, pos));
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let ((o1, s1, w1, p1), (o2, s2, w2, p2)) = (&results[0], &results[1]);
        for (l, ((c1, y1), (c2, y2))) in o1.iter().zip(o2).enumerate() {
            assert_eq!(bits(c1), bits(c2), "round {round} layer {l}: conv verify outputs differ");
            assert_eq!(bits(y1), bits(y2), "round {round} layer {l}: y differs");
        }
        assert_eq!(bits(s1), bits(s2), "round {round}: committed SSM states differ");
        assert_eq!(bits(w1), bits(w2), "round {round}: committed windows differ");
        assert_eq!(p1, p2, "round {round}: positions differ");
    }
    // Both commits moved the states: chains 2 and 3 tokens, then the tree
    // paths to node 3 (0, 2, 3) and node 1 (0, 1).
    // SAFETY: valid handles.
    let mut p = 0;
    assert_eq!(unsafe { m2c_position(d, 3, &mut p) }, M2C_STATUS_OK);
    assert_eq!(p, 2 + 3);
    assert_eq!(unsafe { m2c_position(d, 1, &mut p) }, M2C_STATUS_OK);
    assert_eq!(p, 3 + 2);
    // SAFETY: handles from create, destroyed once.
    unsafe {
        m2c_destroy(h);
        m2c_destroy(d);
    }
}
