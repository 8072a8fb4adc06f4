"""The recorder's Contact URIs, and where a SIP URI says a request goes (RFC 3263, RFC 5630).

A leg over TLS advertises `sip:...;transport=tls` at the side's TLS port rather than `sips:`:
RFC 5630 §3.1.3 keeps `sips:` for a path secure end to end, which a B2BUA cannot promise.
"""

from __future__ import annotations

from recorder.config import SipSide
from sip.uri import SipUri

Address = tuple[str, int]

__all__ = ["contact_uri", "uri_target"]

_WILDCARD = ("0.0.0.0", "::", "")


def contact_uri(user: str, side: SipSide, contact_host: Address, transport: str) -> SipUri:
    """Our Contact on `side` for a leg over `transport`; `contact_host` is the side's
    advertised (host, port) for UDP and TCP."""
    host, port = contact_host
    params: dict[str, str | None] = {}
    if transport.upper() == "TLS" and side.tls is not None:
        tls_host, port = side.tls.listen
        if tls_host not in _WILDCARD:
            host = tls_host
        params["transport"] = "tls"
    return SipUri("sip", user, None, host, port, params, {})


def uri_target(uri: SipUri) -> tuple[Address, str]:
    """(host, port) and transport of a request sent to `uri` without DNS (RFC 3263 §4.1,
    §4.2): `sips:` and `;transport=tls` mean TLS, port 5061 unless given; `;transport=tcp`
    TCP; else UDP on 5060."""
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    transport = (uri.params.get("transport") or "udp").upper()
    if uri.scheme == "sips" or transport == "TLS":
        return (host, uri.port or 5061), "TLS"
    return (host, uri.port or 5060), "TCP" if transport == "TCP" else "UDP"
