"""A store belongs to the event loop that first used it; a call from any other loop fails at once.

redis-py's asyncio connections (and the in-memory store's one-step atomicity) belong to one
event loop. Used from a second loop, in another thread, a store failed intermittently with
"attached to a different loop" errors, sometimes after a claim had been written, so that key
stayed stranded for its lease. The check runs before anything is sent: nothing is written.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["LoopBinding"]


class LoopBinding:
    """Remembers the first running loop it sees; ``check()`` raises RuntimeError on another."""

    __slots__ = ("_loop", "_thread", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = ""

    def check(self) -> None:
        """Bind to the running loop on first use; refuse any other loop afterwards."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is None:
            self._loop, self._thread = loop, threading.current_thread().name
            return
        raise RuntimeError(
            f"this {self._what} is bound to the event loop it was first used on (thread "
            f"{self._thread!r}) and was called from another (thread "
            f"{threading.current_thread().name!r}): make one store per event loop"
        )
