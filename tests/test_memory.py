"""Memory: the full-text index over the history (schema migration, triggers, forget) and retrieval (twin/memory.py)."""

import sqlite3

import pytest

from twin.chat import Chat, Message, utc
from twin.memory import MemoryOptions, days, fold, query_terms, recall, words
from twin.schema import MIGRATIONS, SCHEMA_VERSION
from twin.store import Store

T0 = 1_700_000_000
DAY = 86_400


def msg(mid, sender, t, text, chat="2002"):
    return Message("telegram", chat, str(mid), sender, None, utc(t), text)


def store_with_history() -> Store:
    """Mira (owner) with Tomas (chat 2002) and Alice (chat 3003); Alice tells a secret, Tomas has a dog."""
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2002", "personal", None))
        store.upsert_chat(Chat("telegram", "3003", "personal", None))
        store.set_owner("telegram", "user1", "Mira")
        store.upsert_names("telegram", {("user2002", "Tomas"): (T0, T0), ("user3003", "Alice"): (T0, T0)})
        store.insert_messages([
            msg(1, "user2002", T0, "we adopted a puppy, her name is Biscuit"),
            msg(2, "user1", T0 + 60, "omg Biscuit! send photos"),
            msg(3, "user2002", T0 + 120, "later, she is asleep"),
            msg(4, "user2002", T0 + 10 * DAY, "the weather is nice today"),
            msg(5, "user1", T0 + 10 * DAY + 60, "perfect for the crag"),
            msg(10, "user3003", T0 + 2 * DAY, "promise you won't tell: I am quitting Zephyrcorp", chat="3003"),
            msg(11, "user1", T0 + 2 * DAY + 60, "my lips are sealed about Zephyrcorp", chat="3003"),
        ])
    return store


def test_words_fold_like_the_index():
    assert fold("Café") == "cafe" and fold("Ёлка") == "елка"
    assert words("Biscuit's ball, 3x!") == ["biscuit", "s", "ball", "3x"]
    assert days([]) == []


def test_index_follows_inserts_edits_and_deletes():
    store = store_with_history()
    hit = lambda q: [h.text for h in store.search(store.find_chat("Tomas").key, f'"{q}"', T0 + 100 * DAY)]
    assert hit("biscuit") == ["omg Biscuit! send photos", "we adopted a puppy, her name is Biscuit"]
    # an edit replaces the indexed text
    store.insert_messages([Message("telegram", "2002", "3", "user2002", None, utc(T0 + 120), "she is snoring",
                                   edited=utc(T0 + 200))])
    assert hit("asleep") == [] and hit("snoring") == ["she is snoring"]
    # a live message is indexed at once
    store.insert_live(Chat("telegram", "2002", "personal"), msg(6, "user2002", T0 + 11 * DAY, "Biscuit chewed my rope"))
    assert "Biscuit chewed my rope" in hit("biscuit")
    store.delete_messages(store.find_chat("Tomas").key, ["6"])
    assert "Biscuit chewed my rope" not in hit("biscuit")
    assert store.indexed_documents() == 7


def test_recall_finds_earlier_passages_with_their_neighbours_within_budget():
    store = store_with_history()
    key = store.find_chat("Tomas").key
    opts = MemoryOptions(max_tokens=200)
    mem = recall(store, key, ["and Biscuit?"], utc(T0 + 20 * DAY), "Mira", opts)
    assert [(r.speaker, r.text) for r in mem] == [
        ("Tomas", "we adopted a puppy, her name is Biscuit"), ("Mira", "omg Biscuit! send photos"),
        ("Tomas", "later, she is asleep")]  # the conversation around the hits; not the next one, days later
    assert mem[0].time == utc(T0)
    assert days(mem) == ["14 Nov"]
    # Never the present conversation or the future: nothing before the first mention.
    assert recall(store, key, ["how is Biscuit?"], utc(T0), "Mira", opts) == ()
    # Within budget: a tight one keeps only the best passage, and 0 turns memory off.
    tight = recall(store, key, ["how is Biscuit?"], utc(T0 + 20 * DAY), "Mira", MemoryOptions(max_tokens=30))
    assert 0 < len(tight) < len(mem)
    assert recall(store, key, ["how is Biscuit?"], utc(T0 + 20 * DAY), "Mira", MemoryOptions(max_tokens=0)) == ()
    # Common words are not asked with; unknown words ask nothing.
    assert query_terms(store, ["xyzzy plugh"], opts) == []


def test_alices_secret_never_reaches_bob_under_the_default_scope():
    store = store_with_history()
    key = store.find_chat("Tomas").key
    later = utc(T0 + 30 * DAY)
    asked = ["what about Zephyrcorp?", "is Alice quitting?"]
    mem = recall(store, key, asked, later, "Mira", MemoryOptions())
    assert mem and {r.speaker for r in mem} <= {"Tomas", "Mira"}  # "is" finds this chat's lines, never Alice's
    assert not any("zephyrcorp" in r.text.lower() or "quitting" in r.text.lower() for r in mem)
    # "owner" scope adds only the owner's own words from other chats, never Alice's
    mine = recall(store, key, ["what about Zephyrcorp?"], later, "Mira", MemoryOptions(scope="owner"))
    assert [(r.speaker, r.text) for r in mine] == [("Mira", "my lips are sealed about Zephyrcorp")]


def test_forget_leaves_no_trace_in_the_index(tmp_path):
    from bot.ledger import Ledger
    from twin.forget import forget

    path = tmp_path / "twin.db"
    src = store_with_history()
    store = Store.open(path)
    src.conn.backup(store.conn)
    src.close()
    store.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    forget(store, "Alice", None, relay_tables=Ledger(store).forget)
    c = store.conn
    assert c.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zephyrcorp'").fetchone() == (0,)
    assert c.execute("SELECT count(*) FROM messages_fts_vocab WHERE term IN ('zephyrcorp', 'quitting')").fetchone() == (0,)
    blobs = b"".join(r[0] for r in c.execute("SELECT block FROM messages_fts_data") if r[0])
    assert b"zephyrcorp" not in blobs and b"quitting" not in blobs
    assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert c.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)") is not None
    store.close()
    raw = path.read_bytes() + (path.with_name("twin.db-wal").read_bytes() if path.with_name("twin.db-wal").exists() else b"")
    assert b"zephyrcorp" not in raw.lower()


def test_migration_indexes_an_existing_database(tmp_path):
    path = tmp_path / "twin.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:SCHEMA_VERSION - 1]:  # a twin.db of the previous schema, with history in it
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.execute("INSERT INTO chats VALUES ('telegram', '2002', 'personal', NULL)")
    conn.execute("INSERT INTO messages (platform, chat_id, msg_id, sender_id, time, text, kind) "
                 "VALUES ('telegram', '2002', '1', 'user2002', ?, 'Biscuit dug up the Café garden', 'text')", (T0,))
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert store.version == SCHEMA_VERSION
        key = store.find_chat("telegram:2002").key
        assert [h.text for h in store.search(key, '"cafe"', T0 + 1)] == ["Biscuit dug up the Café garden"]
        store.insert_messages([msg(2, "user2002", T0 + 5, "Biscuit again")])
        assert len(store.search(key, '"biscuit"', T0 + 10)) == 2


def test_trigram_option_rebuilds_the_index_and_finds_inflected_forms():
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2002", "personal"))
        store.insert_messages([msg(1, "user2002", T0, "мы поедем в Петербург на поезде")])
    key = store.find_chat("telegram:2002").key
    assert store.search(key, '"петербурге"', T0 + 1) == []
    assert store.ensure_index("trigram") is True and store.ensure_index("trigram") is False
    assert [h.text for h in store.search(key, '"петербург"', T0 + 1)] == ["мы поедем в Петербург на поезде"]
    mem = recall(store, key, ["как было в Петербурге?"], utc(T0 + DAY), "Mira", MemoryOptions())
    assert [r.text for r in mem] == []  # "петербурге" is not a substring of "петербург": a trigram index asks whole words
    mem = recall(store, key, ["ты был в Петербург?"], utc(T0 + DAY), "Mira", MemoryOptions())
    assert [r.text for r in mem] == ["мы поедем в Петербург на поезде"]
    store.insert_messages([msg(2, "user2002", T0 + 5, "поезд опоздал")])
    assert len(store.search(key, '"поезд"', T0 + 10)) == 2


def test_a_big_batch_is_indexed_at_once_and_leaves_no_flag():
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2002", "personal"))
        assert store.insert_messages([msg(i, "user2002", T0 + i, f"note {i} about Biscuit") for i in range(100)]) == 100
        assert store.insert_messages([msg(i, "user2002", T0 + i, "again") for i in range(100)]) == 0  # re-import
    assert store.get_meta("memory_bulk") is None
    key = store.find_chat("telegram:2002").key
    assert len(store.search(key, '"biscuit"', T0 + 1000, limit=500)) == 100
    assert [h.text for h in store.search(key, '"57"', T0 + 1000)] == ["note 57 about Biscuit"]
    # A single message (the relay) goes through the trigger.
    store.insert_messages([msg(500, "user2002", T0 + 500, "Biscuit once more")])
    assert len(store.search(key, '"biscuit"', T0 + 1000, limit=500)) == 101
    assert store.conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")


def test_a_big_batch_with_a_message_twice_and_edited_keeps_the_index_exact():
    """A batch holding one message twice, the second time edited (an export that repeats it): the edit's trigger
    must not 'delete' from the index a row the batch has not indexed yet (FTS5 then reports the database as
    malformed), and the index ends with the edited text, as a full rebuild would make it."""
    from dataclasses import replace

    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2002", "personal"))
        store.insert_messages([msg(1000, "user2002", T0, "stored before the batch")])
    batch = [msg(i, "user2002", T0 + i, f"note {i} about Biscuit") for i in range(100)]
    batch.append(replace(msg(7, "user2002", T0 + 7, "note 7 about the crag"), edited=utc(T0 + 50)))
    batch.append(replace(msg(1000, "user2002", T0, "edited after it was stored"), edited=utc(T0 + 60)))
    with store.transaction():
        assert store.insert_messages(batch) == 102
    store.conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    key = store.find_chat("telegram:2002").key
    assert [h.text for h in store.search(key, '"crag"', T0 + 1000)] == ["note 7 about the crag"]
    assert len(store.search(key, '"biscuit"', T0 + 1000, limit=500)) == 99
    assert [h.text for h in store.search(key, '"edited"', T0 + 1000)] == ["edited after it was stored"]
    assert store.search(key, '"stored" "before"', T0 + 1000) == []
    kept = store.conn.execute("SELECT rowid, text FROM messages_fts ORDER BY rowid").fetchall()
    with store.transaction():
        store.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    assert store.conn.execute("SELECT rowid, text FROM messages_fts ORDER BY rowid").fetchall() == kept


def test_a_failed_batch_leaves_neither_rows_nor_the_bulk_flag():
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2002", "personal"))
    bad = [msg(i, "user2002", T0 + i, "fine") for i in range(70)] + [msg(99, "user2002", T0, None)]  # NULL text
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction():
            store.insert_messages(bad)
    assert store.get_meta("memory_bulk") is None and store.indexed_documents() == 0
    store.insert_messages([msg(1, "user2002", T0, "Biscuit")])
    assert len(store.search(store.find_chat("telegram:2002").key, '"biscuit"', T0 + 1)) == 1
