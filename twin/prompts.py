"""The prompt format, twin-chat v2: how a conversation is shown to the model, in training and in drafting.

Training (`twin train`) renders each session with `render`, which returns the token ids and the loss mask
together; drafting renders the same persona and context with `render_prompt` / `prompt_ids`. Both go through
`_messages` and `_layout` below, so a drafting prompt is exactly a training sample cut before the owner's reply.

The shape (DESIGN.md, "Prompt format"): a system message with the persona, the contact's turns as `user`
messages (in groups each line prefixed with the sender's name), the owner's turns as `assistant` messages; a
burst of consecutive messages by one side is one turn, one message per line. The model's own chat template is
used, or `CHATML_TEMPLATE` (twin/chat_template.py) when it has none (pass the same string to vLLM with
`--chat-template`). Templates without a system role get the persona at the head of the first user message;
when such a template (or one that demands a user turn first) meets a conversation that opens with the owner,
the persona becomes a user message of its own.

Change anything here that alters rendered text and FORMAT_VERSION must go up: adapters record the format they
were trained on (twin.json). v2 adds memory: what retrieval (twin/memory.py) recalls from earlier conversations,
as a block of the system message (`Persona.memory`); it is context, so it carries no loss. Without memory v2
renders exactly as v1, which is how a v1 adapter keeps drafting: with no memory.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from twin.chat_template import MARKER, Traits, apply, defuse, marker, traits_of

if TYPE_CHECKING:
    from twin.chat import Chat
    from twin.store import StoredMessage

FORMAT_NAME = "twin-chat"
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)  # what drafting can still render: v1 is v2 without memory
MEMORY_HEADER = "From earlier conversations:"

PLATFORM_NAMES = {"telegram": "Telegram", "discord": "Discord", "whatsapp": "WhatsApp"}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# What a message without words looks like in a prompt. A caption follows the placeholder.
MEDIA = {
    "photo": "[photo]", "video": "[video]", "voice": "[voice message]", "file": "[file]",
    "sticker": "[sticker]", "placeholder": "[unavailable]",
}
FORWARDED = "[forwarded]"
ROLES = {"contact": "user", "owner": "assistant"}

Role = Literal["owner", "contact"]
TrainOn = Literal["owner", "all"]


@dataclass(frozen=True)
class Recalled:
    """One message memory recalled from an earlier conversation: when, who said it (a name), what."""

    time: dt.datetime
    speaker: str
    text: str


@dataclass(frozen=True)
class Persona:
    """Who speaks to whom: the system message. `group` is the group's title for group chats; `memory` what the
    twin remembers from earlier conversations (format v2), oldest first."""

    owner: str
    contact: str
    platform: str
    date: dt.date
    notes: str = ""
    group: str | None = None
    style: str = ""
    memory: tuple[Recalled, ...] = ()


@dataclass(frozen=True)
class Turn:
    """A burst of consecutive messages by one side, one message per line (stripped of outer whitespace).

    `target=False` marks a turn the model sees but never learns to write (see `to_turns`).
    """

    role: Role
    lines: tuple[str, ...]
    target: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(line.strip() for line in self.lines))
        if self.role not in ROLES:
            raise ValueError(f"turn role must be 'owner' or 'contact', got {self.role!r}")
        if not self.lines or any(not line or "\n" in line for line in self.lines):
            raise ValueError(f"a turn needs one or more non-empty single-line messages, got {self.lines!r}")

    @property
    def content(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Conversation:
    persona: Persona
    turns: tuple[Turn, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))


@dataclass(frozen=True)
class Rendered:
    """A training sample: ids and loss mask of equal length, from `turns[first_turn:first_turn + turns_kept]`."""

    input_ids: list[int]
    loss_mask: list[bool]
    turns_kept: int
    first_turn: int = 0


class DoesNotFit(ValueError):
    """Even the last target turn alone (with the system message) is longer than max_tokens."""


class NoTarget(ValueError):
    """The conversation has no turn to compute loss on."""


def system_text(persona: Persona) -> str:
    """The persona as a short system message.

    >>> print(system_text(Persona("Mira", "Tomas", "telegram", dt.date(2024, 3, 9), notes="climbing partner")))
    You are Mira chatting with Tomas on Telegram. Today is Saturday 2024-03-09.
    About Tomas: climbing partner
    Reply as Mira: your own words and style, one message per line.
    >>> r = Recalled(dt.datetime(2024, 2, 11, 18, 5), "Tomas", "Biscuit ate my climbing chalk")
    >>> print(system_text(Persona("Mira", "Tomas", "telegram", dt.date(2024, 3, 9), memory=(r,))))
    You are Mira chatting with Tomas on Telegram. Today is Saturday 2024-03-09.
    From earlier conversations:
    [2024-02-11] Tomas: Biscuit ate my climbing chalk
    Reply as Mira: your own words and style, one message per line.
    """
    p = persona
    where = PLATFORM_NAMES.get(p.platform, p.platform)
    who = f'in the group "{_one_line(p.group)}"' if p.group else f"chatting with {_one_line(p.contact)}"
    lines = [f"You are {_one_line(p.owner)} {who} on {where}. Today is {WEEKDAYS[p.date.weekday()]} {p.date}."]
    if p.notes.strip():
        lines.append(f"About {_one_line(p.group or p.contact)}: {_one_line(p.notes)}")
    if p.style.strip():
        lines.append(_one_line(p.style))
    if p.memory:
        lines.append(MEMORY_HEADER)
        lines += [f"[{r.time:%Y-%m-%d}] {_one_line(r.speaker)}: {_one_line(r.text)}" for r in p.memory]
    lines.append(f"Reply as {_one_line(p.owner)}: your own words and style, one message per line.")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def message_line(m: StoredMessage, group: bool) -> str:
    """One stored message as one prompt line ("" when there is nothing to show).

    Line breaks inside a message become spaces (a line is a message). Media is a placeholder with its caption
    after it, a sticker is its emoji, a forward is marked, and in groups a contact's line names its sender.
    """
    text = " ".join(part.strip() for part in m.text.splitlines() if part.strip())
    if m.kind == "text":
        line = text
    elif m.kind == "sticker":
        line = text or MEDIA["sticker"]
    else:
        line = f"{MEDIA.get(m.kind, f'[{m.kind}]')} {text}".rstrip()
    if not line:
        return ""
    if m.forwarded:
        line = f"{FORWARDED} {line}"
    if group and not m.from_owner:
        line = f"{_one_line(m.sender_name or '') or 'Someone'}: {line}"
    return line


def to_turns(messages: Sequence[StoredMessage], group: bool) -> list[Turn]:
    """Stored messages (oldest first) as alternating turns.

    Consecutive messages from the owner are one owner turn; consecutive messages from anyone else are one
    contact turn. Messages that render to nothing (empty text) are skipped. The target rule, for both roles:
    a turn is `target=False` when any of its messages was forwarded (someone else's words) or when none of
    its messages carries text of the sender's own (media without a caption, voice, files, placeholders,
    stickers without an emoji). A sticker's emoji and a caption count as text.
    """
    turns: list[Turn] = []
    burst: list[tuple[StoredMessage, str]] = []
    for m in messages:
        line = message_line(m, group)
        if not line:
            continue
        if burst and burst[-1][0].from_owner != m.from_owner:
            turns.append(_turn(burst))
            burst = []
        burst.append((m, line))
    if burst:
        turns.append(_turn(burst))
    return turns


def _turn(burst: list[tuple[StoredMessage, str]]) -> Turn:
    msgs = [m for m, _ in burst]
    target = not any(m.forwarded for m in msgs) and any(m.text.strip() for m in msgs)
    return Turn("owner" if msgs[0].from_owner else "contact", tuple(line for _, line in burst), target)


Part = tuple[int, str]  # (turn index, or -1 for the persona; text)


def _messages(persona: Persona, turns: Sequence[Turn], traits: Traits) -> list[tuple[str, list[Part]]]:
    """The messages handed to the chat template, each as its parts (joined by a blank line)."""
    _check_alternation(turns)
    persona_part = (-1, defuse(system_text(persona), traits))
    parts = [(i, defuse(t.content, traits)) for i, t in enumerate(turns)]
    first_contact = bool(turns) and turns[0].role == "contact"
    if traits.system and (first_contact or traits.owner_first):
        head = [("system", [persona_part])]
    elif first_contact:  # no system role: the persona opens the first user message
        head, parts[0] = [("user", [persona_part, parts[0]])], None
    else:  # a user turn must come first: the persona is that turn
        head = [("user", [persona_part])]
    return head + [(ROLES[turns[i].role], [p]) for i, p in enumerate(parts) if p is not None]


def _check_alternation(turns: Sequence[Turn]) -> None:
    for a, b in zip(turns, turns[1:]):
        if a.role == b.role:
            raise ValueError(f"turns must alternate between owner and contact; two {a.role} turns in a row")


def _layout(
    tokenizer: Any, traits: Traits, messages: list[tuple[str, list[Part]]], generation: bool
) -> tuple[str, dict[int, tuple[int, int]]]:
    """The rendered text and the character span of every part, found by rendering markers in their place."""
    parts = [p for _, ps in messages for p in ps]
    numbered, n = [], 0
    for role, ps in messages:
        numbered.append({"role": role, "content": "\n\n".join(marker(n + k) for k in range(len(ps)))})
        n += len(ps)
    pieces = MARKER.split(apply(tokenizer, traits.template, numbered, generation))
    if [int(p) for p in pieces[1::2]] != list(range(len(parts))):
        raise ValueError("the chat template drops, repeats or reorders message content")
    text, spans, pos = [], {}, 0
    for j, piece in enumerate(pieces):
        if j % 2:
            key, piece = parts[int(piece)]
            spans[key] = (pos, pos + len(piece))
        text.append(piece)
        pos += len(piece)
    rendered = "".join(text)
    real = [{"role": role, "content": "\n\n".join(t for _, t in ps)} for role, ps in messages]
    if apply(tokenizer, traits.template, real, generation) != rendered:
        raise ValueError("the chat template changes message content (e.g. strips or escapes it)")
    return rendered, spans


def _counts(turn: Turn, train_on: TrainOn) -> bool:
    return turn.target and (turn.role == "owner" or train_on == "all")


def render(
    conv: Conversation, tokenizer: Any, train_on: TrainOn = "owner", max_tokens: int | None = None
) -> Rendered:
    """Token ids and loss mask of a conversation, computed from the same character spans.

    The mask is True on each target turn's content and the end-of-turn text after it (`<|im_end|>` in
    ChatML), False on everything else: the system message, role headers, the line break after the end of
    turn, non-target turns. `train_on="owner"` learns target owner turns, `"all"` target contact turns too.
    Turns after the last target are left out (they would carry no loss); with `max_tokens`, the oldest turns
    are dropped whole until the sample fits. Raises NoTarget when no turn carries loss, DoesNotFit when the
    last target turn alone does not fit.
    """
    if train_on not in ("owner", "all"):
        raise ValueError(f"train_on must be 'owner' or 'all', got {train_on!r}")
    traits = traits_of(tokenizer)
    targets = [i for i, t in enumerate(conv.turns) if _counts(t, train_on)]
    if not targets:
        raise NoTarget("the conversation has no target turn")
    first, last = 0, targets[-1]
    while True:
        kept = conv.turns[first:last + 1]
        text, spans = _layout(tokenizer, traits, _messages(conv.persona, kept, traits), False)
        loss = []
        for i, turn in enumerate(kept):
            if _counts(turn, train_on):
                start, end = spans[i]
                if text.startswith(traits.eot, end):
                    end += len(traits.eot)
                elif turn.role == "owner":
                    raise ValueError(f"expected {traits.eot!r} after an assistant message in the rendered chat")
                loss.append((start, end))
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in enc["offset_mapping"]]
        ids = list(enc["input_ids"])
        if max_tokens is None or len(ids) <= max_tokens:
            return Rendered(ids, _mask(starts, loss), len(kept), first)
        if first == last:
            raise DoesNotFit(f"the last target turn needs {len(ids)} tokens, more than max_tokens={max_tokens}")
        # Drop the fewest oldest turns whose tokens cover the excess; a re-render checks the estimate.
        excess, base = len(ids) - max_tokens, bisect.bisect_left(starts, spans[0][0])
        drop = 1
        while first + drop < last and bisect.bisect_left(starts, spans[drop][0]) - base < excess:
            drop += 1
        first += drop


def _mask(starts: list[int], spans: list[tuple[int, int]]) -> list[bool]:
    """True for each token that starts inside one of the (sorted, disjoint) character spans."""
    mask, k = [], 0
    for a in starts:
        while k < len(spans) and a >= spans[k][1]:
            k += 1
        mask.append(k < len(spans) and spans[k][0] <= a)
    return mask


def api_messages(persona: Persona, turns: Sequence[Turn], tokenizer: Any) -> list[dict[str, str]]:
    """The messages as a chat API takes them (vLLM's /v1/chat/completions with the same template)."""
    traits = traits_of(tokenizer)
    return [{"role": r, "content": "\n\n".join(t for _, t in ps)} for r, ps in _messages(persona, turns, traits)]


def render_prompt(persona: Persona, turns: Sequence[Turn], tokenizer: Any) -> str:
    """The drafting prompt: the conversation so far and the header of the owner's next turn."""
    traits = traits_of(tokenizer)
    return _layout(tokenizer, traits, _messages(persona, turns, traits), True)[0]


def prompt_ids(
    persona: Persona, turns: Sequence[Turn], tokenizer: Any, max_tokens: int | None = None
) -> list[int]:
    """Token ids of `render_prompt`; with `max_tokens`, the oldest turns are dropped until it fits."""
    turns = list(turns)
    while True:
        ids = list(tokenizer(render_prompt(persona, turns, tokenizer), add_special_tokens=False)["input_ids"])
        if max_tokens is None or len(ids) <= max_tokens:
            return ids
        if len(turns) <= 1:
            raise DoesNotFit(f"the prompt needs {len(ids)} tokens, more than max_tokens={max_tokens}")
        turns = turns[1:]


# The chat types whose persona names a group rather than one contact.
GROUP_TYPES = frozenset({"group", "public_group", "channel"})


def chat_persona(chat: Chat, messages: Sequence[StoredMessage], owner: str, notes: Mapping[str, str]) -> Persona:
    """The persona of a chat with messages (its date is set per session).

    The contact is the chat's title, else the name of the other participant who wrote most; a group's title
    names the group. Notes are looked up by that name, then by "platform:chat_id", then (one-to-one chats) by
    "platform:user_id" of the other participant.
    """
    others = Counter(m.sender_id for m in messages if not m.from_owner)
    other_id = others.most_common(1)[0][0] if others else None
    other_name = next((m.sender_name for m in messages if m.sender_id == other_id and m.sender_name), None)
    group = chat.type in GROUP_TYPES
    contact = chat.title or other_name or ("Group" if group else "Contact")
    keys = [contact, f"{chat.platform}:{chat.id}"]
    if not group and other_id is not None:
        keys.append(f"{chat.platform}:{other_id}")
    note = next((notes[k] for k in keys if k in notes), "")
    return Persona(owner, contact, chat.platform, messages[0].time.date(), note, contact if group else None)
