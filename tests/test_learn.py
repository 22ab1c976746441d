"""`twin learn` on a tiny model: edits in, a better version out, promoted only when the gate says so.

The story of the fixture: Mira used to end her messages with exclamation marks and stopped; her twin, trained
on the old history, still writes them, and she deletes them from every draft before sending. After `twin learn`
the twin's drafts for prompts it never trained on carry far fewer exclamation marks and the gate promotes the
version; the same run on shuffled edits (chosen and rejected swapped at random) is not promoted.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers import LlamaConfig, LlamaForCausalLM

from bot import drafts as D
from bot.drafts import ChatRef, Draft, utc
from bot.ledger import Ledger
from helpers import tiny_tokenizer
from twin import adapters
from twin.chat import Chat, Message
from twin.cli import main
from twin.config import load_config
from twin.paths import Home
from twin.prompts import Persona, Turn, prompt_ids
from twin.store import Store

OWNER = "user1"
CONTACTS = {"user2": "Tomas Berg", "user3": "Ingrid Solberg"}
SESSIONS = 12  # per chat; the last three are held out (training.holdout_fraction = 0.25)
QUIET_FROM = 9  # from this session on, Mira writes without exclamation marks
T0 = datetime(2024, 3, 1, 18, tzinfo=timezone.utc)
TOML = """\
[training]
micro_batch_rows = 2
grad_accum = 1
lr = 0.01
max_tokens = 256
holdout_fraction = 0.25
[learn]
min_outcomes = 10
lr = 0.002
beta = 0.1
epochs = 3
batch_size = 8
micro_batch = 8
holdout_fraction = 0.2
[drafting]
max_new_tokens = 24
"""


QUESTIONS = (("Are you free on day {}?", "yes! see you then!"), ("Coffee on day {}?", "sure! coffee sounds good!"),
             ("Climbing on day {}?", "ok! i will bring the rope!"))


def owner_reply(kind: int, bang: bool) -> str:
    text = QUESTIONS[kind][1]
    return text if bang else text.replace("!", "")


def fill_store(db: Path) -> None:
    """Two chats, SESSIONS sessions each, a day apart: the contact asks, Mira answers."""
    with Store.open(db) as store, store.transaction():
        msgs = []
        for uid, name in CONTACTS.items():
            store.upsert_chat(Chat("telegram", uid, "personal", name))
            for s in range(SESSIONS):
                t = T0 + timedelta(days=s)
                msgs += [
                    Message("telegram", uid, f"{s}a", uid, name, t, QUESTIONS[s % 3][0].format(s)),
                    Message("telegram", uid, f"{s}b", OWNER, "Mira", t + timedelta(minutes=1),
                            owner_reply(s % 3, s < QUIET_FROM)),
                ]
        store.insert_messages(msgs)
        t0 = int(T0.timestamp())
        store.upsert_names("telegram", {(OWNER, "Mira"): (t0, t0), **{(u, n): (t0, t0) for u, n in CONTACTS.items()}})
        store.set_owner("telegram", OWNER)


def save_base(path: Path) -> None:
    tok = tiny_tokenizer()
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=0)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(path)


def outcome_prompts(tok, n: int) -> list[tuple[str, list[int]]]:
    """(contact id, drafting prompt) for n new questions, as the relay would draft them."""
    out = []
    for k in range(n):
        uid = list(CONTACTS)[k % 2]
        persona = Persona("Mira", CONTACTS[uid], "telegram", (T0 + timedelta(days=40 + k)).date())
        question = QUESTIONS[k % 3][0].format(100 + k)
        out.append((uid, prompt_ids(persona, [Turn("contact", (question,))], tok)))
    return out


def record(store: Store, uid: str, prompt: list[int], shown: str, final: str, at: datetime, adapter: str) -> int:
    """A draft through the real ledger and state machine: shown on a card, then sent as is or edited."""
    ledger = Ledger(store)
    d = ledger.create(Draft(id=None, chat=ChatRef("telegram", "BC1", uid), contact_id=uid, answers=("1",),
                            candidates=(shown,), created_at=at, updated_at=at, expires_at=at + timedelta(hours=23),
                            adapter=adapter, prompt=tuple(prompt)), at)
    later = at + timedelta(minutes=1)
    if final == shown:
        ledger.apply(d.id, lambda x: D.approve(x, later), "send", later)
    else:
        ledger.apply(d.id, lambda x: D.submit_edit(x, final, later), "edit", later)
    ledger.apply(d.id, lambda x: D.sent(x, ("9",), later), "sent", later)
    return d.id


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    """A home with history, a parent adapter (twin-v1) that writes exclamation marks, and its greedy drafts
    for 60 new prompts (not yet recorded as outcomes)."""
    import torch

    from training.job import TrainRequest, train_adapter
    from twin.generation import Sampling, generate
    from twin.models import load_base

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("learn")
        base_dir = root / "base"
        save_base(base_dir)
        home = Home(root / "home").ensure()
        home.config.write_text(TOML)
        fill_store(home.db)
        cfg = load_config(home.config)
        parent = train_adapter(home, cfg, TrainRequest(base_model=str(base_dir), max_steps=300), echo=lambda m: None)
        base, tok = load_base(str(base_dir), home.models)
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(parent))
        prompts = outcome_prompts(tok, 60)
        drafts = [c[0] for c in generate(model, tok, [p for _, p in prompts], Sampling(temperature=0,
                                                                                        max_new_tokens=24))]
        yield root, home, prompts, drafts
    finally:
        torch.set_num_threads(before)


def copy_home(trained_home, dest: Path) -> Home:
    root, home, _, _ = trained_home
    shutil.copytree(home.root, dest)
    return Home(dest)


def bang_share(texts) -> float:
    return sum("!" in t for t in texts) / len(texts)


def greedy(home: Home, adapter: str, prompts) -> list[str]:
    from peft import PeftModel

    from twin.generation import Sampling, generate
    from twin.models import load_base

    found = adapters.find_adapter(home.adapters, adapter)
    base, tok = load_base(found.meta["base_model"], home.models)
    model = PeftModel.from_pretrained(base, str(found.path))
    return [c[0] for c in generate(model, tok, prompts, Sampling(temperature=0, max_new_tokens=24))]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_learning_from_edits_drops_the_feature_and_is_promoted(trained_home, tmp_path):
    from training.learn import LearnRequest, learn

    _, _, prompts, drafts = trained_home
    home = copy_home(trained_home, tmp_path / "home")
    assert bang_share(drafts) >= 0.9, drafts[:5]  # the parent writes them
    with Store.open(home.db) as store:
        for k, ((uid, prompt), shown) in enumerate(zip(prompts, drafts)):
            record(store, uid, prompt, shown, " ".join(shown.replace("!", " ").split()),
                   T0 + timedelta(days=40 + k), "twin-v1")
    started = time.perf_counter()
    result = learn(home, load_config(home.config), LearnRequest(), echo=print)
    seconds = time.perf_counter() - started
    gate = result.gate
    print(json.dumps({k: gate[k] for k in ("decision", "reasons", "checks", "outcomes")}),
          f"learn took {seconds:.0f}s")
    held = [list(o) for o in [p for _, p in prompts][-12:]]
    before, after = greedy(home, "twin-v1", held), greedy(home, "twin-v2", held)
    print("bang share before", bang_share(before), "after", bang_share(after), after[:4])
    assert bang_share(after) <= 0.5 * bang_share(before)
    assert gate["decision"] == "promote", gate["reasons"]
    assert adapters.find_adapter(home.adapters, None).name == "twin-v2"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_learning_from_shuffled_edits_is_not_promoted(trained_home, tmp_path):
    """Chosen and rejected swapped for a random half of the drafts: edits that mean nothing."""
    from training.learn import LearnRequest, learn

    _, _, prompts, drafts = trained_home
    home = copy_home(trained_home, tmp_path / "home")
    rng = random.Random(7)
    swapped = set(rng.sample(range(len(drafts)), len(drafts) // 2))
    with Store.open(home.db) as store:
        for k, ((uid, prompt), shown) in enumerate(zip(prompts, drafts)):
            plain = " ".join(shown.replace("!", " ").split())
            first, final = (plain, shown) if k in swapped else (shown, plain)
            record(store, uid, prompt, first, final, T0 + timedelta(days=40 + k), "twin-v1")
    result = learn(home, load_config(home.config), LearnRequest(), echo=print)
    gate = result.gate
    print(json.dumps({k: gate[k] for k in ("decision", "reasons", "checks", "outcomes")}))
    assert result.counts["pairs"] == 48
    assert gate["decision"] == "reject"
    assert adapters.find_adapter(home.adapters, None).name == "twin-v1"
    assert json.loads((home.adapters / "twin-v2" / "twin.json").read_text())["gate"]["decision"] == "reject"
