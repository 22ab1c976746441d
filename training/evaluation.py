"""`twin eval`: evidence that an adapter writes like its owner, on conversations it never saw.

On the held-out sessions (the most recent of each chat, rebuilt exactly as training split them):
- perplexity of the owner's turns under the base model and under the adapter;
- replies generated for each held-out context (the turns before the owner's last reply), compared with the
  owner's real reply there: style profile and its distance to the real one, distinct-2, and a classifier
  two-sample test (AUC 0.5 = a classifier cannot tell generated from real);
- with planted canaries (`twin train --canaries`), their exposure and whether greedy decoding leaks them;
- for an adapter trained with memory, the same adapter with and without the memory block (training/memory_eval.py).
Base and adapter side by side, as JSON, in the adapter's twin.json, and as `eval.png` beside it.

The base side depends only on the base model, the held-out data and the options, not on the adapter: an adapter
of the same base evaluated on the same held-out samples with the same options and canaries reuses it from that
adapter's twin.json (`base_key` there, `base_from` in the results; `fresh=True` computes it again). That halves a
second `twin eval` after a retrain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

from twin.config import Config
from twin.errors import ConfigError
from twin.decoding import PackedLinears, cpu_precision, merges
from twin.generation import Sampling, generate, stop_ids
from twin.paths import Home
from twin.prompts import DoesNotFit, prompt_ids
from twin.text import figure
from training import canaries, heldout, metrics
from twin import adapters
from training.dataset import Sample
from training.job import rebuild_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    limit: int | None = 64  # held-out samples used for generation (perplexity uses all)
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 0


def reply_contexts(samples: list[Sample], tokenizer, max_tokens: int) -> tuple[list[list[int]], list[list[str]]]:
    """(prompt ids, the owner's real reply lines) for each held-out sample: the context before its last reply."""
    points = reply_points(samples, tokenizer, max_tokens)
    return [prompt for _, prompt, _ in points], [real for _, _, real in points]


def reply_points(samples: list[Sample], tokenizer, max_tokens: int) -> list[tuple[int, list[int], list[str]]]:
    """(sample index, prompt ids, the owner's real reply lines) for each sample with a context before its last
    reply that fits in `max_tokens`; the prompt is a prefix of the sample's ids."""
    points = []
    for k, s in enumerate(samples):
        turns = list(s.turns)
        last = max(i for i, t in enumerate(turns) if t.role == "owner" and t.target)
        if last == 0:
            continue  # the owner opened the session: there is no context to reply to
        try:
            points.append((k, prompt_ids(s.conversation.persona, turns[:last], tokenizer, max_tokens),
                           list(turns[last].lines)))
        except DoesNotFit:
            continue
    return points


def reply_lines(text: str) -> list[str]:
    """A generated reply as its messages: `reply_lines(" ok \\n\\nsee you")` -> ['ok', 'see you']."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def sample_replies(model, tokenizer, prompts, opts: EvalOptions) -> list[list[str]]:
    """One sampled reply per prompt, as its messages: the learn gate's (`generate`'s random stream, which the
    gate's checks were measured with; `twin eval` samples through training.heldout instead)."""
    sampling = Sampling(n=1, max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, seed=opts.seed)
    return [reply_lines(c[0]) for c in generate(model, tokenizer, prompts, sampling)]


def _side(model, tokenizer, held_out, points, real_profile, opts: EvalOptions, planted) -> tuple[dict, list]:
    """The metrics of one model (base or adapter) on the held-out set, and its `token_nlls` there. One forward
    per sample serves both its perplexity and its reply's prefill (training.heldout)."""
    t0 = time.perf_counter()
    prompt_lens: list[int | None] = [None] * len(held_out)
    for k, prompt, _ in points:
        prompt_lens[k] = len(prompt)
    nlls, replies = heldout.nlls_and_replies(
        model, [(s.input_ids, s.loss_mask) for s in held_out], prompt_lens, max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature, top_p=Sampling.top_p, seed=opts.seed, stops=stop_ids(tokenizer))
    ppl = metrics.perplexity_of(nlls, f"{len(held_out)} held-out samples")
    generated = [reply_lines(tokenizer.decode(replies[k], skip_special_tokens=True)) for k, _, _ in points]
    real_lines = [real for _, _, real in points]
    nonempty = [g for g in generated if g] or [[""]]
    gen_messages = [m for g in generated for m in g]
    real_messages = [m for r in real_lines for m in r]
    profile = metrics.style_profile(nonempty)
    side = {
        "perplexity": ppl,
        "profile": profile,
        "profile_distance": metrics.profile_distance(profile, real_profile),
        "distinct_2": metrics.distinct_n([" ".join(g) for g in generated], 2),
        "classifier_auc": metrics.classifier_auc(real_messages, gen_messages, seed=opts.seed),
        "empty_replies": sum(not g for g in generated),
        "examples": len(generated),
    }
    if planted:
        side["canaries"] = [_canary_result(model, tokenizer, c) for c in planted]
    log.info("eval side done in %.1f s", time.perf_counter() - t0)
    return side, nlls


def _canary_result(model, tokenizer, canary) -> dict:
    ids = tokenizer(canary.prefix, add_special_tokens=False)["input_ids"]
    return {"repeats": canary.repeats, "exposure": canaries.exposure(model, tokenizer, canary, ids),
            "leaked": canaries.leaks(model, tokenizer, ids, canary.secret)}


def base_key(base, meta: dict, held_out: list[Sample], points, opts: EvalOptions, precision: str) -> str:
    """A digest of everything the base side's results depend on: twin's version, the base model (its name and
    its weight files' sizes and times, or the hub revision), dtype and device, the precision its projections
    run at (`run_precision`), the options, the planted canaries, and the held-out samples' tokens, targets and
    reply points. Nothing of it is stored but the digest."""
    from twin import __version__

    where = Path(str(getattr(base.config, "_name_or_path", "") or ""))
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in where.glob("*")
                   if f.suffix in (".safetensors", ".bin")) if where.is_dir() else []
    first = next(base.parameters())
    digest = hashlib.sha256(json.dumps({
        "twin": __version__, "base_model": meta.get("base_model"), "weights": files,
        "revision": getattr(base.config, "_commit_hash", None), "dtype": str(first.dtype),
        "device": first.device.type, "precision": precision, "options": asdict(opts),
        "canaries": meta.get("canaries") or [], "points": [(k, len(prompt), real) for k, prompt, real in points],
    }, sort_keys=True, default=str).encode())
    for s in held_out:
        digest.update(array("q", s.input_ids).tobytes())
        digest.update(bytes(map(bool, s.loss_mask)))
    return digest.hexdigest()[:32]


def run_precision(model, precision: str) -> str:
    """What the projections run at: `precision` ("fp32", "bf16") where they are packed for the CPU, else the
    weights' own dtype ("bfloat16" on a GPU)."""
    if PackedLinears.usable(model, precision):
        return precision
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def reusable_base(adapters_dir: Path, key: str, skip: str) -> tuple[str, dict] | None:
    """(adapter name, its eval's base side) from an earlier eval with the same `base_key`, if any."""
    for other in reversed(adapters.list_adapters(adapters_dir)):
        if other.name == skip:
            continue
        try:
            done = other.meta.get("eval") or {}
        except ConfigError:
            continue  # an unreadable twin.json is that adapter's problem, not this eval's
        if done.get("base_key") == key and isinstance(done.get("base"), dict):
            return other.name, done["base"]
    return None


def evaluate(home: Home, cfg: Config, adapter_name: str | None, opts: EvalOptions = EvalOptions(),
             fresh: bool = False) -> dict:
    """Evaluate an adapter against its base; writes the results into its twin.json and eval.png. The base side
    comes from an earlier eval with the same base, data and options unless `fresh`."""
    from peft import PeftModel

    from twin.models import load_base

    adapter = adapters.find_adapter(home.adapters, adapter_name)
    meta = adapter.meta
    base, tokenizer = load_base(meta.get("base_model"), home.models)
    data = rebuild_dataset(home, cfg, meta, tokenizer)
    if not data.held_out:
        raise adapters.NotFound(f"{home.db}: no held-out conversations to evaluate on; ingest more history")
    drift = data.fingerprint != meta.get("data", {}).get("fingerprint")
    held_out = list(data.held_out)
    max_tokens = meta["dataset_options"]["max_tokens"]
    points = reply_points(held_out, tokenizer, max_tokens)[:opts.limit]
    real = [r for _, _, r in points]
    planted = [canaries.Canary(**c) for c in meta.get("canaries") or []]
    real_profile = metrics.style_profile(real)
    precision = cpu_precision(cfg.drafting.precision)  # what drafts will run at, so what is measured
    key = base_key(base, meta, held_out, points, opts, run_precision(base, precision))
    earlier = None if fresh else reusable_base(home.adapters, key, adapter.name)
    model = PeftModel.from_pretrained(base, str(adapter.path))
    packs = None  # the weights as they are now, packed for oneDNN's CPU kernels (twin.decoding.PackedLinears)
    if earlier:
        base_side = earlier[1]
        log.info("base side reused from %s's eval (same base, held-out data and options)", earlier[0])
    else:
        packs = PackedLinears(model, precision)
        with model.disable_adapter(), packs.active():
            base_side, _ = _side(model, tokenizer, held_out, points, real_profile, opts, planted)
    merged = merges(model, precision)
    if merged:
        model.merge_adapter()  # the adapter's side runs at the base's cost (fp32: merging is exact enough)
        packs = None  # made for the weights before the merge
    if packs is None:
        packs = PackedLinears(model, precision)
    memory = None
    with packs.active(beside=None if merged else model.active_adapter):
        adapter_side, adapter_nlls = _side(model, tokenizer, held_out, points, real_profile, opts, planted)
        if meta["dataset_options"].get("memory_tokens"):
            from training.memory_eval import compare

            t0 = time.perf_counter()
            memory = compare(model, tokenizer, held_out, home.db, meta["dataset_options"].get("train_on", "owner"),
                             with_memory=adapter_nlls)
            log.info("memory comparison done in %.1f s", time.perf_counter() - t0)
    results = {
        "adapter": adapter_side,
        "base": base_side,
        "real": {"profile": real_profile, "distinct_2": metrics.distinct_n([" ".join(r) for r in real])},
        "held_out": {"samples": len(held_out), "replies": len(points), "data_changed_since_training": drift},
        "ratios": {"perplexity": adapter_side["perplexity"] / base_side["perplexity"]},
        "memory": memory,
        "base_key": key,
        "precision": run_precision(base, precision),
        "base_from": earlier[0] if earlier else None,
    }
    meta["eval"] = results
    adapters.write_json_atomic(adapter.path / "twin.json", meta)
    metrics.chart({"base": base_side, "adapter": adapter_side, "real": results["real"], "memory": memory},
                  adapter.path / "eval.png")
    results["chart"] = str(adapter.path / "eval.png")
    results["name"] = adapter.name
    return results


def format_table(results: dict) -> list[tuple[str, str, str]]:
    """Rows (metric, base, adapter) for the terminal."""
    b, a = results["base"], results["adapter"]

    rows = [
        ("perplexity of your turns", figure(b["perplexity"], ".2f"), figure(a["perplexity"], ".2f")),
        ("style distance to you (0 = same)", figure(b["profile_distance"]), figure(a["profile_distance"])),
        ("distinct-2", figure(b["distinct_2"]), figure(a["distinct_2"])),
        ("classifier AUC (0.5 = indistinguishable)", figure(b["classifier_auc"]), figure(a["classifier_auc"])),
        ("lowercase share (you: " + figure(results["real"]["profile"].get("lowercase_share"), ".2f") + ")",
         figure(b["profile"].get("lowercase_share"), ".2f"), figure(a["profile"].get("lowercase_share"), ".2f")),
        ("mean message length, chars (you: " + figure(results["real"]["profile"].get("chars_mean"), ".1f") + ")",
         figure(b["profile"].get("chars_mean"), ".1f"), figure(a["profile"].get("chars_mean"), ".1f")),
    ]
    if m := results.get("memory"):
        for key, label in (("perplexity", "with memory / without: perplexity"),
                           ("fact_perplexity", f"with memory / without: facts ({m['fact_words']} words)")):
            rows.append((label, figure(m[key]["with"], ".2f"), figure(m[key]["without"], ".2f")))
    for cb, ca in zip(b.get("canaries", []), a.get("canaries", [])):
        rows.append((f"canary x{cb['repeats']} exposure (bits) / leaked",
                     f"{cb['exposure']:.1f} / {'yes' if cb['leaked'] else 'no'}",
                     f"{ca['exposure']:.1f} / {'yes' if ca['leaked'] else 'no'}"))
    return rows
