//! Config and the cache lifecycle: defaults, configBytes, init, getConfig,
//! deinit.
const std = @import("std");
const m2c = @import("m2c");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expect = testing.expect;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;

const smallConfig = helpers.smallConfig;
const contains = helpers.contains;

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
