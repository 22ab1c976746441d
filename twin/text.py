"""Small text measures shared by drafting, learning, the online report and the bots' message limits.

    >>> edit_distance("kitten", "sitting"), round(edit_ratio("kitten", "sitting"), 3)
    (3, 0.429)
"""

from __future__ import annotations

from collections.abc import Callable


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: `edit_distance("kitten", "sitting")` -> 3."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_ratio(a: str, b: str) -> float:
    """Edit distance over the longer length: 0.0 identical, 1.0 nothing in common (two empty strings: 0.0)."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def figure(value: float | None, spec: str = ".3f") -> str:
    """A measure for a table: `figure(0.12345)` -> '0.123'; None or NaN (not measured) -> 'n/a'."""
    return "n/a" if value is None or value != value else format(value, spec)


def utf16(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP is two).

    >>> utf16("ok"), utf16("👍"), utf16("é")
    (2, 2, 1)
    """
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int, size: Callable[[str], int] = len) -> list[str]:
    """`text` as pieces of at most `limit` (by `size`), cut at the last line break, else the last space, inside
    each window; a word longer than the limit is cut where it must be. Pieces are stripped, none empty, and
    together they hold every word of the text.

    >>> split_text("one two three four", 9)
    ['one two', 'three', 'four']
    >>> split_text("abcdefghij k", 4), split_text("  \\n ", 10)
    (['abcd', 'efgh', 'ij k'], [])
    """
    pieces: list[str] = []
    rest = text.strip()
    while size(rest) > limit:
        window, used = [], 0
        for ch in rest:  # the longest prefix within the limit, plus one character (a break right after it)
            window.append(ch)
            used += size(ch)
            if used > limit:
                break
        window = "".join(window)
        cut = window.rfind("\n")
        if cut <= 0:
            cut = max(window.rfind(" "), window.rfind("\t"))
        if cut <= 0:
            cut = max(len(window) - 1, 1)  # at least one character, however wide
        piece = rest[:cut].strip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces
