"""Which backend drafts: the vLLM server over HTTP or the in-process model, opened from where the models are.

`open_backend("auto", settings)` uses the vLLM server when its health check answers within a short timeout,
else the in-process backend (the embedded default: SmolLM2-135M-Instruct, converted under `models/` on first
use). The interface both satisfy is serving.backends.Backend. Exercised by `twin draft` and `twin chat`
(`--backend auto|vllm|local`).

    twin draft --contact "Tomas Berg" --backend local "are we still on for saturday?"
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serving.backends import BASE_NAME, Backend
from serving.local_backend import LocalBackend
from serving.openai_api import OpenAIClient
from serving.vllm_backend import VLLMBackend, load_tokenizer
from twin.adapters import find_adapter
from twin.decoding import Precision
from twin.errors import ConfigError
from twin.models import EMBEDDED_SPEC, resolve_base_model

log = logging.getLogger(__name__)

Kind = Literal["auto", "vllm", "local"]


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
    precision: Precision = "auto"  # the in-process model's, on a CPU (twin.decoding.cpu_precision)


def open_backend(kind: Kind, settings: BackendSettings) -> Backend:
    """The backend of this kind; "auto" is vLLM when it answers its health check in time, else local."""
    if kind not in ("auto", "vllm", "local"):
        raise ConfigError(f"backend {kind!r}: use auto, vllm or local")
    spec = base_spec(settings)
    # "vllm" opens without asking: a server that is down then fails the first request with what to do.
    if kind == "vllm" or (kind == "auto" and vllm_answers(settings.vllm_url, settings.health_timeout_s)):
        client = OpenAIClient(settings.vllm_url, api_key=settings.api_key, timeout=settings.timeout_s,
                              retries=settings.retries)
        return VLLMBackend(client, load_tokenizer(resolve_base_model(spec, settings.models_dir)),
                           base_name=settings.served_base, adapters_dir=settings.adapters_dir)
    return LocalBackend(resolve_base_model(spec, settings.models_dir), settings.adapters_dir,
                        base_spec=spec or EMBEDDED_SPEC, device=settings.device, precision=settings.precision)


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
