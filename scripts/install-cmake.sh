#!/usr/bin/env bash
# Install CMake (PyPI package `cmake`, pinned) into a virtual environment at
# <repo>/.tools/cmake, for builds with the `encryption` feature: libsql's encryption builds
# SQLite3 Multiple Ciphers with CMake. Idempotent: does nothing but verify when already
# installed. Prints the directory holding the `cmake` binary as its last line of stdout
# (put it on PATH); everything else goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="4.4.5"
VENV="$ROOT/.tools/cmake"
BIN="$VENV/bin"

installed() {
    [[ -x "$BIN/cmake" ]] && "$BIN/cmake" --version 2>/dev/null | head -n 1 | grep -q "version $VERSION"
}

if installed; then
    echo "cmake $VERSION already installed in $VENV" >&2
else
    PYTHON=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            PYTHON="$candidate"
            break
        fi
    done
    if [[ -z "$PYTHON" ]]; then
        echo "error: python3 (with pip and venv) is needed to install cmake for the encryption feature" >&2
        exit 1
    fi
    echo "installing cmake $VERSION into $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "cmake==$VERSION" >&2
    installed || { echo "error: cmake $VERSION did not install into $VENV" >&2; exit 1; }
fi
echo "$BIN"
