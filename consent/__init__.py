"""Consent: G.711, prompts, the notice player, DTMF and voice detectors, the consent machine.

Pure: `sip` data types and numpy only; no sockets, no clock, no policy, no database.
"""
