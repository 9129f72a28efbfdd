pub mod activation;
pub mod error;
pub mod gemm;
pub mod isa;
pub mod math;
pub(crate) mod simd;
