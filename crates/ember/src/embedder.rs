//! The [`Embedder`]: a loaded model folder that turns texts into sentence embeddings.
//!
//! `encode` tokenizes every text (in shares, on the pool's threads), orders them longest
//! first (as sentence-transformers does), packs each batch of `batch_size` texts into one
//! `[T, H]` matrix without padding, runs the encoder, pools, normalises when the folder says
//! so, and writes each row back at its text's input position. Every kernel computes a row
//! independently of the others in its batch and of the thread count, so a text's embedding
//! is bit-identical however it is batched.
//!
//! Texts longer than `max_seq_length` tokens are truncated (as sentence-transformers does) or
//! refused, as [`Truncation`] says; [`Embedder::encode_into_with_report`] tells, per text, how
//! many tokens were dropped.
//!
//! After warm-up a call allocates nothing: scratch lives in a reused `EncodeState`, texts are
//! tokenized on Ember's own WordPiece or byte-level BPE path (for standard BERT, RoBERTa and
//! ModernBERT folders), and the call reaches the
//! pool through a resident job (`resident.rs`) rather than `ThreadPool::install`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, TryLockError};

use ember_bert::{BertConfig, BertError};
use ember_cpu::Precision;
use ember_pooling::{normalize_rows, PoolingConfig, PoolingMode};
use ember_tensor::WeightFile;

use crate::calibration::calibration_batch;
use crate::dense::DenseLayer;
use crate::device::{Backend, CpuScratch, Device};

use crate::folder::{resolve_model, ModelFolder};
use crate::hub::{resolve_model_with, HubConfig};
use crate::resident::ResidentJob;
use crate::tokenize::{TextTokenizer, TokenizeScratch};
use crate::EmberError;
use rayon::prelude::*;

/// The most threads an embedder's pool may have ([`EmbedderBuilder::threads`]).
pub const MAX_THREADS: usize = 4096;

/// Default texts per forward pass (sentence-transformers' default batch size).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// What to do with a text longer than `max_seq_length` tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Truncation {
    /// Keep its first `max_seq_length` tokens (`[CLS]` and `[SEP]` included), as
    /// sentence-transformers does. [`Embedder::encode_into_with_report`] says how many were
    /// dropped.
    #[default]
    Truncate,
    /// Refuse the call: [`EmberError::TooLong`] names the first such text and its length.
    Error,
}

/// What happened to one text in [`Embedder::encode_into_with_report`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TextReport {
    /// Tokens the encoder saw, `[CLS]` and `[SEP]` included (at most `max_seq_length`).
    pub tokens: usize,
    /// Tokens truncation dropped: the untruncated length is `tokens + dropped_tokens`.
    pub dropped_tokens: usize,
}

/// What a loaded model is: [`Embedder::info`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The model folder.
    pub model_dir: PathBuf,
    /// The weights file read (`model.safetensors` or `pytorch_model.bin`).
    pub weights_file: PathBuf,
    /// Width of an embedding.
    pub dim: usize,
    /// Longest token sequence encoded, special tokens included.
    pub max_seq_length: usize,
    /// `config.json`'s `max_position_embeddings`: the longest `max_seq_length` the model allows
    /// (for RoBERTa and MPNet, less `pad_token_id + 1`: their positions start there).
    pub max_position_embeddings: usize,
    /// Pooling modes, in output order (sentence-transformers' names: `mean`, `cls`, …).
    pub pooling: Vec<&'static str>,
    /// The pooling's `include_prompt`: false leaves a prompt's tokens out of it.
    pub include_prompt: bool,
    /// Whether embeddings are L2-normalised.
    pub normalize: bool,
    /// Whether the embeddings returned have unit length (a text's zero row aside): normalised,
    /// and not cut by a `truncate_dim` after that, or normalised again after the cut
    /// (`EmbedderBuilder::normalize(true)`, as `normalize_embeddings=True` does).
    pub unit_length: bool,
    /// What happens to texts longer than `max_seq_length`.
    pub truncation: Truncation,
    /// Operand precision of the linear layers.
    pub dtype: Precision,
    /// Where the encoder runs.
    pub device: Device,
    /// Encoder layers (`num_hidden_layers`).
    pub layers: usize,
    /// `H`, the width of a token's hidden state (the embedding width under one pooling mode).
    pub hidden_size: usize,
    /// Attention heads per layer.
    pub attention_heads: usize,
    /// `F`, the width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Whether texts take Ember's own allocation-free tokenizer (WordPiece, byte-level BPE or
    /// SentencePiece Unigram; else the `tokenizers` crate).
    pub fast_tokenizer: bool,
    /// Why they do not, when they do not: what in the folder's pipeline Ember's own tokenizers
    /// do not reproduce (e.g. a `single_word` added token).
    pub tokenizer_fallback: Option<String>,
    /// The transformers 5 tokenizer class whose pipeline Ember built (`BertTokenizer`,
    /// `MPNetTokenizer`, `RobertaTokenizer`, `XLMRobertaTokenizer`, `CamembertTokenizer`), or
    /// `None` where it took `tokenizer.json`'s as it is (`PreTrainedTokenizerFast`).
    pub tokenizer_class: Option<&'static str>,
    /// The encoder's family: `bert`, `roberta` (also XLM-R, CamemBERT), `mpnet`, `distilbert`,
    /// `modernbert`, `nomic_bert`, `gte`, `jina_bert`.
    pub architecture: &'static str,
    /// How the encoder sees token positions ([`BertConfig::positions`](ember_bert::BertConfig::positions)):
    /// `absolute`, `rotary θ=160000`, `alibi`, ….
    pub positions: String,
    /// `(in, out)` features of each Dense module after pooling, in order.
    pub dense: Vec<(usize, usize)>,
}

/// Options for loading an [`Embedder`].
#[derive(Clone, Debug, Default)]
pub struct EmbedderBuilder {
    threads: Option<usize>,
    batch_size: Option<usize>,
    dtype: Precision,
    device: Device,
    max_seq_length: Option<usize>,
    normalize: Option<bool>,
    truncation: Truncation,
    hub: Option<HubConfig>,
    /// What [`Prompt::Default`] stands for, if not the folder's `default_prompt_name`.
    default_prompt: Option<DefaultPrompt>,
    /// Keep only the first values of each embedding, if not the folder's `truncate_dim`.
    truncate_dim: Option<usize>,
}

/// [`EmbedderBuilder::default_prompt`]'s choice.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DefaultPrompt {
    Named(String),
    Text(String),
    Off,
}

impl EmbedderBuilder {
    /// Worker threads of the embedder's own pool (default: the machine's cores; 1 to
    /// [`MAX_THREADS`]).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Texts per forward pass (default [`DEFAULT_BATCH_SIZE`]).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Operand precision of the linear layers (default [`Precision::F32`], exact). `Bf16`
    /// rounds weights and activations to bf16 for the matrix products (f32 accumulation;
    /// LayerNorm, attention, pooling stay f32): about twice the speed on CPUs with
    /// AVX512_BF16 (about f32's on other AVX2 CPUs), half the weight memory, cosine ≥ 0.999
    /// to the f32 embeddings. `Int8`
    /// quantises weights per output channel at load and activations per token at run time
    /// (exact `i32` sums): `vpdpbusd` on CPUs with AVX512_VNNI, a quarter of the weight
    /// memory, cosine ≥ 0.99 to the f32 embeddings. An `Int8` load first runs the model in
    /// f32 over 480 built-in calibration sentences, layer by layer: each linear keeps its 4
    /// largest input channels exact (f32), is rotated where that pays, and has its weights
    /// rounded by GPTQ against its inputs there. That costs load time: on 2 cores about
    /// 3.7 s instead of 0.3 s for all-MiniLM-L6-v2, about 27 s instead of 1.3 s for a
    /// BERT-base-sized model (less with more threads; the work is GEMMs).
    pub fn dtype(mut self, dtype: Precision) -> Self {
        self.dtype = dtype;
        self
    }

    /// Where the encoder runs (default [`Device::Cpu`]). On [`Device::Cuda`] the texts are
    /// still tokenized and packed on the CPU; the forward pass, pooling and normalisation run
    /// on the GPU with dtype `F32` (exact f32 GEMM), `Bf16` or `F16` (tensor cores); `Int8` is
    /// refused. Loading fails with a clear error, never a crash, when the machine has no
    /// NVIDIA driver (or ember was built without its `cuda` feature).
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// use ember::{Device, Embedder};
    /// match Embedder::builder().device(Device::Cuda(0)).load(model) {
    ///     Ok(embedder) => assert_eq!(embedder.device(), Device::Cuda(0)),
    ///     Err(err) => println!("no GPU: {err}"), // e.g. "no CUDA driver found (libcuda.so): …"
    /// }
    /// ```
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Longest token sequence, special tokens included (default: the folder's
    /// `sentence_bert_config.json`, else the tokenizer's `model_max_length`, capped at the
    /// model's `max_position_embeddings`). Loading fails if `n` exceeds
    /// `max_position_embeddings` (less `pad_token_id + 1` for the RoBERTa family, whose
    /// positions start there), or leaves no room for `[CLS]` and `[SEP]`.
    pub fn max_seq_length(mut self, n: usize) -> Self {
        self.max_seq_length = Some(n);
        self
    }

    /// L2-normalise the embeddings or not, whatever the folder's `modules.json` says (default:
    /// normalise exactly when it lists a `Normalize` module). `true` gives unit rows under a
    /// `truncate_dim` too: the kept values are normalised again, as sentence-transformers'
    /// `normalize_embeddings=True` does after truncating (a folder's own Normalize module
    /// runs before the truncation, so its rows are unit only whole).
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = Some(normalize);
        self
    }

    /// What to do with texts longer than `max_seq_length` tokens (default
    /// [`Truncation::Truncate`]).
    pub fn truncation(mut self, truncation: Truncation) -> Self {
        self.truncation = truncation;
        self
    }

    /// Keeps only the first `n` values of each embedding (Matryoshka models), as
    /// sentence-transformers' `truncate_dim` does: after every module, Normalize included, so
    /// a truncated row of a normalising model is not of unit length. Overrides
    /// `config_sentence_transformers.json`'s `truncate_dim`; `n` at or over the model's width
    /// keeps every value. `n = 0` fails at load.
    pub fn truncate_dim(mut self, n: usize) -> Self {
        self.truncate_dim = Some(n);
        self
    }

    /// The prompt [`Embedder::encode`] (and every call with [`Prompt::Default`]) puts before
    /// each text, instead of the folder's `default_prompt_name`: [`Prompt::Named`] (which must
    /// be among the folder's prompts, checked at load), [`Prompt::Text`], or [`Prompt::None`]
    /// for none. [`Prompt::Default`] keeps the folder's.
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// use ember::{Embedder, Prompt};
    /// let plain = Embedder::builder().threads(1).load(model)?;
    /// let queries = Embedder::builder().threads(1).default_prompt(Prompt::Text("query: ")).load(model)?;
    /// assert_eq!(
    ///     queries.encode(&["a cat"])?,
    ///     plain.encode_with_prompt(Prompt::Text("query: "), &["a cat"])?
    /// );
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn default_prompt(mut self, prompt: Prompt<'_>) -> Self {
        self.default_prompt = match prompt {
            Prompt::Default => None,
            Prompt::None => Some(DefaultPrompt::Off),
            Prompt::Named(name) => Some(DefaultPrompt::Named(name.to_owned())),
            Prompt::Text(text) => Some(DefaultPrompt::Text(text.to_owned())),
        };
        self
    }

    /// Where hub ids are looked up and downloaded from (default: [`HubConfig::from_env`],
    /// read when [`load`](Self::load) runs).
    pub fn hub(mut self, hub: HubConfig) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Loads a model: a folder path, or a hub id `org/name[@revision]` found in the local
    /// Hugging Face cache or, with the `hub` feature, downloaded into it (see
    /// [`resolve_model_with`]).
    ///
    /// # Errors
    ///
    /// [`EmberError::ModelNotFound`] when `model` is neither; [`EmberError::HubOffline`] for
    /// an id not cached while offline; with the `hub` feature, the `Hub*` errors of a
    /// download; otherwise as [`load_dir`](Self::load_dir).
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// use ember::{Embedder, Precision, Truncation};
    ///
    /// let embedder = Embedder::builder()
    ///     .threads(2)
    ///     .batch_size(16)
    ///     .dtype(Precision::F32)
    ///     .truncation(Truncation::Error)
    ///     .load(model)?;
    /// assert_eq!((embedder.threads(), embedder.batch_size()), (2, 16));
    ///
    /// assert!(matches!(
    ///     Embedder::builder().load("no-such-folder"),
    ///     Err(ember::EmberError::ModelNotFound { .. })
    /// ));
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn load(self, model: &str) -> Result<Embedder, EmberError> {
        let dir = match &self.hub {
            Some(hub) => resolve_model_with(model, hub)?,
            None => resolve_model(model)?,
        };
        self.load_dir(&dir)
    }

    /// Loads the model folder `dir`: reads its configuration, maps and checks the weights
    /// (packing them for the chosen precision), loads the tokenizer and starts the thread pool.
    ///
    /// # Errors
    ///
    /// [`EmberError::Options`] for a zero thread count or batch size, or a `max_seq_length`
    /// past the model's; the folder's own faults as [`EmberError::Io`], [`EmberError::Json`],
    /// [`EmberError::Invalid`], [`EmberError::UnsupportedModule`], [`EmberError::Tokenizer`],
    /// [`EmberError::Bert`] (config and weights, naming the file and tensor) or
    /// [`EmberError::Pooling`].
    pub fn load_dir(self, dir: &Path) -> Result<Embedder, EmberError> {
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(EmberError::Options("batch size must be at least 1".into()));
        }
        let threads = match self.threads {
            Some(0) => return Err(EmberError::Options("threads must be at least 1".into())),
            // rayon would quietly cap the count at 65,535, and that many threads (each with
            // its attention scratch) exhausts the machine: a count past any machine's cores is
            // a caller's mistake (a -1 cast to usize, say), refused before a thread starts.
            Some(n) if n > MAX_THREADS => {
                return Err(EmberError::Options(format!(
                    "threads = {n} is more than Ember runs ({MAX_THREADS} at most)"
                )))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ember-{i}"))
            .build()
            .map_err(|e| EmberError::Options(format!("cannot start {threads} threads: {e}")))?;

        let folder = ModelFolder::open(dir)?;
        let config_path = folder.transformer_dir.join("config.json");
        let config = BertConfig::from_file(&config_path)?;
        let max_seq_length = match self.max_seq_length {
            Some(n) if n > config.max_tokens() => {
                let first = config.position_ids.first_row();
                let rows_before = if first > 0 {
                    format!(" less the {first} rows before the first token's")
                } else {
                    String::new()
                };
                return Err(EmberError::Options(format!(
                    "max_seq_length {n} exceeds the model's max_position_embeddings {}{rows_before} ({})",
                    config.max_position_embeddings,
                    config_path.display()
                )));
            }
            Some(n) => Some(n),
            None => folder.max_seq_length,
        };
        let weights_file = folder.weights_file()?;
        // A CPU int8 model is calibrated on text (see `calibration.rs`): loaded in f32 first,
        // quantised once the tokenizer is up. (The weights are still checked before the
        // tokenizer, so a broken folder reports the same fault whatever the dtype.) Both
        // loads read one mapping of the file, so its pages count once in the RSS.
        let calibrate = self.device == Device::Cpu && self.dtype == Precision::Int8;
        let shared_weights = if calibrate {
            Some(WeightFile::open(&weights_file).map_err(BertError::from)?)
        } else {
            None
        };
        let open_weights = || match &shared_weights {
            Some(file) => Ok(file.clone()),
            None => Ok(WeightFile::open(&weights_file).map_err(BertError::from)?),
        };
        let load_dtype = if calibrate {
            Precision::F32
        } else {
            self.dtype
        };
        let backend = Backend::load(self.device, config.clone(), open_weights, load_dtype, &pool)?;
        let config = &config;
        let pooling = folder.pooling(config.hidden_size)?;
        if self.truncate_dim == Some(0) {
            return Err(EmberError::Options("truncate_dim 0 leaves no value".into()));
        }
        let default_prompt = match &self.default_prompt {
            None => folder
                .default_prompt_name
                .as_ref()
                .and_then(|name| folder.prompts.get(name))
                .cloned(),
            Some(DefaultPrompt::Off) => None,
            Some(DefaultPrompt::Text(text)) => Some(text.clone()),
            Some(DefaultPrompt::Named(name)) => {
                Some(folder.prompts.get(name).cloned().ok_or_else(|| {
                    EmberError::Options(format!(
                        "prompt name {name:?} is not among the model's prompts ({})",
                        prompt_names(&folder.prompts)
                    ))
                })?)
            }
        }
        .filter(|prompt| !prompt.is_empty());
        // Dense modules after Pooling, each taking the previous one's rows. Loaded on the
        // embedder's pool, as the encoder is (`Backend::load`): packing a layer's weights runs
        // parallel loops, which on the caller's thread would start rayon's global pool (one
        // thread per core, kept for the life of the process, whatever `threads` says).
        let mut width = pooling.output_dim();
        let dense = pool.install(|| {
            folder
                .dense
                .iter()
                .map(|dir| {
                    let layer = DenseLayer::load(dir, width)?;
                    width = layer.out_features();
                    Ok(layer)
                })
                .collect::<Result<Vec<_>, EmberError>>()
        })?;
        let mut tokenizer = TextTokenizer::load(
            &folder.transformer_dir,
            max_seq_length,
            folder.do_lower_case,
            config.max_tokens(),
        )?;
        tokenizer.check_ids_below(config.vocab_size)?;
        let backend = if calibrate {
            let (ids, offsets) = calibration_batch(&tokenizer)?;
            backend.into_calibrated_int8(open_weights, (&ids, &offsets), &pool)?
        } else {
            backend
        };
        // Encoding needs only one pipeline: on Ember's WordPiece or BPE path, the crate's goes.
        tokenizer.release_reference();
        // Which worker runs which attention task is up to work stealing: size every worker's
        // scratch for the longest sequence now, so that no later call grows one.
        let (max_len, head_dim) = (tokenizer.max_seq_length(), config.head_dim());
        pool.broadcast(|_| ember_cpu::reserve_attention_scratch(max_len, head_dim));
        // Last: once it runs, the resident job keeps a worker (see `ResidentJob::start`).
        let resident = ResidentJob::start(&pool);
        Ok(Embedder {
            backend,
            config: config.clone(),
            device: self.device,
            tokenizer,
            dim: self
                .truncate_dim
                .or(folder.truncate_dim)
                .map_or(width, |t| t.min(width)),
            full_dim: width,
            dense,
            default_prompt,
            prompts: folder.prompts,
            similarity: folder.similarity,
            pooling,
            normalize: self.normalize.unwrap_or(folder.normalize),
            normalize_truncated: self.normalize == Some(true),
            truncation: self.truncation,
            model_dir: folder.root,
            weights_file,
            batch_size,
            resident,
            pool,
            state: Mutex::new(EncodeState::default()),
        })
    }
}

/// Per-call scratch, kept between calls so steady-state encoding reuses its buffers.
#[derive(Default)]
struct EncodeState {
    /// What each pool worker tokenizes with, by its index in the pool (see
    /// [`TokenizeWorker`]).
    workers: Vec<Mutex<TokenizeWorker>>,
    /// The ids of every text of the call, concatenated in input order; text `i` is
    /// `token_ids[token_offsets[i]..token_offsets[i + 1]]`. One buffer sized by the call's
    /// tokens (not a vector per text), grown once by the largest call.
    token_ids: Vec<u32>,
    token_offsets: Vec<usize>,
    /// Per text, the tokens truncation dropped (counted when reports or
    /// [`Truncation::Error`] ask; else 0).
    dropped: Vec<usize>,
    /// Per share of a parallel call (see [`Embedder::tokenize_in_shares`]), its first
    /// failure.
    share_errors: Vec<Option<EmberError>>,
    /// Text indices, longest first.
    order: Vec<usize>,
    /// The packed batch: ids `[T]` and `seq_offsets` `[n + 1]`.
    batch_ids: Vec<u32>,
    seq_offsets: Vec<usize>,
    /// Pooled rows of the batch, `[n, dim]`.
    pooled: Vec<f32>,
    /// The Dense modules' outputs, `[n, out_features]` (ping-pong between layers).
    dense: [Vec<f32>; 2],
    cpu: CpuScratch,
}

/// Texts a tokenizing task takes at the least: about 2 µs each on Ember's own tokenizers, so
/// a share is worth far more than the pool's cost of handing it to another worker.
const MIN_TEXTS_PER_SHARE: usize = 64;

/// Shares a call's texts are cut into for each of the pool's threads, so that a worker that
/// draws long texts (or starts late) does not hold up the rest.
const SHARES_PER_THREAD: usize = 4;

/// What one pool worker tokenizes with, whichever texts it draws: its scratch grows to the
/// longest piece the worker has tokenized, over every call. Calls tokenized in one piece run on
/// one worker, the resident job's (see `encode_checked`), as the serial loop always did.
#[derive(Default)]
struct TokenizeWorker {
    /// Whether the buffers have had their first reservation.
    reserved: bool,
    /// One text's ids, as the tokenizer writes them.
    text_ids: Vec<u32>,
    /// The prompt and one text, when the call has a prompt.
    prompted: String,
    scratch: TokenizeScratch,
}

/// Texts of up to this many bytes never grow a worker's tokenizing scratch, reserved at its
/// first use: which worker draws which text is up to work stealing, so a scratch sized by the
/// texts it happened to draw could grow in any later call (a longer text is rare past this,
/// and grows that worker's scratch once, as it grew the serial loop's one scratch).
const SCRATCH_TEXT_BYTES: usize = 8 << 10;

/// A parallel call's texts and their places in its id buffer (the second pass of
/// `Embedder::tokenize_in_shares`).
struct Shares<'a, S> {
    texts: &'a [S],
    /// `token_offsets`, the prefix sums of the first pass's lengths.
    offsets: &'a [usize],
    per_share: usize,
    prompt: Option<&'a str>,
    count_dropped: bool,
}

/// A sentence-transformers model ready to embed text. `Send + Sync`: share one between
/// threads; concurrent calls take turns on the embedder's pool (each uses all its threads).
///
/// ```
/// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
/// let embedder = ember::Embedder::builder().threads(2).load(model)?;
/// let embeddings = embedder.encode(&["A cat sits on the mat.", "A dog plays."])?;
/// assert_eq!(embeddings.len(), 2);
/// assert_eq!(embeddings.row(0).len(), embedder.dim());
/// # Ok::<(), ember::EmberError>(())
/// ```
pub struct Embedder {
    backend: Backend,
    /// The encoder's config (also inside `backend`, kept here for lock-free reads).
    config: BertConfig,
    device: Device,
    tokenizer: TextTokenizer,
    pooling: PoolingConfig,
    normalize: bool,
    /// Whether rows cut by a `truncate_dim` are normalised again (an explicit
    /// [`EmbedderBuilder::normalize`]`(true)`).
    normalize_truncated: bool,
    truncation: Truncation,
    model_dir: PathBuf,
    weights_file: PathBuf,
    /// Width of the rows `encode` returns: `full_dim`, or less under a `truncate_dim`.
    dim: usize,
    /// Width of the pipeline's rows: the last Dense module's, else the pooling's.
    full_dim: usize,
    /// sentence-transformers' Dense modules after Pooling, in order.
    dense: Vec<DenseLayer>,
    /// `config_sentence_transformers.json`'s prompts by name.
    prompts: BTreeMap<String, String>,
    /// The folder's similarity function (`similarity_fn_name`).
    similarity: crate::similarity::Similarity,
    /// What [`Prompt::Default`] puts before each text (`None`: nothing).
    default_prompt: Option<String>,
    batch_size: usize,
    /// Runs calls on `pool`; declared before it, so dropped first: it lets its worker go
    /// before the pool shuts down.
    resident: ResidentJob,
    pool: rayon::ThreadPool,
    /// The call scratch. Calls take turns on the pool anyway (see `ResidentJob`), so one
    /// suffices; its lock is what orders concurrent callers.
    state: Mutex<EncodeState>,
}

impl Embedder {
    /// Options for loading a model, all at their defaults; finish with
    /// [`load`](EmbedderBuilder::load) or [`load_dir`](EmbedderBuilder::load_dir).
    ///
    /// ```no_run
    /// // all-MiniLM-L6-v2 from the Hugging Face cache (`~/.cache/huggingface/hub`).
    /// let embedder = ember::Embedder::builder()
    ///     .threads(4)
    ///     .load("sentence-transformers/all-MiniLM-L6-v2")?;
    /// assert_eq!(embedder.dim(), 384);
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn builder() -> EmbedderBuilder {
        EmbedderBuilder::default()
    }

    /// Loads a model folder (or cached hub id) with default options.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, EmberError> {
        EmbedderBuilder::default().load_dir(dir.as_ref())
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest token sequence (special tokens included); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_seq_length()
    }

    /// How token states become one row: the modes, in output order, over `H`-wide blocks.
    pub fn pooling(&self) -> &PoolingConfig {
        &self.pooling
    }

    /// Whether embeddings are L2-normalised (the folder lists a `Normalize` module, unless
    /// [`EmbedderBuilder::normalize`] said otherwise).
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// What happens to texts longer than [`max_seq_length`](Self::max_seq_length) (see
    /// [`EmbedderBuilder::truncation`]).
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// What the loaded model is: shape, limits, pooling, precision, files.
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// let embedder = ember::Embedder::builder().threads(1).load(model)?;
    /// let info = embedder.info();
    /// assert_eq!((info.dim, info.max_seq_length, info.pooling.as_slice()), (52, 40, &["mean"][..]));
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn info(&self) -> ModelInfo {
        let config = &self.config;
        ModelInfo {
            model_dir: self.model_dir.clone(),
            weights_file: self.weights_file.clone(),
            dim: self.dim,
            max_seq_length: self.max_seq_length(),
            max_position_embeddings: config.max_position_embeddings,
            pooling: self.pooling.modes.iter().map(|m| m.name()).collect(),
            include_prompt: self.pooling.include_prompt,
            normalize: self.normalize,
            unit_length: self.normalize && (self.dim == self.full_dim || self.normalize_truncated),
            truncation: self.truncation,
            dtype: self.dtype(),
            device: self.device,
            layers: config.num_hidden_layers,
            hidden_size: config.hidden_size,
            attention_heads: config.num_attention_heads,
            intermediate_size: config.intermediate_size,
            vocab_size: config.vocab_size,
            fast_tokenizer: self.tokenizer.is_fast(),
            tokenizer_fallback: self.tokenizer.fallback_reason().map(str::to_owned),
            tokenizer_class: self.tokenizer.transformers_class(),
            architecture: config.family.name(),
            positions: config.positions(),
            dense: self
                .dense
                .iter()
                .map(|d| (d.in_features(), d.out_features()))
                .collect(),
        }
    }

    /// Worker threads of the embedder's pool; every call uses all of them.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Texts per forward pass (see [`EmbedderBuilder::batch_size`]).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Operand precision of the linear layers (see [`EmbedderBuilder::dtype`]).
    pub fn dtype(&self) -> Precision {
        self.backend.precision()
    }

    /// Where the encoder runs (see [`EmbedderBuilder::device`]).
    pub fn device(&self) -> Device {
        self.device
    }

    /// The work of encoding `texts` as [`encode`](Self::encode) does (with the default
    /// prompt, if any): their token count (special tokens included, after truncation) and the
    /// encoder FLOPs ([`BertConfig::encoder_flops`](ember_bert::BertConfig::encoder_flops) per
    /// text), which throughput figures are counted in.
    pub fn encoder_work<S: AsRef<str>>(&self, texts: &[S]) -> Result<(usize, f64), EmberError> {
        let mut ids = Vec::new();
        let (mut tokens, mut flops) = (0, 0.0);
        let mut prompted = String::new();
        for (index, text) in texts.iter().enumerate() {
            let text = prompted_text(self.default_prompt.as_deref(), text.as_ref(), &mut prompted);
            self.tokenizer
                .encode_into(text, &mut ids)
                .map_err(|message| EmberError::Tokenize { index, message })?;
            tokens += ids.len();
            flops += self.config.encoder_flops(ids.len());
        }
        Ok((tokens, flops))
    }

    /// The token ids the encoder sees for `text` without a prompt: `[CLS] … [SEP]`, truncated
    /// to [`max_seq_length`](Self::max_seq_length). With a prompt, the encoder sees the ids of
    /// the prompt and the text as one string (see [`Embedder::default_prompt`]).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmberError> {
        let mut ids = Vec::new();
        self.tokenizer
            .encode_into(text, &mut ids)
            .map_err(|message| EmberError::Tokenize { index: 0, message })?;
        Ok(ids)
    }

    /// Embeds `texts`: `[n, dim]`, rows in input order. Each row depends only on its text, not
    /// on the batch around it, the batch size or the thread count.
    ///
    /// # Errors
    ///
    /// [`EmberError::Tokenize`] when the tokenizer fails on a text, or gives it no tokens at
    /// all (a tokenizer that adds no special tokens, given `""`) under a pooling mode that
    /// needs one (`cls`, `max`; under the means and `lasttoken` such a text's pooled row is
    /// zeros, as in sentence-transformers), or, under `max` with `include_prompt: false`, none
    /// but the prompt's; [`EmberError::Options`] when the prompt itself cannot be tokenized
    /// (`include_prompt: false` counts its tokens); [`EmberError::TooLong`] for a text past
    /// `max_seq_length` under [`Truncation::Error`]; [`EmberError::Bert`] for a batch the
    /// encoder refuses (a bug, as the tokenizer's ids are checked at load).
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// // `normalize(true)`: unit rows whatever the folder says, so a dot product is a cosine.
    /// let embedder = ember::Embedder::builder().threads(1).normalize(true).load(model)?;
    /// let texts = vec![String::from("A man is eating food."), String::from("A man rides a horse.")];
    /// let embeddings = embedder.encode(&texts)?;
    /// assert_eq!((embeddings.len(), embeddings.dim()), (2, embedder.dim()));
    /// let norm = ember::similarity::dot(embeddings.row(0), embeddings.row(0)).sqrt();
    /// assert!((norm - 1.0).abs() < 1e-5);
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings, EmberError> {
        let mut data = vec![0f32; texts.len() * self.dim];
        self.encode_into(texts, &mut data)?;
        Ok(Embeddings {
            data,
            rows: texts.len(),
            dim: self.dim,
        })
    }

    /// Embeds `texts` into `out` (`[n, dim]`, row-major), rows in input order. With
    /// [`Truncation::Error`], a text longer than `max_seq_length` tokens fails the call
    /// ([`EmberError::TooLong`]) and `out` is left unspecified.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode), and [`EmberError::Options`] when `out` does not hold
    /// `texts.len() · dim` values.
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// let embedder = ember::Embedder::builder().threads(1).load(model)?;
    /// let texts = ["first text", "second text"];
    /// // One buffer reused across calls: a warm call allocates nothing.
    /// let mut out = vec![0.0f32; texts.len() * embedder.dim()];
    /// for _ in 0..3 {
    ///     embedder.encode_into(&texts, &mut out)?;
    /// }
    /// assert!(embedder.encode_into(&texts, &mut out[1..]).is_err());
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn encode_into<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<(), EmberError> {
        self.encode_checked(texts, out, None, Prompt::Default)
    }

    /// [`encode`](Self::encode) with `prompt` before every text, as sentence-transformers'
    /// `encode(texts, prompt_name=…)` / `encode(texts, prompt=…)` does (plain [`encode`]
    /// uses [`Prompt::Default`]).
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode), and [`EmberError::Options`] for a [`Prompt::Named`]
    /// the folder's `config_sentence_transformers.json` does not define.
    ///
    /// [`encode`]: Self::encode
    pub fn encode_with_prompt<S: AsRef<str> + Sync>(
        &self,
        prompt: Prompt<'_>,
        texts: &[S],
    ) -> Result<Embeddings, EmberError> {
        let mut data = vec![0f32; texts.len() * self.dim];
        self.encode_into_with_prompt(prompt, texts, &mut data)?;
        Ok(Embeddings {
            data,
            rows: texts.len(),
            dim: self.dim,
        })
    }

    /// [`encode_into`](Self::encode_into) with `prompt` before every text (see
    /// [`encode_with_prompt`](Self::encode_with_prompt)); a warm call allocates nothing.
    pub fn encode_into_with_prompt<S: AsRef<str> + Sync>(
        &self,
        prompt: Prompt<'_>,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<(), EmberError> {
        self.encode_checked(texts, out, None, prompt)
    }

    /// sentence-transformers' `encode_query`: [`encode`](Self::encode) with the `query`
    /// prompt (empty unless the folder sets one).
    pub fn encode_query<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Embeddings, EmberError> {
        self.encode_with_prompt(Prompt::Named("query"), texts)
    }

    /// sentence-transformers' `encode_document`: [`encode`](Self::encode) with the first of the
    /// `document`, `passage` and `corpus` prompts the folder has. As in sentence-transformers,
    /// that is always `document` (every model has one, empty unless the folder sets it).
    pub fn encode_document<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Embeddings, EmberError> {
        let name = ["document", "passage", "corpus"]
            .into_iter()
            .find(|name| self.prompts.contains_key(*name))
            .unwrap_or("document");
        self.encode_with_prompt(Prompt::Named(name), texts)
    }

    /// The text `prompt` stands for with this model: `None` for no prompt.
    ///
    /// # Errors
    ///
    /// [`EmberError::Options`] for a [`Prompt::Named`] the folder does not define.
    pub fn prompt_text<'p>(&'p self, prompt: Prompt<'p>) -> Result<Option<&'p str>, EmberError> {
        let text = match prompt {
            Prompt::Default => self.default_prompt.as_deref(),
            Prompt::None => None,
            Prompt::Text(text) => Some(text),
            Prompt::Named(name) => {
                Some(self.prompts.get(name).map(String::as_str).ok_or_else(|| {
                    EmberError::Options(format!(
                        "prompt name {name:?} is not among the model's prompts ({})",
                        prompt_names(&self.prompts)
                    ))
                })?)
            }
        };
        Ok(text.filter(|t| !t.is_empty()))
    }

    /// The model's prompts by name (`config_sentence_transformers.json`).
    pub fn prompts(&self) -> &BTreeMap<String, String> {
        &self.prompts
    }

    /// The similarity function the model was trained for (`config_sentence_transformers.json`'s
    /// `similarity_fn_name`; cosine when it names none), as sentence-transformers'
    /// `model.similarity` uses: rank with [`similarity::top_k_by`](crate::similarity::top_k_by).
    pub fn similarity(&self) -> crate::similarity::Similarity {
        self.similarity
    }

    /// What [`Embedder::encode`] puts before each text: the folder's default prompt, or the
    /// builder's [`default_prompt`](EmbedderBuilder::default_prompt); `None` for nothing.
    pub fn default_prompt(&self) -> Option<&str> {
        self.default_prompt.as_deref()
    }

    /// [`encode`](Self::encode) that also reports, per text, its tokens and how many
    /// truncation dropped. See [`encode_into_with_report`](Self::encode_into_with_report)
    /// for the allocation-free form.
    ///
    /// ```
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
    /// let embedder = ember::Embedder::builder().threads(1).load(model)?;
    /// let (embeddings, reports) = embedder.encode_with_report(&["short", &"word ".repeat(100)])?;
    /// assert_eq!(embeddings.len(), 2);
    /// assert_eq!(reports[0].dropped_tokens, 0);
    /// assert_eq!(reports[1].tokens, embedder.max_seq_length());
    /// assert_eq!(reports[1].tokens + reports[1].dropped_tokens, 102); // [CLS] 100 × word [SEP]
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn encode_with_report<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<(Embeddings, Vec<TextReport>), EmberError> {
        let mut data = vec![0f32; texts.len() * self.dim];
        let mut reports = vec![TextReport::default(); texts.len()];
        self.encode_into_with_report(texts, &mut data, &mut reports)?;
        let embeddings = Embeddings {
            data,
            rows: texts.len(),
            dim: self.dim,
        };
        Ok((embeddings, reports))
    }

    /// [`encode_into`](Self::encode_into) that also fills `reports[i]` (one per text) with
    /// text `i`'s tokens and how many truncation dropped. Every text is tokenized to its end
    /// to count them (time linear in its length; plain `encode_into` stops at the limit); a
    /// warm call allocates nothing either. On an `Err`, `reports`, like `out`, is unspecified.
    pub fn encode_into_with_report<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
        reports: &mut [TextReport],
    ) -> Result<(), EmberError> {
        if reports.len() != texts.len() {
            return Err(EmberError::Options(format!(
                "{} reports for {} texts",
                reports.len(),
                texts.len()
            )));
        }
        self.encode_checked(texts, out, Some(reports), Prompt::Default)
    }

    fn encode_checked<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
        reports: Option<&mut [TextReport]>,
        prompt: Prompt<'_>,
    ) -> Result<(), EmberError> {
        let prompt = self.prompt_text(prompt)?;
        if out.len() != texts.len() * self.dim {
            return Err(EmberError::Options(format!(
                "output buffer holds {} values, {} texts × {} need {}",
                out.len(),
                texts.len(),
                self.dim,
                texts.len() * self.dim
            )));
        }
        // A call that panicked leaves the scratch sound (every buffer is cleared or resized
        // before use), so a poisoned lock is simply taken over.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        self.resident
            .run(|| self.encode_with(state, texts, out, reports, prompt))
    }

    fn encode_with<S: AsRef<str> + Sync>(
        &self,
        state: &mut EncodeState,
        texts: &[S],
        out: &mut [f32],
        reports: Option<&mut [TextReport]>,
        prompt: Option<&str>,
    ) -> Result<(), EmberError> {
        let n = texts.len();
        // Dropped tokens are counted only when someone looks: counting reads a text to its
        // end, where plain truncation stops at the limit.
        let count_dropped = reports.is_some() || self.truncation == Truncation::Error;
        // Tokenizing: in one piece on this thread for a call of at most MIN_TEXTS_PER_SHARE
        // texts or a pool of one thread, else in shares on the pool's workers (this runs on
        // the pool: see `encode_checked`). A text's ids are the same either way.
        let threads = rayon::current_num_threads();
        if state.workers.len() < threads {
            state.workers.resize_with(threads, Mutex::default);
        }
        let per_share = n
            .div_ceil(SHARES_PER_THREAD * threads)
            .max(MIN_TEXTS_PER_SHARE);
        if threads == 1 || n <= per_share {
            self.tokenize_whole(state, texts, prompt, count_dropped)?;
        } else {
            self.tokenize_in_shares(state, texts, per_share, prompt, count_dropped)?;
        }
        // include_prompt false: the prompt's tokens (as sentence-transformers counts them) are
        // left out of the pooling of every text of the call.
        let excluded = match prompt {
            Some(prompt) if !self.pooling.include_prompt && !prompt.is_empty() => {
                self.prompt_length(state, prompt)?
            }
            _ => 0,
        };
        let (token_ids, offsets) = (&state.token_ids, &state.token_offsets);
        if excluded > 0 && self.pooling.modes.contains(&PoolingMode::Max) {
            // No token of the text itself left: sentence-transformers' max gives -inf there.
            if let Some(index) =
                (0..n).find(|&i| (1..=excluded).contains(&(offsets[i + 1] - offsets[i])))
            {
                return Err(EmberError::Tokenize {
                    index,
                    message: format!(
                        "its {} tokens are all the prompt's ({excluded}, left out of the pooling: \
                         include_prompt is false), and max pooling needs one of the text's",
                        offsets[index + 1] - offsets[index]
                    ),
                });
            }
        }
        if let Some(reports) = reports {
            for (i, report) in reports.iter_mut().enumerate() {
                *report = TextReport {
                    tokens: offsets[i + 1] - offsets[i],
                    dropped_tokens: state.dropped[i],
                };
            }
        }
        let tokens = |i: usize| &token_ids[offsets[i]..offsets[i + 1]];

        state.order.clear();
        state.order.extend(0..n);
        // Longest first, equal lengths in input order. The index in the key makes an unstable
        // sort give that exact order without the stable sort's scratch allocation.
        state
            .order
            .sort_unstable_by_key(|&i| (std::cmp::Reverse(offsets[i + 1] - offsets[i]), i));

        // Texts of no tokens sort last and skip the encoder (which refuses an empty sequence):
        // their pooled rows are zeros, what sentence-transformers' mean and last-token pooling
        // give over an all-zero attention mask (`Σ 0 / clamp(0, 1e-9)`, a masked gather; modes
        // without that meaning were refused above). Dense and Normalize then treat them as any row.
        let with_tokens = state.order.partition_point(|&i| !tokens(i).is_empty());
        let (encoded, empty) = state.order.split_at(with_tokens);
        let pooled_dim = self.pooling.output_dim();
        for chunk in encoded.chunks(self.batch_size) {
            state.batch_ids.clear();
            state.seq_offsets.clear();
            state.seq_offsets.push(0);
            for &i in chunk {
                state.batch_ids.extend_from_slice(tokens(i));
                state.seq_offsets.push(state.batch_ids.len());
            }
            let rows = chunk.len() * pooled_dim;
            if state.pooled.len() < rows {
                state.pooled.resize(rows, 0.0);
            }
            let pooled = &mut state.pooled[..rows];
            // With Dense modules, Normalize comes after them.
            self.backend.embed_batch(
                &mut state.cpu,
                &state.batch_ids,
                &state.seq_offsets,
                &self.pooling,
                excluded,
                self.normalize && self.dense.is_empty(),
                pooled,
            )?;
            self.write_rows(chunk, pooled, &mut state.dense, out)?;
        }
        for chunk in empty.chunks(self.batch_size) {
            let rows = chunk.len() * pooled_dim;
            if state.pooled.len() < rows {
                state.pooled.resize(rows, 0.0);
            }
            let pooled = &mut state.pooled[..rows];
            pooled.fill(0.0);
            self.write_rows(chunk, pooled, &mut state.dense, out)?;
        }
        Ok(())
    }

    /// The prompt's token count sentence-transformers leaves out of the pooling under
    /// `include_prompt: false` ([`TextTokenizer::prompt_length`]), tokenized in the calling
    /// worker's scratch.
    fn prompt_length(&self, state: &EncodeState, prompt: &str) -> Result<usize, EmberError> {
        self.with_worker(&state.workers, |worker| {
            let TokenizeWorker {
                text_ids, scratch, ..
            } = worker;
            self.tokenizer
                .prompt_length(prompt, text_ids, scratch)
                .map_err(|message| {
                    EmberError::Options(format!("cannot tokenize the prompt {prompt:?}: {message}"))
                })
        })
    }

    /// Runs `f` with the calling pool worker's [`TokenizeWorker`], its buffers reserved at
    /// first use (for `max_seq_length` ids and [`SCRATCH_TEXT_BYTES`]). The lock is never
    /// contended (a worker tokenizes one share at a time, with its own index's); a fresh one
    /// is used if it somehow were.
    fn with_worker<R>(
        &self,
        workers: &[Mutex<TokenizeWorker>],
        f: impl FnOnce(&mut TokenizeWorker) -> R,
    ) -> R {
        let prepared = |worker: &mut TokenizeWorker| {
            if !worker.reserved {
                worker.reserved = true;
                worker.text_ids.reserve(self.max_seq_length());
                worker.prompted.reserve(SCRATCH_TEXT_BYTES);
                self.tokenizer
                    .reserve_scratch(&mut worker.scratch, SCRATCH_TEXT_BYTES);
            }
            f(worker)
        };
        let index = rayon::current_thread_index().unwrap_or(0) % workers.len().max(1);
        match workers.get(index).map(Mutex::try_lock) {
            Some(Ok(mut worker)) => prepared(&mut worker),
            Some(Err(TryLockError::Poisoned(poisoned))) => prepared(&mut poisoned.into_inner()),
            Some(Err(TryLockError::WouldBlock)) | None => prepared(&mut TokenizeWorker::default()),
        }
    }

    /// Tokenizes `texts` into `state.token_ids` and `state.token_offsets` (and
    /// `state.dropped`) on this thread, in order, with its worker's scratch; the first failure
    /// stops it.
    fn tokenize_whole<S: AsRef<str>>(
        &self,
        state: &mut EncodeState,
        texts: &[S],
        prompt: Option<&str>,
        count_dropped: bool,
    ) -> Result<(), EmberError> {
        state.token_ids.clear();
        state.token_offsets.clear();
        state.token_offsets.push(0);
        state.dropped.clear();
        self.with_worker(&state.workers, |worker| {
            for (index, text) in texts.iter().enumerate() {
                let report =
                    self.tokenize_text(worker, text.as_ref(), index, prompt, count_dropped)?;
                state.token_ids.extend_from_slice(&worker.text_ids);
                state.token_offsets.push(state.token_ids.len());
                state.dropped.push(report.dropped_tokens);
            }
            Ok(())
        })
    }

    /// [`tokenize_whole`](Self::tokenize_whole)'s result, with the work spread over the
    /// pool: `texts` in contiguous shares of `per_share`, tokenized twice. First every share
    /// in parallel writes its texts' lengths (and dropped counts) and notes its first
    /// failure; the first failure in input order is returned, as the serial loop would have;
    /// prefix sums of the lengths place each text in the one id buffer; then every share in
    /// parallel tokenizes its texts again into its own part of it. Twice the work (on two
    /// threads about the serial loop's time, on `P` about `2/P` of it), but the ids land in
    /// one buffer sized by the call's tokens, so that a warm call allocates nothing exactly
    /// when the serial loop would not (a per-share buffer would grow whenever a call put more
    /// tokens than before into one share).
    ///
    /// Why: on the CPU, tokenizing is under 1 % of a call, but on a GPU the pool has nothing
    /// else to do, and one thread's share of the time is large: MiniLM's texts take ~2 µs each
    /// to tokenize on one core of the development VM, against 10.2 µs each end to end on an
    /// H200 (benches/results/gpu.md, 97,745 texts/s).
    fn tokenize_in_shares<S: AsRef<str> + Sync>(
        &self,
        state: &mut EncodeState,
        texts: &[S],
        per_share: usize,
        prompt: Option<&str>,
        count_dropped: bool,
    ) -> Result<(), EmberError> {
        let n = texts.len();
        let share_count = n.div_ceil(per_share);
        state.token_offsets.clear();
        state.token_offsets.resize(n + 1, 0);
        state.dropped.clear();
        state.dropped.resize(n, 0);
        state.share_errors.clear();
        state.share_errors.resize_with(share_count, || None);
        let workers = &state.workers;
        state.token_offsets[1..]
            .par_chunks_mut(per_share)
            .zip(state.dropped.par_chunks_mut(per_share))
            .zip(state.share_errors.par_iter_mut())
            .enumerate()
            .for_each(|(share, ((lengths, dropped), error))| {
                let first = share * per_share;
                self.with_worker(workers, |worker| {
                    for (j, text) in texts[first..first + lengths.len()].iter().enumerate() {
                        match self.tokenize_text(
                            worker,
                            text.as_ref(),
                            first + j,
                            prompt,
                            count_dropped,
                        ) {
                            Ok(report) => {
                                lengths[j] = report.tokens;
                                dropped[j] = report.dropped_tokens;
                            }
                            Err(failure) => {
                                *error = Some(failure);
                                return;
                            }
                        }
                    }
                })
            });
        if let Some(failure) = state.share_errors.iter_mut().find_map(Option::take) {
            return Err(failure);
        }
        for i in 0..n {
            state.token_offsets[i + 1] += state.token_offsets[i];
        }
        state.token_ids.clear();
        state.token_ids.resize(state.token_offsets[n], 0);
        let shares = Shares {
            texts,
            offsets: &state.token_offsets,
            per_share,
            prompt,
            count_dropped,
        };
        self.fill_shares(workers, &shares, 0..share_count, &mut state.token_ids)
    }

    /// The second pass of [`tokenize_in_shares`](Self::tokenize_in_shares): shares
    /// `range`'s ids into `ids`, their part of the call's id buffer, halving the range over
    /// `rayon::join` down to one share a task.
    fn fill_shares<S: AsRef<str> + Sync>(
        &self,
        workers: &[Mutex<TokenizeWorker>],
        shares: &Shares<'_, S>,
        range: std::ops::Range<usize>,
        ids: &mut [u32],
    ) -> Result<(), EmberError> {
        let offsets = shares.offsets;
        let start_text = |share: usize| (share * shares.per_share).min(shares.texts.len());
        if range.len() <= 1 {
            let (first, end) = (start_text(range.start), start_text(range.end));
            let base = offsets[first];
            return self.with_worker(workers, |worker| {
                for i in first..end {
                    let text = shares.texts[i].as_ref();
                    self.tokenize_text(worker, text, i, shares.prompt, shares.count_dropped)?;
                    let part = &mut ids[offsets[i] - base..offsets[i + 1] - base];
                    if part.len() != worker.text_ids.len() {
                        return Err(EmberError::Tokenize {
                            index: i,
                            message: format!(
                                "internal error: {} tokens the second time, {} the first",
                                worker.text_ids.len(),
                                part.len()
                            ),
                        });
                    }
                    part.copy_from_slice(&worker.text_ids);
                }
                Ok(())
            });
        }
        let mid = range.start + range.len() / 2;
        let split = offsets[start_text(mid)] - offsets[start_text(range.start)];
        let (left, right) = ids.split_at_mut(split);
        let (left, right) = rayon::join(
            || self.fill_shares(workers, shares, range.start..mid, left),
            || self.fill_shares(workers, shares, mid..range.end, right),
        );
        left.and(right)
    }

    /// Text `index`'s ids into `worker.text_ids`: its tokens and, if `count_dropped`, how many
    /// truncation dropped; a failure of the tokenizer, a text too long under
    /// [`Truncation::Error`], or no tokens where the pooling needs one, is an `Err`.
    fn tokenize_text(
        &self,
        worker: &mut TokenizeWorker,
        text: &str,
        index: usize,
        prompt: Option<&str>,
        count_dropped: bool,
    ) -> Result<TextReport, EmberError> {
        let (ids, scratch) = (&mut worker.text_ids, &mut worker.scratch);
        let text = prompted_text(prompt, text, &mut worker.prompted);
        let dropped = if count_dropped {
            self.tokenizer
                .encode_into_counting_dropped(text, ids, scratch)
        } else {
            self.tokenizer
                .encode_into_with(text, ids, scratch)
                .map(|()| 0)
        }
        .map_err(|message| EmberError::Tokenize { index, message })?;
        if dropped > 0 && self.truncation == Truncation::Error {
            return Err(EmberError::TooLong {
                index,
                tokens: ids.len() + dropped,
                max_seq_length: self.max_seq_length(),
            });
        }
        if ids.is_empty() {
            // Only a tokenizer that adds no special tokens gives none (for "", or a text of
            // nothing but whitespace or control characters).
            if let Some(mode) = self.pooling.modes.iter().find(|&&m| !zero_when_empty(m)) {
                return Err(EmberError::Tokenize {
                    index,
                    message: format!(
                        "it gives no tokens (the tokenizer adds no special tokens), and \
                         {mode} pooling needs at least one"
                    ),
                });
            }
        }
        Ok(TextReport {
            tokens: ids.len(),
            dropped_tokens: dropped,
        })
    }

    /// Finishes the pooled rows `pooled` (`[chunk.len(), pooled_dim]`, normalised already when
    /// there is no Dense module) of the texts `chunk`: runs the Dense modules and then
    /// Normalize, if any, and writes each row's first `dim` values at its text's place in
    /// `out`.
    fn write_rows(
        &self,
        chunk: &[usize],
        pooled: &[f32],
        dense_buffers: &mut [Vec<f32>; 2],
        out: &mut [f32],
    ) -> Result<(), EmberError> {
        // The pipeline's rows are `full_dim` wide; a truncate_dim keeps their first `dim`.
        let (dim, full_dim) = (self.dim, self.full_dim);
        let rows_out: &[f32] = if self.dense.is_empty() {
            pooled
        } else {
            let which = run_dense(&self.dense, pooled, chunk.len(), dense_buffers)?;
            let result = &mut dense_buffers[which][..chunk.len() * full_dim];
            if self.normalize {
                normalize_rows(result, full_dim);
            }
            result
        };
        for (row, &i) in rows_out.chunks_exact(full_dim).zip(chunk) {
            let kept = &mut out[i * dim..(i + 1) * dim];
            kept.copy_from_slice(&row[..dim]);
            if self.normalize_truncated && dim < full_dim {
                normalize_rows(kept, dim);
            }
        }
        Ok(())
    }
}

/// Whether sentence-transformers' pooling `mode` gives a zero block for a text of no tokens
/// (an all-zero attention mask): the means do (`Σ 0 / clamp(0, 1e-9)`), and `lasttoken`
/// (sentence-transformers ≥ 5 gathers from `token_embeddings * mask`). `cls` would read a
/// padding token's state and `max` gives `-inf`, nothing of the text: Ember refuses those.
fn zero_when_empty(mode: PoolingMode) -> bool {
    matches!(
        mode,
        PoolingMode::Mean
            | PoolingMode::MeanSqrtLen
            | PoolingMode::WeightedMean
            | PoolingMode::LastToken
    )
}

/// Runs the Dense modules on `rows` rows of `input`, alternating between the two `buffers`
/// (grown as needed); returns the index of the buffer holding the last module's output.
fn run_dense(
    dense: &[DenseLayer],
    input: &[f32],
    rows: usize,
    buffers: &mut [Vec<f32>; 2],
) -> Result<usize, EmberError> {
    let mut src_len = input.len();
    for (l, layer) in dense.iter().enumerate() {
        let len = rows * layer.out_features();
        let [even, odd] = &mut *buffers;
        let (src, dst): (&[f32], &mut Vec<f32>) = match l {
            0 => (input, even),
            _ if l % 2 == 0 => (&odd[..src_len], even),
            _ => (&even[..src_len], odd),
        };
        if dst.len() < len {
            dst.resize(len, 0.0);
        }
        layer.apply(src, rows, &mut dst[..len])?;
        src_len = len;
    }
    Ok((dense.len() + 1) % 2)
}

/// `text` as the encoder sees it: `prompt + text` in `buffer` (reused: a warm call allocates
/// nothing), as sentence-transformers prepends the prompt before tokenizing; else `text`.
fn prompted_text<'a>(prompt: Option<&str>, text: &'a str, buffer: &'a mut String) -> &'a str {
    match prompt {
        Some(prompt) => {
            buffer.clear();
            buffer.push_str(prompt);
            buffer.push_str(text);
            buffer
        }
        None => text,
    }
}

/// The names of `prompts`, for errors: "query, passage", or "it has none".
fn prompt_names(prompts: &BTreeMap<String, String>) -> String {
    if prompts.is_empty() {
        "it has none".to_owned()
    } else {
        prompts.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Which prompt sentence-transformers-style encoding puts before each text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prompt<'a> {
    /// The folder's `default_prompt_name`, if any (what `SentenceTransformer.encode` does
    /// when the call names no prompt).
    #[default]
    Default,
    /// No prompt, even if the folder has a default.
    None,
    /// The prompt of that name in `config_sentence_transformers.json` (`prompt_name=`).
    Named(&'a str),
    /// This text (`prompt=`).
    Text(&'a str),
}

/// Embeddings of `len()` texts, `[len, dim]` row-major f32.
///
/// ```
/// use ember::Embeddings;
///
/// let embeddings = Embeddings::from_vec(vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0], 3, 2)?;
/// assert_eq!((embeddings.len(), embeddings.dim()), (3, 2));
/// assert_eq!(embeddings.row(1), &[0.6, 0.8]);
/// for (i, row) in embeddings.rows().enumerate() {
///     assert_eq!(row, &embeddings.as_slice()[i * 2..(i + 1) * 2]);
/// }
/// let flat: Vec<f32> = embeddings.into_vec(); // `[len · dim]`, row-major
/// assert_eq!(flat.len(), 6);
/// # Ok::<(), ember::EmberError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    data: Vec<f32>,
    rows: usize,
    dim: usize,
}

impl Embeddings {
    /// Wraps `rows × dim` row-major values (e.g. a matrix saved earlier). Errors if
    /// `data.len() != rows · dim`.
    pub fn from_vec(data: Vec<f32>, rows: usize, dim: usize) -> Result<Self, EmberError> {
        if rows.checked_mul(dim) != Some(data.len()) {
            return Err(EmberError::Options(format!(
                "{} values do not make {rows} rows of {dim}",
                data.len()
            )));
        }
        Ok(Self { data, rows, dim })
    }

    /// Number of rows: one per text.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are no rows (no texts were encoded).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Width of a row ([`Embedder::dim`]).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`. Panics if `i >= len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows in order, each `dim` values.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        // By index, not `chunks_exact(dim)`: with `dim = 0` there are still `len()` rows, each
        // empty (and chunks_exact(0) panics).
        (0..self.rows).map(move |i| self.row(i))
    }

    /// All values, `[len, dim]` row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The values, `[len, dim]` row-major, without copying.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_yields_as_many_rows_as_it_says() {
        // dim 0: `len()` empty rows (no data), not none.
        let empty_rows = Embeddings::from_vec(vec![], 3, 0).unwrap();
        let rows = empty_rows.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.collect::<Vec<_>>(), vec![&[] as &[f32]; 3]);
        // No rows.
        let none = Embeddings::from_vec(vec![], 0, 4).unwrap();
        assert_eq!(none.rows().len(), 0);
        assert_eq!(none.rows().count(), 0);
        // The usual case: every row, in order, and the size hint counts down with them.
        let data: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let two_by_three = Embeddings::from_vec(data, 2, 3).unwrap();
        let mut rows = two_by_three.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.next(), Some(&[0.0, 1.0, 2.0][..]));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows.next(), Some(&[3.0, 4.0, 5.0][..]));
        assert_eq!((rows.len(), rows.next()), (0, None));
    }
}
