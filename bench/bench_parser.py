"""Throughput of the SIP message layer on a typical INVITE (SDP body, 12 headers).

Run: python bench/bench_parser.py [seconds-per-figure]
Prints messages/s for parse_message, for serialize, for StreamParser.feed, and for
parse + reading the Via/From/To/CSeq accessors (what a transaction/dialog layer does).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # plain `python bench/...`

from sip.message import Request, StreamParser, parse_message

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+15145550100@recorder.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:+15145550199@pbx.example.com>;tag=1928301774\r\n'
    b"To: <sip:+15145550100@recorder.example.com;user=phone>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
    b"Supported: timer, replaces\r\n"
    b"User-Agent: ExamplePBX/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    batch = 500
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.serialize() == INVITE

    def parse_and_read() -> None:
        m = parse_message(INVITE)
        _ = (m.via[0].branch, m.from_.tag, m.to.tag, m.cseq.seq, m.call_id)

    stream = INVITE * 10

    def stream_feed() -> None:
        parser = StreamParser()
        parser.feed(stream[:1000])
        parser.feed(stream[1000:])

    figures = [
        ("parse_message", rate(lambda: parse_message(INVITE), seconds), 1),
        ("serialize", rate(msg.serialize, seconds), 1),
        ("StreamParser.feed (10 per stream)", rate(stream_feed, seconds) * 10, 1),
        ("parse + Via/From/To/CSeq access", rate(parse_and_read, seconds), 1),
    ]
    print(f"typical INVITE: {len(INVITE)} bytes, 12 headers + SDP body")
    for name, value, _ in figures:
        print(f"{name:36s} {value:12,.0f} messages/s")


if __name__ == "__main__":
    main()
