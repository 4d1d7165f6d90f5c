//! m2c's own thread pool, and the floating-point mode its kernels run in.
//!
//! Large batched calls split their rows over a pool of threads. The pool is
//! m2c's own `rayon::ThreadPool` (never rayon's global pool, which can be
//! initialised only once per process and panics when it cannot start):
//!
//! - It is built lazily, by the first call big enough to use it; a call
//!   decides that from its size before it touches the pool.
//! - Building it is fallible: when the threads cannot be started (memory
//!   or thread limits, a pids cgroup), every call runs on the calling
//!   thread from then on, with the same results.
//! - After `fork()` the child has no pool threads: a `pthread_atfork` child
//!   handler makes every call in the child run on its calling thread.
//! - A call made from inside a rayon pool of the caller's (a Rust host
//!   running m2c from its own workers) uses that pool instead.
//!
//! Its size is `M2C_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the
//! number of CPUs the process may use, read once when it is built.
//!
//! The kernels' results do not depend on the caller's floating-point mode:
//! [`with_default_fp`] runs a call with MXCSR at its default (round to
//! nearest, no flush-to-zero, no denormals-are-zero) and restores the
//! caller's afterwards, and the pool's threads start in that mode.

use rayon::ThreadPool;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
/// Pools of a size a cache asked for (`with_limit`), built on first use.
static SIZED: std::sync::Mutex<Vec<(usize, Option<&'static ThreadPool>)>> = std::sync::Mutex::new(Vec::new());
/// Jobs run on m2c's pools (test support: a count that must not move
/// while a cache runs on its calling thread only).
static JOBS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    static POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The thread limit of the call running on this thread (`with_limit`).
    static LIMIT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` (one call on one cache) with at most `limit` threads: 0 means
/// m2c's pool, 1 the calling thread only, `n` a pool of `n` threads of its
/// own (built on first use, shared by every cache asking for `n`).
pub fn with_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = LIMIT.try_with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LIMIT.with(|l| l.replace(limit)));
    f()
}

/// Jobs m2c has run on its pools so far.
#[doc(hidden)]
pub fn jobs_run() -> u64 {
    JOBS.load(Ordering::Relaxed)
}

/// A pool of exactly `n` threads, if it can be built.
fn sized(n: usize) -> Option<&'static ThreadPool> {
    let mut pools = SIZED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(k, _)| *k == n) {
        return *p;
    }
    let built = build(n).map(|p| &*Box::leak(Box::new(p)));
    pools.push((n, built));
    built
}

/// The pool the calling thread's call may use.
fn current() -> Option<&'static ThreadPool> {
    match LIMIT.with(|l| l.get()) {
        0 => pool(),
        1 => None,
        n => sized(n),
    }
}

/// Whether the calling thread is one of m2c's pool threads (for a panic
/// hook that keeps m2c's own panics quiet).
pub fn on_pool_thread() -> bool {
    POOL_THREAD.with(|t| t.get())
}
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn forked_child() {
    FORKED.store(true, Ordering::Relaxed);
}

fn size_from_env() -> Option<usize> {
    ["M2C_NUM_THREADS", "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok().filter(|&n| n > 0))
}

fn pool() -> Option<&'static ThreadPool> {
    POOL.get_or_init(|| {
        build(size_from_env().unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
    })
    .as_ref()
}

/// A pool of `n` threads, or None when `n < 2` or it cannot start.
fn build(n: usize) -> Option<ThreadPool> {
    if n < 2 {
        return None;
    }
    static ATFORK: OnceLock<bool> = OnceLock::new();
    // SAFETY: registers a handler that only stores to an atomic, which is
    // async-signal-safe as a fork child handler must be.
    if !*ATFORK.get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(forked_child)) } == 0) {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("m2c-{i}"))
        .start_handler(|_| {
            POOL_THREAD.with(|t| t.set(true));
            set_default_fp();
        })
        .build()
        .ok()
}

/// How many threads a call may split its rows over: 1 when it must run on
/// the calling thread. Call it only once the call is known to be big
/// enough for the pool (the first such call builds it).
pub(crate) fn threads() -> usize {
    if LIMIT.with(|l| l.get()) == 1 {
        return 1;
    }
    if rayon::current_thread_index().is_some() {
        return rayon::current_num_threads();
    }
    if FORKED.load(Ordering::Relaxed) {
        return 1;
    }
    current().map_or(1, ThreadPool::current_num_threads)
}

/// Runs `f` with the pool current, so that its parallel iterators use the
/// pool's threads. Call it only when [`threads`] is above 1.
pub(crate) fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || FORKED.load(Ordering::Relaxed) {
        return f();
    }
    match current() {
        Some(p) => p.install(|| {
            JOBS.fetch_add(1, Ordering::Relaxed);
            f()
        }),
        None => f(),
    }
}

/// The default MXCSR: every exception masked, round to nearest, no
/// flush-to-zero, no denormals-are-zero.
#[cfg(target_arch = "x86_64")]
const DEFAULT_MXCSR: u32 = 0x1F80;

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stmxcsr stores the 32-bit MXCSR to the given address.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(v: u32) {
    // SAFETY: ldmxcsr loads a valid MXCSR value (reserved bits clear: the
    // value is the default or one read from the register).
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, preserves_flags, readonly)) };
}

fn set_default_fp() {
    #[cfg(target_arch = "x86_64")]
    set_mxcsr(DEFAULT_MXCSR);
}

/// Runs `f` in the default floating-point mode and restores the calling
/// thread's mode afterwards (also when `f` panics), so that a host running
/// with flush-to-zero or denormals-are-zero gets the same bits as any
/// other.
pub fn with_default_fp<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        struct Restore(u32);
        impl Drop for Restore {
            fn drop(&mut self) {
                set_mxcsr(self.0);
            }
        }
        let saved = mxcsr();
        // Keep the sticky exception flags the caller had; change only the
        // mode bits.
        let _restore = Restore(saved);
        set_mxcsr(DEFAULT_MXCSR | (saved & 0x3F));
        f()
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}
