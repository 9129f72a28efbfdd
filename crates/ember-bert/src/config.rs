//! `config.json` of a Hugging Face `BertModel`: parsed, checked for what Ember can run, and
//! bounded before anything is allocated from it.

use std::path::{Path, PathBuf};

use ember_cpu::Activation;
use serde::Deserialize;

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
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    /// `hidden_act` mapped by [`Activation::from_hf_name`]: `gelu` → exact erf GELU;
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast` → tanh GELU; `relu`; `linear`.
    pub activation: Activation,
}

/// `config.json` as written by transformers; defaults are `BertConfig`'s.
#[derive(Deserialize)]
struct RawConfig {
    hidden_size: Option<u64>,
    num_hidden_layers: Option<u64>,
    num_attention_heads: Option<u64>,
    intermediate_size: Option<u64>,
    vocab_size: Option<u64>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: u64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: u64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
    model_type: Option<String>,
}

fn default_max_positions() -> u64 {
    512
}
fn default_type_vocab() -> u64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

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
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, BertError> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|source| BertError::ConfigJson {
                path: path.to_owned(),
                source,
            })?;
        let invalid = |message: String| BertError::Config {
            path: PathBuf::from(path),
            message,
        };
        if let Some(model_type) = &raw.model_type {
            if model_type != "bert" {
                return Err(invalid(format!(
                    "model_type {model_type:?} is not supported (Ember runs \"bert\")"
                )));
            }
        }
        let field = |name: &str, value: Option<u64>, max: usize| -> Result<usize, BertError> {
            let value = value.ok_or_else(|| invalid(format!("missing \"{name}\"")))?;
            if value == 0 || value > max as u64 {
                return Err(invalid(format!(
                    "\"{name}\" = {value} is outside 1..={max}"
                )));
            }
            Ok(value as usize)
        };
        let hidden_size = field("hidden_size", raw.hidden_size, MAX_HIDDEN)?;
        let num_hidden_layers = field("num_hidden_layers", raw.num_hidden_layers, MAX_LAYERS)?;
        let num_attention_heads = field("num_attention_heads", raw.num_attention_heads, MAX_HEADS)?;
        let intermediate_size =
            field("intermediate_size", raw.intermediate_size, MAX_INTERMEDIATE)?;
        let vocab_size = field("vocab_size", raw.vocab_size, MAX_VOCAB)?;
        let max_position_embeddings = field(
            "max_position_embeddings",
            Some(raw.max_position_embeddings),
            MAX_POSITIONS,
        )?;
        let type_vocab_size = field("type_vocab_size", Some(raw.type_vocab_size), MAX_TYPE_VOCAB)?;
        if hidden_size % num_attention_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads = {num_attention_heads} does not divide hidden_size = {hidden_size}"
            )));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0 && raw.layer_norm_eps < 1.0)
        {
            return Err(invalid(format!(
                "layer_norm_eps = {} is not in (0, 1)",
                raw.layer_norm_eps
            )));
        }
        if raw.position_embedding_type != "absolute" {
            return Err(invalid(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                raw.position_embedding_type
            )));
        }
        let activation = Activation::from_hf_name(&raw.hidden_act).ok_or_else(|| {
            invalid(format!(
                "hidden_act {:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, linear)",
                raw.hidden_act
            ))
        })?;
        Ok(Self {
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            vocab_size,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps as f32,
            activation,
        })
    }

    /// `hd = H / nh`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Floating-point operations (a multiply-add counts 2) of the encoder on one sequence of
    /// `len` tokens: per layer and token the four projections, `2·(3H² + H² + 2HF)`, plus
    /// attention's `q·kᵀ` and `p·v`, `2·2·len·H`. Embeddings, LayerNorm, softmax and GELU are
    /// left out (they are O(H) per token). Ember's throughput figures are counted in these.
    pub fn encoder_flops(&self, len: usize) -> f64 {
        let (h, f, l) = (
            self.hidden_size as f64,
            self.intermediate_size as f64,
            len as f64,
        );
        let per_token = 2.0 * (4.0 * h * h + 2.0 * h * f) + 4.0 * l * h;
        self.num_hidden_layers as f64 * l * per_token
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
    fn refuses_what_cannot_run() {
        for (from, to) in [
            ("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
            ("\"absolute\"", "\"relative_key\""),
            ("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"swish\""),
            (
                "\"num_hidden_layers\": 6",
                "\"num_hidden_layers\": 1000000000",
            ),
            ("\"hidden_size\": 384", "\"hidden_size\": 0"),
            ("\"vocab_size\": 30522", "\"vocab_size\": -1"),
            ("\"model_type\": \"bert\"", "\"model_type\": \"gpt2\""),
            ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": 0"),
        ] {
            let text = MINILM.replace(from, to);
            assert_ne!(text, MINILM);
            let err = BertConfig::from_json_str(&text, Path::new("m/config.json")).unwrap_err();
            assert!(err.to_string().contains("m/config.json"), "{err}");
        }
        let err = BertConfig::from_json_str("{", Path::new("m/config.json")).unwrap_err();
        assert!(err.to_string().contains("m/config.json"), "{err}");
    }
}
