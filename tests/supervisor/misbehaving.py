"""Apps whose service or setup misbehaves the way ordinary application code does.

``MISBEHAVE`` picks the behaviour; each app logs ``misbehaving`` right before it starts, so the
test signals at the right moment. Lines marked ``# culprit: NAME`` are where the watchdog must
point; the tests find them by the marker, not by number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from fargate_runtime import Lifecycle, Runtime, Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

logger = logging.getLogger("tests.misbehaving")

MISBEHAVE = os.environ.get("MISBEHAVE", "")
SECONDS = float(os.environ.get("MISBEHAVE_SECONDS", "60"))


def _cpu_bound(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # culprit: cpu
        pass  # culprit: cpu


def _slow_effect(seconds: float) -> None:
    time.sleep(seconds)  # culprit: thread
    logger.info("thread finished")


async def _misbehave(lifecycle: Lifecycle) -> None:
    logger.info("misbehaving", extra={"behaviour": MISBEHAVE})
    if MISBEHAVE == "sleep":
        time.sleep(SECONDS)  # noqa: ASYNC251 - the misbehaviour under test  # culprit: sleep
    elif MISBEHAVE == "cpu":
        _cpu_bound(SECONDS)
    elif MISBEHAVE == "thread":
        await asyncio.to_thread(_slow_effect, SECONDS)
    elif MISBEHAVE == "user-thread":
        worker = threading.Thread(target=_slow_effect, args=(SECONDS,), name="user-thread")
        worker.start()
        await lifecycle.wait_shutdown_requested()
    elif MISBEHAVE == "swallow":
        while True:
            try:
                await asyncio.sleep(SECONDS)  # culprit: swallow
            except asyncio.CancelledError:
                logger.info("cancellation swallowed")
    elif MISBEHAVE == "spin":
        # The README's Quick start shape, copied literally: it never awaits.
        while not lifecycle.shutdown_requested:
            ...
    elif MISBEHAVE == "system-exit":
        raise SystemExit(3)
    elif MISBEHAVE == "block-once":
        time.sleep(SECONDS)  # noqa: ASYNC251 - the misbehaviour under test  # culprit: block-once
        logger.info("unblocked")
        await lifecycle.wait_shutdown_requested()
    logger.info("misbehaviour over")


app = Supervisor()


@contextlib.asynccontextmanager
async def _sync_client() -> AsyncIterator[None]:
    """A resource whose close blocks the loop (a sync client, an exporter's flush)."""
    yield
    logger.info("misbehaving", extra={"behaviour": MISBEHAVE})
    time.sleep(SECONDS)  # noqa: ASYNC251 - the misbehaviour under test  # culprit: close-sleep


@app.setup
async def setup(rt: Runtime) -> None:
    """A setup that blocks, waits, or retries a dependency that is not there."""
    if MISBEHAVE == "close-sleep":
        await rt.enter(_sync_client(), name="sync-client")
    if MISBEHAVE == "setup-sleep":
        logger.info("misbehaving", extra={"behaviour": MISBEHAVE})
        time.sleep(SECONDS)  # noqa: ASYNC251 - the misbehaviour  # culprit: setup-sleep
    elif MISBEHAVE == "setup-wait":
        logger.info("misbehaving", extra={"behaviour": MISBEHAVE})
        await asyncio.sleep(SECONDS)
    elif MISBEHAVE == "setup-retry":
        from redis.asyncio import Redis
        from redis.exceptions import ConnectionError as RedisConnectionError

        logger.info("misbehaving", extra={"behaviour": MISBEHAVE})
        client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        while True:
            try:
                await client.ping()
            except RedisConnectionError:
                await asyncio.sleep(0.1)


@app.service
async def service(lifecycle: Lifecycle) -> None:
    """The misbehaving service, once setup is done."""
    if MISBEHAVE.startswith("setup-") or MISBEHAVE == "close-sleep":
        if MISBEHAVE == "close-sleep":
            logger.info("service ready")
        await lifecycle.wait_shutdown_requested()
        return
    await _misbehave(lifecycle)
