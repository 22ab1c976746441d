"""LoRA dropout that keeps a one-byte mask instead of two fp32 copies of each projection's input.

peft computes `lora_B(lora_A(dropout(x)))`: nn.Dropout keeps its fp32 mask and lora_A keeps the dropped input
for its weight gradient, per adapted projection, so q, k and v each keep two copies of the same hidden state.
On SmolLM2-135M that is over half of what a decoder layer keeps for the backward (docs/benchmarks.md,
"Training memory"). Here dropout and lora_A are one autograd function that keeps `x` (one storage, shared by
q, k and v, and by gate and up) and a bool mask, and rebuilds the dropped input in the backward. Same
distribution (each projection its own Bernoulli(1 - p) mask, scaled by 1 / (1 - p)), drawn from torch's
generator as nn.Dropout does; the saved adapter is unchanged.

Not used by training.trainer any more: the adapters it trained (a different mask stream) kept `twin learn`'s
DPO from promoting in tests/test_learn.py, a cause not found yet, and on the quiet box the demo settings ran
faster without it (116 against 104 tokens/s, 2.8 GB with 13 checkpointed layers). Kept with its tests for the
next attempt.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class _DropoutLinear(torch.autograd.Function):
    """y = (x * keep / (1 - p)) @ W^T, keeping x, the bool mask and W (never the dropped copy)."""

    @staticmethod
    def forward(ctx, x, weight, p):
        keep = torch.rand_like(x) >= p
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(x, keep, weight)
        ctx.scale = scale
        return F.linear(x * keep * scale, weight)

    @staticmethod
    def backward(ctx, g):
        x, keep, weight = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = (g @ weight) * keep * ctx.scale
        if ctx.needs_input_grad[1]:
            dropped = (x * keep * ctx.scale).reshape(-1, x.shape[-1])
            dw = g.reshape(-1, g.shape[-1]).t() @ dropped
        return dx, dw, None


class DropoutLoraA(nn.Linear):
    """A LoRA A matrix (nn.Linear without bias, same parameter and state-dict key) that applies its dropout."""

    dropout_p: float = 0.0

    def forward(self, x):
        if self.training and self.dropout_p > 0 and torch.is_grad_enabled():
            return _DropoutLinear.apply(x, self.weight, self.dropout_p)
        return F.linear(x, self.weight)


@contextlib.contextmanager
def lean_dropout(model: nn.Module):
    """Within the block, every LoRA projection with nn.Dropout runs DropoutLoraA instead; restored after.

    Yields how many projections were switched (0 without dropout: peft then uses nn.Identity already).
    """
    swapped = []
    for module in model.modules():
        drops, a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(drops, nn.ModuleDict) or not isinstance(a, nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            lin = a[name] if name in a else None
            if type(drop) is not nn.Dropout or drop.p <= 0 or type(lin) is not nn.Linear or lin.bias is not None:
                continue
            lin.__class__, lin.dropout_p = DropoutLoraA, drop.p
            drops[name] = nn.Identity()
            swapped.append((drops, name, drop, lin))
    try:
        yield len(swapped)
    finally:
        for drops, name, drop, lin in swapped:
            lin.__class__ = nn.Linear
            del lin.dropout_p
            drops[name] = drop
