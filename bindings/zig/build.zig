//! Builds the Zig bindings of m2c against a prebuilt libm2c
//! (`cargo build --release` at the repository root makes it).
//!
//!   zig build test                    shared libm2c.so (the default)
//!   zig build test -Dstatic=true      static libm2c.a
//!   zig build test -Dlib-dir=/opt/m2c/lib -Dinclude-dir=/opt/m2c/include
//!
//! Other packages get the module with
//! `exe.root_module.addImport("m2c", b.dependency("m2c", .{}).module("m2c"))`;
//! the module carries the include path, the library and its rpath.
const std = @import("std");

/// What a program linking libm2c.a needs besides it: a copy of
/// scripts/native-libs.txt (scripts/test.sh checks that they agree).
const static_native_libs = [_][]const u8{ "gcc_s", "util", "rt", "pthread", "m", "dl", "c" };

/// The SONAME of libm2c.so for the ABI version these bindings target.
const soname = "libm2c.so.1";

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});

    const static = b.option(bool, "static", "Link libm2c.a instead of libm2c.so (default: false)") orelse false;
    const lib_dir = absoluteFromRoot(b, b.option(
        []const u8,
        "lib-dir",
        "Directory holding libm2c.so / libm2c.a; relative paths are relative to this package (default: ../../target/release)",
    ) orelse "../../target/release");
    const include_dir = absoluteFromRoot(b, b.option(
        []const u8,
        "include-dir",
        "Directory holding m2c.h; relative paths are relative to this package (default: ../../include)",
    ) orelse "../../include");

    const lib_file = b.pathJoin(&.{ lib_dir, if (static) "libm2c.a" else "libm2c.so" });
    const header_file = b.pathJoin(&.{ include_dir, "m2c.h" });

    // The module other packages import. It carries everything needed to link.
    const mod = b.addModule("m2c", .{
        .root_source_file = b.path("src/m2c.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
    });
    mod.addIncludePath(.{ .cwd_relative = include_dir });
    if (static) {
        mod.addObjectFile(.{ .cwd_relative = lib_file });
        for (static_native_libs) |name| mod.linkSystemLibrary(name, .{ .use_pkg_config = .no });
    } else {
        mod.addLibraryPath(.{ .cwd_relative = lib_dir });
        mod.linkSystemLibrary("m2c", .{
            .use_pkg_config = .no,
            .preferred_link_mode = .dynamic,
            .search_strategy = .no_fallback,
        });
        // At run time the loader looks for the SONAME, libm2c.so.1, which a
        // cargo build does not create. Where lib-dir has it (an installed
        // library), point the rpath there; otherwise at a directory of our
        // own holding a symlink libm2c.so.1 -> <lib-dir>/libm2c.so. Zig
        // passes relative rpaths through unchanged, so both are absolute.
        if (fileExists(b.pathJoin(&.{ lib_dir, soname }))) {
            mod.addRPath(.{ .cwd_relative = lib_dir });
        } else if (fileExists(lib_file)) {
            mod.addRPath(.{ .cwd_relative = runtimeDir(b, lib_dir, lib_file) });
        }
    }

    // Refuse early, with the fix, when the prebuilt pieces are missing.
    var missing: ?*std.Build.Step = null;
    for ([_][]const u8{ lib_file, header_file }) |f| {
        if (!fileExists(f)) {
            missing = &b.addFail(b.fmt("{s} is missing: run 'cargo build --release' at the repository root " ++
                "(or pass -Dlib-dir / -Dinclude-dir)", .{f})).step;
            break;
        }
    }

    const options = b.addOptions();
    options.addOption(bool, "static", static);

    // The test suite, written as a consumer of the module.
    const test_mod = b.createModule(.{
        .root_source_file = b.path("src/tests.zig"),
        .target = target,
        .optimize = optimize,
        .imports = &.{.{ .name = "m2c", .module = mod }},
    });
    test_mod.addOptions("build_options", options);
    // The README's example must be the file the tests run, byte for byte.
    test_mod.addAnonymousImport("README.md", .{ .root_source_file = b.path("README.md") });
    test_mod.addAnonymousImport("quickstart.zig", .{ .root_source_file = b.path("examples/quickstart.zig") });
    const tests = b.addTest(.{ .name = if (static) "m2c-test-static" else "m2c-test", .root_module = test_mod });
    const run_tests = b.addRunArtifact(tests);

    // The README example, built and run.
    const example = b.addExecutable(.{
        .name = "quickstart",
        .root_module = b.createModule(.{
            .root_source_file = b.path("examples/quickstart.zig"),
            .target = target,
            .optimize = optimize,
            .imports = &.{.{ .name = "m2c", .module = mod }},
        }),
    });
    const run_example = b.addRunArtifact(example);
    run_example.expectStdOutEqual("newest column of channel 0: 1.5\n");
    run_example.has_side_effects = true; // run it every time, like the tests

    const test_step = b.step("test", "Run the binding tests and the README example");
    const example_step = b.step("example", "Run examples/quickstart.zig");
    if (missing) |fail| {
        test_step.dependOn(fail);
        example_step.dependOn(fail);
    } else {
        test_step.dependOn(&run_tests.step);
        test_step.dependOn(&run_example.step);
        example_step.dependOn(&run_example.step);
    }
}

/// `p` as an absolute, normalised path; a relative one is taken relative to
/// this package's directory, not to wherever `zig build` was started.
fn absoluteFromRoot(b: *std.Build, p: []const u8) []const u8 {
    const root = b.build_root.handle.realpathAlloc(b.allocator, ".") catch |err|
        std.debug.panic("cannot resolve the build root: {s}", .{@errorName(err)});
    return std.fs.path.resolve(b.allocator, &.{ root, p }) catch @panic("OOM");
}

/// `<cache>/m2c-runtime/<hash of lib_dir>/libm2c.so.1`, a symlink to
/// `lib_file`, made (or repaired) now; returns its absolute directory. A
/// symlink, not a copy: a rebuilt libm2c.so is picked up without relinking.
fn runtimeDir(b: *std.Build, lib_dir: []const u8, lib_file: []const u8) []const u8 {
    const cache = b.cache_root.handle.realpathAlloc(b.allocator, ".") catch |err|
        std.debug.panic("cannot resolve the cache directory: {s}", .{@errorName(err)});
    const dir = b.pathJoin(&.{ cache, "m2c-runtime", b.fmt("{x:0>16}", .{std.hash.Wyhash.hash(0, lib_dir)}) });
    const link = b.pathJoin(&.{ dir, soname });
    std.fs.cwd().makePath(dir) catch |err| std.debug.panic("cannot create {s}: {s}", .{ dir, @errorName(err) });
    var buf: [std.fs.max_path_bytes]u8 = undefined;
    if (std.fs.readLinkAbsolute(link, &buf)) |target| {
        if (std.mem.eql(u8, target, lib_file)) return dir;
        std.fs.deleteFileAbsolute(link) catch {};
    } else |_| {}
    std.fs.symLinkAbsolute(lib_file, link, .{}) catch |err| switch (err) {
        error.PathAlreadyExists => {}, // a concurrent build made the same link
        else => std.debug.panic("cannot create {s}: {s}", .{ link, @errorName(err) }),
    };
    return dir;
}

fn fileExists(p: []const u8) bool {
    std.fs.accessAbsolute(p, .{}) catch return false;
    return true;
}
