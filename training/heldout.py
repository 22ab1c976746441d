"""One forward per held-out sample for both halves of an eval side: the NLLs of its target tokens (perplexity)
and the prefill of its reply.

A reply's prompt (the context before the owner's last reply, `training.evaluation.reply_contexts`) is a prefix
of its sample's ids, and on the sample export it is 98% of them: reading each sample once for perplexity and
again as a prompt paid the same forward twice. Here each batch of samples runs in two parts, left-padded so that
their prompts end in the same column: the prompts, keeping their KV cache, then the rest of each sample
(right-padded) on a copy of that cache. Both parts' hidden states give the NLLs at the target positions (the
head run on those alone, as `training.metrics.token_nlls`); the prompts' cache and their last position's logits
start the replies (`twin.decoding.decode_rows`). The copy, not a crop, because a sliding-window layer (Gemma 3)
forgets what a crop would need back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from training import metrics
from twin import decoding


def nlls_and_replies(
    model: Any, rows: Sequence[tuple[list[int], list[bool]]], prompt_lens: Sequence[int | None], *,
    max_new_tokens: int, temperature: float, top_p: float, seed: int, stops: Sequence[int], batch_rows: int = 16,
) -> tuple[list[np.ndarray], dict[int, list[int]]]:
    """(per row of (ids, mask), `token_nlls`' NLLs; {row: its reply's token ids}) for the rows whose
    `prompt_lens[row]` is set: a reply sampled after `ids[:prompt_len]`, cut before its first stop token.
    The replies are `decoding.sample_each`'s (batches sorted by prompt length, one generator for the call)."""
    import torch

    device = next(model.parameters()).device
    if metrics.decoder_of(model) is None:  # no separate decoder and head: the two halves apart
        prompts = {i: rows[i][0][:n] for i, n in enumerate(prompt_lens) if n}
        done = decoding.sample_each(model, list(prompts.values()), max_new_tokens=max_new_tokens,
                                    temperature=temperature, top_p=top_p, seed=seed, stops=stops, batch_rows=batch_rows)
        return metrics.token_nlls(model, rows), dict(zip(prompts, done))
    with_prompt = sorted((i for i, n in enumerate(prompt_lens) if n), key=lambda i: prompt_lens[i])
    alone = [i for i, n in enumerate(prompt_lens) if not n]
    nlls: list[np.ndarray] = [np.zeros(0)] * len(rows)
    for i, row_nlls in zip(alone, metrics.token_nlls(model, [rows[i] for i in alone])):
        nlls[i] = row_nlls
    choose = decoding.chooser(temperature, top_p, seed, device)
    stop = torch.tensor(sorted(set(stops)), dtype=torch.long, device=device)
    replies: dict[int, list[int]] = {}
    with decoding.evaluating(model):
        for start in range(0, len(with_prompt), batch_rows):
            batch = with_prompt[start:start + batch_rows]
            batch_nlls, logits, cache, mask, position = _read(model, [rows[i] for i in batch],
                                                              [prompt_lens[i] for i in batch])
            done = decoding.decode_rows(model, logits, cache, max_new_tokens, choose, stop, mask=mask,
                                        position=position)
            for i, row_nlls, tokens in zip(batch, batch_nlls, done):
                nlls[i], replies[i] = row_nlls, tokens
    return nlls, replies


def _read(model: Any, rows: list[tuple[list[int], list[bool]]], prompt_lens: list[int]):
    """One batch: (its rows' NLLs, the logits after each prompt, the prompts' cache, their mask, last positions)."""
    import torch

    device = next(model.parameters()).device
    if bad := [n for (seq, _), n in zip(rows, prompt_lens) if not 0 < n <= len(seq)]:
        raise ValueError(f"nlls_and_replies: prompt length {bad[0]} is not within its row; pass 1..len(ids)")
    ids, mask, position = decoding.left_padded([ids[:n] for (ids, _), n in zip(rows, prompt_lens)], device)
    rest_width = max(len(r[0]) - n for r, n in zip(rows, prompt_lens))
    rest = torch.zeros((len(rows), rest_width), dtype=torch.long)
    rest_mask = torch.zeros_like(rest)
    target = torch.zeros((len(rows), ids.shape[1] + rest_width), dtype=torch.bool)
    for r, ((seq, flags), n) in enumerate(zip(rows, prompt_lens)):
        rest[r, : len(seq) - n] = torch.tensor(list(seq[n:]), dtype=torch.long)
        rest_mask[r, : len(seq) - n] = 1
        offset = ids.shape[1] - n  # the row's left padding
        target[r, offset + 1 : offset + len(seq)] = torch.tensor(list(flags[1:]), dtype=torch.bool)
    rest, rest_mask, target = rest.to(device), rest_mask.to(device), target.to(device)
    causal, decoder = metrics.decoder_of(model)
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True)
    hidden, cache = out.last_hidden_state, out.cache
    logits = metrics.head_logits(causal, hidden[:, -1])
    if rest_width:
        whole_mask = torch.cat([mask, rest_mask], dim=1)
        rest_position = position[:, -1:] + 1 + torch.arange(rest_width, device=device)
        more = decoder(input_ids=rest, attention_mask=whole_mask, position_ids=rest_position,
                       cache=copy.deepcopy(cache), use_cache=True).last_hidden_state
        hidden = torch.cat([hidden, more], dim=1)
    target = target[:, 1:]
    labels = torch.cat([ids, rest], 1)[:, 1:][target]
    per_row = metrics.nlls_per_row(metrics.target_nlls(causal, hidden[:, :-1][target], labels), target)
    return per_row, logits, cache, mask, position[:, -1:]
