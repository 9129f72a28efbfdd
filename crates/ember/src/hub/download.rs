//! Downloading a hub model into the Hugging Face cache, the way huggingface_hub does.
//!
//! 1. `GET {endpoint}/api/models/{repo}/revision/{revision}`: JSON whose `sha` is the commit
//!    and whose `siblings[].rfilename` are the repo's files.
//! 2. Of those, only what a sentence-transformers folder needs: `modules.json` first (it names
//!    the module folders), then the Transformer module's configs, tokenizer files and weights
//!    (`model.safetensors`, else `pytorch_model.bin`), and each other module's `config.json`.
//!    ONNX, OpenVINO, TF and Flax files are never fetched.
//! 3. Per file: `HEAD {endpoint}/{repo}/resolve/{commit}/{file}` gives the etag
//!    (`X-Linked-Etag` for LFS files: the content's sha256; else `ETag`), the size
//!    (`X-Linked-Size`, else `Content-Length`) and, for LFS files, a redirect to a CDN. The
//!    blob is fetched into `blobs/<etag>.incomplete` (resumed with `Range: bytes=N-` when one
//!    is there), checked (size; sha256 when the etag is one), renamed to `blobs/<etag>`, and
//!    `snapshots/<commit>/<file>` becomes a relative symlink to it.
//! 4. `refs/<revision>` records the commit.
//!
//! Redirects are followed; `Authorization` goes to the endpoint's origin only, never to the
//! host a redirect leads to. Each blob download holds `.locks/models--org--name/<etag>.lock`
//! (`File::lock`: flock on Unix, as huggingface_hub's filelock, `LockFileEx` on Windows), so two
//! processes, Ember or Python, do not write one blob at once; a blob only ever appears by
//! rename, complete and checked.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use ureq::http::{header, Response, StatusCode};
use ureq::Body;

use super::{is_commit_sha, DownloadProgress, HubConfig, RepoId};
use crate::folder::ModelFolder;
use crate::EmberError;

/// Files of the Transformer module's folder, fetched when the repo has them.
const TRANSFORMER_FILES: &[&str] = &[
    "config.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "added_tokens.json",
];

/// Weights, by preference: the first the repo has is fetched.
const WEIGHT_FILES: &[&str] = &["model.safetensors", "pytorch_model.bin"];

/// Redirects followed per request before giving up.
const MAX_REDIRECTS: usize = 10;

/// Tries per blob when its body breaks off (each resumes where the last stopped).
const MAX_ATTEMPTS: usize = 4;

/// Files whose absence changes what a folder embeds (module chain, max_seq_length, prompts,
/// lowercasing), relative to the Transformer module's folder when `true`: a snapshot must hold
/// each or know the repo lacks it (see [`snapshot_is_complete`]).
const DECISIVE_FILES: &[(&str, bool)] = &[
    ("modules.json", false),
    ("config_sentence_transformers.json", false),
    ("sentence_bert_config.json", true),
    ("tokenizer_config.json", true),
];

/// Whether a cached snapshot holds a whole model: a Transformer config, a tokenizer, the
/// weights, and the pooling config that `modules.json` names, all resolving (no dangling link);
/// and each of [`DECISIVE_FILES`] either there or known to be missing from the repo, by the
/// empty marker `<repo>/.no_exist/<commit>/<file>` that huggingface_hub leaves for a file the
/// hub answered 404 for (and [`download_model`] leaves for each it did not find). Without that
/// check, a snapshot Python filled through transformers alone (`AutoModel`, `AutoTokenizer`: no
/// `modules.json`) would be read as a plain transformers folder, pooled by default and not
/// normalised, where the repo's own modules say otherwise.
pub(super) fn snapshot_is_complete(dir: &Path) -> bool {
    let Ok(folder) = ModelFolder::open(dir) else {
        return false;
    };
    let transformer = &folder.transformer_dir;
    let known = |file: &str, in_transformer: bool| {
        let rel = if in_transformer {
            match transformer.strip_prefix(dir) {
                Ok(sub) => sub.join(file),
                Err(_) => return false,
            }
        } else {
            PathBuf::from(file)
        };
        dir.join(&rel).is_file() || no_exist_marker(dir, &rel).is_some_and(|m| m.is_file())
    };
    snapshot_is_loadable(&folder)
        && DECISIVE_FILES
            .iter()
            .all(|&(file, in_transformer)| known(file, in_transformer))
}

/// Whether a snapshot has what loading needs (the first half of [`snapshot_is_complete`]):
/// what the resolver falls back to when the hub cannot be reached.
pub(super) fn snapshot_is_loadable(folder: &ModelFolder) -> bool {
    let transformer = &folder.transformer_dir;
    folder.weights_file().is_ok()
        && transformer.join("config.json").is_file()
        && (transformer.join("tokenizer.json").is_file() || transformer.join("vocab.txt").is_file())
        && folder.pooling_config.as_ref().is_none_or(|p| p.is_file())
        && folder.dense.iter().all(|dense| {
            dense.join("config.json").is_file() && ember_tensor::find_weight_file(dense).is_ok()
        })
}

/// The error for an I/O `source` error on `path`, for `map_err`.
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EmberError {
    let path = path.to_owned();
    move |source| EmberError::Io { path, source }
}

/// `<repo>/.no_exist/<commit>/<rel>` for the snapshot `<repo>/snapshots/<commit>`.
fn no_exist_marker(snapshot: &Path, rel: &Path) -> Option<PathBuf> {
    let commit = snapshot.file_name()?;
    let repo_dir = snapshot.parent()?.parent()?;
    Some(repo_dir.join(".no_exist").join(commit).join(rel))
}

/// Downloads `id` into `repo_dir` (`<cache>/models--org--name`) and returns its snapshot.
pub(super) fn download_model(
    id: &RepoId,
    model: &str,
    repo_dir: &Path,
    hub: &HubConfig,
) -> Result<PathBuf, EmberError> {
    let client = Client::new(hub, model);
    let (commit, siblings) = client.model_info(id)?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let locks = hub
        .cache_dir()
        .map_or_else(|| repo_dir.join(".locks"), |c| c.join(".locks"))
        .join(id.folder_name());
    let fetch = |file: &str| client.fetch_file(id, repo_dir, &locks, &commit, file);

    // modules.json names the module folders; without it the folder is a plain transformers
    // one, its Transformer at the root.
    let mut transformer_dir = String::new();
    let mut other_modules = Vec::new();
    // Dense modules also need their weights.
    let mut dense_modules = Vec::new();
    let mut files = Vec::new();
    if siblings.contains("modules.json") {
        fetch("modules.json")?;
        let modules_path = snapshot.join("modules.json");
        let modules = crate::folder::read_json(&modules_path)?;
        for (i, module) in modules.as_array().into_iter().flatten().enumerate() {
            let raw_path = module.get("path").and_then(Value::as_str).unwrap_or("");
            let Some(path) = relative_inside(raw_path) else {
                return Err(EmberError::Invalid {
                    path: modules_path,
                    message: format!("module {i} path {raw_path:?} leaves the model folder"),
                });
            };
            let kind = module.get("type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("Transformer") && i == 0 {
                transformer_dir = path;
            } else if !path.is_empty() {
                if kind.ends_with("Dense") {
                    dense_modules.push(path.clone());
                }
                other_modules.push(path);
            }
        }
    }
    let in_dir = |dir: &str, name: &str| match dir {
        "" => name.to_owned(),
        dir => format!("{dir}/{name}"),
    };
    files.push("config_sentence_transformers.json".to_owned());
    files.extend(
        TRANSFORMER_FILES
            .iter()
            .map(|f| in_dir(&transformer_dir, f)),
    );
    // The first weights file the repo has in `dir`, else an error naming both.
    let weights_in = |dir: &str| {
        WEIGHT_FILES
            .iter()
            .map(|f| in_dir(dir, f))
            .find(|f| siblings.contains(f))
            .ok_or_else(|| EmberError::HubMissingFile {
                model: model.to_owned(),
                revision: id.revision.clone(),
                file: WEIGHT_FILES
                    .iter()
                    .map(|f| in_dir(dir, f))
                    .collect::<Vec<_>>()
                    .join(" or "),
            })
    };
    files.push(weights_in(&transformer_dir)?);
    for dir in &dense_modules {
        files.push(weights_in(dir)?);
    }
    files.extend(other_modules.iter().map(|dir| in_dir(dir, "config.json")));
    let mut seen = HashSet::new();
    for file in files {
        if siblings.contains(&file) && seen.insert(file.clone()) {
            fetch(&file)?;
        }
    }
    // What the repo lacks of the files that decide the embeddings, recorded as huggingface_hub
    // records a 404, so that snapshot_is_complete can tell "not in the repo" from "not
    // fetched yet" next time without asking the hub.
    for &(file, in_transformer) in DECISIVE_FILES {
        let file = if in_transformer {
            in_dir(&transformer_dir, file)
        } else {
            file.to_owned()
        };
        if !siblings.contains(&file) {
            // Best effort: in a cache this process cannot write (a read-only volume a Python
            // download filled), a missing marker only means asking the hub again next time.
            let marker = repo_dir.join(".no_exist").join(&commit).join(&file);
            let parent = marker.parent().unwrap_or(repo_dir);
            let _ = fs::create_dir_all(parent).and_then(|()| File::create(&marker));
        }
    }

    if !id.revision_is_commit() {
        write_ref(repo_dir, &id.revision, &commit)?;
    }
    Ok(snapshot)
}

/// Writes `refs/<revision>` = `commit` through a temporary file and a rename, so readers see
/// the old commit or the new one, never a torn write.
fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<(), EmberError> {
    let ref_path = repo_dir.join("refs").join(revision);
    let parent = ref_path.parent().unwrap_or(repo_dir);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    // Unique per process and per call: threads of one process write refs too.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let tmp = parent.join(format!(
        ".{}.{}.{}.tmp",
        ref_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("ref"),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&tmp, commit).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &ref_path).map_err(io_err(&ref_path))
}

/// `path` as the hub names files (`a/b`, no `.`), if it is relative and stays inside the
/// folder (`""` is the folder itself); `None` for absolute paths and `..`.
fn relative_inside(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part.to_str()?),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// What `HEAD …/resolve/{commit}/{file}` says about a file.
struct FileMeta {
    /// The blob's name: the sha256 for LFS files, else the git blob sha1.
    etag: String,
    /// The file's size in bytes, when given.
    size: Option<u64>,
    /// Where the content comes from: a CDN URL for LFS files, else the resolve URL.
    download_url: String,
}

/// Why one try at a blob failed: `Retry` when the body broke off (the next try resumes).
enum AttemptError {
    Retry(EmberError),
    Fatal(EmberError),
}

/// Sends the hub's requests for one model: its endpoint, token and error context.
struct Client<'a> {
    agent: ureq::Agent,
    hub: &'a HubConfig,
    model: &'a str,
}

impl<'a> Client<'a> {
    fn new(hub: &'a HubConfig, model: &'a str) -> Self {
        let config = ureq::Agent::config_builder()
            // Redirects are followed by `send`, which decides where the token may go.
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("ember/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            hub,
            model,
        }
    }

    /// The commit `id`'s revision points to, and the repo's file names.
    fn model_info(&self, id: &RepoId) -> Result<(String, HashSet<String>), EmberError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.hub.endpoint,
            id.repo,
            encode_segment(&id.revision)
        );
        let (mut response, url) = self.send(false, &url, None, true)?;
        if !response.status().is_success() {
            return Err(self.status_error(&url, response.status()));
        }
        let bad = |message: String| EmberError::HubTransfer {
            model: self.model.to_owned(),
            url: url.clone(),
            message,
        };
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| bad(format!("cannot read the model info: {e}")))?;
        let info: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("the model info is not valid JSON: {e}")))?;
        let commit = info
            .get("sha")
            .and_then(Value::as_str)
            .filter(|sha| is_commit_sha(sha))
            .ok_or_else(|| bad("the model info has no commit \"sha\"".into()))?;
        let siblings = info
            .get("siblings")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("the model info has no \"siblings\" list".into()))?
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        Ok((commit.to_owned(), siblings))
    }

    /// Makes `snapshots/<commit>/<file>` point at its blob, downloading the blob if needed.
    fn fetch_file(
        &self,
        id: &RepoId,
        repo_dir: &Path,
        locks: &Path,
        commit: &str,
        file: &str,
    ) -> Result<(), EmberError> {
        let pointer = repo_dir.join("snapshots").join(commit).join(file);
        if pointer.is_file() {
            return Ok(());
        }
        let url = format!(
            "{}/{}/resolve/{commit}/{}",
            self.hub.endpoint,
            id.repo,
            file.split('/')
                .map(encode_segment)
                .collect::<Vec<_>>()
                .join("/")
        );
        let meta = self.file_meta(&url)?;
        let blobs = repo_dir.join("blobs");
        let blob = blobs.join(&meta.etag);
        if !blob.is_file() {
            self.download_blob(&meta, &blobs, locks, file)?;
        }
        link_snapshot_file(&blob, &pointer, file)
    }

    /// `HEAD` the resolve URL, following redirects within the endpoint; a redirect elsewhere
    /// (the CDN of an LFS file) is where the content will come from.
    fn file_meta(&self, url: &str) -> Result<FileMeta, EmberError> {
        let (response, url) = self.send(true, url, None, false)?;
        let status = response.status();
        let location = status
            .is_redirection()
            .then(|| header_str(&response, header::LOCATION.as_str()))
            .flatten();
        if !status.is_success() && location.is_none() {
            return Err(self.status_error(&url, status));
        }
        let etag = header_str(&response, "x-linked-etag")
            .or_else(|| header_str(&response, header::ETAG.as_str()))
            .map(normalize_etag)
            .filter(|etag| is_safe_blob_name(etag))
            .ok_or_else(|| EmberError::HubTransfer {
                model: self.model.to_owned(),
                url: url.clone(),
                message: "no usable ETag or X-Linked-Etag header (is this a Hugging Face hub?)"
                    .into(),
            })?;
        let size = header_str(&response, "x-linked-size")
            .or_else(|| {
                status
                    .is_success()
                    .then(|| header_str(&response, header::CONTENT_LENGTH.as_str()))
                    .flatten()
            })
            .and_then(|s| s.trim().parse().ok());
        let download_url = match location {
            Some(location) => join_url(&url, &location),
            None => url,
        };
        Ok(FileMeta {
            etag,
            size,
            download_url,
        })
    }

    /// Downloads `meta`'s blob into `blobs/<etag>` under its lock: into `<etag>.incomplete`,
    /// resumed across tries and runs, checked, then renamed into place.
    fn download_blob(
        &self,
        meta: &FileMeta,
        blobs: &Path,
        locks: &Path,
        file: &str,
    ) -> Result<(), EmberError> {
        fs::create_dir_all(blobs).map_err(io_err(blobs))?;
        fs::create_dir_all(locks).map_err(io_err(locks))?;
        let lock_path = locks.join(format!("{}.lock", meta.etag));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock_exclusive(&lock).map_err(io_err(&lock_path))?;
        let blob = blobs.join(&meta.etag);
        if blob.is_file() {
            return Ok(()); // another process finished it while this one waited
        }
        let partial = blobs.join(format!("{}.incomplete", meta.etag));
        let mut attempt = 1;
        loop {
            match self.download_attempt(meta, &partial, file) {
                Ok(()) => break,
                Err(AttemptError::Retry(_)) if attempt < MAX_ATTEMPTS => attempt += 1,
                Err(AttemptError::Retry(err) | AttemptError::Fatal(err)) => return Err(err),
            }
        }
        if let Err(message) = check_blob(&partial, meta) {
            let _ = fs::remove_file(&partial);
            return Err(EmberError::HubCorrupt {
                model: self.model.to_owned(),
                file: file.to_owned(),
                url: shown_url(&meta.download_url),
                message,
            });
        }
        fs::rename(&partial, &blob).map_err(io_err(&blob))?;
        if let Some(callback) = &self.hub.progress {
            let size = fs::metadata(&blob).map_or(0, |m| m.len());
            callback(&DownloadProgress {
                model: self.model,
                file,
                downloaded: size,
                total: Some(size),
                finished: true,
            });
        }
        drop(lock); // closing the lock file releases the lock
        Ok(())
    }

    /// One GET of the blob, appended to `partial` from its current length (`Range`).
    fn download_attempt(
        &self,
        meta: &FileMeta,
        partial: &Path,
        file: &str,
    ) -> Result<(), AttemptError> {
        let io_err = |source| {
            AttemptError::Fatal(EmberError::Io {
                path: partial.to_owned(),
                source,
            })
        };
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(io_err)?;
        let mut offset = out.metadata().map_err(io_err)?.len();
        if let Some(total) = meta.size {
            if offset == total {
                return Ok(()); // complete but not yet checked: a run stopped right here
            }
            if offset > total {
                out.set_len(0).map_err(io_err)?;
                offset = 0;
            }
        }
        let range = (offset > 0).then_some(offset);
        let (mut response, url) = self
            .send(false, &meta.download_url, range, true)
            .map_err(AttemptError::Fatal)?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT if range.is_some() => {
                let start = header_str(&response, header::CONTENT_RANGE.as_str())
                    .and_then(|r| content_range_start(&r));
                if start != Some(offset) {
                    // Not the bytes asked for: start over, on the next try.
                    out.set_len(0).map_err(io_err)?;
                    return Err(AttemptError::Retry(self.transfer_error(
                        &url,
                        format!("asked for bytes {offset}- and got another range"),
                    )));
                }
            }
            StatusCode::OK => {
                // The server ignored the Range (or none was asked): the body is the whole file.
                out.set_len(0).map_err(io_err)?;
                offset = 0;
            }
            StatusCode::RANGE_NOT_SATISFIABLE if range.is_some() => {
                out.set_len(0).map_err(io_err)?;
                return Err(AttemptError::Retry(
                    self.status_error(&url, response.status()),
                ));
            }
            status => return Err(AttemptError::Fatal(self.status_error(&url, status))),
        }
        let progress = |downloaded| {
            if let Some(callback) = &self.hub.progress {
                callback(&DownloadProgress {
                    model: self.model,
                    file,
                    downloaded,
                    total: meta.size,
                    finished: false,
                });
            }
        };
        progress(offset);
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut downloaded = offset;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let message = format!("the download broke off after {downloaded} bytes: {e}");
                    return Err(AttemptError::Retry(self.transfer_error(&url, message)));
                }
            };
            downloaded += n as u64;
            if meta.size.is_some_and(|size| downloaded > size) {
                // More than the hub announced: stop before it fills the disk (the blob would
                // fail its size check anyway).
                let size = meta.size.unwrap_or(0);
                let message =
                    format!("the server sent more than the {size} bytes the hub announced");
                return Err(AttemptError::Fatal(self.transfer_error(&url, message)));
            }
            out.write_all(&buf[..n]).map_err(io_err)?;
            progress(downloaded);
        }
        out.flush().map_err(io_err)?;
        // On disk before the blob takes its final name: after a power cut a blob under its
        // sha256 is whole, not a short file trusted for ever.
        out.sync_all().map_err(io_err)
    }

    /// Sends a HEAD (`head`) or GET to `url`, with `Range: bytes=<range>-` when given, and
    /// follows redirects: all of them, or (`follow_elsewhere` false) only those that stay on
    /// the endpoint's origin. The token goes only to the endpoint's origin. Returns the last
    /// response and its URL.
    fn send(
        &self,
        head: bool,
        url: &str,
        range: Option<u64>,
        follow_elsewhere: bool,
    ) -> Result<(Response<Body>, String), EmberError> {
        let endpoint_origin = origin(&self.hub.endpoint);
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let auth = self
                .hub
                .token
                .as_ref()
                .filter(|_| origin(&url) == endpoint_origin)
                .map(|token| format!("Bearer {token}"));
            let range = range.map(|start| format!("bytes={start}-"));
            // HEAD and GET build the same kind of request (no body): one path for both.
            let mut request = if head {
                self.agent.head(&url)
            } else {
                self.agent.get(&url)
            };
            if let Some(auth) = &auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            if let Some(range) = &range {
                request = request.header(header::RANGE, range);
            }
            let response = request
                .call()
                .map_err(|e| self.transfer_error(&url, e.to_string()))?;
            let location = response
                .status()
                .is_redirection()
                .then(|| header_str(&response, header::LOCATION.as_str()))
                .flatten();
            let Some(location) = location else {
                return Ok((response, url));
            };
            let next = join_url(&url, &location);
            if !follow_elsewhere && origin(&next) != endpoint_origin {
                return Ok((response, url));
            }
            url = next;
        }
        Err(self.transfer_error(&url, format!("more than {MAX_REDIRECTS} redirects")))
    }

    fn status_error(&self, url: &str, status: StatusCode) -> EmberError {
        EmberError::HubHttp {
            model: self.model.to_owned(),
            url: shown_url(url),
            status: status.as_u16(),
            // Whether it went to the URL that answered: `send` keeps it to the endpoint.
            token_set: self.hub.token.is_some() && origin(url) == origin(&self.hub.endpoint),
        }
    }

    fn transfer_error(&self, url: &str, message: String) -> EmberError {
        EmberError::HubTransfer {
            model: self.model.to_owned(),
            url: shown_url(url),
            message,
        }
    }
}

/// Checks the downloaded `partial` against the hub's size and, for an LFS file, its sha256.
fn check_blob(partial: &Path, meta: &FileMeta) -> Result<(), String> {
    let len = fs::metadata(partial)
        .map_err(|e| format!("{}: {e}", partial.display()))?
        .len();
    if let Some(size) = meta.size.filter(|&size| size != len) {
        return Err(format!("got {len} bytes, the hub said {size}"));
    }
    if is_sha256(&meta.etag) {
        let mut hasher = Sha256::new();
        let mut file = File::open(partial).map_err(|e| format!("{}: {e}", partial.display()))?;
        io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", partial.display()))?;
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != meta.etag {
            return Err(format!(
                "sha256 {digest} differs from the hub's {} (the download is corrupt)",
                meta.etag
            ));
        }
    }
    Ok(())
}

/// `pointer` → a relative symlink to `blob` (`../../blobs/<etag>`, one more `..` per folder
/// level of `file`), as huggingface_hub makes them; a copy where symlinks are not available.
fn link_snapshot_file(blob: &Path, pointer: &Path, file: &str) -> Result<(), EmberError> {
    if let Some(parent) = pointer.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    if pointer.is_file() {
        return Ok(()); // another process linked it meanwhile
    }
    if fs::symlink_metadata(pointer).is_ok() {
        // A dangling link: its blob was deleted.
        fs::remove_file(pointer).map_err(io_err(pointer))?;
    }
    #[cfg(unix)]
    {
        let target = relative_blob_target(file, blob);
        match std::os::unix::fs::symlink(&target, pointer) {
            // Another process linked it first: same target.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && pointer.is_file() => Ok(()),
            // A file system without symlinks (exFAT, some SMB/NFS mounts): a copy, as
            // huggingface_hub makes there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
                ) =>
            {
                copy_blob(blob, pointer)
            }
            result => result.map_err(io_err(pointer)),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        copy_blob(blob, pointer)
    }
}

/// `blob` copied to `pointer` through a temporary file beside it and a rename, so that a copy
/// cut short (a crash, a full disk) never stands at `pointer`, which is trusted once it is a
/// file.
fn copy_blob(blob: &Path, pointer: &Path) -> Result<(), EmberError> {
    let mut partial = pointer.as_os_str().to_owned();
    partial.push(format!(".{}.incomplete", std::process::id()));
    let partial = PathBuf::from(partial);
    let copied = fs::copy(blob, &partial)
        .and_then(|_| File::open(&partial)?.sync_all())
        .and_then(|()| fs::rename(&partial, pointer));
    if copied.is_err() {
        let _ = fs::remove_file(&partial);
    }
    copied.map_err(io_err(pointer))
}

/// `../../blobs/<etag>` for `config.json`, `../../../blobs/<etag>` for `1_Pooling/config.json`.
#[cfg_attr(not(unix), allow(dead_code))]
fn relative_blob_target(file: &str, blob: &Path) -> PathBuf {
    let depth = file.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    if let Some(name) = blob.file_name() {
        target.push(name);
    }
    target
}

/// Takes an exclusive lock on `file`, waiting for it; closing the file releases it. `File::lock`
/// is flock on Unix (what huggingface_hub's filelock takes there, so Python and Ember exclude
/// each other) and `LockFileEx` on Windows; where a platform has no file locks, blobs still
/// only appear complete, by rename.
fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        match file.lock() {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::Unsupported => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

fn header_str(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `W/"abc"` → `abc`.
fn normalize_etag(etag: String) -> String {
    let etag = etag.trim();
    etag.strip_prefix("W/")
        .unwrap_or(etag)
        .trim_matches('"')
        .to_owned()
}

/// An etag usable as a file name: no separators, no dots-only names.
fn is_safe_blob_name(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 128
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && etag.bytes().any(|b| b != b'.')
}

/// 64 lowercase hex digits: the sha256 an LFS etag is.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `scheme://authority` of an absolute URL (lowercased), or `""`.
/// `url` for an error message: without its query, which for the hub's storage redirects is a
/// signature that grants access to the file for a while (a private model's too).
fn shown_url(url: &str) -> String {
    match url.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => url.to_owned(),
    }
}

fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{authority}").to_ascii_lowercase()
}

/// Resolves a `Location` header against the URL it answered.
fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split_once("://").map_or("https", |(s, _)| s);
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base))
    } else {
        let path_end = base.find(['?', '#']).unwrap_or(base.len());
        let dir_end = base[..path_end].rfind('/').map_or(base.len(), |i| i + 1);
        format!("{}{location}", &base[..dir_end])
    }
}

/// The first byte of `Content-Range: bytes <start>-<end>/<size>`.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// Percent-encodes a URL path segment (all but RFC 3986's unreserved characters).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_copy_lands_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, b"weights").unwrap();
        let pointer = dir.path().join("model.safetensors");
        copy_blob(&blob, &pointer).unwrap();
        assert_eq!(fs::read(&pointer).unwrap(), b"weights");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "a temporary file was left: {names:?}");
        // A blob that is gone: an error naming the pointer, nothing at it.
        let missing = dir.path().join("config.json");
        let err = copy_blob(&dir.path().join("absent"), &missing).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        assert!(!missing.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn urls_in_errors_lose_their_query() {
        assert_eq!(
            shown_url("https://cdn.example/repos/ab/cd?X-Amz-Signature=secret&e=1"),
            "https://cdn.example/repos/ab/cd?…"
        );
        assert_eq!(
            shown_url("https://huggingface.co/api/models/o/n"),
            "https://huggingface.co/api/models/o/n"
        );
    }

    #[test]
    fn urls_join_and_compare_by_origin() {
        let base = "http://127.0.0.1:8000/org/name/resolve/abc/model.safetensors";
        assert_eq!(origin(base), "http://127.0.0.1:8000");
        assert_eq!(
            join_url(base, "https://cdn.example/x?sig=1"),
            "https://cdn.example/x?sig=1"
        );
        assert_eq!(join_url(base, "/api/x"), "http://127.0.0.1:8000/api/x");
        assert_eq!(
            join_url(base, "other.bin"),
            "http://127.0.0.1:8000/org/name/resolve/abc/other.bin"
        );
        assert_eq!(join_url(base, "//cdn.example/y"), "http://cdn.example/y");
        assert_ne!(origin("http://127.0.0.1:8001/x"), origin(base));
    }

    #[test]
    fn etags_and_ranges() {
        assert_eq!(normalize_etag("W/\"abc\"".into()), "abc");
        assert_eq!(normalize_etag("\"abc\"".into()), "abc");
        assert!(is_safe_blob_name("0123abcd"));
        assert!(!is_safe_blob_name("../x"));
        assert!(!is_safe_blob_name(".."));
        assert!(!is_safe_blob_name(""));
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    }

    #[test]
    fn module_paths_stay_inside() {
        assert_eq!(relative_inside("").as_deref(), Some(""));
        assert_eq!(
            relative_inside("./1_Pooling/").as_deref(),
            Some("1_Pooling")
        );
        assert_eq!(relative_inside("a/./b").as_deref(), Some("a/b"));
        assert_eq!(relative_inside("../x"), None);
        assert_eq!(relative_inside("/etc"), None);
    }

    #[test]
    fn snapshot_links_climb_to_blobs() {
        let blob = Path::new("/cache/models--o--n/blobs/abc");
        assert_eq!(
            relative_blob_target("config.json", blob),
            Path::new("../../blobs/abc")
        );
        assert_eq!(
            relative_blob_target("1_Pooling/config.json", blob),
            Path::new("../../../blobs/abc")
        );
    }

    /// The blob lock excludes another handle on the same lock file (another process's, or
    /// another thread's) until it is dropped.
    #[test]
    fn the_blob_lock_excludes_other_handles_until_dropped() {
        let dir = std::env::temp_dir().join(format!("ember-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc.lock");
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let (held, other) = (open(), open());
        lock_exclusive(&held).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(held);
        lock_exclusive(&other).unwrap();
        drop(other);
        fs::remove_dir_all(&dir).unwrap();
    }
}
