#!/usr/bin/env bash
# The prefill -> decode handoff between two processes over UCX
# (examples/handoff/handoff.c): tp 2 -> tp 1 through m2c's shard configs,
# resharding plan, regions and digest, a damaged transfer refused, and
# decoding after the handoff bit-identical to a single-process run, for an
# f32 and a bf16 conv window.
#
# UCX comes from Debian (apt-get install libucx-dev): NIXL's wheels on the
# package index carry its C library (libnixl_capi.so) but no header, and
# need torch and CUDA libraries, so this uses UCX, which NIXL runs on. If
# apt cannot provide libucx-dev the script says so and exits 0 with SKIPPED
# in its last line; any other failure is a failure.
#
# Needs target/release/libm2c.so and include/m2c.h (cargo build --release).
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB_DIR=${M2C_LIB_DIR:-$ROOT/target/release}
OUT=$ROOT/target/handoff
START=$(date +%s)

summary() {
    echo "test-handoff.sh: $1: $2 ($(($(date +%s) - START)) s)"
}

if [ ! -f /usr/include/ucp/api/ucp.h ]; then
    echo "installing libucx-dev (apt)"
    apt-get update -qq >/dev/null 2>&1 || true
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libucx-dev >/dev/null 2>&1; then
        summary SKIPPED "apt-get could not install libucx-dev on this machine"
        exit 0
    fi
fi
for f in "$LIB_DIR/libm2c.so" "$ROOT/include/m2c.h"; do
    [ -f "$f" ] || { summary FAILED "$f is missing: run 'cargo build --release' first"; exit 2; }
done
mkdir -p "$OUT"
gcc -std=c11 -O2 -Wall -Wextra -Werror -o "$OUT/handoff" "$ROOT/examples/handoff/handoff.c" -I"$ROOT/include" \
    -L"$LIB_DIR" -lm2c -lucp -lucs || { summary FAILED "build"; exit 1; }
for dtype in f32 bf16; do
    echo "== handoff, conv $dtype"
    LD_LIBRARY_PATH="$LIB_DIR" timeout 300 "$OUT/handoff" --conv-dtype "$dtype" || { summary FAILED "handoff (conv $dtype)"; exit 1; }
done
summary ok "tp 2 -> 1 over UCX, damaged transfer refused, decode bit-identical (f32, bf16 conv)"
