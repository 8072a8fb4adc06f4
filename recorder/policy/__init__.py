"""The recording policy: the typed model of `policy.toml` (data) and the `decide()` engine.

Pure: no sockets, no clock, no database; may import `recorder.config` only.
"""

from recorder.policy.engine import CallFacts, Decision, decide, keep_sample, select_sample
from recorder.policy.model import POLICY_TABLES, Policy, PolicyError, load_policy, parse_policy
from recorder.policy.periods import RetentionRule, local_midnight

__all__ = [
    "POLICY_TABLES",
    "CallFacts",
    "Decision",
    "Policy",
    "PolicyError",
    "RetentionRule",
    "decide",
    "keep_sample",
    "load_policy",
    "local_midnight",
    "parse_policy",
    "select_sample",
]
