//! The prefix-store wrappers: insert, lookup, restore, pins and eviction
//! marshalled through Store, the miss reasons and the errors they map, and
//! the key chain's pinned values (the Rust and Go tests pin the same ones).
//! The store's behaviour is proven in Rust (core/tests/store.rs) and C
//! (ctests/store_checkpoints.c).
const std = @import("std");
const m2c = @import("m2c");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;
const kc = helpers.kc;

test "a checkpoint restores the slot it came from, and refusals map" {
    const k1 = try m2c.chainKey(null, &.{ 1, 2, 3, 4 });
    try expectEqual(@as(u64, 0x32d9870b7fe2528a), k1.lo);
    try expectEqual(@as(u64, 0x31c366485599f4b6), k1.hi);
    const k2 = try m2c.chainKey(k1, &.{ 5, 6 });
    try expectEqual(@as(u64, 0xcdc49828af55421c), k2.lo);

    const cfg = helpers.kernelConfig(4, .bf16, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var prng = std.Random.DefaultPrng.init(5);
    try helpers.seedStates(prng.random(), &.{&a});
    try a.advance(&.{2}, 7);

    var diag: m2c.Diagnostics = .{};
    try expectError(error.InvalidArg, m2c.Store.init(.{ .budget_bytes = 0 }, &diag));
    var store = try m2c.Store.init(.{ .budget_bytes = 1 << 22, .remember_misses = 8 }, &diag);
    defer store.deinit();

    try expectEqual(m2c.Miss.none, try store.insert(&a, 2, k1));
    const l = try store.lookup(&a, &.{ k1, k2 });
    try expectEqual(@as(usize, 1), l.blocks);
    try expectEqual(m2c.Miss.never_stored, l.miss);
    try store.restore(k1, &a, 0);
    var s0: [kc.state_len]f32 = undefined;
    var s2: [kc.state_len]f32 = undefined;
    for (0..2) |layer| {
        try a.readSsm(@intCast(layer), &.{0}, .{ .f32 = &s0 });
        try a.readSsm(@intCast(layer), &.{2}, .{ .f32 = &s2 });
        try testing.expectEqualSlices(f32, &s2, &s0);
    }
    try expectEqual(@as(u64, 7), try a.position(0));

    try expectError(error.NotFound, store.restore(k2, &a, 0));
    try testing.expect(std.mem.indexOf(u8, diag.message(), "never stored") != null);
    try expectError(error.OutOfRange, store.restore(k1, &a, 99));
    try store.pin(k1);
    try expectError(error.InvalidArg, store.evict(k1));
    try store.unpin(k1);
    try expectError(error.InvalidArg, store.unpin(k1));
    try store.evict(k1);
    try expectError(error.NotFound, store.pin(k1));
    try expectEqual(m2c.Miss.evicted, (try store.lookup(&a, &.{k1})).miss);
    try testing.expectEqualStrings("evicted", m2c.Miss.evicted.str());

    try expectError(error.InvalidArg, m2c.Store.init(.{ .tier = @enumFromInt(9) }, null));
    var half = try m2c.Store.init(.{ .tier = .bf16 }, null);
    defer half.deinit();
    try expectEqual(m2c.Miss.none, try half.insert(&a, 2, k2));
    try half.restore(k2, &a, 3);

    try expectError(error.Io, m2c.Store.init(.{ .spill_dir = "/nonexistent/m2c" }, null));

    var tiny = try m2c.Store.init(.{ .budget_bytes = 1 }, null);
    try expectEqual(m2c.Miss.too_large, try tiny.insert(&a, 0, k1));
    tiny.deinit();
    try expectError(error.NullArg, tiny.lookup(&a, &.{k1}));

    const st = try store.stats();
    try expectEqual(@as(u64, 1), st.inserts);
    try expectEqual(@as(u64, 1), st.restores);
    try expectEqual(@as(u64, 1), st.evictions);
    try expectEqual(@as(u64, 1), st.misses_never_stored);
    try expectEqual(@as(u64, 1), st.misses_evicted);
}

test "checkpoints captured inside a chunked prefill restore the prefix state" {
    const cfg = helpers.kernelConfig(4, .bf16, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var ref = try m2c.Cache.init(cfg, null);
    defer ref.deinit();
    var store = try m2c.Store.init(.{}, null);
    defer store.deinit();
    var prng = std.Random.DefaultPrng.init(23);
    const rand = prng.random();
    const T = 6;
    var x: [2][T * kc.conv_dim]f32 = undefined;
    var sx: [2][T * kc.x_row]f32 = undefined;
    var dt: [2][T * kc.dt_row]f32 = undefined;
    var bb: [2][T * kc.bc_row]f32 = undefined;
    var cc: [2][T * kc.bc_row]f32 = undefined;
    for (0..2) |l| {
        helpers.randomize(rand, &x[l], 1);
        helpers.randomize(rand, &sx[l], 1);
        helpers.randomize(rand, &dt[l], 1);
        helpers.randomize(rand, &bb[l], 1);
        helpers.randomize(rand, &cc[l], 1);
    }
    var w: [kc.conv_dim * kc.kernel]f32 = undefined;
    helpers.randomize(rand, &w, 0.5);
    var A: [kc.heads]f32 = undefined;
    for (&A) |*v| v.* = -(rand.float(f32) + 0.1);
    const Run = struct {
        fn run(cache: *m2c.Cache, xs: anytype, sxs: anytype, dts: anytype, bbs: anytype, ccs: anytype, weight: []const f32, a_: []const f32, from: usize, to: usize) !void {
            var out: [T * kc.conv_dim]f32 = undefined;
            var y: [T * kc.x_row]f32 = undefined;
            const n = to - from;
            const cu = [_]u64{ 0, n };
            for (0..2) |l| {
                const layer: u32 = @intCast(l);
                try cache.convPrefill(layer, &.{1}, &cu, .{ .f32 = xs[l][from * kc.conv_dim .. to * kc.conv_dim] }, .{ .f32 = out[0 .. n * kc.conv_dim] }, .{ .weight = weight });
                try cache.ssmPrefill(layer, &.{1}, &cu, .{ .x = .{ .f32 = sxs[l][from * kc.x_row .. to * kc.x_row] }, .dt = .{ .f32 = dts[l][from * kc.dt_row .. to * kc.dt_row] }, .B = .{ .f32 = bbs[l][from * kc.bc_row .. to * kc.bc_row] }, .C = .{ .f32 = ccs[l][from * kc.bc_row .. to * kc.bc_row] }, .y = .{ .f32 = y[0 .. n * kc.x_row] } }, .{ .A = a_ });
            }
        }
    };
    const key = try m2c.chainKey(null, &.{ 9, 9 });
    try expectError(error.InvalidArg, a.captureBegin(&store, &.{.{ .slot = 1, .tokens = 0, .key = key }}));
    try a.captureBegin(&store, &.{.{ .slot = 1, .tokens = 4, .key = key }});
    try Run.run(&a, &x, &sx, &dt, &bb, &cc, &w, &A, 0, 3);
    var misses: [1]m2c.Miss = undefined;
    try expectError(error.InvalidArg, a.captureEnd(&store, &misses)); // not reached yet
    try Run.run(&a, &x, &sx, &dt, &bb, &cc, &w, &A, 3, T);
    try a.captureEnd(&store, &misses);
    try expectEqual(m2c.Miss.none, misses[0]);
    try Run.run(&ref, &x, &sx, &dt, &bb, &cc, &w, &A, 0, 4);
    try store.restore(key, &a, 0);
    var want: [kc.state_len]f32 = undefined;
    var got: [kc.state_len]f32 = undefined;
    for (0..2) |l| {
        try ref.readSsm(@intCast(l), &.{1}, .{ .f32 = &want });
        try a.readSsm(@intCast(l), &.{0}, .{ .f32 = &got });
        try testing.expectEqualSlices(f32, &want, &got);
    }
}

test "regions read from the arenas rebuild a slot's snapshot, and refusals map" {
    const gpa = testing.allocator;
    const cfg = helpers.kernelConfig(4, .bf16, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var prng = std.Random.DefaultPrng.init(3);
    try helpers.seedStates(prng.random(), &.{&a});
    var ab: [8]m2c.Arena = undefined;
    const arenas = try a.arenas(&ab);
    try expectEqual(@as(usize, 4), arenas.len);
    try expectError(error.ShapeMismatch, a.arenas(ab[0..1]));
    var rb: [8]m2c.Region = undefined;
    const regions = try a.slotRegions(&.{2}, &rb);
    try expectEqual(@as(usize, 4), regions.len);
    const snap = try gpa.alloc(u8, try a.slotSnapshotSize());
    defer gpa.free(snap);
    _ = try a.slotSave(2, snap);
    const image = try gpa.alloc(u8, snap.len);
    defer gpa.free(image);
    for (regions) |r| {
        const base: [*]const u8 = @ptrFromInt(arenas[r.arena].base);
        @memcpy(image[r.image_offset..][0..r.len], base[r.offset..][0..r.len]);
    }
    try testing.expectEqualSlices(u8, snap[72 .. snap.len - 8], image[72 .. snap.len - 8]);
    try expectEqual(std.mem.readInt(u64, snap[snap.len - 8 ..][0..8], .little), try a.slotDigest(2));
    try expectError(error.OutOfRange, a.slotDigest(99));
    try expectError(error.OutOfRange, a.slotRegions(&.{-1}, &rb));
    try expectError(error.InvalidArg, a.slotRegions(&.{ 1, 1 }, &rb));
}

test "tensor-parallel shards, plans and resharded snapshots marshal, and refusals map" {
    const gpa = testing.allocator;
    const cfg = helpers.kernelConfig(4, .bf16, .f32);
    const r1 = try m2c.shardConfig(cfg, 2, 1, null);
    try expectEqual(cfg.num_heads / 2, r1.config.num_heads);
    try expectEqual(@as(u32, 1), r1.shard.rank);
    try expectEqual(cfg.num_heads, r1.shard.head_end);
    try expectError(error.OutOfRange, m2c.shardConfig(cfg, 2, 2, null));
    try expectError(error.InvalidArg, m2c.shardConfig(cfg, 0, 0, null));
    const n = try m2c.reshardPlanLen(cfg, 1, 2, null);
    var pb: [64]m2c.ReshardCopy = undefined;
    const plan = try m2c.reshardPlan(cfg, 1, 2, pb[0..n], null);
    try expectEqual(n, plan.len);
    if (n > 1) try expectError(error.ShapeMismatch, m2c.reshardPlan(cfg, 1, 2, pb[0 .. n - 1], null));

    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var prng = std.Random.DefaultPrng.init(9);
    try helpers.seedStates(prng.random(), &.{&a});
    const snap = try gpa.alloc(u8, try a.slotSnapshotSize());
    defer gpa.free(snap);
    _ = try a.slotSave(1, snap);
    const r0 = try m2c.shardConfig(cfg, 2, 0, null);
    const half0 = try gpa.alloc(u8, r0.shard.snapshot_bytes);
    defer gpa.free(half0);
    const half1 = try gpa.alloc(u8, r1.shard.snapshot_bytes);
    defer gpa.free(half1);
    try m2c.reshardSnapshots(cfg, &.{snap}, &.{ half0, half1 }, null);
    var rank = try m2c.Cache.init(r1.config, null);
    defer rank.deinit();
    try rank.slotLoad(0, half1);
    const back = try gpa.alloc(u8, snap.len);
    defer gpa.free(back);
    try m2c.reshardSnapshots(cfg, &.{ half0, half1 }, &.{back}, null);
    try testing.expectEqualSlices(u8, snap, back);
    half1[100] ^= 1;
    try expectError(error.Corrupt, m2c.reshardSnapshots(cfg, &.{ half0, half1 }, &.{back}, null));
}
