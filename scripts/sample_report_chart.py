"""Draw docs/report-annual-sample.png: the annual report (T1) of a synthetic year.

A throwaway catalog gets a year of calls (some recorded, some refused by key or by voice),
requests, listens and purges, then the chart comes from the same code as
`recorder report annual --chart` (`recorder.access.reports`, `recorder.cli.reports`).

    .venv/bin/python scripts/sample_report_chart.py
"""

from __future__ import annotations

import random
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.access.reports import annual_view
from recorder.cli.reports import draw_chart
from recorder.policy import parse_policy
from storage.audit import AuditTrail
from storage.repository import Catalog

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    policy = parse_policy((ROOT / "policy.toml").read_text(), ROOT / "policy.toml")
    zone = policy.timezone
    rng = random.Random(2026)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog.open(f"sqlite:///{tmp}/sample.db", migrate=True)
        trail = AuditTrail(catalog, None)
        day = datetime(2026, 1, 1, 9, tzinfo=zone)
        while day.year == 2026:
            busy = 0.6 if day.month in (7, 8) else 1.0
            for _ in range(int(rng.gauss(12, 3) * busy) if day.weekday() < 5 else 0):
                at = day + timedelta(minutes=rng.randrange(0, 8 * 60))
                call = catalog.add_call(
                    call_id_a=f"sample-{at.timestamp()}-{rng.random()}",
                    direction="inbound",
                    side="external",
                    caller_number="withheld",
                    callee_number="18886722556",
                    arrived_at=at,
                    agent=str(rng.choice([4711, 4712, 4713])),
                )
                draw = rng.random()
                if draw < 0.03:
                    method = "voice" if rng.random() < 0.3 else "dtmf-rfc4733"
                    catalog.set_consent(call, outcome="refused", method=method, at=at)
                    continue
                rid = catalog.add_recording(
                    call, name=f"r{call}.wav", path=None, format="pcm16", created_at=at
                )
                catalog.finalize_recording(
                    rid, at=at, sha256="0" * 64, size=1, duration=60.0, expires_at=None
                )
                if draw > 0.995:
                    trail.record(
                        at=at, actor="sample", action="recording.listen", object=f"recording:{rid}"
                    )
                trail.record(
                    at=at + timedelta(days=8),
                    actor="service",
                    action="recording.destroyed",
                    object=f"recording:{rid}",
                    reason="D1: the retention period is over",
                )
            day += timedelta(days=1)
        view = annual_view(policy, catalog, 2026)
        catalog.close()
    view["title"] += " (synthetic sample)"
    out = ROOT / "docs" / "report-annual-sample.png"
    draw_chart(view, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
