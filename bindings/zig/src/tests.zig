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
    .{ "m2c_set_ssm", m2c.Cache, "setSsm" },
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
    .{ "m2c_conv_prefill", m2c.Cache, "convPrefill" },
    .{ "m2c_ssm_prefill", m2c.Cache, "ssmPrefill" },
    .{ "m2c_slot_acquire", m2c.Cache, "slotAcquire" },
    .{ "m2c_slot_release", m2c.Cache, "slotRelease" },
    .{ "m2c_slots_in_use", m2c.Cache, "slotsInUse" },
    .{ "m2c_copy_slots", m2c.Cache, "copySlots" },
    .{ "m2c_slot_snapshot_size", m2c.Cache, "slotSnapshotSize" },
    .{ "m2c_slot_save", m2c.Cache, "slotSave" },
    .{ "m2c_slot_load", m2c.Cache, "slotLoad" },
    .{ "m2c_save_file", m2c.Cache, "saveFile" },
    .{ "m2c_load_file", m2c.Cache, "loadFile" },
    .{ "m2c_count_nonfinite", m2c.Cache, "countNonfinite" },
    .{ "m2c_check_finite", m2c.Cache, "checkFinite" },
    .{ "m2c_set_stream", m2c.Cache, "setStream" },
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
    try expectError(error.NullArg, cache.checkFinite(0));
    const w = [_]f32{1} ** 64;
    var o = [_]f32{0} ** 16;
    try expectError(error.NullArg, cache.convPrefill(0, &.{0}, &.{ 0, 1 }, .{ .f32 = &x }, .{ .f32 = &o }, .{ .weight = &w }));
    try expectEqual(@as(?m2c.Status, .null_arg), diag.status);
    try expect(contains(diag.message(), "m2c_conv_prefill"));
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
// The math, against an f64 reference
// ---------------------------------------------------------------------------

/// A shape that exercises the kernels' vector loops: 2 layers, 4 slots,
/// 4 heads of 4, state_size 20 (a 16-lane block and a tail), 2 groups;
/// conv_dim = 16 + 2*2*20 = 96.
fn kernelConfig(conv_width: u32, conv_dtype: m2c.Dtype, ssm_dtype: m2c.Dtype) m2c.Config {
    var cfg = m2c.Config.default();
    cfg.num_layers = 2;
    cfg.num_slots = 4;
    cfg.num_heads = kc.heads;
    cfg.head_dim = kc.head_dim;
    cfg.intermediate_size = kc.heads * kc.head_dim;
    cfg.state_size = kc.state;
    cfg.n_groups = kc.groups;
    cfg.conv_kernel_size = kc.kernel;
    cfg.conv_width = conv_width;
    cfg.conv_dtype = conv_dtype;
    cfg.ssm_dtype = ssm_dtype;
    return cfg;
}

/// The sizes of `kernelConfig`, and the elements of one token row of each
/// buffer.
const kc = struct {
    const heads = 4;
    const head_dim = 4;
    const state = 20;
    const groups = 2;
    const kernel = 4;
    const conv_dim = heads * head_dim + 2 * groups * state; // 96
    const x_row = heads * head_dim; // x, z, y
    const dt_row = heads;
    const bc_row = groups * state; // B, C
    const state_len = heads * head_dim * state;
};

/// Uniform values in [-scale, scale).
fn randomize(rand: std.Random, buf: []f32, scale: f32) void {
    for (buf) |*v| v.* = (rand.float(f32) * 2 - 1) * scale;
}

/// max |got - want| / max |want|, the measure of tests/kernels.rs: the
/// error relative to the tensor's scale, so that outputs near zero (a SiLU,
/// a cancelling sum) do not make it meaningless.
fn relErr(got: []const f32, want: []const f64) f64 {
    var scale: f64 = 1e-30;
    for (want) |w| scale = @max(scale, @abs(w));
    var worst: f64 = 0;
    for (got, want) |g, w| worst = @max(worst, @abs(@as(f64, g) - w));
    return worst / scale;
}

fn silu64(v: f64) f64 {
    return v / (1 + @exp(-v));
}

test "convStep matches an f64 reference over several tokens (f32, relative error <= 1e-5)" {
    var prng = std.Random.DefaultPrng.init(0x5eed_c0);
    const rand = prng.random();
    const dim = kc.conv_dim;
    const K = kc.kernel;
    for ([_]u32{ K, K - 1 }) |width| {
        for ([_]bool{ true, false }) |with_bias| {
            var cache = try m2c.Cache.init(kernelConfig(width, .f32, .f32), null);
            defer cache.deinit();
            var weight: [dim * K]f32 = undefined;
            randomize(rand, &weight, 0.5);
            var bias: [dim]f32 = undefined;
            randomize(rand, &bias, 0.5);
            const args: m2c.ConvArgs = .{ .weight = &weight, .bias = if (with_bias) &bias else null };
            const slots = [_]i32{ 3, -1, 1 };
            // The inputs each slot has seen, oldest first, in f64 (zeros: a
            // fresh window).
            var hist = [_][K]f64{[_]f64{0} ** K} ** (slots.len * dim);
            for (0..6) |step| {
                var x: [slots.len * dim]f32 = undefined;
                randomize(rand, &x, 2);
                var out = [_]f32{7} ** (slots.len * dim);
                try cache.convStep(1, &slots, .{ .f32 = &x }, .{ .f32 = &out }, args);

                var want = [_]f64{0} ** (slots.len * dim);
                for (slots, 0..) |s, r| {
                    if (s < 0) continue;
                    for (0..dim) |ch| {
                        const h = &hist[r * dim + ch];
                        std.mem.copyForwards(f64, h[0 .. K - 1], h[1..K]);
                        h[K - 1] = x[r * dim + ch];
                        var acc: f64 = if (with_bias) bias[ch] else 0;
                        for (0..K) |k| acc += h[k] * weight[ch * K + k];
                        want[r * dim + ch] = silu64(acc);
                    }
                }
                const err = relErr(&out, &want);
                if (err > 1e-5) {
                    std.debug.print("conv width {d} bias {} step {d}: relative error {e}\n", .{ width, with_bias, step, err });
                    return error.TestUnexpectedResult;
                }
                try expectAllZero(out[dim .. 2 * dim]); // the padding row
            }
            // The windows hold the newest `width` inputs, exactly (f32 in, f32 stored).
            var win: [2 * dim * K]f32 = undefined;
            const wl = dim * width;
            try cache.readConv(1, &.{ 3, 1 }, .{ .f32 = win[0 .. 2 * wl] });
            for ([_]usize{ 0, 2 }, 0..) |r, i| {
                for (0..dim) |ch| {
                    for (0..width) |col| {
                        try expectEqual(hist[r * dim + ch][K - width + col], @as(f64, win[i * wl + ch * width + col]));
                    }
                }
            }
        }
    }
}

test "ssmStep matches an f64 reference over several tokens (f32, relative error <= 1e-5)" {
    var prng = std.Random.DefaultPrng.init(0x5eed_55);
    const rand = prng.random();
    const H = kc.heads;
    const P = kc.head_dim;
    const N = kc.state;
    const G = kc.groups;
    const cases = [_]struct { z: bool, d: bool, bias: bool, softplus: bool, clamp: bool }{
        .{ .z = true, .d = true, .bias = true, .softplus = true, .clamp = false },
        .{ .z = false, .d = false, .bias = false, .softplus = false, .clamp = false },
        .{ .z = true, .d = false, .bias = true, .softplus = true, .clamp = true },
    };
    for (cases) |case| {
        var cache = try m2c.Cache.init(kernelConfig(4, .f32, .f32), null);
        defer cache.deinit();
        var A: [H]f32 = undefined;
        for (&A) |*a| a.* = -(rand.float(f32) * 2 + 0.1);
        var D: [H]f32 = undefined;
        randomize(rand, &D, 1);
        var dt_bias: [H]f32 = undefined;
        randomize(rand, &dt_bias, 0.5);
        const args: m2c.SsmArgs = .{
            .A = &A,
            .D = if (case.d) &D else null,
            .dt_bias = if (case.bias) &dt_bias else null,
            .dt_softplus = case.softplus,
            .dt_clamp = case.clamp,
            .dt_min = 0.05,
            .dt_max = 0.8,
        };
        const slots = [_]i32{ 2, -1, 0 };
        const R = slots.len;
        // A non-zero starting state for slot 2, and its f64 copy.
        var init_state: [kc.state_len]f32 = undefined;
        randomize(rand, &init_state, 1);
        try cache.updateSsm(0, &.{2}, .{ .f32 = &init_state });
        var want_state = [_]f64{0} ** (R * kc.state_len);
        for (init_state, 0..) |v, i| want_state[i] = v;

        for (0..5) |step| {
            var x: [R * H * P]f32 = undefined;
            randomize(rand, &x, 1);
            var dt: [R * H]f32 = undefined;
            if (case.softplus) {
                randomize(rand, &dt, 3);
            } else {
                for (&dt) |*v| v.* = rand.float(f32) * 0.5;
            }
            var B: [R * G * N]f32 = undefined;
            randomize(rand, &B, 1);
            var C: [R * G * N]f32 = undefined;
            randomize(rand, &C, 1);
            var z: [R * H * P]f32 = undefined;
            randomize(rand, &z, 2);
            var y = [_]f32{7} ** (R * H * P);
            try cache.ssmStep(0, &slots, .{
                .x = .{ .f32 = &x },
                .dt = .{ .f32 = &dt },
                .B = .{ .f32 = &B },
                .C = .{ .f32 = &C },
                .z = if (case.z) .{ .f32 = &z } else null,
                .y = .{ .f32 = &y },
            }, args);

            var want_y = [_]f64{0} ** (R * H * P);
            for (slots, 0..) |s, r| {
                if (s < 0) continue;
                for (0..H) |h| {
                    const g = h / (H / G);
                    var dtv: f64 = dt[r * H + h];
                    if (case.bias) dtv += dt_bias[h];
                    if (case.softplus) dtv = if (dtv <= 20) std.math.log1p(@exp(dtv)) else dtv;
                    if (case.clamp) dtv = std.math.clamp(dtv, 0.05, 0.8);
                    const dA = @exp(dtv * A[h]);
                    for (0..P) |p| {
                        const xv: f64 = x[(r * H + h) * P + p];
                        var acc: f64 = 0;
                        for (0..N) |n| {
                            const st = &want_state[((r * H + h) * P + p) * N + n];
                            st.* = st.* * dA + dtv * xv * B[(r * G + g) * N + n];
                            acc += st.* * C[(r * G + g) * N + n];
                        }
                        var yv = acc + (if (case.d) D[h] * xv else 0);
                        if (case.z) yv *= silu64(z[(r * H + h) * P + p]);
                        want_y[(r * H + h) * P + p] = yv;
                    }
                }
            }
            var got_state: [R * kc.state_len]f32 = undefined;
            try cache.readSsm(0, &slots, .{ .f32 = &got_state });
            const ey = relErr(&y, &want_y);
            const es = relErr(&got_state, &want_state);
            if (ey > 1e-5 or es > 1e-5) {
                std.debug.print("ssm case {any} step {d}: y error {e}, state error {e}\n", .{ case, step, ey, es });
                return error.TestUnexpectedResult;
            }
            try expectAllZero(y[H * P .. 2 * H * P]); // the padding row
        }
    }
}

// ---------------------------------------------------------------------------
// Prefill
// ---------------------------------------------------------------------------

/// `src` in the io dtype `dt` (bf16: the upper half of the f32 bits, so any
/// bf16 value can occur). The caller frees the result.
fn toIo(comptime dt: m2c.Dtype, gpa: std.mem.Allocator, src: []const f32) ![]m2c.Elem(dt) {
    const out = try gpa.alloc(m2c.Elem(dt), src.len);
    for (out, src) |*o, v| o.* = switch (dt) {
        .f32 => v,
        .f16 => @floatCast(v),
        .bf16 => @truncate(@as(u32, @bitCast(v)) >> 16),
        else => unreachable,
    };
    return out;
}

fn input(comptime dt: m2c.Dtype, s: []const m2c.Elem(dt)) m2c.Input {
    return @unionInit(m2c.Input, @tagName(dt), s);
}

fn output(comptime dt: m2c.Dtype, s: []m2c.Elem(dt)) m2c.Output {
    return @unionInit(m2c.Output, @tagName(dt), s);
}

/// Compares the bits, not the values (0.0 and -0.0 differ, NaN equals
/// itself).
fn expectSameBits(want: anytype, got: anytype) !void {
    const a = std.mem.sliceAsBytes(want);
    const b = std.mem.sliceAsBytes(got);
    if (!std.mem.eql(u8, a, b)) {
        const i = std.mem.indexOfDiff(u8, a, b).?;
        std.debug.print("the bytes differ first at {d} of {d}/{d}\n", .{ i, a.len, b.len });
        return error.TestExpectedEqual;
    }
}

/// Every slot's snapshot (each layer's conv and SSM state, the position),
/// concatenated: equal images mean bit-identical caches.
fn cacheImage(gpa: std.mem.Allocator, cache: *const m2c.Cache) ![]u8 {
    var image: std.ArrayList(u8) = .empty;
    errdefer image.deinit(gpa);
    for (0..cache.shape.num_slots) |s| {
        const snap = try cache.slotSaveAlloc(gpa, @intCast(s));
        defer gpa.free(snap);
        try image.appendSlice(gpa, snap);
    }
    return image.toOwnedSlice(gpa);
}

/// Random conv windows and SSM states in every slot of both layers.
fn seedStates(rand: std.Random, caches: []const *m2c.Cache) !void {
    const cfg = try caches[0].getConfig();
    var win: [4 * kc.conv_dim * kc.kernel]f32 = undefined;
    var state: [4 * kc.state_len]f32 = undefined;
    const wl = 4 * kc.conv_dim * cfg.conv_width;
    for (0..2) |layer| {
        randomize(rand, win[0..wl], 1);
        randomize(rand, &state, 1);
        for (caches) |cache| {
            try cache.setConv(@intCast(layer), null, .{ .f32 = win[0..wl] });
            try cache.updateSsm(@intCast(layer), null, .{ .f32 = &state });
        }
    }
}

/// The token rows of an SSM call on `kernelConfig`, in the io dtype `dt`.
fn SsmTokens(comptime dt: m2c.Dtype) type {
    return struct {
        const Self = @This();
        const E = m2c.Elem(dt);
        const fields = .{ .{ "x", kc.x_row }, .{ "dt", kc.dt_row }, .{ "B", kc.bc_row }, .{ "C", kc.bc_row }, .{ "z", kc.x_row } };

        x: []E,
        dt: []E,
        B: []E,
        C: []E,
        z: []E,

        /// `tokens` random rows.
        fn random(gpa: std.mem.Allocator, rand: std.Random, tokens: usize) !Self {
            var self: Self = undefined;
            inline for (fields, 0..) |f, i| {
                errdefer inline for (fields, 0..) |g, j| {
                    if (j < i) gpa.free(@field(self, g[0]));
                };
                const v = try gpa.alloc(f32, tokens * f[1]);
                defer gpa.free(v);
                randomize(rand, v, if (comptime std.mem.eql(u8, f[0], "z")) 2 else 1);
                @field(self, f[0]) = try toIo(dt, gpa, v);
            }
            return self;
        }

        /// Rows `ranges[0]`, then `ranges[1]`, ... of `src`, concatenated.
        fn gather(gpa: std.mem.Allocator, src: Self, ranges: []const [2]usize) !Self {
            var self: Self = undefined;
            var tokens: usize = 0;
            for (ranges) |r| tokens += r[1] - r[0];
            inline for (fields, 0..) |f, i| {
                errdefer inline for (fields, 0..) |g, j| {
                    if (j < i) gpa.free(@field(self, g[0]));
                };
                const w = f[1];
                const dst = try gpa.alloc(E, tokens * w);
                var at: usize = 0;
                for (ranges) |r| {
                    @memcpy(dst[at..][0 .. (r[1] - r[0]) * w], @field(src, f[0])[r[0] * w .. r[1] * w]);
                    at += (r[1] - r[0]) * w;
                }
                @field(self, f[0]) = dst;
            }
            return self;
        }

        fn deinit(self: Self, gpa: std.mem.Allocator) void {
            inline for (fields) |f| gpa.free(@field(self, f[0]));
        }

        /// The io of token rows `t0..t1`, writing `y` (`(t1 - t0)` rows).
        fn io(self: Self, t0: usize, t1: usize, y: []E) m2c.SsmIo {
            return .{
                .x = input(dt, self.x[t0 * kc.x_row .. t1 * kc.x_row]),
                .dt = input(dt, self.dt[t0 * kc.dt_row .. t1 * kc.dt_row]),
                .B = input(dt, self.B[t0 * kc.bc_row .. t1 * kc.bc_row]),
                .C = input(dt, self.C[t0 * kc.bc_row .. t1 * kc.bc_row]),
                .z = input(dt, self.z[t0 * kc.x_row .. t1 * kc.x_row]),
                .y = output(dt, y),
            };
        }
    };
}

/// A varlen batch: slot 2 (3 tokens), a padding sequence (4), slot 0
/// (empty), slot 3 (5); slot 1 is not in it.
const batch_slots = [_]i32{ 2, -1, 0, 3 };
const batch_cu = [_]u64{ 0, 3, 7, 7, 12 };
const batch_tokens = 12;

fn checkConvPrefillMatchesSteps(comptime io: m2c.Dtype, width: u32, storage: m2c.Dtype, seed: u64) !void {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const rand = prng.random();
    const cfg = kernelConfig(width, storage, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    try seedStates(rand, &.{ &a, &b }); // left context for every sequence

    const dim = kc.conv_dim;
    var weight: [dim * kc.kernel]f32 = undefined;
    randomize(rand, &weight, 0.5);
    var bias: [dim]f32 = undefined;
    randomize(rand, &bias, 0.5);
    const args: m2c.ConvArgs = .{ .weight = &weight, .bias = &bias };
    var xf: [batch_tokens * dim]f32 = undefined;
    randomize(rand, &xf, 2);
    const x = try toIo(io, gpa, &xf);
    defer gpa.free(x);
    const E = m2c.Elem(io);
    var out_prefill: [batch_tokens * dim]E = undefined;
    @memset(std.mem.sliceAsBytes(&out_prefill), 0x55);
    var out_steps: [batch_tokens * dim]E = undefined;
    @memset(std.mem.sliceAsBytes(&out_steps), 0xAA);

    try a.convPrefill(1, &batch_slots, &batch_cu, input(io, x), output(io, &out_prefill), args);
    for (batch_slots, 0..) |s, i| {
        for (batch_cu[i]..batch_cu[i + 1]) |t| {
            try b.convStep(1, &.{s}, input(io, x[t * dim ..][0..dim]), output(io, out_steps[t * dim ..][0..dim]), args);
        }
    }
    try expectSameBits(&out_steps, &out_prefill);
    for (out_prefill[3 * dim .. 7 * dim]) |v| try expectEqual(@as(E, 0), v); // the padding sequence
    var nonzero: usize = 0;
    for (out_prefill[0 .. 3 * dim]) |v| nonzero += @intFromBool(v != 0);
    try expect(nonzero > dim); // the test is not vacuous

    var win_a: [4 * dim * kc.kernel]f32 = undefined;
    var win_b: [4 * dim * kc.kernel]f32 = undefined;
    const wl = 4 * dim * width;
    try a.readConv(1, null, .{ .f32 = win_a[0..wl] });
    try b.readConv(1, null, .{ .f32 = win_b[0..wl] });
    try expectSameBits(win_b[0..wl], win_a[0..wl]);
    const img_a = try cacheImage(gpa, &a);
    defer gpa.free(img_a);
    const img_b = try cacheImage(gpa, &b);
    defer gpa.free(img_b);
    try expectSameBits(img_b, img_a); // every layer, slot and position
}

test "convPrefill of a varlen batch with a padding sequence equals convStep token by token, bit for bit" {
    var seed: u64 = 1;
    for ([_]u32{ kc.kernel, kc.kernel - 1 }) |width| {
        for ([_]m2c.Dtype{ .f32, .bf16, .f16 }) |storage| {
            try checkConvPrefillMatchesSteps(.f32, width, storage, seed);
            try checkConvPrefillMatchesSteps(.bf16, width, storage, seed + 1);
            try checkConvPrefillMatchesSteps(.f16, width, storage, seed + 2);
            seed += 3;
        }
    }
}

fn checkSsmPrefillMatchesSteps(comptime io: m2c.Dtype, storage: m2c.Dtype, seed: u64) !void {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const rand = prng.random();
    const cfg = kernelConfig(kc.kernel, .f32, storage);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    try seedStates(rand, &.{ &a, &b });

    var A: [kc.heads]f32 = undefined;
    for (&A) |*v| v.* = -(rand.float(f32) * 2 + 0.1);
    var D: [kc.heads]f32 = undefined;
    randomize(rand, &D, 1);
    var dt_bias: [kc.heads]f32 = undefined;
    randomize(rand, &dt_bias, 0.5);
    const args: m2c.SsmArgs = .{ .A = &A, .D = &D, .dt_bias = &dt_bias };
    const tok = try SsmTokens(io).random(gpa, rand, batch_tokens);
    defer tok.deinit(gpa);
    const E = m2c.Elem(io);
    const w = kc.x_row;
    var y_prefill: [batch_tokens * w]E = undefined;
    @memset(std.mem.sliceAsBytes(&y_prefill), 0x55);
    var y_steps: [batch_tokens * w]E = undefined;
    @memset(std.mem.sliceAsBytes(&y_steps), 0xAA);

    try a.ssmPrefill(0, &batch_slots, &batch_cu, tok.io(0, batch_tokens, &y_prefill), args);
    for (batch_slots, 0..) |s, i| {
        for (batch_cu[i]..batch_cu[i + 1]) |t| {
            try b.ssmStep(0, &.{s}, tok.io(t, t + 1, y_steps[t * w ..][0..w]), args);
        }
    }
    try expectSameBits(&y_steps, &y_prefill);
    for (y_prefill[3 * w .. 7 * w]) |v| try expectEqual(@as(E, 0), v); // the padding sequence
    var nonzero: usize = 0;
    for (y_prefill[0 .. 3 * w]) |v| nonzero += @intFromBool(v != 0);
    try expect(nonzero > w);

    var st_a: [4 * kc.state_len]f32 = undefined;
    var st_b: [4 * kc.state_len]f32 = undefined;
    try a.readSsm(0, null, .{ .f32 = &st_a });
    try b.readSsm(0, null, .{ .f32 = &st_b });
    try expectSameBits(&st_b, &st_a);
    const img_a = try cacheImage(gpa, &a);
    defer gpa.free(img_a);
    const img_b = try cacheImage(gpa, &b);
    defer gpa.free(img_b);
    try expectSameBits(img_b, img_a);
}

test "ssmPrefill of a varlen batch with a padding sequence equals ssmStep token by token, bit for bit" {
    var seed: u64 = 100;
    for ([_]m2c.Dtype{ .f32, .bf16, .f16 }) |storage| {
        try checkSsmPrefillMatchesSteps(.f32, storage, seed);
        try checkSsmPrefillMatchesSteps(.bf16, storage, seed + 1);
        try checkSsmPrefillMatchesSteps(.f16, storage, seed + 2);
        seed += 3;
    }
}

test "a prompt split into chunks gives the outputs and states of one prefill call" {
    const gpa = testing.allocator;
    const dim = kc.conv_dim;
    const w = kc.x_row;
    // Two prompts, on slots 1 and 3: tokens 0..10 and 10..17 of the buffers.
    const slots = [_]i32{ 1, 3 };
    const whole_cu = [_]u64{ 0, 10, 17 };
    const T = 17;
    // The chunks: tokens of each prompt per call (a prompt may sit one out).
    const chunks = [_][2]usize{ .{ 3, 0 }, .{ 1, 5 }, .{ 6, 2 } };
    for ([_][2]m2c.Dtype{ .{ .f32, .f32 }, .{ .bf16, .f16 } }) |storage| {
        var prng = std.Random.DefaultPrng.init(7);
        const rand = prng.random();
        const cfg = kernelConfig(kc.kernel - 1, storage[0], storage[1]);
        var one = try m2c.Cache.init(cfg, null);
        defer one.deinit();
        var chunked = try m2c.Cache.init(cfg, null);
        defer chunked.deinit();
        try seedStates(rand, &.{ &one, &chunked });

        var weight: [dim * kc.kernel]f32 = undefined;
        randomize(rand, &weight, 0.5);
        const conv_args: m2c.ConvArgs = .{ .weight = &weight };
        var A: [kc.heads]f32 = undefined;
        for (&A) |*v| v.* = -(rand.float(f32) * 2 + 0.1);
        const ssm_args: m2c.SsmArgs = .{ .A = &A };

        var x: [T * dim]f32 = undefined;
        randomize(rand, &x, 2);
        const tok = try SsmTokens(.f32).random(gpa, rand, T);
        defer tok.deinit(gpa);

        var out_one: [T * dim]f32 = undefined;
        var y_one: [T * w]f32 = undefined;
        try one.convPrefill(0, &slots, &whole_cu, .{ .f32 = &x }, .{ .f32 = &out_one }, conv_args);
        try one.ssmPrefill(0, &slots, &whole_cu, tok.io(0, T, &y_one), ssm_args);

        var out_chunked: [T * dim]f32 = undefined;
        @memset(&out_chunked, std.math.nan(f32));
        var y_chunked: [T * w]f32 = undefined;
        @memset(&y_chunked, std.math.nan(f32));
        var done = [2]usize{ 0, 0 }; // tokens of each prompt consumed
        for (chunks) |chunk| {
            const ranges = [_][2]usize{
                .{ done[0], done[0] + chunk[0] },
                .{ 10 + done[1], 10 + done[1] + chunk[1] },
            };
            const n = chunk[0] + chunk[1];
            const cu = [_]u64{ 0, chunk[0], n };
            var xc: [T * dim]f32 = undefined;
            var oc: [T * dim]f32 = undefined;
            var at: usize = 0;
            for (ranges) |r| {
                @memcpy(xc[at * dim ..][0 .. (r[1] - r[0]) * dim], x[r[0] * dim .. r[1] * dim]);
                at += r[1] - r[0];
            }
            try chunked.convPrefill(0, &slots, &cu, .{ .f32 = xc[0 .. n * dim] }, .{ .f32 = oc[0 .. n * dim] }, conv_args);
            const tc = try SsmTokens(.f32).gather(gpa, tok, &ranges);
            defer tc.deinit(gpa);
            var yc: [T * w]f32 = undefined;
            try chunked.ssmPrefill(0, &slots, &cu, tc.io(0, n, yc[0 .. n * w]), ssm_args);
            // Scatter the chunk's outputs back to the prompts' rows.
            at = 0;
            for (ranges) |r| {
                @memcpy(out_chunked[r[0] * dim .. r[1] * dim], oc[at * dim ..][0 .. (r[1] - r[0]) * dim]);
                @memcpy(y_chunked[r[0] * w .. r[1] * w], yc[at * w ..][0 .. (r[1] - r[0]) * w]);
                at += r[1] - r[0];
            }
            done[0] += chunk[0];
            done[1] += chunk[1];
        }
        try expectEqual([2]usize{ 10, 7 }, done);
        try expectSameBits(&out_one, &out_chunked);
        try expectSameBits(&y_one, &y_chunked);
        const img_one = try cacheImage(gpa, &one);
        defer gpa.free(img_one);
        const img_chunked = try cacheImage(gpa, &chunked);
        defer gpa.free(img_chunked);
        try expectSameBits(img_one, img_chunked);
    }
}

test "prefill with null slots runs sequence i on slot i" {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(11);
    const rand = prng.random();
    const cfg = kernelConfig(kc.kernel, .f32, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    const cu = [_]u64{ 0, 2, 2, 5 }; // slots 0, 1 (empty), 2
    var weight: [kc.conv_dim * kc.kernel]f32 = undefined;
    randomize(rand, &weight, 0.5);
    var A = [_]f32{-0.5} ** kc.heads;
    var x: [5 * kc.conv_dim]f32 = undefined;
    randomize(rand, &x, 1);
    var out_a: [5 * kc.conv_dim]f32 = undefined;
    var out_b: [5 * kc.conv_dim]f32 = undefined;
    const tok = try SsmTokens(.f32).random(gpa, rand, 5);
    defer tok.deinit(gpa);
    var y_a: [5 * kc.x_row]f32 = undefined;
    var y_b: [5 * kc.x_row]f32 = undefined;
    try a.convPrefill(1, null, &cu, .{ .f32 = &x }, .{ .f32 = &out_a }, .{ .weight = &weight });
    try b.convPrefill(1, &.{ 0, 1, 2 }, &cu, .{ .f32 = &x }, .{ .f32 = &out_b }, .{ .weight = &weight });
    try a.ssmPrefill(1, null, &cu, tok.io(0, 5, &y_a), .{ .A = &A });
    try b.ssmPrefill(1, &.{ 0, 1, 2 }, &cu, tok.io(0, 5, &y_b), .{ .A = &A });
    try expectSameBits(&out_b, &out_a);
    try expectSameBits(&y_b, &y_a);
    const img_a = try cacheImage(gpa, &a);
    defer gpa.free(img_a);
    const img_b = try cacheImage(gpa, &b);
    defer gpa.free(img_b);
    try expectSameBits(img_b, img_a);
    // A cu_seqlens of one entry is an empty batch.
    try a.convPrefill(1, null, &.{0}, .{ .f32 = &.{} }, .{ .f32 = &.{} }, .{ .weight = &weight });
}

test "prefill refuses bad cu_seqlens, lengths, dtypes and slots, and changes nothing" {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(3);
    const rand = prng.random();
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(kernelConfig(kc.kernel, .bf16, .f32), &diag);
    defer cache.deinit();
    try seedStates(rand, &.{&cache});
    try cache.advance(null, 5);
    const before = try cacheImage(gpa, &cache);
    defer gpa.free(before);

    const dim = kc.conv_dim;
    const w = kc.x_row;
    const slots = [_]i32{ 0, 2 };
    const cu = [_]u64{ 0, 2, 3 }; // T = 3
    var weight: [dim * kc.kernel]f32 = undefined;
    randomize(rand, &weight, 0.5);
    const conv_args: m2c.ConvArgs = .{ .weight = &weight };
    var x: [4 * dim]f32 = undefined;
    randomize(rand, &x, 1);
    var out = [_]f32{5} ** (4 * dim);
    var out16 = [_]f16{5} ** (3 * dim);
    const xs: m2c.Input = .{ .f32 = x[0 .. 3 * dim] };
    const os: m2c.Output = .{ .f32 = out[0 .. 3 * dim] };

    // cu_seqlens: one entry more than there are sequences, from 0, never decreasing.
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &.{ 0, 3 }, xs, os, conv_args));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expect(contains(diag.message(), "m2c_conv_prefill"));
    try expect(contains(diag.message(), "cu_seqlens"));
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &.{ 0, 2, 3, 3 }, xs, os, conv_args));
    try expectError(error.InvalidArg, cache.convPrefill(0, &slots, &.{ 1, 2, 3 }, xs, os, conv_args));
    try expectEqual(@as(?m2c.Status, .invalid_arg), diag.status);
    try expect(contains(diag.message(), "cu_seqlens[0]"));
    try expectError(error.InvalidArg, cache.convPrefill(0, &slots, &.{ 0, 3, 2 }, xs, os, conv_args));
    try expect(contains(diag.message(), "decreases"));
    try expectError(error.InvalidArg, cache.convPrefill(0, &slots, &.{ 0, std.math.maxInt(u64), 3 }, xs, os, conv_args));
    // Buffers of another length than T rows.
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &cu, .{ .f32 = x[0 .. 3 * dim - 1] }, os, conv_args));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &cu, .{ .f32 = &x }, os, conv_args));
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &cu, xs, .{ .f32 = &out }, conv_args));
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &cu, xs, .{ .f32 = out[0..dim] }, conv_args));
    try expectError(error.ShapeMismatch, cache.convPrefill(0, &slots, &cu, xs, os, .{ .weight = weight[1..] }));
    // Dtypes that differ are refused by the binding.
    try expectError(error.InvalidArg, cache.convPrefill(0, &slots, &cu, xs, .{ .f16 = &out16 }, conv_args));
    try expectEqual(@as(?m2c.Status, null), diag.status);
    try expect(contains(diag.message(), "convPrefill: x is f32 but out is f16"));
    // Bad slots and layers.
    try expectError(error.OutOfRange, cache.convPrefill(0, &.{ 0, 4 }, &cu, xs, os, conv_args));
    try expectEqual(@as(?m2c.Status, .out_of_range), diag.status);
    try expectError(error.OutOfRange, cache.convPrefill(0, &.{ std.math.maxInt(i32), 1 }, &cu, xs, os, conv_args));
    try expectError(error.InvalidArg, cache.convPrefill(0, &.{ 2, 2 }, &cu, xs, os, conv_args));
    try expect(contains(diag.message(), "twice"));
    try expectError(error.OutOfRange, cache.convPrefill(2, &slots, &cu, xs, os, conv_args));
    // Null slots: sequence i on slot i, and there are only 4 slots.
    try expectError(error.OutOfRange, cache.convPrefill(0, null, &.{ 0, 0, 0, 1, 2, 3 }, xs, os, conv_args));
    // x inside the cache's storage.
    const cells = (try cache.convView(1)).slice(.bf16).?;
    try expectError(error.InvalidArg, cache.convPrefill(0, &slots, &cu, .{ .bf16 = cells[0 .. 3 * dim] }, .{ .bf16 = @ptrCast(out16[0 .. 3 * dim]) }, conv_args));
    for (out) |v| try expectEqual(@as(f32, 5), v);
    for (out16) |v| try expectEqual(@as(f16, 5), v);

    var A = [_]f32{-1} ** kc.heads;
    const ssm_args: m2c.SsmArgs = .{ .A = &A };
    const tok = try SsmTokens(.f32).random(gpa, rand, 4);
    defer tok.deinit(gpa);
    var y = [_]f32{5} ** (4 * w);
    const io = tok.io(0, 3, y[0 .. 3 * w]);
    try expectError(error.ShapeMismatch, cache.ssmPrefill(0, &slots, &.{ 0, 3 }, io, ssm_args));
    try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    try expect(contains(diag.message(), "m2c_ssm_prefill"));
    try expectError(error.ShapeMismatch, cache.ssmPrefill(0, &slots, &.{ 0, 2, 3, 3 }, io, ssm_args));
    try expectError(error.InvalidArg, cache.ssmPrefill(0, &slots, &.{ 3, 3, 3 }, io, ssm_args));
    try expectError(error.InvalidArg, cache.ssmPrefill(0, &slots, &.{ 0, 3, 2 }, io, ssm_args));
    // Each buffer of io with one token row too many.
    const long = tok.io(0, 4, y[0 .. 4 * w]);
    inline for (.{ "x", "dt", "B", "C", "z", "y" }) |field| {
        var bad = io;
        @field(bad, field) = @field(long, field);
        try expectError(error.ShapeMismatch, cache.ssmPrefill(0, &slots, &cu, bad, ssm_args));
        try expectEqual(@as(?m2c.Status, .shape_mismatch), diag.status);
    }
    try expectError(error.ShapeMismatch, cache.ssmPrefill(0, &slots, &.{ 0, 2, 4 }, io, ssm_args)); // T = 4
    var bad = io;
    bad.z = .{ .f16 = out16[0 .. 3 * w] };
    try expectError(error.InvalidArg, cache.ssmPrefill(0, &slots, &cu, bad, ssm_args));
    try expectEqual(@as(?m2c.Status, null), diag.status);
    try expect(contains(diag.message(), "ssmPrefill: the buffers of io differ in dtype"));
    try expectError(error.OutOfRange, cache.ssmPrefill(0, &.{ -1, 4 }, &cu, io, ssm_args));
    try expectError(error.InvalidArg, cache.ssmPrefill(0, &.{ 0, 0 }, &cu, io, ssm_args));
    try expectError(error.OutOfRange, cache.ssmPrefill(2, &slots, &cu, io, ssm_args));
    try expectError(error.ShapeMismatch, cache.ssmPrefill(0, &slots, &cu, io, .{ .A = A[1..] }));
    for (y) |v| try expectEqual(@as(f32, 5), v);

    const after = try cacheImage(gpa, &cache);
    defer gpa.free(after);
    try expectSameBits(before, after);
    // and valid calls still work
    try cache.convPrefill(0, &slots, &cu, xs, os, conv_args);
    try cache.ssmPrefill(0, &slots, &cu, io, ssm_args);
}

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

// ---------------------------------------------------------------------------
// Device-buffer calls and streams (run here on host caches, with host
// addresses; on a GPU the same calls take device addresses)
// ---------------------------------------------------------------------------

fn devBuf(comptime T: type, s: []const T) m2c.DeviceBuf {
    return .{ .addr = @intFromPtr(s.ptr), .len = s.len, .dtype = switch (T) {
        f32 => .f32,
        f16 => .f16,
        else => .bf16,
    } };
}

test "the device-buffer calls give the slice calls' results bit for bit" {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(77);
    const rand = prng.random();
    const cfg = kernelConfig(kc.kernel, .bf16, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    try seedStates(rand, &.{ &a, &b });

    const dim = kc.conv_dim;
    var weight: [dim * kc.kernel]f32 = undefined;
    randomize(rand, &weight, 0.5);
    var bias: [dim]f32 = undefined;
    randomize(rand, &bias, 0.5);
    var A: [kc.heads]f32 = undefined;
    for (&A) |*v| v.* = -(rand.float(f32) * 2 + 0.1);
    var D: [kc.heads]f32 = undefined;
    randomize(rand, &D, 1);
    const cargs: m2c.ConvArgs = .{ .weight = &weight, .bias = &bias };
    const dcargs: m2c.DeviceConvArgs = .{ .weight = devBuf(f32, &weight), .bias = devBuf(f32, &bias) };
    const sargs: m2c.SsmArgs = .{ .A = &A, .D = &D };
    const dsargs: m2c.DeviceSsmArgs = .{ .A = devBuf(f32, &A), .D = devBuf(f32, &D) };

    var xf: [batch_tokens * dim]f32 = undefined;
    randomize(rand, &xf, 2);
    var out_a: [batch_tokens * dim]f32 = undefined;
    @memset(&out_a, 0);
    var out_b: [batch_tokens * dim]f32 = undefined;
    @memset(&out_b, 1);
    const tok = try SsmTokens(.f32).random(gpa, rand, batch_tokens);
    defer tok.deinit(gpa);
    const w = kc.x_row;
    var y_a: [batch_tokens * w]f32 = undefined;
    @memset(&y_a, 0);
    var y_b: [batch_tokens * w]f32 = undefined;
    @memset(&y_b, 1);

    // Steps on the first rows, then a prefill of the varlen batch.
    const step_slots = [_]i32{ 2, -1, 0 };
    try a.convStep(1, &step_slots, .{ .f32 = xf[0 .. 3 * dim] }, .{ .f32 = out_a[0 .. 3 * dim] }, cargs);
    try b.convStepDevice(1, &step_slots, devBuf(f32, xf[0 .. 3 * dim]), devBuf(f32, out_b[0 .. 3 * dim]), dcargs);
    const sio_a = tok.io(0, 3, y_a[0 .. 3 * w]);
    try a.ssmStep(0, &step_slots, sio_a, sargs);
    const sio_b = tok.io(0, 3, y_b[0 .. 3 * w]);
    const dio: m2c.DeviceSsmIo = .{ .x = devBuf(f32, sio_b.x.f32), .dt = devBuf(f32, sio_b.dt.f32), .B = devBuf(f32, sio_b.B.f32), .C = devBuf(f32, sio_b.C.f32), .z = devBuf(f32, sio_b.z.?.f32), .y = devBuf(f32, sio_b.y.f32) };
    try b.ssmStepDevice(0, &step_slots, dio, dsargs);
    try expectSameBits(out_a[0 .. 3 * dim], out_b[0 .. 3 * dim]);
    try expectSameBits(y_a[0 .. 3 * w], y_b[0 .. 3 * w]);

    try a.convPrefill(1, &batch_slots, &batch_cu, .{ .f32 = &xf }, .{ .f32 = &out_a }, cargs);
    try b.convPrefillDevice(1, &batch_slots, &batch_cu, devBuf(f32, &xf), devBuf(f32, &out_b), dcargs);
    try a.ssmPrefill(0, &batch_slots, &batch_cu, tok.io(0, batch_tokens, &y_a), sargs);
    const pio = tok.io(0, batch_tokens, &y_b);
    const dpio: m2c.DeviceSsmIo = .{ .x = devBuf(f32, pio.x.f32), .dt = devBuf(f32, pio.dt.f32), .B = devBuf(f32, pio.B.f32), .C = devBuf(f32, pio.C.f32), .z = devBuf(f32, pio.z.?.f32), .y = devBuf(f32, pio.y.f32) };
    try b.ssmPrefillDevice(0, &batch_slots, &batch_cu, dpio, dsargs);
    try expectSameBits(&out_a, &out_b);
    try expectSameBits(&y_a, &y_b);
    const img_a = try cacheImage(gpa, &a);
    defer gpa.free(img_a);
    const img_b = try cacheImage(gpa, &b);
    defer gpa.free(img_b);
    try expectSameBits(img_b, img_a);
}

test "device-buffer calls refuse bad arguments and change nothing" {
    const gpa = testing.allocator;
    const cfg = kernelConfig(kc.kernel, .f32, .f32);
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(cfg, &diag);
    defer cache.deinit();
    var prng = std.Random.DefaultPrng.init(5);
    try seedStates(prng.random(), &.{&cache});
    const before = try cacheImage(gpa, &cache);
    defer gpa.free(before);

    const dim = kc.conv_dim;
    var weight = [_]f32{0.5} ** (dim * kc.kernel);
    var x = [_]f32{1} ** dim;
    var out = [_]f32{0} ** dim;
    const args: m2c.DeviceConvArgs = .{ .weight = devBuf(f32, &weight) };
    try expectError(error.ShapeMismatch, cache.convStepDevice(0, &.{0}, devBuf(f32, x[0 .. dim - 1]), devBuf(f32, &out), args));
    try expectError(error.NullArg, cache.convStepDevice(0, &.{0}, devBuf(f32, &x), devBuf(f32, &out), .{ .weight = .{ .addr = 0, .len = 0 } }));
    var bad_w = args;
    bad_w.weight.dtype = .bf16;
    try expectError(error.InvalidArg, cache.convStepDevice(0, &.{0}, devBuf(f32, &x), devBuf(f32, &out), bad_w));
    try expect(contains(diag.message(), "weight is bf16"));
    var bad_a = args;
    bad_a.weight.addr += 2;
    try expectError(error.InvalidArg, cache.convStepDevice(0, &.{0}, devBuf(f32, &x), devBuf(f32, &out), bad_a));
    try expect(contains(diag.message(), "not aligned"));
    var out16 = [_]u16{0} ** dim;
    try expectError(error.InvalidArg, cache.convStepDevice(0, &.{0}, devBuf(f32, &x), .{ .addr = @intFromPtr(&out16), .len = dim, .dtype = .bf16 }, args));
    try expectError(error.OutOfRange, cache.convStepDevice(9, &.{0}, devBuf(f32, &x), devBuf(f32, &out), args));
    try expectError(error.InvalidArg, cache.convStepDevice(0, &.{ 1, 1 }, devBuf(f32, &x), devBuf(f32, &out), args));
    try expectError(error.InvalidArg, cache.convPrefillDevice(0, &.{0}, &.{ 1, 1 }, devBuf(f32, &x), devBuf(f32, &out), args));
    const after = try cacheImage(gpa, &cache);
    defer gpa.free(after);
    try expectSameBits(before, after);
    try cache.convStepDevice(0, &.{0}, devBuf(f32, &x), devBuf(f32, &out), args);
}

test "setStream: a host cache takes null and refuses a stream" {
    var diag: m2c.Diagnostics = .{};
    var cache = try m2c.Cache.init(smallConfig(4, .f32, .f32), &diag);
    defer cache.deinit();
    try cache.setStream(null);
    var not_a_stream: u8 = 0;
    try expectError(error.Unsupported, cache.setStream(&not_a_stream));
    try expect(contains(diag.message(), "m2c_set_stream"));
    cache.deinit();
    try expectError(error.NullArg, cache.setStream(null));
}
