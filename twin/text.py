"""Small text measures shared by drafting, learning and the online report.

    >>> edit_distance("kitten", "sitting"), round(edit_ratio("kitten", "sitting"), 3)
    (3, 0.429)
"""

from __future__ import annotations


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
