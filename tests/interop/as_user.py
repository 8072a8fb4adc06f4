"""Run the `recorder` command as another Unix user: `python as_user.py UID ARGS...` (as root).

The interpreter of the test venv may live where other users cannot read it (pyenv under
/root), so the command is loaded as root and the process then drops to UID for good
(groups, gid, uid), like a daemon after start-up, before it parses its arguments or opens
the access socket: the service sees UID in SO_PEERCRED and every file it writes is UID's.
"""

from __future__ import annotations

import os
import sys

import matplotlib

from recorder.cli.main import main

# Loaded while the interpreter's files are still readable: what the commands import late.
matplotlib.use("Agg")
import matplotlib.pyplot

if __name__ == "__main__":
    uid = int(sys.argv[1])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    assert os.getuid() == os.geteuid() == uid
    sys.exit(main(sys.argv[2:]))
