"""Drafting for the bots: `serving.drafting.draft` run off the event loop, one request at a time.

A model call takes from a fraction of a second (vLLM on a GPU) to seconds (the in-process model on a CPU), so
it runs in one worker thread that owns its own connection to twin.db (SQLite connections stay in the thread
that made them; WAL lets it read what the loop's connection committed). One worker, because the in-process
backend is one model and torch already uses every core for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from serving.drafting import Candidates, DraftingParts, DraftRequest, draft
from twin.config import DraftingConfig
from twin.store import ChatKey, Store, StoredMessage

log = logging.getLogger(__name__)


class Drafter:
    """`await drafter.draft(key, incoming)`: candidates for a chat, from the stored conversation.

    `parts` is called once, in the worker thread, to open the backend (loading a model can take a while and
    must not block the loop); `clock` gives "now" (tests pass a fixed one).
    """

    def __init__(self, db: Path, parts: Callable[[], DraftingParts], drafting: DraftingConfig,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self._db = db
        self._parts_factory = parts
        self._cfg = drafting
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drafter")
        self._store: Store | None = None
        self._parts: DraftingParts | None = None

    @property
    def backend_name(self) -> str:
        return self._parts.backend.name if self._parts else "not loaded"

    @property
    def adapter(self) -> str | None:
        return self._parts.adapter if self._parts else None

    def _ready(self) -> tuple[Store, DraftingParts]:
        if self._store is None:
            self._store = Store.open(self._db)
        if self._parts is None:
            self._parts = self._parts_factory()
        return self._store, self._parts

    def _draft(self, request: DraftRequest) -> Candidates:
        store, parts = self._ready()
        if parts.pick is not None:
            chosen = parts.pick()
            if chosen != parts.adapter:
                log.info("drafting adapter now %s (was %s)", chosen or "base", parts.adapter or "base")
                self._parts = parts = DraftingParts(parts.backend, chosen, parts.settings, parts.pick)
        return draft(store, parts.backend, replace(request, adapter=parts.adapter), parts.settings, self._clock())

    async def warm_up(self) -> None:
        """Open the store and the backend now rather than on the first message."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._ready)

    async def draft(self, key: ChatKey, incoming: Sequence[str] = (), *, sender: str | None = None,
                    session: Sequence[StoredMessage] | None = None, n: int | None = None,
                    seed: int | None = None, notes: bool = True) -> Candidates:
        """Candidates replying to the chat's current conversation (plus `incoming`, not yet stored); `notes`
        False keeps the owner's notes on the contact out of the prompt. Raises what drafting raises (NoDraft,
        ServingUnavailable, NotFound)."""
        request = DraftRequest.from_config(self._cfg, key, incoming, n=n, seed=seed, sender=sender,
                                          session=None if session is None else tuple(session), notes=notes)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._draft, request)

    async def close(self) -> None:
        def shut() -> None:
            if self._parts is not None:
                self._parts.backend.close()
            if self._store is not None:
                self._store.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)
