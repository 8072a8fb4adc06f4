"""Media plane: the RTP port pool, the per-call relay with symmetric latching, leg statistics;
rtpengine's ng protocol (`ng.py`) and the pcap files it records (`pcap.py`).

May import `recorder.media` only (and the stdlib): no policy, no catalog, no call flow.
"""
