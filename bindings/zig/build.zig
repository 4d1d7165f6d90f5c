//! Builds the Zig bindings of m2c against a prebuilt libm2c: an installed
//! one (`scripts/install.sh --prefix DIR`) or this repository's development
//! build (`cargo build --release` at the repository root).
//!
//!   zig build test                    this repository's target/release (libm2c.so)
//!   zig build test -Dstatic=true      the same, static libm2c.a
//!   zig build test -Dprefix=/opt/m2c  an installed m2c: /opt/m2c/{include,lib}
//!
//! Other packages get the module with
//!
//!   const dep = b.dependency("m2c", .{ .prefix = b.path("third_party/m2c") });
//!   exe.root_module.addImport("m2c", dep.module("m2c"));
//!
//! (`b.path` is relative to the consumer's package; an absolute directory
//! is `.{ .cwd_relative = "/opt/m2c" }`). The module carries the include
//! path, the library and, for a prefix or `lib-dir`, an rpath to its lib
//! directory (none into this repository: the tests here run with
//! LD_LIBRARY_PATH). Every compilation that imports the module first checks
//! that m2c.h and the library exist, and fails with the fix if not.
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
    const prefix = b.option(
        std.Build.LazyPath,
        "prefix",
        "An installed m2c (scripts/install.sh --prefix): uses <prefix>/include and <prefix>/lib",
    );
    const lib_dir_opt = b.option(
        std.Build.LazyPath,
        "lib-dir",
        "Directory holding libm2c.so / libm2c.a (overrides <prefix>/lib)",
    );
    const include_dir_opt = b.option(
        std.Build.LazyPath,
        "include-dir",
        "Directory holding m2c.h (overrides <prefix>/include)",
    );

    // Without any of them: this repository's development build.
    const in_tree = prefix == null and lib_dir_opt == null and include_dir_opt == null;
    const lib_dir = if (lib_dir_opt) |p|
        absolute(b, p, "lib-dir")
    else if (prefix) |p|
        b.pathJoin(&.{ absolute(b, p, "prefix"), "lib" })
    else
        absolute(b, b.path("../../target/release"), "lib-dir");
    const include_dir = if (include_dir_opt) |p|
        absolute(b, p, "include-dir")
    else if (prefix) |p|
        b.pathJoin(&.{ absolute(b, p, "prefix"), "include" })
    else
        absolute(b, b.path("../../include"), "include-dir");

    const lib_file = b.pathJoin(&.{ lib_dir, if (static) "libm2c.a" else "libm2c.so" });
    const fix = if (in_tree)
        "run 'cargo build --release' at the m2c repository root, or pass -Dprefix=<an installed m2c>"
    else
        "install m2c there (scripts/install.sh --prefix DIR) or correct the prefix, lib-dir or include-dir option";
    var required: std.ArrayList([]const u8) = .empty;
    required.append(b.allocator, b.pathJoin(&.{ include_dir, "m2c.h" })) catch @panic("OOM");
    required.append(b.allocator, lib_file) catch @panic("OOM");
    // The loader asks for the SONAME; cargo's build script and install.sh
    // both leave it beside libm2c.so.
    if (!static) required.append(b.allocator, b.pathJoin(&.{ lib_dir, soname })) catch @panic("OOM");

    // The include path comes out of a step that checks the files, so every
    // compilation importing the module (a consumer's too) runs the check
    // first and fails with `fix` rather than with a linker error.
    const check = Check.create(b, required.items, include_dir, fix);

    // The module other packages import. It carries everything needed to link.
    const mod = b.addModule("m2c", .{
        .root_source_file = b.path("src/m2c.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
    });
    mod.addIncludePath(check.includeDir());
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
        // An rpath to an installed library, chosen by the consumer; never
        // one into a source tree (whoever can write there could plant a
        // library), so the development build runs with LD_LIBRARY_PATH.
        if (!in_tree) mod.addRPath(.{ .cwd_relative = lib_dir });
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
    if (in_tree and !static) run_tests.setEnvironmentVariable("LD_LIBRARY_PATH", lib_dir);

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
    if (in_tree and !static) run_example.setEnvironmentVariable("LD_LIBRARY_PATH", lib_dir);
    run_example.expectStdOutEqual("newest column of channel 0: 1.5\n");
    run_example.has_side_effects = true; // run it every time, like the tests

    const test_step = b.step("test", "Run the binding tests and the README example");
    const example_step = b.step("example", "Run examples/quickstart.zig");
    test_step.dependOn(&run_tests.step);
    test_step.dependOn(&run_example.step);
    example_step.dependOn(&run_example.step);
}

/// The directory `p` names, as an absolute, normalised path: a `b.path`
/// from a consumer is relative to the consumer's package, a string from the
/// command line (`-Dprefix=...`) to the directory `zig build` runs in.
fn absolute(b: *std.Build, p: std.Build.LazyPath, option: []const u8) []const u8 {
    if (p == .generated) std.debug.panic("m2c: the {s} option must name a directory, not a generated path", .{option});
    const cwd = std.process.getCwdAlloc(b.allocator) catch |err|
        std.debug.panic("cannot read the current directory: {s}", .{@errorName(err)});
    return std.fs.path.resolve(b.allocator, &.{ cwd, p.getPath(b) }) catch @panic("OOM");
}

/// A step that fails, naming the missing file and the fix, unless every
/// required file exists; its output is the include directory.
const Check = struct {
    step: std.Build.Step,
    required: []const []const u8,
    include_dir: []const u8,
    fix: []const u8,
    out: std.Build.GeneratedFile,

    fn create(b: *std.Build, required: []const []const u8, include_dir: []const u8, fix: []const u8) *Check {
        const c = b.allocator.create(Check) catch @panic("OOM");
        c.* = .{
            .step = std.Build.Step.init(.{ .id = .custom, .name = "check for m2c.h and libm2c", .owner = b, .makeFn = make }),
            .required = required,
            .include_dir = include_dir,
            .fix = fix,
            .out = .{ .step = &c.step },
        };
        return c;
    }

    fn includeDir(c: *Check) std.Build.LazyPath {
        return .{ .generated = .{ .file = &c.out } };
    }

    fn make(step: *std.Build.Step, _: std.Build.Step.MakeOptions) anyerror!void {
        const c: *Check = @fieldParentPtr("step", step);
        for (c.required) |f| {
            std.fs.accessAbsolute(f, .{}) catch
                return step.fail("m2c: {s} is missing: {s}", .{ f, c.fix });
        }
        c.out.path = c.include_dir;
    }
};
