"""Small apps the process tests run under ``fargate-runtime run`` and interrupt with signals.

Each announces what it does as a log line, so tests wait on lines, not on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from fargate_runtime import Lifecycle, Runtime, Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

logger = logging.getLogger("tests.apps")

WORK_SECONDS = float(os.environ.get("TEST_WORK_SECONDS", "1.0"))
JOB_STEPS = int(os.environ.get("TEST_JOB_STEPS", "1000"))


async def _work(lifecycle: Lifecycle) -> None:
    """One unit of in-flight work that is released if it gets cancelled."""
    logger.info("work started")
    try:
        await asyncio.sleep(WORK_SECONDS)
    except asyncio.CancelledError:
        with lifecycle.cleanup_scope():
            await asyncio.sleep(0.05)  # a release round trip
            logger.info("work released")
        raise
    logger.info("work finished", extra={"shutdown_requested": lifecycle.shutdown_requested})


idle = Supervisor()


@idle.service
async def wait_for_shutdown(lifecycle: Lifecycle) -> None:
    """Idle until told to stop."""
    logger.info("idle ready")
    await lifecycle.wait_shutdown_requested()


busy = Supervisor()


@busy.service
async def one_job_in_flight(lifecycle: Lifecycle) -> None:
    """Hold one piece of work in flight, then take no more once shutdown is requested."""
    await _work(lifecycle)
    await lifecycle.wait_shutdown_requested()


job = Supervisor()


@job.service
async def run_to_completion(lifecycle: Lifecycle) -> None:
    """A scheduled job: steps until done, or stops early between steps on SIGTERM."""
    for step in range(JOB_STEPS):
        if lifecycle.shutdown_requested:
            logger.info("job stopped early", extra={"step": step})
            return
        logger.info("job step", extra={"step": step})
        await asyncio.sleep(0.02)
    logger.info("job done")


@contextlib.asynccontextmanager
async def _recorded(name: str) -> AsyncIterator[str]:
    logger.info("opened", extra={"resource_name": name})
    try:
        yield name
    finally:
        logger.info("closing", extra={"resource_name": name})


crashing = Supervisor()


@crashing.setup
async def crashing_setup(rt: Runtime) -> None:
    """Two resources, a service that crashes and one with work in flight."""
    await rt.enter(_recorded("first"), name="first")
    await rt.enter(_recorded("second"), name="second")


@crashing.service
async def crash(lifecycle: Lifecycle) -> None:
    """Crash once the other service's work is in flight."""
    await asyncio.sleep(0.2)
    raise RuntimeError("boom")


@crashing.service
async def bystander(lifecycle: Lifecycle) -> None:
    """Work that should still be drained after the crash."""
    await _work(lifecycle)
