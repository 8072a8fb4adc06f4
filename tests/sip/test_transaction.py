"""State machines of sip.transaction driven one layer at a time, time by hand."""

from __future__ import annotations

import pytest

from sip.errors import LocalProtocolError
from sip.message import Request, Response, make_response, parse_message
from sip.transaction import (
    Address,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
    Uas2xxRetransmitter,
)
from tests.sip.pair import make_request

ME: Address = ("192.0.2.1", 5060)
PEER: Address = ("192.0.2.2", 5070)


def layer() -> TransactionLayer:
    return TransactionLayer(local_sent_by=ME)


def run_timers(lay: TransactionLayer, until: float) -> list[tuple[float, bytes]]:
    """Fire every timer up to `until`; returns (time, datagram) of everything sent."""
    sent: list[tuple[float, bytes]] = []
    while (t := lay.get_timer()) is not None and t <= until:
        lay.handle_timer(t)
        sent.extend((t, data) for data, _, _ in lay.datagrams_to_send())
    return sent


def incoming(method: str, branch: str = "z9hG4bKpeer1", **kw: object) -> Request:
    """A request as received from PEER (through the parser, like the adapter does)."""
    req = make_request(method, **kw)  # type: ignore[arg-type]
    req.headers.add("Via", f"SIP/2.0/UDP 192.0.2.2:5070;branch={branch};rport", first=True)
    msg = parse_message(req.serialize())
    assert isinstance(msg, Request)
    return msg


def reply(request: Request, status: int, to_tag: str | None = "uas") -> Response:
    resp = make_response(request, status, to_tag=None if status == 100 else to_tag)
    msg = parse_message(resp.serialize())
    assert isinstance(msg, Response)
    return msg


def sent_request(lay: TransactionLayer) -> Request:
    (data, _, _), *rest = lay.datagrams_to_send()
    assert not rest
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


# --- client INVITE ---------------------------------------------------------------------------


def test_invite_client_udp_retransmits_then_times_out_at_64_t1() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    assert len(lay.datagrams_to_send()) == 1
    sent = run_timers(lay, 100.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = lay.events()
    assert isinstance(events[0], TransactionTimedOut) and events[0].key == key
    assert events[0].request.method == "INVITE"
    assert events[1] == TransactionTerminated(key)
    assert lay.get_timer() is None
    assert len(lay) == 0


def test_invite_client_adds_via_with_branch_and_rport() -> None:
    lay = layer()
    req = make_request("INVITE")
    key = lay.send_request(req, PEER, "UDP", 0.0)
    wire = sent_request(lay)
    top = wire.via[0]
    assert top.sent_by == ME and top.transport.upper() == "UDP"
    assert top.branch is not None and top.branch.startswith("z9hG4bK")
    assert "rport" in top.params
    assert key == f"c:{top.branch}|INVITE"


def test_invite_client_over_tcp_does_not_retransmit() -> None:
    lay = layer()
    lay.send_request(make_request("INVITE"), PEER, "TCP", 0.0)
    lay.datagrams_to_send()
    assert lay.get_timer() == 32.0  # timer B only
    assert run_timers(lay, 100.0) == []
    assert any(isinstance(e, TransactionTimedOut) for e in lay.events())


def test_invite_client_1xx_stops_retransmissions_and_timer_b() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    invite = sent_request(lay)
    lay.handle_timer(0.5)
    assert len(lay.datagrams_to_send()) == 1
    ringing = reply(invite, 180)
    lay.receive(ringing, PEER, "UDP", 0.7)
    assert lay.events() == [ResponseReceived(ringing, key)]
    assert lay.state(key) is TransactionState.PROCEEDING
    assert run_timers(lay, 1000.0) == []
    assert lay.events() == []
    assert len(lay) == 1  # Proceeding waits for the final response, as long as it takes


def test_invite_client_non_2xx_is_acked_by_the_transaction() -> None:
    lay = layer()
    req = make_request("INVITE", uri="sip:bob@192.0.2.2:5070")
    req.headers.add("Route", "<sip:proxy.example.com;lr>")
    key = lay.send_request(req, PEER, "UDP", 0.0)
    invite = sent_request(lay)
    busy = reply(invite, 486)
    lay.receive(busy, PEER, "UDP", 0.1)
    assert lay.events() == [ResponseReceived(busy, key)]
    ack = sent_request(lay)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(invite.uri)
    assert ack.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert ack.via[0].branch == invite.via[0].branch  # same transaction (§17.1.1.3)
    assert ack.cseq.seq == invite.cseq.seq and ack.cseq.method == "ACK"
    assert ack.to.tag == "uas"
    assert ack.from_.tag == invite.from_.tag and ack.call_id == invite.call_id
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    # A retransmitted 486 is re-ACKed and not reported again.
    lay.receive(busy, PEER, "UDP", 1.0)
    assert lay.events() == []
    assert parse_message(lay.datagrams_to_send()[0][0]).method == "ACK"  # type: ignore[union-attr]
    assert lay.state(key) is TransactionState.COMPLETED
    run_timers(lay, 0.1 + 31.9)
    assert lay.state(key) is TransactionState.COMPLETED
    run_timers(lay, 0.1 + 32.0)  # timer D
    assert lay.events() == [TransactionTerminated(key)]
    assert len(lay) == 0


def test_invite_client_non_2xx_over_tcp_terminates_at_once() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "TCP", 0.0)
    invite = sent_request(lay)
    lay.receive(reply(invite, 603), PEER, "TCP", 0.1)
    assert [type(e) for e in lay.events()] == [ResponseReceived, TransactionTerminated]
    assert lay.datagrams_to_send()[0][2] == "TCP"
    assert lay.state(key) is None and len(lay) == 0


def test_invite_client_accepted_state_passes_2xx_retransmissions() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    invite = sent_request(lay)
    ok = reply(invite, 200)
    lay.receive(ok, PEER, "UDP", 0.1)
    assert lay.state(key) is TransactionState.ACCEPTED
    lay.receive(ok, PEER, "UDP", 0.6)
    # Both copies go up (RFC 6026): the TU ACKs each; the transaction sends no ACK itself.
    assert lay.events() == [ResponseReceived(ok, key), ResponseReceived(ok, key)]
    assert lay.datagrams_to_send() == []
    run_timers(lay, 0.1 + 32.0)  # timer M
    assert lay.events() == [TransactionTerminated(key)]
    # After the transaction, a 2xx retransmission is stray: the TU must still re-ACK it.
    lay.receive(ok, PEER, "UDP", 40.0)
    assert lay.events() == [ResponseReceived(ok, None)]


def test_stray_non_2xx_response_is_dropped() -> None:
    lay = layer()
    req = incoming("INVITE")
    lay.receive(reply(req, 486), PEER, "UDP", 0.0)
    assert lay.events() == []


# --- client non-INVITE -----------------------------------------------------------------------


def test_non_invite_client_retransmits_capped_at_t2_and_times_out() -> None:
    lay = layer()
    key = lay.send_request(make_request("OPTIONS"), PEER, "UDP", 0.0)
    lay.datagrams_to_send()
    sent = run_timers(lay, 100.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    timed_out, terminated = lay.events()
    assert isinstance(timed_out, TransactionTimedOut) and timed_out.key == key
    assert timed_out.request.method == "OPTIONS"
    assert terminated == TransactionTerminated(key)
    assert len(lay) == 0


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    lay = layer()
    key = lay.send_request(make_request("BYE"), PEER, "UDP", 0.0)
    bye = sent_request(lay)
    lay.receive(reply(bye, 100), PEER, "UDP", 0.2)
    assert lay.state(key) is TransactionState.PROCEEDING
    sent = run_timers(lay, 12.0)
    assert [t for t, _ in sent] == [0.5, 4.5, 8.5]
    ok = reply(bye, 200)
    lay.receive(ok, PEER, "UDP", 9.0)
    events = lay.events()
    assert events[-1] == ResponseReceived(ok, key)
    assert lay.state(key) is TransactionState.COMPLETED
    lay.receive(ok, PEER, "UDP", 9.5)  # absorbed in Completed
    assert lay.events() == []
    run_timers(lay, 9.0 + 5.0)  # timer K = T4
    assert lay.events() == [TransactionTerminated(key)]


def test_non_invite_client_reliable_terminates_on_final() -> None:
    lay = layer()
    key = lay.send_request(make_request("BYE"), PEER, "TCP", 0.0)
    bye = sent_request(lay)
    lay.receive(reply(bye, 200), PEER, "TCP", 0.1)
    assert lay.events()[-1] == TransactionTerminated(key)
    assert lay.get_timer() is None


# --- server INVITE ---------------------------------------------------------------------------


def received_key(lay: TransactionLayer) -> str:
    (event,) = lay.events()
    assert isinstance(event, RequestReceived)
    assert event.key is not None
    return event.key


def test_invite_server_sends_100_after_200_ms_of_silence() -> None:
    lay = layer()
    inv = incoming("INVITE")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    assert lay.datagrams_to_send() == []
    assert lay.get_timer() == pytest.approx(0.2)
    lay.handle_timer(0.2)
    ((data, dest, transport),) = lay.datagrams_to_send()
    trying = parse_message(data)
    assert isinstance(trying, Response) and trying.status == 100 and trying.to.tag is None
    assert dest == PEER and transport == "UDP"
    # A retransmitted INVITE gets the last provisional again, and reaches nobody.
    lay.receive(inv, PEER, "UDP", 0.5)
    assert [d for d, _, _ in lay.datagrams_to_send()] == [data]
    assert lay.events() == []
    assert lay.state(key) is TransactionState.PROCEEDING


def test_invite_server_no_100_when_tu_answers_quickly() -> None:
    lay = layer()
    inv = incoming("INVITE")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    lay.send_response(key, reply(inv, 180), 0.05)
    lay.handle_timer(1.0)
    statuses = [parse_message(d).status for d, _, _ in lay.datagrams_to_send()]  # type: ignore[union-attr]
    assert statuses == [180]


def test_invite_server_retransmits_non_2xx_until_ack() -> None:
    lay = layer()
    inv = incoming("INVITE")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    lay.send_response(key, reply(inv, 486), 0.0)
    assert len(lay.datagrams_to_send()) == 1
    sent = run_timers(lay, 8.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5]  # timer G, capped at T2
    # The retransmitted INVITE also gets the final response again.
    lay.receive(inv, PEER, "UDP", 8.0)
    assert len(lay.datagrams_to_send()) == 1
    ack = incoming("ACK", to_tag="uas")
    lay.receive(ack, PEER, "UDP", 8.1)
    assert lay.events() == []  # the ACK of a non-2xx belongs to the transaction
    assert lay.state(key) is TransactionState.CONFIRMED
    lay.receive(ack, PEER, "UDP", 8.2)
    assert lay.events() == []
    assert run_timers(lay, 8.1 + 5.0) == []  # timer I = T4, no more retransmissions
    assert lay.events() == [TransactionTerminated(key)]
    assert len(lay) == 0


def test_invite_server_gives_up_at_timer_h_without_ack() -> None:
    lay = layer()
    inv = incoming("INVITE")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    lay.send_response(key, reply(inv, 404), 1.0)
    lay.datagrams_to_send()
    sent = run_timers(lay, 100.0)
    assert [t for t, _ in sent] == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert lay.events() == [TransactionTimedOut(key, inv), TransactionTerminated(key)]
    assert len(lay) == 0


def test_invite_server_over_tcp_no_retransmission_and_quick_cleanup() -> None:
    lay = layer()
    inv = incoming("INVITE")
    lay.receive(inv, PEER, "TCP", 0.0)
    key = received_key(lay)
    lay.send_response(key, reply(inv, 486), 0.0)
    assert lay.datagrams_to_send()[0][2] == "TCP"
    assert lay.get_timer() == 32.0  # timer H only
    lay.receive(incoming("ACK", to_tag="uas"), PEER, "TCP", 0.1)
    assert lay.events() == [TransactionTerminated(key)]  # Confirmed, timer I = 0
    assert len(lay) == 0


def test_invite_server_accepted_state_and_timer_l() -> None:
    lay = layer()
    inv = incoming("INVITE")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    ok = reply(inv, 200)
    lay.send_response(key, ok, 1.0)
    assert lay.state(key) is TransactionState.ACCEPTED
    lay.datagrams_to_send()
    lay.receive(inv, PEER, "UDP", 1.2)  # absorbed: the TU retransmits the 2xx, not the txn
    assert lay.datagrams_to_send() == [] and lay.events() == []
    lay.send_response(key, ok, 1.5)  # the TU's retransmission goes through
    assert len(lay.datagrams_to_send()) == 1
    with pytest.raises(LocalProtocolError):
        lay.send_response(key, reply(inv, 500), 1.6)
    run_timers(lay, 1.0 + 32.0)
    assert lay.events() == [TransactionTerminated(key)]
    with pytest.raises(LocalProtocolError):
        lay.send_response(key, ok, 40.0)


def test_responses_go_back_to_the_source_and_via_is_stamped() -> None:
    lay = layer()
    inv = incoming("INVITE")
    nat: Address = ("203.0.113.9", 40001)
    lay.receive(inv, nat, "UDP", 0.0)
    (event,) = lay.events()
    assert isinstance(event, RequestReceived) and event.source == nat and event.key is not None
    top = event.request.via[0]
    assert top.params["received"] == "203.0.113.9" and top.params["rport"] == "40001"
    lay.send_response(event.key, make_response(event.request, 180, to_tag="x"), 0.1)
    ((data, dest, _),) = lay.datagrams_to_send()
    assert dest == nat
    resp = parse_message(data)
    assert resp.via[0].params["rport"] == "40001"


# --- server non-INVITE -------------------------------------------------------------------------


def test_non_invite_server_absorbs_and_replays() -> None:
    lay = layer()
    bye = incoming("BYE", to_tag="uas")
    lay.receive(bye, PEER, "UDP", 0.0)
    key = received_key(lay)
    lay.receive(bye, PEER, "UDP", 0.5)  # Trying: nothing to replay yet, nothing reported
    assert lay.events() == [] and lay.datagrams_to_send() == []
    assert lay.get_timer() == 64.0  # only the TU-silence guard
    lay.send_response(key, reply(bye, 200), 0.6)
    ((data, _, _),) = lay.datagrams_to_send()
    lay.receive(bye, PEER, "UDP", 1.0)
    assert [d for d, _, _ in lay.datagrams_to_send()] == [data]
    lay.send_response(key, reply(bye, 500), 1.1)  # discarded in Completed (§17.2.2)
    assert lay.datagrams_to_send() == []
    run_timers(lay, 0.6 + 32.0)  # timer J
    assert lay.events() == [TransactionTerminated(key)]
    assert len(lay) == 0


def test_non_invite_server_never_answered_is_dropped_eventually() -> None:
    lay = layer()
    lay.receive(incoming("OPTIONS"), PEER, "UDP", 0.0)
    key = received_key(lay)
    run_timers(lay, 64.0)
    assert lay.events() == [TransactionTerminated(key)]
    assert len(lay) == 0


def test_non_invite_server_tcp_terminates_on_final() -> None:
    lay = layer()
    bye = incoming("BYE", to_tag="uas")
    lay.receive(bye, PEER, "TCP", 0.0)
    key = received_key(lay)
    lay.send_response(key, reply(bye, 200), 0.1)
    assert lay.events() == [TransactionTerminated(key)]
    assert len(lay) == 0 and lay.get_timer() is None


# --- matching ----------------------------------------------------------------------------------


def test_two_invites_with_different_branches_are_two_transactions() -> None:
    lay = layer()
    lay.receive(incoming("INVITE", branch="z9hG4bKone"), PEER, "UDP", 0.0)
    lay.receive(incoming("INVITE", branch="z9hG4bKtwo"), PEER, "UDP", 0.0)
    events = lay.events()
    assert len(events) == 2 and len(lay) == 2
    keys = {e.key for e in events if isinstance(e, RequestReceived)}
    assert len(keys) == 2


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    lay = layer()
    lay.receive(incoming("INVITE", branch="z9hG4bKsame"), PEER, "UDP", 0.0)
    other = make_request("INVITE")
    other.headers.add("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKsame", first=True)
    lay.receive(other, ("198.51.100.7", 5060), "UDP", 0.0)
    assert len(lay.events()) == 2 and len(lay) == 2


def test_cancel_has_its_own_transaction_and_finds_the_invite() -> None:
    lay = layer()
    inv = incoming("INVITE", branch="z9hG4bKinv")
    lay.receive(inv, PEER, "UDP", 0.0)
    inv_key = received_key(lay)
    cancel = incoming("CANCEL", branch="z9hG4bKinv")
    lay.receive(cancel, PEER, "UDP", 0.1)
    cancel_key = received_key(lay)
    assert cancel_key != inv_key and len(lay) == 2
    assert lay.find_cancelled(cancel) == inv_key
    assert lay.find_cancelled(incoming("CANCEL", branch="z9hG4bKother")) is None


def test_rfc2543_requests_match_without_magic_cookie() -> None:
    lay = layer()
    inv = incoming("INVITE", branch="old1")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    lay.receive(inv, PEER, "UDP", 0.1)
    assert lay.events() == []
    lay.send_response(key, reply(inv, 486), 0.2)
    lay.receive(incoming("ACK", branch="old1", to_tag="uas"), PEER, "UDP", 0.3)
    assert lay.events() == [] and lay.state(key) is TransactionState.CONFIRMED


def test_ack_for_2xx_is_reported_without_key() -> None:
    lay = layer()
    inv = incoming("INVITE", branch="z9hG4bKinv")
    lay.receive(inv, PEER, "UDP", 0.0)
    key = received_key(lay)
    lay.send_response(key, reply(inv, 200), 0.1)
    ack = incoming("ACK", branch="z9hG4bKack", to_tag="uas")
    lay.receive(ack, PEER, "UDP", 0.2)
    assert lay.events() == [RequestReceived(ack, PEER, "UDP", None)]
    assert lay.state(key) is TransactionState.ACCEPTED


def test_response_matching_needs_branch_and_method() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    invite = sent_request(lay)
    wrong_method = reply(invite, 180)
    wrong_method.headers.set("CSeq", f"{invite.cseq.seq} CANCEL")
    lay.receive(wrong_method, PEER, "UDP", 0.1)
    assert lay.events() == [] and lay.state(key) is TransactionState.CALLING


# --- CANCEL (client) -----------------------------------------------------------------------------


def test_cancel_waits_for_a_provisional_response() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    invite = sent_request(lay)
    assert lay.cancel_request(key, 0.1) is None
    assert lay.datagrams_to_send() == []
    lay.receive(reply(invite, 180), PEER, "UDP", 0.2)
    cancel = sent_request(lay)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(invite.uri)
    assert cancel.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert cancel.cseq.seq == invite.cseq.seq and cancel.cseq.method == "CANCEL"
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert len(lay) == 2
    # Asking again returns the CANCEL transaction already running.
    assert lay.cancel_request(key, 0.3) == f"c:{invite.via[0].branch}|CANCEL"
    assert lay.datagrams_to_send() == []


def test_cancel_not_sent_if_final_arrives_first() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    invite = sent_request(lay)
    assert lay.cancel_request(key, 0.1) is None
    lay.receive(reply(invite, 200), PEER, "UDP", 0.2)
    assert lay.datagrams_to_send() == []
    assert lay.cancel_request(key, 0.3) is None
    assert len(lay) == 1


def test_cancelled_invite_without_final_times_out() -> None:
    lay = layer()
    key = lay.send_request(make_request("INVITE"), PEER, "UDP", 0.0)
    invite = sent_request(lay)
    lay.receive(reply(invite, 180), PEER, "UDP", 0.1)
    cancel_key = lay.cancel_request(key, 1.0)
    assert cancel_key is not None
    cancel = sent_request(lay)
    lay.receive(reply(cancel, 200), PEER, "UDP", 1.1)
    lay.events()
    run_timers(lay, 1.0 + 32.0)
    events = lay.events()
    assert any(isinstance(e, TransactionTimedOut) and e.key == key for e in events)
    assert TransactionTerminated(key) in events
    assert len(lay) == 0


def test_cancel_of_non_invite_is_misuse() -> None:
    lay = layer()
    key = lay.send_request(make_request("OPTIONS"), PEER, "UDP", 0.0)
    with pytest.raises(LocalProtocolError):
        lay.cancel_request(key, 0.1)
    assert lay.cancel_request("c:unknown|INVITE", 0.1) is None


# --- misc --------------------------------------------------------------------------------------


def test_large_udp_request_goes_over_tcp() -> None:
    lay = layer()
    req = make_request("INVITE", body=b"v=0\r\n" + b"a=x-padding:" + b"x" * 1400 + b"\r\n")
    req.headers.add("Content-Type", "application/sdp")
    lay.send_request(req, PEER, "UDP", 0.0)
    ((data, _, transport),) = lay.datagrams_to_send()
    assert transport == "TCP"
    msg = parse_message(data)
    assert msg.via[0].transport.upper() == "TCP"
    assert lay.get_timer() == 32.0  # reliable: no timer A


def test_ack_cannot_be_a_client_transaction() -> None:
    with pytest.raises(LocalProtocolError):
        layer().send_request(make_request("ACK"), PEER, "UDP", 0.0)


def test_send_stateless_adds_via_and_queues() -> None:
    lay = layer()
    ack = make_request("ACK", to_tag="uas")
    lay.send_stateless(ack, PEER, "udp")
    ((data, dest, transport),) = lay.datagrams_to_send()
    assert dest == PEER and transport == "UDP"
    assert parse_message(data).via[0].branch is not None
    assert len(lay) == 0


def test_timer_heap_with_many_transactions() -> None:
    lay = layer()
    for i in range(3000):
        lay.send_request(make_request("OPTIONS", call_id=f"c{i}"), PEER, "UDP", i * 0.001)
    assert lay.get_timer() == pytest.approx(0.5)
    run_timers(lay, 100.0)
    assert len(lay) == 0 and lay.get_timer() is None
    assert sum(isinstance(e, TransactionTimedOut) for e in lay.events()) == 3000


# --- Uas2xxRetransmitter ------------------------------------------------------------------------


def test_2xx_retransmitter_backs_off_to_t2_and_gives_up() -> None:
    inv = incoming("INVITE")
    r = Uas2xxRetransmitter(reply(inv, 200), PEER, "UDP", 10.0, TimerConfig())
    times: list[float] = []
    while (t := r.get_timer()) is not None:
        r.handle_timer(t)
        times.extend(t for _ in r.datagrams_to_send())
    assert [round(t - 10.0, 3) for t in times] == [
        0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    assert r.timed_out and r.done


def test_2xx_retransmitter_stops_on_matching_ack() -> None:
    inv = incoming("INVITE")
    r = Uas2xxRetransmitter(reply(inv, 200), PEER, "UDP", 0.0)
    assert not r.matches(incoming("ACK", branch="z9hG4bKa", to_tag="other"))
    assert not r.matches(incoming("ACK", branch="z9hG4bKa", to_tag="uas", cseq=2))
    ack = incoming("ACK", branch="z9hG4bKa", to_tag="uas")
    assert r.matches(ack)
    r.handle_timer(0.5)
    assert len(r.datagrams_to_send()) == 1
    r.ack_received()
    assert r.get_timer() is None and r.done and not r.timed_out
    with pytest.raises(LocalProtocolError):
        Uas2xxRetransmitter(reply(inv, 486), PEER, "UDP", 0.0)


def test_tu_rewriting_requests_in_place_does_not_corrupt_trying_ack_or_cancel() -> None:
    lay = layer()
    lay.receive(incoming("INVITE"), PEER, "UDP", 0.0)
    (event,) = lay.events()
    assert isinstance(event, RequestReceived)
    event.request.headers.remove("Via")  # a B2BUA reusing the INVITE to forward it
    lay.handle_timer(0.2)
    ((data, _, _),) = lay.datagrams_to_send()
    assert parse_message(data).via[0].branch == "z9hG4bKpeer1"

    req = make_request("INVITE")
    key = lay.send_request(req, PEER, "UDP", 0.0)
    invite = sent_request(lay)
    req.headers.set("Call-ID", "rewritten")
    req.headers.remove("Via")
    lay.receive(reply(invite, 183), PEER, "UDP", 0.1)
    lay.cancel_request(key, 0.2)
    cancel = sent_request(lay)
    assert cancel.call_id == invite.call_id and cancel.via[0].branch == invite.via[0].branch
    lay.receive(reply(invite, 487), PEER, "UDP", 0.3)
    ack = sent_request(lay)
    assert ack.call_id == invite.call_id and ack.via[0].branch == invite.via[0].branch
