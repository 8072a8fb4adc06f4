"""Where the calls' media run: `MediaPlane` picks, from `[media] workers`, the in-process
relay (0: the service's own loop relays every packet) or media worker processes
(`recorder.media.workers`), and hands the B2BUA, the controller and the recorder one
interface for either (`RelayAnchor` or `WorkerSession`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from recorder.call.rtpengine import RtpengineAnchor, RtpengineMedia
from recorder.call.sdp_anchor import CryptoRewrite
from recorder.config import MediaConfig, SipSide
from recorder.media.ng import NgClient
from recorder.media.ports import PortPool
from recorder.media.relay import MediaLeg, MediaSession
from recorder.media.sdes import SdesNegotiator
from recorder.media.workers import MediaWorkers, WorkerSession
from recorder.ops import logs
from recorder.ops.logs import get_logger
from recorder.recording.tap import TappableLeg
from sip.transaction import TransactionEvent

Address = tuple[str, int]
log = get_logger("recorder.media")


class RelayAnchor:
    """A MediaSession seen through the B2BUA's `MediaAnchor` protocol."""

    def __init__(self, session: MediaSession, srtp: SdesNegotiator | None = None) -> None:
        self.session = session
        self.srtp = srtp

    def crypto(self, from_role: str, to_role: str | None) -> CryptoRewrite | None:
        return self.srtp.rewriter(from_role, to_role) if self.srtp is not None else None

    def local_port(self, role: str) -> int:
        leg = self.session.leg_a if role == "a" else self.session.leg_b
        return leg.local_rtp_port

    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None:
        leg = self.session.leg_a if role == "a" else self.session.leg_b
        try:
            leg.set_remote(rtp, rtcp)
        except ValueError as exc:
            # A hostname or a foreign address family in c=: wait for the party's first packet
            # and latch onto it rather than fail the call.
            log.warning("media.unusable_remote", leg=role, error=str(exc))
            leg.set_remote(None, None)

    def close(self) -> None:
        self.session.close()

    def _leg(self, role: str) -> MediaLeg:
        return self.session.leg_a if role == "a" else self.session.leg_b

    def send_rtp(self, role: str, data: bytes) -> bool:
        return self._leg(role).send_rtp(data)

    def set_forwarding(self, role: str, enabled: bool) -> None:
        self._leg(role).forward_enabled = enabled

    def set_tap(self, role: str, tap: Callable[[bytes, float], None] | None) -> None:
        self._leg(role).on_packet = tap

    def set_filter(
        self,
        role: str,
        keep: Callable[[bytes, float], bool] | None,
        *,
        payload_type: int | None = None,
    ) -> None:
        del payload_type  # the filter sees every packet here, and skips the others itself
        self._leg(role).forward_filter = keep

    def stats(self) -> dict[str, Any]:
        return dict(self.session.stats())

    def finish(self, done: Callable[[dict[str, Any]], None]) -> None:
        stats = self.stats()
        self.close()
        done(stats)


class _Call(Protocol):
    @property
    def media(self) -> object: ...


class MediaPlane:
    """The factory of the calls' media, and the way back from a call to its legs.

    `[media] engine = "rtpengine"` (issue 19): rtpengine forwards each call it can take
    (`recorder.call.rtpengine`); the notice leg, and the calls it cannot take, are ours
    (in-process or on the workers)."""

    def __init__(
        self,
        pool: PortPool,
        media: MediaConfig,
        *,
        srtp_sides: Callable[[str], dict[str, tuple[str, str]]],
        on_lost: Callable[[str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.pool = pool
        self.config = media
        self.address = media.address
        self.loop = loop
        self._srtp_sides = srtp_sides
        self._srtp_mixed = media.srtp_mixed
        self.workers: MediaWorkers | None = None
        self.rtpengine: RtpengineMedia | None = None
        if media.workers > 0:
            self.workers = MediaWorkers(
                media.workers,
                pool,
                media.address,
                on_lost=on_lost,
                loop=loop,
                log_settings=logs.settings,
            )

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Around the handling of one SIP event or timer: a tap it attaches takes the packets
        a media worker received from the moment the event came in, as the in-process relay,
        which reads them only after the event's callback, would give them."""
        if self.workers is None:
            yield
            return
        self.workers.event_time = time.monotonic()
        try:
            yield
        finally:
            self.workers.event_time = None

    async def start(self) -> None:
        if self.workers is not None:
            await self.workers.start()
        if self.config.engine == "rtpengine":
            client = NgClient(self.config.rtpengine)
            await client.start()
            self.rtpengine = RtpengineMedia(
                client,
                media_address=self.address,
                spool=self.config.rtpengine_spool,
                relay_factory=self._ours,
                loop=self.loop,
            )
            await self.rtpengine.check()

    async def aclose(self) -> None:
        if self.rtpengine is not None:
            await self.rtpengine.aclose()  # its last recordings go to the writer first
        if self.workers is not None:
            await self.workers.aclose()

    def route(
        self,
        event: TransactionEvent,
        side: SipSide,
        b2bua: Any,
        deliver: Callable[[TransactionEvent], None],
    ) -> bool:
        """True when rtpengine holds `event` (a new call's INVITE, or what follows it while
        rtpengine is asked): it is delivered later."""
        if self.rtpengine is None:
            return False
        return self.rtpengine.route(event, side, b2bua, lambda: deliver(event))

    def wrap_recording(self, start: Callable[[Any, Any, float], Any]) -> Callable[..., Any]:
        return start if self.rtpengine is None else self.rtpengine.wrap_recording(start)

    def factory(self, call_id: str, caller_side: str) -> Any:
        """The B2BUA's `MediaFactory`: a new call's media (RuntimeError when there is no room)."""
        if self.rtpengine is not None:
            return self.rtpengine.factory(call_id, caller_side)
        return self._ours(call_id, caller_side)

    def _ours(self, call_id: str, caller_side: str) -> RelayAnchor | WorkerSession:
        sides = self._srtp_sides(caller_side)
        if self.workers is not None:
            return self.workers.open(call_id, (sides, self._srtp_mixed))
        session = MediaSession(self.pool, self.address, self.address, loop=self.loop)
        return RelayAnchor(session, session.srtp_negotiator(sides, allow_mixed=self._srtp_mixed))

    @staticmethod
    def media_of(call: _Call) -> RelayAnchor | WorkerSession | RtpengineAnchor | None:
        media = call.media
        return media if isinstance(media, (RelayAnchor, WorkerSession, RtpengineAnchor)) else None

    @staticmethod
    def legs_of(call: _Call) -> tuple[TappableLeg, TappableLeg] | None:
        media = call.media
        if isinstance(media, RelayAnchor):
            return media.session.leg_a, media.session.leg_b
        if isinstance(media, WorkerSession):
            return media.leg_a, media.leg_b
        if isinstance(media, RtpengineAnchor):
            return media.legs
        return None

    @staticmethod
    def fence_of(call: _Call) -> Callable[[], asyncio.Future[None] | None] | None:
        """A recording's fence (`CallRecording`): only a worker's packets can be in flight."""
        media = call.media
        return media.flushed if isinstance(media, WorkerSession) else None
