"""The recorder application: composes `sip`, `consent` and `storage` into the service.

Rooms: `policy/` (model and decide), `access/` (who may hear what), `call/` (one call's life),
`media/` (RTP relay), `recording/` (tap -> WAV), `ops/` (logs, metrics, control, jobs),
`cli/` (commands); `config.py` (deployment tables) and `service.py` (the composition root).
"""
