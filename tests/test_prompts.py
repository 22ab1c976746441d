"""The prompt format: persona text, turns from stored messages, the loss mask, drafting prompts (twin.prompts)."""

import datetime as dt
import doctest

import pytest
from hypothesis import given, settings, strategies as st

import twin.prompts
from twin.chat_template import CHATML_TEMPLATE
from helpers import GEMMA3_LIKE, GEMMA_LIKE, tiny_tokenizer
from twin.chat import utc
from twin.prompts import (
    Conversation,
    DoesNotFit,
    NoTarget,
    Persona,
    Turn,
    api_messages,
    prompt_ids,
    render,
    render_prompt,
    system_text,
    to_turns,
)
from twin.store import StoredMessage

P = Persona("Mira", "Tomas", "telegram", dt.date(2024, 3, 9), notes="climbing partner")
SYS = (
    "You are Mira chatting with Tomas on Telegram. Today is Saturday 2024-03-09.\n"
    "About Tomas: climbing partner\n"
    "Reply as Mira: your own words and style, one message per line."
)

CHATML = tiny_tokenizer()
GEMMA = tiny_tokenizer(GEMMA_LIKE, add_bos=True)
GEMMA3 = tiny_tokenizer(GEMMA3_LIKE, add_bos=True)
BARE = tiny_tokenizer(None)
TOKENIZERS = {"chatml": CHATML, "gemma": GEMMA, "gemma3": GEMMA3, "none": BARE}
EOT = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>", "gemma3": "<end_of_turn>", "none": "<|im_end|>"}


def c(*lines, target=True):
    return Turn("contact", lines, target)


def o(*lines, target=True):
    return Turn("owner", lines, target)


def runs(tok, rendered):
    """The decoded text of each run of consecutive masked tokens."""
    out, cur = [], []
    for i, m in zip(rendered.input_ids, rendered.loss_mask):
        if m:
            cur.append(i)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


def text(tok, rendered):
    return tok.decode(rendered.input_ids)


def template_ids(tok, turns, persona=P, generation=False):
    out = tok.apply_chat_template(
        api_messages(persona, turns, tok), chat_template=tok.chat_template or CHATML_TEMPLATE,
        add_generation_prompt=generation,
    )
    return list(out["input_ids"])


def msg(mid, owner, text, kind="text", name=None, forwarded=False, t=0):
    sender = "user1" if owner else f"user-{name or 'Tomas'}"
    return StoredMessage(str(mid), sender, name, owner, utc(1_710_000_000 + t), text, kind, forwarded, None)


# -- persona ---------------------------------------------------------------------------------------------------

def test_system_text_personal_group_and_style():
    assert system_text(P) == SYS
    group = Persona("Mira", "Crag crew", "discord", dt.date(2024, 3, 11), group="Crag crew",
                    style="Writes in lowercase.")
    assert system_text(group) == (
        'You are Mira in the group "Crag crew" on Discord. Today is Monday 2024-03-11.\n'
        "Writes in lowercase.\n"
        "Reply as Mira: your own words and style, one message per line."
    )


def test_module_doctests():
    assert doctest.testmod(twin.prompts).failed == 0


# -- turns from stored messages ----------------------------------------------------------------------------------

def test_bursts_media_stickers_and_forwards():
    messages = [
        msg(1, False, "hey"), msg(2, False, "are we still on?\nfor saturday"),
        msg(3, True, "yes!"), msg(4, True, "", kind="photo"), msg(5, True, "😂", kind="sticker"),
        msg(6, False, "", kind="voice"),
        msg(7, True, "", kind="photo"), msg(8, True, "", kind="voice"),
        msg(9, False, "look at this view", kind="photo"),
        msg(10, True, "the forecast", forwarded=True), msg(11, True, "see?"),
        msg(12, False, ""),  # nothing to show: skipped, and it does not split the owner's burst below
        msg(13, True, "", kind="sticker"), msg(14, True, "", kind="placeholder"),
    ]
    assert to_turns(messages, group=False) == [
        c("hey", "are we still on? for saturday"),
        o("yes!", "[photo]", "😂"),
        c("[voice message]", target=False),
        o("[photo]", "[voice message]", target=False),
        c("[photo] look at this view"),
        o("[forwarded] the forecast", "see?", "[sticker]", "[unavailable]", target=False),
    ]


def test_group_lines_name_their_sender_and_merge_into_one_turn():
    messages = [
        msg(1, False, "did anyone book the hut?", name="Tomas"),
        msg(2, False, "not yet", name="Lena"),
        msg(3, True, "I can do it tonight"),
        msg(4, False, "great", name=None),
    ]
    assert to_turns(messages, group=True) == [
        c("Tomas: did anyone book the hut?", "Lena: not yet"),
        o("I can do it tonight"),
        c("Someone: great"),
    ]


def test_turn_validation():
    assert Turn("owner", ["  hi  "]).lines == ("hi",)
    with pytest.raises(ValueError, match="role"):
        Turn("assistant", ("hi",))
    with pytest.raises(ValueError, match="single-line"):
        Turn("owner", ("a\nb",))
    with pytest.raises(ValueError, match="single-line"):
        Turn("owner", ())
    with pytest.raises(ValueError, match="alternate"):
        render(Conversation(P, (c("a"), c("b"), o("c"))), CHATML)


# -- the loss mask -------------------------------------------------------------------------------------------------

CONV = Conversation(P, (c("hey are we still on?"), o("yes!", "meet at 10"), c("ok 😂"), o("see you there")))


def test_chatml_render_exact_text_and_mask():
    r = render(CONV, CHATML)
    assert text(CHATML, r) == (
        f"<|im_start|>system\n{SYS}<|im_end|>\n"
        "<|im_start|>user\nhey are we still on?<|im_end|>\n"
        "<|im_start|>assistant\nyes!\nmeet at 10<|im_end|>\n"
        "<|im_start|>user\nok 😂<|im_end|>\n"
        "<|im_start|>assistant\nsee you there<|im_end|>\n"
    )
    assert runs(CHATML, r) == ["yes!\nmeet at 10<|im_end|>", "see you there<|im_end|>"]
    assert (r.turns_kept, r.first_turn) == (4, 0)
    # The newline after each end of turn is not learned.
    nl = CHATML.convert_tokens_to_ids("Ċ")
    assert r.input_ids[-1] == nl and r.loss_mask[-1] is False


@pytest.mark.parametrize("name", TOKENIZERS)
def test_mask_is_owner_content_and_end_of_turn(name):
    tok, eot = TOKENIZERS[name], EOT[name]
    r = render(CONV, tok)
    assert len(r.input_ids) == len(r.loss_mask)
    assert runs(tok, r) == [f"yes!\nmeet at 10{eot}", f"see you there{eot}"]
    # The ids are what the template's own tokenization gives: no second BOS, no stray special tokens.
    assert r.input_ids == template_ids(tok, CONV.turns)


def test_gemma_folds_the_persona_into_the_first_user_turn():
    r = render(CONV, GEMMA)
    assert text(GEMMA, r).startswith(f"<bos><start_of_turn>user\n{SYS}\n\nhey are we still on?<end_of_turn>\n")
    assert r.input_ids.count(GEMMA.bos_token_id) == 1


def test_all_trains_on_contact_turns_too():
    assert runs(CHATML, render(CONV, CHATML, train_on="all")) == [
        "hey are we still on?<|im_end|>", "yes!\nmeet at 10<|im_end|>", "ok 😂<|im_end|>", "see you there<|im_end|>",
    ]
    # Folded with the persona, only the contact's own words are learned.
    assert runs(GEMMA, render(CONV, GEMMA, train_on="all"))[0] == "hey are we still on?<end_of_turn>"


def test_group_conversation_masks_only_the_owner():
    group = Persona("Mira", "Crag crew", "telegram", dt.date(2024, 3, 9), group="Crag crew")
    conv = Conversation(group, (c("Tomas: did anyone book the hut?", "Lena: not yet"), o("I can do it tonight")))
    r = render(conv, CHATML)
    assert "<|im_start|>user\nTomas: did anyone book the hut?\nLena: not yet<|im_end|>" in text(CHATML, r)
    assert runs(CHATML, r) == ["I can do it tonight<|im_end|>"]


def test_context_only_turns_are_never_targets_and_trailing_turns_are_left_out():
    conv = Conversation(P, (
        c("hey"), o("[forwarded] the forecast", target=False), c("nice"), o("[photo]", target=False),
        c("so?"), o("yes, saturday"), c("great"), o("[voice message]", target=False),
    ))
    r = render(conv, CHATML)
    assert runs(CHATML, r) == ["yes, saturday<|im_end|>"]
    assert (r.first_turn, r.turns_kept) == (0, 6)
    assert text(CHATML, r).endswith("<|im_start|>assistant\nyes, saturday<|im_end|>\n")
    with pytest.raises(NoTarget):
        render(Conversation(P, conv.turns[:5]), CHATML)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_conversation_starting_with_the_owner(name):
    tok, eot = TOKENIZERS[name], EOT[name]
    conv = Conversation(P, (o("morning!", "coffee later?"), c("sure")))
    r = render(conv, tok)
    assert runs(tok, r) == [f"morning!\ncoffee later?{eot}"]
    assert r.turns_kept == 1
    assert r.input_ids == template_ids(tok, conv.turns[:1])
    if name.startswith("gemma"):  # a user turn must come first: the persona is that turn
        assert text(tok, r) == (
            f"<bos><start_of_turn>user\n{SYS}<end_of_turn>\n"
            "<start_of_turn>model\nmorning!\ncoffee later?<end_of_turn>\n"
        )


@pytest.mark.parametrize("name", TOKENIZERS)
def test_cut_context_drops_the_oldest_turns(name):
    tok, eot = TOKENIZERS[name], EOT[name]
    full = render(CONV, tok)
    tail = Conversation(P, CONV.turns[2:])
    need = len(render(tail, tok).input_ids)
    assert need < len(full.input_ids)
    r = render(CONV, tok, max_tokens=need)
    assert (r.first_turn, r.turns_kept) == (2, 2)
    alone_tail = render(tail, tok)
    assert (r.input_ids, r.loss_mask) == (alone_tail.input_ids, alone_tail.loss_mask)
    assert runs(tok, r) == [f"see you there{eot}"]
    assert render(CONV, tok, max_tokens=len(full.input_ids)) == full
    alone = len(render(Conversation(P, CONV.turns[3:]), tok).input_ids)
    r = render(CONV, tok, max_tokens=alone)
    assert (r.first_turn, r.turns_kept) == (3, 1) and len(r.input_ids) == alone
    with pytest.raises(DoesNotFit):
        render(CONV, tok, max_tokens=alone - 1)


def test_control_tokens_typed_in_a_message_stay_text():
    conv = Conversation(P, (c("what is <|im_end|>?"), o("no idea <|im_start|>")))
    r = render(conv, CHATML)
    end, start = CHATML.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
    assert r.input_ids.count(end) == 3 and r.input_ids.count(start) == 3
    assert runs(CHATML, r) == ["no idea <\u200b|im_start|><|im_end|>"]


# -- drafting prompts ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TOKENIZERS)
def test_drafting_prompt_is_the_training_sample_cut_before_the_reply(name):
    tok = TOKENIZERS[name]
    for turns in (CONV.turns, CONV.turns[:2], CONV.turns[1:2]):
        _assert_prefix(tok, turns)
    gen = render_prompt(P, CONV.turns[:3], tok)
    assert gen.endswith("<|im_start|>assistant\n" if EOT[name] == "<|im_end|>" else "<start_of_turn>model\n")
    assert prompt_ids(P, CONV.turns[:3], tok) == template_ids(tok, CONV.turns[:3], generation=True)


def _assert_prefix(tok, turns):
    r = render(Conversation(P, turns), tok)
    # The first token of the last masked run is where the owner's last reply starts.
    starts = [i for i, m in enumerate(r.loss_mask) if m and (i == 0 or not r.loss_mask[i - 1])]
    cut = starts[-1]
    assert r.input_ids[:cut] == prompt_ids(P, turns[:-1], tok)


def test_prompt_ids_cut_to_fit():
    full = prompt_ids(P, CONV.turns[:3], CHATML)
    last_only = prompt_ids(P, CONV.turns[2:3], CHATML)
    assert prompt_ids(P, CONV.turns[:3], CHATML, max_tokens=len(full)) == full
    assert prompt_ids(P, CONV.turns[:3], CHATML, max_tokens=len(last_only)) == last_only
    with pytest.raises(DoesNotFit):
        prompt_ids(P, CONV.turns[:3], CHATML, max_tokens=len(last_only) - 1)


words = st.sampled_from(["hey", "ok", "yes!", "😂", "see you", "at 10:30", "lol", "the rope", "a", "t", "  x", "?"])
lines = st.lists(st.lists(words, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(st.booleans(), st.lists(lines, min_size=1, max_size=6), st.sampled_from(sorted(TOKENIZERS)))
def test_property_mask_and_prefix(owner_first, bursts, name):
    tok, eot = TOKENIZERS[name], EOT[name]
    roles = ["owner", "contact"] if owner_first else ["contact", "owner"]
    turns = [Turn(roles[i % 2], tuple(b)) for i, b in enumerate(bursts)]
    owners = [t for t in turns if t.role == "owner"]
    if not owners:
        return
    r = render(Conversation(P, turns), tok)
    assert runs(tok, r) == [t.content + eot for t in owners]
    if turns[-1].role == "owner":
        _assert_prefix(tok, turns)


# -- format v2: memory -----------------------------------------------------------------------------------------

from twin.prompts import FORMAT_VERSION, Recalled  # noqa: E402

MEMORY = (Recalled(dt.datetime(2024, 2, 11, 18, 5, tzinfo=dt.timezone.utc), "Tomas", "we got a puppy, Biscuit"),
          Recalled(dt.datetime(2024, 2, 11, 18, 6, tzinfo=dt.timezone.utc), "Mira", "Biscuit! photos please"))
PM = Persona("Mira", "Tomas", "telegram", dt.date(2024, 3, 9), notes="climbing partner", memory=MEMORY)


def test_v2_memory_is_a_block_of_the_system_message_with_no_loss():
    assert FORMAT_VERSION == 2
    r = render(Conversation(PM, CONV.turns), CHATML)
    assert text(CHATML, r).startswith(
        "<|im_start|>system\nYou are Mira chatting with Tomas on Telegram. Today is Saturday 2024-03-09.\n"
        "About Tomas: climbing partner\nFrom earlier conversations:\n"
        "[2024-02-11] Tomas: we got a puppy, Biscuit\n[2024-02-11] Mira: Biscuit! photos please\n"
        "Reply as Mira: your own words and style, one message per line.<|im_end|>\n")
    assert runs(CHATML, r) == ["yes!\nmeet at 10<|im_end|>", "see you there<|im_end|>"]  # memory carries no loss
    # Without memory v2 is v1, token for token: v1 adapters keep drafting with v1.
    assert render(Conversation(replace_memory(PM, ()), CONV.turns), CHATML).input_ids == render(CONV, CHATML).input_ids


def replace_memory(p, memory):
    import dataclasses
    return dataclasses.replace(p, memory=memory)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_v2_ids_are_the_templates_and_the_draft_prompt_is_the_sample_cut(name):
    tok, eot = TOKENIZERS[name], EOT[name]
    r = render(Conversation(PM, CONV.turns), tok)
    assert r.input_ids == template_ids(tok, CONV.turns, persona=PM)
    assert runs(tok, r) == [f"yes!\nmeet at 10{eot}", f"see you there{eot}"]
    assert prompt_ids(PM, CONV.turns[:3], tok) == template_ids(tok, CONV.turns[:3], persona=PM, generation=True)
