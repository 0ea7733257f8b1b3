#!/usr/bin/env python3
"""Golden JPEG decodes: small JPEGs (baseline 4:2:0, 4:2:2, 4:4:4, progressive, grey) written and
decoded by Pillow; the decoded pixels saved as PNG (lossless) beside each. loom's decoder
(libjpeg-turbo) must give the same pixels: tests/data/test_image.cpp, Image.JpegDecodesAsPillowDoes.
Run with any Pillow (e.g. .venv-torch/bin/python scripts/golden/jpeg_pillow.py)."""
import os
import numpy as np
from PIL import Image, features

out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "jpeg_pillow")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
y, x = np.mgrid[0:29, 0:37]
rgb = np.stack([(x * 7 + y) % 256, (y * 9) % 256, ((x * y) // 3) % 256], -1).astype(np.float64)
rgb = (rgb * 0.7 + rng.integers(0, 70, rgb.shape)).astype(np.uint8)
cases = {"q90_420": dict(quality=90, subsampling=2), "q75_422": dict(quality=75, subsampling=1),
         "q95_444": dict(quality=95, subsampling=0), "q80_progressive": dict(quality=80, subsampling=2, progressive=True)}
for name, opts in cases.items():
    path = os.path.join(out, name + ".jpg")
    Image.fromarray(rgb).save(path, **opts)
    Image.open(path).convert("RGB").save(os.path.join(out, name + ".png"))
grey = os.path.join(out, "grey.jpg")
Image.fromarray(rgb[..., 1]).save(grey, quality=85)
Image.open(grey).convert("L").save(os.path.join(out, "grey.png"))
print(f"Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}: wrote {out}")
