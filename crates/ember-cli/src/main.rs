//! `ember`: sentence embeddings from the command line.
//!
//! ```text
//! ember embed --model <DIR|org/name> [TEXT…] [--input FILE] [--input-format lines|jsonl]
//!             [--output FILE] [--batch-size N] [--threads N] [--dtype f32|bf16|int8]
//! ember similarity --model <DIR|org/name> TEXT TEXT…
//! ember search --model <DIR|org/name> --corpus FILE --query TEXT [--query TEXT…] [--top-k K]
//!              [--matrix FILE.npy]
//! ember bench --model <DIR|org/name> --input FILE [--batch-size N] [--threads N] [--limit N]
//!             [--repeats R] [--latency-texts L] [--json]
//! ```
//! `embed` writes JSON lines (one array per text, input order) to stdout, or to `--output`; an
//! `--output` ending in `.npy` gets a float32 `[n, dim]` array. Output files are written to a
//! temporary name and renamed only once complete, so a failed run leaves nothing behind.

mod bench;
mod input;
mod output;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ember::{Embedder, EmberError};

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Sentence embeddings from sentence-transformers models, in pure Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Model folder, or a hub id (org/name) already in the local Hugging Face cache.
    #[arg(long, short)]
    model: String,
    /// Texts per forward pass.
    #[arg(long, default_value_t = ember::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Precision of the matrix products: f32 (exact, the default), bf16 (about twice as
    /// fast on CPUs with AVX512_BF16; cosine ≥ 0.999 to f32) or int8 (weights per channel,
    /// activations per token; fastest on CPUs with AVX512_VNNI; cosine ≥ 0.99 to f32).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// `--dtype` values.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    Int8,
}

impl From<Dtype> for ember::Precision {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => ember::Precision::F32,
            Dtype::Bf16 => ember::Precision::Bf16,
            Dtype::Int8 => ember::Precision::Int8,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts: positional arguments, --input FILE, or standard input.
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        /// Texts to embed (instead of --input / standard input).
        texts: Vec<String>,
        /// Read texts from FILE ("-" for standard input).
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// One text per line, or JSON lines with a "text" field.
        #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
        input_format: InputFormat,
        /// Write to FILE instead of standard output; `.npy` gives a float32 [n, dim] array.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the cosine similarity matrix of a few texts.
    Similarity {
        #[command(flatten)]
        model: ModelArgs,
        /// Two or more texts.
        #[arg(required = true, num_args = 2..)]
        texts: Vec<String>,
    },
    /// Find the corpus lines most similar (cosine) to each query; prints JSON lines.
    Search {
        #[command(flatten)]
        model: ModelArgs,
        /// The corpus: one text per line.
        #[arg(long)]
        corpus: PathBuf,
        /// A query (repeat for several).
        #[arg(long, required = true)]
        query: Vec<String>,
        /// Hits per query.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// The corpus embeddings as a float32 .npy: read if the file exists (its rows must
        /// match the corpus lines: delete it when the corpus changes), else computed and
        /// written there for the next search.
        #[arg(long)]
        matrix: Option<PathBuf>,
    },
    /// Measure throughput, latency and share of the FMA peak on a corpus (one text per line).
    Bench {
        #[command(flatten)]
        model: ModelArgs,
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
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum InputFormat {
    /// One text per line (UTF-8; a trailing "\r" is dropped).
    Lines,
    /// JSON lines, each an object with a string field "text".
    Jsonl,
}

/// Everything the CLI reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Ember(#[from] EmberError),
    #[error("{source_name}: line {line}: {message}")]
    Input {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
        .dtype(args.dtype.into());
    if let Some(threads) = args.threads {
        builder = builder.threads(threads);
    }
    Ok(builder.load(&args.model)?)
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Embed {
            model,
            texts,
            input,
            input_format,
            output,
        } => {
            let texts = match (texts.is_empty(), input) {
                (false, Some(_)) => {
                    return Err(CliError::Usage(
                        "give texts as arguments or with --input, not both".into(),
                    ))
                }
                (false, None) => texts,
                (true, input) => input::read_texts(input.as_deref(), input_format)?,
            };
            let embedder = load(&model)?;
            let embeddings = embedder.encode(&texts)?;
            output::write_embeddings(&embeddings, output.as_deref())
        }
        Command::Similarity { model, texts } => {
            let embedder = load(&model)?;
            let embeddings = embedder.encode(&texts)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            output::write_similarity(&mut out, &texts, &embeddings).map_err(CliError::stdout)?;
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
            if json {
                println!("{report}");
            } else {
                println!("{}", bench::describe(&report));
            }
            Ok(())
        }
    }
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
    let corpus_embeddings = match matrix {
        Some(path) if path.exists() => {
            let saved = output::read_npy(path)?;
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
            saved
        }
        _ => {
            let computed = embedder.encode(&texts)?;
            if let Some(path) = matrix {
                output::write_embeddings(&computed, Some(path))?;
            }
            computed
        }
    };
    let queries = embedder.encode(query)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (q, text) in query.iter().enumerate() {
        let hits = ember::similarity::top_k(queries.row(q), &corpus_embeddings, top_k);
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
