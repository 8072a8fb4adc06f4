"""A purge run in a child process that SIGKILLs itself at its `kill_at`-th step.

Steps are counted just before and just after every operation whose interruption matters:
each catalog commit, each unlink, each fsync (directory and anchor file). `kill_at = 0`
runs to the end and prints how many steps there were. Used by test_crash.py.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from storage.repository import Catalog
from storage.retention import Purger
from tests.retention.scenarios import SCENARIOS

_steps = 0


def main() -> None:
    url, storage, scenario, now_text, kill_at = sys.argv[1:6]
    limit = int(kill_at)

    def step(*_args: Any) -> None:
        global _steps
        _steps += 1
        if _steps == limit:
            os.kill(os.getpid(), signal.SIGKILL)

    real_unlink, real_fsync = os.unlink, os.fsync

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        step()
        real_unlink(path, *args, **kwargs)
        step()

    def fsync(fd: Any) -> None:
        step()
        real_fsync(fd)
        step()

    os.unlink = unlink
    os.fsync = fsync
    event.listen(Engine, "commit", step)
    event.listen(Session, "after_commit", step)

    settings, seed = SCENARIOS[scenario]
    catalog = Catalog.open(url, create=False)
    try:
        purger = Purger(catalog, Path(storage), settings(), seed=seed)
        purger.run(datetime.fromisoformat(now_text))
    finally:
        catalog.close()
    print(_steps)


if __name__ == "__main__":
    main()
