//! The one error type of `ember-tensor`.
//!
//! Every variant names the file (`path`) and, where the fault belongs to one tensor, the tensor, so
//! a message reads on its own, e.g.
//! `model.safetensors: tensor "encoder.layer.0.attention.self.query.weight": shape [384, 384] × F32
//! needs 589824 bytes but data_offsets give 4096`.

use std::path::PathBuf;

/// Why a safetensors file or a `torch.save` archive could not be opened, read, or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// The file could not be opened, inspected, mapped or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file cannot even hold the 8-byte header-length prefix.
    #[error("{}: file is {len} bytes, too short for the 8-byte header length prefix", .path.display())]
    TooShort { path: PathBuf, len: u64 },

    /// The header length prefix exceeds the sanity limit (the `safetensors` crate's 100 MB).
    #[error("{}: header length {header_len} exceeds the {max}-byte limit", .path.display())]
    HeaderTooLarge {
        path: PathBuf,
        header_len: u64,
        max: u64,
    },

    /// The header length prefix points past the end of the file.
    #[error(
        "{}: header of {header_len} bytes (after the 8-byte prefix) runs past the end of the {file_len}-byte file",
        .path.display()
    )]
    HeaderOutOfBounds {
        path: PathBuf,
        header_len: u64,
        file_len: u64,
    },

    /// The header bytes are not UTF-8.
    #[error("{}: header is not UTF-8: {source}", .path.display())]
    HeaderNotUtf8 {
        path: PathBuf,
        #[source]
        source: std::str::Utf8Error,
    },

    /// The header is not valid JSON.
    #[error("{}: header is not valid JSON: {source}", .path.display())]
    HeaderNotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The header is JSON but not an object.
    #[error("{}: header must be a JSON object, found {found}", .path.display())]
    HeaderNotObject { path: PathBuf, found: &'static str },

    /// A header entry is malformed (missing or mistyped `dtype`, `shape`, `data_offsets`, a
    /// `__metadata__` that is not a string-to-string map, a sub-byte dtype whose elements do not
    /// fill whole bytes), or, when writing, a tensor name that is
    /// empty, reserved or repeated, or bytes whose length is not `∏ shape × dtype size`. `tensor` is the entry's key.
    #[error("{}: tensor \"{tensor}\": {reason}", .path.display())]
    BadEntry {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    /// The tensor's dtype is no safetensors dtype at all (reported when opening), or one Ember does
    /// not read, such as I64 (reported when the tensor is asked for: such tensors are validated
    /// and skipped at open, as BERT checkpoints carry an I64 `embeddings.position_ids`).
    #[error(
        "{}: tensor \"{tensor}\": dtype \"{dtype}\" is not supported (Ember reads F32, F16 and BF16)",
        .path.display()
    )]
    UnsupportedDType {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    /// The element count, or its size in bytes, does not fit in `usize`.
    #[error("{}: tensor \"{tensor}\": shape {shape:?} × {dtype} overflows usize", .path.display())]
    ShapeOverflow {
        path: PathBuf,
        tensor: String,
        shape: Vec<usize>,
        dtype: &'static str,
    },

    /// `data_offsets` has its begin after its end.
    #[error("{}: tensor \"{tensor}\": data_offsets [{begin}, {end}] end before they begin", .path.display())]
    ReversedRange {
        path: PathBuf,
        tensor: String,
        begin: usize,
        end: usize,
    },

    /// The byte length implied by shape × dtype differs from the one given by `data_offsets`.
    #[error(
        "{}: tensor \"{tensor}\": shape {shape:?} × {dtype} needs {expected} bytes but data_offsets give {found}",
        .path.display()
    )]
    ByteLengthMismatch {
        path: PathBuf,
        tensor: String,
        shape: Vec<usize>,
        dtype: &'static str,
        expected: usize,
        found: usize,
    },

    /// `data_offsets` end past the end of the data section.
    #[error(
        "{}: tensor \"{tensor}\": data_offsets [{begin}, {end}] run past the end of the {data_len}-byte data section",
        .path.display()
    )]
    OutOfBounds {
        path: PathBuf,
        tensor: String,
        begin: usize,
        end: usize,
        data_len: usize,
    },

    /// Two tensors share bytes.
    #[error(
        "{}: tensor \"{tensor}\" (data_offsets [{begin}, {end}]) overlaps tensor \"{other}\" (ending at {other_end})",
        .path.display()
    )]
    Overlap {
        path: PathBuf,
        tensor: String,
        begin: usize,
        end: usize,
        other: String,
        other_end: usize,
    },

    /// Bytes of the data section before this tensor belong to no tensor (the safetensors format
    /// requires the data section to be covered exactly, as the `safetensors` crate enforces).
    #[error(
        "{}: tensor \"{tensor}\": data section bytes [{gap_begin}, {begin}) before it belong to no tensor",
        .path.display()
    )]
    Gap {
        path: PathBuf,
        tensor: String,
        gap_begin: usize,
        begin: usize,
    },

    /// Bytes after the last tensor belong to no tensor.
    #[error(
        "{}: data section is {data_len} bytes but its tensors cover only the first {covered}",
        .path.display()
    )]
    TrailingData {
        path: PathBuf,
        covered: usize,
        data_len: usize,
    },

    /// No tensor of that name in the file.
    #[error("{}: no tensor named \"{name}\"", .path.display())]
    MissingTensor { path: PathBuf, name: String },

    /// A `torch.save` file in the pre-1.6 format (a pickle stream or a tar, not a zip archive).
    #[error(
        "{}: legacy (pre-PyTorch-1.6, non-zip) torch.save format is not supported; re-save it with torch >= 1.6 or convert it to safetensors",
        .path.display()
    )]
    LegacyTorchFormat { path: PathBuf },

    /// The file is not a sound zip archive of the kind `torch.save` writes (no end record, a
    /// central directory that points outside the file or disagrees with its local headers,
    /// compressed entries, no single `<folder>/data.pkl`, a pickle whose CRC does not match…).
    #[error("{}: not a readable torch.save archive: {reason} (byte {offset})", .path.display())]
    TorchArchive {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The pickle uses an opcode outside the state-dict subset Ember interprets (e.g. `INST`,
    /// `OBJ`); `offset` is the opcode's byte offset in `entry`.
    #[error(
        "{}: {entry}: pickle opcode {opcode} at byte {offset} is not supported (Ember reads only what torch.save writes for a state dict, and never runs code)",
        .path.display()
    )]
    PickleOpcode {
        path: PathBuf,
        entry: String,
        offset: usize,
        opcode: String,
    },

    /// The pickle names a global outside the allow-list (`collections.OrderedDict`,
    /// `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` / `_rebuild_parameter`, the
    /// `torch.*Storage` classes). Nothing is ever imported or called.
    #[error(
        "{}: {entry}: pickle global \"{global}\" at byte {offset} is not allowed (Ember accepts only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_tensor/_rebuild_parameter and torch.*Storage, and never runs code)",
        .path.display()
    )]
    PickleGlobal {
        path: PathBuf,
        entry: String,
        offset: usize,
        global: String,
    },

    /// The pickle is malformed or describes something other than a dict of tensors: truncated,
    /// stack underflow, an unknown memo key, arguments of the wrong type…
    #[error("{}: {entry}: bad pickle at byte {offset}: {reason}", .path.display())]
    Pickle {
        path: PathBuf,
        entry: String,
        offset: usize,
        reason: String,
    },

    /// Raw bytes were asked for a tensor whose elements are not dense and row-major (a
    /// transposed or sliced view in a `torch.save` file); `f32_tensor` copies it instead.
    #[error("{}: tensor \"{tensor}\" is not contiguous: it has no raw bytes of its own", .path.display())]
    NonContiguous { path: PathBuf, tensor: String },

    /// A model folder holds none of the weight files Ember reads.
    #[error(
        "{}: no weights: neither {} exists",
        .dir.display(),
        .looked.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" nor ")
    )]
    NoWeightFile {
        dir: PathBuf,
        looked: Vec<&'static str>,
    },

    /// The tensor exists but its shape is not the one the caller needs.
    #[error("{}: tensor \"{name}\": expected shape {expected:?}, found {found:?}", .path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}
