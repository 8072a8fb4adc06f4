"""Fixtures for interop tests against real peers (sipp, baresip).

A missing peer skips the interop tests locally, and fails them under CI
(``CI=true``), where scripts/install-test-deps.sh must have installed them:
a CI run that silently skipped every interop test would prove nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pluggy
import pytest

from . import audio, peers
from .recorder_proc import RecorderProcess, running_recorder

RecorderFactory = Callable[..., RecorderProcess]

PROMPT_TEXT = "This call may be recorded. To refuse, press nine."
AGENT_TEXT = "Good morning, accounting department, how can I help you today?"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_tools(tools: tuple[str, ...] = peers.PEER_TOOLS) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


@pytest.fixture(autouse=True)
def _require_peers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("interop") is None:
        return
    missing = missing_tools()
    if missing:
        msg = f"interop peers missing: {', '.join(missing)} (run scripts/install-test-deps.sh)"
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.fixture(autouse=True)
def _peer_log_registry() -> Iterator[None]:
    peers.reset_log_dirs()
    yield
    peers.PORTS.release_test_ports()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for log_dir in peers.started_log_dirs():
        parts = []
        for name in ("command.txt", "errors.log", "stderr.log", "stdout.log", "ctrl.jsonl"):
            path = log_dir / name
            if path.is_file() and path.stat().st_size:
                lines = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"--- {name} (last {len(lines)} lines)\n" + "\n".join(lines))
        report.sections.append((f"peer {log_dir.name} ({log_dir})", "\n".join(parts)))


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if missing_tools(("sox", "espeak-ng")):
        msg = f"audio tools missing: {missing_tools(('sox', 'espeak-ng'))}"
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def prompt_wav(audio_dir: Path) -> Path:
    """The caller's speech, 8 kHz mono 16-bit, unpadded (~4 s): the correlation reference."""
    return audio.make_prompt(PROMPT_TEXT, audio_dir / "prompt.wav")


@pytest.fixture(scope="session")
def prompt_padded_wav(audio_dir: Path, prompt_wav: Path) -> Path:
    """The prompt with 0.5 s of silence before and 1 s after (baresip's source)."""
    return audio.pad(prompt_wav, audio_dir / "prompt_padded.wav", 0.5, 1.0)


@pytest.fixture(scope="session")
def prompt_pcap(audio_dir: Path, prompt_wav: Path) -> Path:
    """The prompt as a PCMU RTP pcap for sipp's play_pcap_audio (0.3 s lead-in)."""
    lead = audio.pad(prompt_wav, audio_dir / "prompt_lead.wav", 0.3, 0.2)
    return audio.wav_to_pcap(lead, audio_dir / "prompt_pcmu.pcap", "pcmu")


@pytest.fixture(scope="session")
def agent_wav(audio_dir: Path) -> Path:
    """A different sentence (the PBX side), unpadded: must NOT correlate with the prompt."""
    return audio.make_prompt(AGENT_TEXT, audio_dir / "agent.wav", voice="en-us")


@pytest.fixture(scope="session")
def agent_long_wav(audio_dir: Path, agent_wav: Path) -> Path:
    """The agent sentence followed by 60 s of silence: a callee's source that outlasts calls."""
    return audio.pad(agent_wav, audio_dir / "agent_long.wav", 0.2, 60.0)


@pytest.fixture
def interop_dir(tmp_path: Path) -> Path:
    """Where this test's peers write configs and logs (kept by pytest for inspection)."""
    return tmp_path


@pytest.fixture
def start_recorder(interop_dir: Path) -> Iterator[RecorderFactory]:
    """Start `recorder serve` towards a PBX port, with free SIP and media ports; every
    recorder started is stopped (SIGTERM) at the end of the test. Several starts share
    one directory, so a restarted recorder finds its catalog and files."""
    stack = ExitStack()

    def start(
        *,
        pbx_port: int,
        media_ports: int = 64,
        trunk_port: int = 0,
        policy_extra: str = "",
        **kwargs: Any,
    ) -> RecorderProcess:
        first = peers.free_port_block(media_ports)
        return stack.enter_context(
            running_recorder(
                interop_dir / "recorder",
                external_port=peers.free_port_block(1, tcp=True),
                internal_port=peers.free_port_block(1, tcp=True),
                pbx_port=pbx_port,
                trunk_port=trunk_port or peers.free_udp_port(),
                media_first=first,
                media_last=first + media_ports - 1,
                policy_extra=policy_extra,
                **kwargs,
            )
        )

    with stack:
        yield start
