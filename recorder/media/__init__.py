"""Media plane: RTP port pool and relay."""
