"""Helpers shared by the golden-fixture generators in scripts/golden/ (clip_tiny.py, mae_tiny.py).

write_safetensors writes safetensors by hand (no safetensors package needed): 8-byte little-endian
header length, compact JSON header (keys sorted, padded with spaces to a multiple of 8 bytes), then the
raw little-endian tensor data in key order. Supports float32 ("F32") and int64 ("I64") tensors.
"""
import json
import os
import struct

import torch


class ParamMaker:
    """Random parameters under loom's dotted names, drawn from generator `g` in call order: weights
    ~ N(0, fan_in^-1), biases and LayerNorm shifts small, LayerNorm gains near 1."""

    def __init__(self, g):
        self.g, self.P = g, {}

    def rnd(self, *shape, std=0.3):
        return torch.randn(*shape, generator=self.g) * std

    def linear(self, name, i, o, bias=True):
        self.P[name + ".weight"] = self.rnd(o, i, std=i ** -0.5)
        if bias:
            self.P[name + ".bias"] = self.rnd(o, std=0.1)

    def ln(self, name, d):
        self.P[name + ".weight"] = 1.0 + self.rnd(d, std=0.1)
        self.P[name + ".bias"] = self.rnd(d, std=0.1)

    def block(self, name, w, ratio, ls=0.0):
        """A pre-LN transformer block (ln1, attn.qkv, attn.proj, ln2, mlp.fc1, mlp.fc2, LayerScale when ls > 0)."""
        h = int(w * ratio)
        self.ln(name + ".ln1", w)
        self.linear(name + ".attn.qkv", w, 3 * w)
        self.linear(name + ".attn.proj", w, w)
        self.ln(name + ".ln2", w)
        self.linear(name + ".mlp.fc1", w, h)
        self.linear(name + ".mlp.fc2", h, w)
        if ls > 0:
            self.P[name + ".ls1"] = ls + self.rnd(w, std=0.1)
            self.P[name + ".ls2"] = ls + self.rnd(w, std=0.1)

    def float32(self):
        return {k: x.float() for k, x in self.P.items()}


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
