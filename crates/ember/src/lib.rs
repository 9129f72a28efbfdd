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

mod calibration;
mod device;
pub mod embedder;
pub mod folder;
mod resident;
pub mod similarity;
pub mod tokenize;
pub mod wordpiece;

use std::path::PathBuf;

pub use device::Device;
pub use embedder::{
    Embedder, EmbedderBuilder, Embeddings, ModelInfo, TextReport, Truncation, DEFAULT_BATCH_SIZE,
};
pub use ember_cpu::Precision;
pub use folder::{resolve_model, ModelFolder};

/// Everything that can go wrong loading a model folder or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmberError {
    #[error("model {model:?} not found (looked in {})", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ModelNotFound { model: String, looked: Vec<PathBuf> },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path}: module {module:?} is not supported (Ember runs Transformer, Pooling, Normalize)"
    )]
    UnsupportedModule { path: PathBuf, module: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("text {index}: cannot tokenize: {message}")]
    Tokenize { index: usize, message: String },
    /// A text longer than `max_seq_length` under [`Truncation::Error`]; `index` counts from 0
    /// in the call's texts.
    #[error("text {index} has {tokens} tokens, more than max_seq_length {max_seq_length} (truncation is set to error)")]
    TooLong {
        index: usize,
        tokens: usize,
        max_seq_length: usize,
    },
    #[error(transparent)]
    Bert(#[from] ember_bert::BertError),
    #[error(transparent)]
    Pooling(#[from] ember_pooling::PoolingError),
    #[error("options: {0}")]
    Options(String),
    /// The GPU could not be used: no driver, no such device, no NVRTC, or a CUDA call failed.
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] ember_cuda::CudaError),
}
