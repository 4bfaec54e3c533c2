"""The ``shutdown`` span and the drain duration: what the supervisor records of each drain.

The span is exported whatever the head sampler decides (the runtime's sampler samples every span
that carries a shutdown reason): a sample ratio of 0.01 must not hide the one trace that says why
a task stopped and how long its drain took. With telemetry off neither is made, and the API is
not loaded for them.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Final

from ._core import ERROR_TYPE_ATTRIBUTE, ErrorType, metrics_enabled, tracer, tracing_enabled
from ._instruments import SHUTDOWN_BUCKETS_SECONDS, seconds_histogram

if TYPE_CHECKING:
    from opentelemetry import metrics, trace

__all__ = ["SHUTDOWN_REASON_ATTRIBUTE", "ShutdownTrace"]

# The runtime's sampler keeps every span carrying this attribute (see _sampling.py).
SHUTDOWN_REASON_ATTRIBUTE: Final = "fargate_runtime.shutdown.reason"


@functools.cache
def _drain_duration() -> metrics.Histogram:
    return seconds_histogram(
        "fargate_runtime.shutdown.drain.duration",
        "from the first signal to the end of the drain",
        SHUTDOWN_BUCKETS_SECONDS,
    )


class ShutdownTrace:
    """One drain, traced: start it at the first signal, end it when the drain ends.

    ``reason`` is what started the shutdown (``SIGTERM``, ``service X crashed``). The span is a
    root span (a new trace), whatever context the caller is in.
    """

    def __init__(self, reason: str) -> None:
        self._span: trace.Span | None = None
        if tracing_enabled():
            from opentelemetry.context import Context

            self._span = tracer().start_span(
                "shutdown", context=Context(), attributes={SHUTDOWN_REASON_ATTRIBUTE: reason}
            )
        self._started = time.monotonic()
        self._cut = False

    def deadline_hit(self, *, services: int) -> None:
        """The drain deadline passed with ``services`` still running: they are cancelled."""
        self._cut = True
        if self._span is not None:
            self._span.add_event("drain deadline hit", {"services": services})

    def end(self, *, next_phase: str, drain_seconds: float | None = None) -> None:
        """The drain is over; ``next_phase`` is the phase entered now (``closing``)."""
        seconds = time.monotonic() - self._started if drain_seconds is None else drain_seconds
        attributes = {ERROR_TYPE_ATTRIBUTE: ErrorType.DRAIN_DEADLINE.value} if self._cut else None
        if metrics_enabled():
            _drain_duration().record(seconds, attributes)
        if self._span is not None:
            self._span.add_event(f"phase {next_phase}", {"drain_seconds": seconds})
            self._span.end()
