"""Telegram's side of the forward-and-paste flow (bot/forwards.py): the owner's forwarded messages and /for in,
cards with Copy buttons and questions out, all in the owner's private chat with the bot.

Part of the Telegram adapter, with bot/telegram_relay.py, which hooks it in (its handlers, its buttons, the cards
of drafts to copy). A forward's origin is read from Bot API Message.forward_origin: MessageOriginUser
(sender_user), MessageOriginHiddenUser (sender_user_name only), MessageOriginChat (sender_chat) and
MessageOriginChannel (chat). Nothing here sends anything but to the owner.

    TWIN_TELEGRAM_TOKEN=... twin run    (then forward a message to the bot)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timezone

from telegram import (CopyTextButton, InlineKeyboardButton, InlineKeyboardMarkup, MessageOriginChannel,
                      MessageOriginChat, MessageOriginHiddenUser, MessageOriginUser, Update)
from telegram import Message as TgMessage
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import CommandHandler, ContextTypes, MessageHandler, filters

from bot.copycards import Button, card
from bot.drafts import Draft
from bot.forwards import Forwards, parse_pick
from bot.origins import Incoming, Origin
from bot.ports import SendError
from bot.relay import Relay

log = logging.getLogger(__name__)

# Telegram refuses a tg://user?id= button for a user whose privacy settings forbid linking to their account.
PRIVACY_RESTRICTED = "BUTTON_USER_PRIVACY_RESTRICTED"


def origin(m: TgMessage) -> Origin | None:
    """Who wrote a forwarded message, or None when it is not a forward."""
    o = m.forward_origin
    if o is None:
        return None
    date = o.date.astimezone(timezone.utc)
    if isinstance(o, MessageOriginUser):
        return Origin("user", o.sender_user.id, o.sender_user.full_name, date)
    if isinstance(o, MessageOriginHiddenUser):
        return Origin("hidden_user", None, o.sender_user_name, date)
    if isinstance(o, MessageOriginChat):
        return Origin("chat", o.sender_chat.id, o.sender_chat.title or o.sender_chat.full_name, date)
    if isinstance(o, MessageOriginChannel):
        return Origin("channel", o.chat.id, o.chat.title, date)
    return Origin(o.type, None, None, date)


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    def button(b: Button) -> InlineKeyboardButton:
        if b.copy is not None:
            return InlineKeyboardButton(b.text, copy_text=CopyTextButton(b.copy))
        if b.url is not None:
            return InlineKeyboardButton(b.text, url=b.url)
        return InlineKeyboardButton(b.text, callback_data=b.callback)

    rows = [row for row in rows if row]
    return InlineKeyboardMarkup([[button(b) for b in row] for row in rows]) if rows else None


class TelegramForwards:
    """The flow's port in Telegram: `ask` and `say` to the owner, the cards of drafts to copy. `kind_of` and
    `error_of` are bot/telegram_relay.py's readings of a message's kind and of a failed request."""

    def __init__(self, relay: Relay, bot, owner_id: int, kind_of: Callable[[TgMessage], tuple[str, str]],
                 error_of: Callable[[Exception], SendError]):
        self.relay = relay
        self.bot = bot
        self.owner_id = owner_id
        self._kind_of = kind_of
        self._error_of = error_of
        self.flow = Forwards(relay, self, owner_id)
        self._no_link: set[str] = set()  # contacts whose privacy refuses an "open chat" button

    def handlers(self, owner_private: filters.BaseFilter) -> list:
        """Forwards from the owner, and /for (before the owner's plain text, which also takes pastes)."""
        return [MessageHandler(owner_private & filters.FORWARDED, self.on_forward),
                CommandHandler("for", self.cmd_for, filters=owner_private)]

    # -- in ----------------------------------------------------------------------------------------------

    async def on_forward(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.message
        kind, text = self._kind_of(m)
        await self.flow.forwarded(Incoming(origin(m), text, kind, m.date.astimezone(timezone.utc)))

    async def cmd_for(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.flow.choose(" ".join(context.args or []))

    async def paste(self, text: str) -> bool:
        return await self.flow.paste(text)

    async def on_button(self, data: str) -> str | None:
        """A press on one of the flow's pick buttons; None when the data is not one."""
        parsed = parse_pick(data)
        return None if parsed is None else await self.flow.pick(*parsed)

    async def act(self, draft_id: int, action: str, candidate: int) -> str:
        """A draft button of the flow's own (bot/drafts.py grammar): "copied"."""
        if action != "copied":
            raise ValueError(f"unknown action {action!r} for a draft to copy")
        return await self.flow.copied(draft_id, candidate)

    # -- the port ------------------------------------------------------------------------------------------

    async def ask(self, text: str, rows: list[list[Button]]) -> None:
        await self._send(text, keyboard(rows))

    async def say(self, text: str) -> None:
        await self._send(text, None)

    async def _send(self, text: str, markup: InlineKeyboardMarkup | None) -> None:
        try:
            await self.bot.send_message(self.owner_id, text, reply_markup=markup)
        except (TelegramError, RuntimeError) as e:
            log.warning("note to the owner not sent (%s)", type(e).__name__)

    # -- cards -----------------------------------------------------------------------------------------------

    def render(self, d: Draft, note: str = "") -> tuple[str, InlineKeyboardMarkup | None]:
        store = self.relay.store
        chat = store.chat(d.chat.key)
        contact = store.contact_name(d.chat.platform, d.contact_id) or (chat.title if chat else None) \
            or f"{d.chat.platform}:{d.chat.chat_id}"
        text, rows = card(d, contact, store.message_texts(d.chat.key, d.answers), note,
                          open_chat=d.contact_id not in self._no_link)
        return text, keyboard(rows)

    async def show_card(self, d: Draft, note: str = "") -> tuple[str, str]:
        """Send the card (raises what telegram_relay.send_error makes of a failure). A contact whose privacy
        settings refuse the "open chat" button gets the card without it."""
        for _ in range(2):
            text, markup = self.render(d, note)
            try:
                sent = await self.bot.send_message(self.owner_id, text, parse_mode=ParseMode.HTML,
                                                   reply_markup=markup)
                return str(sent.chat_id), str(sent.message_id)
            except BadRequest as e:
                if PRIVACY_RESTRICTED not in e.message.upper() or d.contact_id in self._no_link:
                    raise self._error_of(e) from e
                self._no_link.add(d.contact_id)
            except Exception as e:
                raise self._error_of(e) from e
        raise AssertionError("unreachable")  # the second try has no link button to refuse

    async def update_card(self, d: Draft, note: str = "") -> None:
        if d.card is None:
            return
        text, markup = self.render(d, note)
        try:
            await self.bot.edit_message_text(text, chat_id=int(d.card[0]), message_id=int(d.card[1]),
                                             parse_mode=ParseMode.HTML, reply_markup=markup)
        except BadRequest as e:
            if "not modified" not in str(e).lower():
                log.warning("draft %s: card not updated (%s)", d.id, type(e).__name__)
        except (TelegramError, RuntimeError) as e:
            log.warning("draft %s: card not updated (%s)", d.id, type(e).__name__)
