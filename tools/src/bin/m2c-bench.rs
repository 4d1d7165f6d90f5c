//! m2c-bench: drives libm2c through its C ABI on Mamba2 shapes and prints
//! what each state operation costs per decode token, beside a memcpy of the
//! same bytes measured in the same run.
//!
//! Modes:
//!   m2c-bench [shape flags]            state operations and decode kernels for one shape
//!   m2c-bench --matrix                 decode kernels over Mamba2-130m/2.7B x 1/8/32 slots x f32/bf16 state
//!   m2c-bench --fidelity [--steps N]   SSM state drift of f32/bf16/f16 storage against f64
//!   m2c-bench --spec [--drafts D]      speculative verify + commit vs plain decoding and the naive way
//!   m2c-bench --store                  prefix-store insert/restore of one slot vs memcpy and snapshots; lookups
//!   m2c-bench --ring                   ring conv windows vs oldest-first, and the JAX peer's update
//! Shape flags: --model 130m|2.7b --slots N --layers N --conv-dtype D --ssm-dtype D
//!              --io-dtype D --width k|k-1 --iters N   (D: f32, bf16, f16)
//! Output: --format text|csv|json (--csv, --json): one record per timed figure.

use m2c::*;
use std::ffi::CStr;
use std::hint::black_box;
use std::process::ExitCode;
use std::ptr;
use std::time::Instant;

#[derive(Clone)]
struct Shape {
    model: String,
    slots: u32,
    layers: Option<u32>,
    conv_dtype: m2c_dtype,
    ssm_dtype: m2c_dtype,
    io_dtype: m2c_dtype,
    width_k: bool,
    iters: usize,
}

/// What the bench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// State operations and decode kernels for one shape.
    Table,
    /// Decode kernels over Mamba2-130m/2.7B x 1/8/32 slots x f32/bf16 state.
    Matrix,
    /// SSM state drift of f32/bf16/f16 storage against f64.
    Fidelity,
    /// Speculative decoding: verify + commit against plain decoding and a
    /// full state written per draft token.
    Spec,
    /// The prefix store: insert/restore of one slot, lookups.
    Store,
    /// State transfer: regions, resharding plans, digests, resharded snapshots.
    Transfer,
    /// m2c_ssm_prefill of one layer beside the machine's FMA peak.
    Prefill,
    /// Whether a lazy state write-back could pay: a read-only pass over
    /// the state and folds of R tokens, beside the decode step.
    Lazy,
    /// Ring conv windows against oldest-first ones (update_conv and
    /// conv_step), and the JAX peer's update when JAX is installed.
    Ring,
}

const HELP: &str = "\
m2c-bench: what each state operation of m2c costs per decode token, beside a
memcpy of the same bytes measured in the same run.

usage: m2c-bench [--matrix | --fidelity [--steps N] | --spec [--drafts D] | --store | --transfer |
                  --prefill | --lazy | --ring]
                 [shape flags]
                 [--csv | --json]

modes:
  (default)          every state operation (update, set, read, reset, copy_slots,
                     snapshots, files) and the decode kernels for one shape
  --matrix           decode kernels over Mamba2-130m/2.7B x 1/8/32 slots x f32/bf16
                     state
  --fidelity         drift of f32/bf16/f16 SSM state storage against an f64 model
                     over --steps decode steps (default 2000)
  --spec             speculative decoding for one shape: a verify of runs of
                     1 + --drafts tokens (default 4) per slot plus a commit of
                     1..1+D of them, beside a plain decode step and beside the
                     naive way (a decode step and a full state copy per draft
                     token, then a copy back)
  --store            the prefix store for one shape: inserting a slot into a
                     full store (evicting the oldest checkpoint) and restoring
                     one, beside a memcpy of the same bytes and beside a slot
                     snapshot save/load; lookups of a 128-key chain
  --transfer         state transfer for one shape: m2c_slot_regions for the slots,
                     m2c_reshard_plan between tensor-parallel layouts (both in
                     microseconds), m2c_slot_digest and m2c_snapshot_reshard of
                     one slot beside a memcpy of its bytes
  --prefill          m2c_ssm_prefill of one layer, 2048 tokens per sequence for
                     1 and 4 sequences, in tokens/s and GFLOP/s (6 flops per
                     state element per token) beside this machine's f32 FMA
                     peak, measured in the same run (use --model 2.7b)
  --lazy             whether a lazy SSM state write-back could pay here: the
                     decode step's SSM work beside a lower bound of a lazy
                     token (a read-only pass computing C . state per row)
                     plus a fold of R = 2..16 buffered tokens (measured as
                     m2c_ssm_prefill of R tokens), per token (f32 or bf16
                     state)

  --ring             the ring conv layout (m2c_set_conv_layout) against the
                     oldest-first one: m2c_update_conv and m2c_conv_step over
                     every layer for 1 and --slots slots, beside a memcpy of
                     the conv state, and beside the JAX peer's update
                     (EasyDeL's update_conv_state, tools/baselines/
                     jax_baseline.py --update-conv, run by this mode with
                     M2C_BENCH_PYTHON, else target/py-venv/bin/python (which
                     the test command installs with JAX), else python3)

shape flags:
  --model 130m|2.7b  model shape (default 130m)
  --slots N          sequences per call (default 8)
  --layers N         layers (default: the model's)
  --conv-dtype D     conv window storage (default bf16)
  --ssm-dtype D      SSM state storage (default f32)
  --io-dtype D       activations (default f32)
  --width k|k-1      conv window of K columns (HF) or K-1 (vLLM) (default k)
  --iters N          timed repetitions per figure (default: chosen per size)
  D is f32, bf16 or f16.

output:
  --format text      a table (default)
  --format csv       (or --csv) one line per timed figure, with a header line
  --format json      (or --json) an array of the same records
  In csv and json form the data alone goes to stdout (the machine line and
  notes go to stderr); --fidelity always prints text.

Every figure is the median of its runs, with the fastest and slowest run
beside it. Each row on N threads is compared with a memcpy of the same bytes
on N threads, measured in the same run: 'vs memcpy' above 1x is faster than
copying the state once. Rows run on 1 and on 2 threads (a rayon pool of that
size, lent to m2c); snapshots and files on 1.
";

/// How the table and matrix modes print their figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Csv,
    Json,
}

/// A timed figure: the median, fastest and slowest of its runs, in seconds.
#[derive(Clone, Copy, Debug)]
struct Timing {
    med: f64,
    min: f64,
    max: f64,
    runs: usize,
}

/// One timed figure of the report.
struct Record {
    shape: String,
    op: String,
    threads: usize,
    t: Timing,
    bytes: usize,
    memcpy_bw: f64,
}

/// The figures of one run, printed as they come (text) or at the end (csv,
/// json).
struct Report {
    format: Format,
    shape: String,
    records: Vec<Record>,
    /// memcpy bandwidth (bytes/s) on 1 and 2 threads for the current shape.
    memcpy: [f64; 2],
}

impl Report {
    fn new(format: Format) -> Report {
        Report { format, shape: String::new(), records: Vec::new(), memcpy: [0.0; 2] }
    }

    /// A line of context: stdout in text form, stderr otherwise (so that
    /// stdout holds the data alone).
    fn note(&self, line: &str) {
        if self.format == Format::Text {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// Starts a shape: measures memcpy of `bytes` on 1 and 2 threads.
    fn shape(&mut self, shape: String, bytes: usize, iters: usize) {
        self.shape = shape;
        self.memcpy = [memcpy_bw(bytes, 1, iters), memcpy_bw(bytes, 2, iters)];
        self.note(&format!(
            "memcpy of the state's {:.1} MB: {:.2} GB/s on 1 thread, {:.2} GB/s on 2 threads",
            bytes as f64 / 1e6,
            self.memcpy[0] / 1e9,
            self.memcpy[1] / 1e9
        ));
        if self.format == Format::Text {
            println!(
                "{:<34} {:>3} {:>10} {:>17} {:>8} {:>11} {:>10}",
                "operation, all layers, per token",
                "thr",
                "median ms",
                "fastest..slowest",
                "GB/s",
                "memcpy GB/s",
                "vs memcpy"
            );
        }
    }

    fn row(&mut self, op: &str, threads: usize, t: Timing, bytes: usize) {
        self.row_beside(op, threads, (t, self.memcpy[threads.clamp(1, 2) - 1]), bytes);
    }

    /// A row compared with its own memcpy ([`time_beside`]).
    fn row_beside(&mut self, op: &str, threads: usize, (t, memcpy_bw): (Timing, f64), bytes: usize) {
        let r = Record { shape: self.shape.clone(), op: op.to_string(), threads, t, bytes, memcpy_bw };
        if self.format == Format::Text {
            println!(
                "{:<34} {:>3} {:>10.3} {:>8.3}..{:<8.3} {:>8.2} {:>11.2} {:>9.2}x",
                r.op,
                r.threads,
                r.t.med * 1e3,
                r.t.min * 1e3,
                r.t.max * 1e3,
                r.gbps(),
                r.memcpy_bw / 1e9,
                r.vs_memcpy()
            );
        }
        self.records.push(r);
    }

    fn finish(&self) {
        match self.format {
            Format::Text => {}
            Format::Csv => {
                println!("{}", FIELDS.join(","));
                for r in &self.records {
                    let row = r.fields().map(|v| match v {
                        Field::Text(t) => csv_field(&t),
                        Field::Num(n) => n,
                    });
                    println!("{}", row.join(","));
                }
            }
            Format::Json => {
                println!("[");
                for (i, r) in self.records.iter().enumerate() {
                    let obj = FIELDS.iter().zip(r.fields()).map(|(name, v)| match v {
                        Field::Text(t) => format!("\"{name}\": {}", json_str(&t)),
                        Field::Num(n) => format!("\"{name}\": {n}"),
                    });
                    let obj: Vec<String> = obj.collect();
                    println!("  {{{}}}{}", obj.join(", "), if i + 1 < self.records.len() { "," } else { "" });
                }
                println!("]");
            }
        }
    }
}

/// The columns of the csv and json forms, in order.
const FIELDS: [&str; 11] = [
    "shape",
    "operation",
    "threads",
    "median_ms",
    "fastest_ms",
    "slowest_ms",
    "runs",
    "bytes",
    "gb_per_s",
    "memcpy_gb_per_s",
    "vs_memcpy",
];

/// One column of a csv or json record.
enum Field {
    Text(String),
    Num(String),
}

impl Record {
    /// The values of the `FIELDS` columns.
    fn fields(&self) -> [Field; 11] {
        use Field::{Num, Text};
        [
            Text(self.shape.clone()),
            Text(self.op.clone()),
            Num(self.threads.to_string()),
            Num(format!("{:.6}", self.t.med * 1e3)),
            Num(format!("{:.6}", self.t.min * 1e3)),
            Num(format!("{:.6}", self.t.max * 1e3)),
            Num(self.t.runs.to_string()),
            Num(self.bytes.to_string()),
            Num(format!("{:.4}", self.gbps())),
            Num(format!("{:.4}", self.memcpy_bw / 1e9)),
            Num(format!("{:.4}", self.vs_memcpy())),
        ]
    }

    /// Bytes of state covered per second, in GB/s.
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.t.med / 1e9
    }

    /// How much faster than a memcpy of the same bytes on as many threads.
    fn vs_memcpy(&self) -> f64 {
        self.bytes as f64 / self.memcpy_bw / self.t.med
    }
}

/// `s` as one CSV field (quoted when it holds a comma or a quote).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn dtype(s: &str) -> Result<m2c_dtype, lexopt::Error> {
    match s {
        "f32" => Ok(M2C_DTYPE_F32),
        "bf16" => Ok(M2C_DTYPE_BF16),
        "f16" => Ok(M2C_DTYPE_F16),
        _ => Err(format!("unknown dtype '{s}' (f32, bf16 or f16)").into()),
    }
}

/// The core's dtype of a C dtype code (for its name and size).
fn core_dtype(d: m2c_dtype) -> m2c_core::DType {
    match d {
        M2C_DTYPE_F32 => m2c_core::DType::F32,
        M2C_DTYPE_BF16 => m2c_core::DType::BF16,
        _ => m2c_core::DType::F16,
    }
}

fn dname(d: m2c_dtype) -> &'static str {
    core_dtype(d).name()
}

fn dsize(d: m2c_dtype) -> usize {
    core_dtype(d).size()
}

fn check(s: m2c_status, what: &str) {
    if s != M2C_STATUS_OK {
        // SAFETY: never NULL.
        let msg = unsafe { CStr::from_ptr(m2c_last_error()) }.to_string_lossy();
        eprintln!("m2c-bench: {what} failed ({s}): {msg}");
        std::process::exit(1);
    }
}

/// The cache's one-line summary (m2c_describe).
fn describe(cache: *mut m2c_cache) -> String {
    let mut buf = vec![0u8; 512];
    let mut needed = 0usize;
    // SAFETY: a live handle, a buffer of the stated length.
    check(unsafe { m2c_describe(cache, buf.as_mut_ptr().cast(), buf.len(), &mut needed) }, "m2c_describe");
    String::from_utf8_lossy(&buf[..needed - 1]).into_owned()
}

/// The median, fastest and slowest seconds of `f` over `iters` runs, after
/// two warm-up runs.
fn time(iters: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..2 {
        f();
    }
    let t: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    Timing::of(t)
}

impl Timing {
    /// The median, fastest and slowest of `t` (seconds, at least one).
    fn of(mut t: Vec<f64>) -> Timing {
        t.sort_by(f64::total_cmp);
        Timing { med: t[t.len() / 2], min: t[0], max: t[t.len() - 1], runs: t.len() }
    }
}

/// Bandwidth (bytes/s, bytes copied per second) of a memcpy of `bytes`
/// bytes on `threads` threads, between buffers touched first. Buffers are
/// capped at 1 GiB (far beyond any cache): above that the figure is flat.
fn memcpy_bw(bytes: usize, threads: usize, iters: usize) -> f64 {
    let mut m = Memcpy::new(bytes, threads);
    let t = time(iters, || m.run());
    m.bytes() as f64 / t.med
}

/// A memcpy of `bytes` (capped at 1 GiB) on `threads` threads, between
/// buffers touched first.
struct Memcpy {
    src: Vec<u8>,
    dst: Vec<u8>,
    pool: rayon::ThreadPool,
}

impl Memcpy {
    fn new(bytes: usize, threads: usize) -> Memcpy {
        let n = bytes.clamp(4096, 1 << 30);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
        Memcpy { src: vec![1u8; n], dst: vec![0u8; n], pool }
    }

    fn bytes(&self) -> usize {
        self.src.len()
    }

    fn run(&mut self) {
        let threads = self.pool.current_num_threads();
        if threads == 1 {
            self.dst.copy_from_slice(black_box(&self.src));
        } else {
            let chunk = self.src.len().div_ceil(threads);
            self.pool.scope(|s| {
                for (d, sr) in self.dst.chunks_mut(chunk).zip(self.src.chunks(chunk)) {
                    s.spawn(move |_| d.copy_from_slice(black_box(sr)));
                }
            });
        }
        black_box(&mut self.dst);
    }
}

/// [`time`] with a memcpy of `bytes` on `threads` threads run before each
/// call of `f`, for rows whose ratio to memcpy is a target: this machine's
/// memory bandwidth drifts by half from minute to minute (its memory and
/// L3 are shared), so such a ratio is only fair against a memcpy measured
/// in the same moments. Returns `f`'s timing and the memcpy's bandwidth
/// (median).
fn time_beside(iters: usize, threads: usize, bytes: usize, mut f: impl FnMut()) -> (Timing, f64) {
    let mut m = Memcpy::new(bytes, threads);
    let (mut copies, mut runs) = (Vec::new(), Vec::new());
    for i in 0..iters.max(1) + 2 {
        let s = Instant::now();
        m.run();
        let c = s.elapsed().as_secs_f64();
        let s = Instant::now();
        f();
        // The first two pairs warm up.
        if i >= 2 {
            copies.push(c);
            runs.push(s.elapsed().as_secs_f64());
        }
    }
    (Timing::of(runs), m.bytes() as f64 / Timing::of(copies).med)
}

/// The mode, the shape, the fidelity mode's step count and the output
/// format; `--help`
/// prints the help and exits 0.
fn parse() -> Result<(Mode, Shape, usize, Format, usize), lexopt::Error> {
    use lexopt::prelude::*;
    let mut mode = Mode::Table;
    let mut drafts = 4;
    let mut format = Format::Text;
    let mut steps = 2000;
    let mut a = Shape {
        model: "130m".into(),
        slots: 8,
        layers: None,
        conv_dtype: M2C_DTYPE_BF16,
        ssm_dtype: M2C_DTYPE_F32,
        io_dtype: M2C_DTYPE_F32,
        width_k: true,
        iters: 0,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            Long("matrix") => mode = Mode::Matrix,
            Long("fidelity") => mode = Mode::Fidelity,
            Long("spec") => mode = Mode::Spec,
            Long("store") => mode = Mode::Store,
            Long("transfer") => mode = Mode::Transfer,
            Long("prefill") => mode = Mode::Prefill,
            Long("lazy") => mode = Mode::Lazy,
            Long("ring") => mode = Mode::Ring,
            Long("drafts") => drafts = p.value()?.parse()?,
            Long("steps") => steps = p.value()?.parse()?,
            Long("csv") => format = Format::Csv,
            Long("json") => format = Format::Json,
            Long("format") => {
                format = match p.value()?.string()?.as_str() {
                    "text" => Format::Text,
                    "csv" => Format::Csv,
                    "json" => Format::Json,
                    f => return Err(format!("unknown format '{f}' (text, csv or json)").into()),
                }
            }
            Long("model") => {
                a.model = p.value()?.string()?;
                if a.model != "130m" && a.model != "2.7b" {
                    return Err(format!("unknown model '{}' (130m or 2.7b)", a.model).into());
                }
            }
            Long("slots") => a.slots = p.value()?.parse()?,
            Long("layers") => a.layers = Some(p.value()?.parse()?),
            Long("conv-dtype") => a.conv_dtype = dtype(&p.value()?.string()?)?,
            Long("ssm-dtype") => a.ssm_dtype = dtype(&p.value()?.string()?)?,
            Long("io-dtype") => a.io_dtype = dtype(&p.value()?.string()?)?,
            Long("width") => {
                a.width_k = match p.value()?.string()?.as_str() {
                    "k" => true,
                    "k-1" => false,
                    w => return Err(format!("unknown width '{w}' (k or k-1)").into()),
                }
            }
            Long("iters") => a.iters = p.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    if drafts > 64 {
        return Err(format!("--drafts {drafts}: at most 64").into());
    }
    Ok((mode, a, steps, format, drafts))
}

/// The SSM arguments of a bench cache: A, D and dt_bias, activations `io`.
fn ssm_args(io: m2c_dtype, a: &[f32], d: &[f32]) -> m2c_ssm_args {
    let mut args = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
    // SAFETY: valid storage.
    unsafe { m2c_ssm_args_init(args.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut args = unsafe { args.assume_init() };
    args.io_dtype = io;
    args.A = a.as_ptr();
    args.A_len = a.len();
    args.D = d.as_ptr();
    args.D_len = d.len();
    args.dt_bias = d.as_ptr();
    args.dt_bias_len = d.len();
    args
}

/// An `m2c_ssm_io` over byte buffers of dtype `io` (B doubles as C).
fn ssm_io(io: m2c_dtype, x: &[u8], dt: &[u8], bc: &[u8], z: &[u8], y: &mut [u8]) -> m2c_ssm_io {
    let mut s = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
    // SAFETY: valid storage.
    unsafe { m2c_ssm_io_init(s.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut s = unsafe { s.assume_init() };
    let e = dsize(io);
    (s.x, s.x_len) = (x.as_ptr().cast(), x.len() / e);
    (s.dt, s.dt_len) = (dt.as_ptr().cast(), dt.len() / e);
    (s.B, s.B_len) = (bc.as_ptr().cast(), bc.len() / e);
    (s.C, s.C_len) = (bc.as_ptr().cast(), bc.len() / e);
    // An empty `z` means no gate (NULL, as m2c_ssm_io_init leaves it).
    if !z.is_empty() {
        (s.z, s.z_len) = (z.as_ptr().cast(), z.len() / e);
    }
    (s.y, s.y_len) = (y.as_mut_ptr().cast(), y.len() / e);
    s
}

/// The conv arguments of a bench cache (the weights are set per layer).
fn conv_args(io: m2c_dtype, bias: &[f32]) -> m2c_conv_args {
    let mut args = std::mem::MaybeUninit::<m2c_conv_args>::zeroed();
    // SAFETY: valid storage.
    unsafe { m2c_conv_args_init(args.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut args = unsafe { args.assume_init() };
    args.io_dtype = io;
    args.bias = bias.as_ptr();
    args.bias_len = bias.len();
    args
}

/// A cache handle that may cross threads: the C API is thread-safe.
#[derive(Clone, Copy)]
struct Handle(*mut m2c_cache);
// SAFETY: every m2c function may be called from any thread.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Handle {
    fn get(self) -> *mut m2c_cache {
        self.0
    }
}

/// A cache and everything needed to run its kernels.
struct Bench {
    cache: Handle,
    cfg: m2c_config,
    io: m2c_dtype,
    n: usize,
    conv_dim: usize,
    x: Vec<u8>,
    conv_out: Vec<u8>,
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
    ssm_x: Vec<u8>,
    dt: Vec<u8>,
    bc: Vec<u8>,
    z: Vec<u8>,
    y: Vec<u8>,
    a: Vec<f32>,
    d: Vec<f32>,
}

impl Bench {
    fn new(s: &Shape) -> Bench {
        Bench::with_cache_slots(s, s.slots)
    }

    /// A bench whose calls address slots `0..s.slots` of a cache of
    /// `cache_slots` slots.
    fn with_cache_slots(s: &Shape, cache_slots: u32) -> Bench {
        let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_config_init(cfg.as_mut_ptr()) };
        // SAFETY: initialised above.
        let mut cfg = unsafe { cfg.assume_init() };
        // `parse` accepts only these two models.
        if s.model == "2.7b" {
            cfg.num_layers = 64;
            cfg.intermediate_size = 5120;
            cfg.num_heads = 80;
        }
        cfg.num_slots = cache_slots;
        if let Some(l) = s.layers {
            cfg.num_layers = l;
        }
        cfg.conv_dtype = s.conv_dtype;
        cfg.ssm_dtype = s.ssm_dtype;
        cfg.conv_width = if s.width_k { cfg.conv_kernel_size } else { cfg.conv_kernel_size - 1 };
        let mut cache = ptr::null_mut();
        // SAFETY: valid pointers.
        check(unsafe { m2c_create(&cfg, &mut cache) }, "m2c_create");
        let n = s.slots as usize;
        let conv_dim = (cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size) as usize;
        let (h, p, st, g) =
            (cfg.num_heads as usize, cfg.head_dim as usize, cfg.state_size as usize, cfg.n_groups as usize);
        let k = cfg.conv_kernel_size as usize;
        let io = s.io_dtype;
        let e = dsize(io);
        // Small values: 0x3c00 is 1.0 in f16 and ~0.0078 in bf16; 0x3c003c00 ~0.0078 in f32.
        let fill = |len: usize| vec![0x3Cu8; len * e];
        Bench {
            cache: Handle(cache),
            cfg,
            io,
            n,
            conv_dim,
            x: fill(n * conv_dim),
            conv_out: vec![0; n * conv_dim * e],
            weights: (0..cfg.num_layers).map(|l| vec![0.01 * (l as f32 + 1.0); conv_dim * k]).collect(),
            bias: vec![0.1; conv_dim],
            ssm_x: fill(n * h * p),
            dt: fill(n * h),
            bc: fill(n * g * st),
            z: fill(n * h * p),
            y: vec![0; n * h * p * e],
            a: vec![-0.5; h],
            d: vec![1.0; h],
        }
    }

    fn conv_bytes(&self) -> usize {
        self.cfg.num_layers as usize
            * self.n
            * self.conv_dim
            * self.cfg.conv_width as usize
            * dsize(self.cfg.conv_dtype)
    }

    fn ssm_bytes(&self) -> usize {
        let c = &self.cfg;
        c.num_layers as usize * self.n * (c.num_heads * c.head_dim * c.state_size) as usize * dsize(c.ssm_dtype)
    }

    fn conv_step_all(&mut self) {
        let mut args = conv_args(self.io, &self.bias);
        let len = self.n * self.conv_dim;
        for l in 0..self.cfg.num_layers {
            args.weight = self.weights[l as usize].as_ptr();
            args.weight_len = self.weights[l as usize].len();
            // SAFETY: valid buffers of the stated lengths.
            check(
                unsafe {
                    m2c_conv_step(
                        self.cache.get(),
                        l,
                        ptr::null(),
                        self.n,
                        self.x.as_ptr().cast(),
                        len,
                        self.conv_out.as_mut_ptr().cast(),
                        len,
                        &args,
                    )
                },
                "m2c_conv_step",
            );
        }
    }

    fn ssm_step_all(&mut self) {
        let args = ssm_args(self.io, &self.a, &self.d);
        let io = ssm_io(self.io, &self.ssm_x, &self.dt, &self.bc, &self.z, &mut self.y);
        for l in 0..self.cfg.num_layers {
            // SAFETY: valid buffers of the stated lengths.
            check(unsafe { m2c_ssm_step(self.cache.get(), l, ptr::null(), self.n, &io, &args) }, "m2c_ssm_step");
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // SAFETY: handle from m2c_create.
        unsafe { m2c_destroy(self.cache.get()) };
    }
}

/// The run's first line: version, shape, bytes, kernels and run count.
fn header(b: &Bench, s: &Shape, iters: usize) -> String {
    let mut total = 0u64;
    // SAFETY: valid pointers.
    check(unsafe { m2c_config_bytes(&b.cfg, &mut total) }, "m2c_config_bytes");
    format!(
        "m2c {} | Mamba2-{} shapes: {} layers, {} slots, conv {} [{}x{}], ssm {} [{}x{}x{}], activations {} | {:.1} MB of state | kernels: {} | median of {} runs",
        // SAFETY: static string.
        unsafe { CStr::from_ptr(m2c_version()) }.to_string_lossy(),
        s.model,
        b.cfg.num_layers,
        b.n,
        dname(b.cfg.conv_dtype),
        b.conv_dim,
        b.cfg.conv_width,
        dname(b.cfg.ssm_dtype),
        b.cfg.num_heads,
        b.cfg.head_dim,
        b.cfg.state_size,
        dname(b.io),
        total as f64 / 1e6,
        if m2c_core::kernels::isa::avx512_bf16() { "avx512+bf16" } else { m2c_core::kernels::isa::isa().name() },
        iters
    )
}

/// The shape column of the csv and json records.
fn shape_name(b: &Bench, s: &Shape) -> String {
    format!(
        "Mamba2-{} x{} layers, {} slots, conv {} width {}, ssm {}, io {}",
        s.model,
        b.cfg.num_layers,
        b.n,
        dname(b.cfg.conv_dtype),
        b.cfg.conv_width,
        dname(b.cfg.ssm_dtype),
        dname(b.io)
    )
}

fn table(s: &Shape, rep: &mut Report) {
    let mut b = Bench::new(s);
    let (cb, sb) = (b.conv_bytes(), b.ssm_bytes());
    let iters = if s.iters > 0 {
        s.iters
    } else if sb > (1 << 30) {
        5
    } else {
        21
    };
    rep.note(&header(&b, s, iters));
    rep.note(&describe(b.cache.0));
    rep.shape(shape_name(&b, s), cb + sb, iters);
    let pools: Vec<(usize, rayon::ThreadPool)> =
        [1, 2].iter().map(|&t| (t, rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("pool"))).collect();
    let n = b.n;
    let handle = b.cache;
    let cfg = b.cfg;
    let ssm_per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let state_in = vec![0x3Cu8; n * ssm_per * dsize(cfg.ssm_dtype)];
    let conv_in = vec![0u8; n * b.conv_dim * dsize(cfg.conv_dtype)];
    for (t, pool) in &pools {
        let t = *t;
        pool.install(|| {
            let tc = time(iters, || b.conv_step_all());
            let ts = time(iters, || b.ssm_step_all());
            let tt = time(iters, || {
                b.conv_step_all();
                b.ssm_step_all();
            });
            rep.row("conv_step", t, tc, cb);
            rep.row("ssm_step", t, ts, sb);
            rep.row("decode token (conv_step+ssm_step)", t, tt, cb + sb);
            rep.note(&format!(
                "{:<34} {:>3} {:>10.1} tokens/s per slot, {:.1} tokens/s over {} slots",
                "",
                t,
                1.0 / tt.med,
                n as f64 / tt.med,
                n
            ));
            let tu = time(iters, || {
                for l in 0..cfg.num_layers {
                    // SAFETY: valid buffers of the stated lengths.
                    check(
                        unsafe {
                            m2c_update_conv(
                                handle.get(),
                                l,
                                ptr::null(),
                                n,
                                conv_in.as_ptr().cast(),
                                cfg.conv_dtype,
                                n * b.conv_dim,
                            )
                        },
                        "m2c_update_conv",
                    );
                }
            });
            rep.row("update_conv (store only)", t, tu, cb);
            let tss = time(iters, || {
                for l in 0..cfg.num_layers {
                    // SAFETY: valid buffers of the stated lengths.
                    check(
                        unsafe {
                            m2c_update_ssm(
                                handle.get(),
                                l,
                                ptr::null(),
                                n,
                                state_in.as_ptr().cast(),
                                cfg.ssm_dtype,
                                n * ssm_per,
                            )
                        },
                        "m2c_update_ssm",
                    );
                }
            });
            rep.row("set_ssm (replace state)", t, tss, sb);
            // SAFETY: valid pointers.
            let tr = time(iters, || check(unsafe { m2c_reset(handle.get(), ptr::null(), n) }, "m2c_reset"));
            rep.row("reset (all slots)", t, tr, cb + sb);
            if n >= 2 {
                let src: Vec<i32> = (0..n as i32).rev().collect();
                let dst: Vec<i32> = (0..n as i32).collect();
                let tp = time(iters, || {
                    // SAFETY: valid arrays of n entries.
                    check(unsafe { m2c_copy_slots(handle.get(), src.as_ptr(), dst.as_ptr(), n) }, "m2c_copy_slots")
                });
                rep.row("copy_slots (reverse permutation)", t, tp, cb + sb);
            }
        });
    }
    let cache = handle.get();
    // Snapshots: one slot, in memory.
    let mut size = 0usize;
    // SAFETY: valid pointers.
    check(unsafe { m2c_slot_snapshot_size(cache, &mut size) }, "m2c_slot_snapshot_size");
    let mut snap = vec![0u8; size];
    let mut written = 0usize;
    let tsave = time(iters, || {
        // SAFETY: valid buffer of `size` bytes.
        check(unsafe { m2c_slot_save(cache, 0, snap.as_mut_ptr().cast(), size, &mut written) }, "m2c_slot_save")
    });
    let tload = time(iters, || {
        // SAFETY: valid buffer of `size` bytes.
        check(unsafe { m2c_slot_load(cache, 0, snap.as_ptr().cast(), size) }, "m2c_slot_load")
    });
    rep.row("slot_save (one slot, to memory)", 1, tsave, size);
    rep.row("slot_load (one slot, validated)", 1, tload, size);
    // Snapshot format 2 (chunked checksum, parallel), on 1 and 2 threads.
    // SAFETY: a live handle.
    check(unsafe { m2c_set_snapshot_format(cache, M2C_SNAPSHOT_FORMAT_2) }, "m2c_set_snapshot_format");
    for t in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("pool");
        // The target is a ratio to memcpy: each is timed beside its own.
        pool.install(|| {
            let tsave = time_beside(iters, t, size, || {
                // SAFETY: valid buffer of `size` bytes.
                check(
                    unsafe { m2c_slot_save(handle.get(), 0, snap.as_mut_ptr().cast(), size, &mut written) },
                    "m2c_slot_save",
                )
            });
            let tload = time_beside(iters, t, size, || {
                // SAFETY: valid buffer of `size` bytes.
                check(unsafe { m2c_slot_load(handle.get(), 0, snap.as_ptr().cast(), size) }, "m2c_slot_load")
            });
            rep.row_beside("slot_save, format 2", t, tsave, size);
            rep.row_beside("slot_load, format 2", t, tload, size);
        });
    }
    // SAFETY: a live handle.
    check(unsafe { m2c_set_snapshot_format(cache, M2C_SNAPSHOT_FORMAT_1) }, "m2c_set_snapshot_format");
    // Whole-cache files: crash-safe save (temp file, fsync, rename) and a
    // validating two-pass load, through the page cache of this machine.
    let dir = std::env::temp_dir().join(format!("m2c-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = std::ffi::CString::new(dir.join("cache.m2c").to_string_lossy().as_bytes()).expect("path");
    let file_iters = iters.min(5);
    // SAFETY: valid handle and NUL-terminated path.
    let tfs = time(file_iters, || check(unsafe { m2c_save_file(cache, path.as_ptr()) }, "m2c_save_file"));
    rep.row("save_file (all slots, fsync)", 1, tfs, cb + sb);
    // Loads hash beside the reads when they have a second thread.
    let [_, tfl] = [1, 2].map(|t| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("pool");
        // SAFETY: as above.
        let tl = pool.install(|| {
            time(file_iters, || check(unsafe { m2c_load_file(handle.get(), path.as_ptr()) }, "m2c_load_file"))
        });
        rep.row("load_file (all slots, 2 passes)", t, tl, cb + sb);
        tl
    });
    file_breakdown(rep, &dir, std::path::Path::new(&*path.to_string_lossy()), file_iters, tfs, tfl);
    let _ = std::fs::remove_dir_all(&dir);
    rep.note(
        "GB/s = bytes of state covered / median time (each byte read once and written once counts once, as for memcpy);\n\
         memcpy GB/s = memcpy of the state's bytes on the row's thread count, measured above (for the format 2 snapshot rows,\n\
         a memcpy of the snapshot's bytes run before each call, so both see the same moments' bandwidth);\n\
         'vs memcpy' = (bytes / memcpy GB/s) / median: above 1x is faster than copying the state once. fastest..slowest: the spread of the runs behind the median.",
    );
}

/// Where a file's time goes: the parts of `m2c_save_file` / `m2c_load_file`
/// timed one by one on the file's own bytes (the checksum, writing them
/// through the page cache, the fsync, reading them back), beside the
/// calls' medians.
fn file_breakdown(
    rep: &mut Report,
    dir: &std::path::Path,
    file: &std::path::Path,
    iters: usize,
    save: Timing,
    load: Timing,
) {
    let Ok(bytes) = std::fs::read(file) else { return };
    let other = dir.join("copy.bin");
    let sum = time(iters, || {
        black_box(m2c_core::xxh64::xxh64(black_box(&bytes)));
    });
    // Write and fsync, timed apart, each into a new file (no truncation).
    let (mut writes, mut syncs) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let _ = std::fs::remove_file(&other);
        let t0 = Instant::now();
        let mut f = std::fs::File::create(&other).expect("create");
        std::io::Write::write_all(&mut f, &bytes).expect("write");
        let t1 = Instant::now();
        f.sync_all().expect("fsync");
        writes.push((t1 - t0).as_secs_f64());
        syncs.push(t1.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (write, sync) = (median(&mut writes), median(&mut syncs));
    let read = time(iters, || {
        black_box(std::fs::read(file).expect("read"));
    });
    let ms = |t: f64| t * 1e3;
    rep.note(&format!(
        "where a file's time goes ({:.1} MB file, medians): save_file {:.1} ms ~ checksum {:.1} ms + write into a new file \
         (page cache) {:.1} ms + fsync {:.1} ms; load_file on 2 threads (hashing beside the reads) {:.1} ms ~ read (into a new buffer, page faults included) {:.1} ms + checksum {:.1} ms + the copy into the cache",
        bytes.len() as f64 / 1e6,
        ms(save.med),
        ms(sum.med),
        ms(write),
        ms(sync),
        ms(load.med),
        ms(read.med),
        ms(sum.med),
    ));
    let _ = std::fs::remove_file(&other);
}

/// The per-token buffers of a speculative round of `t` tokens per slot.
struct SpecBufs {
    t: usize,
    x: Vec<u8>,
    conv_out: Vec<u8>,
    ssm_x: Vec<u8>,
    dt: Vec<u8>,
    bc: Vec<u8>,
    z: Vec<u8>,
    y: Vec<u8>,
    cu: Vec<u64>,
}

impl Bench {
    fn spec_bufs(&self, t: usize) -> SpecBufs {
        let rows = self.n * t;
        let (h, p, st, g) = (
            self.cfg.num_heads as usize,
            self.cfg.head_dim as usize,
            self.cfg.state_size as usize,
            self.cfg.n_groups as usize,
        );
        let e = dsize(self.io);
        let fill = |len: usize| vec![0x3Cu8; len * e];
        SpecBufs {
            t,
            x: fill(rows * self.conv_dim),
            conv_out: vec![0; rows * self.conv_dim * e],
            ssm_x: fill(rows * h * p),
            dt: fill(rows * h),
            bc: fill(rows * g * st),
            z: fill(rows * h * p),
            y: vec![0; rows * h * p * e],
            cu: (0..=self.n as u64).map(|i| i * t as u64).collect(),
        }
    }

    /// One speculative round over slots `0..n`: begin, verify every layer,
    /// commit `accepted` tokens of each run.
    fn spec_round(&mut self, sb: &mut SpecBufs, accepted: u32) {
        let c = self.cache.get();
        // SAFETY: valid arrays of the stated lengths.
        check(
            unsafe { m2c_spec_begin(c, ptr::null(), self.n, sb.cu.as_ptr(), sb.cu.len(), ptr::null(), 0) },
            "m2c_spec_begin",
        );
        let mut ca = conv_args(self.io, &self.bias);
        let sa = ssm_args(self.io, &self.a, &self.d);
        let io = ssm_io(self.io, &sb.ssm_x, &sb.dt, &sb.bc, &sb.z, &mut sb.y);
        let len = self.n * sb.t * self.conv_dim;
        for l in 0..self.cfg.num_layers {
            ca.weight = self.weights[l as usize].as_ptr();
            ca.weight_len = self.weights[l as usize].len();
            // SAFETY: valid buffers of the stated lengths.
            check(
                unsafe { m2c_conv_verify(c, l, sb.x.as_ptr().cast(), len, sb.conv_out.as_mut_ptr().cast(), len, &ca) },
                "m2c_conv_verify",
            );
            // SAFETY: as above.
            check(unsafe { m2c_ssm_verify(c, l, &io, &sa) }, "m2c_ssm_verify");
        }
        let acc = vec![accepted; self.n];
        // SAFETY: n accepted counts.
        check(unsafe { m2c_spec_commit(c, ptr::null(), self.n, acc.as_ptr()) }, "m2c_spec_commit");
    }

    /// The naive round on a cache of `n * (t + 1)` slots: per draft token a
    /// decode step of slots `0..n` and a copy of their whole state to a
    /// spare block, then the accepted token's copy back.
    fn naive_round(&mut self, t: usize, accepted: usize) {
        let n = self.n as i32;
        let live: Vec<i32> = (0..n).collect();
        for j in 0..t {
            self.conv_step_all();
            self.ssm_step_all();
            let spare: Vec<i32> = (0..n).map(|i| n * (j as i32 + 1) + i).collect();
            // SAFETY: n entries each.
            check(unsafe { m2c_copy_slots(self.cache.get(), live.as_ptr(), spare.as_ptr(), self.n) }, "m2c_copy_slots");
        }
        let keep: Vec<i32> = (0..n).map(|i| n * accepted as i32 + i).collect();
        // SAFETY: n entries each.
        check(unsafe { m2c_copy_slots(self.cache.get(), keep.as_ptr(), live.as_ptr(), self.n) }, "m2c_copy_slots");
    }
}

fn spec(s: &Shape, drafts: usize, rep: &mut Report) {
    let t = drafts + 1;
    let mut b = Bench::new(s);
    let (cb, sb) = (b.conv_bytes(), b.ssm_bytes());
    let iters = if s.iters > 0 {
        s.iters
    } else if sb > (1 << 30) {
        5
    } else {
        15
    };
    rep.note(&header(&b, s, iters));
    rep.note(&describe(b.cache.0));
    // SAFETY: valid handle.
    check(unsafe { m2c_spec_reserve(b.cache.get(), t as u32) }, "m2c_spec_reserve");
    let mut bufs = b.spec_bufs(t);
    let mut naive = Bench::with_cache_slots(s, s.slots * (t as u32 + 1));
    rep.note(&format!(
        "speculative rounds of {t} tokens per slot (1 + {drafts} drafts), {} slots; the naive way runs on a cache of {} slots",
        b.n,
        naive.cfg.num_slots
    ));
    rep.shape(shape_name(&b, s), cb + sb, iters);
    let n = b.n as f64;
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            let step = time(iters, || {
                b.conv_step_all();
                b.ssm_step_all();
            });
            rep.row("decode token (conv_step+ssm_step)", threads, step, cb + sb);
            let mut all = step;
            for k in 1..=t {
                let r = time(iters, || b.spec_round(&mut bufs, k as u32));
                all = r;
                rep.row(&format!("verify {t} + commit {k}"), threads, r, cb + sb);
                rep.note(&format!(
                    "{:<34} {:>3} {:>10.2}x a decode step; {:.1} accepted tokens/s of state work (plain decoding: {:.1})",
                    "",
                    threads,
                    r.med / step.med,
                    k as f64 * n / r.med,
                    n / step.med
                ));
            }
            let nv = time(iters.min(5), || naive.naive_round(t, t));
            rep.row(&format!("naive: {t} x (step + state copy) + copy back"), threads, nv, cb + sb);
            rep.note(&format!(
                "{:<34} {:>3} {:>10.2}x a decode step; m2c's verify + commit of all {t} takes {:.2}x the naive way's time",
                "",
                threads,
                nv.med / step.med,
                all.med / nv.med
            ));
        });
    }
    rep.note(
        "verify T + commit k: m2c_spec_begin, m2c_conv_verify and m2c_ssm_verify on every layer, m2c_spec_commit of k tokens;\n\
         GB/s and 'vs memcpy' count the state once (as for a decode step).",
    );
}

/// The prefix store on one slot's checkpoint: insert into a full store
/// (each insert evicts the least recently used checkpoint and reuses its
/// buffer), restore, the slot snapshot calls an engine would use instead,
/// and lookups of a 128-key chain.
fn store(s: &Shape, rep: &mut Report) {
    let mut b = Bench::new(s);
    // A decode step first, so every slot holds state in touched pages (as
    // an engine's slots do) and no copy below pays first-touch faults.
    b.conv_step_all();
    b.ssm_step_all();
    let c = &b.cfg;
    let slot_bytes = c.num_layers as usize
        * (b.conv_dim * c.conv_width as usize * dsize(c.conv_dtype)
            + (c.num_heads * c.head_dim * c.state_size) as usize * dsize(c.ssm_dtype));
    let iters = if s.iters > 0 { s.iters } else { 15 };
    rep.note(&header(&b, s, iters));
    rep.note(&describe(b.cache.0));
    let mut sc = std::mem::MaybeUninit::<m2c_store_config>::zeroed();
    // SAFETY: valid storage, initialised by the call.
    let mut sc = unsafe {
        m2c_store_config_init(sc.as_mut_ptr());
        sc.assume_init()
    };
    sc.budget_bytes = (2 * slot_bytes + slot_bytes / 2) as u64; // full at two checkpoints
    let mut st = ptr::null_mut();
    // SAFETY: valid pointers.
    check(unsafe { m2c_store_create(&sc, &mut st) }, "m2c_store_create");
    let key = |i: i32| {
        let mut k = m2c_key::default();
        // SAFETY: valid pointers.
        check(unsafe { m2c_key_chain(ptr::null(), &i, 1, &mut k) }, "m2c_key_chain");
        k
    };
    let keys: Vec<m2c_key> = (0..3).map(key).collect();
    rep.note(&format!(
        "one slot's checkpoint: {:.1} MB; the store holds two, so every insert evicts the oldest",
        slot_bytes as f64 / 1e6
    ));
    rep.shape(shape_name(&b, s), slot_bytes, iters);
    let h = b.cache.get();
    let mut snap = vec![0u8; 0];
    let mut snap_len = 0usize;
    // SAFETY: valid pointers.
    check(unsafe { m2c_slot_snapshot_size(h, &mut snap_len) }, "m2c_slot_snapshot_size");
    snap.resize(snap_len, 0);
    for k in &keys[..2] {
        // SAFETY: valid handles and key.
        check(unsafe { m2c_store_insert(st, h, 0, k, ptr::null_mut()) }, "m2c_store_insert");
    }
    let mut next = 2usize;
    for threads in [1u32, 2] {
        // SAFETY: valid handle.
        check(unsafe { m2c_set_num_threads(h, threads) }, "m2c_set_num_threads");
        let t = time(iters, || {
            let k = keys[next % 3];
            next += 1;
            // SAFETY: valid handles and key.
            check(unsafe { m2c_store_insert(st, h, (next % b.n) as i32, &k, ptr::null_mut()) }, "m2c_store_insert");
        });
        rep.row("store insert (slot -> full store)", threads as usize, t, slot_bytes);
        let last = keys[(next - 1) % 3];
        let t = time(iters, || {
            // SAFETY: valid handles and key.
            check(unsafe { m2c_store_restore(st, &last, h, 1) }, "m2c_store_restore");
        });
        rep.row("store restore (store -> slot)", threads as usize, t, slot_bytes);
        let t = time(iters, || {
            let mut w = 0usize;
            // SAFETY: a buffer of the snapshot's size.
            check(unsafe { m2c_slot_save(h, 0, snap.as_mut_ptr().cast(), snap.len(), &mut w) }, "m2c_slot_save");
        });
        rep.row("slot_save (snapshot, instead)", threads as usize, t, slot_bytes);
        let t = time(iters, || {
            // SAFETY: the snapshot just saved.
            check(unsafe { m2c_slot_load(h, 1, snap.as_ptr().cast(), snap.len()) }, "m2c_slot_load");
        });
        rep.row("slot_load (snapshot, instead)", threads as usize, t, slot_bytes);
    }
    // Lookups: a prompt of 128 blocks whose block 63 holds the checkpoint
    // (the scan runs from the last key down).
    let mut chain = vec![m2c_key::default(); 128];
    for i in 0..128 {
        let prev = if i == 0 { ptr::null() } else { &chain[i - 1] as *const m2c_key };
        let toks = [i as i32; 16];
        let mut k = m2c_key::default();
        // SAFETY: valid pointers.
        check(unsafe { m2c_key_chain(prev, toks.as_ptr(), 16, &mut k) }, "m2c_key_chain");
        chain[i] = k;
    }
    // SAFETY: valid handles and key.
    check(unsafe { m2c_store_insert(st, h, 0, &chain[63], ptr::null_mut()) }, "m2c_store_insert");
    const PER: usize = 1000;
    let t = time(iters, || {
        for _ in 0..PER {
            let mut out = std::mem::MaybeUninit::<m2c_lookup>::zeroed();
            // SAFETY: valid storage and pointers.
            unsafe {
                m2c_lookup_init(out.as_mut_ptr());
                check(m2c_store_lookup(st, h, chain.as_ptr(), chain.len(), out.as_mut_ptr()), "m2c_store_lookup");
                black_box(out.assume_init());
            }
        }
    });
    rep.note(&format!(
        "lookup of a 128-key chain (hit at block 64): {:.2} us median ({:.2}..{:.2}), per call over {PER} calls",
        t.med * 1e6 / PER as f64,
        t.min * 1e6 / PER as f64,
        t.max * 1e6 / PER as f64
    ));
    rep.note(
        "store insert/restore and the snapshots move one slot's bytes (every layer); 'vs memcpy' is against a memcpy of those bytes\n\
         on as many threads (m2c_set_num_threads). A snapshot also checksums its bytes.",
    );
    // SAFETY: created above, destroyed once.
    unsafe { m2c_store_destroy(st) };
    capture_cost(s, rep);
}

/// State transfer: the descriptors a transfer engine needs (regions of the
/// slots, resharding plans between tensor-parallel layouts) cost
/// microseconds whatever the state's size; a digest and a resharded
/// snapshot of one slot move its bytes once.
fn transfer(s: &Shape, rep: &mut Report) {
    let mut b = Bench::new(s);
    b.conv_step_all();
    b.ssm_step_all();
    let c = b.cfg;
    let slot_bytes = c.num_layers as usize
        * (b.conv_dim * c.conv_width as usize * dsize(c.conv_dtype)
            + (c.num_heads * c.head_dim * c.state_size) as usize * dsize(c.ssm_dtype));
    let iters = if s.iters > 0 { s.iters } else { 15 };
    rep.note(&header(&b, s, iters));
    rep.note(&describe(b.cache.0));
    rep.shape(shape_name(&b, s), slot_bytes, iters);
    let h = b.cache.get();
    const PER: usize = 200;
    let per_call = |t: Timing| (t.med * 1e6 / PER as f64, t.min * 1e6 / PER as f64, t.max * 1e6 / PER as f64);
    let slots: Vec<i32> = (0..b.n as i32).collect();
    let mut regions = vec![m2c_region::default(); slots.len() * 2 * c.num_layers as usize];
    let t = time(iters, || {
        for _ in 0..PER {
            let mut n = 0usize;
            // SAFETY: valid handle; `regions` holds every run.
            check(
                unsafe {
                    m2c_slot_regions(h, slots.as_ptr(), slots.len(), regions.as_mut_ptr(), regions.len(), &mut n)
                },
                "m2c_slot_regions",
            );
            black_box(n);
        }
    });
    let (m, lo, hi) = per_call(t);
    rep.note(&format!(
        "m2c_slot_regions, {} slots ({} runs): {m:.2} us per call ({lo:.2}..{hi:.2})",
        slots.len(),
        regions.len()
    ));
    // Plans between every pair of layouts of 1, 2 and 4 ranks that the
    // heads allow.
    let full = m2c_config { num_slots: 1, ..c };
    for (src, dst) in [(2u32, 1u32), (1, 2), (2, 4), (4, 2), (4, 1)] {
        let mut n = 0usize;
        // SAFETY: a valid config; (NULL, 0) asks for the length.
        if unsafe { m2c_reshard_plan(&full, src, dst, ptr::null_mut(), 0, &mut n) } != M2C_STATUS_OK {
            continue;
        }
        let mut plan = vec![m2c_reshard_copy::default(); n];
        let t = time(iters, || {
            for _ in 0..PER {
                let mut k = 0usize;
                // SAFETY: `plan` holds `n` runs.
                check(unsafe { m2c_reshard_plan(&full, src, dst, plan.as_mut_ptr(), n, &mut k) }, "m2c_reshard_plan");
                black_box(k);
            }
        });
        let (m, lo, hi) = per_call(t);
        rep.note(&format!("m2c_reshard_plan tp {src} -> {dst} ({n} runs): {m:.2} us per call ({lo:.2}..{hi:.2})"));
    }
    let t = time(iters, || {
        let mut d = 0u64;
        // SAFETY: valid handle and out pointer.
        check(unsafe { m2c_slot_digest(h, 0, &mut d) }, "m2c_slot_digest");
        black_box(d);
    });
    rep.row("slot_digest (one slot)", 1, t, slot_bytes);
    // SAFETY: a live handle.
    check(unsafe { m2c_set_snapshot_format(h, M2C_SNAPSHOT_FORMAT_2) }, "m2c_set_snapshot_format");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let hd = b.cache;
        let t = pool.install(|| {
            time(iters, || {
                let mut d = 0u64;
                // SAFETY: valid handle and out pointer.
                check(unsafe { m2c_slot_digest(hd.get(), 0, &mut d) }, "m2c_slot_digest");
                black_box(d);
            })
        });
        rep.row("slot_digest, format 2", threads, t, slot_bytes);
    }
    // SAFETY: a live handle.
    check(unsafe { m2c_set_snapshot_format(h, M2C_SNAPSHOT_FORMAT_1) }, "m2c_set_snapshot_format");
    // A resharded snapshot: split one slot's snapshot for 2 ranks.
    let mut snap_len = 0usize;
    // SAFETY: valid pointers.
    check(unsafe { m2c_slot_snapshot_size(h, &mut snap_len) }, "m2c_slot_snapshot_size");
    let mut snap = vec![0u8; snap_len];
    let mut w = 0usize;
    // SAFETY: a buffer of the snapshot's size.
    check(unsafe { m2c_slot_save(h, 0, snap.as_mut_ptr().cast(), snap.len(), &mut w) }, "m2c_slot_save");
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for r in 0..2 {
        let mut rc = std::mem::MaybeUninit::<m2c_config>::zeroed();
        let mut sh = std::mem::MaybeUninit::<m2c_shard>::zeroed();
        // SAFETY: valid storage, initialised by the calls.
        let sh = unsafe {
            m2c_config_init(rc.as_mut_ptr());
            m2c_shard_init(sh.as_mut_ptr());
            if m2c_shard_config(&full, 2, r, rc.as_mut_ptr(), sh.as_mut_ptr()) != M2C_STATUS_OK {
                rep.note("(the heads do not split in 2: no resharded snapshot)");
                return;
            }
            sh.assume_init()
        };
        parts.push(vec![0u8; sh.snapshot_bytes as usize]);
    }
    let src = [snap.as_ptr().cast::<std::ffi::c_void>()];
    let src_len = [snap.len()];
    let t = time(iters, || {
        let dst: Vec<*mut std::ffi::c_void> = parts.iter_mut().map(|p| p.as_mut_ptr().cast()).collect();
        let dst_len: Vec<usize> = parts.iter().map(Vec::len).collect();
        // SAFETY: one source and two destination buffers of their lengths.
        check(
            unsafe {
                m2c_snapshot_reshard(&full, 1, src.as_ptr(), src_len.as_ptr(), 2, dst.as_ptr(), dst_len.as_ptr())
            },
            "m2c_snapshot_reshard",
        );
    });
    rep.row("snapshot_reshard (1 -> 2 ranks)", 1, t, slot_bytes);
    rep.note(
        "regions and plans are descriptors: their cost depends on the layer count, not the state's size. The digest reads\n\
         one slot once; a resharded snapshot checks its source (checksum) and writes two (copy and checksum). The loopback\n\
         handoff over UCX (examples/handoff) prints its own throughput beside memcpy: scripts/test-handoff.sh.",
    );
}

/// `m2c_ssm_prefill` of one layer: 2048 tokens per sequence, for 1 and 4
/// sequences, on 1 and 2 threads, beside the FMA peak measured here.
fn prefill(s: &Shape, rep: &mut Report) {
    const T: usize = 2048;
    const SEQS: [usize; 2] = [1, 4];
    let shape = Shape { layers: Some(1), slots: 4, ..s.clone() };
    let b = Bench::with_cache_slots(&shape, 4);
    let c = b.cfg;
    let (hp, nh, gn) =
        ((c.num_heads * c.head_dim) as usize, c.num_heads as usize, (c.n_groups * c.state_size) as usize);
    let elems = hp * c.state_size as usize;
    let e = dsize(b.io);
    let iters = if s.iters > 0 { s.iters } else { 5 };
    rep.note(&header(&b, &shape, iters));
    let peaks = [1, 2].map(fma_peak);
    match peaks[0] {
        Some((p1, isa)) => rep.note(&format!(
            "f32 FMA peak measured here ({isa}, independent chains, 2 flops per lane): {:.1} GFLOP/s on 1 thread, {:.1} on 2",
            p1 / 1e9,
            peaks[1].map_or(0.0, |p| p.0) / 1e9
        )),
        None => rep.note("f32 FMA peak: not measured (no AVX-512F or AVX2+FMA here)"),
    }
    let state_bytes = elems * dsize(c.ssm_dtype);
    rep.shape(format!("{} prefill of {T} tokens per sequence", shape_name(&b, &shape)), 4 * state_bytes, iters);
    let fill = |n: usize| vec![0x3Cu8; n * e];
    let (sx, dt, bc) = (fill(4 * T * hp), fill(4 * T * nh), fill(4 * T * gn));
    let mut y = vec![0u8; 4 * T * hp * e];
    let slots = [0i32, 1, 2, 3];
    for seqs in SEQS {
        let cu: Vec<u64> = (0..=seqs).map(|i| (i * T) as u64).collect();
        let tok = seqs * T;
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            let t = pool.install(|| {
                time(iters, || {
                    let io = ssm_io(
                        b.io,
                        &sx[..tok * hp * e],
                        &dt[..tok * nh * e],
                        &bc[..tok * gn * e],
                        &[],
                        &mut y[..tok * hp * e],
                    );
                    let sa = ssm_args(b.io, &b.a, &b.d);
                    // SAFETY: valid buffers of the stated lengths.
                    check(
                        unsafe {
                            m2c_ssm_prefill(b.cache.get(), 0, slots.as_ptr(), seqs, cu.as_ptr(), cu.len(), &io, &sa)
                        },
                        "m2c_ssm_prefill",
                    );
                })
            });
            rep.row(&format!("ssm_prefill {seqs} x {T} tokens"), threads, t, seqs * state_bytes);
            let flops = 6.0 * elems as f64 * tok as f64 / t.med;
            let peak =
                peaks[threads - 1].map_or(String::new(), |p| format!(", {:.0}% of the FMA peak", 100.0 * flops / p.0));
            rep.note(&format!(
                "{:<34} {:>3} {:>10.0} tokens/s, {:.1} GFLOP/s{peak}",
                "",
                threads,
                tok as f64 / t.med,
                flops / 1e9
            ));
        }
    }
}

/// Issue 20 §2, measured before it is built: a lazy decode step would
/// read each SSM state once to compute `y` (from the stored state and a
/// short ring of the recent tokens) and write nothing, and fold the ring
/// into the state every R tokens with the step's own recurrence. Its cost
/// per token is at least a read-only pass computing `C . state` for every
/// row plus a fold of R tokens divided by R. The fold is measured as
/// `m2c_ssm_prefill` of R tokens per slot (the same recurrence, plus the
/// `y` sums a fold would not need: 2 of its 5 vector operations per
/// element and token, so a second bound takes 3/5 of it).
fn lazy(s: &Shape, rep: &mut Report) {
    let mut b = Bench::new(s);
    let c = b.cfg;
    let bf16 = match c.ssm_dtype {
        M2C_DTYPE_F32 => false,
        M2C_DTYPE_BF16 => true,
        _ => {
            eprintln!("m2c-bench: --lazy measures f32 or bf16 state");
            std::process::exit(2);
        }
    };
    let iters = if s.iters > 0 { s.iters } else { 5 };
    rep.note(&header(&b, s, iters));
    let sb = b.ssm_bytes();
    rep.shape(shape_name(&b, s), sb, iters);
    let (n, heads, p, st, g) =
        (b.n, c.num_heads as usize, c.head_dim as usize, c.state_size as usize, c.n_groups as usize);
    let (hp, gn) = (heads * p, g * st);
    // Each layer's state: address and strides of [slot, head, row, n].
    let views: Vec<(usize, [u64; 4])> = (0..c.num_layers)
        .map(|l| {
            let mut t = std::mem::MaybeUninit::<m2c_tensor>::zeroed();
            // SAFETY: live handle, valid output.
            check(unsafe { m2c_ssm_view(b.cache.get(), l, t.as_mut_ptr()) }, "m2c_ssm_view");
            // SAFETY: written by the successful call.
            let t = unsafe { t.assume_init() };
            (t.data as usize, t.strides)
        })
        .collect();
    let cv: Vec<f32> = (0..gn).map(|i| 0.01 + 1e-4 * i as f32).collect();
    const RS: [usize; 4] = [2, 4, 8, 16];
    let e = dsize(b.io);
    let fill = |len: usize| vec![0x3Cu8; len * e];
    let rmax = RS[RS.len() - 1];
    let (fx, fdt, fbc) = (fill(n * rmax * hp), fill(n * rmax * heads), fill(n * rmax * gn));
    let mut fy = vec![0u8; n * rmax * hp * e];
    let slots: Vec<i32> = (0..n as i32).collect();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            use rayon::prelude::*;
            let step = time(iters, || b.ssm_step_all());
            rep.row("ssm_step (today's decode step)", threads, step, sb);
            let ypass = time(iters, || {
                let total: f32 = views
                    .par_iter()
                    .map(|&(addr, strides)| {
                        let mut acc = 0f32;
                        for slot in 0..n {
                            for h in 0..heads {
                                let cg = &cv[(h / (heads / g)) * st..][..st];
                                for row in 0..p {
                                    let off = slot as u64 * strides[0] + h as u64 * strides[1] + row as u64 * strides[2];
                                    // SAFETY: `off` indexes a row of `st` elements inside the layer's
                                    // state (the view's shape and strides); nothing writes it meanwhile.
                                    acc += unsafe { dot::row(addr, off as usize, st, bf16, cg) };
                                }
                            }
                        }
                        acc
                    })
                    .sum();
                black_box(total);
            });
            rep.row("lazy y: read-only C . state pass", threads, ypass, sb);
            for r in RS {
                let cu: Vec<u64> = (0..=n).map(|i| (i * r) as u64).collect();
                let fold = time(iters, || {
                    let io =
                        ssm_io(b.io, &fx[..n * r * hp * e], &fdt[..n * r * heads * e], &fbc[..n * r * gn * e], &[], &mut fy[..n * r * hp * e]);
                    let sa = ssm_args(b.io, &b.a, &b.d);
                    for l in 0..c.num_layers {
                        // SAFETY: valid buffers of the stated lengths.
                        check(
                            unsafe { m2c_ssm_prefill(b.cache.get(), l, slots.as_ptr(), n, cu.as_ptr(), cu.len(), &io, &sa) },
                            "m2c_ssm_prefill",
                        );
                    }
                });
                rep.row(&format!("fold of {r} tokens (as ssm_prefill)"), threads, fold, sb);
                let per = ypass.med + fold.med / r as f64;
                let per_no_y = ypass.med + 0.6 * fold.med / r as f64;
                rep.note(&format!(
                    "{:<34} {:>3} R = {r}: a lazy token costs at least {:.1} ms ({:.2}x the step's speed), {:.1} ms ({:.2}x) with a fold \
                     without y sums; target 1.6x",
                    "",
                    threads,
                    per * 1e3,
                    step.med / per,
                    per_no_y * 1e3,
                    step.med / per_no_y
                ));
            }
        });
    }
}

/// Issue 20 §1: the ring conv layout against the oldest-first one, for 1
/// and `--slots` slots: `m2c_update_conv` (x in the activations' dtype)
/// and `m2c_conv_step` over every layer per token, each beside a memcpy of
/// the conv state; then the JAX peer's window update for the same shape,
/// run as a child process when JAX is importable.
fn ring(s: &Shape, rep: &mut Report) {
    let iters = if s.iters > 0 { s.iters } else { 51 };
    let mut counts = vec![1u32];
    if s.slots != 1 {
        counts.push(s.slots);
    }
    for (i, &slots) in counts.iter().enumerate() {
        let sh = Shape { slots, ..s.clone() };
        let mut old = Bench::new(&sh);
        let mut ring = Bench::new(&sh);
        // SAFETY: a live handle.
        check(unsafe { m2c_set_conv_layout(ring.cache.get(), M2C_CONV_LAYOUT_RING) }, "m2c_set_conv_layout");
        if i == 0 {
            rep.note(&header(&old, &sh, iters));
        }
        let (cfg, n, dim, io) = (old.cfg, old.n, old.conv_dim, old.io);
        let (ho, hr) = (old.cache, ring.cache);
        let cb = old.conv_bytes();
        rep.shape(format!("{}, conv state only", shape_name(&old, &sh)), cb, iters);
        let x = vec![0x3Cu8; n * dim * dsize(io)];
        let update = |h: Handle| {
            for l in 0..cfg.num_layers {
                // SAFETY: valid buffers of the stated lengths.
                check(
                    unsafe { m2c_update_conv(h.get(), l, ptr::null(), n, x.as_ptr().cast(), io, n * dim) },
                    "m2c_update_conv",
                );
            }
        };
        let mut ring_update = 0.0;
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                // Alternate the layouts (two rounds each) so that drift of
                // the machine between them shows in both.
                let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
                for _ in 0..2 {
                    t[0].push(time(iters, || update(ho)));
                    t[1].push(time(iters, || update(hr)));
                    t[2].push(time(iters, || old.conv_step_all()));
                    t[3].push(time(iters, || ring.conv_step_all()));
                }
                let best = |v: &[Timing]| *v.iter().min_by(|a, b| a.med.total_cmp(&b.med)).expect("two rounds");
                let [uo, ur, so, sr] = [best(&t[0]), best(&t[1]), best(&t[2]), best(&t[3])];
                rep.row("update_conv, oldest-first", threads, uo, cb);
                rep.row("update_conv, ring", threads, ur, cb);
                rep.row("conv_step, oldest-first", threads, so, cb);
                rep.row("conv_step, ring", threads, sr, cb);
                rep.note(&format!(
                    "{:<34} {:>3} ring vs oldest-first: update_conv {:.2}x, conv_step {:.2}x faster",
                    "",
                    threads,
                    uo.med / ur.med,
                    so.med / sr.med
                ));
                if threads == 1 {
                    ring_update = ur.med;
                }
            });
        }
        match jax_update(&sh, cfg.num_layers, cfg.conv_dtype) {
            Ok((line, ms)) => rep.note(&format!(
                "{line}\n  -> m2c_update_conv in the ring layout (1 thread) is {:.1}x faster than this peer (target 20x)",
                ms / 1e3 / ring_update
            )),
            Err(why) => rep.note(&format!("JAX peer not run: {why}")),
        }
    }
}

/// Runs `jax_baseline.py --update-conv` for the shape and returns its
/// result line and milliseconds per token.
fn jax_update(s: &Shape, layers: u32, conv: m2c_dtype) -> Result<(String, f64), String> {
    if s.model != "2.7b" || conv == M2C_DTYPE_F16 {
        return Err("the JAX baseline has Mamba2-2.7B shapes and f32 or bf16 windows (--model 2.7b)".into());
    }
    // The interpreter: M2C_BENCH_PYTHON, else the venv the Python tests
    // build (it has JAX), else python3.
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/py-venv/bin/python");
    let python = std::env::var("M2C_BENCH_PYTHON")
        .unwrap_or_else(|_| if std::path::Path::new(venv).exists() { venv.to_string() } else { "python3".to_string() });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/baselines/jax_baseline.py");
    let out = std::process::Command::new(&python)
        .args([script, "--update-conv", "--slots", &s.slots.to_string(), "--layers", &layers.to_string()])
        .args(["--conv", dname(conv)])
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("update_conv_state")).map(str::to_string);
    match (out.status.success(), line) {
        (true, Some(line)) => {
            let ms = line
                .rsplit(": ")
                .next()
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("cannot read the time in '{line}'"))?;
            Ok((line, ms))
        }
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{python} {script} --update-conv failed ({}); install JAX (pip install jax) to compare: {}",
                out.status,
                err.lines().last().unwrap_or("")
            ))
        }
    }
}

/// The dot product of one state row with C, for [`lazy`].
mod dot {
    /// `sum_n state[off + n] * c[n]` over `len` elements of an f32 (or,
    /// with `bf16`, bf16) state at address `addr`.
    ///
    /// # Safety
    /// `len` elements at element offset `off` from `addr` are readable.
    pub unsafe fn row(addr: usize, off: usize, len: usize, bf16: bool, c: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && len.is_multiple_of(16) {
            // SAFETY: the features were detected; the caller's promise.
            return unsafe { row512(addr, off, len, bf16, c) };
        }
        let mut s = 0f32;
        for (i, &cv) in c.iter().enumerate().take(len) {
            // SAFETY: the caller's promise.
            let v = unsafe {
                if bf16 {
                    f32::from_bits(u32::from(*(addr as *const u16).add(off + i)) << 16)
                } else {
                    *(addr as *const f32).add(off + i)
                }
            };
            s += v * cv;
        }
        s
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn row512(addr: usize, off: usize, len: usize, bf16: bool, c: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        let mut acc = [_mm512_setzero_ps(); 2];
        for j in 0..len / 16 {
            // SAFETY: 16 elements at `off + 16 j` (the caller's promise) and in `c`.
            unsafe {
                let v = if bf16 {
                    let p = (addr as *const u16).add(off + 16 * j);
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
                } else {
                    _mm512_loadu_ps((addr as *const f32).add(off + 16 * j))
                };
                acc[j & 1] = _mm512_fmadd_ps(v, _mm512_loadu_ps(c.as_ptr().add(16 * j)), acc[j & 1]);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }
}

/// The f32 FMA rate (flop/s, 2 per lane per FMA) of `threads` threads each
/// running independent FMA chains (enough to hide the latency), and the
/// instruction set used; `None` without AVX-512F or AVX2+FMA.
fn fma_peak(threads: usize) -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        const ITERS: usize = 20_000_000;
        let (isa, lanes, f): (&str, usize, unsafe fn(usize) -> f32) = if is_x86_feature_detected!("avx512f") {
            ("AVX-512", 16, fma::chains512)
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            ("AVX2", 8, fma::chains256)
        } else {
            return None;
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let t = time(3, || {
            pool.scope(|s| {
                for _ in 0..threads {
                    // SAFETY: the feature was detected above.
                    s.spawn(move |_| {
                        black_box(unsafe { f(black_box(ITERS)) });
                    });
                }
            })
        });
        Some(((threads * ITERS * fma::CHAINS * lanes * 2) as f64 / t.med, isa))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// Independent FMA chains for [`fma_peak`].
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// Chains per loop: two FMA ports of four cycles' latency need eight.
    pub const CHAINS: usize = 12;

    /// `iters` rounds of `CHAINS` 16-lane FMAs; the result keeps them live.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains512(iters: usize) -> f32 {
        let m = _mm512_set1_ps(0.999_999);
        let a = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// As [`chains512`], 8 lanes wide.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains256(iters: usize) -> f32 {
        let m = _mm256_set1_ps(0.999_999);
        let a = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        let mut out = [0f32; 8];
        for v in acc {
            let mut l = [0f32; 8];
            // SAFETY: 8 writable lanes.
            unsafe { _mm256_storeu_ps(l.as_mut_ptr(), v) };
            for (o, x) in out.iter_mut().zip(l) {
                *o += x;
            }
        }
        out.iter().sum()
    }
}

/// A 2048-token prompt prefilled through a few layers, plain and with a
/// checkpoint captured every 512 tokens (m2c_capture_begin / _end).
fn capture_cost(s: &Shape, rep: &mut Report) {
    const T: usize = 2048;
    let layers = s.layers.unwrap_or(4).min(4);
    let shape = Shape { layers: Some(layers), slots: 1, ..s.clone() };
    let b = Bench::with_cache_slots(&shape, 1);
    let c = b.cfg;
    let h = b.cache.get();
    let (dim, hp, nh, gn) =
        (b.conv_dim, (c.num_heads * c.head_dim) as usize, c.num_heads as usize, (c.n_groups * c.state_size) as usize);
    let e = dsize(b.io);
    let fill = |n: usize| vec![0x3Cu8; n * e];
    let (x, sx, dt, bc) = (fill(T * dim), fill(T * hp), fill(T * nh), fill(T * gn));
    let (mut out, mut y) = (vec![0u8; T * dim * e], vec![0u8; T * hp * e]);
    let slot = [0i32];
    // The prompt in calls of `chunk` tokens per layer.
    let mut prefill = |chunk: usize| {
        for l in 0..c.num_layers {
            let mut ca = conv_args(b.io, &b.bias);
            ca.weight = b.weights[l as usize].as_ptr();
            ca.weight_len = b.weights[l as usize].len();
            let sa = ssm_args(b.io, &b.a, &b.d);
            for t0 in (0..T).step_by(chunk) {
                let n = chunk.min(T - t0);
                let cu = [0u64, n as u64];
                let (a, z) = (t0 * e, (t0 + n) * e);
                let bcs = &bc[a * gn..z * gn];
                let io = ssm_io(b.io, &sx[a * hp..z * hp], &dt[a * nh..z * nh], bcs, &[], &mut y[a * hp..z * hp]);
                // SAFETY: valid buffers of the stated lengths.
                unsafe {
                    let (xp, op) = (x[a * dim..].as_ptr().cast(), out[a * dim..].as_mut_ptr().cast());
                    check(
                        m2c_conv_prefill(h, l, slot.as_ptr(), 1, cu.as_ptr(), 2, xp, n * dim, op, n * dim, &ca),
                        "m2c_conv_prefill",
                    );
                    check(m2c_ssm_prefill(h, l, slot.as_ptr(), 1, cu.as_ptr(), 2, &io, &sa), "m2c_ssm_prefill");
                }
            }
        }
    };
    let mut sc = std::mem::MaybeUninit::<m2c_store_config>::zeroed();
    // SAFETY: valid storage, initialised by the call.
    let mut sc = unsafe {
        m2c_store_config_init(sc.as_mut_ptr());
        sc.assume_init()
    };
    let mut one = 0u64;
    let mut c1 = c;
    c1.num_slots = 1;
    // SAFETY: valid pointers.
    check(unsafe { m2c_config_bytes(&c1, &mut one) }, "m2c_config_bytes");
    sc.budget_bytes = 5 * one;
    let mut st = ptr::null_mut();
    // SAFETY: valid pointers.
    check(unsafe { m2c_store_create(&sc, &mut st) }, "m2c_store_create");
    let points: Vec<m2c_capture_point> = (1..=4)
        .map(|i| {
            let mut key = m2c_key::default();
            let tok = i;
            // SAFETY: valid pointers.
            check(unsafe { m2c_key_chain(ptr::null(), &tok, 1, &mut key) }, "m2c_key_chain");
            m2c_capture_point { slot: 0, tokens: (i * 512) as u64, key }
        })
        .collect();
    let iters = if s.iters > 0 { s.iters } else { 5 };
    // The three ways run in turn within each round, and each round's
    // ratios are taken before the medians, so that the machine's drift
    // between rounds cancels.
    let (mut tp, mut tc, mut tk, mut r_plain, mut r_chunk) = (vec![], vec![], vec![], vec![], vec![]);
    let run = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        f();
        t0.elapsed().as_secs_f64()
    };
    prefill(T); // warm-up
    for _ in 0..iters {
        let p = run(&mut || prefill(T));
        let k = run(&mut || prefill(512));
        let c = run(&mut || {
            // SAFETY: valid pointers.
            check(unsafe { m2c_capture_begin(h, st, points.as_ptr(), points.len()) }, "m2c_capture_begin");
            prefill(T);
            // SAFETY: valid handles; no per-point answers asked.
            check(unsafe { m2c_capture_end(h, st, ptr::null_mut(), 0) }, "m2c_capture_end");
        });
        tp.push(p);
        tk.push(k);
        tc.push(c);
        r_plain.push(c / p);
        r_chunk.push(c / k);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    rep.note(&format!(
        "prefill of {T} tokens through {layers} layers: one call per layer {:.1} ms, calls of 512 tokens {:.1} ms, one call \
         capturing a checkpoint every 512 tokens (4 of {:.1} MB, into the store) {:.1} ms: {:+.1}% over one call, {:+.1}% over \
         calls of 512 (medians of {iters} rounds; the percentages are medians of each round's ratio)",
        med(&mut tp) * 1e3,
        med(&mut tk) * 1e3,
        one as f64 / 1e6,
        med(&mut tc) * 1e3,
        (med(&mut r_plain) - 1.0) * 100.0,
        (med(&mut r_chunk) - 1.0) * 100.0
    ));
    // SAFETY: created above, destroyed once.
    unsafe { m2c_store_destroy(st) };
}

fn matrix(base: &Shape, rep: &mut Report) {
    rep.note("decode-kernel matrix (activations f32, conv state bf16, width K); columns as in the table mode");
    let pools: Vec<(usize, rayon::ThreadPool)> =
        [1, 2].iter().map(|&t| (t, rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("pool"))).collect();
    for model in ["130m", "2.7b"] {
        for slots in [1u32, 8, 32] {
            for ssm in [M2C_DTYPE_F32, M2C_DTYPE_BF16] {
                let s = Shape { model: model.into(), slots, ssm_dtype: ssm, ..base.clone() };
                let mut b = Bench::new(&s);
                let (cb, sb) = (b.conv_bytes(), b.ssm_bytes());
                let iters = if base.iters > 0 {
                    base.iters
                } else if sb > (1 << 30) {
                    3
                } else if sb > (1 << 27) {
                    7
                } else {
                    15
                };
                rep.note(&format!("-- Mamba2-{model}, {slots} slots, ssm {}", dname(ssm)));
                rep.shape(shape_name(&b, &s), cb + sb, iters.min(5));
                for (t, pool) in &pools {
                    pool.install(|| {
                        let tc = time(iters, || b.conv_step_all());
                        let ts = time(iters, || b.ssm_step_all());
                        let tt = time(iters, || {
                            b.conv_step_all();
                            b.ssm_step_all();
                        });
                        rep.row("conv_step", *t, tc, cb);
                        rep.row("ssm_step", *t, ts, sb);
                        rep.row("decode token (conv_step+ssm_step)", *t, tt, cb + sb);
                    });
                }
            }
        }
    }
}

/// Runs `steps` decode steps of one head through m2c with each storage
/// dtype and through an f64 model, and reports how far each drifts.
fn fidelity(steps: usize) {
    let (p, n) = (64usize, 128usize);
    println!(
        "SSM state fidelity over {steps} decode steps (one layer, 1 head of {p}x{n}, Mamba2-like dt/A, f32 activations)"
    );
    println!("{:<6} {:>14} {:>14} {:>14} {:>14}", "state", "state rel err", "y rel err", "y max abs err", "at step");
    let mut rng = m2c_testkit::Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut next = || rng.unit();
    // Inputs for every step, shared by all runs.
    let xs: Vec<f32> = (0..steps * p).map(|_| next()).collect();
    let dts: Vec<f32> = (0..steps).map(|_| next() * 2.0 - 2.0).collect();
    let bs: Vec<f32> = (0..steps * n).map(|_| next()).collect();
    let cs: Vec<f32> = (0..steps * n).map(|_| next()).collect();
    let a = [-0.3f32];
    let d = [1.0f32];
    // f64 reference.
    let mut st = vec![0f64; p * n];
    let mut ref_y = vec![0f64; steps * p];
    for t in 0..steps {
        let dt = (dts[t] as f64).exp().ln_1p();
        let da = (dt * a[0] as f64).exp();
        for pp in 0..p {
            let xv = xs[t * p + pp] as f64;
            let mut acc = 0f64;
            for nn in 0..n {
                let s = &mut st[pp * n + nn];
                *s = *s * da + dt * xv * bs[t * n + nn] as f64;
                acc += *s * cs[t * n + nn] as f64;
            }
            ref_y[t * p + pp] = acc + d[0] as f64 * xv;
        }
    }
    for dt_code in [M2C_DTYPE_F32, M2C_DTYPE_BF16, M2C_DTYPE_F16] {
        let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
        // SAFETY: valid storage.
        unsafe { m2c_config_init(cfg.as_mut_ptr()) };
        // SAFETY: initialised.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.num_layers = 1;
        cfg.num_heads = 1;
        cfg.head_dim = p as u32;
        cfg.intermediate_size = p as u32;
        cfg.state_size = n as u32;
        cfg.ssm_dtype = dt_code;
        let mut cache = ptr::null_mut();
        // SAFETY: valid pointers.
        check(unsafe { m2c_create(&cfg, &mut cache) }, "m2c_create");
        let mut args = std::mem::MaybeUninit::<m2c_ssm_args>::zeroed();
        let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
        // SAFETY: valid storage.
        unsafe {
            m2c_ssm_args_init(args.as_mut_ptr());
            m2c_ssm_io_init(io.as_mut_ptr());
        }
        // SAFETY: initialised.
        let (mut args, mut io) = unsafe { (args.assume_init(), io.assume_init()) };
        args.A = a.as_ptr();
        args.A_len = 1;
        args.D = d.as_ptr();
        args.D_len = 1;
        let mut y = vec![0f32; p];
        let mut worst_y = (0f64, 0f64, 0usize);
        for t in 0..steps {
            io.x = xs[t * p..].as_ptr().cast();
            io.x_len = p;
            io.dt = dts[t..].as_ptr().cast();
            io.dt_len = 1;
            io.B = bs[t * n..].as_ptr().cast();
            io.B_len = n;
            io.C = cs[t * n..].as_ptr().cast();
            io.C_len = n;
            io.y = y.as_mut_ptr().cast();
            io.y_len = p;
            // SAFETY: valid buffers.
            check(unsafe { m2c_ssm_step(cache, 0, ptr::null(), 1, &io, &args) }, "m2c_ssm_step");
            let scale = ref_y[t * p..(t + 1) * p].iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
            let err = y.iter().zip(&ref_y[t * p..]).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
            if err / scale > worst_y.0 {
                worst_y = (err / scale, err, t);
            }
        }
        let mut out = vec![0f32; p * n];
        // SAFETY: valid buffer.
        check(
            unsafe { m2c_read_ssm(cache, 0, ptr::null(), 1, out.as_mut_ptr().cast(), M2C_DTYPE_F32, p * n) },
            "m2c_read_ssm",
        );
        let scale = st.iter().fold(0f64, |m, v| m.max(v.abs()));
        let serr = out.iter().zip(&st).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs())) / scale;
        println!("{:<6} {:>14.3e} {:>14.3e} {:>14.3e} {:>14}", dname(dt_code), serr, worst_y.0, worst_y.1, worst_y.2);
        // SAFETY: handle from m2c_create.
        unsafe { m2c_destroy(cache) };
    }
    println!(
        "state rel err: max |state - f64 state| / max |f64 state| after the last step; y: the worst step's max error relative to that step's largest |y|."
    );
    tier_fidelity(steps, &xs, &dts, &bs, &cs);
}

/// Prefix-store tiers: a slot checkpointed after the first half of the
/// steps and restored from a full, a bf16 and an int8 store, then decoded
/// through the second half beside the slot that never left the cache
/// (f32 state).
fn tier_fidelity(steps: usize, xs: &[f32], dts: &[f32], bs: &[f32], cs: &[f32]) {
    let (p, n) = (64usize, 128usize);
    let warm = steps / 2;
    let after = steps - warm;
    let mut cfg = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage, initialised by the call.
    let mut cfg = unsafe {
        m2c_config_init(cfg.as_mut_ptr());
        cfg.assume_init()
    };
    cfg.num_layers = 1;
    cfg.num_slots = 4;
    cfg.num_heads = 1;
    cfg.head_dim = p as u32;
    cfg.intermediate_size = p as u32;
    cfg.state_size = n as u32;
    cfg.ssm_dtype = M2C_DTYPE_F32;
    let mut cache = ptr::null_mut();
    // SAFETY: valid pointers.
    check(unsafe { m2c_create(&cfg, &mut cache) }, "m2c_create");
    let (a, d) = ([-0.3f32], [1.0f32]);
    let mut args = ssm_args(M2C_DTYPE_F32, &a, &d);
    args.A_len = 1;
    // Each step: the same token in every row given.
    let step = |t: usize, rows: &[i32], y: &mut [f32]| {
        let r = rows.len();
        let rep = |v: &[f32]| v.iter().copied().cycle().take(v.len() * r).collect::<Vec<f32>>();
        let (x, dt, b, c) = (
            rep(&xs[t * p..(t + 1) * p]),
            rep(&dts[t..t + 1]),
            rep(&bs[t * n..(t + 1) * n]),
            rep(&cs[t * n..(t + 1) * n]),
        );
        let mut io = std::mem::MaybeUninit::<m2c_ssm_io>::zeroed();
        // SAFETY: valid storage; buffers of the stated lengths.
        unsafe {
            m2c_ssm_io_init(io.as_mut_ptr());
            let mut io = io.assume_init();
            (io.x, io.x_len, io.dt, io.dt_len) = (x.as_ptr().cast(), x.len(), dt.as_ptr().cast(), dt.len());
            (io.B, io.B_len, io.C, io.C_len) = (b.as_ptr().cast(), b.len(), c.as_ptr().cast(), c.len());
            (io.y, io.y_len) = (y.as_mut_ptr().cast(), y.len());
            check(m2c_ssm_step(cache, 0, rows.as_ptr(), r, &io, &args), "m2c_ssm_step");
        }
    };
    let mut y1 = vec![0f32; p];
    for t in 0..warm {
        step(t, &[0], &mut y1);
    }
    let mut key = m2c_key::default();
    let tok = 1;
    // SAFETY: valid pointers.
    check(unsafe { m2c_key_chain(ptr::null(), &tok, 1, &mut key) }, "m2c_key_chain");
    let tiers = [(M2C_TIER_FULL, "full"), (M2C_TIER_BF16, "bf16"), (M2C_TIER_INT8, "int8")];
    for (i, (tier, _)) in tiers.iter().enumerate() {
        let mut sc = std::mem::MaybeUninit::<m2c_store_config>::zeroed();
        // SAFETY: valid storage and pointers.
        unsafe {
            m2c_store_config_init(sc.as_mut_ptr());
            let mut sc = sc.assume_init();
            sc.tier = *tier;
            let mut st = ptr::null_mut();
            check(m2c_store_create(&sc, &mut st), "m2c_store_create");
            check(m2c_store_insert(st, cache, 0, &key, ptr::null_mut()), "m2c_store_insert");
            check(m2c_store_restore(st, &key, cache, i as i32 + 1), "m2c_store_restore");
            m2c_store_destroy(st);
        }
    }
    let state_err = || {
        let mut st = vec![0f32; 4 * p * n];
        // SAFETY: valid buffer.
        check(
            unsafe { m2c_read_ssm(cache, 0, ptr::null(), 4, st.as_mut_ptr().cast(), M2C_DTYPE_F32, st.len()) },
            "m2c_read_ssm",
        );
        let scale = st[..p * n].iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
        let err = |i: usize| {
            let (a, b) = (&st[(i + 1) * p * n..(i + 2) * p * n], &st[..p * n]);
            a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64)) / scale
        };
        [err(0), err(1), err(2)]
    };
    let at_restore = state_err();
    let rows = [0i32, 1, 2, 3];
    let mut y = vec![0f32; 4 * p];
    let mut worst = [0f64; 3];
    for t in warm..steps {
        step(t, &rows, &mut y);
        let scale = y[..p].iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
        for (i, w) in worst.iter_mut().enumerate() {
            let e = y[(i + 1) * p..(i + 2) * p].iter().zip(&y[..p]).fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
            *w = w.max(e / scale);
        }
    }
    let at_end = state_err();
    println!(
        "\nprefix-store tiers: a checkpoint after {warm} steps restored, then {after} more steps beside the slot that stayed (f32 state)"
    );
    println!("{:<6} {:>16} {:>24} {:>20}", "tier", "y rel err", "state rel err, restore", "state rel err, end");
    for (i, (_, name)) in tiers.iter().enumerate() {
        println!("{:<6} {:>16.3e} {:>24.3e} {:>20.3e}", name, worst[i], at_restore[i], at_end[i]);
    }
    println!(
        "y: the worst step's max |y - y of the slot that stayed| relative to that step's largest |y|; the state decays, so its error fades."
    );
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(cache) };
}

fn main() -> ExitCode {
    let (mode, shape, steps, format, drafts) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("m2c-bench: {e}\nm2c-bench --help lists the modes and flags");
            return ExitCode::from(2);
        }
    };
    let mut rep = Report::new(format);
    match mode {
        Mode::Matrix => matrix(&shape, &mut rep),
        Mode::Fidelity => fidelity(steps),
        Mode::Spec => spec(&shape, drafts, &mut rep),
        Mode::Store => store(&shape, &mut rep),
        Mode::Transfer => transfer(&shape, &mut rep),
        Mode::Prefill => prefill(&shape, &mut rep),
        Mode::Lazy => lazy(&shape, &mut rep),
        Mode::Ring => ring(&shape, &mut rep),
        Mode::Table => table(&shape, &mut rep),
    }
    rep.finish();
    ExitCode::SUCCESS
}
