"""Drafts without Telegram Business, end to end: the owner forwards messages (real forward_origin JSON: a user, a
hidden user, a chat) or pastes them after /for, through `twin run`'s composition root, a real python-telegram-bot
Application and the strict fake Bot API (tests/fake_telegram.py: it refuses Copy buttons over 256 characters,
buttons without text, and tg://user links that a user's privacy forbids). Each test asserts the card, its
buttons, what was stored and the outcome recorded; nothing is ever sent but to the owner.
"""

from __future__ import annotations

import html
import time

import pytest

import telegram_updates as U
from bot.cards import REFUSAL
from bot.drafts import COPY, State
from helpers import QuickBackend, tiny_tokenizer
from relay_harness import OWNER, TOMAS, Clock, Harness
from twin.chat import Chat, Message, telegram_user, utc
from twin.paths import Home
from twin.store import ChatKey, Store

ANA, SAM_A, SAM_B, STRANGER = 5550100103, 5550100104, 5550100105, 5550100999
GROUP_ID = -1001234567890  # the Bot API's id of the supergroup Telegram Desktop exported as 1234567890


def seed(home: Home) -> None:
    """An imported history: Tomas, Ana Lima and two people called Sam on Telegram, a group, Joana on WhatsApp."""
    t0 = 1_700_000_000
    with Store.open(home.db) as store, store.transaction():
        store.set_owner("telegram", telegram_user(OWNER), "Mira")
        store.set_owner("whatsapp", "Mira", "Mira")
        people = [("telegram", str(TOMAS), telegram_user(TOMAS), "Tomas"),
                  ("telegram", str(ANA), telegram_user(ANA), "Ana Lima"),
                  ("telegram", str(SAM_A), telegram_user(SAM_A), "Sam"),
                  ("telegram", str(SAM_B), telegram_user(SAM_B), "Sam"),
                  ("whatsapp", "Joana", "Joana", "Joana")]
        for i, (platform, chat_id, sender, name) in enumerate(people):
            store.upsert_chat(Chat(platform, chat_id, "personal", name))
            store.upsert_names(platform, {(sender, name): (t0, t0 + 60)})
            owner = telegram_user(OWNER) if platform == "telegram" else "Mira"
            store.insert_messages([
                Message(platform, chat_id, f"{i}-1", sender, name, utc(t0 + i), "hey, long time!"),
                Message(platform, chat_id, f"{i}-2", owner, "Mira", utc(t0 + i + 30), "hi! all good?"),
            ])
        store.upsert_chat(Chat("telegram", "1234567890", "group", "Crag crew"))
        store.upsert_names("telegram", {("user5550100200", "Lea"): (t0, t0)})
        store.insert_messages([Message("telegram", "1234567890", "g-1", "user5550100200", "Lea", utc(t0),
                                       "who is in for sunday?")])


class ScriptedBackend(QuickBackend):
    """Replies given by the test, the same for every call."""

    def __init__(self, replies: list[str]):
        super().__init__()
        self.replies = replies

    def complete(self, prompt_ids, *, n, max_new_tokens, temperature, top_p, seed, adapter, until=None):
        self.calls.append(dict(n=n, adapter=adapter, seed=seed, prompt_tokens=len(prompt_ids)))
        return self.replies[:n]


@pytest.fixture
def home(tmp_path):
    home = Home(tmp_path / "home").ensure()
    seed(home)
    return home


@pytest.fixture
def harness(fake, home):
    return Harness(fake, home, QuickBackend(), Clock())


def ago(seconds: int = 60) -> int:
    return int(time.time()) - seconds


def buttons(call) -> list[list[dict]]:
    return call.params.get("reply_markup", {}).get("inline_keyboard", [])


def is_copy_card(c) -> bool:
    return c.method == "sendMessage" and c.params["chat_id"] == OWNER and "reply to copy" in c.params["text"] \
        and not c.failed


def expected_keyboard(d, url: str | None = None) -> list[list[dict]]:
    rows = [[{"text": f"📋 Copy {i + 1}", "copy_text": {"text": c}},
             {"text": f"✓ Used {i + 1}", "callback_data": f"d:{d.id}:copied:{i}"}]
            for i, c in enumerate(d.candidates)]
    rows.append([{"text": "Next candidate", "callback_data": f"d:{d.id}:next:0"},
                 {"text": "Discard", "callback_data": f"d:{d.id}:discard:0"}])
    return rows + ([[{"text": "Open chat with Tomas", "url": url}]] if url else [])


def only_to_owner(h) -> None:
    """Nothing went anywhere but the owner's chat with the bot, and nothing as the owner."""
    sends = h.calls("sendMessage")
    assert sends and all(c.params["chat_id"] == OWNER and "business_connection_id" not in c.params for c in sends)


async def draft_of(h, chat_id: str):
    for _ in range(200):
        found = [d for d in h.ledger().pending() + list(h.ledger().all()) if d.chat.chat_id == chat_id]
        if found and found[-1].card is not None:
            return h.ledger().get(found[-1].id)
        await h.quiet(0.01)
    raise AssertionError(f"no draft with a card for chat {chat_id}")


def outcome(h, draft_id: int):
    return next(o for o in h.ledger().outcomes() if o.draft_id == draft_id)


async def test_forward_from_a_user_is_matched_by_id_copied_then_reported(harness):
    async with harness as h:
        h.push(U.forwarded_message(OWNER, "are you coming to the crag on saturday?", 31,
                                   U.origin_user(TOMAS, "Tomas", ago())))
        (card,) = await h.wait(is_copy_card)
        d = await draft_of(h, str(TOMAS))
        assert (d.origin, d.state, d.chat.connection_id, len(d.candidates)) == (COPY, State.PENDING, None, 2)
        assert card.params["parse_mode"] == "HTML"
        assert card.params["text"].startswith(
            "<b>Tomas</b> · Telegram · reply to copy\n› are you coming to the crag")
        for i, c in enumerate(d.candidates):
            assert f"<b>{i + 1}.</b> {html.escape(c)}" in card.params["text"]
        assert buttons(card) == expected_keyboard(d, f"tg://user?id={TOMAS}")
        # Stored as a live message of Tomas's own chat (the imported one), under his id and the original date.
        (stored,) = [m for m in h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) if m.msg_id in d.answers]
        assert (stored.sender_id, stored.text, stored.from_owner) == (telegram_user(TOMAS),
                                                                     "are you coming to the crag on saturday?", False)
        assert h.relay.store.conn.execute("SELECT source FROM messages WHERE msg_id = ?", d.answers).fetchone() == (
            "live",)

        h.push(U.callback_query(OWNER, f"d:{d.id}:copied:1", OWNER, int(d.card[1])))
        (answer,) = await h.wait("answerCallbackQuery")
        assert answer.params["text"] == "Noted: you used reply 2."
        (edit,) = await h.wait("editMessageText")
        assert "📋 You copied reply 2." in edit.params["text"]
        assert [b["text"] for row in buttons(edit) for b in row] == [
            "📋 Copy 2", "✓ Used 2", "Open chat with Tomas"]  # what was passed over is off the card
        d = h.ledger().get(d.id)
        assert (d.state, d.shown, d.final_text) == (State.COPIED, 1, d.candidates[1])
        o = outcome(h, d.id)
        assert (o.kind, o.shown, o.passed_over, o.origin) == ("copied", d.candidates[1], (d.candidates[0],), COPY)

        # The owner forwards the reply they sent from that chat: it is what really went out, word for word.
        h.push(U.forwarded_message(OWNER, d.candidates[1], 32, U.origin_user(OWNER, "Mira", ago(5))))
        await h.wait(lambda c: c.method == "editMessageText" and "✅ You sent reply 2" in c.params["text"])
        d = h.ledger().get(d.id)
        assert (d.state, d.final_text, outcome(h, d.id).kind) == (State.SENT, d.candidates[1], "sent")
        mine = [m for m in h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) if m.from_owner]
        assert mine[-1].text == d.candidates[1]
        assert [e[1] for e in h.ledger().events(d.id)] == ["create", "copied", "reported"]
        only_to_owner(h)

        # /forget removes what was forwarded with the rest of the chat.
        h.push(U.command(OWNER, "/forget Tomas", 33))
        await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Forgotten"))
        assert h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) == []


async def test_a_burst_of_forwards_gets_one_card_and_a_business_connection_keeps_its_flow(harness):
    async with harness as h:
        await h.connect()
        h.fake.clear()
        texts = ["hey!", "are you free tonight?", "climbing at 8?"]
        for i, text in enumerate(texts):
            h.push(U.forwarded_message(OWNER, text, 40 + i, U.origin_user(TOMAS, "Tomas", ago(60 - i))))
        (card,) = await h.wait(is_copy_card)
        await h.quiet()
        assert len([c for c in h.calls("sendMessage") if is_copy_card(c)]) == 1
        d = await draft_of(h, str(TOMAS))
        assert h.relay.store.message_texts(ChatKey("telegram", str(TOMAS)), d.answers) == texts
        assert "› hey!\n› are you free tonight?\n› climbing at 8?" in card.params["text"]

        # Their own words, not a candidate, without a copy first: answered by hand.
        h.push(U.forwarded_message(OWNER, "sorry, working late", 45, U.origin_user(OWNER, "Mira", ago(5))))
        await h.wait(lambda c: c.method == "editMessageText" and "You answered by hand" in c.params["text"])
        d = h.ledger().get(d.id)
        assert (d.state, d.final_text, outcome(h, d.id).kind) == (State.SUPERSEDED, "sorry, working late", "written")

        # A live business chat keeps today's flow: a card with Send.
        h.contact("still on for tomorrow?")
        business = await h.card()
        assert business.origin == "telegram" and business.chat.connection_id is not None
        kinds = [b.get("callback_data", "").split(":")[2] for row in buttons(h.calls("sendMessage")[-1])
                 for b in row]
        assert kinds == ["send", "edit", "next", "discard", "noreply"]
        assert h.business_sends() == []


async def test_a_copy_then_their_own_version_is_an_edit(harness):
    async with harness as h:
        h.push(U.forwarded_message(OWNER, "dinner friday?", 50, U.origin_user(TOMAS, "Tomas", ago())))
        await h.wait(is_copy_card)
        d = await draft_of(h, str(TOMAS))
        h.push(U.callback_query(OWNER, f"d:{d.id}:copied:0", OWNER, int(d.card[1])))
        await h.wait("answerCallbackQuery")
        h.push(U.forwarded_message(OWNER, d.candidates[0] + " can I bring Ana?", 51,
                                   U.origin_user(OWNER, "Mira", ago(5))))
        await h.wait(lambda c: c.method == "editMessageText" and "your own version" in c.params["text"])
        d = h.ledger().get(d.id)
        o = outcome(h, d.id)
        assert (d.state, o.kind, o.final_text) == (State.EDITED_SENT, "edited", d.candidates[0] + " can I bring Ana?")


async def test_hidden_user_is_matched_by_name_and_a_refused_link_leaves_the_card_without_it(harness):
    async with harness as h:
        h.fake.privacy_restricted.add(ANA)  # hidden when forwarded: she does not allow links to her account
        h.push(U.forwarded_message(OWNER, "can you send me the topo?", 60, U.origin_hidden_user("Ana Lima", ago())))
        await h.wait(is_copy_card)
        d = await draft_of(h, str(ANA))
        refused, shown = [c for c in h.calls("sendMessage")]
        assert refused.failed and any(b.get("url") == f"tg://user?id={ANA}" for row in buttons(refused) for b in row)
        assert not shown.failed and not any("url" in b for row in buttons(shown) for b in row)
        assert shown.params["text"].startswith("<b>Ana Lima</b> · Telegram")
        (stored,) = [m for m in h.relay.store.chat_messages(ChatKey("telegram", str(ANA))) if m.msg_id in d.answers]
        assert (stored.sender_id, stored.text) == (telegram_user(ANA), "can you send me the topo?")


async def test_an_ambiguous_name_asks_with_buttons_and_the_pick_drafts(harness):
    async with harness as h:
        h.push(U.forwarded_message(OWNER, "is the gym open?", 70, U.origin_hidden_user("Sam", ago())))
        (question,) = await h.wait(
            lambda c: c.method == "sendMessage" and "Several chats match Sam" in c.params["text"])
        assert buttons(question) == [[{"text": "Sam · Telegram", "callback_data": "c:1:0"}],
                                     [{"text": "Sam · Telegram", "callback_data": "c:1:1"}]]
        assert h.ledger().pending() == []
        assert h.relay.store.chat_messages(ChatKey("telegram", str(SAM_B)))[-1].text == "hi! all good?"  # not yet
        h.push(U.callback_query(OWNER, "c:1:1", OWNER, int(question.params.get("message_id", 1000))))
        await h.wait(is_copy_card)
        d = await draft_of(h, str(SAM_B))
        assert h.relay.store.message_texts(ChatKey("telegram", str(SAM_B)), d.answers) == ["is the gym open?"]
        assert [m.text for m in h.relay.store.chat_messages(ChatKey("telegram", str(SAM_A)))] == [
            "hey, long time!", "hi! all good?"]
        assert (await h.wait("answerCallbackQuery"))[0].params["text"] == "Drafting."
        h.push(U.callback_query(OWNER, "c:1:0", OWNER, 1000))  # the question is answered: its buttons are done
        await h.wait("answerCallbackQuery", 2)
        assert h.calls("answerCallbackQuery")[1].params["text"] == "This question is no longer open."


async def test_a_forward_from_a_chat_is_matched_to_the_exported_group(harness):
    async with harness as h:
        h.push(U.forwarded_message(OWNER, "meeting at the parking at 9", 80,
                                   U.origin_chat(GROUP_ID, "Crag crew", ago())))
        (card,) = await h.wait(is_copy_card)
        d = await draft_of(h, "1234567890")
        assert card.params["text"].startswith("<b>Crag crew</b> · Telegram")
        assert not any("url" in b for row in buttons(card) for b in row)  # no person to open a chat with
        assert d.contact_id == f"chat{GROUP_ID}"
        assert h.relay.store.message_texts(ChatKey("telegram", "1234567890"), d.answers) == [
            "meeting at the parking at 9"]


async def test_paste_for_a_whatsapp_contact(harness):
    async with harness as h:
        h.push(U.command(OWNER, "/for Joana", 90))
        await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Paste Joana · WhatsApp"))
        h.push(U.private_message(OWNER, "são 8h amanhã?", 91))
        h.push(U.private_message(OWNER, "levo a corda", 92))
        (card,) = await h.wait(is_copy_card)
        d = await draft_of(h, "Joana")
        assert card.params["text"].startswith(
            "<b>Joana</b> · WhatsApp · reply to copy\n› são 8h amanhã?\n› levo a corda")
        assert (d.chat.platform, d.contact_id, d.origin) == ("whatsapp", "Joana", COPY)
        assert not any("url" in b for row in buttons(card) for b in row)
        stored = h.relay.store.chat_messages(ChatKey("whatsapp", "Joana"))
        assert [(m.sender_id, m.text) for m in stored[-2:]] == [
            ("Joana", "são 8h amanhã?"), ("Joana", "levo a corda")]
        # One paste burst per /for: a later text is not Joana's.
        h.push(U.private_message(OWNER, "hello?", 93))
        await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Nothing is being edited"))

        h.push(U.command(OWNER, "/for", 94))
        (listing,) = await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Whose"))
        assert [row[0]["text"] for row in buttons(listing)][0] == "Joana · WhatsApp"  # the latest chat first
        assert len(buttons(listing)) == 6
        h.push(U.callback_query(OWNER, buttons(listing)[1][0]["callback_data"], OWNER, 1000))  # Tomas, say
        await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Paste "))
        h.push(U.command(OWNER, "/cancel", 95))
        await h.wait(lambda c: c.method == "sendMessage" and c.params["text"] == "Paste cancelled.")
        h.push(U.private_message(OWNER, "not for anyone", 96))
        await h.wait(lambda c: c.method == "sendMessage" and c.params["text"].startswith("Nothing is being edited"),
                     2)
        assert len(list(h.ledger().all())) == 1


async def test_a_candidate_over_256_characters_is_a_block_to_tap_not_a_copy_button(fake, home):
    # Three messages of a burst (drafting keeps lines under 160 characters): 300 characters in all.
    long = ("sounds great! I can bring the long rope, twelve quickdraws, my old chalk bag and the first aid kit\n"
            "Ana said she might come too if her knee is better, so maybe we take two cars and meet at the bakery\n"
            "do you still have the guidebook with the new sector in it? see you at 8 at the bridge")
    assert len(long) > 256
    async with Harness(fake, home, ScriptedBackend([long, "see you at 8!"]), Clock()) as h:
        h.push(U.forwarded_message(OWNER, "need anything for saturday?", 100, U.origin_user(TOMAS, "Tomas", ago())))
        (card,) = await h.wait(is_copy_card)
        d = await draft_of(h, str(TOMAS))
        assert d.candidates == (long, "see you at 8!")
        assert f"<b>1.</b> (tap the text to copy it)\n<pre>{html.escape(long)}</pre>" in card.params["text"]
        assert buttons(card)[:2] == [
            [{"text": "✓ Used 1", "callback_data": f"d:{d.id}:copied:0"}],
            [{"text": "📋 Copy 2", "copy_text": {"text": "see you at 8!"}},
             {"text": "✓ Used 2", "callback_data": f"d:{d.id}:copied:1"}]]


async def test_a_strangers_forward_gets_the_refusal_and_nothing_else(harness):
    async with harness as h:
        before = h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS)))
        h.fake.clear()
        h.push(U.forwarded_message(STRANGER, "hi", 110, U.origin_user(TOMAS, "Tomas", ago()), first_name="Eve"))
        h.push(U.forwarded_message(STRANGER, "hi again", 111, U.origin_user(TOMAS, "Tomas", ago()),
                                   first_name="Eve"))
        h.push(U.command(STRANGER, "/for Joana", 112))
        await h.wait("sendMessage")
        await h.quiet(0.5)
        assert [(c.method, c.params) for c in h.calls()] == [("sendMessage", {"chat_id": STRANGER, "text": REFUSAL})]
        assert h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) == before
        assert list(h.ledger().all()) == []


async def test_an_old_forward_with_the_owners_side_is_the_conversation_drafted_from(harness):
    async with harness as h:
        # Hours ago (longer than a session gap): the draft still answers it, and Regenerate too.
        h.push(U.forwarded_message(OWNER, "did you see the new boulder problem?", 120,
                                   U.origin_user(OWNER, "Mira", ago(3 * 3600 + 60))))
        h.push(U.forwarded_message(OWNER, "yes!! the crimpy one? want to try it thursday", 121,
                                   U.origin_user(TOMAS, "Tomas", ago(3 * 3600))))
        await h.wait(is_copy_card)
        d = await draft_of(h, str(TOMAS))
        prompt = tiny_tokenizer().decode(list(d.prompt))
        assert "did you see the new boulder problem?" in prompt and "want to try it thursday" in prompt
        assert d.state == State.PENDING  # the owner's message came first: their side of the talk, not a reply
        mine = [m for m in h.relay.store.chat_messages(ChatKey("telegram", str(TOMAS))) if m.from_owner]
        assert mine[-1].text == "did you see the new boulder problem?"
        h.push(U.callback_query(OWNER, f"d:{d.id}:next:0", OWNER, int(d.card[1])))
        h.push(U.callback_query(OWNER, f"d:{d.id}:next:1", OWNER, int(d.card[1])))
        await h.wait(lambda c: c.method == "editMessageText" and "<b>3.</b>" in c.params["text"])
        d = h.ledger().get(d.id)
        assert d.regenerations == 1 and len(d.candidates) == 4
        assert h.backend.calls[-1]["prompt_tokens"] == h.backend.calls[0]["prompt_tokens"]  # the same conversation


async def test_someone_not_in_the_history_gets_a_chat_of_their_own_and_an_unknown_name_a_question(harness):
    async with harness as h:
        NEW = 5550100333
        h.push(U.forwarded_message(OWNER, "hi, I'm Leo from the climbing club", 130, U.origin_user(NEW, "Leo", ago())))
        (card,) = await h.wait(is_copy_card)
        d = await draft_of(h, str(NEW))
        assert h.relay.store.chat(ChatKey("telegram", str(NEW))) == Chat("telegram", str(NEW), "personal", "Leo")
        assert card.params["text"].startswith("<b>Leo</b> · Telegram")
        assert buttons(card)[-1] == [{"text": "Open chat with Leo", "url": f"tg://user?id={NEW}"}]
        assert d.contact_id == telegram_user(NEW)

        h.push(U.forwarded_message(OWNER, "are you Mira?", 131, U.origin_hidden_user("Zoe Q", ago())))
        (question,) = await h.wait(lambda c: c.method == "sendMessage" and "no chat with Zoe Q" in c.params["text"])
        assert [row[0]["text"] for row in buttons(question)][:2] == ["Leo · Telegram", "Joana · WhatsApp"]
        assert all(len(row[0]["callback_data"].encode()) <= 64 for row in buttons(question))
        assert len(list(h.ledger().all())) == 1  # nothing drafted or stored until the owner says whose it is
