//! Opening and validating a safetensors file: [`SafeTensorsFile`] (the format, the checks and the
//! trust assumption are documented there, where rustdoc shows them) and [`TensorInfo`].
//!
//! The whole header is parsed with `serde_json` into a `Value` and walked by hand rather than
//! through the `safetensors` crate, so that every check can name the file and the tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde_json::Value;

use crate::dtype::safetensors_dtype;
use crate::{DType, F32Tensor, TensorError};

/// Bytes of the little-endian `u64` header-length prefix.
const HEADER_LEN_PREFIX: usize = 8;

/// Largest header accepted, in bytes: the `safetensors` crate's limit (BERT-large headers are ~30 KB).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Where a tensor lives and what it holds, as validated from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type on disk.
    pub dtype: DType,
    /// Dimensions, outermost first (row-major). `[]` is a scalar.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file (not relative to the data section, as `data_offsets` are).
    pub byte_range: Range<usize>,
}

impl TensorInfo {
    /// Number of elements, `∏ shape` (1 for a scalar). Cannot overflow: checked when the file was
    /// opened.
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A validated, memory-mapped safetensors file.
///
/// Cheap to keep around: tensors are not read until asked for, and aligned little-endian F32
/// tensors are never copied (see [`F32Tensor`]).
///
/// # Format
///
/// Layout (<https://github.com/huggingface/safetensors>):
///
/// ```text
/// [ n: u64 little-endian ][ n bytes: UTF-8 JSON header ][ data section ]
/// header = { "__metadata__": { str: str }?,                      (optional, ignored)
///            "<tensor name>": { "dtype": "F32", "shape": [d0, d1, …],
///                               "data_offsets": [begin, end] }, … }
/// ```
///
/// `data_offsets` are relative to the start of the data section; data is little-endian, row-major.
///
/// # Validation
///
/// [`open`](Self::open) checks everything before any tensor is handed out: the header fits in the
/// file and in [`MAX_HEADER_LEN`], is UTF-8 JSON and an object, every entry is well-formed with a
/// safetensors dtype, `shape × dtype` neither overflows nor disagrees with `data_offsets`, every
/// range is ordered and inside the data section, and the ranges tile the data section exactly,
/// with no overlap, gap or trailing bytes (the rule the `safetensors` crate enforces, so Ember
/// accepts exactly the files the reference reader accepts).
///
/// # Tensors Ember does not read
///
/// Tensors of a dtype other than F32, F16 and BF16 are validated like the rest but kept aside:
/// BERT checkpoints carry an I64 `embeddings.position_ids` buffer (`0..max_position`), which must
/// not stop the file from opening. [`names`](Self::names), [`info`](Self::info),
/// [`len`](Self::len) and [`contains`](Self::contains) cover only the readable tensors; the others
/// are listed by [`unsupported_tensors`](Self::unsupported_tensors), their bytes are available
/// from [`raw_bytes`](Self::raw_bytes), and asking for one as f32 is
/// [`TensorError::UnsupportedDType`]. A dtype string that is no safetensors dtype fails `open`.
///
/// # Trust assumption
///
/// The file is mapped, not read: it must not be modified or truncated by anyone while a
/// `SafeTensorsFile` or an [`F32Tensor`] from it is alive. That is the caveat of every memory map
/// (`memmap2::Mmap::map` is `unsafe` for this reason); validation cannot protect against a file
/// that changes after it was checked.
///
/// Cloning shares the mapping (the bytes sit behind an `Arc`): a clone costs the header's
/// tensor table, never the data, and pages already read stay counted once.
#[derive(Clone)]
pub struct SafeTensorsFile {
    path: PathBuf,
    bytes: Arc<FileBytes>,
    tensors: BTreeMap<String, TensorInfo>,
    unsupported: BTreeMap<String, UnsupportedTensor>,
}

/// The whole file: mapped by [`SafeTensorsFile::open`], owned after
/// [`SafeTensorsFile::from_bytes`]. Never mutated once built (it lives behind an `Arc` that is
/// never unwrapped), so its bytes neither move nor change while tensors borrow them.
pub(crate) enum FileBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// A validated tensor whose dtype Ember does not read.
#[derive(Debug, Clone)]
struct UnsupportedTensor {
    /// The header's dtype string, e.g. `"I64"`.
    dtype: String,
    /// Absolute byte range in the file.
    byte_range: Range<usize>,
}

impl std::fmt::Debug for SafeTensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensorsFile")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .field("tensors", &self.tensors.len())
            .field("unsupported_tensors", &self.unsupported.len())
            .finish()
    }
}

impl SafeTensorsFile {
    /// Maps `path` read-only and validates its header and every tensor's placement.
    ///
    /// # Errors
    ///
    /// [`TensorError::Io`] if the file cannot be opened or mapped; any of the header and placement
    /// variants of [`TensorError`] if it is not a valid safetensors file (see
    /// [Validation](Self#validation)). Every error names the file and, where one is at fault, the
    /// tensor.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TensorError> {
        let path = path.as_ref().to_path_buf();
        // Checked before mapping too: "too short" is the message a reader wants.
        let map = map_read_only(&path, |len| {
            if len < HEADER_LEN_PREFIX as u64 {
                Err(TensorError::TooShort {
                    path: path.clone(),
                    len,
                })
            } else {
                Ok(())
            }
        })?;
        Self::validate(path, FileBytes::Mapped(map))
    }

    /// Validates a safetensors file already in memory (read from an archive or a network
    /// stream, or a fuzzer's input), exactly as [`open`](Self::open) validates a file; `path`
    /// only names it in errors. Aligned F32 tensors borrow from `bytes` as they would from the
    /// map.
    ///
    /// # Errors
    ///
    /// Those of [`open`](Self::open), except [`TensorError::Io`].
    ///
    /// ```
    /// use ember_tensor::SafeTensorsFile;
    ///
    /// let header = br#"{"bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    /// let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    /// bytes.extend_from_slice(header);
    /// bytes.extend_from_slice(&0.5f32.to_le_bytes());
    /// let file = SafeTensorsFile::from_bytes("in-memory.safetensors", bytes)?;
    /// assert_eq!(file.f32_tensor("bias")?.data(), &[0.5]);
    ///
    /// let err = SafeTensorsFile::from_bytes("short.safetensors", vec![1, 2]).unwrap_err();
    /// assert!(err.to_string().starts_with("short.safetensors: file is 2 bytes"));
    /// # Ok::<(), ember_tensor::TensorError>(())
    /// ```
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, TensorError> {
        Self::validate(path.into(), FileBytes::Owned(bytes))
    }

    fn validate(path: PathBuf, bytes: FileBytes) -> Result<Self, TensorError> {
        let (tensors, unsupported) = parse_header(&path, &bytes)?;
        Ok(Self {
            path,
            bytes: Arc::new(bytes),
            tensors,
            unsupported,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the tensors Ember can read (F32, F16, BF16), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, info)` for every tensor, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorInfo)> + '_ {
        self.tensors
            .iter()
            .map(|(name, info)| (name.as_str(), info))
    }

    /// Dtype, shape and placement of `name`, if present.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Number of tensors Ember can read (neither `__metadata__` nor the unsupported ones count).
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensor Ember can read.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether a tensor called `name` is present with a dtype Ember reads.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Whether a tensor called `name` is present, whatever its dtype (unlike
    /// [`contains`](Self::contains), an I64 or F64 tensor counts).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.unsupported.contains_key(name)
    }

    /// `(name, dtype)` of the tensors whose dtype Ember does not read (e.g.
    /// `("embeddings.position_ids", "I64")`), sorted by name.
    pub fn unsupported_tensors(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.unsupported
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor.dtype.as_str()))
    }

    /// The raw little-endian bytes of any tensor, unsupported dtypes included, as stored (e.g. to
    /// upload F16 weights to a device without widening them).
    ///
    /// # Errors
    ///
    /// [`TensorError::MissingTensor`] if there is no tensor `name`.
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8], TensorError> {
        let byte_range = match (self.tensors.get(name), self.unsupported.get(name)) {
            (Some(info), _) => &info.byte_range,
            (None, Some(tensor)) => &tensor.byte_range,
            (None, None) => return Err(self.missing(name)),
        };
        self.bytes
            .get(byte_range.clone())
            .ok_or_else(|| self.out_of_bounds(name, byte_range))
    }

    /// Tensor `name` as f32: a zero-copy view into the file's bytes when the data is F32, 4-byte aligned and
    /// the host little-endian; otherwise an owned copy (F16 and BF16 are widened exactly).
    ///
    /// # Errors
    ///
    /// [`TensorError::MissingTensor`] if there is no tensor `name`;
    /// [`TensorError::UnsupportedDType`] if its dtype is neither F32, F16 nor BF16.
    pub fn f32_tensor(&self, name: &str) -> Result<F32Tensor, TensorError> {
        let info = self.require(name)?;
        F32Tensor::from_file_bytes(name, info, &self.bytes)
            .ok_or_else(|| self.out_of_bounds(name, &info.byte_range))
    }

    /// Tensor `name` in its stored dtype (F32, F16 or BF16): a zero-copy view into the map
    /// when aligned on a little-endian host, else an owned copy in the same dtype. Half-width
    /// weights stay half width.
    ///
    /// # Errors
    ///
    /// As [`f32_tensor`](Self::f32_tensor).
    pub fn stored_tensor(&self, name: &str) -> Result<crate::StoredTensor, TensorError> {
        let info = self.require(name)?;
        crate::StoredTensor::from_file_bytes(name, info, &self.bytes)
            .ok_or_else(|| self.out_of_bounds(name, &info.byte_range))
    }

    /// Like [`f32_tensor`](Self::f32_tensor), but fails with [`TensorError::ShapeMismatch`] (before
    /// reading any data) unless the shape is exactly `expected`.
    ///
    /// # Errors
    ///
    /// Those of [`f32_tensor`](Self::f32_tensor), and [`TensorError::ShapeMismatch`].
    pub fn f32_tensor_with_shape(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<F32Tensor, TensorError> {
        let info = self.require(name)?;
        if info.shape != expected {
            return Err(TensorError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_owned(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        self.f32_tensor(name)
    }

    /// The info of a readable tensor; `UnsupportedDType` or `MissingTensor` otherwise.
    fn require(&self, name: &str) -> Result<&TensorInfo, TensorError> {
        if let Some(info) = self.tensors.get(name) {
            return Ok(info);
        }
        match self.unsupported.get(name) {
            Some(tensor) => Err(TensorError::UnsupportedDType {
                path: self.path.clone(),
                tensor: name.to_owned(),
                dtype: tensor.dtype.clone(),
            }),
            None => Err(self.missing(name)),
        }
    }

    fn missing(&self, name: &str) -> TensorError {
        TensorError::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
        }
    }

    /// Unreachable for a validated file (ranges were checked against the bytes at `open`); reported
    /// as an error rather than a panic all the same. `data_len` is then the whole file's length, as
    /// the range is absolute.
    fn out_of_bounds(&self, name: &str, byte_range: &Range<usize>) -> TensorError {
        TensorError::OutOfBounds {
            path: self.path.clone(),
            tensor: name.to_owned(),
            begin: byte_range.start,
            end: byte_range.end,
            data_len: self.bytes.len(),
        }
    }
}

/// One validated header entry, with its `data_offsets` (relative to the data section) kept for the
/// coverage check and for messages.
struct Entry {
    name: String,
    /// `Ok` for a dtype Ember reads, `Err` (with the dtype string) for any other.
    dtype: Result<DType, String>,
    shape: Vec<usize>,
    byte_range: Range<usize>,
    begin: usize,
    end: usize,
}

/// The readable tensors and the unsupported ones of a validated file.
type ParsedHeader = (
    BTreeMap<String, TensorInfo>,
    BTreeMap<String, UnsupportedTensor>,
);

/// Parses and validates the whole header of `bytes` (the complete file).
fn parse_header(path: &Path, bytes: &[u8]) -> Result<ParsedHeader, TensorError> {
    let file_len = bytes.len();
    let Some(prefix) = bytes.get(..HEADER_LEN_PREFIX) else {
        return Err(TensorError::TooShort {
            path: path.to_path_buf(),
            len: file_len as u64,
        });
    };
    let mut prefix_array = [0u8; HEADER_LEN_PREFIX];
    prefix_array.copy_from_slice(prefix);
    let header_len = u64::from_le_bytes(prefix_array);
    if header_len > MAX_HEADER_LEN {
        return Err(TensorError::HeaderTooLarge {
            path: path.to_path_buf(),
            header_len,
            max: MAX_HEADER_LEN,
        });
    }
    let header_end = usize::try_from(header_len)
        .ok()
        .and_then(|n| n.checked_add(HEADER_LEN_PREFIX));
    let Some((header_end, header_bytes)) =
        header_end.and_then(|end| Some((end, bytes.get(HEADER_LEN_PREFIX..end)?)))
    else {
        return Err(TensorError::HeaderOutOfBounds {
            path: path.to_path_buf(),
            header_len,
            file_len: file_len as u64,
        });
    };
    let header_text =
        std::str::from_utf8(header_bytes).map_err(|source| TensorError::HeaderNotUtf8 {
            path: path.to_path_buf(),
            source,
        })?;
    let header: Value =
        serde_json::from_str(header_text).map_err(|source| TensorError::HeaderNotJson {
            path: path.to_path_buf(),
            source,
        })?;
    let Value::Object(header) = header else {
        return Err(TensorError::HeaderNotObject {
            path: path.to_path_buf(),
            found: json_kind(&header),
        });
    };

    let data_start = header_end;
    let data_len = file_len - header_end;
    let mut entries = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            check_metadata(path, &value)?;
            continue;
        }
        entries.push(parse_entry(path, name, &value, data_start, data_len)?);
    }
    check_coverage(path, &mut entries, data_len)?;

    let mut tensors = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    for entry in entries {
        match entry.dtype {
            Ok(dtype) => {
                let info = TensorInfo {
                    dtype,
                    shape: entry.shape,
                    byte_range: entry.byte_range,
                };
                tensors.insert(entry.name, info);
            }
            Err(dtype) => {
                let tensor = UnsupportedTensor {
                    dtype,
                    byte_range: entry.byte_range,
                };
                unsupported.insert(entry.name, tensor);
            }
        }
    }
    Ok((tensors, unsupported))
}

/// `__metadata__` must be a string-to-string map (as the `safetensors` crate requires); its
/// content is otherwise ignored.
fn check_metadata(path: &Path, value: &Value) -> Result<(), TensorError> {
    let well_formed = value
        .as_object()
        .is_some_and(|map| map.values().all(Value::is_string));
    if well_formed {
        Ok(())
    } else {
        Err(TensorError::BadEntry {
            path: path.to_path_buf(),
            tensor: "__metadata__".to_owned(),
            reason: "must be an object mapping strings to strings".to_owned(),
        })
    }
}

/// Validates one tensor entry on its own: structure, dtype, size arithmetic, bounds.
fn parse_entry(
    path: &Path,
    name: String,
    value: &Value,
    data_start: usize,
    data_len: usize,
) -> Result<Entry, TensorError> {
    let bad_entry = |reason: String| TensorError::BadEntry {
        path: path.to_path_buf(),
        tensor: name.clone(),
        reason,
    };
    let Value::Object(fields) = value else {
        return Err(bad_entry(format!(
            "entry must be a JSON object, found {}",
            json_kind(value)
        )));
    };
    let field = |key: &str| {
        fields
            .get(key)
            .ok_or_else(|| bad_entry(format!("missing \"{key}\"")))
    };
    let dtype_name = field("dtype")?
        .as_str()
        .ok_or_else(|| bad_entry("\"dtype\" must be a string".to_owned()))?;
    let shape = usize_array(field("shape")?).ok_or_else(|| {
        bad_entry("\"shape\" must be an array of non-negative integers".to_owned())
    })?;
    let Some(&[begin, end]) = usize_array(field("data_offsets")?).as_deref() else {
        return Err(bad_entry(
            "\"data_offsets\" must be an array of two non-negative integers".to_owned(),
        ));
    };

    let Some((dtype_name, bit_size)) = safetensors_dtype(dtype_name) else {
        return Err(TensorError::UnsupportedDType {
            path: path.to_path_buf(),
            tensor: name,
            dtype: dtype_name.to_owned(),
        });
    };
    let needed_bits = shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
        .and_then(|count| count.checked_mul(bit_size));
    let Some(needed_bits) = needed_bits else {
        return Err(TensorError::ShapeOverflow {
            path: path.to_path_buf(),
            tensor: name,
            shape,
            dtype: dtype_name,
        });
    };
    if needed_bits % 8 != 0 {
        return Err(bad_entry(format!(
            "shape {shape:?} × {dtype_name} is {needed_bits} bits, not a whole number of bytes"
        )));
    }
    let needed_bytes = needed_bits / 8;
    if begin > end {
        return Err(TensorError::ReversedRange {
            path: path.to_path_buf(),
            tensor: name,
            begin,
            end,
        });
    }
    if end - begin != needed_bytes {
        return Err(TensorError::ByteLengthMismatch {
            path: path.to_path_buf(),
            tensor: name,
            shape,
            dtype: dtype_name,
            expected: needed_bytes,
            found: end - begin,
        });
    }
    if end > data_len {
        return Err(TensorError::OutOfBounds {
            path: path.to_path_buf(),
            tensor: name,
            begin,
            end,
            data_len,
        });
    }
    // Cannot overflow: data_start + data_len is the file length.
    let byte_range = data_start + begin..data_start + end;
    Ok(Entry {
        dtype: DType::from_safetensors_str(dtype_name).ok_or_else(|| dtype_name.to_owned()),
        name,
        shape,
        byte_range,
        begin,
        end,
    })
}

/// The ranges, sorted by begin, must tile `[0, data_len)`: each starts where the previous ended.
fn check_coverage(path: &Path, entries: &mut [Entry], data_len: usize) -> Result<(), TensorError> {
    // Ties on `begin` are zero-length tensors, which sort first and take no bytes.
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut covered = 0usize;
    let mut previous: Option<&str> = None;
    for entry in entries.iter() {
        if entry.begin < covered {
            return Err(TensorError::Overlap {
                path: path.to_path_buf(),
                tensor: entry.name.clone(),
                begin: entry.begin,
                end: entry.end,
                other: previous.unwrap_or_default().to_owned(),
                other_end: covered,
            });
        }
        if entry.begin > covered {
            return Err(TensorError::Gap {
                path: path.to_path_buf(),
                tensor: entry.name.clone(),
                gap_begin: covered,
                begin: entry.begin,
            });
        }
        covered = entry.end;
        previous = Some(&entry.name);
    }
    if covered != data_len {
        return Err(TensorError::TrailingData {
            path: path.to_path_buf(),
            covered,
            data_len,
        });
    }
    Ok(())
}

/// A JSON array of integers that fit in `usize`, or `None`.
fn usize_array(value: &Value) -> Option<Vec<usize>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
        .collect()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Opens `path` and maps it read-only, after `check_len(file length)` (run before mapping:
/// mapping an empty file is an error on some platforms, and each format says better why a
/// short file is not one of its files).
pub(crate) fn map_read_only(
    path: &Path,
    check_len: impl FnOnce(u64) -> Result<(), TensorError>,
) -> Result<Mmap, TensorError> {
    let io_error = |source| TensorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    check_len(file.metadata().map_err(io_error)?.len())?;
    // SAFETY: the map is read-only, and both readers validate or bounds-check every byte
    // before use, so any content is safe to read. What validation cannot cover is the file
    // changing while mapped (truncation would fault on access, writes would change tensors
    // under readers): not modifying a model file while Ember has it open is this crate's
    // documented trust assumption, the same one every mmap-based weights loader makes.
    unsafe { Mmap::map(&file) }.map_err(io_error)
}
