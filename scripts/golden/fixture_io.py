"""Helpers shared by the golden-fixture generators in scripts/golden/ (clip_tiny.py, mae_tiny.py).

write_safetensors writes safetensors by hand (no safetensors package needed): 8-byte little-endian
header length, compact JSON header (keys sorted, padded with spaces to a multiple of 8 bytes), then the
raw little-endian tensor data in key order. Supports float32 ("F32") and int64 ("I64") tensors.
"""
import json
import os
import struct

import torch


def fixture_path(name):
    """Absolute path of tests/fixtures/<name> in this repository (scripts/golden/ is two levels down)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "tests", "fixtures", name)


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        x = tensors[name].contiguous()
        if x.dtype == torch.float32:
            dtype, raw = "F32", x.numpy().astype("<f4").tobytes()
        elif x.dtype == torch.int64:
            dtype, raw = "I64", x.numpy().astype("<i8").tobytes()
        else:
            raise TypeError(f"{name}: unsupported dtype {x.dtype}")
        header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)
