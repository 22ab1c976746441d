"""Ingest: chat exports into the store, one transaction per file. Exercised by `twin ingest PATH...`.

Streams records from a parser into batched inserts, resolves the owner (what the export says, else
`--owner`, else the ids in twin.toml), and re-sessionizes the chats it touched. A file that fails anywhere
leaves the store exactly as it was; a file already imported with the same content adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from twin.chat import Chat, Message, Owner, identities
from twin.errors import ExportError, OwnerUnknown
from twin.store import ChatKey, Store
from training.exports import FORMATS, Note, ParseOptions, Skipped, detect, parser_for
from twin.sessions import sessionize

log = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True)
class IngestOptions:
    fmt: str = "auto"
    owner: str | None = None  # an id or a display name, from --owner
    owner_ids: dict[str, list[str]] = field(default_factory=dict)  # platform -> ids, from twin.toml
    parse: ParseOptions = ParseOptions()
    session_gap: int = 3600


@dataclass
class FileSummary:
    path: Path
    fmt: str
    seen: int = 0
    added: int = 0
    updated: int = 0
    chats: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # what the parser had to guess, said once per file
    seconds: float = 0.0


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _resolve_owner(
    path: Path, platform: str, said: Owner | None, opts: IngestOptions, names: dict[str, set[str]]
) -> list[str]:
    """The owner's ids on this platform for this file: what the export says, --owner, or twin.toml."""
    if opts.owner:
        wanted = opts.owner.strip()
        bare = wanted.removeprefix(f"{platform}:")
        ids = [uid for uid in names if uid in identities(bare) or bare in names[uid]]
        if not ids:
            raise OwnerUnknown(
                path, f"--owner {wanted!r} matches no sender in this file; pass the id or name your own "
                      "messages carry (see the senders with `twin stats`)",
            )
        return ids
    if said is not None:
        return [said.id]
    wanted_ids = {v for x in opts.owner_ids.get(platform, []) for v in identities(x)}
    configured = {uid for uid in names if uid in wanted_ids or names[uid] & wanted_ids}
    if configured:
        return sorted(configured)
    if opts.owner_ids.get(platform):
        # The configured owner did not write in this file: fine for a chat the owner only read.
        return list(opts.owner_ids[platform])
    raise OwnerUnknown(
        path, "cannot tell which sender is you; pass --owner YOUR_ID_OR_NAME "
              f"(or set [owner] {platform} = [...] in twin.toml)",
    )


def ingest_file(store: Store, path: Path, opts: IngestOptions, now: Callable[[], datetime]) -> FileSummary:
    """Import one export file in one transaction; raises ExportError with the store unchanged."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(path, "no such file; check the path")
    fmt = detect(path) if opts.fmt == "auto" else opts.fmt
    if fmt not in FORMATS:
        raise ExportError(path, f"unknown format {fmt!r}; use one of auto, {', '.join(FORMATS)}")
    summary = FileSummary(path, fmt)
    started = time.perf_counter()
    digest = sha256_of(path)
    said: Owner | None = None
    names: dict[str, set[str]] = {}
    seen_names: dict[tuple[str, str | None], tuple[int, int]] = {}
    touched: set[tuple[str, str]] = set()  # (platform, chat_id): cheaper to hash than ChatKey
    platform = fmt
    # A counter with the rate on a terminal: the parsers stream, so the total is known only at the end.
    progress = tqdm(desc=path.name, unit=" msg", unit_scale=True, disable=not sys.stderr.isatty(), leave=False)
    with store.transaction(), store.bulk_load(), progress:
        import_id = store.start_import(str(path), digest, fmt, now())
        batch: list[Message] = []
        changes = 0
        for record in parser_for(fmt)(path, opts.parse):
            if isinstance(record, Message):
                # Per message only what cannot wait: the batch, the chat, each (sender, name)'s first and last
                # time; `names` is read off `seen_names` at the end (the same senders in the same order).
                batch.append(record)
                touched.add((record.platform, record.chat_id))
                ts = int(record.time.timestamp())
                pair = (record.sender_id, record.sender_name)
                span = seen_names.get(pair)
                if span is None:
                    seen_names[pair] = (ts, ts)
                elif ts < span[0] or ts > span[1]:
                    seen_names[pair] = (min(span[0], ts), max(span[1], ts))
                if len(batch) >= BATCH:
                    changes += store.insert_messages(batch, import_id)
                    summary.seen += len(batch)
                    progress.update(len(batch))
                    batch.clear()
            elif isinstance(record, Chat):
                store.upsert_chat(record)
                summary.chats += 1
                platform = record.platform
            elif isinstance(record, Owner):
                said = record
            elif isinstance(record, Skipped):
                summary.skipped[f"{record.what}:{record.reason}"] += 1
            elif isinstance(record, Note):
                summary.notes.append(record.text)
        changes += store.insert_messages(batch, import_id)
        summary.seen += len(batch)
        if summary.seen == 0 and summary.chats == 0:
            raise ExportError(path, "the export holds no chats; check that you exported the right chat")
        for uid, name in seen_names:
            names.setdefault(uid, set())
            if name:
                names[uid].add(name)
        store.upsert_names(platform, seen_names)
        for uid in _resolve_owner(path, platform, said, opts, names):
            store.set_owner(platform, uid, next(iter(sorted(names.get(uid, ()))), None))
        summary.added = store.count_import_messages(import_id)
        summary.updated = changes - summary.added
        resessionize(store, [ChatKey(*key) for key in sorted(touched)], opts.session_gap)
        store.finish_import(
            import_id, now(), messages_seen=summary.seen, messages_added=summary.added,
            messages_updated=summary.updated, chats=summary.chats,
            chats_skipped=sum(n for k, n in summary.skipped.items() if k.startswith("chat:")),
        )
    summary.seconds = time.perf_counter() - started
    log.info("imported %s: %d seen, %d added, %d updated in %.1fs", fmt, summary.seen, summary.added,
             summary.updated, summary.seconds)
    return summary


def resessionize(store: Store, chats: Iterable[ChatKey], gap: int) -> int:
    """Recompute the sessions of these chats (all chats when the gap changed). Returns sessions written."""
    if store.get_meta("session_gap") not in (None, str(gap)):
        chats = store.chat_keys()
    store.set_meta("session_gap", str(gap))
    total = 0
    for key in chats:
        sessions = sessionize(store.message_times(key), gap)
        store.replace_sessions(key, [(s.start, s.end, s.messages, s.owner_messages) for s in sessions])
        total += len(sessions)
    return total


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
