#!/usr/bin/env bash
# Builds ember-cpu for aarch64 (Graviton, Ampere, Apple silicon under Linux) and runs its unit
# tests under qemu user-mode emulation, then clippy for that target. This checks the NEON
# paths (GEMM microkernel, SIMD token) for correctness only: qemu says nothing about speed.
# Last, the NEON coverage test again with EMBER_ISA=scalar, which must force the portable path.
#
# Installs nothing. Needs: qemu-aarch64, an aarch64 cross linker with its libc, and the Rust
# aarch64-unknown-linux-gnu standard library. Slow: ~2 minutes of emulated tests. Extra
# arguments are passed to the test binary (e.g. a test-name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
missing=()
command -v qemu-aarch64 >/dev/null ||
  missing+=("qemu-aarch64:          sudo apt-get install qemu-user")
command -v aarch64-linux-gnu-gcc >/dev/null ||
  missing+=("aarch64-linux-gnu-gcc: sudo apt-get install gcc-aarch64-linux-gnu")
[ -d "$sysroot/lib" ] ||
  missing+=("$sysroot (libc):  sudo apt-get install libc6-dev-arm64-cross")
[ -d "$(rustc --print sysroot)/lib/rustlib/$target" ] ||
  missing+=("Rust std for $target: rustup target add $target")
if [ ${#missing[@]} -gt 0 ]; then
  echo "aarch64-test: missing, install and rerun:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"

cargo test --release -j 1 --target "$target" -p ember-cpu --lib -- "$@"
cargo clippy --release --target "$target" -p ember-cpu --all-targets -- -D warnings
EMBER_ISA=scalar cargo test --release -j 1 --target "$target" -p ember-cpu --lib \
  -- neon_path_is_exercised
