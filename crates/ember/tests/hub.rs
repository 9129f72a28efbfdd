//! Downloading hub ids (the `hub` feature) against a fake hub on 127.0.0.1: no outside
//! network, ever.
//!
//! The fake hub (`fake_hub/mod.rs`) serves `tests/fixtures/tiny-bert` the way huggingface.co
//! does, the weights through a redirect to another origin, and logs every request, so tests
//! can check what went where. Settings travel in a `HubConfig` per test, never through the
//! environment.
#![cfg(feature = "hub")]

mod fake_hub;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ember::{resolve_model_with, Embedder, EmberError, HubConfig};
use fake_hub::*;

/// Ember pointed at `hub`, caching into `cache`.
fn hub_config(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig::new(cache).endpoint(hub.endpoint())
}

fn blobs(cache: &Path) -> PathBuf {
    cache.join("models--org--tiny").join("blobs")
}

fn snapshot(cache: &Path) -> PathBuf {
    cache
        .join("models--org--tiny")
        .join("snapshots")
        .join(COMMIT)
}

fn leftovers(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(blobs(cache))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "incomplete"))
                .collect()
        })
        .unwrap_or_default()
}

const TEXTS: [&str; 3] = [
    "The cat sits outside",
    "A man is playing guitar",
    "the the the",
];

fn embed_bits(embedder: &Embedder) -> Vec<u32> {
    let embeddings = embedder.encode(&TEXTS).unwrap();
    embeddings.as_slice().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn download_embeds_like_the_folder_and_lays_out_the_cache() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let config = {
        let finished = Arc::clone(&finished);
        hub_config(&hub, cache.path()).on_progress(move |p| {
            assert_eq!(p.model, REPO);
            if p.finished {
                finished.lock().unwrap().push(p.file.to_owned());
            }
        })
    };

    let dir = resolve_model_with(REPO, &config).unwrap();
    assert_eq!(dir, snapshot(cache.path()));

    // huggingface_hub's layout: refs/main → commit; snapshot files are relative symlinks
    // into blobs/<etag>, the weights' etag being their sha256.
    let repo_dir = cache.path().join("models--org--tiny");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs").join("main")).unwrap(),
        COMMIT
    );
    let files = fixture_files();
    for (file, bytes) in &files {
        let pointer = dir.join(file);
        let target = std::fs::read_link(&pointer)
            .unwrap_or_else(|e| panic!("{}: not a symlink: {e}", pointer.display()));
        let etag = if file == LFS_FILE {
            sha256_hex(bytes)
        } else {
            git_etag(bytes)
        };
        let ups = "../".repeat(file.matches('/').count() + 2);
        assert_eq!(
            target,
            PathBuf::from(format!("{ups}blobs/{etag}")),
            "{file}"
        );
        assert_eq!(&std::fs::read(&pointer).unwrap(), bytes, "{file}");
        assert!(blobs(cache.path()).join(&etag).is_file());
    }
    assert!(leftovers(cache.path()).is_empty());
    let mut snapshot_files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        snapshot_files.push(path.file_name().unwrap().to_str().unwrap().to_owned());
    }
    snapshot_files.sort();
    let mut top_level: Vec<String> = files
        .keys()
        .map(|f| f.split('/').next().unwrap().to_owned())
        .collect();
    top_level.dedup();
    assert_eq!(
        snapshot_files, top_level,
        "only the model's files, nothing else"
    );

    // Each file once, nothing unwanted, the weights through the CDN.
    let requests = hub.requests();
    for unwanted in UNWANTED {
        assert!(
            !requests.iter().any(|r| r.path.ends_with(unwanted)),
            "{unwanted} fetched: {requests:#?}"
        );
    }
    assert!(requests
        .iter()
        .any(|r| r.server == "cdn" && r.method == "GET"));
    let mut finished = finished.lock().unwrap().clone();
    finished.sort();
    assert_eq!(finished, files.keys().cloned().collect::<Vec<_>>());

    // Cached now: resolving and loading again sends nothing, online or offline.
    let before = hub.requests().len();
    assert_eq!(resolve_model_with(REPO, &config).unwrap(), dir);
    let offline = hub_config(&hub, cache.path()).offline(true);
    assert_eq!(resolve_model_with(REPO, &offline).unwrap(), dir);
    let from_hub = Embedder::builder()
        .threads(2)
        .hub(config.clone())
        .load(REPO)
        .unwrap();
    assert_eq!(
        hub.requests().len(),
        before,
        "a cached model sends no request"
    );

    // Bit for bit what the folder itself gives.
    let from_folder = Embedder::builder()
        .threads(2)
        .load_dir(&fixture_dir())
        .unwrap();
    assert_eq!(embed_bits(&from_hub), embed_bits(&from_folder));
}

#[test]
fn revision_suffix_is_asked_for_and_recorded_in_refs() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let dir = resolve_model_with("org/tiny@v1.0", &hub_config(&hub, cache.path())).unwrap();
    assert_eq!(dir, snapshot(cache.path()));
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == "/api/models/org/tiny/revision/v1.0"));
    let refs = cache.path().join("models--org--tiny").join("refs");
    assert_eq!(std::fs::read_to_string(refs.join("v1.0")).unwrap(), COMMIT);
    assert!(!refs.join("main").exists());

    // The default revision is not v1.0's snapshot, the only one cached: offline it is not
    // found, online the hub is asked what `main` is.
    let config = hub_config(&hub, cache.path());
    let err = resolve_model_with("org/tiny", &config.clone().offline(true)).unwrap_err();
    assert!(matches!(err, EmberError::HubOffline { .. }), "{err:?}");
    let asked_main = |hub: &FakeHub| {
        hub.requests()
            .iter()
            .any(|r| r.path == "/api/models/org/tiny/revision/main")
    };
    assert!(!asked_main(&hub));
    resolve_model_with("org/tiny", &config).unwrap();
    assert!(asked_main(&hub));
    assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), COMMIT);
}

#[test]
fn offline_miss_names_the_id_and_cache_and_sends_nothing() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(REPO, &hub_config(&hub, cache.path()).offline(true)).unwrap_err();
    assert!(matches!(err, EmberError::HubOffline { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(REPO), "{message}");
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    let looked = cache.path().join("models--org--tiny");
    assert!(message.contains(&looked.display().to_string()), "{message}");
    assert!(hub.requests().is_empty());
}

#[test]
fn resumes_a_partial_blob_with_a_range_request() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let weights = &fixture_files()[LFS_FILE];
    let prefix = weights.len() / 3;
    std::fs::create_dir_all(blobs(cache.path())).unwrap();
    let partial = blobs(cache.path()).join(format!("{}.incomplete", sha256_hex(weights)));
    std::fs::write(&partial, &weights[..prefix]).unwrap();

    let dir = resolve_model_with(REPO, &hub_config(&hub, cache.path())).unwrap();
    assert_eq!(&std::fs::read(dir.join(LFS_FILE)).unwrap(), weights);
    let cdn: Vec<Logged> = hub
        .requests()
        .into_iter()
        .filter(|r| r.server == "cdn")
        .collect();
    assert_eq!(cdn.len(), 1, "{cdn:#?}");
    assert_eq!(cdn[0].range.as_deref(), Some(&*format!("bytes={prefix}-")));
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn resumes_after_the_connection_drops_midway() {
    let hub = FakeHub::start(Behaviour {
        drop_first_download: true,
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let weights = &fixture_files()[LFS_FILE];
    let dir = resolve_model_with(REPO, &hub_config(&hub, cache.path())).unwrap();
    assert_eq!(&std::fs::read(dir.join(LFS_FILE)).unwrap(), weights);
    let ranges: Vec<Option<String>> = hub
        .requests()
        .into_iter()
        .filter(|r| r.server == "cdn")
        .map(|r| r.range)
        .collect();
    assert_eq!(
        ranges,
        [None, Some(format!("bytes={}-", weights.len() / 2))],
        "the second GET resumes where the first broke off"
    );
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn concurrent_downloads_share_one_cache() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let config = hub_config(&hub, cache.path());
    let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| resolve_model_with(REPO, &config).unwrap()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(dirs.iter().all(|dir| *dir == snapshot(cache.path())));
    for (file, bytes) in fixture_files() {
        assert_eq!(std::fs::read(dirs[0].join(&file)).unwrap(), bytes, "{file}");
    }
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn a_body_past_the_announced_size_is_cut_off_and_the_signature_kept_out_of_the_error() {
    let hub = FakeHub::start(Behaviour {
        oversize_weights: true,
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(REPO, &hub_config(&hub, cache.path())).unwrap_err();
    assert!(matches!(err, EmberError::HubTransfer { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("more than the"), "{message}");
    // The CDN URL's query is a signature granting access to the file: not shown.
    assert!(
        message.contains("?…") && !message.contains("sig="),
        "{message}"
    );
    // Nothing past the announced size was written.
    let size = fixture_files()[LFS_FILE].len() as u64;
    for partial in leftovers(cache.path()) {
        assert!(
            std::fs::metadata(&partial).unwrap().len() <= size,
            "{partial:?}"
        );
    }
}

#[test]
fn corrupt_download_is_refused_and_removed() {
    let hub = FakeHub::start(Behaviour {
        corrupt_weights: true,
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(REPO, &hub_config(&hub, cache.path())).unwrap_err();
    assert!(matches!(err, EmberError::HubCorrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(LFS_FILE) && message.contains("sha256"),
        "{message}"
    );
    let sha = sha256_hex(&fixture_files()[LFS_FILE]);
    assert!(!blobs(cache.path()).join(&sha).exists());
    assert!(
        leftovers(cache.path()).is_empty(),
        "the partial blob is removed"
    );
    assert!(std::fs::symlink_metadata(snapshot(cache.path()).join(LFS_FILE)).is_err());
}

#[test]
fn unauthorized_error_points_at_hf_token() {
    let hub = FakeHub::start(Behaviour {
        require_token: Some("hf_secret".into()),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(REPO, &hub_config(&hub, cache.path())).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, EmberError::HubHttp { status: 401, .. }),
        "{err:?}"
    );
    assert!(
        message.contains(REPO) && message.contains("HF_TOKEN"),
        "{message}"
    );
    assert!(
        message.contains(&hub.endpoint()),
        "names the URL: {message}"
    );
}

#[test]
fn token_goes_to_the_hub_but_not_across_the_redirect() {
    let hub = FakeHub::start(Behaviour {
        require_token: Some("hf_secret".into()),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let config = hub_config(&hub, cache.path()).token(Some("hf_secret\n".into()));
    resolve_model_with(REPO, &config).unwrap();
    let requests = hub.requests();
    assert!(requests.iter().any(|r| r.server == "cdn"));
    for r in &requests {
        let expected = (r.server == "hub").then_some("Bearer hf_secret");
        assert_eq!(r.authorization.as_deref(), expected, "{r:?}");
    }
}

#[test]
fn unknown_model_is_a_404_naming_the_id() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with("org/nope", &hub_config(&hub, cache.path())).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, EmberError::HubHttp { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        message.contains("org/nope") && message.contains("404"),
        "{message}"
    );
    assert!(message.contains("no such model"), "{message}");
}

#[test]
fn a_dense_module_s_weights_are_downloaded_too() {
    // LaBSE's chain (tiny-bert-dense): 2_Dense/config.json and 2_Dense/model.safetensors.
    let hub = FakeHub::start(Behaviour {
        fixture: Some("tiny-bert-dense"),
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let config = hub_config(&hub, cache.path());
    let dir = resolve_model_with(REPO, &config).unwrap();
    assert!(dir.join("2_Dense/model.safetensors").is_file());
    let local = Embedder::builder()
        .threads(1)
        .load_dir(&fixture_dir_named("tiny-bert-dense"))
        .unwrap();
    let downloaded = Embedder::builder()
        .threads(1)
        .hub(config)
        .load(REPO)
        .unwrap();
    assert_eq!(downloaded.dim(), local.dim());
    assert_eq!(embed_bits(&downloaded), embed_bits(&local));
    // The snapshot counts as complete: a second load asks the hub nothing.
    let asked = hub.requests().len();
    let config = hub_config(&hub, cache.path());
    Embedder::builder()
        .threads(1)
        .hub(config)
        .load(REPO)
        .unwrap();
    assert_eq!(hub.requests().len(), asked);
}

#[test]
fn a_snapshot_filled_through_transformers_alone_is_completed() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let config = hub_config(&hub, cache.path());
    let dir = resolve_model_with(REPO, &config).unwrap();
    // What the repo lacks of the files that decide the embeddings is recorded as
    // huggingface_hub records a 404, so the next load need not ask.
    let no_exist = cache
        .path()
        .join("models--org--tiny")
        .join(".no_exist")
        .join(COMMIT);
    let files = fixture_files();
    for decisive in [
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            no_exist.join(decisive).is_file(),
            !files.contains_key(decisive),
            "{decisive}: a marker exactly when the repo lacks it"
        );
    }

    // Python's transformers (AutoModel, AutoTokenizer) fetches no modules.json and leaves no
    // marker for it: the snapshot is completed from the hub, not read as a plain transformers
    // folder (mean pooling by default, no Normalize).
    assert!(
        files.contains_key("modules.json"),
        "the fixture has modules"
    );
    std::fs::remove_file(dir.join("modules.json")).unwrap();
    let before = hub.requests().len();
    assert_eq!(resolve_model_with(REPO, &config).unwrap(), dir);
    assert!(dir.join("modules.json").is_file());
    assert!(hub.requests()[before..]
        .iter()
        .any(|r| r.path.ends_with("/modules.json")));

    // A hub that cannot be reached: a snapshot that has what loading needs is used as it is
    // (say, one downloaded before the markers existed), as huggingface_hub falls back to its
    // cache; the load does not fail for want of a refresh.
    std::fs::remove_dir_all(&no_exist).unwrap();
    let unreachable = HubConfig::new(cache.path()).endpoint("http://127.0.0.1:9");
    assert_eq!(resolve_model_with(REPO, &unreachable).unwrap(), dir);
    // Reachable again: one refresh writes the markers back.
    resolve_model_with(REPO, &config).unwrap();
    assert!(no_exist.is_dir());

    // Offline, the snapshot is used as it is (sentence-transformers offline does the same).
    std::fs::remove_file(dir.join("modules.json")).unwrap();
    let asked = hub.requests().len();
    let offline = hub_config(&hub, cache.path()).offline(true);
    assert_eq!(resolve_model_with(REPO, &offline).unwrap(), dir);
    assert_eq!(hub.requests().len(), asked);
}
