"""Tests of the fake Bot API server and the update builders, with a real python-telegram-bot Application.

They pin down what the relay's tests rely on: updates reach PTB's handlers once each, calls come back with
exactly the values PTB was given, and errors surface as PTB's own exceptions.

    .venv/bin/pytest tests/test_fake_telegram.py
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import doctest
import threading
import time

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.error import BadRequest, InvalidToken, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, MessageHandler, filters

import fake_telegram
from fake_telegram import FakeBotAPI, Upload, loopback_request
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


def test_decode_params_examples():
    assert doctest.testmod(fake_telegram).failed == 0


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
        await bot.send_message(OWNER_ID, " ")
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
