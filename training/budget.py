"""The memory budget of a training run: micro-batch, accumulation and activation checkpointing that fit.

`twin train` (training.trainer.train) asks `choose` for a plan before the first step: the rows per optimizer
step stay what twin.toml says (micro_batch_rows x grad_accum, so the update is the same), and the plan is the
fastest one whose estimated peak fits `[training] max_memory_gb` (default: the memory the machine has free).
In order of cost: the configured micro-batch without checkpointing, smaller micro-batches (a 1024-token row
already fills a CPU's cores, so halving it should cost little; not measured apart), then checkpointing more and
more decoder layers (each checkpointed layer keeps only its input and runs its forward again in the backward:
about a third more compute for that layer). A run that fits no plan stops before it starts, with the figure.

The estimate is `fixed + weights + activations` (on a CPU the first two as measured: process_bytes), with the
per-token activation bytes of one decoder layer measured on SmolLM2-135M (fp32, LoRA on every projection, dropout on, training.lean_dropout and training.lean_mlp as the
trainer runs them) and scaled by the model's widths; see docs/benchmarks.md ("Training memory") for the measurements
it was fitted to. Under bf16 mixed precision (training.trainer.mixed_precision) a layer keeps MIXED_SHARE of
those bytes, and the bf16 copies of the decoder's projections and of the head count with the weights.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

GB = 1024**3

# Fitted to SmolLM2-135M on the dev box (docs/benchmarks.md, "Training memory"): the process before the model
# (Python, torch, transformers, peft, accelerate) and the bytes one decoder layer keeps for the backward per
# token, as multiples of hidden and intermediate width in the weights' dtype. With peft's stock modules one
# layer kept 17.1 x hidden + 5 x intermediate floats per token (saved_tensors_hooks, by storage) and the fit to
# whole-run RSS was 28 + 6; with the lean swaps it keeps 9.6 + 3.25, and the fit is scaled by the same ratios.
RUNTIME_BYTES = int(0.45 * GB)
HIDDEN_COPIES = 16  # norms, q/k/v/o, rotary, attention, one LoRA input per group of projections, dropout masks
INTERMEDIATE_COPIES = 4  # gate and up (training.lean_mlp), the product (down's LoRA input) and its dropout mask
# Under bf16 autocast a SmolLM2 layer kept 30.1 against 39.2 KB per token (saved_tensors_hooks, 0.77), and its
# bf16 weight copies besides; 0.85 fits the demo's whole-run peak (docs/benchmarks.md, "Training memory").
MIXED_SHARE = 0.85
HEAD_CHUNK = 256  # target positions whose logits exist at once (training.packing.HEAD_CHUNK)


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model (from its config): `Shape.of(model)`."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    params: int  # all parameters, trainable or not
    trainable: int  # the LoRA weights (AdamW keeps two more copies, and each has a gradient)
    dtype_bytes: int = 4
    # Under torch.autocast (training.trainer.mixed_precision) the kept activations are partly bf16, and each
    # decoder layer keeps bf16 copies of its projections' weights for the backward.
    mixed: bool = False
    projection_params: int = 0  # the decoder layers' frozen linear weights (what autocast copies)
    softcap: bool = False  # the head's logits are soft-capped (Gemma 2's final_logit_softcapping)
    # The process's resident set measured with the weights in memory (process_bytes), on a CPU; 0: not measured,
    # and RUNTIME_BYTES plus the weights stand for it.
    resident: int = 0

    @classmethod
    def of(cls, model, mixed: object = None) -> "Shape":
        """The model's shape; `mixed`: the autocast dtype its forward runs at, if any."""
        from torch import nn

        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        c = causal.config
        c = getattr(c, "text_config", None) or c
        first = next(model.parameters())
        decoder = causal.get_decoder() if hasattr(causal, "get_decoder") else causal
        projections = sum(m.weight.numel() for m in decoder.modules()
                          if isinstance(m, nn.Linear) and not m.weight.requires_grad)
        return cls(layers=c.num_hidden_layers, hidden=c.hidden_size,
                   intermediate=getattr(c, "intermediate_size", None) or 4 * c.hidden_size, vocab=c.vocab_size,
                   params=sum(p.numel() for p in model.parameters()),
                   trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                   dtype_bytes=first.element_size(), mixed=mixed is not None, projection_params=projections,
                   softcap=bool(getattr(causal.config, "final_logit_softcapping", None)))


@dataclass(frozen=True)
class Plan:
    micro_batch_rows: int
    grad_accum: int
    checkpointed_layers: int  # the first this many decoder layers are checkpointed
    layers: int
    peak_bytes: int  # the estimate
    budget_bytes: int
    mixed: bool = False  # the forward in bf16 mixed precision (Shape.mixed)

    def describe(self) -> str:
        """One line for the terminal: what was chosen and why it fits."""
        ck = ("no activation checkpointing" if not self.checkpointed_layers else
              f"activation checkpointing on {self.checkpointed_layers} of {self.layers} layers")
        mixed = ", bf16 mixed precision" if self.mixed else ""
        return (f"memory plan: {self.micro_batch_rows} row(s) per micro-batch x {self.grad_accum} accumulation, "
                f"{ck}{mixed}; about {self.peak_bytes / GB:.1f} GB of {self.budget_bytes / GB:.1f} GB")


def layer_bytes(shape: Shape, tokens: int) -> int:
    """Bytes one decoder layer keeps for its backward over `tokens` tokens when not checkpointed."""
    floats = tokens * (HIDDEN_COPIES * shape.hidden + INTERMEDIATE_COPIES * shape.intermediate)
    return int(floats * (shape.dtype_bytes * MIXED_SHARE if shape.mixed else shape.dtype_bytes))


def estimate_peak(shape: Shape, row_tokens: int, micro_batch_rows: int, checkpointed: int) -> int:
    """Estimated peak bytes of a training process: runtime, weights, optimizer state and one micro-batch's
    activations with the first `checkpointed` layers keeping only their inputs.

    >>> smol = Shape(layers=30, hidden=576, intermediate=1536, vocab=49152, params=134_515_008, trainable=4_884_480)
    >>> round(estimate_peak(smol, 1024, 2, 0) / GB, 2), round(estimate_peak(smol, 1024, 2, 30) / GB, 2)
    (4.66, 1.4)
    """
    tokens = row_tokens * micro_batch_rows
    # The process with its weights, then the LoRA weights' gradients and AdamW's two moments.
    weights = (shape.resident or RUNTIME_BYTES + shape.params * shape.dtype_bytes) + shape.trainable * 4 * 3
    if shape.mixed:
        # bf16 copies made once for the loop (training.mixed_lora): the projections' and the head's
        weights += (shape.projection_params + shape.vocab * shape.hidden) * 2
    one_layer = layer_bytes(shape, tokens)
    inputs = tokens * shape.hidden * shape.dtype_bytes  # what a checkpointed layer keeps
    acts = (shape.layers - checkpointed) * one_layer + checkpointed * inputs + (one_layer if checkpointed else 0)
    # A chunk's fp32 logits, turned into their gradient in place (training.packing._ChunkedHeadLoss); a soft-cap's
    # tanh and its product besides; mixed, a bf16 copy of the gradient for its product. fp32 keeps the 3 chunks
    # the whole-run fit was made with.
    mixed_head = 4 + (8 if shape.softcap else 0) + 2
    head = min(tokens, HEAD_CHUNK) * shape.vocab * (mixed_head if shape.mixed else 4 * 3)
    return weights + acts + head


class DoesNotFit(ValueError):
    """No plan fits the budget; the message says what the smallest one needs."""


def choose(shape: Shape, row_tokens: int, micro_batch_rows: int, grad_accum: int, budget_bytes: int,
           checkpoint_all: bool = False) -> Plan:
    """The fastest plan whose estimate fits: fewest checkpointed layers first, then the largest micro-batch.

    Rows per optimizer step (micro_batch_rows x grad_accum) never change; a micro-batch is a divisor of them.

    >>> smol = Shape(layers=30, hidden=576, intermediate=1536, vocab=49152, params=134_515_008, trainable=4_884_480)
    >>> choose(smol, 1024, 2, 1, 20 * GB).describe()
    'memory plan: 2 row(s) per micro-batch x 1 accumulation, no activation checkpointing; about 4.7 GB of 20.0 GB'
    >>> p = choose(smol, 1024, 2, 1, 3 * GB); (p.micro_batch_rows, p.grad_accum, p.checkpointed_layers)
    (1, 2, 0)
    >>> choose(smol, 1024, 2, 1, 1 * GB)
    Traceback (most recent call last):
    ...
    training.budget.DoesNotFit: needs about 1.3 GB (1 row of 1024 tokens, all 30 layers checkpointed)
    """
    rows = micro_batch_rows * grad_accum
    sizes = [m for m in range(min(micro_batch_rows, rows), 0, -1) if rows % m == 0]
    for k in range(shape.layers if checkpoint_all else 0, shape.layers + 1):
        for m in sizes:
            peak = estimate_peak(shape, row_tokens, m, k)
            if peak <= budget_bytes:
                return Plan(m, rows // m, k, shape.layers, peak, budget_bytes, shape.mixed)
    least = estimate_peak(shape, row_tokens, 1, shape.layers)
    raise DoesNotFit(f"needs about {least / GB:.1f} GB (1 row of {row_tokens} tokens, "
                     f"all {shape.layers} layers checkpointed)")


def process_bytes(model) -> int:
    """The resident set of this process with `model`'s weights paged in: what a training run holds before its
    first step (the runtime, the tokenizer, the data and the weights), on Linux after glibc gave its free heap
    pages back.

    RUNTIME_BYTES was fitted to SmolLM2, whose tokenizer holds 57 MB; Gemma 3's (262,144 tokens) holds 346 MB,
    and the estimate fell 0.3 GB short of its run (docs/benchmarks.md, "Training memory", session 12). Weights
    loaded from safetensors are mapped from the file and come in on their first use, so each page is read once
    here (the first forward would read them all anyway).
    """
    import torch

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            flat = t.detach().reshape(-1)
            if flat.numel():
                flat[:: max(1, 4096 // t.element_size())].sum()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    return resident_bytes()


def free_bytes() -> int:
    """Memory available to a new allocation now (psutil's `available`: free plus reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


def budget_bytes(max_memory_gb: float | None, device="cpu") -> int:
    """The configured budget in bytes, or what the machine (on CUDA: the GPU) has free."""
    if max_memory_gb:
        return int(max_memory_gb * GB)
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return free_bytes()


MMAP_THRESHOLD = 16 << 20  # bytes: larger blocks get their own mapping, returned to the OS when freed


def resident_bytes() -> int:
    """This process's resident set now (Linux: /proc/self/statm, a read that costs microseconds; psutil elsewhere)."""
    import os

    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def _glibc():
    """The C library where it is glibc (mallopt and malloc_trim), else None."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return None
    return libc


def return_freed_memory(plan: Plan) -> Callable[[], None] | None:
    """Keep freed activations from pushing the process past its budget (glibc on Linux only): a function for the
    trainer to call after each micro-batch that gives the heap's free pages back to the OS when the plan's peak
    plus the pages held free could pass `plan.budget_bytes`; None elsewhere.

    glibc raises its mmap threshold (up to 32 MB) each time a large block is freed, after which a step's
    activation tensors come from the heap and stay in the RSS after they are freed, and the heap fragments as
    row shapes change: RSS grew step after step. Earlier the threshold was fixed at 1 MB, which kept the peak
    (2.62 GB for the demo's plan) at the price of a page fault on each allocation: measured again with the lean
    layers and bf16 products, a 1024-token row took 4.50 s against 2.83 s with glibc's defaults (fp32), 3.91
    against 2.07 (bf16). Now the thresholds are MMAP_THRESHOLD, and `malloc_trim(0)` runs only where it is
    needed: the free pages that the next micro-batch may fail to reuse are at most what the heap held beyond
    the resident set right after the first trim, and the plan's peak plus those must stay inside the budget.
    A trim after every micro-batch cost 10% of a bf16 step (the freed pages are faulted in again; 371 against
    411 tokens/s on SmolLM2), and without it the resident set stayed flat between micro-batches, 2.74 GB
    with the pages held (docs/benchmarks.md, "Training memory", sessions 10-11). The demo (3 GB budget, a plan
    of about 2.9) trims after each micro-batch; a run with the machine's free memory as its budget seldom does.
    """
    libc = _glibc()
    if libc is None:
        return None
    mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    if not (mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, MMAP_THRESHOLD)):
        return None
    trimmed: list[int] = []  # the resident set right after the first trim: nothing freed held

    def trim() -> None:
        if trimmed and plan.peak_bytes + resident_bytes() - trimmed[0] <= plan.budget_bytes:
            return
        malloc_trim(0)
        if not trimmed:
            trimmed.append(resident_bytes())

    return trim


def apply_checkpointing(model, layers: int) -> int:
    """Checkpoint the first `layers` decoder layers (non-reentrant, as transformers does); how many were set.

    transformers marks each decoder block (GradientCheckpointingLayer) with `gradient_checkpointing`; enabling
    it on all of them and then clearing the flag on the rest keeps its recompute path for the chosen ones.
    """
    if layers <= 0:
        return 0
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    from transformers.modeling_layers import GradientCheckpointingLayer

    causal.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False}) \
        if not hasattr(causal, "activation_checkpointing_enable") \
        else causal.activation_checkpointing_enable({"use_reentrant": False})
    blocks = [m for m in causal.modules() if isinstance(m, GradientCheckpointingLayer)]
    for i, block in enumerate(blocks):
        block.gradient_checkpointing = i < layers
    return min(layers, len(blocks))
