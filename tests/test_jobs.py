"""The scheduled jobs of `twin run` (bot/jobs.py): the digest's numbers, the heartbeat `twin health` reads, the
learn schedule's checks, and the scheduler running them in the relay's own loop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from click.testing import CliRunner

from bot import drafts as D
from bot import jobs
from bot.drafter import Drafter, DraftingParts
from bot.drafts import ChatRef, Draft, utc
from bot.ports import RelaySettings
from bot.relay import Relay
from helpers import QuickBackend
from serving.drafting import DraftSettings
from twin.cli import main
from twin.config import Config, DraftingConfig, LearnConfig, TelegramConfig
from twin.errors import ConfigError
from twin.store import Store

T0 = utc(1_800_000_000)


class Notes:
    def __init__(self):
        self.notes: list[str] = []

    async def show_card(self, draft, note=""):
        return None

    async def update_card(self, draft, note=""):
        return None

    async def notify(self, text):
        self.notes.append(text)


def make_relay(tmp_path, clock=lambda: T0) -> Relay:
    store = Store.open(tmp_path / "twin.db")
    drafter = Drafter(tmp_path / "twin.db", lambda: DraftingParts(QuickBackend(), None, DraftSettings()),
                      DraftingConfig())
    return Relay(store, drafter, Notes(), RelaySettings(), clock)


def add(relay: Relay, i: int, *moves, latency: float = 1000.0) -> None:
    d = relay.ledger.create(Draft(id=None, chat=ChatRef("telegram", "BC1", str(i)), contact_id=f"user{i}",
                                  answers=(str(i),), candidates=("ok", "no"), created_at=T0, updated_at=T0,
                                  expires_at=T0 + timedelta(hours=23), latency_ms=latency), T0)
    for move in moves:
        relay.ledger.apply(d.id, move, "test", T0)


def test_digest_counts_what_happened(tmp_path):
    relay = make_relay(tmp_path)
    assert jobs.digest(relay, T0 - timedelta(days=1)) == "Today: no drafts."
    send = lambda d: D.sent(D.dispatch(D.approve(d, T0), T0), ("1",), T0)  # noqa: E731
    edit = lambda d: D.sent(D.dispatch(D.submit_edit(d, "ok then", T0), T0), ("2",), T0)  # noqa: E731
    add(relay, 1, send, latency=800)
    add(relay, 2, send, latency=1200)
    add(relay, 3, edit, latency=3000)
    add(relay, 4, lambda d: D.discard(d, T0), latency=500)
    add(relay, 5, latency=900)
    text = jobs.digest(relay, T0 - timedelta(days=1))
    assert text == ("Today: 5 drafts — 2 sent as is, 1 edited, 0 answered by hand, 1 discarded, 0 expired, "
                    "0 failed, 1 pending. Median draft latency 0.9 s.")


async def test_heartbeat_makes_twin_health_pass(tmp_path):
    relay = make_relay(tmp_path, clock=lambda: __import__("datetime").datetime.now(__import__("datetime").timezone.utc))
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    result = runner.invoke(main, [*home, "health"])
    assert result.exit_code != 0 and "no heartbeat" in str(result.exception)
    await jobs.heartbeat(relay)
    result = runner.invoke(main, [*home, "health"])
    assert result.exit_code == 0 and result.output.startswith("healthy")


async def test_scheduler_runs_in_the_loop_and_checks_the_learn_schedule(tmp_path):
    relay = make_relay(tmp_path)
    notes = Notes()
    cfg = Config(telegram=TelegramConfig(digest_hour=21), learn=LearnConfig(schedule="0 4 * * *"))
    scheduler = jobs.start(relay, cfg.telegram, cfg.learn, notes.notify, ["twin", "learn", "--json"])
    try:
        ids = {j.id for j in scheduler.get_jobs()}
        assert ids == {"expire", "retry", "heartbeat", "digest", "learn"}
        for _ in range(100):  # the heartbeat runs at once
            if relay.store.get_meta(jobs.HEARTBEAT_KEY):
                break
            await asyncio.sleep(0.02)
        assert relay.store.get_meta(jobs.HEARTBEAT_KEY) == f"{T0.timestamp():.0f}"
    finally:
        scheduler.shutdown(wait=False)
    with pytest.raises(ConfigError, match="learn.schedule 'every night' is not a crontab line"):
        jobs.start(relay, TelegramConfig(), LearnConfig(schedule="every night"), notes.notify, ["twin"])


async def test_scheduled_learning_waits_for_enough_new_outcomes(tmp_path):
    relay = make_relay(tmp_path)
    add(relay, 1, lambda d: D.discard(d, T0))
    assert jobs.new_outcomes(relay) == 1
    assert await jobs.run_learn(["twin", "learn"], relay, min_outcomes=5) is None  # too few: nothing runs
    assert relay.store.get_meta(jobs.LEARN_KEY) is None
