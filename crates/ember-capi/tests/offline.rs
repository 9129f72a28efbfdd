//! `ember_load` looks hub ids up in the local Hugging Face cache only, as ember.h says: never a
//! download, even in a build where ember's `hub` feature is on (a workspace build unifies it
//! on through ember-cli) and `HF_HUB_OFFLINE` is unset. Its own file: it sets the process's
//! environment before any load.

use std::ffi::{CStr, CString};

use ember_capi::*;

#[test]
fn a_hub_id_missing_from_the_cache_is_not_downloaded() {
    let cache = tempfile::tempdir().expect("temp dir");
    // SAFETY (set_var): this test binary has this one test, and nothing else runs yet.
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::remove_var("HF_HUB_OFFLINE");
    // A download would go here and fail with a connection error (port 9, discard: closed).
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let id = CString::new("ember-tests/not-in-the-cache").expect("no NUL");
    // SAFETY: a valid C string.
    let e = unsafe { ember_load(id.as_ptr(), 1, 0) };
    assert!(e.is_null(), "loaded a model that is nowhere");
    let ptr = ember_last_error();
    assert!(!ptr.is_null(), "no error recorded");
    // SAFETY: non-null pointers from ember_last_error are NUL-terminated and valid until the
    // next ember call on this thread.
    let message = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned();
    assert!(
        message.contains("ember-tests/not-in-the-cache"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1") && !message.to_lowercase().contains("connect"),
        "ember_load tried the network: {message}"
    );
}
