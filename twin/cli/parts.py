"""What builds drafting's parts from the configuration: the adapter to draft with, the backend, the settings.

The one place that turns twin.toml's [drafting] and [serve] into a backend; `twin draft`, `twin chat` and the
relay's drafter (twin/cli/relay.py) receive what it builds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from serving.backend_factory import BackendSettings, open_backend
from serving.backends import uses_memory
from serving.drafting import DraftingParts, DraftSettings
from twin import adapters
from twin.config import Config
from twin.errors import NotFound
from twin.memory import MemoryOptions
from twin.paths import Home
from twin.pii import scrub


@dataclass(frozen=True)
class DraftOptions:
    contact: str
    adapter: str | None = None
    n: int | None = None
    backend: str | None = None


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


def memory_options(cfg: Config, adapter: adapters.Adapter | None) -> MemoryOptions | None:
    """Memory for drafts: twin.toml [memory], when it is on and the adapter was trained with it (format v2)."""
    m = cfg.memory
    if not m.enabled or m.max_tokens == 0 or not uses_memory(adapter.meta if adapter else None):
        return None
    return MemoryOptions(m.max_tokens, m.scope)


def drafting_parts(home: Home, cfg: Config, opts: DraftOptions) -> DraftingParts:
    """The backend, the adapter to ask for (None: the base model) and the settings, for this configuration."""
    adapter = pick_adapter(home, opts.adapter or cfg.drafting.adapter)
    scrubbed = adapter is not None and adapter.meta.get("dataset_options", {}).get("scrub_pii", True)
    settings = DraftSettings(
        owner_name=cfg.owner.name, notes={k: c.notes for k, c in cfg.contacts.items()},
        scrub=scrub if scrubbed else None, memory=memory_options(cfg, adapter),
    )
    backend = open_backend(opts.backend or cfg.drafting.backend, BackendSettings(
        models_dir=home.models, adapters_dir=home.adapters, base_model=cfg.serve.base_model,
        adapter=adapter.name if adapter else None, vllm_url=vllm_url(cfg),
        api_key=os.environ.get("TWIN_VLLM_API_KEY"), precision=cfg.drafting.precision,
    ))
    return DraftingParts(backend, adapter.name if adapter else None, settings)
