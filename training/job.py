"""`twin train`: the store in, a versioned adapter directory out.

Loads the base model (the embedded default when none is named), builds the dataset, trains LoRA weights,
and publishes `adapters/<name>-v<N>/` with its `twin.json` in one rename, so an interrupted run never leaves
half an adapter. The resolved settings are saved with the output.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from twin.config import Config, TrainingConfig
from twin.errors import NotFound
from twin.models import EMBEDDED_SPEC
from twin.paths import Home
from twin.prompts import FORMAT_NAME, FORMAT_VERSION, Conversation, render
from twin.store import Store
from twin import adapters
from training.dataset import Dataset, DatasetOptions, Sample, build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRequest:
    """What the command line asked for; None means: the twin.toml value."""

    base_model: str | None = None
    name: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    time_budget_minutes: float | None = None
    resume: bool = False
    canaries: bool = False
    train_on: str | None = None  # applied to the dataset options, not to the section

    def applied_to(self, training: TrainingConfig) -> TrainingConfig:
        """The section with the command line's values in place of twin.toml's (None: twin.toml's)."""
        asked = {"base_model": self.base_model, "name": self.name, "max_steps": self.max_steps,
                 "epochs": self.epochs, "time_budget_minutes": self.time_budget_minutes}
        return training.model_copy(update={k: v for k, v in asked.items() if v})


def _with_store_gap(opts: DatasetOptions, store: Store) -> DatasetOptions:
    """The options with the session gap ingest cut this store's sessions with, where it recorded one."""
    return replace(opts, session_gap=int(store.get_meta("session_gap") or opts.session_gap))


def plant_canaries(samples: tuple[Sample, ...], tokenizer, opts: DatasetOptions, seed: int):
    """Fake secrets planted 1, 4 and 16 times as owner lines in training conversations (Secret Sharer test)."""
    from training.canaries import make_canaries, plant

    canaries = make_canaries(seed)

    def insert(sample: Sample, text: str) -> Sample:
        turns = list(sample.conversation.turns)
        i = next(i for i, t in enumerate(turns) if t.role == "owner" and t.target)
        turns[i] = replace(turns[i], lines=(*turns[i].lines, text))
        conv = Conversation(sample.conversation.persona, tuple(turns))
        return replace(sample, conversation=conv, rendered=render(conv, tokenizer, opts.train_on, opts.max_tokens))

    return plant(samples, canaries, seed, insert), canaries


def _resume_name(home: Home, base: str) -> str:
    """The newest unfinished run of this name: reserved, checkpointed, never published."""
    from training.trainer import latest_checkpoint

    runs = [p for p in home.runs.glob(f"{base}-v*") if latest_checkpoint(p) and not (home.adapters / p.name).exists()]
    if not runs:
        raise NotFound(f"{home.runs}: no unfinished `{base}` run to resume; start one without --resume")
    return max(runs, key=lambda p: p.stat().st_mtime).name


def train_adapter(home: Home, training: TrainingConfig, data_opts: DatasetOptions, req: TrainRequest,
                  echo=print) -> Path:
    """Run the whole training stage; returns the published adapter directory. `training` is twin.toml's
    section and `data_opts` its dataset options (DatasetOptions.from_config); `req` overrides both."""
    from twin.models import load_base
    from training.trainer import hyperparameters, publish_adapter, train

    t = req.applied_to(training)
    base_spec = t.base_model
    home.ensure()
    with Store.open(home.db) as store:
        if store.stats()["owner_messages"] == 0:
            raise NotFound(f"{home.db}: no messages of yours yet; run `twin ingest EXPORT` first")
        started = time.perf_counter()
        model, tokenizer = load_base(base_spec, home.models, load_in_4bit=t.qlora)
        echo(f"base model loaded in {time.perf_counter() - started:.1f}s")
        opts = _with_store_gap(data_opts, store)
        if req.train_on:
            opts = replace(opts, train_on=req.train_on)
        data = build(store, tokenizer, opts)
    if not data.train:
        raise NotFound(f"{home.db}: no conversation in which you reply; dropped: {dict(data.dropped)}")
    summary = data.summary()
    echo(_summary_line(summary))
    train_samples, canaries = data.train, []
    if req.canaries:
        train_samples, canaries = plant_canaries(data.train, tokenizer, opts, t.seed)
    name = _resume_name(home, t.name) if req.resume else adapters.next_name(home.adapters, t.name)
    result = train(model, tokenizer, train_samples, t, home.runs / name, resume=req.resume)
    echo(f"trained {result.steps} steps, {result.tokens} tokens at {result.tokens_per_s:.0f} tokens/s, "
         f"final loss {result.final_loss:.3f} (stopped by {result.stopped_by})")
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return home.adapters / name  # under DDP only the main process writes the adapter
    return publish_adapter(result.model, home.adapters, name, {
        "base_model": base_spec or EMBEDDED_SPEC,
        # v2 is the format with memory; trained without it, the adapter drafts without it (v1).
        "prompt_format": {"name": FORMAT_NAME, "version": FORMAT_VERSION if opts.memory_tokens else 1},
        "data": {"fingerprint": data.fingerprint, **summary},
        "dataset_options": {**asdict(opts), "notes": sorted(opts.notes)},
        "hyperparameters": hyperparameters(t),
        "training": {"steps": result.steps, "tokens": result.tokens, "tokens_per_s": result.tokens_per_s,
                     "final_loss": result.final_loss, "stopped_by": result.stopped_by,
                     "memory_plan": result.memory_plan, "precision": result.precision},
        "canaries": [asdict(c) for c in canaries],
        "eval": None,
    })


def _summary_line(s: dict) -> str:
    dropped = ", ".join(f"{k} {n}" for k, n in s["dropped"].items()) or "none"
    return (f"{s['sessions']} conversations: {s['train_samples']} to train ({s['tokens']} tokens, "
            f"{s['target_tokens']} yours), {s['held_out_samples']} held out; dropped: {dropped}")


def rebuild_dataset(home: Home, cfg: Config, meta: dict, tokenizer) -> Dataset:
    """The dataset an adapter was trained on, rebuilt from the store with the options in its twin.json.

    twin.json keeps only the names of contacts with notes, not the notes: they come from twin.toml.
    """
    saved = {"memory_tokens": 0, **{k: v for k, v in meta["dataset_options"].items() if k != "notes"}}
    opts = DatasetOptions.from_config(cfg.training, cfg.ingest, cfg.owner, cfg.contacts, cfg.telegram)
    with Store.open(home.db) as store:
        return build(store, tokenizer, replace(_with_store_gap(opts, store), **saved))
