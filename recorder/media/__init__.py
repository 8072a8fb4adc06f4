"""Media plane: the RTP port pool, the per-call relay with symmetric latching, leg statistics.

May import `recorder.media` only (and the stdlib): no policy, no catalog, no call flow.
"""
