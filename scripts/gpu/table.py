#!/usr/bin/env python3
"""Merges bench_gpu.sh's measurements into one markdown table (ratios first).

    python3 scripts/gpu/table.py --device TEXT --ember ember_gemm.jsonl --torch torch_gemm.jsonl
                                 [--st st.json] [--ember-e2e ember_e2e.jsonl] [--out FILE]

--ember-e2e: one `ember bench --device cuda --json` object a line, each with a leading
"gemm": FAMILY ("default": EMBER_CUDA_GEMM unset); a line with "error" and no figures (a run that
failed or was skipped), a missing or an empty file give "not measured" rows.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path


def lines(path):
    """The JSON objects of a JSON lines file, one a line; none for a missing file. A line that is
    not a JSON object (a run killed mid-write) is left out, with a warning."""
    p = Path(path) if path else None
    if not p or not p.is_file():
        return []
    rows = []
    for number, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            print(f"table.py: {path}:{number}: not a JSON object, left out", file=sys.stderr)
    return rows


E2E_FIELDS = ("sentences_per_s", "batch_size", "latency_ms_p50", "latency_ms_p99")

# The model folders bench_gpu.sh runs end to end, by their folder names.
MODEL_NAMES = {
    "minilm-fp16": "all-MiniLM-L6-v2 (its weights stored in f16; hidden 384, 6 layers, max_seq_length 256)",
    "sbert-base-seeded": "SBERT-base-nli-v2's shape with seeded weights (hidden 768, 12 layers, FFN 3072, "
                         "max_seq_length 75, mean pooling)",
}


def e2e_label(row):
    dtype = row.get("dtype", "f16")
    gemm = row.get("gemm", "default")
    return f"Ember CUDA {dtype}, default GEMM" if gemm == "default" else f"Ember CUDA {dtype}, EMBER_CUDA_GEMM={gemm}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="")
    parser.add_argument("--ember", required=True)
    parser.add_argument("--torch", required=True)
    parser.add_argument("--st")
    parser.add_argument("--ember-e2e", metavar="FILE",
                        help='`ember bench --device cuda --json` lines, each with "gemm": FAMILY')
    parser.add_argument("--out")
    args = parser.parse_args()
    has = lambda r, fields: all(f in r for f in fields)
    ember = [r for r in lines(args.ember) if has(r, ("t", "n", "k", "epilogue", "dtype", "kernel", "tflops"))]
    torch_rows = [r for r in lines(args.torch) if has(r, ("t", "n", "k", "epilogue", "dtype", "tflops"))]
    key = lambda r: (r["t"], r["n"], r["k"], r["epilogue"], r["dtype"])
    cublas = {key(r): r for r in torch_rows}
    out = [f"# Ember CUDA vs PyTorch, {datetime.date.today()}, {args.device.strip()}", ""]
    out += ["## GEMM Y = X·Wᵀ (X [T, k], W [n, k]); median of 100 calls queued back to back behind a gate, CUDA events", "",
            "| T | n × k | epilogue | dtype | Ember kernel (chosen) | Ember TFLOP/s | best Ember kernel | best TFLOP/s | cuBLAS TFLOP/s | chosen ÷ cuBLAS | best ÷ cuBLAS | chosen ÷ cuBLAS, paired | best ÷ cuBLAS, paired |",
            "|---:|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for k_ in sorted({key(r) for r in ember}):
        rows = [r for r in ember if key(r) == k_]
        # No "chosen" row when the chosen kernel's step was skipped or failed: not measured.
        chosen = next((r for r in rows if r.get("chosen")), None)
        best = max(rows, key=lambda r: r["tflops"])
        ref = cublas.get(k_)
        ratio = f"{chosen['tflops'] / ref['tflops']:.2f}" if ref and chosen else "—"
        best_ratio = f"{best['tflops'] / ref['tflops']:.2f}" if ref else "—"
        ref_tflops = f"{ref['tflops']:.1f}" if ref else "—"
        # Paired: gemm_bench --cublas timed the kernel and cuBLAS in one sequence (cublas_ms).
        paired = lambda r: r["cublas_ms"] / r["median_ms"] if r and r.get("cublas_ms") and r.get("median_ms") else None
        pairs = [p for p in map(paired, rows) if p]
        chosen_paired = f"{paired(chosen):.2f}" if paired(chosen) else "—"
        best_paired = f"{max(pairs):.2f}" if pairs else "—"
        t, n, k, epilogue, dtype = k_
        # † : measured without the gate (host time may be inside); rows from before it have no "gated".
        mark = lambda r: "" if r is None or r.get("gated", True) else " †"
        out.append(f"| {t} | {n} × {k} | {epilogue or 'none'} | {dtype} | {chosen['kernel'] if chosen else 'not measured'} | "
                   f"{format(chosen['tflops'], '.1f') + mark(chosen) if chosen else '—'} | "
                   f"{best['kernel']} | {best['tflops']:.1f}{mark(best)} | {ref_tflops}{mark(ref)} | {ratio} | {best_ratio} | "
                   f"{chosen_paired} | {best_paired} |")
    out += ["", "Goal (issue 5): chosen ÷ cuBLAS ≥ 0.80 for T ≥ 2400; chosen = what gemm::linear picks under the "
            "default family (EMBER_CUDA_GEMM unset) on this device. The Wgmma* rows are Hopper's wgmma kernels. "
            "Each side's 100 calls are queued while the stream is held (Ember: a wait on a host word; PyTorch: "
            "torch.cuda._sleep), so no host time is inside a call's time; † marks a figure measured without that gate. "
            "cuBLAS TFLOP/s and the first two ratios: torch.matmul (F.gelu(F.linear) for + b + GELU) in torch_gemm.py's "
            "process; the paired ratios: cublasGemmEx (the library PyTorch loads) in gemm_bench's own process, each kernel's "
            "calls and cuBLAS's in turn in one sequence (plain products only).", ""]
    out += ["## End to end: benches/corpus/wordnet-examples.txt ×10 (12,440 texts)", ""]
    st_rows = [r for r in lines(args.st) if has(r, ("texts_per_s", "batch_size", "p50_ms", "p99_ms"))]
    runs = lines(args.ember_e2e)
    # One table per model folder (st_bench.py's and ember bench's "model"; an error line names
    # it too); rows without one are the carried MiniLM's.
    folder = lambda r: Path(str(r.get("model") or "minilm-fp16")).name
    models = list(dict.fromkeys([folder(r) for r in st_rows] + [folder(r) for r in runs])) or ["minilm-fp16"]
    if not args.st and not args.ember_e2e:
        out.append("Not run: no model folder was carried (scripts/gpu/build.sh --with-model).")
        models = []
    for model in models:
        out += [f"### {MODEL_NAMES.get(model, model)}", "",
                "| engine | texts/s | batch | p50 ms (1 text) | p99 ms |", "|---|---:|---:|---:|---:|"]
        st = next((r for r in st_rows if folder(r) == model), None)
        if st:
            out.append(f"| sentence-transformers fp16 ({model}, torch {st.get('torch', '?')}) | "
                       f"{st['texts_per_s']:.0f} | {st['batch_size']} | {st['p50_ms']:.2f} | {st['p99_ms']:.2f} |")
        else:
            out.append("| sentence-transformers fp16 | not measured (st_bench.py failed) | | | |")
        measured = []
        model_runs = [r for r in runs if folder(r) == model]
        for e2e in model_runs:
            label = e2e_label(e2e)
            if all(isinstance(e2e.get(k), (int, float)) for k in E2E_FIELDS):
                out.append(f"| {label} | {e2e['sentences_per_s']:.0f} | {e2e['batch_size']} | "
                           f"{e2e['latency_ms_p50']:.2f} | {e2e['latency_ms_p99']:.2f} |")
                measured.append((label, e2e))
            else:
                why = str(e2e.get("error") or "no figures").replace("|", "\\|")
                out.append(f"| {label} | not measured (ember bench --device cuda: {why}) | | | |")
        if args.ember_e2e and not model_runs:
            out.append("| Ember CUDA f16 | not measured (ember bench --device cuda failed or was not run) | | | |")
        if measured and st:
            out.append("")
            for label, e2e in measured:
                p50 = f"{e2e['latency_ms_p50'] / st['p50_ms']:.2f}" if st["p50_ms"] else "—"
                throughput = f"{e2e['sentences_per_s'] / st['texts_per_s']:.2f}×" if st["texts_per_s"] else "—"
                out.append(f"{label} ÷ sentence-transformers: throughput {throughput} "
                           f"(goal ≥ 2), batch-1 p50 {p50} (goal ≤ 0.5).")
        out.append("")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
