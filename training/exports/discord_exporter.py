"""DiscordChatExporter JSON → chat records. Exercised by `twin ingest channel.json` (`--format discord`).

DiscordChatExporter (DCE, `-f Json`) writes one file per channel: an object with `guild`, `channel`,
`dateRange`, `exportedAt`, `messages` and `messageCount`. The messages array can be gigabytes, so it is
streamed with ijson (its C backend when installed) and never loaded whole.

Decisions (DESIGN.md, counting rules):
- Chat type: a DM (`DirectTextChat`, or guild id "0") is `personal`; a group DM is `group`. A server's text
  channel, voice-channel chat, thread or forum post is `group` too: DCE does not say whether a server is
  public, and a user exports a server channel on purpose. Announcement channels (`GuildNews`) and their
  threads broadcast rather than converse, so they are `channel` and skipped unless asked for.
- Only `Default` and `Reply` messages are messages; every other kind (joins, pins, calls, thread notices,
  kinds DCE writes as numbers) is a `Skipped("service", kind)`. Bot authors are `Skipped("bot", "bot")`.
- Kind: the first attachment's file extension decides (photo, video, voice, else file), the content staying
  as its caption; a message with only stickers is a `sticker` whose text is the sticker's name; a message with
  nothing readable (no content, attachments or stickers: an embed-only post, an empty forward) is a
  `placeholder`.
- A forward (`forwardedMessage`, or a reference of type Forward) is `forwarded=True` and carries the
  forwarded content when the message has none of its own. A reference into another channel is not a reply
  in this chat, so it does not become `reply_to`.
- DCE writes no exporting user, so no `Owner` record: ingest takes the owner from --owner or twin.toml.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import ijson

from twin.chat import Chat, Message
from twin.errors import ExportError
from training.exports import ParseOptions, Record, Skipped, open_json

log = logging.getLogger(__name__)

PLATFORM = "discord"

# DCE writes MessageKind by name; these two are what people type. Kinds DCE has no name for come out as
# numbers, and 0/19 are Discord's numbers for the same two (Discord API, message types).
MESSAGE_KINDS = {"Default", "Reply", "0", "19"}

# ChannelKind names (DCE `Discord/Data/ChannelKind.cs`) -> twin chat types.
CHANNEL_TYPES = {
    "DirectTextChat": "personal",
    "DirectGroupTextChat": "group",
    "GuildTextChat": "group",
    "GuildVoiceChat": "group",
    "GuildStageVoice": "group",
    "GuildPublicThread": "group",
    "GuildPrivateThread": "group",
    "GuildForum": "group",
    "GuildNews": "channel",
    "GuildNewsThread": "channel",
}

EXTENSION_KINDS = {
    **dict.fromkeys(("png", "jpg", "jpeg", "gif", "webp", "heic", "bmp"), "photo"),
    **dict.fromkeys(("mp4", "mov", "webm", "mkv", "avi"), "video"),
    # Discord's voice messages are voice-message.ogg.
    **dict.fromkeys(("ogg", "oga", "opus", "mp3", "m4a", "wav", "flac", "aac"), "voice"),
}

FIX = "export the channel again with DiscordChatExporter (-f Json)"


def parse(path: Path, options: ParseOptions) -> Iterator[Record]:
    """The channel's `Chat`, then a `Message` or `Skipped` for every entry of `messages`, in file order."""
    path = Path(path)
    guild, channel = _read_head(path)
    chat = chat_of(path, guild, channel)
    if chat.type not in options.chat_types:
        log.info("skipping a discord %s chat (not in the chat types to import)", chat.type)
        yield Skipped("chat", chat.type)
        return
    yield chat
    counted = 0
    with open_json(path) as f:
        try:
            for index, raw in enumerate(ijson.items(f, "messages.item")):
                yield to_record(path, chat.id, index, raw)
                counted += 1
        except ijson.JSONError as e:
            raise ExportError(
                path, f"the JSON breaks off or is malformed after message {counted} ({_short(e)}); "
                      f"the file is probably truncated: {FIX}",
            ) from e
    log.info("read %d discord entries", counted)


def chat_of(path: Path, guild: dict[str, Any], channel: dict[str, Any]) -> Chat:
    """The chat a DCE file holds, from its `guild` and `channel` objects.

    >>> chat_of(Path("dm.json"), {"id": "0", "name": "Direct Messages"},
    ...         {"id": "55", "type": "DirectTextChat", "name": "tomas"})
    Chat(platform='discord', id='55', type='personal', title='tomas')
    """
    channel_id = channel.get("id")
    if not isinstance(channel_id, str | int) or str(channel_id) == "":
        raise ExportError(path, f"'channel' has no 'id' (keys {sorted(channel)}); {FIX}")
    kind = str(channel.get("type", ""))
    direct = str(guild.get("id", "")) == "0"
    chat_type = CHANNEL_TYPES.get(kind) or ("personal" if direct else "group")
    name = channel.get("name") or None
    if not direct and guild.get("name") and name:
        title = f"{guild['name']} #{name}"
    else:
        title = name
    return Chat(PLATFORM, str(channel_id), chat_type, title)


def to_record(path: Path, chat_id: str, index: int, raw: Any) -> Message | Skipped:
    """One entry of `messages` as a Message, or why it is not one."""
    if not isinstance(raw, dict):
        raise ExportError(path, f"messages[{index}] is a {type(raw).__name__}, not an object; {FIX}")
    kind = str(_need(path, raw, "type", index))
    if kind not in MESSAGE_KINDS:
        return Skipped("service", kind)
    author = _need(path, raw, "author", index)
    if not isinstance(author, dict) or "id" not in author:
        raise ExportError(path, f"messages[{index}].author has no 'id'; {FIX}")
    if author.get("isBot"):
        return Skipped("bot", "bot")
    msg_kind, text, forwarded = _content(raw)
    edited = raw.get("timestampEdited")
    return Message(
        platform=PLATFORM,
        chat_id=chat_id,
        id=str(_need(path, raw, "id", index)),
        sender_id=str(author["id"]),
        sender_name=author.get("nickname") or author.get("name") or None,
        time=_time(path, _need(path, raw, "timestamp", index), index),
        text=text,
        kind=msg_kind,
        reply_to=_reply_to(raw, chat_id),
        forwarded=forwarded,
        edited=_time(path, edited, index) if edited else None,
    )


def kind_of_file(name: str) -> str:
    """A message kind from an attachment's file name.

    >>> kind_of_file("voice-message.ogg"), kind_of_file("IMG_01.JPG"), kind_of_file("notes.pdf")
    ('voice', 'photo', 'file')
    """
    suffix = PurePosixPath(name).suffix.lower().lstrip(".")
    return EXTENSION_KINDS.get(suffix, "file")


def _content(raw: dict[str, Any]) -> tuple[str, str, bool]:
    """(kind, text, forwarded) of a person's message."""
    forward = raw.get("forwardedMessage")
    reference = raw.get("reference") or {}
    forwarded = forward is not None or str(reference.get("type")) in ("Forward", "1")
    source = raw
    if isinstance(forward, dict) and not _has_payload(raw):
        source = forward
    content = source.get("content") or ""
    attachments = source.get("attachments") or []
    stickers = source.get("stickers") or []
    if attachments:
        return kind_of_file(str(attachments[0].get("fileName") or "")), content, forwarded
    if stickers and not content:
        return "sticker", str(stickers[0].get("name") or ""), forwarded
    if content:
        return "text", content, forwarded
    return "placeholder", "", forwarded


def _has_payload(raw: dict[str, Any]) -> bool:
    return bool(raw.get("content") or raw.get("attachments") or raw.get("stickers"))


def _reply_to(raw: dict[str, Any], chat_id: str) -> str | None:
    reference = raw.get("reference")
    if not isinstance(reference, dict) or not reference.get("messageId"):
        return None
    if str(reference.get("type")) in ("Forward", "1"):
        return None
    if reference.get("channelId") and str(reference["channelId"]) != chat_id:
        return None
    return str(reference["messageId"])


def _time(path: Path, value: Any, index: int) -> datetime:
    """A DCE timestamp (ISO 8601, local offset unless exported with --utc) as UTC.

    A timestamp without an offset is taken as UTC: DCE always writes one, so this is a hand-edited file.
    """
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError as e:
        raise ExportError(path, f"messages[{index}] has a timestamp {str(value)[:40]!r} that is not ISO 8601; "
                                f"{FIX}") from e
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def _need(path: Path, raw: dict[str, Any], key: str, index: int) -> Any:
    if raw.get(key) is None:
        raise ExportError(path, f"messages[{index}] has no {key!r} (keys {sorted(raw)[:12]}); {FIX}")
    return raw[key]


def _read_head(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`guild` and `channel`, read from the stream up to `messages` (DCE writes them first)."""
    found: dict[str, Any] = {}
    saw_messages = False
    with open_json(path) as f:
        events = ijson.parse(f)
        try:
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise ExportError(path, f"expected a JSON object with 'guild', 'channel' and 'messages'; {FIX}")
            for prefix, event, value in events:
                if prefix != "" or event != "map_key":
                    continue
                if value in ("guild", "channel"):
                    found[value] = _build(events)
                elif value == "messages":
                    saw_messages = True
                    _, kind, _ = next(events)
                    if kind != "start_array":
                        raise ExportError(path, f"'messages' is not a list; {FIX}")
                    if len(found) == 2:
                        break
                    # Not DCE's key order: skip over the array to find guild/channel after it.
                    _skip(events, 1)
        except ijson.JSONError as e:
            raise ExportError(path, f"not valid JSON ({_short(e)}); {FIX}") from e
    missing = [k for k in ("guild", "channel") if k not in found] + ([] if saw_messages else ["messages"])
    if missing:
        raise ExportError(path, f"not a DiscordChatExporter export: no {', '.join(map(repr, missing))}; {FIX}")
    guild, channel = found["guild"], found["channel"]
    if not isinstance(guild, dict) or not isinstance(channel, dict):
        raise ExportError(path, f"'guild' and 'channel' must be objects; {FIX}")
    return guild, channel


def _build(events: Iterator[tuple[str, str, Any]]) -> Any:
    """The next complete JSON value from an ijson event stream."""
    builder = ijson.ObjectBuilder()
    depth = 0
    for _, event, value in events:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if depth == 0:
            return builder.value
    raise ijson.IncompleteJSONError("the value breaks off")


def _skip(events: Iterator[tuple[str, str, Any]], depth: int) -> None:
    for _, event, _ in events:
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__
