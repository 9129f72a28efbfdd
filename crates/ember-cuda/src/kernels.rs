//! The kernel sources, embedded in the crate, and their compilation: each `kernels/<op>.cu` is
//! compiled by NVRTC (with `kernels/common.cuh` as its only header) the first time one of its
//! kernels is needed on a device, for that device's architecture; the CUBIN is cached for the
//! rest of the process, so a second device of the same architecture reuses it, and on disk
//! ([`crate::kernel_cache`]), so that later processes load it instead of compiling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::CudaError;
use crate::kernel_cache;
use crate::nvrtc::{Arch, Nvrtc};

/// `kernels/common.cuh`, included by every kernel file.
pub const COMMON_HEADER: (&str, &str) = ("common.cuh", include_str!("../kernels/common.cuh"));

/// The headers every kernel file is compiled with (and keyed by in the on-disk cache).
pub const HEADERS: [(&str, &str); 1] = [COMMON_HEADER];

/// One `kernels/*.cu` file: one op, mirroring `crates/ember-cpu/src/<op>.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelFile {
    /// `embedding.cu`: word + position + token-type gather, then LayerNorm.
    Embedding,
    /// `gemm.cu`: `Y = act(X·Wᵀ + b) + R`, tensor cores (bf16/f16) and exact f32.
    Gemm,
    /// `gemm_sm90.cu`: the same linear layer on Hopper's `wgmma` (sm_90 only).
    GemmSm90,
    /// `layernorm.cu`: (residual add +) LayerNorm.
    LayerNorm,
    /// `attention.cu`: packed variable-length attention with online softmax.
    Attention,
    /// `pooling.cu`: sentence-transformers pooling modes and Normalize.
    Pooling,
    /// `rotary.cu`: rotary position embeddings on Q and K (ModernBERT).
    Rotary,
    /// `activation.cu`: a gated activation, `act(a) · g` (ModernBERT's GeGLU).
    Activation,
}

impl KernelFile {
    /// Every kernel file, in a fixed order.
    pub const ALL: [KernelFile; 8] = [
        KernelFile::Embedding,
        KernelFile::Gemm,
        KernelFile::GemmSm90,
        KernelFile::LayerNorm,
        KernelFile::Attention,
        KernelFile::Pooling,
        KernelFile::Rotary,
        KernelFile::Activation,
    ];

    /// The file's name under `kernels/`.
    pub fn file_name(self) -> &'static str {
        match self {
            KernelFile::Embedding => "embedding.cu",
            KernelFile::Gemm => "gemm.cu",
            KernelFile::GemmSm90 => "gemm_sm90.cu",
            KernelFile::LayerNorm => "layernorm.cu",
            KernelFile::Attention => "attention.cu",
            KernelFile::Pooling => "pooling.cu",
            KernelFile::Rotary => "rotary.cu",
            KernelFile::Activation => "activation.cu",
        }
    }

    /// The file's text, as embedded at build time.
    pub fn source(self) -> &'static str {
        match self {
            KernelFile::Embedding => include_str!("../kernels/embedding.cu"),
            KernelFile::Gemm => include_str!("../kernels/gemm.cu"),
            KernelFile::GemmSm90 => include_str!("../kernels/gemm_sm90.cu"),
            KernelFile::LayerNorm => include_str!("../kernels/layernorm.cu"),
            KernelFile::Attention => include_str!("../kernels/attention.cu"),
            KernelFile::Pooling => include_str!("../kernels/pooling.cu"),
            KernelFile::Rotary => include_str!("../kernels/rotary.cu"),
            KernelFile::Activation => include_str!("../kernels/activation.cu"),
        }
    }

    /// Whether this file is for `arch`: `gemm_sm90.cu` is for sm_90 (Hopper) only, the rest
    /// for every supported architecture.
    pub fn compiles_for(self, arch: Arch) -> bool {
        match self {
            KernelFile::GemmSm90 => arch == Arch::SM90,
            _ => true,
        }
    }

    /// Compiles this file for `arch` with `nvrtc` (no cache: see [`cubin`]).
    pub fn compile(self, nvrtc: &Nvrtc, arch: Arch) -> Result<crate::nvrtc::Compiled, CudaError> {
        nvrtc.compile(self.file_name(), self.source(), &HEADERS, arch)
    }

    /// This file's CUBIN for `arch`: from the on-disk cache in `dir` when it holds one for
    /// exactly these sources, options and NVRTC, else compiled and stored there (a cache that
    /// cannot be written is no error). `dir: None` only compiles.
    pub fn compile_cached(
        self,
        nvrtc: &Nvrtc,
        arch: Arch,
        dir: Option<&std::path::Path>,
    ) -> Result<Vec<u8>, CudaError> {
        let Some(dir) = dir else {
            return Ok(self.compile(nvrtc, arch)?.cubin);
        };
        let key = self.cache_key(nvrtc, arch);
        if let Some(cubin) = kernel_cache::load(dir, &key) {
            return Ok(cubin);
        }
        let cubin = self.compile(nvrtc, arch)?.cubin;
        // Best effort: an unwritable cache costs the next process a compilation, nothing more.
        let _ = kernel_cache::store(dir, &key, &cubin);
        Ok(cubin)
    }

    /// The key of this file's CUBIN for `arch` in the on-disk cache: its source and headers, and
    /// what [`KernelFile::compile`] passes NVRTC.
    pub fn cache_key(self, nvrtc: &Nvrtc, arch: Arch) -> kernel_cache::Key {
        kernel_cache::Key::new(&kernel_cache::Inputs {
            file: self.file_name(),
            source: self.source(),
            headers: &HEADERS,
            target: &arch.nvrtc_target(),
            options: &Nvrtc::options(arch),
            nvrtc_version: nvrtc.version(),
            nvrtc_identity: nvrtc.identity(),
        })
    }

    /// The `extern "C"` kernels of this file that the launchers use.
    pub fn entry_points(self) -> Vec<&'static str> {
        use crate::{activation, attention, embedding, gemm, layernorm, pooling, rotary};
        match self {
            KernelFile::Embedding => embedding::ENTRY_POINTS.to_vec(),
            KernelFile::Gemm | KernelFile::GemmSm90 => gemm::GemmKernel::ALL
                .iter()
                .filter(|kernel| kernel.file() == self)
                .flat_map(|kernel| crate::Dtype::ALL.map(|dtype| kernel.entry_point(dtype)))
                .flatten()
                .collect(),
            KernelFile::LayerNorm => layernorm::ENTRY_POINTS.to_vec(),
            KernelFile::Attention => attention::ENTRY_POINTS.to_vec(),
            KernelFile::Pooling => pooling::ENTRY_POINTS.to_vec(),
            KernelFile::Rotary => rotary::ENTRY_POINTS.to_vec(),
            KernelFile::Activation => activation::ENTRY_POINTS.to_vec(),
        }
    }
}

/// Compiled CUBINs of this process, by file and architecture.
type CubinCache = Mutex<HashMap<(KernelFile, Arch), Arc<[u8]>>>;

/// The CUBIN of `file` for `arch`, compiled on first request and kept for the process.
pub fn cubin(nvrtc: &Nvrtc, file: KernelFile, arch: Arch) -> Result<Arc<[u8]>, CudaError> {
    static CACHE: OnceLock<CubinCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(cubin) = lock().get(&(file, arch)) {
        return Ok(cubin.clone());
    }
    // Compile (or read from disk) outside the lock (seconds for gemm.cu); a racing thread's
    // copy is as good.
    let dir = kernel_cache::directory();
    let cubin: Arc<[u8]> = file.compile_cached(nvrtc, arch, dir.as_deref())?.into();
    Ok(lock().entry((file, arch)).or_insert(cubin).clone())
}
