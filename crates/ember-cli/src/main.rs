//! `ember`: sentence embeddings from the command line.
//!
//! ```text
//! ember embed --model <DIR|org/name> [TEXT…] [--input FILE] [--input-format lines|jsonl]
//!             [--output FILE] [--output-format jsonl|npy|raw] [--shard I/N] [MODEL OPTIONS]
//! ember similarity --model <DIR|org/name> TEXT TEXT…
//! ember search --model <DIR|org/name> --corpus FILE --query TEXT [--query TEXT…] [--top-k K]
//!              [--matrix FILE.npy]
//! ember info --model <DIR|org/name>
//! ember bench --model <DIR|org/name> --input FILE [--limit N] [--repeats R]
//!             [--latency-texts L] [--json]
//! MODEL OPTIONS: [--batch-size N] [--threads N] [--device cpu|cuda[:N]] [--dtype f32|bf16|int8|f16]
//!                [--max-seq-length N]
//!                [--normalize | --no-normalize] [--truncation truncate|error]
//!                [--prompt-name NAME | --prompt TEXT | --no-prompt] [--truncate-dim N]
//! ```
//! `embed` writes JSON lines (one array per text, input order) to stdout, or to `--output`;
//! `npy` is a float32 `[n, dim]` array and `raw` the same values with no header (see
//! `output.rs`). `--shard I/N` embeds the texts whose 0-based index `j` has `j % N == I`, in
//! input order; its JSON lines carry `j`. Output files are written to a temporary name and
//! renamed only once complete, so a run that fails with an error leaves nothing behind (FIFOs,
//! devices and `/dev/stdout` are written in place; see `output.rs`). Texts are embedded in
//! chunks and written as they are done, with a progress bar on stderr when it is a terminal
//! and the input has at least 1000 texts.
//!
//! `--model org/name[@revision]` not in the Hugging Face cache is downloaded into it (ember's
//! `hub` feature, on by default here), with a byte progress bar on stderr when it is a terminal.

mod bench;
mod input;
mod output;
mod progress;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ember::quantize::{Quantization, QuantizationRanges};
use ember::{Embedder, Embeddings, EmberError, HubConfig, Prompt, Truncation};

use crate::output::{Element, EmbeddingWriter, OutputFormat};
use crate::progress::{DownloadBar, Progress};

const EXAMPLES: &str = "\
Examples:
  ember embed -m sentence-transformers/all-MiniLM-L6-v2 'A cat sits on the mat.' 'A dog plays.'
  ember embed -m DIR -i corpus.txt -o corpus.npy
  ember embed -m DIR -i corpus.txt -o corpus.f32 --max-seq-length 128 --no-normalize
  ember embed -m DIR -i corpus.txt -o part-3.jsonl --shard 3/16
  ember similarity -m DIR 'a cat' 'a kitten' 'stock markets'
  ember search -m DIR --corpus corpus.txt --query 'a pet' --top-k 3 --matrix corpus.npy
  ember info -m DIR

DIR is a sentence-transformers model folder; org/name[@revision] (e.g.
sentence-transformers/all-MiniLM-L6-v2) is taken from the local Hugging Face cache, and
downloaded into it when missing (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE; HF_HUB_OFFLINE=1 never
downloads). Run `ember help embed` for output formats and sharding.";

const EMBED_DETAILS: &str = "\
Output formats (--output-format, else from the --output extension):
  jsonl  one JSON array per text, in input order (the default, and for standard output)
  npy    .npy: NumPy float32 [n, dim], C order
  raw    .f32 .bin .raw: little-endian float32, row-major, no header (n * dim * 4 bytes)

Sharding: --shard I/N (0-based I) embeds text j (0-based, line j+1) iff j % N == I, in input
order. Its JSON lines are {\"index\": j, \"embedding\": [...]}; row r of an npy/raw shard is
text I + r*N. Every shard reads the whole input, so any scheduler can run them:
  Kubernetes indexed Job (completions: 16):  --shard \"$JOB_COMPLETION_INDEX/16\"
  Slurm array (--array=0-15):  --shard \"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT\"
  Spark:  rdd.pipe(\"ember embed -m DIR\") gives one JSON line per element, in order
See README.md for complete recipes.

Examples:
  ember embed -m DIR 'first text' 'second text'
  cat corpus.txt | ember embed -m DIR > corpus.jsonl
  ember embed -m DIR -i corpus.jsonl --input-format jsonl -o corpus.npy
  ember embed -m DIR -i corpus.txt --truncation error -o corpus.f32";

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Sentence embeddings from sentence-transformers models, in pure Rust",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The model and how it embeds; flattened last into each command, under its own heading.
#[derive(clap::Args)]
#[command(next_help_heading = "Model options")]
struct ModelArgs {
    /// Model folder, or a hub id org/name[@revision]: taken from the local Hugging Face cache,
    /// or downloaded into it when missing (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE; HF_HUB_OFFLINE=1
    /// never downloads).
    #[arg(long, short)]
    model: String,
    /// Texts per forward pass.
    #[arg(long, default_value_t = ember::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Precision of the matrix products: f32 (exact, the default), bf16 (about twice as
    /// fast on CPUs with AVX512_BF16, about f32 speed on other AVX2 CPUs; cosine ≥ 0.999 to
    /// f32) or int8 (weights per channel,
    /// activations per token; fastest on CPUs with AVX512_VNNI; cosine ≥ 0.99 to f32).
    /// On cuda: f32 (exact), bf16 or f16 (tensor cores; cosine ≥ 0.999 to f32); int8 is
    /// CPU only, f16 cuda only.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Where the encoder runs: cpu, or cuda[:N] (NVIDIA GPU N, default 0; needs its driver).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: ember::Device,
    /// Longest token sequence, [CLS] and [SEP] included [default: the model's].
    #[arg(long, value_name = "N")]
    max_seq_length: Option<usize>,
    /// L2-normalise the embeddings [default: if the model folder has a Normalize module].
    #[arg(long, overrides_with = "no_normalize")]
    normalize: bool,
    /// Do not L2-normalise, even if the model folder has a Normalize module.
    #[arg(long, overrides_with = "normalize")]
    no_normalize: bool,
    /// Texts over --max-seq-length tokens: cut them, or stop with an error naming the line.
    #[arg(long, value_enum, default_value_t = TruncationArg::Truncate)]
    truncation: TruncationArg,
    /// Put the model's prompt NAME (config_sentence_transformers.json, e.g. `query`) before
    /// every text [default: the model's default_prompt_name, if any].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["prompt", "no_prompt"])]
    prompt_name: Option<String>,
    /// Put TEXT before every text (e.g. "query: " for e5).
    #[arg(long, value_name = "TEXT", conflicts_with = "no_prompt")]
    prompt: Option<String>,
    /// No prompt, even if the model has a default one.
    #[arg(long)]
    no_prompt: bool,
    /// Keep only the first N values of each embedding (Matryoshka models), after every module
    /// (normalised again with --normalize) [default: the model's truncate_dim, if any].
    #[arg(long, value_name = "N")]
    truncate_dim: Option<usize>,
}

/// `--truncation` values.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TruncationArg {
    /// Keep the first max-seq-length tokens, as sentence-transformers does.
    Truncate,
    /// Fail, naming the first text that is too long and its token count.
    Error,
}

/// `--device` values: `cpu`, `cuda`, `cuda:N`.
fn parse_device(name: &str) -> Result<ember::Device, String> {
    ember::Device::from_name(name).ok_or_else(|| format!("{name:?}: expected cpu, cuda or cuda:N"))
}

/// `--precision` values: sentence-transformers' `precision`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrecisionArg {
    Float32,
    Int8,
    Uint8,
    Binary,
    Ubinary,
}

impl PrecisionArg {
    /// The quantization it asks for; `None` for float32.
    fn quantization(self) -> Option<Quantization> {
        match self {
            PrecisionArg::Float32 => None,
            PrecisionArg::Int8 => Some(Quantization::Int8),
            PrecisionArg::Uint8 => Some(Quantization::Uint8),
            PrecisionArg::Binary => Some(Quantization::Binary),
            PrecisionArg::Ubinary => Some(Quantization::Ubinary),
        }
    }
}

/// `--dtype` values.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    Int8,
    /// CUDA only.
    F16,
}

impl From<Dtype> for ember::Precision {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => ember::Precision::F32,
            Dtype::Bf16 => ember::Precision::Bf16,
            Dtype::Int8 => ember::Precision::Int8,
            Dtype::F16 => ember::Precision::F16,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts: positional arguments, --input FILE, or standard input.
    #[command(after_help = EMBED_DETAILS)]
    Embed {
        /// Texts to embed (instead of --input / standard input).
        texts: Vec<String>,
        /// Read texts from FILE ("-" for standard input).
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// One text per line, or JSON lines with a "text" field.
        #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
        input_format: InputFormat,
        /// Write to FILE (complete or not at all; a FIFO, device or /dev/stdout as it goes)
        /// instead of standard output ("-": standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// jsonl, npy or raw f32 [default: from the --output extension, else jsonl].
        #[arg(long, value_enum)]
        output_format: Option<OutputFormat>,
        /// Embed only shard I of N (0-based): the texts whose index j has j % N == I.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<Shard>,
        /// Store each embedding at lower precision, as sentence-transformers'
        /// encode(precision=…): int8 / uint8 (a byte a value, on per-dimension ranges) or
        /// binary / ubinary (a bit a value, 8 a byte); npy and raw write the bytes, jsonl the
        /// integers.
        #[arg(long, value_enum, default_value_t = PrecisionArg::Float32)]
        precision: PrecisionArg,
        /// int8 / uint8: the ranges, a float32 .npy [2, dim] (per-dimension minima, then
        /// maxima: sentence-transformers' `ranges`) [default: the min and max of this input's
        /// own embeddings, as encode(precision=…) takes them].
        #[arg(long, value_name = "FILE.npy")]
        ranges: Option<PathBuf>,
        /// int8 / uint8: also write the ranges used to FILE.npy (to quantize queries alike).
        #[arg(long, value_name = "FILE.npy")]
        save_ranges: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print the similarity matrix of a few texts (by the model's similarity_fn_name: cosine,
    /// dot, or negated euclidean/manhattan distance).
    Similarity {
        /// Two or more texts.
        #[arg(required = true, num_args = 2..)]
        texts: Vec<String>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Find the corpus lines most similar to each query (by the model's similarity_fn_name:
    /// cosine unless it names dot, euclidean or manhattan); prints JSON lines. Queries
    /// get the model's "query" prompt and the corpus its "document" (or "passage", "corpus")
    /// prompt, as sentence-transformers' encode_query/encode_document, unless --prompt-name,
    /// --prompt or --no-prompt says what both get.
    Search {
        /// The corpus: one text per line.
        #[arg(long)]
        corpus: PathBuf,
        /// A query (repeat for several).
        #[arg(long, required = true)]
        query: Vec<String>,
        /// Hits per query.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Corpus embeddings (.npy): read if present, else saved, with FILE.npy.json beside it
        /// (what they came from: a matrix of other lines, model or options is refused).
        #[arg(long)]
        matrix: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print what a model is, as JSON: dim, max length, pooling, normalize, dtype, shape, files.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Measure throughput, latency and share of the FMA peak on a corpus (one text per line).
    Bench {
        /// The corpus: one text per line.
        #[arg(long, short)]
        input: PathBuf,
        /// Use only the first N texts.
        #[arg(long)]
        limit: Option<usize>,
        /// Timed passes over the corpus (the best one is reported), after one warm-up pass.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Texts encoded one at a time for the latency percentiles.
        #[arg(long, default_value_t = 200)]
        latency_texts: usize,
        /// Print one JSON line instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// `--shard I/N`: this run embeds text `j` iff `j % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shard {
    index: usize,
    count: usize,
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    let usage = || format!("{text:?} is not I/N (shard I of N, 0 <= I < N), e.g. 3/16");
    let (index, count) = text.split_once('/').ok_or_else(usage)?;
    let index: usize = index.trim().parse().map_err(|_| usage())?;
    let count: usize = count.trim().parse().map_err(|_| usage())?;
    if index >= count {
        return Err(usage());
    }
    Ok(Shard { index, count })
}

/// How `--input` files (and standard input) hold their texts.
#[derive(Clone, Copy, ValueEnum)]
pub enum InputFormat {
    /// One text per line (UTF-8; a trailing "\r" and a leading byte-order mark are dropped).
    Lines,
    /// JSON lines, each an object with a string field "text".
    Jsonl,
}

/// Everything the CLI reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Loading the model or embedding failed.
    #[error(transparent)]
    Ember(#[from] EmberError),
    /// An input line could not be read as a text (not UTF-8, bad JSON, no "text" field).
    #[error("{source_name}: line {line}: {message}")]
    Input {
        /// The input file's path, or `standard input`.
        source_name: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A text the embedder refused, `at` naming it (`FILE: line N`, `text argument N`).
    #[error("{at}: {message}")]
    Text {
        /// Where the text came from.
        at: String,
        /// The embedder's error.
        message: String,
    },
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file, or `standard input` / `standard output`.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Arguments that do not make a command (a bad `--shard`, no texts, …); the message says how.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// A failed write to standard output.
    fn stdout(source: std::io::Error) -> Self {
        CliError::Io {
            path: "standard output".into(),
            source,
        }
    }
}

fn load(args: &ModelArgs) -> Result<Embedder, CliError> {
    let mut builder = Embedder::builder()
        .batch_size(args.batch_size)
        .dtype(args.dtype.into())
        .device(args.device)
        .truncation(match args.truncation {
            TruncationArg::Truncate => Truncation::Truncate,
            TruncationArg::Error => Truncation::Error,
        });
    if let Some(threads) = args.threads {
        builder = builder.threads(threads);
    }
    if let Some(n) = args.truncate_dim {
        builder = builder.truncate_dim(n);
    }
    if let Some(name) = &args.prompt_name {
        builder = builder.default_prompt(Prompt::Named(name));
    } else if let Some(text) = &args.prompt {
        builder = builder.default_prompt(Prompt::Text(text));
    } else if args.no_prompt {
        builder = builder.default_prompt(Prompt::None);
    }
    if let Some(n) = args.max_seq_length {
        builder = builder.max_seq_length(n);
    }
    if args.normalize || args.no_normalize {
        builder = builder.normalize(args.normalize);
    }
    let bar = DownloadBar::new();
    builder = builder.hub(HubConfig::from_env().on_progress(move |p| bar.update(p)));
    Ok(builder.load(&args.model)?)
}

/// Texts per `encode_into` call in `embed`: output is written and progress shown between
/// calls. Embeddings do not depend on how texts are grouped, so this changes no number.
const EMBED_CHUNK_BATCHES: usize = 8;

/// Embeds `texts` (`[n, dim]` into `out`); a refused text becomes [`CliError::Text`] with
/// `name(i)` naming text `i`.
fn encode_named<S: AsRef<str> + Sync>(
    embedder: &Embedder,
    prompt: Prompt<'_>,
    texts: &[S],
    out: &mut [f32],
    name: impl Fn(usize) -> String,
) -> Result<(), CliError> {
    embedder
        .encode_into_with_prompt(prompt, texts, out)
        .map_err(|error| match error {
            EmberError::TooLong {
                index,
                tokens,
                max_seq_length,
            } => CliError::Text {
                at: name(index),
                message: format!(
                    "{tokens} tokens, more than the {max_seq_length} of --max-seq-length \
                 (--truncation error)"
                ),
            },
            EmberError::Tokenize { index, message } => CliError::Text {
                at: name(index),
                message: format!("cannot tokenize: {message}"),
            },
            other => CliError::Ember(other),
        })
}

/// [`encode_named`] into a new [`ember::Embeddings`].
fn encode_all(
    embedder: &Embedder,
    texts: &[String],
    name: impl Fn(usize) -> String,
) -> Result<ember::Embeddings, CliError> {
    encode_all_with_prompt(embedder, Prompt::Default, texts, name)
}

/// [`encode_all`] with `prompt` before every text.
fn encode_all_with_prompt(
    embedder: &Embedder,
    prompt: Prompt<'_>,
    texts: &[String],
    name: impl Fn(usize) -> String,
) -> Result<ember::Embeddings, CliError> {
    let mut data = vec![0f32; texts.len() * embedder.dim()];
    encode_named(embedder, prompt, texts, &mut data, name)?;
    Ok(ember::Embeddings::from_vec(
        data,
        texts.len(),
        embedder.dim(),
    )?)
}

/// Where and how `ember embed` writes its rows.
struct EmbedOutput<'a> {
    path: Option<&'a Path>,
    format: OutputFormat,
    /// `--precision` other than float32.
    quantize: Option<QuantizeArgs>,
}

/// `--precision int8|uint8|binary|ubinary` and its ranges.
struct QuantizeArgs {
    quantization: Quantization,
    /// `--ranges`, read; for int8 / uint8 without it, the input's own.
    ranges: Option<QuantizationRanges>,
    save_ranges: Option<PathBuf>,
}

/// `ember embed` after argument checks: `texts` named by `name`, this shard's rows written as
/// they are done (int8 / uint8 without `--ranges`: once all are, their ranges taken from them
/// all).
fn embed(
    embedder: &Embedder,
    texts: &[String],
    name: impl Fn(usize) -> String,
    shard: Option<Shard>,
    out: EmbedOutput<'_>,
) -> Result<(), CliError> {
    let Shard { index, count } = shard.unwrap_or(Shard { index: 0, count: 1 });
    let selected: Vec<usize> = (index..texts.len()).step_by(count).collect();
    let dim = embedder.dim();
    // Any --batch-size is accepted (the library takes any non-zero one): saturate rather than
    // wrap, and never make a chunk, or reserve room, for more texts than there are.
    let chunk_len = embedder
        .batch_size()
        .saturating_mul(EMBED_CHUNK_BATCHES)
        .min(selected.len())
        .max(1);
    let mut progress = Progress::new(selected.len());
    let mut chunk_texts: Vec<&str> = Vec::with_capacity(chunk_len);
    let mut encode_chunk = |chunk: &[usize], rows: &mut Vec<f32>| -> Result<(), CliError> {
        chunk_texts.clear();
        chunk_texts.extend(chunk.iter().map(|&j| texts[j].as_str()));
        rows.resize(chunk.len() * dim, 0.0);
        encode_named(embedder, Prompt::Default, &chunk_texts, rows, |i| {
            name(chunk[i])
        })
    };
    let Some(mut quantize) = out.quantize else {
        let mut writer =
            EmbeddingWriter::create(out.path, out.format, shard.is_some(), selected.len(), dim)?;
        if writer.writes_to_stderr() {
            // Not drawn into the rows themselves (`-o /dev/stderr`).
            progress = progress.hidden();
        }
        progress.update(0);
        let mut rows = Vec::new();
        for (c, chunk) in selected.chunks(chunk_len).enumerate() {
            encode_chunk(chunk, &mut rows)?;
            writer.write_rows(&rows, chunk)?;
            progress.update(c * chunk_len + chunk.len());
        }
        progress.finish();
        return writer.finish();
    };
    let quantization = quantize.quantization;
    let two_passes =
        quantization.needs_ranges() && quantize.ranges.is_none() && !selected.is_empty();
    if two_passes && shard.is_some() {
        return Err(CliError::Usage(format!(
            "--precision {} with --shard needs --ranges: each shard would take its own",
            quantization.name()
        )));
    }
    let element = match quantization.is_signed() {
        true => Element::I8,
        false => Element::U8,
    };
    let width = quantization.row_bytes(dim);
    // Created first: an output that cannot be written fails before any text is embedded.
    let mut writer = EmbeddingWriter::create_of(
        out.path,
        out.format,
        shard.is_some(),
        selected.len(),
        width,
        element,
    )?;
    if writer.writes_to_stderr() {
        progress = progress.hidden();
    }
    progress.update(0);
    // int8 / uint8 on the input's own ranges: every row first (sentence-transformers takes
    // the min and max over all the embeddings of the call).
    let mut all = Vec::new();
    if two_passes {
        let mut rows = Vec::new();
        all.reserve(selected.len() * dim);
        for chunk in selected.chunks(chunk_len) {
            encode_chunk(chunk, &mut rows)?;
            all.extend_from_slice(&rows);
            progress.update(all.len() / dim);
        }
        let embeddings = Embeddings::from_vec(all, selected.len(), dim)?;
        quantize.ranges = Some(
            QuantizationRanges::from_embeddings(&embeddings).map_err(|e| {
                CliError::Usage(format!(
                    "--precision {}: {e} (give --ranges from embeddings like these)",
                    quantization.name()
                ))
            })?,
        );
        all = embeddings.into_vec();
    }
    if let (Some(path), Some(ranges)) = (&quantize.save_ranges, &quantize.ranges) {
        // Always .npy, whatever the name: what --ranges reads.
        let mut ranges_out = EmbeddingWriter::create(Some(path), OutputFormat::Npy, false, 2, dim)?;
        ranges_out.write_rows(&[ranges.min(), ranges.max()].concat(), &[0, 1])?;
        ranges_out.finish()?;
    }
    let mut rows = Vec::new();
    let mut bytes = Vec::new();
    for (c, chunk) in selected.chunks(chunk_len).enumerate() {
        let floats: &[f32] = if two_passes {
            &all[c * chunk_len * dim..(c * chunk_len + chunk.len()) * dim]
        } else {
            encode_chunk(chunk, &mut rows)?;
            progress.update(c * chunk_len + chunk.len());
            &rows
        };
        bytes.resize(chunk.len() * width, 0);
        ember::quantize::quantize_into(
            floats,
            dim,
            quantization,
            quantize.ranges.as_ref(),
            &mut bytes,
        )?;
        writer.write_byte_rows(&bytes, chunk)?;
    }
    progress.finish();
    writer.finish()
}

/// `--ranges FILE.npy`: float32 `[2, dim]`, minima then maxima.
fn read_ranges(path: &Path, dim: usize) -> Result<QuantizationRanges, CliError> {
    let matrix = output::parse_npy(path, &read_file(path)?)?;
    if (matrix.len(), matrix.dim()) != (2, dim) {
        return Err(CliError::Usage(format!(
            "{}: ranges are [2, dim] (minima, then maxima); this holds [{}, {}], the model \
             gives {dim} values a text",
            path.display(),
            matrix.len(),
            matrix.dim()
        )));
    }
    QuantizationRanges::new(matrix.row(0).to_vec(), matrix.row(1).to_vec())
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// `ember info`: the model's metadata as one JSON object.
fn info(args: &ModelArgs) -> Result<(), CliError> {
    let embedder = load(args)?;
    let info = embedder.info();
    let json = serde_json::json!({
        "model": args.model,
        "model_dir": info.model_dir.display().to_string(),
        "weights_file": info.weights_file.display().to_string(),
        "dim": info.dim,
        "max_seq_length": info.max_seq_length,
        "max_position_embeddings": info.max_position_embeddings,
        "pooling": info.pooling,
        "include_prompt": info.include_prompt,
        "normalize": info.normalize,
        "unit_length": info.unit_length,
        "truncation": match info.truncation {
            Truncation::Truncate => "truncate",
            Truncation::Error => "error",
        },
        "dtype": info.dtype.name(),
        "device": info.device.to_string(),
        "layers": info.layers,
        "hidden_size": info.hidden_size,
        "attention_heads": info.attention_heads,
        "intermediate_size": info.intermediate_size,
        "vocab_size": info.vocab_size,
        "fast_tokenizer": info.fast_tokenizer,
        "tokenizer_fallback": info.tokenizer_fallback,
        "tokenizer_class": info.tokenizer_class,
        "prompts": embedder.prompts(),
        "default_prompt": embedder.default_prompt(),
        "similarity": embedder.similarity().name(),
        "architecture": info.architecture,
        "positions": info.positions,
        "dense": info.dense.iter().map(|&(i, o)| serde_json::json!({"in": i, "out": o})).collect::<Vec<_>>(),
        "threads": embedder.threads(),
        "batch_size": embedder.batch_size(),
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer_pretty(&mut out, &json)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
        .map_err(CliError::stdout)
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Embed {
            model,
            texts,
            input,
            input_format,
            output,
            output_format,
            shard,
            precision,
            ranges,
            save_ranges,
        } => {
            let (source, texts) = match (texts.is_empty(), input) {
                (false, Some(_)) => {
                    return Err(CliError::Usage(
                        "give texts as arguments or with --input, not both".into(),
                    ))
                }
                (false, None) => (None, texts),
                (true, input) => {
                    let Shard { index, count } = shard.unwrap_or(Shard { index: 0, count: 1 });
                    let (name, texts) =
                        input::read_named_texts(input.as_deref(), input_format, |j| {
                            j % count == index
                        })?;
                    (Some(name), texts)
                }
            };
            let name = |j: usize| match &source {
                Some(source) => format!("{source}: line {}", j + 1),
                None => format!("text argument {}", j + 1),
            };
            let format = output_format.unwrap_or(OutputFormat::from_path(output.as_deref()));
            let quantization = precision.quantization();
            if quantization.is_none_or(|q| !q.needs_ranges())
                && (ranges.is_some() || save_ranges.is_some())
            {
                return Err(CliError::Usage(
                    "--ranges and --save-ranges are for --precision int8 or uint8".into(),
                ));
            }
            let embedder = load(&model)?;
            let quantize = match quantization {
                None => None,
                Some(quantization) => Some(QuantizeArgs {
                    quantization,
                    ranges: ranges
                        .as_deref()
                        .map(|path| read_ranges(path, embedder.dim()))
                        .transpose()?,
                    save_ranges,
                }),
            };
            let out = EmbedOutput {
                path: output.as_deref(),
                format,
                quantize,
            };
            embed(&embedder, &texts, name, shard, out)
        }
        Command::Info { model } => info(&model),
        Command::Similarity { model, texts } => {
            let embedder = load(&model)?;
            let embeddings = encode_all(&embedder, &texts, |i| format!("text argument {}", i + 1))?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            output::write_similarity(&mut out, &texts, &embeddings, embedder.similarity())
                .map_err(CliError::stdout)?;
            out.flush().map_err(CliError::stdout)
        }
        Command::Search {
            model,
            corpus,
            query,
            top_k,
            matrix,
        } => search(&model, &corpus, &query, top_k, matrix.as_deref()),
        Command::Bench {
            model,
            input,
            limit,
            repeats,
            latency_texts,
            json,
        } => {
            let mut texts = input::read_texts(Some(&input), InputFormat::Lines)?;
            texts.truncate(limit.unwrap_or(usize::MAX));
            let start = std::time::Instant::now();
            let embedder = load(&model)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let options = bench::BenchOptions {
                repeats,
                latency_texts,
            };
            // A reduced precision is measured against the same model in f32, in one run.
            let baseline = match model.dtype {
                Dtype::F32 => None,
                _ => Some(load(&ModelArgs {
                    dtype: Dtype::F32,
                    model: model.model.clone(),
                    ..model
                })?),
            };
            let report = bench::run_bench(
                &model.model,
                &embedder,
                baseline.as_ref(),
                load_ms,
                &texts,
                &options,
            )?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if json {
                writeln!(out, "{report}")
            } else {
                writeln!(out, "{}", bench::describe(&report))
            }
            .and_then(|()| out.flush())
            .map_err(CliError::stdout)
        }
    }
}

/// Where `ember search` keeps what a `--matrix` was computed from: `FILE.npy.json` beside it
/// (not in the .npy header, whose keys NumPy checks).
fn fingerprint_path(matrix: &Path) -> PathBuf {
    let mut name = matrix.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// What a corpus matrix depends on: the corpus (its lines, hashed), the model's files and the
/// options that change the rows (dtype, device, pooling, normalisation, length, the corpus's
/// prompt, width). The weights file is named by path, size and modification time, not hashed (a
/// second per GB); the folder's other files (configs, tokenizer, module folders) are hashed
/// ([`model_files_sha256`]).
fn matrix_fingerprint(
    embedder: &ember::Embedder,
    texts: &[String],
    prompt: Option<&str>,
) -> serde_json::Value {
    use sha2::Digest;
    let mut corpus = sha2::Sha256::new();
    for text in texts {
        corpus.update((text.len() as u64).to_le_bytes());
        corpus.update(text.as_bytes());
    }
    let corpus_sha256 = hex(&corpus.finalize());
    let info = embedder.info();
    // Spelled as the file system resolves them: `-m m`, `-m ./m/` and an absolute path are
    // one model.
    let canonical = |path: &Path| {
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string()
    };
    let weights = std::fs::metadata(&info.weights_file).ok();
    let modified = weights
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string());
    serde_json::json!({
        "corpus_lines": texts.len(),
        "corpus_sha256": corpus_sha256,
        "model_dir": canonical(&info.model_dir),
        "weights_file": canonical(&info.weights_file),
        "weights_bytes": weights.map(|m| m.len()),
        "weights_modified_ns": modified,
        "model_files_sha256": model_files_sha256(&info.model_dir, &info.weights_file),
        "dim": info.dim,
        "max_seq_length": info.max_seq_length,
        "pooling": info.pooling,
        "include_prompt": info.include_prompt,
        "normalize": info.normalize,
        // --normalize also renormalises rows a truncate_dim cut: not the same rows as the
        // folder's own Normalize gives (and where nothing is cut, the same rows whether asked
        // or not).
        "unit_length": info.unit_length,
        "dtype": info.dtype.name(),
        "device": info.device.to_string(),
        "corpus_prompt": prompt,
    })
}

/// Files past this size are left out of [`model_files_sha256`] (weights in other formats:
/// ONNX or OpenVINO exports a hub folder may hold beside the safetensors).
const MODEL_FILE_HASH_MAX: u64 = 64 << 20;

/// The sha256 of the model folder's files but the weights file (and hidden ones, and files
/// over [`MODEL_FILE_HASH_MAX`]): each relative path and its bytes, in path order, symlinks
/// followed (a hub snapshot's files are links into its blobs). A configuration or tokenizer
/// file edited after a matrix was saved changes it. `None` if the folder cannot be read.
fn model_files_sha256(dir: &Path, weights: &Path) -> Option<String> {
    use sha2::Digest;
    let weights = std::fs::canonicalize(weights).ok();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).ok()? {
            let path = entry.ok()?.path();
            if path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let meta = std::fs::metadata(&path).ok()?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.len() <= MODEL_FILE_HASH_MAX
                && std::fs::canonicalize(&path).ok() != weights
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hash = sha2::Sha256::new();
    for path in files {
        let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy();
        let bytes = std::fs::read(&path).ok()?;
        hash.update((relative.len() as u64).to_le_bytes());
        hash.update(relative.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Some(hex(&hash.finalize()))
}

/// Fingerprint keys newer than fingerprints: a saved one without them was written by an
/// earlier Ember, and they are left unchecked (with a warning) rather than refusing it.
const NEWER_FINGERPRINT_KEYS: [&str; 1] = ["model_files_sha256"];

/// `bytes` in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a matrix file's bytes, in hex: ties a fingerprint to the one matrix it was
/// written with (another run's matrix under the same name does not match it).
fn matrix_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The bytes of the file at `path`.
fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Refuses a saved matrix whose fingerprint (see [`matrix_fingerprint`]) differs from this
/// run's, naming what changed, or was written with another matrix file (`matrix_sha256`);
/// one without a fingerprint (written before Ember kept them) is used with a warning that it
/// could not be checked.
fn check_fingerprint(
    matrix: &Path,
    matrix_bytes: &[u8],
    fingerprint: &serde_json::Value,
) -> Result<(), CliError> {
    let path = fingerprint_path(matrix);
    let saved: serde_json::Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Usage(format!("{}: not a fingerprint: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "ember: {} has no fingerprint beside it ({}): it is used as it is, unchecked \
                 against the corpus and model (delete it to recompute it)",
                matrix.display(),
                path.display()
            );
            return Ok(());
        }
        Err(source) => {
            return Err(CliError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let unchecked: Vec<&str> = NEWER_FINGERPRINT_KEYS
        .into_iter()
        .filter(|key| saved.get(key).is_none())
        .collect();
    if !unchecked.is_empty() {
        eprintln!(
            "ember: {} was written by an earlier Ember, without {}: those are not checked \
             (delete the matrix to recompute it)",
            path.display(),
            unchecked.join(", ")
        );
    }
    let mut changed: Vec<&str> = fingerprint
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| {
            // Fingerprints from before include_prompt was read were all of including ones.
            let default =
                (key.as_str() == "include_prompt").then_some(&serde_json::Value::Bool(true));
            !unchecked.contains(&key.as_str())
                && saved.get(key.as_str()).or(default) != Some(*value)
        })
        .map(|(key, _)| key.as_str())
        .collect();
    if saved
        .get("matrix_sha256")
        .and_then(serde_json::Value::as_str)
        != Some(matrix_sha256(matrix_bytes).as_str())
    {
        changed.push("matrix_sha256");
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "{} was computed from another corpus, model or options (changed: {}; see {}): \
         delete it to recompute it",
        matrix.display(),
        changed.join(", "),
        path.display()
    )))
}

/// `ember search`: the `top_k` corpus lines nearest each query, as JSON lines; the corpus
/// embeddings come from `matrix` when it exists and are saved there otherwise.
fn search(
    model: &ModelArgs,
    corpus: &Path,
    query: &[String],
    top_k: usize,
    matrix: Option<&Path>,
) -> Result<(), CliError> {
    let texts = input::read_texts(Some(corpus), InputFormat::Lines)?;
    if matrix.is_some_and(|m| !m.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))) {
        return Err(CliError::Usage("--matrix must name a .npy file".into()));
    }
    let embedder = load(model)?;
    // As sentence-transformers' encode_query and encode_document, unless a prompt option
    // says otherwise for both: the queries with the `query` prompt, the corpus with the first
    // of `document`, `passage` and `corpus` the model has (every model has `document`, empty
    // unless its folder sets it, so a folder with only `passage` gets no corpus prompt there,
    // as in sentence-transformers).
    let explicit = model.prompt_name.is_some() || model.prompt.is_some() || model.no_prompt;
    let (query_prompt, corpus_prompt) = if explicit {
        (Prompt::Default, Prompt::Default)
    } else {
        let document = ["document", "passage", "corpus"]
            .into_iter()
            .find(|name| embedder.prompts().contains_key(*name))
            .unwrap_or("document");
        (Prompt::Named("query"), Prompt::Named(document))
    };
    let corpus_prompt_text = embedder.prompt_text(corpus_prompt)?;
    let fingerprint = matrix_fingerprint(&embedder, &texts, corpus_prompt_text);
    let corpus_embeddings = match matrix {
        Some(path) if path.exists() => {
            // Read once: parsed, and hashed for the fingerprint.
            let bytes = read_file(path)?;
            let saved = output::parse_npy(path, &bytes)?;
            if (saved.len(), saved.dim()) != (texts.len(), embedder.dim()) {
                return Err(CliError::Usage(format!(
                    "{}: holds {} rows of {}, but the corpus has {} lines and the model \
                     gives {} values a text (delete the file to recompute it)",
                    path.display(),
                    saved.len(),
                    saved.dim(),
                    texts.len(),
                    embedder.dim()
                )));
            }
            check_fingerprint(path, &bytes, &fingerprint)?;
            saved
        }
        _ => {
            let computed = encode_all_with_prompt(&embedder, corpus_prompt, &texts, |i| {
                format!("{}: line {}", corpus.display(), i + 1)
            })?;
            if let Some(path) = matrix {
                output::write_embeddings(&computed, Some(path))?;
                let mut fingerprint = fingerprint;
                fingerprint["matrix_sha256"] = matrix_sha256(&read_file(path)?).into();
                output::write_json_file(&fingerprint_path(path), &fingerprint)?;
            }
            computed
        }
    };
    let queries = encode_all_with_prompt(&embedder, query_prompt, query, |i| {
        format!("query {}", i + 1)
    })?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (q, text) in query.iter().enumerate() {
        let hits = ember::similarity::top_k_by(
            embedder.similarity(),
            queries.row(q),
            &corpus_embeddings,
            top_k,
        );
        for (rank, (index, score)) in hits.into_iter().enumerate() {
            let line = serde_json::json!({
                "query": text,
                "rank": rank + 1,
                "line": index + 1,
                "score": score,
                "text": texts[index],
            });
            writeln!(out, "{line}").map_err(CliError::stdout)?;
        }
    }
    out.flush().map_err(CliError::stdout)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ember: error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
