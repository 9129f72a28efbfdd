//! sentence-transformers pooling and normalisation over Ember's packed layout.
//!
//! Input: the encoder's last hidden state `[T, H]` for a packed batch (sequences concatenated,
//! no padding) and `seq_offsets` (`len = n + 1`, sequence `s` is rows
//! `seq_offsets[s]..seq_offsets[s + 1]`). Output: `[n, modes · H]`, one block of `H` per mode,
//! in the order the configuration lists them — what `sentence_transformers.models.Pooling` gives.
//!
//! For a sequence of `L` tokens `x_1 … x_L` (all real: packing means there is no mask):
//! - `cls`: `x_1`;  `lasttoken`: `x_L`;
//! - `max`: element-wise `max_i x_i`;
//! - `mean`: `Σ x_i / L`;  `mean_sqrt_len_tokens`: `Σ x_i / √L`;
//! - `weightedmean`: `Σ i·x_i / Σ i` (weights are 1-based positions, as in sentence-transformers).
//!
//! With `include_prompt: false` ([`pool_excluding`]) the first `p` tokens of each sequence (the
//! prompt's, as sentence-transformers counts them) are masked out of every mode, as its
//! `Pooling` zeroes them in the attention mask: the modes run over `x_{p+1} … x_L`, and
//! `weightedmean` keeps those tokens' original weights `p+1 … L`. A sequence with no token left
//! pools as sentence-transformers' all-zero mask does: zeros for the means and `lasttoken`,
//! `x_1` for `cls` (the mask's `argmax` is 0), `-inf` for `max`.
//!
//! Sums are accumulated in f64 and rounded once, so a row never depends on the batch around it.
//! [`normalize_rows`] is sentence-transformers' `Normalize` module: `x / max(‖x‖₂, 1e-12)`.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Errors reading a pooling configuration or pooling a batch.
#[derive(Debug, thiserror::Error)]
pub enum PoolingError {
    /// The configuration file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The configuration file (`1_Pooling/config.json`).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not JSON.
    #[error("{path}: not valid JSON: {source}")]
    Json {
        /// The configuration file.
        path: PathBuf,
        /// The JSON parser's error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is JSON but not one Ember can use: no embedding dimension, an unknown
    /// mode, a mode key that is not a boolean…
    #[error("{path}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, in words.
        message: String,
    },
    /// [`pool`]'s buffers disagree with the configuration or the offsets (wrong lengths, offsets
    /// not starting at 0, an empty or reversed sequence, an `embedding_dimension` of 0); the
    /// message says which.
    #[error("pooling: {0}")]
    Shape(String),
}

/// One sentence-transformers pooling mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolingMode {
    /// The first token's row (`[CLS]`): `x_1`.
    Cls,
    /// Element-wise maximum over the tokens (NaN propagates, as in torch).
    Max,
    /// Mean over the tokens: `Σ x_i / L`.
    Mean,
    /// Sum over the tokens divided by the square root of their count: `Σ x_i / √L`.
    MeanSqrtLen,
    /// Position-weighted mean: `Σ i·x_i / Σ i`, with 1-based positions `i`.
    WeightedMean,
    /// The last token's row: `x_L`.
    LastToken,
}

impl PoolingMode {
    /// The legacy `pooling_mode_*` boolean keys, in the order sentence-transformers concatenates them.
    const LEGACY_KEYS: [(&'static str, PoolingMode); 6] = [
        ("pooling_mode_cls_token", PoolingMode::Cls),
        ("pooling_mode_max_tokens", PoolingMode::Max),
        ("pooling_mode_mean_tokens", PoolingMode::Mean),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            PoolingMode::MeanSqrtLen,
        ),
        (
            "pooling_mode_weightedmean_tokens",
            PoolingMode::WeightedMean,
        ),
        ("pooling_mode_lasttoken", PoolingMode::LastToken),
    ];

    /// The mode's name in sentence-transformers' `pooling_mode` key.
    ///
    /// ```
    /// use ember_pooling::PoolingMode;
    ///
    /// assert_eq!(PoolingMode::MeanSqrtLen.name(), "mean_sqrt_len_tokens");
    /// assert_eq!(PoolingMode::from_name("weightedmean"), Some(PoolingMode::WeightedMean));
    /// assert_eq!(PoolingMode::from_name("median"), None);
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::Mean => "mean",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
        }
    }

    /// Parses a `pooling_mode` name (the inverse of [`PoolingMode::name`]); `None` for a name
    /// sentence-transformers does not define.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::LEGACY_KEYS
            .iter()
            .map(|&(_, mode)| mode)
            .find(|mode| mode.name() == name)
    }
}

impl std::fmt::Display for PoolingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A `1_Pooling/config.json`: the token embedding size and the modes, in output order.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolingConfig {
    /// `H`, the width of one token's hidden state (the model's hidden size).
    pub embedding_dimension: usize,
    /// The modes, in the order their `H`-wide blocks appear in a pooled row; never empty when
    /// parsed from a file (no mode means `mean`).
    pub modes: Vec<PoolingMode>,
    /// `include_prompt` (default true): false leaves a prompt's tokens out of the pooling (see
    /// [`pool_excluding`]).
    pub include_prompt: bool,
}

impl PoolingConfig {
    /// Mean pooling: what sentence-transformers uses for a plain transformers folder.
    pub fn mean(embedding_dimension: usize) -> Self {
        Self {
            embedding_dimension,
            modes: vec![PoolingMode::Mean],
            include_prompt: true,
        }
    }

    /// Reads `1_Pooling/config.json`.
    pub fn from_file(path: &Path) -> Result<Self, PoolingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PoolingError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses a pooling config. Both formats are accepted: the legacy one with
    /// `word_embedding_dimension` and `pooling_mode_*` booleans (each off unless set true but
    /// `pooling_mode_mean_tokens`, on unless set false, as sentence-transformers' `Pooling`
    /// constructor defaults them; none on is refused), and the current one with `embedding_dimension` and `pooling_mode`
    /// (a name or a list of names, kept in the order given). `path` only names the file in errors.
    ///
    /// # Errors
    ///
    /// [`PoolingError::Json`] when `text` is not JSON, [`PoolingError::Invalid`] when it is not a
    /// pooling configuration Ember supports.
    ///
    /// ```
    /// use std::path::Path;
    /// use ember_pooling::{PoolingConfig, PoolingMode};
    ///
    /// let text = r#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#;
    /// let config = PoolingConfig::from_json_str(text, Path::new("1_Pooling/config.json"))?;
    /// assert_eq!(config.modes, [PoolingMode::Mean]);
    /// assert_eq!(config.output_dim(), 384);
    ///
    /// let text = r#"{"embedding_dimension": 384, "pooling_mode": ["cls", "max"]}"#;
    /// let config = PoolingConfig::from_json_str(text, Path::new("1_Pooling/config.json"))?;
    /// assert_eq!(config.output_dim(), 2 * 384);
    /// # Ok::<(), ember_pooling::PoolingError>(())
    /// ```
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, PoolingError> {
        let invalid = |message: String| PoolingError::Invalid {
            path: path.to_owned(),
            message,
        };
        let value: Value = serde_json::from_str(text).map_err(|source| PoolingError::Json {
            path: path.to_owned(),
            source,
        })?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;

        let dim_value = object
            .get("embedding_dimension")
            .or_else(|| object.get("word_embedding_dimension"))
            .ok_or_else(|| invalid("missing \"word_embedding_dimension\"".into()))?;
        let embedding_dimension = dim_value
            .as_u64()
            .filter(|&d| d > 0 && d <= 1 << 20)
            .ok_or_else(|| {
                invalid(format!(
                    "embedding dimension {dim_value} is not a positive integer ≤ 2^20"
                ))
            })? as usize;

        let include_prompt = match object.get("include_prompt") {
            None => true,
            Some(Value::Bool(include)) => *include,
            Some(other) => {
                return Err(invalid(format!(
                    "\"include_prompt\" must be true or false, found {other}"
                )))
            }
        };

        let modes = match object.get("pooling_mode") {
            Some(Value::String(name)) => vec![Self::parse_mode(name, path)?],
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| match name {
                    Value::String(name) => Self::parse_mode(name, path),
                    other => Err(invalid(format!("pooling mode {other} is not a string"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "\"pooling_mode\" must be a name or a list of names, found {other}"
                )))
            }
            // No mode key at all: the Pooling constructor's default, mean.
            // sentence-transformers' Pooling(**config): every flag off unless the file says
            // true, but for pooling_mode_mean_tokens, on unless it says false.
            None => {
                let mut modes = Vec::new();
                for (key, mode) in PoolingMode::LEGACY_KEYS {
                    let default = mode == PoolingMode::Mean;
                    match object.get(key) {
                        None | Some(Value::Null) if default => modes.push(mode),
                        None | Some(Value::Bool(false)) | Some(Value::Null) => {}
                        Some(Value::Bool(true)) => modes.push(mode),
                        Some(other) => {
                            return Err(invalid(format!(
                                "\"{key}\" must be true or false, found {other}"
                            )))
                        }
                    }
                }
                modes
            }
        };
        if modes.is_empty() {
            // None on (mean said false too): sentence-transformers would make a sentence
            // embedding of width 0 (and fail to concatenate none).
            return Err(invalid(
                "no pooling mode is on (an empty \"pooling_mode\" list, or pooling_mode_mean_tokens and every other pooling_mode_* key false)"
                    .into(),
            ));
        }
        Ok(Self {
            embedding_dimension,
            modes,
            include_prompt,
        })
    }

    fn parse_mode(name: &str, path: &Path) -> Result<PoolingMode, PoolingError> {
        PoolingMode::from_name(name).ok_or_else(|| PoolingError::Invalid {
            path: path.to_owned(),
            message: format!(
                "unknown pooling mode {name:?} (known: cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken)"
            ),
        })
    }

    /// Width of a pooled row: `modes · embedding_dimension`.
    pub fn output_dim(&self) -> usize {
        self.modes.len() * self.embedding_dimension
    }
}

/// Pools a packed batch: `hidden` is `[T, H]`, `seq_offsets` describes the sequences, `out` is
/// `[n, modes · H]`. Every sequence must hold at least one token. Everything is checked before
/// anything is written: on an error `out` is left as it was.
///
/// # Errors
///
/// [`PoolingError::Shape`] when `H` is 0, `seq_offsets` does not start at 0, a sequence is
/// empty or reversed, or `hidden` / `out` do not have `T · H` / `n · modes · H` values (`T`
/// being the last offset).
///
/// ```
/// use ember_pooling::{pool, PoolingConfig, PoolingMode};
///
/// // H = 2; two sequences packed back to back: tokens 0..2 and 2..3.
/// let hidden = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0];
/// let seq_offsets = [0, 2, 3];
/// let config = PoolingConfig {
///     embedding_dimension: 2,
///     modes: vec![PoolingMode::Mean, PoolingMode::Cls],
///     include_prompt: true,
/// };
/// let mut out = [0.0; 2 * 4];
/// pool(&config, &hidden, &seq_offsets, &mut out)?;
/// assert_eq!(out, [2.0, -1.0, 1.0, 2.0, /* second sequence */ 5.0, 6.0, 5.0, 6.0]);
///
/// // Offsets that run past `T` and back are refused, and `out` is untouched.
/// assert!(pool(&config, &hidden, &[0, 5, 3], &mut out).is_err());
/// assert_eq!(out, [2.0, -1.0, 1.0, 2.0, 5.0, 6.0, 5.0, 6.0]);
/// # Ok::<(), ember_pooling::PoolingError>(())
/// ```
pub fn pool(
    config: &PoolingConfig,
    hidden: &[f32],
    seq_offsets: &[usize],
    out: &mut [f32],
) -> Result<(), PoolingError> {
    pool_excluding(config, hidden, seq_offsets, 0, out)
}

/// [`pool`] with the first `excluded` tokens of every sequence masked out, as
/// sentence-transformers' `Pooling` with `include_prompt: false` masks a prompt of `excluded`
/// tokens (its `prompt_length`: the prompt tokenized alone, special tokens included, less a
/// trailing special token). See the crate docs for a sequence with no token left. `excluded`
/// 0 is [`pool`].
///
/// ```
/// use ember_pooling::{pool_excluding, PoolingConfig, PoolingMode};
///
/// // H = 1; one sequence of 4 tokens, the first 2 a prompt's.
/// let hidden = [10.0, 20.0, 1.0, 3.0];
/// let config = PoolingConfig {
///     embedding_dimension: 1,
///     modes: vec![PoolingMode::Cls, PoolingMode::Mean, PoolingMode::WeightedMean],
///     include_prompt: false,
/// };
/// let mut out = [0.0; 3];
/// pool_excluding(&config, &hidden, &[0, 4], 2, &mut out)?;
/// // cls: the first token after the prompt; weights 3 and 4: (3·1 + 4·3) / 7.
/// assert_eq!(out, [1.0, 2.0, 15.0 / 7.0]);
/// # Ok::<(), ember_pooling::PoolingError>(())
/// ```
pub fn pool_excluding(
    config: &PoolingConfig,
    hidden: &[f32],
    seq_offsets: &[usize],
    excluded: usize,
    out: &mut [f32],
) -> Result<(), PoolingError> {
    let h = config.embedding_dimension;
    if h == 0 {
        return Err(PoolingError::Shape(
            "embedding_dimension must be > 0".into(),
        ));
    }
    let out_dim = config.modes.len().checked_mul(h).ok_or_else(|| {
        PoolingError::Shape(format!(
            "{} modes × embedding_dimension {h} overflows",
            config.modes.len()
        ))
    })?;
    let n = seq_offsets.len().saturating_sub(1);
    let tokens = seq_offsets.last().copied().unwrap_or(0);
    if seq_offsets.first().is_some_and(|&first| first != 0) {
        return Err(PoolingError::Shape("seq_offsets must start at 0".into()));
    }
    // Strictly increasing offsets that end at `T` keep every sequence's rows inside `hidden`.
    if let Some((s, window)) = seq_offsets
        .windows(2)
        .enumerate()
        .find(|(_, w)| w[1] <= w[0])
    {
        return Err(PoolingError::Shape(format!(
            "sequence {s} is empty or reversed ({}..{})",
            window[0], window[1]
        )));
    }
    if tokens.checked_mul(h) != Some(hidden.len()) {
        return Err(PoolingError::Shape(format!(
            "hidden has {} values, expected {tokens} tokens × {h}",
            hidden.len()
        )));
    }
    if n.checked_mul(out_dim) != Some(out.len()) {
        return Err(PoolingError::Shape(format!(
            "output has {} values, expected {n} × {out_dim}",
            out.len()
        )));
    }
    let sequences = seq_offsets
        .windows(2)
        .zip(out.chunks_exact_mut(out_dim.max(1)));
    for (window, out_row) in sequences {
        let rows = &hidden[window[0] * h..window[1] * h];
        for (mode, block) in config.modes.iter().zip(out_row.chunks_exact_mut(h)) {
            pool_sequence(*mode, rows, h, excluded, block);
        }
    }
    Ok(())
}

/// One mode over one sequence: `rows` is `[L, H]` with `L ≥ 1`, `out` is `[H]`; the first
/// `excluded` rows are masked out (see the crate docs).
fn pool_sequence(mode: PoolingMode, rows: &[f32], h: usize, excluded: usize, out: &mut [f32]) {
    let len = rows.len() / h;
    // Positions (0-based) of the tokens pooled: [first, len).
    let first = excluded.min(len);
    let kept = &rows[first * h..];
    if kept.is_empty() {
        // sentence-transformers over an all-zero mask: argmax picks position 0 for cls,
        // masked_fill(-inf) leaves -inf for max, the rest sum or gather zeros.
        match mode {
            PoolingMode::Cls => out.copy_from_slice(&rows[..h]),
            PoolingMode::Max => out.fill(f32::NEG_INFINITY),
            _ => out.fill(0.0),
        }
        return;
    }
    let count = len - first;
    match mode {
        PoolingMode::Cls => out.copy_from_slice(&kept[..h]),
        PoolingMode::LastToken => out.copy_from_slice(&rows[(len - 1) * h..]),
        PoolingMode::Max => {
            out.copy_from_slice(&kept[..h]);
            for row in kept.chunks_exact(h).skip(1) {
                for (o, &x) in out.iter_mut().zip(row) {
                    // torch's max propagates NaN; so does this.
                    if x > *o || x.is_nan() {
                        *o = x;
                    }
                }
            }
        }
        PoolingMode::Mean | PoolingMode::MeanSqrtLen | PoolingMode::WeightedMean => {
            let weighted = mode == PoolingMode::WeightedMean;
            // Reduce column blocks in an f64 stack buffer: no allocation, one rounding per output.
            const BLOCK: usize = 64;
            let mut acc = [0f64; BLOCK];
            for col in (0..h).step_by(BLOCK) {
                let width = BLOCK.min(h - col);
                acc[..width].fill(0.0);
                for (i, row) in kept.chunks_exact(h).enumerate() {
                    // 1-based positions in the whole sequence, prompt included.
                    let weight = if weighted {
                        (first + i + 1) as f64
                    } else {
                        1.0
                    };
                    for (a, &x) in acc[..width].iter_mut().zip(&row[col..col + width]) {
                        *a += weight * x as f64;
                    }
                }
                let denominator = match mode {
                    PoolingMode::Mean => count as f64,
                    PoolingMode::MeanSqrtLen => (count as f64).sqrt(),
                    // Σ_{i=first+1}^{len} i
                    _ => (len * (len + 1) / 2 - first * (first + 1) / 2) as f64,
                };
                for (o, a) in out[col..col + width].iter_mut().zip(&acc[..width]) {
                    *o = (a / denominator) as f32;
                }
            }
        }
    }
}

/// sentence-transformers' `Normalize`: each row `x ← x / max(‖x‖₂, 1e-12)`; `data` is `[n, dim]`.
///
/// A zero row stays zero; a row holding a NaN becomes all NaN, as torch's `F.normalize` makes
/// it (its `clamp_min` keeps a NaN norm, where Rust's `f64::max` would drop it). Values past
/// the last whole row are left as they are.
///
/// ```
/// let mut rows = [3.0, 4.0, 0.0, 0.0];
/// ember_pooling::normalize_rows(&mut rows, 2);
/// assert_eq!(rows, [0.6, 0.8, 0.0, 0.0]);
/// ```
pub fn normalize_rows(data: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in data.chunks_exact_mut(dim) {
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        // Not `norm.max(1e-12)`: that gives 1e-12 for a NaN norm, scaling the row's other
        // values up by 1e12 instead of making them NaN.
        let scale = 1.0 / if norm < 1e-12 { 1e-12 } else { norm };
        for x in row.iter_mut() {
            *x = (*x as f64 * scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mode, in sentence-transformers' concatenation order.
    fn every_mode() -> [PoolingMode; 6] {
        PoolingMode::LEGACY_KEYS.map(|(_, mode)| mode)
    }

    fn config(modes: &[PoolingMode], h: usize) -> PoolingConfig {
        PoolingConfig {
            embedding_dimension: h,
            modes: modes.to_vec(),
            include_prompt: true,
        }
    }

    #[test]
    fn legacy_config_keeps_sentence_transformers_order() {
        let text = r#"{"word_embedding_dimension": 4, "pooling_mode_mean_tokens": true,
            "pooling_mode_cls_token": true, "pooling_mode_max_tokens": false, "pooling_mode_lasttoken": true}"#;
        let c = PoolingConfig::from_json_str(text, Path::new("p.json")).unwrap();
        assert_eq!(
            c.modes,
            vec![PoolingMode::Cls, PoolingMode::Mean, PoolingMode::LastToken]
        );
        assert_eq!(c.output_dim(), 12);
    }

    #[test]
    fn a_legacy_config_without_the_mean_key_pools_the_mean_too() {
        // Pooling(word_embedding_dimension=8, pooling_mode_cls_token=True): cls and mean.
        let c = PoolingConfig::from_json_str(
            r#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": true}"#,
            Path::new("p.json"),
        )
        .unwrap();
        assert_eq!(c.modes, vec![PoolingMode::Cls, PoolingMode::Mean]);
        let c = PoolingConfig::from_json_str(
            r#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": false}"#,
            Path::new("p.json"),
        )
        .unwrap();
        assert_eq!(c.modes, vec![PoolingMode::Mean]);
    }

    #[test]
    fn modes_given_but_none_on_are_refused() {
        for text in [
            r#"{"embedding_dimension": 8, "pooling_mode": []}"#,
            r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": false, "pooling_mode_cls_token": false}"#,
        ] {
            let err = PoolingConfig::from_json_str(text, Path::new("p.json")).unwrap_err();
            assert!(
                err.to_string().contains("no pooling mode is on"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn new_config_keeps_given_order_and_empty_means_mean() {
        let text =
            r#"{"embedding_dimension": 8, "pooling_mode": ["max", "cls"], "include_prompt": true}"#;
        let c = PoolingConfig::from_json_str(text, Path::new("p.json")).unwrap();
        assert_eq!(c.modes, vec![PoolingMode::Max, PoolingMode::Cls]);
        let c =
            PoolingConfig::from_json_str(r#"{"word_embedding_dimension": 8}"#, Path::new("p.json"))
                .unwrap();
        assert_eq!(c.modes, vec![PoolingMode::Mean]);
    }

    #[test]
    fn bad_configs_name_the_file() {
        for text in [
            "not json",
            "[]",
            r#"{"pooling_mode": "mean"}"#,
            r#"{"embedding_dimension": 4, "pooling_mode": "median"}"#,
            r#"{"embedding_dimension": 0}"#,
            r#"{"embedding_dimension": 4, "pooling_mode_mean_tokens": "yes"}"#,
            r#"{"embedding_dimension": 4, "include_prompt": "no"}"#,
            r#"{"embedding_dimension": 4, "include_prompt": null}"#,
        ] {
            let err =
                PoolingConfig::from_json_str(text, Path::new("1_Pooling/config.json")).unwrap_err();
            assert!(err.to_string().contains("1_Pooling/config.json"), "{err}");
        }
    }

    #[test]
    fn include_prompt_is_read_from_both_formats() {
        for (text, include) in [
            (r#"{"embedding_dimension": 4}"#, true),
            (
                r#"{"embedding_dimension": 4, "include_prompt": true}"#,
                true,
            ),
            (
                r#"{"embedding_dimension": 4, "include_prompt": false}"#,
                false,
            ),
            (
                r#"{"word_embedding_dimension": 4, "pooling_mode_cls_token": true, "include_prompt": false}"#,
                false,
            ),
        ] {
            let c = PoolingConfig::from_json_str(text, Path::new("p.json")).unwrap();
            assert_eq!(c.include_prompt, include, "{text}");
        }
    }

    /// Every mode with the first `p` tokens masked, against a direct reading of
    /// sentence-transformers' masked formulas in f64, for every `p` from 0 to past the end.
    #[test]
    fn excluded_tokens_are_masked_out_of_every_mode() {
        let h = 3;
        let len = 5;
        let hidden: Vec<f32> = (0..len * h)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.5)
            .collect();
        let modes = every_mode();
        let c = config(&modes, h);
        let x = |t: usize, j: usize| hidden[t * h + j] as f64;
        for p in 0..=len + 1 {
            let mut out = vec![f32::NAN; 6 * h];
            pool_excluding(&c, &hidden, &[0, len], p, &mut out).unwrap();
            let kept: Vec<usize> = (p.min(len)..len).collect();
            for j in 0..h {
                let sum: f64 = kept.iter().map(|&t| x(t, j)).sum();
                let n = kept.len() as f64;
                let weights: f64 = kept.iter().map(|&t| (t + 1) as f64).sum();
                let weighted: f64 = kept.iter().map(|&t| (t + 1) as f64 * x(t, j)).sum();
                let expected = [
                    x(kept.first().copied().unwrap_or(0), j),
                    kept.iter()
                        .map(|&t| x(t, j))
                        .fold(f64::NEG_INFINITY, f64::max),
                    sum / n.max(1e-9),
                    sum / n.max(1e-9).sqrt(),
                    weighted / weights.max(1e-9),
                    if kept.is_empty() { 0.0 } else { x(len - 1, j) },
                ];
                for (m, e) in expected.iter().enumerate() {
                    assert_eq!(out[m * h + j], *e as f32, "p {p}, mode {m}, column {j}");
                }
            }
            if p == 0 {
                let mut plain = vec![0.0; 6 * h];
                pool(&c, &hidden, &[0, len], &mut plain).unwrap();
                assert_eq!(out, plain);
            }
        }
    }

    #[test]
    fn every_mode_on_a_small_batch() {
        // Two sequences, H = 2: [[1,2],[3,-4]] and [[5,6]].
        let hidden = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0];
        let offsets = [0, 2, 3];
        let modes = every_mode();
        let c = config(&modes, 2);
        let mut out = vec![f32::NAN; 2 * 12];
        pool(&c, &hidden, &offsets, &mut out).unwrap();
        let s = 2f32.sqrt();
        let expected_first = [
            1.0,
            2.0, // cls
            3.0,
            2.0, // max
            2.0,
            -1.0, // mean
            4.0 / s,
            -2.0 / s, // mean_sqrt_len
            7.0 / 3.0,
            -2.0, // weightedmean: (1·1+2·3)/3, (1·2-2·4)/3
            3.0,
            -4.0, // lasttoken
        ];
        for (a, b) in out[..12].iter().zip(expected_first) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
        assert!(out[12..].chunks(2).all(|pair| pair == [5.0, 6.0]));
    }

    #[test]
    fn shape_errors_are_errors() {
        let c = config(&[PoolingMode::Mean], 2);
        let mut out = vec![0.0; 2];
        assert!(pool(&c, &[1.0; 4], &[0, 3], &mut out).is_err());
        assert!(pool(&c, &[1.0; 4], &[0, 0, 2], &mut [0.0; 4]).is_err());
        assert!(pool(&c, &[1.0; 4], &[1, 2], &mut out).is_err());
    }

    #[test]
    fn bad_offsets_are_errors_and_leave_out_untouched() {
        // H = 2, T = 3. [0, 5, 3] starts at 0 and ends at T but runs past T in between (it
        // used to panic slicing `hidden`); [0, 2, 2] has an empty sequence after a valid one
        // (it used to write the first row before failing).
        let c = config(&[PoolingMode::Mean, PoolingMode::Cls], 2);
        let hidden = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0];
        for offsets in [&[0, 5, 3][..], &[0, 2, 2], &[0, 3, 2], &[0, 0, 3]] {
            let mut out = [f32::NAN; 2 * 4];
            let err = pool(&c, &hidden, offsets, &mut out).unwrap_err();
            assert!(
                err.to_string().contains("empty or reversed"),
                "{offsets:?}: {err}"
            );
            assert!(
                out.iter().all(|x| x.is_nan()),
                "{offsets:?}: out written: {out:?}"
            );
        }
        // Offsets past T·H overflowing usize.
        let mut out = [f32::NAN; 4];
        assert!(pool(&c, &hidden, &[0, usize::MAX], &mut out).is_err());
        assert!(out.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn zero_embedding_dimension_is_an_error() {
        for modes in [&[PoolingMode::Mean][..], &[]] {
            let c = config(modes, 0);
            assert!(pool(&c, &[], &[0, 1], &mut []).is_err());
            assert!(pool(&c, &[], &[0], &mut []).is_err());
        }
    }

    #[test]
    fn normalize_propagates_nan_as_torch_does() {
        // torch.nn.functional.normalize(torch.tensor([[nan, 1., 2.], [3., 4., 0.]])):
        // [[nan, nan, nan], [0.6, 0.8, 0.]].
        let mut data = [f32::NAN, 1.0, 2.0, 3.0, 4.0, 0.0];
        normalize_rows(&mut data, 3);
        assert!(data[..3].iter().all(|x| x.is_nan()), "{data:?}");
        assert_eq!(data[3..], [0.6, 0.8, 0.0]);
        // Below the clamp a row is divided by 1e-12, not by its norm.
        let mut tiny = [1e-13f32, 0.0];
        normalize_rows(&mut tiny, 2);
        assert!((tiny[0] - 0.1).abs() < 1e-6, "{tiny:?}");
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows() {
        let mut data = [3.0, 4.0, 0.0, 0.0];
        normalize_rows(&mut data, 2);
        assert_eq!(data, [0.6, 0.8, 0.0, 0.0]);
    }
}
