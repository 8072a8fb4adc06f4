"""What lawful use costs (issue 15): listening and exporting through the access desk and its
socket, side by side in one run with the floor each step cannot beat.

For R recordings of S seconds (stereo 8 kHz PCM16, as the writer makes them):

- floor: read the file and SHA-256 it (what any verified read costs);
- desk read: `AccessDesk.read` (grant check, catalog rows, SHA-256 check, audit entry);
- socket listen: the same over the access socket with the real framing
  (`control_exchange`), as `recorder listen` does;
- floor seal: Debian's `age` binary encrypting the same bytes (when installed);
- desk export: `AccessDesk.export` of every recording (pyrage, manifest, SHA256SUMS, audit);
- decrypt: `age -d` of the exported files, the requester's side.

    .venv/bin/python bench/bench_access.py --recordings 20 --seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.access.commands import AccessServer
from recorder.access.desk import AccessDesk
from recorder.access.workflow import Caller
from recorder.ops.control import control_exchange
from recorder.policy import parse_policy
from storage.audit import default_anchor_path
from storage.repository import Catalog

POLICY = """
[policy]
name = "BENCH"
[service]
timezone = "UTC"
[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"
[notice]
play = false
[retention]
recordings = "8 days"
[purposes.complaints]
description = "Complaints"
[roles.quality]
description = "Quality"
purposes = ["complaints"]
scope = "all"
window = "retention"
[roles.director]
description = "Director"
purposes = []
scope = "none"
window = "retention"
approves = ["complaints"]
[people.quality]
name = "Q"
role = "quality"
uid = {uid}
[people.director]
name = "D"
role = "director"
uid = 1
"""


def _wav(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    frames = (rng.standard_normal((int(8000 * seconds), 2)) * 3000).astype(np.int16)
    out = io.BytesIO()
    soundfile.write(out, frames, 8000, subtype="PCM_16", format="WAV")
    return out.getvalue()


def _timed(fn: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / (1 << 20) / seconds if seconds else 0.0


def run(recordings: int, seconds: float, repeat: int, directory: Path) -> dict[str, Any]:
    import os

    uid = os.getuid()
    policy = parse_policy(POLICY.format(uid=uid), Path("bench.toml"))
    database = f"sqlite:///{directory / 'recorder.db'}"
    catalog = Catalog.open(database, migrate=True)
    store = directory / "recordings"
    store.mkdir()
    now = datetime.now(UTC)
    ids, total = [], 0
    for index in range(recordings):
        data = _wav(seconds, index)
        total += len(data)
        call = catalog.add_call(
            call_id_a=f"bench-{index}",
            direction="inbound",
            side="external",
            caller_number="withheld",
            callee_number="100",
            arrived_at=now - timedelta(minutes=10),
            agent="4711",
        )
        path = store / f"rec-{index}.wav"
        path.write_bytes(data)
        rid = catalog.add_recording(
            call, name=path.name, path=str(path), format="pcm16", created_at=now
        )
        catalog.finalize_recording(
            rid,
            at=now,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            duration=seconds,
            expires_at=policy.expiry("recordings", now),
        )
        ids.append(rid)
    desk = AccessDesk(catalog, default_anchor_path(store), store, database)
    me, director = Caller(uid, None), Caller(1, None)
    request = desk.request(
        policy, me, now, purpose="complaints", reason="bench", selector={"recordings": ids}
    )
    desk.verdict(
        policy, director, now, request_id=request.public_id, verdict="approved", reason=None
    )
    one = ids[0]
    size = len(Path(store / "rec-0.wav").read_bytes())

    def floor() -> None:
        hashlib.sha256(Path(store / "rec-0.wav").read_bytes()).hexdigest()

    def desk_read() -> None:
        desk.read(policy, me, now, request_id=request.public_id, recording_id=one)

    results: dict[str, Any] = {
        "recordings": recordings,
        "seconds": seconds,
        "bytes_each": size,
        "bytes_total": total,
    }
    results["floor_read_sha256_s"] = statistics.median(_timed(floor, repeat))
    results["desk_read_s"] = statistics.median(_timed(desk_read, repeat))

    async def socket_listen() -> list[float]:
        socket = directory / "access.sock"
        server = await AccessServer.start(socket, database, store, lambda: policy)
        loop = asyncio.get_running_loop()
        try:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                response, payload = await loop.run_in_executor(
                    None,
                    lambda: control_exchange(
                        socket, {"cmd": "listen", "request": request.public_id, "recording": one}
                    ),
                )
                times.append(time.perf_counter() - start)
                assert response["ok"] and len(payload) == size, response
            return times
        finally:
            await server.close()

    results["socket_listen_s"] = statistics.median(asyncio.run(socket_listen()))

    recipient_key = directory / "key.txt"
    age, keygen = shutil.which("age"), shutil.which("age-keygen")
    if age and keygen:
        subprocess.run([keygen, "-o", str(recipient_key)], check=True, capture_output=True)
        recipient = next(
            line.split(": ", 1)[1]
            for line in recipient_key.read_text().splitlines()
            if line.startswith("# public key: ")
        )

        def age_seal_all() -> None:
            for index in range(recordings):
                subprocess.run(
                    [
                        age,
                        "-r",
                        recipient,
                        "-o",
                        str(directory / "floor.age"),
                        str(store / f"rec-{index}.wav"),
                    ],
                    check=True,
                )

        results["floor_age_binary_all_s"] = statistics.median(_timed(age_seal_all, 1))
    else:
        import pyrage

        recipient = str(pyrage.x25519.Identity.generate().to_public())
    exports: list[float] = []
    for attempt in range(max(1, repeat // 3)):
        start = time.perf_counter()
        bundle = desk.export(policy, me, now, request_id=request.public_id, recipient=recipient)
        exports.append(time.perf_counter() - start)
        if attempt == 0 and age:
            from recorder.access.sealing import write_bundle

            out = directory / "export"
            write_bundle(bundle, out)
            start = time.perf_counter()
            for sealed in bundle.files:
                subprocess.run(
                    [
                        age,
                        "-d",
                        "-i",
                        str(recipient_key),
                        "-o",
                        str(directory / "plain.wav"),
                        str(out / sealed.name),
                    ],
                    check=True,
                )
            results["decrypt_age_binary_all_s"] = time.perf_counter() - start
    results["desk_export_all_s"] = statistics.median(exports)
    for key in ("floor_read_sha256_s", "desk_read_s", "socket_listen_s"):
        results[key.removesuffix("_s") + "_mib_s"] = _mib_s(size, results[key])
    for key in ("floor_age_binary_all_s", "desk_export_all_s", "decrypt_age_binary_all_s"):
        if key in results:
            results[key.removesuffix("_s") + "_mib_s"] = _mib_s(total, results[key])
    results["audit_entries"] = len(desk.trail.entries())
    catalog.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-access-") as tmp:
        results = run(args.recordings, args.seconds, args.repeat, Path(tmp))
    results["date"] = datetime.now(UTC).date().isoformat()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
