"""A message reaches the DLQ only because its own handler failed: shutdowns, FIFO followers and
long retries must not walk it there (moto's SQS with redrive policies, a real Redis)."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.sqs import (
    BatchContext,
    Consumer,
    Message,
    MessageContext,
    Retry,
    json_field,
)

from .conftest import dlq_url, event
from .support import QueueCounts, counts, eventually, keyed, running, send, settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.idempotency import Idempotency
    from tests.logcapture import JsonLines

pytestmark = pytest.mark.integration

EMPTY = QueueCounts(visible=0, not_visible=0)
FAST_RETRIES = {"backoff_base_seconds": 0.2, "backoff_cap_seconds": 0.4}


async def dead_letters(sqs: SQSClient, queue: str) -> list[str]:
    """Bodies' event ids (or bodies) now in the queue's DLQ."""
    response = await sqs.receive_message(
        QueueUrl=dlq_url(queue), MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    found = []
    for message in response.get("Messages", []):
        body = message.get("Body", "")
        try:
            found.append(str(json.loads(body)["event_id"]))
        except (ValueError, KeyError, TypeError):
            found.append(body)
    return found


async def cut_at_shutdown(sqs: SQSClient, queue: str, idempotency: Idempotency) -> Consumer:
    """Run a consumer whose handler runs until the drain deadline cuts it: the message is
    released at shutdown. Return the consumer (its stats)."""
    started = asyncio.Event()

    async def interrupted(message: Message, context: MessageContext) -> None:
        started.set()
        await asyncio.Event().wait()

    consumer = keyed(interrupted, sqs, queue, idempotency)
    async with running(consumer, drain_seconds=0.3) as run:
        await asyncio.wait_for(started.wait(), 30)
        assert await run.stop()  # cut: released at shutdown
    assert consumer.stats.released_on_shutdown == 1
    return consumer


async def handle_once(
    sqs: SQSClient, queue: str, idempotency: Idempotency
) -> tuple[Consumer, list[Message]]:
    """Run a consumer until it handled one message; return it and what its handler saw."""
    seen: list[Message] = []

    async def handle(message: Message, context: MessageContext) -> None:
        seen.append(message)

    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="handled")
    return consumer, seen


async def test_a_poison_fifo_message_goes_to_the_dlq_alone_and_its_group_runs_in_order(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """FIFO, maxReceiveCount 4, message 7 of 10 always fails: retried in process while its group
    waits, then moved to the DLQ by the runtime; every other message runs once, in order."""
    queue = await make_queue(fifo=True, dlq_after=4)
    calls: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        name = message.json()["event_id"]
        calls.append(name)
        if name == "m7":
            raise RuntimeError("card declined, always")

    await send(sqs, queue, [event(f"m{i}") for i in range(1, 11)], group_id="acct-1")
    consumer = keyed(handle, sqs, queue, idempotency, **FAST_RETRIES)
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 10, what="9 handled, 1 moved")
    assert calls == [f"m{i}" for i in range(1, 7)] + ["m7"] * 4 + [f"m{i}" for i in (8, 9, 10)]
    assert await dead_letters(sqs, queue) == ["m7"]
    stats = consumer.stats
    assert (stats.dead_lettered, stats.retried_in_process, stats.received) == (1, 3, 10)
    assert stats.failed == 4  # each failure counted, the in-process retries too
    assert stats.released_after_group_failure == 0
    assert await counts(sqs, queue) == EMPTY


async def test_an_unreadable_fifo_message_in_a_batch_goes_to_the_dlq_alone(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Batch mode, maxReceiveCount 2: one unreadable message among 8 of a group is dead-lettered
    by itself; the 7 others run once each, in order (they used to follow it to the DLQ)."""
    queue = await make_queue(fifo=True, dlq_after=2)
    seen: list[str] = []

    async def handle_batch(messages: Sequence[Message], context: BatchContext) -> None:
        seen.extend(message.json()["event_id"] for message in messages)

    bodies = [event(f"b{i}") for i in range(1, 4)] + ["not json"]
    bodies += [event(f"b{i}") for i in range(5, 9)]
    await send(sqs, queue, bodies, group_id="acct-2")
    consumer = Consumer(
        batch_handler=handle_batch,
        client=sqs,
        settings=settings(queue, **FAST_RETRIES),
        idempotency=idempotency,
        key=json_field("event_id"),
    )
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 8, what="7 handled, 1 moved")
    assert seen == ["b1", "b2", "b3", "b5", "b6", "b7", "b8"]
    assert await dead_letters(sqs, queue) == ["not json"]
    assert consumer.stats.received == 8
    assert await counts(sqs, queue) == EMPTY


async def test_five_shutdowns_in_a_row_do_not_dead_letter_a_message(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Standard queue, maxReceiveCount 3: a message cut and released at 5 consecutive shutdowns
    is re-queued as a copy at its last receive, and then handled once; the DLQ stays empty."""
    queue = await make_queue(dlq_after=3)
    await send(sqs, queue, [event("unlucky")])
    cut = [await cut_at_shutdown(sqs, queue, idempotency) for _ in range(5)]
    _, seen = await handle_once(sqs, queue, idempotency)
    assert [message.json()["event_id"] for message in seen] == ["unlucky"]
    assert [consumer.stats.requeued for consumer in cut] == [0, 0, 1, 0, 0]  # its 3rd receive
    assert seen[0].receive_count == 3  # the copy's: its 3rd receive, counting again from 1
    assert await dead_letters(sqs, queue) == []
    assert await counts(sqs, queue) == EMPTY


@pytest.mark.parametrize("delay", [50_000, 43_200])
async def test_a_retry_delay_past_12_hours_is_clamped_not_refused(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    json_lines: JsonLines,
    delay: int,
) -> None:
    """``Retry(delay_seconds=50000)`` (or 43200) is cut to what SQS still accepts for the
    message, with one log line: SQS takes it, and the message stays hidden (no "given up")."""
    queue = await make_queue()
    calls = collections.Counter[str]()

    async def handle(message: Message, context: MessageContext) -> None:
        calls[message.message_id] += 1
        raise Retry("come back tomorrow", delay_seconds=delay)

    await send(sqs, queue, ["later"])
    consumer = Consumer(handle, client=sqs, settings=settings(queue, visibility_timeout_seconds=4))
    async with running(consumer):
        await eventually(lambda: consumer.stats.failed == 1, what="failed once")
    clamped = json_lines.with_message(
        "retry delay clamped to what SQS still accepts for this message (12 h from its first "
        "receive)"
    )
    assert len(clamped) == 1
    assert 43_000 < clamped[0]["clamped_to_seconds"] < 43_200
    assert json_lines.with_message("sqs change_visibility given up") == []
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=1)
    assert sum(calls.values()) == 1


async def test_a_requeued_copy_keeps_body_attributes_and_trace_header(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """maxReceiveCount 1: a message released at shutdown on its only receive is re-queued as a
    copy with the same body, typed attributes and AWSTraceHeader; the handler sees the
    original's id as ``first_message_id`` and none of the runtime's attribute."""
    queue = await make_queue(dlq_after=1)
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    sent = await sqs.send_message(
        QueueUrl=queue,
        MessageBody=event("copied"),
        MessageAttributes={
            "tenant": {"DataType": "String", "StringValue": "t-9"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
            "amount": {"DataType": "Number.cents", "StringValue": "1250"},
        },
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}},
    )
    consumer = await cut_at_shutdown(sqs, queue, idempotency)
    assert consumer.stats.requeued == 1
    _, seen = await handle_once(sqs, queue, idempotency)
    (copy,) = seen
    assert copy.message_id != sent["MessageId"]
    assert copy.first_message_id == sent["MessageId"]
    assert copy.earlier_failures == 0
    assert copy.body == event("copied")
    assert dict(copy.attributes) == {"tenant": "t-9", "blob": b"\x00\xff", "amount": "1250"}
    assert copy.raw_attributes["amount"]["DataType"] == "Number.cents"
    assert copy.trace_header == trace
    assert await dead_letters(sqs, queue) == []
