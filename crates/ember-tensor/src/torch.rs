//! [`TorchFile`]: the weights of a `torch.save` zip archive (`pytorch_model.bin`), read without
//! Python and without running any of the pickle's code.
//!
//! The format, the checks and what is copied are documented on [`TorchFile`], where rustdoc
//! shows them; the zip reader is `zip.rs`, the pickle interpreter `pickle.rs`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};

use crate::file::{map_read_only, FileBytes};

use crate::pickle::{self, PickleError, PickleFault, StorageRecord, TensorRecord};
use crate::zip::{self, ZipArchive, ZipError};
use crate::{DType, F32Tensor, TensorError, TensorInfo};

/// How a pre-1.6 `torch.save` file begins: pickle protocol 2, then the magic number
/// `0x1950a86a20f9469cfc6c` as a 10-byte LONG1.
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];
/// Where a tar header says `ustar` (the even older tar-based format).
const TAR_MAGIC_OFFSET: usize = 257;

/// A validated `torch.save` zip archive of a state dict, memory-mapped.
///
/// The same reading API as [`SafeTensorsFile`](crate::SafeTensorsFile), and the same trust
/// assumption: the file must not change while it is mapped.
///
/// # Format
///
/// `torch.save(state_dict)` (PyTorch ≥ 1.6) writes a zip archive whose root folder name varies
/// (it is the file's stem, `archive`, …):
///
/// ```text
/// <root>/data.pkl        the pickled dict: names → tensors (see `pickle.rs`)
/// <root>/data/<key>      one entry per storage: raw little-endian elements, 64-byte aligned
/// <root>/byteorder       "little" (absent in older archives, which are little-endian)
/// <root>/version, …      ignored
/// ```
///
/// # The pickle
///
/// `data.pkl` is interpreted, never executed: only the opcodes `torch.save` writes for a dict of
/// tensors are known, and only the globals `collections.OrderedDict`,
/// `torch._utils._rebuild_tensor_v2` (and `_rebuild_tensor`, `_rebuild_parameter`) and the
/// `torch.*Storage` classes, each applied by Ember itself. Any other opcode or global is an error
/// naming it and its byte offset ([`TensorError::PickleOpcode`], [`TensorError::PickleGlobal`]).
/// A checkpoint that wraps its weights as `{"state_dict": {…}, …}` is unwrapped; entries that
/// are not tensors (and `_metadata`) are ignored. What the interpreter holds is capped (2^20
/// objects, container items and memo entries; 2^20 stack values; 2^16 tensors: seventy times
/// what BERT-large needs), so a hostile pickle of a few megabytes is refused as
/// [`TensorError::Pickle`] rather than grown into gigabytes.
///
/// # Validation
///
/// A tensor is a view of a storage: element `i = (i₀, …, iₙ₋₁)` lives at storage index
/// `storage_offset + Σₖ iₖ·strideₖ`. Several tensors may share one storage (tied weights, `w[1:]`
/// views). Every tensor is validated at [`open`](TorchFile::open): its storage entry exists and
/// holds the storage's declared `numel × element size` bytes; offsets, sizes and strides are
/// non-negative and every element lies inside the storage; and the tensor has no more elements
/// than its storage (so no materialised copy is ever larger than the file).
///
/// # Reading
///
/// Reading follows [`SafeTensorsFile`](crate::SafeTensorsFile): a contiguous (row-major) F32
/// tensor at a 4-byte-aligned place is used in place from the memory map (torch aligns storages
/// to 64 bytes); F16 and BF16 are widened; a non-contiguous tensor (a transpose, a column) is
/// materialised as a row-major copy. Storages of other dtypes (`LongStorage` for BERT's
/// `embeddings.position_ids`, …) are validated and kept aside, as safetensors I64 tensors are.
///
/// The pre-1.6 format (a pickle stream, or a tar, rather than a zip) is refused with
/// [`TensorError::LegacyTorchFormat`]: re-save it with a current torch, or convert it to
/// safetensors.
///
/// Cloning shares the mapping, as for [`crate::SafeTensorsFile`].
#[derive(Clone)]
pub struct TorchFile {
    path: PathBuf,
    map: Arc<FileBytes>,
    /// F32, F16 and BF16 tensors.
    tensors: BTreeMap<String, TorchTensor>,
    /// Tensors of every other storage dtype.
    unsupported: BTreeMap<String, TorchTensor>,
}

/// A validated tensor: dtype, shape and where its elements are.
#[derive(Debug, Clone)]
struct TorchTensor {
    /// Safetensors spelling of the dtype (`"F32"`, `"I64"`, …).
    dtype_name: &'static str,
    /// `byte_range` is the span from the first element to one past the last; for a contiguous
    /// tensor exactly its bytes.
    info: TensorInfo,
    /// Strides in elements, when the tensor is not contiguous (`None`: row-major, dense).
    strides: Option<Vec<usize>>,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("path", &self.path)
            .field("bytes", &self.map.len())
            .field("tensors", &self.tensors.len())
            .field("unsupported_tensors", &self.unsupported.len())
            .finish()
    }
}

impl TorchFile {
    /// Maps `path` read-only, reads the archive's central directory and its pickle, and
    /// validates every tensor against its storage.
    ///
    /// # Errors
    ///
    /// [`TensorError::Io`] if the file cannot be read; [`TensorError::LegacyTorchFormat`] for the
    /// pre-1.6 format; [`TensorError::TorchArchive`] if it is not a sound zip archive with one
    /// `<root>/data.pkl`; [`TensorError::PickleOpcode`], [`TensorError::PickleGlobal`] or
    /// [`TensorError::Pickle`] if the pickle uses anything beyond the state-dict subset, or is
    /// malformed; [`TensorError::BadEntry`] or [`TensorError::ShapeOverflow`] (naming the
    /// tensor) if a tensor does not fit its storage.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TensorError> {
        let path = path.as_ref().to_path_buf();
        let map = map_read_only(&path, |len| match len {
            // An empty file: the archive check says why it is no archive.
            0 => ZipArchive::parse(&[])
                .map(|_| ())
                .map_err(|e| archive_error(&path, e)),
            _ => Ok(()),
        })?;
        Self::validate(path, FileBytes::Mapped(map))
    }

    /// [`open`](Self::open) over bytes already in memory (`path` names them in errors): the
    /// same checks, without a file (the `torch_file` fuzz target's way in).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), but for the file's own I/O.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, TensorError> {
        Self::validate(path.into(), FileBytes::Owned(bytes))
    }

    fn validate(path: PathBuf, bytes: FileBytes) -> Result<Self, TensorError> {
        let (tensors, unsupported) = parse(&path, &bytes)?;
        Ok(Self {
            path,
            map: Arc::new(bytes),
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

    /// `(name, info)` for every readable tensor, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorInfo)> + '_ {
        self.tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), &tensor.info))
    }

    /// Dtype, shape and placement of `name`, if present. For a non-contiguous tensor
    /// `byte_range` is the span of the storage its elements lie in, not its bytes
    /// ([`is_contiguous`](Self::is_contiguous) tells which).
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|tensor| &tensor.info)
    }

    /// Whether tensor `name` (of any dtype) is stored row-major and dense, so that
    /// [`raw_bytes`](Self::raw_bytes) are its elements in order. `None` if there is no such
    /// tensor.
    pub fn is_contiguous(&self, name: &str) -> Option<bool> {
        self.any_tensor(name).map(|tensor| tensor.strides.is_none())
    }

    /// Number of tensors Ember can read.
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

    /// Whether a tensor called `name` is present, whatever its dtype and layout (unlike
    /// [`contains`](Self::contains), an I64 or F64 tensor counts; unlike a
    /// [`raw_bytes`](Self::raw_bytes) probe, so does a transposed view).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.any_tensor(name).is_some()
    }

    /// `(name, dtype)` of the tensors whose dtype Ember does not read (e.g.
    /// `("embeddings.position_ids", "I64")`), sorted by name.
    pub fn unsupported_tensors(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.unsupported
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor.dtype_name))
    }

    /// The raw little-endian bytes of a contiguous tensor of any dtype, as stored.
    ///
    /// # Errors
    ///
    /// [`TensorError::MissingTensor`] if there is no tensor `name`;
    /// [`TensorError::NonContiguous`] if its elements are not dense and row-major.
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8], TensorError> {
        let tensor = self.any_tensor(name).ok_or_else(|| self.missing(name))?;
        if tensor.strides.is_some() {
            return Err(TensorError::NonContiguous {
                path: self.path.clone(),
                tensor: name.to_owned(),
            });
        }
        self.map
            .get(tensor.info.byte_range.clone())
            .ok_or_else(|| self.out_of_bounds(name, &tensor.info.byte_range))
    }

    /// Tensor `name` as f32, row-major: a zero-copy view into the map when it is F32, contiguous
    /// and 4-byte aligned on a little-endian host; otherwise an owned copy (F16/BF16 widened
    /// exactly, a non-contiguous tensor gathered in row-major order).
    ///
    /// # Errors
    ///
    /// [`TensorError::MissingTensor`] if there is no tensor `name`;
    /// [`TensorError::UnsupportedDType`] if its dtype is neither F32, F16 nor BF16.
    pub fn f32_tensor(&self, name: &str) -> Result<F32Tensor, TensorError> {
        let tensor = self.require(name)?;
        let info = &tensor.info;
        let out_of_bounds = || self.out_of_bounds(name, &info.byte_range);
        match &tensor.strides {
            None => F32Tensor::from_file_bytes(name, info, &self.map).ok_or_else(out_of_bounds),
            Some(strides) => {
                let values = gather(&self.map, info, strides).ok_or_else(out_of_bounds)?;
                Ok(F32Tensor::from_owned(
                    name,
                    info.shape.clone(),
                    info.dtype,
                    values,
                ))
            }
        }
    }

    /// Like [`f32_tensor`](Self::f32_tensor), but fails with [`TensorError::ShapeMismatch`]
    /// (before reading any data) unless the shape is exactly `expected`.
    ///
    /// # Errors
    ///
    /// Those of [`f32_tensor`](Self::f32_tensor), and [`TensorError::ShapeMismatch`].
    pub fn f32_tensor_with_shape(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<F32Tensor, TensorError> {
        let info = &self.require(name)?.info;
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

    fn any_tensor(&self, name: &str) -> Option<&TorchTensor> {
        self.tensors
            .get(name)
            .or_else(|| self.unsupported.get(name))
    }

    fn require(&self, name: &str) -> Result<&TorchTensor, TensorError> {
        if let Some(tensor) = self.tensors.get(name) {
            return Ok(tensor);
        }
        match self.unsupported.get(name) {
            Some(tensor) => Err(TensorError::UnsupportedDType {
                path: self.path.clone(),
                tensor: name.to_owned(),
                dtype: tensor.dtype_name.to_owned(),
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

    /// Unreachable for a validated file; an error rather than a panic all the same.
    fn out_of_bounds(&self, name: &str, byte_range: &Range<usize>) -> TensorError {
        TensorError::OutOfBounds {
            path: self.path.clone(),
            tensor: name.to_owned(),
            begin: byte_range.start,
            end: byte_range.end,
            data_len: self.map.len(),
        }
    }
}

fn archive_error(path: &Path, error: ZipError) -> TensorError {
    TensorError::TorchArchive {
        path: path.to_path_buf(),
        offset: error.offset,
        reason: error.reason,
    }
}

type ParsedArchive = (BTreeMap<String, TorchTensor>, BTreeMap<String, TorchTensor>);

/// Reads and validates the archive `bytes` (the whole file).
fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedArchive, TensorError> {
    let is_tar = bytes.get(TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + 5) == Some(b"ustar");
    if bytes.starts_with(&LEGACY_MAGIC) || is_tar {
        return Err(TensorError::LegacyTorchFormat {
            path: path.to_path_buf(),
        });
    }
    let archive = ZipArchive::parse(bytes).map_err(|e| archive_error(path, e))?;
    let bad_archive = |reason: String| TensorError::TorchArchive {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };

    // The root folder is named after the file (or `archive`): find the one `<root>/data.pkl`.
    let mut roots = archive
        .names()
        .filter_map(|name| name.strip_suffix("/data.pkl"))
        .filter(|root| !root.is_empty() && !root.contains('/'));
    let root = match (roots.next(), roots.next()) {
        (Some(root), None) => root.to_owned(),
        (None, _) => {
            return Err(bad_archive(
                "no <folder>/data.pkl entry: not a torch.save archive".to_owned(),
            ))
        }
        (Some(a), Some(b)) => {
            return Err(bad_archive(format!(
                "more than one pickle (\"{a}/data.pkl\", \"{b}/data.pkl\", …)"
            )))
        }
    };
    let entry_bytes = |name: &str| {
        archive
            .get(name)
            .and_then(|entry| Some((entry, bytes.get(entry.data.clone())?)))
    };
    if let Some((_, order)) = entry_bytes(&format!("{root}/byteorder")) {
        if order != b"little" {
            return Err(bad_archive(format!(
                "byte order \"{}\": only little-endian archives are supported",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let pickle_name = format!("{root}/data.pkl");
    let (pickle_entry, pickle_bytes) = entry_bytes(&pickle_name)
        .ok_or_else(|| bad_archive(format!("{pickle_name} lies outside the file")))?;
    let crc = zip::crc32(pickle_bytes);
    if crc != pickle_entry.crc32 {
        return Err(TensorError::TorchArchive {
            path: path.to_path_buf(),
            offset: pickle_entry.data.start as u64,
            reason: format!(
                "{pickle_name}: CRC-32 is {crc:08x}, the central directory records {:08x}",
                pickle_entry.crc32
            ),
        });
    }
    let state =
        pickle::load_state_dict(pickle_bytes).map_err(|e| pickle_error(path, &pickle_name, e))?;

    let mut storages: Vec<Option<ResolvedStorage>> = vec![None; state.storages.len()];
    let mut tensors = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    for (name, record) in state.tensors {
        let bad_tensor = |reason: String| TensorError::BadEntry {
            path: path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let storage = match storages.get(record.storage).copied().flatten() {
            Some(storage) => storage,
            None => {
                let declared = state
                    .storages
                    .get(record.storage)
                    .ok_or_else(|| bad_tensor("refers to no storage".to_owned()))?;
                let resolved = resolve_storage(&archive, &root, declared).map_err(bad_tensor)?;
                if let Some(slot) = storages.get_mut(record.storage) {
                    *slot = Some(resolved);
                }
                resolved
            }
        };
        let tensor = validate_tensor(path, &name, &record, storage)?;
        if storage.dtype.is_some() {
            tensors.insert(name, tensor);
        } else {
            unsupported.insert(name, tensor);
        }
    }
    Ok((tensors, unsupported))
}

fn pickle_error(path: &Path, entry: &str, error: PickleError) -> TensorError {
    let (path, entry, offset) = (path.to_path_buf(), entry.to_owned(), error.offset);
    match error.fault {
        PickleFault::Opcode { code } => TensorError::PickleOpcode {
            path,
            entry,
            offset,
            opcode: pickle::describe_opcode(code),
        },
        PickleFault::Global { module, name } => TensorError::PickleGlobal {
            path,
            entry,
            offset,
            global: format!("{module}.{name}"),
        },
        PickleFault::Malformed(reason) => TensorError::Pickle {
            path,
            entry,
            offset,
            reason,
        },
    }
}

/// A storage found in the archive: where its elements start, how many, of which dtype.
#[derive(Debug, Clone, Copy)]
struct ResolvedStorage {
    /// Absolute byte offset of element 0.
    start: usize,
    numel: usize,
    dtype_name: &'static str,
    element_size: usize,
    /// `None` for dtypes Ember does not read.
    dtype: Option<DType>,
}

/// Finds `<root>/data/<key>` and checks that it holds the declared elements.
fn resolve_storage(
    archive: &ZipArchive,
    root: &str,
    declared: &StorageRecord,
) -> Result<ResolvedStorage, String> {
    let entry_name = format!("{root}/data/{}", declared.key);
    let entry = archive
        .get(&entry_name)
        .ok_or_else(|| format!("its storage entry \"{entry_name}\" is not in the archive"))?;
    let class = declared.class;
    let entry_len = entry.data.len();
    let fits = |n: usize| {
        n.checked_mul(class.element_size)
            .is_some_and(|b| b <= entry_len)
    };
    let Some(numel) = usize::try_from(declared.numel).ok().filter(|&n| fits(n)) else {
        return Err(format!(
            "its storage \"{entry_name}\" declares {} {} elements but the entry holds {entry_len} bytes",
            declared.numel, class.dtype
        ));
    };
    Ok(ResolvedStorage {
        start: entry.data.start,
        numel,
        dtype_name: class.dtype,
        element_size: class.element_size,
        dtype: DType::from_safetensors_str(class.dtype),
    })
}

/// Checks a tensor's view against its storage and describes where its elements are.
fn validate_tensor(
    path: &Path,
    name: &str,
    record: &TensorRecord,
    storage: ResolvedStorage,
) -> Result<TorchTensor, TensorError> {
    let bad = |reason: String| TensorError::BadEntry {
        path: path.to_path_buf(),
        tensor: name.to_owned(),
        reason,
    };
    let non_negative = |values: &[i64], what: &str| {
        values
            .iter()
            .map(|&v| usize::try_from(v).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad(format!("{what} {values:?} has a negative entry")))
    };
    let shape = non_negative(&record.shape, "size")?;
    let mut strides = non_negative(&record.stride, "stride")?;
    let offset = usize::try_from(record.storage_offset).map_err(|_| {
        bad(format!(
            "storage offset {} is negative",
            record.storage_offset
        ))
    })?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| TensorError::ShapeOverflow {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            shape: shape.clone(),
            dtype: storage.dtype_name,
        })?;
    // Index of the last element (relative to the offset), and the span the elements lie in.
    let last = shape
        .iter()
        .zip(&strides)
        .try_fold(0usize, |sum, (&d, &s)| {
            sum.checked_add(d.saturating_sub(1).checked_mul(s)?)
        });
    let span = if numel == 0 {
        Some(0)
    } else {
        last.and_then(|l| l.checked_add(1))
    };
    let end = span.and_then(|s| s.checked_add(offset));
    let Some(end) = end.filter(|&e| e <= storage.numel && offset <= storage.numel) else {
        return Err(bad(format!(
            "size {shape:?}, stride {strides:?} at storage offset {offset} reach past the {} elements of its storage",
            storage.numel
        )));
    };
    if numel > storage.numel {
        return Err(bad(format!(
            "{numel} elements from a storage of {}: overlapping (expanded) views are not supported",
            storage.numel
        )));
    }
    let contiguous = is_row_major(&shape, &strides);
    // A dimension of size 1 is never stepped along: its stride is irrelevant, and zeroing it
    // keeps `gather`'s index arithmetic below twice the storage's length.
    for (stride, _) in strides.iter_mut().zip(&shape).filter(|(_, &d)| d == 1) {
        *stride = 0;
    }
    // Cannot overflow: every index is below `storage.numel`, whose bytes lie inside the file.
    let byte_start = storage.start + offset * storage.element_size;
    let byte_end = storage.start + end * storage.element_size;
    let byte_range = if contiguous {
        byte_start..byte_start + numel * storage.element_size
    } else {
        byte_start..byte_end
    };
    Ok(TorchTensor {
        dtype_name: storage.dtype_name,
        info: TensorInfo {
            // Tensors Ember does not read carry F32 here; `dtype_name` is what they are.
            dtype: storage.dtype.unwrap_or(DType::F32),
            shape,
            byte_range,
        },
        strides: (!contiguous).then_some(strides),
    })
}

/// Whether `strides` are those of a dense row-major tensor of `shape` (dimensions of size 1 may
/// have any stride, as in torch's own `is_contiguous`; empty tensors are contiguous).
fn is_row_major(shape: &[usize], strides: &[usize]) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// The elements of a strided tensor, row-major, as f32; `None` if an element lies outside
/// `bytes` (ruled out by validation).
fn gather(bytes: &[u8], info: &TensorInfo, strides: &[usize]) -> Option<Vec<f32>> {
    let size = info.dtype.size_in_bytes();
    let read = |element: usize| -> Option<f32> {
        let at = info
            .byte_range
            .start
            .checked_add(element.checked_mul(size)?)?;
        let b = bytes.get(at..at.checked_add(size)?)?;
        Some(match info.dtype {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        })
    };
    let numel = info.num_elements();
    let mut values = Vec::with_capacity(numel);
    // Odometer over the multi-index; `element` = Σ index[k]·stride[k].
    let mut index = vec![0usize; info.shape.len()];
    let mut element = 0usize;
    for _ in 0..numel {
        values.push(read(element)?);
        for k in (0..index.len()).rev() {
            index[k] += 1;
            element += strides[k];
            if index[k] < info.shape[k] {
                break;
            }
            element -= strides[k] * info.shape[k];
            index[k] = 0;
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_strides_are_recognised() {
        assert!(is_row_major(&[3, 4], &[4, 1]));
        assert!(is_row_major(&[], &[]));
        assert!(is_row_major(&[1, 4], &[99, 1]));
        assert!(is_row_major(&[0, 4], &[1, 7]));
        assert!(!is_row_major(&[4, 3], &[1, 4]));
        assert!(!is_row_major(&[3], &[4]));
    }
}
