"""Drafting (serving.drafting): candidate splitting, guards and dedupe; the prompt against the training renderer;
retries through a fake backend."""

from __future__ import annotations

import doctest
import pytest

import serving.drafting
from helpers import GEMMA3_LIKE, QuickBackend, tiny_tokenizer
import serving.candidates
from serving.candidates import Guard, dedupe, reject_reason, split_reply
from serving.drafting import DraftRequest, DraftSettings, NoDraft, build_prompt, current_session, draft
from serving.fitting import shorten
from training.dataset import DatasetOptions, build
from twin.pii import scrub
from training.ingest import resessionize
from twin.chat import Chat, Message, utc
from twin.errors import ConfigError, NotFound
from twin.store import ChatKey, Store, StoredMessage

CHATML = tiny_tokenizer()
GEMMA3 = tiny_tokenizer(GEMMA3_LIKE, add_bos=True)
T0 = 1_710_000_000  # 2024-03-09 16:00 UTC
DAY = 86_400
OWNER = ("user1", "Mira Solberg")
TOMAS = ("user2", "Tomas Berg")
LENA = ("user3", "Lena Dahl")
NOTES = {"Tomas Berg": "climbing partner", "telegram:9": "the climbing group"}
TOMAS_CHAT = ChatKey("telegram", "2")
GROUP_CHAT = ChatKey("telegram", "9")


def test_doctests():
    assert doctest.testmod(serving.drafting).failed == 0
    assert doctest.testmod(serving.candidates).failed == 0


# -- a store of fictional chats --------------------------------------------------------------------------------

def session(chat_id: str, start: int, *lines: tuple[tuple[str, str], str]) -> list[Message]:
    """Messages one minute apart: ((sender_id, name), text)."""
    return [Message("telegram", chat_id, f"{chat_id}-{start}-{i}", who[0], who[1], utc(start + 60 * i), text)
            for i, (who, text) in enumerate(lines)]


def make_store(messages: list[Message]) -> Store:
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Tomas Berg"))
        store.upsert_chat(Chat("telegram", "9", "group", "Crag crew"))
        store.insert_messages(messages)
        names = {}
        for m in messages:
            t = int(m.time.timestamp())
            first, last = names.get((m.sender_id, m.sender_name), (t, t))
            names[(m.sender_id, m.sender_name)] = (min(first, t), max(last, t))
        store.upsert_names("telegram", names)
        store.set_owner("telegram", OWNER[0], OWNER[1])
        resessionize(store, store.chat_keys(), 3600)
    return store


LAST = T0 + 3 * DAY  # the conversation being answered
HISTORY = [
    *session("2", T0, (TOMAS, "climb tomorrow?"), (OWNER, "yes"), (OWNER, "10 at the gym")),
    *session("2", T0 + DAY, (OWNER, "morning!"), (TOMAS, "morning"),
             (OWNER, "coffee later? call me on +47 912 34 567")),
    *session("2", LAST, (TOMAS, "hey"), (OWNER, "hi! mail me at mira.s@example.org")),
    *session("9", T0, (LENA, "who books the hut?"), (TOMAS, "not me"), (OWNER, "I will")),
    *session("9", LAST, (LENA, "anyone up for the north face?"), (OWNER, "me!")),
]
# What arrives next in each chat, and the owner's reply that training sees once it is stored.
TOMAS_NEXT = session("2", LAST + 120, (TOMAS, "are we still on for saturday?"), (TOMAS, "I can bring the rope"),
                     (OWNER, "yes!"), (OWNER, "see you at 10"))
GROUP_NEXT = session("9", LAST + 120, (TOMAS, "count me in"), (LENA, "same"), (OWNER, "great, 8 at the car park"))


def training_prompt(tokenizer, chat_id: str) -> list[int]:
    """The training sample of the chat's last conversation, cut before its last owner turn."""
    store = make_store(HISTORY + TOMAS_NEXT + GROUP_NEXT)
    ds = build(store, tokenizer, DatasetOptions(holdout_fraction=0, notes=NOTES))
    [sample] = [s for s in ds.train if s.chat_id == chat_id and s.start == utc(LAST)]
    mask = sample.loss_mask
    cut = max(i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1]))
    return sample.input_ids[:cut]


@pytest.mark.parametrize("tokenizer", [CHATML, GEMMA3], ids=["chatml", "gemma3"])
def test_the_draft_prompt_is_the_training_sample_cut_before_the_owner_reply(tokenizer):
    store = make_store(HISTORY)
    settings = DraftSettings(notes=NOTES, scrub=scrub)
    incoming = [m.text for m in TOMAS_NEXT[:2]]
    prompt = build_prompt(store, DraftRequest(TOMAS_CHAT, incoming), tokenizer, settings, TOMAS_NEXT[1].time)
    assert prompt.ids == training_prompt(tokenizer, "2")
    assert prompt.persona.style == ""  # training renders personas without a style line (serving.personas)
    assert prompt.persona.notes == "climbing partner"
    assert [t.role for t in prompt.turns] == ["contact", "owner", "contact"]
    assert prompt.turns[1].lines == ("hi! mail me at <EMAIL>",)  # scrubbed, as training saw it


def test_group_incoming_messages_carry_the_sender_name_as_in_training():
    # A request has one sender: Tomas's message is already stored, Lena's just arrived.
    store = make_store(HISTORY + GROUP_NEXT[:1])
    request = DraftRequest(GROUP_CHAT, ["same"], sender="Lena Dahl")
    prompt = build_prompt(store, request, CHATML, DraftSettings(notes=NOTES, scrub=scrub), GROUP_NEXT[1].time)
    assert prompt.ids == training_prompt(CHATML, "9")
    assert prompt.turns[-1].lines == ("Tomas Berg: count me in", "Lena Dahl: same")
    assert prompt.persona.group == "Crag crew" and prompt.persona.notes == "the climbing group"


def test_a_message_after_a_long_silence_starts_a_new_conversation():
    store = make_store(HISTORY)
    later = utc(LAST + 60 + 3601)
    prompt = build_prompt(store, DraftRequest(TOMAS_CHAT, ["hello again"]), CHATML, DraftSettings(), later)
    assert [t.lines for t in prompt.turns] == [("hello again",)]
    assert prompt.persona.date == later.date()
    # The owner's name comes from the store unless twin.toml gives one.
    assert prompt.persona.owner == "Mira Solberg"
    named = build_prompt(store, DraftRequest(TOMAS_CHAT, ["x"]), CHATML, DraftSettings(owner_name="Mira"), later)
    assert named.persona.owner == "Mira"


def test_current_session_is_cut_at_the_last_long_gap():
    msgs = [StoredMessage(str(t), "u", None, False, utc(t), "x", "text", False, None) for t in (0, 100, 5000, 5100)]
    assert [m.msg_id for m in current_session(msgs, utc(5200), 3600)] == ["5000", "5100"]
    assert current_session(msgs, utc(5100 + 3601), 3600) == []
    assert [m.msg_id for m in current_session(msgs, utc(5100 + 3600), 3600)] == ["5000", "5100"]  # equal: same one
    assert current_session([], utc(0), 3600) == []


def test_nothing_to_reply_to_and_unknown_chats_are_clear_errors():
    store = make_store(HISTORY)
    with pytest.raises(ConfigError, match="last message here is yours"):
        build_prompt(store, DraftRequest(TOMAS_CHAT, []), CHATML, DraftSettings(), utc(LAST + 120))
    with pytest.raises(NotFound, match="telegram:404"):
        build_prompt(store, DraftRequest(ChatKey("telegram", "404"), ["hi"]), CHATML, DraftSettings(), utc(LAST))
    with pytest.raises(ConfigError, match="--n"):
        DraftRequest(TOMAS_CHAT, ["hi"], n=0)


# -- splitting, guards, dedupe -----------------------------------------------------------------------------------

def test_split_reply_cuts_at_the_end_of_the_turn():
    assert split_reply("yes!\nsee you at 10\n") == ["yes!", "see you at 10"]
    assert split_reply("yes!<end_of_turn>\n<start_of_turn>user\nok") == ["yes!"]
    assert split_reply("yes\nassistant\nmore") == ["yes"]
    assert split_reply("assistant\nyes") == ["assistant", "yes"]  # kept whole: the guard rejects it
    assert split_reply(" \n\n ") == []


def test_guards_keep_ordinary_replies_and_reject_degenerate_ones():
    g = Guard(names=("Tomas Berg", "Mira Solberg"), incoming=("are we still on for saturday?",), max_lines=4,
              max_line_chars=80, max_emoji=3)
    ok = [["yes!", "see you at 10"], ["haha"], ["Tomasz is coming too"], ["tomorrow: 10 at the gym 👍"], ["no no no"]]
    assert [reject_reason(m, g) for m in ok] == [None] * len(ok)
    bad = {
        "empty": [],
        "role_header": ["user", "are we?"],
        "speaker_prefix": ["sure", "Tomas Berg: great"],
        "copies_incoming": ["are we still on for Saturday??"],
        "loop": ["we can go we can go we can go"],
        "too_long": ["the rope is in my car and the quickdraws are in the blue bag by the door, come get them"],
        "emoji_flood": ["yes 🎉🎉", "🎉🎉"],
    }
    assert {reason: reject_reason(m, g) for reason, m in bad.items()} == {r: r for r in bad}
    assert reject_reason(["a", "b", "c", "d", "e"], g) == "too_long"


def test_dedupe_drops_near_duplicates_and_keeps_order():
    texts = ["Sure, see you then!", "sure see you then", "see you at 10", "see you at 11", "can't, sorry",
             "😂", "😂😂"]
    assert dedupe(texts) == ["Sure, see you then!", "see you at 10", "can't, sorry", "😂", "😂😂"]
    assert dedupe(texts, threshold=0.95) == ["Sure, see you then!", "see you at 10", "see you at 11", "can't, sorry",
                                             "😂", "😂😂"]


# -- drafting through a fake backend ---------------------------------------------------------------------------

class FakeBackend:
    """Answers each call with the next scripted list of completions and records the call."""

    name = "fake"

    def __init__(self, *answers: list[str]):
        self.tokenizer = CHATML
        self.answers = list(answers)
        self.calls: list[dict] = []

    def complete(self, prompt_ids, *, n, max_new_tokens, temperature, top_p, seed, adapter, until=None):
        self.calls.append(dict(ids=list(prompt_ids), n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_p=top_p, seed=seed, adapter=adapter))
        return self.answers.pop(0) if self.answers else []

    def close(self):
        pass


def request(**kw) -> DraftRequest:
    kw.setdefault("seed", 40)
    return DraftRequest(TOMAS_CHAT, [m.text for m in TOMAS_NEXT[:2]], **kw)


def test_draft_returns_n_distinct_candidates_and_retries_with_another_seed():
    backend = FakeBackend(
        ["sure, see you then", "Sure, see you then!", "", "Tomas: hi", "ok ok ok ok ok ok", "yes<|im_end|>junk"],
        ["yes!", "can't wait 🎉\nbringing snacks"],
    )
    store = make_store(HISTORY)
    now = TOMAS_NEXT[1].time
    result = draft(store, backend, request(adapter="mira-v1"), DraftSettings(scrub=scrub), now)
    assert [c.messages for c in result.candidates] == [
        ["sure, see you then"], ["yes"], ["can't wait 🎉", "bringing snacks"]]
    assert [c.text for c in result.candidates] == ["sure, see you then", "yes", "can't wait 🎉\nbringing snacks"]
    assert [(c["n"], c["seed"], c["adapter"]) for c in backend.calls] == [(6, 40, "mira-v1"), (2, 41, "mira-v1")]
    assert backend.calls[0]["ids"] == build_prompt(store, request(), CHATML, DraftSettings(scrub=scrub), now).ids
    assert result.rejected == {"duplicate": 2, "empty": 1, "speaker_prefix": 1, "loop": 1}
    assert (result.adapter, result.attempts, result.prompt_tokens) == ("mira-v1", 2, len(backend.calls[0]["ids"]))
    assert result.latency_ms > 0
    assert result.to_json() == {
        "candidates": [{"text": c.text, "messages": c.messages} for c in result.candidates],
        "adapter": "mira-v1", "latency_ms": round(result.latency_ms, 1), "prompt_tokens": result.prompt_tokens,
    }


def test_draft_stops_after_the_retries_with_what_it_has():
    backend = FakeBackend(["yes"], ["yes!"], ["YES"], ["never asked"])
    result = draft(make_store(HISTORY), backend, request(n=2), DraftSettings(retries=2), TOMAS_NEXT[1].time)
    assert [c.text for c in result.candidates] == ["yes"]
    assert [c["n"] for c in backend.calls] == [4, 2, 2]
    assert result.rejected == {"duplicate": 2} and result.adapter == "base"


def test_draft_without_any_usable_candidate_raises_and_keeps_the_text_out_of_the_error():
    backend = FakeBackend(["are we still on for saturday?"], ["Tomas Berg: secret plan"], [""])
    with pytest.raises(NoDraft) as e:
        draft(make_store(HISTORY), backend, request(n=1), DraftSettings(), TOMAS_NEXT[1].time)
    assert "3 tries" in str(e.value) and "copies_incoming 1" in str(e.value) and "speaker_prefix 1" in str(e.value)
    assert "secret" not in str(e.value)


def test_greedy_drafting_asks_once_for_one():
    backend = FakeBackend(["yes"])
    result = draft(make_store(HISTORY), backend, request(n=3, temperature=0), DraftSettings(), TOMAS_NEXT[1].time)
    assert [c.text for c in result.candidates] == ["yes"] and [c["n"] for c in backend.calls] == [1]


def test_the_guard_follows_the_owners_profile():
    # The owner writes short single messages here: five lines are far too many.
    backend = FakeBackend(["a\nb\nc\nd\ne", "fine"])
    result = draft(make_store(HISTORY), backend, request(n=1), DraftSettings(), TOMAS_NEXT[1].time)
    assert [c.text for c in result.candidates] == ["fine"] and result.rejected == {"too_long": 1}


def test_drafting_asks_fewer_when_the_adapters_candidates_are_kept_and_more_when_they_are_not():
    # One settings object lives as long as the relay: it remembers the share of candidates kept, per adapter.
    settings = DraftSettings()
    good = ["sure", "see you at ten", "can't today", "bringing snacks", "what time?", "yes!! finally"]
    asked = []
    for i in range(8):
        backend = FakeBackend(good)
        draft(make_store(HISTORY), backend, request(n=3, seed=i, adapter="mira-v1"), settings, TOMAS_NEXT[1].time)
        asked.append(backend.calls[0]["n"])
    assert asked[0] == 6 and asked[-1] == 4  # twice the need at first (as before), then ceil(3 / ~0.85)
    assert sorted(asked, reverse=True) == asked
    assert settings.acceptance.rate("mira-v1") > 0.75 and settings.acceptance.rate(None) == 0.5
    # The base model's candidates are all empty: it keeps asking the most, the configured factor.
    for i in range(3):
        backend = FakeBackend([""] * 6, ["yes"])
        draft(make_store(HISTORY), backend, request(n=3, seed=i), settings, TOMAS_NEXT[1].time)
        assert backend.calls[0]["n"] == 6


def test_unseeded_requests_draw_different_seeds():
    seeds = set()
    for _ in range(3):
        backend = FakeBackend(["yes"])
        draft(make_store(HISTORY), backend, request(n=1, seed=None), DraftSettings(), TOMAS_NEXT[1].time)
        seeds.add(backend.calls[0]["seed"])
    assert len(seeds) > 1


# -- a message longer than the prompt ----------------------------------------------------------------------------

QUESTION = "So are we still on for saturday at ten?"
FILLER = "We drove up on friday, the road was closed after the bridge so we walked the last part with the bags. "


def long_message(chars: int) -> str:
    """`chars` characters: an opening, a long story, and the question at the very end."""
    head = "Long story, sorry! "
    body = (FILLER * (chars // len(FILLER) + 1))[:chars - len(head) - len(QUESTION) - 1]
    text = f"{head}{body} {QUESTION}"
    assert len(text) == chars
    return text


def test_shorten_keeps_the_start_and_the_end_with_a_marker_between():
    words = lambda s: len(s.split())  # noqa: E731  (a word is a token here)
    text = "one two three four five six seven eight nine ten eleven twelve"
    assert shorten(text, 12, words) == text  # fits: untouched
    out = shorten(text, 7, words)
    assert out == "one two […] nine ten eleven twelve" and words(out) == 7
    assert shorten(text, 2, words) == "[…] twelve"  # the end first
    assert shorten(text, 0, words) == ""  # not even the marker fits
    no_spaces = shorten("a" * 40 + "b" * 60, 40, len)  # cut where it must
    assert no_spaces == "a" * 11 + " […] " + "b" * 24 and len(no_spaces) == 40


@pytest.mark.parametrize("chars", [3000, 20000])
def test_a_long_message_gets_candidates_and_keeps_its_start_and_its_question(chars):
    backend = QuickBackend()
    store = make_store(HISTORY)
    request = DraftRequest(TOMAS_CHAT, [long_message(chars)], seed=5)
    result = draft(store, backend, request, DraftSettings(notes=NOTES, max_prompt_tokens=896), utc(LAST + 120))
    assert len(result.candidates) == 3
    assert len(result.prompt_ids) == result.prompt_tokens <= 896
    assert result.prompt_tokens > 896 - 40  # the message takes what the budget leaves, not a fraction of it
    prompt = CHATML.decode(result.prompt_ids)
    assert prompt.index("Long story, sorry!") < prompt.index(" […] ") < prompt.index(QUESTION)
    assert prompt.endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert "About Tomas Berg: climbing partner" in prompt  # a short persona is kept whole
    assert all(c["prompt_tokens"] <= 896 for c in backend.calls)


@pytest.mark.parametrize("tokenizer", [CHATML, GEMMA3], ids=["chatml", "gemma3"])
def test_a_long_persona_is_cut_before_the_message_and_the_context(tokenizer):
    notes = {"Tomas Berg": "met at the climbing gym, likes long multi-pitch routes. " * 1000}
    store = make_store(HISTORY)
    now = utc(LAST + 120)
    prompt = build_prompt(store, DraftRequest(TOMAS_CHAT, ["are we still on for saturday?"]), tokenizer,
                          DraftSettings(notes=notes, max_prompt_tokens=896), now)
    assert len(prompt.ids) <= 896
    assert prompt.persona.notes.startswith("met at the climbing gym") and " […] " in prompt.persona.notes
    assert [t.lines for t in prompt.turns] == [("hey",), ("hi! mail me at mira.s@example.org",),
                                               ("are we still on for saturday?",)]  # all whole
    # Both long: the persona gets at most half, the message the rest, and it all fits.
    both = build_prompt(store, DraftRequest(TOMAS_CHAT, [long_message(20000)]), tokenizer,
                        DraftSettings(notes=notes, max_prompt_tokens=896), now)
    assert len(both.ids) <= 896 and both.turns[-1].content.endswith(QUESTION)
    assert len(tokenizer.decode(both.ids)) > 1000


def test_a_budget_too_small_for_any_message_is_a_clear_error():
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        build_prompt(make_store(HISTORY), DraftRequest(TOMAS_CHAT, ["hi"]), CHATML,
                     DraftSettings(max_prompt_tokens=8), utc(LAST + 120))
