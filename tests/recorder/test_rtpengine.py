"""rtpengine as the media plane (recorder.call.rtpengine, recorder.media.ng and .pcap): pcap
reading, the ng client, the call prepared before the B2BUA sees it, the anchor's
renegotiations and the pcap replay."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from recorder.call.rtpengine import PcapRecording, RtpengineAnchor, RtpengineMedia
from recorder.media.ng import NgClient, NgError, NgTimeout, bdecode, bencode, delete_summary
from recorder.media.pcap import CapturedPacket, read_pcap, split_parties
from sip.message import parse_message
from sip.transaction import RequestReceived

# ---------------------------------------------------------------------------- pcap


def ipv4_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes, proto: int = 17) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        proto,
        0,
        bytes(int(x) for x in src[0].split(".")),
        bytes(int(x) for x in dst[0].split(".")),
    )
    return header + udp


def pcap_file(
    frames: list[tuple[float, bytes]], linktype: int = 101, ethernet: bool = False
) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for when, frame in frames:
        if ethernet:
            frame = bytes(12) + b"\x08\x00" + frame
        seconds = int(when)
        out += struct.pack("<IIII", seconds, round((when - seconds) * 1e6), len(frame), len(frame))
        out += frame
    return out


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + bytes(160)


CALLER = ("127.0.0.1", 6000)
PBX = ("127.0.0.1", 7000)
NOTICE = ("127.0.0.1", 8000)
PORT_A, PORT_B = 30010, 30000


def test_read_pcap_raw_and_ethernet() -> None:
    frames = [
        (100.25, ipv4_udp(CALLER, ("127.0.0.1", PORT_A), rtp(1))),
        (100.5, ipv4_udp(PBX, ("127.0.0.1", PORT_B), rtp(2))),
        (100.75, ipv4_udp(PBX, ("127.0.0.1", PORT_B), b"tcp?", proto=6)),  # not UDP: skipped
    ]
    for data in (pcap_file(frames), pcap_file(frames, linktype=1, ethernet=True)):
        packets = read_pcap(data)
        assert [(p.source, p.destination[1], p.payload[:2]) for p in packets] == [
            (CALLER, PORT_A, b"\x80\x00"),
            (PBX, PORT_B, b"\x80\x00"),
        ]
        assert packets[0].time == pytest.approx(100.25)
        assert packets[1].payload == rtp(2)
    # A record cut short (a file still being written) ends the list.
    assert len(read_pcap(pcap_file(frames)[:-10])) == 2
    with pytest.raises(ValueError):
        read_pcap(b"not a pcap at all, not at all")
    with pytest.raises(ValueError, match="link type"):
        read_pcap(pcap_file(frames, linktype=147))


def test_split_parties_by_rtpengines_receiving_port() -> None:
    packets = [
        CapturedPacket(3.0, PBX, ("127.0.0.1", PORT_B), rtp(3)),
        CapturedPacket(1.0, CALLER, ("127.0.0.1", PORT_A), rtp(1)),
        CapturedPacket(2.0, NOTICE, ("127.0.0.1", PORT_B), rtp(2)),  # our ringback: not the PBX
        CapturedPacket(2.5, CALLER, ("127.0.0.1", PORT_A + 1), b"\x81" * 20),  # RTCP
        CapturedPacket(2.6, CALLER, ("127.0.0.1", PORT_A), b"short"),
    ]
    parts = split_parties(packets, port_a=PORT_A, port_b=PORT_B, not_from=[NOTICE])
    assert [(role, when) for role, _, when in parts] == [("a", 1.0), ("b", 3.0)]


# ---------------------------------------------------------------------------- a fake rtpengine

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class FakeRtpengine(asyncio.DatagramProtocol):
    """Answers ng requests with `handler` (None: stays silent); keeps what it got."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, body = data.partition(b" ")
        request = bdecode(body)
        self.requests.append(request)
        reply = self.handler(request)
        if reply is not None and self.transport is not None:
            self.transport.sendto(cookie + b" " + bencode(reply), addr)

    def commands(self) -> list[str]:
        return [r["command"].decode() for r in self.requests]


def sdp(port: int, address: str = "127.0.0.1") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


def rtpengine_like(address: str = "127.0.0.1") -> Handler:
    def handle(request: dict[str, Any]) -> dict[str, Any]:
        command = request["command"]
        if command == b"offer":
            return {"result": "ok", "sdp": sdp(PORT_B, address)}
        if command == b"answer":
            return {"result": "ok", "sdp": sdp(PORT_A, address)}
        return {"result": "ok"}

    return handle


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRtpengine, NgClient]]:
    loop = asyncio.get_running_loop()
    server = FakeRtpengine(rtpengine_like())
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    client = NgClient(transport.get_extra_info("sockname")[:2], timeout=0.1, attempts=2)
    await client.start()
    yield server, client
    client.close()
    transport.close()


async def test_client_request_reply_retry_and_errors(
    fake: tuple[FakeRtpengine, NgClient],
) -> None:
    server, client = fake
    assert (await client.request({"command": "offer", "sdp": b"x"}))["sdp"] == sdp(PORT_B)
    # The first datagram is lost: the same cookie goes again and is answered.
    dropped: list[bool] = []

    def lossy(request: dict[str, Any]) -> dict[str, Any] | None:
        if not dropped:
            dropped.append(True)
            return None
        return {"result": "pong"}

    server.handler = lossy
    assert (await client.request({"command": "ping"}))["result"] == b"pong"
    server.handler = lambda request: {"result": "error", "error-reason": "Unknown call-ID"}
    with pytest.raises(NgError, match="Unknown call-ID"):
        await client.request({"command": "delete", "call-id": "x"})
    server.handler = lambda request: None
    with pytest.raises(NgTimeout):
        await client.request({"command": "ping"})
    assert client._waiting == {}


# ---------------------------------------------------------------------------- the call


class FakeNotice:
    """Stands for the relay anchor whose leg "a" plays the notice."""

    def __init__(self, port: int = NOTICE[1]) -> None:
        self.port = port
        self.remote: dict[str, tuple[str, int] | None] = {}
        self.closed = False
        self.sent: list[bytes] = []
        self.tap: Any = None

    def local_port(self, role: str) -> int:
        return self.port if role == "a" else self.port + 2

    def set_remote(self, role: str, rtp: Any, rtcp: Any) -> None:
        self.remote[role] = rtp

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, Any]:
        return {"a": {"rtp_packets": 1}, "b": {}}

    def finish(self, done: Callable[[dict[str, Any]], None]) -> None:
        self.close()
        done(self.stats())

    def send_rtp(self, role: str, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def set_forwarding(self, role: str, enabled: bool) -> None:
        pass

    def set_tap(self, role: str, tap: Any) -> None:
        self.tap = tap

    def set_filter(self, role: str, keep: Any) -> None:
        pass


INVITE = (
    b"INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
    b"From: <sip:caller@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:100@127.0.0.1>\r\n"
    b"Call-ID: c1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.1:5061>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n"
)


def invite_event(body: bytes) -> RequestReceived:
    request = parse_message((INVITE % len(body)) + body)
    return RequestReceived(request, ("127.0.0.1", 5061), "UDP", "key-1")  # type: ignore[arg-type]


class Allow:
    name = "external"

    def allows(self, host: str) -> bool:
        return True


class Accepting:
    accepting = True


def media_for(client: NgClient, notices: list[FakeNotice], spool: Path) -> RtpengineMedia:
    def relay_factory(call_id: str, side: str) -> FakeNotice:
        notice = FakeNotice()
        notices.append(notice)
        return notice

    return RtpengineMedia(
        client,
        media_address="127.0.0.1",
        spool=spool,
        relay_factory=relay_factory,
        loop=asyncio.get_running_loop(),
    )


async def settle(media: RtpengineMedia) -> None:
    for _ in range(20):
        if not media._tasks:
            return
        await asyncio.wait(set(media._tasks), timeout=1)


async def test_call_prepared_then_bridged_recorded_and_deleted(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path
) -> None:
    server, client = fake
    notices: list[FakeNotice] = []
    media = media_for(client, notices, tmp_path)
    event = invite_event(sdp(6000))
    assert media.wants(event, Allow(), Accepting())
    anchors: list[Any] = []
    media.prepare("external", event, lambda: anchors.append(media.factory("call-1", "external")))
    await settle(media)
    assert server.commands() == ["offer", "answer"]
    offer, answer = server.requests
    assert offer["sdp"] == sdp(6000) and offer["from-tag"] == b"a"
    assert b"port latching" in offer["flags"]
    # The placeholder answer: our notice leg's socket stands for the callee.
    assert b"m=audio 8000 " in answer["sdp"] and answer["to-tag"] == b"b"
    anchor = anchors[0]
    assert isinstance(anchor, RtpengineAnchor)
    assert anchor.local_port("a") == PORT_A and anchor.local_port("b") == PORT_B
    assert notices[0].remote["a"] == ("127.0.0.1", PORT_B)  # the notice goes to rtpengine
    assert anchor.send_rtp("a", b"x") and not anchor.send_rtp("b", b"x")
    # The caller's own address changes nothing; the PBX's answer is a new ng answer.
    anchor.set_remote("a", ("127.0.0.1", 6000), None)
    anchor.set_remote("b", PBX, None)
    await settle(media)
    assert server.commands()[2:] == ["answer"]
    assert b"c=IN IP4 127.0.0.1" in server.requests[-1]["sdp"]
    assert b"m=audio 7000 " in server.requests[-1]["sdp"]
    # Bridged: the notice leg's ports go back; its counters stay in the stats.
    assert not notices[0].closed
    anchor.set_forwarding("b", True)
    assert notices[0].closed and not anchor.send_rtp("a", b"x")
    assert anchor.stats()["notice"] == {"rtp_packets": 1}
    # A re-INVITE moving the caller: offer and answer again, in order.
    anchor.set_remote("a", ("127.0.0.1", 6100), None)
    anchor.start_recording()
    await settle(media)
    assert server.commands()[3:] == ["offer", "answer", "start recording"]
    assert b"m=audio 6100 " in server.requests[3]["sdp"]
    stats = anchor.stats()
    assert stats["rtpengine"]["port_a"] == PORT_A and stats["notice"] == {"rtp_packets": 1}
    anchor.close()
    anchor.close()
    await settle(media)
    assert server.commands()[6:] == ["delete"]
    assert server.requests[-1]["delete delay"] == 0
    assert notices[0].closed and anchor.deleted.done()


async def test_invite_refused_by_the_b2bua_deletes_the_prepared_call(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path
) -> None:
    server, client = fake
    notices: list[FakeNotice] = []
    media = media_for(client, notices, tmp_path)
    media.prepare("external", invite_event(sdp(6000)), lambda: None)  # 403: no factory call
    await settle(media)
    assert server.commands() == ["offer", "answer", "delete"]
    assert notices[0].closed


@pytest.mark.parametrize("trouble", ["silent", "error", "address"])
async def test_calls_rtpengine_cannot_take_are_relayed(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path, trouble: str
) -> None:
    server, client = fake
    if trouble == "silent":
        server.handler = lambda request: None
    elif trouble == "error":
        server.handler = lambda request: {"result": "error", "error-reason": "Ran out of ports"}
    else:
        server.handler = rtpengine_like("192.0.2.7")  # not media.address
    notices: list[FakeNotice] = []
    media = media_for(client, notices, tmp_path)
    got: list[Any] = []
    media.prepare("external", invite_event(sdp(6000)), lambda: got.append(media.factory("c", "x")))
    await settle(media)
    assert len(got) == 1 and isinstance(got[0], FakeNotice)  # the in-process relay
    assert media.counters["fallbacks"] == 1
    assert notices[0].closed  # the notice leg made for rtpengine was given back
    assert server.commands()[-1] == "delete"  # and what rtpengine set up is deleted


def test_what_is_prepared() -> None:
    media = RtpengineMedia.__new__(RtpengineMedia)
    assert media.wants(invite_event(sdp(6000)), Allow(), Accepting())

    class Refuse:
        def allows(self, host: str) -> bool:
            return False

    class Draining:
        accepting = False

    assert not media.wants(invite_event(sdp(6000)), Refuse(), Accepting())
    assert not media.wants(invite_event(sdp(6000)), Allow(), Draining())
    assert not media.wants(invite_event(b""), Allow(), Accepting())  # late offer: relayed


# ---------------------------------------------------------------------------- replay


class FakeCallRecording:
    def __init__(self) -> None:
        self.log: list[tuple[str, float]] = []
        self.stopped_at: float | None = None

    def pause(self, at: float) -> None:
        self.log.append(("pause", at))

    def resume(self, at: float) -> None:
        self.log.append(("resume", at))

    def stop(self, at: float) -> asyncio.Future[Any]:
        self.stopped_at = at
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result("result")
        return future


class FakeActive:
    def __init__(self) -> None:
        self.recording = FakeCallRecording()
        self.call = object()
        self.owner = self
        self.stopped = False
        self.discard = False
        self.finished_with: list[Any] = []

    def finished(self, call: Any, done: asyncio.Future[Any]) -> None:
        self.finished_with.append((call, done.result()))


@pytest.mark.parametrize("when", ["call ended", "mid-call"])
async def test_stop_replays_the_pcap_with_pauses_then_removes_it(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path, when: str
) -> None:
    server, client = fake
    media = media_for(client, [], tmp_path)
    got: list[Any] = []
    media.prepare("external", invite_event(sdp(6000)), lambda: got.append(media.factory("c", "x")))
    await settle(media)
    anchor: RtpengineAnchor = got[0]
    ng_id = anchor.ng_call_id
    (tmp_path / "pcaps").mkdir()
    (tmp_path / "metadata").mkdir()
    now = time.time()
    frames = [
        (now - 3.0, ipv4_udp(CALLER, ("127.0.0.1", PORT_A), rtp(1))),
        (now - 2.0, ipv4_udp(PBX, ("127.0.0.1", PORT_B), rtp(2))),
        (now - 1.0, ipv4_udp(NOTICE, ("127.0.0.1", PORT_B), rtp(3))),
    ]
    (tmp_path / "pcaps" / f"{ng_id}-00ff.pcap").write_bytes(pcap_file(frames))
    (tmp_path / "metadata" / f"rtpengine-meta-{ng_id}-00ff.txt").write_text("meta")
    (tmp_path / "pcaps" / "othercall-00ff.pcap").write_bytes(b"")
    seen: dict[str, list[float]] = {"a": [], "b": []}
    anchor.legs[0].on_packet = lambda data, arrival: seen["a"].append(arrival)
    anchor.legs[1].on_packet = lambda data, arrival: seen["b"].append(arrival)
    active = FakeActive()
    handle = PcapRecording(media, anchor, active)
    mono = time.monotonic()
    handle.marks.append((mono - 2.5, "pause"))  # as pause() notes them, in the monotonic clock
    handle.marks.append((mono - 1.5, "resume"))
    if when == "call ended":
        anchor.close()  # the B2BUA closes the media before the controller stops the recording
    handle.stop(0.0, discard=False)
    handle.stop(0.0)  # once
    await settle(media)
    if when == "call ended":
        assert server.commands()[2:] == ["delete"]
    else:  # rtpengine stops writing; the call and its media go on
        assert server.commands()[2:] == ["stop recording"] and not anchor.closed
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1  # our own notice packet is left out
    assert seen["a"][0] == pytest.approx(mono - 3.0, abs=0.2)
    assert [what for what, _ in active.recording.log] == ["pause", "resume"]
    assert active.recording.stopped_at is not None and active.stopped
    assert active.finished_with == [(active.call, "result")]
    assert [p.name for p in (tmp_path / "pcaps").iterdir()] == ["othercall-00ff.pcap"]
    assert list((tmp_path / "metadata").iterdir()) == []


async def test_start_check_says_whether_rtpengine_answers(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path
) -> None:
    server, client = fake
    media = media_for(client, [], tmp_path)
    assert await media.check()
    server.handler = lambda request: None
    assert not await media.check()


async def test_a_refused_recording_is_not_read_back(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path
) -> None:
    _server, client = fake
    media = media_for(client, [], tmp_path)
    got: list[Any] = []
    media.prepare("external", invite_event(sdp(6000)), lambda: got.append(media.factory("c", "x")))
    await settle(media)
    anchor: RtpengineAnchor = got[0]
    (tmp_path / "pcaps").mkdir()
    frames = [(time.time(), ipv4_udp(CALLER, ("127.0.0.1", PORT_A), rtp(1)))]
    (tmp_path / "pcaps" / f"{anchor.ng_call_id}-01.pcap").write_bytes(pcap_file(frames))
    seen: list[float] = []
    anchor.legs[0].on_packet = lambda data, arrival: seen.append(arrival)
    active = FakeActive()
    PcapRecording(media, anchor, active).stop(0.0, discard=True)  # C5: the agent's refusal
    await settle(media)
    assert seen == [] and active.discard and active.stopped
    assert list((tmp_path / "pcaps").iterdir()) == []  # the refused audio is gone


def test_delete_summary_reads_rtpengines_counters() -> None:
    def stream(flags: list[bytes], packets: int) -> dict[str, Any]:
        return {"flags": flags, "stats": {"packets": packets, "bytes": 0, "errors": 0}}

    reply = {
        "result": b"ok",
        "totals": {"RTP": {"packets": 30, "errors": 2}},
        "tags": {
            "a": {"medias": [{"streams": [stream([b"RTP", b"kernelized"], 10), stream([], 3)]}]},
            "b": {
                "medias": [{"streams": [stream([b"RTP", b"kernelized", b"no kernel support"], 20)]}]
            },
            "": "odd",
        },
    }
    assert delete_summary(reply) == {"packets_a": 10, "packets_b": 20, "errors": 2, "kernel": True}
    userspace = {
        "tags": {
            "a": {
                "medias": [{"streams": [stream([b"RTP", b"kernelized", b"no kernel support"], 5)]}]
            }
        }
    }
    assert delete_summary(userspace)["kernel"] is False
    assert delete_summary({"result": b"ok"}) == {
        "packets_a": 0,
        "packets_b": 0,
        "errors": 0,
        "kernel": False,
    }


async def test_a_cancel_does_not_overtake_its_invite(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path
) -> None:
    _server, client = fake
    media = media_for(client, [], tmp_path)
    order: list[str] = []
    invite = invite_event(sdp(6000))
    cancel = RequestReceived(
        parse_message(
            b"CANCEL sip:100@127.0.0.1:5060 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
            b"From: <sip:caller@127.0.0.1>;tag=f1\r\nTo: <sip:100@127.0.0.1>\r\n"
            b"Call-ID: c1@127.0.0.1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        ),  # type: ignore[arg-type]
        ("127.0.0.1", 5061),
        "UDP",
        "key-2",
    )

    def deliver_invite() -> None:
        order.append("INVITE")
        media.factory("call-1", "external")

    assert media.route(invite, Allow(), Accepting(), deliver_invite)
    assert media.route(cancel, Allow(), Accepting(), lambda: order.append("CANCEL"))
    await settle(media)
    assert order == ["INVITE", "CANCEL"]
    # Once the INVITE is in, the call's requests go straight through.
    assert not media.route(cancel, Allow(), Accepting(), lambda: order.append("again"))


async def test_srtp_offers_are_relayed_in_process(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path
) -> None:
    server, client = fake
    notices: list[FakeNotice] = []
    media = media_for(client, notices, tmp_path)
    offer = sdp(6000).replace(b"RTP/AVP", b"RTP/SAVP") + (
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    )
    got: list[Any] = []
    media.prepare("external", invite_event(offer), lambda: got.append(media.factory("c", "x")))
    await settle(media)
    assert server.requests == []  # rtpengine is not asked at all
    assert isinstance(got[0], FakeNotice) and media.counters["fallbacks"] == 1


async def test_replay_waits_while_the_writers_pipe_is_backlogged(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recorder.call.rtpengine as module

    monkeypatch.setattr(module, "REPLAY_CHUNK", 2)
    monkeypatch.setattr(module, "REPLAY_PAUSE", 0.0)
    _server, client = fake
    media = media_for(client, [], tmp_path)
    got: list[Any] = []
    media.prepare("external", invite_event(sdp(6000)), lambda: got.append(media.factory("c", "x")))
    await settle(media)
    anchor: RtpengineAnchor = got[0]
    backlog = [40 << 20, 20 << 20, 0, 0, 0]  # bytes queued, as the writer client says

    class Writer:
        max_buffer_bytes = 32 << 20

        def stats(self) -> dict[str, int]:
            return {"buffered_bytes": backlog.pop(0) if backlog else 0}

    active = FakeActive()
    active.client = Writer()  # type: ignore[attr-defined]
    fed: list[int] = []
    anchor.legs[0].on_packet = lambda data, arrival: fed.append(len(backlog))
    parts = [("a", rtp(n), float(n)) for n in range(5)]
    await PcapRecording(media, anchor, active)._replay(parts, 0.0)
    # Two packets, then the wait until the backlog is under a quarter of the limit.
    assert fed == [5, 5, 2, 2, 1]


async def test_start_check_reports_pcaps_a_killed_run_left(
    fake: tuple[FakeRtpengine, NgClient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _server, client = fake
    (tmp_path / "pcaps").mkdir()
    (tmp_path / "pcaps" / "0123abcd-ff.pcap").write_bytes(b"")
    assert await media_for(client, [], tmp_path).check()
    assert "rtpengine.unconverted_pcaps" in capsys.readouterr().out
