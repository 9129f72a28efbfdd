//! The on-disk CUBIN cache: a kernel file compiled by NVRTC once is loaded from disk by every
//! later process, instead of being compiled again (`gemm_sm90.cu` alone takes 10–15 s of NVRTC
//! at every process start otherwise).
//!
//! Where: `$EMBER_KERNEL_CACHE` (a directory; `off` or empty turns the cache off), else
//! `$XDG_CACHE_HOME/ember/kernels`, else `~/.cache/ember/kernels`.
//!
//! An entry is named `<file stem>-<target>-<key>.cubin`, where the key is the SHA-256 of
//! everything the CUBIN depends on: the file's text and its header's, NVRTC's options (the
//! target among them), version and build (the library file's path, size and modification time),
//! and Ember's version. So an entry is never used for other
//! sources, and a change of any input makes a new entry rather than a stale hit. An entry holds
//! a magic tag, the SHA-256 of the CUBIN and the CUBIN: a truncated or corrupt file is a miss
//! (compiled again and rewritten), never loaded. Entries are written to a temporary file and
//! renamed into place, so concurrent processes see whole entries only. At most
//! [`KEEP_PER_FILE`] entries of one file and target are kept (the oldest go first), so that
//! editing a kernel does not grow the directory without bound; a temporary file a killed
//! process left is removed after an hour.
//!
//! The cache is best effort: a directory that cannot be read or written only means compiling.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The environment variable naming the cache directory (`off` or empty: no cache).
pub const VARIABLE: &str = "EMBER_KERNEL_CACHE";

/// The first bytes of an entry (and the version of its layout).
const MAGIC: &[u8; 8] = b"EMBCUBN1";

/// Entries kept per kernel file and target.
pub const KEEP_PER_FILE: usize = 4;

/// The cache directory the environment asks for: [`VARIABLE`], else
/// `$XDG_CACHE_HOME/ember/kernels`, else `$HOME/.cache/ember/kernels`; `None` when the cache is
/// off or no directory is known.
pub fn directory() -> Option<PathBuf> {
    directory_from(
        std::env::var_os(VARIABLE),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`directory`] for the given variables (`EMBER_KERNEL_CACHE`, `XDG_CACHE_HOME`, `HOME`); an
/// `XDG_CACHE_HOME` or `HOME` that is empty or relative is ignored (as the XDG spec says), so
/// that the cache never lands in the current directory.
pub fn directory_from(
    explicit: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        if dir.is_empty() || dir == "off" {
            return None;
        }
        return Some(PathBuf::from(dir));
    }
    let absolute = |dir: OsString| Some(PathBuf::from(dir)).filter(|dir| dir.is_absolute());
    let cache = xdg_cache_home
        .and_then(absolute)
        .or_else(|| Some(home.and_then(absolute)?.join(".cache")))?;
    Some(cache.join("ember").join("kernels"))
}

/// What a CUBIN is compiled from: the key of its entry.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The kernel file's name (`gemm.cu`).
    pub file: &'a str,
    /// Its text.
    pub source: &'a str,
    /// Its headers: `(include name, text)`.
    pub headers: &'a [(&'a str, &'a str)],
    /// NVRTC's target (`sm_90a`): the entry's name shows it.
    pub target: &'a str,
    /// NVRTC's options (the target among them).
    pub options: &'a [String],
    /// NVRTC's version.
    pub nvrtc_version: (i32, i32),
    /// NVRTC's build ([`crate::Nvrtc::identity`]).
    pub nvrtc_identity: &'a str,
}

/// An entry's file name under the cache directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    prefix: String,
    name: String,
}

impl Key {
    /// The key of `inputs`.
    pub fn new(inputs: &Inputs) -> Key {
        let mut hash = Sha256::new();
        // Every field length-prefixed, so that no two different inputs hash the same bytes.
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        field(MAGIC);
        field(env!("CARGO_PKG_VERSION").as_bytes());
        field(&inputs.nvrtc_version.0.to_le_bytes());
        field(&inputs.nvrtc_version.1.to_le_bytes());
        field(inputs.nvrtc_identity.as_bytes());
        field(inputs.target.as_bytes());
        field(&(inputs.options.len() as u64).to_le_bytes());
        for option in inputs.options {
            field(option.as_bytes());
        }
        field(inputs.file.as_bytes());
        field(inputs.source.as_bytes());
        field(&(inputs.headers.len() as u64).to_le_bytes());
        for (name, text) in inputs.headers {
            field(name.as_bytes());
            field(text.as_bytes());
        }
        let digest = hash.finalize();
        let stem = inputs.file.strip_suffix(".cu").unwrap_or(inputs.file);
        let prefix = format!("{stem}-{}-", inputs.target);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Key {
            name: format!("{prefix}{hex}.cubin"),
            prefix,
        }
    }

    /// The entry's file name.
    pub fn file_name(&self) -> &str {
        &self.name
    }
}

/// The CUBIN stored under `key` in `dir`, if there is a whole, uncorrupted one.
pub fn load(dir: &Path, key: &Key) -> Option<Vec<u8>> {
    let bytes = std::fs::read(dir.join(&key.name)).ok()?;
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (digest, cubin) = rest.split_at_checked(32)?;
    (!cubin.is_empty() && Sha256::digest(cubin).as_slice() == digest).then(|| cubin.to_vec())
}

/// Stores `cubin` under `key` in `dir` (created if absent): written to a temporary file, then
/// renamed into place; then the oldest entries of the same file and target beyond
/// [`KEEP_PER_FILE`] are removed.
pub fn store(dir: &Path, key: &Key, cubin: &[u8]) -> std::io::Result<()> {
    // Unique among this process's writers (the counter) and other processes' (the pid).
    static WRITES: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let serial = WRITES.fetch_add(1, Ordering::Relaxed);
    let temporary = dir.join(format!(".{}.{}.{serial}.tmp", key.name, std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(cubin))?;
        file.write_all(cubin)?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join(&key.name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return written;
    }
    prune(dir, key);
    Ok(())
}

/// Removes the oldest entries of `key`'s file and target beyond [`KEEP_PER_FILE`] (never `key`'s
/// own), and their temporary files over an hour old (left by a process killed while writing).
/// Best effort: a file another process removed first is no error.
fn prune(dir: &Path, key: &Key) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let temporary_prefix = format!(".{}", key.prefix);
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(modified) = entry.metadata().and_then(|m| m.modified()).ok() else {
            continue;
        };
        if name.starts_with(&key.prefix) && name.ends_with(".cubin") && *name != key.name {
            others.push((modified, entry.path()));
        } else if name.starts_with(&temporary_prefix)
            && name.ends_with(".tmp")
            && modified < an_hour_ago
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // Newest first; the entry just stored is one of the kept.
    others.sort_by(|a, b| b.cmp(a));
    for (_, path) in others.into_iter().skip(KEEP_PER_FILE - 1) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(source: &'a str, options: &'a [String]) -> Inputs<'a> {
        Inputs {
            file: "gemm.cu",
            source,
            headers: &[("common.cuh", "// header")],
            target: "sm_90a",
            options,
            nvrtc_version: (12, 9),
            nvrtc_identity: "/usr/lib/libnvrtc.so.12.9.86:100:1",
        }
    }

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ember-kernel-cache-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let options = ["--gpu-architecture=sm_90a".to_owned()];
        let base = inputs("kernel", &options);
        let key = Key::new(&base);
        assert!(key.file_name().starts_with("gemm-sm_90a-"));
        assert!(key.file_name().ends_with(".cubin"));
        assert_eq!(key, Key::new(&inputs("kernel", &options)));
        let other_options = ["--gpu-architecture=sm_80".to_owned()];
        let header = [("common.cuh", "// other header")];
        let variants = [
            Inputs {
                source: "kernel ",
                ..base
            },
            Inputs {
                headers: &header,
                ..base
            },
            Inputs {
                headers: &[],
                ..base
            },
            Inputs {
                target: "sm_80",
                ..base
            },
            Inputs {
                options: &other_options,
                ..base
            },
            Inputs {
                nvrtc_version: (12, 8),
                ..base
            },
            Inputs {
                nvrtc_identity: "/usr/lib/libnvrtc.so.12.9.41:100:1",
                ..base
            },
            Inputs {
                file: "gemm_sm90.cu",
                ..base
            },
        ];
        for variant in &variants {
            assert_ne!(Key::new(variant), key, "{variant:?}");
        }
        // Moving text between fields changes the key too (fields are length-prefixed).
        let a = [("ab", "c")];
        let b = [("a", "bc")];
        assert_ne!(
            Key::new(&Inputs {
                headers: &a,
                ..base
            }),
            Key::new(&Inputs {
                headers: &b,
                ..base
            })
        );
    }

    #[test]
    fn entries_round_trip_and_damaged_ones_are_misses() {
        let dir = scratch("round-trip");
        let options = ["--gpu-architecture=sm_90a".to_owned()];
        let key = Key::new(&inputs("kernel", &options));
        assert_eq!(load(&dir, &key), None, "absent directory");
        let cubin: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        store(&dir, &key, &cubin).unwrap();
        assert_eq!(load(&dir, &key).as_deref(), Some(cubin.as_slice()));

        let path = dir.join(key.file_name());
        let whole = std::fs::read(&path).unwrap();
        let damaged: [(&str, Vec<u8>); 5] = [
            ("truncated", whole[..whole.len() - 1].to_vec()),
            ("header only", whole[..40].to_vec()),
            ("empty", Vec::new()),
            ("flipped byte", {
                let mut bytes = whole.clone();
                bytes[500] ^= 1;
                bytes
            }),
            ("other magic", {
                let mut bytes = whole.clone();
                bytes[7] = b'0';
                bytes
            }),
        ];
        for (what, bytes) in damaged {
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(load(&dir, &key), None, "{what}");
        }
        // No temporary file is left behind.
        store(&dir, &key, &cubin).unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [key.file_name()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_newest_entries_of_a_file_are_kept() {
        let dir = scratch("prune");
        let options = ["--gpu-architecture=sm_90a".to_owned()];
        let sources: Vec<String> = (0..KEEP_PER_FILE + 3).map(|i| format!("v{i}")).collect();
        let keys: Vec<Key> = sources
            .iter()
            .map(|s| Key::new(&inputs(s, &options)))
            .collect();
        // Another file's entry is never pruned for this one.
        let other = Key::new(&Inputs {
            file: "attention.cu",
            ..inputs("v0", &options)
        });
        store(&dir, &other, b"other").unwrap();
        // Entries a minute apart, in the order stored, whatever the file system's resolution.
        let start = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (i, key) in keys.iter().enumerate() {
            store(&dir, key, b"cubin").unwrap();
            if let Ok(file) = std::fs::File::options()
                .write(true)
                .open(dir.join(key.file_name()))
            {
                let at = start + std::time::Duration::from_secs(60 * i as u64);
                file.set_modified(at).unwrap();
            }
        }
        // A temporary file of this kernel's left two hours ago goes; a fresh one stays.
        let stale = dir.join(format!(".{}.1.0.tmp", keys[0].file_name()));
        let fresh = dir.join(format!(".{}.1.1.tmp", keys[0].file_name()));
        for path in [&stale, &fresh] {
            std::fs::write(path, b"partial").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        store(&dir, keys.last().unwrap(), b"cubin").unwrap();
        assert!(!stale.exists() && fresh.exists());
        let kept: Vec<bool> = keys.iter().map(|k| load(&dir, k).is_some()).collect();
        let newest = keys.len() - KEEP_PER_FILE;
        assert!(kept[..newest].iter().all(|&k| !k), "{kept:?}");
        assert!(kept[newest..].iter().all(|&k| k), "{kept:?}");
        assert!(load(&dir, &other).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_directory_comes_from_the_environment() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            directory_from(os("/tmp/k"), os("/x"), os("/h")),
            Some(PathBuf::from("/tmp/k"))
        );
        assert_eq!(directory_from(os("off"), os("/x"), os("/h")), None);
        assert_eq!(directory_from(os(""), os("/x"), os("/h")), None);
        assert_eq!(
            directory_from(None, os("/x"), os("/h")),
            Some(PathBuf::from("/x/ember/kernels"))
        );
        assert_eq!(
            directory_from(None, os(""), os("/h")),
            Some(PathBuf::from("/h/.cache/ember/kernels"))
        );
        assert_eq!(
            directory_from(None, os("relative"), os("/h")),
            Some(PathBuf::from("/h/.cache/ember/kernels"))
        );
        assert_eq!(directory_from(None, None, os("")), None);
        assert_eq!(directory_from(None, None, os("home")), None);
        assert_eq!(directory_from(None, None, None), None);
    }
}
