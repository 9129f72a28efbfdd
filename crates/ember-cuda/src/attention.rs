//! Attention over a packed, variable-length batch on the GPU (`kernels/attention.cu`),
//! mirroring [`ember_cpu::attention_varlen`].
//!
//! `qkv` is `[T, 3H]` (Q, K, V blocks of `H` columns; head `h` owns columns `h·hd..(h+1)·hd` of
//! each), `out` is `[T, H]`: `out[t, h·hd..] = softmax(q_t·K_sᵀ/√hd)·V_s` for the sequence `s`
//! holding `t`. `head_dim ≤ 128`.

use cudarc::driver::LaunchConfig;

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element, SeqOffsets};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;

/// attention.cu's `ATT_BQ` (queries per block), `ATT_WARPS`, `ATT_MAX_HD`.
const QUERIES_PER_BLOCK: usize = 16;
const WARPS: u32 = 4;
/// The largest head dimension the kernel holds.
pub const MAX_HEAD_DIM: usize = 128;

pub(crate) const ENTRY_POINTS: [&str; 3] = [
    "attention_varlen_f32",
    "attention_varlen_bf16",
    "attention_varlen_f16",
];

fn entry_point(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => ENTRY_POINTS[0],
        Dtype::Bf16 => ENTRY_POINTS[1],
        Dtype::F16 => ENTRY_POINTS[2],
    }
}

/// MPNet's relative position bias (or JinaBERT's ALiBi) on the device, expanded per distance as
/// [`ember_cpu::RelativeBias`] is: `[heads, 2·span + 1]` f32, entry `span + (j − i)` of head
/// `h` added to score `(i, j)`.
#[derive(Debug)]
pub struct DeviceRelativeBias {
    values: DeviceTensor<f32>,
    heads: usize,
    span: usize,
}

impl DeviceRelativeBias {
    /// Uploads `values` (`[heads, 2·span + 1]`).
    pub fn upload(
        device: &CudaDevice,
        values: &[f32],
        heads: usize,
        span: usize,
    ) -> Result<Self, CudaError> {
        const OP: &str = "DeviceRelativeBias::upload";
        let width = checked_product(OP, "bias", &[2, span])? + 1;
        check_len(
            OP,
            "bias",
            checked_product(OP, "bias", &[heads, width])?,
            values.len(),
        )?;
        to_i32(OP, "bias", values.len())?;
        Ok(DeviceRelativeBias {
            values: device.upload(values)?,
            heads,
            span,
        })
    }
}

/// `out = softmax(Q·Kᵀ/√hd + bias)·V` per sequence and head (see the module docs); `bias`
/// (MPNet's relative position bias, JinaBERT's ALiBi) is added to the scaled scores when given.
pub fn attention_varlen<E: Element>(
    device: &CudaDevice,
    qkv: &DeviceTensor<E>,
    seq_offsets: &SeqOffsets,
    heads: usize,
    head_dim: usize,
    bias: Option<&DeviceRelativeBias>,
    out: &mut DeviceTensor<E>,
) -> Result<(), CudaError> {
    attention_varlen_windowed(device, qkv, seq_offsets, heads, head_dim, bias, None, out)
}

/// [`attention_varlen`] where, with a `window` `w`, query `i` attends only to the keys `j` of
/// its sequence with `|j − i| ≤ w` (ModernBERT's local layers; [`ember_cpu::AttentionTerms`]).
#[allow(clippy::too_many_arguments)]
pub fn attention_varlen_windowed<E: Element>(
    device: &CudaDevice,
    qkv: &DeviceTensor<E>,
    seq_offsets: &SeqOffsets,
    heads: usize,
    head_dim: usize,
    bias: Option<&DeviceRelativeBias>,
    window: Option<usize>,
    out: &mut DeviceTensor<E>,
) -> Result<(), CudaError> {
    const OP: &str = "attention_varlen";
    let t = seq_offsets.tokens();
    let invalid = |reason: String| CudaError::InvalidShape { op: OP, reason };
    if t > 0 && (heads == 0 || head_dim == 0) {
        return Err(invalid(format!(
            "heads = {heads}, head_dim = {head_dim}: both must be > 0"
        )));
    }
    if head_dim > MAX_HEAD_DIM {
        return Err(invalid(format!(
            "head_dim = {head_dim}: the kernel holds at most {MAX_HEAD_DIM}"
        )));
    }
    let h = checked_product(OP, "out", &[heads, head_dim])?;
    check_len(
        OP,
        "qkv",
        checked_product(OP, "qkv", &[t, 3, h])?,
        qkv.len(),
    )?;
    check_len(OP, "out", checked_product(OP, "out", &[t, h])?, out.len())?;
    // Row offsets are computed in size_t, columns in int, token indices (`s0 + q0 + r`) in
    // int before they are widened.
    to_i32(OP, "3·heads·head_dim", 3 * h)?;
    to_i32(OP, "tokens", t)?;
    let n_seq = seq_offsets.sequences();
    if n_seq > 65_535 || heads > 65_535 {
        return Err(invalid(format!(
            "{n_seq} sequences × {heads} heads: each must be ≤ 65,535 (grid z and y)"
        )));
    }
    if let Some(bias) = bias {
        if bias.heads != heads {
            return Err(invalid(format!(
                "the relative bias has {} heads, the attention {heads}",
                bias.heads
            )));
        }
        if seq_offsets.max_len() > bias.span + 1 {
            return Err(invalid(format!(
                "a sequence of {} tokens is longer than the relative bias's span {} allows",
                seq_offsets.max_len(),
                bias.span
            )));
        }
    }
    if t == 0 || h == 0 {
        return Ok(());
    }
    let function = device.function(KernelFile::Attention, entry_point(E::DTYPE), 0)?;
    let config = LaunchConfig {
        grid_dim: (
            seq_offsets.max_len().div_ceil(QUERIES_PER_BLOCK) as u32,
            heads as u32,
            n_seq as u32,
        ),
        block_dim: (32 * WARPS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (heads_i, head_dim_i) = (heads as i32, head_dim as i32);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let null: u64 = 0;
    // The span fits i32: the bias's heads·(2·span + 1) floats do (checked at upload).
    let span = bias.map_or(0, |b| b.span as i32);
    // −1: full attention. A window past the longest sequence is the same as none.
    let window = window.map_or(-1, |w| w.min(seq_offsets.max_len()) as i32);
    let stream = device.stream();
    let mut launch = Launch::new(stream, &function);
    launch
        .input(qkv.slice())
        .input(seq_offsets.device())
        .output(out.slice_mut())
        .value(&heads_i)
        .value(&head_dim_i)
        .value(&scale);
    match bias {
        Some(b) => launch.input(b.values.slice()),
        None => launch.value(&null),
    };
    launch.value(&span).value(&window);
    // SAFETY: arguments match attention.cu (qkv, seq_offsets, out: device pointers; heads,
    // head_dim: int; scale: float; bias: a device pointer or null; span, window: int);
    // seq_offsets were validated at upload (0 … T, non-decreasing), qkv/out hold T·3H and T·H
    // elements, and the bias holds heads·(2·span + 1) floats with span ≥ the longest sequence
    // − 1 (checked above).
    unsafe { launch.launch("launch attention", config) }?;
    Ok(())
}
