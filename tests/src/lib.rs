//! Shared pieces of Ember's reference tests: fixture paths, the real-model fetch, the
//! reference-file schema, comparison metrics, and the seeded SBERT-base-shaped model.
//!
//! References come from `tests/reference/make_reference.py` (sentence-transformers, pinned in
//! `tests/reference/requirements.txt`); its small outputs are committed in `tests/fixtures/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ember_tensor::DType;
use serde::Deserialize;

/// `tests/fixtures/`, or `$EMBER_FIXTURES_DIR` (a test binary carried to another machine,
/// where the build's checkout path does not exist).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("EMBER_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}

/// The all-MiniLM-L6-v2 folder: `$EMBER_MINILM_DIR` if set, else the cache that
/// `scripts/fetch-model.sh` fills (downloading the model once if it is absent).
pub fn minilm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMBER_MINILM_DIR") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// A reference file written by `make_reference.py` for one model.
#[derive(Deserialize)]
pub struct ModelReference {
    /// The texts, in the order of the rows below.
    pub texts: Vec<String>,
    /// Each text's token ids from the Python tokenizer, `[CLS]` and `[SEP]` included (absent
    /// from older files: empty).
    #[serde(default)]
    pub input_ids: Vec<Vec<u32>>,
    /// sentence-transformers' embedding of each text, `[texts, dim]`.
    pub embeddings: Vec<Vec<f32>>,
    /// The model's `max_seq_length` when the reference was made.
    pub max_seq_length: usize,
}

/// Reads and parses `tests/fixtures/<name>`.
pub fn read_fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How close one set of embeddings is to the reference, row by row.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    /// The lowest cosine between a row and its reference (1 is identical).
    pub min_cosine: f64,
    /// The largest element-wise `|ours − reference|` over all rows; NaN if any value is NaN.
    pub max_abs_diff: f64,
    /// The row with the lowest cosine.
    pub worst_row: usize,
}

/// Per-row cosine (f64) and element-wise |diff|; NaN anywhere makes the agreement fail.
pub fn agreement(ours: &[&[f32]], reference: &[Vec<f32>]) -> Agreement {
    assert_eq!(ours.len(), reference.len(), "row count");
    let mut result = Agreement {
        min_cosine: f64::INFINITY,
        max_abs_diff: 0.0,
        worst_row: 0,
    };
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert_eq!(a.len(), b.len(), "row {i}: width");
        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        // Two all-zero rows agree exactly; `max(1e-300)` keeps that from being 0/0.
        let cosine = if na == 0.0 && nb == 0.0 {
            1.0
        } else {
            dot / (na * nb).max(1e-300)
        };
        let diff = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .fold(
                0.0,
                // NaN is sticky: `f64::max` would drop it at the next finite value.
                |m: f64, d| {
                    if m.is_nan() || d.is_nan() {
                        f64::NAN
                    } else {
                        m.max(d)
                    }
                },
            );
        let cosine = if cosine.is_nan() {
            f64::NEG_INFINITY
        } else {
            cosine
        };
        if cosine < result.min_cosine {
            result.min_cosine = cosine;
            result.worst_row = i;
        }
        if diff.is_nan() || diff > result.max_abs_diff {
            result.max_abs_diff = if diff.is_nan() { f64::INFINITY } else { diff };
        }
    }
    result
}

/// Asserts the f32 bounds: cosine ≥ 0.99999 and max |diff| ≤ 1e-4 on every row.
pub fn assert_f32_bounds(what: &str, a: Agreement) {
    println!(
        "{what}: min cosine {:.8}, max |diff| {:.3e} (worst row {})",
        a.min_cosine, a.max_abs_diff, a.worst_row
    );
    assert!(
        a.min_cosine >= 0.99999 && a.max_abs_diff <= 1e-4,
        "{what}: min cosine {} (row {}), max |diff| {} — bounds are cosine ≥ 0.99999, |diff| ≤ 1e-4",
        a.min_cosine,
        a.worst_row,
        a.max_abs_diff
    );
}

/// Asserts a reduced-precision bound: cosine ≥ `min_cosine` on every row (and no NaN).
pub fn assert_cosine_bound(what: &str, a: Agreement, min_cosine: f64) {
    println!(
        "{what}: min cosine {:.8}, max |diff| {:.3e} (worst row {})",
        a.min_cosine, a.max_abs_diff, a.worst_row
    );
    assert!(
        a.min_cosine >= min_cosine && a.max_abs_diff.is_finite(),
        "{what}: min cosine {} (row {}) — bound is cosine ≥ {min_cosine}",
        a.min_cosine,
        a.worst_row,
    );
}

/// The prompt of a sentence-transformers `encode(…, prompt_name=…, prompt=…)` call as Ember
/// spells it: `prompt=` wins over `prompt_name=`, as there; neither is the default prompt.
pub fn st_prompt<'a>(prompt: Option<&'a str>, prompt_name: Option<&'a str>) -> ember::Prompt<'a> {
    match (prompt, prompt_name) {
        (Some(text), _) => ember::Prompt::Text(text),
        (None, Some(name)) => ember::Prompt::Named(name),
        (None, None) => ember::Prompt::Default,
    }
}

/// A temporary copy of fixture `folder` with `pooling_config` as its `1_Pooling/config.json`.
pub fn copy_with_pooling(folder: &str, pooling_config: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join(folder), dir.path());
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        pooling_config.to_string(),
    )
    .unwrap();
    dir
}

/// Edits the JSON files of `dir` as tests/reference/make_reference.py's `apply_edits` does:
/// `edits` maps a file name to `{dotted key: value}` (a key of a list is an index: replaced,
/// or appended when it is the length); a value equal to `remove` (if given) removes the key
/// (or the list element) instead; a file the folder lacks starts as `{}`, and the key
/// `"$rename"` moves the file to the name it gives.
pub fn apply_edits(
    dir: &Path,
    edits: &serde_json::Map<String, serde_json::Value>,
    remove: Option<&str>,
) {
    for (file, changes) in edits {
        let path = dir.join(file);
        // A file the folder lacks starts as `{}`.
        let mut data: serde_json::Value = match path.exists() {
            true => serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap(),
            false => serde_json::json!({}),
        };
        let mut path = path;
        // "$rename": the file moves to another name (then the other edits apply).
        if let Some(to) = changes.get("$rename").and_then(|v| v.as_str()) {
            std::fs::remove_file(&path).unwrap();
            path = dir.join(to);
        }
        for (dotted, value) in changes.as_object().unwrap() {
            if dotted == "$rename" {
                continue;
            }
            let mut keys: Vec<&str> = dotted.split('.').collect();
            let last = keys.pop().unwrap();
            let mut node = &mut data;
            for key in keys {
                node = match node {
                    serde_json::Value::Array(list) => &mut list[key.parse::<usize>().unwrap()],
                    other => &mut other[key],
                };
            }
            let removing = remove.is_some() && value.as_str() == remove;
            match node {
                // An index: replace, append at the end, or remove.
                serde_json::Value::Array(list) => {
                    let index: usize = last.parse().unwrap();
                    if removing {
                        list.remove(index);
                    } else if index == list.len() {
                        list.push(value.clone());
                    } else {
                        list[index] = value.clone();
                    }
                }
                node => {
                    let object = node.as_object_mut().unwrap();
                    if removing {
                        object.remove(last);
                    } else {
                        object.insert(last.to_owned(), value.clone());
                    }
                }
            }
        }
        std::fs::write(&path, data.to_string()).unwrap();
    }
}

/// Copies a model folder (recursively) to `dest`.
pub fn copy_dir(from: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Rewrites `dir/model.safetensors` with every tensor stored as `dtype`.
pub fn convert_weights(dir: &Path, dtype: DType) {
    rewrite_weights(dir, dtype, |_| true);
}

/// Rewrites `dir/model.safetensors` keeping the tensors whose names pass `keep`, each stored as
/// `dtype`. The map is dropped before the file is replaced (never rewrite a mapped file).
pub fn rewrite_weights(dir: &Path, dtype: DType, keep: impl Fn(&str) -> bool) {
    let path = dir.join("model.safetensors");
    let file = ember_tensor::SafeTensorsFile::open(&path).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .names()
        .filter(|name| keep(name))
        .map(|name| {
            let t = file.f32_tensor(name).unwrap();
            let bytes = match dtype {
                DType::F32 => ember_tensor::f32_to_le_bytes(t.data()),
                DType::F16 => ember_tensor::f32_to_f16_bytes(t.data()),
                DType::BF16 => ember_tensor::f32_to_bf16_bytes(t.data()),
            };
            (name.to_owned(), t.shape().to_vec(), bytes)
        })
        .collect();
    drop(file);
    let views: Vec<(&str, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .map(|(n, s, b)| (n.as_str(), dtype, s.clone(), b.as_slice()))
        .collect();
    ember_tensor::write_safetensors(&path, &views).unwrap();
}

/// Writes `tensors` (name, shape, values) to `path` as an f32 safetensors file.
pub fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| ember_tensor::f32_to_le_bytes(v))
        .collect();
    let views: Vec<(&str, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.as_str(), DType::F32, s.clone(), b.as_slice()))
        .collect();
    ember_tensor::write_safetensors(path, &views).unwrap();
}

/// A STORED zip archive of `entries`, as `torch.save` writes one (without its padding and
/// zip64 records, which the reader does not need).
pub fn zip_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let (crc, len, local) = (
            ember_tensor::crc32(data),
            data.len() as u32,
            out.len() as u32,
        );
        let name_len = name.len() as u16;
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for field in [crc, len, len] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for field in [crc, len, len] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&local.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_start, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let count = entries.len() as u16;
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Whether the CUDA driver this process loaded is Ember's emulated one
/// (`target/emulated-cuda/libcuda.so`, built by scripts/emulated-cuda.sh; kernels on the CPU).
/// Ask once the driver is loaded.
pub fn emulated_driver() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| {
        maps.lines()
            .any(|line| line.ends_with("/emulated-cuda/libcuda.so"))
    })
}

pub mod broken_folders;
pub mod counting_alloc;
pub mod mixed_text;
pub mod seeded;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_anywhere_fails_the_agreement() {
        let reference = vec![vec![1.0, 2.0, 3.0]];
        let ours = [f32::NAN, 2.0, 3.0];
        let a = agreement(&[&ours], &reference);
        assert!(
            a.max_abs_diff.is_infinite() && a.min_cosine < 0.99999,
            "{a:?}"
        );
        let exact = agreement(&[&[1.0, 2.0, 3.0]], &reference);
        assert_eq!((exact.min_cosine, exact.max_abs_diff), (1.0, 0.0));
    }
}
