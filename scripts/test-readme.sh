#!/usr/bin/env bash
# Runs, as written, every shell block of the READMEs that is introduced by a
# line ending in "the test command runs these lines as written):" (from
# the repository root, stopping at the first failing line). A README whose
# instructions drift from what works fails the test command.
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
failed=0
ran=0
for readme in README.md bindings/go/README.md bindings/zig/README.md; do
    [ -f "$readme" ] || continue
    # Print each marked block as one script, separated by NUL bytes.
    while IFS= read -r -d '' block; do
        ran=$((ran + 1))
        echo "=== $readme, block $ran:"
        printf '%s\n' "$block" | sed 's/^/    /'
        if ! bash -e -o pipefail -c "$block"; then
            echo "FAILED: $readme block $ran"
            failed=$((failed + 1))
        fi
    done < <(awk '
        /the test command runs these lines as written\):$/ { armed = 1; next }
        armed && /^```sh$/ { inside = 1; armed = 0; next }
        inside && /^```$/ { printf "%s%c", buf, 0; buf = ""; inside = 0; next }
        inside { buf = buf $0 "\n" }
    ' "$readme")
done
echo "readme blocks: $((ran - failed)) passed, $failed failed"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
