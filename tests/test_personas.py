"""Personas and contact profiles (serving.personas): the same persona as training, profiles from a history."""

from __future__ import annotations

import datetime as dt
import doctest

import pytest

import serving.personas
from serving.personas import (
    ContactProfile, active_hours, hours_text, language_hint, measure, style_line, summary_line,
)
from twin.prompts import chat_persona
from twin.chat import Chat, utc
from twin.store import StoredMessage

T0 = 1_710_000_000  # 2024-03-09 16:00 UTC
DAY = 86_400


def test_doctests():
    assert doctest.testmod(serving.personas).failed == 0


def msg(t: int, sender: str, text: str = "hi", name: str | None = None, kind: str = "text") -> StoredMessage:
    return StoredMessage(f"m{t}", sender, name, sender == "me", utc(t), text, kind, False, None)


CHATS = {
    "titled": (Chat("telegram", "2", "personal", "Tomas Berg"), [msg(T0, "u2", name="Tomas B."), msg(T0 + 1, "me")]),
    "untitled": (Chat("discord", "5", "personal"), [msg(T0, "u7", name="Lena"), msg(T0 + 1, "u8", name="Ola"),
                                                   msg(T0 + 2, "u8", name="Ola"), msg(T0 + 3, "me")]),
    "tie": (Chat("discord", "6", "personal"), [msg(T0, "u9", name="Ada"), msg(T0 + 1, "u3", name="Bo")]),
    "nameless": (Chat("whatsapp", "7", "personal"), [msg(T0, "me"), msg(T0 + 1, "u4")]),
    "group": (Chat("telegram", "9", "group", "Crag crew"), [msg(T0, "u2", name="Tomas"), msg(T0 + 1, "me")]),
    "untitled group": (Chat("telegram", "10", "group"), [msg(T0, "me")]),
    "owner only": (Chat("telegram", "11", "personal"), [msg(T0, "me")]),
}
NOTES = [
    {},
    {"Tomas Berg": "climbing partner", "Ola": "neighbour", "Crag crew": "the climbing group"},
    {"telegram:2": "by chat id", "discord:u8": "by user id", "telegram:9": "group by id", "whatsapp:u4": "by id"},
    {"discord:u7": "not the top sender", "telegram:u2": "a member, not the group"},
]


@pytest.mark.parametrize("case", CHATS)
@pytest.mark.parametrize("notes", range(len(NOTES)))
def test_persona_is_dated_by_the_first_message_and_has_no_style(case, notes):
    chat, messages = CHATS[case]
    p = chat_persona(chat, messages, "Mira", NOTES[notes])
    assert (p.owner, p.platform, p.date, p.style) == ("Mira", chat.platform, utc(T0).date(), "")


def test_persona_names_and_notes():
    chat, messages = CHATS["untitled"]
    p = chat_persona(chat, messages, "Mira", NOTES[2])
    assert (p.contact, p.notes, p.group) == ("Ola", "by user id", None)
    chat, messages = CHATS["untitled group"]
    p = chat_persona(chat, messages, "Mira", {})
    assert (p.contact, p.group) == ("Group", "Group")


def conversation(day: int, hour: int, *lines: tuple[str, str]) -> list[StoredMessage]:
    start = T0 - 16 * 3600 + day * DAY + hour * 3600  # T0's day at `hour` UTC
    return [msg(start + 60 * i, who, text) for i, (who, text) in enumerate(lines)]


def test_measure_a_chat():
    history = [
        *conversation(0, 9, ("u2", "Climb today?"), ("me", "yes"), ("me", "10 at the gym 💪")),
        *conversation(1, 10, ("me", "morning"), ("u2", "Morning!"), ("me", "coffee later? i'm at the cafe")),
        *conversation(2, 22, ("u2", "Good route today"), ("me", "it was great, my arms are done")),
        *conversation(3, 9, ("me", ""), ("u2", "nice photo")),  # a photo without a caption: no text
    ]
    history[-2] = msg(int(history[-2].time.timestamp()), "me", "", kind="photo")
    p = measure(history, gap=3600)
    assert p == ContactProfile(
        messages=10, owner_messages=6, conversations=4, per_conversation=1.5, per_turn=1.0, median_length=15.0,
        emoji_share=0.2, lowercase_share=1.0, language="en", active_hours=(9, 11), last_contact=dt.date(2024, 3, 12),
    )
    assert style_line(p) == "short lowercase messages in English, some emoji"
    assert "active 09-11 UTC" in summary_line(p) and "last 2024-03-12" in summary_line(p)


def test_measure_without_owner_messages():
    p = measure([msg(T0, "u2", "hello?")])
    assert (p.owner_messages, p.conversations, p.active_hours, p.language) == (0, 0, None, None)
    assert style_line(p) == ""
    assert summary_line(p) == "no messages of yours here yet (1 from them); last 2024-03-09"
    assert measure([]).last_contact is None


@pytest.mark.parametrize("texts, lang", [
    (["hvordan går det? jeg er ikke hjemme, vi skal bare ut", "hva skjer"], "no"),
    (["jag är inte hemma, vi ska bara ut", "och du?"], "sv"),
    (["je suis pas là, c'est pour demain", "oui avec toi"], "fr"),
    (["no sé, pero estoy muy cansada", "qué tal?"], "es"),
    (["привіт, як справи? все добре, їду додому"], "uk"),
    (["Γεια σου, τι κάνεις;"], "el"),
    (["今日は何をしますか"], "ja"),
    (["你今天做什么"], "zh"),
    (["안녕 뭐해"], "ko"),
    (["👍", "12:30"], None),
])
def test_language_hint(texts, lang):
    assert language_hint(texts) == lang


def test_active_hours_and_their_text():
    assert active_hours([23] * 5 + [0] * 5) == (23, 1)
    assert active_hours(list(range(24))) == (0, 20) and hours_text((0, 20)) == "any time"
    assert active_hours(list(range(24)), covered=1.0) == (0, 0) and hours_text((0, 0)) == "any time"
    assert hours_text((22, 17)) == "22-17 UTC" and hours_text((22, 18)) == "any time"
    assert hours_text(active_hours([7, 8, 8, 9])) == "07-10 UTC"
