"""`twin train` and `twin eval` end to end on a tiny model saved as a local base: adapter out, twin.json true."""

import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import tiny_tokenizer
from twin.chat import Chat, Message
from twin.cli import main
from twin.decoding import native_bf16
from twin.store import Store

OWNER = "user1"
CONTACTS = {"user2": "Tomas Berg", "user3": "Ingrid Solberg"}


def fill_store(db):
    """Two chats, 12 sessions each, a day apart: the contact asks, the owner answers in lowercase bursts."""
    with Store.open(db) as store, store.transaction():
        t0 = int(datetime(2024, 3, 1, 18, tzinfo=timezone.utc).timestamp())
        msgs = []
        for uid, name in CONTACTS.items():
            store.upsert_chat(Chat("telegram", uid, "personal", name))
            for s in range(12):
                t = t0 + s * 86400
                msgs += [
                    Message("telegram", uid, f"{s}a", uid, name, datetime.fromtimestamp(t, timezone.utc),
                            f"Are you free on day {s}?"),
                    Message("telegram", uid, f"{s}b", OWNER, "Mira", datetime.fromtimestamp(t + 60, timezone.utc),
                            "ja ja no stress"),
                    Message("telegram", uid, f"{s}c", OWNER, "Mira", datetime.fromtimestamp(t + 70, timezone.utc),
                            f"day {s} works"),
                ]
        store.insert_messages(msgs)
        store.upsert_names("telegram", {(OWNER, "Mira"): (t0, t0), **{(u, n): (t0, t0) for u, n in CONTACTS.items()}})
        store.set_owner("telegram", OWNER)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    tok = tiny_tokenizer()
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(path)
    return path


def twin(home, *args):
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_train_then_eval(tmp_path, base_dir):
    home = tmp_path / "home"
    home.mkdir()
    (home / "twin.toml").write_text('[training]\nmicro_batch_rows = 2\ngrad_accum = 1\nlr = 0.005\nmax_tokens = 256\n'
                                    '[contacts."Tomas Berg"]\nnotes = "climbing partner"\n')
    fill_store(home / "twin.db")
    out = twin(home, "train", "--base-model", str(base_dir), "--max-steps", "4").stdout
    adapter = home / "adapters" / "twin-v1"
    assert out.strip().splitlines()[-1] == str(adapter)
    meta = json.loads((adapter / "twin.json").read_text())
    assert meta["name"] == "twin-v1" and meta["base_model"] == str(base_dir)
    assert meta["prompt_format"] == {"name": "twin-chat", "version": 2}  # trained with memory ([memory] is on)
    assert meta["dataset_options"]["memory_tokens"] == 224
    assert meta["data"]["train_samples"] + meta["data"]["held_out_samples"] == 24
    assert meta["data"]["held_out_samples"] == 2  # the most recent session of each chat
    assert meta["hyperparameters"]["r"] == 16 and meta["training"]["steps"] == 4
    ran = "bf16 mixed" if native_bf16() else "fp32"  # "auto": mixed where the CPU multiplies bf16 natively
    assert meta["hyperparameters"]["precision"] == "auto" and meta["training"]["precision"] == ran
    assert meta["dataset_options"]["notes"] == ["Tomas Berg"]  # which contacts had notes; not the notes
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32 and not config.get("modules_to_save")
    assert not list((home / "adapters").glob(".*partial"))

    # A retrained adapter gets the next name.
    twin(home, "train", "--base-model", str(base_dir), "--max-steps", "1")
    assert (home / "adapters" / "twin-v2" / "adapter_config.json").exists()

    res = json.loads(twin(home, "eval", "twin-v1", "--json", "--limit", "2").stdout)
    assert res["name"] == "twin-v1"
    assert res["held_out"] == {"samples": 2, "replies": 2, "data_changed_since_training": False}
    for side in ("base", "adapter"):
        assert res[side]["perplexity"] > 1 and set(res[side]["profile"]) >= {"lowercase_share", "chars_mean"}
    assert res["ratios"]["perplexity"] == pytest.approx(res["adapter"]["perplexity"] / res["base"]["perplexity"])
    assert json.loads((adapter / "twin.json").read_text())["eval"]["adapter"]["perplexity"] == res["adapter"]["perplexity"]
    assert (adapter / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The owner of this history answered every burst: no no-reply classifier to learn, none saved, none reported
    # (twin train warns; tests/test_reply_model.py covers the classifier).
    assert res["reply_model"] is None and not (adapter / "reply_model.json").exists()
    m = res["memory"]
    assert m["samples"] == 2 and set(m) >= {"perplexity", "fact_perplexity", "fact_words"}
    assert m["perplexity"]["with"] > 1 and m["perplexity"]["without"] > 1
    assert res["base_from"] is None and res["base_key"]


def test_a_second_eval_on_the_same_data_reuses_the_base_side(tmp_path, base_dir, monkeypatch):
    """The base side depends on the base, the held-out data and the options, not on the adapter: twin-v2's eval
    takes it from twin-v1's, and computes it again with other options or with --fresh."""
    from training import heldout

    home = tmp_path / "home"
    home.mkdir()
    (home / "twin.toml").write_text('[training]\nmicro_batch_rows = 2\ngrad_accum = 1\nmax_tokens = 256\n')
    fill_store(home / "twin.db")
    for steps in ("2", "1"):
        twin(home, "train", "--base-model", str(base_dir), "--max-steps", steps)
    passes = []
    real = heldout.nlls_and_replies
    monkeypatch.setattr(heldout, "nlls_and_replies", lambda *a, **k: passes.append(1) or real(*a, **k))
    first = json.loads(twin(home, "eval", "twin-v1", "--json", "--limit", "2").stdout)
    assert first["base_from"] is None and len(passes) == 2  # base and adapter
    second = json.loads(twin(home, "eval", "twin-v2", "--json", "--limit", "2").stdout)
    assert second["base_from"] == "twin-v1" and len(passes) == 3  # the adapter's side only
    assert second["base"] == first["base"] and second["base_key"] == first["base_key"]
    assert second["adapter"]["perplexity"] != first["adapter"]["perplexity"]
    assert "base column reused from twin-v1" in twin(home, "eval", "twin-v2", "--limit", "2").stdout
    fresh = json.loads(twin(home, "eval", "twin-v2", "--json", "--limit", "2", "--fresh").stdout)
    assert fresh["base_from"] is None and fresh["base"] == first["base"]  # computed again: the same numbers
    other = json.loads(twin(home, "eval", "twin-v2", "--json", "--limit", "1").stdout)
    assert other["base_from"] is None and other["base_key"] != first["base_key"]  # other options


def test_memory_off_trains_format_v1_and_eval_has_no_memory_block(tmp_path, base_dir):
    home = tmp_path / "home"
    home.mkdir()
    (home / "twin.toml").write_text('[training]\nmax_tokens = 256\n[memory]\nenabled = false\n')
    fill_store(home / "twin.db")
    twin(home, "train", "--base-model", str(base_dir), "--max-steps", "1")
    meta = json.loads((home / "adapters" / "twin-v1" / "twin.json").read_text())
    assert meta["prompt_format"] == {"name": "twin-chat", "version": 1} and meta["dataset_options"]["memory_tokens"] == 0
    res = json.loads(twin(home, "eval", "twin-v1", "--json", "--limit", "1").stdout)
    assert res["memory"] is None and res["held_out"]["data_changed_since_training"] is False


def test_train_without_data_says_ingest(tmp_path, base_dir):
    home = tmp_path / "home"
    Store.open(home / "twin.db").close()
    result = CliRunner().invoke(main, ["--home", str(home), "train", "--base-model", str(base_dir)])
    assert result.exit_code != 0 and "twin ingest" in str(result.exception)


def test_canaries_are_planted_recorded_and_reported(tmp_path, base_dir):
    home = tmp_path / "home"
    home.mkdir()
    (home / "twin.toml").write_text('[training]\ngrad_accum = 1\nmax_tokens = 256\n')
    fill_store(home / "twin.db")
    twin(home, "train", "--base-model", str(base_dir), "--max-steps", "1", "--canaries")
    meta = json.loads((home / "adapters" / "twin-v1" / "twin.json").read_text())
    assert [c["repeats"] for c in meta["canaries"]] == [1, 4, 16]
    assert all(c["secret"] and c["prefix"] for c in meta["canaries"])
    res = json.loads(twin(home, "eval", "--json", "--limit", "2").stdout)
    for side in ("base", "adapter"):
        assert [c["repeats"] for c in res[side]["canaries"]] == [1, 4, 16]
        assert all(c["exposure"] >= 0 and isinstance(c["leaked"], bool) for c in res[side]["canaries"])


def test_chat_keeps_its_own_conversation_and_stores_nothing(tmp_path, base_dir, monkeypatch):
    """`twin chat` drafts for each line typed as the contact; the chosen replies become context, unstored."""
    import twin.cli.parts

    home = tmp_path / "home"
    home.mkdir()
    fill_store(home / "twin.db")
    seen_prompts = []

    class Scripted:
        name = "fake"
        tokenizer = tiny_tokenizer()

        def complete(self, prompt_ids, *, n, **_):
            seen_prompts.append(self.tokenizer.decode(prompt_ids))
            words = ["sure thing", "no way", "maybe later", "ask tomas", "ja ja", "lol ok"]
            return [f"{words[i % len(words)]} {len(seen_prompts)}" for i in range(n)]

        def close(self):
            pass

    monkeypatch.setattr(twin.cli.parts, "open_backend", lambda kind, settings: Scripted())
    before = Store.open(home / "twin.db").stats()
    result = CliRunner().invoke(main, ["--home", str(home), "chat", "--contact", "Tomas Berg", "--n", "2"],
                                input="Free on Sunday?\n2\nGreat, 10 am?\nmy own words\n")
    assert result.exit_code == 0, result.output
    assert "[1] sure thing 1" in result.output and "[2] no way 1" in result.output
    # The second prompt carries the first exchange: the contact's line and the candidate picked.
    assert "Free on Sunday?" in seen_prompts[1] and "no way 1" in seen_prompts[1]
    assert "Great, 10 am?" in seen_prompts[1]
    assert Store.open(home / "twin.db").stats() == before
