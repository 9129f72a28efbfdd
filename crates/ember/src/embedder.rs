//! The [`Embedder`]: a loaded model folder that turns texts into sentence embeddings.
//!
//! `encode` tokenizes every text, orders them longest first (as sentence-transformers does),
//! packs each batch of `batch_size` texts into one `[T, H]` matrix without padding, runs the
//! encoder, pools, normalises when the folder says so, and writes each row back at its text's
//! input position. Every kernel computes a row independently of the others in its batch and
//! of the thread count, so a text's embedding is bit-identical however it is batched.
//!
//! After warm-up a call allocates nothing: scratch lives in a reused `EncodeState`, texts are
//! tokenized on the fast WordPiece path (for standard BERT folders), and the call reaches the
//! pool through a resident job (`resident.rs`) rather than `ThreadPool::install`.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use ember_bert::{BertModel, Workspace};
use ember_pooling::{normalize_rows, pool, PoolingConfig};

use crate::folder::{resolve_model, ModelFolder};
use crate::resident::ResidentJob;
use crate::tokenize::{TextTokenizer, TokenizeScratch};
use crate::EmberError;

/// Default texts per forward pass (sentence-transformers' default batch size).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Options for loading an [`Embedder`].
#[derive(Clone, Debug, Default)]
pub struct EmbedderBuilder {
    threads: Option<usize>,
    batch_size: Option<usize>,
}

impl EmbedderBuilder {
    /// Worker threads of the embedder's own pool (default: the machine's cores).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Texts per forward pass (default [`DEFAULT_BATCH_SIZE`]).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Loads a model: a folder path, or a hub id `org/name` found in the local Hugging Face
    /// cache.
    pub fn load(self, model: &str) -> Result<Embedder, EmberError> {
        let dir = resolve_model(model)?;
        self.load_dir(&dir)
    }

    /// Loads the model folder `dir`.
    pub fn load_dir(self, dir: &Path) -> Result<Embedder, EmberError> {
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(EmberError::Options("batch size must be at least 1".into()));
        }
        let threads = match self.threads {
            Some(0) => return Err(EmberError::Options("threads must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ember-{i}"))
            .build()
            .map_err(|e| EmberError::Options(format!("cannot start {threads} threads: {e}")))?;

        let folder = ModelFolder::open(dir)?;
        let model = pool.install(|| BertModel::from_dir(&folder.transformer_dir))?;
        let config = model.config();
        let pooling = folder.pooling(config.hidden_size)?;
        let tokenizer = TextTokenizer::load(
            &folder.transformer_dir,
            folder.max_seq_length,
            folder.do_lower_case,
            config.max_position_embeddings,
        )?;
        tokenizer.check_ids_below(config.vocab_size)?;
        // Which worker runs which attention task is up to work stealing: size every worker's
        // scratch for the longest sequence now, so that no later call grows one.
        let (max_len, head_dim) = (tokenizer.max_seq_length(), config.head_dim());
        pool.broadcast(|_| ember_cpu::reserve_attention_scratch(max_len, head_dim));
        // Last: once it runs, the resident job keeps a worker (see `ResidentJob::start`).
        let resident = ResidentJob::start(&pool);
        Ok(Embedder {
            model,
            tokenizer,
            dim: pooling.output_dim(),
            pooling,
            normalize: folder.normalize,
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
    /// One text's ids, as the tokenizer writes them.
    text_ids: Vec<u32>,
    /// The ids of every text of the call, concatenated in input order; text `i` is
    /// `token_ids[token_offsets[i]..token_offsets[i + 1]]`. One buffer sized by the call's
    /// tokens (not a vector per text), grown once by the largest call.
    token_ids: Vec<u32>,
    token_offsets: Vec<usize>,
    tokenize: TokenizeScratch,
    /// Text indices, longest first.
    order: Vec<usize>,
    /// The packed batch: ids `[T]` and `seq_offsets` `[n + 1]`.
    batch_ids: Vec<u32>,
    seq_offsets: Vec<usize>,
    /// Pooled rows of the batch, `[n, dim]`.
    pooled: Vec<f32>,
    workspace: Workspace,
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
    model: BertModel,
    tokenizer: TextTokenizer,
    pooling: PoolingConfig,
    normalize: bool,
    dim: usize,
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

    pub fn pooling(&self) -> &PoolingConfig {
        &self.pooling
    }

    /// Whether embeddings are L2-normalised (the folder lists a `Normalize` module).
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The work of encoding `texts`: their token count (special tokens included, after
    /// truncation) and the encoder FLOPs
    /// ([`BertConfig::encoder_flops`](ember_bert::BertConfig::encoder_flops) per text), which
    /// throughput figures are counted in.
    pub fn encoder_work<S: AsRef<str>>(&self, texts: &[S]) -> Result<(usize, f64), EmberError> {
        let mut ids = Vec::new();
        let (mut tokens, mut flops) = (0, 0.0);
        for (index, text) in texts.iter().enumerate() {
            self.tokenizer
                .encode_into(text.as_ref(), &mut ids)
                .map_err(|message| EmberError::Tokenize { index, message })?;
            tokens += ids.len();
            flops += self.model.config().encoder_flops(ids.len());
        }
        Ok((tokens, flops))
    }

    /// The token ids the encoder sees for `text`: `[CLS] … [SEP]`, truncated to
    /// [`max_seq_length`](Self::max_seq_length).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmberError> {
        let mut ids = Vec::new();
        self.tokenizer
            .encode_into(text, &mut ids)
            .map_err(|message| EmberError::Tokenize { index: 0, message })?;
        Ok(ids)
    }

    /// Embeds `texts`: `[n, dim]`, rows in input order.
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings, EmberError> {
        let mut data = vec![0f32; texts.len() * self.dim];
        self.encode_into(texts, &mut data)?;
        Ok(Embeddings {
            data,
            rows: texts.len(),
            dim: self.dim,
        })
    }

    /// Embeds `texts` into `out` (`[n, dim]`, row-major), rows in input order.
    pub fn encode_into<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<(), EmberError> {
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
        self.resident.run(|| self.encode_with(state, texts, out))
    }

    fn encode_with<S: AsRef<str> + Sync>(
        &self,
        state: &mut EncodeState,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<(), EmberError> {
        let n = texts.len();
        // On one thread, in order: the fast path takes ~2 µs a sentence, under 1% of the
        // forward pass, and a single scratch then grows to the longest text once.
        state.token_ids.clear();
        state.token_offsets.clear();
        state.token_offsets.push(0);
        for (index, text) in texts.iter().enumerate() {
            self.tokenizer
                .encode_into_with(text.as_ref(), &mut state.text_ids, &mut state.tokenize)
                .map_err(|message| EmberError::Tokenize { index, message })?;
            state.token_ids.extend_from_slice(&state.text_ids);
            state.token_offsets.push(state.token_ids.len());
        }
        let (token_ids, offsets) = (&state.token_ids, &state.token_offsets);
        let tokens = |i: usize| &token_ids[offsets[i]..offsets[i + 1]];

        state.order.clear();
        state.order.extend(0..n);
        // Longest first, equal lengths in input order. The index in the key makes an unstable
        // sort give that exact order without the stable sort's scratch allocation.
        state
            .order
            .sort_unstable_by_key(|&i| (std::cmp::Reverse(offsets[i + 1] - offsets[i]), i));

        let dim = self.dim;
        for chunk in state.order.chunks(self.batch_size) {
            state.batch_ids.clear();
            state.seq_offsets.clear();
            state.seq_offsets.push(0);
            for &i in chunk {
                state.batch_ids.extend_from_slice(tokens(i));
                state.seq_offsets.push(state.batch_ids.len());
            }
            let hidden =
                self.model
                    .forward(&state.batch_ids, &state.seq_offsets, &mut state.workspace)?;
            let rows = chunk.len() * dim;
            if state.pooled.len() < rows {
                state.pooled.resize(rows, 0.0);
            }
            let pooled = &mut state.pooled[..rows];
            pool(&self.pooling, hidden, &state.seq_offsets, pooled)?;
            if self.normalize {
                normalize_rows(pooled, dim);
            }
            for (row, &i) in pooled.chunks_exact(dim).zip(chunk) {
                out[i * dim..(i + 1) * dim].copy_from_slice(row);
            }
        }
        Ok(())
    }
}

/// Embeddings of `len()` texts, `[len, dim]` row-major f32.
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

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`. Panics if `i >= len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        // `max(1)`: chunks_exact panics on 0; with dim 0 there is no data to iterate anyway.
        self.data.chunks_exact(self.dim.max(1))
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}
