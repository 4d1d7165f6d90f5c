//! The prefix store through the C API on device caches: checkpoints
//! inserted from and restored into device slots, and captured inside a
//! device prefill, bit for bit against the device's own states.

use crate::util::*;
use m2c_core::DType;
use m2c_core::cuda::Gpu;

/// A checkpoint moved device slot -> store -> device slot, and one captured
/// after 3 of 5 prefill tokens against a cache that prefilled only those 3.
pub(crate) fn check_store_api(gpu: &Gpu, st: DType) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    let mut push = |name: &str, r: Result<(), String>| out.push((name.into(), r.is_ok(), r.err().unwrap_or_default()));
    push("store: insert from a device slot, restore into another = the slot", insert_restore(st));
    push("store: a checkpoint captured inside a device prefill = the prefix state", capture(gpu, st));
    out
}

/// Every layer's conv window and SSM state of `slot`, as f32 bits, and its
/// position.
fn slot_bits(c: *mut m2c::m2c_cache, cfg: &m2c::m2c_config, slot: i32) -> Result<(Vec<u32>, u64), String> {
    use m2c::*;
    let dim = (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize;
    let per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let mut bits = Vec::new();
    for l in 0..cfg.num_layers {
        let (mut w, mut s) = (vec![0f32; dim * cfg.conv_width as usize], vec![0f32; per]);
        // SAFETY: host buffers of the declared lengths.
        unsafe {
            status_ok(m2c_read_conv(c, l, &slot, 1, w.as_mut_ptr().cast(), M2C_DTYPE_F32, w.len()))?;
            status_ok(m2c_read_ssm(c, l, &slot, 1, s.as_mut_ptr().cast(), M2C_DTYPE_F32, s.len()))?;
        }
        bits.extend(w.iter().chain(&s).map(|x| x.to_bits()));
    }
    let mut pos = 0;
    // SAFETY: valid out pointer.
    status_ok(unsafe { m2c_position(c, slot, &mut pos) })?;
    Ok((bits, pos))
}

/// Handles destroyed on every way out.
struct Handles(Vec<*mut m2c::m2c_cache>, *mut m2c::m2c_store);

impl Drop for Handles {
    fn drop(&mut self) {
        // SAFETY: NULL or handles from their create calls, destroyed once.
        unsafe {
            for &c in &self.0 {
                m2c::m2c_destroy(c);
            }
            m2c::m2c_store_destroy(self.1);
        }
    }
}

fn setup(st: DType, caches: usize) -> Result<(Handles, m2c::m2c_config), String> {
    use m2c::*;
    let mut cfg = api_config(st);
    cfg.device = M2C_DEVICE_CUDA;
    let mut h = Handles(Vec::new(), std::ptr::null_mut());
    for _ in 0..caches {
        let mut c = std::ptr::null_mut();
        // SAFETY: valid pointers.
        status_ok(unsafe { m2c_create(&cfg, &mut c) })?;
        h.0.push(c);
    }
    let mut sc = std::mem::MaybeUninit::<m2c_store_config>::zeroed();
    // SAFETY: valid storage and pointers.
    unsafe {
        m2c_store_config_init(sc.as_mut_ptr());
        status_ok(m2c_store_create(sc.as_ptr(), &mut h.1))?;
    }
    let mut rng = Rng::new(0x5702 + c_dtype(st) as u64);
    seed_states(&h.0, &cfg, &mut rng)?;
    for &c in &h.0 {
        let two = 2;
        // SAFETY: one slot.
        status_ok(unsafe { m2c_advance(c, &two, 1, 40) })?;
    }
    Ok((h, cfg))
}

fn insert_restore(st: DType) -> Result<(), String> {
    use m2c::*;
    let (h, cfg) = setup(st, 1)?;
    let (c, s) = (h.0[0], h.1);
    let mut key = m2c_key::default();
    let toks = [1, 2, 3];
    let mut miss = -1;
    // SAFETY: valid pointers.
    unsafe {
        status_ok(m2c_key_chain(std::ptr::null(), toks.as_ptr(), 3, &mut key))?;
        status_ok(m2c_store_insert(s, c, 2, &key, &mut miss))?;
        status_ok(m2c_store_restore(s, &key, c, 4))?;
    }
    if miss != M2C_MISS_NONE {
        return Err(format!("insert: miss {miss}"));
    }
    if slot_bits(c, &cfg, 4)? != slot_bits(c, &cfg, 2)? {
        return Err("the restored slot differs from the inserted one".into());
    }
    Ok(())
}

fn capture(gpu: &Gpu, st: DType) -> Result<(), String> {
    use m2c::*;
    let (h, cfg) = setup(st, 2)?;
    let (a, r, store) = (h.0[0], h.0[1], h.1);
    let s = &gpu.stream;
    let (hh, p, n, g) = (8usize, 64usize, 128usize, 2usize);
    let dim = 512 + 2 * g * n;
    const T: usize = 5;
    let mut rng = Rng::new(0xCA97);
    let a_log: Vec<f32> = (0..hh).map(|i| -0.25 - 0.25 * i as f32).collect();
    let da = upf(s, &a_log);
    let mut key = m2c_key::default();
    let tok = 9;
    // SAFETY: valid pointers.
    status_ok(unsafe { m2c_key_chain(std::ptr::null(), &tok, 1, &mut key) })?;
    let point = m2c_capture_point { slot: 1, tokens: 3, key };
    // SAFETY: valid pointers.
    status_ok(unsafe { m2c_capture_begin(a, store, &point, 1) })?;
    for l in 0..cfg.num_layers {
        let (x, w) = (upf(s, &rng.vec(T * dim, 1.0)), upf(s, &rng.vec(dim * 4, 0.5)));
        let (xs, dt, b, c) = (
            upf(s, &rng.vec(T * hh * p, 1.0)),
            upf(s, &rng.vec(T * hh, 1.0)),
            upf(s, &rng.vec(T * g * n, 1.0)),
            upf(s, &rng.vec(T * g * n, 1.0)),
        );
        let (co, y) = (upf(s, &vec![0f32; T * dim]), upf(s, &vec![0f32; T * hh * p]));
        let mut ca = init_structs().0;
        ca.weight = addr(s, &w) as *const f32;
        ca.weight_len = dim * 4;
        let mut sa = init_structs().1;
        sa.A = addr(s, &da) as *const f32;
        sa.A_len = hh;
        // The capturing cache runs all 5 tokens, the reference the first 3.
        for (cache, t) in [(a, T), (r, 3)] {
            let mut io = init_structs().2;
            io.x = addr(s, &xs) as *const _;
            io.x_len = t * hh * p;
            io.dt = addr(s, &dt) as *const _;
            io.dt_len = t * hh;
            io.B = addr(s, &b) as *const _;
            io.B_len = t * g * n;
            io.C = addr(s, &c) as *const _;
            io.C_len = t * g * n;
            io.y = addr(s, &y) as *mut _;
            io.y_len = t * hh * p;
            let cu = [0u64, t as u64];
            let one = 1;
            // SAFETY: device buffers of the declared lengths.
            unsafe {
                let (xp, op) = (addr(s, &x) as *const _, addr(s, &co) as *mut _);
                status_ok(m2c_conv_prefill(cache, l, &one, 1, cu.as_ptr(), 2, xp, t * dim, op, t * dim, &ca))?;
                status_ok(m2c_ssm_prefill(cache, l, &one, 1, cu.as_ptr(), 2, &io, &sa))?;
            }
        }
    }
    let one = 1;
    // SAFETY: valid handles and pointers.
    unsafe {
        status_ok(m2c_capture_end(a, store, std::ptr::null_mut(), 0))?;
        status_ok(m2c_advance(r, &one, 1, 3))?;
        status_ok(m2c_store_restore(store, &key, r, 5))?;
    }
    if slot_bits(r, &cfg, 5)? != slot_bits(r, &cfg, 1)? {
        return Err("the captured checkpoint differs from the 3-token prefix state".into());
    }
    Ok(())
}
