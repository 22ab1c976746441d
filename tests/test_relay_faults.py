"""The relay's promise under the platform's real faults, at the relay's ports: what the owner approved is what is
sent, exactly once; a send whose fate is unknown is put to the owner; every pending draft has a card or is
retried until it does.

The relay (bot/relay.py) runs for real on a real twin.db with the real Drafter (helpers.QuickBackend); the
owner's screen and the contacts' chats are recording fakes of its ports that fail on demand the ways
Telegram does (bot/telegram_relay.py maps Telegram's errors to these SendErrors; tests/test_telegram_relay.py
checks that mapping through python-telegram-bot and the fake Bot API). The stateful property test at the end
drives random interleavings and checks the promise after every step.

    .venv/bin/pytest tests/test_relay_faults.py
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bot import cards
from bot.drafter import Drafter, DraftingParts
from bot.drafts import ChatRef, State, utc
from bot.ports import RelaySettings, SendError
from bot.relay import Relay
from helpers import QuickBackend
from serving.drafting import Candidate
from serving.drafting import Candidates
from serving.drafting import DraftSettings
from twin.chat import Chat, Message
from twin.config import DraftingConfig
from twin.errors import TwinError
from twin.forget import forget
from twin.store import Store

T0 = utc(1_800_000_000)
OWNER = "user1"
CONTACTS = {"2002": "Tomas Berg", "2003": "Lena Vik"}
SETTINGS = RelaySettings(settle_s=3600, pace_s=0, backoff_s=1, send_retries=3, card_backoff_max_s=60)


@dataclass(frozen=True)
class CardView:
    """What a card on the owner's screen shows: its draft, the candidate's index and text, the draft's state."""

    draft_id: int | None
    shown: int
    text: str
    state: str


class Screen:
    """The owner's chat with the bot. `fail` holds SendErrors the next card shows raise, in order."""

    def __init__(self):
        self.cards: dict[str, CardView] = {}
        self.notes: list[str] = []
        self.fail: list[SendError] = []
        self._ids = itertools.count(500)

    async def show_card(self, d, note=""):
        await asyncio.sleep(0)
        if self.fail:
            raise self.fail.pop(0)
        card = str(next(self._ids))
        self.cards[card] = CardView(d.id, d.shown, d.text, d.state.value)
        return "1", card

    async def update_card(self, d, note=""):
        if d.card:
            self.cards[d.card[1]] = CardView(d.id, d.shown, d.text, d.state.value)

    async def retire_card(self, card):
        self.cards[card[1]] = CardView(None, 0, cards.FORGOTTEN, "forgotten")

    async def notify(self, text):
        self.notes.append(text)

    def showing(self, draft_id: int) -> list[CardView]:
        return [c for c in self.cards.values() if c.draft_id == draft_id]


class Chats:
    """The contacts' side: every message that arrived, as (chat, draft, index in its pieces, text).

    `faults` are consumed one per send, in order: None delivers; "refused" (a 5xx: not sent, retryable),
    "flood" (429, retry after 30 s), "permanent" (400: not sent, not retryable), "reset" (no answer, not
    delivered), "late" (delivered, but the answer came too late), "boom" (an unexpected exception after
    delivering), "hang" (delivered, then no answer until the relay is stopped).
    """

    def __init__(self):
        self.inbox: list[tuple[str, int, int, str]] = []
        self.faults: list[str | None] = []
        self.attempts: list[tuple[int, int]] = []
        self.hold = asyncio.Event()

    pieces = staticmethod(cards.pieces)

    async def send_as_owner(self, d, text, index):
        await asyncio.sleep(0)
        self.attempts.append((d.id, index))
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refused":
            raise SendError("Telegram failed (Bad Gateway)")
        if fault == "flood":
            raise SendError("Telegram asked to wait 30 s", retry_after=timedelta(seconds=30))
        if fault == "permanent":
            raise SendError("Telegram refused the message", retryable=False)
        if fault == "reset":
            raise SendError("no clear answer from Telegram (NetworkError)", maybe_sent=True)
        self.inbox.append((d.chat.chat_id, d.id, index, text))
        if fault == "late":
            raise SendError("Telegram did not answer in time", maybe_sent=True)
        if fault == "boom":
            raise RuntimeError("invalid server response")
        if fault == "hang":
            await self.hold.wait()
        return str(9000 + len(self.inbox))


class World:
    """A relay on a real twin.db in `root`, the owner's screen, the contacts' chats and a clock."""

    def __init__(self, root: Path):
        self.root = root
        self.now = T0
        self.store = Store.open(root / "twin.db")
        self.store.set_owner("telegram", OWNER, "Mira")
        self.screen = Screen()
        self.chats = Chats()
        self.backend = QuickBackend()
        self._ids = itertools.count(100)
        self.relay = self._relay()

    def _relay(self) -> Relay:
        parts = lambda: DraftingParts(self.backend, None, DraftSettings(owner_name="Mira"))  # noqa: E731
        drafter = Drafter(self.root / "twin.db", parts, DraftingConfig(n=2), clock=lambda: self.now)
        relay = Relay(self.store, drafter, self.screen, SETTINGS, clock=lambda: self.now)
        relay.senders["telegram"] = self.chats
        return relay

    def ref(self, chat: str) -> ChatRef:
        return ChatRef("telegram", "BC1", chat)

    async def contact(self, chat: str, text: str) -> str:
        mid = str(next(self._ids))
        await self.relay.contact_message(
            self.ref(chat), Chat("telegram", chat, "personal", CONTACTS[chat]),
            Message("telegram", chat, mid, f"user{chat}", CONTACTS[chat], self.now, text))
        return mid

    async def owner_writes(self, chat: str, text: str) -> None:
        mid = str(next(self._ids))
        await self.relay.owner_message(self.ref(chat), Chat("telegram", chat, "personal", CONTACTS[chat]),
                                       Message("telegram", chat, mid, OWNER, "Mira", self.now, text))

    async def draft(self, chat: str):
        d = await self.relay.draft_chat(self.ref(chat))
        await self.drain()
        return d

    async def drain(self) -> None:
        """Let every task the relay started run to its end (or to where it waits on a hanging send)."""
        for _ in range(50):
            tasks = [t for t in self.relay._tasks if not t.done()]
            if not tasks:
                return
            done, _ = await asyncio.wait(tasks, timeout=0.05)
            if not done:
                return  # only hanging sends are left

    async def tap(self, draft_id: int, action: str, candidate: int | None = None) -> str:
        answer = await self.relay.act(draft_id, action, candidate)
        await self.drain()
        return answer

    async def later(self, seconds: float) -> int:
        self.now += timedelta(seconds=seconds)
        n = await self.relay.retry_due()
        await self.drain()
        return n

    async def restart(self) -> None:
        """twin stops (whatever is in flight is cut off) and starts again on the same twin.db."""
        await self.relay.close()
        await self.relay.drafter.close()
        self.chats.hold = asyncio.Event()
        self.relay = self._relay()
        await self.relay.recover()
        for timer in list(self.relay._timers.values()):
            timer.cancel()
        self.relay._timers.clear()
        await self.drain()

    async def close(self) -> None:
        self.chats.hold.set()
        await self.relay.close()
        await self.relay.drafter.close()
        self.store.close()


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path)
    yield w
    await w.close()


async def pending_draft(w: World, chat: str = "2002", text: str = "are you free tonight?"):
    await w.contact(chat, text)
    d = await w.draft(chat)
    assert d is not None and d.card is not None
    return d


# -- one test per fault -------------------------------------------------------------------------------------

async def test_a_late_answer_after_delivery_is_never_resent_blindly(world):
    d = await pending_draft(world)
    world.chats.faults = ["late"]
    assert await world.tap(d.id, "send", 0) == "Sending."
    d = world.relay.ledger.get(d.id)
    assert d.state == State.UNSURE and not d.inflight
    assert len(world.chats.inbox) == 1
    # Put to the owner on a fresh card (an edit would not notify them) with the choice.
    assert world.screen.cards[d.card[1]].state == "unsure"
    assert await world.later(3600) == 0 and len(world.chats.attempts) == 1  # nothing resent by the jobs
    assert await world.tap(d.id, "arrived") == "Noted: it arrived."
    assert world.relay.ledger.get(d.id).state == State.SENT and len(world.chats.inbox) == 1
    # What arrived is the owner's turn in the stored conversation, as a delivered message is.
    assert [m.text for m in world.store.chat_messages(_key("2002")) if m.from_owner] == [d.final_text]


async def test_the_owner_may_send_an_unsure_reply_again(world):
    d = await pending_draft(world)
    world.chats.faults = ["reset"]
    await world.tap(d.id, "send", 0)
    assert world.relay.ledger.get(d.id).state == State.UNSURE and world.chats.inbox == []
    assert await world.tap(d.id, "resend") == "Sending again."
    d = world.relay.ledger.get(d.id)
    assert d.state == State.SENT and [t for *_, t in world.chats.inbox] == [d.final_text]


async def test_writing_by_hand_stops_a_send_waiting_for_its_retry(world):
    d = await pending_draft(world)
    world.chats.faults = ["refused"]
    await world.tap(d.id, "send", 0)
    d = world.relay.ledger.get(d.id)
    assert d.state == State.SENDING and d.next_attempt_at is not None
    await world.owner_writes("2002", "yes! 8 at the gym")
    assert world.relay.ledger.get(d.id).state == State.SUPERSEDED
    await world.later(3600)
    assert world.chats.inbox == [] and len(world.chats.attempts) == 1


async def test_a_card_that_did_not_get_through_is_shown_when_telegram_allows(world):
    world.screen.fail = [SendError("Telegram asked to wait 20 s", retry_after=timedelta(seconds=20))]
    await world.contact("2002", "dinner on friday?")
    d = await world.draft("2002")
    assert d.state == State.PENDING and d.card is None
    await world.later(10)
    assert world.relay.ledger.get(d.id).card is None  # Telegram asked for 20 s
    await world.later(11)
    d = world.relay.ledger.get(d.id)
    assert d.card is not None and world.screen.cards[d.card[1]].text == d.text


async def test_an_owner_who_never_pressed_start_gets_one_clear_notice(world, caplog):
    blocked = SendError("Telegram refused (Forbidden: bot can't initiate conversation with a user)",
                        retryable=False, blocked=True)
    world.screen.fail = [blocked, blocked, blocked]
    with caplog.at_level(logging.WARNING, logger="bot.relay"):
        await pending_draft_without_card(world)
        await world.later(5)
        await world.later(10)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "press Start" in errors[0].getMessage()
    assert world.relay.screen.blocked
    assert await world.relay.screen.show_missing() == 1  # /start arrived: the card comes at once
    (d,) = world.relay.ledger.pending()
    assert d.card is not None and not world.relay.screen.blocked


async def pending_draft_without_card(w: World):
    await w.contact("2002", "dinner on friday?")
    d = await w.draft("2002")
    assert d.card is None
    return d


async def test_a_flood_wait_is_respected_not_burnt_through(world):
    d = await pending_draft(world)
    world.chats.faults = ["flood"]
    await world.tap(d.id, "send", 0)
    d = world.relay.ledger.get(d.id)
    assert d.next_attempt_at == world.now + timedelta(seconds=30)
    await world.later(10)
    assert len(world.chats.attempts) == 1
    await world.later(21)
    assert world.relay.ledger.get(d.id).state == State.SENT and len(world.chats.inbox) == 1


async def test_an_unexpected_error_is_reported_and_never_left_in_flight(world):
    d = await pending_draft(world)
    world.chats.faults = ["boom"]
    await world.tap(d.id, "send", 0)
    d = world.relay.ledger.get(d.id)
    assert (d.state, d.inflight) == (State.UNSURE, False)
    assert "RuntimeError" in d.error and world.screen.cards[d.card[1]].state == "unsure"


async def test_a_partly_sent_burst_records_what_arrived_and_sends_only_the_rest(world):
    d = await pending_draft(world)
    await world.tap(d.id, "edit")
    world.chats.faults = [None, "refused"]
    assert await world.relay.edit_text("yes!\nsee you at 8\nbring the rope")
    await world.drain()
    d = world.relay.ledger.get(d.id)
    assert d.state == State.SENDING and len(d.sent_ids) == 1
    # What arrived is the owner's turn in the stored conversation already.
    assert [m.text for m in world.store.chat_messages(_key("2002")) if m.from_owner] == ["yes!"]
    await world.later(2)
    assert [t for *_, t in world.chats.inbox] == ["yes!", "see you at 8", "bring the rope"]
    d = world.relay.ledger.get(d.id)
    assert d.state == State.EDITED_SENT and len(d.sent_ids) == 3


async def test_a_burst_that_fails_for_good_says_how_much_arrived(world):
    d = await pending_draft(world)
    await world.tap(d.id, "edit")
    world.chats.faults = [None, "permanent"]
    await world.relay.edit_text("yes!\nsee you at 8")
    await world.drain()
    d = world.relay.ledger.get(d.id)
    assert d.state == State.FAILED and d.sent_ids == ("9001",)
    assert any("1 of its messages had arrived" in n for n in world.screen.notes)


async def test_old_buttons_never_act_on_another_contacts_draft_after_forget(world):
    d = await pending_draft(world, "2003")
    old_card = d.card
    gone = await world.relay.forget("telegram", "2003", lambda: forget(world.store, "Lena Vik",
                                                                    relay_tables=world.relay.ledger.forget))
    assert gone.drafts == 1
    assert world.screen.cards[old_card[1]].text == cards.FORGOTTEN
    other = await pending_draft(world, "2002")
    assert other.id != d.id  # never reused, though the forgotten one was the newest
    with pytest.raises(TwinError):
        await world.tap(d.id, "send", 0)
    assert world.chats.inbox == [] and world.relay.ledger.get(other.id).state == State.PENDING


async def test_a_send_cut_off_by_a_restart_is_put_to_the_owner(world):
    d = await pending_draft(world)
    world.chats.faults = ["hang"]
    await world.tap(d.id, "send", 0)
    assert world.relay.ledger.get(d.id).inflight
    await world.restart()
    d = world.relay.ledger.get(d.id)
    assert d.state == State.UNSURE and world.screen.cards[d.card[1]].state == "unsure"
    assert len(world.chats.attempts) == 1


async def test_regenerate_on_a_discord_approval_drafts_with_the_first_drafts_context(world):
    world.store.upsert_chat(Chat("discord", "77", "bot"))
    first = Candidates([Candidate("hi there", ["hi there"])], "base", 1.0, 10)
    calls = []

    async def redraft():
        calls.append("redraft")
        return Candidates([Candidate("hello again", ["hello again"])], "base", 1.0, 10)

    waiting = asyncio.create_task(world.relay.approve(ChatRef("discord", None, "77"), "310", ("5",), first,
                                                      redraft=redraft))
    await asyncio.sleep(0.05)
    (d,) = world.relay.ledger.pending()
    await world.tap(d.id, "next")
    d = world.relay.ledger.get(d.id)
    assert calls == ["redraft"] and d.candidates == ("hi there", "hello again") and d.shown == 1
    assert world.backend.calls == []  # the chat's own key was not drafted from
    await world.tap(d.id, "send", 1)
    assert await waiting == "hello again"


def _key(chat: str):
    from twin.store import ChatKey

    return ChatKey("telegram", chat)


# -- the promise, over random interleavings -----------------------------------------------------------------

TEXTS = st.sampled_from(["ok", "are you free tonight?", "dinner & drinks?", "hey", "x" * 5000, "a & b < c"])
EDITS = st.sampled_from(["sure", "yes!\nsee you at 8", "can't, sorry\nnext week?\nor friday", "🙂 " * 10])
FAULTS = st.sampled_from([None, None, None, "refused", "flood", "permanent", "reset", "late", "boom", "hang"])


class RelayPromise(RuleBasedStateMachine):
    """Contact bursts, owner taps (double taps and stale cards among them), edits, hand-written replies, deletes,
    /forget, restarts and faults, in any order; the promise is checked after every step."""

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.root = Path(tempfile.mkdtemp(prefix="twin-promise-"))
        self.w = self.run(self._world())
        self.approved: dict[int, str] = {}  # draft id -> the text the owner approved (as shown, or typed)
        self.forgotten: set[str] = set()

    async def _world(self) -> World:
        return World(self.root)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self):
        self.run(self.w.close())
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what happens ---------------------------------------------------------------------------------------

    @rule(chat=st.sampled_from(sorted(CONTACTS)), texts=st.lists(TEXTS, min_size=1, max_size=3))
    def contact_writes(self, chat, texts):
        if chat in self.forgotten:
            return
        for text in texts:
            self.run(self.w.contact(chat, text))
        self.run(self.w.draft(chat))

    @rule(chat=st.sampled_from(sorted(CONTACTS)), text=st.sampled_from(["on my way", "yes"]))
    def owner_writes_by_hand(self, chat, text):
        if chat not in self.forgotten:
            self.run(self.w.owner_writes(chat, text))

    @rule(data=st.data(), fault=FAULTS, twice=st.booleans())
    def tap_send_on_some_card(self, data, fault, twice):
        """Any card ever shown, current or stale; sometimes pressed twice."""
        cards_shown = [(cid, c) for cid, c in self.w.screen.cards.items() if c.draft_id is not None]
        if not cards_shown:
            return
        _, card = data.draw(st.sampled_from(cards_shown))
        self.w.chats.faults = [fault]
        for _ in range(2 if twice else 1):
            self._tap(card, "send")

    @rule(data=st.data(), action=st.sampled_from(["next", "discard"]))
    def tap_other(self, data, action):
        cards_shown = [c for c in self.w.screen.cards.values() if c.draft_id is not None]
        if cards_shown:
            self._tap(data.draw(st.sampled_from(cards_shown)), action)

    @rule(fault=FAULTS)
    def owner_checks_the_chat_of_unsure_sends(self, fault):
        """As a person would: "It arrived" when the message is in the chat, else "Send again"."""
        unsure = [d for d in self._all() if d.state == State.UNSURE]
        for d in unsure:
            there = any(i == d.id and k == len(d.sent_ids) for _, i, k, _ in self.w.chats.inbox)
            self.w.chats.faults = [fault]
            self._try(self.w.tap(d.id, "arrived" if there else "resend"))

    def _all(self):
        return list(self.w.relay.ledger.all())

    @rule(data=st.data(), text=EDITS, fault=FAULTS)
    def edit_and_send(self, data, text, fault):
        pending = self.w.relay.ledger.pending()
        if not pending:
            return
        d = data.draw(st.sampled_from(pending))
        if not self._try(self.w.tap(d.id, "edit")):
            return
        self.w.chats.faults = [fault]
        before = self.w.relay.ledger.get(d.id)
        self.run(self.w.relay.edit_text(text))
        self.run(self.w.drain())
        if self.w.relay.ledger.get(d.id).state != State.PENDING and before.editing:
            self.approved[d.id] = text

    @rule(chat=st.sampled_from(sorted(CONTACTS)))
    def contact_deletes_their_last_message(self, chat):
        last = self.w.store.chat_messages(_key(chat), last=1)
        if last and not last[0].from_owner:
            self.run(self.w.relay.messages_deleted(self.w.ref(chat), [last[0].msg_id]))

    @rule(chat=st.sampled_from(sorted(CONTACTS)))
    def forget_a_contact(self, chat):
        if chat in self.forgotten or not self.w.store.chat_messages(_key(chat), last=1):
            return
        self.run(self.w.relay.forget("telegram", chat, lambda: forget(self.w.store, f"telegram:{chat}",
                                                                      relay_tables=self.w.relay.ledger.forget)))
        self.forgotten.add(chat)

    @rule()
    def restart(self):
        self.run(self.w.restart())

    @rule(seconds=st.sampled_from([1, 5, 31, 120]), card_fails=st.booleans())
    def time_passes(self, seconds, card_fails):
        if card_fails:
            self.w.screen.fail = [SendError("Telegram failed (Bad Gateway)")]
        self.w.chats.faults = []
        self.run(self.w.later(seconds))

    @rule()
    def a_card_fails_to_show(self):
        self.w.screen.fail = [SendError("Telegram asked to wait 5 s", retry_after=timedelta(seconds=5))]

    def _tap(self, card: CardView, action: str) -> None:
        d_before = self._get(card.draft_id)
        answer = self._try(self.w.tap(card.draft_id, action, card.shown))
        if answer and action == "send" and d_before is not None and d_before.state == State.PENDING \
                and self._get(card.draft_id).state != State.PENDING:
            self.approved[card.draft_id] = d_before.candidates[card.shown]

    def _get(self, draft_id):
        try:
            return self.w.relay.ledger.get(draft_id)
        except TwinError:
            return None

    def _try(self, coro):
        try:
            return self.run(coro)
        except TwinError:
            return None  # a forgotten draft's button: nothing happens

    # -- the promise -----------------------------------------------------------------------------------------

    @invariant()
    def only_what_the_owner_saw_goes_out_and_only_once(self):
        seen = set()
        for chat, draft_id, index, text in self.w.chats.inbox:
            assert draft_id in self.approved, "a message went out that nobody approved"
            pieces = cards.pieces(self.approved[draft_id])
            assert index < len(pieces) and pieces[index] == text, "what went out is not what the owner saw"
            assert (draft_id, index) not in seen, "an approved message was delivered twice"
            seen.add((draft_id, index))
            d = self._get(draft_id)
            assert d is None or d.chat.chat_id == chat, "a draft's text went to another chat"

    @invariant()
    def every_waiting_draft_has_a_card_or_will_get_one(self):
        for d in self.w.relay.ledger.without_card():
            assert d.id in self.w.relay.screen.retries, f"draft {d.id} waits with no card and no retry"

    @invariant()
    def nothing_is_left_in_flight_without_a_send_running(self):
        if self.w.relay.ledger.inflight():
            assert any(not t.done() for t in self.w.relay._tasks), "a send is marked in flight but nothing sends"

    @rule()
    def everything_settles(self):
        """Faults stop, hanging requests are answered and time passes: every approved draft ends delivered, or is
        reported as failed or unsure (its card with the choice on the owner's screen)."""
        self.w.chats.faults, self.w.screen.fail = [], []
        self.w.chats.hold.set()  # a request left hanging gets its answer at last
        for _ in range(8):
            self.run(self.w.later(400))
        self.w.chats.hold = asyncio.Event()
        for draft_id in self.approved:
            d = self._get(draft_id)
            if d is None:
                continue  # forgotten
            if d.state in (State.SENT, State.EDITED_SENT):
                assert len(d.sent_ids) == len(cards.pieces(d.final_text))
            elif d.state == State.FAILED:
                assert any("could not be sent" in n for n in self.w.screen.notes) or d.card
            elif d.state == State.UNSURE:
                assert d.card is not None or d.id in self.w.relay.screen.retries
            else:
                assert d.state in (State.SUPERSEDED, State.EXPIRED), d.state


RelayPromise.TestCase.settings = settings(max_examples=int(os.environ.get("TWIN_PROMISE_EXAMPLES", 100)), stateful_step_count=25, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_relay_promise = RelayPromise.TestCase
