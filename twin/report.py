"""`twin report`: the relay's online numbers — what the owner did with the drafts, and how fast they came.

Computed by pure functions from the drafts' outcomes (twin.outcomes, which the relay's ledger reads:
`Ledger.outcomes()`) and the live messages in the store (for coverage); shown as a table (`format_table`) and one
PNG (`chart`). Exercised by `twin report`.

Definitions, for the drafts created in the period (UTC; `--since` inclusive, `--until` exclusive):
- `drafts`: every draft; `pending`: not settled yet (waiting, or being sent); `replaced`: expired because the
  contact wrote again before the owner acted and a newer draft answers the whole burst (bot/relay.py records
  that expiry as the event "replaced": `Outcome.replaced`; the newer draft carries the outcome); `settled` = the
  rest.
- Outcome shares are of *settled* drafts, so the shares below add up to 1 and neither a draft still on the
  owner's screen nor one replaced by a newer draft moves a rate:
  `sent` (sent as it was, on a tap or auto-sent), `edited_light` and `edited_heavy` (the owner changed it and
  sent that; light = normalised edit distance ≤ twin.outcomes.LIGHT_EDIT, and "trivial" edits — whitespace or
  one character — count as light: they are still edits the owner had to make), `written` (the owner answered
  by hand instead; the draft was superseded), `copied` (a draft offered to copy, for forwarded or pasted
  messages: the owner copied a candidate to send it themselves and never forwarded what went out; unconfirmed,
  so shown apart and not in `accepted`), `no_reply` (the owner tapped "No reply needed"), `discarded`,
  `expired` (its reply window closed first), `failed` (approved, but the send did not go through).
  `accepted` = sent + edited_light + edited_heavy (the draft, changed or not, went out). `auto`: how many of
  the sent went out by auto-send, unreviewed (they are in `sent`).
- `regenerated`: the share of settled drafts where the owner asked for another candidate at least once (Next,
  which drafts fresh ones when none are left); `rerolls_mean`: the mean number of candidates passed over per
  settled draft (each tap shows one more candidate, so this counts the taps).
- `latency_p50_ms`, `latency_p95_ms`: drafting time (drafts.latency_ms) over every draft that has one, pending
  and replaced included (it is known at creation). Percentiles are nearest-rank: the smallest value with at
  least p % of the values at or below it, so every reported latency is one that really happened.
- `time_to_send_p50_s`: created → sent, over sent and edited drafts that the owner reviewed (auto-sent ones
  took no review and are left out).
- `coverage` = `answered` / `incoming`: incoming = live Telegram messages (messages.source = 'live') in the
  period whose sender is not the owner (contacts.is_owner); answered = those named in some draft's `answers`,
  matched on (platform, chat id, message id), whatever the draft's own date. Discord is left out: its bot
  answers only mentions and DMs of allowed users, so most live Discord messages never ask for a reply.
  Coverage is reported overall only, never per adapter: an unanswered message was drafted by no adapter, so
  it has no adapter to count against.
- `skipped` (JSON `skipped`, a line under the table): contact bursts the reply model held back, showing no card
  (bot/skips.py), created in the period: `bursts`; `share` = bursts / (bursts + drafts), of the bursts that
  came to be judged, how many got no card; `missed`: of those, how many the owner answered by hand anyway
  (the model was wrong), and `miss_rate` = missed / bursts; `forced`: cards asked for with /draft.
- A rate with an empty denominator is None (JSON null, "-" in the table). Rates are fractions in JSON and
  percentages in the table. The series (`--by day` or `week`, ISO weeks starting Monday) has the same numbers
  per period, drafts by their creation time and messages by theirs.

Worked example: 10 drafts — 4 sent (one auto-sent), 2 edited lightly, 1 heavily, 1 discarded, 1 expired, 1
pending — with latencies 100, 200, ..., 1000 ms, and 8 incoming messages of which 6 are answered:
settled = 9, sent = 4/9, edited_light = 2/9, edited_heavy = 1/9, accepted = 7/9, discarded = expired = 1/9,
latency p50 = 500 ms (the 5th of 10), p95 = 1000 ms (the 10th: ceil(0.95 × 10) = 10), coverage = 6/8.

    >>> percentile([400, 100, 300, 200], 50), percentile([400, 100, 300, 200], 95), percentile([], 50)
    (200, 400, None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from twin.outcomes import Outcome
from twin.store import Store

# Outcome buckets in table and chart order; all of them are shares of settled drafts.
BUCKETS = ("sent", "edited_light", "edited_heavy", "written", "copied", "no_reply", "discarded", "expired", "failed")
PERIODS = ("day", "week")


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (see the module docstring); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def bucket(o: Outcome) -> str:
    """The outcome's bucket: one of BUCKETS, or "pending" or "replaced" (both left out of the shares)."""
    if o.kind == "pending":
        return "pending"
    if o.kind == "expired" and o.replaced:
        return "replaced"
    if o.kind == "edited":
        return "edited_heavy" if o.edit == "heavy" else "edited_light"
    return o.kind


@dataclass(frozen=True)
class Summary:
    """The numbers of one group of drafts (the module docstring defines each)."""

    drafts: int
    pending: int
    replaced: int
    settled: int
    counts: dict[str, int]
    sent: float | None
    edited_light: float | None
    edited_heavy: float | None
    written: float | None
    copied: float | None
    no_reply: float | None
    discarded: float | None
    expired: float | None
    failed: float | None
    accepted: float | None
    auto: int
    regenerated: float | None
    rerolls_mean: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    time_to_send_p50_s: float | None


def _share(n: float, d: int) -> float | None:
    return n / d if d else None


def summarize(group: Sequence[Outcome]) -> Summary:
    """The outcome shares, regenerations and latencies of a group of drafts."""
    counts = dict.fromkeys(BUCKETS, 0)
    buckets = [bucket(o) for o in group]
    settled = [o for o, b in zip(group, buckets) if b in counts]
    for o, b in zip(group, buckets):
        if b in counts:
            counts[b] += 1
    n = len(settled)
    shares = {b: _share(counts[b], n) for b in BUCKETS}
    latencies = [o.latency_ms for o in group if o.latency_ms is not None]
    to_send = [(o.settled_at - o.created_at).total_seconds() for o in settled
               if o.kind in ("sent", "edited") and not o.auto and o.settled_at is not None]
    return Summary(
        drafts=len(group), pending=buckets.count("pending"), replaced=buckets.count("replaced"), settled=n,
        counts=counts, **shares,
        accepted=_share(counts["sent"] + counts["edited_light"] + counts["edited_heavy"], n),
        auto=sum(1 for o in settled if o.kind == "sent" and o.auto),
        regenerated=_share(sum(1 for o in settled if o.passed_over or o.regenerations), n),
        rerolls_mean=_share(sum(len(o.passed_over) for o in settled), n),
        latency_p50_ms=percentile(latencies, 50), latency_p95_ms=percentile(latencies, 95),
        time_to_send_p50_s=percentile(to_send, 50),
    )


@dataclass(frozen=True)
class Incoming:
    """A contact's live message and whether some draft answered it."""

    time: datetime
    answered: bool


def incoming(store: Store, drafts: Sequence[Outcome], since: datetime | None = None,
             until: datetime | None = None) -> list[Incoming]:
    """The contacts' live Telegram messages sent in [since, until), oldest first, each answered when one of
    `drafts` (of any date) names it (see `coverage` above)."""
    answered = {(o.platform, o.chat_id, m) for o in drafts for m in o.answers}
    return [Incoming(t, ("telegram", chat_id, msg_id) in answered)
            for chat_id, msg_id, t in store.contacts_live("telegram", since, until)]


def coverage(messages: Sequence[Incoming]) -> dict[str, Any]:
    """{"incoming": n, "answered": k, "coverage": k / n or None}."""
    k = sum(1 for m in messages if m.answered)
    return {"incoming": len(messages), "answered": k, "coverage": _share(k, len(messages))}


def period_start(t: datetime, by: str) -> date:
    """The UTC day, or the Monday of the ISO week, that `t` falls in."""
    day = t.astimezone(timezone.utc).date()
    return day - timedelta(days=day.weekday()) if by == "week" else day


def period_label(start: date, by: str) -> str:
    """"2024-05-06" for a day, "2024-W19" for the ISO week starting that Monday."""
    if by == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.isoformat()


def skipped(fates: Sequence[str], drafts: int) -> dict[str, Any]:
    """The `skipped` block from the fates of the period's skipped bursts and its number of drafts.

    >>> skipped(["open", "missed", "moved_on", "open"], drafts=12)
    {'bursts': 4, 'share': 0.25, 'missed': 1, 'miss_rate': 0.25, 'forced': 0}
    """
    n, missed = len(fates), sum(f == "missed" for f in fates)
    return {"bursts": n, "share": _share(n, n + drafts), "missed": missed, "miss_rate": _share(missed, n),
            "forced": sum(f == "forced" for f in fates)}


@dataclass(frozen=True)
class Report:
    """Everything `twin report` shows. `adapters` are in the order each first drafted (None: the base model)."""

    since: datetime | None
    until: datetime | None
    by: str
    overall: dict[str, Any]
    adapters: list[dict[str, Any]]
    series: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, Any] = field(default_factory=lambda: skipped([], 0))

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "by": self.by, "overall": self.overall, "adapters": self.adapters, "series": self.series,
                "skipped": self.skipped}


@dataclass(frozen=True)
class Period:
    """What a report covers: drafts created and messages sent in [since, until), grouped by day or week."""

    since: datetime | None = None
    until: datetime | None = None
    by: str = "day"


def build(drafts: Sequence[Outcome], messages: Sequence[Incoming], period: Period = Period(),
          skips: Sequence[str] = ()) -> Report:
    """The report of these drafts and incoming messages (already limited to the period)."""
    by = period.by
    if by not in PERIODS:
        raise ValueError(f"by={by!r}: expected one of {PERIODS}")
    per_adapter: dict[str | None, list[Outcome]] = {}
    for o in sorted(drafts, key=lambda o: (o.created_at, o.draft_id)):
        per_adapter.setdefault(o.adapter, []).append(o)
    adapters = [{"adapter": name, "first_draft": group[0].created_at.isoformat(),
                 **asdict(summarize(group))} for name, group in per_adapter.items()]

    periods: dict[date, tuple[list[Outcome], list[Incoming]]] = {}
    for o in drafts:
        periods.setdefault(period_start(o.created_at, by), ([], []))[0].append(o)
    for m in messages:
        periods.setdefault(period_start(m.time, by), ([], []))[1].append(m)
    series = []
    for start in sorted(periods):
        group, msgs = periods[start]
        series.append({"period": period_label(start, by), "start": start.isoformat(), **coverage(msgs),
                       **asdict(summarize(group)), "adapters": list(dict.fromkeys(o.adapter for o in group))})
    overall = {**coverage(messages), **asdict(summarize(drafts))}
    return Report(period.since, period.until, by, overall, adapters, series, skipped(skips, len(drafts)))


def report(store: Store, drafts: Sequence[Outcome], period: Period = Period(), skips: Sequence[str] = ()) -> Report:
    """The report of the period: `drafts` are every draft's outcome, of any date (the ledger's `outcomes()`):
    those created in the period are reported, and all of them count as answers for coverage (a message answered
    by a later draft is still answered); the incoming messages come from the store. `skips`: the fates of the
    bursts shown no card in the period (bot/skips.py)."""
    since, until = period.since, period.until
    made = [o for o in drafts if (since is None or o.created_at >= since) and (until is None or o.created_at < until)]
    return build(made, incoming(store, drafts, since, until), period, skips)


# -- presentation ---------------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} ms"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 90 * 60 else f"{s / 3600:.1f} h"


TABLE_HEADERS = ["adapter", "drafts", "pending", "replaced", "coverage", "sent as is", "light edit", "heavy edit",
                 "written", "copied", "no reply", "discarded", "expired", "failed", "regenerated", "latency p50",
                 "latency p95", "to send p50"]


def format_table(r: Report) -> list[tuple]:
    """Rows (under TABLE_HEADERS) for the terminal: overall first ("all"), then one row per adapter."""
    def row(name: str, s: dict[str, Any], cov: str) -> tuple:
        return (name, s["drafts"], s["pending"], s["replaced"], cov, *(_pct(s[b]) for b in BUCKETS),
                _pct(s["regenerated"]), _ms(s["latency_p50_ms"]), _ms(s["latency_p95_ms"]),
                _duration(s["time_to_send_p50_s"]))

    rows = [row("all", r.overall, _pct(r.overall["coverage"]))]
    rows += [row(a["adapter"] or "(base model)", a, "-") for a in r.adapters]
    return rows


_COLOURS = {"sent": "#2ca02c", "edited_light": "#98df8a", "edited_heavy": "#ff7f0e", "written": "#9467bd",
            "copied": "#17becf", "no_reply": "#bcbd22",
            "discarded": "#d62728", "expired": "#7f7f7f", "failed": "#000000"}


def chart(r: Report, path: Path) -> Path:
    """One PNG: outcome shares per period as stacked bars with coverage as a line (top), drafting latency p50
    and p95 (bottom); a dotted line marks the period each adapter first drafted in. Returns `path`."""
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure  # not pyplot: no global backend, no open-figure registry
    from matplotlib.ticker import PercentFormatter

    x = [datetime.fromisoformat(p["start"]) for p in r.series]
    width = 5.6 if r.by == "week" else 0.8  # in days: the x axis is a date axis
    fig = Figure(figsize=(11, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    base = [0.0] * len(x)
    for b in BUCKETS:
        values = [p[b] or 0.0 for p in r.series]
        top.bar(x, values, width, bottom=base, color=_COLOURS[b], label=b.replace("_", " "))
        base = [s + v for s, v in zip(base, values)]
    cov = [(t, p["coverage"]) for t, p in zip(x, r.series) if p["coverage"] is not None]
    if cov:
        top.plot(*zip(*cov), color="#1f77b4", marker="o", linewidth=2, label="coverage")
    top.set_ylim(0, 1.05)
    top.yaxis.set_major_formatter(PercentFormatter(1.0))
    top.set_title(f"draft outcomes per {r.by} (share of settled drafts) and coverage of incoming messages", pad=16)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    for key, style in (("latency_p50_ms", "-"), ("latency_p95_ms", "--")):
        pts = [(t, p[key]) for t, p in zip(x, r.series) if p[key] is not None]
        if pts:
            bottom.plot(*zip(*pts), style, marker="o", color="#1f77b4", label=key.split("_")[1])
    bottom.set_ylabel("drafting latency (ms)")
    bottom.set_ylim(bottom=0)
    if bottom.lines:
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    if len(x) <= 20:
        bottom.set_xticks(x, [p["period"] for p in r.series])
    else:
        bottom.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    firsts: dict[date, list[str]] = {}  # a dotted line just before the first period each adapter drafted in
    for a in r.adapters:
        firsts.setdefault(period_start(datetime.fromisoformat(a["first_draft"]), r.by), []).append(
            a["adapter"] or "base model")
    for start, names in firsts.items():
        at = datetime.fromisoformat(start.isoformat()) - timedelta(days=width * 0.6)
        for ax in (top, bottom):
            ax.axvline(at, color="black", linestyle=":", linewidth=1)
        top.text(at, 1.0, " " + ", ".join(names), transform=top.get_xaxis_transform(), fontsize=8, ha="left",
                 va="bottom")
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
