const std = @import("std");
const m2c = @import("m2c");

pub fn main() !void {
    var diag: m2c.Diagnostics = .{}; // receives the status and message of a failure
    var cfg = m2c.Config.default(); // Mamba2-130m shapes, conv bf16, ssm f32
    cfg.num_slots = 4;
    var cache = m2c.Cache.init(cfg, &diag) catch |err| { // also checks the ABI version
        std.debug.print("{s}: {f}\n", .{ @errorName(err), diag });
        return err;
    };
    defer cache.deinit();

    const gpa = std.heap.page_allocator;
    const slots = [_]i32{ 2, -1 }; // row 0 -> slot 2; row 1 is padding
    const x = try gpa.alloc(f32, 2 * cfg.convDim());
    defer gpa.free(x);
    const win = try gpa.alloc(f32, 2 * cfg.convWindowLen());
    defer gpa.free(win);
    @memset(x, 0);
    x[0] = 1.5; // channel 0 of slot 2 gets a new input

    step(&cache, &slots, x, win) catch |err| {
        std.debug.print("{s}: {f}\n", .{ @errorName(err), diag });
        return err;
    };
    var buf: [64]u8 = undefined;
    var out = std.fs.File.stdout().writer(&buf);
    try out.interface.print("newest column of channel 0: {d}\n", .{win[cfg.conv_width - 1]}); // 1.5
    try out.interface.flush();
}

fn step(cache: *m2c.Cache, slots: []const i32, x: []const f32, win: []f32) m2c.Error!void {
    try cache.updateConv(0, slots, .{ .f32 = x }); // any dtype in, converted to the storage dtype
    try cache.advance(slots, 1);
    try cache.readConv(0, slots, .{ .f32 = win });
}
