"""Evaluation metrics: does the adapter write like the owner on held-out conversations, and does it leak?

Style (a stylometric profile and a distance between profiles), blandness (distinct-n), a classifier two-sample
test (could a classifier tell generated replies from real ones?), held-out perplexity of the owner's tokens,
and one chart that compares base and adapter (canaries are in training.canaries). Functions take values and return values; torch, scikit-learn and matplotlib are
imported inside the functions that need them. Exercised by `twin eval`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twin.emoji import count_emoji

# --- style -------------------------------------------------------------------------------------------------

_ELLIPSIS = re.compile(r"\.\.|…")

STYLE_FEATURES = (
    "chars_mean", "chars_p10", "chars_p50", "chars_p90", "words_mean", "burst_mean", "emoji_per_message",
    "emoji_share", "exclaim_share", "question_share", "ellipsis_share", "full_stop_share", "lowercase_share",
)  # fmt: skip


def style_profile(replies: Sequence[Sequence[str]]) -> dict[str, float]:
    """Stylometric profile of replies, each a burst of message lines (surrounding blanks stripped, empty lines dropped).

    Keys (STYLE_FEATURES): message length in code points (mean, p10/p50/p90 by linear interpolation), words per
    message (whitespace-split), messages per reply (a reply with no message counts 0), emoji per message, and the
    share of messages with: an emoji, a "!", a "?", an ellipsis ("…" or two dots in a row), a final single "." and,
    among messages with cased letters, no upper-case letter (NaN when no message has cased letters).

    >>> p = style_profile([["hey", "what's up?"], ["Fine. 😀"]])
    >>> [round(p[k], 3) for k in ("chars_mean", "chars_p10", "chars_p90", "burst_mean", "question_share")]
    [6.667, 3.8, 9.4, 1.5, 0.333]
    >>> p["lowercase_share"], p["full_stop_share"], p["emoji_share"]
    (0.6666666666666666, 0.0, 0.3333333333333333)
    """
    bursts = [[line.strip() for line in reply if line.strip()] for reply in replies]
    messages = [m for burst in bursts for m in burst]
    if not messages:
        raise ValueError(f"style_profile: no non-empty messages in {len(replies)} replies; pass at least one message")
    chars = np.array([len(m) for m in messages], dtype=float)
    emoji = np.array([count_emoji(m) for m in messages], dtype=float)
    cased = [m for m in messages if any(c.isupper() or c.islower() for c in m)]
    p10, p50, p90 = np.percentile(chars, [10, 50, 90])

    def share(test: Callable[[str], bool]) -> float:
        return sum(map(test, messages)) / len(messages)

    return {
        "chars_mean": float(chars.mean()),
        "chars_p10": float(p10),
        "chars_p50": float(p50),
        "chars_p90": float(p90),
        "words_mean": float(np.mean([len(m.split()) for m in messages])),
        "burst_mean": float(np.mean([len(b) for b in bursts])),
        "emoji_per_message": float(emoji.mean()),
        "emoji_share": float((emoji > 0).mean()),
        "exclaim_share": share(lambda m: "!" in m),
        "question_share": share(lambda m: "?" in m),
        "ellipsis_share": share(lambda m: bool(_ELLIPSIS.search(m))),
        "full_stop_share": share(lambda m: m.endswith(".") and not m.endswith("..")),
        "lowercase_share": (
            sum(not any(c.isupper() for c in m) for m in cased) / len(cased) if cased else math.nan
        ),
    }


DISTANCE_FLOOR = 0.1


def profile_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Mean over features of |a−b| / max(|a|+|b|, DISTANCE_FLOOR): 0 for identical profiles, at most 1.

    Each term is a relative difference, so characters and shares weigh the same: a value 20 % off gives
    0.2/2.2 ≈ 0.09, twice or half gives 1/3, and 0 against anything ≥ 0.1 gives 1. The floor keeps two near-zero
    shares (0.01 against 0) from counting as a full difference. Symmetric; features NaN in either are skipped.

    >>> profile_distance({"chars_mean": 10.0, "emoji_share": 0.0}, {"chars_mean": 30.0, "emoji_share": 0.0})
    0.25
    """
    if a.keys() != b.keys():
        raise ValueError(f"profile_distance: profiles differ in features {sorted(a.keys() ^ b.keys())}")
    terms = [
        abs(a[k] - b[k]) / max(abs(a[k]) + abs(b[k]), DISTANCE_FLOOR)
        for k in a
        if not (math.isnan(a[k]) or math.isnan(b[k]))
    ]
    return float(np.mean(terms)) if terms else math.nan


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams, over whitespace tokens (case kept), n-grams never crossing texts.

    A text with fewer than n tokens adds none; NaN when there are none at all. The value falls as the sample
    grows, so compare sets of equal size (Li et al. 2016).

    >>> distinct_n(["ok ok ok", "ok sure"], n=2)  # (ok ok), (ok ok), (ok sure)
    0.6666666666666666
    """
    grams = [tuple(toks[i : i + n]) for toks in (t.split() for t in texts) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


# --- classifier two-sample test ------------------------------------------------------------------------------

MIN_PER_CLASS = 10


def classifier_auc(real: Sequence[str], generated: Sequence[str], seed: int = 0, folds: int = 5) -> float:
    """ROC-AUC of a classifier telling generated texts from real ones; 0.5 means it cannot tell them apart.

    Protocol (Lopez-Paz & Oquab 2017): TF-IDF of character 2–4-grams (case kept, sublinear tf) into
    class-balanced logistic regression with C=10 (chat messages are short, and the default C=1 shrinks even a
    perfect cue such as "!!" until AUC stalls near 0.92), refitted per fold of a shuffled stratified k-fold
    (`folds`, seeded); the out-of-fold probabilities of all texts are pooled into one AUC. Values below 0.5 are
    noise, not skill; with a few hundred texts per side, chance lands within about ±0.05 of 0.5.
    With fewer than MIN_PER_CLASS texts in either class it warns with the counts and returns NaN.

    >>> real = [f"hey {w} lol" for w in "abcdefghijkl"]
    >>> classifier_auc(real, [f"Hello {w}!!" for w in "abcdefghijkl"])
    1.0
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    if min(len(real), len(generated)) < MIN_PER_CLASS:
        warnings.warn(
            f"classifier_auc: {len(real)} real and {len(generated)} generated texts; needs at least "
            f"{MIN_PER_CLASS} of each, returning NaN",
            stacklevel=2,
        )
        return math.nan
    texts = [*real, *generated]
    labels = np.array([0] * len(real) + [1] * len(generated))
    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(2, 4), lowercase=False, sublinear_tf=True),
        LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced"),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, texts, labels, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


# --- perplexity ----------------------------------------------------------------------------------------------


class Sample(Protocol):
    input_ids: list[int]
    loss_mask: list[bool]


def _nll_sums(model: Any, rows: Sequence[tuple[list[int], list[bool]]], batch_rows: int) -> list[tuple[float, int]]:
    """(summed NLL in nats, target count) per row of (ids, mask); mask[i] marks ids[i], predicted from i−1."""
    return [(float(t.sum()), len(t)) for t in token_nlls(model, rows, batch_rows)]


def token_nlls(model: Any, rows: Sequence[tuple[list[int], list[bool]]], batch_rows: int = 4) -> list[np.ndarray]:
    """Per row of (ids, mask), the NLL in nats (float64) of each target token, in order: mask[i] marks ids[i],
    predicted from i−1 (mask[0] never counts). Narrower masks over the same ids (training.memory_eval's fact
    words) are then sums over a subset, with no second forward."""
    import torch

    from twin.decoding import evaluating

    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    with evaluating(model):
        for start in range(0, len(order), batch_rows):
            chunk = order[start : start + batch_rows]
            width = max(len(rows[i][0]) for i in chunk)
            if width < 2:
                continue
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            attention = torch.zeros_like(ids)
            target = torch.zeros((len(chunk), width), dtype=torch.bool)
            for r, i in enumerate(chunk):
                seq, mask = rows[i]
                ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention[r, : len(seq)] = 1
                target[r, : len(seq)] = torch.tensor(mask, dtype=torch.bool)
            ids, attention, target = ids.to(device), attention.to(device), target[:, 1:].to(device)
            # Only target positions go through the head and log-softmax, in float32: full-vocabulary
            # logits at every position cost a fifth of a small model's forward and most of its memory.
            for i, row in zip(chunk, nlls_per_row(_target_nlls(model, ids, attention, target), target)):
                out[i] = row
    return out


def nlls_per_row(nll, target) -> list[np.ndarray]:
    """`nll` (one value per set position of `target`, in row order) split by row, as float64 arrays."""
    values = nll.double().cpu().numpy()
    ends = np.cumsum(target.sum(1).cpu().numpy())
    return [values[(ends[r - 1] if r else 0) : ends[r]] for r in range(len(ends))]


NLL_CHUNK = 512  # target positions whose fp32 logits exist at once (Gemma's 262k vocabulary: 0.5 GB)


def target_nlls(causal: Any, hidden: Any, labels: Any) -> Any:
    """The NLL of each label under the causal LM's head at `hidden` (one row per target position), the logits
    made NLL_CHUNK rows at a time: a batch's full-vocabulary logits for all its targets are never whole (with
    Gemma 3, 3,000 targets would be 3 GB, twice over with the log-softmax)."""
    import torch

    parts = [_nll(head_logits(causal, hidden[s : s + NLL_CHUNK]), labels[s : s + NLL_CHUNK])
             for s in range(0, len(hidden), NLL_CHUNK)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _nll(logits: Any, labels: Any) -> Any:
    import torch

    return -torch.log_softmax(logits, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)


def _target_nlls(model: Any, ids, attention, target):
    """The NLLs at the positions where `target` (shifted by one) is set, the head run on those alone."""
    labels = ids[:, 1:][target]
    if (parts := decoder_of(model)) is None:
        return _nll(model(input_ids=ids, attention_mask=attention).logits[:, :-1][target].float(), labels)
    causal, decoder = parts
    hidden = decoder(input_ids=ids, attention_mask=attention, use_cache=False)[0]
    return target_nlls(causal, hidden[:, :-1][target], labels)


def decoder_of(model: Any) -> tuple[Any, Any] | None:
    """(the causal LM, its decoder) of a transformers or peft model that has a separate output head; else None."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(causal, "get_decoder") or getattr(causal, "get_output_embeddings", lambda: None)() is None:
        return None
    return causal, causal.get_decoder()


def head_logits(causal: Any, hidden: Any) -> Any:
    """fp32 logits of the causal LM's output head on `hidden` (Gemma's final soft-capping included)."""
    import torch

    logits = causal.get_output_embeddings()(hidden).float()
    if cap := getattr(causal.config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    return logits


def perplexity(model: Any, samples: Sequence[Sample], batch_rows: int = 4) -> float:
    """exp(mean NLL per target token) of the samples under a causal LM (a transformers or peft model).

    Token i counts when loss_mask[i] is True; it is predicted from position i−1, so loss_mask[0] is ignored. Rows
    are right-padded with an attention mask, `batch_rows` at a time; the model is put in eval mode and its mode
    restored afterwards. Raises ValueError when no token is a target.
    Example: perplexity(peft_model, heldout_samples) -> 12.9; a uniform model over V tokens gives V.
    """
    for k, s in enumerate(samples):
        if len(s.input_ids) != len(s.loss_mask):
            raise ValueError(f"perplexity: sample {k} has {len(s.input_ids)} ids but {len(s.loss_mask)} mask flags")
    nlls = token_nlls(model, [(list(s.input_ids), list(s.loss_mask)) for s in samples], batch_rows)
    return perplexity_of(nlls, f"{len(samples)} samples")


def perplexity_of(nlls: Sequence[np.ndarray], what: str = "the rows") -> float:
    """exp(mean NLL) over all the target tokens of `token_nlls`'s rows; ValueError when there are none."""
    tokens = sum(len(t) for t in nlls)
    if tokens == 0:
        raise ValueError(f"perplexity: no target tokens in {what}; check loss_mask")
    return math.exp(sum(float(t.sum()) for t in nlls) / tokens)


# --- chart ---------------------------------------------------------------------------------------------------

_HEADLINE = (
    ("perplexity", "held-out perplexity (lower is better)"),
    ("profile_distance", "style profile distance to real (lower)"),
    ("distinct_2", "distinct-2 (closer to real is better)"),
    ("classifier_auc", "classifier AUC, generated vs real (0.5 = can't tell)"),
)
_STYLE_GROUPS = (
    ("message length (characters)", ("chars_mean", "chars_p10", "chars_p50", "chars_p90")),
    ("per message / per reply", ("words_mean", "burst_mean", "emoji_per_message")),
    ("share of messages", ("emoji_share", "exclaim_share", "question_share", "ellipsis_share",
                           "full_stop_share", "lowercase_share")),
)  # fmt: skip
_COLOURS = {"base": "#9e9e9e", "adapter": "#1f77b4", "real": "#2ca02c"}


def _value(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    return math.nan if v is None else float(v)


def _memory_panel(ax: Any, memory: dict[str, Any]) -> None:
    """The adapter with and without the memory block: perplexity of all its turns and of the facts."""
    keys = (("perplexity", "all turns"), ("fact_perplexity", f"facts ({memory.get('fact_words', 0)} words)"))
    x = np.arange(len(keys))
    for k, (arm, colour) in enumerate((("with", "#1f77b4"), ("without", "#9e9e9e"))):
        values = [_value(memory.get(key) or {}, arm) for key, _ in keys]
        bars = ax.bar(x + (k - 0.5) * 0.38, [0 if math.isnan(v) else v for v in values], 0.38, label=f"{arm} memory",
                      color=colour)
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if math.isnan(v) else f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", xytext=(0, 2), textcoords="offset points", fontsize=8)
    ax.set_xticks(x, [label for _, label in keys])
    ax.set_title("adapter with / without memory: perplexity (lower)", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)


def chart(results: dict[str, Any], path: Path) -> Path:
    """Write one PNG comparing base and adapter: headline metrics on top, style features (with real) below.

    `results` (JSON-serialisable; a missing metric is None or absent and drawn as "n/a"):
        {"base":    {"perplexity": float, "profile_distance": float, "distinct_2": float,
                     "classifier_auc": float, "profile": style_profile(...)},
         "adapter": {... the same keys ...},
         "real":    {"profile": style_profile(...), "distinct_2": float}}  (a headline key in "real"
                                                                         is drawn as a third bar)
    Returns `path`. Example: chart(results, Path("runs/eval.png")).
    """
    from matplotlib.figure import Figure  # not pyplot: no global backend, no open-figure registry

    fig = Figure(figsize=(17, 9), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.15))
    memory = results.get("memory")
    heads = top.subplots(1, len(_HEADLINE) + bool(memory))
    if memory:
        _memory_panel(heads[-1], memory)
    for ax, (key, title) in zip(heads, _HEADLINE):
        arms = ["base", "adapter"] + (["real"] if key in results.get("real", {}) else [])
        values = [_value(results.get(a, {}), key) for a in arms]
        bars = ax.bar(arms, [0 if math.isnan(v) else v for v in values], color=[_COLOURS[a] for a in arms])
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if math.isnan(v) else f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", xytext=(0, 2), textcoords="offset points")  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
        if key == "classifier_auc":
            ax.set_ylim(0, 1.05)
            ax.axhline(0.5, color="black", linestyle="--", linewidth=1)
    profiles = {a: results.get(a, {}).get("profile") or {} for a in ("adapter", "base", "real")}
    axes = bottom.subplots(1, len(_STYLE_GROUPS), width_ratios=[len(keys) for _, keys in _STYLE_GROUPS])
    for ax, (title, keys) in zip(axes, _STYLE_GROUPS):
        x = np.arange(len(keys))
        for k, (arm, profile) in enumerate(profiles.items()):
            ax.bar(x + (k - 1) * 0.27, [_value(profile, f) for f in keys], 0.27, label=arm, color=_COLOURS[arm])
        ax.set_xticks(x, [f.replace("_share", "").replace("_", " ") for f in keys], rotation=20)
        ax.set_title(title, fontsize=10)
    bottom.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right", ncols=3)
    top.suptitle("base vs adapter on held-out conversations")
    bottom.suptitle("style features: adapter, base, real")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
