#!/usr/bin/env bash
# Run every test: installs sqld unless $SQLD_BIN is set and the embedding model unless
# $MEMORY_MODEL_DIR holds it (so the sqld-backed and embedder tests run instead of skipping),
# then the whole workspace's tests with nextest, then the doctests (nextest does not run
# doctests).
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

# A $MEMORY_MODEL_DIR holding the model files (e.g. exported by .ci/run) is used as is;
# otherwise install all-MiniLM-L6-v2, so the embedder tests run instead of skipping.
if [[ -z "${MEMORY_MODEL_DIR:-}" || ! -s "$MEMORY_MODEL_DIR/model.safetensors" \
    || ! -s "$MEMORY_MODEL_DIR/tokenizer.json" || ! -s "$MEMORY_MODEL_DIR/config.json" ]]; then
    echo "==> installing the embedding model"
    MEMORY_MODEL_DIR="$(bash scripts/install-model.sh | tail -n 1)"
fi
export MEMORY_MODEL_DIR
echo "==> MEMORY_MODEL_DIR=$MEMORY_MODEL_DIR"

echo "==> cargo nextest run --workspace --all-features --no-fail-fast"
cargo nextest run --workspace --all-features --no-fail-fast "$@"

echo "==> cargo test --workspace --doc --all-features"
cargo test --workspace --doc --all-features
