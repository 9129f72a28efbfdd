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
    st_texts: Vec<String>,
    st_variants: Vec<StVariant>,
}

/// A tiny-bert copy tokenized by sentence-transformers itself (`SentenceTransformer.tokenize`):
/// its max_seq_length, tokenizer_args, do_lower_case and truncation side.
#[derive(Deserialize)]
struct StVariant {
    name: String,
    edits: serde_json::Map<String, Value>,
    max_seq_length: usize,
    input_ids: Vec<Vec<u32>>,
}

#[derive(Deserialize)]
struct Variant {
    name: String,
    /// The fixture folder edited (tiny-bert, tiny-mpnet, tiny-roberta, tiny-xlmr-spm, …).
    folder: String,
    /// File name → dotted key → new value (or the remove marker).
    edits: serde_json::Map<String, Value>,
    class: String,
    /// transformers' `all_special_ids`, sorted.
    all_special_ids: Vec<u32>,
    input_ids: Vec<Vec<u32>>,
}

/// `tokenizer` gives `expected` for `texts`, on its fast path (or fallback) and on the
/// `tokenizers` crate.
fn assert_ids(tokenizer: &TextTokenizer, name: &str, texts: &[String], expected: &[Vec<u32>]) {
    assert_eq!(texts.len(), expected.len(), "{name}");
    let mut ids = Vec::new();
    for (text, expected) in texts.iter().zip(expected) {
        tokenizer.encode_into(text, &mut ids).unwrap();
        assert_eq!(&ids, expected, "{name}: {text:?}");
        tokenizer.reference_encode_into(text, &mut ids).unwrap();
        assert_eq!(&ids, expected, "{name} (tokenizers crate): {text:?}");
    }
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
        assert_ids(
            &tokenizer,
            &variant.name,
            &reference.texts,
            &variant.input_ids,
        );
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
        // take: special tokens read as text (split_special_tokens), and WordPiece ones
        // without a post-processor or with a Lowercase normaliser.
        let falls_back = variant.name.contains("split_special_tokens")
            || [
                "tokenizer_class PreTrainedTokenizerFast, no post-processor",
                "tokenizer_class PreTrainedTokenizerFast, Lowercase, decoder [MASK] normalized",
            ]
            .contains(&variant.name.as_str());
        assert_eq!(
            tokenizer.is_fast(),
            !falls_back,
            "{}: fallback reason {:?}",
            variant.name,
            tokenizer.fallback_reason()
        );
        // transformers gives a special token outside the vocabulary a new id (CamemBERT's
        // <s>NOTUSED, …); Ember registers none.
        let tokenizer_json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("tokenizer.json")).unwrap(),
        )
        .unwrap();
        let vocab = &tokenizer_json["model"]["vocab"];
        let vocab_size = vocab
            .as_array()
            .map(Vec::len)
            .or_else(|| vocab.as_object().map(serde_json::Map::len))
            .unwrap() as u32;
        let expected: Vec<u32> = variant
            .all_special_ids
            .iter()
            .copied()
            .filter(|&id| id < vocab_size)
            .collect();
        assert_eq!(
            tokenizer.special_ids(),
            expected,
            "{}: all_special_ids",
            variant.name
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

#[test]
fn folders_are_tokenized_as_sentence_transformers_tokenizes_them() {
    let reference: Reference = read_fixture("tokenizer_class_reference.json");
    assert!(reference.st_variants.len() >= 8);
    for variant in &reference.st_variants {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures_dir().join("tiny-bert"), dir.path());
        apply_edits(dir.path(), &variant.edits, Some(&reference.remove_marker));
        // As the embedder loads it: sentence-transformers' max_seq_length and do_lower_case,
        // at most the position table.
        let folder = ember::folder::ModelFolder::open(dir.path()).unwrap();
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        let positions = config["max_position_embeddings"].as_u64().unwrap() as usize;
        let tokenizer = TextTokenizer::load(
            &folder.transformer_dir,
            folder.max_seq_length,
            folder.do_lower_case,
            positions,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", variant.name));
        assert_eq!(
            tokenizer.max_seq_length(),
            variant.max_seq_length,
            "{}",
            variant.name
        );
        assert_ids(
            &tokenizer,
            &variant.name,
            &reference.st_texts,
            &variant.input_ids,
        );
        println!(
            "{}: max_seq_length {}, {} texts as sentence-transformers'; fast path: {}",
            variant.name,
            variant.max_seq_length,
            reference.st_texts.len(),
            tokenizer.is_fast()
        );
    }
}
