"""What a service sees of the supervisor: the phase, shutdown requested, deadlines, one shield.

The deadlines, all fixed once, at the moment the first signal arrived (not when the event loop
next turns)::

    requested_at
    |<------ drain ------>|<- release ->|<- close ->|    ...    hard = requested_at + stop - margin
      in-flight work        stragglers    resources            the watchdog ends the process here
      finishes              cancelled     closed               whatever the loop is doing (exit 70)

Everything here may be called from the watchdog thread as well as from the event loop:
``request_shutdown`` records the request under a lock and wakes the loop thread-safely, so a
loop that is blocked (a sync call, a CPU loop) still has its deadlines fixed at the signal.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from .settings import ShutdownBudget

__all__ = ["CleanupScope", "Deadlines", "ExitCode", "Lifecycle", "Phase"]

logger = logging.getLogger("fargate_runtime.lifecycle")

# A final release gets this long at most when the caller gives no bound.
_FINAL_RELEASE_DEFAULT_SECONDS = 0.5


class Phase(enum.Enum):
    """The supervisor's phases, in the order they happen."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSING = "closing"
    STOPPED = "stopped"


class ExitCode(enum.IntEnum):
    """Process exit codes that mean something to ECS restart policies and to people."""

    OK = 0  # clean: every piece of work finished
    CRASHED = 1  # a service crashed (or a handler raised SystemExit); the rest was drained
    FORCED = 70  # EX_SOFTWARE: the hard deadline ended work the runtime could not stop
    DRAIN_TIMEOUT = 75  # EX_TEMPFAIL: drain deadline hit, work cancelled and released
    CONFIGURATION = 78  # EX_CONFIG: bad settings, refused at start


class Deadlines:
    """The shutdown deadlines on the monotonic clock, fixed once at the first signal."""

    __slots__ = ("close", "drain", "hard", "release", "requested_at")

    def __init__(self, requested_at: float, budget: ShutdownBudget) -> None:
        self.requested_at = requested_at
        self.drain = requested_at + budget.drain_seconds
        self.release = self.drain + budget.release_seconds
        self.close = self.release + budget.close_seconds
        # Where the watchdog takes over; equal to ``close`` unless drain_seconds was set short.
        self.hard = requested_at + budget.total_seconds


class Lifecycle:
    """Shared state between the supervisor and its services.

    Services poll ``shutdown_requested`` or await ``wait_shutdown_requested()`` to stop intake,
    and wrap release work in ``cleanup_scope()`` so the supervisor's cancellation at the drain
    deadline cannot interrupt it halfway. What must be released even if the event loop never
    turns again (held SQS messages, idempotency claims) is registered with
    ``add_final_release``: the supervisor calls it, from a thread, right before the process ends.
    """

    def __init__(
        self, budget: ShutdownBudget, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._phase = Phase.STARTING
        self._lock = threading.Lock()
        self._deadlines: Deadlines | None = None
        self.shutdown_reason: str | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._shutdown = asyncio.Event()
        # One event per phase, set once the phase (or a later one) is reached.
        self._reached = {phase: asyncio.Event() for phase in Phase}
        self._reached[Phase.STARTING].set()
        # Tasks inside a cleanup scope (with nesting depth), and the cancels deferred for them.
        self._shielded: dict[asyncio.Task[object], int] = {}
        self._deferred_cancels: dict[asyncio.Task[object], str | None] = {}
        self._final_releases: dict[
            int, tuple[Callable[[float], None], Callable[[], None] | None]
        ] = {}
        # Why a service says the process should get no new work now (a store outage), by source.
        self._unready: dict[str, str] = {}

    @property
    def phase(self) -> Phase:
        """The supervisor's current phase."""
        return self._phase

    @property
    def ready(self) -> bool:
        """True while new work should be routed here: running, no shutdown requested, and no
        service holding readiness back (``set_unready``)."""
        return self.not_ready_reason is None

    @property
    def not_ready_reason(self) -> str | None:
        """Why ``ready`` is False, in a few words (what ``/readyz`` answers); None when ready."""
        if self._phase is not Phase.RUNNING:
            return str(self._phase.value)
        if self.shutdown_requested:
            return str(Phase.DRAINING.value)
        if self._unready:
            return "; ".join(f"{source}: {why}" for source, why in sorted(self._unready.items()))
        return None

    def set_unready(self, source: str, reason: str | None) -> None:
        """Hold readiness back for ``reason`` (a service that cannot take work now, such as a
        consumer whose idempotency store is down); ``reason=None`` lifts ``source``'s hold."""
        if reason is None:
            self._unready.pop(source, None)
        else:
            self._unready[source] = reason

    @property
    def alive(self) -> bool:
        """Liveness: the process is doing its job, including draining (never restart a drain)."""
        return self._phase is not Phase.STOPPED

    @property
    def shutdown_requested(self) -> bool:
        """True from the first signal (or crash, or explicit request) on.

        A plain attribute read: a loop that never awaits still sees it change at the signal.
        """
        return self._deadlines is not None

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

    def hard_seconds_left(self) -> float:
        """Seconds until the watchdog ends the process; infinite while no shutdown is requested."""
        if self._deadlines is None:
            return math.inf
        return max(0.0, self._deadlines.hard - self._clock())

    def request_shutdown(self, reason: str, *, at: float | None = None) -> bool:
        """Start the shutdown; return False when it had already started (deadlines stay).

        Safe from any thread. ``at`` is when it was asked for (the signal's arrival, read by the
        watchdog thread), so the deadlines do not move while a blocked loop catches up.
        """
        with self._lock:
            if self._deadlines is not None:
                return False
            self.shutdown_reason = reason
            self._deadlines = Deadlines(self._clock() if at is None else at, self.budget)
        self._call_in_loop(self._shutdown.set)
        return True

    def cleanup_scope(self, *, seconds: float | None = None) -> CleanupScope:
        """A scope for cleanup that must not be cut: the supervisor's cancel waits for its end.

        Bounded by the release deadline (or ``seconds``): at the bound the body is cancelled and
        the scope swallows that cancellation, like ``anyio.move_on_after``. Use it in ``finally``
        blocks: releasing a claim or a message is a round trip or two, and a cancellation in the
        middle would strand what it was releasing::

            try:
                await work()
            finally:
                with lifecycle.cleanup_scope():
                    await release()
        """
        return CleanupScope(self, self.release_seconds_left() if seconds is None else seconds)

    def cancel_task(self, task: asyncio.Task[object], msg: str | None = None) -> None:
        """Cancel ``task`` as the supervisor does: at once, or when its cleanup scope ends."""
        if task in self._shielded:
            self._deferred_cancels[task] = msg
        else:
            task.cancel(msg)

    def add_final_release(
        self,
        release: Callable[[float], None],
        *,
        prepare: Callable[[], None] | None = None,
    ) -> Callable[[], None]:
        """Register what to release, without the event loop, right before the process ends.

        ``release(seconds)`` runs in a thread (the event loop may be blocked or stopped), at
        most once, and must return within ``seconds``. ``prepare()`` runs in a thread of its
        own as soon as a shutdown starts (build clients there, so the release only sends).
        Returns a function that unregisters it.
        """
        key = id(release)
        with self._lock:
            self._final_releases[key] = (release, prepare)

        def remove() -> None:
            with self._lock:
                self._final_releases.pop(key, None)

        return remove

    def prepare_final_releases(self) -> None:
        """Run every ``prepare`` (the watchdog calls it in a thread when the shutdown starts)."""
        with self._lock:
            prepares = [prepare for _, prepare in self._final_releases.values() if prepare]
        for prepare in prepares:
            try:
                prepare()
            except Exception:
                logger.exception("preparing a final release failed")

    def run_final_releases(self, seconds: float = _FINAL_RELEASE_DEFAULT_SECONDS) -> None:
        """Run (once) every registered final release, within ``seconds`` altogether."""
        with self._lock:
            releases = [release for release, _ in self._final_releases.values()]
            self._final_releases.clear()
        deadline = time.monotonic() + seconds
        for release in releases:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.error("no time left for a final release", extra={"release": repr(release)})
                continue
            try:
                release(left)
            except Exception:
                logger.exception("final release failed")

    async def wait_for_phase(self, phase: Phase) -> None:
        """Return once the supervisor has reached ``phase`` (or a later one)."""
        await self._reached[phase].wait()

    def _set_phase(self, phase: Phase) -> None:
        self._phase = phase
        for each in Phase:
            self._reached[each].set()
            if each is phase:
                break

    def _call_in_loop(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the lifecycle's loop, from whichever thread we are on."""
        loop = self._loop
        if loop is None or loop.is_closed():
            callback()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            callback()
        else:
            loop.call_soon_threadsafe(callback)


class CleanupScope:
    """The one shield: see ``Lifecycle.cleanup_scope``."""

    __slots__ = ("_expired", "_lifecycle", "_seconds", "_task", "_timer")

    def __init__(self, lifecycle: Lifecycle, seconds: float) -> None:
        self._lifecycle = lifecycle
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    @property
    def expired(self) -> bool:
        """True when the bound was reached and the body was cancelled."""
        return self._expired

    def __enter__(self) -> CleanupScope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("cleanup_scope() must be used inside an asyncio task")
        self._task = task
        shielded = self._lifecycle._shielded
        shielded[task] = shielded.get(task, 0) + 1
        self._timer = task.get_loop().call_later(max(0.0, self._seconds), self._expire)
        return self

    def _expire(self) -> None:
        if self._task is not None:
            self._expired = True
            self._task.cancel("cleanup scope deadline")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task = self._task
        assert task is not None  # noqa: S101 - __enter__ ran
        if self._timer is not None:
            self._timer.cancel()
        lifecycle = self._lifecycle
        depth = lifecycle._shielded.get(task, 1) - 1
        if depth:
            lifecycle._shielded[task] = depth
        else:
            lifecycle._shielded.pop(task, None)
        swallow = (
            self._expired
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
            and task.uncancel() == 0
        )
        if not depth and task in lifecycle._deferred_cancels:
            # The supervisor asked for this cancel while we were cleaning up: deliver it now.
            task.cancel(lifecycle._deferred_cancels.pop(task))
        return swallow
