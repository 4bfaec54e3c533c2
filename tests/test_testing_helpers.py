"""The public testing helpers run a Supervisor in-process and stop it like SIGTERM would."""

from __future__ import annotations

import asyncio

import pytest

from fargate_runtime import ExitCode, Lifecycle, RuntimeSettings, Supervisor
from fargate_runtime.testing import run_in_background


async def test_run_in_background_yields_a_running_app_and_stops_it() -> None:
    """The block sees the app running and ready; stop() drains it to a clean exit."""
    app = Supervisor(settings=RuntimeSettings(), handle_signals=False)
    drained = asyncio.Event()

    @app.service
    async def worker(lifecycle: Lifecycle) -> None:
        await lifecycle.wait_shutdown_requested()
        drained.set()

    async with run_in_background(app) as running:
        assert running.lifecycle.ready
        assert await running.stop() == ExitCode.OK
    assert drained.is_set()


async def test_run_in_background_reports_a_failed_start() -> None:
    """A setup that fails is reported at once, with its exit code, instead of hanging."""
    app = Supervisor(settings=RuntimeSettings(), handle_signals=False)

    @app.setup
    async def setup(rt: object) -> None:
        raise ConnectionError("no redis")

    with pytest.raises(RuntimeError, match="exit code 1"):
        async with run_in_background(app):
            pass
