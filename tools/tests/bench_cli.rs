//! m2c-bench's command line: help and errors, and its csv and json records
//! (complete, consistent with each other's columns, each row compared with
//! a memcpy on its own thread count). Nothing here asserts on a time.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m2c-bench")).args(args).output().expect("run m2c-bench")
}

/// A tiny shape, so the run takes a fraction of a second.
const TINY: [&str; 6] = ["--layers", "1", "--slots", "2", "--iters", "1"];

/// Operations of the table mode: seven on 1 and on 2 threads, four on one
/// (snapshot save and load, save_file), then format-2 snapshots (save,
/// load) and load_file on 1 and on 2 threads.
const OPS_PER_THREAD_COUNT: usize = 7;
const SINGLE_THREAD_OPS: usize = 3;
const FORMAT2_OPS: usize = 3;

#[test]
fn help_goes_to_stdout_and_exits_0_a_bad_flag_exits_2() {
    let h = bench(&["--help"]);
    assert_eq!(h.status.code(), Some(0));
    let text = String::from_utf8(h.stdout).unwrap();
    for word in ["--matrix", "--fidelity", "--csv", "--json", "--format", "vs memcpy"] {
        assert!(text.contains(word), "--help does not mention {word}");
    }
    for bad in [&["--frobnicate"][..], &["--format", "xml"], &["--model", "7b"], &["--slots", "x"]] {
        let o = bench(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(o.stdout.is_empty(), "{bad:?} printed to stdout");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--help"), "{bad:?}");
    }
}

/// One record: the numeric columns by name.
struct Rec {
    op: String,
    threads: usize,
    med: f64,
    fastest: f64,
    slowest: f64,
    runs: usize,
    bytes: usize,
    gbps: f64,
    memcpy: f64,
    vs: f64,
}

fn check_records(recs: &[Rec]) {
    assert_eq!(recs.len(), 2 * OPS_PER_THREAD_COUNT + SINGLE_THREAD_OPS + 2 * FORMAT2_OPS);
    let mut memcpy_by_threads = [None::<f64>; 2];
    for r in recs {
        assert!(r.threads == 1 || r.threads == 2, "{}: {} threads", r.op, r.threads);
        assert!(r.fastest <= r.med && r.med <= r.slowest, "{}: {} {} {}", r.op, r.fastest, r.med, r.slowest);
        assert!(r.fastest > 0.0 && r.bytes > 0 && r.memcpy > 0.0 && r.runs >= 1, "{}", r.op);
        // The derived columns follow from the measured ones (to the printed precision).
        let gbps = r.bytes as f64 / (r.med * 1e-3) / 1e9;
        assert!((gbps - r.gbps).abs() <= 1e-3 * gbps.max(1.0), "{}: GB/s {} vs {}", r.op, r.gbps, gbps);
        let vs = gbps / r.memcpy;
        assert!((vs - r.vs).abs() <= 2e-3 * vs.max(1.0), "{}: vs memcpy {} vs {}", r.op, r.vs, vs);
        // Every row on N threads is compared with the one memcpy measured
        // on N threads, except the format 2 snapshot rows, each timed
        // beside a memcpy of its own.
        if r.op.ends_with(", format 2") {
            continue;
        }
        let seen = memcpy_by_threads[r.threads - 1].get_or_insert(r.memcpy);
        assert_eq!(*seen, r.memcpy, "{}: rows on {} threads compare with different memcpy figures", r.op, r.threads);
    }
    for op in [
        "conv_step",
        "ssm_step",
        "copy_slots (reverse permutation)",
        "slot_save, format 2",
        "slot_load, format 2",
        "load_file (all slots, 2 passes)",
    ] {
        for t in [1, 2] {
            assert!(recs.iter().any(|r| r.op == op && r.threads == t), "no {op} row on {t} threads");
        }
    }
    for op in ["slot_save (one slot, to memory)", "save_file (all slots, fsync)"] {
        assert!(recs.iter().any(|r| r.op == op && r.threads == 1), "no {op} row");
    }
}

/// Splits one CSV line (fields quoted when they hold commas; no embedded quotes here).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn csv_has_a_header_and_one_consistent_record_per_figure() {
    let o = bench(&[&TINY[..], &["--csv"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let header = csv_fields(lines.next().expect("a header line"));
    let want = [
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
    assert_eq!(header, want);
    let recs: Vec<Rec> = lines
        .map(|l| {
            let f = csv_fields(l);
            assert_eq!(f.len(), want.len(), "{l}");
            assert!(f[0].contains("2 slots"), "{l}");
            let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|e| panic!("{l}: column {i}: {e}"));
            Rec {
                op: f[1].clone(),
                threads: f[2].parse().unwrap(),
                med: num(3),
                fastest: num(4),
                slowest: num(5),
                runs: f[6].parse().unwrap(),
                bytes: f[7].parse().unwrap(),
                gbps: num(8),
                memcpy: num(9),
                vs: num(10),
            }
        })
        .collect();
    check_records(&recs);
    // The notes (machine line, memcpy figures) went to stderr.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("m2c cache:") && err.contains("memcpy of the state's"), "{err}");
}

/// The value of `"key": ...` in one flat JSON object line.
fn json_value<'a>(obj: &'a str, key: &str) -> &'a str {
    let at = obj.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("no {key} in {obj}")) + key.len() + 4;
    let rest = &obj[at..];
    if let Some(s) = rest.strip_prefix('"') {
        &s[..s.find('"').unwrap()]
    } else {
        rest[..rest.find([',', '}']).unwrap()].trim()
    }
}

#[test]
fn json_is_an_array_of_the_same_records() {
    let o = bench(&[&TINY[..], &["--format", "json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let body = text.trim();
    assert!(body.starts_with('[') && body.ends_with(']'), "{body}");
    let objs: Vec<&str> = body.lines().filter(|l| l.trim_start().starts_with('{')).collect();
    for (i, l) in objs.iter().enumerate() {
        assert_eq!(l.trim_end().ends_with(','), i + 1 < objs.len(), "separators: {l}");
    }
    let recs: Vec<Rec> = objs
        .iter()
        .map(|l| {
            let num = |k: &str| json_value(l, k).parse::<f64>().unwrap_or_else(|e| panic!("{k} in {l}: {e}"));
            Rec {
                op: json_value(l, "operation").to_string(),
                threads: json_value(l, "threads").parse().unwrap(),
                med: num("median_ms"),
                fastest: num("fastest_ms"),
                slowest: num("slowest_ms"),
                runs: json_value(l, "runs").parse().unwrap(),
                bytes: json_value(l, "bytes").parse().unwrap(),
                gbps: num("gb_per_s"),
                memcpy: num("memcpy_gb_per_s"),
                vs: num("vs_memcpy"),
            }
        })
        .collect();
    check_records(&recs);
}

/// Runs a mode on the tiny shape in csv form: each record's (operation,
/// threads), and stderr (the notes).
fn csv_ops(mode: &str) -> (Vec<(String, String)>, String) {
    let o = bench(&[&TINY[..], &[mode, "--csv"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let ops = text
        .lines()
        .skip(1)
        .map(|l| {
            let f = csv_fields(l);
            (f[1].clone(), f[2].clone())
        })
        .collect();
    (ops, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn the_store_mode_reports_insert_restore_and_snapshots_on_both_thread_counts() {
    let (ops, err) = csv_ops("--store");
    for op in ["store insert", "store restore", "slot_save", "slot_load"] {
        for t in ["1", "2"] {
            assert!(ops.iter().any(|(o, th)| o.starts_with(op) && th == t), "{op} on {t} threads missing: {ops:?}");
        }
    }
    assert!(err.contains("lookup of a 128-key chain"), "{err}");
}

#[test]
fn the_prefill_mode_reports_both_sequence_counts_and_the_fma_peak() {
    let (ops, err) = csv_ops("--prefill");
    for op in ["ssm_prefill 1 x 2048 tokens", "ssm_prefill 4 x 2048 tokens"] {
        for t in ["1", "2"] {
            assert!(ops.iter().any(|(o, th)| o == op && th == t), "{op} on {t} threads missing: {ops:?}");
        }
    }
    assert!(err.contains("GFLOP/s"), "{err}");
    assert!(err.contains("FMA peak"), "{err}");
}

#[test]
fn the_lazy_mode_reports_the_step_the_read_pass_and_every_fold() {
    let (ops, err) = csv_ops("--lazy");
    for op in
        ["ssm_step (today's decode step)", "lazy y: read-only C . state pass", "fold of 2 tokens", "fold of 16 tokens"]
    {
        for t in ["1", "2"] {
            assert!(ops.iter().any(|(o, th)| o.starts_with(op) && th == t), "{op} on {t} threads missing: {ops:?}");
        }
    }
    assert!(err.contains("R = 16: a lazy token costs at least"), "{err}");
}

#[test]
fn the_ring_mode_reports_both_layouts_for_one_and_several_slots() {
    let (ops, err) = csv_ops("--ring");
    for op in ["update_conv, oldest-first", "update_conv, ring", "conv_step, oldest-first", "conv_step, ring"] {
        for t in ["1", "2"] {
            // Once for 1 slot and once for the shape's slots.
            let n = ops.iter().filter(|(o, th)| o == op && th == t).count();
            assert_eq!(n, 2, "{op} on {t} threads: {ops:?}");
        }
    }
    assert!(err.contains("ring vs oldest-first: update_conv"), "{err}");
    // The tiny shape is not the JAX baseline's: the peer is skipped, saying why.
    assert!(err.contains("JAX peer not run"), "{err}");
}
