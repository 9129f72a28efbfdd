//! Ember: sentence embeddings from BERT-family sentence-transformers models, in pure Rust.
//!
//! Load a model folder as published on the hub (`config.json`, `model.safetensors` or
//! `pytorch_model.bin`, `tokenizer.json` or `vocab.txt`, `modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`) and embed text; the rows match what
//! sentence-transformers gives for the same folder.
//!
//! ```
//! use ember::Embedder;
//!
//! # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
//! // `model`: a folder such as all-MiniLM-L6-v2 (here: the repository's tiny test model).
//! let embedder = Embedder::builder().threads(2).batch_size(32).load(model)?;
//! let embeddings = embedder.encode(&["The cat sits outside", "A man is playing guitar"])?;
//! assert_eq!((embeddings.len(), embeddings.dim()), (2, embedder.dim()));
//! for row in embeddings.rows() {
//!     println!("{:?}", &row[..4]);
//! }
//! // A text's row does not depend on what else is in the batch.
//! let alone = embedder.encode(&["A man is playing guitar"])?;
//! assert_eq!(alone.row(0), embeddings.row(1));
//! # Ok::<(), ember::EmberError>(())
//! ```
//!
//! The entry points, each with an example:
//! - [`Embedder::builder`] → [`EmbedderBuilder`] (threads, batch size, [`Precision`],
//!   [`Device`], `max_seq_length`, normalisation, [`Truncation`]) → [`EmbedderBuilder::load`];
//! - [`Embedder::encode`] → [`Embeddings`] (`[n, dim]`, rows in input order), or
//!   [`Embedder::encode_into`] a caller's buffer (no allocation once warm);
//! - [`similarity::dot`], [`similarity::cosine`] and [`similarity::top_k`] over the rows;
//! - [`quantize::quantize`]: the rows as int8, uint8 or (packed) binary, as
//!   sentence-transformers' `quantize_embeddings` gives them;
//! - [`Embedder::info`] for what was loaded, [`EmberError`] for what went wrong (each variant
//!   names the file, tensor or text at fault).

mod bpe;
mod calibration;
mod dense;
mod device;
pub mod embedder;
pub mod folder;
pub mod hub;
pub mod quantize;
mod resident;
pub mod similarity;
pub mod tokenize;
mod tokenizer_class;
mod unigram;
pub mod wordpiece;

use std::path::PathBuf;

pub use device::Device;
pub use embedder::{
    Embedder, EmbedderBuilder, Embeddings, ModelInfo, Prompt, TextReport, Truncation,
    DEFAULT_BATCH_SIZE, MAX_THREADS,
};
pub use ember_cpu::Precision;
pub use folder::{resolve_model, ModelFolder};
pub use hub::{resolve_model_with, DownloadProgress, HubConfig};

/// Everything that can go wrong loading a model folder or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmberError {
    /// The model is neither a folder nor a hub id in the local Hugging Face cache.
    #[error("model {model:?} not found (looked in {})", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ModelNotFound {
        /// The model as given: a path or a hub id `org/name`.
        model: String,
        /// Every place looked in, in order.
        looked: Vec<PathBuf>,
    },
    /// A hub id that is not in the Hugging Face cache, with the network off limits
    /// ([`HubConfig::offline`], `HF_HUB_OFFLINE`); `looked` is the repo's cache folder.
    #[error("model {model:?} is not in the Hugging Face cache (looked in {}) and offline mode (HF_HUB_OFFLINE) forbids downloading it", looked.display())]
    HubOffline {
        /// The hub id asked for.
        model: String,
        /// `<cache>/models--org--name`.
        looked: PathBuf,
    },
    /// The hub answered with an error status (401/403: private, gated or misspelled model;
    /// 404: no such model, revision or file).
    #[cfg(feature = "hub")]
    #[error("{model}: {url}: HTTP {status}{}", hub_status_hint(*status, *token_set))]
    HubHttp {
        /// The hub id being downloaded.
        model: String,
        /// The URL that answered.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// Whether a token was sent (it changes the 401/403 advice).
        token_set: bool,
    },
    /// A hub request failed without an HTTP status (connection, TLS, a body cut short), or
    /// its answer was not what the hub sends.
    #[cfg(feature = "hub")]
    #[error("{model}: {url}: {message}")]
    HubTransfer {
        /// The hub id being downloaded.
        model: String,
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A downloaded file failed its size or sha256 check; the partial blob was removed.
    #[cfg(feature = "hub")]
    #[error("{model}: {file} (from {url}): {message}")]
    HubCorrupt {
        /// The hub id being downloaded.
        model: String,
        /// The file, relative to the model folder.
        file: String,
        /// Where its content came from.
        url: String,
        /// The check that failed.
        message: String,
    },
    /// The hub repo lacks a file Ember needs (the weights).
    #[cfg(feature = "hub")]
    #[error("{model}@{revision}: the repo has no {file}")]
    HubMissingFile {
        /// The hub id being downloaded.
        model: String,
        /// The revision looked at.
        revision: String,
        /// The file(s) missing.
        file: String,
    },
    /// A file of the model folder could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of the model folder (`modules.json`, `sentence_bert_config.json`,
    /// `tokenizer_config.json`, …) is not JSON.
    #[error("{path}: not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON parser's error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A file of the model folder is JSON but says something Ember cannot use (a key of the
    /// wrong kind, a module path outside the folder, …).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// `modules.json` lists a module other than Transformer, Pooling, Dense and Normalize (a
    /// CNN, an LSTM, …): the embeddings would not match sentence-transformers'.
    #[error(
        "{path}: module {module:?} is not supported (Ember runs Transformer, Pooling, Dense, Normalize)"
    )]
    UnsupportedModule {
        /// `modules.json`.
        path: PathBuf,
        /// The module's type, as `modules.json` names it.
        module: String,
    },
    /// The tokenizer files (`tokenizer.json` or `vocab.txt`) could not be loaded, or do not
    /// suit the model (an id outside its vocabulary, a `max_seq_length` under 2).
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file (or the folder, when it holds neither).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer failed on one text, or gave it no tokens where the pooling mode needs one
    /// (`cls`, `max`; a tokenizer that adds no special tokens, given `""`).
    #[error("text {index}: cannot tokenize: {message}")]
    Tokenize {
        /// The text's index in the call's texts, from 0.
        index: usize,
        /// The tokenizer's error.
        message: String,
    },
    /// A text longer than `max_seq_length` under [`Truncation::Error`]; `index` counts from 0
    /// in the call's texts.
    #[error("text {index} has {tokens} tokens, more than max_seq_length {max_seq_length} (truncation is set to error)")]
    TooLong {
        /// The first such text's index in the call's texts, from 0.
        index: usize,
        /// Its length in tokens before truncation, `[CLS]` and `[SEP]` included.
        tokens: usize,
        /// The embedder's limit ([`Embedder::max_seq_length`]).
        max_seq_length: usize,
    },
    /// The encoder could not be loaded (config, weights) or refused a batch.
    #[error(transparent)]
    Bert(#[from] ember_bert::BertError),
    /// The pooling configuration could not be read or used.
    #[error(transparent)]
    Pooling(#[from] ember_pooling::PoolingError),
    /// A builder option or call argument is out of range: zero threads or batch size, a
    /// `max_seq_length` past the model's, an output buffer of the wrong length, a device the
    /// build does not support…
    #[error("options: {0}")]
    Options(String),
    /// The GPU could not be used: no driver, no such device, no NVRTC, or a CUDA call failed.
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] ember_cuda::CudaError),
}

/// Advice to follow an HTTP error status from the hub.
#[cfg(feature = "hub")]
fn hub_status_hint(status: u16, token_set: bool) -> &'static str {
    match (status, token_set) {
        (401 | 403, false) => {
            " (the model may be private, gated or misspelled: set HF_TOKEN to a token that can read it)"
        }
        (401 | 403, true) => {
            " (HF_TOKEN was sent: check that it can read this model, and that the id is right)"
        }
        (404, _) => " (no such model, revision or file on the hub: check the id)",
        (429, _) => " (too many requests: try again later, or set HF_TOKEN for a higher limit)",
        (500.., _) => " (the hub or its storage is failing: try again later)",
        _ => "",
    }
}
