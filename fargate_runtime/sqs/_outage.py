"""The idempotency store's availability as the consumer sees it: an outage pauses intake.

::

    a store call fails (StoreUnavailableError)   outage begins: no new receive, readiness 503
                                                 with the reason, held messages kept (heartbeat)
    probe (ping) after 0.25, 0.5, 1, 2, 4, 5, 5 ... s, jittered
    a probe, or any other store call, answers    outage ends: intake resumes, readiness 200,
                                                 held messages are claimed and run

Messages already held are kept, not handed back: a hand-back spends a receive when the message
comes back, and a few minutes of Redis outage used to walk messages that never ran into the
dead-letter queue. Held, a message costs one ``ChangeMessageVisibilityBatch`` per 10 per
heartbeat, spends no receive at all, and runs the moment the store answers (in order, on a FIFO
queue). What a held message risks is bounded as ever: a killed worker's messages come back
after the visibility timeout, a stopping worker's at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..lifecycle import Lifecycle

__all__ = ["StoreOutage", "StoreState", "first_of"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

_PROBE_FIRST_SECONDS = 0.25
_PROBE_CAP_SECONDS = 5.0
# Readiness and log lines quote the store's error up to this length.
_REASON_CHARACTERS = 200


class StoreState(enum.Enum):
    """Whether the consumer believes its idempotency store answers."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"


async def first_of(*waits: Awaitable[object]) -> None:
    """Return when the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class StoreOutage:
    """Tracks outages of one store: ``failed(exc)`` begins one, a probe or ``answered()`` ends it.

    ``probe`` is one cheap round trip (the store's ``ping``). While an outage lasts, readiness
    is held back under ``source`` with the store's error as the reason.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        *,
        source: str = "sqs-consumer",
        held: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._source = source
        self._held = held
        self._clock = clock
        self.state = StoreState.AVAILABLE
        self._available = asyncio.Event()
        self._available.set()
        self._lifecycle: Lifecycle | None = None
        self._prober: asyncio.Task[None] | None = None
        self._since = 0.0
        self.outages = 0

    @property
    def available(self) -> bool:
        """True unless an outage is going on."""
        return self.state is StoreState.AVAILABLE

    def attach(self, lifecycle: Lifecycle) -> None:
        """Hold readiness back through ``lifecycle`` during outages (done by ``Consumer.run``)."""
        self._lifecycle = lifecycle

    def failed(self, error: BaseException) -> None:
        """A store call failed for want of the store: begin an outage (once) and probe."""
        if self.state is StoreState.UNAVAILABLE:
            return
        self.state = StoreState.UNAVAILABLE
        self.outages += 1
        self._since = self._clock()
        self._available.clear()
        reason = f"idempotency store unavailable: {str(error)[:_REASON_CHARACTERS]}"
        if self._lifecycle is not None:
            self._lifecycle.set_unready(self._source, reason)
        logger.warning(
            "idempotency store unavailable: intake paused, held messages kept",
            extra={"error": str(error)[:_REASON_CHARACTERS], "held": self._held()},
        )
        self._prober = asyncio.create_task(self._probe_until_answered(), name="sqs-store-probe")

    def answered(self) -> None:
        """A store call succeeded: end the outage, if there is one."""
        if self.state is StoreState.AVAILABLE:
            return
        self.state = StoreState.AVAILABLE
        self._available.set()
        if self._lifecycle is not None:
            self._lifecycle.set_unready(self._source, None)
        logger.info(
            "idempotency store answers again: intake resumed",
            extra={"outage_seconds": round(self._clock() - self._since, 3), "held": self._held()},
        )
        prober, self._prober = self._prober, None
        if prober is not None and prober is not asyncio.current_task():
            prober.cancel()

    async def wait_available(self) -> None:
        """Return once the store answers (at once when it does)."""
        await self._available.wait()

    async def _probe_until_answered(self) -> None:
        delay = _PROBE_FIRST_SECONDS
        while self.state is StoreState.UNAVAILABLE:
            # Jittered: the workers of a service do not all knock at once when Redis comes back.
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - not a secret
            try:
                await self._probe()
            except (StoreUnavailableError, ConfigurationError):
                # ConfigurationError: a store that answers but may not be used as it is (a
                # custom store's refusal); fail closed like an outage, as the Redis store does
                # for an eviction policy it could only read after the start.
                delay = min(_PROBE_CAP_SECONDS, delay * 2)
                continue
            self.answered()

    async def aclose(self) -> None:
        """Stop probing; lift the readiness hold."""
        prober, self._prober = self._prober, None
        if prober is not None:
            prober.cancel()
            await asyncio.gather(prober, return_exceptions=True)
        if self._lifecycle is not None:
            self._lifecycle.set_unready(self._source, None)
