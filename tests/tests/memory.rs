//! Memory of a long-running embedder: flat over 100 000 texts (RSS sampled from
//! `/proc/self/statm` after warm-up), and one call of 100 000 texts bounded by the batch, not
//! the input (issue 6). The only test in this binary, so the process's RSS is its own.

use std::path::Path;

use ember::Embedder;
use ember_reference_tests::*;

fn corpus() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/corpus/wordnet-examples.txt");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn memory_is_flat_over_100_000_texts() {
    if !Path::new("/proc/self/statm").exists() {
        println!("skipped: no /proc/self/statm on this system");
        return;
    }
    // The tiny model keeps this fast; memory behaviour (workspaces, token buffers, call
    // state) is the same code as for any model.
    let embedder = Embedder::builder()
        .threads(2)
        .batch_size(32)
        .load_dir(&fixtures_dir().join("tiny-bert"))
        .unwrap();
    let base = corpus();
    // 100 000 distinct texts: corpus lines with a counter, every 97th one long (past
    // max_seq_length, truncated).
    let text = |i: usize| {
        let line = &base[i % base.len()];
        if i.is_multiple_of(97) {
            format!("{i} {}", line.repeat(20))
        } else {
            format!("{i} {line}")
        }
    };
    const CHUNK: usize = 1000;
    const TOTAL: usize = 100_000;
    let mut out = vec![0f32; CHUNK * embedder.dim()];
    let mut samples = Vec::new();
    for chunk in 0..TOTAL / CHUNK {
        let texts: Vec<String> = (chunk * CHUNK..(chunk + 1) * CHUNK).map(text).collect();
        embedder.encode_into(&texts, &mut out).unwrap();
        samples.push(rss_bytes());
    }
    // Warm-up: the first 10 chunks (the largest batch shapes appear early: every chunk has
    // the same mix of lengths).
    let warm = samples[9];
    let peak = *samples[10..].iter().max().unwrap();
    let growth = peak.saturating_sub(warm);
    println!(
        "100 000 texts in chunks of {CHUNK}: RSS after warm-up {:.1} MB, peak after {:.1} MB \
         (growth {:.1} KB)",
        warm as f64 / 1e6,
        peak as f64 / 1e6,
        growth as f64 / 1e3
    );
    assert!(
        growth <= 1 << 20,
        "RSS grew by {growth} bytes over 90 000 texts after warm-up: {samples:?}"
    );

    // All 100 000 in one call: beyond the output (its zeroed pages are first touched during
    // the call) and the call's token ids (4 bytes per token, plus offsets, dropped counts and
    // order, 24 bytes per text), memory is bounded by the batch (activations, workspaces: 8 MiB here), not the
    // input. Activations sized by the input would need hundreds of MB.
    let texts: Vec<String> = (0..TOTAL).map(text).collect();
    let mut all = vec![0f32; TOTAL * embedder.dim()];
    let before = rss_bytes();
    embedder.encode_into(&texts, &mut all).unwrap();
    let grown = rss_bytes().saturating_sub(before);
    let tokens: usize = texts
        .iter()
        .map(|t| embedder.tokenize(t).unwrap().len())
        .sum();
    let allowance = 4 * TOTAL * embedder.dim() + 4 * tokens + 24 * TOTAL + (8 << 20);
    println!(
        "one call of 100 000 texts ({tokens} tokens): RSS grew {:.1} MB (allowance {:.1} MB)",
        grown as f64 / 1e6,
        allowance as f64 / 1e6
    );
    assert!(grown <= allowance, "one call grew RSS by {grown} bytes");
}
