"""Telegram Desktop JSON exports (result.json) → chat records. Exercised by `twin ingest result.json`.

Two shapes exist: a full account export (Settings → Advanced → Export Telegram data) is an object with
`personal_information` and `chats.list` / `left_chats.list`; a single-chat export is the chat object itself
(`name`, `type`, `id`, `messages`). Either can be gigabytes with a million messages in one chat, so the file
is streamed: chat-level fields are noted as they pass, and each element of a `messages` array is built whole,
one window of the text at a time, by json's C scanner (json_walk); a file that pass cannot vouch for is read
again from ijson's parse events, whose `messages` events go to ijson's object builder (the same records).

Decisions (DESIGN.md, counting rules):
- Chat types: personal_chat → personal, private_group / private_supergroup → group, saved_messages → saved,
  bot_chat → bot, private_channel / public_channel → channel, public_supergroup → public_group. `replies`,
  `verification_codes` and types this parser does not know are always skipped.
- Times come from `date_unixtime` / `edited_unixtime` (epoch seconds). Exports from before 2021 have only
  `date` (`edited`): the exporting computer's local time with no offset, read in `options.timezone` (the
  machine's local zone by default; `twin ingest --timezone`), unless the string carries `Z` or an offset.
  How many messages were dated that way is said once, in a `Note`.
- `service` and `unsupported` messages are `Skipped("service", action)`; a message without `from_id` is
  `Skipped("message", "no sender")`; in a bot chat the bot's own messages are `Skipped("bot", "bot")`.
  A message sent through an inline bot (`via_bot`) is still the person's message.
- Kind: a sticker is `sticker` with its emoji as text; `photo` → photo; voice_message → voice;
  video_message / video_file / animation → video; any other document → file; a message with no text and no
  media (a poll, a location, a contact card) is a `placeholder`. Captions stay as the media message's text.
- `reply_to` only for replies within the same chat (a `reply_to_peer_id` points into another chat).
- The owner: `personal_information.user_id` (yielded when read); else, at the end, the id of the
  saved-messages chat; else, in a personal chat, the one sender who is not the peer (whose id is not the
  chat's id, the peer's user id, and whose name is not the chat's name). Two such senders are no evidence,
  nor is a single group export: no owner is named, and ingest asks for --owner.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from twin.chat import Chat, Message, Owner, telegram_user, utc
from twin.errors import ExportError
from training.exports import Note, ParseOptions, Record, Skipped, json_walk, open_json

log = logging.getLogger(__name__)

try:  # the C backend parses several times faster than the pure-Python one
    _json = ijson.get_backend("yajl2_c")
except ImportError:
    _json = ijson.get_backend("python")

PLATFORM = "telegram"
FIX = "export again with Telegram Desktop (Format: JSON)"

# tdesktop's chat types (export_output_json.cpp, writeDialogStart) -> twin.chat.CHAT_TYPES
CHAT_TYPES = {
    "personal_chat": "personal",
    "private_group": "group",
    "private_supergroup": "group",
    "saved_messages": "saved",
    "bot_chat": "bot",
    "private_channel": "channel",
    "public_channel": "channel",
    "public_supergroup": "public_group",
}

MEDIA_KINDS = {
    "sticker": "sticker",
    "voice_message": "voice",
    "video_message": "video",
    "video_file": "video",
    "animation": "video",
    "audio_file": "file",
}

# A full export keeps its chats in two lists; a single-chat export is one chat at the top of the file.
CHAT_ROOTS = ("chats.list.item", "left_chats.list.item", "")
CHAT_FIELDS = ("name", "type", "id", "messages")
TELEGRAM_KEYS = {"chats", "left_chats", "messages", "personal_information"}
SCALARS = {"string", "number", "null", "boolean"}


def _join(root: str, key: str) -> str:
    return f"{root}.{key}" if root else key


# parse-event prefix -> (what it belongs to, which field); every other prefix is inside a message or ignored.
WATCHED: dict[str, tuple[str, str | None]] = {
    **{root: (root, None) for root in CHAT_ROOTS},
    **{_join(root, key): (root, key) for root in CHAT_ROOTS for key in CHAT_FIELDS},
    "personal_information": ("personal_information", None),
    **{f"personal_information.{key}": ("personal_information", key)
       for key in ("user_id", "first_name", "last_name")},
}

# The prefixes of the messages themselves, which json_walk builds whole.
WHOLE = frozenset(_join(root, "messages.item") for root in CHAT_ROOTS)


def parse(path: Path, options: ParseOptions) -> Iterator[Record]:
    """Each chat's `Chat` (or `Skipped("chat", type)`), then its messages, in file order; `Owner` when known.

    The fast pass (json_walk) reads plain JSON; at anything it cannot vouch for, and at any error, the file is
    read again with ijson, and the records the fast pass already gave are passed over: the same records and
    the same errors as ijson alone, whatever the file holds.
    """
    path = Path(path)
    reader = _Reader(path, options)
    given = 0
    with open_json(path) as f:
        try:
            for record in reader.read_fast(json_walk.events(f, WATCHED, WHOLE)):
                given += 1
                yield record
        except Exception as e:  # noqa: BLE001 - ijson decides what the file is
            log.info("reading the telegram export again with ijson (%s after %d records)", type(e).__name__, given)
            reader = None
    if reader is None:
        records = _parse_events(path, options)
        deque(islice(records, given), maxlen=0)
        yield from records
        return
    log.info("read telegram export: %d chats, %d messages, %d chats skipped", reader.chats, reader.messages,
             reader.chats_skipped)


def _parse_events(path: Path, options: ParseOptions) -> Iterator[Record]:
    """`parse` by ijson's events alone."""
    reader = _Reader(path, options)
    with open_json(path) as f:
        try:
            yield from reader.read(_json.parse(f))
        except (ijson.JSONError, UnicodeDecodeError) as e:
            if reader.events == 0 and _is_blank(f):
                raise ExportError(path, f"the file is empty; {FIX}") from e
            raise ExportError(
                path, f"the file is truncated or not JSON ({_short(e)}, after {reader.messages} messages); "
                      f"{FIX}",
            ) from e
    log.info("read telegram export: %d chats, %d messages, %d chats skipped", reader.chats, reader.messages,
             reader.chats_skipped)


@dataclass
class _Head:
    """What is known about a chat object so far: its fields as they pass, and whether it was announced."""

    root: str
    name: str | None = None
    type: str | None = None
    id: Any = None
    announced: bool = False
    early: bool = False  # its `messages` came before its type or id: an error once the object ends


class _Reader:
    """One pass over one file's parse events; the counters are for the log and for error messages."""

    def __init__(self, path: Path, options: ParseOptions):
        self.path = path
        self.options = options
        self.heads: dict[str, _Head] = {}
        self.top_keys: list[str] = []
        self.personal: dict[str, Any] = {}
        # Owner clues, strongest first: personal_information, the saved-messages chat, a personal chat's other side.
        self.owner_said = False
        self.saved_id: str | None = None
        # personal chat id -> its senders who are not the peer (neither the chat's id nor its name), at most 2
        self.not_the_peer: dict[str, dict[str, str | None]] = {}
        self.built: list[Any] = ijson.sendable_list()
        self.reading: Chat | None = None  # the chat whose messages are being built
        self.feed: Any = None  # the builder for the messages array being read, when its chat is imported
        self.events = self.messages = self.chats = self.chats_skipped = 0
        self.local_dates = 0  # messages dated from `date` read in options.timezone (no offset in the file)

    def read(self, events: Iterable[tuple[str, str, Any]]) -> Iterator[Record]:
        # The hot loop: a million-message file is ~28M events, so the common path is two checks per event.
        watched, built, feed = WATCHED, self.built, None
        for event in events:
            if event[0] in watched:
                self.events += 1
                yield from self._note(*event)
                feed = self.feed
            elif feed is not None:
                feed(event)
                if built:
                    yield from self._messages(built)
                    built.clear()
        yield from self._finish()

    def read_fast(self, events: Iterable[tuple[str, str, Any]]) -> Iterator[Record]:
        """`read` over json_walk's events: the watched ones, and the messages in lists."""
        for prefix, event, value in events:
            if event == "values":
                if self.feed is not None:
                    yield from self._messages(value)
            else:
                self.events += 1
                yield from self._note(prefix, event, value)
        yield from self._finish()

    def _note(self, prefix: str, event: str, value: Any) -> Iterable[Record]:
        root, key = WATCHED[prefix]
        if root == "personal_information":
            return self._personal(key, event, value)
        if key is None:
            return self._bounds(root, event, value)
        head = self.heads.get(root)
        if head is None:
            return ()
        if key == "messages":
            if event == "start_array":
                return self._open_messages(head)
            if event == "end_array":
                self.feed = None
        elif event in SCALARS:
            setattr(head, key, value)
        return ()

    def _bounds(self, root: str, event: str, value: Any) -> Iterable[Record]:
        """A chat object starts or ends; at the top of the file, also the export's own keys."""
        if root == "" and self.events == 1 and event != "start_map":
            raise ExportError(self.path, f"expected a Telegram Desktop export (an object with 'chats' or "
                                         f"'messages'), got a JSON {'list' if event == 'start_array' else 'value'}"
                                         f"; {FIX}")
        if event == "start_map":
            self.heads[root] = _Head(root)
        elif event == "map_key" and root == "":
            self.top_keys.append(value)
        elif event == "end_map":
            head = self.heads.pop(root, None)
            if head is not None and head.early:
                self._refuse_early(head)
            if head is not None and not head.announced and head.type is not None:
                return [self._announce(head)]  # a chat without a `messages` array
        return ()

    def _refuse_early(self, head: _Head) -> None:
        """A chat whose messages came before its type or id: name what is missing, or blame the key order."""
        where = "the top-level object" if head.root == "" else "a chat in the list"
        if head.name is not None:
            where += f" ({str(head.name)[:40]!r})"
        missing = [k for k in ("type", "id") if getattr(head, k) is None]
        if missing:
            # No derived id: a chat's id is what keeps re-imports in the same chat and tells the peer from
            # the owner, and files without it are not Telegram Desktop output.
            raise ExportError(self.path, f"{where} has no {' and no '.join(repr(k) for k in missing)}, which "
                                         f"every Telegram Desktop export writes; {FIX}")
        raise ExportError(self.path, f"{where} has 'messages' before its 'type' and 'id', which Telegram "
                                     f"Desktop never writes; {FIX}")

    def _open_messages(self, head: _Head) -> Iterable[Record]:
        if head.type is None or head.id is None:
            # tdesktop writes name, type and id before messages; without them the messages have no chat.
            # The array is passed over unread; the chat's end says whether the keys are missing or late.
            head.early = True
            return ()
        record = self._announce(head)
        if isinstance(record, Chat):
            self.reading = record
            # Build only this array's elements; ijson's items_basecoro takes events and emits whole objects.
            self.feed = _json.items_basecoro(self.built, _join(head.root, "messages.item")).send
        return [record]

    def _announce(self, head: _Head) -> Chat | Skipped:
        """The chat's Chat record, or why it is skipped; decides whether its messages are read."""
        head.announced = True
        chat_id = str(head.id)
        if head.type == "saved_messages":
            self.saved_id = chat_id
        chat_type = CHAT_TYPES.get(str(head.type))
        if chat_type not in self.options.chat_types:
            self.chats_skipped += 1
            log.info("skipping a telegram %s chat", chat_type or head.type)
            return Skipped("chat", chat_type or str(head.type))
        self.chats += 1
        return Chat(PLATFORM, chat_id, chat_type, head.name)

    def _messages(self, built: list[Any]) -> Iterator[Record]:
        chat = self.reading
        for raw in built:
            self.messages += 1
            record = to_record(self.path, chat, raw, self.options.timezone)
            if isinstance(record, Message) and "date_unixtime" not in raw and _is_naive(raw.get("date")):
                self.local_dates += 1
            yield record
            if (not self.owner_said and chat.type == "personal" and isinstance(record, Message)
                    and record.sender_id != telegram_user(chat.id) and (chat.title is None or record.sender_name != chat.title)):
                # In a personal chat the chat's id is the peer's user id (and its name the peer's name), so a
                # sender who is neither is the owner: evidence only while there is one such sender.
                others = self.not_the_peer.setdefault(chat.id, {})
                if len(others) < 2:
                    others.setdefault(record.sender_id, record.sender_name)

    def _personal(self, key: str | None, event: str, value: Any) -> Iterable[Record]:
        if key is not None and event in SCALARS:
            self.personal[key] = value
        elif key is None and event == "end_map" and self.personal.get("user_id") is not None:
            self.owner_said = True
            name = " ".join(str(self.personal[k]) for k in ("first_name", "last_name") if self.personal.get(k))
            return [Owner(PLATFORM, telegram_user(self.personal['user_id']), name or None)]
        return ()

    def _finish(self) -> Iterable[Record]:
        if not TELEGRAM_KEYS & set(self.top_keys):
            raise ExportError(self.path, f"expected a Telegram Desktop export (an object with 'chats' or "
                                         f"'messages'), got keys {sorted(set(self.top_keys))[:10]}; {FIX}")
        notes: list[Record] = []
        if self.local_dates:
            zone = getattr(self.options.timezone, "key", None) or "this machine's local zone"
            n = self.local_dates
            notes.append(Note(f"{n} message{'s have' if n != 1 else ' has'} no 'date_unixtime' (an export from "
                              f"before 2021): {'their' if n != 1 else 'its'} 'date' was read as {zone}; pass "
                              "--timezone ZONE if that is not where the export was made"))
        if self.owner_said:
            return notes
        if self.saved_id is not None:
            # Saved Messages is the owner's chat with themself: its id is the owner's user id.
            return [*notes, Owner(PLATFORM, telegram_user(self.saved_id))]
        for others in self.not_the_peer.values():
            if len(others) == 1:
                [(uid, name)] = others.items()
                return [*notes, Owner(PLATFORM, uid, name)]
        return notes  # no evidence: ingest asks for --owner


def to_record(path: Path, chat: Chat, raw: Any, zone: tzinfo | None = None) -> Message | Skipped:
    """One element of a chat's `messages` as a Message, or why it is not one.

    >>> to_record(Path("result.json"), Chat("telegram", "2002", "personal"),
    ...           {"id": 7, "type": "message", "date_unixtime": "1700000000", "from": "Tomas",
    ...            "from_id": "user2002", "text": ["see ", {"type": "bold", "text": "you"}]}).text
    'see you'
    """
    if not isinstance(raw, dict):
        raise ExportError(path, f"chat {chat.id}: a message is a {type(raw).__name__}, not an object; {FIX}")
    kind = raw.get("type", "message")
    if kind == "service":
        return Skipped("service", str(raw.get("action") or "service"))
    if kind != "message":
        return Skipped("service", str(kind))  # "unsupported": an entry tdesktop could not export
    mid = raw.get("id")
    if mid is None:
        raise ExportError(path, f"chat {chat.id}: a message has no 'id'; {FIX}")
    sender = raw.get("from_id")
    sender = (sender or None) if type(sender) is str else _sender_id(sender)  # a string: the common case, no call
    if sender is None:
        return Skipped("message", "no sender")
    if chat.type == "bot" and sender == telegram_user(chat.id):
        return Skipped("bot", "bot")
    text = raw.get("text")
    if type(text) is not str:
        text = text_of(raw)
    if "media_type" in raw or "photo" in raw or "file" in raw:
        msg_kind = kind_of(raw, text)
        if msg_kind == "sticker":
            text = str(raw.get("sticker_emoji") or "")
    else:  # kind_of without media fields
        msg_kind = "text" if text else "placeholder"
    unix = raw.get("date_unixtime")
    edited = raw.get("edited_unixtime")
    reply_to = raw.get("reply_to_message_id")
    return Message(  # positional (a million calls): platform, chat_id, id, sender_id, sender_name, time, text, kind...
        PLATFORM, chat.id, str(mid), sender, raw.get("from") or None,
        datetime.fromtimestamp(int(unix), timezone.utc) if type(unix) is str and unix.isdigit() else
        _time(path, chat, raw, "date", zone),  # the common case without a call
        text, msg_kind,
        str(reply_to) if reply_to is not None and "reply_to_peer_id" not in raw else None,  # reply_to
        "forwarded_from" in raw,  # forwarded
        _time(path, chat, raw, "edited", zone) if edited is not None or "edited" in raw else None,  # edited
    )


def text_of(raw: dict[str, Any]) -> str:
    """The message's text: `text`, a string or a list of strings and entities, flattened; `text_entities`
    only when `text` is missing. `text` wins where they disagree: some tools write placeholders ("...")
    into `text_entities`, and exports from before 2021 have no `text_entities` at all.

    >>> text_of({"text": ["call ", {"type": "phone", "text": "+100"}, "!"]})
    'call +100!'
    >>> text_of({"text": "real", "text_entities": [{"type": "plain", "text": "..."}]})
    'real'
    """
    parts = raw.get("text")
    if parts is None:
        parts = raw.get("text_entities")
    if not isinstance(parts, list):
        return parts if isinstance(parts, str) else ""
    return "".join([p if isinstance(p, str) else str(p.get("text") or "")
                    for p in parts if isinstance(p, str | dict)])


def kind_of(raw: dict[str, Any], text: str) -> str:
    """The message kind from its media fields; with none, text or a placeholder (a poll, a location).

    >>> kind_of({"media_type": "voice_message", "file": "voice.ogg"}, ""), kind_of({"poll": {}}, "")
    ('voice', 'placeholder')
    """
    media = raw.get("media_type")
    if media == "sticker":
        return "sticker"
    if "photo" in raw:
        return "photo"
    if media is not None or "file" in raw:
        return MEDIA_KINDS.get(media, "file") if isinstance(media, str) or media is None else "file"
    return "text" if text else "placeholder"


def _sender_id(from_id: Any) -> str | None:
    """`from_id` as twin keeps it: "user123" (old exports wrote the bare number for users)."""
    if isinstance(from_id, int):
        return telegram_user(from_id)
    return str(from_id) if from_id else None


def _time(path: Path, chat: Chat, raw: dict[str, Any], key: str, zone: tzinfo | None) -> datetime:
    """`<key>_unixtime` as UTC; without it (exports from before 2021), `<key>`: ISO local time in `zone`
    (None: the machine's local zone), unless the string has `Z` or an offset.

    >>> _time(Path("r.json"), Chat("telegram", "1", "personal"), {"date": "2020-03-01T10:00:00Z"}, "date", None)
    datetime.datetime(2020, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
    """
    unix = raw.get(f"{key}_unixtime")
    if unix is not None:
        try:
            return utc(int(unix))
        except (TypeError, ValueError) as e:
            raise ExportError(path, f"chat {chat.id}, message {raw.get('id')} has a bad {str(unix)[:20]!r} as "
                                    f"'{key}_unixtime'; {FIX}") from e
    value = raw.get(key)
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as e:
        problem = f"neither {key!r} nor" if value is None else f"a bad {str(value)[:30]!r} as {key!r} and no"
        raise ExportError(path, f"chat {chat.id}, message {raw.get('id')} has {problem} '{key}_unixtime'; "
                                f"{FIX}") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone) if zone is not None else when.astimezone()
    return when.astimezone(timezone.utc)


def _is_naive(value: Any) -> bool:
    """Whether a `date` string has no offset (so the zone it was read in was a guess)."""
    return isinstance(value, str) and not value.endswith("Z") and "+" not in value[10:] and "-" not in value[10:]


def _is_blank(f: BinaryIO) -> bool:
    f.seek(0)
    while chunk := f.read(1 << 16):
        if chunk.lstrip(b"\xef\xbb\xbf \t\r\n"):
            return False
    return True


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__
