//! Arbitrary SentencePiece charsmaps (the binary blob of a `Precompiled` normaliser: a u32
//! trie size, a darts-clone double array, NUL-separated replacements) in tiny-xlm-roberta's
//! Unigram tokenizer → `TextTokenizer::load`. Loading must give `Ok` or `Err` naming the file,
//! never a panic (Ember validates the double array at load: the crate would index out of
//! bounds); a loaded tokenizer must encode the texts below and the input itself (as text)
//! without panicking, and on Ember's fast path give the `tokenizers` crate's ids.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ember::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

struct Fixture {
    dir: tempfile::TempDir,
    tokenizer: Value,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // As in tokenizer_files, a hook that does not abort, so that a panic Ember catches (the
        // crate's loader panics on most corrupt charsmaps) passes; one that escapes still
        // aborts in libfuzzer-sys's `catch_unwind`. Silent: the crate panics on most inputs.
        std::panic::set_hook(Box::new(|_| {}));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-xlm-roberta");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            source.join("tokenizer_config.json"),
            dir.path().join("tokenizer_config.json"),
        )
        .unwrap();
        let text = std::fs::read_to_string(source.join("tokenizer.json")).unwrap();
        Fixture {
            dir,
            tokenizer: serde_json::from_str(&text).unwrap(),
        }
    })
}

const TEXTS: [&str; 4] = [
    "",
    "Ｆｕｌｌｗｉｄｔｈ ﬁne ① x² cafe\u{301} e\u{301}\u{301}\u{301}\u{301}\u{301}\u{301} <mask> end",
    "Ünïcödé ÀÉÎ 東京 👩🏽\u{200d}💻 \u{0}\u{7}\t\r\n \u{a0}\u{3000}  two  spaces  ",
    "The cat sits outside <s> </s> a1b2c3 ½ ™",
];

/// Standard base64 with padding, as `tokenizer.json` stores the charsmap.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let mut tokenizer = fixture.tokenizer.clone();
    tokenizer["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": base64(data)});
    let dir = fixture.dir.path();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let tokenizer = match TextTokenizer::load(dir, Some(40), false, 512) {
        Ok(tokenizer) => tokenizer,
        Err(err) => {
            assert!(err.to_string().contains("tokenizer.json"), "{err}");
            return;
        }
    };
    let input = String::from_utf8_lossy(data);
    let (mut fast, mut reference) = (Vec::new(), Vec::new());
    for text in TEXTS.iter().copied().chain([&*input]) {
        let encoded = tokenizer.encode_into(text, &mut fast);
        if tokenizer.is_fast() {
            encoded.unwrap();
            tokenizer
                .reference_encode_into(text, &mut reference)
                .unwrap();
            assert_eq!(fast, reference, "text {text:?}");
        }
    }
});
