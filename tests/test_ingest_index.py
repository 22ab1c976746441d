"""Ingest keeps the memory index exact: after any import the index is what a full `rebuild` makes, whatever the
import did (new rows, re-imports, edits, a message twice in one file), and a failed import leaves the store, its
index and its triggers as they were. Real SQLite files, real Telegram exports of fictional people.

    .venv/bin/pytest tests/test_ingest_index.py
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from training.ingest import IngestOptions, ingest_file
from twin.chat import ChatKey
from twin.errors import ExportError
from twin.store import Store

MIRA, TOMAS, ANA = 1001, 2002, 2003
T0 = 1_700_000_000
WORDS = "biscuit puppy crag train late rope cafe snoring garden weather".split()


def now() -> datetime:
    return datetime(2024, 1, 1, tzinfo=timezone.utc)


def message(mid: int, sender: int, text: str, when: int, edited: int | None = None) -> dict:
    m = {"id": mid, "type": "message", "date_unixtime": str(when), "from": f"Person {sender}",
         "from_id": f"user{sender}", "text": text}
    return m | ({"edited_unixtime": str(edited)} if edited is not None else {})


def export(tmp_path: Path, name: str, chats: dict[int, list[dict]]) -> Path:
    doc = {"personal_information": {"user_id": MIRA, "first_name": "Mira"},
           "chats": {"list": [{"name": f"Chat {cid}", "type": "personal_chat", "id": cid, "messages": msgs}
                              for cid, msgs in chats.items()]}}
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def history(n: int, first: int = 1, start: int = T0) -> list[dict]:
    """n messages alternating Mira and Tomas, the text built from the id so that every message differs."""
    return [message(i, MIRA if i % 2 else TOMAS, f"{WORDS[i % 10]} {WORDS[(i * 7) % 10]} note{i}", start + 60 * i)
            for i in range(first, first + n)]


def snapshot(store: Store) -> list[tuple]:
    """Every (term, row, column, offset) the index holds, in order."""
    store.conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_instances "
                       "USING fts5vocab(main, messages_fts, instance)")
    return store.conn.execute("SELECT term, doc, col, offset FROM temp.fts_instances ORDER BY 1, 2, 3, 4").fetchall()


def assert_index_exact(store: Store) -> list[tuple]:
    """The index equals a full rebuild from the stored text, and FTS5's own check passes."""
    store.conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    kept = snapshot(store)
    with store.transaction():
        store.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    assert kept == snapshot(store)
    assert kept, "an empty index proves nothing"
    return kept


def triggers(store: Store) -> list[tuple]:
    """The triggers and indexes, which bulk_load changes while it runs (an empty store's lookup indexes too)."""
    return store.conn.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN ('trigger', 'index') "
                              "ORDER BY 1, 2").fetchall()


def found(store: Store, chat: int, term: str) -> list[str]:
    key = ChatKey("telegram", str(chat))
    return sorted(h.text for h in store.search(key, f'"{term}"', T0 + 10**8, limit=10_000))


def test_an_import_leaves_the_index_equal_to_a_rebuild(tmp_path):
    path = export(tmp_path, "a.json", {TOMAS: history(7000), ANA: history(300, first=8000)})
    with Store.open(tmp_path / "twin.db") as store:
        before = triggers(store)
        ingest_file(store, path, IngestOptions(), now)
        assert triggers(store) == before  # whatever ingest did to them, they are back as the schema made them
        assert_index_exact(store)
        assert len(found(store, TOMAS, "note6999")) == 1 and len(found(store, ANA, "note8299")) == 1
        biscuits = found(store, TOMAS, "biscuit")
        assert len(biscuits) == sum("biscuit" in m["text"] for m in history(7000))


def test_reimport_and_an_overlapping_newer_export_keep_the_index_exact(tmp_path):
    old = history(6000)
    newer = history(6000)[3000:] + history(200, first=6001)
    newer[0] = message(3001, MIRA, "snoring rewritten entirely", T0 + 60 * 3001, edited=T0 + 10**6)
    edited_before = old[3000]["text"]
    with Store.open(tmp_path / "twin.db") as store:
        ingest_file(store, export(tmp_path, "old.json", {TOMAS: old}), IngestOptions(), now)
        first = assert_index_exact(store)
        summary = ingest_file(store, export(tmp_path, "old.json", {TOMAS: old}), IngestOptions(), now)
        assert summary.added == 0 and summary.updated == 0
        assert assert_index_exact(store) == first
        summary = ingest_file(store, export(tmp_path, "newer.json", {TOMAS: newer}), IngestOptions(), now)
        assert (summary.added, summary.updated) == (200, 1)
        assert_index_exact(store)
        assert found(store, TOMAS, "rewritten") == ["snoring rewritten entirely"]
        assert edited_before not in found(store, TOMAS, edited_before.split()[-1])
        assert found(store, TOMAS, "note6200") == [newer[-1]["text"]]


def test_a_message_twice_in_one_file_with_a_later_edit_is_indexed_once_with_its_last_text(tmp_path):
    msgs = history(500)
    msgs.append(message(10, TOMAS, "garden replaced in the same file", T0 + 600, edited=T0 + 5000))
    with Store.open(tmp_path / "twin.db") as store:
        summary = ingest_file(store, export(tmp_path, "twice.json", {TOMAS: msgs}), IngestOptions(), now)
        assert (summary.added, summary.updated) == (500, 1)
        assert_index_exact(store)
        assert found(store, TOMAS, "replaced") == ["garden replaced in the same file"]
        assert found(store, TOMAS, "note10") == []


def test_a_failed_import_leaves_store_index_and_triggers_as_they_were(tmp_path):
    with Store.open(tmp_path / "twin.db") as store:
        ingest_file(store, export(tmp_path, "a.json", {TOMAS: history(6000)}), IngestOptions(), now)
        index, before, stats = assert_index_exact(store), triggers(store), store.stats()
        bad = export(tmp_path, "bad.json", {TOMAS: history(6000, first=6001)})
        text = bad.read_text(encoding="utf-8")
        bad.write_text(text[: len(text) * 3 // 4], encoding="utf-8")  # truncated after thousands of messages
        with pytest.raises(ExportError):
            ingest_file(store, bad, IngestOptions(), now)
        assert store.stats() == stats and triggers(store) == before and snapshot(store) == index
    # A fresh connection (the next command) sees the same, and a live message is still indexed by its trigger.
    with Store.open(tmp_path / "twin.db") as store:
        assert triggers(store) == before and store.stats() == stats
        store.conn.execute("INSERT INTO messages (platform, chat_id, msg_id, sender_id, time, text, kind) "
                           "VALUES ('telegram', ?, 'live1', 'user2002', ?, 'zephyrcorp arrived', 'text')",
                           (str(TOMAS), T0))
        assert found(store, TOMAS, "zephyrcorp") == ["zephyrcorp arrived"]
        assert_index_exact(store)


def test_a_failed_first_import_leaves_the_empty_store_with_its_indexes(tmp_path):
    """Into an empty store bulk_load drops the lookup indexes and builds them at the end: a failure puts them back."""
    with Store.open(tmp_path / "twin.db") as store:
        before, stats = triggers(store), store.stats()
        assert {"messages_chat_time", "messages_sender"} <= {name for _, name, _ in before}
        bad = export(tmp_path, "bad.json", {TOMAS: history(12_000)})
        text = bad.read_text(encoding="utf-8")
        bad.write_text(text[: len(text) * 3 // 4], encoding="utf-8")
        with pytest.raises(ExportError):
            ingest_file(store, bad, IngestOptions(), now)
        assert triggers(store) == before and store.stats() == stats
        ingest_file(store, export(tmp_path, "a.json", {TOMAS: history(300)}), IngestOptions(), now)
        assert triggers(store) == before
        plan = store.conn.execute("EXPLAIN QUERY PLAN SELECT time FROM messages WHERE platform = 'telegram' "
                                  "AND chat_id = '2002' ORDER BY time").fetchall()
        assert "messages_chat_time" in str(plan)
        assert store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("first", [True, False], ids=["into-an-empty-store", "after-an-import"])
def test_an_import_interrupted_by_a_crash_leaves_the_old_file(tmp_path, first):
    """A process killed mid-ingest: SQLite rolls the open transaction back when the next connection opens."""
    import subprocess
    import sys

    db = tmp_path / "twin.db"
    with Store.open(db) as store:
        if not first:
            ingest_file(store, export(tmp_path, "a.json", {TOMAS: history(3000)}), IngestOptions(), now)
        before, stats, index = triggers(store), store.stats(), snapshot(store)
    big = export(tmp_path, "big.json", {ANA: history(20_000, first=5000)})
    root = Path(__file__).resolve().parents[1]
    # The child ingests, and dies (os._exit: no rollback, no close) after its second batch.
    code = f"""
import os, sys
sys.path.insert(0, {str(root)!r})
from datetime import datetime, timezone
from twin.store import Store
import training.ingest as ingest
real, calls = Store.insert_messages, []
def dying(self, *a, **k):
    calls.append(1)
    if len(calls) == 3:
        os._exit(9)
    return real(self, *a, **k)
Store.insert_messages = dying
ingest.ingest_file(Store.open({str(db)!r}), {str(big)!r}, ingest.IngestOptions(), lambda: datetime.now(timezone.utc))
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    with Store.open(db) as store:
        assert store.stats() == stats and triggers(store) == before and snapshot(store) == index
        assert store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_bulk_mode_is_refused_outside_a_transaction(tmp_path):
    with Store.open(tmp_path / "twin.db") as store:
        with pytest.raises(RuntimeError, match="transaction"):
            with store.bulk_load():
                pass
