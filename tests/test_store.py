"""The store: schema and migrations, idempotent inserts, edits, names over time, rollback."""

import sqlite3
import stat

import pytest

from twin.chat import Chat, Message, utc
from twin.errors import StoreError
from twin.store import SCHEMA_VERSION, Store


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
