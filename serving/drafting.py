"""Drafting: what just arrived from a contact, in the context of the current conversation, to n reply candidates.

The prompt is the training format exactly (`twin.prompts.prompt_ids`): the chat's persona as training builds
it (`twin.prompts.chat_persona`, dated by the conversation's first message, as training dates each
session), then the current conversation from the store (the messages since the last silence longer than the
session gap; none when the last message is older than that), with the incoming messages appended as the
contact's turn. So a draft's prompt is a training sample of that conversation cut before the owner's reply.
With memory (format twin-chat v2, `DraftSettings.memory`), the persona also carries what retrieval
(twin/memory.py) recalls for the contact's lines of this conversation from the chat's earlier conversations, as
training gave each sample the memory of the conversations before it.
A prompt longer than `max_prompt_tokens` is made to fit (`fit`), never refused: the oldest turns go first, then
an overlong persona's notes, then the middle of the incoming messages (`shorten`), so their end stays.

The backend is asked for more candidates than wanted (as many as the share kept so far needs, at most
`oversample` times: serving.oversampling), each is split into the burst's
messages (`split_reply`), bad ones are dropped (`reject_reason`: empty, a role header or a speaker's "Name:",
a copy of the incoming message, a loop, far longer than the owner writes to this contact, an emoji flood),
near-duplicates too (`similarity`); while fewer than n remain, it asks again with another seed, a bounded
number of times. The result has n candidates when the model gave that many usable ones, else fewer, never
none: that raises NoDraft, which says how many were rejected for what (never their text).

    twin draft --contact "Tomas Berg" --n 3 --json "are we still on for saturday?" "I can bring the rope"
    twin chat --contact "Tomas Berg"
"""

from __future__ import annotations

import logging
import math
import random
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from serving.backends import Backend
from serving.fitting import fit
from serving.oversampling import Acceptance
from serving.personas import ContactProfile, measure
from twin.config import DraftingConfig
from twin.emoji import count_emoji, is_emoji
from twin.text import edit_distance
from twin.errors import ConfigError, NotFound, TwinError
from twin.memory import MemoryOptions, contact_lines, days, recall
from twin.prompts import GROUP_TYPES, Persona, Turn, chat_persona, to_turns
from twin.sessions import DEFAULT_GAP_SECONDS, session_starts
from twin.store import ChatKey, Store, StoredMessage

log = logging.getLogger(__name__)

# Text that ends a turn or starts the next one, when a backend let it through: the reply ends there.
END_MARKERS = ("<|im_end|>", "<|im_start|>", "<end_of_turn>", "<start_of_turn>", "<|eot_id|>",
               "<|start_header_id|>", "<|endoftext|>", "</s>")
ROLE_HEADERS = frozenset({"user", "assistant", "system", "model"})


class NoDraft(TwinError):
    """The model gave no usable candidate in all its tries."""


@dataclass(frozen=True)
class DraftRequest:
    """A reply wanted in chat `contact` to `incoming` (the messages that just arrived, not yet stored).

    `sender` names who wrote them in a group (shown as "Name: " before each line, as in training); `seed`
    None draws one, so "regenerate" gives new candidates. `notes` False leaves the owner's notes on the contact
    out of the persona: where the reader of the reply is the one who could ask the twin to repeat them (Discord).
    """

    contact: ChatKey
    incoming: Sequence[str] = ()
    n: int = 3
    adapter: str | None = None
    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    sender: str | None = None
    # The conversation so far, when it is not the store's (`twin chat` keeps its own); None: the store's.
    session: tuple[StoredMessage, ...] | None = None
    notes: bool = True

    @classmethod
    def from_config(cls, drafting: DraftingConfig, contact: ChatKey, incoming: Sequence[str] = (), *,
                    n: int | None = None, **fields: Any) -> DraftRequest:
        """A request with twin.toml's [drafting] n, max_new_tokens, temperature and top_p; `n` None (or 0) is the
        section's, `fields` are the request's others (adapter, seed, sender, session, notes)."""
        return cls(contact, incoming, n=n or drafting.n, max_new_tokens=drafting.max_new_tokens,
                   temperature=drafting.temperature, top_p=drafting.top_p, **fields)

    def __post_init__(self) -> None:
        object.__setattr__(self, "incoming", tuple(self.incoming))
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Candidate:
    text: str  # the messages joined by line breaks
    messages: list[str]


@dataclass(frozen=True)
class Candidates:
    candidates: list[Candidate]
    adapter: str  # the adapter's name, or "base"
    latency_ms: float
    prompt_tokens: int
    attempts: int = 1
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> candidates dropped
    prompt_ids: tuple[int, ...] = ()  # the exact prompt (kept with a live draft, for learning from its outcome)
    remembered: tuple[str, ...] = ()  # the days memory recalled passages from ("3 Mar"), for the card

    def to_json(self) -> dict:
        """The `twin draft --json` object (DESIGN.md), plus prompt_tokens."""
        return {"candidates": [{"text": c.text, "messages": list(c.messages)} for c in self.candidates],
                "adapter": self.adapter, "latency_ms": round(self.latency_ms, 1), "prompt_tokens": self.prompt_tokens}


@dataclass(frozen=True)
class DraftSettings:
    """How drafts are made. `owner_name` and `notes` as for training (twin.toml's owner.name and contacts' notes);
    `scrub` is applied to every message's text when the adapter was trained on scrubbed text (twin.pii.scrub).
    The session gap is the store's (what ingest used)."""

    owner_name: str | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    max_turns: int = 12
    max_prompt_tokens: int = 896
    oversample: int = 2  # at most this many candidates asked per one wanted; fewer as `acceptance` allows
    retries: int = 2
    similarity: float = 0.8
    scrub: Callable[[str], str] | None = None
    acceptance: Acceptance = field(default_factory=Acceptance, compare=False)  # shared by this settings' drafts
    memory: MemoryOptions | None = None  # None: no memory (base config, or an adapter of format v1)


@dataclass(frozen=True)
class DraftingParts:
    """What drafting needs: a backend, the adapter to ask for (None: the base model) and the settings."""

    backend: Backend
    adapter: str | None
    settings: DraftSettings
    # Asked before each draft, when given: the adapter to use now (a version `twin learn` promoted, or one
    # `twin adapters use` chose, takes over without a restart).
    pick: Callable[[], str | None] | None = None


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    persona: Persona
    turns: tuple[Turn, ...]
    profile: ContactProfile
    names: tuple[str, ...]  # who speaks in this chat, for the speaker-prefix guard


# -- the prompt ----------------------------------------------------------------------------------------------

def current_session(messages: Sequence[StoredMessage], now: datetime, gap: int) -> list[StoredMessage]:
    """The messages of the conversation going on at `now`: those after the last silence longer than `gap`
    seconds, or none when the last message is more than `gap` before now (the incoming one starts anew)."""
    times = [int(m.time.timestamp()) for m in messages]
    if not times or int(now.timestamp()) - times[-1] > gap:
        return []
    return list(messages[session_starts(times, gap)[-1]:])


def incoming_messages(
    texts: Sequence[str], now: datetime, sender_id: str, sender_name: str | None
) -> list[StoredMessage]:
    """The just-arrived messages as stored messages of the contact at `now` (blank ones left out)."""
    return [StoredMessage(f"incoming-{i}", sender_id, sender_name, False, now, t, "text", False, None)
            for i, t in enumerate(texts) if t.strip()]


def build_prompt(store: Store, request: DraftRequest, tokenizer, settings: DraftSettings, now: datetime) -> Prompt:
    """The drafting prompt for a request: persona, current conversation plus the incoming turn, as token ids."""
    key = request.contact
    chat = next((c for c in store.chats() if (c.platform, c.id) == (key.platform, key.chat_id)), None)
    if chat is None:
        raise NotFound(f"{key.platform}:{key.chat_id}: no such chat in the store; ingest an export that has it")
    history = store.chat_messages(key)
    gap = int(store.get_meta("session_gap") or DEFAULT_GAP_SECONDS)
    others = Counter(m.sender_id for m in history if not m.from_owner)
    sender_id = others.most_common(1)[0][0] if others else "contact"
    session = list(request.session) if request.session is not None else current_session(history, now, gap)
    session += incoming_messages(request.incoming, now, sender_id, request.sender)
    if settings.scrub:
        session = [replace(m, text=settings.scrub(m.text)) for m in session]
    group = chat.type in GROUP_TYPES
    turns = to_turns(session, group)[-settings.max_turns:]
    if turns and turns[-1].role == "owner":
        raise ConfigError(f"{key.platform}:{key.chat_id}: the last message here is yours; "
                          "pass the contact's message to reply to")
    owner = settings.owner_name or store.owner_name() or "Owner"
    date = session[0].time.date() if session else now.date()
    persona = replace(chat_persona(chat, history, owner, settings.notes if request.notes else {}), date=date)
    if settings.memory is not None:
        before = session[0].time if session else now
        persona = replace(persona, memory=recall(store, key, contact_lines(session), before, owner, settings.memory,
                                                 lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]),
                                                 settings.scrub))
    persona, turns, ids = fit(persona, turns, tokenizer, settings.max_prompt_tokens)
    names = {persona.owner, persona.contact, *(m.sender_name for m in session if m.sender_name)}
    return Prompt(ids, persona, tuple(turns), measure(history, gap), tuple(sorted(names)))


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


# -- drafting ------------------------------------------------------------------------------------------------

def draft(store: Store, backend: Backend, request: DraftRequest, settings: DraftSettings, now: datetime) -> Candidates:
    """n reply candidates for a request (see the module docstring); raises NoDraft when none is usable."""
    started = time.perf_counter()
    prompt = build_prompt(store, request, backend.tokenizer, settings, now)
    incoming = request.incoming or next((t.lines for t in reversed(prompt.turns) if t.role == "contact"), ())
    guard = guard_for(prompt.profile, prompt.names, incoming)
    seed = request.seed if request.seed is not None else random.randrange(2**31)
    greedy = request.temperature <= 0  # greedy decoding gives one answer however often it is asked
    kept: list[Candidate] = []
    rejected: Counter = Counter()
    attempts = 0
    while attempts <= settings.retries and len(kept) < request.n:
        need = request.n - len(kept)
        ask = 1 if greedy else settings.acceptance.ask(request.adapter, need, need * settings.oversample)
        before = len(kept)
        texts = backend.complete(prompt.ids, n=ask, max_new_tokens=request.max_new_tokens,
                                 temperature=request.temperature, top_p=request.top_p, seed=seed + attempts,
                                 adapter=request.adapter)
        attempts += 1
        for text in texts:
            messages = split_reply(text)
            reason = reject_reason(messages, guard)
            joined = "\n".join(messages)
            if reason is None and not dedupe([joined], settings.similarity, [c.text for c in kept]):
                reason = "duplicate"
            if reason:
                rejected[reason] += 1
            else:
                kept.append(Candidate(joined, messages))
        if greedy:
            break
        settings.acceptance.record(request.adapter, len(kept) - before, len(texts))
    latency = (time.perf_counter() - started) * 1000
    log.info("draft %s:%s adapter=%s backend=%s prompt_tokens=%d kept=%d rejected=%s attempts=%d in %.0f ms",
             request.contact.platform, request.contact.chat_id, request.adapter or "base", backend.name,
             len(prompt.ids), len(kept), dict(rejected), attempts, latency)
    if not kept:
        why = ", ".join(f"{r} {k}" for r, k in rejected.most_common()) or "no completions"
        raise NoDraft(f"no usable reply in {attempts} tries ({why}); try again, raise the temperature, "
                      "or retrain the adapter on more of your messages")
    return Candidates(kept[:request.n], request.adapter or "base", latency, len(prompt.ids), attempts, dict(rejected),
                      tuple(prompt.ids), tuple(days(prompt.persona.memory)))
