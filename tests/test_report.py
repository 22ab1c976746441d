"""`twin report`: a store with known outcomes (built through the real ledger and draft transitions) reports
exactly the known rates, overall, per adapter, per day and per week, as JSON, as a table and as a PNG."""

import doctest
import json
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from click.testing import CliRunner

import bot.drafts as D
import twin.report
from bot.drafts import ChatRef, Draft
from bot.ledger import Ledger
from twin.chat import Chat, Message
from twin.cli import main
from twin.errors import ConfigError
from twin.outcomes import Outcome
from twin.report import Incoming, Period, build, incoming, percentile, report
from twin.store import Store

DAY1 = datetime(2024, 5, 6, 10, tzinfo=timezone.utc)  # a Monday: both days are in ISO week 2024-W19
DAY2 = DAY1 + timedelta(days=1)
REF = ChatRef("telegram", "BC1", "2002")
SECRET = "sure, 8 at the boathouse?"  # a draft's text: must never reach the output


def _draft(ledger, at, adapter, latency, answers, candidates=(SECRET,), auto=False) -> int:
    d = ledger.create(Draft(id=None, chat=REF, contact_id="user2002", answers=answers, candidates=candidates,
                            created_at=at, updated_at=at, expires_at=at + timedelta(hours=20), adapter=adapter,
                            latency_ms=latency, auto=auto), at)
    return d.id


def _send(ledger, i, at, text=None) -> None:
    step = (lambda x: D.approve(x, at)) if text is None else (lambda x: D.submit_edit(x, text, at))
    ledger.apply(i, step, "send", at)
    ledger.apply(i, lambda x: D.dispatch(x, at), "dispatch", at)
    ledger.apply(i, lambda x: D.sent(x, ("9000",), at), "sent", at)


def _messages(store) -> None:
    """Day 1: eight contact messages 101-108 (101-107 get answered); day 2: ten, 201-210 (201-207 answered), and
    one in another chat whose id, 101, is answered only in chat 2002. Around them, what coverage must not count:
    the owner's own live messages, an imported message and a Discord message."""
    def msg(chat, mid, sender, t, platform="telegram"):
        return Message(platform, chat, mid, sender, None, t, "synthetic text")

    day1 = DAY1 - timedelta(hours=1)
    day2 = DAY2 - timedelta(hours=3)
    live = [msg("2002", str(100 + i), "user2002", day1 + timedelta(minutes=i)) for i in range(1, 9)]
    live += [msg("2002", str(200 + i), "user2002", day2 + timedelta(minutes=i)) for i in range(1, 11)]
    live += [msg("2003", "101", "user2003", day2 + timedelta(minutes=30))]
    live += [msg("2002", f"o{i}", "user1", day1 + timedelta(minutes=20 + i)) for i in range(2)]
    live += [msg("chan", "55", "u55", day1, platform="discord")]
    with store.transaction():
        store.set_owner("telegram", "user1")
        for chat in ("2002", "2003"):
            store.upsert_chat(Chat("telegram", chat, "personal"))
        store.insert_messages(live, source="live")
        store.insert_messages([msg("2002", "i1", "user2002", day1)])  # imported, not live


def _drafts(store) -> None:
    """13 drafts: twin-v1 made 1-6 (1-5 on day 1, 6 on day 2), twin-v2 made 7-13 on day 2."""
    ledger = Ledger(store)
    m = lambda n: timedelta(minutes=n)  # noqa: E731
    s = lambda n: timedelta(seconds=n)  # noqa: E731
    t = DAY1
    i = _draft(ledger, t, "twin-v1", 100, ("101",))
    _send(ledger, i, t + s(60))                                                  # 1 sent as is after 60 s
    t = DAY1 + m(10)
    i = _draft(ledger, t, "twin-v1", 200, ("102",), candidates=("a", "b", "c"))
    ledger.apply(i, lambda x: D.next_candidate(x, t + s(10)), "next", t + s(10))
    _send(ledger, i, t + s(120))                                                 # 2 sent after one Next
    t = DAY1 + m(20)
    i = _draft(ledger, t, "twin-v1", 300, ("103",), candidates=("see you at 8 tonight",))
    _send(ledger, i, t + s(30), "see you at 9 tonight!")                         # 3 light edit
    t = DAY1 + m(30)
    i = _draft(ledger, t, "twin-v1", 400, ("104",))
    _send(ledger, i, t + s(240), "can't tonight, sorry")                         # 4 heavy edit
    t = DAY1 + m(40)
    i = _draft(ledger, t, "twin-v1", 500, ("105", "106"), candidates=("one",))
    for k, fresh in enumerate(("two", "three"), 1):                              # Next twice, nothing left:
        ledger.apply(i, lambda x: D.add_candidates(x, (fresh,), t + s(k)), "regenerate", t + s(k))  # regenerated
    ledger.apply(i, lambda x: D.discard(x, t + s(5)), "discard", t + s(5))      # 5 discarded
    t = DAY2 - m(120)
    i = _draft(ledger, t, "twin-v1", 600, ("107",))
    ledger.apply(i, lambda x: D.supersede(x, "written by hand", t + s(9)), "superseded", t + s(9))  # 6 written
    t = DAY2
    i = _draft(ledger, t, "twin-v2", 150, ("201",))
    _send(ledger, i, t + s(90))                                                  # 7 sent as is after 90 s
    t = DAY2 + m(10)
    i = _draft(ledger, t, "twin-v2", 250, ("202",), auto=True)
    _send(ledger, i, t)                                                          # 8 auto-sent
    t = DAY2 + m(20)
    i = _draft(ledger, t, "twin-v2", 350, ("203",), candidates=("ok see you",))
    _send(ledger, i, t + s(45), "ok see you!")                                   # 9 trivial edit: light
    t = DAY2 + m(30)
    i = _draft(ledger, t, "twin-v2", 450, ("204",))
    ledger.apply(i, lambda x: D.expire(x, t + m(600)), "expire", t + m(600))     # 10 expired
    t = DAY2 + m(40)
    i = _draft(ledger, t, "twin-v2", 550, ("205",))
    ledger.apply(i, lambda x: D.approve(x, t + s(20)), "send", t + s(20))
    ledger.apply(i, lambda x: D.dispatch(x, t + s(20)), "dispatch", t + s(20))
    ledger.apply(i, lambda x: D.send_failed(x, "Forbidden", t + s(21), retries=3, retryable=False), "send_failed",
                 t + s(21))                                                      # 11 failed
    t = DAY2 + m(50)
    i = _draft(ledger, t, "twin-v2", 650, ("206",))
    ledger.apply(i, lambda x: D.expire(x, t + m(1)), "replaced", t + m(1))      # 12 replaced by 13
    _draft(ledger, t + m(1), "twin-v2", 700, ("206", "207"))                     # 13 pending


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    with Store.open(home / "twin.db") as store:
        _messages(store)
        _drafts(store)
    return home


def test_the_fixture_has_the_outcomes_it_claims(home):
    with Store.open(home / "twin.db") as store:
        outs = Ledger(store).outcomes()
        assert Ledger(store).replaced() == {12}
    assert [o.kind for o in outs] == ["sent", "sent", "edited", "edited", "discarded", "written", "sent", "sent",
                                      "edited", "expired", "failed", "expired", "pending"]
    assert [o.edit for o in outs if o.kind == "edited"] == ["light", "heavy", "trivial"]
    assert [len(o.passed_over) for o in outs][:6] == [0, 1, 0, 0, 2, 0]


def _f(n, d):
    return n / d


OVERALL = {
    "drafts": 13, "pending": 1, "replaced": 1, "settled": 11,
    "counts": {"sent": 4, "edited_light": 2, "edited_heavy": 1, "written": 1, "copied": 0, "no_reply": 0, "discarded": 1, "expired": 1,
               "failed": 1},
    "sent": _f(4, 11), "edited_light": _f(2, 11), "edited_heavy": _f(1, 11), "written": _f(1, 11), "copied": 0.0, "no_reply": 0.0,
    "discarded": _f(1, 11), "expired": _f(1, 11), "failed": _f(1, 11), "accepted": _f(7, 11), "auto": 1,
    "regenerated": _f(2, 11), "rerolls_mean": _f(3, 11),
    # latencies 100..700 (13 values): nearest rank ceil(6.5) = 7th, ceil(12.35) = 13th
    "latency_p50_ms": 400, "latency_p95_ms": 700,
    # reviewed sends 30, 45, 60, 90, 120, 240 s (the auto-sent one left out): the 3rd
    "time_to_send_p50_s": 60,
    "incoming": 19, "answered": 14, "coverage": _f(14, 19),
}
V1 = {
    "adapter": "twin-v1", "first_draft": DAY1.isoformat(), "drafts": 6, "pending": 0, "replaced": 0, "settled": 6,
    "counts": {"sent": 2, "edited_light": 1, "edited_heavy": 1, "written": 1, "copied": 0, "no_reply": 0, "discarded": 1, "expired": 0,
               "failed": 0},
    "sent": _f(2, 6), "edited_light": _f(1, 6), "edited_heavy": _f(1, 6), "written": _f(1, 6), "copied": 0.0, "no_reply": 0.0,
    "discarded": _f(1, 6), "expired": 0.0, "failed": 0.0, "accepted": _f(4, 6), "auto": 0,
    "regenerated": _f(2, 6), "rerolls_mean": 0.5, "latency_p50_ms": 300, "latency_p95_ms": 600,
    "time_to_send_p50_s": 60,
}
V2 = {
    "adapter": "twin-v2", "first_draft": DAY2.isoformat(), "drafts": 7, "pending": 1, "replaced": 1, "settled": 5,
    "counts": {"sent": 2, "edited_light": 1, "edited_heavy": 0, "written": 0, "copied": 0, "no_reply": 0, "discarded": 0, "expired": 1,
               "failed": 1},
    "sent": _f(2, 5), "edited_light": _f(1, 5), "edited_heavy": 0.0, "written": 0.0, "copied": 0.0, "no_reply": 0.0, "discarded": 0.0,
    "expired": _f(1, 5), "failed": _f(1, 5), "accepted": _f(3, 5), "auto": 1, "regenerated": 0.0,
    "rerolls_mean": 0.0, "latency_p50_ms": 450, "latency_p95_ms": 700, "time_to_send_p50_s": 45,
}
DAY_1 = {
    "period": "2024-05-06", "start": "2024-05-06", "incoming": 8, "answered": 7, "coverage": _f(7, 8),
    "drafts": 5, "pending": 0, "replaced": 0, "settled": 5,
    "counts": {"sent": 2, "edited_light": 1, "edited_heavy": 1, "written": 0, "copied": 0, "no_reply": 0, "discarded": 1, "expired": 0,
               "failed": 0},
    "sent": _f(2, 5), "edited_light": _f(1, 5), "edited_heavy": _f(1, 5), "written": 0.0, "copied": 0.0, "no_reply": 0.0, "discarded": _f(1, 5),
    "expired": 0.0, "failed": 0.0, "accepted": _f(4, 5), "auto": 0, "regenerated": _f(2, 5),
    "rerolls_mean": _f(3, 5), "latency_p50_ms": 300, "latency_p95_ms": 500, "time_to_send_p50_s": 60,
    "adapters": ["twin-v1"],
}
DAY_2 = {
    "period": "2024-05-07", "start": "2024-05-07", "incoming": 11, "answered": 7, "coverage": _f(7, 11),
    "drafts": 8, "pending": 1, "replaced": 1, "settled": 6,
    "counts": {"sent": 2, "edited_light": 1, "edited_heavy": 0, "written": 1, "copied": 0, "no_reply": 0, "discarded": 0, "expired": 1,
               "failed": 1},
    "sent": _f(2, 6), "edited_light": _f(1, 6), "edited_heavy": 0.0, "written": _f(1, 6), "copied": 0.0, "no_reply": 0.0, "discarded": 0.0,
    "expired": _f(1, 6), "failed": _f(1, 6), "accepted": _f(3, 6), "auto": 1, "regenerated": 0.0,
    "rerolls_mean": 0.0, "latency_p50_ms": 450, "latency_p95_ms": 700, "time_to_send_p50_s": 45,
    "adapters": ["twin-v1", "twin-v2"],
}


def test_overall_per_adapter_and_per_day_numbers_are_exact(home):
    with Store.open(home / "twin.db") as store:
        r = report(store, Ledger(store).outcomes())
    assert r.overall == OVERALL
    assert r.adapters == [V1, V2]
    assert r.series == [DAY_1, DAY_2]
    shares = [r.overall[b] for b in twin.report.BUCKETS]
    assert sum(Fraction(x).limit_denominator(100) for x in shares) == 1


def test_by_week_is_one_row_equal_to_the_overall_numbers(home):
    with Store.open(home / "twin.db") as store:
        r = report(store, Ledger(store).outcomes(), Period(by="week"))
    [week] = r.series
    assert week["period"] == "2024-W19" and week["start"] == "2024-05-06"
    assert {k: week[k] for k in OVERALL} == OVERALL


def test_a_period_keeps_its_drafts_and_messages_and_counts_answers_made_later(home):
    with Store.open(home / "twin.db") as store:
        day2 = report(store, Ledger(store).outcomes(), Period(since=DAY2.replace(hour=0)))
        day1 = report(store, Ledger(store).outcomes(), Period(until=DAY2.replace(hour=0)))
    assert {k: day2.overall[k] for k in OVERALL} == {k: DAY_2[k] for k in OVERALL}
    assert [a["adapter"] for a in day2.adapters] == ["twin-v1", "twin-v2"]
    # message 107 (day 1) was answered by draft 6, made on day 2: still answered in a day-1 report
    assert (day1.overall["incoming"], day1.overall["answered"], day1.overall["drafts"]) == (8, 7, 5)


def test_coverage_matches_on_chat_and_message_id_and_counts_only_contacts_live_telegram_messages(home):
    with Store.open(home / "twin.db") as store:
        msgs = incoming(store, Ledger(store).outcomes())
    assert len(msgs) == 19 and sum(m.answered for m in msgs) == 14
    # the last one is chat 2003's message 101: same id as an answered message of chat 2002, not answered
    assert msgs[-1].time == DAY2 - timedelta(hours=3) + timedelta(minutes=30) and not msgs[-1].answered


def test_the_worked_example_of_the_module_docstring():
    kinds = ["sent"] * 4 + ["edited"] * 3 + ["discarded", "expired", "pending"]
    finals = [None] * 4 + ["see you at 9 pm!", "see you at 8 pm", "can't tonight, sorry"] + [None] * 3
    outs = [Outcome(i, "telegram", "telegram", "2002", k, "twin-v1", (), "see you at 8!", (), final, 0,
                    100.0 * (i + 1), DAY1, None if k == "pending" else DAY1 + timedelta(minutes=1), i == 0)
            for i, (k, final) in enumerate(zip(kinds, finals))]
    msgs = [Incoming(DAY1, i < 6) for i in range(8)]
    o = build(outs, msgs).overall
    assert (o["settled"], o["sent"], o["edited_light"], o["edited_heavy"], o["accepted"]) == (9, 4 / 9, 2 / 9,
                                                                                               1 / 9, 7 / 9)
    assert (o["discarded"], o["expired"], o["auto"], o["coverage"]) == (1 / 9, 1 / 9, 1, 6 / 8)
    assert (o["latency_p50_ms"], o["latency_p95_ms"]) == (500, 1000)


def test_no_settled_drafts_gives_no_rates_rather_than_zero():
    r = build([], [])
    assert r.overall["drafts"] == 0 and r.overall["sent"] is None and r.overall["coverage"] is None
    assert r.overall["latency_p50_ms"] is None and r.series == [] and r.adapters == []


def test_percentile_is_nearest_rank():
    assert percentile([5], 95) == 5
    assert percentile(list(range(1, 21)), 95) == 19  # ceil(0.95 * 20) = 19th
    assert percentile(list(range(1, 21)), 50) == 10
    assert doctest.testmod(twin.report).failed == 0


def _cli(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), "report", *args], catch_exceptions=True)


def test_cli_json_reports_the_known_numbers_and_writes_a_png(home, tmp_path):
    png = tmp_path / "charts" / "r.png"
    result = _cli(home, "--json", "--chart", str(png))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["overall"] == OVERALL
    assert data["adapters"] == [V1, V2]
    assert data["series"] == [DAY_1, DAY_2]
    assert data["chart"] == str(png) and data["by"] == "day"
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    assert (int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")) == (1100, 700)


def test_cli_table_shows_percentages_per_adapter_and_no_message_text(home):
    result = _cli(home, "--until", "2024-05-07", "--by", "week")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("13 drafts (1 pending, 1 replaced) from 2024-W19 to 2024-W19; 14 of 19 incoming messages "
                        "answered by a draft")
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert rows["all"][1:5] == ["13", "1", "1", "73.7%"]  # drafts, pending, replaced, coverage 14/19
    assert rows["all"][5:9] == ["36.4%", "18.2%", "9.1%", "9.1%"]  # 4/11, 2/11, 1/11, 1/11
    assert rows["twin-v1"][4:6] == ["-", "33.3%"]  # no per-adapter coverage; sent 2/6
    assert rows["twin-v2"][-7:] == ["0.0%", "450", "ms", "700", "ms", "45", "s"]
    assert lines[-1] == f"chart: {home / 'runs' / 'report.png'}"
    assert (home / "runs" / "report.png").stat().st_size > 0
    for text in (SECRET, "written by hand", "synthetic text", "can't tonight"):
        assert text not in result.output


def test_cli_with_nothing_to_report(tmp_path):
    empty = tmp_path / "empty"
    result = _cli(empty, "--json")
    assert result.exit_code == 0
    assert result.output.startswith("nothing to report yet: no drafts;") and "`twin run`" in result.output
    assert not (empty / "twin.db").exists()
    Store.open(empty / "twin.db").close()
    assert _cli(empty).output.startswith("nothing to report yet: no drafts;")
    assert not (empty / "runs" / "report.png").exists()


def test_cli_period_without_drafts_and_a_reversed_period(home):
    result = _cli(home, "--since", "2025-01-01")
    assert result.exit_code == 0
    assert result.output.startswith("nothing to report yet: no drafts in that period;")
    result = _cli(home, "--since", "2024-05-07", "--until", "2024-05-06")
    assert isinstance(result.exception, ConfigError) and "--until 2024-05-06 is before --since" in str(result.exception)


def test_copied_drafts_are_shown_apart_and_not_accepted():
    kinds = ["sent", "copied", "copied", "discarded"]
    outs = [Outcome(i, "copy" if k == "copied" else "telegram", "telegram", "2002", k, "twin-v1", (), "ok!", (),
                    None, 0, 100.0, DAY1, DAY1 + timedelta(minutes=1), False) for i, k in enumerate(kinds)]
    o = build(outs, []).overall
    assert (o["settled"], o["sent"], o["copied"], o["accepted"], o["counts"]["copied"]) == (4, 1 / 4, 2 / 4, 1 / 4, 2)
    (row,) = twin.report.format_table(build(outs, []))[:1]
    assert row[twin.report.TABLE_HEADERS.index("copied")] == "50.0%"
