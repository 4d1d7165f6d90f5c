//! Zig bindings for m2c, the Mamba2 recurrent-state cache.
//!
//! A thin layer over the C API in `include/m2c.h` (reachable raw as `m2c.c`):
//! slices instead of pointer/length pairs, an error set instead of status
//! codes, an optional `Diagnostics` that keeps the library's message, and
//! `Config`/`Tensor` as Zig structs. The C contract holds unchanged: a call
//! that fails changes nothing and writes none of its outputs; every length is
//! checked by the library against the cache's shape; calls on one cache may
//! run on any thread (see `Cache` for the one exception, `Diagnostics`).
//!
//! ```zig
//! var cfg = m2c.Config.default();
//! cfg.num_slots = 4;
//! var cache = try m2c.Cache.init(cfg, null);
//! defer cache.deinit();
//! try cache.updateConv(0, &.{ 2, -1 }, .{ .f32 = x });
//! ```
const std = @import("std");

/// The raw C API (`@cImport` of m2c.h), for anything the bindings do not wrap.
pub const c = @import("c.zig").c;

/// The ABI version of the header these bindings were compiled against.
/// `Cache.init` refuses a library that reports another one.
pub const header_abi_version: u32 = c.M2C_ABI_VERSION;
/// The library version of that header, "MAJOR.MINOR.PATCH".
pub const header_version: [:0]const u8 = c.M2C_VERSION_STRING;

// ---------------------------------------------------------------------------
// Status codes and errors
// ---------------------------------------------------------------------------

/// Every failure a binding call can report. Each `M2C_STATUS_*` failure has
/// its own error; `Unknown` is a status code this binding does not know (a
/// newer library), never treated as success; `AbiMismatch` is a library whose
/// ABI version differs from the header's.
pub const Error = error{
    NullArg,
    InvalidArg,
    InvalidConfig,
    OutOfRange,
    ShapeMismatch,
    UnsupportedDtype,
    OutOfMemory,
    Poisoned,
    Panic,
    Unsupported,
    NoFreeSlot,
    Corrupt,
    Incompatible,
    Io,
    NotFound,
    Unknown,
    AbiMismatch,
};

/// An `m2c_status` as a Zig enum. Non-exhaustive: any `i32` the library
/// returns fits, and the ones the header does not define fall in `_`.
/// A compile-time check below keeps it equal to the header's `M2C_STATUS_*`.
pub const Status = enum(i32) {
    ok = c.M2C_STATUS_OK,
    null_arg = c.M2C_STATUS_NULL_ARG,
    invalid_arg = c.M2C_STATUS_INVALID_ARG,
    invalid_config = c.M2C_STATUS_INVALID_CONFIG,
    out_of_range = c.M2C_STATUS_OUT_OF_RANGE,
    shape_mismatch = c.M2C_STATUS_SHAPE_MISMATCH,
    unsupported_dtype = c.M2C_STATUS_UNSUPPORTED_DTYPE,
    out_of_memory = c.M2C_STATUS_OUT_OF_MEMORY,
    poisoned = c.M2C_STATUS_POISONED,
    panic = c.M2C_STATUS_PANIC,
    unsupported = c.M2C_STATUS_UNSUPPORTED,
    no_free_slot = c.M2C_STATUS_NO_FREE_SLOT,
    corrupt = c.M2C_STATUS_CORRUPT,
    incompatible = c.M2C_STATUS_INCOMPATIBLE,
    io = c.M2C_STATUS_IO,
    not_found = c.M2C_STATUS_NOT_FOUND,
    _,

    /// The library's static description of the code.
    pub fn str(s: Status) [:0]const u8 {
        return statusStr(@intFromEnum(s));
    }
};

/// Maps a status code to `{}` (OK) or its error. The switch names every
/// status the header defines (the compiler rejects a missing one), and any
/// other value is `error.Unknown`.
pub fn check(code: c.m2c_status) Error!void {
    return switch (@as(Status, @enumFromInt(code))) {
        .ok => {},
        .null_arg => error.NullArg,
        .invalid_arg => error.InvalidArg,
        .invalid_config => error.InvalidConfig,
        .out_of_range => error.OutOfRange,
        .shape_mismatch => error.ShapeMismatch,
        .unsupported_dtype => error.UnsupportedDtype,
        .out_of_memory => error.OutOfMemory,
        .poisoned => error.Poisoned,
        .panic => error.Panic,
        .unsupported => error.Unsupported,
        .no_free_slot => error.NoFreeSlot,
        .corrupt => error.Corrupt,
        .incompatible => error.Incompatible,
        .io => error.Io,
        .not_found => error.NotFound,
        _ => error.Unknown,
    };
}

/// An element type (`M2C_DTYPE_*`). Non-exhaustive so that a `Config` can
/// carry any code; the library validates it (`error.UnsupportedDtype`).
pub const Dtype = enum(u32) {
    f32 = c.M2C_DTYPE_F32,
    bf16 = c.M2C_DTYPE_BF16,
    f16 = c.M2C_DTYPE_F16,
    _,
};

/// A device (`M2C_DEVICE_*`).
pub const Device = enum(u32) {
    cpu = c.M2C_DEVICE_CPU,
    cuda = c.M2C_DEVICE_CUDA,
    _,
};

/// A conv activation (`M2C_ACTIVATION_*`), for `ConvArgs`.
pub const Activation = enum(u32) {
    none = c.M2C_ACTIVATION_NONE,
    silu = c.M2C_ACTIVATION_SILU,
    _,
};

/// The Zig element type of a dtype in buffers: bf16 travels as its raw bits.
pub fn Elem(comptime dt: Dtype) type {
    return switch (dt) {
        .f32 => f32,
        .bf16 => u16,
        .f16 => f16,
        _ => @compileError("no element type for this dtype code"),
    };
}

// Keep the enums equal to the header: every `M2C_STATUS_FOO` must be
// `Status.foo` with the same value and vice versa (likewise dtypes and
// devices), so a header that gains a code fails to compile here instead of
// meeting `_ => error.Unknown` at run time.
comptime {
    checkEnumMatchesHeader(Status, "M2C_STATUS_");
    checkEnumMatchesHeader(Dtype, "M2C_DTYPE_");
    checkEnumMatchesHeader(Device, "M2C_DEVICE_");
    checkEnumMatchesHeader(Activation, "M2C_ACTIVATION_");
}

fn checkEnumMatchesHeader(comptime E: type, comptime prefix: []const u8) void {
    @setEvalBranchQuota(1_000_000);
    var found = 0;
    for (@typeInfo(c).@"struct".decls) |d| {
        if (!std.mem.startsWith(u8, d.name, prefix)) continue;
        found += 1;
        const tag = lowerName(d.name[prefix.len..]);
        if (!@hasField(E, tag))
            @compileError("m2c.h defines " ++ d.name ++ " but " ++ @typeName(E) ++ " has no ." ++ tag);
        if (@intFromEnum(@field(E, tag)) != @field(c, d.name))
            @compileError(@typeName(E) ++ "." ++ tag ++ " differs from " ++ d.name);
    }
    if (found != @typeInfo(E).@"enum".fields.len)
        @compileError(@typeName(E) ++ " has a tag that m2c.h does not define as " ++ prefix ++ "*");
}

fn lowerName(comptime s: []const u8) [:0]const u8 {
    comptime {
        var buf: [s.len:0]u8 = undefined;
        for (s, 0..) |ch, i| buf[i] = std.ascii.toLower(ch);
        const final = buf;
        return &final;
    }
}

// ---------------------------------------------------------------------------
// Diagnostics and free functions
// ---------------------------------------------------------------------------

/// Where a failing call leaves its status and message. Pass one to
/// `Cache.init` (the cache keeps the pointer and fills it on every failure
/// of its methods) or to `configBytes`. It is written only when a call
/// fails, right after the failing C call on the same thread, so the message
/// is that call's. The message is copied: it stays valid as long as the
/// `Diagnostics` does (truncated to `max_message` bytes, ending in "...").
pub const Diagnostics = struct {
    /// The status of the failing C call; null if nothing failed yet or the
    /// binding refused the call before it reached C (the message says why).
    status: ?Status = null,
    msg_buf: [max_message]u8 = undefined,
    msg_len: usize = 0,

    pub const max_message = 1024;

    /// The message of the last failure ("" if none).
    pub fn message(self: *const Diagnostics) []const u8 {
        return self.msg_buf[0..self.msg_len];
    }

    /// Prints "status text: message" (use with "{f}").
    pub fn format(self: Diagnostics, w: *std.Io.Writer) std.Io.Writer.Error!void {
        const what: []const u8 = if (self.status) |s| s.str() else "refused by the Zig binding";
        try w.print("{s}: {s}", .{ what, self.message() });
    }

    fn record(self: *Diagnostics, status: ?Status, msg: []const u8) void {
        self.status = status;
        if (msg.len <= max_message) {
            @memcpy(self.msg_buf[0..msg.len], msg);
            self.msg_len = msg.len;
        } else {
            const keep = max_message - 3;
            @memcpy(self.msg_buf[0..keep], msg[0..keep]);
            @memcpy(self.msg_buf[keep..max_message], "...");
            self.msg_len = max_message;
        }
    }
};

/// Turns a status into the result, recording a failure in `diag`.
fn call(diag: ?*Diagnostics, code: c.m2c_status) Error!void {
    check(code) catch |err| {
        if (diag) |d| d.record(@enumFromInt(code), lastError());
        return err;
    };
}

/// A failure found by the binding itself, before any C call.
fn refuse(diag: ?*Diagnostics, err: Error, comptime fmt: []const u8, args: anytype) Error {
    if (diag) |d| {
        var buf: [Diagnostics.max_message + 1]u8 = undefined;
        const msg = std.fmt.bufPrint(&buf, "m2c.zig: " ++ fmt, args) catch &buf;
        d.record(null, msg);
    }
    return err;
}

/// The library version, "MAJOR.MINOR.PATCH" (static).
pub fn version() [:0]const u8 {
    return std.mem.span(c.m2c_version());
}

/// The ABI version of the loaded library.
pub fn abiVersion() u32 {
    return c.m2c_abi_version();
}

/// The library's static text for any status code ("unknown status code"
/// for one it does not define).
pub fn statusStr(code: c.m2c_status) [:0]const u8 {
    return std.mem.span(c.m2c_status_str(code));
}

/// The detail of the last failing m2c call on this thread ("" if none).
/// Valid until the next failing m2c call on this thread; copy it to keep it.
pub fn lastError() [:0]const u8 {
    return std.mem.span(c.m2c_last_error());
}

/// Refuses a library whose ABI version is not the header's. `Cache.init`
/// calls it with `abiVersion()`; public so that the refusal can be tested.
pub fn checkAbi(library_abi: u32, diag: ?*Diagnostics) Error!void {
    if (library_abi != header_abi_version)
        return refuse(diag, error.AbiMismatch, "libm2c has ABI version {d}, these bindings were built for {d}", .{ library_abi, header_abi_version });
}

/// Bytes of state storage a cache with `cfg` would allocate
/// (`m2c_config_bytes`): every layer's conv and SSM buffers.
pub fn configBytes(cfg: Config, diag: ?*Diagnostics) Error!u64 {
    const raw = cfg.toC();
    var bytes: u64 = 0;
    try call(diag, c.m2c_config_bytes(&raw, &bytes));
    return bytes;
}

// ---------------------------------------------------------------------------
// Config, buffers, views
// ---------------------------------------------------------------------------

/// Published Mamba2 models (`M2C_PRESET_*`), for `Config.preset`.
pub const Preset = enum(u32) {
    mamba2_130m = c.M2C_PRESET_MAMBA2_130M,
    mamba2_370m = c.M2C_PRESET_MAMBA2_370M,
    mamba2_780m = c.M2C_PRESET_MAMBA2_780M,
    mamba2_1_3b = c.M2C_PRESET_MAMBA2_1_3B,
    mamba2_2_7b = c.M2C_PRESET_MAMBA2_2_7B,
    // The Mamba2 layers of hybrids (num_layers counts those only).
    nemotron_h_8b = c.M2C_PRESET_NEMOTRON_H_8B,
    nemotron_nano_9b_v2 = c.M2C_PRESET_NEMOTRON_NANO_9B_V2,
    bamba_9b = c.M2C_PRESET_BAMBA_9B,
    granite_4_0_h_small = c.M2C_PRESET_GRANITE_4_0_H_SMALL,
    falcon_h1_7b = c.M2C_PRESET_FALCON_H1_7B,
    zamba2_1_2b = c.M2C_PRESET_ZAMBA2_1_2B,
};

/// The shape of a cache: `m2c_config` without `struct_size`, which the
/// binding sets. Start from `Config.default()` and change what you need.
pub const Config = struct {
    num_layers: u32,
    num_slots: u32,
    intermediate_size: u32,
    num_heads: u32,
    head_dim: u32,
    state_size: u32,
    n_groups: u32,
    conv_kernel_size: u32,
    conv_width: u32,
    conv_dtype: Dtype,
    ssm_dtype: Dtype,
    device: Device,
    device_index: i32,

    /// The library's defaults (`m2c_config_init`): Mamba2-130m shapes,
    /// 1 slot, conv windows in bf16, SSM states in f32, CPU.
    pub fn default() Config {
        var raw: c.m2c_config = undefined;
        c.m2c_config_init(&raw);
        return fromC(raw);
    }

    /// The Mamba2 layer shapes of a published model (`m2c_config_preset`),
    /// with the defaults of `default()` for everything else.
    pub fn preset(p: Preset) Config {
        var raw: c.m2c_config = undefined;
        // Every `Preset` is a valid code: the call cannot fail.
        if (c.m2c_config_preset(&raw, @intFromEnum(p)) != c.M2C_STATUS_OK) unreachable;
        return fromC(raw);
    }

    pub fn fromC(raw: c.m2c_config) Config {
        var cfg: Config = undefined;
        inline for (@typeInfo(Config).@"struct".fields) |f| {
            @field(cfg, f.name) = switch (@typeInfo(f.type)) {
                .@"enum" => @enumFromInt(@field(raw, f.name)),
                else => @field(raw, f.name),
            };
        }
        return cfg;
    }

    /// The C struct, with `struct_size` from `m2c_config_init`.
    pub fn toC(cfg: Config) c.m2c_config {
        var raw: c.m2c_config = undefined;
        c.m2c_config_init(&raw);
        inline for (@typeInfo(Config).@"struct".fields) |f| {
            @field(raw, f.name) = switch (@typeInfo(f.type)) {
                .@"enum" => @intFromEnum(@field(cfg, f.name)),
                else => @field(cfg, f.name),
            };
        }
        return raw;
    }

    /// Conv channels: `intermediate_size + 2*n_groups*state_size`
    /// (saturating, so any field values are safe to ask about).
    pub fn convDim(cfg: Config) usize {
        return @as(usize, cfg.intermediate_size) +| (2 *| @as(usize, cfg.n_groups) *| cfg.state_size);
    }

    /// Elements of one slot's conv window: `conv_dim * conv_width`.
    pub fn convWindowLen(cfg: Config) usize {
        return cfg.convDim() *| cfg.conv_width;
    }

    /// Elements of one slot's SSM state: `num_heads * head_dim * state_size`.
    pub fn ssmStateLen(cfg: Config) usize {
        return @as(usize, cfg.num_heads) *| cfg.head_dim *| cfg.state_size;
    }
};

// `Config` must hold every field of `m2c_config` except `struct_size`.
comptime {
    const cf = @typeInfo(c.m2c_config).@"struct".fields;
    if (!std.mem.eql(u8, cf[0].name, "struct_size")) @compileError("m2c_config no longer starts with struct_size");
    const zf = @typeInfo(Config).@"struct".fields;
    if (cf.len != zf.len + 1) @compileError("Config and m2c_config differ in their fields");
    for (cf[1..], zf) |a, b| {
        if (!std.mem.eql(u8, a.name, b.name)) @compileError("Config." ++ b.name ++ " is not m2c_config." ++ a.name);
    }
}

/// Values handed to the cache, in one of the dtypes. Any dtype may go into
/// any storage dtype: the library converts, rounding to nearest even.
pub const Input = union(enum) {
    f32: []const f32,
    /// bfloat16 as raw bits (the upper half of a binary32).
    bf16: []const u16,
    f16: []const f16,

    pub fn dtype(self: Input) Dtype {
        return switch (self) {
            .f32 => .f32,
            .bf16 => .bf16,
            .f16 => .f16,
        };
    }

    pub fn len(self: Input) usize {
        return switch (self) {
            inline else => |s| s.len,
        };
    }

    /// (NULL, 0) for an empty slice, whatever address Zig gave it.
    fn ptr(self: Input) ?*const anyopaque {
        return switch (self) {
            inline else => |s| if (s.len == 0) null else @ptrCast(s.ptr),
        };
    }
};

/// A buffer the cache copies into, in one of the dtypes.
pub const Output = union(enum) {
    f32: []f32,
    /// bfloat16 as raw bits.
    bf16: []u16,
    f16: []f16,

    pub fn dtype(self: Output) Dtype {
        return switch (self) {
            .f32 => .f32,
            .bf16 => .bf16,
            .f16 => .f16,
        };
    }

    pub fn len(self: Output) usize {
        return switch (self) {
            inline else => |s| s.len,
        };
    }

    fn ptr(self: Output) ?*anyopaque {
        return switch (self) {
            inline else => |s| if (s.len == 0) null else @ptrCast(s.ptr),
        };
    }
};

/// A zero-copy view of one layer's storage for every slot
/// (`m2c_conv_view` / `m2c_ssm_view`). `data` points into the cache and is
/// valid until `Cache.deinit`; access through it is not synchronised with
/// the cache's own calls (see m2c.h).
pub const Tensor = struct {
    data: *anyopaque,
    dtype: Dtype,
    /// Dimensions used: 3 for conv (`[slots, conv_dim, conv_width]`), 4 for
    /// SSM (`[slots, heads, head_dim, state_size]`).
    ndim: u32,
    shape: [4]u64,
    /// In elements, not bytes; unused dimensions have shape 1, stride 0.
    strides: [4]u64,
    device: Device,
    device_index: i32,

    /// The number of elements.
    pub fn len(self: Tensor) usize {
        var n: usize = 1;
        for (self.shape[0..self.ndim]) |d| n *= @intCast(d);
        return n;
    }

    /// The elements as a slice of `Elem(dt)`, or null unless the view holds
    /// `dt`, lives in host memory and is dense row-major.
    pub fn slice(self: Tensor, comptime dt: Dtype) ?[]Elem(dt) {
        if (self.dtype != dt or self.device != .cpu or self.ndim == 0 or self.ndim > 4) return null;
        var want: u64 = 1;
        var i = self.ndim;
        while (i > 0) {
            i -= 1;
            if (self.shape[i] != 1 and self.strides[i] != want) return null;
            want *= self.shape[i];
        }
        const p: [*]Elem(dt) = @ptrCast(@alignCast(self.data));
        return p[0..self.len()];
    }

    fn fromC(t: c.m2c_tensor, diag: ?*Diagnostics) Error!Tensor {
        const data = t.data orelse return refuse(diag, error.Unknown, "the library returned a view without data", .{});
        return .{
            .data = data,
            .dtype = @enumFromInt(t.dtype),
            .ndim = t.ndim,
            .shape = t.shape,
            .strides = t.strides,
            .device = @enumFromInt(t.device),
            .device_index = t.device_index,
        };
    }
};

// ---------------------------------------------------------------------------
// Decode-kernel arguments
// ---------------------------------------------------------------------------

/// The conv parameters of one layer for `Cache.convStep` and
/// `Cache.convPrefill` (`m2c_conv_args`; the defaults are
/// `m2c_conv_args_init`'s). The dtype of the token buffers comes from the
/// `Input`/`Output` tags.
pub const ConvArgs = struct {
    /// `[conv_dim, conv_kernel_size]`, oldest tap first.
    weight: []const f32,
    /// `[conv_dim]`, or null for none.
    bias: ?[]const f32 = null,
    activation: Activation = .silu,

    /// The C struct, from `m2c_conv_args_init` (for `m2c.c` users).
    pub fn toC(self: ConvArgs, io_dtype: Dtype) c.m2c_conv_args {
        var raw: c.m2c_conv_args = undefined;
        c.m2c_conv_args_init(&raw);
        raw.io_dtype = @intFromEnum(io_dtype);
        raw.activation = @intFromEnum(self.activation);
        raw.weight = ptrOrNull(f32, self.weight);
        raw.weight_len = self.weight.len;
        if (self.bias) |b| {
            raw.bias = ptrOrNull(f32, b);
            raw.bias_len = b.len;
        }
        return raw;
    }
};

/// The selective-state parameters of one layer for `Cache.ssmStep` and
/// `Cache.ssmPrefill` (`m2c_ssm_args`; the defaults are
/// `m2c_ssm_args_init`'s).
pub const SsmArgs = struct {
    /// `[num_heads]`, already `-exp(A_log)`. Required.
    A: []const f32,
    /// `[num_heads]` skip weights, or null for none.
    D: ?[]const f32 = null,
    /// `[num_heads]` added to dt before softplus, or null for none.
    dt_bias: ?[]const f32 = null,
    /// `dt = softplus(dt + dt_bias)`, as Mamba2 does.
    dt_softplus: bool = true,
    /// Clamp dt to `[dt_min, dt_max]` after softplus.
    dt_clamp: bool = false,
    dt_min: f32 = 0,
    dt_max: f32 = std.math.inf(f32),

    /// The C struct, from `m2c_ssm_args_init` (for `m2c.c` users).
    pub fn toC(self: SsmArgs, io_dtype: Dtype) c.m2c_ssm_args {
        var raw: c.m2c_ssm_args = undefined;
        c.m2c_ssm_args_init(&raw);
        raw.io_dtype = @intFromEnum(io_dtype);
        raw.dt_softplus = @intFromBool(self.dt_softplus);
        raw.dt_clamp = @intFromBool(self.dt_clamp);
        raw.dt_min = self.dt_min;
        raw.dt_max = self.dt_max;
        raw.A = ptrOrNull(f32, self.A);
        raw.A_len = self.A.len;
        if (self.D) |d| {
            raw.D = ptrOrNull(f32, d);
            raw.D_len = d.len;
        }
        if (self.dt_bias) |b| {
            raw.dt_bias = ptrOrNull(f32, b);
            raw.dt_bias_len = b.len;
        }
        return raw;
    }
};

/// The per-token buffers of `Cache.ssmStep` and `Cache.ssmPrefill`
/// (`m2c_ssm_io`): `rows` is one per slot row for a step, the total token
/// count `T` for a prefill; all must have the same dtype.
pub const SsmIo = struct {
    /// `[rows, num_heads, head_dim]`.
    x: Input,
    /// `[rows, num_heads]`, before bias and softplus.
    dt: Input,
    /// `[rows, n_groups, state_size]`.
    B: Input,
    /// `[rows, n_groups, state_size]`.
    C: Input,
    /// Gate `[rows, num_heads, head_dim]`, or null for none.
    z: ?Input = null,
    /// Output `[rows, num_heads, head_dim]`; written only on success.
    y: Output,

    /// The C struct, from `m2c_ssm_io_init` (for `m2c.c` users).
    pub fn toC(self: SsmIo) c.m2c_ssm_io {
        var raw: c.m2c_ssm_io = undefined;
        c.m2c_ssm_io_init(&raw);
        raw.x = self.x.ptr();
        raw.x_len = self.x.len();
        raw.dt = self.dt.ptr();
        raw.dt_len = self.dt.len();
        raw.B = self.B.ptr();
        raw.B_len = self.B.len();
        raw.C = self.C.ptr();
        raw.C_len = self.C.len();
        if (self.z) |z| {
            raw.z = z.ptr();
            raw.z_len = z.len();
        }
        raw.y = self.y.ptr();
        raw.y_len = self.y.len();
        return raw;
    }

    /// The common dtype, or null if the buffers disagree.
    fn dtype(self: SsmIo) ?Dtype {
        const d = self.x.dtype();
        if (self.dt.dtype() != d or self.B.dtype() != d or self.C.dtype() != d or self.y.dtype() != d) return null;
        if (self.z) |z| if (z.dtype() != d) return null;
        return d;
    }
};

/// A buffer at an address the library uses during a kernel call but this
/// binding never dereferences: a `CUdeviceptr` for a cache created with
/// `device = M2C_DEVICE_CUDA` (whose kernel calls take device buffers), or,
/// on a host cache, any host memory that lives through the call.
pub const DeviceBuf = struct {
    /// 0 (with `len` 0) for none.
    addr: usize,
    /// Elements, not bytes.
    len: usize,
    dtype: Dtype = .f32,

    /// `len` f32 elements at `addr`.
    pub fn f32s(addr: usize, len: usize) DeviceBuf {
        return .{ .addr = addr, .len = len };
    }

    fn ptr(self: DeviceBuf) ?*anyopaque {
        return if (self.addr == 0) null else @ptrFromInt(self.addr);
    }

    /// The address of an f32 parameter array; a buffer of another dtype is
    /// refused (the C struct has no dtype for parameters).
    fn f32Ptr(self: DeviceBuf, diag: ?*Diagnostics, comptime what: []const u8) Error!?[*]const f32 {
        if (self.len != 0 and self.dtype != .f32)
            return refuse(diag, error.InvalidArg, what ++ " is {s}: parameter arrays are f32", .{@tagName(self.dtype)});
        // A misaligned address is the library's InvalidArg, never a
        // pointer cast that traps.
        if (self.addr % @alignOf(f32) != 0)
            return refuse(diag, error.InvalidArg, what ++ " ({x}) is not aligned to its 4-byte elements", .{self.addr});
        return if (self.addr == 0) null else @ptrFromInt(self.addr);
    }
};

/// `ConvArgs` for the device-buffer calls (`Cache.convStepDevice`,
/// `Cache.convPrefillDevice`): f32 buffers at device addresses.
pub const DeviceConvArgs = struct {
    /// `[conv_dim, conv_kernel_size]`, oldest tap first.
    weight: DeviceBuf,
    /// `[conv_dim]`, or null for none.
    bias: ?DeviceBuf = null,
    activation: Activation = .silu,

    fn toC(self: DeviceConvArgs, io_dtype: Dtype, diag: ?*Diagnostics) Error!c.m2c_conv_args {
        const host: ConvArgs = .{ .weight = &.{}, .activation = self.activation };
        var raw = host.toC(io_dtype);
        raw.weight = try self.weight.f32Ptr(diag, "weight");
        raw.weight_len = self.weight.len;
        if (self.bias) |b| {
            raw.bias = try b.f32Ptr(diag, "bias");
            raw.bias_len = b.len;
        }
        return raw;
    }
};

/// `SsmArgs` for the device-buffer calls: f32 buffers at device addresses.
pub const DeviceSsmArgs = struct {
    /// `[num_heads]`, already `-exp(A_log)`. Required.
    A: DeviceBuf,
    /// `[num_heads]` skip weights, or null for none.
    D: ?DeviceBuf = null,
    /// `[num_heads]` added to dt before softplus, or null for none.
    dt_bias: ?DeviceBuf = null,
    dt_softplus: bool = true,
    dt_clamp: bool = false,
    dt_min: f32 = 0,
    dt_max: f32 = std.math.inf(f32),

    fn toC(self: DeviceSsmArgs, io_dtype: Dtype, diag: ?*Diagnostics) Error!c.m2c_ssm_args {
        // The flags as the slice form sets them; then the device arrays.
        const host: SsmArgs = .{ .A = &.{}, .dt_softplus = self.dt_softplus, .dt_clamp = self.dt_clamp, .dt_min = self.dt_min, .dt_max = self.dt_max };
        var raw = host.toC(io_dtype);
        raw.A = try self.A.f32Ptr(diag, "A");
        raw.A_len = self.A.len;
        if (self.D) |d| {
            raw.D = try d.f32Ptr(diag, "D");
            raw.D_len = d.len;
        }
        if (self.dt_bias) |b| {
            raw.dt_bias = try b.f32Ptr(diag, "dt_bias");
            raw.dt_bias_len = b.len;
        }
        return raw;
    }
};

/// `SsmIo` with buffers at device addresses, all of one dtype.
pub const DeviceSsmIo = struct {
    x: DeviceBuf,
    dt: DeviceBuf,
    B: DeviceBuf,
    C: DeviceBuf,
    z: ?DeviceBuf = null,
    y: DeviceBuf,

    fn toC(self: DeviceSsmIo) c.m2c_ssm_io {
        var raw: c.m2c_ssm_io = undefined;
        c.m2c_ssm_io_init(&raw);
        raw.x = self.x.ptr();
        raw.x_len = self.x.len;
        raw.dt = self.dt.ptr();
        raw.dt_len = self.dt.len;
        raw.B = self.B.ptr();
        raw.B_len = self.B.len;
        raw.C = self.C.ptr();
        raw.C_len = self.C.len;
        if (self.z) |z| {
            raw.z = z.ptr();
            raw.z_len = z.len;
        }
        raw.y = self.y.ptr();
        raw.y_len = self.y.len;
        return raw;
    }

    fn dtype(self: DeviceSsmIo) ?Dtype {
        const d = self.x.dtype;
        if (self.dt.dtype != d or self.B.dtype != d or self.C.dtype != d or self.y.dtype != d) return null;
        if (self.z) |z| if (z.dtype != d) return null;
        return d;
    }
};

// The argument structs must still be the ones these wrappers fill in.
comptime {
    checkFields(c.m2c_conv_args, &.{ "struct_size", "io_dtype", "activation", "reserved", "weight", "weight_len", "bias", "bias_len" });
    checkFields(c.m2c_ssm_args, &.{ "struct_size", "io_dtype", "dt_softplus", "dt_clamp", "dt_min", "dt_max", "A", "A_len", "D", "D_len", "dt_bias", "dt_bias_len" });
    checkFields(c.m2c_ssm_io, &.{ "struct_size", "reserved", "x", "x_len", "dt", "dt_len", "B", "B_len", "C", "C_len", "z", "z_len", "y", "y_len" });
}

fn checkFields(comptime T: type, comptime names: []const []const u8) void {
    const fields = @typeInfo(T).@"struct".fields;
    if (fields.len != names.len) @compileError(@typeName(T) ++ " gained or lost fields: update the Zig wrapper");
    for (fields, names) |f, n| {
        if (!std.mem.eql(u8, f.name, n)) @compileError(@typeName(T) ++ "." ++ f.name ++ " is unexpected: update the Zig wrapper");
    }
}

fn ptrOrNull(comptime T: type, s: []const T) ?[*]const T {
    return if (s.len == 0) null else s.ptr;
}

// ---------------------------------------------------------------------------
// The cache
// ---------------------------------------------------------------------------

/// A Mamba2 state cache (an owned `m2c_cache` handle).
///
/// Slot selection: a `slots` argument of null addresses dense rows,
/// slots `0..n-1`; for calls with a buffer `n` is the buffer's length over
/// one slot's element count (a length that is not a multiple is left to the
/// library to refuse), for `reset`/`advance` it is every slot. Otherwise row
/// `i` addresses `slots[i]`, and a negative entry is a padding row (skipped
/// on writes, zeros on reads).
///
/// Threads: the methods may run concurrently on one cache, like the C
/// calls, except that a `Diagnostics` given to `init` is written by every
/// failing call: share a cache across threads with `diag == null` and read
/// `lastError()` on the failing thread instead. `deinit` must not race
/// anything.
/// The slot snapshot format a cache writes (`M2C_SNAPSHOT_FORMAT_*`).
pub const SnapshotFormat = enum(u32) {
    /// One XXH64 over the snapshot (the default; every release reads it).
    v1 = c.M2C_SNAPSHOT_FORMAT_1,
    /// The same layout with a checksum computed in parallel 1 MiB chunks.
    v2 = c.M2C_SNAPSHOT_FORMAT_2,
    _,
};

/// How a cache stores its conv windows (`M2C_CONV_LAYOUT_*`).
pub const ConvLayout = enum(u32) {
    /// `[conv_dim][conv_width]` per slot, oldest input first (the default).
    oldest_first = c.M2C_CONV_LAYOUT_OLDEST_FIRST,
    /// Column by column with a head per (layer, slot): a decode token
    /// writes one column. Same results, reads, snapshots and files.
    ring = c.M2C_CONV_LAYOUT_RING,
    _,
};

pub const Cache = struct {
    /// Null after `deinit`; a call then fails with `error.NullArg`.
    handle: ?*c.m2c_cache,
    diag: ?*Diagnostics,
    shape: Shape,

    /// The per-slot sizes of this cache, fixed at creation.
    pub const Shape = struct {
        num_slots: u32,
        /// Conv channels (one conv row).
        conv_dim: usize,
        conv_window_len: usize,
        ssm_state_len: usize,
        /// `num_heads * head_dim` (one row of x, z and y in `ssmStep`).
        ssm_x_len: usize,
    };

    /// Creates a cache (`m2c_create`) after checking that the loaded
    /// library's ABI version is the header's (`error.AbiMismatch`). Free it
    /// with `deinit`. `diag`, if given, must outlive the cache.
    pub fn init(cfg: Config, diag: ?*Diagnostics) Error!Cache {
        try checkAbi(abiVersion(), diag);
        const raw = cfg.toC();
        var handle: ?*c.m2c_cache = null;
        try call(diag, c.m2c_create(&raw, &handle));
        var self: Cache = .{ .handle = handle, .diag = diag, .shape = undefined };
        errdefer c.m2c_destroy(handle);
        const got = try self.getConfig();
        self.shape = .{
            .num_slots = got.num_slots,
            .conv_dim = got.convDim(),
            .conv_window_len = got.convWindowLen(),
            .ssm_state_len = got.ssmStateLen(),
            .ssm_x_len = @as(usize, got.num_heads) * got.head_dim,
        };
        return self;
    }

    /// Frees the cache (`m2c_destroy`). Idempotent: the handle is cleared,
    /// and later calls on this `Cache` fail with `error.NullArg`. Views
    /// become invalid.
    pub fn deinit(self: *Cache) void {
        c.m2c_destroy(self.handle);
        self.handle = null;
    }

    /// Where later failures are recorded (null: nowhere).
    pub fn setDiagnostics(self: *Cache, diag: ?*Diagnostics) void {
        self.diag = diag;
    }

    /// The cache's configuration (`m2c_get_config`).
    pub fn getConfig(self: *const Cache) Error!Config {
        var raw: c.m2c_config = undefined;
        c.m2c_config_init(&raw);
        try call(self.diag, c.m2c_get_config(self.handle, &raw));
        return Config.fromC(raw);
    }

    /// Pushes one new conv input per row into the windows of `layer`
    /// (`m2c_update_conv`): `x` is `[rows, conv_dim]`.
    pub fn updateConv(self: *Cache, layer: u32, slots: ?[]const i32, x: Input) Error!void {
        const r = rows(slots, x.len(), self.shape.conv_dim);
        try call(self.diag, c.m2c_update_conv(self.handle, layer, r.ptr, r.n, x.ptr(), @intFromEnum(x.dtype()), x.len()));
    }

    /// Replaces whole conv windows of `layer` (`m2c_set_conv`): `window` is
    /// `[rows, conv_dim, conv_width]`.
    pub fn setConv(self: *Cache, layer: u32, slots: ?[]const i32, window: Input) Error!void {
        const r = rows(slots, window.len(), self.shape.conv_window_len);
        try call(self.diag, c.m2c_set_conv(self.handle, layer, r.ptr, r.n, window.ptr(), @intFromEnum(window.dtype()), window.len()));
    }

    /// Replaces whole SSM states of `layer` (`m2c_set_ssm`): `state` is
    /// `[rows, num_heads, head_dim, state_size]`.
    pub fn setSsm(self: *Cache, layer: u32, slots: ?[]const i32, state: Input) Error!void {
        const r = rows(slots, state.len(), self.shape.ssm_state_len);
        try call(self.diag, c.m2c_set_ssm(self.handle, layer, r.ptr, r.n, state.ptr(), @intFromEnum(state.dtype()), state.len()));
    }

    /// `setSsm` under its first name (`m2c_update_ssm`): it replaces
    /// states. Deprecated: use `setSsm`.
    pub fn updateSsm(self: *Cache, layer: u32, slots: ?[]const i32, state: Input) Error!void {
        const r = rows(slots, state.len(), self.shape.ssm_state_len);
        try call(self.diag, c.m2c_update_ssm(self.handle, layer, r.ptr, r.n, state.ptr(), @intFromEnum(state.dtype()), state.len()));
    }

    /// Copies conv windows of `layer` into `out` (`m2c_read_conv`),
    /// `[rows, conv_dim, conv_width]`, converting to `out`'s dtype.
    pub fn readConv(self: *const Cache, layer: u32, slots: ?[]const i32, out: Output) Error!void {
        const r = rows(slots, out.len(), self.shape.conv_window_len);
        try call(self.diag, c.m2c_read_conv(self.handle, layer, r.ptr, r.n, out.ptr(), @intFromEnum(out.dtype()), out.len()));
    }

    /// Copies SSM states of `layer` into `out` (`m2c_read_ssm`),
    /// `[rows, num_heads, head_dim, state_size]`.
    pub fn readSsm(self: *const Cache, layer: u32, slots: ?[]const i32, out: Output) Error!void {
        const r = rows(slots, out.len(), self.shape.ssm_state_len);
        try call(self.diag, c.m2c_read_ssm(self.handle, layer, r.ptr, r.n, out.ptr(), @intFromEnum(out.dtype()), out.len()));
    }

    /// Zeroes the selected slots in every layer and sets their positions
    /// to 0 (`m2c_reset`); null resets every slot.
    pub fn reset(self: *Cache, slots: ?[]const i32) Error!void {
        const r = rows(slots, self.shape.num_slots, 1);
        try call(self.diag, c.m2c_reset(self.handle, r.ptr, r.n));
    }

    /// Adds `num_tokens` to the positions of the selected slots
    /// (`m2c_advance`); null advances every slot.
    pub fn advance(self: *Cache, slots: ?[]const i32, num_tokens: u32) Error!void {
        const r = rows(slots, self.shape.num_slots, 1);
        try call(self.diag, c.m2c_advance(self.handle, r.ptr, r.n, num_tokens));
    }

    /// Tokens `slot` has consumed (`m2c_position`).
    pub fn position(self: *const Cache, slot: i32) Error!u64 {
        var out: u64 = 0;
        try call(self.diag, c.m2c_position(self.handle, slot, &out));
        return out;
    }

    /// Declares checkpoints to capture inside the prefill calls that follow,
    /// for `store` (`m2c_capture_begin`), replacing any earlier ones; an empty list
    /// cancels. Each is a slot's state after `tokens` more prompt tokens.
    pub fn captureBegin(self: *Cache, store: *Store, points: []const CapturePoint) Error!void {
        try call(self.diag, c.m2c_capture_begin(self.handle, store.handle, if (points.len == 0) null else points.ptr, points.len));
    }

    /// Puts the declared points into `store` (`m2c_capture_end`): `misses`
    /// has one entry per point and receives `.none` or `.too_large`.
    pub fn captureEnd(self: *Cache, store: *Store, misses: []Miss) Error!void {
        const p: ?[*]c.m2c_miss = if (misses.len == 0) null else @ptrCast(misses.ptr);
        try call(self.diag, c.m2c_capture_end(self.handle, store.handle, p, misses.len));
    }

    /// The arenas of the cache's state (`m2c_arenas`: two per layer, conv
    /// then SSM) into `out`; the filled part. `error.ShapeMismatch` when
    /// `out` is shorter than `2 * num_layers`.
    pub fn arenas(self: *const Cache, out: []Arena) Error![]Arena {
        var n: usize = 0;
        try call(self.diag, c.m2c_arenas(self.handle, if (out.len == 0) null else out.ptr, out.len, &n));
        return out[0..n];
    }

    /// The checksum `m2c_slot_save` would write for `slot`: a digest of its
    /// state and position (`m2c_slot_digest`).
    pub fn slotDigest(self: *const Cache, slot: i32) Error!u64 {
        var d: u64 = 0;
        try call(self.diag, c.m2c_slot_digest(self.handle, slot, &d));
        return d;
    }

    /// The byte runs of the state of `slots` (`m2c_slot_regions`: per slot
    /// and layer, conv window then SSM state) into `out`; the filled part.
    pub fn slotRegions(self: *const Cache, slots: []const i32, out: []Region) Error![]Region {
        var n: usize = 0;
        const sp: ?[*]const i32 = if (slots.len == 0) null else slots.ptr;
        try call(self.diag, c.m2c_slot_regions(self.handle, sp, slots.len, if (out.len == 0) null else out.ptr, out.len, &n));
        return out[0..n];
    }

    /// Switches how the cache stores its conv windows, converting them in
    /// place (`m2c_set_conv_layout`); `readConv` returns the same windows
    /// after it. The ring layout is for host caches only
    /// (`error.Unsupported` on a device cache).
    pub fn setConvLayout(self: *Cache, layout: ConvLayout) Error!void {
        try call(self.diag, c.m2c_set_conv_layout(self.handle, @intFromEnum(layout)));
    }

    /// Sets the snapshot format `slotSave` writes and `slotDigest` reports
    /// (`m2c_set_snapshot_format`); `slotLoad` reads both.
    pub fn setSnapshotFormat(self: *Cache, fmt: SnapshotFormat) Error!void {
        try call(self.diag, c.m2c_set_snapshot_format(self.handle, @intFromEnum(fmt)));
    }

    /// The snapshot format `slotSave` writes (`m2c_get_snapshot_format`).
    pub fn snapshotFormat(self: *const Cache) Error!SnapshotFormat {
        var out: c.m2c_snapshot_format = 0;
        try call(self.diag, c.m2c_get_snapshot_format(self.handle, &out));
        return @enumFromInt(out);
    }

    /// How the cache stores its conv windows (`m2c_get_conv_layout`).
    pub fn convLayout(self: *const Cache) Error!ConvLayout {
        var out: c.m2c_conv_layout = 0;
        try call(self.diag, c.m2c_get_conv_layout(self.handle, &out));
        return @enumFromInt(out);
    }

    /// Per slot of `layer`, the physical column of its conv window holding
    /// the oldest input (`m2c_conv_heads`), into `out` (at least
    /// `num_slots` entries); returns the filled part. With `convView`,
    /// input `k` of slot `s` is at column `(heads[s] + k) % conv_width` in
    /// the ring layout; all zero in the oldest-first layout.
    pub fn convHeads(self: *const Cache, layer: u32, out: []u32) Error![]u32 {
        try call(self.diag, c.m2c_conv_heads(self.handle, layer, if (out.len == 0) null else out.ptr, out.len));
        return out[0..self.shape.num_slots];
    }

    /// A zero-copy view of the conv storage of `layer` (`m2c_conv_view`).
    pub fn convView(self: *Cache, layer: u32) Error!Tensor {
        var t: c.m2c_tensor = undefined;
        try call(self.diag, c.m2c_conv_view(self.handle, layer, &t));
        return Tensor.fromC(t, self.diag);
    }

    /// A zero-copy view of the SSM storage of `layer` (`m2c_ssm_view`).
    pub fn ssmView(self: *Cache, layer: u32) Error!Tensor {
        var t: c.m2c_tensor = undefined;
        try call(self.diag, c.m2c_ssm_view(self.handle, layer, &t));
        return Tensor.fromC(t, self.diag);
    }

    /// One decode token through the causal conv of `layer`, in place
    /// (`m2c_conv_step`): `x[row]` (`[rows, conv_dim]`) is pushed into the
    /// slot's window and `out[row]` receives the activated conv output.
    /// `x` and `out` must have the same dtype (else `error.InvalidArg`,
    /// refused by the binding). Positions are not advanced.
    pub fn convStep(self: *Cache, layer: u32, slots: ?[]const i32, x: Input, out: Output, args: ConvArgs) Error!void {
        if (x.dtype() != out.dtype())
            return refuse(self.diag, error.InvalidArg, "convStep: x is {s} but out is {s}", .{ @tagName(x), @tagName(out) });
        const raw = args.toC(x.dtype());
        const r = rows(slots, x.len(), self.shape.conv_dim);
        try call(self.diag, c.m2c_conv_step(self.handle, layer, r.ptr, r.n, x.ptr(), x.len(), out.ptr(), out.len(), &raw));
    }

    /// One decode token through the selective-state update of `layer`, in
    /// place (`m2c_ssm_step`); rows as for the other calls, counted from
    /// `io.x` when `slots` is null. Every buffer in `io` must have the same
    /// dtype (else `error.InvalidArg`, refused by the binding). Positions
    /// are not advanced.
    pub fn ssmStep(self: *Cache, layer: u32, slots: ?[]const i32, io: SsmIo, args: SsmArgs) Error!void {
        const dt = io.dtype() orelse
            return refuse(self.diag, error.InvalidArg, "ssmStep: the buffers of io differ in dtype", .{});
        const raw_io = io.toC();
        const raw_args = args.toC(dt);
        const r = rows(slots, io.x.len(), self.shape.ssm_x_len);
        try call(self.diag, c.m2c_ssm_step(self.handle, layer, r.ptr, r.n, &raw_io, &raw_args));
    }

    /// Prefill, or one chunk of a chunked prefill, through the causal conv
    /// of `layer`, in place (`m2c_conv_prefill`). Sequence `i` of the batch
    /// is slot `slots[i]` (a negative entry is a padding sequence, whose
    /// output rows are written as zeros and whose window is untouched) and
    /// owns token rows `cu_seqlens[i]..cu_seqlens[i + 1]` of `x` and `out`
    /// (each `[T, conv_dim]`, `T = cu_seqlens[n]`). With `slots == null`
    /// there are `cu_seqlens.len - 1` sequences, on slots `0..n-1`.
    /// `cu_seqlens` holds one offset more than there are sequences
    /// (`error.ShapeMismatch` otherwise), starts at 0 and never decreases
    /// (`error.InvalidArg` otherwise); a sequence may be empty. Each
    /// sequence runs in order from its slot's current window, so the result
    /// is bit-identical to `T` calls of `convStep` and any chunking of a
    /// prompt gives the same outputs and windows. `x` and `out` must have
    /// the same dtype (else `error.InvalidArg`, refused by the binding).
    /// Positions are not advanced. An empty `cu_seqlens` goes to C as NULL,
    /// which the library refuses with `error.NullArg`.
    pub fn convPrefill(self: *Cache, layer: u32, slots: ?[]const i32, cu_seqlens: []const u64, x: Input, out: Output, args: ConvArgs) Error!void {
        if (x.dtype() != out.dtype())
            return refuse(self.diag, error.InvalidArg, "convPrefill: x is {s} but out is {s}", .{ @tagName(x), @tagName(out) });
        const raw = args.toC(x.dtype());
        const s = sequences(slots, cu_seqlens);
        try call(self.diag, c.m2c_conv_prefill(self.handle, layer, s.ptr, s.n, ptrOrNull(u64, cu_seqlens), cu_seqlens.len, x.ptr(), x.len(), out.ptr(), out.len(), &raw));
    }

    /// Prefill, or one chunk of a chunked prefill, through the
    /// selective-state update of `layer`, in place (`m2c_ssm_prefill`): the
    /// exact recurrence of `ssmStep` over many tokens. Sequences, `slots`
    /// and `cu_seqlens` as for `convPrefill`; the buffers of `io` hold
    /// `T = cu_seqlens[n]` token rows. Each sequence starts from its slot's
    /// cached state and leaves the state after its last token there;
    /// padding sequences keep their state and get zero `y` rows.
    /// Bit-identical to `T` calls of `ssmStep`. Every buffer in `io` must
    /// have the same dtype (else `error.InvalidArg`, refused by the
    /// binding). Positions are not advanced. A call without tokens
    /// (`T == 0`) passes empty buffers as NULL, which the library refuses
    /// with `error.NullArg` (as for `ssmStep` with no rows).
    pub fn ssmPrefill(self: *Cache, layer: u32, slots: ?[]const i32, cu_seqlens: []const u64, io: SsmIo, args: SsmArgs) Error!void {
        const dt = io.dtype() orelse
            return refuse(self.diag, error.InvalidArg, "ssmPrefill: the buffers of io differ in dtype", .{});
        const raw_io = io.toC();
        const raw_args = args.toC(dt);
        const s = sequences(slots, cu_seqlens);
        try call(self.diag, c.m2c_ssm_prefill(self.handle, layer, s.ptr, s.n, ptrOrNull(u64, cu_seqlens), cu_seqlens.len, &raw_io, &raw_args));
    }

    /// Reserves the speculative-decoding log for runs of up to `max_tokens`
    /// tokens per slot (the last sampled token plus its drafts, or a draft
    /// tree's nodes), in every slot and layer; 0 frees it
    /// (`m2c_spec_reserve`). Ends the current round. `error.OutOfRange`
    /// above 4096; `error.Unsupported` on a device cache.
    pub fn specReserve(self: *Cache, max_tokens: u32) Error!void {
        try call(self.diag, c.m2c_spec_reserve(self.handle, max_tokens));
    }

    /// Starts a speculative round (`m2c_spec_begin`): sequence `i` (slot
    /// `slots[i]`, or with null slots slot `i`; negative: padding)
    /// verifies token rows `cu_seqlens[i]..cu_seqlens[i + 1]` of every
    /// later `convVerify` / `ssmVerify`. `parents` (null: chains) gives
    /// each token row its parent within its run (-1: the committed state),
    /// making the runs trees. Replaces any earlier round; a slot changed
    /// before it is committed leaves the round.
    pub fn specBegin(self: *Cache, slots: ?[]const i32, cu_seqlens: []const u64, parents: ?[]const i32) Error!void {
        const s = sequences(slots, cu_seqlens);
        const p: ?[*]const i32 = if (parents) |ps| (if (ps.len == 0) null else ps.ptr) else null;
        const plen: usize = if (parents) |ps| ps.len else 0;
        try call(self.diag, c.m2c_spec_begin(self.handle, s.ptr, s.n, ptrOrNull(u64, cu_seqlens), cu_seqlens.len, p, plen));
    }

    /// Verifies the current round through the causal conv of `layer`
    /// (`m2c_conv_verify`): `x` and `out` hold one row per token of the
    /// round; each token's output is bit-identical to `convStep` along its
    /// path from the slot's committed window, which is not changed.
    pub fn convVerify(self: *Cache, layer: u32, x: Input, out: Output, args: ConvArgs) Error!void {
        if (x.dtype() != out.dtype())
            return refuse(self.diag, error.InvalidArg, "convVerify: x is {s} but out is {s}", .{ @tagName(x), @tagName(out) });
        const raw = args.toC(x.dtype());
        try call(self.diag, c.m2c_conv_verify(self.handle, layer, x.ptr(), x.len(), out.ptr(), out.len(), &raw));
    }

    /// Verifies the current round through the selective-state update of
    /// `layer` (`m2c_ssm_verify`): the buffers of `io` hold one row per
    /// token of the round; each token's `y` is bit-identical to `ssmStep`
    /// along its path from the slot's committed state, which is not changed.
    pub fn ssmVerify(self: *Cache, layer: u32, io: SsmIo, args: SsmArgs) Error!void {
        const dt = io.dtype() orelse
            return refuse(self.diag, error.InvalidArg, "ssmVerify: the buffers of io differ in dtype", .{});
        const raw_io = io.toC();
        const raw_args = args.toC(dt);
        try call(self.diag, c.m2c_ssm_verify(self.handle, layer, &raw_io, &raw_args));
    }

    /// Commits the current round for the listed slots (`m2c_spec_commit`;
    /// null slots: slots `0..accepted.len`): `accepted[i]` tokens of slot
    /// `slots[i]`'s run (for a tree, the path to token `accepted[i] - 1`)
    /// become its state in every layer, bit-identical to stepping them, and
    /// its position advances by that path's length; 0 just ends the run.
    /// All or nothing. `slots` and `accepted` of different lengths are
    /// `error.ShapeMismatch` (refused by the binding).
    pub fn specCommit(self: *Cache, slots: ?[]const i32, accepted: []const u32) Error!void {
        if (slots) |s| if (s.len != accepted.len)
            return refuse(self.diag, error.ShapeMismatch, "specCommit: {d} slots but {d} accepted counts", .{ s.len, accepted.len });
        const sp: ?[*]const i32 = if (slots) |s| (if (s.len == 0) null else s.ptr) else null;
        try call(self.diag, c.m2c_spec_commit(self.handle, sp, accepted.len, ptrOrNull(u32, accepted)));
    }

    /// `convStep` on buffers at device addresses, the form the kernel
    /// calls of a `M2C_DEVICE_CUDA` cache take (`x`, `out` and the weights
    /// in device memory of the cache's GPU). On such a cache the call
    /// returns once the kernel is queued on the cache's stream
    /// (`setStream`), and an address CUDA does not know, or an array that
    /// runs past its allocation, is `error.InvalidArg` before anything
    /// runs. A parameter buffer that is not f32, or `x` and `out` of
    /// different dtypes, is `error.InvalidArg` (refused by the binding).
    pub fn convStepDevice(self: *Cache, layer: u32, slots: ?[]const i32, x: DeviceBuf, out: DeviceBuf, args: DeviceConvArgs) Error!void {
        if (x.dtype != out.dtype)
            return refuse(self.diag, error.InvalidArg, "convStepDevice: x is {s} but out is {s}", .{ @tagName(x.dtype), @tagName(out.dtype) });
        const raw = try args.toC(x.dtype, self.diag);
        const r = rows(slots, x.len, self.shape.conv_dim);
        try call(self.diag, c.m2c_conv_step(self.handle, layer, r.ptr, r.n, x.ptr(), x.len, out.ptr(), out.len, &raw));
    }

    /// `ssmStep` on device buffers (see `convStepDevice`).
    pub fn ssmStepDevice(self: *Cache, layer: u32, slots: ?[]const i32, io: DeviceSsmIo, args: DeviceSsmArgs) Error!void {
        const dt = io.dtype() orelse
            return refuse(self.diag, error.InvalidArg, "ssmStepDevice: the buffers of io differ in dtype", .{});
        const raw_io = io.toC();
        const raw_args = try args.toC(dt, self.diag);
        const r = rows(slots, io.x.len, self.shape.ssm_x_len);
        try call(self.diag, c.m2c_ssm_step(self.handle, layer, r.ptr, r.n, &raw_io, &raw_args));
    }

    /// `convPrefill` on device buffers (see `convStepDevice`); `slots` and
    /// `cu_seqlens` stay in host memory.
    pub fn convPrefillDevice(self: *Cache, layer: u32, slots: ?[]const i32, cu_seqlens: []const u64, x: DeviceBuf, out: DeviceBuf, args: DeviceConvArgs) Error!void {
        if (x.dtype != out.dtype)
            return refuse(self.diag, error.InvalidArg, "convPrefillDevice: x is {s} but out is {s}", .{ @tagName(x.dtype), @tagName(out.dtype) });
        const raw = try args.toC(x.dtype, self.diag);
        const s = sequences(slots, cu_seqlens);
        try call(self.diag, c.m2c_conv_prefill(self.handle, layer, s.ptr, s.n, ptrOrNull(u64, cu_seqlens), cu_seqlens.len, x.ptr(), x.len, out.ptr(), out.len, &raw));
    }

    /// `ssmPrefill` on device buffers (see `convStepDevice`).
    pub fn ssmPrefillDevice(self: *Cache, layer: u32, slots: ?[]const i32, cu_seqlens: []const u64, io: DeviceSsmIo, args: DeviceSsmArgs) Error!void {
        const dt = io.dtype() orelse
            return refuse(self.diag, error.InvalidArg, "ssmPrefillDevice: the buffers of io differ in dtype", .{});
        const raw_io = io.toC();
        const raw_args = try args.toC(dt, self.diag);
        const s = sequences(slots, cu_seqlens);
        try call(self.diag, c.m2c_ssm_prefill(self.handle, layer, s.ptr, s.n, ptrOrNull(u64, cu_seqlens), cu_seqlens.len, &raw_io, &raw_args));
    }

    /// The CUDA stream (`CUstream` / `cudaStream_t`; null for the legacy
    /// default stream) on which a `M2C_DEVICE_CUDA` cache queues its work
    /// from now on (`m2c_set_stream`): kernel calls are queued there,
    /// copy-style calls transfer there and wait for it. It first waits for
    /// the work queued on the previous stream. Keep the stream alive until
    /// another is set or the cache is freed (`deinit` waits for it). A host
    /// cache takes no stream: null is accepted and does nothing, anything
    /// else is `error.Unsupported`.
    pub fn setStream(self: *Cache, stream: ?*anyopaque) Error!void {
        try call(self.diag, c.m2c_set_stream(self.handle, stream));
    }

    /// A one-line summary of the cache (`m2c_describe`) into `buf`; returns
    /// the text (without the NUL). `error.ShapeMismatch` when `buf` is too
    /// small (512 bytes always suffice).
    pub fn describe(self: *const Cache, buf: []u8) Error![]const u8 {
        var needed: usize = 0;
        try call(self.diag, c.m2c_describe(self.handle, if (buf.len == 0) null else buf.ptr, buf.len, &needed));
        return buf[0 .. needed - 1];
    }

    /// `std.fmt` support: `{f}` prints the `describe` summary.
    pub fn format(self: *const Cache, w: *std.Io.Writer) std.Io.Writer.Error!void {
        var buf: [512]u8 = undefined;
        const text = self.describe(&buf) catch return w.writeAll("m2c cache (describe failed)");
        try w.writeAll(text);
    }

    /// Sets how many threads the calls that follow may use
    /// (`m2c_set_num_threads`): 0 (the default) m2c's pool, 1 the calling
    /// thread only (no other thread runs work of this cache), `n` at most
    /// `n` threads. Results do not depend on it.
    pub fn setNumThreads(self: *Cache, n: u32) Error!void {
        try call(self.diag, c.m2c_set_num_threads(self.handle, n));
    }

    /// Hands out the lowest free slot, zeroed (`m2c_slot_acquire`);
    /// `error.NoFreeSlot` when all are in use.
    pub fn slotAcquire(self: *Cache) Error!i32 {
        var slot: i32 = -1;
        try call(self.diag, c.m2c_slot_acquire(self.handle, &slot));
        return slot;
    }

    /// Returns `slot` to the free list (`m2c_slot_release`); releasing a
    /// slot that is not in use is `error.InvalidArg`.
    pub fn slotRelease(self: *Cache, slot: i32) Error!void {
        try call(self.diag, c.m2c_slot_release(self.handle, slot));
    }

    /// The number of acquired slots (`m2c_slots_in_use`).
    pub fn slotsInUse(self: *const Cache) Error!u32 {
        var n: u32 = 0;
        try call(self.diag, c.m2c_slots_in_use(self.handle, &n));
        return n;
    }

    /// The number of NaN and infinite elements in the state of `slot`, its
    /// conv windows and SSM states in every layer (`m2c_count_nonfinite`):
    /// 0 means the sequence is numerically healthy. A non-finite input stays
    /// in the slot it entered and is carried forward by the recurrence until
    /// the slot is reset or reloaded. A read: it works on a poisoned cache.
    pub fn countNonfinite(self: *const Cache, slot: i32) Error!u64 {
        var n: u64 = 0;
        try call(self.diag, c.m2c_count_nonfinite(self.handle, slot, &n));
        return n;
    }

    /// `countNonfinite` under its first name (`m2c_check_finite`): it
    /// returns a count. Deprecated: use `countNonfinite`.
    pub fn checkFinite(self: *const Cache, slot: i32) Error!u64 {
        var n: u64 = 0;
        try call(self.diag, c.m2c_check_finite(self.handle, slot, &n));
        return n;
    }

    /// Slot `dst[i]` receives the state and position of `src[i]`, as if all
    /// reads happened first (`m2c_copy_slots`). `src` and `dst` must have
    /// the same length (else `error.ShapeMismatch`, refused by the binding).
    pub fn copySlots(self: *Cache, src: []const i32, dst: []const i32) Error!void {
        if (src.len != dst.len)
            return refuse(self.diag, error.ShapeMismatch, "copySlots: src has {d} entries, dst {d}", .{ src.len, dst.len });
        const n = src.len;
        try call(self.diag, c.m2c_copy_slots(self.handle, if (n == 0) null else src.ptr, if (n == 0) null else dst.ptr, n));
    }

    /// The exact size in bytes of one slot's snapshot
    /// (`m2c_slot_snapshot_size`).
    pub fn slotSnapshotSize(self: *const Cache) Error!usize {
        var n: usize = 0;
        try call(self.diag, c.m2c_slot_snapshot_size(self.handle, &n));
        return n;
    }

    /// Saves a snapshot of `slot` into `buf` (at least `slotSnapshotSize()`
    /// bytes, else `error.ShapeMismatch`) and returns the written prefix.
    pub fn slotSave(self: *const Cache, slot: i32, buf: []u8) Error![]u8 {
        var written: usize = 0;
        try call(self.diag, c.m2c_slot_save(self.handle, slot, if (buf.len == 0) null else buf.ptr, buf.len, &written));
        return buf[0..written];
    }

    /// Saves a snapshot of `slot` into new memory from `gpa`; the caller
    /// frees it with `gpa.free`.
    pub fn slotSaveAlloc(self: *const Cache, gpa: std.mem.Allocator, slot: i32) Error![]u8 {
        const size = try self.slotSnapshotSize();
        const buf = gpa.alloc(u8, size) catch
            return refuse(self.diag, error.OutOfMemory, "slotSaveAlloc: cannot allocate {d} bytes", .{size});
        errdefer gpa.free(buf);
        const written = (try self.slotSave(slot, buf)).len;
        if (written == buf.len) return buf;
        return gpa.realloc(buf, written) catch
            return refuse(self.diag, error.OutOfMemory, "slotSaveAlloc: cannot shrink to {d} bytes", .{written});
    }

    /// Replaces the state and position of `slot` with a snapshot from
    /// `slotSave` (`m2c_slot_load`); a damaged or foreign snapshot is
    /// `error.Corrupt` / `error.Incompatible` and changes nothing.
    pub fn slotLoad(self: *Cache, slot: i32, snapshot: []const u8) Error!void {
        try call(self.diag, c.m2c_slot_load(self.handle, slot, if (snapshot.len == 0) null else snapshot.ptr, snapshot.len));
    }

    /// Saves the whole cache to the file `path` (`m2c_save_file`). The path
    /// is copied to a NUL-terminated buffer; one with a NUL byte or longer
    /// than `std.fs.max_path_bytes` is `error.InvalidArg`.
    pub fn saveFile(self: *const Cache, path: []const u8) Error!void {
        var buf: PathBuf = undefined;
        return self.saveFileZ(try pathZ(self.diag, path, &buf));
    }

    pub fn saveFileZ(self: *const Cache, path: [:0]const u8) Error!void {
        try call(self.diag, c.m2c_save_file(self.handle, path.ptr));
    }

    /// Replaces every slot from a file written by `saveFile`
    /// (`m2c_load_file`). A missing file is `error.Io` with the OS error in
    /// the message; a damaged or foreign one changes nothing.
    pub fn loadFile(self: *Cache, path: []const u8) Error!void {
        var buf: PathBuf = undefined;
        return self.loadFileZ(try pathZ(self.diag, path, &buf));
    }

    pub fn loadFileZ(self: *Cache, path: [:0]const u8) Error!void {
        try call(self.diag, c.m2c_load_file(self.handle, path.ptr));
    }
};

// ---------------------------------------------------------------------------
// The prefix store
// ---------------------------------------------------------------------------

/// A 128-bit prefix-store key (`m2c_key`: `lo`, `hi`).
pub const Key = c.m2c_key;

/// The key of a block of token ids after the block keyed `prev` (null: a
/// prompt's first block), `m2c_key_chain`; the hash never changes across
/// releases.
pub fn chainKey(prev: ?Key, tokens: []const i32) Error!Key {
    var out: Key = undefined;
    const p: ?*const Key = if (prev) |*k| k else null;
    try call(null, c.m2c_key_chain(p, if (tokens.len == 0) null else tokens.ptr, tokens.len, &out));
    return out;
}

/// One allocation of a cache's state (`m2c_arena`: `base`, `len`, `device`,
/// `device_index`).
pub const Arena = c.m2c_arena;

/// A run of one slot's state (`m2c_region`: `slot`, `arena`, `offset`,
/// `len`, `image_offset` in the slot's snapshot).
pub const Region = c.m2c_region;

/// What one rank of a tensor-parallel layout holds (`m2c_shard`: heads,
/// groups, `groups_replicated`, the full conv channels of its `x`/`b`/`c`
/// sections as half-open ranges, and `snapshot_bytes`).
pub const Shard = c.m2c_shard;

/// One run of a resharding plan (`m2c_reshard_copy`: `src_rank`,
/// `dst_rank`, `src_offset`, `dst_offset`, `len` in slot snapshot images).
pub const ReshardCopy = c.m2c_reshard_copy;

/// The config of rank `rank` of a `tp_size`-way tensor-parallel layout of
/// `full`, and what it holds (`m2c_shard_config`): heads split evenly,
/// groups split evenly or, with fewer groups than ranks, replicated.
pub fn shardConfig(full: Config, tp_size: u32, rank: u32, diag: ?*Diagnostics) Error!struct { config: Config, shard: Shard } {
    const raw = full.toC();
    var out: c.m2c_config = undefined;
    c.m2c_config_init(&out);
    var sh: Shard = undefined;
    c.m2c_shard_init(&sh);
    try call(diag, c.m2c_shard_config(&raw, tp_size, rank, &out, &sh));
    return .{ .config = Config.fromC(out), .shard = sh };
}

/// The runs moving one slot's state from the `tp_src` ranks of a layout of
/// `full` to its `tp_dst` ranks, into `out` (`m2c_reshard_plan`); returns
/// the filled prefix. `out` shorter than the plan is `error.ShapeMismatch`
/// (an empty `out` asks nothing: use `reshardPlanLen` first).
pub fn reshardPlan(full: Config, tp_src: u32, tp_dst: u32, out: []ReshardCopy, diag: ?*Diagnostics) Error![]ReshardCopy {
    const raw = full.toC();
    var n: usize = 0;
    try call(diag, c.m2c_reshard_plan(&raw, tp_src, tp_dst, if (out.len == 0) null else out.ptr, out.len, &n));
    return out[0..n];
}

/// The number of runs of `reshardPlan` (`m2c_reshard_plan` with no array).
pub fn reshardPlanLen(full: Config, tp_src: u32, tp_dst: u32, diag: ?*Diagnostics) Error!usize {
    const raw = full.toC();
    var n: usize = 0;
    try call(diag, c.m2c_reshard_plan(&raw, tp_src, tp_dst, null, 0, &n));
    return n;
}

/// Reshards one slot's snapshots (`m2c_snapshot_reshard`): `src[r]` is rank
/// `r`'s snapshot under a `src.len`-way layout of `full`, `dst[r]` receives
/// rank `r`'s under a `dst.len`-way layout (each exactly its rank's
/// `Shard.snapshot_bytes`). Nothing is written unless every source checks.
pub fn reshardSnapshots(full: Config, src: []const []const u8, dst: []const []u8, diag: ?*Diagnostics) Error!void {
    const max = 64;
    if (src.len > max or dst.len > max) return refuse(diag, error.InvalidArg, "at most {d} ranks per side", .{max});
    var sp: [max]?*const anyopaque = undefined;
    var sl: [max]usize = undefined;
    var dp: [max]?*anyopaque = undefined;
    var dl: [max]usize = undefined;
    for (src, 0..) |b, i| {
        sp[i] = if (b.len == 0) null else b.ptr;
        sl[i] = b.len;
    }
    for (dst, 0..) |b, i| {
        dp[i] = if (b.len == 0) null else b.ptr;
        dl[i] = b.len;
    }
    const raw = full.toC();
    try call(diag, c.m2c_snapshot_reshard(&raw, @intCast(src.len), &sp, &sl, @intCast(dst.len), &dp, &dl));
}

/// A checkpoint to capture inside prefills (`m2c_capture_point`: `slot`,
/// `tokens`, `key`).
pub const CapturePoint = c.m2c_capture_point;

/// Why a key has no usable checkpoint (`M2C_MISS_*`). Non-exhaustive.
pub const Miss = enum(i32) {
    none = c.M2C_MISS_NONE,
    never_stored = c.M2C_MISS_NEVER_STORED,
    evicted = c.M2C_MISS_EVICTED,
    too_large = c.M2C_MISS_TOO_LARGE,
    incompatible = c.M2C_MISS_INCOMPATIBLE,
    corrupt = c.M2C_MISS_CORRUPT,
    _,

    /// The library's description (`m2c_miss_str`).
    pub fn str(m: Miss) [:0]const u8 {
        return std.mem.span(c.m2c_miss_str(@intFromEnum(m)));
    }
};

/// Options of `Store.init`; null fields take the library's defaults
/// (`m2c_store_config_init`: 1 GiB, 65536 remembered misses).
pub const StoreConfig = struct {
    budget_bytes: ?u64 = null,
    remember_misses: ?u64 = null,
    tier: Tier = .full,
    /// The disk tier: an existing directory for checkpoints evicted for
    /// room (null: none).
    spill_dir: ?[*:0]const u8 = null,
};

/// The precision a store keeps SSM states in (`M2C_TIER_*`).
pub const Tier = enum(u32) {
    full = c.M2C_TIER_FULL,
    bf16 = c.M2C_TIER_BF16,
    int8 = c.M2C_TIER_INT8,
    _,
};

/// What `Store.lookup` found: `blocks` leading blocks covered
/// (`keys[blocks - 1]` is the checkpoint to restore) and why the next one
/// is not (`.none` when all are).
pub const Lookup = struct { blocks: usize, miss: Miss };

/// A prefix store (`m2c_store`): checkpoints of slots under 128-bit keys,
/// within a memory budget, shared by any caches of one shape. Thread-safe,
/// except `deinit`.
pub const Store = struct {
    /// Null after `deinit`; a call then fails with `error.NullArg`.
    handle: ?*c.m2c_store,
    diag: ?*Diagnostics,

    /// An empty store (`m2c_store_create`).
    pub fn init(cfg: StoreConfig, diag: ?*Diagnostics) Error!Store {
        var raw: c.m2c_store_config = undefined;
        c.m2c_store_config_init(&raw);
        if (cfg.budget_bytes) |b| raw.budget_bytes = b;
        if (cfg.remember_misses) |r| raw.remember_misses = r;
        raw.tier = @intFromEnum(cfg.tier);
        raw.spill_dir = cfg.spill_dir;
        var handle: ?*c.m2c_store = null;
        try call(diag, c.m2c_store_create(&raw, &handle));
        return .{ .handle = handle, .diag = diag };
    }

    /// Frees the store and its checkpoints (`m2c_store_destroy`).
    /// Idempotent.
    pub fn deinit(self: *Store) void {
        c.m2c_store_destroy(self.handle);
        self.handle = null;
    }

    /// Stores `slot` of `cache` under `key` (`m2c_store_insert`); `.too_large`
    /// when it cannot fit (nothing stored), else `.none`.
    pub fn insert(self: *Store, cache: *const Cache, slot: i32, key: Key) Error!Miss {
        var miss: c.m2c_miss = c.M2C_MISS_NONE;
        try call(self.diag, c.m2c_store_insert(self.handle, cache.handle, slot, &key, &miss));
        return @enumFromInt(miss);
    }

    /// The longest cached prefix among `keys` usable by `cache`
    /// (`m2c_store_lookup`).
    pub fn lookup(self: *Store, cache: *const Cache, keys: []const Key) Error!Lookup {
        var out: c.m2c_lookup = undefined;
        c.m2c_lookup_init(&out);
        try call(self.diag, c.m2c_store_lookup(self.handle, cache.handle, if (keys.len == 0) null else keys.ptr, keys.len, &out));
        return .{ .blocks = @intCast(out.blocks), .miss = @enumFromInt(out.miss) };
    }

    /// Restores the checkpoint under `key` into `slot` of `cache`
    /// (`m2c_store_restore`): `error.NotFound` with the reason in the
    /// message when there is none.
    pub fn restore(self: *Store, key: Key, cache: *Cache, slot: i32) Error!void {
        try call(self.diag, c.m2c_store_restore(self.handle, &key, cache.handle, slot));
    }

    /// `m2c_store_pin`.
    pub fn pin(self: *Store, key: Key) Error!void {
        try call(self.diag, c.m2c_store_pin(self.handle, &key));
    }

    /// `m2c_store_unpin`.
    pub fn unpin(self: *Store, key: Key) Error!void {
        try call(self.diag, c.m2c_store_unpin(self.handle, &key));
    }

    /// `m2c_store_evict`.
    pub fn evict(self: *Store, key: Key) Error!void {
        try call(self.diag, c.m2c_store_evict(self.handle, &key));
    }

    /// The counters and occupancy (`m2c_store_get_stats`).
    pub fn stats(self: *const Store) Error!c.m2c_store_stats {
        var out: c.m2c_store_stats = undefined;
        c.m2c_store_stats_init(&out);
        try call(self.diag, c.m2c_store_get_stats(self.handle, &out));
        return out;
    }
};

const PathBuf = [std.fs.max_path_bytes + 1]u8;

fn pathZ(diag: ?*Diagnostics, path: []const u8, buf: *PathBuf) Error![:0]const u8 {
    if (std.mem.indexOfScalar(u8, path, 0) != null)
        return refuse(diag, error.InvalidArg, "the path contains a NUL byte", .{});
    if (path.len > std.fs.max_path_bytes)
        return refuse(diag, error.InvalidArg, "the path is {d} bytes, more than {d}", .{ path.len, std.fs.max_path_bytes });
    @memcpy(buf[0..path.len], path);
    buf[path.len] = 0;
    return buf[0..path.len :0];
}

/// The C slot arguments of a prefill: null means sequences 0..n-1 with
/// n = `cu_seqlens.len - 1` (0 for an empty `cu_seqlens`, which the library
/// then refuses).
fn sequences(slots: ?[]const i32, cu_seqlens: []const u64) struct { ptr: ?[*]const i32, n: usize } {
    if (slots) |s| return .{ .ptr = if (s.len == 0) null else s.ptr, .n = s.len };
    return .{ .ptr = null, .n = cu_seqlens.len -| 1 };
}

/// The C slot arguments for `slots`: null means rows 0..n-1 with
/// n = `len / row_len`.
fn rows(slots: ?[]const i32, len: usize, row_len: usize) struct { ptr: ?[*]const i32, n: usize } {
    if (slots) |s| return .{ .ptr = if (s.len == 0) null else s.ptr, .n = s.len };
    return .{ .ptr = null, .n = if (row_len == 0) 0 else len / row_len };
}
