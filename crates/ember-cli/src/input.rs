//! Reading texts for `ember embed`: one per line, or JSON lines with a `"text"` field.
//!
//! Lines are numbered from 1 in errors. A final newline ends the last line rather than starting
//! an empty one; every other line, empty or not, is a text.

use std::io::Read;
use std::path::Path;

use crate::{CliError, InputFormat};

/// Reads all texts from `path` (standard input when `None` or `-`).
pub fn read_texts(path: Option<&Path>, format: InputFormat) -> Result<Vec<String>, CliError> {
    read_named_texts(path, format, |_| true).map(|(_, texts)| texts)
}

/// [`read_texts`], with the name errors give the source (`standard input` or the path); only
/// the texts `keep` says yes to (by 0-based index) are kept, the others left empty, though
/// every line is checked (a shard of a large corpus holds its own texts only, and fails on a
/// bad line as every other shard does).
pub fn read_named_texts(
    path: Option<&Path>,
    format: InputFormat,
    keep: impl Fn(usize) -> bool,
) -> Result<(String, Vec<String>), CliError> {
    let (name, bytes) = match path {
        None => read_stdin()?,
        Some(p) if p == Path::new("-") => read_stdin()?,
        Some(p) => {
            let name = p.display().to_string();
            let bytes = std::fs::read(p).map_err(|source| CliError::Io {
                path: name.clone(),
                source,
            })?;
            (name, bytes)
        }
    };
    let texts = parse_texts_kept(&name, &bytes, format, keep)?;
    Ok((name, texts))
}

fn read_stdin() -> Result<(String, Vec<u8>), CliError> {
    let name = "standard input".to_owned();
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|source| CliError::Io {
            path: name.clone(),
            source,
        })?;
    Ok((name, bytes))
}

/// Splits `bytes` into texts; `name` names the source in errors.
#[cfg(test)]
fn parse_texts(name: &str, bytes: &[u8], format: InputFormat) -> Result<Vec<String>, CliError> {
    parse_texts_kept(name, bytes, format, |_| true)
}

/// [`parse_texts`] keeping only the texts `keep` says yes to (the others are empty strings,
/// which allocate nothing); every line is checked all the same.
fn parse_texts_kept(
    name: &str,
    bytes: &[u8],
    format: InputFormat,
    keep: impl Fn(usize) -> bool,
) -> Result<Vec<String>, CliError> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let error = |line: usize, message: String| CliError::Input {
        source_name: name.to_owned(),
        line,
        message,
    };
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            let line = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw)
                .map_err(|e| error(line, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
            // A UTF-8 byte-order mark (Windows editors write one) is not part of text 1, as
            // Python's utf-8-sig reads it: kept, it would change that text's embedding (and
            // break its JSON).
            let text = if line == 1 {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            let owned = |text: &str| {
                if keep(i) {
                    text.to_owned()
                } else {
                    String::new()
                }
            };
            match format {
                InputFormat::Lines => Ok(owned(text)),
                InputFormat::Jsonl => {
                    if text.trim().is_empty() {
                        return Err(error(line, "empty line: expected a JSON object".into()));
                    }
                    let value: serde_json::Value = serde_json::from_str(text)
                        .map_err(|e| error(line, format!("malformed JSON: {e}")))?;
                    let Some(object) = value.as_object() else {
                        return Err(error(
                            line,
                            format!("expected a JSON object with a \"text\" field, got {value}"),
                        ));
                    };
                    match object.get("text") {
                        Some(serde_json::Value::String(s)) => Ok(owned(s)),
                        Some(other) => {
                            Err(error(line, format!("\"text\" is not a string: {other}")))
                        }
                        None => Err(error(line, "no \"text\" field".into())),
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_keeps_its_own_texts_and_checks_every_line() {
        let odd = |j: usize| j % 2 == 1;
        let texts = parse_texts_kept("f", b"a\nb\nc\nd\n", InputFormat::Lines, odd).unwrap();
        assert_eq!(texts, ["", "b", "", "d"]);
        assert!(texts[0].capacity() == 0 && texts[2].capacity() == 0);
        // A bad line another shard holds still fails this one, naming it.
        let err = parse_texts_kept("f", b"a\nb\n\xff\n", InputFormat::Lines, odd).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let jsonl = b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n";
        assert_eq!(
            parse_texts_kept("f", jsonl, InputFormat::Jsonl, odd).unwrap(),
            ["", "b"]
        );
    }

    #[test]
    fn lines_keep_empty_lines_and_drop_the_final_newline() {
        let texts = parse_texts("f", b"a\n\nb\r\nc\n", InputFormat::Lines).unwrap();
        assert_eq!(texts, ["a", "", "b", "c"]);
        assert_eq!(
            parse_texts("f", b"", InputFormat::Lines).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(parse_texts("f", b"\n", InputFormat::Lines).unwrap(), [""]);
        assert_eq!(
            parse_texts("f", b"x\0y", InputFormat::Lines).unwrap(),
            ["x\0y"]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_texts("in.txt", b"ok\n\xff\xfe\n", InputFormat::Lines).unwrap_err();
        assert_eq!(err.to_string(), "in.txt: line 2: invalid UTF-8 at byte 0");
        let err = parse_texts(
            "in.jsonl",
            b"{\"text\": \"a\"}\n{\"text\": 3}\n",
            InputFormat::Jsonl,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("in.jsonl: line 2:"), "{err}");
        let err = parse_texts(
            "in.jsonl",
            b"{\"text\": \"a\"}\n{\"id\": 1}",
            InputFormat::Jsonl,
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2: no \"text\""), "{err}");
        let err = parse_texts("in.jsonl", b"{oops", InputFormat::Jsonl).unwrap_err();
        assert!(err.to_string().contains("line 1: malformed JSON"), "{err}");
    }

    #[test]
    fn jsonl_reads_text_fields() {
        let texts = parse_texts(
            "f",
            b"{\"text\": \"a\\u0000b\", \"id\": 7}\n{\"text\": \"\"}\n",
            InputFormat::Jsonl,
        )
        .unwrap();
        assert_eq!(texts, ["a\0b", ""]);
    }
}
