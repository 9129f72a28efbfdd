//! Where the encoder runs: [`Device::Cpu`] (ember-cpu's kernels on the embedder's thread
//! pool) or [`Device::Cuda`] (ember-cuda's kernels on an NVIDIA GPU, with the `cuda` feature).
//! Tokenizing and packing stay on the CPU either way; on a GPU, pooling and normalisation run
//! there too and only the pooled rows come back.

#[cfg(feature = "cuda")]
use std::sync::{Mutex, PoisonError};

use ember_bert::{BertConfig, BertModel, Workspace};
use ember_cpu::Precision;
use ember_pooling::{normalize_rows, pool_excluding, PoolingConfig};
use ember_tensor::WeightFile;

use crate::EmberError;

/// The device an [`Embedder`](crate::Embedder) encodes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// NVIDIA GPU `ordinal` (as `CUDA_VISIBLE_DEVICES` numbers them). Needs the `cuda` feature
    /// and, at run time, an NVIDIA driver and NVRTC; dtypes `f32` (exact), `bf16`, `f16`.
    Cuda(usize),
}

impl Device {
    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`; `None` otherwise.
    ///
    /// ```
    /// use ember::Device;
    /// assert_eq!(Device::from_name("cuda:1"), Some(Device::Cuda(1)));
    /// assert_eq!(Device::from_name("cuda"), Some(Device::Cuda(0)));
    /// assert_eq!(Device::from_name("cpu"), Some(Device::Cpu));
    /// assert_eq!(Device::from_name("gpu"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Device> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The loaded encoder on its device.
// One per embedder, never moved in a loop: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Cpu(BertModel),
    /// Behind a lock: the GPU model reuses its activation buffers, so a call needs it
    /// mutably (calls are serialised by the embedder's state lock anyway).
    #[cfg(feature = "cuda")]
    Cuda(Mutex<ember_cuda::CudaBertModel>),
}

/// What the CPU side keeps between calls for the CPU backend.
#[derive(Default)]
pub(crate) struct CpuScratch {
    workspace: Workspace,
}

impl Backend {
    /// Loads `weights` onto `device` with its linear layers in `dtype`, refusing the
    /// combinations a device does not run. The device is opened first, so that a missing
    /// driver fails fast, before the weights are read. (A CPU int8 model is loaded in f32
    /// here and quantised by [`Backend::into_calibrated_int8`] once the tokenizer is up.)
    pub(crate) fn load(
        device: Device,
        config: BertConfig,
        weights: impl FnOnce() -> Result<WeightFile, EmberError>,
        dtype: Precision,
        pool: &rayon::ThreadPool,
    ) -> Result<Backend, EmberError> {
        match device {
            Device::Cpu => {
                if dtype == Precision::F16 {
                    return Err(EmberError::Options(
                        "dtype f16 runs on cuda only; on the CPU use f32, bf16 or int8".into(),
                    ));
                }
                let weights = weights()?;
                let model =
                    pool.install(|| BertModel::from_weights_with(config, &weights, dtype))?;
                Ok(Backend::Cpu(model))
            }
            Device::Cuda(ordinal) => Self::load_cuda(ordinal, config, weights, dtype),
        }
    }

    /// The int8 model for a CPU model loaded in f32: runs it on `calibration` (packed ids
    /// and sequence offsets, see [`crate::calibration`]) and packs each layer in int8 from
    /// `weights` against its inputs there (see [`BertModel::calibrated_int8`]), then drops
    /// the f32 model. Other backends come back as they are.
    pub(crate) fn into_calibrated_int8(
        self,
        weights: impl FnOnce() -> Result<WeightFile, EmberError>,
        (token_ids, seq_offsets): (&[u32], &[usize]),
        pool: &rayon::ThreadPool,
    ) -> Result<Backend, EmberError> {
        match self {
            Backend::Cpu(f32_model) => {
                let weights = weights()?;
                let model =
                    pool.install(|| f32_model.calibrated_int8(&weights, token_ids, seq_offsets))?;
                Ok(Backend::Cpu(model))
            }
            #[cfg(feature = "cuda")]
            other => Ok(other),
        }
    }

    #[cfg(feature = "cuda")]
    fn load_cuda(
        ordinal: usize,
        config: BertConfig,
        weights: impl FnOnce() -> Result<WeightFile, EmberError>,
        dtype: Precision,
    ) -> Result<Backend, EmberError> {
        use ember_cuda::Dtype;
        let dtype = match dtype {
            Precision::F32 => Dtype::F32,
            Precision::Bf16 => Dtype::Bf16,
            Precision::F16 => Dtype::F16,
            Precision::Int8 => {
                return Err(EmberError::Options(
                    "dtype int8 runs on the CPU only; on cuda use f32, bf16 or f16".into(),
                ))
            }
        };
        let device = ember_cuda::CudaDevice::open(ordinal)?;
        let weights = weights()?;
        let mut model = ember_cuda::CudaBertModel::load(device, config, &weights, dtype)?;
        // A diagnostic: per-op GPU and host times, printed to stderr when the model is dropped.
        if std::env::var_os("EMBER_CUDA_PROFILE").is_some_and(|v| !v.is_empty() && v != "0") {
            model.enable_profile();
        }
        Ok(Backend::Cuda(Mutex::new(model)))
    }

    #[cfg(not(feature = "cuda"))]
    fn load_cuda(
        _ordinal: usize,
        _config: BertConfig,
        _weights: impl FnOnce() -> Result<WeightFile, EmberError>,
        _dtype: Precision,
    ) -> Result<Backend, EmberError> {
        Err(EmberError::Options(
            "this build of ember has no CUDA support (built without the `cuda` feature)".into(),
        ))
    }

    /// The operand precision of the linear layers.
    pub(crate) fn precision(&self) -> Precision {
        match self {
            Backend::Cpu(model) => model.precision(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(model) => {
                match model.lock().unwrap_or_else(PoisonError::into_inner).dtype() {
                    ember_cuda::Dtype::F32 => Precision::F32,
                    ember_cuda::Dtype::Bf16 => Precision::Bf16,
                    ember_cuda::Dtype::F16 => Precision::F16,
                }
            }
        }
    }

    /// Encodes one packed batch (`token_ids` `[T]`, `seq_offsets` `[n + 1]`) into its pooled,
    /// and if `normalize` L2-normalised, rows `out` `[n, dim]`; the first `excluded` tokens of
    /// each sequence (a prompt's, under `include_prompt: false`) are left out of the pooling.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn embed_batch(
        &self,
        scratch: &mut CpuScratch,
        token_ids: &[u32],
        seq_offsets: &[usize],
        pooling: &PoolingConfig,
        excluded: usize,
        normalize: bool,
        out: &mut [f32],
    ) -> Result<(), EmberError> {
        match self {
            Backend::Cpu(model) => {
                let hidden = model.forward(token_ids, seq_offsets, &mut scratch.workspace)?;
                pool_excluding(pooling, hidden, seq_offsets, excluded, out)?;
                if normalize {
                    normalize_rows(out, pooling.output_dim());
                }
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(model) => {
                // A call that panicked leaves nothing half-written that the next one reads
                // (every buffer is refilled before use): take a poisoned lock over.
                let mut model = model.lock().unwrap_or_else(PoisonError::into_inner);
                model.embed_excluding(
                    token_ids,
                    seq_offsets,
                    &pooling.modes,
                    excluded,
                    normalize,
                    out,
                )?;
                Ok(())
            }
        }
    }
}
