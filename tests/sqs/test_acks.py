"""Batched deletes and visibility changes against SQS over HTTP: every Failed[] entry read."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aioboto3
import pytest
from aiobotocore.config import AioConfig

from fargate_runtime.local import free_port
from fargate_runtime.sqs import AckOutcome
from fargate_runtime.sqs.acks import DeleteBuffer, VisibilityBuffer

from .support import QueueCounts, counts, eventually, send

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from types_aiobotocore_sqs import SQSClient

pytestmark = pytest.mark.integration


async def receive(sqs: SQSClient, queue: str, count: int) -> list[tuple[str, str]]:
    """``count`` messages as (message id, receipt handle), hidden for 60 s."""
    got: list[tuple[str, str]] = []
    while len(got) < count:
        response = await sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        )
        got.extend((m["MessageId"], m["ReceiptHandle"]) for m in response.get("Messages", []))
    return got


async def test_delete_batch_reads_each_failed_entry(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """In one call, a valid handle is deleted and an invalid one is reported gone."""
    queue = await make_queue()
    await send(sqs, queue, ["a"])
    ((message_id, handle),) = await receive(sqs, queue, 1)
    buffer = DeleteBuffer(sqs, queue_url=queue, flush_interval_seconds=60, attempts=3)
    good = buffer.delete(message_id, receipt_handle=handle)
    bad = buffer.delete("m-bogus", receipt_handle="not-a-receipt-handle")
    await buffer.flush()
    assert (await good, await bad) == (AckOutcome.DONE, AckOutcome.GONE)
    assert buffer.counters.calls == 1
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=0)


async def test_visibility_batch_gives_up_on_a_sender_fault_and_applies_the_rest(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """An invalid timeout fails its entry only (not retried); the other entry is released."""
    queue = await make_queue()
    await send(sqs, queue, ["a", "b"])
    (first, second) = await receive(sqs, queue, 2)
    buffer = VisibilityBuffer(sqs, queue_url=queue, flush_interval_seconds=60, attempts=3)
    outcomes = await buffer.change_now([(*first, 43_201), (*second, 0)])
    assert outcomes == [AckOutcome.GAVE_UP, AckOutcome.DONE]
    assert buffer.counters.calls == 1  # a sender fault is not retried
    assert await counts(sqs, queue) == QueueCounts(visible=1, not_visible=1)


async def test_ten_entries_go_out_at_once_and_fewer_after_the_interval(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """A full batch is sent without waiting; a partial one after the flush interval."""
    queue = await make_queue()
    await send(sqs, queue, [f"m{i}" for i in range(11)])
    received = await receive(sqs, queue, 11)
    full = DeleteBuffer(sqs, queue_url=queue, flush_interval_seconds=3600, attempts=3)
    futures = [full.delete(m_id, receipt_handle=handle) for m_id, handle in received[:10]]
    assert await asyncio.wait_for(asyncio.gather(*futures), 30) == [AckOutcome.DONE] * 10
    assert full.counters.calls == 1
    partial = DeleteBuffer(sqs, queue_url=queue, flush_interval_seconds=0.05, attempts=3)
    last_id, last_handle = received[10]
    last = partial.delete(last_id, receipt_handle=last_handle)
    await eventually(last.done, what="interval flush")
    assert last.result() is AckOutcome.DONE
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=0)


async def test_whole_call_fatal_failure_is_given_up_at_once(
    make_queue: Callable[..., Awaitable[str]], sqs: SQSClient
) -> None:
    """A call to a queue that is gone is not retried (retrying cannot help): GAVE_UP, logged."""
    queue = await make_queue()
    missing = queue + "-missing"
    buffer = DeleteBuffer(sqs, queue_url=missing, flush_interval_seconds=0.01, attempts=2)
    future = buffer.delete("m1", receipt_handle="handle")
    await buffer.flush()
    assert await future is AckOutcome.GAVE_UP
    assert buffer.counters.calls == 1  # a missing queue is fatal: no second attempt


async def test_transport_failure_is_retried_then_given_up() -> None:
    """With the endpoint unreachable every attempt fails; each entry is tried, then GAVE_UP."""
    config = AioConfig(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1)
    session = aioboto3.Session()
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with session.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", config=config
    ) as client:
        buffer = DeleteBuffer(
            client, queue_url=f"{endpoint}/1/q", flush_interval_seconds=0.01, attempts=3
        )
        future = buffer.delete("m1", receipt_handle="handle")
        await buffer.flush()
        assert await future is AckOutcome.GAVE_UP
        assert buffer.counters.calls == 3
