//! Hub ids (`org/name`, `org/name@revision`) and the Hugging Face cache they live in.
//!
//! The cache is huggingface_hub's, shared with Python:
//!
//! ```text
//! <cache>/models--org--name/
//!     refs/<revision>                  the commit sha the revision pointed to
//!     blobs/<etag>                     file contents, named by etag (sha256 for LFS files)
//!     snapshots/<commit>/<file>        relative symlinks to ../../blobs/<etag>
//! <cache>/.locks/models--org--name/<etag>.lock
//! ```
//!
//! `<cache>` is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub` or
//! `~/.cache/huggingface/hub`. A model found there is used as is, without the network. With
//! the `hub` cargo feature, a model that is not there is downloaded from `$HF_ENDPOINT`
//! (default `https://huggingface.co`), with `$HF_TOKEN` when set, unless `$HF_HUB_OFFLINE` is
//! set (see `hub/download.rs`).
//!
//! The environment is read in one place, [`HubConfig::from_env`]; everything else takes a
//! [`HubConfig`], so tests and embedding programs can point the cache and the endpoint
//! anywhere without touching process-global state.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::EmberError;

#[cfg(feature = "hub")]
mod download;

/// The hub that `huggingface_hub` uses when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision of a hub id without `@revision`.
pub const DEFAULT_REVISION: &str = "main";

/// One step of a file download, passed to the callback of [`HubConfig::on_progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadProgress<'a> {
    /// The hub id being downloaded (`org/name`).
    pub model: &'a str,
    /// The file, relative to the model folder (`model.safetensors`, `1_Pooling/config.json`).
    pub file: &'a str,
    /// Bytes of the file on disk so far, a resumed prefix included.
    pub downloaded: u64,
    /// The file's size, when the hub said it.
    pub total: Option<u64>,
    /// Whether the file is complete (the last call for it).
    pub finished: bool,
}

/// A download progress callback: see [`HubConfig::on_progress`].
pub type ProgressCallback = Arc<dyn Fn(&DownloadProgress<'_>) + Send + Sync>;

/// Where hub ids are looked up, and (with the `hub` feature) downloaded from.
///
/// ```
/// use ember::HubConfig;
/// let hub = HubConfig::new("/tmp/hf-cache")
///     .endpoint("https://hub.example.com")
///     .token(Some("hf_xxx".into()));
/// assert_eq!(hub.cache_dir(), Some(std::path::Path::new("/tmp/hf-cache")));
/// assert!(!format!("{hub:?}").contains("hf_xxx"), "Debug hides the token");
/// ```
#[derive(Clone)]
pub struct HubConfig {
    endpoint: String,
    cache_dir: Option<PathBuf>,
    token: Option<String>,
    offline: bool,
    progress: Option<ProgressCallback>,
}

impl HubConfig {
    /// The cache `cache_dir`, the public hub ([`DEFAULT_ENDPOINT`]), no token, online.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            cache_dir: Some(cache_dir.into()),
            token: None,
            offline: false,
            progress: None,
        }
    }

    /// The settings huggingface_hub reads from the environment:
    ///
    /// - cache: `HF_HUB_CACHE` (or its old name `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`;
    ///   `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - endpoint: `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`];
    /// - token: `HF_TOKEN` (or its old name `HUGGING_FACE_HUB_TOKEN`), else the file
    ///   `HF_TOKEN_PATH`, else `$HF_HOME/token` (`~/.cache/huggingface/token`);
    /// - offline: `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`, which huggingface_hub also
    ///   honours) set to `1`, `true`, `yes` or `on`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
            Some(cache.join("huggingface"))
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|home| home.join("hub")));
        let endpoint = var("HF_ENDPOINT")
            .and_then(|v| v.into_string().ok())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .and_then(|v| v.into_string().ok())
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home.as_ref().map(|home| home.join("token")))?;
                std::fs::read_to_string(path).ok()
            });
        let set = |name: &str| {
            var(name)
                .and_then(|v| v.into_string().ok())
                .is_some_and(|v| {
                    matches!(
                        v.trim().to_ascii_lowercase().as_str(),
                        "1" | "true" | "yes" | "on"
                    )
                })
        };
        let offline = set("HF_HUB_OFFLINE") || set("TRANSFORMERS_OFFLINE");
        Self {
            endpoint: String::new(),
            cache_dir,
            token: None,
            offline,
            progress: None,
        }
        .endpoint(endpoint)
        .token(token)
    }

    /// The hub's base URL (`https://huggingface.co`, or a mirror); a trailing `/` is dropped.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        let endpoint: String = endpoint.into();
        self.endpoint = endpoint.trim_end_matches('/').to_owned();
        self
    }

    /// The cache folder (huggingface_hub's `HF_HUB_CACHE`).
    pub fn cache(mut self, cache_dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(cache_dir.into());
        self
    }

    /// The access token sent to the endpoint as `Authorization: Bearer <token>` (never to the
    /// hosts it redirects to). Blank tokens count as none.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        self
    }

    /// Offline: use the cache only, never the network (huggingface_hub's `HF_HUB_OFFLINE`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Calls `callback` as files download: once when a file starts (with the bytes a resumed
    /// download already has), as bytes arrive, and once with `finished` set. The library
    /// prints nothing itself; the `ember` CLI draws a bar on a terminal with this.
    pub fn on_progress(
        mut self,
        callback: impl Fn(&DownloadProgress<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// The hub's base URL.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    /// The cache folder; `None` when neither it nor a home folder is known.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Whether the network is off limits.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// A parsed hub id: `org/name`, optionally `@revision` (a branch, tag or commit sha).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoId {
    /// `org/name`.
    pub(crate) repo: String,
    /// `main` unless the id says otherwise.
    pub(crate) revision: String,
}

impl RepoId {
    /// `org/name[@revision]`, or `None` if `model` is not shaped like one. Names use
    /// `[A-Za-z0-9-_.]`; a revision may also hold `/` (`refs/pr/1`), but no `..` component.
    pub(crate) fn parse(model: &str) -> Option<Self> {
        let (repo, revision) = match model.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (model, DEFAULT_REVISION),
        };
        let name_ok = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let revision_ok = revision.split('/').all(name_ok);
        // The hub forbids `--` in names, and the cache's folder (`models--org--name`) would
        // not tell `org/a--b` from `org--a/b`.
        let repo_ok = parts.len() == 2 && parts.iter().all(|p| name_ok(p) && !p.contains("--"));
        (repo_ok && revision_ok).then(|| Self {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// `models--org--name`: the repo's folder in the cache.
    pub(crate) fn folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// Whether the revision is a full commit sha (then it is its own snapshot, with no ref).
    pub(crate) fn revision_is_commit(&self) -> bool {
        is_commit_sha(&self.revision)
    }
}

/// 40 lowercase hex digits: a git commit sha.
pub(crate) fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The cached snapshot of `id`, without the network: `snapshots/<revision>` for a commit sha,
/// else `snapshots/<refs/revision>`, else, for the default revision of a cache with no refs
/// at all (snapshots copied in without them), the only snapshot. Not when `refs/` names other
/// revisions: the only snapshot is then theirs, and `main` may well be another commit
/// (huggingface_hub never substitutes one).
fn cached_snapshot(repo_dir: &Path, id: &RepoId) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if id.revision_is_commit() {
        let dir = snapshots.join(&id.revision);
        return dir.is_dir().then_some(dir);
    }
    let from_ref = std::fs::read_to_string(repo_dir.join("refs").join(&id.revision))
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| is_commit_sha(commit))
        .map(|commit| snapshots.join(commit))
        .filter(|dir| dir.is_dir());
    if from_ref.is_some() || id.revision != DEFAULT_REVISION {
        return from_ref;
    }
    let any_ref =
        std::fs::read_dir(repo_dir.join("refs")).is_ok_and(|mut refs| refs.next().is_some());
    if any_ref {
        return None;
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match entries.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

/// Resolves `--model` with the settings in `hub`: a folder path; else a hub id
/// `org/name[@revision]` in the cache; else, with the `hub` feature and not offline, the hub
/// id downloaded into the cache (only the files a sentence-transformers folder needs). Returns
/// the model folder.
///
/// ```
/// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
/// use ember::{resolve_model_with, HubConfig};
/// let hub = HubConfig::new("/nonexistent/hf-cache").offline(true);
/// assert!(resolve_model_with(model, &hub)?.is_dir()); // a folder is used as is
/// let err = resolve_model_with("org/not-cached", &hub).unwrap_err();
/// assert!(err.to_string().contains("org/not-cached"));
/// # Ok::<(), ember::EmberError>(())
/// ```
pub fn resolve_model_with(model: &str, hub: &HubConfig) -> Result<PathBuf, EmberError> {
    let as_path = PathBuf::from(model);
    if as_path.is_dir() {
        return Ok(as_path);
    }
    let mut looked = vec![as_path];
    let (Some(id), Some(cache)) = (RepoId::parse(model), hub.cache_dir()) else {
        return Err(EmberError::ModelNotFound {
            model: model.to_owned(),
            looked,
        });
    };
    let repo_dir = cache.join(id.folder_name());
    let cached = cached_snapshot(&repo_dir, &id);
    #[cfg(feature = "hub")]
    {
        if !hub.offline {
            // A snapshot that Python filled only in part (one `hf_hub_download`, or a stopped
            // download) is completed from the hub; its blobs are reused.
            return match cached {
                Some(dir) if download::snapshot_is_complete(&dir) => Ok(dir),
                Some(dir) => match download::download_model(&id, model, &repo_dir, hub) {
                    // The hub cannot be reached (no network, a proxy, a transfer cut short)
                    // or is busy or failing (429, 5xx): the snapshot as it is, when it has what
                    // loading needs, as huggingface_hub falls back to its cache. (Snapshots from before the `.no_exist` markers
                    // count as incomplete until one download has written them.)
                    Err(
                        EmberError::HubTransfer { .. }
                        | EmberError::HubHttp {
                            status: 429 | 500..,
                            ..
                        },
                    ) if crate::folder::ModelFolder::open(&dir)
                        .is_ok_and(|folder| download::snapshot_is_loadable(&folder)) =>
                    {
                        Ok(dir)
                    }
                    other => other,
                },
                None => download::download_model(&id, model, &repo_dir, hub),
            };
        }
    }
    if let Some(dir) = cached {
        return Ok(dir);
    }
    looked.push(repo_dir.join("snapshots"));
    if hub.offline && cfg!(feature = "hub") {
        return Err(EmberError::HubOffline {
            model: model.to_owned(),
            looked: repo_dir,
        });
    }
    Err(EmberError::ModelNotFound {
        model: model.to_owned(),
        looked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_ids() {
        let id = RepoId::parse("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!(id.repo, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(id.revision, "main");
        assert_eq!(
            id.folder_name(),
            "models--sentence-transformers--all-MiniLM-L6-v2"
        );
        let id = RepoId::parse("org/name@refs/pr/1").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("org/name", "refs/pr/1")
        );
        assert!(RepoId::parse("org/name@v1.0").is_some());
        for bad in [
            "name",
            "a/b/c",
            "/abs",
            "org/",
            "../x",
            "org/..",
            "org/na me",
            "org/name@",
            "org/name@../x",
            "org/name@a//b",
            "org/a--b",
            "org--a/b",
        ] {
            assert!(RepoId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn finds_snapshots_by_ref_commit_or_only_one() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo_dir = cache.path().join("models--org--name");
        std::fs::create_dir_all(repo_dir.join("snapshots").join(commit)).unwrap();
        let main = RepoId::parse("org/name").unwrap();
        // No ref, one snapshot: that one.
        let snapshot = repo_dir.join("snapshots").join(commit);
        assert_eq!(cached_snapshot(&repo_dir, &main), Some(snapshot.clone()));
        let v1 = RepoId::parse("org/name@v1").unwrap();
        assert_eq!(cached_snapshot(&repo_dir, &v1), None);
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs").join("v1"), commit).unwrap();
        assert_eq!(cached_snapshot(&repo_dir, &v1), Some(snapshot.clone()));
        let by_commit = RepoId::parse(&format!("org/name@{commit}")).unwrap();
        assert_eq!(cached_snapshot(&repo_dir, &by_commit), Some(snapshot));
    }

    #[test]
    fn offline_miss_names_the_id_and_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let hub = HubConfig::new(cache.path()).offline(true);
        let err = resolve_model_with("org/missing", &hub)
            .unwrap_err()
            .to_string();
        assert!(err.contains("org/missing"), "{err}");
        assert!(
            err.contains(
                &cache
                    .path()
                    .join("models--org--missing")
                    .display()
                    .to_string()
            ),
            "{err}"
        );
    }
}
