pub mod activation;
pub mod error;
pub mod gemm;
pub mod isa;
pub mod math;
pub(crate) mod simd;
pub mod attention;
pub mod layernorm;

pub use activation::Activation;
pub use attention::attention_varlen;
pub use error::KernelError;
pub use gemm::{linear, PackedLinear};
pub use isa::{active_isa, Isa};
pub use layernorm::layernorm;
