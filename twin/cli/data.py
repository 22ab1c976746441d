"""`twin init`, `ingest`, `stats`, `forget`, `report` and `health`: the store and what is in it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from twin.cli import Context, main, pass_ctx, table


@main.command()
@click.option("--force", is_flag=True, help="Overwrite an existing twin.toml.")
@pass_ctx
def init(ctx: Context, force: bool) -> None:
    """Create the data home and a commented twin.toml.

    \b
    Example:
        twin --home ~/twin init
    """
    from twin.config import TEMPLATE
    from twin.errors import ConfigError

    ctx.home.ensure()
    if ctx.home.config.exists() and not force:
        raise ConfigError(f"{ctx.home.config}: already exists; edit it, or pass --force to overwrite it")
    ctx.home.config.write_text(TEMPLATE, encoding="utf-8")
    ctx.home.config.chmod(0o600)
    click.echo(ctx.home.config)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--owner", help="Your id or name in these exports, when they do not say (groups, WhatsApp, Discord).")
@click.option("--format", "fmt", type=click.Choice(["auto", "telegram", "discord", "whatsapp"]), default="auto",
              show_default=True, help="Export format; auto-detected from the file's content.")
@click.option("--include", multiple=True, type=click.Choice(["saved", "bot", "channel", "public_group"]),
              help="Also import these Telegram chat types (skipped by default). Repeatable.")
@click.option("--session-gap", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Minutes of silence that start a new conversation [config ingest.session_gap_minutes, 60].")
@click.option("--timezone", "zone", metavar="ZONE",
              help="IANA zone (Europe/Berlin) of times an export writes without an offset (Telegram exports "
                   "from before 2021) [this machine's local zone].")
@pass_ctx
def ingest(ctx: Context, paths: tuple[Path, ...], owner: str | None, fmt: str, include: tuple[str, ...],
           session_gap: float | None, zone: str | None) -> None:
    """Import chat exports into the store. Re-importing adds nothing twice.

    Each file is imported in one transaction: a file that fails leaves the store as it was, and the
    files before it stay imported.

    \b
    Example:
        twin ingest result.json "WhatsApp Chat with Tomas Berg.txt" --owner "Mira"
    """
    from twin.chat import DEFAULT_CHAT_TYPES, PLATFORMS
    from training.exports import ParseOptions
    from training.ingest import IngestOptions, ingest_file, utcnow

    cfg = ctx.config
    tz = _zone(zone) if zone else None
    gap_minutes = session_gap if session_gap is not None else cfg.ingest.session_gap_minutes
    opts = IngestOptions(
        fmt=fmt,
        owner=owner,
        owner_ids={p: cfg.owner.ids(p) for p in PLATFORMS},
        parse=ParseOptions(chat_types=DEFAULT_CHAT_TYPES | set(include) | set(cfg.ingest.include), timezone=tz),
        session_gap=round(gap_minutes * 60),
    )
    with ctx.store() as store:
        rows = []
        for path in paths:
            s = ingest_file(store, path, opts, utcnow)
            skipped = _summarise_skipped(s.skipped)
            rows.append((str(path), s.fmt, s.chats, s.seen, s.added, s.updated, f"{s.seconds:.1f}s", skipped))
            for note in s.notes:
                click.echo(f"twin: {path}: {note}", err=True)
        table(["file", "format", "chats", "messages", "added", "updated", "time", "skipped"], rows)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option("--top", default=10, show_default=True, help="How many top contacts to list.")
@pass_ctx
def stats(ctx: Context, as_json: bool, top: int) -> None:
    """Counts of what is stored: messages, your messages, chats, contacts, sessions, per platform.

    \b
    Example:
        twin stats --json
    """
    with ctx.existing_store() as store:
        counts = store.stats()
        if as_json:
            click.echo(json.dumps(counts))
            return
        table(["platform", "messages", "yours", "chats", "sessions"], store.per_platform())
        click.echo()
        table(["top contacts", "platform", "messages"],
               [(name or uid, platform, n) for platform, uid, name, n in store.top_contacts(top)])
        click.echo()
        click.echo(f"{counts['messages']} messages ({counts['owner_messages']} yours) in {counts['chats']} chats "
                   f"with {counts['contacts']} contacts, {counts['sessions']} conversations")


@main.command("report")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First day to report, UTC [the first draft].")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day to report, included, UTC [today].")
@click.option("--by", type=click.Choice(["day", "week"]), default="day", show_default=True,
              help="Period of the numbers over time (chart and JSON series); weeks are ISO weeks.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (rates as fractions).")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the PNG chart [<home>/runs/report.png].")
@pass_ctx
def report_(ctx: Context, since, until, by: str, as_json: bool, chart_path: Path | None) -> None:
    """What happened to the drafts: coverage, sent as is, edited, written by hand, discarded, expired,
    regenerated, and drafting latency, overall and per adapter version, with a chart over time.

    Shares are of settled drafts: pending ones, and ones replaced by a newer draft, are counted but left
    out of them. The definitions are in twin/report.py.

    \b
    Example:
        twin report --since 2024-05-01 --by week
    """
    from datetime import timedelta, timezone

    from twin.errors import ConfigError
    from twin.report import TABLE_HEADERS, Period, chart, format_table, report

    start = since.replace(tzinfo=timezone.utc) if since else None
    end = until.replace(tzinfo=timezone.utc) + timedelta(days=1) if until else None
    if start and end and end <= start:
        raise ConfigError(f"--until {until:%Y-%m-%d} is before --since {since:%Y-%m-%d}; swap them")
    nothing = ("nothing to report yet: no drafts{}; `twin run` drafts replies to your contacts' messages "
               "and records what you do with them")
    if not ctx.home.db.exists():
        click.echo(nothing.format(""))
        return
    from bot.ledger import Ledger
    from bot.skips import Skips

    with ctx.store() as store:
        # Every draft, not only the period's: a message answered by a later draft still counts for coverage.
        r = report(store, Ledger(store).outcomes(), Period(start, end, by),
                   [s.fate for s in Skips(store).since(start, end)])
    if not r.overall["drafts"]:
        click.echo(nothing.format(" in that period" if since or until else ""))
        return
    path = chart(r, chart_path or ctx.home.runs / "report.png")
    if as_json:
        click.echo(json.dumps({**r.to_json(), "chart": str(path)}, indent=2))
        return
    o = r.overall
    click.echo(f"{o['drafts']} drafts ({o['pending']} pending, {o['replaced']} replaced) from "
               f"{r.series[0]['period']} to {r.series[-1]['period']}; {o['answered']} of {o['incoming']} "
               "incoming messages answered by a draft")
    table(TABLE_HEADERS, format_table(r))
    k = r.skipped
    if k["bursts"]:
        click.echo(f"no card (no reply due): {k['bursts']} bursts, {k['share']:.1%} of those judged; answered by "
                   f"hand anyway: {k['missed']} ({k['miss_rate']:.1%}); asked for with /draft: {k['forced']}")
    click.echo(f"chart: {path}")


@main.command()
@click.option("--max-age", type=click.IntRange(min=1), default=120, show_default=True,
              help="Seconds since the relay's last heartbeat that still count as healthy.")
@pass_ctx
def health(ctx: Context, max_age: int) -> None:
    """Exit 0 when a running `twin run` wrote its heartbeat recently (for container health checks).

    \b
    Example:
        twin health && echo healthy
    """
    import time

    from twin.errors import ServingUnavailable

    with ctx.existing_store() as store:
        beat = store.get_meta("relay_heartbeat")
    age = time.time() - float(beat) if beat else None
    if age is None or age > max_age:
        raise ServingUnavailable(
            "relay: no heartbeat" + ("" if age is None else f" for {age:.0f} s") + "; is `twin run` running?"
        )
    click.echo(f"healthy: heartbeat {age:.0f} s ago")


@main.command("forget")
@click.argument("contact")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def forget_(ctx: Context, contact: str, yes: bool) -> None:
    """Delete everything stored about a contact: their chats and messages, names, drafts and twin.toml notes.

    \b
    Example:
        twin forget "Tomas Berg" --yes
        twin forget telegram:5550100102
    """
    from bot.ledger import Ledger
    from twin.forget import forget

    with ctx.existing_store() as store:
        chat = store.find_chat(contact)
        if not yes:
            click.confirm(f"Delete everything about {contact} ({chat.platform}:{chat.id})?", abort=True)
        gone = forget(store, contact, ctx.home.config, relay_tables=Ledger(store).forget)
    click.echo(f"{gone.summary()}.")
    click.echo("Adapters trained before keep what they learned; retrain (twin train) to drop it from the model too.")


def _zone(name: str):
    """--timezone as a tzinfo; a ConfigError naming the value when it is no IANA zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from twin.errors import ConfigError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"--timezone {name!r}: no such time zone; pass an IANA name like Europe/Berlin "
                          "or America/New_York") from e


def _summarise_skipped(skipped) -> str:
    """{"chat:bot": 1, "chat:channel": 2, "service:pin_message": 3, "line:12": 1, "line:40": 1}
    -> "3 chats (bot, channel), 2 lines (12, 40), 3 service": chat types and line numbers are named."""
    totals: dict[str, int] = {}
    reasons: dict[str, set[str]] = {}
    for key, n in skipped.items():
        what, _, reason = key.partition(":")
        totals[what] = totals.get(what, 0) + n
        reasons.setdefault(what, set()).add(reason)
    parts = []
    for what in sorted(totals):
        plural = what in ("chat", "line") and totals[what] != 1
        label = f"{totals[what]} {what}s" if plural else f"{totals[what]} {what}"
        if what == "chat":
            label += f" ({', '.join(sorted(reasons[what]))})"
        elif what == "line":
            numbers = sorted(reasons[what], key=int)
            label += f" ({', '.join(numbers[:10])}{', ...' if len(numbers) > 10 else ''})"
        parts.append(label)
    return ", ".join(parts) or "-"
