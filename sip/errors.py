"""Errors of the SIP layers.

`RemoteProtocolError` is for what the peer sent: its `status_hint` is the response a UAS
should answer with (400 unless a more precise code applies: 413, 416, 420, 505, ...).
For a malformed *response* there is nothing to answer; the hint is informative and the
response is dropped. `LocalProtocolError` is for misuse of the library by our own code.
"""

from __future__ import annotations

from collections.abc import Iterable


class RemoteProtocolError(Exception):
    """The peer sent something we cannot accept; answer `status_hint` (requests only)."""

    def __init__(self, msg: str, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint


class BadExtensionError(RemoteProtocolError):
    """Require / Proxy-Require named option tags we do not support (answer 420).

    `unsupported` lists them for the Unsupported header field of the 420 response.
    """

    def __init__(self, msg: str, unsupported: Iterable[str]) -> None:
        super().__init__(msg, 420)
        self.unsupported: tuple[str, ...] = tuple(unsupported)


class LocalProtocolError(Exception):
    """Our own code misused the library (bad header name, CR/LF injected in a value...)."""
