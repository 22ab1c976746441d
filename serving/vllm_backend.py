"""The vLLM backend: drafts come from a vLLM server (multi-LoRA) through its OpenAI-compatible completions API.

The prompt goes as token ids, rendered by twin itself, so the server's chat template never touches it. The
adapter is chosen by `model`: the adapter's versioned name, or the base model's served name for no adapter.
An adapter the server does not know is loaded at run time (`/v1/load_lora_adapter`) when its directory is in
the adapters directory, and the request is sent once more. Generation stops at the end of the owner's turn:
the stop strings are the tokenizer's end-of-turn tokens (vLLM also stops at the eos ids of the model's
generation config, which is what ends a turn when it skips special tokens in the text).

    twin serve &
    twin draft --contact "Tomas Berg" --backend vllm "are we still on for saturday?"
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.backends import BASE_NAME, check_adapter
from twin.adapters import find_adapter
from serving.openai_api import OpenAIClient
from twin.errors import NotFound
from twin.generation import stop_ids

log = logging.getLogger(__name__)


def load_tokenizer(where: Path | str) -> Any:
    """The base model's tokenizer (transformers imported here, not at start-up)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(where))


def stop_strings(tokenizer: Any) -> list[str]:
    """The end-of-turn tokens as text: eos and the ChatML / Gemma / Llama 3 end markers the vocabulary has."""
    return [tokenizer.convert_ids_to_tokens(i) for i in stop_ids(tokenizer)]


class VLLMBackend:
    """Drafts from a vLLM server. `base_name` is the base model's served name; `adapters_dir` lets an adapter the
    server has not loaded be loaded at run time (the path must be readable by the server, as on one host)."""

    name = "vllm"

    def __init__(self, client: OpenAIClient, tokenizer: Any, base_name: str = BASE_NAME,
                 adapters_dir: Path | None = None):
        self.client = client
        self.tokenizer = tokenizer
        self.base_name = base_name
        self.adapters_dir = adapters_dir
        self.stop = stop_strings(tokenizer)

    def complete(
        self, prompt_ids: Sequence[int], *, n: int, max_new_tokens: int, temperature: float, top_p: float,
        seed: int | None, adapter: str | None, until: Any = None,
    ) -> list[str]:
        model = adapter or self.base_name  # `until` unused: the server decodes all n

        def send() -> list[str]:
            return self.client.completions(model, list(prompt_ids), n=n, max_tokens=max_new_tokens,
                                           temperature=temperature, top_p=top_p, stop=self.stop, seed=seed)

        try:
            return send()
        except NotFound as e:
            if adapter is None:
                raise NotFound(f"{self.client.base_url} does not serve the base model as {model!r}; "
                               "set its served name (serve.served_model_name) to match") from e
            if self.adapters_dir is None:
                raise NotFound(f"{self.client.base_url} has no adapter {adapter!r}; restart `twin serve` "
                               "to load the newest adapters") from e
            found = find_adapter(self.adapters_dir, adapter)
        path = found.path
        check_adapter(adapter, found.meta, None)
        log.info("adapter %s not on the server; loading it", adapter)
        self.client.load_lora(adapter, str(path.resolve()))
        return send()

    def close(self) -> None:
        self.client.close()
