//! Tests of the Zig bindings, written as a consumer of the `m2c` module:
//! every wrapper, its failures (wrong lengths, ranges, duplicates, freed
//! handles, damaged snapshots and files) and the link mode, one file per
//! topic under tests/ (helpers shared between them in tests/helpers.zig).
//! They test what the binding adds: marshalling, error mapping, lifetimes,
//! header coverage and ABI gating. The kernels' math (an f64 reference,
//! prefill == steps, chunked prefill == one call) is proven in Rust
//! (core/tests) and through the C ABI under ctest (ctests/).

test {
    _ = @import("tests/abi.zig");
    _ = @import("tests/errors.zig");
    _ = @import("tests/config.zig");
    _ = @import("tests/data.zig");
    _ = @import("tests/kernels.zig");
    _ = @import("tests/spec.zig");
    _ = @import("tests/store.zig");
    _ = @import("tests/slots.zig");
    _ = @import("tests/files.zig");
    _ = @import("tests/device.zig");
}
