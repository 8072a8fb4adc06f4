"""SIP transactions (RFC 3261 §17, as amended by RFC 6026), sans-IO.

One `TransactionLayer` per listening side holds every client and server
transaction. It is fed parsed messages and `now`, and hands back events for the
transaction user (TU) and datagrams for an adapter to put on the wire; it owns
no socket and reads no clock.

The four state machines are data: `_TRANSITIONS[kind][(state, input)]` gives the
next state, the actions to run and the timers to start and stop (in the manner
of h11's `_state.py`). A network input with no entry is absorbed (stray or
retransmitted message); a TU input with no entry is a `LocalProtocolError`.

Keys are opaque strings: client keys start with ``c:`` (top Via branch + method,
§17.1.3), server keys with ``s:`` (branch + sent-by + method, §17.2.3, ACK
folded onto INVITE; RFC 2543 peers without the magic cookie get the fallback
match on Call-ID, From tag, CSeq number, top Via and Request-URI).

Choices that the RFCs leave open:

* 100 Trying: sent by the INVITE server transaction 200 ms after the INVITE if
  the TU has not answered by then (§17.2.1), or at once when a retransmission
  of the INVITE shows that the client is still waiting. Not sending it
  immediately saves a message on every call that the TU rejects or answers
  quickly (policy refusals, challenges), while 200 ms is well under timer A
  (T1 = 500 ms) so the client does not retransmit.
* A CANCEL (§9.1) whose provisional response has been received but whose
  INVITE never gets a final response ends the INVITE client transaction after
  64*T1 with `TransactionTimedOut` (§9.1: "the client SHOULD then consider the
  original transaction cancelled").
* A non-INVITE server transaction that the TU never answers is dropped after
  128*T1: the client gave up at 64*T1, so this only stops a TU bug from leaking
  transactions; it is far enough from 64*T1 that a TU relaying a request which
  timed out downstream can still answer.
* Only stray 2xx responses to INVITE reach the TU (so it can re-ACK, §13.2.2.4);
  other stray responses are dropped.
* A request larger than 1300 bytes destined to UDP is sent over TCP instead,
  and its top Via says so (§18.1.1).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from sip.errors import LocalProtocolError
from sip.message import (
    Headers,
    Message,
    Request,
    Response,
    generate_branch,
    make_response,
    parse_message,
)

__all__ = [
    "DEFAULT_TIMERS",
    "Address",
    "RequestReceived",
    "ResponseReceived",
    "TimerConfig",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimedOut",
    "Uas2xxRetransmitter",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]

MAGIC_COOKIE = "z9hG4bK"
# §18.1.1: above this size (unknown path MTU) a UDP request must use a congestion-controlled
# transport.
UDP_SIZE_LIMIT = 1300
TRYING_DELAY = 0.2


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


DEFAULT_TIMERS = TimerConfig()


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionEvent:
    """Base class of what the transaction layer reports to its TU."""


@dataclass(frozen=True, slots=True)
class RequestReceived(TransactionEvent):
    """A new request: a new server transaction `key`, or an ACK for a 2xx (`key` None)."""

    request: Request
    source: Address
    transport: str
    key: str | None


@dataclass(frozen=True, slots=True)
class ResponseReceived(TransactionEvent):
    """A response of client transaction `key`; `key` None: stray 2xx to an INVITE (re-ACK it)."""

    response: Response
    key: str | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut(TransactionEvent):
    """Timer B, F or H fired (or a CANCELled INVITE got no final answer): act as on a 408."""

    key: str
    request: Request


@dataclass(frozen=True, slots=True)
class TransactionTerminated(TransactionEvent):
    key: str


# --- the state machines as data -----------------------------------------------------------------


class TransactionState(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class _Kind(enum.Enum):
    INVITE_CLIENT = "ict"
    NON_INVITE_CLIENT = "nict"
    INVITE_SERVER = "ist"
    NON_INVITE_SERVER = "nist"


class _Input(enum.Enum):
    # from the network
    RECV_1XX = enum.auto()
    RECV_2XX = enum.auto()
    RECV_FINAL = enum.auto()  # 300-699
    RECV_REQUEST = enum.auto()  # retransmission of the transaction's request
    RECV_ACK = enum.auto()
    # from the TU
    SEND_1XX = enum.auto()
    SEND_2XX = enum.auto()
    SEND_FINAL = enum.auto()  # 300-699


_TU_INPUTS = frozenset({_Input.SEND_1XX, _Input.SEND_2XX, _Input.SEND_FINAL})


class _Timer(enum.Enum):
    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    TRYING = "100"  # send 100 Trying if the TU is silent (§17.2.1)
    CANCEL_WAIT = "cancel"  # final response awaited after CANCEL (§9.1)
    GUARD = "guard"  # non-INVITE server transaction never answered by the TU


class _Action(enum.Enum):
    SEND_REQUEST = enum.auto()
    RETRANSMIT_REQUEST = enum.auto()  # and re-arm A or E with back-off
    PASS_REQUEST = enum.auto()  # RequestReceived for the new server transaction
    PASS_RESPONSE = enum.auto()
    PASS_ACK = enum.auto()  # ACK to TU as not belonging to the transaction (2xx ACK)
    SEND_ACK = enum.auto()  # ACK for a non-2xx final (§17.1.1.3)
    SEND_PENDING_CANCEL = enum.auto()
    SEND_RESPONSE = enum.auto()  # the TU's response, remembered for retransmissions
    RESEND_RESPONSE = enum.auto()
    RESEND_PROVISIONAL = enum.auto()  # last 1xx, or a 100 Trying if none yet
    SEND_TRYING = enum.auto()
    RETRANSMIT_RESPONSE = enum.auto()  # and re-arm G with back-off
    REPORT_TIMEOUT = enum.auto()


@dataclass(frozen=True, slots=True)
class _Transition:
    to: TransactionState
    actions: tuple[_Action, ...] = ()
    start: tuple[_Timer, ...] = ()
    stop: tuple[_Timer, ...] = ()


_S = TransactionState
_I = _Input
_A = _Action
_T = _Timer
_TransitionTable = dict[tuple[TransactionState, _Input | _Timer], _Transition]

# Where each machine starts and what it does on creation.
_INITIAL: dict[_Kind, _Transition] = {
    _Kind.INVITE_CLIENT: _Transition(_S.CALLING, (_A.SEND_REQUEST,), start=(_T.A, _T.B)),
    _Kind.NON_INVITE_CLIENT: _Transition(_S.TRYING, (_A.SEND_REQUEST,), start=(_T.E, _T.F)),
    _Kind.INVITE_SERVER: _Transition(_S.PROCEEDING, (_A.PASS_REQUEST,), start=(_T.TRYING,)),
    _Kind.NON_INVITE_SERVER: _Transition(_S.TRYING, (_A.PASS_REQUEST,), start=(_T.GUARD,)),
}

_ICT_EARLY = (_S.CALLING, _S.PROCEEDING)
_NICT_EARLY = (_S.TRYING, _S.PROCEEDING)

_TRANSITIONS: dict[_Kind, _TransitionTable] = {
    # Figure 5 of RFC 3261 as amended by RFC 6026 §7.2 (Accepted state, timer M).
    _Kind.INVITE_CLIENT: {
        (_S.CALLING, _T.A): _Transition(_S.CALLING, (_A.RETRANSMIT_REQUEST,)),
        (_S.CALLING, _T.B): _Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        (_S.CALLING, _I.RECV_1XX): _Transition(
            _S.PROCEEDING, (_A.PASS_RESPONSE, _A.SEND_PENDING_CANCEL), stop=(_T.A, _T.B)
        ),
        (_S.PROCEEDING, _I.RECV_1XX): _Transition(_S.PROCEEDING, (_A.PASS_RESPONSE,)),
        (_S.PROCEEDING, _T.CANCEL_WAIT): _Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        **{
            (state, _I.RECV_2XX): _Transition(
                _S.ACCEPTED,
                (_A.PASS_RESPONSE,),
                start=(_T.M,),
                stop=(_T.A, _T.B, _T.CANCEL_WAIT),
            )
            for state in _ICT_EARLY
        },
        **{
            (state, _I.RECV_FINAL): _Transition(
                _S.COMPLETED,
                (_A.PASS_RESPONSE, _A.SEND_ACK),
                start=(_T.D,),
                stop=(_T.A, _T.B, _T.CANCEL_WAIT),
            )
            for state in _ICT_EARLY
        },
        # RFC 6026: every 2xx (retransmission or another fork) goes up so the TU can ACK it.
        (_S.ACCEPTED, _I.RECV_2XX): _Transition(_S.ACCEPTED, (_A.PASS_RESPONSE,)),
        (_S.ACCEPTED, _T.M): _Transition(_S.TERMINATED),
        (_S.COMPLETED, _I.RECV_FINAL): _Transition(_S.COMPLETED, (_A.SEND_ACK,)),
        (_S.COMPLETED, _T.D): _Transition(_S.TERMINATED),
    },
    # Figure 6.
    _Kind.NON_INVITE_CLIENT: {
        (_S.TRYING, _T.E): _Transition(_S.TRYING, (_A.RETRANSMIT_REQUEST,)),
        (_S.PROCEEDING, _T.E): _Transition(_S.PROCEEDING, (_A.RETRANSMIT_REQUEST,)),
        (_S.TRYING, _I.RECV_1XX): _Transition(_S.PROCEEDING, (_A.PASS_RESPONSE,)),
        (_S.PROCEEDING, _I.RECV_1XX): _Transition(_S.PROCEEDING, (_A.PASS_RESPONSE,)),
        **{
            (state, final): _Transition(
                _S.COMPLETED, (_A.PASS_RESPONSE,), start=(_T.K,), stop=(_T.E, _T.F)
            )
            for state in _NICT_EARLY
            for final in (_I.RECV_2XX, _I.RECV_FINAL)
        },
        **{
            (state, _T.F): _Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)) for state in _NICT_EARLY
        },
        (_S.COMPLETED, _T.K): _Transition(_S.TERMINATED),
    },
    # Figure 7 as amended by RFC 6026 §7.1 (Accepted state, timer L).
    _Kind.INVITE_SERVER: {
        (_S.PROCEEDING, _T.TRYING): _Transition(_S.PROCEEDING, (_A.SEND_TRYING,)),
        (_S.PROCEEDING, _I.RECV_REQUEST): _Transition(
            _S.PROCEEDING, (_A.RESEND_PROVISIONAL,), stop=(_T.TRYING,)
        ),
        (_S.PROCEEDING, _I.SEND_1XX): _Transition(
            _S.PROCEEDING, (_A.SEND_RESPONSE,), stop=(_T.TRYING,)
        ),
        (_S.PROCEEDING, _I.SEND_2XX): _Transition(
            _S.ACCEPTED, (_A.SEND_RESPONSE,), start=(_T.L,), stop=(_T.TRYING,)
        ),
        (_S.PROCEEDING, _I.SEND_FINAL): _Transition(
            _S.COMPLETED, (_A.SEND_RESPONSE,), start=(_T.G, _T.H), stop=(_T.TRYING,)
        ),
        # RFC 6026 §7.1: the TU retransmits its 2xx through the transaction while it lives;
        # INVITE retransmissions are absorbed; an ACK matching it is the TU's (2xx ACK).
        (_S.ACCEPTED, _I.SEND_2XX): _Transition(_S.ACCEPTED, (_A.SEND_RESPONSE,)),
        (_S.ACCEPTED, _I.RECV_ACK): _Transition(_S.ACCEPTED, (_A.PASS_ACK,)),
        (_S.ACCEPTED, _T.L): _Transition(_S.TERMINATED),
        (_S.COMPLETED, _I.RECV_REQUEST): _Transition(_S.COMPLETED, (_A.RESEND_RESPONSE,)),
        (_S.COMPLETED, _T.G): _Transition(_S.COMPLETED, (_A.RETRANSMIT_RESPONSE,)),
        (_S.COMPLETED, _T.H): _Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
        (_S.COMPLETED, _I.RECV_ACK): _Transition(_S.CONFIRMED, start=(_T.I,), stop=(_T.G, _T.H)),
        (_S.CONFIRMED, _T.I): _Transition(_S.TERMINATED),
    },
    # Figure 8.
    _Kind.NON_INVITE_SERVER: {
        (_S.TRYING, _I.SEND_1XX): _Transition(_S.PROCEEDING, (_A.SEND_RESPONSE,)),
        (_S.PROCEEDING, _I.SEND_1XX): _Transition(_S.PROCEEDING, (_A.SEND_RESPONSE,)),
        **{
            (state, final): _Transition(
                _S.COMPLETED, (_A.SEND_RESPONSE,), start=(_T.J,), stop=(_T.GUARD,)
            )
            for state in _NICT_EARLY
            for final in (_I.SEND_2XX, _I.SEND_FINAL)
        },
        **{(state, _T.GUARD): _Transition(_S.TERMINATED) for state in _NICT_EARLY},
        (_S.PROCEEDING, _I.RECV_REQUEST): _Transition(_S.PROCEEDING, (_A.RESEND_RESPONSE,)),
        (_S.COMPLETED, _I.RECV_REQUEST): _Transition(_S.COMPLETED, (_A.RESEND_RESPONSE,)),
        # §17.2.2: further finals from the TU are discarded in Completed.
        (_S.COMPLETED, _I.SEND_2XX): _Transition(_S.COMPLETED),
        (_S.COMPLETED, _I.SEND_FINAL): _Transition(_S.COMPLETED),
        (_S.COMPLETED, _T.J): _Transition(_S.TERMINATED),
    },
}

# Timers that retransmit: they start at T1 and are only used on unreliable transports.
_RETRANSMIT_TIMERS = frozenset({_T.A, _T.E, _T.G})


def _timer_duration(timer: _Timer, config: TimerConfig, reliable: bool) -> float | None:
    """Initial duration, or None when the timer is not used on this transport."""
    t1, t4 = config.t1, config.t4
    if timer in _RETRANSMIT_TIMERS:
        return None if reliable else t1
    if timer in (_T.B, _T.F, _T.H, _T.L, _T.M, _T.CANCEL_WAIT):
        return 64 * t1
    if timer is _T.D:
        return 0.0 if reliable else max(32.0, 64 * t1)
    if timer in (_T.I, _T.K):
        return 0.0 if reliable else t4
    if timer is _T.J:
        return 0.0 if reliable else 64 * t1
    if timer is _T.TRYING:
        return TRYING_DELAY
    return 128 * t1  # GUARD


def _classify_response(status: int, *, tu: bool) -> _Input:
    if status < 200:
        return _I.SEND_1XX if tu else _I.RECV_1XX
    if status < 300:
        return _I.SEND_2XX if tu else _I.RECV_2XX
    return _I.SEND_FINAL if tu else _I.RECV_FINAL


# --- transactions ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _TimerEntry:
    deadline: float
    seq: int


@dataclass(slots=True, eq=False)
class _Transaction:
    key: str
    kind: _Kind
    request: Request
    peer: Address  # client: where the request goes; server: where it came from
    transport: str
    reliable: bool
    state: TransactionState = TransactionState.TERMINATED
    request_bytes: bytes = b""
    timers: dict[_Timer, _TimerEntry] = field(default_factory=dict)
    retransmit_interval: float = 0.0
    last_response_bytes: bytes | None = None
    trying: Response | None = None
    ack_bytes: bytes | None = None
    cancel_pending: bool = False
    cancel_key: str | None = None


def _is_reliable(transport: str) -> bool:
    return transport != "UDP"


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _server_key(request: Request, method: str) -> str:
    top = request.via[0]
    host, port = top.sent_by
    branch = top.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return f"s:{branch}|{host.lower()}:{port}|{method}"
    # §17.2.3 fallback for RFC 2543 peers; the To tag is left out so the ACK (which carries
    # the tag of our response) lands on the same key as the INVITE.
    return (
        f"s:2543|{request.call_id}|{request.from_.tag}|{request.cseq.seq}|"
        f"{host.lower()}:{port}|{branch}|{request.uri}|{method}"
    )


def _client_key(branch: str, method: str) -> str:
    return f"c:{branch}|{method}"


class TransactionLayer:
    """All transactions of one SIP listening side. Sans-IO: no clock, no sockets."""

    def __init__(
        self,
        config: TimerConfig = TimerConfig(),
        *,
        local_sent_by: Address,
        sent_by: Mapping[str, Address] | None = None,
    ) -> None:
        """`sent_by`: a Via sent-by per transport ("TLS" listens on its own port, RFC 3261
        §18.2.1: responses come back to the sent-by port); `local_sent_by` otherwise."""
        self._config = config
        self._local_sent_by = local_sent_by
        self._sent_by = {name.upper(): address for name, address in (sent_by or {}).items()}
        self._txns: dict[str, _Transaction] = {}
        # (deadline, seq, key, timer); entries are invalidated lazily: one is live only while
        # the transaction still holds that timer with the same seq.
        self._heap: list[tuple[float, int, str, _Timer]] = []
        self._seq = itertools.count()
        self._events: list[TransactionEvent] = []
        self._out: list[tuple[bytes, Address, str]] = []

    # --- public API ------------------------------------------------------------------------------

    @property
    def config(self) -> TimerConfig:
        return self._config

    @property
    def local_sent_by(self) -> Address:
        return self._local_sent_by

    def __len__(self) -> int:
        return len(self._txns)

    def state(self, key: str) -> TransactionState | None:
        """Current state of transaction `key`, None once it has ended."""
        txn = self._txns.get(key)
        return txn.state if txn is not None else None

    def events(self) -> list[TransactionEvent]:
        events, self._events = self._events, []
        return events

    def datagrams_to_send(self) -> list[tuple[bytes, Address, str]]:
        out, self._out = self._out, []
        return out

    def receive(self, msg: Message, source: Address, transport: str, now: float) -> None:
        """Feed a parsed message. May raise RemoteProtocolError if a header the matching
        needs (Via, CSeq...) is malformed."""
        transport = transport.upper()
        if isinstance(msg, Request):
            self._receive_request(msg, source, transport, now)
        else:
            self._receive_response(msg, now)

    def send_request(
        self, request: Request, destination: Address, transport: str, now: float
    ) -> str:
        """Start a client transaction. Adds a top Via (with a fresh branch and ;rport) if the
        request has none; the request object is modified in place."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not a transaction: use send_stateless()")
        transport, data = self._prepare_request(request, transport.upper())
        branch = request.via[0].branch
        if not branch:
            raise LocalProtocolError("the top Via of a request to send needs a branch")
        key = _client_key(branch, request.method)
        if key in self._txns:
            raise LocalProtocolError(f"transaction {key} already exists")
        kind = _Kind.INVITE_CLIENT if request.method == "INVITE" else _Kind.NON_INVITE_CLIENT
        txn = _Transaction(
            key=key,
            kind=kind,
            request=request,
            peer=destination,
            transport=transport,
            reliable=_is_reliable(transport),
            request_bytes=data,
        )
        self._txns[key] = txn
        self._apply(txn, _INITIAL[kind], now, None, None)
        return key

    def send_response(self, key: str, response: Response, now: float) -> None:
        txn = self._txns.get(key)
        if txn is None:
            raise LocalProtocolError(f"no transaction {key} (it has terminated)")
        if txn.kind not in (_Kind.INVITE_SERVER, _Kind.NON_INVITE_SERVER):
            raise LocalProtocolError(f"{key} is a client transaction")
        self._fire(txn, _classify_response(response.status, tu=True), now, response, None)

    def send_stateless(self, msg: Message, destination: Address, transport: str) -> None:
        """Send outside any transaction (ACK for a 2xx, 2xx retransmissions, stateless
        answers). A request without Via gets one, as in send_request()."""
        transport = transport.upper()
        if isinstance(msg, Request):
            transport, data = self._prepare_request(msg, transport)
        else:
            data = msg.serialize()
        self._out.append((data, destination, transport))

    def cancel_request(self, key: str, now: float) -> str | None:
        txn = self._txns.get(key)
        if txn is None:
            return None
        if txn.kind is not _Kind.INVITE_CLIENT:
            raise LocalProtocolError(f"{key} is not an INVITE client transaction")
        if txn.state is TransactionState.CALLING:
            # §9.1: a CANCEL must not be sent before a provisional response arrived.
            txn.cancel_pending = True
            return None
        if txn.state is TransactionState.PROCEEDING:
            if txn.cancel_key is None:
                self._send_cancel(txn, now)
            return txn.cancel_key
        return None

    def find_cancelled(self, cancel: Request) -> str | None:
        """Key of the INVITE server transaction a CANCEL applies to (§9.2), or None."""
        key = _server_key(cancel, "INVITE")
        txn = self._txns.get(key)
        return key if txn is not None and txn.kind is _Kind.INVITE_SERVER else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            txn = self._txns[entry[2]]
            del txn.timers[entry[3]]
            self._fire(txn, entry[3], now, None, None)

    # --- receiving ---------------------------------------------------------------------------

    def _receive_request(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        key = _server_key(request, "INVITE" if request.method == "ACK" else request.method)
        self._stamp_via(request, source)
        txn = self._txns.get(key)
        if request.method == "ACK":
            if txn is not None and txn.kind is _Kind.INVITE_SERVER:
                self._fire(txn, _I.RECV_ACK, now, request, source)
            else:
                self._events.append(RequestReceived(request, source, transport, None))
            return
        if txn is not None:
            self._fire(txn, _I.RECV_REQUEST, now, request, source)
            return
        kind = _Kind.INVITE_SERVER if request.method == "INVITE" else _Kind.NON_INVITE_SERVER
        txn = _Transaction(
            key=key,
            kind=kind,
            request=request,
            peer=source,
            transport=transport,
            reliable=_is_reliable(transport),
        )
        self._txns[key] = txn
        self._apply(txn, _INITIAL[kind], now, None, source)

    def _receive_response(self, response: Response, now: float) -> None:
        branch = response.via[0].branch
        cseq = response.cseq
        txn = self._txns.get(_client_key(branch, cseq.method)) if branch else None
        if txn is not None:
            self._fire(txn, _classify_response(response.status, tu=False), now, response, None)
        elif 200 <= response.status < 300 and cseq.method == "INVITE":
            self._events.append(ResponseReceived(response, None))
        else:
            log.debug("dropping stray %d response to %s", response.status, cseq.method)

    def _stamp_via(self, request: Request, source: Address) -> None:
        """§18.2.1 received, RFC 3581 rport: responses copy the Via, so the peer learns how
        it was seen (NAT) and our responses follow the same path."""
        vias = request.headers.get_all("Via")
        top = request.via[0]
        changed = False
        if top.host.strip("[]") != source[0]:
            top.params["received"] = source[0]
            changed = True
        if "rport" in top.params and not top.params["rport"]:
            top.params["rport"] = str(source[1])
            top.params["received"] = source[0]
            changed = True
        if changed:
            vias[0] = str(top)
            # One comma-separated line keeps the order of the Via values wherever they were.
            request.headers.set("Via", ", ".join(vias))

    # --- the machine -------------------------------------------------------------------------

    def _fire(
        self,
        txn: _Transaction,
        inp: _Input | _Timer,
        now: float,
        msg: Message | None,
        source: Address | None,
    ) -> None:
        transition = _TRANSITIONS[txn.kind].get((txn.state, inp))
        if transition is None:
            if inp in _TU_INPUTS:
                raise LocalProtocolError(
                    f"cannot send a {inp.name} response in state {txn.state.value} of {txn.key}"
                )
            log.debug("%s absorbed %s in state %s", txn.key, inp, txn.state.value)
            return
        self._apply(txn, transition, now, msg, source)

    def _apply(
        self,
        txn: _Transaction,
        transition: _Transition,
        now: float,
        msg: Message | None,
        source: Address | None,
    ) -> None:
        txn.state = transition.to
        for timer in transition.stop:
            txn.timers.pop(timer, None)
        for action in transition.actions:
            self._run(action, txn, now, msg, source)
        immediate: list[_Timer] = []
        for timer in transition.start:
            duration = _timer_duration(timer, self._config, txn.reliable)
            if duration is None:
                continue
            if duration <= 0:
                immediate.append(timer)
            else:
                self._arm(txn, timer, now + duration)
            if timer in _RETRANSMIT_TIMERS:
                txn.retransmit_interval = duration
        if txn.state is TransactionState.TERMINATED:
            self._terminate(txn)
            return
        # Zero-length timers (D, I, J, K on reliable transports) end the transaction now
        # rather than on the adapter's next timer tick.
        for timer in immediate:
            if txn.key in self._txns:
                self._fire(txn, timer, now, None, None)

    def _run(
        self,
        action: _Action,
        txn: _Transaction,
        now: float,
        msg: Message | None,
        source: Address | None,
    ) -> None:
        cfg = self._config
        if action is _A.SEND_REQUEST:
            self._send(txn, txn.request_bytes)
        elif action is _A.RETRANSMIT_REQUEST:
            self._send(txn, txn.request_bytes)
            if txn.kind is _Kind.INVITE_CLIENT:
                txn.retransmit_interval *= 2
                timer = _T.A
            else:
                timer = _T.E
                if txn.state is TransactionState.PROCEEDING:
                    txn.retransmit_interval = cfg.t2
                else:
                    txn.retransmit_interval = min(2 * txn.retransmit_interval, cfg.t2)
            self._arm(txn, timer, now + txn.retransmit_interval)
        elif action is _A.PASS_REQUEST:
            if txn.kind is _Kind.INVITE_SERVER:
                # Built before the TU sees the request: a B2BUA may rewrite it in place to
                # forward it, and the 100 must copy the Via, From, To... as received.
                txn.trying = make_response(txn.request, 100)
            self._events.append(RequestReceived(txn.request, txn.peer, txn.transport, txn.key))
        elif action is _A.PASS_RESPONSE:
            assert isinstance(msg, Response)
            self._events.append(ResponseReceived(msg, txn.key))
        elif action is _A.PASS_ACK:
            assert isinstance(msg, Request) and source is not None
            self._events.append(RequestReceived(msg, source, txn.transport, None))
        elif action is _A.SEND_ACK:
            assert isinstance(msg, Response)
            if txn.ack_bytes is None:
                txn.ack_bytes = _build_ack(_as_sent(txn), msg).serialize()
            self._send(txn, txn.ack_bytes)
        elif action is _A.SEND_PENDING_CANCEL:
            if txn.cancel_pending:
                self._send_cancel(txn, now)
        elif action is _A.SEND_RESPONSE:
            assert isinstance(msg, Response)
            txn.last_response_bytes = msg.serialize()
            self._send(txn, txn.last_response_bytes)
        elif action is _A.RESEND_RESPONSE:
            if txn.last_response_bytes is not None:
                self._send(txn, txn.last_response_bytes)
        elif action is _A.RESEND_PROVISIONAL:
            if txn.last_response_bytes is not None:
                self._send(txn, txn.last_response_bytes)
            else:
                self._run(_A.SEND_TRYING, txn, now, None, None)
        elif action is _A.SEND_TRYING:
            assert txn.trying is not None
            txn.last_response_bytes = txn.trying.serialize()
            self._send(txn, txn.last_response_bytes)
        elif action is _A.RETRANSMIT_RESPONSE:
            if txn.last_response_bytes is not None:
                self._send(txn, txn.last_response_bytes)
            txn.retransmit_interval = min(2 * txn.retransmit_interval, cfg.t2)
            self._arm(txn, _T.G, now + txn.retransmit_interval)
        elif action is _A.REPORT_TIMEOUT:
            self._events.append(TransactionTimedOut(txn.key, txn.request))
        else:  # pragma: no cover - every action is handled above
            raise AssertionError(action)

    def _arm(self, txn: _Transaction, timer: _Timer, deadline: float) -> None:
        seq = next(self._seq)
        txn.timers[timer] = _TimerEntry(deadline, seq)
        heapq.heappush(self._heap, (deadline, seq, txn.key, timer))

    def _live(self, entry: tuple[float, int, str, _Timer]) -> bool:
        txn = self._txns.get(entry[2])
        if txn is None:
            return False
        held = txn.timers.get(entry[3])
        return held is not None and held.seq == entry[1]

    def _terminate(self, txn: _Transaction) -> None:
        txn.timers.clear()
        del self._txns[txn.key]
        self._events.append(TransactionTerminated(txn.key))

    def _send(self, txn: _Transaction, data: bytes) -> None:
        self._out.append((data, txn.peer, txn.transport))

    def _send_cancel(self, txn: _Transaction, now: float) -> None:
        cancel = _build_cancel(_as_sent(txn))
        # The CANCEL follows the INVITE's path: same destination and transport (§9.1).
        txn.cancel_key = self.send_request(cancel, txn.peer, txn.transport, now)
        txn.cancel_pending = False
        self._arm(txn, _T.CANCEL_WAIT, now + 64 * self._config.t1)

    def _prepare_request(self, request: Request, transport: str) -> tuple[str, bytes]:
        if "Via" not in request.headers:
            host, port = self._sent_by.get(transport, self._local_sent_by)
            request.headers.add(
                "Via",
                f"SIP/2.0/{transport} {_format_host(host)}:{port};branch={generate_branch()};rport",
                first=True,
            )
        data = request.serialize()
        if transport == "UDP" and len(data) > UDP_SIZE_LIMIT:
            transport = "TCP"
            vias = request.headers.get_all("Via")
            top = request.via[0]
            if top.transport.upper() == "UDP":
                top.transport = "TCP"
                vias[0] = str(top)
                request.headers.set("Via", ", ".join(vias))
                data = request.serialize()
        return transport, data


def _as_sent(txn: _Transaction) -> Request:
    """The client transaction's request as it went on the wire. ACK and CANCEL must copy
    it (§17.1.1.3, §9.1), and the TU may have reused or rewritten the object since."""
    sent = parse_message(txn.request_bytes)
    assert isinstance(sent, Request)
    return sent


def _copy_headers(request: Request, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(name, value) for name in names for value in request.headers.get_all(name)]


def _build_ack(request: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK for a non-2xx final response, in the INVITE's transaction."""
    headers = Headers(
        [
            ("Via", request.headers.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            *_copy_headers(request, ("From",)),
            ("To", response.headers.get("To") or ""),
            *_copy_headers(request, ("Call-ID",)),
            ("CSeq", f"{request.cseq.seq} ACK"),
            *_copy_headers(request, ("Route",)),
        ]
    )
    return Request("ACK", request.uri.copy(), headers)


def _build_cancel(request: Request) -> Request:
    """§9.1: same Request-URI, Call-ID, To, From, CSeq number, Route and top Via."""
    headers = Headers(
        [
            ("Via", request.headers.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            *_copy_headers(request, ("From", "To", "Call-ID")),
            ("CSeq", f"{request.cseq.seq} CANCEL"),
            *_copy_headers(request, ("Route",)),
        ]
    )
    return Request("CANCEL", request.uri.copy(), headers)


class Uas2xxRetransmitter:
    """Retransmits a 2xx to an INVITE until its ACK arrives (RFC 3261 §13.3.1.4, which RFC 6026
    leaves to the TU): every T1 doubling up to T2, on every transport, giving up at 64*T1.

    The first copy is sent by the TU through the server transaction; this sends the next ones.
    Drive it like the layer: `get_timer()`, `handle_timer(now)`, `datagrams_to_send()`; call
    `ack_received()` when `matches(ack)`. `timed_out` then tells the TU to end the session.
    """

    def __init__(
        self,
        response: Response,
        destination: Address,
        transport: str,
        now: float,
        config: TimerConfig = TimerConfig(),
    ) -> None:
        if not 200 <= response.status < 300:
            raise LocalProtocolError("only 2xx responses are retransmitted by the TU")
        self._data = response.serialize()
        self._destination = destination
        self._transport = transport.upper()
        self._t2 = config.t2
        self._interval = config.t1
        self._next = now + config.t1
        self._give_up = now + 64 * config.t1
        self.call_id = response.call_id
        self.cseq = response.cseq.seq
        self.to_tag = response.to.tag
        self.acked = False
        self.timed_out = False
        self._out: list[tuple[bytes, Address, str]] = []

    @property
    def done(self) -> bool:
        return self.acked or self.timed_out

    def matches(self, ack: Request) -> bool:
        """Whether `ack` acknowledges this 2xx (Call-ID, CSeq number and To tag)."""
        return (
            ack.method == "ACK"
            and ack.call_id == self.call_id
            and ack.cseq.seq == self.cseq
            and (self.to_tag is None or ack.to.tag == self.to_tag)
        )

    def ack_received(self) -> None:
        self.acked = True

    def get_timer(self) -> float | None:
        if self.done:
            return None
        return min(self._next, self._give_up)

    def handle_timer(self, now: float) -> None:
        if self.done:
            return
        if now >= self._give_up:
            self.timed_out = True
            return
        if now >= self._next:
            self._out.append((self._data, self._destination, self._transport))
            self._interval = min(2 * self._interval, self._t2)
            self._next = now + self._interval

    def datagrams_to_send(self) -> list[tuple[bytes, Address, str]]:
        out, self._out = self._out, []
        return out
