#!/usr/bin/env bash
# Install a headless Chromium and its driver for the web view's browser test into
# <repo>/.tools/browser, from the npm registry: @sparticuz/chromium (a Chromium build that runs
# without root and without system libraries, unpacked to /tmp at first launch) and
# puppeteer-core (which drives it; it downloads no browser of its own). Idempotent.
# Prints the install directory as its last line of output.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.tools/browser"
CHROMIUM="@sparticuz/chromium@153.0.0"
DRIVER="puppeteer-core@25.16.0"

installed() {
    [[ -f "$PREFIX/node_modules/@sparticuz/chromium/package.json" \
        && -f "$PREFIX/node_modules/puppeteer-core/package.json" ]]
}

if installed; then
    echo "the browser is already installed in $PREFIX" >&2
else
    echo "installing $CHROMIUM and $DRIVER into $PREFIX" >&2
    mkdir -p "$PREFIX"
    # Both ask for a newer Node.js than 20 in their manifests, and both work on 20: the
    # engine warnings are expected. No install scripts run (nothing is downloaded later).
    npm install --ignore-scripts --no-audit --no-fund --prefix "$PREFIX" "$CHROMIUM" "$DRIVER" >&2
    if ! installed; then
        echo "error: npm did not install $CHROMIUM and $DRIVER into $PREFIX" >&2
        exit 1
    fi
fi

echo "$PREFIX"
