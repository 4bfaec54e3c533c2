"""The supervisor: phases, signals, one shutdown deadline, resources closed in reverse, exit codes.

A run, top to bottom, as ``_Run.serve`` reads::

    starting   settings loaded (bad ones: exit 78); the watchdog thread takes SIGTERM/SIGINT;
               health endpoint up; setup enters resources in order and registers services.
               A signal during setup cancels it: what was entered is closed, exit 0
    running    services run side by side; readiness is true
    draining   first SIGTERM/SIGINT (or a crash, or every service returned): deadlines fixed at
               the signal's arrival (by the watchdog, even if the loop is blocked); readiness
               false; services stop intake and finish in-flight work until the drain deadline
               (a second signal moves it to now)
    (drain     stragglers logged with their await chains and cancelled; they release their work
     deadline) inside ``Lifecycle.cleanup_scope()`` until the release deadline
    closing    resources closed in exact reverse order, each bounded
    stopped    exit 0 (clean), 75 (work cancelled), 1 (crash), 78 (configuration);
               70 (forced) when the hard deadline had to end work the runtime could not stop

``Supervisor.run`` owns the process (its loop, teardown and exit: ``_process.py``); ``serve``
runs embedded in someone else's loop (tests, embedders) with the same phases.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from . import ecs
from ._stacks import await_chain, culprit, format_chain
from ._watchdog import Watchdog
from .errors import ConfigurationError, StartupError
from .health import HealthServer
from .lifecycle import ExitCode, Lifecycle, Phase
from .logging import configure_logging, set_static
from .runtime import Runtime, Service, Setup
from .settings import RuntimeSettings, check_environment, load_settings
from .telemetry import Telemetry, TelemetrySettings, record_event_loop_lag
from .telemetry._shutdown import ShutdownTrace

__all__ = ["Runtime", "Service", "Setup", "Supervisor"]

logger = logging.getLogger("fargate_runtime.supervisor")


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
                await do_one_step()

    Settings are read from the environment when the run starts, never at import, and signals
    are taken over only for the duration of the run.
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
        """Own the process: run to the end on a new event loop and return the exit code.

        From the first signal on, the process is gone by ``stop_timeout - margin`` whatever
        the application does: if something still holds it then (a blocked loop, a task that
        ignores cancellation, a thread), the watchdog logs where it is stuck, releases what is
        held and ends the process with exit code 70.
        """
        from ._process import run_process

        if setup_logging:
            configure_logging()
        return run_process(self, setup_logging=setup_logging)

    async def serve(self, *, setup_logging: bool = False) -> ExitCode:
        """Run to the end on the current loop and return the exit code (embedded: no hard exit)."""
        run = self._prepare(setup_logging=setup_logging)
        if isinstance(run, ExitCode):
            return run
        watchdog = run.watchdog(hard_exit=False)
        with watchdog.running():
            watchdog.attach_loop(asyncio.get_running_loop())
            code = await run.serve()
        run.lifecycle.run_final_releases()
        run.stopped(code)
        return code

    def _prepare(self, *, setup_logging: bool) -> _Run | ExitCode:
        """Load settings and build the run (on the loop it will run on)."""
        try:
            settings = self._settings or load_settings(RuntimeSettings)
            if setup_logging:
                configure_logging(level=settings.log_level_number, json_lines=settings.log_json)
            check_environment()  # a typo'd variable would be ignored in silence
        except ConfigurationError as exc:
            logger.critical(str(exc), extra={"exit_code": int(ExitCode.CONFIGURATION)})
            return ExitCode.CONFIGURATION
        set_static(service_name=settings.service_name)
        runtime = Runtime(settings, Lifecycle(settings.budget()))
        runtime._services.extend(self._services)
        run = self._run = _Run(runtime, self._setups, handle_signals=self._handle_signals)
        return run


class _Run:
    """One run of a Supervisor: the phases, the services' tasks, the exit code."""

    def __init__(self, runtime: Runtime, setups: list[Setup], *, handle_signals: bool) -> None:
        self.runtime = runtime
        self.lifecycle = runtime.lifecycle
        self.settings = runtime.settings
        self.setups = setups
        self.handle_signals = handle_signals
        self.cancel_now = asyncio.Event()
        self.crashed = False
        self.code_on_crash = ExitCode.CRASHED
        self.cut = False  # work was cancelled at the drain deadline
        self.abandoned: set[asyncio.Task[Any]] = set()  # ...and ignored it
        self.phase_started = time.monotonic()
        self.shutdown_trace: ShutdownTrace | None = None
        self.identity: ecs.TaskIdentity | None = None

    def watchdog(self, *, hard_exit: bool) -> Watchdog:
        """The watchdog thread for this run."""
        return Watchdog(
            self.lifecycle,
            on_signal=self.on_signal,
            handle_signals=self.handle_signals,
            hard_exit=hard_exit,
            blocked_after_seconds=self.settings.blocked_loop_seconds,
            on_loop_lag=record_event_loop_lag,
        )

    async def serve(self) -> ExitCode:
        """The whole run, in the order it happens."""
        budget = self.lifecycle.budget
        self.identity = await _identify()  # bounded read; stamps every line after it
        logger.info(
            "phase starting",
            extra={
                "phase": Phase.STARTING.value,
                "stop_timeout_seconds": budget.stop_timeout_seconds,
                "drain_seconds": budget.drain_seconds,
                "release_seconds": budget.release_seconds,
                "close_seconds": budget.close_seconds,
                "hard_deadline_seconds": budget.total_seconds,
            },
        )
        if await self.start():
            self.enter_phase(Phase.RUNNING)
            await self.run_services()
        # Whatever ended the run (signal, crash, services done), the deadlines are fixed now:
        # closing is bounded, and the watchdog holds the process to the hard deadline.
        self.begin_shutdown("run ended", quiet=True)
        self.enter_phase(Phase.CLOSING)
        await self.runtime._close_resources()
        return self.exit_code()

    def exit_code(self) -> ExitCode:
        if self.abandoned:
            return ExitCode.FORCED
        if self.crashed:
            return self.code_on_crash
        return ExitCode.DRAIN_TIMEOUT if self.cut else ExitCode.OK

    def stopped(self, code: ExitCode) -> None:
        """Log the last phase; called once the process (or the embedded run) really is done."""
        self.enter_phase(Phase.STOPPED, exit_code=int(code))

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> bool:
        """Enter resources and run the setups, raced with shutdown; True when services may run."""
        starting = asyncio.create_task(self.enter_all(), name="setup")
        requested = asyncio.create_task(self.lifecycle.wait_shutdown_requested())
        try:
            await asyncio.wait({starting, requested}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            requested.cancel()
        if not starting.done():
            logger.warning("shutdown requested during start; setup cancelled")
            self.lifecycle.cancel_task(starting)
            await asyncio.wait({starting}, timeout=self.lifecycle.release_seconds_left())
            if not starting.done():
                self.abandon(starting, "setup ignored cancellation")
            return False
        if starting.cancelled():
            return False
        error = starting.exception()
        if isinstance(error, ConfigurationError):
            self.misconfigured(error)
        elif error is not None:
            logger.error("setup failed", exc_info=error)
            self.crashed = True
        return error is None and not self.lifecycle.shutdown_requested

    async def enter_all(self) -> None:
        runtime = self.runtime
        settings = self.settings
        # Entered first, so closed last: liveness answers until the very end.
        health = HealthServer(self.lifecycle, host=settings.health_host, port=settings.health_port)
        await runtime.enter(health, name="health")
        identity = self.identity
        # Next, so it closes after every user resource and flushes what they recorded.
        telemetry = Telemetry(
            load_settings(TelemetrySettings),
            service_name=settings.service_name,
            lifecycle=self.lifecycle,
            resource_attributes=identity.resource_attributes() if identity else None,
        )
        # Its whole close share: it closes last but one and flushes with what is left.
        budget = self.lifecycle.budget
        await runtime.enter(telemetry, name="telemetry", close_timeout_seconds=budget.close_seconds)
        for setup in self.setups:
            try:
                await setup(runtime)
            except (SystemExit, KeyboardInterrupt) as exc:
                # Raised out of a task, these would stop the event loop on the spot.
                raise StartupError(f"setup raised {type(exc).__name__}({exc})") from exc

    # -- running and draining ----------------------------------------------------------------

    async def run_services(self) -> None:
        """Run services until shutdown; drain them until the drain deadline; cancel the rest."""
        lifecycle = self.lifecycle
        pending: set[asyncio.Task[Any]] = {
            asyncio.create_task(self.guarded(name, service), name=name)
            for name, service in self.runtime._services
        }
        requested: asyncio.Task[Any] = asyncio.create_task(lifecycle.wait_shutdown_requested())
        try:
            while pending and not requested.done():
                _, pending = await asyncio.wait(
                    pending | {requested}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(requested)
        finally:
            requested.cancel()
        if not lifecycle.shutdown_requested:
            logger.info("all services returned")
            return
        self.enter_phase(
            Phase.DRAINING, reason=lifecycle.shutdown_reason, in_flight_services=len(pending)
        )
        pending = await self.drain(pending)
        if pending:
            await self.cancel_stragglers(pending)

    async def drain(self, pending: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
        """Wait for services until they all return, the drain deadline, or a second signal."""
        cancel_now: asyncio.Task[Any] = asyncio.create_task(self.cancel_now.wait())
        try:
            while pending and not cancel_now.done():
                timeout = self.lifecycle.drain_seconds_left()
                if timeout <= 0:
                    break
                _, pending = await asyncio.wait(
                    pending | {cancel_now}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(cancel_now)
        finally:
            cancel_now.cancel()
        return pending

    async def cancel_stragglers(self, pending: set[asyncio.Task[Any]]) -> None:
        """Drain deadline: cancel what still runs; it releases its work in cleanup scopes."""
        self.cut = True
        if self.shutdown_trace is not None:
            self.shutdown_trace.deadline_hit(services=len(pending))
        for task in pending:
            chain = await_chain(task)
            logger.warning(
                "drain deadline hit: cancelling service",
                extra={
                    "service": task.get_name(),
                    "culprit": culprit(chain),
                    "stack": format_chain(chain),
                },
            )
            self.lifecycle.cancel_task(task)
        _, still_running = await asyncio.wait(
            pending, timeout=self.lifecycle.release_seconds_left()
        )
        for task in still_running:
            self.abandon(task, "service ignored cancellation")

    def abandon(self, task: asyncio.Task[Any], message: str) -> None:
        """A task that does not stop: logged; the process will end without it (exit 70)."""
        chain = await_chain(task)
        stack = format_chain(chain)
        logger.error(
            message, extra={"task": task.get_name(), "culprit": culprit(chain), "stack": stack}
        )
        self.abandoned.add(task)

    async def guarded(self, name: str, service: Service) -> None:
        """Run one service; a crash starts the shutdown of the whole process (exit 1)."""
        try:
            await service(self.lifecycle)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Nobody cancelled it: the service raised CancelledError itself. That is a crash.
            self.crash(name, "service raised CancelledError")
        except (SystemExit, KeyboardInterrupt) as exc:
            self.crash(name, f"service raised {type(exc).__name__}({exc})")
        except ConfigurationError as exc:
            # Found when the service started (a queue that does not exist): exit 78, one line.
            self.misconfigured(exc, service=name)
            self.begin_shutdown(f"service {name}: bad configuration")
        except Exception:
            logger.exception("service crashed", extra={"service": name})
            self.crashed = True
            self.begin_shutdown(f"service {name} crashed")
        else:
            if not self.lifecycle.shutdown_requested:
                logger.info("service returned", extra={"service": name})

    def misconfigured(self, error: ConfigurationError, **fields: str) -> None:
        """A setting is wrong: one critical line naming it, and the run ends with exit 78."""
        logger.critical(str(error), extra={**fields, "exit_code": int(ExitCode.CONFIGURATION)})
        self.crashed, self.code_on_crash = True, ExitCode.CONFIGURATION

    def crash(self, name: str, what: str) -> None:
        logger.error("service crashed: %s", what, extra={"service": name})
        self.crashed = True
        self.begin_shutdown(f"service {name} crashed")

    # -- shutdown requests -------------------------------------------------------------------

    def begin_shutdown(self, reason: str, *, at: float | None = None, quiet: bool = False) -> None:
        """Fix the deadlines (first call only) and wake the run; safe from any thread."""
        if self.lifecycle.request_shutdown(reason, at=at) and not quiet:
            deadlines = self.lifecycle.deadlines
            logger.info(
                "shutdown requested",
                extra={
                    "reason": reason,
                    "drain_seconds": self.lifecycle.budget.drain_seconds,
                    "hard_deadline_seconds": self.lifecycle.budget.total_seconds,
                    "requested_at_monotonic": deadlines.requested_at if deadlines else None,
                },
            )

    def on_signal(self, signum: int, at: float) -> None:
        """SIGTERM/SIGINT, from the watchdog thread (the loop may be blocked)."""
        name = signal.Signals(signum).name
        if not self.lifecycle.shutdown_requested:
            self.begin_shutdown(name, at=at)
            return
        logger.warning("second signal: cancelling in-flight work now", extra={"signal": name})
        self.lifecycle._call_in_loop(self.cancel_now.set)

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


async def _identify() -> ecs.TaskIdentity | None:
    """Read the ECS task identity once; stamp it on every log line when there is one."""
    identity = await ecs.read_task_identity()
    if identity is not None:
        set_static(**identity.log_fields())
    return identity
