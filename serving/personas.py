"""Who the twin writes to: the persona of a chat, and a profile of how the owner writes to that contact.

The persona itself is `twin.prompts.chat_persona`, the one training uses. `measure` reads the owner's habits
with this contact off the history (how many messages per conversation and in a row, how long, how often emoji
and all-lowercase, which language, at which hours, when last); `style_line` says it in a few words and `summary_line` adds the numbers, for `twin chat` and `/status`.

The persona's `style` stays empty in drafting prompts: training renders every persona with `style=""`, and a
line the adapter never saw would make live prompts differ from its training samples. To feed the profile to
the model, training would have to fill `style` too, from the messages *before* each session (not the whole
history, which would leak the future into older samples), and FORMAT_VERSION would go up.

    twin draft --contact "Tomas Berg" "are we still on for saturday?"
    twin chat --contact "Tomas Berg"
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from twin.emoji import count_emoji
from twin.sessions import DEFAULT_GAP_SECONDS, session_starts
from twin.store import StoredMessage

HOURS_COVERED = 0.8  # the typical hours hold this share of the owner's messages


@dataclass(frozen=True)
class ContactProfile:
    """How the owner writes in one chat. Shares are of the owner's text messages; hours are UTC.

    `active_hours` is (first hour, hour after the last), wrapping past midnight when first > last; None when
    the owner never wrote here. `language` is a code such as "en", "de", "ru", or None when unclear.
    """

    messages: int
    owner_messages: int
    conversations: int  # sessions in which the owner wrote
    per_conversation: float  # owner messages per such conversation
    per_turn: float  # median owner messages in a row
    median_length: float  # characters of an owner text message
    emoji_share: float  # owner messages with at least one emoji
    lowercase_share: float  # owner messages with letters, none of them capitals
    language: str | None
    active_hours: tuple[int, int] | None
    last_contact: dt.date | None


def measure(messages: Sequence[StoredMessage], gap: int = DEFAULT_GAP_SECONDS) -> ContactProfile:
    """The owner's profile in a chat from its messages (oldest first); `gap` splits conversations (seconds).

    >>> from twin.chat import utc
    >>> msg = lambda t, own, text: StoredMessage(str(t), "me" if own else "x", None, own, utc(t), text, "text",
    ...                                          False, None)
    >>> p = measure([msg(0, False, "Hi!"), msg(60, True, "hey 😊"), msg(120, True, "free at 6?"),
    ...              msg(90_000, True, "running late")])
    >>> p.conversations, p.per_conversation, p.per_turn, p.median_length, p.emoji_share, p.lowercase_share
    (2, 1.5, 1.5, 10.0, 0.33, 1.0)
    >>> p.active_hours, str(p.last_contact)
    ((0, 2), '1970-01-02')
    """
    own = [m for m in messages if m.from_owner]
    texts = [m.text.strip() for m in own if m.kind == "text" and m.text.strip()]
    times = [int(m.time.timestamp()) for m in messages]
    starts = session_starts(times, gap)
    with_owner = sum(any(m.from_owner for m in messages[a:b]) for a, b in zip(starts, starts[1:] + [len(messages)]))
    cased = [t for t in texts if any(c.isalpha() and c.lower() != c.upper() for c in t)]
    return ContactProfile(
        messages=len(messages),
        owner_messages=len(own),
        conversations=with_owner,
        per_conversation=round(len(own) / with_owner, 2) if with_owner else 0.0,
        per_turn=float(statistics.median(_bursts(messages, set(starts)))) if own else 0.0,
        median_length=float(statistics.median(len(t) for t in texts)) if texts else 0.0,
        emoji_share=_share(sum(count_emoji(t) > 0 for t in texts), len(texts)),
        lowercase_share=_share(sum(t == t.lower() for t in cased), len(cased)),
        language=language_hint(texts),
        active_hours=active_hours([m.time.hour for m in own]),
        last_contact=messages[-1].time.date() if messages else None,
    )


def _share(k: int, n: int) -> float:
    return round(k / n, 2) if n else 0.0


def _bursts(messages: Sequence[StoredMessage], starts: set[int]) -> list[int]:
    """Lengths of the owner's runs of consecutive messages; a new conversation (index in `starts`) ends a run."""
    runs, run = [], 0
    for i, m in enumerate(messages):
        if i in starts and run:
            runs, run = runs + [run], 0
        if m.from_owner:
            run += 1
        elif run:
            runs, run = runs + [run], 0
    return runs + [run] if run else runs


def active_hours(hours: Sequence[int], covered: float = HOURS_COVERED) -> tuple[int, int] | None:
    """The shortest span of hours of the day (wrapping past midnight) that holds `covered` of the hours given.

    Returns (first hour, hour after the last); the earliest start wins a tie.

    >>> active_hours([9, 10, 10, 11, 12, 20])
    (9, 13)
    >>> active_hours([22, 23, 23, 0, 1, 14])
    (22, 2)
    >>> active_hours([]) is None
    True
    """
    if not hours:
        return None
    counts = Counter(h % 24 for h in hours)
    need = covered * len(hours) - 1e-9
    for width in range(1, 25):
        for start in range(24):
            if sum(counts[(start + k) % 24] for k in range(width)) >= need:
                return start, (start + width) % 24
    raise AssertionError("unreachable: 24 hours hold every message")


def hours_text(span: tuple[int, int] | None) -> str:
    """`(9, 13)` -> '09-13 UTC'; `(22, 2)` -> '22-02 UTC'; 20 hours or more -> 'any time'; None -> 'unknown'."""
    if span is None:
        return "unknown"
    start, end = span
    return "any time" if (end - start) % 24 in (0, *range(20, 24)) else f"{start:02d}-{end:02d} UTC"


# -- language ------------------------------------------------------------------------------------------------

# A few very frequent, distinctive short words per language (enough for a hint, not an identification).
STOPWORDS = {
    "en": "the and you is to it that of what are not have for with but this just yeah i'm don't",
    "de": "und ich nicht das ist du die der mit auf auch noch aber wir mal schon bin",
    "fr": "je et le les pas est tu que des une pour avec mais oui c'est ça suis",
    "es": "que el los no es por pero con una qué sí yo muy está estoy",
    "it": "che di non il è per sono ma ho con anche ciao sì",
    "pt": "não você para com um uma mas tá sim então estou",
    "nl": "en het een ik niet je dat met op maar ook wel heb",
    "sv": "och inte jag det är på till som med har vi ska bara",
    "no": "og ikke jeg det er på til som med har vi skal bare hva",
    "da": "og ikke jeg det er på til som med har vi skal lige hvad",
    "fi": "ja ei on se että mutta minä sinä mä sä joo kiitos",
    "pl": "nie jest się że na ale co tak mam jak już",
    "tr": "ve bir bu ne çok ben sen değil var için",
}
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in STOPWORDS.items()}
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "sv": "Swedish", "no": "Norwegian", "da": "Danish", "fi": "Finnish", "pl": "Polish",
    "tr": "Turkish", "ru": "Russian", "uk": "Ukrainian", "el": "Greek", "ar": "Arabic", "he": "Hebrew",
    "hi": "Hindi", "th": "Thai", "ko": "Korean", "ja": "Japanese", "zh": "Chinese",
}
# Scripts read from the Unicode character name's first word; Han is "CJK", kana "HIRAGANA"/"KATAKANA".
_SCRIPTS = {"GREEK": "el", "ARABIC": "ar", "HEBREW": "he", "DEVANAGARI": "hi", "THAI": "th", "HANGUL": "ko",
            "HIRAGANA": "ja", "KATAKANA": "ja", "CJK": "zh", "CYRILLIC": "ru", "LATIN": "latin"}
_WORD = re.compile(r"\w+(?:'\w+)?")


def language_hint(texts: Sequence[str]) -> str | None:
    """A guess at the language of some texts: by script, then (Latin) by frequent words, (Cyrillic) by letters.

    >>> language_hint(["are you coming to the party?", "yeah I think so, but not sure"])
    'en'
    >>> language_hint(["ich bin noch nicht da", "aber das ist schon gut"])
    'de'
    >>> language_hint(["привет, как дела?"])
    'ru'
    >>> language_hint(["ok", "lol"]) is None
    True
    """
    scripts: Counter = Counter()
    for text in texts:
        for ch in text:
            if ch.isalpha():
                scripts[_SCRIPTS.get(unicodedata.name(ch, "?").split(" ")[0], "other")] += 1
    if not scripts:
        return None
    script, n = scripts.most_common(1)[0]
    if n < 0.5 * sum(scripts.values()) or script == "other":
        return None
    if script == "zh" and scripts["ja"]:
        return "ja"  # Japanese mixes Han with kana; Chinese has no kana
    if script == "ru":
        letters = Counter(ch for t in texts for ch in t.lower())
        ukrainian = sum(letters[c] for c in "іїєґ")
        return "uk" if ukrainian > sum(letters[c] for c in "ыэъё") else "ru"
    if script != "latin":
        return script
    words = [w for t in texts for w in _WORD.findall(t.lower())]
    hits = sorted(((sum(w in s for w in words), lang) for lang, s in _STOPWORDS.items()), reverse=True)
    (best, lang), (second, _) = hits[0], hits[1]
    return lang if best >= 3 and best >= 1.25 * second else None


# -- in words ------------------------------------------------------------------------------------------------

def style_line(p: ContactProfile) -> str:
    """The profile in a few words ("" when the owner never wrote here).

    >>> style_line(ContactProfile(40, 22, 8, 2.75, 2.0, 14.0, 0.05, 0.9, "no", (8, 23), None))
    'short lowercase messages in Norwegian, often several in a row, rarely emoji'
    >>> style_line(ContactProfile(9, 4, 4, 1.0, 1.0, 120.0, 0.5, 0.0, "en", (8, 9), None))
    'long messages in English, lots of emoji'
    """
    if not p.owner_messages:
        return ""
    size = "short" if p.median_length < 30 else "medium-length" if p.median_length < 90 else "long"
    case = " lowercase" if p.lowercase_share >= 0.7 else ""
    lang = f" in {LANGUAGE_NAMES.get(p.language, p.language)}" if p.language else ""
    parts = [f"{size}{case} messages{lang}"]
    if p.per_turn >= 2:
        parts.append("often several in a row")
    if p.emoji_share < 0.1:
        parts.append("rarely emoji")
    elif p.emoji_share < 0.35:
        parts.append("some emoji")
    else:
        parts.append("lots of emoji")
    return ", ".join(parts)


def summary_line(p: ContactProfile) -> str:
    """The style line with its numbers, for `twin chat` and `/status`.

    >>> line = summary_line(ContactProfile(40, 22, 8, 2.75, 2.0, 14.0, 0.05, 0.9, "no", (8, 23), dt.date(2024, 3, 9)))
    >>> for part in line.split("; "): print(part)
    short lowercase messages in Norwegian, often several in a row, rarely emoji
    2.75 messages per conversation (8), median 14 characters
    active 08-23 UTC
    last 2024-03-09
    """
    if not p.owner_messages:
        last = f"; last {p.last_contact}" if p.last_contact else ""
        return f"no messages of yours here yet ({p.messages} from them){last}"
    return (f"{style_line(p)}; {p.per_conversation:g} messages per conversation ({p.conversations}), "
            f"median {p.median_length:g} characters; active {hours_text(p.active_hours)}; last {p.last_contact}")
