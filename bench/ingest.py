"""Ingest benchmark: `twin ingest` of a synthetic 1M-message Telegram export against a plain `json.load`.

Writes a Telegram Desktop full export (one huge personal chat, many small chats of every type, service
messages, stickers, photos, text with entities) to a temp dir, streaming it so the writer stays small, then
times two child processes on it: `python -m twin.cli --home TMP ingest FILE` and `json.load(FILE)`, and
prints wall time, messages/s, peak RSS of each and the ratios.

    .venv/bin/python bench/ingest.py                    # 1M messages, ~290 MB
    .venv/bin/python bench/ingest.py --messages 50000   # a quick run
    .venv/bin/python bench/ingest.py --parser-only      # time training.exports.telegram_desktop alone
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWNER_ID = 5550001
WORDS = ("ok so the train is late again see you at eight maybe tomorrow then did you get my note "
         "haha sure thing no worries sounds good call me when you are free").split()
EMOJI = ("👍", "😂", "🙈", "❤", "🤗")
# (telegram chat type, share of the messages): one huge chat, the rest spread over small chats
CHAT_MIX = [("personal_chat", 0.55), ("private_supergroup", 0.15), ("personal_chat", 0.12),
            ("private_group", 0.08), ("saved_messages", 0.03), ("bot_chat", 0.02), ("public_channel", 0.02),
            ("public_supergroup", 0.03)]
SMALL_CHATS_PER_TYPE = 40


def chat_plan(total: int) -> list[tuple[str, int]]:
    """(type, message count) per chat; the first chat takes 55% of all messages, the others are small."""
    (big_type, big_share), *small = CHAT_MIX
    chats = [(big_type, round(total * big_share))]
    for chat_type, share in small:
        count = max(1, round(total * share))
        pieces = 1 if chat_type == "saved_messages" else SMALL_CHATS_PER_TYPE
        chats += [(chat_type, count // pieces + (i < count % pieces)) for i in range(pieces)]
    chats[0] = (chats[0][0], chats[0][1] + total - sum(n for _, n in chats))
    return chats


def message(rng: random.Random, msg_id: int, when: int, sender: int) -> dict:
    """One message as tdesktop writes it: a realistic mix of plain text, entities, stickers and media."""
    m = {"id": msg_id, "type": "message", "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)),
         "date_unixtime": str(when), "from": f"Person {sender}", "from_id": f"user{sender}"}
    roll = rng.random()
    words = " ".join(rng.choices(WORDS, k=rng.randint(2, 14)))
    if roll < 0.03:
        return {"id": msg_id, "type": "service", "date": m["date"], "date_unixtime": m["date_unixtime"],
                "actor": m["from"], "actor_id": m["from_id"], "action": "pin_message", "message_id": msg_id - 1,
                "text": "", "text_entities": []}
    if roll < 0.10:
        m |= {"file": "(File not included. Change data exporting settings to download.)",
              "media_type": "sticker", "sticker_emoji": rng.choice(EMOJI), "width": 512, "height": 512}
        words = ""
    elif roll < 0.15:
        m |= {"photo": "(File not included. Change data exporting settings to download.)",
              "width": 1280, "height": 960}
    elif roll < 0.25:
        m["reply_to_message_id"] = msg_id - 1
    if roll > 0.85:
        link = {"type": "link", "text": "https://example.org/" + rng.choice(WORDS)}
        m["text"] = [words + " ", link]
        m["text_entities"] = [{"type": "plain", "text": words + " "}, link]
    else:
        m["text"] = words
        m["text_entities"] = [{"type": "plain", "text": words}] if words else []
    return m


def write_chat(f, rng: random.Random, chat_id: int, chat_type: str, count: int, first_id: int) -> int:
    """Write one chat object with `count` messages; return the next free message id."""
    head = {"id": chat_id, "type": chat_type} if chat_type == "saved_messages" else {
        "name": f"Chat {chat_id}", "type": chat_type, "id": chat_id}
    f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "messages": [\n')
    when = 1_600_000_000 + rng.randint(0, 10_000_000)
    for i in range(count):
        when += rng.choice((5, 20, 60, 600, 7200))
        # A personal chat's id is the peer's user id; a group has a handful of members besides the owner.
        peer = chat_id if chat_type == "personal_chat" else chat_id * 10 + rng.randrange(6)
        sender = OWNER_ID if chat_type == "saved_messages" or rng.random() < 0.45 else peer
        f.write(("  " if i == 0 else ",\n  ") + json.dumps(message(rng, first_id + i, when, sender),
                                                            ensure_ascii=False))
    f.write("\n ]}")
    return first_id + count


def write_export(path: Path, total: int, seed: int = 7) -> None:
    """Stream a full export with `total` messages to `path`, one message at a time."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"about": "Here is the data you requested.",\n "personal_information": ')
        f.write(json.dumps({"user_id": OWNER_ID, "first_name": "Mira", "last_name": "Testova"}))
        f.write(',\n "chats": {"about": "This page lists all chats from this export.", "list": [\n')
        next_id = 1
        for n, (chat_type, count) in enumerate(chat_plan(total)):
            chat_id = OWNER_ID if chat_type == "saved_messages" else 7_000_000 + n
            f.write("" if n == 0 else ",\n")
            next_id = write_chat(f, rng, chat_id, chat_type, count, next_id)
        f.write("\n]},\n \"left_chats\": {\"about\": \"\", \"list\": []}}\n")


def run(cmd: list[str]) -> tuple[float, float, float, int]:
    """Run a child process; return its wall and CPU seconds, peak RSS in MiB and exit code.

    CPU time is printed too because wall time on a shared machine measures the neighbours as well.
    """
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
    child.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - start, cpu, usage.ru_maxrss / 1024, child.returncode


def count_parsed(path: str) -> None:
    """The child for --parser-only: run the Telegram parser over the file and print what it yielded."""
    from collections import Counter

    sys.path.insert(0, str(ROOT))
    from training.exports import ParseOptions
    from training.exports.telegram_desktop import parse

    print(dict(Counter(type(r).__name__ for r in parse(Path(path), ParseOptions()))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="where to write the export (default: a temp dir, removed after)")
    ap.add_argument("--parser-only", action="store_true", help="time the parser, not the whole `twin ingest`")
    ap.add_argument("--count-parsed", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.count_parsed:
        return count_parsed(args.count_parsed)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        export = Path(tmp) / "result.json"
        start = time.perf_counter()
        write_export(export, args.messages)
        print(f"wrote {args.messages:,} messages, {export.stat().st_size / 2**20:.0f} MiB "
              f"in {time.perf_counter() - start:.1f}s")
        py = sys.executable
        ingest = ([py, __file__, "--count-parsed", str(export)] if args.parser_only else
                  [py, "-m", "twin.cli", "--home", str(Path(tmp) / "home"), "ingest", str(export)])
        baseline = [py, "-c", "import json, sys; json.load(open(sys.argv[1], encoding='utf-8'))", str(export)]
        results = {}
        for name, cmd in (("parser" if args.parser_only else "twin ingest", ingest), ("json.load", baseline)):
            wall, cpu, rss, code = results[name] = run(cmd)
            status = "" if code == 0 else f"  (exit {code})"
            print(f"{name:12} {wall:7.1f}s wall {cpu:7.1f}s cpu  {args.messages / wall:10,.0f} msg/s  "
                  f"peak RSS {rss:7.0f} MiB{status}")
        (ours, our_cpu, our_rss, _), (base, base_cpu, base_rss, _) = results.values()
        print(f"ratio        wall {ours / base:.2f}x json.load, cpu {our_cpu / base_cpu:.2f}x, "
              f"peak RSS {our_rss / base_rss:.3f}x")


if __name__ == "__main__":
    os.chdir(ROOT)  # so that `-m twin.cli` and the parser import from this checkout
    main()
