#!/usr/bin/env bash
# Install the official MCP Python SDK client (PyPI package `mcp`, pinned) into a virtual
# environment at <repo>/.tools/mcp-client, for the protocol tests that drive `memory mcp` and
# `memory serve` with it. Idempotent: does nothing but verify when already installed.
# Prints the environment's python as its last line of stdout; everything else goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="2.3.0"
VENV="$ROOT/.tools/mcp-client"
PY="$VENV/bin/python"

installed() {
    [[ -x "$PY" ]] && "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$VERSION')" 2>/dev/null
}

if installed; then
    echo "mcp $VERSION already installed in $VENV" >&2
else
    PYTHON=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            PYTHON="$candidate"
            break
        fi
    done
    if [[ -z "$PYTHON" ]]; then
        echo "error: python3 (with pip and venv) is needed for the MCP client tests" >&2
        exit 1
    fi
    echo "installing mcp $VERSION into $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check "mcp==$VERSION" >&2
    installed || { echo "error: mcp $VERSION did not install into $VENV" >&2; exit 1; }
fi
echo "$PY"
