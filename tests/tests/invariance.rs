//! A text's embedding does not depend on its batch, the batch size or the thread count:
//! bit-identical rows, on the real all-MiniLM-L6-v2.

use ember::Embedder;
use ember_reference_tests::*;

#[test]
fn rows_are_bit_identical_across_batches_batch_sizes_and_threads() {
    let reference = read_fixture::<ModelReference>("minilm_reference.json");
    let texts = &reference.texts;
    let dir = minilm_dir();
    let two_threads = Embedder::builder()
        .threads(2)
        .batch_size(16)
        .load_dir(&dir)
        .unwrap();
    let batched = two_threads.encode(texts).unwrap();

    let one_thread_batch_one = Embedder::builder()
        .threads(1)
        .batch_size(1)
        .load_dir(&dir)
        .unwrap();
    let big_batch = Embedder::builder()
        .threads(2)
        .batch_size(1000)
        .load_dir(&dir)
        .unwrap();

    // Each text alone, with one thread, batch size 1.
    for (i, text) in texts.iter().enumerate() {
        let alone = one_thread_batch_one.encode(&[text]).unwrap();
        assert_eq!(alone.row(0), batched.row(i), "text {i} alone vs batched");
    }
    // Everything in one batch, in reverse order and with other texts mixed in.
    let mut mixed: Vec<String> = texts.iter().rev().cloned().collect();
    mixed.extend(texts.iter().map(|t| format!("{t} {t}")));
    let in_mixed = big_batch.encode(&mixed).unwrap();
    let n = texts.len();
    for i in 0..n {
        assert_eq!(
            in_mixed.row(n - 1 - i),
            batched.row(i),
            "text {i} in a mixed batch"
        );
    }
    // The same call twice, and from 4 threads at once on one shared embedder.
    assert_eq!(two_threads.encode(texts).unwrap(), batched);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| assert_eq!(two_threads.encode(texts).unwrap(), batched));
        }
    });
}

/// A caller that runs its own code on rayon — its own pool, or rayon's global one — and calls
/// `encode` from inside parallel loops: every call completes (no deadlock: the caller's worker
/// blocks while Ember's own pool runs the call) and gives the serial rows bit for bit.
#[test]
fn encode_from_inside_the_callers_rayon_pools() {
    use rayon::prelude::*;
    let reference = read_fixture::<ModelReference>("minilm_reference.json");
    let texts: Vec<&str> = reference
        .texts
        .iter()
        .take(24)
        .map(String::as_str)
        .collect();
    let embedder = Embedder::builder()
        .threads(2)
        .batch_size(4)
        .load_dir(&minilm_dir())
        .unwrap();
    let serial = embedder.encode(&texts).unwrap();
    let check = || {
        texts.par_iter().enumerate().for_each(|(i, text)| {
            let row = embedder.encode(&[text]).unwrap();
            assert_eq!(row.row(0), serial.row(i), "text {i}");
        });
        texts.par_chunks(5).enumerate().for_each(|(c, chunk)| {
            let rows = embedder.encode(chunk).unwrap();
            for (j, row) in rows.rows().enumerate() {
                assert_eq!(row, serial.row(c * 5 + j), "chunk {c} row {j}");
            }
        });
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(check);
    check(); // on rayon's global pool
}
