//! BERT encoder for Ember: config, weights and the packed forward pass.
//!
//! Shape legend: `T` = tokens of a packed batch (sequences concatenated, no padding),
//! `H` = hidden size, `F` = intermediate (FFN) size, `nh` = heads, `hd = H / nh`.
//!
//! The module tree mirrors Hugging Face's `BertModel` and the weight names are the
//! checkpoint's own (with or without a `bert.` prefix):
//!
//! ```text
//! embeddings   x = LN(word[id] + type[0] + pos[t])                           [T, H]
//! layer × N    qkv = x·W_qkvᵀ + b                                           [T, 3H]
//!              ctx = softmax(q·kᵀ/√hd)·v   per sequence and head             [T, H]
//!              a   = LN(ctx·W_oᵀ + b + x)                                     [T, H]
//!              f   = act(a·W_iᵀ + b)                                          [T, F]
//!              x   = LN(f·W_o2ᵀ + b + a)                                      [T, H]
//! ```
//!
//! Everything runs in f32 over `ember-cpu` kernels, on rayon's current pool.

pub mod config;
pub mod model;
pub mod weights;

use std::path::PathBuf;

pub use config::BertConfig;
pub use model::{check_batch, BertModel, LinearInputRanges, Workspace, INT8_OUTLIER_CHANNELS};
pub use weights::F32WeightReader;

/// Errors loading or running a BERT encoder.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid config: {source}")]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Tensor(#[from] ember_tensor::TensorError),
    #[error(
        "{path}: missing tensor \"{name}\" (looked for it with and without a \"bert.\" prefix)"
    )]
    MissingWeight { path: PathBuf, name: String },
    #[error("{path}: tensor \"{name}\" has shape {found:?}, config.json implies {expected:?}")]
    WeightShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "{path}: tensor \"{name}\" is in layer {layer}, but config.json has num_hidden_layers = {layers}"
    )]
    LayerPastConfig {
        path: PathBuf,
        name: String,
        layer: usize,
        layers: usize,
    },
    #[error("input: {0}")]
    Input(String),
    #[error("kernel: {0}")]
    Kernel(#[from] ember_cpu::KernelError),
}
