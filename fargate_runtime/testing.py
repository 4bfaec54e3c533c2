"""Helpers for users' own tests: run a Supervisor in-process, and local Redis and SQS servers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lifecycle import ExitCode, Lifecycle, Phase
from .local import MotoServer, RedisServer, sqs_environment

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .supervisor import Supervisor

__all__ = ["MotoServer", "RedisServer", "RunningApp", "run_in_background", "sqs_environment"]


@dataclass(slots=True)
class RunningApp:
    """A Supervisor running in the test's event loop, without signal handlers."""

    supervisor: Supervisor
    lifecycle: Lifecycle
    task: asyncio.Task[ExitCode]

    async def stop(self, reason: str = "test") -> ExitCode:
        """Request shutdown, as SIGTERM would, and return the exit code once stopped."""
        self.supervisor.request_shutdown(reason)
        return await self.task


@contextlib.asynccontextmanager
async def run_in_background(supervisor: Supervisor) -> AsyncIterator[RunningApp]:
    """Start ``supervisor`` (built with ``handle_signals=False``), yield once it is running.

    Leaving the block stops it (if the test did not) and waits for the end::

        async with run_in_background(app) as running:
            ...  # exercise the app
            assert await running.stop() == ExitCode.OK
    """
    task = asyncio.create_task(supervisor.serve())
    await asyncio.sleep(0)  # serve() creates the lifecycle before its first await
    lifecycle = supervisor.lifecycle
    if lifecycle is None:
        code = await task
        raise RuntimeError(f"the supervisor stopped during start with exit code {code}")
    running_phase = asyncio.create_task(lifecycle.wait_for_phase(Phase.RUNNING))
    await asyncio.wait({task, running_phase}, return_when=asyncio.FIRST_COMPLETED)
    running_phase.cancel()
    if task.done() or lifecycle.phase is not Phase.RUNNING:
        code = await task
        raise RuntimeError(f"the supervisor stopped during start with exit code {code}")
    running = RunningApp(supervisor, lifecycle, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.stop("test finished")
