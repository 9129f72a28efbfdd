//! The BERT encoder on the GPU, pooling and normalisation included: [`CudaBertModel`] mirrors
//! [`ember_bert::BertModel::forward`] op for op over this crate's launchers, then pools on the
//! device and copies only the pooled rows `[n, modes·H]` back.
//!
//! ```text
//! embedding_layernorm(ids, offsets)                          → hidden   [T, H]
//! per layer:
//!   linear(hidden, W_qkv)                                    → qkv      [T, 3H]
//!   attention_varlen(qkv, offsets)                           → context  [T, H]
//!   linear(context, W_o) + hidden                            → attn     [T, H]
//!   LN(attn)                                                   (in place)
//!   act(linear(attn, W_i))                                   → inter    [T, F]
//!   linear(inter, W_o2) + attn                               → hidden   [T, H]
//!   LN(hidden)                                                 (in place)
//! pool(hidden, offsets, modes) → pooled [n, modes·H];  normalize_rows if asked
//! ```
//!
//! ModernBERT runs its pre-LayerNorm layers over the same buffers:
//!
//! ```text
//! embedding_layernorm(ids, offsets) (no position table)      → hidden   [T, H]
//! per layer:
//!   LN(hidden) (not in layer 0)                              → attn     [T, H]
//!   rotary(linear(attn or hidden, W_qkv))                    → qkv      [T, 3H]
//!   attention_varlen(qkv, offsets, window of the layer)      → context  [T, H]
//!   linear(context, W_o) + hidden                            → attn     [T, H]
//!   LN(attn)                                                 → hidden   [T, H]
//!   linear(hidden, W_i)                                      → inter    [T, 2F]
//!   act(inter[:, :F]) · inter[:, F:]                         → gated    [T, F]
//!   linear(gated, W_o2) + attn                               → hidden   [T, H]
//! LN(hidden) (final_norm)
//! ```
//!
//! NomicBERT runs the post-LayerNorm layers with Q and K rotated after `W_qkv` (no position
//! table) and its SwiGLU feed-forward in place of `act(linear(attn, W_i))`: `linear(attn, W_i)
//! → inter [T, 2F]`, `act(inter[:, :F]) · inter[:, F:] → gated [T, F]`, then `W_o2` over
//! `gated`.
//!
//! Weights go up once, at load, in the element type of the run: `f32` (the exact SIMT GEMM)
//! or `bf16`/`f16` (tensor cores; biases and LayerNorm parameters stay f32). Activations live
//! in buffers grown to the largest batch seen and reused, so a warm call allocates no device
//! memory. It lives here, not in `ember-bert`, so that `ember-bert` stays free of CUDA and the
//! facade (`ember`) can leave this crate out entirely; it reads the checkpoint through
//! [`ember_bert::F32WeightReader`] (same names, prefixes and shape checks as the CPU model).

use ember_bert::{check_batch, BertConfig, F32WeightReader};
use ember_pooling::PoolingMode;
use ember_tensor::WeightFile;

use crate::activation::gated_activation;
use crate::attention::{attention_varlen_windowed, DeviceRelativeBias};
use crate::device::{CudaDevice, DeviceTensor, Dtype, Element, SeqOffsets, TokenIds};
use crate::embedding::{embedding_layernorm, EmbeddingTables, Positions};
use crate::error::CudaError;
use crate::gemm::{linear, DeviceLinear};
use crate::layernorm::{layernorm, layernorm_into};
use crate::pooling::{normalize_rows, pool};
use crate::profile::OpProfile;
use crate::rotary::{apply_rotary, DeviceRotary};
use ember_cpu::Activation;

/// A LayerNorm's `γ`, `β` `[H]` on the device.
struct DeviceNorm {
    gamma: DeviceTensor<f32>,
    beta: DeviceTensor<f32>,
}

impl DeviceNorm {
    fn upload(
        device: &CudaDevice,
        norm: &ember_bert::weights::NormWeights,
    ) -> Result<Self, CudaError> {
        Ok(DeviceNorm {
            gamma: device.upload(&norm.gamma)?,
            beta: device.upload(&norm.beta)?,
        })
    }
}

/// One `BertLayer` on the device.
struct DeviceLayer<E: Element> {
    qkv: DeviceLinear<E>,
    attention_output: DeviceLinear<E>,
    /// `None` in ModernBERT's layer 0.
    attention_norm: Option<DeviceNorm>,
    intermediate: DeviceLinear<E>,
    output: DeviceLinear<E>,
    output_norm: DeviceNorm,
}

/// Activation buffers, each sized for the largest batch seen (`tokens` rows, `sequences`
/// pooled rows) and reused; [`DeviceTensor::set_len`] fits them to each batch.
struct Activations<E: Element> {
    tokens: usize,
    sequences: usize,
    pooled_dim: usize,
    hidden: DeviceTensor<E>,
    qkv: DeviceTensor<E>,
    context: DeviceTensor<E>,
    attention: DeviceTensor<E>,
    /// `[T, F]` (ModernBERT: `[T, 2F]`, GeGLU's input and gate).
    intermediate: DeviceTensor<E>,
    /// ModernBERT's gated `[T, F]`.
    gated: Option<DeviceTensor<E>>,
    pooled: DeviceTensor<f32>,
    token_ids: TokenIds,
    seq_offsets: SeqOffsets,
}

/// The encoder's weights and activations in one element type.
struct Encoder<E: Element> {
    embeddings: EmbeddingTables<E>,
    layers: Vec<DeviceLayer<E>>,
    /// MPNet's relative position bias or JinaBERT's ALiBi (f32 whatever `E`, as on the CPU).
    relative_bias: Option<DeviceRelativeBias>,
    modern: Option<DeviceModern>,
    /// NomicBERT's rotary tables (its post-LayerNorm layers rotate Q and K).
    rotary: Option<DeviceRotary>,
    activations: Option<Activations<E>>,
}

/// What ModernBERT's forward pass needs beside the layers.
struct DeviceModern {
    final_norm: DeviceNorm,
    /// The rotary tables of the full-attention layers' `θ` and of the sliding-window layers'.
    global_rotary: DeviceRotary,
    local_rotary: DeviceRotary,
    /// Per layer, its window (`None`: full attention).
    windows: Vec<Option<usize>>,
}

impl DeviceModern {
    fn upload(
        device: &CudaDevice,
        reader: &F32WeightReader<'_>,
        config: &BertConfig,
    ) -> Result<Option<Self>, CudaError> {
        let (Some(modern), Some(final_norm)) = (&config.modern, reader.final_norm()?) else {
            return Ok(None);
        };
        let rotary = |theta: f64| -> Result<DeviceRotary, CudaError> {
            let tables = ember_cpu::Rotary::new(theta, config.head_dim(), config.max_tokens())
                .map_err(ember_bert::BertError::from)?;
            DeviceRotary::upload(device, &tables)
        };
        Ok(Some(DeviceModern {
            final_norm: DeviceNorm::upload(device, &final_norm)?,
            global_rotary: rotary(modern.global_rope_theta)?,
            local_rotary: rotary(modern.local_rope_theta)?,
            windows: modern.windows.clone(),
        }))
    }
}

fn upload_linear<E: Element>(
    device: &CudaDevice,
    linear: &ember_bert::weights::LinearWeights,
) -> Result<DeviceLinear<E>, CudaError> {
    DeviceLinear::upload(
        device,
        &linear.weight,
        Some(&linear.bias),
        linear.n,
        linear.k,
    )
}

impl<E: Element> Encoder<E> {
    /// Uploads the embeddings, then each layer in turn (one layer on the host at a time).
    fn upload(
        device: &CudaDevice,
        reader: &F32WeightReader<'_>,
        config: &BertConfig,
    ) -> Result<Self, CudaError> {
        let e = reader.embeddings()?;
        let positions = match &e.position {
            Some(table) => Positions::Table(table),
            None => Positions::Rotary {
                max_positions: config.max_position_embeddings,
            },
        };
        let embeddings = EmbeddingTables::upload(
            device,
            &e.word,
            positions,
            &e.token_type,
            &e.norm.gamma,
            &e.norm.beta,
            config.hidden_size,
            config.position_ids,
        )?;
        drop(e);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = reader.layer(i)?;
                Ok(DeviceLayer {
                    qkv: upload_linear(device, &l.qkv)?,
                    attention_output: upload_linear(device, &l.attention_output)?,
                    attention_norm: l
                        .attention_norm
                        .as_ref()
                        .map(|norm| DeviceNorm::upload(device, norm))
                        .transpose()?,
                    intermediate: upload_linear(device, &l.intermediate)?,
                    output: upload_linear(device, &l.output)?,
                    output_norm: DeviceNorm::upload(device, &l.output_norm)?,
                })
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        let relative_bias = reader
            .relative_bias()?
            .map(|(values, span)| {
                DeviceRelativeBias::upload(device, &values, config.num_attention_heads, span)
            })
            .transpose()?;
        Ok(Encoder {
            embeddings,
            layers,
            relative_bias,
            modern: DeviceModern::upload(device, reader, config)?,
            rotary: ember_bert::rotary_tables(config)?
                .map(|tables| DeviceRotary::upload(device, &tables))
                .transpose()?,
            activations: None,
        })
    }

    /// Runs the batch and writes its pooled (and normalised, if asked) rows into `out`.
    #[allow(clippy::too_many_arguments)]
    fn embed(
        &mut self,
        device: &CudaDevice,
        c: &BertConfig,
        token_ids: &[u32],
        seq_offsets: &[usize],
        pooling: Pooling<'_>,
        normalize: bool,
        out: &mut [f32],
        profile: &mut OpProfile,
    ) -> Result<(), CudaError> {
        let Pooling { modes, excluded } = pooling;
        let (h, t) = (c.hidden_size, token_ids.len());
        let n = seq_offsets.len().saturating_sub(1);
        let pooled_dim = modes.len() * h;
        let a = grow_activations(&mut self.activations, device, c, pooled_dim, t, n)?;
        for buffer in [&mut a.hidden, &mut a.context, &mut a.attention] {
            buffer.set_len(t * h)?;
        }
        a.qkv.set_len(t * 3 * h)?;
        a.intermediate
            .set_len(t * c.intermediate_size * intermediate_halves(c))?;
        if let Some(gated) = &mut a.gated {
            gated.set_len(t * c.intermediate_size)?;
        }
        a.pooled.set_len(n * pooled_dim)?;
        profile.begin(device);
        device.write_token_ids(token_ids, &mut a.token_ids)?;
        device.write_offsets(seq_offsets, &mut a.seq_offsets)?;
        profile.mark(device, "upload ids, offsets");
        let offsets = &a.seq_offsets;
        let (heads, head_dim, eps) = (c.num_attention_heads, c.head_dim(), c.layer_norm_eps);

        embedding_layernorm(
            device,
            &a.token_ids,
            offsets,
            &self.embeddings,
            eps,
            &mut a.hidden,
        )?;
        profile.mark(device, "embedding + layernorm");
        if let Some(modern) = &self.modern {
            Self::pre_norm_layers(device, c, &self.layers, modern, a, t, profile)?;
        }
        let post_norm_layers = if self.modern.is_some() {
            &[][..]
        } else {
            &self.layers[..]
        };
        let offsets = &a.seq_offsets;
        for layer in post_norm_layers {
            linear(
                device,
                &a.hidden,
                t,
                &layer.qkv,
                Activation::Identity,
                None,
                &mut a.qkv,
            )?;
            profile.mark(device, "qkv linear");
            if let Some(rotary) = &self.rotary {
                apply_rotary(device, &mut a.qkv, offsets, heads, rotary)?;
                profile.mark(device, "rotary");
            }
            crate::attention::attention_varlen(
                device,
                &a.qkv,
                offsets,
                heads,
                head_dim,
                self.relative_bias.as_ref(),
                &mut a.context,
            )?;
            profile.mark(device, "attention");
            linear(
                device,
                &a.context,
                t,
                &layer.attention_output,
                Activation::Identity,
                Some(&a.hidden),
                &mut a.attention,
            )?;
            profile.mark(device, "attention-out linear + R");
            // Every post-LayerNorm layer has its attention LayerNorm.
            if let Some(norm) = &layer.attention_norm {
                layernorm(
                    device,
                    &mut a.attention,
                    None,
                    t,
                    h,
                    &norm.gamma,
                    &norm.beta,
                    eps,
                )?;
                profile.mark(device, "attention layernorm");
            }
            // NomicBERT's SwiGLU: `[T, 2F]` (gate, up), then act(gate) · up into `gated`.
            let up_act = match a.gated {
                Some(_) => Activation::Identity,
                None => c.activation,
            };
            linear(
                device,
                &a.attention,
                t,
                &layer.intermediate,
                up_act,
                None,
                &mut a.intermediate,
            )?;
            profile.mark(device, "ffn-up linear (+ act)");
            let ffn_input = match a.gated.as_mut() {
                Some(gated) => {
                    let f = c.intermediate_size;
                    gated_activation(device, c.activation, &a.intermediate, t, f, gated)?;
                    profile.mark(device, "gated activation");
                    &*gated
                }
                None => &a.intermediate,
            };
            linear(
                device,
                ffn_input,
                t,
                &layer.output,
                Activation::Identity,
                Some(&a.attention),
                &mut a.hidden,
            )?;
            profile.mark(device, "ffn-down linear + R");
            let norm = &layer.output_norm;
            layernorm(
                device,
                &mut a.hidden,
                None,
                t,
                h,
                &norm.gamma,
                &norm.beta,
                eps,
            )?;
            profile.mark(device, "output layernorm");
        }
        pool(
            device,
            &a.hidden,
            &a.seq_offsets,
            h,
            modes,
            excluded,
            &mut a.pooled,
        )?;
        profile.mark(device, "pooling");
        if normalize {
            normalize_rows(device, &mut a.pooled, pooled_dim)?;
            profile.mark(device, "normalize");
        }
        device.download_into(&a.pooled, out)?;
        profile.mark(device, "download (+ wait)");
        profile.end(n, t);
        Ok(())
    }
}

impl<E: Element> Encoder<E> {
    /// ModernBERT's layers and `final_norm` over `a.hidden` (see the module docs).
    fn pre_norm_layers(
        device: &CudaDevice,
        c: &BertConfig,
        layers: &[DeviceLayer<E>],
        modern: &DeviceModern,
        a: &mut Activations<E>,
        t: usize,
        profile: &mut OpProfile,
    ) -> Result<(), CudaError> {
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let (heads, head_dim, eps) = (c.num_attention_heads, c.head_dim(), c.layer_norm_eps);
        let Some(gated) = a.gated.as_mut() else {
            return Err(CudaError::InvalidShape {
                op: "CudaBertModel",
                reason: "ModernBERT's gated buffer missing".into(),
            });
        };
        for (layer, &window) in layers.iter().zip(&modern.windows) {
            let input = match &layer.attention_norm {
                None => &a.hidden,
                Some(norm) => {
                    let (g, b) = (&norm.gamma, &norm.beta);
                    layernorm_into(device, &a.hidden, &mut a.attention, t, h, g, b, eps)?;
                    profile.mark(device, "attention layernorm");
                    &a.attention
                }
            };
            linear(
                device,
                input,
                t,
                &layer.qkv,
                Activation::Identity,
                None,
                &mut a.qkv,
            )?;
            profile.mark(device, "qkv linear");
            let rotary = match window {
                None => &modern.global_rotary,
                Some(_) => &modern.local_rotary,
            };
            apply_rotary(device, &mut a.qkv, &a.seq_offsets, heads, rotary)?;
            profile.mark(device, "rotary");
            attention_varlen_windowed(
                device,
                &a.qkv,
                &a.seq_offsets,
                heads,
                head_dim,
                None,
                window,
                &mut a.context,
            )?;
            profile.mark(device, "attention");
            linear(
                device,
                &a.context,
                t,
                &layer.attention_output,
                Activation::Identity,
                Some(&a.hidden),
                &mut a.attention,
            )?;
            profile.mark(device, "attention-out linear + R");
            let norm = &layer.output_norm;
            let (g, b) = (&norm.gamma, &norm.beta);
            layernorm_into(device, &a.attention, &mut a.hidden, t, h, g, b, eps)?;
            profile.mark(device, "ffn layernorm");
            linear(
                device,
                &a.hidden,
                t,
                &layer.intermediate,
                Activation::Identity,
                None,
                &mut a.intermediate,
            )?;
            profile.mark(device, "ffn-up linear (+ act)");
            gated_activation(device, c.activation, &a.intermediate, t, f, gated)?;
            profile.mark(device, "gated activation");
            linear(
                device,
                gated,
                t,
                &layer.output,
                Activation::Identity,
                Some(&a.attention),
                &mut a.hidden,
            )?;
            profile.mark(device, "ffn-down linear + R");
        }
        let norm = &modern.final_norm;
        layernorm(
            device,
            &mut a.hidden,
            None,
            t,
            h,
            &norm.gamma,
            &norm.beta,
            eps,
        )?;
        profile.mark(device, "final layernorm");
        Ok(())
    }
}

/// How many `[T, F]` halves the FFN's up-projection writes: 2 for ModernBERT's GeGLU,
/// NomicBERT's SwiGLU, GTE's gated GELU and JinaBERT's GEGLU / ReGLU.
fn intermediate_halves(c: &BertConfig) -> usize {
    if c.gated_ffn {
        2
    } else {
        1
    }
}

/// The activation buffers, grown (never shrunk) to hold `t` tokens and `n` sequences.
fn grow_activations<'a, E: Element>(
    slot: &'a mut Option<Activations<E>>,
    device: &CudaDevice,
    c: &BertConfig,
    pooled_dim: usize,
    t: usize,
    n: usize,
) -> Result<&'a mut Activations<E>, CudaError> {
    let (old_t, old_n, old_dim) = slot
        .as_ref()
        .map_or((0, 0, 0), |a| (a.tokens, a.sequences, a.pooled_dim));
    if t > old_t || n > old_n || pooled_dim > old_dim {
        let (t, n, pooled_dim) = (t.max(old_t), n.max(old_n), pooled_dim.max(old_dim));
        let (h, f) = (c.hidden_size, c.intermediate_size);
        // Free the old buffers before allocating the larger ones.
        *slot = None;
        *slot = Some(Activations {
            tokens: t,
            sequences: n,
            pooled_dim,
            hidden: device.zeros(t * h)?,
            qkv: device.zeros(t * 3 * h)?,
            context: device.zeros(t * h)?,
            attention: device.zeros(t * h)?,
            intermediate: device.zeros(t * f * intermediate_halves(c))?,
            gated: match intermediate_halves(c) {
                2 => Some(device.zeros(t * f)?),
                _ => None,
            },
            pooled: device.zeros(n * pooled_dim)?,
            token_ids: device.upload_token_ids(&vec![0; t])?,
            seq_offsets: device.upload_offsets(&vec![0; n + 1])?,
        });
    }
    match slot {
        Some(a) => Ok(a),
        // Impossible: the slot was filled above unless it already held large enough buffers.
        None => Err(CudaError::InvalidShape {
            op: "CudaBertModel",
            reason: "activation buffers missing".into(),
        }),
    }
}

/// The encoder in the element type chosen at load.
enum AnyEncoder {
    F32(Encoder<f32>),
    Bf16(Encoder<half::bf16>),
    F16(Encoder<half::f16>),
}

/// A BERT encoder on one GPU: weights uploaded once, activations reused, pooling on the device.
///
/// ```no_run
/// use ember_cuda::{bert::CudaBertModel, CudaDevice, Dtype};
/// use ember_pooling::PoolingMode;
/// let dir = std::path::Path::new("all-MiniLM-L6-v2");
/// let config = ember_bert::BertConfig::from_file(&dir.join("config.json"))?;
/// let weights = ember_tensor::WeightFile::open(dir.join("model.safetensors"))?;
/// let mut model = CudaBertModel::load(CudaDevice::open(0)?, config, &weights, Dtype::Bf16)?;
/// // Two sequences of 3 and 2 tokens, packed: [CLS] a [SEP] [CLS] [SEP].
/// let mut out = vec![0.0; 2 * 384];
/// model.embed(&[101, 1037, 102, 101, 102], &[0, 3, 5], &[PoolingMode::Mean], true, &mut out)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CudaBertModel {
    device: CudaDevice,
    config: BertConfig,
    encoder: AnyEncoder,
    profile: OpProfile,
}

impl std::fmt::Debug for CudaBertModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBertModel")
            .field("device", &self.device)
            .field("dtype", &self.dtype())
            .field("layers", &self.config.num_hidden_layers)
            .finish()
    }
}

impl CudaBertModel {
    /// Uploads the checkpoint `file` (checked against `config`) to `device` in `dtype`, and
    /// compiles every kernel now so that no later call pays for NVRTC.
    pub fn load(
        device: CudaDevice,
        config: BertConfig,
        file: &WeightFile,
        dtype: Dtype,
    ) -> Result<Self, CudaError> {
        if config.head_dim() > crate::attention::MAX_HEAD_DIM {
            return Err(CudaError::InvalidShape {
                op: "CudaBertModel::load",
                reason: format!(
                    "head_dim {} exceeds the attention kernel's {}",
                    config.head_dim(),
                    crate::attention::MAX_HEAD_DIM
                ),
            });
        }
        // The tensor-core GEMMs read 16-byte rows: every linear's input width (H, and F into
        // the FFN output) must be a multiple of 8. Published models' are; say so at load, not
        // at the first batch.
        if dtype != Dtype::F32
            && !(config.hidden_size.is_multiple_of(8) && config.intermediate_size.is_multiple_of(8))
        {
            return Err(CudaError::InvalidShape {
                op: "CudaBertModel::load",
                reason: format!(
                    "{dtype} runs on tensor cores, which need hidden_size and intermediate_size to be multiples of 8 (they are {} and {}); use f32",
                    config.hidden_size, config.intermediate_size
                ),
            });
        }
        device.warm_up()?;
        let reader = F32WeightReader::new(&config, file);
        let encoder = match dtype {
            Dtype::F32 => AnyEncoder::F32(Encoder::upload(&device, &reader, &config)?),
            Dtype::Bf16 => AnyEncoder::Bf16(Encoder::upload(&device, &reader, &config)?),
            Dtype::F16 => AnyEncoder::F16(Encoder::upload(&device, &reader, &config)?),
        };
        device.synchronize()?;
        Ok(CudaBertModel {
            device,
            config,
            encoder,
            profile: OpProfile::default(),
        })
    }

    /// Times every later forward op by op ([`OpProfile`]: each op's GPU time and the host's
    /// time queueing it), until the model is dropped, which prints
    /// [`profile_report`](Self::profile_report) to standard error.
    pub fn enable_profile(&mut self) {
        self.profile.enable();
    }

    /// The per-op times of the forwards so far, as tables (see [`OpProfile::report`]); `None`
    /// unless [`enable_profile`](Self::enable_profile) was called and a forward ran.
    pub fn profile_report(&self) -> Option<String> {
        self.profile.report()
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The GPU the weights live on, and its stream.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    /// The element type of weights and activations.
    pub fn dtype(&self) -> Dtype {
        match self.encoder {
            AnyEncoder::F32(_) => Dtype::F32,
            AnyEncoder::Bf16(_) => Dtype::Bf16,
            AnyEncoder::F16(_) => Dtype::F16,
        }
    }

    /// Encodes a packed batch (`token_ids` `[T]`, `seq_offsets` `[n + 1]`, checked as by
    /// [`ember_bert::BertModel::forward`]), pools each sequence with `modes`, L2-normalises
    /// the rows if `normalize`, and writes them into `out` `[n, modes·H]`.
    pub fn embed(
        &mut self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        modes: &[PoolingMode],
        normalize: bool,
        out: &mut [f32],
    ) -> Result<(), CudaError> {
        self.embed_excluding(token_ids, seq_offsets, modes, 0, normalize, out)
    }

    /// [`embed`](Self::embed) with the first `excluded` tokens of every sequence left out of
    /// the pooling (`include_prompt: false`: a prompt's tokens; see
    /// [`ember_pooling::pool_excluding`]).
    pub fn embed_excluding(
        &mut self,
        token_ids: &[u32],
        seq_offsets: &[usize],
        modes: &[PoolingMode],
        excluded: usize,
        normalize: bool,
        out: &mut [f32],
    ) -> Result<(), CudaError> {
        check_batch(&self.config, token_ids, seq_offsets)?;
        let n = seq_offsets.len() - 1; // check_batch: at least [0, T]
        crate::error::check_len(
            "CudaBertModel::embed",
            "out",
            n * modes.len() * self.config.hidden_size,
            out.len(),
        )?;
        let (d, c, p) = (&self.device, &self.config, &mut self.profile);
        let pooling = Pooling { modes, excluded };
        match &mut self.encoder {
            AnyEncoder::F32(e) => e.embed(d, c, token_ids, seq_offsets, pooling, normalize, out, p),
            AnyEncoder::Bf16(e) => {
                e.embed(d, c, token_ids, seq_offsets, pooling, normalize, out, p)
            }
            AnyEncoder::F16(e) => e.embed(d, c, token_ids, seq_offsets, pooling, normalize, out, p),
        }
    }
}

/// What pooling a batch takes: its modes, and the tokens at each sequence's start left out.
#[derive(Clone, Copy)]
struct Pooling<'a> {
    modes: &'a [PoolingMode],
    excluded: usize,
}

impl Drop for CudaBertModel {
    fn drop(&mut self) {
        if let Some(report) = self.profile.report() {
            eprintln!(
                "ember-cuda profile ({}, {}, {} layers):\n{report}",
                self.device.name(),
                self.dtype(),
                self.config.num_hidden_layers
            );
        }
    }
}
