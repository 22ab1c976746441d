"""LoRA dropout that keeps the positions of the dropped inputs instead of two fp32 copies of each projection's input.

peft computes `lora_B(lora_A(dropout(x)))`: nn.Dropout keeps its fp32 mask and lora_A keeps the dropped input
for its weight gradient, per adapted projection, so q, k and v each keep two copies of the same hidden state
(on SmolLM2-135M, 6,912 of the 17,531 floats a decoder layer keeps per token for the backward:
docs/benchmarks.md, "Training memory"). Here dropout and lora_A are one autograd function that keeps `x` (one
storage, shared by q, k and v, and by gate and up) and the flat positions of the dropped elements, and
rebuilds the dropped input in the backward.

The positions are drawn sparsely: the gaps between dropped elements of an i.i.d. Bernoulli(p) sequence are
geometric, so `drop_positions` draws about n·p geometric gaps and sums them instead of n Bernoulli draws. It is
the same distribution as nn.Dropout's (each element dropped with probability p, independently, and
independently for every projection), drawn from torch's generator, so a seeded run is repeatable; it is
another stream than nn.Dropout's, so the masks differ from peft's own. On SmolLM2-135M with peft's default
p = 0.05 the dense draw and the bool-mask arithmetic took a third of a CPU training step (154 against 231
tokens/s with dropout off; docs/benchmarks.md, "Training memory", session 7). The positions take 8 bytes per
dropped element, 0.4 bytes per element at p = 0.05; above p = 1/8 a bool mask (1 byte) is kept instead.

Used by training.trainer during the training loop (`with lean_dropout(model):`); the saved adapter keeps its format.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


SPARE_SIGMAS = 6.0  # gaps drawn beyond the expected n·p, in standard deviations: a shortfall is a 1e-9 event


def drop_positions(n: int, p: float, device=None) -> torch.Tensor:
    """Sorted flat indices in [0, n) of the elements dropped, each with probability p independently.

    The first dropped element's 1-based position and every gap after it are Geometric(p) (trials until a
    success), so the positions are the cumulative sums of geometric draws, minus one. The draws go on until
    they pass n; one batch of n·p plus SPARE_SIGMAS standard deviations is almost always enough.
    """
    mean = n * p
    k = max(16, int(mean + SPARE_SIGMAS * math.sqrt(mean)))
    found = torch.empty(k, dtype=torch.long, device=device).geometric_(p).cumsum_(0).sub_(1)
    while found[-1] < n - 1:  # every position drawn is inside: the sequence goes on past them
        more = torch.empty(k, dtype=torch.long, device=device).geometric_(p).cumsum_(0).add_(found[-1])
        found = torch.cat([found, more])
    return found[: int(torch.searchsorted(found, n))]


class _DropoutLinear(torch.autograd.Function):
    """y = (x * keep / (1 - p)) @ W^T, keeping x, the dropped positions and W (never the dropped copy)."""

    @staticmethod
    def forward(ctx, x, weight, p):
        dropped = drop_positions(x.numel(), p, x.device)
        if p > 1 / 8:  # 8 bytes per position would outweigh a bool per element
            dropped = torch.zeros(x.numel(), dtype=torch.bool, device=x.device).index_fill_(0, dropped, True)
        scale = x.new_ones(()).div_(1 - p)  # nn.Dropout's kept value, 1 / (1 - p) rounded in x's dtype
        ctx.save_for_backward(x, dropped, weight, scale)
        return F.linear(_zeroed(x, dropped).mul_(scale), weight)

    @staticmethod
    def backward(ctx, g):
        x, dropped, weight, scale = ctx.saved_tensors
        g = g.to(weight.dtype)  # under torch.autocast the forward's product, and so g, is bf16; r is small
        # Scaled where nn.Dropout scales (the input-wide tensors), so the rounding is the same as peft's.
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _zeroed((g @ weight).view(x.shape).mul_(scale), dropped, in_place=True).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dropped_x = _zeroed(x, dropped).mul_(scale).to(weight.dtype)  # x is bf16 under training.mixed_lora
            dw = g.reshape(-1, g.shape[-1]).t() @ dropped_x.reshape(-1, x.shape[-1])
        return dx, dw, None


def _zeroed(x: torch.Tensor, dropped: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """x with the elements `dropped` (flat positions, or a flat bool mask) set to 0: a copy, or x itself."""
    flat = x.view(-1) if in_place else x.reshape(-1)
    if dropped.dtype == torch.bool:
        return (flat.masked_fill_ if in_place else flat.masked_fill)(dropped, 0).view(x.shape)
    return (flat.index_fill_ if in_place else flat.index_fill)(0, dropped, 0).view(x.shape)


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
