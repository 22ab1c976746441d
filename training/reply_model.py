"""The no-reply classifier: fitted on the owner's own history at `twin train` (or alone with
`twin train --only reply-model`), evaluated by `twin eval`, used by the relay (twin/replies.py) to hold back
the card of a burst that needs no answer.

The data: every contact burst of every chat (twin.replies.bursts), labelled by whether the owner replied. Split
by conversation, never inside one: the most recent `holdout_fraction` of each chat's sessions are held out
(the same rule as the adapter's held-out conversations, training.dataset.held_out_count); of the rest, the most
recent VALIDATION_FRACTION are the validation split, where the threshold is chosen; the older ones are fitted.
So the threshold is chosen on bursts the classifier did not learn from, and the numbers reported are on
held-out bursts that neither fitting nor the threshold saw.

The model: logistic regression (scikit-learn, liblinear) on twin.replies.features, class "no reply due" = 1.
The threshold: the lowest probability at which the validation precision of "no reply due" is at least
`target` (0.9), taken at its Wilson lower bound (one sigma: a small validation split must show more than 0.9)
with at least MIN_SKIPS bursts skipped, for every threshold at or above it; none such: 1.01 (never skip). Saved beside the adapter as JSON + npz (twin.replies.ReplyModel.save), never pickled.

The contacts' reply rates come from the fitted bursts; the owner's "No reply needed" taps and the drafts they
sent or answered by hand (draft outcomes) count too, as replies or non-replies of that contact (a rate holds no
text, so this is used even when live messages are not training data).

    twin train --only reply-model
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from training.dataset import held_out_count
from twin.chat import utc  # noqa: F401 (the doctest)
from twin.outcomes import Outcome
from twin.replies import DENSE, N_HASH, Burst, ReplyModel, bursts, features
from twin.sessions import DEFAULT_GAP_SECONDS
from twin.store import ChatKey, Store, StoredMessage  # noqa: F401

VALIDATION_FRACTION = 0.25
MIN_SKIPS = 8
TARGET_PRECISION = 0.9
Z = 1.0  # the threshold's precision on validation is trusted to its Wilson lower bound at one sigma
NEVER = 1.01


@dataclass(frozen=True)
class Splits:
    fit: tuple[Burst, ...]
    validation: tuple[Burst, ...]
    held_out: tuple[Burst, ...]


def labelled(store: Store, holdout_fraction: float = 0.1, session_gap: int = DEFAULT_GAP_SECONDS,
             include_live: bool = False) -> Splits:
    """Every chat's bursts, split by conversation into fit, validation and held-out (module docstring)."""
    fit: list[Burst] = []
    val: list[Burst] = []
    held: list[Burst] = []
    for chat in store.chats():
        live = include_live and chat.platform == "telegram"
        found = bursts(store.chat_messages(chat.key, live=live), session_gap, chat=f"{chat.platform}:{chat.id}")
        if not found:
            continue
        sessions = found[-1].session + 1
        held_from = sessions - held_out_count(sessions, holdout_fraction)
        val_from = held_from - held_out_count(held_from, VALIDATION_FRACTION)
        for b in found:
            (held if b.session >= held_from else val if b.session >= val_from else fit).append(b)
    return Splits(tuple(fit), tuple(val), tuple(held))


def reply_rates(found: Iterable[Burst], platforms: dict[str, str], extra: Counter | None = None,
                prior: float = 2.0) -> tuple[dict[str, float], float]:
    """({"platform:user": rate}, default rate): how often the owner replied to each contact's bursts, smoothed
    towards the overall rate with `prior` pseudo-bursts. `extra` adds (key, replied) counts (draft outcomes).

    >>> b = lambda who, r: Burst((StoredMessage("1", who, None, False, utc(0), "x", "text", False, None),), r,
    ...                          chat="telegram:1")
    >>> rates, default = reply_rates([b("u2", True), b("u2", True), b("u3", False), b("u3", True)],
    ...                              {"telegram:1": "telegram"})
    >>> default, round(rates["telegram:u2"], 3), round(rates["telegram:u3"], 3)
    (0.75, 0.875, 0.625)
    """
    counts: Counter = Counter()
    for b in found:
        counts[(f"{platforms[b.chat]}:{b.sender_id}", bool(b.replied))] += 1
    counts.update(extra or {})
    total = sum(counts.values())
    default = sum(v for (k, r), v in counts.items() if r) / total if total else 0.5
    keys = {k for k, _ in counts}
    rates = {k: (counts[(k, True)] + prior * default) / (counts[(k, True)] + counts[(k, False)] + prior)
             for k in sorted(keys)}
    return rates, default


def outcome_counts(store: Store, outcomes: Sequence[Outcome]) -> Counter:
    """(contact key, replied) counts from draft outcomes: "No reply needed" is a non-reply, a draft sent (as is
    or edited) or answered by hand a reply; other outcomes say nothing about it."""
    counts: Counter = Counter()
    for o in outcomes:
        replied = {"no_reply": False, "sent": True, "edited": True, "written": True}.get(o.kind)
        if replied is None or o.origin != "telegram":
            continue
        people = store.chat_contacts(ChatKey(o.platform, o.chat_id))
        if len(people) == 1:
            counts[(f"{o.platform}:{people[0]}", replied)] += 1
    return counts


def _matrix(found: Sequence[Burst], rates: dict[str, float], default: float, platforms: dict[str, str]):
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for i, b in enumerate(found):
        grams, extra = features(b, rates.get(f"{platforms[b.chat]}:{b.sender_id}", default))
        for k, v in grams.items():
            rows.append(i)
            cols.append(k)
            vals.append(v)
        for j, v in enumerate(extra):
            if v:
                rows.append(i)
                cols.append(N_HASH + j)
                vals.append(float(v))
    return csr_matrix((vals, (rows, cols)), shape=(len(found), N_HASH + len(DENSE)))


def _labels(found: Sequence[Burst]) -> np.ndarray:
    return np.array([0 if b.replied else 1 for b in found])  # 1: no reply due


def wilson_low(hits: int, n: int, z: float = Z) -> float:
    """The lower end of the Wilson score interval of a proportion: precision that small samples can be trusted to.

    >>> round(wilson_low(9, 10), 3), round(wilson_low(90, 100), 3), wilson_low(0, 0)
    (0.766, 0.866, 0.0)
    """
    if n == 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(probs: Sequence[float], no_reply: Sequence[int], target: float = TARGET_PRECISION,
                     min_skips: int = MIN_SKIPS, z: float = Z) -> float:
    """The lowest threshold at which the precision of "no reply due" is at least `target` with some confidence
    (the Wilson lower bound at `z`, so a handful of lucky bursts does not set it), scanning down from the most
    certain burst and stopping at the first threshold that falls short once one was found; NEVER when none.

    >>> p, y = [0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1, 1, 1, 1, 0, 1]
    >>> choose_threshold(p, y, target=0.6, min_skips=2, z=1.0), choose_threshold(p, y, target=0.8, min_skips=2, z=1.0)
    (0.6, 0.8)
    >>> choose_threshold([0.9, 0.8], [0, 0], min_skips=1)
    1.01
    """
    order = sorted(zip(probs, no_reply), key=lambda x: -x[0])
    best, hits = NEVER, 0
    for i, (p, y) in enumerate(order):
        hits += y
        if i + 1 < len(order) and order[i + 1][0] == p:
            continue  # a threshold takes every burst of equal probability
        if i + 1 < min_skips:
            continue
        if wilson_low(hits, i + 1, z) < target:
            if best != NEVER:
                break
            continue
        best = float(p)
    return best


def scores(model: ReplyModel, found: Sequence[Burst], platforms: dict[str, str]) -> dict:
    """Precision and recall of "no reply due" at the model's threshold, the share of cards it would save, the
    bursts, and the prediction time per burst."""
    start = time.perf_counter()
    skipped = [model.no_reply_due(b, platforms[b.chat]) for b in found]
    ms = (time.perf_counter() - start) * 1000 / max(len(found), 1)
    truth = [not b.replied for b in found]
    tp = sum(s and t for s, t in zip(skipped, truth))
    predicted, positive = sum(skipped), sum(truth)
    return {"precision": tp / predicted if predicted else None, "recall": tp / positive if positive else None,
            "threshold": model.threshold, "saved_share": predicted / len(found) if found else None,
            "bursts": len(found), "no_reply_bursts": positive, "skipped": predicted, "ms_per_burst": round(ms, 3)}


def fit(splits: Splits, platforms: dict[str, str], extra: Counter | None = None, target: float = TARGET_PRECISION,
        seed: int = 0) -> ReplyModel:
    """Fit on `splits.fit`, choose the threshold on `splits.validation`; metrics of both splits and the held-out
    one in `metrics`."""
    from sklearn.linear_model import LogisticRegression

    train = splits.fit or splits.validation
    labels = _labels(train)
    if len(set(labels.tolist())) < 2:
        what = "no contact messages" if not train else \
            f"{len(train)} contact bursts, all {'un' if labels.any() else ''}answered"
        raise ValueError(f"the history has {what}: nothing to learn when no reply is due from; import more chats "
                         "(twin ingest EXPORT)")
    rates, default = reply_rates(train, platforms, extra)
    clf = LogisticRegression(C=4.0, solver="liblinear", max_iter=2000, random_state=seed)
    clf.fit(_matrix(train, rates, default, platforms), labels)
    w = clf.coef_[0]
    nz = np.flatnonzero(w[:N_HASH])
    model = ReplyModel(nz.astype(np.int64), w[nz].astype(np.float64), w[N_HASH:].astype(np.float64),
                       float(clf.intercept_[0]), NEVER, rates, default)
    val = splits.validation
    threshold = choose_threshold([model.probability(b, platforms[b.chat]) for b in val], _labels(val), target) \
        if val else NEVER
    model = ReplyModel(model.slots, model.weights, model.dense, model.intercept, threshold, rates, default)
    metrics = {"fit_bursts": len(train), "target_precision": target, "validation": scores(model, val, platforms),
               "held_out": scores(model, splits.held_out, platforms)}
    return ReplyModel(model.slots, model.weights, model.dense, model.intercept, threshold, rates, default, metrics)


def platforms_of(store: Store) -> dict[str, str]:
    return {f"{c.platform}:{c.id}": c.platform for c in store.chats()}


def train_reply_model(store: Store, holdout_fraction: float, session_gap: int, include_live: bool,
                      outcomes: Sequence[Outcome] = ()) -> ReplyModel:
    """The whole stage: label, split, fit, choose the threshold, score (what `twin train` runs)."""
    splits = labelled(store, holdout_fraction, session_gap, include_live)
    extra = None if include_live else outcome_counts(store, outcomes)
    return fit(splits, platforms_of(store), extra)


def evaluate_saved(store: Store, model: ReplyModel, holdout_fraction: float, session_gap: int,
                   include_live: bool) -> dict:
    """`twin eval`'s `reply_model` block: the saved model scored on the held-out conversations of the store."""
    splits = labelled(store, holdout_fraction, session_gap, include_live)
    return scores(model, splits.held_out, platforms_of(store))

