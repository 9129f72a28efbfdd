//! The `ember` binary end to end, on the committed tiny BERT fixture (H = 52).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-bert")
}

fn ember(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or(b"").to_vec();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// `ember search --model MODEL --corpus CORPUS --query QUERY --top-k K`, then `extra`.
fn search(model: &Path, corpus: &Path, query: &str, top_k: usize, extra: &[&str]) -> Output {
    let top_k = top_k.to_string();
    let mut args = vec![
        "search",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--query",
        query,
        "--top-k",
        &top_k,
    ];
    args.extend_from_slice(extra);
    ember(&args, None)
}

/// The JSON objects of a run's standard output, one a line.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts the run succeeded, showing its stderr if not.
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json_rows(output: &Output) -> Vec<Vec<f32>> {
    assert_success(output);
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "header is padded to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

#[test]
fn positional_texts_give_json_lines_in_input_order() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let ab = json_rows(&ember(
        &[
            "embed",
            "--model",
            m,
            "first text",
            "a second, longer text here",
        ],
        None,
    ));
    let ba = json_rows(&ember(
        &[
            "embed",
            "--model",
            m,
            "a second, longer text here",
            "first text",
        ],
        None,
    ));
    assert_eq!(ab.len(), 2);
    assert!(ab.iter().all(|r| r.len() == 52));
    assert_eq!(ab[0], ba[1]);
    assert_eq!(ab[1], ba[0]);
    assert_ne!(ab[0], ab[1]);
}

#[test]
fn lines_from_stdin_and_file_and_npy_output_agree() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let input = b"hello world\n\nwith a \0 NUL byte\nlast line without newline";
    let from_stdin = json_rows(&ember(&["embed", "--model", m], Some(input)));
    assert_eq!(from_stdin.len(), 4, "the empty line is a text");

    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.txt");
    std::fs::write(&input_path, input).unwrap();
    let npy = dir.path().join("out.npy");
    let out = ember(
        &[
            "embed",
            "--model",
            m,
            "--input",
            input_path.to_str().unwrap(),
            "--output",
            npy.to_str().unwrap(),
            "--threads",
            "1",
            "--batch-size",
            "3",
        ],
        None,
    );
    assert_success(&out);
    let (shape, data) = read_npy(&npy);
    assert_eq!(shape, [4, 52]);
    let flat: Vec<f32> = from_stdin.concat();
    assert_eq!(data, flat, "npy and JSON lines carry the same f32 values");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
}

#[test]
fn jsonl_input_reads_the_text_field() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let jsonl = b"{\"text\": \"hello world\", \"id\": 1}\n{\"text\": \"\"}\n";
    let rows = json_rows(&ember(
        &["embed", "--model", m, "--input-format", "jsonl"],
        Some(jsonl),
    ));
    let plain = json_rows(&ember(&["embed", "--model", m, "hello world", ""], None));
    assert_eq!(rows, plain);
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_text() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let plain = json_rows(&ember(&["embed", "--model", m], Some(b"a cat\nb\n")));
    let marked = json_rows(&ember(
        &["embed", "--model", m],
        Some(b"\xef\xbb\xbfa cat\nb\n"),
    ));
    assert_eq!(marked, plain);
    let jsonl = json_rows(&ember(
        &["embed", "--model", m, "--input-format", "jsonl"],
        Some(b"\xef\xbb\xbf{\"text\": \"a cat\"}\n{\"text\": \"b\"}\n"),
    ));
    assert_eq!(jsonl, plain);
}

#[test]
fn output_dash_is_standard_output() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let to_dash = run(&["embed", "--model", m, "--output", "-", "a cat"]);
    assert_success(&to_dash);
    assert_eq!(
        to_dash.stdout,
        run(&["embed", "--model", m, "a cat"]).stdout
    );
    assert!(!dir.path().join("-").exists(), "a file named - was written");
}

#[test]
fn empty_input_gives_zero_rows() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    assert!(json_rows(&ember(&["embed", "--model", m], Some(b""))).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("empty.npy");
    let out = ember(
        &["embed", "--model", m, "--output", npy.to_str().unwrap()],
        Some(b""),
    );
    assert!(out.status.success());
    let (shape, data) = read_npy(&npy);
    assert_eq!(shape, [0, 52]);
    assert!(data.is_empty());
}

#[test]
fn bad_input_names_the_line_and_leaves_no_output() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("out.npy");
    let out_arg = npy.to_str().unwrap();
    let cases: [(&[u8], &[&str], &str); 6] = [
        (
            b"fine\nfine\n\xff\xfe broken\n",
            &[],
            "line 3: invalid UTF-8",
        ),
        (
            b"{\"text\": \"a\"}\n[1, 2]\n",
            &["--input-format", "jsonl"],
            "line 2: expected a JSON object",
        ),
        (
            b"{\"text\": \"a\"}\n\n",
            &["--input-format", "jsonl"],
            "line 2: empty line",
        ),
        (
            b"{\"text\": \"a\"}\n{not json}\n",
            &["--input-format", "jsonl"],
            "line 2: malformed JSON",
        ),
        (
            b"{\"text\": \"a\"}\n{\"body\": \"b\"}\n",
            &["--input-format", "jsonl"],
            "line 2: no \"text\" field",
        ),
        (
            b"{\"text\": 7}\n",
            &["--input-format", "jsonl"],
            "line 1: \"text\" is not a string",
        ),
    ];
    for (input, extra, expected) in cases {
        let mut args = vec!["embed", "--model", m, "--output", out_arg];
        args.extend_from_slice(extra);
        let out = ember(&args, Some(input));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expected}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "no output file left behind"
        );
    }
}

#[test]
fn missing_model_and_input_are_named() {
    let out = ember(&["embed", "--model", "/nonexistent/model-dir", "x"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model-dir"));
    let model = tiny_model();
    let out = ember(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--input",
            "/nonexistent/in.txt",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/in.txt"));
}

#[test]
fn a_five_megabyte_line_is_embedded() {
    let model = tiny_model();
    let mut line = "lorem ipsum dolor sit amet ".repeat(5 * 1024 * 1024 / 27);
    line.push('\n');
    let rows = json_rows(&ember(
        &["embed", "--model", model.to_str().unwrap()],
        Some(line.as_bytes()),
    ));
    assert_eq!(rows.len(), 1);
    assert!(rows[0].iter().all(|x| x.is_finite()));
}

#[test]
fn similarity_prints_a_matrix() {
    let model = tiny_model();
    let out = ember(
        &[
            "similarity",
            "--model",
            model.to_str().unwrap(),
            "a cat",
            "a dog",
            "a cat",
        ],
        None,
    );
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("cosine similarity (3 texts"), "{text}");
    assert!(text.contains(" 1.000"), "{text}");
}

/// `ember similarity` scores by the model's similarity_fn_name (dot; manhattan, negated, as
/// sentence-transformers' model.similarity gives it), each cell from the rows `ember embed`
/// prints.
#[test]
fn similarity_uses_the_models_similarity_function() {
    let dir = tempfile::tempdir().unwrap();
    let texts = ["a cat", "a dog runs", "stocks fell"];
    for (name, function) in [("dot", "dot"), ("manhattan", "manhattan")] {
        let model = tiny_model_copy(dir.path(), &format!("tiny-{name}"));
        std::fs::write(
            model.join("config_sentence_transformers.json"),
            format!(r#"{{"similarity_fn_name": "{function}"}}"#),
        )
        .unwrap();
        let m = model.to_str().unwrap();
        let mut args = vec!["similarity", "--model", m];
        args.extend(texts);
        let out = ember(&args, None);
        assert_success(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("{function} similarity (3 texts")),
            "{text}"
        );
        let mut args = vec!["embed", "--model", m];
        args.extend(texts);
        let rows = json_rows(&ember(&args, None));
        // The matrix: the last three lines, "[i]" then three cells.
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        for (i, line) in lines.iter().rev().enumerate() {
            let cells: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .map(|cell| cell.parse().unwrap())
                .collect();
            assert_eq!(cells.len(), 3, "{text}");
            for (j, &cell) in cells.iter().enumerate() {
                let pairs = rows[i]
                    .iter()
                    .zip(&rows[j])
                    .map(|(&a, &b)| (a as f64, b as f64));
                let expected = match function {
                    "dot" => pairs.map(|(a, b)| a * b).sum::<f64>(),
                    _ => -pairs.map(|(a, b)| (a - b).abs()).sum::<f64>(),
                };
                assert!(
                    (cell - expected).abs() <= 6e-4,
                    "[{i}][{j}] {cell} vs {expected}\n{text}"
                );
            }
        }
        // Unnormalised rows: the scores are not cosines (dot of a row with itself is not 1).
        assert!(!text.contains(" 1.000"), "{text}");
    }
}

#[test]
fn search_finds_the_matching_line_first() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "Stock markets fell sharply today.\nA cat sits on the mat.\nThe recipe needs two eggs.\n",
    )
    .unwrap();
    let model = tiny_model();
    let output = search(&model, &corpus, "A cat sits on the mat.", 2, &[]);
    assert_success(&output);
    let hits = json_lines(&output);
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["line"], 2);
    assert_eq!(hits[0]["rank"], 1);
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert!(hits[0]["score"].as_f64().unwrap() >= hits[1]["score"].as_f64().unwrap());
}

/// A saved matrix is tied to the model folder's files beside the weights: a tokenizer file
/// edited after it was saved refuses it, naming `model_files_sha256`; a fingerprint from an
/// earlier Ember, without that key, is used with a warning.
#[test]
fn search_refuses_a_matrix_of_since_edited_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model_copy(dir.path(), "model");
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "a cat sits\na dog runs\nstocks fell\n").unwrap();
    let matrix = dir.path().join("corpus.npy");
    let run = || {
        search(
            &model,
            &corpus,
            "a cat",
            2,
            &["--matrix", matrix.to_str().unwrap()],
        )
    };
    let first = run();
    assert_success(&first);
    assert_success(&run());
    let config = model.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen('{', "{\"model_max_length\": 512, ", 1),
    )
    .unwrap();
    let refused = run();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("model_files_sha256"), "{stderr}");
    std::fs::write(&config, &text).unwrap();
    assert_success(&run());
    // A fingerprint written before the key existed.
    let fingerprint = dir.path().join("corpus.npy.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fingerprint).unwrap()).unwrap();
    saved.as_object_mut().unwrap().remove("model_files_sha256");
    std::fs::write(&fingerprint, serde_json::to_vec(&saved).unwrap()).unwrap();
    let older = run();
    assert_success(&older);
    assert_eq!(older.stdout, first.stdout);
    assert!(
        String::from_utf8_lossy(&older.stderr).contains("earlier Ember"),
        "{}",
        String::from_utf8_lossy(&older.stderr)
    );
}

#[test]
fn search_saves_and_reuses_the_corpus_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "a cat sits\na dog runs\nstocks fell\n").unwrap();
    let matrix = dir.path().join("corpus.npy");
    let model = tiny_model();
    let search_with_matrix = |corpus: &Path| {
        search(
            &model,
            corpus,
            "a cat",
            3,
            &["--matrix", matrix.to_str().unwrap()],
        )
    };
    let first = search_with_matrix(&corpus);
    assert_success(&first);
    assert!(matrix.exists(), "the matrix was not saved");
    let second = search_with_matrix(&corpus);
    assert_success(&second);
    assert_eq!(
        first.stdout, second.stdout,
        "reusing the matrix changed the hits"
    );

    // A matrix that does not fit the corpus is refused, naming the file.
    let shorter = dir.path().join("shorter.txt");
    std::fs::write(&shorter, "a cat sits\n").unwrap();
    let refused = search_with_matrix(&shorter);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("corpus.npy") && stderr.contains("3 rows"),
        "{stderr}"
    );

    // And one computed from other lines, though as many (its fingerprint, beside it, says so).
    let fingerprint = dir.path().join("corpus.npy.json");
    assert!(fingerprint.exists(), "no fingerprint was saved");
    let edited = dir.path().join("edited.txt");
    std::fs::write(
        &edited,
        "a cat sits
a dog sleeps
stocks fell
",
    )
    .unwrap();
    let refused = search_with_matrix(&edited);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("corpus.npy") && stderr.contains("corpus_sha256"),
        "{stderr}"
    );
    // A matrix another run wrote under the same name (here ember embed, of other lines of the
    // same count) does not match the fingerprint beside it.
    let other_rows = ember(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "-o",
            matrix.to_str().unwrap(),
        ],
        Some(b"x\ny\nz\n"),
    );
    assert_success(&other_rows);
    let refused = search_with_matrix(&corpus);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("matrix_sha256"), "{stderr}");
    std::fs::remove_file(&matrix).unwrap();
    // Recomputed, with a new fingerprint.
    assert_success(&search_with_matrix(&corpus));
    // Options that leave the rows as they were do not refuse it (tiny-bert has no Normalize);
    // ones that change them do, naming what changed.
    let with = |extra: &[&str]| {
        let mut args = vec!["--matrix", matrix.to_str().unwrap()];
        args.extend_from_slice(extra);
        search(&model, &corpus, "a cat", 3, &args)
    };
    let same = with(&["--no-normalize"]);
    assert_success(&same);
    assert_eq!(same.stdout, first.stdout);
    let refused = with(&["--normalize"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("normalize"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Without its fingerprint (a matrix from before them) it is used, with a warning.
    std::fs::remove_file(&fingerprint).unwrap();
    let unchecked = search_with_matrix(&corpus);
    assert_success(&unchecked);
    assert_eq!(unchecked.stdout, first.stdout);
    assert!(String::from_utf8_lossy(&unchecked.stderr).contains("no fingerprint"));

    // So is a damaged one.
    let bytes = std::fs::read(&matrix).unwrap();
    std::fs::write(&matrix, &bytes[..bytes.len() - 3]).unwrap();
    let damaged = search_with_matrix(&corpus);
    assert!(!damaged.status.success());
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert!(
        stderr.contains("corpus.npy") && stderr.contains("data bytes"),
        "{stderr}"
    );
}

/// `ember search` embeds the corpus as sentence-transformers' encode_document and the queries
/// as encode_query: with tiny-bert-prompts' prompts (query "query: ", passage "passage: ", no
/// default; like every model, an empty "document" prompt, which encode_document takes before
/// "passage"), its saved matrix is `ember embed --no-prompt`'s rows, and the top hit's score
/// the cosine of `--prompt-name query`'s row with it (it was the unprompted query's). An
/// explicit prompt option applies to both.
#[test]
fn search_prompts_queries_and_corpus_as_sentence_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    // Without its default prompt ("query"), so that only search's own choice can put "query: "
    // before the query.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-bert-prompts");
    let model = dir.path().join("prompts-no-default");
    copy_files(&fixture, &model);
    copy_files(&fixture.join("1_Pooling"), &model.join("1_Pooling"));
    std::fs::write(
        model.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "query: ", "passage": "passage: "}}"#,
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "a cat sits\na dog runs\nstocks fell\n").unwrap();
    let embed = |prompt: &[&str], input: &[u8]| {
        let npy = dir.path().join(format!("{}.npy", prompt.join("")));
        let mut args = vec!["embed", "--model", m, "-o", npy.to_str().unwrap()];
        args.extend_from_slice(prompt);
        let out = ember(&args, Some(input));
        assert_success(&out);
        read_npy(&npy).1
    };
    let search_hit = |extra: &[&str], matrix: &Path| {
        let mut args = vec!["--matrix", matrix.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = search(&model, &corpus, "a cat", 1, &args);
        assert_success(&out);
        let hit = json_lines(&out).remove(0);
        (read_npy(matrix).1, hit)
    };
    let lines = b"a cat sits\na dog runs\nstocks fell\n";
    let passages = embed(&["--no-prompt"], lines);
    let query = embed(&["--prompt-name", "query"], b"a cat\n");
    let (matrix, hit) = search_hit(&[], &dir.path().join("m1.npy"));
    assert_eq!(
        matrix, passages,
        "the corpus did not get the document prompt"
    );
    let dim = query.len();
    let row = (hit["line"].as_u64().unwrap() - 1) as usize;
    let doc = &passages[row * dim..(row + 1) * dim];
    let dot: f64 = query
        .iter()
        .zip(doc)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    let cosine = dot / (norm(&query) * norm(doc));
    assert!(
        (hit["score"].as_f64().unwrap() - cosine).abs() < 1e-5,
        "the query did not get the query prompt: {hit} vs {cosine}"
    );
    let (explicit, _) = search_hit(&["--prompt-name", "query"], &dir.path().join("m2.npy"));
    assert_eq!(explicit, embed(&["--prompt-name", "query"], lines));
}

/// A model whose config_sentence_transformers.json names `dot` is searched by dot product, as
/// sentence-transformers' model.similarity would rank it; `ember info` says which.
#[test]
fn search_ranks_by_the_models_similarity_function() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model_copy(dir.path(), "tiny-dot");
    std::fs::write(
        model.join("config_sentence_transformers.json"),
        r#"{"similarity_fn_name": "dot"}"#,
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "a cat sits\na dog runs\nstocks fell\n").unwrap();
    let out = search(&model, &corpus, "a cat", 3, &[]);
    assert_success(&out);
    let hits = json_lines(&out);
    let rows = json_rows(&ember(
        &[
            "embed",
            "--model",
            m,
            "a cat",
            "a cat sits",
            "a dog runs",
            "stocks fell",
        ],
        None,
    ));
    for hit in &hits {
        let line = hit["line"].as_u64().unwrap() as usize;
        let dot: f64 = rows[0]
            .iter()
            .zip(&rows[line])
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let score = hit["score"].as_f64().unwrap();
        assert!(
            (score - dot).abs() < 1e-3 * dot.abs().max(1.0),
            "{hit}: dot {dot}"
        );
    }
    let info = ember(&["info", "--model", m], None);
    assert!(String::from_utf8_lossy(&info.stdout).contains("\"similarity\": \"dot\""));
}

/// Eleven short texts, one per line, for the options below.
const ELEVEN_LINES: &[u8] = b"zero\none text\ntwo words here\n\nfour\nfive, with a comma\n\
six\nseven seven\neight: the last but two\nnine\nten\n";

fn norm(row: &[f32]) -> f64 {
    row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn shards_merge_into_the_unsharded_output() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let whole = json_rows(&ember(&["embed", "--model", m], Some(ELEVEN_LINES)));
    assert_eq!(whole.len(), 11);
    let dir = tempfile::tempdir().unwrap();
    let whole_raw = dir.path().join("whole.f32");
    assert_success(&ember(
        &["embed", "--model", m, "-o", whole_raw.to_str().unwrap()],
        Some(ELEVEN_LINES),
    ));
    let whole_raw = std::fs::read(whole_raw).unwrap();

    let shards = 3;
    let mut merged: Vec<Option<Vec<f32>>> = vec![None; whole.len()];
    let mut interleaved = vec![0u8; whole_raw.len()];
    let row_bytes = 52 * 4;
    for i in 0..shards {
        let shard = format!("{i}/{shards}");
        // JSON lines: objects carrying the text's index, this shard's texts in input order.
        let out = ember(
            &["embed", "--model", m, "--shard", &shard],
            Some(ELEVEN_LINES),
        );
        assert_success(&out);
        let lines = json_lines(&out);
        let indices: Vec<usize> = lines
            .iter()
            .map(|l| l["index"].as_u64().unwrap() as usize)
            .collect();
        let expected: Vec<usize> = (i..whole.len()).step_by(shards).collect();
        assert_eq!(indices, expected, "shard {shard}");
        for line in &lines {
            let row: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
            let slot = &mut merged[line["index"].as_u64().unwrap() as usize];
            assert!(slot.replace(row).is_none(), "two shards wrote one text");
        }
        // Raw f32: row r of shard i is text i + r·N.
        let path = dir.path().join(format!("part-{i}.bin"));
        assert_success(&ember(
            &[
                "embed",
                "--model",
                m,
                "--shard",
                &shard,
                "-o",
                path.to_str().unwrap(),
            ],
            Some(ELEVEN_LINES),
        ));
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len(), expected.len() * row_bytes);
        for (r, &j) in expected.iter().enumerate() {
            interleaved[j * row_bytes..(j + 1) * row_bytes]
                .copy_from_slice(&bytes[r * row_bytes..(r + 1) * row_bytes]);
        }
    }
    let merged: Vec<Vec<f32>> = merged.into_iter().map(Option::unwrap).collect();
    assert_eq!(merged, whole, "merged shards differ from the unsharded run");
    assert_eq!(interleaved, whole_raw);

    // More shards than texts: the empty ones succeed with nothing to say.
    let out = ember(&["embed", "--model", m, "--shard", "5/8", "a", "b"], None);
    assert_success(&out);
    assert!(out.stdout.is_empty());
    for bad in ["3/3", "1", "a/2", "1/0", "-1/2"] {
        let out = ember(
            &["embed", "--model", m, &format!("--shard={bad}"), "x"],
            None,
        );
        assert!(!out.status.success(), "--shard {bad} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("I/N"));
    }
}

#[test]
fn raw_output_is_the_npy_payload() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let mut args = vec!["embed", "--model", m, "-o", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        assert_success(&ember(&args, Some(ELEVEN_LINES)));
        std::fs::read(path).unwrap()
    };
    let npy = write("e.npy", &[]);
    let header_len = 10 + u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let payload = &npy[header_len..];
    assert_eq!(payload.len(), 11 * 52 * 4);
    assert_eq!(write("e.f32", &[]), payload);
    assert_eq!(write("e.raw", &[]), payload);
    assert_eq!(write("e.out", &["--output-format", "raw"]), payload);
    // --output-format wins over the extension, and works on standard output.
    assert_eq!(write("e.bin", &["--output-format", "npy"]), npy);
    let stdout = ember(
        &["embed", "--model", m, "--output-format", "raw"],
        Some(ELEVEN_LINES),
    );
    assert_success(&stdout);
    assert_eq!(stdout.stdout, payload);
    let (_, values) = read_npy(&dir.path().join("e.npy"));
    let jsonl = json_rows(&ember(&["embed", "--model", m], Some(ELEVEN_LINES)));
    assert_eq!(values, jsonl.concat());
}

/// A copy of the tiny model whose `modules.json` ends in a Normalize module.
/// The files of `from` (not its folders) copied into `to`.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A copy of the tiny model in `dir/name`.
fn tiny_model_copy(dir: &Path, name: &str) -> PathBuf {
    let copy = dir.join(name);
    copy_files(&tiny_model(), &copy);
    copy_files(&tiny_model().join("1_Pooling"), &copy.join("1_Pooling"));
    copy
}

fn tiny_model_normalized(dir: &Path) -> PathBuf {
    let copy = tiny_model_copy(dir, "tiny-bert-normalize");
    let modules = copy.join("modules.json");
    let mut list: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&modules).unwrap()).unwrap();
    list.push(serde_json::json!({
        "idx": 2, "name": "2", "path": "2_Normalize",
        "type": "sentence_transformers.models.Normalize"
    }));
    std::fs::write(&modules, serde_json::to_string(&list).unwrap()).unwrap();
    copy
}

#[test]
fn normalize_flags_override_the_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let plain = tiny_model();
    let normalized = tiny_model_normalized(dir.path());
    let rows = |model: &Path, flag: Option<&str>| {
        let mut args = vec!["embed", "--model", model.to_str().unwrap()];
        args.extend(flag);
        json_rows(&ember(&args, Some(ELEVEN_LINES)))
    };
    let raw = rows(&plain, None);
    assert!(raw.iter().all(|r| (norm(r) - 1.0).abs() > 1e-2));
    // The folder with Normalize gives unit rows; --no-normalize gives the raw ones back.
    let unit = rows(&normalized, None);
    assert!(unit.iter().all(|r| (norm(r) - 1.0).abs() < 1e-5));
    assert_eq!(rows(&normalized, Some("--no-normalize")), raw);
    // --normalize on the folder without it gives the same unit rows.
    assert_eq!(rows(&plain, Some("--normalize")), unit);
    for (u, r) in unit.iter().zip(&raw) {
        for (&a, &b) in u.iter().zip(r) {
            assert!((a as f64 - b as f64 / norm(r)).abs() < 1e-6);
        }
    }
    // The last of the two flags wins.
    let out = ember(
        &[
            "embed",
            "--model",
            normalized.to_str().unwrap(),
            "--normalize",
            "--no-normalize",
            "zero",
        ],
        None,
    );
    assert_eq!(json_rows(&out)[0], raw[0]);
}

#[test]
fn error_on_truncation_names_the_line_and_max_seq_length_moves_the_limit() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    // [CLS] + 50 words + [SEP] = 52 tokens: past the tiny model's 40, within its 64 positions.
    let input = format!("short\nalso short\n{}\nfine\n", "word ".repeat(50));
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("out.npy");
    let out = ember(
        &[
            "embed",
            "--model",
            m,
            "--truncation",
            "error",
            "-o",
            npy.to_str().unwrap(),
        ],
        Some(input.as_bytes()),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("standard input: line 3: 52 tokens") && stderr.contains("40"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    // The same from a file and as an argument.
    let file = dir.path().join("in.txt");
    std::fs::write(&file, &input).unwrap();
    let out = ember(
        &[
            "embed",
            "--model",
            m,
            "--truncation",
            "error",
            "-i",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("in.txt: line 3: 52 tokens"));
    let long = "word ".repeat(50);
    let out = ember(
        &["embed", "--model", m, "--truncation", "error", "a", &long],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("text argument 2: 52 tokens"));

    // Truncated by default; with room for it, the long text is whole and changes.
    let truncated = json_rows(&ember(&["embed", "--model", m], Some(input.as_bytes())));
    let whole = json_rows(&ember(
        &[
            "embed",
            "--model",
            m,
            "--truncation",
            "error",
            "--max-seq-length",
            "64",
        ],
        Some(input.as_bytes()),
    ));
    assert_eq!(truncated.len(), 4);
    assert_eq!(whole[0], truncated[0]);
    assert_ne!(whole[2], truncated[2]);

    let out = ember(
        &["embed", "--model", m, "--max-seq-length", "65", "x"],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_seq_length 65") && stderr.contains("max_position_embeddings 64"),
        "{stderr}"
    );
}

#[test]
fn info_prints_the_model_as_json() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let info = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["info", "--model", m];
        args.extend_from_slice(extra);
        let out = ember(&args, None);
        assert_success(&out);
        serde_json::from_slice(&out.stdout).expect("info prints one JSON value")
    };
    let plain = info(&[]);
    for (key, value) in [
        ("dim", serde_json::json!(52)),
        ("max_seq_length", serde_json::json!(40)),
        ("max_position_embeddings", serde_json::json!(64)),
        ("pooling", serde_json::json!(["mean"])),
        ("include_prompt", serde_json::json!(true)),
        ("normalize", serde_json::json!(false)),
        ("dtype", serde_json::json!("f32")),
        ("layers", serde_json::json!(2)),
        ("hidden_size", serde_json::json!(52)),
        ("vocab_size", serde_json::json!(2601)),
        ("truncation", serde_json::json!("truncate")),
        ("fast_tokenizer", serde_json::json!(true)),
        ("tokenizer_fallback", serde_json::Value::Null),
        ("tokenizer_class", serde_json::json!("BertTokenizer")),
        ("architecture", serde_json::json!("bert")),
        ("positions", serde_json::json!("absolute")),
    ] {
        assert_eq!(plain[key], value, "{key}: {plain}");
    }
    // The other families' positions, by their fixtures.
    let fixtures = model.parent().unwrap();
    for (folder, architecture, positions) in [
        ("tiny-roberta", "roberta", "absolute from row 2"),
        ("tiny-mpnet", "mpnet", "absolute from row 2 + relative bias"),
        ("tiny-gte-new", "gte", "rotary θ=2000, NTK ×2"),
        ("tiny-nomic-bert", "nomic_bert", "rotary θ=1000"),
        (
            "tiny-modernbert",
            "modernbert",
            "rotary θ=160000 (global), θ=10000 (local, ±8)",
        ),
        ("tiny-jina", "jina_bert", "alibi"),
    ] {
        let out = ember(
            &["info", "--model", fixtures.join(folder).to_str().unwrap()],
            None,
        );
        assert_success(&out);
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&got["architecture"], &got["positions"]),
            (
                &serde_json::json!(architecture),
                &serde_json::json!(positions)
            ),
            "{folder}"
        );
    }
    assert!(plain["weights_file"]
        .as_str()
        .unwrap()
        .ends_with("model.safetensors"));
    assert_eq!(plain["unit_length"], serde_json::json!(false), "{plain}");
    // Unit rows: Normalize and no cut, or a cut normalised again (--normalize), not the
    // folder's Normalize before a cut.
    let dir = tempfile::tempdir().unwrap();
    let normalized = tiny_model_normalized(dir.path());
    let n = normalized.to_str().unwrap();
    for (model, extra, normalize, unit) in [
        (m, &["--normalize"][..], true, true),
        (n, &[][..], true, true),
        (n, &["--truncate-dim", "16"][..], true, false),
        (n, &["--normalize", "--truncate-dim", "16"][..], true, true),
        (n, &["--no-normalize"][..], false, false),
    ] {
        let mut args = vec!["info", "--model", model];
        args.extend_from_slice(extra);
        let out = ember(&args, None);
        assert_success(&out);
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&got["normalize"], &got["unit_length"]),
            (&serde_json::json!(normalize), &serde_json::json!(unit)),
            "{extra:?}"
        );
    }
    let changed = info(&[
        "--max-seq-length",
        "64",
        "--normalize",
        "--dtype",
        "bf16",
        "--truncation",
        "error",
    ]);
    assert_eq!(
        (
            &changed["max_seq_length"],
            &changed["normalize"],
            &changed["dtype"],
            &changed["truncation"]
        ),
        (
            &serde_json::json!(64),
            &serde_json::json!(true),
            &serde_json::json!("bf16"),
            &serde_json::json!("error")
        )
    );
    // A pipeline Ember's own tokenizers do not reproduce (a `single_word` added token) says so,
    // and why.
    let dir = tempfile::tempdir().unwrap();
    let copy = tiny_model_copy(dir.path(), "tiny-bert-single-word");
    let path = copy.join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for token in tokenizer["added_tokens"].as_array_mut().unwrap() {
        if token["content"] == "[MASK]" {
            token["single_word"] = serde_json::json!(true);
        }
    }
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let out = ember(&["info", "--model", copy.to_str().unwrap()], None);
    assert_success(&out);
    let fallback: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        fallback["fast_tokenizer"],
        serde_json::json!(false),
        "{fallback}"
    );
    assert!(
        fallback["tokenizer_fallback"]
            .as_str()
            .is_some_and(|reason| reason.contains("single_word")),
        "{fallback}"
    );
}

#[test]
fn help_lists_every_option_and_the_examples() {
    let out = ember(&["embed", "--help"], None);
    assert_success(&out);
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--max-seq-length",
        "--normalize",
        "--no-normalize",
        "--truncation",
        "--output-format",
        "--shard",
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "rdd.pipe",
        "Examples:",
    ] {
        assert!(help.contains(flag), "{flag} missing from embed --help");
    }
}

#[test]
fn device_cuda_without_a_gpu_is_a_clear_error() {
    let model = tiny_model();
    let model = model.to_str().unwrap();
    let output = ember(
        &["embed", "--model", model, "--device", "cuda", "hello"],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        println!("a GPU is present: --device cuda ran");
        return;
    }
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.starts_with("ember: error: no CUDA driver found (libcuda.so)")
            || stderr.starts_with("ember: error: no CUDA device")
            || stderr.contains("NVRTC"),
        "{stderr}"
    );
    // Refused before any device is opened, GPU or not.
    let output = ember(
        &[
            "embed", "--model", model, "--device", "cuda:0", "--dtype", "int8", "x",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "ember: error: options: dtype int8 runs on the CPU only; on cuda use f32, bf16 or f16"
    );
    let output = ember(&["embed", "--model", model, "--dtype", "f16", "x"], None);
    assert!(String::from_utf8_lossy(&output.stderr).contains("dtype f16 runs on cuda only"));
    let output = ember(&["embed", "--model", model, "--device", "gpu", "x"], None);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn prompt_flags_pick_the_prompt() {
    // tiny-bert-prompts: tiny-bert with prompts query ("query: ", the default), passage, empty.
    let model = tiny_model().with_file_name("tiny-bert-prompts");
    let model = model.to_str().unwrap();
    let plain = tiny_model();
    let plain = plain.to_str().unwrap();
    let rows = |args: &[&str]| json_rows(&ember(args, None));
    let default = rows(&["embed", "-m", model, "a cat"]);
    // The default prompt is "query: ", also given by name or as text on the plain model.
    assert_eq!(
        default,
        rows(&["embed", "-m", model, "--prompt-name", "query", "a cat"])
    );
    assert_eq!(
        default,
        rows(&["embed", "-m", plain, "--prompt", "query: ", "a cat"])
    );
    // --no-prompt, or an empty prompt, is the plain model's row.
    let none = rows(&["embed", "-m", plain, "a cat"]);
    assert_eq!(none, rows(&["embed", "-m", model, "--no-prompt", "a cat"]));
    assert_eq!(
        none,
        rows(&["embed", "-m", model, "--prompt-name", "empty", "a cat"])
    );
    assert_ne!(none, default);
    let passage = rows(&["embed", "-m", model, "--prompt-name", "passage", "a cat"]);
    assert_ne!(passage, default);
    // An unknown name is refused, naming the prompts there are.
    let output = ember(
        &["embed", "-m", model, "--prompt-name", "nope", "a cat"],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("document, empty, passage, query"),
        "{stderr}"
    );
}

#[test]
fn any_batch_size_gives_the_same_rows() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let texts = ["first text", "a second, longer text here", "third"];
    let run = |batch_size: &str| {
        let mut args = vec!["embed", "--model", m, "--batch-size", batch_size];
        args.extend_from_slice(&texts);
        json_rows(&ember(&args, None))
    };
    let expected = run("2");
    assert_eq!(expected.len(), texts.len());
    // 2^61 · 8 wraps to 0, usize::MAX · 8 overflows, 10^11 · 8 texts would be 12.8 TB of `&str`.
    for batch_size in [
        "2305843009213693952",
        "18446744073709551615",
        "100000000000",
    ] {
        assert_eq!(run(batch_size), expected, "--batch-size {batch_size}");
    }
}

/// The JSON lines `ember embed` prints for `texts` on the tiny model.
fn stdout_json_lines(texts: &[&str]) -> String {
    let model = tiny_model();
    let mut args = vec!["embed", "--model", model.to_str().unwrap()];
    args.extend_from_slice(texts);
    let out = ember(&args, None);
    assert_success(&out);
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
#[test]
fn output_to_a_fifo_is_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let model = tiny_model();
    let texts = ["first text", "a second, longer text here"];
    let expected = stdout_json_lines(&texts);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("embeddings.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    // The reader is a process so that, if ember never opens the FIFO, it can be killed
    // rather than hang the test in `open`.
    let mut reader = Command::new("cat")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut args = vec![
        "embed",
        "--model",
        model.to_str().unwrap(),
        "-o",
        fifo.to_str().unwrap(),
    ];
    args.extend_from_slice(&texts);
    let out = ember(&args, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reader.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let reader_finished = reader.try_wait().unwrap().is_some();
    if !reader_finished {
        reader.kill().unwrap();
    }
    let received = reader.wait_with_output().unwrap();
    assert_success(&out);
    assert!(
        reader_finished,
        "the FIFO's reader never saw the end of the output"
    );
    assert_eq!(String::from_utf8(received.stdout).unwrap(), expected);
    let file_type = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(file_type.is_fifo(), "the FIFO was replaced: {file_type:?}");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "nothing but the FIFO: {entries:?}");
}

#[cfg(unix)]
#[test]
fn output_through_a_symlink_writes_its_target_and_keeps_the_link() {
    let model = tiny_model();
    let texts = ["first text", "a second, longer text here"];
    let expected = stdout_json_lines(&texts);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("target.jsonl"), "old contents\n").unwrap();
    // One link to an existing file, one dangling (its target is the file to create); both
    // relative, so they resolve against their own directory, not the working directory.
    let cases = [
        ("link.jsonl", "data/target.jsonl"),
        ("dangling.jsonl", "data/new.jsonl"),
    ];
    for (link, target) in cases {
        std::os::unix::fs::symlink(target, dir.path().join(link)).unwrap();
        let link_path = dir.path().join(link);
        let mut args = vec![
            "embed",
            "--model",
            model.to_str().unwrap(),
            "-o",
            link_path.to_str().unwrap(),
        ];
        args.extend_from_slice(&texts);
        assert_success(&ember(&args, None));
        let metadata = std::fs::symlink_metadata(&link_path).unwrap();
        assert!(metadata.file_type().is_symlink(), "{link} was replaced");
        assert_eq!(std::fs::read_link(&link_path).unwrap(), Path::new(target));
        let written = std::fs::read_to_string(dir.path().join(target)).unwrap();
        assert_eq!(written, expected, "{link} → {target}");
    }
    let mut entries: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["new.jsonl", "target.jsonl"],
        "no temporary files left"
    );
}

// `/dev/fd/1` rather than `/dev/stdout`: a build that still renamed into place would only fail
// to create its temporary file in `/proc/self/fd`, where `/dev/stdout`, run as root, would
// have the link in `/dev` replaced.
#[cfg(target_os = "linux")]
#[test]
fn output_to_dev_fd_1_is_standard_output() {
    let model = tiny_model();
    let texts = ["first text", "a second, longer text here"];
    let expected = stdout_json_lines(&texts);
    let mut args = vec![
        "embed",
        "--model",
        model.to_str().unwrap(),
        "-o",
        "/dev/fd/1",
    ];
    args.extend_from_slice(&texts);
    let piped = ember(&args, None);
    assert_success(&piped);
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), expected);

    // Redirected to a file that others write around it: the same descriptor, so the
    // output lands between them (a reopened file, or one renamed over, would not).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.jsonl");
    let script = r#"{ echo header; "$@"; echo footer; } > "$OUT""#;
    let status = Command::new("sh")
        .args(["-c", script, "sh", env!("CARGO_BIN_EXE_ember")])
        .args(&args)
        .env("OUT", &file)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, format!("header\n{expected}footer\n"));
}

/// `ember embed --precision`: every quantization's rows are `ember::quantize` of the float rows
/// `ember embed` prints (int8 / uint8 on those rows' own ranges, or on `--ranges`); npy writes
/// NumPy's int8 / uint8 arrays, raw the bytes; `--save-ranges` writes what `--ranges` reads.
#[test]
fn embed_precision_quantizes_as_the_library() {
    use ember::quantize::{quantize, Quantization, QuantizationRanges};
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let texts = [
        "a cat sits on the mat",
        "a dog runs",
        "stocks fell sharply",
        "hello",
    ];
    fn with<'a>(m: &'a str, extra: &[&'a str], texts: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["embed", "--model", m];
        args.extend_from_slice(extra);
        args.extend_from_slice(texts);
        args
    }
    let args = |extra: &[&'static str]| with(m, extra, &texts);
    let floats = json_rows(&ember(&args(&[]), None));
    let dim = floats[0].len();
    let floats = ember::Embeddings::from_vec(floats.concat(), texts.len(), dim).unwrap();
    let own = QuantizationRanges::from_embeddings(&floats).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for quantization in Quantization::ALL {
        let expected = quantize(&floats, quantization, Some(&own)).unwrap();
        let name = quantization.name();
        // JSON lines: the integers.
        let out = ember(&args(&["--precision", name]), None);
        assert_success(&out);
        let lines: Vec<Vec<i64>> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let want: Vec<i64> = match quantization.is_signed() {
                true => expected.row_i8(i).iter().map(|&v| v as i64).collect(),
                false => expected.row(i).iter().map(|&v| v as i64).collect(),
            };
            assert_eq!(line, &want, "{name}: row {i}");
        }
        // npy: NumPy's dtype and shape, then the bytes.
        let npy = dir.path().join(format!("{name}.npy"));
        assert_success(&ember(
            &with(
                m,
                &["--precision", name, "-o", npy.to_str().unwrap()],
                &texts,
            ),
            None,
        ));
        let bytes = std::fs::read(&npy).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        let descr = if quantization.is_signed() {
            "|i1"
        } else {
            "|u1"
        };
        assert!(
            header.contains(&format!("'descr': '{descr}'"))
                && header.contains(&format!(
                    "'shape': ({}, {})",
                    texts.len(),
                    quantization.row_bytes(dim)
                )),
            "{header}"
        );
        assert_eq!(&bytes[10 + header_len..], expected.as_bytes(), "{name}");
        // raw: the bytes alone.
        let raw = dir.path().join(format!("{name}.bin"));
        assert_success(&ember(
            &with(
                m,
                &["--precision", name, "-o", raw.to_str().unwrap()],
                &texts,
            ),
            None,
        ));
        assert_eq!(std::fs::read(&raw).unwrap(), expected.as_bytes(), "{name}");
    }
    // --save-ranges writes this input's ranges; --ranges reads them back (here for one text,
    // which alone has no ranges of its own).
    let saved = dir.path().join("ranges.npy");
    assert_success(&ember(
        &with(
            m,
            &[
                "--precision",
                "uint8",
                "--save-ranges",
                saved.to_str().unwrap(),
            ],
            &texts,
        ),
        None,
    ));
    let (shape, values) = read_npy(&saved);
    assert_eq!(shape, [2, dim]);
    assert_eq!((&values[..dim], &values[dim..]), (own.min(), own.max()));
    let one = ember(
        &[
            "embed",
            "--model",
            m,
            "--precision",
            "int8",
            "--ranges",
            saved.to_str().unwrap(),
            texts[1],
        ],
        None,
    );
    assert_success(&one);
    let line: Vec<i64> = serde_json::from_slice(one.stdout.trim_ascii_end()).unwrap();
    let want = quantize(&floats, Quantization::Int8, Some(&own)).unwrap();
    let want: Vec<i64> = want.row_i8(1).iter().map(|&v| v as i64).collect();
    assert_eq!(line, want);
    // Across chunks (--batch-size 1: chunks of 8 texts) the two passes keep every row's place;
    // --save-ranges writes .npy whatever the name.
    let many: Vec<String> = (0..11)
        .map(|i| format!("text number {i} of many"))
        .collect();
    let mut args = vec!["embed", "--model", m, "--batch-size", "1"];
    args.extend(many.iter().map(String::as_str));
    let floats = json_rows(&ember(&args, None));
    let floats = ember::Embeddings::from_vec(floats.concat(), many.len(), dim).unwrap();
    let ranges = QuantizationRanges::from_embeddings(&floats).unwrap();
    let expected = quantize(&floats, Quantization::Uint8, Some(&ranges)).unwrap();
    let named_json = dir.path().join("ranges.json");
    let raw = dir.path().join("many.bin");
    let mut args = vec![
        "embed",
        "--model",
        m,
        "--batch-size",
        "1",
        "--precision",
        "uint8",
        "--save-ranges",
        named_json.to_str().unwrap(),
        "-o",
        raw.to_str().unwrap(),
    ];
    args.extend(many.iter().map(String::as_str));
    assert_success(&ember(&args, None));
    assert_eq!(std::fs::read(&raw).unwrap(), expected.as_bytes());
    let (shape, values) = read_npy(&named_json);
    assert_eq!(shape, [2, dim]);
    assert_eq!(&values[..dim], ranges.min());
    // Refused: one text without --ranges, --ranges for binary, --shard without --ranges,
    // ranges of another width.
    for (extra, message) in [
        (&["--precision", "int8"][..], "at least 2"),
        (
            &["--precision", "binary", "--ranges", "x.npy"][..],
            "are for --precision int8",
        ),
        (
            &["--precision", "uint8", "--shard", "0/2"][..],
            "needs --ranges",
        ),
    ] {
        let mut args = vec!["embed", "--model", m];
        args.extend_from_slice(extra);
        args.push(texts[0]);
        if extra.contains(&"--shard") {
            args.push(texts[1]);
        }
        let out = ember(&args, None);
        assert!(!out.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
    let wrong = ember(
        &[
            "embed",
            "--model",
            m,
            "--precision",
            "int8",
            "--ranges",
            dir.path().join("int8.npy").to_str().unwrap(),
            texts[0],
        ],
        None,
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("int8.npy"), "{stderr}");
}
