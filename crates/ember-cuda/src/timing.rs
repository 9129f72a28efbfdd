//! GPU time of queued calls, for benchmarks: [`CudaDevice::time_each_ms`].
//!
//! Timing one call between two CUDA events on an idle GPU also times the host: the start event
//! completes at once, and the kernel starts only when the host has finished queueing it (for a
//! Rust launcher a few µs, for a PyTorch call from Python 10 µs or more, against kernels of
//! 10–60 µs). So the stream is held shut first: it waits on a word of host memory
//! (`cuStreamWaitValue32`) while the host queues the calls with an event between each two; then
//! the host opens the gate and the calls run back to back, each timed from the event before it
//! to the event after it, with no host time inside. The calls go in groups of at most
//! [`GATE_GROUP`], each behind a gate of its own (the host queues the next group while the last
//! one runs), so that the launch queue never fills behind a closed gate (the driver blocks
//! `cuLaunchKernel` once about a thousand launches are pending).

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
    /// Whether every call was queued behind a closed gate, so that no host time falls inside
    /// a call's time. `false` where the driver refused the gate (a driver without stream memory
    /// operations), where a group's stream was found to have run ahead of
    /// the host anyway, or where the watchdog had to open it ([`GATE_WATCHDOG`]): then each
    /// time may include the host's queueing of its call, as with two events around one call.
    pub gated: bool,
}

impl CallTimes {
    /// The median time ([`median`]); `None` for no call.
    pub fn median_ms(&self) -> Option<f32> {
        median(&self.ms)
    }
}

/// The median of `times` (the upper of the two middle ones for an even count); `None` if empty.
pub fn median(times: &[f32]) -> Option<f32> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// The most calls queued behind one gate. Each call may be several launches (cuBLAS's) and is
/// followed by an event, and the next group is queued while this one runs: well under the
/// driver's ~1,000 pending launches.
pub const GATE_GROUP: usize = 64;

/// How long one gate may stay shut: past this a watchdog thread opens every gate, so that a
/// call that waits for the stream (a synchronous copy, a synchronisation inside `f`, a kernel
/// compiled on first use) cannot hang the process; the times are then reported as not gated,
/// and the gate is not used again in this process (each later timing would lose as long again).
/// Queueing a group takes well under a millisecond.
pub const GATE_WATCHDOG: Duration = Duration::from_secs(3);

/// The watchdog on the emulated driver (crates/ember-cuda/emu/driver), where a group's kernels run
/// on the CPU inside the next driver call, between two openings: under 0.8 s for 64 small GEMMs
/// (measured before the emulated wgmma got 4× faster), so 10 s leaves a loaded CI machine room.
/// A kernel compiled on first use inside a group can take longer (NVRTC took 14.6 s for
/// gemm_sm90.cu on 2 cores): there, run each call once before timing it, as backend_ops and
/// gemm_bench do, or the times come back not gated.
const GATE_WATCHDOG_EMULATED: Duration = Duration::from_secs(10);

/// Set once the watchdog has had to open a gate.
static GATE_DISABLED: AtomicBool = AtomicBool::new(false);

impl CudaDevice {
    /// Queues `count` calls of `f(i)` (each must only queue work on this device's stream, never
    /// wait for it) and returns the GPU time of each: see the module's documentation. Waits for
    /// the work. An error from `f` stops the queueing and is returned once the gates are open.
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
        let new_event = || {
            context
                .new_event(timing)
                .map_err(CudaError::driver("cuEventCreate"))
        };
        let record = |event: &CudaEvent| {
            event
                .record(stream)
                .map_err(CudaError::driver("cuEventRecord"))
        };
        // Per group: its first event, then one after each call. (Declared before the gate, so
        // that on an early return the gate is dropped, and opened, first.)
        let mut groups: Vec<Vec<CudaEvent>> = Vec::new();
        let watchdog = if self.name().contains("emulated") {
            GATE_WATCHDOG_EMULATED
        } else {
            GATE_WATCHDOG
        };
        let mut gate = Gate::new(stream, watchdog);
        let mut held_all = gate.is_some();
        for (g, first) in (0..count).step_by(GATE_GROUP).enumerate() {
            let calls = first..count.min(first + GATE_GROUP);
            let value = u32::try_from(g + 1).unwrap_or(u32::MAX); // close refuses past 2^31
            if let Some(closed) = gate.as_mut() {
                if !closed.close(value) {
                    gate = None; // Drop opens it: the rest is timed without
                    held_all = false;
                }
            }
            let mut events = vec![new_event()?];
            record(&events[0])?;
            for i in calls {
                f(i)?;
                let event = new_event()?;
                record(&event)?;
                events.push(event);
            }
            if let Some(open) = gate.as_mut() {
                // Still shut when the host is done: the group's first event has not run.
                held_all &= !events[0]
                    .try_is_complete()
                    .map_err(CudaError::driver("cuEventQuery"))?;
                open.open(value);
            }
            groups.push(events);
        }
        let watchdog_fired = gate.map(Gate::finish).unwrap_or(false);
        if let Some(last) = groups.last().and_then(|events| events.last()) {
            last.synchronize()
                .map_err(CudaError::driver("cuEventSynchronize"))?;
        }
        let mut ms = Vec::with_capacity(count);
        for events in &groups {
            for pair in events.windows(2) {
                ms.push(
                    pair[0]
                        .elapsed_ms(&pair[1])
                        .map_err(CudaError::driver("cuEventElapsedTime"))?,
                );
            }
        }
        Ok(CallTimes {
            ms,
            gated: held_all && !watchdog_fired,
        })
    }
}

/// A word of mapped, pinned host memory that the stream waits on: group `g`'s calls are queued
/// behind `cuStreamWaitValue32(word ≥ g + 1)` ([`Gate::close`]), and the host stores `g + 1`
/// once it has queued them ([`Gate::open`]). Dropping it opens every gate (stores the last value
/// closed), waits for the stream to pass them, then frees the word.
///
/// `CU_STREAM_WAIT_VALUE_GEQ` is cyclic: a wait for `v` is met when `(word - v) as i32 >= 0`. So
/// the word only ever holds values a wait was queued for (1, 2, … well below 2^31): a store of
/// `u32::MAX` "to open everything" is *before* 1 in that order and met no wait (it hung an H200
/// whenever the GPU read the word only after it, session 16).
struct Gate {
    host: *mut std::ffi::c_void,
    device_ptr: sys::CUdeviceptr,
    stream: Arc<CudaStream>,
    /// The latest value a wait was queued for (0: none), shared with the watchdog, which opens up
    /// to it (and sets [`GATE_DISABLED`], after which [`Gate::close`] queues no wait).
    closed: Arc<AtomicU32>,
    /// Told at each opening (and closed on Drop); past [`GATE_WATCHDOG`] without a message the
    /// watchdog thread opens every gate itself and returns `true`.
    opened: Option<mpsc::Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<bool>>,
}

impl Gate {
    /// The word and its watchdog, or `None` where the driver refuses a step.
    fn new(stream: &Arc<CudaStream>, limit: Duration) -> Option<Gate> {
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
            device_ptr: 0,
            stream: Arc::clone(stream),
            closed: Arc::new(AtomicU32::new(0)),
            opened: None,
            watchdog: None,
        };
        // SAFETY: `host` was allocated with CU_MEMHOSTALLOC_DEVICEMAP in this context.
        let status = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut gate.device_ptr, host, 0) };
        if status != sys::CUresult::CUDA_SUCCESS {
            return None; // Drop frees the memory
        }
        let (opened, wait) = mpsc::channel::<()>();
        let word = host as usize;
        let closed = Arc::clone(&gate.closed);
        let watchdog = std::thread::Builder::new()
            .name("ember-gate-watchdog".to_owned())
            .spawn(move || loop {
                match wait.recv_timeout(limit) {
                    Ok(()) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // GATE_DISABLED before reading `closed` (both SeqCst; `close` does the
                        // reverse): a wait queued after this store is refused, one queued before
                        // it has its value in `closed` and is opened here.
                        GATE_DISABLED.store(true, Ordering::SeqCst);
                        let last = closed.load(Ordering::SeqCst);
                        // SAFETY: the Gate that owns the word joins this thread before freeing it.
                        unsafe { AtomicU32::from_ptr(word as *mut u32) }
                            .fetch_max(last, Ordering::SeqCst);
                        eprintln!(
                            "ember-cuda: time_each_ms: the host still queued after {limit:?}; \
                             gate opened, and timings in this process are not gated from now on"
                        );
                        return true;
                    }
                }
            });
        let handle = watchdog.ok()?; // no watchdog, no gate
        gate.opened = Some(opened);
        gate.watchdog = Some(handle);
        Some(gate)
    }

    /// Queues the wait for `value` (greater than any before it, below 2^31); `false` if the
    /// watchdog has fired or the driver refuses it (nothing is then queued).
    fn close(&mut self, value: u32) -> bool {
        if value > i32::MAX as u32 {
            return false;
        }
        self.closed.store(value, Ordering::SeqCst);
        if GATE_DISABLED.load(Ordering::SeqCst) {
            return false;
        }
        // SAFETY: `device_ptr` maps the live 4-byte word; the stream is live. The wait blocks
        // the stream (not the host) until the word is ≥ `value`.
        let status = unsafe {
            sys::cuStreamWaitValue32_v2(
                self.stream.cu_stream(),
                self.device_ptr,
                value,
                sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32,
            )
        };
        status == sys::CUresult::CUDA_SUCCESS
    }

    /// Opens the gate of `value` (and those before it).
    fn open(&mut self, value: u32) {
        // SAFETY: the word is live until Drop frees it. fetch_max: never below what the
        // watchdog may have stored (all values are below 2^31, so max is also the cyclic order).
        unsafe { AtomicU32::from_ptr(self.host.cast()) }.fetch_max(value, Ordering::SeqCst);
        if let Some(opened) = &self.opened {
            let _ = opened.send(());
        }
    }

    /// Opens every gate and stops the watchdog; `true` if the watchdog had to open one.
    fn release(&mut self) -> bool {
        self.open(self.closed.load(Ordering::SeqCst));
        self.opened = None; // disconnects the watchdog
        self.watchdog
            .take()
            .is_some_and(|handle| handle.join().unwrap_or(true))
    }

    /// [`release`](Self::release), then Drop.
    fn finish(mut self) -> bool {
        self.release()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.release();
        // The stream must be past every wait before its word is freed.
        let _ = self.stream.synchronize();
        // SAFETY: allocated by cuMemHostAlloc in Gate::new, freed once.
        unsafe { sys::cuMemFreeHost(self.host) };
    }
}
