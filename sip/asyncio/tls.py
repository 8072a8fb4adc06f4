"""TLS for SIP (RFC 3261 §26, RFC 5630): the SSL contexts and what an endpoint needs to use them.

Only the asyncio adapter touches TLS: the transaction layer just sees a reliable transport
named "TLS". Standard library `ssl` only; TLS 1.2 is the floor (RFC 8996 retired 1.0/1.1).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "TlsSettings",
    "client_context",
    "describe_tls_error",
    "server_context",
    "tls_settings",
]

Address = tuple[str, int]
# A peer that opens a connection and never finishes its handshake holds a socket: not for long.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What `SipEndpoint.start(..., tls=...)` needs for SIP over TLS.

    `listen`: where to accept TLS connections (None: outbound only); it needs
    `server_context`. `client_context` is used for connections we open; the peer's
    certificate is checked against `server_name` when set, else the destination's host.
    `sent_by`: the Via sent-by of requests sent over TLS (default: the endpoint's sent-by
    host with the bound TLS port).
    """

    client_context: ssl.SSLContext
    server_context: ssl.SSLContext | None = None
    listen: Address | None = None
    server_name: str | None = None
    sent_by: Address | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


def _floor(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(
    cert: str | Path, key: str | Path, *, ca: str | Path | None = None, verify_client: bool = False
) -> ssl.SSLContext:
    """The context for inbound TLS. With `verify_client`, a client certificate is required
    and must chain to `ca` (default: the system CAs)."""
    context = _floor(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(str(cert), str(key))
    if verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def client_context(
    *,
    ca: str | Path | None = None,
    verify: bool = True,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> ssl.SSLContext:
    """The context for outbound TLS. `verify`: the server's certificate must chain to `ca`
    (default: the system CAs) and name the host asked for. `cert`/`key` are presented when
    the server asks for a client certificate (mutual TLS with a trunk or a PBX)."""
    context = _floor(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if verify:
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


def tls_settings(
    *,
    cert: str | Path,
    key: str | Path,
    listen: Address | None,
    ca: str | Path | None = None,
    verify_server: bool = True,
    verify_client: bool = False,
    server_name: str | None = None,
    sent_by: Address | None = None,
) -> TlsSettings:
    """Both contexts from one certificate: ours as server, and as client when asked for."""
    return TlsSettings(
        client_context=client_context(ca=ca, verify=verify_server, cert=cert, key=key),
        server_context=server_context(cert, key, ca=ca, verify_client=verify_client),
        listen=listen,
        server_name=server_name,
        sent_by=sent_by,
    )


def describe_tls_error(exc: BaseException) -> str:
    """One short reason for a failed handshake, as an admin can act on it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        # The OpenSSL reason ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "WRONG_VERSION_NUMBER")
        # says it best; the full message carries file and line numbers of OpenSSL.
        return (exc.reason or str(exc)).replace("_", " ").lower()
    if isinstance(exc, ConnectionAbortedError | TimeoutError):
        return "no handshake in time"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        # Mostly a peer that refused our certificate without saying so in an alert.
        return "closed by the peer during the handshake (does it trust our certificate?)"
    return str(exc) or type(exc).__name__
