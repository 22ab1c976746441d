"""Builders of Telegram Bot API update JSON, as plain dicts with the Bot API's own field names.

Each returns an update without `update_id`: `FakeBotAPI.push` assigns one; to parse one directly add it,
`Update.de_json({"update_id": 1, **business_message(...)}, bot)`. The people are synthetic: the owner Mira
(OWNER_ID) has connected the bot to her account, and Tomas (TOMAS_ID) writes to her. Like Telegram, optional
"True, if ..." fields are left out when false (PTB then reads None), and dates are Unix seconds.

    .venv/bin/pytest tests/test_fake_telegram.py
"""

from __future__ import annotations

import inspect
import itertools
import time

import telegram

from fake_telegram import BOT_USER, bot_sender

OWNER_ID = 5550100001
OWNER_NAME = "Mira"
TOMAS_ID = 5550100102
TOMAS_NAME = "Tomas"
BUSINESS_CONNECTION_ID = "BC1"

_RIGHTS = frozenset(inspect.signature(telegram.BusinessBotRights).parameters) - {"api_kwargs"}
_query_ids = itertools.count(4_382_000_000_000_000_001)


def business_connection(
    conn_id: str,
    owner_id: int,
    owner_chat_id: int | None = None,
    enabled: bool = True,
    can_reply: bool = True,
    date: int | None = None,
    **rights: bool,
) -> dict:
    """The bot was connected to (enabled) or disconnected from (not enabled) the owner's business account.

    `rights` are further BusinessBotRights, e.g. `can_read_messages=True`; `user_chat_id` is the owner's private
    chat with the bot, the same id as the owner's unless given.
    """
    unknown = set(rights) - _RIGHTS
    if unknown:
        raise TypeError(f"not BusinessBotRights fields: {sorted(unknown)}; known: {sorted(_RIGHTS)}")
    granted = {name: True for name, value in {"can_reply": can_reply, **rights}.items() if value}
    return {
        "business_connection": {
            "id": conn_id,
            "user": _user(owner_id, OWNER_NAME),
            "user_chat_id": owner_id if owner_chat_id is None else owner_chat_id,
            "date": _now() if date is None else date,
            "rights": granted,
            "is_enabled": enabled,
        }
    }


def business_message(
    conn_id: str,
    chat_id: int,
    from_id: int,
    text: str,
    message_id: int,
    date: int | None = None,
    first_name: str = TOMAS_NAME,
    is_from_offline: bool = False,
    sender_business_bot: dict | None = None,
    reply_to: int | dict | None = None,
) -> dict:
    """A message in a chat of the business account: from the contact (`from_id == chat_id`) or from the owner.

    `first_name` is the contact's, whose private chat this is; `reply_to` is the replied message or its id.
    """
    message = _business(conn_id, chat_id, from_id, text, message_id, date, first_name)
    if is_from_offline:
        message["is_from_offline"] = True
    if sender_business_bot is not None:
        message["sender_business_bot"] = sender_business_bot
    if isinstance(reply_to, int):
        reply_to = {"message_id": reply_to, "date": message["date"], "chat": message["chat"]}
    if reply_to is not None:
        message["reply_to_message"] = reply_to
    return {"business_message": message}


def edited_business_message(
    conn_id: str,
    chat_id: int,
    from_id: int,
    text: str,
    message_id: int,
    date: int | None = None,
    edit_date: int | None = None,
    first_name: str = TOMAS_NAME,
) -> dict:
    """A new version of a message in a chat of the business account."""
    message = _business(conn_id, chat_id, from_id, text, message_id, date, first_name)
    message["edit_date"] = _now() if edit_date is None else edit_date
    return {"edited_business_message": message}


def deleted_business_messages(
    conn_id: str, chat_id: int, message_ids: list[int], first_name: str = TOMAS_NAME
) -> dict:
    return {
        "deleted_business_messages": {
            "business_connection_id": conn_id,
            "chat": _private_chat(chat_id, first_name),
            "message_ids": list(message_ids),
        }
    }


def private_message(
    from_id: int, text: str, message_id: int, date: int | None = None, first_name: str = OWNER_NAME
) -> dict:
    """A message to the bot in the sender's private chat with it (the chat id is the sender's id)."""
    return {
        "message": {
            "message_id": message_id,
            "from": _user(from_id, first_name),
            "chat": _private_chat(from_id, first_name),
            "date": _now() if date is None else date,
            "text": text,
        }
    }


def origin_user(user_id: int, first_name: str, date: int, last_name: str | None = None) -> dict:
    """MessageOriginUser: "The message was originally sent by a known user" (their privacy allows the link)."""
    user = _user(user_id, first_name) | ({"last_name": last_name} if last_name else {})
    return {"type": "user", "date": date, "sender_user": user}


def origin_hidden_user(name: str, date: int) -> dict:
    """MessageOriginHiddenUser: "The message was originally sent by an unknown user": only the name they show."""
    return {"type": "hidden_user", "date": date, "sender_user_name": name}


def origin_chat(chat_id: int, title: str, date: int, author_signature: str | None = None) -> dict:
    """MessageOriginChat: "The message was originally sent on behalf of a chat to a group chat"."""
    origin = {"type": "chat", "date": date, "sender_chat": {"id": chat_id, "title": title, "type": "supergroup"}}
    return origin | ({"author_signature": author_signature} if author_signature else {})


def origin_channel(chat_id: int, title: str, message_id: int, date: int) -> dict:
    """MessageOriginChannel: "The message was originally sent to a channel chat"."""
    return {"type": "channel", "date": date, "chat": {"id": chat_id, "title": title, "type": "channel"},
            "message_id": message_id}


def forwarded_message(from_id: int, text: str, message_id: int, origin: dict, date: int | None = None,
                      first_name: str = OWNER_NAME) -> dict:
    """A message forwarded to the bot in the sender's private chat with it, as Telegram delivers it since Bot
    API 7.0: `forward_origin` (built with the origin_* helpers) instead of the old forward_from* fields; the
    message's own `date` is when it was forwarded, the origin's when it was first sent."""
    update = private_message(from_id, text, message_id, date, first_name)
    update["message"]["forward_origin"] = origin
    return update


def command(from_id: int, text: str, message_id: int, date: int | None = None) -> dict:
    """A command to the bot, e.g. `command(OWNER_ID, "/status today", 7)`, with its bot_command entity."""
    name = text.split(maxsplit=1)[0]
    if not name.startswith("/"):
        raise ValueError(f"a command starts with '/', got {text!r}")
    update = private_message(from_id, text, message_id, date)
    update["message"]["entities"] = [{"type": "bot_command", "offset": 0, "length": len(name)}]
    return update


def callback_query(
    from_id: int,
    data: str,
    message_chat_id: int,
    message_id: int,
    query_id: str | None = None,
    message_text: str = "Draft for Tomas",
) -> dict:
    """A press on an inline button with callback `data`, under the bot's message `message_id` (the card)."""
    return {
        "callback_query": {
            "id": str(next(_query_ids)) if query_id is None else query_id,
            "from": _user(from_id, OWNER_NAME),
            "message": {
                "message_id": message_id,
                "from": bot_sender(BOT_USER),
                "chat": _private_chat(message_chat_id, OWNER_NAME),
                "date": _now(),
                "text": message_text,
            },
            "chat_instance": f"-{message_chat_id}0017",
            "data": data,
        }
    }


def _business(
    conn_id: str, chat_id: int, from_id: int, text: str, message_id: int, date: int | None, first_name: str
) -> dict:
    sender = first_name if from_id == chat_id else OWNER_NAME
    return {
        "business_connection_id": conn_id,
        "message_id": message_id,
        "from": _user(from_id, sender),
        "chat": _private_chat(chat_id, first_name),
        "date": _now() if date is None else date,
        "text": text,
    }


def _user(user_id: int, first_name: str) -> dict:
    return {"id": user_id, "is_bot": False, "first_name": first_name}


def _private_chat(chat_id: int, first_name: str) -> dict:
    return {"id": chat_id, "type": "private", "first_name": first_name}


def _now() -> int:
    return int(time.time())
