"""The final flush: bounded by its share, off the event loop, whatever the collector does.

The providers here are the SDK's, with its real OTLP/HTTP exporters talking to collectors on
loopback, but not installed globally: each test builds and shuts down its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision

from fargate_runtime import ConfigurationError, Lifecycle, RuntimeSettings, load_settings
from fargate_runtime.telemetry import SHUTDOWN_REASON_ATTRIBUTE, Telemetry, TelemetrySettings
from fargate_runtime.telemetry._flush import shut_down
from fargate_runtime.telemetry._sampling import RuntimeSampler
from fargate_runtime.telemetry._sdk_logs import RateLimitedLines
from fargate_runtime.telemetry._settings import redacted_endpoint
from tests.telemetry.collector import HangingCollector, RecordingCollector, RefusingCollector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

# The flush's bound in these tests; the exporters' own timeout is longer where the bound must
# be what ends the wait.
BOUND_SECONDS = 1.0


@pytest.fixture
def sdk_logger() -> Iterator[logging.Logger]:
    """The SDK's logger, restored after the test (an abandoned flush keeps its lines held).

    Restored once the flush threads the test abandoned have ended (the exporters' timeouts end
    them), so their late lines do not land in another test's logs.
    """
    sdk = logging.getLogger("opentelemetry")
    saved = (list(sdk.handlers), sdk.propagate)
    yield sdk
    for thread in threading.enumerate():
        if thread.name.startswith("fargate-runtime-telemetry-"):
            thread.join(timeout=10)
    sdk.handlers[:] = saved[0]
    sdk.propagate = saved[1]


def exporting_to(endpoint: str, *, timeout_seconds: float) -> dict[str, Callable[[], object]]:
    """Providers exporting to ``endpoint`` with something to export; their shutdown steps."""
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=timeout_seconds)
        )
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=timeout_seconds),
        export_interval_millis=3_600_000,
    )
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    tracer_provider.get_tracer("tests").start_span("work").end()
    meter_provider.get_meter("tests").create_counter("work.done").add(1)
    return {
        "spans": tracer_provider.shutdown,
        "metrics": lambda: meter_provider.shutdown(timeout_millis=60_000),
    }


async def test_a_hung_collector_costs_the_bound_and_never_blocks_the_loop(
    sdk_logger: logging.Logger,
) -> None:
    """A collector that accepts and never answers: the flush gives up at its bound, loop free."""
    with HangingCollector() as collector:
        steps = exporting_to(collector.endpoint, timeout_seconds=BOUND_SECONDS * 1.5)
        started = time.monotonic()
        flush = asyncio.create_task(shut_down(steps, seconds=BOUND_SECONDS))
        # Awaited from this task while the SDK waits for the collector: the loop turns.
        assert await asyncio.to_thread(collector.accepted.wait, 10)
        assert not flush.done()
        report = await flush
        elapsed = time.monotonic() - started
    assert sorted(report.abandoned) == ["metrics", "spans"]
    assert not report.clean
    assert BOUND_SECONDS <= elapsed < BOUND_SECONDS + 0.5
    # The SDK's own complaints were held back, and stay held while its threads linger.
    assert [type(handler).__name__ for handler in sdk_logger.handlers] == ["HeldLines"]
    assert sdk_logger.propagate is False


async def test_a_refusing_collector_costs_the_bound_at_most(sdk_logger: logging.Logger) -> None:
    """Nothing listening: the SDK retries until its timeout; the flush gives up at its bound."""
    with RefusingCollector() as collector:
        steps = exporting_to(collector.endpoint, timeout_seconds=BOUND_SECONDS * 1.5)
        started = time.monotonic()
        report = await shut_down(steps, seconds=BOUND_SECONDS)
        elapsed = time.monotonic() - started
    assert not report.clean
    assert report.last_sdk_line is not None
    assert elapsed < BOUND_SECONDS + 0.5


async def test_failed_exports_inside_the_bound_are_reported_not_printed(
    sdk_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Exports that fail fast end the flush early; the SDK's lines become one report, and its
    late lines (an exporter finishing its retries after the flush) stay held."""
    with RefusingCollector() as collector, caplog.at_level(logging.WARNING):
        steps = exporting_to(collector.endpoint, timeout_seconds=0.2)
        report = await shut_down(steps, seconds=5.0)
        logging.getLogger("opentelemetry.exporter.otlp").warning("aborting retry")
    assert report.abandoned == []
    assert report.sdk_lines >= 1
    assert report.last_sdk_line is not None
    assert "export" in report.last_sdk_line.lower()
    assert not report.clean
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []


async def test_a_working_collector_gets_everything(sdk_logger: logging.Logger) -> None:
    """With a collector that answers, the flush delivers spans and metrics and reports clean."""
    with RecordingCollector() as collector:
        report = await shut_down(exporting_to(collector.endpoint, timeout_seconds=5), seconds=10)
        assert report.clean
        assert [span.name for span in collector.spans] == ["work"]
        assert collector.last_points("work.done")[0].value == 1


def test_flush_gets_the_close_share_at_most_and_never_passes_the_close_deadline() -> None:
    """The bound is what is left of the close share, less a reserve, never below zero."""
    now = [100.0]
    settings = RuntimeSettings(stop_timeout_seconds=10, close_seconds=3, release_seconds=2)
    lifecycle = Lifecycle(settings.budget(), clock=lambda: now[0])
    telemetry = Telemetry(TelemetrySettings(), service_name="t", lifecycle=lifecycle)
    assert telemetry._flush_seconds() == pytest.approx(2.5)  # no shutdown yet: the share
    lifecycle.request_shutdown("SIGTERM")  # drain 3 s, release 2 s, close 3 s: closes by +8
    assert telemetry._flush_seconds() == pytest.approx(2.5)  # an idle drain: still the share
    now[0] += 7.0
    assert telemetry._flush_seconds() == pytest.approx(0.5)  # a late drain: what is left
    now[0] += 5.0
    assert telemetry._flush_seconds() == 0.0


def test_the_shutdown_span_is_sampled_whatever_the_ratio() -> None:
    """Ratio 0 drops new traces, but never the span that carries a shutdown reason."""
    sampler = RuntimeSampler(0.0)
    kept = sampler.should_sample(None, 1 << 64, "shutdown", None, {SHUTDOWN_REASON_ATTRIBUTE: "x"})
    dropped = sampler.should_sample(None, 1 << 64, "process orders", None, {"a": "b"})
    assert kept.decision is Decision.RECORD_AND_SAMPLE
    assert dropped.decision is Decision.DROP


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "ftp://collector:21", "http://"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad OTLP endpoint is a configuration error naming the variable (exit 78)."""
    monkeypatch.setenv("FARGATE_RUNTIME_TELEMETRY_OTLP_ENDPOINT", endpoint)
    with pytest.raises(ConfigurationError, match="FARGATE_RUNTIME_TELEMETRY_OTLP_ENDPOINT"):
        load_settings(TelemetrySettings)


def test_endpoints_are_logged_without_credentials() -> None:
    """User, password and query never reach a log line."""
    assert (
        redacted_endpoint("https://user:secret@collector.example:4318/otlp?token=x")
        == "https://collector.example:4318/otlp"
    )


async def test_an_endpoint_with_telemetry_off_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An endpoint set while telemetry is off installs nothing and says why, once."""
    settings = TelemetrySettings(otlp_endpoint="http://127.0.0.1:4318")
    with caplog.at_level(logging.INFO, logger="fargate_runtime.telemetry"):
        async with Telemetry(settings, service_name="t") as telemetry:
            assert not telemetry.enabled
    (record,) = [r for r in caplog.records if r.name == "fargate_runtime.telemetry"]
    assert record.levelno == logging.WARNING
    assert "FARGATE_RUNTIME_TELEMETRY_ENABLED=true" in record.getMessage()


def test_the_sdks_lines_are_let_through_once_a_minute_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of one SDK line becomes one line a minute, counting those held back."""
    now = [0.0]
    lines = RateLimitedLines(window_seconds=60, clock=lambda: now[0])
    sdk = logging.getLogger("opentelemetry.sdk._shared_internal")

    def emit(message: str) -> None:
        lines.handle(
            sdk.makeRecord(sdk.name, logging.WARNING, __file__, 1, message, ("span",), None)
        )

    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            emit("Queue full, dropping %s.")
        emit("Exception while exporting %s.")  # another kind: let through
        now[0] += 61
        emit("Queue full, dropping %s.")
    passed = [(r.getMessage(), getattr(r, "suppressed_lines", 0)) for r in caplog.records]
    assert passed == [
        ("Queue full, dropping span.", 0),
        ("Exception while exporting span.", 0),
        ("Queue full, dropping span.", 499),
    ]
