//! Arbitrary text → the tiny model's tokenizer, on Ember's WordPiece fast path and on the
//! `tokenizers` crate: the ids must be identical (differential), `[CLS] … [SEP]`, at most
//! `max_seq_length` of them. Run with and without sentence-transformers' prepended
//! `Lowercase`. Invalid UTF-8 is decoded lossily, as a caller with bytes would.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ember::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizers() -> &'static [TextTokenizer; 2] {
    static TOKENIZERS: OnceLock<[TextTokenizer; 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-bert");
        [false, true].map(|do_lower_case| {
            let tokenizer = TextTokenizer::load(&dir, Some(40), do_lower_case, 64).unwrap();
            assert!(tokenizer.is_fast(), "{:?}", tokenizer.fallback_reason());
            tokenizer
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (mut fast, mut reference) = (Vec::new(), Vec::new());
    for tokenizer in tokenizers() {
        tokenizer.encode_into(&text, &mut fast).unwrap();
        tokenizer
            .reference_encode_into(&text, &mut reference)
            .unwrap();
        assert_eq!(fast, reference, "text {text:?}");
        assert!(fast.len() >= 2 && fast.len() <= tokenizer.max_seq_length());
        assert_eq!((fast[0], fast[fast.len() - 1]), (101, 102));
    }
});
