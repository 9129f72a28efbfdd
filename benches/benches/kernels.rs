//! Kernel benchmarks on BERT shapes, one thread: the linear layer (GEMM + fused epilogue) on
//! `[T,768]×[768,768]ᵀ`, `[T,768]×[3072,768]ᵀ`, `[T,3072]×[768,3072]ᵀ` for every ISA this CPU
//! runs (scalar only for T ≤ 128) and for the `matrixmultiply` crate (the peer), attention over
//! 32 sequences of 75 tokens (12 heads of 64), and over 8 of 512 with and without ModernBERT's
//! ±64-token window, LayerNorm, and ModernBERT's rotary positions and GeGLU gate. Throughput is in FLOPs
//! (criterion's "elements"); after the criterion runs, a table gives each GEMM as a fraction of
//! the FMA peak probed in the same process and as a ratio to `matrixmultiply` on the same
//! shape, measured in the same process, and a second table does the same for each attention
//! case against its plain-loop reference (`attention_varlen_reference_with_terms`).
//!
//! `cargo bench -p ember-benches --bench kernels` (`-- no-criterion-case` for the table only).

// `criterion_group!` defines a `pub fn benches` it gives no doc comment.
#![allow(missing_docs)]

use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ember_benches::random_vec;
use ember_cpu::attention::{attention_varlen_reference_with_terms, attention_varlen_with_isa};
use ember_cpu::gemm::linear_with_isa;
use ember_cpu::probe::fma_peak_gflops;
use ember_cpu::{
    active_isa, apply_rotary, attention_varlen_with_terms, gated_activation, layernorm,
    supported_isas, Activation, AttentionTerms, Isa, PackedLinear, Precision, Rotary,
};

const SHAPES: [(usize, usize, &str); 3] = [
    (768, 768, "attn_out"),
    (3072, 768, "ffn_in"),
    (768, 3072, "ffn_out"),
];
const TOKENS: [usize; 3] = [16, 128, 2400];

/// Attention heads and head dim of every attention case (BERT-base, ModernBERT-base).
const HEADS: usize = 12;
const HEAD_DIM: usize = 64;

/// One attention case: `seqs` sequences of `len` tokens, over the whole sequence or a
/// `±window`-token window (ModernBERT's local layers).
#[derive(Clone, Copy)]
struct AttentionCase {
    seqs: usize,
    len: usize,
    window: Option<usize>,
    /// Of the random QKV.
    seed: u64,
}

/// The attention cases of the criterion group `cpu/attention` and of the ratio table: BERT's
/// 32 sequences of 75 tokens, and ModernBERT-base's 8 of 512, full (its global layers) and over
/// a ±64-token window (its local ones).
const ATTENTION_CASES: [AttentionCase; 3] = [
    AttentionCase {
        seqs: 32,
        len: 75,
        window: None,
        seed: 4,
    },
    AttentionCase {
        seqs: 8,
        len: 512,
        window: None,
        seed: 8,
    },
    AttentionCase {
        seqs: 8,
        len: 512,
        window: Some(64),
        seed: 8,
    },
];

impl AttentionCase {
    /// `seqs x len x heads x head_dim`, with `+window<w>` for a windowed case.
    fn name(&self) -> String {
        let Self { seqs, len, .. } = *self;
        match self.window {
            None => format!("{seqs}x{len}x{HEADS}x{HEAD_DIM}"),
            Some(w) => format!("{seqs}x{len}x{HEADS}x{HEAD_DIM}+window{w}"),
        }
    }

    /// FLOPs over the keys actually attended: query `i` of a sequence reads `k_i` keys (`len`,
    /// or `min(i + w + 1, len) − max(i − w, 0)` in a `±w` window), and costs `2·k_i·head_dim`
    /// for its scores (`Q·Kᵀ`) and `2·k_i·head_dim` for its output (`P·V`), per head:
    /// `4 · seqs · heads · head_dim · Σ_i k_i` (`4·seqs·heads·len²·head_dim` without a window).
    /// The softmax's exponentials are not counted, nor the keys of the tiles the kernel scores
    /// beyond a window's edge.
    fn flops(&self) -> usize {
        let keys: usize = (0..self.len)
            .map(|i| {
                self.window.map_or(self.len, |w| {
                    (i + w + 1).min(self.len) - i.saturating_sub(w)
                })
            })
            .sum();
        4 * self.seqs * HEADS * HEAD_DIM * keys
    }

    /// The packed `[T, 3·H]` QKV, the sequence offsets, and an `[T, H]` output buffer.
    fn inputs(&self) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
        let hidden = HEADS * HEAD_DIM;
        let tokens = self.seqs * self.len;
        let offsets = (0..=self.seqs).map(|s| s * self.len).collect();
        (
            random_vec(tokens * 3 * hidden, self.seed),
            offsets,
            vec![f32::NAN; tokens * hidden],
        )
    }

    fn terms(&self) -> AttentionTerms<'static> {
        AttentionTerms {
            bias: None,
            window: self.window,
        }
    }
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
}

fn bench_linear(c: &mut Criterion) {
    let pool = one_thread();
    // Every ISA in f32; the best ISA also in each reduced precision (group
    // `cpu-<isa>-<dtype>/linear`; FLOPs counted as 2·t·n·k for every dtype).
    let best = *supported_isas().last().expect("scalar is always there");
    let runs = supported_isas()
        .into_iter()
        .map(|isa| (isa, Precision::F32))
        .chain([Precision::Bf16, Precision::Int8].map(|p| (best, p)));
    for (isa, precision) in runs {
        let group_name = match precision {
            Precision::F32 => format!("cpu-{}/linear", isa.name()),
            p => format!("cpu-{}-{}/linear", isa.name(), p.name()),
        };
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10);
        for (n, k, name) in SHAPES {
            let w = PackedLinear::with_precision(
                &random_vec(n * k, 1),
                Some(&random_vec(n, 2)),
                n,
                k,
                precision,
            )
            .expect("shapes agree");
            for t in TOKENS {
                if isa == Isa::Scalar && t > 128 {
                    continue; // seconds per call: the small shapes show the path is sound.
                }
                let x = random_vec(t * k, 3);
                let mut out = vec![f32::NAN; t * n];
                group.throughput(Throughput::Elements((2 * t * n * k) as u64));
                group.bench_with_input(
                    BenchmarkId::new(name, format!("{t}x{k}x{n}")),
                    &t,
                    |b, &t| {
                        pool.install(|| {
                            b.iter(|| {
                                linear_with_isa(
                                    isa,
                                    &x,
                                    t,
                                    &w,
                                    Activation::Identity,
                                    None,
                                    &mut out,
                                )
                                .expect("shapes agree")
                            })
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

/// The peer: `matrixmultiply::sgemm` (one thread, its own packing every call) on the same
/// `Y = X·Wᵀ`, `W` read in place as `[n, k]` row-major.
fn matrixmultiply_xwt(x: &[f32], w: &[f32], t: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(x.len() == t * k && w.len() == n * k && out.len() == t * n);
    // SAFETY: the assert above bounds every access: A = X is [t, k] with strides (k, 1),
    // B = Wᵀ is [k, n] with strides (1, k) over `w`, C is [t, n] with strides (n, 1).
    unsafe {
        matrixmultiply::sgemm(
            t,
            k,
            n,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn bench_matrixmultiply(c: &mut Criterion) {
    let mut group = c.benchmark_group("matrixmultiply/sgemm");
    group.sample_size(10);
    for (n, k, name) in SHAPES {
        let w = random_vec(n * k, 1);
        for t in TOKENS {
            let x = random_vec(t * k, 3);
            let mut out = vec![f32::NAN; t * n];
            group.throughput(Throughput::Elements((2 * t * n * k) as u64));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{t}x{k}x{n}")),
                &t,
                |b, &t| b.iter(|| matrixmultiply_xwt(&x, &w, t, n, k, &mut out)),
            );
        }
    }
    group.finish();
}

/// Attention on [`ATTENTION_CASES`] on the active ISA, FLOPs counted over the keys each query
/// reads ([`AttentionCase::flops`]).
fn bench_attention(c: &mut Criterion) {
    let pool = one_thread();
    let mut group = c.benchmark_group("cpu/attention");
    group.sample_size(10);
    for case in ATTENTION_CASES {
        let (qkv, offsets, mut out) = case.inputs();
        group.throughput(Throughput::Elements(case.flops() as u64));
        group.bench_function(case.name(), |b| {
            pool.install(|| {
                b.iter(|| {
                    attention_varlen_with_terms(
                        &qkv,
                        &offsets,
                        HEADS,
                        HEAD_DIM,
                        case.terms(),
                        &mut out,
                    )
                    .expect("shapes agree")
                })
            })
        });
    }
    group.finish();
}

/// ModernBERT-base's rotary positions on 2400 tokens (Q and K of 12 heads of 64) and its GeGLU
/// gate on `[2400, 2·1152]`; bytes read and written.
fn bench_modernbert_elementwise(c: &mut Criterion) {
    let pool = one_thread();
    let (tokens, heads, head_dim, f) = (2400, 12, 64, 1152);
    let hidden = heads * head_dim;
    let offsets: Vec<usize> = (0..=tokens / 75).map(|s| s * 75).collect();
    let rotary = Rotary::new(160_000.0, head_dim, 75).expect("rotary shapes");
    let mut qkv = random_vec(tokens * 3 * hidden, 9);
    let x = random_vec(tokens * 2 * f, 10);
    let mut gated = vec![f32::NAN; tokens * f];
    let mut group = c.benchmark_group("cpu/modernbert");
    group.throughput(Throughput::Bytes((2 * tokens * 2 * hidden * 4) as u64));
    group.bench_function(format!("rotary/{tokens}x{heads}x{head_dim}"), |b| {
        pool.install(|| {
            b.iter(|| apply_rotary(&mut qkv, &offsets, heads, &rotary).expect("shapes agree"))
        })
    });
    group.throughput(Throughput::Bytes((3 * tokens * f * 4) as u64));
    group.bench_function(format!("geglu/{tokens}x{f}"), |b| {
        pool.install(|| {
            b.iter(|| {
                gated_activation(Activation::Gelu, &x, tokens, f, &mut gated).expect("shapes agree")
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

/// GFLOP/s of each of `calls` (each doing `flops`), timed in turns — one timing of each, 7
/// rounds, best of each kept — so that the machine's noise falls on all of them alike.
fn best_gflops_interleaved(flops: f64, calls: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let reps = ((2e9 / flops) as usize).clamp(1, 2000);
    let mut best = vec![0.0f64; calls.len()];
    for _ in 0..7 {
        for (call, best) in calls.iter_mut().zip(&mut best) {
            let start = Instant::now();
            for _ in 0..reps {
                call();
            }
            *best = best.max(flops * reps as f64 / start.elapsed().as_secs_f64() / 1e9);
        }
    }
    best
}

/// The GEMM and attention tables, each kernel per ISA next to the FMA peak probed in this run.
fn peak_table() {
    let pool = one_thread();
    let isas: Vec<(Isa, f64)> = supported_isas()
        .into_iter()
        .filter_map(|isa| Some((isa, fma_peak_gflops(isa, 200.0)?)))
        .collect();
    if isas.is_empty() {
        println!("\nno FMA probe on this CPU: no ratio table");
        return;
    }
    gemm_table(&pool, &isas);
    attention_table(&pool, &isas);
    for &(isa, peak) in &isas {
        println!("probe {}: {peak:.1} GFLOP/s", isa.name());
    }
}

/// Each GEMM shape per ISA next to its `peak` and to `matrixmultiply`, in one run.
fn gemm_table(pool: &rayon::ThreadPool, isas: &[(Isa, f64)]) {
    println!("\nGEMM, one thread: share of the FMA peak probed in this run, and speed-up over matrixmultiply");
    println!(
        "{:<7} {:<9} {:>16} {:>9} {:>8} {:>10} {:>8}",
        "isa", "layer", "T x K x N", "GFLOP/s", "% peak", "mm GFLOP/s", "× mm"
    );
    for (n, k, name) in SHAPES {
        let weight = random_vec(n * k, 1);
        let w = PackedLinear::new(&weight, None, n, k).expect("shapes agree");
        for t in TOKENS {
            let x = random_vec(t * k, 3);
            let flops = (2 * t * n * k) as f64;
            let mut out_peer = vec![0.0f32; t * n];
            let mut peer = || matrixmultiply_xwt(&x, &weight, t, n, k, &mut out_peer);
            let mut ours: Vec<Box<dyn FnMut()>> = isas
                .iter()
                .map(|&(isa, _)| {
                    let (x, w) = (&x, &w);
                    let mut out = vec![0.0f32; t * n];
                    Box::new(move || {
                        let out = &mut out;
                        pool.install(|| {
                            linear_with_isa(isa, x, t, w, Activation::Identity, None, out)
                                .expect("shapes agree")
                        })
                    }) as Box<dyn FnMut()>
                })
                .collect();
            let mut calls: Vec<&mut dyn FnMut()> = vec![&mut peer];
            calls.extend(ours.iter_mut().map(|c| &mut **c as &mut dyn FnMut()));
            let gflops = best_gflops_interleaved(flops, &mut calls);
            let peer = gflops[0];
            for (&(isa, peak), &ours) in isas.iter().zip(&gflops[1..]) {
                println!(
                    "{:<7} {name:<9} {:>16} {ours:>9.1} {:>7.1}% {peer:>10.1} {:>7.2}×",
                    isa.name(),
                    format!("{t}x{k}x{n}"),
                    100.0 * ours / peak,
                    ours / peer
                );
            }
        }
    }
}

/// Each of [`ATTENTION_CASES`] per ISA next to its `peak` and to the plain-loop reference (f64,
/// one thread), in one run, FLOPs as [`AttentionCase::flops`]. A windowed case runs on the
/// active ISA alone: `ember_cpu` has no public attention with both an explicit ISA and terms.
fn attention_table(pool: &rayon::ThreadPool, isas: &[(Isa, f64)]) {
    println!("\nAttention, one thread: share of the FMA peak probed in this run, and speed-up over the f64 reference");
    println!(
        "{:<7} {:<9} {:>16} {:>9} {:>8} {:>11} {:>8}",
        "isa", "keys", "S x L x H x hd", "GFLOP/s", "% peak", "ref GFLOP/s", "× ref"
    );
    for case in ATTENTION_CASES {
        let (qkv, offsets, mut out_ref) = case.inputs();
        let flops = case.flops() as f64;
        let out_len = out_ref.len();
        let mut reference = || {
            pool.install(|| {
                attention_varlen_reference_with_terms(
                    &qkv,
                    &offsets,
                    HEADS,
                    HEAD_DIM,
                    case.terms(),
                    &mut out_ref,
                )
                .expect("shapes agree")
            })
        };
        let rows: Vec<(Isa, f64)> = match case.window {
            None => isas.to_vec(),
            Some(_) => isas
                .iter()
                .copied()
                .filter(|&(isa, _)| isa == active_isa())
                .collect(),
        };
        let mut ours: Vec<Box<dyn FnMut()>> = rows
            .iter()
            .map(|&(isa, _)| {
                let (qkv, offsets) = (&qkv, &offsets);
                let mut out = vec![f32::NAN; out_len];
                Box::new(move || {
                    let out = &mut out;
                    pool.install(|| {
                        match case.window {
                            None => {
                                attention_varlen_with_isa(isa, qkv, offsets, HEADS, HEAD_DIM, out)
                            }
                            Some(_) => attention_varlen_with_terms(
                                qkv,
                                offsets,
                                HEADS,
                                HEAD_DIM,
                                case.terms(),
                                out,
                            ),
                        }
                        .expect("shapes agree")
                    })
                }) as Box<dyn FnMut()>
            })
            .collect();
        let mut calls: Vec<&mut dyn FnMut()> = vec![&mut reference];
        calls.extend(ours.iter_mut().map(|c| &mut **c as &mut dyn FnMut()));
        let gflops = best_gflops_interleaved(flops, &mut calls);
        let reference = gflops[0];
        let keys = case.window.map_or("all".to_owned(), |w| format!("±{w}"));
        let shape = format!("{}x{}x{HEADS}x{HEAD_DIM}", case.seqs, case.len);
        for (&(isa, peak), &ours) in rows.iter().zip(&gflops[1..]) {
            println!(
                "{:<7} {keys:<9} {shape:>16} {ours:>9.1} {:>7.1}% {reference:>11.1} {:>7.2}×",
                isa.name(),
                100.0 * ours / peak,
                ours / reference
            );
        }
    }
}

criterion_group!(
    benches,
    bench_linear,
    bench_matrixmultiply,
    bench_attention,
    bench_layernorm,
    bench_modernbert_elementwise
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    peak_table();
}
