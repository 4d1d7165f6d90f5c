//! Helpers shared by the topic files of the Zig bindings' tests.
const std = @import("std");
const m2c = @import("m2c");

const testing = std.testing;
const expectEqual = testing.expectEqual;

/// 2 layers, 4 slots, conv_dim 16, 4 heads of 2, state_size 2, 2 groups:
/// the small shape the C tests use.
pub fn smallConfig(conv_width: u32, conv_dtype: m2c.Dtype, ssm_dtype: m2c.Dtype) m2c.Config {
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

pub fn contains(haystack: []const u8, needle: []const u8) bool {
    return std.mem.indexOf(u8, haystack, needle) != null;
}

/// Distinct, exactly representable values (in f32, bf16 and f16).
pub fn fill(buf: []f32, seed: f32) void {
    for (buf, 0..) |*v, i| v.* = seed + @as(f32, @floatFromInt(i % 64)) * 0.25;
}

pub fn expectAllZero(buf: []const f32) !void {
    for (buf) |v| try expectEqual(@as(f32, 0), v);
}

/// A shape that exercises the kernels' vector loops: 2 layers, 4 slots,
/// 4 heads of 4, state_size 20 (a 16-lane block and a tail), 2 groups;
/// conv_dim = 16 + 2*2*20 = 96.
pub fn kernelConfig(conv_width: u32, conv_dtype: m2c.Dtype, ssm_dtype: m2c.Dtype) m2c.Config {
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
pub const kc = struct {
    pub const heads = 4;
    pub const head_dim = 4;
    pub const state = 20;
    pub const groups = 2;
    pub const kernel = 4;
    pub const conv_dim = heads * head_dim + 2 * groups * state; // 96
    pub const x_row = heads * head_dim; // x, z, y
    pub const dt_row = heads;
    pub const bc_row = groups * state; // B, C
    pub const state_len = heads * head_dim * state;
};

/// Uniform values in [-scale, scale).
pub fn randomize(rand: std.Random, buf: []f32, scale: f32) void {
    for (buf) |*v| v.* = (rand.float(f32) * 2 - 1) * scale;
}

/// `src` in the io dtype `dt` (bf16: the upper half of the f32 bits, so any
/// bf16 value can occur). The caller frees the result.
pub fn toIo(comptime dt: m2c.Dtype, gpa: std.mem.Allocator, src: []const f32) ![]m2c.Elem(dt) {
    const out = try gpa.alloc(m2c.Elem(dt), src.len);
    for (out, src) |*o, v| o.* = switch (dt) {
        .f32 => v,
        .f16 => @floatCast(v),
        .bf16 => @truncate(@as(u32, @bitCast(v)) >> 16),
        else => unreachable,
    };
    return out;
}

pub fn input(comptime dt: m2c.Dtype, s: []const m2c.Elem(dt)) m2c.Input {
    return @unionInit(m2c.Input, @tagName(dt), s);
}

pub fn output(comptime dt: m2c.Dtype, s: []m2c.Elem(dt)) m2c.Output {
    return @unionInit(m2c.Output, @tagName(dt), s);
}

/// Compares the bits, not the values (0.0 and -0.0 differ, NaN equals
/// itself).
pub fn expectSameBits(want: anytype, got: anytype) !void {
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
pub fn cacheImage(gpa: std.mem.Allocator, cache: *const m2c.Cache) ![]u8 {
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
pub fn seedStates(rand: std.Random, caches: []const *m2c.Cache) !void {
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
pub fn SsmTokens(comptime dt: m2c.Dtype) type {
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
        pub fn random(gpa: std.mem.Allocator, rand: std.Random, tokens: usize) !Self {
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

        pub fn deinit(self: Self, gpa: std.mem.Allocator) void {
            inline for (fields) |f| gpa.free(@field(self, f[0]));
        }

        /// The io of token rows `t0..t1`, writing `y` (`(t1 - t0)` rows).
        pub fn io(self: Self, t0: usize, t1: usize, y: []E) m2c.SsmIo {
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
pub const batch_slots = [_]i32{ 2, -1, 0, 3 };
pub const batch_cu = [_]u64{ 0, 3, 7, 7, 12 };
pub const batch_tokens = 12;
