#!/usr/bin/env bash
# On the GPU machine (the device tool), from the repository root, after scripts/gpu/build.sh here:
#   1. every kernel compiles with the machine's NVRTC (nvrtc_compile, EMBER_REQUIRE_NVRTC=1);
#   2. every CUDA op matches the CPU reference (backend_ops, EMBER_REQUIRE_CUDA=1);
#   3. Ember's GEMM vs cuBLAS (torch.matmul) on BERT-base shapes, bf16 (gemm_bench, torch_gemm.py);
#   4. sentence-transformers fp16 end to end, if build.sh --with-model carried a model;
#      4a. Ember on cuda end to end against sentence-transformers' embeddings (cuda_e2e);
#      4b. `ember bench --device cuda --dtype f16` on the same corpus, with the mma.sync GEMMs
#          (ember.json) and with Hopper's wgmma ones (EMBER_CUDA_GEMM=wgmma, ember_wgmma.json),
#          then cuda_e2e again on the wgmma GEMMs;
# then one table, gpu_bench.md. Writes run.log, ember_gemm.jsonl, torch_gemm.jsonl, st.json and
# gpu_bench.md under $OUT (else /tmp/ember-gpu). Exit status: non-zero if a step failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

out=${OUT:-/tmp/ember-gpu}
mkdir -p "$out"
bin=$PWD/target/gpu-bin
log=$out/run.log
: > "$log"
# build.sh's pack (the folder itself is over the device tool's carry limit with the model).
if [ ! -d "$bin" ] && [ -f target/gpu-bin.tar.gz ]; then
  tar -C target -xzf target/gpu-bin.tar.gz
fi
if [ ! -x "$bin/gemm_bench" ]; then
  echo "bench_gpu: $bin/gemm_bench is missing: run scripts/gpu/build.sh on the build machine and carry target/gpu-bin.tar.gz" | tee -a "$log"
  exit 1
fi
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)
echo "device: $device" | tee -a "$log"

# NVRTC: $EMBER_NVRTC_LIB, else the CUDA toolkit's, else the PyPI wheel PyTorch brought
# (nvidia/cu13/lib or nvidia/cuda_nvrtc/lib in site-packages).
if [ -z "${EMBER_NVRTC_LIB:-}" ]; then
  site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
  for candidate in /usr/local/cuda/lib64/libnvrtc.so.13 /usr/local/cuda/lib64/libnvrtc.so.12 \
      /usr/local/cuda/lib64/libnvrtc.so "$site"/nvidia/cu13/lib/libnvrtc.so.13 \
      "$site"/nvidia/cuda_nvrtc/lib/libnvrtc.so.13 "$site"/nvidia/cuda_nvrtc/lib/libnvrtc.so.12; do
    if [ -f "$candidate" ]; then
      export EMBER_NVRTC_LIB=$candidate
      break
    fi
  done
fi
echo "NVRTC: ${EMBER_NVRTC_LIB:-not found in the usual places; trying the dynamic linker}" | tee -a "$log"

status=0
step() {
  echo "== $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== FAILED ($rc): $*" | tee -a "$log"; status=1; }
}
# The test binaries read kernels/ relative to the crate (every_cu_file_is_embedded).
cd crates/ember-cuda
step env EMBER_REQUIRE_NVRTC=1 "$bin/nvrtc_compile" --nocapture --test-threads 1
step env EMBER_REQUIRE_CUDA=1 "$bin/backend_ops" --nocapture --test-threads 1
cd ../..
step "$bin/gemm_bench" --dtype bf16 --json "$out/ember_gemm.jsonl"
step python3 scripts/gpu/torch_gemm.py --dtype bf16 --json "$out/torch_gemm.jsonl"
st_args=()
if [ -d "$bin/minilm-fp16" ]; then
  step python3 scripts/gpu/st_bench.py --model "$bin/minilm-fp16" --json "$out/st.json"
  st_args=(--st "$out/st.json" --ember-e2e "$out/ember.json")
  step env EMBER_REQUIRE_CUDA=1 EMBER_MINILM_DIR="$bin/minilm-fp16" EMBER_FIXTURES_DIR="$PWD/tests/fixtures" \
    "$bin/cuda_e2e" --nocapture --test-threads 1
  st_args+=(--ember-e2e-wgmma "$out/ember_wgmma.json")
  for gemm in mma wgmma; do
    json=$out/ember.json
    [ "$gemm" = mma ] || json=$out/ember_$gemm.json
    echo "== EMBER_CUDA_GEMM=$gemm $bin/ember bench --device cuda --dtype f16" | tee -a "$log"
    if EMBER_CUDA_GEMM=$gemm "$bin/ember" bench --model "$bin/minilm-fp16" --device cuda --dtype f16 \
        --input benches/corpus/wordnet-examples.txt --batch-size 128 --latency-texts 200 --json \
        > "$json" 2> >(tee -a "$log" >&2); then
      cat "$json" >> "$log"
    else
      echo "== FAILED: EMBER_CUDA_GEMM=$gemm ember bench --device cuda" | tee -a "$log"
      status=1
    fi
  done
  # The wgmma kernels end to end against sentence-transformers too.
  step env EMBER_CUDA_GEMM=wgmma EMBER_REQUIRE_CUDA=1 EMBER_MINILM_DIR="$bin/minilm-fp16" \
    EMBER_FIXTURES_DIR="$PWD/tests/fixtures" "$bin/cuda_e2e" --nocapture --test-threads 1
fi
step python3 scripts/gpu/table.py --device "$device" --ember "$out/ember_gemm.jsonl" \
  --torch "$out/torch_gemm.jsonl" "${st_args[@]}" --out "$out/gpu_bench.md"
exit $status
