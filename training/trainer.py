"""LoRA training: packed rows, loss only on target tokens, a plain loop; exercised by `twin train`.

Samples are packed into full rows without attention across them, and the lm_head runs only on the positions
whose next token is a target (training.packing); the loss is in fp32, averaged over all target tokens of the
optimizer step on every rank alike.

Before the first step training.budget picks the micro-batch, accumulation and checkpointed decoder layers that fit
`[training] max_memory_gb` (same rows per step). During the loop two swaps keep fewer bytes per decoder layer
for the backward: LoRA dropout that keeps the dropped positions, drawn sparsely, and no dropped copy
(training.lean_dropout: nn.Dropout's distribution, not its random stream) and the MLP's act(gate) * up keeping
gate and up only (training.lean_mlp, exact); the model is restored after, and the adapter keeps its format.
On a CPU with native bf16 the forward runs under bf16 autocast (`[training] precision`, mixed_precision), its
LoRA projections multiplying with bf16 copies of the frozen weights made once (training.mixed_lora), and
glibc's heap is trimmed after a micro-batch where the pages it holds free could push the plan past its budget
(training.budget.return_freed_memory).

The same code runs under `accelerate launch` or torchrun (DDP: deploy/accelerate/); on one process
Accelerator is a no-op. Checkpoints (`run_dir/checkpoint-<step>/`) hold the adapter, optimizer, scheduler,
RNG states and the step; the data order is a pure function of the seed, so a resumed run continues exactly
where it stopped. The adapter is plain LoRA that vLLM loads: no modules_to_save, no new tokens, a rank
vLLM allows.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from training import budget
from training.lean_dropout import lean_dropout
from training.lean_mlp import lean_mlp
from training.mixed_lora import mixed_lora
from training.packing import (
    MIXED_ROW_MULTIPLE, TrainingError, Sample, TargetLoss, use_segment_attention, check_packing, Prepared, prepare,
    epoch_steps, collate,
)
from twin.config import VLLM_LORA_RANKS, TrainingConfig
from twin.decoding import cpu_precision

log = logging.getLogger(__name__)

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# What twin.json's "hyperparameters" and a checkpoint's "config" hold, in this order (the adapter format).
HYPERPARAMETERS = ("r", "alpha", "dropout", "target_modules", "lr", "weight_decay", "warmup_ratio", "max_grad_norm",
                   "grad_accum", "micro_batch_rows", "max_tokens", "epochs", "max_steps", "time_budget_s", "seed",
                   "gradient_checkpointing", "qlora", "save_every", "keep_checkpoints", "progress", "precision")


def hyperparameters(cfg: TrainingConfig) -> dict:
    """The trainer's settings from the section, as twin.json and the checkpoints record them (the dataset's
    settings are recorded apart, as "dataset_options")."""
    return {name: getattr(cfg, name) for name in HYPERPARAMETERS}


@dataclass
class TrainResult:
    steps: int
    tokens: int  # real (unpadded) tokens processed by this call, all ranks
    tokens_per_s: float
    final_loss: float
    loss_history: list[float]
    stopped_by: Literal["steps", "epochs", "time_budget"]
    model: nn.Module = field(repr=False)  # the PeftModel, unwrapped
    checkpoint: Path | None = None
    memory_plan: str = ""  # training.budget.Plan.describe()
    precision: str = "fp32"  # what the forward ran at: "fp32", "bf16 mixed" or the weights' dtype ("bfloat16")


# --- the model -------------------------------------------------------------------------------------------


def lora_targets(model: nn.Module) -> list[str]:
    """Names of the linear projections to adapt: Llama's seven when present, else every nn.Linear but the head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # transformers' Conv1D (GPT-2 style) is a linear layer with transposed weights; peft adapts it too.
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D") and m is not head}
    if set(LLAMA_PROJECTIONS) <= names:
        return list(LLAMA_PROJECTIONS)
    names.discard("lm_head")
    if not names:
        raise TrainingError(f"{type(model).__name__}: no linear layers to put LoRA on")
    return sorted(names)


def add_lora(model: nn.Module, cfg: TrainingConfig):
    """The model wrapped as a PeftModel with fresh LoRA weights on its linear projections (seeded)."""
    from peft import LoraConfig, get_peft_model

    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(cfg.seed)
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                        target_modules=list(cfg.target_modules or lora_targets(model)), task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 calls transformers 5's deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(model, config)


def mixed_precision(model, cfg: TrainingConfig, device) -> torch.dtype | None:
    """The dtype the forward runs at under torch.autocast, or None to run at the weights' own dtype.

    Only fp32 weights (a CPU) are run mixed: `[training] precision` "bf16", or "auto" where the CPU multiplies
    bf16 natively (twin.decoding.native_bf16). The LoRA weights, their gradients, AdamW's moments and the loss
    stay fp32; the projections' products run in bf16. Weights already in bf16 (a GPU) set the precision alone.
    """
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    if causal.get_input_embeddings().weight.dtype != torch.float32:
        return None
    wanted = cpu_precision(cfg.precision) if torch.device(device).type == "cpu" else cfg.precision
    return torch.bfloat16 if wanted == "bf16" else None


def memory_plan(model, cfg: TrainingConfig, device, mixed: torch.dtype | None = None) -> budget.Plan:
    """The micro-batch, accumulation and checkpointed layers that fit training.max_memory_gb (default: what the
    machine, or the GPU, has free), with the forward at `mixed` (mixed_precision); a TrainingError naming the
    setting when nothing fits."""
    limit = budget.budget_bytes(cfg.max_memory_gb, device)
    shape = budget.Shape.of(model, mixed)
    if torch.device(device).type == "cpu":  # the process itself, tokenizer and data included, with its weights
        shape = replace(shape, resident=budget.process_bytes(model))
    try:
        return budget.choose(shape, cfg.max_tokens, cfg.micro_batch_rows, cfg.grad_accum, limit,
                             checkpoint_all=cfg.gradient_checkpointing)
    except budget.DoesNotFit as e:
        where = (f"training.max_memory_gb = {cfg.max_memory_gb:g}" if cfg.max_memory_gb else
                 f"{limit / budget.GB:.1f} GB free on this machine (training.max_memory_gb unset)")
        raise TrainingError(f"{where} is too little to train at max_tokens = {cfg.max_tokens}: the smallest plan {e}; "
                            "raise training.max_memory_gb (or free memory), lower training.max_tokens, or use a "
                            "smaller base model") from None


# --- the loop --------------------------------------------------------------------------------------------


def train(model, tokenizer, train_samples: Sequence[Sample], cfg: TrainingConfig, run_dir: Path,
          resume: bool = False) -> TrainResult:
    """Train LoRA weights on the samples; checkpoints into run_dir. The model is a base model or a PeftModel."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import PeftModel
    from transformers import get_cosine_schedule_with_warmup

    # Several processes without CUDA (torchrun/accelerate launch on CPU): DDP over gloo, which accelerate
    # only sets up when told the run is on CPU.
    acc = Accelerator(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    set_seed(cfg.seed)
    if cfg.qlora and not getattr(model, "is_loaded_in_4bit", False):
        raise TrainingError("training.qlora is on but the base was not loaded in 4 bit; "
                            "load it with load_base(..., load_in_4bit=True) on a CUDA machine")
    peft_model = model if isinstance(model, PeftModel) else add_lora(model, cfg)
    vocab = peft_model.get_base_model().get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise TrainingError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab} embeddings; "
                            "twin never resizes embeddings (vLLM adapters cannot carry new tokens)")
    data = prepare(train_samples, cfg, vocab)
    mixed = mixed_precision(peft_model, cfg, acc.device)
    plan = memory_plan(peft_model, cfg, acc.device, mixed)  # a run that cannot fit stops here, before any step
    budget.apply_checkpointing(peft_model, plan.checkpointed_layers)
    trim = budget.return_freed_memory(plan) if acc.device.type == "cpu" else None
    if cfg.progress and acc.is_main_process:
        print(plan.describe(), file=sys.stderr)
    log.info("%s", plan.describe())
    batching = cfg.model_copy(update={"micro_batch_rows": plan.micro_batch_rows, "grad_accum": plan.grad_accum})
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    total = cfg.max_steps or math.ceil(cfg.epochs * len(epoch_steps(data, batching, 0, acc.num_processes)))

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    # The scheduler stays outside prepare(): accelerate would step it once per process.
    loss_fn, optimizer = acc.prepare(TargetLoss(peft_model), optimizer)
    run = Run(acc, peft_model, loss_fn, optimizer, scheduler, data, cfg, Path(run_dir), pad_id, total, batching,
              plan.describe(), mixed, trim)
    causal = peft_model.get_base_model()
    previous_attention = use_segment_attention(causal)
    try:
        check_packing(peft_model, acc.device)
        # Exact swaps that keep fewer bytes per layer for the backward (the budget's constants assume them), and
        # under mixed precision LoRA projections without autocast's recasts.
        with lean_dropout(peft_model), lean_mlp(peft_model), mixed_lora(peft_model, mixed):
            return _loop(run, resume)
    finally:
        if previous_attention:
            causal.config._attn_implementation = previous_attention


@dataclass
class Run:
    """Everything the loop works with."""

    acc: object  # accelerate.Accelerator
    model: nn.Module  # the PeftModel, unwrapped
    loss_fn: nn.Module  # TargetLoss, wrapped by accelerate (DDP) where it applies
    optimizer: object
    scheduler: object
    data: Prepared
    cfg: TrainingConfig
    run_dir: Path
    pad_id: int
    total: int  # optimizer steps
    batching: TrainingConfig  # cfg with the memory plan's micro-batch and accumulation (same rows per step)
    memory_plan: str = ""
    mixed: torch.dtype | None = None  # the forward's autocast dtype (mixed_precision), None: the weights' dtype
    trim: Callable[[], None] | None = None  # training.budget.return_freed_memory's, called after each micro-batch

    def forward_precision(self):
        """The context the forward runs in: torch.autocast at `mixed`, or nothing."""
        if self.mixed is None:
            return contextlib.nullcontext()
        return torch.autocast(self.acc.device.type, dtype=self.mixed)

    @property
    def row_multiple(self) -> int:
        """What micro-batch widths are rounded up to. oneDNN, which runs the bf16 products on a CPU, keeps kernels
        for every shape it meets: rows of any length grew the process by ~7 MB per micro-batch on SmolLM2."""
        return MIXED_ROW_MULTIPLE if self.mixed is not None and self.acc.device.type == "cpu" else 1

    @property
    def precision(self) -> str:
        """What the forward ran at, for twin.json: "bf16 mixed", "fp32", or the weights' dtype ("bfloat16")."""
        if self.mixed is not None:
            return "bf16 mixed"  # mixed_precision gives bf16 only
        dtype = self.model.get_base_model().get_input_embeddings().weight.dtype
        return "fp32" if dtype == torch.float32 else str(dtype).removeprefix("torch.")


def _loop(run: Run, resume: bool) -> TrainResult:
    """The optimizer steps from the start or the last checkpoint to the end, the time budget or max_steps."""
    from tqdm import tqdm

    acc, data, cfg, total = run.acc, run.data, run.cfg, run.total
    world, rank = acc.num_processes, acc.process_index
    per_epoch = len(epoch_steps(data, run.batching, 0, world))
    step, losses = 0, []
    if resume and (last := latest_checkpoint(run.run_dir)):
        step, losses = load_checkpoint(last, run, world, rank)
        log.info("resumed from %s at step %d of %d", last.name, step, total)
    start_step, tokens, started = step, 0, time.monotonic()
    bar = tqdm(total=total, initial=step, unit="step", file=sys.stderr, dynamic_ncols=True,
               disable=not (cfg.progress and acc.is_main_process))
    stopped_by, plan, plan_epoch, checkpoint = ("steps" if cfg.max_steps else "epochs"), [], -1, None
    while step < total:
        epoch, k = divmod(step, per_epoch)
        if epoch != plan_epoch:
            plan, plan_epoch = epoch_steps(data, run.batching, epoch, world), epoch
        micro = plan[k]
        step_targets = sum(data.row_targets[r] for mb in micro for r in mb)
        step_tokens = sum(data.row_tokens[r] for mb in micro for r in mb)
        mine = micro[rank::world]
        run.loss_fn.train()
        loss_sum = torch.zeros((), device=acc.device)
        for j, rows in enumerate(mine):
            batch = collate(data, rows, run.pad_id, acc.device, run.row_multiple)
            # Gradients are all-reduced (averaged over ranks) only on the last micro-batch of the step.
            with acc.no_sync(run.loss_fn) if j < len(mine) - 1 else contextlib.nullcontext():
                with run.forward_precision():  # the backward runs outside, as torch.autocast asks
                    summed = run.loss_fn(**batch)
                acc.backward(summed * world / step_targets)
                if run.trim is not None:
                    run.trim()  # what this micro-batch freed goes back before the next one allocates
            loss_sum += summed.detach()
        acc.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], cfg.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += step_tokens
        losses.append(acc.reduce(loss_sum, reduction="sum").item() / step_targets)
        elapsed = time.monotonic() - started
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tokens / elapsed:,.0f}", refresh=False)
        bar.update(1)
        out_of_time = cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s and step < total
        if step % cfg.save_every == 0 or step == total or out_of_time:
            checkpoint = save_checkpoint(run, step, {"loss_history": losses, "fingerprint": data.fingerprint,
                                                     "world_size": world, "config": hyperparameters(cfg)})
        if out_of_time:
            stopped_by = "time_budget"
            break
    bar.close()
    elapsed = time.monotonic() - started
    log.info("trained steps %d-%d: %d tokens in %.1f s (%.0f tokens/s), stopped by %s",
             start_step, step, tokens, elapsed, tokens / max(elapsed, 1e-9), stopped_by)
    return TrainResult(steps=step, tokens=tokens, tokens_per_s=tokens / max(elapsed, 1e-9),
                       final_loss=losses[-1] if losses else float("nan"), loss_history=losses,
                       stopped_by=stopped_by, model=run.model, checkpoint=checkpoint, memory_plan=run.memory_plan,
                       precision=run.precision)


# --- checkpoints and the adapter -------------------------------------------------------------------------


def save_adapter(model, out_dir: Path) -> Path:
    """Write the PEFT adapter (adapter_config.json, adapter_model.safetensors) that vLLM loads; main process only."""
    from accelerate import PartialState

    out_dir = Path(out_dir)
    model = getattr(model, "module", model)
    if isinstance(model, TargetLoss):
        model = model.lm
    config = model.peft_config["default"]
    if config.modules_to_save or config.r not in VLLM_LORA_RANKS:
        raise TrainingError(f"adapter not servable by vLLM: r={config.r}, modules_to_save={config.modules_to_save}")
    if PartialState().is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def publish_adapter(model, adapters_dir: Path, name: str, meta: dict) -> Path:
    """Write the adapter and its twin.json (`meta` plus name, twin version and creation time) under a staging
    name, then move it into `adapters_dir/name` in one rename: an interrupted run never leaves half an adapter."""
    from twin import __version__, adapters

    staging = adapters_dir / f".{name}.partial"
    adapters.discard(staging)
    try:
        save_adapter(model, staging)
        adapters.write_json_atomic(staging / "twin.json", {
            "name": name, "twin_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **meta,
        })
        return adapters.publish(staging, adapters_dir / name)
    except BaseException:
        adapters.discard(staging)
        raise


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    found = [p for p in found if (p / "trainer_state.json").is_file()]
    return found[-1] if found else None


def _rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(run: Run, step: int, state: dict) -> Path:
    """run_dir/checkpoint-<step>/, written to a temp dir and renamed; older ones beyond keep_checkpoints removed."""
    acc, run_dir = run.acc, run.run_dir
    final, tmp = run_dir / f"checkpoint-{step}", run_dir / f".checkpoint-{step}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        run.model.save_pretrained(tmp, safe_serialization=True)
        torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(run.scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=1), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        old = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
        for p in old[: -run.cfg.keep_checkpoints]:
            shutil.rmtree(p, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def load_checkpoint(path: Path, run: Run, world: int, rank: int) -> tuple[int, list[float]]:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; (step, loss history)."""
    import numpy as np
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    cfg, peft_model = run.cfg, run.model
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    same = ("seed", "max_tokens", "micro_batch_rows", "grad_accum", "r", "alpha", "target_modules")
    current = hyperparameters(cfg)
    changed = [k for k in same if state["config"].get(k) != json.loads(json.dumps(current[k]))]
    if state["fingerprint"] != run.data.fingerprint or state["world_size"] != world or changed:
        raise TrainingError(f"{path}: saved from other data or settings ({', '.join(changed) or 'data/processes'}"
                            " differ); train without --resume, or resume with the same data and settings")
    weights = load_file(str(path / "adapter_model.safetensors"), device=str(next(peft_model.parameters()).device))
    result = set_peft_model_state_dict(peft_model, weights)
    if getattr(result, "unexpected_keys", None):
        raise TrainingError(f"{path}: adapter weights do not fit this model ({result.unexpected_keys[:2]})")
    run.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    run.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng = torch.load(path / f"rng-{rank}.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"], list(state["loss_history"])
