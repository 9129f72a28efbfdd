//! Shared helpers for Ember benchmarks (see `benches/kernels.rs`).
