//! Model folders broken in one way each, made from the good tiny model: the case table that
//! `tests/broken_folders.rs` (every case refused with an error naming the file and the fault)
//! and `tests/broken_folder_allocations.rs` (no case allocates more than its files justify)
//! both run.
//!
//! A case is a name, a mutation of a fresh copy of `tests/fixtures/tiny-bert`, the file (relative
//! to the folder) whose full path the error must contain, and fragments the message must also
//! contain. The header and placement corruptions of `model.safetensors` are tested one by one,
//! against the reference reader, in `crates/ember-tensor/tests/safetensors.rs`; the ones here
//! check that they surface through `Embedder` with the file named.

use std::path::{Path, PathBuf};

use ember_tensor::{f32_to_le_bytes, write_safetensors, DType};
use serde_json::{json, Map, Value};

use crate::{copy_dir, fixtures_dir, rewrite_weights, zip_archive};

/// One broken folder.
pub struct BrokenFolder {
    /// Printable name: `<file>/<what is wrong>`.
    pub name: &'static str,
    /// Breaks a copy of the good folder in place.
    pub break_folder: fn(&Path),
    /// The file the error must name, relative to the folder (`""`: the folder itself).
    pub file: &'static str,
    /// What else the message must say.
    pub says: &'static [&'static str],
}

impl BrokenFolder {
    /// A fresh copy of the tiny model, broken by this case.
    pub fn make(&self) -> tempfile::TempDir {
        self.make_from(&fixtures_dir().join("tiny-bert"))
    }

    /// A fresh copy of the good folder `good` (any BERT sentence-transformers folder with
    /// `model.safetensors`), broken by this case.
    pub fn make_from(&self, good: &Path) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(good, dir.path());
        (self.break_folder)(dir.path());
        dir
    }

    /// The path the error must contain.
    pub fn named_path(&self, dir: &Path) -> PathBuf {
        if self.file.is_empty() {
            dir.to_owned()
        } else {
            dir.join(self.file)
        }
    }

    /// `Ok` if `message` names the file and says every fragment; otherwise what is missing.
    pub fn check_message(&self, dir: &Path, message: &str) -> Result<(), String> {
        let path = self.named_path(dir).display().to_string();
        let missing: Vec<&str> = std::iter::once(path.as_str())
            .chain(self.says.iter().copied())
            .filter(|fragment| !message.contains(fragment))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("message lacks {missing:?}: {message}"))
        }
    }
}

/// Total bytes of the files under `dir`.
pub fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                folder_bytes(&entry.path())
            } else {
                entry.metadata().unwrap().len()
            }
        })
        .sum()
}

fn write(dir: &Path, file: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(dir.join(file), bytes).unwrap();
}

fn remove(dir: &Path, file: &str) {
    std::fs::remove_file(dir.join(file)).unwrap();
}

/// Sets (or with `None` removes) `key` of the JSON object in `dir/file`.
fn set_key(dir: &Path, file: &str, key: &str, value: Option<Value>) {
    let path = dir.join(file);
    let mut object: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    match value {
        Some(value) => object.insert(key.to_owned(), value),
        None => object.remove(key),
    };
    std::fs::write(&path, serde_json::to_string_pretty(&object).unwrap()).unwrap();
}

/// Edits the JSON value in `dir/file` through `edit`.
fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut Value)) {
    let path = dir.join(file);
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, value.to_string()).unwrap();
}

fn set_config(dir: &Path, key: &str, value: Value) {
    set_key(dir, "config.json", key, Some(value));
}

fn set_pooling(dir: &Path, key: &str, value: Value) {
    set_key(dir, "1_Pooling/config.json", key, Some(value));
}

fn set_sbert(dir: &Path, key: &str, value: Value) {
    set_key(dir, "sentence_bert_config.json", key, Some(value));
}

fn set_tokenizer_config(dir: &Path, key: &str, value: Value) {
    set_key(dir, "tokenizer_config.json", key, Some(value));
}

/// Names a special token in `tokenizer_config.json` only: where the folder has a
/// `special_tokens_map.json`, which transformers lays over the config's, its entry goes.
fn set_special_token(dir: &Path, key: &str, value: Value) {
    set_tokenizer_config(dir, key, value);
    if dir.join("special_tokens_map.json").exists() {
        set_key(dir, "special_tokens_map.json", key, None);
    }
}

/// Leaves `vocab.txt` as the tokenizer (a folder's `tokenizer.json` takes precedence).
fn vocab_only(dir: &Path) {
    remove(dir, "tokenizer.json");
}

/// `model.safetensors` as `(header length, header object, data section)`.
fn read_weights(dir: &Path) -> (usize, Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    (header_len, header, bytes[8 + header_len..].to_vec())
}

/// The byte length of tensor `name`'s range in a safetensors header.
fn entry_bytes(header: &Map<String, Value>, name: &str) -> usize {
    let offsets = &header[name]["data_offsets"];
    (offsets[1].as_u64().unwrap() - offsets[0].as_u64().unwrap()) as usize
}

/// `num_hidden_layers` of the folder's `config.json`.
fn config_layers(dir: &Path) -> u64 {
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"].as_u64().unwrap()
}

fn write_weights(dir: &Path, header: &Map<String, Value>, data: &[u8]) {
    let header = serde_json::to_vec(header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    write(dir, "model.safetensors", bytes);
}

/// Rewrites the header of `model.safetensors` through `edit`, keeping the data section.
fn edit_header(dir: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let (_, mut header, data) = read_weights(dir);
    edit(&mut header);
    write_weights(dir, &header, &data);
}

/// Sets field `key` of tensor `tensor`'s header entry.
fn set_entry(dir: &Path, tensor: &str, key: &str, value: Value) {
    edit_header(dir, |header| {
        header[tensor][key] = value;
    });
}

/// Edits the raw bytes of `model.safetensors`.
fn edit_weight_bytes(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

fn set_modules(dir: &Path, modules: Value) {
    write(dir, "modules.json", modules.to_string());
}

/// The folder's `hidden_size` (the pooled width under one mode).
fn hidden_size(dir: &Path) -> u64 {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["hidden_size"].as_u64().unwrap()
}

/// Lists a Dense module (`2_Dense`) after Pooling, with `config` as its config.json if given
/// (and no weights).
fn set_dense(dir: &Path, config: Option<Value>) {
    set_modules(
        dir,
        json!([
            { "type": TRANSFORMER, "path": "" },
            { "type": POOLING, "path": "1_Pooling" },
            { "type": "sentence_transformers.models.Dense", "path": "2_Dense" },
        ]),
    );
    if let Some(config) = config {
        std::fs::create_dir_all(dir.join("2_Dense")).unwrap();
        write(dir, "2_Dense/config.json", config.to_string());
    }
}

const TRANSFORMER: &str = "sentence_transformers.models.Transformer";
const POOLING: &str = "sentence_transformers.models.Pooling";

/// A config and weights that agree with each other and are within every config bound, but
/// whose `hidden_size` of 2^16 would size a `[3H, H]` fused Q/K/V buffer of 48 GiB from 1 MB
/// of embeddings if anything were allocated before the layer's tensors were checked.
fn huge_hidden_small_file(dir: &Path) {
    let h = 1 << 16;
    for (key, value) in [
        ("hidden_size", h),
        ("num_attention_heads", 1),
        ("num_hidden_layers", 1),
        ("intermediate_size", 1),
        ("vocab_size", 1),
        ("max_position_embeddings", 1),
        ("type_vocab_size", 1),
    ] {
        set_config(dir, key, json!(value));
    }
    let row = f32_to_le_bytes(&vec![0.5f32; h]);
    let tensors: Vec<(&str, DType, Vec<usize>, &[u8])> = [
        ("embeddings.word_embeddings.weight", vec![1, h]),
        ("embeddings.position_embeddings.weight", vec![1, h]),
        ("embeddings.token_type_embeddings.weight", vec![1, h]),
        ("embeddings.LayerNorm.weight", vec![h]),
        ("embeddings.LayerNorm.bias", vec![h]),
    ]
    .into_iter()
    .map(|(name, shape)| (name, DType::F32, shape, row.as_slice()))
    .collect();
    write_safetensors(dir.join("model.safetensors"), &tensors).unwrap();
}

/// Every tensor renamed `bert.<name>` (as `BertModel.save_pretrained` of a task model names
/// them), and the word-embedding table's bytes declared F64 (half as many columns): the prefix
/// must be recognised from a table of any dtype, so that the table is refused for its dtype
/// under its real name rather than `embeddings.word_embeddings.weight` reported missing.
fn prefixed_f64_word_table(dir: &Path) {
    edit_header(dir, |header| {
        for (name, mut entry) in std::mem::take(header) {
            if name == "__metadata__" {
                header.insert(name, entry);
                continue;
            }
            if name == "embeddings.word_embeddings.weight" {
                let columns = entry["shape"][1].as_u64().unwrap();
                entry["shape"][1] = json!(columns / 2);
                entry["dtype"] = json!("F64");
            }
            header.insert(format!("bert.{name}"), entry);
        }
    });
}

/// `model.safetensors` replaced by a 2 MiB `pytorch_model.bin` whose pickle is `PROTO 2` and
/// then 2^21 EMPTY_LISTs, with no STOP. Each 1-byte opcode kept an arena slot and a stack
/// value: uncapped, the arena alone asked for 151 MB at once (10 MB of them: 1 GiB), where the
/// interpreter now stops at 2^20 objects.
fn empty_list_flood_torch_bin(dir: &Path) {
    remove(dir, "model.safetensors");
    let mut pickle = vec![0x80, 2];
    pickle.resize(2 + (2 << 20), b']');
    let archive = zip_archive(&[
        ("pytorch_model/data.pkl", &pickle),
        ("pytorch_model/byteorder", b"little"),
    ]);
    write(dir, "pytorch_model.bin", archive);
}

/// Every broken folder, grouped by the file at fault.
pub fn cases() -> Vec<BrokenFolder> {
    macro_rules! case {
        ($name:expr, $file:expr, [$($says:expr),* $(,)?], $break_folder:expr) => {
            BrokenFolder {
                name: $name,
                break_folder: $break_folder,
                file: $file,
                says: &[$($says),*],
            }
        };
    }
    const WEIGHTS: &str = "model.safetensors";
    const CONFIG: &str = "config.json";
    const TOKENIZER: &str = "tokenizer.json";
    const VOCAB: &str = "vocab.txt";
    const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
    const MODULES: &str = "modules.json";
    const POOLING_CONFIG: &str = "1_Pooling/config.json";
    const SBERT: &str = "sentence_bert_config.json";
    const ST_CONFIG: &str = "config_sentence_transformers.json";
    vec![
        // ---- model.safetensors: the file and its header ----------------------------------
        // No weights file at all: the error names the folder and both accepted names.
        case!(
            "weights/missing",
            "",
            ["neither model.safetensors nor pytorch_model.bin"],
            |d| remove(d, WEIGHTS)
        ),
        case!("weights/empty", WEIGHTS, ["0 bytes, too short"], |d| write(
            d, WEIGHTS, b""
        )),
        case!("weights/4 bytes", WEIGHTS, ["4 bytes, too short"], |d| {
            edit_weight_bytes(d, |b| b.truncate(4))
        }),
        case!(
            "weights/truncated in the header",
            WEIGHTS,
            ["runs past the end"],
            |d| { edit_weight_bytes(d, |b| b.truncate(100)) }
        ),
        case!(
            "weights/truncated in the data",
            WEIGHTS,
            ["run past the end of the"],
            |d| { edit_weight_bytes(d, |b| b.truncate(b.len() / 2)) }
        ),
        case!(
            "weights/last byte missing",
            WEIGHTS,
            ["run past the end of the"],
            |d| {
                edit_weight_bytes(d, |b| {
                    b.pop();
                })
            }
        ),
        case!(
            "weights/trailing bytes",
            WEIGHTS,
            ["cover only the first"],
            |d| { edit_weight_bytes(d, |b| b.extend_from_slice(&[0; 12])) }
        ),
        case!(
            "weights/header length past the file",
            WEIGHTS,
            ["runs past the end"],
            |d| {
                edit_weight_bytes(d, |b| {
                    let past = b.len() as u64;
                    b[..8].copy_from_slice(&past.to_le_bytes());
                })
            }
        ),
        case!(
            "weights/header length 2^64 - 1",
            WEIGHTS,
            ["exceeds the"],
            |d| { edit_weight_bytes(d, |b| b[..8].copy_from_slice(&u64::MAX.to_le_bytes())) }
        ),
        case!(
            "weights/header not JSON",
            WEIGHTS,
            ["header is not valid JSON"],
            |d| { edit_weight_bytes(d, |b| b[8..16].copy_from_slice(b"garbage!")) }
        ),
        case!(
            "weights/header not UTF-8",
            WEIGHTS,
            ["header is not UTF-8"],
            |d| { edit_weight_bytes(d, |b| b[9] = 0xff) }
        ),
        case!(
            "weights/header a JSON array",
            WEIGHTS,
            ["must be a JSON object"],
            |d| {
                let (_, _, data) = read_weights(d);
                let mut bytes = 2u64.to_le_bytes().to_vec();
                bytes.extend_from_slice(b"[]");
                bytes.extend_from_slice(&data);
                write(d, WEIGHTS, bytes);
            }
        ),
        // ---- model.safetensors: entries ---------------------------------------------------
        case!(
            "weights/range past the end",
            WEIGHTS,
            ["embeddings.LayerNorm.bias", "run past the end of the"],
            |d| {
                let (_, header, data) = read_weights(d);
                let len = entry_bytes(&header, "embeddings.LayerNorm.bias");
                let end = data.len() + len;
                set_entry(
                    d,
                    "embeddings.LayerNorm.bias",
                    "data_offsets",
                    json!([end - len, end]),
                );
            }
        ),
        case!(
            "weights/range reversed",
            WEIGHTS,
            ["embeddings.LayerNorm.weight", "end before they begin"],
            |d| set_entry(
                d,
                "embeddings.LayerNorm.weight",
                "data_offsets",
                json!([416, 208])
            )
        ),
        case!(
            "weights/ranges overlapping",
            WEIGHTS,
            ["embeddings.LayerNorm", "overlaps tensor"],
            |d| {
                let (_, header, _) = read_weights(d);
                let len = entry_bytes(&header, "embeddings.LayerNorm.weight");
                // Over the first tensor of the data section (never this one in a real file).
                set_entry(
                    d,
                    "embeddings.LayerNorm.weight",
                    "data_offsets",
                    json!([0, len]),
                )
            }
        ),
        case!(
            "weights/shape × dtype ≠ bytes",
            WEIGHTS,
            [
                "embeddings.LayerNorm.weight",
                "needs 212 bytes but data_offsets give 208"
            ],
            |d| set_entry(d, "embeddings.LayerNorm.weight", "shape", json!([53]))
        ),
        case!(
            "weights/F16 dtype on F32 bytes",
            WEIGHTS,
            ["embeddings.LayerNorm.weight", "needs 104 bytes"],
            |d| set_entry(d, "embeddings.LayerNorm.weight", "dtype", json!("F16"))
        ),
        case!(
            "weights/unknown dtype",
            WEIGHTS,
            [
                "embeddings.LayerNorm.weight",
                "dtype \"F33\" is not supported"
            ],
            |d| set_entry(d, "embeddings.LayerNorm.weight", "dtype", json!("F33"))
        ),
        case!(
            "weights/I32 weight",
            WEIGHTS,
            [
                "embeddings.LayerNorm.weight",
                "dtype \"I32\" is not supported"
            ],
            |d| set_entry(d, "embeddings.LayerNorm.weight", "dtype", json!("I32"))
        ),
        case!(
            "weights/shape overflows",
            WEIGHTS,
            ["embeddings.LayerNorm.weight", "overflows usize"],
            |d| set_entry(
                d,
                "embeddings.LayerNorm.weight",
                "shape",
                json!([1u64 << 40, 1u64 << 40])
            )
        ),
        case!(
            "weights/negative offset",
            WEIGHTS,
            ["embeddings.LayerNorm.weight", "two non-negative integers"],
            |d| set_entry(
                d,
                "embeddings.LayerNorm.weight",
                "data_offsets",
                json!([-208, 416])
            )
        ),
        case!(
            "weights/float in a shape",
            WEIGHTS,
            [
                "embeddings.LayerNorm.weight",
                "\"shape\" must be an array of non-negative integers"
            ],
            |d| set_entry(d, "embeddings.LayerNorm.weight", "shape", json!([52.0]))
        ),
        case!(
            "weights/entry not an object",
            WEIGHTS,
            [
                "embeddings.LayerNorm.weight",
                "must be a JSON object, found a string"
            ],
            |d| edit_header(d, |h| {
                h["embeddings.LayerNorm.weight"] = json!("F32");
            })
        ),
        case!(
            "weights/entry without dtype",
            WEIGHTS,
            ["embeddings.LayerNorm.weight", "missing \"dtype\""],
            |d| edit_header(d, |h| {
                h["embeddings.LayerNorm.weight"]
                    .as_object_mut()
                    .unwrap()
                    .remove("dtype");
            })
        ),
        case!(
            "weights/metadata not strings",
            WEIGHTS,
            ["__metadata__", "mapping strings to strings"],
            |d| edit_header(d, |h| {
                h.insert("__metadata__".into(), json!({ "format": 1 }));
            })
        ),
        case!(
            "weights/tensor missing",
            WEIGHTS,
            ["missing tensor \"encoder.layer.1.intermediate.dense.bias\""],
            |d| rewrite_weights(d, DType::F32, |name| {
                name != "encoder.layer.1.intermediate.dense.bias"
            })
        ),
        case!(
            "weights/prefixed names, F64 word table",
            WEIGHTS,
            [
                "tensor \"bert.embeddings.word_embeddings.weight\"",
                "dtype \"F64\" is not supported"
            ],
            prefixed_f64_word_table
        ),
        case!(
            "weights/pytorch_model.bin of 2 MiB of EMPTY_LIST",
            "pytorch_model.bin",
            [
                "pytorch_model/data.pkl",
                "more than 1048576 objects",
                "refused as hostile"
            ],
            empty_list_flood_torch_bin
        ),
        case!(
            "weights/weight transposed",
            WEIGHTS,
            [
                "encoder.layer.0.intermediate.dense.weight",
                "[52, 76]",
                "config.json implies [76, 52]"
            ],
            |d| set_entry(
                d,
                "encoder.layer.0.intermediate.dense.weight",
                "shape",
                json!([52, 76])
            )
        ),
        // ---- config.json against the tensors ---------------------------------------------
        case!(
            "config/hidden_size ≠ tensors",
            WEIGHTS,
            [
                "embeddings.word_embeddings.weight",
                "config.json implies [2601, 56]"
            ],
            // Still a multiple of the head count, so that the tensors are what disagree.
            |d| {
                let config: Value =
                    serde_json::from_slice(&std::fs::read(d.join(CONFIG)).unwrap()).unwrap();
                let (hidden, heads) = (&config["hidden_size"], &config["num_attention_heads"]);
                let wider = hidden.as_u64().unwrap() + heads.as_u64().unwrap();
                set_config(d, "hidden_size", json!(wider))
            }
        ),
        case!(
            "config/max_position_embeddings ≠ tensors",
            WEIGHTS,
            [
                "embeddings.position_embeddings.weight",
                "config.json implies [128, 52]"
            ],
            |d| set_config(d, "max_position_embeddings", json!(128))
        ),
        case!(
            "config/vocab_size ≠ tensors",
            WEIGHTS,
            [
                "embeddings.word_embeddings.weight",
                "config.json implies [2600, 52]"
            ],
            |d| set_config(d, "vocab_size", json!(2600))
        ),
        case!(
            "config/type_vocab_size ≠ tensors",
            WEIGHTS,
            [
                "embeddings.token_type_embeddings.weight",
                "config.json implies [3, 52]"
            ],
            |d| set_config(d, "type_vocab_size", json!(3))
        ),
        case!(
            "config/intermediate_size ≠ tensors",
            WEIGHTS,
            [
                "encoder.layer.0.intermediate.dense.weight",
                "config.json implies [80, 52]"
            ],
            |d| set_config(d, "intermediate_size", json!(80))
        ),
        case!(
            "config/one layer more than the tensors",
            WEIGHTS,
            ["missing tensor \"encoder.layer.2.attention.self.query.weight\""],
            |d| set_config(d, "num_hidden_layers", json!(config_layers(d) + 1))
        ),
        case!(
            "config/one layer fewer than the tensors",
            WEIGHTS,
            ["encoder.layer.1.", "num_hidden_layers = 1"],
            |d| set_config(d, "num_hidden_layers", json!(config_layers(d) - 1))
        ),
        case!(
            "config/hidden 2^16 with 1 MB of weights",
            WEIGHTS,
            ["missing tensor \"encoder.layer.0.attention.self.query.weight\""],
            huge_hidden_small_file
        ),
        // ---- config.json on its own ------------------------------------------------------
        case!("config/missing", CONFIG, ["No such file"], |d| remove(
            d, CONFIG
        )),
        case!("config/empty", CONFIG, ["EOF"], |d| write(d, CONFIG, b"")),
        case!("config/not JSON", CONFIG, ["key must be a string"], |d| {
            write(d, CONFIG, "{ not json")
        }),
        case!("config/not UTF-8", CONFIG, ["UTF-8"], |d| write(
            d,
            CONFIG,
            b"{\"\xff\": 1}"
        )),
        case!(
            "config/a JSON array",
            CONFIG,
            ["must be a JSON object"],
            |d| { write(d, CONFIG, "[]") }
        ),
        case!(
            "config/hidden_size missing",
            CONFIG,
            ["missing \"hidden_size\""],
            |d| { set_key(d, CONFIG, "hidden_size", None) }
        ),
        case!(
            "config/heads do not divide hidden",
            CONFIG,
            ["num_attention_heads = 5 does not divide hidden_size = 52"],
            |d| set_config(d, "num_attention_heads", json!(5))
        ),
        case!(
            "config/10^9 layers",
            CONFIG,
            ["\"num_hidden_layers\" = 1000000000 is outside 1..="],
            |d| set_config(d, "num_hidden_layers", json!(1_000_000_000))
        ),
        case!(
            "config/hidden 2^40",
            CONFIG,
            ["\"hidden_size\" = 1099511627776 is outside 1..="],
            |d| set_config(d, "hidden_size", json!(1u64 << 40))
        ),
        case!(
            "config/vocab 2^40",
            CONFIG,
            ["\"vocab_size\" = 1099511627776 is outside 1..="],
            |d| set_config(d, "vocab_size", json!(1u64 << 40))
        ),
        case!(
            "config/intermediate 10^12",
            CONFIG,
            ["\"intermediate_size\" = 1000000000000 is outside 1..="],
            |d| set_config(d, "intermediate_size", json!(1_000_000_000_000u64))
        ),
        case!(
            "config/positions 2^40",
            CONFIG,
            ["\"max_position_embeddings\" = 1099511627776 is outside 1..="],
            |d| set_config(d, "max_position_embeddings", json!(1u64 << 40))
        ),
        case!(
            "config/hidden_size 0",
            CONFIG,
            ["\"hidden_size\" = 0 is outside 1..="],
            |d| set_config(d, "hidden_size", json!(0))
        ),
        case!(
            "config/negative hidden_size",
            CONFIG,
            ["\"hidden_size\"", "-52"],
            |d| set_config(d, "hidden_size", json!(-52))
        ),
        case!(
            "config/float hidden_size",
            CONFIG,
            ["\"hidden_size\"", "52.0"],
            |d| set_config(d, "hidden_size", json!(52.0))
        ),
        case!(
            "config/string num_hidden_layers",
            CONFIG,
            ["\"num_hidden_layers\"", "\"2\""],
            |d| set_config(d, "num_hidden_layers", json!("2"))
        ),
        case!(
            "config/string layer_norm_eps",
            CONFIG,
            ["\"layer_norm_eps\"", "\"tiny\""],
            |d| set_config(d, "layer_norm_eps", json!("tiny"))
        ),
        case!(
            "config/layer_norm_eps 0",
            CONFIG,
            ["layer_norm_eps = 0 is not in (0, 1)"],
            |d| { set_config(d, "layer_norm_eps", json!(0)) }
        ),
        case!(
            "config/hidden_act mish",
            CONFIG,
            ["hidden_act \"mish\" is not supported"],
            |d| { set_config(d, "hidden_act", json!("mish")) }
        ),
        case!(
            "config/hidden_act a number",
            CONFIG,
            ["\"hidden_act\"", "7"],
            |d| { set_config(d, "hidden_act", json!(7)) }
        ),
        case!(
            "config/relative positions",
            CONFIG,
            ["position_embedding_type \"relative_key\" is not supported"],
            |d| set_config(d, "position_embedding_type", json!("relative_key"))
        ),
        case!(
            "config/model_type gpt2",
            CONFIG,
            ["model_type \"gpt2\" is not supported"],
            |d| { set_config(d, "model_type", json!("gpt2")) }
        ),
        case!(
            "config/roberta padding past the positions",
            CONFIG,
            ["pad_token_id = 600", "no row of the 64 position embeddings"],
            |d| {
                set_config(d, "model_type", json!("roberta"));
                set_config(d, "pad_token_id", json!(600))
            }
        ),
        case!(
            "config/roberta padding id not a number",
            CONFIG,
            ["\"pad_token_id\" = \"1\" is not a token id"],
            |d| {
                set_config(d, "model_type", json!("xlm-roberta"));
                set_config(d, "pad_token_id", json!("1"))
            }
        ),
        // ---- tokenizer.json, vocab.txt, tokenizer_config.json ----------------------------
        case!(
            "tokenizer.json/empty",
            TOKENIZER,
            ["not valid JSON", "EOF"],
            |d| write(d, TOKENIZER, b"")
        ),
        case!(
            "tokenizer.json/not JSON",
            TOKENIZER,
            ["not valid JSON", "key must be a string"],
            |d| write(d, TOKENIZER, "{ not json")
        ),
        // Found by the tokenizer_files fuzz target: the tokenizers crate panicked on it.
        case!(
            "tokenizer.json/control character inside the decoder",
            TOKENIZER,
            ["not valid JSON", "control character"],
            |d| edit_text_bytes(d, TOKENIZER, b"\"prefix\": \"##\"", b"\"prefix\": \"#\t#\"")
        ),
        // Found by the tokenizer_files fuzz target: the tokenizers crate panicked on every text.
        // (As PreTrainedTokenizerFast: BertTokenizer would not use the file's post-processor.)
        case!(
            "tokenizer.json/template token not among the special tokens",
            TOKENIZER,
            ["single template uses special token \"[SEP]\""],
            |d| {
                set_tokenizer_config(d, "tokenizer_class", json!("PreTrainedTokenizerFast"));
                edit_json(d, TOKENIZER, |t| {
                    t["post_processor"]["special_tokens"]
                        .as_object_mut()
                        .unwrap()
                        .remove("[SEP]");
                })
            }
        ),
        case!(
            "tokenizer.json/Precompiled normaliser with a number for a charsmap",
            TOKENIZER,
            ["precompiled_charsmap is a number, not a base64 string"],
            |d| edit_json(d, TOKENIZER, |t| {
                t["normalizer"] = json!({ "type": "Precompiled", "precompiled_charsmap": 5 });
            })
        ),
        case!(
            "tokenizer.json/version a number",
            TOKENIZER,
            ["invalid type: integer `7`"],
            |d| { write(d, TOKENIZER, "{\"version\": 7}") }
        ),
        case!(
            "tokenizer.json/no model",
            TOKENIZER,
            ["tokenizer:", "Model missing"],
            |d| { set_key(d, TOKENIZER, "model", None) }
        ),
        // As PreTrainedTokenizerFast: BertTokenizer takes its unknown token from the config.
        case!(
            "tokenizer.json/unk_token not in the vocabulary",
            TOKENIZER,
            ["unknown token \"<unk>\" is not in the vocabulary"],
            |d| {
                set_tokenizer_config(d, "tokenizer_class", json!("PreTrainedTokenizerFast"));
                edit_text_bytes(
                    d,
                    TOKENIZER,
                    b"\"unk_token\": \"[UNK]\"",
                    b"\"unk_token\": \"<unk>\"",
                )
            }
        ),
        case!(
            "tokenizer_config.json/unk_token not in the vocabulary (BertTokenizer)",
            TOKENIZER_CONFIG,
            ["special token \"<unk>\"", "is not in the vocabulary"],
            |d| set_special_token(d, "unk_token", json!("<unk>"))
        ),
        case!(
            "special_tokens_map.json/unk_token not in the vocabulary",
            "special_tokens_map.json",
            ["special token \"<unk>\"", "is not in the vocabulary"],
            |d| set_key(
                d,
                "special_tokens_map.json",
                "unk_token",
                Some(json!("<unk>"))
            )
        ),
        case!(
            "tokenizer_config/tokenizer_class of another model kind",
            TOKENIZER_CONFIG,
            ["RobertaTokenizer", "byte-level BPE", "model is WordPiece"],
            |d| set_tokenizer_config(d, "tokenizer_class", json!("RobertaTokenizer"))
        ),
        case!(
            "added_tokens.json/an id that is not a number",
            "added_tokens.json",
            ["\"world\"", "is not a token id"],
            |d| write(d, "added_tokens.json", "{\"world\": \"seven\"}")
        ),
        case!(
            "sentence_bert_config.json/tokenizer_args a string",
            "sentence_bert_config.json",
            ["\"tokenizer_args\"", "is not an object"],
            |d| set_key(
                d,
                "sentence_bert_config.json",
                "tokenizer_args",
                Some(json!("lower"))
            )
        ),
        case!(
            "special_tokens_map.json/not JSON",
            "special_tokens_map.json",
            ["not valid JSON"],
            |d| write(d, "special_tokens_map.json", "{\"unk_token\": ")
        ),
        case!(
            "special_tokens_map.json/unk_token a list",
            "special_tokens_map.json",
            ["\"unk_token\"", "is not a token"],
            |d| set_key(
                d,
                "special_tokens_map.json",
                "unk_token",
                Some(json!(["[UNK]"]))
            )
        ),
        case!(
            "tokenizer_config/added_tokens_decoder entry without content",
            TOKENIZER_CONFIG,
            ["\"added_tokens_decoder\" entry 100", "\"content\""],
            |d| set_tokenizer_config(
                d,
                "added_tokens_decoder",
                json!({"100": {"lstrip": false, "special": true}})
            )
        ),
        case!(
            "tokenizer_config/added_tokens_decoder key not an id",
            TOKENIZER_CONFIG,
            ["\"added_tokens_decoder\"", "\"unk\"", "not an id"],
            |d| set_tokenizer_config(
                d,
                "added_tokens_decoder",
                json!({"unk": {"content": "[UNK]", "special": true}})
            )
        ),
        case!(
            "tokenizer.json/not UTF-8",
            TOKENIZER,
            ["cannot read", "UTF-8"],
            |d| { edit_text_bytes(d, TOKENIZER, b"[PAD]", b"[P\xffD]") }
        ),
        case!(
            "tokenizer.json/ids past the embeddings",
            TOKENIZER,
            ["id 2601", "vocab_size 2601"],
            |d| {
                // The first id past the embedding table, whatever the model's vocabulary.
                let config: Value =
                    serde_json::from_slice(&std::fs::read(d.join(CONFIG)).unwrap()).unwrap();
                let past = config["vocab_size"].as_u64().unwrap();
                let to = format!("\"[unused0]\": {past}");
                edit_text_bytes(d, TOKENIZER, b"\"[unused0]\": 1", to.as_bytes())
            }
        ),
        case!(
            "vocab.txt/no [CLS]",
            VOCAB,
            ["\"[CLS]\" is not in the vocabulary"],
            |d| {
                vocab_only(d);
                write(d, VOCAB, "[UNK]\n[SEP]\nwords\n");
            }
        ),
        case!(
            "vocab.txt/empty",
            VOCAB,
            ["is not in the vocabulary"],
            |d| {
                vocab_only(d);
                write(d, VOCAB, b"");
            }
        ),
        case!("vocab.txt/not UTF-8", VOCAB, ["tokenizer:"], |d| {
            vocab_only(d);
            edit_text_bytes(d, VOCAB, b"[PAD]", b"[P\xffD]");
        }),
        case!(
            "vocab.txt/more words than the embeddings",
            VOCAB,
            ["id 2601", "vocab_size 2601"],
            |d| {
                vocab_only(d);
                let mut vocab = std::fs::read_to_string(d.join(VOCAB)).unwrap();
                vocab.push_str("onemoreword\n");
                write(d, VOCAB, vocab);
            }
        ),
        case!(
            "vocab.txt/missing too",
            "",
            ["neither tokenizer.json nor vocab.txt"],
            |d| {
                vocab_only(d);
                remove(d, VOCAB);
            }
        ),
        case!(
            "tokenizer_config/not JSON",
            TOKENIZER_CONFIG,
            ["not valid JSON"],
            |d| { write(d, TOKENIZER_CONFIG, "{ not json") }
        ),
        case!(
            "tokenizer_config/a JSON array",
            TOKENIZER_CONFIG,
            ["expected a JSON object"],
            |d| { write(d, TOKENIZER_CONFIG, "[]") }
        ),
        case!(
            "tokenizer_config/string do_lower_case",
            TOKENIZER_CONFIG,
            ["\"do_lower_case\"", "\"yes\""],
            |d| {
                vocab_only(d);
                set_tokenizer_config(d, "do_lower_case", json!("yes"));
            }
        ),
        case!(
            "tokenizer_config/negative model_max_length",
            TOKENIZER_CONFIG,
            ["\"model_max_length\"", "-5"],
            |d| set_tokenizer_config(d, "model_max_length", json!(-5))
        ),
        case!(
            "tokenizer_config/unk_token not in vocab.txt",
            VOCAB,
            ["special token \"<unk>\" is not in the vocabulary"],
            |d| {
                vocab_only(d);
                set_special_token(d, "unk_token", json!("<unk>"));
            }
        ),
        case!(
            "tokenizer_config/unk_token a number",
            TOKENIZER_CONFIG,
            ["\"unk_token\"", "3"],
            |d| {
                vocab_only(d);
                set_tokenizer_config(d, "unk_token", json!(3));
            }
        ),
        // ---- modules.json ----------------------------------------------------------------
        case!("modules/not JSON", MODULES, ["not valid JSON"], |d| write(
            d, MODULES, "[{"
        )),
        case!(
            "modules/an object",
            MODULES,
            ["expected a JSON list of modules"],
            |d| { write(d, MODULES, "{}") }
        ),
        case!(
            "modules/empty list",
            MODULES,
            ["no Transformer module"],
            |d| { write(d, MODULES, "[]") }
        ),
        case!("modules/module not an object", MODULES, ["module 0"], |d| {
            write(d, MODULES, "[\"Transformer\"]")
        }),
        case!(
            "modules/module without type",
            MODULES,
            ["module 0 has no \"type\""],
            |d| { set_modules(d, json!([{ "path": "" }])) }
        ),
        case!(
            "modules/type a number",
            MODULES,
            ["module 0 has no \"type\""],
            |d| { set_modules(d, json!([{ "type": 7, "path": "" }])) }
        ),
        case!(
            "modules/path a number",
            MODULES,
            ["module 1", "\"path\""],
            |d| {
                set_modules(
                    d,
                    json!([{ "type": TRANSFORMER, "path": "" }, { "type": POOLING, "path": 1 }]),
                )
            }
        ),
        case!(
            "dense/listed without its folder",
            "2_Dense/config.json",
            ["No such file"],
            |d| set_dense(d, None)
        ),
        case!(
            "dense/unknown activation",
            "2_Dense/config.json",
            ["activation_function", "Softsign", "not supported"],
            |d| set_dense(
                d,
                Some(
                    json!({"in_features": hidden_size(d), "out_features": 8, "bias": true,
                            "activation_function": "torch.nn.modules.activation.Softsign"})
                )
            )
        ),
        case!(
            "dense/activation outside torch",
            "2_Dense/config.json",
            ["activation_function", "mypkg.ReLU", "not supported"],
            |d| set_dense(
                d,
                Some(
                    json!({"in_features": hidden_size(d), "out_features": 8, "bias": true,
                            "activation_function": "mypkg.ReLU"})
                )
            )
        ),
        case!(
            "dense/on the token embeddings",
            "2_Dense/config.json",
            [
                "module_input_name",
                "token_embeddings",
                "sentence embedding only"
            ],
            |d| set_dense(
                d,
                Some(
                    json!({"in_features": hidden_size(d), "out_features": 8, "bias": true,
                            "activation_function": "torch.nn.modules.activation.Tanh",
                            "module_input_name": "token_embeddings"})
                )
            )
        ),
        case!(
            "dense/residual",
            "2_Dense/config.json",
            ["use_residual", "not supported"],
            |d| set_dense(
                d,
                Some(
                    json!({"in_features": hidden_size(d), "out_features": hidden_size(d),
                            "bias": true, "use_residual": true,
                            "activation_function": "torch.nn.modules.activation.Tanh"})
                )
            )
        ),
        case!(
            "modules/no Pooling",
            "modules.json",
            ["no Pooling module"],
            |d| set_modules(d, json!([{ "type": TRANSFORMER, "path": "" }]))
        ),
        case!(
            "modules/Normalize before Pooling",
            "modules.json",
            ["Normalize", "out of the order"],
            |d| set_modules(
                d,
                json!([
                    { "type": TRANSFORMER, "path": "" },
                    { "type": "sentence_transformers.models.Normalize", "path": "2_Normalize" },
                    { "type": POOLING, "path": "1_Pooling" }
                ])
            )
        ),
        case!(
            "modules/Normalize of the token embeddings",
            "2_Normalize/config.json",
            ["module_input_name", "token_embeddings"],
            |d| {
                set_modules(
                    d,
                    json!([
                        { "type": TRANSFORMER, "path": "" },
                        { "type": POOLING, "path": "1_Pooling" },
                        { "type": "sentence_transformers.models.Normalize", "path": "2_Normalize" }
                    ]),
                );
                std::fs::create_dir_all(d.join("2_Normalize")).unwrap();
                write(
                    d,
                    "2_Normalize/config.json",
                    r#"{"module_input_name": "token_embeddings"}"#,
                );
            }
        ),
        case!(
            "pooling/every mode off",
            "1_Pooling/config.json",
            ["no pooling mode is on"],
            |d| write(
                d,
                "1_Pooling/config.json",
                json!({"word_embedding_dimension": hidden_size(d),
                "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false})
                .to_string()
            )
        ),
        case!(
            "dense/in_features not the pooled width",
            "2_Dense/config.json",
            ["in_features 7", "values"],
            |d| set_dense(
                d,
                Some(json!({"in_features": 7, "out_features": 8, "bias": true,
                            "activation_function": "torch.nn.modules.activation.Tanh"}))
            )
        ),
        case!(
            "dense/no weights",
            "2_Dense",
            ["model.safetensors", "pytorch_model.bin"],
            |d| set_dense(
                d,
                Some(
                    json!({"in_features": hidden_size(d), "out_features": 8, "bias": true,
                            "activation_function": "torch.nn.modules.activation.Tanh"})
                )
            )
        ),
        // ---- config_sentence_transformers.json (prompts) ------------------------------------
        case!(
            "prompts/unknown similarity function",
            ST_CONFIG,
            ["similarity_fn_name", "jaccard"],
            |d| write(d, ST_CONFIG, r#"{"similarity_fn_name": "jaccard"}"#)
        ),
        case!(
            "prompts/not JSON",
            ST_CONFIG,
            ["not valid JSON"],
            |d| write(d, ST_CONFIG, "{\"prompts\": ")
        ),
        case!(
            "prompts/not an object",
            ST_CONFIG,
            ["\"prompts\"", "not an object"],
            |d| write(d, ST_CONFIG, json!({"prompts": ["query: "]}).to_string())
        ),
        case!(
            "prompts/a prompt not a string",
            ST_CONFIG,
            ["prompt \"query\"", "not a string"],
            |d| write(d, ST_CONFIG, json!({"prompts": {"query": 7}}).to_string())
        ),
        case!(
            "prompts/unknown default_prompt_name",
            ST_CONFIG,
            [
                "default_prompt_name",
                "not one of the prompts",
                "document, query"
            ],
            |d| write(
                d,
                ST_CONFIG,
                json!({"prompts": {"query": "query: "}, "default_prompt_name": "passage"})
                    .to_string()
            )
        ),
        case!(
            "modules/path leaves the folder",
            MODULES,
            ["\"../../etc\" leaves the model folder"],
            |d| { set_modules(d, json!([{ "type": TRANSFORMER, "path": "../../etc" }])) }
        ),
        case!(
            "modules/absolute path",
            MODULES,
            ["\"/etc\" leaves the model folder"],
            |d| { set_modules(d, json!([{ "type": TRANSFORMER, "path": "/etc" }])) }
        ),
        case!(
            "modules/Pooling first",
            MODULES,
            ["module 0", "out of the order"],
            |d| {
                set_modules(
                    d,
                    json!([
                        { "type": POOLING, "path": "1_Pooling" },
                        { "type": TRANSFORMER, "path": "" },
                    ]),
                )
            }
        ),
        case!(
            "modules/two Transformers",
            MODULES,
            ["module 1", "out of the order"],
            |d| {
                set_modules(
                    d,
                    json!([
                        { "type": TRANSFORMER, "path": "" },
                        { "type": TRANSFORMER, "path": "" },
                    ]),
                )
            }
        ),
        case!(
            "modules/Transformer folder missing",
            "0_Transformer/config.json",
            ["No such file"],
            |d| {
                set_modules(
                    d,
                    json!([
                        { "type": TRANSFORMER, "path": "0_Transformer" },
                        { "type": POOLING, "path": "1_Pooling" }
                    ]),
                )
            }
        ),
        case!(
            "modules/Pooling folder missing",
            "2_Pooling/config.json",
            ["No such file"],
            |d| {
                set_modules(
                    d,
                    json!([
                        { "type": TRANSFORMER, "path": "" },
                        { "type": POOLING, "path": "2_Pooling" },
                    ]),
                )
            }
        ),
        // ---- 1_Pooling/config.json -------------------------------------------------------
        case!("pooling/missing", POOLING_CONFIG, ["No such file"], |d| {
            remove(d, POOLING_CONFIG)
        }),
        case!(
            "pooling/not JSON",
            POOLING_CONFIG,
            ["not valid JSON"],
            |d| { write(d, POOLING_CONFIG, "{ \"word_embedding_dimension\": ") }
        ),
        case!(
            "pooling/a JSON array",
            POOLING_CONFIG,
            ["expected a JSON object"],
            |d| { write(d, POOLING_CONFIG, "[1, 2]") }
        ),
        case!(
            "pooling/dimension ≠ hidden_size",
            POOLING_CONFIG,
            ["word_embedding_dimension 51 differs from the model's hidden_size 52"],
            |d| set_pooling(d, "word_embedding_dimension", json!(51))
        ),
        case!(
            "pooling/dimension missing",
            POOLING_CONFIG,
            ["missing \"word_embedding_dimension\""],
            |d| set_key(d, POOLING_CONFIG, "word_embedding_dimension", None)
        ),
        case!(
            "pooling/negative dimension",
            POOLING_CONFIG,
            ["embedding dimension -52 is not a positive integer"],
            |d| set_pooling(d, "word_embedding_dimension", json!(-52))
        ),
        case!(
            "pooling/float dimension",
            POOLING_CONFIG,
            ["embedding dimension 52.5 is not a positive integer"],
            |d| set_pooling(d, "word_embedding_dimension", json!(52.5))
        ),
        case!(
            "pooling/dimension 2^40",
            POOLING_CONFIG,
            ["embedding dimension 1099511627776 is not a positive integer ≤ 2^20"],
            |d| set_pooling(d, "word_embedding_dimension", json!(1u64 << 40))
        ),
        case!(
            "pooling/unknown mode",
            POOLING_CONFIG,
            ["unknown pooling mode \"median\""],
            |d| set_pooling(d, "pooling_mode", json!("median"))
        ),
        case!(
            "pooling/mode a number",
            POOLING_CONFIG,
            ["\"pooling_mode\" must be a name or a list of names"],
            |d| set_pooling(d, "pooling_mode", json!(3))
        ),
        case!(
            "pooling/mode flag a string",
            POOLING_CONFIG,
            ["\"pooling_mode_mean_tokens\" must be true or false"],
            |d| set_pooling(d, "pooling_mode_mean_tokens", json!("yes"))
        ),
        case!(
            "pooling/include_prompt not a boolean",
            POOLING_CONFIG,
            ["\"include_prompt\" must be true or false"],
            |d| set_pooling(d, "include_prompt", json!("false"))
        ),
        // ---- sentence_bert_config.json ---------------------------------------------------
        case!("sbert/not JSON", SBERT, ["not valid JSON"], |d| write(
            d, SBERT, "{,}"
        )),
        case!(
            "sbert/a JSON array",
            SBERT,
            ["expected a JSON object"],
            |d| write(d, SBERT, "[]")
        ),
        case!(
            "sbert/string max_seq_length",
            SBERT,
            ["max_seq_length \"long\" is not a positive integer"],
            |d| set_sbert(d, "max_seq_length", json!("long"))
        ),
        case!(
            "sbert/negative max_seq_length",
            SBERT,
            ["max_seq_length -1 is not a positive integer"],
            |d| set_sbert(d, "max_seq_length", json!(-1))
        ),
        case!(
            "sbert/float max_seq_length",
            SBERT,
            ["max_seq_length 40.5 is not a positive integer"],
            |d| set_sbert(d, "max_seq_length", json!(40.5))
        ),
        case!(
            "sbert/max_seq_length 1",
            SBERT,
            ["max_seq_length 1", "[CLS] and [SEP]"],
            |d| set_sbert(d, "max_seq_length", json!(1))
        ),
        case!(
            "sbert/string do_lower_case",
            SBERT,
            ["do_lower_case \"no\" is not true or false"],
            |d| set_sbert(d, "do_lower_case", json!("no"))
        ),
    ]
}

/// Replaces the first `from` in `dir/file` by `to`, byte-wise.
///
/// JSON files are written with `": "` (the fixtures) or `":"` (compact, as published): `from`
/// is tried as given, then with `": "` made `":"` (and `to` likewise).
fn edit_text_bytes(dir: &Path, file: &str, from: &[u8], to: &[u8]) {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle);
    let compact = |text: &[u8]| -> Vec<u8> {
        String::from_utf8_lossy(text)
            .replace("\": ", "\":")
            .into_bytes()
    };
    let (from, to) = match find(from) {
        Some(_) => (from.to_vec(), to.to_vec()),
        None => (compact(from), compact(to)),
    };
    let at = find(&from).unwrap_or_else(|| panic!("{} does not contain {from:?}", path.display()));
    let mut edited = bytes[..at].to_vec();
    edited.extend_from_slice(&to);
    edited.extend_from_slice(&bytes[at + from.len()..]);
    std::fs::write(&path, edited).unwrap();
}
