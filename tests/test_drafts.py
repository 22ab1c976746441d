"""The draft state machine (bot/drafts.py) on plain values, and the ledger that stores it (bot/ledger.py)."""

from datetime import timedelta

import pytest

from bot import drafts as D
from bot.drafts import ChatRef, Draft, InvalidTransition, State, utc
from bot.ledger import Connection, Ledger
from twin.store import Store

T0 = utc(1_700_000_000)
REF = ChatRef("telegram", "BC1", "5550100102")


def fresh(**kw) -> Draft:
    base = dict(id=7, chat=REF, contact_id="user5550100102", answers=("11", "12"), candidates=("sure, 8?", "can't"),
                created_at=T0, updated_at=T0, expires_at=T0 + timedelta(hours=23, minutes=45), reply_to="12")
    return Draft(**{**base, **kw})


def test_approve_then_sent_is_sent_as_is():
    d = D.approve(fresh(), T0 + timedelta(seconds=5))
    assert (d.state, d.final_text, d.edited) == (State.SENDING, "sure, 8?", False)
    d = D.dispatch(d, T0 + timedelta(seconds=6))
    assert (d.inflight, d.attempts) == (True, 1)
    d = D.sent(d, ("900",), T0 + timedelta(seconds=7))
    assert (d.state, d.sent_ids, d.inflight, d.updated_at) == (State.SENT, ("900",), False, T0 + timedelta(seconds=7))


def test_double_tap_is_refused():
    d = D.approve(fresh(), T0)
    with pytest.raises(InvalidTransition, match="sending"):
        D.approve(d, T0)


def test_edit_flow_records_edited_text():
    d = D.start_edit(fresh(), T0)
    assert d.editing and d.state == State.PENDING
    d = D.submit_edit(d, "sure, 9?", T0)
    assert (d.state, d.final_text, d.edited, d.editing) == (State.SENDING, "sure, 9?", True, False)
    d = D.sent(D.dispatch(d, T0), ("901",), T0)
    assert d.state == State.EDITED_SENT


def test_edit_identical_to_candidate_counts_as_sent_as_is():
    d = D.submit_edit(D.start_edit(fresh(), T0), "  sure, 8? ", T0)
    assert D.sent(D.dispatch(d, T0), ("1",), T0).state == State.SENT


def test_empty_edit_is_refused():
    with pytest.raises(InvalidTransition, match="empty"):
        D.submit_edit(fresh(), "   ", T0)


def test_next_candidate_then_regenerate():
    d = D.next_candidate(fresh(), T0)
    assert (d.shown, d.text) == (1, "can't")
    with pytest.raises(InvalidTransition, match="no candidates left"):
        D.next_candidate(d, T0)
    d = D.add_candidates(d, ("maybe", "yes!"), T0)
    assert (d.shown, d.text, d.regenerations, len(d.candidates)) == (2, "maybe", 1, 4)


def test_terminal_states_refuse_everything():
    for done in (D.discard(fresh(), T0), D.expire(fresh(), T0), D.supersede(fresh(), "by hand", T0)):
        assert done.done
        for move in (lambda d: D.approve(d, T0), lambda d: D.discard(d, T0), lambda d: D.expire(d, T0),
                     lambda d: D.start_edit(d, T0), lambda d: D.next_candidate(d, T0)):
            with pytest.raises(InvalidTransition):
                move(done)


def test_supersede_keeps_the_owners_text():
    d = D.supersede(fresh(), "on my way", T0)
    assert (d.state, d.final_text, d.edited) == (State.SUPERSEDED, "on my way", True)


def test_no_approval_once_the_window_is_closing():
    late = fresh().expires_at
    assert D.is_due(fresh(), late) and not D.is_due(fresh(), late - timedelta(seconds=1))
    with pytest.raises(InvalidTransition, match="expired"):
        D.approve(fresh(), late)
    with pytest.raises(InvalidTransition, match="expired"):
        D.submit_edit(fresh(), "x y", late)
    assert D.expire(fresh(), late).state == State.EXPIRED


def test_expiry_is_the_margin_before_the_window_closes():
    assert D.expiry(T0, timedelta(minutes=15)) == T0 + timedelta(hours=23, minutes=45)


def test_failed_send_backs_off_then_gives_up():
    d = D.dispatch(D.approve(fresh(), T0), T0)
    d = D.send_failed(d, "timeout", T0, retries=2, backoff_s=5)
    assert (d.state, d.next_attempt_at, d.inflight) == (State.SENDING, T0 + timedelta(seconds=5), False)
    d = D.send_failed(D.dispatch(d, T0), "timeout", T0, retries=2, backoff_s=5)
    assert d.next_attempt_at == T0 + timedelta(seconds=10)
    d = D.send_failed(D.dispatch(d, T0), "timeout", T0, retries=2, backoff_s=5)
    assert (d.state, d.attempts, d.error) == (State.FAILED, 3, "timeout")


def test_permanent_failure_and_closing_window_fail_at_once():
    d = D.dispatch(D.approve(fresh(), T0), T0)
    assert D.send_failed(d, "forbidden", T0, retries=5, retryable=False).state == State.FAILED
    near = fresh().expires_at - timedelta(seconds=2)
    assert D.send_failed(d, "timeout", near, retries=5, backoff_s=5).state == State.FAILED


def test_interrupted_send_is_never_retried_but_put_to_the_owner():
    d = D.interrupted(D.dispatch(D.approve(fresh(), T0), T0), T0)
    assert (d.state, d.error) == (State.UNSURE, "interrupted while sending: it may have been sent")
    waiting = D.approve(fresh(), T0)  # approved, not yet dispatched: safe to send after a restart
    assert D.interrupted(waiting, T0) is waiting


def test_unsure_send_waits_for_the_owner_then_resends_or_counts_as_arrived():
    d = D.send_unsure(D.dispatch(D.approve(fresh(), T0), T0), "Telegram did not answer in time", T0)
    assert (d.state, d.inflight, d.done) == (State.UNSURE, False, False)
    with pytest.raises(InvalidTransition):
        D.dispatch(d, T0)  # nothing goes out again without the owner's word
    again = D.resend(d, T0)
    assert (again.state, again.failures, again.next_attempt_at) == (State.SENDING, 0, None)
    assert D.arrived(d, last=True, now=T0).state == State.SENT
    # Two messages, the first unsure: once it arrived, the second still goes out.
    rest = D.arrived(d, last=False, now=T0)
    assert (rest.state, rest.sent_ids) == (State.SENDING, ("?",))
    late = fresh().expires_at + timedelta(seconds=1)
    with pytest.raises(InvalidTransition, match="window"):
        D.resend(d, late)


def test_each_message_of_a_burst_is_recorded_as_it_arrives():
    d = D.dispatch(D.approve(fresh(), T0), T0)
    d = D.delivered(d, "900", last=False, now=T0)
    assert (d.state, d.sent_ids, d.inflight) == (State.SENDING, ("900",), False)
    d = D.send_failed(D.dispatch(d, T0), "flood", T0, retries=3)
    assert (d.state, d.sent_ids, d.failures, d.attempts) == (State.SENDING, ("900",), 1, 2)
    d = D.delivered(D.dispatch(d, T0), "901", last=True, now=T0)
    assert (d.state, d.sent_ids, d.failures) == (State.SENT, ("900", "901"), 0)


def test_retry_waits_at_least_what_telegram_asked():
    d = D.dispatch(D.approve(fresh(), T0), T0)
    d = D.send_failed(d, "flood", T0, retries=3, backoff_s=5, retry_after=timedelta(seconds=40))
    assert d.next_attempt_at == T0 + timedelta(seconds=40)
    d = D.send_failed(D.dispatch(d, T0), "flood", T0, retries=3, backoff_s=5, retry_after=timedelta(seconds=1))
    assert d.next_attempt_at == T0 + timedelta(seconds=10)  # the backoff, when it is longer


def test_writing_by_hand_supersedes_a_send_waiting_for_its_retry_but_not_one_in_flight():
    waiting = D.send_failed(D.dispatch(D.approve(fresh(), T0), T0), "5xx", T0, retries=3)
    d = D.supersede(waiting, "on my way", T0)
    assert (d.state, d.final_text, d.next_attempt_at) == (State.SUPERSEDED, "on my way", None)
    assert D.supersede(D.approve(fresh(), T0), "x", T0).state == State.SUPERSEDED  # approved, not yet out
    with pytest.raises(InvalidTransition, match="in flight"):
        D.supersede(D.dispatch(D.approve(fresh(), T0), T0), "x", T0)


def test_approve_sends_the_candidate_its_card_showed():
    d = D.next_candidate(fresh(), T0)  # the draft shows candidate 2 now; an older card showed candidate 1
    assert D.approve(d, T0, candidate=0).final_text == "sure, 8?"
    assert D.approve(d, T0).final_text == "can't"
    with pytest.raises(InvalidTransition, match="no candidate"):
        D.approve(d, T0, candidate=5)


def test_callback_grammar_round_trips():
    for action in D.ACTIONS:
        assert D.parse_callback(D.callback_data(123456789, action, 3)) == (123456789, action, 3)
    assert len(D.callback_data(2**62, "arrived", 99).encode()) <= 64  # Telegram's callback_data limit
    for bad in ("", "d:1", "d:1:send", "d:1:send:x", "x:1:send:0", "d:-1:send:0", "d:1:SEND:0"):
        assert D.parse_callback(bad) is None


# -- the ledger --------------------------------------------------------------------------------------------

def test_ledger_round_trips_a_draft_and_records_each_transition(tmp_path):
    store = Store.open(tmp_path / "twin.db")
    ledger = Ledger(store)
    d = ledger.create(fresh(id=None, prompt=(1, 2, 3), adapter="twin-v2", latency_ms=812.5), T0)
    assert ledger.get(d.id) == d and d.prompt == (1, 2, 3)
    t1, t2 = T0 + timedelta(seconds=3), T0 + timedelta(seconds=4)
    ledger.apply(d.id, lambda x: D.next_candidate(x, t1), "next", t1)
    d = ledger.apply(d.id, lambda x: D.approve(x, t2), "send", t2)
    assert (d.state, d.final_text) == (State.SENDING, "can't")
    assert [(a, f, s) for _, a, f, s in ledger.events(d.id)] == [
        ("create", None, "pending"), ("next", "pending", "pending"), ("send", "pending", "sending")]
    assert [t for t, *_ in ledger.events(d.id)] == [T0, t1, t2]
    with pytest.raises(InvalidTransition):
        ledger.apply(d.id, lambda x: D.approve(x, t2), "send", t2)
    assert len(ledger.events(d.id)) == 3  # a refused move records nothing
    store.close()
    # A restart finds exactly what was committed.
    again = Ledger(Store.open(tmp_path / "twin.db"))
    assert again.get(d.id) == d
    assert again.approved() == [d] and again.due_to_retry(t2) == []


def test_ledger_queries(tmp_path):
    ledger = Ledger(Store.open(tmp_path / "twin.db"))
    a = ledger.create(fresh(id=None), T0)
    b = ledger.create(fresh(id=None, chat=ChatRef("telegram", "BC1", "42"), answers=("5",)), T0)
    assert [x.id for x in ledger.pending(REF)] == [a.id]
    assert ledger.answered(REF) == {"11", "12"}
    assert ledger.due_to_expire(T0) == [] and {x.id for x in ledger.due_to_expire(T0 + timedelta(days=1))} == {a.id, b.id}
    ledger.apply(a.id, lambda x: D.start_edit(x, T0), "edit", T0)
    assert [x.id for x in ledger.editing()] == [a.id]
    assert ledger.counts(T0) == {"pending": 2}
    conn = Connection("BC1", "5550100001", "5550100001", True, True, ("can_read_messages", "can_reply"), T0)
    ledger.save_connection(conn)
    assert ledger.connection("BC1") == conn and ledger.connection("nope") is None
    ledger.set_auto("telegram", "42", True)
    assert ledger.auto("telegram", "42") and not ledger.auto("telegram", "5550100102")
    ledger.note_chat(REF)
    assert ledger.live_chats() == [REF]
    assert not ledger.paused
    ledger.set_paused(True)
    assert ledger.paused


def test_a_draft_to_copy_is_never_sent_and_records_the_copy_and_what_went_out():
    d = fresh(origin=D.COPY, chat=ChatRef("whatsapp", None, "Joana"))
    for refused in (lambda: D.approve(d, T0), lambda: D.start_edit(d, T0)):
        with pytest.raises(InvalidTransition, match="offered to copy"):
            refused()
    c = D.copy(d, T0 + timedelta(seconds=5), 1)
    assert (c.state, c.shown, c.final_text, c.done) == (State.COPIED, 1, "can't", True)
    assert D.copy(c, T0, 0).final_text == "sure, 8?"  # copying another one later replaces the record
    assert (D.reported(c, "  can't ", T0).state, D.reported(c, "can't", T0).shown) == (State.SENT, 1)
    assert D.reported(d, "sure,   8?", T0).state == State.SENT  # a candidate word for word, no copy tapped
    mine = D.reported(c, "can't tonight", T0)
    assert (mine.state, mine.final_text, mine.edited) == (State.EDITED_SENT, "can't tonight", True)
    assert D.reported(d, "can't tonight", T0).state == State.SUPERSEDED  # their own words, nothing copied
    with pytest.raises(InvalidTransition):
        D.copy(fresh(), T0, 0)  # a draft sent from its card is not copied
    with pytest.raises(InvalidTransition):
        D.copy(d, T0, 2)
    with pytest.raises(InvalidTransition):
        D.reported(D.discard(d, T0), "ok", T0)


def test_copied_is_its_own_outcome_and_the_latest_draft_to_copy_is_found(tmp_path):
    store = Store.open(tmp_path / "twin.db")
    ledger = Ledger(store)
    first = ledger.create(fresh(id=None, origin=D.COPY), T0)
    ledger.create(fresh(id=None), T0)
    assert ledger.latest(D.COPY).id == first.id and ledger.latest(D.COPY, "whatsapp") is None
    ledger.apply(first.id, lambda x: D.copy(x, T0, 1), "copied", T0 + timedelta(seconds=9))
    (o,) = [o for o in ledger.outcomes() if o.draft_id == first.id]
    assert (o.kind, o.shown, o.passed_over, o.settled_at) == ("copied", "can't", ("sure, 8?",),
                                                              T0 + timedelta(seconds=9))
