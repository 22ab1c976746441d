"""The approval card (bot/cards.py) as Telegram reads it: whatever the contact wrote and whatever the draft says,
the card parses as Telegram's HTML (tests/telegram_html.py, tdlib's rules), fits 4096 UTF-16 units after entity
parsing, and shows the candidate whole, or offers no Send for it."""

from __future__ import annotations

import doctest
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

import bot.cards
from bot.cards import MAX_TEXT_LENGTH, card_text, pieces, utf16
from bot.drafts import ChatRef, Draft, State, utc
from bot.telegram_relay import keyboard
from telegram_html import formatted

T0 = utc(1_800_000_000)
TEXT = st.text(alphabet=st.sampled_from("a &<>\"'é😀\n"), max_size=5000)


def draft(candidate: str, **kw) -> Draft:
    return Draft(id=7, chat=ChatRef("telegram", "BC1", "2002"), contact_id="user2002", answers=("1",),
                 candidates=(candidate, "other"), created_at=T0, updated_at=T0,
                 expires_at=T0 + timedelta(hours=23), **kw)


def test_module_doctests():
    assert doctest.testmod(bot.cards).failed == 0


@settings(max_examples=150, deadline=None)
@given(incoming=st.lists(TEXT, max_size=8), candidate=TEXT.filter(str.strip), name=TEXT,
       note=st.sampled_from(["", "send me the text to send instead", "x & y " * 100]))
def test_every_card_parses_fits_and_never_hides_the_draft(incoming, candidate, name, note):
    d = draft(candidate)
    html = card_text(d, name or "Tomas", incoming, note, now=T0)
    visible, _ = formatted(html, "HTML")  # raises what Telegram refuses with
    assert 0 < utf16(visible) <= MAX_TEXT_LENGTH
    sends = [b.callback_data for row in keyboard(d).inline_keyboard for b in row if b.text == "Send"]
    if sends:
        assert candidate in visible  # offered to send only when shown whole
    else:
        assert "too long to show whole" in visible


def test_a_draft_too_long_for_a_card_is_not_offered_to_send():
    d = draft("word " * 900)
    html = card_text(d, "Tomas", ["hi"], now=T0)
    assert "too long to show whole here" in html
    assert [b.text for row in keyboard(d).inline_keyboard for b in row] == ["Edit", "Next candidate", "Discard",
                                                                       "No reply needed"]


def test_a_settled_card_fits_with_a_long_edited_reply():
    d = draft("sure", state=State.EDITED_SENT, final_text="é" * 4096, edited=True)
    visible, _ = formatted(card_text(d, "Tomas", ["&" * 4000], now=T0), "HTML")
    assert utf16(visible) <= MAX_TEXT_LENGTH


def test_the_expiry_says_the_day_unless_it_is_today():
    d = draft("sure")
    assert f"expires {d.expires_at:%H:%M} UTC</i>" in card_text(d, "Tomas", [], now=T0 + timedelta(hours=20))
    assert f"expires {d.expires_at:%a %-d %b %H:%M} UTC" in card_text(d, "Tomas", [], now=T0)


@given(text=TEXT.filter(str.strip))
def test_pieces_keep_every_word_and_fit_telegram(text):
    out = pieces(text)
    assert all(0 < utf16(p) <= MAX_TEXT_LENGTH for p in out)
    assert "".join("".join(p.split()) for p in out) == "".join(text.split())


def test_a_card_says_from_which_days_memory_was_used():
    plain = card_text(draft("sure"), "Tomas", [], now=T0)
    assert "remembered" not in plain
    d = draft("Biscuit is fine!", remembered=("3 Mar", "14 Apr"))
    card = card_text(d, "Tomas", ["how is the dog?"], now=T0)
    assert "<i>remembered: 3 Mar, 14 Apr</i>" in card
    assert formatted(card, "HTML")[0].count("remembered: 3 Mar, 14 Apr") == 1
