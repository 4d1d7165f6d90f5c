#!/usr/bin/env bash
# Installs m2c into a fresh prefix (target/install-test/prefix) with
# scripts/install.sh and proves that C and C++ projects can use it with
# nothing but that prefix:
#
#   install      three installs in a row (--prefix DIR, PREFIX=DIR, env PREFIX)
#                give the same tree, byte for byte
#   layout       exactly the expected files; SONAME libm2c.so.<abi> (readelf);
#                the files are the built ones; versions agree
#   (a)          C via CMake find_package(m2c CONFIG) + m2c::m2c
#   (b)          the same C program via `cc $(pkg-config --cflags --libs m2c)`
#   (c)          static links via m2c::m2c_static and `pkg-config --static m2c-static`:
#                ldd shows no libm2c
#   (d)          C++17 via find_package: RAII handle, exceptions, round trip
#   versions     the version rules of m2cConfigVersion.cmake, through find_package
#   relocation   the prefix moved elsewhere; (a) configured, built and run again
#
# Every shared consumer must record DT_NEEDED libm2c.so.<abi>, take m2c.h from
# the prefix (checked in the compiler's dependency files) and load
# libm2c.so.<abi> from the prefix's lib directory, found through its RUNPATH
# (CMake) or LD_LIBRARY_PATH (pkg-config) alone.
#
# The library is built only when target/release lacks it or is older than the
# sources; otherwise the install uses --no-build. Exit status 0 only if every
# stage passed; each check's result is tested explicitly (no set -e).
# Logs: target/install-test/logs/.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$ROOT/target/install-test
PREFIX=$WORK/prefix
MOVED=$WORK/moved/m2c-prefix
BUILD=$WORK/build
LOGS=$WORK/logs
CONSUMERS=$ROOT/tests/consumers
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
CC=${CC:-cc}
CXX=${CXX:-c++}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
START=$SECONDS

# --- expected values, read here independently of install.sh --------------------

ABI=$(sed -n 's/^pub const M2C_ABI_VERSION: u32 = \([0-9][0-9]*\);.*/\1/p' "$ROOT/src/abi.rs")
VERSION=$(grep -m1 '^version *= *"' "$ROOT/Cargo.toml" | sed 's/^version *= *"\([^"]*\)".*/\1/')
SONAME=libm2c.so.$ABI
STATIC_SYSLIBS=$(grep -v '^#' "$ROOT/scripts/native-libs.txt" | sed 's/[^ ][^ ]*/-l&/g')
if [ -z "$ABI" ] || [ -z "$VERSION" ]; then
    echo "test-install.sh: cannot read the ABI version (src/abi.rs) or version (Cargo.toml)" >&2
    exit 2
fi

# --- helpers -------------------------------------------------------------------
# Pipelines end in `grep PATTERN >/dev/null`, never `grep -q`: grep -q stops
# at the first match, and under pipefail the writer's SIGPIPE fails the pipe.

fail() {
    echo "    FAIL: $*" >&2
    return 1
}
ok() { echo "    ok: $*"; }

# logged LOGNAME COMMAND...: runs COMMAND with its output appended to
# logs/LOGNAME.log; on failure shows the end of the log.
logged() {
    local log=$LOGS/$1.log rc
    shift
    echo "\$ $*" >>"$log"
    "$@" >>"$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "    command failed (exit $rc): $*" >&2
        tail -n 40 "$log" | sed 's/^/    | /' >&2
    fi
    return $rc
}

# check_header_from DIR: every compiler dependency file under DIR that names
# m2c.h names the installed one, and at least one does.
check_header_from() {
    local dir=$1 seen=0 f paths p
    while IFS= read -r -d '' f; do
        paths=$(tr ' \\' '\n\n' <"$f" | sed 's/:$//' | grep '/m2c\.h$' | sort -u)
        [ -n "$paths" ] || continue
        seen=1
        while IFS= read -r p; do
            [ "$(realpath -m -- "$p")" = "$(realpath -m -- "$2/include/m2c.h")" ] ||
                { fail "$f: m2c.h came from $p, not from $2/include"; return 1; }
        done <<<"$paths"
    done < <(find "$dir" -name '*.d' -print0)
    [ $seen = 1 ] || { fail "no dependency file under $dir mentions m2c.h"; return 1; }
    ok "m2c.h included from $2/include"
}

# needed_libs EXE: the DT_NEEDED entries, one per line.
needed_libs() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'; }
# runpath EXE: the DT_RUNPATH (or DT_RPATH) of EXE, empty if none.
runpath() { readelf -d "$1" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\].*/\2/p'; }

# check_shared_exe EXE LIBDIR HOW: EXE records DT_NEEDED libm2c.so.<abi>
# (the SONAME, not a path) and, found through HOW (runpath: its RUNPATH
# alone, which must be exactly LIBDIR; ld_library_path: LD_LIBRARY_PATH=LIBDIR
# alone, with no RUNPATH), loads it from LIBDIR.
check_shared_exe() {
    local exe=$1 libdir=$2 how=$3 needed rp resolved
    needed=$(needed_libs "$exe") || { fail "readelf -d $exe"; return 1; }
    grep -qx "$SONAME" <<<"$needed" ||
        { fail "$exe does not record NEEDED $SONAME (has: $(echo $needed))"; return 1; }
    if grep 'm2c' <<<"$needed" | grep -vx "$SONAME" >/dev/null; then
        fail "$exe records another libm2c: $(echo $needed)"
        return 1
    fi
    ok "$(basename "$exe"): NEEDED $SONAME"
    rp=$(runpath "$exe")
    case $how in
        runpath)
            [ "$rp" = "$libdir" ] || { fail "$exe has RUNPATH '$rp', expected exactly $libdir"; return 1; }
            ok "$(basename "$exe"): RUNPATH $rp"
            resolved=$(env -u LD_LIBRARY_PATH ldd "$exe" | awk -v s="$SONAME" '$1 == s { print $3 }')
            ;;
        ld_library_path)
            [ -z "$rp" ] || { fail "$exe has an unexpected RUNPATH '$rp'"; return 1; }
            # Without LD_LIBRARY_PATH nothing on this system provides the library ...
            if env -u LD_LIBRARY_PATH ldd "$exe" | grep "$SONAME => /" >/dev/null; then
                fail "$SONAME resolves outside the prefix: $(env -u LD_LIBRARY_PATH ldd "$exe" | grep "$SONAME")"
                return 1
            fi
            # ... and with it, the prefix does.
            resolved=$(LD_LIBRARY_PATH=$libdir ldd "$exe" | awk -v s="$SONAME" '$1 == s { print $3 }')
            ;;
        *) fail "check_shared_exe: unknown mode $how"; return 1 ;;
    esac
    [ "$resolved" = "$libdir/$SONAME" ] ||
        { fail "$exe loads $SONAME from '$resolved', expected $libdir/$SONAME"; return 1; }
    ok "$(basename "$exe"): loads $resolved"
}

# check_static_exe EXE: EXE contains m2c and needs no libm2c at run time.
check_static_exe() {
    local exe=$1
    if needed_libs "$exe" | grep m2c >/dev/null; then
        fail "$exe records NEEDED $(needed_libs "$exe" | grep m2c)"
        return 1
    fi
    if env -u LD_LIBRARY_PATH ldd "$exe" | grep m2c >/dev/null; then
        fail "ldd $exe mentions libm2c: $(ldd "$exe" | grep m2c)"
        return 1
    fi
    nm "$exe" | grep ' T m2c_create$' >/dev/null || { fail "$exe does not define m2c_create"; return 1; }
    ok "$(basename "$exe"): m2c linked in, ldd shows no libm2c"
}

# run_consumer LOGNAME EXPECTED_VARIANT [VAR=VALUE...] EXE: runs EXE with
# LD_LIBRARY_PATH removed (or set by the VAR=VALUE arguments) and checks its
# "OK" line.
run_consumer() {
    local log=$1 variant=$2 out rc
    shift 2
    out=$(env -u LD_LIBRARY_PATH "$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" >>"$LOGS/$log.log"
    [ $rc -eq 0 ] || { fail "$* exited $rc:"; printf '%s\n' "$out" | sed 's/^/    | /' >&2; return 1; }
    grep -q "^m2c consumer ($variant): OK, m2c $VERSION, ABI $ABI\$" <<<"$out" ||
        { fail "unexpected output of $*: $out"; return 1; }
    ok "runs: $out"
}

# cmake_configure LOGNAME SRC DIR PREFIX: configures SRC in a fresh DIR so
# that find_package can only see PREFIX, and checks it found m2c there.
cmake_configure() {
    local log=$1 src=$2 dir=$3 prefix=$4 found
    rm -rf "$dir"
    logged "$log" cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
        -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" || return 1
    found=$(sed -n 's/^m2c_DIR:[A-Z]*=//p' "$dir/CMakeCache.txt")
    [ "$found" = "$prefix/lib/cmake/m2c" ] ||
        { fail "find_package used m2c_DIR='$found', expected $prefix/lib/cmake/m2c"; return 1; }
    ok "find_package(m2c) found $found"
}

cmake_build() {
    logged "$1" cmake --build "$2" -j "$JOBS" || return 1
    ok "built $(basename "$2")"
}

# tree_state DIR: a listing of DIR with types, link targets and checksums.
tree_state() {
    (cd "$1" && find . -printf '%p %y %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

# --- stages ----------------------------------------------------------------------

stage_tools() {
    local t missing=()
    for t in cmake "$CC" "$CXX" readelf ldd nm realpath sha256sum; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if ! command -v pkg-config >/dev/null 2>&1; then
        echo "    installing pkgconf (apt)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkgconf; } \
            >>"$LOGS/tools.log" 2>&1 || missing+=(pkg-config)
    fi
    [ ${#missing[@]} -eq 0 ] ||
        { fail "missing tools: ${missing[*]} (apt-get install -y cmake pkgconf binutils g++)"; return 1; }
    ok "$(cmake --version | head -1); pkg-config $(pkg-config --version); $("$CC" --version | head -1)"
}

stage_install() {
    local mode=--no-build stale s1 s2 s3
    if [ ! -f "$REL/libm2c.so" ] || [ ! -f "$REL/libm2c.a" ] || [ ! -f "$ROOT/include/m2c.h" ]; then
        mode=
        echo "    target/release has no library yet: install.sh builds it"
    else
        stale=$(cd "$ROOT" && find src core/src build.rs Cargo.toml core/Cargo.toml Cargo.lock cbindgen.toml \
            -newer "$REL/libm2c.so" -print -quit 2>/dev/null)
        if [ -n "$stale" ]; then
            mode=
            echo "    $stale is newer than $REL/libm2c.so: install.sh rebuilds"
        fi
    fi
    logged install "$ROOT/scripts/install.sh" --prefix "$PREFIX" $mode || return 1
    s1=$(tree_state "$PREFIX") || { fail "cannot list $PREFIX"; return 1; }
    ok "installed with --prefix DIR ${mode:-(built)}"
    # Again, in place, with the two other spellings of the prefix.
    logged install "$ROOT/scripts/install.sh" "PREFIX=$PREFIX" --no-build || return 1
    s2=$(tree_state "$PREFIX")
    logged install env PREFIX="$PREFIX" "$ROOT/scripts/install.sh" --no-build || return 1
    s3=$(tree_state "$PREFIX")
    [ "$s1" = "$s2" ] && [ "$s1" = "$s3" ] ||
        { fail "re-installing changed the tree:"; diff <(echo "$s1") <(echo "$s3") >&2; return 1; }
    ok "re-installed with PREFIX=DIR and env PREFIX: identical tree"
    if find "$PREFIX" -name '.*.tmp.*' | grep . >/dev/null; then
        fail "temporary files left behind: $(find "$PREFIX" -name '.*.tmp.*')"
        return 1
    fi
}

stage_layout() {
    local expected actual lib=$PREFIX/lib soname h_abi pcdir=$PREFIX/lib/pkgconfig
    expected=$(printf '%s\n' include include/m2c.h include/m2c.hpp lib lib/libm2c.a lib/libm2c.so "lib/$SONAME" \
        lib/pkgconfig lib/pkgconfig/m2c.pc lib/pkgconfig/m2c-static.pc \
        lib/cmake lib/cmake/m2c lib/cmake/m2c/m2cConfig.cmake lib/cmake/m2c/m2cConfigVersion.cmake | sort)
    actual=$(cd "$PREFIX" && find . -mindepth 1 -printf '%P\n' | sort)
    [ "$expected" = "$actual" ] ||
        { fail "installed files differ from the expected set:"; diff <(echo "$expected") <(echo "$actual") >&2; return 1; }
    ok "exactly the $(wc -l <<<"$actual") expected entries"
    [ -f "$lib/$SONAME" ] && [ ! -L "$lib/$SONAME" ] || { fail "$lib/$SONAME is not a regular file"; return 1; }
    [ -L "$lib/libm2c.so" ] && [ "$(readlink "$lib/libm2c.so")" = "$SONAME" ] ||
        { fail "$lib/libm2c.so is not a symlink to $SONAME"; return 1; }
    ok "libm2c.so -> $SONAME (relative symlink)"
    # The installed libraries are the built ones without debug information.
    local stripped
    stripped=$(mktemp -d)
    strip --strip-debug -o "$stripped/so" "$REL/libm2c.so" && strip --strip-debug -o "$stripped/a" "$REL/libm2c.a" ||
        { fail "cannot strip the built libraries"; rm -rf "$stripped"; return 1; }
    cmp -s "$lib/$SONAME" "$stripped/so" || { fail "$lib/$SONAME is not $REL/libm2c.so stripped of debug info"; rm -rf "$stripped"; return 1; }
    cmp -s "$lib/libm2c.a" "$stripped/a" || { fail "$lib/libm2c.a is not $REL/libm2c.a stripped of debug info"; rm -rf "$stripped"; return 1; }
    rm -rf "$stripped"
    local sec
    sec=$(readelf -S "$lib/$SONAME")
    if grep -q '\.debug_info' <<<"$sec"; then
        fail "$lib/$SONAME still has .debug_info"
        return 1
    fi
    ok "libraries installed without debug info ($(du -k "$lib/$SONAME" | cut -f1) KiB .so, $(du -k "$lib/libm2c.a" | cut -f1) KiB .a)"
    cmp -s "$PREFIX/include/m2c.h" "$ROOT/include/m2c.h" || { fail "installed m2c.h differs from include/m2c.h"; return 1; }
    cmp -s "$PREFIX/include/m2c.hpp" "$ROOT/include/m2c.hpp" || { fail "installed m2c.hpp differs from include/m2c.hpp"; return 1; }
    ok "libraries and header are the built ones"
    soname=$(readelf -d "$lib/$SONAME" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    [ "$soname" = "$SONAME" ] || { fail "SONAME of $lib/$SONAME is '$soname', expected $SONAME"; return 1; }
    ok "readelf: SONAME $soname"
    h_abi=$(sed -n 's/^#define M2C_ABI_VERSION \([0-9]*\)$/\1/p' "$PREFIX/include/m2c.h")
    [ "$h_abi" = "$ABI" ] || { fail "installed header has M2C_ABI_VERSION '$h_abi', src/abi.rs $ABI"; return 1; }
    grep -qx "#define M2C_VERSION_STRING \"$VERSION\"" "$PREFIX/include/m2c.h" ||
        { fail "installed header is not version $VERSION"; return 1; }
    ok "header: ABI $h_abi, version $VERSION"
    # Nothing installed points back into the source tree, and the CMake
    # package names no absolute path at all.
    if grep -rlF -e "$ROOT/include" -e "$REL" "$PREFIX/lib/pkgconfig" "$PREFIX/lib/cmake"; then
        fail "an installed file names the source tree"
        return 1
    fi
    if grep -rlF "$PREFIX" "$PREFIX/lib/cmake"; then
        fail "the CMake package names the absolute prefix (not relocatable)"
        return 1
    fi
    ok "no source-tree paths; the CMake package has no absolute path"
    [ "$(PKG_CONFIG_LIBDIR=$pcdir pkg-config --modversion m2c)" = "$VERSION" ] &&
        [ "$(PKG_CONFIG_LIBDIR=$pcdir pkg-config --modversion m2c-static)" = "$VERSION" ] ||
        { fail "pkg-config --modversion is not $VERSION"; return 1; }
    PKG_CONFIG_LIBDIR=$pcdir logged layout pkg-config --validate m2c || return 1
    PKG_CONFIG_LIBDIR=$pcdir logged layout pkg-config --validate m2c-static || return 1
    ok "m2c.pc and m2c-static.pc: version $VERSION, valid"
}

stage_a() {
    local dir=$BUILD/c
    cmake_configure a "$CONSUMERS/c" "$dir" "$PREFIX" || return 1
    cmake_build a "$dir" || return 1
    check_header_from "$dir" "$PREFIX" || return 1
    check_shared_exe "$dir/consumer_c" "$PREFIX/lib" runpath || return 1
    run_consumer a "cmake shared" "$dir/consumer_c" || return 1
}

# The pkg-config search path holds only the prefix.
pc() { PKG_CONFIG_LIBDIR=$PREFIX/lib/pkgconfig PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config "$@"; }

stage_b() {
    local dir=$BUILD/pkgconfig flags
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    pc --exists "m2c >= $VERSION" || { fail "pkg-config --exists 'm2c >= $VERSION'"; return 1; }
    [ "$(pc --variable=abi_version m2c)" = "$ABI" ] || { fail "pkg-config abi_version is not $ABI"; return 1; }
    flags=$(pc --cflags --libs m2c) || { fail "pkg-config --cflags --libs m2c"; return 1; }
    ok "pkg-config --cflags --libs m2c: $flags"
    # shellcheck disable=SC2086 # the flags are meant to split
    logged b "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -MD -MF "$dir/main.d" \
        '-DM2C_CONSUMER_VARIANT="pkg-config shared"' \
        "$CONSUMERS/c/main.c" -o "$dir/consumer_c_pc" $flags || return 1
    ok "built consumer_c_pc"
    check_header_from "$dir" "$PREFIX" || return 1
    check_shared_exe "$dir/consumer_c_pc" "$PREFIX/lib" ld_library_path || return 1
    run_consumer b "pkg-config shared" LD_LIBRARY_PATH="$PREFIX/lib" "$dir/consumer_c_pc" || return 1
}

stage_c_cmake() {
    local dir=$BUILD/c
    [ -x "$dir/consumer_c_static" ] || { fail "$dir/consumer_c_static was not built by (a)"; return 1; }
    check_static_exe "$dir/consumer_c_static" || return 1
    run_consumer a "cmake static" "$dir/consumer_c_static" || return 1
}

stage_c_pkgconfig() {
    local dir=$BUILD/pkgconfig-static flags l
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    # m2c.pc's Libs.private carries the system libraries ...
    flags=$(pc --static --libs m2c) || { fail "pkg-config --static --libs m2c"; return 1; }
    for l in $STATIC_SYSLIBS; do
        grep -qw -- "$l" <<<"$flags" || { fail "pkg-config --static --libs m2c lacks $l: $flags"; return 1; }
    done
    ok "pkg-config --static --libs m2c: $flags"
    # ... but -lm2c picks libm2c.so when both are installed, so a static
    # link uses m2c-static.pc, which names the archive.
    flags=$(pc --static --cflags --libs m2c-static) || { fail "pkg-config --static m2c-static"; return 1; }
    ok "pkg-config --static --cflags --libs m2c-static: $flags"
    # shellcheck disable=SC2086
    logged c "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -MD -MF "$dir/main.d" \
        '-DM2C_CONSUMER_VARIANT="pkg-config static"' \
        "$CONSUMERS/c/main.c" -o "$dir/consumer_c_pc_static" $flags || return 1
    ok "built consumer_c_pc_static"
    check_header_from "$dir" "$PREFIX" || return 1
    check_static_exe "$dir/consumer_c_pc_static" || return 1
    run_consumer c "pkg-config static" "$dir/consumer_c_pc_static" || return 1
}

stage_d() {
    local dir=$BUILD/cpp
    cmake_configure d "$CONSUMERS/cpp" "$dir" "$PREFIX" || return 1
    cmake_build d "$dir" || return 1
    check_header_from "$dir" "$PREFIX" || return 1
    check_shared_exe "$dir/consumer_cpp" "$PREFIX/lib" runpath || return 1
    run_consumer d "C++17" "$dir/consumer_cpp" || return 1
}

stage_versions() {
    local dir=$BUILD/version
    rm -rf "$dir"
    logged versions cmake -S "$CONSUMERS/version" -B "$dir" -DCMAKE_PREFIX_PATH="$PREFIX" \
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_C_COMPILER="$CC" || return 1
    ok "$(grep -o 'm2c version rules: .*' "$LOGS/versions.log" | tail -1)"
}

stage_relocation() {
    local dir=$BUILD/c-relocated got
    rm -rf "$WORK/moved" && mkdir -p "$(dirname "$MOVED")" || return 1
    mv "$PREFIX" "$MOVED" || { fail "mv $PREFIX $MOVED"; return 1; }
    [ ! -e "$PREFIX" ] || { fail "$PREFIX still exists"; return 1; }
    ok "moved the prefix to $MOVED"
    cmake_configure relocation "$CONSUMERS/c" "$dir" "$MOVED" || return 1
    cmake_build relocation "$dir" || return 1
    check_header_from "$dir" "$MOVED" || return 1
    check_shared_exe "$dir/consumer_c" "$MOVED/lib" runpath || return 1
    run_consumer relocation "cmake shared" "$dir/consumer_c" || return 1
    check_static_exe "$dir/consumer_c_static" || return 1
    run_consumer relocation "cmake static" "$dir/consumer_c_static" || return 1
    # The .pc files name their prefix; pkgconf's --define-prefix recomputes it.
    if pkg-config --help 2>&1 | grep -- --define-prefix >/dev/null; then
        got=$(PKG_CONFIG_LIBDIR=$MOVED/lib/pkgconfig pkg-config --define-prefix --cflags m2c)
        [ "$(echo $got)" = "-I$MOVED/include" ] ||
            { fail "pkg-config --define-prefix --cflags m2c gave '$got'"; return 1; }
        ok "pkg-config --define-prefix follows the move: $got"
    fi
}

# --- driver --------------------------------------------------------------------

names=()
results=()
times=()
failed=0
# stage NAME FUNCTION: runs one stage and records its result.
stage() {
    local name=$1 fn=$2 t0=$SECONDS rc
    printf '\n=== %s\n' "$name"
    "$fn"
    rc=$?
    names+=("$name")
    times+=($((SECONDS - t0)))
    if [ $rc -eq 0 ]; then
        results+=(ok)
    else
        results+=(FAILED)
        failed=$((failed + 1))
    fi
    return 0
}
# skip NAME: records a stage that could not run.
skip() {
    names+=("$1")
    results+=(skipped)
    times+=(0)
    failed=$((failed + 1))
}

rm -rf "$WORK" && mkdir -p "$LOGS" "$BUILD" || { echo "cannot create $WORK" >&2; exit 2; }
echo "test-install.sh: m2c $VERSION, ABI $ABI ($SONAME); work dir $WORK"

stage "tools" stage_tools
if [ "${results[0]}" = ok ]; then
    stage "install (3x, idempotent)" stage_install
fi
if [ "${results[1]:-}" = ok ]; then
    stage "layout, SONAME, versions" stage_layout
    stage "(a) C, CMake find_package, m2c::m2c" stage_a
    stage "(b) C, pkg-config m2c" stage_b
    stage "(c) C static, m2c::m2c_static" stage_c_cmake
    stage "(c) C static, pkg-config --static m2c-static" stage_c_pkgconfig
    stage "(d) C++17, CMake find_package, RAII" stage_d
    stage "CMake version rules" stage_versions
    stage "relocated prefix, (a) again" stage_relocation
else
    for s in "layout, SONAME, versions" "(a) C, CMake find_package, m2c::m2c" \
        "(b) C, pkg-config m2c" "(c) C static, m2c::m2c_static" \
        "(c) C static, pkg-config --static m2c-static" "(d) C++17, CMake find_package, RAII" \
        "CMake version rules" "relocated prefix, (a) again"; do
        skip "$s"
    done
fi

printf '\n=== summary (m2c %s, %s)\n' "$VERSION" "$SONAME"
for i in "${!names[@]}"; do
    printf '  %-8s %-48s %3d s\n' "${results[$i]}" "${names[$i]}" "${times[$i]}"
done
echo "test-install: $((${#names[@]} - failed)) passed, $failed failed, $((SECONDS - START)) s (logs: $LOGS)"
[ $failed -eq 0 ]
