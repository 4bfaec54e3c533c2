"""OpenTelemetry for the runtime: providers as a supervisor resource, SQS trace propagation.

Off by default, and then free: the OpenTelemetry API hands out no-op tracers and meters, and no
exporter module is imported. On, the providers are installed when the resource is entered and
flushed when it closes, bounded by what is left of the shutdown budget.

The OpenTelemetry SQS instrumentation wraps boto3, not aiobotocore, so propagation through
message attributes is done here: a W3C ``traceparent`` attribute (when the message has room under
SQS's limit of 10 attributes) or the ``AWSTraceHeader`` system attribute X-Ray sets.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .settings import ENV_PREFIX

if TYPE_CHECKING:
    from types import TracebackType

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from .lifecycle import Lifecycle

__all__ = [
    "IDEMPOTENCY_OUTCOME_ATTRIBUTE",
    "SQS_ATTRIBUTE_LIMIT",
    "ConsumerMetrics",
    "IdempotencyOutcome",
    "Telemetry",
    "TelemetrySettings",
    "drain_duration_histogram",
    "extract_sqs_context",
    "inject_sqs_attributes",
    "mark_idempotency_outcome",
    "metrics_enabled",
    "parse_aws_trace_header",
    "process_span",
    "tracing_enabled",
]

logger = logging.getLogger("fargate_runtime.telemetry")

INSTRUMENTATION_NAME = "fargate_runtime"
# SQS counts every message attribute against a limit of 10 (AWSTraceHeader, a system
# attribute, does not count).
SQS_ATTRIBUTE_LIMIT = 10
_TRACEPARENT = "traceparent"
# The span attribute carrying an idempotency claim's outcome, for SQS messages and HTTP requests.
IDEMPOTENCY_OUTCOME_ATTRIBUTE = "fargate_runtime.idempotency.outcome"


class IdempotencyOutcome(enum.Enum):
    """What the idempotency claim decided for one message or request (a span attribute)."""

    CLAIMED = "claimed"  # the key is ours: the work runs
    REPLAYED = "replayed"  # completed before: SQS deletes it unrun, HTTP replays the response
    IN_PROGRESS = "in_progress"  # another owner holds it: SQS backs off, HTTP answers 409
    MISMATCH = "mismatch"  # same key, other payload: SQS fails it, HTTP answers 422
    STORE_ERROR = "store_error"  # the store failed: not run (fail closed), or run unclaimed


def tracing_enabled() -> bool:
    """True when a recording tracer provider is installed (the SDK's, normally).

    The API's own providers hand out no-op spans; checking first skips the work of building
    one (context extraction, attributes, context managers), which is not free per message.
    """
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def metrics_enabled() -> bool:
    """True when a meter provider other than the API's proxy or no-op one is installed.

    Both of those live in ``opentelemetry.metrics`` (the proxy class is private), so the
    provider's module tells them from the SDK's or any other real implementation.
    """
    return not type(metrics.get_meter_provider()).__module__.startswith("opentelemetry.metrics")


def mark_idempotency_outcome(outcome: IdempotencyOutcome) -> None:
    """Set the outcome on the current span, if one is recording (a no-op without telemetry)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(IDEMPOTENCY_OUTCOME_ATTRIBUTE, outcome.value)


class TelemetrySettings(BaseSettings):
    """Telemetry settings (env prefix ``FARGATE_RUNTIME_TELEMETRY_``)."""

    model_config = SettingsConfigDict(
        env_prefix=f"{ENV_PREFIX}TELEMETRY_", extra="ignore", frozen=True
    )

    enabled: bool = False
    # OTLP over HTTP, e.g. the ADOT collector sidecar at http://127.0.0.1:4318. None: no export.
    otlp_endpoint: str | None = None
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    metric_export_interval_seconds: float = Field(default=60.0, gt=0.0)


@dataclass(slots=True)
class _Installed:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider


class Telemetry:
    """Installs tracer and meter providers on enter; flushes and shuts them down on exit.

    Enter it first among the resources (so it closes last and sees everything), with
    ``service_name`` and, in tests, an in-memory ``span_exporter`` and ``metric_reader``.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        service_name: str,
        lifecycle: Lifecycle | None = None,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        resource_attributes: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._service_name = service_name
        self._lifecycle = lifecycle
        self._span_exporter = span_exporter
        self._metric_reader = metric_reader
        self._resource_attributes = dict(resource_attributes or {})
        self._installed: _Installed | None = None

    @property
    def enabled(self) -> bool:
        """True when providers are installed (settings enabled, or exporters injected)."""
        return self._installed is not None

    async def __aenter__(self) -> Telemetry:
        wanted = self._settings.enabled or self._span_exporter or self._metric_reader
        if wanted:
            self._installed = self._install()
            logger.info(
                "telemetry on",
                extra={"otlp_endpoint": self._settings.otlp_endpoint or "none"},
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        installed, self._installed = self._installed, None
        if installed is None:
            return
        timeout_ms = self._flush_timeout_millis()
        # The SDK's flush is synchronous; it is bounded by timeout_ms and runs at shutdown only.
        installed.tracer_provider.force_flush(timeout_ms)
        installed.meter_provider.force_flush(timeout_ms)
        installed.tracer_provider.shutdown()
        installed.meter_provider.shutdown()

    def _flush_timeout_millis(self) -> int:
        """What is left of the close budget, so a flush never runs into SIGKILL."""
        if self._lifecycle is None or self._lifecycle.deadlines is None:
            return 5_000
        left = self._lifecycle.deadlines.close - self._lifecycle.now()
        return max(1, int(left * 1000))

    def _install(self) -> _Installed:
        # Imported only when telemetry is on: the SDK is not needed for no-op telemetry.
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create(
            {"service.name": self._service_name, **self._resource_attributes}
        )
        sampler = ParentBased(TraceIdRatioBased(self._settings.sample_ratio))
        tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        readers: list[MetricReader] = []
        if self._span_exporter is not None:
            tracer_provider.add_span_processor(SimpleSpanProcessor(self._span_exporter))
        if self._metric_reader is not None:
            readers.append(self._metric_reader)
        if self._settings.otlp_endpoint:
            span_exporter, metric_exporter = _otlp_exporters(self._settings.otlp_endpoint)
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            interval_ms = self._settings.metric_export_interval_seconds * 1000
            readers.append(
                PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval_ms)
            )
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        return _Installed(tracer_provider, meter_provider)


def _otlp_exporters(endpoint: str) -> tuple[Any, Any]:
    """The OTLP/HTTP exporters (extra ``fargate-runtime[otlp]``), imported only when used."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"{ENV_PREFIX}TELEMETRY_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'fargate-runtime[otlp]'"
        ) from exc
    base = endpoint.rstrip("/")
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces"),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
    )


def inject_sqs_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Add the current trace context as a ``traceparent`` string attribute, if there is room.

    Returns ``attributes`` (changed in place) in the shape ``SendMessage`` takes. A message that
    already has 10 attributes is left alone: SQS would refuse an eleventh.
    """
    if _TRACEPARENT in attributes or len(attributes) >= SQS_ATTRIBUTE_LIMIT:
        return attributes
    carrier: dict[str, str] = {}
    inject(carrier)
    value = carrier.get(_TRACEPARENT)
    if value:
        attributes[_TRACEPARENT] = {"DataType": "String", "StringValue": value}
    return attributes


def parse_aws_trace_header(header: str) -> SpanContext | None:
    """The span context in an X-Ray ``AWSTraceHeader`` (``Root=1-…;Parent=…;Sampled=1``)."""
    fields = dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    root, parent = fields.get("Root", ""), fields.get("Parent", "")
    pieces = root.split("-")
    if len(pieces) != 3 or pieces[0] != "1" or len(parent) != 16:
        return None
    try:
        trace_id = int(pieces[1] + pieces[2], 16)
        span_id = int(parent, 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if fields.get("Sampled") == "1" else 0)
    return SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=flags)


def extract_sqs_context(
    message_attributes: Mapping[str, Any], system_attributes: Mapping[str, str]
) -> otel_context.Context | None:
    """The producer's context from a ``traceparent`` attribute, else from ``AWSTraceHeader``."""
    traceparent = message_attributes.get(_TRACEPARENT)
    if isinstance(traceparent, Mapping):
        value = traceparent.get("StringValue")
        if isinstance(value, str):
            extracted = extract({_TRACEPARENT: value})
            if trace.get_current_span(extracted).get_span_context().is_valid:
                return extracted
    header = system_attributes.get("AWSTraceHeader")
    if header:
        span_context = parse_aws_trace_header(header)
        if span_context is not None:
            return trace.set_span_in_context(NonRecordingSpan(span_context))
    return None


# Got once: a new tracer per message costs a fifth of the span. Until a provider is installed
# this is the API's proxy, which picks the installed provider's tracer up on first use after.
_TRACER = trace.get_tracer(INSTRUMENTATION_NAME)


@contextlib.contextmanager
def process_span(
    *,
    queue_name: str,
    message_id: str,
    message_attributes: Mapping[str, Any],
    system_attributes: Mapping[str, str],
    attributes: Mapping[str, str] | None = None,
) -> Iterator[trace.Span]:
    """A CONSUMER span ``process <queue>`` for one message, child of the producer's context.

    Attributes follow the OpenTelemetry messaging conventions for SQS; ``attributes`` adds
    others (the idempotency outcome).
    """
    parent = extract_sqs_context(message_attributes, system_attributes)
    with _TRACER.start_as_current_span(
        f"process {queue_name}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "aws_sqs",
            "messaging.destination.name": queue_name,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": message_id,
            **(attributes or {}),
        },
    ) as span:
        yield span


class ConsumerMetrics:
    """The consumer's instruments, from the global meter (no-ops while telemetry is off)."""

    def __init__(self, *, queue_name: str) -> None:
        meter = metrics.get_meter(INSTRUMENTATION_NAME)
        self._attributes = {"messaging.destination.name": queue_name}
        self.received = meter.create_counter(
            "messaging.client.consumed.messages", unit="{message}", description="received"
        )
        self.succeeded = meter.create_counter(
            "fargate_runtime.sqs.succeeded", unit="{message}", description="handled and deleted"
        )
        self.failed = meter.create_counter(
            "fargate_runtime.sqs.failed", unit="{message}", description="handler failed"
        )
        self.duplicates = meter.create_counter(
            "fargate_runtime.sqs.duplicates_skipped",
            unit="{message}",
            description="completed or in progress elsewhere; not run",
        )
        self.released = meter.create_counter(
            "fargate_runtime.sqs.released_on_shutdown",
            unit="{message}",
            description="made visible again at shutdown",
        )
        self.in_flight = meter.create_up_down_counter(
            "fargate_runtime.sqs.in_flight", unit="{message}", description="handlers running"
        )
        self.handler_duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="handler duration"
        )
        self.store_latency = meter.create_histogram(
            "fargate_runtime.idempotency.store.duration",
            unit="s",
            description="idempotency store round trip",
        )
        self.backlog_per_task = meter.create_gauge(
            "fargate_runtime.sqs.backlog_per_task",
            unit="{message}",
            # One task cannot know how many others run (task metadata has no desired or
            # running count), so each reports the queue's visible backlog; the division by
            # running tasks happens where the series meet (see the SQS worker's README).
            description="approximate visible messages in the queue, as this task read them",
        )

    @property
    def attributes(self) -> Mapping[str, str]:
        """The attributes every data point of this consumer carries."""
        return self._attributes


def drain_duration_histogram() -> metrics.Histogram:
    """Seconds from the first signal to the end of the drain, recorded by the supervisor."""
    return metrics.get_meter(INSTRUMENTATION_NAME).create_histogram(
        "fargate_runtime.shutdown.drain.duration", unit="s", description="drain duration"
    )
