//! The sentence-transformers readers: `modules.json`, `sentence_bert_config.json` and
//! `1_Pooling/config.json`, from one input split at NUL bytes (raw NUL cannot occur in JSON),
//! written into a folder and read by `ModelFolder::open` and `ModelFolder::pooling`. `Ok` or
//! `Err`, never a panic; whatever is accepted stays inside the folder and within bounds.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ember::ModelFolder;
use libfuzzer_sys::fuzz_target;

/// One folder for the whole run, rewritten for each input.
fn folder() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        dir
    })
    .path()
}

const FILES: [&str; 3] = [
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    let mut parts = data.split(|&b| b == 0);
    for file in FILES {
        let path = dir.join(file);
        match parts.next() {
            Some(part) => std::fs::write(&path, part).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let Ok(folder) = ModelFolder::open(dir) else {
        return;
    };
    assert!(folder.transformer_dir.starts_with(dir));
    if let Some(pooling) = &folder.pooling_config {
        assert!(pooling.starts_with(dir));
    }
    assert!(folder.max_seq_length.is_none_or(|n| n >= 2));
    // The tiny model's hidden size, and a mismatching one.
    for hidden in [52, 384] {
        if let Ok(config) = folder.pooling(hidden) {
            assert_eq!(config.embedding_dimension, hidden);
            assert!(!config.modes.is_empty());
            assert_eq!(config.output_dim(), config.modes.len() * hidden);
        }
    }
});
