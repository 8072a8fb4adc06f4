"""Agent DTMF codes (S5 start, S8 pause/resume, C5 agent refusal): match them, swallow them.

The agent (PBX) leg may key a configured code such as `*1`; the code must act on the
recording and must never reach the caller. Two sans-IO layers, both driven by `now`:

- `AgentCodeMatcher` takes digits (from RFC 4733 events, or from SIP INFO on the PBX leg)
  and says, for each one, whether to forward it and which code it completed.
- `AgentDtmfFilter` takes the agent leg's RTP packets and gives the same verdict for every
  packet of one telephone-event (same SSRC + timestamp), so the continuation packets and the
  thrice-sent end packet of a swallowed digit are dropped too, not only its first packet.

Forwarding rule (the choice the caller of this module relies on):
a digit is held back iff the digits held so far plus this one are a prefix of some code.
When the held digits complete a code they are swallowed for good and the code is reported.
When a digit breaks the prefix (or the inter-digit timeout expires), the held digits are
dropped, *not* released: by then their RTP packets have been discarded, and replaying them
would mean forging telephone-events late, in the middle of the agent's stream, with new
timestamps and sequence numbers that the far end may reject or misread. The breaking digit
itself is judged afresh (it may start a code of its own); if it starts none, it is forwarded.
So an agent dialling `*9` to an outside IVR, with codes `*1`/`*2`, sends the IVR `9` only:
digits that could begin a code are the price of never leaking one. Digits that can begin no
code (with the usual `*`-codes: every digit not after a `*`) pass untouched and at once.

A code that is a prefix of another (`*1` and `*12`) is refused at construction: the
shorter one would fire first and make the longer unreachable.
"""

from __future__ import annotations

import itertools
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from consent.events import DTMF_DIGITS
from consent.rfc4733 import Rfc4733Detector
from recorder.policy.model import Policy

AgentAction = Literal["start", "pause", "resume", "refuse"]

DEFAULT_INTER_DIGIT_TIMEOUT: Final = 3.0
_RTP_HEADER: Final = struct.Struct("!BBHII")
# Verdicts remembered per filter: more than Rfc4733Detector remembers, so that an event it
# still recognises as a repeat always has a verdict here.
_REMEMBERED_EVENTS: Final = 128
_TEV_EVENT_COUNT: Final = len(DTMF_DIGITS)


@dataclass(frozen=True, slots=True)
class AgentCodeEvent:
    """Base of the events this module reports."""


@dataclass(frozen=True, slots=True)
class CodeMatched(AgentCodeEvent):
    """The agent keyed a whole code; its digits were all swallowed."""

    action: str
    code: str
    at: float


@dataclass(frozen=True, slots=True)
class CodeAbandoned(AgentCodeEvent):
    """Held digits that did not become a code; they were dropped (see the module docstring)."""

    digits: str
    reason: Literal["mismatch", "timeout"]
    at: float


@dataclass(frozen=True, slots=True)
class DigitVerdict:
    """What to do with one digit, and what it caused."""

    forward: bool
    events: tuple[AgentCodeEvent, ...] = ()

    @property
    def matched(self) -> CodeMatched | None:
        for event in self.events:
            if isinstance(event, CodeMatched):
                return event
        return None


def _check_codes(codes: Mapping[str, str]) -> None:
    for code in codes:
        if not code or any(key not in DTMF_DIGITS for key in code):
            raise ValueError(f"agent code {code!r}: must be DTMF keys (0-9 * # A-D)")
    ordered = sorted(codes)
    # In sorted order a prefix comes right before some code it prefixes.
    for shorter, longer in itertools.pairwise(ordered):
        if longer.startswith(shorter):
            raise ValueError(
                f"agent code {shorter!r} ({codes[shorter]}) is a prefix of "
                f"{longer!r} ({codes[longer]}): the longer one could never be keyed"
            )


def agent_codes_for(policy: Policy) -> dict[str, AgentAction]:
    """The code -> action map of a policy; ValueError when two codes collide."""
    named: list[tuple[AgentAction, str | None]] = [
        ("start", policy.recording.start_code),
        ("pause", policy.recording.pause_code),
        ("resume", policy.recording.resume_code),
        ("refuse", policy.consent.agent_refusal_code),
    ]
    codes: dict[str, AgentAction] = {}
    for action, code in named:
        if code is None:
            continue
        if code in codes:
            raise ValueError(f"agent code {code!r} is both {codes[code]} and {action}")
        codes[code] = action
    _check_codes(codes)
    return codes


class AgentCodeMatcher:
    """Digits of the agent leg in, forward/swallow verdicts and matched codes out."""

    def __init__(
        self,
        codes: Mapping[str, str],
        *,
        inter_digit_timeout: float = DEFAULT_INTER_DIGIT_TIMEOUT,
    ) -> None:
        if inter_digit_timeout <= 0:
            raise ValueError(f"inter_digit_timeout must be positive, got {inter_digit_timeout}")
        _check_codes(codes)
        self.codes: dict[str, str] = dict(codes)
        self.inter_digit_timeout = inter_digit_timeout
        self._prefixes = frozenset(code[:n] for code in self.codes for n in range(1, len(code)))
        self._held = ""
        self._deadline: float | None = None

    @property
    def held(self) -> str:
        """Digits swallowed so far that may still become a code."""
        return self._held

    def digit(self, digit: str, now: float) -> DigitVerdict:
        """One key press of the agent; forward it to the caller only if `.forward`."""
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        events: list[AgentCodeEvent] = list(self.handle_timer(now))
        if self._held:
            candidate = self._held + digit
            if self._advance(candidate, now, events):
                return DigitVerdict(forward=False, events=tuple(events))
            events.append(CodeAbandoned(digits=self._held, reason="mismatch", at=now))
            self._reset()
        if self._advance(digit, now, events):
            return DigitVerdict(forward=False, events=tuple(events))
        return DigitVerdict(forward=True, events=tuple(events))

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> list[AgentCodeEvent]:
        if self._deadline is None or now < self._deadline:
            return []
        abandoned = CodeAbandoned(digits=self._held, reason="timeout", at=now)
        self._reset()
        return [abandoned]

    def _advance(self, candidate: str, now: float, events: list[AgentCodeEvent]) -> bool:
        """Take `candidate` as the held digits if it is (part of) a code; False if it is not."""
        action = self.codes.get(candidate)
        if action is not None:
            events.append(CodeMatched(action=action, code=candidate, at=now))
            self._reset()
            return True
        if candidate in self._prefixes:
            self._held = candidate
            self._deadline = now + self.inter_digit_timeout
            return True
        return False

    def _reset(self) -> None:
        self._held = ""
        self._deadline = None


@dataclass(frozen=True, slots=True)
class PacketVerdict:
    """What to do with one RTP packet of the agent leg."""

    forward: bool
    events: tuple[AgentCodeEvent, ...] = ()


_FORWARD: Final = PacketVerdict(forward=True)


class AgentDtmfFilter:
    """Per-packet forward/drop for the agent leg's RTP, consistent across each event's packets.

    Packets of other payload types (the audio) are always forwarded: only telephone-events
    carry digits here. Telephone-events that are not keys (flash, tones: events 16+) and
    packets too short to judge are forwarded, as the relay would without this filter.
    """

    def __init__(self, payload_type: int, matcher: AgentCodeMatcher) -> None:
        # Digit semantics (one digit per event, lost end packets, long-press segments) are
        # the consent layer's detector's: the agent's code and the caller's key count alike.
        self._detector = Rfc4733Detector(payload_type)
        self.payload_type = payload_type
        self.matcher = matcher
        self._verdicts: OrderedDict[tuple[int, int], bool] = OrderedDict()
        self._last_key: dict[int, tuple[int, int]] = {}
        self.dropped = 0

    def handle_packet(self, packet: bytes, now: float) -> PacketVerdict:
        if len(packet) < 12 or packet[0] >> 6 != 2:
            return _FORWARD
        _, second, _, timestamp, ssrc = _RTP_HEADER.unpack_from(packet)
        if second & 0x7F != self.payload_type:
            return _FORWARD
        key = (ssrc, timestamp)
        known = self._verdicts.get(key)
        if known is not None:
            # Still fed to the detector: it tracks the event's duration and end bit, which it
            # needs to tell the next segment of a long press from a new press.
            self._detector.handle_packet(packet, now)
            return self._verdict(known, ())
        digits = self._detector.handle_packet(packet, now)
        if digits:
            verdict = self.matcher.digit(digits[0].digit, now)
            self._remember(key, ssrc, verdict.forward)
            return self._verdict(verdict.forward, verdict.events)
        if self._continues_swallowed(packet, ssrc):
            self._remember(key, ssrc, False)
            return self._verdict(False, ())
        return _FORWARD

    def get_timer(self) -> float | None:
        return self.matcher.get_timer()

    def handle_timer(self, now: float) -> list[AgentCodeEvent]:
        return self.matcher.handle_timer(now)

    def _continues_swallowed(self, packet: bytes, ssrc: int) -> bool:
        """A new key with no digit: a further segment of a long press (RFC 4733 §2.5.1.3)?

        The detector reports no digit for it; it inherits the verdict of the SSRC's previous
        event when it carries the same key. A new timestamp with the same event code that the
        detector did *not* treat as a continuation is impossible here: that would have been
        reported as a digit.
        """
        last = self._last_key.get(ssrc)
        if last is None or self._verdicts.get(last, True):
            return False
        event = _event_code(packet)
        return event is not None and event < _TEV_EVENT_COUNT

    def _remember(self, key: tuple[int, int], ssrc: int, forward: bool) -> None:
        self._verdicts[key] = forward
        self._last_key[ssrc] = key
        if len(self._verdicts) > _REMEMBERED_EVENTS:
            self._verdicts.popitem(last=False)

    def _verdict(self, forward: bool, events: tuple[AgentCodeEvent, ...]) -> PacketVerdict:
        if forward:
            return PacketVerdict(forward=True, events=events) if events else _FORWARD
        self.dropped += 1
        return PacketVerdict(forward=False, events=events)


def _event_code(packet: bytes) -> int | None:
    first = packet[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(packet) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * words
    if len(packet) < offset + 4:
        return None
    return packet[offset]
