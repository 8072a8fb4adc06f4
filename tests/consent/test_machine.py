from __future__ import annotations

import pytest

from consent.events import (
    ConsentDecided,
    ConsentEvent,
    DigitDetected,
    DigitMethod,
    StopNotice,
    VoiceRefusal,
)
from consent.machine import TRANSITIONS, ConsentConfig, ConsentMachine, State, Trigger

OPT_OUT = ConsentConfig()
OPT_IN = ConsentConfig(mode="opt-in", opt_in_keys=frozenset({"1"}))


def key(digit: str, at: float, method: DigitMethod = "dtmf-rfc4733") -> DigitDetected:
    return DigitDetected(digit=digit, method=method, at=at)


def test_silence_in_opt_out_is_accepted_after_the_window() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    assert m.get_timer() is None  # no timer while the notice plays
    assert m.notice_finished(4.0) == []
    assert m.get_timer() == 9.0  # listening
    assert m.handle_timer(8.999) == []
    events = m.handle_timer(9.0)
    assert events == [ConsentDecided(outcome="accepted", method="timeout", digit=None, at=9.0)]
    assert m.state is State.DECIDED and m.decision == events[0]
    assert m.get_timer() is None
    assert m.handle_timer(20.0) == []


def test_silence_in_opt_in_is_refused() -> None:
    m = ConsentMachine(OPT_IN, now=0.0)
    m.notice_finished(3.0)
    assert m.handle_timer(8.0) == [
        ConsentDecided(outcome="refused", method="timeout", digit=None, at=8.0)
    ]


@pytest.mark.parametrize("method", ["dtmf-rfc4733", "sip-info", "inband"])
def test_refusal_key_while_listening(method: DigitMethod) -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    m.notice_finished(4.0)
    assert m.digit(key("9", 5.5, method)) == [
        ConsentDecided(outcome="refused", method=method, digit="9", at=5.5)
    ]
    assert m.get_timer() is None


def test_barge_in_refusal_stops_the_notice() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    assert m.handle_event(key("9", 1.2, "sip-info")) == [
        StopNotice(at=1.2),
        ConsentDecided(outcome="refused", method="sip-info", digit="9", at=1.2),
    ]
    assert m.notice_finished(1.3) == []  # the player's late "done" changes nothing
    assert m.state is State.DECIDED


def test_keys_during_the_notice_can_be_ignored() -> None:
    m = ConsentMachine(ConsentConfig(keys_during_notice=False), now=0.0)
    assert m.digit(key("9", 1.0)) == []
    assert m.state is State.NOTICE_PLAYING
    m.notice_finished(4.0)
    assert m.digit(key("9", 4.5))[0] == ConsentDecided(
        outcome="refused", method="dtmf-rfc4733", digit="9", at=4.5
    )


def test_accept_key_in_opt_in_mode() -> None:
    m = ConsentMachine(OPT_IN, now=0.0)
    m.notice_finished(3.0)
    assert m.digit(key("1", 4.0, "inband")) == [
        ConsentDecided(outcome="accepted", method="inband", digit="1", at=4.0)
    ]


def test_refusal_key_in_opt_in_mode_is_an_explicit_refusal() -> None:
    m = ConsentMachine(ConsentConfig(mode="opt-in", opt_in_keys=frozenset({"1"})), now=0.0)
    m.notice_finished(3.0)
    decided = m.digit(key("9", 3.5))
    assert decided == [ConsentDecided(outcome="refused", method="dtmf-rfc4733", digit="9", at=3.5)]


def test_accept_key_in_opt_out_mode_decides_early() -> None:
    m = ConsentMachine(ConsentConfig(opt_in_keys=frozenset({"1"})), now=0.0)
    m.notice_finished(3.0)
    assert m.digit(key("1", 3.5)) == [
        ConsentDecided(outcome="accepted", method="dtmf-rfc4733", digit="1", at=3.5)
    ]


def test_other_keys_are_ignored() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    assert m.digit(key("5", 1.0)) == []
    m.notice_finished(4.0)
    assert m.digit(key("#", 5.0)) == []
    assert m.state is State.LISTENING
    assert m.handle_timer(9.0) == [
        ConsentDecided(outcome="accepted", method="timeout", digit=None, at=9.0)
    ]


def test_first_decision_wins() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    m.notice_finished(4.0)
    first = m.digit(key("9", 5.0))
    assert m.digit(key("9", 5.1, "inband")) == []  # the same key heard in-band too
    assert m.voice_refusal(VoiceRefusal(phrase="stop recording", at=5.2)) == []
    assert m.handle_timer(10.0) == []
    assert m.decision == first[0]


def test_voice_refusal_while_listening() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    m.notice_finished(4.0)
    assert m.handle_event(VoiceRefusal(phrase="stop recording", at=6.0)) == [
        ConsentDecided(
            outcome="refused", method="voice", digit=None, at=6.0, phrase="stop recording"
        )
    ]


def test_voice_during_the_notice_is_ignored_unless_configured() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    assert m.voice_refusal(VoiceRefusal(phrase="do not record", at=1.0)) == []
    assert m.state is State.NOTICE_PLAYING
    barge = ConsentMachine(ConsentConfig(voice_during_notice=True), now=0.0)
    events = barge.voice_refusal(VoiceRefusal(phrase="do not record", at=1.0))
    assert [type(e) for e in events] == [StopNotice, ConsentDecided]


def test_zero_listen_window_decides_when_the_notice_ends() -> None:
    m = ConsentMachine(ConsentConfig(listen_seconds=0.0), now=0.0)
    assert m.notice_finished(4.0) == [
        ConsentDecided(outcome="accepted", method="timeout", digit=None, at=4.0)
    ]


def test_late_timer_decides_at_the_time_it_runs() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    m.notice_finished(4.0)
    events: list[ConsentEvent] = m.handle_timer(9.3)
    assert events == [ConsentDecided(outcome="accepted", method="timeout", digit=None, at=9.3)]


def test_unknown_events_are_ignored() -> None:
    m = ConsentMachine(OPT_OUT, now=0.0)
    assert m.handle_event(StopNotice(at=1.0)) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "always"},
        {"listen_seconds": -1.0},
        {"opt_out_keys": frozenset({"9"}), "opt_in_keys": frozenset({"9"})},
        {"mode": "opt-in"},  # no way to accept
    ],
)
def test_bad_configurations(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ConsentConfig(**kwargs)  # type: ignore[arg-type]


def test_table_shape() -> None:
    # Nothing leaves DECIDED, and only the notice's end leads to LISTENING.
    assert all(state is not State.DECIDED for state, _ in TRANSITIONS)
    to_listening = [k for k, v in TRANSITIONS.items() if v is State.LISTENING]
    assert to_listening == [(State.NOTICE_PLAYING, Trigger.NOTICE_FINISHED)]
    assert (State.NOTICE_PLAYING, Trigger.TIMEOUT) not in TRANSITIONS
