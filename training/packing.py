"""Packing: samples into full rows without attention across them, and the loss only where it counts.

Samples (token ids + a loss mask) are packed best-fit-decreasing into rows of `max_tokens`. Each sample's
position ids restart at 0 and no attention mask is passed, so no token attends across samples: transformers
(`masking_utils.find_packed_sequence_indices`, used only when there is no mask and no cache, hence
use_cache=False) builds a block-diagonal causal mask from the position ids, and for sdpa/eager models
`segment_attention` runs attention per sample instead, without computing the masked-out scores.
`check_packing` refuses a model whose attention leaks anyway. `TargetLoss` runs the lm_head only where the
next token is a target. Used by training.trainer (`twin train`).
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from twin.config import TrainingConfig
from twin.errors import TwinError

log = logging.getLogger(__name__)


class TrainingError(TwinError):
    """The data or the model cannot be trained as asked (raised here and by training.trainer)."""


class Sample(Protocol):
    """What training takes of a sample (training.dataset.Sample has more)."""

    input_ids: list[int]
    loss_mask: list[bool]  # True at i: token i is a target, predicted from position i - 1


class TargetLoss(nn.Module):
    """Summed next-token cross-entropy over target positions, with logits computed only at those positions."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, position_ids, targets):
        causal = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        # No attention mask and no cache: the position ids alone mark the packed samples.
        hidden = causal.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)[0]
        where = targets[:, 1:]
        head = causal.get_output_embeddings()
        cap = getattr(causal.config, "final_logit_softcapping", None)
        return head_loss(hidden[:, :-1][where], head, input_ids[:, 1:][where], cap)


HEAD_CHUNK = 256  # target positions whose fp32 logits exist at once (training.budget counts them)
# Row counts of bf16 products on a CPU are rounded up to a multiple of this: oneDNN, which runs them, keeps kernels
# for every shape it meets (training.trainer pads its rows' widths alike).
MIXED_ROW_MULTIPLE = 64


def head_loss(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, softcap: float | None = None,
              chunk: int = HEAD_CHUNK) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` against `labels`, the logits made `chunk` rows at a time.

    A frozen head without bias (every LoRA run: twin never trains the head) goes through _ChunkedHeadLoss, which
    computes each chunk's gradient as it goes, so a 49k- or 262k-vocabulary fp32 logits tensor is never whole
    and never kept for the backward. Anything else takes the plain path. Under a CPU autocast the products run
    at its dtype and the softmax in fp32, as on a GPU with bf16 weights.
    """
    weight = getattr(head, "weight", None)
    chunked = type(head) is nn.Linear and head.bias is None and not weight.requires_grad
    if chunked and hidden.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # The head's products were 20% of a bf16 SmolLM2 step in fp32; they run in whole blocks of rows here, with
        # the copy training.mixed_lora made of the weight for the loop if there is one (Gemma 3's is 335 MB).
        dtype = torch.get_autocast_dtype("cpu")
        copy = getattr(head, "_mixed_weight", None)
        with torch.autocast("cpu", enabled=False):
            return _ChunkedHeadLoss.apply(hidden, weight if copy is None or copy.dtype != dtype else copy, labels,
                                          softcap or 0.0, chunk, dtype)
    if not chunked:
        logits = head(hidden).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits, labels, reduction="sum")
    return _ChunkedHeadLoss.apply(hidden, weight, labels, softcap or 0.0, chunk, None)


def _blocks(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x at `dtype`, with zero rows appended up to a multiple of MIXED_ROW_MULTIPLE."""
    rows = -(-len(x) // MIXED_ROW_MULTIPLE) * MIXED_ROW_MULTIPLE
    if rows == len(x):
        return x.to(dtype)
    out = x.new_empty((rows, *x.shape[1:]), dtype=dtype)
    out[: len(x)] = x
    out[len(x) :] = 0
    return out


class _ChunkedHeadLoss(torch.autograd.Function):
    """sum_i CE(softcap(h_i W^T), y_i) with d/dh computed in the forward, chunk by chunk (W is frozen).

    d CE / d logits = softmax(logits) - onehot(y); through the soft-cap c*tanh(z/c) that is scaled by
    1 - tanh(z/c)^2; d logits / d h = W. With a `dtype` (a CPU autocast) both products run at it, on row
    blocks (_blocks), and the logits are fp32 from there on.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, softcap, chunk, dtype):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if hidden.requires_grad else None
        w = weight if dtype is None else weight.to(dtype)  # no copy if it is one already
        for s in range(0, len(hidden), chunk):
            h, y = hidden[s : s + chunk], labels[s : s + chunk]
            z = (h @ w.t() if dtype is None else (_blocks(h, dtype) @ w.t())[: len(h)]).float()
            t = None
            if softcap:
                t = torch.tanh(z / softcap)
                z = t * softcap
            lse = torch.logsumexp(z, dim=-1)
            total += (lse - z.gather(1, y.unsqueeze(1)).squeeze(1)).sum()
            if grad is not None:
                p = z.sub_(lse.unsqueeze(1)).exp_()  # in place: one vocabulary-wide fp32 chunk, not two
                p[torch.arange(len(y), device=y.device), y] -= 1
                if t is not None:
                    p *= 1 - t * t
                grad[s : s + chunk] = p.to(w.dtype) @ w if dtype is None else (_blocks(p, dtype) @ w)[: len(h)]
        ctx.save_for_backward(grad if grad is not None else hidden.new_empty(0))
        return total

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return grad * g.to(grad.dtype), None, None, None, None, None


SEGMENT_ATTENTION = "twin_segments"


def segment_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, position_ids=None,
                      **kwargs):
    """sdpa run on each packed sample of each row by itself, causal inside it.

    With a block-diagonal mask sdpa still computes every row x row score and throws most away (a 1024-token
    row of ~200-token samples: ~80% of the attention work, ~20% of a SmolLM2 step on CPU); cutting the row
    at the position-id restarts does only the work that counts, and lets sdpa use its causal kernels.
    Anything else (a cache, no position ids) goes to plain sdpa with the mask transformers built.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # Under the trainer's bf16 autocast (training.trainer.mixed_precision) attention stays fp32 on a CPU:
        # torch's bf16 flash kernel was slower there (414 against 323 ms per 1024-token row on SmolLM2) and
        # keeps kernels for every new sample length it meets, ~25 MB more resident per micro-batch.
        with torch.autocast("cpu", enabled=False):
            return segment_attention(module, query.float(), key.float(), value.float(), attention_mask,
                                     dropout, scaling, position_ids, **kwargs)
    length = query.shape[2]
    if position_ids is None or length == 1 or key.shape[2] != length or kwargs.get("sliding_window"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    pos = position_ids.expand(query.shape[0], -1)
    restarts = (pos[:, 1:] != pos[:, :-1] + 1).nonzero().tolist()
    rows = []
    for b in range(query.shape[0]):
        cuts = [0, *(i + 1 for row, i in restarts if row == b), length]
        rows.append(torch.cat([
            sdpa_attention_forward(module, query[b : b + 1, :, s:e], key[b : b + 1, :, s:e],
                                   value[b : b + 1, :, s:e], None, dropout=dropout, scaling=scaling, is_causal=True)[0]
            for s, e in zip(cuts, cuts[1:])], dim=1))
    return torch.cat(rows, dim=0), None


def use_segment_attention(causal: nn.Module) -> str | None:
    """Switch an sdpa/eager model to segment_attention; the previous implementation, or None if left alone.

    flash-attention and flex already skip the masked work (varlen from position ids, block masks); models
    with sliding-window layers or attention soft-capping keep transformers' own masks.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = causal.config
    previous = getattr(config, "_attn_implementation", None)
    windowed = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    if previous not in ("sdpa", "eager") or windowed or getattr(config, "attn_logit_softcapping", None):
        return None
    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)  # the fallback's mask, packing-aware
    config._attn_implementation = SEGMENT_ATTENTION
    return previous


def check_packing(lm: nn.Module, device) -> None:
    """Refuse to train if a sample's hidden states change when another sample is packed before it."""
    causal = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    body = causal.get_decoder()
    vocab = causal.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, vocab, (1, n), generator=gen).to(device) for n in (5, 7))
    was_training = lm.training
    lm.eval()
    with torch.no_grad():
        alone = body(input_ids=b, position_ids=torch.arange(7, device=device)[None], use_cache=False)[0]
        packed = body(input_ids=torch.cat([a, b], 1), use_cache=False,
                      position_ids=torch.cat([torch.arange(5), torch.arange(7)]).to(device)[None])[0][:, 5:]
    lm.train(was_training)
    err = ((packed - alone).norm() / alone.norm()).item()
    if err > (5e-2 if alone.dtype != torch.float32 else 1e-3):
        impl = getattr(causal.config, "_attn_implementation", "?")
        raise TrainingError(f"attention implementation {impl!r} lets packed samples see each other "
                            f"(relative difference {err:.3g}); use sdpa, eager or flash_attention_2")


# --- the data --------------------------------------------------------------------------------------------


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sample indices grouped into rows of at most `capacity` tokens, best-fit decreasing.

    >>> pack([5, 3, 4, 2, 6], 8)
    [[4, 3], [0, 1], [2]]
    """
    free: list[tuple[int, int]] = []  # (space left, row), sorted
    rows: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = bisect.bisect_left(free, (lengths[i], -1))
        if k == len(free):
            rows.append([i])
            space, row = capacity - lengths[i], len(rows) - 1
        else:
            space, row = free.pop(k)
            rows[row].append(i)
            space -= lengths[i]
        if space > 0:
            bisect.insort(free, (space, row))
    return rows


@dataclass(frozen=True)
class Prepared:
    ids: list[list[int]]
    targets: list[list[bool]]  # first token of every sample is never a target: nothing in its sample precedes it
    rows: list[list[int]]
    row_tokens: list[int]
    row_targets: list[int]
    fingerprint: str


def prepare(samples: Sequence[Sample], cfg: TrainingConfig, vocab_size: int) -> Prepared:
    """Samples cut to the row length, without target-less ones, packed into rows; with a data fingerprint."""
    ids, targets, cut = [], [], 0
    digest = hashlib.sha256(f"{cfg.max_tokens}".encode())
    for n, s in enumerate(samples):
        if len(s.input_ids) != len(s.loss_mask):
            raise TrainingError(f"sample {n}: {len(s.input_ids)} tokens but {len(s.loss_mask)} loss-mask values")
        x, m = list(s.input_ids[: cfg.max_tokens]), [False, *map(bool, s.loss_mask[1 : cfg.max_tokens])]
        cut += len(s.input_ids) > cfg.max_tokens
        if not any(m):
            continue
        if max(x) >= vocab_size or min(x) < 0:
            raise TrainingError(f"sample {n}: token id {max(x)} outside the model's vocabulary of {vocab_size}; "
                                "twin never adds tokens (vLLM adapters cannot)")
        ids.append(x)
        targets.append(m)
        digest.update(array("q", x).tobytes())
        digest.update(bytes(m))
    if not ids:
        raise TrainingError(f"none of {len(samples)} samples has a target token; nothing to learn from")
    rows = pack([len(x) for x in ids], cfg.max_tokens)
    row_tokens = [sum(len(ids[i]) for i in r) for r in rows]
    row_targets = [sum(sum(targets[i]) for i in r) for r in rows]
    log.info("samples: %d used, %d cut to %d tokens, %d without targets; %d rows, %.1f%% full",
             len(ids), cut, cfg.max_tokens, len(samples) - len(ids), len(rows),
             100 * sum(row_tokens) / (len(rows) * cfg.max_tokens))
    return Prepared(ids, targets, rows, row_tokens, row_targets, digest.hexdigest()[:16])


def epoch_steps(data: Prepared, cfg: TrainingConfig, epoch: int, world: int) -> list[list[list[int]]]:
    """One epoch's optimizer steps, each a list of micro-batches (row ids) for all ranks; rank r takes [r::world]."""
    order = list(range(len(data.rows)))
    random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
    micro = [order[i : i + cfg.micro_batch_rows] for i in range(0, len(order), cfg.micro_batch_rows)]
    if len(micro) < world:
        raise TrainingError(f"{len(data.rows)} packed rows make {len(micro)} micro-batches, fewer than the "
                            f"{world} processes; use fewer processes or more data")
    micro = micro[: len(micro) - len(micro) % world]  # every rank gets the same number of micro-batches
    per_step = cfg.grad_accum * world
    return [micro[i : i + per_step] for i in range(0, len(micro), per_step)]


def collate(data: Prepared, row_ids: list[int], pad_id: int, device, multiple: int = 1) -> dict[str, torch.Tensor]:
    """A micro-batch: rows of concatenated samples, positions restarting per sample, padded to the longest row
    (rounded up to a `multiple` of tokens).

    Padding is a block of its own (positions from 0, never a target), so it changes nothing for the samples.
    """
    width = -(-max(data.row_tokens[r] for r in row_ids) // multiple) * multiple
    ids, pos, tgt = [], [], []
    for r in row_ids:
        x, p, t = [], [], []
        for i in data.rows[r]:
            x += data.ids[i]
            p += range(len(data.ids[i]))
            t += data.targets[i]
        pad = width - len(x)
        ids.append(x + [pad_id] * pad)
        pos.append(p + list(range(pad)))
        tgt.append(t + [False] * pad)
    return {"input_ids": torch.tensor(ids, device=device), "position_ids": torch.tensor(pos, device=device),
            "targets": torch.tensor(tgt, device=device)}
