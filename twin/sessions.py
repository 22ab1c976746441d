"""Sessionizing: a chat's messages split into conversations at silences longer than the session gap.

A gap strictly greater than the gap starts a new session; equal does not (DESIGN.md, counting rules). Gaps are
measured in whole seconds of absolute time, so three days and four minutes is 259,440 s, never 240 s (the
`timedelta.seconds` trap). Exercised by `twin ingest` and `twin stats`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_GAP_SECONDS = 60 * 60


@dataclass(frozen=True, slots=True)
class Session:
    start: int
    end: int
    messages: int
    owner_messages: int


def session_starts(times: Sequence[int], gap: int = DEFAULT_GAP_SECONDS) -> list[int]:
    """Indices at which a new session starts, for epoch-second times sorted oldest first.

    >>> session_starts([0, 3600, 7201, 7300], gap=3600)
    [0, 2]
    """
    return [i for i in range(len(times)) if i == 0 or times[i] - times[i - 1] > gap]


def sessionize(messages: Iterable[tuple[int, int]], gap: int = DEFAULT_GAP_SECONDS) -> list[Session]:
    """Sessions of (time, from_owner) pairs, in any order.

    >>> sessionize([(7300, 1), (0, 0), (3600, 1), (7201, 0)], gap=3600)
    [Session(start=0, end=3600, messages=2, owner_messages=1), Session(start=7201, end=7300, messages=2, owner_messages=1)]
    """
    ordered = sorted(messages)
    times = [t for t, _ in ordered]
    bounds = session_starts(times, gap) + [len(ordered)]
    return [
        Session(times[a], times[b - 1], b - a, sum(o for _, o in ordered[a:b]))
        for a, b in zip(bounds, bounds[1:])
    ]
