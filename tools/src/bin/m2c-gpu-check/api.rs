//! The C API on a device-resident cache against a host cache.

use crate::util::*;
use cudarc::driver::CudaSlice;
use m2c_core::DType;
use m2c_core::cuda::Gpu;

/// The prefill calls with cu_seqlens on a device cache: one launch per
/// layer against the CPU cache's prefill (within the kernel tolerances)
/// and bit for bit against the same tokens as single steps on a second
/// device cache; then the same step queued on a stream of the caller's
/// (`m2c_set_stream`).
pub(crate) fn check_prefill_api(gpu: &Gpu, st: DType) -> Vec<Check> {
    use m2c::*;
    let mut out: Vec<Check> = Vec::new();
    let cfg = api_config(st);
    let mut hs = [std::ptr::null_mut(); 3];
    for (i, d) in [M2C_DEVICE_CPU, M2C_DEVICE_CUDA, M2C_DEVICE_CUDA].into_iter().enumerate() {
        let mut c = cfg;
        c.device = d;
        // SAFETY: valid pointers.
        if let Err(e) = status_ok(unsafe { m2c_create(&c, &mut hs[i]) }) {
            out.push((format!("m2c_create (device {d})"), false, e));
            return out;
        }
    }
    let [cpu, dev, steps] = hs;
    let (h, p, n, g) = (8usize, 64usize, 128usize, 2usize);
    let dim = 512 + 2 * g * n;
    let s = &gpu.stream;
    let mut rng = Rng::new(0x5EED + c_dtype(st) as u64);
    // Sequences: slot 3 (5 tokens), padding (2), slot 0 (none), slot 5 (7).
    let slots = [3i32, -1, 0, 5];
    let cu: [u64; 5] = [0, 5, 7, 7, 14];
    let t = cu[4] as usize;
    let state = rng.vec(6 * h * p * n, 0.5);
    let win = rng.vec(6 * dim * 4, 1.0);
    let mut push =
        |name: &str, r: Result<(), String>| out.push((name.to_string(), r.is_ok(), r.err().unwrap_or_default()));
    let mut init = Ok(());
    for c in hs {
        // SAFETY: valid pointers and lengths (slots NULL: every slot).
        init = init.and_then(|_| unsafe {
            status_ok(m2c_update_ssm(c, 0, std::ptr::null(), 6, state.as_ptr().cast(), M2C_DTYPE_F32, state.len()))
                .and_then(|_| {
                    status_ok(m2c_set_conv(c, 0, std::ptr::null(), 6, win.as_ptr().cast(), M2C_DTYPE_F32, win.len()))
                })
        });
    }
    push("same starting state in all three caches", init);
    let x = rng.vec(t * dim, 1.0);
    let w = rng.vec(dim * 4, 0.5);
    let bias = rng.vec(dim, 0.1);
    let (xs, dts, bs, cs, zs) = (
        rng.vec(t * h * p, 1.0),
        rng.vec(t * h, 1.0),
        rng.vec(t * g * n, 1.0),
        rng.vec(t * g * n, 1.0),
        rng.vec(t * h * p, 2.0),
    );
    let a_log: Vec<f32> = (0..h).map(|i| -0.25 - 0.25 * i as f32).collect();
    let (dx, dw, db) = (upf(s, &x), upf(s, &w), upf(s, &bias));
    let (dxs, ddt, dbs, dcs, dzs, da) =
        (upf(s, &xs), upf(s, &dts), upf(s, &bs), upf(s, &cs), upf(s, &zs), upf(s, &a_log));
    // Outputs poisoned, to catch unwritten elements.
    let (mut co, mut y) = (vec![f32::NAN; t * dim], vec![f32::NAN; t * h * p]);
    let (dco, dy) = (upf(s, &co), upf(s, &y));
    let (dco2, dy2) = (upf(s, &co), upf(s, &y));
    let conv_args = |weight: *const f32, bias_p: *const f32| {
        let mut a = init_structs().0;
        a.weight = weight;
        a.weight_len = dim * 4;
        a.bias = bias_p;
        a.bias_len = dim;
        a
    };
    let ssm_args = |a_p: *const f32| {
        let mut a = init_structs().1;
        a.A = a_p;
        a.A_len = h;
        a.D = a_p;
        a.D_len = h;
        a
    };
    // io for token rows t0..t0+rows, f32, at base addresses (host or device).
    let ssm_io = |base: [usize; 6], t0: usize, rows: usize| {
        let mut io = init_structs().2;
        let at = |b: usize, per: usize| (b + 4 * t0 * per) as *const std::ffi::c_void;
        io.x = at(base[0], h * p);
        io.x_len = rows * h * p;
        io.dt = at(base[1], h);
        io.dt_len = rows * h;
        io.B = at(base[2], g * n);
        io.B_len = rows * g * n;
        io.C = at(base[3], g * n);
        io.C_len = rows * g * n;
        io.z = at(base[4], h * p);
        io.z_len = rows * h * p;
        io.y = at(base[5], h * p) as *mut _;
        io.y_len = rows * h * p;
        io
    };
    let host_io = [
        xs.as_ptr() as usize,
        dts.as_ptr() as usize,
        bs.as_ptr() as usize,
        cs.as_ptr() as usize,
        zs.as_ptr() as usize,
        y.as_mut_ptr() as usize,
    ];
    let dev_io =
        |yb: &CudaSlice<f32>| [addr(s, &dxs), addr(s, &ddt), addr(s, &dbs), addr(s, &dcs), addr(s, &dzs), addr(s, yb)];
    let (hw, hb) = (w.as_ptr(), bias.as_ptr());
    let (dwp, dbp, dap) = (addr(s, &dw) as *const f32, addr(s, &db) as *const f32, addr(s, &da) as *const f32);
    // SAFETY (all calls below): valid pointers and lengths, host buffers
    // for the CPU cache and device buffers for the device caches.
    let run = unsafe {
        let ca = conv_args(hw, hb);
        status_ok(m2c_conv_prefill(
            cpu,
            0,
            slots.as_ptr(),
            4,
            cu.as_ptr(),
            5,
            x.as_ptr().cast(),
            x.len(),
            co.as_mut_ptr().cast(),
            co.len(),
            &ca,
        ))
        .and_then(|_| {
            status_ok(m2c_ssm_prefill(
                cpu,
                0,
                slots.as_ptr(),
                4,
                cu.as_ptr(),
                5,
                &ssm_io(host_io, 0, t),
                &ssm_args(a_log.as_ptr()),
            ))
        })
        .and_then(|_| {
            let ca = conv_args(dwp, dbp);
            status_ok(m2c_conv_prefill(
                dev,
                0,
                slots.as_ptr(),
                4,
                cu.as_ptr(),
                5,
                addr(s, &dx) as *const _,
                x.len(),
                addr(s, &dco) as *mut _,
                co.len(),
                &ca,
            ))
        })
        .and_then(|_| {
            status_ok(m2c_ssm_prefill(
                dev,
                0,
                slots.as_ptr(),
                4,
                cu.as_ptr(),
                5,
                &ssm_io(dev_io(&dy), 0, t),
                &ssm_args(dap),
            ))
        })
        .and_then(|_| {
            // The same tokens one step at a time, sequence by sequence.
            let ca = conv_args(dwp, dbp);
            let sa = ssm_args(dap);
            let mut r = Ok(());
            for (i, slot) in slots.iter().enumerate() {
                for tok in cu[i] as usize..cu[i + 1] as usize {
                    r = r
                        .and_then(|_| {
                            status_ok(m2c_conv_step(
                                steps,
                                0,
                                slot,
                                1,
                                (addr(s, &dx) + 4 * tok * dim) as *const _,
                                dim,
                                (addr(s, &dco2) + 4 * tok * dim) as *mut _,
                                dim,
                                &ca,
                            ))
                        })
                        .and_then(|_| status_ok(m2c_ssm_step(steps, 0, slot, 1, &ssm_io(dev_io(&dy2), tok, 1), &sa)));
                }
            }
            r
        })
    };
    let read = |c: *mut m2c_cache| -> (Vec<f32>, Vec<f32>) {
        let mut ss = vec![0f32; 6 * h * p * n];
        let mut cw = vec![0f32; 6 * dim * 4];
        // SAFETY: valid pointers and lengths.
        unsafe {
            m2c_read_ssm(c, 0, std::ptr::null(), 6, ss.as_mut_ptr().cast(), M2C_DTYPE_F32, ss.len());
            m2c_read_conv(c, 0, std::ptr::null(), 6, cw.as_mut_ptr().cast(), M2C_DTYPE_F32, cw.len());
        }
        (ss, cw)
    };
    let checked = run.and_then(|_| {
        let (gco, gy) = (s.clone_dtoh(&dco).unwrap(), s.clone_dtoh(&dy).unwrap());
        let ((cs_, cw), (ds, dw_)) = (read(cpu), read(dev));
        let errs = [rel(&gco, &co), rel(&gy, &y), rel(&ds, &cs_), rel(&dw_, &cw)];
        let lim = [tol(DType::F32), tol(st).max(tol(DType::F32)), tol(st), tol(DType::BF16)];
        let padding_zero = gco[5 * dim..7 * dim].iter().chain(&gy[5 * h * p..7 * h * p]).all(|v| *v == 0.0);
        if gco.iter().chain(&gy).any(|v| v.is_nan()) {
            Err("an output element was left unwritten (NaN poison)".into())
        } else if !padding_zero {
            Err("padding rows are not zero".into())
        } else if errs.iter().zip(lim).any(|(e, l)| e.is_nan() || *e > l) {
            Err(format!(
                "rel err conv out {:.2e}, y {:.2e}, state {:.2e}, window {:.2e}",
                errs[0], errs[1], errs[2], errs[3]
            ))
        } else {
            Ok(())
        }
    });
    push("m2c_conv_prefill + m2c_ssm_prefill (one launch each) vs CPU prefill", checked);
    let same = (|| {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&s.clone_dtoh(&dco).unwrap()) != bits(&s.clone_dtoh(&dco2).unwrap())
            || bits(&s.clone_dtoh(&dy).unwrap()) != bits(&s.clone_dtoh(&dy2).unwrap())
        {
            return Err("outputs differ".to_string());
        }
        let ((a1, b1), (a2, b2)) = (read(dev), read(steps));
        if bits(&a1) != bits(&a2) || bits(&b1) != bits(&b2) {
            return Err("states differ".to_string());
        }
        Ok(())
    })();
    push("device prefill bit-identical to the same tokens as device steps", same);
    // A stream of the caller's: the step is queued there, reads wait for it.
    let streamed = (|| {
        let stream = gpu.ctx.new_stream().map_err(|e| e.to_string())?;
        let before = read(dev).0;
        let ca = conv_args(dwp, dbp);
        // SAFETY: a live stream of this device's primary context, kept
        // alive until the cache is back on the default stream.
        unsafe {
            status_ok(m2c_set_stream(dev, stream.cu_stream().cast()))?;
            status_ok(m2c_set_stream(steps, stream.cu_stream().cast()))?;
            let sa = ssm_args(dap);
            for c in [dev, steps] {
                status_ok(m2c_ssm_step(
                    c,
                    0,
                    slots.as_ptr(),
                    4,
                    &ssm_io(dev_io(if c == dev { &dy } else { &dy2 }), 0, 4),
                    &sa,
                ))?;
                status_ok(m2c_conv_step(
                    c,
                    0,
                    slots.as_ptr(),
                    4,
                    addr(s, &dx) as *const _,
                    4 * dim,
                    addr(s, &dco) as *mut _,
                    4 * dim,
                    &ca,
                ))?;
            }
        }
        let (after, other) = (read(dev).0, read(steps).0);
        // SAFETY: NULL selects the default stream again.
        unsafe {
            status_ok(m2c_set_stream(dev, std::ptr::null_mut()))?;
            status_ok(m2c_set_stream(steps, std::ptr::null_mut()))?;
        }
        if after == before {
            Err("the state did not change".into())
        } else if after.iter().zip(&other).any(|(a, b)| a.to_bits() != b.to_bits()) {
            Err("two caches given the same step on the stream differ".into())
        } else {
            Ok(())
        }
    })();
    push("m2c_set_stream: steps queued on a caller's stream, reads see them", streamed);
    // A CUDA graph: one step of each kernel captured on a caller's stream
    // (global capture mode, as PyTorch uses), replayed twice, against two
    // direct steps on the other cache (the two caches hold the same state
    // after the checks above).
    let graphed = (|| {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        s.synchronize().map_err(|e| e.to_string())?;
        let stream = gpu.ctx.new_stream().map_err(|e| e.to_string())?;
        let ca = conv_args(dwp, dbp);
        let sa = ssm_args(dap);
        let step = |c: *mut m2c_cache, y: &CudaSlice<f32>, co: &CudaSlice<f32>| -> Result<(), String> {
            // SAFETY: device buffers of the declared lengths.
            unsafe {
                status_ok(m2c_ssm_step(c, 0, slots.as_ptr(), 4, &ssm_io(dev_io(y), 0, 4), &sa))?;
                status_ok(m2c_conv_step(
                    c,
                    0,
                    slots.as_ptr(),
                    4,
                    addr(s, &dx) as *const _,
                    4 * dim,
                    addr(s, co) as *mut _,
                    4 * dim,
                    &ca,
                ))
            }
        };
        // SAFETY: a live stream of this context, kept alive until both
        // caches are back on the default stream.
        unsafe {
            status_ok(m2c_set_stream(dev, stream.cu_stream().cast()))?;
            status_ok(m2c_set_stream(steps, stream.cu_stream().cast()))?;
        }
        let run = (|| -> Result<(), String> {
            step(steps, &dy2, &dco2)?;
            step(steps, &dy2, &dco2)?;
            stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL).map_err(|e| e.to_string())?;
            let captured = step(dev, &dy, &dco);
            let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| e.to_string())?;
            captured.map_err(|e| format!("during capture: {e}"))?;
            let graph = graph.ok_or("empty graph")?;
            graph.launch().map_err(|e| e.to_string())?;
            graph.launch().map_err(|e| e.to_string())?;
            stream.synchronize().map_err(|e| e.to_string())
        })();
        // SAFETY: NULL selects the default stream again.
        unsafe {
            m2c_set_stream(dev, std::ptr::null_mut());
            m2c_set_stream(steps, std::ptr::null_mut());
        }
        run?;
        let ((a1, b1), (a2, b2)) = (read(dev), read(steps));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&a1) != bits(&a2) || bits(&b1) != bits(&b2) {
            return Err("the replayed graph's states differ from two direct steps".into());
        }
        Ok(())
    })();
    push("CUDA graph capture of conv_step + ssm_step (global mode), replayed twice", graphed);
    // SAFETY: live handles, destroyed once.
    unsafe {
        for c in hs {
            m2c_destroy(c);
        }
    }
    out
}

/// A batch past the launch parameters' inline slot table (300 rows and
/// 300 sequences, so the slots and offsets are uploaded): the device cache
/// against the CPU cache, a step and a prefill, all outputs poisoned first.
pub(crate) fn check_large_batch(gpu: &Gpu) -> Vec<Check> {
    use m2c::*;
    let rows = 300usize;
    let mut cfg = api_config(DType::F32);
    (cfg.num_layers, cfg.num_slots, cfg.intermediate_size) = (1, rows as u32, 64);
    (cfg.num_heads, cfg.head_dim, cfg.state_size, cfg.n_groups) = (4, 16, 32, 1);
    cfg.conv_dtype = c_dtype(DType::F32);
    let (h, p, n, g, dim) = (4usize, 16usize, 32usize, 1usize, 64 + 2 * 32);
    let mut hs = [std::ptr::null_mut(); 2];
    for (i, d) in [M2C_DEVICE_CPU, M2C_DEVICE_CUDA].into_iter().enumerate() {
        let mut c = cfg;
        c.device = d;
        // SAFETY: valid pointers.
        if let Err(e) = status_ok(unsafe { m2c_create(&c, &mut hs[i]) }) {
            return vec![(format!("m2c_create (device {d}, {rows} slots)"), false, e)];
        }
    }
    let [cpu, dev] = hs;
    let s = &gpu.stream;
    let mut rng = Rng::new(0xB16);
    let state = rng.vec(rows * h * p * n, 0.5);
    // Rows in reverse slot order, one padding row.
    let mut slots: Vec<i32> = (0..rows as i32).rev().collect();
    slots[7] = -1;
    let cu: Vec<u64> = (0..=rows as u64).map(|i| i + i / 2).collect();
    let w = rng.vec(dim * 4, 0.5);
    let a_log: Vec<f32> = (0..h).map(|i| -0.5 - 0.25 * i as f32).collect();
    let (dw, da) = (upf(s, &w), upf(s, &a_log));
    let mut out: Vec<Check> = Vec::new();
    for (what, t, cu) in [("step", rows, None), ("prefill", cu[rows] as usize, Some(&cu))] {
        let x = rng.vec(t * dim, 1.0);
        let (sx, dt, b, c) =
            (rng.vec(t * h * p, 1.0), rng.vec(t * h, 1.0), rng.vec(t * g * n, 1.0), rng.vec(t * g * n, 1.0));
        let (dx, dsx, ddt, db, dc) = (upf(s, &x), upf(s, &sx), upf(s, &dt), upf(s, &b), upf(s, &c));
        let (mut co, mut y) = (vec![f32::NAN; t * dim], vec![f32::NAN; t * h * p]);
        let (dco, dy) = (upf(s, &co), upf(s, &y));
        let mut run = |c_: *mut m2c_cache, on_dev: bool| -> Result<(), String> {
            let ad = |host: *const f32, d: &CudaSlice<f32>| if on_dev { addr(s, d) as *const f32 } else { host };
            let (mut ca, mut sa, mut io) = init_structs();
            // SAFETY: valid pointers of the declared lengths (host buffers
            // for the CPU cache, device buffers for the GPU's).
            unsafe {
                (ca.weight, ca.weight_len) = (ad(w.as_ptr(), &dw), w.len());
                (sa.A, sa.A_len) = (ad(a_log.as_ptr(), &da), h);
                (io.x, io.x_len, io.dt, io.dt_len) =
                    (ad(sx.as_ptr(), &dsx).cast(), sx.len(), ad(dt.as_ptr(), &ddt).cast(), dt.len());
                (io.B, io.B_len, io.C, io.C_len) =
                    (ad(b.as_ptr(), &db).cast(), b.len(), ad(c.as_ptr(), &dc).cast(), c.len());
                (io.y, io.y_len) = (ad(y.as_mut_ptr(), &dy) as *mut _, y.len());
                let (xp, op) = (ad(x.as_ptr(), &dx).cast(), ad(co.as_mut_ptr(), &dco) as *mut _);
                status_ok(m2c_update_ssm(
                    c_,
                    0,
                    std::ptr::null(),
                    rows,
                    state.as_ptr().cast(),
                    M2C_DTYPE_F32,
                    state.len(),
                ))?;
                match cu {
                    None => {
                        status_ok(m2c_conv_step(c_, 0, slots.as_ptr(), rows, xp, x.len(), op, co.len(), &ca))?;
                        status_ok(m2c_ssm_step(c_, 0, slots.as_ptr(), rows, &io, &sa))
                    }
                    Some(cu) => {
                        status_ok(m2c_conv_prefill(
                            c_,
                            0,
                            slots.as_ptr(),
                            rows,
                            cu.as_ptr(),
                            cu.len(),
                            xp,
                            x.len(),
                            op,
                            co.len(),
                            &ca,
                        ))?;
                        status_ok(m2c_ssm_prefill(c_, 0, slots.as_ptr(), rows, cu.as_ptr(), cu.len(), &io, &sa))
                    }
                }
            }
        };
        let checked = run(cpu, false).and_then(|_| run(dev, true)).and_then(|_| {
            let (gco, gy) = (s.clone_dtoh(&dco).unwrap(), s.clone_dtoh(&dy).unwrap());
            let read = |c_: *mut m2c_cache| {
                let mut v = vec![0f32; rows * h * p * n];
                // SAFETY: valid pointers and lengths.
                unsafe { m2c_read_ssm(c_, 0, std::ptr::null(), rows, v.as_mut_ptr().cast(), M2C_DTYPE_F32, v.len()) };
                v
            };
            let errs = [rel(&gco, &co), rel(&gy, &y), rel(&read(dev), &read(cpu))];
            if gco.iter().chain(&gy).any(|v| v.is_nan()) {
                Err("an output element was left unwritten (NaN poison)".into())
            } else if errs.iter().any(|e| e.is_nan() || *e > tol(DType::F32)) {
                Err(format!("rel err conv out {:.2e}, y {:.2e}, state {:.2e}", errs[0], errs[1], errs[2]))
            } else {
                Ok(())
            }
        });
        out.push((
            format!("{rows}-row {what} (slot table uploaded, not inline)"),
            checked.is_ok(),
            checked.err().unwrap_or_default(),
        ));
    }
    // SAFETY: live handles, destroyed once.
    unsafe {
        m2c_destroy(cpu);
        m2c_destroy(dev);
    }
    out
}

/// The C API on a device cache, call by call against a CPU cache fed the
/// same inputs (kernel inputs uploaded to device buffers for the device
/// cache). States are compared exactly where no kernel ran on them, within
/// the kernel tolerances where one did.
pub(crate) fn check_api(gpu: &Gpu, st: DType) -> Vec<Check> {
    use m2c::*;
    let mut out: Vec<Check> = Vec::new();
    let cfg = api_config(st);
    let mut handles = [std::ptr::null_mut(); 2];
    for (i, dev) in [M2C_DEVICE_CPU, M2C_DEVICE_CUDA].into_iter().enumerate() {
        let mut c = cfg;
        c.device = dev;
        // SAFETY: valid pointers.
        if let Err(e) = status_ok(unsafe { m2c_create(&c, &mut handles[i]) }) {
            out.push((format!("m2c_create (device {dev})"), false, e));
            return out;
        }
    }
    let [cpu, dev] = handles;
    let (h, p, n, g) = (8usize, 64usize, 128usize, 2usize);
    let dim = 512 + 2 * g * n;
    let per_slot = h * p * n;
    let mut rng = Rng::new(0xC0FFEE + c_dtype(st) as u64);
    let slots = [4i32, -1, 1, 0];
    let rows = slots.len();
    let s = &gpu.stream;
    let mut push =
        |name: &str, r: Result<(), String>| out.push((name.to_string(), r.is_ok(), r.err().unwrap_or_default()));
    // Copy-style calls (host buffers in and out).
    let state = rng.vec(rows * per_slot, 0.5);
    let win = rng.vec(rows * dim * 4, 1.0);
    let both = |f: &dyn Fn(*mut m2c_cache) -> m2c_status| -> Result<(), String> {
        status_ok(f(cpu))?;
        status_ok(f(dev))
    };
    // SAFETY (all calls below): valid pointers and lengths.
    push(
        "m2c_update_ssm",
        both(&|c| unsafe {
            m2c_update_ssm(c, 1, slots.as_ptr(), rows, state.as_ptr().cast(), M2C_DTYPE_F32, state.len())
        }),
    );
    push(
        "m2c_set_conv",
        both(&|c| unsafe { m2c_set_conv(c, 1, slots.as_ptr(), rows, win.as_ptr().cast(), M2C_DTYPE_F32, win.len()) }),
    );
    let read = |c: *mut m2c_cache, layer: u32| -> (Vec<f32>, Vec<f32>) {
        let mut ss = vec![0f32; 6 * per_slot];
        let mut cs = vec![0f32; 6 * dim * 4];
        unsafe {
            m2c_read_ssm(c, layer, std::ptr::null(), 6, ss.as_mut_ptr().cast(), M2C_DTYPE_F32, ss.len());
            m2c_read_conv(c, layer, std::ptr::null(), 6, cs.as_mut_ptr().cast(), M2C_DTYPE_F32, cs.len());
        }
        (ss, cs)
    };
    let exact = |what: &str| -> Result<(), String> {
        for l in 0..2 {
            if read(cpu, l) != read(dev, l) {
                return Err(format!("{what}: states differ in layer {l}"));
            }
        }
        Ok(())
    };
    push("read back after update/set (exact)", exact("update"));
    let (src, dst) = ([1i32, 4, 0], [4i32, 0, 5]);
    push(
        "m2c_copy_slots (overlapping)",
        both(&|c| unsafe { m2c_copy_slots(c, src.as_ptr(), dst.as_ptr(), 3) }).and_then(|_| exact("copy_slots")),
    );
    let mut snap_ok = Err("not run".to_string());
    unsafe {
        let mut size = 0usize;
        if status_ok(m2c_slot_snapshot_size(dev, &mut size)).is_ok() {
            let mut b = vec![0u8; size];
            let mut w = 0usize;
            snap_ok = status_ok(m2c_slot_save(dev, 4, b.as_mut_ptr().cast(), b.len(), &mut w))
                .and_then(|_| status_ok(m2c_slot_load(cpu, 2, b.as_ptr().cast(), w)))
                .and_then(|_| status_ok(m2c_slot_load(dev, 2, b.as_ptr().cast(), w)))
                .and_then(|_| exact("snapshot"));
        }
    }
    push("m2c_slot_save (device) -> m2c_slot_load (both)", snap_ok);
    let path = std::env::temp_dir().join(format!("m2c-gpu-check-{}.m2c", std::process::id()));
    let cpath = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    push(
        "m2c_save_file (device) -> m2c_load_file (both)",
        unsafe { status_ok(m2c_save_file(dev, cpath.as_ptr())) }
            .and_then(|_| both(&|c| unsafe { m2c_load_file(c, cpath.as_ptr()) }))
            .and_then(|_| exact("files")),
    );
    let _ = std::fs::remove_file(&path);
    let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
    push(
        "m2c_ssm_view returns a device pointer",
        unsafe { status_ok(m2c_ssm_view(dev, 1, t.as_mut_ptr())) }.and_then(|_| {
            let t = unsafe { t.assume_init() };
            if t.device == M2C_DEVICE_CUDA && !t.data.is_null() {
                Ok(())
            } else {
                Err(format!("device {} data {:?}", t.device, t.data))
            }
        }),
    );
    // Kernel calls: host buffers for the CPU cache, device buffers for the GPU one.
    let x = rng.vec(rows * dim, 1.0);
    let w = rng.vec(dim * 4, 0.5);
    let bias = rng.vec(dim, 0.1);
    let (dx, dw, db) = (upf(s, &x), upf(s, &w), upf(s, &bias));
    let mut dout = upf(s, &vec![f32::NAN; rows * dim]);
    let mut co = vec![f32::NAN; rows * dim];
    let mut conv_ok = unsafe {
        let mut a = init_structs().0;
        a.weight = w.as_ptr();
        a.weight_len = w.len();
        a.bias = bias.as_ptr();
        a.bias_len = bias.len();
        status_ok(m2c_conv_step(
            cpu,
            1,
            slots.as_ptr(),
            rows,
            x.as_ptr().cast(),
            x.len(),
            co.as_mut_ptr().cast(),
            co.len(),
            &a,
        ))
        .and_then(|_| {
            use cudarc::driver::{DevicePtr, DevicePtrMut};
            let (xp, _g1) = dx.device_ptr(s);
            let (wp, _g2) = dw.device_ptr(s);
            let (bp, _g3) = db.device_ptr(s);
            let (op, _g4) = dout.device_ptr_mut(s);
            a.weight = wp as usize as *const f32;
            a.bias = bp as usize as *const f32;
            status_ok(m2c_conv_step(
                dev,
                1,
                slots.as_ptr(),
                rows,
                xp as usize as *const _,
                x.len(),
                op as usize as *mut _,
                co.len(),
                &a,
            ))
        })
    };
    if conv_ok.is_ok() {
        let got = s.clone_dtoh(&dout).unwrap();
        let e = rel(&got, &co);
        if got.iter().any(|v| v.is_nan()) || e.is_nan() || e > tol(DType::F32) {
            conv_ok = Err(format!("conv outputs differ: rel err {e:.2e}"));
        }
    }
    push("m2c_conv_step on device buffers", conv_ok);
    let (xs, dts, bs, cs, zs) = (
        rng.vec(rows * h * p, 1.0),
        rng.vec(rows * h, 1.0),
        rng.vec(rows * g * n, 1.0),
        rng.vec(rows * g * n, 1.0),
        rng.vec(rows * h * p, 2.0),
    );
    let a_log: Vec<f32> = (0..h).map(|i| -0.25 - 0.25 * i as f32).collect();
    let (dxs, ddt, dbs, dcs, dzs, da) =
        (upf(s, &xs), upf(s, &dts), upf(s, &bs), upf(s, &cs), upf(s, &zs), upf(s, &a_log));
    let mut dy = upf(s, &vec![f32::NAN; rows * h * p]);
    let mut y = vec![f32::NAN; rows * h * p];
    let mut ssm_ok = unsafe {
        let (_, mut a, mut io) = init_structs();
        a.A = a_log.as_ptr();
        a.A_len = h;
        a.D = a_log.as_ptr();
        a.D_len = h;
        io.x = xs.as_ptr().cast();
        io.x_len = xs.len();
        io.dt = dts.as_ptr().cast();
        io.dt_len = dts.len();
        io.B = bs.as_ptr().cast();
        io.B_len = bs.len();
        io.C = cs.as_ptr().cast();
        io.C_len = cs.len();
        io.z = zs.as_ptr().cast();
        io.z_len = zs.len();
        io.y = y.as_mut_ptr().cast();
        io.y_len = y.len();
        status_ok(m2c_ssm_step(cpu, 1, slots.as_ptr(), rows, &io, &a)).and_then(|_| {
            use cudarc::driver::{DevicePtr, DevicePtrMut};
            let addr = |b: &CudaSlice<f32>| {
                let (p, _g) = b.device_ptr(s);
                p as usize
            };
            a.A = addr(&da) as *const f32;
            a.D = a.A;
            io.x = addr(&dxs) as *const _;
            io.dt = addr(&ddt) as *const _;
            io.B = addr(&dbs) as *const _;
            io.C = addr(&dcs) as *const _;
            io.z = addr(&dzs) as *const _;
            let (yp, _g) = dy.device_ptr_mut(s);
            io.y = yp as usize as *mut _;
            status_ok(m2c_ssm_step(dev, 1, slots.as_ptr(), rows, &io, &a))
        })
    };
    if ssm_ok.is_ok() {
        let got = s.clone_dtoh(&dy).unwrap();
        let (e, (sc, sd)) = (rel(&got, &y), (read(cpu, 1).0, read(dev, 1).0));
        let es = rel(&sd, &sc);
        if got.iter().any(|v| v.is_nan())
            || e.is_nan()
            || es.is_nan()
            || e > tol(st).max(tol(DType::F32))
            || es > tol(st)
        {
            ssm_ok = Err(format!("y rel err {e:.2e}, state rel err {es:.2e}"));
        }
    }
    push("m2c_ssm_step on device buffers (y and state)", ssm_ok);
    // A host pointer, and a device buffer shorter than declared, are refused
    // before anything runs.
    let refused = unsafe {
        let mut a = init_structs().0;
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let (wp, _g1) = dw.device_ptr(s);
        let (op, _g2) = dout.device_ptr_mut(s);
        a.weight = wp as usize as *const f32;
        a.weight_len = w.len();
        let host_x = m2c_conv_step(
            dev,
            1,
            slots.as_ptr(),
            rows,
            x.as_ptr().cast(),
            x.len(),
            op as usize as *mut _,
            co.len(),
            &a,
        );
        let short = upf(s, &x[..x.len() - 16]);
        let (sp, _g3) = short.device_ptr(s);
        let short_x = m2c_conv_step(
            dev,
            1,
            slots.as_ptr(),
            rows,
            sp as usize as *const _,
            x.len(),
            op as usize as *mut _,
            co.len(),
            &a,
        );
        // A short buffer is caught only as far as CUDA reports allocation
        // ranges (a stream-ordered pool may report the pool's): recorded.
        println!("<!-- short device buffer: status {short_x} (3 = INVALID_ARG) -->");
        if host_x == M2C_STATUS_INVALID_ARG { Ok(()) } else { Err(format!("host pointer: status {host_x}")) }
    };
    push("host pointer refused (INVALID_ARG)", refused);
    let mut nf = [0u64; 2];
    push(
        "m2c_reset + m2c_check_finite",
        both(&|c| unsafe { m2c_reset(c, [0i32, 4].as_ptr(), 2) })
            .and_then(|_| unsafe { status_ok(m2c_check_finite(dev, 4, &mut nf[0])) })
            .and_then(|_| {
                let (sd, _) = read(dev, 1);
                if nf[0] == 0 && sd[4 * per_slot..5 * per_slot].iter().all(|v| *v == 0.0) {
                    Ok(())
                } else {
                    Err("slot 4 not zeroed".into())
                }
            }),
    );
    // SAFETY: live handles, destroyed once.
    unsafe {
        m2c_destroy(cpu);
        m2c_destroy(dev);
    }
    out
}
