"""The terminal front ends of serving: `twin draft`, `twin chat` and `twin serve`.

Each receives its parts (the backend, opened by the composition root in twin/cli/parts.py) and hands the work
to drafting or to the vLLM launcher; nothing here decides what a draft is.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from serving.backends import same_base
from serving.drafting import Candidates, DraftingParts, DraftRequest, draft
from serving.personas import measure, summary_line
from twin import adapters
from twin.config import Config, DraftingConfig
from twin.models import EMBEDDED_SPEC, resolve_base_model
from twin.paths import Home
from twin.store import Store, StoredMessage


def _now() -> datetime:
    return datetime.now(timezone.utc)


def draft_once(db: Path, drafting: DraftingConfig, contact: str, n: int | None, incoming: Sequence[str],
               open_parts: Callable[[], DraftingParts]) -> Candidates:
    """`twin draft`: candidates for the contact's new messages, from the stored conversation. `open_parts` opens
    the backend (called once the contact is found: loading a model takes a while)."""
    with Store.open(db) as store:
        chat = store.find_chat(contact)
        parts = open_parts()
        try:
            request = DraftRequest.from_config(drafting, chat.key, incoming, n=n,
                                               adapter=parts.adapter)
            return draft(store, parts.backend, request, parts.settings, _now())
        finally:
            parts.backend.close()


def chat_loop(db: Path, drafting: DraftingConfig, contact: str, n: int | None,
              open_parts: Callable[[], DraftingParts], read: Callable[[str], str], write: Callable[[str], None]) -> int:
    """`twin chat`: you write as the contact, the twin answers with candidates; pick one (1-n), type your own
    reply, or press Enter to skip. The conversation lives in memory only; nothing is stored or sent.
    Returns the number of exchanges."""
    with Store.open(db) as store:
        chat = store.find_chat(contact)
        key = chat.key
        history = store.chat_messages(key)
        parts = open_parts()
        backend, adapter, settings = parts.backend, parts.adapter, parts.settings
        write(f"talking as {chat.title or contact} to the twin ({adapter or 'base model'}, {backend.name}); "
              f"you: {summary_line(measure(history))}")
        write("write the contact's message; then 1-n picks a candidate, text is your own reply, Enter skips; "
              "Ctrl-D ends")
        session: list[StoredMessage] = []
        exchanges = 0
        try:
            while True:
                try:
                    incoming = read("contact> ")
                except EOFError:
                    break
                if not incoming.strip():
                    continue
                request = DraftRequest.from_config(drafting, key, [incoming], n=n, adapter=adapter,
                                                   session=tuple(session))
                now = _now()
                result = draft(store, backend, request, settings, now)
                for i, c in enumerate(result.candidates, 1):
                    write(f"  [{i}] " + "\n      ".join(c.messages))
                write(f"  ({result.latency_ms:.0f} ms)")
                try:
                    choice = read("you> ").strip()
                except EOFError:
                    break
                session.append(StoredMessage(f"chat-{exchanges}-in", "contact", chat.title, False, now, incoming,
                                             "text", False, None))
                reply = result.candidates[int(choice) - 1].text if choice.isdigit() and \
                    1 <= int(choice) <= len(result.candidates) else choice
                for j, line in enumerate(filter(None, reply.splitlines())):
                    session.append(StoredMessage(f"chat-{exchanges}-out-{j}", "owner", None, True, _now(), line,
                                                 "text", False, None))
                exchanges += 1
        finally:
            backend.close()
    return exchanges


def serve(home: Home, cfg: Config, extra_args: Sequence[str], wait_s: float, echo: Callable[[str], None]) -> int:
    """`twin serve`: start vLLM with every adapter under its versioned name, wait until healthy, run until
    stopped. Returns vLLM's exit status."""
    from serving.vllm_server import adapter_rank, build_command, find_python, start, stop, wait_healthy

    found = adapters.list_adapters(home.adapters)
    spec = cfg.serve.base_model or (found[-1].meta.get("base_model") if found else None) or EMBEDDED_SPEC
    base = resolve_base_model(spec, home.models)
    served = [(a.name, a.path, adapter_rank(a.path)) for a in found if same_base(a.meta.get("base_model"), spec)]
    scfg = cfg.serve.model_copy(update={"base_model": str(base)})
    python = scfg.python or find_python()
    if not _has_vllm(python):
        echo(f"vLLM is not installed for {python}. On a GPU host: `pip install vllm` in its own virtual environment "
             "and set TWIN_VLLM_PYTHON to its python; on a CPU: run scripts/setup-vllm. The command would be:")
        echo(" ".join(build_command(scfg.model_copy(update={"python": python}), served, extra_args)))
        return 1
    # SIGTERM (systemd, docker stop) must end vLLM too, also while it is still starting: vLLM runs in its own
    # process group, so only the `finally` below reaches it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    proc = start(scfg.model_copy(update={"python": python}), served, extra_args,
                 api_key=os.environ.get("TWIN_VLLM_API_KEY"))
    try:
        waited = wait_healthy(scfg.url, wait_s, proc)
        echo(f"vLLM serving {len(served)} adapters ({', '.join(n for n, _, _ in served) or 'none'}) on base "
             f"'{scfg.served_model_name}' at {scfg.url}/v1 (ready in {waited:.0f} s); Ctrl-C stops it")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)


def _has_vllm(python: str) -> bool:
    import subprocess

    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
