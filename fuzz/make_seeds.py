#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/<target>/ from the tiny model in tests/fixtures.

Small on purpose: libFuzzer mutates and re-runs its inputs millions of times, so each seed keeps
the fixture's structure (header entries, config keys, added tokens) with little bulk (a few
tensors, a vocabulary cut to its first 200 tokens).
Run from anywhere: python3 fuzz/make_seeds.py
"""

import base64
import json
import shutil
import struct
import zipfile
import io
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
TINY = FUZZ.parent / "tests" / "fixtures" / "tiny-bert"
SEEDS = FUZZ / "seeds"
RULES_CHARSMAP = (
    "AAQAAAAAAQBBDQAAAgAAgGkdAAAEAACAkYwCAKAFAAAAAACAvIACAKEtAAALAAAACgAAAA0AAAAMAAAADwAAAA4AAAARAAAA"
    "EAAAABMAAAASAAAAFQAAABQAAAAXAAAAFgAAABkAAAAYAAAAGwAAABoAAAAdAAAAHAAAAB8AAAAeAAAAIQAAACAAAAAjAAAA"
    "IgAAACUAAAAkAAAAZjABACYAAAApAAAAKAAAACsAAAAqAAAALQAAACwAAAAvAAAALgAAADEAAAAwAAAAMwAAADIAAAA1AAAA"
    "NAAAADcAAAA2AAAAOQAAADgAAAA7AAAAOgAAAD0AAAA8AAAAPwAAAD4AAABBAAAAQAAAAEMAAABCAAAARQAAAEQAAABHAAAA"
    "RgAAAEkAAABIAAAASwAAAEoAAABNAAAATAAAAE8AAABOAAAAUQAAAFAAAABTAAAAUgAAAFUAAABUAAAAVwAAAFYAAABZAAAA"
    "WAAAAFsAAABaAAAAXQAAAFwAAABfAAAAXgAAAGEAAABgAAAAYwAAAGIAAABlAAAAZAAAAGcAAABmAAAAaQAAAGgAAABrAAAA"
    "agAAAG0AAABsAAAAbwAAAG4AAABxAAAAcAAAAHMAAAByAAAAdQAAAHQAAAB3AAAAdgAAAHkAAAB4AAAAewAAAHoAAAB9AAAA"
    "fAAAAH8AAAB+AAAAgQAAAIAAAACDAAAAggAAAIUAAACEAAAAhwAAAIYAAACJAAAAiAAAAIsAAACKAAAAjQAAAIwAAACPAAAA"
    "jgAAAJEAAACQAAAAkwAAAJIAAACVAAAAlAAAAJcAAACWAAAAmQAAAJgAAACbAAAAmgAAAJ0AAACcAAAAnwAAAJ4AAAChAAAA"
    "oAAAAOLYAACiAAAApQAAAKQAAACnAAAApgAAAKkAAACoAAAAqwAAAKoAAACtAAAArAAAAK8AAADvbAAAsQAAALAAAACzAAAA"
    "sgAAALUAAAC0AAAAtwAAALYAAAC5AAAAuAAAALsAAAC6AAAAvQAAALwAAAC/AAAAvgAAAMEAAADAAAAAwwAAAMIAAADFAAAA"
    "xAAAAMcAAADGAAAAyQAAAMgAAADLAAAAygAAAM0AAADMAAAAzwAAAM4AAADRAAAA0AAAANMAAADSAAAA1QAAANQAAADXAAAA"
    "1gAAANkAAADYAAAA2wAAANoAAADdAAAA3AAAAN8AAADeAAAA4QAAAOAAAADjAAAA4gAAAOUAAADkAAAA5wAAAOYAAADpAAAA"
    "6AAAAOsAAADqAAAA7QAAAOwAAADvAAAA7gAAAPEAAADwAAAA8wAAAPIAAAD1AAAA9AAAAPcAAAD2AAAA+QAAAPgAAAD7AAAA"
    "+gAAAP0AAAD8AAAA/wAAAP4AAAAxAGEA76yBAA=="
)


def safetensors(entries, metadata=None, pad_to=None):
    """entries: [(name, dtype, shape, bytes)] laid out in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad_to is not None:
        text += b" " * ((pad_to - (8 + len(text)) % pad_to) % pad_to)
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def write(target, name, data):
    path = SEEDS / target / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    for target in ["safetensors", "bert_config", "st_configs", "tokenize_text", "tokenize_text_bpe_unigram",
                   "tokenizer_files", "charsmap", "torch_file"]:
        (SEEDS / target).mkdir(parents=True)

    # safetensors: the tiny model's first tensors, every readable dtype, an I64 buffer,
    # metadata, a scalar, an empty tensor, misaligned F32, an empty header.
    weights = (TINY / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8 : 8 + n])
    data = weights[8 + n :]
    first = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[:4]
    write("safetensors", "tiny-first-tensors", safetensors(
        [(k, header[k]["dtype"], header[k]["shape"], data[slice(*header[k]["data_offsets"])]) for k in first],
        metadata=header.get("__metadata__"), pad_to=8))
    write("safetensors", "dtypes", safetensors([
        ("w", "F32", [2, 2], f32(1, -2, 3.5, 0)),
        ("h", "F16", [3], struct.pack("<3e", 1, 2, -0.5)),
        ("b", "BF16", [1], b"\x80\x3f"),
        ("embeddings.position_ids", "I64", [1, 2], struct.pack("<2q", 0, 1)),
    ], metadata={"format": "pt"}, pad_to=8))
    write("safetensors", "scalar-and-empty", safetensors([("s", "F32", [], f32(7)), ("e", "F32", [0, 4], b"")]))
    write("safetensors", "misaligned", safetensors([("odd", "F16", [1], b"\x00\x3c"), ("x", "F32", [2], f32(1, 2))]))
    write("safetensors", "empty-header", struct.pack("<Q", 2) + b"{}")

    # bert_config: the tiny, MiniLM-shaped and minimal configs.
    config = json.loads((TINY / "config.json").read_text())
    write("bert_config", "tiny", json.dumps(config, indent=2))
    minilm = dict(config, hidden_size=384, intermediate_size=1536, num_attention_heads=12,
                  num_hidden_layers=6, max_position_embeddings=512, vocab_size=30522)
    write("bert_config", "minilm", json.dumps(minilm))
    write("bert_config", "minimal", json.dumps({k: config[k] for k in
          ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"]}))

    # st_configs: modules.json NUL sentence_bert_config.json NUL 1_Pooling/config.json.
    modules = (TINY / "modules.json").read_text()
    sbert = (TINY / "sentence_bert_config.json").read_text()
    pooling = (TINY / "1_Pooling" / "config.json").read_text()
    write("st_configs", "tiny", "\0".join([modules, sbert, pooling]))
    normalize = json.loads(modules) + [{"idx": 2, "name": "2", "path": "2_Normalize",
                                        "type": "sentence_transformers.models.Normalize"}]
    current = json.dumps({"embedding_dimension": 52, "pooling_mode": ["cls", "mean", "max"], "include_prompt": True})
    write("st_configs", "normalize-current-pooling", "\0".join([json.dumps(normalize), sbert, current]))
    write("st_configs", "no-modules", "")

    # tokenize_text: the repository's texts.
    texts = json.loads((FUZZ.parent / "tests" / "fixtures" / "texts.json").read_text())
    for i, text in enumerate(texts if isinstance(texts, list) else texts.get("texts", [])):
        write("tokenize_text", f"text{i:03}", text)

    # tokenize_text_bpe_unigram: a folder selector byte (0..3), then the texts of the RoBERTa and
    # tiny-xlmr-spm references (literal <pad>/<mask>, text the nmt_nfkc charsmap rewrites).
    for name in ["tiny_roberta_reference.json", "tiny_xlmr_spm_reference.json"]:
        ref = json.loads((FUZZ.parent / "tests" / "fixtures" / name).read_text())
        for i, text in enumerate(ref["texts"]):
            write("tokenize_text_bpe_unigram", f"{name.split('_')[1]}{i:03}", chr(i % 4) + text)

    # charsmap: a small valid SentencePiece charsmap (sentencepiece 0.2.3 with the rules
    # A -> a, U+FF21 -> a, U+2460 -> 1, "fi" -> U+FB01 as normalization_rule_tsv: a 1,036-byte
    # double array and replacements), an empty trie, and the first kilobyte of the nmt_nfkc one.
    write("charsmap", "rules", base64.b64decode(RULES_CHARSMAP))
    write("charsmap", "empty-trie", b"\0\0\0\0")
    xlmr = json.loads((FUZZ.parent / "tests" / "fixtures" / "tiny-xlmr-spm" / "tokenizer.json").read_text())
    nfkc = base64.b64decode(xlmr["normalizer"]["normalizers"][0]["precompiled_charsmap"])
    write("charsmap", "nfkc-head", nfkc[:1024])

    # tokenizer_files: selector byte, tokenizer file, NUL, tokenizer_config.json.
    tokenizer = json.loads((TINY / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = {k: v for k, v in vocab.items() if v < 200}
    small_json = json.dumps(tokenizer)
    small_vocab = "".join(line + "\n" for line in (TINY / "vocab.txt").read_text().splitlines()[:200])
    tokenizer_config = (TINY / "tokenizer_config.json").read_text()
    write("tokenizer_files", "json-with-config", "\x00" + small_json + "\0" + tokenizer_config)
    write("tokenizer_files", "json-lowercase", "\x02" + small_json)
    write("tokenizer_files", "vocab-with-config", "\x01" + small_vocab + "\0" + tokenizer_config)
    write("tokenizer_files", "vocab-len8", "\x09" + small_vocab)

    # torch_file: a kind byte, then (odd) the fixture archive's data.pkl, which the target puts
    # back among the real storages, or (even) a whole archive: the same pickle with one-float
    # storages (too small for its tensors: the validation's refusals) and a truncated one.
    with zipfile.ZipFile(FUZZ.parent / "tests" / "fixtures" / "tiny-bert-torchbin" / "pytorch_model.bin") as z:
        names = z.namelist()
        pickle_name = next(n for n in names if n.endswith("/data.pkl"))
        pickle = z.read(pickle_name)
        small = io.BytesIO()
        with zipfile.ZipFile(small, "w", zipfile.ZIP_STORED) as out:
            for n in names:
                out.writestr(n, pickle if n == pickle_name else z.read(n)[:4])
    write("torch_file", "pickle", b"\x01" + pickle)
    write("torch_file", "archive-small-storages", b"\x00" + small.getvalue())
    write("torch_file", "archive-truncated", b"\x00" + small.getvalue()[: len(small.getvalue()) // 2])


if __name__ == "__main__":
    main()
