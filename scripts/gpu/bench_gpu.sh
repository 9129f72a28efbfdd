#!/usr/bin/env bash
# On the GPU machine (the device tool), from the repository root, after scripts/gpu/build.sh here
# (carry target/gpu-bin.tar.xz, which this unpacks):
#   1. every kernel compiles with the machine's NVRTC (nvrtc_compile, EMBER_REQUIRE_NVRTC=1);
#   2. every CUDA op but the wgmma GEMMs matches the CPU reference (backend_ops,
#      EMBER_REQUIRE_CUDA=1, EMBER_CUDA_CASES=-wgmma);
#   3. Ember's mma.sync GEMMs vs cuBLAS (torch.matmul) on BERT-base shapes, bf16 (gemm_bench,
#      torch_gemm.py);
#   4. if build.sh --with-model carried a model: sentence-transformers fp16 end to end
#      (st_bench.py) on $bin/corpus10.txt (benches/corpus/wordnet-examples.txt ten times, 12,440
#      texts, built at the start), then for each GEMM family, Ember on cuda against
#      sentence-transformers' embeddings (cuda_e2e) and `ember bench --device cuda --dtype f16` on
#      the same corpus (one JSON line per family in ember_e2e.jsonl, with "gemm": FAMILY first):
#      `default` (EMBER_CUDA_GEMM unset: the engine's own choice) and `mma`;
#   5. on Hopper, the same for the wgmma GEMMs (kernels/gemm_sm90.cu): backend_ops' wgmma cases,
#      gemm_bench's Wgmma kernels, then cuda_e2e and ember bench with EMBER_CUDA_GEMM=wgmma,
#      wgmma-tma and wgmma-tma-occ2 (appending to ember_e2e.jsonl); late, since a kernel that
#      hangs takes its step's time limit; the ping-pong kernels and the TMA-stored one (session
#      16, new to the GPU) in backend_ops and gemm_bench steps of their own; then (with the
#      model) a warm encode allocates nothing on the host or the device (cuda_zero_alloc), and
#      where MiniLM's end-to-end time goes, op by op (EMBER_CUDA_PROFILE=1, ember bench);
#   6. every GEMM kernel and cuBLAS again in f16;
#   7. on Hopper the new families end to end, wgmma-tma-store (EMBER_GPU_NEW_FAMILIES; session
#      16 ran `ember bench` alone with the ping-pong ones, which have not met cuda_e2e yet), after
#      the GEMM tables so that a hang there cannot cost them their f16 rows; then with
#      EMBER_GPU_NCU=1 Nsight Compute (below), then SBERT-base's shape end to end;
# then one table, gpu_bench.md. `bench_gpu.sh --gemm-only` runs steps 2, 3, 5 and 6 without the
# NVRTC check and the end-to-end runs. Every step runs under its own time limit, so that one that hangs
# costs its limit and not the rest, and all of them under one budget, EMBER_GPU_BUDGET_S seconds
# from the start (default 470, for a `run` call's timeout_s=540): a step gets at most what is
# left of it less 25 s kept for the table, and is skipped (and counted as failed) when under 20 s
# is left, so the table and the logs always come back. A family whose ember bench failed or was
# skipped gets a line {"gemm": FAMILY, "error": "failed"|"skipped"} (a "not measured" row).
# Writes 6 files under $OUT (else /tmp/ember-gpu): run.log, ember_gemm.jsonl, torch_gemm.jsonl,
# st.json, ember_e2e.jsonl and gpu_bench.md, and a 7th, ncu.csv, with EMBER_GPU_NCU=1 (below). Exit status: non-zero if a step failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

out=${OUT:-/tmp/ember-gpu}
mkdir -p "$out"
bin=$PWD/target/gpu-bin
log=$out/run.log
: > "$log"
# The JSON lines files are appended to (bf16, then f16; each family's kernels): start empty.
rm -f "$out"/*.jsonl "$out"/*.json
# build.sh's pack (the folder itself is over the device tool's carry limit with the model),
# unpacked afresh each time: the device machine keeps ignored outputs between calls, and a
# rerun after a rebuild must not find the last call's binaries.
if [ -f target/gpu-bin.tar.xz ]; then
  rm -rf "$bin"
  if command -v xz >/dev/null 2>&1; then
    tar -C target -xJf target/gpu-bin.tar.xz
  else  # Python's lzma, where the image has no xz.
    python3 -c 'import tarfile; tarfile.open("target/gpu-bin.tar.xz").extractall("target")'
  fi
fi
if [ ! -x "$bin/gemm_bench" ]; then
  echo "bench_gpu: $bin/gemm_bench is missing: run scripts/gpu/build.sh on the build machine and carry target/gpu-bin.tar.xz" | tee -a "$log"
  exit 1
fi
# The end-to-end corpus: the 1,244 texts ten times over (12,440; one pass over the 1,244 took
# Ember ~17 ms on an H200, too short to time).
corpus=$bin/corpus10.txt
for _ in 1 2 3 4 5 6 7 8 9 10; do cat benches/corpus/wordnet-examples.txt; done > "$corpus"
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -n 1)
echo "device: $device" | tee -a "$log"
hopper=0
case "$device" in *", 9.0"*) hopper=1 ;; esac

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

# The cuBLAS PyTorch loads (read from the maps of a process that has just run a half-precision
# matmul), for gemm_bench's in-process pairs (--cublas): Ember's kernels and cuBLAS's in one
# gated sequence. Without it gemm_bench times Ember alone (torch_gemm.py is still the table's
# cuBLAS column).
cublas_lib=$(timeout 60 python3 -c '
import torch
a = torch.ones(64, 64, device="cuda", dtype=torch.float16)
torch.cuda.synchronize(); (a @ a).sum().item()
print(next(line.split()[-1] for line in open("/proc/self/maps") if "/libcublas.so" in line))' 2>>"$log")
# gemm_bench's arguments common to every step (below, also --quick).
bench_args=()
[ -n "$cublas_lib" ] && [ -f "$cublas_lib" ] && bench_args=(--cublas "$cublas_lib")
# EMBER_GPU_GEMM_QUICK=1: gemm_bench --quick (a dry run of this script on the emulated driver).
[ "${EMBER_GPU_GEMM_QUICK:-0}" = 1 ] && bench_args+=(--quick)
echo "cuBLAS for gemm_bench: ${cublas_lib:-not found}" | tee -a "$log"

export PYTHONUNBUFFERED=1
status=0
budget=${EMBER_GPU_BUDGET_S:-470}
# fit SECONDS: prints SECONDS, or less if the budget has less left (less 25 s kept for the
# table); fails, logging the skip, when under 20 s would be left.
fit() {
  local left=$((budget - SECONDS - 25))
  if [ "$left" -lt 20 ]; then
    echo "== SKIPPED (out of the ${budget} s budget at ${SECONDS} s): ${*:2}" >> "$log"
    return 1
  fi
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}
# step SECONDS COMMAND…: runs COMMAND under a time limit, its output into the log.
step() {
  local limit
  limit=$(fit "$@") || { tail -n 1 "$log"; status=1; return; }
  shift
  echo "== $* (limit ${limit} s, at ${SECONDS} s)" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "== TIMED OUT after ${limit} s" | tee -a "$log"
  [ "$rc" -eq 0 ] || { echo "== FAILED ($rc): $*" | tee -a "$log"; status=1; }
}
# gemm_env FAMILY: the env(1) arguments that select FAMILY: EMBER_CUDA_GEMM=FAMILY, or for
# `default` EMBER_CUDA_GEMM unset (the engine's own choice).
gemm_env() {
  if [ "$1" = default ]; then echo "-u EMBER_CUDA_GEMM"; else echo "EMBER_CUDA_GEMM=$1"; fi
}
# e2e_error FAMILY WHY [MODEL]: {"gemm": FAMILY, "error": WHY, "model": MODEL} into
# ember_e2e.jsonl (a "not measured" row) and the log, and the run fails.
e2e_error() {
  printf '{"gemm":"%s","error":"%s","model":"%s"}\n' "$1" "$2" "${3:-$bin/minilm-fp16}" | tee -a "$log" >> "$e2e_json"
  status=1
}
# e2e_line FAMILY JSON: `ember bench --json`'s one line, with "gemm": FAMILY first, into
# ember_e2e.jsonl and the log; output that is not one JSON object is an error line instead.
e2e_line() {
  local row
  if row=$(python3 -c 'import json, sys
row = json.loads(sys.argv[2])
assert isinstance(row, dict)
print(json.dumps({"gemm": sys.argv[1], **row}, separators=(",", ":")))' "$1" "$2" 2>/dev/null); then
    echo "$row" | tee -a "$log" >> "$e2e_json"
  else
    e2e_error "$1" "ember bench printed no JSON object" "${3:-}"
  fi
}
# ember_bench GEMM [MODEL]: `ember bench --device cuda --dtype f16` on the corpus with the GEMM
# family GEMM (gemm_env) and the model folder MODEL (default the carried MiniLM), its JSON line
# into ember_e2e.jsonl.
ember_bench() {
  local gemm=$1 model_dir=${2:-$bin/minilm-fp16} limit line
  limit=$(fit 90 ember bench "$gemm") || { tail -n 1 "$log"; e2e_error "$gemm" skipped "$model_dir"; return; }
  echo "== env $(gemm_env "$gemm") $bin/ember bench --device cuda --dtype f16 (limit ${limit} s, at ${SECONDS} s)" | tee -a "$log"
  # shellcheck disable=SC2046 # gemm_env's words, split on purpose
  if line=$(env $(gemm_env "$gemm") timeout --kill-after=10 "$limit" "$bin/ember" bench \
      --model "$model_dir" --device cuda --dtype f16 --input "$corpus" --batch-size 128 \
      --latency-texts 200 --repeats 10 --json 2> >(tee -a "$log" >&2)); then
    e2e_line "$gemm" "$line" "$model_dir"
  else
    echo "== FAILED: env $(gemm_env "$gemm") ember bench --device cuda" | tee -a "$log"
    e2e_error "$gemm" failed "$model_dir"
  fi
}
# end_to_end FAMILY…: for each GEMM family, cuda_e2e (against sentence-transformers), then
# ember bench.
end_to_end() {
  local gemm
  for gemm in "$@"; do
    # shellcheck disable=SC2046
    step 120 env $(gemm_env "$gemm") EMBER_REQUIRE_CUDA=1 EMBER_MINILM_DIR="$bin/minilm-fp16" \
      EMBER_FIXTURES_DIR="$PWD/tests/fixtures" "$bin/cuda_e2e" --nocapture --test-threads 1
    ember_bench "$gemm"
  done
}
e2e_json=$out/ember_e2e.jsonl
model=0
[ -d "$bin/minilm-fp16" ] && model=1
# --gemm-only (a shorter device call while tuning the GEMMs): steps 2, 3, 5's backend_ops and
# gemm_bench, and 6; no NVRTC check, no end-to-end runs.
gemm_only=0
[ "${1:-}" = --gemm-only ] && { gemm_only=1; model=0; }

# The test binaries read kernels/ relative to the crate (every_cu_file_is_embedded): env -C.
crate=crates/ember-cuda
# EMBER_GPU_NVRTC=0 skips the NVRTC check (backend_ops compiles every kernel it runs anyway).
[ "$gemm_only" = 1 ] || [ "${EMBER_GPU_NVRTC:-1}" = 0 ] ||
  step 90 env -C "$crate" EMBER_REQUIRE_NVRTC=1 "$bin/nvrtc_compile" --nocapture --test-threads 1
step 150 env -C "$crate" EMBER_REQUIRE_CUDA=1 EMBER_CUDA_CASES=-wgmma "$bin/backend_ops" \
  --nocapture --test-threads 1
# The timing gate's watchdog (3 s on a GPU; its own process: it turns the gate off).
step 45 env -C "$crate" EMBER_REQUIRE_CUDA=1 "$bin/gate_watchdog" --nocapture --test-threads 1
# gemm_bench marks the kernel the default family chooses: EMBER_CUDA_GEMM unset for it.
step 90 env -u EMBER_CUDA_GEMM "$bin/gemm_bench" --dtype bf16 --kernels Mma,Simt --json "$out/ember_gemm.jsonl" "${bench_args[@]}"
step 90 python3 scripts/gpu/torch_gemm.py --dtype bf16 --json "$out/torch_gemm.jsonl"
st_args=()
if [ "$model" = 1 ]; then
  step 120 python3 scripts/gpu/st_bench.py --model "$bin/minilm-fp16" --corpus "$corpus" \
    --json "$out/st.json"
  st_args=(--st "$out/st.json" --ember-e2e "$e2e_json")
  # On Hopper the default family is wgmma-tma: it runs in the Hopper block, after the wgmma
  # kernels' own checks.
  # shellcheck disable=SC2046
  end_to_end mma $([ "$hopper" = 1 ] || echo default)
fi
if [ "$hopper" = 1 ]; then
  # The ping-pong kernels (session 12) and the TMA-stored one (session 16, first run on a GPU)
  # in steps of their own, after the others: a hang there costs its own step's limit only.
  step 90 env -C "$crate" EMBER_REQUIRE_CUDA=1 EMBER_CUDA_CASES=wgmma,-pingpong,-tmastore "$bin/backend_ops" \
    --nocapture --test-threads 1 every_op_matches_the_cpu_reference
  step 60 env -C "$crate" EMBER_REQUIRE_CUDA=1 EMBER_CUDA_CASES=pingpong,tmastore "$bin/backend_ops" \
    --nocapture --test-threads 1 every_op_matches_the_cpu_reference
  step 60 env -u EMBER_CUDA_GEMM "$bin/gemm_bench" --dtype bf16 --kernels Wgmma,-WgmmaPingpong,-WgmmaTmaStore \
    --json "$out/ember_gemm.jsonl" "${bench_args[@]}"
  step 40 env -u EMBER_CUDA_GEMM "$bin/gemm_bench" --dtype bf16 --kernels WgmmaPingpong,WgmmaTmaStore \
    --json "$out/ember_gemm.jsonl" "${bench_args[@]}"
  if [ "$model" = 1 ]; then
    # EMBER_GPU_FAMILIES: the other proven Hopper families to run end to end.
    # shellcheck disable=SC2086
    end_to_end default ${EMBER_GPU_FAMILIES-wgmma wgmma-tma wgmma-tma-occ2}
  fi
fi
# A warm encode allocates nothing, on the host or the device (tests/tests/cuda_zero_alloc.rs):
# the default family, the tiny fixtures and MiniLM, f32 and f16 (seconds).
if [ "$model" = 1 ]; then
  step 60 env -u EMBER_CUDA_GEMM EMBER_REQUIRE_CUDA=1 EMBER_MINILM_DIR="$bin/minilm-fp16" \
    EMBER_FIXTURES_DIR="$PWD/tests/fixtures" "$bin/cuda_zero_alloc"
fi
# Where the end-to-end time goes (EMBER_CUDA_PROFILE=1, crates/ember-cuda/src/profile.rs): per
# op, its GPU time and the host's time queueing it, forwards of one text and batches of 128
# apart; MiniLM, the default family, 2 passes and 100 single texts, f16 and the f32 model
# `ember bench` compares it with (the tables come on stderr as each model is dropped).
if [ "$model" = 1 ]; then
  step 45 env -u EMBER_CUDA_GEMM EMBER_CUDA_PROFILE=1 "$bin/ember" bench --model "$bin/minilm-fp16" \
    --device cuda --dtype f16 --input "$corpus" --batch-size 128 --latency-texts 100 --repeats 2
fi
# With what the budget has left: the same GEMMs in f16 (the dtype of the end-to-end runs).
step 60 env -u EMBER_CUDA_GEMM "$bin/gemm_bench" --dtype f16 --kernels -WgmmaPingpong,-WgmmaTmaStore \
  --json "$out/ember_gemm.jsonl" "${bench_args[@]}"
if [ "$hopper" = 1 ]; then
  step 40 env -u EMBER_CUDA_GEMM "$bin/gemm_bench" --dtype f16 --kernels WgmmaPingpong,WgmmaTmaStore \
    --json "$out/ember_gemm.jsonl" "${bench_args[@]}"
fi
step 60 python3 scripts/gpu/torch_gemm.py --dtype f16 --json "$out/torch_gemm.jsonl"
# The families of kernels new to the GPU end to end (EMBER_GPU_NEW_FAMILIES), after the GEMM
# tables, so that a hang there cannot cost them their f16 rows; before Nsight Compute and
# SBERT-base, which the budget may cut.
if [ "$hopper" = 1 ] && [ "$model" = 1 ]; then
  # shellcheck disable=SC2086
  end_to_end ${EMBER_GPU_NEW_FAMILIES-wgmma-tma-store}
fi
# EMBER_GPU_NCU=1 (Hopper): Nsight Compute on FFN up at T = 4800 in f16, each TMA and ping-pong
# kernel and cuBLAS once (gemm_bench --profile), before the end-to-end runs that come after
# the GEMM tables (session 16's budget skipped it when it came last): speed of light, tensor pipes, occupancy
# and warp stalls per kernel (ncu_summary.py; the raw CSV as ncu.csv). --clock-control none:
# the card's clocks are left alone (METHOD.md).
if [ "$hopper" = 1 ] && [ "${EMBER_GPU_NCU:-0}" = 1 ]; then
  # ncu on PATH, else the newest Nsight Compute installed.
  ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$ncu_bin" ]; then
    step 150 "$ncu_bin" --clock-control none --target-processes all --csv --page raw --log-file "$out/ncu.csv" \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section LaunchStats --section Occupancy \
      env -u EMBER_CUDA_GEMM "$bin/gemm_bench" --profile --only 4800x3072x768 --dtype f16 \
      --kernels WgmmaTma,WgmmaPingpong "${bench_args[@]}"
    [ -f "$out/ncu.csv" ] && timeout 20 python3 scripts/gpu/ncu_summary.py "$out/ncu.csv" 2>&1 | tee -a "$log"
  else
    echo "== EMBER_GPU_NCU=1: no ncu found" | tee -a "$log"
  fi
fi
# The issue's first reference shape end to end: SBERT-base-nli-v2's (768, 12 layers, FFN 3072,
# max_seq_length 75, mean pooling) with seeded weights, written here (write_seeded, ~1 s; 440 MB
# is past the carry), sentence-transformers fp16 and Ember's default family on the same corpus,
# appended to st.json and ember_e2e.jsonl (their "model" names the folder). EMBER_GPU_BASE=0
# leaves it out.
if [ "$model" = 1 ] && [ "${EMBER_GPU_BASE:-1}" = 1 ]; then
  base=/tmp/sbert-base-seeded
  rm -rf "$base"
  step 30 "$bin/write_seeded" "$base" "$bin/minilm-fp16"
  if [ -f "$base/model.safetensors" ]; then
    step 150 python3 scripts/gpu/st_bench.py --model "$base" --corpus "$corpus" --json "$out/st.json"
    ember_bench default "$base"
  fi
fi
echo "== table at ${SECONDS} s" | tee -a "$log"
timeout 20 python3 scripts/gpu/table.py --device "$device" --ember "$out/ember_gemm.jsonl" \
  --torch "$out/torch_gemm.jsonl" "${st_args[@]}" --out "$out/gpu_bench.md" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== done at ${SECONDS} s, status $status" | tee -a "$log"
exit $status
