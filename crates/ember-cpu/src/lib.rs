//! Ember's CPU kernels over row-major f32 slices.
//!
//! Shape legend: `T` = tokens of a packed batch (all sequences concatenated, no padding),
//! `H` = hidden size, `F` = FFN (intermediate) size, `nh` = heads, `hd` = head dim (`H = nh·hd`).
//!
//! Every op has a plain-loop reference (`*_reference`) next to its fast version; tests check the
//! fast version against the reference on random inputs with poisoned outputs.
//!
//! Parallelism: kernels use rayon's *current* pool (the caller runs them inside
//! `ThreadPool::install`). Work is split so that each output element is computed by exactly
//! one thread in a fixed order: results are bit-identical for any thread count and do not
//! depend on how many rows (tokens) are in the batch.

//!
//! Every kernel validates its shapes and returns `Result<(), KernelError>` rather than
//! panicking; each has a `*_with_isa` twin taking an explicit [`Isa`] (used by the tests to
//! run every instruction set this CPU has), and a `*_reference` plain-loop version.

pub mod activation;
pub mod attention;
pub mod error;
pub mod gemm;
pub mod isa;
pub mod layernorm;
pub mod math;
pub mod probe;
pub mod rotary;
pub(crate) mod simd;
pub mod softmax;
#[cfg(test)]
pub(crate) mod test_util;

pub use activation::{apply_activation, gated_activation, Activation};
pub use attention::{
    attention_varlen, attention_varlen_biased, attention_varlen_with_terms,
    reserve_attention_scratch, AttentionTerms, RelativeBias,
};
pub use error::KernelError;
pub use gemm::{linear, PackedLinear, Precision};
pub use isa::{active_isa, supported_isas, Isa};
pub use layernorm::layernorm;
pub use rotary::{apply_rotary, Rotary};
pub use softmax::softmax_inplace;
