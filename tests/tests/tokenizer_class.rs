//! transformers 5's `AutoTokenizer` (what sentence-transformers loads) does not always take
//! `tokenizer.json` as it is: each model family's class (the config's `tokenizer_class`, or the
//! one `config.json`'s `model_type` maps to) keeps only the file's vocabulary (BPE merges, the
//! SentencePiece charsmap) and builds the rest from the class and `tokenizer_config.json`:
//! `BertTokenizer` (`do_lower_case` true unless it says false, `strip_accents`,
//! `tokenize_chinese_chars`, `[CLS] $A [SEP]`, WordPiece's defaults), `MPNetTokenizer` (the same
//! with `<s> $A </s>`), `RobertaTokenizer` (no normaliser, ByteLevel with the config's
//! `add_prefix_space`), `XLMRobertaTokenizer` and `CamembertTokenizer` (the charsmap alone,
//! WhitespaceSplit + Metaspace, Unigram's unk_id 3 or the config's unk_token's). The added tokens
//! are the config's `added_tokens_decoder` when it has one, else `added_tokens.json`'s and the
//! file's, then the named and extra special tokens (every class registers them, the one that
//! takes the file's pipeline as it is, `PreTrainedTokenizerFast`, too); sentence-transformers'
//! `tokenizer_args` win over every file, `special_tokens_map.json` over `tokenizer_config.json`. tests/fixtures/tokenizer_class_reference.json records transformers'
//! ids for copies of tiny-bert, tiny-mpnet, tiny-roberta, tiny-xlmr-spm and tiny-xlm-roberta
//! edited both ways (among them XLM-R files as transformers 4 wrote them, as most published
//! multilingual models carry); Ember's tokenizer gives the same ids, on its fast path and on the
//! `tokenizers` crate.

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
    /// The fixture folder edited (tiny-bert, tiny-mpnet, tiny-roberta, tiny-xlmr-spm, …).
    folder: String,
    /// File name → dotted key → new value (or the remove marker).
    edits: serde_json::Map<String, Value>,
    class: String,
    input_ids: Vec<Vec<u32>>,
}

#[test]
fn tokenizer_files_are_read_as_transformers_reads_them() {
    let reference: Reference = read_fixture("tokenizer_class_reference.json");
    assert!(reference.variants.len() >= 50);
    let mut rebuilt = 0;
    for variant in &reference.variants {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures_dir().join(&variant.folder), dir.path());
        apply_edits(dir.path(), &variant.edits, Some(&reference.remove_marker));
        let tokenizer = TextTokenizer::load(dir.path(), Some(128), false, 128)
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
        // The class Ember built is transformers' (TokenizersBackend: the file as it is).
        let expected_class = match variant.class.as_str() {
            "TokenizersBackend" => None,
            "DistilBertTokenizer" => Some("BertTokenizer"),
            class => Some(class),
        };
        assert_eq!(
            tokenizer.transformers_class(),
            expected_class,
            "{}",
            variant.name
        );
        // Every pipeline here runs on Ember's own tokenizers but those the fast paths do not
        // take: special tokens read as text (split_special_tokens), and a WordPiece one
        // without a post-processor.
        let falls_back = variant.name.contains("split_special_tokens")
            || variant.name == "tokenizer_class PreTrainedTokenizerFast, no post-processor";
        assert_eq!(
            tokenizer.is_fast(),
            !falls_back,
            "{}: fallback reason {:?}",
            variant.name,
            tokenizer.fallback_reason()
        );
        rebuilt += usize::from(expected_class.is_some());
        println!(
            "{} ({}): {} texts, ids as transformers'; fast path: {}",
            variant.name,
            variant.class,
            reference.texts.len(),
            tokenizer.is_fast()
        );
    }
    assert!(
        rebuilt >= 40,
        "{rebuilt} variants went through a class that rebuilds the pipeline"
    );
}
