//! Arbitrary tokenizer files → `TextTokenizer::load`. The input is split at the first NUL:
//! before it the tokenizer (`tokenizer.json`, or `vocab.txt` when the input's first byte is
//! odd), after it `tokenizer_config.json` (absent when there is no NUL). Loading must give
//! `Ok` or `Err`, never a panic; a loaded tokenizer must encode a few texts without panicking,
//! and when it takes Ember's fast path, give the `tokenizers` crate's ids.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ember::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fn folder() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        // libfuzzer-sys's panic hook aborts on every panic, even one Ember catches (it catches
        // the tokenizers crate's panics on malformed files and returns an error). The default
        // hook is put back: a panic that escapes Ember still aborts, in libfuzzer-sys's own
        // `catch_unwind` around this target.
        drop(std::panic::take_hook());
        tempfile::tempdir().unwrap()
    })
    .path()
}

const TEXTS: [&str; 5] = [
    "",
    "The cat sits outside [MASK] [SEP] [cls]",
    "Ünïcödé ÀÉÎ ﬁ ½ 東京 🙂 \u{0}\u{7}\t\r\n x",
    "unaffable ##ing running!!! ... --- a1b2c3",
    "a very long word: pneumonoultramicroscopicsilicovolcanoconiosispneumonoultramicroscopic",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let dir = folder();
    let (tokenizer_file, config) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (file, other) = if selector % 2 == 1 {
        ("vocab.txt", "tokenizer.json")
    } else {
        ("tokenizer.json", "vocab.txt")
    };
    let _ = std::fs::remove_file(dir.join(other));
    std::fs::write(dir.join(file), tokenizer_file).unwrap();
    let config_path = dir.join("tokenizer_config.json");
    match config {
        Some(config) => std::fs::write(&config_path, config).unwrap(),
        None => {
            let _ = std::fs::remove_file(&config_path);
        }
    }
    let do_lower_case = selector & 2 != 0;
    let max_seq_length = [None, Some(2), Some(8), Some(512)][usize::from(selector >> 2) % 4];
    let Ok(tokenizer) = TextTokenizer::load(dir, max_seq_length, do_lower_case, 512) else {
        return;
    };
    let _ = tokenizer.check_ids_below(1 << 16);
    let (mut fast, mut reference) = (Vec::new(), Vec::new());
    for text in TEXTS {
        let encoded = tokenizer.encode_into(text, &mut fast);
        if tokenizer.is_fast() {
            encoded.unwrap();
            tokenizer
                .reference_encode_into(text, &mut reference)
                .unwrap();
            assert_eq!(fast, reference, "text {text:?}");
            assert!(fast.len() <= tokenizer.max_seq_length());
        }
    }
});
