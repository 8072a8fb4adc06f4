"""Per-call orchestration: the policy decides, the notice plays, the caller may refuse.

`CallController` is the B2BUA's `CallHooks`. For each new call it asks the policy
(`decide`), and when the call may be recorded and a notice is due it has the B2BUA
answer the caller itself, plays the prompt as paced RTP, listens for a refusal
(RFC 4733 events, SIP INFO, in-band DTMF) and only then lets the B2BUA call the
PBX. Whatever the caller answers, the call is served (C5); only a consenting call
is handed to the recording tap (`recording_factory`).

Full disk (issue 20): before a call the policy records is recorded, `storage_full` is asked.
When storage is full the call follows `[storage] when_full`: "reject" answers the INVITE
503 with Retry-After (nothing connects: a service that must never have an unrecorded
call), "connect_unrecorded" serves it without notice nor recording. Either way the call
log gets a `recording.skipped` event with the reason, and the log a warning.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from consent.events import ConsentDecided, ConsentEvent, DigitDetected, StopNotice
from consent.g711 import alaw_decode, ulaw_decode
from consent.inband import InbandDtmfDetector
from consent.machine import ConsentConfig, ConsentMachine, State
from consent.player import NoticePlayer
from consent.prompt import Codec, PromptCache, PromptError
from consent.rfc4733 import Rfc4733Detector
from consent.sipinfo import digit_from_info
from consent.voice import VoiceRefusalSpotter, VoiceUnavailable
from recorder.call.agent_codes import (
    AgentCodeEvent,
    AgentCodeMatcher,
    AgentDtmfFilter,
    CodeMatched,
    agent_codes_for,
)
from recorder.call.b2bua import B2bua, Call, CallPlan
from recorder.call.call_log import CallLog
from recorder.call.sdp_anchor import anchor_sdp
from recorder.call.tones import ringback_frames
from recorder.media.rtp import payload_bounds
from recorder.ops.control import Actor, CallSummary, ControlError
from recorder.ops.logs import get_logger
from recorder.policy import CallFacts, Decision, Policy, decide
from sip.errors import RemoteProtocolError
from sip.message import Request

log = get_logger("recorder.calls")

PacketTap = Callable[[bytes, float], None]

# What the recording writer decodes; a call that may be recorded is offered nothing else.
RECORDABLE_CODECS = ("PCMU", "PCMA", "telephone-event")
STORAGE_FULL_RETRY_AFTER = 60  # seconds, in the 503 of a call refused for a full disk


class ControllableMedia(Protocol):
    """What the controller needs of a call's relay beyond what the B2BUA uses."""

    def send_rtp(self, role: str, data: bytes) -> bool: ...
    def set_forwarding(self, role: str, enabled: bool) -> None: ...
    def set_tap(self, role: str, tap: PacketTap | None) -> None: ...
    # `payload_type`: the only packets `keep` needs to judge (the agent's telephone-events).
    def set_filter(
        self,
        role: str,
        keep: Callable[[bytes, float], bool] | None,
        *,
        payload_type: int | None = None,
    ) -> None: ...


class CallRecordingHandle(Protocol):
    def stop(self, now: float, *, discard: bool = False) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


RecordingFactory = Callable[[Call, "CallState", float], CallRecordingHandle | None]


@dataclass(slots=True)
class CallState:
    """The application's view of one call."""

    call: Call
    decision: Decision | None
    arrived: datetime
    consent: ConsentSession | None = None
    consent_decision: ConsentDecided | None = None
    tone: NoticePlayer | None = None
    tone_ssrc: int = 0
    notice_logged: bool = False
    # Which leg hears the notice: "a" (the caller, answered by us) or "b" (C2: the callee).
    consent_role: str = "a"
    agent_filter: AgentDtmfFilter | None = None
    on_demand_requested: bool = False
    paused: bool = False
    recording_refused: bool = False
    recording_skipped: str | None = None  # why a call to record is not: "disk full"...
    agent: str | None = None
    recording: CallRecordingHandle | None = None
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)


class ConsentSession:
    """The notice and the listening window for one caller; sans-IO but for `send`."""

    def __init__(
        self,
        frames: tuple[bytes, ...],
        codec: Codec,
        telephone_event_pt: int | None,
        config: ConsentConfig,
        now: float,
    ) -> None:
        self.codec = codec
        self.frames = frames
        self.player = NoticePlayer(
            frames,
            codec.payload_type,
            ssrc=secrets.randbits(32),
            sequence=secrets.randbits(16),
            timestamp=secrets.randbits(32),
        )
        self.machine = ConsentMachine(config, now)
        self.rfc4733 = (
            Rfc4733Detector(telephone_event_pt) if telephone_event_pt is not None else None
        )
        self.inband = InbandDtmfDetector()
        self._decode = ulaw_decode if codec is Codec.PCMU else alaw_decode
        # C4: the spoken refusal, attached when its decoder is ready (built off the loop).
        self.voice: VoiceRefusalSpotter | None = None
        self._notice_reported = False
        self.decision: ConsentDecided | None = None
        self.player.start(now)

    def get_timer(self) -> float | None:
        timers = [t for t in (self.player.get_timer(), self.machine.get_timer()) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> tuple[list[bytes], list[ConsentEvent]]:
        packets = self.player.handle_timer(now)
        events: list[ConsentEvent] = []
        if self.player.done and not self._notice_reported:
            self._notice_reported = True
            events.extend(self.machine.notice_finished(now))
        events.extend(self.machine.handle_timer(now))
        return packets, self._absorb(events)

    def on_packet(self, packet: bytes, now: float) -> list[ConsentEvent]:
        """Every RTP packet the caller sends while we listen."""
        if len(packet) < 12:
            return []
        events: list[ConsentEvent] = []
        payload_type = packet[1] & 0x7F
        if self.rfc4733 is not None and payload_type == self.rfc4733.payload_type:
            for digit in self.rfc4733.handle_packet(packet, now):
                events.extend(self.machine.digit(digit))
        elif payload_type == self.codec.payload_type:
            try:
                start, end = payload_bounds(packet)
            except ValueError:
                return []  # malformed: the relay counts it; nothing to hear in it
            audio = self._decode(np.frombuffer(packet, dtype=np.uint8)[start:end])
            for digit in self.inband.feed(audio, now):
                events.extend(self.machine.digit(digit))
            voice = self.voice
            if voice is not None and (
                self.machine.state is State.LISTENING or self.machine.config.voice_during_notice
            ):
                for phrase in voice.feed(audio, now):
                    events.extend(self.machine.voice_refusal(phrase))
        return self._absorb(events)

    def on_digit(self, digit: DigitDetected) -> list[ConsentEvent]:
        return self._absorb(self.machine.digit(digit))

    def _absorb(self, events: list[ConsentEvent]) -> list[ConsentEvent]:
        for event in events:
            if isinstance(event, StopNotice):
                self.player.stop()
            elif isinstance(event, ConsentDecided):
                self.decision = event
                self.player.stop()
                self.close()
        return events

    def close(self) -> None:
        if self.voice is not None:
            self.voice.close()
            self.voice = None


def _consent_config(policy: Policy) -> ConsentConfig:
    consent = policy.consent
    return ConsentConfig(
        mode="opt-in" if consent.mode == "opt_in" else "opt-out",
        opt_out_keys=frozenset(consent.refusal_keys),
        opt_in_keys=frozenset(consent.accept_keys),
        listen_seconds=consent.listen_seconds,
        keys_during_notice=consent.barge_in,
    )


def _withheld(request: Request) -> bool:
    privacy = (request.headers.get("Privacy") or "").lower()
    user = (request.from_.uri.user or "").lower()
    return "id" in privacy.replace(" ", "").split(";") or user in ("anonymous", "")


class CallController:
    """The B2BUA's hooks: policy, consent and the hand-over to recording."""

    def __init__(
        self,
        policy: Policy,
        *,
        policy_dir: Path,
        media_of: Callable[[Call], ControllableMedia | None],
        recording_factory: RecordingFactory | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
        call_log: CallLog | None = None,
        storage_full: Callable[[], str | None] | None = None,
        when_full: str = "connect_unrecorded",
    ) -> None:
        self.policy = policy
        self.policy_dir = policy_dir
        self.media_of = media_of
        self.recording_factory = recording_factory
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.rng = rng or random.Random()
        self.on_change = on_change
        self.call_log = call_log
        # None while recordings have room, else why not; and what a call to record gets then.
        self.storage_full = storage_full
        self.when_full = when_full
        self.b2bua: B2bua | None = None
        self.prompts = PromptCache()
        self.states: dict[str, CallState] = {}
        self.counters = {"refused": 0, "accepted": 0, "notices": 0, "recorded": 0}
        # Calls to record while storage was full: refused with 503, or connected unrecorded.
        self.counters.update(storage_rejected=0, storage_unrecorded=0)
        self.voice_unavailable = False
        # (direction, "record" | "no_record") and (outcome, method), for the metrics.
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.consents: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------------ CallHooks
    def plan(self, call: Call, now: float) -> CallPlan:
        request = call.a_invite
        arrived = self.wall_clock()
        facts = CallFacts(
            direction="inbound" if call.direction == "inbound" else "outbound",
            caller=None if _withheld(request) else (request.from_.uri.user or None),
            callee=request.uri.user or "",
            external=True,
            draw=self.rng.random,
        )
        decision = decide(self.policy, facts, arrived)
        self.decisions[(facts.direction, "record" if decision.record else "no_record")] += 1
        state = CallState(call, decision, arrived)
        self.states[call.id] = state
        if self.call_log is not None:
            self.call_log.opened(
                call.id,
                call_id_a=request.call_id,
                call_id_b=call.b_invite.call_id,
                direction=facts.direction,
                side=call.a.side.name,
                caller_number=facts.caller or "withheld",
                callee_number=facts.callee,
                arrived_at=arrived,
                policy_record=decision.record,
                policy_rules=decision.rule_ids,
                policy_hash=decision.policy_hash,
            )
        log.info(
            "policy.decided",
            call_id=call.id,
            record=decision.record,
            notice=decision.notice,
            rules=list(decision.rule_ids),
            policy_hash=decision.policy_hash[:12],
        )
        answer_first = (
            decision.record
            and decision.notice
            and decision.notice_to == "caller"
            and self._prompt_path() is not None
        )
        notice_callee = decision.notice and decision.notice_to == "callee"
        if decision.record and decision.notice and self._prompt_path() is None:
            # C1/C2 cannot be honoured (no usable prompt): such a call must not be recorded.
            log.error("notice.unavailable", call_id=call.id)
            state.decision = None
        elif decision.record and notice_callee:
            state.consent_role = "b"
        full = self._full_storage() if decision.record and state.decision is not None else None
        if full is not None:
            if self.when_full == "reject":
                return self._reject_for_storage(call, decision, full)
            # Served, not recorded: no notice of a recording that will not be made.
            self._skip_recording(call, state, full)
            state.decision = None
            state.consent_role = "a"
            answer_first = False
        may_record = state.decision is not None and (decision.record or decision.on_demand)
        return CallPlan(
            answer_first=answer_first,
            early_media=answer_first and self.policy.notice.early_media,
            keep_codecs=RECORDABLE_CODECS if may_record else None,
            detail=decision,
        )

    def _full_storage(self) -> str | None:
        return self.storage_full() if self.storage_full is not None else None

    def _reject_for_storage(self, call: Call, decision: Decision, reason: str) -> CallPlan:
        self.counters["storage_rejected"] += 1
        log.warning("call.refused_storage_full", call_id=call.id, reason=reason, status=503)
        if self.call_log is not None:
            self.call_log.event(
                call.id,
                "recording.skipped",
                self.wall_clock(),
                {"reason": reason, "when_full": "reject", "status": 503},
            )
        return CallPlan(
            reject=503,
            retry_after=STORAGE_FULL_RETRY_AFTER,
            reject_reason=f"storage full: {reason}",
            detail=decision,
        )

    def _skip_recording(self, call: Call, state: CallState, reason: str) -> None:
        """The call goes on without its recording (when_full = "connect_unrecorded")."""
        if state.recording_skipped is not None:
            return
        state.recording_skipped = reason
        self.counters["storage_unrecorded"] += 1
        log.warning(
            "recording.skipped", call_id=call.id, reason=reason, when_full="connect_unrecorded"
        )
        if self.call_log is not None:
            self.call_log.event(
                call.id,
                "recording.skipped",
                self.wall_clock(),
                {"reason": reason, "when_full": "connect_unrecorded"},
            )

    def on_local_answer(self, call: Call, now: float) -> None:
        state = self.states[call.id]
        media = self.media_of(call)
        path = self._prompt_path()
        assert call.local is not None and media is not None and path is not None
        codec = Codec(call.local.codec)
        try:
            prompt = self.prompts.get(path, codec)
        except PromptError as exc:
            log.error("notice.unreadable", call_id=call.id, error=str(exc))
            state.decision = None
            self._proceed(call, now)
            return
        self._start_notice(call, state, prompt.frames, codec, call.local.telephone_event_pt, now)

    def _start_notice(
        self,
        call: Call,
        state: CallState,
        frames: tuple[bytes, ...],
        codec: Codec,
        telephone_event_pt: int | None,
        now: float,
    ) -> None:
        media = self.media_of(call)
        assert media is not None
        role = state.consent_role
        state.consent = ConsentSession(
            frames, codec, telephone_event_pt, _consent_config(self.policy), now
        )
        self._attach_voice(call, state.consent)
        self.counters["notices"] += 1
        # Nobody hears anybody while the notice plays: it is the only audio the party gets.
        media.set_forwarding("a", False)
        media.set_forwarding("b", False)
        media.set_tap(role, lambda packet, arrival: self._listen(call, packet, arrival))
        log.info(
            "notice.started",
            call_id=call.id,
            to="caller" if role == "a" else "callee",
            seconds=round(len(frames) * 0.02, 2),
        )
        self._run_consent(call, now)

    def _attach_voice(self, call: Call, session: ConsentSession) -> None:
        """C4: spot spoken refusals; the decoder takes ~0.1 s to build, so not on the loop."""
        voice = self.policy.consent.voice
        if voice is None or self.voice_unavailable:
            return
        loop = asyncio.get_running_loop()
        phrases, model_dir = dict(voice.phrases), voice.model_dir
        future = loop.run_in_executor(
            None, lambda: VoiceRefusalSpotter(phrases, model_dir=model_dir)
        )

        def ready(done: asyncio.Future[VoiceRefusalSpotter]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if isinstance(error, VoiceUnavailable):
                # Keys keep working; say it loudly once (C4: voice is never the only way).
                self.voice_unavailable = True
                log.error("voice.unavailable", call_id=call.id, error=str(error))
                return
            if error is not None:
                log.error("voice.failed", call_id=call.id, error=type(error).__name__)
                return
            spotter = done.result()
            if session.decision is None and call.id in self.states:
                session.voice = spotter
            else:
                spotter.close()

        future.add_done_callback(ready)

    def on_b_progress(self, call: Call, early_media: bool, now: float) -> None:
        state = self.states.get(call.id)
        media = self.media_of(call)
        if state is None or media is None or call.local is None:
            return
        if early_media:
            # The PBX's own ringback or announcement reaches the caller as it is.
            state.tone = None
            media.set_forwarding("b", True)
        elif state.tone is None:
            codec = Codec(call.local.codec)
            state.tone_ssrc = secrets.randbits(32)
            tone = NoticePlayer(
                ringback_frames(codec),
                codec.payload_type,
                ssrc=state.tone_ssrc,
                sequence=secrets.randbits(16),
                timestamp=secrets.randbits(32),
            )
            tone.start(now)
            state.tone = tone

    def on_bridged(self, call: Call, now: float) -> None:
        state = self.states.get(call.id)
        media = self.media_of(call)
        if state is None:
            return
        state.tone = None
        notice_callee = state.consent_role == "b" and state.consent is None
        if media is not None and not notice_callee:
            media.set_tap("a", None)
            media.set_forwarding("a", True)
            media.set_forwarding("b", True)
        if self.call_log is not None:
            answer = call.info.get("b_answer")
            headers = {name: value for name, value in answer.headers} if answer is not None else {}
            agent = self.policy.naming.resolve_agent(
                headers, headers.get("P-Asserted-Identity"), None
            )
            state.agent = agent
            self.call_log.answered(
                call.id,
                at=self.wall_clock(),
                agent=agent,
                codec=call.local.codec if call.local is not None else None,
            )
        self._watch_agent_codes(call, state)
        if notice_callee and self._notice_callee(call, state, now):
            return  # recording, if any, starts once the callee has answered the notice
        self._start_recording(call, state, now)

    def _watch_agent_codes(self, call: Call, state: CallState) -> None:
        """S8, S5, C5: the agent's DTMF codes (pause, resume, start, refuse), swallowed."""
        codes = agent_codes_for(self.policy)
        media = self.media_of(call)
        if not codes or media is None or state.decision is None:
            return
        agent_role = "b" if call.direction == "inbound" else "a"
        pt = self._telephone_event_pt(call, agent_role)
        if pt is None:
            return
        state.agent_filter = AgentDtmfFilter(pt, AgentCodeMatcher(codes))
        media.set_filter(
            agent_role,
            lambda packet, arrival: self._agent_packet(call, packet, arrival),
            payload_type=pt,
        )

    def _telephone_event_pt(self, call: Call, role: str) -> int | None:
        """The telephone-event payload type that leg `role`'s party sends with."""
        message = call.info.get("b_answer") if role == "b" else call.a_invite
        if message is None or not message.body:
            return None
        try:
            _, endpoint = anchor_sdp(message.body, "0.0.0.0", 0)
        except RemoteProtocolError:
            return None
        return endpoint.telephone_event_pt

    def _agent_packet(self, call: Call, packet: bytes, arrival: float) -> bool:
        state = self.states.get(call.id)
        if state is None or state.agent_filter is None:
            return True
        verdict = state.agent_filter.handle_packet(packet, arrival)
        if verdict.events:
            self._agent_events(call, state, list(verdict.events), arrival)
            if self.on_change is not None:
                self.on_change()
        return verdict.forward

    def _agent_events(
        self, call: Call, state: CallState, events: list[AgentCodeEvent], now: float
    ) -> None:
        for event in events:
            if not isinstance(event, CodeMatched):
                continue
            log.info("agent.code", call_id=call.id, action=event.action)
            if self.call_log is not None:
                self.call_log.event(call.id, f"agent.{event.action}", self.wall_clock())
            try:
                self._apply(call, state, event.action, now)
            except ControlError as exc:
                log.info("agent.code_ignored", call_id=call.id, action=event.action, why=str(exc))

    def _apply(self, call: Call, state: CallState, action: str, now: float) -> str:
        """One recording action, from an agent code or the control socket."""
        if action == "pause":
            if state.recording is None or state.paused:
                raise ControlError("no running recording to pause")
            state.recording.pause()
            state.paused = True
            return "paused"
        if action == "resume":
            if state.recording is None or not state.paused:
                raise ControlError("the recording is not paused")
            state.recording.resume()
            state.paused = False
            return "resumed"
        if action == "start":
            if state.recording is not None:
                raise ControlError("already recording")
            decision = state.decision
            if decision is None and state.recording_skipped is not None:
                raise ControlError(f"not recorded: storage was full ({state.recording_skipped})")
            if decision is None or not (decision.record or decision.on_demand):
                raise ControlError("the policy does not allow recording this call")
            state.on_demand_requested = True
            if call.bridged_at is None and call.state.value != "confirmed":
                raise ControlError("the call is not connected yet")
            self._start_recording(call, state, now)
            if state.recording is None:
                if state.recording_skipped is not None:
                    raise ControlError(f"storage is full ({state.recording_skipped})")
                raise ControlError("the policy does not allow recording this call")
            return "recording"
        if action in ("stop", "refuse"):
            if state.recording is None:
                raise ControlError("not recording")
            discard = action == "refuse"
            state.recording.stop(now, discard=discard)
            state.recording = None
            state.paused = False
            if discard:
                # C5: the caller refused to the agent; what was written is destroyed, and
                # the call log says so (T1 counts refusals by agent with the others).
                state.recording_refused = True
                self.consents[("refused", "agent")] += 1
                self.counters["refused"] += 1
                if self.call_log is not None:
                    self.call_log.consent(
                        call.id, outcome="refused", method="agent", at=self.wall_clock(), digit=None
                    )
                log.info("consent.refused", call_id=call.id, method="agent")
            return "recording destroyed" if discard else "stopped"
        raise ControlError(f"unknown action {action!r}")

    def _start_recording(self, call: Call, state: CallState, now: float) -> None:
        if not self._may_record(state) or state.recording is not None:
            return
        full = self._full_storage()
        if full is not None:
            # Full since the call arrived (or an on-demand start): it is connected; it goes on.
            self._skip_recording(call, state, full)
            return
        if self.recording_factory is not None:
            state.recording = self.recording_factory(call, state, now)
            if state.recording is not None:
                self.counters["recorded"] += 1

    def _notice_callee(self, call: Call, state: CallState, now: float) -> bool:
        """C2: the callee of an outbound call hears the notice once they answer."""
        answer = call.info.get("b_answer")
        path = self._prompt_path()
        codec: Codec | None = None
        telephone_event: int | None = None
        if answer is not None and path is not None and answer.body:
            try:
                _, endpoint = anchor_sdp(answer.body, "0.0.0.0", 0)
            except RemoteProtocolError:
                endpoint = None
            if endpoint is not None and endpoint.payload_types:
                codec = {"0": Codec.PCMU, "8": Codec.PCMA}.get(endpoint.payload_types[0])
                telephone_event = endpoint.telephone_event_pt
        if codec is None or path is None:
            log.error("notice.unavailable", call_id=call.id, to="callee")
            state.decision = None  # never record what the callee was not told about
            return False
        try:
            prompt = self.prompts.get(path, codec)
        except PromptError as exc:
            log.error("notice.unreadable", call_id=call.id, error=str(exc))
            state.decision = None
            return False
        self._start_notice(call, state, prompt.frames, codec, telephone_event, now)
        return True

    def on_info(self, call: Call, role: str, request: Request, now: float) -> bool:
        state = self.states.get(call.id)
        if state is None or state.consent is None or state.consent.decision is not None:
            return False
        if role != state.consent_role:
            return False
        digit = digit_from_info(request, now)
        if digit is None:
            return False
        self._handle_consent_events(call, state.consent.on_digit(digit), now)
        return True

    def on_ended(self, call: Call, now: float) -> None:
        state = self.states.pop(call.id, None)
        if state is None:
            return
        if state.consent is not None:
            state.consent.close()
        if state.recording is not None:
            state.recording.stop(now)
        consent = state.consent_decision
        if self.call_log is not None:
            self.call_log.ended(
                call.id,
                at=self.wall_clock(),
                reason=call.end_reason,
                media=call.info.get("media_stats", {}),
            )
        log.info(
            "call.summary",
            call_id=call.id,
            recorded=state.recording is not None,
            consent=consent.outcome if consent else None,
            consent_method=consent.method if consent else None,
        )

    def get_timer(self) -> float | None:
        best: float | None = None
        for state in self.states.values():
            for when in (
                state.consent.get_timer()
                if state.consent and state.consent.decision is None
                else None,
                state.tone.get_timer() if state.tone is not None else None,
                state.agent_filter.get_timer() if state.agent_filter is not None else None,
            ):
                if when is not None and (best is None or when < best):
                    best = when
        return best

    def handle_timer(self, now: float) -> None:
        for state in list(self.states.values()):
            call = state.call
            if state.consent is not None and state.consent.decision is None:
                self._run_consent(call, now)
            agent_filter = state.agent_filter
            if agent_filter is not None:
                when = agent_filter.get_timer()
                if when is not None and when <= now:
                    self._agent_events(call, state, agent_filter.handle_timer(now), now)
            if state.tone is not None:
                media = self.media_of(call)
                tone = state.tone
                for packet in tone.handle_timer(now):
                    if media is not None:
                        media.send_rtp("a", packet)
                if tone.done and state.tone is tone and call.local is not None:
                    # Loop the cadence, carrying on the same SSRC, sequence and timestamps.
                    codec = Codec(call.local.codec)
                    again = NoticePlayer(
                        ringback_frames(codec),
                        codec.payload_type,
                        ssrc=state.tone_ssrc,
                        sequence=tone.next_sequence,
                        timestamp=tone.next_timestamp,
                    )
                    again.start(now)
                    state.tone = again

    # ------------------------------------------------------------------ control socket
    def calls(self, actor: Actor) -> list[CallSummary]:
        summaries: list[CallSummary] = []
        for state in self.states.values():
            call = state.call
            if state.consent is not None and state.consent.decision is None:
                phase = "notice"
            elif call.bridged_at is not None or (call.local is None and call.answered_at):
                phase = "bridged"
            else:
                phase = "ringing"
            if state.recording_refused:
                recording = "refused"
            elif state.recording is None:
                recording = "off"
            else:
                recording = "paused" if state.paused else "recording"
            summaries.append(
                {
                    "id": call.id,
                    "direction": call.direction,
                    "state": phase,
                    "recording": recording,
                    "started": state.arrived.isoformat(),
                    "agent": state.agent,
                }
            )
        return summaries

    def _control(self, call_id: str, actor: Actor, action: str) -> str:
        state = self.states.get(call_id)
        if state is None:
            raise ControlError(f"no active call {call_id}")
        result = self._apply(state.call, state, action, state.call.created)
        log.info("control.applied", call_id=call_id, action=action, actor=str(actor))
        if self.call_log is not None:
            self.call_log.event(
                call_id, f"control.{action}", self.wall_clock(), {"actor": str(actor)}
            )
        if self.on_change is not None:
            self.on_change()
        return result

    def pause(self, call_id: str, actor: Actor) -> str:
        return self._control(call_id, actor, "pause")

    def resume(self, call_id: str, actor: Actor) -> str:
        return self._control(call_id, actor, "resume")

    def start_recording(self, call_id: str, actor: Actor) -> str:
        return self._control(call_id, actor, "start")

    def stop_recording(self, call_id: str, actor: Actor) -> str:
        return self._control(call_id, actor, "stop")

    # ------------------------------------------------------------------ internals
    def _prompt_path(self) -> Path | None:
        notice = self.policy.notice
        language = notice.default_language or next(iter(notice.prompts), None)
        if language is None or language not in notice.prompts:
            return None
        path = Path(notice.prompts[language])
        if not path.is_absolute():
            path = self.policy_dir / path
        return path if path.is_file() else None

    def _may_record(self, state: CallState) -> bool:
        decision = state.decision
        if decision is None or state.recording_refused:
            return False
        if not (decision.record or (decision.on_demand and state.on_demand_requested)):
            return False
        if decision.notice:
            consent = state.consent_decision
            return consent is not None and consent.outcome == "accepted"
        return True

    def _listen(self, call: Call, packet: bytes, arrival: float) -> None:
        """The consent tap. If listening fails, the relay detaches the tap: a refusal could
        then go unheard, so the call is decided as refused, never recorded (C5, fail closed)."""
        try:
            self._on_caller_packet(call, packet, arrival)
        except Exception:
            state = self.states.get(call.id)
            if state is not None and state.consent is not None and state.consent.decision is None:
                log.error("consent.listener_failed", call_id=call.id)
                refused = ConsentDecided("refused", "listener-failure", None, arrival)
                self._handle_consent_events(call, state.consent._absorb([refused]), arrival)
                if self.on_change is not None:
                    self.on_change()
            raise

    def _on_caller_packet(self, call: Call, packet: bytes, arrival: float) -> None:
        state = self.states.get(call.id)
        if state is None or state.consent is None or state.consent.decision is not None:
            return
        events = state.consent.on_packet(packet, arrival)
        if events:
            self._handle_consent_events(call, events, arrival)
            if self.on_change is not None:
                self.on_change()

    def _run_consent(self, call: Call, now: float) -> None:
        state = self.states.get(call.id)
        media = self.media_of(call)
        if state is None or state.consent is None:
            return
        packets, events = state.consent.handle_timer(now)
        if media is not None:
            for packet in packets:
                media.send_rtp(state.consent_role, packet)
        self._handle_consent_events(call, events, now)
        self._log_notice_end(call, state)

    def _log_notice_end(self, call: Call, state: CallState) -> None:
        session = state.consent
        if session is None or state.notice_logged or not session.player.done:
            return
        state.notice_logged = True
        log.info(
            "notice.ended",
            call_id=call.id,
            packets=session.player.packets_sent,
            complete=session.player.packets_sent == len(session.frames),
        )

    def _handle_consent_events(self, call: Call, events: list[ConsentEvent], now: float) -> None:
        state = self.states.get(call.id)
        if state is None:
            return
        for event in events:
            if isinstance(event, ConsentDecided) and state.consent_decision is None:
                state.consent_decision = event
                self.consents[(event.outcome, event.method)] += 1
                if self.call_log is not None:
                    self.call_log.consent(
                        call.id,
                        outcome=event.outcome,
                        method=event.method,
                        at=self.wall_clock(),
                        digit=event.digit,
                    )
                if event.outcome == "refused":
                    self.counters["refused"] += 1
                    log.info("consent.refused", call_id=call.id, method=event.method)
                else:
                    self.counters["accepted"] += 1
                    log.info("consent.accepted", call_id=call.id, method=event.method)
                media = self.media_of(call)
                if media is not None:
                    media.set_tap(state.consent_role, None)
                self._log_notice_end(call, state)
                if state.consent_role == "a":
                    self._proceed(call, now)
                else:
                    # The callee has been told: bridge the two parties, then record if allowed.
                    if media is not None:
                        media.set_forwarding("a", True)
                        media.set_forwarding("b", True)
                    self._start_recording(call, state, now)

    def _proceed(self, call: Call, now: float) -> None:
        if self.b2bua is not None:
            self.b2bua.proceed(call, now)
