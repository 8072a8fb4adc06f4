"""Two TransactionLayers wired back to back in memory (h11's ConnectionPair, for SIP).

`uac_and_uas()` returns a `Pair`; the tests play the TU on both sides. Every datagram is
serialized and re-parsed on the way, logged in `Pair.wire`, and can be dropped to simulate
loss. Time only moves when the test says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sip.message import Headers, Message, Request, Response, parse_message
from sip.transaction import (
    DEFAULT_TIMERS,
    Address,
    RequestReceived,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    Uas2xxRetransmitter,
)
from sip.uri import SipUri

UAC_ADDRESS: Address = ("192.0.2.1", 5060)
UAS_ADDRESS: Address = ("192.0.2.2", 5070)


@dataclass
class Party:
    """One side: its layer, the events it reported (kept until taken) and the 2xx it is
    retransmitting as a UAS TU would."""

    name: str
    layer: TransactionLayer
    address: Address
    events: list[TransactionEvent] = field(default_factory=list)
    retransmitters: list[Uas2xxRetransmitter] = field(default_factory=list)

    def take_events(self) -> list[TransactionEvent]:
        events, self.events = self.events, []
        return events

    def retransmit_2xx(
        self, response: Response, destination: Address, transport: str, now: float
    ) -> Uas2xxRetransmitter:
        r = Uas2xxRetransmitter(response, destination, transport, now, self.layer.config)
        self.retransmitters.append(r)
        return r

    def get_timer(self) -> float | None:
        timers = [t for t in (self.layer.get_timer(), *self._retx_timers()) if t is not None]
        return min(timers, default=None)

    def _retx_timers(self) -> list[float | None]:
        return [r.get_timer() for r in self.retransmitters]

    def handle_timer(self, now: float) -> None:
        self.layer.handle_timer(now)
        for r in self.retransmitters:
            r.handle_timer(now)

    def collect(self) -> list[tuple[bytes, Address, str]]:
        out = self.layer.datagrams_to_send()
        for r in self.retransmitters:
            out.extend(r.datagrams_to_send())
        for event in self.layer.events():
            # The UAS TU stops retransmitting its 2xx once the ACK is in (§13.3.1.4).
            if (
                isinstance(event, RequestReceived)
                and event.request.method == "ACK"
                and event.key is None
            ):
                for r in self.retransmitters:
                    if r.matches(event.request):
                        r.ack_received()
            self.events.append(event)
        self.retransmitters = [r for r in self.retransmitters if not r.done]
        return out


@dataclass
class Sent:
    sender: str
    data: bytes
    destination: Address
    transport: str
    dropped: bool

    @property
    def message(self) -> Message:
        return parse_message(self.data)


DropRule = Callable[[Message], bool]


@dataclass
class Pair:
    uac: Party
    uas: Party
    now: float = 0.0
    wire: list[Sent] = field(default_factory=list)
    _drop_rules: list[DropRule] = field(default_factory=list)

    def drop_next(self, predicate: DropRule) -> None:
        """Lose the next datagram (either direction) for which `predicate(message)` is true."""
        self._drop_rules.append(predicate)

    def pump(self) -> int:
        """Deliver datagrams until both sides are quiet. Returns how many were delivered."""
        delivered = 0
        while True:
            moved = False
            for sender, receiver in ((self.uac, self.uas), (self.uas, self.uac)):
                for data, destination, transport in sender.collect():
                    moved = True
                    msg = parse_message(data)
                    rule = next((r for r in self._drop_rules if r(msg)), None)
                    self.wire.append(
                        Sent(sender.name, data, destination, transport, rule is not None)
                    )
                    if rule is not None:
                        self._drop_rules.remove(rule)
                        continue
                    assert destination == receiver.address, (destination, receiver.address)
                    receiver.layer.receive(msg, sender.address, transport, self.now)
                    delivered += 1
            if not moved:
                return delivered

    def next_timer(self) -> float | None:
        timers = [t for t in (self.uac.get_timer(), self.uas.get_timer()) if t is not None]
        return min(timers, default=None)

    def advance(self, seconds: float) -> None:
        self.advance_to(self.now + seconds)

    def advance_to(self, when: float) -> None:
        """Move the clock to `when`, firing every timer due on the way, in order."""
        self.pump()
        while (timer := self.next_timer()) is not None and timer <= when:
            self.now = max(self.now, timer)
            self.uac.handle_timer(self.now)
            self.uas.handle_timer(self.now)
            self.pump()
        self.now = max(self.now, when)

    def run_all_timers(self, limit: float = 3600.0) -> None:
        """Fire timers until none is left (everything has ended)."""
        self.advance_to(self.now + limit)

    def sent(self, sender: str | None = None) -> list[Sent]:
        return [s for s in self.wire if sender is None or s.sender == sender]


def uac_and_uas(config: TimerConfig = DEFAULT_TIMERS) -> Pair:
    return Pair(
        Party("uac", TransactionLayer(config, local_sent_by=UAC_ADDRESS), UAC_ADDRESS),
        Party("uas", TransactionLayer(config, local_sent_by=UAS_ADDRESS), UAS_ADDRESS),
    )


def make_request(
    method: str,
    *,
    call_id: str = "call-1@192.0.2.1",
    cseq: int = 1,
    from_tag: str = "uac-tag",
    to_tag: str | None = None,
    uri: str = "sip:bob@192.0.2.2:5070",
    body: bytes = b"",
) -> Request:
    """A minimal request without Via (the layer adds it)."""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    headers = Headers(
        [
            ("Max-Forwards", "70"),
            ("From", f"<sip:alice@example.com>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", "<sip:alice@192.0.2.1:5060>"),
        ]
    )
    return Request(method, SipUri.parse(uri), headers, body)


def make_ack_for_2xx(invite: Request, response: Response) -> Request:
    """§13.2.2.4: the ACK of a 2xx is a new request (new branch) outside the transaction."""
    headers = Headers(
        [
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} ACK"),
        ]
    )
    return Request("ACK", invite.uri.copy(), headers)
