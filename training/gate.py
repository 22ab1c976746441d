"""The gate of `twin learn`: a new version replaces its parent only if it drafts closer to what the owner sends,
and writes no worse on the conversations it never saw.

Parent and child are measured alike (`measure`), then `decide` compares them:
- held-out outcomes (training.preference): for each held-out draft's exact prompt a greedy draft, and its
  normalised edit distance (twin.text.edit_ratio: 0 = what the owner sent, 1 = nothing in common) to what the
  owner sent, averaged; the child must come closer by at least MIN_EDIT_GAIN and win more outcomes than it
  loses;
- held-out conversations (`twin eval`'s, rebuilt from the store as the parent was trained): perplexity of the
  owner's turns, the style distance of replies generated there to the owner's real ones, and distinct-2; the
  child may be worse by no more than the tolerances below.
The result (both sides' numbers, every check, the decision and its reasons) goes into the new version's twin.json.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from training import metrics
from training.evaluation import EvalOptions, reply_lines, sample_replies
from twin.generation import Sampling, generate
from twin.text import edit_ratio, figure

log = logging.getLogger(__name__)

# Tolerances. Each compares child with parent, measured on the same held-out data with the same seeds.
# The edit distance is averaged over a few dozen outcomes in a small home: a mean that moves by less than one
# point in a hundred is noise, not learning.
MIN_EDIT_GAIN = 0.01
# Preference optimisation moves probability mass off the rejected drafts, and some of it off the owner's other
# text too (DPO can lower even the chosen side's likelihood: Pal et al. 2024, "Smaug", arXiv 2402.13228): allow
# the perplexity of the owner's held-out turns to rise by 5 %, no more.
PERPLEXITY_TOLERANCE = 0.05
# The style profile distance averages 13 features (training.metrics): 0.03 is one feature moving by about 40 %
# of its value, or several by less; more than that is a voice that drifted.
STYLE_TOLERANCE = 0.03
# Drafts that collapse into short generic text can win on edit distance (evaluation.md §3.2, "guard against
# reward hacking toward short generic drafts"): distinct-2 may fall by at most this much.
DISTINCT_TOLERANCE = 0.05


@dataclass(frozen=True)
class GateData:
    """What both sides are measured on: the held-out outcomes' prompts and sent texts, and the held-out
    conversations (samples for perplexity; reply contexts and the owner's real replies, as `twin eval` makes them)."""

    prompts: Sequence[Sequence[int]]
    sent: Sequence[str]
    conversations: Sequence[Any] = ()  # training.dataset.Sample
    reply_prompts: Sequence[Sequence[int]] = ()
    real_replies: Sequence[Sequence[str]] = ()


@dataclass(frozen=True)
class GateOptions:
    max_new_tokens: int = 96
    eval: EvalOptions = field(default_factory=EvalOptions)


def _profile(replies: list[list[str]]) -> dict | None:
    return metrics.style_profile(replies) if any(replies) else None


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def measure(model, tokenizer, data: GateData, opts: GateOptions = GateOptions()) -> dict:
    """One side's numbers (the model as it is now: the caller activates the adapter to measure)."""
    started = time.perf_counter()
    side: dict[str, Any] = {}
    if data.prompts:
        greedy = Sampling(n=1, max_new_tokens=opts.max_new_tokens, temperature=0.0)
        drafts = ["\n".join(reply_lines(c[0])) for c in generate(model, tokenizer, data.prompts, greedy)]
        distances = [edit_ratio(d, s) for d, s in zip(drafts, data.sent)]
        side["outcomes"] = {
            "edit_distance": sum(distances) / len(distances),
            "per_outcome": distances,
            "profile": _profile([reply_lines(d) for d in drafts]),
            "empty_drafts": sum(not d for d in drafts),
        }
    if data.conversations:
        replies = sample_replies(model, tokenizer, data.reply_prompts, opts.eval)
        real_profile = metrics.style_profile(data.real_replies) if data.real_replies else None
        profile = _profile(replies)
        side["conversations"] = {
            "perplexity": metrics.perplexity(model, data.conversations),
            "profile_distance": _num(metrics.profile_distance(profile, real_profile))
            if profile and real_profile else None,
            "distinct_2": _num(metrics.distinct_n([" ".join(r) for r in replies], 2)),
            "profile": profile,
        }
    log.info("gate side measured in %.1f s", time.perf_counter() - started)
    return side


def _check(name: str, parent, child, passed: bool, rule: str) -> dict:
    return {"check": name, "parent": parent, "child": child, "rule": rule, "passed": bool(passed)}


def decide(parent: dict, child: dict, sent: Sequence[str] = ()) -> dict:
    """Compare two sides from `measure`; the gate record with `decision` "promote" or "reject" and its reasons
    (and the style profile of the `sent` texts, for reading the drafts' profiles against).

    >>> side = lambda d, ppl: {"outcomes": {"edit_distance": d, "per_outcome": [d, d]},
    ...                        "conversations": {"perplexity": ppl, "profile_distance": 0.2, "distinct_2": 0.9}}
    >>> decide(side(0.30, 10.0), side(0.20, 10.2))["decision"]
    'promote'
    >>> decide(side(0.30, 10.0), side(0.20, 11.0))["reasons"]
    ['perplexity of your held-out turns: 10.00 -> 11.00 (allowed up to 10.50)']
    >>> decide(side(0.30, 10.0), side(0.295, 9.0))["reasons"]
    ['edit distance to what you sent: 0.300 -> 0.295 (needs at most 0.290, and more outcomes closer than farther)']
    """
    checks = []
    po, co = parent.get("outcomes"), child.get("outcomes")
    if not po or not co:
        checks.append(_check("held-out outcomes", 0, 0, False, "at least one held-out outcome to judge by"))
        wins = losses = 0
    else:
        pairs = list(zip(po["per_outcome"], co["per_outcome"]))
        wins = sum(c < p for p, c in pairs)
        losses = sum(c > p for p, c in pairs)
        limit = po["edit_distance"] - MIN_EDIT_GAIN
        checks.append(_check(
            "edit distance to what you sent", po["edit_distance"], co["edit_distance"],
            co["edit_distance"] <= limit and wins > losses,
            f"at most {limit:.3f}, and more outcomes closer than farther",
        ))
    pc, cc = parent.get("conversations"), child.get("conversations")
    if pc and cc:
        limit = pc["perplexity"] * (1 + PERPLEXITY_TOLERANCE)
        checks.append(_check("perplexity of your held-out turns", pc["perplexity"], cc["perplexity"],
                             cc["perplexity"] <= limit, f"up to {limit:.2f}"))
        if pc["profile_distance"] is not None and cc["profile_distance"] is not None:
            limit = pc["profile_distance"] + STYLE_TOLERANCE
            checks.append(_check("style distance to you", pc["profile_distance"], cc["profile_distance"],
                                 cc["profile_distance"] <= limit, f"up to {limit:.3f}"))
        if pc["distinct_2"] is not None and cc["distinct_2"] is not None:
            limit = pc["distinct_2"] - DISTINCT_TOLERANCE
            checks.append(_check("distinct-2", pc["distinct_2"], cc["distinct_2"], cc["distinct_2"] >= limit,
                                 f"at least {limit:.3f}"))
    reasons = [_reason(c) for c in checks if not c["passed"]]
    return {
        "decision": "reject" if reasons else "promote",
        "reasons": reasons,
        "checks": checks,
        "outcomes": {"wins": wins, "losses": losses, "ties": len(po["per_outcome"]) - wins - losses if po else 0},
        "tolerances": {"min_edit_gain": MIN_EDIT_GAIN, "perplexity": PERPLEXITY_TOLERANCE,
                       "style": STYLE_TOLERANCE, "distinct_2": DISTINCT_TOLERANCE},
        "parent": _public(parent),
        "child": _public(child),
        "sent_profile": _profile([reply_lines(t) for t in sent]),
    }


def _reason(c: dict) -> str:
    if c["check"] == "held-out outcomes":
        return "no held-out outcomes to judge by; keep approving and editing drafts"
    if c["check"] == "edit distance to what you sent":
        return f"{c['check']}: {c['parent']:.3f} -> {c['child']:.3f} (needs {c['rule']})"
    digits = 2 if c["check"].startswith("perplexity") else 3
    return f"{c['check']}: {c['parent']:.{digits}f} -> {c['child']:.{digits}f} (allowed {c['rule']})"


def _public(side: dict) -> dict:
    """A side as twin.json keeps it: numbers only, without the per-outcome list."""
    out = {k: dict(v) for k, v in side.items()}
    if "outcomes" in out:
        out["outcomes"].pop("per_outcome", None)
    return out


STYLE_ROWS = (("exclaim_share", "share of draft messages with '!'", ".2f"),
              ("lowercase_share", "share of draft messages in lowercase", ".2f"),
              ("chars_mean", "mean draft message length, chars", ".1f"))


def format_table(gate: dict) -> list[tuple[str, str, str, str]]:
    """Rows (measure, parent, child, verdict) for the terminal: every check, then the held-out drafts' style."""
    rows = []
    for c in gate["checks"]:
        spec = ".2f" if c["check"].startswith("perplexity") else ".3f"
        rows.append((c["check"], figure(c["parent"], spec), figure(c["child"], spec),
                     ("ok: " if c["passed"] else "FAILED: ") + c["rule"]))
    drafts = [(gate[side].get("outcomes") or {}).get("profile") or {} for side in ("parent", "child")]
    sent = gate.get("sent_profile") or {}
    for key, label, spec in STYLE_ROWS:
        if key in drafts[0] or key in drafts[1]:
            rows.append((f"{label} (you: {figure(sent.get(key), spec)})", figure(drafts[0].get(key), spec),
                         figure(drafts[1].get(key), spec), ""))
    return rows
