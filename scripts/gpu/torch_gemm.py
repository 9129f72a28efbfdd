#!/usr/bin/env python3
"""cuBLAS (through PyTorch) on the shapes and protocol of crates/ember-cuda/examples/gemm_bench.rs.

Y = X·Wᵀ with X [T, k], W [n, k], T ∈ {2400, 4800}, (n, k) ∈ {(768, 768), (3072, 768),
(768, 3072)}: torch.matmul(x, w.t()); FFN up also as F.gelu(F.linear(x, w, b)) (exact GELU), the
fused case Ember runs in one kernel. Random inputs in [-1, 1) (W scaled by 1/√k), 4 input sets
in turn, 10 warm-up calls, then the median of 100 calls each timed with CUDA events.

    python3 scripts/gpu/torch_gemm.py [--dtype bf16|f16] [--json FILE]
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

SETS, WARM_UP, ITERATIONS = 4, 10, 100
SHAPES = [(768, 768, "attn_out"), (3072, 768, "ffn_up"), (768, 3072, "ffn_down")]


def measure(fn):
    for i in range(WARM_UP):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(ITERATIONS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    parser.add_argument("--json", help="also write JSON lines here")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    device = torch.device("cuda")
    # cuBLAS as PyTorch uses it by default (its reduced-precision reductions setting untouched).
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda} {args.dtype}")
    out = open(args.json, "a") if args.json else None  # appends: bench_gpu.sh runs bf16, then f16
    for t in (2400, 4800):
        for n, k, name in SHAPES:
            gen = torch.Generator(device=device).manual_seed(t * n + k)
            rand = lambda *shape: torch.rand(*shape, generator=gen, device=device) * 2 - 1
            xs = [rand(t, k).to(dtype) for _ in range(SETS)]
            ws = [(rand(n, k) / k**0.5).to(dtype) for _ in range(SETS)]
            bs = [rand(n).to(dtype) for _ in range(SETS)]
            variants = [("", lambda i: torch.matmul(xs[i % SETS], ws[i % SETS].t()))]
            if name == "ffn_up":
                variants.append(("+b+gelu", lambda i: F.gelu(F.linear(xs[i % SETS], ws[i % SETS], bs[i % SETS]))))
            for epilogue, fn in variants:
                ms = measure(fn)
                tflops = 2 * t * n * k / (ms * 1e-3) / 1e12
                case = f"gemm/T={t}/{name}_{n}x{k}{epilogue}/{args.dtype}"
                print(f"{case:44} {'cublas':>11} {ms * 1e3:9.1f} µs {tflops:7.1f} TFLOP/s")
                if out:
                    out.write(json.dumps(dict(impl="torch", kernel="cublas", t=t, n=n, k=k, epilogue=epilogue,
                                              dtype=args.dtype, median_ms=ms, tflops=tflops)) + "\n")


if __name__ == "__main__":
    main()
