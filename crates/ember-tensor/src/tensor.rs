//! [`F32Tensor`]: a tensor's data as `&[f32]`, borrowed from the file's bytes (its memory map,
//! or the buffer given to `SafeTensorsFile::from_bytes`) when possible.
//!
//! A BERT checkpoint is mostly F32 matrices placed at 4-byte-aligned offsets, so on a
//! little-endian host the weights can be used in place: the tensor holds an `Arc` of the map and
//! its byte range, and [`F32Tensor::data`] reinterprets those bytes. Everything else is copied into
//! an owned `Vec<f32>`:
//!
//! - F32 at an offset that is not a multiple of 4 (legal in safetensors, rare in practice),
//! - F32 on a big-endian host (the format is little-endian),
//! - F16 and BF16, widened exactly (every f16 and bf16 value is representable in f32).

use std::fmt;
use std::sync::Arc;

use crate::file::FileBytes;
use crate::{DType, TensorInfo};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Where the f32 values live.
#[derive(Clone)]
enum Storage {
    /// `len` f32 values starting `offset` bytes into `map` (the file's bytes).
    ///
    /// Invariant (established in [`F32Tensor::from_file_bytes`], the only constructor): the
    /// host is little-endian, `offset + len * 4 <= map.len()`, and `map.as_ptr() + offset` is
    /// aligned for `f32`.
    Mapped {
        map: Arc<FileBytes>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

/// A named f32 tensor read from a [`SafeTensorsFile`](crate::SafeTensorsFile) or a
/// [`TorchFile`](crate::TorchFile), row-major.
///
/// Holds the memory map alive when it borrows from it, so it may outlive the file object. Cloning
/// a mapped tensor is cheap (an `Arc` increment); cloning an owned one copies its data.
#[derive(Clone)]
pub struct F32Tensor {
    name: String,
    shape: Vec<usize>,
    stored_dtype: DType,
    storage: Storage,
}

impl F32Tensor {
    /// Builds the tensor described by `info` from `map`; `None` if `info.byte_range` is not inside
    /// `map` (impossible for a validated file). The range's length is taken to be
    /// `∏ shape × dtype size`, as validated when the file was opened; were it not, the tensor would
    /// hold fewer elements than its shape says, but nothing would be read out of bounds.
    pub(crate) fn from_file_bytes(
        name: &str,
        info: &TensorInfo,
        map: &Arc<FileBytes>,
    ) -> Option<F32Tensor> {
        let bytes = map.get(info.byte_range.clone())?;
        let storage = match info.dtype {
            DType::F32 if cfg!(target_endian = "little") => {
                match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                    // `try_cast_slice` succeeds only when the start is aligned for f32 and the
                    // length is a multiple of 4: exactly the invariant of `Storage::Mapped`.
                    Ok(values) => Storage::Mapped {
                        map: Arc::clone(map),
                        offset: info.byte_range.start,
                        len: values.len(),
                    },
                    Err(_) => Storage::Owned(f32_from_le_bytes(bytes)),
                }
            }
            DType::F32 => Storage::Owned(f32_from_le_bytes(bytes)),
            DType::F16 => Storage::Owned(widen_f16(bytes)),
            DType::BF16 => Storage::Owned(widen_bf16(bytes)),
        };
        Some(F32Tensor {
            name: name.to_owned(),
            shape: info.shape.clone(),
            stored_dtype: info.dtype,
            storage,
        })
    }

    /// A vector of `len` zeros made in memory, not read from a file (a parameter a model
    /// does not store because it is zero: a LayerNorm without `β`).
    pub fn zeros(name: &str, len: usize) -> F32Tensor {
        Self::from_owned(name, vec![len], DType::F32, vec![0.0; len])
    }

    /// A tensor holding `values` (already decoded, row-major), stored on disk as `stored_dtype`.
    pub(crate) fn from_owned(
        name: &str,
        shape: Vec<usize>,
        stored_dtype: DType,
        values: Vec<f32>,
    ) -> F32Tensor {
        F32Tensor {
            name: name.to_owned(),
            shape,
            stored_dtype,
            storage: Storage::Owned(values),
        }
    }

    /// The values, row-major, `∏ shape` of them.
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Mapped { map, offset, len } => {
                debug_assert!(offset + len * 4 <= map.len());
                debug_assert_eq!(map.as_ptr().wrapping_add(*offset) as usize % 4, 0);
                // SAFETY: by the invariant of `Storage::Mapped`, checked by `try_cast_slice` in
                // `from_file_bytes` (the only constructor; the fields are private and never changed):
                // the `len * 4` bytes at `offset` lie inside the map and start f32-aligned, and the
                // host is little-endian, so they are `len` valid f32 values (every bit pattern is
                // one). The bytes (a read-only map, or a `Vec` never touched again after
                // validation) never move and stay alive while `self` holds their `Arc`, and no
                // `&mut` to them exists; the returned slice borrows `self`. A file
                // modified by another process while mapped is outside this guarantee: that is the
                // documented trust assumption of the crate.
                unsafe { std::slice::from_raw_parts(map.as_ptr().add(*offset).cast::<f32>(), *len) }
            }
            Storage::Owned(values) => values,
        }
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The tensor's name in the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dtype the tensor is stored in on disk (the data is always f32 here).
    pub fn stored_dtype(&self) -> DType {
        self.stored_dtype
    }

    /// Whether [`data`](Self::data) points into the file's bytes (zero-copy) rather than an owned
    /// copy.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// The values as an owned vector (copies when mapped, moves when owned).
    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Owned(values) => values,
            Storage::Mapped { .. } => self.data().to_vec(),
        }
    }
}

impl fmt::Debug for F32Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("F32Tensor")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("stored_dtype", &self.stored_dtype)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// Decodes little-endian f32 values from bytes of any alignment (a trailing partial value, which
/// validation rules out, is ignored).
fn f32_from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Widens little-endian f16 values to f32; uses half's bulk conversion (F16C where the CPU has
/// it) when the bytes can be viewed as `[f16]` in place.
fn widen_f16(bytes: &[u8]) -> Vec<f32> {
    match bytemuck::try_cast_slice::<u8, f16>(bytes) {
        Ok(halves) if cfg!(target_endian = "little") => {
            let mut out = vec![0.0f32; halves.len()];
            halves.convert_to_f32_slice(&mut out);
            out
        }
        _ => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// Widens little-endian bf16 values to f32 (exact: bf16 is the top half of an f32).
fn widen_bf16(bytes: &[u8]) -> Vec<f32> {
    match bytemuck::try_cast_slice::<u8, bf16>(bytes) {
        Ok(halves) if cfg!(target_endian = "little") => {
            let mut out = vec![0.0f32; halves.len()];
            halves.convert_to_f32_slice(&mut out);
            out
        }
        _ => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}
