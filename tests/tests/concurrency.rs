//! One embedder in a long-running service, shared by 8 threads encoding different texts,
//! gives exactly the serial rows (issue 6). Its memory over 100 000 texts is checked in
//! `memory.rs`, a test binary of its own so that no other test shares the process's RSS.

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

#[test]
fn eight_threads_sharing_one_embedder_get_the_serial_rows() {
    const THREADS: usize = 8;
    let texts = corpus();
    let embedder = Embedder::builder()
        .threads(2)
        .batch_size(16)
        .load_dir(&minilm_dir())
        .unwrap();
    let serial = embedder.encode(&texts).unwrap();
    // Thread t takes the texts i with i % 8 == t, in calls of 1 to 37 texts (a different
    // cut per thread and round), for two rounds; every row must equal the serial one bit
    // for bit.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (texts, serial, embedder, calls) = (&texts, &serial, &embedder, &calls);
            scope.spawn(move || {
                let mine: Vec<usize> = (t..texts.len()).step_by(THREADS).collect();
                for round in 0..2 {
                    let mut start = 0;
                    let mut call = 0;
                    while start < mine.len() {
                        let len =
                            (1 + (t * 7 + round * 13 + call * 5) % 37).min(mine.len() - start);
                        let idx = &mine[start..start + len];
                        let batch: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
                        let rows = embedder.encode(&batch).unwrap();
                        for (row, &i) in rows.rows().zip(idx) {
                            assert_eq!(row, serial.row(i), "thread {t} round {round}: text {i}");
                        }
                        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        start += len;
                        call += 1;
                    }
                }
            });
        }
    });
    println!(
        "{THREADS} threads × {} texts × 2 rounds in {} calls: every row bit-identical to serial",
        texts.len() / THREADS,
        calls.into_inner()
    );
}
