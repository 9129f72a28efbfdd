//! Embedding inside a request loop: one `Embedder` shared by worker threads, each reusing its
//! own output buffer, so that after the first request nothing is allocated per call
//! (`encode_into`; see `tests/tests/zero_alloc.rs`) and latency stays predictable.
//!
//! ```sh
//! cargo run --release -p ember --example request_loop -- "$(scripts/fetch-model.sh)"
//! ```

use std::sync::mpsc;
use std::time::Instant;

use ember::Embedder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: request_loop MODEL_DIR");
        std::process::exit(2);
    });
    // Ember's own pool: 2 threads for the math, whatever the service's threads do.
    let embedder = Embedder::builder().threads(2).load(&model)?;
    let dim = embedder.dim();

    // A stand-in for a server: requests arrive on a channel, two handler threads answer.
    let (send, receive) = mpsc::channel::<String>();
    let receive = std::sync::Mutex::new(receive);
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (embedder, receive) = (&embedder, &receive);
            scope.spawn(move || {
                let mut row = vec![0f32; dim]; // reused for every request of this worker
                let mut latencies = Vec::new();
                loop {
                    let Ok(text) = receive.lock().map(|r| r.recv()) else {
                        break;
                    };
                    let Ok(text) = text else { break };
                    let start = Instant::now();
                    if let Err(e) = embedder.encode_into(&[text.as_str()], &mut row) {
                        eprintln!("worker {worker}: {e}");
                        continue;
                    }
                    latencies.push(start.elapsed().as_secs_f64() * 1e3);
                }
                latencies.sort_by(f64::total_cmp);
                if let Some(p50) = latencies.get(latencies.len() / 2) {
                    println!(
                        "worker {worker}: {} requests, p50 {p50:.2} ms",
                        latencies.len()
                    );
                }
            });
        }
        for i in 0..200 {
            let request = format!("request {i}: a short sentence to embed, number {}", i * 7);
            if send.send(request).is_err() {
                break;
            }
        }
        drop(send);
    });
    Ok(())
}
