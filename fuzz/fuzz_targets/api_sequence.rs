//! Fuzz target `api_sequence`: the input decodes into a small cache shape
//! and a sequence of C API calls with arbitrary arguments (wrong lengths,
//! bad, negative, repeated and out-of-range slots, bad dtypes and layers,
//! NULL and misaligned buffers, buffers that alias the cache, damaged
//! snapshots, bad kernel argument structs, bad cu_seqlens), mirrored on a
//! reference model of the whole state.
//!
//! After every call:
//! - no call ever returns M2C_STATUS_PANIC (and a panic inside the library
//!   aborts the fuzzer through libfuzzer's panic hook anyway);
//! - the harness predicts from the arguments alone whether the call must
//!   succeed, and the status must agree;
//! - a failed call leaves the state byte-identical (every layer's storage,
//!   every position, the acquired count) and writes none of its outputs;
//! - a successful data-movement call (update/set/read/reset/advance/
//!   copy_slots/acquire/release/slot save+load, and the window update of
//!   conv_step / conv_prefill) matches the model exactly (NaN payloads
//!   aside when a value is converted); ssm_step / ssm_prefill may change
//!   only the SSM state of the slots they address, in that layer, and
//!   every padding row of every output is zero.
//!
//! Encoding (see `main loop` below): byte 0 and 1 pick the shape; then each
//! call is an opcode byte followed by its argument bytes. Reading past the
//! end yields zeros, so every input is a valid program.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use m2c::*;
use std::ffi::c_void;
use std::ptr;

const MAX_CALLS: usize = 48;

// ------------------------------------------------------------------
// Argument decoders: each returns the value and whether it is valid.
// ------------------------------------------------------------------

fn layer_arg(r: &mut Reader, sh: &Shape) -> (u32, bool) {
    let b = r.u8();
    if b < 240 {
        ((b as usize % sh.layers) as u32, true)
    } else {
        let l = sh.layers as u32;
        ([l, l + 1, u32::MAX, 1 << 31][(b % 4) as usize], false)
    }
}

/// One slot index for a list entry or a single-slot call.
fn slot_entry(r: &mut Reader, num_slots: usize) -> i32 {
    let e = r.u8();
    let s = num_slots as i32;
    if e < 224 {
        (e as i32 % (s + 3)) - 2
    } else {
        [i32::MIN, -1, i32::MAX, s, s + 1, -1000, 1 << 20, -2][(e % 8) as usize]
    }
}

fn slot_in_range(s: i32, num_slots: usize) -> bool {
    s >= 0 && (s as usize) < num_slots
}

/// A slot selection: `list` None means the slots pointer is NULL.
struct SlotArg {
    list: Option<Vec<i32>>,
    n: usize,
    /// Per row: the slot it addresses, or None for padding.
    rows: Vec<Option<usize>>,
    ok: bool,
}

impl SlotArg {
    fn ptr(&self) -> *const i32 {
        self.list.as_ref().map_or(ptr::null(), |l| l.as_ptr())
    }
}

fn selection_ok(list: &[i32], num_slots: usize) -> bool {
    list.iter().all(|&s| s < 0 || (s as usize) < num_slots)
        && list.iter().enumerate().all(|(i, &s)| s < 0 || !list[..i].contains(&s))
}

fn slot_arg(r: &mut Reader, num_slots: usize) -> SlotArg {
    let b = r.u8();
    match b % 8 {
        0 | 1 => {
            let n = (b / 8) as usize % (num_slots + 1);
            SlotArg { list: None, n, rows: (0..n).map(Some).collect(), ok: true }
        }
        2 => {
            let n = num_slots + 1 + (b / 8) as usize % 3;
            SlotArg { list: None, n, rows: vec![], ok: false }
        }
        _ => {
            let n = r.u8() as usize % 8;
            let list: Vec<i32> = (0..n).map(|_| slot_entry(r, num_slots)).collect();
            let ok = selection_ok(&list, num_slots);
            let rows = list.iter().map(|&s| usize::try_from(s).ok()).collect();
            SlotArg { list: Some(list), n, rows, ok }
        }
    }
}

fn dtype_arg(r: &mut Reader) -> (u32, bool) {
    let b = r.u8();
    if b < 248 { (u32::from(b % 3), true) } else { ([3, 4, u32::MAX, 0x100][(b % 4) as usize], false) }
}

/// A length: usually the right one, sometimes off.
fn len_arg(r: &mut Reader, correct: usize, per_row: usize) -> usize {
    let b = r.u8();
    if b < 224 {
        return correct;
    }
    match b % 8 {
        0 => correct + 1,
        1 => correct.saturating_sub(1),
        2 => 0,
        3 => correct * 2 + 1,
        4 => correct + per_row.max(1),
        5 => usize::MAX,
        6 => usize::MAX / 2,
        _ => correct + 1000,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PtrMode {
    Normal,
    Null,
    Misaligned,
    /// A pointer into the cache's own storage.
    Alias,
}

fn ptr_mode(r: &mut Reader) -> PtrMode {
    match r.u8() {
        0..=231 => PtrMode::Normal,
        232..=239 => PtrMode::Null,
        240..=247 => PtrMode::Misaligned,
        _ => PtrMode::Alias,
    }
}

/// A buffer argument ready to pass: its memory, pointer, length and
/// whether (pointer, length) is acceptable in itself.
struct BufArg {
    buf: CBuf,
    mode: PtrMode,
    alias: *mut c_void,
    len: usize,
    esize: usize,
}

impl BufArg {
    /// `len` elements of `dtype` (any code: bad codes are sized as f32).
    /// Lengths too large to allocate get `correct` elements of memory: the
    /// library must refuse them before touching anything.
    fn new(dtype: u32, len: usize, correct: usize, mode: PtrMode, cache_mem: (*mut c_void, usize)) -> BufArg {
        let esize = if dtype <= M2C_DTYPE_F16 { dtype_size(dtype) } else { 4 };
        let elems = if len <= 1 << 16 { len.max(correct) } else { correct };
        let off = if mode == PtrMode::Misaligned { 1 } else { 0 };
        let buf = CBuf::new(elems * esize, off);
        // Aliasing the cache only when the claimed bytes fit inside its
        // storage (otherwise it would be our own out-of-bounds pointer).
        let mode =
            if mode == PtrMode::Alias && len.saturating_mul(esize) > cache_mem.1 { PtrMode::Normal } else { mode };
        BufArg { buf, mode, alias: cache_mem.0, len, esize }
    }
    fn fill(&mut self, dtype: u32, seed: u8) {
        let n = self.buf.bytes / self.esize;
        self.buf.fill(dtype, n, u64::from(seed) * 0x1234_5677 + 1, seed & 1 == 1);
    }
    fn ptr(&self) -> *const c_void {
        match self.mode {
            PtrMode::Null => ptr::null(),
            PtrMode::Alias => self.alias,
            _ => self.buf.ptr(),
        }
    }
    fn mut_ptr(&mut self) -> *mut c_void {
        match self.mode {
            PtrMode::Null => ptr::null_mut(),
            PtrMode::Alias => self.alias,
            _ => self.buf.mut_ptr(),
        }
    }
    /// Whether the pointer is acceptable for this length, for a buffer
    /// that may be (NULL, 0).
    fn ptr_ok(&self) -> bool {
        match self.mode {
            PtrMode::Normal => true,
            PtrMode::Null => self.len == 0,
            PtrMode::Misaligned => false,
            PtrMode::Alias => self.len == 0,
        }
    }
    /// The caller-side bytes (for checking an output was not written).
    fn bytes(&self) -> &[u8] {
        self.buf.slice()
    }
}

/// Special f32 parameter arrays (A, D, dt_bias, weight, bias).
struct ParamArg {
    data: Vec<f32>,
    null: bool,
    len: usize,
    ok: bool,
}

impl ParamArg {
    /// `required`: NULL is refused even with length 0.
    fn new(r: &mut Reader, want: usize, required: bool) -> ParamArg {
        let b = r.u8();
        let seed = r.u8();
        let mut rng = Rng::new(u64::from(seed) + 77);
        let (null, len, ok) = match b {
            0..=95 if !required => (true, 0, true),
            0..=231 => (false, want, true),
            232..=239 => (true, want, false),
            240..=247 => (true, 0, !required),
            _ => (false, if b.is_multiple_of(2) { want + 1 } else { want.saturating_sub(1) }, want == 0 && b % 2 == 1),
        };
        let data = (0..len.max(want) + 1).map(|_| value(&mut rng, seed & 3 == 3) * 0.25).collect();
        ParamArg { data, null, len, ok }
    }
    fn ptr(&self) -> *const f32 {
        if self.null { ptr::null() } else { self.data.as_ptr() }
    }
}

// ------------------------------------------------------------------
// The harness state: the cache and its model.
// ------------------------------------------------------------------

struct Harness {
    sh: Shape,
    cache: *mut m2c_cache,
    /// What the cache must hold (positions and acquired count included).
    model: Image,
    acquired: Vec<bool>,
    /// The largest storage block the views describe, for aliasing.
    cache_mem: (*mut c_void, usize),
}

/// What a call is expected to do to the model on success.
struct Expect {
    ok: bool,
    model: Image,
    acquired: Vec<bool>,
    /// SSM regions (layer, slot) the call may set to anything.
    wild_ssm: Vec<(usize, usize)>,
}

impl Harness {
    fn expect(&self, ok: bool) -> Expect {
        Expect { ok, model: self.model.clone(), acquired: self.acquired.clone(), wild_ssm: vec![] }
    }

    /// Checks the status and the state after a call; `outputs` are the
    /// caller buffers the call may write only on success (with their
    /// content before the call).
    fn check(&mut self, what: &str, st: m2c_status, mut e: Expect, outputs: &[(&[u8], &[u8])]) -> bool {
        assert_ne!(st, M2C_STATUS_PANIC, "{what}: M2C_STATUS_PANIC: {}", last_error());
        assert_ne!(st, M2C_STATUS_POISONED, "{what}: the handle is poisoned: {}", last_error());
        let after = image(self.cache, &self.sh);
        if st == M2C_STATUS_OK {
            assert!(e.ok, "{what}: a call with an invalid argument succeeded");
            for &(l, s) in &e.wild_ssm {
                let r = s * self.sh.sbytes()..(s + 1) * self.sh.sbytes();
                e.model.ssm[l][r.clone()].copy_from_slice(&after.ssm[l][r]);
            }
            for l in 0..self.sh.layers {
                if let Some(i) = same_values(self.sh.cdt, &after.conv[l], &e.model.conv[l]) {
                    panic!("{what}: conv state of layer {l} differs from the model at element {i}");
                }
                if let Some(i) = same_values(self.sh.sdt, &after.ssm[l], &e.model.ssm[l]) {
                    panic!("{what}: ssm state of layer {l} differs from the model at element {i}");
                }
            }
            assert_eq!(after.pos, e.model.pos, "{what}: positions differ from the model");
            let count = e.acquired.iter().filter(|&&a| a).count() as u32;
            assert_eq!(after.in_use, count, "{what}: slots_in_use differs from the model");
            self.model = after;
            self.acquired = e.acquired;
            true
        } else {
            assert!(!e.ok, "{what}: a valid call failed with status {st}: {}", last_error());
            assert!(
                [1, 2, 4, 5, 6, 11, 12, 13].contains(&st),
                "{what}: status {st} is not one this call documents: {}",
                last_error()
            );
            assert!(after == self.model, "{what}: a failed call (status {st}) changed the cache");
            for (i, (now, was)) in outputs.iter().enumerate() {
                assert!(now == was, "{what}: output {i} was written by a failed call");
            }
            false
        }
    }

    fn conv_range(&self, s: usize) -> std::ops::Range<usize> {
        s * self.sh.cbytes()..(s + 1) * self.sh.cbytes()
    }

    /// Pushes element row `row` of `x` (dtype `d`, `dim` per row) into the
    /// model window of slot `s`, layer `l`.
    fn push(model: &mut Image, sh: &Shape, l: usize, s: usize, x: &[u8], d: u32, row: usize) {
        let (dim, w, cd) = (sh.dim(), sh.w, sh.cdt);
        let es = dtype_size(cd);
        let win = &mut model.conv[l][s * sh.cbytes()..(s + 1) * sh.cbytes()];
        for c in 0..dim {
            let base = c * w * es;
            win.copy_within(base + es..base + w * es, base);
            convert_elem(d, x, row * dim + c, cd, win, c * w + w - 1);
        }
    }

    // ---- the calls

    fn update(&mut self, r: &mut Reader, which: u8) {
        let sh = self.sh;
        let (layer, lok) = layer_arg(r, &sh);
        let sa = slot_arg(r, sh.slots);
        let (d, dok) = dtype_arg(r);
        let per = match which {
            0 => sh.dim(),
            1 => sh.cper(),
            _ => sh.sper(),
        };
        let correct = sa.rows.len() * per;
        let len = len_arg(r, correct, per);
        let mode = ptr_mode(r);
        let seed = r.u8();
        let mut b = BufArg::new(d, len, correct, mode, self.cache_mem);
        b.fill(d, seed);
        let ok = lok && sa.ok && dok && len == correct && b.ptr_ok();
        let mut e = self.expect(ok);
        if ok {
            let l = layer as usize;
            for (row, s) in sa.rows.iter().enumerate() {
                let Some(s) = *s else { continue };
                match which {
                    0 => Self::push(&mut e.model, &sh, l, s, b.bytes(), d, row),
                    1 => {
                        for i in 0..per {
                            convert_elem(d, b.bytes(), row * per + i, sh.cdt, &mut e.model.conv[l], s * per + i);
                        }
                    }
                    _ => {
                        for i in 0..per {
                            convert_elem(d, b.bytes(), row * per + i, sh.sdt, &mut e.model.ssm[l], s * per + i);
                        }
                    }
                }
            }
        }
        // SAFETY: live handle; the buffer holds max(len, correct) elements
        // unless len is absurd (then the library must refuse it first).
        let st = unsafe {
            match which {
                0 => m2c_update_conv(self.cache, layer, sa.ptr(), sa.n, b.ptr(), d, len),
                1 => m2c_set_conv(self.cache, layer, sa.ptr(), sa.n, b.ptr(), d, len),
                _ => m2c_update_ssm(self.cache, layer, sa.ptr(), sa.n, b.ptr(), d, len),
            }
        };
        let what = format!(
            "{} layer={layer}({lok}) slots={:?}/n={}({}) dtype={d}({dok}) len={len} correct={correct} mode={:?}",
            ["update_conv", "set_conv", "update_ssm"][which as usize],
            sa.list,
            sa.n,
            sa.ok,
            b.mode
        );
        self.check(&what, st, e, &[]);
    }

    fn read(&mut self, r: &mut Reader, conv: bool) {
        let sh = self.sh;
        let (layer, lok) = layer_arg(r, &sh);
        let sa = slot_arg(r, sh.slots);
        let (d, dok) = dtype_arg(r);
        let per = if conv { sh.cper() } else { sh.sper() };
        let correct = sa.rows.len() * per;
        let len = len_arg(r, correct, per);
        let mode = ptr_mode(r);
        let mut b = BufArg::new(d, len, correct, mode, self.cache_mem);
        let before = b.bytes().to_vec();
        let ok = lok && sa.ok && dok && len == correct && b.ptr_ok();
        let e = self.expect(ok);
        let p = b.mut_ptr();
        // SAFETY: as in `update`.
        let st = unsafe {
            if conv {
                m2c_read_conv(self.cache, layer, sa.ptr(), sa.n, p, d, len)
            } else {
                m2c_read_ssm(self.cache, layer, sa.ptr(), sa.n, p, d, len)
            }
        };
        let what = if conv { "read_conv" } else { "read_ssm" };
        let model = self.model.clone();
        if self.check(what, st, e, &[(b.bytes(), &before)]) {
            let (src, sd) =
                if conv { (&model.conv[layer as usize], sh.cdt) } else { (&model.ssm[layer as usize], sh.sdt) };
            let mut want = vec![0u8; correct * dtype_size(d)];
            for (row, s) in sa.rows.iter().enumerate() {
                if let Some(s) = *s {
                    for i in 0..per {
                        convert_elem(sd, src, s * per + i, d, &mut want, row * per + i);
                    }
                }
            }
            let got = &b.bytes()[..want.len()];
            if let Some(i) = same_values(d, got, &want) {
                panic!("{what}: output element {i} differs from the model (padding rows must be zero)");
            }
        }
    }

    fn reset(&mut self, r: &mut Reader) {
        let sa = slot_arg(r, self.sh.slots);
        let mut e = self.expect(sa.ok);
        if sa.ok {
            for s in sa.rows.iter().flatten() {
                self.zero_slot(&mut e.model, *s);
            }
        }
        // SAFETY: live handle, slots valid for n entries when non-NULL.
        let st = unsafe { m2c_reset(self.cache, sa.ptr(), sa.n) };
        self.check("reset", st, e, &[]);
    }

    fn zero_slot(&self, m: &mut Image, s: usize) {
        let (cb, sb) = (self.sh.cbytes(), self.sh.sbytes());
        for l in 0..self.sh.layers {
            m.conv[l][s * cb..(s + 1) * cb].fill(0);
            m.ssm[l][s * sb..(s + 1) * sb].fill(0);
        }
        m.pos[s] = 0;
    }

    fn advance(&mut self, r: &mut Reader) {
        let sa = slot_arg(r, self.sh.slots);
        let b = r.u8();
        let k = if b < 200 { u32::from(b % 8) } else { [u32::MAX, 1000, 1 << 31, u32::MAX - 1][(b % 4) as usize] };
        let ok = sa.ok && sa.rows.iter().flatten().all(|&s| self.model.pos[s].checked_add(u64::from(k)).is_some());
        let mut e = self.expect(ok);
        if ok {
            for &s in sa.rows.iter().flatten() {
                e.model.pos[s] += u64::from(k);
            }
        }
        // SAFETY: as in `reset`.
        let st = unsafe { m2c_advance(self.cache, sa.ptr(), sa.n, k) };
        self.check("advance", st, e, &[]);
    }

    fn copy_slots(&mut self, r: &mut Reader) {
        let ns = self.sh.slots;
        let n = r.u8() as usize % 8;
        let src: Vec<i32> = (0..n).map(|_| slot_entry(r, ns)).collect();
        let mut dst: Vec<i32> = (0..n).map(|_| slot_entry(r, ns)).collect();
        // Often a permutation, so reorders are exercised.
        if r.u8().is_multiple_of(4) && n <= ns {
            dst = (0..n as i32).rev().collect();
        }
        let nulls = r.u8() % 16;
        let (sp, dp) =
            (if nulls == 0 { ptr::null() } else { src.as_ptr() }, if nulls == 1 { ptr::null() } else { dst.as_ptr() });
        let ok = n == 0
            || (nulls > 1
                && selection_ok(&dst, ns)
                && src.iter().zip(&dst).all(|(&s, &d)| d < 0 || slot_in_range(s, ns)));
        let mut e = self.expect(ok);
        if ok {
            let old = self.model.clone();
            let (cb, sb) = (self.sh.cbytes(), self.sh.sbytes());
            for (&s, &d) in src.iter().zip(&dst) {
                if d < 0 {
                    continue;
                }
                let (s, d) = (s as usize, d as usize);
                for l in 0..self.sh.layers {
                    e.model.conv[l][d * cb..(d + 1) * cb].copy_from_slice(&old.conv[l][s * cb..(s + 1) * cb]);
                    e.model.ssm[l][d * sb..(d + 1) * sb].copy_from_slice(&old.ssm[l][s * sb..(s + 1) * sb]);
                }
                e.model.pos[d] = old.pos[s];
            }
        }
        // SAFETY: live handle, src/dst valid for n entries when non-NULL.
        let st = unsafe { m2c_copy_slots(self.cache, sp, dp, n) };
        self.check("copy_slots", st, e, &[]);
    }

    fn acquire(&mut self, r: &mut Reader) {
        let null_out = r.u8().is_multiple_of(16);
        let free = self.acquired.iter().position(|&a| !a);
        let ok = !null_out && free.is_some();
        let mut e = self.expect(ok);
        if let (true, Some(s)) = (ok, free) {
            self.zero_slot(&mut e.model, s);
            e.acquired[s] = true;
        }
        let mut got = -7i32;
        let out = if null_out { ptr::null_mut() } else { &mut got as *mut i32 };
        // SAFETY: live handle, out NULL or valid.
        let st = unsafe { m2c_slot_acquire(self.cache, out) };
        if !null_out && free.is_none() {
            assert_eq!(st, M2C_STATUS_NO_FREE_SLOT, "acquire with every slot taken");
        }
        if self.check("slot_acquire", st, e, &[]) {
            assert_eq!(Some(got as usize), free, "slot_acquire must hand out the lowest free slot");
        } else {
            assert_eq!(got, -7, "slot_acquire wrote its output on failure");
        }
    }

    fn release(&mut self, r: &mut Reader) {
        let s = slot_entry(r, self.sh.slots);
        let ok = slot_in_range(s, self.sh.slots) && self.acquired[s as usize];
        let mut e = self.expect(ok);
        if ok {
            e.acquired[s as usize] = false;
        }
        // SAFETY: live handle.
        let st = unsafe { m2c_slot_release(self.cache, s) };
        self.check("slot_release", st, e, &[]);
    }

    /// The snapshot of slot `s` the model predicts.
    fn model_snapshot(&self, s: usize) -> Vec<u8> {
        let sh = &self.sh;
        let conv: Vec<&[u8]> = (0..sh.layers).map(|l| &self.model.conv[l][self.conv_range(s)]).collect();
        let ssm: Vec<&[u8]> =
            (0..sh.layers).map(|l| &self.model.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()]).collect();
        make_snapshot(sh, self.model.pos[s], &conv, &ssm)
    }

    fn save_load(&mut self, r: &mut Reader) {
        let sh = self.sh;
        let size = sh.snapshot_size();
        // ---- save
        let a = slot_entry(r, sh.slots);
        let lb = r.u8();
        let len = if lb < 200 { size } else { [size - 1, 0, size + 5, 2 * size, 1, size, 72, 80][(lb % 8) as usize] };
        let flags = r.u8();
        let (null_buf, null_written) = (flags.is_multiple_of(32), flags % 32 == 1);
        let mut buf = CBuf::new(len, 0);
        let before = buf.slice().to_vec();
        let mut written = 0xDEADusize;
        let ok = slot_in_range(a, sh.slots) && len >= size && !null_buf && !null_written;
        let e = self.expect(ok);
        let bp = if null_buf { ptr::null_mut() } else { buf.mut_ptr() };
        let wp = if null_written { ptr::null_mut() } else { &mut written as *mut usize };
        // SAFETY: live handle; buf holds len bytes.
        let st = unsafe { m2c_slot_save(self.cache, a, bp, len, wp) };
        let saved = self.check("slot_save", st, e, &[(buf.slice(), &before)]);
        if saved {
            assert_eq!(written, size, "slot_save: bytes written");
            let want = self.model_snapshot(a as usize);
            assert!(buf.slice()[..size] == want[..], "slot_save: the snapshot differs from docs/FORMATS.md");
            assert!(buf.slice()[size..].iter().all(|&x| x == 0xA5), "slot_save wrote past the snapshot");
        } else {
            assert_eq!(written, 0xDEAD, "slot_save wrote *out_written on failure");
        }
        // ---- load (the saved bytes, or the model's snapshot of some slot)
        let b = slot_entry(r, sh.slots);
        let mut bytes = if saved {
            buf.slice()[..size].to_vec()
        } else {
            self.model_snapshot(a.rem_euclid(sh.slots as i32) as usize)
        };
        let m = r.u8();
        let arg = r.u8();
        if m >= 160 {
            match m % 8 {
                0 => {
                    let i = arg as usize * 7 % bytes.len();
                    bytes[i] ^= 1 << (m % 7);
                }
                1 => bytes.truncate(bytes.len() - 1 - arg as usize % 16),
                2 => bytes.push(arg),
                3 => {
                    bytes[56..64].copy_from_slice(&(u64::MAX - u64::from(arg % 4)).to_le_bytes());
                    fix_checksum(&mut bytes);
                }
                4 => {
                    bytes[8..12].copy_from_slice(&(2 + u32::from(arg % 2) * 1000).to_le_bytes());
                    fix_checksum(&mut bytes);
                }
                5 => {
                    let f = 16 + 4 * (arg as usize % 10);
                    bytes[f] = bytes[f].wrapping_add(1 + m % 3);
                    fix_checksum(&mut bytes);
                }
                6 => {
                    bytes[12] = bytes[12].wrapping_add(8);
                    bytes[64] ^= arg | 1;
                    fix_checksum(&mut bytes);
                }
                _ => {
                    bytes[56..64].copy_from_slice(&(u64::from(arg) << (m % 40)).to_le_bytes());
                    fix_checksum(&mut bytes);
                }
            }
        }
        let alias = r.u8().is_multiple_of(32) && self.cache_mem.1 >= 1;
        let (p, l): (*const c_void, usize) = if alias {
            (self.cache_mem.0, bytes.len().min(self.cache_mem.1))
        } else {
            (bytes.as_ptr().cast(), bytes.len())
        };
        let ok = !alias && slot_in_range(b, sh.slots) && valid_snapshot(&bytes, &sh);
        let mut e = self.expect(ok);
        if ok {
            let s = b as usize;
            let mut at = 72;
            for l in 0..sh.layers {
                e.model.conv[l][s * sh.cbytes()..(s + 1) * sh.cbytes()].copy_from_slice(&bytes[at..at + sh.cbytes()]);
                at += sh.cbytes();
                e.model.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()].copy_from_slice(&bytes[at..at + sh.sbytes()]);
                at += sh.sbytes();
            }
            e.model.pos[s] = u64_at(&bytes, 56);
        }
        // SAFETY: live handle; p valid for l bytes.
        let st = unsafe { m2c_slot_load(self.cache, b, p, l) };
        self.check("slot_load", st, e, &[]);
    }

    fn conv_args(&self, r: &mut Reader, io: u32) -> (m2c_conv_args, ParamArg, ParamArg, bool) {
        let sh = &self.sh;
        let mut a = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_conv_args_init(a.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut a = unsafe { a.assume_init() };
        let mut ok = true;
        a.io_dtype = io;
        let b = r.u8();
        a.activation = if b < 240 { u32::from(b % 2) } else { [2, u32::MAX][(b % 2) as usize] };
        ok &= b < 240;
        let b = r.u8();
        if b >= 250 {
            if b.is_multiple_of(2) {
                a.reserved = 1;
            } else {
                a.struct_size = [0, 8, a.struct_size + 8][(b % 3) as usize];
            }
            ok = false;
        }
        let w = ParamArg::new(r, sh.dim() * sh.k, true);
        let bias = ParamArg::new(r, sh.dim(), false);
        a.weight = w.ptr();
        a.weight_len = w.len;
        a.bias = bias.ptr();
        a.bias_len = bias.len;
        ok &= w.ok && bias.ok;
        (a, w, bias, ok)
    }

    fn ssm_args(&self, r: &mut Reader, io: u32) -> (m2c_ssm_args, [ParamArg; 3], bool) {
        let h = self.sh.heads;
        let mut a = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_ssm_args_init(a.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut a = unsafe { a.assume_init() };
        let mut ok = true;
        a.io_dtype = io;
        let b = r.u8();
        a.dt_softplus = u32::from(b % 2);
        if b >= 250 {
            a.struct_size = [0, 8, a.struct_size + 8][(b % 3) as usize];
            ok = false;
        }
        let c = r.u8();
        if c >= 128 {
            a.dt_clamp = 1;
            let (lo, hi) = (f32::from(c % 8) / 8.0, f32::from(c / 8 % 8) / 4.0);
            if c >= 240 {
                // Not an interval.
                (a.dt_min, a.dt_max) = if c.is_multiple_of(2) { (1.0, 0.5) } else { (f32::NAN, 1.0) };
                ok = false;
            } else {
                (a.dt_min, a.dt_max) = (lo.min(hi), lo.max(hi));
            }
        }
        let pa = ParamArg::new(r, h, true);
        let pd = ParamArg::new(r, h, false);
        let pb = ParamArg::new(r, h, false);
        // A must be negative for a decaying state; keep it so.
        let mut pa = pa;
        for v in &mut pa.data {
            *v = -v.abs() - 0.01;
        }
        a.A = pa.ptr();
        a.A_len = pa.len;
        a.D = pd.ptr();
        a.D_len = pd.len;
        a.dt_bias = pb.ptr();
        a.dt_bias_len = pb.len;
        ok &= pa.ok && pd.ok && pb.ok;
        (a, [pa, pd, pb], ok)
    }

    /// cu_seqlens for `n` sequences: (array, the pointer is NULL, token
    /// count, valid).
    fn cu_arg(r: &mut Reader, n: usize) -> (Vec<u64>, bool, usize, bool) {
        let mut cu = vec![0u64];
        for _ in 0..n {
            let t = u64::from(r.u8() % 4);
            cu.push(cu.last().unwrap() + t);
        }
        let b = r.u8();
        let mut null = false;
        if b >= 224 {
            match b % 8 {
                0 => null = true,
                1 => {
                    cu.pop();
                }
                2 => cu.push(*cu.last().unwrap()),
                3 => cu[0] = 1,
                4 if n >= 1 && cu[n - 1] >= 1 => cu[n] = cu[n - 1] - 1,
                5 => *cu.last_mut().unwrap() = u64::MAX,
                _ => {}
            }
        }
        // A well-formed cu_seqlens whose total is absurd (u64::MAX) makes
        // every buffer length wrong: for the prediction that is invalid.
        let valid = !null && cu.len() == n + 1 && cu[0] == 0 && cu.windows(2).all(|w| w[0] <= w[1]) && cu[n] <= 1024;
        let total = if valid { cu[n] as usize } else { cu.last().map_or(0, |&t| t.min(64) as usize) };
        (cu, null, total, valid)
    }

    fn conv_kernel(&mut self, r: &mut Reader, prefill: bool) {
        let sh = self.sh;
        let (layer, lok) = layer_arg(r, &sh);
        let sa = slot_arg(r, sh.slots);
        let (io, dok) = dtype_arg(r);
        let (cu, cu_null, tokens, cu_ok) =
            if prefill { Self::cu_arg(r, sa.n) } else { (vec![], false, sa.rows.len(), true) };
        let (args, _w, _bias, aok) = self.conv_args(r, io);
        let correct = tokens * sh.dim();
        let xl = len_arg(r, correct, sh.dim());
        let xm = ptr_mode(r);
        let seed = r.u8();
        let mut x = BufArg::new(io, xl, correct, xm, self.cache_mem);
        x.fill(io, seed);
        let ol = len_arg(r, correct, sh.dim());
        let om = ptr_mode(r);
        let mut out = BufArg::new(io, ol, correct, om, self.cache_mem);
        let before = out.bytes().to_vec();
        let ok = lok && sa.ok && dok && cu_ok && aok && xl == correct && x.ptr_ok() && ol == correct && out.ptr_ok();
        let mut e = self.expect(ok);
        if ok {
            let l = layer as usize;
            for (i, s) in sa.rows.iter().enumerate() {
                let Some(s) = *s else { continue };
                let (t0, t1) = if prefill { (cu[i] as usize, cu[i + 1] as usize) } else { (i, i + 1) };
                for t in t0..t1 {
                    Self::push(&mut e.model, &sh, l, s, x.bytes(), io, t);
                }
            }
        }
        let cup = if cu_null { ptr::null() } else { cu.as_ptr() };
        let op = out.mut_ptr();
        // SAFETY: live handle; every buffer holds what its length claims
        // (or an absurd length the library must refuse).
        let st = unsafe {
            if prefill {
                m2c_conv_prefill(self.cache, layer, sa.ptr(), sa.n, cup, cu.len(), x.ptr(), xl, op, ol, &args)
            } else {
                m2c_conv_step(self.cache, layer, sa.ptr(), sa.n, x.ptr(), xl, op, ol, &args)
            }
        };
        let what = format!(
            "{} layer={layer}({lok}) slots={:?}/n={}({}) io={io}({dok}) cu={cu:?} null={cu_null}({cu_ok}) args={args:?}({aok}) x=({xl},{:?}) out=({ol},{:?}) correct={correct}",
            if prefill { "conv_prefill" } else { "conv_step" },
            sa.list,
            sa.n,
            sa.ok,
            x.mode,
            out.mode
        );
        if self.check(&what, st, e, &[(out.bytes(), &before)]) {
            self.check_padding(&what, &sa, &cu, prefill, out.bytes(), sh.dim() * dtype_size(io));
        }
    }

    /// Every output row of a padding row / sequence is zero.
    fn check_padding(&self, what: &str, sa: &SlotArg, cu: &[u64], prefill: bool, out: &[u8], row_bytes: usize) {
        for (i, s) in sa.rows.iter().enumerate() {
            if s.is_some() {
                continue;
            }
            let (t0, t1) = if prefill { (cu[i] as usize, cu[i + 1] as usize) } else { (i, i + 1) };
            assert!(
                out[t0 * row_bytes..t1 * row_bytes].iter().all(|&b| b == 0),
                "{what}: the output of padding row {i} is not zero"
            );
        }
    }

    fn ssm_kernel(&mut self, r: &mut Reader, prefill: bool) {
        let sh = self.sh;
        let (layer, lok) = layer_arg(r, &sh);
        let sa = slot_arg(r, sh.slots);
        let (io, dok) = dtype_arg(r);
        let (cu, cu_null, tokens, cu_ok) =
            if prefill { Self::cu_arg(r, sa.n) } else { (vec![], false, sa.rows.len(), true) };
        let (args, _params, aok) = self.ssm_args(r, io);
        let (h, hd, gn) = (sh.heads, sh.head_dim, sh.groups * sh.state);
        let per = [h * hd, h, gn, gn, h * hd, h * hd]; // x dt B C z y
        let mut bufs = Vec::new();
        let mut ok = lok && sa.ok && dok && cu_ok && aok;
        let seed = r.u8();
        for (i, &p) in per.iter().enumerate() {
            let correct = tokens * p;
            let z_none = i == 4 && r.u8().is_multiple_of(4);
            let len = if z_none { 0 } else { len_arg(r, correct, p) };
            let mode = if z_none { PtrMode::Null } else { ptr_mode(r) };
            let mut b = BufArg::new(io, len, correct, mode, self.cache_mem);
            if i < 5 {
                b.fill(io, seed.wrapping_add(i as u8 * 17));
            }
            ok &= match (i, b.mode) {
                // z is optional: (NULL, 0) means no gate.
                (4, PtrMode::Null) => len == 0,
                // The others: (NULL, 0) is an empty buffer, valid with
                // no token rows.
                _ => b.ptr_ok() && len == correct,
            };
            bufs.push(b);
        }
        let before = bufs[5].bytes().to_vec();
        let mut io_s = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_ssm_io_init(io_s.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut ios = unsafe { io_s.assume_init() };
        let bad = r.u8();
        if bad >= 250 {
            if bad.is_multiple_of(2) {
                ios.reserved = 1;
            } else {
                ios.struct_size += 8;
            }
            ok = false;
        }
        (ios.x, ios.x_len) = (bufs[0].ptr(), bufs[0].len);
        (ios.dt, ios.dt_len) = (bufs[1].ptr(), bufs[1].len);
        (ios.B, ios.B_len) = (bufs[2].ptr(), bufs[2].len);
        (ios.C, ios.C_len) = (bufs[3].ptr(), bufs[3].len);
        (ios.z, ios.z_len) = (bufs[4].ptr(), bufs[4].len);
        let yp = bufs[5].mut_ptr();
        (ios.y, ios.y_len) = (yp, bufs[5].len);
        let mut e = self.expect(ok);
        if ok {
            for (i, s) in sa.rows.iter().enumerate() {
                let Some(s) = *s else { continue };
                let n_tokens = if prefill { cu[i + 1] - cu[i] } else { 1 };
                if n_tokens > 0 {
                    e.wild_ssm.push((layer as usize, s));
                }
            }
        }
        let cup = if cu_null { ptr::null() } else { cu.as_ptr() };
        // SAFETY: live handle; every buffer holds what its length claims
        // (or an absurd length the library must refuse).
        let st = unsafe {
            if prefill {
                m2c_ssm_prefill(self.cache, layer, sa.ptr(), sa.n, cup, cu.len(), &ios, &args)
            } else {
                m2c_ssm_step(self.cache, layer, sa.ptr(), sa.n, &ios, &args)
            }
        };
        let what = format!(
            "{} layer={layer}({lok}) slots={:?}/n={}({}) io={io}({dok}) cu={cu:?} null={cu_null}({cu_ok}) args={args:?}({aok}) io={ios:?} bufs={:?}",
            if prefill { "ssm_prefill" } else { "ssm_step" },
            sa.list,
            sa.n,
            sa.ok,
            bufs.iter().map(|b| (b.len, b.mode)).collect::<Vec<_>>()
        );
        if self.check(&what, st, e, &[(bufs[5].bytes(), &before)]) {
            self.check_padding(&what, &sa, &cu, prefill, bufs[5].bytes(), h * hd * dtype_size(io));
        }
    }

    /// Queries: positions, non-finite counts, views, config, snapshot size,
    /// and m2c_set_stream; none may change anything.
    fn queries(&mut self, r: &mut Reader) {
        let sh = self.sh;
        let s = slot_entry(r, sh.slots);
        let mut out = 0xDEADu64;
        // SAFETY: live handle, valid out pointers.
        let st = unsafe { m2c_position(self.cache, s, &mut out) };
        if slot_in_range(s, sh.slots) {
            assert_eq!(st, M2C_STATUS_OK);
            assert_eq!(out, self.model.pos[s as usize], "m2c_position");
        } else {
            assert_eq!(st, M2C_STATUS_OUT_OF_RANGE);
            assert_eq!(out, 0xDEAD);
        }
        let mut nf = 0xDEADu64;
        // SAFETY: as above.
        let st = unsafe { m2c_check_finite(self.cache, s, &mut nf) };
        if slot_in_range(s, sh.slots) {
            assert_eq!(st, M2C_STATUS_OK);
            let s = s as usize;
            let mut want = 0;
            for l in 0..sh.layers {
                let c = &self.model.conv[l][self.conv_range(s)];
                want += (0..sh.cper()).filter(|&i| !load(sh.cdt, c, i).is_finite()).count();
                let m = &self.model.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()];
                want += (0..sh.sper()).filter(|&i| !load(sh.sdt, m, i).is_finite()).count();
            }
            assert_eq!(nf, want as u64, "m2c_check_finite");
        } else {
            assert_eq!(st, M2C_STATUS_OUT_OF_RANGE);
            assert_eq!(nf, 0xDEAD);
        }
        let (layer, lok) = layer_arg(r, &sh);
        let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
        // SAFETY: as above.
        let st = unsafe { m2c_conv_view(self.cache, layer, t.as_mut_ptr()) };
        assert_eq!(st == M2C_STATUS_OK, lok, "m2c_conv_view of layer {layer}");
        let mut size = 0usize;
        // SAFETY: as above.
        assert_eq!(unsafe { m2c_slot_snapshot_size(self.cache, &mut size) }, M2C_STATUS_OK);
        assert_eq!(size, sh.snapshot_size(), "m2c_slot_snapshot_size");
        // A host cache takes no stream: NULL is a no-op, anything else
        // UNSUPPORTED (the value is never dereferenced).
        let stream = usize::from(r.u8() % 2) * 0x1000;
        // SAFETY: live handle; the stream value is only compared with NULL.
        let st = unsafe { m2c_set_stream(self.cache, stream as *mut c_void) };
        assert_eq!(st, if stream == 0 { M2C_STATUS_OK } else { M2C_STATUS_UNSUPPORTED }, "m2c_set_stream");
        let e = self.expect(true);
        self.check("queries", M2C_STATUS_OK, e, &[]);
    }

    /// Output parameters and slot lists that point into the cache's own
    /// storage (and a snapshot's `out_written` inside its buffer): each call
    /// fails with INVALID_ARG and changes nothing, reads included.
    fn aliased_outputs(&mut self, r: &mut Reader) {
        let (base, len) = self.cache_mem;
        let which = r.u8() % 11;
        let need = match which {
            5 => std::mem::size_of::<m2c_config>(),
            6 => std::mem::size_of::<m2c_tensor>(),
            _ => 8,
        };
        if len < need + 8 {
            return;
        }
        let off = (r.u8() as usize * 8) % (len - need) / 8 * 8;
        // SAFETY: off + need <= len: inside layer 0's conv storage.
        let p = unsafe { base.cast::<u8>().add(off) };
        let n = 1 + r.u8() as usize % ((len - off) / 4).clamp(1, 8);
        let c = self.cache;
        let mut snap = vec![0u8; self.sh.snapshot_size() + 16];
        // SAFETY: every pointer is valid for its type (inside the storage,
        // 8-aligned, with room); the library must refuse them all.
        let st = unsafe {
            match which {
                0 => m2c_position(c, 0, p.cast()),
                1 => m2c_count_nonfinite(c, 0, p.cast()),
                2 => m2c_check_finite(c, 0, p.cast()),
                3 => m2c_slots_in_use(c, p.cast()),
                4 => m2c_slot_snapshot_size(c, p.cast()),
                5 => m2c_get_config(c, p.cast()),
                6 => m2c_conv_view(c, 0, p.cast()),
                7 => m2c_slot_acquire(c, p.cast()),
                8 => m2c_reset(c, p.cast(), n),
                9 => m2c_advance(c, p.cast(), n, 1),
                _ => {
                    let inside = snap.as_mut_ptr().add(8).cast::<usize>();
                    m2c_slot_save(c, 0, snap.as_mut_ptr().cast(), snap.len(), inside)
                }
            }
        };
        assert_eq!(st, M2C_STATUS_INVALID_ARG, "aliased output, call {which}: {}", last_error());
        let e = self.expect(false);
        self.check("aliased output", st, e, &[]);
    }

    /// Calls with a NULL handle or NULL required pointers: each fails with
    /// NULL_ARG and changes nothing.
    fn null_calls(&mut self, r: &mut Reader) {
        let which = r.u8() % 8;
        let x = [0f32; 64];
        let mut out = 0u64;
        let mut slot = 0i32;
        // SAFETY: NULL handles and NULL out pointers are documented errors.
        let st = unsafe {
            match which {
                0 => m2c_update_conv(ptr::null_mut(), 0, ptr::null(), 0, x.as_ptr().cast(), 0, 0),
                1 => m2c_reset(ptr::null_mut(), ptr::null(), 0),
                2 => m2c_slot_acquire(ptr::null_mut(), &mut slot),
                3 => m2c_slot_load(ptr::null_mut(), 0, x.as_ptr().cast(), 4),
                4 => m2c_position(self.cache, 0, ptr::null_mut()),
                5 => m2c_slot_load(self.cache, 0, ptr::null(), 8),
                6 => m2c_copy_slots(self.cache, ptr::null(), ptr::null(), 1),
                _ => m2c_check_finite(self.cache, 0, ptr::null_mut()),
            }
        };
        let _ = &mut out;
        assert_eq!(st, M2C_STATUS_NULL_ARG, "NULL argument call {which}: {}", last_error());
        let e = self.expect(false);
        self.check("null call", st, e, &[]);
    }
}

fn shape_from(r: &mut Reader) -> Shape {
    let b0 = r.u8();
    let b1 = r.u8();
    let k = 2 + (b1 as usize / 30) % 3;
    let groups = 1 + (b1 as usize / 90) % 2;
    Shape {
        layers: 1 + (b1 as usize / 5) % 3,
        slots: 1 + b1 as usize % 5,
        inter: 4,
        heads: 2,
        head_dim: 2,
        state: 2,
        groups,
        k,
        w: if (b0 / 9).is_multiple_of(2) { k } else { k - 1 },
        cdt: u32::from(b0 % 3),
        sdt: u32::from((b0 / 3) % 3),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let sh = shape_from(&mut r);
    let cache = create(&sh);
    let (cv, _) = views(cache, 0);
    let model = image(cache, &sh);
    let mut h = Harness {
        sh,
        cache,
        model,
        acquired: vec![false; sh.slots],
        cache_mem: (cv.as_ptr() as *mut c_void, cv.len()),
    };
    let mut calls = 0;
    while !r.done() && calls < MAX_CALLS {
        calls += 1;
        match r.u8() % 19 {
            0 => h.update(&mut r, 0),
            1 => h.update(&mut r, 1),
            2 => h.update(&mut r, 2),
            3 => h.read(&mut r, true),
            4 => h.read(&mut r, false),
            5 => h.reset(&mut r),
            6 => h.advance(&mut r),
            7 => h.copy_slots(&mut r),
            8 => h.acquire(&mut r),
            9 => h.release(&mut r),
            10 => h.save_load(&mut r),
            11 => h.conv_kernel(&mut r, false),
            12 => h.ssm_kernel(&mut r, false),
            13 => h.conv_kernel(&mut r, true),
            14 => h.ssm_kernel(&mut r, true),
            15 => h.queries(&mut r),
            16 => h.null_calls(&mut r),
            17 => h.aliased_outputs(&mut r),
            _ => {
                let which = r.u8() % 3;
                h.update(&mut r, which)
            }
        }
    }
    // SAFETY: handle from m2c_create, not used afterwards.
    unsafe { m2c_destroy(h.cache) };
});
