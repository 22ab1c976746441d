"""When no reply is due: the burst signal in a chat's history, a burst's features, and the small predictor.

A *burst* is what a contact wrote in a row: consecutive messages of people other than the owner, in one
session, none more than BURST_GAP after the one before. History says whether the owner replied to it: yes
when the owner's message comes next, no when the contact wrote again later (a new burst) or the conversation
ended (the session gap) first. `twin train` fits a classifier on that signal (training/reply_model.py, with
scikit-learn); this module holds what the relay needs to use it: the same features, and a predictor in plain
numpy loaded from two safe files beside the adapter (`reply_model.json`: parameters, threshold and the contacts'
reply rates; `reply_model.npz`: the coefficients, read with allow_pickle=False), so nothing is unpickled.

Features (`features`): char 2–4-grams of the burst's text (lowercased, each message padded with spaces),
hashed with CRC-32 into N_HASH slots and L2-normalised (a HashingVectorizer of our own, so that the predictor
needs no scikit-learn and its hash never changes under it); and a few dense ones (DENSE): the burst is only
stickers, only emoji, only media; it asks a question; its length; its number of messages; the hour (as a point on
a circle); the contact's reply rate (how often the owner answered this contact's bursts in the training data).

    >>> from twin.chat import utc
    >>> m = lambda i, t, owner, text, kind="text": StoredMessage(str(i), "me" if owner else "u2", None, owner,
    ...                                                        utc(t), text, kind, False, None)
    >>> found = bursts([m(1, 0, False, "are you free thursday?"), m(2, 60, True, "yes!"),
    ...                 m(3, 120, False, "great, 8 at the crag"), m(4, 180, True, "see you"),
    ...                 m(5, 200, False, "ok 👍")])
    >>> [(b.text, b.replied) for b in found]
    [('are you free thursday?', True), ('great, 8 at the crag', True), ('ok 👍', False)]
    >>> kind_flags(("👍",), ("sticker",)), kind_flags(("ok 👍",), ("text",)), kind_flags(("😂🙌",), ("text",))
    ((1.0, 1.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.emoji import count_emoji
from twin.errors import TwinError
from twin.sessions import DEFAULT_GAP_SECONDS
from twin.store import StoredMessage

BURST_GAP_SECONDS = 10 * 60  # a contact's message this long after their previous one is a new burst
N_HASH = 2 ** 18
NGRAMS = (2, 4)
FORMAT = "twin-reply-model"
VERSION = 1
JSON_NAME = "reply_model.json"
NPZ_NAME = "reply_model.npz"
MEDIA = frozenset({"photo", "voice", "video", "file", "placeholder"})
DENSE = ("sticker_only", "emoji_only", "media_only", "question", "log_chars", "messages", "hour_sin", "hour_cos",
         "contact_rate", "short")
_QUESTION_WORDS = re.compile(
    r"^(who|what|when|where|why|how|which|do|does|did|are|is|was|were|can|could|will|would|should|shall|may|"
    r"have|has|any|anyone|wanna|want)\b")


class ReplyModelError(TwinError):
    """A reply model on disk that cannot be read (a missing, damaged or foreign file)."""


@dataclass(frozen=True)
class Burst:
    """A contact's burst: its messages (oldest first), who wrote the last one, and (in history) whether the
    owner replied (None: not known yet, a live burst). `session` numbers the chat's conversations from 0."""

    messages: tuple[StoredMessage, ...]
    replied: bool | None = None
    session: int = 0
    chat: str = ""  # "platform:chat_id", for splits and reports

    @property
    def sender_id(self) -> str:
        return self.messages[-1].sender_id

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.messages)

    @property
    def hour(self) -> int:
        return self.messages[-1].time.hour


def bursts(messages: Sequence[StoredMessage], session_gap: int = DEFAULT_GAP_SECONDS,
           burst_gap: int = BURST_GAP_SECONDS, chat: str = "") -> list[Burst]:
    """A chat's contact bursts with whether the owner replied (rules in the module docstring); `messages` are
    the chat's, oldest first."""
    found: list[Burst] = []
    run: list[StoredMessage] = []
    session = 0

    def close(replied: bool) -> None:
        if run:
            found.append(Burst(tuple(run), replied, session, chat))
            run.clear()

    previous = None
    for m in messages:
        t = m.time.timestamp()
        if previous is not None and t - previous > session_gap:
            close(False)
            session += 1
        if m.from_owner:
            close(True)
        else:
            if run and t - run[-1].time.timestamp() > burst_gap:
                close(False)
            run.append(m)
        previous = t
    close(False)
    return found


def tail(messages: Sequence[StoredMessage], burst_gap: int = BURST_GAP_SECONDS) -> tuple[StoredMessage, ...]:
    """The last burst of a contact's unanswered messages (oldest first): what a live judgement is about.

    >>> from twin.chat import utc
    >>> m = lambda i, t: StoredMessage(str(i), "u2", None, False, utc(t), "x", "text", False, None)
    >>> [x.msg_id for x in tail([m(1, 0), m(2, 30), m(3, 3000), m(4, 3010)])]
    ['3', '4']
    """
    out: list[StoredMessage] = []
    for m in reversed(messages):
        if out and out[-1].time.timestamp() - m.time.timestamp() > burst_gap:
            break
        out.append(m)
    return tuple(reversed(out))


# -- features ---------------------------------------------------------------------------------------------

def kind_flags(texts: Sequence[str], kinds: Sequence[str]) -> tuple[float, float, float]:
    """(stickers only, emoji only, media only) of a burst: a sticker counts as emoji too (its text is its
    emoji); a text of nothing but emoji (and spaces) is emoji only."""
    sticker = all(k == "sticker" for k in kinds)
    media = all(k in MEDIA for k in kinds)

    def only_emoji(text: str, kind: str) -> bool:
        if kind == "sticker":
            return True
        bare = re.sub(r"\s", "", text)
        return kind == "text" and bool(bare) and count_emoji(bare) > 0 and not re.search(r"[\w?!.,]", bare)

    emoji = all(only_emoji(t, k) for t, k in zip(texts, kinds))
    return float(sticker), float(emoji), float(media)


def is_question(texts: Sequence[str]) -> bool:
    """Whether a burst asks something: a question mark, or a line opening with a question word.

    >>> is_question(["free thursday?"]), is_question(["how was the trip"]), is_question(["ok", "thanks!"])
    (True, True, False)
    """
    return any("?" in t or _QUESTION_WORDS.match(t.strip().lower()) for t in texts)


def ngram_slots(texts: Sequence[str]) -> dict[int, float]:
    """The burst's hashed char n-grams, L2-normalised: {slot: weight}."""
    counts: dict[int, float] = {}
    lo, hi = NGRAMS
    for text in texts:
        s = f" {' '.join(text.lower().split())} "
        for n in range(lo, hi + 1):
            for i in range(len(s) - n + 1):
                slot = zlib.crc32(s[i:i + n].encode("utf-8")) % N_HASH
                counts[slot] = counts.get(slot, 0.0) + 1.0
    norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
    return {k: v / norm for k, v in counts.items()}


def dense(burst: Burst, contact_rate: float) -> np.ndarray:
    """The dense features (DENSE, in order)."""
    texts = [m.text for m in burst.messages]
    kinds = [m.kind for m in burst.messages]
    chars = sum(len(t) for t in texts)
    angle = 2 * math.pi * burst.hour / 24
    return np.array([*kind_flags(texts, kinds), float(is_question(texts)), math.log1p(chars) / 5,
                     min(len(texts), 10) / 10, math.sin(angle), math.cos(angle), contact_rate,
                     float(chars <= 12)], dtype=np.float64)


def features(burst: Burst, contact_rate: float) -> tuple[dict[int, float], np.ndarray]:
    """(hashed n-grams, dense features) of a burst."""
    return ngram_slots([m.text for m in burst.messages]), dense(burst, contact_rate)


# -- the predictor ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplyModel:
    """A fitted logistic regression: P(no reply due | burst) = sigmoid(w·x + b). `slots`/`weights` are the
    n-gram coefficients that are not zero, `dense` those of DENSE; `rates` the owner's reply rate per contact
    ("platform:user id"), `default_rate` for a contact not seen in training. A burst is skipped when its
    probability is at least `threshold` (1.0 or more: never)."""

    slots: np.ndarray
    weights: np.ndarray
    dense: np.ndarray
    intercept: float
    threshold: float
    rates: dict[str, float] = field(default_factory=dict)
    default_rate: float = 0.5
    metrics: dict = field(default_factory=dict)
    _lookup: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._lookup.update(zip(self.slots.tolist(), self.weights.tolist()))

    def rate(self, platform: str, sender_id: str) -> float:
        return self.rates.get(f"{platform}:{sender_id}", self.default_rate)

    def probability(self, burst: Burst, platform: str) -> float:
        """P(no reply due) for a burst."""
        grams, extra = features(burst, self.rate(platform, burst.sender_id))
        z = self.intercept + float(extra @ self.dense) + sum(v * self._lookup.get(k, 0.0) for k, v in grams.items())
        return 1.0 / (1.0 + math.exp(-z))

    def no_reply_due(self, burst: Burst, platform: str) -> bool:
        return self.probability(burst, platform) >= self.threshold

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / NPZ_NAME, slots=self.slots.astype(np.int64), weights=self.weights.astype(np.float64),
                 dense=self.dense.astype(np.float64))
        meta = {"format": FORMAT, "version": VERSION, "n_hash": N_HASH, "ngrams": list(NGRAMS),
                "burst_gap_seconds": BURST_GAP_SECONDS, "dense_features": list(DENSE), "intercept": self.intercept,
                "threshold": self.threshold, "default_rate": self.default_rate, "rates": self.rates,
                "metrics": self.metrics}
        (directory / JSON_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "ReplyModel":
        """Read a saved model; ReplyModelError names the file and says what to do when it cannot."""
        meta_path, arrays_path = directory / JSON_NAME, directory / NPZ_NAME
        fix = "retrain it with `twin train --only reply-model`"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(arrays_path, allow_pickle=False) as z:
                slots, weights, dense_w = z["slots"], z["weights"], z["dense"]
        except FileNotFoundError as e:
            raise ReplyModelError(f"{e.filename}: no reply model there; {fix}") from e
        except (OSError, ValueError, KeyError) as e:
            raise ReplyModelError(f"{directory}: the reply model cannot be read ({type(e).__name__}); {fix}") from e
        expected = {"format": FORMAT, "version": VERSION, "n_hash": N_HASH, "ngrams": list(NGRAMS),
                    "dense_features": list(DENSE)}
        for key, value in expected.items():
            if meta.get(key) != value:
                raise ReplyModelError(f"{meta_path}: '{key}' is {meta.get(key)!r}, this twin reads {value!r}; {fix}")
        if dense_w.shape != (len(DENSE),) or slots.shape != weights.shape:
            raise ReplyModelError(f"{arrays_path}: arrays of the wrong shape; {fix}")
        return cls(slots, weights, dense_w, float(meta["intercept"]), float(meta["threshold"]),
                   {str(k): float(v) for k, v in meta.get("rates", {}).items()}, float(meta["default_rate"]),
                   meta.get("metrics", {}))


def find_model(adapters_dir: Path, adapter: str | None) -> Path | None:
    """The directory of the reply model to use: the drafting adapter's, else the newest adapter's that has one."""
    if adapter and (adapters_dir / adapter / JSON_NAME).exists():
        return adapters_dir / adapter
    found = [p.parent for p in adapters_dir.glob(f"*/{JSON_NAME}")] if adapters_dir.exists() else []
    return max(found, key=lambda p: (p / JSON_NAME).stat().st_mtime) if found else None
