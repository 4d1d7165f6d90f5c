//! Format fixtures: slot snapshots and cache files written by m2c 0.1.0
//! before the workspace split (commit fd0ae5b's code), committed under
//! `tests/fixtures/`. They must keep loading, bit for bit, in every later
//! release: loading one gives exactly the state it was made from, and saving
//! that state again gives exactly the committed bytes.
//!
//! `M2C_WRITE_FIXTURES=1 cargo test --test fixtures` rewrites them; that is
//! only ever right when the format version changes.

use m2c_core::{Cache, Config, DType, Slice, Slots};
use std::path::PathBuf;

/// The shapes the fixtures cover: every storage dtype and both conv widths.
fn shapes() -> Vec<(&'static str, Config)> {
    let base = Config {
        num_layers: 2,
        num_slots: 3,
        intermediate_size: 16,
        num_heads: 4,
        head_dim: 4,
        state_size: 8,
        n_groups: 2,
        conv_kernel_size: 4,
        conv_width: 4,
        ..Config::mamba2_130m()
    };
    vec![
        ("f32-w4", Config { conv_dtype: DType::F32, ssm_dtype: DType::F32, ..base }),
        ("bf16-w3", Config { conv_width: 3, conv_dtype: DType::BF16, ssm_dtype: DType::BF16, ..base }),
        ("f16-w4", Config { conv_dtype: DType::F16, ssm_dtype: DType::F16, ..base }),
    ]
}

/// Deterministic values in [-2, 2) (SplitMix64), exactly representable in
/// every dtype's storage after rounding.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 22) as f32) - 2.0
        })
        .collect()
}

/// A cache in a known state: slots 0 and 2 acquired with distinct windows,
/// states and positions; slot 1 free and zero.
fn filled(cfg: Config) -> Cache {
    let mut c = Cache::new(cfg).unwrap();
    let sh = *c.shape();
    assert_eq!(c.slot_acquire().unwrap(), 0);
    assert_eq!(c.slot_acquire().unwrap(), 1);
    assert_eq!(c.slot_acquire().unwrap(), 2);
    c.slot_release(1).unwrap();
    for layer in 0..cfg.num_layers {
        for slot in [0i32, 2] {
            let seed = u64::from(layer) * 100 + slot as u64;
            let w = values(seed, sh.conv_dim * sh.conv_width);
            c.set_conv(layer, Slots::List(&[slot]), Slice::F32(&w)).unwrap();
            let s = values(seed + 50, sh.ssm_slot_elems);
            c.set_ssm(layer, Slots::List(&[slot]), Slice::F32(&s)).unwrap();
        }
    }
    c.advance(Slots::List(&[0]), 17).unwrap();
    c.advance(Slots::List(&[2]), 4242).unwrap();
    c
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

fn write_mode() -> bool {
    std::env::var("M2C_WRITE_FIXTURES").as_deref() == Ok("1")
}

#[test]
fn slot_snapshots_of_the_first_release_load_bit_for_bit() {
    for (name, cfg) in shapes() {
        let src = filled(cfg);
        let path = dir().join(format!("slot-{name}.m2cs"));
        let mut buf = vec![0u8; src.slot_snapshot_size()];
        let n = src.slot_save(2, &mut buf).unwrap();
        if write_mode() {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &buf[..n]).unwrap();
        }
        let fixture = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&buf[..n], &fixture[..], "{name}: today's snapshot bytes differ from the fixture");
        let mut dst = Cache::new(cfg).unwrap();
        dst.slot_load(1, &fixture).unwrap();
        assert_eq!(dst.position(1).unwrap(), 4242);
        let mut again = vec![0u8; n];
        dst.slot_save(1, &mut again).unwrap();
        assert_eq!(again, fixture, "{name}: reloaded snapshot does not save back to the same bytes");
        let sh = *dst.shape();
        for layer in 0..cfg.num_layers {
            let mut a = vec![0f32; sh.ssm_slot_elems];
            let mut b = vec![0f32; sh.ssm_slot_elems];
            src.read_ssm(layer, Slots::List(&[2]), m2c_core::SliceMut::F32(&mut a)).unwrap();
            dst.read_ssm(layer, Slots::List(&[1]), m2c_core::SliceMut::F32(&mut b)).unwrap();
            assert_eq!(a, b, "{name}: layer {layer} state");
        }
    }
}

#[test]
fn cache_files_of_the_first_release_load_bit_for_bit() {
    let tmp = std::env::temp_dir().join(format!("m2c-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (name, cfg) in shapes() {
        let src = filled(cfg);
        let path = dir().join(format!("cache-{name}.m2c"));
        if write_mode() {
            std::fs::create_dir_all(dir()).unwrap();
            src.save_file(&path).unwrap();
        }
        let fixture = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let today = tmp.join(format!("{name}.m2c"));
        src.save_file(&today).unwrap();
        assert_eq!(std::fs::read(&today).unwrap(), fixture, "{name}: today's file bytes differ from the fixture");
        let mut dst = Cache::new(cfg).unwrap();
        dst.load_file(&path).unwrap();
        assert_eq!(dst.slots_in_use(), 2);
        assert_eq!(dst.position(0).unwrap(), 17);
        assert_eq!(dst.position(1).unwrap(), 0);
        assert_eq!(dst.position(2).unwrap(), 4242);
        let again = tmp.join(format!("{name}-again.m2c"));
        dst.save_file(&again).unwrap();
        assert_eq!(
            std::fs::read(&again).unwrap(),
            fixture,
            "{name}: reloaded file does not save back to the same bytes"
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}
