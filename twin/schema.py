"""twin.db's schema and its file: the migrations, running them on open, the one way to write (a transaction).

The schema is versioned with `PRAGMA user_version` and migrated forward on open (`migrate`); a file from a newer
twin is refused. The store (twin/store.py) owns the history's tables, the relay's ledger (bot/ledger.py) the
drafts, their events, connections and chat settings; both write through `transaction`. Exercised by every
command that opens twin.db (`twin stats`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from twin.errors import StoreError

# Each entry migrates the schema from version i to i + 1. Never edit a shipped entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE chats (
        platform TEXT NOT NULL, chat_id TEXT NOT NULL, type TEXT NOT NULL, title TEXT,
        PRIMARY KEY (platform, chat_id)
    );
    CREATE TABLE contacts (
        platform TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT,
        is_owner INTEGER NOT NULL DEFAULT 0, first_seen INTEGER, last_seen INTEGER,
        PRIMARY KEY (platform, user_id)
    );
    CREATE TABLE contact_names (
        platform TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
        PRIMARY KEY (platform, user_id, name)
    );
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, format TEXT NOT NULL,
        started_at INTEGER NOT NULL, finished_at INTEGER,
        messages_seen INTEGER NOT NULL DEFAULT 0, messages_added INTEGER NOT NULL DEFAULT 0,
        messages_updated INTEGER NOT NULL DEFAULT 0, chats INTEGER NOT NULL DEFAULT 0,
        chats_skipped INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL, chat_id TEXT NOT NULL, msg_id TEXT NOT NULL,
        sender_id TEXT NOT NULL, time INTEGER NOT NULL, text TEXT NOT NULL, kind TEXT NOT NULL,
        reply_to TEXT, forwarded INTEGER NOT NULL DEFAULT 0, edited INTEGER,
        import_id INTEGER REFERENCES imports(id),
        UNIQUE (platform, chat_id, msg_id)
    );
    CREATE INDEX messages_chat_time ON messages (platform, chat_id, time);
    CREATE INDEX messages_sender ON messages (platform, sender_id);
    CREATE TABLE sessions (
        platform TEXT NOT NULL, chat_id TEXT NOT NULL, idx INTEGER NOT NULL,
        start INTEGER NOT NULL, end INTEGER NOT NULL,
        messages INTEGER NOT NULL, owner_messages INTEGER NOT NULL,
        PRIMARY KEY (platform, chat_id, idx)
    );
    """,
    # 2: the relay. Live messages are marked (`source`) so that training leaves them out unless asked; drafts
    # and every transition of one (bot/drafts.py); Telegram business connections; per-chat relay settings.
    """
    ALTER TABLE messages ADD COLUMN source TEXT NOT NULL DEFAULT 'import';
    CREATE TABLE connections (
        id TEXT PRIMARY KEY, user_id TEXT NOT NULL, user_chat_id TEXT NOT NULL,
        enabled INTEGER NOT NULL, can_reply INTEGER NOT NULL, rights TEXT NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE drafts (
        id INTEGER PRIMARY KEY,
        origin TEXT NOT NULL, platform TEXT NOT NULL, connection_id TEXT, chat_id TEXT NOT NULL,
        contact_id TEXT NOT NULL, answers TEXT NOT NULL, reply_to TEXT,
        candidates TEXT NOT NULL, shown INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,
        final_text TEXT, edited INTEGER NOT NULL DEFAULT 0, editing INTEGER NOT NULL DEFAULT 0,
        adapter TEXT, prompt TEXT, latency_ms REAL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL,
        card_chat_id TEXT, card_message_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, inflight INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
        error TEXT, sent_ids TEXT, regenerations INTEGER NOT NULL DEFAULT 0, auto INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX drafts_chat ON drafts (platform, chat_id, state);
    CREATE INDEX drafts_state ON drafts (state, expires_at);
    CREATE TABLE draft_events (
        id INTEGER PRIMARY KEY, draft_id INTEGER NOT NULL REFERENCES drafts(id) ON DELETE CASCADE,
        time REAL NOT NULL, action TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL
    );
    CREATE INDEX draft_events_draft ON draft_events (draft_id);
    CREATE TABLE chat_settings (
        platform TEXT NOT NULL, chat_id TEXT NOT NULL, connection_id TEXT, auto INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, chat_id)
    );
    """,
    # 3: draft ids are never reused (AUTOINCREMENT): a button on an old card names its draft by id, and after
    # a /forget SQLite would hand the freed id to another contact's draft. `failures` counts failed sends in a
    # row apart from `attempts` (one per message sent). SQLite's way to change a table: build it anew, copy,
    # swap (foreign keys are off while migrations run, and checked after).
    """
    CREATE TABLE drafts_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL, platform TEXT NOT NULL, connection_id TEXT, chat_id TEXT NOT NULL,
        contact_id TEXT NOT NULL, answers TEXT NOT NULL, reply_to TEXT,
        candidates TEXT NOT NULL, shown INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,
        final_text TEXT, edited INTEGER NOT NULL DEFAULT 0, editing INTEGER NOT NULL DEFAULT 0,
        adapter TEXT, prompt TEXT, latency_ms REAL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL,
        card_chat_id TEXT, card_message_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0, inflight INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL, error TEXT, sent_ids TEXT, regenerations INTEGER NOT NULL DEFAULT 0,
        auto INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO drafts_v3 (id, origin, platform, connection_id, chat_id, contact_id, answers, reply_to, candidates,
        shown, state, final_text, edited, editing, adapter, prompt, latency_ms, created_at, updated_at, expires_at,
        card_chat_id, card_message_id, attempts, failures, inflight, next_attempt_at, error, sent_ids,
        regenerations, auto)
    SELECT id, origin, platform, connection_id, chat_id, contact_id, answers, reply_to, candidates, shown, state,
        final_text, edited, editing, adapter, prompt, latency_ms, created_at, updated_at, expires_at, card_chat_id,
        card_message_id, attempts, CASE WHEN state = 'sending' AND attempts > 0 THEN attempts ELSE 0 END, inflight,
        next_attempt_at, error, sent_ids, regenerations, auto FROM drafts;
    DROP TABLE drafts;
    ALTER TABLE drafts_v3 RENAME TO drafts;
    CREATE INDEX drafts_chat ON drafts (platform, chat_id, state);
    CREATE INDEX drafts_state ON drafts (state, expires_at);
    """,
    # 4: bursts the relay judged "no reply due" and showed no card for (bot/skips.py). `fate`: open (nothing since),
    # missed (the owner answered by hand anyway), moved_on (the contact wrote again first), forced (/draft).
    """
    CREATE TABLE skipped_bursts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, platform TEXT NOT NULL, connection_id TEXT, chat_id TEXT NOT NULL,
        contact_id TEXT NOT NULL, answers TEXT NOT NULL, probability REAL NOT NULL, created_at REAL NOT NULL,
        fate TEXT NOT NULL DEFAULT 'open', settled_at REAL
    );
    CREATE INDEX skipped_bursts_chat ON skipped_bursts (platform, chat_id, fate);
    CREATE INDEX skipped_bursts_time ON skipped_bursts (created_at);
    """,
    # 5: memory (twin/memory.py). A full-text index over the messages' text: FTS5 with external content (the
    # text lives once, in `messages`; the index holds only the terms), filled from what is stored now and kept
    # current by triggers on every insert, delete and change of text, so ingest, live messages and `twin forget`
    # all keep it true. A draft records the days its memory came from, for its card (bot/cards.py).
    # Tokeniser: unicode61 with diacritics folded ("café" finds "cafe"); twin.toml [memory] tokenize = "trigram"
    # rebuilds it as trigrams (Store.ensure_index). The vocabulary table gives each term's document count (retrieval asks with the rarest words). The triggers' shape is sqlite-utils'
    # `enable_fts(create_triggers=True)`, written here because that runs `executescript`, which commits the open
    # transaction (a migration step is all or nothing) and hands no UPDATE OF column to the trigger. A big batch
    # of inserts (ingest) sets meta 'memory_bulk' and indexes its rows in one statement after them
    # (Store.insert_messages): FTS5 flushes its pending terms at every statement's savepoint, so one trigger
    # insert per row writes one tiny segment per row, 8x slower than indexing the batch at once.
    # An ingest goes further (Store.bulk_load): the insert trigger is off for the whole file and its rows are
    # indexed in one statement at the end.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5 (
        text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    CREATE VIRTUAL TABLE messages_fts_vocab USING fts5vocab (messages_fts, 'row');
    CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages
    WHEN NOT EXISTS (SELECT 1 FROM meta WHERE key = 'memory_bulk') BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER messages_fts_au AFTER UPDATE OF text ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
    END;
    INSERT INTO meta (key, value) VALUES ('memory_tokenize', 'unicode61')
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    ALTER TABLE drafts ADD COLUMN remembered TEXT NOT NULL DEFAULT '[]';
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path | None) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); the file is created owner-only (0600) in an
    owner-only directory, and journals in WAL mode. `None`: an in-memory database, for tests."""
    if path is None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
    else:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a twin database ({e}); move it away or pass another --home") from e
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """All or nothing: commit when the block ends, roll back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def statements(script: str) -> list[str]:
    """A migration's statements, split at each ";" that ends one (not the ";" inside a trigger's BEGIN ... END).

    >>> statements("CREATE TABLE t (x); CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t; END;")
    ['CREATE TABLE t (x);', 'CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t; END;']
    """
    out, buf = [], ""
    for piece in script.split(";")[:-1] if script.rstrip().endswith(";") else script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n;"):
        out.append(buf.strip())
    return out


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Bring the schema to SCHEMA_VERSION, one transaction per step; `where` names the file in errors."""
    current = version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema version {current} is newer than this twin understands ({SCHEMA_VERSION}); "
            "upgrade twin"
        )
    if current == SCHEMA_VERSION:
        return
    # Off while the schema changes (a migration may rebuild a table others refer to: DROP TABLE would
    # cascade), checked before each commit; the pragma is a no-op inside a transaction, so it is set here.
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for i in range(current, SCHEMA_VERSION):
            with transaction(conn):
                for statement in statements(MIGRATIONS[i]):
                    conn.execute(statement)
                if broken := conn.execute("PRAGMA foreign_key_check").fetchall():
                    raise StoreError(f"{where}: migration to schema {i + 1} left {len(broken)} dangling "
                                     "references; restore a backup and report this")
                conn.execute(f"PRAGMA user_version = {i + 1}")
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
