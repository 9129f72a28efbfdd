//! A gated linear unit's gate on the GPU (`kernels/activation.cu`), mirroring
//! [`ember_cpu::gated_activation`]: for `x` `[rows, 2F]`, `out[r, j] = act(x[r, j]) · x[r, F + j]`
//! into `out` `[rows, F]` (ModernBERT's GeGLU).

use cudarc::driver::LaunchConfig;
use ember_cpu::Activation;

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;

/// activation.cu's `GATED_THREADS`, and the most blocks a launch takes (a grid-stride loop).
const THREADS: u32 = 256;
const MAX_BLOCKS: usize = 4096;

pub(crate) const ENTRY_POINTS: [&str; 3] = [
    "gated_activation_f32",
    "gated_activation_bf16",
    "gated_activation_f16",
];

fn entry_point(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => ENTRY_POINTS[0],
        Dtype::Bf16 => ENTRY_POINTS[1],
        Dtype::F16 => ENTRY_POINTS[2],
    }
}

/// `out[r, j] = act(x[r, j]) · x[r, f + j]` (see the module docs).
pub fn gated_activation<E: Element>(
    device: &CudaDevice,
    act: Activation,
    x: &DeviceTensor<E>,
    rows: usize,
    f: usize,
    out: &mut DeviceTensor<E>,
) -> Result<(), CudaError> {
    const OP: &str = "gated_activation";
    check_len(OP, "x", checked_product(OP, "x", &[rows, 2, f])?, x.len())?;
    let n = checked_product(OP, "out", &[rows, f])?;
    check_len(OP, "out", n, out.len())?;
    let f_i = to_i32(OP, "f", f)?;
    if n == 0 {
        return Ok(());
    }
    let function = device.function(KernelFile::Activation, entry_point(E::DTYPE), 0)?;
    let config = LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize).min(MAX_BLOCKS) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let rows_i = rows as i64;
    let act_i = crate::activation_code(act);
    let stream = device.stream();
    let mut launch = Launch::new(stream, &function);
    launch
        .input(x.slice())
        .output(out.slice_mut())
        .value(&rows_i)
        .value(&f_i)
        .value(&act_i);
    // SAFETY: arguments match activation.cu (x, out: device pointers; rows: long long; f, act:
    // int); x holds rows·2f and out rows·f elements (checked).
    unsafe { launch.launch("launch gated_activation", config) }?;
    Ok(())
}
