"""`twin eval`'s memory evidence: the same adapter on the held-out conversations with and without the memory block.

- `perplexity.with` / `.without`: of the owner's turns (the same turns both times: a held-out sample as training
  rendered it, with its memory, and the same turns rendered without it);
- `fact_perplexity.with` / `.without`: of the owner's held-out words that are rare overall (in at most as many
  messages as retrieval still asks with: twin/memory.py) but occur in that chat's earlier history: names, places,
  numbers, the facts memory is for; `fact_words` counts them (each occurrence).
Written under the key `memory` of the eval results (null for an adapter trained without memory).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from training.metrics import _nll_sums
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


def compare(model: Any, tokenizer: Any, held_out: list[Sample], db, train_on: str = "owner") -> dict:
    """The memory block of the eval results (module docstring); `model` is the adapter, active."""
    with Store.open(db) as store:
        rare = max(20, int(store.indexed_documents() * 0.002))
        cache: dict = {}
        rows_with, rows_without, facts_with, facts_without, count = [], [], [], [], 0
        for s in held_out:
            bare = render(Conversation(replace(s.conversation.persona, memory=()), s.turns), tokenizer, train_on)
            rows_with.append((s.input_ids, s.loss_mask))
            rows_without.append((bare.input_ids, bare.loss_mask))
            facts = fact_words(store, s, rare, cache)
            if not facts:
                continue
            fw = fact_mask(tokenizer, s.input_ids, s.loss_mask, facts)
            fo = fact_mask(tokenizer, bare.input_ids, bare.loss_mask, facts)
            if fw is None or fo is None or sum(fw) != sum(fo) or not any(fw):
                continue
            facts_with.append((s.input_ids, fw))
            facts_without.append((bare.input_ids, fo))
            count += sum(1 for t in s.turns if t.role == "owner" and t.target for line in t.lines
                         for w in WORD.findall(line) if fold(w) in facts)
    memory_used = sum(1 for s in held_out if s.conversation.persona.memory)

    def ppl(rows) -> float | None:
        if not rows:
            return None
        sums = _nll_sums(model, rows, 4)
        tokens = sum(c for _, c in sums)
        return math.exp(sum(t for t, _ in sums) / tokens) if tokens else None

    out = {
        "perplexity": {"with": ppl(rows_with), "without": ppl(rows_without)},
        "fact_perplexity": {"with": ppl(facts_with), "without": ppl(facts_without)},
        "fact_words": count,
        "fact_tokens": sum(sum(m) for _, m in facts_with),
        "samples_with_memory": memory_used,
        "samples": len(held_out),
    }
    for k in ("perplexity", "fact_perplexity"):
        w, wo = out[k]["with"], out[k]["without"]
        out[k]["ratio"] = w / wo if w and wo else None
    return out
