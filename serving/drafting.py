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
`oversample` times: serving.oversampling; decoding stops where the rest could not change what is kept:
serving.candidates.Until), each is split into the burst's
messages (serving.candidates: `split_reply`), bad ones are dropped (`reject_reason`: empty, a role header or a speaker's "Name:",
a copy of the incoming message, a loop, far longer than the owner writes to this contact, an emoji flood),
near-duplicates too (`similarity`); while fewer than n remain, it asks again with another seed, a bounded
number of times. The result has n candidates when the model gave that many usable ones, else fewer, never
none: that raises NoDraft, which says how many were rejected for what (never their text).

    twin draft --contact "Tomas Berg" --n 3 --json "are we still on for saturday?" "I can bring the rope"
    twin chat --contact "Tomas Berg"
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from serving.backends import Backend
from serving.candidates import Until, guard_for, keep
from serving.fitting import fit
from serving.oversampling import Acceptance
from serving.personas import ContactProfile, measure
from twin.config import DraftingConfig
from twin.errors import ConfigError, NotFound, TwinError
from twin.memory import MemoryOptions, contact_lines, days, recall
from twin.prompts import GROUP_TYPES, Persona, Turn, chat_persona, to_turns
from twin.sessions import DEFAULT_GAP_SECONDS, session_starts
from twin.store import ChatKey, Store, StoredMessage

log = logging.getLogger(__name__)

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
        until = Until(guard, need, settings.similarity, tuple(c.text for c in kept))
        texts = backend.complete(prompt.ids, n=ask, max_new_tokens=request.max_new_tokens,
                                 temperature=request.temperature, top_p=request.top_p, seed=seed + attempts,
                                 adapter=request.adapter, until=until)
        attempts += 1
        usable, dropped = keep(texts, guard, settings.similarity, until.kept)
        kept += [Candidate("\n".join(messages), messages) for messages in usable]
        rejected.update(dropped)
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
