"""Preference data from draft outcomes (training/preference.py): the rules on plain values, and tokenizing a
reply exactly as training renders an owner's turn."""

from __future__ import annotations

import datetime as dt
import doctest
import random

import pytest

import training.preference
from helpers import tiny_tokenizer
from training.preference import Completions, build, dpo_rows, held_out_count, kto_rows, normalise
from twin.chat import utc
from twin.outcomes import Outcome
from twin.prompts import Conversation, Persona, Turn, prompt_ids, render


def outcome(i, kind, shown, final=None, passed=(), prompt=None, at=None) -> Outcome:
    return Outcome(i, "telegram", "telegram", "2002", kind, "twin-v1", (7, i) if prompt is None else prompt,
                   shown, tuple(passed), final, 0, 12.0, utc(at if at is not None else 1000 + i), utc(2000 + i),
                   False)


def test_module_doctests():
    assert doctest.testmod(training.preference).failed == 0


def test_an_edit_is_a_pair_unless_it_is_trivial():
    p = build([
        outcome(1, "edited", "See you at 8!!", "see you at 8"),      # light: a pair
        outcome(2, "edited", "see you at 8 ", "see you at 8"),       # whitespace only
        outcome(3, "edited", "see you  at 8", "see you at 8"),       # whitespace inside
        outcome(4, "edited", "see you at 8!", "see you at 8"),       # one character
        outcome(5, "written", "sure, 8?", "can't tonight, sorry"),   # answered by hand: heavy, a pair
    ], 0.0)
    assert [(x.draft_id, x.source) for x in p.pairs] == [(1, "edit"), (5, "edit")]
    assert p.counts["trivial"] == 2  # 3 (whitespace) and 4 (one character); 2 normalises to the same text
    assert (p.pairs[1].chosen, p.pairs[1].rejected) == ("can't tonight, sorry", "sure, 8?")
    # What went out is desirable either way; a draft edited trivially is not undesirable.
    assert {(x.draft_id, x.completion, x.desirable) for x in p.labels} >= {
        (1, "see you at 8", True), (1, "See you at 8!!", False), (4, "see you at 8", True)}
    assert not any(x.draft_id == 4 and not x.desirable for x in p.labels)


def test_passed_over_candidates_lose_to_what_was_sent():
    p = build([
        outcome(1, "sent", "haha yes", passed=("Sure thing!! See you!!", "haha yes ")),
        outcome(2, "edited", "ok see you", "ok see you at the crag", passed=("Can't make it, sorry",)),
    ], 0.0)
    assert [(x.chosen, x.rejected, x.source) for x in p.pairs] == [
        ("haha yes", "Sure thing!! See you!!", "passed_over"),  # the trailing-space copy is trivial
        ("ok see you at the crag", "ok see you", "edit"),
        ("ok see you at the crag", "Can't make it, sorry", "passed_over"),
    ]


def test_a_discarded_draft_loses_to_one_sent_for_the_same_prompt():
    same = (1, 2, 3)
    p = build([
        outcome(1, "discarded", "Totally!! Yes!!", passed=("Nope",), prompt=same),
        outcome(2, "sent", "yes, 8 works", prompt=same),
        outcome(3, "discarded", "whatever", prompt=(9, 9)),  # nothing sent for this prompt: labels only
        outcome(4, "expired", "too late"),
        outcome(5, "failed", "did not go out", "did not go out"),
    ], 0.0)
    assert [(x.chosen, x.rejected, x.source) for x in p.pairs] == [
        ("yes, 8 works", "Nope", "discarded"), ("yes, 8 works", "Totally!! Yes!!", "discarded")]
    labels = {(x.completion, x.desirable) for x in p.labels}
    assert labels == {("Nope", False), ("Totally!! Yes!!", False), ("yes, 8 works", True), ("whatever", False)}
    assert p.counts["outcomes"] == 5 and p.counts["expired"] == 1


def test_duplicates_once_and_contradictions_not_at_all():
    p = build([
        outcome(1, "edited", "Yes!! Sure!!", "yes sure", prompt=(5,)),
        outcome(2, "edited", "Yes!! Sure!!", "yes sure", prompt=(5,)),        # the same pair again
        outcome(3, "edited", "no way jose", "fine, I'll come", prompt=(6,)),
        outcome(4, "edited", "fine, I'll come", "no way jose", prompt=(6,)),  # the opposite preference
    ], 0.0)
    assert [(x.prompt, x.chosen) for x in p.pairs] == [((5,), "yes sure")]
    assert p.counts["contradictory"] == 2
    assert not any(x.prompt == (6,) for x in p.labels)


def test_held_out_split_is_the_most_recent_and_deterministic():
    outs = [outcome(i, "edited", f"Draft number {i}!!", f"draft number {i}", at=100 * i) for i in range(10)]
    outs += [outcome(20, "discarded", "Never!!", at=50), outcome(21, "sent", "ok", at=5)]
    shuffled = outs[:]
    random.Random(3).shuffle(shuffled)
    a, b = build(outs, 0.2), build(shuffled, 0.2)
    assert [o.draft_id for o in a.held_out] == [o.draft_id for o in b.held_out] == [8, 9]
    assert sorted(a.pairs, key=lambda x: x.draft_id) == sorted(b.pairs, key=lambda x: x.draft_id)
    assert {x.draft_id for x in a.pairs} == set(range(8))
    assert a.counts["held_out"] == 2 and held_out_count(11, 0.2) == 2


def test_every_outcome_of_a_held_out_prompt_is_held_out_too():
    same = (4, 4)
    p = build([
        outcome(1, "edited", "Old draft!!", "old draft", at=1),
        outcome(2, "discarded", "Discarded for it!!", prompt=same, at=2),
        outcome(3, "edited", "Newest!!", "newest", prompt=same, at=3),
    ], 0.5)
    assert [o.draft_id for o in p.held_out] == [3]
    assert {x.draft_id for x in p.pairs} | {x.draft_id for x in p.labels} == {1}


def test_outcomes_without_a_prompt_are_counted_and_left_out():
    p = build([outcome(1, "edited", "Yes!! Sure!!", "yes sure", prompt=())], 0.0)
    assert p.pairs == () and p.counts["no_prompt"] == 1


def test_outcomes_used_counts_training_outcomes_per_method():
    p = build([outcome(1, "edited", "Yes!! Sure!!", "yes sure"), outcome(2, "sent", "ok"),
               outcome(3, "discarded", "Never!!")], 0.0)
    assert p.outcomes_used("dpo") == 1
    assert p.outcomes_used("kto") == 3


def test_normalise_keeps_messages_as_lines():
    assert normalise(" hey \n\n  see you at 8 \n") == "hey\nsee you at 8"
    assert normalise(None) == ""


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_a_reply_is_tokenized_as_training_renders_an_owner_turn(tok):
    persona = Persona("Mira", "Tomas", "telegram", dt.date(2024, 3, 9))
    contact = Turn("contact", ("are we still on for saturday?",))
    reply = "yes! meet at the gym at 10\ncan you bring the rope"
    completion = Completions(tok)(reply)
    prompt = prompt_ids(persona, [contact], tok)
    sample = render(Conversation(persona, (contact, Turn("owner", tuple(reply.splitlines())))), tok)
    # The drafting prompt plus the completion is the training sample, up to the end of the owner's turn...
    assert sample.input_ids[:len(prompt) + len(completion)] == prompt + completion
    # ...and the completion is exactly what training computes loss on: the lines and the end-of-turn token.
    assert completion == [t for t, m in zip(sample.input_ids, sample.loss_mask) if m]
    assert completion[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(completion[:-1]) == reply


def test_rows_for_trl_and_the_too_long_ones_dropped(tok):
    p = build([outcome(1, "edited", "Yes!! Sure!!", "yes sure", prompt=(1, 2, 3)),
               outcome(2, "edited", "Yes!! Sure!!", "yes sure", prompt=tuple(range(1, 200)))], 0.0)
    rows, dropped = dpo_rows(p.pairs, tok, max_tokens=64)
    ids = Completions(tok)
    assert rows == [{"prompt_ids": [1, 2, 3], "chosen_ids": ids("yes sure"), "rejected_ids": ids("Yes!! Sure!!")}]
    assert dropped == 1
    rows, dropped = kto_rows(p.labels, tok, max_tokens=64)
    assert [(r["completion_ids"], r["label"]) for r in rows] == [(ids("yes sure"), True), (ids("Yes!! Sure!!"), False)]
    assert dropped == 2


def test_a_light_edit_is_also_anchored_at_each_place_it_departs_from_the_draft(tok):
    """The owner deleted the '!'s: besides the whole replies, a row for each deletion point says what comes
    there instead (the next kept word, the end of the turn); a rewrite gets no anchors."""
    p = build([outcome(1, "edited", "sure! coffee sounds good!", "sure coffee sounds good", prompt=(1, 2, 3)),
               outcome(2, "written", "sure, 8?", "can't tonight, sorry", prompt=(4, 5))], 0.0)
    rows, dropped = dpo_rows(p.pairs, tok, max_tokens=64)
    ids = Completions(tok)
    kept, draft = ids("sure coffee sounds good"), ids("sure! coffee sounds good!")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert dropped == 0 and len(rows) == 4
    assert rows[0] == {"prompt_ids": [1, 2, 3], "chosen_ids": kept, "rejected_ids": draft}
    assert rows[3] == {"prompt_ids": [4, 5], "chosen_ids": ids("can't tonight, sorry"), "rejected_ids": ids("sure, 8?")}
    first, last = rows[1], rows[2]
    assert first == {"prompt_ids": [1, 2, 3] + kept[:1], "chosen_ids": kept[1:2], "rejected_ids": draft[1:2]}
    assert (tok.decode(kept[:1]), tok.decode(draft[1:2]), tok.decode(kept[1:]).startswith(" co")) == ("sure", "!", True)
    assert last == {"prompt_ids": [1, 2, 3] + kept[:-1], "chosen_ids": [end], "rejected_ids": draft[-2:-1]}
    assert (tok.decode(kept[:-1]), tok.decode(draft[-2:-1])) == ("sure coffee sounds good", "!")

def test_a_copied_draft_is_weaker_than_a_sent_one():
    same = (4, 4)
    p = build([
        outcome(1, "copied", "see you at 8", passed=("can't, sorry",), prompt=same),
        outcome(2, "discarded", "whatever you like", prompt=same),
        outcome(3, "sent", "can't, sorry", passed=("see you at 8",), prompt=(5, 5)),
        outcome(4, "copied", "sure, 9 then", passed=("maybe later",)),
        outcome(5, "sent", "ok!", prompt=(8, 8)),
    ], 0.5)
    # Never held out (nothing confirms it went out: the newest that went out is), and it never outranks the
    # discarded draft of its prompt.
    assert [o.draft_id for o in p.held_out] == [5]
    assert [(x.chosen, x.rejected, x.source) for x in p.pairs] == [
        ("see you at 8", "can't, sorry", "copied"), ("can't, sorry", "see you at 8", "passed_over"),
        ("sure, 9 then", "maybe later", "copied")]
    assert ("see you at 8", True) in {(x.completion, x.desirable) for x in p.labels}
    assert p.counts["copied"] == 2 and p.counts["outcomes"] == 5


def test_a_confirmed_outcome_wins_over_a_copied_one_that_contradicts_it():
    same = (6, 6)
    p = build([outcome(1, "sent", "yes, 8 works", passed=("no, sorry",), prompt=same),
               outcome(2, "copied", "no, sorry", passed=("yes, 8 works",), prompt=same)], 0.0)
    assert [(x.chosen, x.rejected, x.source) for x in p.pairs] == [("yes, 8 works", "no, sorry", "passed_over")]
    assert {(x.completion, x.desirable) for x in p.labels} == {("yes, 8 works", True), ("no, sorry", False)}
    both_sent = build([outcome(1, "sent", "yes, 8 works", passed=("no, sorry",), prompt=same),
                       outcome(2, "sent", "no, sorry", passed=("yes, 8 works",), prompt=same)], 0.0)
    assert both_sent.pairs == ()  # two confirmed outcomes that contradict each other: both go, as before
