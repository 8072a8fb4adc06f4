"""SIP over TLS and SDES-SRTP on both sides, through `recorder serve`, with baresip (issue 21).

baresip 1.0.0 is both parties (see test_peers_tls_srtp.py for how it is set up and what it
cannot do: it never verifies a server's certificate, nor sends one as a client unless it has
one). The recorder terminates TLS and SRTP on each side: each party sees only the recorder's
certificate and the recorder's keys, and the recording holds their plain audio.
pjsua2 (the PyPI `pjsua2-pybind11` build) exposes neither TLS nor SRTP settings, so it is not
a peer here.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import soundfile

from tests.tlscerts import Ca, LeafCert, make_ca, make_cert

from . import audio, peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
NOTICE = ROOT / "prompts" / "notice-en.wav"
SUITE = "AES_CM_128_HMAC_SHA1_80"

RECORD_ALL = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]                # S1
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"
"""

NOTICE_AND_REFUSAL = f"""
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]                                # C1
play = true
prompts = {{ en = "{NOTICE}" }}
default_language = "en"

[consent]                               # C3, C4: refusal by key 9, during the notice too
mode = "opt_out"
refusal_keys = ["9"]
listen_seconds = 2.0
barge_in = true

[retention]
recordings = "8 days"
"""

_INLINE = re.compile(r"inline:([A-Za-z0-9+/=]+)")


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory / "pki"
        self.ca: Ca = make_ca(self.dir, "ca")
        self.recorder: LeafCert = make_cert(self.ca, self.dir, "recorder")

    def leaf(self, name: str, ca: Ca | None = None) -> LeafCert:
        return make_cert(ca or self.ca, self.dir, name)

    def side(self, tls_port: int, extra: str = "") -> str:
        return (
            f'tls_cert = "{self.recorder.cert}"\ntls_key = "{self.recorder.key}"\n'
            f'tls_ca = "{self.ca.cert_path}"\ntls_listen = "127.0.0.1:{tls_port}"\n{extra}'
        )


def srtp_baresip(
    interop_dir: Path,
    pki: Pki,
    user: str,
    source: Path,
    *,
    leaf: LeafCert | None = None,
    sip_trace: bool = False,
) -> AbstractContextManager[peers.Baresip]:
    """A baresip on TLS (its certificate from the test CA unless `leaf`) with mandatory SRTP."""
    cert = leaf or pki.leaf(user)
    return peers.start_baresip(
        interop_dir,
        user=user,
        source_wav=source,
        tls=peers.BaresipTls(cert.pem, pki.ca.cert_path if leaf is None else None),
        srtp=True,
        sip_trace=sip_trace,
    )


def tls_recorder(
    start_recorder: RecorderFactory, pki: Pki, pbx: peers.Baresip, policy: str, extra: str = ""
) -> tuple[RecorderProcess, int]:
    """Both sides on TLS (the PBX side verifies the PBX's certificate against the test CA)."""
    external_tls = peers.free_port_block(1, tcp=True)
    recorder = start_recorder(
        pbx_port=pbx.tls_port,
        media_ports=32,
        policy_extra=policy + extra,
        external_extra=pki.side(external_tls),
        internal_extra=pki.side(peers.free_port_block(1, tcp=True), 'transport = "tls"'),
    )
    return recorder, external_tls


def keys_in(messages: list[peers.SipTraced]) -> set[str]:
    return {key for m in messages for key in _INLINE.findall(m.body)}


def assert_no_key_kept(recorder: RecorderProcess, keys: set[str]) -> None:
    log = recorder.log_path.read_text(errors="replace")
    assert "inline:" not in log
    for db in recorder.policy_path.parent.glob("recorder.db*"):
        data = db.read_bytes()
        assert not [k for k in keys if k.encode() in data]
    assert not [k for k in keys if k in log]


def test_tls_and_srtp_on_both_sides_recorded(
    interop_dir: Path,
    prompt_wav: Path,
    prompt_padded_wav: Path,
    agent_wav: Path,
    agent_long_wav: Path,
    start_recorder: RecorderFactory,
) -> None:
    pki = Pki(interop_dir)
    with srtp_baresip(interop_dir, pki, "callee", agent_long_wav, sip_trace=True) as callee:
        recorder, external_tls = tls_recorder(start_recorder, pki, callee, RECORD_ALL)
        with srtp_baresip(interop_dir, pki, "caller", prompt_padded_wav, sip_trace=True) as caller:
            caller.dial(f"sip:callee@127.0.0.1:{external_tls};transport=tls")
            caller.wait_event("CALL_ESTABLISHED", timeout=10)
            callee.wait_event("CALL_ESTABLISHED", timeout=10)
            assert caller.wait_secure() == SUITE and callee.wait_secure() == SUITE
            caller.wait_event("CALL_CLOSED", timeout=audio.wav_duration(prompt_padded_wav) + 5)
            callee.wait_event("CALL_CLOSED", timeout=5)
            got, back = callee.received_wav(), caller.received_wav()
            caller_sip, callee_sip = caller.sip_messages(), callee.sip_messages()
    # Signalling went over TLS both ways; each party saw only the recorder's keys.
    assert {m.transport for m in caller_sip} == {"TLS"}
    assert {m.transport for m in callee_sip} == {"TLS"}
    invite_in = next(m for m in callee_sip if m.start_line.startswith("INVITE "))
    assert (invite_in.header("Via") or "").startswith("SIP/2.0/TLS")
    assert "RTP/SAVP" in invite_in.body
    caller_keys, callee_keys = keys_in(caller_sip), keys_in(callee_sip)
    assert len(caller_keys) >= 2 and len(callee_keys) >= 2
    # The keys each party sent never reached the other party.
    caller_own = keys_in([m for m in caller_sip if m.start_line.startswith("INVITE ")])
    callee_own = keys_in([m for m in callee_sip if m.start_line.startswith("SIP/2.0 200")])
    assert caller_own and callee_own
    assert not caller_own & callee_keys and not callee_own & caller_keys
    # The parties heard each other, and the recording holds both, decrypted.
    assert audio.peak_xcorr(prompt_wav, got).peak > 0.9
    assert audio.peak_xcorr(agent_wav, back).peak > 0.9
    ended = recorder.wait_event("call.ended")[0]["media"]
    assert ended["a"]["srtp"] == 1 and ended["b"]["srtp"] == 1
    assert ended["a"]["rtp_forwarded"] > 100 and ended["b"]["rtp_forwarded"] > 100
    recorder.wait_event("recording.finalized", timeout=15)
    [row] = recorder.catalog("recordings", "list")
    samples, rate = soundfile.read(Path(row["path"]), dtype="float32", always_2d=True)
    assert rate == 8000
    assert audio.peak_xcorr(prompt_wav, samples[:, 0]).peak > 0.9  # left: the caller
    assert audio.peak_xcorr(agent_wav, samples[:, 1]).peak > 0.9  # right: the PBX side
    assert_no_key_kept(recorder, caller_keys | callee_keys)


def test_refusal_key_inside_srtp_over_tls_is_honoured(
    interop_dir: Path, agent_long_wav: Path, start_recorder: RecorderFactory
) -> None:
    """C3/C4 with the key as RFC 4733 events inside SRTP: decrypted, heard, honoured (C5)."""
    pki = Pki(interop_dir)
    with srtp_baresip(interop_dir, pki, "callee", agent_long_wav) as callee:
        recorder, external_tls = tls_recorder(start_recorder, pki, callee, NOTICE_AND_REFUSAL)
        with srtp_baresip(interop_dir, pki, "caller", agent_long_wav) as caller:
            caller.dial(f"sip:callee@127.0.0.1:{external_tls};transport=tls")
            caller.wait_event("CALL_ESTABLISHED", timeout=10)
            assert caller.wait_secure() == SUITE
            recorder.wait_event("notice.started", timeout=5)
            caller.send_dtmf("9")
            refused = recorder.wait_event("consent.refused", timeout=10)[0]
            # C5: refused, and still served: the PBX gets the call.
            callee.wait_event("CALL_ESTABLISHED", timeout=10)
            assert callee.wait_secure() == SUITE
            caller.command("hangup")
            callee.wait_event("CALL_CLOSED", timeout=10)
    assert refused["method"] == "dtmf-rfc4733"
    summary = recorder.wait_event("call.summary")[0]
    assert summary["recorded"] is False and summary["consent"] == "refused"
    assert recorder.catalog("recordings", "list", timeout=0.5) == []
    assert not list((recorder.policy_path.parent / "recordings").rglob("*.wav"))
    ended = recorder.wait_event("call.ended")[0]["media"]
    assert ended["a"]["srtp"] == 1 and ended["b"]["srtp"] == 1


def test_a_pbx_with_an_untrusted_certificate_is_refused_in_one_clear_line(
    interop_dir: Path, agent_long_wav: Path, start_recorder: RecorderFactory
) -> None:
    pki = Pki(interop_dir)
    rogue = make_ca(pki.dir, "rogue")
    with srtp_baresip(
        interop_dir, pki, "callee", agent_long_wav, leaf=pki.leaf("impostor", rogue)
    ) as callee:
        # Short timers: the INVITE that could not go out times out in 64 * T1 = 3.2 s.
        recorder, external_tls = tls_recorder(
            start_recorder, pki, callee, RECORD_ALL, "\n[sip.timers]\nt1 = 0.05\n"
        )
        with srtp_baresip(interop_dir, pki, "caller", agent_long_wav) as caller:
            caller.dial(f"sip:callee@127.0.0.1:{external_tls};transport=tls")
            closed = caller.wait_event("CALL_CLOSED", timeout=15)
        assert callee.events("CALL_INCOMING") == [] and callee.events("CALL_ESTABLISHED") == []
    lines = [
        line
        for line in recorder.log_text().splitlines()
        if "TLS connection to" in line and f":{callee.tls_port}" in line
    ]
    assert len(lines) == 1, lines
    assert "certificate verify failed" in lines[0]
    assert "408" in str(closed.get("param", "")) or "Timeout" in str(closed.get("param", ""))
    assert recorder.catalog("recordings", "list", timeout=0.5) == []
