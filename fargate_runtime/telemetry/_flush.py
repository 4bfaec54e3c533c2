"""The final flush: the SDK's providers shut down off the event loop, bounded in time.

The SDK's ``shutdown()`` blocks: it exports what is buffered and waits for the exporter, which
waits for its own timeout and retries while a collector refuses connections or never answers
(measured before this module: 22 s and 30 s against a 10 s stop timeout, the loop blocked
throughout, then exit 0 and ECS's SIGKILL). Nothing in the SDK bounds that from outside, so::

    close starts ─▶ spans and metrics shut down side by side, each in a daemon thread
                    (the SDK's warnings meanwhile are held back, not printed: _sdk_logs.py)
    both done   ─▶ "telemetry flushed", or one warning naming the endpoint if exports failed
    `seconds` up ─▶ one warning naming the endpoint; the threads are abandoned: daemon threads
                    never hold the process at exit, and the providers have no atexit hook

The loop is free the whole time (the health endpoint still answers), and the caller's exit code
is not touched: telemetry is an aid to the work, never part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._sdk_logs import holding_sdk_lines

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["FlushReport", "shut_down"]


@dataclass(slots=True)
class FlushReport:
    """What the final flush did within its bound."""

    seconds: float
    abandoned: list[str] = field(default_factory=list)  # still running at the bound
    failed: dict[str, str] = field(default_factory=dict)  # raised: what they raised
    sdk_lines: int = 0  # the SDK's warnings and errors held back meanwhile
    last_sdk_line: str | None = None

    @property
    def clean(self) -> bool:
        """Everything shut down in time, and the SDK reported no failed export."""
        return not self.abandoned and not self.failed and self.sdk_lines == 0


def _in_daemon_thread(
    loop: asyncio.AbstractEventLoop, function: Callable[[], object], *, name: str
) -> asyncio.Future[BaseException | None]:
    """Run ``function`` in a daemon thread; the future gets what it raised (None: nothing)."""
    future: asyncio.Future[BaseException | None] = loop.create_future()

    def settle(outcome: BaseException | None) -> None:
        if not future.done():
            future.set_result(outcome)

    def run() -> None:
        outcome: BaseException | None = None
        try:
            function()
        except BaseException as exc:  # noqa: BLE001 - reported to the loop, never lost
            outcome = exc
        # The loop may be closed by now (the wait was abandoned): nobody is waiting then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def shut_down(steps: Mapping[str, Callable[[], object]], *, seconds: float) -> FlushReport:
    """Run each step (``"spans": provider.shutdown``) in its own thread; wait ``seconds`` at most.

    Returns once every step is done or the bound is reached, whichever comes first; a
    cancellation of the caller abandons the wait the same way.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with holding_sdk_lines() as held:
        futures = {
            name: _in_daemon_thread(loop, step, name=f"fargate-runtime-telemetry-{name}")
            for name, step in steps.items()
        }
        try:
            if futures:
                await asyncio.wait(futures.values(), timeout=max(0.0, seconds))
        finally:
            abandoned = [name for name, future in futures.items() if not future.done()]
            held.abandoned = bool(abandoned)
        failed = {
            name: repr(outcome)
            for name, future in futures.items()
            if future.done() and (outcome := future.result()) is not None
        }
    return FlushReport(
        seconds=time.monotonic() - started,
        abandoned=abandoned,
        failed=failed,
        sdk_lines=held.count,
        last_sdk_line=held.last,
    )
