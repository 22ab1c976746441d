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
    # Bot API URLs carry the token: keep the HTTP clients quiet whatever the level.
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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


def _table(headers: list[str], rows: list[tuple]) -> None:
    """A plain aligned table on stdout."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


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
