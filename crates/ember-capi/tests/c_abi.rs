//! The C ABI: the header agrees with the Rust exports, the C example builds with the system C
//! compiler and gives the Rust API's embeddings bit for bit, errors come back as text, and
//! concurrent calls are safe.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use ember_capi::*;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");

fn tiny_model() -> PathBuf {
    Path::new(CRATE).join("../../tests/fixtures/tiny-bert")
}

/// `libember_capi.a` of this build: cargo builds every crate type of the library for the
/// test and leaves them in `target/<profile>/deps/`, next to the test binary (a plain
/// `cargo build` also copies them up to `target/<profile>/`).
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("target/<profile>/deps");
    [deps, deps.parent().unwrap_or(deps)]
        .iter()
        .map(|dir| dir.join("libember_capi.a"))
        .find(|lib| lib.exists())
        .unwrap_or_else(|| panic!("libember_capi.a is not next to {}", exe.display()))
}

/// `(name, return type, [parameter types])`, types in C spelled as [`norm`] gives them.
type Signature = (String, String, Vec<String>);

/// C type text with `*` as its own token and single spaces: `const char *const *` →
/// `const char * const *`.
fn norm(s: &str) -> String {
    s.replace('*', " * ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Rust FFI type in the spelling `ember.h` uses.
fn c_type(rust: &str) -> String {
    let rust = rust.split_whitespace().collect::<Vec<_>>().join(" ");
    let c = match rust.as_str() {
        "" => "void",
        "usize" => "size_t",
        "c_int" => "int",
        "*const c_char" => "const char *",
        "*const *const c_char" => "const char *const *",
        "*const usize" => "const size_t *",
        "*mut f32" => "float *",
        "*const EmberEmbedder" => "const EmberEmbedder *",
        "*mut EmberEmbedder" => "EmberEmbedder *",
        other => panic!("no C spelling for Rust type {other:?}: extend c_type()"),
    };
    norm(c)
}

fn rust_exports() -> Vec<Signature> {
    let src = std::fs::read_to_string(Path::new(CRATE).join("src/lib.rs")).expect("lib.rs");
    let mut out = Vec::new();
    for chunk in src.split("extern \"C\" fn ").skip(1) {
        let (name, rest) = chunk.split_once('(').expect("(");
        let (args, rest) = rest.split_once(')').expect(")");
        let ret = rest[..rest.find('{').expect("{")].trim();
        let params = args
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(|a| c_type(a.split_once(':').expect("name: type").1))
            .collect();
        out.push((
            name.trim().to_owned(),
            c_type(ret.strip_prefix("->").unwrap_or("").trim()),
            params,
        ));
    }
    out.sort();
    out
}

fn header_declarations() -> Vec<Signature> {
    let header =
        std::fs::read_to_string(Path::new(CRATE).join("include/ember.h")).expect("ember.h");
    let mut code = String::new();
    let mut rest = header.as_str();
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("a closed comment");
        rest = &rest[start + end + 2..];
    }
    code.push_str(rest);
    let mut out = Vec::new();
    for statement in code.split(';') {
        // The last line group of the statement: skips `#include`, `extern "C" {` and such.
        let decl = norm(statement.rsplit(['{', '}']).next().unwrap_or(""));
        let Some(paren) = decl.find('(') else {
            continue;
        };
        if decl.contains("typedef") || decl.contains('#') {
            continue;
        }
        let mut head: Vec<&str> = decl[..paren].split(' ').filter(|t| !t.is_empty()).collect();
        let name = head.pop().expect("a function name").to_owned();
        let params = decl[paren + 1..decl.rfind(')').expect(")")]
            .split(',')
            .map(|p| {
                let mut tokens: Vec<&str> = p.split_whitespace().collect();
                tokens.pop(); // the parameter's name
                tokens.join(" ")
            })
            .filter(|p| p != "void" && !p.is_empty())
            .collect();
        out.push((name, head.join(" "), params));
    }
    out.sort();
    out
}

#[test]
fn header_matches_rust_exports() {
    let rust = rust_exports();
    let header = header_declarations();
    assert_eq!(rust.len(), 6, "exports found in lib.rs: {rust:?}");
    assert_eq!(header, rust, "include/ember.h has drifted from src/lib.rs");
}

#[test]
fn c_example_matches_rust_api() {
    let lib = static_library();
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("embed");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(Path::new(CRATE).join("include"))
        .arg(Path::new(CRATE).join("examples/embed.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        // Extra flags, e.g. `-fsanitize=address` when the library was built with ASan
        // (scripts/sanitize.sh).
        .args(
            std::env::var("EMBER_C_FLAGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "the C example did not compile");

    let texts = [
        "A cat sits on the mat.",
        "",
        "Ünïcödé and 漢字, with [SEP] inside.",
    ];
    let output = Command::new(&exe)
        .arg(tiny_model())
        .args(texts)
        .output()
        .expect("run the C example");
    assert!(
        output.status.success(),
        "C example failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<f32>> = String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| {
            line.trim_matches(['[', ']'])
                .split(',')
                .map(|v| v.parse::<f32>().expect("a float"))
                .collect()
        })
        .collect();
    let embedder = ember::Embedder::builder()
        .threads(1)
        .load_dir(&tiny_model())
        .expect("tiny model");
    let expected = embedder.encode(&texts).expect("encode");
    assert_eq!(rows.len(), texts.len());
    for (i, row) in rows.iter().enumerate() {
        // %.9g round-trips an f32 exactly: the C path must be bit-identical.
        assert_eq!(row.as_slice(), expected.row(i), "text {i}");
    }
}

fn last_error() -> Option<String> {
    let ptr = ember_last_error();
    (!ptr.is_null()).then(|| {
        // SAFETY: non-null pointers from ember_last_error are NUL-terminated and valid until
        // the next ember call on this thread.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    })
}

fn load_tiny() -> *mut EmberEmbedder {
    let path = CString::new(tiny_model().to_str().expect("UTF-8 path")).expect("no NUL");
    // SAFETY: a valid C string.
    let e = unsafe { ember_load(path.as_ptr(), 2, 4) };
    assert!(!e.is_null(), "load failed: {:?}", last_error());
    assert_eq!(last_error(), None);
    e
}

/// Calls `ember_encode` on Rust strings.
fn encode(e: *const EmberEmbedder, texts: &[&[u8]], out: &mut [f32]) -> i32 {
    let ptrs: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr().cast()).collect();
    let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
    // SAFETY: pointers and lengths describe live slices; `out` is exclusively borrowed.
    unsafe {
        ember_encode(
            e,
            ptrs.as_ptr(),
            lens.as_ptr(),
            texts.len(),
            out.as_mut_ptr(),
            out.len(),
        )
    }
}

#[test]
fn errors_are_reported_not_panicked() {
    let missing = CString::new("/nonexistent/ember-model").expect("no NUL");
    // SAFETY: valid C strings / NULL, which ember_load accepts.
    unsafe {
        assert!(ember_load(missing.as_ptr(), 0, 0).is_null());
        let message = last_error().expect("an error");
        assert!(message.contains("/nonexistent/ember-model"), "{message}");
        assert!(ember_load(std::ptr::null(), 0, 0).is_null());
        assert!(last_error().expect("an error").contains("NULL"));
        assert_eq!(ember_dim(std::ptr::null()), 0);
    }

    let e = load_tiny();
    // SAFETY: `e` is live.
    let dim = unsafe { ember_dim(e) };
    assert!(dim > 0);
    let mut out = vec![0f32; 2 * dim];
    assert_eq!(encode(e, &[b"fine", b"bad \xff byte"], &mut out), -1);
    let message = last_error().expect("an error");
    assert!(
        message.contains("text 1") && message.contains("UTF-8"),
        "{message}"
    );
    assert_eq!(encode(e, &[b"one", b"two"], &mut out[..dim]), -1);
    assert!(last_error().expect("an error").contains("holds"));
    assert_eq!(encode(std::ptr::null(), &[b"x"], &mut out), -1);
    assert_eq!(encode(e, &[], &mut []), 0);
    assert_eq!(last_error(), None);
    assert_eq!(encode(e, &[b"with \0 NUL", b""], &mut out), 0);
    // SAFETY: `e` came from ember_load and is no longer used.
    unsafe { ember_free(e) };
    // SAFETY: NULL is ignored.
    unsafe { ember_free(std::ptr::null_mut()) };
}

#[test]
fn concurrent_calls_agree_with_serial() {
    struct Shared(*mut EmberEmbedder);
    // SAFETY: the C ABI documents EmberEmbedder as thread-safe (Embedder is Send + Sync).
    unsafe impl Sync for Shared {}
    let e = Shared(load_tiny());
    // SAFETY: `e` is live.
    let dim = unsafe { ember_dim(e.0) };
    let texts: Vec<String> = (0..24)
        .map(|i| format!("sentence number {i} of many"))
        .collect();
    let bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let mut serial = vec![0f32; texts.len() * dim];
    assert_eq!(encode(e.0, &bytes, &mut serial), 0);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (e, bytes, serial) = (&e, &bytes, &serial);
            scope.spawn(move || {
                for round in 0..5 {
                    let start = (t * 5 + round) % bytes.len();
                    let mut out = vec![0f32; dim];
                    assert_eq!(encode(e.0, &bytes[start..start + 1], &mut out), 0);
                    assert_eq!(out, serial[start * dim..(start + 1) * dim]);
                }
            });
        }
    });
    // SAFETY: all threads have joined.
    unsafe { ember_free(e.0) };
}
