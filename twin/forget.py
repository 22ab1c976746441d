"""Forgetting a contact: every trace of them in twin.db and their notes in twin.toml.

Used by `twin forget CONTACT` and the bot's `/forget`. A contact is named as `Store.find_chat` accepts (a
display name, a chat title, or platform:id). What goes, in one transaction: the chats with them (their
one-to-one chats; in groups, their own messages), every message in those chats, their names over time, their
contact row, the sessions of those chats (the store's part, `Store.forget`), drafts made for those chats and
their events, the relay's per-chat settings (the relay's part, which the caller passes: the relay's ledger owns
those tables and the core does not import it); then the `[contacts."<name>"]` section of twin.toml. Adapters
already trained on the chats keep what they learned: the summary says so, and retraining without them is the fix
(`twin train`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twin.store import Store


@dataclass
class Forgotten:
    """What was removed (counts only: no names or text)."""

    chats: int = 0
    messages: int = 0
    names: int = 0
    contacts: int = 0
    sessions: int = 0
    drafts: int = 0
    mentions: int = 0
    notes: int = 0
    keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.messages} messages", f"{self.chats} chats", f"{self.drafts} drafts",
                 f"{self.contacts} contact records", f"{self.names} names", f"{self.sessions} sessions",
                 f"{self.mentions} mentions redacted", f"{self.notes} notes in twin.toml"]
        return "removed " + ", ".join(parts)


# The relay's part of forgetting: (platform, chat_id, people) -> the drafts removed. It deletes the relay's rows of
# the chat and the drafts made for those people, inside the store's transaction (bot.ledger.Ledger.forget).
RelayTables = Callable[[str, str, Sequence[str]], int]


def forget(store: Store, contact: str, config_path: Path | None = None, *, relay_tables: RelayTables) -> Forgotten:
    """Remove the contact; raises NotFound (from find_chat) when no chat matches."""
    chat = store.find_chat(contact)
    key = chat.key
    # Naming a group forgets the group's chat; its members stay (they may have their own chats).
    people = store.chat_contacts(key) if chat.type == "personal" else []
    names = store.names(chat.platform, people) + ([chat.title] if chat.title else [])
    # Others may have named them in chats that stay: their names become "[forgotten]" there.
    mentions = mention_forms(names if people else [])
    with store.erasing():
        drafts = relay_tables(chat.platform, chat.id, people)
        out = Forgotten(**store.forget(key, people, mentions), drafts=drafts)
    keys = sorted({*names, f"{chat.platform}:{chat.id}", *(f"{chat.platform}:{p}" for p in people)})
    if config_path is not None and config_path.exists():
        out.notes = remove_notes(config_path, keys)
    return out


def mention_forms(names: list[str]) -> list[str]:
    """The strings that name a person in text: each full name, then its first word when it is a real word.

    >>> mention_forms(["Tomas Berg", "Tom"])
    ['Tomas Berg', 'Tomas', 'Tom']
    """
    forms: list[str] = []
    for name in names:
        for form in (name.strip(), name.split()[0] if name.split() else ""):
            if len(form) >= 3 and form not in forms:
                forms.append(form)
    return sorted(forms, key=len, reverse=True)


def remove_notes(config_path: Path, keys: list[str]) -> int:
    """Delete the `[contacts."<key>"]` sections for these keys from twin.toml; returns how many went.

    The file is rewritten line by line (comments elsewhere survive) and atomically.
    """
    lines = config_path.read_text(encoding="utf-8").splitlines(keepends=True)
    wanted = {k.casefold() for k in keys}
    header = re.compile(r'^\s*\[\s*contacts\s*\.\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*\]\s*(#.*)?$')
    table = re.compile(r"^\s*\[")
    kept: list[str] = []
    removed = 0
    skipping = False
    for line in lines:
        m = header.match(line)
        if m:
            name = next(g for g in m.groups()[:3] if g is not None)
            skipping = name.casefold() in wanted
            removed += skipping
        elif table.match(line):
            skipping = False
        if not skipping:
            kept.append(line)
    if removed:
        tmp = config_path.with_suffix(".toml.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.chmod(config_path.stat().st_mode & 0o777)
        tmp.replace(config_path)
    return removed
