"""Events of the consent layer: what detectors report and what the consent machine decides.

One base class (`ConsentEvent`) so that the service can dispatch on type; all are
frozen slots dataclasses, like the events of the `sip` layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DigitMethod = Literal["dtmf-rfc4733", "sip-info", "inband"]
# "listener-failure": the recorder could not listen for a refusal, so it records nothing.
DecisionMethod = Literal[
    "dtmf-rfc4733", "sip-info", "inband", "voice", "timeout", "listener-failure"
]
Outcome = Literal["accepted", "refused"]

# RFC 4733 §3.2 event codes 0-15, which SIP INFO senders also use for * and #.
DTMF_DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """Base of every event in the consent layer."""


@dataclass(frozen=True, slots=True)
class DigitDetected(ConsentEvent):
    """One key press, reported once, whatever the number of packets or frames that carried it."""

    digit: str
    method: DigitMethod
    at: float


@dataclass(frozen=True, slots=True)
class VoiceRefusal(ConsentEvent):
    """A spoken refusal phrase was spotted (produced by a keyword spotter, later)."""

    phrase: str
    at: float


@dataclass(frozen=True, slots=True)
class StopNotice(ConsentEvent):
    """Barge-in: the decision came while the notice was playing; stop sending it."""

    at: float


@dataclass(frozen=True, slots=True)
class ConsentDecided(ConsentEvent):
    """The caller's answer; stored with the call (C5 audit) and logged."""

    outcome: Outcome
    method: DecisionMethod
    digit: str | None
    at: float
    phrase: str | None = None
