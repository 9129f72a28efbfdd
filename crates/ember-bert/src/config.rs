//! `config.json` of a Hugging Face `BertModel`, or of the families Ember runs as BERT with
//! other names, positions or extras ([`ModelFamily`]: `RobertaModel`, `XLMRobertaModel`,
//! `CamembertModel`, `MPNetModel`, `DistilBertModel`; `ModernBertModel`, whose layers differ
//! in kind ([`ModernBertParams`]); `NomicBertModel` and `GteModel`, BERT's layers with rotary
//! positions and a gated feed-forward ([`RotaryParams`]); Jina's JinaBERT, BERT's layers with
//! ALiBi and a GLU feed-forward): parsed, checked for what Ember can run, and bounded before
//! anything is allocated from it.

use std::path::{Path, PathBuf};

use ember_cpu::Activation;
use serde_json::Value;

use crate::BertError;

/// Upper bounds that no published BERT comes near; a config past them is refused before any
/// buffer is sized from it (the tensor checks then bound everything by the file's real size).
const MAX_HIDDEN: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_HEADS: usize = 1024;
const MAX_INTERMEDIATE: usize = 1 << 18;
const MAX_VOCAB: usize = 1 << 24;
const MAX_POSITIONS: usize = 1 << 20;
const MAX_TYPE_VOCAB: usize = 1 << 16;

/// The subset of `BertConfig` that shapes the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// `H`, the width of every token's hidden state.
    pub hidden_size: usize,
    /// The number of encoder layers.
    pub num_hidden_layers: usize,
    /// `nh`, the attention heads per layer; divides `H`.
    pub num_attention_heads: usize,
    /// `F`, the width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the word-embedding table; every token id must be below it.
    pub vocab_size: usize,
    /// Rows of the position-embedding table: the longest sequence, in tokens, the model runs
    /// (ModernBERT: no table, the rotary tables' length).
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) table; Ember uses row 0. 0 for MPNet, which has none.
    pub type_vocab_size: usize,
    /// The LayerNorm `ε` in `y = (x − μ) / √(σ² + ε) · γ + β`, in `(0, 1)`.
    pub layer_norm_eps: f32,
    /// `hidden_act` mapped by [`Activation::from_hf_name`]: `gelu` → exact erf GELU;
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast` → tanh GELU; `relu`; `linear`.
    pub activation: Activation,
    /// How a token's position picks its row of the position table (`model_type`).
    pub position_ids: PositionIds,
    /// The checkpoint's layout (`model_type`).
    pub family: ModelFamily,
    /// MPNet's `relative_attention_num_buckets`: the rows of its relative position bias table
    /// (transformers buckets with [`MPNET_BUCKETS`] whatever this says, so it is at least
    /// that); `None` for BERT and RoBERTa, which have none.
    pub relative_attention_buckets: Option<usize>,
    /// ModernBERT's layer kinds, rotary positions and biases; `None` for the other families.
    pub modern: Option<ModernBertParams>,
    /// NomicBERT's and GTE's rotary positions; `None` for the other families.
    pub rotary: Option<RotaryParams>,
    /// Alibaba-NLP's `"pack_qkv": false` (in a `"new"` config only; transformers' `"gte"`
    /// reads only the packed form): Q, K and V stored as `attention.{q,k,v}_proj` rather than
    /// one `attention.qkv_proj`.
    pub split_qkv: bool,
    /// The feed-forward is gated: `down(act(gate·x) ⊙ up·x)`, its up-projection `[2F, H]`
    /// holding the gate's rows first (as loaded; GTE's are swapped at load). ModernBERT,
    /// NomicBERT, GTE, and JinaBERT's `feed_forward_type` `"geglu"` / `"reglu"`.
    pub gated_ffn: bool,
}

/// What a `nomic_bert` or `gte` config adds to BERT's post-LayerNorm layers: rotary positions
/// (no position table) and a gated feed-forward `down(act(gate·x) ⊙ up·x)` (NomicBERT: SwiGLU,
/// `fc2(silu(fc12·x) ⊙ fc11·x)`, no bias in attention or feed-forward; GTE: `hidden_act` GELU,
/// biases on Q, K, V, the attention output and `down_proj`).
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryParams {
    /// RoPE `θ`: `rope_parameters.rope_theta`, else `rope_theta`, else (NomicBERT) the
    /// published `rotary_emb_base`; else the family's default (NomicBERT 1000, transformers'
    /// GTE 160 000, Alibaba-NLP's `"new"` 10 000).
    pub rope_theta: f64,
    /// The factor of the fixed NTK scaling of Alibaba-NLP's published GTE configs
    /// (`"rope_scaling": {"type": "ntk", "factor": f}`, gte-base-en-v1.5's 2.0), when above 1:
    /// `θ` becomes `θ·f` and every inverse frequency is divided by `f^(2/hd)`.
    pub ntk_factor: Option<f64>,
}

impl RotaryParams {
    /// The inverse frequencies `ωᵢ` (`hd/2` of them) as torch computes them: transformers'
    /// `inv_freq` of `θ` in f32 ([`ember_cpu::rotary::inverse_frequencies`]); with an NTK factor
    /// `f`, those of `θ·f` (the product in f64, as Python's) each divided in f32 by
    /// `f^(2/hd)` (a Python float, rounded to f32), as the published `NTKScalingRotaryEmbedding`
    /// does.
    pub fn inverse_frequencies(&self, head_dim: usize) -> Vec<f32> {
        match self.ntk_factor {
            None => ember_cpu::rotary::inverse_frequencies(self.rope_theta, head_dim),
            Some(f) => {
                let divisor = f.powf(2.0 / head_dim as f64) as f32;
                ember_cpu::rotary::inverse_frequencies(self.rope_theta * f, head_dim)
                    .into_iter()
                    .map(|w| w / divisor)
                    .collect()
            }
        }
    }
}

/// What a `modernbert` config adds: pre-LayerNorm layers with rotary positions (no position
/// table), a GeGLU feed-forward (`mlp.Wi` is `[2F, H]`), attention over a sliding window on
/// some layers, and biases only where the config asks for them.
#[derive(Clone, Debug, PartialEq)]
pub struct ModernBertParams {
    /// `norm_bias`: the LayerNorms have a `β` (none in published ModernBERTs).
    pub norm_bias: bool,
    /// `attention_bias`: `attn.Wqkv` and `attn.Wo` have biases.
    pub attention_bias: bool,
    /// `mlp_bias`: `mlp.Wi` and `mlp.Wo` have biases.
    pub mlp_bias: bool,
    /// Per layer, `Some(w)` for a sliding-window layer, whose queries attend to the keys
    /// within `w` = `local_attention / 2` positions of them; `None` for full attention.
    /// From `layer_types`, else `global_attn_every_n_layers` (layer `i` is global when `i`
    /// is a multiple of it; 3 by default).
    pub windows: Vec<Option<usize>>,
    /// RoPE `θ` of the full-attention layers: `rope_parameters.full_attention.rope_theta`,
    /// else `global_rope_theta`, else 160 000.
    pub global_rope_theta: f64,
    /// RoPE `θ` of the sliding-window layers: `rope_parameters.sliding_attention.rope_theta`,
    /// else `local_rope_theta`, else 10 000.
    pub local_rope_theta: f64,
}

/// Which family of checkpoints a config describes: the same encoder layers under other names,
/// position rows and extras.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFamily {
    /// `bert`: `BertModel`.
    Bert,
    /// `roberta`, `xlm-roberta`, `camembert`: BERT's names under a `roberta.` prefix, with
    /// [`PositionIds::AfterPadding`].
    Roberta,
    /// `mpnet` (all-mpnet-base-v2): attention weights named `attention.attn.{q,k,v,o}` and
    /// `attention.LayerNorm`, no token-type table, [`PositionIds::AfterPadding`], and a
    /// relative position bias added to every layer's attention scores.
    Mpnet,
    /// `distilbert`: BERT's post-LayerNorm layers under `transformer.layer.{i}` (`attention.
    /// {q,k,v,out}_lin`, `sa_layer_norm`, `ffn.lin{1,2}`, `output_layer_norm`), config keys
    /// `dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation`, LayerNorm ε 1e-12, no
    /// token-type table, positions from 0.
    DistilBert,
    /// `modernbert`: pre-LayerNorm layers `layers.{i}.{attn_norm, attn.Wqkv, attn.Wo, mlp_norm,
    /// mlp.Wi, mlp.Wo}` and a `final_norm`, rotary positions, GeGLU, local attention on some
    /// layers, config keys `hidden_activation` and `norm_eps` ([`ModernBertParams`]).
    ModernBert,
    /// `nomic_bert` (nomic-embed-text-v1, v1.5): post-LayerNorm layers under
    /// `encoder.layers.{i}.{attn.Wqkv, attn.out_proj, norm1, mlp.fc11, mlp.fc12, mlp.fc2,
    /// norm2}` and `emb_ln`, without biases but the LayerNorms', rotary positions and a SwiGLU
    /// feed-forward ([`RotaryParams`]); transformers 5's config keys or the published
    /// nomic-ai ones (`n_embd`, `n_layer`, `n_head`, `n_inner`, `rotary_emb_base`, …).
    NomicBert,
    /// `gte` (transformers 5's `GteModel`) and `new` (Alibaba-NLP's published remote code:
    /// gte-base-en-v1.5, gte-large-en-v1.5, gte-multilingual-base): NomicBERT's post-LayerNorm
    /// rotary layers under `encoder.layer.{i}.{attention.qkv_proj (or q/k/v_proj),
    /// attention.o_proj, attn_ln, mlp.up_gate_proj, mlp.down_proj, mlp_ln}`, with biases but
    /// on `up_gate_proj` (`[up; gate]`), a GELU-gated feed-forward, `embeddings.LayerNorm` and a
    /// token-type table unless `type_vocab_size` is 0 ([`RotaryParams`]).
    Gte,
    /// JinaBERT (jina-embeddings-v2-small-en, -base-en; Jina's remote code
    /// `jinaai/jina-bert-implementation`): a `bert` config with `"position_embedding_type":
    /// "alibi"`. BERT's post-LayerNorm layers and names without a position table: attention
    /// scores gain ALiBi's `−slope_h·|j − i|` ([`alibi_bias`]), and with `feed_forward_type`
    /// `"geglu"` (`"reglu"`) the feed-forward is `mlp.wo(gelu(gate) ⊙ up)` (ReLU) with
    /// `mlp.gated_layers` = `[gate; up]` and `mlp.layernorm` after it.
    JinaBert,
}

impl ModelFamily {
    /// The family's name: `bert`, `roberta`, `mpnet`, `distilbert`, `modernbert`,
    /// `nomic_bert`, `gte` or `jina_bert` (whose configs say `bert`).
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Bert => "bert",
            ModelFamily::Roberta => "roberta",
            ModelFamily::Mpnet => "mpnet",
            ModelFamily::DistilBert => "distilbert",
            ModelFamily::ModernBert => "modernbert",
            ModelFamily::NomicBert => "nomic_bert",
            ModelFamily::Gte => "gte",
            ModelFamily::JinaBert => "jina_bert",
        }
    }
}

/// MPNet's `relative_position_bucket` (transformers' `MPNetEncoder`, `max_distance` 128):
/// the bucket of `relative_position` = key index − query index. Keys before the query and
/// after it take separate halves of the `num_buckets`; distances below a quarter of them get a
/// bucket each, longer ones share logarithmically wider buckets up to `max_distance`. The
/// logarithm is taken in f32, as torch does.
pub fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let half = num_buckets / 2;
    let n = -relative_position;
    let base = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        return base + n;
    }
    let ratio = (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = (n as f32 / max_exact as f32).ln() / ratio * (half - max_exact) as f32;
    base + (max_exact + large as usize).min(half - 1)
}

/// MPNet's relative position bias expanded per distance for
/// [`ember_cpu::RelativeBias`]: `weight` is `encoder.relative_attention_bias.weight`
/// (`[rows, heads]`, `rows` ≥ [`MPNET_BUCKETS`]); the result is `[heads, 2·span + 1]`, entry
/// `span + d` of head `h` the bias of relative position `d`.
pub fn expand_relative_bias(weight: &[f32], heads: usize, span: usize) -> Vec<f32> {
    let width = 2 * span + 1;
    let mut values = vec![0.0f32; heads * width];
    for (index, d) in (-(span as i64)..=span as i64).enumerate() {
        let bucket = relative_position_bucket(d, MPNET_BUCKETS, MPNET_MAX_DISTANCE);
        for h in 0..heads {
            values[h * width + index] = weight[bucket * heads + h];
        }
    }
    values
}

/// ALiBi's head slopes as Jina's `_get_alibi_head_slopes` computes them (in Python floats,
/// then an f32 tensor): for `n` a power of two, `s·sⁱ` with `s = 2^(−8/n)`, i.e.
/// `2^(−(2^−(log₂n − 3)))`; otherwise those of the largest power of two `p` below `n`, then
/// every other slope of `2p`'s, up to `n`.
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn power_of_2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powf(i as f64)).collect()
    }
    fn slopes(n: usize) -> Vec<f64> {
        if n.is_power_of_two() {
            return power_of_2(n);
        }
        let closest = 1usize << n.ilog2();
        let mut all = power_of_2(closest);
        all.extend(slopes(2 * closest).into_iter().step_by(2).take(n - closest));
        all
    }
    match heads {
        0 => Vec::new(),
        n => slopes(n).into_iter().map(|s| s as f32).collect(),
    }
}

/// JinaBERT's ALiBi bias for [`ember_cpu::RelativeBias`]: `[heads, 2·span + 1]`, entry
/// `span + d` of head `h` `−slope_h · |d|`, the product in f32 as torch forms it (an f32
/// slope tensor times the integer distances).
pub fn alibi_bias(heads: usize, span: usize) -> Vec<f32> {
    let width = 2 * span + 1;
    let mut values = Vec::with_capacity(heads * width);
    for slope in alibi_slopes(heads) {
        let negated = -slope;
        values.extend((0..width).map(|index| negated * index.abs_diff(span) as f32));
    }
    values
}

/// transformers' `MPNetEncoder.relative_position_bucket` default (not in `config.json`).
pub const MPNET_MAX_DISTANCE: usize = 128;
/// The buckets transformers' `MPNetEncoder` computes with, whatever `config.json`'s
/// `relative_attention_num_buckets` (which only sizes the bias table): `compute_position_bias`'s
/// default.
pub const MPNET_BUCKETS: usize = 32;

/// How token positions index the position table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionIds {
    /// BERT: the `i`-th token of a sequence takes row `i`.
    FromZero,
    /// RoBERTa, XLM-RoBERTa, CamemBERT (transformers' `create_position_ids_from_input_ids`):
    /// a token whose id is `pad_token_id` takes row `pad_token_id`; any other takes row
    /// `pad_token_id + c`, where `c` counts the tokens of its sequence up to and including it
    /// that are not `pad_token_id`. Without padding tokens in the text, the `i`-th token takes
    /// row `pad_token_id + 1 + i`.
    AfterPadding {
        /// `config.json`'s `pad_token_id`.
        pad_token_id: u32,
    },
}

impl PositionIds {
    /// The row of the position table of each token of one sequence, in order.
    pub fn rows(self, sequence: &[u32]) -> impl Iterator<Item = usize> + '_ {
        let mut counted = 0usize;
        sequence.iter().enumerate().map(move |(i, &id)| match self {
            PositionIds::FromZero => i,
            PositionIds::AfterPadding { pad_token_id } if id == pad_token_id => {
                pad_token_id as usize
            }
            PositionIds::AfterPadding { pad_token_id } => {
                counted += 1;
                pad_token_id as usize + counted
            }
        })
    }

    /// Rows of the position table that come before the first token's row: 0 for BERT,
    /// `pad_token_id + 1` for the RoBERTa family.
    pub fn first_row(self) -> usize {
        match self {
            PositionIds::FromZero => 0,
            PositionIds::AfterPadding { pad_token_id } => pad_token_id as usize + 1,
        }
    }
}

/// `BertConfig`'s defaults for the keys transformers may leave out.
const DEFAULT_MAX_POSITIONS: u64 = 512;
const DEFAULT_TYPE_VOCAB: u64 = 2;
const DEFAULT_EPS: f64 = 1e-12;
const DEFAULT_ACT: &str = "gelu";
const DEFAULT_POSITION_TYPE: &str = "absolute";
/// `JinaBertConfig`'s default `feed_forward_type` (published configs set "geglu").
const DEFAULT_JINA_FEED_FORWARD: &str = "original";
/// `RobertaConfig`'s and `MPNetConfig`'s default `pad_token_id`.
const DEFAULT_ROBERTA_PAD: u64 = 1;
/// `ModernBertConfig`'s defaults.
const DEFAULT_MODERN_MAX_POSITIONS: u64 = 8192;
const DEFAULT_MODERN_EPS: f64 = 1e-5;
const DEFAULT_GLOBAL_EVERY: u64 = 3;
const DEFAULT_LOCAL_ATTENTION: u64 = 128;
const DEFAULT_GLOBAL_THETA: f64 = 160_000.0;
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;
/// `NomicBertConfig`'s defaults (nomic-embed-text-v1.5's values).
const DEFAULT_NOMIC_MAX_POSITIONS: u64 = 2048;
const DEFAULT_NOMIC_THETA: f64 = 1000.0;
const DEFAULT_NOMIC_ACT: &str = "silu";
/// `GteConfig`'s defaults (transformers 5), and those of Alibaba-NLP's `NewConfig` where they
/// differ.
const DEFAULT_GTE_MAX_POSITIONS: u64 = 8192;
const DEFAULT_GTE_THETA: f64 = 160_000.0;
const DEFAULT_GTE_TYPE_VOCAB: u64 = 1;
const DEFAULT_NEW_MAX_POSITIONS: u64 = 2048;
const DEFAULT_NEW_THETA: f64 = 10_000.0;
/// The most values (`max_position_embeddings · head_dim`) a ModernBERT's rotary tables may hold
/// per `θ`: 2^24 floats, 64 MiB.
const MAX_ROTARY_VALUES: usize = 1 << 24;
/// The most values (`heads · (2·max_tokens − 1)`) a JinaBERT's expanded ALiBi bias may hold:
/// 2^24 floats, 64 MiB (jina-embeddings-v2-base-en: 12 heads, 8192 positions, 196 596).
const MAX_ALIBI_VALUES: usize = 1 << 24;
/// `MPNetConfig`'s default `relative_attention_num_buckets`, and a bound no model nears.
const DEFAULT_MPNET_BUCKETS: u64 = 32;
const MAX_BUCKETS: usize = 1 << 12;
/// The `model_type`s of BERT and of the RoBERTa family (BERT's layers with
/// [`PositionIds::AfterPadding`]); `mpnet` and `distilbert` are matched by name.
const BERT_TYPES: [&str; 1] = ["bert"];
const ROBERTA_TYPES: [&str; 3] = ["roberta", "xlm-roberta", "camembert"];

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, BertError> {
        let text = std::fs::read_to_string(path).map_err(|source| BertError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses and checks a config; `path` names the file in errors.
    ///
    /// The JSON is walked by hand rather than deserialised into a struct so that a value of the
    /// wrong kind (`-52`, `52.0` or `"52"` for `hidden_size`) is reported by its key.
    ///
    /// # Errors
    ///
    /// [`BertError::ConfigJson`] when `text` is not JSON; [`BertError::Config`] when a size is
    /// missing or outside its bounds, the heads do not divide the hidden size, or the
    /// activation, `model_type` or `position_embedding_type` is one Ember does not run.
    ///
    /// ```
    /// use std::path::Path;
    /// use ember_bert::BertConfig;
    ///
    /// let text = r#"{"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
    ///                "intermediate_size": 1536, "vocab_size": 30522}"#;
    /// let config = BertConfig::from_json_str(text, Path::new("config.json"))?;
    /// assert_eq!(config.head_dim(), 32);
    /// assert_eq!(config.max_position_embeddings, 512); // transformers' default
    ///
    /// let bad = text.replace("12", "7"); // 7 heads do not divide 384
    /// assert!(BertConfig::from_json_str(&bad, Path::new("config.json")).is_err());
    /// # Ok::<(), ember_bert::BertError>(())
    /// ```
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, BertError> {
        let value: Value = serde_json::from_str(text).map_err(|source| BertError::ConfigJson {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |message: String| BertError::Config {
            path: PathBuf::from(path),
            message,
        };
        let Value::Object(object) = &value else {
            return Err(invalid(format!(
                "must be a JSON object, found {}",
                json_kind(&value)
            )));
        };
        // `null` is what transformers writes for an unset key: the default then applies.
        let get = |key: &str| object.get(key).filter(|v| !v.is_null());
        let string = |key: &str, default: &str| -> Result<String, BertError> {
            match get(key) {
                None => Ok(default.to_owned()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(invalid(format!("\"{key}\" = {v} is not a string"))),
            }
        };
        let family = match get("model_type") {
            None => ModelFamily::Bert,
            Some(model_type) => match model_type.as_str() {
                Some(t) if BERT_TYPES.contains(&t) => ModelFamily::Bert,
                Some(t) if ROBERTA_TYPES.contains(&t) => ModelFamily::Roberta,
                Some("mpnet") => ModelFamily::Mpnet,
                Some("distilbert") => ModelFamily::DistilBert,
                Some("modernbert") => ModelFamily::ModernBert,
                Some("nomic_bert") => ModelFamily::NomicBert,
                Some("gte" | "new") => ModelFamily::Gte,
                _ => {
                    return Err(invalid(format!(
                        "model_type {model_type} is not supported (Ember runs \"bert\", \"roberta\", \"xlm-roberta\", \"camembert\", \"mpnet\", \"distilbert\", \"modernbert\", \"nomic_bert\" and \"gte\" (or Alibaba-NLP's \"new\"))"
                    )))
                }
            },
        };
        let position_embedding_type = string("position_embedding_type", DEFAULT_POSITION_TYPE)?;
        // JinaBERT's configs say "bert"; ALiBi positions tell them apart.
        let family = match family {
            ModelFamily::Bert if position_embedding_type == "alibi" => ModelFamily::JinaBert,
            other => other,
        };
        // Alibaba-NLP's published GTE configs (read by their remote code, not transformers').
        let published_gte = get("model_type").and_then(Value::as_str) == Some("new");
        // DistilBertConfig's names for BertConfig's keys; for NomicBERT, the published nomic-ai
        // name where transformers 5's is absent (transformers reads only its own).
        let key = |bert_key: &'static str| -> &'static str {
            let nomic = |published: &'static str| {
                if get(bert_key).is_none() && get(published).is_some() {
                    published
                } else {
                    bert_key
                }
            };
            match (family, bert_key) {
                (ModelFamily::NomicBert, "hidden_size") => nomic("n_embd"),
                (ModelFamily::NomicBert, "num_hidden_layers") => nomic("n_layer"),
                (ModelFamily::NomicBert, "num_attention_heads") => nomic("n_head"),
                (ModelFamily::NomicBert, "intermediate_size") => nomic("n_inner"),
                (ModelFamily::NomicBert, "layer_norm_eps") => nomic("layer_norm_epsilon"),
                (ModelFamily::NomicBert, "max_position_embeddings") => nomic("n_positions"),
                (ModelFamily::DistilBert, "hidden_size") => "dim",
                (ModelFamily::DistilBert, "num_hidden_layers") => "n_layers",
                (ModelFamily::DistilBert, "num_attention_heads") => "n_heads",
                (ModelFamily::DistilBert, "intermediate_size") => "hidden_dim",
                (ModelFamily::DistilBert, "hidden_act") => "activation",
                (ModelFamily::ModernBert, "hidden_act") => "hidden_activation",
                (ModelFamily::ModernBert, "layer_norm_eps") => "norm_eps",
                _ => bert_key,
            }
        };
        let layer_norm_eps = match (family, get(key("layer_norm_eps"))) {
            // DistilBERT's LayerNorms are built with ε = 1e-12 whatever the config says.
            (ModelFamily::DistilBert, _) | (ModelFamily::Bert, None) => DEFAULT_EPS,
            (
                ModelFamily::Roberta
                | ModelFamily::Mpnet
                | ModelFamily::NomicBert
                | ModelFamily::Gte
                | ModelFamily::JinaBert,
                None,
            ) => DEFAULT_EPS,
            (ModelFamily::ModernBert, None) => DEFAULT_MODERN_EPS,
            (_, Some(v)) => v.as_f64().ok_or_else(|| {
                invalid(format!(
                    "\"{}\" = {v} is not a number",
                    key("layer_norm_eps")
                ))
            })?,
        };
        let hidden_act = match family {
            ModelFamily::NomicBert => string(key("hidden_act"), DEFAULT_NOMIC_ACT)?,
            _ => string(key("hidden_act"), DEFAULT_ACT)?,
        };
        // Every size is an integer in 1..=max, bounded before anything is sized from it.
        let field = |key: &str, default: Option<u64>, max: usize| -> Result<usize, BertError> {
            let value = match get(key) {
                None => default.ok_or_else(|| invalid(format!("missing \"{key}\"")))?,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| invalid(format!("\"{key}\" = {v} is not a positive integer")))?,
            };
            if value == 0 || value > max as u64 {
                return Err(invalid(format!("\"{key}\" = {value} is outside 1..={max}")));
            }
            Ok(value as usize)
        };
        let hidden_size = field(key("hidden_size"), None, MAX_HIDDEN)?;
        let num_hidden_layers = field(key("num_hidden_layers"), None, MAX_LAYERS)?;
        let num_attention_heads = field(key("num_attention_heads"), None, MAX_HEADS)?;
        let intermediate_size = field(key("intermediate_size"), None, MAX_INTERMEDIATE)?;
        let vocab_size = field("vocab_size", None, MAX_VOCAB)?;
        let max_position_embeddings = field(
            key("max_position_embeddings"),
            Some(match family {
                ModelFamily::ModernBert => DEFAULT_MODERN_MAX_POSITIONS,
                ModelFamily::NomicBert => DEFAULT_NOMIC_MAX_POSITIONS,
                ModelFamily::Gte if published_gte => DEFAULT_NEW_MAX_POSITIONS,
                ModelFamily::Gte => DEFAULT_GTE_MAX_POSITIONS,
                _ => DEFAULT_MAX_POSITIONS,
            }),
            MAX_POSITIONS,
        )?;
        // MPNet, DistilBERT and ModernBERT have no token-type table.
        let type_vocab_size = match family {
            ModelFamily::Mpnet | ModelFamily::DistilBert | ModelFamily::ModernBert => 0,
            // GTE's is 1, or 0 (gte-base-en-v1.5): then it has none.
            ModelFamily::Gte => match get("type_vocab_size") {
                Some(v) if v.as_u64() == Some(0) => 0,
                _ => field(
                    "type_vocab_size",
                    Some(DEFAULT_GTE_TYPE_VOCAB),
                    MAX_TYPE_VOCAB,
                )?,
            },
            _ => field("type_vocab_size", Some(DEFAULT_TYPE_VOCAB), MAX_TYPE_VOCAB)?,
        };
        let relative_attention_buckets = match family {
            ModelFamily::Mpnet => {
                let buckets = field(
                    "relative_attention_num_buckets",
                    Some(DEFAULT_MPNET_BUCKETS),
                    MAX_BUCKETS,
                )?;
                // transformers indexes the table with 32 buckets whatever its size.
                if buckets < MPNET_BUCKETS {
                    return Err(invalid(format!(
                        "\"relative_attention_num_buckets\" = {buckets} is below the {MPNET_BUCKETS} buckets MPNet computes"
                    )));
                }
                Some(buckets)
            }
            _ => None,
        };
        let position_ids = if matches!(family, ModelFamily::Roberta | ModelFamily::Mpnet) {
            let pad_token_id = match get("pad_token_id") {
                None => DEFAULT_ROBERTA_PAD,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| invalid(format!("\"pad_token_id\" = {v} is not a token id")))?,
            };
            // The first token's row, pad_token_id + 1, must leave at least one row.
            if pad_token_id >= max_position_embeddings as u64 - 1 {
                return Err(invalid(format!(
                    "pad_token_id = {pad_token_id} leaves no row of the {max_position_embeddings} position embeddings for tokens (RoBERTa's positions start at pad_token_id + 1)"
                )));
            }
            PositionIds::AfterPadding {
                pad_token_id: pad_token_id as u32,
            }
        } else {
            PositionIds::FromZero
        };
        if hidden_size % num_attention_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads = {num_attention_heads} does not divide hidden_size = {hidden_size}"
            )));
        }
        if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0 && layer_norm_eps < 1.0) {
            return Err(invalid(format!(
                "{} = {} is not in (0, 1)",
                key("layer_norm_eps"),
                layer_norm_eps
            )));
        }
        // ModernBERT, NomicBERT and GTE have no position table (published configs may carry a
        // stale "absolute"; Alibaba-NLP's GTE configs are checked in `gte_params`); JinaBERT's
        // is "alibi".
        if position_embedding_type != "absolute"
            && !matches!(
                family,
                ModelFamily::ModernBert
                    | ModelFamily::NomicBert
                    | ModelFamily::Gte
                    | ModelFamily::JinaBert
            )
        {
            return Err(invalid(format!(
                "position_embedding_type {position_embedding_type:?} is not supported (only \"absolute\")"
            )));
        }
        let hidden_activation = || {
            Activation::from_hf_name(&hidden_act).ok_or_else(|| {
                invalid(format!(
                    "{} {hidden_act:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, linear)",
                    key("hidden_act")
                ))
            })
        };
        // JinaBERT's GLU feed-forwards fix their activation (`nn.GELU()`, `nn.ReLU()`) whatever
        // `hidden_act` says; its "original" one is BERT's, with `hidden_act`.
        let (activation, gated_ffn) = match family {
            ModelFamily::JinaBert => {
                jina_checks(&get, &invalid, num_attention_heads, max_position_embeddings)?;
                match string("feed_forward_type", DEFAULT_JINA_FEED_FORWARD)?.as_str() {
                    "original" => (hidden_activation()?, false),
                    "geglu" => (Activation::Gelu, true),
                    "reglu" => (Activation::Relu, true),
                    other => {
                        return Err(invalid(format!(
                            "feed_forward_type {other:?} is not supported (JinaBERT's \"original\", \"geglu\" and \"reglu\")"
                        )))
                    }
                }
            }
            ModelFamily::ModernBert | ModelFamily::NomicBert | ModelFamily::Gte => {
                (hidden_activation()?, true)
            }
            _ => (hidden_activation()?, false),
        };
        let modern = match family {
            ModelFamily::ModernBert => Some(modern_params(
                &get,
                &invalid,
                num_hidden_layers,
                hidden_size / num_attention_heads,
                max_position_embeddings,
            )?),
            _ => None,
        };
        let head_dim = hidden_size / num_attention_heads;
        let split_qkv = match (published_gte, get("pack_qkv")) {
            (true, Some(Value::Bool(packed))) => !packed,
            (true, Some(v)) => {
                return Err(invalid(format!("\"pack_qkv\" = {v} is not true or false")))
            }
            _ => false,
        };
        let rotary = match family {
            ModelFamily::NomicBert => Some(nomic_params(
                &get,
                &invalid,
                head_dim,
                max_position_embeddings,
            )?),
            ModelFamily::Gte => Some(gte_params(
                &get,
                &invalid,
                published_gte,
                head_dim,
                max_position_embeddings,
            )?),
            _ => None,
        };
        Ok(Self {
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            vocab_size,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps: layer_norm_eps as f32,
            activation,
            position_ids,
            family,
            relative_attention_buckets,
            modern,
            rotary,
            split_qkv,
            gated_ffn,
        })
    }

    /// The longest sequence, in tokens, the position table holds: `max_position_embeddings`
    /// less the rows before the first token's ([`PositionIds::first_row`]); ModernBERT's
    /// rotary tables are built for this many positions.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_ids.first_row()
    }

    /// How the encoder sees token positions, as `ember info` prints it: `absolute` (BERT,
    /// DistilBERT), `absolute from row p` (the RoBERTa family's rows after the padding row),
    /// `absolute from row p + relative bias` (MPNet), `rotary θ=…` (NomicBERT, GTE; `, NTK ×f`
    /// with Alibaba-NLP's fixed NTK scaling), `rotary θ=… (global), θ=… (local, ±w)`
    /// (ModernBERT's two kinds of layer) or `alibi` (JinaBERT).
    pub fn positions(&self) -> String {
        if let Some(m) = &self.modern {
            let window = m.windows.iter().flatten().next();
            return match window {
                Some(w) => format!(
                    "rotary θ={} (global), θ={} (local, ±{w})",
                    m.global_rope_theta, m.local_rope_theta
                ),
                None => format!("rotary θ={} (global)", m.global_rope_theta),
            };
        }
        if let Some(r) = &self.rotary {
            return match r.ntk_factor {
                Some(f) => format!("rotary θ={}, NTK ×{f}", r.rope_theta),
                None => format!("rotary θ={}", r.rope_theta),
            };
        }
        if self.family == ModelFamily::JinaBert {
            return "alibi".to_owned();
        }
        let absolute = match self.position_ids.first_row() {
            0 => "absolute".to_owned(),
            row => format!("absolute from row {row}"),
        };
        match self.relative_attention_buckets {
            Some(_) => format!("{absolute} + relative bias"),
            None => absolute,
        }
    }

    /// `hd = H / nh`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Floating-point operations (a multiply-add counts 2) of the encoder on one sequence of
    /// `len` tokens: per layer and token the four projections, `2·(3H² + H² + 2HF)`, plus
    /// attention's `q·kᵀ` and `p·v`, `2·2·len·H`. Embeddings, LayerNorm, softmax and GELU are
    /// left out (they are O(H) per token). Ember's throughput figures are counted in these.
    ///
    /// ModernBERT's feed-forward is `H → 2F → F → H` (GeGLU), NomicBERT's and GTE's too:
    /// `2·(4H² + 3HF)` per token;
    /// its sliding-window layers' queries see only the keys of their window.
    pub fn encoder_flops(&self, len: usize) -> f64 {
        let (h, f, l) = (
            self.hidden_size as f64,
            self.intermediate_size as f64,
            len as f64,
        );
        let Some(modern) = &self.modern else {
            // NomicBERT's, GTE's and JinaBERT's gated feed-forward: H → 2F → F → H.
            let ffn = if self.gated_ffn { 3.0 } else { 2.0 };
            let per_token = 2.0 * (4.0 * h * h + ffn * h * f) + 4.0 * l * h;
            return self.num_hidden_layers as f64 * l * per_token;
        };
        let projections = l * 2.0 * (4.0 * h * h + 3.0 * h * f);
        let keys = |window: Option<usize>| -> f64 {
            match window {
                None => l * l,
                Some(w) => (0..len)
                    .map(|i| (i + w + 1).min(len) - i.saturating_sub(w))
                    .sum::<usize>() as f64,
            }
        };
        modern
            .windows
            .iter()
            .map(|&window| projections + 4.0 * keys(window) * h)
            .sum()
    }
}

/// Refuses the JinaBERT configs Ember cannot run: Jina's `jina-bert-v2-qk-post-norm` remote
/// code (jina-embeddings-v2-base-code), which normalises Q and K after their projections, and an
/// ALiBi bias too large to expand ([`MAX_ALIBI_VALUES`]).
fn jina_checks<'v>(
    get: &dyn Fn(&str) -> Option<&'v Value>,
    invalid: &dyn Fn(String) -> BertError,
    heads: usize,
    max_positions: usize,
) -> Result<(), BertError> {
    if let Some(auto_map) = get("auto_map") {
        if auto_map.to_string().contains("qk-post-norm") {
            return Err(invalid(format!(
                "auto_map {auto_map} names Jina's jina-bert-v2-qk-post-norm code (jina-embeddings-v2-base-code), which normalises Q and K after their projections: Ember does not run it"
            )));
        }
    }
    let values = (2 * max_positions - 1).saturating_mul(heads);
    if values > MAX_ALIBI_VALUES {
        return Err(invalid(format!(
            "ALiBi over max_position_embeddings = {max_positions} for {heads} heads needs {values} bias values, more than the {MAX_ALIBI_VALUES} Ember expands"
        )));
    }
    Ok(())
}

/// Reads ModernBERT's extras (see [`ModernBertParams`]); `get` looks a key up (`None` when
/// absent or `null`), `invalid` makes the error naming the file.
fn modern_params<'v>(
    get: &dyn Fn(&str) -> Option<&'v Value>,
    invalid: &dyn Fn(String) -> BertError,
    layers: usize,
    head_dim: usize,
    max_positions: usize,
) -> Result<ModernBertParams, BertError> {
    let boolean = |key: &str| -> Result<bool, BertError> {
        match get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(invalid(format!("\"{key}\" = {v} is not a boolean"))),
        }
    };
    let count = |key: &str, default: u64| -> Result<usize, BertError> {
        match get(key) {
            None => Ok(default as usize),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0 && n <= MAX_POSITIONS as u64)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    invalid(format!(
                        "\"{key}\" = {v} is not an integer in 1..={MAX_POSITIONS}"
                    ))
                }),
        }
    };
    check_rotary(get, invalid, head_dim, max_positions)?;
    // transformers' `sliding_window` (half the window), set in a config, overrides
    // `local_attention` through its setter; `local_attention` 0 or 1 is the token alone.
    let window = match get("sliding_window") {
        Some(_) => count("sliding_window", 0)?,
        None => match get("local_attention") {
            Some(v) if v.as_u64() == Some(0) => 0,
            _ => count("local_attention", DEFAULT_LOCAL_ATTENTION)? / 2,
        },
    };
    let windows = match get("layer_types") {
        Some(Value::Array(kinds)) => {
            if kinds.len() != layers {
                return Err(invalid(format!(
                    "\"layer_types\" lists {} layers, num_hidden_layers = {layers}",
                    kinds.len()
                )));
            }
            kinds
                .iter()
                .map(|kind| match kind.as_str() {
                    Some("full_attention") => Ok(None),
                    Some("sliding_attention") => Ok(Some(window)),
                    _ => Err(invalid(format!(
                        "\"layer_types\" holds {kind}: only \"full_attention\" and \"sliding_attention\" are ModernBERT's"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(v) => {
            return Err(invalid(format!(
                "\"layer_types\" = {v} is not a list of layer kinds"
            )))
        }
        None => {
            let every = count("global_attn_every_n_layers", DEFAULT_GLOBAL_EVERY)?;
            (0..layers)
                .map(|i| (!i.is_multiple_of(every)).then_some(window))
                .collect()
        }
    };
    // transformers 5's `rope_parameters` per layer kind, else the published configs' keys.
    let parameters = match get("rope_parameters") {
        None => None,
        Some(Value::Object(kinds)) => Some(kinds),
        Some(v) => {
            return Err(invalid(format!(
                "\"rope_parameters\" = {v} is not an object"
            )))
        }
    };
    if let Some(scaling) = get("rope_scaling") {
        return Err(invalid(format!(
            "\"rope_scaling\" = {scaling}: scaled rotary positions are not supported"
        )));
    }
    let theta = |kind: &str, key: &str, default: f64| -> Result<f64, BertError> {
        let entry = parameters
            .and_then(|p| p.get(kind))
            .filter(|v| !v.is_null());
        let value = match entry {
            None => get(key),
            Some(Value::Object(entry)) => {
                check_rope_type(invalid, &format!("\"rope_parameters\".\"{kind}\""), entry)?;
                entry
                    .get("rope_theta")
                    .filter(|v| !v.is_null())
                    .or_else(|| get(key))
            }
            Some(v) => {
                return Err(invalid(format!(
                    "\"rope_parameters\".\"{kind}\" = {v} is not an object"
                )))
            }
        };
        match value {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| {
                    invalid(format!(
                        "the {kind} rope_theta {v} is not a positive number"
                    ))
                }),
        }
    };
    Ok(ModernBertParams {
        norm_bias: boolean("norm_bias")?,
        attention_bias: boolean("attention_bias")?,
        mlp_bias: boolean("mlp_bias")?,
        windows,
        global_rope_theta: theta("full_attention", "global_rope_theta", DEFAULT_GLOBAL_THETA)?,
        local_rope_theta: theta("sliding_attention", "local_rope_theta", DEFAULT_LOCAL_THETA)?,
    })
}

/// What rotary positions ask of a config: a `head_dim`, if given, equal to `H / nh`, and even;
/// and tables (`max_position_embeddings · head_dim` floats per θ, sized from these numbers
/// alone: there is no position table in the file to check them against) of at most 64 MiB
/// (ModernBERT-base: 8192 · 64, 2 MiB).
fn check_rotary<'v>(
    get: &dyn Fn(&str) -> Option<&'v Value>,
    invalid: &dyn Fn(String) -> BertError,
    head_dim: usize,
    max_positions: usize,
) -> Result<(), BertError> {
    if let Some(v) = get("head_dim") {
        if v.as_u64() != Some(head_dim as u64) {
            return Err(invalid(format!(
                "\"head_dim\" = {v} is not hidden_size / num_attention_heads = {head_dim}"
            )));
        }
    }
    if max_positions.saturating_mul(head_dim) > MAX_ROTARY_VALUES {
        return Err(invalid(format!(
            "max_position_embeddings = {max_positions} × head dimension {head_dim} is past the {MAX_ROTARY_VALUES} values Ember's rotary tables hold"
        )));
    }
    if !head_dim.is_multiple_of(2) {
        return Err(invalid(format!(
            "the head dimension hidden_size / num_attention_heads = {head_dim} is odd: rotary positions need it even"
        )));
    }
    Ok(())
}

/// A `rope_parameters` entry (`what` names it in the error) must be of the default (unscaled)
/// type.
fn check_rope_type(
    invalid: &dyn Fn(String) -> BertError,
    what: &str,
    entry: &serde_json::Map<String, Value>,
) -> Result<(), BertError> {
    match entry.get("rope_type").or_else(|| entry.get("type")) {
        None => Ok(()),
        Some(Value::String(t)) if t == "default" => Ok(()),
        Some(t) => Err(invalid(format!(
            "{what} has rope_type {t}: only \"default\" rotary positions are supported"
        ))),
    }
}

/// Reads NomicBERT's extras (see [`RotaryParams`]) and refuses the published nomic-ai
/// options that change the architecture (transformers 5 ignores them and would run another
/// model than the one trained): pre-LayerNorm, biases, partial or interleaved or scaled rotary
/// positions, RMSNorm, parallel blocks, causal attention, a non-SwiGLU MLP.
fn nomic_params<'v>(
    get: &dyn Fn(&str) -> Option<&'v Value>,
    invalid: &dyn Fn(String) -> BertError,
    head_dim: usize,
    max_positions: usize,
) -> Result<RotaryParams, BertError> {
    for key in [
        "prenorm",
        "qkv_proj_bias",
        "mlp_fc1_bias",
        "mlp_fc2_bias",
        "rotary_emb_interleaved",
        "use_rms_norm",
        "parallel_block",
        "causal",
    ] {
        match get(key) {
            None | Some(Value::Bool(false)) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "\"{key}\" = {v} is not supported (Ember runs NomicBERT with it false, as nomic-embed-text-v1.5)"
                )))
            }
        }
    }
    if let Some(v) = get("activation_function").filter(|v| v.as_str() != Some("swiglu")) {
        return Err(invalid(format!(
            "\"activation_function\" = {v} is not supported (only \"swiglu\")"
        )));
    }
    if let Some(v) = get("rotary_emb_fraction").filter(|v| v.as_f64() != Some(1.0)) {
        return Err(invalid(format!(
            "\"rotary_emb_fraction\" = {v} is not supported (only 1.0: every head dimension rotated)"
        )));
    }
    for key in [
        "rotary_scaling_factor",
        "rotary_emb_scale_base",
        "rope_scaling",
    ] {
        if let Some(v) = get(key) {
            return Err(invalid(format!(
                "\"{key}\" = {v}: scaled rotary positions are not supported"
            )));
        }
    }
    check_rotary(get, invalid, head_dim, max_positions)?;
    let rope_theta = default_rope_theta(
        get,
        invalid,
        "rope_parameters",
        &["rope_theta", "rotary_emb_base"],
        DEFAULT_NOMIC_THETA,
    )?;
    Ok(RotaryParams {
        rope_theta,
        ntk_factor: None,
    })
}

/// The `entry` key's (`rope_parameters`, or a legacy `rope_scaling`) `rope_theta`, the entry
/// checked to be of the default, unscaled type; else the `fallback` key's, else `default`.
fn default_rope_theta<'v>(
    get: &dyn Fn(&str) -> Option<&'v Value>,
    invalid: &dyn Fn(String) -> BertError,
    entry: &str,
    fallback: &[&str],
    default: f64,
) -> Result<f64, BertError> {
    let theta = match get(entry) {
        None => None,
        Some(Value::Object(map)) => {
            check_rope_type(invalid, &format!("\"{entry}\""), map)?;
            map.get("rope_theta").filter(|v| !v.is_null())
        }
        Some(v) => return Err(invalid(format!("\"{entry}\" = {v} is not an object"))),
    };
    match theta.or_else(|| fallback.iter().find_map(|key| get(key))) {
        None => Ok(default),
        Some(v) => positive_theta(invalid, v),
    }
}

fn positive_theta(invalid: &dyn Fn(String) -> BertError, v: &Value) -> Result<f64, BertError> {
    v.as_f64()
        .filter(|t| t.is_finite() && *t > 0.0)
        .ok_or_else(|| invalid(format!("the rope_theta {v} is not a positive number")))
}

/// Reads GTE's rotary positions (see [`RotaryParams`]). transformers 5's `gte` configs:
/// `rope_parameters` (only the default type; a legacy `rope_scaling` becomes one, so it is
/// refused unless of that type), else `rope_theta`, else 160 000. Alibaba-NLP's `new` configs,
/// as their remote code reads them: `rope_theta` (else 10 000) and `rope_scaling` (none, or
/// the fixed NTK scaling `{"type": "ntk", "factor": f}`), with the options that would change
/// the architecture refused: absolute positions, RMSNorm, the log-n attention scale.
fn gte_params<'v>(
    get: &dyn Fn(&str) -> Option<&'v Value>,
    invalid: &dyn Fn(String) -> BertError,
    published: bool,
    head_dim: usize,
    max_positions: usize,
) -> Result<RotaryParams, BertError> {
    check_rotary(get, invalid, head_dim, max_positions)?;
    if !published {
        // transformers' `convert_rope_params_to_dict`: `rope_scaling or rope_parameters`, a
        // legacy `rope_scaling` (when it is truthy) replacing the other entry whole.
        let legacy = get("rope_scaling").is_some_and(|v| match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Null => false,
        });
        let entry = if legacy {
            "rope_scaling"
        } else {
            "rope_parameters"
        };
        let rope_theta =
            default_rope_theta(get, invalid, entry, &["rope_theta"], DEFAULT_GTE_THETA)?;
        return Ok(RotaryParams {
            rope_theta,
            ntk_factor: None,
        });
    }
    let require = |key: &str, want: &str, default: &str| -> Result<(), BertError> {
        match get(key) {
            None => Ok(()),
            Some(Value::String(s)) if s == want => Ok(()),
            Some(v) => Err(invalid(format!(
                "\"{key}\" = {v} is not supported (Ember runs Alibaba-NLP's GTE with {want:?}, the default {default:?})"
            ))),
        }
    };
    require("position_embedding_type", "rope", "rope")?;
    require("layer_norm_type", "layer_norm", "layer_norm")?;
    match get("logn_attention_scale") {
        None | Some(Value::Bool(false)) => {}
        Some(v) => {
            return Err(invalid(format!(
                "\"logn_attention_scale\" = {v} is not supported (Ember runs Alibaba-NLP's GTE without the log-n attention scale, as published)"
            )))
        }
    }
    let rope_theta = match get("rope_theta") {
        None => DEFAULT_NEW_THETA,
        Some(v) => positive_theta(invalid, v)?,
    };
    let ntk_factor = match get("rope_scaling") {
        None => None,
        Some(Value::Object(entry))
            if entry.get("type").and_then(Value::as_str) == Some("ntk")
                && entry.get("mixed_b").is_none_or(Value::is_null) =>
        {
            let factor = entry
                .get("factor")
                .and_then(Value::as_f64)
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| {
                    invalid(format!(
                        "\"rope_scaling\" = {}: its \"factor\" must be a positive number",
                        Value::Object(entry.clone())
                    ))
                })?;
            // The published code rescales only when `max_position_embeddings · factor` is past
            // `max_position_embeddings`.
            (factor > 1.0).then_some(factor)
        }
        Some(v) => {
            return Err(invalid(format!(
                "\"rope_scaling\" = {v} is not supported (only the fixed NTK scaling {{\"type\": \"ntk\", \"factor\": f}})"
            )))
        }
    };
    Ok(RotaryParams {
        rope_theta,
        ntk_factor,
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384,
        "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6,
        "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522}"#;

    #[test]
    fn reads_minilm_config() {
        let c = BertConfig::from_json_str(MINILM, Path::new("config.json")).unwrap();
        assert_eq!(c.hidden_size, 384);
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.activation, Activation::Gelu);
    }

    #[test]
    fn reads_the_roberta_family_with_positions_after_the_padding_row() {
        // all-distilroberta-v1 / paraphrase-multilingual-mpnet-base-v2 style: 514 rows, pad 1.
        for model_type in ["roberta", "xlm-roberta", "camembert"] {
            let text = MINILM
                .replace("\"bert\"", &format!("\"{model_type}\""))
                .replace("512", "514")
                .replace(
                    "\"type_vocab_size\": 2",
                    "\"type_vocab_size\": 1, \"pad_token_id\": 1",
                );
            let c = BertConfig::from_json_str(&text, Path::new("config.json")).unwrap();
            assert_eq!(
                c.position_ids,
                PositionIds::AfterPadding { pad_token_id: 1 }
            );
            assert_eq!((c.position_ids.first_row(), c.max_tokens()), (2, 512));
        }
        let bert = BertConfig::from_json_str(MINILM, Path::new("config.json")).unwrap();
        assert_eq!(
            (bert.position_ids, bert.max_tokens()),
            (PositionIds::FromZero, 512)
        );
        // transformers' create_position_ids_from_input_ids: padding keeps row pad_token_id and
        // does not advance the count.
        let rows: Vec<usize> = PositionIds::AfterPadding { pad_token_id: 1 }
            .rows(&[0, 7, 1, 1, 9, 2])
            .collect();
        assert_eq!(rows, [2, 3, 1, 1, 4, 5]);
        let rows: Vec<usize> = PositionIds::FromZero.rows(&[0, 7, 1, 2]).collect();
        assert_eq!(rows, [0, 1, 2, 3]);
        // A padding id that leaves no row for tokens is refused, naming the file.
        let text = MINILM.replace("\"bert\"", "\"roberta\"").replace(
            "\"type_vocab_size\": 2",
            "\"type_vocab_size\": 1, \"pad_token_id\": 511",
        );
        let err = BertConfig::from_json_str(&text, Path::new("r/config.json")).unwrap_err();
        assert!(
            err.to_string().contains("r/config.json") && err.to_string().contains("pad_token_id"),
            "{err}"
        );
    }

    #[test]
    fn reads_mpnet_with_its_relative_bias_and_no_token_types() {
        // all-mpnet-base-v2's config.json.
        let text = r#"{"architectures": ["MPNetForMaskedLM"], "attention_probs_dropout_prob": 0.1,
            "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 768,
            "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 514,
            "model_type": "mpnet", "num_attention_heads": 12, "num_hidden_layers": 12,
            "pad_token_id": 1, "relative_attention_num_buckets": 32, "vocab_size": 30527}"#;
        let c = BertConfig::from_json_str(text, Path::new("config.json")).unwrap();
        assert_eq!(c.family, ModelFamily::Mpnet);
        assert_eq!(c.relative_attention_buckets, Some(32));
        assert_eq!((c.type_vocab_size, c.max_tokens()), (0, 512));
        assert_eq!(
            c.position_ids,
            PositionIds::AfterPadding { pad_token_id: 1 }
        );
        // transformers' buckets: keys before the query (and the query) 0–15, after it 16–31.
        for (d, bucket) in [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-8, 8),
            (8, 24),
            (-90, 14),
            (-91, 15),
            (90, 30),
            (91, 31),
            (600, 31),
        ] {
            assert_eq!(relative_position_bucket(d, 32, 128), bucket, "{d}");
        }
        let bias = expand_relative_bias(&(0..64).map(|v| v as f32).collect::<Vec<_>>(), 2, 3);
        // Head 1, distances −3..=3: buckets 3, 2, 1, 0, 17, 18, 19 → rows × 2 heads + 1.
        assert_eq!(&bias[7..], &[7.0, 5.0, 3.0, 1.0, 35.0, 37.0, 39.0]);
        let few = text.replace(
            "\"relative_attention_num_buckets\": 32",
            "\"relative_attention_num_buckets\": 16",
        );
        let err = BertConfig::from_json_str(&few, Path::new("m/config.json")).unwrap_err();
        assert!(
            err.to_string().contains("relative_attention_num_buckets"),
            "{err}"
        );
    }

    #[test]
    fn reads_distilbert_s_own_keys() {
        // multi-qa-distilbert-cos-v1's config.json.
        let text = r#"{"activation": "gelu", "architectures": ["DistilBertModel"],
            "attention_dropout": 0.1, "dim": 768, "dropout": 0.1, "hidden_dim": 3072,
            "initializer_range": 0.02, "max_position_embeddings": 512, "model_type": "distilbert",
            "n_heads": 12, "n_layers": 6, "pad_token_id": 0, "qa_dropout": 0.1,
            "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": false, "vocab_size": 30522}"#;
        let c = BertConfig::from_json_str(text, Path::new("config.json")).unwrap();
        assert_eq!(c.family, ModelFamily::DistilBert);
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size
            ),
            (768, 6, 12, 3072)
        );
        assert_eq!(
            (c.type_vocab_size, c.max_tokens(), c.layer_norm_eps),
            (0, 512, 1e-12)
        );
        assert_eq!(c.position_ids, PositionIds::FromZero);
        assert_eq!(c.activation, Activation::Gelu);
        // Type errors name DistilBERT's key; the divisibility check speaks BERT's names.
        let bad = text.replace("\"n_heads\": 12", "\"n_heads\": 7");
        let err = BertConfig::from_json_str(&bad, Path::new("d/config.json")).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads = 7"), "{err}");
        let bad = text.replace("\"dim\": 768", "\"dim\": \"768\"");
        let err = BertConfig::from_json_str(&bad, Path::new("d/config.json")).unwrap_err();
        assert!(err.to_string().contains("\"dim\""), "{err}");
    }

    /// ModernBERT-base's published config (nomic-ai/modernbert-embed-base's keys), trimmed.
    const MODERNBERT: &str = r#"{"architectures": ["ModernBertModel"], "model_type": "modernbert",
        "hidden_size": 768, "num_hidden_layers": 22, "num_attention_heads": 12,
        "intermediate_size": 1152, "vocab_size": 50368, "max_position_embeddings": 8192,
        "hidden_activation": "gelu", "norm_eps": 1e-05, "layer_norm_eps": 1e-05,
        "norm_bias": false, "attention_bias": false, "mlp_bias": false,
        "global_attn_every_n_layers": 3, "local_attention": 128,
        "global_rope_theta": 160000.0, "local_rope_theta": 10000.0,
        "position_embedding_type": "absolute", "pad_token_id": 50283}"#;

    #[test]
    fn reads_modernbert_in_both_formats() {
        let c = BertConfig::from_json_str(MODERNBERT, Path::new("config.json")).unwrap();
        assert_eq!(c.family, ModelFamily::ModernBert);
        assert_eq!((c.type_vocab_size, c.max_tokens()), (0, 8192));
        assert_eq!(c.layer_norm_eps, 1e-5);
        assert_eq!(c.activation, Activation::Gelu);
        let m = c.modern.as_ref().unwrap();
        assert!(!m.norm_bias && !m.attention_bias && !m.mlp_bias);
        assert_eq!(
            (m.global_rope_theta, m.local_rope_theta),
            (160_000.0, 10_000.0)
        );
        assert_eq!(m.windows.len(), 22);
        for (i, w) in m.windows.iter().enumerate() {
            assert_eq!(*w, (i % 3 != 0).then_some(64), "layer {i}");
        }
        // transformers 5's layout: `layer_types` and `rope_parameters`, which win.
        let text = MODERNBERT
            .replace(
                "\"global_attn_every_n_layers\": 3,",
                r#""layer_types": ["sliding_attention", "full_attention"], "norm_bias": true,"#,
            )
            .replace("\"num_hidden_layers\": 22", "\"num_hidden_layers\": 2")
            .replace(
                "\"global_rope_theta\": 160000.0,",
                r#""rope_parameters": {"full_attention": {"rope_theta": 80000.0, "rope_type": "default"},
                    "sliding_attention": {"rope_type": "default"}},"#,
            )
            .replace("\"norm_bias\": false,", "");
        let c = BertConfig::from_json_str(&text, Path::new("config.json")).unwrap();
        let m = c.modern.clone().unwrap();
        assert_eq!(m.windows, [Some(64), None]);
        assert!(m.norm_bias);
        // A kind without its θ takes `local_rope_theta`, as transformers' setdefault does.
        assert_eq!(
            (m.global_rope_theta, m.local_rope_theta),
            (80_000.0, 10_000.0)
        );
        // transformers' `sliding_window` (half the window) overrides `local_attention`; a
        // `local_attention` of 0 is each token alone.
        let sliding = MODERNBERT.replace("\"local_attention\": 128", "\"sliding_window\": 32");
        let m = BertConfig::from_json_str(&sliding, Path::new("config.json")).unwrap();
        assert_eq!(m.modern.unwrap().windows[1], Some(32));
        let zero = MODERNBERT.replace("\"local_attention\": 128", "\"local_attention\": 0");
        let m = BertConfig::from_json_str(&zero, Path::new("config.json")).unwrap();
        assert_eq!(m.modern.unwrap().windows[1], Some(0));
        // Its FLOPs: GeGLU's 3HF per token, and each local query sees at most 129 keys.
        let (h, f) = (768.0, 1152.0);
        let flops = c.encoder_flops(1000);
        let keys = 1000.0 * 1000.0 + (1000.0 * 129.0 - 2.0 * (64.0 * 65.0 / 2.0));
        let want = 2.0 * 1000.0 * 2.0 * (4.0 * h * h + 3.0 * h * f) + 4.0 * keys * h;
        assert_eq!(flops, want);
    }

    #[test]
    fn refuses_modernbert_settings_it_cannot_run() {
        for (from, to) in [
            (
                "\"local_attention\": 128",
                "\"rope_scaling\": {\"rope_type\": \"yarn\"}",
            ),
            (
                "\"global_attn_every_n_layers\": 3",
                "\"layer_types\": [\"full_attention\"]",
            ),
            (
                "\"global_attn_every_n_layers\": 3",
                "\"layer_types\": \"full_attention\"",
            ),
            (
                "\"global_attn_every_n_layers\": 3",
                "\"global_attn_every_n_layers\": 0",
            ),
            (
                "\"num_attention_heads\": 12",
                "\"num_attention_heads\": 256",
            ),
            ("\"norm_bias\": false", "\"norm_bias\": \"no\""),
            ("\"local_rope_theta\": 10000.0", "\"local_rope_theta\": -1"),
            (
                "\"hidden_activation\": \"gelu\"",
                "\"hidden_activation\": \"swiglu\"",
            ),
            ("\"local_attention\": 128", "\"head_dim\": 32"),
            // Rotary tables of 2^20 positions × 64: past the 2^24 values allowed.
            (
                "\"max_position_embeddings\": 8192",
                "\"max_position_embeddings\": 1048576",
            ),
            (
                "\"global_rope_theta\": 160000.0",
                r#""rope_parameters": {"full_attention": {"rope_type": "dynamic", "rope_theta": 1.0}}"#,
            ),
        ] {
            let text = MODERNBERT.replace(from, to);
            assert_ne!(text, MODERNBERT);
            let err = BertConfig::from_json_str(&text, Path::new("m/config.json")).unwrap_err();
            assert!(err.to_string().contains("m/config.json"), "{err}");
        }
        let err = BertConfig::from_json_str(
            &MODERNBERT.replace(
                "\"local_attention\": 128",
                "\"rope_scaling\": {\"factor\": 2}",
            ),
            Path::new("m/config.json"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("rope_scaling"), "{err}");
    }

    #[test]
    fn refuses_what_cannot_run() {
        for (from, to) in [
            ("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
            ("\"absolute\"", "\"relative_key\""),
            ("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish\""),
            (
                "\"num_hidden_layers\": 6",
                "\"num_hidden_layers\": 1000000000",
            ),
            ("\"hidden_size\": 384", "\"hidden_size\": 0"),
            ("\"vocab_size\": 30522", "\"vocab_size\": -1"),
            ("\"model_type\": \"bert\"", "\"model_type\": \"gpt2\""),
            ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": 0"),
            ("\"hidden_size\": 384", "\"hidden_size\": 384.0"),
            ("\"num_hidden_layers\": 6", "\"num_hidden_layers\": \"6\""),
            ("\"hidden_act\": \"gelu\"", "\"hidden_act\": 1"),
        ] {
            let text = MINILM.replace(from, to);
            assert_ne!(text, MINILM);
            let err = BertConfig::from_json_str(&text, Path::new("m/config.json")).unwrap_err();
            assert!(err.to_string().contains("m/config.json"), "{err}");
        }
        let err = BertConfig::from_json_str("{", Path::new("m/config.json")).unwrap_err();
        assert!(err.to_string().contains("m/config.json"), "{err}");
    }

    /// nomic-ai/nomic-embed-text-v1.5's published config.json (its nomic-ai keys only),
    /// trimmed of training-only keys.
    const NOMIC: &str = r#"{"activation_function": "swiglu", "architectures": ["NomicBertModel"],
        "model_type": "nomic_bert", "n_embd": 768, "n_head": 12, "n_inner": 3072, "n_layer": 12,
        "n_positions": 8192, "layer_norm_epsilon": 1e-12, "rotary_emb_base": 1000,
        "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": false, "rotary_emb_scale_base": null,
        "rotary_scaling_factor": null, "prenorm": false, "qkv_proj_bias": false,
        "mlp_fc1_bias": false, "mlp_fc2_bias": false, "use_rms_norm": false,
        "parallel_block": false, "causal": false, "type_vocab_size": 2, "vocab_size": 30528,
        "pad_vocab_size_multiple": 64}"#;

    #[test]
    fn reads_nomic_bert_in_both_formats() {
        let path = Path::new("m/config.json");
        let c = BertConfig::from_json_str(NOMIC, path).unwrap();
        assert_eq!(c.family, ModelFamily::NomicBert);
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
            (768, 12, 12)
        );
        assert_eq!(
            (c.intermediate_size, c.vocab_size, c.type_vocab_size),
            (3072, 30528, 2)
        );
        assert_eq!((c.max_position_embeddings, c.max_tokens()), (8192, 8192));
        assert_eq!((c.layer_norm_eps, c.activation), (1e-12, Activation::Silu));
        assert_eq!(
            c.rotary,
            Some(RotaryParams {
                rope_theta: 1000.0,
                ntk_factor: None
            })
        );
        assert_eq!(c.position_ids, PositionIds::FromZero);
        assert!(c.modern.is_none());
        // 128 heads of 6: an even head dimension is all rotary positions need.
        let heads = NOMIC.replace("\"n_head\": 12", "\"n_head\": 128");
        assert_eq!(
            BertConfig::from_json_str(&heads, path).unwrap().head_dim(),
            6
        );
        // transformers 5's keys win over the published ones; its defaults where both are absent.
        let native = r#"{"model_type": "nomic_bert", "hidden_size": 64, "n_embd": 768,
            "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96,
            "vocab_size": 100, "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0},
            "rotary_emb_base": 1000, "hidden_act": "gelu"}"#;
        let c = BertConfig::from_json_str(native, path).unwrap();
        assert_eq!((c.hidden_size, c.intermediate_size), (64, 96));
        assert_eq!((c.max_position_embeddings, c.type_vocab_size), (2048, 2));
        assert_eq!(
            c.rotary,
            Some(RotaryParams {
                rope_theta: 5000.0,
                ntk_factor: None
            })
        );
        assert_eq!(c.activation, Activation::Gelu);
        let c = BertConfig::from_json_str(&native.replace("rope_parameters", "x"), path).unwrap();
        assert_eq!(
            c.rotary,
            Some(RotaryParams {
                rope_theta: 1000.0,
                ntk_factor: None
            })
        );
        // SwiGLU's FFN is H → 2F → F → H.
        let flops = c.encoder_flops(10);
        let (h, f) = (64.0, 96.0);
        assert_eq!(
            flops,
            2.0 * 10.0 * (2.0 * (4.0 * h * h + 3.0 * h * f) + 40.0 * h)
        );
    }

    #[test]
    fn refuses_nomic_bert_settings_it_cannot_run() {
        for (from, to) in [
            ("\"prenorm\": false", "\"prenorm\": true"),
            ("\"qkv_proj_bias\": false", "\"qkv_proj_bias\": true"),
            ("\"mlp_fc1_bias\": false", "\"mlp_fc1_bias\": true"),
            ("\"mlp_fc2_bias\": false", "\"mlp_fc2_bias\": true"),
            (
                "\"rotary_emb_interleaved\": false",
                "\"rotary_emb_interleaved\": true",
            ),
            (
                "\"rotary_emb_fraction\": 1.0",
                "\"rotary_emb_fraction\": 0.5",
            ),
            (
                "\"rotary_scaling_factor\": null",
                "\"rotary_scaling_factor\": 2.0",
            ),
            (
                "\"rotary_emb_scale_base\": null",
                "\"rotary_emb_scale_base\": 512",
            ),
            ("\"use_rms_norm\": false", "\"use_rms_norm\": true"),
            ("\"parallel_block\": false", "\"parallel_block\": true"),
            ("\"causal\": false", "\"causal\": true"),
            ("\"swiglu\"", "\"gelu\""),
            ("\"rotary_emb_base\": 1000", "\"rotary_emb_base\": -1"),
            ("\"n_head\": 12", "\"n_head\": 256"), // head dim 3: odd
            ("\"n_positions\": 8192", "\"n_positions\": 1000000"),
            (
                "\"rotary_emb_base\": 1000",
                "\"rope_parameters\": {\"rope_type\": \"dynamic\", \"rope_theta\": 1000}",
            ),
            (
                "\"n_embd\": 768",
                "\"n_embd\": 768, \"rope_scaling\": {\"type\": \"ntk\"}",
            ),
        ] {
            let text = NOMIC.replace(from, to);
            assert_ne!(text, NOMIC, "{from}");
            let result = BertConfig::from_json_str(&text, Path::new("m/config.json"));
            let err = result.unwrap_err().to_string();
            assert!(err.contains("m/config.json"), "{err}");
        }
    }

    /// Alibaba-NLP/gte-base-en-v1.5's published config.json (read by its remote code),
    /// trimmed of its `auto_map`.
    const GTE_NEW: &str = r#"{"architectures": ["NewModel"], "attention_probs_dropout_prob": 0.0,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
        "intermediate_size": 3072, "layer_norm_eps": 1e-12, "layer_norm_type": "layer_norm",
        "logn_attention_clip1": false, "logn_attention_scale": false,
        "max_position_embeddings": 8192, "model_type": "new", "num_attention_heads": 12,
        "num_hidden_layers": 12, "pack_qkv": true, "pad_token_id": 0,
        "position_embedding_type": "rope", "rope_scaling": {"factor": 2.0, "type": "ntk"},
        "rope_theta": 500000, "type_vocab_size": 0, "unpad_inputs": false,
        "use_memory_efficient_attention": false, "vocab_size": 30528}"#;

    #[test]
    fn reads_gte_configs() {
        let path = Path::new("m/config.json");
        let c = BertConfig::from_json_str(GTE_NEW, path).unwrap();
        assert_eq!(c.family, ModelFamily::Gte);
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.type_vocab_size),
            (768, 3072, 0)
        );
        assert_eq!((c.max_tokens(), c.activation), (8192, Activation::Gelu));
        assert_eq!(
            c.rotary,
            Some(RotaryParams {
                rope_theta: 500000.0,
                ntk_factor: Some(2.0)
            })
        );
        // NTK: θ·f, and every frequency divided by f^(2/hd); ω₀ = 1 / 2^(1/32).
        let w = c.rotary.as_ref().unwrap().inverse_frequencies(64);
        assert_eq!(w.len(), 32);
        assert_eq!(w[0], 1.0 / 2f64.powf(1.0 / 32.0) as f32);
        let plain = ember_cpu::rotary::inverse_frequencies(1_000_000.0, 64);
        assert!(w.iter().zip(&plain).all(|(a, b)| a < b));
        // A factor of 1 (or none) leaves the frequencies alone; NewConfig's defaults.
        let one = GTE_NEW.replace("\"factor\": 2.0", "\"factor\": 1.0");
        let c = BertConfig::from_json_str(&one, path).unwrap();
        assert_eq!(c.rotary.unwrap().ntk_factor, None);
        let bare = r#"{"model_type": "new", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 100}"#;
        let c = BertConfig::from_json_str(bare, path).unwrap();
        assert_eq!((c.max_position_embeddings, c.type_vocab_size), (2048, 1));
        assert_eq!(
            c.rotary,
            Some(RotaryParams {
                rope_theta: 10000.0,
                ntk_factor: None
            })
        );
        // transformers 5's GteConfig: rope_parameters, else rope_theta, else 160 000.
        let native = bare.replace("\"new\"", "\"gte\"");
        let c = BertConfig::from_json_str(&native, path).unwrap();
        assert_eq!((c.max_position_embeddings, c.type_vocab_size), (8192, 1));
        assert_eq!(
            c.rotary,
            Some(RotaryParams {
                rope_theta: 160000.0,
                ntk_factor: None
            })
        );
        let theta = native.replace("\"vocab_size\"", "\"rope_theta\": 5000, \"vocab_size\"");
        let c = BertConfig::from_json_str(&theta, path).unwrap();
        assert_eq!(c.rotary.unwrap().rope_theta, 5000.0);
        let both = theta.replace(
            "\"vocab_size\"",
            "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 7000.0}, \"vocab_size\"",
        );
        let c = BertConfig::from_json_str(&both, path).unwrap();
        assert_eq!(c.rotary.as_ref().unwrap().rope_theta, 7000.0);
        // A legacy rope_scaling replaces rope_parameters whole (`rope_scaling or
        // rope_parameters`): its rope_theta, else the top-level one.
        for (scaling, theta) in [
            (r#"{"rope_type": "default"}"#, 5000.0),
            (r#"{"type": "default", "rope_theta": 9.0}"#, 9.0),
            ("{}", 7000.0),
        ] {
            let text = both.replace(
                "\"vocab_size\"",
                &format!("\"rope_scaling\": {scaling}, \"vocab_size\""),
            );
            let c = BertConfig::from_json_str(&text, path).unwrap();
            assert_eq!(c.rotary.as_ref().unwrap().rope_theta, theta, "{scaling}");
        }
        assert!(!c.split_qkv);
        // Alibaba-NLP's pack_qkv false: Q, K, V stored apart (transformers' gte ignores it).
        let split = bare.replace("\"vocab_size\"", "\"pack_qkv\": false, \"vocab_size\"");
        assert!(BertConfig::from_json_str(&split, path).unwrap().split_qkv);
        let native_split = split.replace("\"new\"", "\"gte\"");
        assert!(
            !BertConfig::from_json_str(&native_split, path)
                .unwrap()
                .split_qkv
        );
        let bad = bare.replace("\"vocab_size\"", "\"pack_qkv\": \"no\", \"vocab_size\"");
        assert!(BertConfig::from_json_str(&bad, path).is_err());
        // The gated FFN counts as NomicBERT's.
        let (h, f) = (64.0, 96.0);
        assert_eq!(
            c.encoder_flops(10),
            2.0 * 10.0 * (2.0 * (4.0 * h * h + 3.0 * h * f) + 40.0 * h)
        );
    }

    #[test]
    fn refuses_gte_settings_it_cannot_run() {
        for (from, to) in [
            (
                "\"logn_attention_scale\": false",
                "\"logn_attention_scale\": true",
            ),
            (
                "\"layer_norm_type\": \"layer_norm\"",
                "\"layer_norm_type\": \"rms_norm\"",
            ),
            (
                "\"position_embedding_type\": \"rope\"",
                "\"position_embedding_type\": \"absolute\"",
            ),
            ("\"type\": \"ntk\"", "\"type\": \"linear\""),
            ("\"type\": \"ntk\"", "\"type\": \"ntk\", \"mixed_b\": 0.5"),
            ("\"factor\": 2.0", "\"factor\": -2.0"),
            ("\"rope_theta\": 500000", "\"rope_theta\": 0"),
            (
                "\"num_attention_heads\": 12",
                "\"num_attention_heads\": 256",
            ), // head dim 3
            ("\"type_vocab_size\": 0", "\"type_vocab_size\": -1"),
            // transformers' GteConfig: a scaled rope_type fails there too.
            ("\"model_type\": \"new\"", "\"model_type\": \"gte\""),
        ] {
            let mut text = GTE_NEW.replace(from, to);
            if to.contains("\"gte\"") {
                text = text.replace("\"rope_theta\": 500000, ", "");
            }
            assert_ne!(text, GTE_NEW, "{from}");
            let result = BertConfig::from_json_str(&text, Path::new("m/config.json"));
            let err = result.unwrap_err().to_string();
            assert!(err.contains("m/config.json"), "{from} → {to}: {err}");
        }
        let dynamic = r#"{"model_type": "gte", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 100,
            "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 5.0}}"#;
        let err = BertConfig::from_json_str(dynamic, Path::new("m/config.json")).unwrap_err();
        assert!(err.to_string().contains("dynamic"), "{err}");
    }

    /// jina-embeddings-v2-base-en's config.json as published.
    const JINA_BASE: &str = r#"{"_name_or_path": "jinaai/jina-bert-implementation",
        "architectures": ["JinaBertForMaskedLM"], "attention_probs_dropout_prob": 0.0,
        "attn_implementation": "torch", "auto_map": {
        "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
        "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel"},
        "classifier_dropout": null, "emb_pooler": "mean", "feed_forward_type": "geglu",
        "gradient_checkpointing": false, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 8192, "model_max_length": 8192,
        "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12,
        "pad_token_id": 0, "position_embedding_type": "alibi", "torch_dtype": "float32",
        "transformers_version": "4.26.0", "type_vocab_size": 2, "use_cache": true,
        "vocab_size": 30528}"#;

    #[test]
    fn reads_jina_bert_configs() {
        let c = BertConfig::from_json_str(JINA_BASE, Path::new("config.json")).unwrap();
        assert_eq!(c.family, ModelFamily::JinaBert);
        assert_eq!(c.family.name(), "jina_bert");
        assert_eq!(c.positions(), "alibi");
        assert!(c.gated_ffn);
        assert_eq!(c.activation, Activation::Gelu);
        assert_eq!((c.max_tokens(), c.type_vocab_size), (8192, 2));
        assert_eq!(c.position_ids, PositionIds::FromZero);
        // GEGLU's FLOPs: H → 2F → F → H.
        let gated = c.encoder_flops(10);
        let plain = BertConfig::from_json_str(MINILM, Path::new("config.json")).unwrap();
        assert!(!plain.gated_ffn);
        let (h, f) = (768.0, 3072.0);
        assert_eq!(
            gated,
            12.0 * 10.0 * (2.0 * (4.0 * h * h + 3.0 * h * f) + 4.0 * 10.0 * h)
        );
        // ReGLU fixes ReLU whatever hidden_act says; "original" is BERT's FFN with hidden_act.
        let reglu = JINA_BASE
            .replace("\"geglu\"", "\"reglu\"")
            .replace("\"gelu\"", "\"mish\"");
        let c = BertConfig::from_json_str(&reglu, Path::new("config.json")).unwrap();
        assert_eq!((c.activation, c.gated_ffn), (Activation::Relu, true));
        for text in [
            JINA_BASE.replace("\"geglu\"", "\"original\""),
            JINA_BASE.replace("\"feed_forward_type\": \"geglu\",", ""),
        ] {
            let c = BertConfig::from_json_str(&text, Path::new("config.json")).unwrap();
            assert_eq!((c.activation, c.gated_ffn), (Activation::Gelu, false));
        }
        // ALiBi over 8192 positions: 12 × 16383 values, the slopes of base-en's 12 heads.
        let bias = alibi_bias(12, 8191);
        assert_eq!(bias.len(), 12 * 16383);
        assert_eq!(bias[8191], 0.0);
        assert_eq!(bias[8191 + 3], -0.5 * 3.0);
        assert_eq!(bias[8191 - 3], -0.5 * 3.0);
        assert_eq!(bias[11 * 16383 + 8191 + 100], -(2f32.powf(-3.5)) * 100.0);
    }

    #[test]
    fn refuses_jina_bert_settings_it_cannot_run() {
        for (from, to, says) in [
            ("\"geglu\"", "\"swiglu\"", "feed_forward_type"),
            ("\"geglu\"", "\"reglu \"", "feed_forward_type"),
            (
                "jina-bert-implementation--modeling_bert",
                "jina-bert-v2-qk-post-norm--modeling_bert",
                "qk-post-norm",
            ),
            // 12 × (2·2^20 − 1) bias values: past the 2^24 Ember expands.
            (
                "\"max_position_embeddings\": 8192",
                "\"max_position_embeddings\": 1048576",
                "ALiBi",
            ),
            (
                "\"hidden_act\": \"gelu\"",
                "\"hidden_act\": \"mish\"",
                "hidden_act",
            ),
        ] {
            let mut text = JINA_BASE.replace(from, to);
            if to.contains("mish") {
                text = text.replace("\"geglu\"", "\"original\"");
            }
            assert_ne!(text, JINA_BASE, "{from}");
            let result = BertConfig::from_json_str(&text, Path::new("m/config.json"));
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("m/config.json") && err.contains(says),
                "{from} → {to}: {err}"
            );
        }
        // ALiBi belongs to JinaBERT's "bert" configs only.
        let roberta = JINA_BASE.replace("\"model_type\": \"bert\"", "\"model_type\": \"roberta\"");
        let err = BertConfig::from_json_str(&roberta, Path::new("m/config.json")).unwrap_err();
        assert!(err.to_string().contains("alibi"), "{err}");
    }
}
