"""What a service sees of the supervisor: the phase, shutdown requested, and the deadlines."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    from .settings import ShutdownBudget

__all__ = ["Deadlines", "ExitCode", "Lifecycle", "Phase"]


class Phase(enum.Enum):
    """The supervisor's phases, in the order they happen."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSING = "closing"
    STOPPED = "stopped"


class ExitCode(enum.IntEnum):
    """Process exit codes that mean something to ECS restart policies and to people."""

    OK = 0  # clean drain: all in-flight work finished
    CRASHED = 1  # a service crashed; the others were drained and resources closed
    DRAIN_TIMEOUT = 75  # EX_TEMPFAIL: drain deadline hit, work cancelled and released
    CONFIGURATION = 78  # EX_CONFIG: bad settings, refused at start


class Deadlines:
    """The three deadlines fixed once, at the first signal, on the monotonic clock."""

    __slots__ = ("close", "drain", "release", "requested_at")

    def __init__(self, requested_at: float, budget: ShutdownBudget) -> None:
        self.requested_at = requested_at
        self.drain = requested_at + budget.drain_seconds
        self.release = self.drain + budget.release_seconds
        self.close = self.release + budget.close_seconds


class Lifecycle:
    """Shared state between the supervisor and its services.

    Services poll ``shutdown_requested`` or await ``wait_shutdown_requested()`` to stop intake,
    and wrap release work in ``cleanup_scope()`` so cancellation at the drain deadline cannot
    interrupt it halfway.
    """

    def __init__(
        self, budget: ShutdownBudget, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._phase = Phase.STARTING
        self._shutdown = asyncio.Event()
        self._deadlines: Deadlines | None = None
        # One event per phase, set once the phase (or a later one) is reached.
        self._reached = {phase: asyncio.Event() for phase in Phase}
        self._reached[Phase.STARTING].set()
        self.shutdown_reason: str | None = None

    @property
    def phase(self) -> Phase:
        """The supervisor's current phase."""
        return self._phase

    @property
    def ready(self) -> bool:
        """True while new work should be routed here: running and no shutdown requested."""
        return self._phase is Phase.RUNNING and not self.shutdown_requested

    @property
    def alive(self) -> bool:
        """Liveness: the process is doing its job, including draining (never restart a drain)."""
        return self._phase is not Phase.STOPPED

    @property
    def shutdown_requested(self) -> bool:
        """True from the first signal (or crash, or explicit request) on."""
        return self._shutdown.is_set()

    @property
    def deadlines(self) -> Deadlines | None:
        """The shutdown deadlines, or None while no shutdown is requested."""
        return self._deadlines

    def now(self) -> float:
        """The clock the deadlines are on."""
        return self._clock()

    async def wait_shutdown_requested(self) -> None:
        """Return once shutdown has been requested."""
        await self._shutdown.wait()

    def drain_seconds_left(self) -> float:
        """Seconds until in-flight work is cancelled; infinite while no shutdown is requested."""
        if self._deadlines is None:
            return math.inf
        return max(0.0, self._deadlines.drain - self._clock())

    def release_seconds_left(self) -> float:
        """Seconds left for release work (after cancellation); the full share before shutdown."""
        if self._deadlines is None:
            return self.budget.release_seconds
        return max(0.0, self._deadlines.release - self._clock())

    def cleanup_scope(self) -> anyio.CancelScope:
        """A shielded scope bounded by the release deadline, for cleanup that must not be cut.

        Use it in ``finally`` blocks: releasing a claim or a message is a round trip or two, and
        cancellation arriving in the middle would strand what it was releasing.
        """
        return anyio.move_on_after(self.release_seconds_left(), shield=True)

    def request_shutdown(self, reason: str) -> bool:
        """Start the shutdown; return False when it had already started (deadlines stay)."""
        if self._shutdown.is_set():
            return False
        self._deadlines = Deadlines(self._clock(), self.budget)
        self.shutdown_reason = reason
        self._shutdown.set()
        return True

    async def wait_for_phase(self, phase: Phase) -> None:
        """Return once the supervisor has reached ``phase`` (or a later one)."""
        await self._reached[phase].wait()

    def _set_phase(self, phase: Phase) -> None:
        self._phase = phase
        for each in Phase:
            self._reached[each].set()
            if each is phase:
                break
