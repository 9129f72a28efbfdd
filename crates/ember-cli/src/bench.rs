//! `ember bench`: throughput and latency of a model on a corpus, as ratios to the machine's
//! measured FMA peak.
//!
//! Protocol (the peers script, `scripts/peers/bench_peers.py`, runs ONNX Runtime and
//! sentence-transformers the same way):
//! - load the model (timed: `load_ms`), tokenize every text once to count its tokens;
//! - one warm-up pass, then `repeats` passes of `encode_into` over the whole corpus in batches
//!   of `batch_size` (the embedder sorts by length); the best pass gives `sentences_per_s`,
//!   `tokens_per_s` and `gflops` (encoder FLOPs, see `BertConfig::encoder_flops`, over time);
//! - single-text latency: each of the first `latency_texts` texts encoded alone, p50 and p99;
//! - with `--dtype` other than f32, the same model is also loaded in f32 (the baseline) and
//!   timed in turns with it, pass for pass and text for text, so `speedup_vs_f32` and
//!   `latency_ratio_vs_f32` are ratios measured in one run; `min_cosine_vs_f32` compares
//!   every embedding with its f32 counterpart;
//! - last, the FMA probe on `threads` cores at once (`peak_gflops`) and on one
//!   (`peak_gflops_1thread`), in the same process, so `peak_share = gflops / peak_gflops` is
//!   a ratio measured in one run.

use std::time::Instant;

use ember::Embedder;
use ember_cpu::active_isa;
use ember_cpu::probe::{fma_peak_gflops, fma_peak_gflops_threads};
use serde_json::json;

use crate::CliError;

/// What `ember bench` measures; see the module docs.
pub struct BenchOptions {
    pub repeats: usize,
    pub latency_texts: usize,
}

/// Runs the benchmark and returns its report as one JSON object.
pub fn run_bench(
    model: &str,
    embedder: &Embedder,
    baseline: Option<&Embedder>,
    load_ms: f64,
    texts: &[String],
    options: &BenchOptions,
) -> Result<serde_json::Value, CliError> {
    if texts.is_empty() {
        return Err(CliError::Usage("the benchmark corpus is empty".into()));
    }
    if options.repeats == 0 {
        return Err(CliError::Usage("--repeats must be at least 1".into()));
    }
    let (tokens, flops) = embedder.encoder_work(texts)?;

    let dim = embedder.dim();
    let mut out = vec![0f32; texts.len() * dim];
    let mut base_out = vec![0f32; if baseline.is_some() { out.len() } else { 0 }];
    embedder.encode_into(texts, &mut out)?;
    if let Some(base) = baseline {
        base.encode_into(texts, &mut base_out)?;
    }
    let timed = |e: &Embedder, texts: &[String], out: &mut [f32]| -> Result<f64, CliError> {
        let start = Instant::now();
        e.encode_into(texts, out)?;
        Ok(start.elapsed().as_secs_f64())
    };
    let (mut best, mut base_best) = (f64::MAX, f64::MAX);
    for _ in 0..options.repeats {
        best = best.min(timed(embedder, texts, &mut out)?);
        if let Some(base) = baseline {
            base_best = base_best.min(timed(base, texts, &mut base_out)?);
        }
    }

    let latency_texts = &texts[..options.latency_texts.min(texts.len())];
    let mut latencies_ms = Vec::with_capacity(latency_texts.len());
    let mut base_latencies_ms = Vec::with_capacity(latency_texts.len());
    let mut row = vec![0f32; dim];
    for text in latency_texts {
        let one = std::slice::from_ref(text);
        latencies_ms.push(timed(embedder, one, &mut row)? * 1e3);
        if let Some(base) = baseline {
            base_latencies_ms.push(timed(base, one, &mut row)? * 1e3);
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    base_latencies_ms.sort_by(f64::total_cmp);
    // Cosine of each embedding with its f32 counterpart.
    let cosines: Vec<f64> = out
        .chunks_exact(dim)
        .zip(base_out.chunks_exact(dim))
        .map(|(a, b)| ember::similarity::cosine(a, b) as f64)
        .collect();

    let isa = active_isa();
    let threads = embedder.threads();
    let peak = fma_peak_gflops_threads(isa, 200.0, threads);
    let peak_1thread = fma_peak_gflops(isa, 200.0);
    let gflops = flops / best / 1e9;
    let p50 = percentile(&latencies_ms, 0.50);
    let base_p50 = percentile(&base_latencies_ms, 0.50);
    let baseline_report = baseline.map(|_| {
        json!({
            "f32_sentences_per_s": texts.len() as f64 / base_best,
            "speedup_vs_f32": base_best / best,
            "f32_latency_ms_p50": base_p50,
            "latency_ratio_vs_f32": p50.zip(base_p50).map(|(a, b)| a / b),
            "min_cosine_vs_f32": cosines.iter().copied().reduce(f64::min),
            "mean_cosine_vs_f32": cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
        })
    });
    let mut report = json!({
        "model": model,
        "dtype": embedder.dtype().name(),
        "device": embedder.device().to_string(),
        "isa": isa.name(),
        "texts": texts.len(),
        "tokens": tokens,
        "threads": threads,
        "batch_size": embedder.batch_size(),
        "load_ms": load_ms,
        "seconds": best,
        "sentences_per_s": texts.len() as f64 / best,
        "tokens_per_s": tokens as f64 / best,
        "latency_texts": latencies_ms.len(),
        "latency_ms_p50": p50,
        "latency_ms_p99": percentile(&latencies_ms, 0.99),
        "gflops": gflops,
        "peak_gflops": peak,
        "peak_gflops_1thread": peak_1thread,
        "peak_share": peak.map(|p| gflops / p),
    });
    if let (Some(extra), Some(map)) = (baseline_report, report.as_object_mut()) {
        if let Some(extra) = extra.as_object() {
            map.extend(extra.clone());
        }
    }
    Ok(report)
}

/// The `q`-quantile of sorted `values` (nearest rank); `None` when empty.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((q * sorted.len() as f64).ceil() as usize).saturating_sub(1);
    Some(sorted[rank.min(last)])
}

/// A human-readable form of the report (the default without `--json`).
pub fn describe(report: &serde_json::Value) -> String {
    let num = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    format!(
        "{model}: {texts} texts, {tokens} tokens, {threads} threads, batch {batch}, {isa}\n\
         throughput  {sps:.1} sentences/s, {tps:.0} tokens/s\n\
         latency     p50 {p50:.2} ms, p99 {p99:.2} ms (one text at a time)\n\
         compute     {gflops:.1} GFLOP/s = {share:.1} % of the FMA peak ({peak:.1} GFLOP/s on \
         {threads} threads, {peak1:.1} on one)\n\
         load        {load:.0} ms{versus}",
        model = report["model"].as_str().unwrap_or("?"),
        texts = num("texts"),
        tokens = num("tokens"),
        threads = num("threads"),
        batch = num("batch_size"),
        isa = report["isa"].as_str().unwrap_or("?"),
        sps = num("sentences_per_s"),
        tps = num("tokens_per_s"),
        p50 = num("latency_ms_p50"),
        p99 = num("latency_ms_p99"),
        gflops = num("gflops"),
        share = 100.0 * num("peak_share"),
        peak = num("peak_gflops"),
        peak1 = num("peak_gflops_1thread"),
        load = num("load_ms"),
        versus = if report.get("speedup_vs_f32").is_some() {
            format!(
                "\n{dtype} vs f32  {speedup:.2}x throughput, {lat:.2}x p50 latency, cosine to f32 \
                 min {min:.6} mean {mean:.6}",
                dtype = report["dtype"].as_str().unwrap_or("?"),
                speedup = num("speedup_vs_f32"),
                lat = num("latency_ratio_vs_f32"),
                min = num("min_cosine_vs_f32"),
                mean = num("mean_cosine_vs_f32"),
            )
        } else {
            String::new()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v[..1], 0.99), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
