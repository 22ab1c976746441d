"""The relay's ports: what a platform adapter implements for it (Owner, Sender) and how it is tuned.

The Telegram adapter (bot/telegram_relay.py) is both the owner's side (cards and notes in the owner's chat with
the bot) and the sender as the owner; tests may implement them with anything that records calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from bot.drafts import Draft
from twin.errors import TwinError


class SendError(TwinError):
    """A send as the owner did not go through; `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class Owner(Protocol):
    """The owner's side: where cards and notes appear."""

    async def show_card(self, draft: Draft, note: str = "") -> tuple[str, str] | None: ...

    async def update_card(self, draft: Draft, note: str = "") -> None: ...

    async def notify(self, text: str) -> None: ...


class Sender(Protocol):
    async def send_as_owner(self, draft: Draft, text: str) -> tuple[str, ...]:
        """Send `text` into the draft's chat as the owner; the sent message ids. Raises SendError."""
        ...


@dataclass(frozen=True)
class RelaySettings:
    settle_s: float = 3.0
    pace_s: float = 1.0
    expiry_margin: timedelta = timedelta(minutes=15)
    send_retries: int = 3
    backoff_s: float = 5.0
    draft_retries: int = 3
