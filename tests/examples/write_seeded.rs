//! Writes the SBERT-base-nli-v2-shaped model with seeded weights (`sbert_base_seeded.rs`'s: 768
//! hidden, 12 layers, 12 heads, FFN 3072, mean pooling, max_seq_length 75, f32) into a folder,
//! with the tokenizer files of another BERT-uncased folder, for scripts/gpu/bench_gpu.sh's
//! end-to-end run on the issue's first reference shape (the folder, 440 MB, is made on the GPU
//! machine rather than carried).
//!
//! ```sh
//! cargo run --release -p ember-reference-tests --example write_seeded -- DIR TOKENIZER_FROM
//! ```

use ember_reference_tests::seeded::{write_seeded_folder, SBERT_BASE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, tokenizer_from] = &args[..] else {
        eprintln!(
            "usage: write_seeded DIR TOKENIZER_FROM (a folder with a BERT-uncased tokenizer)"
        );
        std::process::exit(1);
    };
    let dir = std::path::Path::new(dir);
    write_seeded_folder(dir, SBERT_BASE, std::path::Path::new(tokenizer_from), 75);
    println!(
        "{}: SBERT-base shape, seeded weights, max_seq_length 75",
        dir.display()
    );
}
