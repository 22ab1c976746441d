"""`twin recall`: what the twin would remember, drafting a reply to a contact's message now (twin/memory.py)."""

from __future__ import annotations

import json

import click

from twin.cli import Context, main, pass_ctx


@main.command()
@click.argument("contact")
@click.argument("message", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print [{time, speaker, text}, ...] as JSON.")
@pass_ctx
def recall(ctx: Context, contact, message, as_json) -> None:
    """Show what memory recalls for CONTACT's MESSAGE: the passages of earlier conversations a draft would get.

    Uses twin.toml's [memory] (max_tokens, scope), with token counts estimated without loading a model.

    \b
    Example:
        twin recall "Tomas Berg" "how is the dog doing?"
    """
    from datetime import datetime, timezone

    from serving.drafting import current_session, incoming_messages
    from twin.memory import MemoryOptions, contact_lines
    from twin.memory import recall as recall_memory
    from twin.sessions import DEFAULT_GAP_SECONDS

    cfg = ctx.config.memory
    now = datetime.now(timezone.utc)
    with ctx.existing_store() as store:
        chat = store.find_chat(contact)
        history = store.chat_messages(chat.key)
        gap = int(store.get_meta("session_gap") or DEFAULT_GAP_SECONDS)
        session = current_session(history, now, gap) + incoming_messages(list(message), now, "contact", None)
        owner = ctx.config.owner.name or store.owner_name() or "Owner"
        opts = MemoryOptions(cfg.max_tokens if cfg.enabled else 0, cfg.scope)
        memory = recall_memory(store, chat.key, contact_lines(session), session[0].time if session else now,
                               owner, opts)
    if as_json:
        click.echo(json.dumps([{"time": r.time.isoformat(), "speaker": r.speaker, "text": r.text} for r in memory],
                              ensure_ascii=False))
        return
    if not memory:
        why = "memory is off ([memory] enabled/max_tokens)" if opts.max_tokens == 0 else "nothing earlier matches"
        click.echo(f"nothing remembered: {why}")
        return
    for r in memory:
        click.echo(f"{r.time:%Y-%m-%d %H:%M}  {r.speaker}: {r.text}")
    click.echo(f"({len(memory)} messages from {len({r.time.date() for r in memory})} days, scope {cfg.scope})",
               err=True)
