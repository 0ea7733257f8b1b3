#!/usr/bin/env python3
"""PyTorch reference figure for `loom bench recipes/bench/clap_ast.yaml`: the same CLAP, an AST-like
audio tower (a 128 x 256 log-mel grid cut into 16 x 16 patches: 128 patches and a class token, width
192, 4 layers, 3 heads) and a causal text tower (context 32, width 192, 2 layers), 2-layer MLP
projections to 64 dims, learnable temperature, AdamW, batch 64, on random inputs (no data loading),
fp32 on the CPU. Prints training samples/s and the process's peak resident memory. --checkpoint
recomputes every block's activations in backward (torch.utils.checkpoint), as loom's
model.<tower>.checkpoint_activations: true.

usage: python scripts/bench/clap_ast_torch.py [--steps N] [--threads T] [--batch B] [--checkpoint]
"""
import argparse
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_fashion_torch import Block  # noqa: E402  the same pre-LN block


def projection(width, embed):
    return nn.Sequential(nn.Linear(width, embed), nn.ReLU(), nn.Linear(embed, embed))


class Clap(nn.Module):
    def __init__(self, mel=128, frames=256, patch=16, width=192, layers=4, heads=3, vocab=512, ctx=32,
                 text_layers=2, embed=64, checkpoint=False):
        super().__init__()
        self.checkpoint = checkpoint
        self.patch = patch
        n = (mel // patch) * (frames // patch)
        self.proj = nn.Linear(patch * patch, width)
        self.cls = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.apos = nn.Parameter(torch.randn(n + 1, width) * width ** -0.5)
        self.ablocks = nn.ModuleList([Block(width, heads, False) for _ in range(layers)])
        self.aln = nn.LayerNorm(width)
        self.tok = nn.Embedding(vocab, width)
        self.tpos = nn.Parameter(torch.randn(ctx, width) * 0.01)
        self.tblocks = nn.ModuleList([Block(width, heads, True) for _ in range(text_layers)])
        self.tln = nn.LayerNorm(width)
        self.aproj, self.tproj = projection(width, embed), projection(width, embed)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def block(self, blk, x):
        return torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False) if self.checkpoint else blk(x)

    def forward(self, fbank, tokens, eot):
        b, c, h, w = fbank.shape
        p = self.patch
        x = fbank.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        x = torch.cat([self.cls.expand(b, 1, -1), self.proj(x)], 1) + self.apos
        for blk in self.ablocks:
            x = self.block(blk, x)
        audio = F.normalize(self.aproj(self.aln(x)[:, 0]), dim=-1)
        t = self.tok(tokens) + self.tpos
        for blk in self.tblocks:
            t = self.block(blk, t)
        t = self.tln(t)[torch.arange(b), eot]
        text = F.normalize(self.tproj(t), dim=-1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * audio @ text.t()
        labels = torch.arange(b)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--checkpoint", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Clap(checkpoint=a.checkpoint)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.98))
    fbank = torch.randn(a.batch, 1, 128, 256)
    tokens = torch.randint(4, 512, (a.batch, 32))
    eot = torch.randint(3, 32, (a.batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        model(fbank, tokens, eot).backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(f"torch {torch.__version__} clap_ast: {a.steps * a.batch / dt:.1f} samples/s "
          f"(batch {a.batch}, {a.steps} steps, {torch.get_num_threads()} threads"
          f"{', checkpointed blocks' if a.checkpoint else ''}); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
