#!/usr/bin/env bash
# Builds and runs the fuzz targets of m2c (fuzz/, cargo-fuzz + libFuzzer,
# AddressSanitizer, debug assertions) for SECONDS each (default 30):
#
#   bash scripts/fuzz.sh [SECONDS]
#
#   snapshot_load  arbitrary bytes -> m2c_slot_load and m2c_load_file
#   api_sequence   arbitrary sequences of C API calls against a model
#   reshard        arbitrary shapes, layouts and sources -> m2c_shard_config,
#                  m2c_reshard_plan, m2c_snapshot_reshard
#
# Installs cargo-fuzz (pinned) if it is missing, runs on stable Rust with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). Each target starts from
# its committed seed corpus (fuzz/corpus/<target>/, read-only here) plus
# what earlier runs on this machine found (fuzz/work/<target>/, ignored by
# git), so reruns are safe and get better. A crash, a failed assertion, a
# leak or a timeout fails the script; the input that caused it is in
# fuzz/artifacts/<target>/ and reruns with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
# The last lines print runs and seconds per target.
set -u -o pipefail

SECONDS_PER_TARGET=${1:-30}
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(snapshot_load api_sequence reshard)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

case $SECONDS_PER_TARGET in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked || {
        echo "fuzz.sh: cannot install cargo-fuzz" >&2
        exit 2
    }
fi
cargo fuzz --version

echo "fuzz.sh: building ${TARGETS[*]} (ASan, debug assertions)"
start=$SECONDS
if ! cargo fuzz build 2>&1 | tail -n 3; then
    echo "fuzz.sh: build failed" >&2
    exit 1
fi
echo "fuzz.sh: built in $((SECONDS - start)) s"

summary=()
failed=0
for t in "${TARGETS[@]}"; do
    work=fuzz/work/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    log=fuzz/work/$t.log
    echo "=== $t: ${SECONDS_PER_TARGET} s"
    # New inputs go to the first corpus directory (the work one): the
    # committed seeds stay as they are.
    cargo fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)
    if [ $rc -ne 0 ]; then
        failed=1
        tail -n 80 "$log"
        echo "fuzz.sh: $t FAILED (exit $rc); inputs in fuzz/artifacts/$t/" >&2
        summary+=("$t: FAILED (exit $rc)")
    else
        tail -n 3 "$log"
        runs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/' <<<"$done_line")
        secs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/' <<<"$done_line")
        corpus=$(find "$work" -type f | wc -l)
        summary+=("$t: ${runs:-?} runs in ${secs:-?} s, no crash (work corpus: $corpus inputs)")
    fi
done

echo "=== fuzz summary"
printf '  %s\n' "${summary[@]}"
exit $failed
