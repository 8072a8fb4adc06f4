"""SDES key exchange across the B2BUA (issue 21, RFC 4568): sans-IO, no sockets.

Each leg gets its own keys: the party's key never reaches the other party, our answer
carries the suite and tag the party chose, and the side's `srtp` mode is enforced.
"""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.media.sdes import SUITES, Crypto, LegKeys, SdesNegotiator
from sip.errors import RemoteProtocolError
from sip.sdp import SessionDescription

CALLER_KEY = base64.b64encode(bytes(range(30))).decode()
CALLER_KEY_32 = base64.b64encode(bytes(range(100, 130))).decode()
PBX_KEY = base64.b64encode(bytes(range(50, 80))).decode()


def sdp(
    proto: str = "RTP/SAVP",
    cryptos: tuple[str, ...] = (f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}|2^31",),
    version: int = 1,
    session: str = "42",
) -> SessionDescription:
    lines = [
        "v=0",
        f"o=- {session} {version} IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        f"m=audio 4000 {proto} 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        *(f"a=crypto:{c}" for c in cryptos),
    ]
    return SessionDescription.parse(("\r\n".join(lines) + "\r\n").encode())


def counting_random() -> tuple[SdesNegotiator, list[LegKeys]]:
    changes: list[LegKeys] = []
    counter = itertools.count(1)
    negotiator = SdesNegotiator(
        {"a": ("external", "mirror"), "b": ("internal", "mirror")},
        on_change=changes.append,
        random=lambda n: bytes([next(counter)]) * n,
    )
    return negotiator, changes


def cross(
    negotiator: SdesNegotiator, from_role: str, to_role: str | None, desc: SessionDescription
) -> SessionDescription:
    audio = desc.media[0]
    negotiator.rewriter(from_role, to_role)(desc, audio)
    return SessionDescription.parse(desc.serialize())


def cryptos(desc: SessionDescription) -> list[Crypto]:
    parsed = [Crypto.parse(v) for v in desc.media[0].get_attributes("crypto")]
    assert all(c is not None for c in parsed)
    return [c for c in parsed if c is not None]


def test_a_crypto_line_parses_and_its_key_never_shows() -> None:
    crypto = Crypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}|2^31")
    assert crypto is not None
    assert (crypto.tag, crypto.suite, crypto.key) == (
        1,
        "AES_CM_128_HMAC_SHA1_80",
        bytes(range(30)),
    )
    assert CALLER_KEY not in repr(crypto)
    assert crypto.line == f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}"


@pytest.mark.parametrize(
    "value",
    [
        f"1 F8_128_HMAC_SHA1_80 inline:{CALLER_KEY}",  # a suite we do not do
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}|2^20|1:4",  # an MKI
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}|2^20;inline:{PBX_KEY}|2^20",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY} KDR=1",  # session parameters
        "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",  # a key of the wrong length
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!notbase64!!!",
        f"x AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}",
        f"1 AEAD_AES_128_GCM inline:{CALLER_KEY}",  # GCM takes 28 bytes, not 30
    ],
)
def test_lines_we_cannot_honour_are_skipped(value: str) -> None:
    assert Crypto.parse(value) is None


def test_each_leg_gets_its_own_keys_and_the_answer_the_suite_chosen() -> None:
    negotiator, changes = counting_random()
    # The caller offers a suite we do not do first, then one we do, under tag 2.
    offer = sdp(
        cryptos=(
            f"1 F8_128_HMAC_SHA1_80 inline:{CALLER_KEY}",
            f"2 AES_CM_128_HMAC_SHA1_32 inline:{CALLER_KEY_32}",
        )
    )
    to_pbx = cross(negotiator, "a", "b", offer)
    assert to_pbx.media[0].proto == "RTP/SAVP"
    offered = cryptos(to_pbx)
    assert [c.suite for c in offered] == list(SUITES)
    assert [c.tag for c in offered] == [1, 2, 3]
    assert CALLER_KEY_32 not in to_pbx.serialize().decode()
    caller = negotiator.legs["a"]
    assert caller.inbound is not None and caller.inbound.key == bytes(range(100, 130))
    assert caller.outbound is not None and caller.outbound.suite == "AES_CM_128_HMAC_SHA1_32"
    assert changes == [caller]

    # The PBX picks our tag 1 (AES_CM_..._80) and gives its key.
    answer = sdp(cryptos=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{PBX_KEY}",), session="77")
    to_caller = cross(negotiator, "b", "a", answer)
    [ours] = cryptos(to_caller)
    assert (ours.tag, ours.suite) == (2, "AES_CM_128_HMAC_SHA1_32")  # the caller's choice
    assert ours.key == caller.outbound.key
    assert PBX_KEY not in to_caller.serialize().decode()
    pbx = negotiator.legs["b"]
    assert pbx.inbound is not None and pbx.inbound.key == bytes(range(50, 80))
    assert pbx.outbound == offered[0]
    assert changes == [caller, pbx]

    # The same answer again in the 200 (o= version unchanged): the same answer to the caller.
    again = cross(
        negotiator,
        "b",
        "a",
        sdp(cryptos=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{PBX_KEY}",), session="77"),
    )
    assert cryptos(again) == [ours]
    assert changes == [caller, pbx]


def test_a_reinvite_from_the_pbx_is_offered_to_the_caller_with_every_suite() -> None:
    negotiator, _ = counting_random()
    cross(negotiator, "a", "b", sdp())
    cross(
        negotiator,
        "b",
        "a",
        sdp(cryptos=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{PBX_KEY}",), session="77"),
    )
    reoffer = sdp(cryptos=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{PBX_KEY}",), session="77", version=2)
    to_caller = cross(negotiator, "b", "a", reoffer)
    assert len(cryptos(to_caller)) == len(SUITES)
    # The caller answers tag 3 (GCM): our GCM key goes back to the PBX under the PBX's tag.
    gcm = base64.b64encode(bytes(28)).decode()
    answer = sdp(cryptos=(f"3 AEAD_AES_128_GCM inline:{gcm}",), version=2)
    to_pbx = cross(negotiator, "a", "b", answer)
    [ours] = cryptos(to_pbx)
    assert (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    caller = negotiator.legs["a"]
    assert caller.outbound is not None and caller.outbound.suite == "AEAD_AES_128_GCM"
    assert caller.inbound is not None and caller.inbound.key == bytes(28)


def test_answering_the_caller_ourselves_then_offering_the_pbx() -> None:
    negotiator, _ = counting_random()
    offer = sdp()
    to_caller = cross(negotiator, "a", "a", offer)
    [ours] = cryptos(to_caller)
    assert (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert ours.key != bytes(range(30))
    to_pbx = cross(negotiator, "a", "b", sdp())  # the same offer, anchored again for the PBX
    assert len(cryptos(to_pbx)) == len(SUITES)
    cross(
        negotiator,
        "b",
        None,
        sdp(cryptos=(f"2 AES_CM_128_HMAC_SHA1_32 inline:{PBX_KEY}",), session="9"),
    )
    pbx = negotiator.legs["b"]
    assert pbx.outbound is not None and pbx.outbound.suite == "AES_CM_128_HMAC_SHA1_32"


def test_plain_calls_stay_plain() -> None:
    negotiator, changes = counting_random()
    to_pbx = cross(negotiator, "a", "b", sdp(proto="RTP/AVP", cryptos=()))
    assert to_pbx.media[0].proto == "RTP/AVP"
    assert cryptos(to_pbx) == []
    cross(negotiator, "b", "a", sdp(proto="RTP/AVP", cryptos=(), session="7"))
    assert changes == []


@pytest.mark.parametrize(
    ("modes", "offer_proto", "refused_for"),
    [
        (("require", "mirror"), "RTP/AVP", "SRTP is required on the external side"),
        (("off", "mirror"), "RTP/SAVP", "SRTP is off on the external side"),
        (("mirror", "off"), "RTP/SAVP", "is not allowed (media.srtp_mixed)"),
        (("mirror", "require"), "RTP/AVP", "is not allowed (media.srtp_mixed)"),
    ],
)
def test_a_side_mode_refuses_with_488(
    modes: tuple[str, str], offer_proto: str, refused_for: str
) -> None:
    negotiator = SdesNegotiator({"a": ("external", modes[0]), "b": ("internal", modes[1])})
    cryptos_offered = (
        () if offer_proto == "RTP/AVP" else (f"1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}",)
    )
    with pytest.raises(RemoteProtocolError) as raised:
        cross(negotiator, "a", "b", sdp(proto=offer_proto, cryptos=cryptos_offered))
    assert raised.value.status_hint == 488
    assert refused_for in str(raised.value)
    assert CALLER_KEY not in str(raised.value)


def test_mixed_legs_when_the_policy_allows_them() -> None:
    negotiator = SdesNegotiator(
        {"a": ("external", "mirror"), "b": ("internal", "require")}, allow_mixed=True
    )
    to_pbx = cross(negotiator, "a", "b", sdp(proto="RTP/AVP", cryptos=()))
    assert to_pbx.media[0].proto == "RTP/SAVP"
    assert len(cryptos(to_pbx)) == len(SUITES)
    to_caller = cross(
        negotiator,
        "b",
        "a",
        sdp(cryptos=(f"1 AES_CM_128_HMAC_SHA1_80 inline:{PBX_KEY}",), session="5"),
    )
    assert to_caller.media[0].proto == "RTP/AVP"
    assert cryptos(to_caller) == []


def test_an_offer_with_no_usable_suite_is_refused() -> None:
    negotiator, _ = counting_random()
    with pytest.raises(RemoteProtocolError, match="no usable SDES crypto suite"):
        cross(negotiator, "a", "b", sdp(cryptos=(f"1 F8_128_HMAC_SHA1_80 inline:{CALLER_KEY}",)))


def test_an_srtp_answer_to_a_plain_offer_is_refused() -> None:
    negotiator = SdesNegotiator({"a": ("external", "mirror"), "b": ("internal", "mirror")})
    cross(negotiator, "a", "b", sdp(proto="RTP/AVP", cryptos=()))
    pbx_answer = sdp(cryptos=(f"2 AES_CM_128_HMAC_SHA1_32 inline:{PBX_KEY}",), session="3")
    with pytest.raises(RemoteProtocolError, match="not offered"):
        cross(negotiator, "b", "a", pbx_answer)


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_crypto_line_parses_or_is_skipped_never_raises(value: str) -> None:
    crypto = Crypto.parse(value)
    assert crypto is None or (crypto.suite in SUITES and len(crypto.key) == SUITES[crypto.suite])


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=80,
        ),
        max_size=4,
    )
)
@settings(max_examples=300, deadline=None)
def test_any_crypto_attributes_give_keys_or_a_488(values: list[str]) -> None:
    negotiator, _ = counting_random()
    offer = sdp(cryptos=tuple(values))
    try:
        to_pbx = cross(negotiator, "a", "b", offer)
    except RemoteProtocolError as exc:
        assert exc.status_hint == 488
        return
    assert negotiator.legs["a"].inbound is not None
    assert len(cryptos(to_pbx)) == len(SUITES)
