"""``Telemetry``: the SDK's tracer and meter providers as a supervisor resource.

Off by default, and then free: nothing from OpenTelemetry is imported, not even its API. On, the
providers are installed on enter and shut down on exit within what is left of the close share
(``_flush.py``). A process that already has providers (``opentelemetry-instrument``, an
embedding application) keeps them: the runtime's spans and metrics go there, with one line
saying so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..settings import ENV_PREFIX
from ._core import metrics_enabled, tracing_enabled
from ._flush import FlushReport, shut_down
from ._sdk_logs import RateLimitedLines
from ._settings import redacted_endpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from ..lifecycle import Lifecycle
    from ._settings import TelemetrySettings

__all__ = ["Telemetry"]

logger = logging.getLogger("fargate_runtime.telemetry")

# Without a lifecycle (a Telemetry used on its own) the flush gets this long.
_UNSUPERVISED_FLUSH_SECONDS: Final = 5.0
# Left of the close share for what closes after telemetry (the health endpoint) and the exit.
_RESERVE_SECONDS: Final = 0.5


@dataclass(slots=True)
class _Installed:
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None


class Telemetry:
    """Installs tracer and meter providers on enter; shuts them down, bounded, on exit.

    Enter it first among the resources (so it closes last and sees everything), with
    ``service_name``, the run's ``lifecycle`` (its close share bounds the flush) and, in tests,
    an in-memory ``span_exporter`` and ``metric_reader``.
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
        endpoint = settings.otlp_endpoint
        self._endpoint = redacted_endpoint(endpoint) if endpoint else None
        # What the last close did (None before one): for tests and embedders.
        self.last_flush: FlushReport | None = None
        self._sdk_lines = RateLimitedLines()

    @property
    def enabled(self) -> bool:
        """True while providers of ours are installed (settings enabled, or exporters injected)."""
        return self._installed is not None

    async def __aenter__(self) -> Telemetry:
        if not (self._settings.enabled or self._span_exporter or self._metric_reader):
            if self._settings.otlp_endpoint:
                logger.warning(
                    "%sTELEMETRY_OTLP_ENDPOINT is set but telemetry is off: nothing is "
                    "exported (set %sTELEMETRY_ENABLED=true)",
                    ENV_PREFIX,
                    ENV_PREFIX,
                    extra={"otlp_endpoint": self._endpoint},
                )
            return self
        self._installed = self._install()
        self._sdk_lines.install()
        logger.info(
            "telemetry on",
            extra={
                "otlp_endpoint": self._endpoint or "none",
                "sample_ratio": self._settings.sample_ratio,
            },
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
        seconds = self._flush_seconds()
        steps: dict[str, Callable[[], object]] = {}
        if installed.tracer_provider is not None:
            steps["spans"] = installed.tracer_provider.shutdown
        if installed.meter_provider is not None:
            meter_provider = installed.meter_provider
            steps["metrics"] = lambda: meter_provider.shutdown(timeout_millis=seconds * 1000)
        report = self.last_flush = await shut_down(steps, seconds=seconds)
        self._sdk_lines.uninstall()  # (an abandoned flush keeps holding them instead)
        self._log(report, bound_seconds=seconds)

    def _log(self, report: FlushReport, *, bound_seconds: float) -> None:
        destination = self._endpoint or "the configured exporters"
        extra: dict[str, Any] = {
            "otlp_endpoint": self._endpoint or "none",
            "flush_seconds": round(report.seconds, 3),
        }
        if report.clean:
            logger.info("telemetry flushed", extra=extra)
            return
        if report.abandoned:
            what = (
                f"no answer from {destination} within {bound_seconds:.1f} s "
                f"(what is left of the close share); {' and '.join(report.abandoned)} not flushed"
            )
        else:
            what = f"exports to {destination} failed"
        extra.update(
            {
                "abandoned": report.abandoned,
                "failed": report.failed,
                "sdk_lines_held": report.sdk_lines,
                "last_sdk_line": report.last_sdk_line,
            }
        )
        logger.warning("telemetry not delivered: %s", what, extra=extra)

    def _flush_seconds(self) -> float:
        """At most the close share, and never past the close deadline; less a reserve for what
        closes after telemetry (the health endpoint) and the exit itself."""
        lifecycle = self._lifecycle
        if lifecycle is None:
            return _UNSUPERVISED_FLUSH_SECONDS
        budget = lifecycle.budget
        reserve = min(_RESERVE_SECONDS, budget.close_seconds / 4)
        seconds = budget.close_seconds - reserve
        deadlines = lifecycle.deadlines
        if deadlines is not None:  # None: closing with no shutdown request (a job done)
            seconds = min(seconds, deadlines.close - lifecycle.now() - reserve)
        return max(0.0, seconds)

    def _export_timeout_seconds(self) -> float | None:
        """Each OTLP request (retries included) within the close share, so the last one fits."""
        if self._lifecycle is None:
            return None  # the SDK's default (10 s, or OTEL_EXPORTER_OTLP_TIMEOUT)
        return self._lifecycle.budget.close_seconds

    def _install(self) -> _Installed:
        # Imported only when telemetry is on: the SDK is not needed for no-op telemetry.
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        from ._sampling import RuntimeSampler

        resource = Resource.create(
            {"service.name": self._service_name, **self._resource_attributes}
        )
        # shutdown_on_exit=False: the SDK's atexit hook would run the same unbounded flush at
        # interpreter exit, after the supervisor's deadline.
        tracer_provider = TracerProvider(
            resource=resource,
            sampler=RuntimeSampler(self._settings.sample_ratio),
            shutdown_on_exit=False,
        )
        readers: list[MetricReader] = []
        if self._span_exporter is not None:
            tracer_provider.add_span_processor(SimpleSpanProcessor(self._span_exporter))
        if self._metric_reader is not None:
            readers.append(self._metric_reader)
        if self._settings.otlp_endpoint:
            timeout = self._export_timeout_seconds()
            span_exporter, metric_exporter = _otlp_exporters(
                self._settings.otlp_endpoint, timeout_seconds=timeout
            )
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            interval_ms = self._settings.metric_export_interval_seconds * 1000
            readers.append(
                PeriodicExportingMetricReader(
                    metric_exporter,
                    export_interval_millis=interval_ms,
                    export_timeout_millis=None if timeout is None else timeout * 1000,
                )
            )
        meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False
        )
        return _Installed(
            tracer_provider=_set_tracer_provider(tracer_provider),
            meter_provider=_set_meter_provider(meter_provider),
        )


def _set_tracer_provider(provider: TracerProvider) -> TracerProvider | None:
    """Install ``provider`` unless the process has one already (then None: theirs is used)."""
    from opentelemetry import trace

    if tracing_enabled():
        logger.warning(
            "a tracer provider is installed already (opentelemetry-instrument, or the "
            "application): the runtime's spans go there, its telemetry settings do not apply"
        )
        provider.shutdown()
        return None
    trace.set_tracer_provider(provider)
    return provider


def _set_meter_provider(provider: MeterProvider) -> MeterProvider | None:
    """Install ``provider`` unless the process has one already (then None: theirs is used)."""
    from opentelemetry import metrics

    if metrics_enabled():
        logger.warning(
            "a meter provider is installed already (opentelemetry-instrument, or the "
            "application): the runtime's metrics go there, its telemetry settings do not apply"
        )
        provider.shutdown(timeout_millis=0)
        return None
    metrics.set_meter_provider(provider)
    return provider


def _otlp_exporters(endpoint: str, *, timeout_seconds: float | None) -> tuple[Any, Any]:
    """The OTLP/HTTP exporters (extra ``fargate-runtime[otlp]``), imported only when used."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            f"{ENV_PREFIX}TELEMETRY_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'fargate-runtime[otlp]'"
        ) from exc
    base = endpoint.rstrip("/")
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout_seconds),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout_seconds),
    )
