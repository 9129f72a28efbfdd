//! Kernel benchmarks on BERT shapes, one thread: the linear layer (GEMM + fused epilogue) on
//! `[T,768]×[768,768]ᵀ`, `[T,768]×[3072,768]ᵀ`, `[T,3072]×[768,3072]ᵀ`, attention over 32
//! sequences of 75 tokens (12 heads of 64), and LayerNorm. Throughput is in FLOPs (criterion's
//! "elements"); after the criterion runs, a table gives each GEMM as a fraction of the FMA peak
//! probed in the same process.
//!
//! `cargo bench -p ember-benches --bench kernels` (`EMBER_ISA=avx2|scalar` forces a path).

use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ember_benches::random_vec;
use ember_cpu::probe::fma_peak_gflops;
use ember_cpu::{active_isa, attention_varlen, layernorm, linear, Activation, PackedLinear};

const SHAPES: [(usize, usize, &str); 3] = [
    (768, 768, "attn_out"),
    (3072, 768, "ffn_in"),
    (768, 3072, "ffn_out"),
];
const TOKENS: [usize; 3] = [16, 128, 2400];

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
}

fn bench_linear(c: &mut Criterion) {
    let pool = one_thread();
    let mut group = c.benchmark_group(format!("cpu-{}/linear", active_isa().name()));
    group.sample_size(10);
    for (n, k, name) in SHAPES {
        let w = PackedLinear::new(&random_vec(n * k, 1), Some(&random_vec(n, 2)), n, k)
            .expect("shapes agree");
        for t in TOKENS {
            let x = random_vec(t * k, 3);
            let mut out = vec![f32::NAN; t * n];
            group.throughput(Throughput::Elements((2 * t * n * k) as u64));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{t}x{k}x{n}")),
                &t,
                |b, &t| {
                    pool.install(|| {
                        b.iter(|| {
                            linear(&x, t, &w, Activation::Identity, None, &mut out)
                                .expect("shapes agree")
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

fn bench_attention(c: &mut Criterion) {
    let pool = one_thread();
    let (heads, head_dim, seqs, len) = (12, 64, 32, 75);
    let hidden = heads * head_dim;
    let tokens = seqs * len;
    let qkv = random_vec(tokens * 3 * hidden, 4);
    let offsets: Vec<usize> = (0..=seqs).map(|s| s * len).collect();
    let mut out = vec![f32::NAN; tokens * hidden];
    let mut group = c.benchmark_group("cpu/attention");
    group.sample_size(10);
    group.throughput(Throughput::Elements(
        (4 * seqs * heads * len * len * head_dim) as u64,
    ));
    group.bench_function(format!("{seqs}x{len}x{heads}x{head_dim}"), |b| {
        pool.install(|| {
            b.iter(|| {
                attention_varlen(&qkv, &offsets, heads, head_dim, &mut out).expect("shapes agree")
            })
        })
    });
    group.finish();
}

fn bench_layernorm(c: &mut Criterion) {
    let pool = one_thread();
    let (rows, hidden) = (2400, 768);
    let x = random_vec(rows * hidden, 5);
    let (gamma, beta) = (random_vec(hidden, 6), random_vec(hidden, 7));
    let mut buf = x.clone();
    let mut group = c.benchmark_group("cpu/layernorm");
    group.throughput(Throughput::Bytes((2 * rows * hidden * 4) as u64));
    group.bench_function(format!("{rows}x{hidden}"), |b| {
        pool.install(|| {
            b.iter(|| {
                buf.copy_from_slice(&x);
                layernorm(&mut buf, rows, hidden, &gamma, &beta, 1e-12).expect("shapes agree")
            })
        })
    });
    group.finish();
}

/// Best-of-N GFLOP/s of each GEMM shape next to the probed peak, in one run.
fn peak_table() {
    let pool = one_thread();
    let Some(peak) = fma_peak_gflops(active_isa(), 200.0) else {
        println!(
            "\nno FMA probe for the {} path: no ratio table",
            active_isa().name()
        );
        return;
    };
    println!(
        "\nGEMM vs FMA peak (one thread, {} path, probe {peak:.1} GFLOP/s)",
        active_isa().name()
    );
    println!(
        "{:<10} {:>16} {:>10} {:>8}",
        "layer", "T x K x N", "GFLOP/s", "% peak"
    );
    for (n, k, name) in SHAPES {
        let w = PackedLinear::new(&random_vec(n * k, 1), None, n, k).expect("shapes agree");
        for t in TOKENS {
            let x = random_vec(t * k, 3);
            let mut out = vec![0.0; t * n];
            let flops = (2 * t * n * k) as f64;
            let reps = ((2e9 / flops) as usize).clamp(3, 2000);
            let best = pool.install(|| {
                (0..5)
                    .map(|_| {
                        let start = Instant::now();
                        for _ in 0..reps {
                            linear(&x, t, &w, Activation::Identity, None, &mut out)
                                .expect("shapes agree");
                        }
                        flops * reps as f64 / start.elapsed().as_secs_f64() / 1e9
                    })
                    .fold(0.0, f64::max)
            });
            println!(
                "{name:<10} {:>16} {best:>10.1} {:>7.1}%",
                format!("{t}x{k}x{n}"),
                100.0 * best / peak
            );
        }
    }
}

criterion_group!(benches, bench_linear, bench_attention, bench_layernorm);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    peak_table();
}
