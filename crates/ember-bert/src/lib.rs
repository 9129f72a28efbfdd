//! BERT encoder for Ember: config, weights and the packed forward pass.
//!
//! Shape legend: `T` = tokens of a packed batch (sequences concatenated, no padding),
//! `H` = hidden size, `F` = intermediate (FFN) size, `nh` = heads, `hd = H / nh`.
//!
//! The module tree mirrors Hugging Face's `BertModel` and the weight names are the
//! checkpoint's own (with or without a `bert.` prefix). The other families ([`ModelFamily`]) are
//! the same post-LayerNorm layers under their own names: RoBERTa (`roberta`, `xlm-roberta`,
//! `camembert`) with other position rows ([`PositionIds`]), MPNet with a relative position bias
//! added to the attention scores, DistilBERT with other names and config keys:
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

pub use config::{
    alibi_bias, alibi_slopes, expand_relative_bias, relative_position_bucket, BertConfig,
    ModelFamily, ModernBertParams, PositionIds, RotaryParams, MPNET_BUCKETS, MPNET_MAX_DISTANCE,
};
pub use model::{check_batch, rotary_tables, BertModel, Workspace, INT8_OUTLIER_CHANNELS};
pub use weights::F32WeightReader;

/// Errors loading or running a BERT encoder.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// `config.json` could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not JSON.
    #[error("{path}: not a valid config: {source}")]
    ConfigJson {
        /// The config file.
        path: PathBuf,
        /// The JSON parser's error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` is JSON but describes no BERT Ember can run: a missing or out-of-range
    /// size, heads that do not divide the hidden size, an unknown activation, a `model_type`
    /// other than `bert`, relative position embeddings…
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The weight file could not be opened or a tensor in it could not be read.
    #[error(transparent)]
    Tensor(#[from] ember_tensor::TensorError),
    /// A tensor the config calls for is not in the weight file.
    #[error(
        "{path}: missing tensor \"{name}\" (looked for it with and without a \"bert.\", \"roberta.\", \"mpnet.\" or \"distilbert.\" prefix)"
    )]
    MissingWeight {
        /// The weight file.
        path: PathBuf,
        /// The tensor's name, with the prefix (`bert.`, `roberta.`, `mpnet.`, `distilbert.` or
        /// none) the file's tensors use.
        name: String,
    },
    /// A tensor's shape disagrees with the sizes in `config.json`.
    #[error("{path}: tensor \"{name}\" has shape {found:?}, config.json implies {expected:?}")]
    WeightShape {
        /// The weight file.
        path: PathBuf,
        /// The tensor's name as stored.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The weight file holds an encoder layer the config does not count (a config that does not
    /// belong to these weights).
    #[error(
        "{path}: tensor \"{name}\" is in layer {layer}, but config.json has num_hidden_layers = {layers}"
    )]
    LayerPastConfig {
        /// The weight file.
        path: PathBuf,
        /// The first such tensor's name.
        name: String,
        /// Its layer index (`encoder.layer.<layer>`), `≥ layers`.
        layer: usize,
        /// `num_hidden_layers` from the config.
        layers: usize,
    },
    /// A packed batch the model cannot run (see [`check_batch`]): offsets not from 0 to `T`, an
    /// empty sequence or one longer than `max_position_embeddings`, a token id outside the
    /// vocabulary.
    #[error("input: {0}")]
    Input(String),
    /// A kernel refused its arguments (a bug in the caller, not bad input).
    #[error("kernel: {0}")]
    Kernel(#[from] ember_cpu::KernelError),
}
