//! Model folders that are wrong in one way each are refused with an error naming the file (and
//! tensor); hub ids are found offline in the Hugging Face cache layout.

use std::path::Path;

use ember::{Embedder, EmberError};
use ember_reference_tests::*;

fn tiny_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert"), dir.path());
    dir
}

fn load_error(dir: &Path) -> String {
    match Embedder::from_dir(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_json(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn broken_configs_are_named() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "\"num_attention_heads\": 4",
            "\"num_attention_heads\": 5",
            "does not divide",
        ),
        (
            "\"hidden_size\": 52",
            "\"hidden_size\": 64",
            "embeddings.word_embeddings.weight",
        ),
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1000000000",
            "num_hidden_layers",
        ),
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 3",
            "encoder.layer.2",
        ),
        (
            "\"absolute\"",
            "\"relative_key_query\"",
            "position_embedding_type",
        ),
    ];
    for (from, to, expected) in cases {
        let dir = tiny_copy();
        edit_json(&dir.path().join("config.json"), from, to);
        let err = load_error(dir.path());
        assert!(err.contains(expected), "{to}: {err}");
        assert!(
            err.contains("config.json") || err.contains("model.safetensors"),
            "{to}: {err}"
        );
    }
    let dir = tiny_copy();
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert!(load_error(dir.path()).contains("config.json"));
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(load_error(dir.path()).contains("config.json"));
}

#[test]
fn broken_weights_are_named() {
    let dir = tiny_copy();
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("model.safetensors"), "{err}");

    std::fs::write(&weights, b"").unwrap();
    assert!(load_error(dir.path()).contains("model.safetensors"));

    // A checkpoint without one tensor: the error names it.
    let dir = tiny_copy();
    rewrite_weights(dir.path(), ember_tensor::DType::F32, |name| {
        name != "encoder.layer.1.intermediate.dense.bias"
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("encoder.layer.1.intermediate.dense.bias")
            && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn broken_tokenizers_and_modules_are_named() {
    let dir = tiny_copy();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"version\": 7}").unwrap();
    assert!(load_error(dir.path()).contains("tokenizer.json"));
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    std::fs::write(dir.path().join("vocab.txt"), "just\nwords\n").unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("vocab.txt"), "{err}");
    std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
    assert!(load_error(dir.path()).contains("neither tokenizer.json nor vocab.txt"));

    let dir = tiny_copy();
    let modules = dir.path().join("modules.json");
    edit_json(
        &modules,
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Dense",
    );
    let err = load_error(dir.path());
    assert!(
        err.contains("modules.json") && err.contains("Dense"),
        "{err}"
    );
    std::fs::write(
        &modules,
        "[{\"type\": \"sentence_transformers.models.Transformer\", \"path\": \"../../etc\"}]",
    )
    .unwrap();
    assert!(load_error(dir.path()).contains("leaves the model folder"));
    std::fs::write(&modules, "{}").unwrap();
    assert!(load_error(dir.path()).contains("modules.json"));

    let dir = tiny_copy();
    let pooling = dir.path().join("1_Pooling/config.json");
    std::fs::write(
        &pooling,
        "{\"word_embedding_dimension\": 51, \"pooling_mode_mean_tokens\": true}",
    )
    .unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("1_Pooling/config.json") && err.contains("51"),
        "{err}"
    );
    std::fs::write(&pooling, "[1, 2]").unwrap();
    assert!(load_error(dir.path()).contains("1_Pooling/config.json"));

    let dir = tiny_copy();
    std::fs::write(
        dir.path().join("sentence_bert_config.json"),
        "{\"max_seq_length\": \"long\"}",
    )
    .unwrap();
    assert!(load_error(dir.path()).contains("sentence_bert_config.json"));
}

#[test]
fn hub_ids_resolve_in_the_local_cache_and_missing_models_are_named() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("hub/models--acme--tiny-bert");
    let snapshot = repo.join("snapshots/0123abc");
    copy_dir(&fixtures_dir().join("tiny-bert"), &snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abc").unwrap();
    // This test binary's only environment change; nothing else here reads HF variables.
    std::env::set_var("HF_HOME", cache.path());
    std::env::remove_var("HF_HUB_CACHE");
    assert_eq!(ember::resolve_model("acme/tiny-bert").unwrap(), snapshot);
    let embedder = Embedder::builder().load("acme/tiny-bert").unwrap();
    assert_eq!(embedder.dim(), 52);
    match Embedder::builder().load("acme/absent-model") {
        Err(EmberError::ModelNotFound { model, .. }) => assert_eq!(model, "acme/absent-model"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("loaded a model that is not there"),
    }
}

#[test]
fn embedder_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
}
