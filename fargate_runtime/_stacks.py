"""Where code is stuck: thread stacks, task await chains, and the user's line among them.

Read from another thread (the watchdog) while the event loop may be blocked, so everything here
only reads frames and never awaits or takes the loop's locks.
"""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
import threading
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["StuckTask", "StuckThread", "await_chain", "culprit", "task_stacks", "thread_stacks"]


def _prefixes(*paths: str) -> tuple[str, ...]:
    return tuple({os.path.normcase(os.path.realpath(path)) + os.sep for path in paths})


_PATHS = sysconfig.get_paths()
_STDLIB_AND_RUNTIME = _prefixes(
    _PATHS["stdlib"], _PATHS["platstdlib"], os.path.dirname(os.path.abspath(__file__))
)
# Frames from here are never "the culprit": the stdlib, site-packages, and the runtime itself.
_NOT_USER = _STDLIB_AND_RUNTIME + _prefixes(_PATHS["purelib"], _PATHS["platlib"])


@dataclass(frozen=True, slots=True)
class StuckThread:
    """One thread's stack, innermost frame last, and the user's line in it."""

    name: str
    ident: int
    daemon: bool
    stack: str
    culprit: str | None


@dataclass(frozen=True, slots=True)
class StuckTask:
    """One unfinished task's await chain, outermost first, and the user's line in it."""

    name: str
    stack: str
    culprit: str | None


def _in(filename: str, prefixes: tuple[str, ...]) -> bool:
    return os.path.normcase(os.path.realpath(filename)).startswith(prefixes)


def _is_user(filename: str) -> bool:
    return not filename.startswith("<") and not _in(filename, _NOT_USER)


def _where(filename: str, lineno: int | None, name: str) -> str:
    return f"{filename}:{lineno} in {name}"


def culprit(frames: list[tuple[str, int | None, str]]) -> str | None:
    """The innermost frame in user code: not the stdlib, site-packages or the runtime.

    An application installed into site-packages has no such frame: then the innermost frame
    outside the stdlib and the runtime (a third-party library it called).
    """
    for filename, lineno, name in reversed(frames):
        if _is_user(filename):
            return _where(filename, lineno, name)
    for filename, lineno, name in reversed(frames):
        if not filename.startswith("<") and not _in(filename, _STDLIB_AND_RUNTIME):
            return _where(filename, lineno, name)
    return None


def thread_stacks(*, skip: set[int] | None = None) -> list[StuckThread]:
    """Every thread's stack (except the ``skip`` idents), main thread first."""
    frames = sys._current_frames()
    threads = {thread.ident: thread for thread in threading.enumerate()}
    main = threading.main_thread().ident
    out: list[StuckThread] = []
    for ident in sorted(frames, key=lambda i: (i != main, i)):
        if skip and ident in skip:
            continue
        thread = threads.get(ident)
        summary = traceback.extract_stack(frames[ident])
        out.append(
            StuckThread(
                name=thread.name if thread is not None else f"thread-{ident}",
                ident=ident,
                daemon=bool(thread and thread.daemon),
                stack="".join(summary.format()),
                culprit=culprit([(entry.filename, entry.lineno, entry.name) for entry in summary]),
            )
        )
    return out


def await_chain(task: asyncio.Task[Any]) -> list[tuple[str, int | None, str]]:
    """Where a task is suspended, outermost first, following the chain of awaits.

    ``Task.get_stack()`` shows one frame for a suspended coroutine; the await chain reaches the
    line in user code that refuses to finish.
    """
    chain: list[tuple[str, int | None, str]] = []
    awaitable: Any = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            chain.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return chain


def format_chain(chain: list[tuple[str, int | None, str]]) -> str:
    """An await chain as traceback-style lines."""
    return "\n".join(f'  File "{f}", line {n}, in {name}' for f, n, name in chain)


def task_stacks(loop: asyncio.AbstractEventLoop) -> list[StuckTask]:
    """The await chains of ``loop``'s unfinished tasks (safe to call from another thread)."""
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:  # the set changed under us too often: a busy loop, not a stuck one
        return []
    out = []
    for task in tasks:
        if task.done():
            continue
        chain = await_chain(task)
        stack = format_chain(chain)
        out.append(StuckTask(name=task.get_name(), stack=stack, culprit=culprit(chain)))
    return out
