"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package, no service.

`PgServer.start()` runs `initdb` into a fresh temporary directory and `pg_ctl start` on a
free TCP port of 127.0.0.1 (its unix socket in the same directory, never /var/run), waits
until it accepts connections, and `stop()` stops it (`pg_ctl stop -m fast`) and deletes the
directory. Nothing touches a cluster of the machine's own (`pg_ctlcluster`, port 5432).

Debian installs `initdb` and `pg_ctl` under /usr/lib/postgresql/<version>/bin, not on PATH;
`find_bindir()` looks there first, then on PATH (other distributions). PostgreSQL refuses to
run as root: as root the server runs as the `postgres` user (created by the package), which
owns the temporary directory.

Each test gets its own database (`create_database`), so that tests never see each other's
rows; the tests' fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

# The role the cluster is made with (`initdb -U`): a superuser, trusted without a password
# (the server listens on 127.0.0.1 only, lives for one test session and holds test data).
ROLE = "recorder"
# The unprivileged account the server runs as when the tests run as root.
SERVICE_USER = "postgres"
START_TIMEOUT = 60.0

# Durability is not what these tests test, and fsync per commit is most of their time.
# The session time zone is a half-hour one with DST, not UTC: the catalog must not depend on
# the server's zone (storage.models.UTCDateTime), and a UTC server would hide it if it did.
SERVER_TIMEZONE = "America/St_Johns"
_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    f" -c max_connections=200 -c shared_buffers=32MB -c timezone={SERVER_TIMEZONE}"
)


class PgUnavailable(RuntimeError):
    """PostgreSQL is not installed, or the throwaway server could not start."""


def find_bindir() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: Debian's newest version, else PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: _version_key(Path(path).parent.name),
        reverse=True,
    )
    for candidate in candidates:
        bindir = Path(candidate)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


_PREFIX = "recorder-pg-"
_OWNER = "owner.pid"  # the test process that started the server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(bindir: Path) -> None:
    """Stop and delete the servers of test sessions that died without stopping theirs
    (a killed pytest runs no teardown); servers of live sessions are left alone."""
    for owner in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*/{_OWNER}"):
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        server = PgServer(bindir, owner.parent)
        server._started = (server.data / "postmaster.pid").exists()
        server.stop(mode="immediate")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as() -> pwd.struct_passwd | None:
    """The account to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise PgUnavailable(
            f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL as"
            " (Debian's postgresql package creates it)"
        ) from exc


def _wait_accepting(port: int, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=ROLE, dbname="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PgUnavailable(f"PostgreSQL on port {port} does not accept: {exc}") from exc
            time.sleep(0.1)


@dataclass
class PgServer:
    bindir: Path
    base: Path
    port: int = 0
    _databases: int = field(default=0)
    _started: bool = field(default=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the server's `postgres` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{name}"

    @classmethod
    def start(cls, bindir: Path | None = None) -> PgServer:
        """initdb into a new temporary directory and start the server; raises PgUnavailable."""
        found = bindir or find_bindir()
        if found is None:
            raise PgUnavailable(
                "PostgreSQL not installed: no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
                " or on PATH (Debian: apt-get install postgresql; scripts/install-test-deps.sh)"
            )
        account = _run_as()
        reap_orphans(found)
        # Not under pytest's tmp_path: that is 0700 root's, and the server's user must
        # traverse it. mkdtemp makes it 0700 too, but owned by the server's user below.
        base = Path(tempfile.mkdtemp(prefix=_PREFIX))
        (base / _OWNER).write_text(f"{os.getpid()}\n")
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        server = cls(found, base)
        try:
            server._initdb(account)
            server._start(account)
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, account: pwd.struct_passwd | None, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if account is not None:
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            kwargs["env"] = {**os.environ, "HOME": str(self.base), "USER": account.pw_name}
        done = subprocess.run(
            args,
            cwd=self.base,  # the server's user may not be able to read our working directory
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT,
            **kwargs,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgUnavailable(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}{log}"
            )

    def _initdb(self, account: pwd.struct_passwd | None) -> None:
        self._run(
            account,
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _start(self, account: pwd.struct_passwd | None) -> None:
        # A free port may be taken between the probe and the server's bind: try a few.
        for attempt in range(5):
            self.port = _free_port()
            try:
                self._pg_ctl_start(account)
            except PgUnavailable:
                if attempt == 4:
                    raise
                continue
            self._started = True
            return

    def _pg_ctl_start(self, account: pwd.struct_passwd | None) -> None:
        """Start the server on `self.port` and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} {_SERVER_OPTIONS}"
        self._run(
            account,
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "start",
        )
        _wait_accepting(self.port, START_TIMEOUT)

    def halt(self) -> None:
        """`pg_ctl stop -m fast`, keeping the data: the server is down (as `systemctl stop
        postgresql` leaves it; its sessions are cut) until `resume`. Not `immediate`: these
        throwaway servers run without fsync nor synchronous commit, so a crash would lose
        transactions they acknowledged, which a production server does not."""
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(_run_as(), pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the halted server again on the same port, so that its URLs still hold."""
        self._pg_ctl_start(_run_as())

    def _admin(self, statement: LiteralString, *names: str) -> None:
        """Run `statement` on the `postgres` database, `{}` replaced by quoted `names`."""
        import psycopg
        from psycopg import sql

        query = sql.SQL(statement).format(*(sql.Identifier(name) for name in names))
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=ROLE, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(query)

    def create_database(self, template: str | None = None) -> str:
        """A new database (test_1, test_2...), empty or a copy of `template` (which must
        have no connection open); returns its name."""
        self._databases += 1
        name = f"test_{self._databases}"
        if template is None:
            self._admin("CREATE DATABASE {}", name)
        else:
            self._admin("CREATE DATABASE {} TEMPLATE {}", name, template)
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, ending any connection a test left open (PostgreSQL 13+: FORCE)."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` and delete the directory; safe to call more than once."""
        if self._started:
            self._started = False
            with contextlib.suppress(PgUnavailable, subprocess.TimeoutExpired):
                pg_ctl = str(self.bindir / "pg_ctl")
                self._run(_run_as(), pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)
