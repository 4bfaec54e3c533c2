"""The watchdog thread: signals seen while the loop is blocked, the hard deadline, stuck loops.

User code blocks event loops: sync libraries, CPU loops, ``to_thread`` work that cancellation
cannot stop, handlers that swallow ``CancelledError``. A handler registered with
``loop.add_signal_handler`` only runs when the loop turns, and a deadline kept by the loop only
fires when the loop turns. So one thread outside the loop does three jobs::

    signals    SIGTERM/SIGINT are blocked in every thread and taken here with sigtimedwait():
               the first one is logged and fixes the deadlines at once, whatever the loop does;
               the loop is told with call_soon_threadsafe
    stuck loop a pulse callback stamps each loop turn; a loop that has not turned for
               ``blocked_after_seconds`` gets one warning with the blocked code's stack
    hard       at stop_timeout - margin after the first signal, if the process is still here:
               every thread's stack and every unfinished task's await chain logged, the final
               releases run (SQS visibility 0, claims released; no loop needed), logs flushed,
               os._exit(70)

Behind it, for code that holds the GIL and starves even this thread (a C extension's long
call), ``faulthandler`` -- a C-level timer that needs no GIL -- dumps the stacks and exits at
half the margin later. That path exits 1 (faulthandler's code), still before SIGKILL.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from ._stacks import task_stacks, thread_stacks
from .lifecycle import ExitCode

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterator
    from types import FrameType
    from typing import TypeAlias

    from .lifecycle import Lifecycle

    _Handler: TypeAlias = Callable[[int, FrameType | None], object] | int | None

__all__ = ["Watchdog"]


logger = logging.getLogger("fargate_runtime.watchdog")

SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# How often the loop stamps its pulse, and the thread looks at it.
PULSE_SECONDS = 0.25
# The forced exit's own budget, inside the margin: final releases, then logs flushed.
FORCED_RELEASE_SECONDS = 0.3
_FORCED_SWITCH_INTERVAL_SECONDS = 0.0001


class Watchdog:
    """One thread per run: signals, the blocked-loop detector, and (optionally) the hard exit.

    ``hard_exit`` is for a process that owns its life (``Supervisor.run``, the CLI); embedded
    (``serve``) it only logs that the deadline passed.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        on_signal: Callable[[int, float], None],
        handle_signals: bool,
        hard_exit: bool,
        blocked_after_seconds: float,
        on_loop_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._on_signal = on_signal
        self._handle_signals = handle_signals
        self._hard_exit = hard_exit
        self._blocked_after = blocked_after_seconds
        self._on_loop_lag = on_loop_lag
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._exit_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._pulse: asyncio.TimerHandle | None = None
        self._last_pulse = time.monotonic()
        self._blocked_since: float | None = None
        self._armed = False
        self._deadline_reported = False
        self._previous_mask: set[signal.Signals | int] | None = None
        self._previous_handlers: dict[signal.Signals, _Handler] = {}

    # -- life of the thread ------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[Watchdog]:
        """Start the thread (and take over SIGTERM/SIGINT); stop and restore on exit."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def start(self) -> None:
        """Start watching; with signals, block them in this thread first (threads inherit it)."""
        if self._handle_signals:
            if threading.current_thread() is not threading.main_thread():
                from .errors import SignalHandlingError

                raise SignalHandlingError(
                    "signal handlers can only be installed in the main thread; run the "
                    "supervisor there, or pass handle_signals=False and call "
                    "request_shutdown() yourself"
                )
            # A thread started before this one may not block them: the kernel then delivers
            # there, and Python runs this handler in the main thread. Same path, same lock.
            for sig in SIGNALS:
                self._previous_handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, self._python_handler)
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self._thread = threading.Thread(
            target=self._watch, name="fargate-runtime-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and give the signals back as they were."""
        self.detach_loop()
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * PULSE_SECONDS)
        if self._hard_exit and self._armed:
            faulthandler.cancel_dump_traceback_later()
        if self._handle_signals and self._previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
            self._previous_mask = None
            for sig, handler in self._previous_handlers.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start stamping ``loop``'s turns (call from the loop's thread)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._last_pulse = time.monotonic()
        self._pulse = loop.call_later(PULSE_SECONDS, self._stamp, self._last_pulse + PULSE_SECONDS)

    def detach_loop(self) -> None:
        """Stop watching the loop's turns (it is about to stop on purpose)."""
        pulse, self._pulse = self._pulse, None
        if pulse is not None:
            pulse.cancel()
        self._blocked_since = None

    def _stamp(self, due: float) -> None:
        """On the loop: record a turn and how late it came, then schedule the next."""
        now = time.monotonic()
        self._last_pulse = now
        if self._on_loop_lag is not None:
            self._on_loop_lag(max(0.0, now - due))
        if self._loop is not None and self._pulse is not None:
            self._pulse = self._loop.call_later(PULSE_SECONDS, self._stamp, now + PULSE_SECONDS)

    # -- the thread --------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            wait = self.seconds_to_next_check(time.monotonic())
            if self._handle_signals:
                info = signal.sigtimedwait(SIGNALS, wait)
                if info is not None:
                    self.signal_received(info.si_signo)
            else:
                self._stopping.wait(wait)
            if self._stopping.is_set():
                return
            try:
                self.check()
            except Exception:  # the watchdog must outlive any bug in a check
                logger.exception("watchdog check failed")

    def seconds_to_next_check(self, now: float) -> float:
        """How long the thread waits (for a signal) before its next check: a pulse, cut to wake
        at the hard deadline itself; none once it passed unhandled, a pulse again after that
        (an embedded supervisor stays past it: the thread must not spin)."""
        deadlines = self._lifecycle.deadlines
        if deadlines is None:
            return PULSE_SECONDS
        left = deadlines.hard - now
        if left > 0:
            return min(PULSE_SECONDS, left)
        return PULSE_SECONDS if self._deadline_reported else 0.0

    def _python_handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal_received(signum)

    def signal_received(self, signum: int) -> None:
        """Any thread: pass the signal on, stamped with when it arrived."""
        self._on_signal(signum, time.monotonic())

    def check(self) -> None:
        """One look, what the thread runs after each wait: arm at the first shutdown, act at the
        hard deadline, else see whether the loop still turns."""
        now = time.monotonic()
        deadlines = self._lifecycle.deadlines
        if deadlines is not None and not self._armed:
            self._arm(deadlines.hard - now)
        if deadlines is not None and now >= deadlines.hard:
            self._deadline_passed()
            return
        if self._pulse is not None:
            self._check_loop(now)

    def _arm(self, seconds_to_hard: float) -> None:
        """The first time a shutdown is seen: prepare the final releases, set the backstop."""
        self._armed = True
        threading.Thread(
            target=self._lifecycle.prepare_final_releases,
            name="fargate-runtime-prepare-release",
            daemon=True,
        ).start()
        if self._hard_exit:
            margin = self._lifecycle.budget.margin_seconds
            faulthandler.dump_traceback_later(
                max(0.01, seconds_to_hard + margin / 2), exit=True, file=sys.stderr
            )

    def _check_loop(self, now: float) -> None:
        """Warn once per episode when the loop has not turned for ``blocked_after_seconds``."""
        stalled = now - self._last_pulse
        if stalled <= self._blocked_after:
            if self._blocked_since is not None:
                logger.info(
                    "event loop unblocked",
                    extra={"blocked_seconds": round(now - self._blocked_since, 3)},
                )
                self._blocked_since = None
            return
        if self._blocked_since is not None:
            return
        self._blocked_since = self._last_pulse
        stuck = next(
            (thread for thread in thread_stacks() if thread.ident == self._loop_thread), None
        )
        logger.warning(
            "event loop blocked",
            extra={
                "blocked_seconds": round(stalled, 3),
                "culprit": stuck.culprit if stuck else None,
                "stack": stuck.stack if stuck else None,
            },
        )

    def _deadline_passed(self) -> None:
        if self._hard_exit:
            self.forced_exit("the hard deadline passed and the process is still running")
        elif not self._deadline_reported:
            self._deadline_reported = True
            logger.error("hard deadline passed; embedded supervisor cannot end the process")

    # -- the forced exit ---------------------------------------------------------------------

    def forced_exit(self, reason: str) -> None:
        """Log where everything is stuck, run the final releases, flush, ``os._exit(70)``.

        Callable from any thread; only the first call does anything, the others wait for it.
        """
        self._exit_lock.acquire()  # never released: the process ends under it
        # A CPU-bound main thread keeps the GIL for the switch interval (5 ms) each time this
        # thread asks for it; every log line asks again. The process is ending: hand over fast.
        sys.setswitchinterval(_FORCED_SWITCH_INTERVAL_SECONDS)
        code = int(ExitCode.FORCED)
        logger.critical("forced exit: %s", reason, extra={"exit_code": code})
        ours = {threading.get_ident()}
        if self._thread is not None and self._thread.ident is not None:
            ours.add(self._thread.ident)
        for thread in thread_stacks(skip=ours):
            logger.error(
                "thread still running",
                extra={
                    "thread_name": thread.name,
                    "daemon": thread.daemon,
                    "culprit": thread.culprit,
                    "stack": thread.stack,
                },
            )
        if self._loop is not None and not self._loop.is_closed():
            # The runtime's own tasks (waiting for the run) say nothing: the user's lines do.
            for task in task_stacks(self._loop):
                if task.culprit is not None:
                    logger.error(
                        "task still running",
                        extra={"task": task.name, "culprit": task.culprit, "stack": task.stack},
                    )
        self._lifecycle.run_final_releases(FORCED_RELEASE_SECONDS)
        logger.critical(
            "phase stopped", extra={"phase": "stopped", "exit_code": code, "forced": True}
        )
        _flush_logs()
        os._exit(code)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
