"""The in-process backend: the base model and its LoRA adapters in this process, with transformers and peft.

The embedded default when no vLLM server runs (DESIGN.md): it loads the base once, each adapter the first time
a draft asks for it (`PeftModel.from_pretrained`, then `load_adapter`), and switches between them without
reloading the base. The adapter in use is merged into the base weights (`merge_adapter`: a draft then costs
what the base alone costs, no LoRA matmuls beside each projection) and unmerged before another one is merged or
the base drafts alone; only fp32 weights are merged, since merging and unmerging bf16 weights loses bits at
every switch (in bf16, on CUDA, the adapter runs beside the weights as peft does). Where the projections run
on bf16 copies (`[drafting] precision`, by default on a CPU with native bf16) nothing is merged either: the
base is packed once and the adapter runs beside it in fp32 (twin.decoding.merges). At most `max_adapters`
stay loaded; the one used longest ago goes first. Generation is `twin.decoding.sample_many`: the prompt's
prefill once for all candidates, each stopped at the end of the owner's turn. torch, transformers and peft are
imported when a backend is made, never before.

    twin draft --contact "Tomas Berg" --backend local "are we still on for saturday?"
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.backends import check_adapter
from twin.adapters import find_adapter
from twin.models import load_base
from twin.decoding import PackedLinears, Precision, cpu_precision, merges, sample_many
from twin.generation import stop_ids

log = logging.getLogger(__name__)


class LocalBackend:
    """A base model loaded from `base` (a model directory or a hub id) and the adapters under `adapters_dir`.

    `base_spec` is how twin.json names this base ("embedded:SmolLM2-135M-Instruct", a path, a hub id; None:
    `base` itself), used to refuse an adapter trained on another base.
    """

    name = "local"

    def __init__(self, base: Path | str, adapters_dir: Path | None = None, base_spec: str | None = None,
                 device: str | None = None, max_adapters: int = 4, precision: Precision = "auto"):
        import torch

        started = time.monotonic()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # `base` is already resolved (a model directory or a hub id): nothing to convert, models_dir unused.
        model, self.tokenizer = load_base(str(base), Path(base).parent, device=self.device)
        self.base = model.to(self.device).eval()
        self.base_spec = base_spec or str(base)
        self.adapters_dir = adapters_dir
        self.max_adapters = max_adapters
        self._peft: Any = None
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._merged: str | None = None  # the adapter merged into the base weights now
        self.precision = cpu_precision(precision)  # of the packed projections (twin.decoding.PackedLinears)
        self._merges = merges(self.base, self.precision)  # fp32 weights, exact enough to undo; not for bf16 packs
        self._stops = stop_ids(self.tokenizer)
        self._packs: tuple[Any, PackedLinears] | None = None  # (which weights, their packed copies)
        self._packs_ok = PackedLinears.usable(self.base, self.precision)
        self._lock = threading.Lock()
        log.info("local backend: base loaded on %s in %.1f s", self.device, time.monotonic() - started)

    @property
    def adapters(self) -> list[str]:
        """The adapters loaded now, used longest ago first."""
        return list(self._loaded)

    def complete(
        self, prompt_ids: Sequence[int], *, n: int, max_new_tokens: int, temperature: float, top_p: float,
        seed: int | None, adapter: str | None, until: Any = None,
    ) -> list[str]:
        started = time.monotonic()
        text = lambda row: self.tokenizer.decode(row, skip_special_tokens=True)
        stops = {} if until is None else {"settled": lambda row: until.settled(text(row)),
                                          "enough": lambda rows: until.enough([text(r) for r in rows])}
        with self._lock:
            model, scope = self._select(adapter)
            with scope, self._packed(model, adapter):
                rows = sample_many(model, prompt_ids, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, seed=0 if seed is None else seed, stops=self._stops, **stops)
        texts = [text(row) for row in rows]
        log.info("local completion adapter=%s n=%d returned=%d tokens=%d prompt_tokens=%d in %.0f ms",
                 adapter or "base", n, len(rows), sum(map(len, rows)), len(prompt_ids),
                 (time.monotonic() - started) * 1000)
        return texts

    def _select(self, adapter: str | None) -> tuple[Any, contextlib.AbstractContextManager]:
        """The model to generate with and the scope to do it in: the base with `adapter` merged into its
        weights, or (None) the base with every adapter off."""
        if adapter is not None:
            if adapter in self._loaded:
                self._loaded.move_to_end(adapter)
            else:
                self._load(adapter)
        if self._merged != adapter:
            self._unmerge()
            if adapter is not None:
                self._peft.set_adapter(adapter)
                if self._merges:
                    self._peft.merge_adapter()
                    self._merged = adapter
        if self._peft is None:
            return self.base, contextlib.nullcontext()
        return self._peft, (contextlib.nullcontext() if adapter else self._peft.disable_adapter())

    def _packed(self, model: Any, adapter: str | None) -> contextlib.AbstractContextManager:
        """The weights as they are now (the base, or `adapter` merged into it), packed for oneDNN's CPU kernels
        (twin.decoding.PackedLinears: a decode step in about two thirds of the time; in bf16 where the CPU has
        it natively, `[drafting] precision`); packed again only when they change. Nothing on a GPU, for bf16
        weights, or without oneDNN."""
        if not self._packs_ok:
            return contextlib.nullcontext()
        key = self._merged  # what is merged into the weights (None: the base's own)
        if self._packs is None or self._packs[0] != key:
            self._packs = None  # the old copies go before the new ones are made
            started = time.monotonic()
            self._packs = (key, PackedLinears(model, self.precision, sampled_head=True))
            log.info("packed %d projections for oneDNN (%s) in %.1f s", len(self._packs[1].packed), self.precision,
                     time.monotonic() - started)
        return self._packs[1].active(beside=None if self._merged == adapter else adapter)

    def _unmerge(self) -> None:
        """Take the merged adapter's weights out of the base again (exact up to float rounding)."""
        if self._merged is not None:
            self._peft.unmerge_adapter()
            self._merged = None

    def _load(self, adapter: str) -> None:
        from peft import PeftModel

        self._unmerge()  # loading (and unloading) works on the plain base weights
        found = find_adapter(self.adapters_dir, adapter)
        path = found.path
        check_adapter(adapter, found.meta, self.base_spec)
        started = time.monotonic()
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.base, str(path), adapter_name=adapter, is_trainable=False)
        else:
            self._peft.load_adapter(str(path), adapter_name=adapter, is_trainable=False)
        self._peft.to(self.device).eval()
        self._loaded[adapter] = None
        while len(self._loaded) > self.max_adapters:
            old, _ = self._loaded.popitem(last=False)
            self._peft.set_adapter(adapter)  # peft refuses to delete the active adapter
            self._peft.delete_adapter(old)
            log.info("unloaded adapter %s (more than %d loaded)", old, self.max_adapters)
        log.info("loaded adapter %s in %.1f s", adapter, time.monotonic() - started)

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self._peft = self.base = self._packs = None
        self._loaded.clear()
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
