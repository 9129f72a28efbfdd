//! A fake Hugging Face hub on 127.0.0.1 for the `hub` feature's tests (no outside network):
//! it serves `tests/fixtures/tiny-bert` as huggingface.co serves a model repo.
//!
//! - `GET /api/models/org/tiny/revision/{rev}`: `sha` and `siblings` (with ONNX, TF, README
//!   and `pytorch_model.bin` entries that are not served: fetching one is a 404);
//! - `HEAD|GET /org/tiny/resolve/{COMMIT}/{file}`: `X-Repo-Commit` and `ETag`; for
//!   `model.safetensors` a 302 to a second listener (the "CDN", another origin) with
//!   `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
//! - the CDN honours `Range: bytes=N-` (206 and `Content-Range`).
//!
//! Every request is logged with its `Range` and `Authorization`. Shared by
//! `crates/ember/tests/hub.rs` and `crates/ember-cli/tests/hub.rs` (`#[path]`); each uses a
//! part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";
pub const REPO: &str = "org/tiny";
pub const LFS_FILE: &str = "model.safetensors";
/// Listed by the model info but never to be fetched (the fake hub 404s them).
pub const UNWANTED: &[&str] = &[
    "README.md",
    "onnx/model.onnx",
    "openvino/openvino_model.xml",
    "tf_model.h5",
    "pytorch_model.bin",
];

pub fn fixture_dir() -> PathBuf {
    fixture_dir_named("tiny-bert")
}

/// `tests/fixtures/<name>`.
pub fn fixture_dir_named(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The etag the hub gives a non-LFS file (its git blob sha1; here any 40 hex digits).
pub fn git_etag(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..40].to_owned()
}

/// The fixture's files, by path relative to the folder (`1_Pooling/config.json`).
pub fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    fixture_files_of(&fixture_dir())
}

/// [`fixture_files`] of another folder.
pub fn fixture_files_of(root: &Path) -> BTreeMap<String, Vec<u8>> {
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
    walk(root, root, &mut files);
    assert!(files.contains_key(LFS_FILE) && files.contains_key("1_Pooling/config.json"));
    files
}

/// One request as the fake hub saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// `"hub"` or `"cdn"`.
    pub server: &'static str,
    /// `GET` or `HEAD`.
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// How the fake hub misbehaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Answer 401 to hub requests without `Authorization: Bearer <token>`.
    pub require_token: Option<String>,
    /// The CDN's first GET sends full headers but only half the body, then hangs up.
    pub drop_first_download: bool,
    /// The CDN serves the weights with one byte changed.
    pub corrupt_weights: bool,
    /// The CDN serves the weights followed by a mebibyte more than `X-Linked-Size` says.
    pub oversize_weights: bool,
    /// The folder under tests/fixtures served as the repo (default: tiny-bert).
    pub fixture: Option<&'static str>,
}

pub struct FakeHub {
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
    pub fn start(behaviour: Behaviour) -> Self {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            files: fixture_files_of(&fixture_dir_named(behaviour.fixture.unwrap_or("tiny-bert"))),
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

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    pub fn requests(&self) -> Vec<Logged> {
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
    if state.behaviour.oversize_weights {
        body.extend(std::iter::repeat_n(0u8, 1 << 20));
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
