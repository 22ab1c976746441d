"""Preference data from draft outcomes: what `twin learn` trains on, and the outcomes it keeps back to judge by.

Every settled draft (twin.outcomes) says something about the prompt it was drafted from:
- edited, or answered by hand ("written"): the text that went out ≻ the draft on the card, and ≻ every
  candidate the owner passed over on the way;
- sent as it was: the sent candidate ≻ each candidate passed over before it;
- a prompt drafted more than once (the owner discarded one draft and approved another): what went out ≻ every
  candidate of the discarded draft.
A pair whose sides differ only trivially (whitespace, or one character: `twin.outcomes.edit_size`) is no
preference. For KTO the same outcomes are labels without pairs: what went out is desirable; an edited draft,
a passed-over or discarded candidate is undesirable. Expired, failed and pending drafts say nothing.

The most recent `holdout_fraction` of the outcomes that went out are held out (with every other outcome of the
same prompt): the gate (training.gate) drafts for their prompts and measures how close it comes to what the
owner sent. Texts are normalised as drafting shows them: one message per line, blank lines dropped.

    twin learn --dry-run
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twin.outcomes import Outcome, edit_size
from twin.prompts import Conversation, Persona, Turn, render

WENT_OUT = ("sent", "edited", "written")


@dataclass(frozen=True)
class Pair:
    """`chosen` ≻ `rejected` as replies to `prompt` (token ids); `source` says which rule made it."""

    prompt: tuple[int, ...]
    chosen: str
    rejected: str
    source: str  # "edit", "passed_over" or "discarded"
    draft_id: int


@dataclass(frozen=True)
class Label:
    """One reply to `prompt`, desirable or not (KTO)."""

    prompt: tuple[int, ...]
    completion: str
    desirable: bool
    draft_id: int


@dataclass(frozen=True)
class Preferences:
    pairs: tuple[Pair, ...]
    labels: tuple[Label, ...]
    held_out: tuple[Outcome, ...]  # oldest first; each has `reply(o)`, the text that went out
    counts: dict[str, int] = field(default_factory=dict)

    def outcomes_used(self, method: str) -> int:
        """How many training outcomes gave `method` ("dpo" or "kto") at least one example."""
        items = self.pairs if method == "dpo" else self.labels
        return len({x.draft_id for x in items})


def normalise(text: str | None) -> str:
    """A reply as drafting shows it: stripped lines, blank ones dropped.

    >>> normalise("  hey!\\n\\n see you  ")
    'hey!\\nsee you'
    """
    return "\n".join(line.strip() for line in (text or "").splitlines() if line.strip())


def reply(o: Outcome) -> str:
    """The text that went out for an outcome ("" when nothing did)."""
    if o.kind not in WENT_OUT:
        return ""
    return normalise(o.final_text if o.final_text is not None else o.shown)


def held_out_count(n: int, fraction: float) -> int:
    """How many of n outcomes to hold out: round(n × fraction), at least one when fraction > 0, never all.

    >>> [held_out_count(n, 0.2) for n in (0, 1, 2, 10, 41)], held_out_count(10, 0.0)
    ([0, 0, 1, 2, 8], 0)
    """
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def _differs(a: str, b: str) -> bool:
    return bool(a) and bool(b) and edit_size(b, a) not in ("none", "trivial")


def build(outcomes: Iterable[Outcome], holdout_fraction: float) -> Preferences:
    """Pairs, labels and held-out outcomes from draft outcomes (see the module docstring); deterministic.

    >>> from twin.chat import utc
    >>> def o(i, kind, shown, final=None, passed=()):
    ...     return Outcome(i, "telegram", "telegram", "c", kind, "twin-v1", (1, i), shown, passed, final, 0, None,
    ...                    utc(i), utc(i + 1), False)
    >>> p = build([o(1, "edited", "See you at 8!!", "see you at 8"), o(2, "edited", "ok!", "ok"),
    ...            o(3, "sent", "yes", passed=("Yes!! Sure!!",)), o(4, "sent", "fine")], 0.25)
    >>> [(x.chosen, x.rejected, x.source) for x in p.pairs]
    [('see you at 8', 'See you at 8!!', 'edit'), ('yes', 'Yes!! Sure!!', 'passed_over')]
    >>> [o.draft_id for o in p.held_out], p.counts["trivial"]
    ([4], 1)
    """
    usable, counts = [], Counter()
    for o in outcomes:
        counts[o.kind] += 1
        if not o.prompt:
            counts["no_prompt"] += 1
        else:
            usable.append(o)
    went_out = sorted((o for o in usable if reply(o)), key=lambda o: (o.created_at, o.draft_id))
    k = held_out_count(len(went_out), holdout_fraction)
    held = went_out[len(went_out) - k:] if k else []
    held_prompts = {o.prompt for o in held}

    groups: dict[tuple[int, ...], list[Outcome]] = {}
    for o in usable:
        if o.prompt not in held_prompts:
            groups.setdefault(o.prompt, []).append(o)
    pairs: list[Pair] = []
    labels: list[Label] = []
    for prompt, group in groups.items():
        sent = [(o, reply(o)) for o in group if reply(o)]
        for o in group:
            candidates = [c for c in map(normalise, o.passed_over) if c]
            if o.kind == "discarded":
                candidates += [c for c in [normalise(o.shown)] if c]
                labels += [Label(prompt, c, False, o.draft_id) for c in candidates]
                for s, text in sent:
                    pairs += [Pair(prompt, text, c, "discarded", s.draft_id) for c in candidates]
                continue
            text = reply(o)
            if not text:
                continue
            labels.append(Label(prompt, text, True, o.draft_id))
            shown = normalise(o.shown)
            if o.kind in ("edited", "written") and shown != text:
                pairs.append(Pair(prompt, text, shown, "edit", o.draft_id))
                if _differs(text, shown):
                    labels.append(Label(prompt, shown, False, o.draft_id))
            for c in candidates:
                pairs.append(Pair(prompt, text, c, "passed_over", o.draft_id))
                if _differs(text, c):
                    labels.append(Label(prompt, c, False, o.draft_id))
    kept_pairs = _clean_pairs(pairs, counts)
    kept_labels = _clean_labels(labels, counts)
    counts.update(outcomes=sum(counts[k] for k in ("sent", "edited", "written", "discarded", "expired", "failed",
                                                     "pending")),
                  pairs=len(kept_pairs), labels=len(kept_labels), held_out=len(held))
    return Preferences(tuple(kept_pairs), tuple(kept_labels), tuple(held), dict(counts))


def _clean_pairs(pairs: list[Pair], counts: Counter) -> list[Pair]:
    """Trivial pairs out, duplicates once, and both of two pairs that contradict each other out."""
    seen: dict[tuple, Pair] = {}
    for p in pairs:
        if not _differs(p.chosen, p.rejected):
            counts["trivial"] += 1
            continue
        seen.setdefault((p.prompt, p.chosen, p.rejected), p)
    contradicted = {key for key in seen if (key[0], key[2], key[1]) in seen}
    counts["contradictory"] += len(contradicted)
    return [p for key, p in seen.items() if key not in contradicted]


def _clean_labels(labels: list[Label], counts: Counter) -> list[Label]:
    seen: dict[tuple, Label] = {}
    for x in labels:
        seen.setdefault((x.prompt, x.completion, x.desirable), x)
    contradicted = {key for key in seen if (key[0], key[1], not key[2]) in seen}
    return [x for key, x in seen.items() if key not in contradicted]


# -- tokenizing ------------------------------------------------------------------------------------------------

_PERSONA = Persona("Owner", "Contact", "telegram", dt.date(2024, 1, 1))


class Completions:
    """Token ids of a reply as training renders an owner's turn: its lines joined by line breaks, then the chat
    template's end of turn. Taken from `twin.prompts.render` itself (the loss mask of a one-reply conversation
    covers exactly those tokens), so preference training and SFT see a reply the same way. Memoised per text."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._ids: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        if text not in self._ids:
            lines = tuple(line for line in text.splitlines() if line.strip())
            conv = Conversation(_PERSONA, (Turn("contact", ("…",)), Turn("owner", lines)))
            r = render(conv, self.tokenizer)
            self._ids[text] = [t for t, m in zip(r.input_ids, r.loss_mask) if m]
        return self._ids[text]


def dpo_rows(pairs: Sequence[Pair], tokenizer: Any, max_tokens: int) -> tuple[list[dict], int]:
    """TRL's tokenized preference rows (prompt_ids, chosen_ids, rejected_ids); (rows, dropped as too long)."""
    ids = Completions(tokenizer)
    rows, dropped = [], 0
    for p in pairs:
        chosen, rejected = ids(p.chosen), ids(p.rejected)
        if len(p.prompt) + max(len(chosen), len(rejected)) > max_tokens:
            dropped += 1
            continue
        rows.append({"prompt_ids": list(p.prompt), "chosen_ids": chosen, "rejected_ids": rejected})
    return rows, dropped


def kto_rows(labels: Sequence[Label], tokenizer: Any, max_tokens: int) -> tuple[list[dict], int]:
    """TRL's tokenized unpaired rows (prompt_ids, completion_ids, label); (rows, dropped as too long)."""
    ids = Completions(tokenizer)
    rows, dropped = [], 0
    for x in labels:
        completion = ids(x.completion)
        if len(x.prompt) + len(completion) > max_tokens:
            dropped += 1
            continue
        rows.append({"prompt_ids": list(x.prompt), "completion_ids": completion, "label": x.desirable})
    return rows, dropped
