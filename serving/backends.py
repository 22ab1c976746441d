"""Model backends for drafting: the interface that the vLLM backend (serving.vllm_backend) and the in-process
one (serving.local_backend) both satisfy, and the checks they share; serving.backend_factory picks one.

Both take rendered token ids (twin.prompts) and return the completions' texts; `tokenizer` is the base model's,
which drafting renders prompts with. Exercised by `twin draft` and `twin chat` (`--backend auto|vllm|local`).

    twin draft --contact "Tomas Berg" --backend local "are we still on for saturday?"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from twin.errors import ConfigError
from twin.models import DEFAULT_NAME, EMBEDDED_SPEC
from twin.prompts import FORMAT_NAME, FORMAT_VERSIONS

BASE_NAME = "base"  # the base model's served name in vLLM (serving.vllm_server.ServeConfig)


@runtime_checkable
class Backend(Protocol):
    """Completes rendered prompts. `name` is "vllm" or "local"; `adapter=None` means the base model."""

    name: str
    tokenizer: Any

    def complete(
        self, prompt_ids: Sequence[int], *, n: int, max_new_tokens: int, temperature: float, top_p: float,
        seed: int | None, adapter: str | None, until: Any = None,
    ) -> list[str]:
        """`n` completions of the prompt, each up to the end of the owner's turn (the stop token left out).

        `until` (serving.candidates.Until, optional): a backend may stop a completion once `until.settled` says
        its candidate is fixed, and return only completions 0..k-1 once `until.enough` holds for them; it
        never changes which candidates drafting keeps. The vLLM backend ignores it."""
        ...

    def close(self) -> None: ...


def check_adapter(name: str, meta: dict, base: str | None) -> None:
    """Refuse an adapter trained on another prompt format or (when both are known) another base model.

    >>> check_adapter("mira-v1", {"prompt_format": {"name": "twin-chat", "version": 1}, "base_model": "/m"}, "/m")
    """
    fmt = meta.get("prompt_format") or {}
    if fmt and (fmt.get("name") != FORMAT_NAME or fmt.get("version") not in FORMAT_VERSIONS):
        raise ConfigError(f"adapter {name}: trained on prompt format {fmt.get('name')} v{fmt.get('version')}, "
                          f"this twin drafts with {FORMAT_NAME} v{max(FORMAT_VERSIONS)}; retrain it with `twin train`")
    trained_on = meta.get("base_model")
    if trained_on and base and not same_base(trained_on, base):
        raise ConfigError(f"adapter {name}: trained on base {trained_on}, but this backend runs {base}; "
                          "draft with an adapter of this base, or start the backend with the adapter's base")


def uses_memory(meta: dict | None) -> bool:
    """Whether drafts for an adapter carry memory: it was trained on format v2 (or there is none: the base).

    >>> uses_memory(None), uses_memory({"prompt_format": {"name": "twin-chat", "version": 1}})
    (True, False)
    """
    return meta is None or (meta.get("prompt_format") or {}).get("version", 1) >= 2


def same_base(a: str | None, b: str | None) -> bool:
    """Whether two base-model specs name the same model (None or "" is the embedded default)."""
    return _canonical(a or EMBEDDED_SPEC) == _canonical(b or EMBEDDED_SPEC)


def _canonical(spec: str) -> str:
    """One spelling per base: the embedded one by its spec, a local directory by its resolved path."""
    if spec in ("", DEFAULT_NAME):
        return EMBEDDED_SPEC
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec
