"""Model backends for drafting: one interface, a vLLM server over HTTP or the in-process model, picked here.

`open_backend("auto", settings)` uses the vLLM server when its health check answers within a short timeout,
else the in-process backend (the embedded default: SmolLM2-135M-Instruct, converted under `models/` on first use). Both take
rendered token ids (twin.prompts) and return the completions' texts; `tokenizer` is the base model's, which
drafting renders prompts with. Exercised by `twin draft` and `twin chat` (`--backend auto|vllm|local`).

    twin draft --contact "Tomas Berg" --backend local "are we still on for saturday?"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from serving.openai_api import OpenAIClient
from twin.adapters import find_adapter
from twin.errors import ConfigError
from twin.models import DEFAULT_NAME, EMBEDDED_SPEC, resolve_base_model
from twin.prompts import FORMAT_NAME, FORMAT_VERSION

log = logging.getLogger(__name__)

BASE_NAME = "base"  # the base model's served name in vLLM (serving.vllm_server.ServeConfig)

Kind = Literal["auto", "vllm", "local"]


@runtime_checkable
class Backend(Protocol):
    """Completes rendered prompts. `name` is "vllm" or "local"; `adapter=None` means the base model."""

    name: str
    tokenizer: Any

    def complete(
        self, prompt_ids: Sequence[int], *, n: int, max_new_tokens: int, temperature: float, top_p: float,
        seed: int | None, adapter: str | None,
    ) -> list[str]:
        """`n` completions of the prompt, each up to the end of the owner's turn (the stop token left out)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendSettings:
    """Where the models are. `base_model` None: the base the adapter was trained on (its twin.json), else the
    embedded default. `adapter` only picks that base; each request still names its own adapter."""

    models_dir: Path
    adapters_dir: Path | None = None
    base_model: str | None = None
    adapter: str | None = None
    vllm_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    served_base: str = BASE_NAME
    health_timeout_s: float = 1.0
    timeout_s: float = 60.0
    retries: int = 3
    device: str | None = None


def open_backend(kind: Kind, settings: BackendSettings) -> Backend:
    """The backend of this kind; "auto" is vLLM when it answers its health check in time, else local."""
    if kind not in ("auto", "vllm", "local"):
        raise ConfigError(f"backend {kind!r}: use auto, vllm or local")
    spec = base_spec(settings)
    # "vllm" opens without asking: a server that is down then fails the first request with what to do.
    if kind == "vllm" or (kind == "auto" and vllm_answers(settings.vllm_url, settings.health_timeout_s)):
        from serving.vllm_backend import VLLMBackend, load_tokenizer

        client = OpenAIClient(settings.vllm_url, api_key=settings.api_key, timeout=settings.timeout_s,
                              retries=settings.retries)
        return VLLMBackend(client, load_tokenizer(resolve_base_model(spec, settings.models_dir)),
                           base_name=settings.served_base, adapters_dir=settings.adapters_dir)
    from serving.local_backend import LocalBackend

    return LocalBackend(resolve_base_model(spec, settings.models_dir), settings.adapters_dir,
                        base_spec=spec or EMBEDDED_SPEC, device=settings.device)


def vllm_answers(url: str, timeout: float) -> bool:
    """Whether a vLLM server at `url` passes its health check within `timeout` seconds."""
    started = time.monotonic()
    with OpenAIClient(url, timeout=timeout, retries=0) as probe:
        healthy = probe.health()
    log.info("vLLM at %s healthy: %s (%.0f ms)", url, healthy, (time.monotonic() - started) * 1000)
    return healthy


def base_spec(settings: BackendSettings) -> str | None:
    """The base model to run: the configured one, else the named adapter's (twin.json), else None (embedded)."""
    if settings.base_model:
        return settings.base_model
    if settings.adapter and settings.adapters_dir:
        return find_adapter(settings.adapters_dir, settings.adapter).meta.get("base_model")
    return None


def check_adapter(name: str, meta: dict, base: str | None) -> None:
    """Refuse an adapter trained on another prompt format or (when both are known) another base model.

    >>> check_adapter("mira-v1", {"prompt_format": {"name": "twin-chat", "version": 1}, "base_model": "/m"}, "/m")
    """
    fmt = meta.get("prompt_format") or {}
    if fmt and (fmt.get("name"), fmt.get("version")) != (FORMAT_NAME, FORMAT_VERSION):
        raise ConfigError(f"adapter {name}: trained on prompt format {fmt.get('name')} v{fmt.get('version')}, "
                          f"this twin drafts with {FORMAT_NAME} v{FORMAT_VERSION}; retrain it with `twin train`")
    trained_on = meta.get("base_model")
    if trained_on and base and not same_base(trained_on, base):
        raise ConfigError(f"adapter {name}: trained on base {trained_on}, but this backend runs {base}; "
                          "draft with an adapter of this base, or start the backend with the adapter's base")


def same_base(a: str | None, b: str | None) -> bool:
    """Whether two base-model specs name the same model (None or "" is the embedded default)."""
    return _canonical(a or EMBEDDED_SPEC) == _canonical(b or EMBEDDED_SPEC)


def _canonical(spec: str) -> str:
    """One spelling per base: the embedded one by its spec, a local directory by its resolved path."""
    if spec in ("", DEFAULT_NAME):
        return EMBEDDED_SPEC
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec
