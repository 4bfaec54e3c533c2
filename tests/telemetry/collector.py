"""OTLP/HTTP collectors on loopback: one that records, one that refuses, one that never answers.

The recording one decodes what the SDK's OTLP/HTTP exporters send (protobuf, as the ADOT
collector receives it) into plain spans and metric points a test can assert on. The other two
are the sidecar on a bad day: nothing listening on the port (connections refused), and a process
that accepts connections and never answers.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True, slots=True)
class CollectedSpan:
    """One exported span, as the collector received it."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    events: list[str]
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CollectedPoint:
    """One exported metric data point (sum, gauge or histogram)."""

    metric: str
    unit: str
    attributes: dict[str, Any]
    value: float | None = None  # sums and gauges
    count: int | None = None  # histograms
    bucket_counts: list[int] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)


class RecordingCollector:
    """Answers OTLP/HTTP exports with 200 and keeps what they carried (use as a context)."""

    def __init__(self) -> None:
        self.spans: list[CollectedSpan] = []
        self.exports: list[list[CollectedPoint]] = []  # one list per metrics export
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path == "/v1/traces":
                    collector._traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    collector._metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test's output is the worker's."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to give as ``FARGATE_RUNTIME_TELEMETRY_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans: list[CollectedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                spans.extend(
                    CollectedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        status_code=span.status.code,
                        attributes=_attributes(span.attributes),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        events=[event.name for event in span.events],
                        resource=resource,
                    )
                    for span in scope.spans
                )
        with self._lock:
            self.spans.extend(spans)

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        points: list[CollectedPoint] = []
        for resource_metrics in request.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    points.extend(_points(metric))
        with self._lock:
            self.exports.append(points)

    def last_points(self, metric: str) -> list[CollectedPoint]:
        """The metric's points in the last export that carried it (cumulative: final values)."""
        with self._lock:
            for export in reversed(self.exports):
                found = [point for point in export if point.metric == metric]
                if found:
                    return found
        return []

    def __enter__(self) -> RecordingCollector:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _points(metric: Any) -> list[CollectedPoint]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        return [
            CollectedPoint(
                metric=metric.name,
                unit=metric.unit,
                attributes=_attributes(point.attributes),
                value=point.as_int if point.WhichOneof("value") == "as_int" else point.as_double,
            )
            for point in getattr(metric, kind).data_points
        ]
    if kind == "histogram":
        return [
            CollectedPoint(
                metric=metric.name,
                unit=metric.unit,
                attributes=_attributes(point.attributes),
                count=point.count,
                bucket_counts=list(point.bucket_counts),
                bounds=list(point.explicit_bounds),
            )
            for point in metric.histogram.data_points
        ]
    return []


class RefusingCollector:
    """A port where nothing listens: every connection is refused (the sidecar is down).

    The port stays bound (never listening) for the block, so nothing else can take it.
    """

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))

    @property
    def endpoint(self) -> str:
        """The base URL to give as the OTLP endpoint."""
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> RefusingCollector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._socket.close()


class HangingCollector:
    """Accepts every connection, reads what comes, never answers (the sidecar is hung)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.accepted = threading.Event()  # set once an exporter has connected

    @property
    def endpoint(self) -> str:
        """The base URL to give as the OTLP endpoint."""
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            self._held.append(connection)  # kept open, never answered
            self.accepted.set()

    def __enter__(self) -> HangingCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        # shutdown() wakes the accept() blocked in the thread; close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        for connection in self._held:
            connection.close()
        self._thread.join(timeout=10)
