"""Draft outcomes: what the owner did with each suggested reply, as values.

One shape for everything that learns from or reports on the approval flow: the daily digest (`twin run`),
`twin report` and `twin learn`. The relay's ledger (bot/ledger.py, `Ledger.outcomes`) reads them from its drafts
table; its callers hand them on as values, so neither the core nor `training` imports `bot`.

An outcome's `kind`:
- "sent": the candidate on the card went out as it was (approved, or auto-sent);
- "edited": the owner changed it before sending (`final_text` is what went out);
- "written": the owner answered by hand in the chat instead (the draft was superseded);
- "copied": a draft offered to copy (forwarded or pasted messages, no business connection): the owner copied
  `shown` to send it themselves, and did not forward what they really sent; weaker than "sent" (unconfirmed:
  they may have changed it in the other app), so `twin learn` trusts it less and `twin report` shows it apart;
- "no_reply": the owner tapped "No reply needed" (the burst needed no answer: a label for the reply model,
  training/reply_model.py, and no verdict on the draft's text);
- "discarded", "expired", "failed", "pending" (not settled yet).
Edits are "light" when the normalised edit distance is at most LIGHT_EDIT, else "heavy"; an edit that only
touches whitespace or one character is "trivial" and is not a preference (twin learn leaves it out).

    >>> edit_size("see you at 8!", "see you at 8")
    'trivial'
    >>> edit_size("see you at 8!", "see you at 8 pm!"), edit_size("see you at 8!", "can't tonight, sorry")
    ('light', 'heavy')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from twin.text import edit_distance, edit_ratio

LIGHT_EDIT = 0.3

KINDS = ("sent", "edited", "written", "copied", "no_reply", "discarded", "expired", "failed", "pending")


def edit_size(draft: str, final: str) -> str:
    """"none", "trivial" (whitespace or one character), "light" or "heavy" (see the module docstring)."""
    if draft == final:
        return "none"
    if "".join(draft.split()) == "".join(final.split()) or edit_distance(draft, final) <= 1:
        return "trivial"
    return "light" if edit_ratio(draft, final) <= LIGHT_EDIT else "heavy"


@dataclass(frozen=True)
class Outcome:
    """One draft and what became of it. `shown` is the last candidate on the card; `passed_over` are the
    candidates the owner skipped with Next (or that a regeneration replaced); `answers` the ids of the chat's
    messages it answers; `replaced`: it expired because a newer draft answers the whole burst (bot/relay.py)."""

    draft_id: int
    origin: str
    platform: str
    chat_id: str
    kind: str
    adapter: str | None
    prompt: tuple[int, ...]
    shown: str
    passed_over: tuple[str, ...]
    final_text: str | None
    regenerations: int
    latency_ms: float | None
    created_at: datetime
    settled_at: datetime | None
    auto: bool
    answers: tuple[str, ...] = ()
    replaced: bool = False

    @property
    def edit(self) -> str:
        """The edit's size for "edited" and "written" outcomes, else "none"."""
        if self.kind not in ("edited", "written") or self.final_text is None:
            return "none"
        return edit_size(self.shown, self.final_text)

