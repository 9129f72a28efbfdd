//! Kernel launches whose arguments live on the stack.
//!
//! cudarc's `CudaStream::launch_builder` keeps a launch's argument pointers (and its
//! stream-ordering events) in `Vec`s, so every launch allocated on the host: 135 allocations a
//! call for all-MiniLM-L6-v2 batches, where Ember's encode is meant to allocate nothing once
//! warm (`tests/tests/cuda_zero_alloc.rs`). [`Launch`] holds up to [`MAX_ARGS`] arguments in
//! fixed arrays and calls `cuLaunchKernel` itself. Buffers are passed through cudarc's
//! `DevicePtr`/`DevicePtrMut`, whose guards (kept until the launch is queued) do what the
//! builder's event lists did when a context orders several streams; Ember uses one.

use std::ffi::c_void;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    SyncOnDrop,
};

use crate::error::CudaError;

/// The most arguments one launch takes (the embedding kernel's 15 are the most today; more
/// is an `InvalidShape` error from [`Launch::launch`], not a crash).
pub(crate) const MAX_ARGS: usize = 16;

/// One argument: a pointer to a caller's value, or a buffer's device address (held here, so
/// that the pointer handed to the driver stays valid until the launch is queued).
#[derive(Clone, Copy)]
enum Arg {
    Value(*mut c_void),
    Buffer(CUdeviceptr),
}

/// A kernel launch being assembled: `Launch::new(stream, &function)`, then one call per kernel
/// parameter in order ([`value`](Self::value) for a scalar or a struct passed by value,
/// [`input`](Self::input) for a buffer the kernel reads, [`output`](Self::output) for one it
/// writes), then `unsafe { launch.launch("launch NAME", config) }`.
/// `'a` ties the stream, the kernel, the values pointed to and the buffers to the launch.
pub(crate) struct Launch<'a> {
    stream: &'a CudaStream,
    function: &'a CudaFunction,
    args: [Arg; MAX_ARGS],
    /// The buffers' stream-ordering guards (no-ops on a single stream), dropped after the launch.
    guards: [Option<SyncOnDrop<'a>>; MAX_ARGS],
    len: usize,
    /// Set when more than [`MAX_ARGS`] arguments were pushed (reported by `launch`).
    overflow: bool,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(stream: &'a CudaStream, function: &'a CudaFunction) -> Self {
        Launch {
            stream,
            function,
            args: [Arg::Buffer(0); MAX_ARGS],
            guards: [const { None }; MAX_ARGS],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, arg: Arg, guard: Option<SyncOnDrop<'a>>) -> &mut Self {
        if self.len == MAX_ARGS {
            self.overflow = true;
            return self;
        }
        self.args[self.len] = arg;
        self.guards[self.len] = guard;
        self.len += 1;
        self
    }

    /// A parameter passed by value (an `int`, a `float`, a device address as `u64`, a
    /// `__grid_constant__` tensor map).
    pub(crate) fn value<T: DeviceRepr>(&mut self, value: &'a T) -> &mut Self {
        self.push(Arg::Value(value as *const T as *mut c_void), None)
    }

    /// A buffer the kernel only reads.
    pub(crate) fn input<T>(&mut self, buffer: &'a CudaSlice<T>) -> &mut Self {
        let (ptr, guard) = buffer.device_ptr(self.stream);
        self.push(Arg::Buffer(ptr), Some(guard))
    }

    /// A buffer the kernel writes (and may read).
    pub(crate) fn output<T>(&mut self, buffer: &'a mut CudaSlice<T>) -> &mut Self {
        let (ptr, guard) = buffer.device_ptr_mut(self.stream);
        self.push(Arg::Buffer(ptr), Some(guard))
    }

    /// Queues the kernel on the stream.
    ///
    /// # Safety
    /// The arguments must match the kernel's parameters in number, order and type, and every
    /// buffer must hold what the kernel touches for `config`.
    pub(crate) unsafe fn launch(
        mut self,
        what: &'static str,
        config: LaunchConfig,
    ) -> Result<(), CudaError> {
        if self.overflow {
            return Err(CudaError::InvalidShape {
                op: what,
                reason: format!("more than {MAX_ARGS} kernel arguments"),
            });
        }
        self.stream
            .context()
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))?;
        let mut pointers = [std::ptr::null_mut::<c_void>(); MAX_ARGS];
        for (pointer, arg) in pointers.iter_mut().zip(&mut self.args[..self.len]) {
            *pointer = match arg {
                Arg::Value(value) => *value,
                Arg::Buffer(address) => address as *mut CUdeviceptr as *mut c_void,
            };
        }
        // SAFETY: `function` is a live kernel of the stream's context; every pointer is to a
        // value that outlives this call (`'a`, or `self.args`, borrowed until it returns), and
        // the caller vouches that they match the kernel's parameters.
        unsafe {
            cudarc::driver::result::launch_kernel(
                self.function.cu_function(),
                config.grid_dim,
                config.block_dim,
                config.shared_mem_bytes,
                self.stream.cu_stream(),
                &mut pointers[..self.len],
            )
        }
        .map_err(CudaError::driver(what))
        // The guards drop here, after the launch was queued.
    }
}
