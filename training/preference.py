"""Preference data from draft outcomes: what `twin learn` trains on, and the outcomes it keeps back to judge by.

Every settled draft (twin.outcomes) says something about the prompt it was drafted from:
- edited, or answered by hand ("written"): the text that went out ≻ the draft on the card, and ≻ every
  candidate the owner passed over on the way;
- sent as it was: the sent candidate ≻ each candidate passed over before it;
- a prompt drafted more than once (the owner discarded one draft and approved another): what went out ≻ every
  candidate of the discarded draft;
- copied (a draft offered to copy, bot/forwards.py: the owner copied a candidate to send it in another app and
  never showed what really went out): weaker than sent, so it only says the copied candidate ≻ each candidate
  passed over before it (source "copied"), it is never held out for the gate (nothing confirms the text went
  out), it never outranks a discarded draft, and where a pair or label of it contradicts one of a confirmed
  outcome, the confirmed one wins (two confirmed ones that contradict each other both go).
For DPO, a pair of two versions of one reply (a light edit) also anchors each place where they part: the prompt
and the chosen text up to there, then the chosen tokens ≻ the rejected ones (`dpo_rows`, `anchors`).
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
import difflib
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
    >>> from dataclasses import replace  # a copied draft contradicting a sent one of the same prompt gives way
    >>> same = replace(o(6, "copied", "yes", passed=("Yes!! Sure!!",)), prompt=(1, 5))
    >>> p = build([o(5, "sent", "Yes!! Sure!!", passed=("yes",)), same, o(7, "copied", "sounds good",
    ...            passed=("no way",))], 0.0)
    >>> [(x.chosen, x.rejected, x.source) for x in p.pairs]
    [('Yes!! Sure!!', 'yes', 'passed_over'), ('sounds good', 'no way', 'copied')]
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
    weak = {o.draft_id for o in usable if o.kind == "copied"}
    for prompt, group in groups.items():
        sent = [(o, reply(o)) for o in group if reply(o)]
        for o in group:
            candidates = [c for c in map(normalise, o.passed_over) if c]
            if o.kind == "copied":
                text = normalise(o.final_text if o.final_text is not None else o.shown)
                if text:
                    labels.append(Label(prompt, text, True, o.draft_id))
                    pairs += [Pair(prompt, text, c, "copied", o.draft_id) for c in candidates]
                    labels += [Label(prompt, c, False, o.draft_id) for c in candidates if _differs(text, c)]
                continue
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
    kept_pairs = _clean_pairs(pairs, counts, weak)
    kept_labels = _clean_labels(labels, weak)
    counts.update(outcomes=sum(counts[k] for k in ("sent", "edited", "written", "copied", "discarded", "expired",
                                                     "failed", "pending")),
                  pairs=len(kept_pairs), labels=len(kept_labels), held_out=len(held))
    return Preferences(tuple(kept_pairs), tuple(kept_labels), tuple(held), dict(counts))


def _clean_pairs(pairs: list[Pair], counts: Counter, weak: set[int]) -> list[Pair]:
    """Trivial pairs out, duplicates once (a confirmed outcome's before a copied one's), and of two pairs that
    contradict each other: the copied one's when the other is confirmed, else both."""
    seen: dict[tuple, Pair] = {}
    for p in sorted(pairs, key=lambda p: p.draft_id in weak):  # stable: confirmed outcomes' pairs first
        if not _differs(p.chosen, p.rejected):
            counts["trivial"] += 1
            continue
        seen.setdefault((p.prompt, p.chosen, p.rejected), p)
    order = {id(p): i for i, p in enumerate(pairs)}
    contradicted = {key for key, p in seen.items() if (other := seen.get((key[0], key[2], key[1]))) is not None
                    and (p.draft_id in weak) >= (other.draft_id in weak)}
    counts["contradictory"] += len(contradicted)
    return sorted((p for key, p in seen.items() if key not in contradicted), key=lambda p: order[id(p)])


def _clean_labels(labels: list[Label], weak: set[int]) -> list[Label]:
    seen: dict[tuple, Label] = {}
    for x in sorted(labels, key=lambda x: x.draft_id in weak):
        seen.setdefault((x.prompt, x.completion, x.desirable), x)
    order = {id(x): i for i, x in enumerate(labels)}
    contradicted = {key for key, x in seen.items() if (other := seen.get((key[0], key[1], not key[2]))) is not None
                    and (x.draft_id in weak) >= (other.draft_id in weak)}
    return sorted((x for key, x in seen.items() if key not in contradicted), key=lambda x: order[id(x)])


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


def anchors(chosen: Sequence[int], rejected: Sequence[int]) -> list[tuple[int, list[int], list[int]]]:
    """Each place where `chosen` departs from `rejected`, token by token: (how many of chosen's tokens come
    before it, chosen's tokens there, rejected's tokens there). A deletion from rejected is answered by the next
    token chosen keeps, an insertion into it by the next token rejected had: both sides of an anchor start at the
    same point of the same text and differ in their first token.

    >>> anchors([1, 3, 4, 9], [1, 2, 3, 4, 2, 9])  # 2 deleted twice: after [1] comes 3, after [1, 3, 4] comes 9
    [(1, [3], [2]), (3, [9], [2])]
    >>> anchors([1, 5, 6, 3, 9], [1, 2, 3, 9]), anchors([1, 7, 2, 9], [1, 2, 9])  # a replacement, an insertion
    ([(1, [5, 6], [2])], [(1, [7], [2])])
    """
    out = []
    matcher = difflib.SequenceMatcher(None, rejected, chosen, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        ours, theirs = list(chosen[j1:j2] or chosen[j1:j1 + 1]), list(rejected[i1:i2] or rejected[i1:i1 + 1])
        if ours and theirs:
            out.append((j1, ours, theirs))
    return out


def dpo_rows(pairs: Sequence[Pair], tokenizer: Any, max_tokens: int) -> tuple[list[dict], int]:
    """TRL's tokenized preference rows (prompt_ids, chosen_ids, rejected_ids); (rows, dropped as too long).

    Each pair is a row of the whole replies. A pair of two versions of one reply (a light edit,
    twin.outcomes.edit_size: the owner deleted, replaced or added a few words) also gives a row for each place
    where they part (`anchors`): the prompt and the chosen reply up to that place, then the owner's tokens there
    ≻ the draft's. The whole-reply row alone says only "this sequence over that one": the draft's own words after
    the edit point count against it too, and a small model learns to end the turn where the edit was (a draft
    "sure! coffee sounds good!" edited to "sure coffee sounds good" taught "sure" and the end of the turn). The
    anchored row says what comes after "sure" instead of "!": " coffee". A heavy edit (a rewrite) shares only
    chance tokens with the draft, so it gets no anchors.
    """
    ids = Completions(tokenizer)
    rows, dropped = [], 0
    for p in pairs:
        chosen, rejected = ids(p.chosen), ids(p.rejected)
        if len(p.prompt) + max(len(chosen), len(rejected)) > max_tokens:
            dropped += 1
            continue
        rows.append({"prompt_ids": list(p.prompt), "chosen_ids": chosen, "rejected_ids": rejected})
        if edit_size(p.rejected, p.chosen) == "light":
            rows += [{"prompt_ids": list(p.prompt) + chosen[:at], "chosen_ids": ours, "rejected_ids": theirs}
                     for at, ours, theirs in anchors(chosen, rejected)
                     if len(p.prompt) + at + max(len(ours), len(theirs)) <= max_tokens]
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
