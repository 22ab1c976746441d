"""No card for a burst that needs no answer: the relay's gate (the reply model, twin/replies.py) and the record
of what it held back (the `skipped_bursts` table, which this module alone reads and writes).

When a contact's burst settles, the relay (bot/relay.py) asks `ReplyGate.judge`; a burst judged "no reply due"
gets no card and is recorded here. What happens next settles the record's `fate`: the contact writes again
(`moved_on`: the next burst is judged afresh, and a card for it answers both), the owner answers by hand in the
chat anyway (`missed`: the gate was wrong, `twin report` counts it), or the owner asks for a card with
`/draft <contact>` (`forced`). The daily digest and /status count the skips; the digest, which goes to the
owner's own chat, names the contacts as the rest of it does. Logs carry ids, counts and timings only.
Exercised by `twin run`; tested in tests/test_reply_model.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.drafts import ChatRef
from twin.chat import utc
from twin.replies import Burst, ReplyModel, tail
from twin.store import Store, StoredMessage

log = logging.getLogger(__name__)

FATES = ("open", "missed", "moved_on", "forced")


@dataclass(frozen=True)
class Skip:
    """A burst shown no card: where, whose, which messages, how sure, when, and what came of it."""

    id: int
    chat: ChatRef
    contact_id: str
    answers: tuple[str, ...]
    probability: float
    created_at: datetime
    fate: str
    settled_at: datetime | None


class ReplyGate:
    """Judges a settled burst with the reply model: its probability of "no reply due" when the card is to be held
    back, else None. Only the last burst of what is unanswered is judged (twin.replies.tail)."""

    def __init__(self, model: ReplyModel):
        self.model = model

    def judge(self, ref: ChatRef, messages: Sequence[StoredMessage]) -> float | None:
        if not messages:
            return None
        start = time.perf_counter()
        p = self.model.probability(Burst(tail(messages)), ref.platform)
        log.debug("reply model chat=%s messages=%d p=%.3f in %.2f ms", ref.chat_id, len(messages), p,
                  (time.perf_counter() - start) * 1000)
        return p if p >= self.model.threshold else None


class Skips:
    def __init__(self, store: Store):
        self.conn = store.conn

    def record(self, ref: ChatRef, contact_id: str, answers: Sequence[str], probability: float, now: datetime) -> int:
        cur = self.conn.execute(
            "INSERT INTO skipped_bursts (platform, connection_id, chat_id, contact_id, answers, probability, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ref.platform, ref.connection_id, ref.chat_id, contact_id, json.dumps(list(answers)), probability,
             now.timestamp()))
        return cur.lastrowid

    def covered(self, ref: ChatRef) -> set[str]:
        """The ids of the chat's messages a skip (not forced) holds back."""
        rows = self.conn.execute("SELECT answers FROM skipped_bursts WHERE platform = ? AND chat_id = ? "
                                 "AND fate != 'forced'", (ref.platform, ref.chat_id))
        return {str(i) for (a,) in rows for i in json.loads(a)}

    def _settle(self, ref: ChatRef, fate: str, now: datetime) -> int:
        return self.conn.execute(
            "UPDATE skipped_bursts SET fate = ?, settled_at = ? WHERE platform = ? AND chat_id = ? AND fate = 'open'",
            (fate, now.timestamp(), ref.platform, ref.chat_id)).rowcount

    def contact_wrote(self, ref: ChatRef, now: datetime) -> int:
        return self._settle(ref, "moved_on", now)

    def owner_wrote(self, ref: ChatRef, now: datetime) -> int:
        """The owner answered by hand: an open skip of the chat was a miss."""
        missed = self._settle(ref, "missed", now)
        if missed:
            log.info("skipped burst answered by hand anyway chat=%s", ref.chat_id)
        return missed

    def forced(self, ref: ChatRef, now: datetime) -> int:
        """/draft: the owner wants a card for the chat's last burst after all."""
        return self.conn.execute(
            "UPDATE skipped_bursts SET fate = 'forced', settled_at = ? WHERE platform = ? AND chat_id = ? "
            "AND fate IN ('open', 'moved_on')", (now.timestamp(), ref.platform, ref.chat_id)).rowcount

    def since(self, since: datetime | None = None, until: datetime | None = None) -> list[Skip]:
        rows = self.conn.execute(
            "SELECT id, platform, connection_id, chat_id, contact_id, answers, probability, created_at, fate, "
            "settled_at FROM skipped_bursts WHERE created_at >= ? AND created_at < ? ORDER BY id",
            (since.timestamp() if since else 0, until.timestamp() if until else 1e13))
        return [Skip(i, ChatRef(p, c, chat), who, tuple(json.loads(a)), prob, utc(t), fate,
                     utc(s) if s is not None else None)
                for i, p, c, chat, who, a, prob, t, fate, s in rows]

    def count(self, since: datetime) -> int:
        return self.conn.execute("SELECT count(*) FROM skipped_bursts WHERE created_at >= ?",
                                 (since.timestamp(),)).fetchone()[0]


def digest_line(store: Store, since: datetime, limit: int = 12) -> str | None:
    """The digest's line on skipped bursts (None when there were none): how many, whose and when, and how many
    the owner answered by hand anyway. It goes to the owner's own chat, so it names the contacts."""
    skips = Skips(store).since(since)
    if not skips:
        return None
    people = [f"{store.contact_name(s.chat.platform, s.contact_id) or s.chat.platform + ':' + s.chat.chat_id} "
              f"{s.created_at:%H:%M}" for s in skips[:limit]]
    more = f" and {len(skips) - limit} more" if len(skips) > limit else ""
    missed = sum(s.fate == "missed" for s in skips)
    noun = "message looked like it" if len(skips) == 1 else "messages looked like they"
    return (f"{len(skips)} {noun} needed no answer (no card): {', '.join(people)}{more}."
            + (f" You answered {missed} of them by hand anyway." if missed else "")
            + " /draft <contact> asks for a card.")
