#!/usr/bin/env python3
"""Ember vs ONNX Runtime vs sentence-transformers: one run, same corpus, same thread count.

For each model, three engines encode benches/corpus/wordnet-examples.txt under one protocol:

  throughput  the whole corpus, in batches of B texts taken in length order (longest first),
              each batch padded to its own longest text; one warm-up pass, then the best of R
              passes. Timed from raw strings to final embeddings (tokenisation included).
  latency     each of the first L texts encoded alone (batch 1); p50 and p99 in ms.

  ember                  `ember bench ... --json` as a subprocess (its own timing, same protocol)
  onnxruntime            HF BertModel -> torch.onnx.export (TorchScript exporter, opset 17,
                         dynamic batch/sequence) -> onnxruntime.transformers optimize_model
                         (model_type="bert", f32, default fusions) -> InferenceSession
                         (intra_op=THREADS, inter_op=1, sequential, ORT_ENABLE_ALL); mean pooling
                         and L2 normalisation (if the folder has a Normalize module) in numpy
  sentence-transformers  SentenceTransformer(dir, device="cpu").encode(texts, batch_size=B),
                         torch.set_num_threads(THREADS)

The result is the ratios (Ember / ORT, Ember / ST, Ember's share of the FMA peak), not absolute
times: the machine is shared. Needs the venv of scripts/peers/requirements.txt; see README.md.
"""

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ember" / "models"
MODELS = ("minilm", "sbert-base")

# SBERT-base-nli-v2's shape (bert-base-uncased): the seeded random stand-in.
SBERT_BASE_CONFIG = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)
SBERT_BASE_MAX_SEQ = 75
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per batch in the throughput run (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed throughput passes, best kept (default 3)")
    p.add_argument("--latency-texts", type=int, default=200, help="first L texts encoded alone (default 200)")
    p.add_argument("--models", default="minilm,sbert-base", help="comma list of: " + ",".join(MODELS))
    p.add_argument("--corpus", default=str(REPO / "benches/corpus/wordnet-examples.txt"))
    p.add_argument("--ember", default=str(REPO / "target/release/ember"), help="ember binary")
    p.add_argument("--out", default=str(REPO / "benches/results/peers.md"), help="markdown report ('' for none)")
    p.add_argument("--minilm-dir", default=None, help="all-MiniLM-L6-v2 folder (default: scripts/fetch-model.sh)")
    p.add_argument("--sbert-base-dir", default=str(CACHE / "sbert-base-seeded"),
                   help="seeded SBERT-base-shaped folder, made once if absent")
    p.add_argument("--skip-ember", action="store_true", help="measure only the Python peers")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="before each engine, wait up to S seconds for other processes to go idle (default 0)")
    a = p.parse_args()
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in a.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r} (known: {', '.join(MODELS)})")
    if a.threads < 1 or a.batch_size < 1 or a.repeats < 1 or a.latency_texts < 1:
        p.error("--threads, --batch-size, --repeats and --latency-texts must be >= 1")
    return a


ARGS = parse_args()
# Thread caps must be in the environment before torch / tokenizers start their pools.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
    os.environ[var] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from onnxruntime.transformers.optimizer import optimize_model  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Machine, versions

def machine_info():
    model, flags = "?", set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                model = v.strip()
            elif k.strip() == "Flags":
                flags = set(v.split())
    except (OSError, subprocess.CalledProcessError):
        pass
    if not flags and Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    want = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": {f: (f in flags) for f in want},
        "kernel": platform.release(),
    }


def cpu_seconds():
    """(CPU seconds busy on the whole machine, CPU seconds of this process and its children)."""
    busy = 0.0
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f[:7])
        busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def ember_version(ember):
    try:
        v = subprocess.run([ember, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        v = v.removeprefix("ember ").strip() or "?"
    except OSError:
        v = "(not found)"
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        rev = rev + ("+uncommitted" if dirty else "")
    except OSError:
        rev = "?"
    return f"{v} (repo {rev})"


def versions(ember):
    return {
        "ember": ember_version(ember),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Model folders

def minilm_dir():
    if ARGS.minilm_dir:
        return Path(ARGS.minilm_dir)
    out = subprocess.run(["bash", str(REPO / "scripts/fetch-model.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"fetch-model.sh failed:\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


def sbert_base_dir(minilm):
    """A complete sentence-transformers folder: seeded random BertModel, SBERT-base shape."""
    dest = Path(ARGS.sbert_base_dir)
    if (dest / "model.safetensors").is_file() and (dest / "modules.json").is_file():
        return dest
    log(f"making {dest} (seeded random BertModel, SBERT-base-nli-v2 shape)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".sbert-base.", dir=dest.parent))
    work.chmod(0o755)
    try:
        torch.manual_seed(0)
        model = transformers.BertModel(transformers.BertConfig(**SBERT_BASE_CONFIG)).eval()
        model.save_pretrained(work, safe_serialization=True)
        for f in TOKENIZER_FILES:  # bert-base-uncased's WordPiece vocab, lower-casing
            shutil.copy(minilm / f, work / f)
        (work / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ], indent=2) + "\n")
        (work / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": SBERT_BASE_MAX_SEQ, "do_lower_case": False}, indent=2) + "\n")
        (work / "1_Pooling").mkdir()
        (work / "1_Pooling/config.json").write_text(json.dumps({
            "word_embedding_dimension": SBERT_BASE_CONFIG["hidden_size"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }, indent=2) + "\n")
        (work / "README.md").write_text(
            "Seeded random stand-in with SBERT-base-nli-v2's shape (BertModel hidden 768, 12 layers, "
            "12 heads, intermediate 3072, vocab 30522, gelu), torch.manual_seed(0), f32; mean pooling, "
            f"max_seq_length {SBERT_BASE_MAX_SEQ}, no Normalize. Made by scripts/peers/bench_peers.py "
            f"(torch {torch.__version__}, transformers {transformers.__version__}). For timing only: "
            "its embeddings mean nothing.\n")
        try:
            os.rename(work, dest)
        except OSError:
            if not (dest / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def has_normalize(folder):
    mods = json.loads((Path(folder) / "modules.json").read_text())
    return any(m["type"].endswith("Normalize") for m in mods)


# ---------------------------------------------------------------------------------------------
# Timing helpers

def best_of(fn, repeats):
    fn()  # warm-up pass
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def latencies_ms(encode_one, texts):
    for t in texts[:5]:  # warm the batch-1 path
        encode_one(t)
    lat = []
    for t in texts:
        t0 = time.perf_counter()
        encode_one(t)
        lat.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def result(name, n_texts, n_tokens, seconds, p50, p99, **extra):
    r = {"engine": name, "texts": n_texts, "tokens": n_tokens,
         "sentences_per_s": n_texts / seconds, "tokens_per_s": n_tokens / seconds,
         "latency_ms_p50": p50, "latency_ms_p99": p99}
    r.update(extra)
    return r


# ---------------------------------------------------------------------------------------------
# Engines

def run_ember(folder, corpus):
    cmd = [ARGS.ember, "bench", "--model", str(folder), "--input", str(corpus),
           "--batch-size", str(ARGS.batch_size), "--threads", str(ARGS.threads),
           "--repeats", str(ARGS.repeats), "--latency-texts", str(ARGS.latency_texts), "--json"]
    log("  ember:", " ".join(shlex.quote(c) for c in cmd))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except OSError as e:
        return {"engine": "ember", "error": f"{ARGS.ember}: {e.strerror}"}
    lines = [ln for ln in out.stdout.splitlines() if ln.lstrip().startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        return {"engine": "ember", "error": f"exit {out.returncode}: " + " | ".join(tail)}
    j = json.loads(lines[-1])
    r = {"engine": "ember"}
    r.update(j)
    if "peak_share" not in r and r.get("peak_gflops"):
        r["peak_share"] = r["gflops"] / r["peak_gflops"]
    return r


def ember_embeddings(folder, corpus, out_dir):
    """Untimed: Ember's embeddings of the corpus (for the agreement check), or None."""
    path = Path(out_dir) / "ember.npy"
    cmd = [ARGS.ember, "embed", "--model", str(folder), "--input", str(corpus),
           "--batch-size", str(ARGS.batch_size), "--threads", str(ARGS.threads), "-o", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except OSError:
        return None
    if out.returncode != 0 or not path.is_file():
        return None
    return np.load(path)


def run_st(st, texts, n_tokens):
    bs = ARGS.batch_size

    def enc_all():
        return st.encode(texts, batch_size=bs, show_progress_bar=False, convert_to_numpy=True)

    def enc_one(t):
        return st.encode([t], batch_size=1, show_progress_bar=False, convert_to_numpy=True)

    secs, emb = best_of(enc_all, ARGS.repeats)
    p50, p99 = latencies_ms(enc_one, texts[:ARGS.latency_texts])
    return result("sentence-transformers", len(texts), n_tokens, secs, p50, p99), emb


class _Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state


def export_onnx(folder, work):
    """HF BertModel (eager attention, so ORT's BERT fusions match) -> optimised f32 ONNX."""
    cfg = transformers.BertConfig.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    raw, opt = Path(work) / "model.onnx", Path(work) / "model-opt.onnx"
    ids = torch.ones(2, 8, dtype=torch.long)
    axes = {k: {0: "batch", 1: "sequence"}
            for k in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(_Wrap(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(raw),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)
    del model
    om = optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads,
                        hidden_size=cfg.hidden_size, use_gpu=False)
    fused = {k: v for k, v in om.get_fused_operator_statistics().items() if v}
    om.save_model_to_file(str(opt))
    raw.unlink()
    return opt, fused


def run_ort(onnx_path, tokenizer, max_len, normalize, texts, n_tokens):
    so = ort.SessionOptions()
    so.intra_op_num_threads = ARGS.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    pad = tokenizer.pad_token_id or 0
    bs = ARGS.batch_size

    def encode(batch_texts, batch_size):
        ids = tokenizer(batch_texts, truncation=True, max_length=max_len, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lens, kind="stable")  # longest first, like Ember and ST
        out = None
        for s in range(0, len(ids), batch_size):
            idx = order[s:s + batch_size]
            width = int(lens[idx].max())
            input_ids = np.full((len(idx), width), pad, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                input_ids[r, :lens[i]] = ids[i]
                mask[r, :lens[i]] = 1
            feed = {"input_ids": input_ids, "attention_mask": mask}
            if "token_type_ids" in inputs:
                feed["token_type_ids"] = np.zeros_like(input_ids)
            hidden = sess.run(None, feed)[0]
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            if normalize:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((len(ids), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out

    secs, emb = best_of(lambda: encode(texts, bs), ARGS.repeats)
    p50, p99 = latencies_ms(lambda t: encode([t], 1), texts[:ARGS.latency_texts])
    return result("onnxruntime", len(texts), n_tokens, secs, p50, p99), emb


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(axis=1)
    return float(c.min()), float(c.mean())


# ---------------------------------------------------------------------------------------------

def wait_quiet():
    """With --wait-quiet S: wait (at most S seconds) until other processes use < 0.05 cores for 20 s."""
    if ARGS.wait_quiet <= 0:
        return
    deadline, calm, t_start = time.monotonic() + ARGS.wait_quiet, 0, time.monotonic()
    while time.monotonic() < deadline:
        b0, m0 = cpu_seconds()
        time.sleep(10)
        b1, m1 = cpu_seconds()
        calm = calm + 1 if ((b1 - b0) - (m1 - m0)) / 10 < 0.05 else 0
        if calm >= 2:
            break
    waited = time.monotonic() - t_start
    if waited > 25:
        log(f"  waited {waited:.0f} s for a quiet machine" + ("" if calm >= 2 else " (gave up)"))


def measured(fn, *a):
    """Runs an engine; adds `others`: cores other processes used meanwhile (noise indicator)."""
    wait_quiet()
    busy0, mine0, t0 = *cpu_seconds(), time.monotonic()
    out = fn(*a)
    busy1, mine1 = cpu_seconds()
    row = out[0] if isinstance(out, tuple) else out
    row["others"] = max(0.0, ((busy1 - busy0) - (mine1 - mine0)) / (time.monotonic() - t0))
    return out


def bench_model(key, folder, texts, corpus):
    log(f"== {key}: {folder}")
    r = {"key": key, "folder": str(folder), "normalize": has_normalize(folder)}
    st = SentenceTransformer(str(folder), device="cpu")
    st.eval()
    tok, max_len = st.tokenizer, st.max_seq_length
    n_tokens = sum(len(x) for x in tok(texts, truncation=True, max_length=max_len,
                                       return_attention_mask=False)["input_ids"])
    r.update(max_seq_length=max_len, texts=len(texts), tokens=n_tokens)

    with tempfile.TemporaryDirectory(prefix="ember-peers.") as work:
        log("  exporting to ONNX and optimising")
        onnx_path, r["ort_fusions"] = export_onnx(folder, work)
        log("  fusions:", r["ort_fusions"])

        rows = []
        if not ARGS.skip_ember:
            log("  timing ember")
            rows.append(measured(run_ember, folder, corpus))
        log("  timing onnxruntime")
        ort_row, ort_emb = measured(run_ort, onnx_path, tok, max_len, r["normalize"], texts, n_tokens)
        rows.append(ort_row)
        log("  timing sentence-transformers")
        st_row, st_emb = measured(run_st, st, texts, n_tokens)
        rows.append(st_row)
        r["rows"] = rows

        r["cos_ort_st"] = cosines(ort_emb, st_emb)
        if not ARGS.skip_ember and "error" not in rows[0]:
            e = ember_embeddings(folder, corpus, work)
            if e is not None and e.shape == st_emb.shape:
                r["cos_ember_st"] = cosines(e, st_emb)
    for row in r["rows"]:
        log("  " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    return r


def ratios(r):
    by = {row["engine"]: row for row in r["rows"]}
    e, o, s = by.get("ember"), by.get("onnxruntime"), by.get("sentence-transformers")
    if not e or "error" in e:
        return None
    out = {
        "ember_vs_ort_throughput": e["sentences_per_s"] / o["sentences_per_s"],
        "ember_vs_st_throughput": e["sentences_per_s"] / s["sentences_per_s"],
        "ember_vs_ort_p50": e["latency_ms_p50"] / o["latency_ms_p50"],
        "ember_vs_st_p50": e["latency_ms_p50"] / s["latency_ms_p50"],
        "ort_vs_st_throughput": o["sentences_per_s"] / s["sentences_per_s"],
    }
    if e.get("peak_gflops"):
        out["ember_peak_share"] = e["gflops"] / e["peak_gflops"]
    return out


def fmt(v, nd=1):
    return "n/a" if v is None else f"{v:,.{nd}f}"


def report(results, machine, vers, command, load):
    L = []
    L.append("# Ember vs ONNX Runtime vs sentence-transformers (CPU)\n")
    L.append(f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    fl = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in machine["flags"].items())
    L.append(f"- machine: {machine['cpu']}, {machine['cores']} cores visible; {fl}; Linux {machine['kernel']}")
    load0, others = load
    worst = max([others] + [row.get("others", 0.0) for r in results for row in r["rows"]])
    busy = "" if worst <= 0.1 else " (**other work was running: timings are noisy**)"
    L.append(f"- quiet check: 1-min load average {load0:.2f} at the start (it lags by minutes); other processes "
             f"used {others:.2f} cores on average during the run, at most {worst:.2f} while one engine was timed{busy}")
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    L.append(f"- command: `{command}`")
    L.append(f"- corpus: `{Path(ARGS.corpus).relative_to(REPO) if Path(ARGS.corpus).is_relative_to(REPO) else ARGS.corpus}`; "
             f"threads {ARGS.threads} for every engine; batch size {ARGS.batch_size}; "
             f"best of {ARGS.repeats} passes after one warm-up; latency over the first {ARGS.latency_texts} texts, one at a time")
    L.append("- protocol: throughput = whole corpus in length-sorted batches, each padded to its own longest text, "
             "timed from strings to final embeddings (tokenisation included); tokens = real tokens incl. [CLS]/[SEP], "
             "no padding. ORT: TorchScript ONNX export (opset 17, dynamic batch/sequence, eager attention) + "
             "`optimize_model(model_type=\"bert\")` f32, intra_op = threads, inter_op 1, sequential, ORT_ENABLE_ALL; "
             "pooling in numpy. ST: `encode(texts, batch_size=B)`, `torch.set_num_threads(threads)`.")
    L.append("- the machine is shared: read the **ratios**, not the absolute numbers; the last column is the CPU "
             "that other processes used while that engine was timed (0 = quiet, 2 = both cores busy elsewhere).\n")

    for r in results:
        L.append(f"## {r['key']} (`{Path(r['folder']).name}`, max_seq_length {r['max_seq_length']}, "
                 f"{'L2-normalised' if r['normalize'] else 'no Normalize'})\n")
        L.append(f"{r['texts']} texts, {r['tokens']:,} tokens.\n")
        L.append("| engine | sentences/s | tokens/s | p50 ms | p99 ms | other processes (cores) |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for row in r["rows"]:
            if "error" in row:
                L.append(f"| {row['engine']} | error: {row['error']} | | | | |")
                continue
            L.append(f"| {row['engine']} | {fmt(row['sentences_per_s'])} | {fmt(row['tokens_per_s'], 0)} | "
                     f"{fmt(row['latency_ms_p50'], 2)} | {fmt(row['latency_ms_p99'], 2)} | "
                     f"{row['others']:.2f}{' (noisy)' if row['others'] > 0.1 else ''} |")
        L.append("")
        rt = ratios(r)
        if rt:
            e = r["rows"][0]
            L.append("| ratio | value |")
            L.append("|---|---:|")
            L.append(f"| Ember throughput ÷ ORT | **{rt['ember_vs_ort_throughput']:.2f}×** |")
            L.append(f"| Ember throughput ÷ ST | **{rt['ember_vs_st_throughput']:.2f}×** |")
            L.append(f"| Ember p50 ÷ ORT p50 (lower is better for Ember) | **{rt['ember_vs_ort_p50']:.2f}** |")
            L.append(f"| Ember p50 ÷ ST p50 | {rt['ember_vs_st_p50']:.2f} |")
            L.append(f"| ORT throughput ÷ ST | {rt['ort_vs_st_throughput']:.2f}× |")
            if "ember_peak_share" in rt:
                isa = f", {e['isa']} kernels" if e.get("isa") else ""
                L.append(f"| Ember share of the FMA peak (gflops / peak_gflops = {e['gflops']:.1f} / "
                         f"{e['peak_gflops']:.1f} for {e.get('threads', ARGS.threads)} threads{isa}) | "
                         f"**{100 * rt['ember_peak_share']:.1f} %** |")
            if e.get("tokens") is not None and e["tokens"] != r["tokens"]:
                L.append(f"| note: Ember counted {e['tokens']:,} tokens, the HF tokenizer {r['tokens']:,} | |")
            L.append("")
        mn, mean = r["cos_ort_st"]
        ok = "ok, >= 0.9999" if mn >= 0.9999 else "**BELOW 0.9999**"
        L.append(f"Agreement over the {r['texts']} texts: ORT vs sentence-transformers cosine min {mn:.7f} "
                 f"(1 - min = {1 - mn:.1e}), mean {mean:.7f} ({ok})"
                 + (f"; Ember vs sentence-transformers min {r['cos_ember_st'][0]:.7f} "
                    f"(1 - min = {1 - r['cos_ember_st'][0]:.1e})" if "cos_ember_st" in r else "") + ".  ")
        L.append("ORT fused operators: " + ", ".join(f"{k} {v}" for k, v in r["ort_fusions"].items()) + "\n")
    return "\n".join(L) + "\n"


def main():
    corpus = Path(ARGS.corpus).resolve()
    texts = [ln.rstrip("\r") for ln in corpus.read_text(encoding="utf-8").split("\n")]
    texts = [t for t in texts if t.strip()]  # same lines Ember reads (corpus has no blank lines)
    ember_ok = ARGS.skip_ember or Path(ARGS.ember).is_file()
    if not ember_ok:
        log(f"warning: {ARGS.ember} not found: Ember rows will show an error (build with cargo build --release)")
    machine, vers = machine_info(), versions(ARGS.ember)
    command = " ".join(["python scripts/peers/bench_peers.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    load0 = os.getloadavg()[0]
    busy0, mine0, wall0 = *cpu_seconds(), time.monotonic()
    if load0 > 0.5:
        log(f"warning: 1-min load average is {load0:.2f}: other work is running, timings will be noisy")

    mini = minilm_dir() if ("minilm" in ARGS.models or "sbert-base" in ARGS.models) else None
    folders = {"minilm": mini}
    if "sbert-base" in ARGS.models:
        folders["sbert-base"] = sbert_base_dir(mini)
    results = [bench_model(k, folders[k], texts, corpus) for k in ARGS.models]
    busy1, mine1 = cpu_seconds()
    others = max(0.0, ((busy1 - busy0) - (mine1 - mine0)) / (time.monotonic() - wall0))
    if others > 0.3:
        log(f"warning: other processes used {others:.2f} cores on average during the run")

    md = report(results, machine, vers, command, (load0, others))
    print(md)
    if ARGS.out:
        out = Path(ARGS.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md, encoding="utf-8")
        log(f"wrote {out}")
    bad = [r["key"] for r in results if r["cos_ort_st"][0] < 0.9999]
    if bad:
        log(f"error: ORT and sentence-transformers disagree (cosine < 0.9999) for {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
