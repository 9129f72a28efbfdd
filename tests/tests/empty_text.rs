//! Texts that tokenize to no tokens at all: possible when the tokenizer adds no special tokens
//! (`tokenizer.json` with `"post_processor": null`, taken as it is: `tokenizer_class`
//! `PreTrainedTokenizerFast`; transformers' `BertTokenizer` would add `[CLS]` and `[SEP]`
//! anyway, see tokenizer_class.rs) and the text is `""`.
//!
//! sentence-transformers pads such a text to the batch with an all-zero attention mask; its
//! mean pooling divides the masked sum (0) by `clamp(Σ mask, min=1e-9)`, so the pooled row is
//! zeros (also for `mean_sqrt_len_tokens` and `weightedmean`), which a Dense module then maps
//! to `act(b)` and `Normalize` (`x / max(‖x‖, 1e-12)`) leaves at zero; `lasttoken` gathers
//! from `token_embeddings * mask` (sentence-transformers 6.2, the pinned reference), zeros too.
//! Ember gives the same rows; for `cls` and `max`, which would read a padding token's state
//! (or the `-inf` fill), the call fails naming the text's index in the caller's list. Before, any such text
//! failed the whole call with the packed batch's offsets ("sequence 3..3 must hold 1..=64
//! tokens").

use std::path::Path;

use ember::{Embedder, EmberError};
use ember_reference_tests::{copy_dir, fixtures_dir};
use ember_tensor::WeightFile;
use serde_json::Value;

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(value.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// A copy of fixture `name` whose tokenizer adds no special tokens, pooling with `mode`.
fn without_special_tokens(name: &str, mode: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join(name), dir.path());
    edit_json(&dir.path().join("tokenizer.json"), |json| {
        json.insert("post_processor".into(), Value::Null);
    });
    edit_json(&dir.path().join("tokenizer_config.json"), |json| {
        json.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    });
    edit_json(&dir.path().join("1_Pooling/config.json"), |json| {
        json.retain(|key, _| !key.starts_with("pooling_mode"));
        json.insert("pooling_mode".into(), Value::String(mode.into()));
    });
    dir
}

fn load(dir: &Path) -> Embedder {
    Embedder::builder()
        .threads(1)
        .load_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn norm(row: &[f32]) -> f64 {
    row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn an_empty_text_pools_to_zeros_under_the_means_and_lasttoken() {
    for mode in ["mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"] {
        let dir = without_special_tokens("tiny-bert", mode);
        let embedder = load(dir.path());
        assert_eq!(embedder.tokenize("").unwrap(), Vec::<u32>::new(), "{mode}");
        assert!(!embedder.tokenize("hello").unwrap().is_empty());

        let got = embedder
            .encode(&["hello", "", "world"])
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(got.row(1), vec![0.0; embedder.dim()], "{mode}");
        // The other rows are what those texts give alone.
        for (i, text) in [(0, "hello"), (2, "world")] {
            assert_eq!(
                got.row(i),
                embedder.encode(&[text]).unwrap().row(0),
                "{mode} {text}"
            );
            assert!(norm(got.row(i)) > 0.0);
        }
        // Only empty texts, more than a batch of them, and a report of 0 tokens.
        let batch1 = Embedder::builder()
            .threads(1)
            .batch_size(1)
            .load_dir(dir.path())
            .unwrap();
        let only_empty = batch1.encode(&["", "", ""]).unwrap();
        assert!(only_empty.as_slice().iter().all(|&x| x == 0.0), "{mode}");
        assert_eq!(batch1.encode(&["hello", "", "world"]).unwrap(), got);
        let (_, reports) = embedder.encode_with_report(&["hello", ""]).unwrap();
        assert_eq!(reports[1].tokens, 0);
        assert!(reports[0].tokens > 0);

        // Normalize keeps a zero row at zero (torch's F.normalize clamps the norm).
        let normalized = Embedder::builder()
            .threads(1)
            .normalize(true)
            .load_dir(dir.path())
            .unwrap()
            .encode(&["hello", "", "world"])
            .unwrap();
        assert_eq!(normalized.row(1), vec![0.0; embedder.dim()], "{mode}");
        assert!((norm(normalized.row(0)) - 1.0).abs() < 1e-6);
    }
}

#[test]
fn an_empty_text_goes_through_dense_and_normalize() {
    // tiny-bert-dense: Pooling, Dense (52 → 52, tanh, with bias), Normalize. A zero pooled row
    // becomes tanh(b), then tanh(b) / ‖tanh(b)‖.
    let dir = without_special_tokens("tiny-bert-dense", "mean");
    let embedder = load(dir.path());
    assert!(embedder.normalizes());
    let got = embedder.encode(&["hello", "", "world"]).unwrap();

    let weights = WeightFile::open(dir.path().join("2_Dense/model.safetensors")).unwrap();
    let bias = weights
        .f32_tensor_with_shape("linear.bias", &[embedder.dim()])
        .unwrap();
    let activated: Vec<f64> = bias.data().iter().map(|&b| (b as f64).tanh()).collect();
    let length = activated.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(length > 0.0);
    for (j, (&g, a)) in got.row(1).iter().zip(&activated).enumerate() {
        assert!(
            (g as f64 - a / length).abs() < 1e-6,
            "[{j}] {g} vs {}",
            a / length
        );
    }
    assert_eq!(got.row(0), embedder.encode(&["hello"]).unwrap().row(0));
    assert_eq!(got.row(2), embedder.encode(&["world"]).unwrap().row(0));
}

#[test]
fn an_empty_text_under_a_token_mode_names_its_index() {
    for mode in ["cls", "max"] {
        let dir = without_special_tokens("tiny-bert", mode);
        let embedder = load(dir.path());
        let err = embedder
            .encode(&["hello", "world", "", "again"])
            .unwrap_err();
        match &err {
            EmberError::Tokenize { index: 2, message } => {
                assert!(
                    message.contains("no tokens") && message.contains(mode),
                    "{err}"
                )
            }
            other => panic!("{mode}: expected text 2's error, got {other}"),
        }
        assert!(err.to_string().starts_with("text 2"), "{err}");
        // Texts with tokens still encode.
        assert!(embedder.encode(&["hello", "world"]).is_ok());
    }
}
