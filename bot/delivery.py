"""Delivery: an approved draft goes out as the owner, one message at a time, each recorded as it arrives.

Sends to a chat are paced and one at a time, in order. Each message's request is committed as "in flight" before
it goes out; a message Telegram refused, or that never left, is retried with backoff by the jobs (bot/jobs.py);
one whose fate is unknown (a timeout after Telegram may have delivered it) makes the draft "unsure", and the
owner is asked on a fresh card (bot/screen.py); it is never sent again on its own. What arrived is the owner's
turn in the stored conversation. Used by the relay (bot/relay.py); tested in tests/test_relay_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from bot import drafts as D
from bot.drafts import Draft, InvalidTransition, State
from bot.ledger import Ledger
from bot.ports import RelaySettings, Sender, SendError
from bot.screen import Screen
from twin.chat import Message
from twin.errors import NotFound
from twin.store import Store

log = logging.getLogger(__name__)


class Delivery:
    """`settled(draft, note)` is told when a draft is done (sent, failed), so that its card and whoever awaits
    it learn of it."""

    def __init__(self, store: Store, ledger: Ledger, screen: Screen, settings: RelaySettings,
                 clock: Callable[[], datetime], settled: Callable[[Draft, str], Awaitable[None]]):
        self.store = store
        self.ledger = ledger
        self.screen = screen
        self.settings = settings
        self.clock = clock
        self.settled = settled
        self.senders: dict[str, Sender] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one send at a time per chat, in order
        self._last_send: dict[str, float] = {}

    def pieces(self, d: Draft) -> list[str]:
        sender = self.senders.get(d.chat.platform)
        text = d.final_text or d.text
        return sender.pieces(text) if sender is not None else [text]

    async def deliver(self, draft_id: int, resolve: Callable[[Draft], Awaitable[Draft]]) -> Draft | None:
        """Send an approved draft as the owner, one message at a time; a draft someone else sends (Discord) goes
        to `resolve`. None when the draft was forgotten meanwhile."""
        try:
            d = self.ledger.get(draft_id)
            async with self._locks.setdefault(d.chat.chat_id, asyncio.Lock()):
                while True:
                    d = self.ledger.get(draft_id)
                    if d.state != State.SENDING or d.inflight or d.next_attempt_at is not None \
                            and d.next_attempt_at > self.clock():
                        return d
                    if d.origin == "discord":
                        return await resolve(d)
                    d = await self._send_next(d)
                    if d.state != State.SENDING or d.next_attempt_at is not None:
                        return d
        except NotFound:
            log.info("draft %d: forgotten while it was being sent", draft_id)
            return None

    async def _send_next(self, d: Draft) -> Draft:
        """Send the draft's next undelivered message; the draft after it."""
        sender = self.senders.get(d.chat.platform)
        if sender is None:
            now = self.clock()
            d = self.ledger.apply(d.id, lambda x: D.send_failed(x, f"no sender for {d.chat.platform}", now, 0,
                                                                retryable=False), "send_failed", now)
            await self.settled(d, "not sent: nothing sends to this platform")
            return d
        pieces = sender.pieces(d.final_text or "")
        index = len(d.sent_ids)
        wait = self.settings.pace_s - (time.monotonic() - self._last_send.get(d.chat.chat_id, -1e9))
        if wait > 0:
            await asyncio.sleep(wait)
        now = self.clock()
        try:
            # Committed before the request goes out: a crash from here on is "unsure", never resent blindly.
            d = self.ledger.apply(d.id, lambda x: D.dispatch(x, now), "dispatch", now)
        except InvalidTransition as e:  # the owner answered by hand meanwhile, or another task sends it
            log.info("draft %d: not dispatched (%s)", d.id, e)
            return self.ledger.get(d.id)
        try:
            message_id = await sender.send_as_owner(d, pieces[index], index)
        except SendError as e:
            return await self._send_failed(d, e)
        except Exception as e:  # noqa: BLE001 — an unexpected failure must not leave the send in flight
            log.error("draft %d: send raised %s", d.id, type(e).__name__, exc_info=True)
            return await self._send_failed(d, SendError(f"unexpected error ({type(e).__name__})", maybe_sent=True))
        self._last_send[d.chat.chat_id] = time.monotonic()
        now = self.clock()
        last = index + 1 >= len(pieces)
        d = self.ledger.apply(d.id, lambda x: D.delivered(x, message_id, last, now), "sent" if last else "delivered",
                              now)
        self.record_sent(d, message_id, pieces[index], now)
        if last:
            await self.settled(d, "sent")
            log.info("draft %d sent chat=%s messages=%d edited=%s", d.id, d.chat.chat_id, len(pieces), d.edited)
        return d

    async def _send_failed(self, d: Draft, e: SendError) -> Draft:
        now = self.clock()
        if e.maybe_sent:
            d = self.ledger.apply(d.id, lambda x: D.send_unsure(x, str(e), now), "send_unsure", now)
            log.warning("draft %d: send unsure (%s); the owner decides", d.id, e)
            await self.screen.reshow(d)
            return d
        d = self.ledger.apply(d.id, lambda x: D.send_failed(
            x, str(e), now, self.settings.send_retries, self.settings.backoff_s, e.retryable, e.retry_after),
            "send_failed", now)
        log.warning("draft %d: send failed (try %d, %s)", d.id, d.failures, d.state.value)
        if d.state == State.FAILED:
            await self.settled(d, f"not sent: {e}")
            sent = f" ({len(d.sent_ids)} of its messages had arrived)" if d.sent_ids else ""
            await self.screen.owner.notify(f"A reply could not be sent after {d.failures} tries{sent}: {e}")
        return d

    def record_sent(self, d: Draft, message_id: str, text: str, now: datetime) -> None:
        """What went out is the owner's turn in the conversation from now on."""
        owner = next(iter(sorted(self.store.owner_ids(d.chat.platform))), "owner")
        with self.store.transaction():
            self.store.insert_messages([Message(d.chat.platform, d.chat.chat_id, message_id, owner, None, now, text)],
                                       source="live")
