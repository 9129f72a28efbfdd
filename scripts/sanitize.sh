#!/usr/bin/env bash
# Runs the unsafe code (SIMD kernels on every ISA this CPU has, the memory map, the torch
# archive reader, the C ABI) under AddressSanitizer. Needs a nightly toolchain
# (`rustup toolchain install nightly`); not part of .ci/run (about 5 minutes on 2 cores).
#   scripts/sanitize.sh              # the default selection below
#   scripts/sanitize.sh -p ember-cpu # any cargo test arguments instead
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  # Unit and integration tests (rustdoc does not take the sanitizer flags: no doctests).
  args=(-p ember-cpu -p ember-tensor -p ember-pooling -p ember-capi --tests)
  tests_crate=(-p ember-reference-tests --test tiny --test reduced_precision --test torch_bin)
fi
# Leak checking is off: rayon's global pool and thread-locals live until exit by design.
run() {
  RUSTFLAGS="-Zsanitizer=address" ASAN_OPTIONS=detect_leaks=0 EMBER_C_FLAGS=-fsanitize=address \
    cargo +nightly test --release --target "$target" "$@"
}
run "${args[@]}"
if [ -n "${tests_crate+x}" ]; then
  run "${tests_crate[@]}"
fi
