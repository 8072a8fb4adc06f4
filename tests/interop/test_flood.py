"""An INVITE flood from one source (issue 20): past `[limits]` it gets 503 with Retry-After,
at little cost, while calls from another source still connect; memory stays bounded."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from . import peers
from .conftest import RecorderFactory

pytestmark = pytest.mark.interop

LIMITS = """
[limits]
per_source_calls_per_second = 10
per_source_burst = 10
calls_per_second = 1000
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "_total "):
                return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def test_a_flood_from_one_source_gets_503_and_another_source_still_connects(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    metrics = peers.free_port_block(1, tcp=True)
    extra = LIMITS + f'\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir) as pbx:
        recorder = start_recorder(pbx_port=pbx.port, media_ports=256, policy_extra=extra)
        recorder.wait_event("metrics.listening", timeout=10)
        before = rss_kib(recorder.proc.pid)
        flood = peers.run_sipp_uac(
            "uac_flood",
            recorder.external_target,
            log_dir=interop_dir,
            calls=3000,
            rate=1000,
            limit=400,
            call_length_s=0,
            media_port=peers.free_port_block(4),  # one SDP port for all: no audio is sent
            timeout=40,
        )
        # Meanwhile (sipp runs to completion first; the flood's source is throttled for a
        # while after): five calls with audio from another address.
        other = peers.run_sipp_uac(
            "uac_load",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            calls=5,
            rate=5,
            limit=5,
            extra_args=["-i", "127.0.0.2", "-mi", "127.0.0.2"],
            timeout=40,
        )
        after = rss_kib(recorder.proc.pid)
        throttled = scrape(metrics, "recorder_calls_throttled")
    # Every flood call ended as sipp expects: refused with a Retry-After, or answered.
    assert flood.failed == 0, flood.stats
    assert flood.successful == 3000
    assert throttled >= 3000 - 10 - 10 * 10  # the burst and at most ~10 s at 10 calls/s
    other.assert_ok(calls=5)
    # The service is alive, logged the flood once a second at most, and held its memory.
    assert recorder.proc.poll() is None
    lines = recorder.events("call.throttled")
    assert 0 < len(lines) <= 60 and all(e["source"] == "127.0.0.1" for e in lines)
    assert after - before < 64 * 1024, (before, after)
    print(f"flood: {throttled:.0f} throttled, RSS {before} -> {after} KiB")


@pytest.mark.parametrize("scenario", ["uac_options", "uac_register"])
def test_an_options_or_register_flood_costs_little_and_holds_memory(
    interop_dir: Path, start_recorder: RecorderFactory, scenario: str
) -> None:
    """2,000 messages/s from one source that start no call, so [limits] does not apply:
    OPTIONS keepalives, each answered 200; REGISTERs from phones that take the recorder for
    their registrar, each answered 405 with Allow (it keeps nothing per registration). The
    process stays small; the cost is printed."""
    recorder = start_recorder(pbx_port=peers.free_udp_port(), media_ports=8)
    pid = recorder.proc.pid
    before, cpu_before = rss_kib(pid), cpu_seconds(pid)
    probe = peers.run_sipp_uac(
        scenario,
        recorder.external_target,
        log_dir=interop_dir,
        calls=6000,
        rate=2000,
        limit=2000,
        call_length_s=0,
        media_port=peers.free_port_block(4),
        timeout=40,
    )
    after, cpu = rss_kib(pid), cpu_seconds(pid) - cpu_before
    probe.assert_ok(calls=6000)
    assert recorder.proc.poll() is None
    assert after - before < 32 * 1024, (before, after)
    # Nothing of a registration is a call: no call was opened, nothing catalogued.
    assert recorder.events("call.received") == [] and recorder.catalog("calls", "list") == []
    print(
        f"{scenario} flood: 6000 answered, {cpu * 1e6 / 6000:.0f} us CPU each, "
        f"RSS {before} -> {after} KiB"
    )
