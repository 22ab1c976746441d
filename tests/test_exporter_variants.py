"""What real exporters write that twin once refused or misread: one synthetic case per cause.

Each fixture is written by its test from the format (synthetic people), after the shapes found in other
projects' test exports (see ../shared/fixtures/external/SOURCES.md; none of those bytes are copied here).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from twin.chat import Message
from training.exports import Note, ParseOptions, detect, parser_for


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def records(path: Path, fmt: str, **options) -> list:
    return list(parser_for(fmt)(path, ParseOptions(**options)))


def messages(path: Path, fmt: str, **options) -> list[Message]:
    return [r for r in records(path, fmt, **options) if isinstance(r, Message)]


# --- 1. an iOS _chat.txt outside its zip starts with "[" and is still WhatsApp ---------------------------------

@pytest.mark.parametrize("line", [
    "[01/01/19 11:25] John Doe: Lorem ipsum dolor sit amet.",
    "[10.21.21, 15:21:45] Lena Vogt: hallo",
    "[2020/03/02 09:05] Lena Vogt: hi",
    "[05-02-20 10:00:01] Lena Vogt: hi",
])
def test_ios_chat_txt_outside_its_zip_is_detected_as_whatsapp(tmp_path, line):
    path = write(tmp_path, "_chat.txt", line + "\n")
    assert detect(path) == "whatsapp"
    assert len(messages(path, "whatsapp")) == 1


def test_a_json_list_is_still_refused_as_a_json_list(tmp_path):
    from twin.errors import ExportError

    path = write(tmp_path, "list.json", '[{"id": 1}]')
    with pytest.raises(ExportError, match="a JSON list is no chat export"):
        detect(path)


# --- 2. Telegram exports from before 2021: `date` only ----------------------------------------------------------

def old_telegram(tmp_path: Path, dates: list[str]) -> Path:
    msgs = [{"id": i, "type": "message", "date": d, "from": "Lena Vogt", "from_id": "user2002", "text": f"m{i}"}
            for i, d in enumerate(dates, 1)]
    msgs.append({"id": 99, "type": "message", "date": "2020-06-01T12:00:00", "date_unixtime": "1591012800",
                 "from": "Karl Maus", "from_id": "user1001", "text": "new"})
    doc = {"name": "Lena Vogt", "type": "personal_chat", "id": 2002, "messages": msgs}
    return write(tmp_path, "result.json", json.dumps(doc))


def test_telegram_date_without_unixtime_is_read_in_the_given_zone_and_said_once(tmp_path):
    path = old_telegram(tmp_path, ["2019-07-01T12:00:00", "2019-12-01T12:00:00"])
    got = records(path, "telegram", timezone=ZoneInfo("Europe/Berlin"))
    times = [r.time for r in got if isinstance(r, Message)]
    assert times == [datetime(2019, 7, 1, 10, tzinfo=timezone.utc),  # CEST, +2
                     datetime(2019, 12, 1, 11, tzinfo=timezone.utc),  # CET, +1
                     datetime(2020, 6, 1, 12, tzinfo=timezone.utc)]
    notes = [r for r in got if isinstance(r, Note)]
    assert len(notes) == 1 and notes[0].text.startswith("2 messages have no 'date_unixtime'")
    assert "Europe/Berlin" in notes[0].text


def test_telegram_date_with_z_or_offset_wins_over_the_zone(tmp_path):
    path = old_telegram(tmp_path, ["2019-07-01T12:00:00Z", "2019-07-01T12:00:00+03:00"])
    got = records(path, "telegram", timezone=ZoneInfo("America/New_York"))
    assert [r.time for r in got if isinstance(r, Message)][:2] == [
        datetime(2019, 7, 1, 12, tzinfo=timezone.utc), datetime(2019, 7, 1, 9, tzinfo=timezone.utc)]
    assert not [r for r in got if isinstance(r, Note)]


def test_telegram_date_defaults_to_the_machines_local_zone(tmp_path):
    path = old_telegram(tmp_path, ["2019-07-01T12:00:00"])
    first = messages(path, "telegram")[0]
    assert first.time == datetime(2019, 7, 1, 12).astimezone().astimezone(timezone.utc)
    assert first.time.utcoffset() == timedelta(0)


# --- 3. WhatsApp: unknown header layouts and impossible dates are skipped lines, never message text ----------

def test_whatsapp_trailing_dot_after_the_time_is_a_header(tmp_path):
    text = ("2022/12/14, 13:34. - John Doe: Lorem ipsum dolor sit amet.\n"
            "2022/12/14, 13:35. - Jane Roe: second\nline two\n")
    got = messages(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert [(m.sender_id, m.time, m.text) for m in got] == [
        ("John Doe", datetime(2022, 12, 14, 13, 34, tzinfo=timezone.utc), "Lorem ipsum dolor sit amet."),
        ("Jane Roe", datetime(2022, 12, 14, 13, 35, tzinfo=timezone.utc), "second\nline two")]


def test_whatsapp_header_like_lines_are_skipped_with_their_numbers_not_glued_on(tmp_path):
    from training.exports import Skipped

    text = ("16.11.17, 18:48 - Jane Roe: first\n"
            "04.02.17 xy 22:45 - Jane Roe: a layout no phone writes\n"
            "16.11.17, 18:49 - John Doe: second\n"
            "the date 1.5.2021 was 10:00 ok\n"
            "31.02.17, 10:00 - John Doe: impossible date\n"
            "16.11.17, 25:00 - John Doe: impossible time\n"
            "17.11.17, 08:00 - Jane Roe: last\n")
    got = records(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert [m.text for m in got if isinstance(m, Message)] == ["first", "second\nthe date 1.5.2021 was 10:00 ok",
                                                                "last"]
    assert [r for r in got if isinstance(r, Skipped)] == [Skipped("line", "2"), Skipped("line", "5"),
                                                          Skipped("line", "6")]


def test_whatsapp_one_contradictory_date_no_longer_refuses_the_file(tmp_path):
    from training.exports import Skipped

    good = [f"{d}/04/2021, 10:00 - Jane Roe: m{d}" for d in range(13, 20)]
    text = "\n".join(good[:3] + ["04/20/2021, 10:00 - John Doe: month first"] + good[3:]) + "\n"
    got = records(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert len([m for m in got if isinstance(m, Message)]) == 7
    assert [r for r in got if isinstance(r, Skipped)] == [Skipped("line", "4")]


def test_skipped_lines_show_in_the_ingest_summary(tmp_path):
    from click.testing import CliRunner

    from twin.cli import main

    text = ("16.11.17, 18:48 - Jane Roe: first\n04.02.17 xy 22:45 - Jane Roe: odd\n"
            "16.11.17, 18:49 - John Doe: second\n31.02.17, 10:00 - John Doe: impossible\n")
    path = write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text)
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "ingest", str(path), "--owner", "John Doe"])
    assert result.exit_code == 0, result.output
    assert "2 lines (2, 4)" in result.output


# --- 4. placeholders in other cases, languages and on iOS are messages of their kind, never text -----------

LRM = "\u200e"


@pytest.mark.parametrize("body, kind", [
    ("<media omitted>", "file"),
    ("<Multimedia omitido>", "file"), ("<Arquivo de mídia oculto>", "file"), ("<Medien ausgeschlossen>", "file"),
    ("<Médias omis>", "file"), ("<Media omessi>", "file"), ("<Без медиафайлов>", "file"),
    ("<Media tidak disertakan>", "file"), ("<Medya dahil edilmedi>", "file"), ("<Media weggelaten>", "file"),
    ("Se eliminó este mensaje.", "placeholder"), ("Esta mensagem foi apagada", "placeholder"),
    ("Diese Nachricht wurde gelöscht.", "placeholder"), ("Ce message a été supprimé", "placeholder"),
    ("Questo messaggio è stato eliminato", "placeholder"), ("Данное сообщение удалено", "placeholder"),
    ("Dit bericht is verwijderd", "placeholder"), ("Pesan ini telah dihapus", "placeholder"),
    ("Bu mesaj silindi", "placeholder"),
    (f"{LRM}image omitted", "photo"), (f"{LRM}sticker omitted", "sticker"), (f"{LRM}audio omitted", "voice"),
    (f"{LRM}video omitted", "video"), (f"{LRM}GIF omitted", "video"), (f"{LRM}document omitted", "file"),
    (f"{LRM}imagen omitida", "photo"), (f"{LRM}Bild weggelassen", "photo"), (f"{LRM}sticker omesso", "sticker"),
])
def test_whatsapp_placeholders_are_stored_by_kind_with_no_text(tmp_path, body, kind):
    text = f"[15/04/2021, 21:05:33] Lena Vogt: {body}\n[15/04/2021, 21:06:00] Karl Maus: ok\n"
    got = messages(write(tmp_path, "WhatsApp Chat with Lena Vogt.txt", text), "whatsapp")
    assert [(m.kind, m.text) for m in got] == [(kind, ""), ("text", "ok")]


@pytest.mark.parametrize("notice", [
    "Los mensajes y las llamadas están cifrados de extremo a extremo. Nadie fuera de este chat puede leerlos.",
    "Nachrichten und Anrufe sind Ende-zu-Ende-verschlüsselt. Niemand außerhalb dieses Chats kann sie lesen.",
    "As mensagens e as chamadas são protegidas com a criptografia de ponta a ponta.",
    "Les messages et les appels sont chiffrés de bout en bout.",
])
def test_localised_encryption_notice_under_the_chat_name_is_no_message(tmp_path, notice):
    from training.exports import Skipped

    text = f"[15/04/2021, 21:05:33] Lena Vogt: {notice}\n[15/04/2021, 21:06:00] Lena Vogt: hola\n"
    got = records(write(tmp_path, "WhatsApp Chat with Lena Vogt.txt", text), "whatsapp")
    assert Skipped("service", "encryption") in got
    assert [m.text for m in got if isinstance(m, Message)] == ["hola"]


# --- 7. the global options after the subcommand -----------------------------------------------------------

def test_home_and_verbose_are_accepted_after_the_subcommand(tmp_path):
    from click.testing import CliRunner

    from twin.cli import main

    path = write(tmp_path, "WhatsApp Chat with Jane Roe.txt", "16.11.17, 18:48 - Jane Roe: hi\n")
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["ingest", str(path), "--owner", "Jane Roe", "--home", str(home), "-v"])
    assert result.exit_code == 0, result.output
    assert (home / "twin.db").exists()
    stats = CliRunner().invoke(main, ["stats", "--json", f"--home={home}"])
    assert json.loads(stats.output)["messages"] == 1


def test_ingest_timezone_option_reads_old_telegram_dates_and_says_so(tmp_path):
    from click.testing import CliRunner

    from twin.cli import main

    path = old_telegram(tmp_path, ["2019-07-01T12:00:00"])
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    result = runner.invoke(main, ["--home", str(tmp_path / "h"), "ingest", str(path), "--timezone", "Asia/Tokyo"])
    assert result.exit_code == 0, result.output
    assert "1 message has no 'date_unixtime'" in result.stderr and "Asia/Tokyo" in result.stderr
    bad = runner.invoke(main, ["--home", str(tmp_path / "h"), "ingest", str(path), "--timezone", "Mars/Base"])
    assert bad.exit_code != 0 and "Mars/Base" in str(bad.exception)


# --- 6. an owner is guessed only on evidence -------------------------------------------------------------

def personal_chat(tmp_path: Path, senders: list[tuple[int, str]], chat_id: int = 2002,
                  name: str = "Lena Vogt") -> Path:
    msgs = [{"id": i, "type": "message", "date": "2023-11-14T23:13:20", "date_unixtime": str(1_700_000_000 + i),
             "from": who, "from_id": f"user{uid}", "text": f"m{i}"} for i, (uid, who) in enumerate(senders, 1)]
    return write(tmp_path, "result.json", json.dumps({"name": name, "type": "personal_chat", "id": chat_id,
                                                      "messages": msgs}))


def test_personal_chat_where_neither_sender_is_the_peer_names_no_owner(tmp_path):
    from twin.chat import Owner

    path = personal_chat(tmp_path, [(3003, "Karl Maus"), (4004, "Uwe Hase")])
    assert not [r for r in records(path, "telegram") if isinstance(r, Owner)]


def test_personal_chat_sender_matching_the_chat_name_is_the_peer(tmp_path):
    from twin.chat import Owner

    path = personal_chat(tmp_path, [(3003, "Lena Vogt"), (4004, "Karl Maus")])  # the id changed, the name did not
    assert [r for r in records(path, "telegram") if isinstance(r, Owner)] == [Owner("telegram", "user4004", "Karl Maus")]


def test_ingest_without_evidence_asks_for_the_owner(tmp_path):
    from training.ingest import IngestOptions, ingest_file, utcnow
    from twin.errors import OwnerUnknown
    from twin.store import Store

    path = personal_chat(tmp_path, [(3003, "Karl Maus"), (4004, "Uwe Hase")])
    with Store.open(tmp_path / "twin.db") as store, pytest.raises(OwnerUnknown, match="cannot tell which sender"):
        ingest_file(store, path, IngestOptions(), utcnow)


def test_a_placeholder_once_stored_as_text_keeps_its_message_id(tmp_path):
    import hashlib

    text = "15.04.21, 21:05 - Lena Vogt: <media omitted>\n15.04.21, 21:06 - Lena Vogt: <Media omitted>\n"
    got = messages(write(tmp_path, "WhatsApp Chat with Lena Vogt.txt", text), "whatsapp")

    def old_id(minute: int, kind: str, body: str) -> str:  # how ids were computed before these kinds existed
        when = datetime(2021, 4, 15, 21, minute, tzinfo=timezone.utc).isoformat()
        return hashlib.sha1("\x1f".join((when, "Lena Vogt", kind, body)).encode()).hexdigest()[:20]

    assert [(m.id, m.kind, m.text) for m in got] == [(old_id(5, "text", "<media omitted>"), "file", ""),
                                                     (old_id(6, "file", ""), "file", "")]


def test_whatsapp_sender_glued_to_punctuation_is_a_message(tmp_path):
    text = ("20/01/19, 11:23 - John Doe:.\n20/01/19, 11:24 - Jane Roe: ok\n"
            "20/01/19, 11:25 - Missed voice call at 10:30\n")
    got = messages(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert [(m.sender_id, m.text) for m in got] == [("John Doe", "."), ("Jane Roe", "ok")]


def test_whatsapp_year_first_lines_in_a_month_first_file_are_read_year_first(tmp_path):
    text = ("12/24/22, 13:00 - Jane Roe: month first\n"
            "2022/12/24, 13:01. - John Doe: year first\n"
            "12/25/22, 09:00 - Jane Roe: again\n")
    got = messages(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert [m.time.replace(tzinfo=None) for m in got] == [datetime(2022, 12, 24, 13, 0), datetime(2022, 12, 24, 13, 1),
                                                          datetime(2022, 12, 25, 9, 0)]


# --- a file that mixes phones' layouts (a merged or hand-edited export) -----------------------------------------

def test_whatsapp_each_layout_of_a_mixed_file_reads_its_own_date_order(tmp_path):
    text = ("12/15/25, 10:30 AM - John Doe: android, month first\n"
            "12/16/25, 10:31 AM - Jane Roe: again\n"
            "[15/12/2025, 10:32:03 AM] Jane Roe: ios, day first\n"
            "[16/12/2025, 10:33:00 AM] John Doe: and again\n"
            "[01/02/2026, 09:00:00] John Doe: ambiguous alone: the layout's other dates decide\n")
    got = messages(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert [m.time.replace(tzinfo=None) for m in got] == [
        datetime(2025, 12, 15, 10, 30), datetime(2025, 12, 16, 10, 31), datetime(2025, 12, 15, 10, 32, 3),
        datetime(2025, 12, 16, 10, 33), datetime(2026, 2, 1, 9, 0)]


def test_whatsapp_a_layout_with_no_evidence_of_its_own_takes_the_files_order(tmp_path):
    text = ("13/04/21, 10:00 - John Doe: day first, two-digit year\n"
            "14/04/21, 10:00 - Jane Roe: again\n"
            "[05/04/2021, 11:00:00] Jane Roe: ambiguous, four-digit year\n")
    got = messages(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert got[-1].time.replace(tzinfo=None) == datetime(2021, 4, 5, 11, 0)


def test_whatsapp_ios_line_without_brackets_but_with_seconds_is_a_header(tmp_path):
    text = ("15/12/2025, 10:34:00 AM Jane Roe: ios without brackets\n"
            "15/12/2025, 10:35:10 Jane Roe said nothing with a colon\n"
            "15/12/2025, 10:36:00 AM John Doe: second\nline two\n")
    got = records(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    from training.exports import Skipped

    assert [(m.sender_id, m.text) for m in got if isinstance(m, Message)] == [
        ("Jane Roe", "ios without brackets"), ("John Doe", "second\nline two")]
    assert [r for r in got if isinstance(r, Skipped)] == [Skipped("line", "2")]


def test_whatsapp_german_um_between_date_and_time(tmp_path):
    text = "04.02.17 um 22:45 - Jane Roe: bis gleich\n05.02.17 um 08:10 - John Doe: ok\n"
    got = messages(write(tmp_path, "WhatsApp Chat with Jane Roe.txt", text), "whatsapp")
    assert [(m.sender_id, m.time.replace(tzinfo=None)) for m in got] == [
        ("Jane Roe", datetime(2017, 2, 4, 22, 45)), ("John Doe", datetime(2017, 2, 5, 8, 10))]


@pytest.mark.parametrize("line, when", [
    ("2021/4/15 下午9:05 - 林美: 好的", datetime(2021, 4, 15, 21, 5)),
    ("2021/4/15 上午12:30 - 林美: 早", datetime(2021, 4, 15, 0, 30)),
    ("[2021/04/15 午後9:05:33] 林美: はい", datetime(2021, 4, 15, 21, 5, 33)),
    ("2021. 4. 15. 오후 9:05 - 지민: 네", None),  # Korean's spaced date: a layout twin does not read yet
    ("15/4/2564, 21:05 - สมชาย: ครับ", datetime(2021, 4, 15, 21, 5)),
])
def test_whatsapp_east_asian_halves_of_the_day_and_buddhist_years(tmp_path, line, when):
    path = write(tmp_path, "WhatsApp Chat with Jane Roe.txt", line + "\n16/4/2021, 10:00 - Jane Roe: x\n"
                 if "2564" in line else line + "\n")
    if when is None:
        with pytest.raises(Exception, match="no WhatsApp message lines"):
            records(path, "whatsapp")
        return
    assert messages(path, "whatsapp")[0].time.replace(tzinfo=None) == when
