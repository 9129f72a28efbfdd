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
    let cases: [(&[u8], &[&str], &str); 4] = [
        (
            b"fine\nfine\n\xff\xfe broken\n",
            &[],
            "line 3: invalid UTF-8",
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
    let output = ember(
        &[
            "search",
            "--model",
            model.to_str().unwrap(),
            "--corpus",
            corpus.to_str().unwrap(),
            "--query",
            "A cat sits on the mat.",
            "--top-k",
            "2",
        ],
        None,
    );
    assert_success(&output);
    let hits: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["line"], 2);
    assert_eq!(hits[0]["rank"], 1);
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert!(hits[0]["score"].as_f64().unwrap() >= hits[1]["score"].as_f64().unwrap());
}

#[test]
fn search_saves_and_reuses_the_corpus_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "a cat sits\na dog runs\nstocks fell\n").unwrap();
    let matrix = dir.path().join("corpus.npy");
    let model = tiny_model();
    let search = |corpus: &Path| {
        ember(
            &[
                "search",
                "--model",
                model.to_str().unwrap(),
                "--corpus",
                corpus.to_str().unwrap(),
                "--query",
                "a cat",
                "--top-k",
                "3",
                "--matrix",
                matrix.to_str().unwrap(),
            ],
            None,
        )
    };
    let first = search(&corpus);
    assert_success(&first);
    assert!(matrix.exists(), "the matrix was not saved");
    let second = search(&corpus);
    assert_success(&second);
    assert_eq!(
        first.stdout, second.stdout,
        "reusing the matrix changed the hits"
    );

    // A matrix that does not fit the corpus is refused, naming the file.
    let shorter = dir.path().join("shorter.txt");
    std::fs::write(&shorter, "a cat sits\n").unwrap();
    let refused = search(&shorter);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("corpus.npy") && stderr.contains("3 rows"),
        "{stderr}"
    );

    // So is a damaged one.
    let bytes = std::fs::read(&matrix).unwrap();
    std::fs::write(&matrix, &bytes[..bytes.len() - 3]).unwrap();
    let damaged = search(&corpus);
    assert!(!damaged.status.success());
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert!(
        stderr.contains("corpus.npy") && stderr.contains("data bytes"),
        "{stderr}"
    );
}
