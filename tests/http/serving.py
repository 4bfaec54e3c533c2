"""Serve an ASGI app the way production does (a Supervisor, uvicorn, a real socket), in-process.

The supervisor runs without signal handlers on the test's event loop; ``Served.stop()`` plays
the part of SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from examples.http_api.app import PaymentsApiSettings, build_api
from fargate_runtime import ExitCode, Lifecycle, Runtime, RuntimeSettings, Supervisor
from fargate_runtime.http import HttpServer, HttpSettings, serve_asgi
from fargate_runtime.idempotency import RedisStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import redis.asyncio
    from starlette.types import ASGIApp

# A budget with room: drain 6 s (10 - 2 margin - 1 release - 1 close).
RUNTIME = RuntimeSettings(stop_timeout_seconds=10, release_seconds=1, close_seconds=1)
# Loopback, a free port, no lame duck unless a test asks; no load balancer in front.
HTTP = HttpSettings(
    host="127.0.0.1",
    port=0,
    lame_duck_seconds=0,
    request_drain_seconds=1,
    load_balancer_idle_timeout_seconds=0,
)


@dataclass
class Served:
    """A running supervisor hosting one app."""

    supervisor: Supervisor
    server: HttpServer
    run: asyncio.Task[ExitCode]

    @property
    def url(self) -> str:
        """Base URL of the app."""
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def lifecycle(self) -> Lifecycle:
        """The supervisor's lifecycle of this run."""
        lifecycle = self.supervisor.lifecycle
        assert lifecycle is not None
        return lifecycle

    def stop(self) -> None:
        """What the first SIGTERM does."""
        self.supervisor.request_shutdown("test")

    async def exit_code(self) -> ExitCode:
        """Wait (at most 20 s) for the run to end."""
        return await asyncio.wait_for(self.run, 20)


@contextlib.asynccontextmanager
async def served(
    app: ASGIApp,
    *,
    http: HttpSettings = HTTP,
    runtime: RuntimeSettings = RUNTIME,
    before: Callable[[Runtime], Awaitable[None]] | None = None,
) -> AsyncIterator[Served]:
    """Run ``app`` under a Supervisor until the block ends (then stop it, if the test did not)."""
    supervisor = Supervisor(settings=runtime, handle_signals=False)
    bound: asyncio.Future[HttpServer] = asyncio.get_running_loop().create_future()

    @supervisor.setup
    async def setup(rt: Runtime) -> None:
        if before is not None:
            await before(rt)
        bound.set_result(await serve_asgi(rt, app, settings=http))

    run = asyncio.create_task(supervisor.serve())
    waiting: set[asyncio.Future[Any]] = {bound, run}
    done, _ = await asyncio.wait(waiting, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if bound not in done:
        run.cancel()
        raise AssertionError(f"setup did not finish: {run.result() if run.done() else 'hung'}")
    served_app = Served(supervisor, bound.result(), run)
    try:
        yield served_app
    finally:
        if not run.done():
            served_app.stop()
            await asyncio.wait({run}, timeout=20)
        if not run.done():  # a hung drain: do not leak the run into the next test
            run.cancel()


@contextlib.asynccontextmanager
async def example_client(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The example payments API served over a real socket, and a client of it as API key
    ``demo`` (its keys under ``key_prefix``)."""
    api = build_api(
        redis=redis_client,
        store=RedisStore(redis_client),
        settings=PaymentsApiSettings(key_prefix=key_prefix),
    )
    async with (
        served(api) as running,
        httpx.AsyncClient(base_url=running.url, headers={"x-api-key": "demo"}) as client,
    ):
        yield client
