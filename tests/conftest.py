"""Shared fixtures: real Redis and PostgreSQL servers and a real SQS endpoint (moto) over HTTP.

Redis: the one at ``REDIS_URL`` (default ``redis://127.0.0.1:6379``) when it answers, otherwise a
private ``redis-server`` on a free port. Each test gets its own key prefix and its keys are
deleted afterwards, so a shared Redis is left as it was found.

PostgreSQL: the one at ``POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
when it answers, otherwise a private server (``initdb`` into a temporary directory). Tests that
use it create a schema of their own and drop it afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

import aioboto3
import botocore.session
import pytest
import redis.asyncio

from fargate_runtime.idempotency import PostgresStore
from fargate_runtime.local import (
    MotoServer,
    RedisServer,
    answering_postgres,
    answering_redis,
    sqs_environment,
)
from tests.idempotency.postgres import PostgresSchema
from tests.logcapture import JsonLines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from types_aiobotocore_sqs import SQSClient


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server that answers, started privately when none does."""
    with answering_redis() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server that answers, started privately when none does."""
    with answering_postgres() as url:
        yield url


@pytest.fixture
async def postgres_schema(postgres_url: str) -> AsyncIterator[PostgresSchema]:
    """A schema of this test's own with the store's tables and functions, dropped afterwards."""
    async with PostgresSchema.created(postgres_url) as schema:
        yield schema


@pytest.fixture
async def postgres_store(postgres_schema: PostgresSchema) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on the test's own schema (cleanup task off: tests call it)."""
    store = PostgresStore(postgres_schema.url, schema=postgres_schema.name, cleanup=False)
    async with store:
        yield store


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test (or user of a shared Redis) has."""
    return f"frt-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the test Redis; every key under ``redis_prefix`` is deleted afterwards."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, for tests that stop or restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """``endpoint_url`` of a local SQS (moto's server mode), with dummy AWS credentials set."""
    with MotoServer() as server:
        saved = {name: os.environ.get(name) for name in sqs_environment(server.endpoint_url)}
        os.environ.update(sqs_environment(server.endpoint_url))
        try:
            yield server.endpoint_url
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture
def json_lines(caplog: pytest.LogCaptureFixture) -> Iterator[JsonLines]:
    """JSON lines of everything logged at INFO and above during the test."""
    captured = JsonLines()
    root = logging.getLogger()
    root.addHandler(captured)
    try:
        with caplog.at_level(logging.INFO):
            yield captured
    finally:
        root.removeHandler(captured)


@pytest.fixture
async def sqs(sqs_endpoint: str) -> AsyncIterator[SQSClient]:
    """An aioboto3 SQS client of the local endpoint (over HTTP)."""
    session = aioboto3.Session()
    async with session.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1") as client:
        yield client


# A worker process's visibility timeout in these tests: long enough that a message visible again
# can only have been released, never expired.
WORKER_VISIBILITY_SECONDS = 120


# Fixtures of the tests that run workers as real processes (a blocking client is enough there:
# those tests block on the child's output anyway).
@pytest.fixture
def sync_sqs(sqs_endpoint: str) -> Any:
    """A plain (blocking) botocore client: these tests block on the child's output anyway."""
    session = botocore.session.get_session()
    return session.create_client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")


@pytest.fixture
def queue_factory(sync_sqs: Any) -> Iterator[Any]:
    """``queue_factory(fifo=False, dlq_after=None)`` -> URL of a fresh queue, deleted after the
    test; ``dlq_after=N`` adds a dead-letter queue (``dlq_url``) after N receives."""
    created: list[str] = []

    def make(*, fifo: bool = False, dlq_after: int | None = None) -> str:
        name = f"w{uuid.uuid4().hex[:16]}"
        suffix = ".fifo" if fifo else ""
        attributes = {"FifoQueue": "true"} if fifo else {}
        if dlq_after is not None:
            dlq = sync_sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=attributes)
            created.append(dlq["QueueUrl"])
            arn = sync_sqs.get_queue_attributes(
                QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            attributes = {
                **attributes,
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": str(dlq_after)}
                ),
            }
        url: str = sync_sqs.create_queue(QueueName=name + suffix, Attributes=attributes)["QueueUrl"]
        created.append(url)
        return url

    yield make
    for url in created:
        sync_sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def worker_env(
    sqs_endpoint: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
    tmp_path: Path,
) -> dict[str, str]:
    """Environment of a worker: local SQS, the test Redis under this test's prefix, a ledger."""
    del redis_client  # requested for its cleanup of ``redis_prefix`` keys
    return {
        **sqs_environment(sqs_endpoint),
        "REDIS_URL": redis_url,
        "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": redis_prefix,
        "PAYMENTS_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
        "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS": str(WORKER_VISIBILITY_SECONDS),
        "FARGATE_RUNTIME_LOG_LEVEL": "INFO",
    }
