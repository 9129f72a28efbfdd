//! Semantic search over a file: embed every line once, then answer queries with the most
//! similar lines.
//!
//! ```sh
//! cargo run --release -p ember --example semantic_search -- \
//!     "$(scripts/fetch-model.sh)" benches/corpus/wordnet-examples.txt "a musical instrument" "rain"
//! ```

use ember::similarity::top_k;
use ember::Embedder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(corpus)) = (args.next(), args.next()) else {
        eprintln!("usage: semantic_search MODEL_DIR CORPUS_FILE QUERY…");
        std::process::exit(2);
    };
    let queries: Vec<String> = args.collect();

    let embedder = Embedder::builder().load(&model)?;
    let text = std::fs::read_to_string(&corpus)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // One call for the whole corpus: Ember sorts by length and packs batches itself.
    let corpus_rows = embedder.encode(&lines)?;
    let query_rows = embedder.encode(&queries)?;

    for (query, row) in queries.iter().zip(query_rows.rows()) {
        println!("{query}");
        // Cosine similarity (the rows of a normalising model are unit vectors already).
        for (index, score) in top_k(row, &corpus_rows, 3) {
            println!("  {score:.3}  {}", lines[index]);
        }
    }
    Ok(())
}
