"""Cleanup writes that must outlive a cancelled caller, kept referenced until they finish."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ["spawn"]

T = TypeVar("T")

# Cleanup writes that outlive a cancelled caller; referenced here until they finish.
_background: set[asyncio.Future[Any]] = set()


def _finished(task: asyncio.Future[Any]) -> None:
    _background.discard(task)
    if not task.cancelled():
        # Whoever awaited it has seen its error; a caller that was cancelled away has not,
        # and asyncio would otherwise log "exception never retrieved" at garbage collection.
        task.exception()


def spawn(coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coroutine`` as a task that finishes even if whoever awaits it is cancelled."""
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_finished)
    return task
