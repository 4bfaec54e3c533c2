"""Helpers for the consumer's telemetry tests: a keyed consumer, traced sends, its spans."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace

from fargate_runtime.idempotency import ClaimRequest, Completion, Idempotency, fingerprint
from fargate_runtime.sqs import Consumer, Message, MessageContext
from fargate_runtime.telemetry import inject_sqs_attributes
from tests.sqs import support

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from opentelemetry.sdk.trace import ReadableSpan
    from types_aiobotocore_sqs import SQSClient

    from tests.telemetry.conftest import Recorded

TRACER = trace.get_tracer("tests")


def name_of(queue_url: str) -> str:
    """The queue name, as spans and metric points carry it."""
    return queue_url.rsplit("/", 1)[-1]


def event_id_of(body: str) -> str:
    """The ``event_id`` the consumer keys ``body`` by."""
    return str(Message(message_id="-", body=body, receipt_handle="-").json()["event_id"])


def keyed(
    handler: Callable[[Message, MessageContext], Awaitable[None]],
    sqs: SQSClient,
    queue_url: str,
    idempotency: Idempotency,
    **overrides: object,
) -> Consumer:
    """A consumer keyed by ``event_id``; backoffs long enough that nothing comes back mid-test."""
    values: dict[str, object] = {
        "backoff_base_seconds": 60,
        "backoff_cap_seconds": 60,
        "in_progress_delay_seconds": 60,
        **overrides,
    }
    return support.keyed(handler, sqs, queue_url, idempotency, **values)


def process_spans(recorded: Recorded, queue_url: str) -> dict[str, ReadableSpan]:
    """This queue's finished message spans, by message id (batch spans left out)."""
    found: dict[str, ReadableSpan] = {}
    for span in recorded.spans.get_finished_spans():
        message_id = (span.attributes or {}).get("messaging.message.id")
        if span.name == f"process {name_of(queue_url)}" and message_id is not None:
            found[str(message_id)] = span
    return found


async def send_traced(sqs: SQSClient, queue_url: str, body: str) -> tuple[str, trace.Span]:
    """Send ``body`` from inside a producer span, its context in a ``traceparent`` attribute."""
    with TRACER.start_as_current_span("publish", kind=trace.SpanKind.PRODUCER) as producer:
        sent = await sqs.send_message(
            QueueUrl=queue_url, MessageBody=body, MessageAttributes=inject_sqs_attributes({})
        )
    return sent["MessageId"], producer


async def previously(idempotency: Idempotency, queue_url: str, event_id: str, body: str) -> None:
    """Record ``event_id`` as completed by an earlier run, for a payload ``body``."""
    key = idempotency.key(f"sqs:{name_of(queue_url)}", event_id)
    store = idempotency.store
    (claim,) = await store.claim_many(
        [ClaimRequest(key, fingerprint(body.encode()))], owner="earlier-run", lease_seconds=60
    )
    assert claim.token is not None
    assert await store.complete_many([Completion(key, claim.token, b"")], retention_seconds=600)
