"""The example worker as a real process, exporting to an OTLP/HTTP collector on loopback.

A recording collector checks the whole picture an operator gets (spans, logs, metrics); a
collector that refuses connections and one that never answers check that telemetry never costs
the shutdown: exit before ``stop_timeout - margin``, exit code unchanged, one warning.
"""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import pytest

from fargate_runtime.telemetry import HANDLER_BUCKETS_SECONDS, STORE_BUCKETS_SECONDS
from tests.processes import Child, runtime_argv
from tests.telemetry.collector import (
    CollectedSpan,
    HangingCollector,
    RecordingCollector,
    RefusingCollector,
)

pytestmark = [pytest.mark.process, pytest.mark.integration]

APP = "examples.sqs_worker.app:app"
STOP_TIMEOUT_SECONDS = 10.0
MARGIN_SECONDS = 2.0
CLOSE_SECONDS = 3.0


@pytest.fixture
def queue_url(queue_factory: Any) -> str:
    """A fresh queue, deleted after the test."""
    url: str = queue_factory()
    return url


@pytest.fixture
def telemetry_env(worker_env: dict[str, str], queue_url: str) -> dict[str, str]:
    """A worker with telemetry on (the shared worker environment, the queue's own visibility
    timeout), a 10 s stop timeout."""
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue_url,
        # Failed messages stay away for the rest of the test.
        "FARGATE_RUNTIME_SQS_BACKOFF_BASE_SECONDS": "120",
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT_SECONDS),
        "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": str(MARGIN_SECONDS),
        "FARGATE_RUNTIME_CLOSE_SECONDS": str(CLOSE_SECONDS),
        "FARGATE_RUNTIME_SERVICE_NAME": "payments-worker",
        "FARGATE_RUNTIME_TELEMETRY_ENABLED": "true",
    }
    del env["FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS"]
    return env


def payment(event_id: str, amount_cents: int = 500) -> str:
    """A payment event body."""
    return json.dumps(
        {"event_id": event_id, "account": "acct_1", "amount_cents": amount_cents, "sequence": 1}
    )


def send_traced(sqs: Any, queue_url: str, body: str) -> tuple[str, str, str]:
    """Send ``body`` as a traced producer would; (message id, its trace id, producer span id)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageAttributes={
            "traceparent": {"DataType": "String", "StringValue": f"00-{trace_id}-{span_id}-01"}
        },
    )
    return str(sent["MessageId"]), trace_id, span_id


def count_of(child: Child, message: str) -> int:
    """How many lines start with ``message``."""
    return sum(1 for line in child.lines if str(line.get("message", "")).startswith(message))


def test_the_operator_gets_every_span_line_and_metric(
    sync_sqs: Any, queue_url: str, telemetry_env: dict[str, str]
) -> None:
    """Sampled at 0: every message's span (producer's child, outcome, error.type), the shutdown
    span, span ids on every line about a message, and metrics equal to the consumer's stats."""
    with RecordingCollector() as collector:
        env = {
            **telemetry_env,
            "FARGATE_RUNTIME_TELEMETRY_OTLP_ENDPOINT": collector.endpoint,
            # New traces are dropped; producers' sampled traces are continued, and the
            # shutdown span is kept whatever the ratio.
            "FARGATE_RUNTIME_TELEMETRY_SAMPLE_RATIO": "0",
        }
        with Child(runtime_argv(APP), env=env) as worker:
            worker.wait_for_message("sqs consumer started")
            sent = {"charged": send_traced(sync_sqs, queue_url, payment("evt-1"))}
            worker.wait_for_message("payment charged")
            sent["duplicate"] = send_traced(sync_sqs, queue_url, payment("evt-1"))
            sent["mismatch"] = send_traced(sync_sqs, queue_url, payment("evt-1", 999))
            sent["not_json"] = send_traced(sync_sqs, queue_url, "{not json")
            sent["bad_amount"] = send_traced(sync_sqs, queue_url, payment("evt-2", -5))
            worker.wait_for(
                lambda _: (
                    count_of(worker, "duplicate of completed work deleted") == 1
                    and count_of(worker, "payload mismatch") == 1
                    and count_of(worker, "malformed message") == 2
                )
            )
            worker.signal(signal.SIGTERM)
            assert worker.wait() == 0
            stats = worker.wait_for_message("sqs consumer stopped")
            lines = list(worker.lines)
    spans = {
        str(span.attributes.get("messaging.message.id")): span
        for span in collector.spans
        if span.name.startswith("process ")
    }
    by_name = {name: spans[message_id] for name, (message_id, _, _) in sent.items()}
    for name, (_, trace_id, producer) in sent.items():
        span = by_name[name]
        assert (span.trace_id, span.parent_span_id) == (trace_id, producer), name
        assert span.links == [(trace_id, producer)], name
    assert {name: _story(span) for name, span in by_name.items()} == {
        "charged": (0, None, "claimed", "deleted"),
        "duplicate": (0, None, "replayed", "deleted"),
        "mismatch": (2, "payload_mismatch", "mismatch", "backed_off"),
        "not_json": (2, "malformed", None, "backed_off"),
        "bad_amount": (2, "malformed", "claimed", "backed_off"),
    }
    (shutdown,) = [span for span in collector.spans if span.name == "shutdown"]
    assert shutdown.attributes["fargate_runtime.shutdown.reason"] == "SIGTERM"
    assert shutdown.resource["service.name"] == "payments-worker"
    # Every line about a message carries that message's span ids.
    by_id = {span.attributes["messaging.message.id"]: span for span in by_name.values()}
    about = [line for line in lines if line.get("message_id") in by_id]
    assert {line["message_id"] for line in about} == set(by_id)  # each has lines about it
    for line in about:
        span = by_id[line["message_id"]]
        assert (line.get("trace_id"), line.get("span_id")) == (span.trace_id, span.span_id)
    _assert_metrics(collector, stats, queue_url.rsplit("/", 1)[-1])


def _story(span: CollectedSpan) -> tuple[int, object, object, object]:
    """(status code, error.type, idempotency outcome, disposition) of a message's span."""
    attributes = span.attributes
    return (
        span.status_code,
        attributes.get("error.type"),
        attributes.get("fargate_runtime.idempotency.outcome"),
        attributes.get("fargate_runtime.sqs.disposition"),
    )


def _assert_metrics(collector: RecordingCollector, stats: dict[str, Any], queue: str) -> None:
    """The final export's values equal the consumer's own counts; attributes per conventions."""
    expected = {
        "messaging.client.consumed.messages": stats["received"],
        "fargate_runtime.sqs.succeeded": stats["succeeded"],
        "fargate_runtime.sqs.failed": stats["failed"],
        "fargate_runtime.sqs.duplicates_skipped": stats["duplicates_completed"]
        + stats["duplicates_in_progress"],
        "fargate_runtime.sqs.released_on_shutdown": stats["released_on_shutdown"],
        "fargate_runtime.sqs.in_flight": 0,
    }
    assert (stats["received"], stats["succeeded"], stats["failed"]) == (5, 1, 3)
    for metric, value in expected.items():
        (point,) = collector.last_points(metric)
        assert point.value == value, metric
        assert point.attributes["messaging.system"] == "aws_sqs", metric
        assert point.attributes["messaging.destination.name"] == queue, metric
    handler = collector.last_points("messaging.process.duration")
    assert sum(point.count or 0 for point in handler) == stats["started"] == 2
    assert {point.attributes.get("error.type") for point in handler} == {None, "malformed"}
    assert all(point.bounds == list(HANDLER_BUCKETS_SECONDS) for point in handler)
    (store,) = collector.last_points("fargate_runtime.idempotency.store.duration")
    assert store.bounds == list(STORE_BUCKETS_SECONDS)
    (drain,) = collector.last_points("fargate_runtime.sqs.drain.duration")
    assert drain.attributes["messaging.destination.name"] == queue
    (shutdown,) = collector.last_points("fargate_runtime.shutdown.drain.duration")
    assert shutdown.count == 1
    assert shutdown.unit == "s"


@pytest.mark.slow
@pytest.mark.parametrize("collector_kind", [RefusingCollector, HangingCollector])
def test_a_dead_or_hung_collector_never_costs_the_shutdown(
    sync_sqs: Any,
    queue_url: str,
    telemetry_env: dict[str, str],
    collector_kind: type[RefusingCollector | HangingCollector],
) -> None:
    """SIGTERM with the collector down or hung: exit 0 before the deadline, one warning."""
    with collector_kind() as collector:
        endpoint = collector.endpoint
        env = {**telemetry_env, "FARGATE_RUNTIME_TELEMETRY_OTLP_ENDPOINT": endpoint}
        with Child(runtime_argv(APP), env=env) as worker:
            worker.wait_for_message("sqs consumer started")
            send_traced(sync_sqs, queue_url, payment("evt-1"))
            worker.wait_for_message("payment charged")
            sent_at = worker.signal(signal.SIGTERM)
            code = worker.wait(timeout=STOP_TIMEOUT_SECONDS * 2)
            exited_after = worker.lines[-1]["_received"] - sent_at
            after = [line for line in worker.lines if line["_received"] >= sent_at]
    assert code == 0, worker.output()
    assert exited_after < STOP_TIMEOUT_SECONDS - MARGIN_SECONDS
    warnings = [line for line in after if line.get("level") == "WARNING"]
    # One line about telemetry, whatever else the shutdown says (e.g. the abandoned receive).
    (warning,) = [line for line in warnings if line["logger"] == "fargate_runtime.telemetry"]
    assert all(line["logger"].startswith("fargate_runtime") for line in warnings), warnings
    assert warning["message"].startswith("telemetry not delivered")
    assert endpoint in warning["message"]
    assert warning["flush_seconds"] <= CLOSE_SECONDS
    # The SDK's own retries and errors were held back: none printed after SIGTERM.
    assert [line for line in after if str(line.get("logger", "")).startswith("opentelemetry")] == []
    assert after[-1]["message"] == "phase stopped"
