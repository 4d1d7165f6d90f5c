#!/usr/bin/env bash
# Tests the Go binding (bindings/go): go vet, go test -race, and the
# m2cdebug build (forced GC before every C call). Installs Go 1.23 from
# bookworm-backports when it is missing (see /work/shared/TOOLCHAIN.md) and
# runs fully offline. Assumes `cargo build --release` has already run.
# Safe to rerun. Exit status 0 only if every stage passed.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n=== %s\n' "$*"; }

# --- Go toolchain -----------------------------------------------------------
gobin=/usr/lib/go-1.23/bin
install_go() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    if ! apt-cache show golang-1.23-go >/dev/null 2>&1; then
        # Debian 12's main suite has only Go 1.19; 1.23 is in backports, on the
        # same mirror as the machine's own sources.
        echo "adding bookworm-backports to apt sources"
        cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'SRC' || return 1
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq >/dev/null 2>&1 || return 1
    fi
    apt-get install -y -qq golang-1.23-go >/dev/null || return 1
}
if [ ! -x "$gobin/go" ]; then
    log "installing Go 1.23 (apt, bookworm-backports)"
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

# --- The library and its SONAME at run time ---------------------------------
# The package links target/release/libm2c.so (#cgo LDFLAGS) and records an
# rpath to target/go-runtime, where the SONAME libm2c.so.1 must resolve.
# A CGO_LDFLAGS from the caller comes first and overrides both.
lib="$root/target/release/libm2c.so"
[ -f "$lib" ] || { echo "$lib missing: run cargo build --release first"; exit 1; }
rt="$root/target/go-runtime"
mkdir -p "$rt" && ln -sfn ../release/libm2c.so "$rt/libm2c.so.1" || exit 1
[ -e "$rt/libm2c.so.1" ] || { echo "$rt/libm2c.so.1 does not resolve"; exit 1; }

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
stage "go vet" go vet ./...
stage "go vet (m2cdebug)" go vet -tags m2cdebug ./...
stage "go test -race" go test -race -count=1 ./...
stage "go test -tags m2cdebug" go test -tags m2cdebug -count=1 ./...

log "summary"
if [ $failed -ne 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "go stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
