"""One call's life: the B2BUA legs, policy and consent orchestration, SDP anchoring, agent codes,
ringback, the recording glue and the call-log writer.

May import `sip`, `consent`, `recorder.policy`, `recorder.media`, `recorder.recording`,
`recorder.ops` and `storage`; never `recorder.cli` or `recorder.service`.
"""
