#!/usr/bin/env bash
# Builds the emulated CUDA driver (crates/ember-cuda/emu/driver/: the driver API cudarc calls,
# over host memory and the kernel emulator, with every kernels/*.cu compiled for the CPU) into
# target/emulated-cuda/libcuda.so, and prints that directory, so that the unchanged Rust CUDA
# path runs on the CPU:
#   LD_LIBRARY_PATH=$(scripts/emulated-cuda.sh) EMBER_REQUIRE_CUDA=1 \
#     cargo test --release --workspace --test backend_ops
# Rebuilds only when a source is newer than the library. CXX picks the compiler (default g++);
# EMBER_EMU_CXXFLAGS adds flags (e.g. "-O1 -g").
#   scripts/emulated-cuda.sh --test
# then runs the CUDA tests on it (a few minutes on 2 cores; needs NVRTC, see
# scripts/install-nvrtc.sh, and the model, see scripts/fetch-model.sh): backend_ops (every
# kernel by name, and the kernel each GEMM family chooses), cuda_e2e, gemm_bench's dry run
# (--quick), and `ember embed --device cuda` in f32, bf16 and f16 against the CPU's f32 (cosine ≥ 0.99999 for f32, ≥ 0.999 for bf16
# and f16). The processes after the first load the kernels from the on-disk CUBIN cache
# (EMBER_KERNEL_CACHE, crates/ember-cuda/src/kernel_cache.rs) instead of compiling them again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
crate=$root/crates/ember-cuda
out=$root/target/emulated-cuda
library=$out/libcuda.so
sources=("$crate"/emu/emulation.cpp "$crate"/emu/driver/*.cpp)
mkdir -p "$out"
if [ ! -e "$library" ] || [ -n "$(find "$crate/kernels" "$crate/emu" "$0" -newer "$library" -print -quit)" ]; then
  # One g++ run (about a minute on 2 cores): the kernel files are the slow part.
  # shellcheck disable=SC2086 # EMBER_EMU_CXXFLAGS is a list of flags
  "${CXX:-g++}" -std=c++17 -O2 -fPIC -shared -fvisibility=hidden -fno-strict-aliasing \
    -DEMBER_CPU_EMULATION -Wall -Wextra -Wno-unknown-pragmas -Wno-psabi -Wl,--no-undefined \
    -I "$crate/kernels" -I "$crate/emu" ${EMBER_EMU_CXXFLAGS:-} "${sources[@]}" -o "$library.tmp" >&2
  mv "$library.tmp" "$library"
fi
if [ "${1:-}" != --test ]; then
  echo "$out"
  exit 0
fi

cd "$root"
# Every cargo call below selects the whole workspace (--workspace with a target filter), so
# that features resolve as for `cargo test --release --workspace` and, after it (as in
# .ci/run), nothing is compiled again: with -p, each package's own feature set rebuilt ~2 min
# of crates.
export LD_LIBRARY_PATH="$out${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" EMBER_REQUIRE_CUDA=1
EMBER_MINILM_DIR=${EMBER_MINILM_DIR:-$(scripts/fetch-model.sh)}
export EMBER_MINILM_DIR
cargo test --release --workspace --test backend_ops
# CUDA_VISIBLE_DEVICES="" (cuInit: no device) is NoDevice, not a bare driver error.
cargo test --release --workspace --test no_device
# A call that waits for the stream behind the timing gate is released by its watchdog (~10 s).
cargo test --release --workspace --test gate_watchdog
# The other families' choice (`gemm-auto` cases; every kernel already ran above by name).
for family in mma wgmma wgmma-tma-store; do
  EMBER_CUDA_GEMM=$family EMBER_CUDA_CASES=gemm-auto cargo test --release --workspace --test backend_ops \
    -- every_op_matches_the_cpu_reference
done
cargo test --release --workspace --test cuda_e2e
# A warm encode allocates nothing, on the host or the device (the tiny fixtures; seconds).
cargo test --release --workspace --test cuda_zero_alloc
# gemm_bench's dry run (--quick: small shapes, a few calls) with every kernel, then table.py on
# its JSON: the benchmark's paths (the gated timer, the chosen kernel, the JSON lines) before a
# GPU run depends on them. Every line must say it was gated (the emulated driver queues work
# behind the gate's wait as a GPU's stream does).
cargo build --release --workspace --example gemm_bench
rm -f "$out/gemm_quick.jsonl"
target/release/examples/gemm_bench --quick --dtype bf16 --json "$out/gemm_quick.jsonl"
python3 scripts/gpu/table.py --device emulated --ember "$out/gemm_quick.jsonl" --torch /dev/null >/dev/null
python3 -c '
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
assert len(rows) >= 24 and all(r["gated"] for r in rows), rows
assert sum(r["chosen"] for r in rows) == 8, "one chosen kernel per case"
print(f"gemm_bench --quick: {len(rows)} lines, all gated")' "$out/gemm_quick.jsonl"
# The CLI as its tests build it (`cargo build --bin ember` resolves features differently).
cargo test --release --workspace --test cli --no-run
cosine() {  # of two JSON arrays of numbers
  paste <(tr -d '[] ' <<<"$1" | tr ',' '\n') <(tr -d '[] ' <<<"$2" | tr ',' '\n') |
    awk '{ d += $1 * $2; a += $1 * $1; b += $2 * $2 } END { printf "%.8f", d / sqrt(a * b) }'
}
text="hello world"
cpu=$(target/release/ember embed --model "$EMBER_MINILM_DIR" "$text")
for dtype in f32 bf16 f16; do
  bound=0.999
  [ "$dtype" = f32 ] && bound=0.99999
  for gemm in mma wgmma wgmma-tma; do
    gpu=$(EMBER_CUDA_GEMM=$gemm target/release/ember embed --device cuda --dtype "$dtype" --model "$EMBER_MINILM_DIR" "$text")
    c=$(cosine "$cpu" "$gpu")
    echo "ember embed --device cuda --dtype $dtype (EMBER_CUDA_GEMM=$gemm) vs cpu f32: cosine $c (≥ $bound)"
    awk -v c="$c" -v b="$bound" 'BEGIN { exit !(c >= b) }'
  done
done
