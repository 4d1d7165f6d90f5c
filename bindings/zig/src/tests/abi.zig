//! ABI gating (version, ABI version, checkAbi), the wrappers table that
//! proves every function in m2c.h is wrapped, the link mode the build asked
//! for, and the README example.
const std = @import("std");
const m2c = @import("m2c");
const build_options = @import("build_options");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expect = testing.expect;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;

const contains = helpers.contains;

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
    .{ "m2c_set_conv_layout", m2c.Cache, "setConvLayout" },
    .{ "m2c_get_conv_layout", m2c.Cache, "convLayout" },
    .{ "m2c_conv_heads", m2c.Cache, "convHeads" },
    .{ "m2c_set_snapshot_format", m2c.Cache, "setSnapshotFormat" },
    .{ "m2c_get_snapshot_format", m2c.Cache, "snapshotFormat" },
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
    .{ "m2c_spec_reserve", m2c.Cache, "specReserve" },
    .{ "m2c_spec_begin", m2c.Cache, "specBegin" },
    .{ "m2c_conv_verify", m2c.Cache, "convVerify" },
    .{ "m2c_ssm_verify", m2c.Cache, "ssmVerify" },
    .{ "m2c_spec_commit", m2c.Cache, "specCommit" },
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
    .{ "m2c_set_num_threads", m2c.Cache, "setNumThreads" },
    .{ "m2c_describe", m2c.Cache, "describe" },
    .{ "m2c_config_preset", m2c.Config, "preset" },
    .{ "m2c_store_config_init", m2c.Store, "init" },
    .{ "m2c_lookup_init", m2c.Store, "lookup" },
    .{ "m2c_store_stats_init", m2c.Store, "stats" },
    .{ "m2c_store_create", m2c.Store, "init" },
    .{ "m2c_store_destroy", m2c.Store, "deinit" },
    .{ "m2c_store_insert", m2c.Store, "insert" },
    .{ "m2c_store_lookup", m2c.Store, "lookup" },
    .{ "m2c_store_restore", m2c.Store, "restore" },
    .{ "m2c_store_pin", m2c.Store, "pin" },
    .{ "m2c_store_unpin", m2c.Store, "unpin" },
    .{ "m2c_store_evict", m2c.Store, "evict" },
    .{ "m2c_store_get_stats", m2c.Store, "stats" },
    .{ "m2c_key_chain", m2c, "chainKey" },
    .{ "m2c_miss_str", m2c.Miss, "str" },
    .{ "m2c_capture_begin", m2c.Cache, "captureBegin" },
    .{ "m2c_capture_end", m2c.Cache, "captureEnd" },
    .{ "m2c_arenas", m2c.Cache, "arenas" },
    .{ "m2c_slot_regions", m2c.Cache, "slotRegions" },
    .{ "m2c_slot_digest", m2c.Cache, "slotDigest" },
    .{ "m2c_shard_init", m2c, "shardConfig" },
    .{ "m2c_shard_config", m2c, "shardConfig" },
    .{ "m2c_reshard_plan", m2c, "reshardPlan" },
    .{ "m2c_snapshot_reshard", m2c, "reshardSnapshots" },
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
// The build: link mode, README
// ---------------------------------------------------------------------------

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
