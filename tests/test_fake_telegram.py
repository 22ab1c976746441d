"""Tests of the fake Bot API server and the update builders, with a real python-telegram-bot Application.

They pin down what the relay's tests rely on: updates reach PTB's handlers once each, calls come back with
exactly the values PTB was given, what Telegram refuses is refused with its texts, and each injected fault
surfaces as the PTB exception the relay will meet.

    .venv/bin/pytest tests/test_fake_telegram.py
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import doctest
import threading
import time

import pytest
from telegram import Bot, CopyTextButton, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.error import (BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError,
                            TimedOut)
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, MessageHandler, filters

import fake_telegram
import telegram_html
from fake_telegram import Error, FakeBotAPI, Garbage, Late, Reset, Upload, loopback_request
from telegram_html import refusal
from telegram_updates import (
    BUSINESS_CONNECTION_ID as BC1,
    OWNER_ID,
    TOMAS_ID,
    business_connection,
    business_message,
    callback_query,
    command,
    deleted_business_messages,
    edited_business_message,
    private_message,
)

CARD = InlineKeyboardMarkup([[InlineKeyboardButton("Send", callback_data="d:17:send")]])
READ_TIMEOUT_S = 0.15  # the impatient bot's: it gives up on an answer after this long


@pytest.fixture
def fake():
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
async def bot(fake):
    """A started Bot (no polling) that talks to the fake; the getMe of its start is forgotten."""
    async with Bot(fake.token, base_url=fake.base_url, request=loopback_request(),
                   get_updates_request=loopback_request()) as started:
        fake.clear()
        yield started


@pytest.fixture
async def impatient(fake):
    """A started Bot that gives up on an answer after READ_TIMEOUT_S, for Late answers; its getMe is forgotten."""
    fake.client_read_timeout = READ_TIMEOUT_S  # so that a Late() answers just after the bot gave up
    async with Bot(fake.token, base_url=fake.base_url, request=loopback_request(read_timeout=READ_TIMEOUT_S),
                   get_updates_request=loopback_request()) as started:
        fake.clear()
        yield started


def ptb(description: str) -> str:
    """What PTB makes of an error's description: "Bad Request: " dropped, capitalized (TelegramError.__init__)."""
    return description.removeprefix("Bad Request: ").capitalize()


async def polling_app(
    fake: FakeBotAPI, seen: list[Update], builder: ApplicationBuilder | None = None
) -> Application:
    """A started Application polling the fake; business messages and button presses land in `seen`."""

    async def record(update: Update, context: object) -> None:
        seen.append(update)

    async def press(update: Update, context: object) -> None:
        seen.append(update)
        await update.callback_query.answer("Sent")

    app = (builder or fake.application_builder()).build()
    app.add_handler(MessageHandler(filters.UpdateType.BUSINESS_MESSAGE, record))
    app.add_handler(CallbackQueryHandler(press))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    return app


async def stop(app: Application) -> None:
    await app.updater.stop()
    await app.stop()
    await app.shutdown()


async def until(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_decode_params_and_html_examples():
    assert doctest.testmod(fake_telegram).failed == 0
    assert doctest.testmod(telegram_html).failed == 0


def test_builders_parse_as_ptb_objects():
    bot = Bot(fake_telegram.TOKEN)

    def parse(update: dict) -> Update:
        return Update.de_json({"update_id": 1, **update}, bot)

    connection = parse(business_connection(BC1, OWNER_ID, can_read_messages=True, date=1_760_000_000))
    assert connection.business_connection.id == BC1
    assert connection.business_connection.user.id == OWNER_ID
    assert connection.business_connection.user_chat_id == OWNER_ID
    assert connection.business_connection.is_enabled is True
    assert connection.business_connection.rights.can_reply is True
    assert connection.business_connection.rights.can_read_messages is True
    assert connection.business_connection.rights.can_delete_all_messages is None  # false rights are left out
    assert connection.business_connection.date == dtm.datetime(2025, 10, 9, 8, 53, 20, tzinfo=dtm.UTC)
    off = parse(business_connection(BC1, OWNER_ID, owner_chat_id=777, enabled=False, can_reply=False))
    assert (off.business_connection.is_enabled, off.business_connection.rights.can_reply) == (False, None)
    assert off.business_connection.user_chat_id == 777
    with pytest.raises(TypeError, match="can_fly"):
        business_connection(BC1, OWNER_ID, can_fly=True)

    incoming = parse(business_message(BC1, TOMAS_ID, TOMAS_ID, "free tonight?", 5, reply_to=4)).business_message
    assert (incoming.business_connection_id, incoming.chat_id, incoming.message_id) == (BC1, TOMAS_ID, 5)
    assert (incoming.from_user.id, incoming.from_user.first_name, incoming.text) == (TOMAS_ID, "Tomas", "free tonight?")
    assert incoming.reply_to_message.message_id == 4
    assert incoming.is_from_offline is None and incoming.sender_business_bot is None
    echo = business_message(BC1, TOMAS_ID, OWNER_ID, "yes", 6, is_from_offline=True, sender_business_bot={
        "id": 4242, "is_bot": True, "first_name": "Twin", "username": "twin_test_bot"})
    own = parse(echo).business_message
    assert (own.from_user.id, own.from_user.first_name, own.chat.first_name) == (OWNER_ID, "Mira", "Tomas")
    assert own.is_from_offline is True and own.sender_business_bot.id == 4242

    edited = parse(edited_business_message(BC1, TOMAS_ID, TOMAS_ID, "free tomorrow?", 5, edit_date=1_760_000_060))
    assert edited.edited_business_message.text == "free tomorrow?"
    assert edited.edited_business_message.edit_date.timestamp() == 1_760_000_060

    deleted = parse(deleted_business_messages(BC1, TOMAS_ID, [5, 6])).deleted_business_messages
    assert (deleted.business_connection_id, deleted.chat.id, deleted.message_ids) == (BC1, TOMAS_ID, (5, 6))

    private = parse(private_message(OWNER_ID, "hello", 3)).message
    assert (private.chat.id, private.chat.type, private.from_user.id) == (OWNER_ID, "private", OWNER_ID)
    assert private.text == "hello"
    status = parse(command(OWNER_ID, "/status today", 7)).message
    assert status.parse_entities() == {status.entities[0]: "/status"}
    assert status.entities[0].type == "bot_command"
    with pytest.raises(ValueError, match="starts with '/'"):
        command(OWNER_ID, "status", 7)

    query = parse(callback_query(OWNER_ID, "d:17:send", OWNER_ID, 1000, query_id="4382")).callback_query
    assert (query.id, query.data, query.from_user.id) == ("4382", "d:17:send", OWNER_ID)
    assert (query.message.chat.id, query.message.message_id, query.message.from_user.id) == (OWNER_ID, 1000, 4242)
    assert parse(callback_query(OWNER_ID, "x", OWNER_ID, 1)).callback_query.id.isdigit()


async def test_polling_delivers_updates_once_each_in_order(fake):
    seen: list[Update] = []
    app = await polling_app(fake, seen)
    try:
        ids = [fake.push(business_message(BC1, TOMAS_ID, TOMAS_ID, f"message {n}", 10 + n)) for n in range(3)]
        query_id = fake.push(callback_query(OWNER_ID, "d:17:send", OWNER_ID, 1000, query_id="4382000000000000001"))
        await until(lambda: len(seen) == 4)
        await fake.wait_async("answerCallbackQuery")
    finally:
        await stop(app)

    assert ids + [query_id] == [1, 2, 3, 4]
    assert [u.update_id for u in seen] == [1, 2, 3, 4]
    assert [u.business_message.text for u in seen[:3]] == ["message 0", "message 1", "message 2"]
    assert {u.business_message.business_connection_id for u in seen[:3]} == {BC1}
    assert seen[3].callback_query.data == "d:17:send"
    # A numeric-looking id is a string parameter, and stays one.
    [answer] = fake.calls_of("answerCallbackQuery")
    assert answer.params == {"callback_query_id": "4382000000000000001", "text": "Sent"}
    offsets = [poll.params.get("offset") for poll in fake.polls]
    assert offsets == sorted(offsets) and offsets[-1] == 5  # the last poll, on stop, confirms everything
    assert fake.pending() == []


async def test_get_updates_offset_limit_and_long_poll(fake, bot):
    for n in range(3):
        fake.push(private_message(OWNER_ID, f"m{n}", n))
    assert [u.update_id for u in await bot.get_updates(limit=2)] == [1, 2]
    assert [u.message.text for u in await bot.get_updates(offset=2)] == ["m1", "m2"]
    assert await bot.get_updates(offset=4) == ()
    with pytest.raises(ValueError, match="below the offset"):
        fake.push({"update_id": 2, **private_message(OWNER_ID, "late", 9)})

    threading.Timer(0.05, fake.push, [private_message(OWNER_ID, "wake", 4)]).start()
    started = time.monotonic()
    woken = await bot.get_updates(offset=4, timeout=10)
    assert [u.message.text for u in woken] == ["wake"]
    assert time.monotonic() - started < 0.5  # answered on push, not after the poll's timeout

    started = time.monotonic()
    assert await bot.get_updates(offset=5, timeout=dtm.timedelta(seconds=0.2)) == ()
    assert 0.2 <= time.monotonic() - started < 0.9
    assert fake.calls == []  # polls are kept apart
    assert [p.params for p in fake.polls[-2:]] == [{"offset": 4, "timeout": 10}, {"offset": 5, "timeout": 0.2}]


async def test_allowed_updates_are_sticky_and_drop_pending_updates(fake, bot):
    fake.push(business_message(BC1, TOMAS_ID, TOMAS_ID, "hi", 5))
    fake.push(private_message(OWNER_ID, "/status", 6))
    fake.push({"message_reaction": {"chat": {"id": OWNER_ID, "type": "private"}, "message_id": 6, "date": 0,
                                    "old_reaction": [], "new_reaction": []}})
    assert [u.message.text for u in await bot.get_updates(allowed_updates=["message"])] == ["/status"]
    fake.push(business_message(BC1, TOMAS_ID, TOMAS_ID, "still there?", 7))
    assert await bot.get_updates(offset=3) == ()  # the setting holds until the bot changes it
    fake.push(business_message(BC1, TOMAS_ID, TOMAS_ID, "hello?", 8))
    fake.push({"message_reaction": {"chat": {"id": OWNER_ID, "type": "private"}, "message_id": 6, "date": 0,
                                    "old_reaction": [], "new_reaction": []}})
    # An empty list is Telegram's default: everything but reactions and chat_member.
    assert [u.update_id for u in await bot.get_updates(offset=3, allowed_updates=[])] == [5]

    fake.push(private_message(OWNER_ID, "old news", 9))
    assert await bot.delete_webhook(drop_pending_updates=True) is True
    assert fake.pending() == []


async def test_send_message_params_come_back_exactly(fake, bot):
    fake.push(business_connection(BC1, OWNER_ID))
    fake.push(business_message(BC1, TOMAS_ID, TOMAS_ID, "free tonight?", 5))
    sent = await bot.send_message(
        chat_id=TOMAS_ID, text="123", business_connection_id=BC1, reply_markup=CARD,
        reply_parameters=ReplyParameters(message_id=5), disable_notification=True,
    )

    [call] = fake.calls_of("sendMessage")
    assert call.params == {
        "chat_id": TOMAS_ID,
        "text": "123",
        "business_connection_id": BC1,
        "reply_markup": {"inline_keyboard": [[{"text": "Send", "callback_data": "d:17:send"}]]},
        "reply_parameters": {"message_id": 5},
        "disable_notification": True,
    }
    assert not call.failed
    assert (sent.message_id, sent.chat_id, sent.chat.first_name, sent.text) == (1000, TOMAS_ID, "Tomas", "123")
    assert sent.business_connection_id == BC1
    assert (sent.from_user.id, sent.sender_business_bot.id) == (OWNER_ID, 4242)  # sent as the owner, by the bot
    assert sent.reply_markup == CARD
    assert sent.reply_to_message.text == "free tonight?"

    second = await bot.send_message(TOMAS_ID, "again", business_connection_id=BC1)
    card = await bot.send_message(OWNER_ID, "Draft for Tomas", reply_markup=CARD)
    # Message ids count per chat, and a business chat is apart from the bot's own chat with the same person.
    assert (second.message_id, card.message_id) == (1001, 1000)
    assert (card.from_user.id, card.business_connection_id, card.sender_business_bot) == (4242, None, None)
    with pytest.raises(BadRequest, match="^Message text is empty$"):
        await bot.send_message(OWNER_ID, "")
    with pytest.raises(BadRequest, match="^Text must be non-empty$"):  # tdlib's fix_formatted_text, after the Bot API
        await bot.send_message(OWNER_ID, " \n ")
    with pytest.raises(BadRequest, match="^Message is too long$"):
        await bot.send_message(OWNER_ID, "x" * 4097)


async def test_edits_return_the_edited_message(fake, bot):
    card = await bot.send_message(OWNER_ID, "Draft: see you at 8", reply_markup=CARD)

    edited = await bot.edit_message_text("Sent: see you at 8", chat_id=OWNER_ID, message_id=card.message_id)
    assert (edited.message_id, edited.text, edited.reply_markup) == (card.message_id, "Sent: see you at 8", None)
    assert edited.edit_date is not None
    with pytest.raises(BadRequest, match="^Message is not modified: "):
        await bot.edit_message_text("Sent: see you at 8", chat_id=OWNER_ID, message_id=card.message_id)

    buttons = await bot.edit_message_reply_markup(chat_id=OWNER_ID, message_id=card.message_id, reply_markup=CARD)
    assert (buttons.text, buttons.reply_markup) == ("Sent: see you at 8", CARD)
    unknown = await bot.edit_message_reply_markup(chat_id=OWNER_ID, message_id=77, reply_markup=CARD)
    assert (unknown.message_id, unknown.reply_markup) == (77, CARD)
    assert await bot.edit_message_text("inline", inline_message_id="AAA") is True
    assert [c.failed for c in fake.calls] == [False, False, True, False, False, False]


# RetryAfter reads its own retry_after while it is built, which warns of the change to timedelta in PTB 23.
@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
async def test_failures_surface_as_ptb_errors(fake, bot):
    fake.fail_next("sendMessage", 429, retry_after=3)
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(OWNER_ID, "hi")
    assert flood.value.message == "Flood control exceeded. Retry in 3 seconds"

    fake.fail_next("sendMessage", 400, "Bad Request: BUSINESS_PEER_INVALID", times=2)
    for _ in range(2):
        # PTB drops "Bad Request: " and capitalizes what is left (TelegramError.__init__).
        with pytest.raises(BadRequest, match="^Business_peer_invalid$"):
            await bot.send_message(TOMAS_ID, "hi", business_connection_id=BC1)
    assert (await bot.send_message(OWNER_ID, "hi")).message_id == 1000  # failed sends took no id

    assert [(c.params["chat_id"], c.failed) for c in fake.calls_of("sendMessage")] == [
        (OWNER_ID, True), (TOMAS_ID, True), (TOMAS_ID, True), (OWNER_ID, False)]


async def test_business_connection_lookup(fake, bot):
    fake.push(business_connection(BC1, OWNER_ID, can_read_messages=True))
    connection = await bot.get_business_connection(BC1)
    assert (connection.id, connection.user.id, connection.rights.can_reply, connection.rights.can_read_messages) == (
        BC1, OWNER_ID, True, True)
    with pytest.raises(BadRequest, match="^Business connection not found$"):
        await bot.get_business_connection("BC-unknown")
    assert await bot.read_business_message(BC1, TOMAS_ID, 5) is True
    assert fake.calls_of("readBusinessMessage")[0].params == {
        "business_connection_id": BC1, "chat_id": TOMAS_ID, "message_id": 5}


async def test_multipart_and_other_methods(fake, bot):
    assert await bot.set_chat_photo(OWNER_ID, photo=b"\x89PNG fake") is True
    assert await bot.send_chat_action(TOMAS_ID, "typing", business_connection_id=BC1) is True
    [photo, action] = fake.calls
    assert photo.method == "setChatPhoto" and photo.params["chat_id"] == OWNER_ID
    assert isinstance(photo.params["photo"], Upload) and photo.params["photo"].data == b"\x89PNG fake"
    assert action.params == {"chat_id": TOMAS_ID, "action": "typing", "business_connection_id": BC1}


async def test_wait_reports_the_calls_seen_on_timeout(fake, bot):
    await bot.send_chat_action(OWNER_ID, "typing")
    with pytest.raises(AssertionError) as missing:
        await fake.wait_async("sendMessage", timeout=0.05)
    assert "expected 1 call(s) matching sendMessage within 0.05 s, got 0" in str(missing.value)
    assert "sendChatAction {'chat_id': 5550100001, 'action': 'typing'}" in str(missing.value)
    assert len(fake.wait_for(lambda call: call.params.get("action") == "typing", timeout=0.05)) == 1
    with pytest.raises(AssertionError, match="within 0.05 s"):
        fake.wait_for("sendChatAction", count=2, timeout=0.05)
    fake.clear()
    assert fake.calls == [] and fake.polls == []


async def test_wrong_token_is_unauthorized(fake):
    with pytest.raises(InvalidToken):
        async with Bot("999:WRONG", base_url=fake.base_url, request=loopback_request()):
            pass


async def test_shutdown_is_quick_leaves_no_threads_and_no_token_in_output(capfd):
    seen: list[Update] = []
    with FakeBotAPI() as fake:
        # The plain way, with PTB's default clients, as the relay builds its Application.
        app = await polling_app(fake, seen, Application.builder().token(fake.token).base_url(fake.base_url))
        await until(lambda: len(fake.polls) >= 1)
        started = time.monotonic()
        await stop(app)
        assert time.monotonic() - started < 1.0
    assert {c.method for c in fake.calls} == {"getMe", "deleteWebhook"}
    leftover = [t.name for t in threading.enumerate() if "process_request" in t.name or "serve_forever" in t.name]
    assert leftover == []
    out, err = capfd.readouterr()
    assert fake.token not in out + err


# --- what Telegram refuses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("html", "text", "types"), [
    ("<b>Tomas</b> &amp; <i>Mira</i> &lt;3 &#128512; &#x1F600;", "Tomas & Mira <3 😀 😀", ["bold", "italic"]),
    ("<strong><em>x</em></strong><u>u</u><ins>i</ins><s>s</s><strike>k</strike><del>d</del>", "xuiskd",
     ["bold", "italic", "underline", "underline", "strikethrough", "strikethrough", "strikethrough"]),
    ('<span class="tg-spoiler">a</span><tg-spoiler>b</tg-spoiler>', "ab", ["spoiler", "spoiler"]),
    ('<a href="https://example.org/?a=1&b=2">link</a> <B>loud</B> <b>short close</>', "link loud short close",
     ["text_link", "bold", "bold"]),
    ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍", ["custom_emoji"]),
    ('<pre><code class="language-python">x = 1</code></pre> <code>y</code>', "x = 1 y", ["pre", "code"]),
    ("<blockquote>q</blockquote><blockquote expandable>e</blockquote>", "qe", ["blockquote", "expandable_blockquote"]),
    ("*not bold*", "*not bold*", []),  # sent with parse_mode MarkdownV2 below, which the fake leaves unparsed
])
async def test_html_is_parsed_as_telegram_parses_it(fake, bot, html, text, types):
    mode = "MarkdownV2" if html.startswith("*") else "HTML"
    sent = await bot.send_message(OWNER_ID, html, parse_mode=mode)
    assert sent.text == text
    assert [entity.type for entity in sent.entities] == types
    [call] = fake.calls
    assert call.params["text"] == html and call.delivered


async def test_html_entities_and_languages_come_back(fake, bot):
    sent = await bot.send_message(OWNER_ID, '😀 <a href="https://example.org">Mira</a>', parse_mode="HTML")
    [link] = sent.entities
    assert (link.offset, link.length, link.url) == (3, 4, "https://example.org")  # the emoji counts 2
    assert sent.parse_entities() == {link: "Mira"}
    code = await bot.send_message(OWNER_ID, '<pre><code class="language-python">x</code></pre>', parse_mode="HTML")
    assert (code.entities[0].type, code.entities[0].language) == ("pre", "python")
    edited = await bot.edit_message_text("<i>now</i>", chat_id=OWNER_ID, message_id=sent.message_id,
                                         parse_mode="HTML")
    assert (edited.text, [e.type for e in edited.entities]) == ("now", ["italic"])
    # The same visible text with other entities is a change; the same text and entities are not.
    with pytest.raises(BadRequest, match="^Message is not modified: "):
        await bot.edit_message_text("<em>now</em>", chat_id=OWNER_ID, message_id=sent.message_id, parse_mode="HTML")
    assert (await bot.edit_message_text("now", chat_id=OWNER_ID, message_id=sent.message_id)).entities == ()


@pytest.mark.parametrize(("html", "error"), [
    ("see <foo>you</foo>", 'Unsupported start tag "foo" at byte offset 4'),
    ("café <br> ok", 'Unsupported start tag "br" at byte offset 6'),  # bytes of UTF-8: é is two
    ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
    ("bold</b>", "Unexpected end tag at byte offset 4"),
    ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
    ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
    ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
    ("see you <b", "Unclosed start tag at byte offset 8"),
    ('<a href="https://example.org>x</a>', "Unclosed start tag at byte offset 0"),
    ("Tom & Jerry", "Character entity expected at byte offset 4"),
    ("&nbsp;", "Character entity expected at byte offset 0"),
    ("&#0;", "Character entity expected at byte offset 0"),
    ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ('<tg-emoji emoji-id="smile">🙂</tg-emoji>', "Invalid custom emoji identifier specified"),
])
async def test_malformed_html_is_refused_with_telegrams_text(fake, bot, html, error):
    description = f"Bad Request: can't parse entities: {error}"
    assert refusal(html, "HTML") == description
    with pytest.raises(BadRequest) as refused:
        await bot.send_message(OWNER_ID, html, parse_mode="HTML")
    assert str(refused.value) == ptb(description)
    [call] = fake.calls
    assert (call.failed, call.delivered, call.fault) == (True, False, None)
    assert (await bot.send_message(OWNER_ID, html)).text == html  # as plain text it is fine, and took no id
    assert fake.calls[-1].params == {"chat_id": OWNER_ID, "text": html}


async def test_unknown_parse_mode_is_refused(bot):
    with pytest.raises(BadRequest, match="^Unsupported parse_mode$"):
        await bot.send_message(OWNER_ID, "hi", parse_mode="XML")


async def test_length_is_counted_in_utf16_units_of_the_visible_text(fake, bot):
    assert (await bot.send_message(OWNER_ID, "😀" * 2048)).text == "😀" * 2048  # 4096 UTF-16 code units
    with pytest.raises(BadRequest, match="^Message is too long$"):
        await bot.send_message(OWNER_ID, "😀" * 2048 + "x")
    assert (await bot.send_message(OWNER_ID, "&amp;" * 4096, parse_mode="HTML")).text == "&" * 4096
    with pytest.raises(BadRequest, match="^Message is too long$"):
        await bot.send_message(OWNER_ID, "<b>" + "&amp;" * 4097 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="^Text is too long$"):  # over 2^15 bytes before parsing, at the Bot API
        await bot.send_message(OWNER_ID, "<b></b>" * 5000 + "x", parse_mode="HTML")
    with pytest.raises(BadRequest, match="^Text must be non-empty$"):
        await bot.send_message(OWNER_ID, "<b> </b>", parse_mode="HTML")

    card = await bot.send_message(OWNER_ID, "card")
    assert (await bot.edit_message_text("😀" * 2048, chat_id=OWNER_ID, message_id=card.message_id)).text
    with pytest.raises(BadRequest, match="^Message_too_long$"):  # Telegram's server code for an edit, as it is
        await bot.edit_message_text("x" * 4097, chat_id=OWNER_ID, message_id=card.message_id)
    with pytest.raises(BadRequest, match="^Message text is empty$"):
        await bot.edit_message_text("", chat_id=OWNER_ID, message_id=card.message_id)
    with pytest.raises(BadRequest, match="^Message caption is too long$"):
        await bot.send_photo(OWNER_ID, b"\x89PNG fake", caption="<i>" + "c" * 1025 + "</i>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="^Media_caption_too_long$"):
        await bot.edit_message_caption(chat_id=OWNER_ID, message_id=card.message_id, caption="😀" * 513)
    assert [(c.method, c.failed) for c in fake.calls] == [
        ("sendMessage", False), ("sendMessage", True), ("sendMessage", False), ("sendMessage", True),
        ("sendMessage", True), ("sendMessage", True), ("sendMessage", False), ("editMessageText", False),
        ("editMessageText", True), ("editMessageText", True), ("sendPhoto", True), ("editMessageCaption", True)]
    assert card.message_id == 1002  # the refused sends took no message id


async def test_keyboards_and_callback_answers_are_checked(fake, bot):
    def markup(**action) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("Send", callback_data="d:1:send")],
                                     [InlineKeyboardButton("Other", **action)]])

    assert await bot.send_message(OWNER_ID, "64 bytes", reply_markup=markup(callback_data="é" * 32))
    with pytest.raises(BadRequest, match="^Button_data_invalid$"):
        await bot.send_message(OWNER_ID, "65 bytes", reply_markup=markup(callback_data="é" * 32 + "x"))
    with pytest.raises(BadRequest, match="^Text buttons are unallowed in the inline keyboard$"):
        await bot.send_message(OWNER_ID, "no action", reply_markup=markup())
    with pytest.raises(BadRequest, match="^Text buttons are unallowed in the inline keyboard$"):
        await bot.send_message(OWNER_ID, "empty data", reply_markup=markup(callback_data=""))
    assert await bot.send_message(OWNER_ID, "copy", reply_markup=markup(copy_text=CopyTextButton("😀" * 128)))
    for copied in ("", "x" * 257):
        with pytest.raises(BadRequest, match="^Button_copy_text_invalid$"):
            await bot.send_message(OWNER_ID, "copy", reply_markup=markup(copy_text=CopyTextButton(copied)))
    card = await bot.send_message(OWNER_ID, "card")
    with pytest.raises(BadRequest, match="^Button_data_invalid$"):
        await bot.edit_message_reply_markup(OWNER_ID, card.message_id, reply_markup=markup(callback_data="x" * 65))

    assert await bot.answer_callback_query("4382", text="x" * 200) is True
    with pytest.raises(BadRequest, match="^Message_too_long$"):
        await bot.answer_callback_query("4382", text="x" * 201)
    assert fake.delivered() == ["64 bytes", "copy", "card"]


@pytest.mark.filterwarnings("ignore:Please use .Bot.sendMessage.")
async def test_button_texts_and_links_are_checked(fake, bot):
    """Telegram refuses a button with nothing to show and a tg://user?id= link to someone whose privacy forbids it;
    the same link to anyone else is fine."""
    fake.privacy_restricted.add(5550100777)

    def one(button: dict) -> dict:
        return {"inline_keyboard": [[button]]}

    for button, refused in (({"text": "", "callback_data": "d:1:next:0"}, "Button_text_invalid"),
                            ({"text": "  ", "copy_text": {"text": "hi"}}, "Button_text_invalid"),
                            ({"callback_data": "d:1:next:0"}, "Can't parse inline keyboard button: field \"text\" "
                                                             "must be of type string"),
                            ({"text": "Open", "url": "tg://user?id=5550100777"}, "Button_user_privacy_restricted")):
        with pytest.raises(BadRequest) as refusal_:
            await bot.do_api_request("sendMessage", {"chat_id": OWNER_ID, "text": "x", "reply_markup": one(button)})
        assert refusal_.value.message == refused
    sent = await bot.send_message(OWNER_ID, "open", reply_markup=InlineKeyboardMarkup(
        [[InlineKeyboardButton("Open chat", url="tg://user?id=5550100102")]]))
    assert sent.reply_markup.inline_keyboard[0][0].url == "tg://user?id=5550100102"
    assert fake.delivered() == ["open"]


def test_forwarded_messages_parse_as_python_telegram_bot_reads_telegrams_json():
    from telegram import MessageOriginChannel, MessageOriginChat, MessageOriginHiddenUser, MessageOriginUser

    from telegram_updates import (forwarded_message, origin_channel, origin_chat, origin_hidden_user,
                                  origin_user)

    bot = Bot(fake_telegram.TOKEN)
    origins = [origin_user(5550100102, "Tomas", 1_700_000_000, last_name="K"),
               origin_hidden_user("Tomas K", 1_700_000_001),
               origin_chat(-1001234567890, "Crag crew", 1_700_000_002, author_signature="admin"),
               origin_channel(-1009876543210, "Crag news", 77, 1_700_000_003)]
    messages = [Update.de_json({"update_id": i, **forwarded_message(OWNER_ID, "hi", 10 + i, o)}, bot).message
                for i, o in enumerate(origins, 1)]
    user, hidden, chat, channel = (m.forward_origin for m in messages)
    assert isinstance(user, MessageOriginUser) and (user.sender_user.id, user.sender_user.full_name) == (
        5550100102, "Tomas K")
    assert isinstance(hidden, MessageOriginHiddenUser) and hidden.sender_user_name == "Tomas K"
    assert isinstance(chat, MessageOriginChat) and (chat.sender_chat.id, chat.author_signature) == (
        -1001234567890, "admin")
    assert isinstance(channel, MessageOriginChannel) and (channel.chat.title, channel.message_id) == ("Crag news", 77)
    assert user.date == dtm.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dtm.timezone.utc)
    assert all(m.from_user.id == OWNER_ID and m.api_kwargs == {} for m in messages)  # no field PTB does not know


# --- faults on demand --------------------------------------------------------------------------------------------


# RetryAfter reads its own retry_after while it is built, which warns of the change to timedelta in PTB 23.
@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
async def test_error_faults_raise_the_ptb_errors_the_relay_meets(fake, bot):
    cases = [
        (Error(429, retry_after=2), RetryAfter, "Flood control exceeded. Retry in 2 seconds"),
        (Error(502), NetworkError, "Bad Gateway"),
        (Error(500), NetworkError, "Internal Server Error"),
        (Error(403), Forbidden, "Forbidden: bot was blocked by the user"),
        (Error(400, "Bad Request: chat not found"), BadRequest, "Chat not found"),
    ]
    for fault, kind, message in cases:
        fake.inject("sendMessage", fault)
        with pytest.raises(kind) as raised:
            await bot.send_message(OWNER_ID, "hi")
        assert type(raised.value) is kind and raised.value.message == message
    fake.inject("getUpdates", Error(409))
    with pytest.raises(Conflict, match="^Conflict: terminated by other getUpdates request; make sure that only one "
                                       "bot instance is running$"):
        await bot.get_updates()

    sends = fake.calls_of("sendMessage")
    assert [call.fault for call in sends] == [fault for fault, _, _ in cases]
    assert {(call.failed, call.delivered) for call in sends} == {(True, False)}
    assert fake.polls[-1].fault == Error(409) and fake.polls[-1].failed
    assert fake.delivered() == []
    assert (await bot.send_message(OWNER_ID, "hi")).message_id == 1000  # none took an id
    assert Error(429) == Error(429, "Too Many Requests: retry after 1", 1)  # Telegram always says how long


async def test_late_answer_times_out_although_the_message_arrived(fake, impatient):
    fake.inject("sendMessage", Late(1.0))
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await impatient.send_message(TOMAS_ID, "see you at 8", business_connection_id=BC1)
    assert time.monotonic() - started < 0.8  # the client gave up; the answer is still to come
    [late] = fake.calls_of("sendMessage")
    assert (late.fault, late.failed, late.delivered) == (Late(1.0), False, True)
    assert fake.delivered(TOMAS_ID, business_connection_id=BC1) == ["see you at 8"]
    # It did arrive: a blind retry sends it twice, as with Telegram.
    again = await impatient.send_message(TOMAS_ID, "see you at 8", business_connection_id=BC1)
    assert again.message_id == 1001
    assert fake.delivered(business_connection_id=BC1) == ["see you at 8"] * 2
    assert fake.delivered(business_connection_id=None) == []

    fake.inject("sendMessage", Late())  # left out, the delay outlasts the fake's client_read_timeout
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await impatient.send_message(OWNER_ID, "default delay")
    assert time.monotonic() - started < READ_TIMEOUT_S + fake_telegram.LATE_MARGIN_S
    assert fake.delivered(OWNER_ID) == ["default delay"]


async def test_a_late_answer_holds_up_no_other_call(fake, bot):
    fake.inject("sendMessage", Late(0.5), match=lambda params: params["chat_id"] == TOMAS_ID)
    started = time.monotonic()
    late = asyncio.create_task(bot.send_message(TOMAS_ID, "slow"))
    await fake.wait_async(lambda call: call.params.get("chat_id") == TOMAS_ID)
    assert (await bot.send_message(OWNER_ID, "quick")).text == "quick"
    assert time.monotonic() - started < 0.4  # answered while the late one waits
    assert (await late).text == "slow"  # inside the bot's 5 s read timeout a late answer still counts
    assert time.monotonic() - started >= 0.5


async def test_stop_drops_a_late_answer_at_once():
    fake = FakeBotAPI().start()
    try:
        async with Bot(fake.token, base_url=fake.base_url, request=loopback_request()) as bot:
            fake.inject("sendMessage", Late(30))
            send = asyncio.create_task(bot.send_message(OWNER_ID, "hi"))
            await fake.wait_async("sendMessage")
            started = time.monotonic()
            fake.stop()
            assert time.monotonic() - started < 0.5
            with pytest.raises(NetworkError):
                await send
    finally:
        fake.stop()
    assert fake.delivered() == ["hi"]


async def test_reset_delivers_nothing_and_garbage_delivers(fake, bot):
    fake.inject("sendMessage", Reset())
    with pytest.raises(NetworkError) as reset:
        await bot.send_message(TOMAS_ID, "lost", business_connection_id=BC1)
    assert type(reset.value) is NetworkError  # not TimedOut: the connection closed with nothing said
    fake.inject("sendMessage", Garbage())
    with pytest.raises(TelegramError) as garbage:
        await bot.send_message(TOMAS_ID, "arrived", business_connection_id=BC1)
    assert type(garbage.value) is TelegramError and garbage.value.message == "Invalid server response"

    lost, arrived = fake.calls_of("sendMessage")
    assert (lost.fault, lost.failed, lost.delivered) == (Reset(), True, False)
    assert (arrived.fault, arrived.failed, arrived.delivered) == (Garbage(), False, True)
    assert fake.delivered() == ["arrived"]
    assert (await bot.send_message(TOMAS_ID, "next", business_connection_id=BC1)).message_id == 1001


async def test_injections_match_calls_and_are_used_in_order(fake, bot):
    fake.inject("sendMessage", Error(400, "Bad Request: BUSINESS_PEER_INVALID"), times=2,
                match=lambda params: "business_connection_id" in params)
    fake.inject("sendMessage", Error(502))
    with pytest.raises(NetworkError, match="^Bad Gateway$"):  # the first injection does not match the bot's send
        await bot.send_message(OWNER_ID, "card")
    for _ in range(2):
        with pytest.raises(BadRequest, match="^Business_peer_invalid$"):
            await bot.send_message(TOMAS_ID, "hi", business_connection_id=BC1)
    await bot.send_message(TOMAS_ID, "hi", business_connection_id=BC1)
    await bot.send_message(OWNER_ID, "card")
    peer_invalid = Error(400, "Bad Request: BUSINESS_PEER_INVALID")
    assert [c.fault for c in fake.calls] == [Error(502), peer_invalid, peer_invalid, None, None]
    assert fake.delivered(business_connection_id=BC1) == ["hi"]
    assert fake.delivered(business_connection_id=None) == ["card"]
    with pytest.raises(TypeError, match="expected an Error, Late, Reset or Garbage"):
        fake.inject("sendMessage", 429)
    with pytest.raises(ValueError, match="times=0"):
        fake.inject("sendMessage", Reset(), times=0)


@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
async def test_chaos_is_deterministic_for_a_seed(fake, bot):
    faults = (Error(429), Error(502), Reset(), Garbage())

    async def run(seed: int) -> tuple[list, list[str]]:
        fake.clear()
        fake.chaos(0.5, seed, faults=faults)
        for n in range(24):
            with contextlib.suppress(TelegramError):
                await bot.send_message(OWNER_ID, f"m{n}")
        assert await bot.send_chat_action(OWNER_ID, "typing")  # not one of chaos's methods
        fake.calm()
        return [call.fault for call in fake.calls], fake.delivered()

    first, delivered = await run(7)
    assert await run(7) == (first, delivered)
    assert (await run(8))[0] != first
    hits = [fault for fault in first if fault is not None]
    assert 4 <= len(hits) <= 20 and set(hits) <= set(faults) and first[-1] is None
    assert delivered == [f"m{n}" for n, fault in enumerate(first[:-1]) if not isinstance(fault, Error | Reset)]
    assert (await bot.send_message(OWNER_ID, "calm")).text == "calm"


@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
async def test_chaos_defaults_spare_polling(fake, impatient):
    fake.chaos(1.0, seed=3)
    assert (await impatient.get_me()).id == fake.bot_user["id"]
    assert await impatient.get_updates() == ()
    for text in ("a", "b", "c"):
        with pytest.raises(TelegramError):  # RetryAfter, NetworkError, TimedOut: all of them TelegramError
            await impatient.send_message(OWNER_ID, text)
    with pytest.raises(TelegramError):
        await impatient.answer_callback_query("4382")
    [me, *failed] = fake.calls
    assert (me.method, me.fault, fake.polls[-1].fault) == ("getMe", None, None)
    assert [call.method for call in failed] == ["sendMessage"] * 3 + ["answerCallbackQuery"]
    assert all(call.fault in fake_telegram.CHAOS_FAULTS for call in failed)
    fake.chaos(0)
    assert (await impatient.send_message(OWNER_ID, "calm")).text == "calm"
    with pytest.raises(ValueError, match="rate=2"):
        fake.chaos(2)


async def test_application_builder_read_timeout_meets_a_late_answer(fake):
    app = fake.application_builder(read_timeout=0.1).build()
    assert fake.client_read_timeout == 0.1
    async with app:
        fake.inject("sendMessage", Late())
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await app.bot.send_message(OWNER_ID, "hi")
        assert time.monotonic() - started < 0.35
    assert fake.delivered() == ["hi"]
