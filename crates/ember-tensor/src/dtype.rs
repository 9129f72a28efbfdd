//! Element types Ember reads from safetensors files.
//!
//! Only the floating-point types a BERT checkpoint is stored in are supported: `F32`, and the two
//! 16-bit formats `F16` (IEEE 754 binary16) and `BF16` (bfloat16, the top half of an f32), which
//! are widened to f32 on load. The names match the `dtype` strings of the safetensors header.

use std::fmt;

/// The element type of a tensor stored in a safetensors file (always little-endian on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16: 1 sign, 8 exponent, 7 mantissa bits.
    BF16,
}

impl DType {
    /// Bytes per element: 4 for `F32`, 2 for `F16` and `BF16`.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The spelling used in a safetensors header (`"F32"`, `"F16"`, `"BF16"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }

    /// Parses a safetensors header `dtype` string; `None` for every other type (`I64`, `F64`, …)
    /// and for strings that are no safetensors type at all.
    pub fn from_safetensors_str(s: &str) -> Option<DType> {
        match s {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Every dtype the safetensors format defines (as of `safetensors` 0.7), Ember's or not, with its
/// bits per element. Used to validate the placement of tensors Ember does not read (such as BERT's
/// I64 `embeddings.position_ids` buffer).
const SAFETENSORS_DTYPES: [(&str, usize); 20] = [
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

/// The canonical (static) spelling and bits per element of a safetensors dtype string; `None` for
/// strings that are no safetensors dtype.
pub(crate) fn safetensors_dtype(dtype: &str) -> Option<(&'static str, usize)> {
    SAFETENSORS_DTYPES
        .iter()
        .find(|&&(name, _)| name == dtype)
        .copied()
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(DType::from_safetensors_str(&dtype.to_string()), Some(dtype));
        }
        assert_eq!(DType::from_safetensors_str("I64"), None);
        assert_eq!(DType::from_safetensors_str("f32"), None);
        assert_eq!(DType::F32.size_in_bytes(), 4);
        assert_eq!(DType::BF16.size_in_bytes(), 2);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(
                safetensors_dtype(dtype.as_str()),
                Some((dtype.as_str(), 8 * dtype.size_in_bytes()))
            );
        }
        assert_eq!(safetensors_dtype("I64"), Some(("I64", 64)));
        assert_eq!(safetensors_dtype("Q4"), None);
    }
}
