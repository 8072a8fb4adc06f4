"""SDES key exchange (RFC 4568) for a B2BUA that terminates SRTP on each leg: sans-IO.

The recorder never passes a party's key to the other party. Each leg has its own keys:
the party's (from its `a=crypto`, used to decrypt what it sends) and ours (made here,
used to encrypt what we send it), so the relay sees plain RTP in the middle and the
tap records the audio exactly as for RTP.

`SdesNegotiator` follows the offers and answers crossing one call. It is handed every
audio section that crosses the B2BUA, with the role it came from and the role it goes
to, reads the sender's crypto, and writes ours for the receiver: all our suites in an
offer, the one the party chose in an answer (RFC 4568 §5.1.2). Whether an SDP is an
offer or an answer follows from the exchange itself (RFC 3264): a party's SDP answers
the offer we sent it, or else offers; an SDP repeated with its `o=` version unchanged
(the same answer in a 183 and in the 200) changes nothing and gets what we wrote before.

Key material stays in this module and in the relay's libsrtp sessions: `Crypto.__repr__`
hides the key, and no error message holds an SDP line.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sip.errors import RemoteProtocolError
from sip.sdp import MediaDescription, SessionDescription

# Suite name -> (master key + salt length in bytes). The order is our preference, offered
# in this order (RFC 4568 §6.2: AES_CM_128_HMAC_SHA1_80 is the one every SDES peer has).
SUITES: Final[dict[str, int]] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,  # RFC 7714 §12
}

MODES: Final = ("mirror", "require", "off")

ROLES: Final = ("a", "b")

KeyRandom = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class Crypto:
    """One `a=crypto` line we can use: tag, suite, master key and salt (concatenated)."""

    tag: int
    suite: str
    key: bytes = field(repr=False)

    def __repr__(self) -> str:  # the key never reaches a log or a traceback
        return f"Crypto(tag={self.tag}, suite={self.suite})"

    @property
    def line(self) -> str:
        """The attribute's value: `TAG SUITE inline:KEY` (no lifetime, no MKI)."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"

    @classmethod
    def parse(cls, value: str) -> Crypto | None:
        """A usable line, or None: unknown suite, an MKI, session parameters, a bad key.

        Lines we cannot honour are skipped, not refused: the offerer listed them as
        alternatives (RFC 4568 §6.1), and an answer with none usable is refused by the caller.
        """
        parts = value.split()
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 9:
            return None  # session parameters (KDR, UNENCRYPTED_SRTP...) change the transform
        tag_text, suite, key_params = parts
        length = SUITES.get(suite)
        if length is None:
            return None
        # Several key-params (";"-separated) carry several master keys told apart by MKI:
        # we handle one key without MKI.
        if ";" in key_params or not key_params.startswith("inline:"):
            return None
        key_text, *extra = key_params[len("inline:") :].split("|")
        if len(extra) > 1 or (extra and not _is_lifetime(extra[0])):
            return None  # an MKI
        try:
            key = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(key) != length:
            return None
        return cls(int(tag_text), suite, key)


def _is_lifetime(text: str) -> bool:
    if text.startswith("2^"):
        return text[2:].isdigit()
    return text.isdigit()


def is_secure_proto(proto: str) -> bool:
    return "SAVP" in proto.upper()


def _with_security(proto: str, secure: bool) -> str:
    upper = proto.upper()
    if secure and "SAVP" not in upper:
        return proto.replace("AVP", "SAVP")
    if not secure and "SAVP" in upper:
        return proto.replace("SAVP", "AVP")
    return proto


class LegKeys:
    """What one leg has agreed: whether it is SRTP, the party's key and ours."""

    __slots__ = (
        "awaiting_answer",
        "inbound",
        "last_proto",
        "last_version",
        "last_written",
        "mode",
        "offered",
        "ours",
        "outbound",
        "role",
        "secure",
        "side",
    )

    def __init__(self, role: str, side: str, mode: str) -> None:
        self.role = role
        self.side = side
        self.mode = mode
        self.secure = False
        self.inbound: Crypto | None = None  # the party's key: what it sends us
        self.outbound: Crypto | None = None  # our key: what we send it
        self.ours: dict[str, bytes] = {}  # our key per suite, stable for the whole call
        self.offered = False  # we sent this party an offer it has not answered yet
        self.awaiting_answer = False  # this party offered; our answer is owed
        self.last_version: tuple[str, int] | None = None
        self.last_written: list[str] | None = None
        self.last_proto: str | None = None


# Called with a role whenever its keys change: the relay sets its SRTP sessions from it.
KeysChanged = Callable[[LegKeys], None]


class SdesNegotiator:
    """The SRTP keys of one call's two legs, kept in step with the SDP crossing the B2BUA."""

    def __init__(
        self,
        sides: dict[str, tuple[str, str]],
        *,
        allow_mixed: bool = False,
        on_change: KeysChanged | None = None,
        random: KeyRandom = secrets.token_bytes,
    ) -> None:
        """`sides`: role -> (side name, mode), mode one of `MODES`."""
        self.legs = {role: LegKeys(role, *sides[role]) for role in ROLES}
        self.allow_mixed = allow_mixed
        self._on_change = on_change
        self._random = random

    def rewriter(
        self, from_role: str, to_role: str | None
    ) -> Callable[[SessionDescription, MediaDescription], None]:
        """What `anchor_sdp` applies to the audio section: read `from_role`'s crypto, then
        (unless `to_role` is None: only reading) write ours for `to_role`."""

        def rewrite(sdp: SessionDescription, audio: MediaDescription) -> None:
            repeat = self.read(from_role, sdp, audio)
            if to_role is not None:
                self.write(from_role, to_role, audio, repeat=repeat)

        return rewrite

    def read(self, role: str, sdp: SessionDescription, audio: MediaDescription) -> bool:
        """Take in a party's SDP; True when it repeats the last one (same o= version).

        Raises RemoteProtocolError (488) when the side's mode forbids what it asks.
        """
        leg = self.legs[role]
        version = (sdp.origin.sess_id, sdp.origin.sess_version)
        repeat = version == leg.last_version
        secure = is_secure_proto(audio.proto)
        if audio.port == 0:
            return repeat  # a rejected stream carries no keys
        if secure and leg.mode == "off":
            raise RemoteProtocolError(f"SRTP is off on the {leg.side} side", status_hint=488)
        if not secure and leg.mode == "require":
            raise RemoteProtocolError(f"SRTP is required on the {leg.side} side", status_hint=488)
        chosen: Crypto | None = None
        if secure:
            chosen = next(
                (c for v in audio.get_attributes("crypto") if (c := Crypto.parse(v)) is not None),
                None,
            )
            if chosen is None:
                raise RemoteProtocolError("no usable SDES crypto suite", status_hint=488)
        if repeat:
            return True
        leg.last_version = version
        if leg.offered:
            leg.offered = False  # this is the answer to our offer
            if chosen is not None and chosen.suite not in leg.ours:
                raise RemoteProtocolError("answer picked a suite not offered", status_hint=488)
        else:
            leg.awaiting_answer = True
        leg.secure = secure
        outbound = (
            Crypto(chosen.tag, chosen.suite, self._our_key(leg, chosen.suite))
            if chosen is not None
            else None
        )
        if chosen != leg.inbound or outbound != leg.outbound:
            leg.inbound = chosen
            leg.outbound = outbound
            if self._on_change is not None:
                self._on_change(leg)
        return False

    def write(self, from_role: str, to_role: str, audio: MediaDescription, *, repeat: bool) -> None:
        """Put our crypto for `to_role` into the audio section going to it."""
        leg = self.legs[to_role]
        sender = self.legs[from_role]
        if audio.port == 0:
            audio.remove_attribute("crypto")
            return
        if repeat and leg.last_written is not None and leg.last_proto is not None:
            lines, secure = leg.last_written, is_secure_proto(leg.last_proto)
        elif leg.awaiting_answer:
            # Our answer to this party's offer (made from the other party's answer, or our own
            # when we answer the caller to play the notice): its tag, its suite, our key.
            leg.awaiting_answer = False
            secure = leg.secure and leg.outbound is not None
            lines = [leg.outbound.line] if secure and leg.outbound is not None else []
            if from_role != to_role:
                self._check_mixed(sender, leg, secure)
        else:
            secure = leg.mode == "require" or (leg.mode == "mirror" and sender.secure)
            if from_role != to_role:
                self._check_mixed(sender, leg, secure)
            lines = self._offer(leg) if secure else []
            leg.offered = True
        audio.remove_attribute("crypto")
        for line in lines:
            audio.add_attribute("crypto", line)
        audio.proto = _with_security(audio.proto, secure)
        leg.last_written = lines
        leg.last_proto = audio.proto

    def _check_mixed(self, sender: LegKeys, receiver: LegKeys, secure: bool) -> None:
        if not self.allow_mixed and secure != sender.secure:
            raise RemoteProtocolError(
                f"SRTP on one leg and plain RTP on the other ({sender.side} to {receiver.side})"
                " is not allowed (media.srtp_mixed)",
                status_hint=488,
            )

    def _offer(self, leg: LegKeys) -> list[str]:
        return [
            Crypto(tag, suite, self._our_key(leg, suite)).line
            for tag, suite in enumerate(SUITES, start=1)
        ]

    def _our_key(self, leg: LegKeys, suite: str) -> bytes:
        key = leg.ours.get(suite)
        if key is None:
            key = leg.ours[suite] = self._random(SUITES[suite])
        return key
