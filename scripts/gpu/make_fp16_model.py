#!/usr/bin/env python3
"""Copies a sentence-transformers folder with its f32 weights stored as f16 (half the bytes),
so that all-MiniLM-L6-v2 fits the device tool's 64 MiB carry. Standard library only.

    python3 scripts/gpu/make_fp16_model.py SRC_DIR DST_DIR

Every file but model.safetensors is copied as is; in model.safetensors each F32 tensor becomes
F16 (round to nearest even, as torch's .half()); other dtypes are kept.
"""

import json
import shutil
import struct
import sys
from array import array
from pathlib import Path


def convert(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    out_header, chunks, offset = {}, [], 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0] if kv[0] != "__metadata__" else -1):
        if name == "__metadata__":
            out_header[name] = info
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        if info["dtype"] == "F32":
            values = array("f")
            values.frombytes(raw)
            raw = struct.pack(f"<{len(values)}e", *values)
            info = dict(info, dtype="F16")
        chunks.append(bytes(raw))
        out_header[name] = dict(info, data_offsets=[offset, offset + len(raw)])
        offset += len(raw)
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    if not (src / "model.safetensors").is_file():
        sys.exit(f"{src}: no model.safetensors")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino", "*.bin", "*.h5", "*.msgpack", "*.ot"))
    convert(src / "model.safetensors", dst / "model.safetensors")
    print(dst)


if __name__ == "__main__":
    main()
