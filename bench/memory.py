"""Memory's cost (twin/memory.py, twin/store_search.py): indexing a 1M-message store and retrieval per draft.

Builds a synthetic store (messages of Zipf-distributed words from a 40k-word vocabulary, 3-16 words each, over
chats of very different sizes, a few rare names per chat) twice in the same run: once with the full-text index
kept by its triggers (what twin does) and once without it (the baseline: the same inserts into `messages` alone),
then rebuilds the index from scratch (what the migration does for an existing database) and reports its size.
Retrieval: `recall` for drafts in random chats (two contact messages, one naming something said in that chat
before), against the baseline of what every draft reads from the store anyway (the chat's history).

    python bench/memory.py                       # 1,000,000 messages
    python bench/memory.py --messages 200000 --drafts 200
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.chat import Chat, ChatKey, Message, utc  # noqa: E402
from twin.memory import MemoryOptions, recall  # noqa: E402
from twin.store import Store  # noqa: E402

T0 = 1_600_000_000
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "ven", "dor", "ish", "al", "bo", "ne", "tri", "gu", "fa", "yel"]


def vocabulary(rng: random.Random, n: int) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def corpus(n: int, seed: int = 0):
    """(chats, messages, names per chat): chat sizes follow a Zipf law; every message is 3-16 Zipf words."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, 40_000)
    weights = [1 / (i + 1) for i in range(len(vocab))]
    cum = list(__import__("itertools").accumulate(weights))
    chats = max(50, n // 1000)
    size = [1 / (i + 1) ** 0.9 for i in range(chats)]
    total = sum(size)
    counts = [max(20, int(n * s / total)) for s in size]
    names = {c: [f"zq{c}x{k}" for k in range(5)] for c in range(chats)}
    out: list[Message] = []
    for c, count in enumerate(counts):
        t = T0 + rng.randint(0, 86_400)
        for i in range(count):
            if len(out) >= n:
                break
            t += rng.randint(20, 40_000)
            words = rng.choices(vocab, cum_weights=cum, k=rng.randint(3, 16))
            if rng.random() < 0.01:
                words.insert(rng.randrange(len(words)), rng.choice(names[c]))
            sender = "owner" if rng.random() < 0.45 else f"p{c}"
            out.append(Message("telegram", str(c), str(i), sender, None, utc(t), " ".join(words)))
    return chats, out, names, vocab, cum


def fill(path: Path, chats: int, messages: list[Message], index: bool, batch: int = 50_000) -> float:
    """Seconds to store the messages (in batches, one transaction each, as ingest does)."""
    store = Store.open(path)
    if not index:  # the baseline: twin's schema without the memory index
        for trigger in ("messages_fts_ai", "messages_fts_ad", "messages_fts_au"):
            store.conn.execute(f"DROP TRIGGER {trigger}")
    with store.transaction():
        store.set_owner("telegram", "owner", "Owner")
        for c in range(chats):
            store.upsert_chat(Chat("telegram", str(c), "personal"))
    started = time.perf_counter()
    for i in range(0, len(messages), batch):
        with store.transaction():
            store.insert_messages(messages[i:i + batch])
    seconds = time.perf_counter() - started
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file sizes below are then the whole stores
    store.close()
    return seconds


def index_bytes(store: Store) -> int:
    try:
        return store.conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'messages_fts%'").fetchone()[0]
    except Exception:  # SQLite built without dbstat: the shadow tables' page counts are not available
        return -1


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--drafts", type=int, default=300)
    ap.add_argument("--dir", type=Path, default=None, help="where the two stores go (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="time retrieval only, on the stores --dir already has")
    args = ap.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="twin-bench-memory-"))
    if args.reuse:
        vocab = vocabulary(random.Random(0), 40_000)  # corpus() draws its vocabulary first from the same seed
        cum = list(__import__("itertools").accumulate(1 / (i + 1) for i in range(len(vocab))))
    else:
        t = time.perf_counter()
        chats, messages, names, vocab, cum = corpus(args.messages)
        mb = sum(len(m.text.encode()) for m in messages) / 2**20
        print(f"corpus: {len(messages):,} messages in {chats} chats, {mb:.0f} MiB of text "
              f"(generated in {time.perf_counter() - t:.1f}s)")
        plain = fill(tmp / "plain.db", chats, messages, index=False)
        indexed = fill(tmp / "indexed.db", chats, messages, index=True)
        print(f"store {len(messages):,} messages: without the index {plain:.1f}s, with it {indexed:.1f}s "
              f"(indexing adds {indexed - plain:.1f}s; {indexed / plain:.2f}x the baseline)")
        del messages
    with Store.open(tmp / "indexed.db") as store:
        if not args.reuse:
            started = time.perf_counter()
            with store.transaction():
                store.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
            rebuild = time.perf_counter() - started
            size = index_bytes(store)
            print(f"rebuild the index of {store.indexed_documents():,} messages (the migration): {rebuild:.1f}s; "
                  f"index {size / 2**20:.0f} MiB" if size >= 0 else "index size: dbstat unavailable")
            for name in ("plain.db", "indexed.db"):
                print(f"  {name}: {os.path.getsize(tmp / name) / 2**20:.0f} MiB")

        rng = random.Random(1)
        by_chat = dict(store.conn.execute("SELECT chat_id, count(*) FROM messages GROUP BY chat_id").fetchall())
        names = {int(c): [f"zq{c}x{k}" for k in range(5)] for c in by_chat}
        keys = [c for c in by_chat]
        weights = [by_chat[c] for c in keys]  # a draft is as likely in a chat as its share of the messages
        opts = MemoryOptions()
        base_ms, recall_ms, recall_cpu, found = [], [], [], 0
        for _ in range(args.drafts):
            c = rng.choices(keys, weights=weights)[0]
            key = ChatKey("telegram", c)
            # Two messages like the store's own (Zipf words), one naming something said in that chat before.
            texts = [" ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(3, 16))) for _ in range(2)]
            texts[0] += " " + rng.choice(names[int(c)])
            now = utc(T0 + 10**9)
            started = time.perf_counter()
            store.chat_messages(key, last=200)  # what a draft reads anyway: the chat's recent history
            base_ms.append((time.perf_counter() - started) * 1000)
            started, cpu = time.perf_counter(), time.process_time()
            got = recall(store, key, texts, now, "Owner", opts)
            recall_ms.append((time.perf_counter() - started) * 1000)
            recall_cpu.append((time.process_time() - cpu) * 1000)
            found += bool(got)
        b50, b95, r50, r95 = pct(base_ms, .5), pct(base_ms, .95), pct(recall_ms, .5), pct(recall_ms, .95)
        print(f"per draft ({args.drafts} drafts, {found} with memory): baseline history read p50 {b50:.1f} ms "
              f"p95 {b95:.1f} ms; recall p50 {r50:.1f} ms p95 {r95:.1f} ms "
              f"({r50 / b50:.2f}x / {r95 / b95:.2f}x the baseline); mean {statistics.mean(recall_ms):.1f} ms; "
              f"recall CPU time p50 {pct(recall_cpu, .5):.1f} ms p95 {pct(recall_cpu, .95):.1f} ms")


if __name__ == "__main__":
    main()
