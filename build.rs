//! Generates include/m2c.h with cbindgen and gives the shared library its
//! SONAME.
//!
//! The header is generated into OUT_DIR on every build. It is copied to
//! include/m2c.h only when the bytes differ, and never when
//! M2C_HEADER_CHECK=1: the test command sets that, and a test then fails if
//! the committed header is stale.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

include!("src/abi.rs");

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=M2C_HEADER_CHECK");

    // The SONAME carries the ABI version, so consumers record
    // libm2c.so.<abi> rather than an absolute path.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libm2c.so.{M2C_ABI_VERSION}");
    soname_link(&out_dir);

    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("version");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("version");
    let patch = env::var("CARGO_PKG_VERSION_PATCH").expect("version");
    let version = env::var("CARGO_PKG_VERSION").expect("version");

    let mut config = cbindgen::Config::from_file(manifest.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n/** Version of the library this header belongs to (from Cargo.toml). */\n\
         #define M2C_VERSION_MAJOR {major}\n#define M2C_VERSION_MINOR {minor}\n\
         #define M2C_VERSION_PATCH {patch}\n#define M2C_VERSION_STRING \"{version}\"\n"
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(&manifest)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate include/m2c.h");
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let bytes = with_sections(&String::from_utf8(raw).expect("cbindgen writes UTF-8")).into_bytes();
    let generated = out_dir.join("m2c.h");
    write_if_changed(&generated, &bytes);

    if env::var("M2C_HEADER_CHECK").as_deref() != Ok("1") {
        write_if_changed(&manifest.join("include").join("m2c.h"), &bytes);
    }
}

/// The header's function sections, each named by its first function.
/// cbindgen keeps the source order (the C API crate's modules are ordered
/// the same way); this marks where each section starts.
const SECTIONS: [(&str, &str); 14] = [
    ("m2c_version", "Version"),
    ("m2c_status_str", "Errors"),
    ("m2c_config_init", "Configuration"),
    ("m2c_create", "Cache handles"),
    ("m2c_update_conv", "Copy-style calls: write, read, reset and advance slots"),
    ("m2c_conv_view", "Zero-copy views"),
    ("m2c_conv_args_init", "Kernels: decode steps and prefills"),
    ("m2c_spec_reserve", "Speculative decoding: verify draft tokens, commit the accepted ones"),
    ("m2c_slot_acquire", "Slots: acquire, release, fork and reorder, health"),
    ("m2c_slot_snapshot_size", "Snapshots and files"),
    ("m2c_store_config_init", "Prefix store: checkpoints under keys, lookups that say why they missed"),
    ("m2c_arenas", "State transfer: arenas and the byte runs of slots"),
    ("m2c_shard_init", "Tensor-parallel shards and resharding"),
    ("m2c_set_stream", "Devices and streams"),
];

/// Inserts a banner before the doc comment of each section's first
/// function. Panics (failing the build) if a section's function is
/// missing or out of order, so the sections cannot silently go stale.
fn with_sections(header: &str) -> String {
    let lines: Vec<&str> = header.lines().collect();
    let mut starts = Vec::new();
    let mut last = 0;
    for (name, title) in SECTIONS {
        let decl = lines
            .iter()
            .position(|l| !l.starts_with(' ') && !l.starts_with('/') && declares(l, name))
            .unwrap_or_else(|| panic!("header section {title:?}: {name} is not declared"));
        assert!(decl > last, "header section {title:?}: {name} is out of order");
        last = decl;
        let mut start = decl;
        while start > 0 && (lines[start - 1].starts_with(" *") || lines[start - 1].starts_with("/**")) {
            start -= 1;
        }
        starts.push((start, title));
    }
    let rule = "/* ------------------------------------------------------------------------ */";
    let mut out = String::with_capacity(header.len() + 4096);
    let mut next = starts.iter().peekable();
    for (i, line) in lines.iter().enumerate() {
        if let Some((_, title)) = next.next_if(|(start, _)| *start == i) {
            out.push_str(&format!("{rule}\n/* {title:<72} */\n{rule}\n\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `line` declares function `name` (`... name(` or `... *name(`).
fn declares(line: &str, name: &str) -> bool {
    line.find(&format!("{name}(")).is_some_and(|i| i > 0 && matches!(line.as_bytes()[i - 1], b' ' | b'*'))
}

/// Gives the build tree (`target/<profile>/`, three levels above OUT_DIR)
/// the SONAME a program linked against it records: `libm2c.so.<abi>` as a
/// link to `libm2c.so`, so `LD_LIBRARY_PATH=target/release` runs it. The
/// link may dangle until the library is linked; nothing else is written
/// outside OUT_DIR.
fn soname_link(out_dir: &Path) {
    let Some(profile_dir) = out_dir.ancestors().nth(3) else { return };
    let link = profile_dir.join(format!("libm2c.so.{M2C_ABI_VERSION}"));
    if fs::symlink_metadata(&link).is_err() {
        let _ = std::os::unix::fs::symlink("libm2c.so", &link);
    }
}

fn write_if_changed(path: &PathBuf, bytes: &[u8]) {
    if fs::read(path).ok().as_deref() != Some(bytes) {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("create include dir");
        }
        fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
