//! Loading a broken folder never asks for more memory than its files justify: no single
//! allocation over `4 × (the folder's bytes) + 64 MiB`, for every case of
//! [`ember_reference_tests::broken_folders::cases`].
//!
//! A limiting `#[global_allocator]` refuses (returns null for) any request over the current
//! case's limit while a load runs, and remembers the largest request. A refused fallible
//! allocation (`try_reserve`) shows up as a failure of this check; a refused infallible one
//! aborts the process with "memory allocation of N bytes failed" right after the case's name
//! (printed before each load), rather than the machine paging or the kernel killing it.
//! Its own test binary without libtest's harness (`harness = false` in `tests/Cargo.toml`), so
//! that nothing else runs while the limit is on.
//!
//! Each case is also read as the CUDA loader reads it ([`F32WeightReader`]: every tensor
//! widened to f32, Q/K/V fused), under the same limit and with no GPU: that reader sized
//! the fused `[3H, H]` buffer before finding its tensors (48 GiB for a 2^16 hidden size).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::path::Path;

use ember::Embedder;
use ember_bert::{BertConfig, F32WeightReader};
use ember_reference_tests::broken_folders::{cases, folder_bytes};
use ember_tensor::{find_weight_file, WeightFile};

/// Refuses requests over [`LIMIT`]; records the largest request under it and over it.
struct LimitingAllocator;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

impl LimitingAllocator {
    /// Whether a request of `size` bytes may go to the system allocator.
    fn admit(&self, size: usize) -> bool {
        if size > LIMIT.load(Ordering::SeqCst) {
            REFUSED.fetch_max(size, Ordering::SeqCst);
            return false;
        }
        LARGEST.fetch_max(size, Ordering::SeqCst);
        true
    }
}

// SAFETY: every admitted call is forwarded unchanged to `System`; a refused one returns null,
// which `GlobalAlloc` allows for any request. Bookkeeping touches only atomics.
unsafe impl GlobalAlloc for LimitingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's guarantees for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.admit(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LimitingAllocator = LimitingAllocator;

const MIB: usize = 1 << 20;

/// Runs `f` with single allocations limited to `limit` bytes; returns its result and the
/// largest request admitted and refused meanwhile.
fn with_limit<T>(limit: usize, f: impl FnOnce() -> T) -> (T, usize, usize) {
    LARGEST.store(0, Ordering::SeqCst);
    REFUSED.store(0, Ordering::SeqCst);
    LIMIT.store(limit, Ordering::SeqCst);
    let result = f();
    LIMIT.store(usize::MAX, Ordering::SeqCst);
    (
        result,
        LARGEST.load(Ordering::SeqCst),
        REFUSED.load(Ordering::SeqCst),
    )
}

/// Reads the folder's weights as `CudaBertModel::load` does, without a device: the first error,
/// as text.
fn read_as_the_cuda_loader(dir: &Path) -> Result<(), String> {
    let config = BertConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
    let file = find_weight_file(dir)
        .and_then(WeightFile::open)
        .map_err(|e| e.to_string())?;
    let reader = F32WeightReader::new(&config, &file);
    reader.embeddings().map_err(|e| e.to_string())?;
    reader.relative_bias().map_err(|e| e.to_string())?;
    reader.final_norm().map_err(|e| e.to_string())?;
    for layer in 0..config.num_hidden_layers {
        reader.layer(layer).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() {
    // The limit is enforced: a fallible request over it is refused and recorded.
    let (reserved, _, refused) = with_limit(MIB, || Vec::<u8>::new().try_reserve(2 * MIB));
    assert!(
        reserved.is_err() && refused == 2 * MIB,
        "the limiting allocator is not in use"
    );

    let cases = cases();
    let mut failures = Vec::new();
    let mut largest_overall = (0usize, 0u64, "");
    for case in &cases {
        let dir = case.make();
        let bytes = folder_bytes(dir.path());
        let limit = 4 * bytes as usize + 64 * MIB;
        // Flushed before the load: if a refused allocation aborts, this names the case.
        print!("{}: {bytes} bytes, limit {limit} … ", case.name);
        std::io::stdout().flush().unwrap();
        let (loaded, largest, refused) = with_limit(limit, || Embedder::from_dir(dir.path()));
        println!("largest allocation {largest}");
        if loaded.is_ok() {
            failures.push(format!("{}: loaded", case.name));
        }
        if refused > 0 {
            failures.push(format!(
                "{}: asked for {refused} bytes at once (folder {bytes} bytes, limit {limit})",
                case.name
            ));
        }
        if largest > largest_overall.0 {
            largest_overall = (largest, bytes, case.name);
        }
        let (read, _, refused) = with_limit(limit, || read_as_the_cuda_loader(dir.path()));
        if refused > 0 {
            failures.push(format!(
                "{}: the CUDA loader's reader asked for {refused} bytes at once (folder {bytes} \
                 bytes, limit {limit})",
                case.name
            ));
        }
        if case.name == "config/hidden 2^16 with 1 MB of weights" {
            let err = read.expect_err("the huge hidden size reads");
            assert!(
                err.contains("missing tensor \"encoder.layer.0.attention.self.query.weight\""),
                "{err}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} broken folders allocated past their limit:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let (largest, bytes, name) = largest_overall;
    println!(
        "broken folder allocations: {} cases, none over 4 × folder + 64 MiB; the largest single \
         allocation was {largest} bytes ({:.2} × the {bytes}-byte folder of \"{name}\")",
        cases.len(),
        largest as f64 / bytes as f64
    );
}
