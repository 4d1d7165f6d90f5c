//! Tests of the Zig bindings, written as a consumer of the `m2c` module:
//! every wrapper, its failures (wrong lengths, ranges, duplicates, freed
//! handles, damaged snapshots and files) and the link mode.
const std = @import("std");
const m2c = @import("m2c");
const build_options = @import("build_options");

const testing = std.testing;
const expect = testing.expect;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;

/// 2 layers, 4 slots, conv_dim 16, 4 heads of 2, state_size 2, 2 groups:
/// the small shape the C tests use.
fn smallConfig(conv_width: u32, conv_dtype: m2c.Dtype, ssm_dtype: m2c.Dtype) m2c.Config {
    var cfg = m2c.Config.default();
    cfg.num_layers = 2;
    cfg.num_slots = 4;
    cfg.num_heads = 4;
    cfg.head_dim = 2;
    cfg.intermediate_size = 8;
    cfg.state_size = 2;
    cfg.n_groups = 2;
    cfg.conv_kernel_size = 4;
    cfg.conv_width = conv_width;
    cfg.conv_dtype = conv_dtype;
    cfg.ssm_dtype = ssm_dtype;
    return cfg;
}

fn contains(haystack: []const u8, needle: []const u8) bool {
    return std.mem.indexOf(u8, haystack, needle) != null;
}

/// Distinct, exactly representable values (in f32, bf16 and f16).
fn fill(buf: []f32, seed: f32) void {
    for (buf, 0..) |*v, i| v.* = seed + @as(f32, @floatFromInt(i % 64)) * 0.25;
}

fn expectAllZero(buf: []const f32) !void {
    for (buf) |v| try expectEqual(@as(f32, 0), v);
}

// ---------------------------------------------------------------------------
// Versions, status codes, config
// ---------------------------------------------------------------------------

test "version and ABI version of the library agree with the header" {
    try testing.expectEqualStrings(m2c.header_version, m2c.version());
    try expectEqual(m2c.header_abi_version, m2c.abiVersion());
    try m2c.checkAbi(m2c.abiVersion(), null);
}

test "checkAbi refuses another ABI version and says why" {
    var diag: m2c.Diagnostics = .{};
    try expectError(error.AbiMismatch, m2c.checkAbi(m2c.header_abi_version + 1, &diag));
    try expectEqual(@as(?m2c.Status, null), diag.status);
    try expect(contains(diag.message(), "ABI version 2"));
    try expectError(error.AbiMismatch, m2c.checkAbi(0, null));
}

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
    };
    try expectEqual(@typeInfo(m2c.Status).@"enum".fields.len, want.len);
    for (want) |w| {
        const code = @intFromEnum(w[0]);
        if (w[1]) |err| try expectError(err, m2c.check(code)) else try m2c.check(code);
        try expect(!std.mem.eql(u8, m2c.statusStr(code), "unknown status code"));
    }
    for ([_]i32{ 15, 16, 1000, -1, std.math.minInt(i32), std.math.maxInt(i32) }) |code| {
        try expectError(error.Unknown, m2c.check(code));
        try testing.expectEqualStrings("unknown status code", m2c.statusStr(code));
    }
    try testing.expectEqualStrings(m2c.statusStr(m2c.c.M2C_STATUS_IO), m2c.Status.io.str());
}

test "Config.default is m2c_config_init and round-trips through the C struct" {
    const cfg = m2c.Config.default();
    try expectEqual(@as(u32, 24), cfg.num_layers);
    try expectEqual(@as(u32, 1), cfg.num_slots);
    try expectEqual(@as(u32, 1536), cfg.intermediate_size);
    try expectEqual(@as(u32, 128), cfg.state_size);
    try expectEqual(cfg.conv_kernel_size, cfg.conv_width);
    try expectEqual(m2c.Dtype.bf16, cfg.conv_dtype);
    try expectEqual(m2c.Dtype.f32, cfg.ssm_dtype);
    try expectEqual(m2c.Device.cpu, cfg.device);
    const raw = cfg.toC();
    try expectEqual(@as(u32, @sizeOf(m2c.c.m2c_config)), raw.struct_size);
    try expectEqual(cfg, m2c.Config.fromC(raw));
    try expectEqual(@as(usize, 1536 + 2 * 128), cfg.convDim());
    try expectEqual(@as(usize, 24 * 64 * 128), cfg.ssmStateLen());
}

test "configBytes counts the state storage; a bad config is InvalidConfig with diagnostics" {
    // conv: 4 slots * 16 * 4 f32 = 1024 B; ssm: 4 slots * 16 f32 = 256 B; two layers.
    try expectEqual(@as(u64, 2 * (1024 + 256)), try m2c.configBytes(smallConfig(4, .f32, .f32), null));
    var cfg = smallConfig(4, .f32, .f32);
    cfg.num_heads = 3; // 3 * 2 != intermediate_size
    var diag: m2c.Diagnostics = .{};
    try expectError(error.InvalidConfig, m2c.configBytes(cfg, &diag));
    try expectEqual(@as(?m2c.Status, .invalid_config), diag.status);
    try expect(contains(diag.message(), "m2c_config_bytes"));
    cfg = smallConfig(4, @enumFromInt(7), .f32);
    try expectError(error.UnsupportedDtype, m2c.configBytes(cfg, &diag));
}

/// Each C function and the binding that wraps it.
const wrappers = .{
    .{ "m2c_config_init", m2c.Config, "default" },
    .{ "m2c_config_bytes", m2c, "configBytes" },
    .{ "m2c_create", m2c.Cache, "init" },
    .{ "m2c_destroy", m2c.Cache, "deinit" },
    .{ "m2c_get_config", m2c.Cache, "getConfig" },
    .{ "m2c_update_conv", m2c.Cache, "updateConv" },
    .{ "m2c_set_conv", m2c.Cache, "setConv" },
    .{ "m2c_update_ssm", m2c.Cache, "updateSsm" },
    .{ "m2c_read_conv", m2c.Cache, "readConv" },
    .{ "m2c_read_ssm", m2c.Cache, "readSsm" },
    .{ "m2c_reset", m2c.Cache, "reset" },
    .{ "m2c_advance", m2c.Cache, "advance" },
    .{ "m2c_position", m2c.Cache, "position" },
    .{ "m2c_conv_view", m2c.Cache, "convView" },
    .{ "m2c_ssm_view", m2c.Cache, "ssmView" },
    .{ "m2c_status_str", m2c, "statusStr" },
    .{ "m2c_last_error", m2c, "lastError" },
    .{ "m2c_version", m2c, "version" },
    .{ "m2c_abi_version", m2c, "abiVersion" },
    .{ "m2c_conv_args_init", m2c.ConvArgs, "toC" },
    .{ "m2c_ssm_args_init", m2c.SsmArgs, "toC" },
    .{ "m2c_ssm_io_init", m2c.SsmIo, "toC" },
    .{ "m2c_conv_step", m2c.Cache, "convStep" },
    .{ "m2c_ssm_step", m2c.Cache, "ssmStep" },
    .{ "m2c_slot_acquire", m2c.Cache, "slotAcquire" },
    .{ "m2c_slot_release", m2c.Cache, "slotRelease" },
    .{ "m2c_slots_in_use", m2c.Cache, "slotsInUse" },
    .{ "m2c_copy_slots", m2c.Cache, "copySlots" },
    .{ "m2c_slot_snapshot_size", m2c.Cache, "slotSnapshotSize" },
    .{ "m2c_slot_save", m2c.Cache, "slotSave" },
    .{ "m2c_slot_load", m2c.Cache, "slotLoad" },
    .{ "m2c_save_file", m2c.Cache, "saveFile" },
    .{ "m2c_load_file", m2c.Cache, "loadFile" },
};

/// The functions m2c.h declares.
const declared_fns = blk: {
    @setEvalBranchQuota(1_000_000);
    var n = 0;
    for (@typeInfo(m2c.c).@"struct".decls) |d| {
        if (std.mem.startsWith(u8, d.name, "m2c_") and @typeInfo(@TypeOf(@field(m2c.c, d.name))) == .@"fn") n += 1;
    }
    break :blk n;
};

/// The functions m2c.h declares that `wrappers` does not list.
const unwrapped: []const []const u8 = blk: {
    @setEvalBranchQuota(1_000_000);
    var names: []const []const u8 = &.{};
    for (@typeInfo(m2c.c).@"struct".decls) |d| {
        if (!std.mem.startsWith(u8, d.name, "m2c_")) continue;
        if (@typeInfo(@TypeOf(@field(m2c.c, d.name))) != .@"fn") continue;
        var listed = false;
        for (wrappers) |row| {
            if (std.mem.eql(u8, row[0], d.name)) listed = true;
        }
        if (!listed) names = names ++ [_][]const u8{d.name};
    }
    break :blk names;
};

test "every function in m2c.h has a wrapper" {
    for (unwrapped) |name| std.debug.print("m2c.h declares {s}, which the Zig bindings do not wrap\n", .{name});
    try expectEqual(@as(usize, 0), unwrapped.len);
    try expectEqual(@as(usize, wrappers.len), declared_fns);
    inline for (wrappers) |row| {
        if (!@hasDecl(row[1], row[2])) @compileError(@typeName(row[1]) ++ "." ++ row[2] ++ " is missing");
        if (!@hasDecl(m2c.c, row[0])) {
            std.debug.print("{s} is listed but m2c.h no longer declares it\n", .{row[0]});
            return error.TestUnexpectedResult;
        }
    }
}

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

test "init refuses bad configs with the library's reason and writes no cache" {
    var diag: m2c.Diagnostics = .{};
    var cfg = smallConfig(4, .f32, .f32);
    cfg.n_groups = 3; // does not divide num_heads
    try expectError(error.InvalidConfig, m2c.Cache.init(cfg, &diag));
    try expectEqual(@as(?m2c.Status, .invalid_config), diag.status);
    try expect(contains(diag.message(), "n_groups"));

    cfg = smallConfig(4, .f32, @enumFromInt(9));
    try expectError(error.UnsupportedDtype, m2c.Cache.init(cfg, &diag));
    try expectEqual(@as(?m2c.Status, .unsupported_dtype), diag.status);

    cfg = smallConfig(4, .f32, .f32);
    cfg.device = .cuda;
    try expectError(error.Unsupported, m2c.Cache.init(cfg, &diag));

    cfg = smallConfig(4, .f32, .f32);
    cfg.conv_width = 7; // neither K nor K-1
    try expectError(error.InvalidConfig, m2c.Cache.init(cfg, null));
}

test "an absurdly large cache fails cleanly with OutOfMemory" {
    var cfg = m2c.Config.default();
    cfg.num_slots = std.math.maxInt(i32); // tens of terabytes
    var diag: m2c.Diagnostics = .{};
    if (m2c.Cache.init(cfg, &diag)) |cache| {
        var cache_mut = cache;
        cache_mut.deinit();
        return error.TestUnexpectedResult;
    } else |err| switch (err) {
        error.OutOfMemory, error.InvalidConfig => try expect(contains(diag.message(), "m2c_create")),
        else => return err,
    }
    // and the process goes on
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    cache.deinit();
}

test "getConfig returns the configuration and Cache.shape the per-slot sizes" {
    const cfg = smallConfig(3, .bf16, .f16);
    var cache = try m2c.Cache.init(cfg, null);
    defer cache.deinit();
    try expectEqual(cfg, try cache.getConfig());
    try expectEqual(@as(u32, 4), cache.shape.num_slots);
    try expectEqual(@as(usize, 16), cache.shape.conv_dim);
    try expectEqual(@as(usize, 48), cache.shape.conv_window_len);
    try expectEqual(@as(usize, 16), cache.shape.ssm_state_len);
}

test "deinit is idempotent and a freed cache answers NullArg everywhere" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    cache.deinit();
    cache.deinit();
    var x = [_]f32{0} ** 16;
    try expectError(error.NullArg, cache.updateConv(0, &.{0}, .{ .f32 = &x }));
    try expectEqual(@as(?m2c.Status, .null_arg), diag.status);
    try expect(contains(diag.message(), "cache"));
    try expectError(error.NullArg, cache.getConfig());
    try expectError(error.NullArg, cache.readConv(0, null, .{ .f32 = &x }));
    try expectError(error.NullArg, cache.position(0));
    try expectError(error.NullArg, cache.reset(null));
    try expectError(error.NullArg, cache.advance(null, 1));
    try expectError(error.NullArg, cache.convView(0));
    try expectError(error.NullArg, cache.slotAcquire());
    try expectError(error.NullArg, cache.slotsInUse());
    try expectError(error.NullArg, cache.slotSnapshotSize());
    try expectError(error.NullArg, cache.copySlots(&.{0}, &.{1}));
    try expectError(error.NullArg, cache.saveFile("/nonexistent/m2c"));
}

// ---------------------------------------------------------------------------
// Conv and SSM state
// ---------------------------------------------------------------------------

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
// Decode kernels
// ---------------------------------------------------------------------------

fn silu(v: f32) f32 {
    return v / (1 + @exp(-v));
}

test "ConvArgs and SsmArgs defaults are the library's" {
    const conv = (m2c.ConvArgs{ .weight = &.{} }).toC(.f32);
    var want_conv: m2c.c.m2c_conv_args = undefined;
    m2c.c.m2c_conv_args_init(&want_conv);
    try expectEqual(want_conv, conv);
    const ssm = (m2c.SsmArgs{ .A = &.{} }).toC(.f32);
    var want_ssm: m2c.c.m2c_ssm_args = undefined;
    m2c.c.m2c_ssm_args_init(&want_ssm);
    try expectEqual(want_ssm, ssm);
    const io = (m2c.SsmIo{ .x = .{ .f32 = &.{} }, .dt = .{ .f32 = &.{} }, .B = .{ .f32 = &.{} }, .C = .{ .f32 = &.{} }, .y = .{ .f32 = &.{} } }).toC();
    var want_io: m2c.c.m2c_ssm_io = undefined;
    m2c.c.m2c_ssm_io_init(&want_io);
    try expectEqual(want_io, io);
}

test "convStep pushes x and sums the newest K inputs, in both window layouts" {
    for ([_]u32{ 4, 3 }) |width| {
        var cache = try m2c.Cache.init(smallConfig(width, .f32, .f32), null);
        defer cache.deinit();
        const weight = [_]f32{1} ** (16 * 4);
        const args: m2c.ConvArgs = .{ .weight = &weight, .activation = .none };
        var x1: [16]f32 = undefined;
        fill(&x1, 1);
        var x2: [16]f32 = undefined;
        fill(&x2, -3);
        var out: [16]f32 = undefined;
        try cache.convStep(0, &.{2}, .{ .f32 = &x1 }, .{ .f32 = &out }, args);
        try testing.expectEqualSlices(f32, &x1, &out);
        try cache.convStep(0, &.{2}, .{ .f32 = &x2 }, .{ .f32 = &out }, args);
        for (out, x1, x2) |o, a, b| try expectEqual(a + b, o);
        var win: [16 * 4]f32 = undefined;
        try cache.readConv(0, &.{2}, .{ .f32 = win[0 .. 16 * width] });
        for (0..16) |ch| try expectEqual(x2[ch], win[ch * width + width - 1]);
        try expectEqual(@as(u64, 0), try cache.position(2)); // not advanced
    }
}

test "convStep applies bias and SiLU, zeroes padding rows, takes f16 tokens" {
    var cache = try m2c.Cache.init(smallConfig(4, .bf16, .f32), null);
    defer cache.deinit();
    var weight = [_]f32{0} ** (16 * 4);
    for (0..16) |ch| weight[ch * 4 + 3] = 1; // the newest tap only
    const bias = [_]f32{0.5} ** 16;
    const x = [_]f16{1} ** 16 ++ [_]f16{7} ** 16;
    var out = [_]f16{9} ** 32;
    try cache.convStep(1, &.{ 1, -1 }, .{ .f16 = &x }, .{ .f16 = &out }, .{ .weight = &weight, .bias = &bias });
    for (out[0..16]) |v| try testing.expectApproxEqAbs(silu(1.5), @as(f32, v), 2e-3);
    for (out[16..]) |v| try expectEqual(@as(f16, 0), v);
    var win: [64]f32 = undefined;
    try cache.readConv(1, &.{0}, .{ .f32 = &win });
    try expectAllZero(&win); // other slots untouched
}

test "convStep refuses bad arguments and changes nothing" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    const weight = [_]f32{1} ** 64;
    const args: m2c.ConvArgs = .{ .weight = &weight };
    var x = [_]f32{2} ** 32;
    var out = [_]f32{5} ** 32;
    var h = [_]f16{5} ** 16;

    try expectError(error.InvalidArg, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f16 = &h }, args));
    try expectEqual(@as(?m2c.Status, null), diag.status); // refused by the binding
    try expect(contains(diag.message(), "x is f32 but out is f16"));
    try expectError(error.ShapeMismatch, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, .{ .weight = weight[0..48] }));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expect(contains(diag.message(), "m2c_conv_step"));
    try expectError(error.ShapeMismatch, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, .{ .weight = &weight, .bias = weight[0..15] }));
    try expectError(error.ShapeMismatch, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..15] }, args));
    try expectError(error.ShapeMismatch, cache.convStep(0, &.{ 0, 1 }, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, args));
    try expectError(error.NullArg, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, .{ .weight = &.{} }));
    try expectError(error.InvalidArg, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, .{ .weight = &weight, .activation = @enumFromInt(7) }));
    try expectError(error.OutOfRange, cache.convStep(2, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, args));
    try expectError(error.OutOfRange, cache.convStep(0, &.{4}, .{ .f32 = x[0..16] }, .{ .f32 = out[0..16] }, args));
    try expectError(error.InvalidArg, cache.convStep(0, &.{ 3, 3 }, .{ .f32 = &x }, .{ .f32 = &out }, args));
    // out aliasing x, and out inside the cache's storage
    try expectError(error.InvalidArg, cache.convStep(0, &.{0}, .{ .f32 = out[0..16] }, .{ .f32 = out[0..16] }, args));
    const cells = (try cache.convView(1)).slice(.f32).?;
    try expectError(error.InvalidArg, cache.convStep(0, &.{0}, .{ .f32 = x[0..16] }, .{ .f32 = cells[0..16] }, args));

    for (out) |v| try expectEqual(@as(f32, 5), v);
    for (h) |v| try expectEqual(@as(f16, 5), v);
    var win: [4 * 64]f32 = undefined;
    try cache.readConv(0, null, .{ .f32 = &win });
    try expectAllZero(&win);
}

/// The small shape's SSM buffers for `rows` rows.
fn SsmBufs(comptime rows: usize, comptime T: type) type {
    return struct {
        x: [rows * 8]T, // [rows, heads 4, head_dim 2]
        dt: [rows * 4]T, // [rows, heads 4]
        B: [rows * 4]T, // [rows, groups 2, state 2]
        C: [rows * 4]T,
        z: [rows * 8]T,
        y: [rows * 8]T,
    };
}

test "ssmStep updates the state and computes y (decay, D, gate, padding, dense rows)" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer cache.deinit();
    var b: SsmBufs(2, f32) = undefined;
    @memset(&b.x, 1);
    @memset(&b.dt, 1);
    for (0..4) |i| b.B[i] = if (i % 2 == 0) 1 else 2; // per group [1, 2]
    for (4..8) |i| b.B[i] = 9;
    @memset(&b.C, 1);
    @memset(&b.y, 7);
    const D = [_]f32{0.5} ** 4;
    const io: m2c.SsmIo = .{ .x = .{ .f32 = &b.x }, .dt = .{ .f32 = &b.dt }, .B = .{ .f32 = &b.B }, .C = .{ .f32 = &b.C }, .y = .{ .f32 = &b.y } };

    // A = 0: dA = 1; state = x * dt * B = [1, 2]; y = 1 + 2 + D*x = 3.5.
    try cache.ssmStep(0, &.{ 3, -1 }, io, .{ .A = &([_]f32{0} ** 4), .D = &D, .dt_softplus = false });
    for (b.y[0..8]) |v| try expectEqual(@as(f32, 3.5), v);
    for (b.y[8..]) |v| try expectEqual(@as(f32, 0), v); // padding row
    var state: [16]f32 = undefined;
    try cache.readSsm(0, &.{3}, .{ .f32 = &state });
    for (state, 0..) |v, i| try expectEqual(@as(f32, if (i % 2 == 0) 1 else 2), v);

    // A = -ln 2: the state halves before the update: [1.5, 3]; y = 4.5 + 0.5.
    const half = [_]f32{-@log(2.0)} ** 4;
    try cache.ssmStep(0, &.{3}, .{ .x = .{ .f32 = b.x[0..8] }, .dt = .{ .f32 = b.dt[0..4] }, .B = .{ .f32 = b.B[0..4] }, .C = .{ .f32 = b.C[0..4] }, .y = .{ .f32 = b.y[0..8] } }, .{ .A = &half, .D = &D, .dt_softplus = false });
    for (b.y[0..8]) |v| try testing.expectApproxEqAbs(@as(f32, 5), v, 1e-5);

    // A zero gate zeroes y; null slots count rows from x (slots 0 and 1).
    @memset(&b.z, 0);
    for (4..8) |i| b.B[i] = if (i % 2 == 0) 1 else 2;
    var gated = io;
    gated.z = .{ .f32 = &b.z };
    try cache.ssmStep(1, null, gated, .{ .A = &([_]f32{0} ** 4), .dt_softplus = false });
    for (b.y) |v| try expectEqual(@as(f32, 0), v);
    try cache.readSsm(1, &.{1}, .{ .f32 = &state });
    for (state, 0..) |v, i| try expectEqual(@as(f32, if (i % 2 == 0) 1 else 2), v);
}

test "ssmStep takes bf16 tokens" {
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .bf16), null);
    defer cache.deinit();
    var b: SsmBufs(1, u16) = undefined;
    @memset(&b.x, 0x3F80); // 1.0
    @memset(&b.dt, 0x3F80);
    @memset(&b.B, 0x4000); // 2.0
    @memset(&b.C, 0x3F80);
    @memset(&b.y, 0);
    try cache.ssmStep(0, &.{0}, .{ .x = .{ .bf16 = &b.x }, .dt = .{ .bf16 = &b.dt }, .B = .{ .bf16 = &b.B }, .C = .{ .bf16 = &b.C }, .y = .{ .bf16 = &b.y } }, .{ .A = &([_]f32{0} ** 4), .dt_softplus = false });
    for (b.y) |v| try expectEqual(@as(u16, 0x4080), v); // 2 + 2 = 4.0
}

test "ssmStep refuses bad arguments and changes nothing" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    var b: SsmBufs(1, f32) = undefined;
    @memset(&b.x, 1);
    @memset(&b.dt, 1);
    @memset(&b.B, 1);
    @memset(&b.C, 1);
    @memset(&b.y, 7);
    const A = [_]f32{-1} ** 4;
    const args: m2c.SsmArgs = .{ .A = &A };
    const io: m2c.SsmIo = .{ .x = .{ .f32 = &b.x }, .dt = .{ .f32 = &b.dt }, .B = .{ .f32 = &b.B }, .C = .{ .f32 = &b.C }, .y = .{ .f32 = &b.y } };
    var bad = io;

    var h = [_]f16{0} ** 4;
    bad.dt = .{ .f16 = &h };
    try expectError(error.InvalidArg, cache.ssmStep(0, &.{0}, bad, args));
    try expectEqual(@as(?m2c.Status, null), diag.status);
    try expect(contains(diag.message(), "differ in dtype"));
    bad = io;
    bad.y = .{ .f32 = b.y[0..7] };
    try expectError(error.ShapeMismatch, cache.ssmStep(0, &.{0}, bad, args));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expect(contains(diag.message(), "m2c_ssm_step"));
    bad = io;
    bad.z = .{ .f32 = b.x[0..4] };
    try expectError(error.ShapeMismatch, cache.ssmStep(0, &.{0}, bad, args));
    try expectError(error.ShapeMismatch, cache.ssmStep(0, &.{0}, io, .{ .A = A[0..3] }));
    try expectError(error.ShapeMismatch, cache.ssmStep(0, &.{0}, io, .{ .A = &A, .D = A[0..2] }));
    try expectError(error.ShapeMismatch, cache.ssmStep(0, &.{0}, io, .{ .A = &A, .dt_bias = A[0..1] }));
    try expectError(error.NullArg, cache.ssmStep(0, &.{0}, io, .{ .A = &.{} }));
    try expectError(error.InvalidArg, cache.ssmStep(0, &.{0}, io, .{ .A = &A, .dt_clamp = true, .dt_min = 2, .dt_max = 1 }));
    try expectError(error.InvalidArg, cache.ssmStep(0, &.{0}, io, .{ .A = &A, .dt_clamp = true, .dt_min = std.math.nan(f32) }));
    try expectError(error.OutOfRange, cache.ssmStep(2, &.{0}, io, args));
    try expectError(error.OutOfRange, cache.ssmStep(0, &.{4}, io, args));
    try expectError(error.ShapeMismatch, cache.ssmStep(0, &.{ 0, 1 }, io, args));
    bad = io;
    bad.y = .{ .f32 = &b.x }; // y aliasing x
    try expectError(error.InvalidArg, cache.ssmStep(0, &.{0}, bad, args));
    const cells = (try cache.ssmView(0)).slice(.f32).?;
    bad = io;
    bad.y = .{ .f32 = cells[16..24] }; // y inside the cache
    try expectError(error.InvalidArg, cache.ssmStep(0, &.{0}, bad, args));

    for (b.y) |v| try expectEqual(@as(f32, 7), v);
    for (cells) |v| try expectEqual(@as(f32, 0), v);
    // and a valid call still works
    try cache.ssmStep(0, &.{0}, io, args);
}

// ---------------------------------------------------------------------------
// Slots
// ---------------------------------------------------------------------------

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
    std.mem.writeInt(u32, future[8..12], 2, .little); // format version 2, resealed
    reseal(future);
    try expectError(error.Incompatible, a.slotLoad(0, future));
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

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn tmpPath(gpa: std.mem.Allocator, tmp: *testing.TmpDir, name: []const u8) ![]u8 {
    const dir = try tmp.dir.realpathAlloc(gpa, ".");
    defer gpa.free(dir);
    return std.fs.path.join(gpa, &.{ dir, name });
}

test "saveFile and loadFile restore every slot, position and acquired flag" {
    const gpa = testing.allocator;
    var tmp = testing.tmpDir(.{});
    defer tmp.cleanup();
    const path = try tmpPath(gpa, &tmp, "cache.m2c");
    defer gpa.free(path);

    const cfg = smallConfig(4, .bf16, .f16);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    try expectEqual(@as(i32, 0), try a.slotAcquire()); // acquiring zeroes: do it first
    var state: [4 * 16]f32 = undefined;
    fill(&state, 1);
    try a.updateSsm(1, null, .{ .f32 = &state });
    try a.advance(&.{2}, 6);
    try a.saveFile(path);

    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    try b.loadFile(path);
    var back: [4 * 16]f32 = undefined;
    try b.readSsm(1, null, .{ .f32 = &back });
    try testing.expectEqualSlices(f32, &state, &back);
    try expectEqual(@as(u64, 6), try b.position(2));
    try expectEqual(@as(u32, 1), try b.slotsInUse());

    // The Z variants take the NUL-terminated path as is.
    const pathz = try gpa.dupeZ(u8, path);
    defer gpa.free(pathz);
    try b.saveFileZ(pathz);
    try a.loadFileZ(pathz);
}

test "a missing file is Io with the OS error in the diagnostics" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    try cache.advance(null, 1);
    try expectError(error.Io, cache.loadFile("/nonexistent-m2c-dir/cache.m2c"));
    try expectEqual(@as(?m2c.Status, .io), diag.status);
    try expect(contains(diag.message(), "m2c_load_file"));
    try expect(contains(diag.message(), "No such file or directory"));
    try expect(contains(diag.message(), "/nonexistent-m2c-dir/cache.m2c"));
    // The message is a copy: a later failure elsewhere does not change it.
    const kept = diag;
    _ = m2c.c.m2c_slots_in_use(null, null);
    try testing.expectEqualStrings(kept.message(), diag.message());
    try testing.expect(!std.mem.eql(u8, m2c.lastError(), diag.message()));
    try expectError(error.Io, cache.saveFile("/nonexistent-m2c-dir/cache.m2c"));
    try expectEqual(@as(u64, 1), try cache.position(3)); // nothing changed
}

test "bad paths are InvalidArg: empty (by the library), NUL inside (by the binding)" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    try expectError(error.InvalidArg, cache.saveFile(""));
    try expectEqual(@as(?m2c.Status, .invalid_arg), diag.status);
    try expectError(error.InvalidArg, cache.loadFileZ(""));
    try expectError(error.InvalidArg, cache.loadFile("cache\x00.m2c"));
    try expectEqual(@as(?m2c.Status, null), diag.status);
    try expect(contains(diag.message(), "NUL"));
    const long = [_]u8{'a'} ** (std.fs.max_path_bytes + 1);
    try expectError(error.InvalidArg, cache.saveFile(&long));
}

test "damaged and foreign cache files are refused and change nothing" {
    const gpa = testing.allocator;
    var tmp = testing.tmpDir(.{});
    defer tmp.cleanup();
    const path = try tmpPath(gpa, &tmp, "cache.m2c");
    defer gpa.free(path);
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    try cache.saveFile(path);
    try cache.advance(null, 2);

    const bytes = try tmp.dir.readFileAlloc(gpa, "cache.m2c", 1 << 20);
    defer gpa.free(bytes);
    try testing.expectEqualStrings("M2CCACHE", bytes[0..8]);
    bytes[bytes.len / 2] ^= 0x80;
    try tmp.dir.writeFile(.{ .sub_path = "cache.m2c", .data = bytes });
    try expectError(error.Corrupt, cache.loadFile(path));
    try expectEqual(@as(?m2c.Status, .corrupt), diag.status);
    try tmp.dir.writeFile(.{ .sub_path = "cache.m2c", .data = bytes[0 .. bytes.len - 9] });
    try expectError(error.Corrupt, cache.loadFile(path));
    try expectEqual(@as(u64, 2), try cache.position(0));

    var cfg = smallConfig(4, .f32, .f32);
    cfg.num_slots = 2;
    var small = try m2c.Cache.init(cfg, null);
    defer small.deinit();
    try small.saveFile(path);
    try expectError(error.Incompatible, cache.loadFile(path));
    try expectEqual(@as(?m2c.Status, .incompatible), diag.status);
    try expectEqual(@as(u64, 2), try cache.position(3));
}

// ---------------------------------------------------------------------------
// Diagnostics, threads, link mode, README
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

test "libm2c is linked the way the build asked (shared or static)" {
    const gpa = testing.allocator;
    const f = try std.fs.openFileAbsolute("/proc/self/maps", .{});
    defer f.close();
    var buf: [4096]u8 = undefined;
    var reader = f.readerStreaming(&buf); // procfs files report size 0
    const maps = try reader.interface.allocRemaining(gpa, .unlimited);
    defer gpa.free(maps);
    try expect(contains(maps, "r-xp")); // we did read the maps
    const shared_loaded = contains(maps, "/libm2c.so");
    if (build_options.static) {
        try expect(!shared_loaded);
    } else {
        try expect(shared_loaded);
    }
    try expectEqual(m2c.header_abi_version, m2c.abiVersion()); // and it is callable
}

test "the README's example is examples/quickstart.zig, verbatim" {
    const readme = @embedFile("README.md");
    const example = @embedFile("quickstart.zig");
    try expect(contains(readme, "```zig\n" ++ example ++ "```\n"));
}
