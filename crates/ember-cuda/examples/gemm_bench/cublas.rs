//! cuBLAS in gemm_bench's own process (`--cublas LIB`): `cublasGemmEx` on Ember's stream and
//! buffers, the product `torch.matmul(x, w.t())` asks cuBLAS for, so that Ember's kernels and
//! cuBLAS can be timed in one gated sequence, call after call. Loaded at run time from the path
//! given (bench_gpu.sh passes the library PyTorch itself loaded); only this benchmark uses it:
//! Ember has no cuBLAS.

use std::ffi::{c_int, c_void};
use std::path::Path;

use ember_cuda::{CudaDevice, CudaError, DeviceTensor, Dtype, Element};

type Handle = *mut c_void;
type Status = c_int;

const CUBLAS_OP_N: c_int = 0;
const CUBLAS_OP_T: c_int = 1;
const CUDA_R_16F: c_int = 2;
const CUDA_R_16BF: c_int = 14;
const CUDA_R_32F: c_int = 0;
const CUBLAS_COMPUTE_32F: c_int = 68;
const CUBLAS_GEMM_DEFAULT: c_int = -1;

type GemmEx = unsafe extern "C" fn(
    Handle,
    c_int,         // transa
    c_int,         // transb
    c_int,         // m
    c_int,         // n
    c_int,         // k
    *const c_void, // alpha
    *const c_void, // A
    c_int,         // Atype
    c_int,         // lda
    *const c_void, // B
    c_int,         // Btype
    c_int,         // ldb
    *const c_void, // beta
    *mut c_void,   // C
    c_int,         // Ctype
    c_int,         // ldc
    c_int,         // computeType
    c_int,         // algo
) -> Status;

pub struct Cublas {
    handle: Handle,
    gemm_ex: GemmEx,
    destroy: unsafe extern "C" fn(Handle) -> Status,
    /// cublasGetVersion's number (e.g. 130100).
    pub version: c_int,
    pub path: std::path::PathBuf,
    // Dropped after `handle` is destroyed (Drop), in this order.
    _lib: libloading::Library,
    _lt: Option<libloading::Library>,
}

impl Cublas {
    /// Loads `path` (and the libcublasLt of the same version beside it first, should its own
    /// search path not find it), creates a handle and binds it to `device`'s stream.
    pub fn load(path: &Path, device: &CudaDevice) -> Result<Cublas, String> {
        // libcublas.so.13 → libcublasLt.so.13 beside it (the same version).
        let lt = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("libcublas"))
            .map(|rest| path.with_file_name(format!("libcublasLt{rest}")))
            .filter(|lt| lt.is_file())
            // SAFETY: loading cuBLAS's own companion library runs only its initialisers.
            .and_then(|lt| unsafe { libloading::Library::new(lt) }.ok());
        // SAFETY: as above, for cuBLAS itself.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: the symbols' types are cuBLAS's documented C signatures (cublas_api.h).
        unsafe {
            let symbol = |name: &str| format!("{}: no {name}", path.display());
            let create = *lib
                .get::<unsafe extern "C" fn(*mut Handle) -> Status>(b"cublasCreate_v2")
                .map_err(|_| symbol("cublasCreate_v2"))?;
            let destroy = *lib
                .get::<unsafe extern "C" fn(Handle) -> Status>(b"cublasDestroy_v2")
                .map_err(|_| symbol("cublasDestroy_v2"))?;
            let set_stream = *lib
                .get::<unsafe extern "C" fn(Handle, *mut c_void) -> Status>(b"cublasSetStream_v2")
                .map_err(|_| symbol("cublasSetStream_v2"))?;
            let get_version = *lib
                .get::<unsafe extern "C" fn(Handle, *mut c_int) -> Status>(b"cublasGetVersion_v2")
                .map_err(|_| symbol("cublasGetVersion_v2"))?;
            let gemm_ex = *lib
                .get::<GemmEx>(b"cublasGemmEx")
                .map_err(|_| symbol("cublasGemmEx"))?;
            let mut handle: Handle = std::ptr::null_mut();
            let status = create(&mut handle);
            if status != 0 || handle.is_null() {
                return Err(format!("cublasCreate: status {status}"));
            }
            let cublas = Cublas {
                handle,
                gemm_ex,
                destroy,
                version: 0,
                path: path.to_owned(),
                _lib: lib,
                _lt: lt,
            };
            let status = set_stream(handle, device.cu_stream().cast());
            if status != 0 {
                return Err(format!("cublasSetStream: status {status}"));
            }
            let mut cublas = cublas;
            let _ = get_version(handle, &mut cublas.version);
            Ok(cublas)
        }
    }

    /// `y [t, n] = x [t, k] · w [n, k]ᵀ` (row-major, as Ember's `linear` without bias), queued on
    /// the device's stream: in cuBLAS's column-major terms `yᵀ = op_T(w) · xᵀ`, f32 accumulation.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm<E: Element>(
        &self,
        device: &CudaDevice,
        x: &DeviceTensor<E>,
        t: usize,
        w: &DeviceTensor<E>,
        n: usize,
        k: usize,
        y: &mut DeviceTensor<E>,
    ) -> Result<(), CudaError> {
        let dtype = match E::DTYPE {
            Dtype::Bf16 => CUDA_R_16BF,
            Dtype::F16 => CUDA_R_16F,
            Dtype::F32 => CUDA_R_32F,
        };
        let shape_error = |reason: String| CudaError::InvalidShape {
            op: "cublasGemmEx",
            reason,
        };
        if x.len() < t * k || w.len() < n * k || y.len() < t * n {
            return Err(shape_error(format!(
                "buffers too small for {t} × {n} × {k}"
            )));
        }
        let int = |v: usize| c_int::try_from(v).map_err(|_| shape_error(format!("{v} > i32")));
        let (m_, n_, k_) = (int(n)?, int(t)?, int(k)?);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the three buffers hold at least the elements the product touches (checked
        // above), live on this device, and the handle queues on its stream.
        let status = unsafe {
            (self.gemm_ex)(
                self.handle,
                CUBLAS_OP_T,
                CUBLAS_OP_N,
                m_,
                n_,
                k_,
                (&alpha as *const f32).cast(),
                w.device_address(device) as *const c_void,
                dtype,
                k_,
                x.device_address(device) as *const c_void,
                dtype,
                k_,
                (&beta as *const f32).cast(),
                y.device_address(device) as *mut c_void,
                dtype,
                m_,
                CUBLAS_COMPUTE_32F,
                CUBLAS_GEMM_DEFAULT,
            )
        };
        if status == 0 {
            Ok(())
        } else {
            Err(shape_error(format!("status {status}")))
        }
    }
}

impl Drop for Cublas {
    fn drop(&mut self) {
        // SAFETY: the handle was created by this library and is destroyed once.
        unsafe { (self.destroy)(self.handle) };
    }
}
