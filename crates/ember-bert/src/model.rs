//! `BertModel` weights and the forward pass over a packed batch.
//!
//! Embedding tables and LayerNorm parameters stay views into the memory-mapped file (f32) or
//! widened copies (f16/bf16); the four linear layers of each encoder layer are packed once at
//! load into the GEMM microkernel's layout, Q, K and V fused into one `[3H, H]` projection.
//!
//! Two forward passes share the weights' layout: BERT's post-LayerNorm layers (BERT, RoBERTa,
//! MPNet, DistilBERT), and ModernBERT's pre-LayerNorm layers with rotary positions, GeGLU and
//! sliding-window attention ([`crate::ModernBertParams`]).

use std::path::{Path, PathBuf};

use ember_cpu::gemm::{Int8Rotation, Int8Rounding, WeightData};
use ember_cpu::{
    apply_rotary, attention_varlen_with_terms, gated_activation, layernorm, linear, Activation,
    AttentionTerms, PackedLinear, Precision, RelativeBias, Rotary,
};
use ember_tensor::{find_weight_file, F32Tensor, StoredData, StoredTensor, WeightFile};

use crate::{alibi_bias, expand_relative_bias, BertConfig, BertError, ModelFamily};

/// A LayerNorm's `γ` and `β`, each `[H]` (`β` zeros where the model has none: ModernBERT).
struct LayerNormWeights {
    gamma: F32Tensor,
    beta: F32Tensor,
}

/// `BertEmbeddings`: word, position and token-type tables (in their stored dtype, read in
/// place: an f16 table stays f16, and only the rows in use are paged in) and their LayerNorm.
struct Embeddings {
    word: StoredTensor,
    /// `None` for ModernBERT, whose positions are rotary.
    position: Option<StoredTensor>,
    /// `None` for MPNet, which has no token-type table.
    token_type: Option<StoredTensor>,
    norm: LayerNormWeights,
}

/// MPNet's relative position bias, expanded per distance ([`expand_relative_bias`]), or
/// JinaBERT's ALiBi ([`alibi_bias`]).
struct RelativeBiasTable {
    values: Vec<f32>,
    span: usize,
}

/// One `BertLayer` (ModernBERT's names in brackets).
struct Layer {
    /// `attention.self.{query,key,value}` fused: `[3H, H]` (`attn.Wqkv`).
    qkv: PackedLinear,
    /// `attention.output.dense`: `[H, H]` (`attn.Wo`).
    attention_output: PackedLinear,
    /// `attention.output.LayerNorm`, after the attention block (`attn_norm`, before it; none
    /// in layer 0).
    attention_norm: Option<LayerNormWeights>,
    /// `intermediate.dense`: `[F, H]` (`mlp.Wi`, `[2F, H]`: GeGLU's input and gate).
    intermediate: PackedLinear,
    /// `output.dense`: `[H, F]` (`mlp.Wo`).
    output: PackedLinear,
    /// `output.LayerNorm`, after the feed-forward block (`mlp_norm`, before it).
    output_norm: LayerNormWeights,
}

/// What ModernBERT's forward pass needs beside the layers.
struct ModernParts {
    /// `final_norm`, after the last layer.
    final_norm: LayerNormWeights,
    /// The rotary tables of the full-attention layers' `θ` and of the sliding-window layers'.
    global_rotary: Rotary,
    local_rotary: Rotary,
}

/// A loaded BERT encoder. Immutable after load: share it between threads freely; each
/// concurrent caller brings its own [`Workspace`].
pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    relative_bias: Option<RelativeBiasTable>,
    modern: Option<ModernParts>,
    /// NomicBERT's and GTE's rotary tables (`None` for the other families).
    rotary: Option<Rotary>,
}

/// Tokens per step of the feed-forward block (`[rows, F]` intermediate: 1.5 MB for
/// all-MiniLM-L6-v2, 3 MB for BERT-base). Each row's result is the same for any value.
const FFN_ROW_BLOCK: usize = 256;

/// Activation buffers reused across forward passes; they grow to the largest batch seen and
/// never shrink, so steady-state encoding allocates nothing here.
#[derive(Default)]
pub struct Workspace {
    hidden: Vec<f32>,
    /// `[T, 3H]` Q, K, V; after attention, the feed-forward intermediate `[rows, F]`
    /// (gated feed-forwards: `[rows, 2F]`).
    qkv: Vec<f32>,
    /// `[T, H]` attention output; a gated feed-forward's gated `[rows, F]` after it.
    context: Vec<f32>,
    attention: Vec<f32>,
}

/// Grows `buffer` to at least `len` values (never shrinks) and returns its first `len`.
fn grow(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Input channels per linear layer that the int8 path keeps exact (f32) when the model is
/// loaded with calibration text ([`BertModel::calibrated_int8`]): those with the
/// largest absolute activation over the calibration batch: as many as the int8 kernels
/// allow.
pub const INT8_OUTLIER_CHANNELS: usize = ember_cpu::gemm::MAX_OUTLIER_CHANNELS;

/// Indices of a layer's four linear layers in [`LayerInputs`] (the order their inputs
/// appear in the forward pass).
mod linear_kind {
    pub(super) const QKV: usize = 0;
    pub(super) const ATTENTION_OUTPUT: usize = 1;
    pub(super) const INTERMEDIATE: usize = 2;
    pub(super) const OUTPUT: usize = 3;
}

/// The inputs (`[T, k]`) of one encoder layer's four linear layers (QKV, attention output,
/// intermediate, output) over a calibration batch, indexed by [`linear_kind`].
type LayerInputs = [Vec<f32>; 4];

/// Appends `x`, the input of linear `kind`, to the calibration's `inputs` (if calibrating).
fn record(inputs: &mut Option<LayerInputs>, kind: usize, x: &[f32]) {
    if let Some(inputs) = inputs {
        inputs[kind].extend_from_slice(x);
    }
}

/// Called by the calibrating forward pass at the end of each encoder layer with its index
/// and its linear layers' inputs.
type LayerCalibration<'c> = &'c mut dyn FnMut(usize, &LayerInputs) -> Result<(), BertError>;

/// The feed-forward of a layer under BERT's names, `(up, up rows, up has a bias, down, down's
/// LayerNorm)`: `intermediate.dense`, `output.dense`, `output.LayerNorm`; or JinaBERT's GLU:
/// `mlp.gated_layers` = `[gate; up]` (`[2F, H]`, no bias; the gate, activated, first, the order
/// the gated activation reads), `mlp.wo`, `mlp.layernorm`.
pub(crate) fn bert_ffn_names(
    config: &BertConfig,
) -> (&'static str, usize, bool, &'static str, &'static str) {
    let f = config.intermediate_size;
    if config.family == ModelFamily::JinaBert && config.gated_ffn {
        ("mlp.gated_layers", 2 * f, false, "mlp.wo", "mlp.layernorm")
    } else {
        (
            "intermediate.dense",
            f,
            true,
            "output.dense",
            "output.LayerNorm",
        )
    }
}

/// Finds checkpoint tensors by their `BertModel` names (translated to MPNet's and DistilBERT's
/// for those; ModernBERT's are asked for by their own), with or without a `bert.`, `roberta.`,
/// `mpnet.`, `distilbert.` or `model.` prefix (GTE: `gte.` or `new.`).
pub(crate) struct WeightLoader<'a> {
    file: &'a WeightFile,
    family: ModelFamily,
    prefix: &'static str,
    /// Precision the linear layers are packed in.
    precision: Precision,
}

impl<'a> WeightLoader<'a> {
    pub(crate) fn new(file: &'a WeightFile, family: ModelFamily, precision: Precision) -> Self {
        let word = match family {
            ModelFamily::ModernBert => "embeddings.tok_embeddings.weight",
            _ => "embeddings.word_embeddings.weight",
        };
        // Any dtype counts: a prefixed word table Ember cannot read must be reported under its
        // real name, with its dtype, not as the unprefixed name missing.
        // GTE's task heads: transformers' (`gte.`) and Alibaba-NLP's (`new.`).
        let prefixes: &[&'static str] = match family {
            ModelFamily::Gte => &["gte.", "new."],
            _ => &["bert.", "roberta.", "mpnet.", "distilbert.", "model."],
        };
        let prefix = prefixes
            .iter()
            .copied()
            .find(|prefix| file.has_tensor(&format!("{prefix}{word}")))
            .unwrap_or("");
        Self {
            file,
            family,
            prefix,
            precision,
        }
    }

    /// The int8 outlier channels of a linear whose input has `k` channels: the
    /// [`INT8_OUTLIER_CHANNELS`] with the largest `|x|` over its calibration `rows`
    /// (`[T, k]`; ties to the lower channel); none without calibration.
    fn outliers(rows: &[f32], k: usize) -> Vec<usize> {
        if rows.is_empty() || k == 0 {
            return Vec::new();
        }
        let mut max = vec![0.0f32; k];
        for row in rows.chunks_exact(k) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
        let mut channels: Vec<usize> = (0..k).collect();
        channels.sort_by(|&a, &b| max[b].total_cmp(&max[a]).then(a.cmp(&b)));
        channels.truncate(INT8_OUTLIER_CHANNELS);
        channels
    }

    fn path(&self) -> PathBuf {
        self.file.path().to_owned()
    }

    /// `embeddings.*`: the three tables and their LayerNorm (ModernBERT: `tok_embeddings` and
    /// `norm`; NomicBERT: no position table, `emb_ln`; GTE, JinaBERT: no position table, a
    /// token-type table unless `type_vocab_size` is 0).
    fn embeddings(&self, config: &BertConfig) -> Result<Embeddings, BertError> {
        let h = config.hidden_size;
        if let Some(modern) = &config.modern {
            return Ok(Embeddings {
                word: self.stored("embeddings.tok_embeddings.weight", &[config.vocab_size, h])?,
                position: None,
                token_type: None,
                norm: self.norm("embeddings.norm", h, modern.norm_bias)?,
            });
        }
        if matches!(config.family, ModelFamily::Gte | ModelFamily::JinaBert) {
            return Ok(Embeddings {
                word: self.stored("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
                position: None,
                token_type: match config.type_vocab_size {
                    0 => None,
                    types => {
                        Some(self.stored("embeddings.token_type_embeddings.weight", &[types, h])?)
                    }
                },
                norm: self.layer_norm("embeddings.LayerNorm", h)?,
            });
        }
        if config.family == ModelFamily::NomicBert {
            return Ok(Embeddings {
                word: self.stored("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
                position: None,
                token_type: Some(self.stored(
                    "embeddings.token_type_embeddings.weight",
                    &[config.type_vocab_size, h],
                )?),
                norm: self.layer_norm("emb_ln", h)?,
            });
        }
        Ok(Embeddings {
            word: self.stored("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: Some(self.stored(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?),
            token_type: match config.type_vocab_size {
                0 => None,
                types => Some(self.stored("embeddings.token_type_embeddings.weight", &[types, h])?),
            },
            norm: self.layer_norm("embeddings.LayerNorm", h)?,
        })
    }

    /// ModernBERT's `final_norm` and rotary tables (`None` for the other families).
    fn modern_parts(&self, config: &BertConfig) -> Result<Option<ModernParts>, BertError> {
        let Some(modern) = &config.modern else {
            return Ok(None);
        };
        let (hd, len) = (config.head_dim(), config.max_tokens());
        Ok(Some(ModernParts {
            final_norm: self.norm("final_norm", config.hidden_size, modern.norm_bias)?,
            global_rotary: Rotary::new(modern.global_rope_theta, hd, len)?,
            local_rotary: Rotary::new(modern.local_rope_theta, hd, len)?,
        }))
    }

    /// `encoder.layer.{index}`, its linear layers (int8) calibrated on `inputs` if given.
    fn layer(
        &self,
        config: &BertConfig,
        index: usize,
        inputs: Option<&LayerInputs>,
    ) -> Result<Layer, BertError> {
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let stem = format!("encoder.layer.{index}");
        let rows = |kind: usize| inputs.map_or(&[][..], |inputs| &inputs[kind][..]);
        // Input channels per linear kind: the layer's hidden size, but F into the output.
        let mut k_of = [h; 4];
        k_of[linear_kind::OUTPUT] = f;
        let outliers = k_of
            .iter()
            .enumerate()
            .map(|(kind, &k)| Self::outliers(rows(kind), k))
            .collect::<Vec<_>>();
        let int8 = |kind: usize| (&outliers[kind][..], rows(kind));
        if let Some(modern) = &config.modern {
            let stem = format!("layers.{index}");
            let (attention_bias, mlp_bias) = (modern.attention_bias, modern.mlp_bias);
            let linear = |name: &str, n: usize, k: usize, bias: bool, kind: usize| {
                self.linear_with(&format!("{stem}.{name}"), n, k, bias, int8(kind))
            };
            let norm = |name: &str| self.norm(&format!("{stem}.{name}"), h, modern.norm_bias);
            return Ok(Layer {
                qkv: linear("attn.Wqkv", 3 * h, h, attention_bias, linear_kind::QKV)?,
                attention_output: linear(
                    "attn.Wo",
                    h,
                    h,
                    attention_bias,
                    linear_kind::ATTENTION_OUTPUT,
                )?,
                // transformers' layer 0 has an identity in place of `attn_norm`.
                attention_norm: if index == 0 {
                    None
                } else {
                    Some(norm("attn_norm")?)
                },
                intermediate: linear("mlp.Wi", 2 * f, h, mlp_bias, linear_kind::INTERMEDIATE)?,
                output: linear("mlp.Wo", h, f, mlp_bias, linear_kind::OUTPUT)?,
                output_norm: norm("mlp_norm")?,
            });
        }
        if config.family == ModelFamily::Gte {
            let linear = |name: &str, n: usize, k: usize, bias: bool, kind: usize| {
                self.linear_with(&format!("{stem}.{name}"), n, k, bias, int8(kind))
            };
            let qkv = match config.split_qkv {
                false => linear("attention.qkv_proj", 3 * h, h, true, linear_kind::QKV)?,
                true => {
                    let stems = ["q", "k", "v"].map(|p| format!("{stem}.attention.{p}_proj"));
                    self.fused(&stems, h, h, true, int8(linear_kind::QKV))?
                }
            };
            return Ok(Layer {
                qkv,
                attention_output: linear(
                    "attention.o_proj",
                    h,
                    h,
                    true,
                    linear_kind::ATTENTION_OUTPUT,
                )?,
                attention_norm: Some(self.layer_norm(&format!("{stem}.attn_ln"), h)?),
                intermediate: self.halves_swapped(
                    &format!("{stem}.mlp.up_gate_proj"),
                    f,
                    h,
                    int8(linear_kind::INTERMEDIATE),
                )?,
                output: linear("mlp.down_proj", h, f, true, linear_kind::OUTPUT)?,
                output_norm: self.layer_norm(&format!("{stem}.mlp_ln"), h)?,
            });
        }
        if config.family == ModelFamily::NomicBert {
            let stem = format!("encoder.layers.{index}");
            let linear = |name: &str, n: usize, k: usize, kind: usize| {
                self.linear_with(&format!("{stem}.{name}"), n, k, false, int8(kind))
            };
            // SwiGLU's `[2F, H]`: the gate (`fc12`, activated) first, then `fc11`.
            let gate_up = [format!("{stem}.mlp.fc12"), format!("{stem}.mlp.fc11")];
            return Ok(Layer {
                qkv: linear("attn.Wqkv", 3 * h, h, linear_kind::QKV)?,
                attention_output: linear("attn.out_proj", h, h, linear_kind::ATTENTION_OUTPUT)?,
                attention_norm: Some(self.layer_norm(&format!("{stem}.norm1"), h)?),
                intermediate: self.fused(&gate_up, f, h, false, int8(linear_kind::INTERMEDIATE))?,
                output: linear("mlp.fc2", h, f, linear_kind::OUTPUT)?,
                output_norm: self.layer_norm(&format!("{stem}.norm2"), h)?,
            });
        }
        let qkv_stems = ["query", "key", "value"].map(|p| format!("{stem}.attention.self.{p}"));
        if config.family == ModelFamily::JinaBert {
            self.refuse_qk_norm(&stem)?;
        }
        let (up, up_rows, up_bias, down, down_norm) = bert_ffn_names(config);
        Ok(Layer {
            qkv: self.fused(&qkv_stems, h, h, true, int8(linear_kind::QKV))?,
            attention_output: self.linear(
                &format!("{stem}.attention.output.dense"),
                h,
                h,
                int8(linear_kind::ATTENTION_OUTPUT),
            )?,
            attention_norm: Some(
                self.layer_norm(&format!("{stem}.attention.output.LayerNorm"), h)?,
            ),
            intermediate: self.linear_with(
                &format!("{stem}.{up}"),
                up_rows,
                h,
                up_bias,
                int8(linear_kind::INTERMEDIATE),
            )?,
            output: self.linear(&format!("{stem}.{down}"), h, f, int8(linear_kind::OUTPUT))?,
            output_norm: self.layer_norm(&format!("{stem}.{down_norm}"), h)?,
        })
    }

    /// Refuses a JinaBERT layer `stem` whose attention normalises Q and K (`attention.self.
    /// layer_norm_q`/`layer_norm_k`: Jina's qk-post-norm code, jina-embeddings-v2-base-code,
    /// whose config may not say so).
    pub(crate) fn refuse_qk_norm(&self, stem: &str) -> Result<(), BertError> {
        let name = format!("{}{stem}.attention.self.layer_norm_q.weight", self.prefix);
        if self.file.has_tensor(&name) {
            return Err(BertError::Config {
                path: self.path(),
                message: format!(
                    "holds {name}: a JinaBERT that normalises Q and K after their projections (Jina's qk-post-norm code, jina-embeddings-v2-base-code), which Ember does not run"
                ),
            });
        }
        Ok(())
    }

    /// Loads `name` as f32 and checks its shape (see [`WeightLoader::find`]).
    pub(crate) fn tensor(&self, name: &str, shape: &[usize]) -> Result<F32Tensor, BertError> {
        let found = self.find(name)?;
        let tensor = self.file.f32_tensor(&found)?;
        self.check_shape(&found, tensor.shape(), shape)?;
        Ok(tensor)
    }

    /// Loads `name` in its stored dtype and checks its shape.
    pub(crate) fn stored(&self, name: &str, shape: &[usize]) -> Result<StoredTensor, BertError> {
        let found = self.find(name)?;
        let tensor = self.file.stored_tensor(&found)?;
        self.check_shape(&found, tensor.shape(), shape)?;
        Ok(tensor)
    }

    fn check_shape(
        &self,
        name: &str,
        found: &[usize],
        expected: &[usize],
    ) -> Result<(), BertError> {
        if found != expected {
            return Err(BertError::WeightShape {
                path: self.path(),
                name: name.to_owned(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        Ok(())
    }

    /// The checkpoint name of `name`. LayerNorm parameters saved by old transformers
    /// versions as `gamma`/`beta` are found under those names too.
    fn find(&self, name: &str) -> Result<String, BertError> {
        let name = &self.family_name(name);
        let legacy = name
            .strip_suffix("LayerNorm.weight")
            .map(|stem| format!("{stem}LayerNorm.gamma"))
            .or_else(|| {
                name.strip_suffix("LayerNorm.bias")
                    .map(|stem| format!("{stem}LayerNorm.beta"))
            });
        let candidates = [
            Some(format!("{}{name}", self.prefix)),
            legacy.map(|l| format!("{}{l}", self.prefix)),
        ];
        // Presence alone decides: tensors of a dtype Ember does not read count as found, so
        // that `f32_tensor` names their dtype, and so do a torch archive's non-contiguous views
        // (a transposed weight), which `f32_tensor` gathers (they have no `raw_bytes`).
        let found = candidates
            .iter()
            .flatten()
            .find(|candidate| self.file.has_tensor(candidate))
            .ok_or_else(|| BertError::MissingWeight {
                path: self.path(),
                name: format!("{}{name}", self.prefix),
            })?;
        Ok(found.clone())
    }

    /// The name `BertModel`'s `name` has in this family's checkpoints.
    fn family_name(&self, name: &str) -> String {
        match self.family {
            ModelFamily::Bert
            | ModelFamily::Roberta
            | ModelFamily::ModernBert
            | ModelFamily::NomicBert
            | ModelFamily::Gte
            | ModelFamily::JinaBert => name.to_owned(),
            ModelFamily::Mpnet => name
                .replace(".attention.self.query.", ".attention.attn.q.")
                .replace(".attention.self.key.", ".attention.attn.k.")
                .replace(".attention.self.value.", ".attention.attn.v.")
                .replace(".attention.output.dense.", ".attention.attn.o.")
                .replace(".attention.output.LayerNorm.", ".attention.LayerNorm."),
            ModelFamily::DistilBert => name
                .replacen("encoder.layer.", "transformer.layer.", 1)
                .replace(".attention.self.query.", ".attention.q_lin.")
                .replace(".attention.self.key.", ".attention.k_lin.")
                .replace(".attention.self.value.", ".attention.v_lin.")
                .replace(".attention.output.dense.", ".attention.out_lin.")
                .replace(".attention.output.LayerNorm.", ".sa_layer_norm.")
                .replace(".intermediate.dense.", ".ffn.lin1.")
                // Only the FFN's output is left under these names.
                .replace(".output.dense.", ".ffn.lin2.")
                .replace(".output.LayerNorm.", ".output_layer_norm."),
        }
    }

    /// Where the checkpoint's encoder layers are: `encoder.layer.` (DistilBERT:
    /// `transformer.layer.`).
    fn layers_stem(&self) -> &'static str {
        match self.family {
            ModelFamily::DistilBert => "transformer.layer.",
            ModelFamily::ModernBert => "layers.",
            ModelFamily::NomicBert => "encoder.layers.",
            _ => "encoder.layer.",
        }
    }

    /// MPNet's `encoder.relative_attention_bias.weight` (`[buckets, heads]`) expanded over
    /// every distance a sequence of [`BertConfig::max_tokens`] can hold: `(values, span)`;
    /// JinaBERT's ALiBi over the same distances; `None` for the families without either.
    pub(crate) fn relative_bias(
        &self,
        config: &BertConfig,
    ) -> Result<Option<(Vec<f32>, usize)>, BertError> {
        let heads = config.num_attention_heads;
        let span = config.max_tokens() - 1;
        if config.family == ModelFamily::JinaBert {
            return Ok(Some((alibi_bias(heads, span), span)));
        }
        let Some(buckets) = config.relative_attention_buckets else {
            return Ok(None);
        };
        let weight = self.tensor("encoder.relative_attention_bias.weight", &[buckets, heads])?;
        Ok(Some((
            expand_relative_bias(weight.data(), heads, span),
            span,
        )))
    }

    /// [`relative_bias`](Self::relative_bias) as the CPU model keeps it.
    fn relative_bias_table(
        &self,
        config: &BertConfig,
    ) -> Result<Option<RelativeBiasTable>, BertError> {
        Ok(self
            .relative_bias(config)?
            .map(|(values, span)| RelativeBiasTable { values, span }))
    }

    fn layer_norm(&self, stem: &str, hidden: usize) -> Result<LayerNormWeights, BertError> {
        self.norm(stem, hidden, true)
    }

    /// A LayerNorm's `γ`, and its `β` if it has one (`bias`), else zeros: adding them is exact.
    fn norm(&self, stem: &str, hidden: usize, bias: bool) -> Result<LayerNormWeights, BertError> {
        let beta_name = format!("{stem}.bias");
        let beta = if bias {
            self.tensor(&beta_name, &[hidden])?
        } else {
            F32Tensor::zeros(&beta_name, hidden)
        };
        Ok(LayerNormWeights {
            gamma: self.tensor(&format!("{stem}.weight"), &[hidden])?,
            beta,
        })
    }

    /// A `nn.Linear(k → n)`: weight `[n, k]`, bias `[n]`, packed for the GEMM (int8:
    /// with the input channels `outliers` exact, rotated if that pays on `calibration`).
    fn linear(
        &self,
        stem: &str,
        n: usize,
        k: usize,
        int8: (&[usize], &[f32]),
    ) -> Result<PackedLinear, BertError> {
        self.linear_with(stem, n, k, true, int8)
    }

    /// [`linear`](Self::linear), with a bias only if `bias` (`nn.Linear(bias=False)` has
    /// none).
    fn linear_with(
        &self,
        stem: &str,
        n: usize,
        k: usize,
        bias: bool,
        int8: (&[usize], &[f32]),
    ) -> Result<PackedLinear, BertError> {
        let weight = self.stored(&format!("{stem}.weight"), &[n, k])?;
        let bias = bias
            .then(|| self.tensor(&format!("{stem}.bias"), &[n]))
            .transpose()?;
        let bias = bias.as_ref().map(F32Tensor::data);
        Ok(self.pack(weight_data(weight.data()), bias, n, k, int8)?)
    }

    /// Packs a linear's weight `[n, k]` and bias in the loader's precision; int8 weights
    /// keep the input channels `outliers` exact and, calibrated, are rotated along `k` where
    /// that pays on the `calibration` rows and rounded by GPTQ against them (see
    /// [`PackedLinear::from_weight_int8`]: on all-MiniLM-L6-v2, where every linear's inputs
    /// have large values, rotation takes the mean `1 − cos` to f32 from 3.1e-4 to 1.9e-4,
    /// and GPTQ on 480 calibration sentences to about 1.2e-4).
    fn pack(
        &self,
        weight: WeightData<'_>,
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        (outliers, calibration): (&[usize], &[f32]),
    ) -> Result<PackedLinear, ember_cpu::KernelError> {
        match self.precision {
            Precision::Int8 => {
                let (rotation, rounding) = if calibration.is_empty() {
                    (Int8Rotation::Never, Int8Rounding::Nearest)
                } else {
                    (
                        Int8Rotation::Calibrated(calibration),
                        Int8Rounding::Gptq(calibration),
                    )
                };
                PackedLinear::from_weight_int8(weight, bias, n, k, outliers, rotation, rounding)
            }
            precision => PackedLinear::from_weight(weight, bias, n, k, precision),
        }
    }

    /// Refuses a checkpoint with tensors of a layer past the config's last: it would otherwise
    /// run, silently, as a shallower model than the one trained.
    fn check_no_layer_past(&self, layers: usize) -> Result<(), BertError> {
        let layer_of = |name: &str| -> Option<usize> {
            let rest = name
                .strip_prefix(self.prefix)?
                .strip_prefix(self.layers_stem())?;
            rest.split('.').next()?.parse().ok()
        };
        let names = self
            .file
            .names()
            .chain(self.file.unsupported_tensors().map(|(name, _)| name));
        for name in names {
            if let Some(layer) = layer_of(name).filter(|&layer| layer >= layers) {
                return Err(BertError::LayerPastConfig {
                    path: self.path(),
                    name: name.to_owned(),
                    layer,
                    layers,
                });
            }
        }
        Ok(())
    }

    /// Linears `stems` (each `[n, k]`, with a bias if `bias`) fused into one `[parts·n, k]`
    /// linear, kept in the stored dtype when all share it (widened to f32 otherwise): Q, K and
    /// V of a BERT layer; NomicBERT's gate and up projections.
    ///
    /// Every tensor is found and shape-checked before the fused buffers are sized: the config
    /// alone does not justify `3H²` floats (a config with `H = 2^16` and 1 MB of embeddings
    /// asked for 48 GiB before the missing query weight was noticed).
    fn fused(
        &self,
        stems: &[String],
        n: usize,
        k: usize,
        bias: bool,
        int8: (&[usize], &[f32]),
    ) -> Result<PackedLinear, BertError> {
        let mut parts = Vec::with_capacity(stems.len());
        let mut biases = Vec::with_capacity(stems.len());
        for stem in stems {
            parts.push(self.stored(&format!("{stem}.weight"), &[n, k])?);
            if bias {
                biases.push(self.tensor(&format!("{stem}.bias"), &[n])?);
            }
        }
        let bias: Vec<f32> = biases.iter().flat_map(|b| b.data()).copied().collect();
        let bias = (!bias.is_empty()).then_some(&bias[..]);
        let rows = stems.len() * n;
        let pack = |weight: WeightData<'_>| self.pack(weight, bias, rows, k, int8);
        let data: Vec<StoredData<'_>> = parts.iter().map(StoredTensor::data).collect();
        let f16: Option<Vec<_>> = data
            .iter()
            .map(|d| match d {
                StoredData::F16(w) => Some(*w),
                _ => None,
            })
            .collect();
        let bf16: Option<Vec<_>> = data
            .iter()
            .map(|d| match d {
                StoredData::Bf16(w) => Some(*w),
                _ => None,
            })
            .collect();
        let packed = match (f16, bf16) {
            (Some(parts), _) => pack(WeightData::F16(&parts.concat())),
            (_, Some(parts)) => pack(WeightData::Bf16(&parts.concat())),
            _ => {
                let mut weight = vec![0.0f32; rows * k];
                for (part, out) in data.iter().zip(weight.chunks_exact_mut(n * k)) {
                    part.widen_into(0, out);
                }
                pack(WeightData::F32(&weight))
            }
        };
        Ok(packed?)
    }

    /// GTE's `up_gate_proj` (`[2F, k]`, no bias: `up` rows, then `gate` rows) packed as
    /// `[gate; up]`, the order the gated activation reads (`act(first half) · second half`),
    /// in the stored dtype.
    fn halves_swapped(
        &self,
        stem: &str,
        f: usize,
        k: usize,
        int8: (&[usize], &[f32]),
    ) -> Result<PackedLinear, BertError> {
        let stored = self.stored(&format!("{stem}.weight"), &[2 * f, k])?;
        let half = f * k;
        let packed = match stored.data() {
            StoredData::F32(w) => {
                self.pack(WeightData::F32(&swap_halves(w, half)), None, 2 * f, k, int8)
            }
            StoredData::F16(w) => {
                self.pack(WeightData::F16(&swap_halves(w, half)), None, 2 * f, k, int8)
            }
            StoredData::Bf16(w) => self.pack(
                WeightData::Bf16(&swap_halves(w, half)),
                None,
                2 * f,
                k,
                int8,
            ),
        };
        Ok(packed?)
    }
}

/// `w` with its first `half` values moved after the rest (GTE's `[up; gate]` → `[gate; up]`).
pub(crate) fn swap_halves<T: Copy>(w: &[T], half: usize) -> Vec<T> {
    [&w[half..], &w[..half]].concat()
}

/// NomicBERT's and GTE's rotary tables for [`BertConfig::max_tokens`] positions (`None` for
/// the other families).
pub fn rotary_tables(config: &BertConfig) -> Result<Option<Rotary>, BertError> {
    let Some(params) = &config.rotary else {
        return Ok(None);
    };
    let frequencies = params.inverse_frequencies(config.head_dim());
    Ok(Some(Rotary::with_frequencies(
        &frequencies,
        config.max_tokens(),
    )?))
}

/// A stored tensor's values as the GEMM's weight input.
fn weight_data(data: StoredData<'_>) -> WeightData<'_> {
    match data {
        StoredData::F32(w) => WeightData::F32(w),
        StoredData::F16(w) => WeightData::F16(w),
        StoredData::Bf16(w) => WeightData::Bf16(w),
    }
}

impl BertModel {
    /// Loads `config.json` and the weights (`model.safetensors`, else `pytorch_model.bin`)
    /// from a Hugging Face model folder.
    pub fn from_dir(dir: &Path) -> Result<Self, BertError> {
        Self::from_dir_with(dir, Precision::F32)
    }

    /// [`BertModel::from_dir`] with the linear layers in `precision` (LayerNorm, softmax,
    /// attention and every reduction stay `f32`).
    pub fn from_dir_with(dir: &Path, precision: Precision) -> Result<Self, BertError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = WeightFile::open(find_weight_file(dir)?)?;
        Self::from_weights_with(config, &weights, precision)
    }

    /// Builds the model from a config and an opened weights file, checking every tensor's
    /// shape against the config.
    pub fn from_weights(config: BertConfig, file: &WeightFile) -> Result<Self, BertError> {
        Self::from_weights_with(config, file, Precision::F32)
    }

    /// [`BertModel::from_weights`] with the linear layers in `precision`. For
    /// [`Precision::Int8`] every channel is quantised, to nearest; see
    /// [`BertModel::calibrated_int8`] for the more accurate int8 load.
    pub fn from_weights_with(
        config: BertConfig,
        file: &WeightFile,
        precision: Precision,
    ) -> Result<Self, BertError> {
        let loader = WeightLoader::new(file, config.family, precision);
        Self::load(config, loader)
    }

    /// This model (loaded in f32 from `file`) in int8, calibrated on a batch of text
    /// (`token_ids` `[T]`, `seq_offsets` as for [`BertModel::forward`]; some thousands of
    /// tokens of varied text): runs it over the batch layer by layer, and as each layer
    /// finishes packs that layer's linear layers from `file` in int8 against their inputs
    /// there (then drops those), so only one layer's inputs are ever held. Each linear keeps
    /// the [`INT8_OUTLIER_CHANNELS`] input channels with the largest `|x|` exact (f32)
    /// beside its int8 product, is rotated along `k` if that lowers the expected error on
    /// its inputs, and is rounded to its grid by GPTQ against them (see
    /// [`PackedLinear::from_weight_int8`]). The calibration sees exact (f32) activations
    /// throughout. Deterministic: the same batch gives the same model, whatever the thread
    /// count.
    pub fn calibrated_int8(
        &self,
        file: &WeightFile,
        token_ids: &[u32],
        seq_offsets: &[usize],
    ) -> Result<BertModel, BertError> {
        let loader = WeightLoader::new(file, self.config.family, Precision::Int8);
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut pack_layer = |index: usize, inputs: &LayerInputs| -> Result<(), BertError> {
            layers.push(loader.layer(&self.config, index, Some(inputs))?);
            Ok(())
        };
        self.forward_impl(
            token_ids,
            seq_offsets,
            &mut Workspace::default(),
            Some(&mut pack_layer),
        )?;
        let embeddings = loader.embeddings(&self.config)?;
        loader.check_no_layer_past(self.config.num_hidden_layers)?;
        let relative_bias = loader.relative_bias_table(&self.config)?;
        Ok(Self {
            config: self.config.clone(),
            embeddings,
            layers,
            relative_bias,
            modern: loader.modern_parts(&self.config)?,
            rotary: rotary_tables(&self.config)?,
        })
    }

    fn load(config: BertConfig, loader: WeightLoader<'_>) -> Result<Self, BertError> {
        let embeddings = loader.embeddings(&config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| loader.layer(&config, i, None))
            .collect::<Result<Vec<_>, BertError>>()?;
        loader.check_no_layer_past(config.num_hidden_layers)?;
        let relative_bias = loader.relative_bias_table(&config)?;
        let modern = loader.modern_parts(&config)?;
        let rotary = rotary_tables(&config)?;
        Ok(Self {
            config,
            embeddings,
            layers,
            relative_bias,
            modern,
            rotary,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.layers
            .first()
            .map_or(Precision::F32, |l| l.qkv.precision())
    }

    /// Runs the encoder on a packed batch and returns the last hidden state `[T, H]`, a view
    /// into `workspace`.
    ///
    /// `token_ids` is `[T]`; `seq_offsets` (`len = n + 1`, from 0 to `T`, strictly increasing)
    /// delimits the sequences; no sequence may be longer than [`BertConfig::max_tokens`].
    pub fn forward<'w>(
        &self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        workspace: &'w mut Workspace,
    ) -> Result<&'w [f32], BertError> {
        self.forward_impl(token_ids, seq_offsets, workspace, None)
    }

    /// [`BertModel::forward`]; with `calibration`, each layer's linear layers' inputs are
    /// gathered and handed to it at the end of the layer.
    fn forward_impl<'w>(
        &self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        workspace: &'w mut Workspace,
        mut calibration: Option<LayerCalibration<'_>>,
    ) -> Result<&'w [f32], BertError> {
        if let Some(modern) = &self.modern {
            return self.forward_pre_norm(modern, token_ids, seq_offsets, workspace, calibration);
        }
        let c = &self.config;
        let (h, f, t) = (c.hidden_size, c.intermediate_size, token_ids.len());
        self.check_batch(token_ids, seq_offsets)?;

        let Workspace {
            hidden,
            qkv,
            context,
            attention,
        } = workspace;
        let hidden = grow(hidden, t * h);
        // Q, K, V are dead once attention has run: the FFN intermediate reuses their buffer
        // (NomicBERT's, GTE's and JinaBERT's gated FFN: `[rows, 2F]`, then the gated `[rows, F]`
        // in `context`).
        let gated = c.gated_ffn;
        let ffn_rows = t.min(FFN_ROW_BLOCK);
        let ffn_width = if gated { 2 * f } else { f };
        let qkv_or_intermediate = grow(qkv, (t * 3 * h).max(ffn_rows * ffn_width));
        let context_or_gated = grow(context, (t * h).max(if gated { ffn_rows * f } else { 0 }));
        let attention = grow(attention, t * h);

        self.embed(token_ids, seq_offsets, hidden)?;
        let mut inputs = calibration.is_some().then(LayerInputs::default);
        for (l, layer) in self.layers.iter().enumerate() {
            let qkv = &mut qkv_or_intermediate[..t * 3 * h];
            record(&mut inputs, linear_kind::QKV, hidden);
            linear(hidden, t, &layer.qkv, Activation::Identity, None, qkv)?;
            if let Some(rotary) = &self.rotary {
                apply_rotary(qkv, seq_offsets, c.num_attention_heads, rotary)?;
            }
            let context = &mut context_or_gated[..t * h];
            let bias = self.relative_bias.as_ref().map(|b| RelativeBias {
                values: &b.values,
                span: b.span,
            });
            attention_varlen_with_terms(
                qkv,
                seq_offsets,
                c.num_attention_heads,
                c.head_dim(),
                AttentionTerms { bias, window: None },
                context,
            )?;
            record(&mut inputs, linear_kind::ATTENTION_OUTPUT, context);
            linear(
                context,
                t,
                &layer.attention_output,
                Activation::Identity,
                Some(hidden),
                attention,
            )?;
            // Every post-LayerNorm layer has its attention LayerNorm.
            if let Some(norm) = &layer.attention_norm {
                layernorm(
                    attention,
                    t,
                    h,
                    norm.gamma.data(),
                    norm.beta.data(),
                    c.layer_norm_eps,
                )?;
            }
            record(&mut inputs, linear_kind::INTERMEDIATE, attention);
            // The feed-forward block, FFN_ROW_BLOCK tokens at a time: rows are independent, so
            // the `[rows, F]` intermediate stays in cache and is all that is kept of it.
            for r0 in (0..t).step_by(FFN_ROW_BLOCK) {
                let rows = (t - r0).min(FFN_ROW_BLOCK);
                let input = r0 * h..(r0 + rows) * h;
                let out = &mut qkv_or_intermediate[..rows * ffn_width];
                let act = if gated {
                    Activation::Identity
                } else {
                    c.activation
                };
                linear(
                    &attention[input.clone()],
                    rows,
                    &layer.intermediate,
                    act,
                    None,
                    out,
                )?;
                let out = if gated {
                    let gated = &mut context_or_gated[..rows * f];
                    gated_activation(c.activation, out, rows, f, gated)?;
                    gated
                } else {
                    out
                };
                record(&mut inputs, linear_kind::OUTPUT, out);
                linear(
                    out,
                    rows,
                    &layer.output,
                    Activation::Identity,
                    Some(&attention[input.clone()]),
                    &mut hidden[input],
                )?;
            }
            let norm = &layer.output_norm;
            layernorm(
                hidden,
                t,
                h,
                norm.gamma.data(),
                norm.beta.data(),
                c.layer_norm_eps,
            )?;
            if let (Some(calibration), Some(inputs)) = (calibration.as_mut(), inputs.as_mut()) {
                calibration(l, inputs)?;
                inputs.iter_mut().for_each(Vec::clear);
            }
        }
        Ok(hidden)
    }

    /// ModernBERT's forward pass (pre-LayerNorm; see [`crate::ModernBertParams`]), with the
    /// buffers of [`forward_impl`](Self::forward_impl): `x ← x + Wo·attn(rope(Wqkv·LN(x)))`,
    /// `x ← x + Wo·(act(a) ⊙ g)` with `[a | g] = Wi·LN(x)`, then `final_norm`.
    fn forward_pre_norm<'w>(
        &self,
        modern: &ModernParts,
        token_ids: &[u32],
        seq_offsets: &[usize],
        workspace: &'w mut Workspace,
        mut calibration: Option<LayerCalibration<'_>>,
    ) -> Result<&'w [f32], BertError> {
        let c = &self.config;
        let (h, f, t) = (c.hidden_size, c.intermediate_size, token_ids.len());
        let (heads, eps) = (c.num_attention_heads, c.layer_norm_eps);
        let windows = c.modern.as_ref().map_or(&[][..], |m| &m.windows[..]);
        self.check_batch(token_ids, seq_offsets)?;

        let Workspace {
            hidden,
            qkv,
            context,
            attention,
        } = workspace;
        let hidden = grow(hidden, t * h);
        let ffn_rows = t.min(FFN_ROW_BLOCK);
        // Q, K, V, then GeGLU's `[rows, 2F]` input and gate.
        let qkv_or_intermediate = grow(qkv, (t * 3 * h).max(ffn_rows * 2 * f));
        // The attention output, then the gated `[rows, F]`.
        let context_or_gated = grow(context, (t * h).max(ffn_rows * f));
        let attention = grow(attention, t * h);
        let norm_into = |from: &[f32], to: &mut [f32], norm: &LayerNormWeights| {
            to.copy_from_slice(from);
            layernorm(to, t, h, norm.gamma.data(), norm.beta.data(), eps)
        };

        self.embed(token_ids, seq_offsets, hidden)?;
        let mut inputs = calibration.is_some().then(LayerInputs::default);
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block; `hidden` holds x.
            let input: &[f32] = match &layer.attention_norm {
                None => hidden,
                Some(norm) => {
                    norm_into(hidden, attention, norm)?;
                    attention
                }
            };
            let qkv = &mut qkv_or_intermediate[..t * 3 * h];
            record(&mut inputs, linear_kind::QKV, input);
            linear(input, t, &layer.qkv, Activation::Identity, None, qkv)?;
            let window = windows.get(l).copied().flatten();
            let rotary = match window {
                None => &modern.global_rotary,
                Some(_) => &modern.local_rotary,
            };
            apply_rotary(qkv, seq_offsets, heads, rotary)?;
            let context = &mut context_or_gated[..t * h];
            let terms = AttentionTerms { bias: None, window };
            attention_varlen_with_terms(qkv, seq_offsets, heads, c.head_dim(), terms, context)?;
            record(&mut inputs, linear_kind::ATTENTION_OUTPUT, context);
            // x + attention, into `attention`; then LN of it into `hidden`.
            linear(
                context,
                t,
                &layer.attention_output,
                Activation::Identity,
                Some(hidden),
                attention,
            )?;
            norm_into(attention, hidden, &layer.output_norm)?;
            record(&mut inputs, linear_kind::INTERMEDIATE, hidden);
            // Feed-forward block, FFN_ROW_BLOCK tokens at a time; each block's output
            // (x + GeGLU) replaces its LN rows in `hidden` once they are read.
            for r0 in (0..t).step_by(FFN_ROW_BLOCK) {
                let rows = (t - r0).min(FFN_ROW_BLOCK);
                let block = r0 * h..(r0 + rows) * h;
                let intermediate = &mut qkv_or_intermediate[..rows * 2 * f];
                linear(
                    &hidden[block.clone()],
                    rows,
                    &layer.intermediate,
                    Activation::Identity,
                    None,
                    intermediate,
                )?;
                let gated = &mut context_or_gated[..rows * f];
                gated_activation(c.activation, intermediate, rows, f, gated)?;
                record(&mut inputs, linear_kind::OUTPUT, gated);
                linear(
                    gated,
                    rows,
                    &layer.output,
                    Activation::Identity,
                    Some(&attention[block.clone()]),
                    &mut hidden[block],
                )?;
            }
            if let (Some(calibration), Some(inputs)) = (calibration.as_mut(), inputs.as_mut()) {
                calibration(l, inputs)?;
                inputs.iter_mut().for_each(Vec::clear);
            }
        }
        let norm = &modern.final_norm;
        layernorm(hidden, t, h, norm.gamma.data(), norm.beta.data(), eps)?;
        Ok(hidden)
    }

    fn check_batch(&self, token_ids: &[u32], seq_offsets: &[usize]) -> Result<(), BertError> {
        check_batch(&self.config, token_ids, seq_offsets)
    }

    /// `x[t] = LN(word[id_t] + type[0] + pos[row(t)])`, summed in torch's order; `row(t)` is
    /// the token's position row ([`crate::PositionIds`]: `t − start(t)` for BERT).
    fn embed(
        &self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        out: &mut [f32],
    ) -> Result<(), BertError> {
        let c = &self.config;
        let h = c.hidden_size;
        let e = &self.embeddings;
        let word = e.word.data();
        let position = e.position.as_ref().map(StoredTensor::data);
        let token_type = e.token_type.as_ref().map(StoredTensor::data);
        for window in seq_offsets.windows(2) {
            let sequence = &token_ids[window[0]..window[1]];
            for (pos, t) in c.position_ids.rows(sequence).zip(window[0]..window[1]) {
                let id = token_ids[t] as usize;
                let row = &mut out[t * h..(t + 1) * h];
                // Rows are widened as they are read (exact), summed in torch's order; the
                // tables stay in their stored dtype. Ids and positions were checked against
                // the table shapes in `check_batch`.
                word.widen_into(id * h, row);
                if let Some(token_type) = token_type {
                    add_widened(row, token_type, 0);
                }
                if let Some(position) = position {
                    add_widened(row, position, pos * h);
                }
            }
        }
        let tokens = token_ids.len();
        layernorm(
            out,
            tokens,
            h,
            e.norm.gamma.data(),
            e.norm.beta.data(),
            c.layer_norm_eps,
        )?;
        Ok(())
    }
}

/// Checks a packed batch against `config` (what [`BertModel::forward`] and other backends'
/// forward passes accept): `seq_offsets` run from 0 to `T = token_ids.len()`, every sequence
/// holds `1..=`[`BertConfig::max_tokens`] tokens, every id is inside the vocabulary.
pub fn check_batch(
    config: &BertConfig,
    token_ids: &[u32],
    seq_offsets: &[usize],
) -> Result<(), BertError> {
    let c = config;
    if seq_offsets.first() != Some(&0) || seq_offsets.last() != Some(&token_ids.len()) {
        return Err(BertError::Input(format!(
            "seq_offsets must run from 0 to the token count {}",
            token_ids.len()
        )));
    }
    for window in seq_offsets.windows(2) {
        let len = window[1].saturating_sub(window[0]);
        if window[1] <= window[0] || len > c.max_tokens() {
            return Err(BertError::Input(format!(
                "sequence {}..{} must hold 1..={} tokens",
                window[0],
                window[1],
                c.max_tokens()
            )));
        }
    }
    if let Some(&id) = token_ids.iter().find(|&&id| id as usize >= c.vocab_size) {
        return Err(BertError::Input(format!(
            "token id {id} is outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    Ok(())
}

/// `row[j] += table[start + j]` for every `j`, the table widened to f32 as it is read.
fn add_widened(row: &mut [f32], table: StoredData<'_>, start: usize) {
    let end = start + row.len();
    match table {
        StoredData::F32(t) => row
            .iter_mut()
            .zip(&t[start..end])
            .for_each(|(r, v)| *r += v),
        StoredData::F16(t) => row
            .iter_mut()
            .zip(&t[start..end])
            .for_each(|(r, v)| *r += v.to_f32()),
        StoredData::Bf16(t) => row
            .iter_mut()
            .zip(&t[start..end])
            .for_each(|(r, v)| *r += v.to_f32()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's tiny test model (2 layers, H = 52, F = 76).
    fn tiny() -> (BertConfig, WeightFile) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-bert");
        let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
        let file = WeightFile::open(dir.join("model.safetensors")).unwrap();
        (config, file)
    }

    #[test]
    fn calibrated_int8_keeps_the_largest_input_channels_exact() {
        let (config, file) = tiny();
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let f32_model = BertModel::from_weights(config.clone(), &file).unwrap();
        // Two sequences of ids spread over the vocabulary.
        let ids: Vec<u32> = (0..23).map(|i| 101 + 97 * i).collect();
        let offsets = [0, 9, 23];
        let mut gathered = Vec::new();
        let mut keep = |layer: usize, inputs: &LayerInputs| {
            assert_eq!(layer, gathered.len());
            gathered.push(inputs.clone());
            Ok(())
        };
        f32_model
            .forward_impl(&ids, &offsets, &mut Workspace::default(), Some(&mut keep))
            .unwrap();
        assert_eq!(gathered.len(), config.num_hidden_layers);
        let int8 = f32_model.calibrated_int8(&file, &ids, &offsets).unwrap();
        assert_eq!(int8.precision(), Precision::Int8);
        for (layer, inputs) in int8.layers.iter().zip(&gathered) {
            let linears = [
                &layer.qkv,
                &layer.attention_output,
                &layer.intermediate,
                &layer.output,
            ];
            for ((linear, rows), k) in linears.iter().zip(inputs).zip([h, h, h, f]) {
                assert_eq!(rows.len(), ids.len() * k);
                let max: Vec<f32> = (0..k)
                    .map(|c| {
                        rows.chunks_exact(k)
                            .fold(0.0f32, |m, row| m.max(row[c].abs()))
                    })
                    .collect();
                let mut want: Vec<usize> = (0..k).collect();
                want.sort_by(|&a, &b| max[b].total_cmp(&max[a]));
                want.truncate(INT8_OUTLIER_CHANNELS);
                want.sort_unstable();
                assert_eq!(linear.outlier_channels(), want);
            }
        }
        // Without calibration no channel is kept out.
        let plain = BertModel::from_weights_with(config.clone(), &file, Precision::Int8).unwrap();
        assert!(plain.layers[0].output.outlier_channels().is_empty());
        // The same batch gives the same model, on one thread or several.
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| f32_model.calibrated_int8(&file, &ids, &offsets).unwrap());
        // And the calibrated model runs, close to f32.
        let (mut w32, mut w8) = (Workspace::default(), Workspace::default());
        let exact = f32_model.forward(&ids, &offsets, &mut w32).unwrap();
        let quantised = int8.forward(&ids, &offsets, &mut w8).unwrap().to_vec();
        let again = one_thread.forward(&ids, &offsets, &mut w8).unwrap();
        assert!(again
            .iter()
            .zip(&quantised)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        for (a, b) in exact.chunks_exact(h).zip(quantised.chunks_exact(h)) {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let norms = a.iter().map(|x| x * x).sum::<f32>() * b.iter().map(|y| y * y).sum::<f32>();
            assert!(dot / norms.sqrt() > 0.99, "cosine {}", dot / norms.sqrt());
        }
    }
}
