"""The card of a draft to copy (bot/copycards.py) on plain values: it fits Telegram's limit as Telegram counts it
(tests/telegram_html.py parses it as Telegram does), every button is one Telegram takes, and what cannot be
copied whole is never offered to copy."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.copycards import MAX_COPY, MAX_SHOWN, card
from bot.drafts import COPY, ChatRef, Draft, State, utc
from telegram_html import formatted
from twin.text import utf16


def draft(*candidates: str, **kw) -> Draft:
    return Draft(id=12, chat=ChatRef("telegram", None, "5550100102"), contact_id="user5550100102", answers=("f1",),
                 candidates=candidates, created_at=utc(0), updated_at=utc(0), origin=COPY, **kw)


def check(text: str, rows) -> None:
    visible, _ = formatted(text, "HTML")
    assert 0 < utf16(visible) <= 4096
    for b in (b for row in rows for b in row):
        assert b.text.strip() and sum(x is not None for x in (b.callback, b.copy, b.url)) == 1
        assert b.copy is None or 1 <= utf16(b.copy) <= MAX_COPY
        assert b.callback is None or len(b.callback.encode()) <= 64


def test_a_candidate_too_long_to_show_is_neither_copied_nor_used_from_the_card():
    huge = "word " * 400
    text, rows = card(draft(huge.strip(), "ok!"), "Tomas", ["hi"])
    check(text, rows)
    assert "too long to show whole" in text
    assert [[b.text for b in row] for row in rows] == [["📋 Copy 2", "✓ Used 2"], ["Next candidate", "Discard"],
                                                       ["Open chat with Tomas"]]
    assert len(huge) > MAX_SHOWN


def test_candidates_that_do_not_fit_wait_for_next():
    text, rows = card(draft(*[f"{i} " + "ab " * 460 for i in range(5)]), "Tomas", ["hi"] * 6)
    check(text, rows)
    assert "<b>1.</b>" in text and "<b>2.</b>" not in text
    assert [b.text for b in rows[0]] == ["✓ Used 1"] and rows[1][0].text == "Next candidate"


def test_settled_cards_say_what_happened_and_keep_no_buttons():
    d = draft("sure, 8?", "can't, sorry")
    sent = replace(d, state=State.SENT, shown=1, final_text="can't, sorry")
    text, rows = card(sent, "Tomas", ["hi"])
    assert text.endswith("✅ You sent reply 2") and "sure, 8?" not in text and rows == []
    mine = replace(d, state=State.EDITED_SENT, final_text="<b>no</b> & later")
    assert card(mine, "Tomas", [])[0].endswith("✅ You sent your own version: &lt;b&gt;no&lt;/b&gt; &amp; later")
    gone = replace(d, state=State.DISCARDED)
    assert card(gone, "Tomas", [])[1] == [] and "Discarded" in card(gone, "Tomas", [])[0]


def test_whatsapp_cards_have_no_chat_to_open():
    d = replace(draft("são 8h?"), chat=ChatRef("whatsapp", None, "Joana"), contact_id="Joana")
    text, rows = card(d, "Joana", ["amanhã?"])
    assert text.startswith("<b>Joana</b> · WhatsApp · reply to copy\n› amanhã?")
    assert not any(b.url for row in rows for b in row)


@settings(max_examples=60, deadline=None)
@given(candidates=st.lists(st.text(min_size=1, max_size=2000).filter(str.strip), min_size=1, max_size=7),
       incoming=st.lists(st.text(max_size=3000), max_size=8), name=st.text(max_size=100))
def test_any_card_fits_and_its_buttons_are_valid(candidates, incoming, name):
    text, rows = card(draft(*candidates), name or "?", incoming)
    check(text, rows)
