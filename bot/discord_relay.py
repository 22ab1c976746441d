"""The twin's own Discord bot: a bot account, labelled as the owner's AI twin, that answers the users listed in
`[discord] users` in DMs, and when mentioned in the channels listed in `[discord] channels`.

Each answer is drafted with the persona of the contact the user is mapped to (their chat in twin.db) and the
memory of this Discord conversation: what the user wrote and what the twin answered here, stored as live
messages (`source = 'live'`: training leaves them out, and Discord's Developer Policy #21 forbids training on
message content from its API). With `approval` on, every answer waits for the owner's approval in Telegram.
The owner's notes on a contact stay out of the prompt unless `[discord] share_notes` lists the user.
Only discord.py's `Client` is used, never a user token: self-bots are forbidden (Discord support article
115002192352). Exercised by tests/test_discord_relay.py and, with TWIN_DISCORD_TOKEN set, by `twin run`.

    client = make_client(cfg.discord, cfg.owner.name, store, drafter, approve)
    await client.start(os.environ["TWIN_DISCORD_TOKEN"])   # until `await client.close()`

`twin run` runs it under `keep_running`, which starts a fresh client after any failure, with backoff, so that
an outage of Discord never ends the Telegram relay; only a refused token or refused intents end it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import discord

from bot.drafter import Drafter
from bot.drafts import ChatRef
from bot.ports import Redraft
from serving.drafting import Candidates
from twin.chat import Chat, Message
from twin.config import DiscordConfig
from twin.errors import ConfigError, NotFound, TwinError
from twin.text import split_text
from twin.store import ChatKey, Store, StoredMessage

log = logging.getLogger(__name__)

# (chat, contact id, the ids of the messages answered, the draft, a way to draft again with exactly the first
# draft's context for Regenerate) -> the text the owner approved, or None when they discarded it or it expired.
# Implemented by the Telegram relay (an approval card in the owner's chat).
Approve = Callable[[ChatRef, str, tuple[str, ...], Candidates, Redraft], Awaitable[str | None]]
Clock = Callable[[], datetime]

MESSAGE_LIMIT = 2000  # characters in one Discord message (API: "Create Message", content)
APOLOGY = "Sorry, I can't answer right now."
# Nobody is pinged by what the twin writes: no @everyone, roles or users, not even the author it replies to.
NO_PINGS = discord.AllowedMentions.none()
SLOW_DOWN = "That's a lot of messages at once; give me a minute before the next one."


def _now() -> datetime:
    return datetime.now(timezone.utc)


def disclosure(owner: str) -> str:
    """The first message in every conversation: who is talking (Discord's identity policy: no impersonation).

    >>> disclosure("Mira")
    "I'm Mira's AI twin, a bot that writes in Mira's style; Mira may read this conversation."
    """
    return f"I'm {owner}'s AI twin, a bot that writes in {owner}'s style; {owner} may read this conversation."


def private_notice(owner: str) -> str:
    """The one line a user who is not on the list gets when they write in a DM."""
    return f"Hi! This is {owner}'s private AI twin; it only talks with people {owner} has added."


def chunk(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`text` as pieces of at most `limit` characters, cut at the last line break, else the last space, inside
    each piece's window; a word longer than the limit is cut where it must be. Pieces are stripped, none empty.

    >>> chunk("see you at 10", 2000)
    ['see you at 10']
    >>> chunk("one two three four", 9)
    ['one two', 'three', 'four']
    >>> chunk("first line here\\nsecond line", 20)
    ['first line here', 'second line']
    >>> chunk("abcdefghij k", 4), chunk("  \\n ", 10)
    (['abcd', 'efgh', 'ij k'], [])
    """
    return split_text(text, limit)


def strip_mentions(content: str, user_id: int) -> str:
    """The text without mentions of the bot (`<@id>`, or `<@!id>` as older clients write it), spaces tidied.

    >>> strip_mentions("<@42> are we still on?  <@!42>", 42)
    'are we still on?'
    >>> strip_mentions("ask <@7> too\\n<@42> and you", 42)
    'ask <@7> too\\nand you'
    """
    lines = re.sub(rf"<@!?{user_id}>", " ", content).splitlines()
    return "\n".join(" ".join(line.split()) for line in lines if line.strip())


def memory(history: Sequence[StoredMessage], twin_sender: str, size: int) -> tuple[StoredMessage, ...]:
    """The last `size` messages of a conversation, with the twin's own replies as the owner's (they are the
    assistant turns of the prompt)."""
    recent = history[-size:] if size > 0 else []
    return tuple(replace(m, from_owner=True) if m.sender_id == twin_sender else m for m in recent)


class RateLimit:
    """At most `per_minute` replies per user in any rolling minute. Over the limit the first refusal says so
    ("warn") and the rest are silent ("quiet") until a reply is allowed again.

    >>> from twin.chat import utc
    >>> limit = RateLimit(2)
    >>> [limit.check("u1", utc(s)) for s in (0, 10, 20, 30, 60, 70)]
    ['reply', 'reply', 'warn', 'quiet', 'reply', 'reply']
    >>> limit.check("u2", utc(70))
    'reply'
    """

    def __init__(self, per_minute: int, window: timedelta = timedelta(minutes=1)):
        self.per_minute = per_minute
        self.window = window
        self._replies: dict[str, deque[datetime]] = {}
        self._warned: set[str] = set()

    def check(self, user: str, now: datetime) -> str:
        """"reply" (and count it), "warn" or "quiet"."""
        replies = self._replies.setdefault(user, deque())
        while replies and now - replies[0] >= self.window:
            replies.popleft()
        if len(replies) < self.per_minute:
            replies.append(now)
            self._warned.discard(user)
            return "reply"
        if user in self._warned:
            return "quiet"
        self._warned.add(user)
        return "warn"


class TwinDiscord(discord.Client):
    """The bot. Build it with `make_client`; it owns neither the store nor the drafter (the caller closes them)."""

    def __init__(self, cfg: DiscordConfig, owner: str, store: Store, drafter: Drafter,
                 approve: Approve | None = None, *, clock: Clock = _now, intents: discord.Intents | None = None):
        # Content of DMs and of messages that mention the bot arrives without the privileged message_content
        # intent (discord.py flags.py, Intents.message_content), and those are the only messages it reads.
        super().__init__(intents=intents or discord.Intents.default(),
                         allowed_mentions=NO_PINGS,
                         # Sent with every IDENTIFY, so the label is there from the first moment and after reconnects.
                         activity=discord.CustomActivity(name=f"AI twin of {owner}"))
        self.cfg = cfg
        self.owner = owner
        self._store = store
        self._drafter = drafter
        self._approve = approve
        self._clock = clock
        self._limit = RateLimit(cfg.rate_limit_per_minute)
        self._turned_away: set[int] = set()
        self._disclosed: set[str] = set()
        self._unmapped: set[str] = set()

    @property
    def sender_id(self) -> str:
        """The sender id of the twin's own messages in the store."""
        return f"twin:{self.user.id if self.user else 'unknown'}"

    async def on_ready(self) -> None:
        log.info("discord: connected as bot %s in %d guilds; %d allowed users, %d channels, approval %s",
                 self.user.id, len(self.guilds), len(self.cfg.users), len(self.cfg.channels),
                 "on" if self.cfg.approval else "off")

    async def on_message(self, message: discord.Message) -> None:
        if self.user is None or message.author.bot or message.author.id == self.user.id:
            return
        channel = message.channel
        dm = isinstance(channel, discord.DMChannel)
        if not dm and not self._addressed(message):
            return
        author = str(message.author.id)
        if author not in self.cfg.users:
            if dm and message.author.id not in self._turned_away:
                self._turned_away.add(message.author.id)
                log.info("discord: user %s is not allowed; told once", author)
                await self._send(channel, [private_notice(self.owner)])
            return
        text = strip_mentions(message.content, self.user.id)
        if not text:
            return
        try:
            await self._answer(message, text, dm)
        except discord.HTTPException as e:
            log.warning("discord: channel %s: %s (status %s)", channel.id, type(e).__name__, e.status)

    def _addressed(self, message: discord.Message) -> bool:
        """In a guild: an allowed channel (or a thread in one) and a mention of the bot itself. Not
        `mentioned_in`, which is true for @everyone (discord.py user.py)."""
        if message.guild is None:
            return False
        channel = message.channel
        allowed = {str(channel.id), str(getattr(channel, "parent_id", None))} & set(self.cfg.channels)
        return bool(allowed) and any(u.id == self.user.id for u in message.mentions)

    async def _answer(self, message: discord.Message, text: str, dm: bool) -> None:
        channel, author = message.channel, str(message.author.id)
        now = self._clock()
        # A DM with the twin is a chat with a bot, not the owner's personal chat: typed "bot" (and untitled) it
        # never matches `find_chat` by a person's name or id, which would make their real chat ambiguous.
        title = None if dm else getattr(channel, "name", None)
        chat = Chat("discord", str(channel.id), "bot" if dm else "group", title)
        key = ChatKey("discord", chat.id)
        size = self.cfg.memory_messages
        recent = self._store.chat_messages(key, last=size) if size > 0 else []
        session = memory(recent, self.sender_id, size)
        answered_before = self._store.has_sender(key, self.sender_id)
        self._store.insert_live(chat, Message("discord", chat.id, str(message.id), author,
                                              message.author.display_name, now, text))

        verdict = self._limit.check(author, now)
        if verdict != "reply":
            log.info("discord: user %s over %d replies a minute (%s)", author, self.cfg.rate_limit_per_minute, verdict)
            if verdict == "warn":
                await self._send(channel, [SLOW_DOWN])
            return

        persona = self._persona_chat(author, key)
        # Notes in the prompt can be talked out of the twin, and without approval nobody reads the reply first:
        # only the owner's own choice (share_notes) lets a user's mapped contact's notes in.
        notes = author in self.cfg.share_notes and persona != key
        started = time.perf_counter()
        try:
            def redraft() -> Awaitable[Candidates]:  # the same persona, memory and sender, for Regenerate
                return self._drafter.draft(persona, [text], sender=message.author.display_name, session=session,
                                           notes=notes)

            async with channel.typing():
                draft = await redraft()
            if self.cfg.approval:
                approved = await self._approve(ChatRef("discord", None, chat.id), author, (str(message.id),), draft,
                                               redraft)
                lines = None if approved is None else [line for line in approved.splitlines() if line.strip()]
            else:
                lines = list(draft.candidates[0].messages)
        except TwinError as e:
            log.warning("discord: no answer in channel %s for message %s: %s", channel.id, message.id,
                        type(e).__name__)
            await self._send(channel, [APOLOGY])
            return
        if not lines:
            log.info("discord: message %s in channel %s: the owner sent nothing", message.id, channel.id)
            return
        if not answered_before and chat.id not in self._disclosed:
            self._disclosed.add(chat.id)  # before the await: a concurrent answer here must not disclose again
            await self._send(channel, [disclosure(self.owner)])
        sent = await self._send(channel, lines, reply_to=None if dm else message)
        now = self._clock()
        with self._store.transaction():
            self._store.insert_messages(
                [Message("discord", chat.id, str(m.id), self.sender_id, None, now, m.content) for m in sent],
                source="live")
        log.info("discord: answered message %s in channel %s: %d messages, %d chars, %d remembered, %.0f ms",
                 message.id, channel.id, len(sent), sum(len(m.content) for m in sent), len(session),
                 (time.perf_counter() - started) * 1000)

    def _persona_chat(self, author: str, fallback: ChatKey) -> ChatKey:
        """The mapped contact's chat in twin.db, else this Discord conversation's own."""
        try:
            chat = self._store.find_chat(self.cfg.users[author])
        except NotFound as e:
            if author not in self._unmapped:  # once per user and process: it stays so until twin.db changes
                self._unmapped.add(author)
                log.info("discord: user %s: mapped contact not usable (%s); using this channel's persona", author,
                         type(e).__name__)
            return fallback
        return chat.key

    async def _send(self, channel: discord.abc.Messageable, texts: Sequence[str],
                    reply_to: discord.Message | None = None) -> list[discord.Message]:
        """Each text as Discord messages of at most 2000 characters; the first replies to `reply_to`, if given
        (without pinging its author, and still sent when that message was deleted meanwhile)."""
        sent: list[discord.Message] = []
        for piece in (p for t in texts for p in chunk(t)):
            reference = reply_to.to_reference(fail_if_not_exists=False) if reply_to and not sent else None
            try:
                sent.append(await channel.send(piece, reference=reference, allowed_mentions=NO_PINGS,
                                               mention_author=False))
            except discord.HTTPException as e:
                log.warning("discord: send to channel %s failed after %d messages: %s (status %s)",
                            channel.id, len(sent), type(e).__name__, e.status)
                break
        return sent


def make_client(cfg: DiscordConfig, owner_name: str | None, store: Store, drafter: Drafter,
                approve: Approve | None = None, *, clock: Clock = _now,
                intents: discord.Intents | None = None) -> TwinDiscord:
    """The Discord bot, ready for `await client.start(token)`; `owner_name` None: the owner's name in twin.db.

    `intents` None is what the bot needs (`Intents.default()`, no privileged ones); tests pass the members intent
    too, without which dpytest's fake members do not exist.
    """
    owner = (owner_name or store.owner_name() or "").strip()
    if not owner:
        raise ConfigError("[discord]: the bot introduces itself as the owner's AI twin but no name is known; "
                          "set owner.name in twin.toml")
    if cfg.approval and approve is None:
        raise ConfigError("[discord] approval = true needs the Telegram relay for approval cards; "
                          "configure [telegram] or set approval = false")
    if not cfg.users:
        log.warning("discord: [discord] users is empty; the bot will answer nobody")
    return TwinDiscord(cfg, owner, store, drafter, approve, clock=clock, intents=intents)


# -- keeping it running ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    """Seconds between restarts: `first_s`, doubling up to `max_s`; a client that ran `healthy_s` before it
    failed counts as a fresh start."""

    first_s: float = 1.0
    max_s: float = 300.0
    healthy_s: float = 600.0


BACKOFF = Backoff()

# Gateway close codes after which Discord says not to reconnect (Discord docs, Gateway → "Gateway Close Event
# Codes": Reconnect false): 4004 authentication failed, 4010-4013 invalid shard, sharding required, invalid API
# version, invalid intents; 4014 (disallowed intents) arrives as discord.PrivilegedIntentsRequired.
TOKEN_REFUSED = ("TWIN_DISCORD_TOKEN was refused by Discord; copy the bot token again from the Developer Portal "
                 "(Bot → Reset Token)")
REFUSED_CODES = frozenset({4010, 4011, 4012, 4013})


def next_delay(delay: float, ran_s: float, backoff: Backoff) -> float:
    """The wait before the next restart, given the last wait (0 before any) and how long the client ran.

    >>> b = Backoff(first_s=1, max_s=5, healthy_s=60)
    >>> d, waits = 0.0, []
    >>> for ran in (0.2, 3, 1, 0, 0):
    ...     d = next_delay(d, ran, b); waits.append(d)
    >>> waits, next_delay(5, 61, b)
    ([1, 2, 4, 5, 5], 1)
    """
    if delay <= 0 or ran_s >= backoff.healthy_s:
        return backoff.first_s
    return min(delay * 2, backoff.max_s)


def fatal(error: Exception) -> ConfigError | None:
    """The ConfigError that ends the Discord side for good, or None when a restart may help."""
    if isinstance(error, discord.LoginFailure) or (isinstance(error, discord.ConnectionClosed)
                                                   and error.code == 4004):
        return ConfigError(TOKEN_REFUSED)
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return ConfigError("Discord refused a privileged intent the bot asked for; turn it on under Bot → "
                           "Privileged Gateway Intents in the Developer Portal, or upgrade twin")
    if isinstance(error, discord.ConnectionClosed) and error.code in REFUSED_CODES:
        return ConfigError(f"Discord closed the gateway with code {error.code} (sharding, API version or "
                           "intents refused); upgrade twin or discord.py")
    return None


async def keep_running(make: Callable[[], discord.Client], token: str, backoff: Backoff | None = None, *,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Run a client from `make()` with `token` until cancelled; after any failure (no network at boot, a Discord
    outage, a gateway closed for good), close it and start a fresh one after `next_delay`. A fresh client,
    because discord.py 2.7's `close()` leaves `loop` unset, so a closed client cannot be started again even
    after `clear()` (client.py). Raises ConfigError for a refused token or intents (`fatal`), and whatever
    ConfigError `make` raises; logs each restart with the error's type only (its text can quote ids or names).
    """
    backoff = backoff or BACKOFF
    delay, restarts = 0.0, 0
    while True:
        client = make()
        started = time.monotonic()
        try:
            await client.start(token)
            error: Exception | None = None
        except Exception as e:  # any failure of the Discord side: only `fatal` ones end it
            error = e
        finally:
            await _close(client)
        if error is not None and (stop := fatal(error)) is not None:
            raise stop from error
        ran = time.monotonic() - started
        delay, restarts = next_delay(delay, ran, backoff), restarts + 1
        log.warning("discord: client stopped after %.0f s (%s); restart %d in %.1f s", ran,
                    type(error).__name__ if error else "closed", restarts, delay)
        await sleep(delay)


async def _close(client: discord.Client) -> None:
    try:
        await client.close()
    except Exception as e:  # closing a client that never connected can fail too; the next one is fresh
        log.info("discord: closing the client failed: %s", type(e).__name__)
