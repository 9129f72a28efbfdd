//! `ember::quantize` against sentence-transformers' `encode(texts, precision=…)`
//! (tests/fixtures/tiny_quantize_reference.json: tiny-bert, int8, uint8, binary and ubinary).
//!
//! On sentence-transformers' own float rows the bytes are its bytes, every one. On Ember's rows
//! (within ~1e-6 of those) a value may sit on a bucket's edge or at 0 and land on the other
//! side: only such values may differ, by one bucket or one bit.

use ember::quantize::{quantize, Quantization, QuantizationRanges};
use ember::{Embedder, Embeddings};
use ember_reference_tests::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    folder: String,
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    ranges: Vec<Vec<f32>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    precision: String,
    dtype: String,
    values: Vec<Vec<i64>>,
}

fn reference() -> Reference {
    let reference: Reference = read_fixture("tiny_quantize_reference.json");
    assert_eq!(reference.cases.len(), 4);
    reference
}

fn matrix(rows: &[Vec<f32>]) -> Embeddings {
    Embeddings::from_vec(rows.concat(), rows.len(), rows[0].len()).unwrap()
}

/// The case's values as the bytes Ember stores (signed ones as two's complement).
fn expected_bytes(case: &Case) -> Vec<Vec<u8>> {
    let signed = case.dtype == "int8";
    assert!(signed || case.dtype == "uint8", "{}", case.dtype);
    case.values
        .iter()
        .map(|row| {
            row.iter()
                .map(|&v| match signed {
                    true => i8::try_from(v).unwrap() as u8,
                    false => u8::try_from(v).unwrap(),
                })
                .collect()
        })
        .collect()
}

#[test]
fn sentence_transformers_rows_quantize_to_its_bytes() {
    let reference = reference();
    let floats = matrix(&reference.embeddings);
    let ranges = QuantizationRanges::from_embeddings(&floats).unwrap();
    // The ranges sentence-transformers computed from the same rows.
    assert_eq!(ranges.min(), &reference.ranges[0][..]);
    assert_eq!(ranges.max(), &reference.ranges[1][..]);
    for case in &reference.cases {
        let quantization = Quantization::from_name(&case.precision).unwrap();
        assert_eq!(
            quantization.is_signed(),
            case.dtype == "int8",
            "{}",
            case.precision
        );
        let ours = quantize(&floats, quantization, Some(&ranges)).unwrap();
        let expected = expected_bytes(case);
        assert_eq!(ours.len(), expected.len());
        for (i, row) in expected.iter().enumerate() {
            assert_eq!(ours.row(i), &row[..], "{}: row {i}", case.precision);
        }
        println!(
            "{}: {} rows of {} bytes, every byte sentence-transformers'",
            case.precision,
            ours.len(),
            ours.row_bytes()
        );
    }
}

#[test]
fn embedder_rows_quantize_as_sentence_transformers_but_at_edges() {
    let reference = reference();
    let embedder = Embedder::builder()
        .threads(2)
        .load_dir(&fixtures_dir().join(&reference.folder))
        .unwrap();
    let ours = embedder.encode(&reference.texts).unwrap();
    let theirs = matrix(&reference.embeddings);
    let ranges = QuantizationRanges::from_embeddings(&ours).unwrap();
    let dim = ours.dim();
    for case in &reference.cases {
        let quantization = Quantization::from_name(&case.precision).unwrap();
        let got = quantize(&ours, quantization, Some(&ranges)).unwrap();
        let expected = expected_bytes(case);
        let mut differing = 0;
        for (i, row) in expected.iter().enumerate() {
            for (b, (&g, &e)) in got.row(i).iter().zip(row).enumerate() {
                if g == e {
                    continue;
                }
                if quantization.needs_ranges() {
                    // One bucket apart, for a value within ~1e-5 of the bucket edge.
                    differing += 1;
                    assert_eq!(
                        (g as i32 - e as i32).abs(),
                        1,
                        "{}: [{i}][{b}]",
                        case.precision
                    );
                    let step = (reference.ranges[1][b] - reference.ranges[0][b]) / 255.0;
                    let position = (theirs.row(i)[b] - reference.ranges[0][b]) / step;
                    let edge = position.round();
                    assert!(
                        (position - edge).abs() < 1e-3,
                        "{}: [{i}][{b}] {g} vs {e}, {position} buckets in",
                        case.precision
                    );
                } else {
                    // Only values at 0 may change sides.
                    for k in 0..8 {
                        let j = b * 8 + k;
                        if j < dim && (g ^ e) & (0x80 >> k) != 0 {
                            differing += 1;
                            assert!(
                                theirs.row(i)[j].abs() < 1e-5,
                                "{}: [{i}][{j}] {} vs {}",
                                case.precision,
                                ours.row(i)[j],
                                theirs.row(i)[j]
                            );
                        }
                    }
                }
            }
        }
        println!(
            "{}: {differing} of {} values on the other side of an edge",
            case.precision,
            ours.len() * dim
        );
        // Edges are rare: at most 1 % of the values (4 and 0 of 1,768 when written).
        assert!(
            differing * 100 <= ours.len() * dim,
            "{}: {differing} values differ",
            case.precision
        );
    }
}
