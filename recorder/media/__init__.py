"""Media plane: the RTP port pool, the per-call relay with symmetric latching, leg statistics;
the media worker processes that run the relay on other cores (`workers.py`, `worker.py`);
rtpengine's ng protocol (`ng.py`) and the pcap files it records (`pcap.py`).

May import `recorder.media` only (and the stdlib): no policy, no catalog, no call flow. (The
worker process's entry point configures logging through `recorder.ops.logs`, as the service.)
"""
