"""The call path end to end: real peers (sipp, baresip) through the running `recorder serve`."""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import pytest

from . import audio, peers
from .conftest import RecorderFactory

pytestmark = pytest.mark.interop


def pcap_packets(path: Path) -> int:
    data = path.read_bytes()
    count, offset = 0, 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from("<I", data, offset + 8)[0]
        offset += 16 + incl
        count += 1
    return count


def sip_exchange(target: tuple[str, int], data: bytes, timeout: float = 3.0) -> bytes:
    """Send one datagram, return the first final (or any non-100) answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(data, target)
        while True:
            answer, _ = sock.recvfrom(65535)
            if not answer.startswith(b"SIP/2.0 100 "):
                return answer


def invite_bytes(port: int, *, call_id: str = "raw-1") -> bytes:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 9 RTP/AVP 0\r\n"
    )
    return (
        f"INVITE sip:pbx@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKraw1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15145550100@127.0.0.1>;tag=raw\r\n"
        f"To: <sip:pbx@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:raw@127.0.0.1:9>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_sipp_call_with_rtp_echo(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    ended = recorder.wait_event("call.ended")[0]
    media = ended["media"]
    sent = pcap_packets(prompt_pcap)
    # Every packet the caller sent went through leg A, reached the PBX, came back on
    # leg B (sipp -rtp_echo) and was relayed to the caller.
    assert media["a"]["rtp_packets"] == sent, media
    assert media["a"]["rtp_forwarded"] == sent, media
    assert media["b"]["rtp_packets"] == sent, media
    assert media["b"]["rtp_forwarded"] == sent, media
    assert media["a"]["dropped_wrong_source"] == 0 and media["a"]["rtp_lost"] == 0
    assert ended["reason"] == "bye from a"
    # The two legs are separate dialogs: the PBX never saw the caller's Call-ID.
    caller_call_id = re.search(r"^Call-ID: (\S+)", uac.messages(), re.M)
    assert caller_call_id is not None and caller_call_id.group(1) not in uas.messages()
    assert recorder.media_ports_in_use() == []


def test_pbx_hangs_up(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_bye", log_dir=interop_dir, calls=1, call_length_s=1.0) as pbx:
        recorder = start_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_wait_bye",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            timeout=15,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    assert recorder.wait_event("call.ended")[0]["reason"] == "bye from b"
    assert recorder.media_ports_in_use() == []


def test_cancel_before_answer_frees_everything(
    interop_dir: Path, start_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas(
        "uas_ring_forever", log_dir=interop_dir, calls=1, rtp_echo=False
    ) as pbx:
        recorder = start_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_cancel",
            recorder.external_target,
            log_dir=interop_dir,
            call_length_s=0.5,
            timeout=10,
        )
        uas = pbx.wait(5)
    uac.assert_ok()  # the caller got 200 for its CANCEL and 487 for its INVITE
    uas.assert_ok()  # the PBX leg was cancelled too
    assert "SIP/2.0 487" in uac.messages()
    assert recorder.wait_event("call.ended")[0]["reason"] == "cancelled"
    assert recorder.media_ports_in_use() == []


def test_source_not_allowed_gets_403_and_allocates_nothing(
    start_recorder: RecorderFactory,
) -> None:
    recorder = start_recorder(pbx_port=peers.free_udp_port(), external_allow=("192.0.2.0/24",))
    answer = sip_exchange(
        ("127.0.0.1", recorder.external_port), invite_bytes(recorder.external_port)
    )
    assert answer.startswith(b"SIP/2.0 403 "), answer
    assert recorder.events("call.received") == []
    assert recorder.media_ports_in_use() == []


def test_malformed_message_gets_400_and_service_goes_on(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(pbx_port=pbx.port)
        target = ("127.0.0.1", recorder.external_port)
        broken = invite_bytes(recorder.external_port).replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
        assert sip_exchange(target, broken).startswith(b"SIP/2.0 400 ")
        garbage = b"\x00\xffNOT SIP AT ALL\r\n\r\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(garbage, target)
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
    uac.assert_ok()
    assert recorder.proc.poll() is None


def test_out_of_dialog_options_keepalive(
    interop_dir: Path, start_recorder: RecorderFactory
) -> None:
    recorder = start_recorder(pbx_port=peers.free_udp_port())
    uac = peers.run_sipp_uac(
        "uac_options", recorder.external_target, log_dir=interop_dir, timeout=10
    )
    uac.assert_ok()


def test_pbx_that_never_answers_gives_408(start_recorder: RecorderFactory) -> None:
    # Nothing listens at the PBX address: timer B (64*T1) must end the call, not hang it.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        recorder = start_recorder(pbx_port=silent.getsockname()[1])
        answer = sip_exchange(
            ("127.0.0.1", recorder.external_port), invite_bytes(recorder.external_port), timeout=40
        )
    finally:
        silent.close()
    assert answer.startswith(b"SIP/2.0 408 "), answer
    assert recorder.wait_event("call.ended")[0]["reason"] == "callee did not answer"
    assert recorder.media_ports_in_use() == []


def test_100_calls_at_10_per_second_with_rtp(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    calls = 100
    base = peers.free_port_block(4 * calls + 4)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir) as pbx:
        recorder = start_recorder(pbx_port=pbx.port, media_ports=200)
        uac = peers.run_sipp_uac(
            "uac_load",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=2.0,
            calls=calls,
            rate=10,
            limit=calls,
            media_port=base,
            timeout=60,
        )
        uas = pbx.stop()
    uac.assert_ok(calls)
    assert uas.successful == calls and uas.failed == 0, uas.describe()
    ended = recorder.wait_event("call.ended", count=calls, timeout=20)
    assert all(e["media"]["a"]["rtp_packets"] > 0 for e in ended)
    assert all(e["media"]["b"]["rtp_packets"] > 0 for e in ended)
    assert recorder.media_ports_in_use() == []


def test_baresip_to_baresip_through_recorder(
    interop_dir: Path,
    prompt_wav: Path,
    prompt_padded_wav: Path,
    agent_wav: Path,
    agent_long_wav: Path,
    start_recorder: RecorderFactory,
) -> None:
    with peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee:
        recorder = start_recorder(pbx_port=callee.sip_port)
        with peers.start_baresip(
            interop_dir, user="caller", source_wav=prompt_padded_wav
        ) as caller:
            caller.dial(f"sip:callee@127.0.0.1:{recorder.external_port}")
            caller.wait_event("CALL_ESTABLISHED", timeout=5)
            callee.wait_event("CALL_ESTABLISHED", timeout=5)
            caller.wait_event("CALL_CLOSED", timeout=audio.wav_duration(prompt_padded_wav) + 5)
            callee.wait_event("CALL_CLOSED", timeout=5)
            got = callee.received_wav()
            back = caller.received_wav()
    heard = audio.peak_xcorr(prompt_wav, got)
    assert heard.peak > 0.9, heard
    assert audio.peak_xcorr(agent_wav, back).peak > 0.9
    assert audio.peak_xcorr(agent_wav, got).peak < 0.5
    ended = recorder.wait_event("call.ended")[0]
    assert ended["media"]["a"]["rtp_forwarded"] > 100 and ended["media"]["b"]["rtp_forwarded"] > 100


def test_caller_over_tcp(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    """A trunk that talks TCP (RFC 3261 §18): answers come back on its connection."""
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            timeout=20,
            extra_args=["-t", "t1"],
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    assert "SIP/2.0/TCP" in uac.messages()
    media = recorder.wait_event("call.ended")[0]["media"]
    assert media["a"]["rtp_packets"] == pcap_packets(prompt_pcap)
