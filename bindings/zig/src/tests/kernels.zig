//! The kernel wrappers: hand-computed decode steps, each wrapper against
//! the C call it makes, prefill slot and cu_seqlens marshalling, and the
//! errors the kernels map. The math itself is tested in Rust and ctests.
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
const randomize = helpers.randomize;
const toIo = helpers.toIo;
const input = helpers.input;
const output = helpers.output;
const expectSameBits = helpers.expectSameBits;
const cacheImage = helpers.cacheImage;
const seedStates = helpers.seedStates;
const SsmTokens = helpers.SsmTokens;

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

test "ring conv windows step and read like oldest-first ones; heads and view locate them" {
    var plain = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer plain.deinit();
    var ring = try m2c.Cache.init(smallConfig(4, .f32, .f32), null);
    defer ring.deinit();
    try expectEqual(m2c.ConvLayout.oldest_first, try ring.convLayout());
    try ring.setConvLayout(.ring);
    try expectEqual(m2c.ConvLayout.ring, try ring.convLayout());
    var weight: [16 * 4]f32 = undefined;
    fill(&weight, 0.5);
    weight[5] = -2;
    const args: m2c.ConvArgs = .{ .weight = &weight };
    for (0..5) |t| {
        var x: [16]f32 = undefined;
        fill(&x, @floatFromInt(3 * t + 1));
        var a: [16]f32 = undefined;
        var b: [16]f32 = undefined;
        try plain.convStep(1, &.{2}, .{ .f32 = &x }, .{ .f32 = &a }, args);
        try ring.convStep(1, &.{2}, .{ .f32 = &x }, .{ .f32 = &b }, args);
        try expectSameBits(&a, &b);
    }
    var wa: [16 * 4]f32 = undefined;
    var wb: [16 * 4]f32 = undefined;
    try plain.readConv(1, &.{2}, .{ .f32 = &wa });
    try ring.readConv(1, &.{2}, .{ .f32 = &wb });
    try expectSameBits(&wa, &wb);
    var heads: [8]u32 = undefined;
    const h = try ring.convHeads(1, &heads);
    try expectEqual(@as(usize, 4), h.len);
    try expectEqual(@as(u32, 5 % 4), h[2]);
    const v = try ring.convView(1);
    // Column-major windows: not row-major, so `slice` refuses them.
    try expect(v.slice(.f32) == null);
    const data: [*]const f32 = @ptrCast(@alignCast(v.data));
    for (0..16) |ch| for (0..4) |k| {
        const j = (h[2] + k) % 4;
        try expectEqual(wa[ch * 4 + k], data[2 * v.strides[0] + ch * v.strides[1] + j * v.strides[2]]);
    };
    try expectError(error.InvalidArg, ring.setConvLayout(@enumFromInt(9)));
    try expectError(error.OutOfRange, ring.convHeads(2, &heads));
    try expectError(error.ShapeMismatch, ring.convHeads(1, heads[0..3]));
    try ring.setConvLayout(.oldest_first);
    try ring.readConv(1, &.{2}, .{ .f32 = &wb });
    try expectSameBits(&wa, &wb);
    try expectEqual(@as(u32, 0), (try ring.convHeads(1, &heads))[2]);
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
// Each wrapper against the C call it makes
// ---------------------------------------------------------------------------
//
// The marshalling round trips: the same call made through the wrapper on
// one cache and through `m2c.c` on a twin, with the same inputs, must give
// the same bits (outputs and every slot of every layer). A wrong pointer,
// length, io dtype, slot list, cu_seqlens or flag in a wrapper shows up
// as a difference. The kernels' math (an f64 reference, prefill ==
// token-by-token steps, chunked prefill == one call) is proven in Rust
// (core/tests) and through the C ABI under ctest
// (ctests/{conv,ssm}_step_reference.c, *_prefill_matches_steps.c,
// *_prefill_chunked.c), not here.

/// A kernel call's shape: a step (`cu == null`, `T` rows) or a prefill
/// (`T = cu[n]` tokens), on listed slots (with a padding row or sequence
/// and, for prefill, an empty sequence) or on null slots.
const CallShape = struct { slots: ?[]const i32, cu: ?[]const u64, T: usize };

const call_shapes = [_]CallShape{
    .{ .slots = &.{ 3, -1, 0 }, .cu = null, .T = 3 },
    .{ .slots = null, .cu = null, .T = 2 }, // slots 0 and 1
    .{ .slots = &.{ 2, -1, 0, 3 }, .cu = &.{ 0, 2, 3, 3, 5 }, .T = 5 },
    .{ .slots = null, .cu = &.{ 0, 1, 1, 3 }, .T = 3 }, // sequences on slots 0, 1 (empty), 2
};
const max_tokens = 5;

/// The `slots` and `n` arguments of the C call for `shape`: null slots are
/// rows (a step) or sequences (a prefill) `0..n-1`.
fn cSlots(shape: CallShape) struct { ptr: ?[*]const i32, n: usize } {
    if (shape.slots) |s| return .{ .ptr = s.ptr, .n = s.len };
    return .{ .ptr = null, .n = if (shape.cu) |cu| cu.len - 1 else shape.T };
}

/// `m2c_conv_args` for `args`, filled in from m2c.h, not by the wrapper.
fn cConvArgs(io: m2c.Dtype, args: m2c.ConvArgs) m2c.c.m2c_conv_args {
    var raw: m2c.c.m2c_conv_args = undefined;
    m2c.c.m2c_conv_args_init(&raw);
    raw.io_dtype = @intFromEnum(io);
    raw.activation = @intFromEnum(args.activation);
    raw.weight = args.weight.ptr;
    raw.weight_len = args.weight.len;
    if (args.bias) |b| {
        raw.bias = b.ptr;
        raw.bias_len = b.len;
    }
    return raw;
}

/// `m2c_ssm_args` for `args`, filled in from m2c.h, not by the wrapper.
fn cSsmArgs(io: m2c.Dtype, args: m2c.SsmArgs) m2c.c.m2c_ssm_args {
    var raw: m2c.c.m2c_ssm_args = undefined;
    m2c.c.m2c_ssm_args_init(&raw);
    raw.io_dtype = @intFromEnum(io);
    raw.dt_softplus = @intFromBool(args.dt_softplus);
    raw.dt_clamp = @intFromBool(args.dt_clamp);
    raw.dt_min = args.dt_min;
    raw.dt_max = args.dt_max;
    raw.A = args.A.ptr;
    raw.A_len = args.A.len;
    if (args.D) |d| {
        raw.D = d.ptr;
        raw.D_len = d.len;
    }
    if (args.dt_bias) |b| {
        raw.dt_bias = b.ptr;
        raw.dt_bias_len = b.len;
    }
    return raw;
}

/// Two caches of `kernelConfig` with the same random state: `a` for the
/// wrapper, `b` for the C call.
fn twinCaches(rand: std.Random) ![2]m2c.Cache {
    const cfg = kernelConfig(kc.kernel, .f32, .f32);
    var a = try m2c.Cache.init(cfg, null);
    errdefer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    errdefer b.deinit();
    try seedStates(rand, &.{ &a, &b });
    return .{ a, b };
}

/// Fails unless the two caches hold the same bits in every slot.
fn expectSameCaches(a: *const m2c.Cache, b: *const m2c.Cache) !void {
    const gpa = testing.allocator;
    const img_a = try cacheImage(gpa, a);
    defer gpa.free(img_a);
    const img_b = try cacheImage(gpa, b);
    defer gpa.free(img_b);
    try expectSameBits(img_b, img_a);
}

fn convRoundTrip(comptime io: m2c.Dtype, shape: CallShape, mamba2_args: bool, seed: u64) !void {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const rand = prng.random();
    var caches = try twinCaches(rand);
    defer for (&caches) |*cache| cache.deinit();

    const dim = kc.conv_dim;
    var weight: [dim * kc.kernel]f32 = undefined;
    randomize(rand, &weight, 0.5);
    var bias: [dim]f32 = undefined;
    randomize(rand, &bias, 0.5);
    // The defaults (SiLU) with a bias, or no activation and no bias.
    const args: m2c.ConvArgs = if (mamba2_args) .{ .weight = &weight, .bias = &bias } else .{ .weight = &weight, .activation = .none };
    const n = shape.T * dim;
    var xf: [max_tokens * dim]f32 = undefined;
    randomize(rand, xf[0..n], 2);
    const x = try toIo(io, gpa, xf[0..n]);
    defer gpa.free(x);
    const E = m2c.Elem(io);
    var out_a: [max_tokens * dim]E = undefined;
    @memset(std.mem.sliceAsBytes(&out_a), 0x55);
    var out_b: [max_tokens * dim]E = undefined;
    @memset(std.mem.sliceAsBytes(&out_b), 0xAA);

    const raw = cConvArgs(io, args);
    const s = cSlots(shape);
    if (shape.cu) |cu| {
        try caches[0].convPrefill(1, shape.slots, cu, input(io, x), output(io, out_a[0..n]), args);
        try m2c.check(m2c.c.m2c_conv_prefill(caches[1].handle, 1, s.ptr, s.n, cu.ptr, cu.len, @ptrCast(x.ptr), x.len, @ptrCast(&out_b), n, &raw));
    } else {
        try caches[0].convStep(1, shape.slots, input(io, x), output(io, out_a[0..n]), args);
        try m2c.check(m2c.c.m2c_conv_step(caches[1].handle, 1, s.ptr, s.n, @ptrCast(x.ptr), x.len, @ptrCast(&out_b), n, &raw));
    }
    try expectSameBits(out_b[0..n], out_a[0..n]);
    try expectSameCaches(&caches[0], &caches[1]);
}

test "convStep and convPrefill pass what m2c_conv_step and m2c_conv_prefill get, bit for bit" {
    var seed: u64 = 1;
    inline for (.{ m2c.Dtype.f32, .bf16, .f16 }) |io| {
        for (call_shapes) |shape| {
            for ([_]bool{ true, false }) |mamba2_args| {
                try convRoundTrip(io, shape, mamba2_args, seed);
                seed += 1;
            }
        }
    }
}

fn ssmRoundTrip(comptime io: m2c.Dtype, shape: CallShape, mamba2_args: bool, seed: u64) !void {
    const gpa = testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const rand = prng.random();
    var caches = try twinCaches(rand);
    defer for (&caches) |*cache| cache.deinit();

    var A: [kc.heads]f32 = undefined;
    for (&A) |*v| v.* = -(rand.float(f32) * 2 + 0.1);
    var D: [kc.heads]f32 = undefined;
    randomize(rand, &D, 1);
    var dt_bias: [kc.heads]f32 = undefined;
    randomize(rand, &dt_bias, 0.5);
    // Mamba2's (softplus, D, dt_bias, a gate), or every flag flipped and
    // no optional array: no softplus, a clamp that both bounds cut (dt is
    // uniform in [-1, 1)), no D, dt_bias or gate.
    const args: m2c.SsmArgs = if (mamba2_args)
        .{ .A = &A, .D = &D, .dt_bias = &dt_bias }
    else
        .{ .A = &A, .dt_softplus = false, .dt_clamp = true, .dt_min = 0.1, .dt_max = 0.6 };
    const tok = try SsmTokens(io).random(gpa, rand, shape.T);
    defer tok.deinit(gpa);
    const w = kc.x_row;
    const n = shape.T * w;
    const E = m2c.Elem(io);
    var y_a: [max_tokens * w]E = undefined;
    @memset(std.mem.sliceAsBytes(&y_a), 0x55);
    var y_b: [max_tokens * w]E = undefined;
    @memset(std.mem.sliceAsBytes(&y_b), 0xAA);
    var sio = tok.io(0, shape.T, y_a[0..n]);
    if (!mamba2_args) sio.z = null;

    var raw_io: m2c.c.m2c_ssm_io = undefined;
    m2c.c.m2c_ssm_io_init(&raw_io);
    raw_io.x = @ptrCast(tok.x.ptr);
    raw_io.x_len = tok.x.len;
    raw_io.dt = @ptrCast(tok.dt.ptr);
    raw_io.dt_len = tok.dt.len;
    raw_io.B = @ptrCast(tok.B.ptr);
    raw_io.B_len = tok.B.len;
    raw_io.C = @ptrCast(tok.C.ptr);
    raw_io.C_len = tok.C.len;
    if (mamba2_args) {
        raw_io.z = @ptrCast(tok.z.ptr);
        raw_io.z_len = tok.z.len;
    }
    raw_io.y = @ptrCast(&y_b);
    raw_io.y_len = n;
    const raw = cSsmArgs(io, args);
    const s = cSlots(shape);
    if (shape.cu) |cu| {
        try caches[0].ssmPrefill(0, shape.slots, cu, sio, args);
        try m2c.check(m2c.c.m2c_ssm_prefill(caches[1].handle, 0, s.ptr, s.n, cu.ptr, cu.len, &raw_io, &raw));
    } else {
        try caches[0].ssmStep(0, shape.slots, sio, args);
        try m2c.check(m2c.c.m2c_ssm_step(caches[1].handle, 0, s.ptr, s.n, &raw_io, &raw));
    }
    try expectSameBits(y_b[0..n], y_a[0..n]);
    try expectSameCaches(&caches[0], &caches[1]);
}

test "ssmStep and ssmPrefill pass what m2c_ssm_step and m2c_ssm_prefill get, bit for bit" {
    var seed: u64 = 100;
    inline for (.{ m2c.Dtype.f32, .bf16, .f16 }) |io| {
        for (call_shapes) |shape| {
            for ([_]bool{ true, false }) |mamba2_args| {
                try ssmRoundTrip(io, shape, mamba2_args, seed);
                seed += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Prefill arguments
// ---------------------------------------------------------------------------

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
