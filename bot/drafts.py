"""The draft state machine: what may happen to a suggested reply, as pure functions of (draft, now).

    pending ──approve / submit_edit──▶ sending ──delivered (its last message)──▶ sent | edited_sent
       │                                  ├──send_failed (retries used up, or the window closed)──▶ failed
       │                                  └──send_unsure (no clear answer: it may have arrived)──▶ unsure
       ├──discard──▶ discarded                    unsure ──resend──▶ sending
       ├──no_reply──▶ no_reply (the owner: this needed no answer; a label for the reply model)
       ├──expire──▶ expired (before the chat's     unsure ──arrived──▶ sent | sending (messages left)
       │                     24-hour reply window closes)
       ├──supersede──▶ superseded (the owner answered by hand; also a send waiting for its turn or a retry)
       └──copy──▶ copied (a draft to copy, origin "copy": the owner copied a candidate to send it themselves)
    pending | copied ──reported (the owner forwarded what they really sent)──▶ sent | edited_sent | superseded

`sending` sits between the owner's tap and Telegram's answer, so a double tap finds the draft no longer
pending and sends nothing twice; `inflight` marks the moment one message's request is out, so a crash or a
late answer in that moment is "unsure" (it may have been sent) and is never retried blindly: the owner says
whether it arrived. An approved text goes out as one or more messages (one per line); `sent_ids` grows with
each delivered one, so a burst cut off after its second line resumes at the third. Every function returns a
new Draft or raises InvalidTransition; the ledger (bot/ledger.py) stores the result and the event atomically.
A draft of origin "copy" (bot/forwards.py: forwarded or pasted messages, no business connection) is never sent
by twin: approve and edit refuse it; its candidates are offered to copy, and `copy` records which one was.
Exercised by tests/test_drafts.py and, through the relay, by `twin run`.

    >>> d = Draft(id=1, chat=ChatRef("telegram", "BC1", "2002"), contact_id="user2002", answers=("17",),
    ...           candidates=("sure, 8?",), created_at=utc(0), updated_at=utc(0), expires_at=utc(3600))
    >>> approve(d, utc(60)).state, approve(d, utc(60)).final_text
    (<State.SENDING: 'sending'>, 'sure, 8?')
    >>> is_due(d, utc(3600))  # approve() now raises InvalidTransition: the draft must expire instead
    True
    >>> c = replace(d, origin=COPY, candidates=("sure, 8?", "can't, sorry"))
    >>> copy(c, utc(60), 1).state, copy(c, utc(60), 1).final_text
    (<State.COPIED: 'copied'>, "can't, sorry")
    >>> [reported(copy(c, utc(60), 1), text, utc(90)).state.value for text in ("can't, sorry", "can't, sorry!!")]
    ['sent', 'edited_sent']
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from twin.chat import utc
from twin.errors import TwinError
from twin.store import ChatKey

__all__ = ["State", "ChatRef", "Draft", "InvalidTransition", "utc"]


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    EDITED_SENT = "edited_sent"
    DISCARDED = "discarded"
    EXPIRED = "expired"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    UNSURE = "unsure"  # a send that may or may not have arrived: the owner is asked, nothing is resent blindly
    COPIED = "copied"  # a draft to copy: the owner copied a candidate (weaker than sent: unconfirmed)
    NO_REPLY = "no_reply"  # the owner said the burst needed no answer ("No reply needed")


TERMINAL = frozenset({State.SENT, State.EDITED_SENT, State.DISCARDED, State.EXPIRED, State.FAILED,
                      State.SUPERSEDED, State.COPIED, State.NO_REPLY})
COPY = "copy"  # Draft.origin of a draft offered to copy (forwarded or pasted messages): twin sends nothing

# Buttons on the approval card. Callback data has one grammar: d:<draft id>:<action>:<candidate> (Telegram allows
# 64 bytes). The draft lives in SQLite; the button carries its id (never reused: AUTOINCREMENT) and the index of
# the candidate its card shows, so a stale card can only ever send what it shows.
ACTIONS = ("send", "edit", "next", "discard", "resend", "arrived", "copied", "noreply")


def callback_data(draft_id: int, action: str, candidate: int = 0) -> str:
    """The button data for an action on a draft: `callback_data(12, "send", 1)` -> 'd:12:send:1'."""
    if action not in ACTIONS:
        raise ValueError(f"unknown draft action {action!r}")
    return f"d:{draft_id}:{action}:{candidate}"


def parse_callback(data: str) -> tuple[int, str, int] | None:
    """(draft id, action, candidate) from a button's data, or None when it is not ours (or from an older card).

    >>> parse_callback("d:12:send:1"), parse_callback("d:x:send:0"), parse_callback("d:12:launch:0")
    ((12, 'send', 1), None, None)
    """
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != "d" or not parts[1].isdigit() or parts[2] not in ACTIONS \
            or not parts[3].isdigit():
        return None
    return int(parts[1]), parts[2], int(parts[3])


class InvalidTransition(TwinError):
    """The draft is not in a state that allows this (already sent, discarded, expired...)."""


@dataclass(frozen=True)
class ChatRef:
    """Where a draft goes: a Telegram business chat is (telegram, connection id, chat id); a Discord channel
    has no connection."""

    platform: str
    connection_id: str | None
    chat_id: str

    @property
    def key(self) -> ChatKey:
        """The chat in the store (twin.db knows chats, not connections)."""
        return ChatKey(self.platform, self.chat_id)


@dataclass(frozen=True)
class Draft:
    """A suggested reply and everything that happened to it.

    `candidates` grows when the owner asks for more; `shown` is the one on the card, and every candidate before
    it was passed over. `answers` are the contact's message ids it replies to (the burst), `reply_to` the one
    to quote when sending, if any. `prompt` is the exact token ids the candidates were drafted from (kept for
    learning from outcomes, bot: `twin learn`).
    """

    id: int | None
    chat: ChatRef
    contact_id: str
    answers: tuple[str, ...]
    candidates: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    state: State = State.PENDING
    origin: str = "telegram"  # where the approval happens and the reply goes: "telegram" or "discord"
    reply_to: str | None = None
    shown: int = 0
    final_text: str | None = None
    edited: bool = False
    editing: bool = False
    adapter: str | None = None
    prompt: tuple[int, ...] = ()
    latency_ms: float | None = None
    card: tuple[str, str] | None = None  # (chat id, message id) of the approval card
    attempts: int = 0  # send requests that went out (one per message)
    failures: int = 0  # failed tries in a row, for the backoff and the retry limit
    inflight: bool = False
    next_attempt_at: datetime | None = None
    error: str | None = None
    sent_ids: tuple[str, ...] = ()  # the messages delivered so far ("?" for one the owner said arrived)
    regenerations: int = 0
    auto: bool = False
    remembered: tuple[str, ...] = ()  # the days memory recalled passages from ("3 Mar"), shown on the card

    @property
    def text(self) -> str:
        """The candidate on the card."""
        return self.candidates[self.shown]

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def _need(self, *states: State) -> None:
        if self.state not in states:
            raise InvalidTransition(f"draft {self.id} is {self.state.value}, not {'/'.join(s.value for s in states)}")

    def _open(self, now: datetime) -> None:
        self._need(State.PENDING)
        if is_due(self, now):
            raise InvalidTransition(f"draft {self.id} expired: the reply window is closing")


def is_due(draft: Draft, now: datetime) -> bool:
    """Whether a pending draft's time is up (it must not be sent any more)."""
    return draft.state == State.PENDING and draft.expires_at is not None and now >= draft.expires_at


def expiry(last_incoming: datetime, margin: timedelta, window: timedelta = timedelta(hours=24)) -> datetime:
    """When a draft answering a message at `last_incoming` expires: `margin` before the reply window closes.

    >>> expiry(utc(0), timedelta(minutes=15)).isoformat()
    '1970-01-01T23:45:00+00:00'
    """
    return last_incoming + window - margin


# -- transitions --------------------------------------------------------------------------------------------

def _sendable(d: Draft) -> None:
    if d.origin == COPY:
        raise InvalidTransition(f"draft {d.id} is offered to copy: twin does not send it")


def approve(d: Draft, now: datetime, candidate: int | None = None) -> Draft:
    """Send a candidate as it is: the one its card showed (`candidate`), else the one shown now."""
    d._open(now)
    _sendable(d)
    shown = d.shown if candidate is None else candidate
    if not 0 <= shown < len(d.candidates):
        raise InvalidTransition(f"draft {d.id} has no candidate {shown + 1}")
    return replace(d, state=State.SENDING, shown=shown, final_text=d.candidates[shown], edited=False,
                   editing=False, updated_at=now)


def start_edit(d: Draft, now: datetime) -> Draft:
    """The owner's next message becomes the text to send."""
    d._open(now)
    _sendable(d)
    return replace(d, editing=True, updated_at=now)


def cancel_edit(d: Draft, now: datetime) -> Draft:
    d._need(State.PENDING)
    return replace(d, editing=False, updated_at=now)


def submit_edit(d: Draft, text: str, now: datetime) -> Draft:
    """Send the owner's text instead (identical to the candidate counts as sent as it is)."""
    d._open(now)
    if not text.strip():
        raise InvalidTransition(f"draft {d.id}: the edited text is empty")
    return replace(d, state=State.SENDING, final_text=text, edited=text.strip() != d.text.strip(),
                   editing=False, updated_at=now)


def next_candidate(d: Draft, now: datetime) -> Draft:
    """Show the next candidate; raises InvalidTransition when there is none left (draft more first)."""
    d._open(now)
    if d.shown + 1 >= len(d.candidates):
        raise InvalidTransition(f"draft {d.id}: no candidates left")
    return replace(d, shown=d.shown + 1, editing=False, updated_at=now)


def add_candidates(d: Draft, texts: tuple[str, ...], now: datetime) -> Draft:
    """Fresh candidates from a regeneration; the first of them is shown."""
    d._open(now)
    if not texts:
        raise InvalidTransition(f"draft {d.id}: no new candidates")
    return replace(d, candidates=d.candidates + tuple(texts), shown=len(d.candidates), editing=False,
                   regenerations=d.regenerations + 1, updated_at=now)


def copy(d: Draft, now: datetime, candidate: int) -> Draft:
    """The owner copied candidate `candidate` of a draft to copy, to send it themselves (every candidate before
    it counts as passed over, as with Send). Copying another one later replaces the record."""
    d._need(State.PENDING, State.COPIED)
    if d.origin != COPY:
        raise InvalidTransition(f"draft {d.id} is sent from its card, not copied")
    if not 0 <= candidate < len(d.candidates):
        raise InvalidTransition(f"draft {d.id} has no candidate {candidate + 1}")
    return replace(d, state=State.COPIED, shown=candidate, final_text=d.candidates[candidate], edited=False,
                   editing=False, updated_at=now)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def reported(d: Draft, text: str, now: datetime) -> Draft:
    """The owner forwarded the reply they really sent, for a draft to copy: a candidate word for word is sent (as
    that candidate); their own text is edited_sent after a copy, and answered by hand (superseded) without one."""
    d._need(State.PENDING, State.COPIED)
    if d.origin != COPY:
        raise InvalidTransition(f"draft {d.id} is sent from its card")
    if not text.strip():
        raise InvalidTransition(f"draft {d.id}: the reply is empty")
    match = next((i for i, c in enumerate(d.candidates) if _same(c, text)), None)
    if match is not None:
        return replace(d, state=State.SENT, shown=match, final_text=text, edited=False, updated_at=now)
    state = State.EDITED_SENT if d.state == State.COPIED else State.SUPERSEDED
    return replace(d, state=state, final_text=text, edited=True, editing=False, updated_at=now)


def discard(d: Draft, now: datetime) -> Draft:
    d._need(State.PENDING)
    return replace(d, state=State.DISCARDED, editing=False, updated_at=now)


def no_reply(d: Draft, now: datetime) -> Draft:
    """The owner says the contact's burst needed no answer: nothing is sent, and the next training learns it.

    >>> d = Draft(1, ChatRef("telegram", "BC1", "2"), "u2", ("1",), ("ok!",), utc(0), utc(0))
    >>> no_reply(d, utc(5)).state, no_reply(d, utc(5)).done
    (<State.NO_REPLY: 'no_reply'>, True)
    """
    d._need(State.PENDING)
    return replace(d, state=State.NO_REPLY, editing=False, updated_at=now)


def expire(d: Draft, now: datetime) -> Draft:
    d._need(State.PENDING)
    return replace(d, state=State.EXPIRED, editing=False, updated_at=now)


def supersede(d: Draft, text: str, now: datetime) -> Draft:
    """The owner wrote to the contact by hand: that is the real reply, and the draft is moot. A send that is not
    in flight (approved and waiting its turn, or waiting for a retry) is stopped too; messages it already
    delivered stay recorded in `sent_ids`."""
    d._need(State.PENDING, State.SENDING)
    if d.inflight:
        raise InvalidTransition(f"draft {d.id}: a send is in flight")
    return replace(d, state=State.SUPERSEDED, final_text=text, edited=True, editing=False, next_attempt_at=None,
                   updated_at=now)


def dispatch(d: Draft, now: datetime) -> Draft:
    """One message's send request is about to go out (committed first: a crash after this is never retried
    blindly)."""
    d._need(State.SENDING)
    if d.inflight:
        raise InvalidTransition(f"draft {d.id}: a send is already in flight")
    return replace(d, inflight=True, attempts=d.attempts + 1, next_attempt_at=None, updated_at=now)


def delivered(d: Draft, message_id: str, last: bool, now: datetime) -> Draft:
    """One message of the approved text arrived; after the `last` one the draft is sent."""
    d._need(State.SENDING)
    d = replace(d, inflight=False, failures=0, sent_ids=d.sent_ids + (message_id,), error=None, updated_at=now)
    return replace(d, state=State.EDITED_SENT if d.edited else State.SENT) if last else d


def sent(d: Draft, message_ids: tuple[str, ...], now: datetime) -> Draft:
    """The whole approved text arrived, as these messages."""
    d._need(State.SENDING)
    return replace(d, state=State.EDITED_SENT if d.edited else State.SENT, inflight=False,
                   sent_ids=tuple(message_ids), error=None, updated_at=now)


def send_failed(d: Draft, error: str, now: datetime, retries: int, backoff_s: float = 5.0,
                retryable: bool = True, retry_after: timedelta | None = None) -> Draft:
    """A send was refused or never went out: retry after an exponential backoff (and at least what Telegram
    asked for with `retry_after`), or give up after `retries` retries, when the error is permanent, or when a
    retry would land after the reply window closes.

    >>> d = dispatch(approve(Draft(1, ChatRef("telegram", "BC1", "2"), "u2", ("1",), ("ok",), utc(0), utc(0),
    ...                            expires_at=utc(86_000)), utc(0)), utc(0))
    >>> send_failed(d, "flood", utc(0), retries=3, backoff_s=5, retry_after=timedelta(seconds=30)).next_attempt_at
    datetime.datetime(1970, 1, 1, 0, 0, 30, tzinfo=datetime.timezone.utc)
    """
    d._need(State.SENDING)
    failures = d.failures + 1
    wait = timedelta(seconds=backoff_s * 2 ** (failures - 1))
    at = now + max(wait, retry_after or timedelta())
    closes = d.expires_at is not None and at >= d.expires_at
    if not retryable or failures > retries or closes:
        return replace(d, state=State.FAILED, inflight=False, failures=failures, error=error, next_attempt_at=None,
                       updated_at=now)
    return replace(d, inflight=False, failures=failures, error=error, next_attempt_at=at, updated_at=now)


def send_unsure(d: Draft, error: str, now: datetime) -> Draft:
    """A send whose fate is unknown (Telegram may have delivered it): the owner decides, nothing is resent."""
    d._need(State.SENDING)
    return replace(d, state=State.UNSURE, inflight=False, error=error, next_attempt_at=None, updated_at=now)


def interrupted(d: Draft, now: datetime) -> Draft:
    """After a restart: a send that was in flight may or may not have reached Telegram; never send it again
    without asking."""
    d._need(State.SENDING)
    if not d.inflight:
        return d
    return send_unsure(d, "interrupted while sending: it may have been sent", now)


def resend(d: Draft, now: datetime) -> Draft:
    """The owner checked: it did not arrive; send the rest again (while the reply window is open)."""
    d._need(State.UNSURE)
    if d.expires_at is not None and now >= d.expires_at:
        raise InvalidTransition(f"draft {d.id}: the reply window is closing; write to them by hand")
    return replace(d, state=State.SENDING, failures=0, error=None, next_attempt_at=None, updated_at=now)


def arrived(d: Draft, last: bool, now: datetime) -> Draft:
    """The owner checked: the unsure message did arrive. With more messages left, they go out next."""
    d._need(State.UNSURE)
    d = replace(d, state=State.SENDING, sent_ids=d.sent_ids + ("?",), error=None, updated_at=now)
    return replace(d, state=State.EDITED_SENT if d.edited else State.SENT) if last else d
