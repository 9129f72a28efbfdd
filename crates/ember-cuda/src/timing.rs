//! GPU time of queued calls, for benchmarks: [`CudaDevice::time_each_ms`].
//!
//! Timing one call between two CUDA events on an idle GPU also times the host: the start event
//! completes at once, and the kernel starts only when the host has finished queueing it (for a
//! Rust launcher a few µs, for a PyTorch call from Python 10 µs or more, against kernels of
//! 10–60 µs). So the stream is held shut first: it waits on a word of host memory
//! (`cuStreamWaitValue32`) while the host queues every call with an event between each two;
//! then the host opens the gate and the calls run back to back, each timed from the event
//! before it to the event after it, with no host time inside.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::sys;
use cudarc::driver::{CudaEvent, CudaStream};

use crate::device::CudaDevice;
use crate::error::CudaError;

/// What [`CudaDevice::time_each_ms`] measured.
#[derive(Clone, Debug)]
pub struct CallTimes {
    /// GPU milliseconds of each call, in call order.
    pub ms: Vec<f32>,
    /// Whether every call was queued behind the closed gate, so that no host time falls inside
    /// a call's time. `false` where the driver refused the gate (the emulated driver; a driver
    /// without stream memory operations), where the stream was found to have run ahead of the
    /// host anyway, or where the watchdog had to open it ([`GATE_WATCHDOG`]): then each time may
    /// include the host's queueing of its call, as with two events around one call.
    pub gated: bool,
}

impl CallTimes {
    /// The median time (the upper of the two middle ones for an even count); `None` for no call.
    pub fn median_ms(&self) -> Option<f32> {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f32::total_cmp);
        sorted.get(sorted.len() / 2).copied()
    }
}

/// How long the gate may stay shut: past this a watchdog thread opens it, so that a call that
/// waits for the stream (a synchronous copy, a synchronisation inside `f`, a kernel compiled on
/// first use) cannot hang the process; its times are then reported as not gated, and the gate is
/// not used again in this process (each later timing would lose as long again).
pub const GATE_WATCHDOG: Duration = Duration::from_secs(10);

/// Set once the watchdog has had to open a gate.
static GATE_DISABLED: AtomicBool = AtomicBool::new(false);

impl CudaDevice {
    /// Queues `count` calls of `f(i)` (each must only queue work on this device's stream, never
    /// wait for it) and returns the GPU time of each: see the module's documentation. Waits for
    /// the work. An error from `f` stops the queueing and is returned once the gate is open again.
    pub fn time_each_ms(
        &self,
        count: usize,
        mut f: impl FnMut(usize) -> Result<(), CudaError>,
    ) -> Result<CallTimes, CudaError> {
        let stream = self.stream();
        let context = stream.context();
        context
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))?;
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let events = (0..=count)
            .map(|_| context.new_event(timing))
            .collect::<Result<Vec<CudaEvent>, _>>()
            .map_err(CudaError::driver("cuEventCreate"))?;
        let gate = Gate::close(stream);
        let record = |event: &CudaEvent| {
            event
                .record(stream)
                .map_err(CudaError::driver("cuEventRecord"))
        };
        let queued = record(&events[0]).and_then(|()| {
            for i in 0..count {
                f(i)?;
                record(&events[i + 1])?;
            }
            Ok(())
        });
        // Still shut when the host is done: the first event has not run. (Asked before opening.)
        let held = match &gate {
            Some(_) => !events[0]
                .try_is_complete()
                .map_err(CudaError::driver("cuEventQuery"))?,
            None => false,
        };
        let opened_in_time = gate.is_some_and(Gate::open);
        queued?;
        events[count]
            .synchronize()
            .map_err(CudaError::driver("cuEventSynchronize"))?;
        let ms = events
            .windows(2)
            .map(|pair| pair[0].elapsed_ms(&pair[1]))
            .collect::<Result<Vec<f32>, _>>()
            .map_err(CudaError::driver("cuEventElapsedTime"))?;
        Ok(CallTimes {
            ms,
            gated: held && opened_in_time,
        })
    }
}

/// A stream held shut on a word of mapped, pinned host memory: `cuStreamWaitValue32(≥ 1)`
/// queued on it, the word 0 until [`Gate::open`] (or the watchdog, or `Drop`) stores 1.
struct Gate {
    host: *mut std::ffi::c_void,
    stream: Arc<CudaStream>,
    /// Told when the host opens the gate; the watchdog thread opens it itself past
    /// [`GATE_WATCHDOG`] and says so by returning `true`.
    opened: Option<mpsc::Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<bool>>,
}

impl Gate {
    /// Queues the wait, or `None` where the driver refuses a step (nothing is then queued).
    fn close(stream: &Arc<CudaStream>) -> Option<Gate> {
        if GATE_DISABLED.load(Ordering::Relaxed) {
            return None;
        }
        let mut host: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: a 4-byte allocation of pinned host memory mapped into the device's address
        // space; `host` receives its address. The context is current (time_each_ms bound it).
        let status = unsafe {
            sys::cuMemHostAlloc(
                &mut host,
                std::mem::size_of::<u32>(),
                sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS || host.is_null() {
            return None;
        }
        // SAFETY: `host` is a live, 4-byte aligned allocation of 4 bytes (page-aligned by the
        // driver), only ever accessed through this atomic.
        unsafe { AtomicU32::from_ptr(host.cast()) }.store(0, Ordering::SeqCst);
        let mut gate = Gate {
            host,
            stream: Arc::clone(stream),
            opened: None,
            watchdog: None,
        };
        let mut device_ptr: sys::CUdeviceptr = 0;
        // SAFETY: `host` was allocated with CU_MEMHOSTALLOC_DEVICEMAP in this context.
        let status = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device_ptr, host, 0) };
        if status != sys::CUresult::CUDA_SUCCESS {
            return None; // Drop frees the memory
        }
        // SAFETY: `device_ptr` maps the live 4-byte word; the stream is live. The wait blocks
        // the stream (not the host) until the word is ≥ 1.
        let status = unsafe {
            sys::cuStreamWaitValue32_v2(
                stream.cu_stream(),
                device_ptr,
                1,
                sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS {
            return None;
        }
        let (opened, wait) = mpsc::channel::<()>();
        let word = host as usize;
        let watchdog = std::thread::Builder::new()
            .name("ember-gate-watchdog".to_owned())
            .spawn(move || {
                if wait.recv_timeout(GATE_WATCHDOG).is_ok() {
                    return false;
                }
                // SAFETY: the Gate that owns the word joins this thread before freeing it.
                unsafe { AtomicU32::from_ptr(word as *mut u32) }.store(1, Ordering::SeqCst);
                GATE_DISABLED.store(true, Ordering::Relaxed);
                eprintln!(
                    "ember-cuda: time_each_ms: the host still queued after {GATE_WATCHDOG:?}; gate \
                     opened, and timings in this process are not gated from now on"
                );
                true
            });
        match watchdog {
            Ok(handle) => {
                gate.opened = Some(opened);
                gate.watchdog = Some(handle);
                Some(gate)
            }
            // No watchdog, no gate: open it now (Drop) and time ungated.
            Err(_) => None,
        }
    }

    /// Opens the gate; `true` if it was still the host's to open (the watchdog had not).
    fn open(mut self) -> bool {
        self.release()
    }

    fn release(&mut self) -> bool {
        // SAFETY: the word is live until Drop frees it, after this.
        unsafe { AtomicU32::from_ptr(self.host.cast()) }.store(1, Ordering::SeqCst);
        if let Some(opened) = self.opened.take() {
            let _ = opened.send(());
        }
        match self.watchdog.take() {
            Some(handle) => !handle.join().unwrap_or(true),
            None => true,
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.release();
        // The stream must be past the wait before its word is freed.
        let _ = self.stream.synchronize();
        // SAFETY: allocated by cuMemHostAlloc in Gate::close, freed once.
        unsafe { sys::cuMemFreeHost(self.host) };
    }
}
