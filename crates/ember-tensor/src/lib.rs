//! Validated, zero-copy, memory-mapped model weights for Ember: safetensors, and the zip archives
//! of `torch.save` (`pytorch_model.bin`), read without Python.
//!
//! [`SafeTensorsFile::open`] maps a `.safetensors` file read-only and validates the whole header
//! up front (see [`SafeTensorsFile`] for the list of checks); every error is a [`TensorError`] naming the file
//! and, where one is at fault, the tensor. [`SafeTensorsFile::f32_tensor`] then hands out
//! [`F32Tensor`]s: F32 data that is 4-byte aligned in the file is used in place on little-endian
//! hosts (no copy), anything else (misaligned F32, F16, BF16) is decoded into an owned `Vec<f32>`.
//!
//! Trust assumption: a mapped file must not be modified or truncated while it is open (the usual
//! caveat of memory maps; validation happens once, at open).
//!
//! [`TorchFile`] reads a `torch.save` state dict the same way: its own zip reader finds the
//! storages, and a pickle interpreter that knows only the opcodes and the handful of globals a
//! state dict uses (and never runs code) finds the tensors; storages are used in place when
//! aligned. [`WeightFile`] holds either, with one API, and [`find_weight_file`] picks a model
//! folder's file (`model.safetensors`, else `pytorch_model.bin`).
//!
//! [`write_safetensors`] and the `f32_to_*_bytes` helpers write files, for tests and tools.
//!
//! ```
//! use ember_tensor::{f32_to_f16_bytes, f32_to_le_bytes, write_safetensors, DType, SafeTensorsFile};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("model.safetensors");
//! let weight = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
//! write_safetensors(
//!     &path,
//!     &[
//!         ("dense.weight", DType::F32, vec![2, 3], &f32_to_le_bytes(&weight)),
//!         ("dense.bias", DType::F16, vec![2], &f32_to_f16_bytes(&[0.5, -0.25])),
//!     ],
//! )?;
//!
//! let file = SafeTensorsFile::open(&path)?;
//! let weight_tensor = file.f32_tensor_with_shape("dense.weight", &[2, 3])?;
//! assert_eq!(weight_tensor.data(), &weight);
//! assert!(weight_tensor.is_mapped()); // aligned F32: read in place
//! assert_eq!(file.f32_tensor("dense.bias")?.data(), &[0.5, -0.25]); // F16 widened
//!
//! let err = file.f32_tensor_with_shape("dense.weight", &[3, 2]).unwrap_err();
//! assert!(err.to_string().contains("expected shape [3, 2], found [2, 3]"));
//! # Ok(())
//! # }
//! ```

mod dtype;
mod error;
mod file;
mod pickle;
mod stored;
mod tensor;
mod torch;
mod weights;
mod write;
mod zip;

pub use dtype::DType;
pub use error::TensorError;
pub use file::{SafeTensorsFile, TensorInfo, MAX_HEADER_LEN};
pub use stored::{StoredData, StoredTensor};
pub use tensor::F32Tensor;
pub use torch::TorchFile;
pub use weights::{find_weight_file, WeightFile, WEIGHT_FILE_NAMES};
pub use write::{f32_to_bf16_bytes, f32_to_f16_bytes, f32_to_le_bytes, write_safetensors};
pub use zip::crc32;
