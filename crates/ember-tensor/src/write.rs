//! Writing safetensors files, for tests and tools (seeded random models, F16/BF16 copies).
//!
//! [`write_safetensors`] lays tensors out the way the `safetensors` crate does: the JSON header is
//! padded with spaces so the data section starts on an 8-byte boundary, and tensors are stored
//! F32 first, then the 16-bit ones, so every F32 tensor lands 4-byte aligned and opens zero-copy.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::{bf16, f16};
use serde_json::{json, Map, Value};

use crate::{DType, TensorError};

/// Writes `tensors` — `(name, dtype, shape, little-endian bytes)` — to a safetensors file at
/// `path` (created or truncated), with `__metadata__ = {"format": "pt"}` as PyTorch-side tools
/// expect. Build the bytes with [`f32_to_le_bytes`], [`f32_to_f16_bytes`] or
/// [`f32_to_bf16_bytes`].
///
/// # Errors
///
/// Checked before anything is written, naming the tensor: [`TensorError::BadEntry`] if a name is
/// empty, `__metadata__` or repeated, or if the bytes are not exactly `∏ shape × dtype size` long;
/// [`TensorError::ShapeOverflow`] if that size overflows. [`TensorError::Io`] if the file cannot be
/// written.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, DType, Vec<usize>, &[u8])],
) -> Result<(), TensorError> {
    let path = path.as_ref();
    let bad_entry = |tensor: &str, reason: &str| TensorError::BadEntry {
        path: path.to_path_buf(),
        tensor: tensor.to_owned(),
        reason: reason.to_owned(),
    };

    // Validate every tensor before creating the file.
    let mut names: Vec<&str> = Vec::with_capacity(tensors.len());
    for &(name, dtype, ref shape, bytes) in tensors {
        if name.is_empty() {
            return Err(bad_entry(name, "tensor name is empty"));
        }
        if name == "__metadata__" {
            return Err(bad_entry(
                name,
                "\"__metadata__\" is reserved for the metadata map",
            ));
        }
        let needed = shape
            .iter()
            .try_fold(1usize, |count, &dim| count.checked_mul(dim))
            .and_then(|count| count.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| TensorError::ShapeOverflow {
                path: path.to_path_buf(),
                tensor: name.to_owned(),
                shape: shape.clone(),
                dtype: dtype.as_str(),
            })?;
        if needed != bytes.len() {
            let reason = format!(
                "shape {shape:?} × {dtype} needs {needed} bytes but {} were given",
                bytes.len()
            );
            return Err(bad_entry(name, &reason));
        }
        names.push(name);
    }
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(bad_entry(pair[0], "tensor name appears more than once"));
    }

    // Widest dtype first (stable, so callers' order is kept within a dtype): with the data section
    // 8-aligned, every F32 tensor then starts at a multiple of 4.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tensors[i].1.size_in_bytes()));

    let mut header = Map::new();
    header.insert("__metadata__".to_owned(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for &i in &order {
        let (name, dtype, ref shape, bytes) = tensors[i];
        let end = offset + bytes.len();
        header.insert(
            name.to_owned(),
            json!({ "dtype": dtype.as_str(), "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header_bytes = Value::Object(header).to_string().into_bytes();
    // Pad with spaces (valid JSON whitespace) so 8 + header length is a multiple of 8.
    let padded_len = header_bytes.len().div_ceil(8) * 8;
    header_bytes.resize(padded_len, b' ');

    let io_error = |source| TensorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io_error)?);
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())
        .map_err(io_error)?;
    out.write_all(&header_bytes).map_err(io_error)?;
    for &i in &order {
        out.write_all(tensors[i].3).map_err(io_error)?;
    }
    out.flush().map_err(io_error)
}

/// `values` as little-endian F32 bytes.
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `values` rounded to F16 (round-to-nearest-even), as little-endian bytes.
pub fn f32_to_f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// `values` rounded to BF16 (round-to-nearest-even), as little-endian bytes.
pub fn f32_to_bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect()
}
