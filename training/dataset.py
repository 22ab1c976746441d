"""Training data: the store's sessions as prompt-format samples, split into train and held-out. Run by `twin train`.

Every chat's messages are cut into sessions exactly as ingest counts them (`session_starts` over the message
times, same gap), so session `i` here is row `i` of the `sessions` table. Each session is one candidate
sample, rendered with `twin.prompts.render`; the rules, in the order they are applied:

1. PII is scrubbed from every message's text (`scrub`), unless turned off.
2. A session with nothing to show is dropped as `empty`; one without an owner turn as `no_owner_reply`; one
   whose owner turns are all context only (media without words, forwards; see `to_turns`) as
   `owner_forwarded` when one of them was a forward, else `owner_media_only`. Any owner target turn makes a
   sample, also when the owner opened the session: starting a conversation is part of the owner's voice.
3. A session whose last owner target turn does not fit `max_tokens` even without older turns: `too_long`.
4. A sample with the same token ids as one already kept (earlier in the same chat, or in a chat read
   before) is dropped as `duplicate`, so a held-out sample never repeats a training one.
5. With `cap_per_chat`, only the chat's most recent samples are kept; the older ones are `cap_per_chat`.
6. With memory (`memory_tokens` > 0, format twin-chat v2), each session's persona carries what retrieval
   (twin/memory.py) recalls for it from strictly earlier conversations of the store, asked with the contact's
   lines of that session, exactly as drafting asks with the contact's lines of the current conversation. It is
   context: no loss on it.
7. The most recent `holdout_fraction` of each chat's remaining samples (rounded down, but at least one once
   the chat has two) is held out; the rest is training data. Train and held-out never share a session.

Nothing is dropped silently: sessions == train + held_out + sum(dropped).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from twin.chat import Chat
from twin.config import ContactConfig, IngestConfig, MemoryConfig, OwnerConfig, TelegramConfig, TrainingConfig
from twin.errors import ConfigError
from twin.memory import MemoryOptions, contact_lines, recall
from twin.pii import scrub
from twin.prompts import GROUP_TYPES, Conversation, DoesNotFit, Persona, Rendered, Turn, chat_persona, render, to_turns
from twin.sessions import DEFAULT_GAP_SECONDS, session_starts
from twin.store import Store, StoredMessage


@dataclass(frozen=True)
class DatasetOptions:
    """How `build` turns sessions into samples.

    `owner_name` (twin.toml's owner.name) overrides the name the exports give the owner; `notes` maps a
    contact's display name (or a group's title, or "platform:id") to the owner's notes on them; `seed`
    shuffles the training order. `include_live` also learns from the Telegram messages the relay stored
    (the owner's opt-in, twin.toml telegram.train_on_live); Discord's live messages are never training data
    (Discord Developer Policy: no training on message content obtained through its API).
    """

    max_tokens: int = 1024
    train_on: str = "owner"
    scrub_pii: bool = True
    cap_per_chat: int | None = None
    holdout_fraction: float = 0.1
    session_gap: int = DEFAULT_GAP_SECONDS
    owner_name: str | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    include_live: bool = False
    memory_tokens: int = 0  # the memory block's budget; 0: no memory (format v1)
    memory_scope: str = "chat"

    @classmethod
    def from_config(cls, training: TrainingConfig, ingest: IngestConfig, owner: OwnerConfig,
                    contacts: Mapping[str, ContactConfig], telegram: TelegramConfig,
                    memory: MemoryConfig | None = None) -> DatasetOptions:
        """The options twin.toml gives; `twin train` then takes the store's own session gap, where ingest
        recorded one, in place of ingest.session_gap_minutes."""
        on = memory is not None and memory.enabled
        return cls(
            memory_tokens=memory.max_tokens if on else 0, memory_scope=memory.scope if on else "chat",
            max_tokens=training.max_tokens, train_on=training.train_on, scrub_pii=training.scrub_pii,
            cap_per_chat=training.cap_per_chat, holdout_fraction=training.holdout_fraction,
            session_gap=round(ingest.session_gap_minutes * 60), owner_name=owner.name,
            notes={name: c.notes for name, c in contacts.items()}, seed=training.seed,
            include_live=telegram.train_on_live,
        )

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ConfigError(f"max_tokens must be at least 16, got {self.max_tokens}")
        if self.train_on not in ("owner", "all"):
            raise ConfigError(f"train_on must be 'owner' or 'all', got {self.train_on!r}")
        if self.cap_per_chat is not None and self.cap_per_chat < 1:
            raise ConfigError(f"cap_per_chat must be at least 1 (or unset), got {self.cap_per_chat}")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.session_gap <= 0:
            raise ConfigError(f"session_gap must be positive seconds, got {self.session_gap}")
        MemoryOptions(self.memory_tokens, self.memory_scope)  # checks both

    def memory(self, live: bool) -> MemoryOptions | None:
        return MemoryOptions(self.memory_tokens, self.memory_scope, live=live) if self.memory_tokens > 0 else None


@dataclass(frozen=True)
class Sample:
    """One session rendered for training, with where it came from and the conversation it was rendered from."""

    platform: str
    chat_id: str
    session: int  # the session's index in its chat, as in the sessions table
    start: datetime  # the session's first message, UTC
    conversation: Conversation
    rendered: Rendered

    @property
    def input_ids(self) -> list[int]:
        return self.rendered.input_ids

    @property
    def loss_mask(self) -> list[bool]:
        return self.rendered.loss_mask

    @property
    def turns(self) -> tuple[Turn, ...]:
        """The turns the rendered sample holds (older ones may have been cut to fit)."""
        r = self.rendered
        return self.conversation.turns[r.first_turn:r.first_turn + r.turns_kept]


@dataclass(frozen=True)
class Dataset:
    train: tuple[Sample, ...]  # shuffled with the options' seed
    held_out: tuple[Sample, ...]  # per chat, oldest first
    dropped: Counter
    sessions: int

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over every sample's split, provenance, ids and mask, in a fixed order (not the shuffle)."""
        h = hashlib.sha256()
        for split, samples in (("train", self.train), ("held_out", self.held_out)):
            for s in sorted(samples, key=lambda s: (s.platform, s.chat_id, s.session)):
                mask = "".join("1" if m else "0" for m in s.loss_mask)
                ids = ",".join(map(str, s.input_ids))
                h.update(f"{split}\t{s.platform}\t{s.chat_id}\t{s.session}\t{ids}\t{mask}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict:
        """Counts for the training summary and twin.json; `tokens` and `target_tokens` count the train set."""
        return {
            "sessions": self.sessions,
            "train_samples": len(self.train),
            "held_out_samples": len(self.held_out),
            "tokens": sum(len(s.input_ids) for s in self.train),
            "target_tokens": sum(sum(s.loss_mask) for s in self.train),
            "held_out_tokens": sum(len(s.input_ids) for s in self.held_out),
            "dropped": dict(sorted(self.dropped.items())),
        }


def build(store: Store, tokenizer: Any, opts: DatasetOptions = DatasetOptions()) -> Dataset:
    """Every session of every chat in the store, as train and held-out samples (rules in the module docstring)."""
    owner = opts.owner_name or store.owner_name() or "Owner"
    dropped: Counter = Counter()
    seen: set[tuple[int, ...]] = set()
    train: list[Sample] = []
    held_out: list[Sample] = []
    sessions = 0
    for chat in store.chats():
        live = opts.include_live and chat.platform == "telegram"
        messages = store.chat_messages(chat.key, live=live)
        if not messages:
            continue
        if opts.scrub_pii:
            messages = [replace(m, text=scrub(m.text)) for m in messages]
        persona = chat_persona(chat, messages, owner, opts.notes)
        remember = _remembering(store, chat, owner, tokenizer, opts, live)
        times = [int(m.time.timestamp()) for m in messages]
        bounds = session_starts(times, opts.session_gap) + [len(messages)]
        kept: list[Sample] = []
        for index, (a, b) in enumerate(zip(bounds, bounds[1:])):
            sessions += 1
            memory = remember(messages[a:b]) if remember else ()
            sample = _sample(chat, index, messages[a:b], replace(persona, memory=memory), tokenizer, opts)
            if isinstance(sample, str):
                dropped[sample] += 1
            elif tuple(sample.input_ids) in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(tuple(sample.input_ids))
                kept.append(sample)
        if opts.cap_per_chat is not None and len(kept) > opts.cap_per_chat:
            dropped["cap_per_chat"] += len(kept) - opts.cap_per_chat
            kept = kept[-opts.cap_per_chat:]
        k = held_out_count(len(kept), opts.holdout_fraction)
        train += kept[:len(kept) - k]
        held_out += kept[len(kept) - k:]
    random.Random(opts.seed).shuffle(train)
    return Dataset(tuple(train), tuple(held_out), dropped, sessions)


def _remembering(store: Store, chat: Chat, owner: str, tokenizer: Any, opts: DatasetOptions, live: bool):
    """A function giving a session's memory (what retrieval recalls before its first message), or None."""
    memory = opts.memory(live)
    if memory is None:
        return None

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return lambda session: recall(store, chat.key, contact_lines(session), session[0].time, owner, memory, count,
                                  scrub if opts.scrub_pii else None)


def _sample(
    chat: Chat, index: int, messages: Sequence[StoredMessage], persona: Persona, tokenizer: Any, opts: DatasetOptions
) -> Sample | str:
    """The session's sample, or the reason it is dropped."""
    turns = to_turns(messages, chat.type in GROUP_TYPES)
    owner_turns = [t for t in turns if t.role == "owner"]
    if not turns:
        return "empty"
    if not owner_turns:
        return "no_owner_reply"
    if not any(t.target for t in owner_turns):
        forwarded = any(m.forwarded for m in messages if m.from_owner)
        return "owner_forwarded" if forwarded else "owner_media_only"
    conv = Conversation(replace(persona, date=messages[0].time.date()), tuple(turns))
    try:
        rendered = render(conv, tokenizer, opts.train_on, opts.max_tokens)
    except DoesNotFit:
        return "too_long"
    return Sample(chat.platform, chat.id, index, messages[0].time, conv, rendered)


def held_out_count(n: int, fraction: float) -> int:
    """How many of a chat's n samples (the most recent) are held out.

    >>> [held_out_count(n, 0.1) for n in (0, 1, 2, 9, 10, 25)]
    [0, 0, 1, 1, 1, 2]
    """
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, math.floor(n * fraction + 1e-9)))
