#!/usr/bin/env bash
# ggml_baseline.sh -- build and run tools/baselines/ggml_baseline.c: a same-machine CPU
# baseline of llama.cpp's ggml ops (ssm_conv / ssm_scan graph + state copy-backs,
# as wired by llama.cpp's build_mamba2_layer/build_rs) for the Mamba2-2.7B
# decode-step state work, to compare against m2c.
#
# ggml source: llama.cpp as vendored in llama-cpp-python 0.3.36 (its source
# archive, from `pip download --no-binary :all:`).
# Idempotent: reuses /tmp/lcp.tar.gz (downloaded if missing), the
# extracted ggml tree in /tmp/ggml-src and the build in /tmp/ggml-build.
# Every CPU-heavy step runs under `flock $M2C_CPU_LOCK` (default
# /tmp/m2c-cpu.lock), shared with other work on the machine; do not wrap this
# script itself in the same flock (it would deadlock).
#
# Usage: tools/baselines/ggml_baseline.sh [SECTION...]
#   sections: check memcpy a8 c1 a1 a32   (default: all)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="${M2C_CPU_LOCK:-/tmp/m2c-cpu.lock}"
TARBALL="${LCP_TARBALL:-/tmp/lcp.tar.gz}"
SRC="${GGML_SRC:-/tmp/ggml-src}"
BUILD="${GGML_BUILD:-/tmp/ggml-build}"
VERSION=0.3.36
PREFIX="llama_cpp_python-${VERSION}"
locked() { flock "$LOCK" "$@"; }

# 1. source -------------------------------------------------------------------
if [ ! -f "$TARBALL" ] && [ ! -f "$SRC/CMakeLists.txt" ]; then
    echo "fetching the llama-cpp-python ${VERSION} source archive (pip download) -> $TARBALL" >&2
    dl="$(mktemp -d /tmp/lcp-dl.XXXXXX)"
    python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==${VERSION}" -d "$dl"
    mv "$dl"/*.tar.gz "$TARBALL"
    rm -rf "$dl"
fi

if [ ! -f "$SRC/CMakeLists.txt" ]; then
    echo "extracting ggml from $TARBALL -> $SRC" >&2
    tmp="$(mktemp -d /tmp/ggml-src.XXXXXX)"
    locked tar xzf "$TARBALL" -C "$tmp" \
        "$PREFIX/vendor/llama.cpp/ggml" \
        "$PREFIX/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null ||
    locked tar xzf "$TARBALL" -C "$tmp" "$PREFIX/vendor/llama.cpp/ggml"
    commit="unknown"
    [ -f "$tmp/$PREFIX/.git/modules/vendor/llama.cpp/HEAD" ] &&
        commit="$(head -c 40 "$tmp/$PREFIX/.git/modules/vendor/llama.cpp/HEAD")"
    rm -rf "$SRC"
    mv "$tmp/$PREFIX/vendor/llama.cpp/ggml" "$SRC"
    echo "$commit" > "$SRC/LLAMA_CPP_COMMIT"
    rm -rf "$tmp"
fi
# the sdist omits ggml.pc.in (only used for `make install` pkg-config); stand-alone
# configure needs the file to exist, so provide an empty one
[ -f "$SRC/ggml.pc.in" ] || : > "$SRC/ggml.pc.in"
LLAMA_COMMIT="$(cat "$SRC/LLAMA_CPP_COMMIT" 2>/dev/null || echo unknown)"

# 2. ggml build (CPU only, Release, native, static) ------------------------------
libs_present() {
    [ -f "$BUILD/src/libggml.a" ] && [ -f "$BUILD/src/libggml-base.a" ] &&
    [ -f "$BUILD/src/libggml-cpu.a" ]
}
if ! libs_present; then
    t0=$SECONDS
    locked cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DBUILD_SHARED_LIBS=OFF \
        -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_BACKEND_DL=OFF \
        -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON >/dev/null
    locked cmake --build "$BUILD" -j2 >"$BUILD.log" 2>&1 || { tail -30 "$BUILD.log" >&2; exit 1; }
    echo "ggml build: $((SECONDS - t0)) s" >&2
fi
libs_present || { echo "ggml static libs not found under $BUILD/src" >&2; exit 1; }

# 3. benchmark binary --------------------------------------------------------------
BIN="$BUILD/ggml_baseline"
if [ ! -x "$BIN" ] || [ "$HERE/ggml_baseline.c" -nt "$BIN" ] || [ "$BUILD/src/libggml.a" -nt "$BIN" ]; then
    locked gcc -std=c11 -O2 -march=native -Wall -Wextra -Wno-unused-parameter \
        -DLLAMA_CPP_COMMIT="\"$LLAMA_COMMIT\"" -I"$SRC/include" \
        "$HERE/ggml_baseline.c" -o "$BIN" \
        "$BUILD/src/libggml.a" "$BUILD/src/libggml-cpu.a" "$BUILD/src/libggml-base.a" \
        -fopenmp -lstdc++ -lm -lpthread
fi

# 4. run (each section under its own lock, so no single locked run is long) -------
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(check memcpy a8 c1 a1 a32)
"$BIN" info
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
header_done=0
for s in "${sections[@]}"; do
    case "$s" in
        a8|c1|a1|a32)
            if [ $header_done -eq 0 ]; then echo; "$BIN" header; header_done=1; fi ;;
    esac
    locked "$BIN" "$s"
done
