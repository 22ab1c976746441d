"""The relay's ports: what a platform adapter implements for it (Owner, Sender) and how it is tuned.

The Telegram adapter (bot/telegram_relay.py) is both the owner's side (cards and notes in the owner's chat with
the bot) and the sender as the owner; tests may implement them with anything that records calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import logging

from bot.drafts import Draft
from serving.drafting import Candidates
from twin.errors import TwinError

log = logging.getLogger(__name__)


# Drafts again with exactly the first draft's context (Regenerate on a Discord approval card).
Redraft = Callable[[], Awaitable[Candidates]]


class SendError(TwinError):
    """A request to the platform did not go through as asked.

    `retryable`: trying again may help; `maybe_sent`: the request may have taken effect although no answer
    said so (a read timeout, a dropped connection): never repeated without the owner's word; `retry_after`:
    the platform asked to wait at least this long; `blocked`: the owner's chat refuses the bot (Telegram 403
    before the owner pressed Start).
    """

    def __init__(self, message: str, retryable: bool = True, *, maybe_sent: bool = False,
                 retry_after: timedelta | None = None, blocked: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.maybe_sent = maybe_sent
        self.retry_after = retry_after
        self.blocked = blocked


class Owner(Protocol):
    """The owner's side: where cards and notes appear. `show_card` raises SendError when the card did not get
    there; `update_card` and `notify` log and carry on."""

    async def show_card(self, draft: Draft, note: str = "") -> tuple[str, str]: ...

    async def update_card(self, draft: Draft, note: str = "") -> None: ...

    async def notify(self, text: str) -> None: ...

    async def retire_card(self, card: tuple[str, str]) -> None:
        """The card's draft is gone (forgotten): say so on it and take its buttons away."""
        ...


class Sender(Protocol):
    def pieces(self, text: str) -> list[str]:
        """The messages an approved text goes out as (one per line, none over the platform's limit)."""
        ...

    async def send_as_owner(self, draft: Draft, text: str, index: int) -> str:
        """Send one message (`index` in the draft's pieces) into the draft's chat as the owner; its id.
        Raises SendError."""
        ...


@dataclass(frozen=True)
class RelaySettings:
    settle_s: float = 3.0
    pace_s: float = 1.0
    expiry_margin: timedelta = timedelta(minutes=15)
    send_retries: int = 3
    backoff_s: float = 5.0
    draft_retries: int = 3
    card_backoff_max_s: float = 300.0  # a card that did not get through is tried again, at least this often


class NoOwner:
    """The relay's owner side when no Telegram is configured (Discord-only runs): notes go to the log, cards
    cannot be shown."""

    async def show_card(self, draft, note=""):
        raise SendError("no Telegram configured for approval cards", retryable=False)

    async def update_card(self, draft, note=""):
        return None

    async def retire_card(self, card):
        return None

    async def notify(self, text: str) -> None:
        log.info("note for the owner (no Telegram configured): %d chars", len(text))
