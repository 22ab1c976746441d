"""WhatsApp "Export chat" text → chat records. Exercised by `twin ingest "WhatsApp Chat with Tomas Berg.txt"`.

One export is one chat: a .txt (Android), or a .zip holding `_chat.txt` (iOS) or the Android .txt, read
inside the zip without extracting it. A message is a header line (it varies by phone and locale) and the lines
up to the next header:

    15.04.2021, 21:05 - Tomas Berg: text               Android, 24 h
    4/15/21, 9:05 PM - Tomas Berg: text                Android, 12 h (U+202F before PM on newer phones)
    [15/04/2021, 21:05:33] Tomas Berg: text            iOS (lines often start with U+200E)

What one line says (a header, a placeholder, a deleted message) is training/exports/whatsapp_lines.py. The
file is read twice, line by line, so big exports never sit in memory: the first pass settles what the
whole file decides (encoding, date order, senders and so the chat type), the second yields records.

Decisions:
- Times carry no zone (the exporting phone's wall clock); they are stored as if UTC. Sessions only need gaps,
  which the wrong zone does not change (except across a DST switch).
- Day/month order, per file (and per layout, where a file mixes phones' layouts — Android m/d/yy beside iOS
  [d/m/yyyy] — and a layout's own dates decide): the order under which fewer dates are impossible (a field > 12 where the
  month goes) wins; if both fit every date, the one that keeps the dates non-decreasing wins, else day first.
  A first field of four digits means year first (2021-04-15), on any line.
- Lines that are no message text although they start like a header (a date and a time in a layout no phone
  writes, e.g. "04.02.17 um 22:45 - ..."), and headers whose date or time is impossible in the file's order
  (a mixed or hand-edited file), are `Skipped("line", number)`; the rest of the file is imported.
- No ids exist. `sender_id` is the sender's name as shown, with invisible marks removed. The chat id is the
  name in the file name ("WhatsApp Chat with Tomas Berg.txt", or the zip "WhatsApp Chat - Tomas Berg.zip"
  around `_chat.txt`: "Tomas Berg"), so re-exports of a chat land in the same chat. A message id is a hash
  of (time, sender, kind, text) and the occurrence count of that exact tuple at that time, so the same message
  in an overlapping export gets the same id, and repeats of "ok" in one minute stay distinct.
- Chat type: `personal` when at most two people wrote and no group event (created group, added, left...)
  appears; else `group`. A one-sided DM is far likelier than a one-person group.
- Kinds: "<Media omitted>" (any case, and its localised forms: whatsapp_lines.MEDIA_OMITTED_FORMS) is a
  `file` (an attachment of unknown type, kept apart from deleted messages),
  "image/video/audio/sticker/GIF/document omitted" and "<attached: ...>" by their type, a deleted message a
  `placeholder` with no text (also in the languages of whatsapp_lines.DELETED_FORMS).
  "<This message was edited>" is cut off and sets `edited` to the message time
  (the export does not say when it was edited).
- Not messages: lines with no "Name: ", the end-to-end encryption notice, and on iOS the notices it writes
  under a name but starts with U+200E (calls, "X added Y", security code changes).
- The export does not say which name is the owner's, so there is no `Owner` record: --owner or twin.toml.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO

from twin.chat import Chat, Message
from twin.errors import ExportError
from training.exports import ParseOptions, Record, Skipped
from training.exports.whatsapp_lines import (GROUP_EVENT, Header, clean, content, legacy_basis, looks_like_header,
                                             plain_name, read_header, service_reason)

log = logging.getLogger(__name__)

PLATFORM = "whatsapp"
FIX = "export the chat again in WhatsApp (chat menu > More > Export chat), or pass --format"

CHAT_NAME = re.compile(
    r"^.*?whatsapp[\s-]*(?:chat)?\s*(?:with|mit|con|com|avec|met|med|z|ile|-)\s+(?P<name>.+)$", re.IGNORECASE
)


def chat_name(path: Path) -> str:
    """The chat's name from an export's file name: the chat id and title.

    >>> chat_name(Path("WhatsApp Chat with Tomas Berg (1).txt")), chat_name(Path("WhatsApp Chat - Ana.zip"))
    ('Tomas Berg', 'Ana')
    """
    stem = path.name
    for suffix in (".zip", ".txt"):
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"\s*\(\d+\)$", "", stem).strip()
    if stem == "_chat" and path.parent.name:  # an unzipped iOS export: the folder carries the name
        return chat_name(path.parent)
    m = CHAT_NAME.match(stem)
    return plain_name(m["name"]) if m else stem


def date_order(fields: Iterable[tuple[str, str, str]]) -> str:
    """"dmy", "mdy" or "ymd": how a file's dates read (see the module notes).

    >>> date_order([("4", "5", "21"), ("13", "5", "21")]), date_order([("4", "5", "21"), ("5", "4", "21")])
    ('dmy', 'mdy')
    """
    evidence = Evidence()
    for date_fields in fields:
        evidence.add(date_fields)
    return evidence.order()


class Evidence:
    """What a run of dates says about their order: how many are impossible day first and month first, and
    whether they keep rising under each."""

    def __init__(self) -> None:
        self.impossible = {"dmy": 0, "mdy": 0}
        self.rising = {"dmy": True, "mdy": True}
        self.last: dict[str, date] = {}
        self.previous: tuple[str, str, str] | None = None
        self.year_first = self.other = False

    def add(self, fields: tuple[str, str, str]) -> None:
        if fields == self.previous:  # a day's messages share its date: weigh each run of one date once
            return
        self.previous = fields
        if len(fields[0]) == 4:  # year first reads only one way, whatever the file's other lines do
            self.year_first = True
            return
        self.other = True
        for order in self.impossible:
            day = to_date(order, fields)
            if day is None:
                self.impossible[order] += 1
            else:
                self.rising[order] = self.rising[order] and (order not in self.last or self.last[order] <= day)
                self.last[order] = day

    @property
    def decisive(self) -> bool:
        """Whether one order fits fewer of these dates than the other."""
        return self.impossible["dmy"] != self.impossible["mdy"]

    def order(self) -> str:
        if self.year_first and not self.other:
            return "ymd"
        fewest = min(self.impossible.values())
        left = [o for o in ("dmy", "mdy") if self.impossible[o] == fewest]
        if len(left) == 2 and self.rising["mdy"] and not self.rising["dmy"]:
            return "mdy"
        return left[0]


@functools.lru_cache(maxsize=4096)  # a chat has few distinct dates and many messages per date
def to_date(order: str, fields: tuple[str, str, str]) -> date | None:
    """The date the fields give in this order; None when impossible. Two-digit years are 20xx; year first
    only with four digits (2021-04-15), and then in no other order; Buddhist-era years (2564) are made common era.

    >>> to_date("dmy", ("15", "04", "2564")), to_date("mdy", ("13", "04", "21"))
    (datetime.date(2021, 4, 15), None)
    """
    if (order == "ymd") != (len(fields[0]) == 4):
        return None
    a, b, c = (int(x) for x in fields)
    year, month, day = {"dmy": (c, b, a), "mdy": (c, a, b), "ymd": (a, b, c)}[order]
    try:
        if year < 100:
            year += 2000
        elif year >= 2400:  # a Thai phone counts years in the Buddhist era, 543 ahead
            year -= 543
        return date(year, month, day)
    except ValueError:
        return None


@dataclass
class Survey:
    """What the first pass learns about a file."""

    order: str = "dmy"
    layouts: dict[str, str] = field(default_factory=dict)  # a layout's own order, where its dates decide one
    senders: set[str] = field(default_factory=set)
    group_events: bool = False
    headers: int = 0

    def order_of(self, header: Header) -> str:
        return self.layouts.get(header.layout, self.order)


def survey(lines: Iterable[str]) -> Survey:
    """One pass over the lines: the date order (the file's, and a layout's own where a file mixes phones'
    layouts and that layout's dates decide), who wrote, whether group events occur."""
    seen = Survey()
    overall = Evidence()
    layouts: dict[str, Evidence] = {}
    for line in lines:
        header = read_header(line)
        if header is None:
            continue
        seen.headers += 1
        if service_reason(header) is None and header.sender is not None:
            seen.senders.add(header.sender)
        elif GROUP_EVENT.search(header.body):
            seen.group_events = True
        overall.add(header.fields)
        if (evidence := layouts.get(header.layout)) is None:
            evidence = layouts[header.layout] = Evidence()
        evidence.add(header.fields)
    seen.order = overall.order()
    if len(layouts) > 1:
        seen.layouts = {layout: e.order() for layout, e in layouts.items() if e.decisive}
    return seen


def parse(path: Path, options: ParseOptions) -> Iterator[Record]:
    """The chat's `Chat`, then a `Message` or `Skipped` for each message, in file order."""
    path = Path(path)
    name, opener = _source(path)
    encoding, seen = _survey_file(path, opener)
    chat_type = "personal" if len(seen.senders) <= 2 and not seen.group_events else "group"
    if chat_type not in options.chat_types:
        yield Skipped("chat", chat_type)
        return
    yield Chat(PLATFORM, name, chat_type, name)
    counts: dict[str, int] = {}
    current: datetime | None = None
    count = 0
    with _text(opener, encoding) as lines:
        for number, header, text in _entries(lines):
            if header is None:  # starts like a header, fits no layout
                yield Skipped("line", str(number))
                continue
            reason = service_reason(header)
            if reason is not None:
                yield Skipped("service", reason)
                continue
            when = _time(seen.order_of(header), header)
            if when is None:
                log.info("skipped line %d: no valid date and time in %s order", number, seen.order_of(header))
                yield Skipped("line", str(number))
                continue
            if when != current:  # exact repeats share a time, so counters only live as long as one time
                counts.clear()
                current = when
            raw = text
            kind, text, edited = content(raw)
            basis = (kind, text)
            if kind != "text" and (old := legacy_basis(raw)) is not None:
                basis = ("text", old)  # a placeholder once stored as text keeps the id it had then
            key = hashlib.sha1("\x1f".join((when.isoformat(), header.sender, *basis)).encode()).hexdigest()
            nth = counts[key] = counts.get(key, -1) + 1
            count += 1
            yield Message(
                platform=PLATFORM, chat_id=name, id=f"{key[:20]}-{nth}" if nth else key[:20],
                sender_id=header.sender, sender_name=header.sender, time=when, text=text, kind=kind,
                edited=when if edited else None,
            )
    log.info("read %d whatsapp messages from %d senders (%s dates)", count, len(seen.senders), seen.order)


def _entries(lines: Iterable[str]) -> Iterator[tuple[int, Header | None, str]]:
    """(line number, header, full text) per message: continuation lines joined to their header's text.
    A line that starts like a header but fits no layout comes as (line number, None, "")."""
    header: Header | None = None
    parts: list[str] = []
    start = 0
    stray = 0
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        found = read_header(line)
        if found is None:
            if looks_like_header(line):
                yield number, None, ""
            elif header is None:
                stray += bool(line.strip())
            else:
                parts.append(clean(line))
            continue
        if header is not None:
            yield start, header, "\n".join(parts)
        header, parts, start = found, [found.body], number
    if header is not None:
        yield start, header, "\n".join(parts)
    if stray:
        log.warning("ignored %d lines before the first message header", stray)


def _time(order: str, header: Header) -> datetime | None:
    """The header's time (as if UTC), or None when its date or time is impossible in this order (a date
    with four digits first is read year first, in any file)."""
    day = to_date("ymd" if len(header.fields[0]) == 4 else order, header.fields)
    if day is None:
        return None
    try:
        return datetime(day.year, day.month, day.day, header.hour, header.minute, header.second,
                        tzinfo=timezone.utc)
    except ValueError:
        return None


Opener = Callable[[], AbstractContextManager[IO[bytes]]]


def _source(path: Path) -> tuple[str, Opener]:
    """The chat name and a way to open the export's text as bytes (the .txt, or the one inside a .zip)."""
    if not zipfile.is_zipfile(path):
        return chat_name(path), lambda: open(path, "rb")
    try:
        with zipfile.ZipFile(path) as z:
            texts = [n for n in z.namelist() if n.lower().endswith(".txt") and not n.startswith("__MACOSX")]
    except (zipfile.BadZipFile, OSError) as e:
        raise ExportError(path, f"cannot read the zip ({e}); {FIX}") from e
    chosen = [n for n in texts if PurePosixPath(n).name == "_chat.txt"] or texts
    if len(chosen) != 1:
        raise ExportError(path, f"expected one chat .txt inside the zip, found {len(chosen)}; "
                                "zip a single WhatsApp export, or pass the .txt itself")
    member = chosen[0]
    inner = PurePosixPath(member).name
    name = chat_name(path) if inner == "_chat.txt" else chat_name(Path(inner))

    @contextmanager
    def open_member() -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(path) as z, z.open(member) as stream:
            yield stream

    return name, open_member


def _encoding(head: bytes) -> str:
    """The encoding to try first: UTF-16 when the bytes say so (a BOM, or NULs between ASCII), else UTF-8."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if b"\x00" in head:
        return "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be"
    return "utf-8-sig"


@contextmanager
def _text(opener: Opener, encoding: str) -> Iterator[Iterator[str]]:
    with opener() as raw, io.TextIOWrapper(raw, encoding=encoding, newline=None) as text:
        yield text


def _survey_file(path: Path, opener: Opener) -> tuple[str, Survey]:
    """The file's encoding and its survey; ExportError when it is no WhatsApp export."""
    try:
        with opener() as raw:
            first = _encoding(raw.read(4096))
    except OSError as e:
        raise ExportError(path, f"cannot read ({e.strerror or e}); check the path and its permissions") from e
    # UTF-8 first; a file that is not UTF-8 gets one more try as UTF-16 (some exports are).
    candidates = [first, "utf-16"] if first == "utf-8-sig" else [first]
    failed: list[str] = []
    for encoding in candidates:
        try:
            with _text(opener, encoding) as lines:
                seen = survey(lines)
        except UnicodeError:
            failed.append(encoding)
            continue
        except (OSError, zipfile.BadZipFile) as e:
            raise ExportError(path, f"cannot read ({e}); check the file, or {FIX}") from e
        if seen.headers:
            return encoding, seen
        if not failed:
            break
        failed.append(encoding)  # it decoded, but into no header at all: not this encoding either
    if failed:
        raise ExportError(path, f"the text is neither UTF-8 nor UTF-16 (tried {', '.join(failed)}); {FIX}")
    raise ExportError(
        path, "no WhatsApp message lines (like '15/04/2021, 21:05 - Name: text' or "
              f"'[15/04/2021, 21:05:33] Name: text'); {FIX}",
    )
