//! Faults injected from outside the library, through the C ABI:
//!
//! - caches whose byte count exceeds this machine's memory: creation
//!   fails with M2C_STATUS_OUT_OF_MEMORY, leaks nothing, and a normal cache
//!   works right after;
//! - an address-space limit (RLIMIT_AS, in a child process) that makes
//!   creation fail half-way through its layers: OUT_OF_MEMORY every time,
//!   the layers already allocated are given back, the process goes on;
//! - SIGKILL at random points while a child process saves a big cache
//!   over an existing file, many times: the file always loads, always
//!   holds one whole generation (never a mix), never an older one than the
//!   last save that returned, and nothing but the file and stray
//!   `.m2c-tmp` files of the killed process are left.
//!
//! A panic inside a rayon worker is caught and poisons only its handle:
//! that one is a unit test (it needs the library's test-only fault hook),
//! `a_panic_inside_a_pool_worker_is_caught_and_poisons_the_handle` in
//! src/ffi/tests.rs. See RELIABILITY.md.
//!
//! The child processes are this test binary itself, started with
//! `M2C_FAULTS_CHILD=<mode>` and running the ignored test `child_process`.

use m2c::*;
use m2c_testkit::Rng;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

fn config(layers: u32, slots: u32, heads: u32) -> m2c_config {
    let mut c = std::mem::MaybeUninit::<m2c_config>::zeroed();
    // SAFETY: valid storage for one config.
    unsafe { m2c_config_init(c.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut c = unsafe { c.assume_init() };
    c.num_layers = layers;
    c.num_slots = slots;
    c.num_heads = heads;
    c.head_dim = 64;
    c.intermediate_size = heads * 64;
    c.state_size = 128;
    c.n_groups = 1;
    c.conv_dtype = M2C_DTYPE_BF16;
    c.ssm_dtype = M2C_DTYPE_F32;
    c
}

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(m2c_last_error()) }.to_string_lossy().into_owned()
}

fn ok(st: m2c_status, what: &str) {
    assert_eq!(st, M2C_STATUS_OK, "{what}: {}", last_error());
}

fn create(cfg: &m2c_config) -> Result<*mut m2c_cache, m2c_status> {
    let mut h = ptr::null_mut();
    // SAFETY: valid pointers.
    match unsafe { m2c_create(cfg, &mut h) } {
        M2C_STATUS_OK => Ok(h),
        st => {
            assert!(h.is_null(), "*out written on failure");
            Err(st)
        }
    }
}

fn bytes_of(cfg: &m2c_config) -> u64 {
    let mut b = 0;
    // SAFETY: valid pointers.
    ok(unsafe { m2c_config_bytes(cfg, &mut b) }, "config_bytes");
    b
}

/// A field of /proc/self/status or /proc/meminfo, in kB.
fn proc_kb(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in {file}"))
}

/// A small cache used normally: update, step, read back, snapshot.
fn normal_cache_works() {
    let cfg = config(2, 2, 2);
    let h = create(&cfg).expect("a normal cache after the failures");
    let sper = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let v: Vec<f32> = (0..2 * sper).map(|i| i as f32 * 0.5).collect();
    let mut back = vec![0f32; 2 * sper];
    let mut snap = vec![0u8; 1 << 20];
    let mut w = 0;
    // SAFETY: live handle, buffers of the stated lengths.
    unsafe {
        ok(m2c_update_ssm(h, 1, ptr::null(), 2, v.as_ptr().cast(), M2C_DTYPE_F32, v.len()), "update_ssm");
        ok(m2c_read_ssm(h, 1, ptr::null(), 2, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()), "read_ssm");
        ok(m2c_slot_save(h, 1, snap.as_mut_ptr().cast(), snap.len(), &mut w), "slot_save");
        ok(m2c_slot_load(h, 0, snap.as_ptr().cast(), w), "slot_load");
        m2c_destroy(h);
    }
    assert!(back == v);
}

#[test]
fn caches_larger_than_memory_are_out_of_memory_and_the_process_stays_healthy() {
    let mem = (proc_kb("/proc/meminfo", "MemTotal:") + proc_kb("/proc/meminfo", "SwapTotal:")) * 1024;
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    let mut cases = vec![
        // 2^31 - 1 slots of 128 KiB in 64 layers: each layer is more than
        // the whole address space, whatever the overcommit policy.
        ("beyond the address space", config(64, i32::MAX as u32, 1)),
    ];
    // One layer of twice the machine's memory and swap (a 2 MiB SSM state
    // per slot): refused unless the kernel overcommits blindly
    // (vm.overcommit_memory = 1), where it would be created lazily.
    let per_slot = 64 * 64 * 128 * 4;
    let slots = (2 * mem / per_slot + 1) as u32;
    if overcommit.trim() != "1" {
        cases.push(("twice memory + swap in one layer", config(1, slots, 64)));
    } else {
        println!("vm.overcommit_memory = 1: skipping the twice-memory case");
    }
    let vm0 = proc_kb("/proc/self/status", "VmSize:");
    let mut attempts = 0;
    for (what, cfg) in &cases {
        assert!(bytes_of(cfg) > mem, "{what}: config_bytes {} not above memory {mem}", bytes_of(cfg));
        for _ in 0..20 {
            assert_eq!(create(cfg).err(), Some(M2C_STATUS_OUT_OF_MEMORY), "{what}");
            assert!(last_error().contains("allocate"), "{what}: {}", last_error());
            attempts += 1;
        }
    }
    // The conv layer allocated before the refused SSM layer (~0.8 GB of
    // address space in the second case) was given back every time.
    let vm1 = proc_kb("/proc/self/status", "VmSize:");
    assert!(vm1 < vm0 + 512 * 1024, "address space grew from {vm0} kB to {vm1} kB over the failed creations");
    normal_cache_works();
    println!("faults: {attempts} creations beyond memory refused with OUT_OF_MEMORY; VmSize {vm0} -> {vm1} kB");
}

/// Runs this test binary's `child_process` test in mode `mode`.
fn child(mode: &str, envs: &[(&str, String)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("M2C_FAULTS_CHILD", mode)
        .env("RUST_BACKTRACE", "0");
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

#[test]
fn an_allocation_failure_half_way_through_creation_frees_what_it_took() {
    let out = child("rlimit", &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child under RLIMIT_AS failed ({}):\n{text}", out.status);
    assert!(text.contains("rlimit child: ok"), "{text}");
    for l in text.lines().filter_map(|l| l.find("rlimit child").map(|i| &l[i..])) {
        println!("faults: {l}");
    }
}

/// m2c_copy_slots under an address-space limit too small for a staging
/// copy of one layer: a full beam reorder still succeeds, because the copy
/// needs no scratch (plain copies first, cycles by swaps). (It once aborted
/// the process: "memory allocation of 671088640 bytes failed"; then it
/// returned M2C_STATUS_OUT_OF_MEMORY with the cache unchanged.)
#[test]
fn copy_slots_needs_no_staging_buffer_under_a_tight_address_space_limit() {
    let out = child("copy_oom", &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child under RLIMIT_AS failed ({}):\n{text}", out.status);
    assert!(text.contains(&format!("{MARK}ok")), "{text}");
}

/// A thread pool that cannot start (its threads' stacks cannot be mapped
/// under RLIMIT_AS; a pids limit does the same) must not fail a call:
/// pool-sized and one-slot calls run on the calling thread and succeed,
/// on this handle and on new ones, and nothing is printed. (It once
/// returned PANIC, poisoned the handle and every later one, and printed
/// rayon's panic to stderr: RELIABILITY-FINDINGS 3 and 18.)
#[test]
fn a_thread_pool_that_cannot_start_leaves_every_call_working() {
    let out = child("pool_fail", &[("RUST_BACKTRACE", "1".into())]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child under RLIMIT_AS failed ({}):\n{text}", out.status);
    assert!(text.contains(&format!("{MARK}ok")), "{text}");
    assert!(!text.contains("panicked"), "a panic reached stderr:\n{text}");
}

/// The same under a process-count limit (RLIMIT_NPROC, as a pids cgroup
/// or `ulimit -u` sets it): the child drops to an unprivileged user
/// (root is not bound by the limit), so the test needs root.
#[test]
fn a_thread_pool_under_a_process_limit_leaves_every_call_working() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        println!("faults: not root: RLIMIT_NPROC cannot be tested (it binds only unprivileged users)");
        return;
    }
    let out = child("nproc", &[("RUST_BACKTRACE", "1".into())]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child under RLIMIT_NPROC failed ({}):\n{text}", out.status);
    assert!(text.contains(&format!("{MARK}ok")), "{text}");
    assert!(!text.contains("panicked"), "a panic reached stderr:\n{text}");
}

/// m2c_set_num_threads(1): no pool thread ever runs work of that cache
/// (m2c's job count does not move over pool-sized calls), while 0 and 2
/// use pools. In a child process, so that no other test's calls count.
#[test]
fn one_thread_per_cache_keeps_every_call_on_the_calling_thread() {
    let out = child("threads", &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({}):\n{text}", out.status);
    assert!(text.contains(&format!("{MARK}ok")), "{text}");
}

/// Calls over 2^25 rows under an address-space limit far below what a
/// per-row table would take: batched reads, writes and resets allocate
/// nothing per row, so they succeed (they once aborted the process:
/// "memory allocation of 805306368 bytes failed"). RELIABILITY-FINDINGS 2;
/// finding 1 (a save's buffer) is tested in core/src/persist.rs.
#[test]
fn calls_over_millions_of_rows_need_no_per_row_memory() {
    let out = child("row_oom", &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child under RLIMIT_AS failed ({}):\n{text}", out.status);
    assert!(text.contains(&format!("{MARK}ok")), "{text}");
}

/// The value every element of generation `g` holds in slot `s`.
fn gen_value(g: u64, s: usize) -> f32 {
    (g * 16 + s as u64) as f32
}

/// Sets every slot of `h` to generation `g`: SSM states of value
/// gen_value(g, s) in every layer, position g.
fn set_generation(h: *mut m2c_cache, cfg: &m2c_config, g: u64) {
    let n = cfg.num_slots as usize;
    let sper = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let v: Vec<f32> = (0..n * sper).map(|i| gen_value(g, i / sper)).collect();
    // SAFETY: live handle, buffers of the stated lengths.
    unsafe {
        for l in 0..cfg.num_layers {
            ok(m2c_update_ssm(h, l, ptr::null(), n, v.as_ptr().cast(), M2C_DTYPE_F32, v.len()), "update_ssm");
        }
        for s in 0..n as i32 {
            let mut p = 0;
            ok(m2c_position(h, s, &mut p), "position");
            let sl = [s];
            // Positions count up from the previous generation to g.
            ok(m2c_advance(h, sl.as_ptr(), 1, (g - p) as u32), "advance");
        }
    }
}

/// The generation a loaded cache holds, checking it holds exactly one.
fn loaded_generation(h: *mut m2c_cache, cfg: &m2c_config) -> u64 {
    let mut g = 0;
    // SAFETY: live handle.
    ok(unsafe { m2c_position(h, 0, &mut g) }, "position");
    let n = cfg.num_slots as usize;
    let sper = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let mut back = vec![0f32; n * sper];
    for l in 0..cfg.num_layers {
        // SAFETY: as above.
        ok(unsafe { m2c_read_ssm(h, l, ptr::null(), n, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()) }, "read");
        for s in 0..n {
            let mut p = 0;
            // SAFETY: as above.
            ok(unsafe { m2c_position(h, s as i32, &mut p) }, "position");
            assert_eq!(p, g, "slot {s} holds position {p}, slot 0 {g}: a mix of generations");
            let want = gen_value(g, s);
            assert!(
                back[s * sper..(s + 1) * sper].iter().all(|&x| x == want),
                "layer {l} slot {s}: not all of generation {g}"
            );
        }
    }
    g
}

fn kill_config() -> m2c_config {
    // 4 layers x 16 slots x 1 MiB of SSM state: a 64 MiB file.
    config(4, 16, 32)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn sigkill_during_saves_never_damages_the_previous_file() {
    const KILLS: usize = 20;
    let dir = std::env::temp_dir().join(format!("m2c-faults-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cache.m2c");
    let cfg = kill_config();
    let h = create(&cfg).unwrap();
    // Generation 0 on disk first; time one save to scale the kill delays.
    set_generation(h, &cfg, 0);
    let t0 = Instant::now();
    // SAFETY: live handle, NUL-terminated path.
    ok(unsafe { m2c_save_file(h, cpath(&path).as_ptr()) }, "save_file");
    let save_time = t0.elapsed();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("faults: kill seed {seed}, one save of {} MiB takes {save_time:?}", bytes_of(&cfg) >> 20);
    let mut rng = Rng::new(seed);
    let mut last_gen = 0;
    let mut stray_total = 0;
    let mut gens_seen = Vec::new();
    for k in 0..KILLS {
        let mut c = KillOnDrop(
            child(
                "save_loop",
                &[
                    ("M2C_FAULTS_PATH", path.to_str().unwrap().to_string()),
                    ("M2C_FAULTS_FIRST_GEN", (last_gen + 1).to_string()),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
        );
        let pid = c.0.id();
        // The child's lines follow libtest's own output, sometimes on the
        // same line: look for the marker anywhere.
        let mut lines = BufReader::new(c.0.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.find(MARK).map(|i| l[i + MARK.len()..].to_string()));
        // Wait until the child is about to save, then kill it somewhere in
        // the next few saves.
        loop {
            let l = lines.next().expect("child ended before it was ready");
            if l == "ready" {
                break;
            }
        }
        let max_ms = (save_time.as_millis() as u64 * 3).clamp(20, 3000);
        let delay = Duration::from_millis(rng.below(max_ms as usize) as u64);
        std::thread::sleep(delay);
        c.0.kill().unwrap(); // SIGKILL
        let status = c.0.wait().unwrap();
        assert!(!status.success(), "the child was meant to die");
        let saved: Vec<u64> = lines.filter_map(|l| l.strip_prefix("saved ").map(|g| g.parse().unwrap())).collect();
        let last_returned = saved.last().copied().unwrap_or(last_gen);

        // The file loads, holds one whole generation, no older than the last
        // save that returned and no newer than the one in flight.
        let probe = create(&cfg).unwrap();
        // SAFETY: live handle, NUL-terminated path.
        ok(unsafe { m2c_load_file(probe, cpath(&path).as_ptr()) }, "load_file after SIGKILL");
        let g = loaded_generation(probe, &cfg);
        // SAFETY: handle from m2c_create.
        unsafe { m2c_destroy(probe) };
        assert!(
            g == last_returned || g == last_returned + 1,
            "kill {k}: file holds generation {g}, last save returned {last_returned}"
        );
        gens_seen.push(g);
        last_gen = g.max(last_returned);

        // Nothing else in the directory but temporary files of that child.
        let prefix = format!(".cache.m2c.m2c-tmp.{pid}.");
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name == "cache.m2c" {
                continue;
            }
            assert!(name.starts_with(&prefix), "kill {k}: unexpected file {name}");
            stray_total += 1;
            // A killed process cannot remove its temporary file; the loader
            // never looks at it. Clean up here so each round starts clean.
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
        println!("faults: kill {k} after {delay:?}: saves returned {saved:?}, file holds generation {g}");
    }
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h) };
    std::fs::remove_dir_all(&dir).unwrap();
    println!(
        "faults: {KILLS} SIGKILLs during saves, file always loadable, {stray_total} stray .m2c-tmp files left by killed children"
    );
}

/// Marks the child's own lines in its output.
const MARK: &str = "M2C-FAULTS-CHILD ";

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves no child behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child processes' entry point (ignored in normal runs; the tests
/// above start it with M2C_FAULTS_CHILD set).
#[test]
#[ignore = "child process of the fault tests; run by them"]
fn child_process() {
    if std::env::var_os("M2C_FAULTS_CHILD").is_some() {
        // Die with the parent, whatever happens to it.
        // SAFETY: plain syscall on this process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }
    match std::env::var("M2C_FAULTS_CHILD").as_deref() {
        Ok("save_loop") => save_loop(),
        Ok("rlimit") => rlimit_child(),
        Ok("copy_oom") => copy_oom_child(),
        Ok("pool_fail") => pool_fail_child(),
        Ok("row_oom") => row_oom_child(),
        Ok("nproc") => nproc_child(),
        Ok("threads") => threads_child(),
        _ => {}
    }
}

/// Saves generation after generation over the same file until killed (or,
/// as a safety net, for at most two minutes).
fn save_loop() {
    let path = PathBuf::from(std::env::var("M2C_FAULTS_PATH").unwrap());
    let mut g: u64 = std::env::var("M2C_FAULTS_FIRST_GEN").unwrap().parse().unwrap();
    let cfg = kill_config();
    let h = create(&cfg).unwrap();
    let p = cpath(&path);
    set_generation(h, &cfg, g);
    println!("{MARK}ready");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        // SAFETY: live handle, NUL-terminated path.
        ok(unsafe { m2c_save_file(h, p.as_ptr()) }, "save_file in the child");
        println!("{MARK}saved {g}");
        g += 1;
        set_generation(h, &cfg, g);
    }
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h) };
}

/// Starts the thread pool (its threads need address space too), then caps
/// this process's address space at its current size plus 1.5 GiB; returns
/// (current size, headroom) in bytes.
fn limit_address_space() -> (u64, u64) {
    let warm = config(2, 16, 32);
    let h = create(&warm).unwrap();
    let src: Vec<i32> = (0..16).rev().collect();
    let dst: Vec<i32> = (0..16).collect();
    // SAFETY: live handle, lists of 16 entries.
    ok(unsafe { m2c_copy_slots(h, src.as_ptr(), dst.as_ptr(), 16) }, "copy_slots warm-up");
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h) };
    let vm0 = proc_kb("/proc/self/status", "VmSize:") * 1024;
    let headroom: u64 = 1536 << 20;
    let lim = libc::rlimit { rlim_cur: vm0 + headroom, rlim_max: vm0 + headroom };
    // SAFETY: plain syscall on this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    (vm0, headroom)
}

/// Under an address-space limit: creation fails half-way (some layers
/// allocated, the next refused) again and again without leaking.
fn rlimit_child() {
    let (vm0, headroom) = limit_address_space();
    // 4 layers of 512 MiB of SSM state (256 slots x 2 MiB): two fit under
    // the limit, the third does not.
    let big = config(4, 256, 64);
    assert!(bytes_of(&big) > headroom);
    for _ in 0..25 {
        assert_eq!(create(&big).err(), Some(M2C_STATUS_OUT_OF_MEMORY), "creation under RLIMIT_AS");
    }
    let vm1 = proc_kb("/proc/self/status", "VmSize:") * 1024;
    assert!(vm1 < vm0 + (256 << 20), "address space grew from {vm0} to {vm1} bytes");
    // One layer that fits still can be created: nothing leaked.
    let one = config(1, 256, 64);
    let h = create(&one).expect("a 512 MiB cache under a 1.5 GiB limit after 25 failures");
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h) };
    normal_cache_works();
    println!(
        "rlimit child: 25 creations failing at layer 3 of 4 under RLIMIT_AS, VmSize {} -> {} MiB",
        vm0 >> 20,
        vm1 >> 20
    );
    println!("rlimit child: ok");
}

fn nproc_child() {
    let cfg = config(1, 8, 8);
    let h = create(&cfg).unwrap();
    let per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let st: Vec<f32> = (0..8 * per).map(|i| (i % 5) as f32).collect();
    let mut back = vec![0f32; 8 * per];
    let lim = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
    // SAFETY: plain syscalls on this process: one process at most, then
    // an unprivileged user, whom the limit binds.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NPROC, &lim), 0);
        assert_eq!(libc::setgid(65534), 0);
        assert_eq!(libc::setuid(65534), 0);
    }
    // SAFETY: live handle, buffers of the stated lengths.
    unsafe {
        ok(m2c_set_ssm(h, 0, ptr::null(), 8, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()), "pool-sized set_ssm");
        ok(m2c_read_ssm(h, 0, ptr::null(), 8, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()), "pool-sized read");
        assert_eq!(back, st);
        m2c_destroy(h);
    }
    println!("{MARK}ok");
}

fn threads_child() {
    let cfg = config(2, 8, 8);
    let h = create(&cfg).unwrap();
    let per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let st: Vec<f32> = (0..8 * per).map(|i| (i % 9) as f32).collect();
    let mut back = vec![0f32; 8 * per];
    let src: Vec<i32> = (0..8).rev().collect();
    let dst: Vec<i32> = (0..8).collect();
    let work = |h: *mut m2c_cache, back: &mut Vec<f32>| {
        // SAFETY: live handle, buffers and lists of the stated lengths.
        unsafe {
            for l in 0..2 {
                ok(m2c_set_ssm(h, l, ptr::null(), 8, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()), "set_ssm");
                ok(m2c_read_ssm(h, l, ptr::null(), 8, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()), "read");
            }
            ok(m2c_copy_slots(h, src.as_ptr(), dst.as_ptr(), 8), "copy_slots");
            ok(m2c_reset(h, ptr::null(), 8), "reset");
        }
    };
    // SAFETY: live handle.
    ok(unsafe { m2c_set_num_threads(h, 1) }, "set_num_threads(1)");
    let before = m2c_core::pool::jobs_run();
    work(h, &mut back);
    assert_eq!(back, st, "results with one thread");
    assert_eq!(m2c_core::pool::jobs_run(), before, "a pool ran work of a one-thread cache");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for n in [0u32, 2] {
        // SAFETY: live handle.
        ok(unsafe { m2c_set_num_threads(h, n) }, "set_num_threads");
        let before = m2c_core::pool::jobs_run();
        back.fill(0.0);
        work(h, &mut back);
        assert_eq!(back, st, "results with {n} threads");
        if cpus >= 2 {
            assert!(m2c_core::pool::jobs_run() > before, "num_threads {n}: pool-sized calls used no pool");
        }
    }
    // SAFETY: NULL is refused; the handle is live and freed once.
    unsafe {
        assert_eq!(m2c_set_num_threads(ptr::null_mut(), 1), M2C_STATUS_NULL_ARG);
        m2c_destroy(h);
    }
    println!("{MARK}ok");
}

fn row_oom_child() {
    // 2^25 slots of one state element (and a small conv window).
    let mut cfg = config(1, 1 << 25, 1);
    cfg.head_dim = 1;
    cfg.intermediate_size = 1;
    cfg.state_size = 1;
    cfg.conv_dtype = M2C_DTYPE_F32;
    let n = 1usize << 25;
    let h = create(&cfg).unwrap();
    let st: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut back = vec![0f32; n];
    // Touch the state so that its pages are mapped before the limit.
    // SAFETY: live handle, buffers of the stated lengths.
    unsafe {
        ok(m2c_set_ssm(h, 0, ptr::null(), n, st.as_ptr().cast(), M2C_DTYPE_F32, n), "set_ssm before the limit");
    }
    let vm = proc_kb("/proc/self/status", "VmSize:") * 1024;
    let lim = libc::rlimit { rlim_cur: vm + (64 << 20), rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall on this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    // SAFETY: live handle, buffers of the stated lengths.
    unsafe {
        ok(m2c_read_ssm(h, 0, ptr::null(), n, back.as_mut_ptr().cast(), M2C_DTYPE_F32, n), "read_ssm of 2^25 rows");
        assert!(back == st, "read back what was set");
        ok(m2c_set_ssm(h, 0, ptr::null(), n, st.as_ptr().cast(), M2C_DTYPE_F32, n), "set_ssm of 2^25 rows");
        ok(m2c_reset(h, ptr::null(), n), "reset of 2^25 rows");
    }
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h) };
    println!("{MARK}ok");
}

/// Creates a cache, then caps the address space just above what is mapped
/// (no room for pool threads' stacks), then makes pool-sized and one-slot
/// calls on it and on a new cache.
fn pool_fail_child() {
    // 8 slots x 256 KiB of SSM state: batched calls are pool-sized.
    let cfg = config(1, 8, 8);
    let h = create(&cfg).unwrap();
    let small = config(1, 2, 1);
    let h2 = create(&small).unwrap();
    let per = (cfg.num_heads * cfg.head_dim * cfg.state_size) as usize;
    let st: Vec<f32> = (0..8 * per).map(|i| (i % 11) as f32).collect();
    let mut back = vec![0f32; 8 * per];
    let vm = proc_kb("/proc/self/status", "VmSize:") * 1024;
    let lim = libc::rlimit { rlim_cur: vm + (1 << 20), rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall on this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    // SAFETY: live handles, buffers of the stated lengths.
    unsafe {
        ok(m2c_set_ssm(h, 0, ptr::null(), 8, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()), "pool-sized set_ssm");
        ok(m2c_read_ssm(h, 0, ptr::null(), 8, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()), "pool-sized read");
        assert_eq!(back, st);
        ok(m2c_reset(h, ptr::null(), 8), "pool-sized reset");
        let x = vec![0.5f32; 2 * (small.intermediate_size + 2 * small.state_size) as usize];
        ok(m2c_update_conv(h2, 0, ptr::null(), 2, x.as_ptr().cast(), M2C_DTYPE_F32, x.len()), "small update_conv");
    }
    // The limit lifted, a new handle still works (the pool is not retried).
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall on this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    let h3 = create(&cfg).unwrap();
    // SAFETY: live handle, buffer of the stated length.
    unsafe {
        ok(m2c_set_ssm(h3, 0, ptr::null(), 8, st.as_ptr().cast(), M2C_DTYPE_F32, st.len()), "set_ssm on a new handle");
        for c in [h, h2, h3] {
            m2c_destroy(c);
        }
    }
    println!("{MARK}ok");
}

/// copy_slots with a scratch buffer larger than what is left under an
/// address-space limit must fail with OUT_OF_MEMORY and change nothing.
fn copy_oom_child() {
    limit_address_space();
    // 2 layers x 320 slots x 2 MiB of SSM state: 1.28 GiB of the 1.5 GiB.
    let cfg = config(2, 320, 64);
    let n = 320usize;
    let h = create(&cfg).expect("a 1.28 GiB cache under a 1.5 GiB limit");
    let cper = ((cfg.intermediate_size + 2 * cfg.state_size) * cfg.conv_width) as usize;
    let conv: Vec<f32> = (0..n * cper).map(|i| (i / cper) as f32).collect();
    let mut back = vec![0f32; n * cper];
    // SAFETY: live handle, buffers of the stated lengths.
    unsafe {
        for l in 0..2 {
            ok(m2c_set_conv(h, l, ptr::null(), n, conv.as_ptr().cast(), M2C_DTYPE_F32, conv.len()), "set_conv");
        }
    }
    // What the cache holds before (the conv storage is bf16: compare what
    // it stored, not the f32 values written).
    let mut before = vec![vec![0f32; n * cper]; 2];
    for (l, b) in before.iter_mut().enumerate() {
        // SAFETY: live handle, buffer of the stated length.
        ok(
            unsafe { m2c_read_conv(h, l as u32, ptr::null(), n, b.as_mut_ptr().cast(), M2C_DTYPE_F32, b.len()) },
            "read_conv",
        );
    }
    // A beam reorder of every slot: staging its sources would take one
    // layer's worth of SSM state (640 MiB), more than is left.
    let src: Vec<i32> = (0..n as i32).rev().collect();
    let dst: Vec<i32> = (0..n as i32).collect();
    println!("{MARK}calling copy_slots");
    // SAFETY: live handle, lists of n entries.
    let st = unsafe { m2c_copy_slots(h, src.as_ptr(), dst.as_ptr(), n) };
    println!("{MARK}copy_slots returned {st}: {}", last_error());
    assert_eq!(st, M2C_STATUS_OK);
    for l in 0..2 {
        // SAFETY: as above.
        ok(
            unsafe { m2c_read_conv(h, l, ptr::null(), n, back.as_mut_ptr().cast(), M2C_DTYPE_F32, back.len()) },
            "read_conv",
        );
        for i in 0..n {
            let j = n - 1 - i;
            assert!(
                back[i * cper..(i + 1) * cper] == before[l as usize][j * cper..(j + 1) * cper],
                "layer {l}: slot {i} does not hold slot {j}'s window"
            );
        }
    }
    // SAFETY: handle from m2c_create.
    unsafe { m2c_destroy(h) };
    println!("{MARK}ok");
}
