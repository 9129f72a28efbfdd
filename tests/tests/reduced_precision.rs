//! `--dtype bf16` on the real all-MiniLM-L6-v2: every row within cosine 0.999 of
//! sentence-transformers (f32), whatever the stored weight dtype, and rows bit-identical across
//! batches, batch sizes and thread counts within the dtype. (The SBERT-base-shaped check is in
//! `sbert_base_seeded.rs`, which already generates that model.)

use ember::{Embedder, Precision};
use ember_reference_tests::*;
use ember_tensor::DType;

fn reference() -> ModelReference {
    read_fixture("minilm_reference.json")
}

fn bf16_embedder(dir: &std::path::Path, threads: usize, batch_size: usize) -> Embedder {
    Embedder::builder()
        .threads(threads)
        .batch_size(batch_size)
        .dtype(Precision::Bf16)
        .load_dir(dir)
        .unwrap()
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
    let reference = reference();
    let texts = &reference.texts;
    let dir = minilm_dir();
    let batched = bf16_embedder(&dir, 2, 16).encode(texts).unwrap();
    let alone = bf16_embedder(&dir, 1, 1);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            alone.encode(&[text]).unwrap().row(0),
            batched.row(i),
            "text {i} alone vs batched"
        );
    }
    let mut mixed: Vec<String> = texts.iter().rev().cloned().collect();
    mixed.extend(texts.iter().map(|t| format!("{t} {t}")));
    let in_mixed = bf16_embedder(&dir, 2, 1000).encode(&mixed).unwrap();
    let n = texts.len();
    for i in 0..n {
        assert_eq!(in_mixed.row(n - 1 - i), batched.row(i), "text {i} mixed");
    }
}
