//! Speculative decoding through the C API on a device cache, bit for bit
//! against decode steps on a second device cache.

use crate::util::*;
use cudarc::driver::CudaSlice;
use m2c_core::DType;
use m2c_core::cuda::Gpu;

/// A round of chains (slot 2: 5 tokens, a padding row, slot 4: 3 tokens)
/// and then a round of trees on a device cache: every verify output and
/// every committed state (conv window, SSM state, position) must equal,
/// bit for bit, decode steps of the same tokens along the same paths on a
/// second device cache.
pub(crate) fn check_spec_api(gpu: &Gpu, st: DType) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    let mut push = |name: &str, r: Result<(), String>| out.push((name.into(), r.is_ok(), r.err().unwrap_or_default()));
    let slots = [2i32, -1, 4];
    let cu = [0u64, 5, 7, 10];
    push("chains: verify = steps, commit 3 and 1 tokens = steps", spec_round(gpu, st, &slots, &cu, None, &[3, 1]));
    // Slot 2: a tree with two branches (0 -> 1 -> 3, 0 -> 2 -> 4); commit
    // node 4 (path 0, 2, 4). Slot 4: three roots; commit node 2 (path 2).
    let parents = [-1, 0, 0, 1, 2, -1, -1, -1, -1, -1];
    push(
        "trees: verify = steps along each path, commit a branch = steps",
        spec_round(gpu, st, &slots, &cu, Some(&parents), &[5, 3]),
    );
    out
}

/// The path from the committed state to run-local token `node`.
fn path(parents: &[i32], node: usize) -> Vec<usize> {
    let mut p = vec![node];
    while parents[*p.last().unwrap()] >= 0 {
        p.push(parents[*p.last().unwrap()] as usize);
    }
    p.reverse();
    p
}

fn spec_round(
    gpu: &Gpu,
    st: DType,
    slots: &[i32],
    cu: &[u64],
    parents: Option<&[i32]>,
    accepted: &[u32],
) -> Result<(), String> {
    use m2c::*;
    let cfg = api_config(st);
    let layers = cfg.num_layers as usize;
    let (h, p, n, g) = (8usize, 64usize, 128usize, 2usize);
    let dim = 512 + 2 * g * n;
    let s = &gpu.stream;
    let mut rng = Rng::new(0x5BEC + c_dtype(st) as u64 + parents.map_or(0, |_| 7));
    let mut caches = Caches([std::ptr::null_mut(); 2]);
    for c in &mut caches.0 {
        let mut k = cfg;
        k.device = M2C_DEVICE_CUDA;
        // SAFETY: valid pointers.
        status_ok(unsafe { m2c_create(&k, c) })?;
    }
    let hs = caches.0;
    let [spec, steps] = hs;
    let t = cu[cu.len() - 1] as usize;
    seed_states(&hs, &cfg, &mut rng)?;
    // Per layer: the round's inputs on the device.
    struct Layer {
        x: CudaSlice<f32>,
        w: CudaSlice<f32>,
        xs: CudaSlice<f32>,
        dt: CudaSlice<f32>,
        b: CudaSlice<f32>,
        c: CudaSlice<f32>,
        z: CudaSlice<f32>,
    }
    let ins: Vec<Layer> = (0..layers)
        .map(|_| Layer {
            x: upf(s, &rng.vec(t * dim, 1.0)),
            w: upf(s, &rng.vec(dim * 4, 0.5)),
            xs: upf(s, &rng.vec(t * h * p, 1.0)),
            dt: upf(s, &rng.vec(t * h, 1.0)),
            b: upf(s, &rng.vec(t * g * n, 1.0)),
            c: upf(s, &rng.vec(t * g * n, 1.0)),
            z: upf(s, &rng.vec(t * h * p, 2.0)),
        })
        .collect();
    let a_log: Vec<f32> = (0..h).map(|i| -0.25 - 0.25 * i as f32).collect();
    let da = upf(s, &a_log);
    let conv_args = |w: &CudaSlice<f32>| {
        let mut a = init_structs().0;
        a.weight = addr(s, w) as *const f32;
        a.weight_len = dim * 4;
        a
    };
    let ssm_args = || {
        let mut a = init_structs().1;
        a.A = addr(s, &da) as *const f32;
        a.A_len = h;
        a.D = a.A;
        a.D_len = h;
        a
    };
    // io over token rows t0..t0+rows of layer `li`'s inputs, y into `y`.
    let ssm_io = |li: &Layer, y: &CudaSlice<f32>, t0: usize, rows: usize| {
        let mut io = init_structs().2;
        let at = |b: usize, per: usize| (b + 4 * t0 * per) as *const std::ffi::c_void;
        io.x = at(addr(s, &li.xs), h * p);
        io.x_len = rows * h * p;
        io.dt = at(addr(s, &li.dt), h);
        io.dt_len = rows * h;
        io.B = at(addr(s, &li.b), g * n);
        io.B_len = rows * g * n;
        io.C = at(addr(s, &li.c), g * n);
        io.C_len = rows * g * n;
        io.z = at(addr(s, &li.z), h * p);
        io.z_len = rows * h * p;
        io.y = at(addr(s, y), h * p) as *mut _;
        io.y_len = rows * h * p;
        io
    };
    // The speculative cache: verify every layer, keep the outputs.
    let parents_all: Vec<i32> = match parents {
        Some(ps) => ps.to_vec(),
        None => (0..slots.len()).flat_map(|r| (0..(cu[r + 1] - cu[r]) as i32).map(|i| i - 1)).collect(),
    };
    let (pp, pl) = parents.map_or((std::ptr::null(), 0), |ps| (ps.as_ptr(), ps.len()));
    // SAFETY: valid pointers and lengths.
    unsafe {
        status_ok(m2c_spec_reserve(spec, 5))?;
        status_ok(m2c_spec_begin(spec, slots.as_ptr(), slots.len(), cu.as_ptr(), cu.len(), pp, pl))?;
    }
    let mut verified = Vec::new(); // per layer: (conv out, y)
    for (l, li) in ins.iter().enumerate() {
        let (co, y) = (upf(s, &vec![f32::NAN; t * dim]), upf(s, &vec![f32::NAN; t * h * p]));
        let (ca, sa, io) = (conv_args(&li.w), ssm_args(), ssm_io(li, &y, 0, t));
        // SAFETY: device buffers of the declared lengths.
        unsafe {
            let (xp, op) = (addr(s, &li.x) as *const _, addr(s, &co) as *mut _);
            status_ok(m2c_conv_verify(spec, l as u32, xp, t * dim, op, t * dim, &ca))?;
            status_ok(m2c_ssm_verify(spec, l as u32, &io, &sa))?;
        }
        verified.push((s.clone_dtoh(&co).expect("dtoh"), s.clone_dtoh(&y).expect("dtoh")));
    }
    let live: Vec<i32> = slots.iter().copied().filter(|&x| x >= 0).collect();
    // SAFETY: valid pointers, one count per slot.
    status_ok(unsafe { m2c_spec_commit(spec, live.as_ptr(), live.len(), accepted.as_ptr()) })?;
    // The steps cache: every token along its path, one step at a time; the
    // outputs of each verified token, and the state after each accepted path.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut li_row = 0;
    for (r, &slot) in slots.iter().enumerate() {
        let run = cu[r] as usize..cu[r + 1] as usize;
        if slot < 0 {
            for (l, (co, y)) in verified.iter().enumerate() {
                let zero = |v: &[f32], w: usize| v[run.start * w..run.end * w].iter().all(|&x| x == 0.0);
                if !zero(co, dim) || !zero(y, h * p) {
                    return Err(format!("layer {l}: padding rows are not zero"));
                }
            }
            continue;
        }
        let k = accepted[li_row] as usize;
        li_row += 1;
        let local = &parents_all[run.clone()];
        // Every token: the path to it, stepped from the committed state
        // (restored from the speculative cache's pre-commit copy: the steps
        // cache still holds it, untouched, for this slot).
        let mut targets: Vec<usize> = (0..run.len()).collect();
        targets.push(usize::MAX); // last: the accepted path, left in place
        for &node in &targets {
            let nodes =
                if node == usize::MAX { if k == 0 { vec![] } else { path(local, k - 1) } } else { path(local, node) };
            let save_len = {
                let mut v = 0usize;
                // SAFETY: valid out pointer.
                status_ok(unsafe { m2c_slot_snapshot_size(steps, &mut v) })?;
                v
            };
            let mut snap = vec![0u8; save_len];
            let mut written = 0usize;
            // SAFETY: buffer of the reported size.
            status_ok(unsafe { m2c_slot_save(steps, slot, snap.as_mut_ptr().cast(), save_len, &mut written) })?;
            for (l, li) in ins.iter().enumerate() {
                for &i in &nodes {
                    let tok = run.start + i;
                    let (co, y) = (upf(s, &vec![0f32; dim]), upf(s, &vec![0f32; h * p]));
                    let (ca, sa, io) = (conv_args(&li.w), ssm_args(), ssm_io(li, &y, tok, 1));
                    // SAFETY: device buffers of the declared lengths.
                    unsafe {
                        let xp = (addr(s, &li.x) + 4 * tok * dim) as *const _;
                        status_ok(m2c_conv_step(steps, l as u32, &slot, 1, xp, dim, addr(s, &co) as *mut _, dim, &ca))?;
                        status_ok(m2c_ssm_step(steps, l as u32, &slot, 1, &io, &sa))?;
                    }
                    if node != usize::MAX && i == node {
                        let (vc, vy) = (&verified[l].0, &verified[l].1);
                        let (gc, gy) = (s.clone_dtoh(&co).expect("dtoh"), s.clone_dtoh(&y).expect("dtoh"));
                        if bits(&gc) != bits(&vc[tok * dim..(tok + 1) * dim]) {
                            return Err(format!(
                                "layer {l}, slot {slot}, token {i}: conv verify output differs from the steps"
                            ));
                        }
                        if bits(&gy) != bits(&vy[tok * h * p..(tok + 1) * h * p]) {
                            return Err(format!("layer {l}, slot {slot}, token {i}: y differs from the steps"));
                        }
                    }
                }
            }
            if node == usize::MAX {
                // SAFETY: one slot.
                status_ok(unsafe { m2c_advance(steps, &slot, 1, nodes.len() as u32) })?;
            } else {
                // Back to the committed state for the next token's path.
                // SAFETY: the snapshot just taken.
                status_ok(unsafe { m2c_slot_load(steps, slot, snap.as_ptr().cast(), written) })?;
            }
        }
        // The committed state: bit for bit the accepted path's steps.
        for l in 0..layers as u32 {
            let (mut a, mut b) = (vec![0f32; dim * 4], vec![0f32; dim * 4]);
            let (mut sa, mut sb) = (vec![0f32; h * p * n], vec![0f32; h * p * n]);
            // SAFETY: host buffers of the declared lengths.
            unsafe {
                status_ok(m2c_read_conv(spec, l, &slot, 1, a.as_mut_ptr().cast(), M2C_DTYPE_F32, a.len()))?;
                status_ok(m2c_read_conv(steps, l, &slot, 1, b.as_mut_ptr().cast(), M2C_DTYPE_F32, b.len()))?;
                status_ok(m2c_read_ssm(spec, l, &slot, 1, sa.as_mut_ptr().cast(), M2C_DTYPE_F32, sa.len()))?;
                status_ok(m2c_read_ssm(steps, l, &slot, 1, sb.as_mut_ptr().cast(), M2C_DTYPE_F32, sb.len()))?;
            }
            if bits(&a) != bits(&b) || bits(&sa) != bits(&sb) {
                return Err(format!("layer {l}, slot {slot}: the committed state differs from {k} accepted steps"));
            }
        }
        let (mut pa, mut pb) = (0u64, 0u64);
        // SAFETY: valid out pointers.
        unsafe {
            status_ok(m2c_position(spec, slot, &mut pa))?;
            status_ok(m2c_position(steps, slot, &mut pb))?;
        }
        if pa != pb {
            return Err(format!("slot {slot}: position {pa} after the commit, {pb} after the steps"));
        }
    }
    Ok(())
}

/// Caches destroyed on every way out.
struct Caches([*mut m2c::m2c_cache; 2]);

impl Drop for Caches {
    fn drop(&mut self) {
        for &c in &self.0 {
            // SAFETY: NULL or a handle from m2c_create, destroyed once.
            unsafe { m2c::m2c_destroy(c) };
        }
    }
}
