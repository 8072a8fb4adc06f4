"""Copies the policy lets a request make: de-identified training copies (P5) and written
summary sheets (P6), each with its own retention class, each audited."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from recorder.access.deidentify import deidentified_wav, month_name
from recorder.access.desk_base import MAX_SUMMARY, DeskBase, write_private
from recorder.access.workflow import (
    AccessRefused,
    Caller,
)
from recorder.policy.model import Policy
from storage import audit


class DeskCopies(DeskBase):
    def training_copy(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        recording_id: int,
        mute: Sequence[tuple[float, float]] = (),
    ) -> dict[str, Any]:
        """P5: a copy kept for training, the caller's identifying parts silenced, no number,
        no agent, no date finer than the month; its own retention (training_copies)."""
        with self._step(
            policy, caller, now, "training_copy.make", f"request:{request_id}"
        ) as person:
            info, rows = self._granted(policy, person, now, request_id, [recording_id])
            purpose = policy.purposes[info.purpose]
            if not purpose.deidentify:
                raise AccessRefused(
                    "P5", f"{info.purpose} is not a purpose that keeps training copies"
                )
            expires = policy.expiry("training_copies", now)
            if expires is None:
                raise AccessRefused("P5", "the policy sets no retention.training_copies")
            recording = rows[recording_id][0]
            self._verified(recording)
            assert recording.path is not None  # _verified refuses a destroyed recording
            ranges = [*purpose.mute_seconds, *mute]
            try:
                data = deidentified_wav(Path(recording.path), ranges, channels="left")
            except ValueError as exc:
                raise AccessRefused("P5", str(exc)) from None
            month = now.astimezone(policy.timezone)
            directory = self.storage_dir / "training" / f"{month:%Y-%m}"
            index = len(self.register.training_copies()) + 1
            # A file without its row (a crash between the two) keeps its name: never replaced.
            while (directory / month_name(month, index)).exists():
                index += 1
            name = month_name(month, index)
            path = write_private(directory, name, data)
            digest = hashlib.sha256(data).hexdigest()
            copy = self.register.add_training_copy(
                at=now,
                name=name,
                month=f"{month:%Y-%m}",
                path=str(path),
                node=None,
                sha256=digest,
                size=len(data),
                duration=recording.duration or 0.0,
                expires_at=expires,
            )
            # Provenance lives in the trail only: the copy's row cannot lead back to the call.
            self._trace(
                now,
                self._actor(caller, person),
                "training_copy.make",
                f"training_copy:{copy.id}",
                "ok",
                purpose=info.purpose,
                reason=info.reason,
                detail={"request": info.public_id, "recording": recording_id, "muted": ranges},
            )
            return copy.to_json()

    def summary(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        recording_id: int,
        text: str,
    ) -> dict[str, Any]:
        """P6: a written summary sheet derived from a recording, with its own retention."""
        with self._step(policy, caller, now, "summary.add", f"request:{request_id}") as person:
            info, _rows = self._granted(policy, person, now, request_id, [recording_id])
            body = text.strip()
            if not body:
                raise AccessRefused("P6", "a summary sheet needs a text")
            if len(body) > MAX_SUMMARY:
                raise AccessRefused("P6", f"a summary sheet is at most {MAX_SUMMARY} characters")
            if audit.contains_phone_number(body):
                raise AccessRefused("D2", "a summary sheet must not hold a phone number")
            expires = policy.expiry("summary_sheets", now)
            if expires is None:
                raise AccessRefused("P6", "the policy sets no retention.summary_sheets")
            sheet = self.register.add_summary(
                at=now,
                author=person.id,
                recording_id=recording_id,
                request_id=info.id,
                text=body,
                expires_at=expires,
            )
            self._trace(
                now,
                self._actor(caller, person),
                "summary.add",
                f"summary:{sheet.id}",
                "ok",
                purpose=info.purpose,
                reason=info.reason,
                detail={"request": info.public_id, "recording": recording_id},
            )
            return sheet.to_json()
