"""A fast pass through a big JSON file: ijson's events only where asked, whole values built by the stdlib's C
decoder everywhere else. Exercised by `twin ingest result.json` (training/exports/telegram_desktop.py).

ijson (yajl2_c) hands Python one event per JSON token, about 25 per Telegram message, and the Python loop over
them was most of a 1M-message ingest. Here Python takes one step per value that matters: `events()` yields
ijson's events at the `watched` prefixes (spelled as ijson spells them, "chats.list.item.name"), and, for an
array whose items' prefix is in `whole`, lists of its items ("values"), each built by json's C scanner from a
sliding window of the text. Every other value is decoded in C and dropped; one too big for the window is walked
instead, so memory stays flat.

It vouches only for plain JSON and raises `Unsupported` at anything else, possibly after some events: invalid
JSON or UTF-8, a truncated file, NaN or Infinity (json takes them, yajl does not), escaped UTF-16 surrogates
(json keeps a lone one, yajl writes '?'), text after the value. The caller then reads the file with ijson, which
gives the records or the error it always gave. Numbers are what ijson gives: int, else Decimal.

>>> import io
>>> doc = b'{"about": [1, 2], "list": [{"id": 7, "m": [{"a": 1.5}, {"a": 2}]}]}'
>>> for e in events(io.BytesIO(doc), watched={"list.item", "list.item.id"}, whole={"list.item.m.item"}):
...     print(e)
('list.item', 'start_map', None)
('list.item', 'map_key', 'id')
('list.item.id', 'number', 7)
('list.item', 'map_key', 'm')
('list.item.m.item', 'values', [{'a': Decimal('1.5')}, {'a': 2}])
('list.item', 'end_map', None)
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator, Set
from decimal import Decimal
from typing import Any, BinaryIO

CHUNK = 1 << 16  # bytes read at a time (as ijson reads): the window and its batch of values stay small
LIMIT = 1 << 26  # characters of one value held at once; past this, leave the file to ijson

_WS = re.compile(r"[ \t\n\r]*")
# What follows an array's element: optional whitespace, ',' or ']', whitespace up to the next token.
_NEXT = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SCALARS = {str: "string", int: "number", Decimal: "number", bool: "boolean", type(None): "null"}


class Unsupported(Exception):
    """This pass cannot vouch for the input: read the file with ijson instead."""


def _constant(name: str) -> Any:
    raise Unsupported(f"{name} is not JSON")


_scan = json.JSONDecoder(parse_float=Decimal, parse_constant=_constant).scan_once


def events(f: BinaryIO, watched: Set[str], whole: Set[str]) -> Iterator[tuple[str, str, Any]]:
    """(prefix, event, value) at the watched prefixes, and (prefix, "values", [item, ...]) for the items of an
    array at a prefix in `whole`, in file order; raises Unsupported where ijson might disagree."""
    walk = _Walk(f, watched, whole)
    yield from walk.value("")
    walk.end()


def _ancestors(prefixes: Set[str]) -> set[str]:
    """Every prefix that leads to one of these (ijson joins keys with '.', so a key may hold dots)."""
    out = {""}
    for p in prefixes:
        parts = p.split(".")
        out.update(".".join(parts[:n]) for n in range(1, len(parts)))
    return out


class _Walk:
    def __init__(self, f: BinaryIO, watched: Set[str], whole: Set[str]):
        self.f = f
        self.decode = codecs.getincrementaldecoder("utf-8")().decode  # strict: bad UTF-8 raises
        self.s = ""  # the window: the file's text from some point on
        self.i = 0  # the position in the window
        self.eof = False
        self.watched = watched
        self.whole = whole
        self.inside = _ancestors(set(watched) | set(whole)) | set(watched)

    def more(self) -> None:
        """Drop the text before the position and append the next chunk (at least as much as is kept, so a big
        value costs linear time)."""
        if self.eof:
            raise Unsupported("the text ends inside a value")
        rest = self.s[self.i:]
        if len(rest) > LIMIT:
            raise Unsupported("a value too big for the window")
        data = self.f.read(max(CHUNK, len(rest)))
        text = self.decode(data, final=not data)
        self.eof = not data
        if _SURROGATE.search(rest[-5:] + text):
            raise Unsupported("an escaped UTF-16 surrogate")
        self.s, self.i = rest + text, 0

    def peek(self) -> str:
        """The next character that is not whitespace, with the position at it."""
        while True:
            self.i = _WS.match(self.s, self.i).end()
            if self.i < len(self.s):
                return self.s[self.i]
            self.more()

    def expect(self, chars: str) -> str:
        c = self.peek()
        if c not in chars:
            raise Unsupported(f"expected one of {chars!r}")
        self.i += 1
        return c

    def scalar(self) -> Any:
        """The value at the position, decoded in C; reads on when it may run past the window."""
        while True:
            try:
                value, end = _scan(self.s, self.i)
            except (json.JSONDecodeError, StopIteration) as e:
                if not self.truncated(e):
                    raise Unsupported("not JSON") from e
                self.more()
                continue
            if end < len(self.s) or self.eof:  # a number at the window's end may go on
                self.i = end
                return value
            self.more()

    def truncated(self, e: json.JSONDecodeError | StopIteration) -> bool:
        """Whether a decoding error may be the window's end, not the file's fault. The C scanner says "Expecting
        value" as StopIteration(position), also from inside a container."""
        if isinstance(e, StopIteration):
            pos, msg = e.value, "Expecting value"
        else:
            pos, msg = e.pos, e.msg
        return not self.eof and (pos >= len(self.s) - 8 or msg.startswith("Unterminated string"))

    def value(self, prefix: str) -> Iterator[tuple[str, str, Any]]:
        c = self.peek()
        if prefix not in self.inside:
            self.skip()
            return
        report = prefix in self.watched
        if c == "{":
            self.i += 1
            if report:
                yield prefix, "start_map", None
            if self.peek() == "}":
                self.i += 1
            else:
                while True:
                    if self.peek() != '"':
                        raise Unsupported("expected a key")
                    key = self.scalar()
                    self.expect(":")
                    if report:
                        yield prefix, "map_key", key
                    yield from self.value(f"{prefix}.{key}" if prefix else key)
                    if self.expect(",}") == "}":
                        break
            if report:
                yield prefix, "end_map", None
        elif c == "[":
            self.i += 1
            if report:
                yield prefix, "start_array", None
            item = f"{prefix}.item" if prefix else "item"
            if self.peek() == "]":
                self.i += 1
            elif item in self.whole:
                yield from self.items(item)
            else:
                while True:
                    yield from self.value(item)
                    if self.expect(",]") == "]":
                        break
            if report:
                yield prefix, "end_array", None
        else:
            value = self.scalar()
            if report:
                yield prefix, _SCALARS[type(value)], value

    def items(self, prefix: str) -> Iterator[tuple[str, str, Any]]:
        """The elements of a non-empty array whose '[' was read, decoded in C, one list per window."""
        while True:
            s, i, n = self.s, self.i, len(self.s)
            batch: list[Any] = []
            try:
                while True:
                    value, end = _scan(s, i)
                    sep = _NEXT.match(s, end)
                    if sep is None:  # the window's end, or no ',' / ']' after the element
                        if _WS.match(s, end).end() < n:
                            raise Unsupported("expected ',' or ']'")
                        break
                    if sep.end() >= n:  # the next element is past the window's end
                        break
                    batch.append(value)
                    i = sep.end()
                    if sep.group(1) == "]":
                        self.i = i
                        yield prefix, "values", batch
                        return
            except (json.JSONDecodeError, StopIteration) as e:
                if not self.truncated(e):
                    raise Unsupported("not JSON") from e
            self.i = i  # the start of the element that did not fit
            if batch:
                yield prefix, "values", batch
            self.more()

    def skip(self) -> None:
        """Pass over the value at the position: decoded whole when it fits the window, else walked."""
        c = self.s[self.i]
        if c not in "{[":
            self.scalar()
            return
        try:
            _, end = _scan(self.s, self.i)
            if end < len(self.s):
                self.i = end
                return
        except (json.JSONDecodeError, StopIteration) as e:
            if not self.truncated(e):
                raise Unsupported("not JSON") from e
        self.i += 1
        if self.peek() == ("}" if c == "{" else "]"):
            self.i += 1
            return
        while True:
            if c == "{":
                if self.peek() != '"':
                    raise Unsupported("expected a key")
                self.scalar()
                self.expect(":")
            self.peek()
            self.skip()
            if self.expect(",}" if c == "{" else ",]") in "}]":
                return

    def end(self) -> None:
        """Only whitespace may follow the value (ijson refuses trailing text)."""
        while True:
            self.i = _WS.match(self.s, self.i).end()
            if self.i < len(self.s):
                raise Unsupported("text after the JSON value")
            if self.eof:
                return
            self.more()
