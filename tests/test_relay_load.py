"""The relay under load: 200 messages from 20 contacts in bursts, a fast fake drafting backend, and a restart in the
middle. Every message is stored once, every burst gets exactly one draft, no draft is lost or sent twice, and
each chat's messages and sends keep their order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import timedelta

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
            h.push(U.business_message(BC, self.cid, self.cid, f"message {b}.{k}", mid, first_name=f"C{self.cid % 100}",
                                      date=int(h.clock().timestamp())))  # Telegram's clock is the relay's
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
    mine = [(d.id, d.state.value, d.answers, d.card) for d in h.ledger().all() if d.chat.chat_id == str(cid)]
    stored = [m.msg_id for m in h.relay.store.chat_messages(ChatKey("telegram", str(cid)))]
    raise AssertionError(f"no draft for chat {cid} answering {last_mid}; its drafts: {mine}; stored: {stored}; "
                         f"timers: {len(h.relay._timers)} tasks: {len(h.relay._tasks)} paused: {h.ledger().paused}")


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


class OwnerUnderFaults(Driver):
    """A contact as above, and the owner as a person would be under Telegram's faults: a reply that may or may
    not have arrived is checked in the chat, then "It arrived" or "Send again"."""

    async def answer(self, h: Harness, last_mid: str) -> None:
        d = await wait_for_draft(h, self.cid, last_mid, timeout=60)
        h.tap(d.id, "send")
        deadline = time.monotonic() + 60
        while (state := h.ledger().get(d.id).state) != State.SENT:
            assert time.monotonic() < deadline, f"draft {d.id} not sent ({state})"
            if state == State.PENDING and h.ledger().get(d.id).card is not None:
                await asyncio.sleep(0.3)  # the tap may have been lost with its answer: tap again, as one would
                if h.ledger().get(d.id).state == State.PENDING:
                    h.tap(d.id, "send")
            if state == State.UNSURE and h.ledger().get(d.id).card is not None:
                arrived = len(h.fake.delivered(self.cid, BC)) > self.done_bursts
                h.tap(d.id, "arrived" if arrived else "resend")
                self.choices += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.02)
        self.done_bursts += 1

    choices = 0


async def tick(h: Harness, clock: Clock) -> None:
    """Time passes ten seconds every tenth of a second, and the retry job runs: backoffs and flood waits end."""
    while True:
        await asyncio.sleep(0.1)
        clock.offset += timedelta(seconds=10)
        await h.relay.retry_due()


@pytest.mark.slow
async def test_200_messages_20_contacts_a_restart_and_faults_on_10_percent_of_calls(tmp_path):
    rng = random.Random(11)
    home = Home(tmp_path / "home").ensure()
    ids = iter(range(10_000, 99_999))
    drivers = [OwnerUnderFaults(cid, bursts_for(rng), ids) for cid in CONTACTS]
    clock = Clock()
    started = time.perf_counter()
    with FakeBotAPI() as fake:
        fake.client_read_timeout = 0.5  # Late answers come after the relay's read timeout below
        async with Harness(fake, home, QuickBackend(), clock, read_timeout_seconds=0.5) as h:
            await h.connect()
            fake.chaos(0.1, seed=3)
            ticker = asyncio.create_task(tick(h, clock))
            await asyncio.gather(*(d.run(h, 1) for d in drivers))
            in_flight = {d.cid: d.push_burst(h, d.done_bursts)[-1] for d in drivers if d.done_bursts < len(d.sizes)}
            await asyncio.sleep(0.3)
            ticker.cancel()
        async with Harness(fake, home, QuickBackend(), clock, read_timeout_seconds=0.5) as h:
            ticker = asyncio.create_task(tick(h, clock))
            await asyncio.gather(*(d.answer(h, in_flight[d.cid]) for d in drivers if d.cid in in_flight))
            await asyncio.gather(*(d.run(h, len(d.sizes)) for d in drivers))
            ticker.cancel()
            fake.calm()
            await asyncio.sleep(0.3)
            store, ledger = h.relay.store, h.ledger()
            bursts = sum(len(d.sizes) for d in drivers)
            drafts = list(ledger.all())
            for d in drivers:
                stored = [m for m in store.chat_messages(ChatKey("telegram", str(d.cid))) if not m.from_owner]
                assert [m.msg_id for m in stored] == d.pushed  # every message stored once, in order
            assert len(drafts) == bursts  # one draft per burst: none lost, none doubled
            assert Counter(x.state for x in drafts) == {State.SENT: bursts}
            for d in drivers:
                mine = sorted((x for x in drafts if x.chat.chat_id == str(d.cid)), key=lambda x: x.id)
                # Each approved text arrived exactly once, in order, whatever failed on the way.
                assert fake.delivered(d.cid, BC) == [x.final_text for x in mine]
            faults = Counter(type(c.fault).__name__ + (f" {c.fault.error_code}" if hasattr(c.fault, "error_code")
                                                       else "") for c in fake.calls if c.fault is not None)
            calls = len(fake.calls)
    elapsed = time.perf_counter() - started
    print(f"load with faults: {sum(len(d.pushed) for d in drivers)} messages, {bursts} bursts, {calls} Bot API "
          f"calls, {sum(faults.values())} faults ({dict(faults)}), {sum(d.choices for d in drivers)} owner "
          f"choices on unsure sends, {elapsed:.1f} s")
