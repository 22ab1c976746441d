"""`twin draft`, `chat` and `serve`: drafting in the terminal and the vLLM server."""

from __future__ import annotations

import json
import sys

import click

from twin.cli import Context, main, pass_ctx


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
    from serving.console import draft_once
    from twin.cli.parts import DraftOptions, drafting_parts

    ctx.existing_store().close()
    cfg, opts = ctx.config, DraftOptions(contact, adapter, n, backend)
    result = draft_once(ctx.home.db, cfg.drafting, contact, n, list(message),
                        lambda: drafting_parts(ctx.home, cfg, opts))
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
    from serving.console import chat_loop
    from twin.cli.parts import DraftOptions, drafting_parts

    ctx.existing_store().close()
    cfg, opts = ctx.config, DraftOptions(contact, adapter, n, backend)
    chat_loop(ctx.home.db, cfg.drafting, contact, n, lambda: drafting_parts(ctx.home, cfg, opts), input, click.echo)


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
