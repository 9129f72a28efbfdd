//! End-to-end encode benchmark: all-MiniLM-L6-v2 on the committed corpus
//! (`benches/corpus/wordnet-examples.txt`), batches of 32, on 1 and 2 threads in f32 and on 2
//! threads in bf16 and int8, and one text at a time. Throughput is in encoder FLOPs (criterion's "elements"); a closing table divides the
//! achieved GFLOP/s by the FMA peak probed on the same threads in the same run.
//!
//! `cargo bench -p ember-benches --bench encode` (the model is found or fetched once as the
//! tests do: `$EMBER_MINILM_DIR`, else `scripts/fetch-model.sh`). For the comparison with
//! ONNX Runtime and PyTorch see `ember bench` and `scripts/peers/`.

// `criterion_group!` defines a `pub fn benches` it gives no doc comment.
#![allow(missing_docs)]

use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use ember::{Embedder, Precision};
use ember_cpu::active_isa;
use ember_cpu::probe::fma_peak_gflops_threads;
use ember_reference_tests::minilm_dir;

/// Texts of the corpus used per pass (the whole corpus takes seconds per criterion sample).
const TEXTS: usize = 256;

fn corpus() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/wordnet-examples.txt");
    std::fs::read_to_string(path)
        .expect("the committed corpus")
        .lines()
        .take(TEXTS)
        .map(str::to_owned)
        .collect()
}

fn flops(embedder: &Embedder, texts: &[String]) -> f64 {
    embedder.encoder_work(texts).expect("tokenizes").1
}

fn bench_encode(c: &mut Criterion) {
    let dir = minilm_dir();
    let texts = corpus();
    let mut group = c.benchmark_group("cpu/encode/all-MiniLM-L6-v2");
    group.sample_size(10);
    let mut table = Vec::new();
    // f32 on 1 and 2 threads; each reduced precision on 2 threads (its ratio to f32 below).
    let runs = [
        (1, Precision::F32),
        (2, Precision::F32),
        (2, Precision::Bf16),
        (2, Precision::Int8),
    ];
    for (threads, precision) in runs {
        let embedder = Embedder::builder()
            .threads(threads)
            .batch_size(32)
            .dtype(precision)
            .load_dir(&dir)
            .expect("model loads");
        let tag = match precision {
            Precision::F32 => String::new(),
            p => format!("-{}", p.name()),
        };
        let mut out = vec![0f32; texts.len() * embedder.dim()];
        let corpus_flops = flops(&embedder, &texts);
        group.throughput(Throughput::Elements(corpus_flops as u64));
        group.bench_function(format!("{TEXTS}texts-batch32-{threads}t{tag}"), |b| {
            b.iter(|| embedder.encode_into(&texts, &mut out).expect("encodes"))
        });
        let one_flops = flops(&embedder, &texts[..1]);
        let mut row = vec![0f32; embedder.dim()];
        group.throughput(Throughput::Elements(one_flops as u64));
        group.bench_function(format!("one-text-{threads}t{tag}"), |b| {
            b.iter(|| {
                embedder
                    .encode_into(&texts[..1], &mut row)
                    .expect("encodes")
            })
        });

        // The ratio: best of 5 corpus passes over the peak of `threads` cores, same run.
        let best = (0..5)
            .map(|_| {
                let start = Instant::now();
                embedder.encode_into(&texts, &mut out).expect("encodes");
                start.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        let peak = fma_peak_gflops_threads(active_isa(), 200.0, threads);
        table.push((threads, precision, corpus_flops / best / 1e9, peak));
    }
    group.finish();
    println!(
        "\nencode, {TEXTS} corpus texts, batch 32, {} path",
        active_isa().name()
    );
    let f32_2t = table
        .iter()
        .find(|row| row.0 == 2 && row.1 == Precision::F32)
        .map(|row| row.2);
    for (threads, precision, gflops, peak) in table {
        let versus = match (precision, f32_2t) {
            (Precision::F32, _) | (_, None) => String::new(),
            (_, Some(base)) => format!(", {:.2}x f32 on the same threads", gflops / base),
        };
        match peak {
            Some(peak) => println!(
                "{threads} thread(s) {precision}: {gflops:.1} GFLOP/s = {:.1} % of the f32 FMA peak \
                 ({peak:.1}){versus}",
                100.0 * gflops / peak
            ),
            None => println!(
                "{threads} thread(s) {precision}: {gflops:.1} GFLOP/s (no probe on this path){versus}"
            ),
        }
    }
}

criterion_group!(benches, bench_encode);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
