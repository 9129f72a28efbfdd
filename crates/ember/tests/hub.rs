//! Downloading hub ids (the `hub` feature) against a fake hub on 127.0.0.1: no outside
//! network, ever.
//!
//! The fake hub serves `tests/fixtures/tiny-bert` the way huggingface.co does: the model-info
//! JSON (`sha`, `siblings`, with ONNX/TF/README files Ember must not fetch), `resolve` URLs
//! with `X-Repo-Commit` and `ETag`, and for the LFS weights a 302 to a second listener (the
//! "CDN", another origin) with `X-Linked-Etag` (the sha256) and `X-Linked-Size`. The CDN
//! honours `Range: bytes=N-`. Every request is logged, so tests can check what went where.
//! Settings travel in a `HubConfig` per test, never through the environment.
#![cfg(feature = "hub")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ember::{resolve_model_with, Embedder, EmberError, HubConfig};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";
const REPO: &str = "org/tiny";
const LFS_FILE: &str = "model.safetensors";
/// Listed by the model info but never to be fetched (the fake hub 404s them).
const UNWANTED: &[&str] = &[
    "README.md",
    "onnx/model.onnx",
    "openvino/openvino_model.xml",
    "tf_model.h5",
    "pytorch_model.bin",
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-bert")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The etag the hub gives a non-LFS file (its git blob sha1; here any 40 hex digits).
fn git_etag(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..40].to_owned()
}

/// The fixture's files, by path relative to the folder (`1_Pooling/config.json`).
fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                out.insert(rel.replace('\\', "/"), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(&fixture_dir(), &fixture_dir(), &mut files);
    assert!(files.contains_key(LFS_FILE) && files.contains_key("1_Pooling/config.json"));
    files
}

/// One request as the fake hub saw it.
#[derive(Clone, Debug)]
struct Logged {
    /// `"hub"` or `"cdn"`.
    server: &'static str,
    method: String,
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

/// How the fake hub misbehaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Answer 401 to hub requests without `Authorization: Bearer <token>`.
    require_token: Option<String>,
    /// The CDN's first GET sends full headers but only half the body, then hangs up.
    drop_first_download: bool,
    /// The CDN serves the weights with one byte changed.
    corrupt_weights: bool,
}

struct FakeHub {
    hub_port: u16,
    log: Arc<Mutex<Vec<Logged>>>,
}

struct State {
    files: BTreeMap<String, Vec<u8>>,
    behaviour: Behaviour,
    cdn_port: u16,
    log: Arc<Mutex<Vec<Logged>>>,
    cdn_gets: Mutex<usize>,
}

impl FakeHub {
    fn start(behaviour: Behaviour) -> Self {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            files: fixture_files(),
            behaviour,
            cdn_port: cdn.local_addr().unwrap().port(),
            log: Arc::clone(&log),
            cdn_gets: Mutex::new(0),
        });
        let hub_port = hub.local_addr().unwrap().port();
        for (listener, server) in [(hub, "hub"), (cdn, "cdn")] {
            let state = Arc::clone(&state);
            // Threads blocked in accept end with the test process.
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || serve(stream, server, &state));
                }
            });
        }
        FakeHub { hub_port, log }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    fn config(&self, cache: &Path) -> HubConfig {
        HubConfig::new(cache).endpoint(self.endpoint())
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(stream: TcpStream, server: &'static str, state: &State) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    state.log.lock().unwrap().push(Logged {
        server,
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });
    let response = match server {
        "hub" => hub_response(state, &path, headers.get("authorization")),
        _ => cdn_response(state, &method, &path, headers.get("range")),
    };
    let mut stream = stream;
    let head_only = method == "HEAD";
    let mut head = format!("HTTP/1.1 {}\r\nConnection: close\r\n", response.status);
    let mut has_length = false;
    for (name, value) in &response.headers {
        has_length |= name.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let body = match response.cut_at {
            Some(n) => &response.body[..n],
            None => &response.body[..],
        };
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then hang up.
    cut_at: Option<usize>,
}

fn reply(status: &'static str, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.into(),
        cut_at: None,
    }
}

fn hub_response(state: &State, path: &str, authorization: Option<&String>) -> Reply {
    if let Some(token) = &state.behaviour.require_token {
        if authorization != Some(&format!("Bearer {token}")) {
            return reply("401 Unauthorized", "Invalid credentials");
        }
    }
    if let Some(revision) = path.strip_prefix(&format!("/api/models/{REPO}/revision/")) {
        let mut siblings: Vec<&str> = state.files.keys().map(String::as_str).collect();
        siblings.extend(UNWANTED);
        let info = serde_json::json!({
            "id": REPO,
            "sha": COMMIT,
            "revision": revision,
            "siblings": siblings.iter().map(|f| serde_json::json!({"rfilename": f})).collect::<Vec<_>>(),
        });
        let mut r = reply("200 OK", info.to_string());
        r.headers
            .push(("Content-Type".into(), "application/json".into()));
        return r;
    }
    let Some(file) = path.strip_prefix(&format!("/{REPO}/resolve/{COMMIT}/")) else {
        return reply("404 Not Found", "Repository not found");
    };
    let Some(bytes) = state.files.get(file) else {
        let mut r = reply("404 Not Found", "Entry not found");
        r.headers
            .push(("X-Error-Code".into(), "EntryNotFound".into()));
        return r;
    };
    let commit = ("X-Repo-Commit".to_owned(), COMMIT.to_owned());
    if file == LFS_FILE {
        let sha = sha256_hex(bytes);
        let mut r = reply("302 Found", "");
        r.headers = vec![
            commit,
            (
                "Location".into(),
                format!("http://127.0.0.1:{}/lfs/{sha}?sig=abc", state.cdn_port),
            ),
            ("X-Linked-Etag".into(), format!("\"{sha}\"")),
            ("X-Linked-Size".into(), bytes.len().to_string()),
            ("ETag".into(), format!("W/\"{}\"", git_etag(b"pointer"))),
        ];
        return r;
    }
    let mut r = reply("200 OK", bytes.clone());
    r.headers = vec![commit, ("ETag".into(), format!("\"{}\"", git_etag(bytes)))];
    r
}

fn cdn_response(state: &State, method: &str, path: &str, range: Option<&String>) -> Reply {
    let bytes = &state.files[LFS_FILE];
    let expected = format!("/lfs/{}?sig=abc", sha256_hex(bytes));
    if path != expected || method != "GET" {
        return reply("404 Not Found", "");
    }
    let mut body = bytes.clone();
    if state.behaviour.corrupt_weights {
        let third = body.len() / 3;
        body[third] ^= 0x55;
    }
    let first = {
        let mut gets = state.cdn_gets.lock().unwrap();
        *gets += 1;
        *gets == 1
    };
    let start: usize = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut r = if start > 0 {
        let mut r = reply("206 Partial Content", body[start..].to_vec());
        r.headers.push((
            "Content-Range".into(),
            format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
        ));
        r
    } else {
        reply("200 OK", body)
    };
    if first && state.behaviour.drop_first_download {
        r.cut_at = Some(r.body.len() / 2);
    }
    r
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
        hub.config(cache.path()).on_progress(move |p| {
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
    let offline = hub.config(cache.path()).offline(true);
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
    let dir = resolve_model_with("org/tiny@v1.0", &hub.config(cache.path())).unwrap();
    assert_eq!(dir, snapshot(cache.path()));
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == "/api/models/org/tiny/revision/v1.0"));
    let refs = cache.path().join("models--org--tiny").join("refs");
    assert_eq!(std::fs::read_to_string(refs.join("v1.0")).unwrap(), COMMIT);
    assert!(!refs.join("main").exists());
}

#[test]
fn offline_miss_names_the_id_and_cache_and_sends_nothing() {
    let hub = FakeHub::start(Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(REPO, &hub.config(cache.path()).offline(true)).unwrap_err();
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

    let dir = resolve_model_with(REPO, &hub.config(cache.path())).unwrap();
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
    let dir = resolve_model_with(REPO, &hub.config(cache.path())).unwrap();
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
fn corrupt_download_is_refused_and_removed() {
    let hub = FakeHub::start(Behaviour {
        corrupt_weights: true,
        ..Behaviour::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model_with(REPO, &hub.config(cache.path())).unwrap_err();
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
    let err = resolve_model_with(REPO, &hub.config(cache.path())).unwrap_err();
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
    let config = hub.config(cache.path()).token(Some("hf_secret\n".into()));
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
    let err = resolve_model_with("org/nope", &hub.config(cache.path())).unwrap_err();
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
