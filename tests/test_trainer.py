"""The LoRA trainer (`twin train`) on a tiny random Llama built from a config: no downloads, a few seconds."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from twin.config import TrainingConfig  # noqa: E402
from twin.errors import ConfigError  # noqa: E402
from training import packing as pk  # noqa: E402
from training import trainer as tr  # noqa: E402
from training.trainer import LLAMA_PROJECTIONS, train  # noqa: E402

VOCAB = 256


@dataclass
class Sample:
    input_ids: list[int]
    loss_mask: list[bool]


class Tokenizer:
    """All the trainer asks of a tokenizer: its size and a pad id."""

    pad_token_id = 0
    eos_token_id = 1

    def __len__(self):
        return VOCAB


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_llama(attn="sdpa", seed=0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=512,
                         attn_implementation=attn)
    return LlamaForCausalLM(config)


def chat_samples(n=12, seed=0, lo=8, hi=60) -> list[Sample]:
    """Random token sequences whose second half is the target (an owner's reply after the context)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(lo, hi)
        out.append(Sample([rng.randrange(2, VOCAB) for _ in range(k)], [i >= k // 2 for i in range(k)]))
    return out


def cfg(**kw) -> TrainingConfig:
    """Settings for the tiny model; fp32 unless asked, so that exact comparisons hold on every CPU ("auto" is
    bf16 mixed precision where the CPU has bf16 natively)."""
    base = dict(max_tokens=128, micro_batch_rows=2, grad_accum=2, lr=5e-3, dropout=0.0, progress=False,
                max_steps=2, warmup_ratio=0.0, precision="fp32")
    return TrainingConfig(**(base | kw))


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_two_steps_change_lora_weights_with_a_servable_config(tmp_path):
    peft_model = tr.add_lora(tiny_llama(), cfg(dropout=0.05))
    before = lora_weights(peft_model)
    result = train(peft_model, Tokenizer(), chat_samples(), cfg(dropout=0.05), tmp_path)

    assert result.steps == 2 and result.stopped_by == "steps" and len(result.loss_history) == 2
    after = lora_weights(result.model)
    assert before.keys() == after.keys() and len(after) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    assert any(not torch.equal(before[n], after[n]) for n in after if "lora_B" in n)
    base_trainable = [n for n, p in result.model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert base_trainable == []
    config = result.model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.modules_to_save) == (16, 32, None)
    assert set(config.target_modules) == set(LLAMA_PROJECTIONS)
    data = pk.prepare(chat_samples(), cfg(), VOCAB)
    planned = [step for epoch in range(2) for step in pk.epoch_steps(data, cfg(), epoch, 1)]
    first_two = planned[:2]  # 12 short samples fill one step per epoch: step 2 starts the second epoch
    assert result.tokens == sum(data.row_tokens[r] for step in first_two for mb in step for r in mb)


def test_loss_falls_on_a_repeated_sample(tmp_path):
    sample = chat_samples(1, seed=3, lo=40, hi=40)[0]
    result = train(tiny_llama(), Tokenizer(), [sample] * 4,
                   cfg(max_steps=10, micro_batch_rows=1, grad_accum=1, lr=1e-2), tmp_path)
    history = result.loss_history
    assert len(history) == 10
    assert history[-1] < 0.85 * history[0] and history[-1] < min(history[:5]), history


def test_bf16_mixed_precision_runs_the_products_in_bf16_and_learns_what_fp32_learns(tmp_path):
    """`precision = "bf16"` on fp32 weights: the projections multiply in bf16 (dropout's lean path included), the
    LoRA weights and their optimizer stay fp32, and ten steps bring the loss down as far as fp32 training does.
    (Adam's first updates are the gradients' signs, which bf16 flips where a gradient is near 0, so the weights
    themselves are compared through what they do.)"""
    sample = chat_samples(1, seed=3, lo=40, hi=40)[0]
    runs, seen = {}, {}
    for precision in ("fp32", "bf16"):
        settings = cfg(max_steps=10, micro_batch_rows=1, grad_accum=1, lr=1e-2, dropout=0.1, precision=precision)
        model = tr.add_lora(tiny_llama(), settings)
        q = model.base_model.model.model.layers[0].self_attn.q_proj
        seen[precision] = set()
        q.register_forward_hook(  # with mixed precision the forward is training.mixed_lora's
            lambda m, args, out, p=precision: seen[p].add((out.dtype, "forward" in vars(m)))
            if torch.is_grad_enabled() else None)
        runs[precision] = train(model, Tokenizer(), [sample] * 4, settings, tmp_path / precision)
        assert all(p.dtype == torch.float32 for n, p in runs[precision].model.named_parameters() if "lora_" in n)
    assert seen == {"fp32": {(torch.float32, False)}, "bf16": {(torch.bfloat16, True)}}
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16 mixed")
    assert bf16.loss_history != fp32.loss_history  # the products did run in bf16
    assert bf16.loss_history[0] == pytest.approx(fp32.loss_history[0], rel=1e-2)
    assert bf16.loss_history[-1] < 0.85 * bf16.loss_history[0]
    assert bf16.loss_history[-1] == pytest.approx(fp32.loss_history[-1], rel=0.05)


def test_auto_precision_is_bf16_mixed_only_on_fp32_weights_where_the_cpu_has_bf16(monkeypatch):
    from twin import decoding

    model = tr.add_lora(tiny_llama(), cfg())
    for native, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(decoding, "native_bf16", lambda native=native: native)
        assert tr.mixed_precision(model, cfg(precision="auto"), "cpu") is want
    assert tr.mixed_precision(model, cfg(precision="bf16"), "cpu") is torch.bfloat16
    assert tr.mixed_precision(model, cfg(precision="fp32"), "cpu") is None
    assert tr.mixed_precision(tr.add_lora(tiny_llama().to(torch.bfloat16), cfg()), cfg(precision="bf16"),
                              "cpu") is None  # bf16 weights set the precision themselves


def test_rank_outside_vllms_set_is_refused():
    with pytest.raises(ConfigError, match="vLLM serves only ranks"):
        TrainingConfig(r=12)


def test_generic_targets_cover_every_linear_but_the_head():
    from transformers import Phi3Config, Phi3ForCausalLM

    phi = Phi3ForCausalLM(Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=4, vocab_size=VOCAB,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=1))
    assert tr.lora_targets(phi) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert tr.lora_targets(tiny_llama()) == list(LLAMA_PROJECTIONS)


def test_pack_fills_rows_best_fit_decreasing():
    lengths = [5, 3, 4, 2, 6, 8, 1]
    rows = pk.pack(lengths, 8)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 8 for r in rows)
    assert len(rows) == 4  # 29 tokens need at least 4 rows of 8
    assert pk.pack([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]


def test_prepare_cuts_long_samples_and_never_targets_a_sample_start():
    samples = [Sample([5] * 10, [True] * 10), Sample([6] * 4, [False] * 4), Sample([7] * 300, [True] * 300)]
    data = pk.prepare(samples, cfg(max_tokens=128), VOCAB)
    assert [len(x) for x in data.ids] == [10, 128]  # the target-less sample is dropped, the long one cut
    assert [t[0] for t in data.targets] == [False, False]
    assert data.row_targets and sum(data.row_targets) == 9 + 127


def packed_batch(samples, order):
    """One row holding the samples in `order`, positions restarting per sample; targets only on sample 0."""
    ids, pos, tgt = [], [], []
    for i in order:
        s = samples[i]
        ids += s.input_ids
        pos += range(len(s.input_ids))
        tgt += [False, *s.loss_mask[1:]] if i == 0 else [False] * len(s.input_ids)
    return torch.tensor([ids]), torch.tensor([pos]), torch.tensor([tgt])


# transformers' own block-diagonal masks (sdpa, eager) and the trainer's per-sample attention.
ATTENTION = ["sdpa", "eager", pk.SEGMENT_ATTENTION]


def tiny_llama_with(attn: str) -> LlamaForCausalLM:
    if attn != pk.SEGMENT_ATTENTION:
        return tiny_llama(attn)
    model = tiny_llama("sdpa")
    assert pk.use_segment_attention(model) == "sdpa"
    return model


@pytest.mark.parametrize("attn", ATTENTION)
def test_a_sample_packed_with_others_gives_the_same_logits_and_loss(attn):
    model = tiny_llama_with(attn).eval()
    samples = chat_samples(3, seed=7, lo=20, hi=40)
    loss = pk.TargetLoss(model)
    ids, pos, tgt = packed_batch(samples, [0])
    with torch.no_grad():
        # use_cache=False, as the trainer does: with a cache transformers skips the packed-sequence mask.
        alone_logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        alone_loss = loss(ids, pos, tgt)
        ids, pos, tgt = packed_batch(samples, [1, 0, 2])
        start, n = len(samples[1].input_ids), len(samples[0].input_ids)
        packed_logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, start : start + n]
        packed_loss = loss(ids, pos, tgt)
        # The control: positions running on across samples (no restart) let sample 0 see sample 1.
        leaked = model(input_ids=ids, use_cache=False).logits[0, start : start + n]
    torch.testing.assert_close(packed_logits, alone_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed_loss, alone_loss, rtol=1e-5, atol=1e-5)
    assert (leaked - alone_logits).abs().max() > 1e-2


@pytest.mark.parametrize("attn", ATTENTION)
def test_selected_logits_loss_equals_the_full_logits_loss(attn):
    reference = tiny_llama("sdpa").eval()
    model = tiny_llama_with(attn).eval()
    data = pk.prepare(chat_samples(8, seed=1), cfg(), VOCAB)
    batch = pk.collate(data, [0, 1], pad_id=0, device="cpu")  # two rows, different cuts, one padded
    assert batch["input_ids"].shape[0] == 2 and data.row_tokens[0] != data.row_tokens[1]
    labels = batch["input_ids"].masked_fill(~batch["targets"], -100)
    with torch.no_grad():
        full = reference(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=labels,
                         use_cache=False).loss
        selected = pk.TargetLoss(model)(**batch) / batch["targets"][:, 1:].sum()
    torch.testing.assert_close(selected, full, rtol=1e-5, atol=1e-6)


def test_a_width_multiple_pads_each_row_with_a_block_of_its_own():
    data = pk.prepare(chat_samples(8, seed=1), cfg(), VOCAB)
    plain = pk.collate(data, [0, 1], pad_id=0, device="cpu")
    rounded = pk.collate(data, [0, 1], pad_id=0, device="cpu", multiple=64)
    width = plain["input_ids"].shape[1]
    assert rounded["input_ids"].shape[1] == -(-width // 64) * 64 > width
    for key in ("input_ids", "position_ids", "targets"):
        assert torch.equal(rounded[key][:, :width], plain[key])
    assert not rounded["targets"][:, width:].any() and torch.equal(rounded["input_ids"][:, width:],
                                                                  torch.zeros_like(rounded["input_ids"][:, width:]))
    model = tiny_llama_with(pk.SEGMENT_ATTENTION).eval()
    with torch.no_grad():
        torch.testing.assert_close(pk.TargetLoss(model)(**rounded), pk.TargetLoss(model)(**plain), rtol=1e-5,
                                   atol=1e-5)


def test_under_cpu_autocast_attention_stays_fp32():
    """The trainer's bf16 autocast leaves attention in fp32 (training.packing.segment_attention): the same
    results as fp32 inputs without autocast."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 30, 16).to(torch.bfloat16) for _ in range(3))
    pos = torch.cat([torch.arange(12), torch.arange(18)])[None]
    module = type("Attention", (), {"is_causal": True, "num_key_value_groups": 1, "training": False})()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = pk.segment_attention(module, q, k, v, None, position_ids=pos)
    plain, _ = pk.segment_attention(module, q.float(), k.float(), v.float(), None, position_ids=pos)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


def test_under_cpu_autocast_the_head_multiplies_in_bf16_blocks_and_scores_in_fp32():
    """The loss's logits come from bf16 products, as every projection's under the autocast, in chunks of whole
    blocks of rows (oneDNN keeps kernels per shape); the softmax and the loss stay fp32, and loss and gradient
    are fp32's within bf16's rounding."""
    from torch.utils._python_dispatch import TorchDispatchMode

    products = []

    class Products(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.mm.default:
                products.append((args[0].shape[0], args[0].dtype, args[1].dtype))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False).requires_grad_(False)
    hidden, labels = torch.randn(300, 64, requires_grad=True), torch.randint(0, 500, (300,))
    with torch.autocast("cpu", dtype=torch.bfloat16), Products():
        mixed = pk.head_loss(hidden, head, labels, chunk=256)
    mixed.backward()
    mixed_grad, hidden.grad = hidden.grad, None
    plain = pk.head_loss(hidden, head, labels, chunk=256)
    plain.backward()
    assert mixed.dtype == torch.float32 and mixed_grad.dtype == torch.float32
    assert {(rows % pk.MIXED_ROW_MULTIPLE, a, b) for rows, a, b in products} == {(0, torch.bfloat16, torch.bfloat16)}
    assert sorted({rows for rows, _, _ in products}) == [64, 256]  # 300 rows: 256, then 44 in a block of 64
    assert mixed.item() == pytest.approx(plain.item(), rel=2e-3) and mixed.item() != plain.item()
    torch.testing.assert_close(mixed_grad, hidden.grad, rtol=0.05, atol=2e-3)


def test_training_leaves_the_attention_implementation_as_it_was(tmp_path):
    result = train(tiny_llama(), Tokenizer(), chat_samples(), cfg(max_steps=1), tmp_path)
    assert result.model.get_base_model().config._attn_implementation == "sdpa"


def test_a_model_whose_attention_leaks_across_samples_is_refused():
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def causal_only(module, q, k, v, attention_mask, **kw):  # a kernel that ignores the packing
        return sdpa_attention_forward(module, q, k, v, None, **kw)

    AttentionInterface.register("twin_test_causal_only", causal_only)
    with pytest.raises(pk.TrainingError, match="see each other"):
        pk.check_packing(tiny_llama("twin_test_causal_only"), "cpu")
    pk.check_packing(tiny_llama(), "cpu")


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    settings = cfg(max_steps=4, save_every=2, dropout=0.1, warmup_ratio=0.25)
    full = train(tiny_llama(), Tokenizer(), chat_samples(20), settings, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # Pretend the run died after step 2.
    shutil.rmtree(tmp_path / "checkpoint-4")
    resumed = train(tiny_llama(), Tokenizer(), chat_samples(20), settings, tmp_path, resume=True)

    assert resumed.steps == 4 and resumed.tokens < full.tokens
    assert resumed.loss_history == pytest.approx(full.loss_history, rel=1e-5)
    a, b = lora_weights(full.model), lora_weights(resumed.model)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)


def test_resume_with_other_data_is_refused(tmp_path):
    train(tiny_llama(), Tokenizer(), chat_samples(10), cfg(), tmp_path)
    with pytest.raises(pk.TrainingError, match="other data or settings"):
        train(tiny_llama(), Tokenizer(), chat_samples(10, seed=9), cfg(), tmp_path, resume=True)


def test_time_budget_stops_after_the_step_and_saves(tmp_path):
    result = train(tiny_llama(), Tokenizer(), chat_samples(20), cfg(max_steps=50, time_budget_minutes=1e-6 / 60),
                   tmp_path)
    assert (result.stopped_by, result.steps) == ("time_budget", 1)
    assert result.checkpoint == tmp_path / "checkpoint-1"
    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 1 and (result.checkpoint / "adapter_model.safetensors").is_file()
    assert (result.checkpoint / "optimizer.pt").is_file() and (result.checkpoint / "rng-0.pt").is_file()


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # inside peft 0.21
def test_saved_adapter_loads_with_peft_and_gives_the_same_outputs(tmp_path):
    from peft import PeftModel

    result = train(tiny_llama(), Tokenizer(), chat_samples(), cfg(), tmp_path / "run")
    out = tr.save_adapter(result.model, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32 and not config.get("modules_to_save")
    assert set(config["target_modules"]) == set(LLAMA_PROJECTIONS)

    loaded = PeftModel.from_pretrained(tiny_llama(), out).eval()
    ids = torch.tensor([chat_samples(1, seed=5)[0].input_ids])
    with torch.no_grad():
        expected = result.model.eval()(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        plain = tiny_llama()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (plain - expected).abs().max() > 1e-4  # the adapter changed the outputs


DDP_SCRIPT = """
import os, sys
sys.path[:0] = [{tests!r}, {root!r}]
import torch
torch.set_num_threads(1)
from pathlib import Path
from test_trainer import Tokenizer, cfg, chat_samples, lora_weights, tiny_llama
from training.trainer import train
world = int(os.environ.get("WORLD_SIZE", "1"))
out = Path(sys.argv[1])
result = train(tiny_llama(), Tokenizer(), chat_samples(40), cfg(max_steps=3, grad_accum=2 // world,
               micro_batch_rows=1, save_every=2), out)
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({{"weights": lora_weights(result.model), "losses": result.loss_history, "tokens": result.tokens}},
               out / "result.pt")
"""


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_twice_the_accumulation(tmp_path):
    """torchrun on CPU (gloo): each rank takes half of every step's micro-batches; the update is the same."""
    here = Path(__file__).resolve().parent
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(here), root=str(here.parent)))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    subprocess.run([sys.executable, script, tmp_path / "one"], check=True, env=env, timeout=300)
    subprocess.run([torchrun, "--nproc_per_node", "2", script, tmp_path / "two"], check=True, env=env, timeout=300)

    one, two = (torch.load(tmp_path / d / "result.pt") for d in ("one", "two"))
    assert two["tokens"] == one["tokens"] and two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], weight, rtol=1e-5, atol=1e-6)
    assert {p.name for p in (tmp_path / "two" / "checkpoint-3").iterdir()} >= {"rng-0.pt", "rng-1.pt"}
