"""One in-memory telemetry installation per test session (OpenTelemetry's globals are set once)."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fargate_runtime.idempotency import Idempotency, RedisStore
from fargate_runtime.telemetry import Telemetry, TelemetrySettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import redis.asyncio
    from types_aiobotocore_sqs import SQSClient

# The attribute every data point of a consumer carries: with a queue per test, it tells this
# test's points from the earlier tests' (the reader's sums are cumulative over the session).
DESTINATION = "messaging.destination.name"


class Recorded:
    """What the session's telemetry exported."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()

    def _points(self, name: str, queue_name: str) -> list[NumberDataPoint | HistogramDataPoint]:
        return [
            point
            for point in self.points(name)
            if (point.attributes or {}).get(DESTINATION) == queue_name
        ]

    def points(self, name: str) -> list[NumberDataPoint | HistogramDataPoint]:
        """Every data point of a metric, whatever its attributes."""
        data = self.metrics.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource_metrics in data.resource_metrics
            for scope in resource_metrics.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
            if isinstance(point, NumberDataPoint | HistogramDataPoint)
        ]

    def total(self, name: str, queue_name: str) -> float:
        """The sum of a counter (or the last value of a gauge) for one queue; 0 when absent."""
        return sum(
            p.value for p in self._points(name, queue_name) if isinstance(p, NumberDataPoint)
        )

    def observations(self, name: str, queue_name: str) -> int:
        """How many values a histogram recorded for one queue."""
        return sum(
            p.count for p in self._points(name, queue_name) if isinstance(p, HistogramDataPoint)
        )

    def histograms(self, name: str, queue_name: str) -> list[HistogramDataPoint]:
        """A histogram's data points for one queue (one per attribute set)."""
        return [p for p in self._points(name, queue_name) if isinstance(p, HistogramDataPoint)]

    def attribute_sets(self, name: str, queue_name: str) -> list[dict[str, object]]:
        """The attributes of each data point an instrument has for one queue."""
        return [dict(p.attributes or {}) for p in self._points(name, queue_name)]

    def has(self, name: str, queue_name: str) -> bool:
        """True when the instrument has a data point for the queue."""
        return bool(self._points(name, queue_name))


@pytest.fixture(scope="session")
def _installed() -> Iterator[Recorded]:
    recorded = Recorded()
    telemetry = Telemetry(
        TelemetrySettings(enabled=True),
        service_name="tests",
        span_exporter=recorded.spans,
        metric_reader=recorded.metrics,
    )
    asyncio.run(telemetry.__aenter__())
    yield recorded
    asyncio.run(telemetry.__aexit__(None, None, None))


@pytest.fixture
def recorded(_installed: Recorded) -> Recorded:
    """The session's exporters, emptied of earlier tests' spans."""
    _installed.spans.clear()
    return _installed


@pytest.fixture
async def queue(sqs: SQSClient) -> AsyncIterator[str]:
    """A fresh queue (its name also tells this test's metric points apart), deleted after."""
    url = (await sqs.create_queue(QueueName=f"otel{uuid.uuid4().hex[:16]}"))["QueueUrl"]
    yield url
    await sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def idempotency(redis_client: redis.asyncio.Redis, redis_prefix: str) -> Idempotency:
    """Idempotency on the real Redis, under this test's key prefix."""
    return Idempotency(RedisStore(redis_client), prefix=redis_prefix)
