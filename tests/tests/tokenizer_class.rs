//! transformers 5's `AutoTokenizer` (what sentence-transformers loads) does not always take
//! `tokenizer.json` as it is: for `BertTokenizer` (the config's `tokenizer_class`, or
//! `config.json`'s `model_type` bert without one) it keeps only the file's vocabulary and added
//! tokens and rebuilds the rest from `tokenizer_config.json` (`do_lower_case` true unless it says
//! false, `strip_accents`, `tokenize_chinese_chars`, `[CLS] $A [SEP]`, WordPiece's defaults);
//! `PreTrainedTokenizerFast` takes the file as it is; `MPNetTokenizer` rebuilds as BERT's does,
//! with `<s> $A </s>`. tests/fixtures/tokenizer_class_reference.json records its ids for copies
//! of tiny-bert and tiny-mpnet edited both ways;
//! Ember's tokenizer gives the same ids, on its fast path and on the `tokenizers` crate.

use ember::tokenize::TextTokenizer;
use ember_reference_tests::*;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Reference {
    remove_marker: String,
    texts: Vec<String>,
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Variant {
    name: String,
    /// The fixture folder edited (tiny-bert or tiny-mpnet).
    folder: String,
    /// File name → dotted key → new value (or the remove marker).
    edits: serde_json::Map<String, Value>,
    class: String,
    input_ids: Vec<Vec<u32>>,
}

#[test]
fn tokenizer_files_are_read_as_transformers_reads_them() {
    let reference: Reference = read_fixture("tokenizer_class_reference.json");
    assert!(reference.variants.len() >= 10);
    let mut rebuilt = 0;
    for variant in &reference.variants {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures_dir().join(&variant.folder), dir.path());
        apply_edits(dir.path(), &variant.edits, Some(&reference.remove_marker));
        let tokenizer = TextTokenizer::load(dir.path(), None, false, 128)
            .unwrap_or_else(|e| panic!("{}: {e}", variant.name));
        let mut ids = Vec::new();
        for (text, expected) in reference.texts.iter().zip(&variant.input_ids) {
            tokenizer.encode_into(text, &mut ids).unwrap();
            assert_eq!(&ids, expected, "{}: {text:?}", variant.name);
            tokenizer.reference_encode_into(text, &mut ids).unwrap();
            assert_eq!(
                &ids, expected,
                "{} (tokenizers crate): {text:?}",
                variant.name
            );
        }
        rebuilt += usize::from(variant.class != "TokenizersBackend");
        println!(
            "{} ({}): {} texts, ids as transformers'; fast path: {}",
            variant.name,
            variant.class,
            reference.texts.len(),
            tokenizer.is_fast()
        );
    }
    assert!(
        rebuilt >= 10,
        "{rebuilt} variants went through BertTokenizer"
    );
}
