"""Generate a synthetic Telegram Desktop full export (result.json) of a fictional person, Mira Solberg.

The file has the shape of Settings → Advanced → Export Telegram data → JSON (tdesktop's JsonWriter):
`about`, `personal_information`, `chats.list` with personal chats, a private supergroup, Saved Messages, a
bot chat and a public channel. Dates are the owner's local wall-clock time (Europe/Oslo rules: UTC+1, UTC+2
in summer) without an offset, as tdesktop writes them; `date_unixtime` is the truth. Everything is
invented: the people, the places, the email address and phone number in a few messages.

The people and what they say live in sample_persona.py, the turning of topics into timed messages
in sample_dialogue.py. Deterministic: stdlib only, one seeded random.Random, so
the defaults reproduce the committed file byte for byte:

    python examples/make_sample.py                  # writes examples/sample_export/result.json
    python examples/make_sample.py --seed 8 --out /tmp/other/result.json
"""

import argparse
import json
import random
import re
from datetime import datetime, timedelta
from pathlib import Path

import sample_persona as persona
from sample_dialogue import (DAYS, START, Msg, chat_sessions, local_moment, local_string, make_message,
                             to_unix)

DEFAULT_SEED = 7
DEFAULT_OUT = Path(__file__).resolve().parent / "sample_export" / "result.json"
SESSION_GAP = 3600  # DESIGN.md: a gap strictly greater than 60 minutes starts a new session
FIRST_SHARED_ID = 40117  # personal chats share one message-id counter per account, as on Telegram
SKIPPED = "(File not included. Change data exporting settings to download.)"
IMPORTED_TYPES = ("personal_chat", "private_group", "private_supergroup")
ENTITY = re.compile(
    r"(?P<link>https?://\S+)"
    r"|(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
    r"|(?P<mention>(?<![\w@])@\w{5,})"
    r"|(?P<hashtag>(?<!\w)#\w+)"
    r"|(?P<bot_command>(?<!\S)/\w+)"
    r"|(?P<phone>\+\d{2}(?: \d{2,3}){3})"
)


def text_fields(text: str) -> tuple[str | list, list]:
    """tdesktop's two renderings: `text` is a string for one plain part, else a list mixing strings and
    {type, text} objects; `text_entities` is always a list of objects."""
    if not text:
        return "", []
    parts, pos = [], 0
    for match in ENTITY.finditer(text):
        if match.start() > pos:
            parts.append(("plain", text[pos:match.start()]))
        parts.append((match.lastgroup, match.group()))
        pos = match.end()
    if pos < len(text):
        parts.append(("plain", text[pos:]))
    entities = [{"type": kind, "text": part} for kind, part in parts]
    if len(parts) == 1 and parts[0][0] == "plain":
        return text, entities
    return [part if kind == "plain" else {"type": kind, "text": part} for kind, part in parts], entities


# --- the export ------------------------------------------------------------------------------------


def sender_name_and_id(sender: str) -> tuple[str, str]:
    if sender == "me":
        return f"{persona.OWNER['first_name']} {persona.OWNER['last_name']}", f"user{persona.OWNER['id']}"
    if sender == "channel":
        return persona.CHANNEL["name"], f"channel{persona.CHANNEL['id']}"
    person = persona.PEOPLE[sender]
    return person["name"], f"user{person['id']}"


def media_fields(rng: random.Random, message: Msg) -> dict:
    if message.kind == "photo":
        width, height = rng.choice([(1280, 960), (960, 1280), (1280, 720), (1280, 1280)])
        return {"photo": SKIPPED, "photo_file_size": rng.randint(60_000, 260_000), "width": width,
                "height": height}
    if message.kind == "sticker":
        animated = rng.random() < 0.3
        return {"file": SKIPPED, "file_name": "AnimatedSticker.tgs" if animated else "sticker.webp",
                "file_size": rng.randint(9_000, 60_000), "thumbnail": SKIPPED,
                "thumbnail_file_size": rng.randint(3_000, 12_000), "media_type": "sticker",
                "sticker_emoji": message.extra["emoji"],
                "mime_type": "application/x-tgsticker" if animated else "image/webp",
                "width": 512, "height": 512}
    if message.kind == "voice":
        seconds = rng.randint(4, 75)
        return {"file": SKIPPED, "file_size": seconds * rng.randint(1_800, 2_400),
                "media_type": "voice_message", "mime_type": "audio/ogg", "duration_seconds": seconds}
    return {}


def to_json(rng: random.Random, message: Msg) -> dict:
    """One message object with tdesktop's key order (SerializeMessage)."""
    out = {"id": message.id, "type": "service" if message.kind == "service" else "message",
           "date": local_string(message.ts), "date_unixtime": str(message.ts)}
    if message.edited:
        out["edited"] = local_string(message.edited)
        out["edited_unixtime"] = str(message.edited)
    name, from_id = sender_name_and_id(message.sender)
    if message.kind == "service":
        out.update({"actor": name, "actor_id": from_id})
        out.update(message.extra)
    else:
        out.update({"from": name, "from_id": from_id})
        if message.forwarded_from:
            out["forwarded_from"] = message.forwarded_from
        if message.reply_to is not None:
            out["reply_to_message_id"] = message.reply_to.id
        out.update(media_fields(rng, message))
    out["text"], out["text_entities"] = text_fields(message.text)
    return out


def group_messages(rng: random.Random, chat: dict) -> list[Msg]:
    group = persona.GROUP
    joined = to_unix(datetime.combine(START, datetime.min.time())
                     + timedelta(days=group["late_member_day"], hours=19, minutes=14))

    def members_at(ts: int) -> list[str]:
        return group["founders"] + ([group["late_member"]] if ts > joined else [])

    messages = chat_sessions(rng, chat, members_at)
    names = [persona.PEOPLE[key]["name"] for key in group["founders"]]
    first_day = datetime.fromisoformat(local_string(messages[0].ts)).replace(hour=20, minute=13, second=5)
    created = Msg("me", "service", ts=to_unix(first_day - timedelta(days=2)),
                  extra={"action": "create_group", "title": group["name"], "members": names})
    invited = Msg(group["late_member_inviter"], "service", ts=joined,
                  extra={"action": "invite_members", "members": [persona.PEOPLE[group["late_member"]]["name"]]})
    messages = [created] + messages
    messages.insert(next(i for i, m in enumerate(messages) if m.ts > joined), invited)
    # The first cabin-trip plan gets pinned by whoever posted it.
    said = [m for m in messages if m.kind != "service"]
    plan = next((m for m in said if m.text.startswith("Cabin trip")), said[0])
    pin = Msg(plan.sender, "service", ts=plan.ts + rng.randint(20, 90), extra={"action": "pin_message"})
    pin.reply_to = plan
    messages.insert(next(i for i, m in enumerate(messages) if m.ts > pin.ts), pin)
    return messages


def small_chats(rng: random.Random) -> dict[str, list[Msg]]:
    """Saved Messages, the bot chat and the channel: present in a full export, skipped by the importer."""
    saved = []
    for day, note in zip(sorted(rng.sample(range(DAYS), len(persona.SAVED_NOTES))), persona.SAVED_NOTES):
        message = make_message("me", note.replace(" // ", "\n") if not note.startswith("FWD:") else note)
        message.ts = local_moment(rng, (7, 23), 0.1, day=day)
        saved.append(message)
    bot = []
    for day, (command, answer) in zip(sorted(rng.sample(range(DAYS), len(persona.BOT_EXCHANGES))),
                                      persona.BOT_EXCHANGES):
        ts = local_moment(rng, (7, 22), 0.0, day=day)
        bot += [Msg("me", text=command, ts=ts), Msg("bot", text=answer, ts=ts + rng.randint(1, 3))]
    channel = []
    for number, post in enumerate(persona.CHANNEL_POSTS):
        channel.append(Msg("channel", text=post, ts=local_moment(rng, (8, 16), 0.0, day=2 + 4 * number)))
    return {"saved": saved, "bot": bot, "channel": channel}


def build(seed: int) -> dict:
    rng = random.Random(seed)
    per_chat: dict[str, list[Msg]] = {}
    for chat in persona.CHATS:
        if chat["key"] == "group":
            per_chat["group"] = group_messages(rng, chat)
        else:
            per_chat[chat["key"]] = chat_sessions(rng, chat, lambda ts: [])
    per_chat.update(small_chats(rng))

    # One id counter for the account's personal chats, Saved Messages and bot chat; supergroups and
    # channels count their own (Telegram's message-id scopes).
    shared = sorted(((m.ts, order, m) for order, key in enumerate(per_chat)
                     if key not in ("group", "channel") for m in per_chat[key]), key=lambda x: (x[0], x[1]))
    for number, (_, _, message) in enumerate(shared):
        message.id = FIRST_SHARED_ID + number
    for key in ("group", "channel"):
        for number, message in enumerate(per_chat[key], start=1):
            message.id = number
    for message in per_chat["group"]:
        if message.extra.get("action") == "pin_message":
            message.extra = {"action": "pin_message", "message_id": message.reply_to.id}
            message.reply_to = None

    def chat_object(name: str | None, kind: str, chat_id: int, messages: list[Msg]) -> dict:
        head = {} if name is None else {"name": name}
        return {**head, "type": kind, "id": chat_id, "messages": [to_json(rng, m) for m in messages]}

    chats = [chat_object(None, "saved_messages", persona.OWNER["id"], per_chat.pop("saved"))]
    others = []
    for key, messages in per_chat.items():
        if key == "group":
            others.append(chat_object(persona.GROUP["name"], "private_supergroup", persona.GROUP["id"], messages))
        elif key == "channel":
            others.append(chat_object(persona.CHANNEL["name"], "public_channel", persona.CHANNEL["id"], messages))
        else:
            person = persona.PEOPLE[key]
            kind = "bot_chat" if key == "bot" else "personal_chat"
            others.append(chat_object(person["name"], kind, person["id"], messages))
    # Like the dialogs list: most recent conversation first.
    others.sort(key=lambda chat: -int(chat["messages"][-1]["date_unixtime"]))

    owner = persona.OWNER
    return {
        "about": "Synthetic sample export of a fictional person, made by examples/make_sample.py for the "
                 "twin project. It follows the layout of a Telegram Desktop JSON export; nothing in it is real.",
        "personal_information": {
            "user_id": owner["id"], "first_name": owner["first_name"], "last_name": owner["last_name"],
            "phone_number": owner["phone_number"], "username": owner["username"], "bio": owner["bio"],
        },
        "chats": {"about": "Every chat in this sample export, with its messages.", "list": chats + others},
    }


def summarize(export: dict) -> dict:
    """Counts over what the importer takes by default (personal chats and private groups)."""
    owner_id = f"user{export['personal_information']['user_id']}"
    counts = {"chats": len(export["chats"]["list"]), "imported_chats": 0, "messages": 0, "owner_messages": 0,
              "sessions": 0}
    for chat in export["chats"]["list"]:
        if chat["type"] not in IMPORTED_TYPES:
            continue
        counts["imported_chats"] += 1
        last = None
        for message in chat["messages"]:
            if message["type"] != "message":
                continue
            ts = int(message["date_unixtime"])
            counts["messages"] += 1
            counts["owner_messages"] += message["from_id"] == owner_id
            counts["sessions"] += last is None or ts - last > SESSION_GAP
            last = ts
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write result.json")
    args = parser.parse_args()
    export = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as handle:
        json.dump(export, handle, ensure_ascii=False, indent=1)
    counts = summarize(export)
    print(f"wrote {args.out}")
    print(f"chats {counts['chats']} ({counts['imported_chats']} imported by default)  "
          f"messages {counts['messages']}  owner messages {counts['owner_messages']}  "
          f"sessions {counts['sessions']}")


if __name__ == "__main__":
    main()
