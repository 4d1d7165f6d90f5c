//! The prefix store: a restored checkpoint is bit for bit the state (and
//! position) of the slot it was inserted from, and decoding from it gives
//! exactly the outputs of the slot that processed the whole prefix; the
//! budget holds with LRU eviction of unpinned entries; every miss has its
//! reason; bad input changes nothing; concurrent use stays consistent.

mod common;

use common::Rng;
use m2c_core::kernels::{ConvParams, SsmInputs, SsmParams};
use m2c_core::store::{Key, Lookup, Miss, Store, chain_key};
use m2c_core::{AnyCache, Config, DType, Error, Slice, SliceMut, Slots};

fn cfg(conv: DType, ssm: DType, width: u32) -> Config {
    Config {
        num_layers: 3,
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

/// Random state in every layer of `slot`, and a position.
fn fill(c: &mut AnyCache, rng: &mut Rng, slot: i32, pos: u32) {
    let s = c.shape();
    for l in 0..c.config().num_layers {
        let w = rng.vec(s.conv_slot_elems, 1.0);
        let st = rng.vec(s.ssm_slot_elems, 1.0);
        c.set_conv(l, Slots::List(&[slot]), Slice::F32(&w)).unwrap();
        c.set_ssm(l, Slots::List(&[slot]), Slice::F32(&st)).unwrap();
    }
    c.advance(Slots::List(&[slot]), pos).unwrap();
}

/// Every stored byte of `slot` (read back in f32) and its position.
fn state(c: &AnyCache, slot: i32) -> (Vec<u32>, u64) {
    let s = c.shape();
    let mut out = Vec::new();
    for l in 0..c.config().num_layers {
        let mut w = vec![0f32; s.conv_slot_elems];
        let mut st = vec![0f32; s.ssm_slot_elems];
        c.read_conv(l, Slots::List(&[slot]), SliceMut::F32(&mut w)).unwrap();
        c.read_ssm(l, Slots::List(&[slot]), SliceMut::F32(&mut st)).unwrap();
        out.extend(w.iter().chain(&st).map(|x| x.to_bits()));
    }
    (out, c.position(slot).unwrap())
}

/// One decode token through every layer of `slot`: the outputs' bits.
fn decode(c: &mut AnyCache, slot: i32, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let cfg = c.config();
    let s = c.shape();
    let (h, p, n, g) = (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
    let mut bits = Vec::new();
    for l in 0..cfg.num_layers {
        let x = rng.vec(s.conv_dim, 1.0);
        let w = rng.vec(s.conv_dim * cfg.conv_kernel_size as usize, 0.5);
        let mut out = vec![0f32; s.conv_dim];
        let io = m2c_core::any_cache::ConvIo::Host {
            x: Slice::F32(&x),
            out: SliceMut::F32(&mut out),
            params: ConvParams { weight: &w, bias: None, silu: true },
        };
        c.conv_step(l, Slots::List(&[slot]), io).unwrap();
        let (xs, dt, b, cc) = (rng.vec(h * p, 1.0), rng.vec(h, 1.0), rng.vec(g * n, 1.0), rng.vec(g * n, 1.0));
        let a: Vec<f32> = (0..h).map(|i| -0.5 - i as f32).collect();
        let mut y = vec![0f32; h * p];
        let io = m2c_core::any_cache::SsmIo::Host {
            inputs: SsmInputs {
                x: Slice::F32(&xs),
                dt: Slice::F32(&dt),
                b: Slice::F32(&b),
                c: Slice::F32(&cc),
                z: None,
            },
            y: SliceMut::F32(&mut y),
            params: SsmParams { a: &a, d: None, dt_bias: None, dt_softplus: true, dt_limit: None },
        };
        c.ssm_step(l, Slots::List(&[slot]), io).unwrap();
        bits.extend(out.iter().chain(&y).map(|v| v.to_bits()));
    }
    bits
}

fn slot_bytes(c: &Config) -> u64 {
    Store::entry_bytes(c).unwrap()
}

#[test]
fn a_restored_checkpoint_is_the_slot_bit_for_bit_and_decodes_the_same() {
    for (conv, ssm, width) in [(DType::F32, DType::F32, 4), (DType::BF16, DType::F32, 3), (DType::F16, DType::BF16, 4)]
    {
        let c = cfg(conv, ssm, width);
        let mut rng = Rng::new(7);
        let mut a = AnyCache::new(c).unwrap();
        let mut b = AnyCache::new(Config { num_slots: 2, ..c }).unwrap(); // another cache of the shape
        let store = Store::new(10 * slot_bytes(&c), 100).unwrap();
        fill(&mut a, &mut rng, 2, 17);
        let key = chain_key(None, &[1, 2, 3]);
        assert_eq!(store.insert(&a, 2, key).unwrap(), None);
        let before = state(&a, 2);
        // The slot moves on; the checkpoint does not.
        let cont = decode(&mut a, 2, 99);
        store.restore(key, &mut a, 0).unwrap();
        store.restore(key, &mut b, 1).unwrap();
        assert_eq!(state(&a, 0), before, "{conv:?}/{ssm:?}: restore into the same cache");
        assert_eq!(state(&b, 1), before, "{conv:?}/{ssm:?}: restore into another cache");
        assert_eq!(decode(&mut a, 0, 99), cont, "decoding from the checkpoint");
        assert_eq!(decode(&mut b, 1, 99), cont, "decoding from the checkpoint in another cache");
        let st = store.stats();
        assert_eq!((st.entries, st.bytes_held, st.inserts, st.restores), (1, slot_bytes(&c), 1, 2));
    }
}

#[test]
fn the_budget_holds_with_lru_eviction_and_every_miss_has_its_reason() {
    let c = cfg(DType::F32, DType::F32, 4);
    let one = slot_bytes(&c);
    let mut rng = Rng::new(3);
    let mut cache = AnyCache::new(c).unwrap();
    for s in 0..4 {
        fill(&mut cache, &mut rng, s, s as u32);
    }
    let store = Store::new(2 * one + one / 2, 100).unwrap(); // room for two
    let k: Vec<Key> = (0..4).map(|i| chain_key(None, &[i])).collect();
    store.insert(&cache, 0, k[0]).unwrap();
    store.insert(&cache, 1, k[1]).unwrap();
    // A lookup makes k[0] the most recently used: k[1] goes first.
    assert_eq!(store.lookup(&c, &k[..1]), Lookup { blocks: 1, miss: None });
    store.insert(&cache, 2, k[2]).unwrap();
    assert_eq!(store.lookup(&c, &[k[1]]), Lookup { blocks: 0, miss: Some(Miss::Evicted) });
    assert_eq!(store.lookup(&c, &[k[3]]), Lookup { blocks: 0, miss: Some(Miss::NeverStored) });
    // The deepest usable key counts, earlier ones may be gone.
    assert_eq!(store.lookup(&c, &[k[1], k[2], k[3]]), Lookup { blocks: 2, miss: Some(Miss::NeverStored) });
    assert!(store.stats().bytes_held <= 2 * one + one / 2);
    // Pinned entries stay; an insert they leave no room for is refused
    // (nothing evicted) and remembered as such.
    store.pin(k[0]).unwrap();
    store.pin(k[2]).unwrap();
    assert_eq!(store.insert(&cache, 3, k[3]).unwrap(), Some(Miss::TooLarge));
    assert_eq!(store.lookup(&c, &[k[3]]).miss, Some(Miss::TooLarge));
    assert_eq!(store.stats().entries, 2);
    assert!(matches!(store.evict(k[0]), Err(Error::InvalidArg(_))));
    assert!(matches!(store.insert(&cache, 3, k[0]), Err(Error::InvalidArg(_))), "replacing a pinned entry");
    store.unpin(k[0]).unwrap();
    assert!(matches!(store.unpin(k[0]), Err(Error::InvalidArg(_))));
    assert_eq!(store.insert(&cache, 3, k[3]).unwrap(), None); // evicts k[0], the unpinned one
    assert_eq!(store.lookup(&c, &[k[0]]).miss, Some(Miss::Evicted));
    store.unpin(k[2]).unwrap();
    store.evict(k[2]).unwrap();
    assert_eq!(store.lookup(&c, &[k[2]]).miss, Some(Miss::Evicted));
    assert!(matches!(store.evict(k[2]), Err(Error::NotFound(_))));
    assert!(matches!(store.pin(k[1]), Err(Error::NotFound(_))));
    // A store smaller than one checkpoint: refused, with its reason.
    let tiny = Store::new(one - 1, 100).unwrap();
    assert_eq!(tiny.insert(&cache, 0, k[0]).unwrap(), Some(Miss::TooLarge));
    assert_eq!(tiny.lookup(&c, &[k[0]]).miss, Some(Miss::TooLarge));
    assert!(matches!(tiny.restore(k[0], &mut cache, 0), Err(Error::NotFound(m)) if m.contains("too large")));
    // Another shape or dtype: incompatible, for lookups and restores.
    let other = cfg(DType::F32, DType::BF16, 4);
    let mut oc = AnyCache::new(other).unwrap();
    assert_eq!(store.lookup(&other, &[k[3]]), Lookup { blocks: 0, miss: Some(Miss::Incompatible) });
    let before = state(&oc, 0);
    assert!(matches!(store.restore(k[3], &mut oc, 0), Err(Error::Incompatible(_))));
    assert_eq!(state(&oc, 0), before);
    // Without memory of misses, every missing key reads "never stored".
    let forgetful = Store::new(one + 1, 0).unwrap();
    forgetful.insert(&cache, 0, k[0]).unwrap();
    forgetful.insert(&cache, 1, k[1]).unwrap();
    assert_eq!(forgetful.lookup(&c, &[k[0]]).miss, Some(Miss::NeverStored));
    // The counters.
    let st = store.stats();
    assert_eq!(st.evictions, 3);
    assert!(st.hits >= 2 && st.misses[0] >= 2 && st.misses[1] >= 3 && st.misses[2] == 1 && st.misses[3] == 1);
}

#[test]
fn bad_input_changes_nothing() {
    let c = cfg(DType::F32, DType::F32, 4);
    assert!(matches!(Store::new(0, 10), Err(Error::InvalidArg(_))));
    let store = Store::new(1 << 24, 10).unwrap();
    let mut cache = AnyCache::new(c).unwrap();
    let k = chain_key(None, &[5]);
    assert!(matches!(store.insert(&cache, 4, k), Err(Error::OutOfRange(_))));
    assert!(matches!(store.insert(&cache, -1, k), Err(Error::OutOfRange(_))));
    assert_eq!(store.stats().entries, 0);
    assert!(matches!(store.restore(k, &mut cache, 0), Err(Error::NotFound(_))));
    store.insert(&cache, 0, k).unwrap();
    assert!(matches!(store.restore(k, &mut cache, 9), Err(Error::OutOfRange(_))));
    assert_eq!(store.stats().restores, 0);
    assert_eq!(store.lookup(&c, &[]), Lookup { blocks: 0, miss: None });
}

#[test]
fn chained_keys_name_prefixes() {
    let a = chain_key(None, &[1, 2, 3, 4]);
    let b = chain_key(Some(a), &[5, 6]);
    assert_eq!(a, chain_key(None, &[1, 2, 3, 4]), "deterministic");
    assert_ne!(a, chain_key(None, &[1, 2, 3, 5]));
    assert_ne!(b, chain_key(Some(a), &[5, 7]));
    assert_ne!(b, chain_key(None, &[5, 6]), "the same block after another prefix");
    assert_ne!(chain_key(None, &[]), chain_key(Some(0), &[]));
    // Pinned values: engines may persist keys, so they never change.
    assert_eq!(a, 0x31c3_6648_5599_f4b6_32d9_870b_7fe2_528a);
    assert_eq!(b, 0xe9de_02fa_0cb5_6ad3_cdc4_9828_af55_421c);
    let k = chain_key(None, &[0]);
    assert_ne!(k as u64, (k >> 64) as u64);
}

#[test]
fn concurrent_inserts_lookups_and_restores_stay_consistent() {
    let c = cfg(DType::F32, DType::F32, 4);
    let one = slot_bytes(&c);
    let store = std::sync::Arc::new(Store::new(6 * one, 1000).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut cache = AnyCache::new(Config { num_slots: 2, ..c }).unwrap();
                for i in 0..40 {
                    let key = chain_key(None, &[t as i32, i]);
                    fill(&mut cache, &mut rng, 0, i as u32);
                    let want = state(&cache, 0);
                    assert_eq!(store.insert(&cache, 0, key).unwrap(), None);
                    // Another thread may evict it at any time; a restore
                    // either finds exactly what was stored or a miss.
                    match store.restore(key, &mut cache, 1) {
                        Ok(()) => assert_eq!(state(&cache, 1), want, "thread {t} key {i}"),
                        Err(Error::NotFound(m)) => assert!(m.contains("evicted"), "{m}"),
                        Err(e) => panic!("{e}"),
                    }
                    let l = store.lookup(&c, &[key]);
                    assert!(l.blocks == 1 || l.miss == Some(Miss::Evicted));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = store.stats();
    assert_eq!(st.inserts, 160);
    assert!(st.bytes_held <= 6 * one && st.entries == st.bytes_held / one);
    assert_eq!(st.inserts - st.evictions, st.entries);
}

#[test]
fn a_restore_ends_the_slots_speculative_run_and_a_checkpoint_sees_committed_state_only() {
    let c = cfg(DType::F32, DType::F32, 4);
    let mut cache = AnyCache::new(c).unwrap();
    let mut rng = Rng::new(8);
    fill(&mut cache, &mut rng, 0, 3);
    fill(&mut cache, &mut rng, 1, 4);
    let store = Store::new(1 << 24, 8).unwrap();
    let k = chain_key(None, &[77]);
    store.insert(&cache, 0, k).unwrap();
    cache.spec_reserve(2).unwrap();
    cache.spec_begin(Slots::List(&[0, 1]), &[0, 2, 4], None).unwrap();
    // A checkpoint taken during the round holds the committed state.
    let k1 = chain_key(None, &[78]);
    let before = state(&cache, 1);
    store.insert(&cache, 1, k1).unwrap();
    let mut other = AnyCache::new(c).unwrap();
    store.restore(k1, &mut other, 1).unwrap();
    assert_eq!(state(&other, 1), before);
    // A restore into slot 0 drops it from the round: its commit is refused,
    // slot 1's is not.
    store.restore(k, &mut cache, 0).unwrap();
    assert!(matches!(cache.spec_commit(Slots::List(&[0]), &[0]), Err(Error::InvalidArg(_))));
    cache.spec_commit(Slots::List(&[1]), &[0]).unwrap();
}

#[test]
fn reduced_precision_tiers_restore_within_their_rounding_and_take_less_room() {
    use m2c_core::tier::Tier;
    for ssm in [DType::F32, DType::BF16] {
        let c = cfg(DType::BF16, ssm, 4);
        let mut rng = Rng::new(31);
        let mut cache = AnyCache::new(c).unwrap();
        fill(&mut cache, &mut rng, 1, 9);
        let (want, pos) = state(&cache, 1);
        let full = Store::entry_bytes(&c).unwrap();
        let s = cache.shape();
        let per_layer = s.conv_slot_elems + s.ssm_slot_elems;
        for tier in [Tier::Full, Tier::Bf16, Tier::Int8] {
            let store = Store::with_tier(1 << 24, 8, tier).unwrap();
            let k = chain_key(None, &[tier as i32]);
            store.insert(&cache, 1, k).unwrap();
            let held = store.stats().bytes_held;
            assert_eq!(held, store.checkpoint_bytes(&c).unwrap());
            let mut back = AnyCache::new(c).unwrap();
            store.restore(k, &mut back, 2).unwrap();
            let (got, got_pos) = state(&back, 2);
            assert_eq!(got_pos, pos);
            // Conv windows exact; SSM states within the tier's rounding.
            for l in 0..c.num_layers as usize {
                let base = l * per_layer;
                let conv = base..base + s.conv_slot_elems;
                assert_eq!(got[conv.clone()], want[conv], "{tier:?}: conv window of layer {l}");
                let st = base + s.conv_slot_elems..base + per_layer;
                let (g, w): (Vec<f32>, Vec<f32>) = (
                    got[st.clone()].iter().map(|b| f32::from_bits(*b)).collect(),
                    want[st].iter().map(|b| f32::from_bits(*b)).collect(),
                );
                let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                let bound = match (tier, ssm) {
                    (Tier::Full, _) | (Tier::Bf16, DType::BF16) => 0.0,
                    (Tier::Bf16, _) => max * 2f32.powi(-8),
                    // Half a step of the largest scale, then the storage rounding.
                    (Tier::Int8, _) => max / 254.0 + max * 2f32.powi(-8),
                };
                assert!(err <= bound, "{tier:?} / {ssm:?}: layer {l} error {err} above {bound}");
            }
            match (tier, ssm) {
                (Tier::Full, _) | (Tier::Bf16, DType::BF16) => assert_eq!(held, full),
                (Tier::Int8, DType::F32) => assert!(held * 2 < full, "{tier:?}: {held} of {full} bytes"),
                _ => assert!(held < full, "{tier:?}: {held} of {full} bytes"),
            }
        }
    }
}

#[test]
fn a_disk_tier_keeps_evicted_checkpoints_and_a_damaged_file_is_a_miss() {
    use m2c_core::tier::Tier;
    let dir = std::env::temp_dir().join(format!("m2c-spill-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for tier in [Tier::Full, Tier::Bf16] {
        let c = cfg(DType::BF16, DType::F32, 4);
        let mut rng = Rng::new(41);
        let mut cache = AnyCache::new(c).unwrap();
        for s in 0..3 {
            fill(&mut cache, &mut rng, s, 10 + s as u32);
        }
        let one = Store::with_tier(1 << 30, 8, tier).unwrap().checkpoint_bytes(&c).unwrap();
        let store = Store::with_spill(one + one / 2, 8, tier, Some(&dir)).unwrap(); // one in memory
        let k: Vec<Key> = (0..3).map(|i| chain_key(None, &[100 + i])).collect();
        for s in 0..3 {
            store.insert(&cache, s, k[s as usize]).unwrap();
        }
        let st = store.stats();
        assert_eq!((st.entries, st.spilled, st.spills), (1, 2, 2), "{tier:?}");
        assert_eq!(store.lookup(&c, &k).blocks, 3, "spilled checkpoints count as covered");
        // A restore from disk equals a restore from memory of the same tier.
        let mut mem = AnyCache::new(c).unwrap();
        let reference = Store::with_tier(1 << 30, 8, tier).unwrap();
        reference.insert(&cache, 0, k[0]).unwrap();
        reference.restore(k[0], &mut mem, 3).unwrap();
        store.restore(k[0], &mut cache, 3).unwrap();
        assert_eq!(state(&cache, 3), state(&mem, 3), "{tier:?}: restore from disk");
        // It came back into memory (spilling another).
        assert_eq!(store.stats().spilled, 2);
        // A damaged file: the restore misses with its reason, the slot is
        // unchanged, and lookups say why.
        let victim = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let mut bytes = std::fs::read(&victim).unwrap();
        bytes[200] ^= 1;
        std::fs::write(&victim, &bytes).unwrap();
        let key = k.iter().copied().find(|key| victim.to_string_lossy().contains(&format!("{key:032x}"))).unwrap();
        let before = state(&cache, 2);
        let e = store.restore(key, &mut cache, 2).unwrap_err();
        assert!(matches!(&e, Error::NotFound(m) if m.contains("damaged")), "{e:?}");
        assert_eq!(state(&cache, 2), before);
        assert_eq!(store.lookup(&c, &[key]).miss, Some(Miss::Corrupt));
        assert!(!victim.exists(), "the damaged file was not removed");
        drop(store);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "a dropped store leaves files behind");
    }
    assert!(matches!(Store::with_spill(1, 1, Tier::Full, Some(&dir.join("absent"))), Err(Error::Io(_))));
    let _ = std::fs::remove_dir_all(&dir);
}
