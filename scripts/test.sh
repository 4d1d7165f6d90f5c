#!/usr/bin/env bash
# Runs every test suite of m2c: Rust (unit, FFI, model, kernels, header,
# format fixtures), rustfmt, clippy, rustdoc, the C tests under ctest (plain, ASan+UBSan, valgrind), the
# installed-prefix consumers (CMake, pkg-config, static, C++17), the Go,
# Zig and Python bindings, and the fuzz targets (cargo-fuzz, 30 s each; the stress
# and fault tests run inside "cargo test" and the C tests, see
# RELIABILITY.md). Installs what is missing on a fresh Debian machine
# (cmake and valgrind from apt, Go 1.23 from apt, Zig 0.15.2 from PyPI, UCX
# from apt: the Go, Zig and handoff scripts install their own) and is safe
# to rerun.
# Exit status 0 only if every suite passed; the last line counts suites.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

export CARGO_TERM_COLOR=never
# The header check: build.rs must not rewrite include/m2c.h here, so a stale
# committed header fails the header test instead of being silently fixed.
export M2C_HEADER_CHECK=1

log() { printf '\n=== %s\n' "$*"; }

need_apt_update=1
apt_install() {
    if [ "$need_apt_update" = 1 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        need_apt_update=0
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

log "toolchains"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }
if ! command -v cmake >/dev/null || ! command -v ctest >/dev/null; then
    echo "installing cmake (apt)"
    apt_install cmake || { echo "cannot install cmake"; exit 1; }
fi
command -v valgrind >/dev/null || apt_install valgrind || { echo "cannot install valgrind"; exit 1; }
cargo --version; cmake --version | head -1; gcc --version | head -1; valgrind --version

passed=0
failed=0
failed_names=()
stage() {
    # stage NAME COMMAND...: runs one suite and records its result.
    local name=$1
    shift
    log "$name"
    local start=$SECONDS
    "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "--- $name: ok ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "--- $name: FAILED (exit $rc, $((SECONDS - start)) s)"
    fi
    return 0
}

header_committed() {
    # In a git checkout, the build must not have changed the committed header.
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$root" diff --exit-code -- include/m2c.h || {
            echo "include/m2c.h differs from the committed one"
            return 1
        }
    fi
    return 0
}

rust_format() {
    cargo fmt --all --check && (cd fuzz && cargo fmt --check)
}
rust_docs() {
    RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --quiet
}
stage "rustfmt (workspace and fuzz)" rust_format
stage "cargo build" cargo build --release --all-targets
stage "cargo test" cargo test --release
stage "clippy" cargo clippy --release --all-targets -- -D warnings
stage "rustdoc (warnings denied)" rust_docs
stage "header is committed" header_committed
native_libs() {
    # One list of the staticlib's system libraries (scripts/native-libs.txt),
    # checked against what rustc says and against the Zig package's copy.
    local want got zig
    want=$(grep -v '^#' scripts/native-libs.txt | xargs)
    got=$(cargo rustc --release -p m2c --lib --crate-type staticlib -- --print native-static-libs 2>&1 |
        sed -n 's/.*native-static-libs: //p' | sed 's/-l//g' | xargs)
    zig=$(sed -n 's/^const static_native_libs = .*{ \(.*\) };$/\1/p' bindings/zig/build.zig | tr -d '",' | xargs)
    echo "scripts/native-libs.txt: $want"
    echo "rustc:                   $got"
    echo "bindings/zig/build.zig:  $zig"
    [ -n "$want" ] && [ "$want" = "$got" ] && [ "$want" = "$zig" ]
}
stage "native static libs (one list, = rustc, = Zig)" native_libs
# The cuda feature builds without a CUDA toolkit (drivers load at run time)
# and must leave the header byte-identical; its tests check that a machine
# without a GPU gets UNSUPPORTED, never a panic.
# NVRTC alone (no GPU) from PyPI lets the kernels-compile test run here.
nvrtc_dir() {
    python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))' 2>/dev/null
}
if [ -z "$(nvrtc_dir)" ]; then
    echo "installing NVRTC (pip nvidia-cuda-nvrtc-cu12) so the CUDA kernels are compile-tested"
    pip install -q nvidia-cuda-nvrtc-cu12 >/dev/null 2>&1 || echo "warning: NVRTC not installable; the kernel compile test will be skipped"
fi
cuda_stage() {
    local d
    d=$(nvrtc_dir)
    [ -n "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && echo "NVRTC: $d"
    # m2c-e2e (candle) has nothing to do with the feature: left out.
    CARGO_TARGET_DIR=target/cuda cargo clippy --release --workspace --exclude m2c-e2e --all-targets --features cuda -- -D warnings \
        && CARGO_TARGET_DIR=target/cuda cargo test --release --workspace --exclude m2c-e2e --features cuda
}
stage "cuda feature (build, clippy, tests incl. NVRTC compile, same header)" cuda_stage
stage "C tests (plain, ASan+UBSan, valgrind)" bash scripts/ctest.sh
stage "installed prefix: CMake, pkg-config, static, C++" bash scripts/test-install.sh
stage "Go binding (vet, -race, m2cdebug)" bash scripts/test-go.sh
stage "Zig binding (shared, static)" bash scripts/test-zig.sh
stage "Python package (pip install, pytest with numpy and JAX)" bash scripts/test-python.sh
echo "(the transformers parity suite needs ~3 GB of torch: it is scripts/test-python-hf.sh, run separately)"
stage "prefill -> decode handoff over UCX (two processes, tp 2 -> 1)" bash scripts/test-handoff.sh
# After Go and Zig: it uses the toolchains their stages install.
stage "README instructions, literally, in projects outside the repository" bash scripts/test-readme.sh
stage "fuzz (30 s per target)" bash scripts/fuzz.sh 30

log "summary"
if [ $failed -ne 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
