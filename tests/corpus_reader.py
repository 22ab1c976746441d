"""A reference reader for the external export corpus: counts per file by DESIGN.md's counting rules, written
apart from training/exports (it imports nothing of twin's), so that tests/test_external_corpus.py checks the
parsers against an independent reading.

It counts messages, chats and senders and collects the texts to learn from; it reads no dates and builds no ids.
One function per format, each short enough to check by eye against the rule it implements:

    >>> count_whatsapp_text("1/1/21, 12:00 - A: Hi\\nthere\\n1/1/21, 12:01 - A created group \\"x\\"\\n")
    Counts(messages=1, chats=1, texts=('Hi\\nthere',), senders=(('A', 1),))
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Counts:
    messages: int  # non-service messages a person sent
    chats: int  # chats imported (by default) that hold at least one message
    texts: tuple[str, ...]  # the texts to learn from (messages' text or media captions, stripped), sorted
    senders: tuple[tuple[str, int], ...]  # (sender, messages), first seen first; Telegram from_id, Discord
    # author id, WhatsApp name: the identities DESIGN.md counts contacts by


def _counts(per_chat: list[list[tuple[str, str]]]) -> Counts:
    """per_chat: for each chat, its messages as (sender, text to learn from or "")."""
    senders: dict[str, int] = {}
    for s, _ in (m for chat in per_chat for m in chat):
        senders[s] = senders.get(s, 0) + 1
    texts = sorted(t.strip() for chat in per_chat for _, t in chat if t.strip())
    return Counts(messages=sum(map(len, per_chat)), chats=sum(1 for chat in per_chat if chat),
                  texts=tuple(texts), senders=tuple(senders.items()))


# --- Telegram Desktop JSON -------------------------------------------------------------------------------------
# Skipped by default (DESIGN.md): saved messages, bot chats, channels, public supergroups. Everything else is
# imported, including a chat without a type (minimal exports) and the non-standard private_chat/group_chat.
TELEGRAM_SKIPPED = {"saved_messages", "bot_chat", "public_channel", "private_channel", "public_supergroup"}


def _telegram_text(text) -> str:
    """`text` is a string, or a list of strings and entity objects ({"type": "bold", "text": "..."})."""
    if isinstance(text, list):
        return "".join(t if isinstance(t, str) else t.get("text", "") for t in text)
    return text or ""


def count_telegram(data: dict) -> Counts:
    """
    >>> chat = lambda type_, *ms: {"type": type_,
    ...                            "messages": [{"type": t, "from_id": "user1", "text": x} for t, x in ms]}
    >>> count_telegram({"chats": {"list": [
    ...     chat("personal_chat", ("message", "hi"), ("service", ""), ("message", [{"type": "bold", "text": "yes"}]),
    ...          ("message", "")),
    ...     chat("public_channel", ("message", "news"))]}})
    Counts(messages=3, chats=1, texts=('hi', 'yes'), senders=(('user1', 3),))
    """
    chats = data["chats"]["list"] if "chats" in data else [data]
    per_chat = []
    for chat in chats:
        if chat.get("type") in TELEGRAM_SKIPPED:
            continue
        # `type: service` entries are events (joins, calls, pins), not messages. A repeated id is one message.
        msgs = [m for m in chat.get("messages", []) if m.get("type") == "message"]
        unique = {m["id"] if "id" in m else ("no id", i): m for i, m in enumerate(msgs)}.values()
        per_chat.append([(str(m.get("from_id") or m.get("from")),
                          _telegram_text(m.get("text"))) for m in unique])
    return _counts(per_chat)


def telegram_owner(data: dict) -> str | None:
    """A full export says who its owner is (personal_information.user_id); a single-chat export does not."""
    uid = data.get("personal_information", {}).get("user_id")
    return None if uid is None else f"user{uid}"


# --- DiscordChatExporter JSON ------------------------------------------------------------------------------------
# Only Default and Reply are messages a person wrote; Call, GuildMemberJoin, ChannelNameChange, ThreadCreated...
# are events. Bots' messages are not the owner's nor a contact's. One export file is one channel.
DISCORD_MESSAGE_TYPES = {"Default", "Reply"}


def count_discord(data: dict) -> Counts:
    """
    >>> m = lambda i, type_, bot=False, text="x": {"id": i, "type": type_, "author": {"id": "7", "isBot": bot},
    ...                                            "content": text}
    >>> count_discord({"messages": [m(1, "Default"), m(1, "Default"), m(2, "Reply", text=""), m(3, "Call"),
    ...                             m(4, "Default", bot=True)]})
    Counts(messages=2, chats=1, texts=('x',), senders=(('7', 2),))
    """
    msgs = [m for m in data["messages"] if m["type"] in DISCORD_MESSAGE_TYPES and not m["author"].get("isBot")]
    unique = {m["id"]: m for m in msgs}.values()  # DCE can write a message twice; one id is one message
    return _counts([[(m["author"]["id"], m["content"]) for m in unique]])


# --- WhatsApp .txt / .zip ------------------------------------------------------------------------------------
# A message starts with a header line: Android `DATE, TIME - ` or iOS `[DATE, TIME] ` (also without the
# brackets, as whatsapp-chat-parser and the Ruby parser whose sample this corpus holds accept). Generous on
# purpose: any of / . - between 1-4 digit date parts, the comma optional (or German `um`), seconds optional, a
# dot after the time, AM/PM in any spelling (`PM`, `p.m.`, `p. m.` with a plain or no-break space). Any other
# line continues the message above it. After the header, `Sender: text` is a message; a line with no sender is a
# system event ("Alice created group", "You were added").
_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_TIME = r"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\s*[AaPp]\.?\s*[Mm]\.?)?\.?"
_STAMP = rf"{_DATE}(?:,|\s+um)?\s+{_TIME}"
HEADER = re.compile(rf"^(?:\[{_STAMP}\]\s?|{_STAMP}(?:\s+-)?\s)(?P<rest>.*)$")
SENDER = re.compile(r"^(?P<sender>[^:]+?):(?P<text>.*)$", re.S)
# The encryption notice, with or without a sender (some exports attribute it to the chat's name).
ENCRYPTION = re.compile(r"^(Messages and calls are end-to-end encrypted|Messages (you send )?to this (group|chat) "
                        r"are now secured with end-to-end encryption)")
# Placeholders WhatsApp writes instead of the content: stored as messages, not as text.
PLACEHOLDER = re.compile(r"^(<media omitted>|<attached: .*>|(image|video|audio|sticker|GIF|document) omitted|"
                         r"this message was deleted|you deleted this message|null)$", re.I)


def count_whatsapp_text(text: str) -> Counts:
    r"""
    >>> count_whatsapp_text("[15/12/2025, 10:32:03 AM] Pokemon Chat: Messages and calls are end-to-end encrypted.\n"
    ...                     "9/24/2019 11:30 p. m. - Ann:.\n2022/12/14, 13:34. - Bo: <Media omitted>\n"
    ...                     "04.02.17 um 22:45 - Ann: ok\n04.02.17 um 22:45 - You were added\n"
    ...                     "goes with the system line\n15/12/2025, 10:34:00 AM Cy: hi")
    Counts(messages=4, chats=1, texts=('.', 'hi', 'ok'), senders=(('Ann', 2), ('Bo', 1), ('Cy', 1)))
    """
    messages: list[list] = []  # [sender, text], the text growing with continuation lines
    current = None
    for line in text.splitlines():
        header = HEADER.match(line.lstrip("\ufeff\u200e"))
        if not header:
            if current is not None:
                current[1] += "\n" + line
            continue
        sent = SENDER.match(header["rest"].lstrip("\u200e"))
        current = [sent["sender"].strip(), sent["text"]] if sent else None
        if current is not None:
            messages.append(current)
    kept = [(s, t.strip("\u200e \n")) for s, t in messages if not ENCRYPTION.match(t.strip("\u200e "))]
    return _counts([[(s, "" if PLACEHOLDER.match(t) else t) for s, t in kept]])


def whatsapp_text(path: Path) -> str:
    """The chat's text: the .txt itself, or the one .txt inside a .zip (`_chat.txt` on iOS)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            (name,) = [n for n in z.namelist() if n.endswith(".txt")]
            return z.read(name).decode("utf-8-sig")
    return path.read_text(encoding="utf-8-sig")


def read_reference(path: Path) -> Counts:
    """The counts for one file of the corpus; its platform is the folder it lies in."""
    platform = path.parent.name
    if platform == "whatsapp":
        return count_whatsapp_text(whatsapp_text(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    return count_telegram(data) if platform == "telegram" else count_discord(data)
