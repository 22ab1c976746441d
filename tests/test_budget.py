"""The training memory budget (training.budget) and what the trainer does with it: plans, checkpointing, the
chunked head loss, and a run that cannot fit stopping before it starts."""

from __future__ import annotations

import doctest
import sys
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from training import budget, packing as pk  # noqa: E402
from training.budget import GB, Shape, choose, estimate_peak  # noqa: E402
from training.trainer import train  # noqa: E402
from test_trainer import Tokenizer, cfg, chat_samples, lora_weights, tiny_llama  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMOL = Shape(layers=30, hidden=576, intermediate=1536, vocab=49152, params=134_515_008, trainable=4_884_480)


def test_module_doctests():
    assert doctest.testmod(budget).failed == 0


def test_plenty_of_memory_changes_nothing():
    plan = choose(SMOL, 1024, 2, 4, 64 * GB)
    assert (plan.micro_batch_rows, plan.grad_accum, plan.checkpointed_layers) == (2, 4, 0)


@pytest.mark.parametrize("rows,accum", [(2, 1), (4, 2), (3, 1), (1, 1)])
def test_every_plan_keeps_the_rows_per_step_and_fits(rows, accum):
    for gb in (1.35, 1.6, 2, 2.5, 3, 4, 6, 10):
        plan = choose(SMOL, 1024, rows, accum, int(gb * GB))
        assert plan.micro_batch_rows * plan.grad_accum == rows * accum
        assert plan.micro_batch_rows <= rows and rows * accum % plan.micro_batch_rows == 0
        assert plan.peak_bytes <= gb * GB
        assert plan.peak_bytes == estimate_peak(SMOL, 1024, plan.micro_batch_rows, plan.checkpointed_layers)


def test_less_memory_never_means_less_checkpointing():
    least = estimate_peak(SMOL, 1024, 1, SMOL.layers)  # the smallest plan: one row, every layer checkpointed
    plans = [choose(SMOL, 1024, 2, 1, b) for b in [least] + [int(gb * GB) for gb in (1.5, 2, 2.5, 3, 3.5, 4, 5, 8)]]
    layers = [p.checkpointed_layers for p in plans]
    assert layers == sorted(layers, reverse=True) and layers[0] == 30 and layers[-1] == 0
    # A smaller micro-batch comes before any checkpointing: it costs nothing on a CPU.
    first_checkpointed = next(p for p in reversed(plans) if p.checkpointed_layers)
    assert first_checkpointed.micro_batch_rows == 1


def test_checkpointing_asked_for_is_kept():
    plan = choose(SMOL, 1024, 2, 1, 64 * GB, checkpoint_all=True)
    assert (plan.micro_batch_rows, plan.checkpointed_layers) == (2, 30)


def test_a_mixed_precision_plan_counts_the_bf16_weight_copies_and_fewer_activation_bytes():
    mixed = replace(SMOL, mixed=True, projection_params=106_168_320)
    for rows, layers in ((1, 0), (2, 0), (1, 30)):
        fp32, bf16 = estimate_peak(SMOL, 1024, rows, layers), estimate_peak(mixed, 1024, rows, layers)
        acts = fp32 - estimate_peak(SMOL, 64, rows, layers)
        acts_mixed = bf16 - estimate_peak(mixed, 64, rows, layers)
        copies = (mixed.projection_params + mixed.vocab * mixed.hidden) * 2  # training.mixed_lora's bf16 copies
        assert acts_mixed < acts and bf16 - fp32 < copies
    plan = choose(mixed, 1024, 2, 1, 3 * GB)  # the demo's settings: no checkpointing needed
    assert (plan.micro_batch_rows, plan.checkpointed_layers) == (1, 0) and plan.peak_bytes < 2.95 * GB
    assert "no activation checkpointing, bf16 mixed precision; about 2.8 GB of 3.0 GB" in plan.describe()


def test_a_measured_process_stands_for_the_runtime_and_the_weights():
    measured = replace(SMOL, resident=3 * GB)
    for rows, layers in ((1, 0), (2, 30)):
        fitted = budget.RUNTIME_BYTES + SMOL.params * SMOL.dtype_bytes
        assert estimate_peak(measured, 1024, rows, layers) - estimate_peak(SMOL, 1024, rows, layers) == 3 * GB - fitted


def test_process_bytes_counts_weights_mapped_from_a_file_before_they_were_read(tmp_path):
    path = tmp_path / "weights.bin"
    n = 16 << 20  # 64 MB of fp32
    with open(path, "wb") as f:
        f.truncate(n * 4)
    mapped = torch.nn.Module()
    mapped.w = torch.nn.Parameter(torch.from_file(str(path), shared=True, size=n), requires_grad=False)
    budget.process_bytes(torch.nn.Linear(1, 1))  # glibc's free pages back first
    before = budget.resident_bytes()
    assert budget.process_bytes(mapped) - before > 60 << 20


def test_the_trainer_plans_with_what_the_process_holds():
    from training.trainer import memory_plan

    model = tr_model()
    without = memory_plan(model, cfg(), "cpu").peak_bytes
    ballast = bytearray(300 << 20)  # a tokenizer or data the runtime's constant never saw
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # resident
    with_it = memory_plan(model, cfg(), "cpu").peak_bytes
    del ballast
    assert without >= budget.resident_bytes() and with_it - without > 250 << 20


def test_too_small_budget_names_the_need():
    with pytest.raises(budget.DoesNotFit, match=r"needs about 1\.3 GB \(1 row of 1024 tokens, all 30 layers"):
        choose(SMOL, 1024, 2, 1, GB)


def test_a_run_that_cannot_fit_stops_before_the_first_step(tmp_path):
    model = tr_model()
    before = lora_weights(model)
    with pytest.raises(pk.TrainingError) as e:
        train(model, Tokenizer(), chat_samples(), cfg(max_memory_gb=0.05), tmp_path)
    message = str(e.value)
    assert "\n" not in message and message.startswith("training.max_memory_gb = 0.05 is too little")
    assert "raise training.max_memory_gb" in message
    assert not list(tmp_path.iterdir())  # no checkpoint written: nothing ran
    after = lora_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def _freed_heap_after(trim) -> int:
    """Bytes the resident set fell by when `trim` ran after 199 MB of heap blocks were freed."""
    import psutil

    blocks = [bytearray(1 << 20) for _ in range(200)]  # 1 MB each: under the mmap threshold, from the heap
    del blocks[:199]  # freed, but below the last one: glibc keeps them unless trimmed
    before = psutil.Process().memory_info().rss
    trim()
    return before - psutil.Process().memory_info().rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_goes_back_when_the_plan_could_pass_the_budget_with_it():
    tight = budget.Plan(1, 1, 0, 30, peak_bytes=1 * GB, budget_bytes=1 * GB + (50 << 20))
    trim = budget.return_freed_memory(tight)
    assert trim is not None
    trim()  # the first micro-batch: the baseline
    assert _freed_heap_after(trim) > 100 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_stays_for_the_next_micro_batch_where_the_budget_has_room_for_it():
    # Giving pages back that the next micro-batch faults in again cost 10% of a CPU step (session 11).
    roomy = budget.Plan(1, 1, 0, 30, peak_bytes=1 * GB, budget_bytes=64 * GB)
    trim = budget.return_freed_memory(roomy)
    trim()
    assert _freed_heap_after(trim) < 50 << 20


def tr_model():
    from training.trainer import add_lora

    return add_lora(tiny_llama(), cfg())


def _mlp_calls(model) -> list[int]:
    """Forward calls of each decoder layer's MLP: twice per micro-batch in a checkpointed layer (the backward
    runs it again), once elsewhere."""
    calls = []
    for layer in model.get_base_model().model.layers:
        calls.append(0)
        k = len(calls) - 1
        # A pre-hook: the recompute stops (torch's early stop) inside the MLP, before a forward hook would run.
        layer.mlp.register_forward_pre_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    return calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: the recompute under autocast, mixed_lora's too
def test_checkpointing_recomputes_the_chosen_layers_and_learns_the_same(tmp_path, precision):
    settings = cfg(precision=precision)
    plain = train(tr_model(), Tokenizer(), chat_samples(), settings, tmp_path / "plain")

    model = tr_model()
    assert budget.apply_checkpointing(model, 1) == 1
    calls = _mlp_calls(model)
    result = train(model, Tokenizer(), chat_samples(), settings, tmp_path / "one")
    forwards = calls[1]  # check_packing's two (without gradients) and one per micro-batch
    assert forwards == 2 + len(plain.loss_history) * 2 and calls[0] == forwards + (forwards - 2)
    assert result.loss_history == pytest.approx(plain.loss_history, rel=1e-5)
    want, got = lora_weights(plain.model), lora_weights(result.model)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_checkpointing_every_layer_trains(tmp_path):
    model = tr_model()
    before = lora_weights(model)
    calls = _mlp_calls(model)
    result = train(model, Tokenizer(), chat_samples(), cfg(gradient_checkpointing=True), tmp_path)
    assert "activation checkpointing on 2 of 2 layers" in result.memory_plan
    assert calls == [6 + 4, 6 + 4]  # 2 + 4 micro-batch forwards, and the 4 recomputed
    after = lora_weights(result.model)
    assert any(not torch.equal(before[n], after[n]) for n in after if "lora_B" in n)


def test_a_smaller_micro_batch_gives_the_same_update(tmp_path):
    """What the budget changes (rows per micro-batch, accumulation) leaves each optimizer step's rows and loss."""
    a = train(tr_model(), Tokenizer(), chat_samples(24), cfg(micro_batch_rows=2, grad_accum=1), tmp_path / "a")
    b = train(tr_model(), Tokenizer(), chat_samples(24), cfg(micro_batch_rows=1, grad_accum=2), tmp_path / "b")
    assert a.tokens == b.tokens and b.loss_history == pytest.approx(a.loss_history, rel=1e-5)
    want, got = lora_weights(a.model), lora_weights(b.model)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_chunked_head_loss_matches_cross_entropy_and_its_gradient(softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(37, 16, requires_grad=True)
    labels = torch.randint(0, 50, (37,))
    loss = pk.head_loss(hidden, head, labels, softcap, chunk=8)
    (loss * 0.3).backward()
    chunked, hidden.grad = hidden.grad.clone(), None
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    (expected * 0.3).backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(chunked, hidden.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("p", [0.05, 0.25])  # kept as positions, and as a bool mask
def test_lean_dropout_is_dropout_then_lora_a_with_the_same_gradients(monkeypatch, p):
    """Output and gradients are those of dropout (the drawn positions zeroed, the rest scaled) then lora_A."""
    from training import lean_dropout as ld

    drawn = []
    draw = ld.drop_positions
    monkeypatch.setattr(ld, "drop_positions", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    x = torch.randn(3, 50, 16, requires_grad=True)
    w = torch.randn(4, 16, requires_grad=True)
    torch.manual_seed(7)
    y = ld._DropoutLinear.apply(x, w, p)
    y.pow(2).sum().backward()
    got = (y.detach(), x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None
    keep = torch.ones(x.numel())
    keep[drawn[0]] = 0
    expected = torch.nn.functional.linear(x * keep.view(x.shape) / (1 - p), w)
    expected.pow(2).sum().backward()
    for a, b in zip(got, (expected.detach(), x.grad, w.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert abs(keep.mean() - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5  # about 1 - p kept


def test_training_with_dropout_uses_the_lean_path_and_restores_peft(tmp_path):
    from peft.tuners.lora import LoraLayer

    from training.lean_dropout import lean_dropout
    from training.trainer import add_lora

    model = add_lora(tiny_llama(), cfg(dropout=0.1))
    with lean_dropout(model) as switched:
        assert switched == 2 * 7
    before = lora_weights(model)
    result = train(model, Tokenizer(), chat_samples(), cfg(dropout=0.1), tmp_path)
    after = lora_weights(result.model)
    assert any(not torch.equal(before[n], after[n]) for n in after if "lora_A" in n)
    layers = [m for m in result.model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 14
    assert all(type(m.lora_A["default"]) is torch.nn.Linear for m in layers)
    assert all(type(m.lora_dropout["default"]) is torch.nn.Dropout for m in layers)
