//! Ember's CUDA backend: its own kernels (`kernels/*.cu`, one file per op, sharing
//! `kernels/common.cuh`), compiled at run time by NVRTC for the device's architecture, and
//! typed launchers that check every shape on the host.
//!
//! Shape legend (as in [`ember_cpu`]): `T` = tokens of a packed batch (sequences concatenated,
//! no padding, described by `seq_offsets`), `H` = hidden size, `F` = FFN size, `nh` = heads,
//! `hd` = head dim.
//!
//! | op                                   | kernel file      | CPU reference                          |
//! |--------------------------------------|------------------|----------------------------------------|
//! | [`embedding::embedding_layernorm`] (BERT's or RoBERTa's position rows, or none) | `embedding.cu` | `ember_bert` embedding step |
//! | [`gemm::linear`]                     | `gemm.cu`, `gemm_sm90.cu` | [`ember_cpu::gemm::linear_reference`] |
//! | [`layernorm::layernorm`]             | `layernorm.cu`   | [`ember_cpu::layernorm::layernorm_reference`] |
//! | [`attention::attention_varlen`] (optionally MPNet's relative position bias or JinaBERT's ALiBi, ModernBERT's sliding window) | `attention.cu` | [`ember_cpu::attention::attention_varlen_reference_with_terms`] |
//! | [`rotary::apply_rotary`] (ModernBERT) | `rotary.cu` | [`ember_cpu::rotary::apply_rotary_reference`] |
//! | [`activation::gated_activation`] (ModernBERT's GeGLU) | `activation.cu` | [`ember_cpu::activation::gated_activation_reference`] |
//! | [`pooling::pool`], [`pooling::normalize_rows`] | `pooling.cu` | [`ember_pooling::pool`], [`ember_pooling::normalize_rows`] |
//!
//! Nothing CUDA is needed to build: the driver (`libcuda`) is loaded at run time by `cudarc`,
//! NVRTC by [`nvrtc`]. Without a driver, [`CudaDevice::open`] returns
//! [`CudaError::NoDriver`]. Element types: f32 everywhere, bf16/f16 for activations and weights
//! (biases, LayerNorm parameters and pooled outputs stay f32); arithmetic is f32 (f64 for pooling
//! sums), inputs widened on load and outputs rounded once.
//!
//! ```no_run
//! use ember_cuda::{gemm, CudaDevice};
//! use ember_cpu::Activation;
//! let device = CudaDevice::open(0)?;
//! let (m, n, k) = (4, 3, 8);
//! let w = gemm::DeviceLinear::<half::bf16>::upload(&device, &[0.5; 24], Some(&[1.0; 3]), n, k)?;
//! let x = device.upload::<half::bf16>(&[1.0; 32])?;
//! let mut y = device.zeros::<half::bf16>(m * n)?;
//! gemm::linear(&device, &x, m, &w, Activation::Gelu, None, &mut y)?;
//! assert_eq!(device.download(&y)?.len(), m * n);
//! # Ok::<(), ember_cuda::CudaError>(())
//! ```

pub mod activation;
pub mod attention;
pub mod bert;
pub mod device;
pub mod embedding;
pub mod error;
pub mod gemm;
pub mod kernel_cache;
pub mod kernels;
mod launch;
pub mod layernorm;
pub mod nvrtc;
pub mod pooling;
pub mod profile;
pub mod rotary;
pub mod timing;

pub use bert::CudaBertModel;
pub use device::{
    device_allocations, CudaDevice, DeviceTensor, Dtype, Element, SeqOffsets, TokenIds,
};
pub use error::CudaError;
pub use nvrtc::{Arch, Nvrtc};
pub use timing::CallTimes;

use ember_cpu::Activation;

/// `kernels/common.cuh`'s `ACT_*` numbering.
pub(crate) fn activation_code(act: Activation) -> i32 {
    match act {
        Activation::Identity => 0,
        Activation::Gelu => 1,
        Activation::GeluTanh => 2,
        Activation::Relu => 3,
        Activation::Silu => 4,
    }
}
