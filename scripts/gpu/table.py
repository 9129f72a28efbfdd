#!/usr/bin/env python3
"""Merges bench_gpu.sh's measurements into one markdown table (ratios first).

    python3 scripts/gpu/table.py --device TEXT --ember ember_gemm.jsonl --torch torch_gemm.jsonl
                                 [--st st.json] [--ember-e2e ember.json]
                                 [--ember-e2e-gemm wgmma=ember_wgmma.json ...] [--out FILE]
"""

import argparse
import datetime
import json
from pathlib import Path


def lines(path):
    p = Path(path)
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.is_file() else []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="")
    parser.add_argument("--ember", required=True)
    parser.add_argument("--torch", required=True)
    parser.add_argument("--st")
    parser.add_argument("--ember-e2e", help="`ember bench --device cuda --json` output")
    parser.add_argument("--ember-e2e-gemm", action="append", default=[], metavar="FAMILY=FILE",
                        help="the same with EMBER_CUDA_GEMM=FAMILY (repeatable)")
    parser.add_argument("--out")
    args = parser.parse_args()
    ember, torch_rows = lines(args.ember), lines(args.torch)
    key = lambda r: (r["t"], r["n"], r["k"], r["epilogue"], r["dtype"])
    cublas = {key(r): r for r in torch_rows}
    out = [f"# Ember CUDA vs PyTorch, {datetime.date.today()}, {args.device.strip()}", ""]
    out += ["## GEMM Y = X·Wᵀ (X [T, k], W [n, k]); median of 100, CUDA events", "",
            "| T | n × k | epilogue | dtype | Ember kernel (chosen) | Ember TFLOP/s | best Ember kernel | best TFLOP/s | cuBLAS TFLOP/s | chosen ÷ cuBLAS | best ÷ cuBLAS |",
            "|---:|---|---|---|---|---:|---|---:|---:|---:|---:|"]
    for k_ in sorted({key(r) for r in ember}):
        rows = [r for r in ember if key(r) == k_]
        chosen = next((r for r in rows if r["chosen"]), rows[0])
        best = max(rows, key=lambda r: r["tflops"])
        ref = cublas.get(k_)
        ratio = f"{chosen['tflops'] / ref['tflops']:.2f}" if ref else "—"
        best_ratio = f"{best['tflops'] / ref['tflops']:.2f}" if ref else "—"
        ref_tflops = f"{ref['tflops']:.1f}" if ref else "—"
        t, n, k, epilogue, dtype = k_
        out.append(f"| {t} | {n} × {k} | {epilogue or 'none'} | {dtype} | {chosen['kernel']} | {chosen['tflops']:.1f} | "
                   f"{best['kernel']} | {best['tflops']:.1f} | {ref_tflops} | {ratio} | {best_ratio} |")
    out += ["", "Goal (issue 5): chosen ÷ cuBLAS ≥ 0.80 for T ≥ 2400. The chosen kernels are mma.sync unless "
            "EMBER_CUDA_GEMM=wgmma or wgmma-tma; the Wgmma* rows are Hopper's wgmma kernels.", ""]
    out += ["## End to end (benches/corpus/wordnet-examples.txt)", ""]
    st = lines(args.st)[0] if args.st and Path(args.st).exists() and lines(args.st) else None
    if not args.st and not args.ember_e2e:
        out.append("Not run: no model folder was carried (scripts/gpu/build.sh --with-model).")
    else:
        out += ["| engine | texts/s | batch | p50 ms (1 text) | p99 ms |", "|---|---:|---:|---:|---:|"]
        if st:
            out.append(f"| sentence-transformers fp16 ({Path(st['model']).name}, torch {st['torch']}) | "
                       f"{st['texts_per_s']:.0f} | {st['batch_size']} | {st['p50_ms']:.2f} | {st['p99_ms']:.2f} |")
        else:
            out.append("| sentence-transformers fp16 | not measured (st_bench.py failed) | | | |")
        measured = []
        runs = [("", args.ember_e2e)] + [(f", EMBER_CUDA_GEMM={spec.split('=', 1)[0]}", spec.split("=", 1)[1])
                                         for spec in args.ember_e2e_gemm]
        for label, path in runs:
            e2e = lines(path)[0] if path and Path(path).exists() and lines(path) else None
            if e2e:
                out.append(f"| Ember CUDA {e2e.get('dtype', '?')}{label} | {e2e['sentences_per_s']:.0f} | {e2e['batch_size']} | "
                           f"{e2e['latency_ms_p50']:.2f} | {e2e['latency_ms_p99']:.2f} |")
                measured.append((label, e2e))
            elif path:
                out.append(f"| Ember CUDA{label} | not measured (ember bench --device cuda failed or was not run) | | | |")
        if measured and st:
            out.append("")
            for label, e2e in measured:
                out.append(f"Ember{label} ÷ sentence-transformers: throughput {e2e['sentences_per_s'] / st['texts_per_s']:.2f}× "
                           f"(goal ≥ 2), batch-1 p50 {e2e['latency_ms_p50'] / st['p50_ms']:.2f} (goal ≤ 0.5).")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
