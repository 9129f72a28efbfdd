//! `--dtype bf16` and `--dtype int8` on the real all-MiniLM-L6-v2: every row within cosine
//! 0.999 of sentence-transformers (f32), whatever the stored weight
//! dtype; the nearest neighbour of corpus lines the same as with f32 (see
//! `assert_nearest_neighbours_agree` and its callers for the bounds); rows bit-identical across batches, batch
//! sizes and thread counts within the dtype.
//! (The SBERT-base-shaped checks are in `sbert_base_seeded.rs`, which already generates that
//! model.)

use ember::{Embedder, Precision};
use ember_reference_tests::*;
use ember_tensor::DType;

fn reference() -> ModelReference {
    read_fixture("minilm_reference.json")
}

fn embedder(
    dtype: Precision,
    dir: &std::path::Path,
    threads: usize,
    batch_size: usize,
) -> Embedder {
    Embedder::builder()
        .threads(threads)
        .batch_size(batch_size)
        .dtype(dtype)
        .load_dir(dir)
        .unwrap()
}

fn bf16_embedder(dir: &std::path::Path, threads: usize, batch_size: usize) -> Embedder {
    embedder(Precision::Bf16, dir, threads, batch_size)
}

fn int8_embedder(dir: &std::path::Path, threads: usize, batch_size: usize) -> Embedder {
    embedder(Precision::Int8, dir, threads, batch_size)
}

#[test]
fn bf16_compute_stays_within_cosine_0_999() {
    let reference = reference();
    let embedder = bf16_embedder(&minilm_dir(), 2, 32);
    assert_eq!(embedder.dtype(), Precision::Bf16);
    let embeddings = embedder.encode(&reference.texts).unwrap();
    let rows: Vec<&[f32]> = embeddings.rows().collect();
    let a = agreement(&rows, &reference.embeddings);
    assert_cosine_bound("all-MiniLM-L6-v2 bf16 compute", a, 0.999);
    // Not trivially exact either: bf16 really is in use.
    assert!(a.max_abs_diff > 1e-6, "bf16 results equal f32 to 1e-6");

    // Weights stored as f16 or bf16, multiplied in bf16.
    for dtype in [DType::F16, DType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&minilm_dir(), dir.path());
        convert_weights(dir.path(), dtype);
        let embedder = bf16_embedder(dir.path(), 2, 32);
        let embeddings = embedder.encode(&reference.texts).unwrap();
        let rows: Vec<&[f32]> = embeddings.rows().collect();
        assert_cosine_bound(
            &format!("all-MiniLM-L6-v2 stored {dtype:?}, bf16 compute"),
            agreement(&rows, &reference.embeddings),
            0.999,
        );
    }
}

#[test]
fn bf16_rows_are_bit_identical_across_batches_and_threads() {
    rows_are_bit_identical_across_batches_and_threads(Precision::Bf16);
}

#[test]
fn int8_rows_are_bit_identical_across_batches_and_threads() {
    rows_are_bit_identical_across_batches_and_threads(Precision::Int8);
}

#[test]
fn int8_compute_stays_within_cosine_0_999() {
    let reference = reference();
    let embedder = int8_embedder(&minilm_dir(), 2, 32);
    assert_eq!(embedder.dtype(), Precision::Int8);
    let embeddings = embedder.encode(&reference.texts).unwrap();
    let rows: Vec<&[f32]> = embeddings.rows().collect();
    let a = agreement(&rows, &reference.embeddings);
    // Measured: 0.99927 (0.9935 with plain per-token × per-channel int8, 0.99893 with the
    // calibrated exact channels, 0.99934 with rotated channels, 0.99927 with GPTQ rounding,
    // which lowers the mean error by a third but not this worst row's; the issue asks 0.99).
    assert_cosine_bound("all-MiniLM-L6-v2 int8 compute", a, 0.999);
    assert!(a.max_abs_diff > 1e-4, "int8 results equal f32 to 1e-4");

    // Weights stored as f16 or bf16, quantised from their widened values.
    for dtype in [DType::F16, DType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&minilm_dir(), dir.path());
        convert_weights(dir.path(), dtype);
        let embedder = int8_embedder(dir.path(), 2, 32);
        let embeddings = embedder.encode(&reference.texts).unwrap();
        let rows: Vec<&[f32]> = embeddings.rows().collect();
        assert_cosine_bound(
            &format!("all-MiniLM-L6-v2 stored {dtype:?}, int8 compute"),
            agreement(&rows, &reference.embeddings),
            0.999,
        );
    }
}

#[test]
fn bf16_nearest_neighbours_agree_with_f32() {
    // Measured: 1238/1244 (99.52 %).
    assert_nearest_neighbours_agree(Precision::Bf16, 0.99);
}

#[test]
fn int8_nearest_neighbours_agree_with_f32() {
    // The goal, 98 %. Measured: 1226/1244 (98.55 %) with AVX512_VNNI, 1229/1244
    // (98.79 %) on the AVX2 path (GELU and f32 rounding differ a little by ISA, and so does
    // the f32 run compared against). History on this corpus, mean 1 − cos(int8, f32) and this share:
    // plain per-token u8 × per-channel i8, 1.1e-3; the 4 calibrated exact channels per
    // linear, 3.1e-4 and 96.9 %; rotated channels (ember_cpu's `from_weight_int8`; all 24
    // linears of this model rotate), 1.9e-4 and 97.67 %; GPTQ rounding in act order
    // against 480 calibration sentences (crates/ember/src/calibration/, written for it,
    // not this corpus), 1.2e-4 and 98.55 % (98.23 % with `XᵀX` from the f32 GEMM rather
    // than the bf16 one, the same mean error). At this error the count is still partly
    // rounding luck (15 of the first 400 queries have a top-1/top-2 margin under 0.002):
    // simulated variants at 1.2e-4 land between 97.8 and 98.6 %.
    assert_nearest_neighbours_agree(Precision::Int8, 0.98);
}

/// Every line of the benchmark corpus, as a query, finds its most similar other line
/// (cosine); with `dtype` it must be the same line as with f32 for at least `min_share` of
/// the queries.
fn assert_nearest_neighbours_agree(dtype: Precision, min_share: f64) {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/corpus/wordnet-examples.txt");
    let text = std::fs::read_to_string(&corpus).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 1000, "{}: too few lines", corpus.display());
    let dir = minilm_dir();
    let f32_rows = embedder(Precision::F32, &dir, 2, 32)
        .encode(&lines)
        .unwrap();
    let dtype_rows = embedder(dtype, &dir, 2, 32).encode(&lines).unwrap();
    let nearest = |e: &ember::Embeddings| -> Vec<usize> {
        let rows: Vec<Vec<f64>> = e
            .rows()
            .map(|r| {
                let norm = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                r.iter().map(|&v| v as f64 / norm.max(1e-300)).collect()
            })
            .collect();
        (0..rows.len())
            .map(|q| {
                let cosine =
                    |j: usize| -> f64 { rows[q].iter().zip(&rows[j]).map(|(a, b)| a * b).sum() };
                (0..rows.len())
                    .filter(|&j| j != q)
                    .map(|j| (j, cosine(j)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap()
                    .0
            })
            .collect()
    };
    let (want, got) = (nearest(&f32_rows), nearest(&dtype_rows));
    let queries = lines.len();
    let same = want.iter().zip(&got).filter(|(a, b)| a == b).count();
    let share = same as f64 / queries as f64;
    println!(
        "{dtype} nearest neighbour = f32's for {same}/{queries} queries ({:.2} %)",
        100.0 * share
    );
    assert!(
        share >= min_share,
        "{dtype} nearest neighbour agrees with f32 for only {same}/{queries} queries \
         (bound {min_share})"
    );
}

fn rows_are_bit_identical_across_batches_and_threads(dtype: Precision) {
    let reference = reference();
    let texts = &reference.texts;
    let dir = minilm_dir();
    let batched = embedder(dtype, &dir, 2, 16).encode(texts).unwrap();
    let alone = embedder(dtype, &dir, 1, 1);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            alone.encode(&[text]).unwrap().row(0),
            batched.row(i),
            "{dtype}: text {i} alone vs batched"
        );
    }
    let mut mixed: Vec<String> = texts.iter().rev().cloned().collect();
    mixed.extend(texts.iter().map(|t| format!("{t} {t}")));
    let in_mixed = embedder(dtype, &dir, 2, 1000).encode(&mixed).unwrap();
    let n = texts.len();
    for i in 0..n {
        assert_eq!(
            in_mixed.row(n - 1 - i),
            batched.row(i),
            "{dtype}: text {i} mixed"
        );
    }
}
