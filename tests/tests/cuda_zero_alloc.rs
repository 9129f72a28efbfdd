//! After warm-up, `Embedder::encode_into` on `Device::Cuda` allocates nothing: no host memory
//! (the counting allocator of `ember_reference_tests::counting_alloc`, every thread of the
//! process) and no device memory (`ember_cuda::device_allocations`, which counts every device
//! allocation Ember makes; clippy's `disallowed_methods`, `clippy.toml`, keeps cudarc's
//! allocating calls out of everything but that counted path).
//!
//! Before, every kernel launch allocated: cudarc's launch builder keeps a launch's arguments in
//! `Vec`s (a first version of this test counted 1,080 allocations in eight warm f16 MiniLM
//! calls); Ember now launches through `ember_cuda`'s stack-only `Launch`
//! (`crates/ember-cuda/src/launch.rs`).
//!
//! Models: fixtures whose launch paths differ, tiny-bert-dense (BERT, a Dense module, then
//! Normalize), tiny-modernbert (rotary positions, GeGLU, sliding windows), tiny-nomic-bert
//! (rotary, SwiGLU) and tiny-mpnet (relative attention bias), then all-MiniLM-L6-v2 (not on the
//! emulated driver, where it takes 34 s), each in f32 (the exact SIMT GEMM) and f16
//! (tensor cores; not tiny-bert-dense, whose hidden size 52 the tensor cores refuse). Batches of
//! 2: warm-up with the texts whole and one at a time, then counted: whole, one at a time, and
//! two of them; the rows must be the warm-up's, bit for bit.
//!
//! Its own test binary without libtest's harness (`harness = false` in `tests/Cargo.toml`).
//! Without a GPU it prints that it skipped; `EMBER_REQUIRE_CUDA=1` makes that a failure. Runs on
//! the emulated driver (`scripts/emulated-cuda.sh --test`) and on a GPU
//! (`scripts/gpu/bench_gpu.sh`).

use std::path::Path;
use std::time::Instant;

use ember::{Device, Embedder, EmberError, Precision};
use ember_reference_tests::counting_alloc::{
    assert_counting_allocator_in_use, assert_nothing_counted, count, CountingAllocator,
};
use ember_reference_tests::{emulated_driver, fixtures_dir, minilm_dir};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Texts of a few lengths (the first, longest, batch sets the buffers' size at warm-up).
const TEXTS: &[&str] = &[
    "A man is playing a guitar on a stage in front of a small, attentive crowd.",
    "Ember embeds text.",
    "x",
];

fn main() {
    assert_counting_allocator_in_use();
    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let fixtures = fixtures_dir();
    // `None`: all-MiniLM-L6-v2, whose folder is asked for (and fetched if absent) only once the
    // tiny models ran, and not on the emulated driver (34 s there, f32 21 s and f16 13 s,
    // through launch paths the tiny models took).
    let models = [
        (Some(fixtures.join("tiny-bert-dense")), false),
        (Some(fixtures.join("tiny-modernbert")), true),
        (Some(fixtures.join("tiny-nomic-bert")), true),
        (Some(fixtures.join("tiny-mpnet")), true),
        (None, true),
    ];
    let mut loaded_one = false;
    for (dir, tensor_cores) in models {
        let dir = match dir {
            Some(dir) => dir,
            None if emulated_driver() => {
                println!("cuda_zero_alloc: all-MiniLM-L6-v2: left out on the emulated driver");
                continue;
            }
            None => minilm_dir(),
        };
        let dtypes: &[Precision] = if tensor_cores {
            &[Precision::F32, Precision::F16]
        } else {
            &[Precision::F32]
        };
        for &dtype in dtypes {
            let start = Instant::now();
            let device_before = ember_cuda::device_allocations();
            let embedder = match Embedder::builder()
                .threads(2)
                .batch_size(2)
                .device(Device::Cuda(0))
                .dtype(dtype)
                .load_dir(&dir)
            {
                Ok(embedder) => embedder,
                // No GPU: the first load says so (any later failure is one).
                Err(EmberError::Cuda(err))
                    if !loaded_one && std::env::var("EMBER_REQUIRE_CUDA").as_deref() != Ok("1") =>
                {
                    eprintln!("cuda_zero_alloc: skipped: {err}");
                    return;
                }
                Err(err) => panic!("loading {} on cuda ({dtype}): {err}", dir.display()),
            };
            loaded_one = true;
            // The device counter is live: loading the weights counted.
            assert!(
                ember_cuda::device_allocations() > device_before,
                "{} {dtype}: loading counted no device allocation",
                name(&dir)
            );
            check(&embedder, &name(&dir), dtype, &texts);
            println!(
                "cuda_zero_alloc: {} {dtype}: {} texts whole, one at a time and two of them \
                 after warm-up: 0 host and 0 device allocations ({:.1} s)",
                name(&dir),
                texts.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// Warm-up, then the counted calls of `embedder` (`model` run in `dtype`) on `texts`.
fn check(embedder: &Embedder, model: &str, dtype: Precision, texts: &[String]) {
    let dim = embedder.dim();
    let mut all = vec![0f32; texts.len() * dim];
    let mut one = vec![0f32; dim];
    embedder.encode_into(texts, &mut all).unwrap();
    for text in texts {
        embedder
            .encode_into(std::slice::from_ref(text), &mut one)
            .unwrap();
    }
    let expected = all.clone();
    all.fill(f32::NAN);
    let device_before = ember_cuda::device_allocations();
    let mut singles_match = true;
    let mut two = vec![0f32; 2 * dim];
    count(|| {
        embedder.encode_into(texts, &mut all).unwrap();
        for (i, text) in texts.iter().enumerate() {
            embedder
                .encode_into(std::slice::from_ref(text), &mut one)
                .unwrap();
            singles_match &= one[..] == expected[i * dim..(i + 1) * dim];
        }
        embedder.encode_into(&texts[1..], &mut two).unwrap();
    });
    let device_allocations = ember_cuda::device_allocations() - device_before;
    let what = format!("cuda {model} {dtype} encode_into");
    assert_nothing_counted(&format!("{what} (host memory)"));
    assert_eq!(
        device_allocations, 0,
        "{what}: {device_allocations} device allocations after warm-up"
    );
    assert!(all == expected, "{what}: rows changed between calls");
    assert!(
        singles_match,
        "{what}: a text embedded alone differs from its row in the batch"
    );
    assert!(
        two[..] == expected[dim..],
        "{what}: a smaller batch's rows differ"
    );
}
