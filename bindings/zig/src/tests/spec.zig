//! The speculative-decoding wrappers: one round marshalled through
//! specReserve, specBegin, convVerify, ssmVerify and specCommit, against a
//! twin cache that steps the accepted tokens, and the errors they map. The
//! exactness over dtypes, trees and every accepted count is proven in Rust
//! (core/tests/spec.rs) and C (ctests/spec_verify_commit.c).
const std = @import("std");
const m2c = @import("m2c");
const helpers = @import("helpers.zig");

const testing = std.testing;
const expectEqual = testing.expectEqual;
const expectError = testing.expectError;
const kc = helpers.kc;
const randomize = helpers.randomize;

test "a speculative round commits exactly the stepped tokens, and refusals map" {
    const gpa = testing.allocator;
    const cfg = helpers.kernelConfig(4, .bf16, .f32);
    var a = try m2c.Cache.init(cfg, null);
    defer a.deinit();
    var b = try m2c.Cache.init(cfg, null);
    defer b.deinit();
    var prng = std.Random.DefaultPrng.init(11);
    const rand = prng.random();
    try helpers.seedStates(rand, &.{ &a, &b });

    const T = 5;
    const slots = [_]i32{ 3, 1 };
    const cu = [_]u64{ 0, 3, 5 };
    var x: [2][T * kc.conv_dim]f32 = undefined;
    var sx: [2][T * kc.x_row]f32 = undefined;
    var dt: [2][T * kc.dt_row]f32 = undefined;
    var bb: [2][T * kc.bc_row]f32 = undefined;
    var cc: [2][T * kc.bc_row]f32 = undefined;
    var co: [2][T * kc.conv_dim]f32 = undefined;
    var y: [2][T * kc.x_row]f32 = undefined;
    for (0..2) |l| {
        randomize(rand, &x[l], 2);
        randomize(rand, &sx[l], 1);
        randomize(rand, &dt[l], 1);
        randomize(rand, &bb[l], 1);
        randomize(rand, &cc[l], 1);
    }
    var w: [kc.conv_dim * kc.kernel]f32 = undefined;
    randomize(rand, &w, 0.5);
    var A: [kc.heads]f32 = undefined;
    for (&A) |*v| v.* = -(rand.float(f32) + 0.05);
    const ca: m2c.ConvArgs = .{ .weight = &w };
    const sa: m2c.SsmArgs = .{ .A = &A };

    try expectError(error.InvalidArg, a.specBegin(&slots, &cu, null)); // no log
    try expectError(error.OutOfRange, a.specReserve(5000));
    try a.specReserve(3);
    try expectError(error.InvalidArg, a.specBegin(&slots, &cu, &.{ -1, 1, 0, -1, 0 })); // a forward parent
    try a.specBegin(&slots, &cu, null);
    for (0..2) |l| {
        const layer: u32 = @intCast(l);
        try a.convVerify(layer, .{ .f32 = &x[l] }, .{ .f32 = &co[l] }, ca);
        if (l == 0) try expectError(error.InvalidArg, a.specCommit(&slots, &.{ 1, 1 })); // layer 1 unverified
        try a.ssmVerify(layer, .{ .x = .{ .f32 = &sx[l] }, .dt = .{ .f32 = &dt[l] }, .B = .{ .f32 = &bb[l] }, .C = .{ .f32 = &cc[l] }, .y = .{ .f32 = &y[l] } }, sa);
    }
    try expectError(error.ShapeMismatch, a.specCommit(&slots, &.{1}));
    try expectError(error.OutOfRange, a.specCommit(&slots, &.{ 4, 1 }));
    try a.specCommit(&slots, &.{ 2, 1 });
    try expectError(error.InvalidArg, a.specCommit(&slots, &.{ 0, 0 })); // committed already

    // The twin steps rows 0, 1 (slot 3) and 3 (slot 1); outputs match the verify's.
    const steps = [_]struct { slot: i32, row: usize }{ .{ .slot = 3, .row = 0 }, .{ .slot = 3, .row = 1 }, .{ .slot = 1, .row = 3 } };
    for (steps) |st| {
        const r = st.row;
        for (0..2) |l| {
            const layer: u32 = @intCast(l);
            var o: [kc.conv_dim]f32 = undefined;
            try b.convStep(layer, &.{st.slot}, .{ .f32 = x[l][r * kc.conv_dim ..][0..kc.conv_dim] }, .{ .f32 = &o }, ca);
            try helpers.expectSameBits(co[l][r * kc.conv_dim ..][0..kc.conv_dim], &o);
            var yy: [kc.x_row]f32 = undefined;
            try b.ssmStep(layer, &.{st.slot}, .{
                .x = .{ .f32 = sx[l][r * kc.x_row ..][0..kc.x_row] },
                .dt = .{ .f32 = dt[l][r * kc.dt_row ..][0..kc.dt_row] },
                .B = .{ .f32 = bb[l][r * kc.bc_row ..][0..kc.bc_row] },
                .C = .{ .f32 = cc[l][r * kc.bc_row ..][0..kc.bc_row] },
                .y = .{ .f32 = &yy },
            }, sa);
            try helpers.expectSameBits(y[l][r * kc.x_row ..][0..kc.x_row], &yy);
        }
        try b.advance(&.{st.slot}, 1);
    }
    const ia = try helpers.cacheImage(gpa, &a);
    defer gpa.free(ia);
    const ib = try helpers.cacheImage(gpa, &b);
    defer gpa.free(ib);
    try helpers.expectSameBits(ib, ia);
    try expectEqual(try b.position(3), try a.position(3));
    try expectEqual(try b.position(1), try a.position(1));
}
