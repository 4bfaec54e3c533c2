"""Fixtures for the SQS tests: a client of the local SQS endpoint, queues per test, a store.

Every test gets its own queues (uuid names) and they are deleted afterwards: moto slows down
with queue depth, so nothing is shared between tests.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.idempotency import Idempotency, RedisStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import redis.asyncio
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType


@pytest.fixture
async def make_queue(sqs: SQSClient) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``await make_queue(fifo=False, dlq_after=None)`` -> URL of a fresh queue, deleted after.

    ``dlq_after=N`` also makes a dead-letter queue (its URL is ``url + "-dlq"`` style, see
    ``dlq_url``) and a redrive policy with ``maxReceiveCount`` N.
    """
    created: list[str] = []

    async def make(*, fifo: bool = False, dlq_after: int | None = None) -> str:
        name = f"t{uuid.uuid4().hex[:16]}"
        suffix = ".fifo" if fifo else ""
        attributes: dict[QueueAttributeNameType, str] = {"VisibilityTimeout": "30"}
        if fifo:
            attributes["FifoQueue"] = "true"
        if dlq_after is not None:
            dlq_attributes: dict[QueueAttributeNameType, str] = (
                {"FifoQueue": "true"} if fifo else {}
            )
            dlq = await sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=dlq_attributes)
            created.append(dlq["QueueUrl"])
            arn = (
                await sqs.get_queue_attributes(
                    QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"]
                )
            )["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": str(dlq_after)}
            )
        queue = await sqs.create_queue(QueueName=f"{name}{suffix}", Attributes=attributes)
        created.append(queue["QueueUrl"])
        return queue["QueueUrl"]

    yield make
    for url in created:
        await sqs.delete_queue(QueueUrl=url)


def dlq_url(queue_url: str) -> str:
    """The dead-letter queue ``make_queue(dlq_after=...)`` made for ``queue_url``."""
    if queue_url.endswith(".fifo"):
        return queue_url[: -len(".fifo")] + "-dlq.fifo"
    return queue_url + "-dlq"


@pytest.fixture
def idempotency(redis_client: redis.asyncio.Redis, redis_prefix: str) -> Idempotency:
    """Idempotency on the real Redis, under this test's key prefix (cleaned afterwards)."""
    return Idempotency(RedisStore(redis_client), prefix=redis_prefix)


def event(event_id: str, **fields: Any) -> str:
    """A JSON payment event body."""
    return json.dumps({"event_id": event_id, "account": "acct", "amount_cents": 100, **fields})
