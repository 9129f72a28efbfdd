//! BertEmbeddings on the GPU (`kernels/embedding.cu`): for token `t` whose position row is `p`
//! (its index in the sequence for BERT; [`PositionIds`] for the RoBERTa family),
//! `x[t] = LN((word[id_t] + token_type[0]) + position[p])`, mirroring
//! `ember_bert::BertModel`'s embedding step over a packed batch. ModernBERT has no position
//! table ([`Positions::Rotary`]): its rows are `LN(word[id_t] + 0)`.

use cudarc::driver::LaunchConfig;
use ember_bert::PositionIds;

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element, SeqOffsets, TokenIds};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;

/// Tokens per 256-thread block (one warp each): `EMB_WARPS` in embedding.cu.
const TOKENS_PER_BLOCK: usize = 8;

pub(crate) const ENTRY_POINTS: [&str; 3] = [
    "embedding_layernorm_f32",
    "embedding_layernorm_bf16",
    "embedding_layernorm_f16",
];

fn entry_point(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => ENTRY_POINTS[0],
        Dtype::Bf16 => ENTRY_POINTS[1],
        Dtype::F16 => ENTRY_POINTS[2],
    }
}

/// Where token positions come from.
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    /// An absolute position table, `[max_positions, H]` (BERT, RoBERTa, MPNet, DistilBERT).
    Table(&'a [f32]),
    /// None in the embeddings: rotary positions in attention (ModernBERT), for sequences of
    /// up to `max_positions` tokens.
    Rotary {
        /// The longest sequence the model runs.
        max_positions: usize,
    },
}

/// The embedding tables (in `E`) and their LayerNorm (f32) on the device.
#[derive(Debug)]
pub struct EmbeddingTables<E: Element> {
    word: DeviceTensor<E>,
    /// `None` for [`Positions::Rotary`].
    position: Option<DeviceTensor<E>>,
    token_type: DeviceTensor<E>,
    gamma: DeviceTensor<f32>,
    beta: DeviceTensor<f32>,
    hidden: usize,
    vocab: usize,
    max_positions: usize,
    position_ids: PositionIds,
}

impl<E: Element> EmbeddingTables<E> {
    /// Uploads `word` `[vocab, H]`, `position` (a `[max_positions, H]` table, or none), `token_type`
    /// `[types ≥ 1, H]` and the LayerNorm's `gamma`, `beta` `[H]`; `position_ids` says which
    /// row of `position` each token takes (BERT's or the RoBERTa family's).
    #[allow(clippy::too_many_arguments)]
    pub fn upload(
        device: &CudaDevice,
        word: &[f32],
        position: Positions<'_>,
        token_type: &[f32],
        gamma: &[f32],
        beta: &[f32],
        hidden: usize,
        position_ids: PositionIds,
    ) -> Result<Self, CudaError> {
        const OP: &str = "EmbeddingTables::upload";
        let rows = |tensor: &'static str, data: &[f32]| -> Result<usize, CudaError> {
            if hidden == 0 || !data.len().is_multiple_of(hidden) || data.is_empty() {
                return Err(CudaError::InvalidShape {
                    op: OP,
                    reason: format!(
                        "`{tensor}` has {} elements: not a non-empty [rows, {hidden}]",
                        data.len()
                    ),
                });
            }
            Ok(data.len() / hidden)
        };
        let vocab = rows("word", word)?;
        let max_positions = match position {
            Positions::Table(table) => rows("position", table)?,
            Positions::Rotary { max_positions } => max_positions,
        };
        rows("token_type", token_type)?;
        check_len(OP, "gamma", hidden, gamma.len())?;
        check_len(OP, "beta", hidden, beta.len())?;
        to_i32(OP, "vocab", vocab)?;
        to_i32(OP, "max_positions", max_positions)?;
        if position_ids.first_row() >= max_positions {
            return Err(CudaError::InvalidShape {
                op: OP,
                reason: format!(
                    "{position_ids:?} leaves no row of the {max_positions} positions for tokens"
                ),
            });
        }
        Ok(EmbeddingTables {
            word: device.upload(word)?,
            position: match position {
                Positions::Table(table) => Some(device.upload(table)?),
                Positions::Rotary { .. } => None,
            },
            // Only row 0 is read (single-segment inputs, as on the CPU).
            token_type: device.upload(&token_type[..hidden])?,
            gamma: device.upload(gamma)?,
            beta: device.upload(beta)?,
            hidden,
            vocab,
            max_positions,
            position_ids,
        })
    }

    /// Hidden size `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Rows of the position table.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The longest sequence the position table holds: its rows less those before the first
    /// token's ([`PositionIds::first_row`]).
    pub fn max_tokens(&self) -> usize {
        self.max_positions - self.position_ids.first_row()
    }
}

/// `out[t] = LN((word[id_t] + token_type[0]) + position[row(t)])`, `out` `[T, H]`, where
/// `row(t)` is the token's position row ([`PositionIds::rows`]: `t − start(t)` for BERT).
///
/// Checks that no sequence is longer than the position table holds
/// ([`EmbeddingTables::max_tokens`]); token ids are the caller's to
/// check against [`EmbeddingTables::vocab`] before upload (an id out of range gives a NaN row,
/// never an out-of-bounds read).
pub fn embedding_layernorm<E: Element>(
    device: &CudaDevice,
    token_ids: &TokenIds,
    seq_offsets: &SeqOffsets,
    tables: &EmbeddingTables<E>,
    eps: f32,
    out: &mut DeviceTensor<E>,
) -> Result<(), CudaError> {
    const OP: &str = "embedding_layernorm";
    let t = seq_offsets.tokens();
    check_len(OP, "token_ids", t, token_ids.len())?;
    check_len(
        OP,
        "out",
        checked_product(OP, "out", &[t, tables.hidden])?,
        out.len(),
    )?;
    if seq_offsets.max_len() > tables.max_tokens() {
        return Err(CudaError::InvalidOffsets {
            op: OP,
            reason: format!(
                "a sequence of {} tokens is longer than the {} the position table holds",
                seq_offsets.max_len(),
                tables.max_tokens()
            ),
        });
    }
    let tokens = to_i32(OP, "tokens", t)?;
    let n_seq = to_i32(OP, "sequences", seq_offsets.sequences())?;
    if t == 0 {
        return Ok(());
    }
    let function = device.function(KernelFile::Embedding, entry_point(E::DTYPE), 0)?;
    let config = LaunchConfig {
        grid_dim: (t.div_ceil(TOKENS_PER_BLOCK) as u32, 1, 1),
        block_dim: (32 * TOKENS_PER_BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (hidden, vocab, max_positions) = (
        tables.hidden as i32,
        tables.vocab as i32,
        tables.max_positions as i32,
    );
    // −1: BERT's rows; else the padding id (below max_positions, so it fits i32).
    let pad_id: i32 = match tables.position_ids {
        PositionIds::FromZero => -1,
        PositionIds::AfterPadding { pad_token_id } => pad_token_id as i32,
    };
    let null: u64 = 0;
    let stream = device.stream();
    let mut launch = Launch::new(stream, &function);
    launch
        .input(token_ids.device())
        .input(seq_offsets.device())
        .value(&n_seq)
        .input(tables.word.slice());
    match &tables.position {
        Some(position) => launch.input(position.slice()),
        None => launch.value(&null),
    };
    launch
        .input(tables.token_type.slice())
        .input(tables.gamma.slice())
        .input(tables.beta.slice())
        .output(out.slice_mut())
        .value(&tokens)
        .value(&hidden)
        .value(&vocab)
        .value(&max_positions)
        .value(&pad_id)
        .value(&eps);
    // SAFETY: arguments match embedding.cu's signature; the tables hold vocab, max_positions
    // (or, null, none: the kernel then reads no position row) and 1 rows of H, out holds T·H,
    // and the kernel bounds-checks ids and positions.
    unsafe { launch.launch("launch embedding", config) }?;
    Ok(())
}
