#!/usr/bin/env bash
# Follows the instructions of README.md, bindings/go/README.md and
# bindings/zig/README.md literally, the way a newcomer would, in throwaway
# projects outside this repository. Blocks are chosen by the line just
# before them, which ends in one of:
#
#   (the test command runs these lines as written):
#       a ```sh block, run from the repository root;
#   (the test command runs these lines in a new, empty directory):
#       a ```sh block, run in a new directory outside the repository (a new
#       project: later blocks of the same README use it too);
#   (the test command runs these lines there):
#       a ```sh block, run in the current project's directory;
#   `NAME` (the test command writes it there as shown):
#       a block of any language, written to NAME in the project directory.
#
# The blocks see two variables that the READMEs define for their readers:
# M2C_SRC, the m2c clone (this repository), and PREFIX, where m2c gets
# installed (a new directory outside the repository; README.md's install
# block fills it before the consumers use it). Blocks run in the READMEs'
# order under bash -e -o pipefail; a failing block fails the test.
#
# After each project, no executable in it may carry a RUNPATH or RPATH
# into the repository (readelf): whoever can write to a source tree could
# plant a library there.
#
# Needs the toolchains the test command installs before it (Go >= 1.23 on
# PATH or in /usr/lib/go-1.23/bin, Zig 0.15.2 as `python3 -m ziglang`,
# cmake, pkg-config); Go and Zig run offline, their caches under target/.
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/m2c-readme.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
export M2C_SRC=$ROOT
export PREFIX=$WORK/prefix

# Tools as a newcomer has them: `go` and `zig` on PATH.
mkdir -p "$WORK/bin"
if ! command -v go >/dev/null && [ -x /usr/lib/go-1.23/bin/go ]; then
    export PATH="/usr/lib/go-1.23/bin:$PATH"
fi
printf '#!/bin/sh\nexec %s -m ziglang "$@"\n' "${PYTHON:-python3}" >"$WORK/bin/zig"
chmod +x "$WORK/bin/zig"
export PATH="$WORK/bin:$PATH"
# Offline. Go gets a build cache of its own: its cache keys do not cover
# what pkg-config says, so a cache from a run with another PREFIX would
# link against that one. Zig's global cache is shared with test-zig.sh.
export GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOFLAGS=
export GOCACHE="$WORK/go-cache" GOPATH="$WORK/go-path"
export ZIG_GLOBAL_CACHE_DIR="$ROOT/target/zig-global-cache"
mkdir -p "$GOCACHE" "$ZIG_GLOBAL_CACHE_DIR"

failed=0
ran=0
projects=0
project=

# check_runpaths DIR: no ELF file under DIR records a run-time search path
# into the repository.
check_runpaths() {
    local f rp bad=0
    while IFS= read -r -d '' f; do
        readelf -h "$f" >/dev/null 2>&1 || continue
        rp=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\].*/\2/p')
        [ -n "$rp" ] || continue
        case ":$rp:" in
            *":$ROOT"*)
                echo "FAILED: $f has RUNPATH $rp, into the repository"
                bad=1
                ;;
        esac
    done < <(find "$1" -type f -perm -u+x -print0)
    return $bad
}

finish_project() {
    [ -n "$project" ] || return 0
    if ! check_runpaths "$project"; then
        failed=$((failed + 1))
    fi
    project=
}

for readme in README.md bindings/go/README.md bindings/zig/README.md; do
    [ -f "$readme" ] || continue
    finish_project
    # Each marked block as KIND<TAB>NAME<NEWLINE>TEXT, NUL-terminated.
    while IFS= read -r -d '' record; do
        header=${record%%$'\n'*}
        block=${record#*$'\n'}
        kind=${header%%$'\t'*}
        name=${header#*$'\t'}
        ran=$((ran + 1))
        case $kind in
            root) dir=$ROOT ;;
            new)
                finish_project
                projects=$((projects + 1))
                project=$WORK/project-$projects
                mkdir -p "$project"
                dir=$project
                ;;
            there | file)
                if [ -z "$project" ]; then
                    echo "FAILED: $readme block $ran continues a project, but none was started"
                    failed=$((failed + 1))
                    continue
                fi
                dir=$project
                ;;
        esac
        if [ "$kind" = file ]; then
            echo "=== $readme, block $ran: writes $name in $dir"
            mkdir -p "$(dirname "$dir/$name")" && printf '%s' "$block" >"$dir/$name" ||
                { echo "FAILED: cannot write $dir/$name"; failed=$((failed + 1)); }
            continue
        fi
        echo "=== $readme, block $ran, in $dir:"
        printf '%s' "$block" | sed 's/^/    /'
        if ! (cd "$dir" && bash -e -o pipefail -c "$block"); then
            echo "FAILED: $readme block $ran"
            failed=$((failed + 1))
        fi
    done < <(awk '
        # para: the current paragraph, its lines joined by single spaces.
        function marker(p) {
            if (p ~ /the test command runs these lines as written\):$/) return "root"
            if (p ~ /the test command runs these lines in a new, empty directory\):$/) return "new"
            if (p ~ /the test command runs these lines there\):$/) return "there"
            if (p ~ /\(the test command writes it there as shown\):$/) return "file"
            return ""
        }
        inside && /^```$/ { printf "%s\t%s\n%s%c", bkind, name, buf, 0; inside = 0; next }
        inside { buf = buf $0 "\n"; next }
        /^```/ {
            if (kind != "" && (kind == "file" || $0 == "```sh")) { inside = 1; buf = ""; bkind = kind } else { skip = !skip }
            kind = ""; para = ""; next
        }
        skip { next }
        /^[ \t]*$/ { para = ""; next }
        {
            line = $0; gsub(/^[ \t]+|[ \t]+$/, "", line)
            para = (para == "" ? line : para " " line)
            k = marker(para)
            if (k != "") {
                kind = k; name = ""
                if (k == "file") { name = para; sub(/`[^`]*$/, "", name); sub(/^.*`/, "", name) }
            }
        }
    ' "$readme")
done
finish_project
echo "readme blocks: $((ran - failed)) passed, $failed failed ($projects projects outside the repository)"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
