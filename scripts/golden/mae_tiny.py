#!/usr/bin/python3
"""Golden fixture for loom's MAE: a tiny masked autoencoder (He et al. 2021, facebookresearch/mae
models_mae.py semantics) written in plain PyTorch (>= 1.13, attention by hand), with parameters named
exactly as loom's dotted names. The image is NOT square (8 x 12, patch 2: a 4 x 6 patch grid), so a
transposed grid or a row/column mix-up in patchify or the position tables shows. Computes, in float64
from float32 weights, the random-masking permutation (from the given noise), the mask, the decoder's
per-patch predictions, the normalised-pixel target, the masked MSE loss and the gradient of the loss
with respect to every parameter, and writes everything to tests/fixtures/mae_tiny.safetensors
(safetensors written by hand in fixture_io.py: 8-byte little-endian header length, JSON header, raw
little-endian data).

Forward: patchify [B,C,H,W] -> [B,N,p*p*C] (pixels ordered row, col, channel; patches row-major);
x = patch_embed(patches) + pos_embed[1:]; ids_shuffle = argsort(noise, dim=1) ascending,
ids_restore = argsort(ids_shuffle), keep ids_shuffle[:, :len_keep]; mask (1 = masked) unshuffled
with ids_restore; prepend cls_token + pos_embed[0]; encoder blocks; ln_post; decoder embed; append
mask tokens, unshuffle with ids_restore, keep the class token first; + decoder pos_embed; decoder
blocks; norm; pred; drop the class token. Target = patchify(images) normalised per patch by its mean
and UNBIASED variance (norm_pix_loss, eps 1e-6); loss = sum(mask * mean_over_pixels((pred - target)^2))
/ sum(mask).

Keys: "param/<name>" (f32 weights), "input/images" (f32 [B,C,H,W]), "input/noise" (f32 [B,N], uniform
in [0,1), no ties), "out/ids_restore" (i64 [B,N]), "out/mask" (f32 [B,N], 1 = masked),
"out/pred" (f32 [B,N,P]), "out/target" (f32 [B,N,P]), "out/loss" (f32 scalar), "grad/<name>" (f32,
one per parameter). Outputs and gradients are computed in float64 and stored as float32.
Run: /usr/bin/python3 scripts/golden/mae_tiny.py  (from the repository root)
"""
import json
import math
import os

import torch
import torch.nn.functional as F

from fixture_io import ParamMaker, fixture_path, write_safetensors

# Must match loom's C++ MAE golden test.
IMAGE = dict(channels=1, height=8, width=12, patch=2)
ENCODER = dict(width=16, layers=2, heads=2, mlp_ratio=2.0)
DECODER = dict(width=8, layers=1, heads=2, mlp_ratio=2.0)
MASK_RATIO = 0.75
NORM_PIX_LOSS = True
B = 3

GRID_H = IMAGE["height"] // IMAGE["patch"]  # 4 patch rows
GRID_W = IMAGE["width"] // IMAGE["patch"]  # 6 patch columns
N = GRID_H * GRID_W  # 24 patches
PATCH_DIM = IMAGE["patch"] ** 2 * IMAGE["channels"]  # 4
LEN_KEEP = int(N * (1 - MASK_RATIO))  # 6


def make_params(g):
    pm = ParamMaker(g)
    e, d = ENCODER, DECODER
    pm.linear("visual.patch_embed.proj", PATCH_DIM, e["width"])
    pm.P["visual.cls_token"] = pm.rnd(e["width"], std=0.5)
    pm.P["visual.pos_embed"] = pm.rnd(1 + N, e["width"], std=0.5)
    for i in range(e["layers"]):
        pm.block(f"visual.blocks.{i}", e["width"], e["mlp_ratio"])
    pm.ln("visual.ln_post", e["width"])
    pm.linear("mae_decoder.embed", e["width"], d["width"])
    pm.P["mae_decoder.mask_token"] = pm.rnd(d["width"], std=0.5)
    pm.P["mae_decoder.pos_embed"] = pm.rnd(1 + N, d["width"], std=0.5)
    for i in range(d["layers"]):
        pm.block(f"mae_decoder.blocks.{i}", d["width"], d["mlp_ratio"])
    pm.ln("mae_decoder.norm", d["width"])
    pm.linear("mae_decoder.pred", d["width"], PATCH_DIM)
    return pm.float32()


def patchify(images, p):
    # [B, C, H, W] -> [B, h*w, p*p*C]: patches row-major over the grid, pixels ordered (row, col, channel).
    n, c, hh, ww = images.shape
    x = images.reshape(n, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, (hh // p) * (ww // p), p * p * c)


def shuffle_ids(noise):
    # models_mae.random_masking: ascending argsort of the noise (small noise is kept). Stable, though
    # with no ties (asserted in main) stability cannot matter.
    ids_shuffle = torch.sort(noise, dim=1, stable=True).indices
    ids_restore = torch.sort(ids_shuffle, dim=1, stable=True).indices
    return ids_shuffle, ids_restore


def forward(P, images, noise):
    def linear(x, name, act=None):
        y = F.linear(x, P[name + ".weight"], P.get(name + ".bias"))
        return F.gelu(y) if act == "gelu" else y

    def ln(x, name):
        return F.layer_norm(x, (x.shape[-1],), P[name + ".weight"], P[name + ".bias"], 1e-5)

    def attention(x, name, heads):
        b, s, d = x.shape
        dh = d // heads
        qkv = linear(x, name + ".qkv").reshape(b, s, 3, heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        o = scores.softmax(-1) @ v
        return linear(o.permute(0, 2, 1, 3).reshape(b, s, d), name + ".proj")

    def block(x, name, heads):
        x = x + attention(ln(x, name + ".ln1"), name + ".attn", heads)
        return x + linear(linear(ln(x, name + ".ln2"), name + ".mlp.fc1", "gelu"), name + ".mlp.fc2")

    e, d = ENCODER, DECODER
    n = images.shape[0]
    patches = patchify(images, IMAGE["patch"])

    # Encoder: embed every patch with its position, keep the len_keep patches of smallest noise.
    x = linear(patches, "visual.patch_embed.proj") + P["visual.pos_embed"][1:]
    ids_shuffle, ids_restore = shuffle_ids(noise)
    ids_keep = ids_shuffle[:, :LEN_KEEP]
    x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, e["width"]))
    mask = torch.ones(n, N, dtype=x.dtype)
    mask[:, :LEN_KEEP] = 0
    mask = torch.gather(mask, 1, ids_restore)
    cls = (P["visual.cls_token"] + P["visual.pos_embed"][0]).reshape(1, 1, -1).expand(n, 1, -1)
    x = torch.cat([cls, x], 1)
    for i in range(e["layers"]):
        x = block(x, f"visual.blocks.{i}", e["heads"])
    x = ln(x, "visual.ln_post")

    # Decoder: embed, append mask tokens, unshuffle to grid order (class token stays first), positions.
    y = linear(x, "mae_decoder.embed")
    mask_tokens = P["mae_decoder.mask_token"].reshape(1, 1, -1).expand(n, N - LEN_KEEP, -1)
    y_ = torch.cat([y[:, 1:], mask_tokens], 1)
    y_ = torch.gather(y_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d["width"]))
    y = torch.cat([y[:, :1], y_], 1) + P["mae_decoder.pos_embed"]
    for i in range(d["layers"]):
        y = block(y, f"mae_decoder.blocks.{i}", d["heads"])
    y = ln(y, "mae_decoder.norm")
    pred = linear(y, "mae_decoder.pred")[:, 1:]

    # models_mae.forward_loss.
    target = patches
    if NORM_PIX_LOSS:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, torch's default
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    loss = (loss * mask).sum() / mask.sum()
    return ids_restore, mask, pred, target, loss


def main():
    g = torch.Generator().manual_seed(4321)
    P32 = make_params(g)
    images = torch.randn(B, IMAGE["channels"], IMAGE["height"], IMAGE["width"], generator=g)
    noise = torch.rand(B, N, generator=g)  # float32, [0, 1)
    for row in noise:
        assert len(set(row.tolist())) == N, "noise has ties: the permutation would be ambiguous"
    assert LEN_KEEP == 6 and N == 24 and PATCH_DIM == 4

    P = {k: x.double().requires_grad_(True) for k, x in P32.items()}
    # The permutation comes from the float32 noise as stored (float64 would order it the same way).
    ids_restore, mask, pred, target, loss = forward(P, images.double(), noise)
    loss.backward()
    for k, x in P.items():
        assert x.grad is not None, f"{k} got no gradient"
    assert mask.sum().item() == B * (N - LEN_KEEP)

    out = {f"param/{k}": x for k, x in P32.items()}
    out.update({f"grad/{k}": x.grad.float() for k, x in P.items()})
    out["input/images"] = images.float()
    out["input/noise"] = noise.float()
    out["out/ids_restore"] = ids_restore.to(torch.int64)
    out["out/mask"] = mask.float()
    out["out/pred"] = pred.detach().float()
    out["out/target"] = target.detach().float()
    out["out/loss"] = loss.detach().float()
    meta = {"generator": "scripts/golden/mae_tiny.py", "torch": torch.__version__,
            "image": json.dumps(IMAGE), "encoder": json.dumps(ENCODER), "decoder": json.dumps(DECODER),
            "mask_ratio": str(MASK_RATIO), "len_keep": str(LEN_KEEP), "norm_pix_loss": str(NORM_PIX_LOSS).lower()}
    path = fixture_path("mae_tiny.safetensors")
    write_safetensors(path, out, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes), loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
