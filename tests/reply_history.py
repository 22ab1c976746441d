"""A synthetic owner's history with the habit the reply model learns: she answers questions and plans, and leaves
"ok 👍", "thanks!", a sticker at the end of a plan unanswered (with a little noise both ways). Used by
tests/test_reply_model.py and docs/benchmarks.md's reply-model numbers (`python tests/reply_history.py DB`).
"""

from __future__ import annotations

import random
import sys
from datetime import datetime, timedelta, timezone

from twin.chat import Chat, Message, telegram_user
from twin.store import Store

OWNER = telegram_user(5550100001)
START = datetime(2025, 1, 6, 8, tzinfo=timezone.utc)

ASKS = ["are you free {day}?", "climbing {day}?", "dinner {day}? my treat", "can you take my shift {day}?",
        "how was the trip?", "did you see the new route at the gym?", "what time works {day}?",
        "could you lend me your rope {day}", "any plans {day}?", "is the shop open {day}?",
        "where did we park last time?", "want to come to the cabin {day}?", "do you still have my jacket?"]
PLANS = ["{h} at the crag then", "perfect, {h} at the gym", "ok so {h} at mine", "great, see you {day} at {h}",
         "booked for {h}", "deal, {h} it is"]
ACKS = ["ok 👍", "👍", "thanks!", "great", "cool", "perfect 🙌", "haha ok", "❤️", "ok", "thank you!!", "nice",
        "sounds good", "😂😂", "see you then", "yay", "ok cool", "🙏"]
STICKERS = ["👍", "😘", "🎉"]
REPLIES = ["yes! {h}?", "sure, {h} works", "can't {day}, sorry, maybe next week?", "it was great, tired now",
           "no idea, ask Erik", "yes come by", "haha yes"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "tonight", "tomorrow"]


def history(contacts: dict[int, str], sessions: int = 150, seed: int = 4, noise: float = 0.02) -> list[Message]:
    """Messages of one personal chat per contact ({telegram id: name}), `sessions` conversations each, a few
    hours apart."""
    rnd = random.Random(seed)
    out: list[Message] = []
    for uid, name in contacts.items():
        t = START + timedelta(minutes=rnd.randint(0, 600))
        chat = str(uid)
        msg_id = 50_000  # clear of the ids the relay tests give live messages

        def say(who: str, text: str, kind: str = "text") -> None:
            nonlocal t, msg_id
            msg_id += 1
            t += timedelta(seconds=rnd.randint(20, 400))
            sender = OWNER if who == "owner" else telegram_user(uid)
            out.append(Message("telegram", chat, str(msg_id), sender, "Mira" if who == "owner" else name, t, text,
                               kind))

        fill = lambda s: s.format(day=rnd.choice(DAYS), h=rnd.choice(["7", "8", "6:30", "noon"]))  # noqa: E731
        for _ in range(sessions):
            say("contact", fill(rnd.choice(ASKS)))
            say("owner", fill(rnd.choice(REPLIES)))
            if rnd.random() < 0.6:  # a plan, settled with an acknowledgement the owner leaves be
                say("contact", fill(rnd.choice(PLANS)))
                say("owner", rnd.choice(["👍 see you", "great!", "yes", "see you there"]))
                if rnd.random() < 0.2:
                    say("contact", rnd.choice(STICKERS), "sticker")
                else:
                    say("contact", rnd.choice(ACKS))
                if rnd.random() < noise:
                    say("owner", "🙂")
            elif rnd.random() < noise:  # a question left unanswered now and then
                say("contact", fill(rnd.choice(ASKS)))
            else:
                say("contact", fill(rnd.choice(ASKS)))
                say("owner", fill(rnd.choice(REPLIES)))
            t += timedelta(hours=rnd.randint(3, 40))
    return out


def fill_store(store: Store, contacts: dict[int, str], **kw) -> int:
    """Import the history into a store as an export would; the messages added."""
    messages = history(contacts, **kw)
    with store.transaction():
        store.set_owner("telegram", OWNER, "Mira")
        for uid, name in contacts.items():
            store.upsert_chat(Chat("telegram", str(uid), "personal", name))
        t = int(START.timestamp())
        store.upsert_names("telegram", {(telegram_user(uid), name): (t, t) for uid, name in contacts.items()})
        return store.insert_messages(messages)


if __name__ == "__main__":
    with Store.open(sys.argv[1]) as s:
        print(fill_store(s, {5550100102: "Tomas", 5550100103: "Sofie", 5550100104: "Jonas"}))
