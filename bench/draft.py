"""Drafting benchmark: draft latency on the in-process backend against today's path, on a vLLM server, and vLLM's
concurrency gain.

Both backends get the same adapter and the same drafts: conversations from the most recent sessions of the
sample export's personal chats, each cut just after a contact's burst that the owner answered (what a held-out
sample looks like at drafting time), drafted by `serving.drafting.draft` with n candidates and the same seeds.
The in-process backend runs first and is closed before vLLM starts, so the two never share the CPU. Then, on
vLLM, the same 8 prompts (`--concurrency`) are completed one after another and all at once from threads
(`VLLMBackend.complete`, n candidates each), with the adapter and with the base model: vLLM batches concurrent
requests, the in-process backend cannot. Each prompt is sent once untimed before these runs, so both find it
in vLLM's prefix cache and the ratio shows what batching does to generation. It prints the tables and the
ratios: vLLM/local draft latency, concurrent/sequential throughput. No message text is printed.

The in-process backend is timed against the path it replaced (`--baseline`, on by default): transformers'
`generate` with `num_return_sequences` (a prefill per sequence) through the unmerged adapter, asking a fixed
twice the candidates wanted. Both run on the same loaded model, draft by draft alternately (which goes first
alternates too), so a busy machine slows both alike; each draft's wall and CPU time are reported, and the
ratios are from the same run.

    .venv/bin/python bench/draft.py                      # builds a home: sample export, a 2-step adapter
    .venv/bin/python bench/draft.py --drafts 20 --n 3 --max-tokens 64
    .venv/bin/python bench/draft.py --home ~/twin --adapter mira-v3   # an existing home and adapter
    .venv/bin/python bench/draft.py --local-only --drafts 10          # in-process, against today's path
    .venv/bin/python bench/draft.py --home H --local-only --no-baseline --drafts 40 --seeds 3   # steadier p50
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "examples" / "sample_export" / "result.json"
NOW = datetime.now(timezone.utc)


@dataclass(frozen=True)
class Case:
    """One draft: a chat and its conversation up to (and including) the contact's burst."""

    key: object  # twin.store.ChatKey
    session: tuple  # StoredMessage, oldest first


def run_twin(home: Path, *args: str) -> str:
    env = {**os.environ, "TWIN_HOME": ""}
    proc = subprocess.run([sys.executable, "-m", "twin.cli", "--home", str(home), *args], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        sys.exit(f"twin {args[0]} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def build_home(home: Path) -> str:
    """A home with the sample export and an adapter trained for two steps; returns the adapter's name."""
    (home / "twin.toml").write_text("[training]\nlr = 2e-3\ngrad_accum = 1\nmax_tokens = 512\n", encoding="utf-8")
    run_twin(home, "ingest", str(SAMPLE))
    started = time.perf_counter()
    adapter = Path(run_twin(home, "train", "--max-steps", "2").strip().splitlines()[-1])
    print(f"trained {adapter.name} in {time.perf_counter() - started:.0f} s (base converted on first use)",
          file=sys.stderr)
    return adapter.name


def cases(db: Path, count: int) -> list[Case]:
    """`count` cut points, round-robin over the personal chats, newest sessions first."""
    from twin.sessions import DEFAULT_GAP_SECONDS, session_starts
    from twin.store import Store

    per_chat: list[list[Case]] = []
    with Store.open(db) as store:
        gap = int(store.get_meta("session_gap") or DEFAULT_GAP_SECONDS)
        for chat in store.chats():
            if chat.type != "personal":
                continue
            key = chat.key
            msgs = [m for m in store.chat_messages(key) if m.kind == "text" and m.text.strip()]
            starts = session_starts([int(m.time.timestamp()) for m in msgs], gap) + [len(msgs)]
            found = []
            for a, b in reversed(list(zip(starts, starts[1:]))):
                session = msgs[a:b]
                cut = next((i for i in range(1, len(session)) if session[i].from_owner
                            and not session[i - 1].from_owner), None)
                if cut is not None:
                    found.append(Case(key, tuple(session[:cut])))
            per_chat.append(found)
    out = [c for group in zip(*per_chat) for c in group] if per_chat else []
    if len(out) < count:
        sys.exit(f"only {len(out)} conversations to draft in {db}; ask for fewer with --drafts")
    return out[:count]


def time_drafts(store, backend, todo: list[Case], args, adapter: str) -> list[tuple[float, int]]:
    """(latency ms, attempts) of each draft but the first, an untimed warm-up (adapter load, compilation) on a
    conversation of its own, so that no timed prompt is in vLLM's prefix cache yet."""
    from serving.drafting import DraftSettings

    settings = DraftSettings()
    return [(ms, attempts) for ms, _, attempts, _ in (one_draft(store, backend, c, args, adapter, settings, 1000 + i)
                                                      for i, c in enumerate(todo))][1:]


def one_draft(store, backend, case: Case, args, adapter: str, settings, seed: int) -> tuple[float, float, int, int]:
    """(wall ms, CPU ms of this process, attempts, candidates) of one draft (NoDraft: all tries, none)."""
    from serving.drafting import DraftRequest, NoDraft, draft

    request = DraftRequest(case.key, (), n=args.n, adapter=adapter, max_new_tokens=args.max_tokens,
                           session=case.session, seed=seed)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        result = draft(store, backend, request, settings, NOW)
        attempts, kept = result.attempts, len(result.candidates)
    except NoDraft:
        attempts, kept = settings.retries + 1, 0
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000, attempts, kept


class TodayPath:
    """The in-process path as it was before the shared prefill (the baseline): `twin.generation.generate`
    (transformers' `generate`, `num_return_sequences` copies of the prompt) through the unmerged adapter, on
    the same loaded backend."""

    name = "local-today"

    def __init__(self, backend):
        self.backend, self.tokenizer = backend, backend.tokenizer

    def complete(self, prompt_ids, *, n, max_new_tokens, temperature, top_p, seed, adapter, until=None):
        from twin.generation import Sampling, generate

        b = self.backend
        sampling = Sampling(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            seed=0 if seed is None else seed, batch_size=1)
        with b._lock:
            b._select(adapter)
            b._unmerge()
            b._peft.set_adapter(adapter)
            [texts] = generate(b._peft, self.tokenizer, [list(prompt_ids)], sampling)
        return texts

    def close(self) -> None:
        pass


def versus_today(store, backend, todo: list[Case], args, adapter: str) -> dict[str, list[tuple]]:
    """Each draft on today's path and on the backend, alternately (the first an untimed warm-up of both)."""
    from serving.drafting import DraftSettings
    from serving.oversampling import Acceptance

    class Fixed(Acceptance):
        def ask(self, adapter, need, most):  # today: always `oversample` times the need
            return most

    paths = {"today": (TodayPath(backend), DraftSettings(acceptance=Fixed())), "new": (backend, DraftSettings())}
    out: dict[str, list[tuple]] = {"today": [], "new": []}
    for i, case in enumerate(todo):
        order = list(paths) if i % 2 else list(paths)[::-1]
        for name in order:
            path, settings = paths[name]
            res = one_draft(store, path, case, args, adapter, settings, 1000 + i)
            if i:
                out[name].append(res)
        if i:
            print(f"draft {i}: " + ", ".join(f"{k} {out[k][-1][0]:.0f} ms wall {out[k][-1][1]:.0f} ms CPU "
                                              f"{out[k][-1][3]} kept" for k in paths), file=sys.stderr)
    return out


def report_today(res: dict[str, list[tuple]]) -> None:
    print(f"\n{'in-process':<12} {'drafts':>6} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'CPU p50':>8} "
          f"{'tries':>6} {'usable':>7}")
    for name, rows in res.items():
        wall, cpu = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{name:<12} {len(rows):>6} {pct(wall, 50):>8.0f} {pct(wall, 95):>8.0f} {statistics.fmean(wall):>8.0f} "
              f"{pct(cpu, 50):>8.0f} {statistics.fmean(r[2] for r in rows):>6.2f} "
              f"{statistics.fmean(r[3] for r in rows):>7.2f}")
    t, n = ([r[0] for r in res[k]] for k in ("today", "new"))
    print(f"today/new: p50 {pct(t, 50) / pct(n, 50):.2f}x, p95 {pct(t, 95) / pct(n, 95):.2f}x, "
          f"per draft (median of ratios) {statistics.median(a / b for a, b in zip(t, n)):.2f}x")


def prompts(store, tokenizer, todo: list[Case], k: int) -> list[list[int]]:
    from serving.drafting import DraftRequest, DraftSettings, build_prompt

    return [build_prompt(store, DraftRequest(c.key, (), session=c.session), tokenizer, DraftSettings(), NOW).ids
            for c in (todo * k)[:k]]


def throughput(backend, ids: list[list[int]], args, adapter: str | None, workers: int) -> tuple[float, int]:
    """(wall seconds, generated tokens) for completing every prompt with `workers` threads (`adapter` None: the
    base model)."""
    def one(i: int) -> int:
        texts = backend.complete(ids[i], n=args.n, max_new_tokens=args.max_tokens, temperature=0.8, top_p=0.95,
                                 seed=2000 + i, adapter=adapter)
        return sum(len(backend.tokenizer.encode(t, add_special_tokens=False)) for t in texts)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        tokens = sum(pool.map(one, range(len(ids))))
    return time.perf_counter() - started, tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, linearly interpolated: `pct([1, 2, 3, 4], 50)` -> 2.5."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)


def vllm_runs(store, home, adapter, base, todo: list[Case], args) -> dict:
    """Start a vLLM server with the adapter, time the drafts and the two throughput runs, stop the server."""
    from serving.backend_factory import BackendSettings, open_backend
    from serving.vllm_server import adapter_rank, find_python, start, stop, wait_healthy
    from twin.config import ServeConfig

    cfg = ServeConfig(base_model=str(base), port=free_port(), kv_cache_gib=args.kv_cache_gib, max_model_len=2048,
                      python=find_python())
    log_path = Path(tempfile.gettempdir()) / f"twin-bench-vllm-{cfg.port}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = start(cfg, [(adapter.name, adapter.path, adapter_rank(adapter.path))], log_file=log)
    try:
        try:
            wait_healthy(cfg.url, 900, proc)
        except Exception:
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        out = {"ready_s": time.perf_counter() - started, "adapter": adapter.name}
        backend = open_backend("vllm", BackendSettings(models_dir=home.models, adapters_dir=home.adapters,
                                                       adapter=adapter.name, vllm_url=cfg.url, timeout_s=600))
        try:
            out["drafts"] = time_drafts(store, backend, todo, args, adapter.name)
            ids = prompts(store, backend.tokenizer, todo[1:], args.concurrency)
            for model in (adapter.name, None):
                # Every prompt once first, untimed: both runs then find it in the prefix cache alike and
                # measure what batching changes, the generation.
                for i in ids:
                    backend.complete(i, n=1, max_new_tokens=1, temperature=0, top_p=1.0, seed=0, adapter=model)
                out[model or "base"] = (throughput(backend, ids, args, model, 1),
                                        throughput(backend, ids, args, model, args.concurrency))
        finally:
            backend.close()
    finally:
        stop(proc)
    log_path.unlink(missing_ok=True)
    return out


def report(latency: dict[str, list[tuple[float, int]]], vllm: dict, args) -> None:
    print(f"\nvLLM server ready in {vllm['ready_s']:.0f} s\n")
    print(f"{'draft latency':<16} {'drafts':>6} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9} {'tries/draft':>11}")
    for name, res in latency.items():
        ms = [m for m, _ in res]
        print(f"{name:<16} {len(ms):>6} {pct(ms, 50):>9.0f} {pct(ms, 95):>9.0f} {statistics.fmean(ms):>9.0f} "
              f"{statistics.fmean(a for _, a in res):>11.2f}")
    k = args.concurrency
    print(f"\n{f'vLLM, {k} requests, n={args.n}':<28} {'wall s':>6} {'req/s':>6} {'tokens':>7} {'tokens/s':>9}")
    for model in (vllm["adapter"], "base"):
        for mode, (wall, tokens) in zip(("sequential", f"{k} concurrent"), vllm[model]):
            print(f"{model + ', ' + mode:<28} {wall:>6.1f} {k / wall:>6.2f} {tokens:>7} {tokens / wall:>9.1f}")
    print()
    if "local" in latency:
        local, served = ([m for m, _ in latency[b]] for b in ("local", "vllm"))
        print(f"vLLM/local draft latency: p50 {pct(served, 50) / pct(local, 50):.2f}x, "
              f"p95 {pct(served, 95) / pct(local, 95):.2f}x")
    for model in (vllm["adapter"], "base"):
        (seq_s, seq_tok), (conc_s, conc_tok) = vllm[model]
        print(f"concurrent/sequential throughput, {model}: {seq_s / conc_s:.2f}x requests/s, "
              f"{(conc_tok / conc_s) / (seq_tok / seq_s):.2f}x tokens/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drafts", type=int, default=10, help="drafts timed per backend (default 10)")
    p.add_argument("--n", type=int, default=3, help="candidates per draft (default 3)")
    p.add_argument("--max-tokens", type=int, default=96, help="new tokens per candidate (default 96, as drafting)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in the vLLM throughput runs (default 8)")
    p.add_argument("--home", type=Path, help="an existing twin home with an adapter (default: build one in a temp dir)")
    p.add_argument("--adapter", help="the adapter to draft with (default: the newest)")
    p.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM's KV cache on CPU (default 1)")
    p.add_argument("--skip-local", action="store_true", help="time vLLM only")
    p.add_argument("--local-only", action="store_true", help="time the in-process backend only (no vLLM)")
    p.add_argument("--no-baseline", action="store_true", help="skip today's path (the in-process baseline)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, the cores)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the in-process model's projections, as [drafting] precision (default auto)")
    p.add_argument("--seeds", type=int, default=1,
                   help="times each conversation is drafted, with another seed each time (default 1): what a draft "
                        "costs depends on how long its sampled candidates run, so more seeds steady the percentiles")
    args = p.parse_args()
    if min(args.drafts, args.n, args.max_tokens, args.concurrency, args.seeds) < 1:
        p.error("--drafts, --n, --max-tokens, --concurrency and --seeds must be at least 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from serving.backend_factory import BackendSettings, open_backend
    from twin.adapters import find_adapter
    from twin.models import resolve_base_model
    from twin.paths import Home
    from twin.store import Store

    with tempfile.TemporaryDirectory(prefix="twin-bench-draft-") as tmp:
        home = Home(args.home.expanduser().resolve() if args.home else Path(tmp))
        if not args.home:
            build_home(home.root)
        adapter = find_adapter(home.adapters, args.adapter)
        base = resolve_base_model(adapter.meta.get("base_model"), home.models)
        todo = cases(home.db, args.drafts + 1)  # the first one warms up
        todo = todo[:1] + todo[1:] * args.seeds  # each draft's seed is 1000 + its place here
        print(f"adapter {adapter.name} on {Path(str(base)).name}; {args.drafts} drafts x {args.seeds} seeds, "
              f"n={args.n}, max {args.max_tokens} new tokens; {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}; "
              f"CPU pressure before: {cpu_pressure()}")
        latency: dict[str, list[tuple[float, int]]] = {}
        with Store.open(home.db) as store:
            if not args.skip_local:  # first, and closed before vLLM starts: the two never share the CPU
                backend = open_backend("local", BackendSettings(models_dir=home.models, adapters_dir=home.adapters,
                                                                adapter=adapter.name, precision=args.precision))
                try:
                    if args.no_baseline:
                        latency["local"] = time_drafts(store, backend, todo, args, adapter.name)
                    else:
                        today = versus_today(store, backend, todo, args, adapter.name)
                        latency["local"] = [(r[0], r[2]) for r in today["new"]]
                finally:
                    backend.close()
            if args.local_only:
                vllm = None
            else:
                vllm = vllm_runs(store, home, adapter, base, todo, args)
                latency["vllm"] = vllm["drafts"]
    if not args.no_baseline and not args.skip_local:
        report_today(today)
    elif not args.skip_local:
        ms = [m for m, _ in latency["local"]]
        print(f"local: {len(ms)} drafts, p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, "
              f"{statistics.fmean(a for _, a in latency['local']):.2f} tries per draft")
    if vllm:
        report(latency, vllm, args)
    print(f"CPU pressure after: {cpu_pressure()}")


def cpu_pressure() -> str:
    """Linux PSI: the share of the last 60 s in which some task waited for a CPU (other load skews timings)."""
    try:
        return Path("/proc/pressure/cpu").read_text().split()[2].split("=")[1] + "%"
    except (OSError, IndexError):
        return "n/a"


if __name__ == "__main__":
    main()
