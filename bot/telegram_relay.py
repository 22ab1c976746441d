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
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from telegram import (BusinessConnection, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update)
from telegram import Message as TgMessage
from telegram.constants import MessageLimit, ParseMode
from telegram.error import (BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError,
                            TimedOut)
from telegram.ext import (Application, BusinessConnectionHandler, BusinessMessagesDeletedHandler,
                          CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters)
from telegram.warnings import PTBDeprecationWarning

from bot.cards import FORGOTTEN, HELP, REFUSAL, card_text, connection_note, fits, pieces
from bot.drafts import COPY, ChatRef, Draft, State, callback_data, parse_callback
from bot.ledger import Connection
from bot.ports import SendError
from bot.relay import Relay
from bot.telegram_forwards import TelegramForwards
from twin.chat import Chat, Message, telegram_user
from twin.config import TelegramConfig
from twin.errors import ServingUnavailable, TwinError
from twin.forget import forget
from twin.store import ChatKey

log = logging.getLogger(__name__)

PLATFORM = "telegram"
# An away or greeting message (is_from_offline) answers a contact's message at once; a scheduled message the
# owner wrote comes at a time of its own: that one is a hand-written reply.
AUTO_REPLY_WINDOW = timedelta(seconds=15)

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
        PLATFORM, str(m.chat.id), str(m.message_id), sender_id or (telegram_user(who.id) if who else "unknown"),
        who.full_name if who else None, m.date.astimezone(timezone.utc), text, kind,
        str(m.reply_to_message.message_id) if m.reply_to_message else None, m.forward_origin is not None,
        m.edit_date.astimezone(timezone.utc) if m.edit_date else None,
    )


def to_connection(bc: BusinessConnection, now: datetime) -> Connection:
    rights = bc.rights
    granted = tuple(sorted(k for k in (rights.__slots__ if rights else ()) if getattr(rights, k, False)))
    return Connection(bc.id, str(bc.user.id), str(bc.user_chat_id), bc.is_enabled, "can_reply" in granted, granted, now)


def keyboard(d: Draft) -> InlineKeyboardMarkup | None:
    """The card's buttons: each names the draft and the candidate the card shows (bot/drafts.py's grammar)."""
    def button(text: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(text, callback_data=callback_data(d.id, action, d.shown))

    if d.state == State.UNSURE:
        return InlineKeyboardMarkup([[button("It arrived", "arrived"), button("Send again", "resend")]])
    if d.state != State.PENDING:
        return None
    more = "Next candidate" if d.shown + 1 < len(d.candidates) else "Regenerate"
    first = [button("Send", "send")] if fits(d) else []  # never offered for text the card cannot show whole
    rows = [first + [button("Edit", "edit")], [button(more, "next"), button("Discard", "discard")]]
    if d.origin == "telegram":  # the Discord twin, talked to directly, always answers
        rows.append([button("No reply needed", "noreply")])
    return InlineKeyboardMarkup(rows)


def wait_asked(e: RetryAfter) -> timedelta:
    """How long Telegram asked to wait, as a timedelta. python-telegram-bot 22.2+ gives it so with PTB_TIMEDELTA
    set and as a deprecated int otherwise; either is read here without the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = e.retry_after
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def send_error(e: Exception) -> SendError:
    """What a failed Bot API request means for twin: sent or not, worth retrying, when.

    An error answer from Telegram (400, 403, 409, 429, 5xx: python-telegram-bot raises those itself, with no
    cause) means nothing was done. A read timeout, a dropped connection or an answer that is not JSON may come
    after Telegram acted on the request (python-telegram-bot raises TimedOut for a late answer although the
    message was delivered): only a pool or connect timeout, or a connection never made, is known to be unsent.
    """
    cause = type(e.__cause__).__name__ if e.__cause__ is not None else ""
    if isinstance(e, RetryAfter):
        wait = wait_asked(e)
        return SendError(f"Telegram asked to wait {wait.total_seconds():.0f} s", retry_after=wait)
    if isinstance(e, Forbidden):
        return SendError(f"Telegram refused ({e.message})", retryable=False, blocked=True)
    if isinstance(e, BadRequest):
        return SendError(f"Telegram refused the message ({e.message})", retryable=False)
    if isinstance(e, InvalidToken):
        return SendError("Telegram refused the bot token", retryable=False)
    if isinstance(e, Conflict):
        return SendError(f"Telegram refused the request ({e.message})")
    if isinstance(e, TimedOut):
        if cause in ("PoolTimeout", "ConnectTimeout") or "Pool timeout" in e.message:
            return SendError("the request never left (no free connection)")
        return SendError("Telegram did not answer in time", maybe_sent=True)
    if isinstance(e, NetworkError) and e.__cause__ is None:  # Telegram answered with a server error
        return SendError(f"Telegram failed ({e.message})")
    if isinstance(e, NetworkError) and cause == "ConnectError":
        return SendError("Telegram could not be reached")
    if isinstance(e, RuntimeError):  # PTB's request after shutdown: raised before anything is sent
        return SendError("the Telegram client is shut down")
    return SendError(f"no clear answer from Telegram ({type(e).__name__})", maybe_sent=True)


class TelegramRelay:
    """The Telegram side of the relay: handlers, cards, commands, and `send_as_owner`. `cfg.owner_id` is set
    (the composition root, twin/cli/relay.py, refuses to start without it)."""

    def __init__(self, app: Application, relay: Relay, cfg: TelegramConfig, status: Callable[[], str],
                 privacy: Callable[[], str], config_path=None):
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
        relay.store.set_owner(PLATFORM, telegram_user(self.owner_id))
        # Forwarded and pasted messages: drafts to copy (bot/forwards.py), with or without a business connection.
        self.forwards = TelegramForwards(relay, self.bot, self.owner_id, message_kind, send_error)
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
                         ("privacy", self.cmd_privacy), ("forget", self.cmd_forget), ("cancel", self.cmd_cancel),
                         ("draft", self.cmd_draft)):
            add(CommandHandler(name, fn, filters=private & owner))
        for handler in self.forwards.handlers(private & owner):
            add(handler)
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
        if m.sender_business_bot is not None:
            return  # our own send echoed back
        conn = await self._connection(m.business_connection_id)
        if conn is None or not conn.enabled:
            return
        ref = ChatRef(PLATFORM, conn.id, str(m.chat.id))
        if m.is_from_offline and self._auto_reply(m):
            return  # an away or greeting message: not a conversation turn
        if m.from_user and str(m.from_user.id) == conn.user_id:
            await self.relay.owner_message(ref, to_chat(m), to_message(m))
        else:
            await self.relay.contact_message(ref, to_chat(m), to_message(m))

    def _auto_reply(self, m: TgMessage) -> bool:
        """Whether an offline message (Bot API is_from_offline: away, greeting or scheduled) answered the contact
        at once, as Telegram's away and greeting messages do, rather than at a time the owner chose."""
        last = self.relay.store.chat_messages(ChatKey(PLATFORM, str(m.chat.id)), last=1)
        if not last:
            return True  # a greeting: the first message of the chat
        return not last[0].from_owner and m.date.astimezone(timezone.utc) - last[0].time <= AUTO_REPLY_WINDOW

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
        if await self._connection(d.business_connection_id) is None:
            return  # another account's connection (or one never ours): its deletes are not ours to apply
        ref = ChatRef(PLATFORM, d.business_connection_id, str(d.chat.id))
        await self.relay.messages_deleted(ref, [str(i) for i in d.message_ids])

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        q = update.callback_query
        if q.from_user.id != self.owner_id:
            await q.answer("Only the owner can use these buttons.")
            return
        parsed = parse_callback(q.data or "")
        picked = None if parsed else await self.forwards.on_button(q.data or "")
        if parsed is None and picked is None:
            await q.answer("This button is no longer valid.")
            return
        try:
            answer = picked or await (self.forwards.act if parsed[1] == "copied" else self.relay.act)(*parsed)
        except TwinError as e:
            answer = str(e)
        try:
            await q.answer(answer[:200])
        except TelegramError as e:  # the press is handled; only its little answer is lost
            log.warning("button answer not shown (%s)", type(e).__name__)

    async def on_owner_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        text = update.message.text
        if not await self.relay.edit_text(text) and not await self.forwards.paste(text):
            await self.bot.send_message(self.owner_id, "Nothing is being edited. Forward me a message for drafts, "
                                                       "or /for NAME and paste theirs; /help.")

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
        await self.relay.screen.show_missing()  # the owner may just have pressed Start: held cards come now

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
            chat = self.relay.store.find_chat(contact)
            gone = await self.relay.forget(chat.platform, chat.id, lambda: forget(
                self.relay.store, contact, self._config_path, relay_tables=self.relay.ledger.forget))
        except TwinError as e:
            await self._say(str(e))
            return
        await self._say(f"Forgotten: {gone.summary()}. Adapters trained before keep what they learned; "
                        "retrain (twin train) to drop it from the model too.")

    async def cmd_draft(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/draft <contact>: a card for the chat's last burst, also one that looked like it needed no answer."""
        contact = " ".join(context.args or [])
        if not contact:
            await self._say("Usage: /draft <contact> — a draft for their last message, even one that looked "
                            "like it needed no answer.")
            return
        try:
            chat = self.relay.store.find_chat(contact)
        except TwinError as e:
            await self._say(str(e))
            return
        refs = [r for r in self.relay.ledger.live_chats() if (r.platform, r.chat_id) == (chat.platform, chat.id)]
        if not refs:
            await self._say(f"{chat.title or contact}: no live chat through your business connection yet.")
            return
        if not await self.relay.force_draft(refs[0]):
            await self._say(f"{chat.title or contact}: your message is the last one; nothing to answer.")
            return
        log.info("draft forced for chat %s", chat.id)
        await self._say(f"Drafting a reply to {chat.title or contact}…")

    async def cmd_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if await self.relay.cancel_edit():
            await self._say("Edit cancelled; the draft is back as it was.")
        else:
            await self._say("Paste cancelled." if self.forwards.flow.cancel() else "Nothing to cancel.")

    # -- the relay's Owner side --------------------------------------------------------------------------

    def _card(self, d: Draft, note: str) -> str:
        store = self.relay.store
        contact = store.contact_name(d.chat.platform, d.contact_id) or f"{d.chat.platform}:{d.chat.chat_id}"
        incoming = store.message_texts(d.chat.key, d.answers)
        return card_text(d, contact, incoming, note, self.relay.clock())

    async def show_card(self, draft: Draft, note: str = "") -> tuple[str, str]:
        if draft.origin == COPY:
            return await self.forwards.show_card(draft, note)
        try:
            sent = await self.bot.send_message(self.owner_id, self._card(draft, note), parse_mode=ParseMode.HTML,
                                               reply_markup=keyboard(draft))
        except Exception as e:
            raise send_error(e) from e
        return str(sent.chat_id), str(sent.message_id)

    async def update_card(self, draft: Draft, note: str = "") -> None:
        if draft.card is None:
            return
        if draft.origin == COPY:
            return await self.forwards.update_card(draft, note)
        await self._edit_card(draft.card, self._card(draft, note), keyboard(draft), draft.id)

    async def retire_card(self, card: tuple[str, str]) -> None:
        await self._edit_card(card, FORGOTTEN, None, None)

    async def _edit_card(self, card: tuple[str, str], text: str, markup: InlineKeyboardMarkup | None,
                         draft_id: int | None) -> None:
        try:
            await self.bot.edit_message_text(text, chat_id=int(card[0]), message_id=int(card[1]),
                                             parse_mode=ParseMode.HTML, reply_markup=markup)
        except BadRequest as e:
            if "not modified" not in str(e).lower():
                log.warning("draft %s: card not updated (%s)", draft_id, type(e).__name__)
        except (TelegramError, RuntimeError) as e:
            log.warning("draft %s: card not updated (%s)", draft_id, type(e).__name__)

    async def notify(self, text: str) -> None:
        try:
            await self.bot.send_message(self.owner_id, text[: MessageLimit.MAX_TEXT_LENGTH])
        except (TelegramError, RuntimeError) as e:
            log.warning("note to the owner not sent (%s)", type(e).__name__)

    # -- the relay's Sender side: the one function that sends as the owner --------------------------------

    def pieces(self, text: str) -> list[str]:
        return pieces(text)

    async def send_as_owner(self, draft: Draft, text: str, index: int) -> str:
        """Send one message of an approved draft into its business chat as the owner; its message id.

        Refuses without a connection that may reply (Bot API BusinessBotRights.can_reply). The first message
        quotes the contact's message only when the chat has moved on since it (a reply reads naturally then).
        """
        conn = self.relay.ledger.connection(draft.chat.connection_id or "")
        if conn is None or not conn.enabled:
            raise SendError("the business connection is gone; reconnect the bot in Telegram Business settings",
                            retryable=False)
        if not conn.can_reply:
            raise SendError("the bot may not reply for you; allow it in Telegram Business → Chatbots", retryable=False)
        quote = self._quote(draft) if index == 0 else None
        try:
            sent = await self.bot.send_message(
                int(draft.chat.chat_id), text, business_connection_id=conn.id,
                reply_parameters=ReplyParameters(int(quote), allow_sending_without_reply=True) if quote else None,
            )
        except Exception as e:
            raise send_error(e) from e
        return str(sent.message_id)

    def _quote(self, draft: Draft) -> str | None:
        if draft.reply_to is None:
            return None
        last = self.relay.store.last_message_id(draft.chat.key)
        return None if last is None or last == draft.reply_to else draft.reply_to


def build_application(token: str, cfg: TelegramConfig) -> Application:
    """The python-telegram-bot Application, pointed at `telegram.base_url` (a self-hosted Bot API server or a
    test fake). Updates are processed one at a time; slow work (drafting, sending) runs in the relay's tasks."""
    return Application.builder().token(token).base_url(cfg.base_url).read_timeout(cfg.read_timeout_seconds).build()


async def start(app: Application, tries: int = 6, first_wait_s: float = 1.0) -> None:
    """Connect and start polling. Telegram failing at that moment (a 5xx, a flood wait, the network) is waited
    out with backoff, `tries` times, before `twin run` gives up with one line; a refused token is not retried
    (InvalidToken goes to the caller)."""
    wait = first_wait_s
    for attempt in range(1, tries + 1):
        try:
            await app.initialize()
            break
        except InvalidToken:
            raise
        except (TelegramError, RuntimeError) as e:
            if attempt == tries:
                raise ServingUnavailable(f"Telegram did not answer after {tries} tries ({type(e).__name__}); "
                                         "check the network and telegram.base_url") from None
            delay = max(wait, wait_asked(e).total_seconds()) if isinstance(e, RetryAfter) else wait
            log.warning("telegram: start failed (%s), try %d of %d; again in %.0f s", type(e).__name__, attempt,
                        tries, delay)
            await asyncio.sleep(delay)
            wait *= 2
    await app.start()
    # allowed_updates is sticky on Telegram's side: ask for the business updates explicitly. Failures while
    # dropping a webhook at start are retried by python-telegram-bot itself.
    await app.updater.start_polling(allowed_updates=Update.ALL_TYPES, poll_interval=0.0, bootstrap_retries=5)


async def stop(app: Application) -> None:
    if app.updater and app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
    await app.shutdown()
