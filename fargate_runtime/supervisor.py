"""The supervisor: phases, signals, one shutdown deadline, resources closed in reverse, exit codes.

A run, and what each phase does::

    starting   settings loaded (bad ones: exit 78), signal handlers installed, health endpoint
               up, setup enters resources in order and registers services
    running    services run side by side; readiness is true
    draining   first SIGTERM/SIGINT (or a crashed service): readiness false, services stop
               intake and finish in-flight work until the drain deadline
               (a second signal moves the deadline to now)
    (deadline) stragglers logged with their stacks and cancelled; they release their work
               inside ``Lifecycle.cleanup_scope()`` until the release deadline
    closing    resources closed in exact reverse order, each bounded and shielded
    stopped    signal handlers restored; exit 0 (clean), 75 (work cancelled), 1 (crash)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from . import ecs
from .errors import ConfigurationError, SignalHandlingError
from .health import HealthServer
from .lifecycle import ExitCode, Lifecycle, Phase
from .logging import configure_logging, set_static
from .settings import RuntimeSettings, load_settings
from .telemetry import Telemetry, TelemetrySettings
from .telemetry._shutdown import ShutdownTrace

__all__ = ["Runtime", "Service", "Setup", "Supervisor"]

logger = logging.getLogger("fargate_runtime.supervisor")

T = TypeVar("T")
Service = Callable[[Lifecycle], Awaitable[None]]
Setup = Callable[["Runtime"], Awaitable[None]]
_SignalHandler = Callable[[int, FrameType | None], Any] | int | None

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Default close bound for one resource when the caller names none.
DEFAULT_CLOSE_TIMEOUT_SECONDS = 2.0


@dataclass(slots=True)
class _Resource:
    name: str
    manager: AbstractAsyncContextManager[Any]
    close_timeout_seconds: float


class Runtime:
    """The handle a setup function gets: enter resources, register services."""

    def __init__(self, settings: RuntimeSettings, lifecycle: Lifecycle) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self._resources: list[_Resource] = []
        self._services: list[tuple[str, Service]] = []

    async def enter(
        self,
        manager: AbstractAsyncContextManager[T],
        *,
        name: str,
        close_timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS,
    ) -> T:
        """Enter ``manager`` now; it is closed after the services stop, in reverse order."""
        value = await manager.__aenter__()
        self._resources.append(_Resource(name, manager, close_timeout_seconds))
        logger.debug("resource entered", extra={"resource": name})
        return value

    def add_service(self, service: Service, *, name: str | None = None) -> None:
        """Run ``service(lifecycle)`` once setup is done, alongside the other services."""
        label = name or str(getattr(service, "__name__", "service"))
        self._services.append((label, service))

    async def _close_resources(self) -> None:
        """Close in exact reverse order; each close bounded and shielded, failures logged."""
        deadlines = self.lifecycle.deadlines
        while self._resources:
            resource = self._resources.pop()
            timeout = resource.close_timeout_seconds
            if deadlines is not None:
                timeout = min(timeout, max(0.0, deadlines.close - self.lifecycle.now()))
            started = time.monotonic()
            try:
                finished = await _shielded(resource.manager.__aexit__(None, None, None), timeout)
            except Exception:
                logger.exception("resource close failed", extra={"resource": resource.name})
                continue
            if not finished:
                logger.error(
                    "resource close timed out",
                    extra={"resource": resource.name, "timeout_seconds": round(timeout, 3)},
                )
            else:
                logger.info(
                    "resource closed",
                    extra={
                        "resource": resource.name,
                        "duration_seconds": round(time.monotonic() - started, 3),
                    },
                )


async def _shielded(awaitable: Awaitable[Any], seconds: float) -> bool:
    """Await ``awaitable`` for at most ``seconds``, even if our caller is cancelled.

    Returns False when it timed out (it is then cancelled). A cancellation that arrived while
    waiting is re-raised once the work is done, so a close is never cut halfway.
    """
    inner = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    cancelled = False
    while not inner.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            await asyncio.wait({inner}, timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    finished = inner.done()
    if not finished:
        inner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait({inner}, timeout=0.1)
    if cancelled:
        raise asyncio.CancelledError
    if finished:
        inner.result()  # re-raise the close's own exception
    return finished


class Supervisor:
    """Owns a process's life on ECS: start, run services, drain within the stop timeout, close.

    Configure it with a setup function and/or services, then ``run()`` it (or let
    ``fargate-runtime run MODULE:ATTR`` do so)::

        app = Supervisor()

        @app.setup
        async def setup(rt: Runtime) -> None:
            redis = await rt.enter(Redis.from_url(url), name="redis")
            rt.add_service(Consumer(...).run, name="consumer")

        @app.service
        async def job(lifecycle: Lifecycle) -> None:
            while not lifecycle.shutdown_requested:
                ...

    Settings are read from the environment when the run starts, never at import, and signal
    handlers are installed only for the duration of the run.
    """

    def __init__(
        self,
        setup: Setup | None = None,
        *,
        settings: RuntimeSettings | None = None,
        handle_signals: bool = True,
    ) -> None:
        self._setups: list[Setup] = [setup] if setup is not None else []
        self._services: list[tuple[str, Service]] = []
        self._settings = settings
        self._handle_signals = handle_signals
        self._run: _Run | None = None

    def setup(self, function: Setup) -> Setup:
        """Decorator: run ``function(runtime)`` at start to enter resources and add services."""
        self._setups.append(function)
        return function

    def service(self, function: Service) -> Service:
        """Decorator: run ``function(lifecycle)`` as a service."""
        self._services.append((function.__name__, function))
        return function

    @property
    def lifecycle(self) -> Lifecycle | None:
        """The lifecycle of the current run (None before ``serve`` starts)."""
        return self._run.lifecycle if self._run is not None else None

    def request_shutdown(self, reason: str = "requested") -> None:
        """Start draining, as the first SIGTERM would (for embedders that own signals)."""
        if self._run is not None:
            self._run.begin_shutdown(reason)

    def run(self, *, setup_logging: bool = True) -> ExitCode:
        """Run to the end on a new event loop and return the exit code."""
        if setup_logging:
            configure_logging()
        return asyncio.run(self.serve(setup_logging=setup_logging))

    async def serve(self, *, setup_logging: bool = False) -> ExitCode:
        """Run to the end on the current loop and return the exit code."""
        try:
            settings = self._settings or load_settings(RuntimeSettings)
        except ConfigurationError as exc:
            logger.critical(str(exc), extra={"exit_code": int(ExitCode.CONFIGURATION)})
            return ExitCode.CONFIGURATION
        if setup_logging:
            configure_logging(level=settings.log_level_number, json_lines=settings.log_json)
        set_static(service_name=settings.service_name)
        runtime = Runtime(settings, Lifecycle(settings.budget()))
        runtime._services.extend(self._services)
        run = self._run = _Run(runtime, self._setups)
        with _signal_handlers(run.on_signal, enabled=self._handle_signals):
            run.identity = await _identify()
            return await run.serve()


class _Run:
    """One run of a Supervisor: the phases, the services' tasks, the exit code."""

    def __init__(self, runtime: Runtime, setups: list[Setup]) -> None:
        self.runtime = runtime
        self.lifecycle = runtime.lifecycle
        self.setups = setups
        self.cancel_now = asyncio.Event()
        self.crashed = False
        self.phase_started = time.monotonic()
        self.identity: ecs.TaskIdentity | None = None
        self.shutdown_trace: ShutdownTrace | None = None

    async def serve(self) -> ExitCode:
        runtime, lifecycle = self.runtime, self.lifecycle
        budget = lifecycle.budget
        logger.info(
            "phase starting",
            extra={
                "phase": Phase.STARTING.value,
                "stop_timeout_seconds": budget.stop_timeout_seconds,
                "drain_seconds": budget.drain_seconds,
                "release_seconds": budget.release_seconds,
                "close_seconds": budget.close_seconds,
            },
        )
        timed_out = False
        code_on_failure = ExitCode.CRASHED
        settings = runtime.settings
        try:
            # Entered first, so closed last: liveness answers until the very end.
            health = HealthServer(lifecycle, host=settings.health_host, port=settings.health_port)
            await runtime.enter(health, name="health")
            # Next, so it closes after every user resource and flushes what they recorded.
            telemetry = Telemetry(
                load_settings(TelemetrySettings),
                service_name=settings.service_name,
                lifecycle=lifecycle,
                resource_attributes=self.identity.resource_attributes() if self.identity else None,
            )
            # Its whole close share: it closes last but one and flushes with what is left.
            await runtime.enter(
                telemetry, name="telemetry", close_timeout_seconds=budget.close_seconds
            )
            for setup in self.setups:
                await setup(runtime)
        except ConfigurationError as exc:
            logger.critical(str(exc), extra={"exit_code": int(ExitCode.CONFIGURATION)})
            self.crashed = True
            code_on_failure = ExitCode.CONFIGURATION
        except Exception:
            logger.exception("setup failed")
            self.crashed = True
        else:
            self.enter_phase(Phase.RUNNING)
            if lifecycle.shutdown_requested:
                logger.warning("shutdown requested during start; services not started")
            else:
                timed_out = await self.run_services()
        self.enter_phase(Phase.CLOSING)
        await runtime._close_resources()
        if self.crashed:
            code = code_on_failure
        else:
            code = ExitCode.DRAIN_TIMEOUT if timed_out else ExitCode.OK
        self.enter_phase(Phase.STOPPED, exit_code=int(code))
        return code

    async def run_services(self) -> bool:
        """Run services until all return; return True when stragglers had to be cancelled."""
        lifecycle = self.lifecycle
        tasks = {
            asyncio.create_task(self.guarded(name, service), name=name)
            for name, service in self.runtime._services
        }
        cancel_now = asyncio.create_task(self.cancel_now.wait())
        deadline_timer: asyncio.TimerHandle | None = None
        pending = set(tasks)
        try:
            while pending:
                waiting_for = pending | {cancel_now}
                waiter = None
                if deadline_timer is None:
                    waiter = asyncio.create_task(lifecycle.wait_shutdown_requested())
                    waiting_for.add(waiter)
                done, _ = await asyncio.wait(waiting_for, return_when=asyncio.FIRST_COMPLETED)
                if waiter is not None:
                    waiter.cancel()
                pending -= done
                if lifecycle.shutdown_requested and deadline_timer is None:
                    self.enter_phase(
                        Phase.DRAINING,
                        reason=lifecycle.shutdown_reason,
                        in_flight_services=len(pending),
                    )
                    deadline_timer = self.arm_drain_deadline()
                if cancel_now in done:
                    break
            if not pending:
                if not lifecycle.shutdown_requested:
                    logger.info("all services returned")
                return False
            await self.cancel_stragglers(pending)
            return True
        finally:
            cancel_now.cancel()
            if deadline_timer is not None:
                deadline_timer.cancel()

    def arm_drain_deadline(self) -> asyncio.TimerHandle:
        deadlines = self.lifecycle.deadlines
        drain_at = deadlines.drain if deadlines is not None else self.lifecycle.now()
        delay = max(0.0, drain_at - self.lifecycle.now())
        return asyncio.get_running_loop().call_later(delay, self.cancel_now.set)

    async def cancel_stragglers(self, pending: set[asyncio.Task[None]]) -> None:
        if self.shutdown_trace is not None:
            self.shutdown_trace.deadline_hit(services=len(pending))
        for task in pending:
            logger.warning(
                "drain deadline hit: cancelling service",
                extra={"service": task.get_name(), "stack": _await_stack(task)},
            )
            task.cancel()
        _, still_running = await asyncio.wait(
            pending, timeout=self.lifecycle.release_seconds_left()
        )
        for task in still_running:
            logger.error(
                "service ignored cancellation; abandoning it", extra={"service": task.get_name()}
            )

    async def guarded(self, name: str, service: Service) -> None:
        """Run one service; a crash starts the shutdown of the whole process (exit 1)."""
        try:
            await service(self.lifecycle)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("service crashed", extra={"service": name})
            self.crashed = True
            self.begin_shutdown(f"service {name} crashed")
        else:
            if not self.lifecycle.shutdown_requested:
                logger.info("service returned", extra={"service": name})

    def begin_shutdown(self, reason: str) -> None:
        if self.lifecycle.request_shutdown(reason):
            logger.info("shutdown requested", extra={"reason": reason})

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.lifecycle.shutdown_requested:
            logger.warning("second signal: cancelling in-flight work now", extra={"signal": name})
            self.cancel_now.set()
        else:
            self.begin_shutdown(name)

    def enter_phase(self, phase: Phase, **extra: Any) -> None:
        """Enter ``phase``; log it with how long the previous phase took; trace the shutdown."""
        now = time.monotonic()
        since, self.phase_started = self.phase_started, now
        previous = self.lifecycle.phase
        self.lifecycle._set_phase(phase)
        if phase is Phase.DRAINING:
            self.shutdown_trace = ShutdownTrace(str(extra["reason"]))
        elif previous is Phase.DRAINING and self.shutdown_trace is not None:
            # Drain ends here; the span ends before telemetry is flushed in the closing phase.
            self.shutdown_trace.end(next_phase=phase.value, drain_seconds=now - since)
            self.shutdown_trace = None
        logger.info(
            "phase %s",
            phase.value,
            extra={
                "phase": phase.value,
                "previous_phase": previous.value,
                "previous_phase_seconds": round(now - since, 3),
                **extra,
            },
        )


@contextlib.contextmanager
def _signal_handlers(callback: Callable[[int], None], *, enabled: bool) -> Iterator[None]:
    """Install SIGTERM/SIGINT handlers for the run; restore the previous ones after."""
    if not enabled:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise SignalHandlingError(
            "signal handlers can only be installed in the main thread; run the supervisor "
            "there, or pass handle_signals=False and call request_shutdown() yourself"
        )
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, _SignalHandler] = {}
    for sig in _SIGNALS:
        previous[sig] = signal.getsignal(sig)
        loop.add_signal_handler(sig, callback, int(sig))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def _await_stack(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended, outermost first, following the chain of awaits.

    ``Task.get_stack()`` shows one frame for a suspended coroutine; the await chain shows the
    line in user code that refuses to finish.
    """
    lines = []
    awaitable: Any = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            lines.append(
                f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, '
                f"in {frame.f_code.co_name}"
            )
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return "\n".join(lines)


async def _identify() -> ecs.TaskIdentity | None:
    """Read the ECS task identity once; stamp it on every log line when there is one."""
    identity = await ecs.read_task_identity()
    if identity is not None:
        set_static(**identity.log_fields())
    return identity
