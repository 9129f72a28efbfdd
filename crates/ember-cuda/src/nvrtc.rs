//! NVRTC, NVIDIA's run-time CUDA compiler, loaded with `dlopen` from an explicit path.
//!
//! NVRTC needs no GPU, driver or toolkit, only `libnvrtc.so` (and the `libnvrtc-builtins` beside
//! it). It is looked for, in order:
//! 1. `$EMBER_NVRTC_LIB` (a file; when set, nothing else is tried);
//! 2. `scripts/install-nvrtc.sh`'s install: `$EMBER_NVRTC_DIR`, else
//!    `~/.cache/ember/nvrtc`, then `nvidia/cuda_nvrtc/lib/libnvrtc.so.12` inside it (the PyPI
//!    wheel `nvidia-cuda-nvrtc-cu12` installed with `pip --target`);
//! 3. the dynamic linker's search path (`libnvrtc.so.13`, `libnvrtc.so.12`, `libnvrtc.so`), then
//!    `/usr/local/cuda/lib64`.
//!
//! Kernels are compiled to CUBIN for one real architecture (`sm_80`, `sm_90`, …), never to PTX:
//! a CUBIN loads on any driver that knows the architecture, whereas PTX from a newer NVRTC is
//! refused by an older driver.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::CudaError;

/// A GPU architecture, `sm_{major}{minor}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// Compute capability, major (8 for Ampere, 9 for Hopper).
    pub major: u32,
    /// Compute capability, minor.
    pub minor: u32,
}

impl Arch {
    /// Ampere (A100): the oldest architecture Ember's kernels support.
    pub const SM80: Arch = Arch { major: 8, minor: 0 };
    /// Hopper (H100, H200).
    pub const SM90: Arch = Arch { major: 9, minor: 0 };

    /// NVRTC's `--gpu-architecture` for this architecture: `sm_{major}{minor}`, except Hopper's
    /// `sm_90a`, which adds the arch-specific instructions `kernels/gemm_sm90.cu` needs
    /// (`wgmma`). An `sm_90a` CUBIN loads on compute capability 9.0 only, which is what
    /// [`Arch::SM90`] stands for.
    pub fn nvrtc_target(self) -> String {
        if self == Arch::SM90 {
            "sm_90a".to_owned()
        } else {
            self.to_string()
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

/// What one compilation produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The CUBIN (an ELF image) for the requested architecture.
    pub cubin: Vec<u8>,
    /// NVRTC's program log: warnings, and ptxas's per-kernel resource report
    /// (registers, shared memory, spills).
    pub log: String,
}

type NvrtcResult = c_int;
type Program = *mut std::ffi::c_void;

/// The NVRTC entry points Ember uses, resolved once.
struct Api {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcResult,
    get_error_string: unsafe extern "C" fn(NvrtcResult) -> *const c_char,
    create_program: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    destroy_program: unsafe extern "C" fn(*mut Program) -> NvrtcResult,
    compile_program: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
    get_program_log_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    get_program_log: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    get_cubin_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    get_cubin: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
}

/// A loaded NVRTC library.
pub struct Nvrtc {
    api: Api,
    path: PathBuf,
    version: (i32, i32),
    identity: String,
    // Keeps the function pointers in `api` valid; dropped last.
    _library: libloading::Library,
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvrtc")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

/// The wheel's library inside a `pip install --target` folder.
const WHEEL_LIB: &str = "nvidia/cuda_nvrtc/lib/libnvrtc.so.12";

/// Where `scripts/install-nvrtc.sh` installs by default: `$EMBER_NVRTC_DIR`, else
/// `$XDG_CACHE_HOME/ember/nvrtc`, else `~/.cache/ember/nvrtc`.
pub fn default_install_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EMBER_NVRTC_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("ember").join("nvrtc"))
}

/// The candidates of the module docs, in order. With `EMBER_NVRTC_LIB` set, only that one.
pub fn candidates() -> Vec<PathBuf> {
    if let Some(lib) = std::env::var_os("EMBER_NVRTC_LIB") {
        return vec![PathBuf::from(lib)];
    }
    let mut found = Vec::new();
    if let Some(dir) = default_install_dir() {
        found.push(dir.join(WHEEL_LIB));
    }
    // Bare names go through the dynamic linker's search (LD_LIBRARY_PATH, ld.so.cache).
    for name in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"] {
        found.push(PathBuf::from(name));
    }
    found.push(PathBuf::from("/usr/local/cuda/lib64/libnvrtc.so"));
    found
}

/// [`Nvrtc::identity`] of the library loaded from `path`: a bare name (found by the dynamic
/// linker) is resolved to the file the process mapped for it (`/proc/self/maps`); a file that
/// cannot be resolved or read is identified by its name alone.
fn library_identity(path: &Path) -> String {
    let file = if path.components().count() > 1 {
        Some(path.to_owned())
    } else {
        // `libnvrtc.so.12` maps as its link's target (`libnvrtc.so.12.9.86`): match up to `.so`.
        let name = path.as_os_str().to_string_lossy();
        let stem = name
            .find(".so")
            .map_or(&*name, |end| &name[..end + 3])
            .to_owned();
        std::fs::read_to_string("/proc/self/maps")
            .ok()
            .and_then(|maps| {
                maps.lines()
                    .filter_map(|line| line.split_whitespace().nth(5))
                    .map(PathBuf::from)
                    .find(|mapped| {
                        mapped
                            .file_name()
                            .is_some_and(|f| f.to_string_lossy().starts_with(&stem))
                    })
            })
    };
    let Some(file) = file.and_then(|f| f.canonicalize().ok()) else {
        return path.display().to_string();
    };
    let (len, modified) = std::fs::metadata(&file).map_or((0, 0), |m| {
        let modified = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        (m.len(), modified)
    });
    format!("{}:{len}:{modified}", file.display())
}

impl Nvrtc {
    /// The process's NVRTC: the first of [`candidates`] that loads, found once. A failure is
    /// not cached, so installing NVRTC later in the process is seen.
    pub fn get() -> Result<&'static Nvrtc, CudaError> {
        static NVRTC: OnceLock<Nvrtc> = OnceLock::new();
        if let Some(nvrtc) = NVRTC.get() {
            return Ok(nvrtc);
        }
        let candidates = candidates();
        let explicit = std::env::var_os("EMBER_NVRTC_LIB").is_some();
        let mut tried = Vec::new();
        for path in &candidates {
            // A path with a directory that does not exist is skipped quietly; a bare name is
            // for the dynamic linker to find.
            if path.components().count() > 1 && !path.exists() && !explicit {
                tried.push(format!("{} (absent)", path.display()));
                continue;
            }
            match Nvrtc::load(path) {
                Ok(nvrtc) => return Ok(NVRTC.get_or_init(|| nvrtc)),
                Err(err) if explicit => return Err(err),
                Err(err) => tried.push(format!("{} ({err})", path.display())),
            }
        }
        Err(CudaError::NoNvrtc {
            tried: tried.join("; "),
        })
    }

    /// Loads NVRTC from `path` (a file, or a bare name for the dynamic linker).
    pub fn load(path: &Path) -> Result<Nvrtc, CudaError> {
        let fail = |reason: String| CudaError::NvrtcLoad {
            path: path.to_owned(),
            reason,
        };
        // SAFETY: loading a library runs its initialisers; libnvrtc's only set up its own state.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| {
            // libloading's message is "dlopen failed"; dlerror()'s text is its source.
            fail(match std::error::Error::source(&e) {
                Some(source) => source.to_string(),
                None => e.to_string(),
            })
        })?;
        macro_rules! symbol {
            ($name:literal) => {{
                // SAFETY: the symbol is the NVRTC function of that name, whose C signature
                // (nvrtc.h, stable since CUDA 11) is the field's type; the pointer stays valid
                // while `library` is alive, which `Nvrtc` guarantees by owning it.
                let symbol = unsafe { library.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| fail(format!("missing {}: {e}", $name)))?;
                *symbol
            }};
        }
        let api = Api {
            version: symbol!("nvrtcVersion"),
            get_error_string: symbol!("nvrtcGetErrorString"),
            create_program: symbol!("nvrtcCreateProgram"),
            destroy_program: symbol!("nvrtcDestroyProgram"),
            compile_program: symbol!("nvrtcCompileProgram"),
            get_program_log_size: symbol!("nvrtcGetProgramLogSize"),
            get_program_log: symbol!("nvrtcGetProgramLog"),
            get_cubin_size: symbol!("nvrtcGetCUBINSize"),
            get_cubin: symbol!("nvrtcGetCUBIN"),
        };
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two valid out-pointers.
        let status = unsafe { (api.version)(&mut major, &mut minor) };
        if status != 0 {
            return Err(fail(format!("nvrtcVersion returned {status}")));
        }
        Ok(Nvrtc {
            api,
            path: path.to_owned(),
            version: (major, minor),
            identity: library_identity(path),
            _library: library,
        })
    }

    /// The library as it was found (a path, or the bare name the dynamic linker resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// NVRTC's CUDA version, e.g. `(12, 9)`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Which build of NVRTC this is, beyond [`Nvrtc::version`] (12.9.41 and 12.9.86 both say
    /// 12.9): the loaded file's canonical path, size and modification time, for the on-disk
    /// cache's key ([`crate::kernel_cache`]), so that replacing the library (a ptxas fix) is a
    /// new key rather than a stale hit.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn check(&self, call: &'static str, status: NvrtcResult) -> Result<(), CudaError> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any value.
        let message = unsafe { CStr::from_ptr((self.api.get_error_string)(status)) }
            .to_string_lossy()
            .into_owned();
        Err(CudaError::Nvrtc { call, message })
    }

    /// The options [`Nvrtc::compile`] passes for `arch` (also part of the on-disk cache's key,
    /// [`crate::kernel_cache`]).
    pub fn options(arch: Arch) -> [String; 4] {
        [
            format!("--gpu-architecture={}", arch.nvrtc_target()),
            "--std=c++17".to_owned(),
            // Line tables for profilers; no effect on the code.
            "--generate-line-info".to_owned(),
            // ptxas's resource report (registers, spills) goes into the log.
            "--ptxas-options=-v".to_owned(),
        ]
    }

    /// Compiles `source` (named `file` in messages) with `headers` (`(include name, text)`,
    /// found by `#include "name"`) to a CUBIN for `arch`. A compilation error is
    /// `Err(Compile)` with NVRTC's log.
    pub fn compile(
        &self,
        file: &'static str,
        source: &str,
        headers: &[(&str, &str)],
        arch: Arch,
    ) -> Result<Compiled, CudaError> {
        let c_string = |text: &str, what: &'static str| {
            CString::new(text).map_err(|_| CudaError::Nvrtc {
                call: "nvrtcCreateProgram",
                message: format!("{what} contains a NUL byte"),
            })
        };
        let source = c_string(source, "the source")?;
        let name = c_string(file, "the file name")?;
        let header_texts = headers
            .iter()
            .map(|(_, text)| c_string(text, "a header"))
            .collect::<Result<Vec<_>, _>>()?;
        let header_names = headers
            .iter()
            .map(|(name, _)| c_string(name, "a header name"))
            .collect::<Result<Vec<_>, _>>()?;
        let header_text_ptrs: Vec<*const c_char> =
            header_texts.iter().map(|s| s.as_ptr()).collect();
        let header_name_ptrs: Vec<*const c_char> =
            header_names.iter().map(|s| s.as_ptr()).collect();
        let options = Self::options(arch)
            .iter()
            .map(|o| c_string(o, "an option"))
            .collect::<Result<Vec<_>, _>>()?;
        let option_ptrs: Vec<*const c_char> = options.iter().map(|s| s.as_ptr()).collect();

        let mut program: Program = std::ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string (owned above, alive until the
        // end of this function) and the two header arrays have `headers.len()` entries.
        let status = unsafe {
            (self.api.create_program)(
                &mut program,
                source.as_ptr(),
                name.as_ptr(),
                headers.len() as c_int,
                header_text_ptrs.as_ptr(),
                header_name_ptrs.as_ptr(),
            )
        };
        self.check("nvrtcCreateProgram", status)?;
        let program = ProgramGuard {
            nvrtc: self,
            program,
        };
        // SAFETY: a program just created; `option_ptrs` holds live C strings.
        let status = unsafe {
            (self.api.compile_program)(
                program.program,
                option_ptrs.len() as c_int,
                option_ptrs.as_ptr(),
            )
        };
        let log = program.log()?;
        if status != 0 {
            return Err(CudaError::Compile {
                file,
                arch: arch.nvrtc_target(),
                log,
            });
        }
        let mut size = 0usize;
        // SAFETY: a compiled program and a valid out-pointer.
        self.check("nvrtcGetCUBINSize", unsafe {
            (self.api.get_cubin_size)(program.program, &mut size)
        })?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` has the `size` bytes NVRTC just reported.
        self.check("nvrtcGetCUBIN", unsafe {
            (self.api.get_cubin)(program.program, cubin.as_mut_ptr().cast())
        })?;
        Ok(Compiled { cubin, log })
    }
}

/// Destroys the program on every path out of [`Nvrtc::compile`].
struct ProgramGuard<'a> {
    nvrtc: &'a Nvrtc,
    program: Program,
}

impl ProgramGuard<'_> {
    fn log(&self) -> Result<String, CudaError> {
        let mut size = 0usize;
        // SAFETY: a live program and a valid out-pointer.
        self.nvrtc.check("nvrtcGetProgramLogSize", unsafe {
            (self.nvrtc.api.get_program_log_size)(self.program, &mut size)
        })?;
        let mut log = vec![0u8; size.max(1)];
        // SAFETY: `log` has room for the `size` bytes (NUL included) NVRTC reported.
        self.nvrtc.check("nvrtcGetProgramLog", unsafe {
            (self.nvrtc.api.get_program_log)(self.program, log.as_mut_ptr().cast())
        })?;
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        Ok(String::from_utf8_lossy(&log[..end]).into_owned())
    }
}

impl Drop for ProgramGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is destroyed once, here.
        unsafe {
            (self.nvrtc.api.destroy_program)(&mut self.program);
        }
    }
}
