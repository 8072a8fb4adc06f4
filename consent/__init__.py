"""Consent: the notice player, DTMF detectors, the consent state machine."""
