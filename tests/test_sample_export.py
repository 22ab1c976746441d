"""The committed sample export (examples/sample_export/result.json): its Telegram Desktop shape, the owner's
voice, the session count, and that examples/make_sample.py reproduces it byte for byte.

    .venv/bin/pytest tests/test_sample_export.py
"""

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample_export" / "result.json"
GENERATOR = ROOT / "examples" / "make_sample.py"
OWNER_ID = 5550100001
OWNER = f"user{OWNER_ID}"
IMPORTED = {"personal_chat", "private_group", "private_supergroup"}
HOUR = 3600


@pytest.fixture(scope="module")
def export() -> dict:
    return json.loads(SAMPLE.read_text(encoding="utf-8"))


def imported_chats(export: dict) -> list[dict]:
    return [chat for chat in export["chats"]["list"] if chat["type"] in IMPORTED]


def plain(message: dict) -> str:
    text = message["text"]
    return text if isinstance(text, str) else "".join(p if isinstance(p, str) else p["text"] for p in text)


def test_personal_information_names_the_owner(export):
    info = export["personal_information"]
    assert info["user_id"] == OWNER_ID
    assert (info["first_name"], info["last_name"], info["username"]) == ("Mira", "Solberg", "@mira_wrench")
    assert info["phone_number"].startswith("+00")


def test_chat_types_and_saved_messages(export):
    chats = export["chats"]["list"]
    assert Counter(chat["type"] for chat in chats) == {
        "personal_chat": 6, "private_supergroup": 1, "saved_messages": 1, "bot_chat": 1, "public_channel": 1}
    saved = next(chat for chat in chats if chat["type"] == "saved_messages")
    assert "name" not in saved and saved["id"] == OWNER_ID
    # The chats the importer skips by default stay small.
    assert all(len(chat["messages"]) <= 12 for chat in chats if chat["type"] not in IMPORTED)
    group = next(chat for chat in chats if chat["type"] == "private_supergroup")
    senders = {m["from_id"] for m in group["messages"] if m["type"] == "message"}
    assert OWNER in senders and len(senders) >= 4


def test_messages_have_tdesktop_shape(export):
    for chat in export["chats"]["list"]:
        ids = [m["id"] for m in chat["messages"]]
        assert ids == sorted(set(ids)), chat.get("name")
        known = set(ids)
        for m in chat["messages"]:
            assert m["type"] in ("message", "service")
            # Local wall-clock time without an offset: one or two hours ahead of date_unixtime (Oslo).
            utc = datetime.fromtimestamp(int(m["date_unixtime"]), timezone.utc).replace(tzinfo=None)
            assert datetime.fromisoformat(m["date"]) - utc in (timedelta(hours=1), timedelta(hours=2))
            assert isinstance(m["text_entities"], list)
            assert plain(m) == "".join(e["text"] for e in m["text_entities"])
            if isinstance(m["text"], list):
                assert any(isinstance(p, dict) for p in m["text"])
            assert m.get("reply_to_message_id", min(known)) in known
            assert m.get("message_id", min(known)) in known  # a pin points into its own chat
            if "edited" in m:
                assert int(m["edited_unixtime"]) > int(m["date_unixtime"])


def test_the_export_has_every_kind_of_message(export):
    messages = [m for chat in imported_chats(export) for m in chat["messages"]]
    actions = {m["action"] for m in messages if m["type"] == "service"}
    assert actions == {"create_group", "invite_members", "pin_message"}
    media = Counter(m.get("media_type") for m in messages)
    assert media["sticker"] > 20 and media["voice_message"] >= 3
    photos = [m for m in messages if "photo" in m]
    assert any(plain(m) for m in photos) and any(not plain(m) for m in photos)
    assert sum("forwarded_from" in m for m in messages) >= 3
    assert sum("reply_to_message_id" in m for m in messages) > 100
    assert sum("edited" in m for m in messages) > 50
    entity_types = {e["type"] for m in messages for e in m["text_entities"]}
    assert {"link", "mention", "email", "phone"} <= entity_types


def test_fake_pii_is_there_for_the_scrubber(export):
    texts = [plain(m) for chat in imported_chats(export) for m in chat["messages"]]
    assert any("mira.solberg@example.com" in t for t in texts)
    assert any("erik.nygaard@example.com" in t for t in texts)
    assert any("+47 000 00 000" in t for t in texts)


def test_owner_writes_lowercase_without_full_stops(export):
    own = [plain(m) for chat in imported_chats(export) for m in chat["messages"]
           if m["type"] == "message" and m["from_id"] == OWNER and "forwarded_from" not in m and plain(m)]
    assert len(own) > 2000
    assert [t for t in own if t != t.lower() or t.rstrip().endswith(".")] == []
    assert not any("?" in t or "'" in t for t in own)
    # The contacts write differently: capitals, and full stops often.
    theirs = [plain(m) for chat in imported_chats(export) for m in chat["messages"]
              if m["type"] == "message" and m["from_id"] != OWNER and plain(m)]
    assert sum(t != t.lower() for t in theirs) > 0.9 * len(theirs)
    assert sum(t.rstrip().endswith(".") for t in theirs) > 0.2 * len(theirs)


def test_session_count_with_a_sixty_minute_gap(export):
    sessions = 0
    for chat in imported_chats(export):
        times = sorted(int(m["date_unixtime"]) for m in chat["messages"] if m["type"] == "message")
        sessions += 1 + sum(later - earlier > HOUR for earlier, later in zip(times, times[1:]))
    assert 300 <= sessions <= 600


def test_generator_reproduces_the_committed_file(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "sessions" in done.stdout
    assert out.read_bytes() == SAMPLE.read_bytes()
