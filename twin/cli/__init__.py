"""The `twin` command: one entry point, one module per group of commands, and the composition roots.

This package is the top floor: only it imports upward (training, serving, bot) and builds parts from the
configuration; everything below receives its parts. Heavy imports (torch, transformers, the parsers) happen
inside the subcommands, so `twin --help` is instant. Every TwinError becomes one line on stderr and a non-zero
exit; there are no tracebacks for user errors.

- twin/cli/data.py: init, ingest, stats, forget, report, health
- twin/cli/model.py: train, eval, learn, adapters
- twin/cli/drafting.py: draft, chat, serve
- twin/cli/relay.py: run (the relay's composition root)
- twin/cli/parts.py: what builds a drafting backend from the configuration
"""

from __future__ import annotations

import logging
import re
import sys

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
        store = Store.open(self.home.db)
        try:  # the index is built with the tokeniser twin.toml asks for ([memory] tokenize; a change rebuilds it)
            store.ensure_index(self.config.memory.tokenize)
        except BaseException:
            store.close()
            raise
        return store

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


GLOBAL_VERBOSE = re.compile(r"-v+|--verbose")


class TwinGroup(click.Group):
    """The `twin` group, taking its own options (--home, -v) after the subcommand too:
    `twin ingest FILE --home DIR` is `twin --home DIR ingest FILE`. Nothing after `--` is touched (it is
    passed through, as by `twin serve -- ...`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))


def hoist_global_options(args: list[str]) -> list[str]:
    """The global options found after the subcommand, moved before it.

    >>> hoist_global_options(["ingest", "a.txt", "--home", "/h", "-vv", "--", "-v"])
    ['--home', '/h', '-vv', 'ingest', 'a.txt', '--', '-v']
    """
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":  # the options already in front
        i += 2 if args[i] == "--home" else 1
    if i >= len(args) or args[i] == "--":
        return list(args)
    front, rest, moved = list(args[:i + 1]), args[i + 1:], []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        a = rest[j]
        if a == "--":
            kept.extend(rest[j:])
            break
        if a == "--home" and j + 1 < len(rest):
            moved += rest[j:j + 2]
            j += 2
            continue
        if a.startswith("--home=") or GLOBAL_VERBOSE.fullmatch(a):
            moved.append(a)
        else:
            kept.append(a)
        j += 1
    return front[:-1] + moved + front[-1:] + kept


@click.group(cls=TwinGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    _huge_pages()
    ctx.obj = Context(home)


def _huge_pages() -> None:
    """Let torch's CPU allocator back tensors of 2 MB and more with transparent huge pages (madvise), before any
    subcommand imports torch (it reads the variable once, at its first allocation).

    A training step allocates and frees hundreds of such tensors; with 4 KB pages each one is hundreds of page
    faults the kernel must serve and zero. Measured at the demo settings (docs/benchmarks.md, "Training
    memory"): system time 37-41 s -> 25-27 s and 66-70 -> 77-79 tokens/s, peak RSS the same. Set
    THP_MEM_ALLOC_ENABLE=0 to keep 4 KB pages.
    """
    import os

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def table(headers: list[str], rows: list[tuple], out=None) -> None:
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



# The commands register themselves on `main` when their modules are imported.
from twin.cli import data, drafting, memory, model, relay  # noqa: E402

__all__ = ["Context", "main", "pass_ctx", "run", "table", "data", "drafting", "model", "relay"]

if __name__ == "__main__":
    run()
