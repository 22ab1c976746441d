"""`twin eval`'s memory block (training/memory_eval.py): fact words, their tokens, perplexity with and without."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import tiny_tokenizer
from training.dataset import DatasetOptions, build
from training.ingest import resessionize
from training.memory_eval import compare, fact_mask, fact_words
from training.metrics import chart
from twin.chat import Chat, Message, utc
from twin.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOK = tiny_tokenizer()
T0, DAY = 1_710_000_000, 86_400
OWNER, BOB = ("user1", "Mira"), ("user2", "Bob")


def session(start, *lines):
    return [Message("telegram", "2", f"{start}-{i}", who[0], who[1], utc(start + 60 * i), text)
            for i, (who, text) in enumerate(lines)]


def make_db(path):
    messages = [
        *session(T0, (BOB, "my rope is frayed again"), (OWNER, "get the orange edelrid one")),
        *session(T0 + DAY, (BOB, "morning"), (OWNER, "morning! coffee later?")),
        *session(T0 + 2 * DAY, (BOB, "which rope should I buy?"), (OWNER, "the edelrid // orange")),
    ]
    store = Store.open(path)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Bob"))
        store.insert_messages(messages)
        store.upsert_names("telegram", {(m.sender_id, m.sender_name): (T0, T0) for m in messages})
        store.set_owner("telegram", *OWNER)
        resessionize(store, store.chat_keys(), 3600)
    return store


def test_fact_words_are_rare_earlier_words_of_the_owners_turns_and_their_tokens(tmp_path):
    store = make_db(tmp_path / "twin.db")
    ds = build(store, TOK, DatasetOptions(holdout_fraction=0.5, memory_tokens=200))
    [last] = [s for s in ds.held_out if s.start == utc(T0 + 2 * DAY)]
    assert [r.text for r in last.conversation.persona.memory] == ["my rope is frayed again", "get the orange edelrid one"]
    facts = fact_words(store, last, rare=20, cache={})
    # Said before and rare in this six-message store ("the" too; a real history has it in thousands of messages).
    assert facts == {"edelrid", "orange", "the"}
    mask = fact_mask(TOK, last.input_ids, last.loss_mask, {"edelrid"})
    picked = [i for i, m in zip(last.input_ids, mask) if m]
    assert TOK.decode(picked).strip() == "edelrid"
    assert all(last.loss_mask[i] for i, m in enumerate(mask) if m)  # facts only inside the owner's turns
    store.close()


def test_compare_reports_both_perplexities_with_and_without_memory_and_draws_a_panel(tmp_path):
    make_db(tmp_path / "twin.db").close()
    with Store.open(tmp_path / "twin.db") as store:
        ds = build(store, TOK, DatasetOptions(holdout_fraction=0.5, memory_tokens=200))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512))
    out = compare(model, TOK, list(ds.held_out), tmp_path / "twin.db")
    assert out["fact_words"] == 3 and out["fact_tokens"] >= 3
    assert out["samples_with_memory"] == 1
    for key in ("perplexity", "fact_perplexity"):
        assert math.isfinite(out[key]["with"]) and math.isfinite(out[key]["without"])
        assert out[key]["ratio"] == pytest.approx(out[key]["with"] / out[key]["without"])
    png = chart({"base": {}, "adapter": {}, "real": {}, "memory": out}, tmp_path / "eval.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_fact_perplexity_from_one_forward_equals_a_forward_with_the_fact_mask(tmp_path):
    """compare() takes the fact words' NLLs out of the whole turns' forward (and reuses eval's own), so it must
    give what a separate forward over the narrowed masks gives."""
    from training.memory_eval import within
    from training.metrics import token_nlls

    make_db(tmp_path / "twin.db").close()
    with Store.open(tmp_path / "twin.db") as store:
        ds = build(store, TOK, DatasetOptions(holdout_fraction=0.5, memory_tokens=200))
        held_out = list(ds.held_out)
        facts = [fact_words(store, s, rare=20, cache={}) for s in held_out]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512))
    narrowed = [(s.input_ids, fact_mask(TOK, s.input_ids, s.loss_mask, f)) for s, f in zip(held_out, facts) if f]
    alone = token_nlls(model, narrowed)
    whole = token_nlls(model, [(s.input_ids, s.loss_mask) for s in held_out])
    picked = [whole[i][within(s.loss_mask, fact_mask(TOK, s.input_ids, s.loss_mask, f))]
              for i, (s, f) in enumerate(zip(held_out, facts)) if f]
    assert [len(a) for a in alone] == [len(p) for p in picked] and sum(map(len, alone)) >= 3
    for a, p in zip(alone, picked):
        assert a == pytest.approx(p, abs=1e-5)
    fresh = compare(model, TOK, held_out, tmp_path / "twin.db")
    reused = compare(model, TOK, held_out, tmp_path / "twin.db", with_memory=whole)
    assert fresh == reused
    want = math.exp(sum(float(a.sum()) for a in alone) / sum(map(len, alone)))
    assert fresh["fact_perplexity"]["with"] == pytest.approx(want, rel=1e-6)
