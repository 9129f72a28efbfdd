//! [`StoredTensor`]: a tensor in the dtype it is stored in (F32, F16 or BF16), borrowed from
//! the memory map when possible — so a half-width checkpoint stays half width in memory.
//!
//! Zero-copy when the host is little-endian and the data starts aligned for its element
//! (4 bytes for F32, 2 for F16/BF16); otherwise an owned copy in the same dtype.

use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};

use crate::file::FileBytes;
use crate::{DType, F32Tensor, TensorInfo};

/// A tensor's values in their stored dtype.
#[derive(Clone, Copy, Debug)]
pub enum StoredData<'a> {
    /// IEEE 754 single precision, as stored (`F32`).
    F32(&'a [f32]),
    /// IEEE 754 half precision (`F16`).
    F16(&'a [f16]),
    /// bfloat16: f32's exponent with a 7-bit mantissa (`BF16`).
    Bf16(&'a [bf16]),
}

impl StoredData<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            StoredData::F32(v) => v.len(),
            StoredData::F16(v) => v.len(),
            StoredData::Bf16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes values `start..start + out.len()` widened to f32 (exact) into `out`.
    ///
    /// # Panics
    /// If the range is out of bounds (callers index validated shapes).
    pub fn widen_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            StoredData::F32(v) => out.copy_from_slice(&v[start..end]),
            StoredData::F16(v) => {
                for (o, h) in out.iter_mut().zip(&v[start..end]) {
                    *o = h.to_f32();
                }
            }
            StoredData::Bf16(v) => {
                for (o, h) in out.iter_mut().zip(&v[start..end]) {
                    *o = h.to_f32();
                }
            }
        }
    }
}

/// Where the values live.
#[derive(Clone)]
enum Storage {
    /// `len` values of `dtype` starting `offset` bytes into `map`.
    ///
    /// Invariant (established in [`StoredTensor::from_file_bytes`], the only constructor): the host
    /// is little-endian, `offset + len · size(dtype) <= map.len()`, and `map.as_ptr() + offset`
    /// is aligned for the element type.
    Mapped {
        map: Arc<FileBytes>,
        offset: usize,
        len: usize,
    },
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    /// An f32 tensor from elsewhere (e.g. a torch archive), mapped or owned.
    Tensor(F32Tensor),
}

/// A named tensor in its stored dtype, row-major. Holds the memory map alive when it borrows
/// from it.
#[derive(Clone)]
pub struct StoredTensor {
    name: String,
    shape: Vec<usize>,
    dtype: DType,
    storage: Storage,
}

impl StoredTensor {
    /// Builds the tensor described by `info` from `map`; `None` if `info.byte_range` is not
    /// inside `map` (impossible for a validated file).
    pub(crate) fn from_file_bytes(
        name: &str,
        info: &TensorInfo,
        map: &Arc<FileBytes>,
    ) -> Option<StoredTensor> {
        let bytes = map.get(info.byte_range.clone())?;
        let mapped = |ok: bool, elem: usize| {
            ok.then(|| Storage::Mapped {
                map: Arc::clone(map),
                offset: info.byte_range.start,
                len: bytes.len() / elem,
            })
        };
        let little = cfg!(target_endian = "little");
        let storage = match info.dtype {
            // `try_cast_slice` succeeds only when the start is aligned and the length a
            // multiple of the element: exactly the invariant of `Storage::Mapped`.
            DType::F32 => mapped(
                little && bytemuck::try_cast_slice::<u8, f32>(bytes).is_ok(),
                4,
            )
            .unwrap_or_else(|| {
                Storage::F32(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            }),
            DType::F16 => mapped(
                little && bytemuck::try_cast_slice::<u8, f16>(bytes).is_ok(),
                2,
            )
            .unwrap_or_else(|| {
                Storage::F16(
                    bytes
                        .chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]))
                        .collect(),
                )
            }),
            DType::BF16 => mapped(
                little && bytemuck::try_cast_slice::<u8, bf16>(bytes).is_ok(),
                2,
            )
            .unwrap_or_else(|| {
                Storage::Bf16(
                    bytes
                        .chunks_exact(2)
                        .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                        .collect(),
                )
            }),
        };
        Some(StoredTensor {
            name: name.to_owned(),
            shape: info.shape.clone(),
            dtype: info.dtype,
            storage,
        })
    }

    /// The values, row-major, `∏ shape` of them, in the stored dtype.
    pub fn data(&self) -> StoredData<'_> {
        match &self.storage {
            Storage::Mapped { map, offset, len } => {
                let ptr = map.as_ptr().wrapping_add(*offset);
                // SAFETY: by the invariant of `Storage::Mapped` (checked by `try_cast_slice`
                // in `from_file_bytes`, the only constructor; the fields are private and never
                // changed): the `len` elements at `offset` lie inside the map, start aligned
                // for their type, and the host is little-endian, so they are valid values
                // (every bit pattern is one). The map never moves, stays alive while `self`
                // holds its `Arc`, and is read-only; the slice borrows `self`. (A file changed
                // by another process while mapped is outside this guarantee, as for
                // `F32Tensor`.)
                unsafe {
                    match self.dtype {
                        DType::F32 => StoredData::F32(std::slice::from_raw_parts(ptr.cast(), *len)),
                        DType::F16 => StoredData::F16(std::slice::from_raw_parts(ptr.cast(), *len)),
                        DType::BF16 => {
                            StoredData::Bf16(std::slice::from_raw_parts(ptr.cast(), *len))
                        }
                    }
                }
            }
            Storage::F32(v) => StoredData::F32(v),
            Storage::F16(v) => StoredData::F16(v),
            Storage::Bf16(v) => StoredData::Bf16(v),
            Storage::Tensor(t) => StoredData::F32(t.data()),
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

    /// The stored dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether [`data`](Self::data) points into the memory map (zero-copy).
    pub fn is_mapped(&self) -> bool {
        match &self.storage {
            Storage::Mapped { .. } => true,
            Storage::Tensor(t) => t.is_mapped(),
            _ => false,
        }
    }
}

impl From<F32Tensor> for StoredTensor {
    /// An f32 tensor as a stored tensor of dtype F32 (keeps its data where it is).
    fn from(tensor: F32Tensor) -> Self {
        StoredTensor {
            name: tensor.name().to_owned(),
            shape: tensor.shape().to_vec(),
            dtype: DType::F32,
            storage: Storage::Tensor(tensor),
        }
    }
}

impl fmt::Debug for StoredTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTensor")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}
