"""SIP fuzzing against a real `recorder serve` (issue 20): a seeded batch of grammar-made
datagrams (tests/sip/sip_grammar.py: valid messages, mutants, garbage) over UDP from
127.0.0.1, with a valid OPTIONS after every 500.

The sender predicts each datagram's answer with the same parser (a malformed request that
can be answered gets the parser's status, 400 mostly; a valid request gets a response; a
response, an ACK or garbage gets nothing), keeps a bounded window in flight (the recorder
answers in order, so an answer to datagram i means every datagram before i was handled) and
matches answers by Call-ID. bench/bench_fuzz.py drives the same `FuzzRun` with a million.
"""

from __future__ import annotations

import errno
import random
import re
import select
import socket
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from sip.asyncio.transport import error_response
from sip.errors import RemoteProtocolError
from sip.message import Request, Response, make_response, parse_message
from tests.sip import sip_grammar as g

from . import peers

pytestmark = pytest.mark.interop

BATCH = 2000
CHECK_EVERY = 500
SEED = 20

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_STATUS = re.compile(rb"SIP/2\.0 ([0-9]{3}) ")


def call_id_of(data: bytes) -> bytes | None:
    m = _CALL_ID.search(data)
    return m.group(1).strip(b" \t") if m else None


@dataclass(frozen=True)
class Prediction:
    kind: str  # "none" | "reply" (a valid request: some response) | "status" (that status)
    status: int = 0
    key: bytes | None = None  # the Call-ID the answer will carry
    malformed: bool = False  # the parser refuses it
    request: bool = False  # ... and it is (or looks like) a request


def predict(data: bytes) -> Prediction:
    """What the recorder must answer to `data` (the endpoint's rules, RFC 3261 §8.2.6)."""
    if not data.strip(b"\r\n"):
        return Prediction("none")  # CRLF keepalive (RFC 5626)
    try:
        msg = parse_message(data)
    except RemoteProtocolError as exc:
        answer = error_response(data, exc.status_hint)
        if answer is None:
            return Prediction("none", malformed=True)  # no request, or nothing to copy
        return Prediction("status", exc.status_hint, call_id_of(answer), True, True)
    if isinstance(msg, Response) or msg.method == "ACK":
        return Prediction("none")
    key = call_id_of(make_response(msg, 100).serialize())
    return Prediction("reply", key=key, request=True)


@dataclass
class FuzzStats:
    sent: int = 0
    sent_bytes: int = 0
    valid_requests: int = 0
    valid_requests_answered: int = 0
    malformed: int = 0  # refused by the parser
    malformed_requests: int = 0  # ... of which answerable requests
    malformed_answered: int = 0  # ... answered with the parser's status
    wrong_status: int = 0
    missing: int = 0  # an answer that never came
    late: int = 0  # an answer that came after `timeout` (still counted as answered)
    unexpected: int = 0  # an answer to a datagram that should get none
    answers: int = 0  # datagrams received (retransmissions included)
    by_status: Counter[int] = field(default_factory=Counter)  # distinct answers by status
    checks: int = 0
    checks_passed: int = 0
    parser_exceptions: int = 0  # anything but RemoteProtocolError out of parse_message
    problems: list[str] = field(default_factory=list)


class FuzzRun:
    """One UDP socket towards the recorder: `send()` datagrams, `check()` an OPTIONS.

    At most `window` datagrams (and `window_bytes`) are in flight, i.e. sent and not yet
    known to be handled: the recorder handles datagrams in order and answers at once, so the
    answer to datagram i says that all before it were handled. When what is in flight will
    get no answer (responses, garbage), an OPTIONS tells when it has been read.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        window: int = 32,
        window_bytes: int = 48_000,
        timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.window = window
        self.window_bytes = window_bytes
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                break
            except OSError:
                continue
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.local: tuple[str, int] = self.sock.getsockname()
        self.stats = FuzzStats()
        self._index = 0
        self._unhandled: deque[tuple[int, int, float]] = deque()  # (index, size, sent at)
        self._unhandled_bytes = 0
        self._awaiting: dict[int, tuple[Prediction, float]] = {}
        self._by_key: dict[bytes, deque[int]] = {}
        self._expected_keys: set[bytes] = set()
        self._seen: set[tuple[bytes, int, bytes]] = set()
        self._pings: dict[bytes, int] = {}  # Call-ID -> status of the OPTIONS' answer
        self._late: dict[bytes, deque[tuple[int, Prediction]]] = {}  # given up on, by key
        self._numbers: dict[int, int] = {}  # index -> the datagram's number (1, 2...)

    def close(self) -> None:
        self.sock.close()

    # --- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, prediction: Prediction | None = None) -> None:
        """Send one datagram; `prediction`: predict(data) if already made (bench workers)."""
        data = data[: g.MAX_UDP_PAYLOAD]  # a datagram cannot carry more
        if prediction is None:
            try:
                prediction = predict(data)
            except Exception as exc:  # the parser must raise nothing else: count it, go on
                self.stats.parser_exceptions += 1
                self.stats.problems.append(f"parser raised {exc!r} on {data[:80]!r}")
                return
        self._wait_for_room()
        stats = self.stats
        stats.sent += 1
        stats.sent_bytes += len(data)
        stats.malformed += prediction.malformed
        if prediction.kind == "status":
            stats.malformed_requests += 1
        elif prediction.kind == "reply":
            stats.valid_requests += 1
        index = self._post(data, prediction)
        if prediction.kind != "none":
            self._numbers[index] = stats.sent
        self._receive(0.0)

    def _post(self, data: bytes, prediction: Prediction) -> int:
        index = self._index
        self._index += 1
        now = time.monotonic()
        self._unhandled.append((index, len(data), now))
        self._unhandled_bytes += len(data)
        if prediction.kind != "none" and prediction.key is not None:
            self._awaiting[index] = (prediction, now)
            self._by_key.setdefault(prediction.key, deque()).append(index)
            self._expected_keys.add(prediction.key)
        while True:
            try:
                self.sock.sendto(data, self.target)
                return index
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
                    raise
                self._receive(0.01)

    def _wait_for_room(self) -> None:
        while len(self._unhandled) >= self.window or self._unhandled_bytes > self.window_bytes:
            if not any(i in self._awaiting for i, _, _ in self._unhandled):
                self.check(count=False)  # nothing in flight will be answered: flush
            else:
                self._receive(0.1)

    # --- receiving -------------------------------------------------------------------------

    def _receive(self, wait: float) -> bool:
        got = False
        readable, _, _ = select.select([self.sock], [], [], wait)
        while readable:
            try:
                data, _ = self.sock.recvfrom(70000)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                continue
            got = True
            self._answer(data)
        self._expire()
        return got

    def _answer(self, data: bytes) -> None:
        m = _STATUS.match(data)
        key = call_id_of(data)
        if m is None or key is None:
            return  # a request of the recorder's (none expected here) or no answer at all
        stats = self.stats
        stats.answers += 1
        status = int(m.group(1))
        to = re.search(rb"\r\n(?:to|t)[ \t]*:([^\r\n]*)", data, re.IGNORECASE)
        ident = (key, status, to.group(1) if to else b"")
        first_time = ident not in self._seen
        if first_time and key not in self._pings:
            self._seen.add(ident)
            stats.by_status[status] += 1
        queue = self._by_key.get(key)
        if not queue:
            late = self._late.get(key)
            if late:
                # answered after all, past the timeout (a loaded machine): not missing
                index, prediction = late.popleft()
                stats.missing -= 1
                stats.late += 1
                stats.problems.remove(self._missing(index))
                self._judge(index, prediction, key, status)
            elif first_time and key not in self._expected_keys:
                stats.unexpected += 1
                stats.problems.append(f"unexpected answer {data[:100]!r}")
            return  # a retransmission, or a later final after the first answer
        index = queue.popleft()
        if not queue:
            del self._by_key[key]
        prediction, _ = self._awaiting.pop(index)
        self._judge(index, prediction, key, status)
        self._handled_upto(index)

    def _judge(self, index: int, prediction: Prediction, key: bytes, status: int) -> None:
        stats = self.stats
        if key in self._pings:
            self._pings[key] = status
        elif prediction.kind == "status":
            if status == prediction.status:
                stats.malformed_answered += 1
            else:
                stats.wrong_status += 1
                number = self._numbers.get(index)
                stats.problems.append(f"datagram {number}: {status}, not {prediction.status}")
        else:
            stats.valid_requests_answered += 1

    def _missing(self, index: int) -> str:
        return f"datagram {self._numbers.get(index)}: no answer within {self.timeout} s"

    def _handled_upto(self, index: int) -> None:
        while self._unhandled and self._unhandled[0][0] <= index:
            _, size, _ = self._unhandled.popleft()
            self._unhandled_bytes -= size

    def _expire(self) -> None:
        """Answers overdue by `timeout` are missing; what was sent that long ago is taken
        as handled (or lost) so that the window moves on."""
        limit = time.monotonic() - self.timeout
        for index, (prediction, sent_at) in list(self._awaiting.items()):
            if sent_at >= limit:
                break
            del self._awaiting[index]
            assert prediction.key is not None
            queue = self._by_key.get(prediction.key)
            if queue and index in queue:
                queue.remove(index)
                if not queue:
                    del self._by_key[prediction.key]
            if prediction.key not in self._pings:
                self.stats.missing += 1
                self.stats.problems.append(self._missing(index))
                self._late.setdefault(prediction.key, deque()).append((index, prediction))
        while self._unhandled and self._unhandled[0][2] < limit:
            _, size, _ = self._unhandled.popleft()
            self._unhandled_bytes -= size

    # --- liveness ----------------------------------------------------------------------------

    def check(self, *, count: bool = True, timeout: float = 10.0) -> bool:
        """A valid OPTIONS: answered 200 once everything sent before it has been handled."""
        n = len(self._pings)
        call_id = f"ping-{n}@{self.local[0]}"
        key = call_id.encode()
        self._pings[key] = 0
        ping = g.options_ping(call_id, f"ping{n}x{self._index}", self.local, self.target)
        self._post(ping, Prediction("reply", key=key))
        deadline = time.monotonic() + timeout
        while self._pings[key] == 0 and time.monotonic() < deadline:
            self._receive(0.05)
        ok = self._pings[key] == 200
        if count:
            self.stats.checks += 1
            self.stats.checks_passed += ok
            if not ok:
                self.stats.problems.append(f"OPTIONS check {n}: {self._pings[key] or 'nothing'}")
        return ok

    def drain(self) -> None:
        """Settle everything sent: an OPTIONS behind it, then what is still awaited."""
        self.check(count=False)
        deadline = time.monotonic() + self.timeout + 0.5
        while (self._awaiting or self.stats.missing) and time.monotonic() < deadline:
            self._receive(0.05)


def datagrams(seed: int, count: int) -> Iterator[bytes]:
    """The fuzzer's datagrams: each with its own Call-ID (before mutation), reproducible."""
    c = g.RandomChoices(random.Random(seed))
    for i in range(count):
        yield g.datagram(c, call_id=f"fz{seed}-{i}@fuzz")[0]


class BusyPbx:
    """A UDP PBX that answers every new INVITE 486 (the call ends at once, so that every
    valid INVITE the fuzzer sends goes through the whole call path), and anything else 200."""

    def __init__(self) -> None:
        self.port = peers.free_udp_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.invites = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BusyPbx:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(70000)
            except (TimeoutError, OSError):
                continue
            try:
                msg = parse_message(data)
            except RemoteProtocolError:
                continue  # the recorder sends nothing malformed: the test sees it in its log
            if not isinstance(msg, Request) or msg.method == "ACK":
                continue
            status = 200
            if msg.method == "INVITE" and msg.to.tag is None:
                self.invites += 1
                status = 486
            response = make_response(msg, status, to_tag="busy")
            if status == 200:
                response.headers.add("Contact", f"<sip:pbx@127.0.0.1:{self.port}>")
            self.sock.sendto(response.serialize(), source)


# Log lines a crash (or a swallowed exception) leaves: checked after every run.
CRASH_EVENTS = ("Traceback", "handler failed", "Exception in callback", "Fatal error")


# Errors that load alone may cause, not a crash.
LOAD_ERRORS = frozenset({"media.ports_exhausted"})
# Found by this test outside the SIP stack, not fixed here (see issue 20): a From user with
# a %-escape that is no UTF-8 (sip:%8D@host: SipUri.user keeps it as a surrogate escape)
# cannot be written by the call log (add_call: UnicodeEncodeError; then KeyError in the
# writes that need its row). The call itself is handled; its row is missing.
KNOWN_CATALOG_ERRORS = frozenset({"UnicodeEncodeError", "KeyError"})


def crash_signs(events: list[dict[str, Any]], text: str) -> tuple[list[str], list[str]]:
    """(crash signs, known issues) in the recorder's log."""
    out = [sign for sign in CRASH_EVENTS if sign in text]
    known: list[str] = []
    for entry in events:
        name = str(entry.get("event", ""))
        if "exc_info" in entry or "exception" in entry:
            out.append(f"exception logged: {name[:120]}")
        elif name in LOAD_ERRORS:
            continue
        elif name == "catalog.write_failed" and entry.get("error") in KNOWN_CATALOG_ERRORS:
            known.append(f"{entry.get('what')}: {entry.get('error')}")
        elif entry.get("level") in ("error", "critical") or name.endswith("_failed"):
            out.append(f"{entry.get('level')}: {name[:120]}")
    return out, known


@contextmanager
def fuzzing(target: tuple[str, int]) -> Iterator[FuzzRun]:
    run = FuzzRun(target)
    try:
        yield run
    finally:
        run.close()


def test_fuzzed_datagrams_never_crash_and_malformed_requests_get_400(
    start_recorder: Any,
) -> None:
    with BusyPbx() as pbx:
        recorder = start_recorder(pbx_port=pbx.port, media_ports=64)
        target = ("127.0.0.1", recorder.external_port)
        started = time.monotonic()
        with fuzzing(target) as run:
            assert run.check(), "no 200 to OPTIONS before the batch"
            for n, data in enumerate(datagrams(SEED, BATCH), start=1):
                run.send(data)
                if n % CHECK_EVERY == 0:
                    run.check()
            run.drain()
            stats = run.stats
        elapsed = time.monotonic() - started
        alive = recorder.proc.poll() is None
        invites = pbx.invites
    assert alive, recorder.log_text()[-4000:]
    assert elapsed < 60, elapsed
    assert stats.sent == BATCH
    assert stats.parser_exceptions == 0, stats.problems[:10]
    # every malformed request that can be answered got the parser's status (400 mostly)
    assert stats.malformed_requests > 0.2 * BATCH, stats
    assert stats.malformed_answered == stats.malformed_requests, stats.problems[:20]
    assert stats.wrong_status == stats.missing == stats.unexpected == 0, stats.problems[:20]
    assert stats.by_status[400] > 0.15 * BATCH, stats.by_status
    # every valid request got an answer, and the B leg really was exercised
    assert stats.valid_requests_answered == stats.valid_requests, stats.problems[:20]
    assert invites > 0
    assert stats.checks == 1 + BATCH // CHECK_EVERY and stats.checks_passed == stats.checks
    problems, known = crash_signs(recorder.events(), recorder.log_text())
    assert problems == [], problems[:20]
    if known:
        warnings.warn(f"known call-log failures (non-UTF-8 From user): {known}", stacklevel=1)
    print(f"\n{stats.sent} datagrams in {elapsed:.1f} s: {dict(stats.by_status)}; {stats}")
