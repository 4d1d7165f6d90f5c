//! Fuzz target `reshard`: arbitrary model shapes and tensor-parallel
//! layouts through `m2c_shard_config`, `m2c_reshard_plan` and
//! `m2c_snapshot_reshard`, with sources that are real rank snapshots
//! (possibly damaged) or arbitrary bytes.
//!
//! Input: bytes 0..10 pick the shape (layers 1-4, heads 1-16, head_dim 1-8,
//! state 1-8, groups 1-16, kernel 2-4, width K or K-1, storage dtypes, one
//! of them possibly invalid), tp_src, tp_dst (0-17, so 0 and non-divisors
//! occur) and a rank; byte 10 a mode (bit 0: real sources, bit 1: damage
//! one byte of them at the offset bytes 11..13 name); the rest seeds the
//! state, or is the sources' bytes.
//!
//! Asserts: no call panics or crashes; a shard is the documented rule;
//! a plan writes every destination payload byte exactly once from inside
//! a source payload; a reshard of real, undamaged sources succeeds and its
//! reverse gives the sources back byte for byte; a refused reshard writes
//! none of its outputs.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use m2c::*;

fn shard(full: &m2c_config, tp: u32, rank: u32) -> Result<(m2c_config, m2c_shard), m2c_status> {
    let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
    let mut sh = std::mem::MaybeUninit::<m2c_shard>::zeroed();
    // SAFETY: valid storage, initialised by the calls.
    unsafe {
        m2c_config_init(cfg.as_mut_ptr());
        m2c_shard_init(sh.as_mut_ptr());
        let st = m2c_shard_config(full, tp, rank, cfg.as_mut_ptr(), sh.as_mut_ptr());
        assert_ne!(st, M2C_STATUS_PANIC, "m2c_shard_config panicked: {}", last_error());
        if st != M2C_STATUS_OK {
            return Err(st);
        }
        Ok((cfg.assume_init(), sh.assume_init()))
    }
}

fn plan(full: &m2c_config, src: u32, dst: u32) -> Result<Vec<m2c_reshard_copy>, m2c_status> {
    let mut n = 0usize;
    // SAFETY: a valid config; (NULL, 0) asks for the length.
    let st = unsafe { m2c_reshard_plan(full, src, dst, std::ptr::null_mut(), 0, &mut n) };
    assert_ne!(st, M2C_STATUS_PANIC, "m2c_reshard_plan panicked: {}", last_error());
    if st != M2C_STATUS_OK {
        return Err(st);
    }
    let mut v = vec![m2c_reshard_copy::default(); n];
    // SAFETY: `v` holds `n` entries.
    let st = unsafe { m2c_reshard_plan(full, src, dst, v.as_mut_ptr(), n, &mut n) };
    assert_eq!(st, M2C_STATUS_OK, "a plan whose length was given failed: {}", last_error());
    Ok(v)
}

/// Runs m2c_snapshot_reshard into fresh buffers of the destination sizes
/// (pre-filled with 0xA5); on failure, checks they were not written.
fn reshard(full: &m2c_config, src: &[Vec<u8>], tp_dst: u32) -> Result<Vec<Vec<u8>>, m2c_status> {
    let mut dst: Vec<Vec<u8>> = Vec::new();
    for r in 0..tp_dst {
        dst.push(vec![0xA5; shard(full, tp_dst, r)?.1.snapshot_bytes as usize]);
    }
    let sp: Vec<*const std::ffi::c_void> = src.iter().map(|s| s.as_ptr().cast()).collect();
    let sl: Vec<usize> = src.iter().map(Vec::len).collect();
    let dp: Vec<*mut std::ffi::c_void> = dst.iter_mut().map(|d| d.as_mut_ptr().cast()).collect();
    let dl: Vec<usize> = dst.iter().map(Vec::len).collect();
    // SAFETY: one pointer and length per rank, each a live buffer.
    let st = unsafe {
        m2c_snapshot_reshard(full, src.len() as u32, sp.as_ptr(), sl.as_ptr(), tp_dst, dp.as_ptr(), dl.as_ptr())
    };
    assert_ne!(st, M2C_STATUS_PANIC, "m2c_snapshot_reshard panicked: {}", last_error());
    if st != M2C_STATUS_OK {
        assert!(dst.iter().all(|d| d.iter().all(|&b| b == 0xA5)), "a refused reshard wrote its output");
        return Err(st);
    }
    Ok(dst)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let kernel = 2 + u32::from(data[5] % 3);
    let mut full = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage, initialised by the call.
    let mut full = unsafe {
        m2c_config_init(full.as_mut_ptr());
        full.assume_init()
    };
    full.num_layers = 1 + u32::from(data[0] % 4);
    full.num_slots = 2;
    full.num_heads = 1 + u32::from(data[1] % 16);
    full.head_dim = 1 + u32::from(data[2] % 8);
    full.intermediate_size = full.num_heads * full.head_dim;
    full.state_size = 1 + u32::from(data[3] % 8);
    full.n_groups = 1 + u32::from(data[4] % 16);
    full.conv_kernel_size = kernel;
    full.conv_width = if data[5] & 0x80 != 0 { kernel - 1 } else { kernel };
    full.conv_dtype = u32::from(data[6] % 4);
    full.ssm_dtype = u32::from((data[6] >> 2) % 3);
    let (tp_src, tp_dst) = (u32::from(data[7] % 18), u32::from(data[8] % 18));
    let rank = u32::from(data[9] % 18);
    let mode = data[10];
    let at = usize::from(u16::from_le_bytes([data[11], data[12]]));
    let rest = &data[13..];

    // A shard is the documented rule.
    if let Ok((cfg, s)) = shard(&full, tp_src, rank) {
        assert!(tp_src >= 1 && rank < tp_src && full.num_heads % tp_src == 0);
        assert_eq!(cfg.num_heads * tp_src, full.num_heads);
        assert_eq!(s.head_begin, rank * cfg.num_heads);
        let split = full.n_groups % tp_src == 0;
        assert!(split || tp_src % full.n_groups == 0);
        assert_eq!(s.groups_replicated != 0, !split);
        assert_eq!(u64::from(cfg.intermediate_size), s.x_end - s.x_begin);
    }
    let Ok(runs) = plan(&full, tp_src, tp_dst) else { return };
    // Every destination payload byte exactly once, from inside a source payload.
    let src_sizes: Vec<usize> =
        (0..tp_src).map(|r| shard(&full, tp_src, r).expect("a planned rank").1.snapshot_bytes as usize).collect();
    let mut covered: Vec<Vec<u8>> = (0..tp_dst)
        .map(|r| vec![0u8; shard(&full, tp_dst, r).expect("a planned rank").1.snapshot_bytes as usize])
        .collect();
    for c in &runs {
        let (s, d, n) = (c.src_offset as usize, c.dst_offset as usize, c.len as usize);
        assert!(n > 0 && s >= 72 && s + n <= src_sizes[c.src_rank as usize] - 8);
        let cov = &mut covered[c.dst_rank as usize];
        assert!(d >= 72 && d + n <= cov.len() - 8);
        for b in &mut cov[d..d + n] {
            *b += 1;
        }
    }
    for cov in &covered {
        assert!(cov[72..cov.len() - 8].iter().all(|&n| n == 1), "a plan missed or repeated a destination byte");
    }

    // Sources: real rank snapshots of one state, or arbitrary bytes.
    let sources: Vec<Vec<u8>> = if mode & 1 != 0 {
        let one = Shape::from_config(&full);
        let Some(one) = one else { return };
        let cache = create(&one);
        fill(cache, &one, u64::from(rest.first().copied().unwrap_or(1)));
        let size = one.snapshot_size();
        let mut snap = vec![0u8; size];
        let mut w = 0;
        // SAFETY: live handle; a buffer of the snapshot's size.
        assert_eq!(unsafe { m2c_slot_save(cache, 1, snap.as_mut_ptr().cast(), size, &mut w) }, M2C_STATUS_OK);
        // SAFETY: created above.
        unsafe { m2c_destroy(cache) };
        let Ok(mut parts) = reshard(&full, &[snap.clone()], tp_src) else {
            panic!("splitting a real snapshot for a layout the plan accepts failed: {}", last_error());
        };
        if mode & 2 != 0 {
            let r = at % parts.len();
            let i = at % parts[r].len();
            parts[r][i] ^= 1 << (at % 8);
            assert!(reshard(&full, &parts, tp_dst).is_err(), "a damaged source was resharded");
            return;
        }
        // Real sources reshard, and back again to the same bytes.
        let out = reshard(&full, &parts, tp_dst).unwrap_or_else(|s| panic!("status {s}: {}", last_error()));
        let back = reshard(&full, &out, tp_src).unwrap_or_else(|s| panic!("status {s}: {}", last_error()));
        assert!(back == parts, "resharding there and back changed the snapshots");
        parts
    } else {
        let n = tp_src.max(1) as usize;
        let chunk = rest.len() / n;
        (0..n).map(|r| rest[r * chunk..(r + 1) * chunk].to_vec()).collect()
    };
    let _ = reshard(&full, &sources, tp_dst);
});
