#!/usr/bin/env bash
# Tests the Go binding (bindings/go) against this repository's build
# (-tags m2c_intree): go vet, go test -race, the m2cdebug build (forced GC
# before every C call), and no RUNPATH in the binaries it makes. Uses a go >= 1.23 on PATH,
# else installs Debian's golang-1.23-go (from backports of the machine's own
# mirror when the main suite lacks it; see ../shared/TOOLCHAIN.md) and
# runs fully offline. Assumes `cargo build --release` has already run.
# Safe to rerun. Exit status 0 only if every stage passed.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n=== %s\n' "$*"; }

# --- Go toolchain -----------------------------------------------------------
# A go of 1.23 or later on PATH is used as it is; otherwise Debian's
# golang-1.23-go is installed (Debian 12 has it in its backports suite).
gobin=/usr/lib/go-1.23/bin
go_ok() {
    local v
    v=$("$1" env GOVERSION 2>/dev/null) || return 1
    v=${v#go}
    [ "${v%%.*}" -gt 1 ] 2>/dev/null && return 0
    [ "${v%%.*}" = 1 ] && v=${v#1.} && [ "${v%%.*}" -ge 23 ] 2>/dev/null
}
# The URI of the machine's own Debian mirror for suite $1 (deb822 sources
# or a one-line sources.list): an added suite uses the same mirror.
debian_uri() {
    local u
    u=$(awk -v want="$1" '/^URIs:/ { u = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) { print u; exit } }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [ -n "$u" ] || u=$(awk -v want="$1" '$1 == "deb" { l = $0; gsub(/\[[^]]*\]/, "", l); split(l, f, " "); if (f[3] == want) { print f[2]; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
    echo "$u"
}
install_go() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    if ! apt-cache show golang-1.23-go >/dev/null 2>&1; then
        local codename uri
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        uri=$(debian_uri "$codename")
        [ -n "$codename" ] && [ -n "$uri" ] || { echo "cannot find this machine's Debian mirror in its apt sources"; return 1; }
        echo "adding $codename-backports (from the machine's own mirror) to apt sources"
        cat >"/etc/apt/sources.list.d/$codename-backports.sources" <<SRC || return 1
Types: deb
URIs: $uri
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq >/dev/null 2>&1 || return 1
    fi
    apt-get install -y -qq golang-1.23-go >/dev/null || return 1
}
if command -v go >/dev/null && go_ok "$(command -v go)"; then
    gobin=$(dirname "$(command -v go)")
elif [ ! -x "$gobin/go" ]; then
    log "installing Go 1.23 (apt)"
    install_go || { echo "cannot install golang-1.23-go"; exit 1; }
fi
export PATH="$gobin:$PATH"

# --- Offline environment, caches under target/ ------------------------------
export GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOFLAGS=
export GOCACHE="$root/target/go-cache" GOPATH="$root/target/go-path"
export GOTMPDIR="$root/target/go-tmp"
export CGO_ENABLED=1
mkdir -p "$GOCACHE" "$GOPATH" "$GOTMPDIR"
go version || exit 1

# --- The library in this repository ---------------------------------------
# -tags m2c_intree links target/release/libm2c.so and include/m2c.h (the
# default build of the package uses pkg-config and an installed m2c; that
# is tested from outside the repository by scripts/test-newcomer.sh). The
# binaries record no rpath: libm2c.so.1 (the SONAME, a link cargo's build
# script leaves in target/release) is found through LD_LIBRARY_PATH.
lib="$root/target/release/libm2c.so"
[ -f "$lib" ] || { echo "$lib missing: run cargo build --release first"; exit 1; }
[ -e "$root/target/release/libm2c.so.1" ] || { echo "$root/target/release/libm2c.so.1 missing: run cargo build --release"; exit 1; }
export LD_LIBRARY_PATH="$root/target/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
rm -rf "$root/target/go-runtime" # the rpath target of earlier versions

# no_runpath: the test binary records no RUNPATH/RPATH at all (an rpath
# into a source or module tree lets whoever can write there inject a
# library) and needs libm2c.so.1 by its SONAME.
no_runpath() {
    local exe="$GOTMPDIR/m2c.test" d
    go test -c -tags m2c_intree -o "$exe" . || return 1
    d=$(readelf -d "$exe") || return 1
    if grep -E '\((RUNPATH|RPATH)\)' <<<"$d"; then
        echo "the Go test binary records a run-time search path (above)"
        return 1
    fi
    grep -F '(NEEDED)' <<<"$d" | grep -F '[libm2c.so.1]' >/dev/null ||
        { echo "the Go test binary does not need libm2c.so.1:"; grep NEEDED <<<"$d"; return 1; }
    echo "readelf: NEEDED libm2c.so.1, no RUNPATH/RPATH"
}

# --- Stages -----------------------------------------------------------------
passed=0
failed=0
failed_names=()
stage() {
    # stage NAME COMMAND...: runs one stage and records its exit code.
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

cd "$root/bindings/go" || exit 1
stage "gofmt" bash -c 'out=$(gofmt -l .); [ -z "$out" ] || { echo "not gofmt-ed: $out"; exit 1; }'
stage "go vet" go vet -tags m2c_intree ./...
stage "go vet (m2cdebug)" go vet -tags m2c_intree,m2cdebug ./...
stage "go test -race" go test -tags m2c_intree -race -count=1 ./...
stage "go test -tags m2cdebug" go test -tags m2c_intree,m2cdebug -count=1 ./...
stage "no RUNPATH in binaries" no_runpath

log "summary"
if [ $failed -ne 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "go stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
