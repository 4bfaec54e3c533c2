"""Every SQS message gets a span that says what became of it, and every line about it its ids.

Real consumer, SQS over HTTP (moto), real Redis (and PostgreSQL for the transactional form);
spans and metrics recorded in memory.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace

from fargate_runtime.errors import MalformedMessageError
from fargate_runtime.idempotency import ClaimRequest, Idempotency, fingerprint
from fargate_runtime.sqs import (
    AckOutcome,
    BatchContext,
    Consumer,
    Message,
    MessageContext,
)
from fargate_runtime.sqs.acks import DeleteBuffer
from fargate_runtime.telemetry import (
    DISPOSITION_ATTRIBUTE,
    HANDLER_BUCKETS_SECONDS,
    IDEMPOTENCY_OUTCOME_ATTRIBUTE,
    STORE_BUCKETS_SECONDS,
)
from tests.sqs.conftest import event
from tests.sqs.support import eventually, running, settings
from tests.telemetry.consuming import (
    event_id_of,
    keyed,
    name_of,
    previously,
    process_spans,
    send_traced,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan
    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.idempotency import PostgresStore
    from tests.idempotency.postgres import PostgresSchema
    from tests.logcapture import JsonLines
    from tests.telemetry.conftest import Recorded

pytestmark = pytest.mark.integration

ERROR = trace.StatusCode.ERROR
UNSET = trace.StatusCode.UNSET


def ids_of(span: ReadableSpan) -> dict[str, str]:
    """The ``trace_id``/``span_id`` a log line inside ``span`` carries."""
    return {"trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}"}


def error_type(span: ReadableSpan) -> object:
    """The span's ``error.type`` (None when it has none)."""
    return (span.attributes or {}).get("error.type")


async def test_every_message_gets_a_span_saying_what_became_of_it(
    recorded: Recorded,
    json_lines: JsonLines,
    sqs: SQSClient,
    queue: str,
    idempotency: Idempotency,
) -> None:
    """Run, failed, malformed, mismatch, duplicates: each a span, each line about it its ids."""
    bodies = {
        "ok": event(f"ok-{uuid.uuid4().hex[:6]}"),
        "fails": event(f"fails-{uuid.uuid4().hex[:6]}", fail=True),
        "bad_field": event(f"bad-{uuid.uuid4().hex[:6]}", malformed=True),
        "not_json": "this is not JSON",
        "no_key": '{"account": "acct"}',
        "completed": event(f"done-{uuid.uuid4().hex[:6]}"),
        "elsewhere": event(f"else-{uuid.uuid4().hex[:6]}"),
        "mismatch": event(f"mis-{uuid.uuid4().hex[:6]}"),
    }
    await previously(idempotency, queue, event_id_of(bodies["completed"]), bodies["completed"])
    await previously(idempotency, queue, event_id_of(bodies["mismatch"]), "another payload")
    elsewhere = idempotency.key(f"sqs:{name_of(queue)}", event_id_of(bodies["elsewhere"]))
    await idempotency.store.claim_many(
        [ClaimRequest(elsewhere, fingerprint(bodies["elsewhere"].encode()))],
        owner="another-worker",
        lease_seconds=60,
    )
    sent = {name: await send_traced(sqs, queue, body) for name, body in bodies.items()}

    async def handle(message: Message, context: MessageContext) -> None:
        body = message.json()
        if body.get("fail"):
            raise RuntimeError("provider said no")
        if body.get("malformed"):
            raise MalformedMessageError("amount_cents must be positive")

    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(lambda: len(process_spans(recorded, queue)) == len(bodies), what="spans")
    spans = {
        name: process_spans(recorded, queue)[message_id] for name, (message_id, _) in sent.items()
    }
    seen = {
        name: (
            span.status.status_code,
            error_type(span),
            (span.attributes or {}).get(DISPOSITION_ATTRIBUTE),
        )
        for name, span in spans.items()
    }
    assert seen == {
        "ok": (UNSET, None, "deleted"),
        "fails": (ERROR, "RuntimeError", "backed_off"),
        "bad_field": (ERROR, "malformed", "backed_off"),
        "not_json": (ERROR, "malformed", "backed_off"),
        "no_key": (ERROR, "malformed", "backed_off"),
        "completed": (UNSET, None, "deleted"),
        "elsewhere": (UNSET, None, "backed_off"),
        "mismatch": (ERROR, "payload_mismatch", "backed_off"),
    }
    # Each continues its producer's trace and links to the producer's span.
    for name, (_, producer) in sent.items():
        producer_context = producer.get_span_context()
        span = spans[name]
        assert span.parent is not None
        assert span.parent.span_id == producer_context.span_id
        assert [link.context.span_id for link in span.links] == [producer_context.span_id]
    # An unexpected handler error carries its traceback; runtime decisions do not.
    assert [e.name for e in spans["fails"].events] == ["exception"]
    assert [e.name for e in spans["mismatch"].events] == []
    # Every line about a message, the runtime's own included, carries that message's span ids.
    by_id = {message_id: spans[name] for name, (message_id, _) in sent.items()}
    about = [line for line in json_lines.lines if line.get("message_id") in by_id]
    assert {line["message"] for line in about} >= {
        "handler failed",
        "malformed message; it will be retried, then dead-lettered",
        "duplicate of completed work deleted",
        "key in progress elsewhere; backing off",
    }
    for line in about:
        assert {k: line.get(k) for k in ("trace_id", "span_id")} == ids_of(
            by_id[line["message_id"]]
        )
    (mismatch_line,) = [line for line in about if line["message_id"] == sent["mismatch"][0]]
    assert mismatch_line["message"].startswith("payload mismatch: ")
    (failure,) = json_lines.with_message("handler failed")
    assert "RuntimeError: provider said no" in failure["exception"]
    stats = consumer.stats
    assert (stats.payload_mismatches, stats.malformed, stats.failed) == (1, 3, 5)


async def test_a_message_cut_at_the_drain_deadline_is_an_error_span(
    recorded: Recorded, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """A handler still running at the deadline: ERROR ``drain_deadline``, released at once."""
    started = asyncio.Event()

    async def handle(message: Message, context: MessageContext) -> None:
        started.set()
        await asyncio.Event().wait()

    message_id, _ = await send_traced(sqs, queue, event("stuck"))
    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer, drain_seconds=0.5) as run:
        await started.wait()
        assert await run.stop()
    span = process_spans(recorded, queue)[message_id]
    assert span.status.status_code is ERROR
    assert error_type(span) == "drain_deadline"
    assert (span.attributes or {})[DISPOSITION_ATTRIBUTE] == "released"
    # The queue's drain duration says it was cut, and names the queue.
    (drain,) = recorded.histograms("fargate_runtime.sqs.drain.duration", name_of(queue))
    assert (drain.attributes or {})["error.type"] == "drain_deadline"
    assert (drain.attributes or {})["messaging.system"] == "aws_sqs"
    (handler,) = recorded.histograms("messaging.process.duration", name_of(queue))
    assert (handler.attributes or {})["error.type"] == "drain_deadline"


async def test_a_slow_handler_and_a_fast_store_call_land_in_different_buckets(
    recorded: Recorded, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """Durations are seconds in seconds-sized buckets: 1.5 s and a few ms are told apart."""

    async def handle(message: Message, context: MessageContext) -> None:
        await asyncio.sleep(1.5)

    await send_traced(sqs, queue, event("slow"))
    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="handled")
    (handler,) = recorded.histograms("messaging.process.duration", name_of(queue))
    (store,) = recorded.histograms("fargate_runtime.idempotency.store.duration", name_of(queue))
    assert list(handler.explicit_bounds) == list(HANDLER_BUCKETS_SECONDS)
    assert list(store.explicit_bounds) == list(STORE_BUCKETS_SECONDS)
    # 1.5 s falls in (1, 2.5]; a loopback Redis round trip well under 0.1 s.
    (handler_bucket,) = [i for i, count in enumerate(handler.bucket_counts) if count]
    assert handler_bucket == bisect.bisect_left(HANDLER_BUCKETS_SECONDS, 1.5)
    (store_bucket,) = [i for i, count in enumerate(store.bucket_counts) if count]
    assert STORE_BUCKETS_SECONDS[store_bucket] <= 0.1
    assert handler.sum == pytest.approx(1.5, abs=0.5)


async def test_metric_points_carry_the_conventions_attributes(
    recorded: Recorded, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """Every consumer point has the messaging system and queue; operations are named."""

    async def handle(message: Message, context: MessageContext) -> None:
        if message.json().get("fail"):
            raise ValueError("no")

    await send_traced(sqs, queue, event("one"))
    await send_traced(sqs, queue, event("two", fail=True))
    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(lambda: consumer.stats.failed == 1 and consumer.stats.deleted == 1)
    name = name_of(queue)
    for metric in (
        "messaging.client.consumed.messages",
        "fargate_runtime.sqs.succeeded",
        "fargate_runtime.sqs.failed",
        "fargate_runtime.sqs.in_flight",
        "messaging.process.duration",
        "fargate_runtime.idempotency.store.duration",
        "fargate_runtime.sqs.drain.duration",
    ):
        sets = recorded.attribute_sets(metric, name)
        assert sets, metric
        assert all(s["messaging.system"] == "aws_sqs" for s in sets), metric
    (consumed,) = recorded.attribute_sets("messaging.client.consumed.messages", name)
    assert consumed["messaging.operation.name"] == "receive"
    durations = recorded.attribute_sets("messaging.process.duration", name)
    assert {s["messaging.operation.name"] for s in durations} == {"process"}
    assert sorted(str(s.get("error.type")) for s in durations) == ["None", "ValueError"]


async def test_a_batch_handler_runs_in_a_span_linking_its_messages(
    recorded: Recorded, json_lines: JsonLines, sqs: SQSClient, queue: str
) -> None:
    """One batch span links every message's span; a message the handler fails is an error."""
    logged: list[trace.SpanContext] = []

    async def handle_batch(messages: Sequence[Message], context: BatchContext) -> None:
        logged.append(trace.get_current_span().get_span_context())
        for message in messages:
            if message.json().get("fail"):
                context.fail(message)

    ids = [(await send_traced(sqs, queue, event(f"b{i}", fail=i == 0)))[0] for i in range(3)]
    consumer = Consumer(
        batch_handler=handle_batch,
        client=sqs,
        settings=settings(queue, gather_seconds=1.0, backoff_base_seconds=60),
    )
    async with running(consumer):
        await eventually(lambda: consumer.stats.failed + consumer.stats.succeeded == 3)
    spans = process_spans(recorded, queue)
    batches = [
        span
        for span in recorded.spans.get_finished_spans()
        if span.name == f"process {name_of(queue)}"
        and "messaging.batch.message_count" in (span.attributes or {})
    ]
    linked = {link.context.span_id for batch in batches for link in batch.links}
    assert linked == {spans[message_id].context.span_id for message_id in ids}
    assert {batch.context.span_id for batch in batches} == {c.span_id for c in logged}
    assert error_type(spans[ids[0]]) == "batch_item_failed"
    assert [error_type(spans[i]) for i in ids[1:]] == [None, None]


async def test_a_delete_given_up_is_logged_with_its_messages_ids(
    json_lines: JsonLines, sqs: SQSClient, queue: str
) -> None:
    """An ack that fails for good names the message the way its other lines do."""
    fields = {"message_id": "m1", "trace_id": "ab" * 16, "span_id": "cd" * 8}
    buffer = DeleteBuffer(
        sqs, queue_url=queue + "-missing", flush_interval_seconds=0.01, attempts=1
    )
    future = buffer.delete("m1", receipt_handle="handle", log_fields=lambda: fields)
    await buffer.flush()
    assert await future is AckOutcome.GAVE_UP
    (line,) = json_lines.with_message("sqs delete given up")
    assert {key: line[key] for key in fields} == fields


async def test_a_message_completed_by_its_handlers_commit_has_a_claimed_deleted_span(
    recorded: Recorded,
    json_lines: JsonLines,
    sqs: SQSClient,
    queue: str,
    postgres_store: PostgresStore,
    postgres_schema: PostgresSchema,
) -> None:
    """On the PostgreSQL store the handler's COMMIT completes the record: its span says claimed
    and deleted, no completion call follows, and its line in the transaction has the span's ids."""
    table = f"{postgres_schema.name}.charges"
    await postgres_schema.fetchval(f"CREATE TABLE {table} (event_id text PRIMARY KEY)")
    message_id, _ = await send_traced(sqs, queue, event("pg-span"))

    async def handle(message: Message, context: MessageContext) -> None:
        async with context.transaction() as tx:
            await tx.execute(f"INSERT INTO {table} VALUES ($1)", message.json()["event_id"])
            context.logger.info("charged in the transaction")

    consumer = keyed(handle, sqs, queue, Idempotency(postgres_store, prefix="pgspan"))
    async with running(consumer):
        await eventually(lambda: message_id in process_spans(recorded, queue), what="its span")
    span = process_spans(recorded, queue)[message_id]
    attributes = span.attributes or {}
    assert (span.status.status_code, error_type(span)) == (UNSET, None)
    assert attributes.get(IDEMPOTENCY_OUTCOME_ATTRIBUTE) == "claimed"
    assert attributes.get(DISPOSITION_ATTRIBUTE) == "deleted"
    assert consumer.stats.completion_round_trips == 0
    (line,) = json_lines.with_message("charged in the transaction")
    assert {k: line.get(k) for k in ("trace_id", "span_id")} == ids_of(span)
    assert await postgres_schema.fetchval(f"SELECT count(*) FROM {table}") == 1
