"""Console sessions, sans-IO: opaque tokens, idle and absolute timeouts, a CSRF token each.

The browser holds only a random token (an HttpOnly cookie); who it stands for lives here,
in the service's memory, so a restart logs everyone out and nothing about a session can be
forged or read from the cookie. Time is passed in (`now`, monotonic seconds).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

MAX_SESSIONS = 1000
ABSOLUTE_SECONDS = 12 * 3600.0  # a working day, whatever the activity


@dataclass(slots=True)
class Session:
    token: str
    person: str
    csrf: str
    started: float
    last_seen: float
    flashes: list[str] = field(default_factory=list)


class SessionStore:
    def __init__(self, idle_seconds: float, *, absolute_seconds: float = ABSOLUTE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, person: str, now: float) -> Session:
        self.expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.token]
        session = Session(
            token=secrets.token_urlsafe(32),
            person=person,
            csrf=secrets.token_urlsafe(32),
            started=now,
            last_seen=now,
        )
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session of `token`, touched; None if unknown, idle too long, or too old."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if self._expired(session, now):
            del self._sessions[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def close_person(self, person: str) -> None:
        for token in [t for t, s in self._sessions.items() if s.person == person]:
            del self._sessions[token]

    def expire(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[token]

    def _expired(self, session: Session, now: float) -> bool:
        idle = now - session.last_seen > self.idle_seconds
        return idle or now - session.started > self.absolute_seconds


def same_token(expected: str, given: object) -> bool:
    """Constant-time comparison of a CSRF token from a form."""
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)
