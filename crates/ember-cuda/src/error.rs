//! The crate's error type. Launchers validate every shape on the host and return
//! [`CudaError`] rather than launching a kernel that would read or write out of bounds.

use std::path::PathBuf;

/// Why a CUDA call or a launcher refused.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// `libcuda` could not be loaded: no NVIDIA driver on this machine.
    #[error(
        "no CUDA driver found (libcuda.so): this machine has no NVIDIA driver, so `cuda` is \
         unavailable; run on the CPU instead"
    )]
    NoDriver,
    /// The driver loaded but has no device of that ordinal.
    #[error("no CUDA device {ordinal}: the driver reports {count} device(s)")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices the driver reports.
        count: usize,
    },
    /// The GPU is older than the kernels need (cp.async, bf16 `mma.sync`: sm_80).
    #[error("{name} is sm_{major}{minor}; Ember's CUDA kernels need sm_80 (Ampere) or newer")]
    UnsupportedArch {
        /// The device's name.
        name: String,
        /// Compute capability, major.
        major: u32,
        /// Compute capability, minor.
        minor: u32,
    },
    /// An `EMBER_CUDA_*` environment variable has a value Ember cannot use.
    #[error("{variable}={value:?}: {reason}")]
    InvalidSetting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No `libnvrtc` was found in any of the places searched.
    #[error(
        "no NVRTC found (libnvrtc.so), needed to compile Ember's kernels; tried: {tried}. \
         Set EMBER_NVRTC_LIB to a libnvrtc.so, or run scripts/install-nvrtc.sh"
    )]
    NoNvrtc {
        /// The candidates, in the order tried.
        tried: String,
    },
    /// A `libnvrtc` was found but could not be used (not loadable, or a symbol is missing).
    #[error("{path}: cannot use as NVRTC: {reason}")]
    NvrtcLoad {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC {call} failed: {message}")]
    Nvrtc {
        /// The NVRTC function.
        call: &'static str,
        /// `nvrtcGetErrorString`'s text.
        message: String,
    },
    /// A kernel file did not compile; `log` is NVRTC's program log.
    #[error("kernels/{file} does not compile for {arch}:\n{log}")]
    Compile {
        /// The file under `kernels/`.
        file: &'static str,
        /// `sm_XY`.
        arch: String,
        /// NVRTC's program log.
        log: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA {op}: {source}")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// A buffer's length disagrees with the shape it was described by.
    #[error("{op}: `{tensor}` has {found} elements, expected {expected}")]
    LengthMismatch {
        /// The launcher that checked.
        op: &'static str,
        /// The argument's name.
        tensor: &'static str,
        /// Elements the shape implies.
        expected: usize,
        /// Elements the buffer has.
        found: usize,
    },
    /// A shape parameter is invalid or unsupported by the kernel.
    #[error("{op}: invalid shape: {reason}")]
    InvalidShape {
        /// The launcher that checked.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `seq_offsets` is not `[0, …, T]` non-decreasing (or, for pooling, has an empty sequence).
    #[error("{op}: invalid seq_offsets: {reason}")]
    InvalidOffsets {
        /// The launcher that checked.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint or the batch does not fit the model (from `ember-bert`'s checks).
    #[error(transparent)]
    Model(#[from] ember_bert::BertError),
}

impl CudaError {
    /// Wraps a driver error with what was being done.
    pub(crate) fn driver(op: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Self {
        move |source| CudaError::Driver { op, source }
    }
}

/// `Err(LengthMismatch)` unless `found == expected`.
pub(crate) fn check_len(
    op: &'static str,
    tensor: &'static str,
    expected: usize,
    found: usize,
) -> Result<(), CudaError> {
    if expected == found {
        Ok(())
    } else {
        Err(CudaError::LengthMismatch {
            op,
            tensor,
            expected,
            found,
        })
    }
}

/// The product of `dims`, or `Err(InvalidShape)` on overflow.
pub(crate) fn checked_product(
    op: &'static str,
    tensor: &'static str,
    dims: &[usize],
) -> Result<usize, CudaError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CudaError::InvalidShape {
            op,
            reason: format!("`{tensor}` of shape {dims:?} overflows usize"),
        })
}

/// The largest value [`to_i32`] passes: `i32::MAX` less 2^16, so that a kernel may add a
/// tile's extent, a loop's stride or a lane's column (all well under 2^16) to any dimension or
/// index below it in `int` arithmetic without overflowing (`k + 63`, `k0 += 16`, `col0 + 2·lane`).
pub(crate) const MAX_KERNEL_INT: usize = i32::MAX as usize - (1 << 16);

/// `value` as a kernel's `int` parameter, or `Err(InvalidShape)` if it is over
/// [`MAX_KERNEL_INT`].
pub(crate) fn to_i32(op: &'static str, what: &'static str, value: usize) -> Result<i32, CudaError> {
    if value > MAX_KERNEL_INT {
        return Err(CudaError::InvalidShape {
            op,
            reason: format!(
                "{what} = {value} is over {MAX_KERNEL_INT}, what the kernels' 32-bit indices allow"
            ),
        });
    }
    Ok(value as i32) // ≤ i32::MAX
}
