"""Sessionizing: gap boundaries, multi-day gaps, unsorted input (worked examples and properties)."""

from hypothesis import given, strategies as st

from twin.sessions import Session, session_starts, sessionize

HOUR = 3600


def test_gap_equal_to_limit_continues_strictly_greater_splits():
    assert session_starts([0, HOUR], gap=HOUR) == [0]
    assert session_starts([0, HOUR + 1], gap=HOUR) == [0, 1]


def test_three_days_and_four_minutes_is_not_four_minutes():
    # The timedelta.seconds trap: 3 days 4 minutes has .seconds == 240.
    later = 3 * 24 * HOUR + 4 * 60
    assert sessionize([(0, 0), (later, 1)], gap=HOUR) == [Session(0, 0, 1, 0), Session(later, later, 1, 1)]


def test_unsorted_input_is_sorted_first():
    assert sessionize([(5000, 1), (0, 0), (100, 1)], gap=HOUR) == [Session(0, 100, 2, 1), Session(5000, 5000, 1, 1)]


def test_empty():
    assert sessionize([], gap=HOUR) == []


times = st.lists(st.integers(min_value=0, max_value=10**9), max_size=60)


@given(times, st.integers(min_value=1, max_value=10 * 24 * HOUR))
def test_sessions_partition_messages_and_respect_the_gap(ts, gap):
    msgs = [(t, i % 2) for i, t in enumerate(ts)]
    sessions = sessionize(msgs, gap)
    assert sum(s.messages for s in sessions) == len(ts)
    assert sum(s.owner_messages for s in sessions) == sum(o for _, o in msgs)
    ordered = sorted(ts)
    # Within a session no gap exceeds the limit; between sessions every gap does.
    for s in sessions:
        inside = [t for t in ordered if s.start <= t <= s.end]
        assert all(b - a <= gap for a, b in zip(inside, inside[1:]))
    for a, b in zip(sessions, sessions[1:]):
        assert b.start - a.end > gap


@given(times, st.integers(min_value=1, max_value=10**6))
def test_order_of_input_does_not_matter(ts, gap):
    msgs = [(t, 0) for t in ts]
    assert sessionize(msgs, gap) == sessionize(list(reversed(msgs)), gap)
