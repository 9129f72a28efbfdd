//! Hub ids are found offline in the Hugging Face cache layout. (Folders that are wrong in one
//! way each are refused by the table in `broken_folders.rs`.)

use ember::{Embedder, EmberError};
use ember_reference_tests::*;

#[test]
fn hub_ids_resolve_in_the_local_cache_and_missing_models_are_named() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("hub/models--acme--tiny-bert");
    // A ref holds a full commit sha, as huggingface_hub writes it.
    let commit = "0123abc0123abc0123abc0123abc0123abc0123a";
    let snapshot = repo.join("snapshots").join(commit);
    copy_dir(&fixtures_dir().join("tiny-bert"), &snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    // This test binary's only environment changes; nothing else here reads HF variables.
    // Offline: with ember's `hub` feature (on in workspace builds, through the CLI) a missing
    // id would otherwise be downloaded.
    std::env::set_var("HF_HOME", cache.path());
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(ember::resolve_model("acme/tiny-bert").unwrap(), snapshot);
    let embedder = Embedder::builder().load("acme/tiny-bert").unwrap();
    assert_eq!(embedder.dim(), 52);
    match Embedder::builder().load("acme/absent-model") {
        Err(EmberError::ModelNotFound { model, .. } | EmberError::HubOffline { model, .. }) => {
            assert_eq!(model, "acme/absent-model")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("loaded a model that is not there"),
    }

    // huggingface_hub's other names for the same settings.
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::set_var("TRANSFORMERS_OFFLINE", "1");
    std::env::set_var("HUGGINGFACE_HUB_CACHE", cache.path().join("old-name"));
    let config = ember::HubConfig::from_env();
    assert!(config.is_offline());
    assert_eq!(config.cache_dir(), Some(&*cache.path().join("old-name")));
    std::env::set_var("HF_HUB_CACHE", cache.path().join("new-name"));
    assert_eq!(
        ember::HubConfig::from_env().cache_dir(),
        Some(&*cache.path().join("new-name"))
    );
}

#[test]
fn embedder_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
}
