"""Telegram Desktop JSON parsing: synthetic exports of fictional people, written by each test."""

from __future__ import annotations

import json
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.chat import CHAT_TYPES, Chat, Message, Owner
from twin.errors import ExportError
from training.exports import ParseOptions, Skipped, detect
from training.exports.telegram_desktop import kind_of, parse, text_of

MIRA = 1001  # the owner in every fixture
TOMAS = 2002
ANA = 2003
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
ALL_TYPES = frozenset(CHAT_TYPES)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def msg(mid: int, sender: int | None, text="", when: int = T0, **extra) -> dict:
    """One message as tdesktop writes it; `date` is deliberately a different (local) time than date_unixtime."""
    m = {"id": mid, "type": "message", "date": "1999-01-01T00:00:00", "date_unixtime": str(when)}
    if sender is not None:
        m |= {"from": {MIRA: "Mira Testova", TOMAS: "Tomas Berg", ANA: "Ana Kovac"}.get(sender, "Someone"),
              "from_id": f"user{sender}"}
    return m | {"text": text} | extra


def service(mid: int, action: str = "pin_message") -> dict:
    return {"id": mid, "type": "service", "date": "2023-11-14T23:13:20", "date_unixtime": str(T0),
            "actor": "Tomas Berg", "actor_id": f"user{TOMAS}", "action": action, "text": "", "text_entities": []}


def chat(chat_type: str, chat_id: int, messages: list[dict] | None, name: str | None = "Tomas Berg") -> dict:
    c = {} if chat_type in ("saved_messages", "replies") else {"name": name}
    c |= {"type": chat_type, "id": chat_id}
    return c if messages is None else c | {"messages": messages}


def full(tmp_path: Path, chats: list[dict], left: list[dict] = (), personal: bool = True) -> Path:
    doc: dict = {"about": "Here is the data you requested."}
    if personal:
        doc["personal_information"] = {"user_id": MIRA, "first_name": "Mira", "last_name": "Testova",
                                       "phone_number": "+00 000 000", "bio": ""}
    doc["chats"] = {"about": "chats", "list": chats}
    doc["left_chats"] = {"about": "left chats", "list": list(left)}
    return write(tmp_path, doc)


def write(tmp_path: Path, doc, name: str = "result.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def records(path: Path, chat_types=None) -> list:
    return list(parse(path, ParseOptions() if chat_types is None else ParseOptions(chat_types=chat_types)))


def messages(path: Path, chat_types=None) -> list[Message]:
    return [r for r in records(path, chat_types) if isinstance(r, Message)]


def one(tmp_path: Path, m: dict) -> Message:
    """The Message a single personal-chat export with just `m` gives."""
    [record] = messages(write(tmp_path, chat("personal_chat", TOMAS, [m])))
    return record


# --- whole files ---------------------------------------------------------------------------------------


def test_full_export_yields_owner_chats_and_messages_in_file_order(tmp_path):
    path = full(tmp_path, [
        chat("personal_chat", TOMAS, [msg(1, TOMAS, "hi Mira", T0), msg(2, MIRA, "hey!", T0 + 60)]),
        chat("private_supergroup", 4004, [msg(7, ANA, "who is in?", T0 + 5)], name="Climbing crew"),
    ])
    assert detect(path) == "telegram"
    assert records(path) == [
        Owner("telegram", f"user{MIRA}", "Mira Testova"),
        Chat("telegram", str(TOMAS), "personal", "Tomas Berg"),
        Message("telegram", str(TOMAS), "1", f"user{TOMAS}", "Tomas Berg", at(T0), "hi Mira"),
        Message("telegram", str(TOMAS), "2", f"user{MIRA}", "Mira Testova", at(T0 + 60), "hey!"),
        Chat("telegram", "4004", "group", "Climbing crew"),
        Message("telegram", "4004", "7", f"user{ANA}", "Ana Kovac", at(T0 + 5), "who is in?"),
    ]


def test_the_pure_python_ijson_backend_gives_the_same_records(tmp_path, monkeypatch):
    import ijson

    from training.exports import telegram_desktop

    path = full(tmp_path, [chat("personal_chat", TOMAS, [msg(1, TOMAS, ["a", {"type": "bold", "text": "b"}])]),
                           chat("bot_chat", 7007, [msg(2, 7007, "skipped")])])
    fast = records(path)
    monkeypatch.setattr(telegram_desktop, "_json", ijson.get_backend("python"))
    assert records(path) == fast
    assert len(fast) == 4


def test_single_personal_chat_export_names_the_other_sender_as_owner(tmp_path):
    path = write(tmp_path, chat("personal_chat", TOMAS, [msg(1, TOMAS, "ping"), msg(2, MIRA, "pong", T0 + 1),
                                                         msg(3, MIRA, "again", T0 + 2)]))
    assert detect(path) == "telegram"
    got = records(path)
    assert got[0] == Chat("telegram", str(TOMAS), "personal", "Tomas Berg")
    assert [type(r).__name__ for r in got] == ["Chat", "Message", "Message", "Message", "Owner"]
    assert got[-1] == Owner("telegram", f"user{MIRA}", "Mira Testova")


def test_single_personal_chat_where_only_the_peer_wrote_names_no_owner(tmp_path):
    path = write(tmp_path, chat("personal_chat", TOMAS, [msg(1, TOMAS, "you there?")]))
    assert not [r for r in records(path) if isinstance(r, Owner)]


def test_single_group_export_names_no_owner(tmp_path):
    path = write(tmp_path, chat("private_group", 4004, [msg(1, TOMAS, "a"), msg(2, MIRA, "b"), msg(3, ANA, "c")],
                                name="Flatmates"))
    got = records(path)
    assert got[0] == Chat("telegram", "4004", "group", "Flatmates")
    assert [m.sender_id for m in got[1:]] == [f"user{TOMAS}", f"user{MIRA}", f"user{ANA}"]
    assert not [r for r in got if isinstance(r, Owner)]


def test_saved_messages_names_the_owner_when_personal_information_is_missing(tmp_path):
    path = full(tmp_path, [chat("saved_messages", MIRA, [msg(1, MIRA, "note to self")]),
                           chat("private_group", 4004, [msg(2, TOMAS, "hello")], name="Flatmates")],
                personal=False)
    got = records(path)
    assert got == [
        Skipped("chat", "saved"),
        Chat("telegram", "4004", "group", "Flatmates"),
        Message("telegram", "4004", "2", f"user{TOMAS}", "Tomas Berg", at(T0), "hello"),
        Owner("telegram", f"user{MIRA}"),
    ]


def test_saved_messages_wins_over_a_personal_chats_other_side(tmp_path):
    path = full(tmp_path, [chat("personal_chat", TOMAS, [msg(1, ANA, "odd sender")]),
                           chat("saved_messages", MIRA, [])], personal=False)
    assert [r for r in records(path) if isinstance(r, Owner)] == [Owner("telegram", f"user{MIRA}")]


def test_personal_information_wins_over_every_other_owner_clue(tmp_path):
    path = full(tmp_path, [chat("saved_messages", MIRA, []), chat("personal_chat", TOMAS, [msg(1, MIRA, "x")])])
    assert [r for r in records(path) if isinstance(r, Owner)] == [Owner("telegram", f"user{MIRA}", "Mira Testova")]


def test_left_chats_are_read_too(tmp_path):
    path = full(tmp_path, [], left=[chat("private_supergroup", 4005, [msg(9, ANA, "bye all")], name="Old team")])
    assert records(path)[1:] == [
        Chat("telegram", "4005", "group", "Old team"),
        Message("telegram", "4005", "9", f"user{ANA}", "Ana Kovac", at(T0), "bye all"),
    ]


def test_a_chat_without_a_messages_array_is_still_announced(tmp_path):
    path = full(tmp_path, [chat("personal_chat", TOMAS, None), chat("personal_chat", ANA, [], name="Ana Kovac")])
    assert records(path)[1:] == [Chat("telegram", str(TOMAS), "personal", "Tomas Berg"),
                                 Chat("telegram", str(ANA), "personal", "Ana Kovac")]


def test_a_byte_order_mark_is_allowed(tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(chat("personal_chat", TOMAS, [msg(1, TOMAS, "hi")])).encode())
    assert [m.text for m in messages(path)] == ["hi"]


# --- chat types ------------------------------------------------------------------------------------------

EVERY_TYPE = [("personal_chat", "personal"), ("private_group", "group"), ("private_supergroup", "group"),
              ("saved_messages", "saved"), ("bot_chat", "bot"), ("private_channel", "channel"),
              ("public_channel", "channel"), ("public_supergroup", "public_group")]


def export_of_every_type(tmp_path: Path) -> Path:
    chats = [chat(t, 5000 + i, [msg(100 + i, ANA, t)], name=f"chat {i}") for i, (t, _) in enumerate(EVERY_TYPE)]
    chats += [chat("replies", 6000, [msg(200, ANA, "replies")]),
              chat("verification_codes", 6001, [msg(201, ANA, "code 12345")]),
              chat("some_future_type", 6002, [msg(202, ANA, "future")], name="new")]
    return full(tmp_path, chats)


def test_by_default_only_personal_chats_and_private_groups_are_imported(tmp_path):
    got = records(export_of_every_type(tmp_path))[1:]
    assert [r for r in got if isinstance(r, Chat)] == [
        Chat("telegram", "5000", "personal", "chat 0"), Chat("telegram", "5001", "group", "chat 1"),
        Chat("telegram", "5002", "group", "chat 2")]
    assert [m.text for m in got if isinstance(m, Message)] == ["personal_chat", "private_group", "private_supergroup"]
    assert [r for r in got if isinstance(r, Skipped)] == [
        Skipped("chat", "saved"), Skipped("chat", "bot"), Skipped("chat", "channel"), Skipped("chat", "channel"),
        Skipped("chat", "public_group"), Skipped("chat", "replies"), Skipped("chat", "verification_codes"),
        Skipped("chat", "some_future_type")]


def test_asking_for_every_type_still_skips_replies_and_verification_codes(tmp_path):
    got = records(export_of_every_type(tmp_path), ALL_TYPES)
    assert [(c.id, c.type) for c in got if isinstance(c, Chat)] == [
        (str(5000 + i), normalised) for i, (_, normalised) in enumerate(EVERY_TYPE)]
    assert [m.text for m in got if isinstance(m, Message)] == [t for t, _ in EVERY_TYPE]
    assert [r for r in got if isinstance(r, Skipped)] == [
        Skipped("chat", "replies"), Skipped("chat", "verification_codes"), Skipped("chat", "some_future_type")]


def test_only_the_chat_types_asked_for(tmp_path):
    got = records(export_of_every_type(tmp_path), frozenset({"channel"}))
    assert [m.text for m in got if isinstance(m, Message)] == ["private_channel", "public_channel"]


def test_in_a_bot_chat_the_bots_messages_are_not_messages(tmp_path):
    path = write(tmp_path, chat("bot_chat", 7007, [msg(1, MIRA, "/start"), msg(2, 7007, "Welcome!")],
                                name="Weather Bot"))
    assert records(path, ALL_TYPES) == [
        Chat("telegram", "7007", "bot", "Weather Bot"),
        Message("telegram", "7007", "1", f"user{MIRA}", "Mira Testova", at(T0), "/start"),
        Skipped("bot", "bot"),
    ]


# --- message fields ----------------------------------------------------------------------------------------


def test_time_comes_from_date_unixtime_never_from_date(tmp_path):
    m = one(tmp_path, msg(1, TOMAS, "late", 1_712_345_678, date="2024-04-05T22:34:38"))
    assert m.time == datetime(2024, 4, 5, 19, 34, 38, tzinfo=timezone.utc)


def test_text_as_a_plain_string(tmp_path):
    assert one(tmp_path, msg(1, TOMAS, "just text")).text == "just text"


def test_text_as_a_list_of_strings_and_entities(tmp_path):
    m = one(tmp_path, msg(1, TOMAS, ["see ", {"type": "link", "text": "https://example.org"}, " and ",
                                     {"type": "bold", "text": "hurry"}]))
    assert (m.text, m.kind) == ("see https://example.org and hurry", "text")


def test_text_wins_over_text_entities_where_they_disagree(tmp_path):
    # Some tools write placeholders into text_entities; `text` is what was sent.
    m = one(tmp_path, msg(1, TOMAS, ["real ", {"type": "bold", "text": "copy"}],
                          text_entities=[{"type": "plain", "text": "..."}]))
    assert m.text == "real copy"
    only_entities = one(tmp_path, {k: v for k, v in msg(2, TOMAS, "").items() if k != "text"}
                        | {"text_entities": [{"type": "plain", "text": "from "}, {"type": "bold", "text": "entities"}]})
    assert only_entities.text == "from entities"


def test_sticker_text_is_its_emoji(tmp_path):
    m = one(tmp_path, msg(1, TOMAS, "", media_type="sticker", sticker_emoji="🤗", text_entities=[],
                          file="(File not included. Change data exporting settings to download.)"))
    assert (m.kind, m.text) == ("sticker", "🤗")


def test_sticker_without_emoji_has_empty_text(tmp_path):
    m = one(tmp_path, msg(1, TOMAS, "", media_type="sticker", file="stickers/sticker.webp"))
    assert (m.kind, m.text) == ("sticker", "")


def test_photo_keeps_its_caption(tmp_path):
    m = one(tmp_path, msg(1, TOMAS, "the view from the top", photo="photos/photo_1.jpg", width=1280, height=960))
    assert (m.kind, m.text) == ("photo", "the view from the top")


@pytest.mark.parametrize(("media_type", "kind"), [
    ("voice_message", "voice"), ("video_message", "video"), ("video_file", "video"), ("animation", "video"),
    ("audio_file", "file"), ("something_new", "file"), (None, "file"),
    (["voice_message"], "file"), ({"type": "voice"}, "file"),  # not a string (a newer or a hand-made export)
])
def test_document_kinds(tmp_path, media_type, kind):
    extra = {"file": "files/x.bin", "mime_type": "application/octet-stream"}
    if media_type:
        extra["media_type"] = media_type
    m = one(tmp_path, msg(1, TOMAS, "", **extra))
    assert (m.kind, m.text) == (kind, "")


@pytest.mark.parametrize("extra", [
    {"poll": {"question": "Pizza?", "answers": []}},
    {"location_information": {"latitude": 1.5, "longitude": 2.5}},
    {"contact_information": {"first_name": "Ana", "phone_number": "+00"}},
    {},
])
def test_nothing_to_read_is_a_placeholder_but_still_a_message(tmp_path, extra):
    m = one(tmp_path, msg(1, TOMAS, "", text_entities=[], **extra))
    assert (m.kind, m.text, m.sender_id) == ("placeholder", "", f"user{TOMAS}")


def test_reply_forward_edit_and_via_bot(tmp_path):
    path = write(tmp_path, chat("personal_chat", TOMAS, [
        msg(1, TOMAS, "question"),
        msg(2, MIRA, "answer", T0 + 10, reply_to_message_id=1, edited="2000-01-01T00:00:00",
            edited_unixtime=str(T0 + 99)),
        msg(3, MIRA, "look", T0 + 20, forwarded_from="Some Channel"),
        msg(4, MIRA, "gif", T0 + 30, via_bot="@gif", media_type="animation", file="video.mp4"),
        msg(5, MIRA, "elsewhere", T0 + 40, reply_to_message_id=77, reply_to_peer_id="channel99"),
    ]))
    got = {m.id: m for m in messages(path)}
    assert got["1"] == Message("telegram", str(TOMAS), "1", f"user{TOMAS}", "Tomas Berg", at(T0), "question")
    assert got["2"] == Message("telegram", str(TOMAS), "2", f"user{MIRA}", "Mira Testova", at(T0 + 10), "answer",
                               reply_to="1", edited=at(T0 + 99))
    assert (got["3"].forwarded, got["3"].reply_to, got["3"].edited) == (True, None, None)
    assert (got["4"].kind, got["4"].sender_id, got["4"].forwarded) == ("video", f"user{MIRA}", False)
    assert got["5"].reply_to is None


def test_service_unsupported_and_senderless_entries_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, chat("private_group", 4004, [
        service(1, "create_group"), msg(2, TOMAS, "hi"), service(3, "pin_message"),
        {"id": 4, "type": "unsupported"}, msg(5, None, "from a deleted account"),
    ], name="Flatmates"))
    got = records(path)
    assert [type(r).__name__ for r in got] == ["Chat", "Skipped", "Message", "Skipped", "Skipped", "Skipped"]
    assert [r for r in got if isinstance(r, Skipped)] == [
        Skipped("service", "create_group"), Skipped("service", "pin_message"), Skipped("service", "unsupported"),
        Skipped("message", "no sender")]


def test_channel_senders_and_old_numeric_ids(tmp_path):
    path = write(tmp_path, chat("private_supergroup", 4004, [
        msg(1, None, "anonymous admin", from_id="channel4004", **{"from": "Flatmates"}),
        msg(2, None, "old export", from_id=TOMAS, **{"from": "Tomas Berg"}),
    ], name="Flatmates"))
    assert [(m.sender_id, m.sender_name) for m in messages(path)] == [
        ("channel4004", "Flatmates"), (f"user{TOMAS}", "Tomas Berg")]


# --- errors ------------------------------------------------------------------------------------------------


def test_truncated_file_yields_what_it_read_then_fails_with_the_fix(tmp_path):
    path = tmp_path / "result.json"
    text = json.dumps(chat("personal_chat", TOMAS, [msg(1, TOMAS, "one"), msg(2, TOMAS, "two")]))
    path.write_text(text[: text.index('"two"')], encoding="utf-8")
    got = []
    with pytest.raises(ExportError) as e:
        for record in parse(path, ParseOptions()):
            got.append(record)
    assert [r.text for r in got if isinstance(r, Message)] == ["one"]
    assert str(e.value).startswith(f"{path}: the file is truncated or not JSON (")
    assert "after 1 messages" in str(e.value) and "export again" in str(e.value)


def test_garbage_is_not_json(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("chat log, not json", encoding="utf-8")
    with pytest.raises(ExportError, match="truncated or not JSON"):
        records(path)


@pytest.mark.parametrize("content", ["", "  \n", "\ufeff"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "result.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ExportError, match=r"the file is empty; export again with Telegram Desktop \(Format: JSON\)"):
        records(path)


def test_json_that_is_not_a_telegram_export_names_its_keys(tmp_path):
    path = write(tmp_path, {"version": 2, "rows": [{"a": 1}]})
    with pytest.raises(ExportError) as e:
        records(path)
    assert str(e.value) == (f"{path}: expected a Telegram Desktop export (an object with 'chats' or 'messages'), "
                            "got keys ['rows', 'version']; export again with Telegram Desktop (Format: JSON)")


def test_a_json_list_is_not_a_telegram_export(tmp_path):
    path = write(tmp_path, [chat("personal_chat", TOMAS, [])])
    with pytest.raises(ExportError, match="got a JSON list; export again"):
        records(path)


def test_message_without_any_date_names_chat_and_message(tmp_path):
    m = msg(42, TOMAS, "old")
    del m["date_unixtime"], m["date"]
    path = write(tmp_path, chat("personal_chat", TOMAS, [m]))
    with pytest.raises(ExportError) as e:
        records(path)
    assert str(e.value).startswith(f"{path}: chat {TOMAS}, message 42 has neither 'date' nor 'date_unixtime';")
    assert "export again" in str(e.value)


@pytest.mark.parametrize("doc, missing", [
    ({"name": "Lena Vogt", "type": "personal_chat", "messages": []}, "has no 'id',"),
    ({"name": "Lena Vogt", "messages": []}, "has no 'type' and no 'id',"),
])
def test_a_chat_without_id_names_the_missing_key(tmp_path, doc, missing):
    path = write(tmp_path, doc)
    with pytest.raises(ExportError, match=missing):
        records(path)
    in_list = write(tmp_path, {"chats": {"list": [doc]}}, name="full.json")
    with pytest.raises(ExportError, match=f"a chat in the list \\('Lena Vogt'\\) {missing}"):
        records(in_list)


def test_messages_before_the_chat_type_is_refused_clearly(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"messages": [], "name": "Tomas", "type": "personal_chat", "id": 2002}', encoding="utf-8")
    with pytest.raises(ExportError, match="has 'messages' before its 'type' and 'id'"):
        records(path)


# --- streaming and pure helpers ------------------------------------------------------------------------------


def test_memory_stays_flat_for_a_big_chat(tmp_path):
    path = tmp_path / "result.json"
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"name": "Tomas Berg", "type": "personal_chat", "id": 2002, "messages": [')
        f.write(",".join(json.dumps(msg(i, TOMAS if i % 2 else MIRA, f"message number {i} " * 8, T0 + i))
                         for i in range(8_000)))
        f.write("]}")
    assert path.stat().st_size > 2_000_000
    tracemalloc.start()
    try:
        count = sum(isinstance(r, Message) for r in parse(path, ParseOptions()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 8_000
    assert peak < 1_000_000  # json.load of this file holds ~15 MB


def test_helpers_on_plain_values():
    assert text_of({"text": ["a", {"type": "code", "text": "b"}, 3]}) == "ab"
    assert text_of({"text": None}) == ""
    assert kind_of({"photo": "p.jpg", "media_type": "sticker"}, "") == "sticker"
    assert kind_of({"photo": "p.jpg"}, "caption") == "photo"
    assert kind_of({}, "words") == "text"


plain_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
part = st.one_of(plain_text, st.builds(lambda t, k: {"type": k, "text": t}, plain_text,
                                       st.sampled_from(["bold", "link", "mention", "code"])))


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.lists(part, max_size=4), min_size=1, max_size=6))
def test_texts_survive_the_file_round_trip(tmp_path_factory, texts):
    tmp = tmp_path_factory.mktemp("rt")
    path = write(tmp, chat("private_group", 4004, [msg(i, TOMAS, t, T0 + i) for i, t in enumerate(texts)]))
    want = ["".join(p if isinstance(p, str) else p["text"] for p in t) for t in texts]
    got = messages(path)
    assert [m.text for m in got] == want
    assert [m.kind for m in got] == ["text" if w else "placeholder" for w in want]
