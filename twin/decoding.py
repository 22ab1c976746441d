"""Several completions of one prompt, with the prompt's prefill done once: the drafting backend's decoder.

`generate(..., num_return_sequences=k)` copies the prompt k times before the prefill, so a draft of six
sequences pays six prefills of the same 100-900 tokens. Here the prompt runs through the model once (batch 1,
logits of its last position only: with a 262k-token vocabulary the other positions' logits would cost more
than the model), its KV cache is copied to k rows (`DynamicCache.batch_repeat_interleave`), and the k rows are
decoded together, a row leaving the batch (`batch_select_indices`) as soon as it samples an end-of-turn token.
All rows have the same prompt and no padding, so they need no attention mask.

`sample_each` is the other shape, one completion for each of many prompts (`twin eval`'s held-out replies, for a
model without a separate head; training.heldout otherwise): batches of prompts left-padded with a mask and positions that skip the padding, each row
leaving its batch at its end of turn, where `generate` keeps a batch's finished rows until its longest is done.
Both end in `decode_rows`, which `training.heldout` also starts from a prefill of its own.

Sampling is transformers' own rule (temperature, then nucleus `top_p`: the smallest set of most likely tokens
whose mass reaches `top_p`, `TopPLogitsWarper`), computed without sorting the whole vocabulary when the
nucleus lies among the `NUCLEUS_PROBE` most likely tokens, or among 8 or 64 times as many (checked exactly:
their mass reaches `top_p`), else by the full sort. Temperature 0 is greedy. Used by `serving.local_backend`
and `twin eval`; exercised by

    twin draft --contact "Tomas Berg" --backend local "are we still on for saturday?"
    .venv/bin/python bench/draft.py --local-only
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

MLP_ROWS = 1024  # tokens from which an MLP runs as one call in bf16 (`_packed_mlp`): batches of long prompts
NUCLEUS_PROBE = 256  # most likely tokens looked at first for the nucleus (top-p), then 8x as many, and so on
NUCLEUS_WIDER = 8  # how many times more tokens each further probe looks at; the full sort past a quarter of them
HEAD_REFINE = 2 * NUCLEUS_PROBE  # tokens per row whose logits an int8 or bf16 head for sampling computes again in fp32
HEAD_REFINE_ROWS = 64  # positions up to which it does (decode steps, a prefill's last position)


def sample_many(
    model: Any, prompt: Sequence[int], *, n: int, max_new_tokens: int, temperature: float, top_p: float,
    seed: int, stops: Sequence[int], settled: Callable[[list[int]], bool] | None = None,
    enough: Callable[[list[list[int]]], bool] | None = None,
) -> list[list[int]]:
    """`n` completions of `prompt` (token ids) as token ids, each cut before its first stop token (or at
    `max_new_tokens`). Greedy (temperature <= 0) gives one completion whatever `n` is.

    Optional early stops, for a caller that knows what it will keep: a row also ends when `settled(its
    tokens)` holds, and decoding ends, returning completions 0..k-1 only, as soon as those k have all ended
    and `enough(them)` holds. A row that stops so leaves the batch as at its end of turn: every row is still a
    sample of the same distribution (which of the generator's numbers a row draws depends on when the others
    leave, with or without these stops)."""
    import torch

    device = next(model.parameters()).device
    n = 1 if temperature <= 0 else n
    stop = torch.tensor(sorted(set(stops)), dtype=torch.long, device=device)
    with torch.inference_mode():
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
        last_only = {"logits_to_keep": 1} if keeps_last_logits(model) else {}
        step = model(input_ids=ids, use_cache=True, **last_only)
        cache, logits = step.cache, step.logits[:, -1, :]
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        return decode_rows(model, logits, cache, max_new_tokens, chooser(temperature, top_p, seed, device), stop,
                           settled=settled, enough=enough)


def sample_each(
    model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float, top_p: float,
    seed: int, stops: Sequence[int], batch_rows: int = 16,
) -> list[list[int]]:
    """One completion per prompt (token ids), as token ids cut before its first stop token (or at
    `max_new_tokens`): what training.heldout's replies are checked against, and its path for a model without a
    separate head.

    Prompts go through in batches of `batch_rows` of similar length, left-padded, with an attention mask and
    positions that skip the padding (as `generate` does), and the prefill computes the logits of the last
    position only. A row leaves its batch as soon as it samples a stop token, so a batch costs its rows' own
    lengths, not its longest row's at every step (transformers' `generate` keeps finished rows to the end).
    Sampling is `pick`'s (temperature, then nucleus), one seeded generator for the whole call; temperature 0 is
    greedy."""
    import torch

    device = next(model.parameters()).device
    choose = chooser(temperature, top_p, seed, device)
    stop = torch.tensor(sorted(set(stops)), dtype=torch.long, device=device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    last_only = {"logits_to_keep": 1} if keeps_last_logits(model) else {}
    with evaluating(model):
        for start in range(0, len(order), batch_rows):
            batch = order[start:start + batch_rows]
            ids, mask, position = left_padded([prompts[i] for i in batch], device)
            step = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, **last_only)
            rows = decode_rows(model, step.logits[:, -1, :], step.cache, max_new_tokens, choose, stop, mask=mask,
                               position=position[:, -1:])
            for i, tokens in zip(batch, rows):
                out[i] = tokens
    return out


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """The model in eval mode (no dropout) under `torch.inference_mode`, its own mode restored afterwards."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def chooser(temperature: float, top_p: float, seed: int, device: Any) -> Callable[[Any], Any]:
    """logits (rows x vocab) -> one token per row: greedy at temperature 0, else `pick` on a generator seeded once."""
    import torch

    if temperature <= 0:
        return lambda logits: logits.argmax(-1)
    generator = torch.Generator(device=device).manual_seed(seed)
    return lambda logits: pick(logits, temperature, top_p, generator)


def left_padded(prompts: Sequence[Sequence[int]], device: Any) -> tuple[Any, Any, Any]:
    """(ids, attention mask, positions) of the prompts left-padded to the longest one, padding id 0 (masked out),
    each row's positions counting from 0 at its first real token (as `generate` does)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def decode_rows(model: Any, logits: Any, cache: Any, max_new_tokens: int, choose: Callable[[Any], Any], stop: Any,
                mask: Any = None, position: Any = None, settled: Callable[[list[int]], bool] | None = None,
                enough: Callable[[list[list[int]]], bool] | None = None) -> list[list[int]]:
    """The completions of a batch whose prompts are in `cache` (`logits`: the next token's at each row's last
    prompt position), each cut before its first stop token; a row leaves the batch (and the cache) as soon as it
    picks one, or once `settled(its tokens)` holds. Left-padded prompts come with their attention `mask` and
    each row's last `position`; prompts without padding need neither. With `enough`, decoding ends as soon as
    completions 0..k-1 have all ended and `enough(them)` holds, returning those k only (`sample_many`)."""
    import torch

    out: list[list[int]] = [[] for _ in range(len(logits))]
    rows = list(range(len(logits)))  # which completion each batch row is
    finished = 0  # completions 0..finished-1 have all ended
    for t in range(max_new_tokens):
        picked = choose(logits.float())
        ended = torch.isin(picked, stop)
        for r, (token, done) in enumerate(zip(picked.tolist(), ended.tolist())):
            if not done:
                out[rows[r]].append(token)
                if settled is not None and settled(out[rows[r]]):
                    ended[r] = True
        if t == max_new_tokens - 1 or bool(ended.all()):
            break
        if enough is not None and bool(ended.any()):
            live = {rows[r] for r in range(len(rows)) if not ended[r]}
            done_before = finished
            while finished < len(out) and finished not in live:
                finished += 1
            if finished > done_before and enough(out[:finished]):
                return out[:finished]
        if bool(ended.any()):
            keep = (~ended).nonzero().flatten()
            cache.batch_select_indices(keep)
            rows = [rows[i] for i in keep.tolist()]
            picked = picked[keep]
            if mask is not None:
                mask, position = mask[keep], position[keep]
        padding = {}
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            position = position + 1
            padding = {"attention_mask": mask, "position_ids": position}
        step = model(input_ids=picked[:, None], cache=cache, use_cache=True, **padding)
        logits = step.logits[:, -1, :]
    return out


def keeps_last_logits(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (most transformers causal LMs; peft passes it on)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def pick(logits: Any, temperature: float, top_p: float, generator: Any) -> Any:
    """One token per row, drawn from `nucleus(logits, temperature, top_p)`."""
    import torch

    probs, where = nucleus(logits, temperature, top_p)
    return where.gather(-1, torch.multinomial(probs, 1, generator=generator)).flatten()


def nucleus(logits: Any, temperature: float, top_p: float) -> tuple[Any, Any]:
    """(probabilities, token ids) per row: softmax(logits / temperature) on the nucleus `top_p`, zero elsewhere,
    over the most likely tokens first (as many as needed, not always the whole vocabulary).

    The nucleus is transformers' (`TopPLogitsWarper`): a token stays when the mass of the tokens more likely
    than it is below `top_p`, so the most likely one always stays. The probabilities are not renormalised
    (`torch.multinomial` does not need it).

    The probes: the `NUCLEUS_PROBE` most likely tokens, and while their mass falls short of `top_p` in a row,
    `NUCLEUS_WIDER` times as many, up to the full sort. A draft's nucleus often needs more than the first
    probe (a quarter of Gemma 3's steps, half of SmolLM2's, on the sample export) but rarely more than 2,048
    tokens; sorting Gemma's 262,144 and sampling over them all took about 55 ms a step, the wider probe 3 ms.
    """
    import torch

    scaled = logits / temperature
    vocab = scaled.shape[-1]
    if top_p >= 1.0:
        return torch.softmax(scaled, -1), torch.arange(vocab, device=scaled.device).expand_as(scaled)
    total = torch.logsumexp(scaled, -1, keepdim=True)
    size = min(NUCLEUS_PROBE, vocab)
    while True:
        if size * 4 > vocab:
            top, where = scaled.sort(dim=-1, descending=True)
        else:
            top, where = scaled.topk(size, dim=-1)  # sorted, most likely first
        probs = torch.exp(top - total)
        if top.shape[-1] == vocab or not bool((probs.sum(-1) < top_p).any()):  # the nucleus is inside
            break
        size *= NUCLEUS_WIDER
    before = probs.cumsum(-1) - probs  # the mass of the more likely tokens
    return probs.masked_fill(before >= top_p, 0.0), where


Precision = Literal["auto", "fp32", "bf16"]


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16), where oneDNN's bf16 kernels run
    at about twice the fp32 rate; elsewhere bf16 is emulated and slower than fp32."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (_cpu_has("_is_amx_tile_supported")
                                                                    or _cpu_has("_is_avx512_bf16_supported"))


def _cpu_has(check: str) -> bool:
    """One of torch.cpu's probes (`_is_avx512_supported`, ...): present in the torch versions twin accepts, or
    not, then False."""
    import torch

    return bool(getattr(getattr(torch, "cpu", None), check, lambda: False)())


def cpu_precision(choice: Precision) -> str:
    """"fp32" or "bf16": what `[drafting] precision` asks for, "auto" being bf16 where the CPU has it natively."""
    if choice == "auto":
        return "bf16" if native_bf16() else "fp32"
    return choice


def merges(model: Any, precision: str) -> bool:
    """Whether an adapter is best merged into the weights before generating: for fp32 weights (merging and
    unmerging bf16 ones loses bits at every switch), unless the projections run on bf16 copies. An adapter's
    change to a weight is often under half a bf16 step of it (for 75% of SmolLM2's weights after 3 demo steps,
    29% after 26), so merged and then rounded to bf16 it would come out coarsened (held-out perplexity 1.4% off
    after 3 steps, against 0.02% for the base alone: the "Evaluation" section of docs/benchmarks.md); beside
    the weights, in fp32, it stays whole."""
    import torch

    fp32 = next(model.parameters()).dtype == torch.float32
    return fp32 and not (precision == "bf16" and PackedLinears.usable(model, precision))


class PackedLinears:
    """A model's fp32 linear weights reordered once for oneDNN (`torch.ops.mkldnn`), used inside `active()`.

    torch's CPU `F.linear` calls MKL's sgemm, which is slow for the few rows of a decode step: measured on the
    dev box (2 cores, SmolLM2-135M, 4 rows), all 211 projections took 105 ms through F.linear against 58 ms
    with weights packed for oneDNN, and a decode step 146-187 ms against 87-108 ms (docs/benchmarks.md). Same
    fp32 arithmetic in another order (differences around 1e-6 of the output): greedy tokens are unchanged in
    the tests.

    With `precision="bf16"` the projections inside the layers are packed as bf16 copies instead (half the bytes
    a decode step reads, and the CPU's bf16 units for a prefill): each takes its input rounded to bf16 and
    gives its output back in fp32, so the residual stream, the norms, attention and the output head (a token's
    logits) stay fp32. The model's own weights stay fp32 and are not touched. The embedded bases
    are dequantised from 4-bit GGUF files, whose rounding is about 60 times bf16's (rms, SmolLM2's projections;
    docs/benchmarks.md has what bf16 changes in the held-out metrics and the next-token distributions).

    The packed copies are made once per set of weights: after a merge or an unmerge they are stale, and the
    owner (serving.local_backend) makes new ones. LoRA's own A and B matrices stay as they are (in bf16 an
    adapter is not merged but runs beside the packed base, see `merges`). Where oneDNN is missing, or off the
    CPU, or the weights are not fp32, `usable` is False and nothing is packed: `active()` changes nothing.
    """

    ROWS_HINT = 4  # rows oneDNN tunes the layout for (any number of rows works)

    def __init__(self, model: Any, precision: str = "fp32", sampled_head: bool = False):
        import torch
        from torch import nn

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = base.get_output_embeddings()
        self.precision = precision
        self.model = model  # peft may wrap its projections later (in place): `active` looks again
        self.packed: dict[Any, tuple[Any, Any, Any]] = {}
        for name, module in model.named_modules() if self.usable(model, precision) else ():
            if (type(module) is not nn.Linear or "lora_" in name or module.weight.dtype != torch.float32
                    or module.weight.device.type != "cpu"):
                continue
            if module is head and (not sampled_head or module.out_features <= HEAD_REFINE):
                half = False  # the eval's head, and one that the refinement alone covers, stay fp32
            elif module is head and (rows := _int8_rows(module.weight.detach())) is not None:
                self.packed[module] = (rows, None if module.bias is None else module.bias.detach(), torch.int8)
                continue
            else:
                half = precision == "bf16"
            dtype = torch.bfloat16 if half else torch.float32
            bias = None if module.bias is None else module.bias.detach().to(dtype)
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().to(dtype), self.ROWS_HINT)
            self.packed[module] = (weight, bias, dtype)
        self._sampled_head = head if head in self.packed and self.packed[head][2] != torch.float32 else None
        self._mlps = self._find_mlps() if precision == "bf16" else []
        self._half_factors: dict[tuple, tuple] = {}  # (wrapper, adapter) -> (its A, A and scaled B in bf16)

    @staticmethod
    def usable(model: Any, precision: str = "fp32") -> bool:
        import torch

        weight = next(model.parameters())
        return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                and (precision != "bf16" or torch.ops.mkldnn._is_mkldnn_bf16_supported()))

    def active(self, beside: str | None = None) -> Any:
        """A context in which each packed module's forward runs on its packed weight. `beside` names the loaded
        adapter that is on and not merged (`merges`), if any: each of its plain LoRA projections then runs as
        one call, the packed base projection plus the adapter's own two fp32 products (`_packed_lora`), without
        peft's wrapper. In bf16, each MLP found at packing (`_find_mlps`) runs as one call too (`_packed_mlp`).
        Wrappers that do more than that (DoRA, another adapter on) keep peft's forward around the packed
        modules. For inference only: no LoRA dropout."""
        import contextlib
        import functools

        runs: dict[Any, Any] = {module: functools.partial(_packed_linear, *packed)
                                for module, packed in self.packed.items()}
        if (head := self._sampled_head) is not None:
            runs[head] = functools.partial(_sampled_head, *self.packed[head][:2], head.weight, head.bias)
        wrappers = [m for m in self.model.modules()
                    if hasattr(m, "lora_A") and getattr(m, "base_layer", None) in self.packed]
        adds = {module: _adapter_part(module, beside) for module in wrappers}  # what each wrapper adds
        for module, part in adds.items():
            if part is not None:
                runs[module] = functools.partial(_packed_lora, *self.packed[module.base_layer], part)
        for mlp in self._mlps:
            parts = [self._half_part(p, adds, beside) for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
            if all(part is not None for part in parts):
                own = functools.partial(type(mlp).forward, mlp)
                runs[mlp] = functools.partial(_packed_mlp, *parts, mlp.act_fn, own)

        @contextlib.contextmanager
        def scope():
            for module, run in runs.items():
                module.forward = run
            try:
                yield
            finally:
                for module in runs:
                    module.__dict__.pop("forward", None)

        return scope()

    def _find_mlps(self) -> list[Any]:
        """The model's MLPs of the form `down_proj(act_fn(gate_proj(x)) * up_proj(x))` (Llama's, Gemma's, Qwen's)
        whose three projections are packed in bf16: checked, not assumed, by running each one's own forward on
        its base weights against that formula on a random input."""
        import torch
        from torch.nn import functional as F

        def base(p):
            return getattr(p, "base_layer", p)

        found = []
        for module in self.model.modules():
            projections = [getattr(module, a, None) for a in ("gate_proj", "up_proj", "down_proj")]
            if not hasattr(module, "act_fn") or not all(base(p) in self.packed for p in projections):
                continue
            if any(self.packed[base(p)][2] != torch.bfloat16 for p in projections):
                continue
            gate, up, down = (base(p) for p in projections)
            x = torch.randn(2, gate.in_features, generator=torch.Generator().manual_seed(0))
            for p in projections:
                p.forward = base(p).forward  # the base projection alone, in fp32, adapters or not
            try:
                with torch.no_grad():
                    own = type(module).forward(module, x)
            finally:
                for p in projections:
                    p.__dict__.pop("forward", None)
            with torch.no_grad():
                inner = module.act_fn(F.linear(x, gate.weight, gate.bias)) * F.linear(x, up.weight, up.bias)
                formula = F.linear(inner, down.weight, down.bias)
            if torch.allclose(own, formula, rtol=1e-4, atol=1e-5):
                found.append(module)
        return found

    def _half_part(self, projection: Any, adds: dict[Any, Any], beside: str | None) -> tuple[Any, Any, Any] | None:
        """(packed bf16 weight, its bias, the adapter's (A, scaled B) in bf16 or None) for one of an MLP's
        projections, or None where it cannot run so (its wrapper does more than add a plain adapter: `adds`,
        each wrapper's `_adapter_part`)."""
        import torch

        if projection in self.packed:
            return (*self.packed[projection][:2], None)
        part = adds.get(projection)
        if part is None:
            return None
        if part:
            down, up, scale = part
            key, source = (projection, beside), projection.lora_A[beside].weight
            if self._half_factors.get(key, (None,))[0] is not source:  # made once per loaded adapter
                self._half_factors[key] = (source, down.to(torch.bfloat16), (up * scale).to(torch.bfloat16))
            part = self._half_factors[key][1:]
        return (*self.packed[projection.base_layer][:2], part or None)


def _adapter_part(module: Any, adapter: str | None) -> tuple[Any, ...] | None:
    """What peft's wrapper `module` adds to its base projection: () nothing (adapters off, none of them active,
    or the active one merged into the base weights), (A, B, scaling) a plain LoRA `adapter`, or None where it
    does something else (DoRA, a LoRA bias, dropout on, another adapter active, some merged and some not):
    then its own forward has to run."""
    from torch import nn

    active = [a for a in getattr(module, "active_adapters", []) if a in module.lora_A]
    if getattr(module, "disable_adapters", False) or not active or set(active) <= set(module.merged_adapters):
        return ()  # nothing on, or what is on is merged into the base weights
    if (active != [adapter] or module.merged_adapters or module.use_dora.get(adapter)
            or getattr(module, "lora_bias", {}).get(adapter) or module.training
            or type(module.lora_A[adapter]) is not nn.Linear or type(module.lora_B[adapter]) is not nn.Linear
            or module.lora_A[adapter].bias is not None or module.lora_B[adapter].bias is not None):
        return None
    return module.lora_A[adapter].weight.detach(), module.lora_B[adapter].weight.detach(), module.scaling[adapter]


def _packed_linear(weight: Any, bias: Any, dtype: Any, x: Any) -> Any:
    import torch

    flat = x.reshape(-1, x.shape[-1])
    y = torch.ops.mkldnn._linear_pointwise(flat.to(dtype), weight, bias, "none", [], "")
    return y.to(x.dtype).reshape(*x.shape[:-1], y.shape[-1])


def _packed_lora(weight: Any, bias: Any, dtype: Any, part: tuple[Any, ...], x: Any) -> Any:
    """The packed base projection of x, plus `scale * x A^T B^T` computed in x's dtype where `part` is the
    adapter's (A, B, scale)."""
    import torch

    flat = x.reshape(-1, x.shape[-1])
    y = torch.ops.mkldnn._linear_pointwise(flat.to(dtype), weight, bias, "none", [], "").to(x.dtype)
    if part:
        down, up, scale = part
        y = torch.addmm(y, torch.nn.functional.linear(flat, down), up.t(), alpha=scale)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _int8_rows(weight: Any) -> tuple[Any, Any, Any] | None:
    """`weight` (fp32, out x in) as int8 rows, each with its own scale, packed for oneDNN's int8 linear (the
    CPU's VNNI or AMX units): (packed rows, scales, zero points), a quarter of the fp32 bytes. None where the op
    is missing or fails its check, the rows' product on a random input against the fp32 one, and on a CPU
    without AVX-512 or VNNI: oneDNN limited to AVX2 took 116 ms for Gemma 3's head against 34 ms in fp32 (8-11
    ms with AVX-512 or VNNI)."""
    import torch

    if not (_cpu_has("_is_avx512_supported") or _cpu_has("_is_vnni_supported")):
        return None
    try:
        scales = (torch.maximum(weight.amax(1), -weight.amin(1)) / 127).clamp(min=1e-12)  # no |weight| copy
        rows = torch.empty(weight.shape, dtype=torch.int8)
        step = 16384  # rows rounded at a time: no fp32 copy of the whole head
        for start in range(0, len(weight), step):
            part = slice(start, start + step)
            rows[part] = torch.round(weight[part] / scales[part, None]).clamp_(-127, 127)
        packed = (torch.ops.onednn.qlinear_prepack(rows, [PackedLinears.ROWS_HINT, weight.shape[1]]), scales,
                  torch.zeros(len(weight), dtype=torch.long))
        x = torch.randn(2, weight.shape[1], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = x @ weight.t()
            error, size = _int8_linear(packed, x) - want, want.pow(2).mean().sqrt()
    except (AttributeError, RuntimeError, NotImplementedError):  # no oneDNN int8 ops in this torch, or not here
        return None
    return packed if bool(error.pow(2).mean().sqrt() < 0.05 * size) else None


def _int8_linear(rows: tuple[Any, Any, Any], x: Any) -> Any:
    """x (rows x in, fp32) times `_int8_rows`' weight, in fp32: x rounded to 8 bits with one scale for all of
    its rows, the products summed in int32 and scaled back."""
    import torch

    packed, scales, zeros = rows
    scale = max(float(x.abs().max()) / 127, 1e-30)
    qx = (torch.round(x / scale).clamp(-127, 127) + 128).to(torch.uint8)
    return torch.ops.onednn.qlinear_pointwise(qx.contiguous(), scale, 128, packed, scales, zeros, None, 1.0, 0,
                                              torch.float32, "none", [], "")


def _sampled_head(weight: Any, bias: Any, exact: Any, exact_bias: Any, x: Any) -> Any:
    """Logits for sampling: the output head on its int8 rows (`_int8_rows`) or its packed bf16 copy, then the
    `HEAD_REFINE` most likely tokens' logits of each row computed again from the fp32 weights (`exact`), so the
    tokens sampling mostly picks from (the nucleus, NUCLEUS_PROBE of them or more) have fp32 logits; the rest
    keep the rounded ones, which only enter the softmax's sum, and the greedy token is the fp32 head's. For
    Gemma 3's 262,144 x 640 a decode step's head took 29 ms in fp32, 15 ms in bf16 and 8 ms in int8 (a quarter
    of the bytes). For more than `HEAD_REFINE_ROWS` positions the fp32 head runs instead."""
    import torch

    flat = x.reshape(-1, x.shape[-1])
    if len(flat) > HEAD_REFINE_ROWS:
        return torch.nn.functional.linear(x, exact, exact_bias)
    if isinstance(weight, tuple):
        logits = _int8_linear(weight, flat.float()).to(x.dtype)
        logits = logits if bias is None else logits + bias
    else:
        logits = torch.ops.mkldnn._linear_pointwise(flat.to(torch.bfloat16), weight, bias, "none", [], "").to(x.dtype)
    top = logits.topk(min(HEAD_REFINE, logits.shape[-1]), dim=-1).indices
    again = torch.einsum("rd,rkd->rk", flat, exact[top])
    if exact_bias is not None:
        again = again + exact_bias[top]
    return logits.scatter_(-1, top, again).reshape(*x.shape[:-1], logits.shape[-1])


def _packed_mlp(gate: tuple, up: tuple, down: tuple, act: Any, own: Callable[[Any], Any], x: Any) -> Any:
    """`down(act(gate(x)) * up(x))` in one call, on packed bf16 weights, its inner activations in bf16: x rounded
    once, the result back in x's dtype. Each projection is (weight, bias, adapter part): the part's (A, scaled
    B) in bf16 give the adapter's change, which oneDNN adds to the projection's fp32 sums before its one rounding
    to bf16 (`_linear_pointwise.binary`), so the adapter is not rounded away with the weights.

    It pays where the activations are large, a batch of long prompts (SmolLM2 on the dev box: 16 x 400 tokens
    in 2.54 s against 3.45 s through the projections one by one: `twin eval`). Below `MLP_ROWS` tokens (decode
    steps, a draft's prompt) it gains little or loses (a decode step of 3 rows: 45 against 41 ms; drafts p50
    530 against 474 ms), and the MLP's `own` forward runs, through the packed projections."""
    import torch

    if x.numel() < MLP_ROWS * x.shape[-1]:
        return own(x)

    def project(h, weight, bias, part):
        if part is None:
            return torch.ops.mkldnn._linear_pointwise(h, weight, bias, "none", [], "")
        a, b = part
        change = torch.nn.functional.linear(torch.nn.functional.linear(h, a), b)
        return torch.ops.mkldnn._linear_pointwise.binary(h, change, weight, bias, "add")

    h = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    y = project(act(project(h, *gate)) * project(h, *up), *down).to(x.dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])
