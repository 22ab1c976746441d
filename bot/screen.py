"""The owner's screen: every draft that waits for the owner has its card there, or its card is tried again.

A card that Telegram did not take (a 429, a 5xx, a dropped connection) is tried again with backoff, at least as
late as Telegram asked, for as long as the draft waits; a card that may have arrived after all is shown again
anyway (a second card acts like the first: its buttons name the same draft and candidate). Telegram refusing to
write to the owner at all (they never pressed Start) is one clear error in the log, and the cards come as soon
as they do (`show_missing`). Used by the relay (bot/relay.py); tested in tests/test_relay_faults.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.drafts import Draft, State
from bot.ledger import Ledger
from bot.ports import Owner, RelaySettings, SendError
from twin.errors import NotFound

log = logging.getLogger(__name__)


@dataclass
class Retry:
    attempts: int
    at: datetime


class Screen:
    def __init__(self, owner: Owner, ledger: Ledger, settings: RelaySettings, clock: Callable[[], datetime]):
        self.owner = owner
        self.ledger = ledger
        self.settings = settings
        self.clock = clock
        self.retries: dict[int, Retry] = {}  # drafts whose card did not get through
        self._showing: set[int] = set()
        self.blocked = False  # Telegram refused to write to the owner (they never pressed Start)

    async def show(self, d: Draft, note: str = "") -> bool:
        """Put the draft's card on the owner's screen; when it does not get there, try again later (at least as
        late as Telegram asked), for as long as the draft waits for the owner."""
        if d.id in self._showing:
            return False
        self._showing.add(d.id)
        try:
            card = await self.owner.show_card(d, note)
        except SendError as e:
            retry = self.retries.get(d.id) or Retry(0, self.clock())
            retry.attempts += 1
            wait = min(self.settings.backoff_s * 2 ** (retry.attempts - 1), self.settings.card_backoff_max_s)
            retry.at = self.clock() + max(timedelta(seconds=wait), e.retry_after or timedelta())
            self.retries[d.id] = retry
            if e.blocked and not self.blocked:
                self.blocked = True
                log.error("Telegram refuses to write to you (telegram.owner_id): open the bot in Telegram and "
                          "press Start; drafts wait until then")
            log.warning("draft %d: card not shown (attempt %d, %s); again in %.0f s", d.id, retry.attempts, e,
                        (retry.at - self.clock()).total_seconds())
            return False
        finally:
            self._showing.discard(d.id)
        self.retries.pop(d.id, None)
        self.blocked = False
        try:
            self.ledger.set_card(d.id, *card)
        except NotFound:
            return False
        return True

    async def show_missing(self, now: datetime | None = None) -> int:
        """Show the cards that did not get through and are due again (all of them, with `now` None: the owner
        just pressed Start)."""
        shown = 0
        for d in self.ledger.without_card():
            retry = self.retries.get(d.id)
            if now is None or retry is None or retry.at <= now:
                shown += await self.show(d, note(d))
        return shown

    async def reshow(self, d: Draft) -> None:
        """A fresh card for a send the owner must decide on (an edit would not notify them); the old card points
        to it."""
        if d.card:
            await self.owner.update_card(d, "see the card below")
            self.ledger.clear_card(d.id)
            d = self.ledger.get(d.id)
        await self.show(d, note(d))

    async def settle(self, d: Draft, text: str) -> None:
        """The draft is settled (or moved on): its card says so, and no retry is left for it."""
        self.retries.pop(d.id, None)
        if d.card:
            await self.owner.update_card(d, text)


def note(d: Draft) -> str:
    """The note on a card shown again: what the owner is asked."""
    if d.state == State.UNSURE:
        return f"{d.error or 'no answer from Telegram'}: tap It arrived, or Send again"
    return "sending automatically" if d.auto and d.state == State.SENDING else ""
