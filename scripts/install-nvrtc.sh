#!/usr/bin/env bash
# Installs NVIDIA's run-time compiler NVRTC from its PyPI wheel (pinned, hash-checked), once, and
# prints the path of libnvrtc. No GPU, driver or CUDA toolkit is needed: CI uses it to compile
# every crates/ember-cuda/kernels/*.cu (crates/ember-cuda/tests/nvrtc_compile.rs), and a machine
# without a CUDA toolkit can use it at run time (found there by default, or EMBER_NVRTC_LIB).
#
# Destination: $1, else $EMBER_NVRTC_DIR, else ~/.cache/ember/nvrtc (pip --target). The wheel
# lays out nvidia/cuda_nvrtc/lib/{libnvrtc.so.12, libnvrtc-builtins.so.12.9}; libnvrtc finds
# its builtins beside itself. Safe to run concurrently: the folder appears whole (rename) or not
# at all.
set -euo pipefail

version=12.9.86
dest="${1:-${EMBER_NVRTC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ember/nvrtc}}"
lib="$dest/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
stamp="$dest/.ember-nvrtc-version"
if [ -f "$lib" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  echo "$lib"
  exit 0
fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "install-nvrtc: python3 (with pip) is needed to install the NVRTC wheel" >&2
  exit 1
fi

parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.nvrtc.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "install-nvrtc: installing nvidia-cuda-nvrtc-cu12==$version (PyPI wheel: ~90 MB download, ~220 MB installed)" >&2
# pip checks the wheel against these hashes (x86-64 and aarch64 Linux wheels of $version).
cat > "$work/requirements.txt" <<REQ
nvidia-cuda-nvrtc-cu12==$version \
  --hash=sha256:210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4 \
  --hash=sha256:096d4de6bda726415dfaf3198d4f5c522b8e70139c97feef5cd2ca6d4cd9cead
REQ
PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
  --require-hashes --target "$work/nvrtc" -r "$work/requirements.txt" >&2
if [ ! -f "$work/nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ]; then
  echo "install-nvrtc: the wheel has no nvidia/cuda_nvrtc/lib/libnvrtc.so.12" >&2
  exit 1
fi
echo "$version" > "$work/nvrtc/.ember-nvrtc-version"
# A stale or partial copy (another version) is replaced; a concurrent install may have won.
if [ -e "$dest" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
  rm -rf "$dest"
fi
mv -T "$work/nvrtc" "$dest" 2>/dev/null || [ -f "$lib" ]
echo "$lib"
