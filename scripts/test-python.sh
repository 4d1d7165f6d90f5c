#!/usr/bin/env bash
# Tests the Python package (bindings/python) the way a user gets it:
# `pip install ./bindings/python` (pip fetches maturin into its isolated
# build environment and builds the abi3 wheel with cargo), then pytest over
# numpy and JAX (jax on the CPU), then the per-call overhead benchmark as a
# smoke run. Also holds the extension crate to rustfmt and clippy, and the
# Python sources to ruff (format and lint).
#
# Everything lives in a venv under target/py-venv (created with python3 -m
# venv, packages by name through pip, pinned); rerunning reuses it and
# installs nothing new. torch and transformers are not needed here: the
# Hugging Face parity suite is scripts/test-python-hf.sh.
# Exits non-zero if any step fails; the last line is the summary.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=$ROOT/target/py-venv
PKG=$ROOT/bindings/python
START=$(date +%s)
PINS=(numpy==2.4.6 pytest==9.2.0 jax==0.10.2 jaxlib==0.10.2 ruff==0.17.6)

summary() {
    echo "test-python.sh: $1: $2 ($(($(date +%s) - START)) s)"
}
fail() {
    summary FAILED "$1"
    exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || {
        # Debian's python3 lacks venv until python3-venv is installed.
        apt-get install -y -qq python3-venv >/dev/null 2>&1 && "$PYTHON" -m venv "$VENV"
    } || fail "cannot create a venv at $VENV"
fi
PY=$VENV/bin/python
"$PY" -m pip install -q --disable-pip-version-check "${PINS[@]}" || fail "pip install ${PINS[*]}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' || fail "the package needs CPython 3.11 or later"

echo "== rustfmt, clippy (bindings/python)"
cargo fmt --manifest-path "$PKG/Cargo.toml" --check || fail "rustfmt"
cargo clippy --manifest-path "$PKG/Cargo.toml" --release --all-targets -- -D warnings || fail "clippy"

echo "== ruff (format, lint)"
(cd "$PKG" && "$VENV/bin/ruff" format --check . && "$VENV/bin/ruff" check .) || fail "ruff"

echo "== pip install ./bindings/python"
(cd "$ROOT" && "$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python) ||
    fail "pip install ./bindings/python"
"$PY" -m pip check || fail "pip check"

echo "== pytest"
# From the tests folder, so `import m2c` is the installed wheel, not the sources.
(cd "$PKG/tests" && M2C_REQUIRE_JAX=1 "$PY" -m pytest -q -p no:cacheprovider .) || fail "pytest"

echo "== per-call overhead (smoke run)"
(cd "$PKG" && "$PY" bench/overhead.py --iters 200 --rounds 3) || fail "bench/overhead.py"

summary ok "pip install, pytest (numpy, JAX), rustfmt, clippy, ruff"
