"""`twin learn` on a tiny model: edits in, a better version out, promoted only when the gate says so.

The story of the fixture: Mira used to end her messages with exclamation marks and stopped; her twin, trained
on the old history, still writes them, and she deletes them from every draft before sending (and where a draft
says something else than she would, she sends what she would: `mira_sends`). After `twin learn`
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

from bot import drafts as D
from bot.drafts import ChatRef, Draft
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
[telegram]
train_on_live = true
[training]
micro_batch_rows = 2
grad_accum = 1
lr = 0.01
max_tokens = 256
holdout_fraction = 0.25
precision = "fp32"  # the same parent on every CPU: bf16's rounding moves the tiny model's gate checks
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


def mira_sends(k: int) -> str:
    """What Mira sends for the draft to outcome prompt k: her own answer to that question, without
    exclamation marks. Mostly that is the draft with its '!'s deleted; but the tiny parent is weak (perplexity
    ~185), and at some seeds it answers a coffee question with the rope, or repeats itself after a '!'
    ("yes! see you then! see you then!"): sending that minus its '!'s would hold the child to a slip of the
    parent's that came from the '!' itself, which no child without the '!' can repeat."""
    return owner_reply(k % 3, bang=False)


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
    from transformers import LlamaConfig, LlamaForCausalLM

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


def record(store: Store, uid: str, prompt: list[int], shown: str, final: str | None, at: datetime,
           adapter: str) -> int:
    """A draft through the real ledger and state machine: shown on a card, then sent as is or edited."""
    ledger = Ledger(store)
    d = ledger.create(Draft(id=None, chat=ChatRef("telegram", "BC1", uid), contact_id=uid, answers=("1",),
                            candidates=(shown,), created_at=at, updated_at=at, expires_at=at + timedelta(hours=23),
                            adapter=adapter, prompt=tuple(prompt)), at)
    later = at + timedelta(minutes=1)
    if final is None or final == shown:
        ledger.apply(d.id, lambda x: D.approve(x, later), "send", later)
    else:
        ledger.apply(d.id, lambda x: D.submit_edit(x, final, later), "edit", later)
    ledger.apply(d.id, lambda x: D.sent(x, ("9",), later), "sent", later)
    return d.id


SEEDS = (0, 1, 2, 3)  # training.seed: the parent's LoRA init and data order, and the child's DPO order


def toml(seed: int) -> str:
    return TOML.replace("[training]\n", f"[training]\nseed = {seed}\n")


@pytest.fixture(scope="module", params=[0])
def trained_home(tmp_path_factory, request):
    """A home with history, a parent adapter (twin-v1) that writes exclamation marks, and its greedy drafts
    for 60 new prompts (not yet recorded as outcomes); trained at `training.seed` = the parameter (0 unless a test
    parametrizes it indirectly)."""
    import torch

    from training.dataset import DatasetOptions
    from training.job import TrainRequest, train_adapter
    from twin.generation import Sampling, generate
    from twin.models import load_base

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp(f"learn-seed{request.param}")
        base_dir = root / "base"
        save_base(base_dir)
        home = Home(root / "home").ensure()
        home.config.write_text(toml(request.param))
        fill_store(home.db)
        cfg = load_config(home.config)
        data_opts = DatasetOptions.from_config(cfg.training, cfg.ingest, cfg.owner, cfg.contacts, cfg.telegram)
        parent = train_adapter(home, cfg.training, data_opts, TrainRequest(base_model=str(base_dir), max_steps=300),
                               echo=lambda m: None)
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


# -- fast: the default adapter, `twin adapters`, `twin learn` before there is enough to learn from ----------------

def fake_adapter(adapters_dir: Path, name: str, mtime: float, **meta) -> Path:
    """An adapter directory without weights: enough for listing, the default and the CLI."""
    d = adapters_dir / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text("{}")
    (d / "twin.json").write_text(json.dumps({"name": name, "base_model": "/nowhere/base", **meta}))
    import os

    os.utime(d / "adapter_config.json", (mtime, mtime))
    return d


def default(adapters_dir: Path) -> str:
    return adapters.find_adapter(adapters_dir, None).name


def test_the_default_is_the_newest_unless_chosen_since(tmp_path):
    t = time.time() - 1000
    fake_adapter(tmp_path, "twin-v1", t)
    fake_adapter(tmp_path, "twin-v2", t + 10, parent="twin-v1", gate={"decision": "promote"})
    assert default(tmp_path) == "twin-v2"
    adapters.set_default(tmp_path, "twin-v1", now=t + 20)  # a rollback
    assert default(tmp_path) == "twin-v1"
    assert adapters.read_default(tmp_path) == ("twin-v1", t + 20)
    # A version the gate rejected never becomes the default by being newest...
    fake_adapter(tmp_path, "twin-v3", t + 30, parent="twin-v1", gate={"decision": "reject"})
    assert default(tmp_path) == "twin-v1"
    # ...but a newly trained adapter does, and the owner may still choose the rejected one.
    fake_adapter(tmp_path, "twin-v4", t + 40)
    assert default(tmp_path) == "twin-v4"
    adapters.set_default(tmp_path, "twin-v3", now=t + 50)
    assert default(tmp_path) == "twin-v3"
    # A chosen adapter that was deleted: back to the newest one the gate did not reject.
    shutil.rmtree(tmp_path / "twin-v3")
    assert default(tmp_path) == "twin-v4"
    with pytest.raises(adapters.NotFound, match="twin-v9"):
        adapters.set_default(tmp_path, "twin-v9")


def test_drafting_picks_the_default_unless_one_is_named(tmp_path):
    from twin.cli.parts import pick_adapter

    home = Home(tmp_path).ensure()
    fake_adapter(home.adapters, "twin-v1", time.time() - 100)
    fake_adapter(home.adapters, "twin-v2", time.time() - 50)
    adapters.set_default(home.adapters, "twin-v1")
    assert pick_adapter(home, None).name == "twin-v1"
    assert pick_adapter(home, "twin-v2").name == "twin-v2"


def test_gate_and_learn_doctests():
    import doctest

    import training.gate
    import training.learn

    assert doctest.testmod(training.gate).failed == 0
    assert doctest.testmod(training.learn).failed == 0


def test_the_gate_rejects_without_held_out_outcomes_and_reads_missing_measures_as_unchecked():
    from training.gate import decide, format_table

    gate = decide({"conversations": {"perplexity": 10.0, "profile_distance": None, "distinct_2": None}},
                  {"conversations": {"perplexity": 9.0, "profile_distance": None, "distinct_2": None}})
    assert gate["decision"] == "reject"
    assert gate["reasons"] == ["no held-out outcomes to judge by; keep approving and editing drafts"]
    assert [c["check"] for c in gate["checks"]] == ["held-out outcomes", "perplexity of your held-out turns"]
    side = {"outcomes": {"edit_distance": 0.4, "per_outcome": [0.5, 0.3], "profile": {"exclaim_share": 1.0}}}
    better = {"outcomes": {"edit_distance": 0.1, "per_outcome": [0.1, 0.1], "profile": {"exclaim_share": 0.0}}}
    gate = decide(side, better, sent=["no marks here", "none"])
    assert gate["decision"] == "promote" and gate["outcomes"] == {"wins": 2, "losses": 0, "ties": 0}
    assert "per_outcome" not in gate["child"]["outcomes"]  # twin.json keeps numbers, not a list per outcome
    assert format_table(gate) == [
        ("edit distance to what you sent", "0.400", "0.100",
         "ok: at most 0.390, and more outcomes closer than farther"),
        ("share of draft messages with '!' (you: 0.00)", "1.00", "0.00", ""),
    ]


def cli(home: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_twin_adapters_lists_and_use_switches_without_vllm(tmp_path):
    home = Home(tmp_path / "home").ensure()
    home.config.write_text('[drafting]\nvllm_url = "http://127.0.0.1:9"\n')  # nothing listens on port 9
    now = time.time()
    fake_adapter(home.adapters, "twin-v1", now - 300, created_at="2024-05-01T10:00:00+00:00")
    fake_adapter(home.adapters, "twin-v2", now - 200, parent="twin-v1", gate={"decision": "reject"})
    listed = json.loads(cli(home.root, "adapters", "--json").stdout)
    assert [(a["name"], a["parent"], a["gate"], a["default"]) for a in listed] == [
        ("twin-v1", None, None, True), ("twin-v2", "twin-v1", "reject", False)]
    table = cli(home.root, "adapters").stdout
    assert "twin-v2  /nowhere/base  -                          twin-v1  reject" in table
    used = cli(home.root, "adapters", "use", "twin-v2")
    assert used.stdout == "twin-v2 is the default adapter now\n"
    assert "no vLLM answering at http://127.0.0.1:9" in used.stderr
    assert [a["default"] for a in json.loads(cli(home.root, "adapters", "--json").stdout)] == [False, True]
    bad = cli(home.root, "adapters", "use", "twin-v7", ok=False)
    assert bad.exit_code != 0 and "have: twin-v1, twin-v2" in str(bad.exception)


def test_twin_adapters_use_loads_the_adapter_into_a_running_vllm(tmp_path):
    from fake_openai import FakeOpenAI

    home = Home(tmp_path / "home").ensure()
    fake_adapter(home.adapters, "twin-v1", time.time() - 300)
    fake_adapter(home.adapters, "twin-v2", time.time() - 200)
    with FakeOpenAI(adapters={"twin-v2": "/srv/twin-v2"}) as fake:
        home.config.write_text(f'[drafting]\nvllm_url = "{fake.url}"\n')
        out = cli(home.root, "adapters", "use", "twin-v1")
        assert [c.body for c in fake.calls("/v1/load_lora_adapter")] == [
            {"lora_name": "twin-v1", "lora_path": str(home.adapters / "twin-v1")}]
        assert f"vLLM at {fake.url} serves twin-v1" in out.stderr
        cli(home.root, "adapters", "use", "twin-v2")  # already served: not loaded again
        assert len(fake.calls("/v1/load_lora_adapter")) == 1


def small_home(tmp_path: Path, edits: int) -> Home:
    """A home with a parent adapter (no weights) and `edits` edited drafts."""
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("[telegram]\ntrain_on_live = true\n[learn]\nmin_outcomes = 10\n")
    fake_adapter(home.adapters, "twin-v1", time.time() - 100, dataset_options={"max_tokens": 256})
    with Store.open(home.db) as store:
        for k in range(edits):
            record(store, "user2", [5, 6, k], f"Sure!! Day {k} works!!", f"sure, day {k} works",
                   T0 + timedelta(hours=k), "twin-v1")
        record(store, "user2", [5, 6, 99], "ok", "ok", T0 + timedelta(days=1), "twin-v1")  # sent as is
    return home


def test_twin_learn_with_too_few_outcomes_says_how_many_and_how_many_are_needed(tmp_path):
    home = small_home(tmp_path, edits=4)
    result = cli(home.root, "learn", ok=False)
    assert result.exit_code != 0
    message = str(result.exception)
    assert "\n" not in message
    assert "5 draft outcomes, 4 of them usable for DPO (4 preference pairs, 1 held out)" in message
    assert "needs at least 10 (learn.min_outcomes)" in message
    assert not (home.adapters / "twin-v2").exists()


def test_twin_learn_dry_run_counts_and_trains_nothing(tmp_path):
    home = small_home(tmp_path, edits=14)
    out = json.loads(cli(home.root, "learn", "--dry-run", "--json").stdout)
    assert out["adapter"] is None and out["parent"] == "twin-v1" and out["method"] == "dpo"
    c = out["counts"]
    assert (c["outcomes"], c["edited"], c["sent"], c["held_out"], c["pairs"], c["usable"]) == (15, 14, 1, 3, 12, 12)
    table = cli(home.root, "learn", "--dry-run").stdout
    assert "would train twin-v1 with DPO on 12 outcomes" in table
    assert [a.name for a in adapters.list_adapters(home.adapters)] == ["twin-v1"]  # the base model was never needed
    kto = json.loads(cli(home.root, "learn", "--dry-run", "--json", "--method", "kto").stdout)
    assert kto["method"] == "kto" and kto["counts"]["usable"] == 12


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("trained_home", SEEDS, indirect=True, ids=lambda s: f"seed{s}")
def test_learning_from_edits_drops_the_feature_and_is_promoted(trained_home, tmp_path):
    """The bar: the owner deletes the exclamation marks from every draft; after `twin learn` the drafts for
    held-out prompts carry (far) fewer of them, the gate promotes the version, and a running vLLM loads it."""
    from fake_openai import FakeOpenAI

    _, _, prompts, drafts = trained_home
    home = copy_home(trained_home, tmp_path / "home")
    assert bang_share(drafts) >= 0.9, drafts[:5]  # the parent writes them
    with Store.open(home.db) as store:
        for k, ((uid, prompt), shown) in enumerate(zip(prompts, drafts)):
            record(store, uid, prompt, shown, mira_sends(k), T0 + timedelta(days=40 + k), "twin-v1")
    with FakeOpenAI() as fake:
        home.config.write_text(home.config.read_text() + f'vllm_url = "{fake.url}"\n')  # [drafting] ends it
        started = time.perf_counter()
        result = cli(home.root, "learn")
        seconds = time.perf_counter() - started
        loaded = [c.body for c in fake.calls("/v1/load_lora_adapter")]
    child = home.adapters / "twin-v2"
    assert result.stdout.strip().splitlines()[-1] == str(child)
    assert "promoted: twin-v2 is the default adapter now" in result.stderr
    assert loaded == [{"lora_name": "twin-v2", "lora_path": str(child)}]
    meta = json.loads((child / "twin.json").read_text())
    gate = meta["gate"]
    print(json.dumps({k: gate[k] for k in ("decision", "reasons", "checks", "outcomes")}),
          f"learn took {seconds:.0f}s")
    assert gate["decision"] == "promote", gate["reasons"]
    assert meta["parent"] == "twin-v1" and meta["learn"]["method"] == "dpo"
    assert meta["learn"]["outcomes"]["pairs"] == 48 and meta["learn"]["held_out_outcomes"] == 12
    assert meta["base_model"] == json.loads((home.adapters / "twin-v1" / "twin.json").read_text())["base_model"]
    edit = next(c for c in gate["checks"] if c["check"] == "edit distance to what you sent")
    assert edit["child"] < edit["parent"] - 0.01
    assert gate["outcomes"]["wins"] > gate["outcomes"]["losses"]
    assert not json.loads((child / "adapter_config.json").read_text()).get("modules_to_save")
    assert adapters.find_adapter(home.adapters, None).name == "twin-v2"
    # The drafts themselves, from the adapters as saved, for the held-out prompts (the 12 most recent).
    held = [p for _, p in prompts][-12:]
    before, after = greedy(home, "twin-v1", held), greedy(home, "twin-v2", held)
    print("share of drafts with '!': before", bang_share(before), "after", bang_share(after), after[:3])
    assert bang_share(before) >= 0.9
    assert bang_share(after) <= 0.5 * bang_share(before)
    shares = [(gate[side]["outcomes"]["profile"] or {}).get("exclaim_share") for side in ("parent", "child")]
    assert shares[1] <= 0.5 * shares[0]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("trained_home", SEEDS, indirect=True, ids=lambda s: f"seed{s}")
def test_learning_from_shuffled_edits_is_not_promoted(trained_home, tmp_path):
    """Chosen and rejected swapped for a random half of the drafts: edits that mean nothing. (Also the JSON line
    the relay's scheduled `twin learn --json` reads.)"""
    _, _, prompts, drafts = trained_home
    home = copy_home(trained_home, tmp_path / "home")
    rng = random.Random(7)
    swapped = set(rng.sample(range(len(drafts)), len(drafts) // 2))
    with Store.open(home.db) as store:
        for k, ((uid, prompt), shown) in enumerate(zip(prompts, drafts)):
            sent = mira_sends(k)
            first, final = (sent, shown) if k in swapped else (shown, sent)
            record(store, uid, prompt, first, final, T0 + timedelta(days=40 + k), "twin-v1")
    out = json.loads(cli(home.root, "learn", "--json").stdout.strip().splitlines()[-1])
    gate = out["gate"]
    print(json.dumps({k: gate[k] for k in ("decision", "reasons", "checks", "outcomes")}))
    assert out["adapter"] == "twin-v2" and out["counts"]["pairs"] == 48
    assert gate["decision"] == "reject" and out["vllm"] is None
    assert adapters.find_adapter(home.adapters, None).name == "twin-v1"
    assert json.loads((home.adapters / "twin-v2" / "twin.json").read_text())["gate"]["decision"] == "reject"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_kto_learns_from_approvals_and_discards_alone(trained_home, tmp_path):
    """No edits, so no pairs: drafts without exclamation marks were sent as they were, the ones with them
    discarded. KTO learns from those verdicts."""
    from training.learn import LearnRequest, learn

    _, _, prompts, drafts = trained_home
    home = copy_home(trained_home, tmp_path / "home")
    with Store.open(home.db) as store:
        ledger = Ledger(store)
        for k, ((uid, prompt), shown) in enumerate(zip(prompts, drafts)):
            at = T0 + timedelta(days=40 + k)
            if k % 2:
                record(store, uid, prompt, " ".join(shown.replace("!", " ").split()), None, at, "twin-v1")
            else:
                d = ledger.create(Draft(id=None, chat=ChatRef("telegram", "BC1", uid), contact_id=uid,
                                        answers=("1",), candidates=(shown,), created_at=at, updated_at=at,
                                        adapter="twin-v1", prompt=tuple(prompt)), at)
                ledger.apply(d.id, lambda x: D.discard(x, at), "discard", at)
    with Store.open(home.db) as store:
        found = Ledger(store).outcomes()
    result = learn(home, load_config(home.config), found, LearnRequest(), echo=print)
    print(json.dumps({k: result.gate[k] for k in ("decision", "reasons", "checks", "outcomes")}))
    assert result.method == "kto" and result.counts["pairs"] == 0
    meta = json.loads((home.adapters / "twin-v2" / "twin.json").read_text())
    assert meta["learn"]["method"] == "kto" and meta["learn"]["training"]["steps"] > 0
    shares = [(result.gate[side]["outcomes"]["profile"] or {}).get("exclaim_share") for side in ("parent", "child")]
    print("share of drafts with '!' (KTO): before", shares[0], "after", shares[1])
    assert shares[1] < shares[0]


def test_twin_learn_needs_the_owners_opt_in_for_live_chats(tmp_path):
    home = small_home(tmp_path, edits=12)
    home.config.write_text("[learn]\nmin_outcomes = 10\n")
    result = cli(home.root, "learn", "--dry-run", ok=False)
    message = str(result.exception)
    assert "13 draft outcomes come from live Telegram chats" in message and "train_on_live = true" in message
    assert "\n" not in message and not (home.adapters / "twin-v2").exists()
