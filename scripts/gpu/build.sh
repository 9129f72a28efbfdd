#!/usr/bin/env bash
# Builds here what scripts/gpu/bench_gpu.sh runs on the GPU machine, which may have no Rust
# toolchain: ember-cuda's test binaries (nvrtc_compile, backend_ops, gate_watchdog), the end-to-end
# tests (cuda_e2e, cuda_zero_alloc), the CLI (ember) and the GEMM bench (gemm_bench), stripped, into target/gpu-bin/
# (~21 MB); with --with-model also an fp16 copy of all-MiniLM-L6-v2 (~45 MB) for the
# sentence-transformers baseline. Together they pass the device tool's 64 MiB carry, so the
# folder is also packed as target/gpu-bin.tar.xz (~45 MB; xz -9e, not gzip's 50 MB, so that it
# and the tracked files, 19 MB, stay under the carry's 64 MiB): carry that; bench_gpu.sh
# unpacks it. The last step adds up what a `run` call would send and fails past 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=target/gpu-bin
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p ember-cuda --example gemm_bench
cp target/release/examples/gemm_bench "$out/"
# The SBERT-base-shaped seeded model is written there, not carried (440 MB).
cargo build --release -p ember-reference-tests --example write_seeded
cp target/release/examples/write_seeded "$out/"
# The CLI (its `cuda` feature is on by default) for `ember bench --device cuda`.
cargo build --release -p ember-cli
cp target/release/ember "$out/"
# The test binaries' names carry a hash: take them from cargo's own report.
{ cargo test --release -p ember-cuda --no-run --message-format=json
  cargo test --release -p ember-reference-tests --test cuda_e2e --test cuda_zero_alloc --no-run \
    --message-format=json; } \
  | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    wanted = {"nvrtc_compile", "backend_ops", "gate_watchdog", "cuda_e2e", "cuda_zero_alloc"}
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] in wanted:
        print(msg["target"]["name"], msg["executable"])
' \
  | while read -r name path; do cp "$path" "$out/$name"; done
binaries=(nvrtc_compile backend_ops gate_watchdog cuda_e2e cuda_zero_alloc gemm_bench write_seeded ember)
for binary in "${binaries[@]}"; do
  [ -x "$out/$binary" ] || { echo "build: $out/$binary is missing" >&2; exit 1; }
done
(cd "$out" && strip "${binaries[@]}")
if [ "${1:-}" = "--with-model" ]; then
  python3 scripts/gpu/make_fp16_model.py "$(scripts/fetch-model.sh)" "$out/minilm-fp16"
fi
rm -f target/gpu-bin.tar.gz
tar -C target -cf - gpu-bin | xz -9e -T2 > target/gpu-bin.tar.xz
du -sh "$out" target/gpu-bin.tar.xz
# What travels: the tracked files, the untracked ones git does not ignore, and the pack.
travels=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } |
  xargs -0 stat -c %s 2>/dev/null | awk '{n += $1} END {print n}')
travels=$((travels + $(stat -c %s target/gpu-bin.tar.xz)))
limit=$((64 * 1024 * 1024))
echo "build: the working tree and the pack come to $((travels / 1048576)) MiB of the carry's 64 MiB"
if [ "$travels" -gt "$limit" ]; then
  echo "build: over the device tool's 64 MiB: leave the model out or shrink the pack" >&2
  exit 1
fi
