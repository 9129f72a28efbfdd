//! `threads(n)` bounds the threads an embedder starts, loading included: nothing on the load or
//! encode path runs a parallel loop outside the embedder's own pool, where it would start
//! rayon's global pool (one thread per core, kept for the life of the process).
//!
//! Before, a folder with a Dense module did: `DenseLayer::load` packed the layer's weights
//! (`PackedLinear::from_weight`, whose packing loops are `par_chunks_mut`) on the caller's
//! thread. Under strace, `ember embed --threads 1` made 1 clone on tiny-bert and 3 on
//! tiny-bert-dense on a 2-core machine.
//!
//! Two checks, each on its own enough: every thread the process has beyond those it started
//! with is one of an embedder's pool (named `ember-N`) and they are all gone once the embedders
//! are dropped (rayon's global threads are unnamed, so they carry this binary's name, and
//! never exit); and rayon's global pool can still be built afterwards
//! (`ThreadPoolBuilder::build_global` fails once it has started). This binary runs without
//! libtest's harness (`harness = false` in `tests/Cargo.toml`): no test runner threads, and no
//! other test in the process to start the global pool first.

use std::path::Path;
use std::time::{Duration, Instant};

use ember::{Embedder, Precision};
use ember_reference_tests::fixtures_dir;

/// The process's threads: `(tid, name)` from `/proc/self/task`.
fn threads() -> Vec<(u64, String)> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let entry = entry.expect("a task entry");
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        // A thread that exited between the listing and this read has no comm: skip it.
        if let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) {
            threads.push((tid, name.trim_end().to_owned()));
        }
    }
    threads
}

/// Threads now that were not in `before` and are not an embedder pool's worker.
fn foreign_threads(before: &[(u64, String)]) -> Vec<(u64, String)> {
    threads()
        .into_iter()
        .filter(|(tid, name)| !before.iter().any(|(t, _)| t == tid) && !name.starts_with("ember-"))
        .collect()
}

/// Polls until `done` holds (a dropped pool's workers exit on their own time), up to a
/// deadline generous enough for a loaded 2-core CI machine.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn main() {
    if !Path::new("/proc/self/task").is_dir() {
        println!("no_global_pool: skipped (no /proc/self/task on this system)");
        return;
    }
    let before = threads();
    // Dense folders in each CPU precision (Int8 also calibrates at load), and one folder of
    // each other family and tokenizer path.
    let cases: &[(&str, Precision)] = &[
        ("tiny-bert-dense", Precision::F32),
        ("tiny-bert-dense", Precision::Bf16),
        ("tiny-bert-dense", Precision::Int8),
        ("tiny-bert-dense-identity", Precision::F32),
        ("tiny-bert", Precision::F32),
        ("tiny-roberta", Precision::F32),
        ("tiny-xlmr-spm", Precision::F32),
        ("tiny-mpnet", Precision::F32),
        ("tiny-modernbert", Precision::F32),
    ];
    for &(name, dtype) in cases {
        let dir = fixtures_dir().join(name);
        let embedder = Embedder::builder()
            .threads(1)
            .dtype(dtype)
            .load_dir(&dir)
            .unwrap_or_else(|e| panic!("{name} {dtype:?}: {e}"));
        let texts = ["A cat sits on the mat.", "Rayon's global pool stays cold."];
        let embeddings = embedder
            .encode(&texts)
            .unwrap_or_else(|e| panic!("{name} {dtype:?}: {e}"));
        assert_eq!(embeddings.len(), texts.len());
        // Polled: a thread that was just joined can stay listed for a moment. The global
        // pool's never leave.
        assert!(
            eventually(|| foreign_threads(&before).is_empty()),
            "{name} {dtype:?} with threads(1): threads outside the embedder's pool: {:?}",
            foreign_threads(&before)
        );
        let pool_threads = threads().len().saturating_sub(before.len());
        assert!(
            pool_threads <= 1,
            "{name} {dtype:?} with threads(1): {pool_threads} new threads: {:?}",
            threads()
        );
        drop(embedder);
        // Its worker exits once the pool is dropped: the next case starts from the same count.
        assert!(
            eventually(|| threads().len() == before.len()),
            "{name} {dtype:?}: threads left after the embedder was dropped: {:?} (before: {before:?})",
            threads()
        );
    }
    assert!(
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global()
            .is_ok(),
        "rayon's global pool was started"
    );
    println!(
        "no_global_pool: {} loads, no thread outside the embedders' pools",
        cases.len()
    );
}
