"""The Telegram relay under Telegram's real faults, end to end: `twin run`'s composition root with a real
python-telegram-bot Application against the strict fake Bot API (tests/fake_telegram.py), which refuses what
Telegram refuses (malformed HTML, texts over 4096 UTF-16 units after entity parsing) and injects Telegram's
failures: 429 with retry_after, 5xx, 409, an answer that comes after the client's read timeout although the
message was delivered, a connection reset, an answer that is not JSON.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

import telegram_updates as U
from bot.cards import FORGOTTEN, utf16, visible
from bot.drafts import State
from fake_telegram import Error, Garbage, Late, Reset
from helpers import QuickBackend
from relay_harness import BC, OWNER, TOMAS, Clock, Harness, is_card
from twin.store import ChatKey

READ_TIMEOUT = 0.4


@pytest.fixture
def harness(fake, home):
    return Harness(fake, home, QuickBackend(), Clock(), read_timeout_seconds=READ_TIMEOUT)


def to_contact(c) -> bool:
    return c.method == "sendMessage" and c.params.get("business_connection_id") == BC


def buttons(call) -> list[str]:
    return [b["callback_data"] for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


async def settled(h: Harness, draft_id: int, *states: State, timeout: float = 5.0):
    for _ in range(int(timeout / 0.02)):
        d = h.ledger().get(draft_id)
        if d.state in states:
            return d
        await asyncio.sleep(0.02)
    raise AssertionError(f"draft {draft_id} is {h.ledger().get(draft_id).state}, not {states}")


async def test_a_long_message_full_of_ampersands_never_hides_the_draft(harness):
    async with harness as h:
        await h.connect()
        h.contact("&" * 3000 + " see you at the crag? " + "x" * 1000)
        draft = await h.card()
        card = [c for c in h.calls() if is_card(c)][-1]
        assert not card.failed  # Telegram took it: no broken entity, not too long
        shown = visible(card.params["text"])
        assert draft.candidates[0] in shown and utf16(shown) <= 4096  # the draft whole, with its Send button
        assert f"d:{draft.id}:send:0" in buttons(card)
        assert "see you at the crag?" in shown  # the contact's words shortened in the middle, not cut off


async def test_a_late_answer_after_delivery_is_put_to_the_owner_and_never_resent(harness):
    async with harness as h:
        await h.connect()
        h.contact("are you free tonight?")
        draft = await h.card()
        h.fake.inject("sendMessage", Late(READ_TIMEOUT + 0.4), match=lambda p: "business_connection_id" in p)
        h.tap(draft.id, "send")
        d = await settled(h, draft.id, State.UNSURE)
        assert h.fake.delivered(TOMAS, BC) == [draft.candidates[0]]  # it did arrive, though PTB timed out
        choice = await h.wait(lambda c: is_card(c) and f"d:{draft.id}:arrived:0" in buttons(c))
        assert buttons(choice[-1]) == [f"d:{draft.id}:arrived:0", f"d:{draft.id}:resend:0"]
        h.clock.offset = timedelta(hours=1)
        await h.relay.retry_due()
        await h.quiet(0.3)
        assert len([c for c in h.calls() if to_contact(c)]) == 1  # nothing resent blindly
        h.tap(d.id, "arrived")
        await settled(h, draft.id, State.SENT)
        assert h.fake.delivered(TOMAS, BC) == [draft.candidates[0]]


async def test_a_reset_connection_is_unsure_and_the_owner_may_send_again(harness):
    async with harness as h:
        await h.connect()
        h.contact("lunch?")
        draft = await h.card()
        h.fake.inject("sendMessage", Reset(), match=lambda p: "business_connection_id" in p)
        h.tap(draft.id, "send")
        await settled(h, draft.id, State.UNSURE)
        assert h.fake.delivered(TOMAS, BC) == []
        await h.wait(lambda c: is_card(c) and f"d:{draft.id}:resend:0" in buttons(c))
        h.tap(draft.id, "resend")
        await settled(h, draft.id, State.SENT)
        assert h.fake.delivered(TOMAS, BC) == [draft.candidates[0]]


async def test_an_answer_that_is_not_json_is_unsure_not_stuck_in_flight(harness):
    async with harness as h:
        await h.connect()
        h.contact("lunch?")
        draft = await h.card()
        h.fake.inject("sendMessage", Garbage(), match=lambda p: "business_connection_id" in p)
        h.tap(draft.id, "send")
        d = await settled(h, draft.id, State.UNSURE)
        assert not d.inflight and h.fake.delivered(TOMAS, BC) == [draft.candidates[0]]


async def test_a_conflict_is_retried_and_a_flood_wait_respected(harness):
    async with harness as h:
        await h.connect()
        h.contact("ping")
        draft = await h.card()
        h.fake.inject("sendMessage", Error(409), match=lambda p: "business_connection_id" in p)
        h.fake.inject("sendMessage", Error(429, retry_after=40), match=lambda p: "business_connection_id" in p)
        h.tap(draft.id, "send")
        await h.wait(lambda c: to_contact(c) and c.failed)
        await h.quiet(0.2)
        d = h.ledger().get(draft.id)
        assert d.state == State.SENDING and d.failures == 1 and d.next_attempt_at is not None
        h.clock.offset = timedelta(seconds=6)
        await h.relay.retry_due()  # the 409's retry: now Telegram asks to wait 40 s
        d = h.ledger().get(draft.id)
        assert d.failures == 2 and d.next_attempt_at - h.clock() >= timedelta(seconds=39)
        h.clock.offset = timedelta(seconds=30)
        await h.relay.retry_due()
        assert h.fake.delivered(TOMAS, BC) == []  # the flood wait is not over
        h.clock.offset = timedelta(seconds=47)
        await h.relay.retry_due()
        assert h.ledger().get(draft.id).state == State.SENT and h.fake.delivered(TOMAS, BC) == [draft.candidates[0]]


async def test_a_card_that_failed_to_show_is_shown_again(harness):
    async with harness as h:
        await h.connect()
        h.fake.inject("sendMessage", Error(429, retry_after=8), match=lambda p: "reply_markup" in p)
        h.fake.inject("sendMessage", Error(502), match=lambda p: "reply_markup" in p)
        h.contact("dinner friday?")
        await h.wait(lambda c: is_card(c) and c.failed)
        await h.quiet(0.2)
        (d,) = h.ledger().pending()
        assert d.card is None
        h.clock.offset = timedelta(seconds=6)
        await h.relay.retry_due()
        assert len([c for c in h.calls() if is_card(c)]) == 1  # Telegram asked for 8 s
        h.clock.offset = timedelta(seconds=9)
        await h.relay.retry_due()  # the 502: the next try backs off further
        h.clock.offset = timedelta(seconds=30)
        await h.relay.retry_due()
        d = h.ledger().get(d.id)
        assert d.card is not None and [c.failed for c in h.calls() if is_card(c)] == [True, True, False]


async def test_an_owner_who_never_pressed_start_gets_the_cards_once_they_do(harness, caplog):
    async with harness as h:
        await h.connect()
        h.fake.inject("sendMessage", Error(403, "Forbidden: bot can't initiate conversation with a user"),
                      match=lambda p: "reply_markup" in p)
        with caplog.at_level(logging.ERROR, logger="bot.relay"):
            h.contact("dinner friday?")
            await h.wait(lambda c: is_card(c) and c.failed)
            await h.quiet(0.2)
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "Start" in r.getMessage()]
        h.push(U.command(OWNER, "/start", 77))
        d = await h.card()
        assert d.card is not None and [c.failed for c in h.calls() if is_card(c)] == [True, False]


async def test_a_partly_sent_burst_sends_only_the_rest(harness):
    async with harness as h:
        await h.connect()
        h.contact("plans?")
        draft = await h.card()
        h.tap(draft.id, "edit")
        await h.wait(lambda c: c.method == "editMessageText" and "send me the text" in c.params["text"])
        h.fake.inject("sendMessage", Error(500), match=lambda p: p.get("text") == "see you at 8")
        h.push(U.private_message(OWNER, "yes!\nsee you at 8\nbring the rope", 55))
        await h.wait(lambda c: to_contact(c) and c.failed)
        await h.quiet(0.2)
        d = h.ledger().get(draft.id)
        assert d.state == State.SENDING and len(d.sent_ids) == 1
        owner_lines = [m.text for m in h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) if m.from_owner]
        assert owner_lines == ["yes!"]  # what arrived is recorded as sent
        h.clock.offset = timedelta(seconds=6)
        await h.relay.retry_due()
        assert h.fake.delivered(TOMAS, BC) == ["yes!", "see you at 8", "bring the rope"]
        assert h.ledger().get(draft.id).state == State.EDITED_SENT


async def test_deletes_from_another_accounts_connection_are_ignored(harness):
    async with harness as h:
        await h.connect()
        mid = h.contact("meet at 7?")
        await h.wait(is_card)
        h.push(U.business_connection("BC-other", 5550199999))
        h.push(U.deleted_business_messages("BC-other", TOMAS, [mid]))
        await h.quiet(0.3)
        assert [m.msg_id for m in h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS)))] == [str(mid)]


async def test_a_scheduled_message_is_a_reply_by_hand_and_an_away_message_is_not(harness, fake):
    async with harness as h:
        await h.connect()
        h.contact("are we still on for sunday?")
        draft = await h.card()
        away = U.business_message(BC, TOMAS, OWNER, "I'm away until monday", 301, first_name=U.OWNER_NAME)
        away["business_message"]["is_from_offline"] = True  # right after the contact's message: an away message
        h.push(away)
        await h.quiet(0.3)
        assert h.ledger().get(draft.id).state == State.PENDING
        later = U.business_message(BC, TOMAS, OWNER, "yes, 9 at the parking", 302, first_name=U.OWNER_NAME,
                                   date=int(h.clock().timestamp()) + 600)
        later["business_message"]["is_from_offline"] = True  # scheduled by the owner, ten minutes on
        h.push(later)
        d = await settled(h, draft.id, State.SUPERSEDED)
        assert d.final_text == "yes, 9 at the parking"


async def test_the_card_says_the_day_when_the_draft_expires_tomorrow(harness):
    async with harness as h:
        await h.connect()
        now = h.clock()
        h.clock.offset = now.replace(hour=12, minute=0) - now  # noon: the draft expires tomorrow at 11:45
        h.push(U.business_message(BC, TOMAS, TOMAS, "lunch tomorrow?", 120, date=int(h.clock().timestamp())))
        draft = await h.card()
        text = [c for c in h.calls() if is_card(c)][-1].params["text"]
        assert f"expires {draft.expires_at:%a %-d %b} 11:45 UTC" in text


async def test_forget_tells_the_contacts_open_cards_they_are_gone(harness):
    async with harness as h:
        await h.connect()
        h.contact("hi!")
        draft = await h.card()
        h.push(U.command(OWNER, "/forget Tomas", 78))
        edit = await h.wait(lambda c: c.method == "editMessageText" and c.params["text"] == FORGOTTEN)
        assert edit[0].params["message_id"] == int(draft.card[1]) and "reply_markup" not in edit[0].params
        h.contact("hello again")
        fresh = await h.card()
        assert fresh.id > draft.id
        h.tap(draft.id, "send", card=int(draft.card[1]))
        await h.wait(lambda c: c.method == "answerCallbackQuery" and "forgotten" in c.params.get("text", ""))
        await h.quiet(0.2)
        assert h.fake.delivered(TOMAS, BC) == []


async def test_routine_job_runs_stay_out_of_the_log(harness, caplog):
    with caplog.at_level(logging.INFO):
        async with harness as h:
            await h.connect()
            await asyncio.sleep(5.5)  # the retry job has run at least once
    noise = [r for r in caplog.records if r.name.startswith("apscheduler.executors")]
    assert noise == []


async def test_telegram_failing_at_start_is_waited_out(fake, home):
    fake.inject("getMe", Error(502))
    fake.inject("getMe", Reset())
    async with Harness(fake, home, QuickBackend(), Clock(), read_timeout_seconds=READ_TIMEOUT) as h:
        await h.connect()
    assert [c.failed for c in fake.calls_of("getMe")][:3] == [True, True, False]


async def test_telegram_down_for_good_at_start_is_one_clear_error(fake, home):
    from bot.telegram_relay import start
    from twin.errors import ServingUnavailable

    fake.inject("getMe", Error(502), times=3)
    app = fake.application_builder().build()
    with pytest.raises(ServingUnavailable, match="Telegram did not answer after 3 tries"):
        await start(app, tries=3, first_wait_s=0.01)
    assert len(fake.calls_of("getMe")) == 3
