"""The OpenTelemetry SDK's own log lines: rate-limited while running, held back at shutdown.

The SDK logs per event, not per problem: with the collector hung, every span that finds the
export queue full logs "Queue full, dropping span" (hundreds of lines a second on a busy worker,
each a CloudWatch event), and every export retry logs a warning. While telemetry is installed,
each kind of line (logger and message template) is let through at most once a minute, with the
count of those held back since. During the final flush they are held back entirely and summed
up in one warning by the caller (``_flush.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["HeldLines", "RateLimitedLines", "holding_sdk_lines"]

# Every SDK and exporter logger lives under this name (opentelemetry.sdk.*, .exporter.*).
SDK_LOGGER: Final = "opentelemetry"
_WINDOW_SECONDS: Final = 60.0


class RateLimitedLines(logging.Handler):
    """Passes each kind of SDK line to the root logger at most once per window.

    A line let through after others of its kind were held back carries ``suppressed_lines``.
    """

    def __init__(
        self,
        *,
        window_seconds: float = _WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window = window_seconds
        self._clock = clock
        self._last: dict[tuple[str, object], float] = {}
        self._held: dict[tuple[str, object], int] = {}
        self._propagated = True

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock: the SDK logs from its own threads.
        key = (record.name, record.msg)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._window:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.suppressed_lines = held
        logging.getLogger().handle(record)

    def install(self) -> None:
        """Route the SDK's lines through this handler (instead of straight to the root)."""
        sdk = logging.getLogger(SDK_LOGGER)
        self._propagated = sdk.propagate
        sdk.addHandler(self)
        sdk.propagate = False

    def uninstall(self) -> None:
        """Let the SDK's lines go where they went before, unless a flush still holds them."""
        sdk = logging.getLogger(SDK_LOGGER)
        sdk.removeHandler(self)
        if not any(isinstance(handler, HeldLines) for handler in sdk.handlers):
            sdk.propagate = self._propagated


class HeldLines(logging.Handler):
    """Counts the SDK's warnings and errors and keeps the last one, instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.last: str | None = None
        # Set when work was abandoned: its late lines stay held for the rest of the process.
        self.abandoned = False

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        try:
            self.last = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed SDK record must not break the count
            self.last = str(record.msg)


@contextlib.contextmanager
def holding_sdk_lines() -> Iterator[HeldLines]:
    """Hold every SDK line back for the block; keep holding them if the flush had trouble.

    A thread abandoned at the flush's bound goes on retrying and logging until the process ends,
    and an exporter that failed finishes its retries after the flush returned ("Shutdown in
    progress, aborting retry"): those late lines are about an export already given up and
    reported, so they stay held.
    """
    sdk = logging.getLogger(SDK_LOGGER)
    held = HeldLines()
    saved = (list(sdk.handlers), sdk.propagate)
    sdk.handlers[:] = [held]
    sdk.propagate = False
    try:
        yield held
    finally:
        if not held.abandoned and not held.count:
            sdk.handlers[:] = saved[0]
            sdk.propagate = saved[1]
