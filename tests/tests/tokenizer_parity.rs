//! Ember's WordPiece fast path against the `tokenizers` crate, id for id.
//!
//! Each folder's [`TextTokenizer`] carries both pipelines: `encode_into` (the fast path once
//! [`TextTokenizer::is_fast`] says so, asserted first, so the crate is never compared with
//! itself) and `reference_encode_into` (always the crate). Texts: every line of the benchmark
//! corpus, every text of `fixtures/texts.json`, a few hand-picked edge cases, and
//! [`MixedText`]'s seeded hostile texts (100 000 per real folder, 20 000 per variant).
//!
//! Folders: all-MiniLM-L6-v2 as published (and with sentence-transformers' `do_lower_case`
//! forcing a prepended `Lowercase`), the same with only `vocab.txt` + `tokenizer_config.json`,
//! the committed tiny BERTs (both ways), and edits of MiniLM's `tokenizer.json` that switch
//! each normaliser flag, swap the post-processor, add normalised and stripped added tokens and
//! shrink the limits. Edits the fast path does not reproduce must fall back, and say why; a
//! folder that falls back still embeds (on the crate) exactly as the fast path does.
//!
//! The byte-level BPE fast path is held to the same standard: tiny-roberta, tiny-modernbert and
//! tiny-modernbert-bias on the corpus, the fixture texts, [`BPE_FRAGMENTS`] and 100 000 seeded
//! hostile texts each with those fragments spliced in ([`bpe_texts`]), their dropped counts
//! against the crate's untruncated lengths, the ids sentence-transformers recorded for the
//! fixtures, long runs, and edits of tiny-roberta's `tokenizer.json` ([`bpe_variants`]) that
//! either still match (prefix space, NFC / Lowercase, added-token flags, `ignore_merges`,
//! unknown bytes, legacy merges, each post-processor, limits) or fall back with a reason
//! (dropout, affixes, byte fallback, other normalisers and pre-tokenisers, shared ids).
//!
//! The SentencePiece Unigram fast path likewise: tiny-xlm-roberta (no normaliser,
//! WhitespaceSplit + Metaspace) and tiny-xlmr-spm (a real `nmt_nfkc` Precompiled charsmap,
//! Strip, Replace `" {2,}"`, Metaspace: transformers 5's XLMRobertaConverter) on the corpus, the
//! fixture texts, [`UNIGRAM_FRAGMENTS`] (what the charsmap and Metaspace touch) and 100 000
//! seeded hostile texts each ([`unigram_texts`]), their dropped counts, the ids
//! sentence-transformers recorded for tiny-xlmr-spm, and edits of tiny-xlmr-spm's
//! `tokenizer.json` ([`unigram_variants`]) that still match (the older hub layout, no
//! normaliser, each prepend scheme, `split` false, Replace forms, added-token flags, limits) or
//! fall back with a reason (byte fallback, other regexes and normalisers, no `unk_id`, a corrupt
//! charsmap).
//!
//! `cargo test --release -p ember-reference-tests --test tokenizer_parity -- --ignored
//! --nocapture tokenizer_speed` prints the fast paths' speed against the crate's (WordPiece,
//! BPE in `bpe_tokenizer_speed`, Unigram in `unigram_tokenizer_speed`).

use std::path::Path;
use std::time::Instant;

use ember::tokenize::TextTokenizer;
use ember::ModelFolder;
use ember_reference_tests::mixed_text::MixedText;
use ember_reference_tests::*;
use rayon::prelude::*;
use serde_json::{json, Value};

const GENERATED_PER_FOLDER: usize = 100_000;
const GENERATED_PER_VARIANT: usize = 20_000;

/// Texts that exercise the added-token variants below.
const EXTRA_TEXTS: &[&str] = &[
    "HELLO world and Hello World!",
    "xHello Worldy",
    "中文 and 中文字",
    "ümlaut Ümlaut UMLAUT",
    "E-MAIL e-mail",
    "<eos>Ember ember EMBER<eos>",
    "a   [MASK]   b[MASK]c [MASK]",
    "[MASK]",
    "   [CLS]   ",
    "İstanbul İ",
    // Canonical reordering: U+1D165 (Mc, class 216) sorts before U+1D16D (Mc, 226) and
    // U+0301 (Mn, 230, then stripped); see the "reordering" variant's vocabulary.
    "a\u{1D16D}\u{1D165} ba\u{1D16D}\u{301}\u{1D165} a\u{1D165}\u{1D16D}\u{301}",
    "a\u{301}\u{1D16D}\u{1D165}a\u{1D16D}\u{1D165}",
];

/// The tokenizer of the model folder `dir`, configured as the embedder configures it (or with
/// `do_lower_case` forced).
fn load(dir: &Path, do_lower_case: Option<bool>) -> TextTokenizer {
    let folder = ModelFolder::open(dir).unwrap();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(folder.transformer_dir.join("config.json")).unwrap(),
    )
    .unwrap();
    TextTokenizer::load(
        &folder.transformer_dir,
        folder.max_seq_length,
        do_lower_case.unwrap_or(folder.do_lower_case),
        config["max_position_embeddings"].as_u64().unwrap() as usize,
    )
    .unwrap()
}

fn corpus() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/corpus/wordnet-examples.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(
        lines.len() >= 1000,
        "{}: {} lines",
        path.display(),
        lines.len()
    );
    lines
}

/// Vocabulary entries as generator words (`##` removed), so texts hit real pieces.
fn vocabulary_words() -> Vec<String> {
    let text = std::fs::read_to_string(minilm_dir().join("vocab.txt")).unwrap();
    text.lines()
        .filter(|w| !w.starts_with("[unused"))
        .map(|w| w.trim_start_matches("##").to_owned())
        .collect()
}

/// Corpus, fixture texts, edge cases, then `generated` seeded texts.
fn all_texts(generated: usize, seed: u64) -> Vec<String> {
    let mut texts = corpus();
    texts.extend(read_fixture::<Vec<String>>("texts.json"));
    texts.extend(EXTRA_TEXTS.iter().map(|t| t.to_string()));
    let mut generator = MixedText::new(seed, vocabulary_words());
    texts.extend((0..generated).map(|_| generator.text()));
    texts
}

/// What one text gave on both paths: the mismatch (if any), whether the crate's ids filled
/// `max_seq_length`, and the seconds each path took.
struct Compared {
    mismatch: Option<String>,
    truncated: bool,
    fast_time: f64,
    reference_time: f64,
}

/// Compares both paths on every text; panics listing the first mismatches. Returns how many
/// texts were compared.
///
/// The texts are spread over rayon's pool (almost all the time goes to the `tokenizers` crate,
/// one text at a time), so the times printed are summed over its threads.
fn assert_parity(name: &str, tokenizer: &TextTokenizer, texts: &[String]) -> usize {
    let compared: Vec<Compared> = texts
        .par_iter()
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(fast, reference), (i, text)| {
                let start = Instant::now();
                let a = tokenizer.encode_into(text, fast);
                let middle = Instant::now();
                let b = tokenizer.reference_encode_into(text, reference);
                let reference_time = middle.elapsed().as_secs_f64();
                let (a, b) = (a.map(|()| &*fast), b.map(|()| &*reference));
                Compared {
                    truncated: b
                        .as_ref()
                        .is_ok_and(|ids| ids.len() == tokenizer.max_seq_length()),
                    mismatch: (a != b).then(|| {
                        format!("text {i} {text:?}:\n  fast      {a:?}\n  tokenizers {b:?}")
                    }),
                    fast_time: (middle - start).as_secs_f64(),
                    reference_time,
                }
            },
        )
        .collect();
    let truncated = compared.iter().filter(|c| c.truncated).count();
    let fast_time: f64 = compared.iter().map(|c| c.fast_time).sum();
    let reference_time: f64 = compared.iter().map(|c| c.reference_time).sum();
    let mismatches: Vec<String> = compared.into_iter().filter_map(|c| c.mismatch).collect();
    println!(
        "{name}: {} texts compared ({truncated} at max_seq_length {}), {} mismatches \
         (fast {fast_time:.2} s, tokenizers {reference_time:.2} s)",
        texts.len(),
        tokenizer.max_seq_length(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} texts differ; first:\n{}",
        mismatches.len(),
        texts.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
    texts.len()
}

/// A copy of `from` without `tokenizer.json`: the `vocab.txt` + `tokenizer_config.json` path.
fn vocab_txt_only(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(from, dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    dir
}

fn tiny_dirs() -> Vec<std::path::PathBuf> {
    ["tiny-bert", "tiny-bert-relu", "tiny-bert-gelu-new"]
        .iter()
        .map(|name| fixtures_dir().join(name))
        .collect()
}

#[test]
fn standard_folders_take_the_fast_path() {
    let minilm = minilm_dir();
    let minilm_vocab = vocab_txt_only(&minilm);
    let mut dirs = vec![minilm.clone(), minilm_vocab.path().to_owned()];
    let tiny_vocab: Vec<_> = tiny_dirs().iter().map(|d| vocab_txt_only(d)).collect();
    dirs.extend(tiny_dirs());
    dirs.extend(tiny_vocab.iter().map(|d| d.path().to_owned()));
    for dir in &dirs {
        for do_lower_case in [None, Some(true)] {
            let tokenizer = load(dir, do_lower_case);
            assert!(
                tokenizer.is_fast(),
                "{} (do_lower_case {do_lower_case:?}) falls back: {:?}",
                dir.display(),
                tokenizer.fallback_reason()
            );
        }
    }
}

#[test]
fn minilm_matches_tokenizers_crate() {
    let texts = all_texts(GENERATED_PER_FOLDER, 1);
    let dir = minilm_dir();
    let tokenizer = load(&dir, None);
    assert!(tokenizer.is_fast());
    assert_parity("all-MiniLM-L6-v2 tokenizer.json", &tokenizer, &texts);
    // sentence-transformers' do_lower_case prepends a Lowercase normaliser.
    let lowered = load(&dir, Some(true));
    assert!(lowered.is_fast());
    assert_parity(
        "all-MiniLM-L6-v2 tokenizer.json, do_lower_case",
        &lowered,
        &texts,
    );
}

#[test]
fn minilm_vocab_txt_only_matches_tokenizers_crate() {
    let texts = all_texts(GENERATED_PER_FOLDER, 2);
    let dir = vocab_txt_only(&minilm_dir());
    let tokenizer = load(dir.path(), None);
    assert!(tokenizer.is_fast());
    assert_parity("all-MiniLM-L6-v2 vocab.txt", &tokenizer, &texts);
}

/// MPNet's pipeline (all-mpnet-base-v2's: BERT's normaliser and pre-tokeniser, WordPiece,
/// `<s> … </s>` by RobertaProcessing, `<mask>` lstrip) takes the fast path and gives the
/// crate's ids.
#[test]
fn mpnet_folder_matches_tokenizers_crate() {
    let tokenizer = load(&fixtures_dir().join("tiny-mpnet"), None);
    assert!(
        tokenizer.is_fast(),
        "tiny-mpnet falls back: {:?}",
        tokenizer.fallback_reason()
    );
    let mut texts = all_texts(GENERATED_PER_VARIANT, 8);
    texts.extend(
        [
            "<mask>",
            "a <mask>",
            "a  \t<mask>b",
            "<s>x</s> <mask><mask> <pad>",
            "<MASK> [UNK]",
        ]
        .map(str::to_owned),
    );
    assert_parity("tiny-mpnet tokenizer.json", &tokenizer, &texts);
}

#[test]
fn tiny_folders_match_tokenizers_crate() {
    // The three folders' tokenizer files are identical: a different seed each tests more.
    for (seed, dir) in (3..).zip(tiny_dirs()) {
        let texts = all_texts(GENERATED_PER_FOLDER, seed);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let tokenizer = load(&dir, None);
        assert!(tokenizer.is_fast());
        assert_parity(&format!("{name} tokenizer.json"), &tokenizer, &texts);
    }
    let texts = all_texts(GENERATED_PER_FOLDER, 6);
    let vocab = vocab_txt_only(&fixtures_dir().join("tiny-bert"));
    let tokenizer = load(vocab.path(), None);
    assert!(tokenizer.is_fast());
    assert_parity("tiny-bert vocab.txt", &tokenizer, &texts);
}

/// One edit of a `tokenizer.json` (MiniLM's or tiny-roberta's) and how to load it.
struct Variant {
    name: &'static str,
    edit: fn(&mut Value),
    do_lower_case: bool,
    max_seq_length: usize,
    fast: bool,
}

impl Variant {
    /// An edit that must keep the fast path, checked at `max_seq_length` 40.
    fn fast_40(name: &'static str, edit: fn(&mut Value)) -> Self {
        Variant {
            name,
            edit,
            do_lower_case: false,
            max_seq_length: 40,
            fast: true,
        }
    }

    /// An edit the fast path must refuse (with a reason), at `max_seq_length` 40.
    fn falls_back_40(name: &'static str, edit: fn(&mut Value)) -> Self {
        Variant {
            fast: false,
            ..Self::fast_40(name, edit)
        }
    }
}

/// The added token of `tokenizer.json` (as a `Value`) whose content is `content`.
fn added_token_mut<'a>(t: &'a mut Value, content: &str) -> &'a mut Value {
    t["added_tokens"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|token| token["content"] == content)
        .unwrap()
}

fn bert_normalizer(lowercase: bool, strip_accents: Value) -> Value {
    json!({"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
           "strip_accents": strip_accents, "lowercase": lowercase})
}

fn added_token(id: u32, content: &str, normalized: bool, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": normalized, "special": special})
}

/// Non-special tokens matched in the normalised text, plain ones matched in the raw text,
/// and `[MASK]` swallowing the spaces around it.
fn add_tokens(t: &mut Value) {
    let added = t["added_tokens"].as_array_mut().unwrap();
    for token in added.iter_mut() {
        if token["content"] == "[MASK]" {
            token["lstrip"] = json!(true);
            token["rstrip"] = json!(true);
        }
    }
    added.extend([
        added_token(30522, "Hello World", true, false),
        added_token(30523, "ümlaut", true, false),
        added_token(30524, "中文", true, false),
        added_token(30525, "e-mail", true, false),
        added_token(30526, "<eos>", false, true),
        added_token(30527, "Ember", false, false),
        added_token(2088, "world", true, false),
    ]);
}

fn variants() -> Vec<Variant> {
    let fast = |name, edit: fn(&mut Value)| Variant {
        name,
        edit,
        do_lower_case: false,
        max_seq_length: 256,
        fast: true,
    };
    vec![
        fast("cased", |t| {
            t["normalizer"] = bert_normalizer(false, Value::Null)
        }),
        fast("lowercase, keep accents", |t| {
            t["normalizer"] = bert_normalizer(true, json!(false))
        }),
        fast("cased, strip accents", |t| {
            t["normalizer"] = bert_normalizer(false, json!(true))
        }),
        fast("no clean_text, no CJK spacing", |t| {
            t["normalizer"]["clean_text"] = json!(false);
            t["normalizer"]["handle_chinese_chars"] = json!(false);
        }),
        fast("file's own [Lowercase, cased BertNormalizer]", |t| {
            t["normalizer"] = json!({"type": "Sequence", "normalizers": [
                {"type": "Lowercase"}, bert_normalizer(false, Value::Null)]});
        }),
        fast("BertProcessing", |t| {
            t["post_processor"] =
                json!({"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]});
        }),
        fast("RobertaProcessing (MPNet's, on WordPiece)", |t| {
            t["post_processor"] = json!({"type": "RobertaProcessing", "sep": ["[SEP]", 102],
                "cls": ["[CLS]", 101], "trim_offsets": true, "add_prefix_space": false});
        }),
        fast("added tokens, normalised and stripped", add_tokens),
        Variant {
            do_lower_case: true,
            ..fast("cased with added tokens, do_lower_case", |t| {
                t["normalizer"] = bert_normalizer(false, Value::Null);
                add_tokens(t);
            })
        },
        fast("reordering: Mc non-starters in the vocabulary", |t| {
            // Only non-starters that are not Mn survive strip_accents, and no published
            // vocabulary holds one, so reordering never shows in real ids: add some.
            let vocab = t["model"]["vocab"].as_object_mut().unwrap();
            vocab.insert("a\u{1D165}\u{1D16D}".into(), json!(30522));
            vocab.insert("##a\u{1D165}\u{1D16D}".into(), json!(30523));
        }),
        fast("max_input_chars_per_word 8", |t| {
            t["model"]["max_input_chars_per_word"] = json!(8)
        }),
        Variant {
            max_seq_length: 2,
            ..fast("max_seq_length 2", |_| {})
        },
        Variant {
            max_seq_length: 3,
            ..fast("max_seq_length 3", |_| {})
        },
        Variant {
            max_seq_length: 9,
            ..fast("max_seq_length 9", |_| {})
        },
        Variant {
            fast: false,
            ..fast("single_word added token", |t| {
                t["added_tokens"][4]["single_word"] = json!(true)
            })
        },
        Variant {
            fast: false,
            ..fast("NFKC normaliser", |t| {
                t["normalizer"] = json!({"type": "NFKC"})
            })
        },
        Variant {
            fast: false,
            ..fast("WhitespaceSplit pre-tokeniser", |t| {
                t["pre_tokenizer"] = json!({"type": "WhitespaceSplit"})
            })
        },
        Variant {
            fast: false,
            ..fast("no post-processor", |t| t["post_processor"] = Value::Null)
        },
        // Found by the tokenizer_files fuzz target: the fast path missed "[SEP]" as an added
        // token once "[MASK]" shared its id.
        Variant {
            fast: false,
            ..fast("two added tokens on one id", |t| {
                t["model"]["vocab"]["[MASK]"] = json!(102)
            })
        },
    ]
}

#[test]
fn pipeline_variants_match_or_fall_back() {
    let texts = all_texts(GENERATED_PER_VARIANT, 7);
    let original = minilm_dir().join("tokenizer.json");
    check_variants(&original, variants(), &texts, 512, false);
}

/// Each variant: `original` (a `tokenizer.json`) edited as it says, loaded with `max_tokens`
/// positions; it takes the fast path or falls back as it says. A fallback names its reason and
/// still encodes (on the crate; an unknown token missing from the vocabulary, which the crate
/// would only report per text, is refused at load: see `broken_folders.rs`); a fast path gives
/// the crate's ids on `texts` and, with `dropped`, its dropped counts on a tenth of them.
fn check_variants(
    original: &Path,
    variants: Vec<Variant>,
    texts: &[String],
    max_tokens: usize,
    dropped: bool,
) {
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(original).unwrap()).unwrap();
    for variant in variants {
        let dir = tempfile::tempdir().unwrap();
        let mut tokenizer_json = original.clone();
        (variant.edit)(&mut tokenizer_json);
        std::fs::write(
            dir.path().join("tokenizer.json"),
            tokenizer_json.to_string(),
        )
        .unwrap();
        let tokenizer = TextTokenizer::load(
            dir.path(),
            Some(variant.max_seq_length),
            variant.do_lower_case,
            max_tokens,
        )
        .unwrap();
        assert_eq!(
            tokenizer.is_fast(),
            variant.fast,
            "{}: fallback reason {:?}",
            variant.name,
            tokenizer.fallback_reason()
        );
        if let Some(reason) = tokenizer.fallback_reason() {
            println!("{}: falls back: {reason}", variant.name);
            assert!(!reason.is_empty());
            let mut ids = Vec::new();
            let ok = tokenizer.encode_into("A cat sits.", &mut ids);
            assert!(ok.is_ok(), "{}", variant.name);
            continue;
        }
        assert_parity(variant.name, &tokenizer, texts);
        if dropped {
            assert_dropped_parity(variant.name, &tokenizer, &texts[..texts.len() / 10]);
        }
    }
}

/// A folder the fast path does not take still embeds, on the `tokenizers` crate: a tiny-bert
/// copy whose `[MASK]` is `single_word` gives the same ids on texts without `[MASK]`, so the
/// same embeddings, bit for bit.
#[test]
fn fallback_folder_embeds_on_the_tokenizers_crate() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert"), dir.path());
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for token in tokenizer_json["added_tokens"].as_array_mut().unwrap() {
        if token["content"] == "[MASK]" {
            token["single_word"] = json!(true);
        }
    }
    std::fs::write(&path, tokenizer_json.to_string()).unwrap();
    assert!(!load(dir.path(), None).is_fast());

    let texts: Vec<String> = all_texts(2_000, 8)
        .into_iter()
        .filter(|text| !text.contains("[MASK]"))
        .collect();
    let fast = ember::Embedder::builder()
        .threads(2)
        .load_dir(&fixtures_dir().join("tiny-bert"))
        .unwrap();
    let fallback = ember::Embedder::builder()
        .threads(2)
        .load_dir(dir.path())
        .unwrap();
    for text in texts.iter().take(200) {
        assert_eq!(
            fallback.tokenize(text).unwrap(),
            fast.tokenize(text).unwrap()
        );
    }
    assert_eq!(
        fallback.encode(&texts).unwrap(),
        fast.encode(&texts).unwrap()
    );
}

/// Fast path against the crate on the corpus, same process, same texts: prints texts/s and
/// the ratio.
#[test]
#[ignore = "timing: run with --ignored --nocapture"]
fn tokenizer_speed() {
    let texts = corpus();
    let tokenizer = load(&minilm_dir(), None);
    assert!(tokenizer.is_fast());
    let mut ids = Vec::new();
    let mut time = |encode: &dyn Fn(&str, &mut Vec<u32>)| {
        // Best of 5 passes, after one to warm caches and grow buffers.
        let mut best = f64::INFINITY;
        for pass in 0..6 {
            let start = Instant::now();
            for text in &texts {
                encode(text, &mut ids);
            }
            if pass > 0 {
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        best
    };
    let fast = time(&|text, ids| tokenizer.encode_into(text, ids).unwrap());
    let crate_time = time(&|text, ids| tokenizer.reference_encode_into(text, ids).unwrap());
    let per_text = |seconds: f64| seconds / texts.len() as f64 * 1e6;
    println!(
        "tokenize {} corpus texts, one thread: Ember WordPiece {:.2} µs/text, tokenizers crate \
         {:.2} µs/text: {:.1}× faster",
        texts.len(),
        per_text(fast),
        per_text(crate_time),
        crate_time / fast
    );

    // Tokenization's share of a whole call (the embedder tokenizes on one thread).
    let embedder = ember::Embedder::builder()
        .threads(2)
        .batch_size(32)
        .load_dir(&minilm_dir())
        .unwrap();
    let mut out = vec![0f32; texts.len() * embedder.dim()];
    embedder.encode_into(&texts, &mut out).unwrap();
    let start = Instant::now();
    embedder.encode_into(&texts, &mut out).unwrap();
    let encode = start.elapsed().as_secs_f64();
    println!(
        "encode_into of the corpus (2 threads, batches of 32): {encode:.3} s, of which \
         tokenization {:.2}%",
        100.0 * fast / encode
    );
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE (RoBERTa, ModernBERT): Ember's `bpe` path against the crate.
// ---------------------------------------------------------------------------------------------

/// The committed byte-level BPE folders: RoBERTa (`<s> … </s>`, `<mask>` with lstrip, no
/// normaliser) and ModernBERT (NFC, `[CLS] … [SEP]` by TemplateProcessing, `[MASK]` lstrip).
const BPE_FOLDERS: &[&str] = &["tiny-roberta", "tiny-modernbert", "tiny-modernbert-bias"];

/// Fragments the byte-level pipeline treats specially, spliced into the generated texts:
/// contractions (the regex's are ASCII and case-sensitive), whitespace runs before words and at
/// the end (`\s+(?!\S)`), numbers, literal added tokens with and without spaces around them,
/// text NFC changes (decomposed accents, Å as U+212B, Hangul jamo, long mark stacks), bytes
/// outside ASCII in every UTF-8 length, very long words.
const BPE_FRAGMENTS: &[&str] = &[
    "<mask>",
    " <mask>",
    "<mask> ",
    "   <mask>   ",
    "\t<mask>",
    "<mask><mask>",
    "<s>",
    "</s>",
    " </s> ",
    "<pad>",
    "<unk>",
    "<mask",
    "mask>",
    "[MASK]",
    " [MASK]",
    "  [MASK]x",
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[UNK]",
    "'s",
    "'S",
    "’s",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'t",
    "''s",
    " 's",
    "'",
    "it's",
    "IT'S",
    "we'll've",
    "\u{3000}",
    "\u{3000}\u{3000}x",
    "\t",
    "\n",
    "\r\n",
    "  ",
    "    ",
    " \t ",
    "\n\n\n",
    "\u{A0}",
    "\u{85}",
    "\u{2028}",
    "123",
    " 4567",
    "3.14",
    "٣٤٥",
    "Ⅻ",
    "½",
    "e\u{301}",
    "\u{301}",
    "a\u{301}\u{302}\u{303}\u{304}\u{305}\u{306}\u{307}",
    "\u{212B}",
    "\u{1100}\u{1161}\u{11A8}",
    "한국어",
    "café",
    "naïve",
    "日本語",
    "🙂",
    "👩🏽‍💻",
    "\u{0}",
    "\u{FFFD}",
    "\u{10FFFF}",
    "$%&",
    "...",
    "--",
    "@user",
    "#tag",
];

/// Seeded texts for the BPE folders: [`MixedText`]'s hostile texts with [`BPE_FRAGMENTS`]
/// spliced in at random char boundaries, and every so often a very long word or a long
/// whitespace run.
fn bpe_texts(generated: usize, seed: u64) -> Vec<String> {
    texts_with_fragments(generated, seed, BPE_FRAGMENTS)
}

/// The corpus, fixture texts (the recorded references' included), `fragments` alone, a few
/// long or empty texts, then `generated` of [`MixedText`]'s hostile texts with `fragments`
/// spliced in at random char boundaries, and every so often a very long word or a long
/// whitespace run.
fn texts_with_fragments(generated: usize, seed: u64, fragments: &[&str]) -> Vec<String> {
    let mut texts = corpus();
    texts.extend(read_fixture::<Vec<String>>("texts.json"));
    texts.extend(EXTRA_TEXTS.iter().map(|t| t.to_string()));
    texts.extend(fragments.iter().map(|t| t.to_string()));
    for reference in [
        "tiny_roberta_reference.json",
        "tiny_modernbert_reference.json",
        "tiny_xlmr_spm_reference.json",
    ] {
        let value: Value = read_fixture(reference);
        texts.extend(
            value["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
    }
    texts.extend([
        String::new(),
        " ".into(),
        "a".repeat(5_000),
        format!("x{}y", " ".repeat(3_000)),
        format!("{}end", "\u{3000}".repeat(500)),
        "<mask>".repeat(100),
        " <mask>".repeat(100),
        "hello world ".repeat(200),
    ]);
    let mut generator = MixedText::new(seed, vocabulary_words());
    let mut state = seed ^ 0x5eed_b9e0;
    let mut below = |n: usize| {
        state = ember_reference_tests::seeded::mix(state);
        (state % n as u64) as usize
    };
    for _ in 0..generated {
        let mut text = generator.text();
        for _ in 0..below(6) {
            let boundaries: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            let at = boundaries[below(boundaries.len())];
            let fragment = match below(40) {
                0 => "abc".repeat(1 + below(400)),
                1 => " ".repeat(1 + below(50)),
                _ => fragments[below(fragments.len())].to_owned(),
            };
            text.insert_str(at, &fragment);
        }
        texts.push(text);
    }
    texts
}

/// The dropped counts (`encode_into_counting_dropped`) against the crate's untruncated
/// lengths, and the counted ids against plain `encode_into`; the texts spread over rayon's pool
/// as in [`assert_parity`].
fn assert_dropped_parity(name: &str, tokenizer: &TextTokenizer, texts: &[String]) -> usize {
    // Per text: whether truncation cut it, and its mismatch if any.
    let checked: Vec<(bool, Option<String>)> = texts
        .par_iter()
        .enumerate()
        .map_init(
            || {
                let scratch = ember::tokenize::TokenizeScratch::default();
                (scratch, Vec::new(), Vec::new())
            },
            |(scratch, counted, plain), (i, text)| {
                let dropped = tokenizer
                    .encode_into_counting_dropped(text, counted, scratch)
                    .unwrap();
                tokenizer.encode_into(text, plain).unwrap();
                let full = tokenizer.reference_untruncated_len(text).unwrap();
                let mismatch = (counted != plain || counted.len() + dropped != full).then(|| {
                    format!(
                        "text {i} {text:?}: {} kept + {dropped} dropped, crate untruncated {full}, same ids {}",
                        counted.len(),
                        counted == plain
                    )
                });
                (dropped > 0, mismatch)
            },
        )
        .collect();
    let cut = checked.iter().filter(|(cut, _)| *cut).count();
    let mismatches: Vec<String> = checked.into_iter().filter_map(|(_, m)| m).collect();
    println!(
        "{name}: dropped counts of {} texts compared ({cut} cut), {} mismatches",
        texts.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} dropped counts differ; first:\n{}",
        mismatches.len(),
        texts.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
    texts.len()
}

#[test]
fn bpe_folders_take_the_fast_path() {
    for name in BPE_FOLDERS {
        for do_lower_case in [None, Some(true)] {
            let tokenizer = load(&fixtures_dir().join(name), do_lower_case);
            assert!(
                tokenizer.is_fast(),
                "{name} (do_lower_case {do_lower_case:?}) falls back: {:?}",
                tokenizer.fallback_reason()
            );
        }
    }
}

/// The ids sentence-transformers recorded for the fixtures' reference texts (Python
/// `tokenizers`), against the fast path.
#[test]
fn bpe_folders_match_the_recorded_python_ids() {
    for (reference, names) in [
        ("tiny_roberta_reference.json", &["tiny-roberta"][..]),
        (
            "tiny_modernbert_reference.json",
            &["tiny-modernbert", "tiny-modernbert-bias"][..],
        ),
    ] {
        let value: Value = read_fixture(reference);
        let texts = value["texts"].as_array().unwrap();
        for name in names {
            let Some(model) = value["models"].get(*name) else {
                continue;
            };
            let tokenizer = load(&fixtures_dir().join(name), None);
            assert!(tokenizer.is_fast());
            let mut ids = Vec::new();
            for (text, expected) in texts.iter().zip(model["input_ids"].as_array().unwrap()) {
                tokenizer
                    .encode_into(text.as_str().unwrap(), &mut ids)
                    .unwrap();
                let expected: Vec<u32> = serde_json::from_value(expected.clone()).unwrap();
                assert_eq!(ids, expected, "{name}: {text}");
            }
            println!("{name}: {} recorded texts match", texts.len());
        }
    }
}

#[test]
fn bpe_folders_match_tokenizers_crate() {
    for (seed, name) in (20..).zip(BPE_FOLDERS) {
        let texts = bpe_texts(GENERATED_PER_FOLDER, seed);
        let dir = fixtures_dir().join(name);
        let tokenizer = load(&dir, None);
        assert!(tokenizer.is_fast(), "{:?}", tokenizer.fallback_reason());
        assert_parity(&format!("{name} tokenizer.json"), &tokenizer, &texts);
        // Dropped counts run the crate twice per text: a fifth of the texts.
        assert_dropped_parity(name, &tokenizer, &texts[..texts.len() / 5]);
    }
}

/// Takes byte-level symbols out of a BPE vocabulary, with every merge that involves them.
fn remove_symbols(t: &mut Value, symbols: &[&str]) {
    let vocab = t["model"]["vocab"].as_object_mut().unwrap();
    for symbol in symbols {
        vocab.remove(*symbol);
    }
    let merges = t["model"]["merges"].as_array_mut().unwrap();
    merges.retain(|merge| {
        let merge = merge.to_string();
        !symbols.iter().any(|symbol| merge.contains(symbol))
    });
}

fn bpe_variants() -> Vec<Variant> {
    let (fast, falls_back) = (Variant::fast_40, Variant::falls_back_40);
    vec![
        fast("add_prefix_space", |t| {
            t["pre_tokenizer"]["add_prefix_space"] = json!(true)
        }),
        fast("NFC normaliser", |t| {
            t["normalizer"] = json!({"type": "NFC"})
        }),
        fast("[NFC, Lowercase] normaliser", |t| {
            t["normalizer"] = json!({"type": "Sequence", "normalizers": [
                {"type": "NFC"}, {"type": "Lowercase"}]})
        }),
        Variant {
            do_lower_case: true,
            ..fast("do_lower_case prepends Lowercase", |t| {
                t["normalizer"] = json!({"type": "NFC"});
                added_token_mut(t, "<mask>")["normalized"] = json!(true);
            })
        },
        fast("added tokens rstrip, single_word, normalized", |t| {
            added_token_mut(t, "<mask>")["rstrip"] = json!(true);
            added_token_mut(t, "</s>")["single_word"] = json!(true);
            added_token_mut(t, "<s>")["normalized"] = json!(true);
            added_token_mut(t, "<pad>")["lstrip"] = json!(true);
            added_token_mut(t, "<pad>")["rstrip"] = json!(true);
            t["normalizer"] = json!({"type": "NFC"});
            let tokens = t["added_tokens"].as_array_mut().unwrap();
            tokens.push(
                json!({"id": 1501, "content": "Hello World", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": true, "special": false}),
            );
            tokens.push(
                json!({"id": 1502, "content": "caf\u{e9}", "single_word": true,
                "lstrip": false, "rstrip": false, "normalized": true, "special": false}),
            );
        }),
        fast("ignore_merges", |t| {
            t["model"]["ignore_merges"] = json!(true)
        }),
        fast("unk_token, bytes missing", |t| {
            t["model"]["unk_token"] = json!("<unk>");
            // 'z' and the UTF-8 continuation bytes 0x80–0x82 become <unk>.
            remove_symbols(t, &["z", "\u{122}", "\u{123}", "\u{124}"]);
        }),
        fast("fused unk_token, bytes missing", |t| {
            t["model"]["unk_token"] = json!("<unk>");
            t["model"]["fuse_unk"] = json!(true);
            remove_symbols(t, &["z", "\u{122}", "\u{123}", "\u{124}"]);
        }),
        fast("no unk_token, bytes missing", |t| {
            remove_symbols(t, &["z", "\u{122}", "\u{123}", "\u{124}"])
        }),
        fast("legacy \"a b\" merges", |t| {
            let merges: Vec<Value> = t["model"]["merges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    json!(format!(
                        "{} {}",
                        m[0].as_str().unwrap(),
                        m[1].as_str().unwrap()
                    ))
                })
                .collect();
            t["model"]["merges"] = json!(merges);
        }),
        fast("merges reversed", |t| {
            t["model"]["merges"].as_array_mut().unwrap().reverse()
        }),
        fast(
            "BertProcessing",
            |t| {
                t["post_processor"] =
                    json!({"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]})
            },
        ),
        fast("ByteLevel post-processor", |t| {
            t["post_processor"] = json!({"type": "ByteLevel", "add_prefix_space": true,
                "trim_offsets": true, "use_regex": true})
        }),
        fast("Sequence [ByteLevel, RobertaProcessing]", |t| {
            let roberta = t["post_processor"].clone();
            t["post_processor"] = json!({"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                 "use_regex": true}, roberta]})
        }),
        fast("no post-processor", |t| t["post_processor"] = Value::Null),
        fast("dropout 0", |t| t["model"]["dropout"] = json!(0.0)),
        Variant {
            max_seq_length: 2,
            ..fast("max_seq_length 2", |_| {})
        },
        Variant {
            max_seq_length: 3,
            ..fast("max_seq_length 3", |_| {})
        },
        Variant {
            max_seq_length: 512,
            ..fast("max_seq_length 512", |_| {})
        },
        falls_back("dropout 0.1", |t| t["model"]["dropout"] = json!(0.1)),
        falls_back("continuing_subword_prefix", |t| {
            // The crate cuts the prefix off each merge's right part (panicking on a shorter
            // one): one merge, over a prefixed token.
            t["model"]["continuing_subword_prefix"] = json!("##");
            t["model"]["vocab"]["##t"] = json!(1501);
            t["model"]["merges"] = json!([["\u{120}", "##t"]]);
        }),
        falls_back("end_of_word_suffix", |t| {
            t["model"]["end_of_word_suffix"] = json!("</w>")
        }),
        falls_back("byte_fallback", |t| {
            t["model"]["byte_fallback"] = json!(true)
        }),
        falls_back("NFKC normaliser", |t| {
            t["normalizer"] = json!({"type": "NFKC"})
        }),
        falls_back("ByteLevel without regex", |t| {
            t["pre_tokenizer"]["use_regex"] = json!(false)
        }),
        falls_back("Metaspace pre-tokeniser", |t| {
            t["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁",
                "prepend_scheme": "always", "split": true})
        }),
        falls_back("two added tokens on one id", |t| {
            t["model"]["vocab"]["<mask>"] = json!(2)
        }),
    ]
}

#[test]
fn bpe_pipeline_variants_match_or_fall_back() {
    let texts = bpe_texts(GENERATED_PER_VARIANT, 30);
    let original = fixtures_dir().join("tiny-roberta/tokenizer.json");
    check_variants(&original, bpe_variants(), &texts, 514, true);
}

/// The BPE fast path against the crate on the corpus, per folder: prints µs/text and the ratio.
#[test]
#[ignore = "timing: run with --ignored --nocapture"]
fn bpe_tokenizer_speed() {
    print_speed_against_the_crate("BPE", &BPE_FOLDERS[..2]);
}

/// For each folder (its fast path taken), the best of 5 passes over the corpus on one thread,
/// Ember's tokenizer and the `tokenizers` crate in turn: µs/text and the ratio.
fn print_speed_against_the_crate(kind: &str, folders: &[&str]) {
    let texts = corpus();
    for name in folders {
        let tokenizer = load(&fixtures_dir().join(name), None);
        assert!(
            tokenizer.is_fast(),
            "{name}: {:?}",
            tokenizer.fallback_reason()
        );
        let mut ids = Vec::new();
        let mut time = |encode: &dyn Fn(&str, &mut Vec<u32>)| {
            let mut best = f64::INFINITY;
            for pass in 0..6 {
                let start = Instant::now();
                for text in &texts {
                    encode(text, &mut ids);
                }
                if pass > 0 {
                    best = best.min(start.elapsed().as_secs_f64());
                }
            }
            best
        };
        let fast = time(&|text, ids| tokenizer.encode_into(text, ids).unwrap());
        let crate_time = time(&|text, ids| tokenizer.reference_encode_into(text, ids).unwrap());
        let per_text = |seconds: f64| seconds / texts.len() as f64 * 1e6;
        println!(
            "{name}: tokenize {} corpus texts, one thread: Ember {kind} {:.2} µs/text, tokenizers \
             crate {:.2} µs/text: {:.1}× faster",
            texts.len(),
            per_text(fast),
            per_text(crate_time),
            crate_time / fast
        );
    }
}

/// Long runs: whitespace before a word (`\s+(?!\S)` backs off one char: the crate's
/// backtracking regex walks the whole run), and long words and texts, counted to the end.
#[test]
fn bpe_long_runs_match_tokenizers_crate() {
    let tokenizer = load(&fixtures_dir().join("tiny-roberta"), None);
    assert!(tokenizer.is_fast());
    let mut texts = Vec::new();
    for n in [10_000, 200_000, 1_100_000] {
        texts.push(format!("a{}b c", " ".repeat(n)));
        texts.push(format!("a{}b", "\n".repeat(n)));
        texts.push(format!("a{}", " \t".repeat(n / 2)));
        texts.push("ab".repeat(n / 2));
        texts.push("é".repeat(n / 2));
    }
    assert_parity("tiny-roberta, long runs", &tokenizer, &texts);
    assert_dropped_parity("tiny-roberta, long runs", &tokenizer, &texts);
}

// ---------------------------------------------------------------------------------------------
// SentencePiece Unigram (XLM-RoBERTa): Ember's `unigram` path against the crate.
// ---------------------------------------------------------------------------------------------

/// The committed Unigram folders: tiny-xlm-roberta (no normaliser, WhitespaceSplit then
/// Metaspace, `<mask>` lstrip) and tiny-xlmr-spm (transformers 5's XLMRobertaConverter over a
/// real `nmt_nfkc` model: Precompiled, Strip right, Replace `" {2,}"` → `▁`, Metaspace).
const UNIGRAM_FOLDERS: &[&str] = &["tiny-xlm-roberta", "tiny-xlmr-spm"];

/// Fragments the Unigram pipeline treats specially, on top of [`BPE_FRAGMENTS`]: what the
/// `nmt_nfkc` charsmap rewrites (fullwidth and halfwidth forms, ligatures, circled, super- and
/// subscript digits, compatibility chars, combining marks and long runs of them, Hangul jamo,
/// control and format chars, odd spaces), graphemes it sees whole (emoji ZWJ sequences, flags,
/// CR LF, Prepend and conjunct clusters, graphemes of 6 bytes and more), Metaspace's `▁`, and
/// the runs of spaces Replace and Strip see.
const UNIGRAM_FRAGMENTS: &[&str] = &[
    "ＡＢＣ１２３",
    "Ｈｅｌｌｏ",
    "！？",
    "ｶﾀｶﾅ",
    "ｶﾞ",
    "ﾞ",
    "ﬁ",
    "ﬂow",
    "ﬀ",
    "Ǆ",
    "①②⑳",
    "⑴",
    "x²³",
    "⁴",
    "₅",
    "™",
    "℡",
    "㍱",
    "¼",
    "Ⅻ",
    "¨",
    "´",
    "¸",
    "e\u{301}",
    "e\u{301}\u{302}",
    "Ａ\u{301}",
    "a\u{301}\u{302}\u{303}\u{304}\u{305}\u{306}\u{307}\u{308}\u{309}\u{30A}\u{30B}\u{30C}\u{30D}\u{30E}\u{30F}\u{310}\u{311}\u{312}\u{313}\u{314}",
    "\u{301}\u{301}",
    "\u{1100}\u{1161}\u{11A8}",
    "\u{1100}\u{1161}",
    "\u{3131}\u{314F}",
    "👨‍👩‍👧‍👦",
    "👩🏽‍💻",
    "🇫🇷🇩🇪",
    "🇫",
    "❤️",
    "\u{1}\u{7}\u{1B}",
    "\u{7F}",
    "\u{9F}",
    "\u{200B}",
    "\u{200D}",
    "\u{FEFF}",
    "\u{AD}",
    "\u{A0}",
    "\u{A0}\u{A0}",
    "\u{3000}",
    "\u{2002}\u{2009}",
    "\u{202F}",
    "\r\n",
    "\r",
    "\u{0600}a",
    "\u{0915}\u{094D}\u{0937}",
    "ำ",
    "ไทย",
    "Ελληνικά",
    "русский",
    "עברית",
    "العربية",
    "▁",
    "▁▁",
    " ▁x",
    "x▁",
    "  ",
    "   ",
    "      ",
    " \t ",
    "\u{A0} ",
    " \u{3000} ",
    "<mask>",
    " <mask>",
    "  <mask>  ",
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<mask",
];

/// Seeded texts for the Unigram folders: [`texts_with_fragments`] over [`UNIGRAM_FRAGMENTS`] and
/// [`BPE_FRAGMENTS`], plus texts that are all whitespace or end in it.
fn unigram_texts(generated: usize, seed: u64) -> Vec<String> {
    let fragments: Vec<&str> = UNIGRAM_FRAGMENTS
        .iter()
        .chain(BPE_FRAGMENTS)
        .copied()
        .collect();
    let mut texts = texts_with_fragments(generated, seed, &fragments);
    texts.extend(
        [
            "",
            " ",
            "   ",
            "\t\n",
            "\u{3000}\u{A0} \t",
            "trailing   ",
            "trailing\u{3000}",
            "   leading",
            "a  b   c    d",
            "<mask>",
            "<s>hello</s>",
            "x<mask>y",
            "▁▁▁",
        ]
        .map(str::to_owned),
    );
    texts
}

#[test]
fn unigram_folders_take_the_fast_path() {
    for name in UNIGRAM_FOLDERS {
        let tokenizer = load(&fixtures_dir().join(name), None);
        assert!(
            tokenizer.fallback_reason().is_none(),
            "{name} falls back: {:?}",
            tokenizer.fallback_reason()
        );
        // sentence-transformers' do_lower_case prepends a Lowercase the path does not take.
        let lowered = load(&fixtures_dir().join(name), Some(true));
        assert!(!lowered.is_fast());
    }
}

/// The ids sentence-transformers recorded for tiny-xlmr-spm's reference texts (Python
/// `tokenizers`), and their untruncated lengths, against the fast path.
#[test]
fn unigram_folder_matches_the_recorded_python_ids() {
    let value: Value = read_fixture("tiny_xlmr_spm_reference.json");
    let texts = value["texts"].as_array().unwrap();
    let model = &value["models"]["tiny-xlmr-spm"];
    let tokenizer = load(&fixtures_dir().join("tiny-xlmr-spm"), None);
    assert!(tokenizer.is_fast());
    let mut scratch = ember::tokenize::TokenizeScratch::default();
    let mut ids = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        let dropped = tokenizer
            .encode_into_counting_dropped(text, &mut ids, &mut scratch)
            .unwrap();
        let expected: Vec<u32> = serde_json::from_value(model["input_ids"][i].clone()).unwrap();
        assert_eq!(ids, expected, "{text:?}");
        if let Some(full) = model["num_tokens_untruncated"][i].as_u64() {
            assert_eq!(ids.len() + dropped, full as usize, "{text:?}");
        }
    }
    println!("tiny-xlmr-spm: {} recorded texts match", texts.len());
}

#[test]
fn unigram_folders_match_tokenizers_crate() {
    for (seed, name) in (40..).zip(UNIGRAM_FOLDERS) {
        let texts = unigram_texts(GENERATED_PER_FOLDER, seed);
        let tokenizer = load(&fixtures_dir().join(name), None);
        assert!(tokenizer.is_fast(), "{:?}", tokenizer.fallback_reason());
        assert_parity(&format!("{name} tokenizer.json"), &tokenizer, &texts);
        assert_dropped_parity(name, &tokenizer, &texts[..texts.len() / 5]);
    }
}

/// Long texts and runs, counted to the end.
#[test]
fn unigram_long_runs_match_tokenizers_crate() {
    let mut texts = Vec::new();
    for n in [10_000, 200_000] {
        texts.push(format!("a{}b c", " ".repeat(n)));
        texts.push(format!("a{}b", "\u{3000}".repeat(n / 2)));
        texts.push("ab".repeat(n / 2));
        texts.push("é".repeat(n / 2));
        texts.push("e\u{301}".repeat(n / 4));
        texts.push("\u{301}".repeat(n / 2));
        texts.push("ＡＢ".repeat(n / 4));
        texts.push("hello world ".repeat(n / 12));
    }
    for name in UNIGRAM_FOLDERS {
        let tokenizer = load(&fixtures_dir().join(name), None);
        assert!(tokenizer.is_fast());
        assert_parity(&format!("{name}, long runs"), &tokenizer, &texts);
        assert_dropped_parity(&format!("{name}, long runs"), &tokenizer, &texts);
    }
}

/// The older hub layout of xlm-roberta-base and paraphrase-multilingual-*: Precompiled alone,
/// then WhitespaceSplit and Metaspace.
fn hub_layout(t: &mut Value) {
    let precompiled = t["normalizer"]["normalizers"][0].clone();
    assert_eq!(precompiled["type"], "Precompiled");
    t["normalizer"] = precompiled;
    t["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"},
        {"type": "Metaspace", "replacement": "▁", "add_prefix_space": true,
         "prepend_scheme": "always"}]});
}

fn unigram_variants() -> Vec<Variant> {
    let (fast, falls_back) = (Variant::fast_40, Variant::falls_back_40);
    fn metaspace(t: &mut Value) -> &mut Value {
        &mut t["pre_tokenizer"]
    }
    fn without_replace(t: &mut Value) {
        let steps = t["normalizer"]["normalizers"].as_array_mut().unwrap();
        assert_eq!(steps.pop().unwrap()["type"], "Replace");
    }
    vec![
        fast(
            "hub layout: Precompiled, WhitespaceSplit + Metaspace",
            hub_layout,
        ),
        fast("hub layout, no normaliser", |t| {
            hub_layout(t);
            t["normalizer"] = Value::Null;
        }),
        fast("hub layout, prepend_scheme first", |t| {
            hub_layout(t);
            let m = &mut t["pre_tokenizer"]["pretokenizers"][1];
            m.as_object_mut().unwrap().remove("add_prefix_space");
            m["prepend_scheme"] = json!("first");
        }),
        fast("hub layout, add_prefix_space false", |t| {
            hub_layout(t);
            let m = &mut t["pre_tokenizer"]["pretokenizers"][1];
            m["add_prefix_space"] = json!(false);
            m["prepend_scheme"] = json!("never");
        }),
        fast("no normaliser", |t| t["normalizer"] = Value::Null),
        fast("Precompiled alone, Metaspace alone", |t| {
            t["normalizer"] = t["normalizer"]["normalizers"][0].clone()
        }),
        // `first` stays fast after Precompiled and Strip of the right only: the converter's
        // Replace comes out here, and `first` after it falls back (below).
        fast("prepend_scheme first, Precompiled + Strip", |t| {
            without_replace(t);
            metaspace(t)["prepend_scheme"] = json!("first")
        }),
        fast("prepend_scheme never", |t| {
            metaspace(t)["prepend_scheme"] = json!("never")
        }),
        fast("split false", |t| metaspace(t)["split"] = json!(false)),
        fast(
            "split false, prepend_scheme first, Precompiled + Strip",
            |t| {
                without_replace(t);
                metaspace(t)["split"] = json!(false);
                metaspace(t)["prepend_scheme"] = json!("first");
            },
        ),
        fast("replacement '_'", |t| {
            metaspace(t)["replacement"] = json!("_");
            t["normalizer"]["normalizers"][2]["content"] = json!("_");
        }),
        fast("Strip both sides, Replace \" +\" and a literal", |t| {
            let n = t["normalizer"]["normalizers"].as_array_mut().unwrap();
            n[1]["strip_left"] = json!(true);
            n[2]["pattern"] = json!({"Regex": " +"});
            n.push(json!({"type": "Replace", "pattern": {"String": "ab"}, "content": "X Y"}));
        }),
        fast("Replace \" {3,}\" before Precompiled", |t| {
            let n = t["normalizer"]["normalizers"].as_array_mut().unwrap();
            let mut replace = n.pop().unwrap();
            replace["pattern"] = json!({"Regex": " {3,}"});
            n.insert(0, replace);
        }),
        fast("added tokens rstrip, single_word, normalized", |t| {
            added_token_mut(t, "<mask>")["rstrip"] = json!(true);
            added_token_mut(t, "</s>")["single_word"] = json!(true);
            added_token_mut(t, "<s>")["normalized"] = json!(true);
            added_token_mut(t, "<pad>")["lstrip"] = json!(true);
            added_token_mut(t, "<pad>")["rstrip"] = json!(true);
            let tokens = t["added_tokens"].as_array_mut().unwrap();
            tokens.push(
                json!({"id": 2002, "content": "Hello World", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": true, "special": false}),
            );
            tokens.push(
                json!({"id": 2003, "content": "ＡＢＣ", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": true, "special": false}),
            );
        }),
        fast("unk_id 0, pieces repeated", |t| {
            t["model"]["unk_id"] = json!(0);
            let vocab = t["model"]["vocab"].as_array_mut().unwrap();
            let again: Vec<Value> = vocab[4..20].to_vec();
            vocab.extend(again);
        }),
        fast("RobertaProcessing", |t| {
            t["post_processor"] = json!({"type": "RobertaProcessing", "sep": ["</s>", 2],
                "cls": ["<s>", 0], "trim_offsets": true, "add_prefix_space": true})
        }),
        fast("no post-processor", |t| t["post_processor"] = Value::Null),
        Variant {
            max_seq_length: 2,
            ..fast("max_seq_length 2", |_| {})
        },
        Variant {
            max_seq_length: 3,
            ..fast("max_seq_length 3", |_| {})
        },
        Variant {
            max_seq_length: 512,
            ..fast("max_seq_length 512", |_| {})
        },
        falls_back("byte_fallback", |t| {
            t["model"]["byte_fallback"] = json!(true)
        }),
        falls_back("no unk_id", |t| t["model"]["unk_id"] = Value::Null),
        falls_back("Replace regex \"\\s+\"", |t| {
            t["normalizer"]["normalizers"][2]["pattern"] = json!({"Regex": "\\s+"})
        }),
        falls_back("NFKC normaliser", |t| {
            t["normalizer"] = json!({"type": "NFKC"})
        }),
        falls_back("Lowercase in the sequence", |t| {
            t["normalizer"]["normalizers"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "Lowercase"}))
        }),
        falls_back("Whitespace pre-tokeniser", |t| {
            t["pre_tokenizer"] = json!({"type": "Whitespace"})
        }),
        // The crate aligns what a Replace inserts to the last char it replaced: "ab" → "X Y"
        // on "abc d" gets no "▁" under `first`; nor does "  hello" with " {2,}" → "".
        falls_back("prepend_scheme first after the converter's Replace", |t| {
            metaspace(t)["prepend_scheme"] = json!("first");
        }),
        falls_back("prepend_scheme first after a literal Replace", |t| {
            t["normalizer"] =
                json!({"type": "Replace", "pattern": {"String": "ab"}, "content": "X Y"});
            metaspace(t)["prepend_scheme"] = json!("first");
        }),
        falls_back("prepend_scheme first after Strip left", |t| {
            t["normalizer"]["normalizers"][1]["strip_left"] = json!(true);
            metaspace(t)["prepend_scheme"] = json!("first");
        }),
        falls_back("Metaspace before WhitespaceSplit", |t| {
            let metaspace = t["pre_tokenizer"].clone();
            t["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
                metaspace, {"type": "WhitespaceSplit"}]});
        }),
        Variant {
            do_lower_case: true,
            ..falls_back("do_lower_case prepends Lowercase", |_| {})
        },
    ]
}

#[test]
fn unigram_pipeline_variants_match_or_fall_back() {
    let texts = unigram_texts(GENERATED_PER_VARIANT, 50);
    let original = fixtures_dir().join("tiny-xlmr-spm/tokenizer.json");
    check_variants(&original, unigram_variants(), &texts, 514, true);
}

/// A corrupt charsmap never panics: one the crate would read out of bounds (it panics on the
/// texts that reach there) is refused at load with an error naming `tokenizer.json`; random byte
/// flips of tiny-xlmr-spm's either load, and then give the crate's ids, or are refused so. (The
/// crate's own loader panics on replacements that are not UTF-8; that panic is caught and
/// reported as the error, but its message still prints.)
#[test]
fn corrupt_charsmaps_never_panic() {
    let original: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("tiny-xlmr-spm/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let blob = base64_decode(
        original["normalizer"]["normalizers"][0]["precompiled_charsmap"]
            .as_str()
            .unwrap(),
    );
    // The root's children far past the array.
    let mut bytes = blob.clone();
    bytes[4..8].copy_from_slice(&(0x3F_FFFFu32 << 10).to_le_bytes());
    let mut t = original.clone();
    t["normalizer"]["normalizers"][0]["precompiled_charsmap"] = json!(base64_encode(&bytes));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), t.to_string()).unwrap();
    let error = TextTokenizer::load(dir.path(), Some(40), false, 514)
        .err()
        .expect("a charsmap whose children lie past the array is refused");
    assert!(error.to_string().contains("tokenizer.json"), "{error}");
    println!("root past the array: {error}");

    let texts: Vec<String> = UNIGRAM_FRAGMENTS.iter().map(|t| t.to_string()).collect();
    let mut state = 0x00c0_ffeeu64;
    let (mut fast, mut fallback, mut refused) = (0, 0, 0);
    for round in 0..60 {
        let mut bytes = blob.clone();
        for _ in 0..1 + round % 8 {
            state = ember_reference_tests::seeded::mix(state);
            // Mostly the double array (and its size), sometimes the replacements.
            let at = if round % 4 == 0 {
                (state % bytes.len() as u64) as usize
            } else {
                (state % (bytes.len() as u64).min(4096)) as usize
            };
            bytes[at] = (state >> 40) as u8;
        }
        let mut t = original.clone();
        t["normalizer"]["normalizers"][0]["precompiled_charsmap"] = json!(base64_encode(&bytes));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), t.to_string()).unwrap();
        match TextTokenizer::load(dir.path(), Some(40), false, 514) {
            Ok(tokenizer) if tokenizer.is_fast() => {
                fast += 1;
                assert_parity("corrupt charsmap", &tokenizer, &texts);
            }
            Ok(_) => fallback += 1,
            Err(e) => {
                assert!(e.to_string().contains("tokenizer.json"), "{e}");
                refused += 1;
            }
        }
    }
    println!("corrupt charsmaps: {fast} fast, {fallback} fall back, {refused} refused");

    // A 16-byte charsmap whose header claims a 4 GiB double array: refused before the crate
    // reserves `size / 4` units for it (8 GiB), and one shorter than its header.
    for (bytes, what) in [
        (
            [&0xFFFF_FFF0u32.to_le_bytes()[..], &[0; 12]].concat(),
            "claims",
        ),
        (vec![1, 2, 3], "shorter than its 4-byte header"),
    ] {
        let mut t = original.clone();
        t["normalizer"]["normalizers"][0]["precompiled_charsmap"] = json!(base64_encode(&bytes));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), t.to_string()).unwrap();
        let error = TextTokenizer::load(dir.path(), Some(40), false, 514)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("tokenizer.json") && error.contains(what),
            "{error}"
        );
    }
}

/// Standard base64 (with padding), as `tokenizer.json` holds the charsmap.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend(&bytes[1..chunk.len()]);
    }
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut bits = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            bits |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Unigram fast path against the crate on the corpus, per folder: prints µs/text and the
/// ratio.
#[test]
#[ignore = "timing: run with --ignored --nocapture"]
fn unigram_tokenizer_speed() {
    print_speed_against_the_crate("Unigram", UNIGRAM_FOLDERS);
}
