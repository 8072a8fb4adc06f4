"""libsrtp sessions for a leg, from the keys `recorder.media.sdes` agreed.

A leg that is SRTP decrypts what its party sends with the party's key (`inbound`) and
encrypts what it sends the party with ours (`outbound`); the relay between the legs,
the consent listener and the recording tap only ever see plain RTP.
"""

from __future__ import annotations

from typing import Final, Protocol

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from recorder.media.sdes import Crypto

__all__ = ["NO_KEY", "SrtpError", "SrtpTransform", "inbound_session", "outbound_session"]

_PROFILES: Final = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


class SrtpTransform(Protocol):
    """What the relay calls per packet: a pylibsrtp `Session`, or `NO_KEY`."""

    def protect(self, packet: bytes) -> bytes: ...
    def unprotect(self, packet: bytes) -> bytes: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp(self, packet: bytes) -> bytes: ...


class _NoKey:
    """A leg agreed on SRTP whose key is not known yet: nothing passes either way (a packet
    that cannot be authenticated is never relayed, recorded or latched onto)."""

    def protect(self, packet: bytes) -> bytes:
        raise SrtpError("no key yet")

    unprotect = protect_rtcp = unprotect_rtcp = protect


NO_KEY: Final[SrtpTransform] = _NoKey()


def _session(crypto: Crypto, ssrc_type: int) -> Session:
    return Session(
        Policy(key=crypto.key, ssrc_type=ssrc_type, srtp_profile=_PROFILES[crypto.suite])
    )


def inbound_session(crypto: Crypto) -> Session:
    """Decrypts and authenticates what the party sends, any SSRC (a PBX may switch streams)."""
    return _session(crypto, Policy.SSRC_ANY_INBOUND)


def outbound_session(crypto: Crypto) -> Session:
    """Encrypts what we send the party: the other party's packets and our notice alike."""
    return _session(crypto, Policy.SSRC_ANY_OUTBOUND)
