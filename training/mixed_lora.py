"""LoRA projections under bf16 autocast without the casts and passes that autocast and peft add around them.

Under `torch.autocast(dtype=torch.bfloat16)` on fp32 weights (training.trainer.mixed_precision), peft's LoRA
Linear costs more than its products:
- the frozen weight is cast to bf16 on every call (autocast caches only weights that require a gradient);
- the input is cast twice, for the base product and for lora_A, and down_proj's bf16 input goes to fp32 (peft
  casts to lora_A's dtype) and back;
- `lora_B(...) * scaling` and the sum with the base's output are two more passes over an output-wide tensor.

On SmolLM2-135M these cost an eighth of a bf16 training step on a CPU (438 against 497 tokens/s; docs/benchmarks.md,
"Training loop", session 11). Here, within the block, each plain LoRA Linear multiplies with a bf16 copy of its
frozen weight made once, casts its input once, scales lora_A's r-wide output instead of lora_B's output-wide one,
and lets lora_B's GEMM add its product into the base's output in place (addmm_). The products are the bf16 products autocast would run, so the
outputs differ only by where bf16 rounds; the LoRA weights and their gradients stay fp32. Anything else (no
autocast at the copies' dtype, a merged or disabled adapter, DoRA and other variants, a LoRA bias, several active
adapters, per-sample adapter names) runs peft's own forward.

Used by training.trainer during the training loop (`with mixed_lora(model, dtype):`); the model is peft's again
after the block.
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn


def _plain_lora(module: nn.Module) -> bool:
    """A peft LoRA Linear on an nn.Linear, with vanilla LoRA (no variant, no bias on lora_B) only."""
    from peft.tuners.lora import Linear

    return (type(module) is Linear and type(module.base_layer) is nn.Linear and not module.lora_variant
            and all(b.bias is None for b in module.lora_B.values()))


def _mixed_forward(self, x, *args, **kwargs):
    weight = self._mixed_weight
    active = [a for a in self.active_adapters if a in self.lora_A]
    device = x.device.type
    if (args or kwargs or self.disable_adapters or self.merged or len(active) != 1
            or not torch.is_autocast_enabled(device) or torch.get_autocast_dtype(device) != weight.dtype):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    x = x.to(weight.dtype)
    down = self.lora_A[name](self.lora_dropout[name](x)) * self.scaling[name]  # r wide
    out = F.linear(x, weight, self.base_layer.bias)
    # In place: the base product's backward needs only x and the frozen weight. (addmm_ is outside autocast's
    # casts, hence lora_B's own.)
    b_t = self.lora_B[name].weight.t().to(weight.dtype)
    out.view(-1, out.shape[-1]).addmm_(down.reshape(-1, down.shape[-1]), b_t)
    return out


def _frozen_head(model: nn.Module) -> nn.Linear | None:
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    if type(head) is nn.Linear and head.bias is None and not head.weight.requires_grad:
        return head
    return None


@contextlib.contextmanager
def mixed_lora(model: nn.Module, dtype: torch.dtype | None):
    """Within the block, every plain LoRA Linear runs _mixed_forward with its frozen weight copied at `dtype` (the
    autocast dtype), and a frozen head keeps a copy at `dtype` for training.packing.head_loss (which otherwise
    casts it on every call); None changes nothing. Yields how many projections were switched."""
    swapped, head = [], _frozen_head(model) if dtype is not None else None
    if dtype is not None:
        for module in model.modules():
            if _plain_lora(module) and "forward" not in vars(module):
                module._mixed_weight = module.base_layer.weight.detach().to(dtype)
                module.forward = types.MethodType(_mixed_forward, module)
                swapped.append(module)
    if head is not None:
        head._mixed_weight = head.weight.detach().to(dtype)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward
            del module._mixed_weight
        if head is not None:
            del head._mixed_weight
