#!/usr/bin/env bash
# Builds and runs the C tests of m2c (ctests/) in three trees:
#
#   ctests/build/plain     -Wall -Wextra -Wpedantic -Werror, -O2
#   ctests/build/asan      the same with -fsanitize=address,undefined
#   ctests/build/valgrind  every test under valgrind memcheck
#
# It builds nothing with cargo: target/release/libm2c.{so,a} and
# include/m2c.h must exist (cargo build --release). Each tree is wiped and
# reconfigured, so re-running is clean. Exits non-zero if any stage fails;
# every stage's exit code is checked explicitly.
#
# Environment: M2C_LIB_DIR (default target/release), JOBS (default: nproc).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB_DIR=${M2C_LIB_DIR:-$ROOT/target/release}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
BUILD=$ROOT/ctests/build
START=$(date +%s)

failures=()
note_failure() {
    echo "ctest.sh: FAILED: $1" >&2
    failures+=("$1")
}

for f in "$LIB_DIR/libm2c.so" "$LIB_DIR/libm2c.a" "$ROOT/include/m2c.h"; do
    if [ ! -f "$f" ]; then
        echo "ctest.sh: $f is missing: run 'cargo build --release' first" >&2
        exit 2
    fi
done
for tool in cmake ctest valgrind ldd; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ctest.sh: $tool is not installed (apt-get install -y cmake valgrind)" >&2
        exit 2
    fi
done

# configure_and_build <tree> <cmake args...>: returns non-zero on failure.
configure_and_build() {
    local tree=$1
    shift
    local dir=$BUILD/$tree
    rm -rf "$dir"
    if ! cmake -S "$ROOT/ctests" -B "$dir" -DM2C_LIB_DIR="$LIB_DIR" "$@" >"$BUILD/$tree.configure.log" 2>&1; then
        cat "$BUILD/$tree.configure.log" >&2
        return 1
    fi
    if ! cmake --build "$dir" -j "$JOBS"; then
        return 1
    fi
    return 0
}

# run_ctest <tree>: returns ctest's exit code.
run_ctest() {
    local dir=$BUILD/$1
    (cd "$dir" && ctest --output-on-failure -j "$JOBS")
}

# `cmd | grep -q` is racy under pipefail: grep exits at the first match and
# the writer's SIGPIPE then fails the pipeline. Match on captured output.
output_has() {
    local pattern=$1 out
    shift
    out=$("$@" 2>&1) || return 1
    grep -q -- "$pattern" <<<"$out"
}

# Checks on the built binaries that make a green run mean something.
check_plain_linkage() {
    local dir=$BUILD/plain rc=0
    # The shared tests record the SONAME and find it through BUILD_RPATH.
    if ! output_has 'NEEDED.*\[libm2c\.so\.1\]' readelf -d "$dir/version_abi"; then
        echo "version_abi does not record DT_NEEDED libm2c.so.1" >&2
        rc=1
    fi
    if ! output_has "libm2c\.so\.1 => $dir/m2c-runtime/libm2c\.so\.1" ldd "$dir/version_abi"; then
        echo "version_abi does not load libm2c.so.1 from $dir/m2c-runtime:" >&2
        ldd "$dir/version_abi" >&2
        rc=1
    fi
    # The static test must not load the shared library at all.
    if output_has libm2c ldd "$dir/threads_static"; then
        echo "threads_static links libm2c dynamically" >&2
        rc=1
    fi
    return $rc
}

check_asan_linkage() {
    local dir=$BUILD/asan rc=0 t
    for t in version_abi threads_static header_twice_cpp; do
        if ! output_has 'libasan\.so' ldd "$dir/$t"; then
            echo "$t is not linked against the ASan runtime:" >&2
            ldd "$dir/$t" >&2
            rc=1
        fi
        if ! output_has 'libubsan\.so' ldd "$dir/$t"; then
            echo "$t is not linked against the UBSan runtime" >&2
            rc=1
        fi
    done
    return $rc
}

check_valgrind_commands() {
    local dir=$BUILD/valgrind listing total wrapped
    listing=$(cd "$dir" && ctest -N -V) || return 1
    total=$(grep -c 'Test command:' <<<"$listing")
    wrapped=$(grep -c 'Test command: [^ ]*valgrind ' <<<"$listing")
    if [ "$total" -eq 0 ] || [ "$total" -ne "$wrapped" ]; then
        echo "only $wrapped of $total valgrind-tree tests run under valgrind" >&2
        return 1
    fi
    return 0
}

mkdir -p "$BUILD"

echo "=== plain ==="
if configure_and_build plain -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    check_plain_linkage || note_failure "plain: linkage checks"
    run_ctest plain || note_failure "plain: ctest"
else
    note_failure "plain: configure/build"
fi

echo "=== asan+ubsan ==="
if configure_and_build asan -DCMAKE_BUILD_TYPE=Debug -DM2C_SANITIZE=ON; then
    check_asan_linkage || note_failure "asan: sanitizer runtime not linked"
    run_ctest asan || note_failure "asan: ctest"
else
    note_failure "asan: configure/build"
fi

echo "=== valgrind ==="
if configure_and_build valgrind -DCMAKE_BUILD_TYPE=Debug -DM2C_VALGRIND=ON; then
    check_valgrind_commands || note_failure "valgrind: tests not wrapped in valgrind"
    run_ctest valgrind || note_failure "valgrind: ctest"
else
    note_failure "valgrind: configure/build"
fi

echo "=== ctest.sh finished in $(($(date +%s) - START)) s ==="
if [ ${#failures[@]} -ne 0 ]; then
    printf 'ctest.sh: %d stage(s) failed:\n' "${#failures[@]}" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "ctest.sh: all three trees passed"
exit 0
