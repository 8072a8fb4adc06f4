"""rtpengine as the media plane (`[media] engine = "rtpengine"`, issue 19).

rtpengine forwards the call's RTP (in the kernel where its module is loaded), while the
recorder keeps signalling, policy, the notice and consent, and the recording's naming and
catalog. How a call goes:

1. **Before the B2BUA sees a new INVITE** with SDP, `RtpengineMedia.prepare` asks rtpengine
   (ng `offer` with the caller's SDP, tag `a`; then `answer`, tag `b`, with an SDP naming
   our own relay's socket, the *notice leg*). Both replies give rtpengine's ports: `port_a`
   faces the caller, `port_b` the PBX. Only then is the INVITE handed to the B2BUA, whose
   media factory is synchronous: it gets an anchor whose ports are known, so every SDP
   rewrite stays as it is (`media.address` must be the address rtpengine advertises).
2. **Notice and consent are untouched**: until the PBX answers, rtpengine forwards the
   caller's media to the notice leg (an ordinary relay session of ours) and ours to the
   caller. The controller plays the notice, listens for DTMF/voice, plays ringback, exactly
   as with the in-process relay.
3. **Bridging**: the PBX's SDP (183 or 200) becomes a new ng `answer` for tag `b`; rtpengine
   keeps its ports (`port latching`) and now forwards caller <-> PBX. Our relay is out of
   the media path: the notice leg's ports go back to the pool.
4. **Recording** (consenting calls only): ng `start recording` at bridging; rtpengine
   (`--recording-method=pcap`) writes one pcap per call. When the call ends (ng `delete`
   closes the pcap) the packets are read back, told apart by rtpengine's receiving port
   (`port_a`: the caller; `port_b`: the PBX, less what our notice leg sent), and replayed
   with their capture times into the very taps the relay would have fed
   (`recording.tap.CallRecording`), so the WAV, its name, the catalog row, the pauses and
   the writer's placement are the ones of a relayed call. The pcap is then deleted. A
   recording stopped mid-call (`recorder ctl stop`) is an ng `stop recording`, which closes
   the pcap at once; a refused one (C5) is deleted unread.

A refusing caller: no `start recording`, so rtpengine writes nothing for the call.

What rtpengine mode does not do (yet): SDES-SRTP (such calls, late-offer INVITEs and calls
rtpengine cannot take are relayed in-process as before, logged `rtpengine.fallback`), the
agents' DTMF codes (their media no longer passes through us; the control socket's pause,
resume and stop work), and the notice to the callee (C2): such a call is not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recorder.call.sdp_anchor import CryptoRewrite, anchor_sdp, is_sdp
from recorder.media.ng import TAG_A, TAG_B, NgClient, NgError, delete_summary, new_cookie
from recorder.media.pcap import CapturedPacket, read_pcap, split_parties
from recorder.ops.logs import get_logger
from sip.errors import RemoteProtocolError
from sip.transaction import RequestReceived, TransactionEvent

Address = tuple[str, int]
PacketTap = Callable[[bytes, float], None]
log = get_logger("recorder.rtpengine")

# TAG_A faces the caller, TAG_B the PBX (our notice leg until the PBX answers).
# Every offer/answer: rtpengine keeps its local ports when a party's address changes (the
# caller was told port_a once, when we answered it), plain RTP/AVP, no ICE, our origin.
_FLAGS = ["port latching"]
_COMMON: dict[str, Any] = {
    "replace": ["origin", "session-connection"],
    "ICE": "remove",
    "transport-protocol": "RTP/AVP",
}
REPLAY_CHUNK = 4000  # packets fed to the writer's taps between two of its batches
REPLAY_PAUSE = 0.2  # seconds between chunks: longer than the writer's batch interval
REPLAY_BACKLOG_WAIT = 30.0  # the longest a chunk waits for the writer's pipe to drain


# ---------------------------------------------------------------------------- anchors


class NoticeMedia(Protocol):
    """The in-process relay anchor used as the notice leg (service.RelayAnchor)."""

    def local_port(self, role: str) -> int: ...
    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def finish(self, done: Callable[[dict[str, Any]], None]) -> None: ...
    def send_rtp(self, role: str, data: bytes) -> bool: ...
    def set_forwarding(self, role: str, enabled: bool) -> None: ...
    def set_tap(self, role: str, tap: PacketTap | None) -> None: ...
    def set_filter(
        self,
        role: str,
        keep: Callable[[bytes, float], bool] | None,
        *,
        payload_type: int | None = None,
    ) -> None: ...


class ReplayLeg:
    """A `TappableLeg` for `CallRecording`: its tap is fed from rtpengine's pcap."""

    __slots__ = ("on_packet",)

    def __init__(self) -> None:
        self.on_packet: PacketTap | None = None


@dataclass(slots=True)
class PreparedCall:
    """rtpengine's side of one call, set up before the B2BUA sees the INVITE."""

    ng_call_id: str
    offer: bytes  # the caller's SDP as received (synthesised SDPs start from it)
    notice: NoticeMedia
    address: str  # what rtpengine advertises
    port_a: int
    port_b: int
    remote_a: Address | None
    notice_address: Address
    taken: bool = False  # by the B2BUA's media factory


class RtpengineAnchor:
    """The B2BUA's `MediaAnchor` and the controller's `ControllableMedia` for a call whose
    media rtpengine forwards; the notice and consent use our notice leg (role "a" only)."""

    def __init__(self, owner: RtpengineMedia, prepared: PreparedCall, call_id: str) -> None:
        self.owner = owner
        self.prepared = prepared
        self.call_id = call_id
        self.remote_a = prepared.remote_a
        self.remote_b: Address | None = None
        self.legs = (ReplayLeg(), ReplayLeg())
        self.closed = False
        self.recording = False
        # Resolves once rtpengine has deleted the call (its pcap, if any, is then complete).
        self.deleted: asyncio.Future[None] = owner.loop.create_future()
        self._updates: asyncio.Task[None] | None = None
        # The notice leg's counters once it is released (at the bridge: its ports go back).
        self._notice_stats: dict[str, Any] | None = None
        # Its final counters have come (a media worker's come after it closed the sockets);
        # until then, `finish` waits with the callbacks in `_on_notice_final`.
        self._notice_final = False
        self._on_notice_final: list[Callable[[], None]] = []

    @property
    def ng_call_id(self) -> str:
        return self.prepared.ng_call_id

    # --- MediaAnchor
    def local_port(self, role: str) -> int:
        return self.prepared.port_a if role == "a" else self.prepared.port_b

    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None:
        if self.closed or rtp is None:
            return
        if role == "a":
            if rtp == self.remote_a:
                return
            self.remote_a = rtp
            self._update(offer=True)
        else:
            if rtp == self.remote_b:
                return
            self.remote_b = rtp
            self._update(offer=False)

    def crypto(self, from_role: str, to_role: str | None) -> CryptoRewrite | None:
        return None  # SRTP calls are relayed in-process (see `RtpengineMedia.prepare`)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._release_notice()
        self.owner.spawn(self._delete(), f"close {self.ng_call_id}")

    def _release_notice(self) -> None:
        if self._notice_stats is None:
            self._notice_stats = dict(self.prepared.notice.stats().get("a", {}))

            def final(stats: dict[str, Any]) -> None:
                self._notice_stats = dict(stats.get("a", {})) or self._notice_stats
                self._notice_final = True
                waiting, self._on_notice_final = self._on_notice_final, []
                for callback in waiting:
                    callback()

            self.prepared.notice.finish(final)

    def finish(self, done: Callable[[dict[str, Any]], None]) -> None:
        self.close()
        if self._notice_final:
            done(self.stats())
        else:
            self._on_notice_final.append(lambda: done(self.stats()))

    def stats(self) -> dict[str, Any]:
        notice = self._notice_stats
        if notice is None:
            notice = dict(self.prepared.notice.stats().get("a", {}))
        return {
            "notice": notice,
            "rtpengine": {
                "call": self.ng_call_id,
                "port_a": self.prepared.port_a,
                "port_b": self.prepared.port_b,
            },
        }

    # --- ControllableMedia: the notice leg faces rtpengine's port_b, i.e. the caller
    def send_rtp(self, role: str, data: bytes) -> bool:
        if role != "a" or self._notice_stats is not None:
            return False
        return self.prepared.notice.send_rtp("a", data)

    def set_forwarding(self, role: str, enabled: bool) -> None:
        if role == "a" and self._notice_stats is None:
            self.prepared.notice.set_forwarding("a", enabled)
        elif role == "b" and enabled and self.remote_b is not None:
            # The callee's media reaches the caller (bridged, or its early media): through
            # rtpengine alone. Nothing plays from the notice leg any more: its ports go back.
            self._release_notice()

    def set_tap(self, role: str, tap: PacketTap | None) -> None:
        if role == "a" and self._notice_stats is None:
            self.prepared.notice.set_tap("a", tap)

    def set_filter(
        self,
        role: str,
        keep: Callable[[bytes, float], bool] | None,
        *,
        payload_type: int | None = None,
    ) -> None:
        # The agents' media goes through rtpengine, not us: their DTMF codes are not seen.
        return

    # --- rtpengine
    def _sdp_for(self, remote: Address) -> bytes:
        body, _ = anchor_sdp(self.prepared.offer, remote[0], remote[1])
        return body

    def _serial(self, step: Callable[[], Awaitable[Any]], what: str) -> asyncio.Task[Any]:
        """Run `step` after every ng step of this call sent before it (each in turn)."""
        previous = self._updates

        async def run() -> Any:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            return await step()

        task = self.owner.spawn(run(), f"{what} {self.ng_call_id}")
        self._updates = task
        return task

    def _update(self, *, offer: bool) -> None:
        self._serial(lambda: self._negotiate(offer=offer), "update")

    async def _negotiate(self, *, offer: bool) -> None:
        client = self.owner.client
        base = {"call-id": self.ng_call_id, "from-tag": TAG_A, "flags": _FLAGS, **_COMMON}
        if offer and self.remote_a is not None:
            await client.request({**base, "command": "offer", "sdp": self._sdp_for(self.remote_a)})
        remote_b = self.remote_b or self.prepared.notice_address
        reply = await client.request(
            {**base, "command": "answer", "to-tag": TAG_B, "sdp": self._sdp_for(remote_b)}
        )
        port = _audio_port(reply.get("sdp"))
        if port is not None and port != self.prepared.port_a:
            log.error(
                "rtpengine.port_changed", call_id=self.call_id, was=self.prepared.port_a, now=port
            )

    def start_recording(self) -> None:
        if self.recording or self.closed:
            return
        self.recording = True
        command = {"command": "start recording", "call-id": self.ng_call_id}
        self._serial(lambda: self.owner.client.request(command), "start")

    async def stop_recording(self) -> list[Path]:
        """Mid-call: rtpengine closes the call's pcap; its files, once complete."""
        self.recording = False
        command = {"command": "stop recording", "call-id": self.ng_call_id}

        async def step() -> list[Path]:
            await self.owner.client.request(command)
            # Listed here, in turn: a later `start recording` makes its own file after this.
            return self.owner.pcaps_of(self.ng_call_id)

        paths = await self._serial(step, "stop")
        return list(paths) if paths is not None else []

    async def _delete(self) -> None:
        command = {
            "command": "delete",
            "call-id": self.ng_call_id,
            "from-tag": TAG_A,
            "delete delay": 0,  # at once: the pcap is complete only then
        }
        try:
            reply = await self._serial(lambda: self.owner.client.request(command), "delete")
        finally:
            if not self.deleted.done():
                self.deleted.set_result(None)
        if isinstance(reply, dict):
            log.info("rtpengine.call_deleted", call_id=self.call_id, **delete_summary(reply))


def _audio_port(sdp: Any) -> int | None:
    if not isinstance(sdp, bytes):
        return None
    try:
        _, endpoint = anchor_sdp(sdp, "0.0.0.0", 0)
    except RemoteProtocolError:
        return None
    return endpoint.rtp[1] if endpoint.rtp is not None else None


def _audio_address(sdp: Any) -> Address | None:
    if not isinstance(sdp, bytes):
        return None
    try:
        _, endpoint = anchor_sdp(sdp, "0.0.0.0", 0)
    except RemoteProtocolError:
        return None
    return endpoint.rtp


# ---------------------------------------------------------------------------- the service's part

RelayFactory = Callable[[str, str], Any]  # the in-process anchor factory (service.RelayAnchor)


class RtpengineMedia:
    """One per service: the ng client, the INVITEs being prepared, the pcap conversions."""

    def __init__(
        self,
        client: NgClient,
        *,
        media_address: str,
        spool: Path,
        relay_factory: RelayFactory,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.media_address = media_address
        self.spool = spool
        self.relay_factory = relay_factory
        self.loop = loop
        self._current: PreparedCall | None = None
        # SIP Call-ID of an INVITE being prepared -> its call's requests that came meanwhile.
        self._held: dict[str, list[Callable[[], None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters = {"calls": 0, "fallbacks": 0, "recordings": 0, "ng_errors": 0}

    def spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        async def guarded() -> Any:
            try:
                return await coro
            except NgError as exc:
                self.counters["ng_errors"] += 1
                log.error("rtpengine.ng_failed", what=what.split(" ")[0], error=str(exc))
            except Exception as exc:
                log.exception("rtpengine.task_failed", what=what.split(" ")[0], error=str(exc))
            return None

        task = self.loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def check(self) -> bool:
        """At start: is rtpengine there? Said in the log either way; calls are taken regardless
        (while it does not answer, each new call costs about a second and is relayed)."""
        try:
            await self.client.request({"command": "ping"})
        except NgError as exc:
            log.error(
                "rtpengine.unreachable",
                address=f"{self.client.address[0]}:{self.client.address[1]}",
                error=str(exc),
            )
            return False
        spool = self.spool / "pcaps"
        log.info("rtpengine.ready", spool=str(spool), spool_present=spool.is_dir())
        left = sorted(spool.glob("*.pcap")) if spool.is_dir() else []
        if left:
            # A previous run was killed mid-call: these recordings were never read back.
            log.error("rtpengine.unconverted_pcaps", count=len(left), first=left[0].name)
        return True

    # --- new INVITEs
    def route(
        self, event: TransactionEvent, side: Any, b2bua: Any, deliver: Callable[[], None]
    ) -> bool:
        """The service's SIP events go through here first. True: taken (a new INVITE being
        prepared, or a request of a call whose INVITE is: a CANCEL must not overtake it);
        False: deliver it now."""
        if isinstance(event, RequestReceived):
            waiting = self._held.get(event.request.call_id)
            if waiting is not None:
                waiting.append(deliver)
                return True
        if not self.wants(event, side, b2bua):
            return False
        self.prepare(side.name, event, deliver)
        return True

    def wants(self, event: TransactionEvent, side: Any, b2bua: Any) -> bool:
        """A new INVITE with an SDP offer from an allowed source while calls are taken: rtpengine
        is asked before the B2BUA sees it (anything the B2BUA refuses costs rtpengine nothing)."""
        if not isinstance(event, RequestReceived) or event.key is None:
            return False
        request = event.request
        if request.method != "INVITE" or request.to.tag:
            return False
        if not is_sdp(request.headers.get("Content-Type"), request.body):
            return False
        return bool(side.allows(event.source[0])) and b2bua is not None and b2bua.accepting

    def prepare(self, side: str, event: TransactionEvent, deliver: Callable[[], None]) -> None:
        """Ask rtpengine for the call, then `deliver` the INVITE to the B2BUA (whose media
        factory then takes the prepared call); on any failure the call is relayed as before."""
        assert isinstance(event, RequestReceived)
        offer = event.request.body
        sip_call_id = event.request.call_id
        held = self._held.setdefault(sip_call_id, [])

        async def run() -> None:
            prepared: PreparedCall | None = None
            try:
                prepared = await self._prepare(side, offer)
            except (NgError, RuntimeError, ValueError, OSError) as exc:
                self.counters["fallbacks"] += 1
                log.error("rtpengine.fallback", side=side, reason=str(exc) or type(exc).__name__)
            self._current = prepared
            try:
                deliver()
            finally:
                self._current = None
                self._held.pop(sip_call_id, None)
                for later in held:  # in arrival order, after the INVITE
                    later()
                if prepared is not None and not prepared.taken:
                    # Refused by the B2BUA (403, 503...): rtpengine's call goes too.
                    prepared.notice.close()
                    self.spawn(self._forget(prepared.ng_call_id), f"delete {prepared.ng_call_id}")

        self.spawn(run(), "prepare")

    async def _forget(self, ng_call_id: str) -> None:
        command = {"command": "delete", "call-id": ng_call_id, "from-tag": TAG_A}
        await self.client.request({**command, "delete delay": 0})

    async def _prepare(self, side: str, offer: bytes) -> PreparedCall | None:
        try:
            _, caller = anchor_sdp(offer, "0.0.0.0", 0)
            if b"RTP/SAVP" in offer:
                raise ValueError("SRTP offer")
        except RemoteProtocolError:
            return None  # the B2BUA answers 488 itself
        notice = self.relay_factory("rtpengine-notice", side)
        ng_call_id = new_cookie()
        try:
            notice_address = (self.media_address, notice.local_port("a"))
            base = {"call-id": ng_call_id, "from-tag": TAG_A, "flags": _FLAGS, **_COMMON}
            offered = await self.client.request({**base, "command": "offer", "sdp": offer})
            # Until the PBX answers, rtpengine's callee side is our notice leg.
            notice_answer, _ = anchor_sdp(offer, *notice_address)
            answered = await self.client.request(
                {**base, "command": "answer", "to-tag": TAG_B, "sdp": notice_answer}
            )
            side_b = _audio_address(offered.get("sdp"))
            side_a = _audio_address(answered.get("sdp"))
            if side_a is None or side_b is None:
                raise ValueError("rtpengine's SDP has no audio port")
            if side_a[0] != self.media_address or side_b[0] != self.media_address:
                raise ValueError(
                    f"rtpengine advertises {side_a[0]}, not media.address {self.media_address}"
                )
        except BaseException:
            notice.close()
            # Whatever rtpengine set up for it goes (an unknown call-id is only a warning).
            self.spawn(self._forget(ng_call_id), f"delete {ng_call_id}")
            raise
        # Our notice leg sends to, and latches on, rtpengine's port facing the callee.
        notice.set_remote("a", side_b, (side_b[0], side_b[1] + 1))
        return PreparedCall(
            ng_call_id=ng_call_id,
            offer=offer,
            notice=notice,
            address=side_a[0],
            port_a=side_a[1],
            port_b=side_b[1],
            remote_a=caller.rtp,
            notice_address=notice_address,
        )

    def factory(self, call_id: str, caller_side: str) -> Any:
        """The B2BUA's media factory: the prepared call, else the in-process relay."""
        prepared = self._current
        if prepared is None or prepared.taken:
            return self.relay_factory(call_id, caller_side)
        prepared.taken = True
        self.counters["calls"] += 1
        log.info(
            "rtpengine.call",
            call_id=call_id,
            ng_call_id=prepared.ng_call_id,
            port_a=prepared.port_a,
            port_b=prepared.port_b,
        )
        return RtpengineAnchor(self, prepared, call_id)

    # --- recording
    def wrap_recording(self, start: Callable[[Any, Any, float], Any]) -> Callable[..., Any]:
        """The controller's recording factory: rtpengine's calls are recorded from its pcap."""

        def recording_factory(call: Any, state: Any, now: float) -> Any:
            anchor = call.media
            if not isinstance(anchor, RtpengineAnchor):
                return start(call, state, now)
            if getattr(state, "consent_role", "a") != "a":
                # C2 with rtpengine: the callee's notice cannot be played into its media.
                log.error("recording.unsupported", call_id=call.id, reason="callee notice")
                return None
            active = start(call, state, now)
            if active is None:
                return None
            anchor.start_recording()
            self.counters["recordings"] += 1
            return PcapRecording(self, anchor, active)

        return recording_factory

    def pcaps_of(self, ng_call_id: str) -> list[Path]:
        return sorted((self.spool / "pcaps").glob(f"{ng_call_id}-*.pcap"))

    def remove_spool_files(self, pcaps: Iterable[Path]) -> None:
        """A converted pcap and its metadata file (`metadata/rtpengine-meta-NAME.txt`)."""
        for pcap in pcaps:
            for path in [pcap, *self.spool.glob(f"metadata/*{pcap.stem}*")]:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.error("rtpengine.spool_unremovable", path=str(path), error=exc.strerror)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Let deletes and pcap conversions finish (the writer is closed after this)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        self.client.close()


@dataclass(slots=True)
class PcapRecording:
    """The controller's handle on a recording rtpengine captures: pause/resume are noted
    with their time and applied when the pcap is replayed; stop waits for rtpengine's
    `delete`, then replays and finalizes through the ordinary recording path."""

    owner: RtpengineMedia
    anchor: RtpengineAnchor
    active: Any  # recording_glue.ActiveRecording
    marks: list[tuple[float, str]] = field(default_factory=list)
    stopped: bool = False

    def pause(self) -> None:
        self.marks.append((time.monotonic(), "pause"))

    def resume(self) -> None:
        self.marks.append((time.monotonic(), "resume"))

    def stop(self, now: float, *, discard: bool = False) -> None:
        if self.stopped:
            return
        self.stopped = True
        end = time.monotonic()
        self.owner.spawn(self._finish(end, discard), f"convert {self.anchor.ng_call_id}")

    async def _finish(self, end: float, discard: bool) -> None:
        anchor, owner = self.anchor, self.owner
        if anchor.closed:  # the call is over: rtpengine's delete closes the pcap
            await asyncio.shield(anchor.deleted)
            paths = owner.pcaps_of(anchor.ng_call_id)
        else:  # stopped mid-call (control socket): the call goes on, unrecorded
            paths = await anchor.stop_recording()
        parts: list[tuple[str, bytes, float]] = []
        offset = time.monotonic() - time.time()  # pcap times are the wall clock
        if not discard:  # a refused recording is destroyed: nothing to read back
            loop = owner.loop
            packets: list[CapturedPacket] = []
            for path in paths:
                data = await loop.run_in_executor(None, path.read_bytes)
                packets.extend(await loop.run_in_executor(None, read_pcap, data))
            prepared = anchor.prepared
            parts = [
                part
                for part in split_parties(
                    packets,
                    port_a=prepared.port_a,
                    port_b=prepared.port_b,
                    not_from=(prepared.notice_address,),
                )
                if part[2] + offset <= end
            ]
            await self._replay(parts, offset)
        recording = self.active.recording
        self.active.stopped = True
        self.active.discard = discard
        future = recording.stop(end)
        future.add_done_callback(lambda done: self.active.owner.finished(self.active.call, done))
        log.info(
            "rtpengine.recording_converted",
            call_id=anchor.call_id,
            pcaps=len(paths),
            packets_a=sum(1 for role, _, _ in parts if role == "a"),
            packets_b=sum(1 for role, _, _ in parts if role == "b"),
            discarded=discard,
        )
        owner.remove_spool_files(paths)

    async def _writer_caught_up(self) -> None:
        """Back-pressure: many calls ending at once must not fill the writer's pipe (past its
        limit it drops audio, live calls' included); wait while it holds a backlog."""
        client = getattr(self.active.owner, "client", None)
        stats = getattr(client, "stats", None)
        limit = getattr(client, "max_buffer_bytes", 0) // 4
        for _ in range(int(REPLAY_BACKLOG_WAIT / 0.05)):
            if stats is None or stats().get("buffered_bytes", 0) <= limit:
                return
            await asyncio.sleep(0.05)

    async def _replay(self, parts: list[tuple[str, bytes, float]], offset: float) -> None:
        legs = {"a": self.anchor.legs[0], "b": self.anchor.legs[1]}
        recording = self.active.recording
        marks = sorted(self.marks)
        mark = 0
        for index, (role, data, captured) in enumerate(parts):
            arrival = captured + offset
            while mark < len(marks) and marks[mark][0] <= arrival:
                at, what = marks[mark]
                if what == "pause":
                    recording.pause(at)
                else:
                    recording.resume(at)
                mark += 1
            tap = legs[role].on_packet
            if tap is not None:
                tap(data, arrival)
            if index % REPLAY_CHUNK == REPLAY_CHUNK - 1:
                await asyncio.sleep(REPLAY_PAUSE)  # the writer's batch goes out meanwhile
                await self._writer_caught_up()
        for at, what in marks[mark:]:
            if what == "pause":
                recording.pause(at)
            else:
                recording.resume(at)
