"""A fake Telegram Bot API server on 127.0.0.1, real HTTP in a thread, for tests of the Telegram relay.

A real python-telegram-bot `Application` talks to it over loopback: build it with
`.base_url(fake.base_url)` and the fake answers like Telegram where twin depends on it: `getMe`, long-polled
`getUpdates` with offsets, `sendMessage` / `editMessageText` / `editMessageReplyMarkup` returning Message objects
(as the business account owner when `business_connection_id` is given), `getBusinessConnection`, and `true` for
everything else. Every call is recorded with its parameters decoded back to Python values; a test pushes updates
(built with tests/telegram_updates.py) and waits for the calls it expects.

It refuses what Telegram refuses, with Telegram's texts: malformed HTML (parse_mode "HTML", parsed as Telegram
does by tests/telegram_html.py), texts over 4096 and captions over 1024 UTF-16 code units after entity parsing,
empty texts, callback data over 64 bytes, callback answers over 200 characters, buttons without text or with
text of only spaces, Copy buttons (copy_text) of no text or over 256 characters, and a tg://user?id= button
for a user whose privacy settings forbid it (`privacy_restricted`). And it fails on demand, per
method and per call: `fail_next("sendMessage", 429, retry_after=1)`, or `inject(method, fault)` with a fault
from this module: `Error` (Telegram's error answer), `Late` (delivered, but answered after the client gave up),
`Reset` (the connection closes before anything happens), `Garbage` (delivered, answered with a non-JSON body);
`chaos(rate, seed)` draws them at random. `delivered()` tells which texts really arrived.

    .venv/bin/pytest tests/test_fake_telegram.py
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import inspect
import json
import random
import ssl
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import telegram
from telegram.ext import Application, ApplicationBuilder
from telegram.request import HTTPXRequest

from telegram_html import FormattingError, formatted, utf16_length

TOKEN = "123456:TEST-TOKEN"
BOT_USER = {
    "id": 4242,
    "is_bot": True,
    "first_name": "Twin",
    "username": "twin_test_bot",
    "can_join_groups": False,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
    "can_connect_to_business": True,
}
FIRST_MESSAGE_ID = 1000
# A long poll is held at most this long, whatever `timeout` the bot asks for, so that tests stay fast.
LONG_POLL_CAP_S = 1.0
# Bot API, sendMessage: "Text of the message to be sent, 1-4096 characters after entities parsing"; sendPhoto:
# "Photo caption ..., 0-1024 characters after entities parsing". Characters are UTF-16 code units here, as in
# entity offsets; tdlib counts code points first, so the fake is the stricter of the two for emoji.
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
# telegram-bot-api, Client::get_formatted_text: "Text is too long" for a text over 2^15 bytes before parsing.
MAX_RAW_TEXT_BYTES = 1 << 15
MAX_CALLBACK_DATA_BYTES = 64  # Bot API, InlineKeyboardButton.callback_data: "1-64 bytes"
MAX_COPY_TEXT_LENGTH = 256  # Bot API, CopyTextButton.text: "1-256 characters"
MAX_CALLBACK_ANSWER_LENGTH = 200  # Bot API, answerCallbackQuery.text: "0-200 characters"
NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
# telegram-bot-api, Client::get_inline_keyboard_button_type: the fields that make a button do something.
BUTTON_ACTIONS = frozenset({
    "callback_game", "pay", "switch_inline_query", "switch_inline_query_chosen_chat",
    "switch_inline_query_current_chat", "login_url", "web_app", "copy_text",
})
DESCRIPTIONS = {
    400: "Bad Request: injected failure",
    403: "Forbidden: bot was blocked by the user",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
PTB_READ_TIMEOUT_S = 5.0  # HTTPXRequest's default read_timeout
LATE_MARGIN_S = 0.3  # how long after the client's read timeout a Late answer leaves, unless told
# What a proxy in front of Telegram answers when it cannot reach it: not JSON, so PTB says "Invalid server response".
GARBAGE = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request (sendPhoto, sendDocument, ...)."""

    filename: str | None
    content_type: str
    data: bytes


# --- faults a test injects --------------------------------------------------------------------------------------


def _description(error_code: int, retry_after: int | None) -> str:
    if error_code == 429:
        return f"Too Many Requests: retry after {retry_after}"
    if error_code in DESCRIPTIONS:
        return DESCRIPTIONS[error_code]
    try:
        return HTTPStatus(error_code).phrase
    except ValueError:
        return f"Error {error_code}"


@dataclass(frozen=True)
class Error:
    """Telegram's error answer; nothing is delivered. HTTP status == error_code, and PTB raises by it: RetryAfter
    for 429 (only with retry_after, so it defaults to 1), BadRequest 400, Forbidden 403, Conflict 409 and
    NetworkError for 5xx. The description defaults to Telegram's text for the code."""

    error_code: int
    description: str | None = None
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if self.error_code == 429 and self.retry_after is None:
            object.__setattr__(self, "retry_after", 1)  # Telegram always says how long to wait
        if self.description is None:
            object.__setattr__(self, "description", _description(self.error_code, self.retry_after))


@dataclass(frozen=True)
class Late:
    """The call is processed and takes effect (a message is delivered, and recorded so), but the answer leaves only
    `delay_s` later, after the client gave up: PTB raises TimedOut for a message that did arrive.

    Pass `delay_s` a little over the client's read timeout (`loopback_request(read_timeout=0.2)` with
    `Late(0.5)`); left out, it is the fake's `client_read_timeout` + LATE_MARGIN_S.
    """

    delay_s: float | None = None


@dataclass(frozen=True)
class Reset:
    """The connection closes without an answer before the call is processed: nothing is delivered, and PTB raises
    NetworkError."""


@dataclass(frozen=True)
class Garbage:
    """The call is processed and takes effect, but the answer is not JSON (a proxy's error page): PTB raises
    TelegramError("Invalid server response")."""


Fault = Error | Late | Reset | Garbage
# chaos()'s defaults: the methods a relay's reply goes through, and the faults Telegram's users meet.
CHAOS_METHODS = frozenset({"sendMessage", "editMessageText", "answerCallbackQuery"})
CHAOS_FAULTS: tuple[Fault, ...] = (Error(429, retry_after=1), Error(502), Error(500), Late(), Reset())


@dataclass
class Call:
    """One Bot API call as the fake received it.

    `fault` is what was injected into it, if anything; `failed` when nothing was delivered (an error answer, a
    reset); `delivered` when it took effect (a normal success, and also under Late and Garbage).
    """

    method: str
    params: dict[str, object]
    time: float
    failed: bool = False
    fault: Fault | None = None
    delivered: bool = False


@dataclass
class ApiError(Exception):
    """An error answer in Telegram's shape: HTTP status == error_code, as Telegram does and PTB relies on."""

    error_code: int
    description: str
    retry_after: int | None = None

    def payload(self) -> dict:
        answer: dict = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            answer["parameters"] = {"retry_after": self.retry_after}
        return answer


@dataclass
class _Injection:
    fault: Fault
    left: int
    match: Callable[[dict], bool] | None


@dataclass
class _Chaos:
    rate: float
    random: random.Random
    methods: frozenset[str]
    faults: tuple[Fault, ...]

    def draw(self) -> Fault | None:
        # One draw per call whether it fails or not, so that a seed gives the same run for the same calls.
        fails = self.random.random() < self.rate
        fault = self.random.choice(self.faults)
        return fault if fails else None


@dataclass(frozen=True)
class _Reply:
    """What the handler sends back: `body` None closes the connection without an answer."""

    status: int
    body: bytes | None
    content_type: str = "application/json"
    delay_s: float = 0.0


@dataclass(repr=False)
class FakeBotAPI:
    token: str = TOKEN
    bot_user: dict = field(default_factory=lambda: dict(BOT_USER))
    # BusinessConnection objects by id, for getBusinessConnection and for sending as the owner; pushing a
    # business_connection update registers it, as Telegram would know it.
    connections: dict[str, dict] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    polls: list[Call] = field(default_factory=list)  # the getUpdates calls, kept apart from `calls`
    # The read timeout of the clients under test, which a Late without delay_s outlasts; application_builder()
    # sets it from its read_timeout.
    client_read_timeout: float = PTB_READ_TIMEOUT_S
    # Users whose privacy settings forbid linking to their account: a tg://user?id= button for one is refused
    # with BUTTON_USER_PRIVACY_RESTRICTED, as Telegram does.
    privacy_restricted: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()  # guards all state below; notified on every push and call
        self._updates: list[dict] = []
        self._next_update_id = 1
        self._confirmed_offset = 0
        self._allowed: frozenset[str] = frozenset()  # empty: Telegram's default
        self._injected: dict[str, list[_Injection]] = {}
        self._chaos: _Chaos | None = None
        self._messages: dict[tuple[str | None, object, int], dict] = {}
        self._next_message_id: dict[tuple[str | None, object], int] = {}
        self._chats: dict[object, dict] = {}
        self._stopping = False
        self._closing = threading.Event()  # set by stop(): a Late answer still waiting is dropped
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # Handler threads are not daemons, so that server_close() joins them (it skips daemon threads).
        self._server.daemon_threads = False
        # A short poll so that shutdown() returns at once, not after the default half second.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._methods: dict[str, Callable[[dict], object]] = {
            "getMe": lambda params: dict(self.bot_user),
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "getBusinessConnection": self._get_business_connection,
        }

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/bot"

    def application_builder(self, read_timeout: float | None = None) -> ApplicationBuilder:
        """`Application.builder()` pointed at the fake, with clients that skip loading CA certificates.

        `read_timeout` shortens how long the bot waits for an answer (not for getUpdates), so that a test of a
        Late answer is fast; a Late without delay_s then answers just after it.
        """
        if read_timeout is not None:
            self.client_read_timeout = read_timeout
        return (
            Application.builder()
            .token(self.token)
            .base_url(self.base_url)
            .request(loopback_request(read_timeout))
            .get_updates_request(loopback_request())
        )

    def start(self) -> FakeBotAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving; a long poll in progress returns at once and every handler thread is joined."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._closing.set()
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever, so only when it runs
            self._thread.join()
        self._server.server_close()

    def __repr__(self) -> str:
        return f"FakeBotAPI({self.base_url}, {len(self.calls)} calls, {len(self._updates)} updates pending)"

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a test does ------------------------------------------------------------------------------------

    def push(self, update: dict) -> int:
        """Queues an update for getUpdates and returns its update_id (assigned when `update` has none)."""
        with self._changed:
            update = dict(update)
            update_id = update.setdefault("update_id", self._next_update_id)
            if update_id < self._confirmed_offset:
                raise ValueError(
                    f"update_id {update_id} is below the offset the bot already confirmed "
                    f"({self._confirmed_offset}), so it would never be delivered; leave update_id out"
                )
            self._next_update_id = max(self._next_update_id, update_id + 1)
            self._updates.append(update)
            self._updates.sort(key=lambda u: u["update_id"])
            self._learn(update)
            self._changed.notify_all()
        return update_id

    def fail_next(
        self,
        method: str,
        error_code: int = 400,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method` answer an error; a 429 tells the bot to retry after N seconds."""
        self.inject(method, Error(error_code, description, retry_after), times)

    def inject(
        self, method: str, fault: Fault, times: int = 1, match: Callable[[dict], bool] | None = None
    ) -> None:
        """The next `times` calls of `method` meet `fault`; with `match`, only calls whose decoded params it
        accepts (`match=lambda p: "business_connection_id" in p`). Injections are used in the order they were
        made, before any chaos."""
        if not isinstance(fault, Error | Late | Reset | Garbage):
            raise TypeError(f"fault {fault!r}: expected an Error, Late, Reset or Garbage from fake_telegram")
        if times < 1:
            raise ValueError(f"times={times}: a fault is injected into at least one call")
        with self._changed:
            self._injected.setdefault(method, []).append(_Injection(fault, times, match))

    def chaos(
        self,
        rate: float,
        seed: int = 0,
        methods: typing.Iterable[str] | None = None,
        faults: typing.Sequence[Fault] | None = None,
    ) -> None:
        """From now on each call of `methods` (default CHAOS_METHODS) fails with probability `rate`, with a fault
        drawn from `faults` (default CHAOS_FAULTS). The draws come from random.Random(seed), so a seed repeats a
        run whose calls come in the same order. `chaos(0)` turns it off."""
        if not 0 <= rate <= 1:
            raise ValueError(f"rate={rate}: a probability, from 0 to 1")
        chosen = tuple(CHAOS_FAULTS if faults is None else faults)
        if rate and not chosen:
            raise ValueError("faults=[]: chaos needs at least one fault to draw")
        chaotic = CHAOS_METHODS if methods is None else frozenset(methods)
        with self._changed:
            self._chaos = _Chaos(rate, random.Random(seed), chaotic, chosen) if rate else None

    def calm(self) -> None:
        """Ends chaos (injections already made stay)."""
        self.chaos(0)

    def delivered(self, chat_id: object = None, business_connection_id: object = ...) -> list[str]:
        """The texts of the sendMessage calls that took effect, in order, whether the bot heard back or not.

        `chat_id` keeps one chat's; `business_connection_id` keeps the sends through that connection, None the
        bot's own sends; left out, both kinds. For "each approved text arrived exactly once".
        """
        def kept(params: dict) -> bool:
            return (chat_id is None or params.get("chat_id") == chat_id) and (
                business_connection_id is ... or params.get("business_connection_id") == business_connection_id)

        with self._changed:
            sends = [call for call in self.calls if call.method == "sendMessage" and call.delivered]
            return [call.params["text"] for call in sends if kept(call.params)]

    def pending(self) -> list[dict]:
        """The updates queued and not yet confirmed by an offset."""
        with self._changed:
            return list(self._updates)

    def calls_of(self, method: str) -> list[Call]:
        with self._changed:
            return [call for call in self.calls if call.method == method]

    def clear(self) -> None:
        """Forgets the recorded calls and polls (not the queued updates, connections or sent messages)."""
        with self._changed:
            self.calls.clear()
            self.polls.clear()

    def wait_for(
        self, what: str | Callable[[Call], bool], count: int = 1, timeout: float = 5.0
    ) -> list[Call]:
        """Blocks until `count` calls match `what` (a method name or a predicate) and returns all that match.

        Only for a bot running in another thread or process; in the bot's own event loop use `wait_async`.
        """
        matches = _matcher(what)
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := [c for c in self.calls if matches(c)]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(self._summary(what, count, timeout, found))
                self._changed.wait(remaining)
            return found

    async def wait_async(
        self, what: str | Callable[[Call], bool], count: int = 1, timeout: float = 5.0
    ) -> list[Call]:
        """`wait_for` that sleeps with asyncio, so that a bot on the same event loop keeps running."""
        matches = _matcher(what)
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                found = [c for c in self.calls if matches(c)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(self._summary(what, count, timeout, found))
            await asyncio.sleep(0.005)

    def _summary(self, what: object, count: int, timeout: float, found: list[Call]) -> str:
        seen = "\n".join(f"  {_describe(call)}" for call in self.calls) or "  (none)"
        name = what if isinstance(what, str) else getattr(what, "__name__", repr(what))
        return f"expected {count} call(s) matching {name} within {timeout} s, got {len(found)}; calls seen:\n{seen}"

    # --- the server side ---------------------------------------------------------------------------------------

    def _answer(self, method: str, params: dict) -> _Reply:
        with self._changed:
            call = Call(method, params, time.time())
            (self.polls if method == "getUpdates" else self.calls).append(call)
            self._changed.notify_all()
            fault = call.fault = self._fault(method, params)
            if isinstance(fault, Reset):
                call.failed = True
                return _Reply(0, None)
            try:
                if isinstance(fault, Error):
                    raise ApiError(fault.error_code, fault.description, fault.retry_after)
                _check(method, params)
                self._check_links(params)
                handle = self._methods.get(method)
                result = handle(params) if handle else True
            except KeyError as missing:  # a required parameter left out
                call.failed = True
                status, answer = 400, ApiError(400, f"Bad Request: {missing.args[0]} is empty").payload()
            except ApiError as error:
                call.failed = True
                status, answer = error.error_code, error.payload()
            else:
                call.delivered = True
                status, answer = 200, {"ok": True, "result": result}
        if isinstance(fault, Garbage):
            return _Reply(status, GARBAGE, "text/html")
        body = json.dumps(answer).encode()
        if isinstance(fault, Late):
            late = fault.delay_s if fault.delay_s is not None else self.client_read_timeout + LATE_MARGIN_S
            return _Reply(status, body, delay_s=late)
        return _Reply(status, body)

    def _fault(self, method: str, params: dict) -> Fault | None:
        """The fault this call meets: the first injection for the method that matches it, else chaos's draw."""
        injections = self._injected.get(method, [])
        for injection in injections:
            if injection.match is None or injection.match(params):
                injection.left -= 1
                if not injection.left:
                    injections.remove(injection)
                return injection.fault
        if self._chaos is not None and method in self._chaos.methods:
            return self._chaos.draw()
        return None

    def _check_links(self, params: dict) -> None:
        markup = params.get("reply_markup")
        rows = markup.get("inline_keyboard") or [] if isinstance(markup, dict) else []
        for button in (b for row in rows for b in row if isinstance(b, dict)):
            url = str(button.get("url", ""))
            if url.startswith("tg://user?id=") and url.removeprefix("tg://user?id=").isdigit() \
                    and int(url.removeprefix("tg://user?id=")) in self.privacy_restricted:
                raise ApiError(400, "Bad Request: BUTTON_USER_PRIVACY_RESTRICTED")

    def _get_updates(self, params: dict) -> list[dict]:
        if "allowed_updates" in params:  # kept for later calls: "If not specified, the previous setting will be used"
            self._allowed = frozenset(params["allowed_updates"])
        self._confirm(params.get("offset", 0))
        deadline = time.monotonic() + min(max(params.get("timeout", 0), 0), LONG_POLL_CAP_S)
        while True:
            self._updates = [update for update in self._updates if self._allows(update)]
            if self._updates or self._stopping or (remaining := deadline - time.monotonic()) <= 0:
                return self._updates[: min(max(params.get("limit", 100), 1), 100)]
            self._changed.wait(remaining)  # releases the lock, so that push() can add an update

    def _allows(self, update: dict) -> bool:
        # Telegram does not keep updates of a type the bot did not ask for; by default "all update types except
        # chat_member, message_reaction, and message_reaction_count" (Bot API, getUpdates).
        kind = next(name for name in update if name != "update_id")
        return kind in self._allowed if self._allowed else kind not in NOT_BY_DEFAULT

    def _confirm(self, offset: int) -> None:
        # Bot API, getUpdates: "An update is considered confirmed as soon as getUpdates is called with an offset
        # higher than its update_id. The negative offset can be specified to retrieve updates starting from
        # -offset update from the end of the updates queue. All previous updates will be forgotten."
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self._confirmed_offset = max(self._confirmed_offset, offset)
        elif offset < 0:
            self._updates = self._updates[offset:]

    def _learn(self, update: dict) -> None:
        """Remembers what Telegram would know from an update: the connection, the chats and their messages."""
        if connection := update.get("business_connection"):
            self.connections[connection["id"]] = connection
        for kind in ("message", "edited_message", "business_message", "edited_business_message"):
            if message := update.get(kind):
                self._chats[message["chat"]["id"]] = message["chat"]
                self._messages[_message_key(message)] = message

    def _delete_webhook(self, params: dict) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _send_message(self, params: dict) -> dict:
        text, entities = _message_text(params, edit=False)
        business_connection_id = params.get("business_connection_id")
        chat_key = (business_connection_id, params["chat_id"])
        message_id = self._next_message_id.get(chat_key, FIRST_MESSAGE_ID)
        self._next_message_id[chat_key] = message_id + 1
        message = self._message(params, message_id) | {"text": text} | ({"entities": entities} if entities else {})
        if "reply_parameters" in params:
            replied = (business_connection_id, params["chat_id"], params["reply_parameters"]["message_id"])
            if original := self._messages.get(replied):  # nested one level only, as Telegram does
                message["reply_to_message"] = {k: v for k, v in original.items() if k != "reply_to_message"}
        self._messages[_message_key(message)] = message
        return message

    def _edit_message_text(self, params: dict) -> dict | bool:
        if "inline_message_id" in params:
            return True  # Bot API: "... otherwise True is returned" for inline messages
        text, entities = _message_text(params, edit=True)
        edit = {"text": text, "entities": entities or None}  # None: an edit drops entities it does not give
        return self._edit(params, edit | {"reply_markup": params.get("reply_markup")})

    def _edit_message_reply_markup(self, params: dict) -> dict | bool:
        if "inline_message_id" in params:
            return True
        return self._edit(params, {"reply_markup": params.get("reply_markup")})

    def _edit(self, params: dict, edit: dict) -> dict:
        # An edit replaces the inline keyboard: one left out of editMessageText is removed (Bot API), which is
        # why a card edited without its reply_markup loses its buttons.
        key = (params.get("business_connection_id"), params["chat_id"], params["message_id"])
        before = self._messages.get(key)
        if before is None:  # a message the fake never saw, e.g. a card in a pushed callback_query
            before = self._message({k: v for k, v in params.items() if k != "reply_markup"}, params["message_id"])
        elif all(before.get(name) == value for name, value in edit.items()):
            raise ApiError(400, NOT_MODIFIED)
        after = before | {"edit_date": int(time.time())} | edit
        after = {name: value for name, value in after.items() if value is not None}
        self._messages[key] = after
        return after

    def _delete_message(self, params: dict) -> bool:
        self._messages.pop((params.get("business_connection_id"), params["chat_id"], params["message_id"]), None)
        return True

    def _get_business_connection(self, params: dict) -> dict:
        connection = self.connections.get(params["business_connection_id"])
        if connection is None:
            raise ApiError(400, "Bad Request: business connection not found")
        return connection

    def _message(self, params: dict, message_id: int) -> dict:
        """A Message the bot sent: from the bot, or from the business account's owner when sent on its behalf."""
        chat_id = params["chat_id"]
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chats.get(chat_id, {"id": chat_id, "type": "private"}),
            "from": bot_sender(self.bot_user),
        }
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        if business_connection_id := params.get("business_connection_id"):
            message["business_connection_id"] = business_connection_id
            message["sender_business_bot"] = bot_sender(self.bot_user)
            if owner := self.connections.get(business_connection_id, {}).get("user"):
                message["from"] = owner
        return message


def loopback_request(read_timeout: float | None = None, **kw: typing.Any) -> HTTPXRequest:
    """PTB's HTTP client for the fake: it speaks plain HTTP, and loading the CA bundle costs ~0.2 s per client
    (a Bot has two). The empty TLS context trusts no certificate, so this client cannot reach a real server.

    `read_timeout` (seconds) replaces PTB's 5 s, to meet a Late answer quickly; `kw` goes to HTTPXRequest.
    """
    if read_timeout is not None:
        kw["read_timeout"] = read_timeout
    verify = {"verify": ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)}
    return HTTPXRequest(httpx_kwargs=verify | kw.pop("httpx_kwargs", {}), **kw)


def bot_sender(bot_user: dict) -> dict:
    """The bot as a message's sender: a User without the fields only getMe returns."""
    return {name: bot_user[name] for name in ("id", "is_bot", "first_name", "username")}


# --- what Telegram refuses ---------------------------------------------------------------------------------------


def _check(method: str, params: dict) -> None:
    """Refuses what Telegram would, before anything takes effect: the text, then the keyboard, as it checks."""
    if method in ("sendMessage", "editMessageText"):
        _message_text(params, edit=method == "editMessageText")
    if "caption" in params and (method.startswith("send") or method == "editMessageCaption"):
        caption, _ = _formatted(str(params["caption"]), params)
        if utf16_length(caption) > MAX_CAPTION_LENGTH:
            # tdlib's own check for sends; the server's code for edits, which tdlib passes on as it is
            edit = method == "editMessageCaption"
            too_long = "MEDIA_CAPTION_TOO_LONG" if edit else "message caption is too long"
            raise ApiError(400, f"Bad Request: {too_long}")
    if isinstance(markup := params.get("reply_markup"), dict):
        _check_keyboard(markup.get("inline_keyboard") or [])
    if method == "answerCallbackQuery" and utf16_length(str(params.get("text", ""))) > MAX_CALLBACK_ANSWER_LENGTH:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")


def _message_text(params: dict, edit: bool) -> tuple[str, list[dict]]:
    """The visible text and entities of a sendMessage / editMessageText, or Telegram's refusal.

    The texts are the Bot API server's (telegram-bot-api, Client::get_input_message_text) and tdlib's
    (fix_formatted_text: a text of only spaces and newlines is "Text must be non-empty"; MessageContent.cpp:
    "Message is too long"). An edit's length is checked by Telegram's server, whose code tdlib passes on.
    """
    raw = str(params.get("text", ""))
    if not raw:
        raise ApiError(400, "Bad Request: message text is empty")
    if len(raw.encode()) > MAX_RAW_TEXT_BYTES:
        raise ApiError(400, "Bad Request: text is too long")
    text, entities = _formatted(raw, params)
    if not text.strip():
        raise ApiError(400, "Bad Request: text must be non-empty")
    if utf16_length(text) > MAX_TEXT_LENGTH:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG" if edit else "Bad Request: message is too long")
    return text, entities


def _formatted(raw: str, params: dict) -> tuple[str, list[dict]]:
    # Bot API: entities are parsed from the text under a parse_mode; without one the `entities` parameter holds them.
    try:
        text, entities = formatted(raw, params.get("parse_mode"))
    except FormattingError as refused:
        raise ApiError(400, str(refused)) from None
    if str(params.get("parse_mode") or "none").lower() == "none":
        entities = list(params.get("entities") or [])
    return text, entities


def _check_keyboard(rows: list) -> None:
    # The Bot API server reads the whole keyboard before Telegram's server checks each button's data.
    buttons = [button for row in rows for button in row if isinstance(button, dict)]
    for button in buttons:
        if not isinstance(button.get("text"), str):  # telegram-bot-api, get_inline_keyboard_button
            raise ApiError(400, "Bad Request: can't parse inline keyboard button: Field \"text\" must be of type "
                                "String")
        if not button["text"].strip():  # Telegram's server: a button's label must show something
            raise ApiError(400, "Bad Request: BUTTON_TEXT_INVALID")
    for button in buttons:
        if not (button.get("url") or button.get("callback_data") or BUTTON_ACTIONS & button.keys()):
            raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
    for button in buttons:
        if len(str(button.get("callback_data", "")).encode()) > MAX_CALLBACK_DATA_BYTES:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        if "copy_text" in button:
            copied = button["copy_text"].get("text", "") if isinstance(button["copy_text"], dict) else ""
            if not 1 <= utf16_length(str(copied)) <= MAX_COPY_TEXT_LENGTH:
                raise ApiError(400, "Bad Request: BUTTON_COPY_TEXT_INVALID")


def _message_key(message: dict) -> tuple[str | None, object, int]:
    # A business chat "is independent from any potential bot chat which might share the same identifier"
    # (Bot API, Message.business_connection_id), so message ids are counted per connection and chat.
    return message.get("business_connection_id"), message["chat"]["id"], message["message_id"]


def _matcher(what: str | Callable[[Call], bool]) -> Callable[[Call], bool]:
    if isinstance(what, str):
        return lambda call: call.method == what
    return what


def _describe(call: Call) -> str:
    fault = f" ({call.fault!r})" if call.fault else ""
    text = f"{call.method}{' (failed)' if call.failed else ''}{fault} {call.params!r}"
    return text if len(text) <= 300 else text[:297] + "..."


# --- decoding PTB's requests -------------------------------------------------------------------------------------


def decode_params(method: str, content_type: str, body: bytes, query: str = "") -> dict[str, object]:
    """The parameters of a request as Python values.

    PTB sends a `str` value as it is and JSON-dumps every other value (RequestParameter.json_value), then posts
    them form-encoded, or as multipart fields when there are files. So on the wire `text="123"` and `chat_id=123`
    are both `123`; the parameter's type in PTB's own Bot method tells them apart.

    >>> decode_params("sendMessage", "application/x-www-form-urlencoded",
    ...               b"chat_id=5550100102&text=123&reply_parameters=%7B%22message_id%22%3A+7%7D")
    {'chat_id': 5550100102, 'text': '123', 'reply_parameters': {'message_id': 7}}
    >>> decode_params("sendMessage", "application/x-www-form-urlencoded",
    ...               b"chat_id=%40mira&text=true&protect_content=true")
    {'chat_id': '@mira', 'text': 'true', 'protect_content': True}
    """
    raw: dict[str, object] = dict(parse_qsl(query, keep_blank_values=True))
    if content_type.startswith("multipart/form-data"):
        raw |= _multipart(content_type, body)
    elif body:
        raw |= dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    strings = _string_params(method)
    return {name: _decode(value) if name not in strings else value for name, value in raw.items()}


def _multipart(content_type: str, body: bytes) -> dict[str, object]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, object] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if part.get_filename() is None:
            fields[name] = data.decode("utf-8")
        else:
            fields[name] = Upload(part.get_filename(), part.get_content_type(), data)
    return fields


def _decode(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value, parse_constant=_reject)
    except ValueError:
        return value  # "@channelname", a file_id, a URL
    # PTB never JSON-dumps a str or None (it sends the str itself and drops None), so '"x"' and 'null' are text.
    return value if decoded is None or isinstance(decoded, str) else decoded


def _reject(constant: str) -> object:
    raise ValueError(constant)  # NaN, Infinity: text, not a number PTB would send


@cache
def _string_params(method: str) -> frozenset[str]:
    """The parameters of `method` that PTB's Bot types as text (`str`, not also `int` as chat_id is)."""
    function = getattr(telegram.Bot, method, None)
    if function is None:
        return frozenset()
    return frozenset(
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if _is_text(parameter.annotation)
    )


def _is_text(annotation: object) -> bool:
    if isinstance(annotation, str):  # a forward reference such as 'str | Gift'
        alternatives: set[object] = {part.strip() for part in annotation.split("|")}
        return "str" in alternatives and "int" not in alternatives
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        alternatives = set(typing.get_args(annotation))
    else:
        alternatives = {annotation}
    return str in alternatives and int not in alternatives


def _handler(fake: FakeBotAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0  # a client that connects and sends nothing cannot hold up stop()

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            prefix = "/bot"
            if not url.path.startswith(prefix) or url.path.count("/") != 2:
                reply = _Reply(404, json.dumps(ApiError(404, "Not Found").payload()).encode())
            else:
                token, method = url.path[len(prefix):].split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if token != fake.token:
                    reply = _Reply(401, json.dumps(ApiError(401, "Unauthorized").payload()).encode())
                else:
                    params = decode_params(method, self.headers.get("Content-Type", ""), body, url.query)
                    reply = fake._answer(method, params)
            if reply.body is None:  # Reset: the connection closes with nothing said
                self.close_connection = True
                return
            # A Late answer waits here, without the fake's lock, and gives up when the fake stops.
            if reply.delay_s and fake._closing.wait(reply.delay_s):
                return
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the bot gave up on the request: PTB cancels its long poll when the updater stops, a
                # client times out before a Late answer

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            pass  # a request line carries the bot token

    return Handler
