"""A fake Telegram Bot API server on 127.0.0.1, real HTTP in a thread, for tests of the Telegram relay.

A real python-telegram-bot `Application` talks to it over loopback: build it with
`.base_url(fake.base_url)` and the fake answers like Telegram where twin depends on it: `getMe`, long-polled
`getUpdates` with offsets, `sendMessage` / `editMessageText` / `editMessageReplyMarkup` returning Message objects
(as the business account owner when `business_connection_id` is given), `getBusinessConnection`, and `true` for
everything else. Every call is recorded with its parameters decoded back to Python values; a test pushes updates
(built with tests/telegram_updates.py), waits for the calls it expects, and can make the next calls of a method
fail with Telegram's error shape (`fail_next("sendMessage", 429, retry_after=1)`).

    .venv/bin/pytest tests/test_fake_telegram.py
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import inspect
import json
import ssl
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import telegram
from telegram.ext import Application, ApplicationBuilder
from telegram.request import HTTPXRequest

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
# Bot API, sendMessage: "Text of the message to be sent, 1-4096 characters after entities parsing".
MAX_TEXT_LENGTH = 4096
NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request (sendPhoto, sendDocument, ...)."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Call:
    """One Bot API call as the fake received it; `failed` when it was answered with an error."""

    method: str
    params: dict[str, object]
    time: float
    failed: bool = False


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


@dataclass(repr=False)
class FakeBotAPI:
    token: str = TOKEN
    bot_user: dict = field(default_factory=lambda: dict(BOT_USER))
    # BusinessConnection objects by id, for getBusinessConnection and for sending as the owner; pushing a
    # business_connection update registers it, as Telegram would know it.
    connections: dict[str, dict] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    polls: list[Call] = field(default_factory=list)  # the getUpdates calls, kept apart from `calls`

    def __post_init__(self) -> None:
        self._changed = threading.Condition()  # guards all state below; notified on every push and call
        self._updates: list[dict] = []
        self._next_update_id = 1
        self._confirmed_offset = 0
        self._allowed: frozenset[str] = frozenset()  # empty: Telegram's default
        self._failures: dict[str, list[ApiError]] = {}
        self._messages: dict[tuple[str | None, object, int], dict] = {}
        self._next_message_id: dict[tuple[str | None, object], int] = {}
        self._chats: dict[object, dict] = {}
        self._stopping = False
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

    def application_builder(self) -> ApplicationBuilder:
        """`Application.builder()` pointed at the fake, with clients that skip loading CA certificates."""
        return (
            Application.builder()
            .token(self.token)
            .base_url(self.base_url)
            .request(loopback_request())
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
        if error_code == 429 and retry_after is None:
            retry_after = 1  # Telegram always says how long to wait, and PTB raises RetryAfter only then
        if description is None:
            description = {
                403: "Forbidden: bot was blocked by the user",
                429: f"Too Many Requests: retry after {retry_after}",
            }.get(error_code, "Bad Request: injected failure")
        with self._changed:
            self._failures.setdefault(method, []).extend(
                ApiError(error_code, description, retry_after) for _ in range(times)
            )

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

    def _answer(self, method: str, params: dict) -> tuple[int, dict]:
        with self._changed:
            call = Call(method, params, time.time())
            (self.polls if method == "getUpdates" else self.calls).append(call)
            self._changed.notify_all()
            try:
                if failures := self._failures.get(method):
                    raise failures.pop(0)
                handle = self._methods.get(method)
                result = handle(params) if handle else True
            except KeyError as missing:  # a required parameter left out
                call.failed = True
                return 400, ApiError(400, f"Bad Request: {missing.args[0]} is empty").payload()
            except ApiError as error:
                call.failed = True
                return error.error_code, error.payload()
        return 200, {"ok": True, "result": result}

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
        text = params.get("text", "")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        business_connection_id = params.get("business_connection_id")
        chat_key = (business_connection_id, params["chat_id"])
        message_id = self._next_message_id.get(chat_key, FIRST_MESSAGE_ID)
        self._next_message_id[chat_key] = message_id + 1
        message = self._message(params, message_id) | {"text": text}
        if "reply_parameters" in params:
            replied = (business_connection_id, params["chat_id"], params["reply_parameters"]["message_id"])
            if original := self._messages.get(replied):  # nested one level only, as Telegram does
                message["reply_to_message"] = {k: v for k, v in original.items() if k != "reply_to_message"}
        self._messages[_message_key(message)] = message
        return message

    def _edit_message_text(self, params: dict) -> dict | bool:
        if "inline_message_id" in params:
            return True  # Bot API: "... otherwise True is returned" for inline messages
        edit = {"text": params["text"], "entities": params.get("entities")}
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


def loopback_request() -> HTTPXRequest:
    """PTB's HTTP client for the fake: it speaks plain HTTP, and loading the CA bundle costs ~0.2 s per client
    (a Bot has two). The empty TLS context trusts no certificate, so this client cannot reach a real server."""
    return HTTPXRequest(httpx_kwargs={"verify": ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)})


def bot_sender(bot_user: dict) -> dict:
    """The bot as a message's sender: a User without the fields only getMe returns."""
    return {name: bot_user[name] for name in ("id", "is_bot", "first_name", "username")}


def _message_key(message: dict) -> tuple[str | None, object, int]:
    # A business chat "is independent from any potential bot chat which might share the same identifier"
    # (Bot API, Message.business_connection_id), so message ids are counted per connection and chat.
    return message.get("business_connection_id"), message["chat"]["id"], message["message_id"]


def _matcher(what: str | Callable[[Call], bool]) -> Callable[[Call], bool]:
    if isinstance(what, str):
        return lambda call: call.method == what
    return what


def _describe(call: Call) -> str:
    text = f"{call.method}{' (failed)' if call.failed else ''} {call.params!r}"
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
                status, answer = 404, ApiError(404, "Not Found").payload()
            else:
                token, method = url.path[len(prefix):].split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if token != fake.token:
                    status, answer = 401, ApiError(401, "Unauthorized").payload()
                else:
                    params = decode_params(method, self.headers.get("Content-Type", ""), body, url.query)
                    status, answer = fake._answer(method, params)
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the bot gave up on the request: PTB cancels its long poll when the updater stops

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            pass  # a request line carries the bot token

    return Handler
