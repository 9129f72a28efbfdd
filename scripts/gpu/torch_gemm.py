#!/usr/bin/env python3
"""cuBLAS (through PyTorch) on the shapes and protocol of crates/ember-cuda/examples/gemm_bench.rs.

Y = X·Wᵀ with X [T, k], W [n, k], T ∈ {2400, 4800}, (n, k) ∈ {(768, 768), (3072, 768),
(768, 3072)}: torch.matmul(x, w.t()); FFN up also as F.gelu(F.linear(x, w, b)) (exact GELU), the
fused case Ember runs in one kernel. Random inputs in [-1, 1) (W scaled by 1/√k), 4 input sets
in turn, 10 warm-up calls, then 100 calls queued back to back behind a gate, the median of their
GPU times (a CUDA event between each two). The gate is `torch.cuda._sleep`, a kernel that spins
while Python queues every call, so that no host time (Python and PyTorch's dispatch, 10 µs or
more a call, against kernels of 10–60 µs) falls inside a call's time; it must still be spinning
when the last call is queued, else it is tried again longer, and a case measured without it says
"not gated". Ember's gemm_bench does the same with CudaDevice::time_each_ms (its gate a stream
waiting on a host word).

    python3 scripts/gpu/torch_gemm.py [--dtype bf16|f16] [--json FILE]
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

SETS, WARM_UP, ITERATIONS = 4, 10, 100
SHAPES = [(768, 768, "attn_out"), (3072, 768, "ffn_up"), (768, 3072, "ffn_down")]


# Spin cycles of the gate's first try (~25 ms at an H100/H200's 1.98 GHz), ×4 a retry.
GATE_CYCLES = 50_000_000


def measure(fn):
    """(median ms, gated): see the module's documentation."""
    for i in range(WARM_UP):
        fn(i)
    torch.cuda.synchronize()
    sleep = getattr(torch.cuda, "_sleep", None)
    cycles, gated = GATE_CYCLES, False
    for _ in range(3):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(ITERATIONS + 1)]
        if sleep:
            sleep(cycles)
        events[0].record()
        for i in range(ITERATIONS):
            fn(i)
            events[i + 1].record()
        gated = bool(sleep) and not events[0].query()  # the gate still spins: nothing has run
        events[-1].synchronize()
        if gated or not sleep:
            break
        cycles *= 4
    return statistics.median(a.elapsed_time(b) for a, b in zip(events, events[1:])), gated


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
                ms, gated = measure(fn)
                tflops = 2 * t * n * k / (ms * 1e-3) / 1e12
                case = f"gemm/T={t}/{name}_{n}x{k}{epilogue}/{args.dtype}"
                print(f"{case:44} {'cublas':>11} {ms * 1e3:9.1f} µs {tflops:7.1f} TFLOP/s"
                      + ("" if gated else "  (not gated)"))
                if out:
                    out.write(json.dumps(dict(impl="torch", kernel="cublas", t=t, n=n, k=k, epilogue=epilogue,
                                              dtype=args.dtype, median_ms=ms, tflops=tflops, gated=gated)) + "\n")


if __name__ == "__main__":
    main()
