//! Error mapping: every status to its own error, unknown codes, and the
//! diagnostics a failure leaves (Diagnostics, lastError).
const std = @import("std");
const m2c = @import("m2c");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expect = testing.expect;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;

const smallConfig = helpers.smallConfig;
const contains = helpers.contains;

test "every status code maps to its own error and unknown codes are errors" {
    const want = [_]struct { m2c.Status, ?m2c.Error }{
        .{ .ok, null },
        .{ .null_arg, error.NullArg },
        .{ .invalid_arg, error.InvalidArg },
        .{ .invalid_config, error.InvalidConfig },
        .{ .out_of_range, error.OutOfRange },
        .{ .shape_mismatch, error.ShapeMismatch },
        .{ .unsupported_dtype, error.UnsupportedDtype },
        .{ .out_of_memory, error.OutOfMemory },
        .{ .poisoned, error.Poisoned },
        .{ .panic, error.Panic },
        .{ .unsupported, error.Unsupported },
        .{ .no_free_slot, error.NoFreeSlot },
        .{ .corrupt, error.Corrupt },
        .{ .incompatible, error.Incompatible },
        .{ .io, error.Io },
        .{ .not_found, error.NotFound },
    };
    try expectEqual(@typeInfo(m2c.Status).@"enum".fields.len, want.len);
    for (want) |w| {
        const code = @intFromEnum(w[0]);
        if (w[1]) |err| try expectError(err, m2c.check(code)) else try m2c.check(code);
        try expect(!std.mem.eql(u8, m2c.statusStr(code), "unknown status code"));
    }
    for ([_]i32{ 16, 17, 1000, -1, std.math.minInt(i32), std.math.maxInt(i32) }) |code| {
        try expectError(error.Unknown, m2c.check(code));
        try testing.expectEqualStrings("unknown status code", m2c.statusStr(code));
    }
    try testing.expectEqualStrings(m2c.statusStr(m2c.c.M2C_STATUS_IO), m2c.Status.io.str());
}

// ---------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------

test "a long message is truncated with an ellipsis; format prints status and message" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    const long = "/nonexistent-m2c-dir/" ++ [_]u8{'x'} ** 2000;
    try expectError(error.Io, cache.loadFile(long));
    try expect(m2c.lastError().len > m2c.Diagnostics.max_message);
    try expectEqual(@as(usize, m2c.Diagnostics.max_message), diag.message().len);
    try expect(std.mem.endsWith(u8, diag.message(), "..."));
    try testing.expectEqualStrings(m2c.lastError()[0 .. m2c.Diagnostics.max_message - 3], diag.message()[0 .. m2c.Diagnostics.max_message - 3]);

    try expectError(error.OutOfRange, cache.position(9));
    var buf: [2048]u8 = undefined;
    const text = try std.fmt.bufPrint(&buf, "{f}", .{diag});
    try expect(std.mem.startsWith(u8, text, m2c.Status.out_of_range.str()));
    try expect(std.mem.endsWith(u8, text, m2c.lastError()));
}

test "lastError is per thread and a success leaves it alone" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    try expectError(error.OutOfRange, cache.position(7));
    const here = try testing.allocator.dupe(u8, m2c.lastError());
    defer testing.allocator.free(here);
    try expect(contains(here, "m2c_position"));
    _ = try cache.position(0);
    try testing.expectEqualStrings(here, m2c.lastError());
    const T = struct {
        fn run(out: *[256]u8, len: *usize) void {
            const msg = m2c.lastError(); // a fresh thread has no failure
            len.* = msg.len;
            @memcpy(out[0..msg.len], msg);
        }
    };
    var other: [256]u8 = undefined;
    var other_len: usize = 99;
    const t = try std.Thread.spawn(.{}, T.run, .{ &other, &other_len });
    t.join();
    try expectEqual(@as(usize, 0), other_len);
}
