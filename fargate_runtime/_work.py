"""Which executor threads run which piece of work: cancelled work is not released while it runs.

Cancelling a task that awaits ``asyncio.to_thread`` (or ``loop.run_in_executor(None, ...)``)
ends the task at once, but not the thread: the effect can still happen after the message or
idempotency key was handed back, and another worker would run it a second time *at the same
time*. So the supervisor's loop runs with ``WorkExecutor`` as its default executor, and the
consumer (each handler) and the HTTP host (each request) run user code inside ``running(work)``:
a job submitted from there is recorded on that ``Work``. After a cancellation,
``work.threads_running`` tells "stopped" from "still running in a thread", and the runtime
keeps such work held until its thread ends or the process does.

Why our own code: the stdlib copies the caller's context into the thread but tells the caller
nothing about it; an executor subclass is the smallest place that sees both the submitting
context and the job. Threads users start themselves (``threading.Thread``) cannot be attributed;
the watchdog still ends the process at the hard deadline if they hold it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["EXECUTOR_THREAD_PREFIX", "Work", "WorkExecutor", "current_work", "running"]

EXECUTOR_THREAD_PREFIX = "fargate-runtime-executor"


class Work:
    """One unit of work (an SQS message, an HTTP request) and the executor jobs it started."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        self._jobs: set[concurrent.futures.Future[Any]] | None = None

    def _add(self, future: concurrent.futures.Future[Any]) -> None:
        jobs = self._jobs
        if jobs is None:
            jobs = self._jobs = set()
        jobs.add(future)
        future.add_done_callback(jobs.discard)

    @property
    def threads_running(self) -> bool:
        """True while a job this work submitted to the default executor is still running."""
        jobs = self._jobs
        return bool(jobs) and any(not job.done() for job in list(jobs or ()))


_current: contextvars.ContextVar[Work | None] = contextvars.ContextVar(
    "fargate_runtime_work", default=None
)


@contextlib.contextmanager
def running(work: Work) -> Iterator[Work]:
    """Attribute the executor jobs started inside the block (and its tasks) to ``work``."""
    token = _current.set(work)
    try:
        yield work
    finally:
        _current.reset(token)


def current_work() -> Work | None:
    """The work the current context runs for, if any."""
    return _current.get()


class WorkExecutor(concurrent.futures.ThreadPoolExecutor):
    """The default executor of the supervisor's loop: records each job on the current work."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=EXECUTOR_THREAD_PREFIX)
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._running_lock = threading.Lock()

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Submit ``fn`` and record the job on the current work (if any)."""
        future = super().submit(fn, *args, **kwargs)
        with self._running_lock:
            self._running.add(future)
        future.add_done_callback(self._done)
        work = _current.get()
        if work is not None:
            work._add(future)
        return future

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._running_lock:
            self._running.discard(future)

    def unfinished(self) -> list[concurrent.futures.Future[Any]]:
        """Jobs submitted and not finished (queued or running)."""
        with self._running_lock:
            return [job for job in self._running if not job.done()]
