"""A process owned by one supervisor run: its event loop, its watchdog, a bounded teardown, exit.

``asyncio.run`` cannot own a process that must be gone before SIGKILL: its teardown waits for
every task to accept cancellation (``_cancel_all_tasks``) and for every executor thread
(``shutdown_default_executor``), without a bound. Here, after the run::

    tasks left       cancelled, given a short unwind; those that ignore it are abandoned: the
                     loop stops for good, so they cannot do anything more (exit 70)
    threads left     executor jobs (to_thread) and users' non-daemon threads are waited for
                     until the hard deadline; work they belong to stays held meanwhile
    final releases   what is still held (cut work whose thread just ended, say) is released,
                     without the loop, right before the process ends
    stopped          logged only now, when it is true

and the watchdog thread ends the process at the hard deadline if any of this is still waiting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

from ._work import EXECUTOR_THREAD_PREFIX, WorkExecutor
from .lifecycle import ExitCode

if TYPE_CHECKING:
    from ._watchdog import Watchdog
    from .supervisor import Supervisor, _Run

__all__ = ["run_process"]

logger = logging.getLogger("fargate_runtime.supervisor")

# How long tasks still alive after the run get to accept their cancellation.
_UNWIND_SECONDS = 0.5
# The final releases of a normal end (a forced one has its own, shorter, bound).
_FINAL_RELEASE_SECONDS = 1.0


def run_process(supervisor: Supervisor, *, setup_logging: bool) -> ExitCode:
    """Run ``supervisor`` on a new loop and return its exit code, or end the process (70)."""
    loop = asyncio.new_event_loop()
    executor = WorkExecutor()
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    owned: list[tuple[_Run, Watchdog]] = []

    async def main() -> ExitCode:
        run = supervisor._prepare(setup_logging=setup_logging)
        if isinstance(run, ExitCode):
            return run
        watchdog = run.watchdog(hard_exit=True)
        watchdog.start()
        watchdog.attach_loop(loop)
        owned.append((run, watchdog))
        return await run.serve()

    try:
        code = _run_main(loop, loop.create_task(main(), name="supervisor"), owned)
        if not owned:
            return code  # refused at start: nothing ran
        run, watchdog = owned[0]
        code = _teardown(loop, run, watchdog, code)
        code = _wait_for_threads(run, watchdog, executor, code)
        run.lifecycle.run_final_releases(min(_FINAL_RELEASE_SECONDS, _hard_left(run)))
        run.stopped(code)
        watchdog.stop()
        return code
    finally:
        asyncio.set_event_loop(None)
        if not loop.is_closed():
            loop.close()


def _run_main(
    loop: asyncio.AbstractEventLoop,
    main: asyncio.Task[ExitCode],
    owned: list[tuple[_Run, Watchdog]],
) -> ExitCode:
    """Run the supervisor's task to its end.

    A task that raises SystemExit or KeyboardInterrupt stops any asyncio loop on the spot; here
    that becomes an orderly shutdown with exit code 1, and the loop runs on to finish it.
    """
    while True:
        try:
            return loop.run_until_complete(main)
        except (SystemExit, KeyboardInterrupt) as exc:
            if not owned:
                raise
            run, _ = owned[0]
            logger.error(
                "a task raised %s; shutting down", type(exc).__name__, extra={"error": repr(exc)}
            )
            run.crashed = True
            run.begin_shutdown(f"a task raised {type(exc).__name__}")


def _teardown(
    loop: asyncio.AbstractEventLoop, run: _Run, watchdog: Watchdog, code: ExitCode
) -> ExitCode:
    """Cancel the tasks left, bounded; abandon those that ignore it; close the loop."""
    watchdog.detach_loop()
    left = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.wait(left, timeout=min(_UNWIND_SECONDS, _hard_left(run))))
    for task in left:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.error("task failed while stopping", exc_info=task.exception())
    stuck = [task for task in left if not task.done()]
    if stuck:
        # The loop never turns again, so these tasks can do nothing more: releasing what they
        # held is safe now, not sooner. forced_exit logs each one's await chain.
        watchdog.forced_exit(f"{len(stuck)} task(s) ignored cancellation")
    unwind = min(_UNWIND_SECONDS, _hard_left(run))
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), timeout=unwind))
    except TimeoutError:
        logger.error("async generators did not close in time")
    loop.close()  # also shuts the default executor down (without waiting)
    return ExitCode.FORCED if run.abandoned else code


def _wait_for_threads(
    run: _Run, watchdog: Watchdog, executor: WorkExecutor, code: ExitCode
) -> ExitCode:
    """Wait, until the hard deadline, for executor jobs and non-daemon threads still running.

    Their work cannot be cancelled; what it belongs to stays held until they end (then the
    final releases run) or the watchdog ends the process at the hard deadline (exit 70).
    """
    jobs = executor.unfinished()
    threads = _other_threads()
    # The executor's idle threads leave on their own once the loop has shut it down.
    if not jobs and all(t.name.startswith(EXECUTOR_THREAD_PREFIX) for t in threads):
        for thread in threads:
            thread.join(timeout=_hard_left(run))
        if not _other_threads():
            return code
        threads = _other_threads()
    logger.warning(
        "waiting for threads still running",
        extra={
            "executor_jobs": len(jobs),
            "threads": [thread.name for thread in threads],
            "hard_deadline_in_seconds": round(_hard_left(run), 3),
        },
    )
    for thread in threads:
        thread.join(timeout=_hard_left(run))
    if _other_threads():
        # The watchdog gets there at the same moment; whichever is first does it, once.
        watchdog.forced_exit("threads still running at the hard deadline")
    return code


def _other_threads() -> list[threading.Thread]:
    """Non-daemon threads besides this one: the interpreter would wait for each at exit."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]


def _hard_left(run: _Run) -> float:
    deadlines = run.lifecycle.deadlines
    if deadlines is None:
        return _FINAL_RELEASE_SECONDS
    return max(0.0, deadlines.hard - time.monotonic())
