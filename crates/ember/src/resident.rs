//! A job that lives on a rayon pool and runs callers' closures there, so that a call from
//! outside the pool allocates nothing.
//!
//! `ThreadPool::install` from a thread outside the pool pushes a job onto rayon's injector,
//! a crossbeam `Injector` that allocates a new 63-slot block every 63 pushes: steady-state
//! encoding would allocate once every 63 calls. Instead one job is spawned at load (one
//! allocation) and stays on a worker: a caller hands it a closure through a mutex and a
//! condition variable (futex-based, allocation-free), the job runs it on the worker, and the
//! closure's parallel loops split into ordinary in-pool `join`s that the other workers steal.
//!
//! ```text
//! caller:   wait for Idle → Call(closure) ─────────────────→ wait for Done → Idle
//! resident:       wait for Call → Running → closure() on the pool → Done
//! ```
//!
//! Calls take turns: a second caller waits while one runs (each call already keeps every
//! worker busy). The job occupies a worker while idle, so nothing else may be run on the
//! pool with `install`/`spawn` once it is started (with one thread it would never run).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// A caller's closure with its lifetime erased; only dereferenced between `Call` and `Done`,
/// while the caller is blocked in [`ResidentJob::run`].
struct ErasedCall(*mut (dyn FnMut() + Send));

// SAFETY: the pointee is `Send` (the bound is in the type); the pointer is only dereferenced
// by the resident job while its owner waits, so it is never used from two threads at once.
unsafe impl Send for ErasedCall {}

enum Slot {
    /// Waiting for a call.
    Idle,
    /// A call for the resident job to take.
    Call(ErasedCall),
    /// The resident job is running a call.
    Running,
    /// The call returned, or panicked with this payload.
    Done(Option<Box<dyn Any + Send>>),
    /// The owner is gone: the job returns and its worker goes back to the pool.
    Shutdown,
}

struct Shared {
    slot: Mutex<Slot>,
    /// Notified on every change of `slot`.
    changed: Condvar,
}

impl Shared {
    /// The slot; never poisoned in practice (no code panics while holding it), and the slot
    /// stays consistent if it were.
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Slot>) -> MutexGuard<'a, Slot> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs closures on one worker of a rayon pool without injecting a job per call.
pub(crate) struct ResidentJob {
    shared: Arc<Shared>,
}

impl ResidentJob {
    /// Spawns the resident job on `pool`. Anything else to run on the pool must run before.
    pub(crate) fn start(pool: &rayon::ThreadPool) -> Self {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Idle),
            changed: Condvar::new(),
        });
        let job = Arc::clone(&shared);
        pool.spawn(move || serve(&job));
        Self { shared }
    }

    /// Runs `op` on the pool and returns its result; a panic in `op` resumes here.
    pub(crate) fn run<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        let mut op = Some(op);
        let mut result = None;
        let mut call = || {
            if let Some(op) = op.take() {
                result = Some(op());
            }
        };
        let call: &mut (dyn FnMut() + Send + '_) = &mut call;
        // SAFETY: only the lifetime changes. The resident job dereferences the pointer only
        // after taking it from `Call` and before storing `Done`; this function publishes it
        // and then does not return (and cannot unwind: waiting and locking do not panic)
        // until it has seen `Done`, so `call` outlives every use.
        let erased = ErasedCall(unsafe {
            std::mem::transmute::<*mut (dyn FnMut() + Send + '_), *mut (dyn FnMut() + Send + 'static)>(
                call,
            )
        });

        let shared = &self.shared;
        let mut slot = shared.lock();
        while !matches!(*slot, Slot::Idle) {
            slot = shared.wait(slot);
        }
        *slot = Slot::Call(erased);
        shared.changed.notify_all();
        let panic = loop {
            if let Slot::Done(_) = *slot {
                match std::mem::replace(&mut *slot, Slot::Idle) {
                    Slot::Done(panic) => break panic,
                    _ => unreachable!("the slot held Done a moment ago, under the lock"),
                }
            }
            slot = shared.wait(slot);
        };
        // Wake the next caller waiting for Idle.
        shared.changed.notify_all();
        drop(slot);
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
        match result {
            Some(result) => result,
            None => unreachable!("the call ran to completion (it did not panic)"),
        }
    }
}

impl Drop for ResidentJob {
    fn drop(&mut self) {
        // `run` borrows `self`, so no call is in flight: the job is idle or about to be.
        *self.shared.lock() = Slot::Shutdown;
        self.shared.changed.notify_all();
    }
}

/// The resident job's loop, on a pool worker.
fn serve(shared: &Shared) {
    let mut slot = shared.lock();
    loop {
        match std::mem::replace(&mut *slot, Slot::Running) {
            Slot::Call(ErasedCall(call)) => {
                drop(slot);
                // SAFETY: see `ResidentJob::run`: the caller is blocked until `Done`, so the
                // closure is alive and used by this thread alone.
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*call)() }));
                slot = shared.lock();
                *slot = Slot::Done(outcome.err());
                shared.changed.notify_all();
            }
            Slot::Shutdown => {
                *slot = Slot::Shutdown;
                return;
            }
            other => {
                // Idle, or another caller's Done not yet collected: put it back and wait.
                *slot = other;
                slot = shared.wait(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn runs_on_the_pool_and_returns() {
        for threads in [1, 3] {
            let pool = pool(threads);
            let job = ResidentJob::start(&pool);
            let data: Vec<u64> = (0..10_000).collect();
            for _ in 0..100 {
                let (sum, index, threads_seen) = job.run(|| {
                    (
                        data.par_iter().sum::<u64>(),
                        rayon::current_thread_index(),
                        rayon::current_num_threads(),
                    )
                });
                assert_eq!(sum, 49_995_000);
                assert!(index.is_some());
                assert_eq!(threads_seen, threads);
            }
        }
    }

    #[test]
    fn concurrent_callers_take_turns() {
        let pool = pool(2);
        let job = ResidentJob::start(&pool);
        let running = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (job, running) = (&job, &running);
                s.spawn(move || {
                    for i in 0..50u64 {
                        let got = job.run(|| {
                            use std::sync::atomic::Ordering::SeqCst;
                            assert_eq!(running.fetch_add(1, SeqCst), 0, "two calls at once");
                            let v = (0..1000u64).into_par_iter().map(|x| x * t + i).sum::<u64>();
                            running.fetch_sub(1, SeqCst);
                            v
                        });
                        assert_eq!(got, 499_500 * t + 1000 * i);
                    }
                });
            }
        });
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_job_survives() {
        let pool = pool(1);
        let job = ResidentJob::start(&pool);
        let caught =
            panic::catch_unwind(AssertUnwindSafe(|| job.run(|| -> u32 { panic!("boom") })));
        assert!(caught.is_err());
        assert_eq!(job.run(|| 7), 7);
    }

    #[test]
    fn dropping_the_job_frees_its_worker() {
        let pool = pool(1);
        drop(ResidentJob::start(&pool));
        // With one worker, this only runs once the resident job has returned.
        assert_eq!(pool.install(|| 5), 5);
    }
}
