"""The deployment part of `policy.toml`: SIP sides, media ports, storage, service.

Built once into frozen objects; every error names the file, the line and the key
so that an admin can fix a bad file without reading code.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sip.asyncio.tls import TlsSettings, server_context, tls_settings

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """One or more problems in a policy file; `problems` holds `FILE:LINE: key: message` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SipTls:
    """SIP over TLS on one side (`tls_*` keys): on whenever `tls_cert` is set."""

    cert: Path
    key: Path
    listen: Address  # where TLS is accepted
    ca: Path | None = None  # peers' certificates chain to this bundle; None: the system CAs
    verify_server: bool = True  # next_hop's certificate must verify and name it
    verify_client: bool = False  # inbound TLS needs a client certificate chaining to `ca`
    server_name: str | None = None  # the name next_hop's certificate must carry; None: its host

    def settings(self, advertised_host: str) -> TlsSettings:
        """The endpoint's TlsSettings. Via names tls_listen's host, or `advertised_host`
        (the side's) when TLS listens on all addresses."""
        host = self.listen[0]
        if host in ("0.0.0.0", "::", ""):
            host = advertised_host
        return tls_settings(
            cert=self.cert,
            key=self.key,
            listen=self.listen,
            ca=self.ca,
            verify_server=self.verify_server,
            verify_client=self.verify_client,
            server_name=self.server_name,
            sent_by=(host, self.listen[1]),
        )


@dataclass(frozen=True, slots=True)
class SipSide:
    name: str  # "external" (trunk) or "internal" (PBX)
    listen: Address
    allow: tuple[Network, ...]
    next_hop: Address
    transport: str = "udp"  # transport used towards next_hop: udp, tcp or tls
    tls: SipTls | None = None
    # SDES-SRTP on this side (issue 21): "mirror" what the other side does, "require" it
    # (plain RTP offers get 488), or "off" (SRTP offers get 488).
    srtp: str = "mirror"

    def allows(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.allow)


@dataclass(frozen=True, slots=True)
class MediaConfig:
    address: str
    port_first: int
    port_last: int
    # May one leg be SRTP and the other plain RTP? Off by default: a call encrypted on one
    # side must not go out in clear on the other unless the policy says so (issue 21).
    srtp_mixed: bool = False
    # Media worker processes relaying the RTP (issue 18); 0 = the service's own loop does.
    workers: int = 0
    # Who forwards the RTP: "relay" (in process) or "rtpengine" (driven over its ng protocol
    # at `rtpengine`, recordings read from its pcap spool `rtpengine_spool`; issue 19).
    engine: str = "relay"
    rtpengine: Address = ("127.0.0.1", 2223)
    rtpengine_spool: Path = Path("/var/spool/rtpengine")


MAX_MEDIA_WORKERS = 64


def _media_workers(reader: _Reader, media: Mapping[str, Any]) -> int:
    """`media.workers`: "auto" (the default: one per core), or 0 (the service relays in its
    own loop) to MAX_MEDIA_WORKERS."""
    value = media.get("workers", "auto")
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MEDIA_WORKERS:
        reader.error(
            "media.workers",
            f'must be "auto" or a whole number from 0 to {MAX_MEDIA_WORKERS}, got {value!r}',
        )
        return 0
    return value


WHEN_FULL = ("connect_unrecorded", "reject")
MEDIA_ENGINES = ("relay", "rtpengine")
# A node name is one path component: letters, digits, dot, dash, underscore; not all digits
# (storage.dir/YYYY/ is the layout of recordings made before node names), not `training`.
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_NOT_NODES = frozenset({"training"})


def node_problem(name: str) -> str | None:
    """Why `name` cannot be a node name, or None."""
    if not _NODE.fullmatch(name):
        return "must be 1-63 letters, digits, '.', '-' or '_', starting with a letter or digit"
    if name.isdigit() or name in _NOT_NODES:
        return f"{name!r} is reserved (a year directory, or the training copies' directory)"
    return None


def default_node() -> str:
    """The host name's first label when it is a usable node name, else `node`."""
    name = socket.gethostname().split(".")[0]
    return name if node_problem(name) is None else "node"


SRTP_MODES = ("mirror", "require", "off")
JOURNAL_NAME = "catalog-journal.jsonl"


@dataclass(frozen=True, slots=True)
class StorageConfig:
    dir: Path
    database: str
    # A call that must be recorded while storage.dir is full (issue 20): connected without a
    # recording, or refused with 503 (for services that must never have an unrecorded call).
    when_full: str = "connect_unrecorded"
    # Below this much free space in storage.dir, new recordings are not started ("full").
    min_free_mb: float = 64.0
    # Where call-log writes wait while the catalog is unavailable (issue 20); None: beside
    # storage.dir, on the recorder's own disk.
    journal: Path | None = None

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 1024 * 1024)

    @property
    def journal_path(self) -> Path:
        return self.journal if self.journal is not None else self.dir.parent / JOURNAL_NAME


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    timezone: ZoneInfo
    user_agent: str = "recorder"
    ring_timeout: float = 180.0  # seconds a PBX may ring before the call is cancelled
    drain_seconds: float = 30.0
    # The lawful-use socket (A12): None = `access.sock` beside the control socket.
    access_socket: Path | None = None
    # This node's name (issue 19): its recordings go under storage.dir/NODE/ and their
    # catalog rows carry it; several nodes share one catalog and one storage root.
    node: str = field(default_factory=lambda: default_node())


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: tuple[str, int] | None = None  # no metrics endpoint unless configured


@dataclass(frozen=True, slots=True)
class Limits:
    """`[limits]`: admission of new calls (recorder.call.limits); None turns a limit off."""

    per_source_rate: float | None = 100.0  # new calls per second from one address
    per_source_burst: int = 200
    global_rate: float | None = 400.0  # new calls per second from all addresses together
    global_burst: int = 800
    max_calls: int | None = None  # concurrent calls; the media port pool bounds it anyway


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The web console (issue 17): off unless `listen` is set; HTTPS when a cert is given."""

    listen: tuple[str, int] | None = None
    cert: Path | None = None
    key: Path | None = None
    idle_minutes: float = 15.0


@dataclass(frozen=True, slots=True)
class SipTimers:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    service: ServiceConfig
    external: SipSide
    internal: SipSide
    media: MediaConfig
    storage: StorageConfig
    timers: SipTimers = field(default_factory=SipTimers)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    limits: Limits = field(default_factory=Limits)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def srtp_sides(self, caller_side: str) -> dict[str, tuple[str, str]]:
        """Role -> (side name, SRTP mode) for a call coming in on `caller_side`."""
        a, b = (
            (self.external, self.internal)
            if caller_side == self.external.name
            else (self.internal, self.external)
        )
        return {"a": (a.name, a.srtp), "b": (b.name, b.srtp)}


_KNOWN_TOP = {"service", "sip", "media", "storage", "metrics", "console", "limits"}
# Tables owned by the policy engine (rules, notice, retention, people): read elsewhere.
_POLICY_TABLES = {
    "policy",
    "recording",
    "windows",
    "sampling",
    "notice",
    "consent",
    "naming",
    "agents",
    "retention",
    "extensions",
    "purposes",
    "roles",
    "people",
    "reports",
    "passwords",
}


class _Reader:
    """Collects every problem instead of stopping at the first, with line numbers."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.problems: list[str] = []

    def line_of(self, dotted: str) -> int:
        """Best-effort line of `a.b.key`: the key's line inside its table, else the table's."""
        parts = dotted.split(".")
        key = parts[-1]
        table = ".".join(parts[:-1])
        in_table = table == ""
        table_line = 0
        for number, line in enumerate(self.lines, start=1):
            stripped = line.strip()
            header = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", stripped)
            if header:
                in_table = header.group(1).replace(" ", "") == table
                if in_table:
                    table_line = number
                continue
            if in_table and re.match(rf'"?{re.escape(key)}"?\s*=', stripped):
                return number
        if table_line:
            return table_line
        for number, line in enumerate(self.lines, start=1):
            if re.fullmatch(rf"\[\s*{re.escape(dotted)}\s*\]", line.strip()):
                return number
        return 0

    def error(self, dotted: str, message: str) -> None:
        self.problems.append(f"{self.path}:{self.line_of(dotted)}: {dotted}: {message}")

    def table(self, data: Mapping[str, Any], dotted: str, known: set[str]) -> Mapping[str, Any]:
        value = data.get(dotted.split(".")[-1], {})
        if not isinstance(value, dict):
            self.error(dotted, "must be a table")
            return {}
        for key in value:
            if key not in known:
                self.error(f"{dotted}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        return value

    def string(self, table: Mapping[str, Any], dotted: str, default: str | None = None) -> str:
        key = dotted.split(".")[-1]
        value = table.get(key, default)
        if value is None:
            self.error(dotted, "is required")
            return ""
        if not isinstance(value, str):
            self.error(dotted, f"must be a string, not {type(value).__name__}")
            return ""
        return value

    def boolean(self, table: Mapping[str, Any], dotted: str, default: bool) -> bool:
        value = table.get(dotted.split(".")[-1], default)
        if not isinstance(value, bool):
            self.error(dotted, f"must be true or false, not {type(value).__name__}")
            return default
        return value

    def readable_file(self, table: Mapping[str, Any], dotted: str) -> Path | None:
        """A path that must name a readable file now (certificates, keys); None if unset."""
        text = self.string(table, dotted, "")
        if not text:
            return None
        path = Path(text)
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            self.error(dotted, f"cannot read {text!r}: {exc.strerror}")
            return None
        return path

    def number(
        self, table: Mapping[str, Any], dotted: str, default: float, minimum: float
    ) -> float:
        value = table.get(dotted.split(".")[-1], default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(dotted, f"must be a number, not {type(value).__name__}")
            return default
        if value < minimum:
            self.error(dotted, f"must be >= {minimum}, got {value}")
            return default
        return float(value)

    def address(self, table: Mapping[str, Any], dotted: str, default: str | None = None) -> Address:
        text = self.string(table, dotted, default)
        if not text:
            return ("0.0.0.0", 0)
        parsed = parse_address(text)
        if parsed is None:
            self.error(dotted, f"must be HOST:PORT, got {text!r}")
            return ("0.0.0.0", 0)
        return parsed


def parse_address(text: str) -> Address | None:
    match = re.fullmatch(r"\[?([0-9A-Za-z.:\-]+?)\]?:(\d{1,5})", text.strip())
    if not match:
        return None
    port = int(match.group(2))
    if not 0 < port < 65536:
        return None
    return match.group(1), port


_TLS_KEYS = {
    "tls_listen",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "tls_verify_server",
    "tls_verify_client",
    "tls_server_name",
}


def _read_tls(
    reader: _Reader, table: Mapping[str, Any], dotted: str, listen: Address, transport: str
) -> SipTls | None:
    """The side's `tls_*` keys: None (no TLS) unless `tls_cert` is set."""
    if "tls_cert" not in table:
        given = sorted(k for k in _TLS_KEYS if k in table)
        if transport == "tls" or given:
            why = "transport = 'tls'" if transport == "tls" else f"{given[0]} is set"
            reader.error(f"{dotted}.tls_cert", f"is required when {why}")
        return None
    cert = reader.readable_file(table, f"{dotted}.tls_cert")
    if "tls_key" not in table:
        reader.error(f"{dotted}.tls_key", "is required with tls_cert")
    key = reader.readable_file(table, f"{dotted}.tls_key")
    ca = reader.readable_file(table, f"{dotted}.tls_ca")
    host, port = listen
    tls_listen = reader.address(table, f"{dotted}.tls_listen", f"{host}:{min(port + 1, 65535)}")
    if tls_listen[1] == port:
        reader.error(f"{dotted}.tls_listen", f"must differ from {dotted}.listen (TCP is there)")
    verify_client = reader.boolean(table, f"{dotted}.tls_verify_client", False)
    tls = SipTls(
        cert=cert or Path(),
        key=key or Path(),
        listen=tls_listen,
        ca=ca,
        verify_server=reader.boolean(table, f"{dotted}.tls_verify_server", True),
        verify_client=verify_client,
        server_name=reader.string(table, f"{dotted}.tls_server_name", "") or None,
    )
    if cert is not None and key is not None:
        try:
            # Loaded now so that a key of another certificate, or a file that is no PEM,
            # stops the start with its key named, not the first TLS connection.
            server_context(cert, key, ca=ca, verify_client=verify_client)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reader.error(f"{dotted}.tls_cert", f"cannot be used with tls_key/tls_ca: {exc}")
    return tls


def _read_side(reader: _Reader, sip: Mapping[str, Any], name: str) -> SipSide:
    dotted = f"sip.{name}"
    table = reader.table(
        sip, dotted, {"listen", "allow", "next_hop", "transport", "srtp"} | _TLS_KEYS
    )
    listen = reader.address(table, f"{dotted}.listen")
    next_hop = reader.address(table, f"{dotted}.next_hop")
    transport = reader.string(table, f"{dotted}.transport", "udp").lower()
    if transport not in ("udp", "tcp", "tls"):
        reader.error(f"{dotted}.transport", f"must be 'udp', 'tcp' or 'tls', got {transport!r}")
    tls = _read_tls(reader, table, dotted, listen, transport)
    srtp = reader.string(table, f"{dotted}.srtp", "mirror").lower()
    if srtp not in SRTP_MODES:
        reader.error(f"{dotted}.srtp", f"must be 'mirror', 'require' or 'off', got {srtp!r}")
        srtp = "mirror"
    allow_raw = table.get("allow", [])
    networks: list[Network] = []
    if not isinstance(allow_raw, list) or not all(isinstance(a, str) for a in allow_raw):
        reader.error(f"{dotted}.allow", "must be a list of CIDR strings")
    else:
        for cidr in allow_raw:
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                reader.error(f"{dotted}.allow", f"not a network: {cidr!r}")
    return SipSide(name, listen, tuple(networks), next_hop, transport, tls, srtp)


def _check_tls_ports(reader: _Reader, *sides: SipSide) -> None:
    """A TLS listener takes a TCP port: not one another listener of either side holds."""
    taken: dict[Address, str] = {side.listen: f"sip.{side.name}.listen" for side in sides}
    for side in sides:
        if side.tls is None:
            continue
        holder = taken.get(side.tls.listen)
        if holder is not None and holder != f"sip.{side.name}.listen":
            reader.error(f"sip.{side.name}.tls_listen", f"{side.tls.listen[1]} is {holder}'s port")
        taken[side.tls.listen] = f"sip.{side.name}.tls_listen"


def load_config(path: str | Path) -> Config:
    """Read and validate a policy file; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:0: cannot read: {exc.strerror}"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = match.group(1) if match else "0"
        raise ConfigError([f"{path}:{line}: syntax: {exc}"]) from exc
    return config_from_mapping(data, path, text)


def _read_limits(reader: _Reader, data: Mapping[str, Any]) -> Limits:
    """`[limits]`: new calls per second per source and overall, concurrent calls; 0 = off."""
    keys = {"per_source_calls_per_second", "per_source_burst", "calls_per_second", "burst"}
    table = reader.table(data, "limits", keys | {"max_calls"})
    default = Limits()
    source_rate = reader.number(
        table, "limits.per_source_calls_per_second", default.per_source_rate or 0.0, 0.0
    )
    overall_rate = reader.number(table, "limits.calls_per_second", default.global_rate or 0.0, 0.0)
    max_calls = reader.number(table, "limits.max_calls", 0.0, 0.0)
    return Limits(
        per_source_rate=source_rate or None,
        per_source_burst=max(
            1,
            int(
                reader.number(
                    table, "limits.per_source_burst", float(default.per_source_burst), 1.0
                )
            ),
        ),
        global_rate=overall_rate or None,
        global_burst=max(
            1, int(reader.number(table, "limits.burst", float(default.global_burst), 1.0))
        ),
        max_calls=int(max_calls) or None,
    )


def _listen(reader: _Reader, table: Mapping[str, Any], dotted: str) -> tuple[str, int] | None:
    if dotted.rsplit(".", 1)[1] not in table:
        return None
    raw = reader.string(table, dotted, "")
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        reader.error(dotted, f"must be HOST:PORT, got {raw!r}")
        return None
    return host.strip("[]"), int(port)


def _read_node(reader: _Reader, service: Mapping[str, Any]) -> str:
    if "node" not in service:
        return default_node()
    name = reader.string(service, "service.node")
    if not isinstance(service["node"], str):
        return default_node()  # reader.string said so already
    problem = node_problem(name)
    if problem is not None:
        reader.error("service.node", f"{problem}, got {name!r}")
        return default_node()
    return name


def config_from_mapping(data: Mapping[str, Any], path: Path, text: str = "") -> Config:
    reader = _Reader(path, text)
    for key in data:
        if key not in _KNOWN_TOP and key not in _POLICY_TABLES:
            reader.error(key, "unknown table")

    service = reader.table(
        data,
        "service",
        {"timezone", "user_agent", "ring_timeout", "drain_seconds", "access_socket", "node"},
    )
    tz_name = reader.string(service, "service.timezone", "UTC")
    try:
        timezone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        reader.error("service.timezone", f"unknown time zone {tz_name!r}")
        timezone = ZoneInfo("UTC")
    service_config = ServiceConfig(
        timezone=timezone,
        user_agent=reader.string(service, "service.user_agent", "recorder"),
        ring_timeout=reader.number(service, "service.ring_timeout", 180.0, 1.0),
        drain_seconds=reader.number(service, "service.drain_seconds", 30.0, 0.0),
        access_socket=Path(reader.string(service, "service.access_socket"))
        if "access_socket" in service
        else None,
        node=_read_node(reader, service),
    )

    sip = reader.table(data, "sip", {"external", "internal", "timers"})
    external = _read_side(reader, sip, "external")
    internal = _read_side(reader, sip, "internal")
    if external.listen == internal.listen and external.listen[1]:
        reader.error("sip.internal.listen", "must differ from sip.external.listen")
    _check_tls_ports(reader, external, internal)
    timers_table = reader.table(sip, "sip.timers", {"t1", "t2", "t4"})
    timers = SipTimers(
        t1=reader.number(timers_table, "sip.timers.t1", 0.5, 0.01),
        t2=reader.number(timers_table, "sip.timers.t2", 4.0, 0.01),
        t4=reader.number(timers_table, "sip.timers.t4", 5.0, 0.01),
    )

    media = reader.table(
        data,
        "media",
        {"address", "ports", "srtp_mixed", "workers", "engine", "rtpengine", "rtpengine_spool"},
    )
    workers = _media_workers(reader, media)
    srtp_mixed = media.get("srtp_mixed", False)
    if not isinstance(srtp_mixed, bool):
        reader.error("media.srtp_mixed", f"must be true or false, got {srtp_mixed!r}")
        srtp_mixed = False
    modes = {external.srtp, internal.srtp}
    if not srtp_mixed and modes == {"require", "off"}:
        reader.error(
            "media.srtp_mixed",
            "sip.external.srtp and sip.internal.srtp make every call SRTP on one leg and plain"
            " on the other: set srtp_mixed = true to allow that, or change one side",
        )
    media_address = reader.string(media, "media.address", "127.0.0.1")
    try:
        ipaddress.ip_address(media_address)
    except ValueError:
        reader.error("media.address", f"must be an IP address, got {media_address!r}")
    ports = reader.string(media, "media.ports", "20000-29999")
    port_match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", ports)
    first, last = 20000, 29999
    if not port_match:
        reader.error("media.ports", f"must be FIRST-LAST, got {ports!r}")
    else:
        first, last = int(port_match.group(1)), int(port_match.group(2))
        if not (1024 <= first < last < 65536) or last - first < 3:
            reader.error("media.ports", f"must be a range within 1024-65535, got {ports!r}")
    if first % 2:
        first += 1  # RTP on even ports, RTCP on the odd one above (RFC 3550 §11)
    engine = reader.string(media, "media.engine", "relay")
    if engine not in MEDIA_ENGINES:
        if isinstance(media.get("engine"), str):  # else reader.string said it already
            reader.error("media.engine", f"must be 'relay' or 'rtpengine', got {engine!r}")
        engine = "relay"
    rtpengine = reader.address(media, "media.rtpengine", "127.0.0.1:2223")
    spool = Path(reader.string(media, "media.rtpengine_spool", "/var/spool/rtpengine"))

    storage = reader.table(
        data, "storage", {"dir", "database", "when_full", "min_free_mb", "journal"}
    )
    when_full = reader.string(storage, "storage.when_full", "connect_unrecorded")
    if when_full not in WHEN_FULL:
        if isinstance(storage.get("when_full"), str):  # else reader.string said it already
            reader.error(
                "storage.when_full", f"must be 'reject' or 'connect_unrecorded', got {when_full!r}"
            )
        when_full = "connect_unrecorded"
    journal = reader.string(storage, "storage.journal", "")
    storage_config = StorageConfig(
        dir=Path(reader.string(storage, "storage.dir", "var/recordings")),
        database=reader.string(storage, "storage.database", "sqlite:///var/recorder.db"),
        when_full=when_full,
        min_free_mb=reader.number(storage, "storage.min_free_mb", 64.0, 0.0),
        journal=Path(journal) if journal else None,
    )

    metrics = reader.table(data, "metrics", {"listen"})
    metrics_listen = _listen(reader, metrics, "metrics.listen")
    console_table = reader.table(data, "console", {"listen", "cert", "key", "idle_minutes"})
    cert = reader.string(console_table, "console.cert", "") or None
    key_file = reader.string(console_table, "console.key", "") or None
    if (cert is None) != (key_file is None):
        reader.error("console.cert" if cert is None else "console.key", "cert and key go together")
    console_config = ConsoleConfig(
        listen=_listen(reader, console_table, "console.listen"),
        cert=Path(cert) if cert else None,
        key=Path(key_file) if key_file else None,
        idle_minutes=reader.number(console_table, "console.idle_minutes", 15.0, 1.0),
    )

    limits = _read_limits(reader, data)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(
        metrics=MetricsConfig(metrics_listen),
        console=console_config,
        limits=limits,
        path=path,
        service=service_config,
        external=external,
        internal=internal,
        media=MediaConfig(
            media_address,
            first,
            last,
            srtp_mixed,
            workers,
            engine=engine,
            rtpengine=rtpengine,
            rtpengine_spool=spool,
        ),
        storage=storage_config,
        timers=timers,
        raw=data,
    )
