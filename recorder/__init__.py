"""The recorder application: policy, B2BUA service, RTP relay, CLI."""
