#!/usr/bin/env bash
# Runs the portable (scalar) kernels and their drivers under Miri, which checks every memory
# access of the unsafe code for undefined behaviour. Needs nightly with the miri component
# (`rustup +nightly component add miri rust-src`). Miri sees no SIMD features, so this covers
# the scalar GEMM kernels (f32 over f32/f16/bf16 panels, bf16, int8), the packing, the blocking
# loops on rayon threads, attention, LayerNorm and softmax on small shapes; the SIMD kernels run
# under AddressSanitizer instead (scripts/sanitize.sh).
#
# Tree Borrows: under Stacked Borrows, crossbeam-epoch (inside rayon) trips a known false
# positive in its intrusive list before any Ember code runs. Leaks are ignored: rayon's global
# pool threads outlive the tests by design.
set -euo pipefail
cd "$(dirname "$0")/.."
filters=("$@")
if [ ${#filters[@]} -eq 0 ]; then
  filters=(gemm::tests::every_isa_matches_reference_on_edge_shapes bad_ invalid_inputs plan_covers)
fi
MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-disable-isolation -Zmiri-tree-borrows -Zmiri-ignore-leaks" \
  cargo +nightly miri test -p ember-cpu --lib -- "${filters[@]}"
