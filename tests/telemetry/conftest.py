"""One in-memory telemetry installation per test session (OpenTelemetry's globals are set once)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fargate_runtime.telemetry import Telemetry, TelemetrySettings

if TYPE_CHECKING:
    from collections.abc import Iterator


class Recorded:
    """What the session's telemetry exported."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()


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
