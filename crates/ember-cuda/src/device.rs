//! A CUDA device, its buffers and its kernels.
//!
//! [`CudaDevice::open`] loads the driver (`libcuda`, at run time: nothing CUDA is needed to
//! build), checks the architecture (sm_80 or newer) and finds NVRTC. Kernels are compiled on
//! first use ([`crate::kernels::cubin`]) and their modules loaded into the device's context once.
//!
//! Buffers: [`DeviceTensor<E>`] holds `f32`, `bf16` or `f16` elements ([`Element`]); the host
//! side always speaks `f32`, converting (round to nearest even) on upload. [`SeqOffsets`] is a
//! packed batch's `seq_offsets` on both sides: the device copy for kernels, the host copy for
//! validation and launch sizes. All work is queued on one stream, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    ValidAsZeroBits,
};

use crate::error::CudaError;
use crate::gemm::GemmFamily;
use crate::kernels::{self, KernelFile};
use crate::nvrtc::{Arch, Nvrtc};

/// Device allocations made by [`CudaDevice`]s in this process so far (see [`device_allocations`]).
static DEVICE_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// How many device allocations Ember's CUDA backend has made in this process: weights, the
/// activation buffers as they grow, the token-id and offset buffers. A warm encode adds none
/// (`tests/tests/cuda_zero_alloc.rs`). Kernel modules (loaded once per kernel) are not counted.
pub fn device_allocations() -> u64 {
    DEVICE_ALLOCATIONS.load(Ordering::Relaxed)
}

/// An element type of device tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE single precision.
    F32,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    Bf16,
    /// IEEE half precision.
    F16,
}

impl Dtype {
    /// Every dtype.
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::Bf16, Dtype::F16];

    /// The suffix of the kernels' names (`gemm_mma_128x128_bf16`) and of test cases.
    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suffix())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// `f32`, `half::bf16` or `half::f16`: what a [`DeviceTensor`] can hold.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The runtime tag.
    const DTYPE: Dtype;
    /// The bits as stored on the device.
    type Bits: DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + Send + Sync + 'static;
    /// `x` rounded to this type (nearest even), as bits.
    fn encode(x: f32) -> Self::Bits;
    /// The value of `bits`, exactly, as `f32`.
    fn decode(bits: Self::Bits) -> f32;
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    type Bits = f32;
    fn encode(x: f32) -> f32 {
        x
    }
    fn decode(bits: f32) -> f32 {
        bits
    }
}

impl Element for half::bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    type Bits = u16;
    fn encode(x: f32) -> u16 {
        half::bf16::from_f32(x).to_bits()
    }
    fn decode(bits: u16) -> f32 {
        half::bf16::from_bits(bits).to_f32()
    }
}

impl Element for half::f16 {
    const DTYPE: Dtype = Dtype::F16;
    type Bits = u16;
    fn encode(x: f32) -> u16 {
        half::f16::from_f32(x).to_bits()
    }
    fn decode(bits: u16) -> f32 {
        half::f16::from_bits(bits).to_f32()
    }
}

/// `len` elements of `E` in device memory (a flat buffer; shapes are the ops' arguments).
pub struct DeviceTensor<E: Element> {
    /// At least one element: the driver refuses zero-byte allocations.
    data: CudaSlice<E::Bits>,
    len: usize,
}

impl<E: Element> DeviceTensor<E> {
    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements the allocation holds (at least [`len`](Self::len)).
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Sets the length the launchers check against, within the allocation: a buffer sized for
    /// the largest batch is reused for smaller ones. `Err(InvalidShape)` if `len` exceeds
    /// [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) -> Result<(), CudaError> {
        if len > self.data.len() {
            return Err(CudaError::InvalidShape {
                op: "DeviceTensor::set_len",
                reason: format!("{len} elements in an allocation of {}", self.data.len()),
            });
        }
        self.len = len;
        Ok(())
    }

    /// The buffer's device address, for another CUDA library working on it (gemm_bench's
    /// cuBLAS): its work must be queued on [`CudaDevice::cu_stream`] (this tensor's device's) and
    /// must stay within [`capacity`](Self::capacity) elements, while the tensor lives. (A device
    /// queues everything on one stream, so cudarc records no cross-stream order for the buffer:
    /// reading or writing it there needs none.)
    pub fn device_address(&self, device: &CudaDevice) -> u64 {
        let (address, _recorded) = self.data.device_ptr(&device.stream);
        address
    }

    pub(crate) fn slice(&self) -> &CudaSlice<E::Bits> {
        &self.data
    }

    pub(crate) fn slice_mut(&mut self) -> &mut CudaSlice<E::Bits> {
        &mut self.data
    }
}

impl<E: Element> std::fmt::Debug for DeviceTensor<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTensor")
            .field("dtype", &E::DTYPE)
            .field("len", &self.len)
            .finish()
    }
}

/// A packed batch's `seq_offsets` (`[0, …, T]`, non-decreasing, `n_seq + 1` entries), on the
/// device for the kernels and on the host for checks and launch sizes.
#[derive(Debug)]
pub struct SeqOffsets {
    host: Vec<u32>,
    device: CudaSlice<u32>,
    max_len: usize,
}

impl SeqOffsets {
    /// Tokens `T` (the last offset).
    pub fn tokens(&self) -> usize {
        self.host.last().copied().unwrap_or(0) as usize
    }

    /// Sequences `n_seq`.
    pub fn sequences(&self) -> usize {
        self.host.len().saturating_sub(1)
    }

    /// The longest sequence.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The offsets as uploaded.
    pub fn host(&self) -> &[u32] {
        &self.host
    }

    pub(crate) fn device(&self) -> &CudaSlice<u32> {
        &self.device
    }
}

/// A packed batch's token ids (`[T]`, u32) on the device.
#[derive(Debug)]
pub struct TokenIds {
    device: CudaSlice<u32>,
    len: usize,
}

impl TokenIds {
    /// Tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn device(&self) -> &CudaSlice<u32> {
        &self.device
    }
}

/// One GPU: a context on it, one stream, and its kernels loaded on first use.
pub struct CudaDevice {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    nvrtc: &'static Nvrtc,
    arch: Arch,
    gemm_family: GemmFamily,
    name: String,
    multiprocessors: u32,
    modules: Mutex<HashMap<KernelFile, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// cuOccupancyMaxActiveClusters per clustered kernel (its launch shape never changes).
    max_active_clusters: Mutex<HashMap<&'static str, u32>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("multiprocessors", &self.multiprocessors)
            .finish()
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal`. Errors (never panics) when there is no driver
    /// ([`CudaError::NoDriver`]), no such device, the device is older than sm_80, or NVRTC
    /// cannot be found.
    ///
    /// ```
    /// match ember_cuda::CudaDevice::open(0) {
    ///     Ok(device) => println!("{} ({})", device.name(), device.arch()),
    ///     Err(err) => println!("no GPU: {err}"), // e.g. "no CUDA driver found (libcuda.so): …"
    /// }
    /// ```
    pub fn open(ordinal: usize) -> Result<CudaDevice, CudaError> {
        // SAFETY: tries to dlopen libcuda under its usual names; loading the driver library
        // runs only its own initialisers. cudarc panics on the first driver call when libcuda
        // is absent, so this check must come first.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        let count = match CudaContext::device_count() {
            Ok(count) => usize::try_from(count).unwrap_or(0),
            // cuInit's answer where a driver is installed but no GPU is visible to this process
            // (none in the machine, CUDA_VISIBLE_DEVICES="", a container without devices).
            Err(cudarc::driver::DriverError(
                cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE,
            )) => 0,
            Err(e) => return Err(CudaError::driver("cuInit")(e)),
        };
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let context = CudaContext::new(ordinal).map_err(CudaError::driver("open context"))?;
        let name = context
            .name()
            .map_err(CudaError::driver("cuDeviceGetName"))?;
        let (major, minor) = context
            .compute_capability()
            .map_err(CudaError::driver("compute capability"))?;
        let arch = Arch {
            major: u32::try_from(major).unwrap_or(0),
            minor: u32::try_from(minor).unwrap_or(0),
        };
        if arch < Arch::SM80 {
            return Err(CudaError::UnsupportedArch {
                name,
                major: arch.major,
                minor: arch.minor,
            });
        }
        let multiprocessors = context
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(CudaError::driver("multiprocessor count"))?;
        let gemm_family = gemm_family_setting(arch)?;
        let nvrtc = Nvrtc::get()?;
        let stream = context.default_stream();
        Ok(CudaDevice {
            context,
            stream,
            nvrtc,
            arch,
            gemm_family,
            name,
            multiprocessors: u32::try_from(multiprocessors).unwrap_or(1).max(1),
            modules: Mutex::default(),
            functions: Mutex::default(),
            max_active_clusters: Mutex::default(),
        })
    }

    /// The tensor-core kernels [`crate::gemm::linear`] chooses among: `EMBER_CUDA_GEMM` when the
    /// device was opened (`mma`, `wgmma`, `wgmma-tma`, `wgmma-tma-occ2`, `wgmma-pingpong`,
    /// `wgmma-pingpong-mc`, `wgmma-tma-store`; all but `mma` sm_90 only), else [`GemmFamily::default_for`] the
    /// device.
    pub fn gemm_family(&self) -> GemmFamily {
        self.gemm_family
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Streaming multiprocessors (launch heuristics size grids against this).
    pub fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// The NVRTC this device compiles with.
    pub fn nvrtc(&self) -> &'static Nvrtc {
        self.nvrtc
    }

    /// Waits for all queued work. Errors from earlier launches surface here.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(CudaError::driver("synchronize"))
    }

    /// The stream all of this device's work is queued on (the context's legacy default stream),
    /// for another CUDA library to queue its own work in order with Ember's (gemm_bench's
    /// cuBLAS, `cublasSetStream`).
    pub fn cu_stream(&self) -> cudarc::driver::sys::CUstream {
        self.stream.cu_stream()
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compiles every kernel file for this device now (otherwise each compiles on first use),
    /// so that no later call pays for NVRTC.
    pub fn warm_up(&self) -> Result<(), CudaError> {
        for file in KernelFile::ALL {
            if file.compiles_for(self.arch) {
                self.module(file)?;
            }
        }
        Ok(())
    }

    fn module(&self, file: KernelFile) -> Result<Arc<CudaModule>, CudaError> {
        let mut modules = self
            .modules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(module) = modules.get(&file) {
            return Ok(module.clone());
        }
        let cubin = kernels::cubin(self.nvrtc, file, self.arch)?;
        let module = self
            .context
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec()))
            .map_err(CudaError::driver("cuModuleLoadData"))?;
        modules.insert(file, module.clone());
        Ok(module)
    }

    /// Kernel `name` of `file`, loaded once. `dynamic_smem` (bytes) above the 48 KiB default
    /// raises the function's limit when it is first loaded.
    pub(crate) fn function(
        &self,
        file: KernelFile,
        name: &'static str,
        dynamic_smem: u32,
    ) -> Result<CudaFunction, CudaError> {
        cached(&self.functions, name, || {
            self.load_function(file, name, dynamic_smem)
        })
    }

    /// [`Self::function`]'s first load.
    fn load_function(
        &self,
        file: KernelFile,
        name: &'static str,
        dynamic_smem: u32,
    ) -> Result<CudaFunction, CudaError> {
        let function = self
            .module(file)?
            .load_function(name)
            .map_err(CudaError::driver("cuModuleGetFunction"))?;
        if dynamic_smem > 48 * 1024 {
            function
                .set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    dynamic_smem as i32,
                )
                .map_err(CudaError::driver("cuFuncSetAttribute"))?;
            // The most shared memory and the least L1 on its multiprocessors, so that as many
            // blocks fit as the registers allow (two of WgmmaTma128x128Occ2's 97 KiB).
            function
                .set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                    100,
                )
                .map_err(CudaError::driver("cuFuncSetAttribute"))?;
        }
        Ok(function)
    }

    /// How many clusters of the kernel `name` (`function`, declared with `__cluster_dims__(cluster,
    /// 1, 1)`) run at once with `threads` threads and `dynamic_smem` bytes a block
    /// (cuOccupancyMaxActiveClusters: the GPCs may not pair every multiprocessor), at least 1;
    /// asked once per kernel.
    pub(crate) fn max_active_clusters(
        &self,
        function: &CudaFunction,
        name: &'static str,
        cluster: u32,
        threads: u32,
        dynamic_smem: u32,
    ) -> Result<u32, CudaError> {
        cached(&self.max_active_clusters, name, || {
            self.ask_max_active_clusters(function, cluster, threads, dynamic_smem)
        })
    }

    /// [`Self::max_active_clusters`]'s driver call.
    fn ask_max_active_clusters(
        &self,
        function: &CudaFunction,
        cluster: u32,
        threads: u32,
        dynamic_smem: u32,
    ) -> Result<u32, CudaError> {
        let config = cudarc::driver::sys::CUlaunchConfig {
            gridDimX: cluster,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: threads,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: dynamic_smem,
            hStream: std::ptr::null_mut(),
            attrs: std::ptr::null_mut(),
            numAttrs: 0,
        };
        let mut clusters: std::ffi::c_int = 0;
        self.context
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))?;
        // SAFETY: `function` is a live kernel of this context's modules; `config` is a complete
        // CUlaunchConfig without attributes (the kernel's own cluster shape applies); `clusters`
        // is a writable int.
        unsafe {
            cudarc::driver::sys::cuOccupancyMaxActiveClusters(
                &mut clusters,
                function.cu_function(),
                &config,
            )
        }
        .result()
        .map_err(CudaError::driver("cuOccupancyMaxActiveClusters"))?;
        Ok(u32::try_from(clusters).unwrap_or(0).max(1))
    }

    /// `len` zeroed elements of device memory: every device allocation Ember makes goes through
    /// here (clippy's `disallowed_methods`, `clippy.toml`, refuses cudarc's named allocating
    /// calls anywhere else; `CudaSlice::clone`, which it cannot name, is not used) and is
    /// counted by [`device_allocations`].
    #[allow(clippy::disallowed_methods)] // the one counted path
    fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        DEVICE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        self.stream
            .alloc_zeros::<T>(len)
            .map_err(CudaError::driver("cuMemAlloc"))
    }

    /// A tensor of `len` zeros.
    pub fn zeros<E: Element>(&self, len: usize) -> Result<DeviceTensor<E>, CudaError> {
        let data = self.alloc_zeros::<E::Bits>(len.max(1))?;
        Ok(DeviceTensor { data, len })
    }

    /// `host` rounded to `E` in a new device tensor.
    pub fn upload<E: Element>(&self, host: &[f32]) -> Result<DeviceTensor<E>, CudaError> {
        let mut tensor = self.zeros::<E>(host.len())?;
        self.write(host, &mut tensor)?;
        Ok(tensor)
    }

    /// Overwrites `dst` with `host` rounded to `E` (lengths must match).
    pub fn write<E: Element>(
        &self,
        host: &[f32],
        dst: &mut DeviceTensor<E>,
    ) -> Result<(), CudaError> {
        crate::error::check_len("write", "host", dst.len, host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        let bits: Vec<E::Bits> = host.iter().map(|&x| E::encode(x)).collect();
        self.stream
            .memcpy_htod(&bits, &mut dst.data)
            .map_err(CudaError::driver("cuMemcpyHtoD"))
    }

    /// The tensor's values as `f32` (waits for queued work).
    pub fn download<E: Element>(&self, src: &DeviceTensor<E>) -> Result<Vec<f32>, CudaError> {
        let mut bits = vec![E::Bits::default(); src.len];
        if src.len > 0 {
            self.stream
                .memcpy_dtoh(&src.data.slice(..src.len), &mut bits)
                .map_err(CudaError::driver("cuMemcpyDtoH"))?;
            self.synchronize()?;
        }
        Ok(bits.into_iter().map(E::decode).collect())
    }

    /// Uploads a packed batch's `seq_offsets`, checking that they run `0, …, T` without
    /// decreasing and fit in u32 ([`check_offsets`]).
    pub fn upload_offsets(&self, seq_offsets: &[usize]) -> Result<SeqOffsets, CudaError> {
        let (host, max_len) = check_offsets("upload_offsets", seq_offsets)?;
        let mut device = self.alloc_zeros::<u32>(host.len())?;
        self.stream
            .memcpy_htod(&host, &mut device)
            .map_err(CudaError::driver("cuMemcpyHtoD"))?;
        Ok(SeqOffsets {
            host,
            device,
            max_len,
        })
    }

    /// Overwrites `dst` with `seq_offsets` (checked as by [`upload_offsets`](Self::upload_offsets)),
    /// reusing its host and device buffers; they grow (never shrink) when the batch has more
    /// sequences than any before, so a warm caller allocates nothing.
    ///
    /// The host copy is what every launcher checks its buffers against, and the kernels index
    /// those buffers with the device copy, so the two never disagree: offsets that fail the
    /// checks leave `dst` as it was, and a failed allocation or copy leaves it empty (`[0]`:
    /// no tokens, which no launch with tokens accepts).
    pub fn write_offsets(
        &self,
        seq_offsets: &[usize],
        dst: &mut SeqOffsets,
    ) -> Result<(), CudaError> {
        let bad = |reason: String| CudaError::InvalidOffsets {
            op: "write_offsets",
            reason,
        };
        if seq_offsets.first() != Some(&0) {
            return Err(bad("does not start at 0".into()));
        }
        let mut max_len = 0;
        for w in seq_offsets.windows(2) {
            if w[1] < w[0] {
                return Err(bad(format!("decreasing: {} > {}", w[0], w[1])));
            }
            max_len = max_len.max(w[1] - w[0]);
        }
        // Non-decreasing from 0: every offset fits when the last does.
        let last = seq_offsets[seq_offsets.len() - 1];
        if u32::try_from(last).is_err() {
            return Err(bad(format!("{last} does not fit in u32")));
        }
        let result = self.write_checked_offsets(seq_offsets, max_len, dst);
        if result.is_err() {
            dst.host.clear();
            dst.host.push(0);
            dst.max_len = 0;
        }
        result
    }

    /// write_offsets once the offsets passed its checks.
    fn write_checked_offsets(
        &self,
        seq_offsets: &[usize],
        max_len: usize,
        dst: &mut SeqOffsets,
    ) -> Result<(), CudaError> {
        if dst.device.len() < seq_offsets.len() {
            dst.device = self.alloc_zeros::<u32>(seq_offsets.len())?;
        }
        dst.host.clear();
        // Checked by the caller: at most the last offset, which fits.
        dst.host.extend(seq_offsets.iter().map(|&o| o as u32));
        dst.max_len = max_len;
        self.stream
            .memcpy_htod(&dst.host, &mut dst.device)
            .map_err(CudaError::driver("cuMemcpyHtoD"))
    }

    /// Overwrites `dst` with `token_ids`, growing its device buffer (never shrinking) when
    /// the batch has more tokens than any before.
    pub fn write_token_ids(&self, token_ids: &[u32], dst: &mut TokenIds) -> Result<(), CudaError> {
        if dst.device.len() < token_ids.len() {
            dst.device = self.alloc_zeros::<u32>(token_ids.len())?;
        }
        dst.len = token_ids.len();
        if token_ids.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_htod(token_ids, &mut dst.device)
            .map_err(CudaError::driver("cuMemcpyHtoD"))
    }

    /// Copies an f32 tensor into `dst` (lengths must match) and waits for it: the
    /// allocation-free form of [`download`](Self::download).
    pub fn download_into(&self, src: &DeviceTensor<f32>, dst: &mut [f32]) -> Result<(), CudaError> {
        crate::error::check_len("download_into", "dst", src.len, dst.len())?;
        if src.len == 0 {
            return Ok(());
        }
        self.stream
            .memcpy_dtoh(&src.data.slice(..src.len), dst)
            .map_err(CudaError::driver("cuMemcpyDtoH"))?;
        self.synchronize()
    }

    /// Uploads a packed batch's token ids. Ids are checked against the vocabulary by the
    /// embedding launcher's caller (the kernel writes NaN rows for ids out of range).
    pub fn upload_token_ids(&self, token_ids: &[u32]) -> Result<TokenIds, CudaError> {
        let mut device = self.alloc_zeros::<u32>(token_ids.len().max(1))?;
        if !token_ids.is_empty() {
            self.stream
                .memcpy_htod(token_ids, &mut device)
                .map_err(CudaError::driver("cuMemcpyHtoD"))?;
        }
        Ok(TokenIds {
            device,
            len: token_ids.len(),
        })
    }
}

/// `EMBER_CUDA_GEMM`: unset → [`GemmFamily::default_for`] `arch`; else [`GemmFamily::parse`]'s
/// family, which must run on `arch`. Anything else is an error.
fn gemm_family_setting(arch: Arch) -> Result<GemmFamily, CudaError> {
    const VARIABLE: &str = "EMBER_CUDA_GEMM";
    let Some(value) = std::env::var_os(VARIABLE) else {
        return Ok(GemmFamily::default_for(arch));
    };
    let invalid = |reason: String| CudaError::InvalidSetting {
        variable: VARIABLE,
        value: value.to_string_lossy().into_owned(),
        reason,
    };
    match value.to_str().and_then(GemmFamily::parse) {
        Some(family) if family.runs_on(arch) => Ok(family),
        Some(_) => Err(invalid(format!(
            "Hopper's wgmma kernels need sm_90; this device is {arch}"
        ))),
        None => Err(invalid(
            "expected `mma`, `wgmma`, `wgmma-tma`, `wgmma-tma-occ2`, `wgmma-pingpong`, \
             `wgmma-pingpong-mc` or `wgmma-tma-store`"
                .to_owned(),
        )),
    }
}

/// `map[key]`, made by `make` the first time (outside the lock, so that `make` may take other
/// locks; of two threads that both made it, the first to store it wins).
fn cached<V: Clone>(
    map: &Mutex<HashMap<&'static str, V>>,
    key: &'static str,
    make: impl FnOnce() -> Result<V, CudaError>,
) -> Result<V, CudaError> {
    let lock = || map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(value) = lock().get(key) {
        return Ok(value.clone());
    }
    let value = make()?;
    Ok(lock().entry(key).or_insert(value).clone())
}

/// `seq_offsets` as u32 and the longest sequence, or `Err(InvalidOffsets)` unless they start
/// at 0, never decrease and fit in u32. Empty sequences are allowed (attention skips them;
/// pooling refuses them).
pub fn check_offsets(
    op: &'static str,
    seq_offsets: &[usize],
) -> Result<(Vec<u32>, usize), CudaError> {
    let bad = |reason: String| CudaError::InvalidOffsets { op, reason };
    let Some(&first) = seq_offsets.first() else {
        return Err(bad("empty (needs at least [0])".into()));
    };
    if first != 0 {
        return Err(bad(format!("starts at {first}, not 0")));
    }
    if let Some(i) = seq_offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(bad(format!(
            "decreasing at index {}: {} > {}",
            i + 1,
            seq_offsets[i],
            seq_offsets[i + 1]
        )));
    }
    let host = seq_offsets
        .iter()
        .map(|&o| u32::try_from(o))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| {
            bad(format!(
                "{} does not fit in u32",
                seq_offsets[seq_offsets.len() - 1]
            ))
        })?;
    let max_len = seq_offsets
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    Ok((host, max_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_checked() {
        assert_eq!(check_offsets("t", &[0]).unwrap(), (vec![0], 0));
        assert_eq!(
            check_offsets("t", &[0, 3, 3, 10]).unwrap(),
            (vec![0, 3, 3, 10], 7)
        );
        for bad in [&[][..], &[1, 2], &[0, 4, 2], &[0, 1 << 33]] {
            let err = check_offsets("t", bad).unwrap_err();
            assert!(
                matches!(err, CudaError::InvalidOffsets { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn elements_round_to_nearest_even_and_decode_exactly() {
        // 1 + 2^-8 is halfway between two bf16 values: ties to even (1.0).
        assert_eq!(
            half::bf16::decode(half::bf16::encode(1.0 + 1.0 / 256.0)),
            1.0
        );
        assert_eq!(
            half::bf16::decode(half::bf16::encode(1.0 + 3.0 / 256.0)),
            1.0 + 4.0 / 256.0
        );
        assert_eq!(half::f16::decode(half::f16::encode(0.1)), 0.099975586);
        assert!(half::bf16::decode(half::bf16::encode(f32::NAN)).is_nan());
        assert_eq!(f32::decode(f32::encode(0.1)), 0.1);
    }
}
