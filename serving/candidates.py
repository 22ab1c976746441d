"""A completion's candidate: the burst's messages (`split_reply`), whether it is usable (`reject_reason` under
the contact's `Guard`), near-duplicates (`similarity`, `dedupe`), and `Until`: when the rest of a completion,
or the rest of the completions, cannot change which candidates a draft keeps, so decoding may stop there.
Used by serving.drafting; `Until` by the in-process backend (serving.local_backend, twin.decoding).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from serving.personas import ContactProfile
from twin.emoji import count_emoji, is_emoji
from twin.text import edit_distance

# Text that ends a turn or starts the next one, when a backend let it through: the reply ends there.
END_MARKERS = ("<|im_end|>", "<|im_start|>", "<end_of_turn>", "<start_of_turn>", "<|eot_id|>",
               "<|start_header_id|>", "<|endoftext|>", "</s>")
ROLE_HEADERS = frozenset({"user", "assistant", "system", "model"})



def split_reply(text: str) -> list[str]:
    """A completion as the burst's messages, one per line: cut at an end-of-turn marker, or at a bare role header
    after the first line (the model went on into the next turn); blank lines dropped, spaces collapsed.

    >>> split_reply("  hey!\\n\\nsee  you at 10<|im_end|>\\n<|im_start|>user\\nok")
    ['hey!', 'see you at 10']
    >>> split_reply("sure\\nuser\\nthanks"), split_reply("")
    (['sure'], [])
    """
    cut = min((i for i in (text.find(m) for m in END_MARKERS) if i >= 0), default=len(text))
    out: list[str] = []
    for line in text[:cut].splitlines():
        line = " ".join(line.split())
        if out and line.casefold() in ROLE_HEADERS:
            break
        if line:
            out.append(line)
    return out


@dataclass(frozen=True)
class Guard:
    """What a usable candidate must not be: `names` may not open a line as "Name:", `incoming` may not be
    copied, and the burst stays within `max_lines` messages, `max_line_chars` per message, `max_emoji`."""

    names: tuple[str, ...] = ()
    incoming: tuple[str, ...] = ()
    max_lines: int = 6
    max_line_chars: int = 300
    max_emoji: int = 6


def guard_for(profile: ContactProfile, names: Sequence[str], incoming: Sequence[str]) -> Guard:
    """Limits from how the owner writes here: three times their usual burst (at least 4 messages), six times
    their median length (at least 160 characters), 3 emoji where they rarely use any, else 8.

    >>> from serving.personas import ContactProfile
    >>> g = guard_for(ContactProfile(50, 20, 5, 4.0, 2.0, 40.0, 0.05, 0.5, "en", (8, 22), None), ["Tomas"], [])
    >>> g.max_lines, g.max_line_chars, g.max_emoji
    (6, 240, 3)
    """
    rare = profile.owner_messages > 0 and profile.emoji_share < 0.1
    return Guard(tuple(names), tuple(" ".join(t.split()) for t in incoming if t.strip()),
                 max(4, math.ceil(3 * profile.per_turn)), max(160, math.ceil(6 * profile.median_length)),
                 3 if rare else 8)


def reject_reason(messages: Sequence[str], guard: Guard) -> str | None:
    """Why a candidate is unusable, or None. Checked in this order:

    >>> g = Guard(names=("Tomas Berg", "Mira"), incoming=("are we still on for saturday?",))
    >>> [reject_reason(m, g) for m in ([], ["assistant", "hi"], ["Tomas: sure"], ["mira: yes"])]
    ['empty', 'role_header', 'speaker_prefix', 'speaker_prefix']
    >>> [reject_reason(m, g) for m in (["Are we still on for Saturday?"], ["ha ha ha ha ha"], list("abcdefg"))]
    ['copies_incoming', 'loop', 'too_long']
    >>> reject_reason(["😂😂😂😂😂😂😂"], g), reject_reason(["yes! 10 at the gym", "haha"], g)
    ('emoji_flood', None)
    """
    if not messages:
        return "empty"
    if messages[0].rstrip(":").casefold() in ROLE_HEADERS:
        return "role_header"
    prefixes = {p.casefold() + ":" for n in guard.names if n for p in {n.strip(), n.split()[0]} if len(p) > 1}
    if any(m.casefold().startswith(p) for m in messages for p in prefixes):
        return "speaker_prefix"
    if copies(messages, guard.incoming):
        return "copies_incoming"
    if repetitive(messages):
        return "loop"
    if len(messages) > guard.max_lines or any(len(m) > guard.max_line_chars for m in messages):
        return "too_long"
    if sum(count_emoji(m) for m in messages) > guard.max_emoji:
        return "emoji_flood"
    return None


def copies(messages: Sequence[str], incoming: Sequence[str], min_chars: int = 12) -> bool:
    """True when the reply repeats the incoming message: the whole, or a line of at least `min_chars`
    characters, nearly equal. Short echoes ("haha", "ok") are replies, not copies.

    >>> copies(["are we still on?"], ["Are we still on??"]), copies(["haha"], ["haha"])
    (True, False)
    """
    whole = normalise(" ".join(messages))
    if len(whole) >= min_chars and similarity(whole, " ".join(incoming)) >= 0.9:
        return True
    return any(len(normalise(m)) >= min_chars and similarity(m, i) >= 0.9 for m in messages for i in incoming)


def repetitive(messages: Sequence[str]) -> bool:
    """A degenerate loop: a word 3-gram three times, one line three times, a character 15 times in a row, or
    (text without spaces) a 6-character piece four times.

    >>> repetitive(["see you there see you there see you there"]), repetitive(["ok", "ok", "ok"])
    (True, True)
    >>> repetitive(["nooooooooooooooooo"]), repetitive(["no no, see you at 10", "no worries"])
    (True, False)
    """
    lines = Counter(normalise(m) for m in messages)
    if max(lines.values(), default=0) >= 3:
        return True
    text = " ".join(messages)
    words = normalise(text).split()
    if max(Counter(zip(words, words[1:], words[2:])).values(), default=0) >= 3:
        return True
    run = 1
    for a, b in zip(text, text[1:]):
        run = run + 1 if a == b and not a.isspace() else 1
        if run >= 15:
            return True
    dense = text.replace(" ", "")
    if len(dense) >= 40 and text.count(" ") * 10 < len(text):
        return max(Counter(dense[i:i + 6] for i in range(len(dense) - 5)).values()) >= 4
    return False


def normalise(text: str) -> str:
    """Case-folded words, digits and emoji, single-spaced: `normalise("Ok!!  See you 👍")` -> 'ok see you 👍'."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(c if c.isalnum() or is_emoji(c) else " " for c in text).split())


def similarity(a: str, b: str, limit: int = 300) -> float:
    """The larger of token Jaccard and 1 - normalised edit distance, on normalised text (first `limit` chars).

    >>> similarity("See you at 10!", "see you at 10"), similarity("yeah sure", "sure yeah")
    (1.0, 1.0)
    >>> round(similarity("see you at 10", "see you at 11"), 2), round(similarity("sounds good", "no way"), 2)
    (0.92, 0.18)
    """
    a, b = normalise(a)[:limit], normalise(b)[:limit]
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    wa, wb = set(a.split()), set(b.split())
    jaccard = len(wa & wb) / len(wa | wb)
    longest = max(len(a), len(b))
    if 1 - abs(len(a) - len(b)) / longest <= jaccard:  # the edit similarity cannot beat Jaccard
        return jaccard
    return max(jaccard, 1 - edit_distance(a, b) / longest)


def dedupe(texts: Sequence[str], threshold: float = 0.8, seen: Sequence[str] = ()) -> list[str]:
    """The texts that are not near-duplicates (similarity >= threshold) of an earlier one or of `seen`.

    >>> dedupe(["See you at 10!", "see you at 10", "can't today, sorry", "cant today sorry"])
    ['See you at 10!', "can't today, sorry"]
    >>> dedupe(["sure", "yes"], seen=["Sure."])
    ['yes']
    """
    kept: list[str] = []
    for t in texts:
        if all(similarity(t, k) < threshold for k in [*seen, *kept]):
            kept.append(t)
    return kept


def keep(texts: Sequence[str], guard: Guard, threshold: float, kept: Sequence[str] = ()) -> tuple[list[list[str]], list[str]]:
    """The usable candidates among `texts`, in order, as their messages (not near-duplicates of `kept` or of
    each other), and the reasons the others were dropped (one per dropped text, in order).

    >>> keep(["see you at 10", "Tomas: sure", "See you at 10!", "ok\\nbring the rope"], Guard(names=("Tomas",)), 0.8)
    ([['see you at 10'], ['ok', 'bring the rope']], ['speaker_prefix', 'duplicate'])
    """
    usable: list[list[str]] = []
    dropped: list[str] = []
    for text in texts:
        messages = split_reply(text)
        reason = reject_reason(messages, guard)
        joined = "\n".join(messages)
        if reason is None and not dedupe([joined], threshold, [*kept, *("\n".join(u) for u in usable)]):
            reason = "duplicate"
        if reason:
            dropped.append(reason)
        else:
            usable.append(messages)
    return usable, dropped


PARTIAL_SLACK = 8  # characters a line still being written may lose once its last token comes


@dataclass(frozen=True)
class Until:
    """When decoding may stop without changing the candidates a draft keeps: the first `need` usable ones, in
    the order the completions were asked (serving.drafting keeps `kept[:n]`).

    `settled(text)`: a completion still being written whose candidate is already fixed: its text holds an
    end-of-turn marker, or a role-header line after the first (`split_reply` cuts there), or its finished
    lines are already too many, one too long or too many emoji (`reject_reason`'s too_long and emoji_flood:
    more text cannot undo them). Only finished lines count: the last one may still be a partial character.
    `enough(texts)`: the finished completions 0..k-1 already give `need` usable candidates, so the later ones
    cannot be among those kept.

    >>> u = Until(Guard(names=("Tomas",), max_lines=2), need=1, threshold=0.8)
    >>> u.settled("sure\\nsee you"), u.settled("sure\\nuser\\nthanks"), u.settled("a\\nb\\nc\\nd")
    (False, True, True)
    >>> u.enough(["Tomas: hi"]), u.enough(["Tomas: hi", "on my way"])
    (False, True)
    """

    guard: Guard
    need: int
    threshold: float
    kept: tuple[str, ...] = ()  # candidates kept by earlier tries of the same draft

    def settled(self, text: str) -> bool:
        if any(m in text for m in END_MARKERS):
            return True
        lines, emoji = 0, 0
        for line in text.split("\n")[:-1]:
            line = " ".join(line.split())
            if lines and line.casefold() in ROLE_HEADERS:
                return True
            if line:
                lines += 1
                emoji += count_emoji(line)
                if len(line) > self.guard.max_line_chars:
                    return True
        last = " ".join(text.rsplit("\n", 1)[-1].split())
        return (lines > self.guard.max_lines or emoji > self.guard.max_emoji
                or len(last) > self.guard.max_line_chars + PARTIAL_SLACK)

    def enough(self, texts: Sequence[str]) -> bool:
        return len(keep(texts, self.guard, self.threshold, self.kept)[0]) >= self.need
