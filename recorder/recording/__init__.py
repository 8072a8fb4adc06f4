"""Recording core: RTP taps -> stereo timeline -> WAV files written by a separate process.

May import `consent` (G.711) and `recorder.media.rtp`; no policy, no catalog, no SIP.
"""
