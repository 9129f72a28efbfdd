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
        /// The file that was being opened, inspected, mapped or written.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file cannot even hold the 8-byte header-length prefix.
    #[error("{}: file is {len} bytes, too short for the 8-byte header length prefix", .path.display())]
    TooShort {
        /// The file that was being read.
        path: PathBuf,
        /// The file's length in bytes (under 8).
        len: u64,
    },

    /// The header length prefix exceeds the sanity limit (the `safetensors` crate's 100 MB).
    #[error("{}: header length {header_len} exceeds the {max}-byte limit", .path.display())]
    HeaderTooLarge {
        /// The file that was being read.
        path: PathBuf,
        /// The header length, in bytes, that the prefix gives.
        header_len: u64,
        /// The largest header accepted, in bytes.
        max: u64,
    },

    /// The header length prefix points past the end of the file.
    #[error(
        "{}: header of {header_len} bytes (after the 8-byte prefix) runs past the end of the {file_len}-byte file",
        .path.display()
    )]
    HeaderOutOfBounds {
        /// The file that was being read.
        path: PathBuf,
        /// The header length, in bytes, that the prefix gives.
        header_len: u64,
        /// The file's whole length in bytes, prefix included.
        file_len: u64,
    },

    /// The header bytes are not UTF-8.
    #[error("{}: header is not UTF-8: {source}", .path.display())]
    HeaderNotUtf8 {
        /// The file that was being read.
        path: PathBuf,
        /// Where the first invalid byte is.
        #[source]
        source: std::str::Utf8Error,
    },

    /// The header is not valid JSON.
    #[error("{}: header is not valid JSON: {source}", .path.display())]
    HeaderNotJson {
        /// The file that was being read.
        path: PathBuf,
        /// The JSON parser's error, with its line and column.
        #[source]
        source: serde_json::Error,
    },

    /// The header is JSON but not an object.
    #[error("{}: header must be a JSON object, found {found}", .path.display())]
    HeaderNotObject {
        /// The file that was being read.
        path: PathBuf,
        /// The JSON kind found instead (`"an array"`, `"a string"`, …).
        found: &'static str,
    },

    /// A header entry is malformed (missing or mistyped `dtype`, `shape`, `data_offsets`, a
    /// `__metadata__` that is not a string-to-string map, a sub-byte dtype whose elements do not
    /// fill whole bytes), or, when writing, a tensor name that is
    /// empty, reserved or repeated, or bytes whose length is not `∏ shape × dtype size`. `tensor` is the entry's key.
    #[error("{}: tensor \"{tensor}\": {reason}", .path.display())]
    BadEntry {
        /// The file that was being read or written.
        path: PathBuf,
        /// The entry's key in the header (the tensor name).
        tensor: String,
        /// What is wrong with the entry, in words.
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
        /// The file that was being read.
        path: PathBuf,
        /// The tensor whose dtype is refused.
        tensor: String,
        /// The dtype as the header spells it (`"I64"`, `"F8_E4M3"`, …).
        dtype: String,
    },

    /// The element count, or its size in bytes, does not fit in `usize`.
    #[error("{}: tensor \"{tensor}\": shape {shape:?} × {dtype} overflows usize", .path.display())]
    ShapeOverflow {
        /// The file that was being read.
        path: PathBuf,
        /// The tensor whose size overflows.
        tensor: String,
        /// The tensor's shape as the file gives it.
        shape: Vec<usize>,
        /// The tensor's dtype name.
        dtype: &'static str,
    },

    /// `data_offsets` has its begin after its end.
    #[error("{}: tensor \"{tensor}\": data_offsets [{begin}, {end}] end before they begin", .path.display())]
    ReversedRange {
        /// The file that was being read.
        path: PathBuf,
        /// The tensor whose range is reversed.
        tensor: String,
        /// The range's first byte, relative to the start of the data section.
        begin: usize,
        /// The range's end (exclusive), relative to the start of the data section.
        end: usize,
    },

    /// The byte length implied by shape × dtype differs from the one given by `data_offsets`.
    #[error(
        "{}: tensor \"{tensor}\": shape {shape:?} × {dtype} needs {expected} bytes but data_offsets give {found}",
        .path.display()
    )]
    ByteLengthMismatch {
        /// The file that was being read.
        path: PathBuf,
        /// The tensor whose byte length is wrong.
        tensor: String,
        /// The tensor's shape as the header gives it.
        shape: Vec<usize>,
        /// The tensor's dtype name.
        dtype: &'static str,
        /// The byte length `∏ shape × dtype size`.
        expected: usize,
        /// The byte length `end − begin` that `data_offsets` give.
        found: usize,
    },

    /// `data_offsets` end past the end of the data section.
    #[error(
        "{}: tensor \"{tensor}\": data_offsets [{begin}, {end}] run past the end of the {data_len}-byte data section",
        .path.display()
    )]
    OutOfBounds {
        /// The file that was being read.
        path: PathBuf,
        /// The tensor whose bytes lie past the end.
        tensor: String,
        /// The range's first byte, relative to the start of the data section.
        begin: usize,
        /// The range's end (exclusive), relative to the start of the data section.
        end: usize,
        /// The data section's length in bytes (the file after its header).
        data_len: usize,
    },

    /// Two tensors share bytes.
    #[error(
        "{}: tensor \"{tensor}\" (data_offsets [{begin}, {end}]) overlaps tensor \"{other}\" (ending at {other_end})",
        .path.display()
    )]
    Overlap {
        /// The file that was being read.
        path: PathBuf,
        /// The tensor that starts inside another one.
        tensor: String,
        /// `tensor`'s first byte, relative to the start of the data section.
        begin: usize,
        /// `tensor`'s end (exclusive), relative to the start of the data section.
        end: usize,
        /// The tensor it overlaps (the one before it in offset order).
        other: String,
        /// `other`'s end (exclusive), past `begin`.
        other_end: usize,
    },

    /// Bytes of the data section before this tensor belong to no tensor (the safetensors format
    /// requires the data section to be covered exactly, as the `safetensors` crate enforces).
    #[error(
        "{}: tensor \"{tensor}\": data section bytes [{gap_begin}, {begin}) before it belong to no tensor",
        .path.display()
    )]
    Gap {
        /// The file that was being read.
        path: PathBuf,
        /// The first tensor after the uncovered bytes.
        tensor: String,
        /// The first uncovered byte, relative to the start of the data section.
        gap_begin: usize,
        /// `tensor`'s first byte, where the gap ends.
        begin: usize,
    },

    /// Bytes after the last tensor belong to no tensor.
    #[error(
        "{}: data section is {data_len} bytes but its tensors cover only the first {covered}",
        .path.display()
    )]
    TrailingData {
        /// The file that was being read.
        path: PathBuf,
        /// How many leading bytes of the data section the tensors cover.
        covered: usize,
        /// The data section's length in bytes.
        data_len: usize,
    },

    /// No tensor of that name in the file.
    #[error("{}: no tensor named \"{name}\"", .path.display())]
    MissingTensor {
        /// The file that was searched.
        path: PathBuf,
        /// The tensor name that was asked for.
        name: String,
    },

    /// A `torch.save` file in the pre-1.6 format (a pickle stream or a tar, not a zip archive).
    #[error(
        "{}: legacy (pre-PyTorch-1.6, non-zip) torch.save format is not supported; re-save it with torch >= 1.6 or convert it to safetensors",
        .path.display()
    )]
    LegacyTorchFormat {
        /// The file that was being read.
        path: PathBuf,
    },

    /// The file is not a sound zip archive of the kind `torch.save` writes (no end record, a
    /// central directory that points outside the file or disagrees with its local headers,
    /// compressed entries, no single `<folder>/data.pkl`, a pickle whose CRC does not match…).
    #[error("{}: not a readable torch.save archive: {reason} (byte {offset})", .path.display())]
    TorchArchive {
        /// The file that was being read.
        path: PathBuf,
        /// The byte offset in the file where the fault was found.
        offset: u64,
        /// What is wrong, in words.
        reason: String,
    },

    /// The pickle uses an opcode outside the state-dict subset Ember interprets (e.g. `INST`,
    /// `OBJ`); `offset` is the opcode's byte offset in `entry`.
    #[error(
        "{}: {entry}: pickle opcode {opcode} at byte {offset} is not supported (Ember reads only what torch.save writes for a state dict, and never runs code)",
        .path.display()
    )]
    PickleOpcode {
        /// The archive that was being read.
        path: PathBuf,
        /// The pickle's entry name inside the archive (`<folder>/data.pkl`).
        entry: String,
        /// The opcode's byte offset in `entry`.
        offset: usize,
        /// The opcode's name and byte, e.g. `INST (0x69)`.
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
        /// The archive that was being read.
        path: PathBuf,
        /// The pickle's entry name inside the archive (`<folder>/data.pkl`).
        entry: String,
        /// The `GLOBAL` / `STACK_GLOBAL` opcode's byte offset in `entry`.
        offset: usize,
        /// The global as `module.name`.
        global: String,
    },

    /// The pickle is malformed or describes something other than a dict of tensors: truncated,
    /// stack underflow, an unknown memo key, arguments of the wrong type…
    #[error("{}: {entry}: bad pickle at byte {offset}: {reason}", .path.display())]
    Pickle {
        /// The archive that was being read.
        path: PathBuf,
        /// The pickle's entry name inside the archive (`<folder>/data.pkl`).
        entry: String,
        /// The byte offset in `entry` of the opcode being run.
        offset: usize,
        /// What is wrong, in words.
        reason: String,
    },

    /// Raw bytes were asked for a tensor whose elements are not dense and row-major (a
    /// transposed or sliced view in a `torch.save` file); `f32_tensor` copies it instead.
    #[error("{}: tensor \"{tensor}\" is not contiguous: it has no raw bytes of its own", .path.display())]
    NonContiguous {
        /// The file that holds the tensor.
        path: PathBuf,
        /// The tensor whose raw bytes were asked for.
        tensor: String,
    },

    /// A model folder holds none of the weight files Ember reads.
    #[error(
        "{}: no weights: neither {} exists",
        .dir.display(),
        .looked.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" nor ")
    )]
    NoWeightFile {
        /// The model folder.
        dir: PathBuf,
        /// The file names looked for in `dir`, in order of preference.
        looked: Vec<&'static str>,
    },

    /// The tensor exists but its shape is not the one the caller needs.
    #[error("{}: tensor \"{name}\": expected shape {expected:?}, found {found:?}", .path.display())]
    ShapeMismatch {
        /// The file that holds the tensor.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the caller needs.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
}
