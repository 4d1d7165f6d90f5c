//! Cache files: saveFile and loadFile, and the errors they map.
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
