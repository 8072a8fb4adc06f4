"""`make demo`: the recorder between a sipp caller and a sipp stand-in PBX, one call with audio.

Everything runs on 127.0.0.1 and is stopped at the end; logs stay under var/demo/.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.interop import audio, peers  # noqa: E402
from tests.interop.recorder_proc import running_recorder  # noqa: E402

PROMPT = "Hello, this is a test call through the recorder. One, two, three."


def main() -> int:
    missing = [tool for tool in ("sipp", "espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (run `make deps` as root)")
        return 1
    work = ROOT / "var" / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wav = audio.make_prompt(PROMPT, work / "prompt.wav")
    pcap = audio.wav_to_pcap(audio.pad(wav, work / "lead.wav", 0.3, 0.2), work / "prompt.pcap")
    media_first = peers.free_port_block(16)
    with (
        peers.start_sipp_uas("uas_echo", log_dir=work, calls=1) as pbx,
        running_recorder(
            work / "recorder",
            external_port=peers.free_port_block(1, tcp=True),
            internal_port=peers.free_port_block(1, tcp=True),
            pbx_port=pbx.port,
            trunk_port=peers.free_udp_port(),
            media_first=media_first,
            media_last=media_first + 15,
        ) as recorder,
    ):
        print(
            f"recorder listening: trunk side {recorder.external_target}, "
            f"PBX side {recorder.internal_target}; stand-in PBX (sipp) at {pbx.target}"
        )
        print(f"placing one call with {peers.pcap_duration(pcap):.1f} s of speech...")
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=work, pcap=pcap, timeout=30
        )
        pbx.wait(5)
        ended = recorder.wait_event("call.ended")
    status = "succeeded" if uac.successful == 1 and uac.failed == 0 else "FAILED"
    print(f"caller (sipp): call {status}")
    for event in ("call.received", "call.answered", "call.ended"):
        for entry in recorder.events(event):
            shown = {k: v for k, v in entry.items() if k not in ("media", "timestamp", "level")}
            print(f"  recorder log: {shown}")
    media = ended[0]["media"]
    for leg, label in (("a", "caller leg"), ("b", "PBX leg")):
        counters = media[leg]
        print(
            f"  {label}: received {counters['rtp_packets']} RTP packets, relayed "
            f"{counters['rtp_forwarded']}, lost {counters['rtp_lost']}, "
            f"jitter {counters['jitter_ms']} ms, latched {counters['latched_rtp']}"
        )
    print(f"logs: {work}")
    return 0 if status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
