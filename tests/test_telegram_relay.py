"""The Telegram relay end to end: `twin run`'s composition root with a real python-telegram-bot Application,
polling a fake Bot API server on 127.0.0.1 (tests/fake_telegram.py) fed with real update JSON, drafting with a
fast fake model backend. Each test asserts the exact Bot API calls made: the card and its keyboard to the
owner, `sendMessage` with `business_connection_id` only after approval, nothing for discard, expiry or a
closed window.
"""

from __future__ import annotations

import asyncio
import html
from datetime import timedelta

import pytest

import telegram_updates as U
from bot.drafts import State
from helpers import QuickBackend
from relay_harness import BC, OWNER, TOMAS, Clock, Harness, is_card
from twin.store import ChatKey

@pytest.fixture
def harness(fake, home):
    return Harness(fake, home, QuickBackend(), Clock())


async def test_burst_gets_one_card_and_sends_only_after_approval(harness):
    async with harness as h:
        await h.connect()
        h.fake.clear()
        ids = [h.contact(t) for t in ("hey!", "are you free tonight?", "climbing at 8?")]
        cards = await h.wait(is_card)
        await h.quiet()
        assert [c.method for c in h.calls()] == ["sendMessage"]  # one card for the burst, nothing else
        card = cards[0].params
        assert card["parse_mode"] == "HTML" and "climbing at 8?" in card["text"] and "Tomas" in card["text"]
        (draft,) = h.ledger().pending()
        assert draft.answers == tuple(map(str, ids)) and draft.reply_to == str(ids[-1])
        buttons = [b["callback_data"] for row in card["reply_markup"]["inline_keyboard"] for b in row]
        assert buttons == [f"d:{draft.id}:{a}:0" for a in ("send", "edit", "next", "discard", "noreply")]
        assert h.business_sends() == []

        h.tap(draft.id, "send")
        (sent,) = await h.wait(lambda c: c.method == "sendMessage" and c.params.get("business_connection_id"))
        assert sent.params == {"chat_id": TOMAS, "text": draft.candidates[0], "business_connection_id": BC}
        await h.wait(lambda c: c.method == "editMessageText" and "Sent" in c.params["text"])
        answers = await h.wait("answerCallbackQuery")
        assert answers[0].params["text"] == "Sending."
        d = h.ledger().get(draft.id)
        assert d.state == State.SENT and d.sent_ids == ("1000",) or d.state == State.SENT
        # The reply is the owner's turn in the stored conversation from now on.
        texts = [m for m in h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) if m.from_owner]
        assert [m.text for m in texts] == [draft.candidates[0]]

        h.tap(draft.id, "send")  # a double tap sends once
        await h.wait("answerCallbackQuery", 2)
        await h.quiet(0.2)
        assert len(h.business_sends()) == 1
        assert h.calls("answerCallbackQuery")[1].params["text"] == "Already sent."


async def test_edit_sends_the_owners_text(harness):
    async with harness as h:
        await h.connect()
        h.contact("want to go to the crag on sunday?")
        draft = await h.card()
        h.tap(draft.id, "edit")
        await h.wait(lambda c: c.method == "editMessageText" and "send me the text" in c.params["text"])
        assert h.business_sends() == []
        h.push(U.private_message(OWNER, "sunday works, 9 at the parking?", 55))
        (sent,) = await h.wait(lambda c: c.method == "sendMessage" and c.params.get("business_connection_id"))
        assert sent.params["text"] == "sunday works, 9 at the parking?" and sent.params["chat_id"] == TOMAS
        await h.wait(lambda c: c.method == "editMessageText" and "Sent (edited)" in c.params["text"])
        d = h.ledger().get(draft.id)
        assert (d.state, d.final_text, d.edited) == (State.EDITED_SENT, "sunday works, 9 at the parking?", True)


async def test_next_candidate_then_regenerate_then_discard_sends_nothing(harness):
    async with harness as h:
        await h.connect()
        h.contact("did you book the hut?")
        draft = await h.card()
        h.tap(draft.id, "next")
        edit = (await h.wait("editMessageText"))[0]
        assert "Draft 2/2" in edit.params["text"] and html.escape(draft.candidates[1]) in edit.params["text"]
        h.tap(draft.id, "next")  # no candidates left: twin drafts more
        await h.wait(lambda c: c.method == "editMessageText" and "Draft 3/" in c.params["text"])
        d = h.ledger().get(draft.id)
        assert d.regenerations == 1 and d.shown == 2 and len(set(d.candidates)) == len(d.candidates)
        h.tap(draft.id, "discard")
        await h.wait(lambda c: c.method == "editMessageText" and "Discarded" in c.params["text"])
        last = h.calls("editMessageText")[-1].params
        assert "reply_markup" not in last  # the buttons are gone
        assert h.ledger().get(draft.id).state == State.DISCARDED
        assert h.business_sends() == []


async def test_owner_answering_by_hand_supersedes_the_draft(harness):
    async with harness as h:
        await h.connect()
        h.contact("are we still on?")
        draft = await h.card()
        h.owner_writes("yes, see you there")
        await h.wait(lambda c: c.method == "editMessageText" and "by hand" in c.params["text"])
        d = h.ledger().get(draft.id)
        assert (d.state, d.final_text) == (State.SUPERSEDED, "yes, see you there")
        h.tap(draft.id, "send")
        await h.wait("answerCallbackQuery")
        await h.quiet(0.2)
        assert h.business_sends() == []


async def test_echoes_and_offline_replies_are_ignored(harness):
    async with harness as h:
        await h.connect()
        h.fake.clear()
        echo = U.business_message(BC, TOMAS, OWNER, "sent by the bot", 300, first_name=U.OWNER_NAME)
        echo["business_message"]["sender_business_bot"] = dict(h.fake.bot_user)
        h.push(echo)
        away = U.business_message(BC, TOMAS, OWNER, "I'm away until monday", 301, first_name=U.OWNER_NAME)
        away["business_message"]["is_from_offline"] = True
        h.push(away)
        await h.quiet(0.6)
        assert h.calls() == []
        assert h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) == []


async def test_edited_and_deleted_business_messages_update_the_context(harness):
    async with harness as h:
        await h.connect()
        mid = h.contact("meet at 7?")
        await h.wait(is_card)
        h.push(U.edited_business_message(BC, TOMAS, TOMAS, "meet at 8?", mid))
        await h.quiet(0.3)
        key = ChatKey("telegram", str(TOMAS))
        assert [m.text for m in h.relay.store.chat_messages(key)] == ["meet at 8?"]
        h.push(U.deleted_business_messages(BC, TOMAS, [mid]))
        await h.quiet(0.3)
        assert h.relay.store.chat_messages(key) == []


async def test_expired_draft_cannot_be_sent(harness):
    async with harness as h:
        await h.connect()
        h.contact("lunch tomorrow?")
        draft = await h.card()
        assert draft.expires_at - draft.created_at < timedelta(hours=24)
        h.clock.offset = timedelta(hours=24)  # the reply window has closed
        assert await h.relay.expire_due() == 1
        await h.wait(lambda c: c.method == "editMessageText" and "Expired" in c.params["text"])
        h.tap(draft.id, "send")
        (answer,) = await h.wait("answerCallbackQuery")
        assert answer.params["text"] == "Already expired."
        await h.quiet(0.2)
        assert h.business_sends() == []


async def test_tap_after_the_window_closed_expires_instead_of_sending(harness):
    async with harness as h:
        await h.connect()
        h.contact("lunch tomorrow?")
        draft = await h.card()
        h.clock.offset = timedelta(hours=23, minutes=50)  # past the 15-minute margin, before the expiry job
        h.tap(draft.id, "send")
        (answer,) = await h.wait("answerCallbackQuery")
        assert answer.params["text"] == "Too late: this draft expired."
        await h.quiet(0.2)
        assert h.business_sends() == [] and h.ledger().get(draft.id).state == State.EXPIRED


async def test_failed_send_is_retried_with_backoff_and_reported(harness):
    async with harness as h:
        await h.connect()
        h.contact("ping")
        draft = await h.card()
        h.fake.fail_next("sendMessage", 502, "Bad Gateway")
        h.tap(draft.id, "send")
        await h.wait(lambda c: c.method == "sendMessage" and c.failed)
        await h.quiet(0.2)
        d = h.ledger().get(draft.id)
        assert (d.state, d.attempts, d.inflight) == (State.SENDING, 1, False) and d.next_attempt_at is not None
        assert await h.relay.retry_due() == 0  # the backoff is not over yet
        h.clock.offset = timedelta(seconds=6)
        await h.relay.retry_due()
        assert h.ledger().get(draft.id).state == State.SENT
        assert [c.failed for c in h.business_sends()] == [True, False]


async def test_permanent_send_failure_is_reported_once(harness):
    async with harness as h:
        await h.connect()
        h.contact("ping")
        draft = await h.card()
        h.fake.fail_next("sendMessage", 400, "Bad Request: BUSINESS_PEER_INVALID")
        h.tap(draft.id, "send")
        await h.wait(lambda c: c.method == "sendMessage" and "could not be sent" in c.params.get("text", ""))
        assert h.ledger().get(draft.id).state == State.FAILED


async def test_no_send_without_the_reply_right(harness):
    async with harness as h:
        await h.connect(can_reply=False)
        note = [c for c in h.calls("sendMessage") if "Connected" in c.params["text"]][0].params["text"]
        assert "may not reply" in note
        h.contact("hello?")
        draft = await h.card()
        h.tap(draft.id, "send")
        await h.wait(lambda c: c.method == "sendMessage" and "could not be sent" in c.params.get("text", ""))
        assert h.business_sends() == [] and h.ledger().get(draft.id).state == State.FAILED


async def test_strangers_get_one_polite_refusal_and_cannot_press_buttons(harness):
    async with harness as h:
        await h.connect()
        h.contact("hi")
        draft = await h.card()
        h.fake.clear()
        stranger = 5550100999
        h.push(U.private_message(stranger, "/status", 1, first_name="Eve"))
        h.push(U.private_message(stranger, "hello?", 2, first_name="Eve"))
        h.push(U.callback_query(stranger, f"d:{draft.id}:send", stranger, 1000))
        await h.wait("answerCallbackQuery")
        await h.quiet(0.3)
        refusals = [c for c in h.calls("sendMessage") if c.params["chat_id"] == stranger]
        assert len(refusals) == 1 and "private" in refusals[0].params["text"]
        assert h.calls("answerCallbackQuery")[0].params["text"] == "Only the owner can use these buttons."
        assert h.business_sends() == [] and h.ledger().get(draft.id).state == State.PENDING


async def test_owner_commands(harness):
    async with harness as h:
        await h.connect()
        h.fake.clear()
        h.push(U.command(OWNER, "/status", 1))
        status = (await h.wait("sendMessage"))[0].params["text"]
        assert "Connection: connected, may reply" in status and "Pending drafts: 0" in status
        h.push(U.command(OWNER, "/pause", 2))
        await h.wait("sendMessage", 2)
        h.contact("anyone there?")
        await h.quiet(0.5)
        assert not [c for c in h.calls() if is_card(c)]  # paused: stored, not drafted
        h.push(U.command(OWNER, "/resume", 3))
        await h.wait("sendMessage", 3)
        h.push(U.command(OWNER, "/privacy", 4))
        privacy = (await h.wait("sendMessage", 4))[-1].params["text"]
        assert str(h.home.db) in privacy and "never for training" in privacy
        h.push(U.command(OWNER, f"/auto telegram:{TOMAS} on", 5))
        await h.wait(lambda c: c.method == "sendMessage" and "Auto-send on" in c.params["text"])
        h.contact("so, tonight?")
        (sent,) = await h.wait(lambda c: c.method == "sendMessage" and c.params.get("business_connection_id"))
        assert sent.params["chat_id"] == TOMAS  # auto-send: out without a tap, and the owner still sees it
        assert any("(auto)" in c.params["text"] for c in h.calls("sendMessage") if c.params["chat_id"] == OWNER)
        h.push(U.command(OWNER, f"/forget telegram:{TOMAS}", 6))
        gone = await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Forgotten"))
        assert "messages" in gone[0].params["text"]
        assert h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) == []


async def test_restart_keeps_pending_drafts_and_their_buttons(fake, home):
    clock = Clock()
    async with Harness(fake, home, QuickBackend(), clock) as h:
        await h.connect()
        h.contact("still there?")
        draft = await h.card()
    fake.clear()
    async with Harness(fake, home, QuickBackend(), clock) as h:
        await h.quiet(0.3)
        assert not [c for c in h.calls() if is_card(c)]  # no second card for the same burst
        h.tap(draft.id, "send")
        (sent,) = await h.wait(lambda c: c.method == "sendMessage" and c.params.get("business_connection_id"))
        assert sent.params["text"] == draft.candidates[0]


async def test_restart_during_the_settle_delay_still_drafts(fake, home):
    clock = Clock()
    async with Harness(fake, home, QuickBackend(), clock, ) as h:
        await h.connect()
        h.cfg = h.cfg  # same settings
        h.contact("quick question")
        await h.quiet(0.05)  # stored, the settle timer still running
        h.stop.set()
    fake.clear()
    async with Harness(fake, home, QuickBackend(), clock) as h:
        await h.wait(is_card)
        assert len(h.ledger().pending()) == 1


async def test_discord_reply_waits_for_the_owners_approval_in_telegram(harness):
    from bot.drafts import ChatRef
    from serving.drafting import Candidate, Candidates

    async with harness as h:
        await h.connect()
        ref = ChatRef("discord", None, "880001")
        result = Candidates([Candidate("sure, tomorrow", ["sure, tomorrow"]), Candidate("not today", ["not today"])],
                            "base", 120.0, 40)
        waiting = asyncio.create_task(h.relay.approve(ref, "770001", ("990001",), result))
        draft = await h.card()
        assert "Discord" in h.calls("sendMessage")[-1].params["text"]
        h.tap(draft.id, "edit")
        await h.wait(lambda c: c.method == "editMessageText")
        h.push(U.private_message(OWNER, "sure, tomorrow at 6", 66))
        assert await asyncio.wait_for(waiting, 5) == "sure, tomorrow at 6"
        assert h.business_sends() == []  # the Discord bot sends it, not Telegram
        assert h.ledger().get(draft.id).state == State.EDITED_SENT

        waiting = asyncio.create_task(h.relay.approve(ref, "770001", ("990002",), result))
        draft = await h.card()
        h.tap(draft.id, "discard")
        assert await asyncio.wait_for(waiting, 5) is None
