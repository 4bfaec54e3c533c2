"""Trace propagation through SQS attributes, consumer spans, log correlation, no-op when off."""

from __future__ import annotations

import bisect
import io
import json
import logging
import subprocess
import sys
import threading
import uuid
from typing import TYPE_CHECKING

import aioboto3
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import HistogramDataPoint

from fargate_runtime.logging import bind_log_context, configure_logging, log_context_of
from fargate_runtime.telemetry import (
    LOOP_LAG_BUCKETS_SECONDS,
    SQS_ATTRIBUTE_LIMIT,
    extract_sqs_context,
    inject_sqs_attributes,
    parse_aws_trace_header,
    process_span,
    record_event_loop_lag,
)

if TYPE_CHECKING:
    from tests.telemetry.conftest import Recorded

TRACER = trace.get_tracer("tests")


def test_aws_trace_header_parses_to_a_remote_span_context() -> None:
    """An X-Ray header gives its trace id, parent span id and sampled flag."""
    context = parse_aws_trace_header(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    assert context is not None
    assert f"{context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"
    assert f"{context.span_id:016x}" == "53995c3f42cd8ad8"
    assert context.trace_flags.sampled
    assert context.is_remote


def test_malformed_aws_trace_headers_are_ignored() -> None:
    """Headers that are not X-Ray's shape give no context rather than an exception."""
    for header in ["", "Root=abc", "Root=1-xyz-123;Parent=53995c3f42cd8ad8", "Parent=1"]:
        assert parse_aws_trace_header(header) is None


def test_inject_respects_the_ten_attribute_limit(recorded: Recorded) -> None:
    """A message already carrying 10 attributes gets no traceparent (SQS would refuse it)."""
    full = {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(10)}
    with TRACER.start_as_current_span("send"):
        assert len(inject_sqs_attributes(dict(full))) == SQS_ATTRIBUTE_LIMIT
        room = inject_sqs_attributes({})
    assert room["traceparent"]["DataType"] == "String"


async def test_message_sent_with_context_is_processed_in_a_child_span(
    recorded: Recorded, sqs_endpoint: str
) -> None:
    """Through a real SQS endpoint, the consumer span is a child of the producer's span."""
    session = aioboto3.Session()
    async with session.client("sqs", endpoint_url=sqs_endpoint) as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"otel-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        try:
            with TRACER.start_as_current_span("publish") as producer:
                attributes = inject_sqs_attributes({})
                await sqs.send_message(
                    QueueUrl=queue_url, MessageBody="{}", MessageAttributes=attributes
                )
            received = await sqs.receive_message(
                QueueUrl=queue_url,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                WaitTimeSeconds=5,
            )
        finally:
            await sqs.delete_queue(QueueUrl=queue_url)
    (message,) = received["Messages"]
    with process_span(
        queue_name="orders",
        message_id=message["MessageId"],
        message_attributes=message.get("MessageAttributes", {}),
        system_attributes={str(k): v for k, v in message.get("Attributes", {}).items()},
    ):
        pass
    spans = {span.name: span for span in recorded.spans.get_finished_spans()}
    consumer = spans["process orders"]
    assert consumer.kind == trace.SpanKind.CONSUMER
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id
    assert consumer.context.trace_id == producer.get_span_context().trace_id
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.system"] == "aws_sqs"
    assert consumer.attributes["messaging.destination.name"] == "orders"
    assert consumer.attributes["messaging.message.id"] == message["MessageId"]
    assert consumer.attributes["messaging.operation.type"] == "process"


def test_aws_trace_header_is_the_fallback_parent(recorded: Recorded) -> None:
    """Without a traceparent attribute the X-Ray system attribute gives the parent."""
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert extract_sqs_context({}, {"AWSTraceHeader": header}) is not None
    with process_span(
        queue_name="q",
        message_id="m",
        message_attributes={},
        system_attributes={"AWSTraceHeader": header},
    ):
        pass
    (span,) = recorded.spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"


def test_log_lines_inside_a_span_carry_its_ids(recorded: Recorded) -> None:
    """Every JSON line written inside a span has trace_id and span_id."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(stream=buffer)
    try:
        with TRACER.start_as_current_span("work") as span:
            logging.getLogger("w").info("inside")
        logging.getLogger("w").info("outside")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    inside, outside = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


def _printed_by(script: str) -> list[str]:
    """The words ``script`` prints, run in a fresh interpreter (providers are set once each)."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()


def test_telemetry_off_installs_nothing_and_imports_no_exporter() -> None:
    """With telemetry off, no provider is installed and neither the SDK nor OTLP is imported."""
    script = (
        "import asyncio, sys\n"
        "from opentelemetry import trace\n"
        "from fargate_runtime.telemetry import Telemetry, TelemetrySettings\n"
        "async def main():\n"
        "    async with Telemetry(TelemetrySettings(), service_name='x') as t:\n"
        "        print(t.enabled)\n"
        "asyncio.run(main())\n"
        "print(type(trace.get_tracer_provider()).__name__)\n"
        "print(any(m.startswith('opentelemetry.exporter') for m in sys.modules))\n"
        "print('opentelemetry.sdk.trace' in sys.modules)\n"
    )
    output = _printed_by(script)
    assert output == ["False", "ProxyTracerProvider", "False", "False"]


def test_telemetry_off_loads_no_opentelemetry_at_all() -> None:
    """Log lines, a consumer's metrics and spans, the shutdown trace: none load the API."""
    script = (
        "import io, logging, sys\n"
        "from fargate_runtime.logging import configure_logging\n"
        "from fargate_runtime.telemetry import IdempotencyOutcome, mark_idempotency_outcome\n"
        "from fargate_runtime.telemetry import metrics_enabled, record_event_loop_lag\n"
        "from fargate_runtime.telemetry import tracing_enabled\n"
        "from fargate_runtime.telemetry._instruments import ConsumerMetrics\n"
        "from fargate_runtime.telemetry._messages import MessageSpans, within\n"
        "from fargate_runtime.telemetry._shutdown import ShutdownTrace\n"
        "configure_logging(stream=io.StringIO())\n"
        "logging.getLogger('w').info('a line')\n"
        "m = ConsumerMetrics(queue_name='q')\n"
        "m.record_handler(0.1); m.record_store(0.01); m.record_drain(1.0); m.record_backlog(3)\n"
        f"tp = '00-{'a' * 32}-{'b' * 16}-01'\n"
        "span = MessageSpans(queue_name='q').start(\n"
        "    message_id='m', traceparent=tp, aws_trace_header=None)\n"
        "with within(span):\n"
        "    mark_idempotency_outcome(IdempotencyOutcome.CLAIMED)\n"
        "record_event_loop_lag(0.1)\n"
        "shutdown = ShutdownTrace('SIGTERM')\n"
        "shutdown.deadline_hit(services=1)\n"
        "shutdown.end(next_phase='closing')\n"
        "loaded = [name for name in sys.modules if name.startswith('opentelemetry')]\n"
        "print(span, tracing_enabled(), metrics_enabled(), loaded)\n"
    )
    output = _printed_by(script)
    assert output == ["None", "False", "False", "[]"]


def test_metrics_installed_after_a_consumer_was_made_still_get_its_figures() -> None:
    """Instruments are made when metrics turn on: durations and counts recorded after appear."""
    script = (
        "import asyncio\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from fargate_runtime.telemetry import Telemetry, TelemetrySettings\n"
        "from fargate_runtime.telemetry._instruments import ConsumerCounts, ConsumerMetrics\n"
        "class Counts:\n"
        "    def counts(self):\n"
        "        return ConsumerCounts(7, 6, 1, 0, 0, 0)\n"
        "source = Counts()\n"
        "made = ConsumerMetrics(queue_name='q', counts=source)\n"
        "made.record_handler(0.5)  # telemetry off: nowhere to go\n"
        "reader = InMemoryMetricReader()\n"
        "telemetry = Telemetry(TelemetrySettings(enabled=True), service_name='x',\n"
        "                      metric_reader=reader)\n"
        "asyncio.run(telemetry.__aenter__())\n"
        "made.record_handler(0.25)\n"
        "found = {}\n"
        "for rm in reader.get_metrics_data().resource_metrics:\n"
        "    for scope in rm.scope_metrics:\n"
        "        for metric in scope.metrics:\n"
        "            found[metric.name] = metric.data.data_points[0]\n"
        "duration = found['messaging.process.duration']\n"
        "print(duration.count, duration.sum, found['messaging.client.consumed.messages'].value)\n"
    )
    output = _printed_by(script)
    assert output == ["1", "0.25", "7"]


async def test_shutdown_is_traced_and_drain_duration_recorded(recorded: Recorded) -> None:
    """The drain appears as a ``shutdown`` span and in the drain duration histogram."""
    import asyncio

    from fargate_runtime import ExitCode, Lifecycle, RuntimeSettings, Supervisor

    app = Supervisor(settings=RuntimeSettings(), handle_signals=False)
    started = asyncio.Event()

    @app.service
    async def worker(lifecycle: Lifecycle) -> None:
        started.set()
        await lifecycle.wait_shutdown_requested()

    run = asyncio.create_task(app.serve())
    await started.wait()
    app.request_shutdown("deploy")
    assert await run == ExitCode.OK
    (span,) = [s for s in recorded.spans.get_finished_spans() if s.name == "shutdown"]
    assert span.attributes is not None
    assert span.attributes["fargate_runtime.shutdown.reason"] == "deploy"
    assert [event.name for event in span.events] == ["phase closing"]
    data = recorded.metrics.get_metrics_data()
    assert data is not None
    names = {
        metric.name
        for resource_metrics in data.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
    }
    assert "fargate_runtime.shutdown.drain.duration" in names


def test_an_exception_takes_its_log_context_to_where_it_is_logged(recorded: Recorded) -> None:
    """A line logged about an exception outside its block still names the block's ids."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(stream=buffer)
    caught: BaseException | None = None

    def fail() -> None:
        raise KeyError("gone")

    try:
        with TRACER.start_as_current_span("request") as span:
            try:
                with bind_log_context(request_id="outer"), bind_log_context(attempt=2):
                    fail()
            except KeyError as exc:
                caught = exc
        logging.getLogger("server").error("Exception in application", exc_info=caught)
        logging.getLogger("server").info("unrelated")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    failed, unrelated = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert failed["request_id"] == "outer"
    assert failed["attempt"] == 2  # the innermost block's fields, the most complete, won
    assert failed["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert failed["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "KeyError: 'gone'" in failed["exception"]
    assert "request_id" not in unrelated
    assert log_context_of(caught)["request_id"] == "outer"


def test_event_loop_lag_lands_in_its_seconds_histogram(recorded: Recorded) -> None:
    """A lag sample recorded from another thread lands in the loop-lag histogram's bucket."""
    thread = threading.Thread(target=record_event_loop_lag, args=(0.3,))
    thread.start()
    thread.join()
    (point,) = recorded.points("fargate_runtime.event_loop.lag")
    assert isinstance(point, HistogramDataPoint)
    assert list(point.explicit_bounds) == list(LOOP_LAG_BUCKETS_SECONDS)
    assert point.count >= 1
    assert point.bucket_counts[bisect.bisect_left(LOOP_LAG_BUCKETS_SECONDS, 0.3)] >= 1
