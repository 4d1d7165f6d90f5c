//! Conv and SSM state: the update, set, read, reset and advance calls,
//! views, and the non-finite checks.
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
const SsmTokens = helpers.SsmTokens;

test "updateConv pushes one column per row; readConv returns it in every dtype" {
    var cache = try m2c.Cache.init(smallConfig(4, .bf16, .f32), null);
    defer cache.deinit();
    const slots = [_]i32{ 2, -1 };
    var x = [_]f32{0} ** (2 * 16);
    x[0] = 1.5;
    x[16] = 99; // the padding row: ignored
    try cache.updateConv(0, &slots, .{ .f32 = &x });
    try cache.updateConv(0, &slots, .{ .f16 = &([_]f16{2.5} ++ [_]f16{0} ** 31) });

    var win = [_]f32{7} ** (2 * 64);
    try cache.readConv(0, &slots, .{ .f32 = &win });
    try expectEqual(@as(f32, 1.5), win[2]); // channel 0: ..., 1.5, 2.5
    try expectEqual(@as(f32, 2.5), win[3]);
    try expectAllZero(win[64..]); // padding rows read as zeros
    var bf = [_]u16{0} ** 64;
    try cache.readConv(0, &.{2}, .{ .bf16 = &bf });
    try expectEqual(@as(u16, 0x3FC0), bf[2]); // 1.5 as bf16 bits
    try expectEqual(@as(u16, 0x4020), bf[3]); // 2.5
    var h = [_]f16{0} ** 64;
    try cache.readConv(0, &.{2}, .{ .f16 = &h });
    try expectEqual(@as(f16, 2.5), h[3]);
    // other slots and layers untouched
    try cache.readConv(1, &.{2}, .{ .f32 = win[0..64] });
    try expectAllZero(win[0..64]);
}

test "setConv and updateSsm round-trip through readConv and readSsm" {
    var cache = try m2c.Cache.init(smallConfig(3, .f32, .f32), null);
    defer cache.deinit();
    var win: [2 * 48]f32 = undefined;
    fill(&win, 1);
    try cache.setConv(1, &.{ 3, 0 }, .{ .f32 = &win });
    var back: [2 * 48]f32 = undefined;
    try cache.readConv(1, &.{ 3, 0 }, .{ .f32 = &back });
    try testing.expectEqualSlices(f32, &win, &back);

    var state: [3 * 16]f32 = undefined;
    fill(&state, -4);
    try cache.updateSsm(0, &.{ 1, -1, 2 }, .{ .f32 = &state });
    var sback: [3 * 16]f32 = undefined;
    try cache.readSsm(0, &.{ 1, -1, 2 }, .{ .f32 = &sback });
    try testing.expectEqualSlices(f32, state[0..16], sback[0..16]);
    try expectAllZero(sback[16..32]);
    try testing.expectEqualSlices(f32, state[32..48], sback[32..48]);
}

test "bf16 and f16 inputs convert into f32 storage" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    var bf = [_]u16{0x3FC0} ** 16; // 1.5
    try cache.updateSsm(0, &.{1}, .{ .bf16 = &bf });
    var out = [_]f32{0} ** 16;
    try cache.readSsm(0, &.{1}, .{ .f32 = &out });
    for (out) |v| try expectEqual(@as(f32, 1.5), v);
    var h = [_]f16{-0.25} ** 16;
    try cache.updateSsm(0, &.{1}, .{ .f16 = &h });
    try cache.readSsm(0, &.{1}, .{ .f32 = &out });
    for (out) |v| try expectEqual(@as(f32, -0.25), v);
}

test "null slots address dense rows counted from the buffer" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    var state: [2 * 16]f32 = undefined;
    fill(&state, 3);
    try cache.updateSsm(0, null, .{ .f32 = &state }); // slots 0 and 1
    var back: [4 * 16]f32 = undefined;
    try cache.readSsm(0, null, .{ .f32 = &back }); // all four slots
    try testing.expectEqualSlices(f32, &state, back[0..32]);
    try expectAllZero(back[32..]);
}

test "wrong buffer lengths are ShapeMismatch and change nothing" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var x = [_]f32{1} ** 17; // conv_dim is 16
    try expectError(error.ShapeMismatch, cache.updateConv(0, &.{0}, .{ .f32 = &x }));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expect(contains(diag.message(), "m2c_update_conv"));
    try expectError(error.ShapeMismatch, cache.updateConv(0, &.{0}, .{ .f32 = x[0..15] }));
    try expectError(error.ShapeMismatch, cache.updateConv(0, null, .{ .f32 = &x })); // 17 is not a multiple
    try expectError(error.ShapeMismatch, cache.setConv(0, &.{0}, .{ .f32 = x[0..16] }));
    try expectError(error.ShapeMismatch, cache.updateSsm(0, &.{ 0, 1 }, .{ .f32 = x[0..16] }));
    var out = [_]f32{5} ** 65;
    try expectError(error.ShapeMismatch, cache.readConv(0, &.{0}, .{ .f32 = &out }));
    try expectError(error.ShapeMismatch, cache.readSsm(0, &.{0}, .{ .f32 = out[0..15] }));
    for (out) |v| try expectEqual(@as(f32, 5), v); // outputs untouched on failure
    try cache.readConv(0, null, .{ .f32 = out[0..64] });
    try expectAllZero(out[0..64]); // the cache too
}

test "rows without data are refused (the NULL buffer case)" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    // An empty slice goes to C as (NULL, 0); with a row that is a length error.
    try expectError(error.ShapeMismatch, cache.updateConv(0, &.{0}, .{ .f32 = &.{} }));
    try expectError(error.ShapeMismatch, cache.readSsm(0, &.{ 0, 1 }, .{ .bf16 = &.{} }));
}

test "empty calls are valid" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    try cache.updateConv(0, &.{}, .{ .f32 = &.{} });
    try cache.updateConv(1, null, .{ .f16 = &.{} });
    try cache.setConv(0, &.{}, .{ .bf16 = &.{} });
    try cache.updateSsm(0, null, .{ .f32 = &.{} });
    try cache.readConv(0, &.{}, .{ .f32 = &.{} });
    try cache.readSsm(0, null, .{ .f32 = &.{} });
    try cache.reset(&.{});
    try cache.advance(&.{}, 5);
    try cache.copySlots(&.{}, &.{});
    try expectEqual(@as(u64, 0), try cache.position(0));
}

test "out-of-range layers and slots are OutOfRange" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var x = [_]f32{0} ** 64;
    try expectError(error.OutOfRange, cache.updateConv(2, &.{0}, .{ .f32 = x[0..16] }));
    try expectEqual(@as(?m2c.Status, .out_of_range), diag.status);
    try expectError(error.OutOfRange, cache.updateConv(std.math.maxInt(u32), &.{0}, .{ .f32 = x[0..16] }));
    try expectError(error.OutOfRange, cache.setConv(0, &.{4}, .{ .f32 = &x }));
    try expectError(error.OutOfRange, cache.updateSsm(0, &.{std.math.maxInt(i32)}, .{ .f32 = x[0..16] }));
    try expectError(error.OutOfRange, cache.readConv(5, &.{0}, .{ .f32 = &x }));
    try expectError(error.OutOfRange, cache.readSsm(0, &.{4}, .{ .f32 = x[0..16] }));
    try expectError(error.OutOfRange, cache.reset(&.{ 0, 4 }));
    try expectError(error.OutOfRange, cache.advance(&.{9}, 1));
    try expectError(error.OutOfRange, cache.position(4));
    try expectError(error.OutOfRange, cache.position(-1));
    try expectError(error.OutOfRange, cache.convView(2));
    try expectError(error.OutOfRange, cache.ssmView(2));
    try expectError(error.OutOfRange, cache.slotRelease(4));
    var snap_buf: [1024]u8 = undefined;
    try expectError(error.OutOfRange, cache.slotSave(4, &snap_buf));
    try expectError(error.OutOfRange, cache.slotLoad(-3, &.{}));
    try expectError(error.OutOfRange, cache.copySlots(&.{4}, &.{0}));
    try expectError(error.OutOfRange, cache.copySlots(&.{0}, &.{4}));
    try expectError(error.OutOfRange, cache.copySlots(&.{-1}, &.{0})); // negative source, real destination
    try expectEqual(@as(u64, 0), try cache.position(0)); // nothing moved
}

test "a slot listed twice is InvalidArg and changes nothing" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var x = [_]f32{1} ** 32;
    try expectError(error.InvalidArg, cache.updateConv(0, &.{ 1, 1 }, .{ .f32 = &x }));
    try expectEqual(@as(?m2c.Status, .invalid_arg), diag.status);
    try expectError(error.InvalidArg, cache.updateSsm(0, &.{ 3, 3 }, .{ .f32 = &x }));
    try expectError(error.InvalidArg, cache.advance(&.{ 2, 0, 2 }, 1));
    try expectError(error.InvalidArg, cache.reset(&.{ 0, 0 }));
    var out: [32]f32 = undefined;
    try expectError(error.InvalidArg, cache.readSsm(0, &.{ 1, 1 }, .{ .f32 = &out }));
    try expectError(error.InvalidArg, cache.copySlots(&.{ 0, 1 }, &.{ 2, 2 }));
    try expectEqual(@as(u64, 0), try cache.position(2));
    try cache.readSsm(0, null, .{ .f32 = &out });
    try expectAllZero(&out);
    // Padding rows may repeat.
    try cache.advance(&.{ -1, -1, 1 }, 1);
    try expectEqual(@as(u64, 1), try cache.position(1));
}

test "reset and advance move positions; null means every slot" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    try cache.advance(null, 3);
    try cache.advance(&.{ 1, -1 }, 2);
    try expectEqual(@as(u64, 3), try cache.position(0));
    try expectEqual(@as(u64, 5), try cache.position(1));
    try expectEqual(@as(u64, 3), try cache.position(3));
    var state = [_]f32{2} ** 16;
    try cache.updateSsm(1, &.{1}, .{ .f32 = &state });
    try cache.reset(&.{1});
    try expectEqual(@as(u64, 0), try cache.position(1));
    try expectEqual(@as(u64, 3), try cache.position(2));
    try cache.readSsm(1, &.{1}, .{ .f32 = &state });
    try expectAllZero(&state);
    try cache.reset(null);
    try expectEqual(@as(u64, 0), try cache.position(3));
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

test "views describe the storage and alias it" {
    var cache = try m2c.Cache.init(smallConfig(3, .f32, .bf16), null);
    defer cache.deinit();
    const conv = try cache.convView(1);
    try expectEqual(@as(u32, 3), conv.ndim);
    try expectEqual([4]u64{ 4, 16, 3, 1 }, conv.shape);
    try expectEqual([4]u64{ 48, 3, 1, 0 }, conv.strides);
    try expectEqual(m2c.Dtype.f32, conv.dtype);
    try expectEqual(m2c.Device.cpu, conv.device);
    try expectEqual(@as(usize, 4 * 48), conv.len());
    try expectEqual(@as(usize, 0), @intFromPtr(conv.data) % 64);
    try expectEqual(@as(?[]u16, null), conv.slice(.bf16)); // wrong dtype
    const cells = conv.slice(.f32).?;
    cells[2 * 48 + 5] = 4.5; // slot 2, channel 1, column 2
    var win: [48]f32 = undefined;
    try cache.readConv(1, &.{2}, .{ .f32 = &win });
    try expectEqual(@as(f32, 4.5), win[5]);

    const ssm = try cache.ssmView(0);
    try expectEqual(@as(u32, 4), ssm.ndim);
    try expectEqual([4]u64{ 4, 4, 2, 2 }, ssm.shape);
    try expectEqual(m2c.Dtype.bf16, ssm.dtype);
    var state = [_]f32{1.5} ** 16;
    try cache.updateSsm(0, &.{3}, .{ .f32 = &state });
    try expectEqual(@as(u16, 0x3FC0), ssm.slice(.bf16).?[3 * 16]);
}

test "a buffer that aliases the cache's storage is refused" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    const cells = (try cache.convView(0)).slice(.f32).?;
    try expectError(error.InvalidArg, cache.readConv(1, &.{0}, .{ .f32 = cells[0..64] }));
    try expectEqual(@as(?m2c.Status, .invalid_arg), diag.status);
    try expectError(error.InvalidArg, cache.setConv(0, &.{1}, .{ .f32 = cells[0..64] }));
    // The whole conv storage of layer 1 (1024 bytes) is larger than a snapshot.
    const conv1 = (try cache.convView(1)).slice(.f32).?;
    try expect(std.mem.sliceAsBytes(conv1).len >= try cache.slotSnapshotSize());
    try expectError(error.InvalidArg, cache.slotSave(0, std.mem.sliceAsBytes(conv1)));
}

// ---------------------------------------------------------------------------
// Non-finite values
// ---------------------------------------------------------------------------

test "checkFinite counts NaN and Inf in one slot; they stay in the slot they entered" {
    const gpa = testing.allocator;
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(kernelConfig(kc.kernel, .bf16, .f32), &diag);
    defer cache.deinit();
    for (0..4) |s| try expectEqual(@as(u64, 0), try cache.checkFinite(@intCast(s)));

    var state = [_]f32{1} ** kc.state_len;
    state[3] = std.math.nan(f32);
    state[7] = -std.math.inf(f32);
    try cache.updateSsm(1, &.{2}, .{ .f32 = &state });
    try expectEqual(@as(u64, 2), try cache.checkFinite(2));

    // A NaN in one token of slot 0's prompt poisons slot 0 only.
    var prng = std.Random.DefaultPrng.init(5);
    var tok = try SsmTokens(.f32).random(gpa, prng.random(), 4);
    defer tok.deinit(gpa);
    tok.x[kc.x_row + 1] = std.math.nan(f32); // token 1: slot 0's second
    var y: [4 * kc.x_row]f32 = undefined;
    const A = [_]f32{-1} ** kc.heads;
    try cache.ssmPrefill(0, &.{ 0, 3 }, &.{ 0, 2, 4 }, tok.io(0, 4, &y), .{ .A = &A });
    try expect(try cache.checkFinite(0) > 0);
    try expectEqual(@as(u64, 0), try cache.checkFinite(3));
    try expectEqual(@as(u64, 0), try cache.checkFinite(1));

    try cache.reset(&.{ 0, 2 });
    try expectEqual(@as(u64, 0), try cache.checkFinite(0));
    try expectEqual(@as(u64, 0), try cache.checkFinite(2));
    try expectError(error.OutOfRange, cache.checkFinite(4));
    try expectEqual(@as(?m2c.Status, .out_of_range), diag.status);
    try expect(contains(diag.message(), "m2c_check_finite"));
    try expectError(error.OutOfRange, cache.checkFinite(-1));
}

test "setSsm and countNonfinite marshal like their first names and map errors" {
    var diag: m2c.Diagnostics = .{};
    var a = try m2c.Cache.init(kernelConfig(kc.kernel, .bf16, .f32), &diag);
    defer a.deinit();
    var b = try m2c.Cache.init(kernelConfig(kc.kernel, .bf16, .f32), &diag);
    defer b.deinit();
    var state: [2 * kc.state_len]f32 = undefined;
    for (&state, 0..) |*v, i| v.* = @as(f32, @floatFromInt(i)) * 0.25;
    state[5] = std.math.nan(f32);
    try a.setSsm(1, &.{ 3, 0 }, .{ .f32 = &state });
    try b.updateSsm(1, &.{ 3, 0 }, .{ .f32 = &state });
    for ([_]*m2c.Cache{ &a, &b }) |cache| {
        var back: [2 * kc.state_len]f32 = undefined;
        try cache.readSsm(1, &.{ 3, 0 }, .{ .f32 = &back });
        try expectSameBits(std.mem.sliceAsBytes(&state), std.mem.sliceAsBytes(&back));
        for ([_]u64{ 0, 0, 0, 1 }, 0..) |want, s| {
            try expectEqual(want, try cache.countNonfinite(@intCast(s)));
            try expectEqual(want, try cache.checkFinite(@intCast(s)));
        }
    }
    try expectError(error.ShapeMismatch, a.setSsm(0, &.{0}, .{ .f32 = &state }));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expect(contains(diag.message(), "m2c_set_ssm"));
    try expectError(error.OutOfRange, a.countNonfinite(4));
    try expect(contains(diag.message(), "m2c_count_nonfinite"));
}
