"""The relay: live messages in, drafts for the owner's approval out, approved text sent as the owner.

Platform-neutral. The Telegram adapter (bot/telegram_relay.py) turns updates into calls here and implements
`Owner` (the approval card and notes in the owner's chat with the bot) and `Sender` (the one function that
sends as the owner). Nothing here talks to a network itself.

The flow for one chat, keyed by (platform, connection, chat):
- a contact's message is stored (as live context) and (re)starts the chat's settle timer; when the contact has
  been quiet for `settle_s`, one draft answers everything they wrote since the owner's last message (a burst
  gets one draft, not one per message); a newer burst replaces a draft still on the card ("expired", action
  "replaced");
- the owner's own message (written by hand) is stored and supersedes every draft of the chat that is not in
  flight (pending, approved and waiting, waiting for a retry): it is the real reply, recorded for learning;
- every pending draft has a card on the owner's screen, or its card is tried again (at least as late as
  Telegram asked) until it does;
- Send / Edit / Next / Discard on the card move the draft through bot/drafts.py's state machine, each move
  committed with its time before anything goes out; a button names the candidate its card showed, and that is
  what is sent. An approved text goes out one message at a time, each recorded as it arrives; sends to a chat
  are paced; a send that was refused or never left is retried with backoff (bot/jobs.py), one whose fate is
  unknown (a timeout after Telegram may have delivered it) is put to the owner: "It arrived" / "Send again".
Exercised by `twin run`; tested in tests/test_relay_faults.py and, through Telegram, tests/test_telegram_relay.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from bot import drafts as D
from bot.drafter import Drafter
from bot.drafts import ChatRef, Draft, InvalidTransition, State
from bot.delivery import Delivery
from bot.ledger import Ledger
from bot.ports import Owner, Redraft, RelaySettings
from bot.screen import Retry, Screen
from bot.skips import ReplyGate, Skips
from serving.drafting import Candidates
from twin.chat import Chat, Message
from twin.errors import NotFound, TwinError
from twin.store import Store, StoredMessage

log = logging.getLogger(__name__)

class Relay:
    def __init__(self, store: Store, drafter: Drafter, owner: Owner, settings: RelaySettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), replies: ReplyGate | None = None):
        self.store = store
        self.ledger = Ledger(store)
        self.replies = replies  # None: every burst gets a card ([drafting] skip_no_reply, or no reply model)
        self.skips = Skips(store)
        self.drafter = drafter
        self.settings = settings
        self.clock = clock
        self.screen = Screen(owner, self.ledger, settings, clock)
        self.delivery = Delivery(store, self.ledger, self.screen, settings, clock, self._settled)
        self.senders = self.delivery.senders  # platform -> who sends as the owner there
        self._timers: dict[ChatRef, asyncio.Task] = {}
        self._locks: dict[ChatRef, asyncio.Lock] = {}  # one draft at a time per chat
        self._draft_retry: dict[ChatRef, Retry] = {}
        self._waiters: dict[int, asyncio.Future] = {}  # drafts someone awaits (Discord replies for approval)
        self._redraft: dict[int, Redraft] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def owner(self) -> Owner:
        """The owner's side (cards, notes); the Telegram adapter sets itself here when it starts."""
        return self.screen.owner

    @owner.setter
    def owner(self, owner: Owner) -> None:
        self.screen.owner = owner

    # -- incoming ---------------------------------------------------------------------------------------


    async def contact_message(self, ref: ChatRef, chat: Chat, message: Message) -> None:
        """A contact wrote: store it, and draft once they have been quiet for a moment."""
        self.store.insert_live(chat, message)
        self.ledger.note_chat(ref)
        self.skips.contact_wrote(ref, self.clock())
        log.info("contact message chat=%s msg=%s chars=%d", ref.chat_id, message.id, len(message.text))
        if self.ledger.paused:
            return
        self._arm(ref)

    async def owner_message(self, ref: ChatRef, chat: Chat, message: Message) -> None:
        """The owner wrote in the chat by hand: context, and the real reply to every draft of the chat that is not
        in flight right now (pending, approved and waiting its turn, waiting for a retry)."""
        self.store.insert_live(chat, message, from_owner=True)
        self._disarm(ref)
        self._draft_retry.pop(ref, None)
        now = self.clock()
        self.skips.owner_wrote(ref, now)
        for d in self.ledger.unsettled(ref.platform, ref.chat_id):
            try:
                d = self.ledger.apply(d.id, lambda x: D.supersede(x, message.text, now), "owner_wrote", now)
            except InvalidTransition:
                continue  # in flight, or unsure: the owner still says whether it arrived
            await self._settled(d, "you answered by hand")
        log.info("owner message chat=%s msg=%s", ref.chat_id, message.id)

    async def message_edited(self, chat: Chat, message: Message, from_owner: bool) -> None:
        self.store.insert_live(chat, message, from_owner)

    async def messages_deleted(self, ref: ChatRef, message_ids: list[str]) -> None:
        with self.store.transaction():
            self.store.delete_messages(ref.key, message_ids)
        log.info("deleted chat=%s messages=%d", ref.chat_id, len(message_ids))

    # -- drafting ---------------------------------------------------------------------------------------

    def _disarm(self, ref: ChatRef) -> None:
        timer = self._timers.pop(ref, None)
        if timer is not None:
            timer.cancel()

    def _arm(self, ref: ChatRef, delay: float | None = None) -> None:
        self._disarm(ref)
        delay = self.settings.settle_s if delay is None else delay
        self._timers[ref] = asyncio.create_task(self._settle(ref, delay))
        log.debug("settle timer chat=%s %.2f s", ref.chat_id, delay)

    async def _settle(self, ref: ChatRef, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timers.pop(ref, None)
        self.spawn(self.draft_chat(ref))

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def redraft_with(self, draft_id: int, redraft: Redraft) -> None:
        """How Regenerate drafts again for this draft (the conversation as it stood), while the relay runs."""
        self._redraft[draft_id] = redraft

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.error("relay task failed: %s", type(e).__name__, exc_info=(type(e), e, e.__traceback__))

    def unanswered(self, ref: ChatRef) -> list[StoredMessage]:
        """The contact's messages since the owner last wrote (in the stored conversation), oldest first."""
        key = ref.key
        # Only the messages from the owner's last one on: a chat's whole history can be an export's thousands.
        history = self.store.chat_messages(key, since=self.store.last_owner_time(key))
        tail: list = []
        for m in reversed(history):
            if m.from_owner:
                break
            tail.append(m)
        return tail[::-1]

    async def draft_chat(self, ref: ChatRef, force: bool = False) -> Draft | None:
        """Draft a reply to the chat's unanswered burst, replacing a pending draft that answers less of it. A burst
        the reply model judges "no reply due" gets no card (bot/skips.py); `force` (/draft) drafts anyway."""
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            burst = [m for m in self.unanswered(ref) if m.text.strip() or m.kind != "text"]
            if not burst or self.ledger.paused:
                return None
            if not force:
                answered = self.ledger.answered(ref) | self.skips.covered(ref)
                if all(m.msg_id in answered for m in burst):
                    return None
                if self.replies is not None and (p := self.replies.judge(ref, burst)) is not None:
                    self.skips.record(ref, burst[-1].sender_id, [m.msg_id for m in burst], p, self.clock())
                    log.info("no reply due chat=%s messages=%d p=%.2f: no card", ref.chat_id, len(burst), p)
                    return None
            try:
                result = await self.drafter.draft(ref.key)
            except TwinError as e:
                await self._draft_failed(ref, e)
                return None
            self._draft_retry.pop(ref, None)
            # While the model was busy the owner may have answered by hand (no draft needed), or the contact
            # may have written more (their settle timer drafts again, for the whole burst).
            if [m.msg_id for m in self.unanswered(ref)] != [m.msg_id for m in burst]:
                log.info("draft for chat=%s dropped: the conversation moved on while drafting", ref.chat_id)
                return None
            return await self._new_draft(ref, burst, result)

    async def _new_draft(self, ref: ChatRef, burst: list[StoredMessage], result: Candidates) -> Draft:
        now = self.clock()
        for old in self.ledger.pending(ref):
            old = self.ledger.apply(old.id, lambda x: D.expire(x, now), "replaced", now)
            await self._settled(old, "replaced by a newer draft")
        last = max(m.time for m in burst)
        auto = self.ledger.auto(ref.platform, ref.chat_id)
        d = self.ledger.create(Draft(
            id=None, chat=ref, contact_id=burst[-1].sender_id, answers=tuple(m.msg_id for m in burst),
            candidates=tuple(c.text for c in result.candidates), created_at=now, updated_at=now,
            expires_at=D.expiry(last, self.settings.expiry_margin), reply_to=burst[-1].msg_id,
            adapter=result.adapter, prompt=result.prompt_ids, latency_ms=result.latency_ms, auto=auto,
            remembered=result.remembered,
        ), now)
        log.info("draft %d chat=%s candidates=%d latency_ms=%.0f auto=%s", d.id, ref.chat_id,
                 len(d.candidates), result.latency_ms, auto)
        if auto:
            d = self.ledger.apply(d.id, lambda x: D.approve(x, now), "auto", now)
        await self.screen.show(d, "sending automatically" if auto else "")
        if auto:
            await self.deliver(d.id)
        return self.ledger.get(d.id)

    async def _draft_failed(self, ref: ChatRef, error: TwinError) -> None:
        retry = self._draft_retry.get(ref) or Retry(0, self.clock())
        retry.attempts += 1
        log.warning("drafting failed chat=%s attempt=%d: %s", ref.chat_id, retry.attempts, type(error).__name__)
        if retry.attempts > self.settings.draft_retries:
            self._draft_retry.pop(ref, None)
            await self.owner.notify(f"Could not draft a reply after {retry.attempts} tries: {error}")
            return
        retry.at = self.clock() + timedelta(seconds=self.settings.backoff_s * 2 ** (retry.attempts - 1))
        self._draft_retry[ref] = retry
        if retry.attempts == 1:
            await self.owner.notify(f"Drafting failed ({error}); retrying.")

    # -- the owner's actions ----------------------------------------------------------------------------

    async def act(self, draft_id: int, action: str, candidate: int | None = None) -> str:
        """A button on a card: send, edit, next, discard (a pending draft), resend or arrived (an unsure send).
        `candidate` is the one its card showed; Send sends that one. Returns a short answer for the press."""
        now = self.clock()
        try:
            d = self.ledger.get(draft_id)
            if D.is_due(d, now):
                await self.expire(d, now)
                return "Too late: this draft expired."
            if action == "send":
                d = self.ledger.apply(draft_id, lambda x: D.approve(x, now, candidate), "send", now)
                self.spawn(self.deliver(d.id))
                return "Sending."
            if action == "edit":
                for other in self.ledger.editing():
                    if other.id != draft_id:
                        self.ledger.apply(other.id, lambda x: D.cancel_edit(x, now), "edit_cancelled", now)
                d = self.ledger.apply(draft_id, lambda x: D.start_edit(x, now), "edit", now)
                await self.owner.update_card(d, "send me the text to send instead (/cancel to keep the draft)")
                return "Send me the new text."
            if action == "next":
                return await self._next(d, now)
            if action == "noreply":
                d = self.ledger.apply(draft_id, lambda x: D.no_reply(x, now), "no_reply", now)
                await self._settled(d, "no reply needed: noted for the next training")
                return "Noted: no reply needed."
            if action == "discard":
                d = self.ledger.apply(draft_id, lambda x: D.discard(x, now), "discard", now)
                await self._settled(d, "discarded")
                return "Discarded."
            if action == "resend":
                d = self.ledger.apply(draft_id, lambda x: D.resend(x, now), "resend", now)
                self.spawn(self.deliver(d.id))
                return "Sending again."
            if action == "arrived":
                pieces, index = self.delivery.pieces(d), len(d.sent_ids)
                d = self.ledger.apply(draft_id, lambda x: D.arrived(x, index + 1 >= len(pieces), now), "arrived", now)
                # It is the owner's turn in the conversation; Telegram's id for it is unknown.
                self.delivery.record_sent(d, f"arrived-{d.id}-{index}", pieces[index], now)
                if d.done:
                    await self._settled(d, "it arrived")
                else:
                    self.spawn(self.deliver(d.id))
                return "Noted: it arrived." + ("" if d.done else " Sending the rest.")
        except InvalidTransition as e:
            log.info("draft %d: %s refused (%s)", draft_id, action, e)
            d = self.ledger.get(draft_id)
            if d.state == State.PENDING:
                return str(e)[:200]
            return f"Already {d.state.value.replace('_', ' ')}."
        raise ValueError(f"unknown action {action!r}")

    async def _next(self, d: Draft, now: datetime) -> str:
        try:
            d = self.ledger.apply(d.id, lambda x: D.next_candidate(x, now), "next", now)
            await self.owner.update_card(d)
            return f"Candidate {d.shown + 1}."
        except InvalidTransition:
            pass
        self.spawn(self._regenerate(d.id))
        return "Drafting more..."

    async def _regenerate(self, draft_id: int) -> None:
        d = self.ledger.get(draft_id)
        redraft = self._redraft.get(draft_id)
        try:
            if redraft is not None:  # a Discord approval: its own persona, memory and sender
                result = await redraft()
            else:
                result = await self.drafter.draft(d.chat.key, seed=None)
        except TwinError as e:
            await self.owner.notify(f"Could not draft more: {e}")
            return
        now = self.clock()
        seen = set(d.candidates)
        fresh = tuple(c.text for c in result.candidates if c.text not in seen)
        try:
            d = self.ledger.apply(draft_id, lambda x: D.add_candidates(x, fresh, now), "regenerate", now)
        except (InvalidTransition, NotFound) as e:
            log.info("draft %d: regeneration dropped (%s)", draft_id, type(e).__name__)
            return
        await self.owner.update_card(d)

    async def edit_text(self, text: str) -> bool:
        """The owner's message while a draft is being edited: send it instead. False when nothing is edited."""
        editing = self.ledger.editing()
        if not editing:
            return False
        now = self.clock()
        d = editing[-1]
        try:
            d = self.ledger.apply(d.id, lambda x: D.submit_edit(x, text, now), "edited", now)
        except InvalidTransition as e:
            await self.owner.notify(f"Not sent: {e}")
            return True
        self.spawn(self.deliver(d.id))
        return True

    async def cancel_edit(self) -> bool:
        now = self.clock()
        editing = self.ledger.editing()
        for d in editing:
            d = self.ledger.apply(d.id, lambda x: D.cancel_edit(x, now), "edit_cancelled", now)
            await self.owner.update_card(d)
        return bool(editing)

    # -- sending ----------------------------------------------------------------------------------------

    async def deliver(self, draft_id: int) -> Draft | None:
        """Send an approved draft as the owner (bot/delivery.py); None when it was forgotten meanwhile."""
        return await self.delivery.deliver(draft_id, self._resolve_waiter)

    async def _settled(self, d: Draft, note: str) -> None:
        waiter = self._waiters.pop(d.id, None)
        self._redraft.pop(d.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(d.final_text if d.state in (State.SENT, State.EDITED_SENT) else None)
        await self.screen.settle(d, note)

    # -- approval for replies that someone else sends (the Discord twin) --------------------------------

    async def approve(self, ref: ChatRef, contact_id: str, answers: tuple[str, ...], result: Candidates,
                      redraft: Redraft | None = None) -> str | None:
        """Show a card for a reply another adapter will send; the approved text, or None. `redraft` makes more
        candidates with the first draft's own context (Regenerate on the card)."""
        now = self.clock()
        d = self.ledger.create(Draft(
            id=None, chat=ref, contact_id=contact_id, answers=answers, origin="discord",
            candidates=tuple(c.text for c in result.candidates), created_at=now, updated_at=now,
            expires_at=D.expiry(now, self.settings.expiry_margin), adapter=result.adapter,
            prompt=result.prompt_ids, latency_ms=result.latency_ms, remembered=result.remembered,
        ), now)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[d.id] = waiter
        if redraft is not None:
            self.redraft_with(d.id, redraft)
        await self.screen.show(d, "Discord")
        return await waiter

    async def _resolve_waiter(self, d: Draft) -> Draft:
        now = self.clock()
        d = self.ledger.apply(d.id, lambda x: D.sent(x, ("discord",), now), "sent", now)
        await self._settled(d, "sent on Discord")
        return d

    # -- jobs -------------------------------------------------------------------------------------------

    async def expire(self, d: Draft, now: datetime) -> None:
        try:
            d = self.ledger.apply(d.id, lambda x: D.expire(x, now), "expire", now)
        except InvalidTransition:
            return
        await self._settled(d, "expired: the reply window is closing")

    async def expire_due(self) -> int:
        now = self.clock()
        due = self.ledger.due_to_expire(now)
        for d in due:
            await self.expire(d, now)
        return len(due)

    async def retry_due(self) -> int:
        """Retry failed sends whose backoff is over, cards that did not get through, and drafting that failed."""
        now = self.clock()
        sends = self.ledger.due_to_retry(now)
        for d in sends:
            if d.origin == "telegram":
                await self.deliver(d.id)
        cards = await self.screen.show_missing(now)
        chats = [ref for ref, r in self._draft_retry.items() if r.at <= now]
        for ref in chats:
            await self.draft_chat(ref)
        return len(sends) + cards + len(chats)

    async def recover(self) -> None:
        """After a start: sends cut off in flight are put to the owner (never resent blindly), approved sends
        resume, cards that never got through are shown, Discord approvals nobody waits for any more expire,
        and chats left waiting for a draft get one."""
        now = self.clock()
        for d in self.ledger.inflight():
            d = self.ledger.apply(d.id, lambda x: D.interrupted(x, now), "interrupted", now)
            await self.screen.reshow(d)
        for d in self.ledger.approved():
            if d.origin == "telegram":
                self.spawn(self.deliver(d.id))
        for d in self.ledger.pending():
            if d.origin == "discord" and d.id not in self._waiters:
                await self.expire(d, now)
        await self.screen.show_missing()
        for ref in self.ledger.live_chats():
            if self.unanswered(ref) and not self.ledger.paused:
                self._arm(ref, 0)

    async def forget(self, platform: str, chat_id: str, run: Callable[[], object]) -> object:
        """`run` forgets a contact whose chat this is (twin.forget); first the relay lets go of the chat (its
        timers, retries, waiting Discord approvals), then the cards of its open drafts say they are gone."""
        open_drafts = self.ledger.unsettled(platform, chat_id)
        for ref in [r for r in self._timers if (r.platform, r.chat_id) == (platform, chat_id)]:
            self._disarm(ref)
        for ref in [r for r in self._draft_retry if (r.platform, r.chat_id) == (platform, chat_id)]:
            self._draft_retry.pop(ref, None)
        result = run()
        for d in open_drafts:
            self.screen.retries.pop(d.id, None)
            self._redraft.pop(d.id, None)
            waiter = self._waiters.pop(d.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if d.card:
                await self.owner.retire_card(d.card)
        return result

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._timers.values(), *self._tasks, return_exceptions=True)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    async def force_draft(self, ref: ChatRef) -> bool:
        """/draft: a card for the chat's last burst, also one judged "no reply due"; False when the owner wrote
        last (nothing to answer)."""
        if not self.unanswered(ref):
            return False
        self.skips.forced(ref, self.clock())
        self._disarm(ref)
        self.spawn(self.draft_chat(ref, force=True))
        return True

    def set_auto(self, chat: Chat, on: bool) -> None:
        self.ledger.set_auto(chat.platform, chat.id, on)
