"""How many candidates to ask the model for, from the share of candidates drafting has been able to keep.

Drafting drops unusable and near-duplicate candidates (serving.drafting), so it asks for more than it wants.
A fixed factor (2: six sequences for three candidates) wastes decoding when an adapter's candidates are
nearly all usable, and retries when they are not. `Acceptance` keeps, per adapter, a decayed count of the
candidates seen and kept, and asks for enough that the expected number kept covers the need:
ceil(need / rate), never fewer than the need nor more than `most` (the configured factor times the need). The
prior is one kept of two seen, so a fresh process asks twice the need, as the fixed factor did.

    >>> a = Acceptance()
    >>> a.ask("mira-v1", need=3, most=6)
    6
    >>> for _ in range(10): a.record("mira-v1", kept=4, seen=4)
    >>> a.ask("mira-v1", need=3, most=6), a.ask("other-v1", need=3, most=6)
    (4, 6)
"""

from __future__ import annotations

import math
import threading

PRIOR_KEPT, PRIOR_SEEN = 1.0, 2.0


class Acceptance:
    """The share of candidates kept, per adapter (None: the base model); `decay` forgets old drafts
    (0.9 per attempt: about the last ten attempts count)."""

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self._counts: dict[str | None, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def rate(self, adapter: str | None) -> float:
        """The expected share of candidates kept: (kept + 1) / (seen + 2) over the decayed counts."""
        kept, seen = self._counts.get(adapter, (0.0, 0.0))
        return (kept + PRIOR_KEPT) / (seen + PRIOR_SEEN)

    def ask(self, adapter: str | None, need: int, most: int) -> int:
        """Candidates to ask for when `need` more are wanted: ceil(need / rate), within [need, most]."""
        return max(need, min(most, math.ceil(need / self.rate(adapter) - 1e-9)))

    def record(self, adapter: str | None, kept: int, seen: int) -> None:
        """One attempt's outcome: `kept` of the `seen` candidates were usable."""
        with self._lock:
            k, s = self._counts.get(adapter, (0.0, 0.0))
            self._counts[adapter] = (k * self.decay + kept, s * self.decay + seen)
