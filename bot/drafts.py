"""The draft state machine: what may happen to a suggested reply, as pure functions of (draft, now).

    pending ──approve / submit_edit──▶ sending ──sent──▶ sent | edited_sent
       │                                  └──send_failed (retries used up, or the window closed)──▶ failed
       ├──discard──▶ discarded
       ├──expire──▶ expired          (before the chat's 24-hour reply window closes)
       └──supersede──▶ superseded    (the owner answered by hand; their text is the real reply)

`sending` sits between the owner's tap and Telegram's answer, so a double tap finds the draft no longer
pending and sends nothing twice; `inflight` marks the moment the request is out, so a crash in that moment
is reported as "may have been sent" and never retried blindly. Every function returns a new Draft or raises
InvalidTransition; the ledger (bot/ledger.py) stores the result and the event atomically. Exercised by
tests/test_drafts.py and, through the relay, by `twin run`.

    >>> d = Draft(id=1, chat=ChatRef("telegram", "BC1", "2002"), contact_id="user2002", answers=("17",),
    ...           candidates=("sure, 8?",), created_at=utc(0), updated_at=utc(0), expires_at=utc(3600))
    >>> approve(d, utc(60)).state, approve(d, utc(60)).final_text
    (<State.SENDING: 'sending'>, 'sure, 8?')
    >>> is_due(d, utc(3600))  # approve() now raises InvalidTransition: the draft must expire instead
    True
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from twin.chat import utc
from twin.errors import TwinError

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


TERMINAL = frozenset({State.SENT, State.EDITED_SENT, State.DISCARDED, State.EXPIRED, State.FAILED,
                      State.SUPERSEDED})

# Buttons on the approval card. Callback data has one grammar: d:<draft id>:<action> (Telegram allows 64 bytes;
# the draft lives in SQLite and the button carries only its id).
ACTIONS = ("send", "edit", "next", "discard")


def callback_data(draft_id: int, action: str) -> str:
    """The button data for an action on a draft: `callback_data(12, "send")` -> 'd:12:send'."""
    if action not in ACTIONS:
        raise ValueError(f"unknown draft action {action!r}")
    return f"d:{draft_id}:{action}"


def parse_callback(data: str) -> tuple[int, str] | None:
    """(draft id, action) from a button's data, or None when it is not ours.

    >>> parse_callback("d:12:send"), parse_callback("d:x:send"), parse_callback("d:12:launch")
    ((12, 'send'), None, None)
    """
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != "d" or not parts[1].isdigit() or parts[2] not in ACTIONS:
        return None
    return int(parts[1]), parts[2]


class InvalidTransition(TwinError):
    """The draft is not in a state that allows this (already sent, discarded, expired...)."""


@dataclass(frozen=True)
class ChatRef:
    """Where a draft goes: a Telegram business chat is (telegram, connection id, chat id); a Discord channel
    has no connection."""

    platform: str
    connection_id: str | None
    chat_id: str


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
    attempts: int = 0
    inflight: bool = False
    next_attempt_at: datetime | None = None
    error: str | None = None
    sent_ids: tuple[str, ...] = ()
    regenerations: int = 0
    auto: bool = False

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

def approve(d: Draft, now: datetime) -> Draft:
    """Send the candidate on the card as it is."""
    d._open(now)
    return replace(d, state=State.SENDING, final_text=d.text, edited=False, editing=False, updated_at=now)


def start_edit(d: Draft, now: datetime) -> Draft:
    """The owner's next message becomes the text to send."""
    d._open(now)
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


def discard(d: Draft, now: datetime) -> Draft:
    d._need(State.PENDING)
    return replace(d, state=State.DISCARDED, editing=False, updated_at=now)


def expire(d: Draft, now: datetime) -> Draft:
    d._need(State.PENDING)
    return replace(d, state=State.EXPIRED, editing=False, updated_at=now)


def supersede(d: Draft, text: str, now: datetime) -> Draft:
    """The owner wrote to the contact by hand: that is the real reply, and the draft is moot."""
    d._need(State.PENDING)
    return replace(d, state=State.SUPERSEDED, final_text=text, edited=True, editing=False, updated_at=now)


def dispatch(d: Draft, now: datetime) -> Draft:
    """The send request is about to go out (committed first: a crash after this is never retried blindly)."""
    d._need(State.SENDING)
    if d.inflight:
        raise InvalidTransition(f"draft {d.id}: a send is already in flight")
    return replace(d, inflight=True, attempts=d.attempts + 1, next_attempt_at=None, updated_at=now)


def sent(d: Draft, message_ids: tuple[str, ...], now: datetime) -> Draft:
    d._need(State.SENDING)
    return replace(d, state=State.EDITED_SENT if d.edited else State.SENT, inflight=False,
                   sent_ids=tuple(message_ids), error=None, updated_at=now)


def send_failed(d: Draft, error: str, now: datetime, retries: int, backoff_s: float = 5.0,
                retryable: bool = True) -> Draft:
    """A send did not go through: retry after an exponential backoff, or give up after `retries` retries, when
    the error is permanent, or when a retry would land after the reply window closes."""
    d._need(State.SENDING)
    at = now + timedelta(seconds=backoff_s * 2 ** (d.attempts - 1))
    closes = d.expires_at is not None and at >= d.expires_at
    if not retryable or d.attempts > retries or closes:
        return replace(d, state=State.FAILED, inflight=False, error=error, next_attempt_at=None, updated_at=now)
    return replace(d, inflight=False, error=error, next_attempt_at=at, updated_at=now)


def interrupted(d: Draft, now: datetime) -> Draft:
    """After a restart: a send that was in flight may or may not have reached Telegram; never send it again."""
    d._need(State.SENDING)
    if not d.inflight:
        return d
    return replace(d, state=State.FAILED, inflight=False, error="interrupted while sending: it may have been sent",
                   updated_at=now)
