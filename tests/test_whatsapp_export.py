"""WhatsApp "Export chat" parsing: synthetic exports of fictional people, written by each test."""

from __future__ import annotations

import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.chat import Chat, Message
from twin.errors import ExportError
from training.exports import ParseOptions, Skipped, detect
from training.exports.whatsapp_lines import content, looks_like, media_kind
from training.exports.whatsapp_txt import chat_name, date_order, parse

LRM, NNBSP = "\u200e", "\u202f"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def write(tmp_path: Path, text: str, name: str = "WhatsApp Chat with Tomas Berg.txt",
          encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def records(path: Path, **options) -> list:
    return list(parse(path, ParseOptions(**options)))


def messages(path: Path) -> list[Message]:
    return [r for r in records(path) if isinstance(r, Message)]


ANDROID_24H = """\
15.04.21, 21:05 - Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, \
can read or listen to them. Tap to learn more.
15.04.21, 21:05 - Tomas Berg: are you coming to the crag tomorrow?
15.04.21, 21:07 - Ana Kovač: yes
bringing the rope
and snacks
16.04.21, 08:00 - Tomas Berg: <Media omitted>
"""


def test_android_24h(tmp_path):
    got = records(write(tmp_path, ANDROID_24H))
    assert got[0] == Chat("whatsapp", "Tomas Berg", "personal", "Tomas Berg")
    assert got[1] == Skipped("service", "encryption")
    assert [(m.sender_id, m.sender_name, m.time, m.kind, m.text) for m in got[2:]] == [
        ("Tomas Berg", "Tomas Berg", utc(2021, 4, 15, 21, 5), "text", "are you coming to the crag tomorrow?"),
        ("Ana Kovač", "Ana Kovač", utc(2021, 4, 15, 21, 7), "text", "yes\nbringing the rope\nand snacks"),
        ("Tomas Berg", "Tomas Berg", utc(2021, 4, 16, 8, 0), "file", ""),
    ]
    first = got[2]
    assert (first.platform, first.chat_id, first.reply_to, first.forwarded, first.edited) == (
        "whatsapp", "Tomas Berg", None, False, None)
    assert len(first.id) == 20 and int(first.id, 16) >= 0


def test_android_12h_with_narrow_space_before_pm_reads_month_first(tmp_path):
    text = (f"4/15/21, 9:05{NNBSP}PM - Tomas Berg: late again\n"
            f"4/15/21, 12:30{NNBSP}AM - Ana Kovač: past midnight\n"
            f"4/16/21, 12:10\u00a0PM - Ana Kovač: lunch\n")
    got = messages(write(tmp_path, text))
    assert [(m.time, m.text) for m in got] == [
        (utc(2021, 4, 15, 21, 5), "late again"), (utc(2021, 4, 15, 0, 30), "past midnight"),
        (utc(2021, 4, 16, 12, 10), "lunch"),
    ]


IOS = (
    f"{LRM}[15/04/2021, 21:05:33] Tomas Berg: {LRM}Messages and calls are end-to-end encrypted. No one outside "
    "of this chat, not even WhatsApp, can read or listen to them.\n"
    "[15/04/2021, 21:05:40] Tomas Berg: hi Ana\n"
    f"{LRM}[15/04/2021, 21:06:02] Ana Kovač: {LRM}image omitted\n"
    f"{LRM}[15/04/2021, 21:06:09] Ana Kovač: {LRM}<attached: 00000012-PHOTO-2021-04-15-21-06-09.jpg>\n"
    "the view from the top\n"
    f"{LRM}[15/04/2021, 21:07:00] Tomas Berg: {LRM}Missed voice call\n"
    f"[15/04/2021, 21:08:15] Tomas Berg: see you at 8 {LRM}<This message was edited>\n"
    f"{LRM}[15/04/2021, 21:09:00] Ana Kovač: {LRM}This message was deleted.\n"
    f"[15/04/2021, 21:09:30] Ana Kovač: {LRM}Location: https://maps.google.com/?q=60.1,24.9\n"
)


def test_ios_brackets_seconds_and_marks(tmp_path):
    got = records(write(tmp_path, IOS, name="_chat.txt"))
    assert got[1] == Skipped("service", "encryption")
    assert Skipped("service", "event") in got  # the missed call
    assert [(m.sender_id, m.time, m.kind, m.text, m.edited) for m in got if isinstance(m, Message)] == [
        ("Tomas Berg", utc(2021, 4, 15, 21, 5, 40), "text", "hi Ana", None),
        ("Ana Kovač", utc(2021, 4, 15, 21, 6, 2), "photo", "", None),
        ("Ana Kovač", utc(2021, 4, 15, 21, 6, 9), "photo", "the view from the top", None),
        ("Tomas Berg", utc(2021, 4, 15, 21, 8, 15), "text", "see you at 8", utc(2021, 4, 15, 21, 8, 15)),
        ("Ana Kovač", utc(2021, 4, 15, 21, 9), "placeholder", "", None),
        ("Ana Kovač", utc(2021, 4, 15, 21, 9, 30), "text", "Location: https://maps.google.com/?q=60.1,24.9", None),
    ]


def test_ios_zip_reads_chat_txt_inside_and_names_the_chat_from_the_zip(tmp_path):
    path = tmp_path / "WhatsApp Chat - Tomas Berg.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("_chat.txt", IOS.encode())
        z.writestr("00000012-PHOTO-2021-04-15-21-06-09.jpg", b"\xff\xd8 not really a jpeg")
    assert detect(path) == "whatsapp"
    got = records(path)
    assert got[0] == Chat("whatsapp", "Tomas Berg", "personal", "Tomas Berg")
    assert [m.text for m in got if isinstance(m, Message)][:1] == ["hi Ana"]
    assert not list(tmp_path.glob("_chat.txt"))  # nothing extracted
    assert [m.id for m in got if isinstance(m, Message)] == [
        m.id for m in messages(write(tmp_path, IOS, name="WhatsApp Chat with Tomas Berg.txt"))]


def test_android_zip_names_the_chat_from_the_txt_inside(tmp_path):
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("WhatsApp Chat with Ana Kovač.txt", ANDROID_24H)
    assert records(path)[0] == Chat("whatsapp", "Ana Kovač", "personal", "Ana Kovač")


def test_zip_without_one_chat_text_is_an_export_error(tmp_path):
    path = tmp_path / "WhatsApp Chat - x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "1/1/21, 10:00 - A: x\n")
        z.writestr("b.txt", "1/1/21, 10:00 - B: y\n")
    with pytest.raises(ExportError, match="found 2"):
        records(path)


@pytest.mark.parametrize("dates, order", [
    ([("13", "4", "21")], "dmy"),
    ([("4", "13", "21")], "mdy"),
    ([("1", "2", "21"), ("3", "4", "21"), ("30", "4", "21")], "dmy"),
    ([("1", "2", "21"), ("3", "4", "21"), ("4", "30", "21")], "mdy"),
    # never disambiguated: the order that keeps the dates non-decreasing
    ([("2", "1", "21"), ("1", "2", "21")], "dmy"),  # 2 Jan, 1 Feb (m/d would go 1 Feb, 2 Jan)
    ([("1", "2", "21"), ("2", "1", "21")], "mdy"),  # 2 Jan, 1 Feb (d/m would go 1 Feb, 2 Jan)
    # both non-decreasing, or neither: day first
    ([("1", "2", "21"), ("1", "3", "21")], "dmy"),
    ([("5", "5", "21")], "dmy"),
    ([], "dmy"),
    ([("2021", "04", "15")], "ymd"),
])
def test_date_order(dates, order):
    assert date_order(dates) == order


def test_date_order_decided_by_a_later_line_applies_to_earlier_ones(tmp_path):
    text = ("03/04/2021, 10:00 - Tomas Berg: early\n"
            "03/04/2021, 10:01 - Ana Kovač: one\n"
            "20/04/2021, 10:02 - Ana Kovač: decides day first\n")
    assert [m.time.date() for m in messages(write(tmp_path, text))] == [
        utc(2021, 4, 3).date(), utc(2021, 4, 3).date(), utc(2021, 4, 20).date()]
    # Dates that contradict each other: the order most dates fit wins, the others are skipped lines.
    mixed = "13/04/2021, 10:00 - Tomas Berg: a\n14/04/2021, 10:00 - Tomas Berg: c\n04/13/2021, 10:01 - Ana Kovač: b\n"
    got = records(write(tmp_path, mixed, name="mixed.txt"))
    assert [m.text for m in got if isinstance(m, Message)] == ["a", "c"]
    assert Skipped("line", "3") in got


def test_separators_years_and_year_first(tmp_path):
    text = ("15-04-2021, 21:05 - Tomas Berg: dashes\n"
            "2021-04-16 21:06 - Tomas Berg: year first\n")
    # A year-first date reads one way only, even in a file whose other dates are day first.
    assert [m.time for m in messages(write(tmp_path, text))] == [utc(2021, 4, 15, 21, 5), utc(2021, 4, 16, 21, 6)]
    iso = "2021-04-16, 21:06 - Tomas Berg: year first\n[2021.04.17 07:00:01] Ana Kovač: dots\n"
    assert [m.time for m in messages(write(tmp_path, iso, name="iso.txt"))] == [
        utc(2021, 4, 16, 21, 6), utc(2021, 4, 17, 7, 0, 1)]
    brackets = "[15-01-20 02:22:56] Tomas Berg: dashes and brackets\n[12.3.2022 klo 14.08.18] Ana Kovač: fi\n"
    assert [m.time for m in messages(write(tmp_path, brackets, name="b.txt"))] == [
        utc(2020, 1, 15, 2, 22, 56), utc(2022, 3, 12, 14, 8, 18)]


def test_group_events_are_skipped_and_make_a_group(tmp_path):
    text = ("10/05/2021, 09:00 - Messages and calls are end-to-end encrypted. Tap to learn more.\n"
            "10/05/2021, 09:00 - Tomas Berg created group \"Crag crew\"\n"
            "10/05/2021, 09:01 - Tomas Berg added Ana Kovač\n"
            "10/05/2021, 09:02 - Tomas Berg: welcome\n"
            "10/05/2021, 09:03 - Ana Kovač: thanks\n"
            "10/05/2021, 09:04 - Ana Kovač left\n")
    got = records(write(tmp_path, text, name="WhatsApp Chat with Crag crew.txt"))
    assert got == [
        Chat("whatsapp", "Crag crew", "group", "Crag crew"),
        Skipped("service", "encryption"), Skipped("service", "event"), Skipped("service", "event"),
        got[4], got[5], Skipped("service", "event"),
    ]
    assert [m.text for m in got[4:6]] == ["welcome", "thanks"]
    assert records(write(tmp_path, text, name="x.txt"), chat_types=frozenset({"personal"})) == [
        Skipped("chat", "group")]


def test_ios_group_notices_under_the_group_name_are_skipped(tmp_path):
    text = (f"[10/05/2021, 09:00:00] Crag crew: {LRM}Tomas Berg created group “Crag crew”\n"
            f"[10/05/2021, 09:00:01] Crag crew: {LRM}Tomas Berg added Ana Kovač\n"
            "[10/05/2021, 09:02:00] Tomas Berg: welcome\n"
            "[10/05/2021, 09:03:00] Ana Kovač: thanks\n")
    got = records(write(tmp_path, text, name="_chat.txt"))
    assert got[0].type == "group"
    assert {m.sender_id for m in got if isinstance(m, Message)} == {"Tomas Berg", "Ana Kovač"}
    assert got.count(Skipped("service", "event")) == 2


def test_three_senders_make_a_group_and_two_a_personal_chat(tmp_path):
    two = "1/5/21, 9:00 - Tomas Berg: a\n1/5/21, 9:01 - Ana Kovač: b\n"
    three = two + "1/5/21, 9:02 - Lea Strand: c\n"
    assert records(write(tmp_path, two, name="two.txt"))[0].type == "personal"
    assert records(write(tmp_path, three, name="three.txt"))[0].type == "group"


def test_phone_numbers_and_names_lose_invisible_marks(tmp_path):
    text = ("1/5/21, 9:00 - \u202a+47 912 34 567\u202c: hei\n"
            "1/5/21, 9:01 - ~\u202fLea Strand: hi\n")
    assert [m.sender_id for m in messages(write(tmp_path, text))] == ["+47 912 34 567", "~ Lea Strand"]


@pytest.mark.parametrize("line, kind", [
    ("<Media omitted>", "file"), ("image omitted", "photo"), ("video omitted", "video"),
    ("audio omitted", "voice"), ("sticker omitted", "sticker"), ("GIF omitted", "video"),
    ("document omitted", "file"), ("topo.pdf • 3 pages document omitted", "file"),
    ("Contact card omitted", "file"), ("video note omitted", "video"), ("view once photo omitted", "photo"),
    ("<attached: 00000012-PHOTO-2021-04-15-21-06-09.jpg>", "photo"),
    ("<attached: 00000013-VIDEO-2021-04-15-21-06-09.mp4>", "video"),
    ("<attached: 00000014-AUDIO-2021-04-15-21-06-09.opus>", "voice"),
    ("<attached: 00000015-STICKER-2021-04-15-21-06-09.webp>", "sticker"),
    ("<attached: 00000016-GIF-2021-04-15-21-06-09.mp4>", "video"),
    ("<attached: 00000017-topo.pdf>", "file"),
    ("IMG-20210415-WA0001.jpg (file attached)", "photo"),
    ("PTT-20210415-WA0002.opus (file attached)", "voice"),
    ("the image omitted part of the story", None),
    ("hello", None),
])
def test_media_kinds(line, kind):
    assert media_kind(line) == kind


@pytest.mark.parametrize("text, expected", [
    ("This message was deleted", ("placeholder", "", False)),
    ("This message was deleted.", ("placeholder", "", False)),
    ("You deleted this message", ("placeholder", "", False)),
    ("You deleted this message.", ("placeholder", "", False)),
    ("ok <This message was edited>", ("text", "ok", True)),
    ("line one\nline two <This message was edited>", ("text", "line one\nline two", True)),
    ("<Media omitted>", ("file", "", False)),
    ("sticker omitted", ("sticker", "", False)),
    ("I said This message was deleted", ("text", "I said This message was deleted", False)),
])
def test_content(text, expected):
    assert content(text) == expected


def test_stable_ids_across_overlapping_exports(tmp_path):
    lines = [
        "1/5/21, 9:00 - Tomas Berg: morning",
        "1/5/21, 9:00 - Ana Kovač: ok",
        "1/5/21, 9:00 - Ana Kovač: ok",  # an exact repeat in the same minute: a second message
        "1/5/21, 9:01 - Tomas Berg: ok",
        "2/5/21, 9:00 - Ana Kovač: ok",
        "2/5/21, 9:05 - Tomas Berg: bye",
    ]
    older = messages(write(tmp_path, "\n".join(lines[:4]) + "\n", name="WhatsApp Chat with Ana Kovač.txt"))
    newer = messages(write(tmp_path, "\n".join(lines[1:]) + "\n", name="WhatsApp Chat with Ana Kovač (1).txt"))
    again = messages(write(tmp_path, "\n".join(lines[:4]) + "\n", name="copy/WhatsApp Chat with Ana Kovač.txt"))
    assert len({m.id for m in older + newer}) == 6
    assert [m.id for m in older[1:]] == [m.id for m in newer[:3]]
    assert [m.id for m in again] == [m.id for m in older]
    assert {m.chat_id for m in older + newer} == {"Ana Kovač"}
    assert older[1].id != older[2].id and older[2].id.endswith("-1")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["Tomas Berg", "Ana Kovač"]),
                          st.sampled_from(["ok", "haha", "see you"])), min_size=1, max_size=30),
       st.data())
def test_ids_are_unique_and_survive_a_cut_export(tmp_path_factory, rows, data):
    minute, lines = 0, []
    for step, sender, text in rows:
        minute += step
        lines.append(f"1/5/21, {9 + minute // 60}:{minute % 60:02d} - {sender}: {text}")
    tmp = tmp_path_factory.mktemp("wa")
    whole = messages(write(tmp, "\n".join(lines) + "\n"))
    cut = data.draw(st.integers(1, len(lines)))
    prefix = messages(write(tmp, "\n".join(lines[:cut]) + "\n", name="prefix.txt"))
    assert len({m.id for m in whole}) == len(whole) == len(lines)
    assert [m.id for m in prefix] == [m.id for m in whole[:cut]]


def test_utf16_export(tmp_path):
    text = "\ufeff15.04.21, 21:05 - Tomas Berg: hei på deg\n15.04.21, 21:06 - Ana Kovač: 👋\n"
    path = write(tmp_path, text, encoding="utf-16-le")
    assert detect(path) == "whatsapp"
    assert [(m.sender_id, m.text) for m in messages(path)] == [("Tomas Berg", "hei på deg"), ("Ana Kovač", "👋")]
    no_bom = write(tmp_path, text[1:], name="no-bom.txt", encoding="utf-16-le")
    assert [m.text for m in messages(no_bom)] == ["hei på deg", "👋"]
    utf8_bom = write(tmp_path, text, name="bom.txt", encoding="utf-8")
    assert [m.text for m in messages(utf8_bom)] == ["hei på deg", "👋"]


def test_windows_line_endings(tmp_path):
    text = "15.04.21, 21:05 - Tomas Berg: one\r\ntwo\r\n15.04.21, 21:06 - Ana Kovač: three\r\n"
    assert [m.text for m in messages(write(tmp_path, text))] == ["one\ntwo", "three"]


def test_no_header_lines_is_an_export_error(tmp_path):
    path = write(tmp_path, "just some notes\nnothing here\n", name="notes.txt")
    with pytest.raises(ExportError, match="no WhatsApp message lines") as info:
        records(path)
    assert str(info.value).startswith(str(path))
    assert "Export chat" in str(info.value)


def test_undecodable_bytes_are_an_export_error(tmp_path):
    path = tmp_path / "WhatsApp Chat with X.txt"
    path.write_bytes(b"15.04.21, 21:05 - Tomas Berg: caf\xe9 \xff\xfe\xfd\n" * 3 + b"\xc3")
    with pytest.raises(ExportError, match="neither UTF-8 nor UTF-16"):
        records(path)


def test_lines_before_the_first_header_are_ignored(tmp_path):
    text = "\n\n15.04.21, 21:05 - Tomas Berg: one\n"
    assert [m.text for m in messages(write(tmp_path, text))] == ["one"]


@pytest.mark.parametrize("text, expected", [
    ("15.04.21, 21:05 - Tomas Berg: hi\n", True),
    (f"{LRM}[4/15/21, 9:05:33{NNBSP}PM] Tomas Berg: hi\n", True),
    ("\n\n  \n[15/04/2021, 21:05:33] Tomas Berg: hi", True),
    ("1\x005\x00.\x000\x004\x00.\x002\x001\x00,\x00 \x002\x001\x00:\x000\x005\x00 \x00-\x00 \x00T\x00:\x00 \x00x\x00",
     True),
    ("Tomas Berg: hi\n15.04.21, 21:05 - Tomas Berg: hi\n", False),
    ("name,date\nTomas,2021-04-15\n", False),
    ("", False),
])
def test_looks_like(text, expected):
    assert looks_like(text) is expected


@pytest.mark.parametrize("name, chat", [
    ("WhatsApp Chat with Tomas Berg.txt", "Tomas Berg"),
    ("WhatsApp Chat with Tomas Berg (2).txt", "Tomas Berg"),
    ("WhatsApp Chat - Tomas Berg.zip", "Tomas Berg"),
    ("WhatsApp-Chat mit Tomas Berg.txt", "Tomas Berg"),
    ("Chat de WhatsApp con Tomas Berg.txt", "Tomas Berg"),
    ("WhatsApp Chat - Tomas Berg/_chat.txt", "Tomas Berg"),
    ("crag-notes.txt", "crag-notes"),
])
def test_chat_name(name, chat):
    assert chat_name(Path(name)) == chat


def test_ingest_counts_follow_the_rules_and_overlaps_add_nothing_twice(tmp_path):
    from training.ingest import IngestOptions, ingest_file, utcnow
    from twin.store import Store

    lines = [
        "1/5/21, 9:00 - Messages and calls are end-to-end encrypted. Tap to learn more.",
        "1/5/21, 9:00 - Tomas Berg: morning",
        "1/5/21, 9:00 - Ana Kovač: ok",
        "1/5/21, 9:00 - Ana Kovač: ok",
        "1/5/21, 9:01 - Tomas Berg: <Media omitted>",
        "1/5/21, 9:02 - Ana Kovač: This message was deleted",
        "2/5/21, 9:00 - Ana Kovač: ok",
        "2/5/21, 11:05 - Tomas Berg: bye",
    ]
    older = write(tmp_path, "\n".join(lines[:5]) + "\n", name="a/WhatsApp Chat with Ana Kovač.txt")
    newer = write(tmp_path, "\n".join(lines[2:]) + "\n", name="b/WhatsApp Chat with Ana Kovač.txt")
    opts = IngestOptions(owner="Tomas Berg")
    with Store.open(tmp_path / "twin.db") as store:
        assert ingest_file(store, older, opts, utcnow).added == 4
        assert ingest_file(store, newer, opts, utcnow).added == 3
        assert ingest_file(store, newer, opts, utcnow).added == 0
        stats = store.stats()
    assert {k: stats[k] for k in ("messages", "owner_messages", "chats", "contacts", "sessions")} == {
        "messages": 7, "owner_messages": 3, "chats": 1, "contacts": 1, "sessions": 3}
    assert stats["platforms"]["whatsapp"] == 7
