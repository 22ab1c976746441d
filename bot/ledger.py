"""The ledger: drafts, their events, Telegram business connections and per-chat settings, in twin.db.

Every change to a draft goes through `Ledger.apply(id, transition, action, now)`: read, apply the pure
transition (bot/drafts.py), write the row and one `draft_events` row with the time, all inside one
`BEGIN IMMEDIATE` transaction, so two taps racing each other see each other's result and a restart finds
exactly what was committed. Uses the store's connection (twin/schema.py holds the schema). The ledger is the only
reader and writer of these tables: `twin report`, `twin learn` and the digest get the drafts as outcomes
(`outcomes`, twin.outcomes.Outcome), `twin forget` and /forget delete through `forget`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.drafts import TERMINAL, ChatRef, Draft, State
from twin.chat import utc
from twin.errors import NotFound
from twin.outcomes import Outcome
from twin.store import Store

_COLUMNS = (
    "id", "origin", "platform", "connection_id", "chat_id", "contact_id", "answers", "reply_to", "candidates",
    "shown", "state", "final_text", "edited", "editing", "adapter", "prompt", "latency_ms", "created_at",
    "updated_at", "expires_at", "card_chat_id", "card_message_id", "attempts", "failures", "inflight", "next_attempt_at",
    "error", "sent_ids", "regenerations", "auto", "remembered",
)


def _t(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


def _answers(raw: str) -> tuple[str, ...]:
    """The ids of the messages a draft answers, from its `answers` column."""
    return tuple(str(i) for i in json.loads(raw))


def _row(d: Draft) -> dict:
    return {
        "origin": d.origin, "platform": d.chat.platform, "connection_id": d.chat.connection_id,
        "chat_id": d.chat.chat_id, "contact_id": d.contact_id, "answers": json.dumps(list(d.answers)),
        "reply_to": d.reply_to, "candidates": json.dumps(list(d.candidates), ensure_ascii=False), "shown": d.shown,
        "state": d.state.value, "final_text": d.final_text, "edited": int(d.edited), "editing": int(d.editing),
        "adapter": d.adapter, "prompt": json.dumps(list(d.prompt)), "latency_ms": d.latency_ms,
        "created_at": _t(d.created_at), "updated_at": _t(d.updated_at), "expires_at": _t(d.expires_at),
        "card_chat_id": d.card[0] if d.card else None, "card_message_id": d.card[1] if d.card else None,
        "attempts": d.attempts, "failures": d.failures, "inflight": int(d.inflight), "next_attempt_at": _t(d.next_attempt_at),
        "error": d.error, "sent_ids": json.dumps(list(d.sent_ids)), "regenerations": d.regenerations,
        "auto": int(d.auto), "remembered": json.dumps(list(d.remembered)),
    }


def _draft(r: tuple) -> Draft:
    v = dict(zip(_COLUMNS, r))
    at = lambda k: None if v[k] is None else utc(v[k])  # noqa: E731
    return Draft(
        id=v["id"], chat=ChatRef(v["platform"], v["connection_id"], v["chat_id"]), contact_id=v["contact_id"],
        answers=_answers(v["answers"]), candidates=tuple(json.loads(v["candidates"])),
        created_at=utc(v["created_at"]), updated_at=utc(v["updated_at"]), expires_at=at("expires_at"),
        state=State(v["state"]), origin=v["origin"], reply_to=v["reply_to"], shown=v["shown"],
        final_text=v["final_text"], edited=bool(v["edited"]), editing=bool(v["editing"]), adapter=v["adapter"],
        prompt=tuple(json.loads(v["prompt"] or "[]")), latency_ms=v["latency_ms"],
        card=(v["card_chat_id"], v["card_message_id"]) if v["card_message_id"] else None,
        attempts=v["attempts"], failures=v["failures"], inflight=bool(v["inflight"]), next_attempt_at=at("next_attempt_at"),
        error=v["error"], sent_ids=tuple(json.loads(v["sent_ids"] or "[]")), regenerations=v["regenerations"],
        auto=bool(v["auto"]), remembered=tuple(json.loads(v["remembered"] or "[]")),
    )


@dataclass(frozen=True)
class Connection:
    """A Telegram business connection as last reported (Bot API BusinessConnection)."""

    id: str
    user_id: str
    user_chat_id: str
    enabled: bool
    can_reply: bool
    rights: tuple[str, ...]
    updated_at: datetime


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM drafts"
# What became of a draft in each state; one not settled yet is "pending" (unsure: sent or not, the owner has yet
# to say).
_KIND = {**{s: "pending" for s in State if s not in TERMINAL}, State.SENT: "sent", State.EDITED_SENT: "edited",
         State.SUPERSEDED: "written", State.DISCARDED: "discarded", State.EXPIRED: "expired", State.FAILED: "failed",
         State.COPIED: "copied", State.NO_REPLY: "no_reply"}
_SETTLED = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))  # SQL: the states a draft settles in
_IN_CHAT = "platform = ? AND chat_id = ? AND connection_id IS ?"  # a ChatRef's (platform, chat_id, connection_id)


class Ledger:
    def __init__(self, store: Store):
        self.store = store
        self.conn = store.conn

    # -- drafts --------------------------------------------------------------------------------------------

    def create(self, d: Draft, now: datetime) -> Draft:
        """Store a new draft (its `id` is assigned here) and its first event."""
        with self.store.transaction():
            row = _row(d)
            cur = self.conn.execute(
                f"INSERT INTO drafts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )
            self._event(cur.lastrowid, "create", None, d.state, now)
        return self.get(cur.lastrowid)

    def get(self, draft_id: int) -> Draft:
        r = self.conn.execute(f"{_SELECT} WHERE id = ?", (draft_id,)).fetchone()
        if r is None:
            raise NotFound(f"draft {draft_id}: no such draft (it may have been forgotten)")
        return _draft(r)

    def apply(self, draft_id: int, transition: Callable[[Draft], Draft], action: str, now: datetime) -> Draft:
        """Apply a pure transition atomically and record it; returns the new draft (raises what it raises)."""
        with self.store.transaction():
            before = self.get(draft_id)
            after = transition(before)
            if after != before:
                self._write(after)
                self._event(draft_id, action, before.state, after.state, now)
        return after

    def set_card(self, draft_id: int, chat_id: str, message_id: str) -> None:
        """Record the draft's card (raises NotFound when the draft was forgotten meanwhile)."""
        cur = self.conn.execute("UPDATE drafts SET card_chat_id = ?, card_message_id = ? WHERE id = ?",
                                (chat_id, message_id, draft_id))
        if cur.rowcount == 0:
            raise NotFound(f"draft {draft_id}: no such draft (it may have been forgotten)")

    def clear_card(self, draft_id: int) -> None:
        """The draft needs a new card (the old one is left behind)."""
        self.conn.execute("UPDATE drafts SET card_chat_id = NULL, card_message_id = NULL WHERE id = ?", (draft_id,))

    def _write(self, d: Draft) -> None:
        row = _row(d)
        self.conn.execute(f"UPDATE drafts SET {', '.join(f'{k} = ?' for k in row)} WHERE id = ?",
                          (*row.values(), d.id))

    def _event(self, draft_id: int, action: str, before: State | None, after: State, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO draft_events (draft_id, time, action, from_state, to_state) VALUES (?, ?, ?, ?, ?)",
            (draft_id, now.timestamp(), action, before.value if before else None, after.value),
        )

    def _many(self, where: str, *args) -> list[Draft]:
        return [_draft(r) for r in self.conn.execute(f"{_SELECT} WHERE {where} ORDER BY id", args)]

    def pending(self, chat: ChatRef | None = None) -> list[Draft]:
        """Drafts waiting for the owner, of one chat or all."""
        if chat is None:
            return self._many("state = 'pending'")
        return self._many(f"state = 'pending' AND {_IN_CHAT}", chat.platform, chat.chat_id, chat.connection_id)

    def answered(self, chat: ChatRef) -> set[str]:
        """The ids of the chat's messages some draft (in any state) answers."""
        rows = self.conn.execute(f"SELECT answers FROM drafts WHERE {_IN_CHAT}",
                                 (chat.platform, chat.chat_id, chat.connection_id))
        return {i for (a,) in rows for i in _answers(a)}

    def note_chat(self, chat: ChatRef) -> None:
        """Remember which connection a live chat comes through (the latest one)."""
        self.conn.execute(
            "INSERT INTO chat_settings (platform, chat_id, connection_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO UPDATE SET connection_id = excluded.connection_id",
            (chat.platform, chat.chat_id, chat.connection_id),
        )

    def live_chats(self) -> list[ChatRef]:
        """Every chat the relay has seen, with the connection it came through."""
        rows = self.conn.execute("SELECT platform, connection_id, chat_id FROM chat_settings "
                                 "WHERE connection_id IS NOT NULL ORDER BY 1, 3")
        return [ChatRef(*r) for r in rows]

    def latest(self, origin: str, platform: str | None = None) -> Draft | None:
        """The newest draft of an origin (of one platform, or any)."""
        found = self._many("id = (SELECT max(id) FROM drafts WHERE origin = ? AND (? IS NULL OR platform = ?))",
                           origin, platform, platform)
        return found[0] if found else None

    def editing(self) -> list[Draft]:
        return self._many("state = 'pending' AND editing = 1")

    def due_to_expire(self, now: datetime) -> list[Draft]:
        return self._many("state = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?", now.timestamp())

    def due_to_retry(self, now: datetime) -> list[Draft]:
        return self._many("state = 'sending' AND inflight = 0 AND next_attempt_at <= ?", now.timestamp())

    def approved(self) -> list[Draft]:
        """Approved and waiting for no retry (a restart came between the tap and the send, or between two of its
        messages): safe to send (the rest of) now."""
        return self._many("state = 'sending' AND inflight = 0 AND next_attempt_at IS NULL")

    def inflight(self) -> list[Draft]:
        return self._many("state = 'sending' AND inflight = 1")

    def unsettled(self, platform: str, chat_id: str) -> list[Draft]:
        """A chat's drafts that are not settled yet: pending, sending (or waiting to retry) and unsure."""
        return self._many("state IN ('pending', 'sending', 'unsure') AND platform = ? AND chat_id = ?",
                          platform, chat_id)

    def without_card(self) -> list[Draft]:
        """Drafts waiting for the owner (pending, or unsure whether they arrived) whose card is not on their
        screen."""
        return self._many("state IN ('pending', 'unsure') AND card_message_id IS NULL")

    def all(self, since: datetime | None = None) -> Iterator[Draft]:
        for r in self.conn.execute(f"{_SELECT} WHERE created_at >= ? ORDER BY id", (_t(since) or 0,)):
            yield _draft(r)

    def counts(self, since: datetime) -> dict[str, int]:
        """Drafts created since `since`, by state."""
        rows = self.conn.execute("SELECT state, count(*) FROM drafts WHERE created_at >= ? GROUP BY state",
                                 (since.timestamp(),))
        return dict(rows.fetchall())

    def outcomes(self, since: datetime | None = None, until: datetime | None = None,
                 origin: str | None = None) -> list[Outcome]:
        """What became of every draft created in [since, until) (of one origin, or all), oldest first."""
        replaced = self.replaced()
        rows = self.conn.execute(
            "SELECT d.id, d.origin, d.platform, d.chat_id, d.state, d.adapter, d.prompt, d.candidates, d.shown, "
            "d.final_text, d.regenerations, d.latency_ms, d.created_at, d.auto, d.answers, "
            f"(SELECT max(e.time) FROM draft_events e WHERE e.draft_id = d.id AND e.to_state IN ({_SETTLED})) "
            "FROM drafts d WHERE d.created_at >= ? AND d.created_at < ? AND (? IS NULL OR d.origin = ?) ORDER BY d.id",
            (since.timestamp() if since else 0, until.timestamp() if until else 1e13, origin, origin),
        )
        result = []
        for (i, orig, platform, chat_id, state, adapter, prompt, candidates, shown, final, regen, latency, created,
             auto, answers, settled) in rows:
            cands = json.loads(candidates)
            result.append(Outcome(
                i, orig, platform, chat_id, _KIND[state], adapter, tuple(json.loads(prompt or "[]")), cands[shown],
                tuple(cands[:shown]), final, regen, latency, utc(created), utc(settled) if settled else None,
                bool(auto), _answers(answers), i in replaced,
            ))
        return result

    def replaced(self) -> frozenset[int]:
        """Drafts expired because a newer draft replaced them (the relay's "replaced" event, bot/relay.py)."""
        rows = self.conn.execute("SELECT DISTINCT draft_id FROM draft_events WHERE action = 'replaced'")
        return frozenset(r[0] for r in rows)

    def events(self, draft_id: int) -> list[tuple[datetime, str, str | None, str]]:
        rows = self.conn.execute(
            "SELECT time, action, from_state, to_state FROM draft_events WHERE draft_id = ? ORDER BY id", (draft_id,)
        )
        return [(utc(t), a, f, s) for t, a, f, s in rows]

    def forget(self, platform: str, chat_id: str, people: Sequence[str]) -> int:
        """Delete a chat's drafts (their events go with them) and its settings, and the drafts made for these
        people of the platform in any chat; returns the drafts removed. twin.forget's relay part: it runs inside
        the store's transaction."""
        def run(sql: str, *args) -> int:
            return self.conn.execute(sql, args).rowcount

        drafts = run("DELETE FROM drafts WHERE platform = ? AND chat_id = ?", platform, chat_id)
        run("DELETE FROM chat_settings WHERE platform = ? AND chat_id = ?", platform, chat_id)
        run("DELETE FROM skipped_bursts WHERE platform = ? AND chat_id = ?", platform, chat_id)  # bot/skips.py
        for person in people:
            drafts += run("DELETE FROM drafts WHERE platform = ? AND contact_id = ?", platform, person)
            run("DELETE FROM skipped_bursts WHERE platform = ? AND contact_id = ?", platform, person)
        return drafts

    # -- connections and settings -------------------------------------------------------------------------

    def save_connection(self, c: Connection) -> None:
        self.conn.execute(
            "INSERT INTO connections (id, user_id, user_chat_id, enabled, can_reply, rights, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, "
            "user_chat_id = excluded.user_chat_id, enabled = excluded.enabled, can_reply = excluded.can_reply, "
            "rights = excluded.rights, updated_at = excluded.updated_at",
            (c.id, c.user_id, c.user_chat_id, int(c.enabled), int(c.can_reply), json.dumps(list(c.rights)),
             c.updated_at.timestamp()),
        )

    def connection(self, connection_id: str) -> Connection | None:
        r = self.conn.execute(
            "SELECT id, user_id, user_chat_id, enabled, can_reply, rights, updated_at FROM connections WHERE id = ?",
            (connection_id,),
        ).fetchone()
        if r is None:
            return None
        return Connection(r[0], r[1], r[2], bool(r[3]), bool(r[4]), tuple(json.loads(r[5])), utc(r[6]))

    def connections(self) -> list[Connection]:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM connections ORDER BY updated_at DESC")]
        return [c for i in ids if (c := self.connection(i)) is not None]

    def set_auto(self, platform: str, chat_id: str, on: bool) -> None:
        self.conn.execute(
            "INSERT INTO chat_settings (platform, chat_id, auto) VALUES (?, ?, ?) "
            "ON CONFLICT DO UPDATE SET auto = excluded.auto",
            (platform, chat_id, int(on)),
        )

    def auto(self, platform: str, chat_id: str) -> bool:
        r = self.conn.execute("SELECT auto FROM chat_settings WHERE platform = ? AND chat_id = ?",
                              (platform, chat_id)).fetchone()
        return bool(r and r[0])

    @property
    def paused(self) -> bool:
        return self.store.get_meta("relay_paused") == "1"

    def set_paused(self, paused: bool) -> None:
        self.store.set_meta("relay_paused", "1" if paused else "0")


