"""Telegram: the owner's business connection in; approval cards in the owner's chat with the bot; sends as the owner.

The only module that imports `telegram`. It translates updates into Relay calls (bot/relay.py) and implements
the relay's `Owner` (cards, notes) and `Sender` (`send_as_owner`, the one place that sends with a
`business_connection_id`). Two python-telegram-bot traps shape it (research: platforms.md §1.6): generic
message filters also match business messages, so every handler names its update type; and `reply_text` on a
business message would send as the owner at once, so no handler ever replies to one.

    TWIN_TELEGRAM_TOKEN=... twin run
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone

from telegram import (BusinessConnection, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update)
from telegram import Message as TgMessage
from telegram.constants import MessageLimit, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (Application, BusinessConnectionHandler, BusinessMessagesDeletedHandler,
                          CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters)

from bot.cards import HELP, REFUSAL, card_text, connection_note
from bot.drafts import ChatRef, Draft, State, callback_data, parse_callback
from bot.ledger import Connection
from bot.ports import SendError
from bot.relay import Relay
from twin.chat import Chat, Message
from twin.config import TelegramConfig
from twin.errors import ConfigError, TwinError
from twin.forget import forget
from twin.store import ChatKey

log = logging.getLogger(__name__)

PLATFORM = "telegram"

def user_id(uid: int) -> str:
    """Telegram identities as the export parser stores them: `user123`."""
    return f"user{uid}"


def message_kind(m: TgMessage) -> tuple[str, str]:
    """(kind, text) of a message as the store keeps it (twin.chat.KINDS)."""
    text = m.text or m.caption or ""
    if m.sticker:
        return "sticker", m.sticker.emoji or ""
    for attr, kind in (("photo", "photo"), ("voice", "voice"), ("video", "video"), ("video_note", "video"),
                       ("document", "file"), ("audio", "file"), ("animation", "video")):
        if getattr(m, attr, None):
            return kind, text
    return ("text", text) if text else ("placeholder", "")


def to_chat(m: TgMessage) -> Chat:
    c = m.chat
    kind = "personal" if c.type == "private" else "group"
    return Chat(PLATFORM, str(c.id), kind, c.title or c.full_name or None)


def to_message(m: TgMessage, sender_id: str | None = None) -> Message:
    kind, text = message_kind(m)
    who = m.from_user
    return Message(
        PLATFORM, str(m.chat.id), str(m.message_id), sender_id or (user_id(who.id) if who else "unknown"),
        who.full_name if who else None, m.date.astimezone(timezone.utc), text, kind,
        str(m.reply_to_message.message_id) if m.reply_to_message else None, m.forward_origin is not None,
        m.edit_date.astimezone(timezone.utc) if m.edit_date else None,
    )


def to_connection(bc: BusinessConnection, now: datetime) -> Connection:
    rights = bc.rights
    granted = tuple(sorted(k for k in (rights.__slots__ if rights else ()) if getattr(rights, k, False)))
    return Connection(bc.id, str(bc.user.id), str(bc.user_chat_id), bc.is_enabled, "can_reply" in granted, granted, now)


def keyboard(d: Draft) -> InlineKeyboardMarkup | None:
    if d.state != State.PENDING:
        return None
    more = "Next candidate" if d.shown + 1 < len(d.candidates) else "Regenerate"
    return InlineKeyboardMarkup([
        [InlineKeyboardButton("Send", callback_data=callback_data(d.id, "send")),
         InlineKeyboardButton("Edit", callback_data=callback_data(d.id, "edit"))],
        [InlineKeyboardButton(more, callback_data=callback_data(d.id, "next")),
         InlineKeyboardButton("Discard", callback_data=callback_data(d.id, "discard"))],
    ])


class TelegramRelay:
    """The Telegram side of the relay: handlers, cards, commands, and `send_as_owner`."""

    def __init__(self, app: Application, relay: Relay, cfg: TelegramConfig, status: Callable[[], str],
                 privacy: Callable[[], str], config_path=None):
        if cfg.owner_id is None:
            raise ConfigError("twin.toml: telegram.owner_id is not set; set it to your Telegram user id "
                              "(ask @userinfobot) so that only you can approve drafts")
        self.app = app
        self.bot = app.bot
        self.relay = relay
        self.cfg = cfg
        self.owner_id = cfg.owner_id
        self._status = status
        self._privacy = privacy
        self._config_path = config_path
        self._refused: set[int] = set()
        relay.senders[PLATFORM] = self
        relay.owner = self
        relay.store.set_owner(PLATFORM, user_id(self.owner_id))
        self._add_handlers()

    # -- handlers ---------------------------------------------------------------------------------------

    def _add_handlers(self) -> None:
        owner = filters.User(user_id=self.owner_id)
        private = filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE
        add = self.app.add_handler
        add(BusinessConnectionHandler(self.on_connection))
        add(MessageHandler(filters.UpdateType.BUSINESS_MESSAGE, self.on_business_message))
        add(MessageHandler(filters.UpdateType.EDITED_BUSINESS_MESSAGE, self.on_business_edit))
        add(BusinessMessagesDeletedHandler(self.on_business_deleted))
        add(CallbackQueryHandler(self.on_button))
        for name, fn in (("start", self.cmd_help), ("help", self.cmd_help), ("status", self.cmd_status),
                         ("pause", self.cmd_pause), ("resume", self.cmd_resume), ("auto", self.cmd_auto),
                         ("privacy", self.cmd_privacy), ("forget", self.cmd_forget), ("cancel", self.cmd_cancel)):
            add(CommandHandler(name, fn, filters=private & owner))
        add(MessageHandler(private & owner & filters.TEXT & ~filters.COMMAND, self.on_owner_text))
        add(MessageHandler(filters.UpdateType.MESSAGE & ~owner, self.on_stranger))

    async def _connection(self, connection_id: str) -> Connection | None:
        known = self.relay.ledger.connection(connection_id)
        if known is not None:
            return known
        try:  # a connection made while twin was down (Bot API getBusinessConnection)
            bc = await self.bot.get_business_connection(connection_id)
        except TelegramError as e:
            log.warning("business connection %s unknown and not fetched: %s", connection_id, type(e).__name__)
            return None
        return self._save_connection(bc)

    def _save_connection(self, bc: BusinessConnection) -> Connection | None:
        if bc.user.id != self.owner_id:
            log.warning("business connection %s belongs to another account; ignored", bc.id)
            return None
        conn = to_connection(bc, self.relay.clock())
        self.relay.ledger.save_connection(conn)
        return conn

    async def on_connection(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        bc = update.business_connection
        conn = self._save_connection(bc)
        if conn is None:
            return
        log.info("business connection %s enabled=%s rights=%s", conn.id, conn.enabled, ",".join(conn.rights))
        await self.notify(connection_note(conn))

    async def on_business_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.business_message
        if m.sender_business_bot is not None or m.is_from_offline:
            return  # our own send echoed back, or an away/greeting/scheduled message: not a conversation turn
        conn = await self._connection(m.business_connection_id)
        if conn is None or not conn.enabled:
            return
        ref = ChatRef(PLATFORM, conn.id, str(m.chat.id))
        if m.from_user and str(m.from_user.id) == conn.user_id:
            await self.relay.owner_message(ref, to_chat(m), to_message(m))
        else:
            await self.relay.contact_message(ref, to_chat(m), to_message(m))

    async def on_business_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.edited_business_message
        if m.sender_business_bot is not None:
            return
        conn = await self._connection(m.business_connection_id)
        if conn is None:
            return
        from_owner = bool(m.from_user) and str(m.from_user.id) == conn.user_id
        await self.relay.message_edited(to_chat(m), to_message(m), from_owner)

    async def on_business_deleted(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        d = update.deleted_business_messages
        ref = ChatRef(PLATFORM, d.business_connection_id, str(d.chat.id))
        await self.relay.messages_deleted(ref, [str(i) for i in d.message_ids])

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        q = update.callback_query
        if q.from_user.id != self.owner_id:
            await q.answer("Only the owner can use these buttons.")
            return
        parsed = parse_callback(q.data or "")
        if parsed is None:
            await q.answer("This button is no longer valid.")
            return
        try:
            answer = await self.relay.act(*parsed)
        except TwinError as e:
            answer = str(e)
        await q.answer(answer[:200])

    async def on_owner_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.relay.edit_text(update.message.text):
            await self.bot.send_message(self.owner_id, "Nothing is being edited. Tap Edit on a draft first; /help.")

    async def on_stranger(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.message
        if m is None or m.chat.type != "private" or m.from_user is None or m.from_user.id in self._refused:
            return
        self._refused.add(m.from_user.id)
        log.info("refused a message from a user who is not the owner")
        await self.bot.send_message(m.chat.id, REFUSAL)

    # -- commands -----------------------------------------------------------------------------------------

    async def _say(self, text: str, **kw) -> None:
        await self.bot.send_message(self.owner_id, text, **kw)

    async def cmd_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._say(HELP)

    async def cmd_status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._say(self._status())

    async def cmd_pause(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.relay.ledger.set_paused(True)
        await self._say("Paused: messages are still stored as context, but no drafts are made. /resume to go on.")

    async def cmd_resume(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.relay.ledger.set_paused(False)
        await self._say("Resumed: drafting again.")

    async def cmd_auto(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = context.args or []
        if len(args) < 2 or args[-1].lower() not in ("on", "off"):
            await self._say("Usage: /auto <contact> on|off (a name as in /status, or telegram:<id>)")
            return
        contact, on = " ".join(args[:-1]), args[-1].lower() == "on"
        try:
            chat = self.relay.store.find_chat(contact)
        except TwinError as e:
            await self._say(str(e))
            return
        self.relay.set_auto(chat, on)
        log.info("auto-send %s for chat %s", "on" if on else "off", chat.id)
        await self._say(f"Auto-send {'on' if on else 'off'} for {chat.title or contact}: "
                        + ("replies go out without asking you (you still see each one)." if on
                           else "every reply waits for your tap."))

    async def cmd_privacy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._say(self._privacy())

    async def cmd_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        contact = " ".join(context.args or [])
        if not contact:
            await self._say("Usage: /forget <contact> — deletes their messages, drafts and notes.")
            return
        try:
            gone = forget(self.relay.store, contact, self._config_path)
        except TwinError as e:
            await self._say(str(e))
            return
        await self._say(f"Forgotten: {gone.summary()}. Adapters trained before keep what they learned; "
                        "retrain (twin train) to drop it from the model too.")

    async def cmd_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        cancelled = await self.relay.cancel_edit()
        await self._say("Edit cancelled; the draft is back as it was." if cancelled else "Nothing to cancel.")

    # -- the relay's Owner side --------------------------------------------------------------------------

    def _card(self, d: Draft, note: str) -> str:
        store = self.relay.store
        contact = store.contact_name(d.chat.platform, d.contact_id) or f"{d.chat.platform}:{d.chat.chat_id}"
        incoming = store.message_texts(ChatKey(d.chat.platform, d.chat.chat_id), d.answers)
        return card_text(d, contact, incoming, note)

    async def show_card(self, draft: Draft, note: str = "") -> tuple[str, str] | None:
        try:
            sent = await self.bot.send_message(self.owner_id, self._card(draft, note), parse_mode=ParseMode.HTML,
                                               reply_markup=keyboard(draft))
        except TelegramError as e:
            log.warning("draft %s: card not shown (%s)", draft.id, type(e).__name__)
            return None
        return str(sent.chat_id), str(sent.message_id)

    async def update_card(self, draft: Draft, note: str = "") -> None:
        if draft.card is None:
            return
        try:
            await self.bot.edit_message_text(self._card(draft, note), chat_id=int(draft.card[0]),
                                             message_id=int(draft.card[1]), parse_mode=ParseMode.HTML,
                                             reply_markup=keyboard(draft))
        except BadRequest as e:
            if "not modified" not in str(e).lower():
                log.warning("draft %s: card not updated (%s)", draft.id, type(e).__name__)
        except TelegramError as e:
            log.warning("draft %s: card not updated (%s)", draft.id, type(e).__name__)

    async def notify(self, text: str) -> None:
        try:
            await self.bot.send_message(self.owner_id, text[: MessageLimit.MAX_TEXT_LENGTH])
        except TelegramError as e:
            log.warning("note to the owner not sent (%s)", type(e).__name__)

    # -- the relay's Sender side: the one function that sends as the owner --------------------------------

    async def send_as_owner(self, draft: Draft, text: str) -> tuple[str, ...]:
        """Send an approved draft into its business chat as the owner, one message per line, paced.

        Refuses without a connection that may reply (Bot API BusinessBotRights.can_reply). The first message
        quotes the contact's message only when the chat has moved on since it (a reply reads naturally then).
        """
        conn = self.relay.ledger.connection(draft.chat.connection_id or "")
        if conn is None or not conn.enabled:
            raise SendError("the business connection is gone; reconnect the bot in Telegram Business settings",
                            retryable=False)
        if not conn.can_reply:
            raise SendError("the bot may not reply for you; allow it in Telegram Business → Chatbots", retryable=False)
        lines = [line for line in text.split("\n") if line.strip()] or [text]
        quote = self._quote(draft)
        ids: list[str] = []
        for i, line in enumerate(lines):
            if i:
                await asyncio.sleep(self.cfg.pace_seconds)
            try:
                sent = await self.bot.send_message(
                    int(draft.chat.chat_id), line[: MessageLimit.MAX_TEXT_LENGTH],
                    business_connection_id=conn.id,
                    reply_parameters=ReplyParameters(int(quote), allow_sending_without_reply=True)
                    if quote and i == 0 else None,
                )
            except RetryAfter as e:
                raise SendError(f"Telegram asked to wait {e.retry_after} s", retryable=not ids) from e
            except (BadRequest, Forbidden) as e:
                raise SendError(f"Telegram refused the message ({e.message})", retryable=False) from e
            except NetworkError as e:
                raise SendError(f"Telegram did not answer ({type(e).__name__})", retryable=not ids) from e
            ids.append(str(sent.message_id))
        return tuple(ids)

    def _quote(self, draft: Draft) -> str | None:
        if draft.reply_to is None:
            return None
        last = self.relay.store.last_message_id(ChatKey(draft.chat.platform, draft.chat.chat_id))
        return None if last is None or last == draft.reply_to else draft.reply_to


def build_application(token: str, cfg: TelegramConfig) -> Application:
    """The python-telegram-bot Application, pointed at `telegram.base_url` (a self-hosted Bot API server or a
    test fake). Updates are processed one at a time; slow work (drafting, sending) runs in the relay's tasks."""
    return Application.builder().token(token).base_url(cfg.base_url).build()


async def start(app: Application) -> None:
    await app.initialize()
    await app.start()
    # allowed_updates is sticky on Telegram's side: ask for the business updates explicitly.
    await app.updater.start_polling(allowed_updates=Update.ALL_TYPES, poll_interval=0.0)


async def stop(app: Application) -> None:
    if app.updater and app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
    await app.shutdown()
