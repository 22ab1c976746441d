"""`twin eval`'s memory evidence: the same adapter on the held-out conversations with and without the memory block.

- `perplexity.with` / `.without`: of the owner's turns (the same turns both times: a held-out sample as training
  rendered it, with its memory, and the same turns rendered without it);
- `fact_perplexity.with` / `.without`: of the owner's held-out words that are rare overall (in at most as many
  messages as retrieval still asks with: twin/memory.py) but occur in that chat's earlier history: names, places,
  numbers, the facts memory is for; `fact_words` counts them (each occurrence).
Written under the key `memory` of the eval results (null for an adapter trained without memory).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from training.metrics import perplexity_of, token_nlls
from training.dataset import Sample
from twin.memory import WORD, fold
from twin.prompts import Conversation, render
from twin.store import Store


def fact_words(store: Store, sample: Sample, rare: int, cache: dict) -> set[str]:
    """The folded words of the sample's owner target turns that are in at most `rare` messages of the store and
    in the chat's messages before the sample's conversation."""
    key = (sample.platform, sample.chat_id)
    if key not in cache:
        from twin.chat import ChatKey

        cache[key] = [(m.time, set(fold(w) for w in WORD.findall(m.text)))
                      for m in store.chat_messages(ChatKey(*key))]
    earlier = set().union(*(ws for t, ws in cache[key] if t < sample.start)) if cache[key] else set()
    owner = {fold(w) for t in sample.turns if t.role == "owner" and t.target for line in t.lines
             for w in WORD.findall(line) if len(w) >= 3}
    candidates = owner & earlier
    docs = store.term_documents(sorted(candidates))
    return {w for w in candidates if 0 < docs[w] <= rare}


def fact_mask(tokenizer: Any, ids: list[int], mask: list[bool], facts: set[str]) -> list[bool] | None:
    """The loss mask narrowed to the tokens of fact words; None when the ids do not round-trip through text."""
    text = tokenizer.decode(ids)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(ids):
        return None
    spans = [(m.start(), m.end()) for m in WORD.finditer(text) if fold(m.group()) in facts]
    out = []
    for (a, b), m in zip(enc["offset_mapping"], mask):
        out.append(bool(m) and any(a < e and s < b for s, e in spans))
    return out


def compare(model: Any, tokenizer: Any, held_out: list[Sample], db, train_on: str = "owner",
            with_memory: list[np.ndarray] | None = None) -> dict:
    """The memory block of the eval results (module docstring); `model` is the adapter, active.

    `with_memory`: the adapter's `token_nlls` on `held_out` as it is (with its memory), when the caller has them
    (twin eval's perplexity did that forward already). The rows without memory take one more forward; the
    fact perplexities are sums over a subset of the same tokens, with none.
    """
    with Store.open(db) as store:
        rare = max(20, int(store.indexed_documents() * 0.002))
        cache: dict = {}
        rows_without, facts, count = [], [], 0
        for i, s in enumerate(held_out):
            bare = render(Conversation(replace(s.conversation.persona, memory=()), s.turns), tokenizer, train_on)
            rows_without.append((bare.input_ids, bare.loss_mask))
            words = fact_words(store, s, rare, cache)
            if not words:
                continue
            fw = fact_mask(tokenizer, s.input_ids, s.loss_mask, words)
            fo = fact_mask(tokenizer, bare.input_ids, bare.loss_mask, words)
            if fw is None or fo is None or sum(fw[1:]) != sum(fo[1:]) or not any(fw[1:]):
                continue
            facts.append((i, within(s.loss_mask, fw), within(bare.loss_mask, fo)))
            count += sum(1 for t in s.turns if t.role == "owner" and t.target for line in t.lines
                         for w in WORD.findall(line) if fold(w) in words)
    memory_used = sum(1 for s in held_out if s.conversation.persona.memory)
    if with_memory is None:
        with_memory = token_nlls(model, [(s.input_ids, s.loss_mask) for s in held_out], 4)
    without = token_nlls(model, rows_without, 4)

    def ppl(nlls) -> float | None:
        return perplexity_of(nlls) if any(len(t) for t in nlls) else None

    out = {
        "perplexity": {"with": ppl(with_memory), "without": ppl(without)},
        "fact_perplexity": {"with": ppl([with_memory[i][w] for i, w, _ in facts]),
                            "without": ppl([without[i][o] for i, _, o in facts])},
        "fact_words": count,
        "fact_tokens": sum(int(w.sum()) for _, w, _ in facts),
        "samples_with_memory": memory_used,
        "samples": len(held_out),
    }
    for k in ("perplexity", "fact_perplexity"):
        w, wo = out[k]["with"], out[k]["without"]
        out[k]["ratio"] = w / wo if w and wo else None
    return out


def within(loss_mask: list[bool], narrower: list[bool]) -> np.ndarray:
    """Which of `token_nlls`' entries for a row (its targets after the first token) `narrower` keeps.

    >>> within([True, True, False, True, True], [True, False, False, True, False]).tolist()
    [False, True, False]
    """
    return np.array([n for m, n in zip(loss_mask[1:], narrower[1:]) if m], dtype=bool)
