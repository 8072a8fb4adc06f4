"""Recording core: RTP taps -> stereo timeline -> WAV files written by a separate process."""
