"""The relay under test: `twin run`'s composition root (twin/cli/relay.py run_relay) in the test's event loop, with a real
python-telegram-bot Application polling a fake Bot API server (tests/fake_telegram.py) and a fast fake model
backend (helpers.QuickBackend). Used by tests/test_telegram_relay.py and tests/test_relay_load.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import telegram_updates as U
from bot.drafter import DraftingParts
from bot.ledger import Ledger
from twin.cli.relay import Secrets, run_relay as run
from fake_telegram import TOKEN, FakeBotAPI
from helpers import QuickBackend
from serving.drafting import DraftSettings
from twin.config import Config, DraftingConfig, TelegramConfig
from twin.errors import NotFound
from twin.paths import Home

OWNER, TOMAS, BC = U.OWNER_ID, U.TOMAS_ID, U.BUSINESS_CONNECTION_ID


class Clock:
    def __init__(self):
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


class Harness:
    """The relay running in the test's loop against the fake; `calls()` are the Bot API calls made (no polls)."""

    def __init__(self, fake: FakeBotAPI, home: Home, backend: QuickBackend, clock: Clock, **telegram):
        self.fake, self.home, self.backend, self.clock = fake, home, backend, clock
        self.cfg = Config(
            telegram=TelegramConfig(owner_id=OWNER, base_url=fake.base_url, settle_seconds=0.15, pace_seconds=0,
                                    digest_hour=None, **telegram),
            drafting=DraftingConfig(n=2, backend="local"),
        )
        self.stop = asyncio.Event()
        self.relay = None
        self.task: asyncio.Task | None = None
        self._msg_ids = iter(range(100, 10_000))

    async def __aenter__(self) -> "Harness":
        ready = asyncio.Event()

        def on_ready(relay):
            self.relay = relay
            ready.set()

        parts = lambda: DraftingParts(self.backend, None, DraftSettings(owner_name="Mira"))  # noqa: E731
        self.task = asyncio.create_task(run(self.home, self.cfg, Secrets(telegram=TOKEN), parts=parts,
                                            stop=self.stop, clock=self.clock, on_ready=on_ready))
        done, _ = await asyncio.wait([self.task, asyncio.create_task(ready.wait())], timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)

    def push(self, update: dict) -> None:
        self.fake.push(update)

    def contact(self, text: str, **kw) -> int:
        mid = next(self._msg_ids)
        self.push(U.business_message(BC, TOMAS, TOMAS, text, mid, **kw))
        return mid

    def owner_writes(self, text: str) -> int:
        mid = next(self._msg_ids)
        self.push(U.business_message(BC, TOMAS, OWNER, text, mid, first_name=U.OWNER_NAME))
        return mid

    def tap(self, draft_id: int, action: str, by: int = OWNER, card: int | None = None,
            candidate: int | None = None) -> None:
        """A press on a button of the draft's card: by default the card on record, showing the draft's current
        candidate (what a card that is up to date carries)."""
        try:
            d = self.relay.ledger.get(draft_id) if self.relay else None
        except NotFound:  # a forgotten draft's old card
            d = None
        if candidate is None:
            candidate = d.shown if d else 0
        if card is None:
            card = int(d.card[1]) if d and d.card else 1000
        self.push(U.callback_query(by, f"d:{draft_id}:{action}:{candidate}", by, card))

    def calls(self, method: str | None = None):
        return [c for c in self.fake.calls if method is None or c.method == method]

    def business_sends(self):
        return [c for c in self.calls("sendMessage") if c.params.get("business_connection_id")]

    async def wait(self, what, count: int = 1, timeout: float = 5.0):
        return await self.fake.wait_async(what, count, timeout)

    async def quiet(self, seconds: float = 0.4) -> None:
        """Let the bot process everything pushed so far (and its settle timers run out)."""
        await asyncio.sleep(seconds)

    def ledger(self) -> Ledger:
        return self.relay.ledger

    async def card(self):
        """The one pending draft, once its card is on the owner's screen (and recorded)."""
        await self.wait(is_card)
        for _ in range(200):
            pending = self.ledger().pending()
            if pending and pending[-1].card is not None:
                return pending[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("no pending draft with a card")

    async def connect(self, **rights) -> None:
        self.push(U.business_connection(BC, OWNER, **rights))
        await self.wait(lambda c: c.method == "sendMessage" and "Connected" in c.params["text"])


def is_card(c) -> bool:
    return c.method == "sendMessage" and c.params["chat_id"] == OWNER and "reply_markup" in c.params
