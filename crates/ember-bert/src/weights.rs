//! A BERT checkpoint's weights as plain `f32` arrays in checkpoint layout, one encoder layer at
//! a time: what a backend that keeps its own copy (ember-cuda uploads them to a GPU) reads,
//! with the same names, prefixes, legacy `gamma`/`beta` and shape checks as [`BertModel`].
//!
//! Shapes (`H` hidden, `F` FFN): linear weights `[n, k]` (`nn.Linear` layout), biases `[n]`;
//! Q, K and V fused into one `[3H, H]` weight and `[3H]` bias, as the CPU model fuses them.
//! ModernBERT's layers come in the same struct under their own names (see [`LayerWeights`]);
//! the biases and LayerNorm shifts it does not have are zeros (adding them is exact).
//!
//! [`BertModel`]: crate::BertModel

use ember_cpu::Precision;
use ember_tensor::WeightFile;

use crate::model::{bert_ffn_names, swap_halves, WeightLoader};
use crate::{BertConfig, BertError, ModelFamily};

/// A LayerNorm's `γ`, `β`, each `[H]`.
#[derive(Clone, Debug)]
pub struct NormWeights {
    /// The scale `γ` (`LayerNorm.weight`, or a legacy `gamma`), `[H]`.
    pub gamma: Vec<f32>,
    /// The shift `β` (`LayerNorm.bias`, or a legacy `beta`), `[H]`.
    pub beta: Vec<f32>,
}

/// A `nn.Linear(k → n)`: `weight` `[n, k]`, `bias` `[n]`.
#[derive(Clone, Debug)]
pub struct LinearWeights {
    /// `W`, `[n, k]` row-major: output `j` is `x · W[j] + bias[j]`.
    pub weight: Vec<f32>,
    /// `[n]`.
    pub bias: Vec<f32>,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
}

/// `BertEmbeddings`: `word` `[vocab, H]`, `position` `[max_positions, H]`, `token_type`
/// `[types, H]`, and their LayerNorm.
#[derive(Clone, Debug)]
pub struct EmbeddingWeights {
    /// `embeddings.word_embeddings.weight`, `[vocab, H]`: one row per token id.
    pub word: Vec<f32>,
    /// `embeddings.position_embeddings.weight`, `[max_positions, H]`: one row per position
    /// (`None` for ModernBERT, whose positions are rotary).
    pub position: Option<Vec<f32>>,
    /// `embeddings.token_type_embeddings.weight`, `[types, H]` (MPNet, DistilBERT: one row of zeros).
    pub token_type: Vec<f32>,
    /// `embeddings.LayerNorm`, applied to the sum of the three rows.
    pub norm: NormWeights,
}

/// One `BertLayer`, in forward order (ModernBERT's names in brackets; NomicBERT's:
/// `attn.Wqkv`, `attn.out_proj`, `norm1`, `[mlp.fc12; mlp.fc11]`, `mlp.fc2`, `norm2`; GTE's:
/// `attention.qkv_proj`, `attention.o_proj`, `attn_ln`, `mlp.up_gate_proj` with its halves
/// swapped, `mlp.down_proj`, `mlp_ln`; JinaBERT's GLU: BERT's attention names, then
/// `mlp.gated_layers`, `mlp.wo`, `mlp.layernorm`).
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// `attention.self.{query,key,value}` fused: `[3H, H]` (`attn.Wqkv`).
    pub qkv: LinearWeights,
    /// `attention.output.dense`: `[H, H]` (`attn.Wo`).
    pub attention_output: LinearWeights,
    /// `attention.output.LayerNorm`, over the attention output plus the layer's input
    /// (`attn_norm`, over the layer's input before attention; `None` in layer 0).
    pub attention_norm: Option<NormWeights>,
    /// `intermediate.dense`: `[F, H]` (`mlp.Wi`: `[2F, H]`, GeGLU's input then gate;
    /// NomicBERT: SwiGLU's gate `fc12`, then `fc11`; GTE: the gate, then up; JinaBERT's GLU:
    /// `mlp.gated_layers` = `[gate; up]`).
    pub intermediate: LinearWeights,
    /// `output.dense`: `[H, F]` (`mlp.Wo`).
    pub output: LinearWeights,
    /// `output.LayerNorm`, over the FFN output plus `attention_norm`'s output (`mlp_norm`,
    /// over the FFN's input).
    pub output_norm: NormWeights,
}

/// Reads a checkpoint's tensors as `f32` (widened exactly from f16/bf16), checked against a
/// config. Each call copies only what it returns, so a caller that uploads layer by layer
/// holds one layer on the host at a time.
pub struct F32WeightReader<'a> {
    loader: WeightLoader<'a>,
    config: &'a BertConfig,
}

impl<'a> F32WeightReader<'a> {
    /// A reader of `file`'s tensors, checked against the shapes `config` implies. Reads nothing
    /// yet: each tensor is found and checked when [`embeddings`](Self::embeddings) or
    /// [`layer`](Self::layer) asks for it.
    pub fn new(config: &'a BertConfig, file: &'a WeightFile) -> Self {
        Self {
            // The precision only matters to the CPU model's packing, not used here.
            loader: WeightLoader::new(file, config.family, Precision::F32),
            config,
        }
    }

    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, BertError> {
        Ok(self.loader.tensor(name, shape)?.into_vec())
    }

    fn norm(&self, stem: &str) -> Result<NormWeights, BertError> {
        self.norm_with(stem, true)
    }

    /// A LayerNorm; `β` zeros when it has none (`bias` false).
    fn norm_with(&self, stem: &str, bias: bool) -> Result<NormWeights, BertError> {
        let h = self.config.hidden_size;
        Ok(NormWeights {
            gamma: self.vec(&format!("{stem}.weight"), &[h])?,
            beta: match bias {
                true => self.vec(&format!("{stem}.bias"), &[h])?,
                false => vec![0.0; h],
            },
        })
    }

    fn linear(&self, stem: &str, n: usize, k: usize) -> Result<LinearWeights, BertError> {
        self.linear_with(stem, n, k, true)
    }

    /// A linear; its bias zeros when it has none (`bias` false).
    fn linear_with(
        &self,
        stem: &str,
        n: usize,
        k: usize,
        bias: bool,
    ) -> Result<LinearWeights, BertError> {
        Ok(LinearWeights {
            weight: self.vec(&format!("{stem}.weight"), &[n, k])?,
            bias: match bias {
                true => self.vec(&format!("{stem}.bias"), &[n])?,
                false => vec![0.0; n],
            },
            n,
            k,
        })
    }

    /// The linears `stems` (Q, K, V: each `[H, H]` with a bias) fused into one `[3H, H]`. Each
    /// is read and shape-checked before the fused weight is sized: the config alone does not
    /// justify 3H² floats (H = 2^16 with 1 MB of embeddings asked for 48 GiB before the missing
    /// query weight was noticed), as in the CPU loader's `fused`.
    fn fused_qkv(&self, stems: [String; 3]) -> Result<LinearWeights, BertError> {
        let h = self.config.hidden_size;
        let [q, k, v] = [
            self.linear(&stems[0], h, h)?,
            self.linear(&stems[1], h, h)?,
            self.linear(&stems[2], h, h)?,
        ];
        Ok(LinearWeights {
            weight: [q.weight, k.weight, v.weight].concat(),
            bias: [q.bias, k.bias, v.bias].concat(),
            n: 3 * h,
            k: h,
        })
    }

    /// The embedding tables and their LayerNorm.
    pub fn embeddings(&self) -> Result<EmbeddingWeights, BertError> {
        let c = self.config;
        let h = c.hidden_size;
        if let Some(modern) = &c.modern {
            return Ok(EmbeddingWeights {
                word: self.vec("embeddings.tok_embeddings.weight", &[c.vocab_size, h])?,
                position: None,
                token_type: vec![0.0; h],
                norm: self.norm_with("embeddings.norm", modern.norm_bias)?,
            });
        }
        if matches!(c.family, ModelFamily::Gte | ModelFamily::JinaBert) {
            return Ok(EmbeddingWeights {
                word: self.vec("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
                position: None,
                token_type: match c.type_vocab_size {
                    0 => vec![0.0; h],
                    types => self.vec("embeddings.token_type_embeddings.weight", &[types, h])?,
                },
                norm: self.norm("embeddings.LayerNorm")?,
            });
        }
        if c.family == ModelFamily::NomicBert {
            return Ok(EmbeddingWeights {
                word: self.vec("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
                position: None,
                token_type: self.vec(
                    "embeddings.token_type_embeddings.weight",
                    &[c.type_vocab_size, h],
                )?,
                norm: self.norm("emb_ln")?,
            });
        }
        Ok(EmbeddingWeights {
            word: self.vec("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: Some(self.vec(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?),
            // MPNet has no token-type table: a row of zeros adds nothing, exactly.
            token_type: match c.type_vocab_size {
                0 => vec![0.0; h],
                types => self.vec("embeddings.token_type_embeddings.weight", &[types, h])?,
            },
            norm: self.norm("embeddings.LayerNorm")?,
        })
    }

    /// MPNet's relative position bias expanded per distance, `([heads, 2·span + 1], span)`
    /// (see [`crate::expand_relative_bias`]; `span` = [`BertConfig::max_tokens`] − 1), or
    /// JinaBERT's ALiBi ([`crate::alibi_bias`]); `None` for the families without either.
    pub fn relative_bias(&self) -> Result<Option<(Vec<f32>, usize)>, BertError> {
        self.loader.relative_bias(self.config)
    }

    /// ModernBERT's `final_norm`; `None` for the other families.
    pub fn final_norm(&self) -> Result<Option<NormWeights>, BertError> {
        self.config
            .modern
            .as_ref()
            .map(|modern| self.norm_with("final_norm", modern.norm_bias))
            .transpose()
    }

    /// Encoder layer `index` (`< num_hidden_layers`).
    pub fn layer(&self, index: usize) -> Result<LayerWeights, BertError> {
        let (h, f) = (self.config.hidden_size, self.config.intermediate_size);
        if let Some(modern) = &self.config.modern {
            let stem = format!("layers.{index}");
            let (attention, mlp) = (modern.attention_bias, modern.mlp_bias);
            let linear = |name: &str, n: usize, k: usize, bias: bool| {
                self.linear_with(&format!("{stem}.{name}"), n, k, bias)
            };
            let norm = |name: &str| self.norm_with(&format!("{stem}.{name}"), modern.norm_bias);
            return Ok(LayerWeights {
                qkv: linear("attn.Wqkv", 3 * h, h, attention)?,
                attention_output: linear("attn.Wo", h, h, attention)?,
                // transformers' layer 0 has an identity in place of `attn_norm`.
                attention_norm: (index > 0).then(|| norm("attn_norm")).transpose()?,
                intermediate: linear("mlp.Wi", 2 * f, h, mlp)?,
                output: linear("mlp.Wo", h, f, mlp)?,
                output_norm: norm("mlp_norm")?,
            });
        }
        if self.config.family == ModelFamily::Gte {
            let stem = format!("encoder.layer.{index}");
            let qkv = if !self.config.split_qkv {
                self.linear(&format!("{stem}.attention.qkv_proj"), 3 * h, h)?
            } else {
                self.fused_qkv(["q", "k", "v"].map(|p| format!("{stem}.attention.{p}_proj")))?
            };
            // `[up; gate]` as stored; the gated activation reads `[gate; up]`.
            let up_gate = self.linear_with(&format!("{stem}.mlp.up_gate_proj"), 2 * f, h, false)?;
            return Ok(LayerWeights {
                qkv,
                attention_output: self.linear(&format!("{stem}.attention.o_proj"), h, h)?,
                attention_norm: Some(self.norm(&format!("{stem}.attn_ln"))?),
                intermediate: LinearWeights {
                    weight: swap_halves(&up_gate.weight, f * h),
                    bias: vec![0.0; 2 * f],
                    n: 2 * f,
                    k: h,
                },
                output: self.linear(&format!("{stem}.mlp.down_proj"), h, f)?,
                output_norm: self.norm(&format!("{stem}.mlp_ln"))?,
            });
        }
        if self.config.family == ModelFamily::NomicBert {
            let stem = format!("encoder.layers.{index}");
            let linear = |name: &str, n: usize, k: usize| {
                self.linear_with(&format!("{stem}.{name}"), n, k, false)
            };
            // SwiGLU's `[2F, H]`: the gate (`fc12`, activated) first, then `fc11`.
            let gate = linear("mlp.fc12", f, h)?;
            let up = linear("mlp.fc11", f, h)?;
            return Ok(LayerWeights {
                qkv: linear("attn.Wqkv", 3 * h, h)?,
                attention_output: linear("attn.out_proj", h, h)?,
                attention_norm: Some(self.norm(&format!("{stem}.norm1"))?),
                intermediate: LinearWeights {
                    weight: [gate.weight, up.weight].concat(),
                    bias: vec![0.0; 2 * f],
                    n: 2 * f,
                    k: h,
                },
                output: linear("mlp.fc2", h, f)?,
                output_norm: self.norm(&format!("{stem}.norm2"))?,
            });
        }
        let stem = format!("encoder.layer.{index}");
        let qkv_stems = ["query", "key", "value"].map(|p| format!("{stem}.attention.self.{p}"));
        if self.config.family == ModelFamily::JinaBert {
            self.loader.refuse_qk_norm(&stem)?;
        }
        let (up, up_rows, up_bias, down, down_norm) = bert_ffn_names(self.config);
        Ok(LayerWeights {
            qkv: self.fused_qkv(qkv_stems)?,
            attention_output: self.linear(&format!("{stem}.attention.output.dense"), h, h)?,
            attention_norm: Some(self.norm(&format!("{stem}.attention.output.LayerNorm"))?),
            intermediate: self.linear_with(&format!("{stem}.{up}"), up_rows, h, up_bias)?,
            output: self.linear(&format!("{stem}.{down}"), h, f)?,
            output_norm: self.norm(&format!("{stem}.{down_norm}"))?,
        })
    }
}
