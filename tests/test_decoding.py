"""The drafting decoder (twin.decoding): the same tokens as transformers + peft `generate` when greedy, the same
nucleus as transformers' warpers when sampling, one prefill for all candidates, on a tiny Llama and a tiny
Gemma 3 (its sliding-window layers keep their own cache) built in the test."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper  # noqa: E402

from twin.decoding import NUCLEUS_PROBE, nucleus, sample_many  # noqa: E402

VOCAB = 96
STOP = 3


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        bos_token_id=1, eos_token_id=STOP, pad_token_id=0)).eval()


def gemma3():
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=256, bos_token_id=1, eos_token_id=STOP, pad_token_id=0)
    return Gemma3ForCausalLM(config).eval()


def with_lora(model):
    """A random LoRA (peft's init_lora_weights=False), so that it changes the output; merged or not."""
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    return get_peft_model(model, config).eval()


PROMPT = [1, 17, 42, 9, 23, 61, 5, 77, 30, 12, 8, 50]  # longer than Gemma's sliding window of 4


def plain_greedy(model, prompt, max_new_tokens, stops):
    """The reference: transformers' `generate`, greedy, through peft's unmerged adapter."""
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=0)
    row = out[0, len(prompt):].tolist()
    return row[:next((i for i, t in enumerate(row) if t in stops), len(row))]


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
def test_greedy_gives_the_tokens_of_transformers_and_peft_generate(build):
    model = with_lora(build())
    stops = [STOP, 4]
    reference = plain_greedy(model, PROMPT, 24, stops)
    assert len(reference) >= 3  # a real comparison, not two empty lists
    model.merge_adapter()  # the backend's way: the adapter in the weights
    try:
        [fast] = sample_many(model, PROMPT, n=3, max_new_tokens=24, temperature=0, top_p=1.0, seed=0, stops=stops)
    finally:
        model.unmerge_adapter()
    assert fast == reference
    [unmerged] = sample_many(model, PROMPT, n=1, max_new_tokens=24, temperature=0, top_p=1.0, seed=0, stops=stops)
    assert unmerged == reference


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
def test_candidates_share_one_prefill_and_each_stops_at_its_end_of_turn(build):
    model = build()
    lengths = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: lengths.append(tuple(args[0].shape)))
    try:
        rows = sample_many(model, PROMPT, n=6, max_new_tokens=20, temperature=1.5, top_p=1.0, seed=7,
                           stops=list(range(3, 12)))  # many stop tokens: rows end at different steps
    finally:
        hook.remove()
    assert lengths[0] == (1, len(PROMPT))  # the prompt once, batch 1
    assert all(shape[1] == 1 for shape in lengths[1:])  # then one token per live row
    batch = [shape[0] for shape in lengths[1:]]
    assert batch[0] <= 6 and batch == sorted(batch, reverse=True) and len(set(batch)) > 1  # finished rows leave
    assert len(rows) == 6 and len({tuple(r) for r in rows}) > 1
    assert not any(3 <= t < 12 for r in rows for t in r)  # stop tokens are never part of a completion
    ended = [r for r in rows if len(r) < 20]
    assert ended and len(lengths) == 1 + max(len(r) for r in rows) - (1 if max(len(r) for r in rows) == 20 else 0)


def test_sampling_is_seeded():
    model = llama()
    kw = dict(n=4, max_new_tokens=10, temperature=1.0, top_p=0.9, stops=[STOP])
    assert sample_many(model, PROMPT, seed=5, **kw) == sample_many(model, PROMPT, seed=5, **kw)
    assert sample_many(model, PROMPT, seed=5, **kw) != sample_many(model, PROMPT, seed=6, **kw)


def reference_nucleus(logits, temperature, top_p):
    """transformers' own warpers, as `generate(do_sample=True, temperature=..., top_p=...)` applies them."""
    scores = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
    return torch.softmax(scores, -1)


@pytest.mark.parametrize("shape", ["peaked", "wide", "flat"])  # the nucleus inside the first probe, past it
def test_the_nucleus_is_transformers_top_p(shape):  # inside a wider one, and past them all (the full sort)
    torch.manual_seed(3)
    vocab = 50_000
    logits = torch.randn(4, vocab) * (8.0 if shape == "peaked" else 0.5)
    if shape == "wide":  # about 1,500 likely tokens: past NUCLEUS_PROBE, as a 262k vocabulary often is
        logits[:, :1500] += 12.0
    for temperature, top_p in ((0.8, 0.95), (1.0, 0.5), (0.7, 0.9)):
        probs, where = nucleus(logits, temperature, top_p)
        mine = torch.zeros(4, vocab).scatter(-1, where, probs)
        mine = mine / mine.sum(-1, keepdim=True)
        theirs = reference_nucleus(logits, temperature, top_p)
        assert torch.equal(mine > 0, theirs > 0)
        assert torch.allclose(mine, theirs, atol=1e-6)
    if shape == "wide":
        assert where.shape[-1] > NUCLEUS_PROBE
    if shape != "flat":
        assert where.shape[-1] < vocab  # found without sorting the vocabulary


def test_settled_rows_stop_early_and_enough_returns_the_first_rows_only():
    """sample_many's early stops (serving.candidates.Until through the local backend): a settled row ends
    there, a prefix of what it would have written; `enough` ends decoding with completions 0..k-1."""
    model = with_lora(llama())
    [whole] = sample_many(model, PROMPT, n=1, max_new_tokens=24, temperature=0, top_p=1.0, seed=0, stops=[STOP])
    assert len(whole) >= 6
    [cut] = sample_many(model, PROMPT, n=1, max_new_tokens=24, temperature=0, top_p=1.0, seed=0, stops=[STOP],
                        settled=lambda row: len(row) >= 4)
    assert cut == whole[:4]

    steps = []
    hook = model.get_base_model().model.embed_tokens.register_forward_hook(lambda m, a, o: steps.append(a[0].shape[0]))
    try:
        kw = dict(n=5, max_new_tokens=20, temperature=1.5, top_p=1.0, seed=7, stops=list(range(3, 12)))
        full = sample_many(model, PROMPT, **kw)
        calls_full = len(steps)
        steps.clear()
        seen = []
        first = sample_many(model, PROMPT, **kw, enough=lambda rows: seen.append(len(rows)) or len(rows) >= 2)
    finally:
        hook.remove()
    assert len(full) == 5 and 2 <= len(first) < 5 and seen[-1] == len(first)
    assert len(steps) < calls_full  # it stopped decoding the later rows
    assert all(len(r) < 20 for r in first)  # only ended rows are returned


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
def test_packed_weights_give_the_tokens_of_transformers_generate(build):
    """twin.decoding.PackedLinears (the local backend's oneDNN path): the merged adapter's projections on packed
    weights give transformers' greedy tokens, and leave the modules as they were afterwards."""
    from twin.decoding import PackedLinears

    if not PackedLinears.usable(build()):
        pytest.skip("this torch has no oneDNN linear ops")
    model = with_lora(build())
    reference = plain_greedy(model, PROMPT, 24, [STOP, 4])
    model.merge_adapter()
    packed = PackedLinears(model)
    names = {n.replace(".base_layer", "").rsplit(".", 1)[-1] for n, m in model.named_modules() if m in packed.packed}
    assert {"q_proj", "down_proj", "lm_head"} <= names and not any("lora_" in n for n in names)
    with packed.active():
        assert all("forward" in m.__dict__ for m in packed.packed)
        [fast] = sample_many(model, PROMPT, n=3, max_new_tokens=24, temperature=0, top_p=1.0, seed=0, stops=[STOP, 4])
        x = torch.randn(2, 5, 32)
        q = model.get_base_model().model.layers[0].self_attn.q_proj
        assert torch.allclose(q(x), torch.nn.functional.linear(x, q.base_layer.weight), atol=1e-5)
    assert not any("forward" in m.__dict__ for m in packed.packed)
    assert fast == reference


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
def test_bf16_projections_give_the_tokens_of_transformers_with_bf16_projections(build):
    """PackedLinears(model, "bf16"), where the CPU has native bf16 the local backend's default: each projection
    of the layers on a bf16 copy of its weight, its input rounded to bf16 and its output back in fp32, the
    output head fp32, and the adapter not merged but beside the packed base, in fp32. Greedy, it gives the tokens
    of transformers' `generate` through peft's unmerged adapter with the same projections computed by
    `F.linear` in bf16."""
    from torch import nn
    from torch.nn import functional as F

    from twin.decoding import PackedLinears, merges

    model = with_lora(build())
    if not PackedLinears.usable(model, "bf16"):
        pytest.skip("this torch has no oneDNN bf16 linear ops")
    assert not merges(model, "bf16") and merges(model, "fp32")
    head = model.get_base_model().get_output_embeddings()
    layers = [m for n, m in model.named_modules() if type(m) is nn.Linear and "lora_" not in n and m is not head]
    for m in layers:
        m.forward = lambda x, m=m: F.linear(x.bfloat16(), m.weight.bfloat16(), None).float()
    try:
        reference = plain_greedy(model, PROMPT, 24, [STOP, 4])
    finally:
        for m in layers:
            del m.forward
    assert len(reference) >= 3
    packed = PackedLinears(model, "bf16")
    assert packed.packed[head][2] == torch.float32 and {packed.packed[m][2] for m in layers} == {torch.bfloat16}
    q = model.get_base_model().model.layers[0].self_attn.q_proj  # peft's wrapper around the packed base layer
    with packed.active(beside="default"):
        assert "forward" in q.__dict__  # the adapter's part runs in the same call, not through peft's wrapper
        x = torch.randn(2, 5, 32)
        lora = F.linear(F.linear(x, q.lora_A["default"].weight), q.lora_B["default"].weight) * q.scaling["default"]
        expected = F.linear(x.bfloat16(), q.base_layer.weight.bfloat16()).float() + lora
        assert torch.allclose(q(x), expected, atol=1e-5)
        [fast] = sample_many(model, PROMPT, n=3, max_new_tokens=24, temperature=0, top_p=1.0, seed=0, stops=[STOP, 4])
    assert not any("forward" in m.__dict__ for m in [*packed.packed, q])
    assert fast == reference
    with model.disable_adapter(), packed.active():  # the base alone: peft's wrappers skip the adapter
        x = torch.randn(2, 5, 32)
        assert torch.allclose(q(x), F.linear(x.bfloat16(), q.base_layer.weight.bfloat16()).float(), atol=1e-5)


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
def test_bf16_mlps_run_as_one_call_for_long_inputs_with_the_adapter_added_before_rounding(build):
    """In bf16 each MLP `down(act(gate(x)) * up(x))` runs as one call on inputs of at least MLP_ROWS tokens (a
    prefill), its inner activations in bf16 and the adapter's change (here on down_proj) added to the
    projection's sums before the output is rounded; shorter inputs go through the projections one by one."""
    from torch.nn import functional as F

    from twin.decoding import MLP_ROWS, PackedLinears

    model = with_lora(build())
    if not PackedLinears.usable(model, "bf16"):
        pytest.skip("this torch has no oneDNN bf16 linear ops")
    packed = PackedLinears(model, "bf16")
    layers = model.get_base_model().model.layers
    assert packed._mlps == [layer.mlp for layer in layers]
    mlp = layers[0].mlp
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj.base_layer
    lora_a, lora_b = mlp.down_proj.lora_A["default"].weight, mlp.down_proj.lora_B["default"].weight
    scale = mlp.down_proj.scaling["default"]

    def by_hand(x, adapter=True):
        h = x.reshape(-1, 32).bfloat16()
        inner = mlp.act_fn(F.linear(h, gate.weight.bfloat16())) * F.linear(h, up.weight.bfloat16())
        change = F.linear(F.linear(inner, lora_a.bfloat16()), (lora_b * scale).bfloat16()) * adapter
        return (F.linear(inner.float(), down.weight.bfloat16().float()) + change.float()).reshape(*x.shape[:-1], -1)

    long, short = torch.randn(2, MLP_ROWS // 2 + 3, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        reference = {x.shape: mlp(x) for x in (long, short)}  # fp32, through peft's wrapper
    with torch.inference_mode(), packed.active(beside="default"):
        assert "forward" in mlp.__dict__
        fast = mlp(long)
        assert fast.dtype == torch.float32 and torch.allclose(fast, by_hand(long), rtol=2e-2, atol=2e-3)
        assert torch.allclose(fast, reference[long.shape], rtol=5e-2, atol=5e-3)
        assert (fast - by_hand(long, adapter=False)).abs().mean() > 10 * (fast - by_hand(long)).abs().mean()
        assert torch.allclose(mlp(short), reference[short.shape], rtol=5e-2, atol=5e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_sampled_head_gives_fp32_logits_for_the_tokens_sampling_looks_at(monkeypatch, precision):
    """PackedLinears(..., sampled_head=True), the local backend's: the output head on an int8 copy of its rows
    (a quarter of the fp32 bytes; a bf16 copy where oneDNN's int8 linear is missing and the projections are
    bf16), and the HEAD_REFINE most likely tokens of each row computed again from the fp32 weights; over
    HEAD_REFINE_ROWS positions the fp32 head runs. The eval's packing (sampled_head=False) keeps the head fp32
    throughout, and so does a head of no more than HEAD_REFINE tokens, which the refinement alone covers."""
    import twin.decoding as decoding
    from torch.nn import functional as F

    model = llama()
    if not decoding.PackedLinears.usable(model, precision):
        pytest.skip(f"this torch has no oneDNN {precision} linear ops")
    head = model.get_output_embeddings()
    assert decoding.PackedLinears(model, precision, sampled_head=True).packed[head][2] == torch.float32  # 96 <= 512
    monkeypatch.setattr(decoding, "HEAD_REFINE", 8)
    assert decoding.PackedLinears(model, precision).packed[head][2] == torch.float32
    packed = decoding.PackedLinears(model, precision, sampled_head=True)
    if packed.packed[head][2] != torch.int8:
        assert decoding._int8_rows(head.weight.detach()) is None  # no int8 linear here: bf16, or the fp32 head
        assert packed.packed[head][2] == (torch.bfloat16 if precision == "bf16" else torch.float32)
        pytest.skip("this torch has no oneDNN int8 linear")
    x = torch.randn(3, 32) * 4
    exact = F.linear(x, head.weight)
    with torch.inference_mode(), packed.active():
        logits = head(x)
        many = head(torch.randn(decoding.HEAD_REFINE_ROWS + 1, 32))
        assert many.dtype == torch.float32
    top = exact.topk(4, dim=-1).indices  # as NUCLEUS_PROBE is half of HEAD_REFINE: the most likely half
    assert torch.allclose(logits.gather(-1, top), exact.gather(-1, top), atol=1e-5)  # refined: fp32
    assert torch.equal(logits.argmax(-1), exact.argmax(-1))
    refined = (logits - exact).abs() < 1e-5
    assert int(refined.sum()) >= 3 * 8
    error = (logits[~refined] - exact[~refined]).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt()
    assert 1e-4 < error < 0.05  # int8 elsewhere: about 1% of the logits' size, rows and inputs rounded


def test_a_bf16_head_serves_where_int8_rows_cannot(monkeypatch):
    """Where oneDNN's int8 linear is missing (`_int8_rows` None) and the projections are bf16, the sampled head
    runs on a bf16 copy, its HEAD_REFINE most likely tokens refined from fp32 as with int8 rows; in fp32 the
    head then stays fp32."""
    import twin.decoding as decoding
    from torch.nn import functional as F

    model = llama()
    if not decoding.PackedLinears.usable(model, "bf16"):
        pytest.skip("this torch has no oneDNN bf16 linear ops")
    monkeypatch.setattr(decoding, "HEAD_REFINE", 8)
    monkeypatch.setattr(decoding, "_int8_rows", lambda weight: None)
    head = model.get_output_embeddings()
    assert decoding.PackedLinears(model, "fp32", sampled_head=True).packed[head][2] == torch.float32
    packed = decoding.PackedLinears(model, "bf16", sampled_head=True)
    assert packed.packed[head][2] == torch.bfloat16
    x = torch.randn(3, 32) * 4
    exact = F.linear(x, head.weight)
    with torch.inference_mode(), packed.active():
        logits = head(x)
    top = logits.topk(8, dim=-1).indices
    assert torch.allclose(logits.gather(-1, top), exact.gather(-1, top), atol=1e-5)  # refined: fp32
    rest = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, top, False)
    assert torch.allclose(logits[rest], exact[rest], rtol=2e-2, atol=2e-2)  # bf16 elsewhere
    assert not torch.allclose(logits[rest], exact[rest], atol=1e-5)
    assert set(top[0].tolist()) == set(exact[0].topk(8).indices.tolist())


def test_an_mlp_of_another_form_is_not_run_as_one():
    """`_find_mlps` checks each MLP's own forward against the formula it would replace it with: an MLP that
    multiplies the other way round (act on up, not on gate) keeps its own forward."""
    from torch import nn

    from twin.decoding import PackedLinears

    class Swapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = nn.Linear(32, 64), nn.Linear(32, 64), nn.Linear(64, 32)
            self.act_fn = nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.up_proj(x)) * self.gate_proj(x))

    model = llama()
    if not PackedLinears.usable(model, "bf16"):
        pytest.skip("this torch has no oneDNN bf16 linear ops")
    model.model.layers[1].mlp = Swapped()
    assert PackedLinears(model, "bf16")._mlps == [model.model.layers[0].mlp]


PROMPTS = [PROMPT, PROMPT[:5], [1, 88, 3, 3, 40, 41, 2, 19, 70], PROMPT[3:], [1, 9]]  # lengths 12, 5, 9, 9, 2


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
def test_each_prompt_left_padded_in_one_batch_gives_its_own_greedy_tokens(build):
    """twin.decoding.sample_each (twin eval's replies): prompts of different lengths share a left-padded batch,
    and each gets the tokens transformers' `generate` gives it alone, with no padding."""
    from twin.decoding import sample_each

    model = with_lora(build())
    stops = list(range(3, 12))  # many stop tokens: rows end at different steps
    reference = [plain_greedy(model, p, 16, stops) for p in PROMPTS]
    assert sum(len(r) >= 3 for r in reference) >= 3  # real comparisons, not empty lists
    assert len({len(r) for r in reference}) > 1  # rows end at different steps: some leave the batch early
    for batch_rows in (16, 2):
        assert sample_each(model, PROMPTS, max_new_tokens=16, temperature=0, top_p=1.0, seed=0, stops=stops,
                           batch_rows=batch_rows) == reference


def test_each_prompt_is_sampled_once_seeded_and_finished_rows_leave():
    from twin.decoding import sample_each

    model = llama()
    shapes = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    kw = dict(max_new_tokens=20, temperature=1.5, top_p=0.9, stops=list(range(3, 12)))
    try:
        rows = sample_each(model, PROMPTS, seed=5, **kw)
    finally:
        hook.remove()
    assert shapes[0] == (len(PROMPTS), len(PROMPT))  # one prefill, left-padded to the longest prompt
    batch = [s[0] for s in shapes[1:]]
    assert all(s[1] == 1 for s in shapes[1:]) and batch == sorted(batch, reverse=True) and len(set(batch)) > 1
    assert len(rows) == len(PROMPTS) and not any(3 <= t < 12 for r in rows for t in r)
    assert rows == sample_each(model, PROMPTS, seed=5, **kw) and rows != sample_each(model, PROMPTS, seed=6, **kw)
