//! The caller's options over long texts and the model's head: `max_seq_length`, `normalize`
//! and [`Truncation`] on the builder, per-text reports of dropped tokens, and [`ModelInfo`].
//!
//! Dropped-token counts are checked against the `tokenizers` crate's untruncated encoding
//! (`TextTokenizer::reference_untruncated_len`), on the fast WordPiece path (all-MiniLM-L6-v2
//! with `max_seq_length` 16, so that many texts are cut) and on the crate's path (a tiny-bert
//! copy the fast path refuses). A 10 MB text is counted in well under the time bound below.

use std::path::Path;
use std::time::Instant;

use ember::tokenize::TextTokenizer;
use ember::{Embedder, EmberError, ModelFolder, TextReport, Truncation};
use ember_reference_tests::mixed_text::MixedText;
use ember_reference_tests::*;
use serde_json::{json, Value};

/// The tokenizer `Embedder` builds for `dir` with `max_seq_length`.
fn tokenizer(dir: &Path, max_seq_length: usize) -> TextTokenizer {
    let folder = ModelFolder::open(dir).unwrap();
    TextTokenizer::load(
        &folder.transformer_dir,
        Some(max_seq_length),
        folder.do_lower_case,
        max_seq_length,
    )
    .unwrap()
}

/// Corpus lines, fixture texts and `generated` seeded hostile texts.
fn texts(generated: usize) -> Vec<String> {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/corpus/wordnet-examples.txt");
    let mut texts: Vec<String> = std::fs::read_to_string(corpus)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    texts.extend(read_fixture::<Vec<String>>("texts.json"));
    let words: Vec<String> = std::fs::read_to_string(fixtures_dir().join("tiny-bert/vocab.txt"))
        .unwrap()
        .lines()
        .map(|w| w.trim_start_matches("##").to_owned())
        .collect();
    let mut generator = MixedText::new(7, words);
    texts.extend((0..generated).map(|_| generator.text()));
    texts
}

/// Every report against the crate: `tokens` is the truncated encoding's length, and
/// `tokens + dropped_tokens` the untruncated one. Returns how many texts were cut.
fn assert_reports_match_the_crate(
    what: &str,
    embedder: &Embedder,
    reference: &TextTokenizer,
    texts: &[String],
) -> usize {
    let (with_report, reports) = embedder.encode_with_report(texts).unwrap();
    assert_eq!(
        with_report,
        embedder.encode(texts).unwrap(),
        "{what}: reporting changed the embeddings"
    );
    let mut ids = Vec::new();
    let mut truncated = 0;
    for (i, (text, report)) in texts.iter().zip(&reports).enumerate() {
        reference.reference_encode_into(text, &mut ids).unwrap();
        let full = reference.reference_untruncated_len(text).unwrap();
        let expected = TextReport {
            tokens: ids.len(),
            dropped_tokens: full - ids.len(),
        };
        assert_eq!(*report, expected, "{what}: text {i} {text:?}");
        truncated += usize::from(report.dropped_tokens > 0);
    }
    truncated
}

#[test]
fn dropped_counts_match_the_tokenizers_crate_on_the_fast_path() {
    let dir = minilm_dir();
    let embedder = Embedder::builder()
        .threads(2)
        .max_seq_length(16)
        .load_dir(&dir)
        .unwrap();
    assert_eq!(embedder.max_seq_length(), 16);
    let reference = tokenizer(&dir, 16);
    assert!(reference.is_fast());
    let texts = texts(3_000);
    let truncated = assert_reports_match_the_crate("MiniLM", &embedder, &reference, &texts);
    println!(
        "MiniLM, max_seq_length 16: {} texts, {truncated} cut",
        texts.len()
    );
    assert!(
        truncated > texts.len() / 2,
        "only {truncated} texts were cut"
    );
}

#[test]
fn dropped_counts_match_the_tokenizers_crate_on_the_fallback_path() {
    // A `single_word` added token: the fast path refuses the folder (tokenizer_parity.rs).
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
    let reference = tokenizer(dir.path(), 12);
    assert!(!reference.is_fast());
    let embedder = Embedder::builder()
        .threads(2)
        .max_seq_length(12)
        .load_dir(dir.path())
        .unwrap();
    let texts = texts(1_000);
    let truncated = assert_reports_match_the_crate("fallback", &embedder, &reference, &texts);
    assert!(
        truncated > texts.len() / 2,
        "only {truncated} texts were cut"
    );
}

/// A 10 MB text costs time linear in its size, and its dropped count is exact: the text
/// repeats one sentence, whose pieces never merge across repetitions, so its untruncated
/// length is `2 + repeats · pieces(sentence)`. A 1 MB prefix is also checked against the
/// crate itself.
#[test]
fn a_ten_megabyte_text_is_truncated_and_counted_in_linear_time() {
    let dir = minilm_dir();
    let embedder = Embedder::builder().threads(2).load_dir(&dir).unwrap();
    let msl = embedder.max_seq_length();
    let reference = tokenizer(&dir, msl);
    let sentence = "The naïve café-owner said: \"Ångström units, 3.5 of them!\" ";
    let pieces = reference.reference_untruncated_len(sentence).unwrap() - 2;
    let repeats = 10 * 1024 * 1024 / sentence.len();
    let huge = sentence.repeat(repeats);

    let start = Instant::now();
    let plain = embedder.encode(&[huge.as_str()]).unwrap();
    let plain_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (reported, reports) = embedder.encode_with_report(&[huge.as_str()]).unwrap();
    let report_s = start.elapsed().as_secs_f64();
    println!(
        "{:.1} MB, {} tokens: encode {plain_s:.3} s, encode_with_report {report_s:.3} s",
        huge.len() as f64 / 1e6,
        2 + repeats * pieces
    );
    assert_eq!(plain, reported);
    assert_eq!(
        reports[0],
        TextReport {
            tokens: msl,
            dropped_tokens: 2 + repeats * pieces - msl,
        }
    );
    // About 0.1 s and 0.5 s here in release; a quadratic step would take minutes.
    assert!(plain_s < 3.0 && report_s < 5.0, "{plain_s} s, {report_s} s");

    let prefix = sentence.repeat(1024 * 1024 / sentence.len());
    let (_, reports) = embedder.encode_with_report(&[prefix.as_str()]).unwrap();
    let full = reference.reference_untruncated_len(&prefix).unwrap();
    assert_eq!(reports[0].tokens + reports[0].dropped_tokens, full);
}

#[test]
fn error_policy_names_the_text_and_its_length() {
    let tiny = fixtures_dir().join("tiny-bert");
    let strict = Embedder::builder()
        .threads(1)
        .truncation(Truncation::Error)
        .load_dir(&tiny)
        .unwrap();
    assert_eq!(strict.truncation(), Truncation::Error);
    let lenient = Embedder::builder().threads(1).load_dir(&tiny).unwrap();
    let fitting = ["a cat", "the word", &"word ".repeat(38)];
    assert_eq!(
        strict.encode(&fitting).unwrap(),
        lenient.encode(&fitting).unwrap()
    );

    let too_long = "word ".repeat(39); // [CLS] + 39 + [SEP] = 41 > 40
    let texts = ["a cat", too_long.as_str(), "fine"];
    let error = strict.encode(&texts).unwrap_err();
    assert!(
        matches!(
            error,
            EmberError::TooLong {
                index: 1,
                tokens: 41,
                max_seq_length: 40
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("text 1") && message.contains("41 tokens"),
        "{message}"
    );
    // The embedder stays usable after the refused call.
    assert_eq!(
        strict.encode(&fitting).unwrap(),
        lenient.encode(&fitting).unwrap()
    );

    // 300 texts on 2 threads are tokenized in shares of 64, in parallel: the failure reported
    // is still the first in input order (text 150, in the third share), not the later one
    // (text 290, in the last share), nor whichever share ended first.
    let strict_on_two = Embedder::builder()
        .threads(2)
        .truncation(Truncation::Error)
        .load_dir(&tiny)
        .unwrap();
    let mut many = vec!["a cat"; 300];
    many[290] = too_long.as_str();
    many[150] = too_long.as_str();
    for _ in 0..3 {
        let error = strict_on_two.encode(&many).unwrap_err();
        assert!(
            matches!(error, EmberError::TooLong { index: 150, .. }),
            "{error:?}"
        );
    }
    many[150] = "fine";
    let error = strict_on_two.encode(&many).unwrap_err();
    assert!(
        matches!(error, EmberError::TooLong { index: 290, .. }),
        "{error:?}"
    );
}

#[test]
fn max_seq_length_can_be_lowered_or_raised_to_the_position_limit() {
    let tiny = fixtures_dir().join("tiny-bert");
    let long = "word ".repeat(100);
    for (msl, expected) in [(8, 8), (40, 40), (64, 64)] {
        let embedder = Embedder::builder()
            .threads(1)
            .max_seq_length(msl)
            .load_dir(&tiny)
            .unwrap();
        assert_eq!(embedder.info().max_seq_length, expected);
        let (rows, reports) = embedder.encode_with_report(&[long.as_str()]).unwrap();
        assert!(rows.row(0).iter().all(|x| x.is_finite()));
        assert_eq!(
            reports[0],
            TextReport {
                tokens: expected,
                dropped_tokens: 102 - expected
            }
        );
    }
    let error = Embedder::builder()
        .threads(1)
        .max_seq_length(65)
        .load_dir(&tiny)
        .err()
        .expect("65 > max_position_embeddings 64 must be refused");
    let message = error.to_string();
    assert!(
        message.contains("max_seq_length 65") && message.contains("max_position_embeddings 64"),
        "{message}"
    );
    let error = Embedder::builder()
        .threads(1)
        .max_seq_length(1)
        .load_dir(&tiny)
        .err()
        .expect("no room for [CLS] and [SEP]");
    assert!(error.to_string().contains("[CLS]"), "{error}");
}

fn norm(row: &[f32]) -> f64 {
    row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// `normalize(true)` on a folder without Normalize gives unit rows, `normalize(false)` on one
/// with it (all-MiniLM-L6-v2) gives the raw pooled rows; each is the other's rows scaled.
#[test]
fn normalize_overrides_the_folder() {
    let texts = ["A cat sits on the mat.", "Stock markets fell.", "x"];
    for (dir, folder_normalizes) in [
        (fixtures_dir().join("tiny-bert"), false),
        (minilm_dir(), true),
    ] {
        let load = |normalize: Option<bool>| {
            let builder = Embedder::builder().threads(2);
            match normalize {
                Some(n) => builder.normalize(n),
                None => builder,
            }
            .load_dir(&dir)
            .unwrap()
        };
        assert_eq!(load(None).normalizes(), folder_normalizes);
        let unit = load(Some(true)).encode(&texts).unwrap();
        let raw = load(Some(false)).encode(&texts).unwrap();
        assert_eq!(
            &load(None).encode(&texts).unwrap(),
            if folder_normalizes { &unit } else { &raw }
        );
        for (u, r) in unit.rows().zip(raw.rows()) {
            assert!((norm(u) - 1.0).abs() < 1e-5, "{}", norm(u));
            assert!((norm(r) - 1.0).abs() > 1e-2, "raw norm {}", norm(r));
            let scale = norm(r);
            for (&a, &b) in u.iter().zip(r) {
                assert!((a as f64 - b as f64 / scale).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn info_describes_the_model() {
    let tiny = Embedder::builder()
        .threads(1)
        .load_dir(&fixtures_dir().join("tiny-bert"))
        .unwrap()
        .info();
    assert_eq!(
        (
            tiny.dim,
            tiny.hidden_size,
            tiny.max_seq_length,
            tiny.max_position_embeddings
        ),
        (52, 52, 40, 64)
    );
    assert_eq!(tiny.pooling, ["mean"]);
    assert!(!tiny.normalize && tiny.fast_tokenizer);
    assert_eq!(tiny.dtype, ember::Precision::F32);
    assert_eq!(tiny.attention_heads, 4);

    let minilm = Embedder::builder()
        .threads(1)
        .dtype(ember::Precision::Bf16)
        .load_dir(&minilm_dir())
        .unwrap()
        .info();
    assert_eq!(
        (
            minilm.dim,
            minilm.max_seq_length,
            minilm.layers,
            minilm.vocab_size
        ),
        (384, 256, 6, 30522)
    );
    assert_eq!(minilm.pooling, ["mean"]);
    assert!(minilm.normalize);
    assert_eq!(minilm.dtype, ember::Precision::Bf16);
    assert_eq!(minilm.truncation, Truncation::Truncate);
    assert!(minilm.weights_file.ends_with("model.safetensors"));
}
