//! (Residual add +) LayerNorm on the GPU (`kernels/layernorm.cu`), mirroring
//! [`ember_cpu::layernorm()`]: in place, `x ← LN(x + r)` over rows of `[rows, hidden]`,
//!
//! `y = (v − μ) / √(σ² + ε) · γ + β`, `v = x + r`, biased variance; `γ`, `β` are `[hidden]` f32.

use cudarc::driver::{DevicePtrMut, LaunchConfig};

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;

/// Rows per 256-thread block (one warp each): `LN_WARPS` in layernorm.cu.
const ROWS_PER_BLOCK: usize = 8;

pub(crate) const ENTRY_POINTS: [&str; 3] = ["layernorm_f32", "layernorm_bf16", "layernorm_f16"];

fn entry_point(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => ENTRY_POINTS[0],
        Dtype::Bf16 => ENTRY_POINTS[1],
        Dtype::F16 => ENTRY_POINTS[2],
    }
}

/// `x ← LN(x + residual)` row by row (`residual` optional), statistics in f32.
#[allow(clippy::too_many_arguments)]
pub fn layernorm<E: Element>(
    device: &CudaDevice,
    x: &mut DeviceTensor<E>,
    residual: Option<&DeviceTensor<E>>,
    rows: usize,
    hidden: usize,
    gamma: &DeviceTensor<f32>,
    beta: &DeviceTensor<f32>,
    eps: f32,
) -> Result<(), CudaError> {
    launch_layernorm(device, None, x, residual, rows, hidden, (gamma, beta), eps)
}

/// `out ← LN(x)` row by row, `x` kept (a pre-LayerNorm layer's input, ModernBERT's).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_into<E: Element>(
    device: &CudaDevice,
    x: &DeviceTensor<E>,
    out: &mut DeviceTensor<E>,
    rows: usize,
    hidden: usize,
    gamma: &DeviceTensor<f32>,
    beta: &DeviceTensor<f32>,
    eps: f32,
) -> Result<(), CudaError> {
    launch_layernorm(device, Some(x), out, None, rows, hidden, (gamma, beta), eps)
}

/// `out ← LN(x + residual)`, `x` being `out` itself when `None`.
#[allow(clippy::too_many_arguments)]
fn launch_layernorm<E: Element>(
    device: &CudaDevice,
    x: Option<&DeviceTensor<E>>,
    out: &mut DeviceTensor<E>,
    residual: Option<&DeviceTensor<E>>,
    rows: usize,
    hidden: usize,
    (gamma, beta): (&DeviceTensor<f32>, &DeviceTensor<f32>),
    eps: f32,
) -> Result<(), CudaError> {
    const OP: &str = "layernorm";
    let len = checked_product(OP, "x", &[rows, hidden])?;
    check_len(OP, "out", len, out.len())?;
    if let Some(x) = x {
        check_len(OP, "x", len, x.len())?;
    }
    if let Some(r) = residual {
        check_len(OP, "residual", len, r.len())?;
    }
    check_len(OP, "gamma", hidden, gamma.len())?;
    check_len(OP, "beta", hidden, beta.len())?;
    let (rows_i, hidden_i) = (to_i32(OP, "rows", rows)?, to_i32(OP, "hidden", hidden)?);
    if len == 0 {
        return Ok(());
    }
    let function = device.function(KernelFile::LayerNorm, entry_point(E::DTYPE), 0)?;
    let config = LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
        block_dim: (32 * ROWS_PER_BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let null: u64 = 0;
    let stream = device.stream();
    // In place, the kernel reads x (and r) and writes out = x: out's address is passed twice
    // (its guard, held until the launch is queued, orders it as written).
    let (out_address, _out_guard) = out.slice_mut().device_ptr_mut(stream);
    let mut launch = Launch::new(stream, &function);
    match x {
        Some(x) => launch.input(x.slice()),
        None => launch.value(&out_address),
    };
    match residual {
        Some(r) => launch.input(r.slice()),
        None => launch.value(&null),
    };
    launch
        .input(gamma.slice())
        .input(beta.slice())
        .value(&out_address)
        .value(&rows_i)
        .value(&hidden_i)
        .value(&eps);
    // SAFETY: arguments match layernorm.cu (x, residual|null, gamma, beta, out: device pointers,
    // rows, hidden: int, eps: float); lengths were checked; out aliasing x is supported.
    unsafe { launch.launch("launch layernorm", config) }?;
    Ok(())
}
