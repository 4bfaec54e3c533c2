"""The consumer when its Redis fails: killed while idle, paused at a completion, a reply lost.

Each test owns a private ``redis-server`` it stops, pauses (SIGSTOP) or proxies, and talks to
moto's SQS over HTTP. Nothing here may spend a receive count, run work twice or block a key for
a lease because of the store.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from fargate_runtime.idempotency import (
    ClaimRequest,
    ClaimResult,
    Completion,
    Idempotency,
    IdempotencySettings,
    IdempotencyStore,
    MemoryStore,
    open_store,
)
from tests.idempotency.test_outage import ReplyDropper

from .conftest import dlq_url, event
from .support import QueueCounts, counts, eventually, keyed, running, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.local import RedisServer
    from fargate_runtime.sqs import Message, MessageContext

pytestmark = pytest.mark.integration


def store_settings(url: str, prefix: str) -> IdempotencySettings:
    """A store that gives up on a silent Redis after 0.5 s (a busy machine still answers)."""
    return IdempotencySettings(
        redis_url=SecretStr(url), key_prefix=prefix, call_timeout_seconds=0.5, retries=1
    )


@pytest.fixture
async def private_store(
    private_redis: RedisServer, redis_prefix: str
) -> AsyncIterator[IdempotencyStore]:
    """The idempotency store on this test's own Redis."""
    async with open_store(store_settings(private_redis.url, redis_prefix)) as store:
        yield store


async def test_redis_killed_while_idle_spends_no_receive_and_loses_nothing(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    private_redis: RedisServer,
    private_store: IdempotencyStore,
    redis_prefix: str,
) -> None:
    """Redis dies under an idle worker; 5 messages arrive (maxReceiveCount 2): they are held,
    never received again while it is down (intake paused), and each runs once when it is back."""
    queue = await make_queue(dlq_after=2)
    handled: list[tuple[str, int]] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append((message.json()["event_id"], message.receive_count))

    consumer = keyed(
        handle,
        sqs,
        queue,
        Idempotency(private_store, prefix=redis_prefix),
        in_progress_delay_seconds=1,
    )
    async with running(consumer):
        await consumer.wait_ready()
        private_redis.stop()
        await send(sqs, queue, [event(f"e{i}") for i in range(5)])
        await eventually(lambda: consumer.held == 5 and not consumer.store_available, what="held")
        receives = consumer.stats.receives
        # Kept alive by the heartbeat for a while (10 s visibility extended at 5 s left): under
        # the old behaviour each was handed back, received again, then dead-lettered.
        await eventually(lambda: consumer.stats.heartbeat_extensions >= 5, what="kept alive")
        assert consumer.stats.received == 5
        # Intake paused: no receive started since (the one already waiting may have returned).
        assert consumer.stats.receives <= receives + 1
        private_redis.start()
        await eventually(lambda: consumer.stats.deleted == 5, what="all run after recovery")
    assert sorted(handled) == [(f"e{i}", 1) for i in range(5)]
    assert consumer.stats.store_outages == 1
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=0)
    assert await counts(sqs, dlq_url(queue)) == QueueCounts(visible=0, not_visible=0)


async def test_redis_paused_around_a_completion_retries_it_and_runs_once(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    private_redis: RedisServer,
    private_store: IdempotencyStore,
    redis_prefix: str,
) -> None:
    """Redis stops answering for 2.5 s (SIGSTOP, data intact) just as a handler returns: the
    completion is retried, not abandoned; the message is deleted; nothing runs twice and no
    lease is reported lost."""
    queue = await make_queue(dlq_after=5)
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.json()["event_id"])
        private_redis.pause()
        asyncio.get_running_loop().call_later(2.5, private_redis.resume)

    await send(sqs, queue, [event("paid")])
    consumer = keyed(handle, sqs, queue, Idempotency(private_store, prefix=redis_prefix))
    try:
        async with running(consumer):
            await eventually(lambda: consumer.stats.deleted == 1, what="deleted")
    finally:
        private_redis.resume()
    stats = consumer.stats
    assert handled == ["paid"]
    assert stats.completion_retries >= 1
    assert (stats.lease_lost, stats.failed, stats.duplicates_in_progress) == (0, 0, 0)
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=0)


async def test_a_claim_whose_reply_was_lost_runs_once_without_blocking_its_key(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    private_redis: RedisServer,
    redis_prefix: str,
) -> None:
    """The claim runs in Redis but its reply is cut with the connection: redis-py's retry is
    the same delivery's claim, finds its own record and runs it (not "in progress elsewhere"
    for the whole lease)."""
    dropper = ReplyDropper(private_redis.port)
    port = await dropper.start()
    queue = await make_queue()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.json()["event_id"])

    try:
        url = f"redis://127.0.0.1:{port}"
        async with open_store(store_settings(url, redis_prefix)) as store:
            consumer = keyed(handle, sqs, queue, Idempotency(store, prefix=redis_prefix))
            async with running(consumer):
                await consumer.wait_ready()
                await store.release_many([])  # scripts warm: the dropped reply is a claim's
                dropper.armed = True
                await send(sqs, queue, [event("once")])
                await eventually(lambda: consumer.stats.deleted == 1, what="ran and deleted")
    finally:
        await dropper.close()
    assert dropper.dropped.is_set()
    assert handled == ["once"]
    assert consumer.stats.duplicates_in_progress == 0
    assert consumer.stats.received == 1


class BrokenOnce(MemoryStore):
    """The in-memory store, except that its first claim raises what no store should."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """Raise a plain bug the first time, then claim."""
        if self.broken:
            self.broken = False
            raise RuntimeError("a bug in a store")
        return await super().claim_many(requests, owner=owner, lease_seconds=lease_seconds)


async def test_a_store_bug_hands_the_batch_back_instead_of_stranding_it(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], redis_prefix: str
) -> None:
    """A claim that fails with an unexpected exception (not an outage) is logged and the
    messages come back after the in-progress delay; they run then, once."""
    queue = await make_queue()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.json()["event_id"])

    await send(sqs, queue, [event("b1"), event("b2")])
    consumer = keyed(
        handle,
        sqs,
        queue,
        Idempotency(BrokenOnce(), prefix=redis_prefix),
        in_progress_delay_seconds=1,
    )
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 2, what="both run")
    assert sorted(handled) == ["b1", "b2"]
    assert consumer.store_available


class CompletionBug(MemoryStore):
    """The in-memory store, except that every completion raises what no store should."""

    def __init__(self) -> None:
        super().__init__()
        self.completions = 0

    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """Raise a plain bug."""
        self.completions += 1
        raise RuntimeError("a bug in a store")


async def test_a_completion_bug_is_no_refusal_the_finished_work_is_deleted_not_rerun(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], redis_prefix: str
) -> None:
    """A completion that fails with an unexpected exception is logged and the message deleted:
    the work ran. (Taken as a refusal, the key was taken again, then the message handed back
    and run a second time.)"""
    queue = await make_queue()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.json()["event_id"])

    await send(sqs, queue, [event("c1")])
    store = CompletionBug()
    consumer = keyed(handle, sqs, queue, Idempotency(store, prefix=redis_prefix))
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="ran and deleted")
    assert handled == ["c1"]
    assert store.completions == 1
