"""The harness proved without the recorder: real peers calling each other directly.

The same helpers and scenarios are pointed at the recorder in the service's
interop tests; if these fail, the harness (or the machine) is broken, not the
recorder.
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from . import audio, peers

# --------------------------------------------------------------------------- pure parts


def test_g711_matches_reference_tables() -> None:
    g711 = audio.make_pcap_module()
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    # Spot values of the ITU-T/Sun reference coder (byte-identical to CPython audioop).
    mu = g711.ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16))
    a = g711.alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16))
    assert mu == bytes([0xFF, 0x7E, 0x80, 0x00])
    assert a == bytes([0xD5, 0x55, 0xAA, 0x2A])
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        # Decoding every code and re-encoding it must give the code back (A-law and
        # mu-law each have one ambiguous zero, hence the tolerance of 1 code).
        codes = bytes(range(256))
        again = np.frombuffer(enc(dec(codes)), dtype=np.uint8).astype(int)
        assert np.sum(again != np.arange(256)) <= 1
        err = np.abs(dec(enc(pcm)).astype(int) - pcm.astype(int))
        assert err.max() <= 1024  # the largest quantization step (segment 7)


def test_make_pcap_writes_paced_rtp(tmp_path: Path) -> None:
    g711 = audio.make_pcap_module()
    pcm = (np.sin(np.arange(8000 * 0.5) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    out = tmp_path / "tone.pcap"
    n = g711.write_rtp_pcap(pcm, out, codec="pcma")
    assert n == 25
    data = out.read_bytes()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    off, seqs, stamps, times = 24, [], [], []
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        frame = data[off + 16 : off + 16 + incl]
        assert incl == orig == 14 + 20 + 8 + 12 + 160
        assert frame[12:14] == b"\x08\x00" and frame[23] == 17  # IPv4, UDP
        v_p_x_cc, m_pt, seq, ts, _ssrc = struct.unpack_from("!BBHII", frame, 42)
        assert v_p_x_cc == 0x80 and m_pt & 0x7F == 8
        seqs.append(seq)
        stamps.append(ts)
        times.append(sec * 1_000_000 + usec)
        off += 16 + incl
    assert np.all(np.diff(seqs) == 1)
    assert np.all(np.diff(stamps) == 160)
    assert np.all(np.diff(times) == 20_000)
    assert peers.pcap_duration(out) == pytest.approx(0.5)


def test_peak_xcorr_finds_offset_and_rejects_other_audio() -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(0, 0.2, 8000 * 2)
    rx = np.concatenate([np.zeros(1234), ref[400:], np.zeros(800)])
    c = audio.peak_xcorr(ref, rx)
    assert c.peak > 0.98  # the 400 lost samples (2.5 % of the energy) cost ~1.3 %
    assert c.lag_s == pytest.approx((1234 - 400) / 8000)
    other = audio.peak_xcorr(ref, rng.normal(0, 0.2, 8000 * 3))
    assert other.peak < 0.2


def test_port_allocator_never_repeats() -> None:
    ports = [peers.free_port_block(4) for _ in range(50)]
    spans = {p + i for p in ports for i in range(4)}
    assert len(spans) == 200
    assert all(p % 2 == 0 and peers.PORTS.low <= p <= peers.PORTS.high for p in ports)


def test_port_allocator_takes_a_finished_tests_ports_back() -> None:
    # CI: a suite of 1,860 tests ran out of 64-port blocks in a 5,000-port range.
    allocator = peers.PortAllocator(peers.PORTS.low, peers.PORTS.low + 199)
    for _ in range(20):  # 20 "tests" of 128 ports each: 2,560 ports from a range of 200
        allocator.block(128)
        allocator.release_test_ports()
    first = allocator.block(128)
    with pytest.raises(RuntimeError, match="no 128 free consecutive ports"):
        allocator.block(128)  # within one test, never twice
    assert first % 2 == 0


# --------------------------------------------------------------------------- sipp <-> sipp


@pytest.mark.interop
def test_sipp_uac_pcap_to_uas_echo(interop_dir: Path, prompt_pcap: Path) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        uac = peers.run_sipp_uac(
            "uac_pcap", pbx.target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    # The call lasted the pcap (the BYE waits for -d = pcap length + 0.3 s).
    msgs = uac.messages()
    assert "INVITE sip:service@" in msgs and "BYE sip:pbx@" in msgs
    assert "m=audio" in msgs and "RTP/AVP 0 101" in msgs
    length = uac.stats["CallLength(C)"]  # HH:MM:SS:usec
    h, m, s, us = (int(x) for x in length.split(":"))
    assert abs(h * 3600 + m * 60 + s + us / 1e6 - (peers.pcap_duration(prompt_pcap) + 0.3)) < 0.5


@pytest.mark.interop
def test_sipp_uas_hangs_up(interop_dir: Path, prompt_pcap: Path) -> None:
    with peers.start_sipp_uas("uas_bye", log_dir=interop_dir, calls=1, call_length_s=1.0) as pbx:
        uac = peers.run_sipp_uac(
            "uac_wait_bye", pbx.target, log_dir=interop_dir, pcap=prompt_pcap, timeout=10
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    # The UAS's BYE is in-dialog: From carries its own tag, To the caller's tag.
    bye = re.search(r"^BYE .*?\r?\n\r?\n", uas.messages(), re.M | re.S)
    assert bye is not None
    assert re.search(r"^From:.*;tag=\d+SIPpTag01\d+", bye.group(0), re.M)
    assert re.search(r"^To:.*;tag=\d+SIPpTag00\d+", bye.group(0), re.M)


@pytest.mark.interop
def test_sipp_cancel_while_ringing(interop_dir: Path) -> None:
    with peers.start_sipp_uas(
        "uas_ring_forever", log_dir=interop_dir, calls=1, rtp_echo=False
    ) as pbx:
        uac = peers.run_sipp_uac(
            "uac_cancel", pbx.target, log_dir=interop_dir, call_length_s=0.3, timeout=10
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    msgs = uac.messages()
    branches = {
        method: re.search(rf"^{method} .*?^Via: [^\r\n]*branch=([^;\s]+)", msgs, re.M | re.S)
        for method in ("INVITE", "CANCEL", "ACK")
    }
    found = {k: v.group(1) for k, v in branches.items() if v is not None}
    assert len(found) == 3 and len(set(found.values())) == 1, found
    assert "SIP/2.0 487" in msgs


@pytest.mark.interop
def test_sipp_options(interop_dir: Path) -> None:
    with peers.start_sipp_uas("uas_options", log_dir=interop_dir, calls=1, rtp_echo=False) as pbx:
        uac = peers.run_sipp_uac("uac_options", pbx.target, log_dir=interop_dir, timeout=10)
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()


@pytest.mark.interop
def test_sipp_load_against_uas_echo(interop_dir: Path, prompt_pcap: Path) -> None:
    calls = 30
    # [auto_media_port] steps by 4 per call from -mp: reserve the whole range.
    base = peers.free_port_block(4 * calls + 4)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir) as pbx:
        uac = peers.run_sipp_uac(
            "uac_load",
            pbx.target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=1.0,
            calls=calls,
            rate=30,
            limit=calls,
            media_port=base,
            timeout=20,
        )
        uas = pbx.stop()
    uac.assert_ok(calls)
    assert uas.successful == calls and uas.failed == 0, uas.describe()
    # Each call offered its own media port, inside the reserved range.
    offers = re.findall(r"^INVITE .*?^m=audio (\d+) ", uac.messages(), re.M | re.S)
    ports = {int(p) for p in offers}
    assert len(offers) == len(ports) == calls
    assert all(base <= p < base + 4 * calls + 4 for p in ports), sorted(ports)


@pytest.mark.interop
def test_sipp_failure_is_reported(interop_dir: Path) -> None:
    """The harness must notice a failed call: nothing listens at the target."""
    dead = peers.free_udp_port()
    uac = peers.run_sipp_uac(
        "uac_options",
        f"127.0.0.1:{dead}",
        log_dir=interop_dir,
        timeout=3,
        extra_args=["-max_retrans", "1", "-recv_timeout", "1s"],
    )
    assert uac.returncode != 0
    assert uac.successful == 0
    with pytest.raises(AssertionError):
        uac.assert_ok()


# --------------------------------------------------------------------------- through a proxy


class RecordRouteProxy:
    """A minimal stateless, loose-routing, Record-Routing proxy (RFC 3261 16.11).

    It exists to check that the scenarios keep a proxy in their dialogs: every
    in-dialog request (To has a tag) must arrive with our URI as its top Route.
    Only what sipp sends is supported (one Route value per header line or a
    comma list, UDP, 127.0.0.1).
    """

    def __init__(self, next_hop: tuple[str, int]) -> None:
        self.next_hop = next_hop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", peers.free_udp_port()))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.uri = f"sip:127.0.0.1:{self.port};lr"
        self.requests: list[tuple[str, list[str]]] = []  # (start line, Route values)
        self.missing_route: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RecordRouteProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            head, _, body = data.decode("latin-1").partition("\r\n\r\n")
            lines = head.split("\r\n")
            try:
                is_response = lines[0].startswith("SIP/")
                dest = self._response(lines) if is_response else self._request(lines)
                self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode("latin-1"), dest)
            except (ValueError, IndexError, StopIteration, OSError) as exc:
                self.errors.append(f"{lines[0]}: {exc!r}")

    def _response(self, lines: list[str]) -> tuple[str, int]:
        # sipp's [last_Via:] may fold several Vias into one comma-separated line.
        first = next(i for i, h in enumerate(lines) if h.lower().startswith("via:"))
        vias = [
            v.strip()
            for h in lines
            if h.lower().startswith("via:")
            for v in h.split(":", 1)[1].split(",")
        ]
        lines[:] = [h for h in lines if not h.lower().startswith("via:")]
        lines[first:first] = [f"Via: {v}" for v in vias[1:]]
        return _hostport(vias[1].split()[1])

    def _request(self, lines: list[str]) -> tuple[str, int]:
        method, uri, _ = lines[0].split(" ")
        routes: list[str] = []
        for i in [i for i, h in enumerate(lines) if h.lower().startswith("route:")]:
            routes += [r.strip() for r in lines[i].split(":", 1)[1].split(",")]
        lines[:] = [h for h in lines if not h.lower().startswith("route:")]
        self.requests.append((lines[0], list(routes)))
        to = next(h for h in lines if h.lower().startswith(("to:", "t:")))
        ours = bool(routes) and f"127.0.0.1:{self.port}" in routes[0]
        if ours:
            routes.pop(0)
        elif ";tag=" in to:
            self.missing_route.append(lines[0])
        if routes:
            lines.insert(1, "Route: " + ", ".join(routes))
            dest = _hostport(routes[0].strip("<>").split(":", 1)[1])
        elif f"127.0.0.1:{self.port}" in uri:
            dest = self.next_hop  # addressed to us: the far side's stand-in
        else:
            dest = _hostport(uri.split("@")[-1] if "@" in uri else uri[4:])
        if method == "INVITE" and ";tag=" not in to:
            lines.append(f"Record-Route: <{self.uri}>")
        top_via = next(h for h in lines if h.lower().startswith("via:"))
        branch = hashlib.sha1(top_via.encode()).hexdigest()[:16]
        lines.insert(1, f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch}")
        return dest


def _hostport(text: str) -> tuple[str, int]:
    host, _, rest = text.partition(":")
    port = re.match(r"\d+", rest)
    return host.split("@")[-1], int(port.group(0)) if port else 5060


@pytest.fixture
def proxied_uas(
    interop_dir: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[peers.SippUas, RecordRouteProxy]]:
    scenario, call_length = request.param
    with (
        peers.start_sipp_uas(
            scenario, log_dir=interop_dir, calls=1, call_length_s=call_length
        ) as pbx,
        RecordRouteProxy(("127.0.0.1", pbx.port)) as proxy,
    ):
        yield pbx, proxy


@pytest.mark.interop
@pytest.mark.parametrize(
    ("proxied_uas", "uac_scenario"),
    [(("uas_echo", None), "uac_pcap"), (("uas_bye", 0.5), "uac_wait_bye")],
    indirect=["proxied_uas"],
    ids=["caller-hangs-up", "callee-hangs-up"],
)
def test_dialog_stays_on_record_routing_proxy(
    interop_dir: Path,
    prompt_pcap: Path,
    proxied_uas: tuple[peers.SippUas, RecordRouteProxy],
    uac_scenario: str,
) -> None:
    pbx, proxy = proxied_uas
    uac = peers.run_sipp_uac(
        uac_scenario,
        proxy.target,
        log_dir=interop_dir,
        pcap=prompt_pcap,
        call_length_s=0.5,
        timeout=10,
    )
    uas = pbx.wait(5)
    assert proxy.errors == []
    uac.assert_ok()
    uas.assert_ok()
    assert proxy.missing_route == []
    in_dialog = [(line.split()[0], r) for line, r in proxy.requests if line.split()[0] != "INVITE"]
    assert [m for m, _ in in_dialog] == ["ACK", "BYE"]
    assert all(r and proxy.uri in r[0] for _, r in in_dialog), in_dialog


# --------------------------------------------------------------------------- with baresip


@pytest.mark.interop
def test_baresip_to_baresip_audio(
    interop_dir: Path,
    prompt_wav: Path,
    prompt_padded_wav: Path,
    agent_wav: Path,
    agent_long_wav: Path,
) -> None:
    with (
        peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee,
        peers.start_baresip(interop_dir, user="caller", source_wav=prompt_padded_wav) as caller,
    ):
        caller.dial(callee.uri)
        caller.wait_event("CALL_ESTABLISHED", timeout=5)
        callee.wait_event("CALL_ESTABLISHED", timeout=5)
        # The caller hangs up by itself when its padded prompt ends.
        caller.wait_event("CALL_CLOSED", timeout=audio.wav_duration(prompt_padded_wav) + 5)
        callee.wait_event("CALL_CLOSED", timeout=5)
        got = callee.received_wav()
        back = caller.received_wav()
    heard = audio.peak_xcorr(prompt_wav, got)
    assert heard.peak > 0.9, heard
    # Negative control: the callee did not receive the agent's sentence, and the
    # caller received the callee's, not its own.
    assert audio.peak_xcorr(agent_wav, got).peak < 0.5
    assert audio.peak_xcorr(agent_wav, back).peak > 0.9
    assert audio.peak_xcorr(prompt_wav, back).peak < 0.5


@pytest.mark.interop
def test_sipp_pcap_to_baresip_audio(
    interop_dir: Path, prompt_wav: Path, prompt_pcap: Path, agent_long_wav: Path
) -> None:
    """The pcap made by make_pcap.py is real PCMU a real phone decodes to the prompt."""
    with peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee:
        uac = peers.run_sipp_uac(
            "uac_pcap",
            callee.target,
            service="callee",
            log_dir=interop_dir,
            pcap=prompt_pcap,
            timeout=20,
        )
        callee.wait_event("CALL_CLOSED", timeout=5)
        got = callee.received_wav()
    uac.assert_ok()
    heard = audio.peak_xcorr(prompt_wav, got)
    assert heard.peak > 0.9, heard


@pytest.mark.interop
def test_sipp_options_to_baresip(interop_dir: Path, agent_long_wav: Path) -> None:
    with peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee:
        uac = peers.run_sipp_uac(
            "uac_options", callee.target, service="callee", log_dir=interop_dir, timeout=10
        )
    uac.assert_ok()


@pytest.mark.interop
def test_baresip_rfc2833_dtmf(interop_dir: Path, agent_long_wav: Path) -> None:
    with (
        peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee,
        peers.start_baresip(interop_dir, user="caller", source_wav=agent_long_wav) as caller,
    ):
        caller.dial(callee.uri)
        caller.wait_event("CALL_ESTABLISHED", timeout=5)
        callee.wait_event("CALL_RTPESTAB", timeout=5)
        caller.send_dtmf("9")
        assert callee.wait_event("CALL_DTMF_START", timeout=3)["param"] == "9"
        caller.hangup()
        callee.wait_event("CALL_CLOSED", timeout=5)


@pytest.mark.interop
def test_sipp_dtmf_to_baresip(interop_dir: Path, agent_long_wav: Path) -> None:
    """uac_dtmf presses 9 (sipp's shipped RFC 2833 pcap, PT 101) after a delay."""
    dtmf = Path("/usr/share/sip-tester/dtmf_2833_9.pcap")
    if not dtmf.is_file():
        pytest.fail(f"{dtmf} missing: the sip-tester package should ship it")
    with peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee:
        uac = peers.run_sipp_uac(
            "uac_dtmf",
            callee.target,
            service="callee",
            log_dir=interop_dir,
            keys={"dtmf": str(dtmf)},
            variables={"dtmf_delay_ms": "800"},
            call_length_s=0.5,
            timeout=10,
        )
        up = callee.wait_event("CALL_ESTABLISHED", timeout=1)
        key = callee.wait_event("CALL_DTMF_START", timeout=1)
        callee.wait_event("CALL_CLOSED", timeout=5)
    uac.assert_ok()
    assert key["param"] == "9"
    assert 0.7 < key["_at"] - up["_at"] < 1.5
