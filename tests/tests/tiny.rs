//! Tiny random BERTs made by the reference script (odd sizes: H = 52, 4 heads of 13, FFN 76,
//! 2 layers; gelu, gelu_new and relu) under every pooling mode and combination, with and
//! without Normalize, against sentence-transformers.

use std::path::Path;

use ember::Embedder;
use ember_reference_tests::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct TinyReference {
    texts: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    folder: String,
    pooling_mode: Vec<String>,
    normalize: bool,
    embeddings: Vec<Vec<f32>>,
}

const CANONICAL: [&str; 6] = [
    "cls",
    "max",
    "mean",
    "mean_sqrt_len_tokens",
    "weightedmean",
    "lasttoken",
];
const LEGACY_KEYS: [&str; 6] = [
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
];

/// A copy of `folder` with the case's pooling and Normalize. Canonical-order combinations use
/// the legacy boolean config (as most published folders do), others the `pooling_mode` list.
fn folder_for(case: &Case, dest: &Path) {
    copy_dir(&fixtures_dir().join(&case.folder), dest);
    let canonical: Vec<&str> = CANONICAL
        .iter()
        .copied()
        .filter(|m| case.pooling_mode.iter().any(|c| c == m))
        .collect();
    let pooling = if canonical == case.pooling_mode {
        let mut object = serde_json::Map::new();
        object.insert("word_embedding_dimension".into(), 52.into());
        for (key, mode) in LEGACY_KEYS.iter().zip(CANONICAL) {
            object.insert((*key).into(), canonical.contains(&mode).into());
        }
        serde_json::Value::Object(object)
    } else {
        serde_json::json!({"embedding_dimension": 52, "pooling_mode": case.pooling_mode, "include_prompt": true})
    };
    std::fs::write(dest.join("1_Pooling/config.json"), pooling.to_string()).unwrap();
    let mut modules = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if case.normalize {
        modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    std::fs::write(
        dest.join("modules.json"),
        serde_json::Value::Array(modules).to_string(),
    )
    .unwrap();
}

#[test]
fn every_pooling_combination_matches_sentence_transformers() {
    let reference: TinyReference = read_fixture("tiny_reference.json");
    assert!(
        reference.cases.len() >= 63 + 4,
        "{} cases",
        reference.cases.len()
    );
    let mut worst = Agreement {
        min_cosine: 1.0,
        max_abs_diff: 0.0,
        worst_row: 0,
    };
    for case in &reference.cases {
        let dir = tempfile::tempdir().unwrap();
        folder_for(case, dir.path());
        let embedder = Embedder::builder()
            .threads(2)
            .batch_size(7)
            .load_dir(dir.path())
            .unwrap();
        let embeddings = embedder.encode(&reference.texts).unwrap();
        let rows: Vec<&[f32]> = embeddings.rows().collect();
        let a = agreement(&rows, &case.embeddings);
        let what = format!(
            "{} {:?} normalize={}",
            case.folder, case.pooling_mode, case.normalize
        );
        assert!(
            a.min_cosine >= 0.99999 && a.max_abs_diff <= 1e-4,
            "{what}: min cosine {} (row {}), max |diff| {}",
            a.min_cosine,
            a.worst_row,
            a.max_abs_diff
        );
        worst.min_cosine = worst.min_cosine.min(a.min_cosine);
        worst.max_abs_diff = worst.max_abs_diff.max(a.max_abs_diff);
    }
    assert_f32_bounds(
        &format!("tiny BERTs, {} pooling cases", reference.cases.len()),
        worst,
    );
}

#[test]
fn plain_transformers_folder_means_mean_pooling() {
    let reference: TinyReference = read_fixture("tiny_reference.json");
    let case = reference
        .cases
        .iter()
        .find(|c| c.folder == "tiny-bert" && c.pooling_mode == ["mean"] && !c.normalize)
        .expect("a mean case");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert"), dir.path());
    std::fs::remove_file(dir.path().join("modules.json")).unwrap();
    std::fs::remove_dir_all(dir.path().join("1_Pooling")).unwrap();
    // Without sentence_bert_config.json the length limit comes from the tokenizer config.
    let embedder = Embedder::from_dir(dir.path()).unwrap();
    let embeddings = embedder.encode(&reference.texts[..1]).unwrap();
    let a = agreement(&[embeddings.row(0)], &case.embeddings[..1]);
    assert_f32_bounds("tiny BERT without modules.json", a);
}
