//! After warm-up, `Embedder::encode_into` allocates nothing: not on the calling thread, not on
//! the embedder's pool workers, not anywhere in the process.
//!
//! A counting `#[global_allocator]` counts every `alloc`, `alloc_zeroed` and `realloc` of every
//! thread while the check runs; the first counted allocation's backtrace is kept (a
//! thread-local guard keeps the capture itself out of the count) and printed on failure.
//! This file is its own test binary without libtest's harness (`harness = false` in
//! `tests/Cargo.toml`), so no test runner thread can allocate while counting: libtest's
//! main thread prints "has been running for over 60 seconds" notes, for one.
//!
//! The C ABI's `ember_encode` is checked the same way at the end (before it kept a per-thread
//! list of text views it allocated one `Vec` per call: 74 counted allocations).
//!
//! all-MiniLM-L6-v2 is loaded with 2 threads and batches of 32; the benchmark corpus (1,244
//! sentences) is encoded 3 times whole and once text by text to warm up, then counted: twice
//! whole and once text by text (batches of 1); then once whole with per-text reports
//! (`encode_into_with_report`, which tokenizes every text to its end).
//!
//! What had to change for the count to reach 0, as measured with this test:
//! - Tokenization: the `tokenizers` crate allocates about 390 times per corpus sentence
//!   (strings, vectors, hash maps, the `Encoding`: 1,470,555 counted allocations here with
//!   the crate forced). Standard BERT folders now take Ember's WordPiece
//!   path, RoBERTa's and ModernBERT's its byte-level BPE (checked here on tiny-roberta and
//!   tiny-modernbert), XLM-RoBERTa's its SentencePiece Unigram (checked here on
//!   tiny-xlm-roberta and tiny-xlmr-spm, whose charsmap is a real `nmt_nfkc` one, on the
//!   corpus and a few multilingual texts), which reuse one scratch per pool worker. About
//!   2 µs a sentence (`tokenizer_speed` in `tokenizer_parity.rs`): a call of more than 64 texts
//!   is tokenized in shares on the pool's workers (twice: lengths first, then the ids into
//!   their places in one buffer), a smaller one on the resident worker alone.
//! - Reaching the pool: `ThreadPool::install` from a thread outside the pool pushes onto
//!   rayon's injector (crossbeam's `Injector`), which allocates a new block every 63 pushes:
//!   20 allocations over the 2 + 1,244 counted calls, all in `Injector::push`. Calls now
//!   reach the pool
//!   through a resident job (`crates/ember/src/resident.rs`) spawned once at load: callers
//!   hand it their closure through a mutex and condition variable, and the parallel loops
//!   inside run as in-pool `join`s, which only touch the workers' preallocated deques.
//! - The call's token ids live in one concatenated buffer (with offsets), grown once by the
//!   largest call, rather than a vector per text (or per share of a parallel call: the corpus
//!   sorted longest first, below, would grow the first share's).
//! - Attention's per-thread scratch grows to the largest task a worker has run, and which
//!   worker runs which (sequence, head) task is up to work stealing: 10 of 19 runs of this test
//!   on the shared 2-core machine, under load from other processes, allocated once or twice, in
//!   `ember_cpu::attention::with_scratch` on a worker that had not yet drawn a 41- to 64-token
//!   sequence. The embedder now sizes every worker's scratch for `max_seq_length` at load
//!   (`reserve_attention_scratch` on each, by `ThreadPool::broadcast`); 12 of 12 runs, three
//!   processes at once, then counted 0.
//!
//! Everything else already reused its buffers: the call state (`EncodeState`, the
//! embedder's one `Mutex<EncodeState>`), the model's `Workspace`, pooling (stack accumulators), and
//! GEMM's packed-A scratch, which is the calling thread's (always the resident job's worker).
//! Not covered: GEMMs with `T·K > 2^24` (e.g. BERT-base batches of 32 × 512 tokens) pack A
//! per task in a per-worker buffer, which can grow late in the same way attention's did.

use std::path::Path;

use ember::Embedder;
use ember_reference_tests::counting_alloc::{
    assert_counting_allocator_in_use, assert_nothing_counted, count, CountingAllocator,
};
use ember_reference_tests::minilm_dir;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/corpus/wordnet-examples.txt");
    let texts: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let embedder = Embedder::builder()
        .threads(2)
        .batch_size(32)
        .load_dir(&minilm_dir())
        .unwrap();
    let dim = embedder.dim();
    let mut all = vec![0f32; texts.len() * dim];
    let mut one = vec![0f32; dim];

    for _ in 0..3 {
        embedder.encode_into(&texts, &mut all).unwrap();
    }
    for text in &texts {
        embedder
            .encode_into(std::slice::from_ref(text), &mut one)
            .unwrap();
    }
    let expected = all.clone();
    all.fill(f32::NAN);

    // The counter counts: one box, one allocation.
    assert_counting_allocator_in_use();

    let mut singles_match = true;
    count(|| {
        for _ in 0..2 {
            embedder.encode_into(&texts, &mut all).unwrap();
        }
        for (i, text) in texts.iter().enumerate() {
            embedder
                .encode_into(std::slice::from_ref(text), &mut one)
                .unwrap();
            singles_match &= one[..] == expected[i * dim..(i + 1) * dim];
        }
    });

    assert_nothing_counted("encode_into");
    assert!(
        all == expected,
        "whole-corpus embeddings changed between calls"
    );
    assert!(
        singles_match,
        "a text embedded alone differs from it in the corpus batch"
    );
    println!(
        "zero_alloc: {} texts × 2 calls + {} single-text calls after warm-up: 0 allocations",
        texts.len(),
        texts.len()
    );

    // Calls of other shapes than the warm-up's, none with more texts, tokens, or tokens in a
    // batch: as many texts as the corpus, the first 156 of them (a share's worth on 2
    // threads) all the corpus's 32nd-longest text (so that no batch of 32 outgrows the
    // warm-up's longest, whose texts are at least as long) and the rest one word, so that the
    // first share holds more tokens than any warm-up share (1.6×); the corpus's 300 longest
    // texts; its first 100 (2 shares). Calls of more than 64 texts are tokenized in shares on
    // the pool's workers, but into one buffer sized by the call's tokens (buffers per share
    // would grow wherever a share held more than its own before, beyond the slack of their
    // doubling), and each worker's scratch has room for texts of 8 KiB from its first use:
    // nothing grows again, whichever worker draws which text. Not warmed up with these
    // shapes.
    let mut by_length: Vec<&String> = texts.iter().collect();
    by_length.sort_by_key(|t| std::cmp::Reverse(embedder.tokenize(t).unwrap().len()));
    let mut skewed: Vec<String> = vec![by_length[31].clone(); 156];
    skewed.extend(
        texts[156..]
            .iter()
            .map(|t| t.split(' ').next().unwrap().to_owned()),
    );
    let longest = &by_length[..300];
    let first_100: Vec<&String> = texts.iter().take(100).collect();
    let tokens = |shape: &[&String]| -> usize {
        shape
            .iter()
            .map(|t| embedder.tokenize(t).unwrap().len())
            .sum()
    };
    let skewed: Vec<&String> = skewed.iter().collect();
    let corpus: Vec<&String> = texts.iter().collect();
    assert!(
        tokens(&skewed) <= tokens(&corpus),
        "the skewed call has more tokens"
    );
    let first_share = |shape: &[&String]| tokens(&shape[..156.min(shape.len())]);
    let warm_up_share = (0..texts.len())
        .step_by(156)
        .map(|at| first_share(&corpus[at..]))
        .max()
        .unwrap();
    let shapes = [&skewed[..], longest, &first_100[..]];
    count(|| {
        for shape in shapes {
            embedder
                .encode_into(shape, &mut all[..shape.len() * dim])
                .unwrap();
        }
    });
    assert_nothing_counted("encode_into of other shapes");
    println!(
        "zero_alloc: {} texts, {} tokens in the first share (at most {} in a warm-up share; {} in all, the corpus {}), the 300 longest, the first 100: 0 allocations",
        skewed.len(),
        first_share(&skewed),
        warm_up_share,
        tokens(&skewed),
        tokens(&corpus)
    );

    // With per-text reports, every text is tokenized to its end: still nothing allocated.
    let mut reports = vec![ember::TextReport::default(); texts.len()];
    for _ in 0..2 {
        embedder
            .encode_into_with_report(&texts, &mut all, &mut reports)
            .unwrap();
    }
    all.fill(f32::NAN);
    count(|| {
        embedder
            .encode_into_with_report(&texts, &mut all, &mut reports)
            .unwrap();
    });
    assert_nothing_counted("encode_into_with_report");
    assert!(all == expected, "reporting changed the embeddings");
    assert!(reports
        .iter()
        .all(|r| r.tokens > 2 && r.dropped_tokens == 0));
    println!(
        "zero_alloc: {} texts with reports: 0 allocations",
        texts.len()
    );

    // With a prompt (prepended into a reused buffer): nothing.
    let prompt = ember::Prompt::Text("query: ");
    for _ in 0..2 {
        embedder
            .encode_into_with_prompt(prompt, &texts, &mut all)
            .unwrap();
    }
    let prompted = all.clone();
    count(|| {
        embedder
            .encode_into_with_prompt(prompt, &texts, &mut all)
            .unwrap();
    });
    assert_nothing_counted("encode_into_with_prompt");
    assert!(all == prompted && all != expected, "the prompt's rows");
    println!(
        "zero_alloc: {} texts with a prompt: 0 allocations",
        texts.len()
    );
    drop(embedder);
    folder_encode_allocates_nothing("tiny-bert-dense", "a Dense module", &texts);
    folder_encode_allocates_nothing("tiny-roberta", "RoBERTa's byte-level BPE", &texts);
    folder_encode_allocates_nothing("tiny-modernbert", "ModernBERT", &texts);
    folder_encode_allocates_nothing("tiny-nomic-bert", "NomicBERT (rotary, SwiGLU)", &texts);
    folder_encode_allocates_nothing(
        "tiny-gte-multilingual",
        "GTE (rotary, gated GELU, XLM-R's tokenizer)",
        &texts,
    );
    folder_encode_allocates_nothing("tiny-jina", "JinaBERT (ALiBi, GEGLU)", &texts);
    folder_encode_allocates_nothing(
        "tiny-mpnet",
        "MPNet (WordPiece with <s> … </s> by RobertaProcessing, relative attention bias)",
        &texts,
    );
    // XLM-R's SentencePiece Unigram, on the corpus and on text its charsmap rewrites.
    let mut multilingual = texts.clone();
    multilingual.extend(
        [
            "Ｈｅｌｌｏ ｗｏｒｌｄ！ ﬁne ①② x²  spaced   out   ",
            "Crème brûlée, e\u{301}\u{302}, 한국어 \u{1100}\u{1161}\u{11A8}, 日本語のテキスト",
            "👨‍👩‍👧‍👦 🇫🇷 ❤️ \u{200B}\u{FEFF}\u{AD} tab\there\u{A0}nbsp\u{3000}end",
            "Ελληνικά русский עברית العربية ไทย हिन्दी <mask> done",
        ]
        .map(str::to_owned),
    );
    folder_encode_allocates_nothing(
        "tiny-xlm-roberta",
        "XLM-R's Unigram (no normaliser, WhitespaceSplit + Metaspace)",
        &multilingual,
    );
    folder_encode_allocates_nothing(
        "tiny-xlmr-spm",
        "XLM-R's Unigram (nmt_nfkc Precompiled charsmap, Strip, Replace, Metaspace)",
        &multilingual,
    );
    include_prompt_false_encode_allocates_nothing(&texts);
    c_abi_encode_allocates_nothing(&texts, &expected);
    for dtype in [ember::Precision::Bf16, ember::Precision::Int8] {
        reduced_precision_encode_allocates_nothing(dtype, &texts);
    }
}

/// The fixture `folder`'s model (`what`) after warm-up allocates nothing: a Dense module after
/// pooling and Normalize after it (LaBSE's chain, tiny-bert-dense), whose buffers grow once;
/// RoBERTa's byte-level BPE (tiny-roberta) and ModernBERT's (tiny-modernbert: NFC, BPE,
/// `[CLS] … [SEP]`) on Ember's own BPE tokenizer, and ModernBERT's forward pass (rotary
/// positions, GeGLU, sliding windows); XLM-RoBERTa's SentencePiece Unigram (tiny-xlm-roberta,
/// and tiny-xlmr-spm with a real `nmt_nfkc` Precompiled charsmap) on Ember's own Unigram
/// tokenizer.
fn folder_encode_allocates_nothing(folder: &str, what: &str, texts: &[String]) {
    let embedder = Embedder::builder()
        .threads(2)
        .load_dir(&ember_reference_tests::fixtures_dir().join(folder))
        .unwrap();
    let mut all = vec![0f32; texts.len() * embedder.dim()];
    for _ in 0..2 {
        embedder.encode_into(texts, &mut all).unwrap();
    }
    count(|| {
        embedder.encode_into(texts, &mut all).unwrap();
    });
    assert_nothing_counted(&format!("encode_into through {what}"));
    println!(
        "zero_alloc: {} texts through {what}: 0 allocations",
        texts.len()
    );
}

/// A pooling with `include_prompt: false` (tiny-bert-prompts, all six modes): each warm call
/// counts its prompt's tokens again (in the worker's scratch) and leaves them out, allocating
/// nothing, for the folder's default prompt and for a prompt given with the call.
fn include_prompt_false_encode_allocates_nothing(texts: &[String]) {
    let dir = ember_reference_tests::copy_with_pooling(
        "tiny-bert-prompts",
        &serde_json::json!({"embedding_dimension": 52, "pooling_mode": ["cls", "max", "mean",
            "mean_sqrt_len_tokens", "weightedmean", "lasttoken"], "include_prompt": false}),
    );
    let embedder = Embedder::builder().threads(2).load_dir(dir.path()).unwrap();
    assert!(!embedder.pooling().include_prompt);
    let mut all = vec![0f32; texts.len() * embedder.dim()];
    for prompt in [
        ember::Prompt::Default,
        ember::Prompt::Text("represent this sentence: "),
    ] {
        for _ in 0..2 {
            embedder
                .encode_into_with_prompt(prompt, texts, &mut all)
                .unwrap();
        }
        count(|| {
            embedder
                .encode_into_with_prompt(prompt, texts, &mut all)
                .unwrap();
        });
        assert_nothing_counted(&format!("include_prompt false, {prompt:?}"));
    }
    println!(
        "zero_alloc: {} texts with include_prompt false: 0 allocations",
        texts.len()
    );
}

/// `--dtype bf16` and `--dtype int8` (whose rotated weights rotate every GEMM input into a
/// scratch buffer): warm calls allocate nothing either.
fn reduced_precision_encode_allocates_nothing(dtype: ember::Precision, texts: &[String]) {
    let embedder = Embedder::builder()
        .threads(2)
        .batch_size(32)
        .dtype(dtype)
        .load_dir(&minilm_dir())
        .unwrap();
    let dim = embedder.dim();
    let mut all = vec![0f32; texts.len() * dim];
    for _ in 0..2 {
        embedder.encode_into(texts, &mut all).unwrap();
    }
    let expected = all.clone();
    all.fill(f32::NAN);
    count(|| {
        embedder.encode_into(texts, &mut all).unwrap();
    });
    assert_nothing_counted(&format!("{dtype} encode_into"));
    assert!(all == expected, "{dtype}: embeddings changed between calls");
    println!(
        "zero_alloc: {dtype}, {} texts after warm-up: 0 allocations",
        texts.len()
    );
}

/// The same through the C ABI: `ember_encode` keeps its per-thread list of text views, so a
/// warm call allocates nothing either.
fn c_abi_encode_allocates_nothing(texts: &[String], expected: &[f32]) {
    use ember_capi::{ember_dim, ember_encode, ember_free, ember_load};
    let model = std::ffi::CString::new(minilm_dir().to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    let embedder = unsafe { ember_load(model.as_ptr(), 2, 32) };
    assert!(!embedder.is_null());
    // SAFETY: live embedder.
    let dim = unsafe { ember_dim(embedder) };
    let ptrs: Vec<*const std::ffi::c_char> = texts.iter().map(|t| t.as_ptr().cast()).collect();
    let lens: Vec<usize> = texts.iter().map(String::len).collect();
    let mut all = vec![0f32; texts.len() * dim];
    let encode = |from: usize, to: usize, out: &mut [f32]| {
        // SAFETY: `ptrs[from..to]`/`lens[from..to]` describe live strings; `out` holds
        // (to − from)·dim floats, exclusively borrowed.
        let rc = unsafe {
            ember_encode(
                embedder,
                ptrs[from..].as_ptr(),
                lens[from..].as_ptr(),
                to - from,
                out.as_mut_ptr(),
                out.len(),
            )
        };
        assert_eq!(rc, 0);
    };
    for _ in 0..2 {
        encode(0, texts.len(), &mut all);
    }
    all.fill(f32::NAN);
    let mut one = vec![0f32; dim];
    let mut singles_match = true;
    count(|| {
        encode(0, texts.len(), &mut all);
        for i in 0..64 {
            encode(i, i + 1, &mut one);
            singles_match &= one[..] == expected[i * dim..(i + 1) * dim];
        }
    });
    assert_nothing_counted("C ABI ember_encode");
    assert!(
        all == expected,
        "C ABI embeddings differ from the Rust API's"
    );
    assert!(
        singles_match,
        "C ABI: a text embedded alone differs from the Rust API's row"
    );
    // SAFETY: no other use of `embedder` remains.
    unsafe { ember_free(embedder) };
    println!("zero_alloc: C ABI, the corpus + 64 single texts after warm-up: 0 allocations");
}
