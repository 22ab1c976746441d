"""Scheduled jobs of `twin run`, on APScheduler 3 in the relay's own event loop.

- expire: every 30 s, pending drafts whose reply window is about to close expire (their buttons stop working);
- retry: every 5 s, approved sends whose backoff is over go out again, and drafting that failed is retried;
- heartbeat: every 30 s, the time is written to twin.db (`twin health` reads it: the container health check);
- digest: once a day at `telegram.digest_hour` (local time), the day's numbers to the owner;
- learn: with `learn.schedule` set (a crontab line), `twin learn` runs when enough new outcomes have accrued,
  and the owner gets the gate's verdict.
The only module that imports apscheduler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot import skips
from bot.relay import Relay
from twin.config import LearnConfig, TelegramConfig
from twin.errors import ConfigError

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "relay_heartbeat"
LEARN_KEY = "learn_last_at"


async def heartbeat(relay: Relay) -> None:
    relay.store.set_meta(HEARTBEAT_KEY, f"{relay.clock().timestamp():.0f}")


def digest(relay: Relay, since: datetime) -> str:
    """The daily digest: drafts made since `since` and what became of them (counts, no text)."""
    skipped = skips.digest_line(relay.store, since)
    rows = relay.ledger.outcomes(since=since)
    if not rows:
        return "Today: no drafts." + (f" {skipped}" if skipped else "")
    kinds = Counter(o.kind for o in rows)
    latencies = [o.latency_ms for o in rows if o.latency_ms is not None]
    median = f"{statistics.median(latencies) / 1000:.1f} s" if latencies else "n/a"
    return (f"Today: {len(rows)} drafts — {kinds['sent']} sent as is, {kinds['edited']} edited, "
            f"{kinds['written']} answered by hand, {kinds['discarded']} discarded, {kinds['expired']} expired, "
            f"{kinds['failed']} failed, {kinds['pending']} pending. Median draft latency {median}."
            + (f" {skipped}" if skipped else ""))


def new_outcomes(relay: Relay) -> int:
    """Settled outcomes since the last `twin learn` run from the scheduler."""
    last = relay.store.get_meta(LEARN_KEY)
    since = datetime.fromtimestamp(float(last), timezone.utc) if last else None
    return sum(o.kind not in ("pending", "failed") for o in relay.ledger.outcomes(since=since))


async def run_learn(command: Sequence[str], relay: Relay, min_outcomes: int) -> str | None:
    """Run `command` (`twin learn --json`, as the composition root spells it) in a child process (training must
    not stall the relay) when enough new outcomes have accrued; the verdict line for the owner."""
    fresh = new_outcomes(relay)
    if fresh < min_outcomes:
        log.info("learn: %d new outcomes, %d needed; skipped", fresh, min_outcomes)
        return None
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    relay.store.set_meta(LEARN_KEY, f"{relay.clock().timestamp():.0f}")
    if proc.returncode != 0:
        line = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return f"Learning from your edits failed: {line[0]}"
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "Learning from your edits finished, but its result could not be read; see `twin adapters`."
    gate = result.get("gate", {})
    verdict = "promoted: drafts now come from it" if gate.get("decision") == "promote" else "kept the current one"
    return f"Learned from {fresh} outcomes: {result.get('adapter', 'a new version')} — {verdict}."


def start(relay: Relay, telegram: TelegramConfig, learning: LearnConfig, notify: Callable[[str], Awaitable[None]],
          learn_command: Sequence[str]) -> AsyncIOScheduler:
    """Start the jobs in the running loop; the caller shuts the scheduler down. `learn_command` runs
    `twin learn --json` (for `learning.schedule`)."""
    # APScheduler logs two INFO lines per job run ("Running job ...", "... executed successfully"): every 5 s
    # for the retry job, burying what matters. Failures still come through (it logs them as errors).
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
    every = dict(trigger="interval", max_instances=1, coalesce=True, misfire_grace_time=30)
    scheduler.add_job(relay.expire_due, seconds=30, id="expire", **every)
    scheduler.add_job(relay.retry_due, seconds=5, id="retry", **every)
    scheduler.add_job(heartbeat, seconds=30, id="heartbeat", args=[relay], next_run_time=datetime.now(timezone.utc),
                      **every)
    if telegram.digest_hour is not None:
        async def send_digest() -> None:
            await notify(digest(relay, relay.clock() - timedelta(days=1)))

        scheduler.add_job(send_digest, CronTrigger(hour=telegram.digest_hour), id="digest", coalesce=True)
    if learning.schedule:
        try:
            trigger = CronTrigger.from_crontab(learning.schedule)
        except ValueError as e:
            raise ConfigError(f"twin.toml: learn.schedule {learning.schedule!r} is not a crontab line ({e}); "
                              "e.g. \"0 4 * * *\" for 04:00 every day") from e

        async def learn() -> None:
            verdict = await run_learn(learn_command, relay, learning.min_outcomes)
            if verdict:
                await notify(verdict)

        scheduler.add_job(learn, trigger, id="learn", max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
