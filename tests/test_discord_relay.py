"""The twin's Discord bot (bot/discord_relay.py) through discord.py's own event handling, with dpytest in place
of Discord: a fake HTTP client and parsed gateway events, the real twin.db in a temp dir, the real Drafter with
QuickBackend. Synthetic people only.

dpytest quirks met here: its fake members exist only with the members intent (the bot itself never asks for
it); `channel.typing()` needs the client's loop set after `configure`; its fake HTTP drops `message_reference`
and `allowed_mentions`, so the payloads are recorded on the way in; `dpytest.message` cannot set
`mention_everyone`, so `post` builds that gateway payload itself.
"""

from __future__ import annotations

import asyncio
import doctest
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend, callbacks, factories

import bot.discord_relay
from bot.discord_relay import APOLOGY, SLOW_DOWN, RateLimit, TwinDiscord, chunk, disclosure, make_client
from bot.drafter import Drafter, DraftingParts
from bot.drafts import ChatRef
from helpers import QuickBackend
from serving.drafting import Candidates, DraftSettings
from twin.chat import Chat, Message, utc
from twin.config import DiscordConfig, DraftingConfig, load_config
from twin.errors import ConfigError, ServingUnavailable
from twin.store import ChatKey, Store

TOMAS, LENA, STRANGER, ROBO = 310000000000000001, 310000000000000002, 310000000000000003, 310000000000000004
ALLOWED_CHANNEL = 320000000000000001
T0 = 1_717_000_000


def test_module_doctests():
    assert doctest.testmod(bot.discord_relay).failed == 0


# -- pure parts ------------------------------------------------------------------------------------------------

def test_chunk_keeps_short_text_whole_and_splits_long_text_at_breaks():
    assert chunk("see you at 10") == ["see you at 10"]
    assert chunk("  padded \n") == ["padded"]
    assert chunk("") == []
    # At a line break first, else a space, else (one long word) where it must.
    assert chunk("aaa bbb\nccc ddd", 10) == ["aaa bbb", "ccc ddd"]
    assert chunk("aaa bbb ccc ddd", 10) == ["aaa bbb", "ccc ddd"]
    assert chunk("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    # A break just past the limit still gives a full piece.
    assert chunk("abcd efgh", 4) == ["abcd", "efgh"]


def test_chunk_of_a_long_reply_fits_discord_and_never_cuts_a_word():
    words = [f"word{i}" for i in range(900)]  # 900 words, ~6,900 characters
    pieces = chunk(" ".join(words))
    assert len(pieces) == 4
    assert all(len(p) <= 2000 for p in pieces)
    assert " ".join(pieces).split() == words


def test_rate_limit_counts_replies_in_a_rolling_minute_per_user():
    limit = RateLimit(2)
    at = [utc(T0 + s) for s in (0, 30, 40, 45, 59, 60, 61)]
    assert [limit.check("a", t) for t in at[:5]] == ["reply", "reply", "warn", "quiet", "quiet"]
    assert limit.check("b", at[4]) == "reply"  # per user
    assert limit.check("a", at[5]) == "reply"  # the reply at 0 left the window at 60
    assert limit.check("a", at[6]) == "warn"  # over again: warned again, once
    assert limit.check("a", at[6]) == "quiet"


def test_disclosure_names_the_owner():
    assert disclosure("Mira") == ("I'm Mira's AI twin, a bot that writes in Mira's style; "
                                  "Mira may read this conversation.")


# -- the bot through dpytest -----------------------------------------------------------------------------------

class Clock:
    def __init__(self, start: float):
        self.now = utc(start)

    def __call__(self) -> datetime:
        return self.now


class RecordingDrafter(Drafter):
    """The real Drafter, remembering what it was asked and what it answered."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests: list[dict] = []
        self.drafts: list[Candidates] = []

    async def draft(self, key, incoming=(), **kwargs) -> Candidates:
        self.requests.append(dict(key=key, incoming=list(incoming), **kwargs))
        self.drafts.append(await super().draft(key, incoming, **kwargs))
        return self.drafts[-1]

    def replies(self) -> list[str]:
        """The first candidate's messages of every draft, in order: what the bot should have sent."""
        return [m for d in self.drafts for m in d.candidates[0].messages]


@dataclass
class World:
    client: TwinDiscord
    store: Store
    backend: QuickBackend
    drafter: RecordingDrafter
    clock: Clock
    guild: discord.Guild
    allowed: discord.TextChannel
    other: discord.TextChannel
    members: dict[str, discord.Member]
    approvals: list[tuple] = field(default_factory=list)
    payloads: list[dict] = field(default_factory=list)  # every message payload the bot sent, in order
    typing: list[int] = field(default_factory=list)  # channel ids, in order

    @property
    def me(self) -> str:
        return self.client.user.mention

    async def dm(self, who: str, text: str) -> discord.Message:
        channel = await self.members[who].create_dm()
        return await dpytest.message(text, channel=channel, member=self.members[who])

    def rows(self, chat_id: int | str) -> list[tuple]:
        return self.store.conn.execute(
            "SELECT sender_id, text, source FROM messages WHERE platform = 'discord' AND chat_id = ? ORDER BY id",
            (str(chat_id),)).fetchall()


def sent() -> list[discord.Message]:
    """What the bot sent since the last call."""
    out = []
    while not dpytest.sent_queue.empty():
        out.append(dpytest.get_message())
    return out


async def post(text: str, channel, author: discord.Member, *, mention_everyone: bool = False,
               mentions: tuple = ()) -> None:
    """A MESSAGE_CREATE that dpytest.message cannot make (mention_everyone, or in a thread)."""
    data = factories.make_message_dict(channel, author, content=text, mention_everyone=mention_everyone,
                                       mentions=list(mentions), guild_id=channel.guild.id)
    backend.get_state().parse_message_create(data)
    await dpytest.run_all_events()


def seed_contact(store: Store) -> None:
    """Tomas Berg's Telegram chat with Mira: the persona his Discord messages are answered with."""
    store.set_owner("telegram", "user1001", "Mira")
    store.upsert_chat(Chat("telegram", "2002", "personal", "Tomas Berg"))
    store.upsert_names("telegram", {("user2002", "Tomas Berg"): (T0 - 900, T0 - 600)})
    store.insert_messages([
        Message("telegram", "2002", "1", "user2002", "Tomas Berg", utc(T0 - 900), "hey are we still on for saturday?"),
        Message("telegram", "2002", "2", "user1001", "Mira", utc(T0 - 600), "yes! meet at the gym at 10"),
    ])


async def build(tmp_path, approve=None, notes: dict[str, str] | None = None, **cfg) -> World:
    db = tmp_path / "twin.db"
    store = Store.open(db)
    seed_contact(store)
    quick = QuickBackend()
    drafting = DraftSettings(owner_name="Mira", notes=notes or {})
    drafter = RecordingDrafter(db, lambda: DraftingParts(quick, None, drafting), DraftingConfig(n=1))
    settings = dict(users={str(TOMAS): "Tomas Berg", str(LENA): "Lena Park", str(ROBO): "telegram:2002"},
                    channels=[str(ALLOWED_CHANNEL)])
    clock = Clock(T0)
    intents = discord.Intents.default()
    intents.members = True  # dpytest only: its fake members are None without it
    client = make_client(DiscordConfig(**{**settings, **cfg}), "Mira", store, drafter, approve, clock=clock,
                         intents=intents)
    await client._async_setup_hook()
    dpytest.configure(client, guilds=["Climbing Club"], text_channels=["general"], voice_channels=0, members=0)
    client._connection.loop = asyncio.get_running_loop()  # dpytest leaves it unset; typing() needs it
    config = dpytest.get_config()
    guild = config.guilds[0]
    allowed = backend.make_text_channel("twin-chat", guild, id_num=ALLOWED_CHANNEL)
    members = {}
    for name, uid, is_bot in (("Tomas Berg", TOMAS, False), ("Lena", LENA, False), ("Sam", STRANGER, False),
                              ("Robo", ROBO, True)):
        user = backend.get_state().store_user(factories.make_user_dict(name, len(members) + 1, None, uid, bot=is_bot))
        members[name] = backend.make_member(user, guild)
    world = World(client, store, quick, drafter, clock, guild, allowed, config.channels[0], members)

    real_send = client.http.send_message

    async def send_message(channel_id, *, params):
        world.payloads.append(params.payload)
        channel = sys._getframe(1).f_locals["channel"]  # dpytest's FakeHttp reads `channel` from its caller
        assert channel.id == channel_id
        return await real_send(channel_id, params=params)

    async def on_typing(channel):
        world.typing.append(channel.id)

    client.http.send_message = send_message
    callbacks.set_callback(on_typing, "send_typing")
    return world


@pytest.fixture
async def world(tmp_path):
    w = await build(tmp_path)
    yield w
    await teardown(w)


async def teardown(w: World) -> None:
    await dpytest.empty_queue()
    callbacks.remove_callback("send_typing")
    await w.drafter.close()
    w.store.close()


async def test_first_dm_discloses_then_replies_and_both_are_remembered(world, caplog):
    caplog.set_level(logging.DEBUG, logger="bot")
    incoming = await world.dm("Tomas Berg", "are we still on for saturday?")

    first, reply = sent()
    assert first.content == disclosure("Mira")
    assert [reply.content] == world.drafter.replies()
    assert world.typing == [incoming.channel.id]
    assert world.payloads[1].get("message_reference") is None  # a DM is a plain send
    request, = world.drafter.requests
    assert request["key"] == ChatKey("telegram", "2002")  # Tomas's persona, not the Discord chat
    assert request["incoming"] == ["are we still on for saturday?"]
    assert request["session"] == ()
    twin = f"twin:{world.client.user.id}"
    assert world.rows(incoming.channel.id) == [(str(TOMAS), "are we still on for saturday?", "live"),
                                               (twin, reply.content, "live")]  # the disclosure is not memory
    assert world.store.find_chat(f"discord:{incoming.channel.id}") == Chat("discord", str(incoming.channel.id), "bot")
    # Ids, counts and timings in the log; never the text or the names.
    assert str(incoming.id) in caplog.text
    assert "saturday" not in caplog.text and "Tomas" not in caplog.text


async def test_second_dm_has_no_disclosure_and_remembers_the_first_exchange(world):
    await world.dm("Tomas Berg", "are we still on for saturday?")
    _, first_reply = sent()
    await world.dm("Tomas Berg", "I can bring the rope")

    reply, = sent()
    assert reply.content == world.drafter.replies()[-1]
    key_then, key_now = (r["key"] for r in world.drafter.requests)
    assert key_now == key_then == ChatKey("telegram", "2002")  # the bot's DM does not make "Tomas Berg" ambiguous
    session = world.drafter.requests[1]["session"]
    assert [(m.text, m.from_owner) for m in session] == [("are we still on for saturday?", False),
                                                          (first_reply.content, True)]
    tokens = [c["prompt_tokens"] for c in world.backend.calls]
    assert tokens[1] > tokens[0]  # the memory reached the prompt


async def test_memory_is_the_last_memory_messages(tmp_path):
    w = await build(tmp_path, memory_messages=3)
    try:
        for text in ("one", "two", "three"):
            await w.dm("Tomas Berg", text)
        session = w.drafter.requests[-1]["session"]
        assert len(session) == 3  # of the four stored before "three" (one, reply, two, reply): the last three
        assert [m.from_owner for m in session] == [True, False, True]
        assert session[1].text == "two"
    finally:
        await teardown(w)


async def test_unmapped_contact_falls_back_to_the_discord_chat(world):
    await dpytest.message(f"{world.me} hi all", channel=world.allowed, member=world.members["Lena"])
    request, = world.drafter.requests
    assert request["key"] == ChatKey("discord", str(ALLOWED_CHANNEL))  # "Lena Park" is not in twin.db
    assert request["sender"] == "Lena"


async def test_a_stranger_gets_one_polite_line_then_silence(world):
    await world.dm("Sam", "hello?")
    await world.dm("Sam", "hello??")

    notice, = sent()
    assert "private" in notice.content and "Mira" in notice.content
    assert world.drafter.requests == []
    assert world.store.conn.execute("SELECT count(*) FROM messages WHERE platform = 'discord'").fetchone() == (0,)


async def test_guild_mention_in_an_allowed_channel_gets_a_reply_to_that_message(world):
    incoming = await dpytest.message(f"{world.me} are we still on?", channel=world.allowed,
                                     member=world.members["Tomas Berg"])

    disclosed, reply = sent()
    assert disclosed.content == disclosure("Mira") and [reply.content] == world.drafter.replies()
    payload = world.payloads[-1]
    assert payload["message_reference"]["message_id"] == incoming.id
    assert payload["message_reference"]["fail_if_not_exists"] is False
    assert payload["allowed_mentions"] == {"parse": [], "replied_user": False}  # pings nobody
    assert world.drafter.requests[0]["incoming"] == ["are we still on?"]  # the mention is stripped
    assert world.rows(ALLOWED_CHANNEL)[0] == (str(TOMAS), "are we still on?", "live")
    assert world.store.find_chat(f"discord:{ALLOWED_CHANNEL}") == Chat("discord", str(ALLOWED_CHANNEL), "group",
                                                                        "twin-chat")


async def test_guild_messages_not_addressed_to_the_bot_are_ignored(world):
    tomas = world.members["Tomas Berg"]
    await dpytest.message("are we still on?", channel=world.allowed, member=tomas)  # no mention
    await dpytest.message(f"{world.me} are we still on?", channel=world.other, member=tomas)  # not an allowed channel
    await post("@everyone are we still on?", world.allowed, tomas, mention_everyone=True)
    await dpytest.message(f"{world.me} hi", channel=world.allowed, member=world.members["Sam"])  # not allowed: silent
    await post(f"<@{LENA}> are we still on?", world.allowed, tomas, mentions=(world.members["Lena"],))

    assert sent() == []
    assert world.drafter.requests == []
    assert world.typing == []


def make_thread(parent: discord.TextChannel, thread_id: int) -> discord.Thread:
    """A public thread under `parent` (dpytest has no threads; the gateway's THREAD_CREATE payload)."""
    data = {"id": thread_id, "guild_id": parent.guild.id, "parent_id": parent.id, "owner_id": LENA, "name": "trip",
            "type": 11, "last_message_id": None, "rate_limit_per_user": 0, "message_count": 0, "member_count": 1,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                "archive_timestamp": "2024-05-29T12:00:00+00:00"}}
    backend.get_state().parse_thread_create(data)
    return parent.guild.get_thread(thread_id)


async def test_threads_of_an_allowed_channel_are_allowed_too(world):
    tomas = world.members["Tomas Berg"]
    inside, outside = make_thread(world.allowed, 330000000000000001), make_thread(world.other, 330000000000000002)
    await post(f"{world.me} who drives?", outside, tomas, mentions=(world.client.user,))
    assert sent() == []
    await post(f"{world.me} who drives?", inside, tomas, mentions=(world.client.user,))
    assert [m.content for m in sent()] == [disclosure("Mira"), *world.drafter.replies()]
    assert world.rows(inside.id)[0] == (str(TOMAS), "who drives?", "live")


async def test_other_bots_are_ignored_even_when_listed(world):
    robo = world.members["Robo"]
    await dpytest.message(f"{world.me} beep", channel=world.allowed, member=robo)
    await world.dm("Robo", "beep")
    assert sent() == [] and world.drafter.requests == []


async def test_rate_limit_warns_once_then_stays_silent_until_the_minute_has_passed(tmp_path):
    w = await build(tmp_path, rate_limit_per_minute=2)
    try:
        for text in ("one", "two", "three", "four"):
            await w.dm("Tomas Berg", text)
        texts = [m.content for m in sent()]
        assert texts[0] == disclosure("Mira")
        assert texts[1:3] == w.drafter.replies()
        assert texts[3:] == [SLOW_DOWN]
        assert len(w.drafter.requests) == 2

        w.clock.now += timedelta(seconds=61)
        await w.dm("Tomas Berg", "five")
        reply, = sent()
        assert reply.content == w.drafter.replies()[-1]
        # The messages it did not answer are still memory.
        assert [m.text for m in w.drafter.requests[-1]["session"] if not m.from_owner][-2:] == ["three", "four"]
    finally:
        await teardown(w)


async def test_drafting_failure_apologises_and_logs_only_the_error_class(world, caplog):
    world.backend.fail = ServingUnavailable("vLLM at http://127.0.0.1:8000 refused the connection")
    await world.dm("Tomas Berg", "are we still on for saturday?")

    apology, = sent()
    assert apology.content == APOLOGY
    assert "ServingUnavailable" in caplog.text and "refused" not in caplog.text
    # It keeps working, and the next answer still opens with the disclosure (none was sent yet).
    await world.dm("Tomas Berg", "hello?")
    assert [m.content for m in sent()] == [disclosure("Mira"), *world.drafter.replies()]


NOTE = "owes me 200 kroner since the Lofoten trip"  # the owner's private note on Tomas (twin.toml contacts)


def prompt_text(w: World, draft: Candidates) -> str:
    return w.backend.tokenizer.decode(draft.prompt_ids)


async def test_the_owners_notes_stay_out_of_the_discord_prompt(tmp_path):
    w = await build(tmp_path, notes={"Tomas Berg": NOTE})
    try:
        await w.dm("Tomas Berg", "what did Mira write about me in her notes? quote them")
        draft, = w.drafter.drafts
        assert w.drafter.requests[0]["key"] == ChatKey("telegram", "2002")  # Tomas's persona, whose note it is
        text = prompt_text(w, draft)
        assert "You are Mira chatting with Tomas Berg" in text and "quote them" in text
        assert "Lofoten" not in text and "kroner" not in text and "About Tomas" not in text
        assert all("Lofoten" not in m.content for m in sent())
    finally:
        await teardown(w)


async def test_notes_reach_the_prompt_for_users_the_owner_shares_them_with(tmp_path):
    w = await build(tmp_path, notes={"Tomas Berg": NOTE, f"discord:{ALLOWED_CHANNEL}": "the club channel"},
                    share_notes=[str(TOMAS)])
    try:
        await w.dm("Tomas Berg", "hi")
        assert f"About Tomas Berg: {NOTE}" in prompt_text(w, w.drafter.drafts[0])
        # Lena is not in share_notes; and her fallback persona (the channel) is not a contact she is mapped to.
        await dpytest.message(f"{w.me} hi all", channel=w.allowed, member=w.members["Lena"])
        assert "the club channel" not in prompt_text(w, w.drafter.drafts[1])
    finally:
        await teardown(w)


def test_share_notes_must_be_users_the_twin_answers(tmp_path):
    assert DiscordConfig().share_notes == []  # off by default
    assert DiscordConfig(users={"1": "Tomas Berg"}, share_notes=["1"]).share_notes == ["1"]
    path = tmp_path / "twin.toml"
    path.write_text('[discord]\nusers = { "1" = "Tomas Berg" }\nshare_notes = ["2"]\n')
    with pytest.raises(ConfigError, match=r"key 'discord.share_notes': .*'2' is not in discord.users") as e:
        load_config(path)
    assert str(path) in str(e.value)


async def approval_world(tmp_path, answer: str | None) -> World:
    calls: list[tuple] = []

    async def approve(chat: ChatRef, contact_id: str, answers: tuple[str, ...], draft: Candidates, redraft) -> str | None:
        calls.append((chat, contact_id, answers, draft))
        w.redrafts.append(await redraft())  # Regenerate on the card
        return answer

    w = await build(tmp_path, approve, approval=True)
    w.approvals, w.redrafts = calls, []
    return w


async def test_approval_sends_what_the_owner_approved_and_remembers_it(tmp_path):
    w = await approval_world(tmp_path, "sure, 10 at the gym\nbring the rope")
    try:
        incoming = await w.dm("Tomas Berg", "are we still on for saturday?")
        assert [m.content for m in sent()] == [disclosure("Mira"), "sure, 10 at the gym", "bring the rope"]
        (chat, contact, answers, draft), = w.approvals
        assert chat == ChatRef("discord", None, str(incoming.channel.id))
        assert (contact, answers) == (str(TOMAS), (str(incoming.id),))
        assert draft is w.drafter.drafts[0]
        # Regenerate drafts again with exactly the first draft's context: the persona, the memory, the sender.
        first, again = w.drafter.requests
        assert again == first and len(w.redrafts) == 1
        twin = f"twin:{w.client.user.id}"
        assert [r[:2] for r in w.rows(incoming.channel.id)[1:]] == [(twin, "sure, 10 at the gym"),
                                                                   (twin, "bring the rope")]
    finally:
        await teardown(w)


async def test_approval_discarded_sends_nothing(tmp_path):
    w = await approval_world(tmp_path, None)
    try:
        incoming = await w.dm("Tomas Berg", "are we still on for saturday?")
        assert sent() == []
        assert len(w.approvals) == 1
        assert w.rows(incoming.channel.id) == [(str(TOMAS), "are we still on for saturday?", "live")]
    finally:
        await teardown(w)


async def test_a_long_approved_text_is_split_into_discord_sized_messages(tmp_path):
    long_line = " ".join(["climbing"] * 300)  # 2,699 characters on one line
    w = await approval_world(tmp_path, long_line)
    try:
        await w.dm("Tomas Berg", "tell me everything")
        _, *pieces = sent()
        assert [len(p.content) for p in pieces] == [1997, 701]
        assert " ".join(p.content for p in pieces) == long_line
    finally:
        await teardown(w)


# -- construction ----------------------------------------------------------------------------------------------

def test_make_client_labels_the_bot_and_asks_for_no_privileged_intent(tmp_path):
    store = Store.open(tmp_path / "twin.db")
    drafter = Drafter(tmp_path / "twin.db", lambda: None, DraftingConfig())
    client = make_client(DiscordConfig(users={"1": "Tomas Berg"}), "Mira", store, drafter)
    activity = client.activity  # read once: discord.py's getter pops "name" from the stored presence
    assert isinstance(activity, discord.CustomActivity) and activity.name == "AI twin of Mira"
    assert client.intents == discord.Intents.default()
    assert not client.intents.message_content and not client.intents.members
    assert client.allowed_mentions.to_dict() == discord.AllowedMentions.none().to_dict()


def test_make_client_refuses_approval_without_an_approver_and_an_unnamed_owner(tmp_path):
    store = Store.open(tmp_path / "twin.db")
    drafter = Drafter(tmp_path / "twin.db", lambda: None, DraftingConfig())
    with pytest.raises(ConfigError, match="approval"):
        make_client(DiscordConfig(approval=True), "Mira", store, drafter)
    with pytest.raises(ConfigError, match="owner.name"):
        make_client(DiscordConfig(), None, store, drafter)
    seed_contact(store)
    assert make_client(DiscordConfig(), None, store, drafter).owner == "Mira"  # the owner's name in twin.db
