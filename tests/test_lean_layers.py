"""The swaps the trainer makes during its loop (training.lean_dropout, training.lean_mlp, training.mixed_lora): the
same gradients as the stock modules (for lean_dropout: given the same masks; for mixed_lora: up to bf16's
rounding), dropout positions drawn as i.i.d. Bernoulli(p), fewer bytes kept for the backward or fewer casts, and
the model as it was afterwards."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training import packing as pk  # noqa: E402
from training import lean_dropout as ld  # noqa: E402
from training.lean_dropout import DropoutLoraA, drop_positions, lean_dropout  # noqa: E402
from training.lean_mlp import lean_mlp  # noqa: E402
from training.mixed_lora import mixed_lora  # noqa: E402
from training.trainer import add_lora, train  # noqa: E402
from test_trainer import VOCAB, Tokenizer, cfg, chat_samples, lora_weights, tiny_llama  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LENGTHS = (9, 14, 7, 11)  # samples packed into one row, positions restarting at each


def tiny_gemma3(seed=0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, vocab_size=VOCAB, max_position_embeddings=512,
                              sliding_window=512, layer_types=["full_attention"] * 2, attn_implementation="sdpa")
    return Gemma3ForCausalLM(config)


def lora(base, dropout=0.0):
    """LoRA on every projection, lora_B made nonzero (peft starts it at 0, when A's gradient and the adapter's
    part of the input's gradient are 0 and could not tell two backwards apart)."""
    model = add_lora(base, cfg(dropout=dropout)).train()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def packed_batch(hidden: int, seed=1):
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, sum(LENGTHS), hidden, generator=gen)
    pos = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    return embeds, pos


def grads(model, embeds, pos, seed=5, autocast=False):
    """Loss and the gradients of every LoRA weight and of the input, one forward (under bf16 autocast, as the
    trainer's mixed precision runs it, if asked) and backward."""
    causal = model.get_base_model()
    x = embeds.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the dropout masks' draw
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = causal.get_decoder()(inputs_embeds=x, position_ids=pos, use_cache=False)[0]
    loss = (out.float() * torch.linspace(-1, 1, out.shape[-1])).pow(2).sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    found = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}
    assert len(found) == 2 * 7 * 2 and all(g.abs().sum() > 0 for g in found.values())
    return loss.detach(), found, x.grad


def assert_same(a, b, rtol=1e-5, atol=1e-5):
    (la, ga, xa), (lb, gb, xb) = a, b
    torch.testing.assert_close(la, lb, rtol=rtol, atol=0)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=rtol, atol=atol, msg=name)
    torch.testing.assert_close(xa, xb, rtol=rtol, atol=atol)


def saved_bytes(model, embeds, pos) -> int:
    """Bytes of the distinct storages autograd keeps for the backward, the weights left out."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            kept[s.data_ptr()] = s.nbytes()
        return t

    x = embeds.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.get_base_model().get_decoder()(inputs_embeds=x, position_ids=pos, use_cache=False)
    return sum(kept.values())


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3], ids=["llama", "gemma3"])
def test_lean_mlp_gives_the_stock_gradients_and_keeps_one_tensor_less(make):
    model = lora(make())
    pk.use_segment_attention(model.get_base_model())
    embeds, pos = packed_batch(model.get_base_model().config.hidden_size)
    stock, stock_bytes = grads(model, embeds, pos), saved_bytes(model, embeds, pos)
    with lean_mlp(model) as switched:
        assert switched == 2
        lean, lean_bytes = grads(model, embeds, pos), saved_bytes(model, embeds, pos)
    assert_same(lean, stock)
    # act(gate) is no longer kept: one intermediate-wide fp32 tensor per token per layer.
    intermediate = model.get_base_model().config.intermediate_size
    assert stock_bytes - lean_bytes == 2 * sum(LENGTHS) * intermediate * 4


def test_lean_mlp_leaves_the_model_as_it_was():
    model = lora(tiny_llama())
    keys = list(model.state_dict())
    mlps = [m for m in model.modules() if type(m).__name__ == "LlamaMLP"]
    with lean_mlp(model):
        assert all("forward" in vars(m) for m in mlps)
        assert list(model.state_dict()) == keys
    assert all("forward" not in vars(m) and not hasattr(m, "_lean_kind") for m in mlps)


def test_lean_mlp_leaves_an_unknown_activation_alone():
    model = lora(tiny_llama())
    for layer in model.get_base_model().model.layers:
        layer.mlp.act_fn = torch.nn.Tanh()
    with lean_mlp(model) as switched:
        assert switched == 0


def dropouts_own_draw(n, p, device=None):
    """drop_positions as nn.Dropout draws its mask on a CPU (`bernoulli_(1 - p)` over the input, in order): with
    it the lean path must compute exactly what peft's own dropout does."""
    keep = torch.empty(n, dtype=torch.bool, device=device).bernoulli_(1 - p)
    return (~keep).nonzero().squeeze(1)


def test_drop_positions_drop_each_element_with_probability_p_independently(monkeypatch):
    n = 400_000
    for p in (0.05, 0.3, 0.9):
        torch.manual_seed(0)
        got = drop_positions(n, p)
        assert got.dtype == torch.long and bool((got.diff() > 0).all()) and 0 <= got[0] and got[-1] < n
        assert abs(len(got) - n * p) < 5 * (n * p * (1 - p)) ** 0.5
        quarters = torch.bincount(got // (n // 4), minlength=4)  # no drift along the tensor
        assert (quarters - n / 4 * p).abs().max() < 5 * (n / 4 * p * (1 - p)) ** 0.5
        mask = torch.zeros(n, dtype=torch.bool)
        mask[got] = True  # neighbours independent: P(both dropped) = p^2
        both = (mask[1:] & mask[:-1]).sum().item()
        assert abs(both - (n - 1) * p * p) < 5 * ((n - 1) * p * p) ** 0.5 + 5 * p * (n ** 0.5)
    torch.manual_seed(1)
    first, second = drop_positions(n, 0.05), drop_positions(n, 0.05)
    torch.manual_seed(1)
    assert torch.equal(drop_positions(n, 0.05), first) and not torch.equal(first, second)  # seeded, fresh each draw
    monkeypatch.setattr(ld, "SPARE_SIGMAS", -30.0)  # the first batch of gaps falls short: the draw goes on
    short = drop_positions(n, 0.05)
    assert short[-1] >= n - 200 and abs(len(short) - n * 0.05) < 5 * (n * 0.05) ** 0.5
    assert len(drop_positions(0, 0.05)) == 0 and len(drop_positions(3, 0.9)) <= 3


def test_lean_dropout_gives_peft_dropouts_gradients_for_the_same_masks(monkeypatch):
    """With dropout on and nn.Dropout's own draw in place of the sparse one: the same gradients as peft's modules,
    fewer bytes kept; with the sparse draw, other masks (the same seed gives another stream)."""
    model = lora(tiny_llama(), dropout=0.3)
    pk.use_segment_attention(model.get_base_model())
    embeds, pos = packed_batch(64)
    stock, stock_bytes = grads(model, embeds, pos), saved_bytes(model, embeds, pos)
    with lean_dropout(model) as switched:
        assert switched == 2 * 7
        sparse = grads(model, embeds, pos)
        with monkeypatch.context() as m:
            m.setattr(ld, "drop_positions", dropouts_own_draw)
            lean, lean_bytes = grads(model, embeds, pos), saved_bytes(model, embeds, pos)
            other = grads(model, embeds, pos, seed=6)
    assert_same(lean, stock)
    assert not torch.allclose(other[2], stock[2], rtol=1e-3)  # another seed, other masks: the test can tell
    assert not torch.allclose(sparse[2], stock[2], rtol=1e-3)
    assert lean_bytes < 0.75 * stock_bytes


def test_lean_dropout_without_dropout_switches_nothing():
    model = lora(tiny_llama(), dropout=0.0)
    with lean_dropout(model) as switched:
        assert switched == 0


def test_training_runs_the_lean_layers_and_learns_what_peft_alone_learns(tmp_path, monkeypatch):
    """The trainer's loop uses both swaps, and a seeded run with dropout trains the same LoRA weights as one with
    peft's own modules (the swaps turned off), given nn.Dropout's draw."""
    import contextlib

    from training import trainer as tr

    monkeypatch.setattr(ld, "drop_positions", dropouts_own_draw)
    seen = set()
    model = add_lora(tiny_llama(), cfg(dropout=0.1))
    a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"]
    a.register_forward_hook(lambda m, *_: seen.add(type(m)) if m.training else None)
    mlp = model.base_model.model.model.layers[0].mlp
    mlp.gate_proj.register_forward_hook(  # with gradients: the loop's forwards, not check_packing's
        lambda *_: seen.add("lean mlp" if "forward" in vars(mlp) else "mlp") if torch.is_grad_enabled() else None)
    lean = train(model, Tokenizer(), chat_samples(), cfg(dropout=0.1), tmp_path / "lean")
    assert DropoutLoraA in seen and "lean mlp" in seen and torch.nn.Linear not in seen and "mlp" not in seen

    monkeypatch.setattr(tr, "lean_dropout", lambda m: contextlib.nullcontext(0))
    monkeypatch.setattr(tr, "lean_mlp", lambda m: contextlib.nullcontext(0))
    stock = train(add_lora(tiny_llama(), cfg(dropout=0.1)), Tokenizer(), chat_samples(), cfg(dropout=0.1),
                  tmp_path / "stock")
    assert lean.loss_history == pytest.approx(stock.loss_history, rel=1e-5)
    want, got = lora_weights(stock.model), lora_weights(lean.model)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
    assert all(type(m) is torch.nn.Linear for n, m in lean.model.named_modules() if n.endswith("lora_A.default"))


def frozen_weight_casts(model, embeds, pos, autocast=True) -> int:
    """How many times a forward and backward cast a frozen projection weight to another dtype."""
    from torch.utils._python_dispatch import TorchDispatchMode

    frozen = {p.data_ptr() for n, p in model.named_parameters() if "base_layer" in n}
    casts = []

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in frozen:
                casts.append(args[0].shape)
            return func(*args, **(kwargs or {}))

    with Casts():
        grads(model, embeds, pos, autocast=autocast)
    return len(casts)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_mixed_lora_gives_peft_autocasts_gradients_without_casting_the_frozen_weights(dropout, monkeypatch):
    """Under bf16 autocast: outputs and gradients are peft's under the same autocast up to where bf16 rounds, the
    LoRA gradients fp32, and no frozen weight is cast per call (peft's path casts every one, every forward)."""
    monkeypatch.setattr(ld, "drop_positions", dropouts_own_draw)
    model = lora(tiny_llama(), dropout=dropout)
    pk.use_segment_attention(model.get_base_model())
    embeds, pos = packed_batch(64)
    with lean_dropout(model), lean_mlp(model):
        stock = grads(model, embeds, pos, autocast=True)
        assert frozen_weight_casts(model, embeds, pos) >= 2 * 7
        with mixed_lora(model, torch.bfloat16) as switched:
            assert switched == 2 * 7
            mixed = grads(model, embeds, pos, autocast=True)
            assert frozen_weight_casts(model, embeds, pos) == 0
    assert all(g.dtype == torch.float32 for g in mixed[1].values())
    assert mixed[0] != stock[0]  # rounded elsewhere: the test can tell the two paths apart
    plain = grads(model, embeds, pos)  # fp32 throughout
    # bf16 keeps 8 bits: each gradient is within 2% of fp32's (as a vector), as close as peft's autocast gets.
    for other in (stock, plain):
        assert mixed[0].item() == pytest.approx(other[0].item(), rel=1e-3)
        for name, g in [*mixed[1].items(), ("input", mixed[2])]:
            want = other[1].get(name, other[2])
            assert ((g - want).norm() / want.norm()).item() < 0.02, name


def test_mixed_lora_is_peft_without_autocast_and_leaves_the_model_as_it_was():
    model = lora(tiny_llama())
    embeds, pos = packed_batch(64)
    keys, stock = list(model.state_dict()), grads(model, embeds, pos)
    projections = [m for m in model.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
    with mixed_lora(model, torch.bfloat16):
        assert all("forward" in vars(m) for m in projections) and list(model.state_dict()) == keys
        assert_same(grads(model, embeds, pos), stock, rtol=0, atol=0)  # no autocast: peft's own forward
    assert all("forward" not in vars(m) and not hasattr(m, "_mixed_weight") for m in projections)
    with mixed_lora(model, None) as switched:
        assert switched == 0


def test_mixed_lora_leaves_dora_to_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=8, target_modules=["q_proj", "v_proj"], use_dora=True))
    with mixed_lora(model, torch.bfloat16) as switched:
        assert switched == 0


def test_mixed_lora_gives_the_frozen_head_one_bf16_copy_that_head_loss_uses_and_removes_it():
    """Gemma 3's head is 262k x 640: head_loss cast it to bf16 on every micro-batch (335 MB made and freed each
    time); within mixed_lora it multiplies with one copy made for the loop, to the same loss and gradient."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = lora(tiny_llama())
    head = model.get_base_model().get_output_embeddings()
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(70, head.in_features, generator=gen)
    labels = torch.randint(0, head.out_features, (70,), generator=gen)

    def loss_and_grad():
        h = hidden.clone().requires_grad_(True)
        casts = []

        class Casts(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._to_copy.default and args[0].data_ptr() == head.weight.data_ptr():
                    casts.append(args[0].shape)
                return func(*args, **(kwargs or {}))

        with Casts(), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = pk.head_loss(h, head, labels, chunk=32)
        loss.backward()
        return loss.detach(), h.grad, len(casts)

    loss, grad, casts = loss_and_grad()
    assert casts == 1  # without the copy: one cast per call
    with mixed_lora(model, torch.bfloat16):
        assert head._mixed_weight.dtype == torch.bfloat16 and torch.equal(head._mixed_weight, head.weight.bfloat16())
        loss_copy, grad_copy, casts_copy = loss_and_grad()
    assert casts_copy == 0 and not hasattr(head, "_mixed_weight")
    assert torch.equal(loss_copy, loss) and torch.equal(grad_copy, grad)
    with mixed_lora(model, None):
        assert not hasattr(head, "_mixed_weight")
