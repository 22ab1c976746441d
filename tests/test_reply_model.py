"""The no-reply classifier (twin/replies.py, training/reply_model.py) and the relay's use of it (bot/skips.py):
fitted on a synthetic owner's history (tests/reply_history.py), saved without pickle, fast, and in `twin run`
with the real python-telegram-bot Application against the fake Bot API: "ok 👍" after a plan gets no card,
"are you free thursday?" gets one, /draft forces one, "No reply needed" is stored as an outcome.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import numpy as np
import pytest
from click.testing import CliRunner

import telegram_updates as U
from bot import jobs
from bot.drafts import State
from bot.skips import Skips
from helpers import QuickBackend
from relay_harness import OWNER, TOMAS, Clock, Harness, is_card
from reply_history import fill_store
from training.reply_model import labelled, train_reply_model
from twin.chat import utc
from twin.cli import main
from twin.config import DraftingConfig
from twin.paths import Home
from twin.replies import JSON_NAME, NPZ_NAME, Burst, ReplyModel, ReplyModelError, find_model
from twin.store import Store, StoredMessage

SOFIE = 5550100103
JONAS = 5550100104
PEOPLE = {TOMAS: "Tomas", SOFIE: "Sofie", JONAS: "Jonas"}


@pytest.fixture(scope="module")
def model():
    with Store.open(None) as s:
        fill_store(s, PEOPLE)
        return train_reply_model(s, 0.1, 3600, False)


def burst(text: str, kind: str = "text", hour: int = 18) -> Burst:
    return Burst((StoredMessage("9", f"user{TOMAS}", "Tomas", False, utc(hour * 3600), text, kind, False, None),))


def test_held_out_precision_and_recall_meet_the_targets(model):
    held = model.metrics["held_out"]
    assert held["bursts"] >= 100 and held["no_reply_bursts"] >= 20
    assert held["precision"] >= 0.9 and held["recall"] >= 0.3
    assert 0 < model.threshold < 1 and model.metrics["validation"]["precision"] >= 0.9
    assert 0.1 < held["saved_share"] < 0.5


def test_acknowledgements_are_judged_no_reply_and_questions_not(model):
    for text, kind in (("ok 👍", "text"), ("thanks!", "text"), ("👍", "sticker")):
        assert model.no_reply_due(burst(text, kind), "telegram"), text
    for text in ("are you free thursday?", "could you lend me your rope tonight", "where did we park last time?"):
        assert not model.no_reply_due(burst(text), "telegram"), text


def test_splits_are_by_conversation_and_the_held_out_ones_are_the_latest():
    with Store.open(None) as s:
        fill_store(s, PEOPLE)
        splits = labelled(s, 0.1)
    for chat in {b.chat for b in splits.held_out}:
        fit = [b.session for b in splits.fit if b.chat == chat]
        val = [b.session for b in splits.validation if b.chat == chat]
        held = [b.session for b in splits.held_out if b.chat == chat]
        assert max(fit) < min(val) and max(val) < min(held)
        assert len(set(held)) == 15  # 10% of 150 conversations


def test_saved_without_pickle_and_loaded_to_the_same_predictions(model, tmp_path):
    tmp_path = tmp_path / "adapters" / "twin-v1"
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [JSON_NAME, NPZ_NAME]
    with np.load(tmp_path / NPZ_NAME, allow_pickle=False) as z:
        assert {k: z[k].dtype.kind for k in z.files} == {"slots": "i", "weights": "f", "dense": "f"}
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    assert meta["threshold"] == model.threshold and meta["format"] == "twin-reply-model"
    loaded = ReplyModel.load(tmp_path)
    for text in ("ok 👍", "are you free thursday?", "booked for 8"):
        assert loaded.probability(burst(text), "telegram") == pytest.approx(model.probability(burst(text), "telegram"))
    assert find_model(tmp_path.parent, None) == tmp_path


def test_a_damaged_or_foreign_model_is_one_clear_error(model, tmp_path):
    with pytest.raises(ReplyModelError, match=f"{NPZ_NAME}: no reply model there; retrain it with `twin train --only"):
        model.save(tmp_path) or (tmp_path / NPZ_NAME).unlink() or ReplyModel.load(tmp_path)
    model.save(tmp_path)
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    (tmp_path / JSON_NAME).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ReplyModelError, match=r"reply_model.json: 'version' is 99, this twin reads 1"):
        ReplyModel.load(tmp_path)


def test_prediction_takes_well_under_5_ms_per_burst(model):
    texts = ["ok 👍", "are you free thursday?", "great, see you sunday at 7\nand bring the rope please!"] * 100
    bursts = [burst(t) for t in texts]
    start = time.perf_counter()
    for b in bursts:
        model.probability(b, "telegram")
    per_burst_ms = (time.perf_counter() - start) * 1000 / len(bursts)
    assert per_burst_ms < 5, per_burst_ms
    assert model.metrics["held_out"]["ms_per_burst"] < 5


def test_twin_train_only_reply_model_and_the_eval_block(tmp_path):
    home = Home(tmp_path / "home").ensure()
    with Store.open(home.db) as s:
        fill_store(s, PEOPLE)
    result = CliRunner().invoke(main, ["--home", str(home.root), "train", "--only", "reply-model"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(home.adapters / "base")
    assert "reply model: " in result.stderr and "precision" in result.stderr
    from twin.cli import Context
    from twin.cli.model import reply_model_eval

    block = reply_model_eval(Context(str(home.root)), None)
    assert set(block) >= {"precision", "recall", "threshold", "saved_share", "bursts"}
    assert block["precision"] >= 0.9 and block["recall"] >= 0.3 and block["bursts"] >= 100


def test_an_empty_history_says_what_to_do(tmp_path):
    home = Home(tmp_path / "home").ensure()
    with Store.open(home.db):
        pass
    result = CliRunner().invoke(main, ["--home", str(home.root), "train", "--only", "reply-model"])
    assert result.exit_code != 0
    assert str(result.exception) == (f"{home.db}: the history has no contact messages: nothing to learn when no "
                                     "reply is due from; import more chats (twin ingest EXPORT)")


# -- in the relay -------------------------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, model):
    home = Home(tmp_path / "home").ensure()
    with Store.open(home.db) as s:
        fill_store(s, PEOPLE)
    model.save(home.adapters / "base")
    return home


def cards(h: Harness) -> list:
    return [c for c in h.calls() if is_card(c)]


async def test_ok_after_a_plan_gets_no_card_a_question_does_and_draft_forces_one(fake, home):
    async with Harness(fake, home, QuickBackend(), Clock()) as h:
        await h.connect()
        h.fake.clear()
        h.contact("are you free thursday?")
        asked = await h.card()
        h.owner_writes("yes! 8?")
        h.contact("perfect, 8 at the gym")
        await h.wait(is_card, 2)
        h.owner_writes("see you there")
        await h.quiet(0.3)
        ok = h.contact("ok 👍")
        await h.quiet(0.8)
        assert len(cards(h)) == 2  # the question and the plan; nothing for "ok 👍"
        (skip,) = Skips(h.relay.store).since()
        assert skip.answers == (str(ok),) and skip.fate == "open" and skip.probability >= h.relay.replies.model.threshold
        assert asked.state == State.PENDING

        h.push(U.command(OWNER, "/status", 1))
        status = await h.wait(lambda c: c.method == "sendMessage" and "No reply due" in c.params.get("text", ""))
        assert "No reply due (no card): 1 today" in status[0].params["text"]

        h.push(U.command(OWNER, f"/draft telegram:{TOMAS}", 2))
        forced = (await h.wait(is_card, 3))[-1].params
        assert "ok 👍" in forced["text"]
        buttons = [b["callback_data"] for row in forced["reply_markup"]["inline_keyboard"] for b in row]
        d = h.ledger().pending()[-1]
        assert d.answers[-1] == str(ok) and buttons[-1] == f"d:{d.id}:noreply:0"
        assert all(len(b.encode()) <= 64 for b in buttons)
        assert Skips(h.relay.store).since()[0].fate == "forced"

        await h.quiet(0.2)
        h.tap(d.id, "noreply")
        await h.wait(lambda c: c.method == "editMessageText" and "No reply needed" in c.params["text"])
        assert h.ledger().get(d.id).state == State.NO_REPLY
        assert [o.kind for o in h.ledger().outcomes() if o.draft_id == d.id] == ["no_reply"]
        assert ("no_reply", "no_reply") == h.ledger().events(d.id)[-1][1:4:2]
        assert h.business_sends() == []


async def test_a_skip_the_owner_answers_by_hand_is_a_miss_in_the_digest(fake, home):
    async with Harness(fake, home, QuickBackend(), Clock()) as h:
        await h.connect()
        h.fake.clear()
        h.contact("thanks!")
        await h.quiet(0.8)
        assert cards(h) == []
        h.owner_writes("anytime 🙂")
        await h.quiet(0.3)
        (skip,) = Skips(h.relay.store).since()
        assert skip.fate == "missed" and skip.settled_at is not None
        text = jobs.digest(h.relay, h.clock() - timedelta(days=1))
        assert text.startswith("Today: no drafts. 1 message looked like it needed no answer (no card): Tomas ")
        assert "You answered 1 of them by hand anyway." in text


async def test_skip_no_reply_false_gives_every_burst_a_card(fake, home):
    h = Harness(fake, home, QuickBackend(), Clock())
    h.cfg = h.cfg.model_copy(update={"drafting": DraftingConfig(n=2, backend="local", skip_no_reply=False)})
    async with h:
        await h.connect()
        h.fake.clear()
        h.contact("ok 👍")
        await h.card()
        assert h.relay.replies is None and Skips(h.relay.store).since() == []


def test_report_counts_skips_and_misses(tmp_path):
    from twin.report import report

    with Store.open(None) as s:
        r = report(s, [], skips=["open", "missed", "moved_on", "forced"])
    assert r.skipped == {"bursts": 4, "share": 1.0, "missed": 1, "miss_rate": 0.25, "forced": 1}
    assert r.to_json()["skipped"]["missed"] == 1


class SkipEverything:
    """A gate that holds back every burst (what a model sure that nothing needs an answer would do)."""

    def judge(self, ref, messages):
        return 0.99


async def test_the_discord_twin_always_answers_and_its_cards_have_no_no_reply_button(tmp_path):
    """The Discord twin drafts through its own path (bot/discord_relay.py: the drafter, then Relay.approve for
    the owner's approval), which the reply model never sees; its card offers no "No reply needed"."""
    from bot.drafts import ChatRef
    from bot.telegram_relay import keyboard
    from serving.drafting import Candidate, Candidates
    from test_relay_faults import World
    from twin.chat import Chat

    world = World(tmp_path)
    try:
        world.relay.replies = SkipEverything()
        await world.contact("2002", "are you free thursday?")
        assert await world.draft("2002") is None and len(world.relay.skips.since()) == 1  # Telegram: held back
        world.store.upsert_chat(Chat("discord", "77", "bot"))
        first = Candidates([Candidate("hi there", ["hi there"])], "base", 1.0, 10)
        waiting = asyncio.create_task(world.relay.approve(ChatRef("discord", None, "77"), "310", ("5",), first))
        await asyncio.sleep(0.05)
        (d,) = world.relay.ledger.pending()
        assert d.origin == "discord" and [c.draft_id for c in world.screen.cards.values()] == [d.id]
        labels = [b.text for row in keyboard(d).inline_keyboard for b in row]
        assert labels == ["Send", "Edit", "Regenerate", "Discard"]
        await world.tap(d.id, "send")
        assert await waiting == "hi there"
    finally:
        await world.close()


def test_forgetting_a_contact_deletes_their_skipped_bursts():
    from bot.drafts import ChatRef
    from bot.ledger import Ledger

    with Store.open(None) as s:
        skips = Skips(s)
        skips.record(ChatRef("telegram", "BC1", "2002"), "user2002", ["5"], 0.97, utc(10))
        skips.record(ChatRef("telegram", "BC1", "3003"), "user2002", ["6"], 0.95, utc(11))  # a group they wrote in
        skips.record(ChatRef("telegram", "BC1", "4004"), "user4004", ["7"], 0.96, utc(12))
        with s.transaction():
            Ledger(s).forget("telegram", "2002", ["user2002"])
        assert [k.chat.chat_id for k in skips.since()] == ["4004"]
