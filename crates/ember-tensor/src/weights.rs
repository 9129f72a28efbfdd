//! [`WeightFile`]: one reading API over both checkpoint formats, and the rule for finding a
//! model folder's weights ([`find_weight_file`]).

use std::path::{Path, PathBuf};

use crate::{F32Tensor, SafeTensorsFile, StoredTensor, TensorError, TensorInfo, TorchFile};

/// The weight files a model folder may hold, in order of preference: safetensors when
/// published (validated by a simple header, no pickle), else `torch.save`'s archive.
pub const WEIGHT_FILE_NAMES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// The weights of the model folder `dir`: the first of [`WEIGHT_FILE_NAMES`] that exists.
///
/// # Errors
///
/// [`TensorError::NoWeightFile`], naming every file looked for, if there is none.
pub fn find_weight_file(dir: &Path) -> Result<PathBuf, TensorError> {
    WEIGHT_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| TensorError::NoWeightFile {
            dir: dir.to_path_buf(),
            looked: WEIGHT_FILE_NAMES.to_vec(),
        })
}

/// A checkpoint in either format, with the reading API both share.
///
/// ```
/// use ember_tensor::WeightFile;
///
/// # fn main() -> Result<(), ember_tensor::TensorError> {
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert-torchbin");
/// let weights = WeightFile::open(ember_tensor::find_weight_file(dir.as_ref())?)?;
/// assert!(matches!(weights, WeightFile::Torch(_)));
/// let word = weights.f32_tensor("embeddings.word_embeddings.weight")?;
/// assert_eq!(word.shape(), &[2601, 52]);
/// assert!(word.is_mapped()); // F32 storages are 64-byte aligned in the archive: read in place
/// # Ok(())
/// # }
/// ```
/// Cloning shares the mapped file (see [`SafeTensorsFile`]).
#[derive(Clone, Debug)]
pub enum WeightFile {
    /// A `.safetensors` file.
    SafeTensors(SafeTensorsFile),
    /// A `torch.save` zip archive (`pytorch_model.bin`, `.pt`, `.pth`).
    Torch(TorchFile),
}

/// Calls the same method on whichever file is inside.
macro_rules! either {
    ($self:expr, $file:ident => $body:expr) => {
        match $self {
            WeightFile::SafeTensors($file) => $body,
            WeightFile::Torch($file) => $body,
        }
    };
}

impl WeightFile {
    /// Opens `path` as safetensors or as a `torch.save` archive. A `.safetensors` name means
    /// safetensors; any other file that starts like a zip archive (`PK\x03\x04`), or is named
    /// `.bin`, `.pt` or `.pth`, is read as a torch archive (which also diagnoses the legacy
    /// format); anything else as safetensors.
    ///
    /// # Errors
    ///
    /// Those of [`SafeTensorsFile::open`] or [`TorchFile::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TensorError> {
        let path = path.as_ref();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let is_torch = match extension {
            "safetensors" => false,
            "bin" | "pt" | "pth" => true,
            _ => starts_like_zip(path)?,
        };
        if is_torch {
            TorchFile::open(path).map(WeightFile::Torch)
        } else {
            SafeTensorsFile::open(path).map(WeightFile::SafeTensors)
        }
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        either!(self, file => file.path())
    }

    /// Names of the tensors Ember can read (F32, F16, BF16), sorted.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        either!(self, file => Box::new(file.names()))
    }

    /// `(name, info)` for every readable tensor, sorted by name.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &TensorInfo)> + '_> {
        either!(self, file => Box::new(file.iter()))
    }

    /// Dtype, shape and placement of `name`, if present (see [`TorchFile::info`] for what
    /// `byte_range` means for a non-contiguous torch tensor).
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        either!(self, file => file.info(name))
    }

    /// Number of tensors Ember can read.
    pub fn len(&self) -> usize {
        either!(self, file => file.len())
    }

    /// Whether the file holds no tensor Ember can read.
    pub fn is_empty(&self) -> bool {
        either!(self, file => file.is_empty())
    }

    /// Whether a tensor called `name` is present with a dtype Ember reads.
    pub fn contains(&self, name: &str) -> bool {
        either!(self, file => file.contains(name))
    }

    /// Whether a tensor called `name` is present, whatever its dtype or layout: what decides
    /// that a name is in the checkpoint, so that reading it then says what is wrong with it
    /// (its dtype) or reads it (a torch archive's non-contiguous view) rather than calling it
    /// missing.
    pub fn has_tensor(&self, name: &str) -> bool {
        either!(self, file => file.has_tensor(name))
    }

    /// `(name, dtype)` of the tensors whose dtype Ember does not read, sorted by name.
    pub fn unsupported_tensors(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        either!(self, file => Box::new(file.unsupported_tensors()))
    }

    /// The raw little-endian bytes of a tensor of any dtype, as stored.
    ///
    /// # Errors
    ///
    /// [`TensorError::MissingTensor`]; for a torch archive also [`TensorError::NonContiguous`].
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8], TensorError> {
        either!(self, file => file.raw_bytes(name))
    }

    /// Tensor `name` as f32 (zero-copy where the format and alignment allow).
    ///
    /// # Errors
    ///
    /// [`TensorError::MissingTensor`], [`TensorError::UnsupportedDType`].
    pub fn f32_tensor(&self, name: &str) -> Result<F32Tensor, TensorError> {
        either!(self, file => file.f32_tensor(name))
    }

    /// Tensor `name` in its stored dtype (see [`SafeTensorsFile::stored_tensor`]); a torch
    /// archive's tensors come as f32 (its half-width storages are widened when read).
    ///
    /// # Errors
    ///
    /// Those of [`f32_tensor`](Self::f32_tensor).
    pub fn stored_tensor(&self, name: &str) -> Result<StoredTensor, TensorError> {
        match self {
            WeightFile::SafeTensors(file) => file.stored_tensor(name),
            WeightFile::Torch(file) => file.f32_tensor(name).map(StoredTensor::from),
        }
    }

    /// Tensor `name` as f32, if its shape is exactly `expected`.
    ///
    /// # Errors
    ///
    /// Those of [`f32_tensor`](Self::f32_tensor), and [`TensorError::ShapeMismatch`].
    pub fn f32_tensor_with_shape(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<F32Tensor, TensorError> {
        either!(self, file => file.f32_tensor_with_shape(name, expected))
    }
}

impl From<SafeTensorsFile> for WeightFile {
    fn from(file: SafeTensorsFile) -> Self {
        WeightFile::SafeTensors(file)
    }
}

impl From<TorchFile> for WeightFile {
    fn from(file: TorchFile) -> Self {
        WeightFile::Torch(file)
    }
}

/// Whether the file begins with a zip local-header signature.
fn starts_like_zip(path: &Path) -> Result<bool, TensorError> {
    use std::io::Read;
    let io_error = |source| TensorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = Vec::with_capacity(4);
    std::fs::File::open(path)
        .and_then(|file| file.take(4).read_to_end(&mut magic))
        .map_err(io_error)?;
    Ok(magic == b"PK\x03\x04")
}
