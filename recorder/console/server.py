"""The console served by `recorder serve` itself: uvicorn on the service's event loop.

Off unless `[console] listen` is set; HTTPS when `cert` and `key` are (cookies are then
`Secure`). The pages call the access desk on the desk's own thread, the one the access
socket uses, so both front ends see one order of events in the register and the trail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from recorder.access.commands import AccessServer
from recorder.config import ConsoleConfig
from recorder.console.app import Console, build_app
from recorder.console.sessions import SessionStore
from recorder.ops.logs import get_logger
from recorder.policy import Policy
from storage.accounts import Accounts

log = get_logger("recorder.console")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the service owns SIGTERM and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    def __init__(self, server: _EmbeddedServer, task: asyncio.Task[None], console: Console):
        self.server = server
        self.task = task
        self.console = console

    @classmethod
    async def start(
        cls, config: ConsoleConfig, access: AccessServer, policy: Callable[[], Policy]
    ) -> ConsoleServer | None:
        if config.listen is None:
            return None
        loop = asyncio.get_running_loop()
        executor = access.commands.executor

        async def run(fn: Callable[[], Any]) -> Any:
            return await loop.run_in_executor(executor, fn)

        console = Console(
            desk=access.desk,
            policy=policy,
            accounts=Accounts(access.catalog),
            run=run,
            sessions=SessionStore(config.idle_minutes * 60.0),
            secure=config.cert is not None,
        )
        host, port = config.listen
        settings = uvicorn.Config(
            build_app(console),
            host=host,
            port=port,
            ssl_certfile=str(config.cert) if config.cert else None,
            ssl_keyfile=str(config.key) if config.key else None,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            loop="none",
        )
        server = _EmbeddedServer(settings)
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it (e.g. the port is taken)
                raise OSError(f"console did not start on {host}:{port}")
            await asyncio.sleep(0.02)
        scheme = "https" if config.cert else "http"
        log.info("console.listening", url=f"{scheme}://{host}:{port}/")
        return cls(server, task, console)

    async def close(self) -> None:
        self.server.should_exit = True
        await self.task
