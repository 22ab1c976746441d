"""In-process generation with transformers: batches of prompts to replies, stopped at the end of the turn.

Shared by `twin eval` (held-out replies) and the local drafting backend. torch is imported inside the
functions, never at module level, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 0.7  # 0: greedy
    top_p: float = 0.9
    seed: int = 0
    batch_size: int = 8


def stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: eos, and the ChatML / Gemma end-of-turn markers if present."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>") if t in vocab}
    return sorted(ids)


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], sampling: Sampling = Sampling()) -> list[list[str]]:
    """For each prompt (token ids), `sampling.n` completions, decoded without special tokens.

    Prompts are left-padded into batches of similar length; each completion ends at the first stop token.
    """
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_ids(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[str]] = [[] for _ in prompts]
    torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), sampling.batch_size):
            chunk = order[start:start + sampling.batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for r, i in enumerate(chunk):
                p = torch.tensor(list(prompts[i]), dtype=torch.long)
                ids[r, width - len(p):] = p
                attention[r, width - len(p):] = 1
            greedy = sampling.temperature <= 0
            with torch.no_grad():
                gen = model.generate(
                    input_ids=ids.to(device), attention_mask=attention.to(device),
                    max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
                    top_k=None, num_return_sequences=sampling.n, eos_token_id=stops, pad_token_id=pad,
                )
            for r, i in enumerate(chunk):
                for k in range(sampling.n):
                    row = gen[r * sampling.n + k, width:].tolist()
                    cut = next((j for j, t in enumerate(row) if t in stops), len(row))
                    out[i].append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out
