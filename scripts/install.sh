#!/usr/bin/env bash
# Installs m2c where C and C++ build systems find it on their own:
#
#   PREFIX/lib/libm2c.so.<abi>               the shared library (SONAME libm2c.so.<abi>)
#   PREFIX/lib/libm2c.so -> libm2c.so.<abi>  the link-time name
#   PREFIX/lib/libm2c.a                      the static library
#   PREFIX/include/m2c.h                     the generated header
#   PREFIX/include/m2c.hpp                   the C++17 face (header-only, over m2c.h)
#   PREFIX/lib/pkgconfig/m2c.pc              pkg-config, shared (--static adds the system libs)
#   PREFIX/lib/pkgconfig/m2c-static.pc       pkg-config, links libm2c.a whatever else is in lib/
#   PREFIX/lib/cmake/m2c/m2cConfig.cmake     find_package(m2c CONFIG): m2c::m2c, m2c::m2c_static
#   PREFIX/lib/cmake/m2c/m2cConfigVersion.cmake
#
# Usage:
#   scripts/install.sh [--prefix DIR | --prefix=DIR | PREFIX=DIR] [--no-build]
#
# PREFIX may also come from the environment (default /usr/local). DESTDIR, if
# set, stages the install under DESTDIR while the pkg-config file still names
# PREFIX (the CMake package computes every path from its own location, so it
# is relocatable anyway). --no-build skips `cargo build --release` and
# installs what is already in target/release (or $CARGO_TARGET_DIR/release).
#
# The ABI version (the SONAME suffix) is read from src/abi.rs and the version
# from Cargo.toml; both are checked against the header and the built library
# before anything is installed. Re-running overwrites every file in place
# (each one is written to a temporary name and renamed over the old one, so
# a running program that has the old libm2c.so.<abi> mapped is unaffected).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "install.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# The system libraries a Rust staticlib needs (one list, checked against
# rustc by scripts/test.sh).
read -ra STATIC_SYSLIBS < <(grep -v '^#' "$ROOT/scripts/native-libs.txt")

prefix=${PREFIX:-/usr/local}
build=1
while [ $# -gt 0 ]; do
    case $1 in
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a directory"
            prefix=$2
            shift 2
            ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        PREFIX=*) prefix=${1#PREFIX=}; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[ -n "$prefix" ] || die "empty prefix"
destdir=${DESTDIR:-}

# An absolute, normalised prefix (symlinks kept as the user wrote them).
case $prefix in
    /*) ;;
    *)
        [ -z "$destdir" ] || die "with DESTDIR, the prefix must be absolute"
        prefix=$PWD/$prefix
        ;;
esac
prefix=$(realpath -m -s -- "$prefix") || die "cannot normalise the prefix"

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
rel=$target_dir/release

# --- the one source of truth for each number --------------------------------

abi=$(sed -n 's/^pub const M2C_ABI_VERSION: u32 = \([0-9][0-9]*\);.*$/\1/p' "$ROOT/src/abi.rs")
[ -n "$abi" ] && [ "$(printf '%s\n' "$abi" | wc -l)" -eq 1 ] ||
    die "cannot read M2C_ABI_VERSION from src/abi.rs"

# name, version and description of the [package] table of Cargo.toml, or
# of [workspace.package] for the fields the package inherits.
cargo_field() {
    awk -v key="$1" '
        /^\[/ { in_pkg = ($0 == "[package]" || $0 == "[workspace.package]"); next }
        in_pkg && $0 ~ "^" key "[ \t]*=" {
            sub("^[^=]*=[ \t]*\"", ""); sub("\"[ \t]*(#.*)?$", ""); print; exit
        }' "$ROOT/Cargo.toml"
}
version=$(cargo_field version)
description=$(cargo_field description)
[[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] ||
    die "Cargo.toml version '$version' is not MAJOR.MINOR.PATCH"
v_major=${BASH_REMATCH[1]} v_minor=${BASH_REMATCH[2]} v_patch=${BASH_REMATCH[3]}
[ -n "$description" ] || description="m2c"
soname=libm2c.so.$abi

# --- build --------------------------------------------------------------------

if [ "$build" = 1 ]; then
    command -v cargo >/dev/null || die "cargo not found (install Rust, or pass --no-build)"
    echo "install.sh: cargo build --release -p m2c"
    (cd "$ROOT" && cargo build --release -p m2c) || die "cargo build --release -p m2c failed"
fi

# --- check what is about to be installed ---------------------------------------

header=$ROOT/include/m2c.h
for f in "$rel/libm2c.so" "$rel/libm2c.a" "$header" "$ROOT/include/m2c.hpp"; do
    [ -f "$f" ] || die "$f is missing: run 'cargo build --release' (or drop --no-build)"
done
h_abi=$(sed -n 's/^#define M2C_ABI_VERSION \([0-9][0-9]*\)$/\1/p' "$header")
h_version=$(sed -n 's/^#define M2C_VERSION_STRING "\(.*\)"$/\1/p' "$header")
[ "$h_abi" = "$abi" ] ||
    die "include/m2c.h says M2C_ABI_VERSION '$h_abi' but src/abi.rs says $abi: rebuild"
[ "$h_version" = "$version" ] ||
    die "include/m2c.h says version '$h_version' but Cargo.toml says $version: rebuild"

command -v readelf >/dev/null || die "readelf not found (apt-get install -y binutils)"
lib_soname=$(readelf -d "$rel/libm2c.so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$lib_soname" = "$soname" ] ||
    die "$rel/libm2c.so has SONAME '$lib_soname', expected $soname: rebuild"
case $(readelf -h "$rel/libm2c.so" | sed -n 's/^ *Class: *//p') in
    ELF64) sizeof_void_p=8 ;;
    ELF32) sizeof_void_p=4 ;;
    *) die "cannot tell the word size of $rel/libm2c.so" ;;
esac

# --- install --------------------------------------------------------------------

libdir=$destdir$prefix/lib
includedir=$destdir$prefix/include
pcdir=$libdir/pkgconfig
cmakedir=$libdir/cmake/m2c
mkdir -p "$libdir" "$includedir" "$pcdir" "$cmakedir" || die "cannot create directories under $destdir$prefix"

tmp_files=()
cleanup() {
    local t
    for t in "${tmp_files[@]}"; do rm -f -- "$t"; done
}
trap cleanup EXIT

# tmp_for DEST: sets $t to a temporary name next to DEST (same filesystem, so
# mv is a rename) and registers it for removal on exit.
tmp_for() {
    t=$(dirname -- "$1")/.$(basename -- "$1").tmp.$$
    tmp_files+=("$t")
}

# put SRC DEST MODE: copies SRC over DEST atomically.
put() {
    local t
    tmp_for "$2"
    rm -f -- "$t" && cp -- "$1" "$t" && chmod "$3" "$t" && mv -f -T -- "$t" "$2" ||
        die "cannot install $2"
    echo "  $2"
}

# put_lib SRC DEST MODE: as put, without debug information (the build keeps
# line tables for profiling; an installed library does not need them: the
# shared one goes from 16.5 MB to 3.3 MB, the static one from 46 to 19 MB).
# Without `strip`, a plain copy.
put_lib() {
    local t
    tmp_for "$2"
    rm -f -- "$t" && cp -- "$1" "$t" || die "cannot install $2"
    if command -v strip >/dev/null; then
        strip --strip-debug -- "$t" || die "cannot strip $2"
    fi
    chmod "$3" "$t" && mv -f -T -- "$t" "$2" || die "cannot install $2"
    echo "  $2"
}

# put_text DEST MODE: writes stdin over DEST atomically.
put_text() {
    local t
    tmp_for "$1"
    rm -f -- "$t" && cat >"$t" && chmod "$2" "$t" && mv -f -T -- "$t" "$1" ||
        die "cannot write $1"
    echo "  $1"
}

# put_link TARGET DEST: makes DEST a symlink to TARGET atomically.
put_link() {
    local t
    tmp_for "$2"
    rm -f -- "$t" && ln -s -- "$1" "$t" && mv -f -T -- "$t" "$2" ||
        die "cannot create the symlink $2"
    echo "  $2 -> $1"
}

echo "install.sh: installing m2c $version (ABI $abi) into $destdir$prefix"
put_lib "$rel/libm2c.so" "$libdir/$soname" 755
put_link "$soname" "$libdir/libm2c.so"
put_lib "$rel/libm2c.a" "$libdir/libm2c.a" 644
put "$header" "$includedir/m2c.h" 644
put "$ROOT/include/m2c.hpp" "$includedir/m2c.hpp" 644

syslibs_l=$(printf -- '-l%s ' "${STATIC_SYSLIBS[@]}")
syslibs_l=${syslibs_l% }
syslibs_cmake=$(IFS=';'; printf '%s' "${STATIC_SYSLIBS[*]}")

put_text "$pcdir/m2c.pc" 644 <<EOF
# pkg-config file of m2c, written by scripts/install.sh.
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include
abi_version=$abi
soname=$soname

Name: m2c
Description: $description
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lm2c
Libs.private: $syslibs_l
EOF

# With both libm2c.so and libm2c.a in one directory, `-lm2c` always picks
# the shared library, even under `pkg-config --static`. This file names the
# archive itself, with the system libraries it needs.
put_text "$pcdir/m2c-static.pc" 644 <<EOF
# pkg-config file of m2c's static library, written by scripts/install.sh.
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include
abi_version=$abi

Name: m2c-static
Description: $description (static library)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -l:libm2c.a $syslibs_l
EOF

put_text "$cmakedir/m2cConfigVersion.cmake" 644 <<EOF
# Version file of the CMake package of m2c, written by scripts/install.sh.
#
# Compatibility follows Cargo's caret rule, i.e. SameMajorVersion in which
# a leading 0 does not count: with m2c 0.y.z a request for 0.y[.w] matches
# (w <= z) but 0.x with x != y does not; 0.0.z matches only itself. A
# request for a bare major ("0" or "1") accepts any version of that major.
# A version range (min...max) accepts exactly the versions inside it.
# A library built for another pointer size is unsuitable.

set(PACKAGE_VERSION "$version")
set(_m2c_major $v_major)
set(_m2c_minor $v_minor)
set(_m2c_patch $v_patch)

set(PACKAGE_VERSION_COMPATIBLE FALSE)
set(PACKAGE_VERSION_EXACT FALSE)
if(PACKAGE_FIND_VERSION_RANGE)
  if(PACKAGE_VERSION VERSION_GREATER_EQUAL PACKAGE_FIND_VERSION_MIN
     AND ((PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "INCLUDE"
           AND PACKAGE_VERSION VERSION_LESS_EQUAL PACKAGE_FIND_VERSION_MAX)
          OR (PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "EXCLUDE"
              AND PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION_MAX)))
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
elseif("\${PACKAGE_FIND_VERSION}" STREQUAL "")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_VERSION VERSION_GREATER_EQUAL PACKAGE_FIND_VERSION)
  if(PACKAGE_FIND_VERSION_COUNT LESS 2 OR NOT PACKAGE_FIND_VERSION_MAJOR EQUAL 0)
    # "M" or M.m[.p] with M > 0: the same major.
    if(PACKAGE_FIND_VERSION_MAJOR EQUAL _m2c_major)
      set(PACKAGE_VERSION_COMPATIBLE TRUE)
    endif()
  elseif(PACKAGE_FIND_VERSION_COUNT EQUAL 2 OR NOT PACKAGE_FIND_VERSION_MINOR EQUAL 0)
    # "0.m" or 0.m.p with m > 0: the same 0.m.
    if(_m2c_major EQUAL 0 AND PACKAGE_FIND_VERSION_MINOR EQUAL _m2c_minor)
      set(PACKAGE_VERSION_COMPATIBLE TRUE)
    endif()
  else()
    # 0.0.p: only itself.
    if(_m2c_major EQUAL 0 AND _m2c_minor EQUAL 0
       AND PACKAGE_FIND_VERSION_PATCH EQUAL _m2c_patch)
      set(PACKAGE_VERSION_COMPATIBLE TRUE)
    endif()
  endif()
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
unset(_m2c_major)
unset(_m2c_minor)
unset(_m2c_patch)

# The library is built for one pointer size.
if(NOT "\${CMAKE_SIZEOF_VOID_P}" STREQUAL "" AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "$sizeof_void_p")
  math(EXPR _m2c_bits "$sizeof_void_p * 8")
  set(PACKAGE_VERSION "\${PACKAGE_VERSION} (\${_m2c_bits}bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
  unset(_m2c_bits)
endif()
EOF

put_text "$cmakedir/m2cConfig.cmake" 644 <<EOF
# CMake package of m2c $version (C ABI $abi), written by scripts/install.sh.
#
#   find_package(m2c $v_major.$v_minor CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE m2c::m2c)         # shared: $soname
#   target_link_libraries(app PRIVATE m2c::m2c_static)  # static: libm2c.a + system libs
#
# Components "shared" and "static" may be named; both are always present.
# Also sets m2c_ABI_VERSION ($abi) and m2c_SONAME ($soname).
#
# Relocatable: every path is computed from this file's own location,
# <prefix>/lib/cmake/m2c, so the installed tree may be moved as a whole.

include(CMakeFindDependencyMacro)
# Before the policy push below: find_dependency() returns from this file
# when Threads is missing.
find_dependency(Threads)

cmake_policy(PUSH)
cmake_policy(VERSION 3.16...3.31)

get_filename_component(_m2c_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(_m2c_libdir "\${_m2c_prefix}/lib")
set(_m2c_includedir "\${_m2c_prefix}/include")

set(m2c_ABI_VERSION $abi)
set(m2c_SONAME "$soname")

set(_m2c_missing "")
foreach(_m2c_file "\${_m2c_libdir}/$soname" "\${_m2c_libdir}/libm2c.a"
                  "\${_m2c_includedir}/m2c.h" "\${_m2c_includedir}/m2c.hpp")
  if(NOT EXISTS "\${_m2c_file}")
    list(APPEND _m2c_missing "\${_m2c_file}")
  endif()
endforeach()

set(_m2c_bad_components "")
foreach(_m2c_comp IN LISTS m2c_FIND_COMPONENTS)
  if(_m2c_comp STREQUAL "shared" OR _m2c_comp STREQUAL "static")
    set(m2c_\${_m2c_comp}_FOUND TRUE)
  else()
    set(m2c_\${_m2c_comp}_FOUND FALSE)
    if(m2c_FIND_REQUIRED_\${_m2c_comp})
      list(APPEND _m2c_bad_components "\${_m2c_comp}")
    endif()
  endif()
endforeach()

if(_m2c_missing)
  set(m2c_FOUND FALSE)
  string(REPLACE ";" ", " _m2c_missing "\${_m2c_missing}")
  set(m2c_NOT_FOUND_MESSAGE
      "the m2c package at \${CMAKE_CURRENT_LIST_DIR} is incomplete; missing: \${_m2c_missing}")
elseif(_m2c_bad_components)
  set(m2c_FOUND FALSE)
  set(m2c_NOT_FOUND_MESSAGE
      "unknown m2c component(s): \${_m2c_bad_components} (known: shared, static)")
else()
  if(NOT TARGET m2c::m2c)
    add_library(m2c::m2c SHARED IMPORTED)
    set_target_properties(m2c::m2c PROPERTIES
      IMPORTED_LOCATION "\${_m2c_libdir}/$soname"
      IMPORTED_SONAME "$soname"
      INTERFACE_INCLUDE_DIRECTORIES "\${_m2c_includedir}")
  endif()
  if(NOT TARGET m2c::m2c_static)
    add_library(m2c::m2c_static STATIC IMPORTED)
    # The system libraries of a Rust staticlib (--print native-static-libs).
    set_target_properties(m2c::m2c_static PROPERTIES
      IMPORTED_LOCATION "\${_m2c_libdir}/libm2c.a"
      INTERFACE_INCLUDE_DIRECTORIES "\${_m2c_includedir}"
      INTERFACE_LINK_LIBRARIES "Threads::Threads;$syslibs_cmake")
  endif()
endif()

foreach(_m2c_var _m2c_prefix _m2c_libdir _m2c_includedir _m2c_missing
                 _m2c_bad_components _m2c_comp _m2c_file)
  unset(\${_m2c_var})
endforeach()
unset(_m2c_var)
cmake_policy(POP)
EOF

echo "install.sh: done (m2c $version, $soname)"
