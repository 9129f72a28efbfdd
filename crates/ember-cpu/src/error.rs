//! The crate's error type: every kernel validates its shapes and returns [`KernelError`]
//! instead of panicking or reading out of bounds.

use crate::isa::Isa;

/// Why a kernel refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A buffer's length disagrees with the shape it was described by.
    #[error("{op}: `{tensor}` has {found} elements, expected {expected}")]
    LengthMismatch {
        /// The kernel that checked (`"linear"`, `"layernorm"`, …).
        op: &'static str,
        /// The argument's name.
        tensor: &'static str,
        /// Elements the shape implies.
        expected: usize,
        /// Elements the slice has.
        found: usize,
    },
    /// A shape product does not fit in `usize`.
    #[error("{op}: shape of `{tensor}` overflows usize")]
    ShapeOverflow {
        /// The kernel that checked.
        op: &'static str,
        /// The argument's name.
        tensor: &'static str,
    },
    /// A shape parameter is invalid on its own (e.g. `head_dim == 0`).
    #[error("{op}: invalid shape: {reason}")]
    InvalidShape {
        /// The kernel that checked.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `seq_offsets` is not `[0, …, T]` non-decreasing.
    #[error("{op}: invalid seq_offsets: {reason}")]
    InvalidOffsets {
        /// The kernel that checked.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A kernel was asked to run an instruction set this CPU does not have.
    #[error("{op}: instruction set {isa:?} is not supported by this CPU")]
    UnsupportedIsa {
        /// The kernel that checked.
        op: &'static str,
        /// The requested instruction set.
        isa: Isa,
    },
    /// A precision the CPU kernels do not implement ([`crate::Precision::F16`]: GPU only).
    #[error("{op}: {precision} operands run on CUDA only; on the CPU use f32, bf16 or int8")]
    UnsupportedPrecision {
        /// The kernel that checked.
        op: &'static str,
        /// The precision asked for.
        precision: crate::Precision,
    },
}

/// `Err(LengthMismatch)` unless `found == expected`.
pub(crate) fn check_len(
    op: &'static str,
    tensor: &'static str,
    expected: usize,
    found: usize,
) -> Result<(), KernelError> {
    if expected == found {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            op,
            tensor,
            expected,
            found,
        })
    }
}

/// `a · b`, or `Err(ShapeOverflow)`.
pub(crate) fn checked_elems(
    op: &'static str,
    tensor: &'static str,
    a: usize,
    b: usize,
) -> Result<usize, KernelError> {
    a.checked_mul(b)
        .ok_or(KernelError::ShapeOverflow { op, tensor })
}

/// The token count `T` of `seq_offsets`, which must run from 0, non-decreasing (`[0, …, T]`),
/// or `Err(InvalidOffsets)` saying where they do not.
pub(crate) fn check_offsets(op: &'static str, seq_offsets: &[usize]) -> Result<usize, KernelError> {
    let bad_offsets = |reason: String| KernelError::InvalidOffsets { op, reason };
    let Some(&t) = seq_offsets.last() else {
        return Err(bad_offsets("empty (needs at least [0])".into()));
    };
    if seq_offsets[0] != 0 {
        return Err(bad_offsets(format!("starts at {}, not 0", seq_offsets[0])));
    }
    if let Some(i) = seq_offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(bad_offsets(format!(
            "decreasing at index {}: {} > {}",
            i + 1,
            seq_offsets[i],
            seq_offsets[i + 1]
        )));
    }
    Ok(t)
}
