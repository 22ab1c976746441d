"""training.heldout: one forward per held-out sample gives both its perplexity NLLs and its reply's prefill.

Checked against the two halves done apart (training.metrics.token_nlls, twin.decoding.sample_each) on tiny
Llama and Gemma 3 models with a LoRA, Gemma's sliding window shorter than the samples."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_decoding import PROMPTS, gemma3, llama, with_lora  # noqa: E402
from training.heldout import nlls_and_replies  # noqa: E402
from training.metrics import token_nlls  # noqa: E402
from twin.decoding import sample_each  # noqa: E402

STOPS = list(range(3, 12))
TAILS = [[40, 41, 42, 3], [50], [60, 61, 62, 63, 64, 65, 2], [], [70, 71]]  # each sample = prompt + tail


def samples():
    rows, lens = [], []
    for k, (prompt, tail) in enumerate(zip(PROMPTS, TAILS)):
        ids = prompt + tail
        mask = [False] + [(j + k) % 3 != 0 for j in range(1, len(ids))]  # targets in the prompt and the tail
        rows.append((ids, mask))
        lens.append(len(prompt))
    rows.append(([1, 20, 21, 22, 23, 24], [False, True, True, False, True, True]))  # perplexity only
    lens.append(None)
    return rows, lens


@pytest.mark.parametrize("build", [llama, gemma3], ids=["llama", "gemma3"])
@pytest.mark.parametrize("temperature", [0.0, 1.2], ids=["greedy", "sampled"])
def test_one_pass_gives_the_nlls_and_replies_of_the_two_halves_apart(build, temperature):
    model = with_lora(build())
    rows, lens = samples()
    for batch_rows in (16, 2):
        nlls, replies = nlls_and_replies(model, rows, lens, max_new_tokens=12, temperature=temperature, top_p=0.9,
                                         seed=3, stops=STOPS, batch_rows=batch_rows)
        apart = token_nlls(model, rows)
        assert [len(a) for a in nlls] == [len(a) for a in apart] and sum(map(len, apart)) > 20
        for mine, theirs in zip(nlls, apart):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
        prompts = [ids[:n] for (ids, _), n in zip(rows, lens) if n]
        alone = sample_each(model, prompts, max_new_tokens=12, temperature=temperature, top_p=0.9, seed=3,
                            stops=STOPS, batch_rows=batch_rows)
        assert sorted(replies) == [i for i, n in enumerate(lens) if n]
        assert [replies[i] for i in sorted(replies)] == alone
        assert any(alone) and len({len(r) for r in alone}) > 1


def test_a_prompt_longer_than_its_row_is_refused():
    with pytest.raises(ValueError, match="prompt length 9"):
        nlls_and_replies(llama(), [([1, 2, 3], [False, True, True])], [9], max_new_tokens=4, temperature=0,
                         top_p=1.0, seed=0, stops=STOPS)
