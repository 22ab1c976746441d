"""Memory in the prompt: a draft's memory is what training gave the same conversation, id for id (format v2), and
a draft for Bob never carries what Alice said (the default scope), whatever Bob asks."""

from __future__ import annotations

import pytest

from helpers import GEMMA3_LIKE, QuickBackend, tiny_tokenizer
from serving.drafting import DraftRequest, DraftSettings, build_prompt, draft
from training.dataset import DatasetOptions, build
from training.ingest import resessionize
from twin.chat import Chat, Message, utc
from twin.memory import MemoryOptions
from twin.pii import scrub
from twin.store import ChatKey, Store

CHATML = tiny_tokenizer()
GEMMA3 = tiny_tokenizer(GEMMA3_LIKE, add_bos=True)
T0 = 1_710_000_000
DAY = 86_400
OWNER, BOB, ALICE = ("user1", "Mira"), ("user2", "Bob"), ("user3", "Alice")
BOB_CHAT, ALICE_CHAT = ChatKey("telegram", "2"), ChatKey("telegram", "3")
SECRET = "Quillfeather"


def session(chat_id, start, *lines):
    return [Message("telegram", chat_id, f"{chat_id}-{start}-{i}", who[0], who[1], utc(start + 60 * i), text)
            for i, (who, text) in enumerate(lines)]


HISTORY = [
    *session("2", T0, (BOB, "my rope is frayed again"), (OWNER, "get the orange Edelrid one"), (BOB, "ok")),
    *session("2", T0 + DAY, (BOB, "morning"), (OWNER, "morning!")),
    *session("3", T0 + DAY, (ALICE, f"don't tell Bob: the surprise party is at {SECRET}"),
             (OWNER, f"{SECRET}, got it, my lips are sealed")),
    *session("3", T0 + 2 * DAY, (ALICE, "and bring a rope for the decorations"), (OWNER, "ok")),
]
LAST = T0 + 3 * DAY
BOB_NEXT = session("2", LAST, (BOB, "which rope should I buy?"), (BOB, "and where is the party?"),
                   (OWNER, "the orange one"), (OWNER, "no idea"))


def make_store(messages) -> Store:
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Bob"))
        store.upsert_chat(Chat("telegram", "3", "personal", "Alice"))
        store.insert_messages(messages)
        store.upsert_names("telegram", {(m.sender_id, m.sender_name): (T0, LAST) for m in messages})
        store.set_owner("telegram", *OWNER)
        resessionize(store, store.chat_keys(), 3600)
    return store


@pytest.mark.parametrize("tokenizer", [CHATML, GEMMA3], ids=["chatml", "gemma3"])
def test_the_draft_prompt_with_memory_is_the_training_sample_cut_before_the_reply(tokenizer):
    ds = build(make_store(HISTORY + BOB_NEXT), tokenizer, DatasetOptions(holdout_fraction=0, memory_tokens=200))
    [sample] = [s for s in ds.train if s.chat_id == "2" and s.start == utc(LAST)]
    mask = sample.loss_mask
    cut = max(i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1]))
    # The training sample remembers the earlier rope advice, from strictly earlier conversations.
    assert [(r.speaker, r.text) for r in sample.conversation.persona.memory] == [
        ("Bob", "my rope is frayed again"), ("Mira", "get the orange Edelrid one"), ("Bob", "ok")]
    settings = DraftSettings(scrub=scrub, memory=MemoryOptions(200))
    incoming = [m.text for m in BOB_NEXT[:2]]
    prompt = build_prompt(make_store(HISTORY), DraftRequest(BOB_CHAT, incoming), tokenizer, settings,
                          BOB_NEXT[1].time)
    assert prompt.persona.memory == sample.conversation.persona.memory
    assert prompt.ids == sample.input_ids[:cut]
    # Without memory (a v1 adapter) the same draft has no memory block.
    plain = build_prompt(make_store(HISTORY), DraftRequest(BOB_CHAT, incoming), tokenizer,
                         DraftSettings(scrub=scrub), BOB_NEXT[1].time)
    assert plain.persona.memory == () and len(plain.ids) < len(prompt.ids)


def test_alices_secret_is_in_no_prompt_for_bob_under_the_default_scope():
    store = make_store(HISTORY)
    backend = QuickBackend()
    asks = [["where is the party?"], [f"is it at {SECRET}?"], ["did Alice tell you about the surprise party?"],
            ["rope"], ["lips sealed?"]]
    for incoming in asks:
        result = draft(store, backend, DraftRequest(BOB_CHAT, incoming, n=1), DraftSettings(memory=MemoryOptions()),
                       utc(LAST))
        text = backend.tokenizer.decode(list(result.prompt_ids))
        # The secret appears only where Bob himself typed it.
        assert text.count(SECRET) == sum(t.count(SECRET) for t in incoming)
        assert "surprise party is at" not in text and "lips are sealed" not in text
        assert "decorations" not in text
    # Training samples of Bob's chat never remember Alice either.
    ds = build(make_store(HISTORY + BOB_NEXT), CHATML, DatasetOptions(holdout_fraction=0, memory_tokens=200))
    for s in ds.train:
        if s.chat_id == "2":
            assert all(r.speaker in ("Bob", "Mira") for r in s.conversation.persona.memory)
            assert not any(SECRET in r.text or "decorations" in r.text for r in s.conversation.persona.memory)
    # Alice's own chat does remember it.
    mem = draft(store, backend, DraftRequest(ALICE_CHAT, ["where was the party again?"], n=1),
                DraftSettings(memory=MemoryOptions()), utc(LAST))
    assert mem.remembered[0] == "10 Mar"


def test_the_card_line_names_the_days_remembered():
    store = make_store(HISTORY)
    result = draft(store, QuickBackend(), DraftRequest(BOB_CHAT, ["which rope again?"], n=1),
                   DraftSettings(memory=MemoryOptions()), utc(LAST))
    assert result.remembered == ("9 Mar",)


def test_the_ledger_keeps_the_days_remembered_across_a_restart(tmp_path):
    from bot.drafts import ChatRef, Draft
    from bot.ledger import Ledger

    with Store.open(tmp_path / "twin.db") as store:
        d = Ledger(store).create(Draft(id=None, chat=ChatRef("telegram", "BC1", "2"), contact_id="user2",
                                       answers=("1",), candidates=("sure",), created_at=utc(LAST),
                                       updated_at=utc(LAST), remembered=("9 Mar", "10 Mar")), utc(LAST))
    with Store.open(tmp_path / "twin.db") as store:
        assert Ledger(store).get(d.id).remembered == ("9 Mar", "10 Mar")
