#!/usr/bin/env python3
"""sentence-transformers in fp16 on the GPU: the end-to-end baseline Ember's CUDA path must beat.

Same protocol as scripts/peers (throughput: the whole corpus, length-sorted, batches of B texts
each padded to its own longest, tokenisation included, one warm-up pass then the best of R;
latency: each of the first L texts alone, p50/p99, synchronised), with
SentenceTransformer(DIR, device="cuda").half().

    python3 scripts/gpu/st_bench.py --model DIR [--corpus FILE] [--batch-size 128] [--json FILE]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

REPO = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", default=str(REPO / "benches/corpus/wordnet-examples.txt"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-texts", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    texts = Path(args.corpus).read_text(encoding="utf-8").splitlines()
    model = SentenceTransformer(args.model, device="cuda").half()
    model.eval()

    def encode(batch, batch_size):
        result = model.encode(batch, batch_size=batch_size, convert_to_numpy=True)
        torch.cuda.synchronize()
        return result

    encode(texts, args.batch_size)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        encode(texts, args.batch_size)  # sorts by length itself, pads each batch to its longest
        times.append(time.perf_counter() - start)
    best = min(times)
    latencies = []
    for text in texts[: args.latency_texts]:
        start = time.perf_counter()
        encode([text], 1)
        latencies.append((time.perf_counter() - start) * 1e3)
    latencies.sort()
    result = dict(
        impl="sentence-transformers",
        model=args.model,
        dtype="fp16",
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        texts=len(texts),
        batch_size=args.batch_size,
        texts_per_s=len(texts) / best,
        p50_ms=statistics.median(latencies),
        p99_ms=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    )
    print(json.dumps(result))
    if args.json:  # appended: bench_gpu.sh runs it for each model folder
        with open(args.json, "a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
