"""Who wrote a message the owner forwarded or pasted to the bot, and which chat of the history it belongs to.

Values and matching for the forward-and-paste flow (bot/forwards.py): `Origin` is Bot API MessageOrigin as a
value, `match` finds the chat in the store (a Telegram id first, then a chat id or title, else a name, which
may fit several chats). Tested through tests/test_forwards.py and the doctests here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from bot.cards import shorten
from bot.copycards import PLATFORM_NAMES
from twin.chat import Chat, ChatKey, telegram_user
from twin.errors import NotFound


@dataclass(frozen=True)
class Origin:
    """Who wrote a forwarded message (Bot API MessageOrigin): `kind` "user" (an id and a name), "hidden_user"
    (only a name: their privacy settings hide the account), "chat" or "channel" (a chat's id and title)."""

    kind: str
    id: int | None
    name: str | None
    date: datetime


@dataclass(frozen=True)
class Incoming:
    """One message the owner gave the bot: forwarded (`origin`) or pasted (`origin` None). `kind` and `text` as
    the store keeps them (twin.chat.KINDS)."""

    origin: Origin | None
    text: str
    kind: str
    at: datetime


def chat_ids(chat_id: int) -> list[str]:
    """The ids a Telegram chat may have in an export: the Bot API's, its absolute value, and without the
    supergroup and channel prefix -100 (Telegram Desktop writes the bare id).

    >>> chat_ids(-1001234567890), chat_ids(5550100102)
    (['-1001234567890', '1001234567890', '1234567890'], ['5550100102'])
    """
    text = str(chat_id)
    ids = [text, text.lstrip("-")]
    if text.startswith("-100"):
        ids.append(text[4:])
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Match:
    """What an origin names: the owner, one chat (`chats` of one, or a new chat to create), or several to ask
    about (none: ask among recent chats)."""

    owner: bool = False
    chats: tuple[Chat, ...] = ()
    new: Chat | None = None
    sender: str | None = None  # the sender id to store the messages under, when the origin gives one


def match(store, origin: Origin, owner_id: int) -> Match:
    """The chat a forwarded message comes from, in the store (see the module docstring)."""
    if origin.kind == "user":
        if origin.id == owner_id:
            return Match(owner=True)
        try:
            return Match(chats=(store.find_chat(f"telegram:{origin.id}"),), sender=telegram_user(origin.id))
        except NotFound:
            return Match(new=Chat("telegram", str(origin.id), "personal", origin.name),
                         sender=telegram_user(origin.id))
    if origin.kind in ("chat", "channel") and origin.id is not None:
        for ident in chat_ids(origin.id):
            if (found := store.chat(ChatKey("telegram", ident))) is not None:
                return Match(chats=(found,), sender=f"chat{origin.id}")
        named = store.find_chats(origin.name) if origin.name else []
        if named:
            return Match(chats=tuple(named), sender=f"chat{origin.id}")
        kind = "channel" if origin.kind == "channel" else "group"
        return Match(new=Chat("telegram", str(origin.id), kind, origin.name), sender=f"chat{origin.id}")
    found = store.find_chats(origin.name or "")
    telegram = [c for c in found if c.platform == "telegram"]
    return Match(chats=tuple(telegram or found))


def label(store, chat: Chat) -> str:
    """A chat as a button shows it: its name and platform."""
    name = chat.title
    if not name:
        people = store.chat_contacts(chat.key)
        name = store.contact_name(chat.platform, people[0]) if people else None
    return f"{shorten(name or chat.id, 40)} · {PLATFORM_NAMES.get(chat.platform, chat.platform)}"


def message_id(chat: Chat, sender: str, item: Incoming) -> str:
    """A stored id for a forwarded message: the same message forwarded twice is stored once (Telegram tells a
    bot neither the original id nor the chat of a forward from a person)."""
    digest = hashlib.sha1(f"{sender}\n{item.text}".encode()).hexdigest()[:12]
    return f"fwd-{int(item.at.timestamp())}-{digest}"
