"""The composition root of `twin run`: store, drafter, relay, Telegram, Discord and the jobs in one asyncio loop.

Everything else receives what it needs as arguments; only this module knows how the parts fit. It runs until
SIGINT or SIGTERM (or `stop` is set), then stops the parts in reverse order: polling first (no new updates),
the jobs, Discord, the relay's timers and tasks, the drafter's thread, the store.

    TWIN_TELEGRAM_TOKEN=123:abc twin run
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta, timezone

from bot.drafter import Drafter, DraftingParts
from bot.ports import RelaySettings, SendError
from bot.relay import Relay
from twin.config import Config
from twin.errors import ConfigError
from twin.paths import Home
from twin.store import Store

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
        from serving.console import DraftOptions, drafting_parts, pick_adapter

        def pick() -> str | None:
            adapter = pick_adapter(home, cfg.drafting.adapter)
            return adapter.name if adapter else None

        backend, adapter, settings = drafting_parts(home, cfg, DraftOptions(contact=""))
        return DraftingParts(backend, adapter, settings, pick)

    return parts


class _Nobody:
    """The relay's owner side until Telegram is wired in (Discord-only runs): notes go to the log."""

    async def show_card(self, draft, note=""):
        raise SendError("no Telegram configured for approval cards", retryable=False)

    async def update_card(self, draft, note=""):
        return None

    async def retire_card(self, card):
        return None

    async def notify(self, text: str) -> None:
        log.info("note for the owner (no Telegram configured): %d chars", len(text))


def relay_settings(cfg: Config) -> RelaySettings:
    t = cfg.telegram
    return RelaySettings(settle_s=t.settle_seconds, pace_s=t.pace_seconds,
                         expiry_margin=timedelta(minutes=t.expiry_margin_minutes), send_retries=t.send_retries)


def status_text(relay: Relay, now: datetime) -> str:
    """/status: the connection, the model, pending drafts and today's numbers."""
    conns = relay.ledger.connections()
    if conns:
        c = conns[0]
        conn = ("connected" if c.enabled else "disconnected") + (", may reply" if c.can_reply else ", may NOT reply")
    else:
        conn = "not connected yet (Telegram: Settings → Telegram Business → Chatbots)"
    today = relay.ledger.counts(datetime.combine(now.date(), dtime(), timezone.utc))
    made = sum(today.values())
    sent = today.get("sent", 0) + today.get("edited_sent", 0)
    return "\n".join([
        f"Connection: {conn}",
        f"Model: {relay.drafter.backend_name}, adapter {relay.drafter.adapter or 'base'}",
        f"Drafting: {'paused' if relay.ledger.paused else 'on'}",
        f"Pending drafts: {len(relay.ledger.pending())}",
        f"Today: {made} drafts, {sent} sent ({today.get('edited_sent', 0)} edited), "
        f"{today.get('discarded', 0)} discarded, {today.get('expired', 0)} expired",
    ])


def privacy_text(home: Home, cfg: Config) -> str:
    """/privacy: what is stored, where, and how to delete it. Kept true by tests/test_security.py."""
    backend = {"local": "the model inside twin on this machine",
               "vllm": f"your vLLM server at {cfg.drafting.vllm_url or cfg.serve.url}",
               "auto": f"your vLLM server at {cfg.drafting.vllm_url or cfg.serve.url} if it runs, "
                       "else the model inside twin on this machine"}[cfg.drafting.backend]
    training = ("are also training data (twin train, and twin learn on what you did with each draft), because "
                "telegram.train_on_live is on" if cfg.telegram.train_on_live
                else "are used only as context for drafts, never for training (twin train and twin learn leave "
                     "them out unless you turn on telegram.train_on_live)")
    return "\n".join([
        "What twin stores, all on your own machine:",
        f"• one SQLite file, {home.db} (owner-only permissions): your imported chat exports, the messages of "
        "the chats this bot sees (yours and your contacts'), each draft with what you did with it, and the "
        "business connection's settings;",
        f"• trained adapters under {home.adapters}.",
        f"Your contacts' live messages {training}. Discord conversations with the twin are never used for "
        "training.",
        f"Drafts are written by {backend}. Message text goes nowhere else: only the replies you approve are "
        "sent, to Telegram (or Discord), and for a contact you turned /auto on for, without asking you (you "
        "still see each one).",
        "Logs hold ids, counts and timings, never message text or names.",
        "Delete: /forget <contact> (or `twin forget <contact>`) removes a contact's messages, drafts and notes; "
        f"deleting {home.root} removes everything.",
    ])


async def run(home: Home, cfg: Config, secrets: Secrets, parts: Callable[[], DraftingParts] | None = None,
              stop: asyncio.Event | None = None, clock: Callable[[], datetime] | None = None,
              on_ready: Callable[[Relay], None] | None = None) -> None:
    """Run the relay until `stop` is set or SIGINT/SIGTERM arrives; `on_ready` gets the relay once it runs."""
    from bot import jobs

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
    relay = Relay(store, drafter, _Nobody(), relay_settings(cfg), clock)
    app = scheduler = None
    discord_task = None
    try:
        if secrets.telegram:
            from telegram.error import InvalidToken

            from bot.telegram_relay import TelegramRelay, build_application, start

            app = build_application(secrets.telegram, cfg.telegram)
            TelegramRelay(app, relay, cfg.telegram, status=lambda: status_text(relay, clock()),
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
        scheduler = jobs.start(relay, cfg, home.root, relay.owner.notify)
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
