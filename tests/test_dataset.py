"""Training data from a real SQLite store: samples, drop reasons, held-out split, caps, PII (training.dataset)."""

import doctest
from collections import Counter

import pytest

import training.dataset
from helpers import tiny_tokenizer
from training.dataset import DatasetOptions, build, held_out_count
from twin.pii import scrub
from training.ingest import resessionize
from twin.chat import Chat, Message, utc
from twin.errors import ConfigError
from twin.store import Store

TOK = tiny_tokenizer()
T0 = 1_710_000_000  # 2024-03-09 16:00 UTC
DAY = 86_400
OWNER = "user1"


class Builder:
    """Sessions one day apart by default; messages in a session one minute apart."""

    def __init__(self, platform="telegram"):
        self.platform = platform
        self.chats, self.messages, self.names = [], [], {}
        self.n = 0

    def chat(self, chat_id, type_, title):
        self.chats.append(Chat(self.platform, chat_id, type_, title))

    def session(self, chat_id, start, *lines):
        """lines: (sender_id, name, text, kind, forwarded), as me(), tomas() and lena() make them."""
        for i, (sender, name, text, kind, forwarded) in enumerate(lines):
            self.n += 1
            t = start + 60 * i
            self.messages.append(Message(self.platform, chat_id, str(self.n), sender, name, utc(t), text, kind,
                                         forwarded=forwarded))
            first, last = self.names.get((sender, name), (t, t))
            self.names[(sender, name)] = (min(first, t), max(last, t))

    def store(self, owner_name="Mira Solberg"):
        store = Store.open(None)
        with store.transaction():
            for chat in self.chats:
                store.upsert_chat(chat)
            store.insert_messages(self.messages)
            store.upsert_names(self.platform, self.names)
            store.set_owner(self.platform, OWNER, owner_name)
            resessionize(store, store.chat_keys(), 3600)
        return store


def me(text, kind="text", forwarded=False):
    return (OWNER, "Mira Solberg", text, kind, forwarded)


def tomas(text, kind="text", forwarded=False):
    return ("user2", "Tomas Berg", text, kind, forwarded)


def lena(text):
    return ("user3", "Lena Dahl", text, "text", False)


def fixture(usable_tomas=20):
    """Chat 2 (Tomas, personal): every drop reason plus `usable_tomas` usable sessions; chat 9 (a group): three
    usable sessions; chat 3 (Lena): one usable session."""
    b = Builder()
    b.chat("2", "personal", "Tomas Berg")
    b.chat("3", "personal", "Lena Dahl")
    b.chat("9", "group", "Crag crew")
    day = 0
    b.session("2", T0 + day * DAY, tomas("anyone there?"), tomas("hello?"))  # no_owner_reply
    day += 1
    b.session("2", T0 + day * DAY, tomas("how was the trip?"), me("", "photo"), me("", "voice"))  # owner_media_only
    day += 1
    b.session("2", T0 + day * DAY, tomas("news?"), me("storm warning", forwarded=True))  # owner_forwarded
    day += 1
    b.session("2", T0 + day * DAY, tomas("tell me everything"), me("so " * 600))  # too_long at 256 tokens
    day += 1
    # Two sessions on the same day with the same words: the same sample twice, the later one is a duplicate.
    b.session("2", T0 + day * DAY, tomas("hey"), me("hey!"))
    b.session("2", T0 + day * DAY + 4 * 3600, tomas("hey"), me("hey!"))
    day += 1
    for i in range(usable_tomas - 1):
        b.session("2", T0 + (day + i) * DAY, tomas(f"climb on day {i}?"), me("yes"), me("see you at 10"), tomas("ok"))
    b.session("3", T0, me("morning! coffee?"))  # the owner opens the conversation: still a sample
    for i in range(3):
        b.session("9", T0 + i * DAY, lena("who books the hut?"), tomas("not me"), me(f"I will, round {i}"))
    return b


def test_samples_drops_and_held_out():
    store = fixture().store()
    ds = build(store, TOK, DatasetOptions(max_tokens=256, notes={"Tomas Berg": "climbing partner"}))
    assert ds.dropped == Counter(no_owner_reply=1, owner_media_only=1, owner_forwarded=1, too_long=1, duplicate=1)
    assert ds.sessions == store.stats()["sessions"] == 25 + 1 + 3
    # Nothing is dropped silently.
    assert ds.sessions == len(ds.train) + len(ds.held_out) + sum(ds.dropped.values())
    by_chat = lambda samples: Counter(s.chat_id for s in samples)  # noqa: E731
    # Tomas: 20 usable sessions -> the 2 most recent held out; the group: 3 -> 1; Lena: 1 -> 0.
    assert by_chat(ds.held_out) == {"2": 2, "9": 1}
    assert by_chat(ds.train) == {"2": 18, "9": 2, "3": 1}
    for chat_id in ("2", "9"):
        train = [s for s in ds.train if s.chat_id == chat_id]
        held = [s for s in ds.held_out if s.chat_id == chat_id]
        assert max(s.start for s in train) < min(s.start for s in held)
    assert [s.session for s in ds.held_out if s.chat_id == "2"] == [23, 24]
    keys = lambda samples: {(s.platform, s.chat_id, s.session) for s in samples}  # noqa: E731
    assert not keys(ds.train) & keys(ds.held_out)


def test_sessions_match_the_store_and_provenance_is_kept():
    store = fixture().store()
    ds = build(store, TOK, DatasetOptions(max_tokens=256))
    table = {(p, c, i): s for p, c, i, s in store.conn.execute("SELECT platform, chat_id, idx, start FROM sessions")}
    for s in ds.train + ds.held_out:
        assert int(s.start.timestamp()) == table[(s.platform, s.chat_id, s.session)]
        assert s.conversation.persona.date == s.start.date()


def test_personas_and_rendered_text():
    store = fixture().store()
    ds = build(store, TOK, DatasetOptions(max_tokens=256, notes={"Tomas Berg": "climbing partner"}))
    last = ds.held_out[1]
    assert (last.chat_id, last.session) == ("2", 24)
    persona = last.conversation.persona
    assert (persona.owner, persona.contact, persona.notes, persona.group) == (
        "Mira Solberg", "Tomas Berg", "climbing partner", None)
    # The trailing contact turn carries no loss and is left out of the sample; eval still has it.
    assert [t.content for t in last.turns] == ["climb on day 18?", "yes\nsee you at 10"]
    assert len(last.conversation.turns) == 3
    masked = TOK.decode([i for i, m in zip(last.input_ids, last.loss_mask) if m])
    assert masked == "yes\nsee you at 10<|im_end|>"
    group = next(s for s in ds.train if s.chat_id == "9")
    assert group.conversation.persona.group == "Crag crew"
    assert group.conversation.turns[0].lines == ("Lena Dahl: who books the hut?", "Tomas Berg: not me")
    lena = next(s for s in ds.train if s.chat_id == "3")
    assert [t.role for t in lena.turns] == ["owner"] and lena.conversation.persona.contact == "Lena Dahl"


def test_duplicates_removed_exactly():
    ds = build(fixture().store(), TOK, DatasetOptions(max_tokens=256))
    ids = [tuple(s.input_ids) for s in ds.train + ds.held_out]
    assert len(ids) == len(set(ids))
    kept = [s.session for s in ds.train if s.chat_id == "2" and s.conversation.turns[1].lines == ("hey!",)]
    assert kept == [4]  # the earlier of the two identical sessions


def test_cap_per_chat_keeps_the_most_recent():
    ds = build(fixture().store(), TOK, DatasetOptions(max_tokens=256, cap_per_chat=5))
    assert ds.dropped["cap_per_chat"] == 20 - 5
    tomas = sorted(s.session for s in ds.train + ds.held_out if s.chat_id == "2")
    assert tomas == [20, 21, 22, 23, 24]
    assert [s.session for s in ds.held_out if s.chat_id == "2"] == [24]
    assert ds.sessions == len(ds.train) + len(ds.held_out) + sum(ds.dropped.values())


def test_summary_fingerprint_and_seed():
    store = fixture().store()
    a = build(store, TOK, DatasetOptions(max_tokens=256, seed=1))
    b = build(store, TOK, DatasetOptions(max_tokens=256, seed=2))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert [s.session for s in a.train] != [s.session for s in b.train]  # only the order differs
    assert build(store, TOK, DatasetOptions(max_tokens=256, train_on="all")).fingerprint != a.fingerprint
    summary = a.summary()
    assert summary["sessions"] == 29 and summary["train_samples"] == 21 and summary["held_out_samples"] == 3
    assert summary["tokens"] == sum(len(s.input_ids) for s in a.train)
    assert 0 < summary["target_tokens"] == sum(sum(s.loss_mask) for s in a.train) < summary["tokens"]
    assert summary["dropped"] == {"duplicate": 1, "no_owner_reply": 1, "owner_forwarded": 1,
                                  "owner_media_only": 1, "too_long": 1}


def test_session_gap_and_owner_name_fallback():
    b = Builder()
    b.chat("2", "personal", None)
    nameless = lambda text: (OWNER, None, text, "text", False)  # noqa: E731
    b.session("2", T0, tomas("a?"), nameless("b"))
    b.session("2", T0 + 2 * 3600, tomas("c?"), nameless("d"))
    store = b.store(owner_name=None)
    assert build(store, TOK, DatasetOptions(holdout_fraction=0)).sessions == 2
    ds = build(store, TOK, DatasetOptions(session_gap=3 * 3600, owner_name="Mira"))
    assert ds.sessions == 1 and len(ds.train) == 1 and not ds.held_out
    persona = ds.train[0].conversation.persona
    assert (persona.owner, persona.contact) == ("Mira", "Tomas Berg")  # no title: the other participant's name
    assert [t.content for t in ds.train[0].turns] == ["a?", "b", "c?", "d"]


def test_pii_is_scrubbed_before_rendering():
    b = Builder()
    b.chat("2", "personal", "Tomas Berg")
    b.session("2", T0, tomas("mail me at tomas.berg@example.org"), me("call +47 912 34 567 at 18:30"))
    store = b.store()
    turns = build(store, TOK, DatasetOptions(holdout_fraction=0)).train[0].turns
    assert [t.content for t in turns] == ["mail me at <EMAIL>", "call <PHONE> at 18:30"]
    raw = build(store, TOK, DatasetOptions(holdout_fraction=0, scrub_pii=False)).train[0].turns
    assert raw[1].content == "call +47 912 34 567 at 18:30"


def test_options_are_validated():
    with pytest.raises(ConfigError, match="train_on"):
        DatasetOptions(train_on="contacts")
    with pytest.raises(ConfigError, match="holdout_fraction"):
        DatasetOptions(holdout_fraction=1.0)
    with pytest.raises(ConfigError, match="cap_per_chat"):
        DatasetOptions(cap_per_chat=0)


def test_held_out_count():
    assert [held_out_count(n, 0.1) for n in (0, 1, 2, 10, 19, 20, 30)] == [0, 0, 1, 1, 1, 2, 3]
    assert held_out_count(5, 0.0) == 0
    assert held_out_count(2, 0.9) == 1  # at least one sample stays in training


# -- PII -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("write to mira.s@example.org!", "write to <EMAIL>!"),
    ("a.b+tag@mail.example.co.uk and x@y.io", "<EMAIL> and <EMAIL>"),
    ("call +47 912 34 567", "call <PHONE>"),
    ("+1 (555) 123-4567 or 555-123-4567", "<PHONE> or <PHONE>"),
    ("07700 900123, +4915112345678", "<PHONE>, <PHONE>"),
    ("card 4111 1111 1111 1111.", "card <CARD>."),
    ("5555-5555-5555-4444 and 378282246310005", "<CARD> and <CARD>"),
    ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN <IBAN> ok"),
    ("GB82WEST12345698765432", "<IBAN>"),
    ("GB82 WEST 1234 5698 7654 32", "<IBAN>"),
])
def test_scrub_positive(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "meet at 18:30, or 10:30-11:45",
    "on 2024-03-05, 05.03.2024 or 12/03/2024 14:00",
    "from 2024-03-05 to 2024-03-09",
    "it costs $1,299.99 or 1.299,99 € (45.50 each)",
    "1 200 000 people, 1 000 000 000 views, 12.500.000",
    "flight 1234, order 12345, room 101, score 3-2, pin 1234 code 567890",
    "4111 1111 1111 1112",  # fails the Luhn check
    "user@localhost",
])
def test_scrub_negative(text):
    assert scrub(text) == text


def test_scrub_checks_iban_checksums():
    # A mistyped IBAN is no <IBAN>; its digits may still read as a phone number, which errs on the safe side.
    assert "<IBAN>" not in scrub("GB82 WEST 1234 5698 7654 33")
    assert scrub("GB82 WEST 1234 5698 7654 32") == "<IBAN>"


def test_module_doctests():
    assert doctest.testmod(training.dataset).failed == 0
