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
