from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from recorder.call.agent_codes import (
    AgentCodeMatcher,
    AgentDtmfFilter,
    CodeAbandoned,
    CodeMatched,
    PacketVerdict,
    agent_codes_for,
)
from recorder.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
PT = 101
SSRC = 0x0BADCAFE
CODES = {"*1": "pause", "*2": "resume", "*86": "refuse", "*5": "start"}
EVENTS = {d: i for i, d in enumerate("0123456789*#ABCD")}


def keyed(matcher: AgentCodeMatcher, digits: str, t0: float = 0.0, step: float = 0.5) -> list[bool]:
    return [matcher.digit(d, t0 + i * step).forward for i, d in enumerate(digits)]


# --- digits ----------------------------------------------------------------------------------


def test_a_code_is_swallowed_and_reported_on_its_last_digit() -> None:
    matcher = AgentCodeMatcher(CODES)
    first = matcher.digit("*", 10.0)
    assert not first.forward and first.events == () and matcher.held == "*"
    second = matcher.digit("8", 10.4)
    assert not second.forward and second.matched is None
    third = matcher.digit("6", 10.9)
    assert not third.forward
    assert third.events == (CodeMatched(action="refuse", code="*86", at=10.9),)
    assert third.matched == CodeMatched(action="refuse", code="*86", at=10.9)
    assert matcher.held == "" and matcher.get_timer() is None


def test_digits_that_cannot_begin_a_code_pass_at_once() -> None:
    matcher = AgentCodeMatcher(CODES)
    assert keyed(matcher, "0123456789#ABCD") == [True] * 15
    assert matcher.get_timer() is None


def test_codes_back_to_back() -> None:
    matcher = AgentCodeMatcher(CODES)
    matched = []
    for i, d in enumerate("*1*2"):
        verdict = matcher.digit(d, float(i))
        assert not verdict.forward
        matched += [e.action for e in verdict.events if isinstance(e, CodeMatched)]
    assert matched == ["pause", "resume"]


def test_a_broken_prefix_drops_the_held_digits_and_judges_the_breaker_afresh() -> None:
    matcher = AgentCodeMatcher(CODES)
    assert keyed(matcher, "*8") == [False, False]
    verdict = matcher.digit("7", 2.0)
    # "*87" is no code: "*8" stays swallowed (never released), "7" begins nothing: forwarded.
    assert verdict.forward
    assert verdict.events == (CodeAbandoned(digits="*8", reason="mismatch", at=2.0),)
    assert matcher.held == "" and matcher.get_timer() is None


def test_a_breaking_digit_may_start_a_code_itself() -> None:
    matcher = AgentCodeMatcher(CODES)
    assert keyed(matcher, "**") == [False, False]
    assert matcher.held == "*"
    verdict = matcher.digit("1", 1.0)
    assert not verdict.forward
    assert verdict.matched == CodeMatched(action="pause", code="*1", at=1.0)


def test_inter_digit_timeout_abandons_the_held_digits() -> None:
    matcher = AgentCodeMatcher(CODES, inter_digit_timeout=3.0)
    matcher.digit("*", 5.0)
    assert matcher.get_timer() == 8.0
    matcher.digit("8", 7.0)
    assert matcher.get_timer() == 10.0  # each digit restarts the wait
    assert matcher.handle_timer(9.99) == []
    assert matcher.held == "*8"
    assert matcher.handle_timer(10.0) == [CodeAbandoned(digits="*8", reason="timeout", at=10.0)]
    assert matcher.held == "" and matcher.get_timer() is None
    assert matcher.handle_timer(20.0) == []
    # The late "6" no longer completes "*86": it is a fresh digit and begins nothing.
    assert matcher.digit("6", 11.0).forward


def test_a_digit_after_an_unhandled_deadline_still_sees_the_timeout() -> None:
    # The adapter may be late calling handle_timer; the digit must not complete a stale code.
    matcher = AgentCodeMatcher(CODES, inter_digit_timeout=1.0)
    matcher.digit("*", 0.0)
    verdict = matcher.digit("1", 1.5)
    assert verdict.forward
    assert verdict.events == (CodeAbandoned(digits="*", reason="timeout", at=1.5),)


def test_a_digit_just_inside_the_timeout_completes_the_code() -> None:
    matcher = AgentCodeMatcher(CODES, inter_digit_timeout=1.0)
    matcher.digit("*", 0.0)
    assert matcher.digit("1", 0.999).matched == CodeMatched(action="pause", code="*1", at=0.999)


def test_codes_without_a_star() -> None:
    matcher = AgentCodeMatcher({"##9": "refuse"})
    assert keyed(matcher, "1#") == [True, False]
    assert keyed(matcher, "#9", t0=1.0) == [False, False]
    assert keyed(matcher, "*#", t0=2.0) == [True, False]


def test_one_digit_code() -> None:
    matcher = AgentCodeMatcher({"D": "pause"})
    verdict = matcher.digit("D", 1.0)
    assert not verdict.forward and verdict.matched == CodeMatched("pause", "D", 1.0)
    assert matcher.get_timer() is None


def test_empty_code_set_forwards_everything() -> None:
    matcher = AgentCodeMatcher({})
    assert keyed(matcher, "*1#") == [True, True, True]


@pytest.mark.parametrize(
    "codes",
    [{"*1": "pause", "*12": "resume"}, {"": "pause"}, {"*x": "pause"}, {"*1 ": "pause"}],
)
def test_bad_code_sets_are_refused(codes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        AgentCodeMatcher(codes)


def test_bad_digit_and_timeout_are_refused() -> None:
    with pytest.raises(ValueError):
        AgentCodeMatcher(CODES).digit("x", 0.0)
    with pytest.raises(ValueError):
        AgentCodeMatcher(CODES).digit("*1", 0.0)
    with pytest.raises(ValueError):
        AgentCodeMatcher(CODES, inter_digit_timeout=0)


def test_codes_from_a_policy() -> None:
    policy = load_policy(ROOT / "examples" / "tel.toml")
    policy = dataclasses.replace(
        policy, consent=dataclasses.replace(policy.consent, agent_refusal_code="*0")
    )
    assert agent_codes_for(policy) == {"*1": "start", "*8": "pause", "*9": "resume", "*0": "refuse"}


def test_policy_codes_that_collide_are_refused() -> None:
    policy = load_policy(ROOT / "examples" / "tel.toml")
    same = dataclasses.replace(
        policy, consent=dataclasses.replace(policy.consent, agent_refusal_code="*8")
    )
    with pytest.raises(ValueError, match="both pause and refuse"):
        agent_codes_for(same)
    prefix = dataclasses.replace(
        policy, consent=dataclasses.replace(policy.consent, agent_refusal_code="*86")
    )
    # TEL's pause code *8 and the usual refusal code *86: the refusal could never be keyed.
    with pytest.raises(ValueError, match="'\\*8' \\(pause\\) is a prefix of '\\*86'"):
        agent_codes_for(prefix)


# --- packets ---------------------------------------------------------------------------------


def tev(
    event: int,
    duration: int,
    *,
    ts: int,
    seq: int,
    end: bool = False,
    ssrc: int = SSRC,
    pt: int = PT,
) -> bytes:
    header = struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts, ssrc)
    return header + struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


def press(digit: str, ts: int, seq: int, packets: int = 5, ends: int = 3) -> list[bytes]:
    event = EVENTS[digit]
    out = [tev(event, 160 * (i + 1), ts=ts, seq=seq + i) for i in range(packets)]
    out += [tev(event, 160 * (packets + 1), ts=ts, seq=seq + packets, end=True)] * ends
    return out


def audio(seq: int, ts: int, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + b"\xff" * 160


def run(
    filt: AgentDtmfFilter, packets: list[bytes], t0: float = 0.0
) -> tuple[list[bool], list[CodeMatched]]:
    forwards: list[bool] = []
    matched: list[CodeMatched] = []
    for i, packet in enumerate(packets):
        verdict = filt.handle_packet(packet, t0 + i * 0.02)
        forwards.append(verdict.forward)
        matched += [e for e in verdict.events if isinstance(e, CodeMatched)]
    return forwards, matched


def dialled(digits: str, ts0: int = 8000, packets: int = 5, ends: int = 3) -> list[list[bytes]]:
    out = []
    for i, digit in enumerate(digits):
        out.append(press(digit, ts=ts0 + i * 4000, seq=1 + i * 20, packets=packets, ends=ends))
    return out


def test_every_packet_of_a_swallowed_code_is_dropped_including_the_three_ends() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    presses = dialled("*86")
    forwards, matched = run(filt, [p for press_ in presses for p in press_])
    assert forwards == [False] * sum(len(p) for p in presses)
    assert [(m.action, m.code) for m in matched] == [("refuse", "*86")]
    assert filt.dropped == len(forwards)


def test_every_packet_of_a_forwarded_digit_is_forwarded() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    packets = [p for press_ in dialled("12#") for p in press_]
    forwards, matched = run(filt, packets)
    assert forwards == [True] * len(packets) and matched == []
    assert filt.dropped == 0


def test_audio_and_other_payload_types_pass() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    filt.handle_packet(press("*", ts=8000, seq=1)[0], 0.0)
    assert filt.matcher.held == "*"
    # Audio while a code is half keyed: still forwarded, and it does not disturb the code.
    assert filt.handle_packet(audio(50, 9000), 0.1).forward
    assert filt.handle_packet(tev(1, 160, ts=5, seq=2, pt=96), 0.1).forward
    assert filt.handle_packet(b"\x80\x65", 0.1).forward  # too short to be RTP
    verdict = filt.handle_packet(press("1", ts=12000, seq=60)[0], 0.2)
    assert not verdict.forward
    assert verdict.events == (CodeMatched(action="pause", code="*1", at=0.2),)


def test_mixed_sequence_drops_exactly_the_code_events() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    presses = dialled("4*1#")
    wanted = [True, False, False, True]
    for press_, forward in zip(presses, wanted, strict=True):
        assert run(filt, press_)[0] == [forward] * len(press_)


def test_a_late_repeat_keeps_its_events_verdict_after_the_code_completed() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    star, one = dialled("*1")
    run(filt, star + one)
    # A reordered end packet of "*" arriving after the code fired, and after a forwarded
    # "7" event: still dropped, and it does not start a new code.
    run(filt, press("7", ts=40000, seq=200))
    verdict = filt.handle_packet(star[-1], 5.0)
    assert verdict == PacketVerdict(forward=False)
    assert filt.matcher.held == ""


def test_lost_start_packets_still_swallow_the_rest() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    star, one = dialled("*1")
    forwards, matched = run(filt, star[2:] + one[3:])
    assert forwards == [False] * len(forwards)
    assert [m.code for m in matched] == ["*1"]


def test_abandoned_prefix_keeps_dropping_its_own_late_packets() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    star, seven = dialled("*7")
    first = run(filt, star[:2])[0]
    second = run(filt, seven)[0]
    assert first == [False, False] and second == [True] * len(seven)
    # The rest of the abandoned "*" event (its end packets, reordered): still dropped.
    assert run(filt, star[2:])[0] == [False] * len(star[2:])


def test_long_press_segments_share_the_verdict() -> None:
    # RFC 4733 §2.5.1.3: a press longer than the 16-bit duration goes on with a new
    # timestamp where the previous segment ended; it is the same key, so dropped alike.
    filt = AgentDtmfFilter(PT, AgentCodeMatcher({"*": "pause"}))
    seg1 = [tev(10, d, ts=1000, seq=i) for i, d in enumerate((160, 32000, 0xFFFF))]
    seg2 = [tev(10, d, ts=1000 + 0xFFFF, seq=10 + i) for i, d in enumerate((160, 320))]
    seg2 += [tev(10, 480, ts=1000 + 0xFFFF, seq=20, end=True)] * 3
    forwards, matched = run(filt, seg1 + seg2)
    assert forwards == [False] * len(forwards)
    assert [m.code for m in matched] == ["*"]
    # The next, separate "*" press is a new code.
    _, again = run(filt, press("*", ts=200000, seq=40))
    assert [m.code for m in again] == ["*"]


def test_long_press_segments_of_a_forwarded_key_are_forwarded() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    seg1 = [tev(5, d, ts=1000, seq=i) for i, d in enumerate((160, 0xFFFF))]
    seg2 = [tev(5, d, ts=1000 + 0xFFFF, seq=10 + i, end=i == 2) for i, d in enumerate((1, 2, 3))]
    assert run(filt, seg1 + seg2)[0] == [True] * 5


def test_streams_are_kept_apart_by_ssrc() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    # Same timestamp, other SSRC (e.g. after a re-INVITE): a different event.
    a = tev(EVENTS["*"], 160, ts=8000, seq=1, ssrc=1)
    b = tev(EVENTS["4"], 160, ts=8000, seq=1, ssrc=2)
    assert not filt.handle_packet(a, 0.0).forward
    assert filt.handle_packet(b, 0.1).forward


def test_filter_timer_is_the_matchers() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES, inter_digit_timeout=2.0))
    assert filt.get_timer() is None
    filt.handle_packet(press("*", ts=8000, seq=1)[0], 1.0)
    assert filt.get_timer() == 3.0
    assert filt.handle_timer(3.0) == [CodeAbandoned(digits="*", reason="timeout", at=3.0)]
    assert filt.get_timer() is None


def test_malformed_telephone_event_is_forwarded() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher(CODES))
    short = struct.pack("!BBHII", 0x80, PT, 1, 8000, SSRC) + b"\x0a"
    assert filt.handle_packet(short, 0.0).forward
    assert filt.matcher.held == ""


def test_non_key_events_pass() -> None:
    filt = AgentDtmfFilter(PT, AgentCodeMatcher({"*": "pause"}))
    assert run(filt, [tev(16, 160, ts=8000, seq=1), tev(16, 320, ts=8000, seq=2)])[0] == [
        True,
        True,
    ]
