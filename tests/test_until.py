"""Early stops that never change what a draft keeps (serving.candidates.Until, twin.decoding.sample_many): a
completion stopped once `settled` holds gives the candidate its whole text would have given, and completions
stopped once `enough` holds are never among the first `need` usable ones."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from serving.candidates import Guard, Until, keep

GUARD = Guard(names=("Tomas Berg", "Mira"), incoming=("are we still on for saturday?",), max_lines=3,
              max_line_chars=40, max_emoji=3)
PIECES = ["ok", "see you at 10", "user", "assistant", "Tomas: sure", "😂😂", "x" * 45, "y " * 30, "<|im_end|>", "  ", "",
          "are we still on for Saturday?", "ha ha ha ha ha ha", "bring the rope", "é&<"]
texts = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("\n".join)


@settings(max_examples=400, deadline=None)
@given(texts, st.integers(0, 200))
def test_a_settled_prefix_gives_the_candidate_of_the_whole_text(text, cut):
    prefix = text[:cut]
    until = Until(GUARD, need=1, threshold=0.8)
    if until.settled(prefix):
        assert keep([prefix], GUARD, 0.8)[0] == keep([text], GUARD, 0.8)[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=7), st.integers(1, 4), st.lists(st.sampled_from(PIECES), max_size=2))
def test_enough_means_the_later_completions_are_never_kept(all_texts, need, kept_before):
    until = Until(GUARD, need=need, threshold=0.8, kept=tuple(kept_before))
    whole = keep(all_texts, GUARD, 0.8, until.kept)[0][:need]
    for k in range(1, len(all_texts) + 1):
        if until.enough(all_texts[:k]):
            assert keep(all_texts[:k], GUARD, 0.8, until.kept)[0][:need] == whole
            break
    else:
        assert len(whole) < need


def test_a_live_line_is_never_judged_before_it_ends():
    until = Until(GUARD, need=1, threshold=0.8)
    assert not until.settled("x" * 45)  # the line may still end in a partial character the next token completes
    assert until.settled("x" * 45 + "\n") and until.settled("x" * 49)  # past max_line_chars + PARTIAL_SLACK
    assert not until.settled("ok\nuse")  # "use" may become "user" or "used"
    assert until.settled("ok\nuser\n") and until.settled("ok<|im_end|>")
    assert not until.settled("user\nok\n")  # a role header as the first line is the candidate's own problem


TOK = None


@settings(max_examples=150, deadline=None)
@given(texts)
def test_settled_on_the_decoded_tokens_so_far_gives_the_whole_completions_candidate(text):
    """What the local backend judges: the decoded text of the tokens so far (a byte-level BPE tokenizer, where a
    character split over tokens decodes as replacement characters until it is whole)."""
    global TOK
    if TOK is None:
        from helpers import tiny_tokenizer

        TOK = tiny_tokenizer()
    ids = TOK(text, add_special_tokens=False)["input_ids"]
    whole = keep([TOK.decode(ids, skip_special_tokens=True)], GUARD, 0.8)[0]
    until = Until(GUARD, need=1, threshold=0.8)
    for k in range(1, len(ids)):
        partial = TOK.decode(ids[:k], skip_special_tokens=True)
        if until.settled(partial):
            assert keep([partial], GUARD, 0.8)[0] == whole
            break
