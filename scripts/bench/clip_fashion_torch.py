#!/usr/bin/env python3
"""PyTorch reference figure for `loom bench recipes/tiny/clip_fashion.yaml`: the same CLIP
(ViT width 128, 4 layers, 4x4 patches on 28x28x1; text context 16, width 128, 2 layers; embed 64),
AdamW, batch 128, on random inputs (no data loading), fp32 on the CPU. Prints training samples/s.

usage: /usr/bin/python3 scripts/bench/clip_fashion_torch.py [--steps N] [--threads T]
Data parallel (the twin of `mpirun -np 2 loom bench ...`): DistributedDataParallel over gloo, the
global batch split over the ranks, features all-gathered with gradient as open_clip does:
       .venv-torch/bin/torchrun --nproc_per_node 2 scripts/bench/clip_fashion_torch.py --threads 1
"""
import argparse
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads, causal):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.causal = causal

    def forward(self, x):
        h = self.ln1(x)
        mask = None
        if self.causal:
            s = x.shape[1]
            mask = torch.full((s, s), float("-inf")).triu(1)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln2(x))


class Clip(nn.Module):
    def __init__(self, vocab=512, ctx=16, width=128, embed=64, patch=4, image=28):
        super().__init__()
        n = (image // patch) ** 2
        self.patch = patch
        self.proj = nn.Linear(patch * patch, width)
        self.cls = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.vpos = nn.Parameter(torch.randn(n + 1, width) * width ** -0.5)
        self.vblocks = nn.ModuleList([Block(width, 4, False) for _ in range(4)])
        self.vln = nn.LayerNorm(width)
        self.tok = nn.Embedding(vocab, width)
        self.tpos = nn.Parameter(torch.randn(ctx, width) * 0.01)
        self.tblocks = nn.ModuleList([Block(width, 4, True) for _ in range(2)])
        self.tln = nn.LayerNorm(width)
        self.vproj = nn.Linear(width, embed, bias=False)
        self.tproj = nn.Linear(width, embed, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images, tokens, eot):
        b, c, h, w = images.shape
        p = self.patch
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        x = torch.cat([self.cls.expand(b, 1, -1), self.proj(x)], 1) + self.vpos
        for blk in self.vblocks:
            x = blk(x)
        img = F.normalize(self.vproj(self.vln(x)[:, 0]), dim=-1)
        t = self.tok(tokens) + self.tpos
        for blk in self.tblocks:
            t = blk(t)
        t = self.tln(t)[torch.arange(b), eot]
        txt = F.normalize(self.tproj(t), dim=-1)
        return img, txt, self.logit_scale


def clip_loss(img, txt, logit_scale, world, rank):
    scale = logit_scale.clamp(max=math.log(100)).exp()
    if world == 1:
        img_all, txt_all, offset = img, txt, 0
    else:  # open_clip's gather_with_grad + local_loss
        import torch.distributed.nn.functional as dist_fn
        img_all, txt_all, offset = torch.cat(dist_fn.all_gather(img)), torch.cat(dist_fn.all_gather(txt)), rank * img.shape[0]
    labels = torch.arange(img.shape[0]) + offset
    return (F.cross_entropy(scale * img @ txt_all.t(), labels) + F.cross_entropy(scale * txt @ img_all.t(), labels)) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    model = Clip()
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo")
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98))
    local = a.batch // world
    images = torch.randn(local, 1, 28, 28)
    tokens = torch.randint(4, 512, (local, 16))
    eot = torch.randint(3, 16, (local,))

    def step():
        opt.zero_grad(set_to_none=True)
        clip_loss(*model(images, tokens, eot), world, rank).backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    if rank == 0:
        print(f"torch {torch.__version__} clip_fashion: {a.steps * a.batch / dt:.1f} samples/s "
              f"(batch {a.batch}, {a.steps} steps, {world} process{'es' if world > 1 else ''} of "
              f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
