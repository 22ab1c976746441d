"""Chat-export parsers: each turns one export file into a stream of records, without loading it whole.

A parser is `parse(path, options) -> Iterator[Record]`. It yields a `Chat` before that chat's messages,
`Message`s for what people sent (service events and bot messages never), `Owner` when the file says who
the owner is (possibly after the messages), `Skipped` for each chat, event or line it deliberately leaves
out, so nothing is dropped silently, and `Note` for a guess the user should hear of once. It raises `ExportError(path, ...)` for input it cannot read, with a message
that says what to do. `detect(path)` names the format from the file's first bytes.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import BinaryIO

from twin.chat import DEFAULT_CHAT_TYPES, Chat, Message, Owner
from twin.errors import ExportError


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something a parser deliberately left out: what ("chat", "service", "bot"), and why (a chat type...)."""

    what: str
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something the user should hear once about how a file was read (a guess the parser had to make)."""

    text: str


Record = Chat | Message | Owner | Skipped | Note


@dataclass(frozen=True)
class ParseOptions:
    """`chat_types`: which normalised chat types to import (twin.chat.CHAT_TYPES). `timezone`: the zone of
    times an export writes without an offset (old Telegram `date`); None is the machine's local zone."""

    chat_types: frozenset[str] = field(default=DEFAULT_CHAT_TYPES)
    timezone: tzinfo | None = None


Parser = Callable[[Path, ParseOptions], Iterator[Record]]

# format name -> module that defines parse(path, options)
FORMATS = {
    "telegram": "training.exports.telegram_desktop",
    "discord": "training.exports.discord_exporter",
    "whatsapp": "training.exports.whatsapp_txt",
}


def open_json(path: Path) -> BinaryIO:
    """A JSON export opened in binary for streaming, past a UTF-8 byte-order mark (which ijson rejects)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ExportError(path, f"cannot read ({e.strerror}); check the path and its permissions") from e
    if f.read(3) != b"\xef\xbb\xbf":
        f.seek(0)
    return f


def parser_for(fmt: str) -> Parser:
    return importlib.import_module(FORMATS[fmt]).parse


def detect(path: Path) -> str:
    """The export format of a file, from its name and first bytes.

    A JSON object with "chats", "messages" + "type"/"name" is Telegram Desktop; one with "guild" and
    "channel" is DiscordChatExporter; a .txt or .zip whose lines start with a date is WhatsApp.
    """
    if zipfile.is_zipfile(path):
        return "whatsapp"
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError as e:
        raise ExportError(path, f"cannot read ({e.strerror}); check the path and its permissions") from e
    if not head.strip():
        raise ExportError(path, "the file is empty; export the chat again")
    # WhatsApp on some phones writes UTF-16: a BOM, or NUL bytes between ASCII characters, says so.
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:4096]
    text = head.decode("utf-16" if utf16 else "utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        if '"guild"' in text and '"channel"' in text:
            return "discord"
        if any(k in text for k in ('"chats"', '"messages"', '"personal_information"', '"left_chats"')):
            return "telegram"
        raise ExportError(
            path,
            "a JSON file that is neither a Telegram Desktop export (an object with 'chats' or 'messages') nor a "
            "DiscordChatExporter export ('guild' and 'channel'); export again as JSON, or pass --format",
        )
    from training.exports import whatsapp_lines

    # iOS WhatsApp lines start with "[" too ("[01/01/19 11:25] Name: text"): its header check comes first.
    if whatsapp_lines.looks_like(text):
        return "whatsapp"
    if text.startswith("["):
        raise ExportError(path, "a JSON list is no chat export; export again with Telegram Desktop "
                                "(Format: JSON) or DiscordChatExporter (-f Json), or pass --format")
    raise ExportError(
        path,
        "not a chat export twin knows (Telegram Desktop JSON, DiscordChatExporter JSON, WhatsApp .txt/.zip); "
        "check the file or pass --format",
    )
