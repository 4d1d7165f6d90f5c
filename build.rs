//! Generates include/m2c.h with cbindgen and gives the shared library its
//! SONAME.
//!
//! The header is generated into OUT_DIR on every build. It is copied to
//! include/m2c.h only when the bytes differ, and never when
//! M2C_HEADER_CHECK=1: the test command sets that, and a test then fails if
//! the committed header is stale.

use std::env;
use std::fs;
use std::path::PathBuf;

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
    let mut bytes = Vec::new();
    bindings.write(&mut bytes);
    let generated = out_dir.join("m2c.h");
    write_if_changed(&generated, &bytes);

    if env::var("M2C_HEADER_CHECK").as_deref() != Ok("1") {
        write_if_changed(&manifest.join("include").join("m2c.h"), &bytes);
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
