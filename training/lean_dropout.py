"""LoRA dropout that keeps a one-byte mask instead of two fp32 copies of each projection's input.

peft computes `lora_B(lora_A(dropout(x)))`: nn.Dropout keeps its fp32 mask and lora_A keeps the dropped input
for its weight gradient, per adapted projection, so q, k and v each keep two copies of the same hidden state
(on SmolLM2-135M, 6,912 of the 17,531 floats a decoder layer keeps per token for the backward:
docs/benchmarks.md, "Training memory"). Here dropout and lora_A are one autograd function that keeps `x` (one
storage, shared by q, k and v, and by gate and up) and a bool mask, and rebuilds the dropped input in the
backward. The mask is drawn as nn.Dropout draws it on a CPU (`bernoulli_(1 - p)` on a tensor shaped like x,
from torch's generator, then scaled by 1 / (1 - p) in x's dtype: aten's `_dropout_impl`), so a seeded run
draws the very same masks in the same order and trains the same weights as peft's own dropout (on CUDA,
nn.Dropout uses a fused kernel with its own stream: the same distribution, other masks). The saved adapter
is unchanged.

Used by training.trainer during the training loop (`with lean_dropout(model):`). An earlier version drew
its masks with `rand_like(x) >= p`, another stream than nn.Dropout's: the parent adapter of
tests/test_learn.py then came out different, and that test's DPO promotion is sensitive to which adapter it
starts from (it also fails with peft's own dropout under some seeds; docs/benchmarks.md).
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
        keep = torch.empty_like(x, dtype=torch.bool).bernoulli_(1 - p)  # nn.Dropout's draw on a CPU
        scale = x.new_ones(()).div_(1 - p)  # its mask's value, 1 / (1 - p) rounded in x's dtype
        ctx.save_for_backward(x, keep, weight, scale)
        return F.linear(x * keep * scale, weight)

    @staticmethod
    def backward(ctx, g):
        x, keep, weight, scale = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = (g @ weight) * keep * scale
        if ctx.needs_input_grad[1]:
            dropped = (x * keep * scale).reshape(-1, x.shape[-1])
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
