"""The consent state machine: notice, listening window, decision. Pure, driven by `now`.

    NOTICE_PLAYING --notice finished--> LISTENING --timeout--> DECIDED (mode default)
          |                                 |
          +--key / voice (barge-in)--+------+--key / voice--> DECIDED

Transitions are data (`TRANSITIONS`, in the style of h11's state tables): each
input is first classified into a `Trigger` using the configuration (which keys
refuse, which accept, whether the notice may be interrupted), then the table says
where it leads; a (state, trigger) pair absent from the table is ignored. The
outcome of a decisive trigger is in `OUTCOMES`. Keys of both sets work in both
modes: the mode only decides what silence means (opt-out: accepted; opt-in:
refused), so a caller who presses the refusal key in opt-in mode is told apart
from one who said nothing, in the audit trail (C5).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, Literal

from consent.events import (
    ConsentDecided,
    ConsentEvent,
    DecisionMethod,
    DigitDetected,
    Outcome,
    StopNotice,
    VoiceRefusal,
)

Mode = Literal["opt-out", "opt-in"]


class State(enum.Enum):
    NOTICE_PLAYING = "notice-playing"
    LISTENING = "listening"
    DECIDED = "decided"


class Trigger(enum.Enum):
    NOTICE_FINISHED = "notice-finished"
    REFUSE_KEY = "refuse-key"
    ACCEPT_KEY = "accept-key"
    VOICE_REFUSAL = "voice-refusal"
    TIMEOUT = "timeout"


TRANSITIONS: Final[dict[tuple[State, Trigger], State]] = {
    (State.NOTICE_PLAYING, Trigger.NOTICE_FINISHED): State.LISTENING,
    (State.NOTICE_PLAYING, Trigger.REFUSE_KEY): State.DECIDED,
    (State.NOTICE_PLAYING, Trigger.ACCEPT_KEY): State.DECIDED,
    (State.NOTICE_PLAYING, Trigger.VOICE_REFUSAL): State.DECIDED,
    (State.LISTENING, Trigger.REFUSE_KEY): State.DECIDED,
    (State.LISTENING, Trigger.ACCEPT_KEY): State.DECIDED,
    (State.LISTENING, Trigger.VOICE_REFUSAL): State.DECIDED,
    (State.LISTENING, Trigger.TIMEOUT): State.DECIDED,
}

# Outcome of each decisive trigger; TIMEOUT depends on the mode.
OUTCOMES: Final[dict[Trigger, Outcome]] = {
    Trigger.REFUSE_KEY: "refused",
    Trigger.ACCEPT_KEY: "accepted",
    Trigger.VOICE_REFUSAL: "refused",
}
SILENCE_OUTCOME: Final[dict[Mode, Outcome]] = {"opt-out": "accepted", "opt-in": "refused"}


@dataclass(frozen=True, slots=True)
class ConsentConfig:
    """Built once from the policy. Keys are DTMF characters ("0"-"9", "*", "#", "A"-"D")."""

    mode: Mode = "opt-out"
    opt_out_keys: frozenset[str] = field(default_factory=lambda: frozenset({"9"}))
    opt_in_keys: frozenset[str] = field(default_factory=frozenset)
    listen_seconds: float = 5.0
    keys_during_notice: bool = True  # barge-in: a key during the notice decides at once
    # Off by default: a spotter hearing our own prompt's "to refuse..." as echo
    # must not refuse for the caller.
    voice_during_notice: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SILENCE_OUTCOME:
            raise ValueError(f"consent mode must be opt-out or opt-in, not {self.mode!r}")
        if self.listen_seconds < 0:
            raise ValueError("listen_seconds must not be negative")
        both = self.opt_out_keys & self.opt_in_keys
        if both:
            raise ValueError(f"keys both refuse and accept: {sorted(both)}")
        if self.mode == "opt-in" and not self.opt_in_keys:
            raise ValueError("opt-in mode needs at least one opt-in key")


class ConsentMachine:
    """One per call leg that hears the notice. Created when the notice starts playing."""

    def __init__(self, config: ConsentConfig, now: float) -> None:
        self.config = config
        self.state = State.NOTICE_PLAYING
        self.started_at = now
        self.decision: ConsentDecided | None = None
        self._deadline: float | None = None

    # --- inputs ------------------------------------------------------------------------

    def notice_finished(self, now: float) -> list[ConsentEvent]:
        """The player sent its last packet; the listening window starts now."""
        return self._fire(Trigger.NOTICE_FINISHED, now)

    def digit(self, event: DigitDetected) -> list[ConsentEvent]:
        """A key from any detector; keys in neither set are ignored."""
        if event.digit in self.config.opt_out_keys:
            trigger = Trigger.REFUSE_KEY
        elif event.digit in self.config.opt_in_keys:
            trigger = Trigger.ACCEPT_KEY
        else:
            return []
        if self.state is State.NOTICE_PLAYING and not self.config.keys_during_notice:
            return []
        return self._fire(trigger, event.at, method=event.method, digit=event.digit)

    def voice_refusal(self, event: VoiceRefusal) -> list[ConsentEvent]:
        if self.state is State.NOTICE_PLAYING and not self.config.voice_during_notice:
            return []
        return self._fire(Trigger.VOICE_REFUSAL, event.at, method="voice", phrase=event.phrase)

    def handle_event(self, event: ConsentEvent) -> list[ConsentEvent]:
        """Dispatch a detector event (DigitDetected or VoiceRefusal)."""
        if isinstance(event, DigitDetected):
            return self.digit(event)
        if isinstance(event, VoiceRefusal):
            return self.voice_refusal(event)
        return []

    def get_timer(self) -> float | None:
        """End of the listening window, or None when not listening."""
        return self._deadline if self.state is State.LISTENING else None

    def handle_timer(self, now: float) -> list[ConsentEvent]:
        if self._deadline is None or self.state is not State.LISTENING or now < self._deadline:
            return []
        return self._fire(Trigger.TIMEOUT, now, method="timeout")

    # --- the table ---------------------------------------------------------------------

    def _fire(
        self,
        trigger: Trigger,
        now: float,
        *,
        method: DecisionMethod | None = None,
        digit: str | None = None,
        phrase: str | None = None,
    ) -> list[ConsentEvent]:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            return []
        previous, self.state = self.state, target
        if target is State.LISTENING:
            self._deadline = now + self.config.listen_seconds
            if self.config.listen_seconds == 0:
                return self.handle_timer(now)
            return []
        assert method is not None  # every trigger into DECIDED carries its method
        outcome = (
            SILENCE_OUTCOME[self.config.mode] if trigger is Trigger.TIMEOUT else OUTCOMES[trigger]
        )
        self._deadline = None
        self.decision = ConsentDecided(
            outcome=outcome, method=method, digit=digit, at=now, phrase=phrase
        )
        events: list[ConsentEvent] = []
        if previous is State.NOTICE_PLAYING:
            events.append(StopNotice(at=now))
        events.append(self.decision)
        return events
