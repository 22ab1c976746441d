"""Training benchmark: twin's LoRA loop (`twin train`) against a plain Hugging Face Trainer, in one run.

Both train the same LoRA (r 16 on every linear projection) on the same base model and the same synthetic chat
samples (50-600 tokens, a persona system turn, contact and owner turns in the model's chat template), one
epoch each, with the same learning rate, schedule and gradient accumulation. The baseline is the textbook
recipe: `Trainer` + `DataCollatorForLanguageModeling(mlm=False)`, i.e. batches padded to their longest sample
and logits over the whole vocabulary at every position. twin packs samples into full rows (block-diagonal
attention) and computes logits only where the loss is. Throughput counts real tokens (never padding) over the
wall time of each training call. twin runs twice: with the loss on every token (the baseline's targets) and
with the loss on the owner's turns only (what `twin train` does).

    .venv/bin/python bench/train.py                        # SmolLM2-135M-Instruct, the embedded default
    .venv/bin/python bench/train.py --samples 32            # a shorter run
    .venv/bin/python bench/train.py --tiny                  # a random 2-layer model, seconds
    .venv/bin/python bench/train.py --precision fp32        # both in fp32 (default auto: bf16 mixed where native)
    .venv/bin/python bench/train.py --config-shape 2048 16 16 128256 --samples 2000   # a random 1B-ish model, GPU
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("ok so the train is late again see you at eight maybe tomorrow then did you get my note haha sure "
         "thing no worries sounds good call me when you are free I think we should book the table for "
         "friday the kids loved it send me the photos later").split()


@dataclass
class Sample:
    input_ids: list[int]
    loss_mask: list[bool]


def chat_samples(tokenizer, n: int, seed: int, lo: int = 50, hi: int = 600) -> list[Sample]:
    """Conversations rendered with the chat template, turn by turn; the owner's (assistant) turns are targets."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        want = int(min(hi, max(lo, rng.lognormvariate(5.3, 0.6))))
        ids, mask, role = [], [], "system"
        while len(ids) < want:
            text = " ".join(rng.choices(WORDS, k=rng.randint(3, 40 if role == "system" else 18)))
            head = tokenizer.encode(f"<|im_start|>{role}\n", add_special_tokens=False)
            body = tokenizer.encode(f"{text}<|im_end|>\n", add_special_tokens=False)
            ids += head + body
            mask += [False] * len(head) + [role == "assistant"] * len(body)
            role = "user" if role != "user" else "assistant"
        out.append(Sample(ids[:want], mask[:want]))
    return out


def random_samples(vocab: int, n: int, seed: int, lo: int = 50, hi: int = 600) -> list[Sample]:
    """Token sequences of the same length mix for random-weight models; the owner's turns alternate."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = int(min(hi, max(lo, rng.lognormvariate(5.3, 0.6))))
        mask, owner, left = [], False, 0
        for _ in range(k):
            if left == 0:
                owner, left = not owner, rng.randint(10, 60)
            mask.append(owner)
            left -= 1
        out.append(Sample([rng.randrange(3, vocab) for _ in range(k)], mask))
    return out


def word_tokenizer(vocab: int):
    """A fast tokenizer with `vocab` entries and a pad token, enough for the baseline's collator."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<unk>": 1, "<eos>": 2} | {f"w{i}": i for i in range(3, vocab)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="<unk>")),
                                   pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def random_model(hidden: int, layers: int, heads: int, vocab: int, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64 or hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=max(1, heads // 4) if heads % 4 == 0 else heads,
                         vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_twin(make_model, tokenizer, samples, args, owner_only: bool) -> tuple[int, float, float]:
    from training.trainer import train
    from twin.config import TrainingConfig

    if not owner_only:
        samples = [Sample(s.input_ids, [True] * len(s.input_ids)) for s in samples]
    cfg = TrainingConfig(max_tokens=args.max_tokens, micro_batch_rows=args.rows, grad_accum=args.grad_accum,
                         epochs=1, dropout=0.0, seed=0, save_every=10**9, progress=True,
                         gradient_checkpointing=args.gradient_checkpointing, precision=args.precision)
    model, results = make_model(), []
    with tempfile.TemporaryDirectory() as run_dir:
        wall, cpu = timed(lambda: results.append(train(model, tokenizer, samples, cfg, Path(run_dir))))
    return results[0].tokens, wall, cpu


def run_trainer(make_model, tokenizer, samples, args, batch: int) -> tuple[int, float, float]:
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from training.trainer import add_lora
    from twin.config import TrainingConfig

    cfg = TrainingConfig(dropout=0.0, gradient_checkpointing=args.gradient_checkpointing)
    model = add_lora(make_model(), cfg)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=args.grad_accum,
            learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio, num_train_epochs=1,
            max_grad_norm=cfg.max_grad_norm, weight_decay=cfg.weight_decay, save_strategy="no", report_to="none",
            logging_steps=10**9, remove_unused_columns=False, seed=0, use_cpu=not torch.cuda.is_available(),
            dataloader_pin_memory=False, bf16=args.precision == "bf16")  # bf16: the Trainer's own autocast
        trainer = Trainer(model=model, args=targs, train_dataset=[{"input_ids": s.input_ids} for s in samples],
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
        wall, cpu = timed(trainer.train)
    return sum(len(s.input_ids) for s in samples), wall, cpu


def cpu_pressure() -> str:
    """Linux PSI: the share of the last 60 s in which some task waited for a CPU (other load skews timings)."""
    try:
        return Path("/proc/pressure/cpu").read_text().split()[2].split("=")[1] + "%"
    except (OSError, IndexError):
        return "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=64, help="chat samples, trained for one epoch (default 64)")
    p.add_argument("--max-tokens", type=int, default=1024, help="twin's row length (default 1024)")
    p.add_argument("--rows", type=int, default=1, help="twin's rows per micro-batch (default 1)")
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--tiny", action="store_true", help="a random 2-layer model (hidden 64, vocab 512)")
    p.add_argument("--config-shape", type=int, nargs=4, metavar=("HIDDEN", "LAYERS", "HEADS", "VOCAB"),
                   help="a random Llama-shaped model of this size instead of SmolLM2")
    p.add_argument("--models-dir", type=Path, help="where the converted SmolLM2 is cached (default: twin home)")
    p.add_argument("--skip-owner-only", action="store_true", help="skip the owner-turns-only twin run")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each counts (default 2)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="both sides alike: bf16 mixed precision (twin's [training] precision, the Trainer's bf16) "
                        "or fp32; auto: bf16 where the CPU has it natively (default)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from twin.models import default_dtype, load_base
    from training.packing import pack

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.precision == "auto":
        from twin.decoding import cpu_precision

        args.precision = cpu_precision("auto") if device == "cpu" else "fp32"  # a GPU: the weights' bf16
    shape = (64, 2, 4, 512) if args.tiny else args.config_shape
    if shape:
        tokenizer = word_tokenizer(shape[3])
        samples = random_samples(shape[3], args.samples, seed=1)
        name = f"random Llama hidden={shape[0]} layers={shape[1]} heads={shape[2]} vocab={shape[3]}"

        def make_model():
            return random_model(*shape, device=device, dtype=default_dtype(device))
    else:
        from twin.paths import resolve_home

        models_dir = args.models_dir or resolve_home().models
        started = time.perf_counter()
        _, tokenizer = load_base(None, models_dir, device=device)
        print(f"base model ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        samples = chat_samples(tokenizer, args.samples, seed=1)
        name = "SmolLM2-135M-Instruct (embedded default)"

        def make_model():
            return load_base(None, models_dir, device=device)[0]

    lengths = [len(s.input_ids) for s in samples]
    rows = pack(lengths, args.max_tokens)
    batch = max(1, round(len(samples) / len(rows) * args.rows))  # same tokens per micro-batch as a packed row
    owner = sum(sum(s.loss_mask) for s in samples) / sum(lengths)
    cpu = f"{torch.get_num_threads()} CPU threads" if device == "cpu" else torch.cuda.get_device_name()
    print(f"model: {name}; device: {device} ({cpu}); dtype {default_dtype(device)}, precision {args.precision}\n"
          f"data: {len(samples)} samples, {sum(lengths)} tokens, length {min(lengths)}-{max(lengths)} "
          f"(mean {sum(lengths) / len(samples):.0f}), owner turns {owner:.0%} of tokens\n"
          f"twin: {len(rows)} packed rows of {args.max_tokens} x {args.rows} per micro-batch; "
          f"Trainer: batch {batch} padded samples; grad accumulation {args.grad_accum}", file=sys.stderr)

    runs = {"Trainer + DataCollatorForLanguageModeling": lambda: run_trainer(make_model, tokenizer, samples, args,
                                                                             batch),
            "twin, loss on every token": lambda: run_twin(make_model, tokenizer, samples, args, owner_only=False)}
    if not args.skip_owner_only:
        runs["twin, loss on the owner's turns"] = lambda: run_twin(make_model, tokenizer, samples, args, True)
    # Rounds alternate the runs, so a burst of other load on the machine hits all of them alike; the best
    # round of each counts.
    best: dict[str, tuple[int, float, float]] = {}
    for r in range(args.rounds):
        for label, run in runs.items():
            tokens, wall, cpu = run()
            print(f"round {r + 1}: {label}: {tokens / wall:.1f} tokens/s (wall {wall:.1f} s, CPU {cpu:.1f} s, "
                  f"CPU pressure avg60 {cpu_pressure()})", file=sys.stderr)
            if label not in best or wall < best[label][1]:
                best[label] = (tokens, wall, cpu)

    (tokens0, wall0, cpu0) = best["Trainer + DataCollatorForLanguageModeling"]
    print(f"\n{'run (best of ' + str(args.rounds) + ')':<44} {'tokens':>7} {'wall s':>7} {'tokens/s':>9} {'ratio':>6}"
          f" {'CPU s':>7} {'tokens/CPU s':>12} {'ratio':>6}")
    for label, (tokens, wall, cpu) in best.items():
        print(f"{label:<44} {tokens:>7} {wall:>7.1f} {tokens / wall:>9.1f} {tokens / wall / (tokens0 / wall0):>5.2f}x"
              f" {cpu:>7.1f} {tokens / cpu:>12.1f} {tokens / cpu / (tokens0 / cpu0):>5.2f}x")


if __name__ == "__main__":
    main()
