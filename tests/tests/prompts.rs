//! sentence-transformers' `config_sentence_transformers.json`: its `truncate_dim`, and its
//! prompts: tests/fixtures/
//! tiny-bert-prompts is tiny-bert with prompts `query` ("query: ", the default), `passage`
//! and `empty`, against `SentenceTransformer.encode` with no prompt named (the default
//! applies), `prompt_name=`, `prompt=` and `prompt=""` (which turns the default off), on the
//! 34 texts of the other family references (a prompt's tokens count against
//! `max_seq_length`, so some texts are cut only with one).

use ember::{Embedder, Prompt};
use ember_reference_tests::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    folder: String,
    texts: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    call: String,
    prompt_name: Option<String>,
    prompt: Option<String>,
    /// The prompt sentence-transformers put before each text.
    resolved_prompt: String,
    input_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

impl Case {
    /// The call as Ember spells it: `prompt=` wins over `prompt_name=`, as in
    /// sentence-transformers; neither is the default.
    fn prompt(&self) -> Prompt<'_> {
        st_prompt(self.prompt.as_deref(), self.prompt_name.as_deref())
    }
}

fn reference() -> Reference {
    let reference: Reference = read_fixture("tiny_prompts_reference.json");
    assert_eq!(reference.cases.len(), 5);
    reference
}

fn load(folder: &str, prompt: Prompt<'_>) -> Embedder {
    Embedder::builder()
        .threads(2)
        .default_prompt(prompt)
        .load_dir(&fixtures_dir().join(folder))
        .unwrap()
}

#[test]
fn every_prompt_call_matches_sentence_transformers() {
    let reference = reference();
    let embedder = load(&reference.folder, Prompt::Default);
    assert_eq!(embedder.default_prompt(), Some("query: "));
    for case in &reference.cases {
        // The ids the model saw: the prompt and the text, tokenized as one string.
        for (i, text) in reference.texts.iter().enumerate() {
            let ids = embedder
                .tokenize(&format!("{}{text}", case.resolved_prompt))
                .unwrap();
            assert_eq!(ids, case.input_ids[i], "{}: text {i}", case.call);
        }
        let embeddings = embedder
            .encode_with_prompt(case.prompt(), &reference.texts)
            .unwrap();
        let rows: Vec<&[f32]> = embeddings.rows().collect();
        assert_f32_bounds(&case.call, agreement(&rows, &case.embeddings));
        // The same prompt as the builder's default gives the same rows, bit for bit.
        let defaulted = load(&reference.folder, case.prompt()).encode(&reference.texts);
        assert_eq!(defaulted.unwrap(), embeddings, "{}", case.call);
    }
}

#[test]
fn encode_query_and_encode_document_pick_sentence_transformers_prompts() {
    let reference = reference();
    let embedder = load(&reference.folder, Prompt::Default);
    let texts = &reference.texts;
    // encode_query: the `query` prompt; encode_document: `document`, which every model has
    // (empty here), not `passage`.
    assert_eq!(
        embedder.encode_query(texts).unwrap(),
        embedder.encode(texts).unwrap()
    );
    let no_prompt = embedder
        .encode_with_prompt(Prompt::Text(""), texts)
        .unwrap();
    assert_eq!(embedder.encode_document(texts).unwrap(), no_prompt);
    assert_eq!(
        embedder.encode_with_prompt(Prompt::None, texts).unwrap(),
        no_prompt
    );
    // Without config_sentence_transformers.json: no default, and the rows of `prompt=""`.
    let plain = load("tiny-bert", Prompt::Default);
    assert_eq!(plain.default_prompt(), None);
    assert_eq!(plain.encode(texts).unwrap(), no_prompt);
}

#[test]
fn an_unknown_prompt_name_is_an_error_naming_the_prompts() {
    let reference = reference();
    let embedder = load(&reference.folder, Prompt::Default);
    let err = embedder
        .encode_with_prompt(Prompt::Named("no-such-prompt"), &["a"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-prompt") && err.contains("document, empty, passage, query"),
        "{err}"
    );
    let Err(err) = Embedder::builder()
        .default_prompt(Prompt::Named("no-such-prompt"))
        .load_dir(&fixtures_dir().join(&reference.folder))
    else {
        panic!("loaded with an unknown default prompt");
    };
    assert!(err.to_string().contains("no-such-prompt"), "{err}");
}

#[test]
fn truncate_dim_keeps_the_first_values_after_every_module() {
    // sentence-transformers slices each embedding after the last module (Normalize included):
    // the first n values of the full row, bit for bit.
    let texts = ["a cat sits on the mat", "", "query: dogs"];
    let full = load("tiny-bert-dense", Prompt::Default)
        .encode(&texts)
        .unwrap();
    let cut = Embedder::builder()
        .threads(2)
        .truncate_dim(7)
        .load_dir(&fixtures_dir().join("tiny-bert-dense"))
        .unwrap();
    assert_eq!(cut.dim(), 7);
    let rows = cut.encode(&texts).unwrap();
    for (i, row) in rows.rows().enumerate() {
        assert_eq!(row, &full.row(i)[..7], "text {i}");
    }
    // From the folder's config_sentence_transformers.json; a builder value wins; at or over
    // the width keeps everything.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert-dense"), dir.path());
    std::fs::write(
        dir.path().join("config_sentence_transformers.json"),
        r#"{"truncate_dim": 5, "prompts": {}}"#,
    )
    .unwrap();
    let from_file = Embedder::builder().threads(2).load_dir(dir.path()).unwrap();
    assert_eq!(from_file.encode(&texts).unwrap().row(0), &full.row(0)[..5]);
    let wide = Embedder::builder()
        .threads(2)
        .truncate_dim(10_000)
        .load_dir(dir.path())
        .unwrap();
    assert_eq!(wide.encode(&texts).unwrap(), full);
    std::fs::write(
        dir.path().join("config_sentence_transformers.json"),
        r#"{"truncate_dim": 0}"#,
    )
    .unwrap();
    let Err(err) = Embedder::builder().load_dir(dir.path()) else {
        panic!("truncate_dim 0 loaded");
    };
    assert!(err.to_string().contains("truncate_dim"), "{err}");

    // An explicit normalize(true) gives unit rows after the cut, as sentence-transformers'
    // encode(normalize_embeddings=True, truncate_dim=7) normalises after truncating; the
    // folder's own Normalize module (tiny-bert-dense has one) leaves the cut rows shorter.
    let unit = Embedder::builder()
        .threads(2)
        .truncate_dim(7)
        .normalize(true)
        .load_dir(&fixtures_dir().join("tiny-bert-dense"))
        .unwrap();
    let norm = |row: &[f32]| row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    for (i, (row, cut_row)) in unit
        .encode(&texts)
        .unwrap()
        .rows()
        .zip(rows.rows())
        .enumerate()
    {
        if norm(cut_row) == 0.0 {
            continue;
        }
        assert!(
            (norm(row) - 1.0).abs() < 1e-6,
            "text {i}: norm {}",
            norm(row)
        );
        assert!(
            norm(cut_row) < 0.999,
            "text {i}: the folder's rows were unit after the cut"
        );
        let scale = norm(cut_row) as f32;
        for (a, b) in row.iter().zip(cut_row) {
            assert!(
                (a * scale - b).abs() < 1e-6,
                "text {i}: not the same direction"
            );
        }
    }
}

/// tests/fixtures/tiny_exclude_prompt_reference.json: tiny-bert-prompts with all six pooling
/// modes and `include_prompt: false`, so each text's pooling leaves out the prompt's tokens as
/// sentence-transformers counts them (the prompt tokenized alone, less its trailing `[SEP]`).
#[derive(Deserialize)]
struct ExcludeReference {
    folder: String,
    pooling_config: serde_json::Value,
    texts: Vec<String>,
    cases: Vec<ExcludeCase>,
}

#[derive(Deserialize)]
struct ExcludeCase {
    call: String,
    prompt_name: Option<String>,
    prompt: Option<String>,
    prompt_length: Option<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn exclude_prompt_folder(reference: &ExcludeReference) -> tempfile::TempDir {
    copy_with_pooling(&reference.folder, &reference.pooling_config)
}

#[test]
fn include_prompt_false_leaves_the_prompt_out_as_sentence_transformers() {
    let reference: ExcludeReference = read_fixture("tiny_exclude_prompt_reference.json");
    assert_eq!(reference.cases.len(), 5);
    let dir = exclude_prompt_folder(&reference);
    let embedder = Embedder::builder().threads(2).load_dir(dir.path()).unwrap();
    assert!(!embedder.pooling().include_prompt);
    assert_eq!(embedder.pooling().modes.len(), 6);
    let with_prompt = load(&reference.folder, Prompt::Default);
    for case in &reference.cases {
        let prompt = st_prompt(case.prompt.as_deref(), case.prompt_name.as_deref());
        let embeddings = embedder
            .encode_with_prompt(prompt, &reference.texts)
            .unwrap();
        let rows: Vec<&[f32]> = embeddings.rows().collect();
        assert_f32_bounds(&case.call, agreement(&rows, &case.embeddings));
        // The mean block (third of six) is not the include_prompt-true mean of the same call,
        // unless there is no prompt to leave out.
        let h = embedder.info().hidden_size;
        let kept = with_prompt
            .encode_with_prompt(prompt, &reference.texts)
            .unwrap();
        let same_mean =
            (0..reference.texts.len()).all(|i| embeddings.row(i)[2 * h..3 * h] == kept.row(i)[..]);
        assert_eq!(same_mean, case.prompt_length.is_none(), "{}", case.call);
        // One text at a time gives the same rows.
        for (i, text) in reference.texts.iter().enumerate().step_by(7) {
            let alone = embedder.encode_with_prompt(prompt, &[text]).unwrap();
            assert_eq!(alone.row(0), embeddings.row(i), "{}: text {i}", case.call);
        }
    }
}

/// With no special tokens (tokenizer.json without a post-processor, taken as it is:
/// `PreTrainedTokenizerFast`), `"query: "` is the whole prompt length, so `""` prefixed by it
/// keeps no token of its own: sentence-transformers gives its first token under cls and zeros
/// under the means and lasttoken (the fixture's `no_special_tokens`), and under max (`-inf`
/// there) Ember refuses the text, naming it.
#[test]
fn include_prompt_false_with_nothing_left_follows_sentence_transformers_or_refuses() {
    #[derive(Deserialize)]
    struct NothingLeft {
        edits: serde_json::Map<String, serde_json::Value>,
        pooling_config: serde_json::Value,
        prompt: String,
        prompt_length: usize,
        texts: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    }
    #[derive(Deserialize)]
    struct Fixture {
        folder: String,
        no_special_tokens: NothingLeft,
    }
    let fixture: Fixture = read_fixture("tiny_exclude_prompt_reference.json");
    let case = &fixture.no_special_tokens;
    let dir = copy_with_pooling(&fixture.folder, &case.pooling_config);
    apply_edits(dir.path(), &case.edits, None);
    let embedder = Embedder::builder().threads(1).load_dir(dir.path()).unwrap();
    assert_eq!(
        embedder.tokenize(&case.prompt).unwrap().len(),
        case.prompt_length
    );
    let rows = embedder
        .encode_with_prompt(Prompt::Text(&case.prompt), &case.texts)
        .unwrap();
    let ours: Vec<&[f32]> = rows.rows().collect();
    assert_f32_bounds("no special tokens", agreement(&ours, &case.embeddings));
    assert!(rows.row(0)[52..].iter().all(|&x| x == 0.0));
    // Under max, the text with nothing of its own is refused, naming it.
    let mut modes = case.pooling_config.clone();
    modes["pooling_mode"] = serde_json::json!(["mean", "max"]);
    std::fs::write(dir.path().join("1_Pooling/config.json"), modes.to_string()).unwrap();
    let embedder = Embedder::builder().threads(1).load_dir(dir.path()).unwrap();
    let err = embedder
        .encode_with_prompt(Prompt::Text(&case.prompt), &["a cat", "", "dogs"])
        .unwrap_err();
    assert!(
        err.to_string().starts_with("text 1") && err.to_string().contains("max pooling"),
        "{err}"
    );
}
