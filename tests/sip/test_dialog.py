"""Dialog layer (RFC 3261 section 12) tests, built from real-looking messages."""

from __future__ import annotations

import pytest

from sip.dialog import Dialog, DialogRegistry, DialogState
from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.message import Request, Response, make_response, parse_message
from sip.uri import NameAddr, SipUri

CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"
ALICE_TAG = "1928301774"
BOB_TAG = "a6c85cf"
PROXY_AUTH = (
    'Digest username="alice", realm="atlanta.example.com", nonce="abc",'
    ' uri="sip:bob@biloxi.example.com", response="0123456789abcdef0123456789abcdef"'
)
SDP = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\ns=-\r\n"


def _parse(text: str, body: bytes = b"") -> Request | Response:
    head = text.strip("\n").replace("\n", "\r\n")
    return parse_message(head.encode() + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)


def _request(text: str, body: bytes = b"") -> Request:
    msg = _parse(text, body)
    assert isinstance(msg, Request)
    return msg


def _response(text: str, body: bytes = b"") -> Response:
    msg = _parse(text, body)
    assert isinstance(msg, Response)
    return msg


def invite_sent_by_alice() -> Request:
    return _request(
        f"""
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}
Call-ID: {CALL_ID}
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com>
Proxy-Authorization: {PROXY_AUTH}
Content-Type: application/sdp
""",
        SDP,
    )


# What Bob receives: two record-routing proxies, p1 (Alice's) then p2 (Bob's):
# p2 inserted its Record-Route last, so it is on top.
def invite_received_by_bob() -> Request:
    return _request(
        f"""
INVITE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP p2.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1
Via: SIP/2.0/UDP p1.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1
Max-Forwards: 68
Record-Route: <sip:p2.biloxi.example.com;lr>, <sip:p1.atlanta.example.com;lr>
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}
Call-ID: {CALL_ID}
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com>
Content-Type: application/sdp
""",
        SDP,
    )


def response_to_alice(
    status: str, *, contact: str = "<sip:bob@192.0.2.4>", to_tag: str = BOB_TAG
) -> Response:
    return _response(
        f"""
SIP/2.0 {status}
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1
Record-Route: <sip:p2.biloxi.example.com;lr>, <sip:p1.atlanta.example.com;lr>
To: Bob <sip:bob@biloxi.example.com>;tag={to_tag}
From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}
Call-ID: {CALL_ID}
CSeq: 314159 INVITE
Contact: {contact}
"""
    )


def uac_dialog() -> Dialog:
    return Dialog.from_uac_response(invite_sent_by_alice(), response_to_alice("200 OK"))


def uas_dialog(local_seq: int | None = 1000) -> Dialog:
    return Dialog.from_uas_request(
        invite_received_by_bob(),
        BOB_TAG,
        NameAddr.parse("<sip:bob@192.0.2.4>"),
        local_seq=local_seq,
    )


def state_of(dialog: Dialog) -> DialogState:
    # A call, not an attribute read, so mypy does not keep the state narrowed
    # across the method calls that change it.
    return dialog.state


def routes(request: Request) -> list[str]:
    return [str(NameAddr.parse(v).uri) for v in request.headers.get_all("Route")]


def in_dialog_request_to_bob(method: str, seq: int, *, contact: str | None = None) -> Request:
    """A request Alice sends inside the dialog, as Bob receives it."""
    contact_line = f"\nContact: {contact}" if contact else ""
    return _request(
        f"""
{method} sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP p2.biloxi.example.com;branch=z9hG4bKnashds10
Max-Forwards: 69
To: Bob <sip:bob@biloxi.example.com>;tag={BOB_TAG}
From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}
Call-ID: {CALL_ID}
CSeq: {seq} {method}{contact_line}
"""
    )


# ---------------------------------------------------------------- creation


def test_uac_dialog_from_2xx() -> None:
    dialog = uac_dialog()
    assert state_of(dialog) is DialogState.CONFIRMED
    assert dialog.is_uac
    assert dialog.id == (CALL_ID, ALICE_TAG, BOB_TAG)
    assert dialog.local_seq == 314159
    assert dialog.remote_seq is None
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    # 12.1.2: the UAC reverses the Record-Route of the response.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.atlanta.example.com;lr",
        "sip:p2.biloxi.example.com;lr",
    ]
    assert not dialog.secure
    assert not dialog.invite_pending


def test_uas_dialog_from_request() -> None:
    dialog = uas_dialog()
    assert state_of(dialog) is DialogState.EARLY
    assert not dialog.is_uac
    assert dialog.id == (CALL_ID, BOB_TAG, ALICE_TAG)
    assert dialog.remote_seq == 314159
    assert dialog.local_seq is None
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    # 12.1.1: the UAS keeps the Record-Route order of the request.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p2.biloxi.example.com;lr",
        "sip:p1.atlanta.example.com;lr",
    ]
    dialog.confirm()
    assert state_of(dialog) is DialogState.CONFIRMED


def test_early_uac_dialog_confirmed_by_2xx_recomputes_route_and_target() -> None:
    invite = invite_sent_by_alice()
    ringing = _response(
        f"""
SIP/2.0 180 Ringing
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1
Record-Route: <sip:p1.atlanta.example.com;lr>
To: Bob <sip:bob@biloxi.example.com>;tag={BOB_TAG}
From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}
Call-ID: {CALL_ID}
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
"""
    )
    dialog = Dialog.from_uac_response(invite, ringing)
    assert state_of(dialog) is DialogState.EARLY
    assert dialog.invite_pending
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.atlanta.example.com;lr"]

    ok = response_to_alice("200 OK", contact="<sip:bob@192.0.2.4:5070;transport=tcp>")
    dialog.receive_response(ok)
    assert state_of(dialog) is DialogState.CONFIRMED
    assert not dialog.invite_pending
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4:5070;transport=tcp"
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.atlanta.example.com;lr",
        "sip:p2.biloxi.example.com;lr",
    ]
    # Once confirmed, a later 2xx (retransmission) does not move the target.
    dialog.confirm(response_to_alice("200 OK", contact="<sip:elsewhere@192.0.2.9>"))
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4:5070;transport=tcp"


def test_early_uac_dialog_confirm_directly() -> None:
    dialog = Dialog.from_uac_response(invite_sent_by_alice(), response_to_alice("183 Progress"))
    with pytest.raises(LocalProtocolError):
        dialog.confirm()  # the UAC needs the 2xx
    dialog.confirm(response_to_alice("200 OK", contact="<sip:bob@192.0.2.5>"))
    assert state_of(dialog) is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@192.0.2.5"


def test_early_dialog_terminated_by_error_response() -> None:
    dialog = Dialog.from_uac_response(invite_sent_by_alice(), response_to_alice("180 Ringing"))
    dialog.receive_response(response_to_alice("486 Busy Here"))
    assert state_of(dialog) is DialogState.TERMINATED
    assert not dialog.invite_pending


def test_uac_dialog_rejects_responses_that_cannot_create_it() -> None:
    invite = invite_sent_by_alice()
    trying = make_response(invite, 100)
    with pytest.raises(LocalProtocolError):
        Dialog.from_uac_response(invite, trying)
    no_tag = make_response(invite, 180)
    with pytest.raises(RemoteProtocolError):
        Dialog.from_uac_response(invite, no_tag)
    ok_without_contact = make_response(invite, 200, to_tag=BOB_TAG)
    with pytest.raises(RemoteProtocolError):
        Dialog.from_uac_response(invite, ok_without_contact)


def test_uas_dialog_needs_contact_and_no_to_tag() -> None:
    invite = invite_received_by_bob()
    invite.headers.remove("Contact")
    with pytest.raises(RemoteProtocolError):
        Dialog.from_uas_request(invite, BOB_TAG, NameAddr.parse("<sip:bob@192.0.2.4>"))
    with pytest.raises(LocalProtocolError):
        Dialog.from_uas_request(
            in_dialog_request_to_bob("INVITE", 1, contact="<sip:a@b>"),
            BOB_TAG,
            NameAddr.parse("<sip:bob@192.0.2.4>"),
        )


def test_secure_flag_from_sips_request_uri() -> None:
    invite = invite_received_by_bob()
    invite.uri = SipUri.parse("sips:bob@192.0.2.4")
    dialog = Dialog.from_uas_request(invite, BOB_TAG, NameAddr.parse("<sips:bob@192.0.2.4>"))
    assert dialog.secure
    assert not uas_dialog().secure


# ---------------------------------------------------------------- sending


def test_uac_bye_headers_loose_routing() -> None:
    dialog = uac_dialog()
    bye = dialog.create_request("BYE")
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@192.0.2.4"
    assert routes(bye) == ["sip:p1.atlanta.example.com;lr", "sip:p2.biloxi.example.com;lr"]
    assert bye.from_.tag == ALICE_TAG
    assert bye.from_.display == "Alice"
    assert str(bye.from_.uri) == "sip:alice@atlanta.example.com"
    assert bye.to.tag == BOB_TAG
    assert str(bye.to.uri) == "sip:bob@biloxi.example.com"
    assert bye.call_id == CALL_ID
    assert (bye.cseq.seq, bye.cseq.method) == (314160, "BYE")
    assert bye.max_forwards == 70
    assert "Via" not in bye.headers
    assert "Contact" not in bye.headers
    assert bye.body == b""
    assert "Content-Type" not in bye.headers


def test_uas_request_uses_route_set_in_order_and_given_cseq() -> None:
    dialog = uas_dialog(local_seq=1000)
    dialog.confirm()
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:alice@pc33.atlanta.example.com"
    assert routes(bye) == ["sip:p2.biloxi.example.com;lr", "sip:p1.atlanta.example.com;lr"]
    assert bye.from_.tag == BOB_TAG
    assert bye.to.tag == ALICE_TAG
    assert bye.cseq.seq == 1000
    assert dialog.local_seq == 1000


def test_uas_initial_cseq_random_below_2_31() -> None:
    dialog = uas_dialog(local_seq=None)
    first = dialog.create_request("INFO").cseq.seq
    assert 0 < first < 2**31
    assert dialog.create_request("INFO").cseq.seq == first + 1


def test_cseq_increments_per_request() -> None:
    dialog = uac_dialog()
    seqs = [dialog.create_request(m).cseq for m in ("OPTIONS", "INFO", "UPDATE", "BYE")]
    assert [(c.seq, c.method) for c in seqs] == [
        (314160, "OPTIONS"),
        (314161, "INFO"),
        (314162, "UPDATE"),
        (314163, "BYE"),
    ]
    assert dialog.local_seq == 314163


def test_contact_only_on_target_refresh_requests() -> None:
    dialog = uac_dialog()
    for method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
        dialog.invite_ended()
        request = dialog.create_request(method)
        assert [str(c.uri) for c in request.contact] == ["sip:alice@pc33.atlanta.example.com"]
    for method in ("BYE", "INFO", "OPTIONS", "MESSAGE"):
        assert "Contact" not in dialog.create_request(method).headers


def test_body_and_extra_headers() -> None:
    dialog = uac_dialog()
    info = dialog.create_request(
        "INFO",
        body=b"Signal=5\r\nDuration=160\r\n",
        content_type="application/dtmf-relay",
        extra_headers=[("Subject", "dtmf"), ("X-Leg", "a")],
    )
    assert info.body == b"Signal=5\r\nDuration=160\r\n"
    assert info.headers.get("Content-Type") == "application/dtmf-relay"
    assert info.headers.get("Subject") == "dtmf"
    assert info.headers.get("X-Leg") == "a"
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INFO", body=b"x")


def test_strict_router_first_in_route_set() -> None:
    dialog = uac_dialog()
    dialog.route_set = [
        NameAddr.parse("<sip:strict.example.com;method=INVITE;maddr=192.0.2.7>"),
        NameAddr.parse("<sip:p2.biloxi.example.com;lr>"),
    ]
    bye = dialog.create_request("BYE")
    # 12.2.1.1: the strict router becomes the Request-URI (minus what a
    # Request-URI may not carry) and the remote target is the last Route.
    assert bye.uri.host == "strict.example.com"
    assert "method" not in bye.uri.params
    assert bye.uri.params.get("maddr") == "192.0.2.7"
    assert routes(bye) == ["sip:p2.biloxi.example.com;lr", "sip:bob@192.0.2.4"]


def test_strict_router_alone() -> None:
    dialog = uas_dialog()
    dialog.route_set = [NameAddr.parse("<sip:strict.example.com>")]
    request = dialog.create_request("OPTIONS")
    assert str(request.uri) == "sip:strict.example.com"
    assert routes(request) == ["sip:alice@pc33.atlanta.example.com"]


def test_no_route_set() -> None:
    dialog = uas_dialog()
    dialog.route_set = []
    request = dialog.create_request("OPTIONS")
    assert str(request.uri) == "sip:alice@pc33.atlanta.example.com"
    assert "Route" not in request.headers


def test_ack_for_2xx() -> None:
    invite = invite_sent_by_alice()
    ok = response_to_alice("200 OK")
    dialog = Dialog.from_uac_response(invite, ok)
    ack = dialog.create_ack(invite, ok)
    assert ack.method == "ACK"
    assert str(ack.uri) == "sip:bob@192.0.2.4"
    assert routes(ack) == ["sip:p1.atlanta.example.com;lr", "sip:p2.biloxi.example.com;lr"]
    assert (ack.cseq.seq, ack.cseq.method) == (314159, "ACK")
    assert ack.from_.tag == ALICE_TAG
    assert ack.to.tag == BOB_TAG
    assert ack.call_id == CALL_ID
    assert ack.max_forwards == 70
    assert "Via" not in ack.headers
    assert ack.body == b""
    # 13.2.2.4: same credentials as the INVITE.
    assert ack.headers.get("Proxy-Authorization") == invite.headers.get("Proxy-Authorization")
    # The ACK takes no new CSeq number.
    assert dialog.local_seq == 314159
    assert dialog.create_request("BYE").cseq.seq == 314160


def test_ack_carries_answer_when_2xx_had_the_offer() -> None:
    invite = invite_sent_by_alice()
    invite.body = b""
    invite.headers.remove("Content-Type")
    ok = response_to_alice("200 OK")
    dialog = Dialog.from_uac_response(invite, ok)
    ack = dialog.create_ack(invite, ok, body=SDP, content_type="application/sdp")
    assert ack.body == SDP
    assert ack.headers.get("Content-Type") == "application/sdp"
    with pytest.raises(LocalProtocolError):
        dialog.create_ack(invite, ok, body=SDP)


def test_ack_for_reinvite_uses_reinvite_cseq() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", body=SDP, content_type="application/sdp")
    ok = make_response(reinvite, 200)
    ok.headers.add("Contact", "<sip:bob@192.0.2.4>")
    dialog.receive_response(ok)
    ack = dialog.create_ack(reinvite, ok)
    assert (ack.cseq.seq, ack.cseq.method) == (314160, "ACK")
    with pytest.raises(LocalProtocolError):
        dialog.create_ack(invite_sent_by_alice(), ok)  # that 2xx answers another INVITE


def test_ack_rejects_non_2xx_and_foreign_response() -> None:
    invite = invite_sent_by_alice()
    dialog = Dialog.from_uac_response(invite, response_to_alice("180 Ringing"))
    with pytest.raises(LocalProtocolError):
        dialog.create_ack(invite, response_to_alice("486 Busy Here"))
    with pytest.raises(LocalProtocolError):
        dialog.create_ack(invite, response_to_alice("200 OK", to_tag="otherfork"))


def test_no_request_after_termination_and_no_ack_or_cancel() -> None:
    dialog = uac_dialog()
    with pytest.raises(LocalProtocolError):
        dialog.create_request("ACK")
    with pytest.raises(LocalProtocolError):
        dialog.create_request("CANCEL")
    dialog.terminate()
    assert state_of(dialog) is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError):
        dialog.create_request("BYE")


# ---------------------------------------------------------------- receiving


def test_out_of_order_cseq_rejected_with_500() -> None:
    dialog = uas_dialog()
    dialog.confirm()
    dialog.receive_request(in_dialog_request_to_bob("INFO", 314161))
    assert dialog.remote_seq == 314161
    with pytest.raises(RemoteProtocolError) as excinfo:
        dialog.receive_request(in_dialog_request_to_bob("INFO", 314160))
    assert excinfo.value.status_hint == 500
    assert dialog.remote_seq == 314161
    assert state_of(dialog) is DialogState.CONFIRMED


def test_ack_and_cancel_do_not_touch_remote_cseq() -> None:
    dialog = uas_dialog()
    dialog.confirm()
    dialog.receive_request(in_dialog_request_to_bob("INFO", 314170))
    dialog.receive_request(in_dialog_request_to_bob("ACK", 314159))
    dialog.receive_request(in_dialog_request_to_bob("CANCEL", 314159))
    assert dialog.remote_seq == 314170


def test_uac_dialog_remote_cseq_starts_empty() -> None:
    dialog = uac_dialog()
    request = _request(
        f"""
INFO sip:alice@pc33.atlanta.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKbob1
Max-Forwards: 70
From: Bob <sip:bob@biloxi.example.com>;tag={BOB_TAG}
To: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}
Call-ID: {CALL_ID}
CSeq: 7 INFO
"""
    )
    dialog.receive_request(request)  # any first value is in order
    assert dialog.remote_seq == 7


def test_target_refresh_by_incoming_reinvite_and_update() -> None:
    dialog = uas_dialog()
    dialog.confirm()
    dialog.receive_request(
        in_dialog_request_to_bob("INVITE", 314160, contact="<sip:alice@192.0.2.101:5080>")
    )
    assert str(dialog.remote_target) == "sip:alice@192.0.2.101:5080"
    assert str(dialog.create_request("BYE").uri) == "sip:alice@192.0.2.101:5080"
    dialog.receive_request(in_dialog_request_to_bob("UPDATE", 314161))  # no Contact: kept
    assert str(dialog.remote_target) == "sip:alice@192.0.2.101:5080"
    dialog.receive_request(
        in_dialog_request_to_bob("UPDATE", 314162, contact="<sip:alice@192.0.2.102>")
    )
    assert str(dialog.remote_target) == "sip:alice@192.0.2.102"
    # Not a target refresh request: its Contact is ignored.
    dialog.receive_request(
        in_dialog_request_to_bob("INFO", 314163, contact="<sip:alice@192.0.2.103>")
    )
    assert str(dialog.remote_target) == "sip:alice@192.0.2.102"


def test_target_refresh_by_2xx_to_our_reinvite() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", body=SDP, content_type="application/sdp")
    ok = make_response(reinvite, 200)
    ok.headers.add("Contact", "<sip:bob@192.0.2.44>")
    dialog.receive_response(ok)
    assert str(dialog.remote_target) == "sip:bob@192.0.2.44"
    # A 2xx to a non target refresh request does not move it.
    info = dialog.create_request("INFO")
    ok_info = make_response(info, 200)
    ok_info.headers.add("Contact", "<sip:bob@192.0.2.45>")
    dialog.receive_response(ok_info)
    assert str(dialog.remote_target) == "sip:bob@192.0.2.44"
    # Nor does an error response to a target refresh request.
    update = dialog.create_request("UPDATE")
    rejected = make_response(update, 488)
    rejected.headers.add("Contact", "<sip:bob@192.0.2.46>")
    dialog.receive_response(rejected)
    assert str(dialog.remote_target) == "sip:bob@192.0.2.44"
    assert state_of(dialog) is DialogState.CONFIRMED


def test_reinvite_glare() -> None:
    dialog = uas_dialog()
    dialog.confirm()
    reinvite = dialog.create_request("INVITE", body=SDP, content_type="application/sdp")
    assert dialog.invite_pending
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INVITE")
    with pytest.raises(RemoteProtocolError) as excinfo:
        dialog.receive_request(
            in_dialog_request_to_bob("INVITE", 314160, contact="<sip:alice@192.0.2.200>")
        )
    assert excinfo.value.status_hint == 491
    # The rejected re-INVITE does not refresh the target, but its CSeq counts.
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert dialog.remote_seq == 314160
    # A provisional response keeps it pending; the final one ends it.
    dialog.receive_response(make_response(reinvite, 100))
    assert dialog.invite_pending
    dialog.receive_response(make_response(reinvite, 491))
    assert not dialog.invite_pending
    assert state_of(dialog) is DialogState.CONFIRMED
    dialog.receive_request(in_dialog_request_to_bob("INVITE", 314161))
    assert dialog.create_request("BYE").cseq.seq == 1001


def test_invite_ended_without_response() -> None:
    dialog = uac_dialog()
    dialog.create_request("INVITE")
    assert dialog.invite_pending
    dialog.invite_ended()
    assert not dialog.invite_pending
    dialog.create_request("INVITE")


def test_481_or_408_terminates() -> None:
    for status in (481, 408):
        dialog = uac_dialog()
        info = dialog.create_request("INFO")
        dialog.receive_response(make_response(info, status))
        assert state_of(dialog) is DialogState.TERMINATED


def test_received_bye_terminates_and_later_requests_get_481() -> None:
    dialog = uas_dialog()
    dialog.confirm()
    dialog.receive_request(in_dialog_request_to_bob("BYE", 314160))
    assert state_of(dialog) is DialogState.TERMINATED
    with pytest.raises(RemoteProtocolError) as excinfo:
        dialog.receive_request(in_dialog_request_to_bob("INFO", 314161))
    assert excinfo.value.status_hint == 481


def test_foreign_messages_rejected() -> None:
    dialog = uas_dialog()
    other = in_dialog_request_to_bob("INFO", 314160)
    other.headers.set("To", "<sip:bob@biloxi.example.com>;tag=someoneelse")
    with pytest.raises(LocalProtocolError):
        dialog.receive_request(other)
    uac = uac_dialog()
    with pytest.raises(LocalProtocolError):
        uac.receive_response(response_to_alice("200 OK", to_tag="otherfork"))


# ---------------------------------------------------------------- registry


def test_registry_matches_by_call_id_and_tags() -> None:
    alice = DialogRegistry()
    bob = DialogRegistry()
    uac = uac_dialog()
    uas = uas_dialog()
    alice.add(uac)
    bob.add(uas)
    assert uac in alice
    assert len(alice) == 1
    assert list(alice) == [uac]
    with pytest.raises(LocalProtocolError):
        alice.add(uac)

    # Received request: local = To tag, remote = From tag.
    assert bob.match(in_dialog_request_to_bob("INFO", 314160)) is uas
    assert alice.match(in_dialog_request_to_bob("INFO", 314160)) is None
    # Received response: local = From tag, remote = To tag.
    assert alice.match(response_to_alice("200 OK")) is uac
    assert bob.match(response_to_alice("200 OK")) is None
    # A new fork, an out-of-dialog request, another Call-ID: no dialog.
    assert alice.match(response_to_alice("200 OK", to_tag="fork2")) is None
    assert bob.match(invite_received_by_bob()) is None
    stranger = in_dialog_request_to_bob("INFO", 1)
    stranger.headers.set("Call-ID", "other@host")
    assert bob.match(stranger) is None
    assert bob.get((CALL_ID, BOB_TAG, ALICE_TAG)) is uas

    uas.terminate()
    assert bob.match(in_dialog_request_to_bob("INFO", 314160)) is None
    assert bob.prune() == [uas]
    assert len(bob) == 0
    alice.remove(uac)
    assert alice.match(response_to_alice("200 OK")) is None


def _over_the_wire(request: Request, via: str) -> Request:
    request.headers.add("Via", via, first=True)
    msg = parse_message(request.serialize())
    assert isinstance(msg, Request)
    return msg


def test_bye_from_one_side_matches_the_other_side() -> None:
    alice, bob = DialogRegistry(), DialogRegistry()
    uac, uas = uac_dialog(), uas_dialog()
    uas.confirm()
    alice.add(uac)
    bob.add(uas)

    # Bob -> Alice: INFO, then Alice's answer matched back to Bob's dialog.
    info = _over_the_wire(
        uas.create_request("INFO", body=b"x", content_type="text/plain"),
        "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKbob1",
    )
    assert alice.match(info) is uac
    uac.receive_request(info)
    assert uac.remote_seq == 1000
    ok = parse_message(make_response(info, 200).serialize())
    assert isinstance(ok, Response)
    assert bob.match(ok) is uas
    uas.receive_response(ok)

    # Alice -> Bob: BYE built by Alice matches Bob's dialog and ends it.
    bye = _over_the_wire(
        uac.create_request("BYE"),
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKalice2",
    )
    assert str(bye.uri) == "sip:bob@192.0.2.4"
    assert bob.match(bye) is uas
    uas.receive_request(bye)
    assert uas.remote_seq == 314160
    assert state_of(uas) is DialogState.TERMINATED
    assert bob.match(bye) is None


# ---------------------------------------------------------------- responses (UAS side)


def test_uas_responses_carry_tag_record_route_and_contact() -> None:
    invite = invite_received_by_bob()
    dialog = uas_dialog()
    ringing = dialog.create_response(invite, 180)
    assert ringing.to.tag == BOB_TAG
    # 12.1.1: Record-Route copied in the request's order.
    assert ringing.headers.get_all("Record-Route") == [
        "<sip:p2.biloxi.example.com;lr>",
        "<sip:p1.atlanta.example.com;lr>",
    ]
    assert [str(c.uri) for c in ringing.contact] == ["sip:bob@192.0.2.4"]
    ok = dialog.create_response(invite, 200, body=SDP, content_type="application/sdp")
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.body == SDP
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert len(ok.via) == 3
    busy = dialog.create_response(invite, 486)
    assert busy.to.tag == BOB_TAG
    assert "Record-Route" not in busy.headers
    assert "Contact" not in busy.headers
    # Not a target refresh request: no Contact.
    info_ok = dialog.create_response(in_dialog_request_to_bob("INFO", 314160), 200)
    assert "Contact" not in info_ok.headers
    with pytest.raises(LocalProtocolError):
        dialog.create_response(invite, 200, body=SDP)
    stranger = in_dialog_request_to_bob("INFO", 314160)
    stranger.headers.set("To", "<sip:bob@biloxi.example.com>;tag=someoneelse")
    with pytest.raises(LocalProtocolError):
        dialog.create_response(stranger, 200)


def test_uac_dialog_from_the_uas_real_2xx_mirrors_it() -> None:
    """Bob answers with create_response; the proxies strip their Vias; Alice
    builds her dialog from that 2xx. Each side's requests reach the other."""
    uas = uas_dialog()
    ok = uas.create_response(
        invite_received_by_bob(), 200, body=SDP, content_type="application/sdp"
    )
    uas.confirm(ok)
    vias = ok.headers.get_all("Via")
    ok.headers.remove("Via")
    ok.headers.add("Via", vias[-1])
    wire = parse_message(ok.serialize())
    assert isinstance(wire, Response)

    uac = Dialog.from_uac_response(invite_sent_by_alice(), wire)
    assert uac.id == (uas.id[0], uas.id[2], uas.id[1])
    assert [str(r) for r in uac.route_set] == [str(r) for r in reversed(uas.route_set)]
    assert str(uac.remote_target) == str(uas.local_contact.uri)
    assert str(uas.remote_target) == str(uac.local_contact.uri)

    alice, bob = DialogRegistry(), DialogRegistry()
    alice.add(uac)
    bob.add(uas)
    ack = _over_the_wire(
        uac.create_ack(invite_sent_by_alice(), wire), "SIP/2.0/UDP a;branch=z9hG4bKa1"
    )
    assert bob.match(ack) is uas
    uas.receive_request(ack)
    reinvite = _over_the_wire(
        uas.create_request("INVITE", body=SDP, content_type="application/sdp"),
        "SIP/2.0/UDP b;branch=z9hG4bKb1",
    )
    assert alice.match(reinvite) is uac
    uac.receive_request(reinvite)
    reply = uac.create_response(reinvite, 200, body=SDP, content_type="application/sdp")
    assert bob.match(reply) is uas
    uas.receive_response(reply)
    assert not uas.invite_pending
    assert uas.create_ack(reinvite, reply).cseq.seq == reinvite.cseq.seq
