//! Slots (acquire, release, copy, threads) and slot snapshots.
const std = @import("std");
const m2c = @import("m2c");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expect = testing.expect;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;

const smallConfig = helpers.smallConfig;
const contains = helpers.contains;
const fill = helpers.fill;
const expectAllZero = helpers.expectAllZero;
const kernelConfig = helpers.kernelConfig;
const kc = helpers.kc;
const expectSameBits = helpers.expectSameBits;

test "slots are acquired lowest first, released, and run out" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    try expectEqual(@as(u32, 0), try cache.slotsInUse());
    for (0..4) |i| try expectEqual(@as(i32, @intCast(i)), try cache.slotAcquire());
    try expectEqual(@as(u32, 4), try cache.slotsInUse());
    try expectError(error.NoFreeSlot, cache.slotAcquire());
    try expectEqual(@as(?m2c.Status, .no_free_slot), diag.status);
    try cache.slotRelease(2);
    try expectError(error.InvalidArg, cache.slotRelease(2)); // double release
    try expect(contains(diag.message(), "m2c_slot_release"));
    try expectError(error.OutOfRange, cache.slotRelease(-1));
    try expectEqual(@as(u32, 3), try cache.slotsInUse());
    // A re-acquired slot starts from zero.
    var state = [_]f32{9} ** 16;
    try cache.updateSsm(0, &.{2}, .{ .f32 = &state });
    try cache.advance(&.{2}, 7);
    try expectEqual(@as(i32, 2), try cache.slotAcquire());
    try expectEqual(@as(u64, 0), try cache.position(2));
    try cache.readSsm(0, &.{2}, .{ .f32 = &state });
    try expectAllZero(&state);
}

test "copySlots forks and permutes states and positions" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var state: [4 * 16]f32 = undefined;
    for (0..4) |s| @memset(state[s * 16 ..][0..16], @floatFromInt(s + 1));
    try cache.updateSsm(1, null, .{ .f32 = &state });
    for (0..4) |s| try cache.advance(&.{@intCast(s)}, @intCast(10 * (s + 1)));

    try cache.copySlots(&.{ 1, 0, 0 }, &.{ 0, 1, -1 }); // swap 0 and 1, a padding row
    var back: [4 * 16]f32 = undefined;
    try cache.readSsm(1, null, .{ .f32 = &back });
    try expectEqual(@as(f32, 2), back[0]);
    try expectEqual(@as(f32, 1), back[16]);
    try expectEqual(@as(u64, 20), try cache.position(0));
    try expectEqual(@as(u64, 10), try cache.position(1));

    try cache.copySlots(&.{ 3, 3 }, &.{ 0, 2 }); // one source, many destinations
    try cache.readSsm(1, null, .{ .f32 = &back });
    try expectEqual(@as(f32, 4), back[0]);
    try expectEqual(@as(f32, 4), back[32]);
    try expectEqual(@as(u64, 40), try cache.position(2));

    try expectError(error.ShapeMismatch, cache.copySlots(&.{ 0, 1 }, &.{2}));
    try expectEqual(@as(?m2c.Status, null), diag.status); // refused by the binding
    try expect(contains(diag.message(), "src has 2 entries, dst 1"));
}

test "threads acquire distinct slots and update them concurrently" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    const Worker = struct {
        fn run(c: *m2c.Cache, got: *i32, ok: *bool) void {
            const slot = c.slotAcquire() catch return;
            got.* = slot;
            var state = [_]f32{@floatFromInt(slot + 1)} ** 16;
            for (0..200) |_| {
                c.updateSsm(0, &.{slot}, .{ .f32 = &state }) catch return;
                c.advance(&.{slot}, 1) catch return;
            }
            var back: [16]f32 = undefined;
            c.readSsm(0, &.{slot}, .{ .f32 = &back }) catch return;
            ok.* = std.mem.eql(f32, &state, &back) and (c.position(slot) catch 0) == 200;
        }
    };
    var got = [_]i32{-1} ** 4;
    var ok = [_]bool{false} ** 4;
    var threads: [4]std.Thread = undefined;
    for (&threads, 0..) |*t, i| t.* = try std.Thread.spawn(.{}, Worker.run, .{ &cache, &got[i], &ok[i] });
    for (threads) |t| t.join();
    for (ok) |o| try expect(o);
    std.mem.sort(i32, &got, {}, std.sort.asc(i32));
    try testing.expectEqualSlices(i32, &.{ 0, 1, 2, 3 }, &got);
    try expectEqual(@as(u32, 4), try cache.slotsInUse());
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

/// Recomputes a snapshot's trailing XXH64 after editing it (docs/FORMATS.md).
fn reseal(snapshot: []u8) void {
    const body = snapshot[0 .. snapshot.len - 8];
    std.mem.writeInt(u64, snapshot[snapshot.len - 8 ..][0..8], std.hash.XxHash64.hash(0, body), .little);
}

test "a slot snapshot restores state and position in another cache" {
    const gpa = testing.allocator;
    const cfg = smallConfig(3, .bf16, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    var state: [16]f32 = undefined;
    fill(&state, 0.5);
    try a.updateSsm(1, &.{3}, .{ .f32 = &state });
    var win: [48]f32 = undefined;
    fill(&win, -2);
    try a.setConv(0, &.{3}, .{ .f32 = &win });
    try a.advance(&.{3}, 11);

    const size = try a.slotSnapshotSize();
    // 80 + layers * (conv 16*3 bf16 + ssm 16 f32)
    try expectEqual(@as(usize, 80 + 2 * (48 * 2 + 16 * 4)), size);
    const snap = try a.slotSaveAlloc(gpa, 3);
    defer gpa.free(snap);
    try expectEqual(size, snap.len);
    try testing.expectEqualStrings("M2CSLOT\x00", snap[0..8]);
    const buf = try gpa.alloc(u8, size + 10);
    defer gpa.free(buf);
    try testing.expectEqualSlices(u8, snap, try a.slotSave(3, buf));

    try b.slotLoad(0, snap);
    try expectEqual(@as(u64, 11), try b.position(0));
    var back: [48]f32 = undefined;
    try b.readSsm(1, &.{0}, .{ .f32 = back[0..16] });
    try testing.expectEqualSlices(f32, &state, back[0..16]);
    try b.readConv(0, &.{0}, .{ .f32 = &back });
    try testing.expectEqualSlices(f32, &win, &back);
    try expectEqual(@as(u32, 0), try b.slotsInUse()); // loading does not acquire
}

test "slotSave needs a buffer of slotSnapshotSize bytes" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var buf: [4096]u8 = undefined;
    @memset(&buf, 0xAB);
    const size = try cache.slotSnapshotSize();
    try expectError(error.ShapeMismatch, cache.slotSave(0, buf[0 .. size - 1]));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    // An empty buffer goes to C as (NULL, 0): a valid empty buffer, too
    // small for the snapshot.
    try expectError(error.ShapeMismatch, cache.slotSave(0, &.{}));
    for (buf) |byte| try expectEqual(@as(u8, 0xAB), byte); // untouched
}

test "damaged snapshots are Corrupt and leave the slot as it was" {
    const gpa = testing.allocator;
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var state = [_]f32{3} ** 16;
    try cache.updateSsm(0, &.{1}, .{ .f32 = &state });
    const snap = try cache.slotSaveAlloc(gpa, 1);
    defer gpa.free(snap);
    try cache.advance(&.{2}, 4);
    const before = try cache.slotSaveAlloc(gpa, 2);
    defer gpa.free(before);

    const bad = try gpa.dupe(u8, snap);
    defer gpa.free(bad);
    bad[100] ^= 0x01; // a flipped payload bit: checksum mismatch
    try expectError(error.Corrupt, cache.slotLoad(2, bad));
    try expectEqual(@as(?m2c.Status, .corrupt), diag.status);
    try expect(contains(diag.message(), "m2c_slot_load"));
    @memcpy(bad, snap);
    bad[0] = 'X'; // bad magic
    try expectError(error.Corrupt, cache.slotLoad(2, bad));
    try expectError(error.Corrupt, cache.slotLoad(2, snap[0 .. snap.len - 1])); // truncated
    try expectError(error.Corrupt, cache.slotLoad(2, snap[0..8]));
    try expectError(error.Corrupt, cache.slotLoad(2, &.{}));

    const after = try cache.slotSaveAlloc(gpa, 2);
    defer gpa.free(after);
    try testing.expectEqualSlices(u8, before, after);
}

test "foreign snapshots are Incompatible: another shape, another format version" {
    const gpa = testing.allocator;
    var diag: m2c.Diagnostics = .{};
    var a = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer a.deinit();
    // Same byte size, another shape: 2 heads of 4 instead of 4 heads of 2.
    var other_cfg = smallConfig(4, .f32, .f32);
    other_cfg.num_heads = 2;
    other_cfg.head_dim = 4;
    var other = try m2c.Cache.init(other_cfg, null);
    defer other.deinit();
    const foreign = try other.slotSaveAlloc(gpa, 0);
    defer gpa.free(foreign);
    try expectEqual(try a.slotSnapshotSize(), foreign.len);
    try expectError(error.Incompatible, a.slotLoad(0, foreign));
    try expectEqual(@as(?m2c.Status, .incompatible), diag.status);
    try expect(contains(diag.message(), "num_heads"));

    const future = try a.slotSaveAlloc(gpa, 0);
    defer gpa.free(future);
    std.mem.writeInt(u32, future[8..12], 3, .little); // format version 3, resealed
    reseal(future);
    try expectError(error.Incompatible, a.slotLoad(0, future));
}

test "snapshot format 2: same size and payload, version 2, loads anywhere; digests follow the format" {
    const gpa = testing.allocator;
    var a = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer a.deinit();
    var state: [64]f32 = undefined;
    for (&state, 0..) |*v, i| v.* = @floatFromInt(i);
    try a.setSsm(1, &.{2}, .{ .f32 = state[0..a.shape.ssm_state_len] });
    try expectEqual(m2c.SnapshotFormat.v1, try a.snapshotFormat());
    const v1 = try a.slotSaveAlloc(gpa, 2);
    defer gpa.free(v1);
    const d1 = try a.slotDigest(2);
    try a.setSnapshotFormat(.v2);
    try expectEqual(m2c.SnapshotFormat.v2, try a.snapshotFormat());
    const v2 = try a.slotSaveAlloc(gpa, 2);
    defer gpa.free(v2);
    try expectEqual(v1.len, v2.len);
    try expectEqual(@as(u32, 2), std.mem.readInt(u32, v2[8..12], .little));
    try expect(std.mem.eql(u8, v1[12 .. v1.len - 8], v2[12 .. v2.len - 8]));
    try expectEqual(std.mem.readInt(u64, v2[v2.len - 8 ..][0..8], .little), try a.slotDigest(2));
    try expectEqual(std.mem.readInt(u64, v1[v1.len - 8 ..][0..8], .little), d1);
    try a.slotLoad(0, v2);
    try a.slotLoad(1, v1);
    try expectError(error.InvalidArg, a.setSnapshotFormat(@enumFromInt(5)));
    try expectEqual(m2c.SnapshotFormat.v2, try a.snapshotFormat());
}

test "advance past the largest position is OutOfRange" {
    const gpa = testing.allocator;
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    const snap = try cache.slotSaveAlloc(gpa, 0);
    defer gpa.free(snap);
    std.mem.writeInt(u64, snap[56..64], std.math.maxInt(u64) - 2, .little); // the position field
    reseal(snap);
    try cache.slotLoad(1, snap);
    try expectEqual(@as(u64, std.math.maxInt(u64) - 2), try cache.position(1));
    try expectError(error.OutOfRange, cache.advance(&.{ 0, 1 }, 3));
    try expectEqual(@as(u64, 0), try cache.position(0)); // no position changed
    try cache.advance(&.{1}, 2);
    try expectEqual(@as(u64, std.math.maxInt(u64)), try cache.position(1));
}

test "setNumThreads marshals and maps errors" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(kernelConfig(kc.kernel, .bf16, .f32), &diag);
    defer cache.deinit();
    var state: [2 * kc.state_len]f32 = undefined;
    for (&state, 0..) |*v, i| v.* = @as(f32, @floatFromInt(i % 13)) * 0.25;
    for ([_]u32{ 1, 0, 2 }) |n| {
        try cache.setNumThreads(n);
        try cache.setSsm(0, &.{ 1, 3 }, .{ .f32 = &state });
        var back: [2 * kc.state_len]f32 = undefined;
        try cache.readSsm(0, &.{ 1, 3 }, .{ .f32 = &back });
        try expectSameBits(&state, &back);
    }
}

test "presets and describe marshal and map errors" {
    const big = m2c.Config.preset(.mamba2_2_7b);
    try expectEqual(@as(u32, 64), big.num_layers);
    try expectEqual(@as(u32, 80), big.num_heads);
    const nano = m2c.Config.preset(.nemotron_nano_9b_v2);
    try expectEqual(@as(u32, 27), nano.num_layers);
    try expectEqual(@as(u32, 80), nano.head_dim);
    try expectEqual(@as(u32, 8), nano.n_groups);
    // Every preset the enum names is a consistent Mamba2 shape.
    inline for (@typeInfo(m2c.Preset).@"enum".fields) |f| {
        const p = m2c.Config.preset(@enumFromInt(f.value));
        try expectEqual(p.intermediate_size, p.num_heads * p.head_dim);
    }
    var diag: m2c.Diagnostics = .{};
    var cfg = m2c.Config.preset(.mamba2_130m);
    cfg.num_slots = 2;
    var cache = try m2c.Cache.init(cfg, &diag);
    defer cache.deinit();
    var buf: [512]u8 = undefined;
    const text = try cache.describe(&buf);
    try expect(contains(text, "24 layers x 2 slots (0 in use)"));
    var small: [8]u8 = undefined;
    try expectError(error.ShapeMismatch, cache.describe(&small));
    try expect(contains(diag.message(), "m2c_describe"));
    var out: [600]u8 = undefined;
    const printed = try std.fmt.bufPrint(&out, "{f}", .{&cache});
    try expect(contains(printed, "ssm f32 [24 x 64 x 128]"));
}
