//! `BertModel` weights and the forward pass over a packed batch.
//!
//! Embedding tables and LayerNorm parameters stay views into the memory-mapped file (f32) or
//! widened copies (f16/bf16); the four linear layers of each encoder layer are packed once at
//! load into the GEMM microkernel's layout, Q, K and V fused into one `[3H, H]` projection.

use std::path::{Path, PathBuf};

use ember_cpu::{attention_varlen, layernorm, linear, Activation, PackedLinear};
use ember_tensor::{F32Tensor, SafeTensorsFile};

use crate::{BertConfig, BertError};

/// A LayerNorm's `γ` and `β`, each `[H]`.
struct LayerNormWeights {
    gamma: F32Tensor,
    beta: F32Tensor,
}

/// `BertEmbeddings`: word, position and token-type tables and their LayerNorm.
struct Embeddings {
    word: F32Tensor,
    position: F32Tensor,
    token_type: F32Tensor,
    norm: LayerNormWeights,
}

/// One `BertLayer`.
struct Layer {
    /// `attention.self.{query,key,value}` fused: `[3H, H]`.
    qkv: PackedLinear,
    /// `attention.output.dense`: `[H, H]`.
    attention_output: PackedLinear,
    attention_norm: LayerNormWeights,
    /// `intermediate.dense`: `[F, H]`.
    intermediate: PackedLinear,
    /// `output.dense`: `[H, F]`.
    output: PackedLinear,
    output_norm: LayerNormWeights,
}

/// A loaded BERT encoder. Immutable after load: share it between threads freely; each
/// concurrent caller brings its own [`Workspace`].
pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

/// Activation buffers reused across forward passes; they grow to the largest batch seen and
/// never shrink, so steady-state encoding allocates nothing here.
#[derive(Default)]
pub struct Workspace {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    attention: Vec<f32>,
    intermediate: Vec<f32>,
}

/// Grows `buffer` to at least `len` values (never shrinks) and returns its first `len`.
fn grow(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Finds checkpoint tensors by their `BertModel` names, with or without a `bert.` prefix.
struct WeightLoader<'a> {
    file: &'a SafeTensorsFile,
    prefix: &'static str,
}

impl<'a> WeightLoader<'a> {
    fn new(file: &'a SafeTensorsFile) -> Self {
        let prefix = if file.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        Self { file, prefix }
    }

    fn path(&self) -> PathBuf {
        self.file.path().to_owned()
    }

    /// Loads `name` and checks its shape. LayerNorm parameters saved by old transformers
    /// versions as `gamma`/`beta` are found under those names too.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<F32Tensor, BertError> {
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
        // Tensors of a dtype Ember does not read count as found, so that `f32_tensor` names
        // their dtype rather than this reporting them missing.
        let found = candidates
            .iter()
            .flatten()
            .find(|candidate| self.file.raw_bytes(candidate).is_ok())
            .ok_or_else(|| BertError::MissingWeight {
                path: self.path(),
                name: format!("{}{name}", self.prefix),
            })?;
        let tensor = self.file.f32_tensor(found)?;
        if tensor.shape() != shape {
            return Err(BertError::WeightShape {
                path: self.path(),
                name: found.clone(),
                expected: shape.to_vec(),
                found: tensor.shape().to_vec(),
            });
        }
        Ok(tensor)
    }

    fn layer_norm(&self, stem: &str, hidden: usize) -> Result<LayerNormWeights, BertError> {
        Ok(LayerNormWeights {
            gamma: self.tensor(&format!("{stem}.weight"), &[hidden])?,
            beta: self.tensor(&format!("{stem}.bias"), &[hidden])?,
        })
    }

    /// A `nn.Linear(k → n)`: weight `[n, k]`, bias `[n]`, packed for the GEMM.
    fn linear(&self, stem: &str, n: usize, k: usize) -> Result<PackedLinear, BertError> {
        let weight = self.tensor(&format!("{stem}.weight"), &[n, k])?;
        let bias = self.tensor(&format!("{stem}.bias"), &[n])?;
        Ok(PackedLinear::new(weight.data(), Some(bias.data()), n, k)?)
    }

    /// Refuses a checkpoint with tensors of a layer past the config's last: it would otherwise
    /// run, silently, as a shallower model than the one trained.
    fn check_no_layer_past(&self, layers: usize) -> Result<(), BertError> {
        let layer_of = |name: &str| -> Option<usize> {
            let rest = name
                .strip_prefix(self.prefix)?
                .strip_prefix("encoder.layer.")?;
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

    /// Q, K and V of one layer fused into a single `[3H, H]` linear.
    ///
    /// The six tensors are found and shape-checked before the fused buffers are sized: the
    /// config alone does not justify `3H²` floats (a config with `H = 2^16` and 1 MB of
    /// embeddings asked for 48 GiB here before the missing query weight was noticed).
    fn fused_qkv(&self, stem: &str, hidden: usize) -> Result<PackedLinear, BertError> {
        let mut parts = Vec::with_capacity(3);
        for part in ["query", "key", "value"] {
            let weight = self.tensor(&format!("{stem}.{part}.weight"), &[hidden, hidden])?;
            let bias = self.tensor(&format!("{stem}.{part}.bias"), &[hidden])?;
            parts.push((weight, bias));
        }
        let mut weight = Vec::with_capacity(3 * hidden * hidden);
        let mut bias = Vec::with_capacity(3 * hidden);
        for (part_weight, part_bias) in &parts {
            weight.extend_from_slice(part_weight.data());
            bias.extend_from_slice(part_bias.data());
        }
        Ok(PackedLinear::new(&weight, Some(&bias), 3 * hidden, hidden)?)
    }
}

impl BertModel {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face model folder.
    pub fn from_dir(dir: &Path) -> Result<Self, BertError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = SafeTensorsFile::open(dir.join("model.safetensors"))?;
        Self::from_weights(config, &weights)
    }

    /// Builds the model from a config and an opened weights file, checking every tensor's
    /// shape against the config.
    pub fn from_weights(config: BertConfig, file: &SafeTensorsFile) -> Result<Self, BertError> {
        let loader = WeightLoader::new(file);
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let embeddings = Embeddings {
            word: loader.tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: loader.tensor(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: loader.tensor(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            norm: loader.layer_norm("embeddings.LayerNorm", h)?,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let stem = format!("encoder.layer.{i}");
                Ok(Layer {
                    qkv: loader.fused_qkv(&format!("{stem}.attention.self"), h)?,
                    attention_output: loader.linear(
                        &format!("{stem}.attention.output.dense"),
                        h,
                        h,
                    )?,
                    attention_norm: loader
                        .layer_norm(&format!("{stem}.attention.output.LayerNorm"), h)?,
                    intermediate: loader.linear(&format!("{stem}.intermediate.dense"), f, h)?,
                    output: loader.linear(&format!("{stem}.output.dense"), h, f)?,
                    output_norm: loader.layer_norm(&format!("{stem}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>, BertError>>()?;
        loader.check_no_layer_past(config.num_hidden_layers)?;
        Ok(Self {
            config,
            embeddings,
            layers,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the encoder on a packed batch and returns the last hidden state `[T, H]`, a view
    /// into `workspace`.
    ///
    /// `token_ids` is `[T]`; `seq_offsets` (`len = n + 1`, from 0 to `T`, strictly increasing)
    /// delimits the sequences; no sequence may be longer than `max_position_embeddings`.
    pub fn forward<'w>(
        &self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        workspace: &'w mut Workspace,
    ) -> Result<&'w [f32], BertError> {
        let c = &self.config;
        let (h, f, t) = (c.hidden_size, c.intermediate_size, token_ids.len());
        self.check_batch(token_ids, seq_offsets)?;

        let Workspace {
            hidden,
            qkv,
            context,
            attention,
            intermediate,
        } = workspace;
        let hidden = grow(hidden, t * h);
        let qkv = grow(qkv, t * 3 * h);
        let context = grow(context, t * h);
        let attention = grow(attention, t * h);
        let intermediate = grow(intermediate, t * f);

        self.embed(token_ids, seq_offsets, hidden)?;
        for layer in &self.layers {
            linear(hidden, t, &layer.qkv, Activation::Identity, None, qkv)?;
            attention_varlen(
                qkv,
                seq_offsets,
                c.num_attention_heads,
                c.head_dim(),
                context,
            )?;
            linear(
                context,
                t,
                &layer.attention_output,
                Activation::Identity,
                Some(hidden),
                attention,
            )?;
            let norm = &layer.attention_norm;
            layernorm(
                attention,
                t,
                h,
                norm.gamma.data(),
                norm.beta.data(),
                c.layer_norm_eps,
            )?;
            linear(
                attention,
                t,
                &layer.intermediate,
                c.activation,
                None,
                intermediate,
            )?;
            linear(
                intermediate,
                t,
                &layer.output,
                Activation::Identity,
                Some(attention),
                hidden,
            )?;
            let norm = &layer.output_norm;
            layernorm(
                hidden,
                t,
                h,
                norm.gamma.data(),
                norm.beta.data(),
                c.layer_norm_eps,
            )?;
        }
        Ok(hidden)
    }

    fn check_batch(&self, token_ids: &[u32], seq_offsets: &[usize]) -> Result<(), BertError> {
        let c = &self.config;
        if seq_offsets.first() != Some(&0) || seq_offsets.last() != Some(&token_ids.len()) {
            return Err(BertError::Input(format!(
                "seq_offsets must run from 0 to the token count {}",
                token_ids.len()
            )));
        }
        for window in seq_offsets.windows(2) {
            let len = window[1].saturating_sub(window[0]);
            if window[1] <= window[0] || len > c.max_position_embeddings {
                return Err(BertError::Input(format!(
                    "sequence {}..{} must hold 1..={} tokens",
                    window[0], window[1], c.max_position_embeddings
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

    /// `x[t] = LN(word[id_t] + type[0] + pos[t − start(t)])`, summed in torch's order.
    fn embed(
        &self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        out: &mut [f32],
    ) -> Result<(), BertError> {
        let c = &self.config;
        let h = c.hidden_size;
        let e = &self.embeddings;
        let (word, position) = (e.word.data(), e.position.data());
        let token_type = &e.token_type.data()[..h];
        for window in seq_offsets.windows(2) {
            for (pos, t) in (window[0]..window[1]).enumerate() {
                let id = token_ids[t] as usize;
                let row = &mut out[t * h..(t + 1) * h];
                let w = &word[id * h..(id + 1) * h];
                let p = &position[pos * h..(pos + 1) * h];
                for j in 0..h {
                    row[j] = (w[j] + token_type[j]) + p[j];
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
