"""SDES-SRTP through the B2BUA (issue 21): every SDP crossing gets our keys, never the
other party's; the side's `srtp` mode gives 488 when it must. Sans-IO, as test_b2bua."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from recorder.call.sdp_anchor import CryptoRewrite
from recorder.media.sdes import SUITES, Crypto, SdesNegotiator
from sip.message import Request, make_response
from sip.sdp import SessionDescription
from sip.transaction import ResponseReceived

from .test_b2bua import FakeMedia, Harness, answer_first_harness, in_dialog, invite, sdp

CALLER_KEY = base64.b64encode(bytes(range(30))).decode()
PBX_KEY = base64.b64encode(bytes(range(40, 70))).decode()


@dataclass
class SecureMedia(FakeMedia):
    negotiator: SdesNegotiator | None = None

    def crypto(self, from_role: str, to_role: str | None) -> CryptoRewrite | None:  # type: ignore[override]
        assert self.negotiator is not None
        return self.negotiator.rewriter(from_role, to_role)


def secure(h: Harness, modes: tuple[str, str] = ("mirror", "mirror")) -> list[SecureMedia]:
    made: list[SecureMedia] = []

    def factory(_call_id: str, caller_side: str) -> SecureMedia:
        n = len(made)
        media = SecureMedia({"a": 20000 + 4 * n, "b": 20002 + 4 * n})
        other = "internal" if caller_side == "external" else "external"
        media.negotiator = SdesNegotiator({"a": (caller_side, modes[0]), "b": (other, modes[1])})
        made.append(media)
        return media

    h.b2bua.media_factory = factory
    return made


def savp(address: str, port: int, key: str, tag: int = 1, version: int = 1) -> bytes:
    body = sdp(address, port).replace(b"RTP/AVP", b"RTP/SAVP")
    body = body.replace(b"o=- 1 1", f"o=- {port} {version}".encode())
    return body + f"a=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{KEY_LINES[key]}\r\n".encode()


KEY_LINES = {"caller": CALLER_KEY, "pbx": PBX_KEY}


def crypto_lines(body: bytes) -> list[Crypto]:
    audio = SessionDescription.parse(body).media[0]
    found = [Crypto.parse(v) for v in audio.get_attributes("crypto")]
    return [c for c in found if c is not None]


def test_an_srtp_call_gets_our_keys_on_each_leg() -> None:
    h = Harness()
    media = secure(h)
    a_key = h.receive(h.external, invite(body=savp("203.0.113.5", 40000, "caller", tag=7)))
    assert a_key is not None
    _, b_invite = h.b_invite()
    assert b"RTP/SAVP" in b_invite.body
    assert CALLER_KEY.encode() not in b_invite.body
    offered = crypto_lines(b_invite.body)
    assert [c.suite for c in offered] == list(SUITES)
    h.answer_b(200, sdp=savp("127.0.0.1", 16000, "pbx", tag=1))
    final = next(r for k, r in h.ext_port.responses if k == a_key and r.status == 200)
    assert PBX_KEY.encode() not in final.body
    [ours] = crypto_lines(final.body)
    assert (ours.tag, ours.suite) == (7, "AES_CM_128_HMAC_SHA1_80")
    legs = media[0].negotiator.legs  # type: ignore[union-attr]
    assert legs["a"].inbound is not None and legs["a"].inbound.key == bytes(range(30))
    assert legs["a"].outbound == ours
    assert legs["b"].inbound is not None and legs["b"].inbound.key == bytes(range(40, 70))
    assert legs["b"].outbound == offered[0]

    # A re-INVITE from the caller (new key, new version) is offered on to the PBX with ours.
    rekey = savp("203.0.113.5", 40000, "pbx", tag=2, version=2)
    key = h.receive(h.external, in_dialog("INVITE", 11, final.to.tag or "", body=rekey))
    b_key, reinvite, _ = h.int_port.requests[-1]
    assert reinvite.method == "INVITE" and PBX_KEY.encode() not in reinvite.body
    assert len(crypto_lines(reinvite.body)) == len(SUITES)
    assert legs["a"].inbound.key == bytes(range(40, 70))
    ok = make_response(reinvite, 200)
    ok.headers.add("Contact", "<sip:pbx@127.0.0.1:5070>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = savp("127.0.0.1", 16000, "pbx", tag=1, version=2)
    h.b2bua.handle_event(h.internal, ResponseReceived(ok, b_key), h.now)
    relayed = [r for k, r in h.ext_port.responses if k == key][-1]
    assert [(c.tag, c.suite) for c in crypto_lines(relayed.body)] == [(2, ours.suite)]


def test_the_notice_answer_carries_our_key_and_the_pbx_gets_its_own() -> None:
    h, hooks = answer_first_harness()
    media = secure(h)
    key = h.receive(h.external, invite(body=savp("203.0.113.5", 40000, "caller", tag=3)))
    assert key is not None and h.ext_port.statuses(key) == [100, 200]
    answer = h.ext_port.responses[-1][1].body
    assert b"m=audio 20000 RTP/SAVP 0 101" in answer
    [ours] = crypto_lines(answer)
    assert ours.tag == 3 and ours.key != bytes(range(30))
    call = next(iter(h.b2bua.calls.values()))
    h.b2bua.proceed(call, h.now)
    _, b_invite = h.b_invite()
    assert len(crypto_lines(b_invite.body)) == len(SUITES)
    assert ours.key not in [c.key for c in crypto_lines(b_invite.body)]
    h.answer_b(
        200,
        sdp=savp("127.0.0.1", 16000, "pbx", tag=2).replace(
            b"a=crypto:2 AES_CM_128_HMAC_SHA1_80", b"a=crypto:2 AES_CM_128_HMAC_SHA1_32"
        ),
    )
    assert hooks.log[-1] == "bridged"
    pbx = media[0].negotiator.legs["b"]  # type: ignore[union-attr]
    assert pbx.outbound is not None and pbx.outbound.suite == "AES_CM_128_HMAC_SHA1_32"


@pytest.mark.parametrize(
    ("modes", "body"),
    [
        (("require", "mirror"), sdp("203.0.113.5", 40000)),
        (("off", "mirror"), None),
        (("mirror", "off"), None),
    ],
)
def test_a_call_the_srtp_modes_refuse_gets_488_and_no_b_leg(
    modes: tuple[str, str], body: bytes | None
) -> None:
    h = Harness()
    secure(h, modes)
    offer = body if body is not None else savp("203.0.113.5", 40000, "caller")
    key = h.receive(h.external, invite(body=offer))
    assert key is not None
    assert h.ext_port.statuses(key)[-1] == 488
    assert not [r for _, r, _ in h.int_port.requests if isinstance(r, Request)]
