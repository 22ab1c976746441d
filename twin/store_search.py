"""The store's full-text index (SQLite FTS5 over `messages`, schema 4 in twin/schema.py): the part of the store that
searches the history for memory (twin/memory.py). `Store` inherits it; nothing else touches these tables.

The index is external content: it holds the terms, `messages` the text, triggers keep the two in step. Exercised
by `twin recall CONTACT "text"` and every draft.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from twin.chat import ChatKey
from twin.errors import ConfigError

TOKENIZERS = {
    # unicode61 splits on what is not a letter or digit and folds case; remove_diacritics 2 folds accents of
    # every script ("café" = "cafe"): the FTS5 docs, "Unicode61 Tokenizer".
    "unicode61": "unicode61 remove_diacritics 2",
    # Every 3-character run is a term: finds a word inside its inflected forms (Russian, Finnish), at the cost of
    # an index a few times larger. Queries of fewer than 3 characters find nothing.
    "trigram": "trigram",
}


@dataclass(frozen=True, slots=True)
class Hit:
    """A stored message, as memory reads it: `row` is its rowid, `time` epoch seconds."""

    row: int
    platform: str
    chat_id: str
    time: int
    from_owner: bool
    sender_name: str | None
    text: str


_COLUMNS = ("m.id, m.platform, m.chat_id, m.time, COALESCE(c.is_owner, 0), c.name, m.text")
_JOIN = "LEFT JOIN contacts c ON c.platform = m.platform AND c.user_id = m.sender_id"


def _hit(r: tuple) -> Hit:
    return Hit(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6])


# The triggers that keep the index (schema 5) and what bulk_load does with each while it runs.
_INSERT_TRIGGER = "messages_fts_ai"
_ROW_TRIGGERS = ("messages_fts_au", "messages_fts_ad")
_LOOKUP_INDEXES = ("messages_chat_time", "messages_sender")  # an edit or a delete: index the old row's change
# The page cache while a big import runs: with SQLite's default 2 MiB the three indexes of `messages` no longer fit
# after ~100k messages, and every insert reads its pages back from the WAL (a 1M import spent ~15% more CPU).
BULK_CACHE_KIB = 32 * 1024


class Searchable:
    """The index's methods of `Store` (which gives `conn`, `get_meta`, `set_meta`, `transaction`)."""

    conn: sqlite3.Connection
    bulk_loading: bool = False  # inside bulk_load(): Store.insert_messages leaves the indexing to it

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """A big import into `messages` (ingest), inside the caller's transaction: the insert trigger is off and the
        rows added are indexed in one statement when the block ends, with the text they have then; into an empty
        table, the two lookup indexes (`_LOOKUP_INDEXES`) are dropped too and built when the block ends.

        An edit or delete of a row stored before the block still goes through its trigger; of a row added inside
        it, the trigger is skipped (`WHEN old.id <= last`), because that row is not in the index yet (FTS5's
        'delete' of a row it does not hold corrupts the index) and the final statement indexes its last text.
        At the end the triggers and indexes are put back exactly as the schema wrote them (their SQL read from
        sqlite_master); if the block raises, the caller's rollback takes the trigger changes back with the rows,
        so a killed or failed import leaves twin.db as it was.
        """
        if not self.conn.in_transaction:
            raise RuntimeError("bulk_load() needs an open transaction (Store.transaction())")
        saved = dict(self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?, ?)",
            (_INSERT_TRIGGER, *_ROW_TRIGGERS)))
        last = self.conn.execute("SELECT COALESCE(max(id), 0) FROM messages").fetchone()[0]
        cache = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        for name in saved:
            self.conn.execute(f"DROP TRIGGER {name}")
        for name in _ROW_TRIGGERS:
            sql = saved[name].replace(" ON messages BEGIN", f" ON messages WHEN old.id <= {int(last)} BEGIN", 1)
            if sql == saved[name]:
                raise RuntimeError(f"{name}: trigger SQL not as schema 5 wrote it; bulk_load needs updating")
            self.conn.execute(sql)
        self.conn.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
        # Into an empty table, the two lookup indexes are built once at the end (a sort) instead of row by row; the
        # unique key stays, for the upsert. Their SQL is put back as the schema wrote it, like the triggers'.
        indexes = {} if last else dict(self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN (?, ?)", _LOOKUP_INDEXES))
        for name in indexes:
            self.conn.execute(f"DROP INDEX {name}")
        self.bulk_loading = True
        try:
            yield
        finally:
            self.bulk_loading = False
            self.conn.execute(f"PRAGMA cache_size = {int(cache)}")
        for sql in indexes.values():
            self.conn.execute(sql)
        for name in _ROW_TRIGGERS:
            self.conn.execute(f"DROP TRIGGER {name}")
        for sql in saved.values():
            self.conn.execute(sql)
        # One statement for every new row: FTS5 flushes its pending terms at each statement's end, so this writes
        # a few large segments where per-row triggers wrote one tiny segment per row.
        self.conn.execute("INSERT INTO messages_fts (rowid, text) SELECT id, text FROM messages WHERE id > ?",
                          (last,))

    def ensure_index(self, tokenize: str) -> bool:
        """Build the index with this tokeniser (twin.toml [memory] tokenize) when it was built with another;
        True when it rebuilt. The triggers name the table, not its tokeniser, so they stay."""
        if tokenize not in TOKENIZERS:
            raise ConfigError(f"memory.tokenize: {tokenize!r} is not one of {sorted(TOKENIZERS)}")
        if (self.get_meta("memory_tokenize") or "unicode61") == tokenize:  # type: ignore[attr-defined]
            return False
        with self.transaction():  # type: ignore[attr-defined]
            self.conn.execute("DROP TABLE messages_fts_vocab")
            self.conn.execute("DROP TABLE messages_fts")
            self.conn.execute("CREATE VIRTUAL TABLE messages_fts USING fts5 (text, content='messages', "
                              f"content_rowid='id', tokenize='{TOKENIZERS[tokenize]}')")
            self.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
            self.conn.execute("CREATE VIRTUAL TABLE messages_fts_vocab USING fts5vocab (messages_fts, 'row')")
            self.set_meta("memory_tokenize", tokenize)  # type: ignore[attr-defined]
        return True

    @property
    def tokenizer_name(self) -> str:
        return self.get_meta("memory_tokenize") or "unicode61"  # type: ignore[attr-defined]

    def indexed_documents(self) -> int:
        """About how many messages the index holds: the highest message id (counting the docsize table takes
        30 ms at 1M messages, this a lookup; deletions make it a little high, which a threshold does not mind)."""
        return self.conn.execute("SELECT COALESCE(max(id), 0) FROM messages").fetchone()[0]

    def term_documents(self, terms: list[str], cap: int | None = None) -> dict[str, int]:
        """How many messages contain each term (as the tokeniser wrote it: folded), 0 when none; with `cap`, at
        most cap + 1 (counted by reading no more of its posting list: the vocabulary table reads all of a
        common word's, 15 ms for a word in half of 1M messages)."""
        out = {}
        for t in terms:
            if cap is None:
                row = self.conn.execute("SELECT doc FROM messages_fts_vocab WHERE term = ?", (t,)).fetchone()
                out[t] = row[0] if row else 0
            else:
                out[t] = self.conn.execute(
                    "SELECT count(*) FROM (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? LIMIT ?)",
                    ('"' + t.replace('"', '""') + '"', cap + 1)).fetchone()[0]
        return out

    def search(self, key: ChatKey, query: str, before: int, *, owner_elsewhere: bool = False, live: bool = True,
               limit: int = 16) -> list[Hit]:
        """The newest `limit` messages matching an FTS5 `query` sent before `before` (epoch seconds) in this chat,
        then, with `owner_elsewhere`, the newest `limit` of the owner's own messages in other chats.

        Newest first, not by bm25: retrieval asks with one rare word at a time (twin/memory.py), whose hits are
        equals, and bm25 costs a rank computation for every match in the whole store (30 ms for a word in 2,000
        messages of a 1M-message store). The index drives (CROSS JOIN keeps SQLite from walking a big chat's
        time index instead, 20 ms for a word that chat lacks): each match is one lookup by id."""
        head = f"SELECT {_COLUMNS} FROM messages_fts CROSS JOIN messages m ON m.id = messages_fts.rowid {_JOIN} " \
               "WHERE messages_fts MATCH ? AND m.time < ? AND (? OR m.source = 'import')"
        rows = self.conn.execute(
            f"{head} AND m.platform = ? AND m.chat_id = ? ORDER BY m.time DESC, m.id DESC LIMIT ?",
            (query, before, int(live), key.platform, key.chat_id, limit),
        ).fetchall()
        if owner_elsewhere:
            rows += self.conn.execute(
                f"{head} AND c.is_owner = 1 AND NOT (m.platform = ? AND m.chat_id = ?) "
                "ORDER BY m.time DESC, m.id DESC LIMIT ?",
                (query, before, int(live), key.platform, key.chat_id, limit),
            ).fetchall()
        return [_hit(r) for r in rows]

    def around(self, hit: Hit, before: int, n: int, live: bool = True, within: int = 3600) -> tuple[list[Hit], list[Hit]]:
        """Up to `n` messages of the hit's chat just before it and just after it, sent before `before` and within
        `within` seconds of the hit (its conversation, not the next one), each list oldest first."""
        args = (hit.platform, hit.chat_id, min(before, hit.time + within + 1), hit.time - within, int(live),
                hit.time, hit.time, hit.row, n)
        where = ("WHERE m.platform = ? AND m.chat_id = ? AND m.time < ? AND m.time >= ? AND "
                 "(? OR m.source = 'import') AND ")
        older = self.conn.execute(
            f"SELECT {_COLUMNS} FROM messages m {_JOIN} {where} (m.time < ? OR (m.time = ? AND m.id < ?)) "
            "ORDER BY m.time DESC, m.id DESC LIMIT ?", args).fetchall()
        newer = self.conn.execute(
            f"SELECT {_COLUMNS} FROM messages m {_JOIN} {where} (m.time > ? OR (m.time = ? AND m.id > ?)) "
            "ORDER BY m.time, m.id LIMIT ?", args).fetchall()
        return [_hit(r) for r in reversed(older)], [_hit(r) for r in newer]

    def compact_index(self) -> None:
        """Merge the index into one segment, which drops what deletions only marked as deleted (`twin forget`:
        no term of a forgotten message stays in the index's pages). Call inside `erasing()`."""
        self.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")
