"""The `twin` command: one entry point with a subcommand per stage.

Heavy imports (torch, transformers, the parsers) happen inside the subcommands, so `twin --help` is instant.
Every TwinError becomes one line on stderr and a non-zero exit; there are no tracebacks for user errors.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from twin.errors import TwinError


class Context:
    def __init__(self, home: str | None):
        from twin.paths import resolve_home

        self.home = resolve_home(home)
        self._config = None

    @property
    def config(self):
        if self._config is None:
            from twin.config import load_config

            self._config = load_config(self.home.config)
        return self._config

    def store(self):
        from twin.store import Store

        self.home.ensure()
        return Store.open(self.home.db)

    def existing_store(self):
        """The store, or a NotFound that says to ingest first."""
        from twin.errors import NotFound

        if not self.home.db.exists():
            raise NotFound(f"{self.home.db}: no database yet; run `twin ingest EXPORT` first")
        return self.store()


pass_ctx = click.make_pass_decorator(Context)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_libraries()


def quiet_libraries() -> None:
    """Libraries that would log secrets or message text at DEBUG stay at INFO or above, whatever the level: Bot
    API URLs carry the token (httpx), python-telegram-bot logs whole updates, discord.py gateway payloads."""
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for chatty in ("telegram", "discord", "apscheduler"):
        logging.getLogger(chatty).setLevel(logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False), envvar=None,
              help="Data directory (default: $TWIN_HOME, else the platform's user data dir).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug). Never logs message text.")
@click.version_option(package_name="twin")
@click.pass_context
def main(ctx: click.Context, home: str | None, verbose: int) -> None:
    """twin: a self-hosted service that speaks as you.

    Ingest your chat exports, train a LoRA adapter in your voice, and review the replies it drafts.

    \b
    Example:
        twin ingest ~/Downloads/Telegram\\ Desktop/DataExport/result.json
        twin stats
    """
    _setup_logging(verbose)
    ctx.obj = Context(home)


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
@pass_ctx
def ingest(ctx: Context, paths: tuple[Path, ...], owner: str | None, fmt: str, include: tuple[str, ...],
           session_gap: float | None) -> None:
    """Import chat exports into the store. Re-importing adds nothing twice.

    Each file is imported in one transaction: a file that fails leaves the store as it was, and the
    files before it stay imported.

    \b
    Example:
        twin ingest result.json "WhatsApp Chat with Tomas Berg.txt" --owner "Mira"
    """
    from twin.chat import DEFAULT_CHAT_TYPES
    from training.exports import ParseOptions
    from training.ingest import IngestOptions, ingest_file, utcnow

    cfg = ctx.config
    gap_minutes = session_gap if session_gap is not None else cfg.ingest.session_gap_minutes
    opts = IngestOptions(
        fmt=fmt,
        owner=owner,
        owner_ids={p: cfg.owner.ids(p) for p in ("telegram", "discord", "whatsapp")},
        parse=ParseOptions(chat_types=DEFAULT_CHAT_TYPES | set(include) | set(cfg.ingest.include)),
        session_gap=round(gap_minutes * 60),
    )
    with ctx.store() as store:
        rows = []
        for path in paths:
            s = ingest_file(store, path, opts, utcnow)
            skipped = _summarise_skipped(s.skipped)
            rows.append((str(path), s.fmt, s.chats, s.seen, s.added, s.updated, f"{s.seconds:.1f}s", skipped))
        _table(["file", "format", "chats", "messages", "added", "updated", "time", "skipped"], rows)


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
        _table(["platform", "messages", "yours", "chats", "sessions"], store.per_platform())
        click.echo()
        _table(["top contacts", "platform", "messages"],
               [(name or uid, platform, n) for platform, uid, name, n in store.top_contacts(top)])
        click.echo()
        click.echo(f"{counts['messages']} messages ({counts['owner_messages']} yours) in {counts['chats']} chats "
                   f"with {counts['contacts']} contacts, {counts['sessions']} conversations")


@main.command()
@click.option("--base-model", help="A Hugging Face id, a local model directory or a .gguf file "
              "[config training.base_model; default: the embedded SmolLM2-135M-Instruct].")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the data [1].")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Stop cleanly after this many minutes and save what was learned.")
@click.option("--name", help="Adapter name; the result is <name>-v<N> [config training.name, twin].")
@click.option("--resume", is_flag=True, help="Continue the last unfinished run from its checkpoint.")
@click.option("--train-on", type=click.Choice(["owner", "all"]),
              help="Learn your turns only, or the contacts' too (role-play) [config training.train_on, owner].")
@click.option("--canaries", is_flag=True, help="Plant fake secrets 1, 4 and 16 times; `twin eval` reports leaks.")
@click.option("--eval/--no-eval", "run_eval", default=False, help="Evaluate on the held-out conversations after.")
@pass_ctx
def train(ctx: Context, base_model, max_steps, epochs, time_budget, name, resume, train_on, canaries,
          run_eval) -> None:
    """Train a LoRA adapter in your voice on the stored conversations.

    The most recent 10% of each chat's conversations are held out for `twin eval`. The last line printed is
    the adapter directory.

    \b
    Example:
        twin train --time-budget 5 --eval
        twin train --base-model Qwen/Qwen2.5-1.5B-Instruct --epochs 2
    """
    from training.job import TrainRequest, train_adapter

    req = TrainRequest(base_model=base_model, name=name, max_steps=max_steps, epochs=epochs,
                       time_budget_minutes=time_budget, resume=resume, canaries=canaries, train_on=train_on)
    path = train_adapter(ctx.home, ctx.config, req, echo=lambda m: click.echo(m, err=True))
    if run_eval:
        _eval(ctx, str(path), as_json=False, limit=64, out=sys.stderr)
    click.echo(path)


@main.command("eval")
@click.argument("adapter", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--limit", type=click.IntRange(min=1), default=64, show_default=True,
              help="Held-out conversations to generate replies for.")
@pass_ctx
def eval_(ctx: Context, adapter: str | None, as_json: bool, limit: int) -> None:
    """Compare an adapter with its base model on held-out conversations (default: the newest adapter).

    \b
    Example:
        twin eval twin-v2 --json
    """
    _eval(ctx, adapter, as_json, limit, sys.stdout)


def _eval(ctx: Context, adapter: str | None, as_json: bool, limit: int, out) -> None:
    from training.evaluation import EvalOptions, evaluate, format_table

    results = evaluate(ctx.home, ctx.config, adapter, EvalOptions(limit=limit))
    if as_json:
        click.echo(json.dumps(results, indent=2), file=out)
        return
    click.echo(f"{results['name']}: {results['held_out']['samples']} held-out conversations, "
               f"{results['held_out']['replies']} replies generated", file=out)
    _table(["metric", "base", "adapter"], format_table(results), out)
    click.echo(f"chart: {results['chart']}", file=out)


@main.command()
@click.option("--contact", required=True, help="Display name, chat title, or platform:id (telegram:2002).")
@click.option("--adapter", help="Adapter name [default: drafting.adapter, else the newest].")
@click.option("--n", "n", type=click.IntRange(1, 10), help="Candidates to return [drafting.n, 3].")
@click.option("--backend", type=click.Choice(["auto", "vllm", "local"]), help="[drafting.backend, auto]")
@click.option("--json", "as_json", is_flag=True, help="Print {candidates, adapter, latency_ms} as JSON.")
@click.argument("message", nargs=-1, required=True)
@pass_ctx
def draft(ctx: Context, contact, adapter, n, backend, as_json, message) -> None:
    """Draft replies to a contact's new message(s); nothing is sent or stored.

    Each MESSAGE is one message of the contact's burst.

    \b
    Example:
        twin draft --contact "Tomas Berg" --n 3 --json "are we still on for saturday?"
    """
    from serving.console import DraftOptions, draft_once

    ctx.existing_store().close()
    result = draft_once(ctx.home, ctx.config, DraftOptions(contact, adapter, n, backend), list(message))
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    for i, c in enumerate(result.candidates, 1):
        click.echo(f"[{i}] " + "\n    ".join(c.messages))
    click.echo(f"({result.adapter}, {result.latency_ms:.0f} ms)", err=True)


@main.command()
@click.option("--contact", required=True, help="Display name, chat title, or platform:id.")
@click.option("--adapter", help="Adapter name [default: the newest].")
@click.option("--n", "n", type=click.IntRange(1, 10), help="Candidates per turn [3].")
@click.option("--backend", type=click.Choice(["auto", "vllm", "local"]))
@pass_ctx
def chat(ctx: Context, contact, adapter, n, backend) -> None:
    """Talk to the twin in the terminal: you write as the contact, it answers as you.

    Nothing is stored or sent. Pick a candidate by number, type your own reply, or press Enter.

    \b
    Example:
        twin chat --contact "Tomas Berg"
    """
    from serving.console import DraftOptions, chat_loop

    ctx.existing_store().close()
    chat_loop(ctx.home, ctx.config, DraftOptions(contact, adapter, n, backend), input, click.echo)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--wait", type=float, default=600, show_default=True, help="Seconds to wait for vLLM to be healthy.")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def serve(ctx: Context, wait: float, vllm_args) -> None:
    """Start vLLM with every adapter under its versioned name (extra arguments go to vLLM).

    Says how to install vLLM when it is not there. The API key comes from TWIN_VLLM_API_KEY.

    \b
    Example:
        twin serve -- --tensor-parallel-size 2
    """
    from serving.console import serve as run_serve

    code = run_serve(ctx.home, ctx.config, list(vllm_args), wait, lambda m: click.echo(m, err=True))
    if code:
        sys.exit(code)


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
    from twin.report import Period, chart, format_table, report

    start = since.replace(tzinfo=timezone.utc) if since else None
    end = until.replace(tzinfo=timezone.utc) + timedelta(days=1) if until else None
    if start and end and end <= start:
        raise ConfigError(f"--until {until:%Y-%m-%d} is before --since {since:%Y-%m-%d}; swap them")
    nothing = ("nothing to report yet: no drafts{}; `twin run` drafts replies to your contacts' messages "
               "and records what you do with them")
    if not ctx.home.db.exists():
        click.echo(nothing.format(""))
        return
    with ctx.store() as store:
        r = report(store, Period(start, end, by))
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
    _table(*format_table(r))
    click.echo(f"chart: {path}")


@main.command("run")
@pass_ctx
def run_(ctx: Context) -> None:
    """Run the relay: the Telegram bot, the Discord twin (when configured) and the scheduled jobs.

    Contacts' messages on Telegram become drafts in your chat with the bot; nothing is sent in your name until
    you tap Send (or turn on /auto for a contact). Stops cleanly on Ctrl-C or SIGTERM. Tokens come from the
    environment only: TWIN_TELEGRAM_TOKEN, TWIN_DISCORD_TOKEN.

    \b
    Example:
        TWIN_TELEGRAM_TOKEN=123456:ABC... twin -v run
    """
    import asyncio

    from bot.service import Secrets, run as run_relay

    cfg = ctx.config
    if not ctx.home.db.exists():
        ctx.home.ensure()
    click.echo("twin run: relay starting (Ctrl-C to stop)", err=True)
    asyncio.run(run_relay(ctx.home, cfg, Secrets.from_env()))
    click.echo("twin run: stopped", err=True)


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
    from twin.forget import forget

    with ctx.existing_store() as store:
        chat = store.find_chat(contact)
        if not yes:
            click.confirm(f"Delete everything about {contact} ({chat.platform}:{chat.id})?", abort=True)
        gone = forget(store, contact, ctx.home.config)
    click.echo(f"{gone.summary()}.")
    click.echo("Adapters trained before keep what they learned; retrain (twin train) to drop it from the model too.")


@main.command("learn")
@click.option("--adapter", help="The version to improve [default: the default adapter; see `twin adapters`].")
@click.option("--method", type=click.Choice(["auto", "dpo", "kto"]),
              help="DPO on pairs, KTO on single verdicts; auto: DPO when there are pairs [learn.method, auto].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True),
              help="Passes over the outcomes [learn.epochs, 2].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one line of JSON.")
@click.option("--dry-run", is_flag=True, help="Count what there is to learn from; train nothing.")
@pass_ctx
def learn_(ctx: Context, adapter, method, epochs, as_json: bool, dry_run: bool) -> None:
    """Learn from what you did with the drafts: a new adapter version, kept only if it is better.

    What you sent after editing a draft is preferred over the draft, an approved candidate over the ones you
    skipped or discarded (trivial edits do not count). The adapter is trained further on that and checked on
    your most recent outcomes, which it did not learn from, and on held-out conversations: it becomes the
    default (and is loaded into a running vLLM) only if its drafts come closer to what you sent and its style
    is no worse. Otherwise it stays on disk for `twin adapters use`. The last line printed is its directory.

    \b
    Example:
        twin learn --dry-run
        twin learn --method dpo --epochs 3
    """
    from training.gate import format_table
    from training.learn import LearnRequest, learn

    ctx.existing_store().close()
    result = learn(ctx.home, ctx.config, LearnRequest(adapter, method, epochs, dry_run),
                   echo=lambda m: click.echo(m, err=True))
    if dry_run:
        if as_json:
            click.echo(json.dumps(result.to_json()))
            return
        _table(["draft outcomes", "count"], sorted(result.counts.items()))
        click.echo(f"would train {result.parent} with {result.method.upper()} on {result.counts['usable']} outcomes")
        return
    vllm = _load_into_vllm(ctx, result.name, result.path) if result.promoted else None
    if as_json:
        click.echo(json.dumps({**result.to_json(), "vllm": vllm}))
        return
    _table(["gate", result.parent, result.name, "verdict"], format_table(result.gate), sys.stderr)
    if result.promoted:
        click.echo(f"promoted: {result.name} is the default adapter now ({result.parent} stays for "
                   f"`twin adapters use {result.parent}`)", err=True)
        click.echo(vllm, err=True)
    else:
        click.echo(f"not promoted: {'; '.join(result.gate['reasons'])}. {result.parent} stays the default",
                   err=True)
    click.echo(result.path)


@main.group("adapters", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def adapters_(click_ctx: click.Context, as_json: bool) -> None:
    """The adapter versions on disk: base, when made, from which parent, the gate's decision, the default.

    \b
    Example:
        twin adapters
        twin adapters use twin-v2
    """
    if click_ctx.invoked_subcommand:
        return
    from twin import adapters

    ctx = click_ctx.find_object(Context)
    found = adapters.list_adapters(ctx.home.adapters)
    pinned = ctx.config.drafting.adapter
    default = pinned or (adapters.find_adapter(ctx.home.adapters, None).name if found else None)
    rows = []
    for a in found:
        meta = a.meta
        rows.append({"name": a.name, "path": str(a.path), "base_model": meta.get("base_model"),
                     "created_at": meta.get("created_at"), "parent": meta.get("parent"),
                     "gate": (meta.get("gate") or {}).get("decision"), "default": a.name == default})
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no adapters yet in {ctx.home.adapters}; run `twin train` first")
        return
    _table(["name", "base", "created", "parent", "gate", "default"],
           [(r["name"], r["base_model"] or "-", r["created_at"] or "-", r["parent"] or "-", r["gate"] or "-",
             "*" if r["default"] else "") for r in rows])
    if pinned:
        click.echo(f"(twin.toml drafting.adapter = {pinned!r} chooses the default)")


@adapters_.command("use")
@click.argument("name")
@pass_ctx
def adapters_use(ctx: Context, name: str) -> None:
    """Make NAME the adapter that drafts (also to roll back), until a newer one is trained or promoted.

    Loads it into a running vLLM when one answers at the configured URL.

    \b
    Example:
        twin adapters use twin-v2
    """
    from twin import adapters

    chosen = adapters.set_default(ctx.home.adapters, name)
    click.echo(f"{chosen.name} is the default adapter now")
    click.echo(_load_into_vllm(ctx, chosen.name, chosen.path), err=True)
    pinned = ctx.config.drafting.adapter
    if pinned and pinned != chosen.name:
        click.echo(f"note: twin.toml drafting.adapter = {pinned!r} still chooses what drafts; remove it to draft "
                   f"with {chosen.name}", err=True)


def _load_into_vllm(ctx: Context, name: str, path: Path) -> str:
    """Load an adapter into the vLLM server at the configured URL, if one answers; says what happened. A server
    that is not there, or refuses, is a warning: `twin serve` loads every adapter when it starts."""
    import os

    from serving.console import vllm_url
    from serving.openai_api import OpenAIClient

    url = vllm_url(ctx.config)
    with OpenAIClient(url, api_key=os.environ.get("TWIN_VLLM_API_KEY"), timeout=60, retries=1) as client:
        if not client.health():
            return f"no vLLM answering at {url}: `twin serve` loads {name} when it starts"
        try:
            if name not in client.models():
                client.load_lora(name, str(path))
        except TwinError as e:
            return f"warning: vLLM at {url} did not load {name} ({e}); restart `twin serve` to serve it"
    return f"vLLM at {url} serves {name}"


def _summarise_skipped(skipped) -> str:
    """{"chat:bot": 1, "chat:channel": 2, "service:pin_message": 3} -> "3 chats (bot, channel), 3 service"."""
    totals: dict[str, int] = {}
    reasons: dict[str, set[str]] = {}
    for key, n in skipped.items():
        what, _, reason = key.partition(":")
        totals[what] = totals.get(what, 0) + n
        reasons.setdefault(what, set()).add(reason)
    parts = []
    for what in sorted(totals):
        label = f"{totals[what]} {what}s" if what == "chat" and totals[what] != 1 else f"{totals[what]} {what}"
        parts.append(f"{label} ({', '.join(sorted(reasons[what]))})" if what == "chat" else label)
    return ", ".join(parts) or "-"


def _table(headers: list[str], rows: list[tuple], out=None) -> None:
    """A plain aligned table on stdout (or `out`)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
        if i == 0:
            click.echo("  ".join("-" * w for w in widths), file=out)


def run() -> None:
    """Console-script entry: user errors become one line on stderr."""
    try:
        main.main(standalone_mode=False)
    except TwinError as e:
        click.echo(f"twin: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("twin: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("twin: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    run()
