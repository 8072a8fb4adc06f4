"""The access socket's commands: JSON requests in, the desk's answers out (asyncio adapter).

The service serves these on a socket of their own (`access.sock`, 0666): anyone local may
connect, because who they are is the peer's uid (SO_PEERCRED), looked up in the policy's
nominative list by the desk, and an unknown uid is refused and audited (A12). The desk is
blocking, so each command runs on one thread of its own, in order.

    {"cmd": "whoami"}
    {"cmd": "request", "purpose": P, "reason": R, "recordings": [..] | "calls": [..]
                       | "number": N, "from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}
    {"cmd": "approve" | "deny", "request": "R12-abc123", "reason": R}
    {"cmd": "requests", "state": "pending" | "approved" | "denied" | null}
    {"cmd": "listen", "request": ID, "recording": N | null}     -> WAV bytes follow
    {"cmd": "export", "request": ID, "recipient": "age1..."}    -> sealed files follow
    {"cmd": "training-copy", "request": ID, "recording": N, "mute": [[s, e], ...]}
    {"cmd": "summary", "request": ID, "recording": N, "text": T}
    {"cmd": "subject-access", "number": N, "from": D, "to": D, "reason": R,
                              "recipient": "age1..." | null}  -> sealed files follow
    {"cmd": "report", "kind": "annual" | "quality" | "inventory" | "people", "year": Y,
                      "from": D, "to": D, "per_agent": bool, "role": R}

A refusal is `{"ok": false, "error": "refused", "rule": "A9", "message": "..."}`.
"""

from __future__ import annotations

import asyncio
import pwd
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder.access.desk import AccessDesk
from recorder.access.sealing import SealedBundle
from recorder.access.workflow import AccessRefused, Caller
from recorder.ops.control import Actor, Command, ControlServer, Reply
from recorder.policy.model import Policy
from storage.audit import default_anchor_path
from storage.repository import Catalog

Handler = Callable[[Policy, Caller, datetime, Mapping[str, Any]], Reply]


class _BadField(Exception):
    pass


def caller_of(actor: Actor) -> Caller:
    """The peer's uid and, when the system knows it, its login name."""
    if actor.uid is None:
        return Caller(uid=None, account=None)
    try:
        account: str | None = pwd.getpwuid(actor.uid).pw_name
    except KeyError:
        account = None
    return Caller(uid=actor.uid, account=account)


def _text(request: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = request.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _BadField(f"{key!r} must be a string")
    return value


def _int(request: Mapping[str, Any], key: str, *, required: bool = True) -> int | None:
    value = request.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadField(f"{key!r} must be a catalog id")
    return value


def _ranges(request: Mapping[str, Any]) -> list[tuple[float, float]]:
    value = request.get("mute") or []
    if not isinstance(value, list):
        raise _BadField("'mute' must be a list of [start, end]")
    ranges = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            raise _BadField("'mute' must be a list of [start, end]")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in item):
            raise _BadField("'mute' must be a list of [start, end]")
        ranges.append((float(item[0]), float(item[1])))
    return ranges


def _bundle_reply(answer: dict[str, Any], bundle: SealedBundle) -> Reply:
    files = [*bundle.files, bundle.manifest]
    sums = bundle.sha256sums.encode()
    answer["files"] = [{"name": f.name, "bytes": len(f.sealed)} for f in files]
    answer["files"].append({"name": "SHA256SUMS", "bytes": len(sums)})
    return answer, b"".join(f.sealed for f in files) + sums


class AccessCommands:
    """The command table for `ControlServer(commands=...)`, over one desk."""

    def __init__(self, desk: AccessDesk, policy: Callable[[], Policy]) -> None:
        self.desk = desk
        self.policy = policy
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access")
        self.handlers: dict[str, Handler] = {
            "whoami": self._whoami,
            "request": self._request,
            "approve": self._approve,
            "deny": self._deny,
            "requests": self._requests,
            "listen": self._listen,
            "export": self._export,
            "training-copy": self._training_copy,
            "summary": self._summary,
            "subject-access": self._subject_access,
            "report": self._report,
        }

    def table(self) -> dict[str, Command]:
        return {name: self._command(handler) for name, handler in self.handlers.items()}

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def _command(self, handler: Handler) -> Command:
        async def run(request: Mapping[str, Any], actor: Actor) -> Reply:
            caller = caller_of(actor)
            policy = self.policy()
            now = datetime.now(UTC)
            loop = asyncio.get_running_loop()

            def call() -> Reply:
                try:
                    return handler(policy, caller, now, request)
                except AccessRefused as refusal:
                    return {"ok": False, "error": "refused", **refusal.to_json()}
                except _BadField as exc:
                    return {"ok": False, "error": "bad_request", "message": str(exc)}

            return await loop.run_in_executor(self.executor, call)

        return run

    def _whoami(
        self, policy: Policy, caller: Caller, now: datetime, _r: Mapping[str, Any]
    ) -> Reply:
        return {"ok": True, **self.desk.whoami(policy, caller, now)}

    def _request(
        self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        selector = {k: r[k] for k in ("recordings", "calls", "number", "from", "to") if k in r}
        info = self.desk.request(
            policy,
            caller,
            now,
            purpose=_text(r, "purpose") or "",
            reason=_text(r, "reason") or "",
            selector=selector,
        )
        return {"ok": True, "request": info.to_json()}

    def _verdict(
        self, verdict: str, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        info = self.desk.verdict(
            policy,
            caller,
            now,
            request_id=_text(r, "request") or "",
            verdict=verdict,
            reason=_text(r, "reason", required=False),
        )
        return {"ok": True, "request": info.to_json()}

    def _approve(
        self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        return self._verdict("approved", policy, caller, now, r)

    def _deny(self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]) -> Reply:
        return self._verdict("denied", policy, caller, now, r)

    def _requests(
        self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        state = _text(r, "state", required=False)
        if state not in (None, "pending", "approved", "denied"):
            raise _BadField("'state' is pending, approved or denied")
        rows = self.desk.requests(policy, caller, now, state=state)
        return {"ok": True, "requests": [info.to_json() for info in rows]}

    def _listen(self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]) -> Reply:
        copy = self.desk.read(
            policy,
            caller,
            now,
            request_id=_text(r, "request") or "",
            recording_id=_int(r, "recording", required=False),
        )
        answer = {
            "ok": True,
            "recording": copy.recording.id,
            "name": copy.recording.name,
            "sha256": copy.recording.sha256,
        }
        return answer, copy.data

    def _export(self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]) -> Reply:
        bundle = self.desk.export(
            policy,
            caller,
            now,
            request_id=_text(r, "request") or "",
            recipient=_text(r, "recipient") or "",
        )
        return _bundle_reply({"ok": True}, bundle)

    def _training_copy(
        self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        copy = self.desk.training_copy(
            policy,
            caller,
            now,
            request_id=_text(r, "request") or "",
            recording_id=_int(r, "recording") or 0,
            mute=_ranges(r),
        )
        return {"ok": True, "training_copy": copy}

    def _summary(
        self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        sheet = self.desk.summary(
            policy,
            caller,
            now,
            request_id=_text(r, "request") or "",
            recording_id=_int(r, "recording") or 0,
            text=_text(r, "text") or "",
        )
        return {"ok": True, "summary": sheet}

    def _report(self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]) -> Reply:
        view = self.desk.report(policy, caller, now, kind=_text(r, "kind") or "", params=r)
        return {"ok": True, "report": view}

    def _subject_access(
        self, policy: Policy, caller: Caller, now: datetime, r: Mapping[str, Any]
    ) -> Reply:
        answer, bundle = self.desk.subject_access(
            policy,
            caller,
            now,
            number=_text(r, "number") or "",
            since=_text(r, "from", required=False),
            until=_text(r, "to", required=False),
            recipient=_text(r, "recipient", required=False),
            reason=_text(r, "reason") or "",
        )
        reply = {"ok": True, "findings": answer}
        return reply if bundle is None else _bundle_reply(reply, bundle)


ACCESS_SOCKET_NAME = "access.sock"
ACCESS_SOCKET_MODE = 0o666  # identity is the peer's uid, checked per command (A12)


class AccessServer:
    """The desk on its socket, with its own catalog connection and thread (`recorder serve`)."""

    def __init__(self, path: Path, catalog: Catalog, desk: AccessDesk, commands: AccessCommands):
        self.path = path
        self.catalog = catalog
        self.desk = desk
        self.commands = commands
        self.server = ControlServer(path, None, commands=commands.table(), mode=ACCESS_SOCKET_MODE)

    @classmethod
    async def start(
        cls,
        path: Path,
        database: str,
        storage_dir: Path,
        policy: Callable[[], Policy],
        journal: Path | None = None,
    ) -> AccessServer:
        loop = asyncio.get_running_loop()
        catalog = await loop.run_in_executor(None, lambda: Catalog.open(database, create=False))
        anchor = default_anchor_path(storage_dir)
        desk = AccessDesk(catalog, anchor, storage_dir, database, journal)
        server = cls(path, catalog, desk, AccessCommands(desk, policy))
        try:
            await server.server.start()
        except BaseException:
            server.commands.close()
            catalog.close()
            raise
        return server

    async def close(self) -> None:
        await self.server.close()
        await asyncio.get_running_loop().run_in_executor(None, self.commands.close)
        self.catalog.close()


def access_socket_path(configured: Path | None, control_socket: Path) -> Path:
    """`service.access_socket`, else `access.sock` beside the control socket."""
    return configured if configured is not None else control_socket.with_name(ACCESS_SOCKET_NAME)
