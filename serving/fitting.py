"""Making a drafting prompt fit its token budget, whatever the contact wrote: older context goes first, then an
overlong persona is cut, then the incoming text is shortened, keeping its start and its end (the question is
usually there). Used by serving/drafting.py `build_prompt`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from twin.errors import ConfigError
from twin.prompts import DoesNotFit, Persona, Turn, prompt_ids

log = logging.getLogger(__name__)

MARKER = " […] "  # where `shorten` took text out
LONGEST_WORD = 30  # characters; a run without spaces longer than this is not a word `shorten` keeps whole


def shorten(text: str, max_tokens: int, count: Callable[[str], int], marker: str = MARKER) -> str:
    """`text` within `max_tokens` as `count` measures them (the prompt's tokenizer): whole when it fits, else its
    start and its end with `marker` between, the end twice as long as the start (the newest words, usually the
    question, matter most), cut between words where there are spaces; "" when not even the marker fits.

    >>> words = lambda s: len(s.split())
    >>> shorten("one two three four five six seven eight nine ten eleven twelve", 7, words)
    'one two […] nine ten eleven twelve'
    >>> shorten("so, long story. are we still on?", 4, words), shorten("abcdefghijklmnopqrstuvwxyz", 11, len)
    ('so, […] still on?', 'ab […] wxyz')
    """
    if count(text) <= max_tokens:
        return text
    if count(marker.strip()) > max_tokens:
        return ""
    spaced = re.search(r"\s", text) is not None
    fits, over = 0, len(text)  # characters kept: `fits` fits, `over` does not
    while over - fits > 1:
        keep = (fits + over) // 2
        if count(_ends(text, keep, marker, spaced)) <= max_tokens:
            fits = keep
        else:
            over = keep
    return _ends(text, fits, marker, spaced)


def _ends(text: str, keep: int, marker: str, spaced: bool) -> str:
    """`keep` characters of `text`, a third from its start and the rest from its end. In a `spaced` text, a piece
    that begins or ends inside a word goes without that word, unless the piece is one run of more than
    `LONGEST_WORD` characters (a link): that, and text without spaces, is cut where it must be."""
    h = keep // 3
    head, tail = text[:h], text[len(text) - (keep - h):] if keep > h else ""
    if spaced and h < len(text) and not text[h].isspace():
        inner = re.search(r"\s\S*$", head)
        head = head[:inner.start()] if inner else head if len(head) > LONGEST_WORD else ""
    if spaced and tail and not text[-len(tail) - 1].isspace():
        inner = re.match(r"\S*\s", tail)
        tail = tail[inner.end():] if inner else tail if len(tail) > LONGEST_WORD else ""
    return (head.rstrip() + marker + tail.lstrip()).strip()


def fit(persona: Persona, turns: Sequence[Turn], tokenizer, max_tokens: int) -> tuple[Persona, list[Turn], list[int]]:
    """The persona, the turns and the prompt's ids within `max_tokens`; a prompt that fits is left as it is.

    What gives way, in this order: the oldest turns, whole (`prompt_ids`); the persona's notes and style, to half of
    the budget, when the persona takes more; the newest turn (the incoming messages), cut by `shorten` to what is
    left, so its start and its end (the question) stay. Raises ConfigError when not even that fits.
    """
    turns = list(turns)
    try:
        return persona, turns, prompt_ids(persona, turns, tokenizer, max_tokens)
    except DoesNotFit:
        pass

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def frame(p: Persona) -> int:  # the prompt with a one-character message in the newest turn's place
        return len(prompt_ids(p, [Turn(turns[-1].role, ("…",))] if turns else [], tokenizer))

    before, size = persona, frame(persona)
    for name in ("notes", "style") * 2:  # twice: a cut estimated in tokens can come out a little long
        text = getattr(persona, name)
        if size > max_tokens // 2 and text:
            persona = replace(persona, **{name: shorten(text, max(0, count(text) - (size - max_tokens // 2)), count)})
            size = frame(persona)
    if persona != before:
        log.info("prompt: persona cut to fit %d tokens (%d -> %d chars of notes)", max_tokens, len(before.notes),
                 len(persona.notes))
        try:
            return persona, turns, prompt_ids(persona, turns, tokenizer, max_tokens)
        except DoesNotFit:
            pass
    if turns:
        last, budget = turns[-1], max_tokens - size + count("…")
        for _ in range(4):  # the turn's tokens inside the template can differ a little from its own count
            lines = [line.strip() for line in shorten(last.content, budget, count).split("\n")]
            if not any(lines):
                break
            cut = Turn(last.role, tuple(line for line in lines if line), last.target)
            ids = prompt_ids(persona, [cut], tokenizer)
            if len(ids) <= max_tokens:
                log.info("prompt: incoming turn cut to fit %d tokens (%d -> %d chars)", max_tokens,
                         len(last.content), len(cut.content))
                return persona, [cut], ids
            budget -= len(ids) - max_tokens
    raise ConfigError(f"max_prompt_tokens={max_tokens} leaves no room for the incoming message next to the "
                      f"persona ({size} tokens); raise max_prompt_tokens")


# -- candidates ----------------------------------------------------------------------------------------------
