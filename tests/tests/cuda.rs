//! `Device::Cuda` end to end on all-MiniLM-L6-v2 against sentence-transformers and against the
//! CPU: the f32 path (exact SIMT GEMM) within the f32 bounds (cosine ≥ 0.99999, |diff| ≤ 1e-4)
//! of the CPU on the same folder, and of sentence-transformers when the folder's weights are
//! f32; bf16 and f16 (tensor cores) within cosine 0.999 of sentence-transformers; a text's row
//! the same alone as in a batch. Also, on any machine: asking for cuda without a GPU is an
//! `Err` that says so, and the dtypes a device does not run are refused.
//!
//! Without a GPU the GPU tests print that they skipped and pass; `EMBER_REQUIRE_CUDA=1` makes
//! that a failure. On the GPU machine (see scripts/gpu/README.md), with the carried binary:
//!
//! ```sh
//! EMBER_REQUIRE_CUDA=1 EMBER_MINILM_DIR=target/gpu-bin/minilm-fp16 \
//!   EMBER_FIXTURES_DIR=tests/fixtures target/gpu-bin/cuda_e2e --nocapture --test-threads 1
//! ```
//!
//! On the emulated driver (`LD_LIBRARY_PATH=$(scripts/emulated-cuda.sh)`: kernels on the CPU)
//! the GPU tests encode only the first [`EMULATED_TEXTS`] reference texts.

use ember::{Device, Embedder, EmberError, Precision};
use ember_reference_tests::*;
use ember_tensor::{DType, WeightFile};

fn reference() -> ModelReference {
    read_fixture("minilm_reference.json")
}

fn load(
    dir: &std::path::Path,
    device: Device,
    dtype: Precision,
    batch: usize,
) -> Result<Embedder, EmberError> {
    Embedder::builder()
        .threads(2)
        .batch_size(batch)
        .device(device)
        .dtype(dtype)
        .load_dir(dir)
}

/// The GPU embedder of all-MiniLM-L6-v2, or `None` after saying why `test` is skipped (a
/// failure under `EMBER_REQUIRE_CUDA=1`). Errors other than "no GPU" fail the test.
fn cuda_or_skip(test: &str, dtype: Precision, batch: usize) -> Option<Embedder> {
    cuda_or_skip_dir(test, &minilm_dir(), dtype, batch)
}

/// [`cuda_or_skip`] for the model folder `dir`.
fn cuda_or_skip_dir(
    test: &str,
    dir: &std::path::Path,
    dtype: Precision,
    batch: usize,
) -> Option<Embedder> {
    match load(dir, Device::Cuda(0), dtype, batch) {
        Ok(embedder) => Some(embedder),
        Err(EmberError::Cuda(err)) if std::env::var("EMBER_REQUIRE_CUDA").as_deref() != Ok("1") => {
            eprintln!("{test}: skipped: {err}");
            None
        }
        Err(err) => panic!(
            "{test}: cannot load {} on cuda:0 in {dtype}: {err}",
            dir.display()
        ),
    }
}

/// Reference texts the GPU tests encode on the emulated driver: the first ones are short (the
/// empty text among them), so that a test takes seconds there.
const EMULATED_TEXTS: usize = 6;

/// The reference, cut to [`EMULATED_TEXTS`] texts on the emulated driver (call once the driver
/// is loaded).
fn gpu_reference() -> ModelReference {
    let mut reference = reference();
    if emulated_driver() {
        reference.texts.truncate(EMULATED_TEXTS);
        reference.embeddings.truncate(EMULATED_TEXTS);
    }
    reference
}

fn rows(embedder: &Embedder, texts: &[String]) -> Vec<Vec<f32>> {
    let embeddings = embedder.encode(texts).unwrap();
    embeddings.rows().map(<[f32]>::to_vec).collect()
}

fn agree(ours: &[Vec<f32>], theirs: &[Vec<f32>]) -> Agreement {
    let ours: Vec<&[f32]> = ours.iter().map(Vec::as_slice).collect();
    agreement(&ours, theirs)
}

/// Whether the folder stores its weights in f32 (the carried GPU copy is f16, which moves
/// rows by ~1e-4 whatever computes them).
fn stores_f32(dir: &std::path::Path) -> bool {
    let file = WeightFile::open(dir.join("model.safetensors")).unwrap();
    let name = file
        .names()
        .find(|n| n.ends_with("word_embeddings.weight"))
        .unwrap()
        .to_owned();
    file.stored_tensor(&name).unwrap().dtype() == DType::F32
}

#[test]
fn f32_matches_the_cpu_and_sentence_transformers() {
    let Some(gpu) = cuda_or_skip(
        "f32_matches_the_cpu_and_sentence_transformers",
        Precision::F32,
        32,
    ) else {
        return;
    };
    assert_eq!(
        (gpu.device(), gpu.dtype()),
        (Device::Cuda(0), Precision::F32)
    );
    let reference = gpu_reference();
    let ours = rows(&gpu, &reference.texts);
    let cpu = load(&minilm_dir(), Device::Cpu, Precision::F32, 32).unwrap();
    assert_f32_bounds(
        "cuda f32 vs cpu f32",
        agree(&ours, &rows(&cpu, &reference.texts)),
    );
    let a = agree(&ours, &reference.embeddings);
    if stores_f32(&minilm_dir()) {
        assert_f32_bounds("cuda f32 vs sentence-transformers", a);
    } else {
        assert_cosine_bound(
            "cuda f32 (f16-stored weights) vs sentence-transformers",
            a,
            0.999,
        );
    }
}

#[test]
fn bf16_and_f16_stay_within_cosine_0_999() {
    for dtype in [Precision::Bf16, Precision::F16] {
        let Some(gpu) = cuda_or_skip("bf16_and_f16_stay_within_cosine_0_999", dtype, 32) else {
            return;
        };
        assert_eq!(gpu.dtype(), dtype);
        let reference = gpu_reference();
        let a = agree(&rows(&gpu, &reference.texts), &reference.embeddings);
        assert_cosine_bound(&format!("cuda {dtype} vs sentence-transformers"), a, 0.999);
    }
}

/// The RoBERTa, MPNet, DistilBERT and ModernBERT families and the Dense module on the GPU
/// (position rows, MPNet's relative position bias, ModernBERT's rotary positions, GeGLU and
/// sliding windows, Dense after the device's pooling): every model of
/// tests/tests/model_families.rs against sentence-transformers.
#[test]
fn other_families_match_sentence_transformers() {
    #[derive(serde::Deserialize)]
    struct Reference {
        texts: Vec<String>,
        models: std::collections::BTreeMap<String, Model>,
    }
    #[derive(serde::Deserialize)]
    struct Model {
        embeddings: Vec<Vec<f32>>,
    }
    for file in [
        "tiny_roberta_reference.json",
        "tiny_xlmr_spm_reference.json",
        "tiny_mpnet_reference.json",
        "tiny_distilbert_dense_reference.json",
        "tiny_modernbert_reference.json",
        "tiny_nomic_reference.json",
        "tiny_gte_reference.json",
        "tiny_jina_reference.json",
    ] {
        // All 31–41 texts even on the emulated driver: the models are tiny (seconds there).
        let reference: Reference = read_fixture(file);
        for (folder, model) in &reference.models {
            let dir = fixtures_dir().join(folder);
            let config = ember_bert::BertConfig::from_file(&dir.join("config.json")).unwrap();
            for dtype in [Precision::F32, Precision::F16] {
                let test = "other_families_match_sentence_transformers";
                if dtype != Precision::F32 && !config.hidden_size.is_multiple_of(8) {
                    // tiny-bert's H = 52: refused at load for the tensor cores, not at run time.
                    match load(&dir, Device::Cuda(0), dtype, 16) {
                        Err(EmberError::Cuda(err))
                            if err.to_string().contains("multiples of 8") => {}
                        Err(EmberError::Cuda(err))
                            if !err.to_string().contains("tensor cores")
                                && std::env::var("EMBER_REQUIRE_CUDA").as_deref() != Ok("1") =>
                        {
                            eprintln!("{test}: skipped: {err}");
                            return;
                        }
                        Err(err) => panic!("{folder} {dtype}: {err}"),
                        Ok(_) => panic!(
                            "{folder} {dtype}: loaded with hidden_size {}",
                            config.hidden_size
                        ),
                    }
                    continue;
                }
                let Some(gpu) = cuda_or_skip_dir(test, &dir, dtype, 16) else {
                    return;
                };
                let a = agree(&rows(&gpu, &reference.texts), &model.embeddings);
                if dtype == Precision::F32 {
                    assert_f32_bounds(&format!("cuda f32 {folder} vs sentence-transformers"), a);
                } else {
                    assert_cosine_bound(&format!("cuda {dtype} {folder}"), a, 0.999);
                }
            }
        }
    }
}

/// `include_prompt: false` on the device's pooling (`pooling.cu` leaves the prompt's tokens
/// out): tiny-bert-prompts with all six modes, f32, against sentence-transformers under each
/// kind of prompt of tests/tests/prompts.rs's reference.
#[test]
fn include_prompt_false_matches_sentence_transformers() {
    #[derive(serde::Deserialize)]
    struct Reference {
        folder: String,
        pooling_config: serde_json::Value,
        texts: Vec<String>,
        cases: Vec<Case>,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        call: String,
        prompt_name: Option<String>,
        prompt: Option<String>,
        embeddings: Vec<Vec<f32>>,
    }
    let reference: Reference = read_fixture("tiny_exclude_prompt_reference.json");
    let dir = copy_with_pooling(&reference.folder, &reference.pooling_config);
    let test = "include_prompt_false_matches_sentence_transformers";
    let Some(gpu) = cuda_or_skip_dir(test, dir.path(), Precision::F32, 16) else {
        return;
    };
    for case in &reference.cases {
        let prompt = st_prompt(case.prompt.as_deref(), case.prompt_name.as_deref());
        let embeddings = gpu.encode_with_prompt(prompt, &reference.texts).unwrap();
        let ours: Vec<&[f32]> = embeddings.rows().collect();
        assert_f32_bounds(
            &format!("cuda f32 include_prompt false, {}", case.call),
            agreement(&ours, &case.embeddings),
        );
    }
}

#[test]
fn rows_are_the_same_alone_and_batched() {
    for dtype in [Precision::F32, Precision::Bf16, Precision::F16] {
        let Some(gpu) = cuda_or_skip("rows_are_the_same_alone_and_batched", dtype, 64) else {
            return;
        };
        let texts = gpu_reference().texts;
        let batched = rows(&gpu, &texts);
        for (i, text) in texts.iter().enumerate().step_by(7) {
            let alone = rows(&gpu, std::slice::from_ref(text));
            if dtype == Precision::F32 {
                // One fmaf chain per output, per-row LayerNorm, per-sequence attention and
                // pooling: nothing depends on the other rows.
                assert_eq!(alone[0], batched[i], "cuda f32, text {i}");
            } else {
                // The tensor-core GEMM's tile size depends on the batch's token count. Whether
                // that changes a row's bits is the hardware's (every kernel of a family adds
                // its k16 products in the same order; within an instruction the order is the
                // tensor cores'): said here, so that a GPU run shows it.
                let max_diff = alone[0]
                    .iter()
                    .zip(&batched[i])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                println!(
                    "cuda {dtype} text {i}: alone vs batched {} (max |diff| {max_diff:.1e})",
                    if alone[0] == batched[i] {
                        "bit-identical"
                    } else {
                        "differ"
                    }
                );
                let a = agree(&alone, &batched[i..i + 1]);
                assert_cosine_bound(
                    &format!("cuda {dtype} text {i} alone vs batched"),
                    a,
                    0.99999,
                );
            }
        }
    }
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    let tiny = fixtures_dir().join("tiny-bert");
    match load(&tiny, Device::Cuda(0), Precision::F32, 8) {
        Ok(embedder) => println!("a GPU is present ({}): nothing to check", embedder.device()),
        Err(err) => {
            let message = err.to_string();
            println!("{message}");
            assert!(matches!(err, EmberError::Cuda(_)), "{err:?}");
            assert!(
                message.starts_with("no CUDA driver found (libcuda.so)")
                    || message.starts_with("no CUDA device")
                    || message.contains("NVRTC"),
                "{message}"
            );
        }
    }
}

#[test]
fn dtypes_a_device_does_not_run_are_refused() {
    let tiny = fixtures_dir().join("tiny-bert");
    let err = load(&tiny, Device::Cuda(0), Precision::Int8, 8)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "options: dtype int8 runs on the CPU only; on cuda use f32, bf16 or f16"
    );
    let err = load(&tiny, Device::Cpu, Precision::F16, 8)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "options: dtype f16 runs on cuda only; on the CPU use f32, bf16 or int8"
    );
}

/// `CudaBertModel::enable_profile`: every op of every later forward is counted (but for the
/// first, which created the events), forwards of one text apart from batches, and the times
/// are finite. (Their values are the GPU's to show: on
/// the emulated driver the kernels run inside the launch, so GPU and host times agree.)
#[test]
fn profile_counts_every_op_of_each_forward() {
    use ember_cuda::{CudaBertModel, CudaDevice, Dtype};
    let tiny = fixtures_dir().join("tiny-bert");
    let device = match CudaDevice::open(0) {
        Ok(device) => device,
        Err(err) if std::env::var("EMBER_REQUIRE_CUDA").as_deref() != Ok("1") => {
            eprintln!("profile_counts_every_op_of_each_forward: skipped: {err}");
            return;
        }
        Err(err) => panic!("no GPU: {err}"),
    };
    let config = ember_bert::BertConfig::from_file(&tiny.join("config.json")).unwrap();
    let weights = WeightFile::open(tiny.join("model.safetensors")).unwrap();
    let (layers, h) = (config.num_hidden_layers, config.hidden_size);
    let mut model = CudaBertModel::load(device, config, &weights, Dtype::F32).unwrap();
    let mean = [ember_pooling::PoolingMode::Mean];
    let (ids, offsets) = ([2, 7, 3, 2, 3], [0, 3, 5]);
    let mut out = vec![0.0; 2 * h];
    model.embed(&ids, &offsets, &mean, true, &mut out).unwrap();
    assert!(model.profile_report().is_none(), "profiled before enabled");

    model.enable_profile();
    let unprofiled = out.clone();
    for _ in 0..3 {
        model.embed(&ids, &offsets, &mean, true, &mut out).unwrap();
        assert_eq!(out, unprofiled, "profiling changed the rows");
    }
    model
        .embed(&ids[..3], &offsets[..2], &mean, false, &mut out[..h])
        .unwrap();
    let report = model.profile_report().unwrap();
    println!("{report}");
    let (single, batches) = report.split_at(report.find("forwards of batches").unwrap());
    // The first profiled forward created the events: not counted.
    assert!(single.starts_with("forwards of one text: 1 forwards, 1 texts, 3 tokens"));
    assert!(batches.starts_with("forwards of batches: 2 forwards, 4 texts, 10 tokens"));
    // Each table: the op (a column of 28), its calls, then its GPU ms, share, GPU and host µs
    // a call.
    let calls = |table: &str, op: &str| -> Option<(u64, Vec<f64>)> {
        let line = table
            .lines()
            .find(|l| l.get(2..30).map(str::trim_end) == Some(op))?;
        let fields: Vec<&str> = line[30..].split_whitespace().collect();
        let times = fields[1..]
            .iter()
            .map(|f| f.trim_end_matches('%').parse().unwrap())
            .collect();
        Some((fields[0].parse().unwrap(), times))
    };
    for (table, forwards) in [(single, 1), (batches, 2)] {
        for (op, per_forward) in [
            ("upload ids, offsets", 1),
            ("embedding + layernorm", 1),
            ("qkv linear", layers),
            ("attention", layers),
            ("attention-out linear + R", layers),
            ("attention layernorm", layers),
            ("ffn-up linear (+ act)", layers),
            ("ffn-down linear + R", layers),
            ("output layernorm", layers),
            ("pooling", 1),
            ("download (+ wait)", 1),
        ] {
            let (count, times) = calls(table, op).unwrap_or_else(|| panic!("{op} missing"));
            assert_eq!(count, (forwards * per_forward) as u64, "{op}");
            assert!(
                times.iter().all(|t| t.is_finite() && *t >= 0.0),
                "{op}: {times:?}"
            );
        }
        // Normalize ran in the batches only.
        assert_eq!(
            calls(table, "normalize").map(|c| c.0),
            (forwards == 2).then_some(2)
        );
    }
}
