"""Evaluation metrics: worked examples for style, distance and distinct-n; the classifier test on synthetic
people; perplexity against a by-hand NLL; canaries on a tiny Llama built here (random, and trained to memorise
one secret); the chart as a PNG."""

import doctest
import json
import math
import random
from dataclasses import dataclass

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training import metrics
from training import canaries
from twin import emoji
from twin.emoji import count_emoji
from training.canaries import Canary, exposure, leaks, make_canaries, plant
from training.metrics import (
    STYLE_FEATURES,
    chart,
    classifier_auc,
    distinct_n,
    perplexity,
    profile_distance,
    style_profile,
)


def test_docstring_examples():
    assert doctest.testmod(metrics).failed == 0
    assert doctest.testmod(canaries).failed == 0
    assert doctest.testmod(emoji).failed == 0


# --- style -----------------------------------------------------------------------------------------------------


def test_count_emoji_folds_sequences_into_one():
    assert count_emoji("no emoji here :) <3") == 0
    assert count_emoji("😂😂") == 2
    assert count_emoji("👍🏽") == 1  # skin tone
    assert count_emoji("👩‍💻 ❤️ 🇩🇪 1️⃣") == 4  # ZWJ sequence, variation selector, flag, keycap
    assert count_emoji("✨🫠") == 2  # dingbat, newest block


def test_style_profile_worked_example():
    replies = [
        ["ok!!", "  ", "see you at 5..."],  # the blank line is not a message
        ["Sounds good.", "😂 😂"],
        [],  # a reply with no message: burst size 0
        ["wait, what?"],
    ]
    # messages: "ok!!" (4 chars, 1 word), "see you at 5..." (15, 4), "Sounds good." (12, 2), "😂 😂" (3, 2),
    # "wait, what?" (11, 2). Lengths sorted: 3 4 11 12 15.
    p = style_profile(replies)
    assert list(p) == list(STYLE_FEATURES)
    assert p["chars_mean"] == pytest.approx(45 / 5)
    assert p["chars_p10"] == pytest.approx(3.4)  # rank 0.4 between 3 and 4
    assert p["chars_p50"] == 11
    assert p["chars_p90"] == pytest.approx(13.8)  # rank 3.6 between 12 and 15
    assert p["words_mean"] == pytest.approx(11 / 5)
    assert p["burst_mean"] == pytest.approx(5 / 4)
    assert p["emoji_per_message"] == pytest.approx(2 / 5)
    assert p["emoji_share"] == pytest.approx(1 / 5)
    assert p["exclaim_share"] == pytest.approx(1 / 5)
    assert p["question_share"] == pytest.approx(1 / 5)
    assert p["ellipsis_share"] == pytest.approx(1 / 5)
    assert p["full_stop_share"] == pytest.approx(1 / 5)  # "see you at 5..." ends with an ellipsis, not a stop
    assert p["lowercase_share"] == pytest.approx(3 / 4)  # "😂 😂" has no letters and is not counted


def test_style_profile_edge_cases():
    p = style_profile([["123", "👍"]])
    assert math.isnan(p["lowercase_share"])
    assert style_profile([["Hi…", "Hi.."]])["ellipsis_share"] == 1.0
    with pytest.raises(ValueError, match="no non-empty messages in 2 replies"):
        style_profile([[""], ["  "]])


def test_profile_distance_worked_example_and_properties():
    a = {"chars_mean": 30.0, "emoji_share": 0.0, "question_share": 0.5, "lowercase_share": 0.04}
    b = {"chars_mean": 20.0, "emoji_share": 0.0, "question_share": 0.25, "lowercase_share": 0.0}
    # terms: 10/50 = 0.2; 0 (both zero); 0.25/0.75 = 1/3; 0.04/floor 0.1 = 0.4
    expected = (0.2 + 0 + 1 / 3 + 0.4) / 4
    assert profile_distance(a, b) == pytest.approx(expected)
    assert profile_distance(b, a) == pytest.approx(expected)
    assert profile_distance(a, a) == 0.0
    real = style_profile([["hey", "what's up?"], ["lol"]])
    assert profile_distance(real, real) == 0.0
    shouty = style_profile([["HELLO THERE!!! How are you doing today?!"]])
    assert 0.3 < profile_distance(shouty, real) <= 1.0


def test_profile_distance_skips_nan_and_rejects_other_features():
    assert profile_distance({"x": math.nan, "y": 1.0}, {"x": 0.5, "y": 3.0}) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in features"):
        profile_distance({"x": 1.0}, {"y": 1.0})


def test_distinct_n_definition():
    texts = ["ok ok ok", "ok sure", "yes"]
    assert distinct_n(texts, n=1) == pytest.approx(3 / 6)  # ok, sure, yes over 6 tokens
    assert distinct_n(texts, n=2) == pytest.approx(2 / 3)  # (ok ok) ×2, (ok sure); "yes" has no bigram
    assert distinct_n(["a b", "b c"], n=2) == 1.0  # no bigram (b b) across texts
    assert distinct_n(["Ok ok"], n=1) == 1.0  # case is kept
    assert math.isnan(distinct_n(["one", ""], n=2))


# --- classifier two-sample test ----------------------------------------------------------------------------------

WORDS = "coffee later train home tomorrow maybe pizza movie tired work done yes no sure call tonight".split()


def chatter(rng, shout):
    words = rng.sample(WORDS, rng.randint(2, 6))
    if shout:
        return " ".join(words).capitalize() + rng.choice(["!!", "!!!"])
    return " ".join(words)


def test_classifier_auc_same_generator_is_chance():
    rng = random.Random(1)
    mixed = lambda: chatter(rng, shout=rng.random() < 0.5)  # noqa: E731
    a, b = [mixed() for _ in range(300)], [mixed() for _ in range(300)]
    assert abs(classifier_auc(a, b, seed=0) - 0.5) < 0.08


def test_classifier_auc_different_styles_is_near_one():
    rng = random.Random(2)
    real = [chatter(rng, shout=False) for _ in range(40)]
    generated = [chatter(rng, shout=True) for _ in range(40)]
    assert classifier_auc(real, generated) > 0.9


def test_classifier_auc_tiny_sets_are_nan_with_a_reason():
    with pytest.warns(UserWarning, match="5 real and 30 generated texts; needs at least 10"):
        assert math.isnan(classifier_auc(["a"] * 5, ["b"] * 30))


# --- tiny model ----------------------------------------------------------------------------------------------------

ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789.,:!?"


class CharTokenizer:
    """One id per character; the two methods of a transformers tokenizer that metrics.py calls."""

    def encode(self, text, add_special_tokens=True):
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(ALPHABET[i] for i in ids)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(ALPHABET), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
    )  # fmt: skip
    return LlamaForCausalLM(config)


@dataclass
class Row:
    input_ids: list[int]
    loss_mask: list[bool]


def by_hand_nll(model, ids):
    """NLL of every token ids[1:] given the ones before, one unpadded row at a time."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return [-float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]


def test_perplexity_equals_exp_mean_nll_by_hand():
    model = tiny_llama()
    tok = CharTokenizer()
    rows = []
    for text, first_target in [("hi there: ok", 10), ("what? me:  sure thing", 10), ("x: y", 3), ("ab", 0)]:
        ids = tok.encode(text)
        rows.append(Row(ids, [i >= first_target for i in range(len(ids))]))
    nll = [n for r in rows for n, m in zip(by_hand_nll(model.eval(), r.input_ids), r.loss_mask[1:]) if m]
    assert len(nll) == 2 + 11 + 1 + 1  # loss_mask[0] of "ab" is ignored: nothing predicts the first token
    model.train()
    got = perplexity(model, rows, batch_rows=3)  # rows of several lengths share a padded batch
    assert got == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    assert model.training  # mode restored
    assert 0.8 * len(ALPHABET) < got < 1.2 * len(ALPHABET)  # a fresh model is near uniform


def test_token_nlls_make_the_head_logits_a_chunk_at_a_time(monkeypatch):
    """The head runs on at most NLL_CHUNK target positions at once, and the NLLs are those of the whole batch by
    hand (a 262k-vocabulary model's logits for every target of a batch would be gigabytes)."""
    model = tiny_llama().eval()
    rng = random.Random(3)
    rows = [(ids, [i > 0 for i in range(len(ids))])
            for ids in ([rng.randrange(len(ALPHABET)) for _ in range(n)] for n in (9, 14, 5))]
    widest = []
    head = metrics.head_logits
    monkeypatch.setattr(metrics, "head_logits",
                        lambda causal, hidden: widest.append(len(hidden)) or head(causal, hidden))
    monkeypatch.setattr(metrics, "NLL_CHUNK", 4)
    got = metrics.token_nlls(model, rows, batch_rows=3)
    assert max(widest) == 4 and sum(widest) == 8 + 13 + 4  # every target once, four at a time
    for (ids, _), nll in zip(rows, got):
        assert nll == pytest.approx(by_hand_nll(model, ids), rel=1e-5)


def test_perplexity_with_a_peft_model_and_bad_input():
    from peft import LoraConfig, get_peft_model

    model = tiny_llama()
    rows = [Row([1, 2, 3, 4], [False, True, True, True])]
    base = perplexity(model, rows)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert perplexity(lora, rows) == pytest.approx(base, rel=1e-6)  # LoRA B starts at zero
    with pytest.raises(ValueError, match="no target tokens"):
        perplexity(model, [Row([1, 2], [True, False])])
    with pytest.raises(ValueError, match="sample 0 has 2 ids but 1 mask flags"):
        perplexity(model, [Row([1, 2], [True])])


def test_perplexity_of_a_peft_model_with_and_without_its_adapter_matches_full_logits():
    """The head runs only at target positions (twin eval's speed-up): the same numbers as the full logits."""
    from peft import LoraConfig, get_peft_model

    tok = CharTokenizer()
    lora = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a trained adapter: it changes the outputs
    rows = [Row(tok.encode(t), [i >= 3 for i in range(len(t))]) for t in ("ab: cd ef", "x: yes ok then", "q: r")]

    def by_hand(model):
        nll = [n for r in rows for n, m in zip(by_hand_nll(model.eval(), r.input_ids), r.loss_mask[1:]) if m]
        return math.exp(sum(nll) / len(nll))

    with lora.disable_adapter():
        base, base_by_hand = perplexity(lora, rows, batch_rows=2), by_hand(lora)
    adapted, adapted_by_hand = perplexity(lora, rows, batch_rows=2), by_hand(lora)
    assert base == pytest.approx(base_by_hand, rel=1e-5) and adapted == pytest.approx(adapted_by_hand, rel=1e-5)
    assert abs(adapted - base) > 1e-3 * base


# --- canaries ----------------------------------------------------------------------------------------------------


def test_make_canaries_and_plant():
    canaries = make_canaries(seed=3)
    assert [c.repeats for c in canaries] == [1, 4, 16]
    assert len({c.secret for c in canaries}) == len({c.prefix for c in canaries}) == 3
    for c in canaries:
        assert [len(d) for d in c.secret.split()] == [1] * 6 and c.space == 10**6
        assert c.text == f"{c.prefix} {c.secret}"
    assert make_canaries(seed=3) == canaries

    convs = [(("friend", "hi"),) for _ in range(20)]
    planted = plant(convs, canaries, seed=0, insert=lambda conv, text: conv + (("me", text),))
    assert convs == [(("friend", "hi"),)] * 20  # input untouched
    for c in canaries:
        assert sum(("me", c.text) in conv for conv in planted) == c.repeats
    assert plant(convs, canaries, seed=0, insert=lambda conv, text: conv + (("me", text),)) == planted
    with pytest.raises(ValueError, match="repeats 16 but there are 10 items"):
        plant(convs[:10], canaries, seed=0, insert=lambda conv, text: conv)


def test_exposure_is_exact_rank_when_all_candidates_fit():
    model, tok = tiny_llama(seed=1), CharTokenizer()
    canary = Canary("pin", "4 2", 1)
    prefix = tok.encode(canary.prefix)
    score = {s: sum(by_hand_nll(model.eval(), prefix + tok.encode(f" {s // 10} {s % 10}"))[len(prefix) - 1 :])
             for s in range(100)}  # fmt: skip
    rank = 1 + sum(v < score[42] for v in score.values())
    assert exposure(model, tok, canary, prefix, n_candidates=10_000) == pytest.approx(
        math.log2(100) - math.log2(rank), abs=1e-9
    )


def test_canaries_on_a_random_model_are_not_exposed():
    model, tok = tiny_llama(), CharTokenizer()
    values = []
    for c in make_canaries(seed=5, repeats=(1, 1, 1, 1)):
        prefix = tok.encode(c.prefix)
        e = exposure(model, tok, c, prefix, n_candidates=200)
        assert 0 <= e <= math.log2(201)
        assert not leaks(model, tok, prefix, c.secret)
        values.append(e)
    assert sum(values) / len(values) < 4  # a random ranking averages about 1.4 bits for 201 items


def test_a_memorised_canary_is_exposed_and_extracted_an_unseen_one_is_not():
    tok = CharTokenizer()
    seen, unseen = make_canaries(seed=11, repeats=(16, 0))
    filler = ["ok see you at the station", "sure, pizza tonight?", "the train is late again", "call me later!"]
    batch = [tok.encode(t) for t in [seen.text] * 4 + filler]
    width = max(map(len, batch))
    ids = torch.tensor([b + [0] * (width - len(b)) for b in batch])
    labels = torch.tensor([b + [-100] * (width - len(b)) for b in batch])
    model = tiny_llama(seed=2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(40):
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    assert loss.item() < 0.2

    seen_bits = exposure(model, tok, seen, tok.encode(seen.prefix), n_candidates=200)
    unseen_bits = exposure(model, tok, unseen, tok.encode(unseen.prefix), n_candidates=200)
    assert seen_bits == pytest.approx(math.log2(201))  # the planted secret beats all 200 alternatives
    assert unseen_bits < seen_bits - 3
    assert leaks(model, tok, tok.encode(seen.prefix), seen.secret)
    assert not leaks(model, tok, tok.encode(unseen.prefix), unseen.secret)


# --- chart -------------------------------------------------------------------------------------------------------


def results_fixture():
    real = style_profile([["hey", "what's up?"], ["lol ok", "see u at 5"], ["😂"]])
    base = style_profile([["Hello! How are you doing today? I hope all is well."]])
    adapter = style_profile([["hey", "all good?"], ["haha ok 😂"]])
    return {
        "base": {"perplexity": 41.2, "profile_distance": profile_distance(base, real), "distinct_2": 0.62,
                 "classifier_auc": 0.97, "profile": base},
        "adapter": {"perplexity": 12.9, "profile_distance": profile_distance(adapter, real), "distinct_2": 0.71,
                    "classifier_auc": None, "profile": adapter},
        "real": {"profile": real, "distinct_2": 0.74},
    }  # fmt: skip


def test_chart_writes_a_png(tmp_path):
    results = results_fixture()
    json.dumps(results, allow_nan=False)  # the documented shape is plain JSON (lowercase_share is never NaN here)
    path = chart(results, tmp_path / "eval" / "chart.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1700, 900)
