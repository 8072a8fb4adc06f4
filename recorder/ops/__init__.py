"""Running the service: structured logs, Prometheus metrics, sd_notify, the control socket,
the retention job.

Knows no call flow: `recorder.call` and `recorder.service` use these, never the reverse.
"""
