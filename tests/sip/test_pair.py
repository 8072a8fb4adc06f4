"""Whole exchanges between two TransactionLayers through the in-memory pair."""

from __future__ import annotations

from sip.message import Request, Response, make_response
from sip.transaction import (
    RequestReceived,
    ResponseReceived,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
)
from tests.sip.pair import Pair, make_ack_for_2xx, make_request, uac_and_uas


def only(events: list[TransactionEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def new_request(pair: Pair) -> RequestReceived:
    (event,) = only(pair.uas.take_events(), RequestReceived)
    assert isinstance(event, RequestReceived)
    return event


def statuses(pair: Pair, key: str) -> list[int]:
    return [
        e.response.status
        for e in pair.uac.take_events()
        if isinstance(e, ResponseReceived) and e.key == key
    ]


def is_status(status: int) -> object:
    return lambda m: isinstance(m, Response) and m.status == status


def invite_answered(pair: Pair) -> tuple[Request, Response, str, RequestReceived]:
    """INVITE -> 180 -> 200 up to the UAC's 2xx; returns the UAC's INVITE, the 200, the
    UAC key and the UAS's RequestReceived."""
    invite = make_request("INVITE")
    key = pair.uac.layer.send_request(invite, pair.uas.address, "UDP", pair.now)
    pair.pump()
    got = new_request(pair)
    assert got.key is not None
    uas = pair.uas.layer
    uas.send_response(got.key, make_response(got.request, 180, to_tag="bob"), pair.now)
    pair.pump()
    assert statuses(pair, key) == [180]
    ok = make_response(got.request, 200, to_tag="bob")
    uas.send_response(got.key, ok, pair.now)
    pair.uas.retransmit_2xx(ok, got.source, got.transport, pair.now)
    return invite, ok, key, got


def test_invite_180_200_ack_bye() -> None:
    pair = uac_and_uas()
    invite, _, key, got = invite_answered(pair)
    pair.pump()
    (ok_event,) = only(pair.uac.take_events(), ResponseReceived)
    assert ok_event.key == key and ok_event.response.status == 200
    ack = make_ack_for_2xx(invite, ok_event.response)
    pair.uac.layer.send_stateless(ack, pair.uas.address, "UDP")
    pair.pump()
    (ack_event,) = pair.uas.take_events()
    assert isinstance(ack_event, RequestReceived)
    assert ack_event.request.method == "ACK" and ack_event.key is None
    assert pair.uas.retransmitters == []  # the 2xx retransmission stopped on the ACK

    bye = make_request("BYE", cseq=2, to_tag="bob")
    bye_key = pair.uac.layer.send_request(bye, pair.uas.address, "UDP", pair.now)
    pair.pump()
    got_bye = new_request(pair)
    assert got_bye.request.method == "BYE" and got_bye.key is not None
    pair.uas.layer.send_response(got_bye.key, make_response(got_bye.request, 200), pair.now)
    pair.pump()
    assert statuses(pair, bye_key) == [200]

    pair.run_all_timers()
    assert len(pair.uac.layer) == 0 and len(pair.uas.layer) == 0
    # Every INVITE/BYE went out once: nothing was lost, so nothing was retransmitted.
    methods = [s.message.method for s in pair.sent("uac") if isinstance(s.message, Request)]
    assert methods == ["INVITE", "ACK", "BYE"]
    assert only(pair.uac.take_events(), TransactionTimedOut) == []
    assert only(pair.uas.take_events(), TransactionTimedOut) == []
    assert got.key is not None


def test_invite_cancel_487_ack() -> None:
    pair = uac_and_uas()
    invite = make_request("INVITE")
    key = pair.uac.layer.send_request(invite, pair.uas.address, "UDP", pair.now)
    pair.pump()
    got = new_request(pair)
    assert got.key is not None
    pair.advance(0.2)  # the UAS transaction sends 100 Trying on its own
    assert statuses(pair, key) == [100]

    cancel_key = pair.uac.layer.cancel_request(key, pair.now)
    assert cancel_key is not None
    pair.pump()
    got_cancel = new_request(pair)
    assert got_cancel.request.method == "CANCEL" and got_cancel.key is not None
    assert pair.uas.layer.find_cancelled(got_cancel.request) == got.key
    uas = pair.uas.layer
    uas.send_response(got_cancel.key, make_response(got_cancel.request, 200), pair.now)
    uas.send_response(got.key, make_response(got.request, 487, to_tag="bob"), pair.now)
    pair.pump()
    events = pair.uac.take_events()
    got_statuses = {(e.key, e.response.status) for e in only(events, ResponseReceived)}
    assert got_statuses == {(cancel_key, 200), (key, 487)}
    # The 487 was ACKed by the client transaction and absorbed by the server transaction.
    acks = [s for s in pair.sent("uac") if s.message.method == "ACK"]  # type: ignore[union-attr]
    assert len(acks) == 1
    assert pair.uas.take_events() == []

    pair.run_all_timers()
    assert len(pair.uac.layer) == 0 and len(pair.uas.layer) == 0
    assert only(pair.uac.take_events(), TransactionTimedOut) == []
    assert only(pair.uas.take_events(), TransactionTimedOut) == []


def test_lost_200_is_recovered_by_the_uas_tu() -> None:
    pair = uac_and_uas()
    pair.drop_next(is_status(200))  # type: ignore[arg-type]
    invite, _, key, _ = invite_answered(pair)
    pair.pump()
    assert only(pair.uac.take_events(), ResponseReceived) == []
    pair.advance(0.5)  # the Uas2xxRetransmitter fires
    (ok_event,) = only(pair.uac.take_events(), ResponseReceived)
    assert ok_event.key == key and ok_event.response.status == 200
    pair.uac.layer.send_stateless(
        make_ack_for_2xx(invite, ok_event.response), pair.uas.address, "UDP"
    )
    pair.pump()
    assert [e.request.method for e in only(pair.uas.take_events(), RequestReceived)] == ["ACK"]
    assert pair.uas.retransmitters == []
    oks = [s for s in pair.wire if isinstance(s.message, Response) and s.message.status == 200]
    assert [s.dropped for s in oks] == [True, False]
    pair.run_all_timers()
    assert len(pair.uac.layer) == 0 and len(pair.uas.layer) == 0


def test_lost_ack_of_2xx_keeps_retransmitting_and_reaches_the_uac_as_stray() -> None:
    pair = uac_and_uas()
    invite, _, key, _ = invite_answered(pair)
    pair.pump()
    (ok_event,) = only(pair.uac.take_events(), ResponseReceived)
    ack = make_ack_for_2xx(invite, ok_event.response)
    pair.drop_next(lambda m: isinstance(m, Request) and m.method == "ACK")
    pair.uac.layer.send_stateless(ack, pair.uas.address, "UDP")
    pair.advance(0.5)
    # The retransmitted 200 reaches the UAC transaction (Accepted): the TU ACKs again.
    (again,) = only(pair.uac.take_events(), ResponseReceived)
    assert again.key == key and again.response.status == 200
    pair.uac.layer.send_stateless(make_ack_for_2xx(invite, again.response), pair.uas.address, "UDP")
    pair.pump()
    assert pair.uas.retransmitters == []
    pair.run_all_timers()
    assert len(pair.uac.layer) == 0 and len(pair.uas.layer) == 0


def test_lost_invite_is_retransmitted_and_lost_final_is_replayed() -> None:
    pair = uac_and_uas()
    pair.drop_next(lambda m: isinstance(m, Request) and m.method == "INVITE")
    invite = make_request("INVITE")
    key = pair.uac.layer.send_request(invite, pair.uas.address, "UDP", pair.now)
    pair.pump()
    assert pair.uas.take_events() == []
    pair.advance(0.5)  # timer A
    got = new_request(pair)
    assert got.key is not None
    pair.drop_next(is_status(486))  # type: ignore[arg-type]
    pair.uas.layer.send_response(got.key, make_response(got.request, 486, to_tag="b"), pair.now)
    pair.pump()
    assert statuses(pair, key) == []
    pair.advance(1.0)  # timer G on the UAS (and timer A on the UAC) resend
    assert 486 in statuses(pair, key)
    assert pair.uas.take_events() == []  # retransmissions never reach the TU twice
    pair.run_all_timers()
    assert len(pair.uac.layer) == 0 and len(pair.uas.layer) == 0


def test_unanswered_invite_times_out_on_both_sides() -> None:
    pair = uac_and_uas()
    invite = make_request("INVITE")
    key = pair.uac.layer.send_request(invite, pair.uas.address, "UDP", pair.now)
    pair.pump()
    got = new_request(pair)
    assert got.key is not None
    pair.drop_next(is_status(100))  # type: ignore[arg-type]
    pair.advance(0.2)
    pair.run_all_timers()
    # The UAC got the 100 on a later retransmission, so it waits in Proceeding forever:
    # giving up is the TU's call (CANCEL). The UAS TU never answered.
    assert len(pair.uac.layer) == 1 and len(pair.uas.layer) == 1
    pair.uac.layer.cancel_request(key, pair.now)
    pair.pump()
    cancel = new_request(pair)
    assert cancel.key is not None
    pair.uas.layer.send_response(cancel.key, make_response(cancel.request, 200), pair.now)
    pair.uas.layer.send_response(got.key, make_response(got.request, 487, to_tag="b"), pair.now)
    pair.run_all_timers()
    assert len(pair.uac.layer) == 0 and len(pair.uas.layer) == 0
    assert TransactionTerminated(key) in pair.uac.take_events()
