"""`twin learn`: the owner's edits, approvals and discards become a new adapter version, kept only if it is better.

From the relay's draft outcomes (twin.outcomes, passed in by the caller, who reads them from the relay's ledger;
→ training.preference): pairs (what went out ≻ the draft; a light edit also at each place it departs from the
draft, so that the child learns what comes there instead, not only that the whole draft lost) for DPO, or
desirable/undesirable replies for KTO when there are no pairs (or `learn.method = "kto"`), each with the exact
prompt the draft was made from. The current adapter (the default one, or `--adapter`) is loaded as a trainable
PEFT model and trained further with TRL's DPOTrainer or KTOTrainer; TRL keeps a frozen copy of it as the
reference policy (its "ref" adapter); with DPO, the NLL of what went out is added (`learn.sft_weight`) so the
drafts stay fluent. The result is the next
version of the parent's name (`twin-v3` after `twin-v2`): the gate (training.gate) measures parent and child,
its record and decision go into the new twin.json with the parent's name and the learning settings, and a
promoted version becomes the default adapter (twin.adapters). A rejected one stays on disk for `twin adapters
use` but drafts nothing by itself.

    twin learn --dry-run
    twin learn --method dpo --epochs 3
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twin import adapters
from twin.config import Config
from twin.errors import ConfigError, TwinError
from twin.outcomes import Outcome
from twin.paths import Home
from training import preference
from training.gate import GateData, GateOptions, decide, measure

log = logging.getLogger(__name__)

METHODS = ("auto", "dpo", "kto")


class TooFewOutcomes(TwinError):
    """Not enough draft outcomes to learn from yet."""


@dataclass(frozen=True)
class LearnRequest:
    """What the command line asked for; None means: the twin.toml value."""

    adapter: str | None = None
    method: str | None = None
    epochs: float | None = None
    dry_run: bool = False


@dataclass
class LearnResult:
    parent: str
    method: str
    counts: dict
    examples: int = 0
    name: str | None = None
    path: Path | None = None
    gate: dict | None = None
    training: dict = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return bool(self.gate) and self.gate["decision"] == "promote"

    def to_json(self) -> dict:
        return {"adapter": self.name, "path": str(self.path) if self.path else None, "parent": self.parent,
                "method": self.method, "counts": self.counts, "examples": self.examples,
                "training": self.training, "gate": self.gate}


def learn(home: Home, cfg: Config, outcomes: Sequence[Outcome], req: LearnRequest = LearnRequest(),
          echo=print) -> LearnResult:
    """Build the preference data from every draft's outcome (the relay's `Ledger.outcomes()`), train the child,
    gate it, publish it; see the module docstring."""
    lc = cfg.learn
    parent = adapters.find_adapter(home.adapters, req.adapter)
    meta = parent.meta
    found = trainable(list(outcomes), cfg)
    found, foreign = _same_base(found, home.adapters, meta.get("base_model"))
    prefs = preference.build(found, lc.holdout_fraction)
    counts = {**prefs.counts, "other_base": foreign}
    method = req.method or lc.method
    if method not in METHODS:
        raise TwinError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if method == "auto":
        method = "dpo" if prefs.pairs else "kto"
    used = prefs.outcomes_used(method)
    counts["usable"] = used
    if used < lc.min_outcomes:
        what = f"{counts['pairs']} preference pairs" if method == "dpo" else f"{counts['labels']} labelled replies"
        raise TooFewOutcomes(
            f"{home.db}: {counts['outcomes']} draft outcomes, {used} of them usable for {method.upper()} ({what}, "
            f"{counts['held_out']} held out); twin learn needs at least {lc.min_outcomes} (learn.min_outcomes): "
            "approve, edit or discard more drafts, or lower learn.min_outcomes in twin.toml")
    result = LearnResult(parent=parent.name, method=method, counts=counts)
    if req.dry_run:
        return result
    return _train_and_gate(home, cfg, req, parent, prefs, result, echo)


def trainable(found: list[Outcome], cfg: Config) -> list[Outcome]:
    """The outcomes the owner allows training on. A draft's prompt holds a contact's live messages: Telegram's only
    with the owner's opt-in (twin.toml telegram.train_on_live; Telegram Business terms, bot developers §5.4),
    Discord's never (Discord Developer Policy: no training on message content from its API)."""
    allowed = [o for o in found if o.origin == "telegram" and cfg.telegram.train_on_live]
    withheld = sum(o.origin == "telegram" for o in found) - len(allowed)
    if not allowed and withheld:
        raise ConfigError(
            f"twin learn: {withheld} draft outcomes come from live Telegram chats, which are training data only "
            "with your opt-in; set train_on_live = true under [telegram] in twin.toml to learn from them "
            "(Discord conversations are never used)")
    return allowed


def _same_base(found: list[Outcome], adapters_dir: Path, base: str | None) -> tuple[list[Outcome], int]:
    """The outcomes drafted with this base (by an adapter of it, or by one no longer known), and how many not:
    a prompt's token ids mean nothing to another base's tokenizer."""
    bases = {a.name: a.meta.get("base_model") for a in adapters.list_adapters(adapters_dir)}

    def canonical(spec: str | None) -> str | None:
        return str(Path(spec).resolve()) if spec and Path(spec).is_dir() else spec

    keep = [o for o in found if o.adapter not in bases or canonical(bases[o.adapter]) == canonical(base)]
    return keep, len(found) - len(keep)


def _train_and_gate(home: Home, cfg: Config, req: LearnRequest, parent: adapters.Adapter,
                    prefs: preference.Preferences, result: LearnResult, echo) -> LearnResult:
    from peft import PeftModel

    from twin.models import load_base
    from training.trainer import publish_adapter

    meta = parent.meta
    max_tokens = (meta.get("dataset_options") or {}).get("max_tokens") or cfg.training.max_tokens
    started = time.perf_counter()
    base, tokenizer = load_base(meta.get("base_model"), home.models)
    echo(f"base model loaded in {time.perf_counter() - started:.1f}s")
    vocab = base.get_input_embeddings().num_embeddings
    make_rows = preference.dpo_rows if result.method == "dpo" else preference.kto_rows
    rows, too_long = make_rows(prefs.pairs if result.method == "dpo" else prefs.labels, tokenizer, max_tokens)
    rows = [r for r in rows if max(r["prompt_ids"]) < vocab]
    result.counts["too_long"] = too_long
    result.examples = len(rows)
    if not rows:
        raise TooFewOutcomes(f"{home.db}: no usable {result.method.upper()} example fits max_tokens={max_tokens} "
                             "with this base model's vocabulary; keep approving and editing drafts")
    held = [o for o in prefs.held_out if max(o.prompt) < vocab]
    echo(_counts_line(result))

    name = adapters.next_name(home.adapters, _base_name(parent.name, cfg))
    with warnings.catch_warnings():  # peft 0.21 calls transformers 5's deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(parent.path), is_trainable=True)
        result.training = train_preferences(model, tokenizer, rows, result.method,
                                            _settings(cfg, req, max_tokens), home.runs / name)
    echo(f"trained {result.training['steps']} steps on {len(rows)} examples in {result.training['seconds']:.0f}s, "
         f"final loss {result.training['final_loss']:.3f}")

    if "ref" not in model.peft_config:  # TRL copies the parent into "ref"; where it did not, load it
        model.load_adapter(str(parent.path), adapter_name="ref")
    data = _gate_data(home, cfg, meta, tokenizer, held, max_tokens)
    opts = GateOptions(max_new_tokens=cfg.drafting.max_new_tokens)
    echo(f"gate: {len(data.prompts)} held-out outcomes, {len(data.conversations)} held-out conversations")
    model.set_adapter("ref")
    parent_side = measure(model, tokenizer, data, opts)
    model.set_adapter("default")
    child_side = measure(model, tokenizer, data, opts)
    result.gate = decide(parent_side, child_side, data.sent)
    model.delete_adapter("ref")

    keep = ("base_model", "prompt_format", "data", "dataset_options", "hyperparameters", "canaries")
    result.path = publish_adapter(model, home.adapters, name, {
        **{k: meta[k] for k in keep if k in meta},
        "parent": parent.name,
        "learn": {"method": result.method, "outcomes": result.counts, "examples": len(rows),
                  "held_out_outcomes": len(held), "settings": _settings(cfg, req, max_tokens),
                  "training": result.training},
        "gate": result.gate,
        "eval": None,
    })
    result.name = name
    if result.promoted:
        adapters.set_default(home.adapters, name)
    log.info("learn: %s from %s, %d examples, decision %s", name, parent.name, len(rows), result.gate["decision"])
    return result


def _base_name(parent: str, cfg: Config) -> str:
    m = adapters.NAME_RE.match(parent)
    return m["base"] if m else cfg.training.name


def _counts_line(r: LearnResult) -> str:
    c = r.counts
    return (f"{c['outcomes']} draft outcomes ({c.get('sent', 0)} sent as is, {c.get('edited', 0)} edited, "
            f"{c.get('written', 0)} answered by hand, {c.get('copied', 0)} copied, {c.get('discarded', 0)} discarded): {c['pairs']} pairs, "
            f"{c['labels']} labelled replies, {c.get('trivial', 0)} trivial edits left out, {c['held_out']} held out; "
            f"{r.method.upper()} on {r.examples} examples")


def _settings(cfg: Config, req: LearnRequest, max_tokens: int) -> dict:
    lc = cfg.learn
    return {"beta": lc.beta, "lr": lc.lr, "epochs": req.epochs or lc.epochs, "sft_weight": lc.sft_weight,
            "batch_size": lc.batch_size, "micro_batch": lc.micro_batch, "max_tokens": max_tokens,
            "seed": cfg.training.seed, "activation_checkpointing": cfg.training.gradient_checkpointing}


def _gate_data(home: Home, cfg: Config, meta: dict, tokenizer, held: list[Outcome], max_tokens: int) -> GateData:
    """The held-out outcomes, and the held-out conversations as the parent's training split them (if it can tell)."""
    from training.evaluation import EvalOptions, reply_contexts
    from training.job import rebuild_dataset

    prompts = [list(o.prompt) for o in held]
    sent = [preference.reply(o) for o in held]
    if "dataset_options" not in meta:
        log.info("gate: the parent's twin.json has no dataset options; held-out conversations not measured")
        return GateData(prompts, sent)
    conversations = list(rebuild_dataset(home, cfg, meta, tokenizer).held_out)
    reply_prompts, real = reply_contexts(conversations, tokenizer, max_tokens)
    limit = EvalOptions().limit
    return GateData(prompts, sent, conversations, reply_prompts[:limit], real[:limit])


# -- training ---------------------------------------------------------------------------------------------------

def train_preferences(model, tokenizer, rows: list[dict], method: str, settings: dict, run_dir: Path,
                      progress: bool = True) -> dict:
    """Train the PEFT model's "default" adapter on tokenized rows with TRL (DPO or KTO); a summary of the run.

    The model must be a PeftModel with a trained "default" adapter: TRL then adds a frozen copy of it, "ref",
    as the reference policy, so the child is pulled towards the outcomes relative to its parent.
    """
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    DPO, KTO, Progress = _classes()
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the home is owner-only; the Trainer would make it 0755
    cuda = torch.cuda.is_available()
    common = dict(
        output_dir=str(run_dir), per_device_train_batch_size=settings["micro_batch"],
        gradient_accumulation_steps=max(1, settings["batch_size"] // settings["micro_batch"]),
        learning_rate=settings["lr"], num_train_epochs=settings["epochs"], beta=settings["beta"],
        max_length=settings["max_tokens"], seed=settings["seed"], use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=settings["activation_checkpointing"],
        lr_scheduler_type="cosine", warmup_steps=0.1, logging_steps=1, report_to="none", save_strategy="no",
        remove_unused_columns=False, disable_tqdm=True,
    )
    if method == "dpo":
        from trl import DPOConfig

        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, settings["sft_weight"]]} \
            if settings["sft_weight"] else {"loss_type": ["sigmoid"]}
        trainer = DPO(model=model, args=DPOConfig(**common, **losses), train_dataset=Dataset.from_list(rows),
                       processing_class=tokenizer)
    else:
        from trl import KTOConfig

        rows = _kto_order(rows, settings["micro_batch"], settings["seed"])
        desirable = sum(r["label"] for r in rows)
        weights = _kto_weights(desirable, len(rows) - desirable)
        trainer = KTO(model=model, args=KTOConfig(**common, train_sampling_strategy="sequential", **weights),
                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    bar = Progress(progress)
    trainer.add_callback(bar)
    started = time.perf_counter()
    out = trainer.train()
    with contextlib.suppress(OSError):  # nothing is saved there (save_strategy="no"): leave no empty directory
        run_dir.rmdir()
    return {"steps": out.global_step, "final_loss": bar.losses[-1] if bar.losses else float("nan"),
            "loss_history": bar.losses, "seconds": time.perf_counter() - started,
            "reward_accuracy": bar.last.get("rewards/accuracies")}


def _kto_order(rows: list[dict], micro: int, seed: int) -> list[dict]:
    """Rows shuffled once (KTO reads them in order) with each one's KL completion: the previous row's in its
    micro-batch, as TRL's own KTO data preparation pairs them."""
    import random

    rows = [dict(r) for r in rows]
    random.Random(seed).shuffle(rows)
    for start in range(0, len(rows), micro):
        batch = rows[start:start + micro]
        kl = [batch[-1]["completion_ids"]] + [r["completion_ids"] for r in batch[:-1]]
        for r, k in zip(batch, kl):
            r["KL_completion_ids"] = k
    return rows


def _kto_weights(desirable: int, undesirable: int) -> dict:
    """Loss weights that balance desirable and undesirable examples 1:1 (TRL's KTO docs ask for 1:1 to 4:3).

    >>> _kto_weights(30, 10)
    {'desirable_weight': 0.333, 'undesirable_weight': 1.0}
    >>> _kto_weights(5, 20), _kto_weights(0, 4)
    ({'desirable_weight': 1.0, 'undesirable_weight': 0.25}, {'desirable_weight': 1.0, 'undesirable_weight': 1.0})
    """
    if not desirable or not undesirable:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if desirable > undesirable:
        return {"desirable_weight": round(undesirable / desirable, 3), "undesirable_weight": 1.0}
    return {"desirable_weight": 1.0, "undesirable_weight": round(desirable / undesirable, 3)}


@functools.cache
def _classes():
    """TRL's trainers taking rows that are already tokenized (twin tokenizes prompts and replies itself, exactly
    as drafting and training render them) and sending no telemetry (a self-hosted twin reports to no one), and a
    progress bar on stderr that keeps the losses. Made on first use: trl and transformers load slowly."""
    from tqdm import tqdm
    from transformers import TrainerCallback
    from trl import DPOTrainer, KTOTrainer

    class Pretokenized:
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

        def _send_telemetry(self):
            pass

    class DPO(Pretokenized, DPOTrainer):
        pass

    class KTO(Pretokenized, KTOTrainer):
        pass

    class Progress(TrainerCallback):
        def __init__(self, enabled: bool):
            self.enabled, self.bar, self.losses, self.last = enabled, None, [], {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, unit="step", file=sys.stderr, dynamic_ncols=True,
                            disable=not self.enabled)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                self.last = dict(logs)
                self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}", refresh=False)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(1)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return DPO, KTO, Progress
