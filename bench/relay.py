"""Benchmark: what the relay adds on top of drafting, from a contact's message to the card on the owner's screen.

Runs `twin run`'s composition root against the fake Bot API server on loopback (tests/fake_telegram.py) with a
fake model that takes a fixed time per call, so the numbers are the relay's own: Telegram update parsing,
SQLite writes, the drafting thread hand-off, card rendering and the Bot API round trips. The baseline, measured
in the same run, is the drafting call alone (bot.drafter.Drafter.draft on the same store).

    .venv/bin/python bench/relay.py --bursts 60 --model-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import telegram_updates as U  # noqa: E402
from bot.drafter import Drafter, DraftingParts  # noqa: E402
from fake_telegram import FakeBotAPI  # noqa: E402
from helpers import QuickBackend  # noqa: E402
from relay_harness import BC, Clock, Harness  # noqa: E402
from serving.drafting import DraftSettings  # noqa: E402
from twin.config import DraftingConfig  # noqa: E402
from twin.paths import Home  # noqa: E402
from twin.report import percentile  # noqa: E402
from twin.store import ChatKey  # noqa: E402


async def relay_latencies(home: Home, bursts: int, model_s: float) -> list[float]:
    latencies = []
    with FakeBotAPI() as fake:
        async with Harness(fake, home, QuickBackend(delay=model_s), Clock(), ) as h:
            await h.connect()
            for i in range(bursts):
                cid = 5550300000 + i % 10
                before = len([c for c in fake.calls if c.method == "sendMessage"])
                started = time.perf_counter()
                h.push(U.business_message(BC, cid, cid, f"question {i}", 10_000 + i, first_name="C"))
                await fake.wait_async("sendMessage", before + 1, timeout=30)
                latencies.append(time.perf_counter() - started)
                d = await h.card()
                h.tap(d.id, "discard")
                await fake.wait_async("answerCallbackQuery", i + 1, timeout=30)
    return latencies


async def drafting_latencies(home: Home, bursts: int, model_s: float) -> list[float]:
    drafter = Drafter(home.db, lambda: DraftingParts(QuickBackend(delay=model_s), None, DraftSettings()),
                      DraftingConfig(n=2))
    latencies = []
    for i in range(bursts):
        started = time.perf_counter()
        await drafter.draft(ChatKey("telegram", str(5550300000 + i % 10)), [f"question {i}"])
        latencies.append(time.perf_counter() - started)
    await drafter.close()
    return latencies


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bursts", type=int, default=60)
    ap.add_argument("--model-ms", type=float, default=50.0, help="time the fake model takes per call")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home").ensure()
        # The harness's settle delay (0.15 s) is subtracted: it is a wait by design, not overhead.
        relay = await relay_latencies(home, args.bursts, args.model_ms / 1000)
        base = await drafting_latencies(home, args.bursts, args.model_ms / 1000)
    settle = 0.15
    relay_net = [r - settle for r in relay]
    p50r, p95r = percentile(relay_net, 50), percentile(relay_net, 95)
    p50b, p95b = percentile(base, 50), percentile(base, 95)
    print(f"bursts {args.bursts}, fake model {args.model_ms:.0f} ms per call")
    print(f"drafting alone (baseline): p50 {p50b * 1000:.0f} ms, p95 {p95b * 1000:.0f} ms")
    print(f"message -> card (minus the {settle * 1000:.0f} ms settle delay): p50 {p50r * 1000:.0f} ms, "
          f"p95 {p95r * 1000:.0f} ms")
    print(f"relay overhead at p50: {(p50r - p50b) * 1000:.0f} ms ({p50r / p50b:.2f}x drafting alone); "
          f"mean {statistics.mean(relay_net) * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
