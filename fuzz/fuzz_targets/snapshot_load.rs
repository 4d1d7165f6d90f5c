//! Fuzz target `snapshot_load`: arbitrary bytes as a slot snapshot
//! (`m2c_slot_load`) and as a cache file (`m2c_load_file`), on a small
//! cache full of known state.
//!
//! Input: byte 0 is a mode, the rest the snapshot / file bytes.
//!   bit 0: rewrite the trailing checksum to match, so the fuzzer gets past
//!          it and reaches the version, fingerprint and layout checks;
//!   bits 1-2: the slot to load into (3 is out of range).
//!
//! Asserts: no crash or panic status; each call succeeds exactly when the
//! bytes are valid by docs/FORMATS.md (checked by an independent validator);
//! a failed call leaves the cache bit-for-bit unchanged (state, positions,
//! acquired slots); a successful call installs exactly the bytes given.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use m2c::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mode = data[0];
    let mut bytes = data[1..].to_vec();
    if mode & 1 != 0 {
        fix_checksum(&mut bytes);
    }
    let slot = i32::from((mode >> 1) & 3);
    let sh = SNAPSHOT_SHAPE;
    let cache = create(&sh);
    fill(cache, &sh, 7);
    // Slots 0 and 2 acquired (acquire zeroes them: refill afterwards).
    let mut s = -1;
    // SAFETY: live handle, valid out pointers.
    unsafe {
        assert_eq!(m2c_slot_acquire(cache, &mut s), M2C_STATUS_OK);
        assert_eq!(m2c_slot_acquire(cache, &mut s), M2C_STATUS_OK);
        assert_eq!(m2c_slot_acquire(cache, &mut s), M2C_STATUS_OK);
        assert_eq!(m2c_slot_release(cache, 1), M2C_STATUS_OK);
    }
    fill(cache, &sh, 9);
    let acquired = [true, false, true];

    // ---- as a slot snapshot
    let before = image(cache, &sh);
    // SAFETY: live handle; bytes is a valid buffer of its length.
    let st = unsafe { m2c_slot_load(cache, slot, bytes.as_ptr().cast(), bytes.len()) };
    assert_ne!(st, M2C_STATUS_PANIC, "m2c_slot_load panicked: {}", last_error());
    let after = image(cache, &sh);
    let valid = (slot as usize) < sh.slots && valid_snapshot(&bytes, &sh);
    if valid {
        assert_eq!(st, M2C_STATUS_OK, "a valid snapshot was refused: {}", last_error());
        let mut want = before.clone();
        let s = slot as usize;
        let mut at = 72;
        for l in 0..sh.layers {
            want.conv[l][s * sh.cbytes()..(s + 1) * sh.cbytes()].copy_from_slice(&bytes[at..at + sh.cbytes()]);
            at += sh.cbytes();
            want.ssm[l][s * sh.sbytes()..(s + 1) * sh.sbytes()].copy_from_slice(&bytes[at..at + sh.sbytes()]);
            at += sh.sbytes();
        }
        want.pos[s] = u64_at(&bytes, 56);
        assert!(after == want, "a loaded snapshot did not install exactly its bytes");
    } else {
        assert_ne!(st, M2C_STATUS_OK, "an invalid snapshot was accepted");
        assert!(
            [M2C_STATUS_CORRUPT, M2C_STATUS_INCOMPATIBLE, M2C_STATUS_OUT_OF_RANGE].contains(&st),
            "unexpected status {st}: {}",
            last_error()
        );
        assert!(after == before, "a failed m2c_slot_load changed the cache (status {st})");
    }

    // ---- as a cache file
    let path = std::env::temp_dir().join(format!("m2c-fuzz-snapshot_load-{}.m2c", std::process::id()));
    std::fs::write(&path, &bytes).expect("write the temporary file");
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    let before = image(cache, &sh);
    // Loading a slot snapshot does not change what is acquired.
    let acquired_before = acquired.to_vec();
    // SAFETY: live handle, NUL-terminated path.
    let st = unsafe { m2c_load_file(cache, cpath.as_ptr()) };
    assert_ne!(st, M2C_STATUS_PANIC, "m2c_load_file panicked: {}", last_error());
    let after = image(cache, &sh);
    let valid = valid_file(&bytes, &sh);
    let expect_acquired: Vec<bool> = if valid {
        assert_eq!(st, M2C_STATUS_OK, "a valid cache file was refused: {}", last_error());
        let mut want = before.clone();
        let mut at = 64 + 16 * sh.slots;
        for l in 0..sh.layers {
            let n = sh.slots * sh.cbytes();
            want.conv[l].copy_from_slice(&bytes[at..at + n]);
            at += n;
            let n = sh.slots * sh.sbytes();
            want.ssm[l].copy_from_slice(&bytes[at..at + n]);
            at += n;
        }
        let flags: Vec<bool> = (0..sh.slots).map(|s| u64_at(&bytes, 64 + 16 * s + 8) == 1).collect();
        for s in 0..sh.slots {
            want.pos[s] = u64_at(&bytes, 64 + 16 * s);
        }
        want.in_use = flags.iter().filter(|&&f| f).count() as u32;
        assert!(after == want, "a loaded file did not install exactly its bytes");
        flags
    } else {
        assert_ne!(st, M2C_STATUS_OK, "an invalid cache file was accepted");
        assert!(
            [M2C_STATUS_CORRUPT, M2C_STATUS_INCOMPATIBLE, M2C_STATUS_IO].contains(&st),
            "unexpected status {st}: {}",
            last_error()
        );
        assert!(after == before, "a failed m2c_load_file changed the cache (status {st})");
        acquired_before
    };
    let _ = std::fs::remove_file(&path);

    // The acquired set, exactly: acquire hands out the free slots, lowest
    // first, and then reports NO_FREE_SLOT.
    for want in (0..sh.slots).filter(|&s| !expect_acquired[s]) {
        let mut got = -1;
        // SAFETY: live handle, valid out pointer.
        assert_eq!(unsafe { m2c_slot_acquire(cache, &mut got) }, M2C_STATUS_OK);
        assert_eq!(got, want as i32, "the acquired set differs");
    }
    let mut got = -1;
    // SAFETY: as above.
    assert_eq!(unsafe { m2c_slot_acquire(cache, &mut got) }, M2C_STATUS_NO_FREE_SLOT);
    // SAFETY: handle from m2c_create, not used afterwards.
    unsafe { m2c_destroy(cache) };
});
