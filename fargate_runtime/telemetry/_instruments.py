"""The runtime's metrics: names, units, attributes and bucket boundaries, in one place.

Every duration is a histogram in seconds with explicit boundaries (an advisory the SDK applies
unless a View says otherwise): the SDK's default boundaries are sized for milliseconds
(``0, 5, 10, 25, ...``), where every handler and every Redis round trip would land in one bucket.

The consumer's counters are asynchronous instruments that read its own counts when metrics are
collected (once per export interval), so counting costs nothing per message and their values are
the consumer's figures exactly. One set of them serves every consumer of the process: an
instrument name is registered once per meter, and a second registration's callbacks would be
dropped by the SDK.

Instruments are made the first time metrics are on (normally at once: telemetry is installed
before the consumers), so a worker without telemetry never loads the metrics API.
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from ._core import ERROR_TYPE_ATTRIBUTE, INSTRUMENTATION_NAME, metrics_enabled

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation

__all__ = [
    "CONVENTION_BUCKETS_SECONDS",
    "HANDLER_BUCKETS_SECONDS",
    "LOOP_LAG_BUCKETS_SECONDS",
    "SHUTDOWN_BUCKETS_SECONDS",
    "STORE_BUCKETS_SECONDS",
    "ConsumerCounts",
    "ConsumerMetrics",
    "CountsSource",
    "http_server_duration",
    "record_event_loop_lag",
    "seconds_histogram",
]

# The messaging and HTTP conventions' advisory boundaries for operation durations.
CONVENTION_BUCKETS_SECONDS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# Handlers call providers and databases for minutes at times (the heartbeat keeps a message for
# up to 12 h): past the conventions' 10 s, up to an hour.
HANDLER_BUCKETS_SECONDS: Final = (
    *CONVENTION_BUCKETS_SECONDS, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
# A Redis round trip in one AZ is a fraction of a millisecond; a slow one, or a failover, seconds.
STORE_BUCKETS_SECONDS: Final = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip
# A drain fits in stopTimeout, at most 120 s on Fargate.
SHUTDOWN_BUCKETS_SECONDS: Final = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip
# How late the event loop runs: a millisecond is normal, a second is a blocked loop.
LOOP_LAG_BUCKETS_SECONDS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

_SYSTEM: Final = {"messaging.system": "aws_sqs"}


@dataclass(frozen=True, slots=True)
class ConsumerCounts:
    """A consumer's cumulative counts, as its asynchronous instruments report them."""

    received: int
    succeeded: int
    failed: int
    duplicates: int  # completed, or in progress elsewhere: not run
    released_on_shutdown: int
    in_flight: int  # handlers running now


class CountsSource(Protocol):
    """What a consumer gives its metrics to read (called from the metric reader's thread)."""

    def counts(self) -> ConsumerCounts:
        """The counts now; plain integer reads only (another thread calls this)."""
        ...


class _Observed(NamedTuple):
    """One asynchronous instrument: its name, the ConsumerCounts field it reports, and more."""

    name: str
    field: str
    monotonic: bool  # a counter; else an up-down counter
    description: str
    extra: Mapping[str, str]


_OBSERVED: Final = (
    _Observed("messaging.client.consumed.messages", "received", True, "received",
              {"messaging.operation.name": "receive"}),
    _Observed("fargate_runtime.sqs.succeeded", "succeeded", True, "handled and deleted", {}),
    _Observed("fargate_runtime.sqs.failed", "failed", True,
              "handler failed, malformed, or payload mismatch", {}),
    _Observed("fargate_runtime.sqs.duplicates_skipped", "duplicates", True,
              "completed or in progress elsewhere; not run", {}),
    _Observed("fargate_runtime.sqs.released_on_shutdown", "released_on_shutdown", True,
              "made visible again at shutdown", {}),
    _Observed("fargate_runtime.sqs.in_flight", "in_flight", False, "handlers running", {}),
)  # fmt: skip


class _ObservedConsumers:
    """The process's asynchronous consumer instruments and the consumers they read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Weak: a consumer that is gone stops being reported instead of being kept alive.
        self._sources: list[tuple[weakref.ref[CountsSource], dict[str, Mapping[str, str]]]] = []
        self._created = False

    def add(self, source: CountsSource, attributes: Mapping[str, str]) -> None:
        by_field: dict[str, Mapping[str, str]] = {
            spec.field: {**attributes, **spec.extra} for spec in _OBSERVED
        }
        with self._lock:
            alive = [entry for entry in self._sources if entry[0]() is not None]
            self._sources = [*alive, (weakref.ref(source), by_field)]
            if not self._created:
                self._created = True
                self._create()

    def _create(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(INSTRUMENTATION_NAME)
        for spec in _OBSERVED:
            create = (
                meter.create_observable_counter
                if spec.monotonic
                else meter.create_observable_up_down_counter
            )
            create(
                spec.name,
                callbacks=[functools.partial(self._observe, spec.field)],
                unit="{message}",
                description=spec.description,
            )

    def _observe(self, field: str, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        with self._lock:
            sources = list(self._sources)
        observations = []
        for reference, by_field in sources:
            source = reference()
            if source is not None:
                value = getattr(source.counts(), field)
                observations.append(Observation(value, by_field[field]))
        return observations


_observed = _ObservedConsumers()


class _ConsumerInstruments:
    """The synchronous instruments of one consumer, made once metrics are on."""

    def __init__(self) -> None:
        from opentelemetry import metrics

        self.handler_duration = seconds_histogram(
            "messaging.process.duration", "handler duration", HANDLER_BUCKETS_SECONDS
        )
        self.store_duration = seconds_histogram(
            "fargate_runtime.idempotency.store.duration",
            "idempotency store round trip (a batch claim)",
            STORE_BUCKETS_SECONDS,
        )
        self.drain_duration = seconds_histogram(
            "fargate_runtime.sqs.drain.duration",
            "from the shutdown request until this consumer's handlers were done",
            SHUTDOWN_BUCKETS_SECONDS,
        )
        self.backlog = metrics.get_meter(INSTRUMENTATION_NAME).create_gauge(
            "fargate_runtime.sqs.backlog_per_task",
            unit="{message}",
            # One task cannot know how many others run (task metadata has no desired or
            # running count), so each reports the queue's visible backlog; the division by
            # running tasks happens where the series meet (see the SQS worker's README).
            description="approximate visible messages in the queue, as this task read them",
        )


class ConsumerMetrics:
    """One consumer's instruments (nothing while metrics are off).

    Counters read ``counts`` (when given) at collection time; durations are recorded as they
    happen. Every data point carries ``messaging.system`` and ``messaging.destination.name``.
    """

    def __init__(self, *, queue_name: str, counts: CountsSource | None = None) -> None:
        self._attributes = {**_SYSTEM, "messaging.destination.name": queue_name}
        self._process = {**self._attributes, "messaging.operation.name": "process"}
        self._process_failed: dict[str, Mapping[str, str]] = {}
        self._counts = counts
        self._on: _ConsumerInstruments | None = None
        self._instruments()

    def _instruments(self) -> _ConsumerInstruments | None:
        """The instruments, made the first time metrics are on; None while they are off."""
        if self._on is None and metrics_enabled():
            self._on = _ConsumerInstruments()
            if self._counts is not None:
                _observed.add(self._counts, self._attributes)
        return self._on

    @property
    def attributes(self) -> Mapping[str, str]:
        """The attributes every data point of this consumer carries."""
        return self._attributes

    def record_handler(self, seconds: float, *, error_type: str | None = None) -> None:
        """One handler call's duration; ``error_type`` when it failed (the conventions ask)."""
        on = self._on or self._instruments()
        if on is None:
            return
        if error_type is None:
            on.handler_duration.record(seconds, self._process)
            return
        attributes = self._process_failed.get(error_type)
        if attributes is None:
            attributes = {**self._process, ERROR_TYPE_ATTRIBUTE: error_type}
            self._process_failed[error_type] = attributes
        on.handler_duration.record(seconds, attributes)

    def record_store(self, seconds: float) -> None:
        """One claim round trip to the idempotency store."""
        on = self._on or self._instruments()
        if on is not None:
            on.store_duration.record(seconds, self._attributes)

    def record_drain(self, seconds: float, *, error_type: str | None = None) -> None:
        """This consumer's drain; ``error_type`` when it was cut (``drain_deadline``)."""
        on = self._on or self._instruments()
        if on is None:
            return
        attributes = self._attributes
        if error_type is not None:
            attributes = {**attributes, ERROR_TYPE_ATTRIBUTE: error_type}
        on.drain_duration.record(seconds, attributes)

    def record_backlog(self, visible: int) -> None:
        """The queue's visible messages, as this task read them."""
        on = self._on or self._instruments()
        if on is not None:
            on.backlog.set(visible, self._attributes)


def seconds_histogram(
    name: str, description: str, boundaries: Sequence[float]
) -> metrics.Histogram:
    """A duration histogram in seconds with explicit bucket ``boundaries``, from our meter."""
    from opentelemetry import metrics

    return metrics.get_meter(INSTRUMENTATION_NAME).create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=boundaries
    )


@functools.cache
def _loop_lag() -> metrics.Histogram:
    return seconds_histogram(
        "fargate_runtime.event_loop.lag",
        "how late the event loop ran a callback scheduled to run at once",
        LOOP_LAG_BUCKETS_SECONDS,
    )


def record_event_loop_lag(seconds: float) -> None:
    """Record one event-loop lag sample, in seconds (safe from any thread; a no-op when off)."""
    if metrics_enabled():
        _loop_lag().record(seconds)


@functools.cache
def http_server_duration() -> metrics.Histogram:
    """``http.server.request.duration``, the HTTP conventions' request histogram."""
    return seconds_histogram(
        "http.server.request.duration",
        "duration of HTTP server requests",
        CONVENTION_BUCKETS_SECONDS,
    )
