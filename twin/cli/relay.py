"""`twin run` and its composition root: store, drafter, relay, Telegram, Discord and the jobs in one asyncio loop.

Everything below receives what it needs as arguments; only this module knows how the parts fit. `run_relay`
runs until SIGINT or SIGTERM (or `stop` is set), then stops the parts in reverse order: polling first (no new
updates), the jobs, Discord, the relay's timers and tasks, the drafter's thread, the store.

    TWIN_TELEGRAM_TOKEN=123:abc twin run
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import click

from twin.cli import Context, main, pass_ctx
from twin.config import Config
from twin.errors import ConfigError
from twin.paths import Home

if TYPE_CHECKING:  # the relay's parts are imported when it runs, not when `twin --help` does
    from bot.drafter import Drafter
    from serving.drafting import DraftingParts
    from bot.ports import RelaySettings
    from bot.relay import Relay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Secrets:
    """Tokens, from the environment only."""

    telegram: str | None = None
    discord: str | None = None

    @classmethod
    def from_env(cls) -> "Secrets":
        return cls(os.environ.get("TWIN_TELEGRAM_TOKEN") or None, os.environ.get("TWIN_DISCORD_TOKEN") or None)


def default_parts(home: Home, cfg: Config) -> Callable[[], DraftingParts]:
    """Open the configured backend (vLLM when it answers, else the in-process model) in the drafter's thread."""
    def parts() -> DraftingParts:
        from dataclasses import replace

        from twin.cli.parts import DraftOptions, drafting_parts, pick_adapter

        def pick() -> str | None:
            adapter = pick_adapter(home, cfg.drafting.adapter)
            return adapter.name if adapter else None

        return replace(drafting_parts(home, cfg, DraftOptions(contact="")), pick=pick)

    return parts


def reply_gate(home: Home, cfg: Config):
    """The reply model's gate for the relay (bot/skips.py), or None: `[drafting] skip_no_reply = false`, or no
    model trained yet (every burst then gets a card), or one that cannot be read (said in the log)."""
    if not cfg.drafting.skip_no_reply:
        return None
    from bot.skips import ReplyGate
    from twin.cli.parts import pick_adapter
    from twin.errors import TwinError
    from twin.replies import ReplyModel, find_model

    try:
        adapter = pick_adapter(home, cfg.drafting.adapter)
        where = find_model(home.adapters, adapter.name if adapter else None)
        if where is None:
            log.info("no reply model yet (twin train makes one): every burst gets a card")
            return None
        model = ReplyModel.load(where)
    except TwinError as e:
        log.warning("reply model not used: %s", e)
        return None
    log.info("reply model from %s: threshold %.2f", where.name, model.threshold)
    return ReplyGate(model)


def learn_command(home: Home) -> list[str]:
    """`twin learn --json` on this data home, as the scheduled job runs it in a child process."""
    return [sys.executable, "-m", "twin.cli", "--home", str(home.root), "learn", "--json"]


def relay_settings(cfg: Config) -> RelaySettings:
    from bot.ports import RelaySettings

    t = cfg.telegram
    return RelaySettings(settle_s=t.settle_seconds, pace_s=t.pace_seconds,
                         expiry_margin=timedelta(minutes=t.expiry_margin_minutes), send_retries=t.send_retries)


async def run_relay(home: Home, cfg: Config, secrets: Secrets, parts: Callable[[], DraftingParts] | None = None,
              stop: asyncio.Event | None = None, clock: Callable[[], datetime] | None = None,
              on_ready: Callable[[Relay], None] | None = None) -> None:
    """Run the relay until `stop` is set or SIGINT/SIGTERM arrives; `on_ready` gets the relay once it runs."""
    from bot import jobs
    from bot.cards import privacy_text, status_text
    from bot.drafter import Drafter
    from bot.ports import NoOwner
    from bot.relay import Relay
    from twin.store import Store

    if secrets.telegram is None and secrets.discord is None:
        raise ConfigError("nothing to run: set TWIN_TELEGRAM_TOKEN (the bot from @BotFather) and/or "
                          "TWIN_DISCORD_TOKEN in the environment")
    if secrets.telegram and cfg.telegram.owner_id is None:
        raise ConfigError(f"{home.config}: telegram.owner_id is not set; set it to your Telegram user id "
                          "(ask @userinfobot) so that only you can approve drafts")
    if cfg.discord.approval and secrets.telegram is None:
        raise ConfigError(f"{home.config}: discord.approval needs Telegram for the approvals; set "
                          "TWIN_TELEGRAM_TOKEN or turn discord.approval off")
    stop = stop or asyncio.Event()
    clock = clock or (lambda: datetime.now(timezone.utc))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests), or not supported
            pass
    home.ensure()
    store = Store.open(home.db)
    drafter = Drafter(home.db, parts or default_parts(home, cfg), cfg.drafting, clock)
    relay = Relay(store, drafter, NoOwner(), relay_settings(cfg), clock, replies=reply_gate(home, cfg))
    app = scheduler = None
    discord_task = None
    try:
        if secrets.telegram:
            from telegram.error import InvalidToken

            from bot.telegram_relay import TelegramRelay, build_application, start

            app = build_application(secrets.telegram, cfg.telegram)
            TelegramRelay(app, relay, cfg.telegram,
                          status=lambda: status_text(relay.ledger, relay.drafter.backend_name, relay.drafter.adapter,
                                                     clock()),
                          privacy=lambda: privacy_text(home, cfg), config_path=home.config)
            try:
                await start(app)
            except InvalidToken:  # its message quotes the token: never show it
                raise ConfigError("TWIN_TELEGRAM_TOKEN was refused by Telegram; copy the token again from "
                                  "@BotFather (/mybots → API Token)") from None
            log.info("telegram polling started")
        if secrets.discord and cfg.discord.users:
            from functools import partial

            from bot.discord_relay import keep_running, make_client

            # A fresh client after each failure, with backoff; it ends only for a refused token (ConfigError).
            discord_task = asyncio.create_task(keep_running(partial(
                make_client, cfg.discord, cfg.owner.name, store, drafter,
                relay.approve if cfg.discord.approval else None, clock=clock), secrets.discord))
            log.info("discord client started")
        elif secrets.discord:
            log.warning("TWIN_DISCORD_TOKEN is set but discord.users is empty: the Discord bot stays off")
        scheduler = jobs.start(relay, cfg.telegram, cfg.learn, relay.owner.notify, learn_command(home))
        await relay.recover()
        asyncio.create_task(_warm(drafter))
        if on_ready is not None:
            on_ready(relay)
        waiters = [asyncio.create_task(stop.wait())] + ([discord_task] if discord_task else [])
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if discord_task in done:
            discord_task.result()  # raises keep_running's ConfigError: a refused token or refused intents
    finally:
        log.info("stopping")
        if app is not None:
            from bot.telegram_relay import stop as stop_telegram

            await stop_telegram(app)
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        if discord_task is not None:
            discord_task.cancel()
            await asyncio.gather(discord_task, return_exceptions=True)
        await relay.close()
        await drafter.close()
        store.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


async def _warm(drafter: Drafter) -> None:
    try:
        await drafter.warm_up()
    except Exception as e:  # the first draft reports it to the owner; the relay keeps running
        log.warning("drafting backend not ready: %s", type(e).__name__)


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
    cfg = ctx.config
    if not ctx.home.db.exists():
        ctx.home.ensure()
    click.echo("twin run: relay starting (Ctrl-C to stop)", err=True)
    asyncio.run(run_relay(ctx.home, cfg, Secrets.from_env()))
    click.echo("twin run: stopped", err=True)
