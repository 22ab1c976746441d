"""The Telegram parser's fast pass (training/exports/json_walk.py) against its ijson path: the same records and
the same errors for any file, valid or not, at any window size; and plain exports never fall back to ijson."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.chat import CHAT_TYPES
from training.exports import ParseOptions, json_walk
from training.exports import telegram_desktop as td

OPTIONS = ParseOptions(chat_types=frozenset(CHAT_TYPES))
T0 = 1_700_000_000


def outcome(parse, path: Path) -> tuple[list, str | None]:
    got = []
    try:
        for record in parse(path, OPTIONS):
            got.append(record)
    except Exception as e:  # noqa: BLE001 - a crash must be the same crash on both paths
        return got, f"{type(e).__name__}: {e}"
    return got, None


def same(path: Path) -> list:
    """parse() and the ijson path agree: the same error, and before it the records ijson gives (the fast pass
    may give more before an error: ijson raises at the first bad byte of its 64 KB buffer, which ingest rolls back
    with the rest); without an error, the same records."""
    fast, fast_error = outcome(td.parse, path)
    slow, slow_error = outcome(td._parse_events, path)
    assert fast_error == slow_error
    if slow_error is None:
        assert fast == slow
    else:
        assert fast[: len(slow)] == slow
    return fast


def message(i: int, sender: int, **extra) -> dict:
    return {"id": i, "type": "message", "date": "2023-11-14T23:13:20", "date_unixtime": str(T0 + i),
            "from": f"Person {sender}", "from_id": f"user{sender}", "text": f"message {i} ünïcode 🙈"} | extra


def export(chats: list[dict], **top) -> dict:
    return {"about": "x", "personal_information": {"user_id": 1001, "first_name": "Mira"},
            "chats": {"about": "y", "list": chats}, "left_chats": {"about": "", "list": []}} | top


def personal(chat_id: int, messages: list) -> dict:
    return {"name": f"Person {chat_id}", "type": "personal_chat", "id": chat_id, "messages": messages}


PLAIN = export([
    personal(2002, [message(i, 2002 if i % 2 else 1001) for i in range(1, 60)]),
    {"name": "Group", "type": "private_group", "id": 3003, "messages": [
        message(100, 4004, text=["see ", {"type": "bold", "text": "you"}], reply_to_message_id=99),
        message(101, 1001, media_type="sticker", sticker_emoji="👍", width=512, file="(File not included)"),
        message(102, 4004, location_information={"latitude": 52.5, "longitude": 13.4}, text=""),
        {"id": 103, "type": "service", "actor": "x", "action": "pin_message", "text": ""},
        message(104, 4004, edited="2023-11-15T00:00:00", edited_unixtime=str(T0 + 500))]},
    {"name": "News", "type": "public_channel", "id": 5005, "messages": [message(1, 5005)]},
    {"type": "saved_messages", "id": 1001, "messages": []},
    {"name": "Empty", "type": "personal_chat", "id": 6006},
], contacts={"about": "", "list": [{"first_name": "A", "phone_number": "1", "date": "x"}] * 50})


@pytest.fixture
def small_window(monkeypatch):
    """Windows of a few bytes: every value and separator lands on a window's edge somewhere."""
    def use(size: int) -> None:
        monkeypatch.setattr(json_walk, "CHUNK", size)
    return use


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 16])
def test_a_plain_export_reads_the_same_without_ijson(tmp_path, small_window, monkeypatch, chunk):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(PLAIN, ensure_ascii=False, indent=1), encoding="utf-8")
    small_window(chunk)
    slow = list(td._parse_events(path, OPTIONS))
    monkeypatch.setattr(td, "_parse_events", None)  # falling back would fail here
    assert list(td.parse(path, OPTIONS)) == slow
    assert sum(type(r).__name__ == "Message" for r in slow) == 64  # 59 + 4 in the group + 1 in the channel


@pytest.mark.parametrize("text", [
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [{"id": 1, "type": "message", '
    '"date_unixtime": "1700000000", "from_id": "user2002", "text": "x", "n": NaN}]}',  # json takes NaN, yajl not
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [{"id": 1, "type": "message", '
    '"date_unixtime": "1700000000", "from_id": "user2002", "text": "lone \\ud83d here"}]}',  # yajl writes '?'
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [{"id": 1, "type": "message", '
    '"date_unixtime": "1700000000", "from_id": "user2002", "text": "pair \\ud83d\\ude48"}]}',
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": []} trailing',
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [1, 2]}',
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [{"id": 1},]}',
    '{"name": "A", "type": "personal_chat", "id": 2002,\f"messages": []}',  # yajl's whitespace, not json's
    '{"name": "A", "messages": [{"id": 1}], "type": "personal_chat", "id": 2002}',
    '{"name": {"first": "A"}, "type": "personal_chat", "id": 2.5e0, "messages": {"item": {"id": 1}}}',
    '{"chats": {"list.item": {"type": "personal_chat", "id": 7, "messages": []}}, "messages": 3}',
    '{"type": "personal_chat", "id": 2002, "type": "bot_chat", "messages": [{"id": 1, "type": "message", '
    '"date_unixtime": "1700000000", "from_id": "user2002", "text": "x", "text": "y"}]}',
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [{"id": 01}]}',
    '{"name": "A", "type": "personal_chat", "id": 2002, "messages": [{"id": 1, "text": "tab\there"}]}',
    '[]', '', '   ', '{}', '{"rows": []}', 'null', '"text"', '{"a": tru}', '{"a": 1e999}',
])
@pytest.mark.parametrize("chunk", [3, 1 << 16])
def test_odd_files_read_the_same_as_with_ijson(tmp_path, small_window, text, chunk):
    path = tmp_path / "result.json"
    path.write_text(text, encoding="utf-8")
    small_window(chunk)
    same(path)


def test_invalid_utf8_reads_the_same_as_with_ijson(tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(json.dumps(personal(2002, [message(1, 2002)])).encode().replace(b"message 1", b"mess\xff1"))
    same(path)
    assert "truncated or not JSON" in outcome(td.parse, path)[1]


def test_a_truncated_export_fails_as_with_ijson_wherever_it_ends(tmp_path, small_window):
    data = json.dumps(PLAIN, ensure_ascii=False).encode()
    small_window(5)
    for cut in range(0, len(data), 97):
        path = tmp_path / f"cut{cut}.json"
        path.write_bytes(data[:cut])
        same(path)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=12),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.lists(st.dictionaries(st.sampled_from(["text", "media_type", "photo", "file", "edited",
                                                        "reply_to_message_id", "forwarded_from", "x.y", "poll"]),
                                       values, max_size=3), min_size=1, max_size=6),
       chunk=st.integers(1, 300), indent=st.sampled_from([None, 0, 2]))
def test_any_message_fields_read_the_same_as_with_ijson(tmp_path, small_window, extras, chunk, indent):
    doc = export([personal(2002, [message(i, 2002) | extra for i, extra in enumerate(extras, 1)])],
                 other={"deep": [[[{"a": extras}]]]})
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=indent), encoding="utf-8")
    small_window(chunk)
    same(path)


def test_the_walk_keeps_memory_to_its_window():
    """A big value nobody asked for is walked, not decoded whole; what it yields is only what was watched."""
    big = {"contacts": [{"n": i, "s": "x" * 50} for i in range(20_000)], "list": [{"id": 1, "m": [{"a": 1}]}]}
    data = io.BytesIO(json.dumps(big).encode())
    assert len(data.getvalue()) > 1_000_000  # json.loads of it holds ~8 MB
    tracemalloc.start()
    try:
        got = list(json_walk.events(data, {"list.item.id"}, {"list.item.m.item"}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [("list.item.id", "number", 1), ("list.item.m.item", "values", [{"a": 1}])]
    assert peak < 600_000
