"""The words of the Telegram relay: the approval card, the connection note, help and refusal texts, and how an
approved text is cut into messages.

Pure text from values (a Draft, a Connection), so it is tested without Telegram; bot/telegram_relay.py sends it.
Telegram counts a message's length after entity parsing (the visible text, tags gone, `&amp;` one character) in
UTF-16 code units, and refuses a card whose HTML does not parse; so a card is measured as Telegram measures it,
the draft on it is never cut, the contact's words are shortened before they are escaped, and escaped HTML is
never cut.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, time as dtime, timezone

from bot.drafts import Draft, State
from bot.ledger import Connection, Ledger
from bot.skips import Skips
from twin.config import Config
from twin.paths import Home
from twin.text import split_text, utf16

# Bot API sendMessage: "Text of the message to be sent, 1-4096 characters after entities parsing".
MAX_TEXT_LENGTH = 4096
MAX_NAME = 64  # a contact's name on the card, at most (a display name can be long)
MAX_NOTE = 300
SHOWN_INCOMING = 6  # the contact's last messages on the card
MARK = "…"

STATE_LINES = {
    State.SENT: "✅ Sent", State.EDITED_SENT: "✅ Sent (edited)", State.DISCARDED: "🗑 Discarded",
    State.EXPIRED: "⌛ Expired", State.FAILED: "⚠️ Not sent", State.SUPERSEDED: "✍️ You answered by hand",
    State.SENDING: "⏳ Sending…", State.NO_REPLY: "🤐 No reply needed",
    State.UNSURE: "❓ This may or may not have reached them: check the chat, then tell me",
}

HELP = (
    "I draft replies to your Telegram chats in your voice; nothing is sent without your tap.\n"
    "Forward me a contact's messages (from any chat) for replies to copy; /for <contact> then paste their "
    "messages, for any app (WhatsApp, Discord).\n"
    "/status — connection, model, pending drafts, today's numbers\n"
    "/pause, /resume — stop or restart drafting\n"
    "/auto <contact> on|off — send without asking, for one contact\n"
    "/draft <contact> — a draft for their last message, also one that looked like it needed no answer\n"
    "/privacy — what is stored and how to delete it\n"
    "/forget <contact> — delete everything stored about a contact\n"
    "/cancel — stop editing a draft"
)

REFUSAL = "This is a private assistant bot; it does not take messages. Sorry!"
FORGOTTEN = "🗑 Deleted with /forget: this draft and everything stored about the chat are gone."


def visible(card: str) -> str:
    """The text Telegram shows for an HTML card of ours: tags removed, entities decoded.

    >>> visible("<b>Tomas</b> · a &amp; b")
    'Tomas · a & b'
    """
    return html.unescape(re.sub(r"<[^>]*>", "", card))


def shorten(text: str, room: int) -> str:
    """`text` in at most `room` UTF-16 units: its start and its end with a mark between (the question is
    usually at the end). Whole when it fits; never splits a character.

    >>> shorten("see you at the crag at eight?", 13)
    'see yo…eight?'
    >>> shorten("short", 10), shorten("anything", 0)
    ('short', '')
    """
    if utf16(text) <= room:
        return text
    if room <= utf16(MARK):
        return ""
    budget = room - utf16(MARK)
    head_room = budget // 2
    head, used = [], 0
    for ch in text:
        if used + utf16(ch) > head_room:
            break
        head.append(ch)
        used += utf16(ch)
    tail, used = [], 0
    for ch in reversed(text):
        if used + utf16(ch) > budget - head_room:
            break
        tail.append(ch)
        used += utf16(ch)
    return "".join(head).rstrip() + MARK + "".join(reversed(tail)).lstrip()


def _fit_incoming(texts: list[str], room: int) -> list[str]:
    """The contact's messages in `room` units (each line costs its text plus "› " and a line break), newest
    kept first; older ones that find no room become one "› …" line."""
    lines: list[str] = []
    overhead = utf16("› \n")
    for i, text in enumerate(reversed(texts)):
        reserve = overhead + 1 if i + 1 < len(texts) else 0  # for the "…" line, should older ones not fit
        left = room - overhead - reserve
        if left < 12 and lines:
            lines.append(MARK)
            break
        piece = shorten(text, max(left, 0))
        if not piece:
            break
        lines.append(piece)
        room -= overhead + utf16(piece)
    return lines[::-1]


def pieces(text: str) -> list[str]:
    """The messages an approved text goes out as: one per line, a line over Telegram's limit split at a space
    (never cut off).

    >>> pieces("sure!\\n\\nsee you at 8")
    ['sure!', 'see you at 8']
    >>> [len(p) for p in pieces("word " * 1000)]
    [4094, 904]
    """
    lines = [line for line in text.split("\n") if line.strip()]
    return [p for line in lines for p in split_text(line, MAX_TEXT_LENGTH, utf16)] or [text]


def fits(d: Draft) -> bool:
    """Whether the candidate on the card can be shown whole (a draft too long for a card is never offered to
    send from it: the owner would approve text they never saw)."""
    return utf16(d.text) <= MAX_TEXT_LENGTH - 600  # the card's own lines of a pending draft stay under 600


def _when(t: datetime, now: datetime | None) -> str:
    return f"{t:%H:%M} UTC" if now is None or t.date() == now.date() else f"{t:%a %-d %b %H:%M} UTC"


def card_text(d: Draft, contact: str, incoming: list[str], note: str = "", now: datetime | None = None) -> str:
    """The approval card (HTML): who, what they wrote, the candidate, its deadline, its state.

    The candidate is shown whole or, when it is too long for any card, as a start with a notice (and `keyboard`
    offers no Send); everything else gives way to it: the contact's messages are shortened to the room left.
    """
    e = html.escape
    where = "Discord" if d.origin == "discord" else "Telegram"
    total = len(pieces(d.final_text or d.text))
    settled = d.state not in (State.PENDING, State.SENDING, State.UNSURE)
    candidate = d.text
    top = [f"<b>{e(shorten(contact, MAX_NAME))}</b> · {where}"]
    rest = ["", f"<b>Draft {d.shown + 1}/{len(d.candidates)}</b>" + (" (auto)" if d.auto else ""), None]
    if d.state == State.PENDING and d.expires_at:
        rest.append(f"<i>expires {_when(d.expires_at, now)}</i>")
    if d.remembered:  # memory was used (twin/memory.py): from which days, at most four
        rest.append(f"<i>remembered: {e(', '.join(d.remembered[-4:]))}</i>")
    if d.state in STATE_LINES:
        line = STATE_LINES[d.state]
        if d.state in (State.EDITED_SENT, State.SUPERSEDED) and d.final_text:
            line += f": {e(shorten(d.final_text, MAX_TEXT_LENGTH - 1000))}"
        rest.append(line)
    if d.sent_ids and (d.state != State.SENT and d.state != State.EDITED_SENT or len(d.sent_ids) < total):
        rest.append(f"<i>{len(d.sent_ids)} of {total} messages delivered</i>")
    if note and d.state in (State.PENDING, State.UNSURE, State.FAILED):
        rest.append(f"<i>{e(shorten(note, MAX_NOTE))}</i>")
    fixed = utf16(visible("\n".join(top + [x for x in rest if x is not None])))
    room = MAX_TEXT_LENGTH - fixed - 1  # the line break before the candidate
    if not settled and not fits(d):
        notice = (f"This draft is {utf16(candidate)} characters, too long to show whole here, so it cannot be "
                  "sent from this card: Edit to send your own text, or try the next one.")
        candidate = shorten(candidate, max(room - utf16(notice) - 1, 0)) + "\n" + notice
    elif utf16(candidate) > room:  # settled: what went out is on the card already, and the candidate gives way
        candidate = shorten(candidate, max(room, 0))
    rest[2] = e(candidate)
    room = MAX_TEXT_LENGTH - utf16(visible("\n".join(top + [x for x in rest if x is not None])))
    shown = _fit_incoming([t for t in incoming[-SHOWN_INCOMING:] if t.strip()], room)
    return "\n".join(top + [f"› {e(t)}" for t in shown] + [x for x in rest if x is not None])


def connection_note(conn: Connection) -> str:
    """What the owner is told when the connection changes."""
    if not conn.enabled:
        return "twin was disconnected from your account: no more drafts until you connect it again."
    can = {"can_reply": "reply for you (after your tap)", "can_read_messages": "mark messages as read"}
    rights = [text for key, text in can.items() if key in conn.rights]
    lines = ["Connected to your account. I will draft replies to your chats and show each one here first."]
    lines.append("I may: " + (", ".join(rights) if rights else "nothing beyond reading the chats you chose") + ".")
    if not conn.can_reply:
        lines.append("I may not reply for you, so drafts cannot be sent: allow 'Reply to messages' for the bot "
                     "in Settings → Telegram Business → Chatbots.")
    return "\n".join(lines)


def status_text(ledger: Ledger, model: str, adapter: str | None, now: datetime) -> str:
    """/status: the connection, the model, pending drafts and today's numbers."""
    conns = ledger.connections()
    if conns:
        c = conns[0]
        conn = ("connected" if c.enabled else "disconnected") + (", may reply" if c.can_reply else ", may NOT reply")
    else:
        conn = ("no Telegram Business connection: forward me messages, or /for NAME and paste them, for replies "
                "to copy (with Premium, Settings → Telegram Business → Chatbots lets me send them for you)")
    today = ledger.counts(datetime.combine(now.date(), dtime(), timezone.utc))
    made = sum(today.values())
    sent = today.get("sent", 0) + today.get("edited_sent", 0)
    return "\n".join([
        f"Connection: {conn}",
        f"Model: {model}, adapter {adapter or 'base'}",
        f"Drafting: {'paused' if ledger.paused else 'on'}",
        f"Pending drafts: {len(ledger.pending())}",
        f"Today: {made} drafts, {sent} sent ({today.get('edited_sent', 0)} edited), "
        f"{today.get('discarded', 0)} discarded, {today.get('expired', 0)} expired",
        f"No reply due (no card): {Skips(ledger.store).count(datetime.combine(now.date(), dtime(), timezone.utc))} "
        "today (/draft <contact> asks for one)",
    ])


def privacy_text(home: Home, cfg: Config) -> str:
    """/privacy: what is stored, where, and how to delete it. Kept true by tests/test_security.py."""
    backend = {"local": "the model inside twin on this machine",
               "vllm": f"your vLLM server at {cfg.drafting.vllm_url or cfg.serve.url}",
               "auto": f"your vLLM server at {cfg.drafting.vllm_url or cfg.serve.url} if it runs, "
                       "else the model inside twin on this machine"}[cfg.drafting.backend]
    training = ("are also training data (twin train, and twin learn on what you did with each draft), because "
                "telegram.train_on_live is on" if cfg.telegram.train_on_live
                else "are used only as context for drafts, never for training (twin train and twin learn leave "
                     "them out unless you turn on telegram.train_on_live)")
    return "\n".join([
        "What twin stores, all on your own machine:",
        f"• one SQLite file, {home.db} (owner-only permissions): your imported chat exports, the messages of "
        "the chats this bot sees (yours and your contacts') and those you forward or paste to it, each draft "
        "with what you did with it, and the business connection's settings;",
        f"• trained adapters under {home.adapters}.",
        f"Your contacts' live messages {training}. Discord conversations with the twin are never used for "
        "training.",
        f"Drafts are written by {backend}. Message text goes nowhere else: only the replies you approve are "
        "sent, to Telegram (or Discord), and for a contact you turned /auto on for, without asking you (you "
        "still see each one).",
        "Logs hold ids, counts and timings, never message text or names.",
        "Delete: /forget <contact> (or `twin forget <contact>`) removes a contact's messages, drafts and notes; "
        f"deleting {home.root} removes everything.",
    ])
