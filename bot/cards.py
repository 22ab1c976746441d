"""The words of the Telegram relay: the approval card, the connection note, help and refusal texts.

Pure text from values (a Draft, a Connection), so it is tested without Telegram; bot/telegram_relay.py sends it.
"""

from __future__ import annotations

import html

from bot.drafts import Draft, State
from bot.ledger import Connection

# Bot API sendMessage: "Text of the message to be sent, 1-4096 characters after entities parsing".
MAX_TEXT_LENGTH = 4096

STATE_LINES = {
    State.SENT: "✅ Sent", State.EDITED_SENT: "✅ Sent (edited)", State.DISCARDED: "🗑 Discarded",
    State.EXPIRED: "⌛ Expired", State.FAILED: "⚠️ Not sent", State.SUPERSEDED: "✍️ You answered by hand",
    State.SENDING: "⏳ Sending…",
}

HELP = (
    "I draft replies to your Telegram chats in your voice; nothing is sent without your tap.\n"
    "/status — connection, model, pending drafts, today's numbers\n"
    "/pause, /resume — stop or restart drafting\n"
    "/auto <contact> on|off — send without asking, for one contact\n"
    "/privacy — what is stored and how to delete it\n"
    "/forget <contact> — delete everything stored about a contact\n"
    "/cancel — stop editing a draft"
)

REFUSAL = "This is a private assistant bot; it does not take messages. Sorry!"


def card_text(d: Draft, contact: str, incoming: list[str], note: str = "") -> str:
    """The approval card (HTML): who, what they wrote, the candidate, its deadline, its state."""
    e = html.escape
    where = "Discord" if d.origin == "discord" else "Telegram"
    lines = [f"<b>{e(contact)}</b> · {where}"]
    lines += [f"› {e(t)}" for t in incoming[-6:] if t]
    lines += ["", f"<b>Draft {d.shown + 1}/{len(d.candidates)}</b>" + (" (auto)" if d.auto else ""), e(d.text)]
    if d.state == State.PENDING and d.expires_at:
        lines.append(f"<i>expires {d.expires_at:%H:%M} UTC</i>")
    if d.state in STATE_LINES:
        lines.append(STATE_LINES[d.state] + (f": {e(d.final_text or '')}" if d.state == State.EDITED_SENT else ""))
    if note and d.state == State.PENDING:
        lines.append(f"<i>{e(note)}</i>")
    text = "\n".join(lines)
    return text if len(text) <= MAX_TEXT_LENGTH else text[: MAX_TEXT_LENGTH - 1] + "…"



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
