//! sentence-transformers pooling and Normalize on the GPU (`kernels/pooling.cu`), mirroring
//! [`ember_pooling::pool`] and [`ember_pooling::normalize_rows`]: `hidden` `[T, H]` → `out`
//! `[n_seq, modes·H]` (f32), one block of `H` per mode in the order given; sums in f64.

use cudarc::driver::LaunchConfig;
use ember_pooling::PoolingMode;

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element, SeqOffsets};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;

/// pooling.cu's `POOL_THREADS`.
const THREADS: u32 = 256;

pub(crate) const ENTRY_POINTS: [&str; 4] =
    ["pool_f32", "pool_bf16", "pool_f16", "normalize_rows_f32"];

fn entry_point(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => ENTRY_POINTS[0],
        Dtype::Bf16 => ENTRY_POINTS[1],
        Dtype::F16 => ENTRY_POINTS[2],
    }
}

/// pooling.cu's `POOL_*` numbering.
fn mode_code(mode: PoolingMode) -> i32 {
    match mode {
        PoolingMode::Cls => 0,
        PoolingMode::Max => 1,
        PoolingMode::Mean => 2,
        PoolingMode::MeanSqrtLen => 3,
        PoolingMode::WeightedMean => 4,
        PoolingMode::LastToken => 5,
    }
}

/// Pools every sequence of a packed batch with each of `modes` into `out` `[n_seq, modes·h]`,
/// the first `excluded` tokens of each masked out (as [`ember_pooling::pool_excluding`]; 0 for
/// none). Every sequence must hold at least one token.
#[allow(clippy::too_many_arguments)]
pub fn pool<E: Element>(
    device: &CudaDevice,
    hidden: &DeviceTensor<E>,
    seq_offsets: &SeqOffsets,
    h: usize,
    modes: &[PoolingMode],
    excluded: usize,
    out: &mut DeviceTensor<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "pool";
    let (t, n) = (seq_offsets.tokens(), seq_offsets.sequences());
    check_len(
        OP,
        "hidden",
        checked_product(OP, "hidden", &[t, h])?,
        hidden.len(),
    )?;
    let out_dim = checked_product(OP, "out", &[modes.len(), h])?;
    check_len(
        OP,
        "out",
        checked_product(OP, "out", &[n, out_dim])?,
        out.len(),
    )?;
    if let Some(s) = seq_offsets.host().windows(2).position(|w| w[1] <= w[0]) {
        return Err(CudaError::InvalidOffsets {
            op: OP,
            reason: format!("sequence {s} is empty"),
        });
    }
    let (h_i, out_dim_i) = (to_i32(OP, "h", h)?, to_i32(OP, "modes·h", out_dim)?);
    let n_u32 = to_i32(OP, "sequences", n)? as u32;
    // More than any sequence holds (offsets are u32) masks the same: every token.
    let excluded_u32 = u32::try_from(excluded).unwrap_or(u32::MAX);
    let col_blocks = h.div_ceil(THREADS as usize);
    if col_blocks > 65_535 {
        return Err(CudaError::InvalidShape {
            op: OP,
            reason: format!("h = {h} needs more than 65,535 blocks of {THREADS} columns"),
        });
    }
    if n == 0 || out_dim == 0 {
        return Ok(());
    }
    let function = device.function(KernelFile::Pooling, entry_point(E::DTYPE), 0)?;
    let config = LaunchConfig {
        grid_dim: (n_u32, col_blocks as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let stream = device.stream();
    for (i, &mode) in modes.iter().enumerate() {
        let (mode_i, col) = (mode_code(mode), (i * h) as i32);
        let mut launch = Launch::new(stream, &function);
        launch
            .input(hidden.slice())
            .input(seq_offsets.device())
            .value(&h_i)
            .value(&mode_i)
            .value(&excluded_u32)
            .output(out.slice_mut())
            .value(&out_dim_i)
            .value(&col);
        // SAFETY: arguments match pooling.cu's pool (hidden, seq_offsets: device pointers;
        // h, mode: int; excluded: unsigned; out: device pointer; out_stride, out_col: int);
        // hidden holds T·h, out
        // n·modes·h with col + h ≤ out_dim, and every sequence is non-empty.
        unsafe { launch.launch("launch pool", config) }?;
    }
    Ok(())
}

/// `x ← x / max(‖x‖₂, 1e-12)` for each row of `data` `[rows, dim]`.
pub fn normalize_rows(
    device: &CudaDevice,
    data: &mut DeviceTensor<f32>,
    dim: usize,
) -> Result<(), CudaError> {
    const OP: &str = "normalize_rows";
    if dim == 0 || data.is_empty() {
        return Ok(());
    }
    if !data.len().is_multiple_of(dim) {
        return Err(CudaError::InvalidShape {
            op: OP,
            reason: format!("{} elements are not rows of {dim}", data.len()),
        });
    }
    // One block a row: gridDim.x is at most 2³¹ − 1.
    let rows = to_i32(OP, "rows", data.len() / dim)? as u32;
    let dim_i = to_i32(OP, "dim", dim)?;
    let function = device.function(KernelFile::Pooling, ENTRY_POINTS[3], 0)?;
    let config = LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let stream = device.stream();
    let mut launch = Launch::new(stream, &function);
    launch.output(data.slice_mut()).value(&dim_i);
    // SAFETY: arguments match normalize_rows_f32 (data: device pointer, dim: int); data holds
    // rows·dim floats.
    unsafe { launch.launch("launch normalize", config) }?;
    Ok(())
}
