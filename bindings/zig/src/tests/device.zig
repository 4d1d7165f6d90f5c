//! Device-buffer calls and streams (run here on host caches, with host
//! addresses; on a GPU the same calls take device addresses).
const std = @import("std");
const m2c = @import("m2c");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expect = testing.expect;
const expectError = testing.expectError;

const smallConfig = helpers.smallConfig;
const contains = helpers.contains;
const kernelConfig = helpers.kernelConfig;
const kc = helpers.kc;
const randomize = helpers.randomize;
const expectSameBits = helpers.expectSameBits;
const cacheImage = helpers.cacheImage;
const seedStates = helpers.seedStates;
const SsmTokens = helpers.SsmTokens;
const batch_slots = helpers.batch_slots;
const batch_cu = helpers.batch_cu;
const batch_tokens = helpers.batch_tokens;

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

    // The prefill again with every flag flipped and no optional array: no
    // activation or bias; no softplus, a clamp, no D, dt_bias or gate.
    @memset(&out_b, 1);
    @memset(&y_b, 1);
    const cflip: m2c.ConvArgs = .{ .weight = &weight, .activation = .none };
    const dcflip: m2c.DeviceConvArgs = .{ .weight = devBuf(f32, &weight), .activation = .none };
    const sflip: m2c.SsmArgs = .{ .A = &A, .dt_softplus = false, .dt_clamp = true, .dt_min = 0.1, .dt_max = 0.6 };
    const dsflip: m2c.DeviceSsmArgs = .{ .A = devBuf(f32, &A), .dt_softplus = false, .dt_clamp = true, .dt_min = 0.1, .dt_max = 0.6 };
    try a.convPrefill(1, &batch_slots, &batch_cu, .{ .f32 = &xf }, .{ .f32 = &out_a }, cflip);
    try b.convPrefillDevice(1, &batch_slots, &batch_cu, devBuf(f32, &xf), devBuf(f32, &out_b), dcflip);
    var fio = tok.io(0, batch_tokens, &y_a);
    fio.z = null;
    try a.ssmPrefill(0, &batch_slots, &batch_cu, fio, sflip);
    var dfio = dpio;
    dfio.z = null;
    try b.ssmPrefillDevice(0, &batch_slots, &batch_cu, dfio, dsflip);
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
