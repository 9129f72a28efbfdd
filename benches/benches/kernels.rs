//! Kernel benchmarks (filled in with the GEMM/attention/LayerNorm cases).
fn main() {}
