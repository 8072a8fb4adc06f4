"""The retention job: one purge (D1-D5, S6, X1) with the policy handed to storage as settings.

The service runs it at start and hourly; `recorder purge` runs the same function.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from recorder.config import Config
from recorder.policy import Policy
from storage.audit import default_anchor_path
from storage.retention import PurgeReport, RetentionSettings
from storage.retention import purge_once as _purge_once


def settings_from_policy(policy: Policy) -> RetentionSettings:
    """The retention part of a policy, in the form storage/ takes (it cannot import it)."""
    sampling = policy.sampling
    daily = sampling is not None and sampling.stage == "daily" and sampling.fraction < 1.0
    return RetentionSettings(
        timezone=policy.timezone,
        expiry=policy.expiry,
        holds_allowed=policy.retention.holds,
        sample_fraction=sampling.fraction if daily and sampling is not None else None,
        rules={name: rule.rule_id for name, rule in policy.retention.classes.items()},
    )


def anchor_path(config: Config) -> Path:
    return default_anchor_path(config.storage.dir)


def purge_once(
    config: Config,
    policy: Policy,
    now: datetime,
    *,
    dry_run: bool = False,
    actor: str = "service",
    seed: int | None = None,
) -> PurgeReport:
    """One purge (blocking: run it in an executor). The service calls this hourly."""
    return _purge_once(
        config.storage.database,
        config.storage.dir,
        settings_from_policy(policy),
        now,
        dry_run=dry_run,
        actor=actor,
        node=config.service.node,
        anchor_path=anchor_path(config),
        seed=seed,
    )
