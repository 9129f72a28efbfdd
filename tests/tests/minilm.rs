//! all-MiniLM-L6-v2 (the real published folder) against sentence-transformers on the committed
//! texts: tokenization, f32 embeddings, a vocab.txt-only copy, and f16/bf16-stored copies.

use ember::Embedder;
use ember_reference_tests::*;
use ember_tensor::DType;

fn reference() -> ModelReference {
    read_fixture("minilm_reference.json")
}

fn check_embeddings(embedder: &Embedder, reference: &ModelReference) -> Agreement {
    let embeddings = embedder.encode(&reference.texts).unwrap();
    let rows: Vec<&[f32]> = embeddings.rows().collect();
    agreement(&rows, &reference.embeddings)
}

#[test]
fn tokenization_matches_sentence_transformers() {
    let reference = reference();
    let embedder = Embedder::from_dir(minilm_dir()).unwrap();
    assert_eq!(embedder.max_seq_length(), reference.max_seq_length);
    assert_eq!(embedder.max_seq_length(), 256);
    for (i, (text, ids)) in reference.texts.iter().zip(&reference.input_ids).enumerate() {
        assert_eq!(&embedder.tokenize(text).unwrap(), ids, "text {i}: {text:?}");
    }
}

#[test]
fn f32_embeddings_match_sentence_transformers() {
    let reference = reference();
    assert!(reference.texts.len() >= 50);
    let embedder = Embedder::builder()
        .threads(2)
        .load_dir(&minilm_dir())
        .unwrap();
    assert_eq!(embedder.dim(), 384);
    assert!(embedder.normalizes());
    let a = check_embeddings(&embedder, &reference);
    assert_f32_bounds("all-MiniLM-L6-v2 f32", a);
}

#[test]
fn vocab_txt_only_folder_matches() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&minilm_dir(), dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let embedder = Embedder::from_dir(dir.path()).unwrap();
    for (i, (text, ids)) in reference.texts.iter().zip(&reference.input_ids).enumerate() {
        assert_eq!(&embedder.tokenize(text).unwrap(), ids, "text {i}: {text:?}");
    }
    let a = check_embeddings(&embedder, &reference);
    assert_f32_bounds("all-MiniLM-L6-v2 from vocab.txt", a);
}

#[test]
fn reduced_precision_weights_stay_close() {
    let reference = reference();
    for dtype in [DType::F16, DType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&minilm_dir(), dir.path());
        convert_weights(dir.path(), dtype);
        let embedder = Embedder::from_dir(dir.path()).unwrap();
        let a = check_embeddings(&embedder, &reference);
        println!(
            "all-MiniLM-L6-v2 {dtype:?} weights: min cosine {:.6}, max |diff| {:.3e}",
            a.min_cosine, a.max_abs_diff
        );
        assert!(
            a.min_cosine >= 0.999,
            "{dtype:?}: min cosine {} (row {})",
            a.min_cosine,
            a.worst_row
        );
    }
}
