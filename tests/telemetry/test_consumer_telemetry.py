"""The real consumer's spans, log ids and metrics, through SQS over HTTP and a real Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

import pytest
import redis.asyncio
from opentelemetry import trace

from fargate_runtime.idempotency import (
    ClaimRequest,
    ClaimStatus,
    FailurePolicy,
    Idempotency,
    RedisStore,
    fingerprint,
)
from fargate_runtime.sqs import Consumer, Message, MessageContext, SqsSettings
from fargate_runtime.sqs._backlog import BacklogSampler
from fargate_runtime.telemetry import DISPOSITION_ATTRIBUTE, IDEMPOTENCY_OUTCOME_ATTRIBUTE
from fargate_runtime.telemetry._instruments import ConsumerMetrics
from tests.sqs.conftest import event
from tests.sqs.support import eventually, running, send, settings
from tests.telemetry.consuming import (
    event_id_of,
    keyed,
    name_of,
    previously,
    process_spans,
    send_traced,
)

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.local import RedisServer
    from tests.logcapture import JsonLines
    from tests.telemetry.conftest import Recorded

pytestmark = pytest.mark.integration

TRACER = trace.get_tracer("tests")
logger = logging.getLogger("tests.handler")


async def test_handler_runs_in_a_consumer_span_child_of_the_producer_span(
    recorded: Recorded, json_lines: JsonLines, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """The handler's span is ``process <queue>``, a CONSUMER child of the sender's span."""

    async def handle(message: Message, context: MessageContext) -> None:
        trace.get_current_span().add_event("handled")
        logger.info("charging")

    message_id, producer = await send_traced(sqs, queue, event("traced"))
    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="handled and deleted")
    span = process_spans(recorded, queue)[message_id]
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == producer.get_span_context().span_id
    assert span.context.trace_id == producer.get_span_context().trace_id
    assert [e.name for e in span.events] == ["handled"]
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": name_of(queue),
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": message_id,
        IDEMPOTENCY_OUTCOME_ATTRIBUTE: "claimed",
        DISPOSITION_ATTRIBUTE: "deleted",
    }
    assert span.status.status_code is trace.StatusCode.UNSET
    # Linked to the producer too, as the messaging conventions recommend.
    assert [link.context.span_id for link in span.links] == [producer.get_span_context().span_id]
    (line,) = json_lines.with_message("charging")
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"
    assert line["message_id"] == message_id


async def test_each_claim_outcome_is_on_its_message_span(
    recorded: Recorded, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """Claimed, replayed, in progress and mismatch each mark the span of their message."""
    bodies = {
        outcome: event(f"{outcome}-{uuid.uuid4().hex[:6]}")
        for outcome in ("claimed", "replayed", "in_progress", "mismatch")
    }
    await previously(idempotency, queue, event_id_of(bodies["replayed"]), bodies["replayed"])
    await previously(idempotency, queue, event_id_of(bodies["mismatch"]), "another payload")
    elsewhere = idempotency.key(f"sqs:{name_of(queue)}", event_id_of(bodies["in_progress"]))
    (held,) = await idempotency.store.claim_many(
        [ClaimRequest(elsewhere, fingerprint(bodies["in_progress"].encode()))],
        owner="another-worker",
        lease_seconds=60,
    )
    assert held.status is ClaimStatus.ACQUIRED
    ids = {outcome: (await send_traced(sqs, queue, body))[0] for outcome, body in bodies.items()}
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.message_id)

    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(lambda: len(process_spans(recorded, queue)) == 4, what="four spans")
    spans = process_spans(recorded, queue)
    outcomes = {
        outcome: (spans[message_id].attributes or {})[IDEMPOTENCY_OUTCOME_ATTRIBUTE]
        for outcome, message_id in ids.items()
    }
    assert outcomes == {outcome: outcome for outcome in ids}
    assert handled == [ids["claimed"]]
    # Each message's span continues its own producer's trace, run or not.
    assert all(span.parent is not None and span.parent.is_remote for span in spans.values())


@pytest.mark.parametrize("policy", [FailurePolicy.CLOSED, FailurePolicy.OPEN])
async def test_store_error_is_on_the_span(
    recorded: Recorded,
    sqs: SQSClient,
    queue: str,
    private_redis: RedisServer,
    redis_prefix: str,
    policy: FailurePolicy,
) -> None:
    """With Redis down the span says ``store_error``: unrun and held until the stop (fail
    closed), or run (fail open)."""
    client = redis.asyncio.Redis.from_url(private_redis.url, socket_connect_timeout=1)
    idempotency = Idempotency(RedisStore(client), prefix=redis_prefix, failure_policy=policy)
    private_redis.stop()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.message_id)

    message_id, _ = await send_traced(sqs, queue, event("store-down"))
    consumer = keyed(handle, sqs, queue, idempotency)
    try:
        async with running(consumer) as run:
            if policy is FailurePolicy.CLOSED:
                await eventually(
                    lambda: not consumer.store_available and consumer.held == 1, what="held"
                )
                await run.stop()  # held until then: released at shutdown, its span ended
            await eventually(lambda: message_id in process_spans(recorded, queue), what="a span")
    finally:
        await client.aclose()
    attributes = process_spans(recorded, queue)[message_id].attributes or {}
    assert attributes[IDEMPOTENCY_OUTCOME_ATTRIBUTE] == "store_error"
    assert handled == ([message_id] if policy is FailurePolicy.OPEN else [])
    assert consumer.stats.store_errors == 1


async def test_metric_counts_match_what_the_consumer_did(
    recorded: Recorded, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """Received, succeeded, failed and duplicate counters equal the consumer's own counts."""
    good = [event(f"ok-{i}") for i in range(5)]
    failing = [event(f"boom-{i}", fail=True) for i in range(2)]
    duplicates = [event(f"dup-{i}") for i in range(3)]
    for body in duplicates:
        await previously(idempotency, queue, event_id_of(body), body)
    await send(sqs, queue, [*good, *failing, *duplicates, "not json"])

    async def handle(message: Message, context: MessageContext) -> None:
        if message.json().get("fail"):
            raise RuntimeError("provider said no")

    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(
            lambda: consumer.stats.deleted == 8 and consumer.stats.failed == 3,
            what="5 handled, 3 duplicates deleted, 3 failed",
        )
    stats, name = consumer.stats, name_of(queue)
    assert (stats.received, stats.succeeded, stats.duplicates_completed) == (11, 5, 3)
    assert recorded.total("messaging.client.consumed.messages", name) == stats.received
    assert recorded.total("fargate_runtime.sqs.succeeded", name) == stats.succeeded
    # Handler failures (2) and the malformed message (1) both count as failed.
    assert recorded.total("fargate_runtime.sqs.failed", name) == stats.failed == 3
    assert recorded.total("fargate_runtime.sqs.duplicates_skipped", name) == 3
    assert recorded.total("fargate_runtime.sqs.in_flight", name) == 0
    assert recorded.observations("messaging.process.duration", name) == stats.started == 7
    assert recorded.observations("fargate_runtime.idempotency.store.duration", name) >= 1
    assert recorded.total("fargate_runtime.sqs.released_on_shutdown", name) == 0


async def test_messages_released_at_the_drain_deadline_are_counted(
    recorded: Recorded, sqs: SQSClient, queue: str, idempotency: Idempotency
) -> None:
    """Handlers cut at the drain deadline show up in the released-on-shutdown counter."""
    started = asyncio.Event()

    async def handle(message: Message, context: MessageContext) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes: cut at the drain deadline

    await send(sqs, queue, [event("stuck")])
    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer, drain_seconds=1.0) as run:
        await started.wait()
        assert await run.stop()  # cancelled at the deadline
    assert consumer.stats.released_on_shutdown == 1
    assert recorded.total("fargate_runtime.sqs.released_on_shutdown", name_of(queue)) == 1
    assert recorded.total("fargate_runtime.sqs.in_flight", name_of(queue)) == 0


async def test_backlog_gauge_holds_the_visible_messages(
    recorded: Recorded, sqs: SQSClient, queue: str
) -> None:
    """With one slot busy, the gauge reads the messages still waiting in the queue."""
    release = asyncio.Event()

    async def handle(message: Message, context: MessageContext) -> None:
        await release.wait()

    await send(sqs, queue, [event(f"b{i}") for i in range(4)])
    consumer = Consumer(
        handle,
        client=sqs,
        settings=settings(queue, concurrency=1, backlog_interval_seconds=0.1),
    )
    gauge = "fargate_runtime.sqs.backlog_per_task"
    async with running(consumer):
        # One message is held by the busy slot; three wait.
        await eventually(lambda: recorded.total(gauge, name_of(queue)) == 3, what="backlog 3")
        release.set()
        await eventually(lambda: recorded.total(gauge, name_of(queue)) == 0, what="backlog 0")
    assert consumer.stats.succeeded == 4


async def test_backlog_interval_zero_makes_no_request(
    recorded: Recorded, sqs: SQSClient, queue: str
) -> None:
    """``backlog_interval_seconds=0`` turns the gauge off: no point is ever recorded."""

    async def handle(message: Message, context: MessageContext) -> None:
        """Nothing to do."""

    await send(sqs, queue, [event("one")])
    consumer = Consumer(handle, client=sqs, settings=settings(queue, backlog_interval_seconds=0))
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="deleted")
    assert not recorded.has("fargate_runtime.sqs.backlog_per_task", name_of(queue))


async def test_backlog_sampler_stops_when_the_queue_refuses(
    recorded: Recorded, json_lines: JsonLines, sqs: SQSClient
) -> None:
    """A refusal that no retry fixes (here: no such queue) ends sampling, logged, not raised."""
    url = (await sqs.create_queue(QueueName=f"gone{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    await sqs.delete_queue(QueueUrl=url)
    sampler = BacklogSampler(
        sqs,
        queue_url=url,
        interval_seconds=0.01,
        metrics=ConsumerMetrics(queue_name=name_of(url)),
    )
    await asyncio.wait_for(sampler.run(), timeout=30)  # returns instead of retrying forever
    assert sampler.samples == 0
    (line,) = [line for line in json_lines.lines if line["logger"] == "fargate_runtime.sqs.backlog"]
    assert line["message"].startswith("backlog gauge off")


def test_sqs_settings_default_backlog_interval_is_a_minute() -> None:
    """The default is one GetQueueAttributes a minute per task."""
    assert SqsSettings(queue_url="https://sqs.invalid/1/q").backlog_interval_seconds == 60
