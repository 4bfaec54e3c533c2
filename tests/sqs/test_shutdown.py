"""Shutdown in-process: unstarted messages released at once, the poll abandoned, stragglers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.idempotency import ClaimRequest, ClaimStatus, Idempotency, fingerprint
from fargate_runtime.sqs import Consumer, Message, MessageContext, json_field

from .conftest import event
from .support import QueueCounts, counts, eventually, running, send, settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from types_aiobotocore_sqs import SQSClient

pytestmark = pytest.mark.integration

# Long enough that "visible again" can only come from a release, never from expiry.
LONG_VISIBILITY = 120


async def test_unstarted_fifo_followers_are_released_at_once_while_the_head_drains(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """On shutdown the queued followers are visible again at once; the running head finishes."""
    queue = await make_queue(fifo=True)
    started, finish = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        started.set()
        await finish.wait()
        handled.append(message.json()["event_id"])

    await send(sqs, queue, [event("a0"), event("a1"), event("a2")], group_id="A")
    consumer = Consumer(
        handle,
        client=sqs,
        settings=settings(queue, visibility_timeout_seconds=LONG_VISIBILITY),
        idempotency=idempotency,
        key=json_field("event_id"),
    )
    async with running(consumer, drain_seconds=10) as run:
        await asyncio.wait_for(started.wait(), 30)
        stopping = asyncio.create_task(run.stop())
        await eventually(lambda: consumer.stats.released_on_shutdown == 2, what="2 released")
        # Still draining (a0 runs), and the followers are already back in the queue.
        assert await counts(sqs, queue) == QueueCounts(visible=2, not_visible=1)
        finish.set()
        assert not await stopping
    assert handled == ["a0"]
    assert await counts(sqs, queue) == QueueCounts(visible=2, not_visible=0)


async def test_the_receive_in_flight_is_abandoned_at_once_while_a_handler_drains(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """At shutdown the waiting long poll is abandoned (counted), not waited for; the running
    handler still finishes and its message is deleted."""
    queue = await make_queue()
    started, finish = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        started.set()
        await finish.wait()
        handled.append(message.body)

    consumer = Consumer(
        handle,
        client=sqs,
        settings=settings(queue, concurrency=2, visibility_timeout_seconds=LONG_VISIBILITY),
    )
    async with running(consumer, drain_seconds=10) as run:
        await send(sqs, queue, ["first"])
        await asyncio.wait_for(started.wait(), 30)
        await eventually(lambda: consumer.receives_in_flight == 1, what="second poll waiting")
        stopping = asyncio.create_task(run.stop())
        await eventually(lambda: consumer.stats.abandoned_receives == 1, what="poll abandoned")
        await eventually(lambda: consumer.receives_in_flight == 0, what="poll gone")
        finish.set()
        assert not await stopping
    assert handled == ["first"]
    assert consumer.stats.hidden_by_abandoned_receive == 1  # one free slot: at most one hidden
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=0)


async def test_straggler_is_cancelled_at_the_drain_deadline_and_released(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """A handler still running at the deadline loses its claim and its message is visible."""
    queue = await make_queue()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(message: Message, context: MessageContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never finishes on its own
        except asyncio.CancelledError:
            cancelled.set()
            raise

    body = event("stuck")
    await send(sqs, queue, [body])
    consumer = Consumer(
        handle,
        client=sqs,
        settings=settings(queue, visibility_timeout_seconds=LONG_VISIBILITY),
        idempotency=idempotency,
        key=json_field("event_id"),
    )
    async with running(consumer, drain_seconds=1) as run:
        await asyncio.wait_for(started.wait(), 30)
        assert await run.stop()  # had to be cancelled: the supervisor would exit 75
    assert cancelled.is_set()
    assert consumer.stats.cancelled_at_deadline == 1
    assert consumer.stats.released_on_shutdown == 1
    assert await counts(sqs, queue) == QueueCounts(visible=1, not_visible=0)
    # The claim was released: another worker acquires the key at once.
    stored = idempotency.key(f"sqs:{queue.rsplit('/', 1)[-1]}", "stuck")
    (claim,) = await idempotency.store.claim_many(
        [ClaimRequest(stored, fingerprint(body.encode()))], owner="next-worker", lease_seconds=5
    )
    assert claim.status is ClaimStatus.ACQUIRED
