//! The committed header is exactly what build.rs generates, and it
//! declares only `m2c_`/`M2C_` names.

#[test]
fn committed_header_matches_the_generated_one() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/m2c.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/m2c.h");
    let committed = std::fs::read_to_string(path).expect("include/m2c.h");
    assert!(
        committed == generated,
        "include/m2c.h is stale: rebuild without M2C_HEADER_CHECK=1 (build.rs rewrites it) and commit it"
    );
}

#[test]
fn header_declares_only_prefixed_names() {
    let h = include_str!(concat!(env!("OUT_DIR"), "/m2c.h"));
    for line in h.lines() {
        let name = if let Some(r) = line.strip_prefix("#define ") {
            r.split_whitespace().next()
        } else if line.starts_with("typedef ") && line.ends_with('{') {
            line.split_whitespace().nth(2)
        } else if line.starts_with("typedef ") || (line.starts_with("} ") && !line.contains("extern")) {
            line.trim_end_matches(';').split_whitespace().last()
        } else if line.contains('(')
            && !line.starts_with(' ')
            && !line.starts_with('*')
            && !line.starts_with('/')
            && !line.starts_with('#')
        {
            line.split('(').next().and_then(|l| l.split_whitespace().last()).map(|n| n.trim_start_matches('*'))
        } else {
            None
        };
        if let Some(n) = name {
            assert!(n.starts_with("m2c_") || n.starts_with("M2C_"), "unprefixed name {n:?} in: {line}");
        }
    }
}
