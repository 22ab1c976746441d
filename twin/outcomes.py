"""Draft outcomes: what the owner did with each suggested reply, read back from the relay's drafts table.

One reading for everything that learns from or reports on the approval flow: the daily digest (`twin run`),
`twin report` and `twin learn`. The relay (bot/) writes the table; this module only reads it, so `training`
never imports `bot`.

An outcome's `kind`:
- "sent": the candidate on the card went out as it was (approved, or auto-sent);
- "edited": the owner changed it before sending (`final_text` is what went out);
- "written": the owner answered by hand in the chat instead (the draft was superseded);
- "discarded", "expired", "failed", "pending" (not settled yet).
Edits are "light" when the normalised edit distance is at most LIGHT_EDIT, else "heavy"; an edit that only
touches whitespace or one character is "trivial" and is not a preference (twin learn leaves it out).

    >>> edit_size("see you at 8!", "see you at 8")
    'trivial'
    >>> edit_size("see you at 8!", "see you at 8 pm!"), edit_size("see you at 8!", "can't tonight, sorry")
    ('light', 'heavy')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from twin.chat import utc
from twin.store import Store
from twin.text import edit_distance, edit_ratio

LIGHT_EDIT = 0.3

KINDS = ("sent", "edited", "written", "discarded", "expired", "failed", "pending")
_KIND = {"sent": "sent", "edited_sent": "edited", "superseded": "written", "discarded": "discarded",
         "expired": "expired", "failed": "failed", "pending": "pending", "sending": "pending",
         "unsure": "pending"}  # unsure: sent or not, the owner has yet to say


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
    candidates the owner skipped with Next (or that a regeneration replaced)."""

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

    @property
    def edit(self) -> str:
        """The edit's size for "edited" and "written" outcomes, else "none"."""
        if self.kind not in ("edited", "written") or self.final_text is None:
            return "none"
        return edit_size(self.shown, self.final_text)


def outcomes(store: Store, since: datetime | None = None, until: datetime | None = None,
             origin: str | None = None) -> list[Outcome]:
    """Every draft created in [since, until), oldest first."""
    rows = store.conn.execute(
        "SELECT d.id, d.origin, d.platform, d.chat_id, d.state, d.adapter, d.prompt, d.candidates, d.shown, "
        "d.final_text, d.regenerations, d.latency_ms, d.created_at, d.auto, "
        "(SELECT max(e.time) FROM draft_events e WHERE e.draft_id = d.id "
        "AND e.to_state NOT IN ('pending', 'sending', 'unsure')) "
        "FROM drafts d WHERE d.created_at >= ? AND d.created_at < ? AND (? IS NULL OR d.origin = ?) ORDER BY d.id",
        (since.timestamp() if since else 0, until.timestamp() if until else 1e13, origin, origin),
    )
    result = []
    for (i, orig, platform, chat_id, state, adapter, prompt, candidates, shown, final, regen, latency, created,
         auto, settled) in rows:
        cands = json.loads(candidates)
        result.append(Outcome(
            i, orig, platform, chat_id, _KIND[state], adapter, tuple(json.loads(prompt or "[]")), cands[shown],
            tuple(cands[:shown]), final, regen, latency, utc(created), utc(settled) if settled else None, bool(auto),
        ))
    return result
