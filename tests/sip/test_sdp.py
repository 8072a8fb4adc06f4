from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    reverse_direction,
)


def crlf(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# sipp's built-in uac scenario, with its [keywords] filled in.
SIPP = crlf(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

BARESIP = crlf(
    "v=0",
    "o=- 1130281966 3583618166 IN IP4 192.168.1.23",
    "s=-",
    "c=IN IP4 192.168.1.23",
    "t=0 0",
    "a=tool:baresip 3.10.1",
    "m=audio 10016 RTP/AVP 96 9 0 8 102 101",
    "b=AS:128",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:102 telephone-event/48000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=rtcp-rsize",
    "a=ssrc:1434384906 cname:3c5a9bd6-8a9b-4a62-9f1d-1f5f6e0c2a11",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=ptime:20",
)

ASTERISK = crlf(
    "v=0",
    "o=- 1732186233 1732186234 IN IP4 203.0.113.5",
    "s=Asterisk",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 17836 RTP/AVP 0 8 9 3 18 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:3 GSM/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
)

# Asterisk putting the call on hold: same o= sess-id, version bumped, a=sendonly.
ASTERISK_HOLD = crlf(
    "v=0",
    "o=- 1732186233 1732186235 IN IP4 203.0.113.5",
    "s=Asterisk",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 17836 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendonly",
)

# RFC 2543 hold (still sent by old gear), RFC 3264 §8.4.
OLD_HOLD = crlf(
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 0.0.0.0",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

# RFC 4317 §2.1.
AUDIO_VIDEO = crlf(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 97",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:97 iLBC/8000",
    "m=video 51372 RTP/AVP 31 32",
    "a=rtpmap:31 H261/90000",
    "a=rtpmap:32 MPV/90000",
)

IPV6 = crlf(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP6 2001:db8::2",
    "s=-",
    "c=IN IP6 2001:db8::2",
    "t=0 0",
    "m=audio 49172 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp:49173 IN IP6 2001:db8::2",
)

# RFC 4566 §5 example: i=, u=, e=, multicast c=, session-level a=recvonly.
RFC4566 = crlf(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "c=IN IP4 224.2.17.12/127",
    "t=2873397496 2873404696",
    "a=recvonly",
    "m=audio 49170 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)

ALL = [SIPP, BARESIP, ASTERISK, ASTERISK_HOLD, OLD_HOLD, AUDIO_VIDEO, IPV6, RFC4566]


# -- parse / serialize ------------------------------------------------------------------


@pytest.mark.parametrize("body", ALL)
def test_round_trip_is_byte_exact(body: bytes) -> None:
    assert SessionDescription.parse(body).serialize() == body


@pytest.mark.parametrize("body", ALL)
def test_lf_only_input_is_accepted_and_written_with_crlf(body: bytes) -> None:
    sdp = SessionDescription.parse(body.replace(b"\r\n", b"\n"))
    assert sdp == SessionDescription.parse(body)
    assert sdp.serialize() == body


def test_missing_final_line_end_and_trailing_blank_lines() -> None:
    assert SessionDescription.parse(SIPP.rstrip(b"\r\n")).serialize() == SIPP
    assert SessionDescription.parse(SIPP + b"\r\n\r\n").serialize() == SIPP


def test_session_level_fields() -> None:
    sdp = SessionDescription.parse(SIPP)
    assert sdp.version == 0
    assert sdp.origin == Origin("user1", "53655765", 2353687637, "IN", "IP4", "127.0.0.1")
    assert sdp.name == "-"
    assert sdp.connection == Connection("IN", "IP4", "127.0.0.1")
    assert sdp.connection_address == "127.0.0.1"
    assert sdp.fields == [("t", "0 0")]
    assert sdp.attributes == []
    (m,) = sdp.media
    assert (m.media_type, m.port, m.port_count, m.proto, m.formats) == (
        "audio",
        6000,
        None,
        "RTP/AVP",
        ["0"],
    )
    assert m.connection is None
    assert m.connection_address == "127.0.0.1"
    assert m.is_rtp


def test_unknown_lines_keep_their_order() -> None:
    sdp = SessionDescription.parse(RFC4566)
    assert [k for k, _ in sdp.fields] == ["i", "u", "e", "t"]
    assert sdp.connection is not None and sdp.connection.address == "224.2.17.12/127"
    # The multicast TTL is not part of the address RTP goes to.
    assert sdp.media[1].connection_address == "224.2.17.12"
    assert sdp.media[0].attributes == []


def test_unknown_line_types_and_attributes_pass_through() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "b=CT:1000",
        "t=0 0",
        "y=0123456789",
        "a=X-nat:0",
        "m=audio 4000 RTP/AVP 8",
        "i=voice",
        "c=IN IP4 10.0.0.2",
        "b=TIAS:64000",
        "k=prompt",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "a=X-flag",
    )
    sdp = SessionDescription.parse(body)
    assert sdp.serialize() == body
    m = sdp.media[0]
    assert m.fields == [("i", "voice"), ("b", "TIAS:64000"), ("k", "prompt")]
    assert m.connection_address == "10.0.0.2"
    assert m.get_attribute("X-flag") == ""
    assert m.get_attribute("crypto") is not None
    assert sdp.get_attribute("X-nat") == "0"


def test_out_of_order_lines_are_normalised_to_rfc_order() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "a=tool:x",
        "t=0 0",
        "c=IN IP4 10.0.0.1",
        "m=audio 4000 RTP/AVP 0",
        "a=sendrecv",
        "b=AS:64",
    )
    out = SessionDescription.parse(body).serialize()
    assert out == crlf(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "a=tool:x",
        "m=audio 4000 RTP/AVP 0",
        "b=AS:64",
        "a=sendrecv",
    )
    assert SessionDescription.parse(out).serialize() == out


def test_extra_spaces_are_tolerated_and_canonicalised() -> None:
    body = crlf(
        "v=0",
        "o=-  1 1  IN IP4 10.0.0.1",
        "s=-",
        "c=IN  IP4 10.0.0.1",
        "t=0 0",
        "m=audio  4000 RTP/AVP  0 8",
        "a=sendonly ",
    )
    sdp = SessionDescription.parse(body)
    assert sdp.media[0].formats == ["0", "8"]
    assert sdp.media[0].direction == "sendonly"
    assert b"m=audio 4000 RTP/AVP 0 8\r\n" in sdp.serialize()


def test_non_utf8_session_name_passes_through() -> None:
    body = SIPP.replace(b"s=-", b"s=caf\xe9")
    assert SessionDescription.parse(body).serialize() == body


def test_port_count_round_trips() -> None:
    body = SIPP.replace(b"m=audio 6000 RTP/AVP 0", b"m=audio 6000/2 RTP/AVP 0")
    sdp = SessionDescription.parse(body)
    assert sdp.media[0].port == 6000
    assert sdp.media[0].port_count == 2
    assert sdp.serialize() == body


def test_build_from_scratch() -> None:
    sdp = SessionDescription(Origin("recorder", "42", 1, address="192.0.2.1"))
    sdp.connection_address = "192.0.2.1"
    m = sdp.add_media(MediaDescription("audio", 30000, "RTP/AVP", ["0", "101"]))
    m.add_attribute("rtpmap", "101 telephone-event/8000")
    m.add_attribute("fmtp", "101 0-16")
    m.ptime = 20
    m.direction = "sendrecv"
    assert sdp.serialize() == crlf(
        "v=0",
        "o=recorder 42 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 30000 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )
    assert SessionDescription.parse(sdp.serialize()) == sdp


def test_copy_is_deep_and_rewired() -> None:
    sdp = SessionDescription.parse(AUDIO_VIDEO)
    dup = sdp.copy()
    assert dup == sdp
    assert all(m.session is dup for m in dup.media)
    dup.connection_address = "192.0.2.9"
    dup.media[0].formats.append("13")
    dup.media[0].attributes[0].value = "0 pcmu/8000"
    dup.bump_version()
    assert sdp.serialize() == AUDIO_VIDEO
    assert dup.media[1].connection_address == "192.0.2.9"


# -- codecs -----------------------------------------------------------------------------


def test_rtpmap_table_and_fmtp() -> None:
    m = SessionDescription.parse(ASTERISK).media[0]
    assert m.rtpmap == {
        "0": RtpMap("PCMU", 8000, 1),
        "8": RtpMap("PCMA", 8000, 1),
        "9": RtpMap("G722", 8000, 1),
        "3": RtpMap("GSM", 8000, 1),
        "18": RtpMap("G729", 8000, 1),
        "101": RtpMap("telephone-event", 8000, 1),
    }
    assert m.fmtp == {"18": "annexb=no", "101": "0-16"}
    assert m.telephone_event_pt == "101"
    assert m.codec_names() == ["PCMU", "PCMA", "G722", "GSM", "G729", "telephone-event"]


def test_channels_and_opus() -> None:
    m = SessionDescription.parse(BARESIP).media[0]
    assert m.rtpmap["96"] == ("opus", 48000, 2)
    assert m.fmtp["96"] == "stereo=1;sprop-stereo=1"
    # telephone-event/48000 comes first in the m= line but is not the 8000 Hz one.
    assert m.telephone_event_pt == "101"


def test_static_payload_types_need_no_rtpmap() -> None:
    sdp = SessionDescription.parse(RFC4566)
    assert sdp.media[0].rtpmap == {"0": RtpMap("PCMU", 8000)}
    assert sdp.media[1].rtpmap == {"99": RtpMap("h263-1998", 90000)}
    body = SIPP.replace(b"RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", b"RTP/AVP 8 9 18 13 0 96\r\n")
    m = SessionDescription.parse(body).media[0]
    assert [c.encoding for c in m.rtpmap.values()] == ["PCMA", "G722", "G729", "CN", "PCMU"]
    assert "96" not in m.rtpmap  # dynamic without rtpmap: unknown
    assert STATIC_PAYLOAD_TYPES["9"].clock_rate == 8000  # RFC 3551's historical G.722 rate
    assert m.telephone_event_pt is None


def test_explicit_rtpmap_overrides_static_table() -> None:
    body = SIPP.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:0 PCMU/16000")
    assert SessionDescription.parse(body).media[0].rtpmap["0"].clock_rate == 16000


def test_keep_codecs_asterisk() -> None:
    sdp = SessionDescription.parse(ASTERISK)
    m = sdp.media[0]
    assert m.keep_codecs(["pcma", "PCMU", "Telephone-Event"]) == ["0", "8", "101"]
    assert sdp.serialize() == crlf(
        "v=0",
        "o=- 1732186233 1732186234 IN IP4 203.0.113.5",
        "s=Asterisk",
        "c=IN IP4 203.0.113.5",
        "t=0 0",
        "m=audio 17836 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:150",
        "a=sendrecv",
    )


def test_keep_codecs_drops_telephone_event_unless_asked() -> None:
    m = SessionDescription.parse(ASTERISK).media[0]
    assert m.keep_codecs(["G729"]) == ["18"]
    assert m.telephone_event_pt is None
    assert m.get_attributes("rtpmap") == ["18 G729/8000"]
    assert m.fmtp == {"18": "annexb=no"}


def test_keep_codecs_with_clock_rate() -> None:
    m = SessionDescription.parse(BARESIP).media[0]
    assert m.keep_codecs(["opus", "telephone-event/8000"]) == ["96", "101"]
    assert m.get_attributes("rtpmap") == ["96 opus/48000/2", "101 telephone-event/8000"]
    assert m.fmtp == {"96": "stereo=1;sprop-stereo=1", "101": "0-15"}
    # Unrelated attributes stay where they were.
    assert [a.name for a in m.attributes] == [
        "rtpmap",
        "fmtp",
        "rtpmap",
        "fmtp",
        "sendrecv",
        "label",
        "rtcp-rsize",
        "ssrc",
        "extmap",
        "ptime",
    ]


def test_keep_codecs_order_follows_the_offer_not_the_argument() -> None:
    m = SessionDescription.parse(ASTERISK).media[0]
    assert m.keep_codecs(["G722", "PCMU"]) == ["0", "9"]


def test_remove_codecs_and_rtcp_fb() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=video 5000 RTP/AVPF 96 97",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:* ccm fir",
        "a=rtpmap:97 H264/90000",
        "a=fmtp:97 profile-level-id=42e01f;packetization-mode=1",
        "a=rtcp-fb:97 nack pli",
    )
    m = SessionDescription.parse(body).media[0]
    assert m.remove_codecs(["vp8"]) == ["97"]
    assert [str(a) for a in m.attributes] == [
        "rtcp-fb:* ccm fir",
        "rtpmap:97 H264/90000",
        "fmtp:97 profile-level-id=42e01f;packetization-mode=1",
        "rtcp-fb:97 nack pli",
    ]


def test_keep_codecs_nothing_left_disables_the_stream() -> None:
    sdp = SessionDescription.parse(SIPP)
    m = sdp.media[0]
    assert m.keep_codecs(["opus"]) == []
    assert m.is_disabled
    assert m.port == 0
    assert m.formats == ["0"]  # a rejected m= line still lists a format (RFC 3264 §6)
    out = sdp.serialize()
    assert b"m=audio 0 RTP/AVP 0\r\n" in out
    assert SessionDescription.parse(out).media[0].is_disabled


def test_keep_codecs_unknown_dynamic_pt_is_dropped() -> None:
    body = SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 0 96")
    m = SessionDescription.parse(body).media[0]
    assert m.keep_codecs(["PCMU"]) == ["0"]
    assert m.remove_codecs(["G729"]) == ["0"]


def test_session_keep_codecs_touches_only_the_media_type() -> None:
    sdp = SessionDescription.parse(AUDIO_VIDEO)
    sdp.keep_codecs(["PCMA"])
    assert sdp.media[0].formats == ["8"]
    assert sdp.media[1].formats == ["31", "32"]
    assert sdp.media[1].port == 51372


def test_bad_codec_name_is_local_error() -> None:
    m = SessionDescription.parse(SIPP).media[0]
    with pytest.raises(LocalProtocolError):
        m.keep_codecs(["PCMU/fast"])


# -- connection address and port --------------------------------------------------------


def test_rewrite_port_and_inherited_address() -> None:
    sdp = SessionDescription.parse(BARESIP)
    m = sdp.media[0]
    m.port = 40000
    m.connection_address = "198.51.100.7"
    assert m.connection_address == "198.51.100.7"
    assert sdp.connection_address == "192.168.1.23"  # session c= untouched
    out = sdp.serialize()
    # The media-level c= goes at its RFC 4566 place: after i=, before b=.
    assert b"m=audio 40000 RTP/AVP 96 9 0 8 102 101\r\nc=IN IP4 198.51.100.7\r\nb=AS:128\r\n" in out
    reparsed = SessionDescription.parse(out)
    assert reparsed.media[0].connection_address == "198.51.100.7"
    assert reparsed.media[0].port == 40000


def test_setting_the_inherited_address_adds_no_line() -> None:
    sdp = SessionDescription.parse(SIPP)
    sdp.media[0].connection_address = "127.0.0.1"
    assert sdp.media[0].connection is None
    assert sdp.serialize() == SIPP


def test_anchor_rewrite_of_session_and_each_media() -> None:
    sdp = SessionDescription.parse(AUDIO_VIDEO)
    sdp.origin.address = "192.0.2.1"
    sdp.connection_address = "192.0.2.1"
    for port, m in zip((30000, 30002), sdp.media, strict=True):
        m.connection_address = "192.0.2.1"
        m.port = port
    sdp.bump_version()
    assert sdp.serialize() == crlf(
        "v=0",
        "o=alice 2890844526 2890844527 IN IP4 192.0.2.1",
        "s= ",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 30000 RTP/AVP 0 8 97",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:97 iLBC/8000",
        "m=video 30002 RTP/AVP 31 32",
        "a=rtpmap:31 H261/90000",
        "a=rtpmap:32 MPV/90000",
    )


def test_media_level_connection_is_updated_in_place() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "c=IN IP4 10.0.0.2",
        "m=video 4002 RTP/AVP 31",
        "c=IN IP4 10.0.0.3",
    )
    sdp = SessionDescription.parse(body)
    assert sdp.connection_address is None
    assert [m.connection_address for m in sdp.media] == ["10.0.0.2", "10.0.0.3"]
    sdp.media[1].connection_address = "2001:db8::7"
    assert sdp.serialize() == body.replace(b"c=IN IP4 10.0.0.3", b"c=IN IP6 2001:db8::7")


def test_ipv6() -> None:
    sdp = SessionDescription.parse(IPV6)
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("IN", "IP6", "2001:db8::2")
    m = sdp.media[0]
    assert m.connection_address == "2001:db8::2"
    m.connection_address = "192.0.2.5"
    assert m.connection == Connection("IN", "IP4", "192.0.2.5")
    sdp.connection_address = "2001:db8::99"
    assert sdp.connection == Connection("IN", "IP6", "2001:db8::99")


def test_session_connection_setter_creates_the_line() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "i=info",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "c=IN IP4 10.0.0.2",
    )
    sdp = SessionDescription.parse(body)
    sdp.connection_address = "10.0.0.9"
    assert sdp.serialize().startswith(crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "i=info"))
    assert b"i=info\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n" in sdp.serialize()
    assert sdp.media[0].connection_address == "10.0.0.2"


def test_bump_version() -> None:
    sdp = SessionDescription.parse(SIPP)
    assert sdp.bump_version() == 2353687638
    assert b"o=user1 53655765 2353687638 IN IP4 127.0.0.1\r\n" in sdp.serialize()


# -- direction and hold -----------------------------------------------------------------


def test_direction_defaults_and_explicit() -> None:
    assert SessionDescription.parse(SIPP).media[0].direction == "sendrecv"
    assert SessionDescription.parse(ASTERISK).media[0].direction == "sendrecv"
    assert not SessionDescription.parse(ASTERISK).is_hold()


def test_hold_reinvite_sendonly() -> None:
    sdp = SessionDescription.parse(ASTERISK_HOLD)
    assert sdp.media[0].direction == "sendonly"
    assert sdp.media[0].is_hold()
    assert sdp.is_hold()
    assert reverse_direction(sdp.media[0].direction) == "recvonly"


def test_old_style_hold() -> None:
    sdp = SessionDescription.parse(OLD_HOLD)
    m = sdp.media[0]
    assert m.direction == "sendrecv"
    assert m.connection_address == "0.0.0.0"
    assert m.is_hold()
    assert sdp.is_hold()


@pytest.mark.parametrize(
    ("direction", "held"),
    [("sendrecv", False), ("sendonly", True), ("recvonly", False), ("inactive", True)],
)
def test_direction_setter_replaces_in_place(direction: str, held: bool) -> None:
    sdp = SessionDescription.parse(ASTERISK)
    m = sdp.media[0]
    m.direction = direction  # type: ignore[assignment]
    assert m.direction == direction
    assert m.is_hold() is held
    assert sdp.serialize() == ASTERISK.replace(b"a=sendrecv", f"a={direction}".encode())


def test_direction_setter_rejects_garbage() -> None:
    m = SessionDescription.parse(ASTERISK).media[0]
    with pytest.raises(LocalProtocolError):
        m.direction = "sendrcv"  # type: ignore[assignment]


def test_session_level_direction_is_the_default() -> None:
    sdp = SessionDescription.parse(RFC4566)
    assert sdp.direction == "recvonly"
    assert [m.direction for m in sdp.media] == ["recvonly", "recvonly"]
    sdp.media[1].direction = "inactive"
    assert [m.direction for m in sdp.media] == ["recvonly", "inactive"]
    sdp.direction = "sendonly"
    assert [m.direction for m in sdp.media] == ["sendonly", "inactive"]
    assert sdp.is_hold()
    assert sdp.get_attributes("sendonly") == [""]
    assert not sdp.has_attribute("recvonly")


def test_two_direction_attributes_collapse_to_one() -> None:
    body = ASTERISK.replace(b"a=sendrecv", b"a=sendonly\r\na=x:1\r\na=inactive")
    m = SessionDescription.parse(body).media[0]
    assert m.direction == "sendonly"  # the first one counts
    m.direction = "sendrecv"
    assert [str(a) for a in m.attributes[-3:]] == ["maxptime:150", "sendrecv", "x:1"]


def test_hold_with_disabled_video_and_partial_hold() -> None:
    sdp = SessionDescription.parse(AUDIO_VIDEO)
    sdp.media[0].direction = "sendonly"
    assert not sdp.is_hold()  # video still flows
    sdp.media[1].disable()
    assert not sdp.media[1].is_hold()
    assert sdp.is_hold()
    sdp.media[0].disable()
    assert not sdp.is_hold()  # nothing active: not a hold


def test_reverse_direction() -> None:
    assert reverse_direction("sendrecv") == "sendrecv"
    assert reverse_direction("sendonly") == "recvonly"
    assert reverse_direction("recvonly") == "sendonly"
    assert reverse_direction("inactive") == "inactive"


def test_rejected_stream_in_answer() -> None:
    body = AUDIO_VIDEO.replace(b"m=video 51372", b"m=video 0")
    sdp = SessionDescription.parse(body)
    assert not sdp.media[0].is_disabled
    assert sdp.media[1].is_disabled
    assert sdp.serialize() == body
    # A rejected stream may lack formats and connection.
    bare = crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0", "m=video 0 RTP/AVP")
    parsed = SessionDescription.parse(bare)
    assert parsed.media[0].formats == []
    assert parsed.media[0].connection_address is None
    assert parsed.serialize() == bare


# -- ptime, rtcp, attributes ------------------------------------------------------------


def test_ptime() -> None:
    sdp = SessionDescription.parse(ASTERISK)
    m = sdp.media[0]
    assert m.ptime == 20
    m.ptime = 30
    assert m.get_attributes("ptime") == ["30"]
    m.ptime = None
    assert m.ptime is None
    assert not m.has_attribute("ptime")
    assert SessionDescription.parse(SIPP).media[0].ptime is None
    with pytest.raises(LocalProtocolError):
        m.ptime = 0


def test_ptime_session_level_and_decimal() -> None:
    body = SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\na=ptime:30\r\n")
    sdp = SessionDescription.parse(body)
    assert sdp.media[0].ptime == 30
    sdp.media[0].ptime = 20
    assert sdp.media[0].ptime == 20
    decimal = SIPP + b"a=ptime:20.0\r\n"
    assert SessionDescription.parse(decimal).media[0].ptime == 20


def test_rtcp_attribute() -> None:
    sdp = SessionDescription.parse(IPV6)
    m = sdp.media[0]

    def rtcp() -> tuple[int, str | None] | None:
        # A call, so that mypy does not narrow the property between edits.
        return m.rtcp

    assert rtcp() == (49173, "2001:db8::2")
    m.set_rtcp(30001)
    assert rtcp() == (30001, None)
    assert m.attributes[-1] == Attribute("rtcp", "30001")
    m.set_rtcp(30001, "192.0.2.1")
    assert m.get_attribute("rtcp") == "30001 IN IP4 192.0.2.1"
    assert rtcp() == (30001, "192.0.2.1")
    m.remove_rtcp()
    assert rtcp() is None
    assert b"rtcp" not in sdp.serialize()
    with pytest.raises(LocalProtocolError):
        m.set_rtcp(70000)


def test_generic_attribute_helpers() -> None:
    m = SessionDescription.parse(BARESIP).media[0]
    assert m.get_attribute("label") == "1"
    assert m.get_attribute("rtcp-rsize") == ""
    assert m.get_attribute("nope") is None
    assert len(m.get_attributes("rtpmap")) == 6
    m.set_attribute("label", "2")
    assert m.get_attributes("label") == ["2"]
    assert m.attributes[9] == Attribute("label", "2")
    assert m.remove_attribute("ssrc") == 1
    assert m.remove_attribute("ssrc") == 0
    m.add_attribute("rtcp-mux")
    assert str(m.attributes[-1]) == "rtcp-mux"
    assert str(Attribute("foo", "")) == "foo:"


# -- malformed --------------------------------------------------------------------------

GOOD_HEAD = ("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"hello world",
        crlf("o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0"),
        crlf("v=1", *GOOD_HEAD[1:]),
        crlf("v=0", "s=-", "o=- 1 1 IN IP4 10.0.0.1", "t=0 0"),
        crlf("v=0", "o=- 1 1 IN IP4", "s=-", "t=0 0"),
        crlf("v=0", "o=- 1 x IN IP4 10.0.0.1", "s=-", "t=0 0"),
        crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1"),
        crlf(*GOOD_HEAD, "not a line"),
        crlf(*GOOD_HEAD, "A=sendrecv"),
        crlf(*GOOD_HEAD, "a =sendrecv"),
        crlf(*GOOD_HEAD, "a="),
        crlf(*GOOD_HEAD, "a=:x"),
        crlf(*GOOD_HEAD, "v=0"),
        crlf(*GOOD_HEAD, "c=IN IP4 10.0.0.2"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "o=- 1 1 IN IP4 10.0.0.1"),
        crlf(*GOOD_HEAD, "m=audio abc RTP/AVP 0"),
        crlf(*GOOD_HEAD, "m=audio -1 RTP/AVP 0"),
        crlf(*GOOD_HEAD, "m=audio 70000 RTP/AVP 0"),
        crlf(*GOOD_HEAD, "m=audio 4000/x RTP/AVP 0"),
        crlf(*GOOD_HEAD, "m=audio 4000/0 RTP/AVP 0"),
        crlf(*GOOD_HEAD, "m=audio 4000"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "c=IN IP4"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "c=IN IP4 10.0.0.2", "c=IN"),
        crlf(*GOOD_HEAD[:3], GOOD_HEAD[4], "m=audio 4000 RTP/AVP 0"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus/fast"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus/48000/two"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 /48000"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96", "a=fmtp: 0-16"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "a=rtcp:port"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "a=rtcp:4001 IN IP4"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "a=ptime:fast"),
        crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 0", "a=ptime:0"),
        crlf(*GOOD_HEAD, "a=ptime:-20"),
    ],
)
def test_malformed(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        SessionDescription.parse(body)
    assert exc.value.status_hint == 400


def test_the_good_head_itself_parses() -> None:
    # Guards the malformed cases above: each one breaks exactly one thing.
    base = crlf(*GOOD_HEAD, "m=audio 4000 RTP/AVP 96 0", "a=rtpmap:96 opus/48000/2")
    assert SessionDescription.parse(base).serialize() == base


# -- properties -------------------------------------------------------------------------

_LINES = [
    "v=0",
    "o=- 1 1 IN IP4 10.0.0.1",
    "s=-",
    "s= ",
    "c=IN IP4 10.0.0.1",
    "c=IN IP6 ::1",
    "t=0 0",
    "b=AS:64",
    "i=x",
    "m=audio 4000 RTP/AVP 0 8 101",
    "m=video 0 RTP/AVP 31",
    "m=audio 4000/2 RTP/SAVP 96",
    "a=rtpmap:101 telephone-event/8000",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:101 0-16",
    "a=rtcp:4001",
    "a=ptime:20",
    "a=sendonly",
    "a=inactive",
    "a=x-custom:\u00e9",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_LINES), st.text(max_size=12)),
        max_size=14,
    ),
    st.sampled_from(["\r\n", "\n"]),
)
def test_parse_only_raises_remote_error_and_serialize_is_stable(extra: list[str], eol: str) -> None:
    body = eol.join(["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", *extra]).encode(
        "utf-8", "surrogatepass"
    )
    try:
        sdp = SessionDescription.parse(body)
    except RemoteProtocolError:
        return
    out = sdp.serialize()
    again = SessionDescription.parse(out)
    assert again == sdp
    assert again.serialize() == out
    for m in sdp.media:
        # Accessors on a parsed description do not raise.
        _ = (m.rtpmap, m.fmtp, m.rtcp, m.ptime, m.direction, m.is_hold(), m.telephone_event_pt)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        sdp = SessionDescription.parse(b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n" + data)
    except RemoteProtocolError:
        return
    assert SessionDescription.parse(sdp.serialize()) == sdp
