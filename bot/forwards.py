"""Drafts without Telegram Business: messages the owner forwards to the bot, or pastes after /for, answered
with a card of candidates to copy.

Connecting a bot through Telegram Business needs Telegram Premium, and WhatsApp and Discord DMs let no bot act
for a user; the owner's private chat with the bot serves them all. Platform-neutral: the Telegram adapter
(bot/telegram_forwards.py) turns updates into `Incoming` values and draws `Button`s; nothing here talks to a
network, and nothing is ever sent in the owner's name: only cards and questions go to the owner.

The flow:
- each forwarded message names who wrote it (bot/origins.py `Origin`, from Bot API MessageOrigin: a user with an
  id, a hidden user with only a name, a chat or channel); it is matched to the history (bot/origins.py `match`:
  the Telegram id, else the name; several chats of that name are put to the owner as buttons, `pick_data`);
- pasted text after `/for CONTACT` is that contact's (any platform, WhatsApp and Discord included);
- messages that come within the settle delay of each other are one burst: stored as live messages of the
  contact's chat (Store.insert_live: context, never training data without telegram.train_on_live, removed by
  forget), drafted from that chat's persona and history as of the burst's last message (a forward may be hours
  old), and answered with one card (origin "copy",
  bot/drafts.py): each candidate with a Copy button (Bot API CopyTextButton: it copies on the owner's device and
  tells the bot nothing) and a "Used" button that records which one was copied (state "copied");
- the owner's own forwarded messages (origin: the owner) before a contact's are their side of that conversation;
  at the end of a burst, or alone, they are what the owner really sent, for the latest draft to copy
  (bot/drafts.py `reported`).
Exercised by `twin run`; tested in tests/test_forwards.py through the fake Bot API.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot import drafts as D
from bot.copycards import Button
from bot.drafts import COPY, ChatRef, Draft, InvalidTransition, State
from bot.origins import Incoming, Match, label, match, message_id
from bot.relay import Relay
from serving.drafting import current_session
from twin.chat import Chat, Message, telegram_user
from twin.errors import NotFound, TwinError
from twin.sessions import DEFAULT_GAP_SECONDS
from twin.store import StoredMessage

log = logging.getLogger(__name__)

RECENT = 8  # /for without a name: this many recent chats as buttons
OPEN_QUESTIONS = 20  # "which chat?" questions kept open at most; older ones' buttons stop working


class Port(Protocol):
    """The owner's chat with the bot, as the forward flow uses it."""

    async def ask(self, text: str, rows: list[list[Button]]) -> None: ...

    async def say(self, text: str) -> None: ...


# -- the contact-pick buttons: their own grammar, c:<token>:<choice> ------------------------------------------

def pick_data(token: int, choice: int) -> str:
    """The data of a button that picks a chat for a waiting burst or /for: `pick_data(3, 1)` -> 'c:3:1'."""
    return f"c:{token}:{choice}"


def parse_pick(data: str) -> tuple[int, int] | None:
    """(token, choice) from a pick button's data, or None when it is not one.

    >>> parse_pick("c:3:1"), parse_pick("d:3:send:0"), parse_pick("c:x:1")
    ((3, 1), None, None)
    """
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != "c" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1]), int(parts[2])


# -- the flow ------------------------------------------------------------------------------------------------

@dataclass
class _Group:
    """Consecutive messages of a burst from one origin; `context`: the owner's own forwarded messages just before
    them (their side of the conversation, stored in the same chat)."""

    match: Match
    items: list[Incoming] = field(default_factory=list)
    context: list[Incoming] = field(default_factory=list)


@dataclass
class _Pick:
    """A question to the owner: which chat? `group` waits for the answer (None: /for, nothing waits)."""

    chats: list[Chat]
    group: _Group | None


class Forwards:
    """The forward-and-paste flow of one owner (see the module docstring). `port` is the owner's chat."""

    def __init__(self, relay: Relay, port: Port, owner_id: int):
        self.relay = relay
        self.store = relay.store
        self.port = port
        self.owner_id = owner_id
        self._burst: list[Incoming] = []
        self._timer: asyncio.Task | None = None
        self._target: Chat | None = None  # /for: pasted text is this chat's
        self._picks: dict[int, _Pick] = {}
        self._tokens = itertools.count(1)
        self._lock = asyncio.Lock()

    # -- in ----------------------------------------------------------------------------------------------

    async def forwarded(self, item: Incoming) -> None:
        """The owner forwarded a message: one more of the burst."""
        self._add(item)

    async def paste(self, text: str) -> bool:
        """Text the owner wrote: a message of the /for contact, when one is set. False when none is."""
        if self._target is None:
            return False
        self._add(Incoming(None, text, "text", self.relay.clock()))
        return True

    async def choose(self, contact: str) -> None:
        """/for CONTACT: what the owner pastes next is that contact's; /for alone lists recent chats."""
        if not contact.strip():
            chats = self.store.recent_chats(RECENT)
            if not chats:
                await self.port.say("No chats yet: import your history first (twin ingest).")
                return
            await self._ask("Whose messages will you paste? (or /for NAME)", chats, None)
            return
        if ":" in contact:
            try:
                chats = [self.store.find_chat(contact)]
            except NotFound as e:
                await self.port.say(str(e))
                return
        else:
            chats = self.store.find_chats(contact)
        if not chats:
            await self.port.say(f"No chat named {contact!r}; /for lists recent ones, `twin stats` all names.")
        elif len(chats) > 1:
            await self._ask(f"Several chats are called {contact!r}: which one?", chats, None)
        else:
            await self._set_target(chats[0])

    def cancel(self) -> bool:
        """/cancel: pasted text is no longer the /for contact's. False when no /for was waiting."""
        waiting, self._target = self._target is not None, None
        return waiting

    async def pick(self, token: int, choice: int) -> str:
        """A pick button: the chat for a waiting burst, or for /for. Returns the press's short answer."""
        pick = self._picks.pop(token, None)
        if pick is None or not 0 <= choice < len(pick.chats):
            return "This question is no longer open."
        chat = pick.chats[choice]
        if pick.group is None:
            await self._set_target(chat)
            return "Paste their messages."
        self.relay.spawn(self._answer(pick.group, chat))
        return "Drafting."

    async def copied(self, draft_id: int, candidate: int) -> str:
        """The owner copied candidate `candidate` (the Used button)."""
        now = self.relay.clock()
        try:
            d = self.relay.ledger.apply(draft_id, lambda x: D.copy(x, now, candidate), "copied", now)
        except (InvalidTransition, NotFound) as e:
            return str(e)[:200]
        await self.relay.owner.update_card(d)
        log.info("draft %d: candidate %d copied", d.id, candidate)
        return f"Noted: you used reply {candidate + 1}."

    # -- the burst ---------------------------------------------------------------------------------------

    def _add(self, item: Incoming) -> None:
        self._burst.append(item)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.relay.spawn(self._settle())

    async def _settle(self) -> None:
        await asyncio.sleep(self.relay.settings.settle_s)
        self._timer = None
        items, self._burst = self._burst, []
        async with self._lock:
            await self._flush(items)

    async def _flush(self, items: list[Incoming]) -> None:
        log.info("forward burst: %d messages", len(items))
        groups: list[_Group] = []
        for item in items:
            if item.origin is None:
                m = Match(chats=(self._target,)) if self._target else Match()
            else:
                m = match(self.store, item.origin, self.owner_id)
            if groups and groups[-1].match == m:
                groups[-1].items.append(item)
            else:
                groups.append(_Group(m, [item]))
        if any(item.origin is None for item in items):
            self._target = None  # one paste burst per /for
        mine: list[Incoming] = []
        for g in groups:
            if g.match.owner:  # context for the contact's messages that follow, else what the owner sent
                mine += g.items
                continue
            g.context, mine = mine, []
            if g.match.new is not None or len(g.match.chats) == 1:
                await self._answer(g, g.match.new or g.match.chats[0])
            else:
                await self._unsure(g)
        if mine:
            await self._reported(mine)

    async def _unsure(self, g: _Group) -> None:
        origin = g.items[0].origin
        name = (origin.name if origin else None) or "this person"
        if g.match.chats:
            await self._ask(f"Several chats match {name}: which one are these messages from?",
                            list(g.match.chats), g)
        else:
            await self._ask(f"I found no chat with {name} in your history (their account is hidden when "
                            "forwarded). Which chat is it? Or use /for NAME and paste the messages.",
                            self.store.recent_chats(RECENT), g)

    async def _ask(self, text: str, chats: list[Chat], group: _Group | None) -> None:
        token = next(self._tokens)
        self._picks[token] = _Pick(chats[:RECENT], group)
        for old in sorted(self._picks)[:-OPEN_QUESTIONS]:  # questions never answered do not pile up
            del self._picks[old]
        rows = [[Button(label(self.store, c), callback=pick_data(token, i))] for i, c in enumerate(chats[:RECENT])]
        await self.port.ask(text, rows)

    async def _set_target(self, chat: Chat) -> None:
        self._target = chat
        await self.port.say(f"Paste {label(self.store, chat)}'s message(s) now; I draft when you stop.")

    # -- drafting ----------------------------------------------------------------------------------------

    def _sender(self, chat: Chat, g: _Group) -> str:
        if g.match.sender:
            return g.match.sender
        people = self.store.chat_contacts(chat.key)
        return people[0] if people else (chat.title or chat.id)

    async def _answer(self, g: _Group, chat: Chat) -> Draft | None:
        """Store a contact's burst in their chat and put a card of candidates to copy on the owner's screen."""
        sender = self._sender(chat, g)
        name = next((i.origin.name for i in g.items if i.origin and i.origin.name), None) or chat.title
        self._store_owner(chat, g.context)
        ids = []
        for item in g.items:
            when = item.origin.date if item.origin else item.at
            mid = message_id(chat, sender, item) if item.origin else f"paste-{int(item.at.timestamp() * 1e6)}"
            self.store.insert_live(chat, Message(chat.platform, chat.id, mid, sender, name, when, item.text,
                                                 item.kind))
            ids.append(mid)
        ref = ChatRef(chat.platform, None, chat.id)
        session = self._session(chat, max(i.origin.date if i.origin else i.at for i in g.items))
        try:
            result = await self.relay.drafter.draft(chat.key, session=session)
        except TwinError as e:
            log.warning("forward draft chat=%s failed: %s", chat.id, type(e).__name__)
            await self.port.say(f"Could not draft a reply: {e}")
            return None
        now = self.relay.clock()
        for old in self.relay.ledger.pending(ref):
            old = self.relay.ledger.apply(old.id, lambda x: D.expire(x, now), "replaced", now)
            await self.relay.screen.settle(old, "replaced by a newer draft")
        d = self.relay.ledger.create(Draft(
            id=None, chat=ref, contact_id=sender, answers=tuple(ids),
            candidates=tuple(c.text for c in result.candidates), created_at=now, updated_at=now,
            expires_at=D.expiry(now, self.relay.settings.expiry_margin), origin=COPY, adapter=result.adapter,
            prompt=result.prompt_ids, latency_ms=result.latency_ms,
        ), now)
        # Regenerate drafts from the same conversation (a forward may be hours old: "now" has no session).
        self.relay.redraft_with(d.id, lambda: self.relay.drafter.draft(chat.key, session=session, seed=None))
        log.info("draft %d (to copy) chat=%s candidates=%d latency_ms=%.0f", d.id, chat.id, len(d.candidates),
                 result.latency_ms)
        await self.relay.screen.show(d)
        return d

    def _store_owner(self, chat: Chat, items: list[Incoming]) -> None:
        """The owner's own forwarded messages, as theirs in the chat."""
        for item in items:
            self.store.insert_live(chat, Message(chat.platform, chat.id, message_id(chat, "owner", item),
                                                 telegram_user(self.owner_id), None,
                                                 item.origin.date if item.origin else item.at, item.text,
                                                 item.kind), from_owner=True)

    def _session(self, chat: Chat, last: datetime) -> list[StoredMessage]:
        """The conversation the burst ends, as of its last message (drafting's own rule, serving.drafting)."""
        history = [m for m in self.store.chat_messages(chat.key) if m.time <= last]
        return current_session(history, last, int(self.store.get_meta("session_gap") or DEFAULT_GAP_SECONDS))

    async def _reported(self, items: list[Incoming]) -> None:
        """The owner forwarded their own message(s): what they really sent, for the latest draft to copy."""
        d = self.relay.ledger.latest(COPY, "telegram")
        if d is None or d.state not in (State.PENDING, State.COPIED):
            await self.port.say("That is your own message. Forward me your contact's messages for drafts, or "
                                "use /for NAME and paste them.")
            return
        text = "\n".join(i.text for i in items if i.text.strip())
        self._store_owner(self.store.chat(d.chat.key) or Chat(d.chat.platform, d.chat.chat_id, "personal"), items)
        now = self.relay.clock()
        try:
            d = self.relay.ledger.apply(d.id, lambda x: D.reported(x, text, now), "reported", now)
        except InvalidTransition as e:
            await self.port.say(str(e))
            return
        log.info("draft %d: the owner's reply reported (%s)", d.id, d.state.value)
        await self.relay.screen.settle(d, "")
