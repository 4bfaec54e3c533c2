"""The forced exit's last resort records finished work, so it does not run again elsewhere.

A handler returned but its completion never went out (the loop blocked right after): the final
release, run from a thread without the loop, completes the claim synchronously and deletes the
message; unfinished work is released as before. Real Redis, moto's SQS over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.idempotency import ClaimRequest, ClaimStatus, Held, RedisStore
from fargate_runtime.sqs._final_release import FinalRelease
from fargate_runtime.sqs._holdings import Holdings
from fargate_runtime.sqs._inflight import MessageState

from .conftest import event
from .support import QueueCounts, counts, send, settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import redis.asyncio
    from types_aiobotocore_sqs import SQSClient

pytestmark = pytest.mark.integration


async def test_finished_work_is_completed_and_deleted_unfinished_work_released(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    redis_client: redis.asyncio.Redis,
    redis_prefix: str,
) -> None:
    """Two held messages, one whose handler returned (completion not sent) and one still
    running: the final release completes the first's claim and deletes it, releases the
    second's claim and makes it visible."""
    queue = await make_queue()
    await send(sqs, queue, [event("done"), event("running")])
    received = await sqs.receive_message(
        QueueUrl=queue,
        MaxNumberOfMessages=2,
        WaitTimeSeconds=5,
        MessageSystemAttributeNames=["All"],
    )
    store = RedisStore(redis_client)
    holdings = Holdings(sqs, settings=settings(queue, visibility_timeout_seconds=120), store=store)
    items = holdings.accept(received.get("Messages", []), time.monotonic())
    assert len(items) == 2
    for item in items:
        key = f"{redis_prefix}:orders:{item.message_id}"
        (claim,) = await store.claim_many([ClaimRequest(key, "fp")], owner="w", lease_seconds=60)
        assert claim.token is not None
        item.held = Held(key, claim.token)
    finished, unfinished = sorted(items, key=lambda item: item.message.body != event("done"))
    finished.state, finished.succeeded = MessageState.SETTLING, True
    unfinished.state = MessageState.RUNNING
    release = FinalRelease(holdings, client=sqs, store=store, retention_seconds=600)
    await asyncio.to_thread(release.prepare)
    await asyncio.to_thread(release, 2.0)
    assert finished.held is not None
    done = await store.claim(finished.held.key, "fp", owner="next", lease_seconds=5)
    assert done.status is ClaimStatus.COMPLETED
    assert unfinished.held is not None
    free = await store.claim(unfinished.held.key, "fp", owner="next", lease_seconds=5)
    assert free.status is ClaimStatus.ACQUIRED
    assert await counts(sqs, queue) == QueueCounts(visible=1, not_visible=0)
    back = await sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)
    assert [message.get("Body") for message in back.get("Messages", [])] == [event("running")]
