//! A counting global allocator for the zero-allocation tests (`tests/zero_alloc.rs` on the
//! CPU, `tests/cuda_zero_alloc.rs` on the GPU): it passes everything to the system allocator
//! and, while counting is on, counts every `alloc`, `alloc_zeroed` and `realloc` of every
//! thread, keeping the first counted allocation's backtrace (a thread-local guard keeps the
//! capture itself out of the count). A test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//! ```
//!
//! and should run without libtest's harness (`harness = false`), so that no runner thread
//! allocates while counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Passes everything to [`System`], counting allocations while [`count`] runs.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static FIRST_ALLOCATION: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// Set while this thread is inside `record`, whose own allocations (the backtrace) are
    /// not counted. `const` and `Drop`-free, so using it never allocates.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

impl CountingAllocator {
    fn record(&self, what: &str, layout: Layout) {
        if !COUNTING.load(Ordering::SeqCst) {
            return;
        }
        let reentered = RECORDING
            .try_with(|flag| flag.replace(true))
            .unwrap_or(true);
        if reentered {
            return;
        }
        if ALLOCATIONS.fetch_add(1, Ordering::SeqCst) == 0 {
            let thread = std::thread::current();
            let trace = std::backtrace::Backtrace::force_capture();
            let report = format!(
                "{what} of {} bytes on thread {:?}:\n{trace}",
                layout.size(),
                thread.name().unwrap_or("<unnamed>")
            );
            if let Ok(mut first) = FIRST_ALLOCATION.lock() {
                *first = Some(report);
            }
        }
        let _ = RECORDING.try_with(|flag| flag.set(false));
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only atomics, a
// `const` thread-local and (once, guarded against re-entry) a mutex.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.record("alloc", layout);
        // SAFETY: the caller's guarantees for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.record("alloc_zeroed", layout);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.record("realloc", layout);
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` with counting on and returns its result (the count is read by
/// [`assert_nothing_counted`]).
pub fn count<R>(f: impl FnOnce() -> R) -> R {
    COUNTING.store(true, Ordering::SeqCst);
    let result = f();
    COUNTING.store(false, Ordering::SeqCst);
    result
}

/// Checks that the binary's global allocator is a [`CountingAllocator`]: one box counted is one
/// allocation. Resets the count.
pub fn assert_counting_allocator_in_use() {
    count(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(
        ALLOCATIONS.swap(0, Ordering::SeqCst),
        1,
        "the counting allocator is not in use"
    );
    FIRST_ALLOCATION.lock().unwrap().take();
}

/// Asserts that nothing was counted since the last check, showing the first allocation's
/// backtrace if something was; resets the count.
pub fn assert_nothing_counted(what: &str) {
    let allocations = ALLOCATIONS.swap(0, Ordering::SeqCst);
    let first = FIRST_ALLOCATION.lock().unwrap().take().unwrap_or_default();
    assert!(
        allocations == 0,
        "{what}: {allocations} allocations after warm-up; the first: {first}"
    );
}
