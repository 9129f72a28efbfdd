//! Rotary position embeddings on the GPU (`kernels/rotary.cu`), mirroring
//! [`ember_cpu::apply_rotary`]: the queries and keys of a packed `[T, 3H]` QKV buffer rotated in
//! place, each token by its position in its sequence, from the CPU's own `cos`/`sin` tables
//! ([`ember_cpu::Rotary`], torch's values) uploaded once.

use cudarc::driver::LaunchConfig;

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element, SeqOffsets};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;

/// rotary.cu's `ROT_THREADS`.
const THREADS: u32 = 128;

pub(crate) const ENTRY_POINTS: [&str; 3] = ["rotary_f32", "rotary_bf16", "rotary_f16"];

fn entry_point(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => ENTRY_POINTS[0],
        Dtype::Bf16 => ENTRY_POINTS[1],
        Dtype::F16 => ENTRY_POINTS[2],
    }
}

/// One `θ`'s `cos` and `sin` tables on the device, `[max_len, hd/2]` f32 each.
#[derive(Debug)]
pub struct DeviceRotary {
    cos: DeviceTensor<f32>,
    sin: DeviceTensor<f32>,
    head_dim: usize,
    max_len: usize,
}

impl DeviceRotary {
    /// Uploads `rotary`'s tables.
    pub fn upload(device: &CudaDevice, rotary: &ember_cpu::Rotary) -> Result<Self, CudaError> {
        let (cos, sin) = rotary.tables();
        Ok(DeviceRotary {
            cos: device.upload(cos)?,
            sin: device.upload(sin)?,
            head_dim: rotary.head_dim(),
            max_len: rotary.max_len(),
        })
    }
}

/// Rotates the queries and keys of `qkv` (`[T, 3H]`, `H = heads · hd`) in place by their
/// positions (see the module docs).
pub fn apply_rotary<E: Element>(
    device: &CudaDevice,
    qkv: &mut DeviceTensor<E>,
    seq_offsets: &SeqOffsets,
    heads: usize,
    rotary: &DeviceRotary,
) -> Result<(), CudaError> {
    const OP: &str = "apply_rotary";
    let t = seq_offsets.tokens();
    let h = checked_product(OP, "qkv", &[heads, rotary.head_dim])?;
    check_len(
        OP,
        "qkv",
        checked_product(OP, "qkv", &[t, 3, h])?,
        qkv.len(),
    )?;
    to_i32(OP, "qkv", qkv.len())?;
    if seq_offsets.max_len() > rotary.max_len {
        return Err(CudaError::InvalidOffsets {
            op: OP,
            reason: format!(
                "a sequence of {} tokens is longer than the rotary tables' {}",
                seq_offsets.max_len(),
                rotary.max_len
            ),
        });
    }
    let n_seq = seq_offsets.sequences();
    if n_seq > 65_535 {
        return Err(CudaError::InvalidShape {
            op: OP,
            reason: format!("{n_seq} sequences: at most 65,535 (grid y)"),
        });
    }
    if t == 0 || h == 0 {
        return Ok(());
    }
    let function = device.function(KernelFile::Rotary, entry_point(E::DTYPE), 0)?;
    let config = LaunchConfig {
        grid_dim: (seq_offsets.max_len() as u32, n_seq as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (heads_i, head_dim_i) = (heads as i32, rotary.head_dim as i32);
    let stream = device.stream();
    let mut launch = Launch::new(stream, &function);
    launch
        .output(qkv.slice_mut())
        .input(seq_offsets.device())
        .input(rotary.cos.slice())
        .input(rotary.sin.slice())
        .value(&heads_i)
        .value(&head_dim_i);
    // SAFETY: arguments match rotary.cu (qkv, seq_offsets, cos, sin: device pointers; heads,
    // head_dim: int); qkv holds T·3H elements (checked, and its indices fit i32), the offsets
    // were validated at upload, and the tables hold max_len ≥ the longest sequence rows of hd/2.
    unsafe { launch.launch("launch rotary", config) }?;
    Ok(())
}
