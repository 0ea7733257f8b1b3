#!/usr/bin/env python3
"""Loads a loom checkpoint file with the Python `safetensors` package and prints its tensors.

usage: scripts/check-safetensors.py FILE [NAME=SHAPE ...]
Each NAME=SHAPE (e.g. visual.blocks.0.attn.qkv.weight=96x32) must be present with that shape.
Exit status 0 when the file loads and every expectation holds.
"""
import sys

from safetensors.numpy import load_file

def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    tensors = load_file(sys.argv[1])
    for name in sorted(tensors):
        t = tensors[name]
        print(f"{name}\t{t.dtype}\t{'x'.join(map(str, t.shape)) or 'scalar'}")
    ok = True
    for expect in sys.argv[2:]:
        name, shape = expect.split("=")
        want = tuple(int(d) for d in shape.split("x")) if shape != "scalar" else ()
        if name not in tensors or tensors[name].shape != want:
            print(f"missing or wrong shape: {name} (want {want})", file=sys.stderr)
            ok = False
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
