"""Conversations for the sample export: a persona's topic templates become timed messages.

Used by make_sample.py (run `python examples/make_sample.py`); the templates' grammar is described in
sample_persona.py. Times follow the owner's local day (Europe/Oslo) and are returned as Unix seconds.
"""

import random
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import sample_persona as persona

START = date(2024, 2, 12)  # first day of the export window, owner's local date
DAYS = 230  # about seven and a half months
MARKERS = ("PHOTO:", "STICKER:", "VOICE:", "FWD:")  # media markers in templates
ALTERNATIVE = re.compile(r"<([^<>]*)>")
ADDRESS = re.compile(r"https?://\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass
class Msg:
    """One message before it is written out; `sender` is "me", a key of persona.PEOPLE or "channel"."""

    sender: str
    kind: str = "text"  # text | photo | sticker | voice | service
    text: str = ""
    ts: int = 0
    forwarded_from: str | None = None
    reply_to: "Msg | None" = None
    edit_after: int | None = None  # seconds after sending that the sender edited it
    edited: int | None = None
    extra: dict = field(default_factory=dict)
    id: int = 0


# --- time ------------------------------------------------------------------------------------------


def _last_sunday(year: int, month: int) -> date:
    day = date(year, month, 31)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def utc_offset(ts: int) -> timedelta:
    """Europe/Oslo offset at `ts`: summer time from 01:00 UTC on the last Sunday of March to 01:00 UTC on
    the last Sunday of October (EU rule), computed by hand so that no tz database is needed."""
    moment = datetime.fromtimestamp(ts, timezone.utc)
    year = moment.year
    begin = datetime.combine(_last_sunday(year, 3), datetime.min.time(), timezone.utc) + timedelta(hours=1)
    end = datetime.combine(_last_sunday(year, 10), datetime.min.time(), timezone.utc) + timedelta(hours=1)
    return timedelta(hours=2 if begin <= moment < end else 1)


def local_string(ts: int) -> str:
    return (datetime.fromtimestamp(ts, timezone.utc) + utc_offset(ts)).strftime("%Y-%m-%dT%H:%M:%S")


def to_unix(local: datetime) -> int:
    guess = int(local.replace(tzinfo=timezone.utc).timestamp()) - 3600
    return guess - 3600 if utc_offset(guess - 3600) == timedelta(hours=2) else guess


def local_moment(rng: random.Random, hours: tuple[int, int], late: float, day: int | None = None) -> int:
    """A random moment in the window: a day, then an hour in `hours`, sometimes late at night."""
    day = rng.randrange(DAYS) if day is None else day
    hour = rng.choice([23, 24, 25]) if rng.random() < late else rng.randrange(*hours)
    local = datetime.combine(START, datetime.min.time()) + timedelta(
        days=day, hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60))
    return to_unix(local)


# --- text ------------------------------------------------------------------------------------------


def expand(template: str, rng: random.Random, slots: dict) -> list[str]:
    """Pick alternatives, fill slots, split the burst: '<hi|yo> {day} // ok' -> ['yo Monday', 'ok']."""
    while match := ALTERNATIVE.search(template):
        choice = rng.choice(match.group(1).split("|"))
        template = template[:match.start()] + choice + template[match.end():]
    text = template.format_map(slots)
    parts = [re.sub(r"\s+([,?!])", r"\1", " ".join(part.split())) for part in text.split("//")]
    return [part for part in parts if part]


def owner_voice(text: str) -> str:
    """Mira's spelling: all lowercase, no apostrophes, 'tmrw', never a full stop."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"\btomorrow\b", "tmrw", text)
    text = text.rstrip(". ")
    if "." in ADDRESS.sub("", text):
        raise ValueError(f"owner template breaks the voice: {text!r}")
    return text


def has_emoji(text: str) -> bool:
    return any(ord(char) > 0x2100 for char in text)


# --- conversations ---------------------------------------------------------------------------------


def draw_slots(rng: random.Random) -> dict:
    slots = {name: rng.choice(values) for name, values in persona.SLOTS.items()}
    slots["route"], slots["grade"], slots["crag"] = rng.choice(persona.ROUTES)
    slots["part"], slots["problem"], slots["fix"] = rng.choice(persona.REPAIRS)
    slots["topo"] = "https://example.com/topo/" + slots["crag"].lower()
    slots["trailer"] = "https://example.org/trailer/" + re.sub(r"\W+", "-", slots["film"].lower())
    return slots


def make_message(sender: str, part: str) -> Msg:
    """One burst part → a message; markers make media (see sample_persona's docstring)."""
    if part.startswith("PHOTO:"):
        return Msg(sender, "photo", part[len("PHOTO:"):].strip())
    if part.startswith("STICKER:"):
        return Msg(sender, "sticker", extra={"emoji": part[len("STICKER:"):]})
    if part.startswith("VOICE:"):
        return Msg(sender, "voice")
    if part.startswith("FWD:"):
        key = part[len("FWD:"):]
        if key.isdigit():
            return Msg(sender, forwarded_from=persona.CHANNEL["name"], text=persona.CHANNEL_POSTS[int(key)])
        source, text = persona.OUTSIDE_FORWARDS[key]
        return Msg(sender, forwarded_from=source, text=text)
    return Msg(sender, text=part if sender != "me" else owner_voice(part))


class Conversation:
    """Turns a topic into the messages of one session for one chat."""

    def __init__(self, rng: random.Random, chat: dict, members: list[str], slots: dict, memory: dict):
        self.rng, self.chat, self.members, self.slots = rng, chat, members, slots
        self.talked = memory["talked"]  # small-talk steps used in this chat so far, most recent last
        self.news = memory["news"]  # one-off news not told yet
        self.messages: list[Msg] = []
        self.asides: list[str] = []

    def speaker(self, who: str) -> str:
        if who == "me":
            return "me"
        if self.chat["key"] != "group":
            return self.chat["key"]
        previous = self.messages[-1].sender if self.messages else None
        if who in self.members and who != previous:
            return who
        return self.rng.choice([member for member in self.members if member != previous] or self.members)

    def say(self, line: tuple, prefix: str | None = None, aside: bool = True) -> None:
        rng = self.rng
        sender = self.speaker(line[0])
        parts = expand(rng.choice(line[1]), rng, self.slots)
        if sender == "me":
            if len(parts) > 1 and rng.random() < 0.35 and not any(part.startswith(MARKERS) for part in parts):
                parts = [" ".join(parts)]  # the same thought as one run-on message
            if prefix:
                parts = expand(prefix, rng, self.slots) + parts
            elif self.chat["reactions"] and rng.random() < 0.1 and not parts[0].startswith(persona.ACKS):
                parts.insert(0, rng.choice(self.chat["reactions"]))
        else:
            parts[0] = self.flourish(parts[0])
        burst = [make_message(sender, part) for part in parts]
        texts = [m for m in burst if m.kind == "text" and not m.forwarded_from]
        if sender == "me" and texts and rng.random() < 0.05 and not any(has_emoji(m.text) for m in burst):
            texts[-1].text += " " + self.chat["emoji"]
        asked = any("?" in m.text for m in burst)
        if not asked and rng.random() < (0.03 if sender == "me" else 0.04):
            emoji = rng.choice(persona.OWNER_STICKERS if sender == "me" else self.chat["stickers"])
            burst.append(Msg(sender, "sticker", extra={"emoji": emoji}))
        group_aside = False
        if sender != "me" and aside and rng.random() < self.chat["aside"]:
            if self.chat["key"] == "group":
                group_aside = True
            else:
                burst.append(Msg(sender, text=self.aside()))
        self.reply_and_edit(burst)
        self.messages.extend(burst)
        if group_aside:
            self.say(("any", (self.aside(),)), aside=False)

    def aside(self) -> str:
        """A contact's throwaway second message, never the same one twice in a session."""
        options = [a for a in persona.ASIDES[self.chat["key"]] if a not in self.asides]
        self.asides.append(self.rng.choice(options))
        return expand(self.asides[-1], self.rng, self.slots)[0]

    def flourish(self, text: str) -> str:
        """Now and then a contact opens with 'Okay, ' or closes with one of their emoji."""
        prefixes, emoji = persona.FLOURISHES[self.chat["key"]]
        first = text.split(" ", 1)[0].rstrip(",")
        if first in persona.STARTERS and self.rng.random() < 0.25:
            prefix = self.rng.choice(prefixes)
            text = prefix + (text if prefix.endswith(". ") else text[0].lower() + text[1:])
        if emoji and not has_emoji(text) and not text.startswith(MARKERS) and self.rng.random() < 0.12:
            text += " " + self.rng.choice(emoji)
        return text

    def reply_and_edit(self, burst: list[Msg]) -> None:
        rng = self.rng
        others = [m for m in self.messages if m.sender != burst[0].sender]
        chance = 0.15 if self.chat["key"] == "group" else 0.07
        if others and rng.random() < chance:
            burst[0].reply_to = others[-1] if rng.random() < 0.75 else rng.choice(others)
        for message in burst:
            if message.kind == "text" and not message.forwarded_from and rng.random() < 0.03:
                message.edit_after = rng.randint(5, 400)

    def run(self, topic: dict, mode: str) -> list[Msg]:
        rng = self.rng
        if mode == "followup":  # a later conversation about what was settled (sample_facts.py)
            lines = list(topic["followup"])
            for number, line in enumerate(lines):
                self.say(line)
            return self.messages
        if mode == "own" and topic["own"]:
            lines = list(topic["own"])
        elif mode == "own":
            lines = [("me", tuple(persona.POKES[self.chat["key"]]))] + list(topic["start"])
        else:
            lines = list(topic["start"])
        lead = 0
        while lead < len(lines) and lines[lead][0] != "me":
            lead += 1
        if mode == "ignored":
            lines = lines[:lead]
        else:
            if mode == "apology":
                lines = lines[lead:]
            low, high = self.chat["steps"]
            count = min(len(topic["steps"]), rng.randint(low, high))
            steps = [topic["steps"][i] for i in sorted(rng.sample(range(len(topic["steps"])), count))]
            recurring = persona.TALK[self.chat["key"]]
            recent = self.talked[-(len(recurring) // 2):]
            pool = [step for step in recurring if all(step is not used for used in recent)] + self.news
            for step in rng.sample(pool, min(len(pool), rng.randint(*self.chat["talk"]))):
                # never after the last step: topics often end with a goodbye
                steps.insert(rng.randint(0, max(0, len(steps) - 1)), step)
                self.talked.append(step)
                self.news[:] = [news for news in self.news if news is not step]
            for step in steps:
                lines.extend(step)
        for number, line in enumerate(lines):
            apology = rng.choice(persona.APOLOGIES) if mode == "apology" and number == 0 else None
            self.say(line, prefix=apology)
        return self.messages


def stamp(rng: random.Random, messages: list[Msg], start: int) -> int:
    """Give a session's messages times: seconds inside a burst, seconds to ~45 minutes between turns."""
    now, previous = start, None
    for message in messages:
        if previous is not None:
            if message.sender == previous.sender:
                now += rng.randint(3, 20) + len(message.text) // 8
            else:
                roll = rng.random()
                delay = (rng.randint(8, 90) if roll < 0.55 else rng.randint(90, 600) if roll < 0.85
                         else rng.randint(600, 1500) if roll < 0.97 else rng.randint(1500, 2700))
                now += delay + len(message.text) // 5
        message.ts = now
        if message.edit_after:
            message.edited = now + message.edit_after
        previous = message
    return now


def pick_topic(rng: random.Random, topics: list[dict], recent: list[dict]) -> dict:
    """A weighted topic, not one of the last two (people rarely repeat a conversation at once)."""
    pool = [t for t in topics if not t["once"] and all(t is not r for r in recent[-2:])]
    return rng.choices(pool, weights=[t["weight"] for t in pool])[0]


def chat_sessions(rng: random.Random, chat: dict, members_at) -> list[Msg]:
    """All sessions of one chat, in order, at least two hours apart."""
    total = chat["sessions"]
    starts = sorted(local_moment(rng, chat["hours"], chat["late"]) for _ in range(total))
    once = [t for t in chat["topics"] if t["once"]]
    # One-off topics, each due at a session index; one waits if an apology takes its turn.
    due = sorted(zip(rng.sample(range(total // 4, total), len(once)), range(len(once))))
    messages: list[Msg] = []
    end, last_slots, ignored, recent = None, None, False, []
    memory = {"talked": [], "news": list(persona.NEWS[chat["key"]])}
    followups: list[tuple[int, int, dict, dict]] = []  # (due index, order, topic, slots)
    # The closings draw from their own stream, so adding them left every other message of the sample as it was.
    closing = random.Random(f"{chat['key']}-closing")
    for index, start in enumerate(starts):
        if ignored:
            start = end + rng.randint(2 * 3600, 14 * 3600)
        elif end is not None and start < end + 2 * 3600:
            start = end + rng.randint(2 * 3600, 6 * 3600)
        if ignored:
            topic, slots, mode = recent[-1], last_slots, "apology"
        elif due and due[0][0] <= index:
            topic, slots, mode = once[due.pop(0)[1]], draw_slots(rng), "normal"
        elif followups and followups[0][0] <= index:
            _, _, topic, slots = followups.pop(0)
            mode = "followup"
        else:
            topic, slots = pick_topic(rng, chat["topics"], recent), draw_slots(rng)
            roll = rng.random()
            can_ignore = topic["start"][0][0] != "me" and index < total - 1 - len(due)
            can_start = topic["own"] or chat["key"] in persona.POKES
            mode = ("ignored" if roll < chat["ignored"] and can_ignore
                    else "own" if roll < chat["ignored"] + chat["own"] and can_start
                    else "normal")
        conversation = Conversation(rng, chat, members_at(start), slots, memory)
        session = conversation.run(topic, mode)
        end = stamp(rng, session, start)
        close(closing, chat, session)
        messages.extend(session)
        recent.append(topic)
        if topic.get("followup") and mode in ("normal", "own", "apology"):
            followups.append((index + rng.randint(2, 6), index, topic, slots))
            followups.sort(key=lambda f: f[:2])
        last_slots, ignored = slots, mode == "ignored"
    return messages


def close(rng: random.Random, chat: dict, session: list[Msg]) -> None:
    """Now and then a contact closes a personal chat's conversation after Mira's last word with a message that
    needs no answer ("ok 👍", "thanks!!", a sticker), minutes later; Mira leaves it there. Sessions start hours
    apart, so the closing stays in its own session."""
    closings = persona.CLOSINGS.get(chat["key"])
    if not closings or not session or session[-1].sender != "me" or rng.random() >= persona.CLOSING_SHARE:
        return
    if rng.random() < 0.25:
        message = Msg(chat["key"], "sticker", extra={"emoji": rng.choice(chat["stickers"])})
    else:
        message = Msg(chat["key"], text=rng.choice(closings))
    message.ts = session[-1].ts + rng.randint(20, 900)
    session.append(message)
