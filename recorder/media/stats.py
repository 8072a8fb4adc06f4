"""Per-leg media counters: packets, loss from sequence gaps, RFC 3550 jitter.

Updated once per received packet, so everything is a plain int or float in a
slotted object and the header is read with a single `struct.unpack_from`.
Sequence tracking follows RFC 3550 A.1 loosely: a new SSRC, or a jump larger
than `MAX_DROPOUT` / `MAX_MISORDER`, starts a new segment instead of
counting thousands of phantom losses (a notice player handing over to the
far end, a PBX re-INVITE that restarts its stream).
"""

from __future__ import annotations

from typing import Any

from recorder.media.rtp import RTP_HEADER

MAX_DROPOUT = 3000
MAX_MISORDER = 100

StatsValue = int | float | str | None

_unpack_header = RTP_HEADER.unpack_from


def format_address(address: tuple[Any, ...] | None) -> str | None:
    """'192.0.2.1:4000' or '[2001:db8::1]:4000' from a socket address (2- or 4-tuple)."""
    if address is None:
        return None
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LegStats:
    """Counters of what one leg received, and what became of it.

    `clock_rate` is the RTP clock of the negotiated audio codec (8000 for
    PCMU/PCMA/G.722/G.729). Packets of `telephone_event_pt` are left out of the
    jitter: RFC 4733 keeps one timestamp for a whole event, which would read
    as tens of milliseconds of jitter.
    """

    __slots__ = (
        "_cycles",
        "_jitter_arrival",
        "_jitter_ts",
        "_lost_before",
        "_max_seq",
        "_segment_base",
        "_segment_received",
        "_ssrc",
        "clock_rate",
        "dropped_filtered",
        "dropped_malformed",
        "dropped_not_forwarded",
        "dropped_send",
        "dropped_srtp_auth",
        "dropped_wrong_source",
        "injected_rtp",
        "jitter",
        "out_of_order",
        "rtcp_bytes",
        "rtcp_forwarded",
        "rtcp_packets",
        "rtp_bytes",
        "rtp_forwarded",
        "rtp_packets",
        "socket_errors",
        "ssrc_changes",
        "telephone_event_pt",
    )

    def __init__(self, clock_rate: int = 8000, telephone_event_pt: int | None = None) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self.telephone_event_pt = telephone_event_pt
        self.rtp_packets = 0
        self.rtp_bytes = 0
        self.rtcp_packets = 0
        self.rtcp_bytes = 0
        self.rtp_forwarded = 0
        self.rtcp_forwarded = 0
        self.injected_rtp = 0
        self.out_of_order = 0
        self.ssrc_changes = 0
        self.dropped_wrong_source = 0
        self.dropped_malformed = 0
        self.dropped_not_forwarded = 0
        self.dropped_filtered = 0
        self.dropped_send = 0
        self.dropped_srtp_auth = 0  # SRTP/SRTCP that failed authentication or replay checks
        self.socket_errors = 0
        self.jitter = 0.0
        self._ssrc = -1
        self._max_seq = 0
        self._cycles = 0
        self._segment_base = 0
        self._segment_received = 0
        self._lost_before = 0
        self._jitter_arrival = -1.0
        self._jitter_ts = 0

    def on_rtp(self, data: bytes, arrival: float) -> bool:
        """Account one RTP datagram; False (and counted) when it is not RTP v2."""
        # Hot path (every packet of every call): locals instead of repeated
        # attribute reads, the common case (same SSRC, next sequence) first,
        # and `* 0.0625` rather than `/ 16.0` (the same value, but 3.11 only
        # specialises float multiplication).
        size = len(data)
        if size < 12:
            self.dropped_malformed += 1
            return False
        first, second, seq, ts, ssrc = _unpack_header(data)
        if first & 0xC0 != 0x80:
            self.dropped_malformed += 1
            return False
        self.rtp_packets += 1
        self.rtp_bytes += size
        if ssrc == self._ssrc:
            max_seq = self._max_seq
            delta = ((seq - max_seq + 0x8000) & 0xFFFF) - 0x8000
            if 0 < delta <= MAX_DROPOUT:
                if seq < max_seq:
                    self._cycles += 0x10000
                self._max_seq = seq
                self._segment_received += 1
            elif -MAX_MISORDER <= delta <= 0:
                self.out_of_order += 1
                self._segment_received += 1
            else:
                self._start_segment(seq)
        else:
            if self._ssrc != -1:
                self.ssrc_changes += 1
            self._ssrc = ssrc
            self._start_segment(seq)
        if second & 0x7F == self.telephone_event_pt:
            return True
        # RFC 3550 A.8 with the transit difference taken as a difference of
        # differences, so that a 32-bit timestamp wrap does not show as a spike.
        previous_arrival = self._jitter_arrival
        if previous_arrival >= 0.0:
            ts_delta = ((ts - self._jitter_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            transit_delta = (arrival - previous_arrival) * self.clock_rate - ts_delta
            if transit_delta < 0.0:
                transit_delta = -transit_delta
            jitter = self.jitter
            self.jitter = jitter + (transit_delta - jitter) * 0.0625
        self._jitter_arrival = arrival
        self._jitter_ts = ts
        return True

    def on_rtcp(self, data: bytes) -> bool:
        """Account one RTCP datagram; False (and counted) when it is not RTCP v2."""
        if len(data) < 8 or data[0] & 0xC0 != 0x80:
            self.dropped_malformed += 1
            return False
        self.rtcp_packets += 1
        self.rtcp_bytes += len(data)
        return True

    def _start_segment(self, seq: int) -> None:
        self._lost_before += self._segment_lost()
        self._segment_base = seq
        self._max_seq = seq
        self._cycles = 0
        self._segment_received = 1
        # The jitter estimate carries over, but not the transit reference:
        # a new stream has an unrelated timestamp origin.
        self._jitter_arrival = -1.0

    def _segment_lost(self) -> int:
        if self._segment_received == 0:
            return 0
        expected = self._cycles + self._max_seq - self._segment_base + 1
        # Duplicates can make received exceed expected (RFC 3550 allows a
        # negative count); for a call-end log, no loss is the honest reading.
        return max(0, expected - self._segment_received)

    @property
    def lost(self) -> int:
        """Packets missing from the sequence numbers seen so far."""
        return self._lost_before + self._segment_lost()

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def as_dict(self) -> dict[str, StatsValue]:
        return {
            "rtp_packets": self.rtp_packets,
            "rtp_bytes": self.rtp_bytes,
            "rtp_lost": self.lost,
            "rtp_out_of_order": self.out_of_order,
            "ssrc_changes": self.ssrc_changes,
            "jitter_ts": round(self.jitter, 3),
            "jitter_ms": round(self.jitter_ms, 3),
            "clock_rate": self.clock_rate,
            "rtcp_packets": self.rtcp_packets,
            "rtcp_bytes": self.rtcp_bytes,
            "rtp_forwarded": self.rtp_forwarded,
            "rtcp_forwarded": self.rtcp_forwarded,
            "injected_rtp": self.injected_rtp,
            "dropped_wrong_source": self.dropped_wrong_source,
            "dropped_malformed": self.dropped_malformed,
            "dropped_not_forwarded": self.dropped_not_forwarded,
            "dropped_filtered": self.dropped_filtered,
            "dropped_send": self.dropped_send,
            "dropped_srtp_auth": self.dropped_srtp_auth,
            "socket_errors": self.socket_errors,
        }
