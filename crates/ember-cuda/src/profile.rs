//! Where a forward pass's time goes, op by op: [`OpProfile`], switched on by
//! [`CudaBertModel::enable_profile`](crate::CudaBertModel::enable_profile) (the `ember` facade
//! does so when `EMBER_CUDA_PROFILE=1`).
//!
//! The forward pass records a CUDA event on its stream after each op, and reads the host's
//! clock after queueing it. Once the pass has synchronised, each op is charged two times:
//! - **GPU**: from the event before it to its own, the time the stream spent on it, *including*
//!   any wait for the host to queue it (a stream that outruns the host idles inside the next
//!   op's interval);
//! - **host**: the time its launcher took to check the shapes and queue the kernel (and, for
//!   the uploads and the download, to copy).
//!
//! So an op whose GPU time is close to its host time is launch-bound (the stream waited for the
//! host), and one whose GPU time is well above it is GPU-bound. Forwards of one sequence
//! (single-text latency) and of several (batches) are added up apart; a forward that had to
//! create events (the first) is not counted.
//!
//! Its own cost, when on: an event record and a clock read after each op, inside that op's host
//! time (and inside its GPU time when the stream waits for the host: so profiling makes ops
//! look more launch-bound than they are), and after each forward two driver calls an op to read
//! the times, outside the forward's wall time but inside a caller's timing (`ember bench`'s
//! figures under profiling are not comparable with others). Off: one branch per op. A failure
//! of the driver's event calls stops profiling, not the forward.

use std::fmt::Write as _;
use std::time::Instant;

use cudarc::driver::sys;
use cudarc::driver::CudaEvent;

use crate::device::CudaDevice;
use crate::error::CudaError;

/// The totals of one op (by label) over one class of forwards.
#[derive(Clone, Debug)]
struct OpTotal {
    label: &'static str,
    calls: u64,
    gpu_ms: f64,
    host_ms: f64,
}

/// The totals of one class of forwards: of one sequence, or of several.
#[derive(Clone, Debug, Default)]
struct ClassTotals {
    forwards: u64,
    sequences: u64,
    tokens: u64,
    /// Host time from the forward's start to its return (the download waited for).
    wall_ms: f64,
    /// Ops in the order first seen.
    ops: Vec<OpTotal>,
}

/// Per-op GPU and host times of the forward passes of one model (see the module's docs).
#[derive(Default)]
pub struct OpProfile {
    enabled: bool,
    /// Event `i` follows op `i` (`labels[i]`); event 0 comes before the first.
    events: Vec<CudaEvent>,
    labels: Vec<&'static str>,
    /// Host time, µs since `start`, at each event's record.
    host_us: Vec<f64>,
    /// The current forward's GPU times, read before any is added up.
    gpu_ms: Vec<f64>,
    /// Events recorded in the current forward.
    used: usize,
    /// Whether the current forward created events (its times include that: not counted).
    created: bool,
    start: Option<Instant>,
    classes: [ClassTotals; 2],
}

impl OpProfile {
    /// Starts recording (events are created as the first forward needs them).
    pub(crate) fn enable(&mut self) {
        self.enabled = true;
    }

    /// Records the event before the first op of a forward.
    pub(crate) fn begin(&mut self, device: &CudaDevice) {
        if self.enabled {
            self.used = 0;
            self.created = false;
            self.start = Some(Instant::now());
            self.record(device, "");
        }
    }

    /// Records the event after op `label` (one of a forward's ops, in order).
    pub(crate) fn mark(&mut self, device: &CudaDevice, label: &'static str) {
        if self.enabled {
            self.record(device, label);
        }
    }

    /// A failure of the driver's event calls ends profiling (said once on stderr) rather than
    /// the forward, whose rows are right whatever the profile.
    fn give_up(&mut self, error: CudaError) {
        self.enabled = false;
        eprintln!("ember-cuda profile: stopped: {error}");
    }

    fn record(&mut self, device: &CudaDevice, label: &'static str) {
        let stream = device.stream();
        if self.used == self.events.len() {
            match stream
                .context()
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            {
                Ok(event) => self.events.push(event),
                Err(error) => return self.give_up(CudaError::driver("cuEventCreate")(error)),
            }
            self.labels.push(label);
            self.host_us.push(0.0);
            self.created = true;
        }
        if let Err(error) = self.events[self.used].record(stream) {
            return self.give_up(CudaError::driver("cuEventRecord")(error));
        }
        self.labels[self.used] = label;
        let start = self.start.unwrap_or_else(Instant::now);
        self.host_us[self.used] = start.elapsed().as_secs_f64() * 1e6;
        self.used += 1;
    }

    /// Adds up the forward just finished (its stream synchronised: the last op is the
    /// download) of `sequences` sequences and `tokens` tokens, unless it created events.
    pub(crate) fn end(&mut self, sequences: usize, tokens: usize) {
        if !self.enabled || self.used < 2 || self.created {
            return;
        }
        let wall_ms = self.start.map_or(0.0, |s| s.elapsed().as_secs_f64() * 1e3);
        self.gpu_ms.clear();
        for pair in self.events[..self.used].windows(2) {
            match pair[0].elapsed_ms(&pair[1]) {
                Ok(ms) => self.gpu_ms.push(f64::from(ms)),
                Err(error) => return self.give_up(CudaError::driver("cuEventElapsedTime")(error)),
            }
        }
        let class = &mut self.classes[usize::from(sequences > 1)];
        class.forwards += 1;
        class.sequences += sequences as u64;
        class.tokens += tokens as u64;
        class.wall_ms += wall_ms;
        for (i, &gpu_ms) in (1..self.used).zip(&self.gpu_ms) {
            let host_ms = (self.host_us[i] - self.host_us[i - 1]) / 1e3;
            let label = self.labels[i];
            let at = match class.ops.iter().position(|op| op.label == label) {
                Some(at) => at,
                None => {
                    class.ops.push(OpTotal {
                        label,
                        calls: 0,
                        gpu_ms: 0.0,
                        host_ms: 0.0,
                    });
                    class.ops.len() - 1
                }
            };
            let total = &mut class.ops[at];
            total.calls += 1;
            total.gpu_ms += gpu_ms;
            total.host_ms += host_ms;
        }
        self.used = 0;
    }

    /// The totals as a table per class of forwards, ops in the order first seen (the
    /// pipeline's, but for an op a later forward adds, e.g. normalize); `None` when off or
    /// before any forward.
    pub fn report(&self) -> Option<String> {
        if !self.enabled || self.classes.iter().all(|c| c.forwards == 0) {
            return None;
        }
        let mut out = String::new();
        for (class, what) in self.classes.iter().zip(["one text", "batches"]) {
            if class.forwards == 0 {
                continue;
            }
            let gpu: f64 = class.ops.iter().map(|op| op.gpu_ms).sum();
            let host: f64 = class.ops.iter().map(|op| op.host_ms).sum();
            let _ = writeln!(
                out,
                "forwards of {what}: {} forwards, {} texts, {} tokens; host wall {:.3} ms, GPU span {gpu:.3} ms, host in the ops' calls {host:.3} ms",
                class.forwards, class.sequences, class.tokens, class.wall_ms
            );
            let _ = writeln!(
                out,
                "  {:<28} {:>8} {:>11} {:>7} {:>11} {:>11}",
                "op", "calls", "GPU ms", "GPU %", "GPU µs/call", "host µs/call"
            );
            for op in &class.ops {
                let calls = op.calls.max(1) as f64;
                let _ = writeln!(
                    out,
                    "  {:<28} {:>8} {:>11.3} {:>6.1}% {:>11.2} {:>11.2}",
                    op.label,
                    op.calls,
                    op.gpu_ms,
                    100.0 * op.gpu_ms / gpu.max(f64::MIN_POSITIVE),
                    1e3 * op.gpu_ms / calls,
                    1e3 * op.host_ms / calls
                );
            }
        }
        Some(out)
    }
}
