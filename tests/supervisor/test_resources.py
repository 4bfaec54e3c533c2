"""Resources close in exact reverse order, each bounded and shielded; failures never hide others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import pytest

from fargate_runtime import ExitCode, Lifecycle, Runtime, RuntimeSettings, Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SETTINGS = RuntimeSettings(stop_timeout_seconds=10, close_seconds=3, release_seconds=1)


async def test_resources_close_in_reverse_even_when_one_hangs_and_one_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hanging close is cut at its timeout, a raising one is logged, and order is reversed."""
    closed: list[str] = []

    @contextlib.asynccontextmanager
    async def resource(name: str, *, hang: bool = False, fail: bool = False) -> AsyncIterator[str]:
        yield name
        closed.append(name)
        if hang:
            await asyncio.Event().wait()
        if fail:
            raise RuntimeError(f"{name} failed to close")

    app = Supervisor(settings=SETTINGS, handle_signals=False)

    @app.setup
    async def setup(rt: Runtime) -> None:
        await rt.enter(resource("pool"), name="pool")
        await rt.enter(resource("client", hang=True), name="client", close_timeout_seconds=0.2)
        await rt.enter(resource("telemetry", fail=True), name="telemetry")

    with caplog.at_level(logging.INFO):
        code = await app.serve()

    assert code == ExitCode.OK
    assert closed == ["telemetry", "client", "pool"]
    by_message = {record.getMessage(): record for record in caplog.records}
    assert vars(by_message["resource close timed out"])["resource"] == "client"
    assert vars(by_message["resource close failed"])["resource"] == "telemetry"
    assert by_message["resource close failed"].exc_info is not None


async def test_setup_failure_closes_what_was_entered_and_exits_1() -> None:
    """A setup that fails halfway closes the resources it had entered, then exits 1."""
    closed: list[str] = []

    @contextlib.asynccontextmanager
    async def resource(name: str) -> AsyncIterator[None]:
        yield
        closed.append(name)

    ran: list[str] = []
    app = Supervisor(settings=SETTINGS, handle_signals=False)

    @app.setup
    async def setup(rt: Runtime) -> None:
        await rt.enter(resource("first"), name="first")
        raise ConnectionError("redis unreachable")

    @app.service
    async def never(lifecycle: Lifecycle) -> None:
        ran.append("service")

    assert await app.serve() == ExitCode.CRASHED
    assert closed == ["first"]
    assert ran == []


async def test_request_shutdown_drains_services_without_signals() -> None:
    """An embedder without signal handlers stops the run with request_shutdown()."""
    app = Supervisor(settings=SETTINGS, handle_signals=False)
    started = asyncio.Event()
    stopped_cleanly: list[bool] = []

    @app.service
    async def worker(lifecycle: Lifecycle) -> None:
        started.set()
        await lifecycle.wait_shutdown_requested()
        stopped_cleanly.append(lifecycle.drain_seconds_left() > 0)

    run = asyncio.create_task(app.serve())
    await started.wait()
    lifecycle = app.lifecycle
    assert lifecycle is not None
    readiness = [lifecycle.ready]
    app.request_shutdown("test")
    readiness.append(lifecycle.ready)
    assert readiness == [True, False]
    assert await run == ExitCode.OK
    assert stopped_cleanly == [True]


async def test_signal_handlers_are_restored_after_the_run() -> None:
    """SIGTERM's handler is ours only while the supervisor runs."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    app = Supervisor(settings=SETTINGS)
    seen_during: list[object] = []

    @app.service
    async def look(lifecycle: Lifecycle) -> None:
        seen_during.append(signal.getsignal(signal.SIGTERM))

    assert await app.serve() == ExitCode.OK
    assert signal.getsignal(signal.SIGTERM) == before
    assert seen_during
    assert seen_during[0] != before


async def test_supervisor_refuses_signal_handling_outside_the_main_thread() -> None:
    """Outside the main thread the supervisor says so at start instead of running deaf."""
    from fargate_runtime.errors import SignalHandlingError

    def run_in_thread() -> None:
        asyncio.run(Supervisor(settings=SETTINGS).serve())

    with pytest.raises(SignalHandlingError, match="main thread"):
        await asyncio.to_thread(run_in_thread)
