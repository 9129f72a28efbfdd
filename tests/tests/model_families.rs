//! The families beside BERT: RoBERTa (`RobertaModel`, `XLMRobertaModel`), MPNet (`MPNetModel`,
//! all-mpnet-base-v2's architecture) and DistilBERT, and sentence-transformers' Dense module.
//! Tiny random models made by the reference script, against sentence-transformers:
//! - tiny-roberta (byte-level BPE, mean pooling), tiny-xlm-roberta (SentencePiece Unigram, CLS
//!   pooling + Normalize), tiny-xlmr-spm (a tokenizer trained by sentencepiece and converted as
//!   transformers converts xlm-roberta-base's: the nmt_nfkc charsmap, right strip, runs of spaces
//!   to "▁"; mean pooling + Normalize, on texts the charsmap rewrites) and tiny-mpnet (WordPiece with `<s> … </s>`, mean pooling +
//!   Normalize, a relative position bias, 128 tokens), on texts that hold the literal padding
//!   token `<pad>` (both families give it the padding position row and do not count it);
//! - tiny-distilbert with a Dense module (48 → 24, tanh; distiluse's chain), and tiny-bert
//!   under CLS pooling → Dense (tanh) → Normalize (LaBSE's chain) and mean pooling → Dense
//!   without bias or activation;
//! - tiny-modernbert(-bias), tiny-nomic-bert(-theta), and GTE: tiny-gte (WordPiece, no
//!   token-type table, CLS pooling: gte-base-en-v1.5's kind), tiny-gte-multilingual (XLM-R's
//!   tokenizer, chosen by `model_type` "gte"; weights under a `new.` prefix; mean + Normalize)
//!   and tiny-gte-new (Alibaba-NLP's published config format, `model_type` "new", with the
//!   fixed NTK rotary scaling of gte-base-en-v1.5);
//! - JinaBERT (jina-embeddings-v2's ALiBi and GLU feed-forward, Jina's published config):
//!   tiny-jina (GEGLU, 6 heads: ALiBi's slopes for a head count that is not a power of two),
//!   tiny-jina-reglu (ReGLU, 8 heads, a `bert.` prefix, mean + Normalize) and
//!   tiny-jina-original (BERT's feed-forward with `gelu_new`, CLS pooling);
//!
//! all on the empty text and texts truncated to `max_seq_length`.

use std::collections::BTreeMap;
use std::rc::Rc;

use ember::{Embedder, Precision};
use ember_reference_tests::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    texts: Vec<String>,
    models: BTreeMap<String, ModelCase>,
}

#[derive(Deserialize)]
struct ModelCase {
    input_ids: Vec<Vec<u32>>,
    /// The position rows transformers derives from `input_ids` (RoBERTa and MPNet only).
    #[serde(default)]
    position_ids: Vec<Vec<usize>>,
    num_tokens_untruncated: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

/// RoBERTa's and XLM-R's `<pad>`.
const PAD: u32 = 1;

fn load(folder: impl AsRef<str>, dtype: Precision, batch: usize) -> Embedder {
    let folder = folder.as_ref();
    Embedder::builder()
        .threads(2)
        .batch_size(batch)
        .dtype(dtype)
        .load_dir(&fixtures_dir().join(folder))
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
}

/// The reference files and the folders each holds.
const REFERENCES: [(&str, &[&str]); 8] = [
    (
        "tiny_roberta_reference.json",
        &["tiny-roberta", "tiny-xlm-roberta"],
    ),
    ("tiny_xlmr_spm_reference.json", &["tiny-xlmr-spm"]),
    (
        "tiny_nomic_reference.json",
        &["tiny-nomic-bert", "tiny-nomic-bert-theta"],
    ),
    ("tiny_mpnet_reference.json", &["tiny-mpnet"]),
    (
        "tiny_distilbert_dense_reference.json",
        &[
            "tiny-bert-dense",
            "tiny-bert-dense-identity",
            "tiny-distilbert",
        ],
    ),
    (
        "tiny_modernbert_reference.json",
        &["tiny-modernbert", "tiny-modernbert-bias"],
    ),
    (
        "tiny_gte_reference.json",
        &["tiny-gte", "tiny-gte-multilingual", "tiny-gte-new"],
    ),
    (
        "tiny_jina_reference.json",
        &["tiny-jina", "tiny-jina-original", "tiny-jina-reglu"],
    ),
];

/// Every model folder, with its reference file.
fn models() -> Vec<(Rc<Reference>, String)> {
    let mut models = Vec::new();
    for (file, folders) in REFERENCES {
        let reference: Rc<Reference> = Rc::new(read_fixture(file));
        assert_eq!(reference.models.keys().collect::<Vec<_>>(), folders);
        for folder in folders {
            models.push((reference.clone(), folder.to_string()));
        }
    }
    models
}

#[derive(Deserialize)]
struct MpnetBuckets {
    relative_buckets: Buckets,
}

#[derive(Deserialize)]
struct Buckets {
    num_buckets: usize,
    max_distance: usize,
    relative_positions: Vec<i64>,
    buckets: Vec<usize>,
}

#[test]
fn mpnet_buckets_are_torch_s() {
    let b = read_fixture::<MpnetBuckets>("tiny_mpnet_reference.json").relative_buckets;
    assert_eq!(
        (b.num_buckets, b.max_distance),
        (ember_bert::MPNET_BUCKETS, ember_bert::MPNET_MAX_DISTANCE)
    );
    assert!(b.relative_positions.len() > 1000);
    for (&d, &want) in b.relative_positions.iter().zip(&b.buckets) {
        let got = ember_bert::relative_position_bucket(d, b.num_buckets, b.max_distance);
        assert_eq!(got, want, "relative position {d}");
    }
}

#[test]
fn token_ids_match_the_python_tokenizers() {
    for (reference, folder) in &models() {
        let case = &reference.models[folder];
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
        // The texts exercise what RoBERTa and MPNet do differently: `<pad>` inside a text (its
        // position rows are in the reference), and truncation.
        if config.position_ids != ember_bert::PositionIds::FromZero {
            assert_eq!(case.position_ids.len(), case.input_ids.len(), "{folder}");
            assert!(case.input_ids.iter().any(|ids| ids[1..].contains(&PAD)));
        }
        assert!(case
            .num_tokens_untruncated
            .iter()
            .any(|&n| n > reference.max_seq_length));
    }
}

#[test]
fn f32_matches_sentence_transformers() {
    for (reference, folder) in &models() {
        let case = &reference.models[folder];
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
    for (reference, folder) in &models() {
        let case = &reference.models[folder];
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
    for (reference, folder) in &models() {
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

/// Alibaba-NLP's `"pack_qkv": false` keeps Q, K and V apart (`attention.{q,k,v}_proj`): the
/// same weights stored so give tiny-gte-new's rows bit for bit. In a transformers `"gte"`
/// config, which reads only `qkv_proj`, they are refused, naming the missing tensor.
#[test]
fn gte_split_qkv_is_the_packed_model() {
    let packed = fixtures_dir().join("tiny-gte-new");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&packed, dir.path());
    let path = dir.path().join("model.safetensors");
    let file = ember_tensor::SafeTensorsFile::open(&path).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut split = 0;
    for name in file.names() {
        let t = file.f32_tensor(name).unwrap();
        let Some((stem, kind)) = name
            .strip_suffix(".weight")
            .map(|s| (s, "weight"))
            .or_else(|| name.strip_suffix(".bias").map(|s| (s, "bias")))
            .and_then(|(s, kind)| Some((s.strip_suffix(".qkv_proj")?, kind)))
        else {
            tensors.push((name.to_owned(), t.shape().to_vec(), t.data().to_vec()));
            continue;
        };
        split += 1;
        let third = t.data().len() / 3;
        let mut shape = t.shape().to_vec();
        shape[0] /= 3;
        for (i, part) in ["q", "k", "v"].iter().enumerate() {
            let values = t.data()[i * third..(i + 1) * third].to_vec();
            tensors.push((format!("{stem}.{part}_proj.{kind}"), shape.clone(), values));
        }
    }
    drop(file);
    assert_eq!(split, 4, "two layers' qkv_proj weight and bias");
    write_f32_safetensors(&path, &tensors);
    let config_path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("\"pack_qkv\": true"));
    std::fs::write(
        &config_path,
        config.replace("\"pack_qkv\": true", "\"pack_qkv\": false"),
    )
    .unwrap();

    let reference: Reference = read_fixture("tiny_gte_reference.json");
    let texts = &reference.texts;
    let want = load("tiny-gte-new", Precision::F32, 8)
        .encode(texts)
        .unwrap();
    let got = Embedder::builder()
        .threads(2)
        .batch_size(8)
        .load_dir(dir.path())
        .unwrap()
        .encode(texts)
        .unwrap();
    assert_eq!(
        got.rows().collect::<Vec<_>>(),
        want.rows().collect::<Vec<_>>()
    );

    std::fs::write(
        &config_path,
        config
            .replace("\"pack_qkv\": true", "\"pack_qkv\": false")
            .replace("\"model_type\": \"new\"", "\"model_type\": \"gte\"")
            .replace("\"rope_scaling\"", "\"unused_rope_scaling\""),
    )
    .unwrap();
    let Err(err) = Embedder::from_dir(dir.path()) else {
        panic!("a \"gte\" config ran split q/k/v_proj");
    };
    let err = err.to_string();
    assert!(
        err.contains("encoder.layer.0.attention.qkv_proj.weight"),
        "{err}"
    );
}

/// `folders` of `reference_file` with their weights stored in f16 and in bf16: cosine ≥ 0.999 to
/// sentence-transformers' f32 rows.
fn half_precision_stored_stays_within_cosine_0_999(reference_file: &str, folders: &[&str]) {
    let reference: Reference = read_fixture(reference_file);
    for folder in folders {
        for dtype in [ember_tensor::DType::F16, ember_tensor::DType::BF16] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(&fixtures_dir().join(folder), dir.path());
            rewrite_weights(dir.path(), dtype, |_| true);
            let embeddings = Embedder::builder()
                .threads(2)
                .load_dir(dir.path())
                .unwrap()
                .encode(&reference.texts)
                .unwrap();
            let rows: Vec<&[f32]> = embeddings.rows().collect();
            assert_cosine_bound(
                &format!("{folder} stored as {dtype:?}"),
                agreement(&rows, &reference.models[*folder].embeddings),
                0.999,
            );
        }
    }
}

/// GTE checkpoints stored in f16 or bf16 (`up_gate_proj`'s halves swapped at their stored
/// width).
#[test]
fn gte_in_half_precision_stays_within_cosine_0_999() {
    half_precision_stored_stays_within_cosine_0_999(
        "tiny_gte_reference.json",
        &["tiny-gte", "tiny-gte-multilingual"],
    );
}

#[derive(Deserialize)]
struct JinaReference {
    models: BTreeMap<String, JinaCase>,
}

#[derive(Deserialize)]
struct JinaCase {
    num_attention_heads: usize,
    /// `[[slope per head]]`, as Jina's `_get_alibi_head_slopes` gives them in f32.
    alibi_slopes: Vec<Vec<f32>>,
}

/// ALiBi's slopes are the published formula's, bit for bit, for 4, 6 and 8 heads (6: the
/// interleaved series a head count that is not a power of two takes, as base-en's 12).
#[test]
fn alibi_slopes_are_jina_s() {
    let reference: JinaReference = read_fixture("tiny_jina_reference.json");
    for (folder, case) in &reference.models {
        let got = ember_bert::alibi_slopes(case.num_attention_heads);
        assert_eq!(got, case.alibi_slopes[0], "{folder}");
    }
    // jina-embeddings-v2-base-en's 12 heads: the slopes of 8, then every other one of 16's.
    let base: Vec<f32> = [1, 2, 3, 4, 5, 6, 7, 8]
        .iter()
        .map(|&i| 0.5f32.powi(i))
        .chain([0.5f32, 1.5, 2.5, 3.5].iter().map(|&e| 2f32.powf(-e)))
        .collect();
    assert_eq!(ember_bert::alibi_slopes(12), base);
}

/// JinaBERT checkpoints stored in f16 or bf16.
#[test]
fn jina_in_half_precision_stays_within_cosine_0_999() {
    half_precision_stored_stays_within_cosine_0_999(
        "tiny_jina_reference.json",
        &["tiny-jina", "tiny-jina-reglu"],
    );
}

/// Jina's qk-post-norm code (jina-embeddings-v2-base-code) normalises Q and K: refused by its
/// `auto_map`, and by its `layer_norm_q` tensors where the config does not say.
#[test]
fn jina_qk_post_norm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-jina"), dir.path());
    let config_path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("jina-bert-implementation--", "jina-bert-v2-qk-post-norm--"),
    )
    .unwrap();
    let Err(err) = Embedder::from_dir(dir.path()) else {
        panic!("a qk-post-norm config loaded");
    };
    assert!(err.to_string().contains("qk-post-norm"), "{err}");

    std::fs::write(&config_path, &config).unwrap();
    let path = dir.path().join("model.safetensors");
    let file = ember_tensor::SafeTensorsFile::open(&path).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .names()
        .map(|name| {
            let t = file.f32_tensor(name).unwrap();
            (name.to_owned(), t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    drop(file);
    for (name, shape) in [("layer_norm_q.weight", 48), ("layer_norm_q.bias", 48)] {
        tensors.push((
            format!("encoder.layer.0.attention.self.{name}"),
            vec![shape],
            vec![1.0; shape],
        ));
    }
    write_f32_safetensors(&path, &tensors);
    let Err(err) = Embedder::from_dir(dir.path()) else {
        panic!("a model with layer_norm_q loaded");
    };
    let err = err.to_string();
    assert!(
        err.contains("encoder.layer.0.attention.self.layer_norm_q.weight")
            && err.contains("qk-post-norm"),
        "{err}"
    );
}
