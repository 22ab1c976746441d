"""The store: schema and migrations, idempotent inserts, edits, names over time, rollback."""

import sqlite3
import stat

import pytest

from twin.chat import Chat, Message, utc
from twin.errors import StoreError
from twin.schema import SCHEMA_VERSION
from twin.store import Store


def msg(mid, sender="user2", t=1_700_000_000, text="hello", edited=None, chat="2"):
    return Message("telegram", chat, str(mid), sender, None, utc(t), text, edited=None if edited is None else utc(edited))


def test_new_store_is_migrated_and_owner_only(tmp_path):
    path = tmp_path / "home" / "twin.db"
    with Store.open(path) as store:
        assert store.version == SCHEMA_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "twin.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this twin understands"):
        Store.open(path)


def test_not_a_database(tmp_path):
    path = tmp_path / "twin.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a twin database"):
        Store.open(path)


def test_insert_is_idempotent_and_edits_update():
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Tomas"))
        assert store.insert_messages([msg(1), msg(2)]) == 2
        assert store.insert_messages([msg(1), msg(2)]) == 0
        # A later edit replaces the text; an older or equal one does not.
        assert store.insert_messages([msg(1, text="hello!", edited=1_700_000_100)]) == 1
        assert store.insert_messages([msg(1, text="stale", edited=1_700_000_050)]) == 0
    text = store.conn.execute("SELECT text FROM messages WHERE msg_id = '1'").fetchone()[0]
    assert text == "hello!"
    assert store.stats()["messages"] == 2


def test_rollback_leaves_nothing():
    store = Store.open(None)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.upsert_chat(Chat("telegram", "2", "personal", "Tomas"))
            store.insert_messages([msg(1)])
            raise RuntimeError("bad file")
    assert store.stats()["messages"] == 0
    assert store.chat_keys() == []


def test_names_over_time_and_owner_counts():
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal"))
        store.insert_messages([msg(1, "user2"), msg(2, "user1"), msg(3, "user2")])
        store.upsert_names("telegram", {("user2", "Tom"): (100, 200), ("user2", "Tomas Berg"): (300, 400),
                                        ("user1", "Mira"): (100, 400)})
        store.set_owner("telegram", "user1")
    names = store.conn.execute(
        "SELECT name, first_seen, last_seen FROM contact_names WHERE user_id = 'user2' ORDER BY first_seen"
    ).fetchall()
    assert names == [("Tom", 100, 200), ("Tomas Berg", 300, 400)]
    assert store.conn.execute("SELECT name FROM contacts WHERE user_id = 'user2'").fetchone()[0] == "Tomas Berg"
    s = store.stats()
    assert (s["messages"], s["owner_messages"], s["contacts"], s["chats"]) == (3, 1, 1, 1)
    assert s["platforms"] == {"telegram": 3, "discord": 0, "whatsapp": 0}
    assert store.top_contacts() == [("telegram", "user2", "Tomas Berg", 2)]


def test_chat_messages_read_back_in_order_with_owner_flag():
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Tomas"))
        store.insert_messages([msg(2, "user1", t=200, text="b"), msg(1, "user2", t=100, text="a")])
        store.upsert_names("telegram", {("user2", "Tomas"): (100, 100), ("user1", "Mira"): (200, 200)})
        store.set_owner("telegram", "user1")
    from twin.store import ChatKey

    rows = store.chat_messages(ChatKey("telegram", "2"))
    assert [(m.msg_id, m.sender_name, m.from_owner, m.text) for m in rows] == [
        ("1", "Tomas", False, "a"), ("2", "Mira", True, "b")]
    assert store.chats() == [Chat("telegram", "2", "personal", "Tomas")]
    assert store.owner_name() == "Mira"


def test_find_chat_by_name_title_or_id():
    from twin.errors import NotFound

    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Tomas Berg"))
        store.upsert_chat(Chat("telegram", "9", "group", "Crux Crew"))
        store.upsert_chat(Chat("whatsapp", "Tom", "personal", "Tom"))
        store.insert_messages([msg(1, "user2"), msg(2, "user2", chat="9"),
                               Message("whatsapp", "Tom", "a", "Tom", None, utc(1), "hi")])
        store.upsert_names("telegram", {("user2", "Tomas Berg"): (1, 1)})
        store.upsert_names("whatsapp", {("Tom", "Tom"): (1, 1)})
    assert store.find_chat("tomas berg").id == "2"
    assert store.find_chat("Crux Crew").id == "9"
    assert store.find_chat("telegram:2").id == "2"
    assert store.find_chat("telegram:9").type == "group"
    assert store.find_chat("whatsapp:Tom").platform == "whatsapp"
    with pytest.raises(NotFound, match="no chat with that name"):
        store.find_chat("Nobody")


def test_schema_3_keeps_drafts_and_events_and_never_reuses_a_draft_id(tmp_path):
    from twin.schema import MIGRATIONS

    path = tmp_path / "twin.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:  # a twin.db as the relay of schema 2 left it
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    row = ("telegram", "telegram", "BC1", "2002", "user2002", '["7"]', '["ok"]', "sending", 1.0, 1.0, 2, 1)
    conn.execute("INSERT INTO drafts (origin, platform, connection_id, chat_id, contact_id, answers, candidates, "
                 "state, created_at, updated_at, attempts, inflight) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    conn.execute("INSERT INTO draft_events (draft_id, time, action, to_state) VALUES (1, 1.0, 'create', 'pending')")
    conn.commit()
    conn.close()
    store = Store.open(path)
    assert store.version == SCHEMA_VERSION
    c = store.conn
    assert c.execute("SELECT id, state, attempts, failures, inflight FROM drafts").fetchall() == [(1, "sending", 2, 2, 1)]
    assert c.execute("SELECT draft_id, action FROM draft_events").fetchall() == [(1, "create")]
    assert c.execute("PRAGMA foreign_keys").fetchone() == (1,)
    # The newest draft is deleted (/forget): its id is not handed to the next one, whose old buttons would act on it.
    c.execute("DELETE FROM drafts WHERE id = 1")
    c.execute("INSERT INTO drafts (origin, platform, chat_id, contact_id, answers, candidates, state, created_at, "
              "updated_at) VALUES ('telegram', 'telegram', '2003', 'user2003', '[]', '[]', 'pending', 2.0, 2.0)")
    assert c.execute("SELECT id FROM drafts").fetchall() == [(2,)]
    assert c.execute("SELECT count(*) FROM draft_events").fetchone() == (0,)  # the cascade still holds
    store.close()
