"""The relay under load: 200 messages from 20 contacts in bursts, a fast fake drafting backend, and a restart in the
middle. Every message is stored once, every burst gets exactly one draft, no draft is lost or sent twice, and
each chat's messages and sends keep their order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

import telegram_updates as U
from bot.drafts import State
from fake_telegram import FakeBotAPI
from helpers import QuickBackend
from relay_harness import BC, Clock, Harness
from twin.paths import Home
from twin.store import ChatKey

CONTACTS = [5550200000 + i for i in range(20)]
MESSAGES_PER_CONTACT = 10


def bursts_for(rng: random.Random) -> list[int]:
    """Burst sizes (1-4) adding up to MESSAGES_PER_CONTACT."""
    sizes, left = [], MESSAGES_PER_CONTACT
    while left:
        sizes.append(min(left, rng.randint(1, 4)))
        left -= sizes[-1]
    return sizes


class Driver:
    """One contact: writes a burst, waits for its draft, taps Send, waits for the send; then the next burst."""

    def __init__(self, cid: int, sizes: list[int], ids):
        self.cid, self.sizes, self.ids = cid, sizes, ids
        self.pushed: list[str] = []
        self.done_bursts = 0

    def push_burst(self, h: Harness, b: int) -> list[str]:
        mids = []
        for k in range(self.sizes[b]):
            mid = next(self.ids)
            h.push(U.business_message(BC, self.cid, self.cid, f"message {b}.{k}", mid, first_name=f"C{self.cid % 100}"))
            mids.append(str(mid))
        self.pushed += mids
        return mids

    async def answer(self, h: Harness, last_mid: str) -> None:
        d = await wait_for_draft(h, self.cid, last_mid)
        h.tap(d.id, "send")
        deadline = time.monotonic() + 20
        while h.ledger().get(d.id).state != State.SENT:
            assert time.monotonic() < deadline, f"draft {d.id} not sent"
            await asyncio.sleep(0.02)
        self.done_bursts += 1

    async def run(self, h: Harness, until: int) -> None:
        while self.done_bursts < min(until, len(self.sizes)):
            mids = self.push_burst(h, self.done_bursts)
            await self.answer(h, mids[-1])


async def wait_for_draft(h: Harness, cid: int, last_mid: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in h.ledger().pending():
            if d.chat.chat_id == str(cid) and d.answers[-1] == last_mid and d.card is not None:
                return d
        await asyncio.sleep(0.02)
    raise AssertionError(f"no draft for chat {cid} answering {last_mid}")


@pytest.mark.slow
async def test_200_messages_20_contacts_with_a_restart(tmp_path):
    rng = random.Random(7)
    home = Home(tmp_path / "home").ensure()
    ids = iter(range(10_000, 99_999))
    drivers = [Driver(cid, bursts_for(rng), ids) for cid in CONTACTS]
    clock = Clock()
    started = time.perf_counter()
    with FakeBotAPI() as fake:
        async with Harness(fake, home, QuickBackend(), clock) as h:
            await h.connect()
            await asyncio.gather(*(d.run(h, 1) for d in drivers))
            # Mid-flight: every contact writes its next burst, and the relay stops before answering them all.
            in_flight = {d.cid: d.push_burst(h, d.done_bursts)[-1] for d in drivers if d.done_bursts < len(d.sizes)}
            await asyncio.sleep(0.3)
        async with Harness(fake, home, QuickBackend(), clock) as h:
            await asyncio.gather(*(d.answer(h, in_flight[d.cid]) for d in drivers if d.cid in in_flight))
            await asyncio.gather(*(d.run(h, len(d.sizes)) for d in drivers))
            await asyncio.sleep(0.3)
            store, ledger = h.relay.store, h.ledger()
            bursts = sum(len(d.sizes) for d in drivers)
            drafts = list(ledger.all())
            sends = [c for c in fake.calls_of("sendMessage") if c.params.get("business_connection_id")]
            for d in drivers:
                stored = [m for m in store.chat_messages(ChatKey("telegram", str(d.cid))) if not m.from_owner]
                assert [m.msg_id for m in stored] == d.pushed  # every message once, in order
            assert len(drafts) == bursts  # one draft per burst: none lost, none doubled
            assert Counter(x.state for x in drafts) == {State.SENT: bursts}
            assert len(sends) == bursts  # nothing sent twice
            for d in drivers:
                mine = [x for x in drafts if x.chat.chat_id == str(d.cid)]
                sent_texts = [c.params["text"] for c in sends if c.params["chat_id"] == d.cid]
                assert sent_texts == [x.final_text for x in sorted(mine, key=lambda x: x.id)]  # order kept
                assert [len(x.answers) for x in sorted(mine, key=lambda x: x.id)] == d.sizes
    elapsed = time.perf_counter() - started
    print(f"load: {sum(len(d.pushed) for d in drivers)} messages, {bursts} bursts, {elapsed:.1f} s")
