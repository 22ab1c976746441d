"""The chat model: the values every parser produces and every later stage consumes.

Parsers turn an export into a stream of `Chat`, `Message` and `Owner` records (see `training.exports`);
the store persists them; training and drafting read them back. All times are timezone-aware UTC.

    >>> m = Message("telegram", "42", "7", "user42", "Tomas", utc(1_700_000_000), "hi")
    >>> m.time.isoformat()
    '2023-11-14T22:13:20+00:00'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

PLATFORMS = ("telegram", "discord", "whatsapp")


def telegram_user(uid: int | str) -> str:
    """A Telegram person's id as twin stores it, as Telegram's exports write `from_id`: `telegram_user(123)` ->
    'user123'. The live relay stores its users the same way, so an exported chat and a live one are one chat."""
    return f"user{uid}"


def identities(ident: str) -> tuple[str, str]:
    """The ways an id a person types (twin.toml, --owner, platform:id) may be stored: as it is, or as a Telegram
    user. `identities("123")` -> ('123', 'user123')."""
    return ident, telegram_user(ident)

# What a message carries. Only `text` messages (and captions of media) are text to learn from; the other
# kinds are kept so that counts and context are true (DESIGN.md, counting rules).
KINDS = ("text", "sticker", "photo", "voice", "video", "file", "placeholder")

# Chat types, normalised across platforms. `personal` and `group` are imported by default; the others only
# when asked for with `--include` (DESIGN.md: saved messages, bot chats, channels, public groups).
CHAT_TYPES = ("personal", "group", "saved", "bot", "channel", "public_group")
DEFAULT_CHAT_TYPES = frozenset({"personal", "group"})


def utc(seconds: float) -> datetime:
    """A UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclass(frozen=True, slots=True)
class Chat:
    """One conversation: a DM, a group, a channel. `id` is the platform's id as a string."""

    platform: str
    id: str
    type: str
    title: str | None = None

    @property
    def key(self) -> ChatKey:
        return ChatKey(self.platform, self.id)


@dataclass(frozen=True)
class ChatKey:
    """How the store names a chat: `Chat("telegram", "2002", "personal").key` -> ChatKey('telegram', '2002')."""

    platform: str
    chat_id: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message a person sent. Service events and bot messages never become a Message.

    `sender_id` is the platform identity ("user123" on Telegram, a snowflake on Discord, the name as
    shown on WhatsApp, which has no ids). `text` is "" for media without a caption; a sticker's text is
    its emoji.
    """

    platform: str
    chat_id: str
    id: str
    sender_id: str
    sender_name: str | None
    time: datetime
    text: str
    kind: str = "text"
    reply_to: str | None = None
    forwarded: bool = False
    edited: datetime | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """The export says who the owner is: this identity on this platform."""

    platform: str
    id: str
    name: str | None = None
