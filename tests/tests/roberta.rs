//! The RoBERTa family (`RobertaModel`, `XLMRobertaModel`): tiny random models made by the
//! reference script (tests/fixtures/tiny-roberta: byte-level BPE, mean pooling;
//! tiny-xlm-roberta: SentencePiece Unigram, CLS pooling + Normalize) against
//! sentence-transformers, on texts that hold the literal padding token `<pad>` (RoBERTa gives it
//! the padding position row and does not count it), the empty text and one truncated to
//! `max_seq_length`.

use std::collections::BTreeMap;

use ember::{Embedder, Precision};
use ember_reference_tests::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct RobertaReference {
    max_seq_length: usize,
    texts: Vec<String>,
    models: BTreeMap<String, ModelCase>,
}

#[derive(Deserialize)]
struct ModelCase {
    input_ids: Vec<Vec<u32>>,
    /// The position rows transformers derives from `input_ids`.
    position_ids: Vec<Vec<usize>>,
    num_tokens_untruncated: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

/// RoBERTa's and XLM-R's `<pad>`.
const PAD: u32 = 1;

fn load(folder: &str, dtype: Precision, batch: usize) -> Embedder {
    Embedder::builder()
        .threads(2)
        .batch_size(batch)
        .dtype(dtype)
        .load_dir(&fixtures_dir().join(folder))
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
}

fn reference() -> RobertaReference {
    let reference: RobertaReference = read_fixture("tiny_roberta_reference.json");
    assert_eq!(
        reference.models.keys().collect::<Vec<_>>(),
        ["tiny-roberta", "tiny-xlm-roberta"]
    );
    reference
}

#[test]
fn token_ids_match_the_python_tokenizers() {
    let reference = reference();
    for (folder, case) in &reference.models {
        let embedder = load(folder, Precision::F32, 8);
        assert_eq!(embedder.max_seq_length(), reference.max_seq_length);
        for (i, text) in reference.texts.iter().enumerate() {
            let ids = embedder.tokenize(text).unwrap();
            assert_eq!(ids, case.input_ids[i], "{folder}: text {i} {text:?}");
        }
        // The position rows Ember takes are transformers' own.
        let config =
            ember_bert::BertConfig::from_file(&fixtures_dir().join(folder).join("config.json"))
                .unwrap();
        for (ids, want) in case.input_ids.iter().zip(&case.position_ids) {
            let rows: Vec<usize> = config.position_ids.rows(ids).collect();
            assert_eq!(&rows, want, "{folder}: {ids:?}");
        }
        // The texts exercise what RoBERTa does differently: `<pad>` inside a text, and
        // truncation.
        assert!(case.input_ids.iter().any(|ids| ids[1..].contains(&PAD)));
        assert!(case
            .num_tokens_untruncated
            .iter()
            .any(|&n| n > reference.max_seq_length));
    }
}

#[test]
fn f32_matches_sentence_transformers() {
    let reference = reference();
    for (folder, case) in &reference.models {
        for batch in [1, 3, 64] {
            let embeddings = load(folder, Precision::F32, batch)
                .encode(&reference.texts)
                .unwrap();
            let rows: Vec<&[f32]> = embeddings.rows().collect();
            assert_f32_bounds(
                &format!("{folder} f32, batch {batch}"),
                agreement(&rows, &case.embeddings),
            );
        }
    }
}

#[test]
fn reduced_precision_stays_within_cosine_0_999() {
    let reference = reference();
    for (folder, case) in &reference.models {
        for dtype in [Precision::Bf16, Precision::Int8] {
            let embeddings = load(folder, dtype, 16).encode(&reference.texts).unwrap();
            let rows: Vec<&[f32]> = embeddings.rows().collect();
            let bound = if dtype == Precision::Int8 {
                0.99
            } else {
                0.999
            };
            assert_cosine_bound(
                &format!("{folder} {dtype:?}"),
                agreement(&rows, &case.embeddings),
                bound,
            );
        }
    }
}

#[test]
fn a_text_is_the_same_alone_and_batched() {
    let reference = reference();
    for folder in reference.models.keys() {
        let embedder = load(folder, Precision::F32, 64);
        let batched = embedder.encode(&reference.texts).unwrap();
        for (i, text) in reference.texts.iter().enumerate() {
            let alone = embedder.encode(std::slice::from_ref(text)).unwrap();
            assert_eq!(alone.row(0), batched.row(i), "{folder}: text {i} {text:?}");
        }
    }
}

#[test]
fn a_longer_max_seq_length_than_the_positions_hold_is_refused() {
    // 66 position rows, from pad_token_id + 1 = 2: 64 tokens at most.
    let dir = fixtures_dir().join("tiny-roberta");
    Embedder::builder()
        .max_seq_length(64)
        .load_dir(&dir)
        .unwrap();
    let Err(err) = Embedder::builder().max_seq_length(65).load_dir(&dir) else {
        panic!("max_seq_length 65 loaded");
    };
    let err = err.to_string();
    assert!(
        err.contains("max_position_embeddings 66 less the 2 rows"),
        "{err}"
    );
}
