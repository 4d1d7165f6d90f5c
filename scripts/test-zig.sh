#!/usr/bin/env bash
# Checks that the Zig bindings' sources (bindings/zig: build.zig, src/,
# examples/) are `zig fmt`-ed, then builds and runs their tests twice:
# against the shared libm2c.so and, with -Dstatic=true, against libm2c.a.
#
# It builds nothing with cargo: target/release/libm2c.{so,a} and
# include/m2c.h must exist (cargo build --release). Zig 0.15.2 comes from
# PyPI (pip install ziglang==0.15.2) when `python3 -m ziglang version` is
# missing or reports another version; rerunning installs nothing new.
# Zig's caches live under target/ (target/zig-global-cache, target/zig-cache).
# Exits non-zero if any stage fails; every stage's exit code is checked
# explicitly. The last line is the summary.
#
# Environment: PYTHON (default python3), M2C_LIB_DIR (default target/release).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
ZIG_VERSION=0.15.2
LIB_DIR=${M2C_LIB_DIR:-$ROOT/target/release}
START=$(date +%s)

export ZIG_GLOBAL_CACHE_DIR=$ROOT/target/zig-global-cache
ZIG_LOCAL_CACHE=$ROOT/target/zig-cache

zig() { "$PYTHON" -m ziglang "$@"; }

summary() {
    # summary STATUS DETAIL: the closing line, then the exit.
    echo "test-zig.sh: $1: $2 ($(( $(date +%s) - START )) s)"
}

for f in "$LIB_DIR/libm2c.so" "$LIB_DIR/libm2c.a" "$ROOT/include/m2c.h"; do
    if [ ! -f "$f" ]; then
        echo "test-zig.sh: $f is missing: run 'cargo build --release' first" >&2
        summary FAILED "prerequisites missing"
        exit 2
    fi
done

have=$(zig version 2>/dev/null)
if [ "$have" != "$ZIG_VERSION" ]; then
    echo "=== installing Zig $ZIG_VERSION from PyPI (found: ${have:-none})"
    if ! PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION"; then
        summary FAILED "cannot install ziglang==$ZIG_VERSION with pip"
        exit 2
    fi
    have=$(zig version 2>/dev/null)
    if [ "$have" != "$ZIG_VERSION" ]; then
        summary FAILED "python3 -m ziglang reports '${have:-nothing}' after installing $ZIG_VERSION"
        exit 2
    fi
fi
echo "zig $have ($PYTHON -m ziglang)"

mkdir -p "$ZIG_GLOBAL_CACHE_DIR" "$ZIG_LOCAL_CACHE"
cd "$ROOT/bindings/zig" || { summary FAILED "no bindings/zig"; exit 2; }

passed=()
failed=()

# zig fmt --check lists the files it would change (or the parse errors) and
# exits non-zero. Its output is captured and echoed: Zig 0.15 writes to a
# regular file at its own offset, which would overwrite a log that this
# script's output is redirected to.
echo
echo "=== zig: fmt --check (build.zig, src/, examples/)"
t0=$SECONDS
if fmt_out=$(zig fmt --check build.zig src examples 2>&1); then
    passed+=("fmt")
    echo "--- zig fmt: ok ($((SECONDS - t0)) s)"
else
    failed+=("fmt")
    printf '%s\n' "$fmt_out"
    echo "--- zig fmt: FAILED: the files listed above are not zig fmt-ed" \
        "(fix: cd bindings/zig && $PYTHON -m ziglang fmt build.zig src examples)"
fi

stage() {
    # stage NAME ZIG-BUILD-ARGS...: one `zig build` run; its exit code decides.
    local name=$1
    shift
    echo
    echo "=== zig: $name"
    local t0=$SECONDS
    zig build "$@" --cache-dir "$ZIG_LOCAL_CACHE" ${M2C_LIB_DIR:+-Dlib-dir="$M2C_LIB_DIR"} --summary all
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        passed+=("$name")
        echo "--- zig $name: ok ($((SECONDS - t0)) s)"
    else
        failed+=("$name")
        echo "--- zig $name: FAILED (exit $rc, $((SECONDS - t0)) s)"
    fi
}

stage "tests, shared libm2c.so" test
stage "tests, static libm2c.a" test -Dstatic=true

echo
if [ "${#failed[@]}" -ne 0 ]; then
    list=$(printf '%s; ' "${failed[@]}")
    summary FAILED "${#passed[@]} of 3 Zig stages passed; failed: ${list%; }"
    exit 1
fi
summary ok "3 of 3 Zig stages passed (fmt, shared, static)"
exit 0
