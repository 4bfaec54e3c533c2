"""The consumer against SQS over HTTP (moto's server mode) and a real Redis."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import pytest
import redis.asyncio

from fargate_runtime.idempotency import (
    ClaimRequest,
    ClaimStatus,
    Held,
    Idempotency,
    RedisStore,
    fingerprint,
)
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

    from fargate_runtime.local import RedisServer

pytestmark = pytest.mark.integration

EMPTY = QueueCounts(visible=0, not_visible=0)


async def test_deletes_each_message_once_handled_in_batches(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Every handled message is deleted, with fewer DeleteMessageBatch calls than messages."""
    queue = await make_queue()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        assert context.idempotency_key == message.json()["event_id"]
        assert context.fencing_token is not None
        handled.append(message.json()["event_id"])

    await send(sqs, queue, [event(f"e{i}") for i in range(25)])
    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer) as run:
        await eventually(lambda: consumer.stats.deleted == 25, what="25 deletes")
        assert await counts(sqs, queue) == EMPTY
        assert not await run.stop()
    assert sorted(handled) == sorted(f"e{i}" for i in range(25))
    stats = consumer.stats
    assert stats.succeeded == 25
    assert stats.delete_calls < 25
    assert stats.completion_round_trips < 25


async def test_failed_handler_backs_off_from_receive_count(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """A failure makes the message visible after the backoff, not after the visibility timeout."""
    queue = await make_queue()
    seen: list[int] = []

    async def handle(message: Message, context: MessageContext) -> None:
        seen.append(message.receive_count)
        if message.receive_count == 1:
            raise RuntimeError("payment provider timed out")

    await send(sqs, queue, [event("flaky")])
    # A 60 s visibility timeout: only the 1 s backoff brings the message back within the wait.
    consumer = keyed(
        handle,
        sqs,
        queue,
        idempotency,
        visibility_timeout_seconds=60,
        backoff_base_seconds=1,
        backoff_cap_seconds=1,
    )
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, within=20, what="retried and deleted")
    assert seen == [1, 2]
    assert consumer.stats.failed == 1
    assert await counts(sqs, queue) == EMPTY


async def test_retry_signal_sets_the_delay(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """``Retry(delay_seconds=0)`` makes the message visible again at once."""
    queue = await make_queue()
    seen: list[int] = []

    async def handle(message: Message, context: MessageContext) -> None:
        seen.append(message.receive_count)
        if message.receive_count == 1:
            raise Retry("rate limited", delay_seconds=0)

    await send(sqs, queue, ["anything"])
    consumer = Consumer(handle, client=sqs, settings=settings(queue, visibility_timeout_seconds=60))
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, within=20, what="retried")
    assert seen == [1, 2]


async def test_poison_message_reaches_the_dlq_after_max_receive_count(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """A message that always fails runs maxReceiveCount times, then the redrive moves it, with
    no copy of the runtime's (failures of its own are what the DLQ is for)."""
    queue = await make_queue(dlq_after=2)
    calls: list[int] = []

    async def handle(message: Message, context: MessageContext) -> None:
        calls.append(message.receive_count)
        raise ValueError("poison")

    await send(sqs, queue, [event("poison")])
    consumer = keyed(handle, sqs, queue, idempotency, backoff_base_seconds=0, backoff_cap_seconds=0)
    async with running(consumer):
        await eventually(
            lambda: _visible(sqs, dlq_url(queue), 1), within=30, what="message in the DLQ"
        )
    assert calls == [1, 2]
    assert consumer.stats.requeued == 0
    assert await counts(sqs, queue) == EMPTY


async def test_malformed_messages_go_to_the_dlq_and_the_worker_keeps_going(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Bad JSON and a missing key field are retried then dead-lettered; good ones still run."""
    queue = await make_queue(dlq_after=2)
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.json()["event_id"])

    await send(sqs, queue, ["{not json", '{"account": "no event id"}', event("good")])
    consumer = keyed(handle, sqs, queue, idempotency, backoff_base_seconds=0, backoff_cap_seconds=0)
    async with running(consumer) as run:
        await eventually(lambda: _visible(sqs, dlq_url(queue), 2), within=30, what="2 in DLQ")
        await send(sqs, queue, [event("after")])
        await eventually(lambda: consumer.stats.deleted == 2, what="good ones deleted")
        assert not run.task.done()
    assert sorted(handled) == ["after", "good"]
    assert consumer.stats.malformed == 4  # two messages, two receives each


async def test_handler_json_error_counts_as_malformed_without_idempotency(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """A handler's ``message.json()`` on a bad body fails the message; the next one runs."""
    queue = await make_queue(dlq_after=1)
    handled: list[object] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.json())

    await send(sqs, queue, ["<xml/>", '{"ok": true}'])
    consumer = Consumer(
        handle, client=sqs, settings=settings(queue, backoff_base_seconds=0, backoff_cap_seconds=0)
    )
    async with running(consumer):
        await eventually(lambda: _visible(sqs, dlq_url(queue), 1), within=30, what="DLQ")
        await eventually(lambda: consumer.stats.deleted == 1, what="good one deleted")
    assert handled == [{"ok": True}]
    assert consumer.stats.malformed == 1


async def test_heartbeat_keeps_a_slow_message_invisible_past_its_timeout(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """A handler running for several visibility timeouts keeps its message and its lease."""
    queue = await make_queue()
    release = asyncio.Event()
    calls = 0

    async def handle(message: Message, context: MessageContext) -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    await send(sqs, queue, [event("slow")])
    consumer = keyed(
        handle,
        sqs,
        queue,
        idempotency,
        visibility_timeout_seconds=2,
        heartbeat_tick_seconds=0.2,
    )
    async with running(consumer):
        # Three extensions of a 2 s timeout extended at 1 s left: well past the first 2 s.
        await eventually(lambda: consumer.stats.heartbeat_extensions >= 3, what="3 heartbeats")
        assert consumer.stats.lease_renewals >= 3
        assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=1)
        stolen = await sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)
        assert stolen.get("Messages", []) == []
        release.set()
        await eventually(lambda: consumer.stats.deleted == 1, what="deleted")
    assert calls == 1
    assert consumer.stats.redelivered_while_held == 0
    assert await counts(sqs, queue) == EMPTY


async def test_fifo_groups_run_in_order_and_a_failure_holds_the_rest_of_its_group(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Per group one at a time, in order; after a2 fails, a3 and a4 wait (held, not released)
    for its retry in process."""
    queue = await make_queue(fifo=True)
    calls: list[str] = []
    running_per_group: collections.Counter[str] = collections.Counter()
    most_at_once = 0

    async def handle(message: Message, context: MessageContext) -> None:
        nonlocal most_at_once
        name = message.json()["event_id"]
        group = message.group_id or ""
        running_per_group[group] += 1
        most_at_once = max(most_at_once, running_per_group[group])
        calls.append(name)
        try:
            await asyncio.sleep(0)  # let the other group interleave
            if name == "a2" and calls.count("a2") == 1:
                raise RuntimeError("declined")
        finally:
            running_per_group[group] -= 1

    await send(sqs, queue, [event(f"a{i}") for i in range(5)], group_id="A")
    await send(sqs, queue, [event(f"b{i}") for i in range(3)], group_id="B")
    consumer = keyed(handle, sqs, queue, idempotency, backoff_base_seconds=1, backoff_cap_seconds=1)
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 8, what="all 8 deleted")
    group_a = [name for name in calls if name.startswith("a")]
    group_b = [name for name in calls if name.startswith("b")]
    assert group_a == ["a0", "a1", "a2", "a2", "a3", "a4"]
    assert group_b == ["b0", "b1", "b2"]
    assert most_at_once == 1
    assert consumer.stats.released_after_group_failure == 0
    assert consumer.stats.retried_in_process == 1
    assert consumer.stats.received == 8  # nothing received twice: no receive count spent


async def test_completed_duplicate_is_deleted_without_running(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """The second delivery of a completed event is deleted and its handler never runs."""
    queue = await make_queue()
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.message_id)

    consumer = keyed(handle, sqs, queue, idempotency)
    async with running(consumer):
        await send(sqs, queue, [event("once")])
        await eventually(lambda: consumer.stats.deleted == 1, what="first deleted")
        await send(sqs, queue, [event("once")])
        await eventually(lambda: consumer.stats.deleted == 2, what="duplicate deleted")
    assert len(handled) == 1
    assert consumer.stats.duplicates_completed == 1
    assert await counts(sqs, queue) == EMPTY


async def test_duplicate_in_progress_elsewhere_is_backed_off_not_run(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """While another worker holds the key the message is left alone; once free, it runs once."""
    queue = await make_queue()
    body = event("contended")
    queue_name = queue.rsplit("/", 1)[-1]
    stored = idempotency.key(f"sqs:{queue_name}", "contended")
    (other,) = await idempotency.store.claim_many(
        [ClaimRequest(stored, fingerprint(body.encode()))], owner="other-worker", lease_seconds=60
    )
    assert other.status is ClaimStatus.ACQUIRED
    assert other.token is not None
    tokens: list[int | None] = []

    async def handle(message: Message, context: MessageContext) -> None:
        tokens.append(context.fencing_token)

    await send(sqs, queue, [body])
    consumer = keyed(handle, sqs, queue, idempotency, in_progress_delay_seconds=1)
    async with running(consumer):
        await eventually(lambda: consumer.stats.duplicates_in_progress >= 2, what="backed off")
        assert tokens == []
        assert await idempotency.store.release_many([Held(stored, other.token)]) == [True]
        await eventually(lambda: consumer.stats.deleted == 1, what="run once the key is free")
    assert len(tokens) == 1
    assert tokens[0] is not None
    assert tokens[0] > other.token


async def test_store_down_fails_closed_and_recovers(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    private_redis: RedisServer,
    redis_prefix: str,
) -> None:
    """With Redis down nothing runs; once it is back the message runs exactly once."""
    queue = await make_queue()
    client = redis.asyncio.Redis.from_url(private_redis.url, socket_connect_timeout=1)
    idempotency = Idempotency(RedisStore(client), prefix=redis_prefix)
    handled: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.message_id)

    private_redis.stop()
    await send(sqs, queue, [event("needs-redis")])
    consumer = keyed(handle, sqs, queue, idempotency, in_progress_delay_seconds=1)
    try:
        async with running(consumer):
            await eventually(lambda: consumer.stats.store_errors >= 1, what="store error")
            assert handled == []
            private_redis.start()
            await eventually(lambda: consumer.stats.deleted == 1, what="processed after recovery")
    finally:
        await client.aclose()
    assert len(handled) == 1


async def test_batch_handler_partial_failures_come_back(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Messages a batch handler marks failed are retried; the others are deleted."""
    queue = await make_queue()
    attempts: collections.Counter[str] = collections.Counter()

    async def handle_batch(messages: Sequence[Message], context: BatchContext) -> None:
        for message in messages:
            name = message.json()["event_id"]
            attempts[name] += 1
            assert context.context_for(message).idempotency_key == name
            if name.startswith("fail") and message.receive_count == 1:
                context.fail(message, delay_seconds=0)

    await send(sqs, queue, [event("ok1"), event("fail1"), event("ok2"), event("fail2")])
    consumer = Consumer(
        batch_handler=handle_batch,
        client=sqs,
        settings=settings(queue, visibility_timeout_seconds=60),
        idempotency=idempotency,
        key=json_field("event_id"),
    )
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 4, within=20, what="all deleted")
    assert attempts == {"ok1": 1, "ok2": 1, "fail1": 2, "fail2": 2}
    assert consumer.stats.failed == 2


async def _visible(sqs: SQSClient, queue_url: str, expected: int) -> bool:
    return (await counts(sqs, queue_url)).visible == expected
