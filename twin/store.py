"""The store: one SQLite file (twin.db) holding every chat, contact, message, session and import.

The store owns the history's tables (chats, contacts, contact_names, messages, sessions, imports, meta); the
relay's ledger (bot/ledger.py) owns the drafts, their events, connections and chat settings, on the same
connection. The schema and its migrations are in twin/schema.py. Unique keys make re-import idempotent: a message
is (platform, chat_id, msg_id). Writes during an import run inside one explicit transaction
(`Store.transaction()`), so a bad file leaves the store exactly as it was. Exercised by `twin ingest` and
`twin stats`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from twin import schema
from twin.chat import Chat, ChatKey, Message, utc
from twin.errors import NotFound
from twin.store_search import Searchable


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as read back for training and drafting."""

    msg_id: str
    sender_id: str
    sender_name: str | None
    from_owner: bool
    time: datetime
    text: str
    kind: str
    forwarded: bool
    reply_to: str | None


def _ts(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp())


class Store(Searchable):
    """twin.db. Open with `Store.open(path)`; use as a context manager to close it."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None):
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path | str | None) -> "Store":
        """Open (creating owner-only, 0600) and migrate. `None` opens an in-memory store for tests."""
        path = None if path is None else Path(path)
        store = cls(schema.connect(path), path)
        schema.migrate(store.conn, str(path or ":memory:"))
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def version(self) -> int:
        return schema.version(self.conn)

    def transaction(self) -> AbstractContextManager[None]:
        """All or nothing: commit when the block ends, roll back if it raises."""
        return schema.transaction(self.conn)

    @contextmanager
    def erasing(self) -> Iterator[None]:
        """A transaction whose deleted rows are overwritten, not just unlinked, with the WAL folded back into the
        file after the commit, so deleted text does not linger in free pages of either (`twin forget`)."""
        self.conn.execute("PRAGMA secure_delete = ON")
        with self.transaction():
            yield
        if self.path is not None:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- writes (call inside transaction()) -----------------------------------------------------------

    def start_import(self, path: str, sha256: str, fmt: str, now: datetime) -> int:
        cur = self.conn.execute(
            "INSERT INTO imports (path, sha256, format, started_at) VALUES (?, ?, ?, ?)",
            (path, sha256, fmt, _ts(now)),
        )
        return cur.lastrowid

    def finish_import(self, import_id: int, now: datetime, **counts: int) -> None:
        sets = ", ".join(f"{k} = ?" for k in counts)
        self.conn.execute(
            f"UPDATE imports SET finished_at = ?, {sets} WHERE id = ?",
            (_ts(now), *counts.values(), import_id),
        )

    def upsert_chat(self, chat: Chat) -> None:
        self.conn.execute(
            "INSERT INTO chats (platform, chat_id, type, title) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, chat_id) DO UPDATE SET type = excluded.type, "
            "title = COALESCE(excluded.title, chats.title)",
            (chat.platform, chat.id, chat.type, chat.title),
        )

    def insert_messages(self, messages: Iterable[Message], import_id: int | None = None, source: str = "import") -> int:
        """Insert new messages; update the text of ones edited since they were stored.

        Returns the rows inserted or updated. A message already stored with the same or a later edit is
        left alone. New rows carry `import_id` (an update keeps the first import's), which is how
        `count_import_messages` tells added from updated. `source` is "import" for exports, "live" for what
        the relay saw (training leaves live messages out unless the owner opts in).
        """
        rows = [  # _ts written out: this runs once per message of an import
            (
                m.platform, m.chat_id, m.id, m.sender_id, int(m.time.timestamp()), m.text, m.kind,
                m.reply_to, int(m.forwarded), None if m.edited is None else int(m.edited.timestamp()),
                import_id, source,
            )
            for m in messages
        ]
        if len(rows) < 64 or self.bulk_loading:  # a few rows go through the triggers; bulk_load() indexes its own
            return self._upsert_messages(rows)
        # A batch is indexed in one statement after it, not row by row (schema 4's comment says why), through
        # bulk_load, which also keeps an edit of a row added in the same batch away from the index.
        self.conn.execute("SAVEPOINT bulk_insert")
        try:
            with self.bulk_load():
                changed = self._upsert_messages(rows)
        except BaseException:  # the batch and the triggers' changes go back together; the rest is the caller's
            self.conn.execute("ROLLBACK TO bulk_insert")
            self.conn.execute("RELEASE bulk_insert")
            raise
        self.conn.execute("RELEASE bulk_insert")
        return changed

    def _upsert_messages(self, rows: list[tuple]) -> int:
        """The rows inserted or updated (of `messages` only: the index's triggers write more, total_changes)."""
        cur = self.conn.executemany(
            "INSERT INTO messages (platform, chat_id, msg_id, sender_id, time, text, kind, reply_to, "
            "forwarded, edited, import_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, chat_id, msg_id) DO UPDATE SET text = excluded.text, "
            "kind = excluded.kind, edited = excluded.edited "
            "WHERE excluded.edited IS NOT NULL AND (messages.edited IS NULL OR excluded.edited > messages.edited)",
            rows,
        )
        return max(cur.rowcount, 0)

    def count_import_messages(self, import_id: int) -> int:
        return self.conn.execute("SELECT count(*) FROM messages WHERE import_id = ?", (import_id,)).fetchone()[0]

    def insert_live(self, chat: Chat, message: Message, from_owner: bool = False) -> None:
        """A message the bots saw live (source 'live': context, not training data unless asked), with its chat
        and, for a contact's, the name they show now; one transaction."""
        with self.transaction():
            self.upsert_chat(chat)
            if message.sender_name and not from_owner:
                t = int(message.time.timestamp())
                self.upsert_names(message.platform, {(message.sender_id, message.sender_name): (t, t)})
            self.insert_messages([message], source="live")

    def upsert_names(self, platform: str, names: dict[tuple[str, str | None], tuple[int, int]]) -> None:
        """Record display names over time: {(user_id, name): (first_seen, last_seen)} in epoch seconds."""
        contact_rows: dict[str, tuple[str | None, int, int]] = {}
        for (user_id, name), (first, last) in names.items():
            cur = contact_rows.get(user_id)
            if cur is None or last >= cur[2]:
                contact_rows[user_id] = (name, min(first, cur[1]) if cur else first, last)
            else:
                contact_rows[user_id] = (cur[0], min(first, cur[1]), cur[2])
            if name:
                self.conn.execute(
                    "INSERT INTO contact_names (platform, user_id, name, first_seen, last_seen) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "first_seen = min(first_seen, excluded.first_seen), "
                    "last_seen = max(last_seen, excluded.last_seen)",
                    (platform, user_id, name, first, last),
                )
        self.conn.executemany(
            "INSERT INTO contacts (platform, user_id, name, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, user_id) DO UPDATE SET "
            "name = CASE WHEN excluded.last_seen >= contacts.last_seen AND excluded.name IS NOT NULL "
            "THEN excluded.name ELSE contacts.name END, "
            "first_seen = min(contacts.first_seen, excluded.first_seen), "
            "last_seen = max(contacts.last_seen, excluded.last_seen)",
            [(platform, uid, name, first, last) for uid, (name, first, last) in contact_rows.items()],
        )

    def set_owner(self, platform: str, user_id: str, name: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO contacts (platform, user_id, name, is_owner) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (platform, user_id) DO UPDATE SET is_owner = 1, name = COALESCE(contacts.name, excluded.name)",
            (platform, user_id, name),
        )

    def owner_ids(self, platform: str) -> set[str]:
        rows = self.conn.execute("SELECT user_id FROM contacts WHERE platform = ? AND is_owner = 1", (platform,))
        return {r[0] for r in rows}

    def message_times(self, key: ChatKey) -> list[tuple[int, int]]:
        """(time, from_owner) for every message of a chat, oldest first."""
        return self.conn.execute(
            "SELECT m.time, COALESCE(c.is_owner, 0) FROM messages m "
            "LEFT JOIN contacts c ON c.platform = m.platform AND c.user_id = m.sender_id "
            "WHERE m.platform = ? AND m.chat_id = ? ORDER BY m.time, m.id",
            (key.platform, key.chat_id),
        ).fetchall()

    def replace_sessions(self, key: ChatKey, sessions: Iterable[tuple[int, int, int, int]]) -> None:
        """Replace a chat's sessions with [(start, end, messages, owner_messages)]."""
        self.conn.execute("DELETE FROM sessions WHERE platform = ? AND chat_id = ?", (key.platform, key.chat_id))
        self.conn.executemany(
            "INSERT INTO sessions (platform, chat_id, idx, start, end, messages, owner_messages) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(key.platform, key.chat_id, i, *s) for i, s in enumerate(sessions)],
        )

    def chat_keys(self) -> list[ChatKey]:
        return [ChatKey(p, c) for p, c in self.conn.execute("SELECT platform, chat_id FROM chats ORDER BY 1, 2")]

    # -- reads -----------------------------------------------------------------------------------------

    def stats(self) -> dict:
        """The counts of DESIGN.md: messages, owner_messages, chats, contacts, sessions, platforms."""
        q = lambda sql, *a: self.conn.execute(sql, a).fetchone()[0]  # noqa: E731
        platforms = {p: 0 for p in ("telegram", "discord", "whatsapp")}
        for platform, n in self.conn.execute("SELECT platform, count(*) FROM messages GROUP BY platform"):
            platforms[platform] = n
        return {
            "messages": q("SELECT count(*) FROM messages"),
            "owner_messages": q(
                "SELECT count(*) FROM messages m JOIN contacts c "
                "ON c.platform = m.platform AND c.user_id = m.sender_id WHERE c.is_owner = 1"
            ),
            "chats": q("SELECT count(*) FROM chats WHERE EXISTS "
                       "(SELECT 1 FROM messages m WHERE m.platform = chats.platform AND m.chat_id = chats.chat_id)"),
            "contacts": q(
                "SELECT count(*) FROM contacts c WHERE c.is_owner = 0 AND EXISTS "
                "(SELECT 1 FROM messages m WHERE m.platform = c.platform AND m.sender_id = c.user_id)"
            ),
            "sessions": q("SELECT count(*) FROM sessions"),
            "platforms": platforms,
        }

    def chats(self) -> list[Chat]:
        """Every chat that has messages."""
        rows = self.conn.execute(
            "SELECT platform, chat_id, type, title FROM chats c WHERE EXISTS "
            "(SELECT 1 FROM messages m WHERE m.platform = c.platform AND m.chat_id = c.chat_id) ORDER BY 1, 2"
        )
        return [Chat(*r) for r in rows]

    def chat_messages(self, key: ChatKey, since: int | None = None, live: bool = True,
                      last: int | None = None) -> list[StoredMessage]:
        """A chat's messages oldest first, each with its sender's current name and whether it is the owner.

        `live=False` leaves out what the relay stored (only imported exports: what training learns from);
        `last` keeps only the latest that many.
        """
        rows = self.conn.execute(
            "SELECT m.msg_id, m.sender_id, c.name, COALESCE(c.is_owner, 0), m.time, m.text, m.kind, "
            "m.forwarded, m.reply_to FROM messages m "
            "LEFT JOIN contacts c ON c.platform = m.platform AND c.user_id = m.sender_id "
            "WHERE m.platform = ? AND m.chat_id = ? AND m.time >= ? AND (? OR m.source = 'import') "
            "ORDER BY m.time DESC, m.id DESC LIMIT ?",
            (key.platform, key.chat_id, since or 0, int(live), -1 if last is None else last),
        ).fetchall()
        return [StoredMessage(r[0], r[1], r[2], bool(r[3]), utc(r[4]), r[5], r[6], bool(r[7]), r[8])
                for r in reversed(rows)]

    def has_sender(self, key: ChatKey, sender_id: str) -> bool:
        """Whether anything in the chat came from this sender."""
        return self.conn.execute("SELECT 1 FROM messages WHERE platform = ? AND chat_id = ? AND sender_id = ? "
                                 "LIMIT 1", (key.platform, key.chat_id, sender_id)).fetchone() is not None

    def find_chat(self, contact: str) -> Chat:
        """The chat a contact names: `platform:id` (a chat id or a person's id) or a display name / chat title.

        A person's name finds their one-to-one chat; a group is found by its title.
        """
        platform, _, ident = contact.partition(":")
        if platform in ("telegram", "discord", "whatsapp") and ident:
            people = (ident, f"user{ident}")
            rows = self.conn.execute(
                "SELECT DISTINCT c.platform, c.chat_id, c.type, c.title FROM chats c WHERE c.platform = ? AND "
                "(c.chat_id = ? OR (c.type = 'personal' AND EXISTS (SELECT 1 FROM messages m WHERE "
                "m.platform = c.platform AND m.chat_id = c.chat_id AND m.sender_id IN (?, ?))))",
                (platform, ident, *people),
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT DISTINCT c.platform, c.chat_id, c.type, c.title FROM chats c WHERE lower(c.title) = lower(?) "
                "OR (c.type = 'personal' AND EXISTS (SELECT 1 FROM messages m JOIN contacts p ON "
                "p.platform = m.platform AND p.user_id = m.sender_id AND p.is_owner = 0 WHERE "
                "m.platform = c.platform AND m.chat_id = c.chat_id AND lower(p.name) = lower(?)))",
                (contact, contact),
            ).fetchall()
        if len(rows) == 1:
            return Chat(*rows[0])
        if not rows:
            raise NotFound(f"contact {contact!r}: no chat with that name or id; see `twin stats` for names, "
                           "or use platform:id (e.g. telegram:2002)")
        options = ", ".join(f"{p}:{c}" for p, c, _, _ in rows)
        raise NotFound(f"contact {contact!r} is ambiguous ({options}); name one as platform:id")

    def find_chats(self, name: str) -> list[Chat]:
        """Every chat a name may mean, on any platform: a chat titled so, or a one-to-one chat with someone who
        goes or went by that name (case-insensitive). For the bot's forwards of hidden users and /for."""
        rows = self.conn.execute(
            "SELECT DISTINCT c.platform, c.chat_id, c.type, c.title FROM chats c WHERE lower(c.title) = lower(?) "
            "OR (c.type = 'personal' AND EXISTS (SELECT 1 FROM messages m JOIN contacts p ON p.platform = "
            "m.platform AND p.user_id = m.sender_id AND p.is_owner = 0 WHERE m.platform = c.platform AND "
            "m.chat_id = c.chat_id AND (lower(p.name) = lower(?) OR EXISTS (SELECT 1 FROM contact_names n WHERE "
            "n.platform = p.platform AND n.user_id = p.user_id AND lower(n.name) = lower(?))))) ORDER BY 1, 2",
            (name, name, name),
        ).fetchall()
        return [Chat(*r) for r in rows]

    def recent_chats(self, limit: int) -> list[Chat]:
        """The chats with the latest messages, newest first."""
        rows = self.conn.execute(
            "SELECT c.platform, c.chat_id, c.type, c.title FROM chats c JOIN messages m ON m.platform = c.platform "
            "AND m.chat_id = c.chat_id GROUP BY c.platform, c.chat_id ORDER BY max(m.time) DESC, 1, 2 LIMIT ?",
            (limit,),
        ).fetchall()
        return [Chat(*r) for r in rows]

    def chat(self, key: ChatKey) -> Chat | None:
        row = self.conn.execute("SELECT platform, chat_id, type, title FROM chats WHERE platform = ? AND chat_id = ?",
                                (key.platform, key.chat_id)).fetchone()
        return Chat(*row) if row else None

    def delete_messages(self, key: ChatKey, msg_ids: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM messages WHERE platform = ? AND chat_id = ? AND msg_id = ?",
                              [(key.platform, key.chat_id, i) for i in msg_ids])

    def last_owner_time(self, key: ChatKey) -> int | None:
        """Epoch seconds of the owner's latest message in a chat, or None."""
        return self.conn.execute(
            "SELECT max(m.time) FROM messages m JOIN contacts c ON c.platform = m.platform AND "
            "c.user_id = m.sender_id AND c.is_owner = 1 WHERE m.platform = ? AND m.chat_id = ?",
            (key.platform, key.chat_id),
        ).fetchone()[0]

    def last_message_id(self, key: ChatKey) -> str | None:
        row = self.conn.execute(
            "SELECT msg_id FROM messages WHERE platform = ? AND chat_id = ? ORDER BY time DESC, id DESC LIMIT 1",
            (key.platform, key.chat_id),
        ).fetchone()
        return row[0] if row else None

    def message_texts(self, key: ChatKey, msg_ids: Iterable[str]) -> list[str]:
        """The texts of these messages of a chat, oldest first (ids not stored, or deleted since, left out)."""
        ids = list(msg_ids)
        rows = self.conn.execute(
            f"SELECT text FROM messages WHERE platform = ? AND chat_id = ? AND msg_id IN ({','.join('?' * len(ids))}) "
            "ORDER BY time, id", (key.platform, key.chat_id, *ids),
        )
        return [r[0] for r in rows]

    def contact_name(self, platform: str, user_id: str) -> str | None:
        row = self.conn.execute("SELECT name FROM contacts WHERE platform = ? AND user_id = ?",
                                (platform, user_id)).fetchone()
        return row[0] if row else None

    def owner_name(self) -> str | None:
        """The owner's most recent display name on any platform."""
        row = self.conn.execute(
            "SELECT name FROM contacts WHERE is_owner = 1 AND name IS NOT NULL ORDER BY last_seen DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def top_contacts(self, limit: int = 10) -> list[tuple[str, str, str | None, int]]:
        """(platform, user_id, name, messages) of the non-owner senders with the most messages."""
        return self.conn.execute(
            "SELECT m.platform, m.sender_id, c.name, count(*) AS n FROM messages m "
            "JOIN contacts c ON c.platform = m.platform AND c.user_id = m.sender_id "
            "WHERE c.is_owner = 0 GROUP BY m.platform, m.sender_id ORDER BY n DESC, 1, 2 LIMIT ?",
            (limit,),
        ).fetchall()

    def per_platform(self) -> list[tuple[str, int, int, int, int]]:
        """(platform, messages, owner_messages, chats, sessions) for each platform with messages."""
        return self.conn.execute(
            "SELECT m.platform, count(*), sum(COALESCE(c.is_owner, 0)), count(DISTINCT m.chat_id), "
            "(SELECT count(*) FROM sessions s WHERE s.platform = m.platform) "
            "FROM messages m LEFT JOIN contacts c ON c.platform = m.platform AND c.user_id = m.sender_id "
            "GROUP BY m.platform ORDER BY 1"
        ).fetchall()

    def contacts_live(self, platform: str, since: datetime | None = None,
                      until: datetime | None = None) -> list[tuple[str, str, datetime]]:
        """(chat_id, msg_id, time) of the live messages (what the relay saw) that the platform's contacts, not the
        owner, sent in [since, until), oldest first."""
        rows = self.conn.execute(
            "SELECT m.chat_id, m.msg_id, m.time FROM messages m "
            "LEFT JOIN contacts c ON c.platform = m.platform AND c.user_id = m.sender_id "
            "WHERE m.source = 'live' AND m.platform = ? AND COALESCE(c.is_owner, 0) = 0 "
            "AND m.time >= ? AND m.time < ? ORDER BY m.time, m.id",
            (platform, since.timestamp() if since else 0, until.timestamp() if until else 1e13),
        )
        return [(c, m, utc(t)) for c, m, t in rows]

    # -- forgetting (twin/forget.py) ---------------------------------------------------------------------

    def chat_contacts(self, key: ChatKey) -> list[str]:
        """The user ids of everyone but the owner who wrote in a chat."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT m.sender_id FROM messages m JOIN contacts p ON p.platform = m.platform AND "
            "p.user_id = m.sender_id AND p.is_owner = 0 WHERE m.platform = ? AND m.chat_id = ?",
            (key.platform, key.chat_id),
        )]

    def names(self, platform: str, user_ids: Sequence[str]) -> list[str]:
        """Every name these people have gone by, each once."""
        marks = ",".join("?" * len(user_ids))
        return [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT name FROM contact_names WHERE platform = ? AND user_id IN ({marks})",
            (platform, *user_ids),
        )]

    def forget(self, key: ChatKey, people: Sequence[str], mentions: Sequence[str]) -> dict[str, int]:
        """Delete a chat (its sessions, messages and row) and these people of its platform (their messages in any
        chat, their names over time, their contact rows), then write "[forgotten]" for each of `mentions` in the
        platform's messages that stay. Call inside `erasing()`. The counts: {"chats", "messages", "names",
        "contacts", "sessions", "mentions"}."""
        def run(sql: str, *args) -> int:
            return self.conn.execute(sql, args).rowcount

        n = {"sessions": run("DELETE FROM sessions WHERE platform = ? AND chat_id = ?", key.platform, key.chat_id),
             "messages": run("DELETE FROM messages WHERE platform = ? AND chat_id = ?", key.platform, key.chat_id),
             "chats": run("DELETE FROM chats WHERE platform = ? AND chat_id = ?", key.platform, key.chat_id),
             "names": 0, "contacts": 0, "mentions": 0}
        for person in people:
            # Their messages in other chats (groups) go too; the groups' other messages stay.
            n["messages"] += run("DELETE FROM messages WHERE platform = ? AND sender_id = ?", key.platform, person)
            n["names"] += run("DELETE FROM contact_names WHERE platform = ? AND user_id = ?", key.platform, person)
            n["contacts"] += run("DELETE FROM contacts WHERE platform = ? AND user_id = ? AND is_owner = 0",
                                 key.platform, person)
        for form in mentions:
            n["mentions"] += run("UPDATE messages SET text = replace(text, ?, '[forgotten]') "
                                 "WHERE platform = ? AND instr(text, ?) > 0", form, key.platform, form)
        self.compact_index()  # the triggers took the rows out of the index; this takes out their marks too
        return n
