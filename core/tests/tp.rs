//! Tensor-parallel shards and resharding: the shard rules (heads split,
//! groups split or replicated, bad layouts refused), plans that write every
//! destination byte exactly once, and resharded snapshots that equal what
//! caches of the destination layout hold, bit for bit, through
//! tp 1 -> 2 -> 4 -> 1 for every storage dtype and both conv widths.

mod common;

use common::Rng;
use m2c_core::tp::{reshard_plan, reshard_snapshots, shard, shard_snapshot_sizes};
use m2c_core::{AnyCache, Config, DType, Error, Slice, SliceMut, Slots};

fn cfg(heads: u32, groups: u32, conv: DType, ssm: DType, width: u32) -> Config {
    Config {
        num_layers: 3,
        num_slots: 3,
        intermediate_size: heads * 8,
        num_heads: heads,
        head_dim: 8,
        state_size: 4,
        n_groups: groups,
        conv_kernel_size: 4,
        conv_width: width,
        conv_dtype: conv,
        ssm_dtype: ssm,
        ..Config::default()
    }
}

#[test]
fn shards_split_heads_and_split_or_replicate_groups() {
    let full = cfg(8, 4, DType::F32, DType::F32, 4);
    let (c, s) = shard(&full, 2, 1).unwrap();
    assert_eq!((c.num_heads, c.n_groups, c.intermediate_size), (4, 2, 32));
    assert_eq!((s.heads, s.groups.clone(), s.replicated), (4..8, 2..4, false));
    // x channels of heads 4..8; B and C of groups 2..4 in their sections.
    assert_eq!((s.x, s.b, s.c), (32..64, 64 + 8..64 + 16, 64 + 16 + 8..64 + 32));
    // Fewer groups than ranks: each rank holds its heads' group.
    let (c, s) = shard(&full, 8, 5).unwrap();
    assert_eq!((c.num_heads, c.n_groups, s.groups, s.replicated), (1, 1, 2..3, true));
    let one = cfg(8, 1, DType::F32, DType::F32, 4);
    for r in 0..4 {
        let (c, s) = shard(&one, 4, r).unwrap();
        assert_eq!((c.n_groups, s.groups, s.replicated), (1, 0..1, true));
    }
    // tp 1 is the full layout.
    assert_eq!(shard(&full, 1, 0).unwrap().0, full);
    // Bad layouts get a status.
    assert!(matches!(shard(&full, 3, 0), Err(Error::InvalidArg(_))), "3 does not divide 8 heads");
    assert!(matches!(shard(&cfg(12, 3, DType::F32, DType::F32, 4), 2, 0), Err(Error::InvalidArg(_))), "groups 3, tp 2");
    assert!(matches!(shard(&full, 2, 2), Err(Error::OutOfRange(_))));
    assert!(matches!(shard(&full, 0, 0), Err(Error::InvalidArg(_))));
    assert!(reshard_plan(&full, 2, 3).is_err());
    // Absurd layouts and layer counts are errors, quickly, not aborts.
    let wide = Config { num_heads: 8192, intermediate_size: 8192, head_dim: 1, ..cfg(8, 1, DType::F32, DType::F32, 4) };
    assert!(matches!(reshard_plan(&wide, 8192, 1), Err(Error::InvalidArg(_))));
    let deep = Config { num_layers: 1 << 30, num_slots: 1, ..full };
    assert!(reshard_plan(&deep, 1, 8).is_err());
}

#[test]
fn plans_write_every_destination_byte_once() {
    for (heads, groups) in [(8, 4), (8, 1), (8, 2), (16, 8)] {
        let full = cfg(heads, groups, DType::BF16, DType::F32, 3);
        for (tp_src, tp_dst) in [(1, 2), (2, 1), (2, 4), (4, 2), (8, 1), (1, 8), (4, 4)] {
            let plan = reshard_plan(&full, tp_src, tp_dst).unwrap();
            let sizes = shard_snapshot_sizes(&full, tp_dst).unwrap();
            let src_sizes = shard_snapshot_sizes(&full, tp_src).unwrap();
            let mut covered: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
            for c in &plan {
                assert!(c.src_offset + c.len <= src_sizes[c.src_rank as usize] as u64 - 8);
                for b in c.dst_offset..c.dst_offset + c.len {
                    covered[c.dst_rank as usize][b as usize] += 1;
                }
            }
            for (r, cov) in covered.iter().enumerate() {
                let payload = &cov[72..cov.len() - 8];
                assert!(payload.iter().all(|&n| n == 1), "{heads}/{groups} {tp_src}->{tp_dst} rank {r}");
                assert!(cov[..72].iter().chain(&cov[cov.len() - 8..]).all(|&n| n == 0));
            }
        }
    }
}

/// A full cache with random state in slot 1, and its snapshot.
fn full_snapshot(full: &Config, rng: &mut Rng) -> (AnyCache, Vec<u8>) {
    let mut c = AnyCache::new(*full).unwrap();
    let s = c.shape();
    for l in 0..full.num_layers {
        c.set_conv(l, Slots::List(&[1]), Slice::F32(&rng.vec(s.conv_slot_elems, 1.0))).unwrap();
        c.set_ssm(l, Slots::List(&[1]), Slice::F32(&rng.vec(s.ssm_slot_elems, 1.0))).unwrap();
    }
    c.advance(Slots::List(&[1]), 17).unwrap();
    let mut snap = vec![0u8; c.slot_snapshot_size()];
    c.slot_save(1, &mut snap).unwrap();
    (c, snap)
}

fn reshard(full: &Config, tp_src: u32, src: &[Vec<u8>], tp_dst: u32) -> Vec<Vec<u8>> {
    let mut dst: Vec<Vec<u8>> = shard_snapshot_sizes(full, tp_dst).unwrap().iter().map(|&n| vec![0u8; n]).collect();
    let srcs: Vec<&[u8]> = src.iter().map(|v| v.as_slice()).collect();
    let mut dsts: Vec<&mut [u8]> = dst.iter_mut().map(|v| v.as_mut_slice()).collect();
    reshard_snapshots(full, tp_src, &srcs, tp_dst, &mut dsts).unwrap();
    dst
}

#[test]
fn resharding_round_trips_bit_for_bit() {
    let mut rng = Rng::new(21);
    let dtypes = [DType::F32, DType::BF16, DType::F16];
    for conv in dtypes {
        for ssm in dtypes {
            for width in [4, 3] {
                for (heads, groups) in [(8, 4), (8, 1)] {
                    let full = cfg(heads, groups, conv, ssm, width);
                    let (c, snap) = full_snapshot(&full, &mut rng);
                    let two = reshard(&full, 1, std::slice::from_ref(&snap), 2);
                    // Each rank's snapshot loads into a rank cache holding
                    // exactly the rank's slice of the full state.
                    for (r, rs) in two.iter().enumerate() {
                        let (rc, sh) = shard(&full, 2, r as u32).unwrap();
                        let mut rank = AnyCache::new(rc).unwrap();
                        rank.slot_load(0, rs).unwrap();
                        assert_eq!(rank.position(0).unwrap(), 17);
                        let (fs, rsh) = (c.shape(), rank.shape());
                        for l in 0..full.num_layers {
                            let mut fw = vec![0f32; fs.conv_slot_elems];
                            let mut rw = vec![0f32; rsh.conv_slot_elems];
                            c.read_conv(l, Slots::List(&[1]), SliceMut::F32(&mut fw)).unwrap();
                            rank.read_conv(l, Slots::List(&[0]), SliceMut::F32(&mut rw)).unwrap();
                            let w = width as usize;
                            let want: Vec<f32> = [sh.x.clone(), sh.b.clone(), sh.c.clone()]
                                .into_iter()
                                .flat_map(|r| fw[r.start as usize * w..r.end as usize * w].to_vec())
                                .collect();
                            assert_eq!(rw, want, "layer {l} conv of rank {r}");
                            let mut fst = vec![0f32; fs.ssm_slot_elems];
                            let mut rst = vec![0f32; rsh.ssm_slot_elems];
                            c.read_ssm(l, Slots::List(&[1]), SliceMut::F32(&mut fst)).unwrap();
                            rank.read_ssm(l, Slots::List(&[0]), SliceMut::F32(&mut rst)).unwrap();
                            let per = (full.head_dim * full.state_size) as usize;
                            let hs = sh.heads.start as usize * per..sh.heads.end as usize * per;
                            assert_eq!(rst, fst[hs].to_vec(), "layer {l} ssm of rank {r}");
                        }
                    }
                    let four = reshard(&full, 2, &two, 4);
                    let back = reshard(&full, 4, &four, 1);
                    assert_eq!(back[0], snap, "{conv:?}/{ssm:?} width {width} groups {groups}: 1 -> 2 -> 4 -> 1");
                    // And straight back from 2.
                    assert_eq!(reshard(&full, 2, &two, 1)[0], snap);
                }
            }
        }
    }
}

#[test]
fn damaged_or_inconsistent_sources_write_nothing() {
    let mut rng = Rng::new(5);
    let full = cfg(8, 2, DType::F32, DType::BF16, 4);
    let (_, snap) = full_snapshot(&full, &mut rng);
    let mut two = reshard(&full, 1, &[snap], 2);
    let good = two.clone();
    let sizes = shard_snapshot_sizes(&full, 1).unwrap();
    let run = |src: &[Vec<u8>]| {
        let mut dst = vec![0xAAu8; sizes[0]];
        let srcs: Vec<&[u8]> = src.iter().map(|v| v.as_slice()).collect();
        let r = reshard_snapshots(&full, 2, &srcs, 1, &mut [dst.as_mut_slice()]);
        (r, dst.iter().all(|&b| b == 0xAA))
    };
    let mut bad = two.clone();
    bad[1][100] ^= 4;
    let (r, untouched) = run(&bad);
    assert!(matches!(r, Err(Error::Corrupt(ref m)) if m.contains("rank 1")) && untouched);
    // Two ranks at different positions.
    let mut other = AnyCache::new(shard(&full, 2, 1).unwrap().0).unwrap();
    other.slot_load(0, &two[1]).unwrap();
    other.advance(Slots::List(&[0]), 1).unwrap();
    other.slot_save(0, &mut two[1]).unwrap();
    let (r, untouched) = run(&two);
    assert!(matches!(r, Err(Error::InvalidArg(_))) && untouched);
    // Wrong counts and sizes.
    let (r, _) = run(&good[..1]);
    assert!(matches!(r, Err(Error::ShapeMismatch(_))));
    let srcs: Vec<&[u8]> = good.iter().map(|v| v.as_slice()).collect();
    let mut short = vec![0u8; 10];
    assert!(matches!(reshard_snapshots(&full, 2, &srcs, 1, &mut [short.as_mut_slice()]), Err(Error::ShapeMismatch(_))));
}
