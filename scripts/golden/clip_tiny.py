#!/usr/bin/python3
"""Golden fixture for loom's Clip: a tiny CLIP written in plain PyTorch (>= 1.13, attention by hand),
with parameters named exactly as loom's dotted names. Computes, in float64 from float32 weights, the
image and text embeddings, the symmetric InfoNCE loss (open_clip's ClipLoss) and the gradient of the
loss with respect to every parameter, and writes everything to tests/fixtures/clip_tiny.safetensors
(safetensors written by hand in fixture_io.py: 8-byte little-endian header length, JSON header, raw
little-endian data).

Keys: "param/<name>" (f32 weights), "input/images" (f32 [B,C,H,W]), "input/tokens" (i64 [B,S]),
"out/image_features", "out/text_features" ([B,E]), "out/loss" (scalar), "grad/<name>".
Run: /usr/bin/python3 scripts/golden/clip_tiny.py  (from the repository root)
"""
import json
import math
import os

import torch
import torch.nn.functional as F

from fixture_io import ParamMaker, fixture_path, write_safetensors

# Must match tests/layers/test_clip_golden.cpp.
VISION = dict(image_size=8, channels=1, patch=4, width=16, layers=2, heads=2, mlp_ratio=2.0, layer_scale_init=0.5)
TEXT = dict(vocab_size=20, context=6, width=16, layers=1, heads=2, mlp_ratio=2.0)
EMBED = 8
EOT = 2
B = 4


def make_params(g):
    pm = ParamMaker(g)
    v, t = VISION, TEXT
    grid = v["image_size"] // v["patch"]
    pm.linear("visual.patch_embed.proj", v["patch"] ** 2 * v["channels"], v["width"])
    pm.P["visual.cls_token"] = pm.rnd(v["width"], std=0.5)
    pm.P["visual.pos_embed"] = pm.rnd(1 + grid * grid, v["width"], std=0.5)
    for i in range(v["layers"]):
        pm.block(f"visual.blocks.{i}", v["width"], v["mlp_ratio"], v["layer_scale_init"])
    pm.ln("visual.ln_post", v["width"])
    pm.P["text.token_embedding"] = pm.rnd(t["vocab_size"], t["width"], std=0.5)
    pm.P["text.pos_embed"] = pm.rnd(t["context"], t["width"], std=0.2)
    for i in range(t["layers"]):
        pm.block(f"text.blocks.{i}", t["width"], t["mlp_ratio"], 0.0)
    pm.ln("text.ln_final", t["width"])
    pm.linear("visual_proj", v["width"], EMBED, bias=False)
    pm.linear("text_proj", t["width"], EMBED, bias=False)
    pm.P["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return pm.float32()


def forward(P, images, tokens):
    def linear(x, name, act=None):
        y = F.linear(x, P[name + ".weight"], P.get(name + ".bias"))
        return F.gelu(y) if act == "gelu" else y

    def ln(x, name):
        return F.layer_norm(x, (x.shape[-1],), P[name + ".weight"], P[name + ".bias"], 1e-5)

    def attention(x, name, heads, causal):
        b, s, d = x.shape
        dh = d // heads
        qkv = linear(x, name + ".qkv").reshape(b, s, 3, heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if causal:
            future = torch.ones(s, s, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        o = scores.softmax(-1) @ v
        return linear(o.permute(0, 2, 1, 3).reshape(b, s, d), name + ".proj")

    def block(x, name, heads, causal):
        a = attention(ln(x, name + ".ln1"), name + ".attn", heads, causal)
        if name + ".ls1" in P:
            a = a * P[name + ".ls1"]
        x = x + a
        m = linear(linear(ln(x, name + ".ln2"), name + ".mlp.fc1", "gelu"), name + ".mlp.fc2")
        if name + ".ls2" in P:
            m = m * P[name + ".ls2"]
        return x + m

    v, t = VISION, TEXT
    # Vision: MAE patchify (row, col, channel), class token, learned positions, pre-LN blocks, ln_post.
    n, c, hh, ww = images.shape
    p = v["patch"]
    patches = images.reshape(n, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)
    x = linear(patches, "visual.patch_embed.proj")
    cls = P["visual.cls_token"].reshape(1, 1, -1).expand(n, 1, -1)
    x = torch.cat([cls, x], 1) + P["visual.pos_embed"]
    for i in range(v["layers"]):
        x = block(x, f"visual.blocks.{i}", v["heads"], False)
    x = ln(x, "visual.ln_post")[:, 0]
    img = F.normalize(linear(x, "visual_proj"), dim=-1)

    # Text: embedding + positions, causal blocks, ln_final, pooled at the first eot.
    s = tokens.shape[1]
    x = P["text.token_embedding"][tokens] + P["text.pos_embed"][:s]
    for i in range(t["layers"]):
        x = block(x, f"text.blocks.{i}", t["heads"], True)
    x = ln(x, "text.ln_final")
    first_eot = torch.tensor([row.tolist().index(EOT) for row in tokens])
    x = x[torch.arange(tokens.shape[0]), first_eot]
    txt = F.normalize(linear(x, "text_proj"), dim=-1)

    # open_clip ClipLoss (single process).
    scale = P["logit_scale"].clamp(max=math.log(100.0)).exp()
    logits = scale * img @ txt.T
    labels = torch.arange(img.shape[0])
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return img, txt, loss


def main():
    g = torch.Generator().manual_seed(1234)
    P32 = make_params(g)
    images = torch.randn(B, VISION["channels"], VISION["image_size"], VISION["image_size"], generator=g)
    # Rows end in eot; two rows have more tokens after their first eot (pooling must ignore them).
    tokens = torch.tensor([[1, 5, 7, EOT, 0, 0],
                           [1, 9, EOT, 0, 0, 0],
                           [1, 4, 6, 8, 11, EOT],
                           [1, EOT, 13, EOT, 17, 3]], dtype=torch.int64)

    P = {k: x.double().requires_grad_(True) for k, x in P32.items()}
    img, txt, loss = forward(P, images.double(), tokens)
    loss.backward()

    out = {f"param/{k}": x for k, x in P32.items()}
    out.update({f"grad/{k}": x.grad.float() for k, x in P.items()})
    out["input/images"] = images.float()
    out["input/tokens"] = tokens
    out["out/image_features"] = img.detach().float()
    out["out/text_features"] = txt.detach().float()
    out["out/loss"] = loss.detach().float()
    meta = {"generator": "scripts/golden/clip_tiny.py", "torch": torch.__version__, "eot": str(EOT),
            "vision": json.dumps(VISION), "text": json.dumps(TEXT), "embed_dim": str(EMBED)}
    path = fixture_path("clip_tiny.safetensors")
    write_safetensors(path, out, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes), loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
