"""SDP rewriting for the media anchor: every media line points at our relay.

The B2BUA never lets the two parties see each other's addresses: the offer or
answer that crosses it gets our media address and the port of the relay socket
that faces the receiving party, and the sender's own address is handed to the
relay as that leg's remote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sip.errors import RemoteProtocolError
from sip.sdp import MediaDescription, SessionDescription

Address = tuple[str, int]
# Reads the sender's SRTP keys from the audio section and writes ours for the receiver
# (recorder.media.sdes); raises RemoteProtocolError (488) when the policy forbids it.
CryptoRewrite = Callable[[SessionDescription, MediaDescription], None]

_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class AudioEndpoint:
    """Where a party wants to receive audio, as its SDP says."""

    rtp: Address | None  # None: no audio line, a rejected one, or old-style hold (c=0.0.0.0)
    rtcp: Address | None
    payload_types: tuple[str, ...]
    telephone_event_pt: int | None


def is_sdp(content_type: str | None, body: bytes) -> bool:
    if not body:
        return False
    return content_type is None or content_type.split(";")[0].strip().lower() == "application/sdp"


def anchor_sdp(
    body: bytes,
    address: str,
    port: int,
    *,
    keep_codecs: tuple[str, ...] | None = None,
    crypto: CryptoRewrite | None = None,
) -> tuple[bytes, AudioEndpoint]:
    """Rewrite the first audio line to (address, port); return the new body and what it said.

    `keep_codecs` (names like "PCMU", "telephone-event") narrows the audio formats first.
    `crypto` swaps the sender's SDES keys for ours (never passed through: the relay could
    not decrypt, nor the tap record). Raises RemoteProtocolError (488-worthy) on SDP that
    cannot be read or that the SRTP policy refuses.
    """
    sdp = SessionDescription.parse(body)
    audio = next((m for m in sdp.media if m.media_type == "audio"), None)
    if audio is None:
        raise RemoteProtocolError("SDP offers no audio stream", status_hint=488)
    if keep_codecs is not None:
        audio.keep_codecs(keep_codecs)
        if audio.port == 0:
            raise RemoteProtocolError("no common codec", status_hint=488)
    if crypto is not None:
        crypto(sdp, audio)  # before the port changes: a read-only anchor passes port 0
    original_address = audio.connection_address
    original_port = audio.port
    rtp: Address | None = None
    rtcp: Address | None = None
    if original_port != 0 and original_address and original_address not in _HOLD_ADDRESSES:
        rtp = (original_address, original_port)
        rtcp_attr = audio.rtcp
        if rtcp_attr is not None:
            rtcp = (rtcp_attr[1] or original_address, rtcp_attr[0])
        else:
            rtcp = (original_address, original_port + 1)
    endpoint = AudioEndpoint(
        rtp=rtp,
        rtcp=rtcp,
        payload_types=tuple(audio.formats),
        telephone_event_pt=int(te) if (te := audio.telephone_event_pt) is not None else None,
    )
    if original_port != 0:
        # An old-style hold keeps its 0.0.0.0 so that the other party still sees a hold.
        if original_address not in _HOLD_ADDRESSES:
            audio.connection_address = address
        audio.port = port
        # Our RTCP socket is always RTP+1 (RFC 3550), so no a=rtcp is needed.
        audio.remove_rtcp()
    for other in sdp.media:
        if other is not audio and other.port != 0:
            # We anchor audio only: other streams are declined rather than leaked around us.
            other.disable()
    if sdp.connection_address and sdp.connection_address not in _HOLD_ADDRESSES:
        sdp.connection_address = address
    sdp.origin.address = address
    return sdp.serialize(), endpoint


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """The answer the recorder gives itself when it answers a caller (notice first)."""

    body: bytes
    codec: str  # "PCMU" or "PCMA"
    payload_type: int
    telephone_event_pt: int | None
    remote: AudioEndpoint


_G711 = {"PCMU": 0, "PCMA": 8}


def local_answer(
    offer: bytes, address: str, port: int, session_id: int, *, crypto: CryptoRewrite | None = None
) -> LocalAnswer:
    """Answer an offer ourselves (RFC 3264 §6) with G.711 and telephone-event only.

    Every other media line is rejected with port 0, as the answer must keep the offer's lines.
    `crypto` (see `anchor_sdp`) gives the answer our SRTP key when the caller offered SRTP.
    """
    sdp = SessionDescription.parse(offer)
    audio = next((m for m in sdp.media if m.media_type == "audio" and m.port != 0), None)
    if audio is None:
        raise RemoteProtocolError("SDP offers no audio stream", status_hint=488)
    rtpmap = audio.rtpmap
    chosen: tuple[str, int] | None = None
    for fmt in audio.formats:
        name = rtpmap[fmt].encoding.upper() if fmt in rtpmap else ""
        if name in _G711 and (rtpmap[fmt].clock_rate == 8000):
            chosen = (name, int(fmt))
            break
    if chosen is None:
        raise RemoteProtocolError("no G.711 codec offered", status_hint=488)
    codec, pt = chosen
    te = audio.telephone_event_pt
    _, endpoint = anchor_sdp(offer, address, port)
    proto = "RTP/AVP"
    if crypto is not None:
        crypto(sdp, audio)  # sets the section's proto and our a=crypto for the answer
        proto = audio.proto
    direction = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(
        audio.direction, audio.direction
    )
    formats = f"{pt} {te}" if te is not None else str(pt)
    lines = [
        "v=0",
        f"o=recorder {session_id} 1 IN IP4 {address}",
        "s=recorder",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    for media in sdp.media:
        if media is not audio:
            lines.append(f"m={media.media_type} 0 {media.proto} {' '.join(media.formats) or '0'}")
            continue
        lines.append(f"m=audio {port} {proto} {formats}")
        lines.append(f"a=rtpmap:{pt} {codec}/8000")
        if te is not None:
            lines.append(f"a=rtpmap:{te} telephone-event/8000")
            lines.append(f"a=fmtp:{te} 0-16")
        lines.extend(f"a=crypto:{line}" for line in audio.get_attributes("crypto"))
        lines.append("a=ptime:20")
        lines.append(f"a={direction}")
    body = ("\r\n".join(lines) + "\r\n").encode()
    return LocalAnswer(body, codec, pt, int(te) if te is not None else None, endpoint)
