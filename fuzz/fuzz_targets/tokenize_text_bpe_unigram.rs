//! Arbitrary text → the byte-level BPE (tiny-roberta; tiny-modernbert, with NFC) and SentencePiece
//! Unigram (tiny-xlm-roberta; tiny-xlmr-spm, with the nmt_nfkc charsmap, a right strip and the
//! " {2,}" → "▁" replacement) fast paths and the `tokenizers` crate: the ids must be identical
//! (differential), `<s> … </s>` (ModernBERT: `[CLS] … [SEP]`), at most `max_seq_length` of them.
//! The first byte picks the folder; the rest, decoded lossily, is the text.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ember::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;

/// Folder, `max_seq_length`, first and last id.
const FOLDERS: [(&str, usize, (u32, u32)); 4] = [
    ("tiny-roberta", 40, (0, 2)),
    ("tiny-modernbert", 128, (601, 602)),
    ("tiny-xlm-roberta", 40, (0, 2)),
    ("tiny-xlmr-spm", 40, (0, 2)),
];

fn tokenizers() -> &'static [TextTokenizer] {
    static TOKENIZERS: OnceLock<Vec<TextTokenizer>> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        FOLDERS
            .iter()
            .map(|&(folder, max_seq_length, _)| {
                let tokenizer =
                    TextTokenizer::load(&fixtures.join(folder), Some(max_seq_length), false, 4096)
                        .unwrap();
                assert!(tokenizer.is_fast(), "{folder}: {:?}", tokenizer.fallback_reason());
                tokenizer
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let i = usize::from(selector) % FOLDERS.len();
    let (folder, _, ends) = FOLDERS[i];
    let tokenizer = &tokenizers()[i];
    let text = String::from_utf8_lossy(text);
    let (mut fast, mut reference) = (Vec::new(), Vec::new());
    tokenizer.encode_into(&text, &mut fast).unwrap();
    tokenizer
        .reference_encode_into(&text, &mut reference)
        .unwrap();
    assert_eq!(fast, reference, "{folder}: text {text:?}");
    assert!(fast.len() >= 2 && fast.len() <= tokenizer.max_seq_length());
    assert_eq!((fast[0], fast[fast.len() - 1]), ends, "{folder}");
});
