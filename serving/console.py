"""The terminal front ends of serving: `twin draft`, `twin chat` and `twin serve`.

Each wires the store, the configuration and a backend together and hands the work to drafting or to the vLLM
launcher; nothing here decides what a draft is.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from serving.backend_factory import BackendSettings, open_backend
from serving.backends import same_base
from serving.drafting import Draft, DraftRequest, DraftSettings, draft
from serving.personas import measure, summary_line
from twin import adapters
from twin.config import Config
from twin.errors import NotFound
from twin.models import EMBEDDED_SPEC, resolve_base_model
from twin.paths import Home
from twin.pii import scrub
from twin.store import ChatKey, Store, StoredMessage


@dataclass(frozen=True)
class DraftOptions:
    contact: str
    adapter: str | None = None
    n: int | None = None
    backend: str | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def pick_adapter(home: Home, name: str | None) -> adapters.Adapter | None:
    """The named adapter (`--adapter`, else twin.toml `drafting.adapter`), else the default one (the newest, or
    the one `twin adapters use` / a promoting `twin learn` chose since: twin.adapters), else None (the base)."""
    try:
        return adapters.find_adapter(home.adapters, name)
    except NotFound:
        if name:
            raise
        return None


def vllm_url(cfg: Config) -> str:
    return cfg.drafting.vllm_url or cfg.serve.url


def drafting_parts(home: Home, cfg: Config, opts: DraftOptions):
    """(backend, adapter name or None, settings) for drafting with this configuration."""
    adapter = pick_adapter(home, opts.adapter or cfg.drafting.adapter)
    scrubbed = adapter is not None and adapter.meta.get("dataset_options", {}).get("scrub_pii", True)
    settings = DraftSettings(
        owner_name=cfg.owner.name, notes={k: c.notes for k, c in cfg.contacts.items()},
        scrub=scrub if scrubbed else None,
    )
    backend = open_backend(opts.backend or cfg.drafting.backend, BackendSettings(
        models_dir=home.models, adapters_dir=home.adapters, base_model=cfg.serve.base_model,
        adapter=adapter.name if adapter else None, vllm_url=vllm_url(cfg),
        api_key=os.environ.get("TWIN_VLLM_API_KEY"),
    ))
    return backend, (adapter.name if adapter else None), settings


def draft_once(home: Home, cfg: Config, opts: DraftOptions, incoming: Sequence[str]) -> Draft:
    """`twin draft`: candidates for the contact's new messages, from the stored conversation."""
    with Store.open(home.db) as store:
        chat = store.find_chat(opts.contact)
        backend, adapter, settings = drafting_parts(home, cfg, opts)
        try:
            request = DraftRequest.from_config(cfg.drafting, ChatKey(chat.platform, chat.id), incoming,
                                               n=opts.n, adapter=adapter)
            return draft(store, backend, request, settings, _now())
        finally:
            backend.close()


def chat_loop(home: Home, cfg: Config, opts: DraftOptions, read: Callable[[str], str], write: Callable[[str], None]) -> int:
    """`twin chat`: you write as the contact, the twin answers with candidates; pick one (1-n), type your own
    reply, or press Enter to skip. The conversation lives in memory only; nothing is stored or sent.
    Returns the number of exchanges."""
    with Store.open(home.db) as store:
        chat = store.find_chat(opts.contact)
        key = ChatKey(chat.platform, chat.id)
        history = store.chat_messages(key)
        backend, adapter, settings = drafting_parts(home, cfg, opts)
        write(f"talking as {chat.title or opts.contact} to the twin ({adapter or 'base model'}, {backend.name}); "
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
                request = DraftRequest.from_config(cfg.drafting, key, [incoming], n=opts.n, adapter=adapter,
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
