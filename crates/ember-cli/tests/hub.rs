//! `ember --model org/name` downloading from a fake hub on 127.0.0.1 (no outside network):
//! the hub settings reach the binary through the environment it reads them from.
#![cfg(feature = "hub")]

#[path = "../../ember/tests/fake_hub/mod.rs"]
mod fake_hub;

use std::path::Path;
use std::process::{Command, Output};

use fake_hub::{fixture_dir, Behaviour, FakeHub, REPO};

/// Runs `ember args` with only the hub variables given here (none inherited).
fn ember(args: &[&str], hf_env: &[(&str, &str)], hf_home: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    for name in [
        "HF_ENDPOINT",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
    ] {
        command.env_remove(name);
    }
    command.env("HF_HOME", hf_home).args(args);
    for (name, value) in hf_env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn embed_downloads_a_hub_id_and_matches_the_folder() {
    let hub = FakeHub::start(Behaviour::default());
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let texts = ["A man is playing guitar", "the cat"];
    let by_id = ember(
        &["embed", "--model", REPO, texts[0], texts[1]],
        &env,
        home.path(),
    );
    assert!(
        by_id.status.success(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    // Not a terminal: no progress bar, nothing on stderr.
    assert!(
        by_id.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    let folder = fixture_dir();
    let by_dir = ember(
        &[
            "embed",
            "--model",
            folder.to_str().unwrap(),
            texts[0],
            texts[1],
        ],
        &[],
        home.path(),
    );
    assert!(by_dir.status.success());
    assert_eq!(by_id.stdout, by_dir.stdout);
    // The default cache is $HF_HOME/hub.
    assert!(home
        .path()
        .join("hub/models--org--tiny/refs/main")
        .is_file());

    // Cached: the second run sends nothing.
    let before = hub.requests().len();
    let again = ember(&["embed", "--model", REPO, texts[0]], &env, home.path());
    assert!(again.status.success());
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn offline_miss_is_an_error_naming_the_id() {
    let hub = FakeHub::start(Behaviour::default());
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let out = ember(
        &["embed", "--model", REPO, "x"],
        &[("HF_ENDPOINT", &endpoint), ("HF_HUB_OFFLINE", "1")],
        home.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(REPO) && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
    assert!(hub.requests().is_empty());
}

#[test]
fn help_says_hub_ids_are_downloaded() {
    let home = tempfile::tempdir().unwrap();
    let out = ember(&["embed", "--help"], &[], home.path());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["org/name", "downloaded", "HF_TOKEN", "HF_HUB_OFFLINE"] {
        assert!(help.contains(needle), "{needle} missing from embed --help");
    }
}

#[test]
fn token_file_in_hf_home_is_sent_to_the_hub_only() {
    let hub = FakeHub::start(Behaviour {
        require_token: Some("hf_from_file".into()),
        ..Behaviour::default()
    });
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let denied = ember(&["embed", "--model", REPO, "x"], &env, home.path());
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("HF_TOKEN"),
        "{stderr}"
    );

    std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
    let out = ember(&["embed", "--model", REPO, "x"], &env, home.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = hub.requests();
    assert!(requests.iter().any(|r| r.server == "cdn"));
    for r in requests.iter().filter(|r| r.authorization.is_some()) {
        assert_eq!(r.server, "hub", "{r:?}");
        assert_eq!(r.authorization.as_deref(), Some("Bearer hf_from_file"));
    }
}
