"""DiscordChatExporter JSON parsing: synthetic exports of fictional people, written by each test."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from twin.chat import Chat, Message
from twin.errors import ExportError
from training.exports import ParseOptions, Skipped, detect
from training.exports.discord_exporter import chat_of, kind_of_file, parse

DM_GUILD = {"id": "0", "name": "Direct Messages", "iconUrl": "https://cdn.discordapp.com/embed/avatars/0.png"}
TOMAS = {"id": "3001", "name": "tomas.berg", "discriminator": "0000", "nickname": "Tomas", "isBot": False}
ANA = {"id": "3002", "name": "ana_k", "discriminator": "0000", "nickname": None, "isBot": False}
HELPER_BOT = {"id": "3999", "name": "Reminder", "discriminator": "1234", "nickname": "Reminder", "isBot": True}


def msg(mid: str, author: dict, content: str = "", kind: str = "Default",
        timestamp: str = "2024-03-05T21:14:07.123+01:00", **extra) -> dict:
    """One DCE message object with the fields DCE always writes."""
    return {
        "id": mid, "type": kind, "timestamp": timestamp, "timestampEdited": None, "callEndedTimestamp": None,
        "isPinned": False, "content": content, "author": author, "attachments": [], "embeds": [],
        "stickers": [], "reactions": [], "mentions": [], **extra,
    }


def export(tmp_path: Path, messages: list[dict], *, guild: dict = DM_GUILD, channel: dict | None = None,
           name: str = "export.json") -> Path:
    channel = channel or {"id": "5001", "type": "DirectTextChat", "categoryId": None,
                          "category": "Private", "name": "tomas.berg", "topic": None}
    doc = {"guild": guild, "channel": channel, "dateRange": {"after": None, "before": None},
           "exportedAt": "2024-03-06T10:00:00+01:00", "messages": messages, "messageCount": len(messages)}
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def records(path: Path, **options) -> list:
    return list(parse(path, ParseOptions(**options)))


def messages(path: Path) -> list[Message]:
    return [r for r in records(path) if isinstance(r, Message)]


def test_dm_is_a_personal_chat_and_times_become_utc(tmp_path):
    path = export(tmp_path, [
        msg("9001", TOMAS, "hej, are you coming tonight?"),
        msg("9002", ANA, "yes!", timestamp="2024-03-05T16:20:00-05:00"),
    ])
    assert records(path) == [
        Chat("discord", "5001", "personal", "tomas.berg"),
        Message("discord", "5001", "9001", "3001", "Tomas",
                datetime(2024, 3, 5, 20, 14, 7, 123000, tzinfo=timezone.utc), "hej, are you coming tonight?"),
        Message("discord", "5001", "9002", "3002", "ana_k",
                datetime(2024, 3, 5, 21, 20, tzinfo=timezone.utc), "yes!"),
    ]


def test_utc_exports_and_seven_digit_fractions_parse(tmp_path):
    path = export(tmp_path, [
        msg("1", TOMAS, "a", timestamp="2024-03-05T21:14:07+00:00"),
        msg("2", TOMAS, "b", timestamp="2024-03-05T21:14:07.1234567+02:00"),
        msg("3", TOMAS, "c", timestamp="2024-03-05T21:14:07Z"),
    ])
    assert [m.time for m in messages(path)] == [
        datetime(2024, 3, 5, 21, 14, 7, tzinfo=timezone.utc),
        datetime(2024, 3, 5, 19, 14, 7, 123456, tzinfo=timezone.utc),
        datetime(2024, 3, 5, 21, 14, 7, tzinfo=timezone.utc),
    ]


def test_guild_channel_and_group_dm_are_groups(tmp_path):
    guild = {"id": "7000", "name": "Climbing Club", "iconUrl": ""}
    text = {"id": "7001", "type": "GuildTextChat", "categoryId": "7100", "category": "Trips", "name": "general",
            "topic": "plans"}
    group_dm = {"id": "7002", "type": "DirectGroupTextChat", "categoryId": None, "category": "Group",
                "name": "Ana, Tomas", "topic": None}
    assert records(export(tmp_path, [], guild=guild, channel=text, name="a.json")) == [
        Chat("discord", "7001", "group", "Climbing Club #general")]
    assert records(export(tmp_path, [], channel=group_dm, name="b.json")) == [
        Chat("discord", "7002", "group", "Ana, Tomas")]


def test_announcement_channels_are_skipped_unless_asked_for(tmp_path):
    guild = {"id": "7000", "name": "Climbing Club", "iconUrl": ""}
    news = {"id": "7003", "type": "GuildNews", "categoryId": None, "category": None, "name": "news", "topic": None}
    path = export(tmp_path, [msg("1", TOMAS, "route closed")], guild=guild, channel=news)
    assert records(path) == [Skipped("chat", "channel")]
    got = records(path, chat_types=frozenset({"channel"}))
    assert got[0] == Chat("discord", "7003", "channel", "Climbing Club #news")
    assert [m.text for m in got[1:]] == ["route closed"]


def test_chat_type_without_a_known_channel_kind_falls_back_on_the_guild():
    assert chat_of(Path("x.json"), DM_GUILD, {"id": 12}).type == "personal"
    assert chat_of(Path("x.json"), {"id": "7000", "name": "Club"}, {"id": "13", "name": "x"}).type == "group"


def test_replies_forwards_and_edits(tmp_path):
    path = export(tmp_path, [
        msg("1", TOMAS, "which crag?"),
        msg("2", ANA, "the north one", kind="Reply", timestampEdited="2024-03-05T21:20:00.5+01:00",
            reference={"messageId": "1", "channelId": "5001", "guildId": None}),
        msg("3", ANA, "look", kind="Reply",
            reference={"messageId": "77", "channelId": "6666", "guildId": "7000"}),
        msg("4", TOMAS, "", reference={"type": "Forward", "messageId": "88", "channelId": "6666"},
            forwardedMessage={"content": "route closed until May", "attachments": [], "stickers": []}),
        msg("5", TOMAS, "fyi", forwardedMessage={"content": "other text"}),
    ])
    got = messages(path)
    assert got[1].reply_to == "1"
    assert got[1].edited == datetime(2024, 3, 5, 20, 20, 0, 500000, tzinfo=timezone.utc)
    assert got[0].edited is None and got[0].reply_to is None
    assert got[2].reply_to is None  # a reference into another channel is no reply in this chat
    assert (got[3].forwarded, got[3].reply_to, got[3].kind, got[3].text) == (True, None, "text",
                                                                              "route closed until May")
    assert (got[4].forwarded, got[4].text) == (True, "fyi")
    assert not any(m.forwarded for m in got[:3])


def test_attachments_and_stickers_become_kinds(tmp_path):
    def attach(name: str) -> list[dict]:
        return [{"id": "1", "url": f"https://cdn.example/{name}", "fileName": name, "fileSizeBytes": 10}]

    path = export(tmp_path, [
        msg("1", TOMAS, "the view", attachments=attach("IMG_2041.JPG")),
        msg("2", TOMAS, "", attachments=attach("clip.mp4")),
        msg("3", TOMAS, "", attachments=attach("voice-message.ogg")),
        msg("4", TOMAS, "", attachments=attach("topo.pdf")),
        msg("5", TOMAS, "", attachments=attach("anim.gif")),
        msg("6", TOMAS, "", stickers=[{"id": "1", "name": "Wave", "format": "Png", "sourceUrl": "x"}]),
        msg("7", TOMAS, "hi", stickers=[{"id": "1", "name": "Wave", "format": "Png", "sourceUrl": "x"}]),
        msg("8", TOMAS, "", embeds=[{"title": "a link", "url": "https://example.org"}]),
        msg("9", TOMAS, ""),
    ])
    assert [(m.kind, m.text) for m in messages(path)] == [
        ("photo", "the view"), ("video", ""), ("voice", ""), ("file", ""), ("photo", ""), ("sticker", "Wave"),
        ("text", "hi"), ("placeholder", ""), ("placeholder", ""),
    ]


@pytest.mark.parametrize("name, kind", [
    ("a.png", "photo"), ("a.jpeg", "photo"), ("a.webp", "photo"), ("a.mov", "video"), ("a.webm", "video"),
    ("a.mp3", "voice"), ("a.m4a", "voice"), ("a.wav", "voice"), ("a.zip", "file"), ("noext", "file"),
])
def test_kind_of_file(name, kind):
    assert kind_of_file(name) == kind


def test_bots_and_system_kinds_are_skipped(tmp_path):
    path = export(tmp_path, [
        msg("1", TOMAS, "Ana added Tomas to the group.", kind="RecipientAdd"),
        msg("2", TOMAS, "Started a call.", kind="Call"),
        msg("3", TOMAS, "Pinned a message.", kind="ChannelPinnedMessage"),
        msg("4", ANA, "Joined the server.", kind="GuildMemberJoin"),
        msg("5", ANA, "Started a thread.", kind="ThreadCreated"),
        {**msg("6", ANA, "/roll"), "type": 20},
        msg("7", HELPER_BOT, "Reminder: climbing at 6"),
        msg("8", ANA, "real one"),
    ])
    assert records(path)[1:] == [
        Skipped("service", "RecipientAdd"), Skipped("service", "Call"), Skipped("service", "ChannelPinnedMessage"),
        Skipped("service", "GuildMemberJoin"), Skipped("service", "ThreadCreated"), Skipped("service", "20"),
        Skipped("bot", "bot"),
        Message("discord", "5001", "8", "3002", "ana_k", datetime(2024, 3, 5, 20, 14, 7, 123000, tzinfo=timezone.utc),
                "real one"),
    ]


def test_truncated_json_is_an_export_error(tmp_path):
    whole = export(tmp_path, [msg(str(i), TOMAS, f"message {i}") for i in range(50)])
    cut = tmp_path / "cut.json"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    got: list = []
    with pytest.raises(ExportError, match="truncated") as info:
        for record in parse(cut, ParseOptions()):
            got.append(record)
    assert str(info.value).startswith(str(cut))
    assert "DiscordChatExporter" in str(info.value)
    assert 0 < len(got) < 51


def test_file_cut_inside_the_header_is_an_export_error(tmp_path):
    path = tmp_path / "head.json"
    path.write_text('{"guild": {"id": "0", "name": "Direct Me', encoding="utf-8")
    with pytest.raises(ExportError, match="not valid JSON"):
        records(path)


@pytest.mark.parametrize("doc, fragment", [
    ({"guild": DM_GUILD, "messages": []}, "no 'channel'"),
    ({"channel": {"id": "1"}, "guild": DM_GUILD}, "no 'messages'"),
    ({"guild": DM_GUILD, "channel": {"name": "x"}, "messages": []}, "'channel' has no 'id'"),
    ({"guild": DM_GUILD, "channel": {"id": "1"}, "messages": {"a": 1}}, "'messages' is not a list"),
    ({"guild": DM_GUILD, "channel": "general", "messages": []}, "must be objects"),
    ([1, 2], "expected a JSON object"),
])
def test_wrong_structure_is_an_export_error(tmp_path, doc, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ExportError, match=fragment):
        records(path)


@pytest.mark.parametrize("drop, fragment", [("timestamp", "no 'timestamp'"), ("author", "no 'author'"),
                                           ("id", "no 'id'"), ("type", "no 'type'")])
def test_message_missing_a_key_is_an_export_error(tmp_path, drop, fragment):
    bad = msg("1", TOMAS, "x")
    del bad[drop]
    with pytest.raises(ExportError, match=rf"messages\[1\] has {fragment}"):
        records(export(tmp_path, [msg("0", TOMAS, "ok"), bad]))


def test_bad_timestamp_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="not ISO 8601"):
        records(export(tmp_path, [msg("1", TOMAS, "x", timestamp="yesterday")]))


def test_key_order_and_byte_order_mark_do_not_matter(tmp_path):
    doc = {"messages": [msg("1", TOMAS, "late header")], "channel": {"id": "42", "type": "DirectTextChat",
                                                                       "name": "t"}, "guild": DM_GUILD}
    path = tmp_path / "odd.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    got = records(path)
    assert got[0] == Chat("discord", "42", "personal", "t")
    assert [m.text for m in got[1:]] == ["late header"]


def test_detect_names_the_format(tmp_path):
    assert detect(export(tmp_path, [msg("1", TOMAS, "x")])) == "discord"


def test_many_messages_stream_in_order(tmp_path):
    path = export(tmp_path, [msg(str(i), ANA if i % 2 else TOMAS, f"m{i}") for i in range(3000)])
    got = messages(path)
    assert [m.id for m in got] == [str(i) for i in range(3000)]
    assert {m.sender_id for m in got} == {"3001", "3002"}


def test_ingest_skips_service_and_bots_and_reimport_adds_nothing(tmp_path):
    from training.ingest import IngestOptions, ingest_file, utcnow
    from twin.store import Store

    path = export(tmp_path, [
        msg("1", TOMAS, "Ana added Tomas.", kind="RecipientAdd"),
        msg("2", TOMAS, "hi"),
        msg("3", ANA, "", attachments=[{"id": "1", "url": "u", "fileName": "voice-message.ogg",
                                        "fileSizeBytes": 1}]),
        msg("4", HELPER_BOT, "beep"),
        msg("5", ANA, "see you", kind="Reply", reference={"messageId": "2", "channelId": "5001"},
            timestamp="2024-03-05T23:30:00+01:00"),
    ])
    opts = IngestOptions(owner="3001")
    with Store.open(tmp_path / "twin.db") as store:
        first = ingest_file(store, path, opts, utcnow)
        assert (first.added, first.skipped["service:RecipientAdd"], first.skipped["bot:bot"]) == (3, 1, 1)
        assert ingest_file(store, path, opts, utcnow).added == 0
        stats = store.stats()
    assert {k: stats[k] for k in ("messages", "owner_messages", "chats", "contacts", "sessions")} == {
        "messages": 3, "owner_messages": 1, "chats": 1, "contacts": 1, "sessions": 2}
