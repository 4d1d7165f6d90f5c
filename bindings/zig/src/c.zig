//! The one place that imports the C header. Everything in the bindings
//! reaches the C API through `c`; the include path (../../include) is set by
//! build.zig.
pub const c = @cImport({
    @cInclude("m2c.h");
});
