"""The Discord side of `twin run` restarts itself (bot/discord_relay.keep_running) and never ends the Telegram side:
restarts with capped exponential backoff on any Discord failure, a ConfigError on a bad token or refused intents.

Two seams: fake clients from a factory (what start() raises is scripted, sleeps are recorded), and `twin run`'s
composition root (twin/cli/relay.py run_relay) with the real discord.py client pointed at 127.0.0.1: a closed port (the
DNS-failure / outage case: aiohttp's ClientConnectorError at login) or a loopback server answering like Discord
to a revoked token (401 on GET /users/@me). Telegram is the fake Bot API server, as in tests/test_telegram_relay.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import discord
import discord.http
import pytest

import bot.discord_relay
from bot.discord_relay import Backoff, keep_running, next_delay
from twin.cli.relay import Secrets, run_relay as run
from fake_telegram import TOKEN
from helpers import QuickBackend
from relay_harness import Clock, Harness, is_card
from twin.config import DiscordConfig, OwnerConfig
from twin.errors import ConfigError

FAST = Backoff(first_s=0.01, max_s=0.04, healthy_s=60)


# -- the delay -------------------------------------------------------------------------------------------------

def test_delay_doubles_from_the_first_up_to_the_cap_and_resets_after_a_healthy_run():
    b = Backoff(first_s=1, max_s=300, healthy_s=600)
    delays, delay = [], 0.0
    for ran in (0.5, 2, 3, 1, 0, 0, 0, 0, 0, 0):
        delay = next_delay(delay, ran, b)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert next_delay(300, 599, b) == 300  # not yet healthy
    assert next_delay(300, 600, b) == 1  # ran fine for ten minutes: start over


# -- keep_running with scripted clients ------------------------------------------------------------------------

class ScriptedClient:
    """What `start` does is scripted: raise the given error, or run until cancelled (None)."""

    def __init__(self, error: BaseException | None, events: list[str]):
        self.error, self.events = error, events
        self.running = asyncio.Event()

    async def start(self, token: str) -> None:
        self.events.append(f"start {token}")
        if self.error is not None:
            raise self.error
        self.running.set()
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.events.append("close")


class Factory:
    def __init__(self, *errors: BaseException | None):
        self.errors = list(errors)
        self.events: list[str] = []
        self.clients: list[ScriptedClient] = []

    def __call__(self) -> ScriptedClient:
        self.clients.append(ScriptedClient(self.errors.pop(0), self.events))
        return self.clients[-1]


class Sleeps:
    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_failures_restart_a_fresh_client_with_backoff_until_one_runs(caplog):
    caplog.set_level(logging.INFO, logger="bot")
    make = Factory(OSError("Cannot connect to host discord.com:443 ssl:default [Name or service not known]"),
                   discord.GatewayNotFound(), None)
    sleeps = Sleeps()
    task = asyncio.create_task(keep_running(make, "tok", FAST, sleep=sleeps))
    await asyncio.wait_for(_until(lambda: len(make.clients) == 3 and make.clients[2].running.is_set()), 5)
    assert not task.done()
    assert sleeps.delays == [0.01, 0.02]
    assert make.events == ["start tok", "close", "start tok", "close", "start tok"]  # each failed client is closed

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert make.events[-1] == "close"  # the running one too, on the way out
    restarts = [r for r in caplog.records if "restart" in r.getMessage()]
    assert [r.levelno for r in restarts] == [logging.WARNING, logging.WARNING]
    assert "OSError" in restarts[0].getMessage() and "GatewayNotFound" in restarts[1].getMessage()
    assert "discord.com" not in caplog.text and "Name or service" not in caplog.text  # the type, never the text


async def test_server_errors_and_closed_gateways_are_restarted_too():
    class Response:  # what discord.HTTPException reads from aiohttp's response
        status, reason = 503, "Service Unavailable"

    closed = discord.ConnectionClosed(None, shard_id=None, code=4000)  # "Unknown error: try reconnecting"
    make = Factory(discord.DiscordServerError(Response(), "upstream connect error"), closed, RuntimeError("bug"),
                   None)
    sleeps = Sleeps()
    task = asyncio.create_task(keep_running(make, "tok", FAST, sleep=sleeps))
    await asyncio.wait_for(_until(lambda: len(make.clients) == 4 and make.clients[3].running.is_set()), 5)
    assert sleeps.delays == [0.01, 0.02, 0.04]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("error, says", [
    (discord.LoginFailure("Improper token has been passed."), "TWIN_DISCORD_TOKEN was refused"),
    (discord.PrivilegedIntentsRequired(None), "privileged intent"),
    # Discord's gateway close codes that must not be reconnected (Gateway docs, "Gateway Close Event Codes").
    (discord.ConnectionClosed(None, shard_id=None, code=4004), "TWIN_DISCORD_TOKEN was refused"),
    (discord.ConnectionClosed(None, shard_id=None, code=4013), "4013"),
])
async def test_a_bad_token_or_refused_intents_end_it_with_a_config_error(error, says):
    make = Factory(OSError("down"), error, None)
    sleeps = Sleeps()
    with pytest.raises(ConfigError, match=says) as e:
        await asyncio.wait_for(keep_running(make, "secret-token", FAST, sleep=sleeps), 5)
    assert "secret-token" not in str(e.value)
    assert sleeps.delays == [0.01] and len(make.clients) == 2
    assert make.events[-1] == "close"


async def test_a_config_error_from_the_factory_is_not_retried():
    def make():
        raise ConfigError("[discord]: ... set owner.name in twin.toml")

    with pytest.raises(ConfigError, match="owner.name"):
        await asyncio.wait_for(keep_running(make, "tok", FAST, sleep=Sleeps()), 5)


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.005)


# -- through `twin run` ----------------------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DiscordToo(Harness):
    """The harness's `twin run`, with TWIN_DISCORD_TOKEN set and one allowed Discord user."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = self.cfg.model_copy(update={"discord": DiscordConfig(users={"310000000000000001": "Tomas Berg"}),
                                               "owner": OwnerConfig(name="Mira")})

    def start(self) -> asyncio.Task:
        from bot.drafter import DraftingParts
        from serving.drafting import DraftSettings

        ready = asyncio.Event()

        def on_ready(relay):
            self.relay = relay
            ready.set()

        parts = lambda: DraftingParts(self.backend, None, DraftSettings(owner_name="Mira"))  # noqa: E731
        self.task = asyncio.create_task(run(self.home, self.cfg, Secrets(telegram=TOKEN, discord="discord-token"),
                                            parts=parts, stop=self.stop, clock=self.clock, on_ready=on_ready))
        self.ready = ready
        return self.task


async def test_discord_down_at_boot_restarts_while_telegram_keeps_running(fake, home, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port()}/api/v10")
    monkeypatch.setattr(bot.discord_relay, "BACKOFF", FAST)
    h = DiscordToo(fake, home, QuickBackend(), Clock())
    task = h.start()
    try:
        await asyncio.wait_for(h.ready.wait(), 10)

        def restarts() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "bot.discord_relay" and "restart" in r.getMessage()]

        await asyncio.wait_for(_until(lambda: len(restarts()) >= 3), 10)
        assert all("ClientConnectorError" in r.getMessage() for r in restarts())
        assert not task.done()  # `twin run` goes on

        await h.connect()  # Telegram still polls and answers
        h.contact("are we still on for saturday?")
        await h.wait(is_card)
        assert not task.done()
    finally:
        h.stop.set()
        await asyncio.wait_for(task, 10)  # a clean stop, Discord still retrying


class RefusesTheToken(BaseHTTPRequestHandler):
    """Discord's answer to a revoked bot token: 401 on GET /users/@me (API reference, "Authentication")."""

    def do_GET(self):
        body = json.dumps({"message": "401: Unauthorized", "code": 0}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


async def test_a_refused_discord_token_ends_twin_run_with_a_config_error(fake, home, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusesTheToken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{server.server_port}/api/v10")
        h = DiscordToo(fake, home, QuickBackend(), Clock())
        with pytest.raises(ConfigError, match="TWIN_DISCORD_TOKEN was refused by Discord") as e:
            await asyncio.wait_for(h.start(), 10)
        assert "discord-token" not in str(e.value)
    finally:
        server.shutdown()
        server.server_close()
