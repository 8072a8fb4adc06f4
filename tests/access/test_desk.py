"""The access desk over a real catalog and real WAV files: every step of lawful use, each
allowed or refused by its rule, each in the audit trail (A1-A13, P1, P5, P6, R2, X1, X2)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyrage
import pytest
import soundfile

from recorder.access.desk import AccessDesk
from recorder.access.sealing import open_bundle, write_bundle
from recorder.access.workflow import AccessRefused, Caller
from recorder.policy import Policy, parse_policy
from storage.audit import AuditTrail, default_anchor_path
from storage.repository import Catalog

MONTREAL = ZoneInfo("America/Montreal")
CALL_AT = datetime(2026, 12, 3, 10, 0, tzinfo=MONTREAL)
SAME_DAY = datetime(2026, 12, 3, 14, 0, tzinfo=MONTREAL)

POLICY = """
[policy]
name = "TEST"
number_region = "CA"

[service]
timezone = "America/Montreal"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"                     # D1
training_copies = "1 year"                # P5
summary_sheets = "1 year"                 # P6

[purposes.quality]
description = "Service quality"
rule = "P1"

[purposes.complaints]
description = "Complaints"
rule = "P1"
approvers = 2                             # A9

[purposes.training]
description = "Training"
rule = "P1"
deidentify = true                         # P5
mute_seconds = [[0, 1]]

[purposes.maintenance]
description = "Vendor maintenance"
rule = "A13"

[roles.team_lead]                         # A1
description = "Team lead"
purposes = ["quality"]
scope = "team"
window = "call_day"
approves = ["quality"]

[roles.agent]                             # A7
description = "Agent"
purposes = ["quality"]
scope = "own"
window = "call_day"

[roles.director]                          # A2
description = "Director"
purposes = ["quality", "complaints", "training"]
scope = "all"
window = "retention"
approves = ["quality", "complaints", "training", "maintenance"]
subject_access = true                     # R2
reports = ["annual", "quality", "inventory", "people"]
per_agent = true                          # T2

[roles.clerk]                             # A9: the second approver
description = "Clerk"
purposes = ["complaints"]
scope = "all"
window = "retention"
approves = ["complaints", "training"]

[roles.statistician]                      # A11
description = "Statistics"
purposes = []
scope = "statistics"
window = "retention"
reports = ["annual", "quality"]

[roles.vendor]                            # A13
description = "Vendor"
purposes = ["maintenance"]
scope = "all"
window = "retention"
grant_hours = 2

[people.lead]
name = "Julie Tremblay"
role = "team_lead"
team = "nord"
uid = 2001

[people.agent]
name = "Marc Gagnon"
role = "agent"
team = "nord"
agent_code = "4711"
uid = 2002

[people.director]
name = "Paul Roy"
role = "director"
account = "director"

[people.clerk]
name = "Denis Ferland"
role = "clerk"
uid = 2004

[people.stats]
name = "Anne Caron"
role = "statistician"
uid = 2005

[people.vendor]
name = "Vendor Tech"
role = "vendor"
uid = 2006
"""

LEAD = Caller(2001, None)
AGENT = Caller(2002, None)
DIRECTOR = Caller(3003, "director")
CLERK = Caller(2004, None)
STATS = Caller(2005, None)
VENDOR = Caller(2006, None)
STRANGER = Caller(4242, "mallory")


def stereo_wav(seconds: float = 3.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    left = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    right = (0.3 * np.sin(2 * np.pi * 660 * t) * 32767).astype(np.int16)
    out = io.BytesIO()
    soundfile.write(out, np.stack([left, right], axis=1), 8000, subtype="PCM_16", format="WAV")
    return out.getvalue()


@dataclass
class World:
    policy: Policy
    catalog: Catalog
    desk: AccessDesk
    dir: Path
    recording: int
    wav: bytes

    def trail(self) -> AuditTrail:
        return AuditTrail(self.catalog, default_anchor_path(self.dir))

    def last(self) -> tuple[str, str, str]:
        entry = self.trail().entries()[-1]
        return entry.action, entry.outcome, entry.actor

    def add_recording(self, arrived: datetime, caller: str, agent: str = "4711") -> int:
        call = self.catalog.add_call(
            call_id_a=f"a-{arrived.timestamp()}-{caller}",
            direction="inbound",
            side="external",
            caller_number=caller,
            callee_number="+18886722556",
            arrived_at=arrived,
            agent=agent,
            extension="235",
        )
        path = self.dir / f"rec-{call}.wav"
        path.write_bytes(self.wav)
        path.chmod(0o640)
        recording = self.catalog.add_recording(
            call, name=f"rec-{call}.wav", path=str(path), format="pcm16", created_at=arrived
        )
        self.catalog.finalize_recording(
            recording,
            at=arrived,
            sha256=hashlib.sha256(self.wav).hexdigest(),
            size=len(self.wav),
            duration=3.0,
            expires_at=self.policy.expiry("recordings", arrived),
        )
        return recording


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    policy = parse_policy(POLICY, Path("test.toml"))
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    catalog = Catalog.open(url, migrate=True)
    directory = tmp_path / "recordings"
    directory.mkdir()
    desk = AccessDesk(catalog, default_anchor_path(directory), directory, url)
    world = World(policy, catalog, desk, directory, 0, stereo_wav())
    world.recording = world.add_recording(CALL_AT, "+15145550100")
    try:
        yield world
    finally:
        catalog.close()


def ask(world: World, caller: Caller, purpose: str = "quality", at: datetime = SAME_DAY, **kw):  # type: ignore[no-untyped-def]
    selector = kw.pop("selector", {"recordings": [world.recording]})
    reason = kw.pop("reason", "complaint about call handling, ticket Q-114")
    return world.desk.request(
        world.policy, caller, at, purpose=purpose, reason=reason, selector=selector
    )


def refused(rule: str) -> Any:
    return pytest.raises(AccessRefused, match=rf"\({rule}\)$")


def test_A12_an_unknown_uid_is_refused_and_audited(world: World) -> None:
    with refused("A12"):
        ask(world, STRANGER)
    assert world.last() == ("access.request", "refused", "uid=4242")
    assert world.desk.register.list() == []


def test_A12_whoami_knows_a_person_by_uid_or_account(world: World) -> None:
    assert world.desk.whoami(world.policy, LEAD, SAME_DAY)["person"] == "lead"
    assert world.desk.whoami(world.policy, DIRECTOR, SAME_DAY)["person"] == "director"


def test_P1_a_purpose_outside_the_policy_or_the_role_is_refused(world: World) -> None:
    with refused("P1"):
        ask(world, LEAD, purpose="curiosity")
    with refused("P1"):
        ask(world, LEAD, purpose="complaints")
    assert world.desk.register.list() == []
    entry = world.trail().entries()[-1]
    assert entry.outcome == "refused" and entry.purpose == "complaints"


def test_A3_an_empty_reason_is_refused(world: World) -> None:
    with refused("A3"):
        ask(world, LEAD, reason="   ")


def test_D2_a_reason_holding_a_phone_number_is_refused_and_not_kept(world: World) -> None:
    with refused("D2"):
        ask(world, LEAD, reason="the caller 514 555 0100 complained")
    entry = world.trail().entries()[-1]
    assert entry.outcome == "refused" and "555" not in (entry.reason or "")
    assert world.desk.register.list() == []


def test_A1_a_team_lead_asks_only_on_the_day_of_the_call(world: World) -> None:
    with refused("A1"):
        ask(world, LEAD, at=SAME_DAY + timedelta(days=1))


def test_A7_an_agent_asks_for_their_own_call_only(world: World) -> None:
    other = world.add_recording(CALL_AT, "+15145550199", agent="4712")
    with refused("A7"):
        ask(world, AGENT, selector={"recordings": [other]})
    assert ask(world, AGENT).state.value == "pending"


def test_A11_statistics_only_never_a_recording(world: World) -> None:
    with refused("A11"):
        ask(world, STATS)


def test_A3_nobody_approves_their_own_request(world: World) -> None:
    request = ask(world, DIRECTOR)
    with refused("A3"):
        world.desk.verdict(
            world.policy,
            DIRECTOR,
            SAME_DAY,
            request_id=request.public_id,
            verdict="approved",
            reason=None,
        )
    assert world.desk.register.get(request.public_id).state.value == "pending"


def test_A3_a_team_lead_approves_their_agent_s_request_the_same_day(world: World) -> None:
    request = ask(world, AGENT)
    approved = world.desk.verdict(
        world.policy, LEAD, SAME_DAY, request_id=request.public_id, verdict="approved", reason=None
    )
    assert approved.state.value == "approved"
    # A1: the grant ends at midnight of the call's day, whatever the grant's hours.
    assert approved.valid_until == datetime(2026, 12, 4, tzinfo=MONTREAL)


def test_A9_two_different_people_approve_a_complaint(world: World) -> None:
    requester = Caller(2007, None)
    policy = parse_policy(
        POLICY + '\n[people.quality]\nname = "Q"\nrole = "clerk"\nuid = 2007\n', Path("t.toml")
    )
    world.policy = policy
    request = ask(world, requester, purpose="complaints")
    assert request.approvals_needed == 2
    first = world.desk.verdict(
        policy, DIRECTOR, SAME_DAY, request_id=request.public_id, verdict="approved", reason=None
    )
    assert first.state.value == "pending"
    with refused("A9"):
        world.desk.verdict(
            policy,
            DIRECTOR,
            SAME_DAY,
            request_id=request.public_id,
            verdict="approved",
            reason=None,
        )
    second = world.desk.verdict(
        policy, CLERK, SAME_DAY, request_id=request.public_id, verdict="approved", reason=None
    )
    assert second.state.value == "approved" and second.approvals == 2


def test_A3_a_role_that_does_not_approve_the_purpose_cannot(world: World) -> None:
    request = ask(world, AGENT)
    with refused("A3"):
        world.desk.verdict(
            world.policy,
            CLERK,
            SAME_DAY,
            request_id=request.public_id,
            verdict="approved",
            reason=None,
        )


def test_A4_a_tampered_request_id_is_refused(world: World) -> None:
    request = ask(world, AGENT)
    number, token = request.public_id[1:].split("-")
    forged = f"R{number}-{'a' if token[0] != 'a' else 'b'}{token[1:]}"
    with refused("A4"):
        world.desk.verdict(
            world.policy, LEAD, SAME_DAY, request_id=forged, verdict="approved", reason=None
        )
    with refused("A4"):
        world.desk.read(world.policy, AGENT, SAME_DAY, request_id="R99-zzzzzz", recording_id=None)
    assert world.last()[1] == "refused"


def approved(world: World, caller: Caller = AGENT, approver: Caller = LEAD, **kw):  # type: ignore[no-untyped-def]
    request = ask(world, caller, **kw)
    return world.desk.verdict(
        world.policy,
        approver,
        kw.get("at", SAME_DAY),
        request_id=request.public_id,
        verdict="approved",
        reason=None,
    )


def test_listening_hands_the_exact_file_and_is_audited(world: World) -> None:
    request = approved(world)
    with refused("A3"):
        world.desk.read(
            world.policy, AGENT, SAME_DAY, request_id=ask(world, AGENT).public_id, recording_id=None
        )
    copy = world.desk.read(
        world.policy, AGENT, SAME_DAY, request_id=request.public_id, recording_id=None
    )
    assert copy.data == world.wav
    entry = world.trail().entries()[-1]
    assert (entry.action, entry.object, entry.outcome) == (
        "recording.listen",
        f"recording:{world.recording}",
        "ok",
    )
    assert entry.purpose == "quality" and entry.actor == "agent (uid=2002)"
    with refused("A10"):
        world.desk.read(
            world.policy, LEAD, SAME_DAY, request_id=request.public_id, recording_id=None
        )


def test_A1_a_grant_ends_with_the_window(world: World) -> None:
    request = approved(world)
    with refused("A13"):
        world.desk.read(
            world.policy,
            AGENT,
            SAME_DAY + timedelta(days=1),
            request_id=request.public_id,
            recording_id=None,
        )


def test_A13_a_vendor_grant_is_time_limited(world: World) -> None:
    request = approved(world, VENDOR, DIRECTOR, purpose="maintenance")
    assert request.valid_until == SAME_DAY + timedelta(hours=2)
    world.desk.read(
        world.policy,
        VENDOR,
        SAME_DAY + timedelta(hours=1),
        request_id=request.public_id,
        recording_id=None,
    )
    with refused("A13"):
        world.desk.read(
            world.policy,
            VENDOR,
            SAME_DAY + timedelta(hours=3),
            request_id=request.public_id,
            recording_id=None,
        )


def test_X1_a_file_that_changed_is_never_handed_out(world: World) -> None:
    request = approved(world)
    path = world.dir / f"rec-{world.catalog.get_recording(world.recording).call_id}.wav"  # type: ignore[union-attr]
    path.write_bytes(world.wav[:-2] + b"\x00\x01")
    with refused("X1"):
        world.desk.read(
            world.policy, AGENT, SAME_DAY, request_id=request.public_id, recording_id=None
        )
    assert world.last()[1] == "refused"


def test_X2_an_export_is_sealed_to_the_recipient_and_decrypts_to_the_file(
    world: World, tmp_path: Path
) -> None:
    identity = pyrage.x25519.Identity.generate()
    request = approved(world)
    bundle = world.desk.export(
        world.policy,
        AGENT,
        SAME_DAY,
        request_id=request.public_id,
        recipient=str(identity.to_public()),
    )
    write_bundle(bundle, tmp_path / "out")
    manifest, plain = open_bundle(tmp_path / "out", identity)
    [(_name, data)] = plain.items()
    assert data == world.wav and manifest["request"] == request.public_id
    assert b"RIFF" not in b"".join(f.sealed for f in bundle.files)
    assert world.last()[0] == "recording.export"
    with refused("X2"):
        world.desk.export(
            world.policy, AGENT, SAME_DAY, request_id=request.public_id, recipient="plain-please"
        )


def test_P5_a_training_copy_silences_the_caller_and_names_no_one(world: World) -> None:
    training = approved(world, DIRECTOR, CLERK, purpose="training")
    copy = world.desk.training_copy(
        world.policy,
        DIRECTOR,
        SAME_DAY,
        request_id=training.public_id,
        recording_id=world.recording,
        mute=[(2.0, 2.5)],
    )
    assert copy["name"] == "training_2026-12_001.wav" and copy["month"] == "2026-12"
    assert "call" not in copy and "recording" not in copy
    data, rate = soundfile.read(copy["path"], dtype="int16")
    original, _ = soundfile.read(io.BytesIO(world.wav), dtype="int16")
    assert rate == 8000
    assert not data[:8000, 0].any() and not data[16000:20000, 0].any()  # policy + asked ranges
    assert (data[8000:16000, 0] == original[8000:16000, 0]).all()
    assert (data[:, 1] == original[:, 1]).all()  # the agent's side is kept
    assert world.last()[0] == "training_copy.make"
    quality = approved(world)
    with refused("P5"):
        world.desk.training_copy(
            world.policy,
            AGENT,
            SAME_DAY,
            request_id=quality.public_id,
            recording_id=world.recording,
        )


def test_P6_a_summary_sheet_is_kept_with_its_own_retention(world: World) -> None:
    request = approved(world)
    sheet = world.desk.summary(
        world.policy,
        AGENT,
        SAME_DAY,
        request_id=request.public_id,
        recording_id=world.recording,
        text="Caller asked for a refund; agent explained the procedure.",
    )
    assert sheet["expires_at"].startswith("2027-12")
    with refused("D2"):
        world.desk.summary(
            world.policy,
            AGENT,
            SAME_DAY,
            request_id=request.public_id,
            recording_id=world.recording,
            text="call back on 514-555-0100",
        )


def test_R2_subject_access_finds_a_number_however_it_was_written(
    world: World, tmp_path: Path
) -> None:
    world.add_recording(CALL_AT + timedelta(hours=1), "5145550100")  # national form
    world.add_recording(CALL_AT + timedelta(hours=2), "+15145550199")  # someone else
    identity = pyrage.x25519.Identity.generate()
    with refused("R2"):
        world.desk.subject_access(
            world.policy,
            LEAD,
            SAME_DAY,
            number="+1 514 555 0100",
            since=None,
            until=None,
            recipient=None,
            reason="request of 2026-12-03, identity checked",
        )
    answer, bundle = world.desk.subject_access(
        world.policy,
        DIRECTOR,
        SAME_DAY,
        number="(514) 555-0100",
        since="2026-12-01",
        until="2026-12-03",
        recipient=str(identity.to_public()),
        reason="request of 2026-12-03, identity checked",
    )
    assert len(answer["calls"]) == 2 and len(answer["recordings"]) == 2
    assert bundle is not None and len(bundle.files) == 2
    write_bundle(bundle, tmp_path / "subject")
    _manifest, plain = open_bundle(tmp_path / "subject", identity)
    assert all(data == world.wav for data in plain.values())
    entry = world.trail().entries()[-1]
    assert entry.action == "subject_access" and "555" not in str(entry.to_json())


def test_A5_the_trail_verifies_after_a_whole_flow(world: World) -> None:
    request = approved(world)
    world.desk.read(world.policy, AGENT, SAME_DAY, request_id=request.public_id, recording_id=None)
    actions = [entry.action for entry in world.trail().entries()]
    assert actions == ["access.request", "access.approve", "recording.listen"]
    assert world.trail().verify().ok


def test_P5_P6_no_copy_the_policy_gives_no_retention_for(world: World) -> None:
    training = approved(world, DIRECTOR, CLERK, purpose="training")
    quality = approved(world)
    world.policy = parse_policy(
        POLICY.replace('training_copies = "1 year"', "").replace('summary_sheets = "1 year"', ""),
        Path("t.toml"),
    )
    with refused("P5"):
        world.desk.training_copy(
            world.policy,
            DIRECTOR,
            SAME_DAY,
            request_id=training.public_id,
            recording_id=world.recording,
        )
    with refused("P6"):
        world.desk.summary(
            world.policy,
            AGENT,
            SAME_DAY,
            request_id=quality.public_id,
            recording_id=world.recording,
            text="a summary",
        )
    assert world.desk.register.training_copies() == []
    assert not (world.dir / "training").exists()
