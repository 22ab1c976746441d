"""A gated MLP that keeps gate and up for the backward, not the activation and the product as well.

Llama-style MLPs compute `down(act(gate(x)) * up(x))`: autograd keeps gate for the activation's backward and
act(gate) and up for the product's, three intermediate-wide tensors per token (on SmolLM2-135M, 4,608 of the
17,531 floats one decoder layer keeps per token for the backward: docs/benchmarks.md, "Training memory").
Here the activation and the product are one autograd function that keeps gate and up and recomputes
act(gate) in the backward (a few elementwise passes over what the matmuls around it cost). The backward is
the stock one, op for op (aten's silu_backward / gelu_backward), so gradients are the same.

Used by training.trainer during the training loop only (`with lean_mlp(model):`); the module's own forward is
back after the block, and no parameter or state-dict key changes. Only MLPs whose forward is Llama's (same
code, so Gemma 3's and Qwen's too) with SiLU or tanh-GELU are switched; anything else is left alone.
"""
from __future__ import annotations

import contextlib
import functools
import types

import torch
import torch.nn.functional as F
from torch import nn

_SILU, _GELU_TANH = "silu", "gelu_tanh"


def _activation_kind(act: nn.Module) -> str | None:
    """What the activation module computes, if it is one this function rebuilds exactly."""
    name = type(act).__name__
    if isinstance(act, nn.SiLU) or name == "SiLUActivation":
        return _SILU
    # transformers' GELUTanh is F.gelu(approximate="tanh") unless built with its Python formula.
    if (name == "GELUTanh" and isinstance(getattr(act, "act", None), functools.partial)) or (
            isinstance(act, nn.GELU) and act.approximate == "tanh"):
        return _GELU_TANH
    return None


def _act(g: torch.Tensor, kind: str) -> torch.Tensor:
    return F.silu(g) if kind == _SILU else F.gelu(g, approximate="tanh")


class _ActMul(torch.autograd.Function):
    """act(gate) * up, keeping gate and up only."""

    @staticmethod
    def forward(ctx, gate, up, kind):
        ctx.save_for_backward(gate, up)
        ctx.kind = kind
        return _act(gate, kind) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        d_gate = d_up = None
        if ctx.needs_input_grad[1]:
            d_up = grad * _act(gate, ctx.kind)
        if ctx.needs_input_grad[0]:
            d_act = grad * up
            if ctx.kind == _SILU:
                d_gate = torch.ops.aten.silu_backward(d_act, gate)
            else:
                d_gate = torch.ops.aten.gelu_backward(d_act, gate, approximate="tanh")
        return d_gate, d_up, None


def _lean_forward(self, x):
    if self.training and torch.is_grad_enabled():
        return self.down_proj(_ActMul.apply(self.gate_proj(x), self.up_proj(x), self._lean_kind))
    return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _llama_mlp_code():
    from transformers.models.llama.modeling_llama import LlamaMLP

    return LlamaMLP.forward.__code__


def _is_llama_mlp(module: nn.Module, llama_code) -> bool:
    code = getattr(type(module).forward, "__code__", None)
    return code is not None and code.co_code == llama_code.co_code and code.co_names == llama_code.co_names


@contextlib.contextmanager
def lean_mlp(model: nn.Module):
    """Within the block, every Llama-style MLP with a recognised activation runs _ActMul; restored after.

    Yields how many MLPs were switched.
    """
    llama_code = _llama_mlp_code()
    swapped = []
    for module in model.modules():
        if "forward" in vars(module) or not _is_llama_mlp(module, llama_code):
            continue
        kind = _activation_kind(getattr(module, "act_fn", None))
        if kind is None:
            continue
        module._lean_kind = kind
        module.forward = types.MethodType(_lean_forward, module)
        swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward
            del module._lean_kind
