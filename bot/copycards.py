"""The card of a draft to copy (bot/forwards.py): the candidates, each with a Copy button, as HTML and buttons.

Pure text and values from a Draft, tested without Telegram; bot/telegram_forwards.py draws the buttons. Measured
as Telegram measures a card (bot/cards.py: visible text after entity parsing, in UTF-16 code units).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from bot.cards import MARK, MAX_NAME, MAX_TEXT_LENGTH, STATE_LINES, shorten, visible
from bot.drafts import Draft, State, callback_data
from twin.text import utf16

# Bot API, CopyTextButton.text: "The text to be copied to the clipboard; 1-256 characters". A longer candidate is
# shown as a code block instead, which Telegram's apps copy with a tap.
MAX_COPY = 256
LISTED = 5  # candidates on one card at most (the keyboard has two buttons per candidate)
SHOWN_INCOMING = 6
MAX_SHOWN = 1500  # a candidate longer than this is shortened on the card, and offered neither to copy nor to use
# The candidates get this much of a card; the rest (name, the contact's words, what happened, a note) stays under
# MAX_TEXT_LENGTH minus it. One candidate always fits: MAX_SHOWN is less.
CANDIDATES_ROOM = 2300
PLATFORM_NAMES = {"telegram": "Telegram", "whatsapp": "WhatsApp", "discord": "Discord"}


@dataclass(frozen=True)
class Button:
    """An inline button: exactly one of `callback` (data), `copy` (text copied on tap) or `url`."""

    text: str
    callback: str | None = None
    copy: str | None = None
    url: str | None = None


def open_chat_url(d: Draft) -> str | None:
    """tg://user?id=... for a Telegram person's draft (Bot API: such links open the user's chat, if their
    privacy settings allow it)."""
    ident = d.contact_id.removeprefix("user")
    if d.chat.platform != "telegram" or not d.contact_id.startswith("user") or not ident.isdigit():
        return None
    return f"tg://user?id={ident}"


def _candidate_line(number: int, text: str) -> tuple[str, bool]:
    """A candidate on the card (HTML) and whether it may be copied or used from it."""
    e = html.escape
    if utf16(text) > MAX_SHOWN:
        return f"<b>{number}.</b> {e(shorten(text, MAX_SHOWN))}\n<i>too long to show whole: try Regenerate</i>", False
    if utf16(text) > MAX_COPY:  # no Copy button holds it: a block the apps copy with a tap
        block = f"<pre>{e(text)}</pre>" if "\n" in text else f"<code>{e(text)}</code>"
        return f"<b>{number}.</b> (tap the text to copy it)\n{block}", True
    return f"<b>{number}.</b> {e(text)}", True


def listed(d: Draft) -> range:
    """The indexes of the candidates the card offers: the one shown and those after it (the ones before were
    passed over with Next)."""
    if d.state != State.PENDING and d.state != State.COPIED:
        return range(d.shown, d.shown + 1)
    return range(d.shown, min(len(d.candidates), d.shown + LISTED))


def card(d: Draft, contact: str, incoming: Sequence[str], note: str = "",
         open_chat: bool = True) -> tuple[str, list[list[Button]]]:
    """The card of a draft to copy (HTML) and its buttons.

    Each listed candidate has a Copy button (at most MAX_COPY characters; a longer one is a code block to tap)
    and a Used button, which records the copy; Next candidate (Regenerate when none is left) and Discard; a
    button that opens the chat with the contact when their Telegram id is known.
    """
    e = html.escape
    where = PLATFORM_NAMES.get(d.chat.platform, d.chat.platform)
    top = [f"<b>{e(shorten(contact, MAX_NAME))}</b> · {where} · reply to copy"]
    rows: list[list[Button]] = []
    lines: list[str] = []
    budget = CANDIDATES_ROOM
    for i in listed(d):
        line, usable = _candidate_line(i + 1, d.candidates[i])
        budget -= utf16(visible(line)) + 1
        if lines and budget < 0:
            break  # the rest come with Next candidate
        lines.append(line)
        if not usable or d.state not in (State.PENDING, State.COPIED):
            continue
        row = [Button(f"📋 Copy {i + 1}", copy=d.candidates[i])] if utf16(d.candidates[i]) <= MAX_COPY else []
        rows.append(row + [Button(f"✓ Used {i + 1}", callback=callback_data(d.id, "copied", i))])
    tail: list[str] = []
    if d.state == State.PENDING:
        tail.append("<i>Copy a reply, send it in your chat, then tap Used (or forward me what you sent).</i>")
        more = "Next candidate" if d.shown + 1 < len(d.candidates) else "Regenerate"
        rows.append([Button(more, callback=callback_data(d.id, "next", d.shown)),
                     Button("Discard", callback=callback_data(d.id, "discard", d.shown))])
    elif d.state == State.COPIED:
        tail.append(f"📋 You copied reply {d.shown + 1}. Changed it before sending? Forward me what you sent.")
    elif d.state == State.SENT:
        tail.append(f"✅ You sent reply {d.shown + 1}")
    elif d.state == State.EDITED_SENT:
        tail.append(f"✅ You sent your own version: {e(shorten(d.final_text or '', 1000))}")
    elif d.state in STATE_LINES:
        line = STATE_LINES[d.state]
        if d.state == State.SUPERSEDED and d.final_text:
            line += f": {e(shorten(d.final_text, 1000))}"
        tail.append(line)
    if note and d.state == State.PENDING:
        tail.append(f"<i>{e(shorten(note, 300))}</i>")
    url = open_chat_url(d) if open_chat else None
    if url and d.state in (State.PENDING, State.COPIED):
        rows.append([Button(f"Open chat with {shorten(contact, 24)}", url=url)])
    body = [""] + lines + [""] + tail
    room = MAX_TEXT_LENGTH - utf16(visible("\n".join(top + body)))
    shown = _fit(list(incoming)[-SHOWN_INCOMING:], room)
    return "\n".join(top + [f"› {e(t)}" for t in shown] + body), rows


def _fit(texts: list[str], room: int) -> list[str]:
    """The contact's messages in `room` UTF-16 units, newest kept first (each costs its line's "› " too)."""
    kept: list[str] = []
    for text in reversed([t for t in texts if t.strip()]):
        left = room - utf16("› \n")
        if left < 12:
            if kept:
                kept.append(MARK)
            break
        piece = shorten(text, left)
        kept.append(piece)
        room -= utf16("› \n") + utf16(piece)
    return kept[::-1]


