"""The platform's part: interrupt workers as Fargate Spot does and replace them as ECS does.

One interruption, as the interrupter carries it out::

    t            SIGTERM to the slot's worker      (Spot's two-minute warning, scaled down)
    t            replacement started in the slot   (the ECS scheduler keeps the desired count)
    t + drain    the worker exits by itself        (exit 0, or 75 when its drain deadline hit)
    t + stop     still alive: SIGKILL, an overrun  (what ECS does at stopTimeout)

A hard kill (chaos) is SIGKILL at ``t`` with no warning, then the replacement. The Redis
restart stops and starts the private Redis at its planned time; the Redis outage pauses it
(SIGSTOP: it answers nothing, keeps its data) for its planned seconds while the interruptions
go on. Each act is written down as an ``Incident``; the report explains duplicate charge
attempts with them, and counts what the outage sent to the DLQ.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .workers import EndKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .components import Components
    from .plan import Interruption, Plan
    from .workers import Clock, Fleet, WorkerProcess

__all__ = ["Incident", "IncidentKind", "Interrupter"]

logger = logging.getLogger("fargate_runtime.drill")

# How long an interruption waits for its target to be up (a replacement still importing would
# die of SIGTERM's default action, which says nothing about the runtime).
_READY_WAIT_SECONDS = 20.0


class IncidentKind(enum.Enum):
    """What the platform (the drill) did."""

    SIGTERM = "sigterm"  # an interruption: Spot's warning
    FINAL_SIGTERM = "final_sigterm"  # the end of the drill: every worker scaled in
    OVERRUN_KILL = "overrun_kill"  # SIGKILL at the stop timeout
    HARD_KILL = "hard_kill"  # chaos: SIGKILL without warning
    REDIS_RESTART = "redis_restart"  # chaos: Redis stopped and started, empty
    REDIS_OUTAGE = "redis_outage"  # chaos: Redis answers nothing for a while, data kept


@dataclass(frozen=True, slots=True)
class Incident:
    """One act of the platform, at ``at`` drill seconds (``until`` for a restart's end)."""

    at: float
    kind: IncidentKind
    worker: str | None = None  # the worker's name (w3)
    pid: int | None = None
    until: float | None = None

    @classmethod
    def on(cls, at: float, kind: IncidentKind, worker: WorkerProcess) -> Incident:
        """An incident that happened to ``worker``."""
        return cls(at, kind, worker.name, worker.pid)


class Interrupter:
    """Carries out the plan's interruptions and Redis restart, and the final scale-in."""

    def __init__(
        self,
        fleet: Fleet,
        components: Components,
        plan: Plan,
        *,
        clock: Clock,
        stop_timeout_seconds: float,
    ) -> None:
        self._fleet = fleet
        self._components = components
        self._plan = plan
        self._clock = clock
        self._stop_timeout = stop_timeout_seconds
        self.incidents: list[Incident] = []
        self.skipped = 0  # planned interruptions not carried out (the drill ended first)
        self._watchdogs: set[asyncio.Task[None]] = set()

    async def run(self, started_at: float) -> None:
        """Carry out the schedule (times from ``started_at``); cancel to stop early."""
        acts: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (i.at_seconds, functools.partial(self._interrupt, i)) for i in self._plan.interruptions
        ]
        if self._plan.redis_restart_at_seconds is not None:
            acts.append((self._plan.redis_restart_at_seconds, self._restart_redis))
        if self._plan.redis_outage_at_seconds is not None:
            acts.append((self._plan.redis_outage_at_seconds, self._begin_outage))
        acts.sort(key=lambda act: act[0])
        self.skipped = len(acts)
        for due, act in acts:
            delay = started_at + due - self._clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            await act()
            self.skipped -= 1

    async def _restart_redis(self) -> None:
        at = self._clock.now()
        await self._components.restart_redis()
        until = self._clock.now()
        self.incidents.append(Incident(at, IncidentKind.REDIS_RESTART, until=until))
        logger.info("redis restarted", extra={"seconds": round(until - at, 3)})

    async def _begin_outage(self) -> None:
        """Start the outage in the background: interruptions go on meanwhile."""
        task = asyncio.create_task(self._outage(), name="redis-outage")
        self._watchdogs.add(task)
        task.add_done_callback(self._watchdogs.discard)

    async def _outage(self) -> None:
        at = self._clock.now()
        await self._components.pause_redis(self._plan.redis_outage_seconds)
        until = self._clock.now()
        self.incidents.append(Incident(at, IncidentKind.REDIS_OUTAGE, until=until))
        logger.info("redis outage over", extra={"seconds": round(until - at, 3)})

    async def _interrupt(self, interruption: Interruption) -> None:
        worker = self._fleet.current.get(interruption.slot)
        if worker is None:
            return
        await worker.wait_ready(_READY_WAIT_SECONDS)
        if not worker.alive or worker is not self._fleet.current.get(interruption.slot):
            # It died by itself (a crash): the drill's loop replaces it, as ECS would.
            return
        if interruption.hard:
            self._fleet.sigkill(worker, EndKind.HARD_KILLED)
            self.incidents.append(Incident.on(self._clock.now(), IncidentKind.HARD_KILL, worker))
        else:
            self._stop(worker, IncidentKind.SIGTERM)
        await self._fleet.start(interruption.slot)

    def _stop(self, worker: WorkerProcess, kind: IncidentKind) -> None:
        """SIGTERM now, SIGKILL at the stop timeout if it is still alive."""
        self._fleet.sigterm(worker)
        self.incidents.append(Incident.on(self._clock.now(), kind, worker))
        task = asyncio.create_task(self._watchdog(worker), name=f"stop-{worker.name}")
        self._watchdogs.add(task)
        task.add_done_callback(self._watchdogs.discard)

    async def _watchdog(self, worker: WorkerProcess) -> None:
        sent = worker.sigterm_at if worker.sigterm_at is not None else self._clock.now()
        left = sent + self._stop_timeout - self._clock.now()
        if not await worker.wait_exit(max(0.0, left)):
            self._fleet.sigkill(worker, EndKind.OVERRUN)
            self.incidents.append(Incident.on(self._clock.now(), IncidentKind.OVERRUN_KILL, worker))
            await worker.wait_exit(10.0)

    async def stop_all(self) -> None:
        """The end of the drill: SIGTERM every live worker, SIGKILL overruns, wait for all."""
        for worker in list(self._fleet.current.values()):
            if worker.alive:
                worker.final = True
                self._stop(worker, IncidentKind.FINAL_SIGTERM)
        await self.settle()

    async def settle(self) -> None:
        """Wait for every SIGTERM already sent to end (exit or SIGKILL at the stop timeout)."""
        while self._watchdogs:
            await asyncio.gather(*self._watchdogs, return_exceptions=True)
